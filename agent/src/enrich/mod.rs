//! Enrichment: a decoded monitor event plus what the agent knows (endpoints, identities,
//! ipcache, services) becomes a Hubble `Flow`, filled the way Hubble's L3/L4 parser fills it.

// Hubble still fills the deprecated `summary`, `drop_reason` and `reply` fields.
#![allow(deprecated)]

pub mod fqdn;
pub mod getters;

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hubble_api::flow::{
    self, CiliumEventType, Endpoint, Ethernet, FileInfo, Flow, Ip, Layer4, NetworkInterface,
    Service, TcpFlags, Workload, layer4,
};
use pbjson_types::{BoolValue, Timestamp};

pub use crate::model::{EndpointInfo, NodeState};
use crate::monitor::abi::*;
use crate::monitor::packet::{self, L4, Packet, tcp_flags};
use crate::monitor::{DecodeError, MonitorEvent};

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

/// Names a local endpoint resolved for an address (Hubble's DNSGetter): written into `out`,
/// names whose TTL ran out before `now` (Unix seconds) left out.
pub trait DnsGetter {
    fn names_into(&self, endpoint_id: u32, ip: IpAddr, now: i64, out: &mut Vec<String>);
}

/// The names the L7 parsers learn from DNS answers, read back as a [`DnsGetter`].
pub trait DnsStore: DnsGetter + Send {
    /// `ep` resolved `name` to `ip`, valid for `ttl` seconds from `now` (Unix seconds).
    fn learn(&mut self, ep: u32, ip: IpAddr, name: &str, ttl: u32, now: i64);
    /// True when no name is known (enrichment skips the lookups).
    fn is_empty(&self) -> bool;
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

/// Builds flows; owns the uuid generator.
pub struct Enricher<G> {
    getters: G,
    node_name: String,
    rng: u64,
    /// Recently formatted addresses (IP and MAC strings repeat from flow to flow).
    strings: StringCache,
    /// The summary of every combination of the 9 TCP flags.
    tcp_summaries: Vec<String>,
    /// Names learnt from observed DNS answers (filled by the L7 engine).
    dns: Box<dyn DnsStore>,
    /// Services taken off reused flows, refilled when the next flow has one (a request
    /// and its response swap which side has the service).
    spare_services: Vec<Service>,
}

/// A direct-mapped cache of formatted IP and MAC addresses.
struct StringCache {
    ips: Vec<(IpAddr, String)>,
    macs: Vec<([u8; 6], String)>,
}

const STRING_CACHE_SLOTS: usize = 64;

impl StringCache {
    fn new() -> Self {
        let zero_ip = IpAddr::from([0u8; 4]);
        let mut zero_mac = String::new();
        mac_push(&mut zero_mac, &[0; 6]);
        Self {
            ips: vec![(zero_ip, zero_ip.to_string()); STRING_CACHE_SLOTS],
            macs: vec![([0; 6], zero_mac); STRING_CACHE_SLOTS],
        }
    }

    fn slot(h: u64) -> usize {
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % STRING_CACHE_SLOTS
    }

