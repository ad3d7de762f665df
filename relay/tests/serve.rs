//! The `hubble-relay serve` binary over real sockets on 127.0.0.1, in front of in-process
//! agents (tests/support) or fake ones: `--cluster-name` in the agents' TLS server names,
//! the health listener, the metrics endpoint (checked by `promtool check metrics`), the
//! config file and `RELAY_*` environment with their precedence, and node errors coalesced
//! within `--error-aggregation-window`. Ports are chosen by the kernel and read back from
//! the relay's startup line. No privileges needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hubble::client;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse, GetNodesRequest};
use hubble_api::relay::NodeState;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

mod support;
use support::{Agent, flow, flows, statuses};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-relay");
/// Bound on waiting for anything (a start, a state change, an exit).
const WAIT: Duration = Duration::from_secs(10);

/// A running `hubble-relay serve`, killed on drop.
struct Relay {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The API, health and metrics addresses from the startup line.
    addr: String,
    health: Option<String>,
    metrics: Option<String>,
}

/// `hubble-relay serve ARGS` with `envs` and no other `RELAY_*` variable.
fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("serve").args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RELAY_") {
            c.env_remove(k);
        }
    }
    c.envs(envs.iter().copied());
    c
}

impl Relay {
    /// Starts the relay and waits for its startup line.
    async fn start(args: &[&str], envs: &[(&str, &str)]) -> Relay {
        let mut child = command(args, envs)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("hubble-relay starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        });
        let until = Instant::now() + WAIT;
        let line = loop {
            let found = stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("listening on"))
                .cloned();
            if let Some(l) = found {
                break l;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!("hubble-relay exited ({st}): {:?}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < until, "no startup line");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let after = |tag: &str, end: &[char]| {
            let rest = &line[line.find(tag)? + tag.len()..];
            Some(rest[..rest.find(end).unwrap_or(rest.len())].to_string())
        };
        Relay {
            addr: after("listening on ", &[' ']).unwrap(),
            health: after("health on ", &[',', ' ']),
            metrics: after("metrics on http://", &['/']),
            child,
            stderr,
        }
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the relay expecting it to exit by itself: its status and stderr lines.
async fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (ExitStatus, Vec<String>) {
    let mut child = command(args, envs)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + WAIT;
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("hubble-relay {args:?} kept running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (st, err.lines().map(str::to_string).collect())
}

async fn collect(addr: &str, req: GetFlowsRequest) -> Vec<GetFlowsResponse> {
    let ch = client::connect(addr, WAIT).await.unwrap();
    let mut s = client::get_flows(ch, req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(r) = s.next().await {
            out.push(r.unwrap());
        }
    })
    .await
    .expect("stream ends");
    out
}

/// Polls `f` until it is true (bounded).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let until = Instant::now() + WAIT;
    while !f().await {
        assert!(Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Agents whose certificates name the relay's `--cluster-name` are accepted, dots in node
/// and cluster names turned into dashes as Cilium does; an agent whose certificate is for
/// another cluster (from a CA the relay trusts) is refused and reported unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_name_is_in_the_agents_tls_server_names() {
    use agent::observer::LocalObserver;
    use hubble::tls::ServerTls;
    let dir = tempfile::tempdir().unwrap();
    let (prod, other) = (dir.path().join("prod"), dir.path().join("other"));
    agent::certs::generate(&prod, "prod.eu", false).unwrap();
    agent::certs::generate(&other, "other", false).unwrap();
    let tls = |d: &std::path::Path| {
        ServerTls::load(&d.join("server.crt"), &d.join("server.key"), &[]).unwrap()
    };
    let obs = Arc::new(LocalObserver::new(4095, "worker.eu-1").unwrap());
    obs.push_flow(flow("worker.eu-1", "tls", 1));
    let good = Agent::start_tls(obs, "127.0.0.1:0", Some(tls(&prod))).await;
    let obs = Arc::new(LocalObserver::new(4095, "node-b").unwrap());
    let bad = Agent::start_tls(obs, "127.0.0.1:0", Some(tls(&other))).await;
    let cas = format!(
        "{},{}",
        prod.join("ca.crt").display(),
        other.join("ca.crt").display()
    );
    let r = Relay::start(
        &[
            "--listen-address=127.0.0.1:0",
            "--health-listen-address=",
            "--cluster-name=prod.eu",
            &format!("--peer=worker.eu-1={}", good.addr),
            &format!("--peer=node-b={}", bad.addr),
            &format!("--tls-hubble-server-ca-files={cas}"),
            "--retry-timeout=200ms",
        ],
        &[],
    )
    .await;
    let ch = client::connect(&r.addr, WAIT).await.unwrap();
    let nodes = async || {
        client::observer(ch.clone())
            .get_nodes(GetNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
    };
    eventually("worker.eu-1 connected, node-b unavailable", async || {
        let states: Vec<_> = nodes().await.iter().map(|n| n.state).collect();
        states
            == [
                NodeState::NodeUnavailable as i32,
                NodeState::NodeConnected as i32,
            ]
    })
    .await;
    let names: Vec<_> = nodes()
        .await
        .into_iter()
        .map(|n| (n.name, n.tls.unwrap().server_name))
        .collect();
    assert_eq!(
        names,
        [
            (
                "node-b".into(),
                "node-b.prod-eu.hubble-grpc.cilium.io".into()
            ),
            (
                "worker.eu-1".to_string(),
                "worker-eu-1.prod-eu.hubble-grpc.cilium.io".to_string()
            ),
        ]
    );
    let st = client::server_status(ch, WAIT).await.unwrap();
    assert_eq!(st.unavailable_nodes, ["node-b"]);
    let all = collect(
        &r.addr,
        GetFlowsRequest {
            number: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        flows(&all),
        [("worker.eu-1".into(), "worker.eu-1-1".into())]
    );
    assert!(statuses(&all).contains(&(NodeState::NodeUnavailable, vec!["node-b".into()])));
    good.stop().await;
    bad.stop().await;
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

fn status(r: HealthCheckResponse) -> ServingStatus {
    ServingStatus::try_from(r.status).unwrap()
}

/// The health listener serves grpc.health.v1 alone, plaintext: NOT_SERVING while no peer is
/// connected, SERVING once one is (Check and Watch, for "" and hubble.server.Observer, as on
/// the API listener), NOT_SERVING again when it goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_listener_follows_the_peers() {
    // An address where an agent will be, later.
    let a = Agent::start("node-a", "127.0.0.1:0").await;
    let addr = a.addr.clone();
    a.stop().await;
    let r = Relay::start(
        &[
            "--listen-address=127.0.0.1:0",
            "--health-listen-address=127.0.0.1:0",
            &format!("--peer=node-a={addr}"),
            "--retry-timeout=200ms",
        ],
        &[],
    )
    .await;
    let health_addr = r
        .health
        .clone()
        .expect("health address on the startup line");
    let mut h = HealthClient::new(client::connect(&health_addr, WAIT).await.unwrap());
    for svc in ["", "hubble.server.Observer"] {
        let st = h.check(check(svc)).await.unwrap().into_inner();
        assert_eq!(status(st), ServingStatus::NotServing, "{svc:?}");
    }
    let mut watch = h.watch(check("")).await.unwrap().into_inner();
    let mut next = async || {
        let r = tokio::time::timeout(WAIT, watch.message()).await;
        status(r.expect("a health update in time").unwrap().unwrap())
    };
    assert_eq!(next().await, ServingStatus::NotServing);
    let a = Agent::start("node-a", &addr).await;
    assert_eq!(next().await, ServingStatus::Serving);
    for svc in ["", "hubble.server.Observer"] {
        let st = h.check(check(svc)).await.unwrap().into_inner();
        assert_eq!(status(st), ServingStatus::Serving, "{svc:?}");
    }
    let mut main = HealthClient::new(client::connect(&r.addr, WAIT).await.unwrap());
    let st = main.check(check("")).await.unwrap().into_inner();
    assert_eq!(status(st), ServingStatus::Serving);
    // Health and nothing else on the health listener.
    let ch = client::connect(&health_addr, WAIT).await.unwrap();
    let err = client::observer(ch)
        .server_status(hubble_api::observer::ServerStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    a.stop().await;
    assert_eq!(next().await, ServingStatus::NotServing);
}

/// GET over HTTP/1.1: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// `promtool check metrics` on `text`: None when promtool is missing (a failure under
/// CI=true), else its verdict.
fn promtool(text: &str) -> Option<std::process::Output> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("promtool is needed with CI=true (apt-get install prometheus): {e}");
            }
            eprintln!("SKIP promtool check metrics: promtool not found ({e})");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

/// /metrics has the pool gauge with Cilium's status values, go-grpc-prometheus's counters
/// for the calls made (every method's series present from the start) and the process
/// metrics; promtool finds the exposition valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_peers_calls_and_the_process() {
    let a = Agent::start("node-a", "127.0.0.1:0").await;
    for t in 0..3 {
        a.obs.push_flow(flow("node-a", "m", t));
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let r = Relay::start(
        &[
            "--listen-address=127.0.0.1:0",
            "--health-listen-address=",
            "--metrics-listen-address=127.0.0.1:0",
            &format!("--peer=node-a={}", a.addr),
            &format!("--peer=node-dead={dead_addr}"),
            "--retry-timeout=200ms",
        ],
        &[],
    )
    .await;
    let m = r
        .metrics
        .clone()
        .expect("metrics address on the startup line");
    let pool = |s: &str| format!("hubble_relay_pool_peer_connection_status{{status=\"{s}\"}}");
    eventually("one peer READY, one TRANSIENT_FAILURE", async || {
        let s = samples(&http_get(&m, "/metrics").1);
        s.get(&pool("READY")) == Some(&1.0) && s.get(&pool("TRANSIENT_FAILURE")) == Some(&1.0)
    })
    .await;
    let ch = client::connect(&r.addr, WAIT).await.unwrap();
    client::server_status(ch.clone(), WAIT).await.unwrap();
    let got = collect(
        &r.addr,
        GetFlowsRequest {
            number: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(flows(&got).len(), 3);
    let refused = client::observer(ch)
        .get_flows(GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let (status_line, text) = http_get(&m, "/metrics");
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    let s = samples(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("{k} in\n{text}"));
    let grpc = |family: &str, code: Option<&str>, service: &str, method: &str, kind: &str| {
        let code = code
            .map(|c| format!("grpc_code=\"{c}\","))
            .unwrap_or_default();
        get(&format!(
            "{family}{{{code}grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
        ))
    };
    let obs = "observer.Observer";
    let handled = "grpc_server_handled_total";
    assert_eq!(grpc(handled, Some("OK"), obs, "ServerStatus", "unary"), 1.0);
    assert_eq!(
        grpc(
            "grpc_server_started_total",
            None,
            obs,
            "ServerStatus",
            "unary"
        ),
        1.0
    );
    assert_eq!(
        grpc(
            "grpc_server_msg_received_total",
            None,
            obs,
            "ServerStatus",
            "unary"
        ),
        1.0
    );
    assert_eq!(
        grpc(
            "grpc_server_msg_sent_total",
            None,
            obs,
            "ServerStatus",
            "unary"
        ),
        1.0
    );
    assert_eq!(
        grpc(handled, Some("OK"), obs, "GetFlows", "server_stream"),
        1.0
    );
    assert_eq!(
        grpc(
            handled,
            Some("InvalidArgument"),
            obs,
            "GetFlows",
            "server_stream"
        ),
        1.0
    );
    assert_eq!(
        grpc(
            "grpc_server_started_total",
            None,
            obs,
            "GetFlows",
            "server_stream"
        ),
        2.0
    );
    assert_eq!(
        grpc(
            "grpc_server_msg_received_total",
            None,
            obs,
            "GetFlows",
            "server_stream"
        ),
        2.0
    );
    assert_eq!(
        grpc(
            "grpc_server_msg_sent_total",
            None,
            obs,
            "GetFlows",
            "server_stream"
        ),
        got.len() as f64
    );
    // Methods not called have their series, at zero.
    let health = "grpc.health.v1.Health";
    assert_eq!(
        grpc(
            handled,
            Some("Unimplemented"),
            health,
            "Watch",
            "server_stream"
        ),
        0.0
    );
    let reflection = "grpc.reflection.v1.ServerReflection";
    assert_eq!(
        grpc(
            "grpc_server_started_total",
            None,
            reflection,
            "ServerReflectionInfo",
            "bidi_stream"
        ),
        0.0
    );
    for (state, n) in [
        ("READY", 1.0),
        ("TRANSIENT_FAILURE", 1.0),
        ("CONNECTING", 0.0),
        ("IDLE", 0.0),
        ("SHUTDOWN", 0.0),
        ("NIL_CONNECTION", 0.0),
    ] {
        assert_eq!(get(&pool(state)), n, "{state}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = get("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
    assert!(get("process_resident_memory_bytes") > 0.0);
    assert!(get("process_open_fds") >= 3.0);
    assert!(get("process_cpu_seconds_total") >= 0.0);
    assert!(get("process_max_fds") >= get("process_open_fds"));
    assert!(get("process_virtual_memory_bytes") > 0.0);
    assert_eq!(http_get(&m, "/nope").0, "HTTP/1.1 404 Not Found");
    if let Some(out) = promtool(&text) {
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    a.stop().await;
}

/// The node name of the relay's own status events (its `--relay-name`).
async fn relay_name(addr: &str) -> String {
    let got = collect(
        addr,
        GetFlowsRequest {
            number: 1,
            ..Default::default()
        },
    )
    .await;
    got.iter()
        .find(|r| matches!(r.response_types, Some(ResponseTypes::NodeStatus(_))))
        .expect("a node status event")
        .node_name
        .clone()
}

/// Settings come from a flag, else RELAY_* environment, else the config file (`--config` or
/// RELAY_CONFIG), else the default; Hubble Relay's gops/pprof/log keys are accepted and
/// reported; an unknown key or a bad value is one line and exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_and_environment_in_viper_order() {
    let a = Agent::start("node-a", "127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    // As Helm's ConfigMap writes it: empty values mean the default. The listen address is
    // unusable, so the relay only starts if the environment's wins.
    std::fs::write(
        &file,
        format!(
            "listen-address: nope\nhealth-listen-address: \"\"\npeer:\n  - node-a={}\n\
             relay-name: from-file\ndial-timeout:\nsort-buffer-len-max: 50\ngops: true\n\
             gops-port: \"9893\"\n",
            a.addr
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let listen = ("RELAY_LISTEN_ADDRESS", "127.0.0.1:0");
    let r = Relay::start(&["--config", file], &[listen]).await;
    assert_eq!(relay_name(&r.addr).await, "from-file");
    assert!(
        r.stderr()
            .iter()
            .any(|l| l.contains("config keys without effect here: gops, gops-port")),
        "{:?}",
        r.stderr()
    );
    drop(r);
    let envs = [
        listen,
        ("RELAY_CONFIG", file),
        ("RELAY_RELAY_NAME", "from-env"),
    ];
    let r = Relay::start(&[], &envs).await;
    assert_eq!(relay_name(&r.addr).await, "from-env");
    drop(r);
    let r = Relay::start(&["--relay-name", "from-flag"], &envs).await;
    assert_eq!(relay_name(&r.addr).await, "from-flag");
    drop(r);

    for (yaml, needle) in [
        ("listen-adress: :4245\n", "unknown key \"listen-adress\""),
        ("sort-buffer-len-max: lots\n", "sort-buffer-len-max"),
        (
            "disable-client-tls: maybe\n",
            "\"maybe\" is not true or false",
        ),
        ("peer-service: [a, b]\n", "expected one value"),
        ("- not a mapping\n", "expected a mapping"),
    ] {
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, yaml).unwrap();
        let (st, err) = run_to_exit(&["--config", bad.to_str().unwrap()], &[]).await;
        assert_eq!(st.code(), Some(2), "{yaml}: {err:?}");
        assert_eq!(err.len(), 1, "{yaml}: one line: {err:?}");
        assert!(err[0].contains(needle), "{yaml}: {err:?}");
        assert!(
            err[0].contains("bad.yaml"),
            "{yaml}: names the file: {err:?}"
        );
    }
    let missing = dir.path().join("missing.yaml");
    let (st, err) = run_to_exit(&["--config", missing.to_str().unwrap()], &[]).await;
    assert_eq!(st.code(), Some(2));
    assert!(err[0].contains("cannot read config file"), "{err:?}");
    let (st, err) = run_to_exit(&[], &[("RELAY_SORT_BUFFER_LEN_MAX", "lots")]).await;
    assert_eq!(st.code(), Some(2));
    assert!(err[0].contains("--sort-buffer-len-max"), "{err:?}");

    let out = command(&["--help"], &[]).output().unwrap();
    // Whitespace as one space: clap wraps lines where the words fall.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for want in [
        "[env: RELAY_LISTEN_ADDRESS=]",
        "--cluster-name <NAME>",
        "[default: :4222]",
        "--metrics-listen-address <ADDR>",
        "--error-aggregation-window <DURATION>",
        "/etc/hubble-relay/config.yaml",
    ] {
        assert!(help.contains(want), "{want} in --help:\n{help}");
    }
    a.stop().await;
}

/// A peer whose ServerStatus answers (so the relay connects) and whose GetFlows always
/// fails with `message`.
async fn failing_peer(message: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    support::scripted_peer(
        std::sync::Arc::new(move || Err(tonic::Status::unavailable(message))),
        "",
    )
    .await
}

/// NODE_ERROR events of `rs`: (sorted node names, message).
fn node_errors(rs: &[GetFlowsResponse]) -> Vec<(Vec<String>, String)> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::NodeStatus(s)) if s.state_change == NodeState::NodeError as i32 => {
                let mut names = s.node_names.clone();
                names.sort();
                Some((names, s.message.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Two nodes failing with the same error are one NODE_ERROR event naming both: at the end
/// of a finite request, and once per window in a follow stream however often they fail
/// again (they reconnect and fail at once); with a zero window each failure is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_errors_are_coalesced_within_the_window() {
    let a = Agent::start("node-a", "127.0.0.1:0").await;
    a.obs.push_flow(flow("node-a", "e", 1));
    let (f1, t1) = failing_peer("agent is restarting").await;
    let (f2, t2) = failing_peer("agent is restarting").await;
    let args = |window: &str| -> Vec<String> {
        vec![
            "--listen-address=127.0.0.1:0".into(),
            "--health-listen-address=".into(),
            format!("--peer=node-a={}", a.addr),
            format!("--peer=fail-1={f1}"),
            format!("--peer=fail-2={f2}"),
            "--retry-timeout=100ms".into(),
            format!("--error-aggregation-window={window}"),
        ]
    };
    let start = async |window: &str| {
        let args = args(window);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = Relay::start(&args, &[]).await;
        let ch = client::connect(&r.addr, WAIT).await.unwrap();
        eventually("three peers connected", async || {
            let st = client::server_status(ch.clone(), WAIT).await.unwrap();
            st.num_connected_nodes.unwrap().value == 3
        })
        .await;
        r
    };
    let both = vec!["fail-1".to_string(), "fail-2".to_string()];
    let message = "GetFlows: agent is restarting".to_string();

    let r = start("1m").await;
    let req = GetFlowsRequest {
        number: 10,
        ..Default::default()
    };
    // Not held for the window: sent as the stream ends (collect's bound is well below 1m).
    let got = collect(&r.addr, req.clone()).await;
    assert_eq!(flows(&got).len(), 1);
    assert_eq!(node_errors(&got), [(both.clone(), message.clone())]);

    drop(r);
    // Follow: the failing nodes rejoin and fail again and again; one event per window.
    let r = start("1s").await;
    let ch = client::connect(&r.addr, WAIT).await.unwrap();
    let mut s = client::get_flows(
        ch,
        GetFlowsRequest {
            follow: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    while t0.elapsed() < Duration::from_millis(3_500) {
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), s.next()).await {
            got.push(r.expect("stream goes on").unwrap());
        }
    }
    let errors = node_errors(&got);
    assert!(
        (1..=4).contains(&errors.len()),
        "one event per window of 1s in 3.5s: {errors:?}"
    );
    assert!(
        errors.iter().all(|e| *e == (both.clone(), message.clone())),
        "{errors:?}"
    );
    drop(r);

    let r = start("0").await;
    let got = collect(&r.addr, req).await;
    let mut errors = node_errors(&got);
    errors.sort();
    assert_eq!(
        errors,
        [
            (vec!["fail-1".to_string()], message.clone()),
            (vec!["fail-2".to_string()], message.clone())
        ]
    );
    t1.abort();
    t2.abort();
    a.stop().await;
}
