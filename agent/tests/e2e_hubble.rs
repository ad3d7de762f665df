//! End-to-end test of the Hubble API (needs root and BPF): a uniquely named lab, `hubble-agent
//! run` serving a temporary unix socket, `lab traffic`, then the real `hubble` CLI (observe,
//! status) and a follower reading it. Without root or BPF it skips, but fails when CI=true.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hubble_api::observer::GetFlowsRequest;
use hubble_api::observer::get_flows_response::ResponseTypes;
use serde_json::Value;

mod common;
use common::{TestLab, hubble_bin, skip_or_fail};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e Hubble API test";

fn spec_text(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.7.0/24"
ipv6_cidr = "fd00:250:7::/64"

[[pods]]
namespace = "web"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.7.10"
ipv6 = "fd00:250:7::10"

[[pods]]
namespace = "web"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.7.20"
ipv6 = "fd00:250:7::20"

[[services]]
namespace = "web"
name = "server"
selector = {{ app = "server" }}
ports = [{{ port = 8080, protocol = "TCP", name = "http" }}]
"#
    )
}

fn traffic(spec: &std::path::Path) {
    let st = Command::new(BIN)
        .args(["lab", "traffic"])
        .arg(spec)
        .args(["--count", "2", "--duration", "10s"])
        .stdout(Stdio::null())
        .status()
        .expect("lab traffic");
    // Probes may disagree with expectations; only a failure to run matters here.
    assert!(st.code().is_some(), "lab traffic was killed: {st}");
}

#[test]
fn hubble_cli_reads_live_agent() {
    let name = format!("h{}", std::process::id() % 10_000_000);
    let Some(TestLab {
        dir,
        spec_path,
        spec: _,
        mut guard,
    }) = TestLab::up(TEST, &name, spec_text)
    else {
        return;
    };
    let sock = dir.path().join("run/hubble.sock");
    let server = format!("unix://{}", sock.display());

    let mut agent = Command::new(BIN)
        .args(["run", "--lab"])
        .arg(&spec_path)
        .arg("--socket")
        .arg(&sock)
        .args(["--listen-address", "", "--max-flows", "1023"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hubble-agent run");
    let stderr = agent.stderr.take().unwrap();
    guard.agent = Some(agent);
    let (etx, erx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("agent: {line}");
            let _ = etx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    loop {
        match erx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("datapath attached") => break,
            Ok(l) => log.push(l),
            Err(_) => {
                if let Some(status) = guard.agent.as_mut().unwrap().try_wait().unwrap() {
                    let msg = log.join("\n");
                    if msg.contains("cannot load the eBPF datapath") {
                        return skip_or_fail(TEST, &format!("no BPF: {msg}"));
                    }
                    panic!("agent exited early ({status}): {msg}");
                }
                assert!(Instant::now() < deadline, "agent did not attach in 30s");
            }
        }
    }
    assert!(
        log.iter().any(|l| l.contains("Hubble API on unix://")),
        "{log:?}"
    );
    assert!(sock.exists(), "socket {} exists", sock.display());

    traffic(&spec_path);
    std::thread::sleep(Duration::from_millis(500));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The real CLI, when the workspace built it; the client library otherwise.
    match hubble_bin() {
        Some(bin) => {
            let o = Command::new(&bin)
                .args([
                    "observe", "--server", &server, "--last", "100", "-o", "json",
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
            let lines: Vec<Value> = String::from_utf8(o.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON line"))
                .collect();
            assert!(!lines.is_empty(), "no flows from the agent");
            assert!(lines.len() <= 100);
            assert!(lines.iter().all(|l| l["node_name"].as_str()
                == Some(&*format!("{name}-node"))
                || l.get("lost_events").is_some()));
            assert!(
                lines
                    .iter()
                    .any(|l| l["flow"]["source"]["pod_name"] == "client"
                        && l["flow"]["source"]["namespace"] == "web"),
                "a flow of web/client"
            );
            let o = Command::new(&bin)
                .args(["status", "--server", &server])
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
            let out = String::from_utf8(o.stdout).unwrap();
            assert!(
                out.starts_with(&format!("Healthcheck (via {server}): Ok\n")),
                "{out}"
            );
            assert!(out.contains("/1,023 ("), "{out}");
        }
        None => eprintln!("no hubble binary next to the tests: checking with the client library"),
    }

    // A follower sees flows of new traffic; filters apply on the server.
    let got = rt.block_on(async {
        let ch = hubble::client::connect(&server, Duration::from_secs(5))
            .await
            .expect("connect");
        let mut s = hubble::client::get_flows(
            ch,
            GetFlowsRequest {
                follow: true,
                whitelist: vec![hubble_api::flow::FlowFilter {
                    source_pod: vec!["web/client".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await
        .expect("GetFlows");
        let spec_path = spec_path.clone();
        let drive = tokio::task::spawn_blocking(move || traffic(&spec_path));
        let first = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("a followed flow within 20s")
            .expect("stream open")
            .expect("no error");
        let _ = drive.await;
        first
    });
    match got.response_types {
        Some(ResponseTypes::Flow(f)) => {
            let src = f.source.expect("source");
            assert_eq!(
                (src.namespace.as_str(), src.pod_name.as_str()),
                ("web", "client")
            );
        }
        other => panic!("expected a flow, got {other:?}"),
    }

    let mut agent = guard.agent.take().unwrap();
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit status {status}");
    assert!(!sock.exists(), "the agent removes its socket");
}
