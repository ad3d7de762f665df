//! What the TUI knows: a bounded ring of flows (the history), the service map and the
//! sliding-window aggregates built from the flows that pass the active filter.
//!
//! Ingest is O(1) per flow (hash lookups on borrowed strings, no formatting); drawing reads
//! these structures and formats only what is on screen.

use std::collections::{HashMap, VecDeque};

use hubble_api::flow::{Endpoint, Flow, Verdict, layer7::Record};

/// Default number of flows kept (`--history`).
pub const DEFAULT_HISTORY: usize = 65_536;
/// Width of the aggregates' sliding window, in seconds.
pub const WINDOW_SECS: i64 = 60;

/// The last `cap` flows, addressed by a sequence number that grows by one per flow.
#[derive(Debug)]
pub struct History {
    flows: VecDeque<Box<Flow>>,
    first_seq: u64,
    cap: usize,
}

impl History {
    pub fn new(cap: usize) -> Self {
        History {
            flows: VecDeque::with_capacity(cap.min(4096)),
            first_seq: 0,
            cap: cap.max(1),
        }
    }

    /// Adds a flow, dropping the oldest when full; returns the new flow's sequence number.
    pub fn push(&mut self, flow: Box<Flow>) -> u64 {
        if self.flows.len() == self.cap {
            self.flows.pop_front();
            self.first_seq += 1;
        }
        self.flows.push_back(flow);
        self.end_seq() - 1
    }

    pub fn get(&self, seq: u64) -> Option<&Flow> {
        let i = seq.checked_sub(self.first_seq)?;
        self.flows.get(usize::try_from(i).ok()?).map(|b| &**b)
    }

    /// Sequence number of the oldest flow kept.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// One past the newest flow's sequence number.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.flows.len() as u64
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Flows in order, with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Flow)> {
        let first = self.first_seq;
        self.flows
            .iter()
            .enumerate()
            .map(move |(i, f)| (first + i as u64, &**f))
    }
}

/// Hubble's reserved identities (numbers below 256) by number.
pub fn reserved_identity_name(id: u32) -> Option<&'static str> {
    Some(match id {
        1 => "host",
        2 => "world",
        3 => "unmanaged",
        4 => "health",
        5 => "init",
        6 => "remote-node",
        7 => "kube-apiserver",
        8 => "ingress",
        9 => "world-ipv4",
        10 => "world-ipv6",
        _ => return None,
    })
}

/// What a map node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A workload (or a pod without one) in a namespace.
    Workload,
    /// A reserved identity: world, host, remote-node, kube-apiserver, ...
    Reserved,
    /// An endpoint we know nothing about (no identity, no namespace).
    Unknown,
}

/// A box on the service map.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Namespace (empty for reserved identities).
    pub namespace: String,
    /// Workload name, pod name, or the reserved identity's name.
    pub name: String,
    pub flows_in: u64,
    pub flows_out: u64,
    pub dropped: u64,
}

