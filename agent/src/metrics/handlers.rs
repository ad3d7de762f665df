//! Hubble's flow metric handlers (cilium `pkg/hubble/metrics/*`): the same metric names,
//! label names and order, label values and conditions, driven by one `--metrics` spec or
//! one entry of the dynamic metrics file, whose include/exclude filters apply first.

use hubble::filter::FlowFilters;
use hubble_api::flow::layer4::Protocol;
use hubble_api::flow::layer7::Record;
use hubble_api::flow::{
    DropReason, Flow, IpVersion, L7FlowType, LostEvent, LostEventSource, TrafficDirection, Verdict,
};

use super::context::ContextOptions;
use super::spec::HandlerSpec;
use super::vec::{CounterVec, HistogramVec, KeyBuf, Limits};

// Monitor message types (cilium pkg/monitor/api).
const MSG_DROP: i32 = 1;
const MSG_CAPTURE: i32 = 3;
const MSG_TRACE: i32 = 4;
const MSG_POLICY_VERDICT: i32 = 5;
const MSG_ACCESS_LOG: i32 = 129;
const IDENTITY_HOST: u32 = 1;
/// The label of destinations `flows-to-world` counts (cilium `reserved:world`).
const WORLD_LABEL: &str = "reserved:world";

#[derive(Debug)]
enum Kind {
    Flow {
        flows: CounterVec,
    },
    Drop {
        drops: CounterVec,
    },
    Tcp {
        flags: CounterVec,
    },
    Dns {
        query: bool,
        ignore_aaaa: bool,
        queries: CounterVec,
        responses: CounterVec,
        response_types: CounterVec,
    },
    Http {
        v2: bool,
        /// `exemplars=true`: samples carry the flow's trace ID.
        exemplars: bool,
        requests: CounterVec,
        responses: Option<CounterVec>,
        duration: HistogramVec,
    },
    Icmp {
        icmp: CounterVec,
    },
    PortDistribution {
        ports: CounterVec,
    },
    Policy {
        verdicts: CounterVec,
    },
    FlowsToWorld {
        /// Count every drop, not only policy denials.
        any_drop: bool,
        /// A `port` label with the destination port.
        port: bool,
        /// Count only TCP SYNs that are not replies.
        syn_only: bool,
        flows: CounterVec,
    },
}

/// One configured handler.
#[derive(Debug)]
pub struct Handler {
    pub name: String,
    /// What it was built from (a reload keeps a handler whose spec is unchanged).
    pub spec: HandlerSpec,
    ctx: ContextOptions,
    kind: Kind,
    /// Include/exclude filters of the dynamic metrics file (none: every flow).
    filters: FlowFilters,
}

fn with(mut a: Vec<&'static str>, b: &[&'static str]) -> Vec<&'static str> {
    a.extend_from_slice(b);
    a
}

