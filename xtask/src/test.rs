//! `cargo xtask test`: everything CI checks, runnable by hand. Installs missing system
//! packages when run as root, then formatting, lints, the whole test suite and a short run
//! of every fuzz target.

use std::process::Command;

use crate::run;

/// Seconds each fuzz target runs in the check (the campaigns of BENCHMARKS.md run far longer).
const FUZZ_SECONDS: u64 = 10;

/// The environment variable naming the image archive the image tests load (`cargo xtask
/// image` output; xtask/tests/image.rs).
pub const IMAGE_ENV: &str = "HUBBLE_RS_IMAGE";

/// The whole check: packages, fmt, clippy, the image, tests (nextest when installed), fuzz
/// targets.
pub fn test() -> anyhow::Result<()> {
    use crate::packages::{BUILD, CONTAINERS, IMAGE, LAB, TESTS, ensure};
    ensure(&[BUILD, LAB, CONTAINERS, IMAGE, TESTS])?;
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
    // The container image the image tests load and whose binaries check the manifests.
    let image = crate::image::build(
        &crate::image::default_tag(),
        &crate::image::target_dir()?.join("image"),
    )?;
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if nextest {
        run(Command::new(&cargo).env(IMAGE_ENV, &image).args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ]))?;
    } else {
        run(Command::new(&cargo).env(IMAGE_ENV, &image).args([
            "test",
            "--workspace",
            "--no-fail-fast",
        ]))?;
    }
    crate::fuzz::short_run(FUZZ_SECONDS)
}