impl Node {
    /// `namespace/name`, or the reserved name.
    pub fn label(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// HTTP status classes counted per edge and per service: 1xx..5xx and "other".
pub const HTTP_CLASSES: usize = 6;

/// Traffic seen from one node to another.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub flows: u64,
    pub forwarded: u64,
    pub dropped: u64,
    /// HTTP responses by status class (index 0 = 1xx, ..., 4 = 5xx, 5 = other).
    pub http: [u64; HTTP_CLASSES],
    pub dns: u64,
    pub dns_errors: u64,
    /// Destination ports seen (the first few).
    pub ports: Vec<u16>,
}

/// Writes the map key of an endpoint into `key` and says what kind of node it is.
fn node_key(ep: Option<&Endpoint>, key: &mut String) -> NodeKind {
    key.clear();
    let Some(ep) = ep else {
        key.push_str("unknown");
        return NodeKind::Unknown;
    };
    if !ep.namespace.is_empty() {
        key.push_str(&ep.namespace);
        key.push('/');
        match ep.workloads.first() {
            Some(w) if !w.name.is_empty() => key.push_str(&w.name),
            _ if !ep.pod_name.is_empty() => key.push_str(&ep.pod_name),
            _ => key.push_str("(unknown)"),
        }
        return NodeKind::Workload;
    }
    for l in &ep.labels {
        if let Some(r) = l.strip_prefix("reserved:") {
            key.push_str(r);
            return NodeKind::Reserved;
        }
    }
    if let Some(r) = reserved_identity_name(ep.identity) {
        key.push_str(r);
        return NodeKind::Reserved;
    }
    if ep.identity != 0 {
        key.push_str("identity-");
        key.push_str(itoa::Buffer::new().format(ep.identity));
        return NodeKind::Unknown;
    }
    key.push_str("unknown");
    NodeKind::Unknown
}

/// Nodes and edges of the observed traffic.
#[derive(Debug, Default)]
pub struct ServiceMap {
    ids: HashMap<String, usize>,
    pub nodes: Vec<Node>,
    edge_ids: HashMap<(usize, usize), usize>,
    pub edges: Vec<Edge>,
    key: String,
}

impl ServiceMap {
    /// The node id of an endpoint (created on first sight).
    pub fn node_of(&mut self, ep: Option<&Endpoint>) -> usize {
        let mut key = std::mem::take(&mut self.key);
        let kind = node_key(ep, &mut key);
        let id = match self.ids.get(key.as_str()) {
            Some(&id) => id,
            None => {
                let id = self.nodes.len();
                let (namespace, name) = match (kind, key.split_once('/')) {
                    (NodeKind::Workload, Some((ns, n))) => (ns.to_string(), n.to_string()),
                    _ => (String::new(), key.clone()),
                };
                self.nodes.push(Node {
                    kind,
                    namespace,
                    name,
                    flows_in: 0,
                    flows_out: 0,
                    dropped: 0,
                });
                self.ids.insert(key.clone(), id);
                id
            }
        };
        self.key = key;
        id
    }

    /// The node id of an endpoint if it is on the map already.
    pub fn find(&self, ep: Option<&Endpoint>, scratch: &mut String) -> Option<usize> {
        node_key(ep, scratch);
        self.ids.get(scratch.as_str()).copied()
    }

    /// The node id of a key (`namespace/name` or a reserved name).
    pub fn id_of(&self, key: &str) -> Option<usize> {
        self.ids.get(key).copied()
    }

    /// The (client, server) nodes of a flow already on the map, as [`ServiceMap::add`] puts it.
    pub fn ids_of(&self, flow: &Flow) -> (Option<usize>, Option<usize>) {
        let mut k = String::new();
        let s = self.find(flow.source.as_ref(), &mut k);
        let d = self.find(flow.destination.as_ref(), &mut k);
        if is_reply(flow) { (d, s) } else { (s, d) }
    }

    /// Counts one flow on the edge from client to server (a reply counts on the edge of its
    /// request, as Hubble UI draws links); returns (client node, server node).
    pub fn add(&mut self, flow: &Flow) -> (usize, usize) {
        let src = self.node_of(flow.source.as_ref());
        let dst = self.node_of(flow.destination.as_ref());
        let reply = is_reply(flow);
        let (from, to) = if reply { (dst, src) } else { (src, dst) };
        let dropped = flow.verdict == Verdict::Dropped as i32;
        let next = self.edges.len();
        let eid = *self.edge_ids.entry((from, to)).or_insert(next);
        if eid == next {
            self.edges.push(Edge {
                from,
                to,
                ..Edge::default()
            });
        }
        let e = &mut self.edges[eid];
        e.flows += 1;
        if dropped {
            e.dropped += 1;
        } else if flow.verdict == Verdict::Forwarded as i32 {
            e.forwarded += 1;
        }
        if let Some(port) = dest_port(flow)
            && e.ports.len() < 4
            && !e.ports.contains(&port)
            && !reply
        {
            e.ports.push(port);
        }
        if let Some(l7) = &flow.l7 {
            match &l7.record {
                Some(Record::Http(h)) if h.code != 0 => e.http[http_class(h.code)] += 1,
                Some(Record::Dns(d)) => {
                    e.dns += 1;
                    if d.rcode != 0 {
                        e.dns_errors += 1;
                    }
                }
                _ => {}
            }
        }
        self.nodes[from].flows_out += 1;
        self.nodes[to].flows_in += 1;
        if dropped {
            self.nodes[to].dropped += 1;
        }
        (from, to)
    }

