//! GetAgentEvents of the agent's Hubble server in process, over a real unix socket and TCP
//! on 127.0.0.1: last N, first N, since/until, follow (events pushed after subscribing,
//! events recorded while the server shuts down), and refused requests. No privileges needed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent::observer::LocalObserver;
use agent::observer::events::{self, AgentEvents};
use hubble::client;
use hubble_api::flow::agent_event::Notification;
use hubble_api::flow::{AgentEventType, EndpointUpdateNotification};
use hubble_api::observer::{GetAgentEventsRequest, GetAgentEventsResponse};
use pbjson_types::Timestamp;

#[path = "support/grpc_server.rs"]
mod grpc_server;
use grpc_server::Server;

const T0: u64 = 1_700_000_000;

fn at(i: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + i)
}

fn ts(i: u64) -> Timestamp {
    Timestamp {
        seconds: (T0 + i) as i64,
        nanos: 0,
    }
}

/// Event `i`: an ENDPOINT_CREATED of endpoint `i`, recorded at T0 + i seconds.
fn push(ev: &AgentEvents, i: u64) {
    ev.push_at(
        hubble_api::flow::AgentEvent {
            r#type: AgentEventType::EndpointCreated as i32,
            notification: Some(Notification::EndpointUpdate(EndpointUpdateNotification {
                id: i,
                pod_name: format!("pod-{i}"),
                namespace: "default".into(),
                ..Default::default()
            })),
        },
        at(i),
    );
}

fn id(r: &GetAgentEventsResponse) -> u64 {
    match r.agent_event.as_ref().and_then(|e| e.notification.as_ref()) {
        Some(Notification::EndpointUpdate(n)) => n.id,
        other => panic!("unexpected event {other:?}"),
    }
}

/// An observer holding `events` endpoint-created events.
fn observer(events: u64) -> Arc<LocalObserver> {
    let obs = Arc::new(LocalObserver::new(7, "lab-node").unwrap());
    for i in 0..events {
        push(obs.agent_events(), i);
    }
    obs
}

async fn stream(
    server: &str,
    req: GetAgentEventsRequest,
) -> Result<tonic::Streaming<GetAgentEventsResponse>, tonic::Status> {
    let ch = client::connect(server, Duration::from_secs(5))
        .await
        .unwrap();
    client::observer(ch)
        .get_agent_events(req)
        .await
        .map(|r| r.into_inner())
}

