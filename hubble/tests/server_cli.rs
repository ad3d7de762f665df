//! The `hubble` binary against a fake Hubble server (tonic, 127.0.0.1): the GetFlowsRequest
//! each flag combination sends, what gets printed, `hubble status`, and connection errors.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use hubble_api::flow::Verdict;
use hubble_api::observer::observer_server::{Observer, ObserverServer};
use hubble_api::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, ServerStatusRequest, ServerStatusResponse,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const BIN: &str = env!("CARGO_BIN_EXE_hubble");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");

type Stream<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

/// Serves the demo flows; remembers every GetFlows request.
#[derive(Clone)]
struct Fake {
    flows: Arc<Vec<GetFlowsResponse>>,
    requests: Arc<Mutex<Vec<GetFlowsRequest>>>,
}

#[tonic::async_trait]
impl Observer for Fake {
    type GetFlowsStream = Stream<GetFlowsResponse>;
    type GetAgentEventsStream = Stream<GetAgentEventsResponse>;
    type GetDebugEventsStream = Stream<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = req.into_inner();
        self.requests.lock().unwrap().push(req.clone());
        let all = self.flows.as_slice();
        let n = (req.number as usize).min(all.len());
        let picked = match (req.number, req.first) {
            (0, _) => all,
            (_, true) => &all[..n],
            (_, false) => &all[all.len() - n..],
        };
        let items: Vec<_> = picked.iter().cloned().map(Ok).collect();
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Ok(Response::new(tokio_stream::iter(Vec::new())))
    }

    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Ok(Response::new(tokio_stream::iter(Vec::new())))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        use hubble_api::observer::{Node, Tls};
        use hubble_api::relay::NodeState;
        // As a newer relay would answer: with its version header.
        let mut r = Response::new(GetNodesResponse {
            nodes: vec![
                Node {
                    name: "lab-node-2".into(),
                    state: NodeState::NodeUnavailable as i32,
                    address: "127.0.0.1:4302".into(),
                    ..Default::default()
                },
                Node {
                    name: "lab-node-1".into(),
                    version: "1.20.0".into(),
                    address: "127.0.0.1:4301".into(),
                    state: NodeState::NodeConnected as i32,
                    tls: Some(Tls {
                        enabled: false,
                        server_name: String::new(),
                    }),
                    uptime_ns: 90_000_000_000,
                    num_flows: 1024,
                    max_flows: 4095,
                    seen_flows: 9000,
                },
            ],
        });
        r.metadata_mut()
            .insert("hubble-relay-version", "1.20.0".parse().unwrap());
        Ok(r)
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        use hubble_api::observer::Namespace;
        let ns = |cluster: &str, namespace: &str| Namespace {
            cluster: cluster.into(),
            namespace: namespace.into(),
        };
        Ok(Response::new(GetNamespacesResponse {
            namespaces: vec![ns("default", "kube-system"), ns("default", "shop")],
        }))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: 4095,
            max_flows: 4095,
            seen_flows: 123_456,
            uptime_ns: 3_600_000_000_000,
            flows_rate: 12.34,
            version: "1.19.4".into(),
            ..Default::default()
        }))
    }
}

/// Starts the fake on its own thread; returns its address and request log.
fn start_fake() -> (SocketAddr, Arc<Mutex<Vec<GetFlowsRequest>>>) {
    let text = std::fs::read(FIXTURE).unwrap();
    let flows: Vec<GetFlowsResponse> = text
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, l)| hubble::source::parse_line(i as u64 + 1, l).unwrap())
        .collect();
    assert!(flows.len() > 30);
    let fake = Fake {
        flows: Arc::new(flows),
        requests: Arc::default(),
    };
    let requests = fake.requests.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (health, health_svc) = tonic_health::server::health_reporter();
            health
                .set_service_status(
                    "hubble.server.Observer",
                    tonic_health::ServingStatus::Serving,
                )
                .await;
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(health_svc)
                .add_service(ObserverServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(l))
                .await
                .unwrap();
        });
    });
    (addr, requests)
}

