//! One FlowFilter compiled for matching: values parsed, regexes and selectors built once, so
//! that deciding whether a Flow matches allocates nothing (every set field must match).

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;

use hubble_api::flow::{
    self, Endpoint, EventTypeFilter, Flow, FlowFilter, HttpHeader, NetworkInterface, TcpFlags,
    Workload, layer4, layer7,
};
use ipnet::IpNet;
use regex::Regex;

use super::FilterError;
use super::cel::Program;
use super::labels::Selector;
use super::patterns::{compile_fqdn_patterns, compile_node_name_patterns};
use super::regexes::RegexBudget;

/// Monitor message type of L7 (access log) events; HTTP filters require it.
const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// Protocol bits: one per L4 / L7 protocol name Hubble accepts.
mod proto_bit {
    pub const TCP: u16 = 1;
    pub const UDP: u16 = 1 << 1;
    pub const ICMPV4: u16 = 1 << 2;
    pub const ICMPV6: u16 = 1 << 3;
    pub const SCTP: u16 = 1 << 4;
    pub const VRRP: u16 = 1 << 5;
    pub const IGMP: u16 = 1 << 6;
    pub const DNS: u16 = 1 << 7;
    pub const HTTP: u16 = 1 << 8;
    pub const KAFKA: u16 = 1 << 9;
}

/// Exact addresses (compared as strings, like Hubble) and CIDR prefixes.
#[derive(Debug, Clone, Default)]
pub(crate) struct IpMatcher {
    pub(crate) exact: Vec<String>,
    pub(crate) prefixes: Vec<IpNet>,
}

impl IpMatcher {
    fn compile(field: &'static str, values: &[String]) -> Result<Option<Self>, FilterError> {
        if values.is_empty() {
            return Ok(None);
        }
        let mut m = IpMatcher::default();
        for v in values {
            if v.contains('/') {
                let net = IpNet::from_str(v).map_err(|_| invalid(field, v, "invalid CIDR"))?;
                m.prefixes.push(net);
            } else {
                IpAddr::from_str(v).map_err(|_| invalid(field, v, "invalid IP address"))?;
                m.exact.push(v.clone());
            }
        }
        Ok(Some(m))
    }

    fn matches(&self, ip: &str) -> bool {
        if ip.is_empty() {
            return false;
        }
        if self.exact.iter().any(|e| e == ip) {
            return true;
        }
        if self.prefixes.is_empty() {
            return false;
        }
        match IpAddr::from_str(ip) {
            Ok(addr) => self.prefixes.iter().any(|p| p.contains(&addr)),
            Err(_) => false,
        }
    }
}

/// `namespace/name-prefix`; empty parts match anything.
#[derive(Debug, Clone)]
pub(crate) struct NamespacedName {
    pub(crate) namespace: String,
    pub(crate) prefix: String,
}

impl NamespacedName {
    fn parse(s: &str) -> NamespacedName {
        let mut parts = s.split('/');
        let first = parts.next().unwrap_or_default();
        let (namespace, prefix) = match parts.next() {
            Some(name) => (first, name),
            None if first.is_empty() => ("", ""),
            None => ("default", first),
        };
        NamespacedName {
            namespace: namespace.to_string(),
            prefix: prefix.to_string(),
        }
    }

    fn compile_list(
        field: &'static str,
        values: &[String],
    ) -> Result<Vec<NamespacedName>, FilterError> {
        values
            .iter()
            .map(|v| {
                if v.is_empty() {
                    Err(invalid(field, v, "name must not be empty"))
                } else {
                    Ok(NamespacedName::parse(v))
                }
            })
            .collect()
    }
}

fn names_match(filters: &[NamespacedName], ns: &str, name: &str) -> bool {
    if ns.is_empty() && name.is_empty() {
        return false;
    }
    filters.iter().any(|f| {
        (f.prefix.is_empty() || name.starts_with(&f.prefix))
            && (f.namespace.is_empty() || f.namespace == ns)
    })
}

/// `^[1-5][0-9]{2}$` exact codes and `^[1-5][0-9]?\+$` prefixes.
#[derive(Debug, Clone, Default)]
struct HttpStatusMatcher {
    exact: Vec<u32>,
    prefixes: Vec<String>,
}

