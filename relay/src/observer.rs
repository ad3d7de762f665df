//! The relay's Observer semantics over its peers, free of the gRPC server: GetFlows fan-in
//! (one stream per connected peer, merged through the sort window, node status events for
//! nodes that are unavailable or fail, their errors coalesced), ServerStatus sums, GetNodes
//! and GetNamespaces.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hubble::client;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{
    GetFlowsRequest, GetFlowsResponse, Namespace, Node, ServerStatusResponse, Tls,
};
use hubble_api::relay::{NodeState, NodeStatusEvent};
use pbjson_types::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::Status;

use crate::node_errors::{DEFAULT_ERROR_AGGREGATION_WINDOW, NodeError, NodeErrors};
use crate::peers::{PeerSnapshot, Peers};
use crate::sort::{SortBuffer, Source};
use crate::wire::RawResponse;
use bytes::Bytes;

/// During a follow request, peers that connected since are joined this often.
pub const PEER_UPDATE_INTERVAL: Duration = Duration::from_secs(2);
/// Batches in flight from all peers of one request to its merge task.
const PEER_QUEUE: usize = 32;
/// Most responses a peer's task hands to the merge at once (all those already received).
const PEER_BATCH: usize = 128;
/// Most merged responses handed to the client's stream at once.
const CLIENT_BATCH: usize = 256;
/// Flows a request without --follow buffers for sorting (at least; more with a larger
/// --sort-buffer-len-max): a few MiB, plenty for peers answering at full speed.
pub const FINITE_SORT_BUFFER_LEN: usize = 8192;

/// The merge settings (`--sort-buffer-len-max`, `--sort-buffer-drain-timeout`).
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub sort_buffer_len_max: usize,
    pub sort_buffer_drain_timeout: Duration,
    /// A peer stream of a non-follow request silent this long is cut and reported.
    pub stream_idle_timeout: Duration,
    /// Node name put on the relay's own node status events.
    pub relay_name: String,
    /// Node errors with the same message within this window go out as one event.
    pub error_aggregation_window: Duration,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            sort_buffer_len_max: 100,
            sort_buffer_drain_timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(5),
            relay_name: "hubble-relay".into(),
            error_aggregation_window: DEFAULT_ERROR_AGGREGATION_WINDOW,
        }
    }
}

/// The relay's Observer.
pub struct RelayObserver {
    peers: Arc<Peers>,
    opts: MergeOptions,
    version: String,
}

enum PeerMsg {
    /// The peer accepted the request: its stream is open.
    Open(Source),
    /// Responses of one peer, in the order it sent them.
    Batch(Source, Vec<RawResponse>),
    End(Source),
    Failed(Source, String),
}

/// What goes to the client: encoded GetFlowsResponses in order, or the end with an error.
/// Batched, so a busy stream costs one channel operation per batch rather than per flow.
pub type Reply = Result<Vec<Bytes>, Status>;

