//! The agent's Hubble gRPC server: thin tonic handlers for `observer.Observer` and
//! `peer.Peer` over a [`LocalObserver`], plus health and reflection, on a unix socket and TCP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use hubble::listen::{Acceptor, ServerLimits};
use hubble_api::observer::observer_server::{Observer, ObserverServer};
use hubble_api::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, ServerStatusRequest, ServerStatusResponse,
};
use hubble_api::peer::peer_server::PeerServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use super::local::{Encoded, LocalObserver};
use super::peer::{PeerList, PeerService, tls_server_name};

/// Default unix socket of the agent's Hubble server.
pub const DEFAULT_SOCKET: &str = "/var/run/cilium/hubble.sock";
/// Default TCP listen address (Hubble's `hubble-listen-address` Helm default).
pub const DEFAULT_LISTEN_ADDRESS: &str = ":4244";
/// The service name `hubble status` asks the gRPC health service about.
pub const HEALTH_SERVICE: &str = "hubble.server.Observer";
/// Response header carrying the server version.
pub const VERSION_HEADER: &str = "hubble-server-version";

/// Flows waiting to be sent to one client; past this the client's reader simply lags.
const CLIENT_QUEUE: usize = 256;
/// Responses a GetFlows reader hands over at once, at most.
const SEND_BATCH: usize = 64;

/// The encoded responses of one GetFlows stream, as its reader task sends them (in
/// batches). Dropping it (the client went away) ends the reader at once.
pub struct EncodedStream {
    rx: mpsc::Receiver<Vec<Encoded>>,
    batch: std::vec::IntoIter<Encoded>,
}

impl Stream for EncodedStream {
    type Item = Result<Encoded, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            if let Some(b) = self.batch.next() {
                return std::task::Poll::Ready(Some(Ok(b)));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(batch) => self.batch = batch.into_iter(),
                None => return std::task::Poll::Ready(None),
            }
        }
    }
}

/// Polls `fut` once: its output if it is ready now, else `None` (and `fut` is dropped).
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// After shutdown, streams that do not end by themselves (followers of idle peers) are cut.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid listen address {0:?}: expected HOST:PORT or :PORT")]
    Address(String),
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    TcpListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve the Hubble API in plaintext on {0}: anyone who can reach it reads \
         every flow; give --tls-cert-file and --tls-key-file, listen on loopback \
         (127.0.0.1:PORT), or pass --disable-server-tls to accept that"
    )]
    Plaintext(SocketAddr),
    #[error(
        "another Hubble server answers on {}: stop it first, or give --socket another path",
        .0.display()
    )]
    SocketInUse(PathBuf),
    #[error("{} exists and is not a socket: remove it, or give --socket another path", .0.display())]
    NotASocket(PathBuf),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// `observer.Observer` over a local observer.
#[derive(Clone)]
pub struct ObserverService {
    obs: Arc<LocalObserver>,
}

impl ObserverService {
    pub fn new(obs: Arc<LocalObserver>) -> Self {
        ObserverService { obs }
    }

    fn respond<T>(&self, body: T) -> Response<T> {
        let mut r = Response::new(body);
        if let Ok(v) = MetadataValue::try_from(self.obs.version()) {
            r.metadata_mut().insert(VERSION_HEADER, v);
        }
        r
    }
}

impl ObserverService {
    /// GetFlows as protobuf-encoded responses: one task per client reads the ring at its own
    /// pace; it ends with the request or when the client goes away, which frees its reader.
    pub fn get_flows_encoded(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<EncodedStream>, Status> {
        let mut q = self
            .obs
            .query(req.get_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE / SEND_BATCH);
        let obs = self.obs.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = obs.closed() => break,
                    next = obs.next_encoded(&mut q) => {
                        let Some(resp) = next else { break };
                        // Whatever else is ready goes with it: one wake-up and one channel
                        // send per batch, not per flow.
                        let mut batch = Vec::with_capacity(SEND_BATCH);
                        batch.push(resp);
                        let mut end = false;
                        while batch.len() < SEND_BATCH {
                            match poll_once(obs.next_encoded(&mut q)) {
                                Some(Some(resp)) => batch.push(resp),
                                Some(None) => {
                                    end = true;
                                    break;
                                }
                                None => break,
                            }
                        }
                        if tx.send(batch).await.is_err() || end {
                            break;
                        }
                    }
                }
            }
        });
        Ok(self.respond(EncodedStream {
            rx,
            batch: Vec::new().into_iter(),
        }))
    }
}

