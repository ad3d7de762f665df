//! End-to-end test of `run --policy-dir` (needs root and BPF): a lab of a client and a
//! server with no policy of its own; CiliumNetworkPolicy files allow the client TCP 8080 of
//! the server (not 9090) and the client's egress to the server and the world's CIDR. The
//! denied port's SYN is DROPPED with POLICY_DENIED, the world is reached under its CIDR
//! identity (the ipcache prefix the model writes); rewriting the file to allow 9090 opens
//! it within 1 s; an invalid file then gets one error line on stderr and the agent keeps
//! running with the previous version. Without root or BPF it skips, but fails when CI=true.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent::lab::{netns, traffic};
use serde_json::Value;

mod common;
use common::{TestLab, spawn_attached_streams};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e policy files test";

fn spec_text(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.64.0/24"
ipv6_cidr = "fd00:250:64::/64"

[[pods]]
namespace = "cnp"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.64.10"
ipv6 = "fd00:250:64::10"

[[pods]]
namespace = "cnp"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.64.20"
ipv6 = "fd00:250:64::20"
"#
    )
}

/// The policies: the server's ingress from the client on `ports`, the client's egress to the
/// server and to the world's /24. `operator` is the client selector's operator.
fn policy(ports: &[u16], operator: &str) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|p| format!("            - {{port: \"{p}\", protocol: TCP}}"))
        .collect();
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: server-in
  namespace: cnp
spec:
  endpointSelector:
    matchLabels:
      app: server
  ingress:
    - fromEndpoints:
        - matchExpressions:
            - {{key: k8s:app, operator: {operator}, values: [client]}}
      toPorts:
        - ports:
{}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: client-out
  namespace: cnp
spec:
  endpointSelector:
    matchLabels: {{app: client}}
  egress:
    - toEndpoints: [{{matchLabels: {{app: server}}}}]
    - toCIDR: [192.0.2.0/24]
"#,
        ports.join("\n")
    )
}

/// Writes the policy file as editors and tools should: a temporary dotfile renamed over it.
fn write_policy(path: &Path, text: &str) {
    let tmp = path.with_file_name(".p.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn connects(ns: &str, ip: IpAddr, port: u16, timeout: Duration) -> bool {
    netns::run_in(ns, move || {
        let Ok(mut c) = TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout) else {
            return Ok(false);
        };
        c.set_read_timeout(Some(Duration::from_secs(1)))?;
        c.write_all(b"hi")?;
        let mut b = [0u8; 2];
        Ok(c.read_exact(&mut b).is_ok())
    })
    .unwrap()
}

/// Drains the lines that came so far (waiting `wait` for more).
fn drain(rx: &mpsc::Receiver<String>, wait: Duration) -> Vec<String> {
    let end = Instant::now() + wait;
    let mut v = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(l) => v.push(l),
            Err(_) if Instant::now() >= end => return v,
            Err(mpsc::RecvTimeoutError::Disconnected) => return v,
            Err(_) => {}
        }
    }
}

