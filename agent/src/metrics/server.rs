//! The `/metrics` HTTP endpoint: hyper HTTP/1 (over TLS with --metrics-server-enable-tls) on
//! a thread of its own with a small runtime, so scrapes never run on the datapath loop's
//! threads; the dynamic metrics file is followed on the same runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hubble::tls::ServerTls;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, oneshot};
use tokio_rustls::TlsAcceptor;

use super::{Metrics, dynamic, exposition};

/// Connections served at once; beyond it new ones are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Longest life of one connection, TLS handshake included: a client that neither sends nor
/// reads is dropped.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Failed TLS handshakes are reported at most this often.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// A bound, not yet serving metrics listener (bound before the agent changes netns).
pub struct MetricsServer {
    listener: std::net::TcpListener,
    /// OpenMetrics for scrapers that ask for it (`--enable-hubble-open-metrics`).
    open_metrics: bool,
    /// HTTPS, with client certificates required when it has client CAs.
    tls: Option<ServerTls>,
    /// The dynamic metrics file to follow.
    config: Option<dynamic::ConfigFile>,
}

/// The serving thread; stops on [`RunningMetricsServer::stop`] or drop.
pub struct RunningMetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Where `addr` listens: as given, except `:PORT` without TLS, which is 127.0.0.1:PORT (said
/// in one line): plaintext stays on this host unless an address is named.
pub fn listen_address(addr: &str, tls: bool) -> Result<String> {
    crate::observer::server::parse_listen_address(addr)
        .map_err(|_| anyhow::anyhow!("invalid --metrics-server address {addr:?}"))?;
    let (addr, notice) = hubble::listen::loopback_unless_tls(addr, tls);
    if let Some(n) = notice {
        eprintln!("hubble-agent: no TLS for metrics: {n}");
    }
    Ok(addr)
}

impl MetricsServer {
    /// Binds `addr` (`:9965`, `HOST:PORT`); the error names the address.
    pub fn bind(addr: &str) -> Result<Self> {
        let sa = crate::observer::server::parse_listen_address(addr)
            .map_err(|_| anyhow::anyhow!("invalid --metrics-server address {addr:?}"))?;
        let listener = std::net::TcpListener::bind(sa)
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            open_metrics: false,
            tls: None,
            config: None,
        })
    }

    /// Serves OpenMetrics to scrapers whose Accept header asks for it (else the Prometheus
    /// text format, Cilium's default).
    pub fn open_metrics(mut self, on: bool) -> Self {
        self.open_metrics = on;
        self
    }

    /// Serves HTTPS with `tls` (plain HTTP with `None`).
    pub fn tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Follows the dynamic metrics file while serving.
    pub fn watch(mut self, file: dynamic::ConfigFile) -> Self {
        self.config = Some(file);
        self
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves `metrics` on a thread of its own.
    pub fn start(self, metrics: Metrics) -> Result<RunningMetricsServer> {
        let addr = self.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the metrics runtime")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let how = match &self.tls {
            None => "http",
            Some(_) => "https",
        };
        let mutual = if self.tls.as_ref().is_some_and(ServerTls::is_mutual) {
            " (client certificates required)"
        } else {
            ""
        };
        let Self {
            listener: std_listener,
            open_metrics,
            tls,
            config,
        } = self;
        let thread = std::thread::Builder::new()
            .name("metrics-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("hubble-agent: metrics server: {e}");
                            return;
                        }
                    };
                    if let Some(file) = config {
                        tokio::spawn(dynamic::watch(file, metrics.clone()));
                    }
                    let conn = Connection {
                        metrics,
                        open_metrics,
                        tls: tls.map(|t| t.with_alpn(&[b"http/1.1"]).acceptor()),
                        failures: Arc::new(Failures::default()),
                    };
                    serve(listener, conn, stopped).await
                })
            })
            .context("starting the metrics server thread")?;
        eprintln!("hubble-agent: metrics on {how}://{addr}/metrics{mutual}");
        Ok(RunningMetricsServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl RunningMetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningMetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What serving one connection needs.
#[derive(Clone)]
struct Connection {
    metrics: Metrics,
    open_metrics: bool,
    /// HTTP/1.1 by ALPN: the shared settings offer h2, for gRPC.
    tls: Option<TlsAcceptor>,
    failures: Arc<Failures>,
}

async fn serve(
    listener: tokio::net::TcpListener,
    conn: Connection,
    stopped: oneshot::Receiver<()>,
) {
    tokio::pin!(stopped);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hubble-agent: metrics server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // At the cap, the newest connection is closed: scrapes are few, a flood is not one.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let c = conn.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, c.serve(stream, peer)).await;
        });
    }
}

impl Connection {
    /// One connection: the TLS handshake if any, then HTTP/1.
    async fn serve(self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let Some(tls) = &self.tls else {
            return self.serve_http(stream).await;
        };
        match tls.accept(stream).await {
            Ok(s) => self.serve_http(s).await,
            Err(e) => self.failures.note(&peer, &e),
        }
    }

    async fn serve_http<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (m, om) = (self.metrics, self.open_metrics);
        let svc = hyper::service::service_fn(move |req| handle(req, m.clone(), om));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
            .await;
    }
}

/// Failed TLS handshakes (no client certificate, wrong CA, a plain-HTTP client): one line
/// each, at most every [`REPORT_INTERVAL`], with how many it stands for.
#[derive(Default)]
struct Failures {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Failures {
    fn note(&self, peer: &SocketAddr, e: &std::io::Error) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 += 1;
        if st.0.is_some_and(|t| t.elapsed() < REPORT_INTERVAL) {
            return;
        }
        let more = st.1 - 1;
        *st = (Some(Instant::now()), 0);
        drop(st);
        let more = if more > 0 {
            format!(" ({more} more before)")
        } else {
            String::new()
        };
        eprintln!("hubble-agent: metrics server: TLS handshake with {peer} failed: {e}{more}");
    }
}

async fn handle(
    req: Request<Incoming>,
    metrics: Metrics,
    open_metrics: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(ctype),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = exposition::negotiate(accept, open_metrics);
            // Encoding takes the flow metrics lock: off the async worker.
            let text = tokio::task::spawn_blocking(move || metrics.encode(format))
                .await
                .unwrap_or_default();
            reply(StatusCode::OK, format.content_type(), text)
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "hubble-agent metrics: GET /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::listen_address;

    #[test]
    fn plaintext_stays_on_loopback_unless_an_address_is_named() {
        assert_eq!(listen_address(":9965", false).unwrap(), "127.0.0.1:9965");
        assert_eq!(listen_address(":9965", true).unwrap(), ":9965");
        assert_eq!(
            listen_address("0.0.0.0:9965", false).unwrap(),
            "0.0.0.0:9965"
        );
        assert_eq!(listen_address("[::1]:9965", false).unwrap(), "[::1]:9965");
        let e = listen_address("nine", false).unwrap_err().to_string();
        assert_eq!(e, "invalid --metrics-server address \"nine\"");
    }
}
