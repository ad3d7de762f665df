//! `cargo xtask fuzz`: builds the libFuzzer targets of fuzz/ on stable Rust (SanitizerCoverage
//! through stable codegen flags, as cargo-fuzz does with `--sanitizer none`) and runs each
//! from its committed corpus, failing on any crash, panic, timeout or leak of memory limits.
//! New inputs go to a scratch directory; `--merge` folds them, minimized, into fuzz/corpus.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// libFuzzer's exit code after SIGINT or SIGTERM (its `-interrupted_exitcode` default).
const INTERRUPTED: i32 = 72;

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &["decode", "dns", "http", "cel", "json", "transcode"];

const USAGE: &str =
    "usage: cargo xtask fuzz [--seconds N | --runs N] [--workers W] [--max-len B] [--merge] [TARGET...]
  build the fuzz targets (stable Rust, libFuzzer) and run each, one at a time, from
  fuzz/corpus/TARGET for N seconds (default 10) or N executions; fails on a crash.
  --workers W: W libFuzzer processes per target sharing one scratch corpus (each picks up
    the others' new inputs); --runs N is split between them, --seconds applies to each.
  --max-len B: inputs of at most B bytes (libFuzzer's -max_len; default: its own, 4096).
  --merge: fold the new inputs, minimized, into fuzz/corpus/TARGET.
  targets: decode dns http cel json transcode (default: all)";

/// Coverage instrumentation libFuzzer feeds on, all stable flags (cargo-fuzz's own set
/// without `-Zsanitizer`); debug assertions and overflow checks come from fuzz/'s profile.
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cllvm-args=-sanitizer-coverage-stack-depth \
    --cfg fuzzing";

struct Opts {
    seconds: Option<u64>,
    runs: Option<u64>,
    workers: u64,
    max_len: Option<u64>,
    merge: bool,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut o = Opts {
        seconds: None,
        runs: None,
        workers: 1,
        max_len: None,
        merge: false,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => o.seconds = Some(val()?.parse().context("--seconds: not a number")?),
            "--runs" => o.runs = Some(val()?.parse().context("--runs: not a number")?),
            "--workers" => {
                o.workers = val()?.parse().context("--workers: not a number")?;
                if o.workers == 0 {
                    bail!("--workers: at least 1");
                }
            }
            "--max-len" => o.max_len = Some(val()?.parse().context("--max-len: not a number")?),
            "--merge" => o.merge = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            t if TARGETS.contains(&t) => o.targets.push(t.to_string()),
            other => bail!("fuzz: unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    if o.seconds.is_none() && o.runs.is_none() {
        o.seconds = Some(10);
    }
    Ok(Some(o))
}

/// `cargo xtask fuzz ...`
pub fn run(args: &[String]) -> anyhow::Result<()> {
    match parse(args)? {
        Some(o) => fuzz(&o),
        None => Ok(()),
    }
}

/// Every target for `seconds` from its corpus: what `cargo xtask test` runs.
pub fn short_run(seconds: u64) -> anyhow::Result<()> {
    fuzz(&Opts {
        seconds: Some(seconds),
        runs: None,
        workers: 1,
        max_len: None,
        merge: false,
        targets: TARGETS.iter().map(|t| t.to_string()).collect(),
    })
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The host triple: with `--target` given, RUSTFLAGS skip build scripts and proc macros,
/// which must not be instrumented (nothing would define the coverage callbacks).
fn host() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names no host")
}

/// Builds the targets; returns the directory holding their binaries.
fn build(targets: &[String], target_dir: &Path) -> anyhow::Result<PathBuf> {
    let host = host()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root().join("fuzz"))
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--release", "--locked", "--target", &host]);
    for t in targets {
        cmd.args(["--bin", t]);
    }
    eprintln!("xtask: building fuzz targets {targets:?}");
    if !cmd.status().context("running cargo build")?.success() {
        bail!("building the fuzz targets failed");
    }
    Ok(target_dir.join(host).join("release"))
}

struct Worker {
    child: std::process::Child,
    log: PathBuf,
}

/// One libFuzzer process: new inputs go to the first directory, the scratch one (shared by
/// the workers, which reload it); the corpus is only read.
fn spawn_worker(
    o: &Opts,
    bin: &Path,
    scratch: &Path,
    corpus: &Path,
    artifacts: &Path,
    log_path: &Path,
) -> anyhow::Result<Worker> {
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg(scratch)
        .arg(corpus)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"])
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(s) = o.seconds {
        cmd.arg(format!("-max_total_time={s}"));
    }
    if let Some(r) = o.runs {
        cmd.arg(format!("-runs={}", r.div_ceil(o.workers)));
    }
    if let Some(b) = o.max_len {
        cmd.arg(format!("-max_len={b}"));
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("running fuzz target {}", bin.display()))?;
    Ok(Worker {
        child,
        log: log_path.to_path_buf(),
    })
}

/// What libFuzzer said at the end of a run.
#[derive(Debug, Default)]
struct Stats {
    execs: u64,
    execs_per_sec: u64,
    cov: u64,
    ft: u64,
}

impl Stats {
    /// Adds a worker's figures: executions and rates add up, coverage is the widest seen.
    fn add(&mut self, o: &Stats) {
        self.execs += o.execs;
        self.execs_per_sec += o.execs_per_sec;
        self.cov = self.cov.max(o.cov);
        self.ft = self.ft.max(o.ft);
    }
}

fn stats(log: &str) -> Stats {
    let mut s = Stats::default();
    let num = |rest: &str| -> u64 {
        rest.trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(r) = line.strip_prefix("stat::number_of_executed_units:") {
            s.execs = num(r);
        } else if let Some(r) = line.strip_prefix("stat::average_exec_per_sec:") {
            s.execs_per_sec = num(r);
        }
        // Progress lines: "#N  NEW|REDUCE|pulse|DONE  cov: C ft: F corp: ..."
        if let (Some(c), Some(f)) = (line.find(" cov: "), line.find(" ft: ")) {
            s.cov = num(&line[c + 6..]);
            s.ft = num(&line[f + 5..]);
        }
    }
    s
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn fuzz(o: &Opts) -> anyhow::Result<()> {
    let root = root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fuzz");
    let bins = build(&o.targets, &target_dir)?;
    let mut failed = Vec::new();
    for t in &o.targets {
        let corpus = root.join("fuzz/corpus").join(t);
        let scratch = target_dir.join("new").join(t);
        let artifacts = target_dir.join("artifacts").join(t);
        for d in [&corpus, &scratch, &artifacts] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let workers: Vec<Worker> = (0..o.workers)
            .map(|i| {
                let name = match o.workers {
                    1 => format!("{t}.log"),
                    _ => format!("{t}.{i}.log"),
                };
                spawn_worker(
                    o,
                    &bins.join(t),
                    &scratch,
                    &corpus,
                    &artifacts,
                    &target_dir.join(name),
                )
            })
            .collect::<anyhow::Result<_>>()?;
        eprintln!(
            "xtask: fuzzing {t} with {} worker(s) (logs: {})",
            workers.len(),
            target_dir.join(format!("{t}*.log")).display()
        );
        let mut s = Stats::default();
        let mut status = None;
        let mut text = String::new();
        for mut w in workers {
            let st = w
                .child
                .wait()
                .with_context(|| format!("waiting for fuzz target {t}"))?;
            let log = std::fs::read_to_string(&w.log).unwrap_or_default();
            s.add(&stats(&log));
            if status.is_none() && !st.success() {
                (status, text) = (Some(st), log);
            }
        }
        eprintln!(
            "xtask: fuzz {t}: {} executions, {} exec/s, cov {} ft {}, corpus {} files + {} new",
            s.execs,
            s.execs_per_sec,
            s.cov,
            s.ft,
            files_in(&corpus),
            files_in(&scratch)
        );
        if let Some(status) = status {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            for l in tail.into_iter().rev() {
                eprintln!("  {l}");
            }
            // libFuzzer's exit code when a signal interrupted it (-interrupted_exitcode).
            if status.code() == Some(INTERRUPTED) {
                eprintln!(
                    "xtask: fuzz {t} was interrupted after {} executions",
                    s.execs
                );
            } else {
                eprintln!(
                    "xtask: fuzz {t} failed ({status}); the input is in {}",
                    artifacts.display()
                );
            }
            failed.push(t.clone());
            continue;
        }
        if o.merge {
            merge(&bins.join(t), &corpus, &scratch, &target_dir)?;
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {failed:?}");
    }
    Ok(())
}

/// Replaces `corpus` with the smallest set of inputs of `corpus` and `scratch` that covers
/// every edge they cover.
fn merge(bin: &Path, corpus: &Path, scratch: &Path, target_dir: &Path) -> anyhow::Result<()> {
    let merged = target_dir.join("merged");
    let _ = std::fs::remove_dir_all(&merged);
    std::fs::create_dir_all(&merged)?;
    let status = Command::new(bin)
        .arg("-set_cover_merge=1")
        // Edges only, not hit counts: half the files for the same coverage.
        .arg("-use_counters=0")
        .arg(&merged)
        .arg(corpus)
        .arg(scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {} -set_cover_merge=1", bin.display()))?;
    if !status.success() {
        bail!("{} -set_cover_merge=1 failed with {status}", bin.display());
    }
    std::fs::remove_dir_all(corpus)?;
    std::fs::rename(&merged, corpus)?;
    std::fs::remove_dir_all(scratch)?;
    eprintln!(
        "xtask: merged into {} ({} files)",
        corpus.display(),
        files_in(corpus)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_final_figures() {
        let log = "#1024\tpulse  cov: 10 ft: 12 corp: 3/30b exec/s: 512 rss: 40Mb\n\
                   #2048\tDONE   cov: 811 ft: 3012 corp: 99/2Kb lim: 4096 exec/s: 1024 rss: 41Mb\n\
                   Done 2048 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 2048\n\
                   stat::average_exec_per_sec:     1024\n\
                   stat::new_units_added:          7\n";
        let s = stats(log);
        assert_eq!(
            (s.execs, s.execs_per_sec, s.cov, s.ft),
            (2048, 1024, 811, 3012)
        );
    }

    #[test]
    fn arguments() {
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = a(&[]).unwrap().unwrap();
        assert_eq!((o.seconds, o.targets.len()), (Some(10), TARGETS.len()));
        let o = a(&["--runs", "100", "--merge", "dns"]).unwrap().unwrap();
        assert_eq!((o.runs, o.seconds, o.merge), (Some(100), None, true));
        assert_eq!(
            (o.targets.as_slice(), o.workers),
            (&["dns".to_string()][..], 1)
        );
        assert_eq!(a(&["--workers", "2"]).unwrap().unwrap().workers, 2);
        assert!(a(&["--workers", "0"]).is_err());
        assert_eq!(
            a(&["--max-len", "512"]).unwrap().unwrap().max_len,
            Some(512)
        );
        assert!(a(&["nope"]).is_err());
    }
}
