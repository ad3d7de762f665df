//! What `hubble-agent record` does at its output path before anything else (no privileges
//! needed: the lab is missing, so the agent stops right after): a symbolic link there is
//! refused and its target untouched, and a recording that never started leaves no file.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");

fn record_to(out: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args([
            "record",
            "--lab",
            "/nonexistent/lab.toml",
            "--duration",
            "1s",
            "-o",
        ])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn record_refuses_a_symlink_at_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.path().join("out.hlrec");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = record_to(&link);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn a_recording_that_never_started_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.hlrec");
    let out = record_to(&out_path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!out_path.exists(), "{err}");
}