/// The Observer service as routed: GetFlows streams pre-encoded responses (each stored
/// flow is encoded once, however many clients read it); the other methods go to the
/// generated server.
#[derive(Clone)]
pub struct ObserverRoutes {
    svc: ObserverService,
    generated: ObserverServer<ObserverService>,
}

impl ObserverRoutes {
    pub fn new(svc: ObserverService) -> Self {
        ObserverRoutes {
            generated: ObserverServer::new(svc.clone())
                .max_decoding_message_size(hubble::limits::MAX_REQUEST_BYTES),
            svc,
        }
    }
}

impl tonic::server::NamedService for ObserverRoutes {
    const NAME: &'static str = "observer.Observer";
}

type RouteFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>>
            + Send
            + 'static,
    >,
>;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for ObserverRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = RouteFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != hubble::wire::GET_FLOWS_PATH {
            return self.generated.call(req);
        }
        let method = RawGetFlows(self.svc.clone());
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(hubble::wire::ServerCodec::<Encoded>::default())
                    .apply_max_message_size_config(Some(hubble::limits::MAX_REQUEST_BYTES), None);
            let resp = grpc.server_streaming(method, req).await;
            Ok(hubble::wire::oversized_is_resource_exhausted(resp))
        })
    }
}

struct RawGetFlows(ObserverService);

impl tonic::server::ServerStreamingService<GetFlowsRequest> for RawGetFlows {
    type Response = Encoded;
    type ResponseStream = EncodedStream;
    type Future = Pin<
        Box<dyn Future<Output = Result<Response<Self::ResponseStream>, Status>> + Send + 'static>,
    >;

