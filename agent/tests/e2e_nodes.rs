//! End-to-end (needs root and BPF): a two-node lab where each node is a netns of its own
//! joined by an underlay. Each node holds only its own pods' veths; traffic between the
//! nodes' pods crosses the underlay bridge; node-2's agent (`--node node-2`, in its own
//! netns) reports its pod's packets to node-1 at `to-stack` and `to-network` (leaving the
//! node) and node-1's pod arriving at `from-network` and `to-endpoint`; the pod on node-1
//! is a remote endpoint (named, with its identity, without endpoint id); node-1's host
//! pinging the client is `reserved:remote-node` there. Without root or BPF it skips, but
//! fails when CI=true.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
#[path = "support/node_ping.rs"]
mod node_ping;
use agent::lab::topology;
use common::{TestLab, spawn_attached};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e nodes test";

fn spec(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "node-1"
ipv4_cidr = "10.250.79.0/24"
ipv6_cidr = "fd00:250:79::/64"

[[nodes]]
name = "node-2"

[[pods]]
node = "node-1"
namespace = "far"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.79.10"
ipv6 = "fd00:250:79::10"

[[pods]]
node = "node-2"
namespace = "near"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.79.20"
ipv6 = "fd00:250:79::20"
"#
    )
}

fn links(netns: &str) -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Packets the underlay bridge took from node-2's link (`u1`).
fn underlay_rx(lab: &TestLab) -> u64 {
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.spec.underlay_netns(),
            "-s",
            "-o",
            "link",
            "show",
            "u1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "... RX: bytes packets ...\    <bytes> <packets> ..."
    let stats = text.split("RX:").nth(1).unwrap_or_default();
    stats
        .split('\\')
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn each_node_is_a_netns_of_its_own_and_traffic_crosses_the_underlay() {
    let pid = std::process::id() % 1_000_000;
    let Some(mut lab) = TestLab::up(TEST, &format!("nd{pid}"), spec) else {
        return;
    };
    let (client, server) = (&lab.spec.pods[1], &lab.spec.pods[0]);
    let node2 = lab.spec.node_netns_of("node-2");
    let (l1, l2) = (links(&lab.spec.node_netns()), links(&node2));
    assert!(l1.contains(&server.host_veth) && !l1.contains(&client.host_veth));
    assert!(l2.contains(&client.host_veth) && !l2.contains(&server.host_veth));
    assert!(l1.contains(topology::UNDERLAY_IFNAME) && l2.contains(topology::UNDERLAY_IFNAME));

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--lab"])
        .arg(&lab.spec_path)
        .args(["--node", "node-2", "--socket", "", "--listen-address", ""])
        .args(["--print-flows", "--aggregation", "none"]);
    let Some(flows) = spawn_attached(&mut lab.guard, &mut cmd, TEST) else {
        return;
    };
    let before = underlay_rx(&lab);
    let st = Command::new(BIN)
        .args(["lab", "traffic"])
        .arg(&lab.spec_path)
        .args(["--count", "2", "--duration", "10s"])
        .status()
        .unwrap();
    assert!(st.success(), "lab traffic: {st}");
    assert!(underlay_rx(&lab) > before, "nothing crossed the underlay");
    // Node-1's host (its own address as the source) pings the client on node-2.
    let (node1_ip, _) = lab.spec.node_addresses("node-1");
    node_ping::ping_from_node_host(&lab.spec, "node-1", client.ipv4);

    // Observation points of node-2's agent for its client and the server on node-1.
    let mut seen: BTreeSet<(String, bool)> = BTreeSet::new();
    let mut far_endpoint = None;
    let mut remote_node = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = |s: &BTreeSet<(String, bool)>| {
        [
            ("TO_STACK", true),
            ("TO_NETWORK", true),
            ("FROM_NETWORK", false),
            ("TO_ENDPOINT", false),
        ]
        .iter()
        .all(|(p, out)| s.contains(&(p.to_string(), *out)))
    };
    while !(want(&seen) && remote_node.is_some()) && Instant::now() < deadline {
        let Ok(line) = flows.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        let f = &v["flow"];
        let (src, dst) = (&f["source"], &f["destination"]);
        if f["IP"]["source"] == node1_ip.to_string() && dst["pod_name"] == "client" {
            remote_node.get_or_insert_with(|| src.clone());
        }
        let outbound = src["pod_name"] == "client" && dst["pod_name"] == "server";
        let inbound = src["pod_name"] == "server" && dst["pod_name"] == "client";
        if !(outbound || inbound) {
            continue;
        }
        if let Some(p) = f["trace_observation_point"].as_str() {
            seen.insert((p.to_string(), outbound));
        }
        far_endpoint.get_or_insert_with(|| if outbound { dst.clone() } else { src.clone() });
    }
    assert!(want(&seen), "observation points seen: {seen:?}");
    let remote_node = remote_node.expect("no flow of node-1's ping to the client");
    assert_eq!(remote_node["identity"], 6, "{remote_node}");
    assert_eq!(
        remote_node["labels"],
        serde_json::json!(["reserved:remote-node"])
    );
    let far = far_endpoint.unwrap();
    assert_eq!(far["namespace"], "far");
    assert!(far["identity"].as_u64().unwrap_or(0) >= 256, "{far}");
    assert!(
        far.get("ID").is_none(),
        "a remote pod has no endpoint id here: {far}"
    );
}
