//! `cargo xtask bench containers` (root): the release agent on real containers. A containerd
//! of the bench's own ([`Workloads`], CNI bridge on 10.250.69.0/24) watched by `hubble-agent
//! run --runtime containerd`:
//!
//! 1. the kernel's cost per packet of the observe-only datapath (BPF run statistics the agent
//!    prints at exit) for a bounded `ping -f` between two containers, against the same ping
//!    between the two pods of the lab `fixtures/lab/flood.toml` under the same agent flags,
//!    in alternating rounds (`--rounds`), each under an agent of its own;
//! 2. N more containers (default 50) started at once (their netns made beforehand, every
//!    `ctr run -d` spawned together) under a fresh agent: when each is running, when the
//!    agent says it attached it, the agent's CPU for all of it (its threads' schedstat run
//!    time, its idle rate measured just before subtracted) and its RSS.
//!
//! Traffic only between the bench's own containers and the lab's own pods; everything is
//! torn down on every exit path.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xtask::containerd::missing_prerequisite;
use xtask::workloads::Workloads;

use crate::bench::release_build;
use crate::bench_agent::Agent;

const NS: &str = "bench";
const SUBNET: &str = "10.250.69.0/24";
const IMAGE_TAG: &str = "hubble-bench/busybox:latest";
const FLOOD_SPEC: &str = "fixtures/lab/flood.toml";
/// The lab's pods (see FLOOD_SPEC): the pinging pod's netns and the pinged address.
const LAB_CLIENT_NETNS: &str = "hl-flood-default-client";
const LAB_SINK_IP: &str = "10.244.77.20";
const MAX_CONTAINERS: usize = 200;
const MAX_PINGS: u32 = 100_000;

struct Opts {
    count: usize,
    pings: u32,
    rounds: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        count: 50,
        pings: 20_000,
        rounds: 3,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "--count" => o.count = val()?.parse()?,
            "--pings" => o.pings = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse()?,
            other => bail!("unknown bench containers option {other:?}"),
        }
    }
    if !(2..=MAX_CONTAINERS).contains(&o.count) {
        bail!("--count must be 2..={MAX_CONTAINERS}");
    }
    if !(1..=10).contains(&o.rounds) {
        bail!("--rounds must be 1..=10");
    }
    if !(1..=MAX_PINGS).contains(&o.pings) {
        bail!("--pings must be 1..={MAX_PINGS}");
    }
    Ok(o)
}

/// The BPF lines of an agent's exit summary: (program, runs, mean ns per packet).
fn bpf_costs(lines: &[String]) -> Vec<(String, u64, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("hubble-agent: bpf ")?;
            let mut w = rest.split_whitespace();
            let prog = w.next()?.to_string();
            let runs = w.next()?.strip_prefix("runs=")?.parse().ok()?;
            let mean = w.next()?.strip_prefix("mean=")?.parse().ok()?;
            Some((prog, runs, mean))
        })
        .collect()
}

