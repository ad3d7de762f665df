//! Enrichment: a decoded monitor event plus what the agent knows (endpoints, identities,
//! ipcache, services) becomes a Hubble `Flow`, filled the way Hubble's L3/L4 parser fills it.

// Hubble still fills the deprecated `summary`, `drop_reason` and `reply` fields.
#![allow(deprecated)]

pub mod state;

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hubble_api::flow::{
    self, CiliumEventType, Endpoint, Ethernet, FileInfo, Flow, Ip, Layer4, NetworkInterface,
    Service, TcpFlags, Workload, layer4,
};
use pbjson_types::{BoolValue, Timestamp};

use crate::monitor::abi::*;
use crate::monitor::packet::{self, L4, Packet, tcp_flags};
use crate::monitor::{DecodeError, MonitorEvent};
pub use state::{EndpointInfo, NodeState};

/// Local endpoints by address or id, and interface names.
pub trait EndpointGetter {
    fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&EndpointInfo>;
    fn endpoint_by_id(&self, id: u16) -> Option<&EndpointInfo>;
    fn interface_name(&self, ifindex: u32) -> Option<&str>;
}

/// Labels of allocated identities.
pub trait IdentityGetter {
    fn labels_of(&self, identity: u32) -> Option<&[String]>;
}

/// Identity of any address (world when unknown).
pub trait IpcacheGetter {
    fn identity_of(&self, ip: IpAddr) -> u32;
}

/// The service (namespace, name) an address and port belong to.
pub trait ServiceGetter {
    fn service_of(&self, ip: IpAddr, port: u16, proto: u8) -> Option<(&str, &str)>;
}

/// The policies (namespace, name) behind a policy map entry; identity, proto and port 0
/// are the wildcards.
pub trait PolicyGetter {
    fn policies_matching(
        &self,
        ep_id: u16,
        egress: bool,
        identity: u32,
        proto: u8,
        port: u16,
        deny: bool,
    ) -> Vec<(&str, &str)>;
}

/// Everything enrichment needs, in one bound.
pub trait Getters:
    EndpointGetter + IdentityGetter + IpcacheGetter + ServiceGetter + PolicyGetter
{
}
impl<T: EndpointGetter + IdentityGetter + IpcacheGetter + ServiceGetter + PolicyGetter> Getters
    for T
{
}

/// Why an event did not become a flow. Callers count and skip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("captured packet has no IP header")]
    NotIp,
}

/// Builds flows; owns the uuid generator and a pool of buffers recycled from old flows.
pub struct Enricher<G> {
    getters: G,
    node_name: String,
    rng: u64,
    pool: Pool,
}

/// Strings and vectors taken from flows given back (`flow_into`), reused for new flows so
/// that a steady stream of flows allocates (almost) nothing.
#[derive(Default)]
struct Pool {
    strings: Vec<String>,
    string_vecs: Vec<Vec<String>>,
    workload_vecs: Vec<Vec<Workload>>,
}

const POOL_MAX: usize = 256;

impl Pool {
    /// A cleared buffer from the pool, or a new one of `cap` bytes.
    fn string(&mut self, cap: usize) -> String {
        match self.strings.pop() {
            Some(mut s) => {
                s.clear();
                s
            }
            None => String::with_capacity(cap),
        }
    }

    fn str(&mut self, v: &str) -> String {
        let mut s = self.string(v.len());
        s.push_str(v);
        s
    }

    fn ip(&mut self, ip: IpAddr) -> String {
        let mut s = self.string(39);
        match ip {
            IpAddr::V4(a) => {
                for (i, o) in a.octets().iter().enumerate() {
                    if i > 0 {
                        s.push('.');
                    }
                    push_dec(&mut s, *o);
                }
            }
            IpAddr::V6(_) => {
                use std::fmt::Write as _;
                let _ = write!(s, "{ip}");
            }
        }
        s
    }

    fn put(&mut self, s: String) {
        if s.capacity() > 0 && self.strings.len() < POOL_MAX {
            self.strings.push(s);
        }
    }

