//! End to end as root (needs BPF and etcd): a three-node lab whose agents share one etcd
//! (`--kvstore etcd`, 5 s leases) and `hubble-relay` seeded with node-1's Peer service only.
//! The relay finds all three nodes through node-1's registry; node-3 killed with SIGKILL is
//! unavailable at once and leaves the registry (and the relay) when its lease runs out,
//! while the flows the others saw with its pod stay readable, naming the pod as a remote
//! endpoint; node-3 restarted rejoins; etcd stopped and restarted: no agent exits, `hubble
//! status` of an agent shows its kvstore failing and then Ok, and the cluster is whole again. Without root, BPF or etcd it skips, but fails when CI=true.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use agent::lab::spec::LabSpec;
use agent::lab::topology;
use serde_json::Value;

#[path = "support/procs.rs"]
mod procs;
use procs::{Guard, bin, free_port, wait_for_port};

#[path = "../../agent/tests/support/etcd.rs"]
mod etcd;
#[path = "../../agent/tests/support/node_ping.rs"]
mod node_ping;
use etcd::EtcdServer;

const TEST: &str = "relay kvstore e2e test";

/// Three nodes on 10.250.95.0/24, one pod each; node-3 runs the server.
fn spec_text(name: &str) -> String {
    let mut s = format!(
        r#"
[lab]
name = "{name}"
node = "node-1"
ipv4_cidr = "10.250.95.0/24"
ipv6_cidr = "fd00:250:95::/64"

[[nodes]]
name = "node-2"

[[nodes]]
name = "node-3"
"#
    );
    s += &procs::pods_text("kv", &["client", "other", "server"], 95);
    s
}

struct Cluster {
    agent: PathBuf,
    hubble: PathBuf,
    spec: PathBuf,
    dir: PathBuf,
    etcd: String,
}

impl Cluster {
    fn start_agent(&self, node: usize, port: u16) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("agent-{node}.log"))).unwrap();
        let child = Command::new(&self.agent)
            .args(["run", "--lab"])
            .arg(&self.spec)
            .args(["--node", &format!("node-{node}"), "--socket", ""])
            .args(["--listen-address", &format!("127.0.0.1:{port}")])
            .args(["--kvstore", "etcd", "--kvstore-opt"])
            .arg(format!("etcd.address={}", self.etcd))
            .args(["--kvstore-lease-ttl", "5s"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("hubble-agent run");
        wait_for_port(port);
        child
    }

    fn hubble(&self, relay: &str) -> Command {
        let mut cmd = Command::new(&self.hubble);
        cmd.args(["--server", relay]);
        cmd
    }

    fn status(&self, server: &str) -> String {
        procs::status(self.hubble(server))
    }

    fn wait_status(&self, server: &str, want: &str, secs: u64) {
        procs::wait_status(|| self.hubble(server), want, secs)
    }

    fn traffic(&self) {
        procs::lab_traffic(&self.agent, &self.spec)
    }

    /// Every flow the relay has now (`--all`), as JSON.
    fn flows(&self, relay: &str) -> Vec<Value> {
        let out = self
            .hubble(relay)
            .args(["observe", "--all", "-o", "json"])
            .output()
            .expect("hubble observe --all");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("flow").cloned())
            .collect()
    }

    fn alive(&self, children: &mut [Child]) {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(st) = c.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join(format!("agent-{}.log", i + 1)));
                panic!("agent {} exited ({st}): {}", i + 1, log.unwrap_or_default());
            }
        }
    }
}

/// The flows of `node` with the server pod (node-3's) at the other end.
fn seen_with_server<'a>(flows: &'a [Value], node: &str) -> Vec<&'a Value> {
    flows
        .iter()
        .filter(|f| f["node_name"] == node)
        .filter(|f| f["destination"]["pod_name"] == "server" || f["source"]["pod_name"] == "server")
        .collect()
}