/// `ping -q -f -c PINGS -s 18 -w 30 DST` from netns `netns`: the packets' transmitted and
/// received counts line.
fn ping_flood(netns: &str, dst: &str, pings: u32) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", netns, "ping", "-q", "-f", "-s", "18", "-w", "30", "-c",
        ])
        .arg(pings.to_string())
        .arg(dst)
        .output()
        .context("cannot run ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("transmitted"))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "ping from {netns}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// What the container part measured.
struct Startup {
    /// Seconds from spawning every `ctr run` until the last one returned.
    all_running: f64,
    /// Seconds from spawning until the agent had attached the last container.
    all_attached: f64,
    /// Largest gap between a container running and the agent attaching it.
    worst_gap: f64,
    cpu_per_endpoint_ms: f64,
    idle_ms_per_s: f64,
    rss: (f64, f64),
}

/// Starts `count` containers at once under a running agent and measures it.
fn start_many(w: &mut Workloads, agent: &mut Agent, count: usize) -> anyhow::Result<Startup> {
    let names: Vec<String> = (0..count).map(|i| format!("c{i}")).collect();
    for n in &names {
        w.network(n)?;
    }
    // The idle rate, over 2 s.
    let (c0, t0) = (agent.cpu_ns(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let idle_ns_per_s = (agent.cpu_ns() - c0) as f64 / t0.elapsed().as_secs_f64();

    let cpu_before = agent.cpu_ns();
    let start = Instant::now();
    let mut children = Vec::new();
    for (i, n) in names.iter().enumerate() {
        // Five label sets, so five identities.
        let child = w
            .run_command(n, &format!("app{}", i % 5), &["sleep", "3600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ctr")?;
        children.push((n.clone(), child));
    }
    let mut running: BTreeMap<String, Instant> = BTreeMap::new();
    for (n, c) in children {
        let o = c.wait_with_output()?;
        if !o.status.success() {
            bail!("ctr run {n}: {}", String::from_utf8_lossy(&o.stderr));
        }
        running.insert(n, Instant::now());
    }
    let all_running = start.elapsed();
    // "hubble-agent: endpoint bench/c7 (vethXXXX) attached".
    let mut attached: BTreeMap<String, Instant> = BTreeMap::new();
    while attached.len() < count {
        let Some((t, l)) = agent.wait_for(Duration::from_secs(30), |l| {
            l.starts_with("hubble-agent: endpoint ") && l.ends_with(" attached")
        }) else {
            bail!(
                "only {} of {count} containers attached within 30 s",
                attached.len()
            );
        };
        if let Some(name) = l
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.strip_prefix(&format!("{NS}/")))
        {
            attached.insert(name.to_string(), t);
        }
    }
    let all_attached = attached
        .values()
        .max()
        .map_or(0.0, |t| (*t - start).as_secs_f64());
    // Let the syncs the last events started finish: they are part of the cost.
    std::thread::sleep(Duration::from_millis(500));
    let span = start.elapsed().as_secs_f64();
    let cpu = (agent.cpu_ns() - cpu_before) as f64 - idle_ns_per_s * span;
    let worst_gap = names
        .iter()
        .map(|n| {
            attached[n]
                .saturating_duration_since(running[n])
                .as_secs_f64()
        })
        .fold(0.0, f64::max);
    Ok(Startup {
        all_running: all_running.as_secs_f64(),
        all_attached,
        worst_gap,
        cpu_per_endpoint_ms: cpu / 1e6 / count as f64,
        idle_ms_per_s: idle_ns_per_s / 1e6,
        rss: agent.rss(),
    })
}

/// One measurement of the kernel's cost per packet: the ping's summary line and the BPF
/// costs the agent printed at exit.
struct PingRound {
    ping: String,
    costs: Vec<(String, u64, u64)>,
}

/// Starts an agent with `args`, pings `dst` from `netns`, stops it.
fn ping_round(
    agent_bin: &Path,
    args: &[String],
    netns: &str,
    dst: &str,
    pings: u32,
) -> anyhow::Result<PingRound> {
    let agent = Agent::start(agent_bin, args)?;
    let ping = ping_flood(netns, dst, pings)?;
    Ok(PingRound {
        ping,
        costs: bpf_costs(&agent.stop()),
    })
}

/// `hubble-agent lab up|down FLOOD_SPEC`.
fn lab(agent_bin: &Path, cmd: &str) -> anyhow::Result<()> {
    let st = Command::new(agent_bin)
        .args(["lab", cmd, FLOOD_SPEC])
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("hubble-agent lab {cmd} {FLOOD_SPEC} failed");
    }
    Ok(())
}

/// Rounds of the same ping between two containers and between the lab's two pods, each
/// under an agent of its own with the same flags, alternating (the machine's noise hits
/// both alike).
fn ping_rounds(
    agent_bin: &Path,
    w: &mut Workloads,
    runtime_args: &[String],
    dir: &Path,
    o: &Opts,
) -> anyhow::Result<Vec<(PingRound, PingRound)>> {
    w.run("p0", "ping", &["sleep", "3600"])?;
    let dst = w.run("p1", "ping", &["sleep", "3600"])?;
    let mut lab_args = vec!["--lab".to_string(), FLOOD_SPEC.to_string()];
    lab_args.extend(server_flags(dir));
    lab(agent_bin, "up")?;
    let rounds = (0..o.rounds)
        .map(|_| {
            let c = ping_round(agent_bin, runtime_args, &w.netns_of("p0"), &dst, o.pings)?;
            let l = ping_round(agent_bin, &lab_args, LAB_CLIENT_NETNS, LAB_SINK_IP, o.pings)?;
            Ok((c, l))
        })
        .collect();
    let _ = lab(agent_bin, "down");
    rounds
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench containers needs root (containerd, netns, BPF)");
    }
    if let Some(why) = missing_prerequisite() {
        bail!("bench containers: {why}");
    }
    let target = release_build(&["hubble-agent"])?;
    let agent_bin = target.join("release/hubble-agent");
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("hubble-bench-containers-{id}"));
    let result = containers(&agent_bin, &dir, id, &o);
    let _ = std::fs::remove_dir_all(&dir);
    let (startup, rounds) = result?;

    println!(
        "{} CPUs; release hubble-agent; {} containers started at once",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.count
    );
    println!("\n| what | figure |\n|---|---|");
    println!(
        "| every `ctr run -d` returned | {:.2} s |",
        startup.all_running
    );
    println!(
        "| every container attached by the agent | {:.2} s |",
        startup.all_attached
    );
    println!(
        "| longest wait, container running → attached | {:.0} ms |",
        startup.worst_gap * 1e3
    );
    println!(
        "| agent CPU per endpoint (idle subtracted) | {:.2} ms |",
        startup.cpu_per_endpoint_ms
    );
    println!("| agent idle CPU | {:.2} ms/s |", startup.idle_ms_per_s);
    println!(
        "| agent RSS with {} endpoints (peak) | {:.1} MiB ({:.1} MiB) |",
        o.count, startup.rss.0, startup.rss.1
    );
    println!(
        "\nping -f -s 18 -c {} between two containers, then between two lab pods, {} rounds:",
        o.pings, o.rounds
    );
    println!(
        "\n| round | program | containers: runs, ns/packet | lab: runs, ns/packet | ratio |\n|---|---|---|---|---|"
    );
    for (i, (c, l)) in rounds.iter().enumerate() {
        for (prog, runs, mean) in &c.costs {
            let Some((_, lruns, lmean)) = l.costs.iter().find(|(p, _, _)| p == prog) else {
                continue;
            };
            println!(
                "| {} | {prog} | {runs}, {mean} | {lruns}, {lmean} | {:.2} |",
                i + 1,
                *mean as f64 / (*lmean).max(1) as f64
            );
        }
    }
    for (i, (c, l)) in rounds.iter().enumerate() {
        println!("round {}: containers: {}; lab: {}", i + 1, c.ping, l.ping);
    }
    Ok(())
}

/// The agent flags both parts share: the Hubble API on a unix socket in `dir` only.
fn server_flags(dir: &Path) -> Vec<String> {
    vec![
        "--socket".into(),
        dir.join("hubble.sock").display().to_string(),
        "--listen-address".into(),
        String::new(),
    ]
}

/// The container part: containerd, the ping rounds with two containers, then the burst of
/// `count` more under a fresh agent.
fn containers(
    agent_bin: &Path,
    dir: &Path,
    id: u32,
    o: &Opts,
) -> anyhow::Result<(Startup, Vec<(PingRound, PingRound)>)> {
    let mut w = Workloads::new(dir, NS, &format!("hbbench{id}"), SUBNET)?;
    w.start(&dir.join("image"), IMAGE_TAG)?;
    let mut args: Vec<String> = vec![
        "--runtime".into(),
        "containerd".into(),
        "--containerd-socket".into(),
        w.containerd.sock.display().to_string(),
    ];
    args.extend(server_flags(dir));
    let rounds = ping_rounds(agent_bin, &mut w, &args, dir, o)?;
    let mut agent = Agent::start(agent_bin, &args)?;
    let startup = start_many(&mut w, &mut agent, o.count)?;
    agent.stop();
    Ok((startup, rounds))
}