impl Handler {
    /// Builds a handler from its spec; errors name the metric and the bad option.
    pub fn new(spec: &HandlerSpec) -> Result<Self, String> {
        let mut ctx = ContextOptions::default();
        let (mut query, mut ignore_aaaa, mut exemplars) = (false, false, false);
        let (mut any_drop, mut port, mut syn_only) = (false, false, false);
        for (k, v) in &spec.options {
            let known = ctx
                .apply(k, v)
                .map_err(|e| format!("metric '{}': {e}", spec.name))?;
            if known {
                continue;
            }
            match (spec.name.as_str(), k.to_ascii_lowercase().as_str()) {
                ("dns", "query") => query = true,
                ("dns", "ignoreaaaa") => ignore_aaaa = true,
                ("http" | "httpV2", "exemplars") => exemplars = v == "true",
                ("flows-to-world", "any-drop") => any_drop = true,
                ("flows-to-world", "port") => port = true,
                ("flows-to-world", "syn-only") => syn_only = true,
                _ => {
                    return Err(format!("metric '{}': unknown option '{k}'", spec.name));
                }
            }
        }
        let c = ctx.label_names();
        let kind = match spec.name.as_str() {
            "flow" => Kind::Flow {
                flows: CounterVec::new(
                    "hubble_flows_processed_total",
                    "Total number of flows processed",
                    with(vec!["protocol", "type", "subtype", "verdict"], &c),
                ),
            },
            "drop" => Kind::Drop {
                drops: CounterVec::new(
                    "hubble_drop_total",
                    "Number of drops",
                    with(c.clone(), &["reason", "protocol"]),
                ),
            },
            "tcp" => Kind::Tcp {
                flags: CounterVec::new(
                    "hubble_tcp_flags_total",
                    "TCP flag occurrences",
                    with(vec!["flag", "family"], &c),
                ),
            },
            "dns" => {
                let mut qr = with(c.clone(), &["rcode", "qtypes", "ips_returned"]);
                let mut rt = with(c.clone(), &["type", "qtypes"]);
                if query {
                    qr.push("query");
                    rt.push("query");
                }
                Kind::Dns {
                    query,
                    ignore_aaaa,
                    queries: CounterVec::new(
                        "hubble_dns_queries_total",
                        "Number of DNS queries observed",
                        qr.clone(),
                    ),
                    responses: CounterVec::new(
                        "hubble_dns_responses_total",
                        "Number of DNS queries observed",
                        qr,
                    ),
                    response_types: CounterVec::new(
                        "hubble_dns_response_types_total",
                        "Number of DNS queries observed",
                        rt,
                    ),
                }
            }
            "http" | "httpV2" => {
                let v2 = spec.name == "httpV2";
                Kind::Http {
                    v2,
                    exemplars,
                    requests: CounterVec::new(
                        "hubble_http_requests_total",
                        "Count of HTTP requests",
                        if v2 {
                            with(c.clone(), &["method", "protocol", "status", "reporter"])
                        } else {
                            with(c.clone(), &["method", "protocol", "reporter"])
                        },
                    ),
                    responses: (!v2).then(|| {
                        CounterVec::new(
                            "hubble_http_responses_total",
                            "Count of HTTP responses",
                            with(c.clone(), &["method", "protocol", "status", "reporter"]),
                        )
                    }),
                    duration: HistogramVec::new(
                        "hubble_http_request_duration_seconds",
                        "Quantiles of HTTP request duration in seconds",
                        with(c.clone(), &["method", "reporter"]),
                    ),
                }
            }
            "icmp" => Kind::Icmp {
                icmp: CounterVec::new(
                    "hubble_icmp_total",
                    "Number of ICMP messages",
                    with(vec!["family", "type"], &c),
                ),
            },
            "port-distribution" => Kind::PortDistribution {
                ports: CounterVec::new(
                    "hubble_port_distribution_total",
                    "Numbers of packets distributed by destination port",
                    with(vec!["protocol", "port"], &c),
                ),
            },
            "policy" => Kind::Policy {
                verdicts: CounterVec::new(
                    "hubble_policy_verdicts_total",
                    "Total number of Cilium network policy verdicts",
                    with(vec!["direction", "match", "action"], &c),
                ),
            },
            "flows-to-world" => Kind::FlowsToWorld {
                any_drop,
                port,
                syn_only,
                flows: CounterVec::new(
                    "hubble_flows_to_world_total",
                    "Total number of flows to reserved:world",
                    if port {
                        with(vec!["protocol", "verdict", "port"], &c)
                    } else {
                        with(vec!["protocol", "verdict"], &c)
                    },
                ),
            },
            other => return Err(format!("metric '{other}' does not exist")),
        };
        Ok(Self {
            name: spec.name.clone(),
            spec: spec.clone(),
            ctx,
            kind,
            filters: FlowFilters::default(),
        })
    }

    /// Counts only flows `filters` pass from now on (the dynamic file's include/exclude).
    pub fn set_filters(&mut self, filters: FlowFilters) {
        self.filters = filters;
    }

    /// Takes the filters of `newer`, a handler built from the same spec (a reload).
    pub fn adopt_filters(&mut self, newer: Handler) {
        self.filters = newer.filters;
    }

    fn vecs(&self) -> (Vec<&CounterVec>, Option<&HistogramVec>) {
        match &self.kind {
            Kind::Flow { flows: v }
            | Kind::Drop { drops: v }
            | Kind::Tcp { flags: v }
            | Kind::Icmp { icmp: v }
            | Kind::PortDistribution { ports: v }
            | Kind::Policy { verdicts: v }
            | Kind::FlowsToWorld { flows: v, .. } => (vec![v], None),
            Kind::Dns {
                queries,
                responses,
                response_types,
                ..
            } => (vec![queries, responses, response_types], None),
            Kind::Http {
                requests,
                responses,
                duration,
                ..
            } => {
                let mut v = vec![requests];
                v.extend(responses.as_ref());
                (v, Some(duration))
            }
        }
    }

