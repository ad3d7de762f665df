use hubble_api::flow::layer4::Protocol;
use hubble_api::flow::layer7::Record;
use hubble_api::flow::{
    CiliumEventType, Dns, Endpoint, Flow, Http, IcmPv4, Ip, Layer4, Layer7, Tcp, TcpFlags,
    TraceContext, TraceParent, Udp, Workload,
};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use pbjson_types::BoolValue;

use super::vec::Limits;
use super::*;

const ALL: &str =
    "flow,drop,tcp,dns:query;ignoreAAAA,http,icmp,port-distribution,policy,flows-to-world";

fn demo() -> Vec<Flow> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/flows/demo.jsonl"
    ))
    .unwrap();
    text.lines()
        .filter_map(|l| {
            match serde_json::from_str::<GetFlowsResponse>(l)
                .unwrap()
                .response_types
            {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            }
        })
        .collect()
}

fn metrics(spec: &str) -> FlowMetrics {
    FlowMetrics::new(&[spec.to_string()], Limits::default()).unwrap()
}

fn handler<'a>(m: &'a FlowMetrics, name: &str) -> &'a Handler {
    m.handlers().iter().find(|h| h.name == name).unwrap()
}

/// Sum of a family's samples in a parsed scrape.
fn sum(scrape: &prometheus_parse::Scrape, metric: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

#[test]
fn demo_fixture_counts_every_flow_where_hubble_would() {
    let flows = demo();
    let m = Metrics::new(metrics(ALL));
    for f in &flows {
        m.lock().process_flow(f, coarse_now());
    }
    let text = m.encode_text();
    let s = parse(&text);
    assert_eq!(sum(&s, "hubble_flows_processed_total"), flows.len() as f64);
    let dropped = flows.iter().filter(|f| f.verdict == 2).count();
    assert_eq!(sum(&s, "hubble_drop_total"), dropped as f64);
    let dns = |reply: bool| {
        flows
            .iter()
            .filter(|f| {
                matches!(
                    f.l7.as_ref().and_then(|l| l.record.as_ref()),
                    Some(Record::Dns(d)) if !(d.qtypes.len() == 1 && d.qtypes[0] == "AAAA")
                ) && f.is_reply.is_some_and(|b| b.value) == reply
                    && f.verdict != 2
            })
            .count() as f64
    };
    assert!(dns(false) > 0.0 && dns(true) > 0.0);
    assert_eq!(sum(&s, "hubble_dns_queries_total"), dns(false));
    assert_eq!(sum(&s, "hubble_dns_responses_total"), dns(true));
    let http = |t: i32| {
        flows
            .iter()
            .filter(|f| {
                f.l7.as_ref()
                    .is_some_and(|l| l.r#type == t && matches!(l.record, Some(Record::Http(_))))
            })
            .count() as f64
    };
    assert!(http(1) > 0.0 && http(2) > 0.0);
    assert_eq!(sum(&s, "hubble_http_requests_total"), http(1));
    assert_eq!(sum(&s, "hubble_http_responses_total"), http(2));
    assert_eq!(
        sum(&s, "hubble_http_request_duration_seconds_count"),
        http(2)
    );
    // The event types of the fixture, as Hubble names them.
    let g = m.lock();
    let fl = handler(&g, "flow")
        .counter("hubble_flows_processed_total")
        .unwrap();
    assert_eq!(
        fl.get(&["TCP", "Trace", "to-stack", "FORWARDED"]),
        Some(
            flows
                .iter()
                .filter(|f| f
                    .event_type
                    .as_ref()
                    .is_some_and(|e| e.r#type == 4 && e.sub_type == 3)
                    && f.verdict == 1
                    && matches!(
                        f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                        Some(Protocol::Tcp(_))
                    ))
                .count() as u64
        )
    );
    let drops = handler(&g, "drop").counter("hubble_drop_total").unwrap();
    assert!(
        drops.get(&["POLICY_DENIED", "TCP"]).is_some()
            || drops.get(&["POLICY_DENIED", "UDP"]).is_some()
    );
    drop(g);
    for name in [
        "hubble_tcp_flags_total",
        "hubble_icmp_total",
        "hubble_port_distribution_total",
        "hubble_policy_verdicts_total",
        "hubble_agent_flows_total",
    ] {
        assert!(
            s.samples.iter().any(|x| x.metric == name),
            "{name} missing in\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

fn ep(ns: &str, pod: &str, labels: &[&str]) -> Endpoint {
    Endpoint {
        namespace: ns.into(),
        pod_name: pod.into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        workloads: vec![Workload {
            name: format!("{pod}-wl"),
            kind: "Deployment".into(),
        }],
        identity: 300,
        ..Default::default()
    }
}

fn tcp_flow(flags: TcpFlags, reply: Option<bool>) -> Flow {
    Flow {
        verdict: 1,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: 8080,
                flags: Some(flags),
            })),
        }),
        source: Some(ep("shop", "web-5f6d-abcde", &["k8s:app=web"])),
        destination: Some(ep(
            "db",
            "pg-0",
            &["k8s:app.kubernetes.io/name=postgres", "reserved:world"],
        )),
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        traffic_direction: 2,
        is_reply: reply.map(|value| BoolValue { value }),
        ..Default::default()
    }
}

#[test]
fn tcp_flags_and_contexts() {
    let mut m = metrics(
        "tcp:sourceContext=pod;destinationContext=app|pod;labelsContext=traffic_direction,source_namespace",
    );
    let syn = TcpFlags {
        syn: true,
        ..Default::default()
    };
    let synack = TcpFlags {
        syn: true,
        ack: true,
        ..Default::default()
    };
    let fin_rst = TcpFlags {
        fin: true,
        rst: true,
        ..Default::default()
    };
    for f in [syn, synack, synack, fin_rst] {
        m.process_flow(&tcp_flow(f, Some(false)), 1);
    }
    let mut dropped = tcp_flow(syn, Some(false));
    dropped.verdict = 2;
    m.process_flow(&dropped, 1);
    let c = handler(&m, "tcp")
        .counter("hubble_tcp_flags_total")
        .unwrap();
    assert_eq!(
        c.labels,
        [
            "flag",
            "family",
            "source_namespace",
            "traffic_direction",
            "source",
            "destination"
        ]
    );
    let k = |flag| {
        [
            flag,
            "IPv4",
            "shop",
            "egress",
            "shop/web-5f6d-abcde",
            "postgres",
        ]
    };
    assert_eq!(c.get(&k("SYN")), Some(1));
    assert_eq!(c.get(&k("SYN-ACK")), Some(2));
    assert_eq!(c.get(&k("FIN")), Some(1));
    assert_eq!(c.get(&k("RST")), Some(1));
    assert_eq!(c.len(), 4);
}

#[test]
fn direction_specific_contexts_override() {
    let mut m = metrics(
        "flow:sourceContext=namespace;sourceIngressContext=pod-name;destinationContext=reserved-identity|ip",
    );
    let mut f = tcp_flow(TcpFlags::default(), None);
    m.process_flow(&f, 1);
    f.traffic_direction = 1;
    m.process_flow(&f, 1);
    let c = handler(&m, "flow")
        .counter("hubble_flows_processed_total")
        .unwrap();
    assert_eq!(
        c.get(&[
            "TCP",
            "Trace",
            "to-endpoint",
            "FORWARDED",
            "shop",
            "reserved:world"
        ]),
        Some(1)
    );
    assert_eq!(
        c.get(&[
            "TCP",
            "Trace",
            "to-endpoint",
            "FORWARDED",
            "web-5f6d-abcde",
            "reserved:world"
        ]),
        Some(1)
    );
}

#[test]
fn port_distribution_skips_replies_and_unknown_direction() {
    let mut m = metrics("port-distribution:destinationContext=pod-short");
    m.process_flow(&tcp_flow(TcpFlags::default(), Some(false)), 1);
    m.process_flow(&tcp_flow(TcpFlags::default(), Some(true)), 1);
    m.process_flow(&tcp_flow(TcpFlags::default(), None), 1);
    let mut icmp = tcp_flow(TcpFlags::default(), Some(false));
    icmp.l4 = Some(Layer4 {
        protocol: Some(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })),
    });
    m.process_flow(&icmp, 1);
    let c = handler(&m, "port-distribution")
        .counter("hubble_port_distribution_total")
        .unwrap();
    // pod-short: `pg-0` loses its `-0` like `web-5f6d-abcde` loses two segments.
    assert_eq!(c.get(&["TCP", "8080", "db/pg"]), Some(1));
    assert_eq!(c.get(&["ICMPv4", "0", "db/pg"]), Some(1));
    assert_eq!(c.len(), 2);
}

