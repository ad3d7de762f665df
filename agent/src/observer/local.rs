//! The local observer: the agent's flow ring plus Hubble's GetFlows / ServerStatus /
//! GetNamespaces semantics over it, free of gRPC so tests and other front ends can call it.
//!
//! Semantics follow Cilium's local observer: where a GetFlows request starts (first, follow,
//! number, since), when it stops (number, until, end of ring) and what a lagging reader gets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hubble::filter::{FilterError, FlowFilters};
use hubble_api::flow::{Flow, LostEvent, LostEventSource};
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse, Namespace, ServerStatusResponse};
use pbjson_types::Timestamp;

pub use crate::enrich::timestamp;
use tokio::sync::watch;

use super::entry::{Entry, Interner};
use super::events::AgentEvents;
use super::ring::{Read, Ring, RingError};
use hubble::field_mask::FlowMask;

/// A response's protobuf bytes.
pub fn encode(resp: &GetFlowsResponse) -> Bytes {
    use prost::Message;
    Bytes::from(resp.encode_to_vec())
}

/// A ring entry, shared by every reader.
pub type Event = Arc<Entry>;

/// A response of [`LocalObserver::next_encoded`]: a stored entry as it is, or bytes made
/// for this reader (masked flows, LostEvents).
#[derive(Clone)]
pub enum Encoded {
    Entry(Event),
    Bytes(Bytes),
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.to_bytes().len())
    }
}

impl Encoded {
    /// The response's protobuf encoding in one piece.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Encoded::Entry(e) => e.encoded(),
            Encoded::Bytes(b) => b.clone(),
        }
    }
}

impl hubble::wire::RawMessage for Encoded {
    fn write_to(&self, dst: &mut tonic::codec::EncodeBuf<'_>) {
        match self {
            Encoded::Entry(e) => e.write_encoded(dst),
            Encoded::Bytes(b) => b.write_to(dst),
        }
    }
}

/// What a query yields next: a stored entry (decoded when the query's filters needed it)
/// or a LostEvent made for this reader.
enum Next {
    Entry(Event, Option<Box<GetFlowsResponse>>),
    Lost(Box<GetFlowsResponse>),
}

/// Namespaces are listed while they had a flow within this window.
const NAMESPACE_TTL: Duration = Duration::from_secs(3600);
/// A reader that keeps losing flows gets at most one LostEvent per interval, with the
/// flows lost since the previous one (Hubble's lost-event send interval).
pub const LOST_EVENT_SEND_INTERVAL: Duration = Duration::from_secs(1);
/// ServerStatus.flows_rate counts the flows of this last window.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a GetFlows request was refused (InvalidArgument on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("first cannot be specified with follow")]
    FirstWithFollow,
    #[error("invalid whitelist filter: {0}")]
    Whitelist(FilterError),
    #[error("invalid blacklist filter: {0}")]
    Blacklist(FilterError),
    /// Past one of the caps of `hubble::limits`.
    #[error("{0}")]
    Limit(String),
}

impl RequestError {
    /// A filter error of one list; a cap of the request is not that list's fault.
    fn filter(list: fn(FilterError) -> Self) -> impl Fn(FilterError) -> Self {
        move |e| match e {
            FilterError::Limit(m) => RequestError::Limit(m),
            e => list(e),
        }
    }
}

/// The agent's flow store and the queries Hubble's Observer service answers from it.
pub struct LocalObserver {
    ring: Ring<Event>,
    node_name: String,
    version: String,
    started: Instant,
    seen_flows: AtomicU64,
    /// Endpoints shared by the ring's entries (pruned once per ring's worth of pushes).
    interner: Interner,
    /// cluster → namespace → last time a flow touched it.
    namespaces: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// Set when the server shuts down: streams end.
    closing: watch::Sender<bool>,
    /// Agent events (GetAgentEvents), in a ring of their own.
    agent_events: AgentEvents,
}