    fn call(&mut self, req: Request<GetFlowsRequest>) -> Self::Future {
        let r = self.0.get_flows_encoded(req);
        Box::pin(async move { r })
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;
    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    /// Served by [`ObserverRoutes`] from pre-encoded responses; this generated path (not
    /// routed) decodes them back, for callers of the plain `ObserverServer`.
    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        use prost::Message;
        let encoded = self.get_flows_encoded(req)?.into_inner();
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(async move {
            let mut encoded = encoded;
            while let Some(item) = encoded.next().await {
                let item = item.and_then(|b| {
                    GetFlowsResponse::decode(b.to_bytes())
                        .map_err(|e| Status::internal(e.to_string()))
                });
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_agent_events(
        &self,
        req: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        let mut q = self
            .obs
            .agent_events()
            .query(req.get_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let obs = self.obs.clone();
        tokio::spawn(async move {
            let events = obs.agent_events();
            loop {
                tokio::select! {
                    biased;
                    _ = tx.closed() => break,
                    next = events.next(&mut q) => {
                        let Some(e) = next else { break };
                        if tx.send(Ok((*e).clone())).await.is_err() {
                            break;
                        }
                    }
                    _ = obs.closed() => {
                        // Events recorded while shutting down (e.g. ENDPOINT_DELETED) still
                        // reach followers.
                        while let Some(e) = events.next_now(&mut q) {
                            if tx.send(Ok((*e).clone())).await.is_err() {
                                break;
                            }
                        }
                        break;
                    }
                }
            }
        });
        Ok(self.respond(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_debug_events(
        &self,
        req: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        // Our datapath emits no debug events (Cilium's come from datapath debug mode):
        // nothing is stored, followers wait.
        Ok(self.respond(idle_stream(req.get_ref().follow)))
    }

    async fn get_nodes(
        &self,
        _req: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented("GetNodes not implemented"))
    }

    async fn get_namespaces(
        &self,
        _req: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(self.respond(GetNamespacesResponse {
            namespaces: self.obs.namespaces(),
        }))
    }

    async fn server_status(
        &self,
        _req: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(self.respond(self.obs.status()))
    }
}

fn idle_stream<T: Send + 'static>(follow: bool) -> BoxStream<T> {
    if follow {
        Box::pin(tokio_stream::pending())
    } else {
        Box::pin(tokio_stream::empty())
    }
}

/// Where the server listens.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Unix socket path (none = no unix socket).
    pub socket: Option<PathBuf>,
    /// TCP address, `HOST:PORT` or `:PORT` (none or empty = no TCP).
    pub listen_address: Option<String>,
    /// TLS (mutual when it has client CAs) on the TCP listener; the unix socket never
    /// speaks TLS, as Hubble's.
    pub tls: Option<hubble::tls::ServerTls>,
    /// Group of the unix socket (mode 0660); none: the agent's own.
    pub socket_group: Option<u32>,
    /// Serve plaintext TCP beyond loopback (`--disable-server-tls`); see
    /// [`super::listen::tcp_address`].
    pub plaintext_anywhere: bool,
    /// Connection caps, TLS handshake bounds and HTTP/2 keepalive (see [`hubble::listen`]).
    pub limits: ServerLimits,
}

/// Listening sockets, bound but not yet serving (so callers learn the TCP port first, and
/// can bind before entering another network namespace).
pub struct Listeners {
    unix: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    tcp: Option<std::net::TcpListener>,
    tls: Option<hubble::tls::ServerTls>,
    limits: ServerLimits,
    /// Other nodes announced by Peer Notify (name, address): the nodes of a multi-node lab,
    /// or of the kvstore's registry.
    other_peers: tokio::sync::watch::Receiver<PeerList>,
    /// The kvstore's health (with `--kvstore`), reported by the health service.
    kvstore_health: Option<tokio::sync::watch::Receiver<bool>>,
    /// What the user should know about where the server listens (one line each).
    notices: Vec<String>,
}

impl Listeners {
    /// Binds the configured sockets (see [`super::listen`]: a stale unix socket file is
    /// replaced, a live one refused; plaintext TCP stays on loopback unless told otherwise).
    pub fn bind(opts: &ServeOptions) -> Result<Self, ServeError> {
        let mut notices = Vec::new();
        let tcp_addr = match opts.listen_address.as_deref().filter(|a| !a.is_empty()) {
            Some(addr) => {
                let t =
                    super::listen::tcp_address(addr, opts.tls.is_some(), opts.plaintext_anywhere)?;
                notices.extend(t.notice);
                Some(t.addr)
            }
            None => None,
        };
        let unix = match opts.socket.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => Some((
                super::listen::bind_unix(path, opts.socket_group)?,
                path.clone(),
            )),
            None => None,
        };
        let tcp = match tcp_addr {
            Some(addr) => {
                let err = |source| ServeError::TcpListen { addr, source };
                let l = std::net::TcpListener::bind(addr).map_err(err)?;
                l.set_nonblocking(true).map_err(err)?;
                Some(l)
            }
            None => None,
        };
        Ok(Listeners {
            unix,
            tcp,
            tls: opts.tls.clone(),
            limits: opts.limits.clone(),
            other_peers: tokio::sync::watch::channel(PeerList::new()).1,
            kvstore_health: None,
            notices,
        })
    }

    /// Lines for stderr about where the server listens (e.g. loopback only, no TLS).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// Nodes for Peer Notify to announce after this one (name, address), followed as they
    /// change; an entry named like this node is left out.
    pub fn set_other_peers(&mut self, peers: tokio::sync::watch::Receiver<PeerList>) {
        self.other_peers = peers;
    }

    /// Reports the kvstore's health as the health service's `kvstore` service.
    pub fn set_kvstore_health(&mut self, health: tokio::sync::watch::Receiver<bool>) {
        self.kvstore_health = Some(health);
    }

    /// The bound TCP address, if TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The unix socket path, if on.
    pub fn socket(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, p)| p.as_path())
    }

    /// Where clients can connect, for log lines: `unix:///path`, `host:port`.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(p) = self.socket() {
            v.push(format!("unix://{}", p.display()));
        }
        if let Some(a) = self.tcp_addr() {
            v.push(match &self.tls {
                Some(t) if t.is_mutual() => format!("{a} (mTLS)"),
                Some(_) => format!("{a} (TLS)"),
                None => a.to_string(),
            });
        }
        v.join(" and ")
    }
}