impl HttpStatusMatcher {
    fn compile(values: &[String]) -> Result<Option<Self>, FilterError> {
        if values.is_empty() {
            return Ok(None);
        }
        let mut m = HttpStatusMatcher::default();
        for v in values {
            let b = v.as_bytes();
            let lead = |c: u8| (b'1'..=b'5').contains(&c);
            match b {
                [a, x, y] if lead(*a) && x.is_ascii_digit() && y.is_ascii_digit() => {
                    m.exact.push(v.parse().unwrap_or_default());
                }
                [a, b'+'] if lead(*a) => m.prefixes.push(v[..1].to_string()),
                [a, x, b'+'] if lead(*a) && x.is_ascii_digit() => {
                    m.prefixes.push(v[..2].to_string());
                }
                _ => {
                    return Err(invalid(
                        "http_status_code",
                        v,
                        "invalid status code prefix, expected e.g. \"404\", \"40+\" or \"5+\"",
                    ));
                }
            }
        }
        Ok(Some(m))
    }

    fn matches(&self, code: u32) -> bool {
        if code == 0 {
            return false;
        }
        if self.exact.contains(&code) {
            return true;
        }
        // The code as Go's "%03d" prints it.
        let mut buf = [b'0'; 10];
        let mut n = code;
        let mut i = buf.len();
        while n > 0 {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let start = i.min(buf.len() - 3);
        let digits = &buf[start..];
        self.prefixes
            .iter()
            .any(|p| digits.starts_with(p.as_bytes()))
    }
}

/// A compiled FlowFilter. Empty vectors / `None` mean "field not set".
#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledFilter {
    uuid: Vec<String>,
    verdict: Vec<i32>,
    drop_reason_desc: Vec<i32>,
    traffic_direction: Vec<i32>,
    ip_version: Vec<i32>,
    event_type: Vec<EventTypeFilter>,
    reply: Vec<bool>,
    encrypted: Vec<bool>,
    source_identity: Vec<u32>,
    destination_identity: Vec<u32>,
    protocol: u16,
    source_port: Vec<u16>,
    destination_port: Vec<u16>,
    source_ip: Option<IpMatcher>,
    destination_ip: Option<IpMatcher>,
    source_ip_xlated: Option<IpMatcher>,
    source_pod: Vec<NamespacedName>,
    destination_pod: Vec<NamespacedName>,
    source_service: Vec<NamespacedName>,
    destination_service: Vec<NamespacedName>,
    source_workload: Vec<Workload>,
    destination_workload: Vec<Workload>,
    source_cluster_name: Vec<String>,
    destination_cluster_name: Vec<String>,
    source_fqdn: Option<Regex>,
    destination_fqdn: Option<Regex>,
    dns_query: Vec<Regex>,
    source_label: Vec<Selector>,
    destination_label: Vec<Selector>,
    node_labels: Vec<Selector>,
    node_name: Option<Regex>,
    http_status: Option<HttpStatusMatcher>,
    http_method: Vec<String>,
    http_path: Vec<Regex>,
    http_url: Vec<Regex>,
    http_header: Vec<HttpHeader>,
    tcp_flags: Vec<TcpFlags>,
    interface: Vec<NetworkInterface>,
    cel: Vec<Program>,
    trace_id: Vec<String>,
    ip_trace_id: Vec<u64>,
}

fn invalid(field: &'static str, value: &str, reason: impl Into<String>) -> FilterError {
    FilterError::InvalidValue {
        field,
        value: super::shown(value),
        reason: reason.into(),
    }
}

fn compile_regexes(
    field: &'static str,
    values: &[String],
    regexes: &mut RegexBudget,
) -> Result<Vec<Regex>, FilterError> {
    regexes.take(values.len()).map_err(FilterError::Limit)?;
    values
        .iter()
        .map(|v| RegexBudget::compile(v).map_err(|e| invalid(field, v, e)))
        .collect()
}

fn compile_ports(field: &'static str, values: &[String]) -> Result<Vec<u16>, FilterError> {
    values
        .iter()
        .map(|v| {
            // Decimal digits only (u16's parser would also take a leading '+').
            v.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| invalid(field, v, "invalid port, expected a number from 0 to 65535"))
        })
        .collect()
}

fn compile_selectors(field: &'static str, values: &[String]) -> Result<Vec<Selector>, FilterError> {
    values
        .iter()
        .map(|v| Selector::parse(v).map_err(|e| invalid(field, v, e)))
        .collect()
}