/// A validated GetFlows request, ready to be streamed with [`LocalObserver::next`].
pub struct FlowQuery {
    filters: FlowFilters,
    number: u64,
    follow: bool,
    since: Option<(i64, i32)>,
    until: Option<(i64, i32)>,
    mask: FlowMask,
    /// Next sequence number to read.
    seq: u64,
    /// Non-follow requests end at the head seen when they started.
    end: u64,
    /// Flows sent so far (lost events do not count).
    sent: u64,
    /// Ring losses not yet reported: count and when the first of them was noticed.
    lost: u64,
    lost_first: Option<Timestamp>,
    /// When the last LostEvent went out.
    lost_sent: Option<Instant>,
    /// Set while the start is still to be found by walking back from `end` (`seq` is where
    /// the walk got to).
    walk: Option<Walk>,
}

/// The walk back to a query's start: `--last N` counts matching flows, `--since` stops at
/// older flows.
#[derive(Debug, Clone, Copy)]
struct Walk {
    first: bool,
    counted: u64,
}

impl LocalObserver {
    /// An observer keeping the last `max_flows` events (2^n − 1).
    pub fn new(max_flows: u64, node_name: impl Into<String>) -> Result<Self, RingError> {
        let node_name = node_name.into();
        Ok(LocalObserver {
            ring: Ring::new(max_flows)?,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: Instant::now(),
            seen_flows: AtomicU64::new(0),
            interner: Interner::default(),
            namespaces: Mutex::new(HashMap::new()),
            closing: watch::Sender::new(false),
            agent_events: AgentEvents::new(node_name.clone()),
            node_name,
        })
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The server version reported in ServerStatus and the `hubble-server-version` header.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Ends every stream (followers included) at its next step.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once [`close`](Self::close) was called.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The agent events (GetAgentEvents) of this node.
    pub fn agent_events(&self) -> &AgentEvents {
        &self.agent_events
    }

    pub fn ring(&self) -> &Ring<Event> {
        &self.ring
    }

    /// Stores one response (a flow or a lost event) as the newest entry, encoded (a
    /// reference will do: nothing of it is kept).
    pub fn push(&self, resp: impl std::borrow::Borrow<GetFlowsResponse>) {
        let resp = resp.borrow();
        if let Some(ResponseTypes::Flow(flow)) = &resp.response_types {
            self.seen_flows.fetch_add(1, Ordering::Relaxed);
            self.note_namespaces(flow);
        }
        self.ring.push(Arc::new(Entry::new(resp, &self.interner)));
        if self.ring.head().is_multiple_of(self.ring.capacity() + 1) {
            self.interner.prune();
        }
    }

    /// Stores a flow, filling the response's node name and time from it.
    pub fn push_flow(&self, flow: Flow) {
        let resp = GetFlowsResponse {
            node_name: if flow.node_name.is_empty() {
                self.node_name.clone()
            } else {
                flow.node_name.clone()
            },
            time: flow.time,
            response_types: Some(ResponseTypes::Flow(flow)),
        };
        self.push(resp);
    }

    fn note_namespaces(&self, flow: &Flow) {
        let now = Instant::now();
        let mut map = self
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for ep in [&flow.source, &flow.destination].into_iter().flatten() {
            if ep.namespace.is_empty() {
                continue;
            }
            let by_ns = match map.get_mut(ep.cluster_name.as_str()) {
                Some(m) => m,
                None => map.entry(ep.cluster_name.clone()).or_default(),
            };
            match by_ns.get_mut(ep.namespace.as_str()) {
                Some(t) => *t = now,
                None => {
                    by_ns.insert(ep.namespace.clone(), now);
                }
            }
        }
    }

    /// Namespaces that had a flow in the last hour, sorted by cluster then namespace.
    pub fn namespaces(&self) -> Vec<Namespace> {
        let now = Instant::now();
        let mut map = self
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        map.retain(|cluster, by_ns| {
            by_ns.retain(|ns, seen| {
                let keep = now.duration_since(*seen) < NAMESPACE_TTL;
                if keep {
                    out.push(Namespace {
                        cluster: cluster.clone(),
                        namespace: ns.clone(),
                    });
                }
                keep
            });
            !by_ns.is_empty()
        });
        out.sort_by(|a, b| (&a.cluster, &a.namespace).cmp(&(&b.cluster, &b.namespace)));
        out
    }

    /// ServerStatus of a single agent (node counts left unset).
    pub fn status(&self) -> ServerStatusResponse {
        ServerStatusResponse {
            num_flows: self.ring.len(),
            max_flows: self.ring.capacity(),
            seen_flows: self.seen_flows.load(Ordering::Relaxed),
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            version: self.version.clone(),
            flows_rate: self.flow_rate(SystemTime::now()),
            ..Default::default()
        }
    }

    /// Flows per second over the last minute, or over the span the ring covers when it holds
    /// less than a minute.
    fn flow_rate(&self, now: SystemTime) -> f64 {
        let now_t = time_key_of(now);
        let window_start = time_key_of(now - RATE_WINDOW);
        let mut since = window_start;
        let mut count = 0u64;
        let mut seq = self.ring.head();
        let mut covered = false;
        while seq > 0 {
            seq -= 1;
            match self.ring.read(seq) {
                Read::Entry(e) => {
                    let Some(t) = e.flow_time else {
                        continue;
                    };
                    if t < window_start {
                        covered = true;
                        break;
                    }
                    count += 1;
                    since = t;
                }
                _ => break,
            }
        }
        if covered {
            since = window_start;
        }
        let secs = (now_t.0 - since.0) as f64 + (now_t.1 - since.1) as f64 / 1e9;
        if count == 0 || secs <= 0.0 {
            return 0.0;
        }
        count as f64 / secs
    }

    /// Validates a GetFlows request and finds where it starts in the ring.
    pub fn query(&self, req: &GetFlowsRequest) -> Result<FlowQuery, RequestError> {
        if req.first && req.follow {
            return Err(RequestError::FirstWithFollow);
        }
        let mask = req.field_mask.as_ref().map_or(&[][..], |m| &m.paths);
        hubble::limits::check_field_mask(mask).map_err(|e| RequestError::Limit(e.to_string()))?;
        // Compiled apart first so the error names the list at fault.
        FlowFilters::compile(&req.whitelist, &[])
            .map_err(RequestError::filter(RequestError::Whitelist))?;
        FlowFilters::compile(&[], &req.blacklist)
            .map_err(RequestError::filter(RequestError::Blacklist))?;
        let filters = FlowFilters::compile(&req.whitelist, &req.blacklist)
            .map_err(RequestError::filter(RequestError::Whitelist))?;
        let since = req.since.as_ref().map(|t| (t.seconds, t.nanos));
        let until = req.until.as_ref().map(|t| (t.seconds, t.nanos));
        let head = self.ring.head();
        let mut q = FlowQuery {
            filters,
            number: req.number,
            follow: req.follow,
            since,
            until,
            mask: FlowMask::new(mask),
            seq: head,
            end: head,
            sent: 0,
            lost: 0,
            lost_first: None,
            lost_sent: None,
            walk: None,
        };
        if req.first && q.since.is_none() {
            q.seq = head.saturating_sub(self.ring.capacity());
        } else if !(q.follow && q.number == 0 && q.since.is_none()) {
            // Found by the reader (walk_back), not here: the walk may take a while.
            q.walk = Some(Walk {
                first: req.first,
                counted: 0,
            });
        }
        Ok(q)
    }

    /// Walks back from the newest entry to where the query starts. Over a full ring with
    /// filters this decodes every entry, so it yields to the server's other tasks now and
    /// then; its state is in `q`, and a dropped call resumes where it stopped.
    async fn walk_back(&self, q: &mut FlowQuery) {
        let oldest = q.end.saturating_sub(self.ring.capacity());
        while let Some(walk) = q.walk {
            tokio::task::consume_budget().await;
            let done = q.seq <= oldest
                || match self.ring.read(q.seq - 1) {
                    Read::Entry(e) if q.since.is_some_and(|s| e.time < s) => true,
                    Read::Entry(e) => {
                        q.seq -= 1;
                        if !walk.first && q.number > 0 && e.is_flow() && q.matches(&e).0 {
                            let counted = walk.counted + 1;
                            q.walk = Some(Walk { counted, ..walk });
                            counted == q.number
                        } else {
                            false
                        }
                    }
                    _ => true,
                };
            if done {
                q.walk = None;
            }
        }
    }

    /// The next response of a query; `None` when a non-follow query is done. Follow queries
    /// wait here for new entries.
    pub async fn next(&self, q: &mut FlowQuery) -> Option<GetFlowsResponse> {
        Some(match self.next_entry(q).await? {
            Next::Entry(e, decoded) => {
                let r = decoded.map_or_else(|| e.decode(), |d| *d);
                if q.mask.is_empty() {
                    r
                } else {
                    q.mask.apply(&r)
                }
            }
            Next::Lost(r) => *r,
        })
    }

    /// [`next`](Self::next), encoded as protobuf: entries are stored encoded, so sending the
    /// ring to many clients costs a copy per flow, not an encoding; field masks cut the
    /// stored bytes.
    pub async fn next_encoded(&self, q: &mut FlowQuery) -> Option<Encoded> {
        Some(match self.next_entry(q).await? {
            // Written into the stream's buffer straight from the entry's pieces.
            Next::Entry(e, _) if q.mask.is_empty() => Encoded::Entry(e),
            Next::Entry(e, decoded) => Encoded::Bytes(match q.mask.apply_encoded(&e.encoded()) {
                Some(cut) => Bytes::from(cut),
                None => encode(&q.mask.apply(&decoded.map_or_else(|| e.decode(), |d| *d))),
            }),
            Next::Lost(r) => Encoded::Bytes(encode(&r)),
        })
    }

    async fn next_entry(&self, q: &mut FlowQuery) -> Option<Next> {
        self.walk_back(q).await;
        loop {
            // Entries the filters skip cost time too: other clients get their turn.
            tokio::task::consume_budget().await;
            if !q.follow && (q.seq >= q.end || (q.number > 0 && q.sent >= q.number)) {
                // Losses still unreported go out before the end.
                return (q.lost > 0).then(|| Next::Lost(Box::new(self.take_lost(q))));
            }
            match self.ring.read(q.seq) {
                Read::Entry(e) => {
                    q.seq += 1;
                    let t = e.time;
                    if q.until.is_some_and(|u| t > u) {
                        q.end = 0;
                        q.follow = false;
                        return None;
                    }
                    if q.since.is_some_and(|s| t < s) {
                        continue;
                    }
                    let (pass, decoded) = q.matches(&e);
                    if !pass {
                        continue;
                    }
                    if e.is_flow() {
                        q.sent += 1;
                    }
                    return Some(Next::Entry(e, decoded));
                }
                Read::Lost { lost, next } => {
                    q.seq = next;
                    q.lost += lost;
                    q.lost_first
                        .get_or_insert_with(|| timestamp(SystemTime::now()));
                    if q.lost_sent
                        .is_none_or(|t| t.elapsed() >= LOST_EVENT_SEND_INTERVAL)
                    {
                        return Some(Next::Lost(Box::new(self.take_lost(q))));
                    }
                }
                Read::Pending => {
                    // Caught up: report what was lost on the way before waiting.
                    if q.lost > 0 {
                        return Some(Next::Lost(Box::new(self.take_lost(q))));
                    }
                    if !q.follow {
                        return None;
                    }
                    self.ring.wait_for(q.seq).await;
                }
            }
        }
    }

    /// The LostEvent a reader gets for the entries the writer overwrote before it read them
    /// (all of them since its previous LostEvent).
    fn take_lost(&self, q: &mut FlowQuery) -> GetFlowsResponse {
        let now = timestamp(SystemTime::now());
        let lost = std::mem::take(&mut q.lost);
        let first = q.lost_first.take().unwrap_or(now);
        q.lost_sent = Some(Instant::now());
        GetFlowsResponse {
            node_name: self.node_name.clone(),
            time: Some(now),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::HubbleRingBuffer as i32,
                num_events_lost: lost,
                cpu: None,
                first: Some(first),
                last: Some(now),
            })),
        }
    }
}

