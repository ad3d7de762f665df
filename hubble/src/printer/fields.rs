//! The columns of Hubble's text outputs (endpoint, identity, TYPE, VERDICT, SUMMARY) built from
//! a Flow exactly as Go Hubble's printer builds them, appended to a byte buffer.

use hubble_api::flow::{
    AuthType, DebugCapturePoint, Endpoint, Flow, L7FlowType, Policy, SocketTranslationPoint,
    TrafficDirection, Verdict, layer4::Protocol, layer7::Record,
};

use super::escape::{CYAN, GREEN, MAGENTA, RED, RESET, YELLOW};

// Monitor message types (cilium pkg/monitor/api).
const MSG_DROP: i32 = 1;
const MSG_CAPTURE: i32 = 3;
const MSG_TRACE: i32 = 4;
const MSG_POLICY_VERDICT: i32 = 5;
const MSG_TRACE_SOCK: i32 = 7;

pub(crate) fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
}

pub(crate) fn push_int<I: itoa::Integer>(buf: &mut Vec<u8>, v: I) {
    let mut b = itoa::Buffer::new();
    buf.extend_from_slice(b.format(v).as_bytes());
}

pub(crate) fn color_start(buf: &mut Vec<u8>, color: bool, seq: &[u8]) {
    if color {
        buf.extend_from_slice(seq);
    }
}

pub(crate) fn color_end(buf: &mut Vec<u8>, color: bool) {
    if color {
        buf.extend_from_slice(RESET);
    }
}

/// Appends a Go enum's `String()`: its name, or the number when it is not a known value.
pub(crate) fn push_enum(buf: &mut Vec<u8>, name: Option<&str>, value: i32) {
    match name {
        Some(n) => push_str(buf, n),
        None => push_int(buf, value),
    }
}

/// Which endpoint of a flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

fn port(flow: &Flow, side: Side) -> u32 {
    let (s, d) = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(Protocol::Tcp(p)) => (p.source_port, p.destination_port),
        Some(Protocol::Udp(p)) => (p.source_port, p.destination_port),
        Some(Protocol::Sctp(p)) => (p.source_port, p.destination_port),
        _ => (0, 0),
    };
    if side == Side::Source { s } else { d }
}

/// Whether Go's `path.Clean` would change `p` (only called with non-empty `p`). On bytes:
/// it runs twice per printed flow.
fn needs_clean(p: &[u8]) -> bool {
    let body = p.strip_prefix(b"/").unwrap_or(p);
    if body.is_empty() {
        return p.is_empty();
    }
    body.split(|&c| c == b'/')
        .any(|e| matches!(e, b"" | b"." | b".."))
}

/// Go's `path.Clean`.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for e in p.split('/') {
        match e {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(e),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `path.Join(ns, name)` (name is non-empty).
fn push_path_join(buf: &mut Vec<u8>, ns: &str, name: &str) {
    let start = buf.len();
    if !ns.is_empty() {
        push_str(buf, ns);
        buf.push(b'/');
    }
    push_str(buf, name);
    if needs_clean(&buf[start..]) {
        // Both parts came from `&str`, so the joined bytes are UTF-8.
        let joined = std::str::from_utf8(&buf[start..]).unwrap_or_default();
        let c = clean(joined);
        buf.truncate(start);
        push_str(buf, &c);
    }
}

/// Appends the SOURCE or DESTINATION column: `ns/pod`, `ns/service`, DNS names or the IP,
/// with `:port` (`[v6]:port`) for TCP/UDP/SCTP; MAC addresses when there is no IP layer.
pub(crate) fn push_host(
    buf: &mut Vec<u8>,
    flow: &Flow,
    side: Side,
    color: bool,
    ip_translation: bool,
) {
    let Some(ip) = flow.ip.as_ref() else {
        if let Some(eth) = flow.ethernet.as_ref() {
            color_start(buf, color, CYAN);
            push_str(
                buf,
                if side == Side::Source {
                    &eth.source
                } else {
                    &eth.destination
                },
            );
            color_end(buf, color);
        }
        return;
    };
    let (ep, svc, names, addr): (Option<&Endpoint>, _, &[String], &str) = match side {
        Side::Source => (
            flow.source.as_ref(),
            flow.source_service.as_ref(),
            &flow.source_names,
            &ip.source,
        ),
        Side::Destination => (
            flow.destination.as_ref(),
            flow.destination_service.as_ref(),
            &flow.destination_names,
            &ip.destination,
        ),
    };
    let mut ns = ep.map_or("", |e| e.namespace.as_str());
    let pod = ep.map_or("", |e| e.pod_name.as_str());
    let mut svc_name = "";
    if let Some(s) = svc {
        ns = &s.namespace;
        svc_name = &s.name;
    }
    color_start(buf, color, CYAN);
    let start = buf.len();
    match () {
        _ if ip_translation && !pod.is_empty() => push_path_join(buf, ns, pod),
        _ if ip_translation && !svc_name.is_empty() => push_path_join(buf, ns, svc_name),
        _ if ip_translation && !names.is_empty() => {
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                push_str(buf, n);
            }
        }
        _ => push_str(buf, addr),
    }
    let p = port(flow, side);
    if p != 0 {
        // net.JoinHostPort: brackets around hosts that contain a colon.
        if buf[start..].contains(&b':') {
            buf.insert(start, b'[');
            buf.push(b']');
        }
        buf.push(b':');
        color_start(buf, color, YELLOW);
        push_int(buf, p);
        color_end(buf, color);
    }
    color_end(buf, color);
}

