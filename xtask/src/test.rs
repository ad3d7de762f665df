//! `cargo xtask test`: everything CI checks, runnable by hand. Installs missing system
//! packages when run as root, then formatting, lints and the whole test suite.

use std::process::Command;

use anyhow::{Context, bail};

/// System packages the build (eBPF C, clang) and the end-to-end tests (ip, ping, tmux; a
/// containerd of their own with runc, CNI plugins and a static busybox for its image; a
/// dockerd of their own) need.
const PACKAGES: &[&str] = &[
    "clang",
    "llvm",
    "libbpf-dev",
    "linux-libc-dev",
    "iproute2",
    "iputils-ping",
    "tmux",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
    "docker.io",
];

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect()
}

/// Installs missing Debian packages when possible (root); otherwise says what is missing.
pub fn ensure_packages() -> anyhow::Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    let root = unsafe { libc_geteuid() } == 0;
    if !root {
        eprintln!(
            "xtask: missing packages {missing:?}; install them as root (apt-get install {})",
            missing.join(" ")
        );
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The whole check: packages, fmt, clippy, tests (nextest when installed).
pub fn test() -> anyhow::Result<()> {
    ensure_packages()?;
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
