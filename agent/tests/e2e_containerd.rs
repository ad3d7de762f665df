//! End-to-end test of the containerd source (needs root, BPF and Debian's containerd, runc,
//! containernetworking-plugins and busybox-static; installs nothing): a containerd of the
//! test's own (root, state and socket in a temporary directory, no CRI plugin), a busybox
//! image built locally and imported, containers on a CNI bridge of the test's own (the
//! bridge plugin with host-local IPAM run directly into a netns the test made, which the
//! container joins with `ctr run --with-ns`: `ctr run --cni` only reads /etc/cni/net.d).
//! `hubble-agent run --containerd-socket` without a lab attaches to the containers' veths:
//! flows between them name their containers and `container:` labels; a container started
//! later is an endpoint within 1 s (ENDPOINT_CREATED), a killed and removed one is gone
//! (ENDPOINT_DELETED); containerd restarting is followed (reconnect, resync, no duplicate
//! endpoints); a missing socket named on the command line is one line and exit 1. A
//! CiliumNetworkPolicy in `--policy-dir` lets the client reach web and denies an intruder
//! (DROPPED, POLICY_DENY). Containers that vanish while the agent attaches them (their
//! task exits at once, or their veth is deleted under them) leave no endpoint behind and
//! the agent keeps serving.
//! Traffic flows only between the test's containers. Everything is torn down on failure too.
//! Without root or the packages it skips, but fails when CI=true.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::runtime::ok;
use common::{event_pods, flow_of, labels, skip_or_fail, spawn_attached_into, wait_event};
use xtask::containerd::{CNI_DIR, have};
use xtask::workloads::Workloads;

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e containerd test";
const NS: &str = "testns";
const IMAGE_TAG: &str = "hubble-e2e/busybox:latest";
const SUBNET: &str = "10.250.65.0/24";

/// web takes the client on 8080 and nothing from the intruder.
const POLICY: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-ingress
  namespace: testns
spec:
  endpointSelector:
    matchLabels: {app: web}
  ingress:
    - fromEndpoints: [{matchLabels: {app: client}}]
      toPorts:
        - ports: [{port: "8080", protocol: TCP}]
  ingressDeny:
    - fromEndpoints: [{matchLabels: {app: intruder}}]
"#;

/// Everything the test starts, torn down in reverse whatever happens.
struct Env {
    agent: Option<Child>,
    /// Dropped after the agent stops.
    w: Option<Workloads>,
    /// Holds containerd's root, state and sockets; removed after everything else.
    _dir: tempfile::TempDir,
}

impl Env {
    fn w(&mut self) -> &mut Workloads {
        self.w.as_mut().expect("workloads until drop")
    }

    fn ctr(&mut self, args: &[&str]) -> Output {
        self.w().containerd.ctr(NS, args).expect("ctr")
    }

    /// Runs a busybox container labelled `app=APP` in a netns of its own on the test's
    /// bridge; returns its address.
    fn run(&mut self, name: &str, app: &str, cmd: &[&str]) -> String {
        self.w().run(name, app, cmd).expect("ctr run")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // SAFETY: signalling the agent we started.
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while a.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = a.kill();
            let _ = a.wait();
        }
        drop(self.w.take());
    }
}