#[test]
fn cilium_network_policy_files_are_enforced_and_followed() {
    let name = format!("p{}", std::process::id() % 10_000_000);
    let Some(TestLab {
        dir,
        spec_path,
        spec,
        mut guard,
    }) = TestLab::up(TEST, &name, spec_text)
    else {
        return;
    };
    let pdir = dir.path().join("policies");
    std::fs::create_dir(&pdir).unwrap();
    let file = pdir.join("p.yaml");
    write_policy(&file, &policy(&[8080], "In"));

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--lab"])
        .arg(&spec_path)
        .arg("--policy-dir")
        .arg(&pdir)
        .args([
            "--print-flows",
            "--no-hubble-server",
            "--aggregation",
            "none",
        ]);
    let Some((lines, stderr, before)) = spawn_attached_streams(&mut guard, &mut cmd, TEST) else {
        return;
    };
    assert!(
        before
            .iter()
            .any(|l| l.contains("2 policies from") && l.contains("cnp/server-in")),
        "{before:?}"
    );

    let pod = |n: &str| spec.pods.iter().find(|p| p.name == n).unwrap().clone();
    let (client, server) = (pod("client"), pod("server"));
    let server_ip = IpAddr::V4(server.ipv4);
    let world_ip = IpAddr::V4(spec.lab.world_ipv4);

    // The server answers on 8080 and 9090 for the whole test (at most 20 s).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let srv = netns::spawn_in(&server.netns, move || {
        let ls = [
            TcpListener::bind("0.0.0.0:8080")?,
            TcpListener::bind("0.0.0.0:9090")?,
        ];
        for l in &ls {
            l.set_nonblocking(true)?;
        }
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end && !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let mut idle = true;
            for l in &ls {
                if let Ok((mut c, _)) = l.accept() {
                    idle = false;
                    c.set_nonblocking(false)?;
                    c.set_read_timeout(Some(Duration::from_secs(1)))?;
                    let mut b = [0u8; 16];
                    let n = c.read(&mut b).unwrap_or(0);
                    let _ = c.write_all(&b[..n]);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let cns = client.netns.clone();
    assert!(
        connects(&cns, server_ip, 8080, Duration::from_secs(2)),
        "8080 is allowed"
    );
    assert!(
        !connects(&cns, server_ip, 9090, Duration::from_millis(500)),
        "9090 must be dropped by the file's policy"
    );
    let pinged = netns::run_in(&cns, move || {
        traffic::ping(world_ip, 1, Duration::from_secs(1))
    })
    .expect("ping the world");
    assert!(
        matches!(pinged, traffic::Outcome::Ok),
        "the world's CIDR is allowed: {pinged:?}"
    );

    // Rewritten to allow 9090: new connections succeed within 1 s.
    let t0 = Instant::now();
    write_policy(&file, &policy(&[8080, 9090], "In"));
    let mut opened = None;
    while t0.elapsed() < Duration::from_secs(3) {
        if connects(&cns, server_ip, 9090, Duration::from_millis(150)) {
            opened = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let opened = opened.expect("9090 never opened after the rewrite");
    assert!(
        opened < Duration::from_secs(1),
        "9090 opened after {opened:?}"
    );
    drain(&stderr, Duration::from_millis(100));

    // An invalid version: one error line naming the file and the field; the previous
    // version stays in force and the agent keeps running.
    write_policy(&file, &policy(&[8080], "Foo"));
    let errs: Vec<String> = drain(&stderr, Duration::from_millis(1500))
        .into_iter()
        .filter(|l| l.contains("policy file"))
        .collect();
    let want = format!(
        "hubble-agent: policy file {}: spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator: \"Foo\" is not In, NotIn, Exists or DoesNotExist",
        file.display()
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with(&want), "{}\nwant: {want}", errs[0]);
    assert!(
        connects(&cns, server_ip, 9090, Duration::from_secs(1)),
        "the previous version (9090 allowed) stays in force"
    );
    assert!(
        guard.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent keeps running"
    );

    // Stop the agent and look at the flows.
    std::thread::sleep(Duration::from_millis(500));
    let mut agent = guard.agent.take().unwrap();
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit status {status}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = srv.join();
    let mut flows = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(2)) {
        let v: Value = serde_json::from_str(&l).expect("JSON line");
        if let Some(f) = v.get("flow") {
            flows.push(f.clone());
        }
    }
    let dport = |f: &Value| f["l4"]["TCP"]["destination_port"].as_u64();
    let dropped = flows
        .iter()
        .find(|f| f["verdict"] == "DROPPED" && dport(f) == Some(9090))
        .expect("a dropped flow to 9090");
    assert_eq!(dropped["drop_reason_desc"], "POLICY_DENIED", "{dropped}");
    assert_eq!(dropped["source"]["pod_name"], "client");
    assert_eq!(dropped["destination"]["pod_name"], "server");
    assert!(
        flows
            .iter()
            .any(|f| f["verdict"] == "FORWARDED" && dport(f) == Some(9090)),
        "forwarded flows to 9090 after the rewrite"
    );
    assert!(
        flows.iter().any(|f| f["event_type"]["type"] == 5
            && dport(f) == Some(8080)
            && f["ingress_allowed_by"][0]["name"] == "server-in"),
        "policy verdicts name the file's policy"
    );
    // The world under the CIDR identity of 192.0.2.0/24 (the first local identity).
    let to_world = flows
        .iter()
        .find(|f| f["IP"]["destination"] == world_ip.to_string())
        .expect("a flow to the world");
    assert_eq!(
        to_world["destination"]["identity"], 16_777_217,
        "{to_world}"
    );
    let labels = to_world["destination"]["labels"].as_array().unwrap();
    assert!(
        labels.iter().any(|l| l == "cidr:192.0.2.0/24"),
        "{labels:?}"
    );
    assert_eq!(to_world["verdict"], "FORWARDED", "{to_world}");
    drop(guard);
}