#[test]
fn icmp_and_policy() {
    let mut m = metrics("icmp,policy:sourceContext=namespace");
    let mut f = tcp_flow(TcpFlags::default(), Some(false));
    f.l4 = Some(Layer4 {
        protocol: Some(Protocol::IcmPv4(IcmPv4 { r#type: 3, code: 3 })),
    });
    m.process_flow(&f, 1);
    let c = handler(&m, "icmp").counter("hubble_icmp_total").unwrap();
    assert_eq!(c.get(&["IPv4", "DestinationUnreachable(Port)"]), Some(1));
    // Policy verdicts: L3/L4 events and L7 records; never from the host identity.
    let mut pv = tcp_flow(TcpFlags::default(), Some(false));
    pv.event_type = Some(CiliumEventType {
        r#type: 5,
        sub_type: 0,
    });
    pv.verdict = 2;
    pv.policy_match_type = 2;
    pv.traffic_direction = 1;
    m.process_flow(&pv, 1);
    let mut host = pv.clone();
    host.source.as_mut().unwrap().identity = 1;
    m.process_flow(&host, 1);
    let mut l7 = pv.clone();
    l7.event_type = Some(CiliumEventType {
        r#type: 129,
        sub_type: 0,
    });
    l7.verdict = 1;
    l7.l7 = Some(Layer7 {
        r#type: 1,
        latency_ns: 0,
        record: Some(Record::Dns(Dns::default())),
    });
    m.process_flow(&l7, 1);
    let p = handler(&m, "policy")
        .counter("hubble_policy_verdicts_total")
        .unwrap();
    assert_eq!(p.get(&["ingress", "l3-l4", "dropped", "shop"]), Some(1));
    assert_eq!(p.get(&["ingress", "l7/dns", "forwarded", "shop"]), Some(1));
    assert_eq!(p.len(), 2);
}

fn l7_flow(typ: i32, record: Record, reply: bool) -> Flow {
    let mut f = tcp_flow(TcpFlags::default(), Some(reply));
    f.event_type = Some(CiliumEventType {
        r#type: 129,
        sub_type: 0,
    });
    f.l4 = Some(Layer4 {
        protocol: Some(Protocol::Udp(Udp {
            source_port: 5000,
            destination_port: 53,
        })),
    });
    f.l7 = Some(Layer7 {
        r#type: typ,
        latency_ns: 30_000_000,
        record: Some(record),
    });
    f
}

#[test]
fn dns_queries_responses_types_and_options() {
    let mut m = metrics("dns:query;ignoreAAAA;destinationContext=namespace");
    let q = Dns {
        query: "db.example.".into(),
        qtypes: vec!["A".into()],
        ..Default::default()
    };
    m.process_flow(&l7_flow(1, Record::Dns(q.clone()), false), 1);
    let aaaa = Dns {
        qtypes: vec!["AAAA".into()],
        ..q.clone()
    };
    m.process_flow(&l7_flow(1, Record::Dns(aaaa), false), 1);
    let r = Dns {
        ips: vec!["1.2.3.4".into(), "1.2.3.5".into()],
        rrtypes: vec!["A".into(), "CNAME".into()],
        rcode: 0,
        ..q.clone()
    };
    m.process_flow(&l7_flow(2, Record::Dns(r), true), 1);
    let nx = Dns {
        rcode: 3,
        ..q.clone()
    };
    m.process_flow(&l7_flow(2, Record::Dns(nx), true), 1);
    let mut denied = l7_flow(1, Record::Dns(q), false);
    denied.verdict = 2;
    m.process_flow(&denied, 1);
    let h = handler(&m, "dns");
    let qs = h.counter("hubble_dns_queries_total").unwrap();
    assert_eq!(
        qs.labels,
        ["destination", "rcode", "qtypes", "ips_returned", "query"]
    );
    assert_eq!(qs.get(&["db", "", "A", "0", "db.example."]), Some(1));
    assert_eq!(
        qs.get(&["db", "Policy denied", "A", "0", "db.example."]),
        Some(1)
    );
    assert_eq!(qs.len(), 2, "AAAA-only queries are ignored");
    let rs = h.counter("hubble_dns_responses_total").unwrap();
    assert_eq!(
        rs.get(&["db", "No Error", "A", "2", "db.example."]),
        Some(1)
    );
    assert_eq!(
        rs.get(&["db", "Non-Existent Domain", "A", "0", "db.example."]),
        Some(1)
    );
    let rt = h.counter("hubble_dns_response_types_total").unwrap();
    assert_eq!(rt.labels, ["destination", "type", "qtypes", "query"]);
    assert_eq!(rt.get(&["db", "CNAME", "A", "db.example."]), Some(1));
}

#[test]
fn http_v1_and_v2() {
    let req = Http {
        method: "GET".into(),
        url: "http://db/x".into(),
        protocol: "HTTP/1.1".into(),
        ..Default::default()
    };
    let resp = Http {
        code: 503,
        ..req.clone()
    };
    let mut m = metrics("http:sourceContext=namespace");
    m.process_flow(&l7_flow(1, Record::Http(req.clone()), false), 1);
    m.process_flow(&l7_flow(2, Record::Http(resp.clone()), true), 1);
    let h = handler(&m, "http");
    assert_eq!(
        h.counter("hubble_http_requests_total")
            .unwrap()
            .get(&["shop", "GET", "HTTP/1.1", "client"]),
        Some(1)
    );
    assert_eq!(
        h.counter("hubble_http_responses_total")
            .unwrap()
            .get(&["shop", "GET", "HTTP/1.1", "503", "client"]),
        Some(1)
    );
    let (n, s) = h
        .histogram()
        .unwrap()
        .get(&["shop", "GET", "client"])
        .unwrap();
    assert_eq!(n, 1);
    assert!((s - 0.03).abs() < 1e-9);
    // httpV2: responses only, source and destination swapped.
    let mut m = metrics("httpV2:sourceContext=namespace;destinationContext=pod-name");
    m.process_flow(&l7_flow(1, Record::Http(req), false), 1);
    m.process_flow(&l7_flow(2, Record::Http(resp), true), 1);
    let h = handler(&m, "httpV2");
    let c = h.counter("hubble_http_requests_total").unwrap();
    assert_eq!(
        c.labels,
        [
            "source",
            "destination",
            "method",
            "protocol",
            "status",
            "reporter"
        ]
    );
    // Hubble computes each side with its own context list, then swaps the values.
    assert_eq!(
        c.get(&["pg-0", "shop", "GET", "HTTP/1.1", "503", "client"]),
        Some(1)
    );
    assert_eq!(c.len(), 1);
    assert!(h.counter("hubble_http_responses_total").is_none());
}

#[test]
fn lost_events_are_counted_by_source() {
    let m = Metrics::new(metrics("flow"));
    let resp = GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(hubble_api::flow::LostEvent {
            source: 1,
            num_events_lost: 7,
            ..Default::default()
        })),
        ..Default::default()
    };
    m.record(Some(&resp), &crate::cmd::Counters::default());
    let s = parse(&m.encode_text());
    let v: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == "hubble_lost_events_total")
        .collect();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].labels.get("source"), Some("perf_event_ring_buffer"));
    assert_eq!(sum(&s, "hubble_lost_events_total"), 7.0);
}