    /// `out` = the string of `ip`.
    fn ip(&mut self, out: &mut String, ip: IpAddr) {
        let h = match ip {
            IpAddr::V4(a) => u32::from(a) as u64,
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v as u64) ^ ((v >> 64) as u64).rotate_left(17) ^ 1
            }
        };
        let e = &mut self.ips[Self::slot(h)];
        if e.0 != ip {
            ip_into(&mut e.1, ip);
            e.0 = ip;
        }
        set_str(out, &e.1);
    }

    /// `out` = the string of `mac`.
    fn mac(&mut self, out: &mut String, mac: &[u8; 6]) {
        let mut k = [0u8; 8];
        k[..6].copy_from_slice(mac);
        let e = &mut self.macs[Self::slot(u64::from_le_bytes(k))];
        if e.0 != *mac {
            e.1.clear();
            mac_push(&mut e.1, mac);
            e.0 = *mac;
        }
        set_str(out, &e.1);
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
            strings: StringCache::new(),
            tcp_summaries: (0..512u16)
                .map(|flags| {
                    let mut s = String::new();
                    tcp_summary_push(&mut s, flags);
                    s
                })
                .collect(),
            dns: Box::new(fqdn::DnsCache::new()),
            spare_services: Vec::new(),
        }
    }

    /// Replaces the lookups (a new snapshot of the model); the DNS cache and the rest stay.
    pub fn set_getters(&mut self, getters: G) {
        self.getters = getters;
    }

    /// The DNS cache behind `source_names` / `destination_names`.
    pub fn dns_mut(&mut self) -> &mut dyn DnsStore {
        self.dns.as_mut()
    }

    /// The same enricher with `dns` answering for names (tests fake it).
    pub fn with_dns(mut self, dns: Box<dyn DnsStore>) -> Self {
        self.dns = dns;
        self
    }

    /// FQDN enrichment, as Hubble does it: the names the source endpoint resolved for the
    /// destination address, and the names the destination endpoint resolved for the source.
    fn names_into(&self, f: &mut Flow, src_ip: IpAddr, dst_ip: IpAddr, now: i64) {
        if self.dns.is_empty() {
            return;
        }
        let src_ep = f.source.as_ref().map_or(0, |e| e.id);
        let dst_ep = f.destination.as_ref().map_or(0, |e| e.id);
        if src_ep != 0 {
            self.dns
                .names_into(src_ep, dst_ip, now, &mut f.destination_names);
        }
        if dst_ep != 0 {
            self.dns
                .names_into(dst_ep, src_ip, now, &mut f.source_names);
        }
    }

    /// The L3/L4 part of an L7 flow, from the captured packet (Hubble's L7 parser fills no
    /// Ethernet, interface, TCP flags or observation point): endpoints, identities,
    /// services, names, verdict FORWARDED, type L7, event type 129 (access log).
    #[allow(clippy::too_many_arguments)]
    pub fn fill_l7_base(
        &mut self,
        p: &Packet,
        src_label: u32,
        dst_label: u32,
        time: SystemTime,
        f: &mut Flow,
    ) {
        // The L7 record is refilled in place by the caller: keep its buffers.
        let l7 = f.l7.take();
        reset_rare(f);
        f.l7 = l7;
        f.time = Some(timestamp(time));
        self.uuid_into(&mut f.uuid);
        f.r#type = flow::FlowType::L7 as i32;
        set_str(&mut f.node_name, &self.node_name);
        f.event_type = Some(CiliumEventType {
            r#type: MSG_ACCESS_LOG as i32,
            sub_type: 0,
        });
        f.verdict = flow::Verdict::Forwarded as i32;
        f.summary.clear();
        f.ethernet = None;
        f.interface = None;
        f.l4 = l7_layer4(p.l4);
        let Some(ip) = p.ip else {
            f.ip = None;
            f.source = None;
            f.destination = None;
            f.source_service = None;
            f.destination_service = None;
            return;
        };
        let ipf = f.ip.get_or_insert_with(Ip::default);
        self.strings.ip(&mut ipf.source, ip.src);
        self.strings.ip(&mut ipf.destination, ip.dst);
        ipf.source_xlated.clear();
        ipf.encrypted = false;
        ipf.ip_version = if ip.src.is_ipv4() {
            flow::IpVersion::IPv4 as i32
        } else {
            flow::IpVersion::IPv6 as i32
        };
        let src = f.source.get_or_insert_with(Endpoint::default);
        self.endpoint_into(src, ip.src, src_label);
        let dst = f.destination.get_or_insert_with(Endpoint::default);
        self.endpoint_into(dst, ip.dst, dst_label);
        let (sport, dport, proto) = match p.l4 {
            Some(L4::Tcp { sport, dport, .. }) => (sport, dport, 6),
            Some(L4::Udp { sport, dport }) => (sport, dport, 17),
            _ => (0, 0, 0),
        };
        if proto != 0 {
            self.service_into(&mut f.source_service, ip.src, sport, proto);
            self.service_into(&mut f.destination_service, ip.dst, dport, proto);
        } else {
            f.source_service = None;
            f.destination_service = None;
        }
        let now = f.time.map_or(0, |t| t.seconds);
        self.names_into(f, ip.src, ip.dst, now);
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

    /// Like `flow_from_sample`, but writes into `out`, reusing the strings and vectors of
    /// the flow it held (see [`Enricher::fill`]). On error `out` is left empty.
    pub fn flow_into_from_sample(
        &mut self,
        sample: &[u8],
        time: SystemTime,
        out: &mut Flow,
    ) -> Result<(), EnrichError> {
        let res = match crate::monitor::decode(sample) {
            Ok(ev) => self.fill(&ev, time, out),
            Err(e) => Err(e.into()),
        };
        if res.is_err() {
            *out = Flow::default();
        }
        res
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random (version 4) UUID written into `s`.
    fn uuid_into(&mut self, s: &mut String) {
        let a = self.next_u64();
        let b = self.next_u64();
        let hi = (a & !0xf000) | 0x4000; // version 4
        let lo = (b & !(0xc << 60)) | (0x8 << 60); // RFC 4122 variant
        let mut buf = [b'-'; 36];
        hex_into(&mut buf[0..8], hi >> 32);
        hex_into(&mut buf[9..13], (hi >> 16) & 0xffff);
        hex_into(&mut buf[14..18], hi & 0xffff);
        hex_into(&mut buf[19..23], lo >> 48);
        hex_into(&mut buf[24..36], lo & 0xffff_ffff_ffff);
        s.clear();
        push_ascii(s, &buf);
    }

    /// Builds the flow of one decoded event observed at `time`.
    pub fn flow(&mut self, ev: &MonitorEvent<'_>, time: SystemTime) -> Result<Flow, EnrichError> {
        let mut f = Flow::default();
        self.fill(ev, time, &mut f)?;
        Ok(f)
    }

    /// Writes the flow of one decoded event into `f`, reusing its strings and vectors: a
    /// flow that held an event of the same kind is refilled without allocating. Every field
    /// is written or reset, whatever `f` held before.
    pub fn fill(
        &mut self,
        ev: &MonitorEvent<'_>,
        time: SystemTime,
        f: &mut Flow,
    ) -> Result<(), EnrichError> {
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
        reset_rare(f);

        f.time = Some(timestamp(time));
        self.uuid_into(&mut f.uuid);
        f.r#type = flow::FlowType::L3L4 as i32;
        set_str(&mut f.node_name, &self.node_name);
        f.event_type = Some(CiliumEventType {
            r#type: hdr.r#type as i32,
            sub_type: hdr.subtype as i32,
        });
        match pkt.l4 {
            Some(L4::Tcp { flags, .. }) => set_str(
                &mut f.summary,
                &self.tcp_summaries[(flags & 0x1ff) as usize],
            ),
            _ => {
                f.summary.clear();
                summary_push(&mut f.summary, &pkt);
            }
        }
        match pkt.ethernet {
            Some(e) => {
                let eth = f.ethernet.get_or_insert_with(Ethernet::default);
                self.strings.mac(&mut eth.source, &e.src);
                self.strings.mac(&mut eth.destination, &e.dst);
            }
            None => f.ethernet = None,
        }
        let mut src_ip = ip.src;
        let ipf = f.ip.get_or_insert_with(Ip::default);
        self.strings.ip(&mut ipf.source, ip.src);
        self.strings.ip(&mut ipf.destination, ip.dst);
        ipf.source_xlated.clear();
        ipf.ip_version = if ip.src.is_ipv4() {
            flow::IpVersion::IPv4 as i32
        } else {
            flow::IpVersion::IPv6 as i32
        };
        ipf.encrypted = false;
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
                    self.strings.ip(&mut ipf.source_xlated, ip.src);
                    self.strings.ip(&mut ipf.source, orig);
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
                self.interface_into(&mut f.interface, t.ifindex);
            }
            MonitorEvent::Drop(d, _) => {
                f.verdict = flow::Verdict::Dropped as i32;
                f.drop_reason = hdr.subtype as u32;
                f.drop_reason_desc = hdr.subtype as i32;
                let file = f.file.get_or_insert_with(FileInfo::default);
                set_str(&mut file.name, file_name(d.file));
                file.line = d.line as u32;
                self.interface_into(&mut f.interface, d.ifindex);
            }
            MonitorEvent::PolicyVerdict(p, _) => {
                f.interface = None;
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
                self.correlate(f, p);
                f.traffic_direction = match p.flags & PV_FLAG_DIR_MASK {
                    PV_FLAG_DIR_INGRESS => flow::TrafficDirection::Ingress as i32,
                    PV_FLAG_DIR_EGRESS => flow::TrafficDirection::Egress as i32,
                    _ => flow::TrafficDirection::Unknown as i32,
                };
            }
        }
        f.reply = f.is_reply.map(|b| b.value).unwrap_or(false);

        let src = f.source.get_or_insert_with(Endpoint::default);
        self.endpoint_into(src, src_ip, src_label);
        let src_id = src.id;
        let dst = f.destination.get_or_insert_with(Endpoint::default);
        self.endpoint_into(dst, ip.dst, dst_label);

        // Direction for trace and drop: is the event's endpoint the packet's source?
        if !matches!(ev, MonitorEvent::PolicyVerdict(..)) && hdr.source != 0 {
            let is_source_ep = u32::from(hdr.source) == src_id;
            f.traffic_direction = match ev {
                MonitorEvent::Drop(..) => direction(is_source_ep),
                MonitorEvent::Trace(t, _) if reason_known(t.reason & !TRACE_REASON_ENCRYPTED) => {
                    let is_reply = t.reason & !TRACE_REASON_ENCRYPTED == TRACE_REASON_CT_REPLY;
                    direction(is_source_ep != is_reply)
                }
                _ => flow::TrafficDirection::Unknown as i32,
            };
        }

        let (sport, dport, proto) = match pkt.l4 {
            Some(L4::Tcp { sport, dport, .. }) => (sport, dport, 6),
            Some(L4::Udp { sport, dport }) => (sport, dport, 17),
            Some(L4::Sctp { sport, dport }) => (sport, dport, 132),
            _ => (0, 0, 0),
        };
        if proto != 0 {
            self.service_into(&mut f.source_service, src_ip, sport, proto);
            self.service_into(&mut f.destination_service, ip.dst, dport, proto);
        } else {
            f.source_service = None;
            f.destination_service = None;
        }
        let now = f.time.map_or(0, |t| t.seconds);
        self.names_into(f, src_ip, ip.dst, now);
        Ok(())
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
            .map(|(namespace, name)| {
                // A cluster-wide policy has no namespace (and no namespace label).
                let kind = if namespace.is_empty() {
                    "CiliumClusterwideNetworkPolicy"
                } else {
                    "CiliumNetworkPolicy"
                };
                let mut labels = vec![
                    format!("k8s:io.cilium.k8s.policy.derived-from={kind}"),
                    format!("k8s:io.cilium.k8s.policy.name={name}"),
                ];
                if !namespace.is_empty() {
                    labels.push(format!("k8s:io.cilium.k8s.policy.namespace={namespace}"));
                }
                flow::Policy {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    labels,
                    revision: 1,
                    kind: kind.to_string(),
                }
            })
            .collect();
        match (egress, deny) {
            (false, false) => f.ingress_allowed_by = policies,
            (false, true) => f.ingress_denied_by = policies,
            (true, false) => f.egress_allowed_by = policies,
            (true, true) => f.egress_denied_by = policies,
        }
    }

    fn interface_into(&self, out: &mut Option<NetworkInterface>, ifindex: u32) {
        if ifindex == 0 {
            *out = None;
            return;
        }
        let name = self.getters.interface_name(ifindex).unwrap_or_default();
        let i = out.get_or_insert_with(NetworkInterface::default);
        i.index = ifindex;
        set_str(&mut i.name, name);
    }

    fn service_into(&mut self, out: &mut Option<Service>, ip: IpAddr, port: u16, proto: u8) {
        match self.getters.service_of(ip, port, proto) {
            Some((namespace, name)) => {
                let s = out.get_or_insert_with(|| self.spare_services.pop().unwrap_or_default());
                set_str(&mut s.name, name);
                set_str(&mut s.namespace, namespace);
            }
            None => {
                if let Some(s) = out.take()
                    && self.spare_services.len() < 4
                {
                    self.spare_services.push(s);
                }
            }
        }
    }

    /// Hubble's endpoint resolution: a local endpoint by address, else the identity the
    /// datapath gave (or the ipcache's) with that identity's labels.
    fn endpoint_into(&self, out: &mut Endpoint, ip: IpAddr, datapath_identity: u32) {
        if let Some(ep) = self.getters.endpoint_by_ip(ip) {
            // Another node's pod: no endpoint id or workload here, as in Hubble.
            let (id, workload) = match ep.local {
                true => (ep.id as u32, &ep.workload),
                false => (0, &None),
            };
            // A reused flow often holds this very endpoint already: comparing only reads.
            if out.id == id
                && out.identity == ep.identity
                && out.pod_name == ep.pod_name
                && out.namespace == ep.namespace
                && out.cluster_name == ep.cluster
                && out.labels == ep.labels
                && match (workload, out.workloads.as_slice()) {
                    (Some((kind, name)), [w]) => w.kind == *kind && w.name == *name,
                    (None, []) => true,
                    _ => false,
                }
            {
                return;
            }
            out.id = id;
            out.identity = ep.identity;
            set_str(&mut out.cluster_name, &ep.cluster);
            set_str(&mut out.namespace, &ep.namespace);
            set_str(&mut out.pod_name, &ep.pod_name);
            set_strs(&mut out.labels, &ep.labels);
            match workload {
                Some((kind, name)) => {
                    out.workloads.truncate(1);
                    if out.workloads.is_empty() {
                        out.workloads.push(Workload::default());
                    }
                    set_str(&mut out.workloads[0].name, name);
                    set_str(&mut out.workloads[0].kind, kind);
                }
                None => out.workloads.clear(),
            }
            return;
        }
        let identity = if datapath_identity != 0 {
            datapath_identity
        } else {
            self.getters.identity_of(ip)
        };
        out.id = 0;
        out.identity = identity;
        out.cluster_name.clear();
        out.namespace.clear();
        out.pod_name.clear();
        out.workloads.clear();
        match crate::model::reserved_labels(identity) {
            Some(l) => set_strs(&mut out.labels, l),
            None => match self.getters.labels_of(identity) {
                Some(l) => set_strs(&mut out.labels, l),
                None => out.labels.clear(),
            },
        }
    }
}