async fn ids(server: &str, req: GetAgentEventsRequest) -> Vec<u64> {
    let mut s = stream(server, req).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a non-follow stream ends")
        .unwrap()
    {
        assert_eq!(r.node_name, "lab-node");
        out.push(id(&r));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_first_since_until_over_unix_and_tcp() {
    let srv = Server::start(observer(10)).await;
    for addr in [&srv.unix, &srv.tcp] {
        assert_eq!(
            ids(addr, GetAgentEventsRequest::default()).await,
            (0..10).collect::<Vec<_>>(),
            "number 0 without follow: every stored event"
        );
        let last = GetAgentEventsRequest {
            number: 3,
            ..Default::default()
        };
        assert_eq!(ids(addr, last).await, vec![7, 8, 9]);
        let first = GetAgentEventsRequest {
            number: 2,
            first: true,
            ..Default::default()
        };
        assert_eq!(ids(addr, first).await, vec![0, 1]);
        let window = GetAgentEventsRequest {
            since: Some(ts(3)),
            until: Some(ts(5)),
            ..Default::default()
        };
        assert_eq!(ids(addr, window).await, vec![3, 4, 5]);
        let since_capped = GetAgentEventsRequest {
            since: Some(ts(6)),
            number: 2,
            ..Default::default()
        };
        assert_eq!(ids(addr, since_capped).await, vec![6, 7]);
    }
    srv.stop().await;
}

async fn next(s: &mut tonic::Streaming<GetAgentEventsResponse>) -> Option<GetAgentEventsResponse> {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("followed event arrives")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_sees_new_events_and_those_of_shutdown() {
    let srv = Server::start(observer(4)).await;
    let mut s = stream(
        &srv.unix,
        GetAgentEventsRequest {
            follow: true,
            number: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(id(&next(&mut s).await.unwrap()), 3);
    // A follower with nothing new waits, then gets what is pushed after it subscribed.
    let idle = tokio::time::timeout(Duration::from_millis(200), s.message()).await;
    assert!(idle.is_err(), "no event before one is pushed");
    for i in 4..6 {
        push(srv.obs.agent_events(), i);
    }
    assert_eq!(id(&next(&mut s).await.unwrap()), 4);
    assert_eq!(id(&next(&mut s).await.unwrap()), 5);
    // Recorded right before shutdown (the agent's ENDPOINT_DELETED): still delivered.
    push(srv.obs.agent_events(), 6);
    let obs = srv.obs.clone();
    let stopping = tokio::spawn(srv.stop());
    assert_eq!(id(&next(&mut s).await.unwrap()), 6);
    assert!(next(&mut s).await.is_none(), "the stream ends at shutdown");
    stopping.await.unwrap();
    drop(obs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_follower_never_holds_the_writer() {
    let srv = Server::start(observer(0)).await;
    let mut s = stream(
        &srv.tcp,
        GetAgentEventsRequest {
            follow: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    push(srv.obs.agent_events(), 0);
    let r = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(id(&r), 0);
    drop(s);
    // More than the store holds, with the client gone: the oldest are overwritten.
    for i in 1..=events::AGENT_EVENTS_CAPACITY + 5 {
        push(srv.obs.agent_events(), i);
    }
    assert_eq!(srv.obs.agent_events().len(), events::AGENT_EVENTS_CAPACITY);
    let first = GetAgentEventsRequest {
        first: true,
        number: 1,
        ..Default::default()
    };
    assert_eq!(ids(&srv.unix, first).await, vec![6]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument() {
    let srv = Server::start(observer(1)).await;
    let err = stream(
        &srv.tcp,
        GetAgentEventsRequest {
            first: true,
            follow: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "first cannot be specified with follow");
    let err = stream(
        &srv.tcp,
        GetAgentEventsRequest {
            until: Some(Timestamp {
                seconds: 1,
                nanos: 1_000_000_000,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("invalid until timestamp"),
        "{}",
        err.message()
    );
    // The server keeps serving.
    assert_eq!(
        ids(&srv.unix, GetAgentEventsRequest::default()).await,
        vec![0]
    );
    srv.stop().await;
}

#[test]
fn agent_started_carries_its_time() {
    let e = events::agent_started(at(7));
    assert_eq!(e.r#type, AgentEventType::AgentStarted as i32);
    match e.notification {
        Some(Notification::AgentStart(t)) => assert_eq!(t.time, Some(ts(7))),
        other => panic!("{other:?}"),
    }
}

/// `run`, `serve-flows` and `serve-replay` start their server through `HubbleServer`,
/// which records AGENT_STARTED first thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_server_records_agent_started() {
    use agent::observer::run::{HubbleServer, ServerArgs};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hubble.sock");
    let args = ServerArgs {
        max_flows: 7,
        socket: sock.clone(),
        socket_group: None,
        listen_address: String::new(),
        disable_server_tls: false,
        no_hubble_server: false,
        tls_cert_file: None,
        tls_key_file: None,
        tls_client_ca_files: Vec::new(),
        limits: Default::default(),
    };
    let before = SystemTime::now();
    let running = HubbleServer::bind_any(&args)
        .unwrap()
        .unwrap()
        .start("lab-node")
        .unwrap();
    let mut s = stream(
        &format!("unix://{}", sock.display()),
        GetAgentEventsRequest::default(),
    )
    .await
    .unwrap();
    let r = next(&mut s).await.expect("AGENT_STARTED");
    let e = r.agent_event.unwrap();
    assert_eq!(e.r#type, AgentEventType::AgentStarted as i32);
    let Some(Notification::AgentStart(t)) = e.notification else {
        panic!("{e:?}");
    };
    let t = t.time.unwrap();
    let since_epoch = before.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    assert!(t.seconds >= since_epoch.as_secs() as i64);
    assert_eq!(r.time, Some(t), "recorded when it started");
    assert!(next(&mut s).await.is_none());
    tokio::task::spawn_blocking(move || running.stop().unwrap())
        .await
        .unwrap();
}
