//! L7 visibility without a proxy: the datapath copies DNS and HTTP/1.x packets (L7Notify
//! events, `ebpf/include/l7_notify.h`); this module parses them into Hubble L7 flows.
//!
//! `L7Engine::handle` takes one L7Notify sample and produces zero or more flows (a segment
//! may carry several pipelined HTTP messages). It keeps bounded per-connection state (DNS
//! queries waiting for answers, HTTP connections) that expires when idle, and feeds the
//! enricher's DNS cache (FQDN enrichment of every later flow) from answers to queries it saw
//! in flight: same client and server addresses and ports, query id and name. Any other
//! answer still becomes its flow, but teaches no name (a forged answer must not rename
//! addresses).

#![allow(deprecated)] // Hubble still fills the deprecated `summary` and `reply`.

pub mod dns;
pub mod http;
pub mod redact;

/// Keys come from packets: hashed with per-map random seeds (foldhash), much cheaper than
/// SipHash per L7 message.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hubble_api::flow::{self, Flow, HttpHeader, Layer7, TraceContext, TraceParent, layer7};

use crate::enrich::{Enricher, Getters, set_str};
pub use crate::monitor::abi::{
    L7_F_INGRESS, L7_F_RESPONSE, L7_KIND_DNS, L7_KIND_HTTP, L7_NOTIFY_LEN, L7Notify, MSG_L7_CAPTURE,
};
use crate::monitor::packet::{self, L4};

/// Hubble's access-log message type, the `event_type.type` of L7 flows.
pub const MSG_ACCESS_LOG: i32 = crate::monitor::abi::MSG_ACCESS_LOG as i32;
/// DNS `observation_source` of our flows: seen in the datapath (Cilium's proxy says "proxy").
pub const DNS_OBSERVATION_SOURCE: &str = "datapath";

/// Most DNS queries waiting for an answer, and most tracked HTTP connections.
pub const MAX_DNS_PENDING: usize = 16_384;
pub const MAX_CONNS: usize = 16_384;
/// Idle state older than this is dropped (sweeps run at most once per second).
pub const IDLE_NS: u64 = 30_000_000_000;
const DNS_TIMEOUT_NS: u64 = 10_000_000_000;

/// Why a capture gave no flow (counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum L7Error {
    #[error("L7 capture shorter than its header")]
    Truncated,
    #[error("not an L7 capture")]
    NotL7,
    #[error("L7 capture without IP/TCP/UDP headers")]
    NoTransport,
    #[error("malformed DNS message: {0}")]
    Dns(#[from] dns::DnsError),
    #[error("unknown L7 capture kind {0}")]
    Kind(u8),
}

/// Counters of the L7 engine.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct L7Stats {
    pub dns_requests: u64,
    pub dns_responses: u64,
    pub dns_malformed: u64,
    pub dns_unpaired: u64,
    pub http: http::HttpStats,
    pub state_evicted: u64,
}

/// Transport view of a captured packet, from the monitor's packet parser.
struct Segment<'a> {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    tcp: bool,
    seq: u32,
    payload: &'a [u8],
}

/// The TCP or UDP segment of a parsed capture.
fn segment<'a>(p: &packet::Packet, data: &'a [u8]) -> Option<Segment<'a>> {
    let ip = p.ip?;
    let (sport, dport, tcp) = match p.l4? {
        L4::Tcp { sport, dport, .. } => (sport, dport, true),
        L4::Udp { sport, dport } => (sport, dport, false),
        _ => return None,
    };
    Some(Segment {
        src: ip.src,
        dst: ip.dst,
        sport,
        dport,
        tcp,
        seq: p.tcp_seq,
        payload: p.payload(data),
    })
}

/// (client address, client port, server address, server port)
type ConnKey = (IpAddr, u16, IpAddr, u16);

/// A DNS query waiting for its answer.
struct PendingQuery {
    sent_ns: u64,
    /// The question's name: an answer must repeat it (case aside) to pair.
    name: Box<str>,
}

/// DNS and HTTP state plus counters; one per agent pipeline.
#[derive(Default)]
pub struct L7Engine {
    /// Queries in flight by connection and query id.
    dns_pending: HashMap<(ConnKey, u16), PendingQuery>,
    conns: HashMap<ConnKey, http::Conn>,
    msg: dns::Message,
    last_sweep_ns: u64,
    pub stats: L7Stats,
    /// What HTTP flows hide (`--hubble-redact-*`).
    pub redact: redact::Redact,
}