    fn vecs_mut(&mut self) -> (Vec<&mut CounterVec>, Option<&mut HistogramVec>) {
        match &mut self.kind {
            Kind::Flow { flows: v }
            | Kind::Drop { drops: v }
            | Kind::Tcp { flags: v }
            | Kind::Icmp { icmp: v }
            | Kind::PortDistribution { ports: v }
            | Kind::Policy { verdicts: v }
            | Kind::FlowsToWorld { flows: v, .. } => (vec![v], None),
            Kind::Dns {
                queries,
                responses,
                response_types,
                ..
            } => (vec![queries, responses, response_types], None),
            Kind::Http {
                requests,
                responses,
                duration,
                ..
            } => {
                let mut v = vec![requests];
                v.extend(responses.as_mut());
                (v, Some(duration))
            }
        }
    }

    /// Counts one flow.
    pub fn process(&mut self, f: &Flow, key: &mut KeyBuf, now: u64, lim: &Limits) {
        if !self.filters.matches(f) {
            return;
        }
        let ctx = &self.ctx;
        key.clear();
        match &mut self.kind {
            Kind::Flow { flows } => {
                let et = f.event_type.as_ref();
                let typ = et.map_or(0, |e| e.r#type);
                key.push(flow_protocol(f));
                let mut sub_num = false;
                let (t, sub) = match typ {
                    MSG_ACCESS_LOG => (
                        "L7",
                        match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
                            Some(Record::Dns(_)) => "DNS",
                            Some(Record::Http(_)) => "HTTP",
                            _ => "",
                        },
                    ),
                    MSG_DROP => ("Drop", ""),
                    MSG_CAPTURE => ("Capture", ""),
                    MSG_TRACE => (
                        "Trace",
                        observation_point(et.map_or(0, |e| e.sub_type) as u8),
                    ),
                    MSG_POLICY_VERDICT => ("PolicyVerdict", ""),
                    _ => {
                        sub_num = true;
                        ("Unknown", "")
                    }
                };
                key.push(t);
                if sub_num {
                    key.start();
                    if typ < 0 {
                        key.push_raw("-");
                    }
                    key.push_u64(typ.unsigned_abs() as u64);
                } else {
                    key.push(sub);
                }
                push_verdict(key, f.verdict, false);
                ctx.push_values(f, false, key);
                flows.inc(key.as_str(), now, lim);
            }
            Kind::Drop { drops } => {
                if f.verdict != Verdict::Dropped as i32 {
                    return;
                }
                ctx.push_values(f, false, key);
                key.start();
                match DropReason::try_from(f.drop_reason_desc) {
                    Ok(r) => key.push_raw(r.as_str_name()),
                    Err(_) => key.push_u64(f.drop_reason_desc as u64),
                }
                key.push(flow_protocol(f));
                drops.inc(key.as_str(), now, lim);
            }
            Kind::Tcp { flags } => {
                if !forwarded_or_redirected(f) {
                    return;
                }
                let (Some(ip), Some(Protocol::Tcp(tcp))) =
                    (&f.ip, f.l4.as_ref().and_then(|l| l.protocol.as_ref()))
                else {
                    return;
                };
                let Some(fl) = tcp.flags else { return };
                let family = match IpVersion::try_from(ip.ip_version) {
                    Ok(v) => v.as_str_name(),
                    Err(_) => "IP_NOT_USED",
                };
                let mut one = |flag: &str, key: &mut KeyBuf| {
                    key.clear();
                    key.push(flag);
                    key.push(family);
                    ctx.push_values(f, false, key);
                    flags.inc(key.as_str(), now, lim);
                };
                if fl.fin {
                    one("FIN", key);
                }
                if fl.syn {
                    one(if fl.ack { "SYN-ACK" } else { "SYN" }, key);
                }
                if fl.rst {
                    one("RST", key);
                }
            }
            Kind::Dns {
                query,
                ignore_aaaa,
                queries,
                responses,
                response_types,
            } => {
                let Some(Record::Dns(dns)) = f.l7.as_ref().and_then(|l| l.record.as_ref()) else {
                    return;
                };
                if *ignore_aaaa && dns.qtypes.len() == 1 && dns.qtypes[0] == "AAAA" {
                    return;
                }
                ctx.push_values(f, false, key);
                let ctx_mark = key.mark();
                let is_reply = f.is_reply.is_some_and(|b| b.value);
                let dropped = f.verdict == Verdict::Dropped as i32;
                key.push(if dropped {
                    "Policy denied"
                } else if is_reply {
                    rcode_name(dns.rcode)
                } else {
                    ""
                });
                key.start();
                for (i, q) in dns.qtypes.iter().enumerate() {
                    if i > 0 {
                        key.push_raw(",");
                    }
                    key.push_raw(q);
                }
                key.start();
                key.push_u64(dns.ips.len() as u64);
                if *query {
                    key.push(&dns.query);
                }
                if dropped || !is_reply {
                    queries.inc(key.as_str(), now, lim);
                    return;
                }
                responses.inc(key.as_str(), now, lim);
                for rr in &dns.rrtypes {
                    key.reset(ctx_mark);
                    key.push(rr);
                    key.start();
                    for (i, q) in dns.qtypes.iter().enumerate() {
                        if i > 0 {
                            key.push_raw(",");
                        }
                        key.push_raw(q);
                    }
                    if *query {
                        key.push(&dns.query);
                    }
                    response_types.inc(key.as_str(), now, lim);
                }
            }
            Kind::Http {
                v2,
                exemplars,
                requests,
                responses,
                duration,
            } => {
                let Some(l7) = &f.l7 else { return };
                let Some(Record::Http(http)) = &l7.record else {
                    return;
                };
                let is_request = l7.r#type == L7FlowType::Request as i32;
                let is_response = l7.r#type == L7FlowType::Response as i32;
                if !(is_response || (is_request && !*v2)) {
                    return;
                }
                let reporter = match TrafficDirection::try_from(f.traffic_direction) {
                    Ok(TrafficDirection::Egress) => "client",
                    Ok(TrafficDirection::Ingress) => "server",
                    _ => "unknown",
                };
                // Cilium's exemplar: the trace ID of the flow's W3C trace context.
                let trace_id = if *exemplars { trace_id(f) } else { "" };
                let count = |c: &mut CounterVec, key: &KeyBuf| {
                    if trace_id.is_empty() {
                        c.inc(key.as_str(), now, lim)
                    } else {
                        c.inc_with_exemplar(key.as_str(), now, lim, trace_id)
                    }
                };
                ctx.push_values(f, *v2, key);
                key.push(&http.method);
                if is_request {
                    key.push(&http.protocol);
                    key.push(reporter);
                    count(requests, key);
                    return;
                }
                let method_mark = key.mark();
                key.push(&http.protocol);
                key.start();
                key.push_u64(http.code as u64);
                key.push(reporter);
                count(responses.as_mut().unwrap_or(requests), key);
                key.reset(method_mark);
                key.push(reporter);
                let seconds = l7.latency_ns as f64 / 1e9;
                if trace_id.is_empty() {
                    duration.observe(key.as_str(), seconds, now, lim);
                } else {
                    duration.observe_with_exemplar(key.as_str(), seconds, now, lim, trace_id);
                }
            }
            Kind::Icmp { icmp } => {
                let tc = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                    Some(Protocol::IcmPv4(i)) => {
                        crate::enrich::icmpv4_type_code(i.r#type as u8, i.code as u8)
                    }
                    Some(Protocol::IcmPv6(i)) => {
                        crate::enrich::icmpv6_type_code(i.r#type as u8, i.code as u8)
                    }
                    _ => return,
                };
                // Hubble labels ICMPv6 messages with family "IPv4" too; dashboards built on
                // Hubble's series depend on it, so this keeps its value.
                key.push("IPv4");
                key.push(&tc);
                ctx.push_values(f, false, key);
                icmp.inc(key.as_str(), now, lim);
            }
            Kind::PortDistribution { ports } => {
                let skip_reply = f.is_reply.is_none_or(|b| b.value);
                if !forwarded_or_redirected(f) || skip_reply {
                    return;
                }
                let (proto, port) = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                    Some(Protocol::Tcp(p)) => ("TCP", p.destination_port),
                    Some(Protocol::Udp(p)) => ("UDP", p.destination_port),
                    Some(Protocol::Sctp(p)) => ("SCTP", p.destination_port),
                    Some(Protocol::IcmPv4(_)) => ("ICMPv4", 0),
                    Some(Protocol::IcmPv6(_)) => ("ICMPv6", 0),
                    _ => return,
                };
                key.push(proto);
                key.start();
                key.push_u64(port as u64);
                ctx.push_values(f, false, key);
                ports.inc(key.as_str(), now, lim);
            }
            Kind::Policy { verdicts } => {
                let typ = f.event_type.as_ref().map_or(0, |e| e.r#type);
                let direction = match TrafficDirection::try_from(f.traffic_direction) {
                    Ok(TrafficDirection::Ingress) => "ingress",
                    Ok(TrafficDirection::Egress) => "egress",
                    _ => "traffic_direction_unknown",
                };
                if typ == MSG_POLICY_VERDICT {
                    if f.source
                        .as_ref()
                        .is_some_and(|s| s.identity == IDENTITY_HOST)
                    {
                        return;
                    }
                    key.push(direction);
                    key.push(policy_match(f.policy_match_type));
                } else if typ == MSG_ACCESS_LOG {
                    key.push(direction);
                    key.push(match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
                        Some(Record::Dns(_)) => "l7/dns",
                        Some(Record::Http(_)) => "l7/http",
                        #[allow(deprecated)]
                        Some(Record::Kafka(_)) => "l7/kafka",
                        None => "l7/",
                    });
                } else {
                    return;
                }
                push_verdict(key, f.verdict, true);
                ctx.push_values(f, false, key);
                verdicts.inc(key.as_str(), now, lim);
            }
            Kind::FlowsToWorld {
                any_drop,
                port,
                syn_only,
                flows,
            } => {
                let Some(l4) = &f.l4 else { return };
                let to_world = f
                    .destination
                    .as_ref()
                    .is_some_and(|d| d.labels.iter().any(|l| l == WORLD_LABEL));
                if !to_world || f.event_type.is_none() {
                    return;
                }
                let dropped = f.verdict == Verdict::Dropped as i32;
                if dropped && !*any_drop && f.drop_reason_desc != DropReason::PolicyDenied as i32 {
                    return;
                }
                // Forwarded replies would count ephemeral ports.
                let is_reply = f.is_reply.is_some_and(|b| b.value);
                if !dropped && is_reply {
                    return;
                }
                let syn = matches!(&l4.protocol, Some(Protocol::Tcp(t)) if t.flags.is_some_and(|fl| fl.syn));
                if *syn_only && (!syn || is_reply) {
                    return;
                }
                key.push(flow_protocol(f));
                push_verdict(key, f.verdict, false);
                if *port {
                    key.start();
                    match &l4.protocol {
                        Some(Protocol::Tcp(p)) => key.push_u64(p.destination_port as u64),
                        Some(Protocol::Udp(p)) => key.push_u64(p.destination_port as u64),
                        Some(Protocol::Sctp(p)) => key.push_u64(p.destination_port as u64),
                        _ => {}
                    }
                }
                ctx.push_values(f, false, key);
                flows.inc(key.as_str(), now, lim);
            }
        }
    }

