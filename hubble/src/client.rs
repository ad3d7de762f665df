//! Connecting to a Hubble server (agent or relay) and reading from it: `--server` targets
//! (`unix:///path`, `host:port`, `http://host:port`, `tls://host:port`), plain or TLS
//! ([`crate::tls`]), GetFlows streaming and `hubble status`.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use hubble_api::observer::observer_client::ObserverClient;
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse, ServerStatusResponse};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint, Uri};

/// Default `--server` (hubble-relay's address).
pub const DEFAULT_SERVER: &str = "localhost:4245";
/// Default `--timeout` for connecting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--request-timeout` for unary calls.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
/// gRPC health service name of Hubble's Observer.
pub const HEALTH_SERVICE: &str = "hubble.server.Observer";
/// The health service name an agent with a kvstore reports it under (SERVING while etcd
/// answers); agents without one do not know the name.
pub const KVSTORE_HEALTH_SERVICE: &str = "kvstore";
use crate::wire::MAX_MESSAGE;
/// HTTP/2 receive windows: large enough that a server streaming a full ring is not held up
/// waiting for window updates (h2's default is 64 KiB, about 45 flows).
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame the server may send (h2's default is 16 KiB): the server writes each
/// DATA frame with its own syscall, so bigger frames cut a streaming server's writes (and
/// this side's reads) several times.
const MAX_FRAME: u32 = 1 << 20;

/// An endpoint with the client's transport settings.
fn endpoint(uri: String, timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(timeout)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME))
}

/// Where `--server` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A unix socket path (`unix:///var/run/cilium/hubble.sock`, `unix:rel/path`).
    Unix(PathBuf),
    /// An HTTP/2 URI (`http://host:port`; `tls://host:port` is given as `http://host:port`,
    /// TLS being the connection's business).
    Tcp(String),
}

/// Why talking to the server failed. Displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address {0:?}")]
    Address(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("failed to connect to '{server}': {reason}")]
    Connect { server: String, reason: String },
    #[error("{0}")]
    Status(String),
}

impl ClientError {
    pub(crate) fn from_status(s: tonic::Status) -> Self {
        // The transport's own reason (TLS alerts, resets) hides in the source chain.
        let mut msg = s.message().to_string();
        if let Some(src) = std::error::Error::source(&s) {
            let chain = error_chain(src);
            if chain.starts_with(&msg) {
                msg = chain;
            } else if !msg.contains(&chain) {
                msg = format!("{msg}: {chain}");
            }
        }
        if let Some(tls) = crate::tls::last_read_error()
            && !msg.contains(&tls)
        {
            msg = format!("{msg}: {tls}");
        }
        // Go's CLI prints only the message for an Unknown code.
        if s.code() == tonic::Code::Unknown {
            ClientError::Status(msg)
        } else {
            ClientError::Status(format!("rpc error: code = {:?} desc = {msg}", s.code()))
        }
    }
}

/// Parses a `--server` value.
pub fn parse_target(server: &str) -> Result<Target, ClientError> {
    let s = server.trim();
    if s.is_empty() {
        return Err(ClientError::Address(server.to_string()));
    }
    let s = s
        .strip_prefix(crate::tls::TLS_PREFIX)
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    if let Some(rest) = s.strip_prefix("unix://") {
        return Ok(Target::Unix(PathBuf::from(rest)));
    }
    if let Some(rest) = s.strip_prefix("unix:") {
        return Ok(Target::Unix(PathBuf::from(rest)));
    }
    let uri = if s.starts_with("http://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    match uri.parse::<Uri>() {
        Ok(u) if u.port_u16().is_some() && u.host().is_some() => Ok(Target::Tcp(uri)),
        _ => Err(ClientError::Address(server.to_string())),
    }
}

/// Connects to `server` within `timeout`, without TLS unless `server` starts with
/// `tls://` (then trusting the system's CAs).
pub async fn connect(server: &str, timeout: Duration) -> Result<Channel, ClientError> {
    let tls = crate::tls::ClientTlsArgs::default().client_tls(server)?;
    connect_tls(server, timeout, tls.as_ref()).await
}