impl RelayObserver {
    pub fn new(peers: Arc<Peers>, opts: MergeOptions) -> Self {
        RelayObserver {
            peers,
            opts,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Checks a GetFlows request the way an agent would, so a bad one fails once, here.
    pub fn validate(req: &GetFlowsRequest) -> Result<(), Status> {
        if req.first && req.follow {
            return Err(Status::invalid_argument(
                "first cannot be specified with follow",
            ));
        }
        let mask = req.field_mask.as_ref().map_or(&[][..], |m| &m.paths);
        hubble::limits::check_field_mask(mask)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        hubble::filter::FlowFilters::compile(&req.whitelist, &req.blacklist).map_err(|e| {
            Status::invalid_argument(match e {
                hubble::filter::FilterError::Limit(m) => m,
                e => format!("invalid filter: {e}"),
            })
        })?;
        Ok(())
    }

    /// Runs one GetFlows request to its end (or until `tx` is closed by the client).
    pub async fn get_flows(&self, req: GetFlowsRequest, tx: mpsc::Sender<Reply>) {
        let mut m = Merge::new(self, &req, tx);
        m.run().await;
    }

    /// ServerStatus of every connected peer, summed.
    pub async fn server_status(&self) -> ServerStatusResponse {
        let peers = self.peers.list();
        let statuses = self.statuses(&peers).await;
        let mut out = ServerStatusResponse {
            version: self.version.clone(),
            ..Default::default()
        };
        let mut connected = 0u32;
        let mut unavailable = Vec::new();
        for (p, st) in peers.iter().zip(statuses) {
            match st {
                Some(st) => {
                    connected += 1;
                    out.num_flows += st.num_flows;
                    out.max_flows += st.max_flows;
                    out.seen_flows += st.seen_flows;
                    out.uptime_ns = out.uptime_ns.max(st.uptime_ns);
                    out.flows_rate += st.flows_rate;
                }
                None => unavailable.push(p.name.clone()),
            }
        }
        out.num_connected_nodes = Some(pbjson_types::UInt32Value { value: connected });
        out.num_unavailable_nodes = Some(pbjson_types::UInt32Value {
            value: unavailable.len() as u32,
        });
        out.unavailable_nodes = unavailable;
        out
    }

    /// Every known peer with its state and, when connected, its counters.
    pub async fn nodes(&self) -> Vec<Node> {
        let peers = self.peers.list();
        let statuses = self.statuses(&peers).await;
        peers
            .into_iter()
            .zip(statuses)
            .map(|(p, st)| {
                let state = match (&st, p.state) {
                    (Some(_), _) => NodeState::NodeConnected,
                    (None, NodeState::NodeConnected) => NodeState::NodeError,
                    (None, _) => NodeState::NodeUnavailable,
                };
                let st = st.or(p.status).unwrap_or_default();
                Node {
                    name: p.name,
                    version: st.version,
                    address: p.address,
                    state: state as i32,
                    tls: Some(Tls {
                        enabled: p.tls_server_name.is_some(),
                        server_name: p.tls_server_name.unwrap_or_default(),
                    }),
                    uptime_ns: st.uptime_ns,
                    num_flows: st.num_flows,
                    max_flows: st.max_flows,
                    seen_flows: st.seen_flows,
                }
            })
            .collect()
    }

    /// The namespaces of every connected peer, merged and sorted.
    pub async fn namespaces(&self) -> Vec<Namespace> {
        let peers = self.peers.list();
        let timeout = self.peers.options().dial_timeout;
        let mut set = JoinSet::new();
        for p in peers {
            let Some(ch) = p.channel else { continue };
            set.spawn(async move {
                let mut req = tonic::Request::new(hubble_api::observer::GetNamespacesRequest {});
                req.set_timeout(timeout);
                let mut c = client::observer(ch);
                let fut = c.get_namespaces(req);
                match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(r)) => r.into_inner().namespaces,
                    _ => Vec::new(),
                }
            });
        }
        let mut all = BTreeSet::new();
        while let Some(r) = set.join_next().await {
            for ns in r.unwrap_or_default() {
                all.insert((ns.cluster, ns.namespace));
            }
        }
        all.into_iter()
            .map(|(cluster, namespace)| Namespace { cluster, namespace })
            .collect()
    }

    /// ServerStatus of each peer (None: not connected or no answer in time), in order.
    async fn statuses(&self, peers: &[PeerSnapshot]) -> Vec<Option<ServerStatusResponse>> {
        let timeout = self.peers.options().dial_timeout;
        let mut set = JoinSet::new();
        for (i, p) in peers.iter().enumerate() {
            let Some(ch) = p.channel.clone() else {
                continue;
            };
            set.spawn(async move { (i, client::server_status(ch, timeout).await.ok()) });
        }
        let mut out = vec![None; peers.len()];
        while let Some(r) = set.join_next().await {
            if let Ok((i, st)) = r {
                out[i] = st;
            }
        }
        out
    }
}

/// One GetFlows request in progress.
struct Merge<'a> {
    obs: &'a RelayObserver,
    req: &'a GetFlowsRequest,
    tx: mpsc::Sender<Reply>,
    buf: SortBuffer<RawResponse>,
    /// Source index → peer name.
    names: Vec<String>,
    /// Peer names with a live stream in this request.
    active: HashMap<String, Source>,
    /// Newest response time seen per peer (where a rejoin resumes), ns since the epoch.
    last_seen: HashMap<String, i128>,
    tasks: JoinSet<()>,
    peer_tx: mpsc::Sender<PeerMsg>,
    peer_rx: mpsc::Receiver<PeerMsg>,
    started_at: Timestamp,
    /// Merged responses not yet handed to the client's stream.
    out: Vec<Bytes>,
    /// Peers started together, announced as connected (one node status event) once each
    /// has its stream open or has failed: a client told a node is connected does not miss
    /// its next flows.
    announce: Vec<Vec<Source>>,
    /// Per source: stream open; stream over (ended or failed).
    open: Vec<bool>,
    gone: Vec<bool>,
    /// The first group is not announced yet.
    initial_pending: bool,
    /// Failed peers' errors being coalesced.
    errors: NodeErrors,
    client_gone: bool,
}