    pub fn expire(&mut self, now: u64, ttl: u64) {
        let (cs, h) = self.vecs_mut();
        for c in cs {
            c.expire(now, ttl);
        }
        if let Some(h) = h {
            h.expire(now, ttl);
        }
    }

    /// Removes every series naming pod `ns/pod`.
    pub fn forget_pod(&mut self, ns: &str, pod: &str) {
        let (cs, h) = self.vecs_mut();
        for c in cs {
            c.forget_pod(ns, pod);
        }
        if let Some(h) = h {
            h.forget_pod(ns, pod);
        }
    }

    /// (series, dropped over the cap, expired) over this handler's families.
    pub fn series_stats(&self) -> (u64, u64, u64) {
        let (cs, h) = self.vecs();
        let mut s = (0, 0, 0);
        for c in cs {
            s.0 += c.len() as u64;
            s.1 += c.dropped;
            s.2 += c.expired;
        }
        if let Some(h) = h {
            s.0 += h.len() as u64;
            s.1 += h.dropped;
            s.2 += h.expired;
        }
        s
    }

    /// This handler's families in OpenMetrics text.
    pub fn write(&self, out: &mut String) {
        let (cs, h) = self.vecs();
        for c in cs {
            c.write(out);
        }
        if let Some(h) = h {
            h.write(out);
        }
    }