fn compile_fqdn(
    field: &'static str,
    values: &[String],
    regexes: &mut RegexBudget,
) -> Result<Option<Regex>, FilterError> {
    if values.is_empty() {
        return Ok(None);
    }
    regexes.take(values.len()).map_err(FilterError::Limit)?;
    compile_fqdn_patterns(values)
        .map(Some)
        .map_err(|(v, e)| invalid(field, &v, e))
}

fn compile_cluster_names(
    field: &'static str,
    values: &[String],
) -> Result<Vec<String>, FilterError> {
    if let Some(v) = values.iter().find(|v| v.is_empty()) {
        return Err(invalid(field, v, "name must not be empty"));
    }
    Ok(values.to_vec())
}

fn compile_protocols(values: &[String]) -> Result<u16, FilterError> {
    use proto_bit::*;
    let mut mask = 0;
    for v in values {
        mask |= match v.to_ascii_lowercase().as_str() {
            "icmp" => ICMPV4 | ICMPV6,
            "icmpv4" => ICMPV4,
            "icmpv6" => ICMPV6,
            "tcp" => TCP,
            "udp" => UDP,
            "sctp" => SCTP,
            "vrrp" => VRRP,
            "igmp" => IGMP,
            "dns" => DNS,
            "http" => HTTP,
            "kafka" => KAFKA,
            _ => {
                return Err(invalid(
                    "protocol",
                    v,
                    "unknown protocol, expected one of icmp, icmpv4, icmpv6, tcp, udp, sctp, vrrp, igmp, dns, http, kafka",
                ));
            }
        };
    }
    Ok(mask)
}

