//! `.ci/run`, with stand-ins for `id` and `cargo` first on PATH: it refuses to run as
//! anyone but root (so root tests can never silently skip in CI), and sets CI=true itself
//! for the test command.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/run");

/// Runs `.ci/run` with `id -u` answering `uid` and `cargo` printing the CI variable.
fn ci_run(uid: u32) -> std::process::Output {
    let bin = tempfile::tempdir().unwrap();
    let tool = |name: &str, body: &str| {
        let p = bin.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    tool("id", &format!("echo {uid}"));
    tool("cargo", "echo \"cargo $* CI=$CI\"");
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    Command::new("bash")
        .arg(Path::new(SCRIPT))
        .env_clear()
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn ci_refuses_to_run_unprivileged() {
    let out = ci_run(1000);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CI runs as root"), "{err}");
    assert!(err.contains("sudo .ci/run"), "{err}");
    assert!(out.stdout.is_empty(), "nothing ran: {:?}", out.stdout);
}

#[test]
fn ci_sets_ci_true_for_the_tests() {
    let out = ci_run(0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "cargo xtask test CI=true");
}
