//! End to end as root (needs BPF): a uniquely named three-node lab, three `hubble-agent run
//! --node` processes serving mutual TLS, `hubble-relay` seeded with one of them over mTLS,
//! and the real `hubble` CLI against the relay: flows of all three nodes in time order; one
//! agent killed mid-follow (the stream goes on and reports it), restarted (it rejoins); a
//! client without a certificate refused; the relay's certificate rotated while it serves.
//! Without root it skips, but fails when CI=true.
//! Ports are chosen by the kernel; the lab name and CIDR are unique to this test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::lab::spec::LabSpec;
use agent::lab::topology;
use serde_json::Value;

#[path = "support/procs.rs"]
mod procs;
use procs::{Guard, bin, free_port, has_node, lines, read_until, wait_for_port};

const TEST: &str = "relay multi-node e2e test";

fn skip_or_fail(why: &str) {
    procs::skip_or_fail(TEST, why)
}

fn spec_text(name: &str, ports: &[u16]) -> String {
    let mut s = format!(
        r#"
[lab]
name = "{name}"
node = "node-1"
ipv4_cidr = "10.250.93.0/24"
ipv6_cidr = "fd00:250:93::/64"
"#
    );
    for (i, p) in ports.iter().enumerate() {
        s += &format!(
            "\n[[nodes]]\nname = \"node-{}\"\naddress = \"127.0.0.1:{p}\"\n",
            i + 1
        );
    }
    s += &procs::pods_text("web", &["client", "server", "other"], 93);
    s += r#"
[[services]]
namespace = "web"
name = "server"
selector = { app = "server" }
ports = [{ port = 8080, protocol = "TCP", name = "http" }]
"#;
    s
}

struct Lab {
    agent: PathBuf,
    hubble: PathBuf,
    spec: PathBuf,
    certs: PathBuf,
    dir: PathBuf,
}