impl FlowQuery {
    /// True when the query waits for new flows after the stored ones.
    pub fn is_follow(&self) -> bool {
        self.follow
    }

    /// Whether an entry passes the filters, and the entry decoded when they needed it (a
    /// query without filters decodes nothing).
    fn matches(&self, e: &Entry) -> (bool, Option<Box<GetFlowsResponse>>) {
        if self.filters.is_empty() || !e.is_flow() {
            return (true, None);
        }
        let r = e.decode();
        (self.filters.matches_response(&r), Some(Box::new(r)))
    }
}

fn time_key_of(t: SystemTime) -> (i64, i32) {
    let ts = timestamp(t);
    (ts.seconds, ts.nanos)
}

/// The flow ring as a sink of the flow pipeline (what GetFlows serves).
impl crate::flows::FlowSink for Arc<LocalObserver> {
    fn take(
        &mut self,
        responses: &[GetFlowsResponse],
        _: &crate::flows::Counters,
        _: bool,
    ) -> std::io::Result<()> {
        for r in responses {
            self.push(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubble_api::flow::{Endpoint, FlowFilter, Verdict};

    fn flow(i: u64, ns: &str, verdict: Verdict) -> Flow {
        Flow {
            time: Some(Timestamp {
                seconds: 1_700_000_000 + i as i64,
                nanos: 0,
            }),
            verdict: verdict as i32,
            node_name: "node-1".into(),
            source: Some(Endpoint {
                namespace: ns.into(),
                pod_name: format!("pod-{i}"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn observer(n: u64, cap: u64) -> LocalObserver {
        let o = LocalObserver::new(cap, "node-1").unwrap();
        for i in 0..n {
            let v = if i % 2 == 0 {
                Verdict::Forwarded
            } else {
                Verdict::Dropped
            };
            o.push_flow(flow(i, if i % 3 == 0 { "a" } else { "b" }, v));
        }
        o
    }

    fn pods(o: &LocalObserver, req: GetFlowsRequest) -> Vec<String> {
        let mut q = o.query(&req).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        while let Some(r) = rt.block_on(o.next(&mut q)) {
            match r.response_types {
                Some(ResponseTypes::Flow(f)) => out.push(f.source.unwrap().pod_name),
                Some(ResponseTypes::LostEvents(l)) => {
                    out.push(format!("lost:{}", l.num_events_lost))
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn last_first_and_all() {
        let o = observer(10, 15);
        let last3 = pods(
            &o,
            GetFlowsRequest {
                number: 3,
                ..Default::default()
            },
        );
        assert_eq!(last3, ["pod-7", "pod-8", "pod-9"]);
        let first2 = pods(
            &o,
            GetFlowsRequest {
                number: 2,
                first: true,
                ..Default::default()
            },
        );
        assert_eq!(first2, ["pod-0", "pod-1"]);
        assert_eq!(pods(&o, GetFlowsRequest::default()).len(), 10);
        assert_eq!(
            pods(
                &o,
                GetFlowsRequest {
                    number: u64::MAX,
                    ..Default::default()
                }
            )
            .len(),
            10
        );
    }

    #[test]
    fn filters_count_only_matching_flows() {
        let o = observer(10, 15);
        let req = GetFlowsRequest {
            number: 2,
            whitelist: vec![FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(pods(&o, req), ["pod-7", "pod-9"]);
        let req = GetFlowsRequest {
            blacklist: vec![FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(pods(&o, req), ["pod-0", "pod-2", "pod-4", "pod-6", "pod-8"]);
    }

    /// The encoded route (what GetFlows sends) carries exactly the decoded route's responses,
    /// with filters (entries decoded) and field masks (stored bytes cut).
    #[test]
    fn encoded_responses_equal_decoded_ones() {
        use prost::Message;
        let o = observer(40, 63);
        let filter = vec![FlowFilter {
            source_pod: vec!["b/pod-1".into()],
            ..Default::default()
        }];
        let mask = |p: &[&str]| {
            Some(pbjson_types::FieldMask {
                paths: p.iter().map(|s| s.to_string()).collect(),
            })
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for req in [
            GetFlowsRequest::default(),
            GetFlowsRequest {
                number: 5,
                whitelist: filter.clone(),
                ..Default::default()
            },
            GetFlowsRequest {
                field_mask: mask(&["time", "source.pod_name", "verdict"]),
                blacklist: filter.clone(),
                ..Default::default()
            },
            GetFlowsRequest {
                field_mask: mask(&["source.labels.x"]),
                ..Default::default()
            },
        ] {
            let (mut a, mut b) = (o.query(&req).unwrap(), o.query(&req).unwrap());
            let mut n = 0;
            loop {
                let (x, y) =
                    rt.block_on(async { (o.next(&mut a).await, o.next_encoded(&mut b).await) });
                match (x, y) {
                    (None, None) => break,
                    (Some(x), Some(y)) => {
                        assert_eq!(x.encode_to_vec(), y.to_bytes().to_vec(), "{req:?}")
                    }
                    other => panic!("{other:?}"),
                }
                n += 1;
            }
            assert!(n > 0, "{req:?}");
        }
    }

    #[test]
    fn since_and_until() {
        let o = observer(10, 15);
        let at = |i: i64| {
            Some(Timestamp {
                seconds: 1_700_000_000 + i,
                nanos: 0,
            })
        };
        let req = GetFlowsRequest {
            since: at(4),
            until: at(6),
            ..Default::default()
        };
        assert_eq!(pods(&o, req), ["pod-4", "pod-5", "pod-6"]);
        // since wins over number when it is reached first.
        let req = GetFlowsRequest {
            number: 100,
            since: at(8),
            ..Default::default()
        };
        assert_eq!(pods(&o, req), ["pod-8", "pod-9"]);
    }

    #[test]
    fn first_with_follow_and_bad_filters_are_refused() {
        let o = observer(1, 3);
        let req = GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        };
        assert_eq!(o.query(&req).err(), Some(RequestError::FirstWithFollow));
        let req = GetFlowsRequest {
            blacklist: vec![FlowFilter {
                source_ip: vec!["not-an-ip/99".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = o.query(&req).err().unwrap().to_string();
        assert!(
            err.contains("blacklist") && err.contains("source_ip"),
            "{err}"
        );
    }

    #[test]
    fn status_and_namespaces() {
        let o = observer(10, 7);
        let s = o.status();
        assert_eq!((s.num_flows, s.max_flows, s.seen_flows), (7, 7, 10));
        assert!(s.num_connected_nodes.is_none());
        let ns: Vec<_> = o.namespaces().into_iter().map(|n| n.namespace).collect();
        assert_eq!(ns, ["a", "b"]);
    }

    #[test]
    fn flow_rate_counts_the_last_minute() {
        let o = LocalObserver::new(1023, "n").unwrap();
        let now = SystemTime::now();
        // 90 flows over the last 90 s: 60 fall in the last minute.
        for i in (0..90u64).rev() {
            let mut f = flow(i, "a", Verdict::Forwarded);
            f.time = Some(timestamp(
                now - Duration::from_secs(i) + Duration::from_millis(500),
            ));
            o.push_flow(f);
        }
        let r = o.flow_rate(now);
        assert!((r - 1.0).abs() < 0.05, "{r}");
        // A ring spanning less than a minute: the rate over its span.
        let o = LocalObserver::new(1023, "n").unwrap();
        for i in (0..20u64).rev() {
            let mut f = flow(i, "a", Verdict::Forwarded);
            f.time = Some(timestamp(now - Duration::from_millis(i * 500)));
            o.push_flow(f);
        }
        let r = o.flow_rate(now);
        assert!((r - 20.0 / 9.5).abs() < 0.1, "{r}");
        assert_eq!(LocalObserver::new(7, "n").unwrap().flow_rate(now), 0.0);
    }

    /// Polls `o.next(q)` until it is ready, dropping the future each time it yields (as the
    /// server's batching does); the answer, and how many polls it took.
    async fn next_counting_polls(
        o: &LocalObserver,
        q: &mut FlowQuery,
    ) -> (Option<GetFlowsResponse>, usize) {
        let mut polls = 0;
        loop {
            polls += 1;
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(r) = std::pin::pin!(o.next(q)).poll(&mut cx) {
                return (r, polls);
            }
            // Back to the runtime, which refills the task's budget.
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn long_scans_yield_to_other_tasks_and_resume() {
        // Only the oldest flow of a full ring passes: the walk back to it, and the scan on
        // after it, each go over every entry, decoding it for the filter.
        let o = observer(4095, 4095);
        let req = GetFlowsRequest {
            number: 2,
            whitelist: vec![FlowFilter {
                source_pod: vec!["a/pod-0".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut q = o.query(&req).unwrap();
        let (first, polls) = next_counting_polls(&o, &mut q).await;
        let Some(ResponseTypes::Flow(f)) = first.and_then(|r| r.response_types) else {
            panic!("pod-0 expected");
        };
        assert_eq!(f.source.unwrap().pod_name, "pod-0");
        assert!(polls > 1, "the walk back never yielded");
        let (end, polls) = next_counting_polls(&o, &mut q).await;
        assert!(end.is_none());
        assert!(polls > 1, "the scan on never yielded");
    }

    #[tokio::test]
    async fn follow_gets_new_flows_and_lost_events() {
        let o = Arc::new(observer(2, 3));
        let req = GetFlowsRequest {
            follow: true,
            number: 1,
            ..Default::default()
        };
        let mut q = o.query(&req).unwrap();
        let got = o.next(&mut q).await.unwrap();
        assert!(
            matches!(got.response_types, Some(ResponseTypes::Flow(f)) if f.source.as_ref().unwrap().pod_name == "pod-1")
        );
        // The writer laps the reader: it gets a LostEvent, then the oldest flow left.
        for i in 2..10 {
            o.push_flow(flow(i, "a", Verdict::Forwarded));
        }
        let lost = o.next(&mut q).await.unwrap();
        match lost.response_types {
            Some(ResponseTypes::LostEvents(l)) => {
                assert_eq!(l.source, LostEventSource::HubbleRingBuffer as i32);
                assert_eq!(l.num_events_lost, 5);
            }
            other => panic!("expected a lost event, got {other:?}"),
        }
        let next = o.next(&mut q).await.unwrap();
        assert_eq!(next.time.unwrap().seconds, 1_700_000_007);
        o.next(&mut q).await.unwrap();
        o.next(&mut q).await.unwrap();
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.next(&mut q).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        o.push_flow(flow(42, "a", Verdict::Forwarded));
        let r = waiter.await.unwrap().unwrap();
        assert_eq!(r.time.unwrap().seconds, 1_700_000_042);
    }

    fn lost_count(r: &GetFlowsResponse) -> Option<u64> {
        match &r.response_types {
            Some(ResponseTypes::LostEvents(l)) => Some(l.num_events_lost),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_reader_lapped_again_and_again_gets_one_lost_event_per_interval() {
        // Ring of 7; the follower reads one entry, then the writer laps it, ten times over.
        let o = LocalObserver::new(7, "n").unwrap();
        let mut q = o
            .query(&GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .unwrap();
        let (mut flows, mut lost, mut lost_events) = (0u64, 0u64, 0);
        let mut pushed = 0u64;
        for _round in 0..10 {
            for _ in 0..20 {
                o.push_flow(flow(pushed, "a", Verdict::Forwarded));
                pushed += 1;
            }
            // Read a little, as a slow client would.
            for _ in 0..2 {
                let r = o.next(&mut q).await.unwrap();
                match lost_count(&r) {
                    Some(n) => {
                        lost += n;
                        lost_events += 1;
                    }
                    None => flows += 1,
                }
            }
        }
        // Catch up: what was lost and not yet told comes before the wait.
        loop {
            let r = tokio::time::timeout(Duration::from_millis(50), o.next(&mut q)).await;
            let Ok(Some(r)) = r else { break };
            match lost_count(&r) {
                Some(n) => {
                    lost += n;
                    lost_events += 1;
                }
                None => flows += 1,
            }
        }
        assert_eq!(
            flows + lost,
            pushed,
            "every flow is either sent or counted lost"
        );
        // Ten laps within far less than a second: the first loss at once, the rest in one
        // event when the reader caught up.
        assert_eq!(lost_events, 2, "lost={lost}");
    }
}
