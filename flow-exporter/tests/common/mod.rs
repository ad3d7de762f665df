//! A small in-process Hubble Observer for exporter tests: a growable list of flows served over
//! a unix socket with Hubble's GetFlows semantics (since, follow, first, filters, field mask).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubble::filter::FlowFilters;
use hubble_api::flow::{Endpoint, Flow, Verdict};
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::observer_server::{Observer, ObserverServer};
use hubble_api::observer::*;
use hubble_api::pbjson_types::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

pub const BASE_SECONDS: i64 = 1_741_079_702;

/// Flow `i`: times advance by 1 µs per two flows (pairs share a time), pods alternate
/// between namespaces, every third flow is DROPPED.
pub fn response(i: u64) -> GetFlowsResponse {
    let us = i / 2;
    let time = Timestamp {
        seconds: BASE_SECONDS + (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    };
    let ns = if i.is_multiple_of(5) {
        "kube-system"
    } else {
        "shop"
    };
    let verdict = if i.is_multiple_of(3) {
        Verdict::Dropped
    } else {
        Verdict::Forwarded
    };
    GetFlowsResponse {
        node_name: "kind-worker".into(),
        time: Some(time),
        response_types: Some(ResponseTypes::Flow(Flow {
            time: Some(time),
            verdict: verdict as i32,
            source: Some(Endpoint {
                namespace: ns.into(),
                pod_name: format!("pod-{i}"),
                labels: vec!["k8s:app=checkout".into()],
                ..Default::default()
            }),
            destination: Some(Endpoint {
                namespace: "payments".into(),
                pod_name: "payments-api".into(),
                ..Default::default()
            }),
            node_name: "kind-worker".into(),
            ..Default::default()
        })),
    }
}

/// The `i` of a line written for `response(i)` (from `pod-<i>`), if it holds a flow.
pub fn flow_index(line: &serde_json::Value) -> Option<u64> {
    line["flow"]["source"]["pod_name"]
        .as_str()?
        .strip_prefix("pod-")?
        .parse()
        .ok()
}

#[derive(Default)]
struct Inner {
    flows: Vec<GetFlowsResponse>,
    /// Index of the oldest flow still held (older ones were "overwritten").
    oldest: usize,
}

/// The server's state; survives restarts of the listener.
#[derive(Clone)]
pub struct FakeHubble {
    inner: Arc<Mutex<Inner>>,
    len_tx: Arc<watch::Sender<usize>>,
    /// Number of follow requests served so far.
    pub follows: Arc<watch::Sender<usize>>,
    /// Whether filters and field masks of requests are honoured (a server that ignores them
    /// shows what the exporter does itself).
    pub honour_request: bool,
}

impl FakeHubble {
    pub fn new(honour_request: bool) -> Self {
        FakeHubble {
            inner: Arc::default(),
            len_tx: Arc::new(watch::channel(0).0),
            follows: Arc::new(watch::channel(0).0),
            honour_request,
        }
    }

    pub fn push_range(&self, range: std::ops::Range<u64>) {
        let mut g = self.inner.lock().unwrap();
        g.flows.extend(range.map(response));
        let n = g.flows.len();
        drop(g);
        self.len_tx.send_replace(n);
    }

    /// Forgets flows before index `i`, as a full ring would.
    pub fn overwrite_before(&self, i: usize) {
        self.inner.lock().unwrap().oldest = i;
    }

    /// Waits until `n` follow requests were made.
    pub async fn wait_follows(&self, n: usize) {
        let mut rx = self.follows.subscribe();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|v| *v >= n))
            .await
            .expect("exporter did not connect")
            .unwrap();
    }

    /// Serves on `socket` until the returned handle is stopped (which ends every stream).
    pub fn serve(&self, socket: &Path) -> Server {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let svc = Svc {
            hubble: self.clone(),
            stop: stop_rx.clone(),
        };
        let mut stop = stop_rx;
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ObserverServer::new(svc))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        Server {
            stop: stop_tx,
            task,
            socket: socket.to_path_buf(),
        }
    }
}

impl FakeHubble {
    /// Serves over TLS on a loopback TCP port (mutual when `tls` has client CAs).
    pub async fn serve_tls(&self, tls: hubble::tls::ServerTls) -> (Server, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let svc = Svc {
            hubble: self.clone(),
            stop: stop_rx.clone(),
        };
        let mut stop = stop_rx;
        let incoming = hubble::tls::incoming(listener, &tls, "test server");
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ObserverServer::new(svc))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        let server = Server {
            stop: stop_tx,
            task,
            socket: PathBuf::new(),
        };
        (server, addr)
    }
}

