//! The agent's Hubble gRPC server in process, over a real unix socket and TCP on 127.0.0.1:
//! GetFlows (last, first, follow, filters, errors), ServerStatus, GetNodes, namespaces, peers,
//! health and the version header; the server limits (keepalive, stream and connection caps)
//! against clients that stall or flood. No privileges needed.

use std::sync::Arc;
use std::time::Duration;

use agent::observer::LocalObserver;
use hubble::client;
use hubble_api::flow::{Endpoint, Flow, FlowFilter, Verdict};
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse};
use pbjson_types::Timestamp;

#[path = "support/grpc_server.rs"]
mod grpc_server;
use grpc_server::Server;
#[path = "support/raw_peer.rs"]
mod raw_peer;
use hubble::listen::ServerLimits;

const T: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn flow(i: u64) -> Flow {
    Flow {
        time: Some(Timestamp {
            seconds: 1_700_000_000 + i as i64,
            nanos: 0,
        }),
        verdict: if i.is_multiple_of(2) {
            Verdict::Forwarded
        } else {
            Verdict::Dropped
        } as i32,
        node_name: "lab-node".into(),
        source: Some(Endpoint {
            namespace: "default".into(),
            pod_name: format!("pod-{i}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An observer of `cap` flows that was given `flows` flows.
fn observer(flows: u64, cap: u64) -> Arc<LocalObserver> {
    let obs = Arc::new(LocalObserver::new(cap, "lab-node").unwrap());
    for i in 0..flows {
        obs.push_flow(flow(i));
    }
    obs
}

async fn collect(server: &str, req: GetFlowsRequest) -> Vec<GetFlowsResponse> {
    let ch = client::connect(server, Duration::from_secs(5))
        .await
        .unwrap();
    let mut s = client::get_flows(ch, req).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        out.push(r.unwrap());
    }
    out
}

fn pod(r: &GetFlowsResponse) -> String {
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => f.source.as_ref().unwrap().pod_name.clone(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_flows_last_first_filters_over_unix_and_tcp() {
    let srv = Server::start(observer(30, 15)).await;
    for addr in [srv.unix.clone(), srv.tcp.clone()] {
        let last = collect(
            &addr,
            GetFlowsRequest {
                number: 3,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            last.iter().map(pod).collect::<Vec<_>>(),
            ["pod-27", "pod-28", "pod-29"]
        );
        assert!(
            last.iter()
                .all(|r| r.node_name == "lab-node" && r.time.is_some())
        );
        let first = collect(
            &addr,
            GetFlowsRequest {
                number: 2,
                first: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            first.iter().map(pod).collect::<Vec<_>>(),
            ["pod-15", "pod-16"]
        );
        let dropped = collect(
            &addr,
            GetFlowsRequest {
                number: 2,
                whitelist: vec![FlowFilter {
                    verdict: vec![Verdict::Dropped as i32],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            dropped.iter().map(pod).collect::<Vec<_>>(),
            ["pod-27", "pod-29"]
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_mask_keeps_listed_fields() {
    let srv = Server::start(observer(3, 7)).await;
    let got = collect(
        &srv.unix,
        GetFlowsRequest {
            number: 1,
            field_mask: Some(pbjson_types::FieldMask {
                paths: vec!["source.pod_name".into()],
            }),
            ..Default::default()
        },
    )
    .await;
    let Some(ResponseTypes::Flow(f)) = &got[0].response_types else {
        panic!("flow expected")
    };
    assert_eq!(f.source.as_ref().unwrap().pod_name, "pod-2");
    assert_eq!(f.verdict, 0, "verdict is masked out");
    assert!(f.time.is_none());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_invalid_argument() {
    let srv = Server::start(observer(3, 7)).await;
    let ch = client::connect(&srv.tcp, Duration::from_secs(5))
        .await
        .unwrap();
    let mut obs = client::observer(ch);
    let err = obs
        .get_flows(GetFlowsRequest {
            whitelist: vec![FlowFilter {
                source_ip: vec!["300.1.2.3".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .map(|_| ())
        .expect_err("invalid filter refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("source_ip"), "{}", err.message());
    let err = obs
        .get_flows(GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "first cannot be specified with follow");
    let err = obs
        .get_nodes(hubble_api::observer::GetNodesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(err.message(), "GetNodes not implemented");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_receives_new_flows_and_disconnect_frees_reader() {
    let srv = Server::start(observer(5, 7)).await;
    let ch = client::connect(&srv.unix, Duration::from_secs(5))
        .await
        .unwrap();
    let mut s = client::get_flows(
        ch,
        GetFlowsRequest {
            follow: true,
            number: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.server_version.as_deref(), Some(srv.obs.version()));
    assert_eq!(pod(&s.next().await.unwrap().unwrap()), "pod-4");
    for i in 5..8 {
        srv.obs.push_flow(flow(i));
    }
    for want in ["pod-5", "pod-6", "pod-7"] {
        let r = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("followed flow arrives")
            .unwrap()
            .unwrap();
        assert_eq!(pod(&r), want);
    }
    drop(s);
    // The writer keeps going with the client gone.
    for i in 8..1000 {
        srv.obs.push_flow(flow(i));
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_namespaces_and_peers() {
    let srv = Server::start(observer(10, 7)).await;
    let ch = client::connect(&srv.unix, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        client::health_check(ch.clone(), Duration::from_secs(5))
            .await
            .unwrap(),
        None
    );
    let st = client::server_status(ch.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((st.num_flows, st.max_flows, st.seen_flows), (7, 7, 10));
    assert!(st.uptime_ns > 0);
    assert!(st.num_connected_nodes.is_none());
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
    let ns = client::observer(ch.clone())
        .get_namespaces(hubble_api::observer::GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ns.namespaces.len(), 1);
    assert_eq!(ns.namespaces[0].namespace, "default");
    let mut peers = hubble_api::peer::peer_client::PeerClient::new(ch)
        .notify(hubble_api::peer::NotifyRequest {})
        .await
        .unwrap()
        .into_inner();
    let me = peers.message().await.unwrap().unwrap();
    assert_eq!(me.name, "lab-node");
    assert_eq!(
        me.r#type,
        hubble_api::peer::ChangeNotificationType::PeerAdded as i32
    );
    assert!(me.address.starts_with("127.0.0.1:"), "{}", me.address);
    drop(peers);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("unix://{}/none.sock", dir.path().display());
    let err = client::connect(&target, Duration::from_secs(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("failed to connect to '{target}'")),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let srv = Server::start(observer(1, 7)).await;
    let ch = client::connect(&srv.unix, Duration::from_secs(5))
        .await
        .unwrap();
    let ask = |req: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    };
    let reqs = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "observer.Observer".into(),
        )),
    ];
    let mut replies = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let first: ServerReflectionResponse = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("list services answer expected: {first:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["observer.Observer", "peer.Peer", "grpc.health.v1.Health"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let second = replies.message().await.unwrap().unwrap();
    assert!(
        matches!(
            second.message_response,
            Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
        ),
        "{second:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_never_blocks_the_writer_and_gets_lost_events() {
    let srv = Server::start(observer(0, 1023)).await;
    let ch = client::connect(&srv.unix, Duration::from_secs(5))
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
    srv.obs.push_flow(flow(0));
    assert_eq!(pod(&s.next().await.unwrap().unwrap()), "pod-0");
    // The client stops reading; the writer goes on at full speed and must not wait for it.
    // Flows of ~2 KB, so that 50k of them (100 MB) overflow the client's HTTP/2 windows and
    // the server's socket buffers: the server cannot get ahead of the writer by sending.
    let obs = srv.obs.clone();
    let writer = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let padding = "x".repeat(2000);
        for i in 1..50_000 {
            #[allow(deprecated)]
            obs.push_flow(Flow {
                summary: padding.clone(),
                ..flow(i)
            });
        }
        t.elapsed()
    });
    let took = writer.join().unwrap();
    assert!(took < Duration::from_secs(20), "writer took {took:?}");
    let mut lost = 0;
    let mut last = String::new();
    while last != "pod-49999" {
        let r = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("stream keeps going")
            .unwrap()
            .unwrap();
        match &r.response_types {
            Some(ResponseTypes::LostEvents(l)) => {
                assert_eq!(
                    l.source,
                    hubble_api::flow::LostEventSource::HubbleRingBuffer as i32
                );
                lost += l.num_events_lost;
            }
            _ => last = pod(&r),
        }
    }
    assert!(lost > 0, "the lagging client was told what it lost");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_debug_events_are_empty_streams() {
    let srv = Server::start(observer(1, 7)).await;
    let ch = client::connect(&srv.tcp, Duration::from_secs(5))
        .await
        .unwrap();
    let mut obs = client::observer(ch);
    let mut a = obs
        .get_agent_events(hubble_api::observer::GetAgentEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(a.message().await.unwrap().is_none());
    let mut d = obs
        .get_debug_events(hubble_api::observer::GetDebugEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(d.message().await.unwrap().is_none());
    srv.stop().await;
}

/// Requests past the caps of `hubble::limits` are refused with InvalidArgument naming the
/// cap (or ResourceExhausted for their size), and the server keeps serving: among them the
/// CEL expression of 100,000 '(' the Go CLI sent, which used to overflow the server's stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_limits_are_refused_and_the_server_goes_on() {
    use hubble_api::flow::flow_filter::Experimental as FlowFilterExperimental;
    let srv = Server::start(observer(3, 7)).await;
    let cel = |src: String| FlowFilter {
        experimental: Some(FlowFilterExperimental {
            cel_expression: vec![src],
        }),
        ..Default::default()
    };
    let refused = [
        (
            GetFlowsRequest {
                whitelist: vec![cel("(".repeat(100_000))],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "expression recursion limit exceeded: 250",
        ),
        (
            GetFlowsRequest {
                blacklist: vec![cel(format!("'{}' == ''", "x".repeat(100_000)))],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "limit 100000",
        ),
        (
            GetFlowsRequest {
                whitelist: vec![FlowFilter::default(); 200],
                blacklist: vec![FlowFilter::default(); 57],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "too many filters (whitelist and blacklist): 257, at most 256",
        ),
        (
            GetFlowsRequest {
                whitelist: vec![cel("true".into()); 17],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "too many CEL expressions: 17, at most 16",
        ),
        (
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    http_path: (0..65).map(|i| format!("/p{i}")).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "at most 64",
        ),
        (
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    dns_query: vec![r"\w{1000}".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "size limit",
        ),
        (
            GetFlowsRequest {
                field_mask: Some(pbjson_types::FieldMask {
                    paths: vec!["time".into(); 257],
                }),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "too many field mask paths: 257, at most 256",
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
    for addr in [srv.unix.clone(), srv.tcp.clone()] {
        let ch = client::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        for (req, code, needle) in &refused {
            let err = client::observer(ch.clone())
                .get_flows(req.clone())
                .await
                .map(|_| ())
                .expect_err(needle);
            assert_eq!(err.code(), *code, "{needle}: {}", err.message());
            assert!(err.message().contains(needle), "{}", err.message());
            assert!(err.message().len() < 300, "{}", err.message());
        }
        // Still serving, on the same connection.
        let st = client::server_status(ch.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(st.num_flows, 3);
    }
    assert_eq!(collect(&srv.tcp, GetFlowsRequest::default()).await.len(), 3);
    srv.stop().await;
}

/// A client on a connection of its own gets ServerStatus and the last 10 flows, each within
/// 5 s; its channel is returned (the connection stays open while it is held).
async fn answered(addr: &str) -> tonic::transport::Channel {
    let ch = client::connect(addr, T).await.unwrap();
    tokio::time::timeout(T, client::server_status(ch.clone(), T))
        .await
        .unwrap_or_else(|_| panic!("ServerStatus on {addr} answered within 5 s"))
        .unwrap();
    let flows = tokio::time::timeout(T, async {
        let req = GetFlowsRequest {
            number: 10,
            ..Default::default()
        };
        let mut s = client::get_flows(ch.clone(), req).await.unwrap();
        let mut n = 0;
        while let Some(r) = s.next().await {
            r.unwrap();
            n += 1;
        }
        n
    })
    .await
    .unwrap_or_else(|_| panic!("GetFlows on {addr} answered within 5 s"));
    assert_eq!(flows, 10);
    ch
}

fn follow() -> GetFlowsRequest {
    GetFlowsRequest {
        follow: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_follower_does_not_hold_up_other_clients() {
    let srv = Server::start(observer(100, 65535)).await;
    // Followers that stop reading, over TCP and over the socket.
    let mut stalled = Vec::new();
    for addr in [&srv.tcp, &srv.unix] {
        let ch = client::connect(addr, T).await.unwrap();
        let mut s = client::get_flows(ch, follow()).await.unwrap();
        srv.obs.push_flow(flow(100));
        s.next().await.unwrap().unwrap();
        stalled.push(s);
    }
    // ~40 MB of flows: their HTTP/2 windows and socket buffers fill many times over.
    let padding = "x".repeat(2000);
    for i in 101..20_000 {
        #[allow(deprecated)]
        srv.obs.push_flow(Flow {
            summary: padding.clone(),
            ..flow(i)
        });
    }
    for addr in [&srv.tcp, &srv.unix] {
        answered(addr).await;
    }
    drop(stalled);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_lets_go_of_a_dead_client_and_keeps_a_live_one() {
    let limits = ServerLimits {
        grpc_keepalive_interval: ms(200),
        grpc_keepalive_timeout: ms(200),
        ..Default::default()
    };
    let srv = Server::start_with(observer(1, 7), limits).await;
    let ch = client::connect(&srv.tcp, T).await.unwrap();
    let mut live = client::get_flows(
        ch,
        GetFlowsRequest {
            number: 1,
            ..follow()
        },
    )
    .await
    .unwrap();
    assert_eq!(pod(&live.next().await.unwrap().unwrap()), "pod-0");
    // Started HTTP/2, then went silent: closed once a PING goes unanswered (0.4 s here).
    let mut dead = raw_peer::silent_h2(&srv.tcp).await;
    assert!(
        raw_peer::closed_within(&mut dead, T).await,
        "a client that answers no PING is let go"
    );
    // The live follower was idle for several intervals too, but its client answers PINGs.
    tokio::time::sleep(ms(1000)).await;
    srv.obs.push_flow(flow(1));
    let r = tokio::time::timeout(T, live.next())
        .await
        .expect("the live follower is still served")
        .unwrap()
        .unwrap();
    assert_eq!(pod(&r), "pod-1");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_streams_and_connections_wait_and_others_are_served() {
    let limits = ServerLimits {
        grpc_max_concurrent_streams: 8,
        grpc_max_connections: 4,
        ..Default::default()
    };
    let srv = Server::start_with(observer(100, 1023), limits).await;
    // Three TCP connections with as many follow streams as they may have.
    let mut flood = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..3 {
        let ch = client::connect(&srv.tcp, T).await.unwrap();
        for _ in 0..8 {
            flood.push(client::get_flows(ch.clone(), follow()).await.unwrap());
        }
        channels.push(ch);
    }
    // A ninth call on a full connection waits for one of its streams to end.
    let ch0 = channels[0].clone();
    let ninth = tokio::spawn(async move { client::server_status(ch0, 6 * T).await });
    tokio::time::sleep(ms(500)).await;
    assert!(!ninth.is_finished(), "the ninth stream waits: {ninth:?}");
    // A fourth connection (the last slot) is served meanwhile, and so is the unix socket,
    // which has slots of its own.
    let fourth = answered(&srv.tcp).await;
    let _unix = answered(&srv.unix).await;
    // A fifth connection waits to be accepted.
    let tcp = srv.tcp.clone();
    let fifth = tokio::spawn(async move {
        let ch = client::connect(&tcp, 6 * T).await?;
        client::server_status(ch, 6 * T).await
    });
    tokio::time::sleep(ms(500)).await;
    assert!(
        !fifth.is_finished(),
        "the fifth connection waits: {fifth:?}"
    );
    // A flow for every follower, while they hold everything they may.
    srv.obs.push_flow(flow(100));
    for s in flood.iter_mut() {
        let r = tokio::time::timeout(T, s.next())
            .await
            .expect("follower served");
        assert_eq!(pod(&r.unwrap().unwrap()), "pod-100");
    }
    // A stream ends: the ninth call goes; a connection closes: the fifth is served.
    drop(flood.remove(0));
    let st = tokio::time::timeout(T, ninth)
        .await
        .expect("ninth call served");
    assert_eq!(st.unwrap().unwrap().num_flows, 101);
    drop(fourth);
    let st = tokio::time::timeout(T, fifth)
        .await
        .expect("fifth connection served");
    assert_eq!(st.unwrap().unwrap().num_flows, 101);
    srv.stop().await;
}
