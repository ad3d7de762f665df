//! End-to-end (needs root, BPF and etcd): two labs on different subnets, each with its
//! agent, sharing one etcd with `--kvstore etcd`. The same labels get the same identity in
//! both agents, and each agent names the other's pods (their ipcache entries, with pod,
//! namespace and identity, in its agent events). Without root or BPF or etcd it skips, but
//! fails when CI=true.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use agent::kvstore::{Etcd, keys};
use common::{TestLab, all_events, block_on, of_type, spawn_attached};

#[path = "support/etcd.rs"]
mod etcd;
use etcd::EtcdServer;

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e kvstore test";

/// A lab of a client and a server on 10.250.`net`.0/24.
fn spec_in(name: &str, net: u8) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.{net}.0/24"
ipv6_cidr = "fd00:250:{net}::/64"

[[pods]]
namespace = "kv"
name = "client-{net}"
labels = {{ app = "client" }}
ipv4 = "10.250.{net}.10"
ipv6 = "fd00:250:{net}::10"

[[pods]]
namespace = "kv"
name = "server-{net}"
labels = {{ app = "server-{net}" }}
ipv4 = "10.250.{net}.20"
ipv6 = "fd00:250:{net}::20"
"#
    )
}

/// The identity of the IPCACHE_UPSERTED entry for `cidr` (and its pod), if any.
fn ipcache_entry(events: &[Value], cidr: &str) -> Option<(u64, String)> {
    of_type(events, "IPCACHE_UPSERTED")
        .iter()
        .rev()
        .find_map(|e| {
            let u = &e["agent_event"]["ipcache_update"];
            (u["cidr"] == cidr).then(|| {
                let id = u["identity"]
                    .as_u64()
                    .or_else(|| u["identity"].as_str()?.parse().ok());
                (
                    id.unwrap_or(0),
                    u["pod_name"].as_str().unwrap_or("").to_string(),
                )
            })
        })
}

/// Waits up to 20 s for `server`'s agent events to have an entry for `cidr` with a pod name.
fn wait_entry(server: &str, cidr: &str) -> (u64, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = ipcache_entry(&all_events(server), cidr)
            && !e.1.is_empty()
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no ipcache entry for {cidr} on {server}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn agent(lab: &TestLab, etcd: &EtcdServer) -> Command {
    let sock = lab.dir.path().join("run/hubble.sock");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--lab"])
        .arg(&lab.spec_path)
        .arg("--socket")
        .arg(&sock)
        .args(["--listen-address", ""])
        .args(["--kvstore", "etcd", "--kvstore-opt"])
        .arg(format!("etcd.address={}", etcd.address()))
        .args(["--kvstore-lease-ttl", "10s"]);
    cmd
}

fn server_of(lab: &TestLab) -> String {
    format!(
        "unix://{}",
        lab.dir.path().join("run/hubble.sock").display()
    )
}

#[test]
fn two_agents_share_identities_and_ipcache_through_etcd() {
    // Declared first, dropped last: the agents revoke their leases while etcd still runs.
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let pid = std::process::id() % 1_000_000;
    let Some(mut a) = TestLab::up(TEST, &format!("ka{pid}"), |n| spec_in(n, 75)) else {
        return;
    };
    let Some(mut b) = TestLab::up(TEST, &format!("kb{pid}"), |n| spec_in(n, 76)) else {
        return;
    };
    let mut cmd_a = agent(&a, &etcd);
    if spawn_attached(&mut a.guard, &mut cmd_a, TEST).is_none() {
        return;
    }
    let mut cmd_b = agent(&b, &etcd);
    if spawn_attached(&mut b.guard, &mut cmd_b, TEST).is_none() {
        return;
    }
    let (sa, sb) = (server_of(&a), server_of(&b));

    // The same labels (app=client in namespace kv): the same identity on both nodes.
    let (client_a, _) = wait_entry(&sa, "10.250.75.10/32");
    let (client_b, _) = wait_entry(&sb, "10.250.76.10/32");
    assert_eq!(client_a, client_b);
    assert!(client_a >= 256);
    let (server_a, _) = wait_entry(&sa, "10.250.75.20/32");
    let (server_b, _) = wait_entry(&sb, "10.250.76.20/32");
    assert!(server_a != server_b && server_a != client_a && server_b != client_a);

    // Each names the other's pods, with the other's identities.
    assert_eq!(
        wait_entry(&sa, "10.250.76.20/32"),
        (server_b, "server-76".to_string())
    );
    assert_eq!(
        wait_entry(&sb, "10.250.75.20/32"),
        (server_a, "server-75".to_string())
    );
    assert_eq!(wait_entry(&sb, "10.250.75.10/32").0, client_a);

    // Both nodes are in the registry, as Cilium's JSON.
    let node_a = keys::node_key("default", &format!("{}-node", a.spec.lab.name));
    let node_b = keys::node_key("default", &format!("{}-node", b.spec.lab.name));
    let registered = block_on(async {
        let client = Etcd::connect(&etcd.address()).unwrap();
        let value = client
            .get(&node_a)
            .await
            .unwrap()
            .expect("node a registered")
            .value;
        let n: keys::Node = serde_json::from_slice(&value).unwrap();
        (n, client.get(&node_b).await.unwrap().is_some())
    });
    assert_eq!(registered.0.name, format!("{}-node", a.spec.lab.name));
    assert!(
        registered
            .0
            .ip_addresses
            .iter()
            .any(|x| x.ip == a.spec.lab.node_ipv4)
    );
    assert!(registered.1);

    // Agent a stops: its lease is revoked, its keys go, and b forgets its pods.
    let pid = a.guard.agent.as_ref().unwrap().id();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = a.guard.agent.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    let gone = block_on(async {
        let client = Etcd::connect(&etcd.address()).unwrap();
        let a_ip = keys::ip_key("default", "10.250.75.20".parse().unwrap());
        let b_ip = keys::ip_key("default", "10.250.76.20".parse().unwrap());
        (
            client.get(&node_a).await.unwrap().is_none(),
            client.get(&a_ip).await.unwrap().is_none(),
            client.get(&b_ip).await.unwrap().is_some(),
        )
    });
    assert_eq!(gone, (true, true, true));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !of_type(&all_events(&sb), "IPCACHE_DELETED")
        .iter()
        .any(|e| e["agent_event"]["ipcache_update"]["cidr"] == "10.250.75.20/32")
    {
        assert!(Instant::now() < deadline, "b kept a's pod after a left");
        std::thread::sleep(Duration::from_millis(200));
    }
}
