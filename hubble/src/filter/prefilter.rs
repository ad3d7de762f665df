//! A conservative byte-level pre-check on JSON lines: literals that must appear in the line for
//! any whitelist filter to match, searched with memchr, so most lines skip JSON parsing.

use hubble_api::flow::{DropReason, FlowFilter, IpVersion, TrafficDirection, Verdict, Workload};
use memchr::memmem::Finder;

/// For one whitelist filter: every group must have at least one needle in the line.
#[derive(Debug, Clone)]
struct FilterNeedles {
    groups: Vec<Vec<Finder<'static>>>,
}

#[derive(Debug, Clone)]
pub(crate) struct LinePrefilter {
    /// No constraint can be derived: every line may match.
    always: bool,
    filters: Vec<FilterNeedles>,
    lost_events: Finder<'static>,
    node_status: Finder<'static>,
}

/// Bytes that no JSON encoder escapes, so a value made only of them appears verbatim.
fn verbatim(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b' '))
}

fn quoted(s: &str) -> Finder<'static> {
    Finder::new(format!("\"{s}\"").as_bytes()).into_owned()
}

fn raw(s: &str) -> Finder<'static> {
    Finder::new(s.as_bytes()).into_owned()
}

/// Needles for an enum-valued field: the quoted enum names. The zero value is omitted from
/// JSON, so a filter accepting it gives no constraint.
fn enum_group(
    values: &[i32],
    name: impl Fn(i32) -> Option<&'static str>,
) -> Option<Vec<Finder<'static>>> {
    let mut g = Vec::new();
    for &v in values {
        if v == 0 {
            return None;
        }
        g.push(quoted(name(v)?));
    }
    Some(g)
}

/// Needles for exact string fields compared whole: the quoted value.
fn string_group(values: &[String]) -> Option<Vec<Finder<'static>>> {
    let mut g = Vec::new();
    for v in values {
        if !verbatim(v) {
            return None;
        }
        g.push(quoted(v));
    }
    Some(g)
}

/// Needles for IP filters: exact addresses quoted, IPv4 prefixes on octet boundaries as the
/// opening quote plus the fixed octets.
fn ip_group(values: &[String]) -> Option<Vec<Finder<'static>>> {
    let mut g = Vec::new();
    for v in values {
        match v.split_once('/') {
            None => {
                if !verbatim(v) {
                    return None;
                }
                g.push(quoted(v));
            }
            Some((addr, len)) => {
                let addr: std::net::Ipv4Addr = addr.parse().ok()?;
                let len: u8 = len.parse().ok()?;
                if len == 0 || !len.is_multiple_of(8) || len > 32 {
                    return None;
                }
                let octets = addr.octets();
                let fixed = usize::from(len / 8);
                let mut s = String::from("\"");
                for o in &octets[..fixed] {
                    s.push_str(&o.to_string());
                    s.push('.');
                }
                if fixed == 4 {
                    s.pop();
                    s.push('"');
                }
                g.push(raw(&s));
            }
        }
    }
    Some(g)
}

/// Pod / service filters: the pod-name prefix after an opening quote, else the quoted namespace.
fn namespaced_group(values: &[String]) -> Option<Vec<Finder<'static>>> {
    let mut g = Vec::new();
    for v in values {
        let mut parts = v.split('/');
        let first = parts.next().unwrap_or_default();
        let (ns, prefix) = match parts.next() {
            Some(name) => (first, name),
            None => ("default", first),
        };
        if verbatim(prefix) {
            g.push(raw(&format!("\"{prefix}")));
        } else if verbatim(ns) {
            g.push(quoted(ns));
        } else {
            return None;
        }
    }
    Some(g)
}

fn workload_group(values: &[Workload]) -> Option<Vec<Finder<'static>>> {
    let mut g = Vec::new();
    for w in values {
        if verbatim(&w.name) {
            g.push(quoted(&w.name));
        } else if verbatim(&w.kind) {
            g.push(quoted(&w.kind));
        } else {
            return None;
        }
    }
    Some(g)
}

/// The proto JSON keys of the Layer4 / Layer7 oneof members (`"TCP":{…}`, `"dns":{…}`).
fn protocol_group(values: &[String]) -> Option<Vec<Finder<'static>>> {
    let mut g = Vec::new();
    for v in values {
        let keys: &[&str] = match v.to_ascii_lowercase().as_str() {
            "icmp" => &["ICMPv4", "ICMPv6"],
            "icmpv4" => &["ICMPv4"],
            "icmpv6" => &["ICMPv6"],
            "tcp" => &["TCP"],
            "udp" => &["UDP"],
            "sctp" => &["SCTP"],
            "vrrp" => &["VRRP"],
            "igmp" => &["IGMP"],
            "dns" => &["dns"],
            "http" => &["http"],
            "kafka" => &["kafka"],
            _ => return None,
        };
        g.extend(keys.iter().map(|k| quoted(k)));
    }
    Some(g)
}