#[test]
fn the_relay_follows_the_registry_of_one_agent() {
    if !topology::is_root() {
        return procs::skip_or_fail(TEST, "needs root");
    }
    let (Some(agent), Some(hubble), relay_bin) = (
        bin("hubble-agent"),
        bin("hubble"),
        PathBuf::from(env!("CARGO_BIN_EXE_hubble-relay")),
    ) else {
        return procs::skip_or_fail(
            TEST,
            "hubble-agent and hubble binaries not built (cargo build --workspace)",
        );
    };
    // Declared first, dropped last: the agents revoke their leases while etcd still runs.
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let name = format!("rk{}", std::process::id() % 100_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let spec_path = dir.join("cluster.toml");
    std::fs::write(&spec_path, spec_text(&name)).unwrap();
    let spec = LabSpec::load(&spec_path).unwrap();
    let mut guard = Guard {
        spec: spec.clone(),
        children: Vec::new(),
    };
    if let Err(e) = topology::up(&spec) {
        return procs::skip_or_fail(TEST, &format!("lab up failed: {e}"));
    }
    let c = Cluster {
        agent,
        hubble,
        spec: spec_path,
        dir: dir.clone(),
        etcd: etcd.address(),
    };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for (i, p) in ports.iter().enumerate() {
        guard.children.push(c.start_agent(i + 1, *p));
    }
    c.alive(&mut guard.children);
    let relay_port = free_port();
    let relay_log = std::fs::File::create(dir.join("relay.log")).unwrap();
    let relay = Command::new(&relay_bin)
        .args([
            "serve",
            "--peer-service",
            &format!("127.0.0.1:{}", ports[0]),
        ])
        .args(["--listen-address", &format!("127.0.0.1:{relay_port}")])
        .args(["--retry-timeout", "500ms", "--dial-timeout", "2s"])
        .args(["--health-listen-address", ""])
        .stderr(relay_log)
        .spawn()
        .expect("hubble-relay serve");
    let relay_addr = format!("127.0.0.1:{relay_port}");
    let mut relay = Some(relay);

    // node-1's registry names all three: the relay connects to each.
    c.wait_status(&relay_addr, "Connected Nodes: 3/3", 30);
    c.traffic();
    let flows = c.flows(&relay_addr);
    let seen = seen_with_server(&flows, "node-1");
    assert!(!seen.is_empty(), "node-1 saw no flow with node-3's server");
    // On node-1 the server is another node's pod, known only from etcd (with a kvstore an
    // agent takes only its own pods from the lab spec): named, identified with its labels,
    // no endpoint id.
    let far = seen
        .iter()
        .map(|f| match f["destination"]["pod_name"] == "server" {
            true => &f["destination"],
            false => &f["source"],
        })
        .next()
        .unwrap();
    assert_eq!(far["namespace"], "kv");
    assert!(far["identity"].as_u64().unwrap_or(0) >= 256, "{far}");
    assert!(far.get("ID").is_none() && far.get("id").is_none(), "{far}");
    assert!(
        far["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == "k8s:app=server")),
        "{far}"
    );
    // The same identity on node-3, which runs the server, and on the other two.
    let identity_on = |node: &str| {
        seen_with_server(&flows, node)
            .iter()
            .find_map(|f| {
                let ep = match f["destination"]["pod_name"] == "server" {
                    true => &f["destination"],
                    false => &f["source"],
                };
                ep["identity"].as_u64()
            })
            .unwrap_or_else(|| panic!("{node} saw no flow with the server"))
    };
    let id = identity_on("node-3");
    assert_eq!((identity_on("node-1"), identity_on("node-2")), (id, id));

    // node-1's host pings the server: node-3 knows node-1's address from the registry
    // alone (the agents take no other node from the lab spec), as remote-node.
    let (node1_ip, _) = spec.node_addresses("node-1");
    let server_ip = spec.pods.iter().find(|p| p.name == "server").unwrap().ipv4;
    node_ping::ping_from_node_host(&spec, "node-1", server_ip);
    let from_node1 = |flows: &[Value]| {
        flows
            .iter()
            .filter(|f| f["node_name"] == "node-3")
            .find(|f| f["IP"]["source"] == node1_ip.to_string())
            .map(|f| f["source"].clone())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut src = from_node1(&c.flows(&relay_addr));
    while src.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(300));
        src = from_node1(&c.flows(&relay_addr));
    }
    let src = src.expect("node-3 has no flow from node-1's host");
    assert_eq!(src["identity"], 6, "{src}");
    assert_eq!(src["labels"], serde_json::json!(["reserved:remote-node"]));

    // node-3 dies: unavailable at once, gone after its lease (5 s); what node-1 saw of its
    // pod stays readable.
    let mut a3 = guard.children.remove(2);
    a3.kill().unwrap();
    a3.wait().unwrap();
    c.wait_status(&relay_addr, "Connected Nodes: 2/3", 15);
    c.wait_status(&relay_addr, "Connected Nodes: 2/2", 30);
    assert!(!seen_with_server(&c.flows(&relay_addr), "node-1").is_empty());

    // node-3 restarted rejoins through the registry.
    guard.children.push(c.start_agent(3, ports[2]));
    c.wait_status(&relay_addr, "Connected Nodes: 3/3", 30);

    // etcd away and back: no agent exits, each says so in `hubble status`, the relay keeps
    // every node, and a node that joins afterwards is found again.
    let node1 = format!("127.0.0.1:{}", ports[0]);
    c.wait_status(&node1, "KVStore: Ok", 10);
    etcd.kill();
    c.wait_status(&node1, "KVStore: Failure (etcd unreachable)", 20);
    c.alive(&mut guard.children);
    assert!(c.status(&relay_addr).contains("Connected Nodes: 3/3"));
    assert!(
        !c.status(&relay_addr).contains("KVStore"),
        "the relay has none"
    );
    etcd.launch();
    c.wait_status(&node1, "KVStore: Ok", 20);
    c.alive(&mut guard.children);
    let mut a2 = guard.children.remove(1);
    a2.kill().unwrap();
    a2.wait().unwrap();
    c.wait_status(&relay_addr, "Connected Nodes: 2/2", 30);
    guard.children.insert(1, c.start_agent(2, ports[1]));
    c.wait_status(&relay_addr, "Connected Nodes: 3/3", 30);
    c.alive(&mut guard.children);

    if let Some(mut r) = relay.take() {
        let _ = r.kill();
        let _ = r.wait();
    }
    drop(guard);
}