impl L7Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracked HTTP connections and DNS queries waiting for answers.
    pub fn state_len(&self) -> (usize, usize) {
        (self.conns.len(), self.dns_pending.len())
    }

    /// Turns one L7 capture into flows appended to `out` (reusing its flows past `*n`);
    /// returns how many were written.
    pub fn handle<G: Getters>(
        &mut self,
        sample: &[u8],
        time: SystemTime,
        enricher: &mut Enricher<G>,
        out: &mut Vec<Flow>,
    ) -> Result<usize, L7Error> {
        if sample.first().is_some_and(|t| *t != MSG_L7_CAPTURE) {
            return Err(L7Error::NotL7);
        }
        let (ev, pkt) = L7Notify::decode(sample).ok_or(L7Error::Truncated)?;
        let l3 = ev.flags & crate::monitor::abi::CLS_FLAG_L3_DEV != 0;
        let parsed = packet::parse_with_payload(pkt, l3);
        let seg = segment(&parsed, pkt).ok_or(L7Error::NoTransport)?;
        let response = ev.l7_flags & L7_F_RESPONSE != 0;
        let key: ConnKey = if response {
            (seg.dst, seg.dport, seg.src, seg.sport)
        } else {
            (seg.src, seg.sport, seg.dst, seg.dport)
        };
        self.sweep(ev.ktime_ns);
        let now_s = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        match ev.hdr.subtype {
            L7_KIND_DNS => {
                let mut body = seg.payload;
                if seg.tcp {
                    // DNS over TCP: a 2-byte length, then the message (one per segment here).
                    if body.len() < 2 {
                        return Ok(0);
                    }
                    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                    body = &body[2..];
                    body = &body[..n.min(body.len())];
                }
                if let Err(e) = self.msg.parse_into(body) {
                    self.stats.dns_malformed += 1;
                    return Err(e.into());
                }
                let is_resp = self.msg.response;
                let mut paired = false;
                let latency = if is_resp {
                    self.stats.dns_responses += 1;
                    match self.take_pending(key) {
                        Some(sent_ns) => {
                            paired = true;
                            ev.ktime_ns.saturating_sub(sent_ns)
                        }
                        None => {
                            self.stats.dns_unpaired += 1;
                            0
                        }
                    }
                } else {
                    self.stats.dns_requests += 1;
                    if self.dns_pending.len() < MAX_DNS_PENDING {
                        let q = PendingQuery {
                            sent_ns: ev.ktime_ns,
                            name: self.msg.query.as_str().into(),
                        };
                        self.dns_pending.insert((key, self.msg.id), q);
                    } else {
                        self.stats.state_evicted += 1;
                    }
                    0
                };
                // An answer to a query in flight teaches the querying endpoint's names (before
                // the flow is built, so the response itself carries them, as in Hubble).
                if paired && self.msg.rcode == 0 {
                    let ep = ev.hdr.source as u32;
                    let ttl = self.msg.min_ip_ttl();
                    let names = enricher.dns_mut();
                    for a in &self.msg.answers {
                        if let dns::Rdata::Ip(ip) = a.data {
                            names.learn(ep, ip, &self.msg.query, ttl, now_s);
                        }
                    }
                }
                let f = next_flow(out, 0);
                enricher.fill_l7_base(&parsed, ev.src_label, ev.dst_label, time, f);
                fill_dns(f, &self.msg, latency);
                finish(f, &ev);
                Ok(1)
            }
            L7_KIND_HTTP => {
                if !seg.tcp || seg.payload.is_empty() {
                    return Ok(0);
                }
                let full = self.conns.len() >= MAX_CONNS;
                let conn = match self.conns.entry(key) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(_) if full => {
                        self.stats.state_evicted += 1;
                        return Ok(0);
                    }
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(http::Conn::default()),
                };
                let mut n = 0;
                let redact = &self.redact;
                conn.feed(
                    !response,
                    seg.seq,
                    seg.payload,
                    ev.ktime_ns,
                    std::net::SocketAddr::new(key.2, key.3),
                    &mut self.stats.http,
                    &mut |x| {
                        let f = next_flow(out, n);
                        enricher.fill_l7_base(&parsed, ev.src_label, ev.dst_label, time, f);
                        fill_http(f, x, redact);
                        finish(f, &ev);
                        n += 1;
                    },
                );
                Ok(n)
            }
            k => Err(L7Error::Kind(k)),
        }
    }

    /// The send time of the query in flight that the parsed answer (`self.msg`) on `key`
    /// answers, which is no longer in flight then. An answer with another name leaves the
    /// query waiting for its real answer.
    fn take_pending(&mut self, key: ConnKey) -> Option<u64> {
        let k = (key, self.msg.id);
        let q = self.dns_pending.get(&k)?;
        if !q.name.eq_ignore_ascii_case(&self.msg.query) {
            return None;
        }
        self.dns_pending.remove(&k).map(|q| q.sent_ns)
    }

    /// Drops idle connections and unanswered queries (at most once per second of `now`).
    fn sweep(&mut self, now: u64) {
        if now < self.last_sweep_ns + 1_000_000_000 {
            return;
        }
        self.last_sweep_ns = now;
        let before = self.conns.len() + self.dns_pending.len();
        self.conns
            .retain(|_, c| now.saturating_sub(c.last_ns) < IDLE_NS);
        self.dns_pending
            .retain(|_, q| now.saturating_sub(q.sent_ns) < DNS_TIMEOUT_NS);
        let after = self.conns.len() + self.dns_pending.len();
        self.stats.state_evicted += (before - after) as u64;
    }
}

