//! The relay's Observer semantics over its peers, free of the gRPC server: GetFlows fan-in
//! (one stream per connected peer, merged through the sort window, node status events for
//! nodes that are or become unavailable), ServerStatus sums, GetNodes and GetNamespaces.

use std::collections::{BTreeSet, HashMap, VecDeque};
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

use crate::peers::{PeerSnapshot, Peers};
use crate::sort::{SortBuffer, Source};
use crate::wire::RawResponse;
use bytes::Bytes;

/// During a follow request, peers that connected since are joined this often.
pub const PEER_UPDATE_INTERVAL: Duration = Duration::from_secs(2);
/// Responses in flight from all peers of one request to its merge task.
const PEER_QUEUE: usize = 4096;

/// The merge settings (`--sort-buffer-len-max`, `--sort-buffer-drain-timeout`).
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub sort_buffer_len_max: usize,
    pub sort_buffer_drain_timeout: Duration,
    /// A peer stream of a non-follow request silent this long is cut and reported.
    pub stream_idle_timeout: Duration,
    /// Node name put on the relay's own node status events.
    pub relay_name: String,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            sort_buffer_len_max: 100,
            sort_buffer_drain_timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(5),
            relay_name: "hubble-relay".into(),
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
    Resp(Source, RawResponse),
    End(Source),
    Failed(Source, String),
}

/// What goes to the client: an encoded GetFlowsResponse, or the end with an error.
pub type Reply = Result<Bytes, Status>;

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
        hubble::filter::FlowFilters::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
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
    /// Flows sent (for `first` with `number`).
    sent: u64,
    /// The newest `number` responses (non-follow, not first: sent at the end).
    tail: Option<VecDeque<Bytes>>,
    client_gone: bool,
}

impl<'a> Merge<'a> {
    fn new(obs: &'a RelayObserver, req: &'a GetFlowsRequest, tx: mpsc::Sender<Reply>) -> Self {
        let (peer_tx, peer_rx) = mpsc::channel(PEER_QUEUE);
        // `--all` (number = u64::MAX) streams as it merges.
        let tail = (!req.follow && !req.first && req.number > 0 && req.number < u64::MAX)
            .then(|| VecDeque::with_capacity(req.number.min(1 << 16) as usize));
        Merge {
            obs,
            req,
            tx,
            // Finite streams merge exactly (a slow peer is cut by the idle timeout); follow
            // streams through the bounded window.
            buf: if req.follow {
                SortBuffer::new(
                    obs.opts.sort_buffer_len_max,
                    obs.opts.sort_buffer_drain_timeout,
                )
            } else {
                SortBuffer::new(usize::MAX, Duration::MAX)
            },
            names: Vec::new(),
            active: HashMap::new(),
            last_seen: HashMap::new(),
            tasks: JoinSet::new(),
            peer_tx,
            peer_rx,
            started_at: now_ts(),
            sent: 0,
            tail,
            client_gone: false,
        }
    }

