//! `cargo xtask test`: everything CI checks, runnable by hand. Installs missing system
//! packages when run as root, then formatting, lints, the whole test suite and a short run
//! of every fuzz target.

use std::process::Command;

use crate::run;

/// Seconds each fuzz target runs in the check (the campaigns of BENCHMARKS.md run far longer).
const FUZZ_SECONDS: u64 = 10;

/// The whole check: packages, fmt, clippy, tests (nextest when installed), fuzz targets.
pub fn test() -> anyhow::Result<()> {
    use crate::packages::{BUILD, CONTAINERS, LAB, TESTS, ensure};
    ensure(&[BUILD, LAB, CONTAINERS, TESTS])?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["fmt", "--all", "--check"]))?;
    // fuzz/ is a workspace of its own whose lock file also pins our crates' dependencies:
    // stale after a dependency change, it would fail the fuzz build at the very end.
    run(Command::new(&cargo)
        .current_dir(crate::fuzz::root().join("fuzz"))
        .args(["metadata", "--locked", "--format-version", "1"])
        .stdout(std::process::Stdio::null()))
    .map_err(|e| {
        anyhow::anyhow!("{e:#}: fuzz/Cargo.lock is stale; run `cargo update -w` in fuzz/")
    })?;
    run(Command::new(&cargo).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if nextest {
        run(Command::new(&cargo).args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ]))?;
    } else {
        run(Command::new(&cargo).args(["test", "--workspace", "--no-fail-fast"]))?;
    }
    crate::fuzz::short_run(FUZZ_SECONDS)
}