impl LinePrefilter {
    pub(crate) fn build(whitelist: &[FlowFilter]) -> LinePrefilter {
        let mut filters = Vec::with_capacity(whitelist.len());
        let mut always = whitelist.is_empty();
        for ff in whitelist {
            let needles = Self::filter_needles(ff);
            if needles.groups.is_empty() {
                always = true;
            }
            filters.push(needles);
        }
        LinePrefilter {
            always,
            filters,
            lost_events: quoted("lost_events"),
            node_status: quoted("node_status"),
        }
    }

    fn filter_needles(ff: &FlowFilter) -> FilterNeedles {
        let verdict = |v: i32| Verdict::try_from(v).ok().map(|v| v.as_str_name());
        let drop_reason = |v: i32| DropReason::try_from(v).ok().map(|v| v.as_str_name());
        let direction = |v: i32| TrafficDirection::try_from(v).ok().map(|v| v.as_str_name());
        let ip_version = |v: i32| IpVersion::try_from(v).ok().map(|v| v.as_str_name());
        let candidates = [
            (!ff.verdict.is_empty()).then(|| enum_group(&ff.verdict, verdict)),
            (!ff.drop_reason_desc.is_empty()).then(|| {
                // Only DROPPED flows match a drop reason filter.
                enum_group(&ff.drop_reason_desc, drop_reason)
            }),
            (!ff.drop_reason_desc.is_empty()).then(|| Some(vec![quoted("DROPPED")])),
            (!ff.traffic_direction.is_empty())
                .then(|| enum_group(&ff.traffic_direction, direction)),
            (!ff.ip_version.is_empty()).then(|| enum_group(&ff.ip_version, ip_version)),
            (!ff.uuid.is_empty()).then(|| string_group(&ff.uuid)),
            (!ff.source_ip.is_empty()).then(|| ip_group(&ff.source_ip)),
            (!ff.destination_ip.is_empty()).then(|| ip_group(&ff.destination_ip)),
            (!ff.source_ip_xlated.is_empty()).then(|| ip_group(&ff.source_ip_xlated)),
            (!ff.source_pod.is_empty()).then(|| namespaced_group(&ff.source_pod)),
            (!ff.destination_pod.is_empty()).then(|| namespaced_group(&ff.destination_pod)),
            (!ff.source_service.is_empty()).then(|| namespaced_group(&ff.source_service)),
            (!ff.destination_service.is_empty()).then(|| namespaced_group(&ff.destination_service)),
            (!ff.source_workload.is_empty()).then(|| workload_group(&ff.source_workload)),
            (!ff.destination_workload.is_empty()).then(|| workload_group(&ff.destination_workload)),
            (!ff.source_cluster_name.is_empty()).then(|| string_group(&ff.source_cluster_name)),
            (!ff.destination_cluster_name.is_empty())
                .then(|| string_group(&ff.destination_cluster_name)),
            (!ff.protocol.is_empty()).then(|| protocol_group(&ff.protocol)),
            (!ff.trace_id.is_empty()).then(|| string_group(&ff.trace_id)),
            // Zero is the value of flows without an IP trace id, which omit the field.
            (!ff.ip_trace_id.is_empty() && !ff.ip_trace_id.contains(&0)).then(|| {
                Some(
                    ff.ip_trace_id
                        .iter()
                        .map(|id| quoted(&id.to_string()))
                        .collect(),
                )
            }),
            (!ff.http_status_code.is_empty()
                || !ff.http_method.is_empty()
                || !ff.http_url.is_empty()
                || !ff.http_path.is_empty()
                || !ff.http_header.is_empty())
            .then(|| Some(vec![quoted("http")])),
            (!ff.dns_query.is_empty()).then(|| Some(vec![quoted("dns")])),
            (!ff.tcp_flags.is_empty()).then(|| Some(vec![quoted("TCP")])),
        ];
        let groups = candidates
            .into_iter()
            .flatten()
            .flatten()
            .filter(|g| !g.is_empty())
            .collect();
        FilterNeedles { groups }
    }

    pub(crate) fn may_match(&self, line: &[u8]) -> bool {
        if self.always {
            return true;
        }
        let hit = self.filters.iter().any(|f| {
            f.groups
                .iter()
                .all(|g| g.iter().any(|n| n.find(line).is_some()))
        });
        hit || self.lost_events.find(line).is_some() || self.node_status.find(line).is_some()
    }
}
