//! Traffic of a lab node itself: a ping from the node's own netns with the node's host
//! address as the source (what another node sees as `remote-node`). Shared with the relay's
//! end-to-end tests.

use std::net::Ipv4Addr;
use std::process::Command;

use agent::lab::spec::LabSpec;

/// Pings `dst` twice from `node`'s netns, from its host address; panics without an answer.
pub fn ping_from_node_host(spec: &LabSpec, node: &str, dst: Ipv4Addr) {
    let (src, _) = spec.node_addresses(node);
    let st = Command::new("ip")
        .args(["netns", "exec", &spec.node_netns_of(node), "ping", "-q"])
        .args([
            "-c",
            "2",
            "-W",
            "2",
            "-I",
            &src.to_string(),
            &dst.to_string(),
        ])
        .status()
        .expect("ip netns exec … ping");
    assert!(st.success(), "ping from {node}'s host to {dst}: {st}");
}