    async fn run(&mut self) {
        let peers = self.obs.peers.list();
        let (up, down): (Vec<_>, Vec<_>) = peers.into_iter().partition(|p| p.channel.is_some());
        if !up.is_empty() {
            let names = up.iter().map(|p| p.name.clone()).collect();
            self.status(NodeState::NodeConnected, names, String::new())
                .await;
        }
        if !down.is_empty() {
            let names = down.iter().map(|p| p.name.clone()).collect();
            self.status(NodeState::NodeUnavailable, names, String::new())
                .await;
        }
        for p in up {
            self.start_peer(p, self.req.clone());
        }
        let mut changes = self.obs.peers.subscribe();
        let mut rejoin = tokio::time::interval(PEER_UPDATE_INTERVAL);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rejoin.reset();
        let tx = self.tx.clone();
        while !self.client_gone {
            if !self.req.follow && self.buf.live_sources() == 0 {
                break;
            }
            let deadline = self.buf.deadline();
            tokio::select! {
                msg = self.peer_rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg).await;
                    // Take whatever else is already queued before sorting out what can go.
                    let mut n = 0;
                    while n < 1024 {
                        match self.peer_rx.try_recv() {
                            Ok(msg) => self.handle(msg).await,
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                _ = sleep_until(deadline) => {}
                _ = rejoin.tick(), if self.req.follow => self.join_new_peers().await,
                r = changes.changed(), if self.req.follow => {
                    if r.is_err() { break }
                    self.join_new_peers().await;
                }
                _ = tx.closed() => break,
            }
            self.flush().await;
        }
        self.tasks.abort_all();
        if self.client_gone || self.tx.is_closed() {
            return;
        }
        while let Some(r) = self.buf.pop_any() {
            if !self.emit(r).await {
                return;
            }
        }
        if let Some(tail) = self.tail.take() {
            for r in tail {
                if self.tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, msg: PeerMsg) {
        match msg {
            PeerMsg::Resp(s, mut r) => {
                let name = &self.names[s];
                if !r.has_node_name {
                    r.bytes = r.clone().with_node_name(name);
                    r.has_node_name = true;
                }
                if r.time != i128::MIN {
                    match self.last_seen.get_mut(name) {
                        Some(l) => *l = (*l).max(r.time),
                        None => {
                            self.last_seen.insert(name.clone(), r.time);
                        }
                    }
                }
                self.buf.push(s, r.time, r, Instant::now());
            }
            PeerMsg::End(s) => {
                self.buf.end_source(s);
                self.active.remove(&self.names[s]);
            }
            PeerMsg::Failed(s, err) => {
                self.buf.end_source(s);
                let name = self.names[s].clone();
                self.active.remove(&name);
                self.obs.peers.report_failure(&name, &err);
                self.status(NodeState::NodeUnavailable, vec![name], err)
                    .await;
            }
        }
    }

    async fn flush(&mut self) {
        let now = Instant::now();
        while let Some(r) = self.buf.pop(now) {
            if !self.emit(r).await {
                return;
            }
        }
    }

    /// Sends (or keeps, for `--last N`) one merged response; false when the client is gone
    /// or `first N` is complete.
    async fn emit(&mut self, r: RawResponse) -> bool {
        if self.client_gone {
            return false;
        }
        let is_flow = r.is_flow;
        if let Some(tail) = &mut self.tail {
            if is_flow {
                if tail.len() as u64 == self.req.number {
                    tail.pop_front();
                }
                tail.push_back(r.bytes);
            }
            return true;
        }
        if self.req.first && self.req.number > 0 && is_flow && self.sent >= self.req.number {
            self.client_gone = true;
            return false;
        }
        if self.tx.send(Ok(r.bytes)).await.is_err() {
            self.client_gone = true;
            return false;
        }
        if is_flow {
            self.sent += 1;
            if self.req.first && self.req.number > 0 && self.sent >= self.req.number {
                self.client_gone = true;
                return false;
            }
        }
        true
    }

    async fn status(&mut self, state: NodeState, node_names: Vec<String>, message: String) {
        let r = RawResponse::encode(&GetFlowsResponse {
            node_name: self.obs.opts.relay_name.clone(),
            time: Some(now_ts()),
            response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
                state_change: state as i32,
                node_names,
                message,
            })),
        });
        if self.tx.send(Ok(r)).await.is_err() {
            self.client_gone = true;
        }
    }

    /// Follow requests: peers connected since the request started (or reconnected) join,
    /// resuming after the newest flow this request saw from them.
    async fn join_new_peers(&mut self) {
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
        let names = fresh.iter().map(|p| p.name.clone()).collect();
        self.status(NodeState::NodeConnected, names, String::new())
            .await;
        for p in fresh {
            let mut req = self.req.clone();
            req.number = 0;
            req.since = Some(match self.last_seen.get(&p.name) {
                Some(t) => from_key(t + 1),
                None => self.started_at,
            });
            self.start_peer(p, req);
        }
    }

    fn start_peer(&mut self, p: PeerSnapshot, req: GetFlowsRequest) {
        let Some(ch) = p.channel else { return };
        let s = self.buf.add_source();
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
    }
}

/// Streams one peer's GetFlows into the merge. Ends Ok at the end of the peer's stream.
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
    loop {
        let next = async {
            if follow {
                Ok(stream.message().await)
            } else {
                tokio::time::timeout(opts.stream_idle_timeout, stream.message()).await
            }
        };
        tokio::select! {
            r = next => match r {
                Err(_) => return Err(format!("no response for {:?}", opts.stream_idle_timeout)),
                Ok(Ok(Some(resp))) => {
                    if tx.send(PeerMsg::Resp(s, resp)).await.is_err() {
                        return Ok(());
                    }
                }
                // A follow stream only ends when the agent goes away.
                Ok(Ok(None)) if follow => return Err("stream ended".into()),
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(st)) if st.code() == tonic::Code::Cancelled && !follow => return Ok(()),
                Ok(Err(st)) => return Err(st.message().to_string()),
            },
            _ = async { drop(down.wait_for(|d| *d).await) } => {
                return Err("connection lost".into())
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
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
