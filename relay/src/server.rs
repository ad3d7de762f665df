//! The relay's gRPC server: thin tonic handlers for `observer.Observer` over a
//! [`RelayObserver`], gRPC health ([`crate::health`]) and reflection, calls counted into the
//! gRPC metrics ([`crate::metrics::grpc`]) when they are on.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hubble_api::observer::observer_server::{Observer, ObserverServer};
use hubble_api::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, ServerStatusRequest, ServerStatusResponse,
};
use std::task::Poll;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::{BoxFuture, http};
use tonic::metadata::MetadataValue;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};
use tower::layer::util::{Identity, Stack};

use crate::health::Health;
use crate::metrics::grpc::{GrpcMetrics, GrpcMetricsLayer};
use crate::observer::RelayObserver;

/// Default listen address (Hubble Relay's `--listen-address`).
pub const DEFAULT_LISTEN_ADDRESS: &str = ":4245";
/// Response header carrying the relay version.
pub const VERSION_HEADER: &str = "hubble-relay-version";
/// Batches of merged responses waiting for the client.
const CLIENT_QUEUE: usize = 8;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `observer.Observer` over the relay.
#[derive(Clone)]
pub struct RelayService {
    relay: Arc<RelayObserver>,
}

impl RelayService {
    pub fn new(relay: Arc<RelayObserver>) -> Self {
        RelayService { relay }
    }

    fn respond<T>(&self, body: T) -> Response<T> {
        let mut r = Response::new(body);
        if let Ok(v) = MetadataValue::try_from(self.relay.version()) {
            r.metadata_mut().insert(VERSION_HEADER, v);
        }
        r
    }
}

#[tonic::async_trait]
impl Observer for RelayService {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;
    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;
    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = req.into_inner();
        RelayObserver::validate(&req)?;
        // Only for callers of this service type itself: the server routes GetFlows to
        // [`RawGetFlows`], which forwards the encoded responses without decoding them.
        let rx = start_get_flows(&self.relay, req);
        let s = ReplyStream::new(rx).map(|r| {
            r.and_then(|b| {
                <GetFlowsResponse as prost::Message>::decode(b)
                    .map_err(|e| Status::internal(e.to_string()))
            })
        });
        Ok(self.respond(Box::pin(s)))
    }

    async fn get_agent_events(
        &self,
        _req: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("GetAgentEvents not yet implemented"))
    }

    async fn get_debug_events(
        &self,
        _req: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("GetDebugEvents not yet implemented"))
    }

    async fn get_nodes(
        &self,
        _req: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(self.respond(GetNodesResponse {
            nodes: self.relay.nodes().await,
        }))
    }

    async fn get_namespaces(
        &self,
        _req: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(self.respond(GetNamespacesResponse {
            namespaces: self.relay.namespaces().await,
        }))
    }

    async fn server_status(
        &self,
        _req: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(self.respond(self.relay.server_status().await))
    }
}

fn start_get_flows(
    relay: &Arc<RelayObserver>,
    req: GetFlowsRequest,
) -> mpsc::Receiver<crate::observer::Reply> {
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    let relay = relay.clone();
    tokio::spawn(async move { relay.get_flows(req, tx).await });
    rx
}

/// The merge's batches as one response at a time: tonic's encoder takes every response that
/// is ready into one buffer, so a batch goes out in few HTTP/2 DATA frames.
pub struct ReplyStream {
    rx: mpsc::Receiver<crate::observer::Reply>,
    batch: std::vec::IntoIter<Bytes>,
}

impl ReplyStream {
    pub fn new(rx: mpsc::Receiver<crate::observer::Reply>) -> Self {
        ReplyStream {
            rx,
            batch: Vec::new().into_iter(),
        }
    }
}

impl Stream for ReplyStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(b) = self.batch.next() {
                return Poll::Ready(Some(Ok(b)));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(Ok(batch)) => self.batch = batch.into_iter(),
                Some(Err(st)) => return Poll::Ready(Some(Err(st))),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// GetFlows with responses forwarded as the peers encoded them.
struct RawGetFlows(Arc<RelayObserver>);

impl tonic::server::ServerStreamingService<GetFlowsRequest> for RawGetFlows {
    type Response = Bytes;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<GetFlowsRequest>) -> Self::Future {
        let relay = self.0.clone();
        Box::pin(async move {
            let req = req.into_inner();
            RelayObserver::validate(&req)?;
            let rx = start_get_flows(&relay, req);
            let mut r = Response::new(ReplyStream::new(rx));
            if let Ok(v) = MetadataValue::try_from(relay.version()) {
                r.metadata_mut().insert(VERSION_HEADER, v);
            }
            Ok(r)
        })
    }
}