#[test]
fn invalid_specs_refuse_with_one_line() {
    let err = |s: &str| FlowMetrics::new(&[s.to_string()], Limits::default()).unwrap_err();
    assert_eq!(
        err("flow:sourceContext=pods"),
        "metric 'flow': unknown context 'pods' (one of identity, namespace, pod, pod-short, pod-name, dns, ip, reserved-identity, workload-name, app)"
    );
    assert_eq!(err("drop:query"), "metric 'drop': unknown option 'query'");
    assert_eq!(
        err("tcp:labelsContext=source_pod,dst"),
        "metric 'tcp': invalid labelsContext value: dst"
    );
    assert!(err("kafka").starts_with("metric 'kafka' does not exist"));
    for s in [
        "flow:sourceContext=pods",
        "drop:query",
        "kafka",
        "http,httpV2",
    ] {
        assert!(!err(s).contains('\n'));
    }
}

#[test]
fn series_expire_after_the_ttl() {
    let mut m = FlowMetrics::new(
        &["flow".to_string()],
        Limits {
            ttl_secs: 10,
            max_series: 100,
        },
    )
    .unwrap();
    m.process_flow(&tcp_flow(TcpFlags::default(), None), 100);
    let mut udp = tcp_flow(TcpFlags::default(), None);
    udp.l4 = Some(Layer4 {
        protocol: Some(Protocol::Udp(Udp::default())),
    });
    m.process_flow(&udp, 105);
    m.process_flow(&udp, 111);
    let c = handler(&m, "flow")
        .counter("hubble_flows_processed_total")
        .unwrap();
    assert_eq!(c.len(), 1, "the TCP series went stale at 110");
    assert_eq!(
        c.get(&["UDP", "Trace", "to-endpoint", "FORWARDED"]),
        Some(2)
    );
}

