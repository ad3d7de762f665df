//! gRPC server metrics of the relay's API as go-grpc-prometheus counts them (the interceptors
//! Hubble Relay installs with `--metrics-listen-address`): calls started, calls handled by
//! status code, messages received and sent, per method of the services served. A tower
//! layer sees each call's path, counts the length-prefixed gRPC messages as they cross the
//! request and response bodies, and reads `grpc-status` from the trailers (or the headers of
//! a trailers-only response); a call dropped before its status counts as `Canceled`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::http;

/// One method of a service the relay serves, with go-grpc-prometheus's `grpc_type`.
pub struct Method {
    pub service: &'static str,
    pub name: &'static str,
    pub kind: &'static str,
}

const fn m(service: &'static str, name: &'static str, kind: &'static str) -> Method {
    Method {
        service,
        name,
        kind,
    }
}

/// Every method of the relay's main server, each with its series from the start (as
/// go-grpc-prometheus's `InitializeMetrics` does).
pub const METHODS: &[Method] = &[
    m("observer.Observer", "GetFlows", "server_stream"),
    m("observer.Observer", "GetAgentEvents", "server_stream"),
    m("observer.Observer", "GetDebugEvents", "server_stream"),
    m("observer.Observer", "GetNodes", "unary"),
    m("observer.Observer", "GetNamespaces", "unary"),
    m("observer.Observer", "ServerStatus", "unary"),
    m("grpc.health.v1.Health", "Check", "unary"),
    m("grpc.health.v1.Health", "Watch", "server_stream"),
    m(
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
    m(
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
];

/// gRPC status codes by number, named as Go's `codes.Code.String()`.
pub const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// The counters of one method.
#[derive(Default)]
pub struct MethodCounts {
    pub started: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub handled: [AtomicU64; CODES.len()],
}

/// The counters of every method of [`METHODS`], in that order.
pub struct GrpcMetrics {
    counts: Vec<MethodCounts>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        GrpcMetrics {
            counts: METHODS.iter().map(|_| MethodCounts::default()).collect(),
        }
    }
}

impl GrpcMetrics {
    /// Each method with its counters.
    pub fn methods(&self) -> impl Iterator<Item = (&'static Method, &MethodCounts)> {
        METHODS.iter().zip(&self.counts)
    }

    fn method_of(path: &str) -> Option<usize> {
        let (service, name) = path.strip_prefix('/')?.split_once('/')?;
        METHODS
            .iter()
            .position(|m| m.service == service && m.name == name)
    }
}

/// The tower layer counting calls into a [`GrpcMetrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub Option<Arc<GrpcMetrics>>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Option<Arc<GrpcMetrics>>,
}

impl<S> tower::Service<http::Request<Body>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = self.metrics.as_ref().and_then(|m| {
            let method = GrpcMetrics::method_of(req.uri().path())?;
            m.counts[method].started.fetch_add(1, Relaxed);
            Some(Arc::new(Call {
                metrics: m.clone(),
                method,
                handled: AtomicBool::new(false),
            }))
        });
        let Some(call) = call else {
            return Box::pin(inner.call(req));
        };
        let req = req.map(|b| {
            Body::new(Counted {
                inner: b,
                frames: Frames::default(),
                call: call.clone(),
                outgoing: false,
            })
        });
        Box::pin(async move {
            let resp = inner.call(req).await?;
            if let Some(code) = grpc_status(resp.headers()) {
                call.handled(code);
            }
            Ok(resp.map(|b| {
                Body::new(Counted {
                    inner: b,
                    frames: Frames::default(),
                    call,
                    outgoing: true,
                })
            }))
        })
    }
}

/// One call in progress; counts `Canceled` if it goes away without a status.
struct Call {
    metrics: Arc<GrpcMetrics>,
    method: usize,
    handled: AtomicBool,
}

impl Call {
    fn counts(&self) -> &MethodCounts {
        &self.metrics.counts[self.method]
    }

    fn handled(&self, code: usize) {
        if !self.handled.swap(true, Relaxed) {
            self.counts().handled[code].fetch_add(1, Relaxed);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.handled(CANCELED);
    }
}

/// The code of a `grpc-status` header (Unknown when it is not a known code).
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    Some(match v.trim().parse::<usize>() {
        Ok(c) if c < CODES.len() => c,
        _ => UNKNOWN,
    })
}

/// Where a body is in gRPC's framing: each message is a 1-byte flag, a 4-byte big-endian
/// length and that many bytes.
#[derive(Default)]
struct Frames {
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Frames {
    /// Reads one chunk of the body; returns the number of messages it completed.
    fn take(&mut self, mut chunk: &[u8]) -> u64 {
        let mut done = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(chunk.len() as u64)) as usize;
                self.remaining -= n as u64;
                chunk = &chunk[n..];
                if self.remaining == 0 {
                    done += 1;
                }
                continue;
            }
            let n = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&chunk[..n]);
            self.header_len += n;
            chunk = &chunk[n..];
            if self.header_len == 5 {
                self.header_len = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.remaining = u64::from(len);
                if len == 0 {
                    done += 1;
                }
            }
        }
        done
    }
}

/// A request (incoming) or response (outgoing) body whose messages are counted.
struct Counted {
    inner: Body,
    frames: Frames,
    call: Arc<Call>,
    outgoing: bool,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                let n = this.frames.take(data.chunk());
                let counts = this.call.counts();
                let counter = if this.outgoing {
                    &counts.sent
                } else {
                    &counts.received
                };
                counter.fetch_add(n, Relaxed);
            } else if this.outgoing
                && let Some(code) = f.trailers_ref().and_then(grpc_status)
            {
                this.call.handled(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_chunks() {
        let mut f = Frames::default();
        // Two messages of 3 bytes, one empty, split anywhere.
        let body = [
            0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 5, 6,
        ];
        assert_eq!(f.take(&body), 3);
        for split in 1..body.len() {
            let mut f = Frames::default();
            let (a, b) = body.split_at(split);
            assert_eq!(f.take(a) + f.take(b), 3, "split at {split}");
        }
        let mut f = Frames::default();
        assert_eq!(body.iter().map(|b| f.take(&[*b])).sum::<u64>(), 3);
    }

    #[test]
    fn paths_and_codes() {
        assert_eq!(
            GrpcMetrics::method_of("/observer.Observer/GetFlows"),
            Some(0)
        );
        assert_eq!(
            GrpcMetrics::method_of("/grpc.health.v1.Health/Watch"),
            Some(7)
        );
        assert_eq!(GrpcMetrics::method_of("/observer.Observer/Nope"), None);
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(grpc_status(&h).map(|c| CODES[c]), Some("PermissionDenied"));
        h.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_status(&h).map(|c| CODES[c]), Some("Unknown"));
    }
}