fn next_flow(out: &mut Vec<Flow>, i: usize) -> &mut Flow {
    if out.len() <= i {
        out.resize_with(i + 1, Flow::default);
    }
    &mut out[i]
}

#[allow(deprecated)]
fn finish(f: &mut Flow, ev: &L7Notify) {
    let response =
        f.l7.as_ref()
            .is_some_and(|l| l.r#type == flow::L7FlowType::Response as i32);
    f.is_reply = Some(pbjson_types::BoolValue { value: response });
    f.reply = response;
    f.traffic_direction = if ev.l7_flags & L7_F_INGRESS != 0 {
        flow::TrafficDirection::Ingress as i32
    } else {
        flow::TrafficDirection::Egress as i32
    };
}

/// The flow's L7 record of the kind `is` accepts, reset to `fresh` when it holds another.
fn record_mut(
    f: &mut Flow,
    response: bool,
    latency_ns: u64,
    fresh: fn() -> layer7::Record,
    is: fn(&layer7::Record) -> bool,
) -> &mut Option<layer7::Record> {
    let l = f.l7.get_or_insert_with(Layer7::default);
    l.r#type = if response {
        flow::L7FlowType::Response as i32
    } else {
        flow::L7FlowType::Request as i32
    };
    l.latency_ns = latency_ns;
    if !l.record.as_ref().is_some_and(is) {
        l.record = Some(fresh());
    }
    &mut l.record
}

/// `out` = the names of `types`, reusing its strings.
fn set_type_names(out: &mut Vec<String>, types: impl Iterator<Item = u16>) {
    let mut n = 0;
    for t in types {
        let name = dns::type_name(t);
        if n < out.len() {
            set_str(&mut out[n], name);
        } else {
            out.push(name.to_string());
        }
        n += 1;
    }
    out.truncate(n);
}

/// Go's `%q` of a plain string (names and addresses: only `"` and `\` need escaping).
fn push_quoted(s: &mut String, parts: &[String]) {
    s.push('"');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        if !p.bytes().any(|c| c == b'"' || c == b'\\') {
            s.push_str(p);
            continue;
        }
        for c in p.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
    }
    s.push('"');
}