fn hubble(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HUBBLE_SERVER")
        .env("HUBBLE_CONFIG", "/nonexistent/hubble-test/config.yaml")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn last_request(log: &Mutex<Vec<GetFlowsRequest>>) -> GetFlowsRequest {
    log.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a GetFlows request")
}

#[test]
fn observe_sends_hubble_requests_and_prints_flows() {
    let (addr, log) = start_fake();
    let server = addr.to_string();

    // Plain observe: the last 20 flows, with the default field mask of compact output.
    let o = hubble(&["observe", "--server", &server]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).lines().count(), 20);
    let req = last_request(&log);
    assert_eq!((req.number, req.first, req.follow), (20, false, false));
    let mask = req.field_mask.expect("default field mask").paths;
    assert!(mask.contains(&"source.pod_name".to_string()) && mask.len() == 20);

    // JSON output: no mask; filters go in the whitelist / blacklist.
    let o = hubble(&[
        "observe",
        "--server",
        &server,
        "--last",
        "3",
        "-o",
        "json",
        "--verdict",
        "DROPPED",
        "--not",
        "--namespace",
        "kube-system",
    ]);
    assert!(o.status.success(), "{o:?}");
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.get("flow").is_some()));
    let req = last_request(&log);
    assert_eq!(req.number, 3);
    assert!(req.field_mask.is_none());
    assert_eq!(req.whitelist.len(), 1);
    assert_eq!(req.whitelist[0].verdict, [Verdict::Dropped as i32]);
    assert_eq!(req.blacklist.len(), 2, "source and destination side");

    // --first, --all, --follow, --since.
    hubble(&["observe", "--server", &server, "--first", "5"]);
    let req = last_request(&log);
    assert_eq!((req.number, req.first), (5, true));
    hubble(&["observe", "--server", &server, "--all"]);
    assert_eq!(last_request(&log).number, u64::MAX);
    let o = hubble(&["observe", "--server", &server, "-f", "-o", "jsonpb"]);
    assert!(o.status.success());
    let req = last_request(&log);
    assert_eq!((req.number, req.follow), (0, true));
    hubble(&["observe", "--server", &server, "--since", "1h", "--all"]);
    let req = last_request(&log);
    assert_eq!(req.number, 0, "--all is ignored with --since");
    assert!(req.since.is_some() && req.until.is_none());
    hubble(&["observe", "--server", &server, "-f", "--until", "1h"]);
    assert!(
        last_request(&log).until.is_none(),
        "--until is dropped with --follow"
    );

    // HUBBLE_SERVER picks the server.
    let o = Command::new(BIN)
        .args(["observe", "--last", "2"])
        .env("HUBBLE_SERVER", &server)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).lines().count(), 2);
}

#[test]
fn status_prints_health_and_counts() {
    let (addr, _) = start_fake();
    let server = addr.to_string();
    let o = hubble(&["status", "--server", &server]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&o),
        format!(
            "Healthcheck (via {server}): Ok\nCurrent/Max Flows: 4,095/4,095 (100.00%)\nFlows/s: 12.34\n"
        )
    );
    let o = hubble(&["status", "--server", &server, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["max_flows"], "4095");
}

#[test]
fn unreachable_server_is_one_line_and_exit_2() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("127.0.0.1:{port}");
    for args in [
        vec!["observe", "--server", server.as_str()],
        vec!["status", "--server", server.as_str()],
        vec!["observe", "--server", "unix:///nonexistent/hubble.sock"],
    ] {
        let o = hubble(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("Error: failed to connect to '"), "{err}");
    }
    let o = hubble(&["observe", "--server", &format!("tls://{server}")]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.starts_with("Error: failed to connect to 'tls://"),
        "{err}"
    );
}

#[test]
fn list_nodes_and_namespaces() {
    let (addr, _) = start_fake();
    let server = addr.to_string();
    let o = hubble(&["list", "nodes", "--server", &server]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&o),
        "\
NAME         STATUS        AGE     FLOWS/S   CURRENT/MAX-FLOWS
lab-node-1   Connected     1m30s   100.00    1024/4095 ( 25.01%)
lab-node-2   Unavailable   N/A     N/A       N/A
"
    );
    // The relay is newer than the API this CLI speaks: Hubble's warning, on stderr.
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert!(
        err.starts_with("Warning: Hubble CLI version is lower than Hubble Relay"),
        "{err}"
    );
    let o = hubble(&["list", "node", "--server", &server, "-o", "wide"]);
    assert!(
        stdout(&o)
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("1.20.0    127.0.0.1:4301   Disabled"),
        "{o:?}"
    );
    let o = hubble(&["list", "nodes", "--server", &server, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "lab-node-1");
    assert_eq!(v[0]["seen_flows"], 9000);
    assert_eq!(v[1]["state"], 2);

    let o = hubble(&["list", "namespaces", "--server", &server]);
    assert_eq!(stdout(&o), "NAMESPACE\nkube-system\nshop\n");
    let o = hubble(&["list", "namespaces", "--server", &server, "-o", "wide"]);
    assert_eq!(
        stdout(&o),
        "NAMESPACE     CLUSTER\nkube-system   default\nshop          default\n"
    );
    let o = hubble(&["list", "namespaces", "--server", &server, "-o", "yaml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn json_output_is_the_encoders_bytes_for_every_response() {
    // Flows and lost events are transcoded from the protobuf bytes on the printer thread;
    // the lines must be what decoding and encoding each response gives.
    use hubble_api::json::ProtoJson;
    let text = std::fs::read(FIXTURE).unwrap();
    let mut want = Vec::new();
    for (i, l) in text.split(|b| *b == b'\n').enumerate() {
        if let Some(r) = hubble::source::parse_line(i as u64 + 1, l).unwrap() {
            want.extend_from_slice(&r.to_json_vec().unwrap());
            want.push(b'\n');
        }
    }
    assert!(String::from_utf8_lossy(&want).contains("\"lost_events\""));
    let (addr, _) = start_fake();
    let server = addr.to_string();
    for format in ["json", "jsonpb"] {
        let o = hubble(&["observe", "--server", &server, "--all", "-o", format]);
        assert!(o.status.success(), "{o:?}");
        assert_eq!(
            stdout(&o),
            String::from_utf8(want.clone()).unwrap(),
            "-o {format}"
        );
    }
}