/// Display names of reserved identities 0–10 (`identity.NumericIdentity.String`).
fn reserved_identity_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "unknown",
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

/// Appends `(name)` for reserved identities, else `(ID:n)`.
pub(crate) fn push_identity(buf: &mut Vec<u8>, ep: Option<&Endpoint>, color: bool) {
    let id = ep.map_or(0, |e| e.identity);
    color_start(buf, color, MAGENTA);
    buf.push(b'(');
    match reserved_identity_name(id) {
        Some(n) => push_str(buf, n),
        None => {
            push_str(buf, "ID:");
            push_int(buf, id);
        }
    }
    buf.push(b')');
    color_end(buf, color);
}

fn trace_observation_point(p: u8) -> Option<&'static str> {
    Some(match p {
        0 => "to-endpoint",
        1 => "to-proxy",
        2 => "to-host",
        3 => "to-stack",
        4 => "to-overlay",
        5 => "from-endpoint",
        6 => "from-proxy",
        7 => "from-host",
        8 => "from-stack",
        9 => "from-overlay",
        10 => "from-network",
        11 => "to-network",
        12 => "from-crypto",
        13 => "to-crypto",
        _ => return None,
    })
}

/// Human drop reason strings of cilium `pkg/monitor/api/drop.go` (v1.19.4).
pub fn drop_reason_text(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "Success",
        2 => "Invalid packet",
        3 => "Interface",
        4 => "Interface Decrypted",
        5 => "LB, sock cgroup: No backend slot entry found",
        6 => "LB, sock cgroup: No backend entry found",
        7 => "LB, sock cgroup: Reverse entry update failed",
        8 => "LB, sock cgroup: Reverse entry stale",
        9 => "Fragmented packet",
        10 => "Fragmented packet entry update failed",
        11 => "Missed tail call to custom program",
        12 => "Interface Decrypting",
        13 => "Interface Encrypting",
        14 => "LB: sock cgroup: Reverse entry delete succeeded",
        15 => "MTU error message",
        130 => "Invalid source mac",
        131 => "Invalid destination mac",
        132 => "Invalid source ip",
        133 => "Policy denied",
        134 => "Invalid packet",
        135 => "CT: Truncated or invalid header",
        136 => "Fragmentation needed",
        137 => "CT: Unknown L4 protocol",
        138 => "CT: Can't create entry from packet",
        139 => "Unsupported L3 protocol",
        140 => "Missed tail call",
        141 => "Error writing to packet",
        142 => "Unknown L4 protocol",
        143 => "Unknown ICMPv4 code",
        144 => "Unknown ICMPv4 type",
        145 => "Unknown ICMPv6 code",
        146 => "Unknown ICMPv6 type",
        147 => "Error retrieving tunnel key",
        148 => "Error retrieving tunnel options",
        149 => "Invalid Geneve option",
        150 => "Unknown L3 target address",
        151 => "Stale or unroutable IP",
        152 => "No matching local container found",
        153 => "Error while correcting L3 checksum",
        154 => "Error while correcting L4 checksum",
        155 => "CT: Map insertion failed",
        156 => "Invalid IPv6 extension header",
        157 => "IP fragmentation not supported",
        158 => "Service backend not found",
        160 => "No tunnel/encapsulation endpoint (datapath BUG!)",
        161 => "NAT 46/64 not enabled",
        162 => "Reached EDT rate-limiting drop horizon",
        163 => "Unknown connection tracking state",
        164 => "Local host is unreachable",
        165 => "No configuration available to perform policy decision",
        166 => "Unsupported L2 protocol",
        167 => "No mapping for NAT masquerade",
        168 => "Unsupported protocol for NAT masquerade",
        169 => "FIB lookup failed",
        170 => "Encapsulation traffic is prohibited",
        171 => "Invalid identity",
        172 => "Unknown sender",
        173 => "NAT not needed",
        174 => "Is a ClusterIP",
        175 => "First logical datagram fragment not found",
        176 => "Forbidden ICMPv6 message",
        177 => "Denied by LB src range check",
        178 => "Socket lookup failed",
        179 => "Socket assign failed",
        180 => "Proxy redirection not supported for protocol",
        181 => "Policy denied by denylist",
        182 => "VLAN traffic disallowed by VLAN filter",
        183 => "Incorrect VNI from VTEP",
        184 => "Failed to update or lookup TC buffer",
        185 => "No SID was found for the IP address",
        186 => "SRv6 state was removed during tail call",
        187 => "L3 translation from IPv4 to IPv6 failed (NAT46)",
        188 => "L3 translation from IPv6 to IPv4 failed (NAT64)",
        189 => "Authentication required",
        190 => "No conntrack map found",
        191 => "No nat map found",
        192 => "Invalid ClusterID",
        193 => "Unsupported packet protocol for DSR encapsulation",
        194 => "No egress gateway found",
        195 => "Traffic is unencrypted",
        196 => "TTL exceeded",
        197 => "No node ID found",
        198 => "Rate limited",
        199 => "IGMP handled",
        200 => "IGMP subscribed",
        201 => "Multicast handled",
        202 => "Host datapath not ready",
        203 => "Endpoint policy program not available",
        204 => "No Egress IP configured",
        205 => "Punt to proxy",
        _ => return None,
    })
}