impl CompiledFilter {
    /// Compiles one filter; its regular expressions count against `regexes`.
    pub(crate) fn compile(
        ff: &FlowFilter,
        regexes: &mut RegexBudget,
    ) -> Result<CompiledFilter, FilterError> {
        let http_ok = ff.event_type.is_empty()
            || ff
                .event_type
                .iter()
                .any(|t| t.r#type == MESSAGE_TYPE_ACCESS_LOG);
        for (field, set) in [
            ("http_status_code", !ff.http_status_code.is_empty()),
            ("http_method", !ff.http_method.is_empty()),
            ("http_path", !ff.http_path.is_empty()),
            ("http_url", !ff.http_url.is_empty()),
            ("http_header", !ff.http_header.is_empty()),
        ] {
            if set && !http_ok {
                return Err(FilterError::Invalid {
                    field,
                    reason: "filtering by HTTP fields requires the event type filter to match 'l7' events".into(),
                });
            }
        }
        Ok(CompiledFilter {
            uuid: ff.uuid.clone(),
            verdict: ff.verdict.clone(),
            drop_reason_desc: ff.drop_reason_desc.clone(),
            traffic_direction: ff.traffic_direction.clone(),
            ip_version: ff.ip_version.clone(),
            event_type: ff.event_type.clone(),
            reply: ff.reply.clone(),
            encrypted: ff.encrypted.clone(),
            source_identity: ff.source_identity.clone(),
            destination_identity: ff.destination_identity.clone(),
            protocol: compile_protocols(&ff.protocol)?,
            source_port: compile_ports("source_port", &ff.source_port)?,
            destination_port: compile_ports("destination_port", &ff.destination_port)?,
            source_ip: IpMatcher::compile("source_ip", &ff.source_ip)?,
            destination_ip: IpMatcher::compile("destination_ip", &ff.destination_ip)?,
            source_ip_xlated: IpMatcher::compile("source_ip_xlated", &ff.source_ip_xlated)?,
            source_pod: NamespacedName::compile_list("source_pod", &ff.source_pod)?,
            destination_pod: NamespacedName::compile_list("destination_pod", &ff.destination_pod)?,
            source_service: NamespacedName::compile_list("source_service", &ff.source_service)?,
            destination_service: NamespacedName::compile_list(
                "destination_service",
                &ff.destination_service,
            )?,
            source_workload: ff.source_workload.clone(),
            destination_workload: ff.destination_workload.clone(),
            source_cluster_name: compile_cluster_names(
                "source_cluster_name",
                &ff.source_cluster_name,
            )?,
            destination_cluster_name: compile_cluster_names(
                "destination_cluster_name",
                &ff.destination_cluster_name,
            )?,
            source_fqdn: compile_fqdn("source_fqdn", &ff.source_fqdn, regexes)?,
            destination_fqdn: compile_fqdn("destination_fqdn", &ff.destination_fqdn, regexes)?,
            dns_query: compile_regexes("dns_query", &ff.dns_query, regexes)?,
            source_label: compile_selectors("source_label", &ff.source_label)?,
            destination_label: compile_selectors("destination_label", &ff.destination_label)?,
            node_labels: compile_selectors("node_labels", &ff.node_labels)?,
            node_name: if ff.node_name.is_empty() {
                None
            } else {
                regexes
                    .take(ff.node_name.len())
                    .map_err(FilterError::Limit)?;
                Some(
                    compile_node_name_patterns(&ff.node_name)
                        .map_err(|(v, e)| invalid("node_name", &v, e))?,
                )
            },
            http_status: HttpStatusMatcher::compile(&ff.http_status_code)?,
            http_method: ff.http_method.clone(),
            http_path: compile_regexes("http_path", &ff.http_path, regexes)?,
            http_url: compile_regexes("http_url", &ff.http_url, regexes)?,
            http_header: ff.http_header.clone(),
            tcp_flags: ff.tcp_flags.clone(),
            interface: ff.interface.clone(),
            cel: ff
                .experimental
                .iter()
                .flat_map(|e| &e.cel_expression)
                .map(|src| {
                    Program::compile(src, regexes)
                        .map_err(|e| invalid("experimental.cel_expression", src, e))
                })
                .collect::<Result<_, _>>()?,
            trace_id: ff.trace_id.clone(),
            ip_trace_id: ff.ip_trace_id.clone(),
        })
    }

    /// True when every set field matches the flow.
    pub(crate) fn matches(&self, f: &Flow) -> bool {
        // Cheap scalar comparisons first.
        if !self.verdict.is_empty() && !self.verdict.contains(&f.verdict) {
            return false;
        }
        if !self.drop_reason_desc.is_empty()
            && (f.verdict != flow::Verdict::Dropped as i32
                || !self.drop_reason_desc.contains(&f.drop_reason_desc))
        {
            return false;
        }
        if !self.event_type.is_empty() && !event_type_matches(&self.event_type, f) {
            return false;
        }
        if !self.traffic_direction.is_empty()
            && !self.traffic_direction.contains(&f.traffic_direction)
        {
            return false;
        }
        if !self.ip_version.is_empty() {
            let v = f.ip.as_ref().map_or(0, |ip| ip.ip_version);
            if !self.ip_version.contains(&v) {
                return false;
            }
        }
        if !self.reply.is_empty() {
            if f.is_reply.is_none() && f.verdict != flow::Verdict::Dropped as i32 {
                return false;
            }
            let r = f.is_reply.as_ref().is_some_and(|b| b.value);
            if !self.reply.contains(&r) {
                return false;
            }
        }
        if !self.encrypted.is_empty() {
            let e = f.ip.as_ref().is_some_and(|ip| ip.encrypted);
            if !self.encrypted.contains(&e) {
                return false;
            }
        }
        if !identity_matches(&self.source_identity, f.source.as_ref())
            || !identity_matches(&self.destination_identity, f.destination.as_ref())
        {
            return false;
        }
        if self.protocol != 0 && self.protocol & flow_protocols(f) == 0 {
            return false;
        }
        if !self.source_port.is_empty() || !self.destination_port.is_empty() {
            let ports = l4_ports(f);
            if !self.source_port.is_empty()
                && !ports.is_some_and(|(s, _)| self.source_port.contains(&s))
            {
                return false;
            }
            if !self.destination_port.is_empty()
                && !ports.is_some_and(|(_, d)| self.destination_port.contains(&d))
            {
                return false;
            }
        }
        if !self.tcp_flags.is_empty() && !tcp_flags_match(&self.tcp_flags, f) {
            return false;
        }
        if !self.uuid.is_empty() && !self.uuid.contains(&f.uuid) {
            return false;
        }
        if !self.ip_trace_id.is_empty() {
            let id = f.ip_trace_id.as_ref().map_or(0, |t| t.trace_id);
            if !self.ip_trace_id.contains(&id) {
                return false;
            }
        }
        if !self.trace_id.is_empty() {
            let id = f
                .trace_context
                .as_ref()
                .and_then(|c| c.parent.as_ref())
                .map_or("", |p| p.trace_id.as_str());
            if !self.trace_id.iter().any(|t| t == id) {
                return false;
            }
        }
        if !self.interface.is_empty() && !interface_matches(&self.interface, f) {
            return false;
        }
        // Addresses and names.
        let ip = f.ip.as_ref();
        if let Some(m) = &self.source_ip
            && !m.matches(ip.map_or("", |i| i.source.as_str()))
        {
            return false;
        }
        if let Some(m) = &self.destination_ip
            && !m.matches(ip.map_or("", |i| i.destination.as_str()))
        {
            return false;
        }
        if let Some(m) = &self.source_ip_xlated
            && !m.matches(ip.map_or("", |i| i.source_xlated.as_str()))
        {
            return false;
        }
        if !self.source_pod.is_empty() && !pod_matches(&self.source_pod, f.source.as_ref()) {
            return false;
        }
        if !self.destination_pod.is_empty()
            && !pod_matches(&self.destination_pod, f.destination.as_ref())
        {
            return false;
        }
        if !self.source_service.is_empty()
            && !service_matches(&self.source_service, f.source_service.as_ref())
        {
            return false;
        }
        if !self.destination_service.is_empty()
            && !service_matches(&self.destination_service, f.destination_service.as_ref())
        {
            return false;
        }
        if !self.source_workload.is_empty()
            && !workload_matches(&self.source_workload, f.source.as_ref())
        {
            return false;
        }
        if !self.destination_workload.is_empty()
            && !workload_matches(&self.destination_workload, f.destination.as_ref())
        {
            return false;
        }
        if !self.source_cluster_name.is_empty() {
            let c = f.source.as_ref().map_or("", |e| e.cluster_name.as_str());
            if !self.source_cluster_name.iter().any(|n| n == c) {
                return false;
            }
        }
        if !self.destination_cluster_name.is_empty() {
            let c = f
                .destination
                .as_ref()
                .map_or("", |e| e.cluster_name.as_str());
            if !self.destination_cluster_name.iter().any(|n| n == c) {
                return false;
            }
        }
        if let Some(re) = &self.source_fqdn
            && !f.source_names.iter().any(|n| re.is_match(n))
        {
            return false;
        }
        if let Some(re) = &self.destination_fqdn
            && !f.destination_names.iter().any(|n| re.is_match(n))
        {
            return false;
        }
        if !self.source_label.is_empty() {
            let labels = f.source.as_ref().map_or(&[][..], |e| &e.labels[..]);
            if !self.source_label.iter().any(|s| s.matches(labels)) {
                return false;
            }
        }
        if !self.destination_label.is_empty() {
            let labels = f.destination.as_ref().map_or(&[][..], |e| &e.labels[..]);
            if !self.destination_label.iter().any(|s| s.matches(labels)) {
                return false;
            }
        }
        if !self.node_labels.is_empty()
            && !self.node_labels.iter().any(|s| s.matches(&f.node_labels))
        {
            return false;
        }
        if let Some(re) = &self.node_name
            && !node_name_matches(re, &f.node_name)
        {
            return false;
        }
        if !self.dns_query.is_empty() {
            let Some(layer7::Record::Dns(dns)) = f.l7.as_ref().and_then(|l| l.record.as_ref())
            else {
                return false;
            };
            if !self.dns_query.iter().any(|re| re.is_match(&dns.query)) {
                return false;
            }
        }
        if !self.cel.is_empty() {
            // CEL sees the flow in its proto-JSON form (only built when CEL is used).
            let Ok(json) = serde_json::to_value(f) else {
                return false;
            };
            if !self.cel.iter().any(|p| p.matches(&json)) {
                return false;
            }
        }
        if self.http_status.is_some()
            || !self.http_method.is_empty()
            || !self.http_path.is_empty()
            || !self.http_url.is_empty()
            || !self.http_header.is_empty()
        {
            return self.http_matches(f);
        }
        true
    }

    fn http_matches(&self, f: &Flow) -> bool {
        let Some(layer7::Record::Http(http)) = f.l7.as_ref().and_then(|l| l.record.as_ref()) else {
            return false;
        };
        if let Some(m) = &self.http_status
            && !m.matches(http.code)
        {
            return false;
        }
        if !self.http_method.is_empty()
            && (http.method.is_empty()
                || !self
                    .http_method
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&http.method)))
        {
            return false;
        }
        if !self.http_url.is_empty()
            && (http.url.is_empty() || !self.http_url.iter().any(|re| re.is_match(&http.url)))
        {
            return false;
        }
        if !self.http_path.is_empty() {
            let Some(path) = request_uri_path(&http.url) else {
                return false;
            };
            if !self.http_path.iter().any(|re| re.is_match(&path)) {
                return false;
            }
        }
        if !self.http_header.is_empty()
            && !http.headers.iter().any(|h| {
                self.http_header
                    .iter()
                    .any(|want| want.key == h.key && want.value == h.value)
            })
        {
            return false;
        }
        true
    }
}