    fn put_endpoint(&mut self, e: Endpoint) {
        self.put(e.cluster_name);
        self.put(e.namespace);
        self.put(e.pod_name);
        let mut labels = e.labels;
        for l in labels.drain(..) {
            self.put(l);
        }
        if labels.capacity() > 0 && self.string_vecs.len() < POOL_MAX {
            self.string_vecs.push(labels);
        }
        let mut w = e.workloads;
        for x in w.drain(..) {
            self.put(x.name);
            self.put(x.kind);
        }
        if w.capacity() > 0 && self.workload_vecs.len() < POOL_MAX {
            self.workload_vecs.push(w);
        }
    }

    /// Takes every buffer out of a flow this enricher built.
    fn recycle(&mut self, f: Flow) {
        self.put(f.uuid);
        self.put(f.node_name);
        self.put(f.summary);
        if let Some(e) = f.ethernet {
            self.put(e.source);
            self.put(e.destination);
        }
        if let Some(ip) = f.ip {
            self.put(ip.source);
            self.put(ip.destination);
            self.put(ip.source_xlated);
        }
        if let Some(e) = f.source {
            self.put_endpoint(e);
        }
        if let Some(e) = f.destination {
            self.put_endpoint(e);
        }
        for svc in [f.source_service, f.destination_service]
            .into_iter()
            .flatten()
        {
            self.put(svc.name);
            self.put(svc.namespace);
        }
        if let Some(i) = f.interface {
            self.put(i.name);
        }
        if let Some(file) = f.file {
            self.put(file.name);
        }
    }
}