/// `:4244` → all interfaces; `HOST:PORT` as given (IPv6 in brackets).
pub fn parse_listen_address(addr: &str) -> Result<SocketAddr, ServeError> {
    let full = if addr.starts_with(':') {
        format!("[::]{addr}")
    } else {
        addr.to_string()
    };
    if let Ok(sa) = full.parse() {
        return Ok(sa);
    }
    if let Some(port) = full.strip_prefix("localhost:")
        && let Ok(p) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    Err(ServeError::Address(addr.to_string()))
}

/// The address announced by Peer.Notify for a TCP listener: unspecified hosts become loopback.
pub fn peer_address(tcp: Option<SocketAddr>) -> String {
    match tcp {
        Some(mut sa) => {
            if sa.ip().is_unspecified() {
                sa.set_ip(if sa.is_ipv4() {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            sa.to_string()
        }
        None => String::new(),
    }
}

async fn router(
    obs: Arc<LocalObserver>,
    peer: PeerService,
    limits: &ServerLimits,
    kvstore_health: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<Router, ServeError> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    if let Some(mut kv) = kvstore_health {
        // Flows are served either way: only the `kvstore` service follows etcd.
        tokio::spawn(async move {
            loop {
                let status = match *kv.borrow_and_update() {
                    true => tonic_health::ServingStatus::Serving,
                    false => tonic_health::ServingStatus::NotServing,
                };
                health
                    .set_service_status(hubble::client::KVSTORE_HEALTH_SERVICE, status)
                    .await;
                if kv.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hubble_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hubble_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(limits
        .builder()
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ObserverRoutes::new(ObserverService::new(obs)))
        .add_service(PeerServer::new(peer)))
}

/// Serves Observer, Peer, health and reflection on the bound listeners until `shutdown`
/// completes; then ends every stream (idle ones after a short grace) and removes the unix
/// socket file. Each listener takes at most `--grpc-max-connections` connections, TLS
/// handshakes are bounded in time and number, and dead clients are let go by HTTP/2
/// keepalive ([`hubble::listen`]).
pub async fn serve(
    obs: Arc<LocalObserver>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let peer = PeerService::new(obs.node_name(), peer_address(listeners.tcp_addr()))
        .with_tls(
            listeners
                .tls
                .as_ref()
                .map(|_| tls_server_name(obs.node_name())),
        )
        .with_others(listeners.other_peers.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut socket_file = None;
    let limits = listeners.limits;
    let kvstore_health = listeners.kvstore_health;
    let new_router = || router(obs.clone(), peer.clone(), &limits, kvstore_health.clone());
    if let Some((l, path)) = listeners.unix {
        let l = UnixListener::from_std(l).map_err(|source| ServeError::Listen {
            what: path.display().to_string(),
            source,
        })?;
        let r = new_router().await?;
        let stop = stopped(stop_rx.clone());
        let incoming = Acceptor::new(&limits).unix(l);
        tasks.spawn(async move { r.serve_with_incoming_shutdown(incoming, stop).await });
        socket_file = Some(path);
    }
    if let Some(l) = listeners.tcp {
        let l = TcpListener::from_std(l).map_err(|source| ServeError::Listen {
            what: "tcp".to_string(),
            source,
        })?;
        let r = new_router().await?;
        let stop = stopped(stop_rx.clone());
        let acceptor = Acceptor::new(&limits);
        match listeners.tls {
            Some(tls) => {
                let incoming = acceptor.tls(l, &tls, "hubble-agent");
                tasks.spawn(async move { r.serve_with_incoming_shutdown(incoming, stop).await });
            }
            None => {
                let incoming = acceptor.tcp(l);
                tasks.spawn(async move { r.serve_with_incoming_shutdown(incoming, stop).await });
            }
        }
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping = false;
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                obs.close();
                let _ = stop_tx.send(true);
            }
            _ = tokio::time::sleep(SHUTDOWN_GRACE), if stopping => tasks.abort_all(),
            r = tasks.join_next() => match r {
                None => break,
                Some(Ok(Err(e))) if result.is_ok() => result = Err(ServeError::Transport(e)),
                Some(_) => {}
            },
        }
    }
    if let Some(p) = socket_file {
        let _ = std::fs::remove_file(p);
    }
    result
}
