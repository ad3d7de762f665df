//! The `/metrics` HTTP endpoint (HTTP/1, plaintext, as Hubble Relay's).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::RelayMetrics;

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A connection that neither sends nor reads for this long is dropped.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Scrapers served at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// Serves `metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<RelayMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hubble-relay: metrics server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, m.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    metrics: Arc<RelayMetrics>,
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
    let text = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        // Reading /proc is blocking I/O: off the async workers.
        "/metrics" => match tokio::task::spawn_blocking(move || metrics.encode()).await {
            Ok(body) => reply(StatusCode::OK, CONTENT_TYPE, body),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                text,
                "metrics unavailable\n".into(),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /metrics\n".into(),
        ),
    })
}