/// `observer.Observer` as served: GetFlows through [`RawGetFlows`], every other method
/// through the generated server over [`RelayService`].
#[derive(Clone)]
pub struct RelayObserverServer {
    relay: Arc<RelayObserver>,
    inner: ObserverServer<RelayService>,
}

impl RelayObserverServer {
    pub fn new(relay: Arc<RelayObserver>) -> Self {
        RelayObserverServer {
            inner: ObserverServer::new(RelayService::new(relay.clone()))
                .max_decoding_message_size(hubble::limits::MAX_REQUEST_BYTES)
                .max_encoding_message_size(hubble::wire::MAX_MESSAGE),
            relay,
        }
    }
}

impl tonic::server::NamedService for RelayObserverServer {
    const NAME: &'static str = "observer.Observer";
}

impl<B> tonic::codegen::Service<http::Request<B>> for RelayObserverServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == crate::wire::GET_FLOWS_PATH {
            let svc = RawGetFlows(self.relay.clone());
            Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(crate::wire::ClientCodec::<bytes::Bytes>::default())
                        .apply_max_message_size_config(
                            Some(hubble::limits::MAX_REQUEST_BYTES),
                            None,
                        );
                let resp = grpc.server_streaming(svc, req).await;
                Ok(hubble::wire::oversized_is_resource_exhausted(resp))
            })
        } else {
            self.inner.call(req)
        }
    }
}

/// What the main server serves besides the Observer: health, and the gRPC metrics its
/// calls are counted into (none: not counted).
#[derive(Clone)]
pub struct Extras {
    pub health: Health,
    pub grpc_metrics: Option<Arc<GrpcMetrics>>,
}

/// Observer, health and reflection, calls counted into the gRPC metrics when there are some.
pub fn router(
    relay: Arc<RelayObserver>,
    builder: tonic::transport::Server,
    extras: &Extras,
) -> anyhow::Result<Router<Stack<GrpcMetricsLayer, Identity>>> {
    // Reflection lists what the relay serves: its descriptors also define peer.Peer.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hubble_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("observer.Observer")
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hubble_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .with_service_name("observer.Observer")
        .build_v1alpha()?;
    let mut builder = builder.layer(GrpcMetricsLayer(extras.grpc_metrics.clone()));
    Ok(builder
        .add_service(extras.health.service())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RelayObserverServer::new(relay)))
}

/// Serves the relay on `listener` with its own health and no metrics: [`serve_with`].
pub async fn serve(
    relay: Arc<RelayObserver>,
    listener: tokio::net::TcpListener,
    tls: Option<hubble::tls::ServerTls>,
    limits: hubble::listen::ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let extras = Extras {
        health: Health::start(relay.peers().clone()).await,
        grpc_metrics: None,
    };
    serve_with(relay, listener, tls, limits, &extras, shutdown).await
}

/// Serves the relay on `listener` (TLS with `tls`, else plaintext) until `shutdown`
/// completes, within `limits` (connection cap, TLS handshake bounds, HTTP/2 keepalive and
/// streams per connection: [`hubble::listen`]). With mutual TLS a client without a valid
/// certificate fails its handshake (logged, skipped); the server goes on.
pub async fn serve_with(
    relay: Arc<RelayObserver>,
    listener: tokio::net::TcpListener,
    tls: Option<hubble::tls::ServerTls>,
    limits: hubble::listen::ServerLimits,
    extras: &Extras,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let r = router(relay, limits.builder(), extras)?;
    let acceptor = hubble::listen::Acceptor::new(&limits);
    match tls {
        Some(tls) => {
            let incoming = acceptor.tls(listener, &tls, "hubble-relay");
            r.serve_with_incoming_shutdown(incoming, shutdown).await?
        }
        // Nagle is off on accepted connections: the tail of a burst would otherwise wait for
        // the client's delayed ACK (tens of ms of added latency).
        None => {
            r.serve_with_incoming_shutdown(acceptor.tcp(listener), shutdown)
                .await?
        }
    }
    Ok(())
}
