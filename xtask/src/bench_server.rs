//! `cargo xtask bench server`: the agent's Hubble API end to end over its unix socket, with
//! the release `hubble-agent serve-flows` (no root, no eBPF: a generated flow file pushed
//! into the ring) and the release `hubble` CLI as a user runs it, output to /dev/null.
//!
//! 1. A full ring (65,535 flows): `hubble observe --last 65535 -o json` (and compact),
//!    best of R runs; flows/s, the client's CPU and the server's CPU per flow.
//! 2. Follow mode: flows pushed at `--rate` for `--seconds`, read by one client, then by
//!    ten at once; per client the flows received and the flows it was told it lost, and
//!    whether the writer kept its pace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{corpus, measure_cpu, release_build};

const RING: usize = 65_535;

struct Opts {
    runs: usize,
    rate: u64,
    seconds: u64,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        runs: 3,
        rate: 100_000,
        seconds: 5,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = val()?.parse()?,
            "--rate" => o.rate = val()?.parse()?,
            "--seconds" => o.seconds = val()?.parse()?,
            other => bail!("unknown bench option {other:?}"),
        }
    }
    Ok(o)
}

/// A running `hubble-agent serve-flows`, killed on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
    /// The pusher's "pushed N flows in S s" line, once it came.
    pushed: std::sync::mpsc::Receiver<String>,
}

impl Agent {
    fn start(target: &Path, corpus: &Path, extra: &[&str], tag: &str) -> anyhow::Result<Agent> {
        let socket =
            std::env::temp_dir().join(format!("hubble-bench-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let mut child = Command::new(target.join("release/hubble-agent"))
            .arg("serve-flows")
            .arg(corpus)
            .arg("--socket")
            .arg(&socket)
            .args(["--listen-address", "", "--max-flows", "65535"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting hubble-agent serve-flows")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("pushed") {
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("serve-flows did not create {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Agent {
            child,
            socket,
            pushed: rx,
        })
    }

    fn server(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// (VmRSS, VmHWM) of the agent in MiB.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// CPU seconds the agent used so far.
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the ")" of the command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
        ticks / 100.0
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let target = release_build(&["hubble", "hubble-agent"])?;
    let hubble = target.join("release/hubble");
    let corpus = corpus(&target, RING)?;
    println!(
        "{} CPUs; release binaries; {RING} generated flows; best of {} runs",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.runs
    );

    // 1. A full ring read whole.
    let agent = Agent::start(&target, &corpus, &[], "ring")?;
    agent
        .pushed
        .recv_timeout(Duration::from_secs(60))
        .context("serve-flows never filled the ring")?;
    let server = agent.server();
    let (rss, hwm) = agent.rss();
    println!("\nagent with a full ring: RSS {rss:.1} MiB (peak {hwm:.1} MiB)");
    println!(
        "\n| `hubble observe --server unix://… --last 65535` | seconds | flows/s | client CPU µs/flow | server CPU µs/flow |"
    );
    println!("|---|---|---|---|---|");
    for (name, extra) in [("-o json", &["-o", "json"][..]), ("compact", &[][..])] {
        let mut best = (f64::MAX, 0.0, 0.0);
        // One untimed run: the server encodes each stored flow once, for every reader.
        let mut args = vec!["observe", "--server", &server, "--last", "65535"];
        args.extend_from_slice(extra);
        measure_cpu(&hubble, &args, None)?;
        for _ in 0..o.runs {
            let before = agent.cpu();
            let (secs, _, cpu) = measure_cpu(&hubble, &args, None)?;
            let server_cpu = agent.cpu() - before;
            if secs < best.0 {
                best = (secs, cpu, server_cpu);
            }
        }
        let per = |s: f64| s * 1e6 / RING as f64;
        println!(
            "| {name} | {:.3} | {:.0} | {:.2} | {:.2} |",
            best.0,
            RING as f64 / best.0,
            per(best.1),
            per(best.2)
        );
    }
    let (rss, hwm) = agent.rss();
    println!("\nagent after the reads: RSS {rss:.1} MiB (peak {hwm:.1} MiB)");
    drop(agent);

    // 2. Follow mode at a fixed rate: one client, then ten.
    println!(
        "\n| follow, {} flows/s for {} s | clients | flows received per client (min–max) | flows told lost per client (min–max) | writer's rate |",
        o.rate, o.seconds
    );
    println!("|---|---|---|---|---|");
    for clients in [1usize, 10] {
        let count = o.rate * o.seconds;
        let rate = o.rate.to_string();
        let count_s = count.to_string();
        let duration = format!("{}s", o.seconds + 3);
        let agent = Agent::start(
            &target,
            &corpus,
            &[
                "--rate",
                &rate,
                "--count",
                &count_s,
                "--duration",
                &duration,
                "--start-delay",
                "1s",
            ],
            "follow",
        )?;
        let server = agent.server();
        let readers: Vec<_> = (0..clients)
            .map(|_| {
                let mut child = Command::new(&hubble)
                    .args(["observe", "--server", &server, "--follow", "-o", "json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()?;
                let out = child.stdout.take().expect("piped");
                Ok((child, std::thread::spawn(move || count_lines(out))))
            })
            .collect::<anyhow::Result<_>>()?;
        let pushed = agent
            .pushed
            .recv_timeout(Duration::from_secs(o.seconds + 30))
            .context("serve-flows did not finish pushing")?;
        let mut got = Vec::new();
        for (mut child, t) in readers {
            let counts = t.join().expect("reader thread");
            let _ = child.wait();
            got.push(counts);
        }
        drop(agent);
        let (fmin, fmax) = min_max(got.iter().map(|c| c.0));
        let (lmin, lmax) = min_max(got.iter().map(|c| c.1));
        println!(
            "| | {clients} | {fmin}–{fmax} | {lmin}–{lmax} | {} |",
            pushed.trim_start_matches("hubble-agent: ")
        );
    }
    Ok(())
}

fn min_max(it: impl Iterator<Item = u64> + Clone) -> (u64, u64) {
    (it.clone().min().unwrap_or(0), it.max().unwrap_or(0))
}

/// (flows, flows told lost by the server's ring) in a `-o json` stream (lost events of
/// other sources are part of the generated corpus).
fn count_lines(out: impl std::io::Read) -> (u64, u64) {
    let (mut flows, mut lost) = (0u64, 0u64);
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if line.starts_with("{\"flow\"") {
            flows += 1;
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["lost_events"]["source"] == "HUBBLE_RING_BUFFER"
            && let Some(n) = v["lost_events"]["num_events_lost"].as_str()
        {
            lost += n.parse::<u64>().unwrap_or(0);
        }
    }
    (flows, lost)
}