fn event_type_matches(filters: &[EventTypeFilter], f: &Flow) -> bool {
    let Some(ev) = f.event_type.as_ref() else {
        return false;
    };
    filters.iter().any(|t| {
        (t.r#type == 0 || t.r#type == ev.r#type) && (!t.match_sub_type || t.sub_type == ev.sub_type)
    })
}

fn identity_matches(ids: &[u32], ep: Option<&Endpoint>) -> bool {
    ids.is_empty() || ep.is_some_and(|e| ids.contains(&e.identity))
}

fn flow_protocols(f: &Flow) -> u16 {
    use proto_bit::*;
    let l4 = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(_)) => TCP,
        Some(layer4::Protocol::Udp(_)) => UDP,
        Some(layer4::Protocol::IcmPv4(_)) => ICMPV4,
        Some(layer4::Protocol::IcmPv6(_)) => ICMPV6,
        Some(layer4::Protocol::Sctp(_)) => SCTP,
        Some(layer4::Protocol::Vrrp(_)) => VRRP,
        Some(layer4::Protocol::Igmp(_)) => IGMP,
        None => 0,
    };
    #[allow(deprecated)]
    let l7 = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(layer7::Record::Dns(_)) => DNS,
        Some(layer7::Record::Http(_)) => HTTP,
        Some(layer7::Record::Kafka(_)) => KAFKA,
        None => 0,
    };
    l4 | l7
}

