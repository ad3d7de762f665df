//! End-to-end test of agent events (needs root and BPF): a uniquely named lab, `hubble-agent
//! run` serving a temporary unix socket, then `hubble observe agent-events` (the real CLI when
//! the workspace built it, else the client library) lists what the agent did: AGENT_STARTED,
//! the ipcache entries, one POLICY_UPDATED per policy, one ENDPOINT_CREATED per pod; a
//! follower sees ENDPOINT_DELETED of every pod when the agent stops; the agent's exporter
//! (allowlist: agent events) wrote the same events, then the deletions. Without a Hubble
//! server, the exporter still gets every agent event. Without root or BPF it skips, but fails
//! when CI=true.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{TestLab, all_events, hubble_bin, of_type, spawn_attached, to_json};
use hubble_api::observer::GetAgentEventsRequest;

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e agent events test";
const ALLOW_AGENT_EVENTS: &str = r#"{"event_type":[{"type":130}]}"#;

/// The export file's lines as JSON.
fn exported(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("export file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole exported line"))
        .collect()
}

fn spec_text(name: &str) -> String {
    spec_text_in(name, 61)
}

/// The lab spec with its addresses in 10.250.`net`.0/24 and fd00:250:`net`::/64.
fn spec_text_in(name: &str, net: u8) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.{net}.0/24"
ipv6_cidr = "fd00:250:{net}::/64"

[[pods]]
namespace = "ev"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.{net}.10"
ipv6 = "fd00:250:{net}::10"

[[pods]]
namespace = "ev"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.{net}.20"
ipv6 = "fd00:250:{net}::20"

[[pods]]
namespace = "other"
name = "probe"
labels = {{ app = "probe" }}
ipv4 = "10.250.{net}.30"
ipv6 = "fd00:250:{net}::30"

[[policies]]
name = "server-ingress"
namespace = "ev"
endpoint_selector = {{ app = "server" }}
ingress = [{{ from = [{{ labels = {{ app = "client" }} }}], ports = [{{ port = 8080, protocol = "TCP" }}] }}]

[[policies]]
name = "probe-egress"
namespace = "other"
endpoint_selector = {{}}
egress = [{{ to = [{{ entity = "world" }}] }}]
"#
    )
}