pub struct Server {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

impl Server {
    /// Ends all streams and stops listening.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

struct Svc {
    hubble: FakeHubble,
    stop: watch::Receiver<bool>,
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn key(t: Option<&Timestamp>) -> (i64, i32) {
    t.map(|t| (t.seconds, t.nanos)).unwrap_or_default()
}

#[tonic::async_trait]
impl Observer for Svc {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    type GetAgentEventsStream = Stream<GetAgentEventsResponse>;
    type GetDebugEventsStream = Stream<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = req.into_inner();
        let h = self.hubble.clone();
        let filters = if h.honour_request {
            FlowFilters::compile(&req.whitelist, &req.blacklist)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        } else {
            FlowFilters::default()
        };
        let mask: Vec<String> = match (&req.field_mask, h.honour_request) {
            (Some(m), true) => m.paths.clone(),
            _ => Vec::new(),
        };
        let since = req.since.as_ref().map(|t| (t.seconds, t.nanos));
        let mut idx = {
            let g = h.inner.lock().unwrap();
            if req.first {
                g.oldest
            } else if let Some(s) = since {
                (g.oldest..g.flows.len())
                    .find(|&i| key(g.flows[i].time.as_ref()) >= s)
                    .unwrap_or(g.flows.len())
            } else {
                g.flows.len()
            }
        };
        let limit = if req.first { req.number } else { u64::MAX };
        if req.follow {
            h.follows.send_modify(|n| *n += 1);
        }
        let (tx, rx) = mpsc::channel(256);
        let mut len_rx = h.len_tx.subscribe();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let batch: Vec<GetFlowsResponse> = {
                    let g = h.inner.lock().unwrap();
                    let b = g.flows[idx.min(g.flows.len())..].to_vec();
                    idx = g.flows.len();
                    b
                };
                for mut r in batch {
                    if sent >= limit {
                        return;
                    }
                    if !filters.matches_response(&r) {
                        continue;
                    }
                    if !mask.is_empty() {
                        r = hubble::field_mask::FlowMask::new(&mask).apply(&r);
                    }
                    sent += 1;
                    tokio::select! {
                        res = tx.send(Ok(r)) => if res.is_err() { return },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                if !req.follow {
                    return;
                }
                tokio::select! {
                    _ = len_rx.changed() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_agent_events(
        &self,
        _req: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn get_debug_events(
        &self,
        _req: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn get_nodes(
        &self,
        _req: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented("GetNodes"))
    }

    async fn get_namespaces(
        &self,
        _req: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Err(Status::unimplemented("GetNamespaces"))
    }

    async fn server_status(
        &self,
        _req: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let g = self.hubble.inner.lock().unwrap();
        let seen = g.flows.len() as u64;
        let held = (g.flows.len() - g.oldest.min(g.flows.len())) as u64;
        Ok(Response::new(ServerStatusResponse {
            num_flows: held,
            max_flows: held.max(1),
            seen_flows: seen,
            ..Default::default()
        }))
    }
}

/// Every line of the exporter's files in `dir` (backups decompressed, oldest first), parsed.
/// Panics on a line that is not JSON or a file that ends mid-line.
pub fn read_all(dir: &Path, current: &str) -> Vec<serde_json::Value> {
    use std::io::Read;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != current && !n.ends_with(".tmp"))
        .collect();
    names.sort();
    names.push(current.to_string());
    let mut out = Vec::new();
    for n in names {
        let Ok(f) = std::fs::File::open(dir.join(&n)) else {
            continue;
        };
        let mut text = String::new();
        if n.ends_with(".gz") {
            flate2::read::GzDecoder::new(f)
                .read_to_string(&mut text)
                .unwrap();
        } else {
            let mut f = f;
            f.read_to_string(&mut text).unwrap();
        }
        assert!(text.is_empty() || text.ends_with('\n'), "{n} ends mid-line");
        for l in text.lines() {
            out.push(
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{n}: bad line {l:?}: {e}")),
            );
        }
    }
    out
}

/// True once `file` holds the line of flow `i` (lines are written in order, and the current
/// file always holds the newest line, so all earlier flows are written too).
pub fn has_flow(file: &Path, i: u64) -> bool {
    std::fs::read_to_string(file).is_ok_and(|s| s.contains(&format!("\"pod-{i}\"")))
}

/// Polls `f` every 20 ms for up to 20 s.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