/// (source, destination) ports for TCP, UDP and SCTP flows.
fn l4_ports(f: &Flow) -> Option<(u16, u16)> {
    match f.l4.as_ref()?.protocol.as_ref()? {
        layer4::Protocol::Tcp(t) => Some((t.source_port as u16, t.destination_port as u16)),
        layer4::Protocol::Udp(u) => Some((u.source_port as u16, u.destination_port as u16)),
        layer4::Protocol::Sctp(s) => Some((s.source_port as u16, s.destination_port as u16)),
        _ => None,
    }
}

fn tcp_flags_match(filters: &[TcpFlags], f: &Flow) -> bool {
    let Some(layer4::Protocol::Tcp(tcp)) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) else {
        return false;
    };
    let Some(have) = tcp.flags.as_ref() else {
        return false;
    };
    filters.iter().any(|want| {
        (!want.fin || have.fin)
            && (!want.syn || have.syn)
            && (!want.rst || have.rst)
            && (!want.psh || have.psh)
            && (!want.ack || have.ack)
            && (!want.urg || have.urg)
            && (!want.ece || have.ece)
            && (!want.cwr || have.cwr)
            && (!want.ns || have.ns)
    })
}

fn interface_matches(filters: &[NetworkInterface], f: &Flow) -> bool {
    let Some(iface) = f.interface.as_ref() else {
        return false;
    };
    filters.iter().any(|want| {
        (want.index == 0 || want.index == iface.index)
            && (want.name.is_empty() || want.name == iface.name)
    })
}

fn pod_matches(filters: &[NamespacedName], ep: Option<&Endpoint>) -> bool {
    let (ns, pod) = ep.map_or(("", ""), |e| (e.namespace.as_str(), e.pod_name.as_str()));
    names_match(filters, ns, pod)
}

fn service_matches(filters: &[NamespacedName], svc: Option<&flow::Service>) -> bool {
    let (ns, name) = svc.map_or(("", ""), |s| (s.namespace.as_str(), s.name.as_str()));
    names_match(filters, ns, name)
}

