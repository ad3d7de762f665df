//! The relay in process over real TCP on 127.0.0.1 in front of real agent servers (the
//! agent's LocalObserver + gRPC server, flows pushed by the test): merge order, number/first,
//! follow with a node going away and coming back, a peer that hangs or speaks garbage,
//! ServerStatus / GetNodes / GetNamespaces, discovery through a Peer Notify stream, and the
//! server limits (keepalive, connection cap) against clients that die or crowd in.
//! No privileges needed; every port is chosen by the kernel (port 0).

use std::sync::Arc;
use std::time::Duration;

use agent::observer::LocalObserver;
use hubble::client;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse};
use hubble_api::relay::NodeState;
use pbjson_types::Timestamp;
use relay::observer::{MergeOptions, RelayObserver};
use relay::peers::{PeerOptions, Peers};

#[path = "../../agent/tests/support/raw_peer.rs"]
mod raw_peer;
mod support;
use hubble::listen::ServerLimits;
use support::{Agent, T0, flow, flows, statuses};

struct Relay {
    obs: Arc<RelayObserver>,
    addr: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn relay_with(peers: Arc<Peers>, drain: Duration) -> Relay {
    relay_tls(peers, drain, None).await
}

async fn relay_tls(
    peers: Arc<Peers>,
    drain: Duration,
    tls: Option<hubble::tls::ServerTls>,
) -> Relay {
    relay_full(peers, drain, tls, ServerLimits::default()).await
}

async fn relay_full(
    peers: Arc<Peers>,
    drain: Duration,
    tls: Option<hubble::tls::ServerTls>,
    limits: ServerLimits,
) -> Relay {
    let obs = Arc::new(RelayObserver::new(
        peers,
        MergeOptions {
            sort_buffer_len_max: 100,
            sort_buffer_drain_timeout: drain,
            stream_idle_timeout: Duration::from_secs(1),
            relay_name: "test-relay".into(),
            error_aggregation_window: Duration::from_millis(100),
        },
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let o = obs.clone();
    let task = tokio::spawn(async move {
        relay::server::serve(o, l, tls, limits, std::future::pending())
            .await
            .unwrap();
    });
    Relay {
        obs,
        addr,
        _task: task,
    }
}

fn peer_options() -> PeerOptions {
    PeerOptions {
        dial_timeout: Duration::from_millis(500),
        retry_timeout: Duration::from_millis(200),
        tls: None,
        cluster_name: "default".into(),
    }
}

async fn relay(agents: &[(&str, &str)], drain: Duration) -> Relay {
    let peers = Peers::new(peer_options());
    for (name, addr) in agents {
        peers.upsert(name, addr, None);
    }
    relay_with(peers, drain).await
}

/// Waits until `n` peers are connected (bounded).
async fn connected(r: &Relay, n: usize) {
    for _ in 0..100 {
        let up = r
            .obs
            .peers()
            .list()
            .iter()
            .filter(|p| p.channel.is_some())
            .count();
        if up == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} peers never connected");
}

async fn collect(server: &str, req: GetFlowsRequest) -> Vec<GetFlowsResponse> {
    let ch = client::connect(server, Duration::from_secs(5))
        .await
        .unwrap();
    let mut s = client::get_flows(ch, req).await.unwrap();
    let mut out = Vec::new();
    let read = async {
        while let Some(r) = s.next().await {
            out.push(r.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("stream ends");
    out
}

fn is_time_ordered(rs: &[GetFlowsResponse]) -> bool {
    let ts: Vec<_> = rs
        .iter()
        .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
        .map(|r| {
            let t = r.time.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    ts.windows(2).all(|w| w[0] <= w[1])
}

/// Three agents whose flows interleave in time: a at 0,3,6.., b at 1,4,7.., c at 2,5,8.. ms.
async fn three_agents(per_node: i64) -> Vec<Agent> {
    let mut v = Vec::new();
    for (i, name) in ["node-a", "node-b", "node-c"].iter().enumerate() {
        let a = Agent::start(name, "127.0.0.1:0").await;
        for k in 0..per_node {
            a.obs
                .push_flow(flow(name, &format!("ns-{i}"), k * 3 + i as i64));
        }
        v.push(a);
    }
    v
}

fn peers_of(agents: &[Agent]) -> Vec<(&str, &str)> {
    agents
        .iter()
        .map(|a| (a.obs.node_name(), a.addr.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_all_nodes_in_time_order_with_node_names() {
    let agents = three_agents(50).await;
    let r = relay(&peers_of(&agents), Duration::from_millis(100)).await;
    connected(&r, 3).await;
    let all = collect(
        &r.addr,
        GetFlowsRequest {
            number: u64::MAX,
            ..Default::default()
        },
    )
    .await;
    let f = flows(&all);
    assert_eq!(f.len(), 150);
    assert!(is_time_ordered(&all));
    // Round robin a, b, c: exact interleaving.
    for (k, (node, pod)) in f.iter().enumerate() {
        let name = ["node-a", "node-b", "node-c"][k % 3];
        assert_eq!(node, name);
        assert_eq!(pod, &format!("{name}-{k}"));
    }
    assert_eq!(
        statuses(&all),
        [(
            NodeState::NodeConnected,
            vec!["node-a".into(), "node-b".into(), "node-c".into()]
        )]
    );
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_and_first_count_per_node() {
    let agents = three_agents(20).await;
    let r = relay(&peers_of(&agents), Duration::from_millis(100)).await;
    connected(&r, 3).await;
    let last = collect(
        &r.addr,
        GetFlowsRequest {
            number: 4,
            ..Default::default()
        },
    )
    .await;
    // N per node (Hubble Relay's `--last`), merged in time order.
    let pods: Vec<_> = flows(&last).into_iter().map(|(_, p)| p).collect();
    let want: Vec<_> = (48..60)
        .map(|i| format!("node-{}-{i}", ["a", "b", "c"][i % 3]))
        .collect();
    assert_eq!(pods, want);
    let first = collect(
        &r.addr,
        GetFlowsRequest {
            number: 4,
            first: true,
            ..Default::default()
        },
    )
    .await;
    let pods: Vec<_> = flows(&first).into_iter().map(|(_, p)| p).collect();
    let want: Vec<_> = (0..12)
        .map(|i| format!("node-{}-{i}", ["a", "b", "c"][i % 3]))
        .collect();
    assert_eq!(pods, want);
    // since/until and filters are forwarded: node-b's flows in [10ms, 20ms].
    let window = collect(
        &r.addr,
        GetFlowsRequest {
            since: Some(Timestamp {
                seconds: T0,
                nanos: 10_000_000,
            }),
            until: Some(Timestamp {
                seconds: T0,
                nanos: 20_000_000,
            }),
            whitelist: vec![hubble_api::flow::FlowFilter {
                source_pod: vec!["ns-1/".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    let pods: Vec<_> = flows(&window).into_iter().map(|(_, p)| p).collect();
    assert_eq!(pods, ["node-b-10", "node-b-13", "node-b-16", "node-b-19"]);
    // first with follow is refused once, by the relay.
    let ch = client::connect(&r.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let err = client::get_flows(
        ch,
        GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("InvalidArgument"), "{err}");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_survives_a_node_going_away_and_takes_it_back() {
    let agents = three_agents(0).await;
    let r = relay(&peers_of(&agents), Duration::from_millis(50)).await;
    connected(&r, 3).await;
    let ch = client::connect(&r.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let mut s = client::get_flows(
        ch,
        GetFlowsRequest {
            follow: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut next = async |got: &mut Vec<GetFlowsResponse>| {
        let r = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("a response in time")
            .expect("stream goes on")
            .unwrap();
        got.push(r.clone());
        r
    };
    let connected_ev = next(&mut got).await;
    assert!(matches!(
        connected_ev.response_types,
        Some(ResponseTypes::NodeStatus(_))
    ));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    let live = |node: &str, tag: &str| {
        let t = now();
        let mut f = flow(node, "live", 0);
        f.time = Some(Timestamp {
            seconds: t.as_secs() as i64,
            nanos: t.subsec_nanos() as i32,
        });
        f.source.as_mut().unwrap().pod_name = format!("{node}-{tag}");
        f
    };
    let [a, b, c]: [Agent; 3] = agents.try_into().ok().unwrap();
    for tag in 0..3 {
        for ag in [&a, &b, &c] {
            ag.obs.push_flow(live(ag.obs.node_name(), &tag.to_string()));
        }
    }
    while flows(&got).len() < 9 {
        next(&mut got).await;
    }
    // node-b goes away: the stream reports its error (as Hubble Relay, NODE_ERROR with the
    // message) and goes on with a and c.
    let b_addr = b.addr.clone();
    b.stop().await;
    loop {
        let r = next(&mut got).await;
        if let Some(ResponseTypes::NodeStatus(st)) = &r.response_types
            && st.state_change == NodeState::NodeError as i32
        {
            assert_eq!(st.node_names, ["node-b"]);
            assert!(!st.message.is_empty());
            break;
        }
    }
    a.obs.push_flow(live("node-a", "after"));
    c.obs.push_flow(live("node-c", "after"));
    let before = flows(&got).len();
    while flows(&got).len() < before + 2 {
        next(&mut got).await;
    }
    // node-b comes back on the same address and rejoins the running stream.
    let b2 = Agent::start("node-b", &b_addr).await;
    loop {
        let r = next(&mut got).await;
        if let Some(ResponseTypes::NodeStatus(st)) = &r.response_types
            && st.state_change == NodeState::NodeConnected as i32
        {
            assert_eq!(st.node_names, ["node-b"]);
            break;
        }
    }
    // The rejoined stream starts after the newest flow seen from node-b.
    tokio::time::sleep(Duration::from_millis(100)).await;
    b2.obs.push_flow(live("node-b", "back"));
    loop {
        next(&mut got).await;
        if flows(&got).iter().any(|(_, p)| p == "node-b-back") {
            break;
        }
    }
    let f = flows(&got);
    for want in ["node-a-after", "node-c-after", "node-b-back"] {
        assert!(f.iter().any(|(_, p)| p == want), "{want} in {f:?}");
    }
    assert!(is_time_ordered(&got), "{f:?}");
    a.stop().await;
    b2.stop().await;
    c.stop().await;
}

/// A TCP server that accepts and then never answers, or answers with bytes that are not HTTP/2.
async fn bad_peer(garbage: bool) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            if garbage {
                let _ = s.write_all(b"\x00\xffnot http/2 at all\r\n\r\n").await;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
            } else {
                held.push(s);
            }
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_garbage_peer_is_unavailable_and_never_blocks() {
    let agents = three_agents(5).await;
    let (hang, h1) = bad_peer(false).await;
    let (junk, h2) = bad_peer(true).await;
    let mut peers = peers_of(&agents);
    peers.push(("node-hang", &hang));
    peers.push(("node-junk", &junk));
    let r = relay(&peers, Duration::from_millis(50)).await;
    connected(&r, 3).await;
    let started = std::time::Instant::now();
    let all = collect(
        &r.addr,
        GetFlowsRequest {
            number: u64::MAX,
            ..Default::default()
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(flows(&all).len(), 15);
    assert!(statuses(&all).contains(&(
        NodeState::NodeUnavailable,
        vec!["node-hang".into(), "node-junk".into()]
    )));
    let ch = client::connect(&r.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let st = client::server_status(ch.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(st.num_connected_nodes.unwrap().value, 3);
    assert_eq!(st.num_unavailable_nodes.unwrap().value, 2);
    assert_eq!(st.unavailable_nodes, ["node-hang", "node-junk"]);
    assert_eq!(st.seen_flows, 15);
    assert_eq!(st.num_flows, 15);
    assert_eq!(st.max_flows, 3 * 4095);
    let nodes = client::observer(ch.clone())
        .get_nodes(hubble_api::observer::GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let states: Vec<_> = nodes
        .iter()
        .map(|n| (n.name.as_str(), NodeState::try_from(n.state).unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("node-a", NodeState::NodeConnected),
            ("node-b", NodeState::NodeConnected),
            ("node-c", NodeState::NodeConnected),
            ("node-hang", NodeState::NodeUnavailable),
            ("node-junk", NodeState::NodeUnavailable),
        ]
    );
    let a = &nodes[0];
    assert_eq!((a.num_flows, a.max_flows, a.seen_flows), (5, 4095, 5));
    assert_eq!(a.address, agents[0].addr);
    assert!(!a.version.is_empty() && a.uptime_ns > 0);
    let ns = client::observer(ch)
        .get_namespaces(hubble_api::observer::GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    let ns: Vec<_> = ns.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(ns, ["ns-0", "ns-1", "ns-2"]);
    h1.abort();
    h2.abort();
    for a in agents {
        a.stop().await;
    }
}

/// A Peer service announcing three agents, then deleting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_peers_from_a_notify_stream() {
    use hubble_api::peer::peer_server::{Peer, PeerServer};
    use hubble_api::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
    use tokio_stream::StreamExt;

    struct Announcer {
        rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<ChangeNotification>>>,
    }
    #[tonic::async_trait]
    impl Peer for Announcer {
        type NotifyStream = std::pin::Pin<
            Box<dyn tokio_stream::Stream<Item = Result<ChangeNotification, tonic::Status>> + Send>,
        >;
        async fn notify(
            &self,
            _r: tonic::Request<NotifyRequest>,
        ) -> Result<tonic::Response<Self::NotifyStream>, tonic::Status> {
            let rx = self.rx.lock().unwrap().take().unwrap();
            let s = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
            Ok(tonic::Response::new(Box::pin(s)))
        }
    }
    let agents = three_agents(2).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let seed = l.local_addr().unwrap().to_string();
    let srv = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeerServer::new(Announcer {
                rx: std::sync::Mutex::new(Some(rx)),
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let peers = Peers::new(peer_options());
    let disc = tokio::spawn(relay::peers::discover(peers.clone(), seed));
    let r = relay_with(peers, Duration::from_millis(50)).await;
    for a in &agents {
        tx.send(ChangeNotification {
            name: a.obs.node_name().into(),
            address: a.addr.clone(),
            r#type: ChangeNotificationType::PeerAdded as i32,
            tls: None,
        })
        .await
        .unwrap();
    }
    connected(&r, 3).await;
    assert_eq!(
        flows(
            &collect(
                &r.addr,
                GetFlowsRequest {
                    number: 100,
                    ..Default::default()
                }
            )
            .await
        )
        .len(),
        6
    );
    tx.send(ChangeNotification {
        name: "node-b".into(),
        r#type: ChangeNotificationType::PeerDeleted as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    connected(&r, 2).await;
    let names: Vec<_> = r.obs.peers().list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["node-a", "node-c"]);
    disc.abort();
    srv.abort();
    for a in agents {
        a.stop().await;
    }
}

/// Agents serving mutual TLS (certificates of `hubble-agent certs generate`), the relay
/// dialling them with its client certificate and node server names, and serving clients
/// over mutual TLS: a client with the client certificate gets every node's flows; one
/// without a certificate, or speaking plaintext, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_from_client_to_relay_to_agents() {
    use hubble::tls::{ClientTls, ServerTls};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    agent::certs::generate(d, "default", false).unwrap();
    let agent_tls = ServerTls::load(
        &d.join("server.crt"),
        &d.join("server.key"),
        &[d.join("ca.crt")],
    )
    .unwrap();
    let mut agents = Vec::new();
    for (i, name) in ["node-a", "node-b", "node-c"].iter().enumerate() {
        let obs = Arc::new(LocalObserver::new(4095, *name).unwrap());
        obs.push_flow(flow(name, "tls", i as i64));
        agents.push(Agent::start_tls(obs, "127.0.0.1:0", Some(agent_tls.clone())).await);
    }
    let client_tls = ClientTls::new(
        &[d.join("ca.crt")],
        Some((&d.join("client.crt"), &d.join("client.key"))),
        None,
        false,
    )
    .unwrap();
    let peers = Peers::new(PeerOptions {
        tls: Some(client_tls.clone()),
        ..peer_options()
    });
    for a in &agents {
        peers.upsert(a.obs.node_name(), &a.addr, None);
    }
    let relay_cert = ServerTls::load(
        &d.join("relay.crt"),
        &d.join("relay.key"),
        &[d.join("ca.crt")],
    )
    .unwrap();
    let r = relay_tls(peers, Duration::from_millis(50), Some(relay_cert)).await;
    connected(&r, 3).await;
    let nodes = r.obs.nodes().await;
    assert!(nodes.iter().all(|n| n.tls.as_ref().unwrap().enabled));
    assert_eq!(
        nodes[0].tls.as_ref().unwrap().server_name,
        "node-a.default.hubble-grpc.cilium.io"
    );
    let ch = client::connect_tls(&r.addr, Duration::from_secs(5), Some(&client_tls))
        .await
        .unwrap();
    let mut s = client::get_flows(
        ch,
        GetFlowsRequest {
            number: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Some(r) = s.next().await {
        got.push(r.unwrap());
    }
    let pods: Vec<_> = flows(&got).into_iter().map(|(_, p)| p).collect();
    assert_eq!(pods, ["node-a-0", "node-b-1", "node-c-2"]);
    // No client certificate: the handshake is refused.
    let no_cert = ClientTls::new(&[d.join("ca.crt")], None, None, false).unwrap();
    let refused = async {
        let ch = client::connect_tls(&r.addr, Duration::from_secs(2), Some(&no_cert)).await?;
        client::server_status(ch, Duration::from_secs(2)).await
    };
    assert!(refused.await.is_err());
    // Plaintext: refused too.
    let plain = async {
        let ch = client::connect(&r.addr, Duration::from_secs(2)).await?;
        client::server_status(ch, Duration::from_secs(2)).await
    };
    assert!(plain.await.is_err());
    for a in agents {
        a.stop().await;
    }
}

/// A lab agent's Peer service announces the other nodes of its lab: a relay seeded with that
/// one agent finds all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_agent_announces_the_other_lab_nodes() {
    let mut agents = three_agents(1).await;
    let c = agents.pop().unwrap();
    let b = agents.pop().unwrap();
    let a = agents.pop().unwrap();
    let others = vec![
        ("node-b".to_string(), b.addr.clone()),
        ("node-c".to_string(), c.addr.clone()),
    ];
    // node-a again, now announcing b and c.
    a.stop().await;
    let a = Agent::start_full(
        Arc::new(LocalObserver::new(4095, "node-a").unwrap()),
        "127.0.0.1:0",
        None,
        others,
    )
    .await;
    let peers = Peers::new(peer_options());
    let disc = tokio::spawn(relay::peers::discover(peers.clone(), a.addr.clone()));
    let r = relay_with(peers, Duration::from_millis(50)).await;
    connected(&r, 3).await;
    let names: Vec<_> = r.obs.peers().list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["node-a", "node-b", "node-c"]);
    disc.abort();
    for x in [a, b, c] {
        x.stop().await;
    }
}

/// The relay compiles the same filters: requests past the limits are refused (never
/// forwarded, never crashing the relay), and it goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_limits_are_refused_and_the_relay_goes_on() {
    use hubble_api::flow::FlowFilter;
    use hubble_api::flow::flow_filter::Experimental;
    let agents = three_agents(2).await;
    let r = relay(&peers_of(&agents), Duration::from_millis(50)).await;
    connected(&r, 3).await;
    let refused = [
        (
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    experimental: Some(Experimental {
                        cel_expression: vec!["(".repeat(100_000)],
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "expression recursion limit exceeded: 250",
        ),
        (
            GetFlowsRequest {
                blacklist: vec![FlowFilter::default(); 300],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "at most 256",
        ),
        (
            GetFlowsRequest {
                field_mask: Some(pbjson_types::FieldMask {
                    paths: vec!["time".into(); 300],
                }),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "too many field mask paths: 300, at most 256",
        ),
        (
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    source_pod: vec!["x".repeat(1 << 20); 5],
                    ..Default::default()
                }],
                ..Default::default()
            },
            tonic::Code::ResourceExhausted,
            "4194304",
        ),
    ];
    let ch = client::connect(&r.addr, Duration::from_secs(5))
        .await
        .unwrap();
    for (req, code, needle) in refused {
        let err = client::observer(ch.clone())
            .get_flows(req)
            .await
            .map(|_| ())
            .expect_err(needle);
        assert_eq!(err.code(), code, "{needle}: {}", err.message());
        assert!(err.message().contains(needle), "{}", err.message());
    }
    let all = collect(
        &r.addr,
        GetFlowsRequest {
            number: u64::MAX,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(flows(&all).len(), 6);
    for a in agents {
        a.stop().await;
    }
}

/// A peer that answers GetFlows with `n` flows, one every `gap` (a node under load, or far
/// away, or sending older flows), flows at k ms: among the first of the fast nodes' flows.
async fn slow_peer(n: i64, gap: Duration) -> (String, tokio::task::JoinHandle<()>) {
    let flows = Arc::new(move || {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for k in 0..n {
                tokio::time::sleep(gap).await;
                let f = flow("node-slow", "ns-slow", k);
                let r = GetFlowsResponse {
                    time: f.time,
                    node_name: "node-slow".into(),
                    response_types: Some(ResponseTypes::Flow(f)),
                };
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as support::FlowStream)
    });
    support::scripted_peer(flows, "slow").await
}

/// A non-follow request is not held back by a slow node: the others' flows go out within
/// the sort window (bounded in length and in time), the slow node's arrive late, in their
/// order, and the request ends with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_does_not_hold_back_a_finite_request() {
    let agents = three_agents(50).await;
    // 12 flows, 400 ms apart (within the relay's 1 s idle timeout): about 5 s in all.
    let (slow, task) = slow_peer(12, Duration::from_millis(400)).await;
    let mut peers = peers_of(&agents);
    peers.push(("node-slow", &slow));
    let r = relay(&peers, Duration::from_millis(200)).await;
    connected(&r, 4).await;
    let ch = client::connect(&r.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let mut s = client::get_flows(
        ch,
        GetFlowsRequest {
            number: u64::MAX,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    // The 150 flows of the fast nodes, before the slow node is half done.
    while flows(&got).iter().filter(|(n, _)| n != "node-slow").count() < 150 {
        let r = tokio::time::timeout(Duration::from_millis(2_500), s.next())
            .await
            .expect("the fast nodes' flows are not held back by the slow one")
            .expect("stream goes on")
            .unwrap();
        got.push(r);
    }
    assert!(
        flows(&got).iter().filter(|(n, _)| n == "node-slow").count() < 12,
        "the slow node was not done yet"
    );
    let fast: Vec<_> = got
        .iter()
        .filter(|r| r.node_name != "node-slow")
        .cloned()
        .collect();
    assert!(is_time_ordered(&fast));
    while let Some(r) = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("the request ends")
    {
        got.push(r.unwrap());
    }
    let slow_flows: Vec<_> = flows(&got)
        .into_iter()
        .filter(|(n, _)| n == "node-slow")
        .map(|(_, p)| p)
        .collect();
    let want: Vec<_> = (0..12).map(|k| format!("node-slow-{k}")).collect();
    assert_eq!(slow_flows, want, "all of the slow node's flows, in order");
    assert!(started.elapsed() >= Duration::from_secs(4));
    task.abort();
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_surplus_clients_do_not_hold_up_the_others() {
    const T: Duration = Duration::from_secs(5);
    let a = Agent::start("node-a", "127.0.0.1:0").await;
    for k in 0..20 {
        a.obs.push_flow(flow("node-a", "ns", k));
    }
    let peers = Peers::new(peer_options());
    peers.upsert("node-a", &a.addr, None);
    let limits = ServerLimits {
        grpc_keepalive_interval: Duration::from_millis(200),
        grpc_keepalive_timeout: Duration::from_millis(200),
        grpc_max_connections: 2,
        ..Default::default()
    };
    let r = relay_full(peers, Duration::from_millis(100), None, limits).await;
    connected(&r, 1).await;
    // A client that went silent after starting HTTP/2 is let go when a PING goes unanswered,
    // and its slot with it.
    let mut dead = raw_peer::silent_h2(&r.addr).await;
    assert!(
        raw_peer::closed_within(&mut dead, T).await,
        "a client that answers no PING is let go"
    );
    // Two connections take both slots: a follower and a client.
    let ch = client::connect(&r.addr, T).await.unwrap();
    let mut follower = client::get_flows(
        ch,
        GetFlowsRequest {
            follow: true,
            number: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The pod of the follower's next flow (node status events skipped).
    async fn next_pod(s: &mut client::FlowStream) -> String {
        loop {
            let r = tokio::time::timeout(T, s.next()).await;
            let r = r.expect("follower served").unwrap().unwrap();
            if let Some((_, pod)) = flows(&[r]).pop() {
                return pod;
            }
        }
    }
    assert_eq!(next_pod(&mut follower).await, "node-a-19");
    let other = client::connect(&r.addr, T).await.unwrap();
    let st = tokio::time::timeout(T, client::server_status(other.clone(), T)).await;
    assert_eq!(st.expect("answered").unwrap().num_flows, 20);
    // A third waits to be accepted, and is served once a connection closes.
    let addr = r.addr.clone();
    let third = tokio::spawn(async move {
        let ch = client::connect(&addr, 6 * T).await?;
        client::server_status(ch, 6 * T).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "the third connection waits: {third:?}"
    );
    drop(other);
    let st = tokio::time::timeout(T, third).await.expect("third served");
    assert_eq!(st.unwrap().unwrap().num_flows, 20);
    // The follower, idle all along but answering PINGs, is still served.
    a.obs.push_flow(flow("node-a", "ns", 20));
    assert_eq!(next_pod(&mut follower).await, "node-a-20");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_what_the_relay_serves() {
    // `hubble reflect`'s walk: the Observer's files, not peer.Peer (agents serve it, the
    // relay does not).
    let r = relay(&[], Duration::from_millis(100)).await;
    let ch = client::connect(&r.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let mut files = Vec::new();
    hubble::reflection::walk(ch, &mut files).await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name()).collect();
    assert_eq!(names[0], "observer/observer.proto");
    assert!(names.contains(&"flow/flow.proto"), "{names:?}");
    assert!(!names.contains(&"peer/peer.proto"), "{names:?}");
}