#[test]
fn agent_events_of_a_live_lab() {
    let name = format!("e{}", std::process::id() % 10_000_000);
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
        .args(["--listen-address", "", "--max-flows", "1023"])
        .arg("--export-file-path")
        .arg(dir.path().join("export/events.log"))
        .args(["--export-allowlist", ALLOW_AGENT_EVENTS]);
    if spawn_attached(&mut guard, &mut cmd, TEST).is_none() {
        return;
    }

    let events = all_events(&server);
    let node = format!("{name}-node");
    assert!(
        events.iter().all(|e| e["node_name"] == node.as_str()),
        "{events:#?}"
    );
    assert_eq!(
        events[0]["agent_event"]["type"], "AGENT_STARTED",
        "{events:#?}"
    );
    assert!(events[0]["agent_event"]["agent_start"]["time"].is_string());

    let created = of_type(&events, "ENDPOINT_CREATED");
    let mut pods: Vec<(String, String)> = created
        .iter()
        .map(|e| {
            let u = &e["agent_event"]["endpoint_update"];
            assert!(u["id"].as_str().is_some_and(|id| id.parse::<u64>().is_ok()));
            assert!(
                u["labels"].as_array().is_some_and(|l| l
                    .iter()
                    .any(|l| l.as_str().unwrap().starts_with("k8s:app="))),
                "{u}"
            );
            (
                u["namespace"].as_str().unwrap().to_string(),
                u["pod_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pods.sort();
    assert_eq!(
        pods,
        [("ev", "client"), ("ev", "server"), ("other", "probe")]
            .map(|(n, p)| (n.to_string(), p.to_string()))
    );

    let policies = of_type(&events, "POLICY_UPDATED");
    assert_eq!(policies.len(), spec.policies.len(), "{policies:#?}");
    let total: u64 = policies
        .iter()
        .map(|p| {
            p["agent_event"]["policy_update"]["rule_count"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, spec.policies.len() as u64);
    assert!(policies.iter().any(|p| {
        p["agent_event"]["policy_update"]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "k8s:io.cilium.k8s.policy.name=server-ingress")
    }));

    let ipcache = of_type(&events, "IPCACHE_UPSERTED");
    for pod in &spec.pods {
        let cidr = format!("{}/32", pod.ipv4);
        let e = ipcache
            .iter()
            .map(|e| &e["agent_event"]["ipcache_update"])
            .find(|u| u["cidr"] == cidr.as_str())
            .unwrap_or_else(|| panic!("no ipcache event for {cidr}: {ipcache:#?}"));
        assert_eq!(e["pod_name"], pod.name.as_str());
        assert_eq!(e["namespace"], pod.namespace.as_str());
    }

    // Compact output: one line per event.
    if let Some(bin) = hubble_bin() {
        let o = Command::new(&bin)
            .args([
                "observe",
                "agent-events",
                "--server",
                &server,
                "--last",
                "3",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let out = String::from_utf8(o.stdout).unwrap();
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.lines().all(|l| l.contains(": ENDPOINT_CREATED (")),
            "{out}"
        );
    }

    // A follower sees every endpoint deleted when the agent stops.
    let (tx, rx) = std::sync::mpsc::channel();
    let follower_server = server.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ch = hubble::client::connect(&follower_server, Duration::from_secs(5))
                .await
                .unwrap();
            let mut s = hubble::client::get_agent_events(
                ch,
                GetAgentEventsRequest {
                    follow: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let _ = tx.send(None);
            while let Some(Ok(r)) = s.next().await {
                if tx.send(Some(to_json(&r))).is_err() {
                    break;
                }
            }
        });
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().is_none(),
        "follower subscribed"
    );
    let pid = guard.agent.as_ref().unwrap().id() as i32;
    // SAFETY: signalling the agent this test spawned.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut deleted = Vec::new();
    while let Ok(Some(e)) = rx.recv_timeout(Duration::from_secs(10)) {
        if e["agent_event"]["type"] == "ENDPOINT_DELETED" {
            deleted.push(
                e["agent_event"]["endpoint_update"]["pod_name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    deleted.sort();
    assert_eq!(deleted, ["client", "probe", "server"]);
    let st = guard.agent.as_mut().unwrap().wait().unwrap();
    assert!(st.success(), "agent exit: {st}");

    // The exporter wrote every event the server served, identical (ExportEvent and
    // GetAgentEventsResponse share agent_event, node_name and time), then the deletions;
    // the allowlist kept flows out.
    let lines = exported(&dir.path().join("export/events.log"));
    assert!(lines.len() >= events.len(), "{lines:#?}");
    assert_eq!(lines[..events.len()], events[..]);
    let rest: Vec<&str> = lines[events.len()..]
        .iter()
        .map(|l| {
            l["agent_event"]["type"]
                .as_str()
                .unwrap_or("not an agent event")
        })
        .collect();
    assert_eq!(rest, ["ENDPOINT_DELETED"; 3], "{lines:#?}");
}

#[test]
fn export_without_a_hubble_server() {
    let name = format!("x{}", std::process::id() % 10_000_000);
    let Some(TestLab {
        dir,
        mut guard,
        spec_path,
        ..
    }) = TestLab::up(TEST, &name, |n| spec_text_in(n, 62))
    else {
        return;
    };
    let path = dir.path().join("events.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--no-hubble-server", "--duration", "1s", "--lab"])
        .arg(&spec_path)
        .arg("--export-file-path")
        .arg(&path)
        .args(["--export-allowlist", ALLOW_AGENT_EVENTS]);
    if spawn_attached(&mut guard, &mut cmd, TEST).is_none() {
        return;
    }
    // It stops by itself (a SIGTERM right after "datapath attached" can come before the
    // agent listens for it).
    let st = guard.agent.as_mut().unwrap().wait().unwrap();
    assert!(st.success(), "agent exit: {st}");
    let lines = exported(&path);
    let types: Vec<&str> = lines
        .iter()
        .map(|l| {
            l["agent_event"]["type"]
                .as_str()
                .unwrap_or("not an agent event")
        })
        .collect();
    assert_eq!(types[0], "AGENT_STARTED", "{lines:#?}");
    for (t, n) in [
        ("AGENT_STARTED", 1),
        ("POLICY_UPDATED", 2),
        ("ENDPOINT_CREATED", 3),
        ("ENDPOINT_DELETED", 3),
    ] {
        assert_eq!(
            types.iter().filter(|&&x| x == t).count(),
            n,
            "{t}: {types:?}"
        );
    }
    assert!(types.contains(&"IPCACHE_UPSERTED"), "{types:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["node_name"] == format!("{name}-node")),
        "{lines:#?}"
    );
}