fn workload_matches(filters: &[Workload], ep: Option<&Endpoint>) -> bool {
    ep.is_some_and(|e| {
        e.workloads.iter().any(|w| {
            filters.iter().any(|want| {
                (want.name.is_empty() || want.name == w.name)
                    && (want.kind.is_empty() || want.kind == w.kind)
            })
        })
    })
}

fn node_name_matches(re: &Regex, node_name: &str) -> bool {
    if node_name.is_empty() {
        return false;
    }
    if node_name.contains('/') {
        return re.is_match(node_name);
    }
    // A node name without a cluster belongs to the default cluster. Build
    // "default/<name>" on the stack for the common short names.
    const PREFIX: &[u8] = b"default/";
    let mut buf = [0u8; 256];
    let n = PREFIX.len() + node_name.len();
    if n <= buf.len() {
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        buf[PREFIX.len()..n].copy_from_slice(node_name.as_bytes());
        // Both parts are UTF-8, so the concatenation is too.
        std::str::from_utf8(&buf[..n]).is_ok_and(|s| re.is_match(s))
    } else {
        re.is_match(&format!("default/{node_name}"))
    }
}

/// The path of an HTTP request URI, decoded, as Go's `url.ParseRequestURI` yields it; `None`
/// when Go would fail to parse the URL.
pub(crate) fn request_uri_path(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_empty() || raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None;
    }
    if raw == "*" {
        return Some(Cow::Borrowed("*"));
    }
    // Scheme.
    let mut scheme = "";
    let mut rest = raw;
    for (i, b) in raw.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return None,
            b':' => {
                scheme = &raw[..i];
                rest = &raw[i + 1..];
                break;
            }
            _ => break,
        }
    }
    let rest = match rest.find('?') {
        Some(i) => &rest[..i],
        None => rest,
    };
    if !rest.starts_with('/') {
        return if scheme.is_empty() {
            None
        } else {
            Some(Cow::Borrowed(""))
        };
    }
    let path = if !scheme.is_empty() && rest.starts_with("//") {
        let after = &rest[2..];
        match after.find('/') {
            Some(i) => &after[i..],
            None => "",
        }
    } else {
        rest
    };
    percent_decode(path)
}

fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths() {
        let p = |s: &str| request_uri_path(s).map(|c| c.into_owned());
        assert_eq!(
            p("http://example.com/foo/bar?x=1").as_deref(),
            Some("/foo/bar")
        );
        assert_eq!(p("/foo%20bar").as_deref(), Some("/foo bar"));
        assert_eq!(p("http://example.com").as_deref(), Some(""));
        assert_eq!(p("mailto:x@y").as_deref(), Some(""));
        assert_eq!(p("foo/bar"), None);
        assert_eq!(p(""), None);
        assert_eq!(p(":foo"), None);
        assert_eq!(p("/bad%zz"), None);
        assert_eq!(p("//host/p").as_deref(), Some("//host/p"));
    }

    #[test]
    fn namespaced_names() {
        let n = NamespacedName::parse("kube-system/coredns");
        assert_eq!(
            (n.namespace.as_str(), n.prefix.as_str()),
            ("kube-system", "coredns")
        );
        let n = NamespacedName::parse("xwing");
        assert_eq!(
            (n.namespace.as_str(), n.prefix.as_str()),
            ("default", "xwing")
        );
        let n = NamespacedName::parse("/xwing");
        assert_eq!((n.namespace.as_str(), n.prefix.as_str()), ("", "xwing"));
        let n = NamespacedName::parse("ns/");
        assert_eq!((n.namespace.as_str(), n.prefix.as_str()), ("ns", ""));
    }

    #[test]
    fn http_status_patterns() {
        let m = HttpStatusMatcher::compile(&["404".into(), "5+".into(), "20+".into()])
            .unwrap()
            .unwrap();
        assert!(m.matches(404));
        assert!(!m.matches(403));
        assert!(m.matches(503));
        assert!(m.matches(201));
        assert!(!m.matches(210));
        assert!(!m.matches(0));
        assert!(m.matches(5000), "%03d of 5000 starts with 5");
        for bad in ["600", "40", "4++", "+", "abc", "0+", "1000"] {
            assert!(HttpStatusMatcher::compile(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
