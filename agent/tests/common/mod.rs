//! Shared by the root tests (e2e, e2e_hubble, flood): skipping without privileges (but
//! failing under CI=true) and taking a test lab down whatever happens.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent::lab::spec::LabSpec;
use agent::lab::topology;
use hubble_api::observer::{GetAgentEventsRequest, GetAgentEventsResponse};
use serde_json::Value;

pub mod runtime;

/// Skips `test` with a message, or fails it when CI=true: CI runs as root and must run it.
pub fn skip_or_fail(test: &str, why: &str) {
    if ci() {
        panic!("{test} cannot run with CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// A root test's lab, up: its spec (`spec_text` of the lab's name) written to a temporary
/// directory. Fields drop in reverse order when destructured in this order (`guard` last, so
/// it goes first: the agent stops and the lab comes down before the directory goes).
#[allow(dead_code)] // not every test binary that shares this module uses every field
pub struct TestLab {
    pub dir: tempfile::TempDir,
    pub spec_path: std::path::PathBuf,
    pub spec: LabSpec,
    pub guard: LabGuard,
}

#[allow(dead_code)]
impl TestLab {
    /// Brings up lab `name` (unique per test process: tests run at the same time), or returns
    /// `None` after [`skip_or_fail`] when not root.
    pub fn up(test: &str, name: &str, spec_text: impl FnOnce(&str) -> String) -> Option<TestLab> {
        if !topology::is_root() {
            skip_or_fail(test, "needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let spec_path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&spec_path, spec_text(name)).expect("write the lab spec");
        let spec = LabSpec::load(&spec_path).expect("spec");
        let guard = LabGuard::new(&spec);
        topology::up(&spec).expect("lab up");
        Some(TestLab {
            dir,
            spec_path,
            spec,
            guard,
        })
    }
}

/// A lab spec of two pods, `default/client` (`.10`) and `default/sink` (`.20`), on
/// 10.250.NET.0/24 and fd00:250:NET::/64; `sink_extra` goes into the sink's table (e.g.
/// `l7 = ["dns/53"]`) and `tail` after the pods (e.g. `[[policies]]`).
#[allow(dead_code)]
pub fn two_pod_lab(name: &str, net: u8, sink_extra: &str, tail: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.{net}.0/24"
ipv6_cidr = "fd00:250:{net}::/64"

[[pods]]
namespace = "default"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.{net}.10"
ipv6 = "fd00:250:{net}::10"

[[pods]]
namespace = "default"
name = "sink"
labels = {{ app = "sink" }}
ipv4 = "10.250.{net}.20"
ipv6 = "fd00:250:{net}::20"
{sink_extra}
{tail}"#
    )
}

/// Runs `f` to completion on a current-thread runtime of its own.
#[allow(dead_code)]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The workspace's `hubble` binary (built by `cargo test --workspace` / `cargo build`; a
/// test run of the agent package alone may find an older one). Missing, callers check with
/// the client library instead, except under CI=true, where it must have been built: the
/// test fails.
#[allow(dead_code)]
pub fn hubble_bin() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join("hubble");
    if bin.is_file() {
        return Some(bin);
    }
    if ci() {
        panic!(
            "no hubble binary at {} under CI=true: build it first (cargo build -p hubble)",
            bin.display()
        );
    }
    eprintln!(
        "note: no hubble binary at {}; checking without it (cargo build -p hubble to include it)",
        bin.display()
    );
    None
}

/// Running in CI (`CI=true`, set by .ci/run): what would skip must fail instead.
fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Stops the agent (if any) and takes the lab down even when an assertion fails.
#[allow(dead_code)] // a test binary without labs shares the module for hubble_bin
pub struct LabGuard {
    pub spec: LabSpec,
    pub agent: Option<Child>,
}

#[allow(dead_code)]
impl LabGuard {
    pub fn new(spec: &LabSpec) -> Self {
        LabGuard {
            spec: spec.clone(),
            agent: None,
        }
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = topology::down(&self.spec);
    }
}

/// Spawns `cmd` (a `hubble-agent run`) as the guard's agent with its output piped (stderr
/// echoed as `agent: …`) and waits up to 30 s for "datapath attached". Returns its stdout
/// lines, or `None` when the kernel cannot load the datapath and the test is skipped (a
/// failure under CI=true).
#[allow(dead_code)] // not every test binary that shares this module starts an agent so
pub fn spawn_attached(
    guard: &mut LabGuard,
    cmd: &mut Command,
    test: &str,
) -> Option<mpsc::Receiver<String>> {
    spawn_attached_logged(guard, cmd, test).map(|(stdout, _)| stdout)
}

/// [`spawn_attached`], also returning the agent's stderr lines before "datapath attached"
/// (where it says, for one, its metrics address).
#[allow(dead_code)]
pub fn spawn_attached_logged(
    guard: &mut LabGuard,
    cmd: &mut Command,
    test: &str,
) -> Option<(mpsc::Receiver<String>, Vec<String>)> {
    spawn_attached_streams(guard, cmd, test).map(|(stdout, _, before)| (stdout, before))
}

/// [`spawn_attached_logged`], also returning the receiver of the agent's stderr lines after
/// "datapath attached" (each is still echoed as `agent: …`).
#[allow(dead_code)]
pub fn spawn_attached_streams(
    guard: &mut LabGuard,
    cmd: &mut Command,
    test: &str,
) -> Option<(mpsc::Receiver<String>, mpsc::Receiver<String>, Vec<String>)> {
    spawn_attached_into(&mut guard.agent, cmd, test)
}

/// [`spawn_attached_streams`] for an agent kept in `slot` (a test without a lab guard).
#[allow(dead_code)]
pub fn spawn_attached_into(
    slot: &mut Option<Child>,
    cmd: &mut Command,
    test: &str,
) -> Option<(mpsc::Receiver<String>, mpsc::Receiver<String>, Vec<String>)> {
    let mut agent = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hubble-agent run");
    let stdout = agent.stdout.take().unwrap();
    let stderr = agent.stderr.take().unwrap();
    *slot = Some(agent);
    let (etx, erx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("agent: {line}");
            let _ = etx.send(line);
        }
    });
    let (otx, orx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = otx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stderr_lines = Vec::new();
    loop {
        match erx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("datapath attached") => return Some((orx, erx, stderr_lines)),
            Ok(l) => stderr_lines.push(l),
            Err(_) => {
                if let Some(status) = slot.as_mut().unwrap().try_wait().unwrap() {
                    let msg = stderr_lines.join("\n");
                    if msg.contains("cannot load the eBPF datapath") {
                        skip_or_fail(test, &format!("no BPF: {msg}"));
                        return None;
                    }
                    panic!("agent exited early ({status}): {msg}");
                }
                assert!(Instant::now() < deadline, "agent did not attach in 30s");
            }
        }
    }
}

#[allow(dead_code)]
/// Every stored agent event as JSON (CLI `-o json`, or the client library's responses
/// written as JSON by the same generated encoder).
pub fn all_events(server: &str) -> Vec<Value> {
    if let Some(bin) = hubble_bin() {
        let o = Command::new(&bin)
            .args([
                "observe",
                "agent-events",
                "--server",
                server,
                "--all",
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        return String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
    }
    eprintln!("no hubble binary next to the tests: checking with the client library");
    block_on(async {
        let ch = hubble::client::connect(server, Duration::from_secs(5))
            .await
            .unwrap();
        let mut s = hubble::client::get_agent_events(
            ch,
            GetAgentEventsRequest {
                number: u64::MAX,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        while let Some(r) = s.next().await {
            out.push(to_json(&r.unwrap()));
        }
        out
    })
}

#[allow(dead_code)]
pub fn to_json(r: &GetAgentEventsResponse) -> Value {
    use hubble_api::json::ProtoJson;
    let mut b = Vec::new();
    r.write_json(&mut b).unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[allow(dead_code)]
pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["agent_event"]["type"] == t)
        .collect()
}

/// The flow of a GetFlowsResponse JSON line (None for other responses).
#[allow(dead_code)]
pub fn flow_of(v: &Value) -> Option<&Value> {
    v.get("flow")
}

/// An endpoint's labels in a flow's JSON.
#[allow(dead_code)]
pub fn labels(ep: &Value) -> Vec<String> {
    ep["labels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The pods named in the stored agent events of type `t`: `pod_name`, or
/// `namespace/pod_name` with `namespaced`.
#[allow(dead_code)]
pub fn event_pods(server: &str, t: &str, namespaced: bool) -> Vec<String> {
    let events = all_events(server);
    of_type(&events, t)
        .iter()
        .filter_map(|e| {
            let u = &e["agent_event"]["endpoint_update"];
            let pod = u["pod_name"].as_str()?;
            Some(if namespaced {
                format!("{}/{pod}", u["namespace"].as_str().unwrap_or_default())
            } else {
                pod.to_string()
            })
        })
        .collect()
}

/// Waits up to `limit` for a stored agent event of type `t` naming `pod` (`namespace/pod`
/// with `namespaced`); the time it took.
#[allow(dead_code)]
pub fn wait_event(server: &str, t: &str, pod: &str, namespaced: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if event_pods(server, t, namespaced).iter().any(|p| p == pod) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "no {t} for {pod} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The number after `key=` in the agent's summary lines.
#[allow(dead_code)]
pub fn counter(lines: &[String], key: &str) -> u64 {
    lines
        .iter()
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {lines:#?}"))
}

/// One HTTP/1.1 GET over a plain socket: (status line, lowercased headers, body).
#[allow(dead_code)]
pub fn http_get(addr: &str, path: &str) -> (String, String, String) {
    http_get_accepting(addr, path, None)
}

/// [`http_get`] with an Accept header.
#[allow(dead_code)]
pub fn http_get_accepting(
    addr: &str,
    path: &str,
    accept: Option<&str>,
) -> (String, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read the response");
    let (head, body) = buf.split_once("\r\n\r\n").expect("a header block");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}
