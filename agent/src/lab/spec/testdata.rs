//! Test data shared by the spec's test modules: the fixture specs and a minimal two-pod
//! spec to derive error cases from.

use std::path::PathBuf;

use super::LabSpec;

pub(super) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lab");

/// The demo fixture (`fixtures/lab/demo.toml`).
pub(super) fn demo() -> LabSpec {
    LabSpec::load(format!("{FIXTURES}/demo.toml")).unwrap()
}

pub(super) const MINI: &str = r#"
[lab]
name = "t1"
node = "n1"
ipv4_cidr = "10.9.0.0/24"
ipv6_cidr = "fd00:9::/64"

[[pods]]
namespace = "default"
name = "a"
labels = { app = "a" }
ipv4 = "10.9.0.10"
ipv6 = "fd00:9::10"

[[pods]]
namespace = "default"
name = "b"
labels = { app = "b" }
ipv4 = "10.9.0.11"
ipv6 = "fd00:9::11"
"#;

/// A file in a fresh temporary directory.
pub(super) fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}