impl<'a> Merge<'a> {
    fn new(obs: &'a RelayObserver, req: &'a GetFlowsRequest, tx: mpsc::Sender<Reply>) -> Self {
        let (peer_tx, peer_rx) = mpsc::channel(PEER_QUEUE);
        // `number` (`--last`/`--first` N) is each peer's business: as with Hubble Relay, the
        // client gets N flows per node, merged in time order.
        Merge {
            obs,
            req,
            tx,
            // Finite streams too go through a bounded window, a longer one so that peers
            // answering at full speed still merge exactly: a slow peer's flows go out late
            // (each peer's in its order), they do not hold everyone's in memory; a peer
            // silent for the idle timeout is cut and reported.
            buf: SortBuffer::new(
                if req.follow {
                    obs.opts.sort_buffer_len_max
                } else {
                    obs.opts.sort_buffer_len_max.max(FINITE_SORT_BUFFER_LEN)
                },
                obs.opts.sort_buffer_drain_timeout,
            ),
            names: Vec::new(),
            active: HashMap::new(),
            last_seen: HashMap::new(),
            tasks: JoinSet::new(),
            peer_tx,
            peer_rx,
            started_at: now_ts(),
            out: Vec::new(),
            announce: Vec::new(),
            open: Vec::new(),
            gone: Vec::new(),
            initial_pending: false,
            errors: NodeErrors::new(obs.opts.error_aggregation_window),
            client_gone: false,
        }
    }

    async fn run(&mut self) {
        let peers = self.obs.peers.list();
        let (up, down): (Vec<_>, Vec<_>) = peers.into_iter().partition(|p| p.channel.is_some());
        if !down.is_empty() {
            let names = down.iter().map(|p| p.name.clone()).collect();
            self.status(NodeState::NodeUnavailable, names, String::new());
        }
        let group = up
            .into_iter()
            .filter_map(|p| self.start_peer(p, self.req.clone()))
            .collect();
        self.announce.push(group);
        self.initial_pending = true;
        self.announce_open();
        self.send_out().await;
        let mut changes = self.obs.peers.subscribe();
        let mut rejoin = tokio::time::interval(PEER_UPDATE_INTERVAL);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rejoin.reset();
        let tx = self.tx.clone();
        // One timer for the window, moved only when the deadline changes (registering a
        // fresh timer on every wake-up costs more than the merge itself).
        let mut deadline = self.buf.deadline();
        let timer = tokio::time::sleep_until(far_future(deadline).into());
        tokio::pin!(timer);
        let mut errors_due = self.errors.deadline();
        let errors_timer = tokio::time::sleep_until(far_future(errors_due).into());
        tokio::pin!(errors_timer);
        let mut batch = Vec::with_capacity(PEER_QUEUE);
        while !self.client_gone {
            if !self.req.follow && self.buf.live_sources() == 0 {
                break;
            }
            let d = self.buf.deadline();
            if d != deadline {
                deadline = d;
                timer.as_mut().reset(far_future(d).into());
            }
            let d = self.errors.deadline();
            if d != errors_due {
                errors_due = d;
                errors_timer.as_mut().reset(far_future(d).into());
            }
            tokio::select! {
                // Everything already queued is taken before sorting out what can go.
                n = self.peer_rx.recv_many(&mut batch, PEER_QUEUE) => {
                    if n == 0 { break }
                    for msg in batch.drain(..) {
                        self.handle(msg);
                    }
                    self.announce_open();
                }
                _ = &mut timer, if deadline.is_some() && !self.initial_pending => {}
                _ = &mut errors_timer, if errors_due.is_some() => {
                    if let Some(e) = self.errors.due(Instant::now()) {
                        self.node_error(e);
                    }
                }
                _ = rejoin.tick(), if self.req.follow => self.join_new_peers(),
                r = changes.changed(), if self.req.follow => {
                    if r.is_err() { break }
                    self.join_new_peers();
                }
                _ = tx.closed() => break,
            }
            // Flows wait for the first connected event (at most the dial timeout).
            if self.initial_announced() {
                self.flush();
            }
            self.send_out().await;
        }
        self.tasks.abort_all();
        self.gone.iter_mut().for_each(|g| *g = true);
        self.announce_open();
        if self.client_gone || self.tx.is_closed() {
            return;
        }
        if let Some(e) = self.errors.take() {
            self.node_error(e);
        }
        while let Some(r) = self.buf.pop_any() {
            if !self.emit(r) {
                break;
            }
            if self.out.len() >= CLIENT_BATCH {
                self.send_out().await;
            }
        }
        self.send_out().await;
    }