/// Resets the fields `fill` writes only for some events (the exhaustive pattern makes a new
/// field of `Flow` a compile error here until it is handled).
fn reset_rare(f: &mut Flow) {
    let Flow {
        time: _,
        uuid: _,
        emitter,
        verdict: _,
        drop_reason,
        auth_type,
        ethernet: _,
        ip: _,
        l4: _,
        tunnel,
        source: _,
        destination: _,
        r#type: _,
        node_name: _,
        node_labels,
        source_names,
        destination_names,
        l7,
        reply: _,
        event_type: _,
        source_service: _,
        destination_service: _,
        traffic_direction,
        policy_match_type,
        trace_observation_point,
        trace_reason,
        file,
        ip_trace_id,
        drop_reason_desc,
        is_reply,
        debug_capture_point,
        interface: _,
        proxy_port,
        trace_context,
        sock_xlate_point,
        socket_cookie,
        cgroup_id,
        summary: _,
        extensions,
        egress_allowed_by,
        ingress_allowed_by,
        egress_denied_by,
        ingress_denied_by,
        policy_log,
        aggregate,
    } = f;
    *emitter = None;
    *drop_reason = 0;
    *auth_type = 0;
    *tunnel = None;
    node_labels.clear();
    source_names.clear();
    destination_names.clear();
    *l7 = None;
    *traffic_direction = 0;
    *policy_match_type = 0;
    *trace_observation_point = 0;
    *trace_reason = 0;
    *file = None;
    *ip_trace_id = None;
    *drop_reason_desc = 0;
    *is_reply = None;
    *debug_capture_point = 0;
    *proxy_port = 0;
    *trace_context = None;
    *sock_xlate_point = 0;
    *socket_cookie = 0;
    *cgroup_id = 0;
    *extensions = None;
    egress_allowed_by.clear();
    ingress_allowed_by.clear();
    egress_denied_by.clear();
    ingress_denied_by.clear();
    policy_log.clear();
    *aggregate = None;
}

