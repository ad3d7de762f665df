//! Root test of what policy never blocks, as in Cilium: the host reaches an endpoint whose
//! ingress policy does not name it (`--allow-localhost`, on by default: kubelet probes), and
//! ICMPv6 neighbour discovery leaves an endpoint whose egress is enforced (the lab's
//! neighbours are static, so the test deletes the pod's entry for its gateway to make the
//! kernel solicit it). Only the lab's own namespaces send or receive anything.
//! Without root it skips, but fails when CI=true.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{TestLab, flow_of, spawn_attached_streams};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e policy defaults test";

/// sink takes only the client; the client sends only to sink.
const POLICIES: &str = r#"
[[policies]]
name = "sink-from-client"
namespace = "default"
endpoint_selector = { app = "sink" }
ingress = [{ from = [{ labels = { app = "client" } }] }]

[[policies]]
name = "client-to-sink"
namespace = "default"
endpoint_selector = { app = "client" }
egress = [{ to = [{ labels = { app = "sink" } }] }]
"#;

fn spec_text(name: &str) -> String {
    common::two_pod_lab(name, 73, "", POLICIES)
}

fn ip(netns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

/// The first flow on `flows` within 5 s that `want` accepts.
fn wait_flow(flows: &std::sync::mpsc::Receiver<String>, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok(l) = flows.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&l).expect("JSON line");
        if let Some(f) = flow_of(&v).filter(|f| want(f)) {
            return f.clone();
        }
    }
    panic!("no such flow within 5 s");
}

#[test]
fn the_host_and_neighbour_discovery_pass_policy() {
    let name = format!("pd{}", std::process::id() % 100_000);
    let Some(mut lab) = TestLab::up(TEST, &name, spec_text) else {
        return;
    };
    let netns = |pod: &str| {
        lab.spec
            .pods
            .iter()
            .find(|p| p.name == pod)
            .unwrap()
            .netns
            .clone()
    };
    let (client, node) = (netns("client"), format!("hl-{name}-node"));
    let node_v6 = lab.spec.lab.node_ipv6.to_string();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--lab")
        .arg(&lab.spec_path)
        .arg("--socket")
        .arg(lab.dir.path().join("hubble.sock"))
        .args(["--listen-address", "", "--print-flows"]);
    let Some((flows, _, _)) = spawn_attached_streams(&mut lab.guard, &mut cmd, TEST) else {
        return;
    };

    // The node pings sink, whose ingress takes only the client: allowed all the same.
    let o = ip(&node, &["ping", "-c", "1", "-W", "2", "10.250.73.20"]);
    assert!(o.status.success(), "the host cannot reach sink: {o:?}");
    let f = wait_flow(&flows, |f| {
        f["IP"]["destination"] == "10.250.73.20" && f["l4"]["ICMPv4"]["type"] == 8
    });
    assert_eq!(f["verdict"], "FORWARDED", "{f}");
    assert_eq!(f["source"]["identity"], 1, "{f}");

    // The client forgets its gateway's IPv6 neighbour entry and pings sink: its neighbour
    // solicitation leaves although its egress only allows sink.
    let o = ip(
        &client,
        &["ip", "-6", "neigh", "del", &node_v6, "dev", "eth0"],
    );
    assert!(o.status.success(), "{o:?}");
    let _ = ip(
        &client,
        &["ping", "-6", "-c", "1", "-W", "1", "fd00:250:73::20"],
    );
    let f = wait_flow(&flows, |f| {
        f["IP"]["source"] == "fd00:250:73::10" && f["l4"]["ICMPv6"]["type"] == 135
    });
    assert_eq!(f["verdict"], "FORWARDED", "{f}");
}