impl<G: Getters> Enricher<G> {
    pub fn new(getters: G, node_name: impl Into<String>) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((std::process::id() as u64) << 32);
        Self {
            getters,
            node_name: node_name.into(),
            rng: seed | 1,
            pool: Pool::default(),
        }
    }

    pub fn getters(&self) -> &G {
        &self.getters
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Decodes and enriches one raw perf sample.
    pub fn flow_from_sample(
        &mut self,
        sample: &[u8],
        time: SystemTime,
    ) -> Result<Flow, EnrichError> {
        let ev = crate::monitor::decode(sample)?;
        self.flow(&ev, time)
    }

    /// Like `flow_from_sample`, but writes into `out`, reusing the buffers of the flow it
    /// held (which must come from this enricher). On error `out` is left empty.
    pub fn flow_into_from_sample(
        &mut self,
        sample: &[u8],
        time: SystemTime,
        out: &mut Flow,
    ) -> Result<(), EnrichError> {
        let old = std::mem::take(out);
        self.pool.recycle(old);
        let ev = crate::monitor::decode(sample)?;
        *out = self.flow(&ev, time)?;
        Ok(())
    }

    /// Gives a flow's buffers back for reuse by the next flows.
    pub fn recycle(&mut self, flow: Flow) {
        self.pool.recycle(flow);
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        let hi = (a & !0xf000) | 0x4000; // version 4
        let lo = (b & !(0xc << 60)) | (0x8 << 60); // RFC 4122 variant
        let mut s = self.pool.string(36);
        push_hex(&mut s, hi >> 32, 8);
        s.push('-');
        push_hex(&mut s, (hi >> 16) & 0xffff, 4);
        s.push('-');
        push_hex(&mut s, hi & 0xffff, 4);
        s.push('-');
        push_hex(&mut s, lo >> 48, 4);
        s.push('-');
        push_hex(&mut s, lo & 0xffff_ffff_ffff, 12);
        s
    }

    /// Builds the flow of one decoded event observed at `time`.
    pub fn flow(&mut self, ev: &MonitorEvent<'_>, time: SystemTime) -> Result<Flow, EnrichError> {
        let hdr = *ev.header();
        let flags = match ev {
            MonitorEvent::Trace(t, _) => t.flags,
            MonitorEvent::Drop(d, _) => d.flags,
            MonitorEvent::PolicyVerdict(p, _) => {
                if p.flags & PV_FLAG_L3_DEV != 0 {
                    CLS_FLAG_L3_DEV
                } else {
                    0
                }
            }
        };
        let pkt = packet::parse(ev.packet(), flags & CLS_FLAG_L3_DEV != 0);
        let Some(ip) = pkt.ip else {
            return Err(EnrichError::NotIp);
        };

        let mut f = Flow {
            time: Some(timestamp(time)),
            uuid: self.uuid(),
            r#type: flow::FlowType::L3L4 as i32,
            node_name: self.pool.str(&self.node_name),
            event_type: Some(CiliumEventType {
                r#type: hdr.r#type as i32,
                sub_type: hdr.subtype as i32,
            }),
            summary: summary_into(self.pool.string(32), &pkt),
            ..Flow::default()
        };
        if let Some(e) = pkt.ethernet {
            f.ethernet = Some(Ethernet {
                source: mac_into(self.pool.string(17), &e.src),
                destination: mac_into(self.pool.string(17), &e.dst),
            });
        }
        let mut src_ip = ip.src;
        let mut ipf = Ip {
            source: self.pool.ip(ip.src),
            destination: self.pool.ip(ip.dst),
            ip_version: if ip.src.is_ipv4() {
                flow::IpVersion::IPv4 as i32
            } else {
                flow::IpVersion::IPv6 as i32
            },
            ..Ip::default()
        };
        f.l4 = pkt.l4.map(layer4);

        // Identities the datapath resolved (0 = let the agent look it up).
        let (src_label, dst_label) = match ev {
            MonitorEvent::Trace(t, _) => (t.src_label, t.dst_label),
            MonitorEvent::Drop(d, _) => (d.src_label, d.dst_label),
            MonitorEvent::PolicyVerdict(p, _) => {
                if p.flags & PV_FLAG_DIR_MASK == PV_FLAG_DIR_EGRESS {
                    (0, p.remote_label)
                } else {
                    (p.remote_label, 0)
                }
            }
        };

        match ev {
            MonitorEvent::Trace(t, _) => {
                f.verdict = flow::Verdict::Forwarded as i32;
                f.trace_observation_point = observation_point(hdr.subtype);
                let reason = t.reason & !TRACE_REASON_ENCRYPTED;
                ipf.encrypted = t.reason & TRACE_REASON_ENCRYPTED != 0;
                f.trace_reason = trace_reason(reason);
                if hdr.version >= 1
                    && let Some(orig) = orig_ip(&t.orig_ip, ip.src.is_ipv4())
                    && orig != ip.src
                {
                    ipf.source_xlated = self.pool.ip(ip.src);
                    ipf.source = self.pool.ip(orig);
                    src_ip = orig;
                }
                if t.ip_trace_id != 0 {
                    f.ip_trace_id = Some(flow::IpTraceId {
                        trace_id: t.ip_trace_id,
                        ip_option_type: 0,
                    });
                }
                if reason_known(reason) {
                    let is_reply = reason == TRACE_REASON_CT_REPLY;
                    f.is_reply = Some(BoolValue { value: is_reply });
                }
                f.interface = self.interface(t.ifindex);
            }
            MonitorEvent::Drop(d, _) => {
                f.verdict = flow::Verdict::Dropped as i32;
                f.drop_reason = hdr.subtype as u32;
                f.drop_reason_desc = hdr.subtype as i32;
                f.file = Some(FileInfo {
                    name: self.pool.str(file_name(d.file)),
                    line: d.line as u32,
                });
                f.interface = self.interface(d.ifindex);
            }
            MonitorEvent::PolicyVerdict(p, _) => {
                f.verdict = if p.verdict < 0 {
                    flow::Verdict::Dropped as i32
                } else if p.verdict > 0 {
                    flow::Verdict::Redirected as i32
                } else if p.flags & PV_FLAG_AUDITED != 0 {
                    flow::Verdict::Audit as i32
                } else {
                    flow::Verdict::Forwarded as i32
                };
                if p.verdict < 0 {
                    let code = p.verdict.unsigned_abs();
                    f.drop_reason = code;
                    f.drop_reason_desc = code as i32;
                } else {
                    f.is_reply = Some(BoolValue { value: false });
                }
                f.policy_match_type = ((p.flags & PV_MATCH_MASK) >> PV_MATCH_SHIFT) as u32;
                self.correlate(&mut f, p);
                f.traffic_direction = match p.flags & PV_FLAG_DIR_MASK {
                    PV_FLAG_DIR_INGRESS => flow::TrafficDirection::Ingress as i32,
                    PV_FLAG_DIR_EGRESS => flow::TrafficDirection::Egress as i32,
                    _ => flow::TrafficDirection::Unknown as i32,
                };
            }
        }
        f.reply = f.is_reply.map(|b| b.value).unwrap_or(false);
        f.ip = Some(ipf);

        let src = self.endpoint(src_ip, src_label);
        let dst = self.endpoint(ip.dst, dst_label);

        // Direction for trace and drop: is the event's endpoint the packet's source?
        if !matches!(ev, MonitorEvent::PolicyVerdict(..)) && hdr.source != 0 {
            let is_source_ep = u32::from(hdr.source) == src.id;
            f.traffic_direction = match ev {
                MonitorEvent::Drop(..) => direction(is_source_ep),
                MonitorEvent::Trace(t, _) if reason_known(t.reason & !TRACE_REASON_ENCRYPTED) => {
                    let is_reply = t.reason & !TRACE_REASON_ENCRYPTED == TRACE_REASON_CT_REPLY;
                    direction(is_source_ep != is_reply)
                }
                _ => flow::TrafficDirection::Unknown as i32,
            };
        }

        if let Some(l4) = pkt.l4 {
            let (sport, dport, proto) = match l4 {
                L4::Tcp { sport, dport, .. } => (sport, dport, 6),
                L4::Udp { sport, dport } => (sport, dport, 17),
                L4::Sctp { sport, dport } => (sport, dport, 132),
                _ => (0, 0, 0),
            };
            if proto != 0 {
                f.source_service = self.service(src_ip, sport, proto);
                f.destination_service = self.service(ip.dst, dport, proto);
            }
        }
        f.source = Some(src);
        f.destination = Some(dst);
        Ok(f)
    }

    /// Policy correlation: the policies whose entry decided a policy verdict.
    fn correlate(&mut self, f: &mut Flow, p: &crate::monitor::PolicyVerdictNotify) {
        let egress = p.flags & PV_FLAG_DIR_MASK == PV_FLAG_DIR_EGRESS;
        let deny = p.verdict < 0;
        if deny && p.verdict.unsigned_abs() != DROP_POLICY_DENY as u32 {
            return; // default deny: no policy to name
        }
        let id = p.remote_label;
        let port = if matches!(p.proto, 6 | 17 | 132) {
            p.dst_port
        } else {
            0
        };
        let (id, proto, port) = match ((p.flags & PV_MATCH_MASK) >> PV_MATCH_SHIFT) as u32 {
            1 => (id, 0, 0),
            2 => (id, p.proto, port),
            3 => (0, p.proto, port),
            4 => (0, 0, 0),
            5 => (id, p.proto, 0),
            6 => (0, p.proto, 0),
            _ => return,
        };
        let names = self
            .getters
            .policies_matching(p.hdr.source, egress, id, proto, port, deny);
        let policies: Vec<flow::Policy> = names
            .into_iter()
            .map(|(namespace, name)| flow::Policy {
                name: self.pool.str(name),
                namespace: self.pool.str(namespace),
                labels: vec![
                    "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy".to_string(),
                    format!("k8s:io.cilium.k8s.policy.name={name}"),
                    format!("k8s:io.cilium.k8s.policy.namespace={namespace}"),
                ],
                revision: 1,
                kind: self.pool.str("CiliumNetworkPolicy"),
            })
            .collect();
        match (egress, deny) {
            (false, false) => f.ingress_allowed_by = policies,
            (false, true) => f.ingress_denied_by = policies,
            (true, false) => f.egress_allowed_by = policies,
            (true, true) => f.egress_denied_by = policies,
        }
    }

    fn interface(&mut self, ifindex: u32) -> Option<NetworkInterface> {
        if ifindex == 0 {
            return None;
        }
        let name = self.getters.interface_name(ifindex).unwrap_or_default();
        Some(NetworkInterface {
            index: ifindex,
            name: self.pool.str(name),
        })
    }

    fn service(&mut self, ip: IpAddr, port: u16, proto: u8) -> Option<Service> {
        let (namespace, name) = self.getters.service_of(ip, port, proto)?;
        Some(Service {
            name: self.pool.str(name),
            namespace: self.pool.str(namespace),
        })
    }

    /// Hubble's endpoint resolution: a local endpoint by address, else the identity the
    /// datapath gave (or the ipcache's) with that identity's labels.
    fn endpoint(&mut self, ip: IpAddr, datapath_identity: u32) -> Endpoint {
        let pool = &mut self.pool;
        let mut labels = pool.string_vecs.pop().unwrap_or_default();
        labels.clear();
        if let Some(ep) = self.getters.endpoint_by_ip(ip) {
            labels.extend(ep.labels.iter().map(|l| pool.str(l)));
            let mut workloads = pool.workload_vecs.pop().unwrap_or_default();
            workloads.clear();
            if let Some((kind, name)) = &ep.workload {
                workloads.push(Workload {
                    name: pool.str(name),
                    kind: pool.str(kind),
                });
            }
            return Endpoint {
                id: ep.id as u32,
                identity: ep.identity,
                cluster_name: pool.str(&ep.cluster),
                namespace: pool.str(&ep.namespace),
                labels,
                pod_name: pool.str(&ep.pod_name),
                workloads,
            };
        }
        let identity = if datapath_identity != 0 {
            datapath_identity
        } else {
            self.getters.identity_of(ip)
        };
        match state::reserved_labels(identity) {
            Some(l) => labels.extend(l.iter().map(|s| pool.str(s))),
            None => {
                if let Some(l) = self.getters.labels_of(identity) {
                    labels.extend(l.iter().map(|s| pool.str(s)));
                }
            }
        }
        Endpoint {
            identity,
            labels,
            ..Endpoint::default()
        }
    }
}