/// Connects to `server` within `timeout`, over TLS when `tls` is given (never for a unix
/// socket, as Hubble).
pub async fn connect_tls(
    server: &str,
    timeout: Duration,
    tls: Option<&crate::tls::ClientTls>,
) -> Result<Channel, ClientError> {
    let conn_err = |e: &dyn std::error::Error| ClientError::Connect {
        server: server.to_string(),
        reason: error_chain(e),
    };
    let target = parse_target(server)?;
    let fut = async {
        match target {
            Target::Tcp(uri) if tls.is_some() => {
                let tls = tls.cloned().expect("checked");
                let ep =
                    endpoint(uri, timeout).map_err(|_| ClientError::Address(server.to_string()))?;
                ep.connect_with_connector(tower::service_fn(move |uri: Uri| {
                    let tls = tls.clone();
                    async move {
                        let host = uri.host().unwrap_or_default().to_string();
                        let port = uri.port_u16().unwrap_or(443);
                        let tcp = tokio::net::TcpStream::connect((
                            host.trim_start_matches('[').trim_end_matches(']'),
                            port,
                        ))
                        .await?;
                        tcp.set_nodelay(true)?;
                        let s = tls.handshake(&host, tcp).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await
                .map_err(|e| conn_err(&e))
            }
            Target::Tcp(uri) => {
                let ep = endpoint(uri, timeout)
                    .map_err(|_| ClientError::Address(server.to_string()))?
                    .tcp_nodelay(true);
                ep.connect().await.map_err(|e| conn_err(&e))
            }
            Target::Unix(path) => {
                // The URI is unused: the connector always dials the socket.
                let ep = endpoint("http://localhost".into(), timeout)
                    .map_err(|_| ClientError::Address(server.to_string()))?;
                ep.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await
                .map_err(|e| conn_err(&e))
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Connect {
            server: server.to_string(),
            reason: "timed out".to_string(),
        }),
    }
}

/// "a: b: c" from an error and its sources, without repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// The Hubble API version this client implements (the protos' Cilium release): servers of
/// a higher minor version may send what it does not know.
pub const API_VERSION: &str = "1.19.4";

/// Hubble's version-skew warning: the CLI warns when a server (or relay) reports a higher
/// `major.minor` than its own, in the `hubble-server-version` / `hubble-relay-version`
/// response headers.
pub fn version_warning(headers: &tonic::metadata::MetadataMap) -> Option<String> {
    let ours = major_minor(API_VERSION)?;
    for (header, what) in [
        ("hubble-relay-version", "Hubble Relay"),
        ("hubble-server-version", "Hubble Server"),
    ] {
        let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if major_minor(v).is_some_and(|theirs| theirs > ours) {
            return Some(format!(
                "Hubble CLI version is lower than {what}, API compatibility is not guaranteed, \
                 updating to a matching or higher version is recommended \
                 (hubble-cli-api-version={API_VERSION} {header}={v})"
            ));
        }
    }
    None
}

/// `(major, minor)` of a version like `v1.19.4-rc.1`, leniently as Go's semver.ParseTolerant.
fn major_minor(v: &str) -> Option<(u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// An Observer client with generous message limits.
pub fn observer(channel: Channel) -> ObserverClient<Channel> {
    ObserverClient::new(channel).max_decoding_message_size(MAX_MESSAGE)
}

/// A GetFlows stream.
pub struct FlowStream {
    inner: tonic::Streaming<GetFlowsResponse>,
    /// The `hubble-server-version` header, if the server sent one.
    pub server_version: Option<String>,
    /// Hubble's version-skew warning for this server, if it applies.
    pub version_warning: Option<String>,
}

/// Starts GetFlows.
pub async fn get_flows(channel: Channel, req: GetFlowsRequest) -> Result<FlowStream, ClientError> {
    let resp = observer(channel)
        .get_flows(req)
        .await
        .map_err(ClientError::from_status)?;
    let server_version = resp
        .metadata()
        .get("hubble-server-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let version_warning = version_warning(resp.metadata());
    Ok(FlowStream {
        inner: resp.into_inner(),
        server_version,
        version_warning,
    })
}

impl FlowStream {
    /// The next response; `None` at the end of the stream (a cancelled stream also ends).
    pub async fn next(&mut self) -> Option<Result<GetFlowsResponse, ClientError>> {
        next_of(&mut self.inner).await
    }

    /// The next response if one is already received, without waiting (`Ready(None)` = end).
    pub fn try_next(&mut self) -> Poll<Option<Result<GetFlowsResponse, ClientError>>> {
        try_next_of(&mut self.inner)
    }
}

/// A stream item as callers see it: a cancelled stream ends, it is not an error.
fn item<T>(r: Result<T, tonic::Status>) -> Option<Result<T, ClientError>> {
    match r {
        Ok(v) => Some(Ok(v)),
        Err(s) if s.code() == tonic::Code::Cancelled => None,
        Err(s) => Some(Err(ClientError::from_status(s))),
    }
}

async fn next_of<T>(s: &mut tonic::Streaming<T>) -> Option<Result<T, ClientError>> {
    item(s.next().await?)
}

fn try_next_of<T>(s: &mut tonic::Streaming<T>) -> Poll<Option<Result<T, ClientError>>> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match Pin::new(s).poll_next(&mut cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Ready(Some(r)) => Poll::Ready(item(r)),
    }
}

/// A GetFlows stream of responses still in protobuf form, for a caller that decodes them
/// elsewhere (another thread): receiving costs a copy, not a decode.
pub struct RawFlowStream {
    inner: tonic::Streaming<bytes::Bytes>,
    /// Hubble's version-skew warning for this server, if it applies.
    pub version_warning: Option<String>,
}

/// Starts GetFlows, keeping responses encoded.
pub async fn get_flows_raw(
    channel: Channel,
    req: GetFlowsRequest,
) -> Result<RawFlowStream, ClientError> {
    let resp = crate::wire::get_flows(channel, req, crate::wire::BytesDecoder)
        .await
        .map_err(ClientError::from_status)?;
    Ok(RawFlowStream {
        version_warning: version_warning(resp.metadata()),
        inner: resp.into_inner(),
    })
}

impl RawFlowStream {
    /// The next encoded response; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<bytes::Bytes, ClientError>> {
        next_of(&mut self.inner).await
    }

    /// The next response if one is already received, without waiting (`Ready(None)` = end).
    pub fn try_next(&mut self) -> Poll<Option<Result<bytes::Bytes, ClientError>>> {
        try_next_of(&mut self.inner)
    }
}

/// The health check result of `hubble status`: `Ok(None)` when SERVING, else the status text.
pub async fn health_check(
    channel: Channel,
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut hc = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: HEALTH_SERVICE.to_string(),
    });
    req.set_timeout(timeout);
    let resp = hc.check(req).await.map_err(ClientError::from_status)?;
    let st = resp.into_inner().status;
    if st == ServingStatus::Serving as i32 {
        Ok(None)
    } else {
        let name = ServingStatus::try_from(st)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| st.to_string());
        Ok(Some(format!("Unavailable: {name}")))
    }
}

/// The agent's kvstore health: `None` when the server has no kvstore (or cannot say),
/// `Some(true)` while it reaches its kvstore.
pub async fn kvstore_health(channel: Channel, timeout: Duration) -> Option<bool> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut hc = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: KVSTORE_HEALTH_SERVICE.to_string(),
    });
    req.set_timeout(timeout);
    let st = hc.check(req).await.ok()?.into_inner().status;
    Some(st == ServingStatus::Serving as i32)
}

