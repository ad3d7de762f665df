//! Shared by the relay's tests: in-process agents (the agent's LocalObserver and gRPC server
//! on 127.0.0.1, flows pushed by the test) and readers of GetFlows responses.
#![allow(dead_code)] // each test crate uses its own part

use std::sync::Arc;
use std::time::Duration;

use agent::observer::{Listeners, LocalObserver, ServeOptions, serve};
use hubble_api::flow::{Endpoint, Flow, Verdict};
use hubble_api::observer::GetFlowsResponse;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::relay::NodeState;
use pbjson_types::Timestamp;
use tokio::sync::oneshot;

pub const T0: i64 = 1_700_000_000;

pub fn flow(node: &str, ns: &str, t: i64) -> Flow {
    Flow {
        time: Some(Timestamp {
            seconds: T0 + t / 1000,
            nanos: ((t % 1000) * 1_000_000) as i32,
        }),
        verdict: Verdict::Forwarded as i32,
        node_name: node.into(),
        source: Some(Endpoint {
            namespace: ns.into(),
            pod_name: format!("{node}-{t}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub struct Agent {
    pub obs: Arc<LocalObserver>,
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    pub async fn start(name: &str, listen: &str) -> Agent {
        Self::start_with(Arc::new(LocalObserver::new(4095, name).unwrap()), listen).await
    }

    pub async fn start_with(obs: Arc<LocalObserver>, listen: &str) -> Agent {
        Self::start_tls(obs, listen, None).await
    }

    pub async fn start_tls(
        obs: Arc<LocalObserver>,
        listen: &str,
        tls: Option<hubble::tls::ServerTls>,
    ) -> Agent {
        Self::start_full(obs, listen, tls, Vec::new()).await
    }

    pub async fn start_full(
        obs: Arc<LocalObserver>,
        listen: &str,
        tls: Option<hubble::tls::ServerTls>,
        others: Vec<(String, String)>,
    ) -> Agent {
        let mut l = Listeners::bind(&ServeOptions {
            socket: None,
            listen_address: Some(listen.into()),
            tls,
            ..Default::default()
        })
        .unwrap();
        l.set_other_peers(tokio::sync::watch::channel(others).1);
        let addr = l.tcp_addr().unwrap().to_string();
        let (tx, rx) = oneshot::channel();
        let o = obs.clone();
        let task = tokio::spawn(async move {
            serve(o, l, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Agent {
            obs,
            addr,
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("agent stops")
            .unwrap();
    }
}

pub fn flows(rs: &[GetFlowsResponse]) -> Vec<(String, String)> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => Some((
                r.node_name.clone(),
                f.source.as_ref().unwrap().pod_name.clone(),
            )),
            _ => None,
        })
        .collect()
}

pub fn statuses(rs: &[GetFlowsResponse]) -> Vec<(NodeState, Vec<String>)> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::NodeStatus(s)) => Some((
                NodeState::try_from(s.state_change).unwrap(),
                s.node_names.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// A GetFlows stream of a scripted peer.
pub type FlowStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<GetFlowsResponse, tonic::Status>> + Send + 'static>,
>;

/// What a scripted peer answers GetFlows with.
pub type GetFlows = Arc<dyn Fn() -> Result<FlowStream, tonic::Status> + Send + Sync>;

/// A peer on 127.0.0.1 whose GetFlows is `flows`, whose ServerStatus answers (so the relay
/// connects) with `version`, and whose GetNamespaces is empty; the other calls are
/// unimplemented. Returns its address and its server task.
pub async fn scripted_peer(
    flows: GetFlows,
    version: &'static str,
) -> (String, tokio::task::JoinHandle<()>) {
    use hubble_api::observer::observer_server::{Observer, ObserverServer};
    use hubble_api::observer::*;
    type Stream<T> = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>,
    >;
    struct Scripted(GetFlows, &'static str);
    #[tonic::async_trait]
    impl Observer for Scripted {
        type GetFlowsStream = FlowStream;
        type GetAgentEventsStream = Stream<GetAgentEventsResponse>;
        type GetDebugEventsStream = Stream<GetDebugEventsResponse>;
        async fn get_flows(
            &self,
            _r: tonic::Request<GetFlowsRequest>,
        ) -> Result<tonic::Response<FlowStream>, tonic::Status> {
            (self.0)().map(tonic::Response::new)
        }
        async fn get_agent_events(
            &self,
            _r: tonic::Request<GetAgentEventsRequest>,
        ) -> Result<tonic::Response<Self::GetAgentEventsStream>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn get_debug_events(
            &self,
            _r: tonic::Request<GetDebugEventsRequest>,
        ) -> Result<tonic::Response<Self::GetDebugEventsStream>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn get_nodes(
            &self,
            _r: tonic::Request<GetNodesRequest>,
        ) -> Result<tonic::Response<GetNodesResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn get_namespaces(
            &self,
            _r: tonic::Request<GetNamespacesRequest>,
        ) -> Result<tonic::Response<GetNamespacesResponse>, tonic::Status> {
            Ok(tonic::Response::new(GetNamespacesResponse::default()))
        }
        async fn server_status(
            &self,
            _r: tonic::Request<ServerStatusRequest>,
        ) -> Result<tonic::Response<ServerStatusResponse>, tonic::Status> {
            Ok(tonic::Response::new(ServerStatusResponse {
                version: self.1.into(),
                ..Default::default()
            }))
        }
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ObserverServer::new(Scripted(flows, version)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await;
    });
    (addr, task)
}