    /// The counter family named `name` (tests).
    pub fn counter(&self, name: &str) -> Option<&CounterVec> {
        let want = name.strip_suffix("_total").unwrap_or(name);
        self.vecs().0.into_iter().find(|c| c.name == want)
    }

    /// The histogram family of this handler (tests).
    pub fn histogram(&self) -> Option<&HistogramVec> {
        self.vecs().1
    }
}

/// `hubble_lost_events_total{source}`, kept whenever metrics are on.
pub fn lost_events_vec() -> CounterVec {
    CounterVec::new(
        "hubble_lost_events_total",
        "Number of lost events",
        vec!["source"],
    )
}

pub fn lost_source(ev: &LostEvent) -> &'static str {
    match LostEventSource::try_from(ev.source) {
        Ok(LostEventSource::PerfEventRingBuffer) => "perf_event_ring_buffer",
        Ok(LostEventSource::ObserverEventsQueue) => "observer_events_queue",
        Ok(LostEventSource::HubbleRingBuffer) => "hubble_ring_buffer",
        _ => "unknown",
    }
}

/// The trace ID of the flow's trace context (empty without one).
fn trace_id(f: &Flow) -> &str {
    f.trace_context
        .as_ref()
        .and_then(|t| t.parent.as_ref())
        .map_or("", |p| p.trace_id.as_str())
}