fn direction(egress: bool) -> i32 {
    if egress {
        flow::TrafficDirection::Egress as i32
    } else {
        flow::TrafficDirection::Ingress as i32
    }
}

fn reason_known(reason: u8) -> bool {
    !matches!(
        reason,
        TRACE_REASON_UNKNOWN | TRACE_REASON_SRV6_ENCAP | TRACE_REASON_SRV6_DECAP
    )
}

/// Datapath trace reason → `TraceReason` enum value.
fn trace_reason(r: u8) -> i32 {
    match r {
        5 => 0,
        r if r < 5 => r as i32 + 1,
        r => r as i32,
    }
}

/// Datapath observation point → `TraceObservationPoint` (TO_LXC is TO_ENDPOINT = 101).
fn observation_point(p: u8) -> i32 {
    if p == TRACE_TO_LXC { 101 } else { p as i32 }
}

fn orig_ip(b: &[u8; 16], v4: bool) -> Option<IpAddr> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    Some(if v4 {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    } else {
        IpAddr::from(*b)
    })
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Appends a byte in decimal.
fn push_dec(s: &mut String, v: u8) {
    if v >= 100 {
        s.push((b'0' + v / 100) as char);
    }
    if v >= 10 {
        s.push((b'0' + (v / 10) % 10) as char);
    }
    s.push((b'0' + v % 10) as char);
}

