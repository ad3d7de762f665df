//! The `/metrics` HTTP endpoint: hyper HTTP/1 on a thread of its own with a small runtime,
//! so scrapes never run on the datapath loop's threads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::oneshot;

use super::{Metrics, exposition};

/// A bound, not yet serving metrics listener (bound before the agent changes netns).
pub struct MetricsServer {
    listener: std::net::TcpListener,
    /// OpenMetrics for scrapers that ask for it (`--enable-hubble-open-metrics`).
    open_metrics: bool,
}

/// The serving thread; stops on [`RunningMetricsServer::stop`] or drop.
pub struct RunningMetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
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
        })
    }

    /// Serves OpenMetrics to scrapers whose Accept header asks for it (else the Prometheus
    /// text format, Cilium's default).
    pub fn open_metrics(mut self, on: bool) -> Self {
        self.open_metrics = on;
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
        let (std_listener, open_metrics) = (self.listener, self.open_metrics);
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
                    serve(listener, metrics, open_metrics, stopped).await
                })
            })
            .context("starting the metrics server thread")?;
        eprintln!("hubble-agent: metrics on http://{addr}/metrics");
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

async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    open_metrics: bool,
    stopped: oneshot::Receiver<()>,
) {
    tokio::pin!(stopped);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hubble-agent: metrics server: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, m.clone(), open_metrics));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            // Bounded: a client that neither sends nor reads is dropped.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
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