fn forwarded_or_redirected(f: &Flow) -> bool {
    f.verdict == Verdict::Forwarded as i32 || f.verdict == Verdict::Redirected as i32
}

fn push_verdict(key: &mut KeyBuf, v: i32, lower: bool) {
    key.start();
    match Verdict::try_from(v) {
        Ok(v) => {
            let n = v.as_str_name();
            if lower {
                for c in n.chars() {
                    let mut b = [0u8; 4];
                    key.push_raw(c.to_ascii_lowercase().encode_utf8(&mut b));
                }
            } else {
                key.push_raw(n)
            }
        }
        Err(_) => key.push_u64(v as u64),
    }
}

/// Hubble's `v1.FlowProtocol`: the L7 protocol, else the L4 one.
pub fn flow_protocol(f: &Flow) -> &'static str {
    match f.event_type.as_ref().map_or(0, |e| e.r#type) {
        MSG_ACCESS_LOG => match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(Record::Dns(_)) => "DNS",
            Some(Record::Http(_)) => "HTTP",
            #[allow(deprecated)]
            Some(Record::Kafka(_)) => "Kafka",
            None => "Unknown L7",
        },
        MSG_DROP | MSG_TRACE | MSG_POLICY_VERDICT | MSG_CAPTURE => {
            match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                Some(Protocol::Tcp(_)) => "TCP",
                Some(Protocol::Udp(_)) => "UDP",
                Some(Protocol::IcmPv4(_)) => "ICMPv4",
                Some(Protocol::IcmPv6(_)) => "ICMPv6",
                Some(Protocol::Sctp(_)) => "SCTP",
                Some(Protocol::Vrrp(_)) => "VRRP",
                Some(Protocol::Igmp(_)) => "IGMP",
                None => "Unknown L4",
            }
        }
        _ => "Unknown flow",
    }
}

/// cilium `monitorAPI.TraceObservationPoints` (empty for unknown points).
fn observation_point(p: u8) -> &'static str {
    match p {
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
        _ => "",
    }
}

/// cilium `monitorAPI.PolicyMatchType.String()`, lower-cased.
fn policy_match(m: u32) -> &'static str {
    match m {
        1 => "l3-only",
        2 => "l3-l4",
        3 => "l4-only",
        4 => "all",
        5 => "l3-proto",
        6 => "proto-only",
        _ => "none",
    }
}

/// Hubble's DNS rcode names (empty for codes it does not name).
fn rcode_name(rcode: u32) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Not Authorized",
        10 => "Name not contained in zone",
        11 => "DSO-TYPE Not Implemented",
        16 => "Bad OPT Version",
        17 => "Key not recognized",
        18 => "Signature out of time window",
        19 => "Bad TKEY Mode",
        20 => "Duplicate key name",
        21 => "Algorithm not supported",
        22 => "Bad Truncation",
        23 => "Bad/missing Server Cookie",
        _ => "",
    }
}