/// Appends the low `digits` hex digits of `v`, zero padded.
fn push_hex(s: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        s.push(HEX[((v >> (i * 4)) & 0xf) as usize] as char);
    }
}

fn mac_into(mut s: String, m: &[u8; 6]) -> String {
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        push_hex(&mut s, *b as u64, 2);
    }
    s
}

/// Cilium's source file ids of drop notifications.
pub fn file_name(id: u8) -> &'static str {
    match id {
        1 => "bpf_host.c",
        2 => "bpf_lxc.c",
        3 => "bpf_overlay.c",
        4 => "bpf_xdp.c",
        5 => "bpf_sock.c",
        6 => "bpf_network.c",
        7 => "bpf_wireguard.c",
        101 => "drop.h",
        102 => "srv6.h",
        103 => "icmp6.h",
        104 => "nodeport.h",
        105 => "lb.h",
        106 => "mcast.h",
        107 => "ipv4.h",
        108 => "conntrack.h",
        109 => "local_delivery.h",
        110 => "trace.h",
        111 => "encap.h",
        112 => "host_firewall.h",
        113 => "nodeport_egress.h",
        114 => "ipv6.h",
        115 => "classifiers.h",
        _ => "",
    }
}

fn layer4(l4: L4) -> Layer4 {
    let p = match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => layer4::Protocol::Tcp(flow::Tcp {
            source_port: sport as u32,
            destination_port: dport as u32,
            flags: Some(TcpFlags {
                fin: flags & tcp_flags::FIN != 0,
                syn: flags & tcp_flags::SYN != 0,
                rst: flags & tcp_flags::RST != 0,
                psh: flags & tcp_flags::PSH != 0,
                ack: flags & tcp_flags::ACK != 0,
                urg: flags & tcp_flags::URG != 0,
                ece: flags & tcp_flags::ECE != 0,
                cwr: flags & tcp_flags::CWR != 0,
                ns: flags & tcp_flags::NS != 0,
            }),
        }),
        L4::Udp { sport, dport } => layer4::Protocol::Udp(flow::Udp {
            source_port: sport as u32,
            destination_port: dport as u32,
        }),
        L4::Sctp { sport, dport } => layer4::Protocol::Sctp(flow::Sctp {
            source_port: sport as u32,
            destination_port: dport as u32,
        }),
        L4::Icmpv4 { typ, code } => layer4::Protocol::IcmPv4(flow::IcmPv4 {
            r#type: typ as u32,
            code: code as u32,
        }),
        L4::Icmpv6 { typ, code } => layer4::Protocol::IcmPv6(flow::IcmPv6 {
            r#type: typ as u32,
            code: code as u32,
        }),
    };
    Layer4 { protocol: Some(p) }
}

