//! `cargo xtask test`: everything CI checks, runnable by hand. Installs missing system
//! packages when run as root, then formatting, lints and the whole test suite.

use std::process::Command;

use crate::run;

/// The whole check: packages, fmt, clippy, tests (nextest when installed).
pub fn test() -> anyhow::Result<()> {
    use crate::packages::{BUILD, CONTAINERS, LAB, TESTS, ensure};
    ensure(&[BUILD, LAB, CONTAINERS, TESTS])?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["fmt", "--all", "--check"]))?;
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
        ]))
    } else {
        run(Command::new(&cargo).args(["test", "--workspace", "--no-fail-fast"]))
    }
}