/// A unary call's response with Hubble's version-skew warning, if it applies.
pub struct Unary<T> {
    pub body: T,
    pub version_warning: Option<String>,
}

impl<T> Unary<T> {
    fn from(resp: tonic::Response<T>) -> Self {
        Unary {
            version_warning: version_warning(resp.metadata()),
            body: resp.into_inner(),
        }
    }
}

/// GetNodes (relays answer it; agents say Unimplemented).
pub async fn get_nodes(
    channel: Channel,
    timeout: Duration,
) -> Result<Unary<Vec<hubble_api::observer::Node>>, ClientError> {
    let mut req = tonic::Request::new(hubble_api::observer::GetNodesRequest {});
    req.set_timeout(timeout);
    let resp = observer(channel)
        .get_nodes(req)
        .await
        .map_err(ClientError::from_status)?;
    let u = Unary::from(resp);
    Ok(Unary {
        body: u.body.nodes,
        version_warning: u.version_warning,
    })
}

/// GetNamespaces: namespaces with flows in the last hour.
pub async fn get_namespaces(
    channel: Channel,
    timeout: Duration,
) -> Result<Unary<Vec<hubble_api::observer::Namespace>>, ClientError> {
    let mut req = tonic::Request::new(hubble_api::observer::GetNamespacesRequest {});
    req.set_timeout(timeout);
    let resp = observer(channel)
        .get_namespaces(req)
        .await
        .map_err(ClientError::from_status)?;
    let u = Unary::from(resp);
    Ok(Unary {
        body: u.body.namespaces,
        version_warning: u.version_warning,
    })
}