/// Hubble's Summary: TCP flags, the ICMP type/code name, or the last decoded layer.
pub fn summary(p: &Packet) -> String {
    summary_into(String::new(), p)
}

/// `summary` written into a (cleared) buffer.
fn summary_into(mut s: String, p: &Packet) -> String {
    use std::fmt::Write as _;
    match p.l4 {
        Some(L4::Tcp { flags, .. }) => {
            s.push_str("TCP Flags: ");
            let names = [
                (tcp_flags::SYN, "SYN"),
                (tcp_flags::ACK, "ACK"),
                (tcp_flags::RST, "RST"),
                (tcp_flags::FIN, "FIN"),
                (tcp_flags::PSH, "PSH"),
                (tcp_flags::URG, "URG"),
                (tcp_flags::ECE, "ECE"),
                (tcp_flags::CWR, "CWR"),
                (tcp_flags::NS, "NS"),
            ];
            let mut first = true;
            for (bit, name) in names {
                if flags & bit != 0 {
                    if !first {
                        s.push_str(", ");
                    }
                    s.push_str(name);
                    first = false;
                }
            }
        }
        Some(L4::Icmpv4 { typ, code }) => {
            let _ = write!(s, "ICMPv4 {}", icmpv4_type_code(typ, code));
        }
        Some(L4::Icmpv6 { typ, code }) => {
            let _ = write!(s, "ICMPv6 {}", icmpv6_type_code(typ, code));
        }
        Some(L4::Udp { .. }) => s.push_str("UDP"),
        Some(L4::Sctp { .. }) => s.push_str("SCTP"),
        None => s.push_str(p.last.name()),
    }
    s
}

