//! `cargo xtask bench observe`: end-to-end throughput and peak memory of the release
//! `hubble observe --input-file` over a generated corpus, as a user runs it (output to
//! /dev/null). Optionally the same runs with another binary (e.g. the Go hubble) to compare.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

struct Opts {
    count: usize,
    runs: usize,
    other: Option<PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        count: 200_000,
        runs: 3,
        other: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "--count" => o.count = val()?.parse()?,
            "--runs" => o.runs = val()?.parse()?,
            "--compare" => o.other = Some(PathBuf::from(val()?)),
            other => bail!("unknown bench option {other:?}"),
        }
    }
    Ok(o)
}

/// Runs `bin args` with stdout to /dev/null; returns (seconds, peak RSS in KiB).
fn measure(bin: &Path, args: &[&str], stdin: Option<&Path>) -> anyhow::Result<(f64, u64)> {
    measure_cpu(bin, args, stdin).map(|(secs, rss, _)| (secs, rss))
}

/// [`measure`], plus the child's CPU seconds (user + system).
pub(crate) fn measure_cpu(
    bin: &Path,
    args: &[&str],
    stdin: Option<&Path>,
) -> anyhow::Result<(f64, u64, f64)> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("TZ", "UTC")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = stdin {
        cmd.stdin(File::open(p)?);
    }
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let pid = child.id() as i32;
    let mut status = 0i32;
    let mut usage: Rusage = unsafe { std::mem::zeroed() };
    // wait4 gives the child's own peak RSS.
    let r = unsafe { wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    std::mem::forget(child);
    if r != pid {
        bail!("wait4 failed for {}", bin.display());
    }
    let tv = |t: [i64; 2]| t[0] as f64 + t[1] as f64 / 1e6;
    Ok((
        secs,
        usage.ru_maxrss as u64,
        tv(usage.ru_utime) + tv(usage.ru_stime),
    ))
}

#[repr(C)]
struct Rusage {
    ru_utime: [i64; 2],
    ru_stime: [i64; 2],
    ru_maxrss: i64,
    rest: [i64; 13],
}

unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

/// Builds the release binaries of `packages`; returns the target directory.
pub(crate) fn release_build(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--quiet"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if !cmd.status()?.success() {
        bail!("release build failed");
    }
    Ok(std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target")))
}

/// `target/corpus-N.jsonl`: N generated flows (seed 1), made once.
pub(crate) fn corpus(target: &Path, count: usize) -> anyhow::Result<PathBuf> {
    let corpus = target.join(format!("corpus-{count}.jsonl"));
    if !corpus.exists() {
        eprintln!("xtask: generating {count} flows into {}", corpus.display());
        let f = std::io::BufWriter::new(File::create(&corpus)?);
        xtask::flowgen::write_jsonl(f, 1, count)?;
    }
    Ok(corpus)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("observe") => observe(&args[1..]),
        Some("server") => crate::bench_server::run(&args[1..]),
        Some("containers") => crate::bench_containers::run(&args[1..]),
        Some("kvstore") => crate::bench_kvstore::run(&args[1..]),
        _ => bail!(
            "usage: cargo xtask bench observe [--count N] [--runs R] [--compare OTHER_HUBBLE]\n       cargo xtask bench server [--runs R] [--rate N] [--seconds S]\n       cargo xtask bench containers [--count N] [--pings N] [--rounds R]   (root)\n       cargo xtask bench kvstore [--endpoints N]   (root)"
        ),
    }
}

fn observe(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let target = release_build(&["hubble"])?;
    let bin = target.join("release/hubble");
    let corpus = corpus(&target, o.count)?;
    let bytes = std::fs::metadata(&corpus)?.len();
    let corpus_s = corpus.to_str().context("corpus path is not UTF-8")?;
    println!(
        "corpus: {} flows, {:.0} MB ({} B/flow); best of {} runs; output to /dev/null; {} CPUs",
        o.count,
        bytes as f64 / 1e6,
        bytes / o.count as u64,
        o.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let scenarios: &[(&str, &[&str])] = &[
        ("compact", &[]),
        ("-o json", &["-o", "json"]),
        ("--verdict DROPPED", &["--verdict", "DROPPED"]),
        ("-o dict", &["-o", "dict"]),
        (
            "--from-namespace shop --protocol tcp",
            &["--from-namespace", "shop", "--protocol", "tcp"],
        ),
        ("--last 20", &["--last", "20"]),
    ];
    let mut bins = vec![("ours", bin.clone(), true)];
    if let Some(other) = &o.other {
        bins.push(("other", other.clone(), false));
    }
    println!("| binary | scenario | seconds | flows/s | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    for (label, b, ours) in &bins {
        for (name, extra) in scenarios {
            let mut best = (f64::MAX, 0);
            for _ in 0..o.runs {
                let (secs, rss) = if *ours {
                    let mut a = vec!["observe", "--input-file", corpus_s];
                    a.extend_from_slice(extra);
                    measure(b, &a, None)?
                } else {
                    // The Go hubble v0.11 reads flows from stdin when it is not a terminal.
                    let mut a = vec!["observe"];
                    a.extend_from_slice(extra);
                    measure(b, &a, Some(&corpus))?
                };
                if secs < best.0 {
                    best = (secs, rss);
                }
            }
            println!(
                "| {label} | {name} | {:.3} | {:.0} | {:.1} |",
                best.0,
                o.count as f64 / best.0,
                best.1 as f64 / 1024.0
            );
        }
    }
    Ok(())
}