fn fill_dns(f: &mut Flow, m: &dns::Message, latency_ns: u64) {
    let mut summary = std::mem::take(&mut f.summary);
    let rec = record_mut(
        f,
        m.response,
        latency_ns,
        || layer7::Record::Dns(flow::Dns::default()),
        |r| matches!(r, layer7::Record::Dns(_)),
    );
    let Some(layer7::Record::Dns(d)) = rec else {
        f.summary = summary;
        return;
    };
    set_str(&mut d.query, &m.query);
    set_str(&mut d.observation_source, DNS_OBSERVATION_SOURCE);
    set_type_names(&mut d.qtypes, m.qtypes.iter().copied());
    if m.response {
        let mut n = 0;
        for ip in m.ips() {
            if n == d.ips.len() {
                d.ips.push(String::new());
            }
            crate::enrich::ip_into(&mut d.ips[n], ip);
            n += 1;
        }
        d.ips.truncate(n);
        d.ttl = m.min_ip_ttl();
        d.cnames.clear();
        d.cnames.extend(m.cnames().map(str::to_string));
        d.rcode = m.rcode as u32;
        set_type_names(&mut d.rrtypes, m.answers.iter().map(|a| a.rtype));
    } else {
        d.ips.clear();
        d.ttl = 0;
        d.cnames.clear();
        d.rcode = 0;
        d.rrtypes.clear();
    }
    // Hubble's summary (seven parser's dnsSummary).
    let s = &mut summary;
    s.clear();
    if m.response {
        s.push_str("DNS Answer ");
        if m.rcode != 0 {
            s.push_str("RCode: ");
            s.push_str(dns::rcode_name(m.rcode));
        } else {
            if !d.ips.is_empty() {
                push_quoted(s, &d.ips);
            }
            if !d.cnames.is_empty() {
                if !d.ips.is_empty() {
                    s.push(' ');
                }
                s.push_str("CNAMEs: ");
                push_quoted(s, &d.cnames);
            }
        }
        s.push_str(" TTL: ");
        push_u64(s, d.ttl as u64);
        s.push_str(" (Query ");
    } else {
        s.push_str("DNS Query ");
    }
    s.push_str(&m.query);
    s.push(' ');
    for (i, t) in d.qtypes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(t);
    }
    if m.response {
        s.push(')');
    }
    f.summary = summary;
}

fn push_u64(s: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        s.push(b as char);
    }
}

fn fill_http(f: &mut Flow, x: &http::Exchange<'_>, redact: &redact::Redact) {
    let url = redact.url(x.url);
    // Cilium's extractTraceContext: the request's W3C trace id, for exemplars and filters.
    f.trace_context = (!x.trace_id.is_empty()).then(|| TraceContext {
        parent: Some(TraceParent {
            trace_id: x.trace_id.to_string(),
        }),
    });
    let mut summary = std::mem::take(&mut f.summary);
    let rec = record_mut(
        f,
        !x.request,
        x.latency_ns,
        || layer7::Record::Http(flow::Http::default()),
        |r| matches!(r, layer7::Record::Http(_)),
    );
    let Some(layer7::Record::Http(h)) = rec else {
        f.summary = summary;
        return;
    };
    h.code = x.code;
    set_str(&mut h.method, x.method);
    set_str(&mut h.url, &url);
    set_str(&mut h.protocol, x.protocol);
    h.headers.truncate(x.headers.len());
    for (i, (k, v)) in x.headers.iter().enumerate() {
        if i == h.headers.len() {
            h.headers.push(HttpHeader::default());
        }
        set_str(&mut h.headers[i].key, k);
        set_str(&mut h.headers[i].value, redact.header(k, v));
    }
    // Hubble's summary (seven parser's httpSummary).
    let s = &mut summary;
    s.clear();
    s.push_str(x.protocol);
    s.push(' ');
    if !x.request {
        push_u64(s, x.code as u64);
        s.push(' ');
        push_u64(s, x.latency_ns / 1_000_000);
        s.push_str("ms (");
    }
    s.push_str(x.method);
    s.push(' ');
    s.push_str(&url);
    if !x.request {
        s.push(')');
    }
    f.summary = summary;
}

/// Builders of L7 captures (tests, benches, fuzz seeds): Ethernet + IPv4 + UDP/TCP frames
/// with a payload, wrapped in an L7Notify.
pub mod build {
    use super::*;
    use crate::monitor::abi::NotifyCaptureHdr;

    fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa, 0x08, 0x00];
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        f.extend_from_slice(&h);
        f.extend_from_slice(l4);
        f
    }

    pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::with_capacity(8 + payload.len());
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        frame(src, dst, 17, &u)
    }

    pub fn tcp4(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        seq: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18; // PSH, ACK
        t.extend_from_slice(payload);
        frame(src, dst, 6, &t)
    }

    /// An L7Notify sample seen at endpoint `ep` around `frame`.
    pub fn capture(kind: u8, ep: u16, l7_flags: u8, ktime_ns: u64, frame: &[u8]) -> Vec<u8> {
        let n = L7Notify {
            hdr: NotifyCaptureHdr {
                r#type: MSG_L7_CAPTURE,
                subtype: kind,
                source: ep,
                len_orig: frame.len() as u32,
                len_cap: frame.len() as u16,
                ..Default::default()
            },
            l7_flags,
            ktime_ns,
            ..Default::default()
        };
        n.encode(frame)
    }
}

#[cfg(test)]
mod tests;