    /// Emits the connected events of the groups whose peers have all opened or failed.
    fn announce_open(&mut self) {
        while let Some(group) = self.announce.first() {
            if !group.iter().all(|&s| self.open[s] || self.gone[s]) {
                break;
            }
            let group = self.announce.remove(0);
            self.initial_pending = false;
            let names: Vec<String> = group
                .into_iter()
                .filter(|&s| self.open[s])
                .map(|s| self.names[s].clone())
                .collect();
            if !names.is_empty() {
                self.status(NodeState::NodeConnected, names, String::new());
            }
        }
    }

    /// The peers the request started with are announced.
    fn initial_announced(&self) -> bool {
        !self.initial_pending
    }

    /// Hands the merged responses to the client's stream (waits while it is full).
    async fn send_out(&mut self) {
        if self.out.is_empty() || self.client_gone {
            return;
        }
        let out = std::mem::replace(&mut self.out, Vec::with_capacity(CLIENT_BATCH));
        if self.tx.send(Ok(out)).await.is_err() {
            self.client_gone = true;
        }
    }

    fn handle(&mut self, msg: PeerMsg) {
        match msg {
            PeerMsg::Batch(s, rs) => {
                let name = &self.names[s];
                let now = Instant::now();
                let mut newest = i128::MIN;
                for mut r in rs {
                    if !r.has_node_name {
                        r.bytes = r.clone().with_node_name(name);
                        r.has_node_name = true;
                    }
                    newest = newest.max(r.time);
                    self.buf.push(s, r.time, r, now);
                }
                if newest != i128::MIN {
                    match self.last_seen.get_mut(name) {
                        Some(l) => *l = (*l).max(newest),
                        None => {
                            self.last_seen.insert(name.clone(), newest);
                        }
                    }
                }
            }
            PeerMsg::Open(s) => self.open[s] = true,
            PeerMsg::End(s) => {
                self.gone[s] = true;
                self.buf.end_source(s);
                self.active.remove(&self.names[s]);
            }
            PeerMsg::Failed(s, err) => {
                self.gone[s] = true;
                self.buf.end_source(s);
                let name = self.names[s].clone();
                self.active.remove(&name);
                self.obs.peers.report_failure(&name, &err);
                if let Some(e) = self.errors.push(vec![name], err, now_ts(), Instant::now()) {
                    self.node_error(e);
                }
            }
        }
    }

    /// Moves what the sort window lets go to the client's batch.
    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(r) = self.buf.pop(now) {
            if !self.emit(r) {
                return;
            }
        }
    }

    /// Queues one merged response; false when the client is gone.
    fn emit(&mut self, r: RawResponse) -> bool {
        if self.client_gone {
            return false;
        }
        self.out.push(r.bytes);
        true
    }

    /// Queues a node status event (after the flows already merged).
    fn status(&mut self, state: NodeState, node_names: Vec<String>, message: String) {
        self.status_at(state, node_names, message, now_ts());
    }

    /// Queues a NODE_ERROR event (the aggregation let it go).
    fn node_error(&mut self, e: NodeError) {
        self.status_at(NodeState::NodeError, e.node_names, e.message, e.time);
    }

    fn status_at(
        &mut self,
        state: NodeState,
        node_names: Vec<String>,
        message: String,
        time: Timestamp,
    ) {
        let r = RawResponse::encode(&GetFlowsResponse {
            node_name: self.obs.opts.relay_name.clone(),
            time: Some(time),
            response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
                state_change: state as i32,
                node_names,
                message,
            })),
        });
        self.out.push(r);
    }

    /// Follow requests: peers connected since the request started (or reconnected) join,
    /// resuming after the newest flow this request saw from them.
    fn join_new_peers(&mut self) {
        let fresh: Vec<_> = self
            .obs
            .peers
            .list()
            .into_iter()
            .filter(|p| p.channel.is_some() && !self.active.contains_key(&p.name))
            .collect();
        if fresh.is_empty() {
            return;
        }
        let mut group = Vec::new();
        for p in fresh {
            let mut req = self.req.clone();
            req.number = 0;
            req.since = Some(match self.last_seen.get(&p.name) {
                Some(t) => from_key(t + 1),
                None => self.started_at,
            });
            group.extend(self.start_peer(p, req));
        }
        self.announce.push(group);
        self.announce_open();
    }

    /// Starts the request on a connected peer: its new source.
    fn start_peer(&mut self, p: PeerSnapshot, req: GetFlowsRequest) -> Option<Source> {
        let ch = p.channel?;
        let s = self.buf.add_source();
        self.open.push(false);
        self.gone.push(false);
        self.names.push(p.name.clone());
        self.active.insert(p.name.clone(), s);
        let tx = self.peer_tx.clone();
        let opts = self.obs.opts.clone();
        let dial_timeout = self.obs.peers.options().dial_timeout;
        let follow = req.follow;
        let mut down = p.down;
        self.tasks.spawn(async move {
            let msg = match fetch(s, ch, req, &tx, follow, dial_timeout, &opts, &mut down).await {
                Ok(()) => PeerMsg::End(s),
                Err(e) => PeerMsg::Failed(s, e),
            };
            let _ = tx.send(msg).await;
        });
        Some(s)
    }
}