/// `dst = src`, reusing dst's buffer.
pub(crate) fn set_str(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

/// `dst = src`, reusing dst's strings.
fn set_strs<S: AsRef<str>>(dst: &mut Vec<String>, src: &[S]) {
    dst.truncate(src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        set_str(d, s.as_ref());
    }
    let have = dst.len();
    dst.extend(src[have..].iter().map(|s| s.as_ref().to_string()));
}

/// Writes an address the way Go's net.IP.String() does (IPv4 dotted, IPv6 RFC 5952).
pub(crate) fn ip_into(s: &mut String, ip: IpAddr) {
    s.clear();
    match ip {
        IpAddr::V4(a) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + (o / 10) % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            push_ascii(s, &buf[..n]);
        }
        IpAddr::V6(_) => {
            use std::fmt::Write as _;
            let _ = write!(s, "{ip}");
        }
    }
}

/// Appends ASCII bytes (digits and separators built on the stack) without UTF-8 validation.
fn push_ascii(s: &mut String, b: &[u8]) {
    if b.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        s.push_str(unsafe { std::str::from_utf8_unchecked(b) });
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

/// A protobuf Timestamp of `t` (the epoch for times before it).
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Writes the low `out.len()` hex digits of `v`, zero padded.
fn hex_into(out: &mut [u8], mut v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn mac_push(s: &mut String, m: &[u8; 6]) {
    let mut buf = [b':'; 17];
    for (i, b) in m.iter().enumerate() {
        hex_into(&mut buf[i * 3..i * 3 + 2], *b as u64);
    }
    push_ascii(s, &buf);
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
    let mut s = String::new();
    summary_push(&mut s, p);
    s
}

/// Hubble's summary of TCP flags, e.g. `TCP Flags: SYN, ACK`.
fn tcp_summary_push(s: &mut String, flags: u16) {
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

/// `summary` appended to `s`.
fn summary_push(s: &mut String, p: &Packet) {
    use std::fmt::Write as _;
    match p.l4 {
        Some(L4::Tcp { flags, .. }) => tcp_summary_push(s, flags),
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

/// The L4 of an L7 flow: ports only, as Hubble's L7 parser fills it.
pub fn l7_layer4(l4: Option<L4>) -> Option<flow::Layer4> {
    let p = match l4? {
        L4::Tcp { sport, dport, .. } => flow::layer4::Protocol::Tcp(flow::Tcp {
            source_port: sport as u32,
            destination_port: dport as u32,
            flags: None,
        }),
        L4::Udp { sport, dport } => flow::layer4::Protocol::Udp(flow::Udp {
            source_port: sport as u32,
            destination_port: dport as u32,
        }),
        _ => return None,
    };
    Some(flow::Layer4 { protocol: Some(p) })
}

#[cfg(test)]
mod tests;
