//! End-to-end test of endpoints that come and go while the agent runs (needs root and BPF):
//! a lab of two pods with a client pinging the server all along; `lab add-pod` adds two pods
//! and `lab remove-pod` removes one while `hubble-agent run --lab` runs. The new pods' flows
//! appear within 1 s with their identities (a pod with the client's labels shares its
//! identity), ENDPOINT_CREATED / ENDPOINT_DELETED reach `hubble observe agent-events`, the
//! removed pod's programs are gone and the client's flows never stop. Without root or BPF it
//! skips, but fails when CI=true.

use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::runtime::ok;
use common::{TestLab, event_pods, flow_of, spawn_attached};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e endpoints test";

fn spec_text(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.63.0/24"
ipv6_cidr = "fd00:250:63::/64"

[[pods]]
namespace = "ep"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.63.10"
ipv6 = "fd00:250:63::10"

[[pods]]
namespace = "ep"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.63.20"
ipv6 = "fd00:250:63::20"
"#
    )
}

fn lab(spec: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("lab")
        .arg(args[0])
        .arg(spec)
        .args(&args[1..])
        .output()
        .expect("hubble-agent lab")
}

/// What the test did, with when it was done.
enum Step {
    Added(Instant),
    Removed(Instant),
    Done,
}

fn src_pod(f: &Value) -> &str {
    f["source"]["pod_name"].as_str().unwrap_or("")
}

#[test]
fn endpoints_come_and_go_while_the_agent_runs() {
    let name = format!("n{}", std::process::id() % 10_000_000);
    let Some(TestLab {
        dir,
        spec_path,
        spec,
        mut guard,
    }) = TestLab::up(TEST, &name, spec_text)
    else {
        return;
    };
    let sock = dir.path().join("run/hubble.sock");
    let server = format!("unix://{}", sock.display());
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--lab"])
        .arg(&spec_path)
        .arg("--socket")
        .arg(&sock)
        .args([
            "--listen-address",
            "",
            "--aggregation",
            "none",
            "--print-flows",
        ]);
    let Some(lines) = spawn_attached(&mut guard, &mut cmd, TEST) else {
        return;
    };

    // The client pings the server every 100 ms for 6 s, all through the test.
    let client_ns = spec.pods[0].netns.clone();
    let pinger = std::thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &client_ns, "ping", "-n", "-q"])
            .args(["-i", "0.1", "-c", "60", "-W", "1", "10.250.63.20"])
            .output()
            .expect("ping")
    });

    // Meanwhile: add two pods, ping from them, remove one.
    let (tx, steps) = mpsc::channel::<Step>();
    let sp = spec_path.clone();
    let actions = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let a = lab(
            &sp,
            &[
                "add-pod",
                "--namespace",
                "ep",
                "--name",
                "late",
                "--label",
                "app=late",
            ],
        );
        ok(a, "add-pod late");
        let b = lab(
            &sp,
            &[
                "add-pod",
                "--namespace",
                "ep",
                "--name",
                "twin",
                "--label",
                "app=client",
            ],
        );
        ok(b, "add-pod twin");
        tx.send(Step::Added(Instant::now())).unwrap();
        for pod in ["ep/late", "ep/twin"] {
            let p = lab(
                &sp,
                &[
                    "exec",
                    pod,
                    "--",
                    "ping",
                    "-n",
                    "-q",
                    "-i",
                    "0.1",
                    "-c",
                    "10",
                    "-W",
                    "1",
                    "10.250.63.20",
                ],
            );
            ok(p, &format!("ping from {pod}"));
        }
        ok(lab(&sp, &["remove-pod", "ep/late"]), "remove-pod");
        tx.send(Step::Removed(Instant::now())).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        tx.send(Step::Done).unwrap();
    });

    let mut flows: Vec<(Instant, Value)> = Vec::new();
    let (mut added, mut removed) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match steps.try_recv() {
            Ok(Step::Added(t)) => added = Some(t),
            Ok(Step::Removed(t)) => removed = Some(t),
            Ok(Step::Done) => break,
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "the test's steps took too long");
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(20)) {
            flows.push((Instant::now(), serde_json::from_str(&l).expect("JSON line")));
        }
    }
    actions.join().unwrap();
    let ping = pinger.join().unwrap();
    assert!(ping.status.success(), "the client's pings: {ping:?}");
    let (added, removed) = (added.unwrap(), removed.unwrap());

    // The new pods' flows, named and identified, within 1 s of being added.
    let of = |pod: &str| -> Vec<&(Instant, Value)> {
        flows
            .iter()
            .filter(|(_, l)| flow_of(l).is_some_and(|f| src_pod(f) == pod))
            .collect()
    };
    let client = of("client");
    let late = of("late");
    let twin = of("twin");
    assert!(
        !late.is_empty() && !twin.is_empty(),
        "no flows of the added pods"
    );
    let first_late = late[0].0.saturating_duration_since(added);
    assert!(
        first_late < Duration::from_secs(1),
        "late's first flow after {first_late:?}"
    );
    let f = flow_of(&late[0].1).unwrap();
    assert_eq!(f["source"]["namespace"], "ep");
    assert!(
        f["source"]["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "k8s:app=late")),
        "{f}"
    );
    let identity = |v: &Value| flow_of(v).unwrap()["source"]["identity"].as_u64().unwrap();
    let late_id = identity(&late[0].1);
    assert!(late_id >= 256, "late's identity {late_id}");
    assert_eq!(
        identity(&twin[0].1),
        identity(&client[0].1),
        "a pod with the client's labels has the client's identity"
    );
    assert_ne!(late_id, identity(&client[0].1));
    assert_eq!(
        flow_of(&late[0].1).unwrap()["destination"]["pod_name"],
        "server"
    );

    // Nothing from the removed pod once it is gone.
    let after: Vec<_> = late
        .iter()
        .filter(|(t, _)| *t > removed + Duration::from_millis(200))
        .collect();
    assert!(after.is_empty(), "flows of a removed pod: {}", after.len());

    // The client's flows never stopped: no gap of a second between its echo requests.
    let times: Vec<Instant> = client
        .iter()
        .filter(|(_, l)| flow_of(l).is_some_and(|f| f["Summary"] == "ICMPv4 EchoRequest"))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        times.len() >= 40,
        "client echo requests seen: {}",
        times.len()
    );
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        gap < Duration::from_secs(1),
        "the client's flows stopped for {gap:?}"
    );

    // Agent events: both pods created, the removed one deleted, while the agent runs.
    let created = event_pods(&server, "ENDPOINT_CREATED", true);
    for p in ["ep/client", "ep/server", "ep/late", "ep/twin"] {
        assert!(
            created.contains(&p.to_string()),
            "{p} not created: {created:?}"
        );
    }
    assert_eq!(
        event_pods(&server, "ENDPOINT_DELETED", true),
        vec!["ep/late".to_string()]
    );
    drop(guard);
}