/// Streams one peer's GetFlows into the merge, in batches of what has already arrived.
/// Ends Ok at the end of the peer's stream.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    s: Source,
    ch: tonic::transport::Channel,
    req: GetFlowsRequest,
    tx: &mpsc::Sender<PeerMsg>,
    follow: bool,
    dial_timeout: Duration,
    opts: &MergeOptions,
    down: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let call = crate::wire::get_flows(ch, req);
    let mut stream = match tokio::time::timeout(dial_timeout, call).await {
        Err(_) => return Err("timed out waiting for GetFlows".into()),
        Ok(Err(st)) => return Err(format!("GetFlows: {}", st.message())),
        Ok(Ok(s)) => s,
    };
    if tx.send(PeerMsg::Open(s)).await.is_err() {
        return Ok(());
    }
    let mut batch = Vec::with_capacity(PEER_BATCH);
    loop {
        let next = async {
            let next = std::future::poll_fn(|cx| poll_batch(&mut stream, &mut batch, cx));
            if follow {
                Ok(next.await)
            } else {
                tokio::time::timeout(opts.stream_idle_timeout, next).await
            }
        };
        let end = tokio::select! {
            r = next => match r {
                Err(_) => return Err(format!("no response for {:?}", opts.stream_idle_timeout)),
                Ok(end) => end,
            },
            _ = async { drop(down.wait_for(|d| *d).await) } => {
                return Err("connection lost".into())
            }
        };
        if !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(PEER_BATCH));
            if tx.send(PeerMsg::Batch(s, full)).await.is_err() {
                return Ok(());
            }
        }
        match end {
            None => {}
            // A follow stream only ends when the agent goes away.
            Some(Ok(())) if follow => return Err("stream ended".into()),
            Some(Ok(())) => return Ok(()),
            Some(Err(st)) if st.code() == tonic::Code::Cancelled && !follow => return Ok(()),
            Some(Err(st)) => return Err(st.message().to_string()),
        }
    }
}

/// Reads every response already received (up to [`PEER_BATCH`]) into `batch`; ready once
/// there is at least one, or at the end of the stream (`Some(Ok)`) or its failure.
fn poll_batch(
    stream: &mut tonic::Streaming<RawResponse>,
    batch: &mut Vec<RawResponse>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Option<Result<(), Status>>> {
    use std::task::Poll;
    use tokio_stream::Stream;
    loop {
        match std::pin::Pin::new(&mut *stream).poll_next(cx) {
            Poll::Ready(Some(Ok(r))) => {
                batch.push(r);
                if batch.len() >= PEER_BATCH {
                    return Poll::Ready(None);
                }
            }
            Poll::Ready(Some(Err(st))) => return Poll::Ready(Some(Err(st))),
            Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
            Poll::Pending if batch.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(None),
        }
    }
}

/// The timer's instant for a deadline (none: far enough never to fire).
fn far_future(deadline: Option<Instant>) -> Instant {
    deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))
}

/// A timestamp from nanoseconds since the epoch.
fn from_key(k: i128) -> Timestamp {
    Timestamp {
        seconds: k.div_euclid(1_000_000_000) as i64,
        nanos: k.rem_euclid(1_000_000_000) as i32,
    }
}

/// The current wall-clock time as a protobuf timestamp.
pub fn now_ts() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
