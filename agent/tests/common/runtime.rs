//! Shared by the container-runtime root tests (e2e_containerd, e2e_cri): commands, locally
//! built images, and the leftovers of a containerd of their own to clean up.
#![allow(dead_code)] // not every test binary that shares this module uses every helper

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The stdout of a command that must have succeeded.
pub fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A docker-archive in `dir` of a busybox rootfs (with /www/index.html for httpd) tagged
/// `repo_tag` (e.g. `hubble-e2e/busybox:latest`), whose default command is `cmd`.
pub fn build_image(dir: &Path, repo_tag: &str, cmd: &[&str]) -> PathBuf {
    let rootfs = dir.join("rootfs");
    let out = dir.join("out");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("www")).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for t in ["sh", "httpd", "wget", "sleep", "cat", "ip", "nc"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(t)).unwrap();
    }
    std::fs::write(rootfs.join("www/index.html"), "hello from web\n").unwrap();
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(out.join("layer.tar"))
            .arg(".")
            .output()
            .unwrap(),
        "tar layer",
    );
    let sum = ok(
        Command::new("sha256sum")
            .arg(out.join("layer.tar"))
            .output()
            .unwrap(),
        "sha256sum",
    );
    let sum = sum.split_whitespace().next().unwrap().to_string();
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{sum}")]},
    });
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [repo_tag],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(out.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = dir.join("image.tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&out)
            .arg("-cf")
            .arg(&archive)
            .args(["manifest.json", "config.json", "layer.tar"])
            .output()
            .unwrap(),
        "tar image",
    );
    archive
}

/// Processes whose command line mentions `addr` (containerd shims get `-address ADDR`).
pub fn shim_pids(addr: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c).contains(addr)
            && String::from_utf8_lossy(&c).contains("containerd-shim")
        {
            out.push(pid);
        }
    }
    out
}

/// SIGKILLs the shims of the containerd serving `addr`.
pub fn kill_shims(addr: &str) {
    for pid in shim_pids(addr) {
        // SAFETY: a process whose command line names our own containerd's socket.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Lazily unmounts everything mounted under `root` (rootfs of tasks that were not deleted,
/// netns bind mounts), deepest first.
pub fn unmount_under(root: &Path) {
    let root = root.display().to_string();
    if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
        let mut ours: Vec<&str> = m
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(&root))
            .collect();
        ours.reverse();
        for p in ours {
            let _ = Command::new("umount").args(["-l", p]).output();
        }
    }
}