#[test]
fn containerd_containers_are_endpoints_while_they_run() {
    if !agent::datapath::is_root() {
        return skip_or_fail(TEST, "needs root");
    }
    for cmd in [
        "containerd",
        "ctr",
        "runc",
        "busybox",
        "tar",
        "sha256sum",
        "ip",
    ] {
        if !have(cmd) {
            return skip_or_fail(
                TEST,
                &format!(
                    "{cmd} not found (apt-get install containerd runc containernetworking-plugins busybox-static)"
                ),
            );
        }
    }
    if !Path::new(CNI_DIR).join("bridge").is_file() {
        return skip_or_fail(TEST, "no CNI bridge plugin in /usr/lib/cni");
    }
    let dir = tempfile::tempdir().expect("tempdir");

    // A socket named on the command line that is not there: one line, exit 1.
    let missing = dir.path().join("missing.sock");
    let o = Command::new(BIN)
        .arg("run")
        .arg("--containerd-socket")
        .arg(&missing)
        .args(["--listen-address", "", "--duration", "1s"])
        .arg("--socket")
        .arg(dir.path().join("unused.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no socket at") && err.contains("missing.sock"),
        "{err}"
    );

    let id = std::process::id() % 100_000;
    let d = dir.path().to_path_buf();
    let mut env = Env {
        w: Some(Workloads::new(&d, NS, &format!("hbctr{id}"), SUBNET).expect("containerd config")),
        agent: None,
        _dir: dir,
    };
    env.w()
        .start(&d.join("image"), IMAGE_TAG)
        .expect("containerd with the test's image");

    let web_ip = env.run("web", "web", &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    let client_ip = env.run("client", "client", &["sleep", "3600"]);
    let intruder_ip = env.run("intruder", "intruder", &["sleep", "3600"]);
    let policies = d.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("web-ingress.yaml"), POLICY).unwrap();

    // The agent, without a lab.
    let hubble_sock = d.join("hubble.sock");
    let server = format!("unix://{}", hubble_sock.display());
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--containerd-socket")
        .arg(&env.w().containerd.sock)
        .arg("--socket")
        .arg(&hubble_sock)
        .arg("--policy-dir")
        .arg(&policies)
        .args(["--listen-address", "", "--print-flows"]);
    let Some((orx, _stderr, before)) = spawn_attached_into(&mut env.agent, &mut cmd, TEST) else {
        return;
    };
    assert!(
        before
            .iter()
            .any(|l| l == "hubble-agent: containerd: 3 containers in namespace testns; 3 endpoints"),
        "{before:#?}"
    );

    // Bounded traffic, only between the test's containers.
    let url = format!("http://{web_ip}:8080/");
    for i in 0..3 {
        let exec_id = format!("wget{i}");
        let body = ok(
            env.ctr(&[
                "task",
                "exec",
                "--exec-id",
                &exec_id,
                "client",
                "wget",
                "-q",
                "-O-",
                &url,
            ]),
            "wget from the client container",
        );
        assert_eq!(body, "hello from web\n");
    }
    // The intruder is denied: busybox's wget gives up under `timeout 2`.
    let denied = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "intrude",
        "intruder",
        "busybox",
        "timeout",
        "2",
        "wget",
        "-q",
        "-O-",
        &url,
    ]);
    assert!(!denied.status.success(), "the intruder reached web");
    let mut to_web: Option<Value> = None;
    let mut from_web: Option<Value> = None;
    let mut dropped: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (to_web.is_none() || from_web.is_none() || dropped.is_none()) && Instant::now() < deadline
    {
        let Ok(l) = orx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&l).expect("JSON line");
        let Some(f) = flow_of(&v) else { continue };
        let (s, dst) = (&f["source"], &f["destination"]);
        if s["pod_name"] == "client" && dst["pod_name"] == "web" && f["IP"]["source"] == client_ip {
            to_web = Some(f.clone());
        }
        if s["pod_name"] == "web" && dst["pod_name"] == "client" {
            from_web = Some(f.clone());
        }
        if s["pod_name"] == "intruder" && f["verdict"] == "DROPPED" {
            dropped = Some(f.clone());
        }
    }
    let drop = dropped.expect("a DROPPED intruder → web flow");
    // An ingressDeny rule: Cilium's POLICY_DENY (181), not the default deny's POLICY_DENIED.
    assert_eq!(drop["drop_reason_desc"], "POLICY_DENY", "{drop}");
    assert_eq!(
        drop["ingress_denied_by"][0]["name"], "web-ingress",
        "{drop}"
    );
    assert_eq!(drop["IP"]["source"], intruder_ip, "{drop}");
    assert_eq!(drop["destination"]["pod_name"], "web", "{drop}");
    assert_eq!(drop["l4"]["TCP"]["destination_port"], 8080, "{drop}");
    let f = to_web.expect("a client → web flow");
    assert!(from_web.is_some(), "a web → client flow");
    assert_eq!(f["source"]["namespace"], NS);
    assert_eq!(f["destination"]["namespace"], NS);
    assert_eq!(labels(&f["source"]), ["container:app=client"]);
    assert_eq!(labels(&f["destination"]), ["container:app=web"]);
    let (si, di) = (
        f["source"]["identity"].as_u64().unwrap(),
        f["destination"]["identity"].as_u64().unwrap(),
    );
    assert!(si >= 256 && di >= 256 && si != di, "identities {si} {di}");
    assert!(f["destination"]["ID"].is_u64());
    assert_eq!(f["l4"]["TCP"]["destination_port"], 8080);

    // A container started now is an endpoint within 1 s.
    let created = event_pods(&server, "ENDPOINT_CREATED", false);
    assert!(
        created.contains(&"web".to_string()) && created.contains(&"client".to_string()),
        "{created:?}"
    );
    env.run("late", "late", &["sleep", "3600"]);
    let took = wait_event(
        &server,
        "ENDPOINT_CREATED",
        "late",
        false,
        Duration::from_secs(1),
    );
    eprintln!("late container observed after {took:?}");

    // Killed and removed: ENDPOINT_DELETED.
    env.w().remove("late");
    wait_event(
        &server,
        "ENDPOINT_DELETED",
        "late",
        false,
        Duration::from_secs(2),
    );
    let deleted = event_pods(&server, "ENDPOINT_DELETED", false);
    assert!(
        !deleted.contains(&"web".to_string()),
        "web is still running: {deleted:?}"
    );

    // Containers that vanish while the agent attaches them: tasks that exit at once, and
    // running containers whose veth is deleted under them (CNI DEL). None may keep an
    // endpoint, and the agent keeps serving.
    let brief: Vec<String> = (0..6).map(|i| format!("brief{i}")).collect();
    for (i, name) in brief.iter().enumerate() {
        if i % 2 == 0 {
            env.run(name, "brief", &["sleep", "0.1"]);
        } else {
            env.run(name, "brief", &["sleep", "3600"]);
            env.w().cut_network(name);
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    for name in &brief {
        env.w().remove(name);
    }
    let settled = Instant::now();
    loop {
        let created = event_pods(&server, "ENDPOINT_CREATED", false);
        let deleted = event_pods(&server, "ENDPOINT_DELETED", false);
        let count = |v: &[String], n: &str| v.iter().filter(|p| *p == n).count();
        let open: Vec<&String> = brief
            .iter()
            .filter(|n| count(&created, n) != count(&deleted, n))
            .collect();
        if open.is_empty() {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(3),
            "endpoints left behind by vanished containers: {open:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        env.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited"
    );

    // containerd restarts: the agent reconnects and resyncs, the running containers keep
    // their endpoints (no second ENDPOINT_CREATED) and a container started afterwards is
    // observed.
    env.w().containerd.stop();
    std::thread::sleep(Duration::from_millis(300));
    env.w().containerd.start().expect("containerd");
    env.run("after", "after", &["sleep", "3600"]);
    wait_event(
        &server,
        "ENDPOINT_CREATED",
        "after",
        false,
        Duration::from_secs(10),
    );
    let created = event_pods(&server, "ENDPOINT_CREATED", false);
    for pod in ["web", "client", "after"] {
        assert_eq!(
            created.iter().filter(|p| *p == pod).count(),
            1,
            "{pod}: {created:?}"
        );
    }
    assert!(
        !event_pods(&server, "ENDPOINT_DELETED", false).contains(&"web".to_string()),
        "web lost its endpoint over the restart"
    );

    // A clean stop.
    let mut agent = env.agent.take().unwrap();
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
}
