//! Shared by the container-runtime root tests (e2e_containerd, e2e_cri), which otherwise use
//! `xtask::containerd` (also behind `cargo xtask demo --containers`): its fallible helpers
//! as panicking ones.
#![allow(dead_code)] // not every test binary that shares this module uses every helper

use std::path::{Path, PathBuf};
use std::process::Output;

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
/// `repo_tag`, whose default command is `cmd` and whose config carries `labels`.
pub fn build_image(dir: &Path, repo_tag: &str, cmd: &[&str], labels: &[(&str, &str)]) -> PathBuf {
    xtask::containerd::build_busybox_image(dir, repo_tag, cmd, labels).expect("building the image")
}