#[test]
fn a_deleted_pods_series_go_with_it() {
    use hubble_api::flow::{
        AgentEvent, AgentEventType, EndpointUpdateNotification, agent_event::Notification,
    };
    let mut fm = FlowMetrics::new(
        &[
            "tcp:sourceContext=pod;labelsContext=destination_pod,destination_namespace".to_string(),
            "flow".to_string(),
        ],
        Limits::default(),
    )
    .unwrap();
    let syn = TcpFlags {
        syn: true,
        ..Default::default()
    };
    fm.process_flow(&tcp_flow(syn, Some(false)), 1);
    let mut other = tcp_flow(syn, Some(false));
    other.source = Some(ep("shop", "other", &["k8s:app=other"]));
    fm.process_flow(&other, 1);
    let m = Metrics::new(fm);
    let deleted = |ns: &str, pod: &str| AgentEvent {
        r#type: AgentEventType::EndpointDeleted as i32,
        notification: Some(Notification::EndpointUpdate(EndpointUpdateNotification {
            namespace: ns.into(),
            pod_name: pod.into(),
            ..Default::default()
        })),
    };
    let tcp_series = |m: &Metrics| {
        handler(&m.lock(), "tcp")
            .counter("hubble_tcp_flags_total")
            .unwrap()
            .len()
    };
    let flow_series = |m: &Metrics| {
        handler(&m.lock(), "flow")
            .counter("hubble_flows_processed_total")
            .unwrap()
            .len()
    };
    assert_eq!((tcp_series(&m), flow_series(&m)), (2, 1));
    // The source pod goes: its series (source context) go; the other pod's stay, and
    // series that name no pod stay.
    m.forget_deleted_endpoints(&[deleted("shop", "web-5f6d-abcde")]);
    assert_eq!((tcp_series(&m), flow_series(&m)), (1, 1));
    // A pod of the same name in another namespace is another pod.
    m.forget_deleted_endpoints(&[deleted("other-ns", "pg-0")]);
    assert_eq!(tcp_series(&m), 1);
    // The destination pod goes (labelsContext pod and namespace): the rest go.
    m.forget_deleted_endpoints(&[deleted("db", "pg-0")]);
    assert_eq!((tcp_series(&m), flow_series(&m)), (0, 1));
}

