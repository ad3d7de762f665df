//! Root test of the watermark perf readers under load: `hubble-agent lab flood --agent` on a
//! uniquely named two-pod lab (20k packets/s for 1 s); every event is read or counted lost.
//! Without root it skips, but fails when CI=true.

use std::process::Command;

use agent::lab::spec::LabSpec;
use agent::lab::topology;

mod common;
use common::{LabGuard, skip_or_fail};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "flood test";

fn spec_text(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.251.7.0/24"
ipv6_cidr = "fd00:251:7::/64"

[[pods]]
namespace = "default"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.251.7.10"
ipv6 = "fd00:251:7::10"

[[pods]]
namespace = "default"
name = "sink"
labels = {{ app = "sink" }}
ipv4 = "10.251.7.20"
ipv6 = "fd00:251:7::20"
"#
    )
}

/// The number after `key` in `text` (e.g. `sent 123`).
fn number_after(text: &str, key: &str) -> u64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} in {text}"));
    text[at + key.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("number after {key:?} in {text}"))
}

#[test]
fn flood_events_are_read_or_counted_lost() {
    if !agent::datapath::is_root() {
        return skip_or_fail(TEST, "not root");
    }
    let name = format!("fl{}", std::process::id() % 100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.toml");
    std::fs::write(&path, spec_text(&name)).unwrap();
    let spec = LabSpec::load(&path).unwrap();
    let _guard = LabGuard::new(&spec);
    topology::up(&spec).unwrap();

    let out = Command::new(BIN)
        .args(["lab", "flood"])
        .arg(&path)
        .args(["--pps", "20000", "--duration", "1s", "--agent"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    let sent = number_after(&text, "flood: sent");
    let line = text
        .lines()
        .find(|l| l.contains("events read"))
        .unwrap_or_else(|| panic!("no events line in {text}"));
    let read = number_after(line, "agent:");
    let lost = number_after(line, "over the flood,");
    assert!(sent > 10_000, "{text}");
    // One FROM_ENDPOINT and one TO_ENDPOINT trace per packet (aggregation none), plus the
    // odd background packet (IPv6 neighbour discovery and the like).
    assert!(read + lost >= 2 * sent, "{text}");
    assert!(read + lost <= 2 * sent + 100, "{text}");
}

/// `lab flood --agent` on a lab that is not up says so, and what to do, in one line
/// (it used to end in "the agent did not start: " and nothing after the colon).
#[test]
fn flood_on_a_lab_that_is_not_up_says_what_to_do() {
    if !agent::datapath::is_root() {
        return skip_or_fail("flood without a lab", "not root");
    }
    let name = format!("fn{}", std::process::id() % 100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.toml");
    std::fs::write(&path, spec_text(&name)).unwrap();
    let out = Command::new(BIN)
        .args(["lab", "flood"])
        .arg(&path)
        .args(["--duration", "1s", "--agent"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "error: lab {name} is not up: run `hubble-agent lab up {}` first",
            path.display()
        )
    );
}
