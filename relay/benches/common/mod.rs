//! Fake agents for the relay benches: an Observer server whose GetFlows streams copies of a
//! realistic flow (the first line of fixtures/flows/demo.jsonl) stamped with the current time,
//! either as fast as the relay reads or paced at a rate, in batches every half millisecond.
//! The flow is encoded once; each response is that encoding plus node_name and time, so the
//! benches measure the relay rather than the fake agents' protobuf encoding.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::observer_server::{Observer, ObserverServer};
use hubble_api::observer::*;
use pbjson_types::Timestamp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub fn template() -> GetFlowsResponse {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
    let line = std::fs::read_to_string(path).unwrap();
    let line = line.lines().next().unwrap();
    serde_json::from_str(line).unwrap()
}

pub fn now_ts() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[derive(Clone)]
pub struct FakeAgent {
    pub name: String,
    /// Flows per GetFlows stream.
    pub count: u64,
    /// Flows per second (0: as fast as read).
    pub rate: u64,
    pub template: Arc<GetFlowsResponse>,
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Responses of one fake stream, encoded by hand around the pre-encoded flow.
fn encoded(flow: &[u8], name: &str, t: Timestamp) -> bytes::Bytes {
    let mut out = bytes::BytesMut::with_capacity(flow.len() + name.len() + 32);
    out.extend_from_slice(flow);
    prost::encoding::string::encode(1000, &name.to_string(), &mut out);
    prost::encoding::message::encode(1001, &t, &mut out);
    out.freeze()
}

struct RawFlows(FakeAgent);

impl tonic::server::ServerStreamingService<GetFlowsRequest> for RawFlows {
    type Response = bytes::Bytes;
    type ResponseStream = ReceiverStream<Result<bytes::Bytes, Status>>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, _req: Request<GetFlowsRequest>) -> Self::Future {
        let me = self.0.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                let flow = {
                    use prost::Message;
                    let mut t = (*me.template).clone();
                    t.node_name.clear();
                    t.time = None;
                    if let Some(ResponseTypes::Flow(f)) = &mut t.response_types {
                        f.node_name = me.name.clone();
                    }
                    t.encode_to_vec()
                };
                let start = Instant::now();
                let mut sent = 0u64;
                while sent < me.count {
                    let batch = if me.rate == 0 {
                        64
                    } else {
                        let due = (start.elapsed().as_secs_f64() * me.rate as f64) as u64;
                        if due <= sent {
                            tokio::time::sleep(Duration::from_micros(500)).await;
                            continue;
                        }
                        due - sent
                    };
                    let t = now_ts();
                    for _ in 0..batch.min(me.count - sent) {
                        if tx.send(Ok(encoded(&flow, &me.name, t))).await.is_err() {
                            return;
                        }
                        sent += 1;
                    }
                }
                // Follow streams stay open.
                tx.closed().await;
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

/// The fake agent as served: GetFlows raw, the rest through the generated server.
#[derive(Clone)]
struct FakeServer {
    agent: FakeAgent,
    inner: ObserverServer<FakeAgent>,
}

impl tonic::server::NamedService for FakeServer {
    const NAME: &'static str = "observer.Observer";
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for FakeServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        if req.uri().path() == relay::wire::GET_FLOWS_PATH {
            let svc = RawFlows(self.agent.clone());
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(relay::wire::ClientCodec);
                Ok(grpc.server_streaming(svc, req).await)
            })
        } else {
            self.inner.call(req)
        }
    }
}

#[tonic::async_trait]
impl Observer for FakeAgent {
    type GetFlowsStream = Stream<GetFlowsResponse>;
    type GetAgentEventsStream = Stream<GetAgentEventsResponse>;
    type GetDebugEventsStream = Stream<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        _r: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        Err(Status::unimplemented("served raw"))
    }
    async fn get_agent_events(
        &self,
        _r: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_debug_events(
        &self,
        _r: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_nodes(
        &self,
        _r: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_namespaces(
        &self,
        _r: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse::default()))
    }
    async fn server_status(
        &self,
        _r: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse::default()))
    }
}

/// Starts a fake agent on 127.0.0.1:0 in the current runtime; returns its address.
pub async fn start(agent: FakeAgent) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FakeServer {
                inner: ObserverServer::new(agent.clone()),
                agent,
            })
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    addr
}

/// Starts a relay in front of `peers` on 127.0.0.1:0 in the current runtime.
pub async fn relay(peers: &[String], window: Duration) -> String {
    use relay::observer::{MergeOptions, RelayObserver};
    use relay::peers::{PeerOptions, Peers};
    let p = Peers::new(PeerOptions {
        dial_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(1),
        tls: None,
    });
    for (i, a) in peers.iter().enumerate() {
        p.upsert(&format!("node-{i}"), a, None);
    }
    for _ in 0..200 {
        if p.list().iter().all(|x| x.channel.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let obs = Arc::new(RelayObserver::new(
        p,
        MergeOptions {
            sort_buffer_drain_timeout: window,
            ..Default::default()
        },
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(relay::server::serve(obs, l, None, std::future::pending()));
    addr
}