impl Lab {
    fn start_agent(&self, node: usize, port: u16) -> Child {
        let c = &self.certs;
        let log = std::fs::File::create(self.dir.join(format!("agent-{node}.log"))).unwrap();
        let child = Command::new(&self.agent)
            .args(["run", "--lab"])
            .arg(&self.spec)
            .args(["--node", &format!("node-{node}"), "--socket", ""])
            .args(["--listen-address", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert-file")
            .arg(c.join("server.crt"))
            .arg("--tls-key-file")
            .arg(c.join("server.key"))
            .arg("--tls-client-ca-files")
            .arg(c.join("ca.crt"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("hubble-agent run");
        wait_for_port(port);
        child
    }

    fn traffic(&self) {
        procs::lab_traffic(&self.agent, &self.spec)
    }

    /// `hubble` against the relay with the client certificate.
    fn hubble(&self, relay: &str) -> Command {
        let c = &self.certs;
        let mut cmd = Command::new(&self.hubble);
        cmd.args(["--server", relay, "--tls"])
            .arg("--tls-ca-cert-files")
            .arg(c.join("ca.crt"))
            .arg("--tls-client-cert-file")
            .arg(c.join("client.crt"))
            .arg("--tls-client-key-file")
            .arg(c.join("client.key"));
        cmd
    }

    fn connected_nodes(&self, relay: &str) -> String {
        procs::status(self.hubble(relay))
    }

    fn wait_connected(&self, relay: &str, want: &str) {
        procs::wait_status(|| self.hubble(relay), want, 20)
    }
}

#[test]
fn three_agents_behind_a_relay_over_mtls() {
    if !topology::is_root() {
        return skip_or_fail("needs root");
    }
    let (Some(agent), Some(hubble), relay_bin) = (
        bin("hubble-agent"),
        bin("hubble"),
        PathBuf::from(env!("CARGO_BIN_EXE_hubble-relay")),
    ) else {
        return skip_or_fail(
            "hubble-agent and hubble binaries not built (cargo build --workspace)",
        );
    };
    let name = format!("rl{}", std::process::id() % 100_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let relay_port = free_port();
    let spec_path = dir.join("multi.toml");
    std::fs::write(&spec_path, spec_text(&name, &ports)).unwrap();
    let spec = LabSpec::load(&spec_path).unwrap();
    let mut guard = Guard {
        spec: spec.clone(),
        children: Vec::new(),
    };
    if let Err(e) = topology::up(&spec) {
        return skip_or_fail(&format!("lab up failed: {e}"));
    }
    let certs = dir.join("certs");
    let st = Command::new(&agent)
        .args(["certs", "generate"])
        .arg(&certs)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "certs generate");
    let lab = Lab {
        agent,
        hubble,
        spec: spec_path,
        certs: certs.clone(),
        dir: dir.clone(),
    };
    for (i, p) in ports.iter().enumerate() {
        let c = lab.start_agent(i + 1, *p);
        guard.children.push(c);
    }
    if !Path::new(&format!("/proc/{}", guard.children[0].id())).exists()
        || guard.children[0].try_wait().unwrap().is_some()
    {
        let log = std::fs::read_to_string(dir.join("agent-1.log")).unwrap_or_default();
        return skip_or_fail(&format!("the agent could not run: {log}"));
    }
    let relay_log = std::fs::File::create(dir.join("relay.log")).unwrap();
    let relay = Command::new(&relay_bin)
        .args([
            "serve",
            "--peer-service",
            &format!("127.0.0.1:{}", ports[0]),
        ])
        .args(["--listen-address", &format!("127.0.0.1:{relay_port}")])
        .args(["--retry-timeout", "500ms", "--dial-timeout", "2s"])
        .args(["--sort-buffer-drain-timeout", "100ms"])
        .args([
            "--error-aggregation-window",
            "1s",
            "--health-listen-address",
            "",
        ])
        .arg("--tls-hubble-server-ca-files")
        .arg(certs.join("ca.crt"))
        .arg("--tls-hubble-client-cert-file")
        .arg(certs.join("client.crt"))
        .arg("--tls-hubble-client-key-file")
        .arg(certs.join("client.key"))
        .arg("--tls-relay-server-cert-file")
        .arg(certs.join("relay.crt"))
        .arg("--tls-relay-server-key-file")
        .arg(certs.join("relay.key"))
        .arg("--tls-relay-client-ca-files")
        .arg(certs.join("ca.crt"))
        .stderr(relay_log)
        .spawn()
        .expect("hubble-relay serve");
    guard.children.push(relay);
    let relay_addr = format!("127.0.0.1:{relay_port}");
    lab.wait_connected(&relay_addr, "Connected Nodes: 3/3");

    // Follow through the relay while traffic runs on every node.
    let mut follower = lab
        .hubble(&relay_addr)
        .args(["observe", "--follow", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hubble observe --follow");
    let out = lines(follower.stdout.take().unwrap());
    let err = lines(follower.stderr.take().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    lab.traffic();
    let mut got = Vec::new();
    let all3 = |g: &[String]| {
        ["node-1", "node-2", "node-3"]
            .iter()
            .all(|n| has_node(g, n))
    };
    assert!(
        read_until(&out, &mut got, 20, all3),
        "flows of all three nodes through the relay; got {} lines",
        got.len()
    );

    // node-2 goes away mid-follow: reported, and the others keep streaming.
    let mut a2 = guard.children.remove(1);
    a2.kill().unwrap();
    a2.wait().unwrap();
    let mut errs = Vec::new();
    // As Hubble Relay: a node whose stream fails is a NODE_ERROR (after the aggregation
    // window, 1s here).
    let failed = |g: &[String]| {
        g.iter()
            .any(|l| l.contains("NODE_ERROR") && l.contains("node-2"))
    };
    assert!(
        read_until(&err, &mut errs, 15, failed),
        "node-2 reported on stderr: {errs:?}"
    );
    let before = got.len();
    lab.traffic();
    assert!(
        read_until(&out, &mut got, 20, |g| has_node(&g[before..], "node-1")
            && has_node(&g[before..], "node-3")),
        "node-1 and node-3 still stream after node-2 went away"
    );
    assert!(
        lab.connected_nodes(&relay_addr)
            .contains("Connected Nodes: 2/3")
    );

    // node-2 comes back and rejoins the running stream.
    let a2 = lab.start_agent(2, ports[1]);
    guard.children.push(a2);
    lab.wait_connected(&relay_addr, "Connected Nodes: 3/3");
    std::thread::sleep(Duration::from_millis(2500));
    let before = got.len();
    lab.traffic();
    assert!(
        read_until(&out, &mut got, 20, |g| has_node(&g[before..], "node-2")),
        "node-2 rejoined the follow stream"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    // Without --follow the merge is exact: every node, in time order.
    let all = lab
        .hubble(&relay_addr)
        .args(["observe", "--all", "-o", "json"])
        .output()
        .expect("hubble observe --all");
    assert!(all.status.success());
    let text = String::from_utf8_lossy(&all.stdout);
    let flows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v.get("flow").is_some())
        .collect();
    let times: Vec<&str> = flows.iter().map(|v| v["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time-ordered");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(all3(&lines), "all three nodes in --all");

    // A client without a certificate is refused.
    let refused = Command::new(&lab.hubble)
        .args(["--server", &relay_addr, "--tls", "--tls-ca-cert-files"])
        .arg(certs.join("ca.crt"))
        .args(["observe", "--last", "1"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a client without a certificate");
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
    assert!(log.contains("TLS handshake"), "relay log: {log}");

    // The relay's server certificate rotated to another CA's (renamed over, as tools do):
    // the next client that trusts the new CA gets in, without a restart.
    let next = dir.join("certs-next");
    let st = Command::new(&lab.agent)
        .args(["certs", "generate"])
        .arg(&next)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "certs generate");
    for f in ["relay.key", "relay.crt"] {
        let tmp = certs.join(format!(".{f}.new"));
        std::fs::copy(next.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, certs.join(f)).unwrap();
    }
    let status_with_ca = |ca: &Path| {
        Command::new(&lab.hubble)
            .args(["--server", &relay_addr, "--tls", "--tls-ca-cert-files"])
            .arg(ca)
            .arg("--tls-client-cert-file")
            .arg(certs.join("client.crt"))
            .arg("--tls-client-key-file")
            .arg(certs.join("client.key"))
            .arg("status")
            .output()
            .unwrap()
            .status
            .success()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status_with_ca(&next.join("ca.crt")) {
        assert!(
            Instant::now() < deadline,
            "the rotated relay certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !status_with_ca(&certs.join("ca.crt")),
        "the old certificate is gone"
    );
}