    pub fn edge(&self, from: usize, to: usize) -> Option<&Edge> {
        self.edge_ids.get(&(from, to)).map(|&i| &self.edges[i])
    }
}

fn is_reply(flow: &Flow) -> bool {
    flow.is_reply.as_ref().is_some_and(|r| r.value)
}

fn dest_port(flow: &Flow) -> Option<u16> {
    use hubble_api::flow::layer4::Protocol;
    match flow.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => Some(t.destination_port as u16),
        Protocol::Udp(u) => Some(u.destination_port as u16),
        Protocol::Sctp(s) => Some(s.destination_port as u16),
        _ => None,
    }
}

/// 0 for 1xx, ..., 4 for 5xx, 5 for anything else.
pub fn http_class(code: u32) -> usize {
    match code {
        100..=599 => (code / 100 - 1) as usize,
        _ => 5,
    }
}

/// HTTP responses of one service (destination node) within one second.
#[derive(Debug, Clone, Default)]
pub struct HttpStats {
    pub status: [u64; HTTP_CLASSES],
    pub latency_sum_ns: u64,
    pub latency_count: u64,
    /// Latencies by power-of-two bucket of microseconds (bucket i holds < 2^i us).
    pub latency_hist: [u32; 32],
}

impl HttpStats {
    fn add(&mut self, other: &HttpStats) {
        for i in 0..HTTP_CLASSES {
            self.status[i] += other.status[i];
        }
        self.latency_sum_ns += other.latency_sum_ns;
        self.latency_count += other.latency_count;
        for i in 0..32 {
            self.latency_hist[i] += other.latency_hist[i];
        }
    }

    pub fn total(&self) -> u64 {
        self.status.iter().sum()
    }

    /// Upper bound of the bucket holding quantile `q`, in microseconds.
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let n: u64 = self.latency_hist.iter().map(|&c| u64::from(c)).sum();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.latency_hist.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(1u64 << i);
            }
        }
        None
    }
}

/// Counters of one second of flows.
#[derive(Debug, Default)]
struct Bucket {
    sec: i64,
    flows: u64,
    pairs: HashMap<(usize, usize), u64>,
    drops: HashMap<i32, u64>,
    http: HashMap<usize, HttpStats>,
    dns_errors: HashMap<(String, u32), u64>,
}

impl Bucket {
    fn reset(&mut self, sec: i64) {
        self.sec = sec;
        self.flows = 0;
        self.pairs.clear();
        self.drops.clear();
        self.http.clear();
        self.dns_errors.clear();
    }
}

/// Aggregates over the last [`WINDOW_SECS`] seconds of flow time (the newest flow's time is
/// "now", so a file shows its own last minute and a live stream the real one).
#[derive(Debug)]
pub struct Aggregates {
    buckets: Vec<Bucket>,
    /// Newest flow time seen (seconds).
    pub now: i64,
}

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates {
            buckets: (0..WINDOW_SECS)
                .map(|_| Bucket {
                    sec: i64::MIN,
                    ..Bucket::default()
                })
                .collect(),
            now: i64::MIN,
        }
    }
}

/// The merged window, ready to draw.
#[derive(Debug, Default, Clone)]
pub struct WindowSummary {
    pub flows: u64,
    /// (from, to, flows), most first.
    pub talkers: Vec<(usize, usize, u64)>,
    /// (drop reason code, count), most first.
    pub drops: Vec<(i32, u64)>,
    /// (destination node, stats), most requests first.
    pub http: Vec<(usize, HttpStats)>,
    /// (query, rcode, count), most first.
    pub dns_errors: Vec<(String, u32, u64)>,
}

impl WindowSummary {
    /// Flows per second from `from` to `to` over the window.
    pub fn pair_rate(&self, from: usize, to: usize) -> f64 {
        self.talkers
            .iter()
            .find(|(f, t, _)| *f == from && *t == to)
            .map_or(0.0, |(_, _, n)| *n as f64 / WINDOW_SECS as f64)
    }
}