#[test]
fn flows_to_world_counts_what_cilium_counts() {
    let mut m = metrics("flows-to-world:port;sourceContext=namespace");
    let syn = TcpFlags {
        syn: true,
        ..Default::default()
    };
    fn c(m: &FlowMetrics) -> &vec::CounterVec {
        let c = handler(m, "flows-to-world")
            .counter("hubble_flows_to_world_total")
            .unwrap();
        assert_eq!(c.labels, ["protocol", "verdict", "port", "source"]);
        c
    }
    // A forwarded request to reserved:world counts; its reply does not (ephemeral ports).
    m.process_flow(&tcp_flow(syn, Some(false)), 1);
    m.process_flow(&tcp_flow(syn, Some(true)), 1);
    assert_eq!(c(&m).get(&["TCP", "FORWARDED", "8080", "shop"]), Some(1));
    // Policy denials count, replies or not; other drops only with any-drop.
    let mut denied = tcp_flow(syn, Some(true));
    denied.verdict = 2;
    denied.drop_reason_desc = hubble_api::flow::DropReason::PolicyDenied as i32;
    m.process_flow(&denied, 1);
    let mut other_drop = denied.clone();
    other_drop.drop_reason_desc = hubble_api::flow::DropReason::InvalidSourceIp as i32;
    m.process_flow(&other_drop, 1);
    assert_eq!(c(&m).get(&["TCP", "DROPPED", "8080", "shop"]), Some(1));
    // Not to the world, no L4, no event type: not counted.
    let mut inside = tcp_flow(syn, Some(false));
    inside.destination.as_mut().unwrap().labels = vec!["k8s:app=db".into()];
    m.process_flow(&inside, 1);
    let mut no_l4 = tcp_flow(syn, Some(false));
    no_l4.l4 = None;
    m.process_flow(&no_l4, 1);
    let mut no_type = tcp_flow(syn, Some(false));
    no_type.event_type = None;
    m.process_flow(&no_type, 1);
    // UDP has its port; ICMP an empty one.
    let mut udp = tcp_flow(syn, Some(false));
    udp.l4 = Some(Layer4 {
        protocol: Some(Protocol::Udp(Udp {
            source_port: 5000,
            destination_port: 53,
        })),
    });
    m.process_flow(&udp, 1);
    let mut icmp = tcp_flow(syn, None);
    icmp.l4 = Some(Layer4 {
        protocol: Some(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })),
    });
    m.process_flow(&icmp, 1);
    let c = c(&m);
    assert_eq!(c.get(&["UDP", "FORWARDED", "53", "shop"]), Some(1));
    assert_eq!(c.get(&["ICMPv4", "FORWARDED", "", "shop"]), Some(1));
    assert_eq!(c.len(), 4);

    // any-drop counts every drop; without `port` there is no port label.
    let mut m = metrics("flows-to-world:any-drop");
    m.process_flow(&other_drop, 1);
    let c = handler(&m, "flows-to-world")
        .counter("hubble_flows_to_world_total")
        .unwrap();
    assert_eq!(c.labels, ["protocol", "verdict"]);
    assert_eq!(c.get(&["TCP", "DROPPED"]), Some(1));

    // syn-only: TCP SYNs that are not replies.
    let mut m = metrics("flows-to-world:syn-only");
    let ack = TcpFlags {
        ack: true,
        ..Default::default()
    };
    let synack = TcpFlags {
        syn: true,
        ack: true,
        ..Default::default()
    };
    m.process_flow(&tcp_flow(syn, Some(false)), 1);
    m.process_flow(&tcp_flow(ack, Some(false)), 1);
    m.process_flow(&tcp_flow(synack, Some(true)), 1);
    m.process_flow(&udp, 1);
    let mut denied_syn_reply = denied.clone();
    denied_syn_reply.is_reply = Some(BoolValue { value: true });
    m.process_flow(&denied_syn_reply, 1);
    let c = handler(&m, "flows-to-world")
        .counter("hubble_flows_to_world_total")
        .unwrap();
    assert_eq!(c.get(&["TCP", "FORWARDED"]), Some(1));
    assert_eq!(c.len(), 1);
}

