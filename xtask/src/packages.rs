//! The Debian packages each task needs, installed when missing (as root; otherwise the
//! missing ones are named): `test` needs them all, `demo` what its build and its run need,
//! so the README's first command works on a fresh machine.

use std::process::Command;

use crate::run;

/// Building the agent: its eBPF C datapath (clang, BPF headers, the kernel's asm headers).
pub const BUILD: &[&str] = &["clang", "llvm", "libbpf-dev", "linux-libc-dev"];
/// `cargo xtask image`: musl-gcc, for the C parts (ring, mimalloc) of the static binaries.
pub const IMAGE: &[&str] = &["musl-tools"];
/// A lab: network namespaces, veths and addresses (`ip`).
pub const LAB: &[&str] = &["iproute2"];
/// A containerd of our own: its runtime, CNI plugins and a static busybox for the image.
pub const CONTAINERS: &[&str] = &[
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
];
/// A multi-node cluster's kvstore: the demo starts an etcd of its own on loopback.
pub const KVSTORE: &[&str] = &["etcd-server"];
/// Only the tests: ping, tmux (the TUI's terminal test), a dockerd of their own, promtool
/// and prometheus (the metrics exposition's linter and scraper), curl (the metrics server's
/// HTTPS client), g++ (libFuzzer of the fuzz targets), etcd-server (the kvstore tests start
/// their own etcd on loopback).
pub const TESTS: &[&str] = &[
    "iputils-ping",
    "tmux",
    "docker.io",
    "prometheus",
    "curl",
    "g++",
    "etcd-server",
];

/// Debian's hook that tells package scripts whether they may start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Installs the packages of `groups` that are missing (apt-get, as root); without root, says
/// which are missing and how to install them.
pub fn ensure(groups: &[&[&str]]) -> anyhow::Result<()> {
    let missing: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.iter().copied())
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask: missing packages {missing:?}; install them as root (apt-get install {})",
            missing.join(" ")
        );
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    // The services these packages bring (dockerd, containerd, prometheus) are not started:
    // tests start instances of their own. A policy-rc.d already there is left alone.
    let hook = !std::path::Path::new(POLICY_RC_D).exists()
        && std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# cargo xtask: no services during installs\nexit 101\n",
        )
        .is_ok();
    if hook {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755));
    }
    let r = run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing));
    if hook {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    r
}