fn policy_match_type(m: u32) -> &'static str {
    match m {
        0 => "none",
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "unknown",
    }
}

/// Appends the TYPE column (Hubble's `GetFlowType`).
#[allow(deprecated)] // Kafka records are deprecated but still printed.
pub(crate) fn push_flow_type(buf: &mut Vec<u8>, flow: &Flow) {
    if let Some(l7) = flow.l7.as_ref() {
        let proto = match &l7.record {
            Some(Record::Http(_)) => "http",
            Some(Record::Dns(_)) => "dns",
            Some(Record::Kafka(_)) => "kafka",
            None => "l7",
        };
        push_str(buf, proto);
        buf.push(b'-');
        match L7FlowType::try_from(l7.r#type) {
            Ok(L7FlowType::UnknownL7Type) => push_str(buf, "unknown_l7_type"),
            Ok(L7FlowType::Request) => push_str(buf, "request"),
            Ok(L7FlowType::Response) => push_str(buf, "response"),
            Ok(L7FlowType::Sample) => push_str(buf, "sample"),
            Err(_) => push_int(buf, l7.r#type),
        }
        if let Some(Record::Dns(dns)) = &l7.record {
            buf.push(b' ');
            push_str(buf, &dns.observation_source);
        }
        return;
    }
    let (typ, sub) = flow
        .event_type
        .as_ref()
        .map_or((0, 0), |e| (e.r#type, e.sub_type));
    match typ {
        MSG_TRACE => match trace_observation_point(sub as u8) {
            Some(s) => push_str(buf, s),
            None => push_int(buf, sub as u8),
        },
        MSG_DROP => match drop_reason_text(sub as u8) {
            Some(s) => push_str(buf, s),
            None => {
                push_int(buf, sub as u8);
                push_str(buf, ", 0");
            }
        },
        MSG_POLICY_VERDICT => {
            push_str(buf, "policy-verdict:");
            push_str(buf, policy_match_type(flow.policy_match_type));
            buf.push(b' ');
            let d = flow.traffic_direction;
            push_enum(
                buf,
                TrafficDirection::try_from(d).ok().map(|v| v.as_str_name()),
                d,
            );
        }
        MSG_CAPTURE => {
            let p = flow.debug_capture_point;
            push_enum(
                buf,
                DebugCapturePoint::try_from(p).ok().map(|v| v.as_str_name()),
                p,
            );
        }
        MSG_TRACE_SOCK => {
            let p = flow.sock_xlate_point;
            match SocketTranslationPoint::try_from(p) {
                Ok(SocketTranslationPoint::SockXlatePointPostDirectionFwd) => {
                    push_str(buf, "post-xlate-fwd")
                }
                Ok(SocketTranslationPoint::SockXlatePointPostDirectionRev) => {
                    push_str(buf, "post-xlate-rev")
                }
                Ok(SocketTranslationPoint::SockXlatePointPreDirectionFwd) => {
                    push_str(buf, "pre-xlate-fwd")
                }
                Ok(SocketTranslationPoint::SockXlatePointPreDirectionRev) => {
                    push_str(buf, "pre-xlate-rev")
                }
                other => push_enum(buf, other.ok().map(|v| v.as_str_name()), p),
            }
        }
        _ => push_str(buf, "UNKNOWN"),
    }
}

fn push_policy_names(buf: &mut Vec<u8>, policies: &[Policy]) {
    for (i, p) in policies
        .iter()
        .filter(|p| !p.kind.is_empty() && !p.name.is_empty())
        .enumerate()
    {
        push_str(buf, if i == 0 { " BY " } else { ", " });
        push_str(buf, &p.name);
        push_str(buf, " (");
        push_str(buf, &p.kind);
        buf.push(b')');
    }
}

/// Appends the VERDICT column; policy-verdict events say ALLOWED / DENIED / AUDITED.
pub(crate) fn push_verdict(buf: &mut Vec<u8>, flow: &Flow, color: bool, policy_names: bool) {
    let is_pv = flow
        .event_type
        .as_ref()
        .is_some_and(|e| e.r#type == MSG_POLICY_VERDICT);
    let v = flow.verdict;
    let verdict = Verdict::try_from(v).ok();
    let name = verdict.map(|v| v.as_str_name());
    let dir = TrafficDirection::try_from(flow.traffic_direction).ok();
    match verdict {
        Some(Verdict::Forwarded | Verdict::Redirected | Verdict::Dropped | Verdict::Error) => {
            let allowed = matches!(verdict, Some(Verdict::Forwarded | Verdict::Redirected));
            color_start(buf, color, if allowed { GREEN } else { RED });
            if is_pv {
                push_str(buf, if allowed { "ALLOWED" } else { "DENIED" });
                if policy_names {
                    let list = match (dir, allowed) {
                        (Some(TrafficDirection::Egress), true) => Some(&flow.egress_allowed_by),
                        (Some(TrafficDirection::Ingress), true) => Some(&flow.ingress_allowed_by),
                        (Some(TrafficDirection::Egress), false) => Some(&flow.egress_denied_by),
                        (Some(TrafficDirection::Ingress), false) => Some(&flow.ingress_denied_by),
                        _ => None,
                    };
                    if let Some(list) = list {
                        push_policy_names(buf, list);
                    }
                }
            } else {
                push_enum(buf, name, v);
            }
            color_end(buf, color);
        }
        Some(Verdict::Audit) => {
            color_start(buf, color, YELLOW);
            push_str(buf, if is_pv { "AUDITED" } else { "AUDIT" });
            color_end(buf, color);
        }
        Some(Verdict::Traced | Verdict::Translated) => {
            color_start(buf, color, YELLOW);
            push_enum(buf, name, v);
            color_end(buf, color);
        }
        _ => push_enum(buf, name, v),
    }
}

/// Appends the SUMMARY column: `IP Trace ID: n; `, the flow's Summary, `; Auth: <type>`.
#[allow(deprecated)] // Flow.Summary is deprecated but Hubble still prints it.
pub(crate) fn push_summary(buf: &mut Vec<u8>, flow: &Flow, color: bool) {
    if let Some(t) = flow.ip_trace_id.as_ref().filter(|t| t.trace_id > 0) {
        push_str(buf, "IP Trace ID: ");
        push_int(buf, t.trace_id);
        push_str(buf, "; ");
    }
    push_str(buf, &flow.summary);
    let a = flow.auth_type;
    let auth = AuthType::try_from(a).ok();
    if auth == Some(AuthType::Disabled) {
        return;
    }
    push_str(buf, "; Auth: ");
    color_start(
        buf,
        color,
        if auth == Some(AuthType::TestAlwaysFail) {
            RED
        } else {
            GREEN
        },
    );
    push_enum(buf, auth.map(|v| v.as_str_name()), a);
    color_end(buf, color);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_clean() {
        assert!(!needs_clean(b"ns/pod"));
        assert!(!needs_clean(b"/"));
        assert!(needs_clean(b"ns//pod"));
        assert!(needs_clean(b"ns/../pod"));
        assert!(needs_clean(b"ns/pod/"));
        assert_eq!(clean("ns/../pod"), "pod");
        assert_eq!(clean("../../a"), "../../a");
        assert_eq!(clean("/../a/./b/"), "/a/b");
        assert_eq!(clean("a/.."), ".");
        let mut b = Vec::new();
        push_path_join(&mut b, "", "/x//y");
        assert_eq!(b, b"/x/y");
    }
}