/// ServerStatus.
pub async fn server_status(
    channel: Channel,
    timeout: Duration,
) -> Result<ServerStatusResponse, ClientError> {
    let mut req = tonic::Request::new(hubble_api::observer::ServerStatusRequest {});
    req.set_timeout(timeout);
    observer(channel)
        .server_status(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(ClientError::from_status)
}

/// A GetAgentEvents or GetDebugEvents stream.
pub struct EventStream<T> {
    inner: tonic::Streaming<T>,
    /// Hubble's version-skew warning for this server, if it applies.
    pub version_warning: Option<String>,
}

impl<T> EventStream<T> {
    fn new(resp: tonic::Response<tonic::Streaming<T>>) -> Self {
        let version_warning = version_warning(resp.metadata());
        EventStream {
            inner: resp.into_inner(),
            version_warning,
        }
    }

    /// The next event; `None` at the end of the stream (a cancelled stream also ends).
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        next_of(&mut self.inner).await
    }
}

/// Starts GetAgentEvents.
pub async fn get_agent_events(
    channel: Channel,
    req: hubble_api::observer::GetAgentEventsRequest,
) -> Result<EventStream<hubble_api::observer::GetAgentEventsResponse>, ClientError> {
    observer(channel)
        .get_agent_events(req)
        .await
        .map(EventStream::new)
        .map_err(ClientError::from_status)
}

/// Starts GetDebugEvents.
pub async fn get_debug_events(
    channel: Channel,
    req: hubble_api::observer::GetDebugEventsRequest,
) -> Result<EventStream<hubble_api::observer::GetDebugEventsResponse>, ClientError> {
    observer(channel)
        .get_debug_events(req)
        .await
        .map(EventStream::new)
        .map_err(ClientError::from_status)
}

/// Starts Peer.Notify: the server's peers now, then their changes.
pub async fn peer_notify(
    channel: Channel,
) -> Result<EventStream<hubble_api::peer::ChangeNotification>, ClientError> {
    hubble_api::peer::peer_client::PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .notify(hubble_api::peer::NotifyRequest {})
        .await
        .map(EventStream::new)
        .map_err(ClientError::from_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("unix:///var/run/cilium/hubble.sock").unwrap(),
            Target::Unix("/var/run/cilium/hubble.sock".into())
        );
        assert_eq!(
            parse_target("localhost:4245").unwrap(),
            Target::Tcp("http://localhost:4245".into())
        );
        assert_eq!(
            parse_target("[::1]:4244").unwrap(),
            Target::Tcp("http://[::1]:4244".into())
        );
        assert_eq!(
            parse_target("tls://relay:443").unwrap(),
            Target::Tcp("http://relay:443".into())
        );
        assert!(matches!(parse_target("nope"), Err(ClientError::Address(_))));
    }

    #[test]
    fn version_skew_warns_only_for_a_higher_minor() {
        let warn = |header: &str, v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert(
                tonic::metadata::MetadataKey::from_bytes(header.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
            version_warning(&m)
        };
        assert!(warn("hubble-server-version", "1.20.0").is_some());
        assert!(warn("hubble-relay-version", "v2.0.0-rc.1").is_some());
        assert!(warn("hubble-server-version", "1.19.99").is_none());
        assert!(warn("hubble-server-version", "1.18.2").is_none());
        assert!(warn("hubble-server-version", "0.1.0").is_none());
        assert!(warn("hubble-server-version", "garbage").is_none());
        let w = warn("hubble-server-version", "1.20.1").unwrap();
        assert!(
            w.starts_with("Hubble CLI version is lower than Hubble Server"),
            "{w}"
        );
    }
}