fn traced(mut f: Flow, trace_id: &str) -> Flow {
    f.trace_context = Some(TraceContext {
        parent: Some(TraceParent {
            trace_id: trace_id.into(),
        }),
    });
    f
}

/// The sample lines of `text` naming `metric` that carry an exemplar.
fn with_exemplars<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(" # {"))
        .collect()
}

#[test]
fn http_exemplars_are_the_flows_trace_ids_in_openmetrics_only() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = Http {
        method: "GET".into(),
        url: "http://db/x".into(),
        protocol: "HTTP/1.1".into(),
        ..Default::default()
    };
    let resp = Http {
        code: 200,
        ..req.clone()
    };
    // httpV2: the response's request counter and its duration bucket.
    let m = Metrics::new(metrics("httpV2:exemplars=true;sourceContext=namespace"));
    m.lock().process_flow(
        &traced(l7_flow(2, Record::Http(resp.clone()), true), TRACE),
        coarse_now(),
    );
    m.lock()
        .process_flow(&l7_flow(2, Record::Http(resp.clone()), true), coarse_now());
    let om = m.encode(exposition::Format::OpenMetrics);
    let reqs = with_exemplars(&om, "hubble_http_requests_total");
    assert_eq!(reqs.len(), 1, "{om}");
    assert!(
        reqs[0].starts_with(&format!(
            "hubble_http_requests_total{{source=\"\",method=\"GET\",protocol=\"HTTP/1.1\",status=\"200\",reporter=\"client\"}} 2 # {{traceID=\"{TRACE}\"}} 1.0 "
        )),
        "{om}"
    );
    let buckets = with_exemplars(&om, "hubble_http_request_duration_seconds_bucket");
    assert_eq!(buckets.len(), 1, "{om}");
    assert!(
        buckets[0].contains(&format!("le=\"0.05\"}} 2 # {{traceID=\"{TRACE}\"}} 0.03 ")),
        "{om}"
    );
    // The Prometheus text format has no exemplars, and parses.
    let text = m.encode(exposition::Format::PrometheusText);
    assert!(!text.contains("traceID"), "{text}");
    assert_eq!(sum(&parse(&text), "hubble_http_requests_total"), 2.0);

    // http: request and response counters and the histogram; none without exemplars=true.
    let m = Metrics::new(metrics("http:exemplars=true"));
    let mut g = m.lock();
    let now = coarse_now();
    g.process_flow(
        &traced(l7_flow(1, Record::Http(req.clone()), false), TRACE),
        now,
    );
    g.process_flow(
        &traced(l7_flow(2, Record::Http(resp.clone()), true), TRACE),
        now,
    );
    drop(g);
    let om = m.encode(exposition::Format::OpenMetrics);
    for metric in [
        "hubble_http_requests_total",
        "hubble_http_responses_total",
        "hubble_http_request_duration_seconds_bucket",
    ] {
        assert_eq!(with_exemplars(&om, metric).len(), 1, "{metric}: {om}");
    }
    let m = Metrics::new(metrics("http"));
    m.lock().process_flow(
        &traced(l7_flow(2, Record::Http(resp), true), TRACE),
        coarse_now(),
    );
    let om = m.encode(exposition::Format::OpenMetrics);
    assert!(!om.contains("traceID"), "{om}");
}

