//! Fake agents for the relay benches: an Observer server whose GetFlows streams copies of a
//! realistic flow (the first line of fixtures/flows/demo.jsonl, ~1 KB) stamped with the
//! current time, either as fast as the relay reads or paced at a rate, in batches every half
//! millisecond. The flow is encoded once and each batch's response (that encoding plus
//! node_name and time) once per batch, then sent as shared bytes, as the agent sends its
//! ring's encoded flows: the fake agents' CPU (on a real cluster, other machines') stays
//! small beside the relay's and the client's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::observer_server::{Observer, ObserverServer};
use hubble_api::observer::*;
use pbjson_types::Timestamp;
use tokio_stream::StreamExt;
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

/// One fake GetFlows stream, produced as it is read (no task, no channel): like the agent,
/// which sends each stored flow's encoding as it is, it hands out shared bytes. Paced
/// streams release what is due every half millisecond, all stamped with that instant (so
/// one encoding serves the whole batch); unpaced ones stamp every 64 flows.
struct Paced {
    flow: Vec<u8>,
    name: String,
    count: u64,
    rate: u64,
    start: Instant,
    sent: u64,
    /// The current batch's response and how many more copies of it to send.
    cur: bytes::Bytes,
    left: u64,
    tick: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl tokio_stream::Stream for Paced {
    type Item = Result<bytes::Bytes, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let me = &mut *self;
        loop {
            if me.left > 0 {
                me.left -= 1;
                me.sent += 1;
                return Poll::Ready(Some(Ok(me.cur.clone())));
            }
            if me.sent >= me.count {
                // Follow streams stay open (until the reader goes away and drops this).
                return Poll::Pending;
            }
            let due = if me.rate == 0 {
                me.sent + 64
            } else {
                (me.start.elapsed().as_secs_f64() * me.rate as f64) as u64
            };
            if due <= me.sent {
                let next = tokio::time::Instant::now() + Duration::from_micros(500);
                me.tick.as_mut().reset(next);
                std::task::ready!(me.tick.as_mut().poll(cx));
                continue;
            }
            me.cur = encoded(&me.flow, &me.name, now_ts());
            me.left = due.min(me.count) - me.sent;
        }
    }
}

struct RawFlows(FakeAgent);

impl tonic::server::ServerStreamingService<GetFlowsRequest> for RawFlows {
    type Response = bytes::Bytes;
    type ResponseStream = Paced;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, _req: Request<GetFlowsRequest>) -> Self::Future {
        let me = self.0.clone();
        Box::pin(async move {
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
            Ok(Response::new(Paced {
                flow,
                name: me.name,
                count: me.count,
                rate: me.rate,
                start: Instant::now(),
                sent: 0,
                cur: bytes::Bytes::new(),
                left: 0,
                tick: Box::pin(tokio::time::sleep(Duration::ZERO)),
            }))
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
                let mut grpc =
                    tonic::server::Grpc::new(relay::wire::ClientCodec::<bytes::Bytes>::default());
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
            .serve_with_incoming(
                // As the agent's TLS listener does (serve_with_incoming leaves Nagle on).
                tokio_stream::wrappers::TcpListenerStream::new(l).map(|c| {
                    c.inspect(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    })
                }),
            ),
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
        cluster_name: "default".into(),
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
    tokio::spawn(relay::server::serve(
        obs,
        l,
        None,
        Default::default(),
        std::future::pending(),
    ));
    addr
}