fn type_code(name: Option<(&str, Option<&str>, bool)>, typ: u8, code: u8) -> String {
    match name {
        None => format!("{typ}({code})"),
        Some((t, _, false)) if code == 0 => t.to_string(),
        Some((t, Some(c), true)) => format!("{t}({c})"),
        Some((t, _, _)) => format!("{t}(Code: {code})"),
    }
}

/// gopacket's ICMPv4TypeCode.String().
pub fn icmpv4_type_code(typ: u8, code: u8) -> String {
    let unreach = [
        "Net",
        "Host",
        "Protocol",
        "Port",
        "FragmentationNeeded",
        "SourceRoutingFailed",
        "NetUnknown",
        "HostUnknown",
        "SourceIsolated",
        "NetAdminProhibited",
        "HostAdminProhibited",
        "NetTOS",
        "HostTOS",
        "CommAdminProhibited",
        "HostPrecedence",
        "PrecedenceCutoff",
    ];
    let with_codes = |t: &'static str, codes: &[&'static str]| {
        Some((t, codes.get(code as usize).copied(), true))
    };
    let info = match typ {
        0 => Some(("EchoReply", None, false)),
        3 => with_codes("DestinationUnreachable", &unreach),
        4 => Some(("SourceQuench", None, false)),
        5 => with_codes("Redirect", &["Net", "Host", "TOS+Net", "TOS+Host"]),
        8 => Some(("EchoRequest", None, false)),
        9 => Some(("RouterAdvertisement", None, false)),
        10 => Some(("RouterSolicitation", None, false)),
        11 => with_codes(
            "TimeExceeded",
            &["TTLExceeded", "FragmentReassemblyTimeExceeded"],
        ),
        12 => with_codes(
            "ParameterProblem",
            &["PointerIndicatesError", "MissingOption", "BadLength"],
        ),
        13 => Some(("TimestampRequest", None, false)),
        14 => Some(("TimestampReply", None, false)),
        15 => Some(("InfoRequest", None, false)),
        16 => Some(("InfoReply", None, false)),
        17 => Some(("AddressMaskRequest", None, false)),
        18 => Some(("AddressMaskReply", None, false)),
        _ => None,
    };
    type_code(info, typ, code)
}

/// gopacket's ICMPv6TypeCode.String().
pub fn icmpv6_type_code(typ: u8, code: u8) -> String {
    let with_codes = |t: &'static str, codes: &[&'static str]| {
        Some((t, codes.get(code as usize).copied(), true))
    };
    let info = match typ {
        1 => with_codes(
            "DestinationUnreachable",
            &[
                "NoRouteToDst",
                "AdminProhibited",
                "BeyondScopeOfSrc",
                "AddressUnreachable",
                "PortUnreachable",
                "SrcAddressFailedPolicy",
                "RejectRouteToDst",
            ],
        ),
        2 => Some(("PacketTooBig", None, false)),
        3 => with_codes(
            "TimeExceeded",
            &["HopLimitExceeded", "FragmentReassemblyTimeExceeded"],
        ),
        4 => with_codes(
            "ParameterProblem",
            &[
                "ErroneousHeaderField",
                "UnrecognizedNextHeader",
                "UnrecognizedIPv6Option",
            ],
        ),
        128 => Some(("EchoRequest", None, false)),
        129 => Some(("EchoReply", None, false)),
        133 => Some(("RouterSolicitation", None, false)),
        134 => Some(("RouterAdvertisement", None, false)),
        135 => Some(("NeighborSolicitation", None, false)),
        136 => Some(("NeighborAdvertisement", None, false)),
        137 => Some(("Redirect", None, false)),
        _ => None,
    };
    type_code(info, typ, code)
}

#[cfg(test)]
mod tests;