/// A dynamic metrics file in a temporary directory.
struct DynFile {
    dir: tempfile::TempDir,
    file: dynamic::ConfigFile,
}

impl DynFile {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dynamic::ConfigFile::new(&dir.path().join("metrics.yaml"));
        DynFile { dir, file }
    }

    /// Writes `yaml` and polls: the names of the handlers it puts in force, or the error.
    fn write(&mut self, yaml: &str) -> Result<Option<Vec<Handler>>, String> {
        std::fs::write(self.dir.path().join("metrics.yaml"), yaml).unwrap();
        self.file.poll()
    }
}

fn names(hs: &[Handler]) -> Vec<&str> {
    hs.iter().map(|h| h.name.as_str()).collect()
}

fn verdict_flow(verdict: i32) -> Flow {
    let mut f = tcp_flow(TcpFlags::default(), Some(false));
    f.verdict = verdict;
    f
}

#[test]
fn dynamic_file_adds_removes_and_refilters_metrics() {
    let mut file = DynFile::new();
    let m = Metrics::new(metrics(""));
    let first = file
        .write(
            r#"
metrics:
- name: flow
  contextOptions:
  - name: sourceContext
    values: [namespace, pod]
  - name: labelsContext
    values: [source_namespace, destination_namespace]
  includeFilters:
  - verdict: [DROPPED]
- name: drop
"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(names(&first), ["flow", "drop"]);
    m.lock().reconfigure(first);
    for v in [1, 2, 2] {
        m.lock().process_flow(&verdict_flow(v), coarse_now());
    }
    let flows = |m: &Metrics| {
        let g = m.lock();
        let c = handler(&g, "flow")
            .counter("hubble_flows_processed_total")
            .unwrap();
        // The YAML values are the `|` alternatives and the `,` labels of the --metrics form.
        assert_eq!(
            c.labels,
            [
                "protocol",
                "type",
                "subtype",
                "verdict",
                "source_namespace",
                "destination_namespace",
                "source"
            ]
        );
        let k = |v| ["TCP", "Trace", "to-endpoint", v, "shop", "db", "shop"];
        (c.get(&k("FORWARDED")), c.get(&k("DROPPED")))
    };
    assert_eq!(
        flows(&m),
        (None, Some(2)),
        "only what includeFilters let in"
    );
    // Unchanged text: nothing to do.
    assert!(file.file.poll().unwrap().is_none());

    // New filters for flow (same options): its series stay and it counts what the new
    // filters let in; drop goes, tcp comes.
    let second = file
        .write(
            r#"
metrics:
- name: flow
  contextOptions:
  - name: sourceContext
    values: [namespace, pod]
  - name: labelsContext
    values: [source_namespace, destination_namespace]
  excludeFilters:
  - verdict: [DROPPED]
- name: tcp
"#,
        )
        .unwrap()
        .unwrap();
    m.lock().reconfigure(second);
    for v in [1, 2] {
        m.lock().process_flow(&verdict_flow(v), coarse_now());
    }
    assert_eq!(flows(&m), (Some(1), Some(2)));
    assert_eq!(names(m.lock().handlers()), ["flow", "tcp"]);
    let text = m.encode(exposition::Format::PrometheusText);
    assert!(!text.contains("hubble_drop_total"), "{text}");
    assert!(
        text.contains("# TYPE hubble_tcp_flags_total counter"),
        "{text}"
    );

    // An empty list removes every metric.
    let none = file.write("metrics: []\n").unwrap().unwrap();
    m.lock().reconfigure(none);
    let text = m.encode(exposition::Format::PrometheusText);
    assert!(!text.contains("hubble_flows_processed_total"), "{text}");
    assert!(text.contains("hubble_lost_events_total"), "{text}");
}

#[test]
fn a_broken_dynamic_file_is_reported_once_and_changes_nothing() {
    let mut file = DynFile::new();
    let good = "metrics:\n- name: flow\n  contextOptions: [{name: sourceContext, values: [pod]}]\n";
    let m = Metrics::new(metrics(""));
    m.lock().reconfigure(file.write(good).unwrap().unwrap());
    let bad = [
        ("metrics: [\n", "did not find expected"),
        ("metrics:\n- name: bogus\n", "metric 'bogus' does not exist"),
        ("metrics:\n- contextOptions: []\n", "metrics[0] has no name"),
        (
            "metrics:\n- name: drop\n- name: drop\n",
            "metric 'drop' is listed twice",
        ),
        (
            "metrics:\n- name: http\n- name: httpV2\n",
            "plugin httpV2 conflicts with plugin http",
        ),
        (
            "metrics:\n- name: drop\n  contextOptions: [{name: sourceContext, values: [pods]}]\n",
            "unknown context 'pods'",
        ),
        (
            "metrics:\n- name: drop\n  includeFilters: [{source_ip: [\"not-an-ip\"]}]\n",
            "metric 'drop': invalid source_ip filter",
        ),
        (
            "metrics:\n- name: drop\n  includeFilters: [{verdict: [SOMETIMES]}]\n",
            "unknown variant `SOMETIMES`",
        ),
        (
            "metrics:\n- name: drop\n  contextoptions: []\n",
            "unknown field `contextoptions`",
        ),
        (
            // The options of a metric in force cannot change (its label set would).
            "metrics:\n- name: flow\n  contextOptions: [{name: sourceContext, values: [namespace]}]\n",
            "metric 'flow': its contextOptions cannot change",
        ),
    ];
    for (yaml, want) in bad {
        let e = file.write(yaml).unwrap_err();
        assert!(e.contains(want), "{yaml:?}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
        // Reported once: the same text again is quiet.
        assert!(file.file.poll().unwrap().is_none(), "{yaml:?}");
    }
    assert_eq!(names(m.lock().handlers()), ["flow"]);
    // Back to the version in force: nothing to do; a file gone is one line, then quiet.
    assert!(file.write(good).unwrap().is_none());
    std::fs::remove_file(file.dir.path().join("metrics.yaml")).unwrap();
    let e = file.file.poll().unwrap_err();
    assert!(e.starts_with("cannot read it: "), "{e}");
    assert!(file.file.poll().unwrap().is_none());
    // Filters may change, and an empty file means no metrics.
    let refiltered = file
        .write(&format!(
            "{good}  includeFilters: [{{verdict: [FORWARDED]}}]\n"
        ))
        .unwrap()
        .unwrap();
    assert_eq!(names(&refiltered), ["flow"]);
    assert!(file.write("").unwrap().unwrap().is_empty());
}

#[test]
fn a_removed_metric_comes_back_only_with_its_first_options() {
    let mut file = DynFile::new();
    let pod = "metrics:\n- name: dns\n  contextOptions: [{name: query}, {name: sourceContext, values: [pod]}]\n";
    assert_eq!(names(&file.write(pod).unwrap().unwrap()), ["dns"]);
    assert!(
        file.write("metrics:\n- name: drop\n")
            .unwrap()
            .unwrap()
            .len()
            == 1
    );
    let e = file
        .write("metrics:\n- name: dns\n  contextOptions: [{name: query}]\n")
        .unwrap_err();
    assert!(
        e.contains("metric 'dns': its contextOptions cannot change"),
        "{e}"
    );
    let back = file.write(pod).unwrap().unwrap();
    let dns = back[0].counter("hubble_dns_queries_total").unwrap();
    assert_eq!(
        dns.labels,
        ["source", "rcode", "qtypes", "ips_returned", "query"]
    );
}

#[test]
fn dynamic_and_static_metrics_exclude_each_other_and_tls_needs_its_files() {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        m: MetricsArgs,
    }
    let parse =
        |args: &[&str]| Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()));
    let e = parse(&[
        "--metrics",
        "flow",
        "--hubble-dynamic-metrics-config-path",
        "m.yaml",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
    let ok = parse(&["--hubble-dynamic-metrics-config-path", "m.yaml"]).unwrap();
    assert_eq!(ok.m.address(), Some(DEFAULT_METRICS_SERVER));
    let e = parse(&["--hubble-metrics-server-enable-tls"]).unwrap_err();
    assert_eq!(
        e.kind(),
        clap::error::ErrorKind::MissingRequiredArgument,
        "{e}"
    );
    let e = parse(&["--hubble-metrics-server-tls-cert-file", "c.pem"]).unwrap_err();
    assert_eq!(
        e.kind(),
        clap::error::ErrorKind::MissingRequiredArgument,
        "{e}"
    );
    let ok = parse(&[
        "--hubble-metrics-server-enable-tls",
        "--hubble-metrics-server-tls-cert-file",
        "c.pem",
        "--hubble-metrics-server-tls-key-file",
        "k.pem",
        "--hubble-metrics-server-tls-client-ca-files",
        "a.pem,b.pem",
    ])
    .unwrap();
    assert_eq!(ok.m.metrics_server_tls_client_ca_files.len(), 2);
    let e = ok.m.server_tls().unwrap_err();
    assert!(format!("{e:#}").contains("c.pem"), "{e:#}");
}