impl Aggregates {
    /// Counts a flow already placed on the map as client `from` → server `to`.
    pub fn add(&mut self, flow: &Flow, from: usize, to: usize) {
        let Some(sec) = flow.time.as_ref().map(|t| t.seconds) else {
            return;
        };
        if self.now != i64::MIN && sec <= self.now - WINDOW_SECS {
            return; // older than the window
        }
        self.now = self.now.max(sec);
        let slot = sec.rem_euclid(WINDOW_SECS) as usize;
        let b = &mut self.buckets[slot];
        if b.sec != sec {
            b.reset(sec);
        }
        b.flows += 1;
        *b.pairs.entry((from, to)).or_default() += 1;
        if flow.verdict == Verdict::Dropped as i32 {
            *b.drops.entry(flow.drop_reason_desc).or_default() += 1;
        }
        if let Some(l7) = &flow.l7 {
            match &l7.record {
                Some(Record::Http(h)) if h.code != 0 => {
                    // A response: the service is the server end of the edge.
                    let s = b.http.entry(to).or_default();
                    s.status[http_class(h.code)] += 1;
                    if l7.latency_ns > 0 {
                        s.latency_sum_ns += l7.latency_ns;
                        s.latency_count += 1;
                        let us = (l7.latency_ns / 1000).max(1);
                        let i = (64 - us.leading_zeros()).min(31) as usize;
                        s.latency_hist[i] += 1;
                    }
                }
                Some(Record::Dns(d)) if d.rcode != 0 => {
                    *b.dns_errors.entry((d.query.clone(), d.rcode)).or_default() += 1;
                }
                _ => {}
            }
        }
    }

    /// Merges the buckets inside the window.
    pub fn summary(&self) -> WindowSummary {
        let mut out = WindowSummary::default();
        let mut pairs: HashMap<(usize, usize), u64> = HashMap::new();
        let mut drops: HashMap<i32, u64> = HashMap::new();
        let mut http: HashMap<usize, HttpStats> = HashMap::new();
        let mut dns: HashMap<(&str, u32), u64> = HashMap::new();
        for b in &self.buckets {
            if b.sec == i64::MIN || b.sec <= self.now - WINDOW_SECS {
                continue;
            }
            out.flows += b.flows;
            for (k, v) in &b.pairs {
                *pairs.entry(*k).or_default() += v;
            }
            for (k, v) in &b.drops {
                *drops.entry(*k).or_default() += v;
            }
            for (k, v) in &b.http {
                http.entry(*k).or_default().add(v);
            }
            for ((q, r), v) in &b.dns_errors {
                *dns.entry((q.as_str(), *r)).or_default() += v;
            }
        }
        out.talkers = pairs.into_iter().map(|((f, t), n)| (f, t, n)).collect();
        out.talkers
            .sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        out.drops = drops.into_iter().collect();
        out.drops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.http = http.into_iter().collect();
        out.http
            .sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
        out.dns_errors = dns
            .into_iter()
            .map(|((q, r), n)| (q.to_string(), r, n))
            .collect();
        out.dns_errors
            .sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, a.1).cmp(&(&b.0, b.1))));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_a_ring() {
        let mut h = History::new(3);
        for i in 0..5u32 {
            let f = Flow {
                node_name: i.to_string(),
                ..Flow::default()
            };
            h.push(Box::new(f));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.first_seq(), 2);
        assert_eq!(h.end_seq(), 5);
        assert!(h.get(1).is_none());
        assert_eq!(h.get(4).unwrap().node_name, "4");
        assert!(h.get(5).is_none());
    }

    #[test]
    fn node_keys() {
        let mut k = String::new();
        let ep = Endpoint {
            namespace: "shop".into(),
            pod_name: "cart-1".into(),
            ..Endpoint::default()
        };
        assert_eq!(node_key(Some(&ep), &mut k), NodeKind::Workload);
        assert_eq!(k, "shop/cart-1");
        let world = Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Endpoint::default()
        };
        assert_eq!(node_key(Some(&world), &mut k), NodeKind::Reserved);
        assert_eq!(k, "world");
        let host = Endpoint {
            identity: 1,
            ..Endpoint::default()
        };
        node_key(Some(&host), &mut k);
        assert_eq!(k, "host");
        assert_eq!(node_key(None, &mut k), NodeKind::Unknown);
    }

    #[test]
    fn http_latency_quantiles() {
        let mut s = HttpStats::default();
        s.latency_hist[3] = 9; // < 8 us
        s.latency_hist[10] = 1; // < 1024 us
        assert_eq!(s.latency_quantile_us(0.5), Some(8));
        assert_eq!(s.latency_quantile_us(0.95), Some(1024));
        assert_eq!(http_class(404), 3);
        assert_eq!(http_class(0), 5);
    }
}
