//! Per-field tests of the FlowFilter engine, whitelist/blacklist combination, and the
//! line pre-check never rejecting a line whose flow matches.

use hubble_api::flow::{
    self, CiliumEventType, Dns, Endpoint, EventTypeFilter, Flow, FlowFilter, Http, HttpHeader, Ip,
    IpTraceId, Layer4, Layer7, LostEvent, NetworkInterface, Service, Tcp, TcpFlags, TraceContext,
    TraceParent, Udp, Workload, layer4, layer7,
};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use hubble_api::pbjson_types::BoolValue;

use super::*;

fn tcp_flow() -> Flow {
    Flow {
        uuid: "6e4a4d5f-2d3b-4a9e-9f2c-0d1d5d7e9a01".into(),
        verdict: flow::Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.0.1.5".into(),
            destination: "10.0.2.7".into(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 41234,
                destination_port: 80,
                flags: Some(TcpFlags {
                    syn: true,
                    ack: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(Endpoint {
            id: 12,
            identity: 5298,
            namespace: "default".into(),
            pod_name: "xwing".into(),
            cluster_name: "default".into(),
            labels: vec![
                "k8s:app=xwing".into(),
                "k8s:class=xwing".into(),
                "k8s:io.kubernetes.pod.namespace=default".into(),
            ],
            workloads: vec![Workload {
                name: "xwing".into(),
                kind: "Deployment".into(),
            }],
        }),
        destination: Some(Endpoint {
            id: 44,
            identity: 15153,
            namespace: "empire".into(),
            pod_name: "deathstar-6c94dcc57b-7k2ld".into(),
            cluster_name: "galaxy".into(),
            labels: vec!["k8s:app=deathstar".into(), "k8s:org=empire".into()],
            workloads: vec![],
        }),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: "kind-worker".into(),
        node_labels: vec!["kubernetes.io/hostname=kind-worker".into()],
        destination_names: vec!["deathstar.empire.svc.cluster.local".into()],
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        destination_service: Some(Service {
            name: "deathstar".into(),
            namespace: "empire".into(),
        }),
        traffic_direction: flow::TrafficDirection::Egress as i32,
        is_reply: Some(BoolValue { value: false }),
        interface: Some(NetworkInterface {
            index: 7,
            name: "lxc1234".into(),
        }),
        ip_trace_id: Some(IpTraceId {
            trace_id: 99,
            ip_option_type: 136,
        }),
        trace_context: Some(TraceContext {
            parent: Some(TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            }),
        }),
        ..Default::default()
    }
}

fn dropped_flow() -> Flow {
    Flow {
        verdict: flow::Verdict::Dropped as i32,
        drop_reason_desc: flow::DropReason::PolicyDenied as i32,
        is_reply: None,
        event_type: Some(CiliumEventType {
            r#type: 1,
            sub_type: 133,
        }),
        traffic_direction: flow::TrafficDirection::Ingress as i32,
        ..tcp_flow()
    }
}

fn http_flow() -> Flow {
    Flow {
        r#type: flow::FlowType::L7 as i32,
        l7: Some(Layer7 {
            r#type: flow::L7FlowType::Response as i32,
            latency_ns: 1_000_000,
            record: Some(layer7::Record::Http(Http {
                code: 404,
                method: "GET".into(),
                url: "http://deathstar.empire.svc.cluster.local/v1/request-landing?x=1".into(),
                protocol: "HTTP/1.1".into(),
                headers: vec![HttpHeader {
                    key: "X-Request-Id".into(),
                    value: "abc".into(),
                }],
            })),
        }),
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        is_reply: Some(BoolValue { value: true }),
        ..tcp_flow()
    }
}

fn dns_flow() -> Flow {
    Flow {
        r#type: flow::FlowType::L7 as i32,
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Udp(Udp {
                source_port: 53122,
                destination_port: 53,
            })),
        }),
        l7: Some(Layer7 {
            r#type: flow::L7FlowType::Request as i32,
            latency_ns: 0,
            record: Some(layer7::Record::Dns(Dns {
                query: "deathstar.default.svc.cluster.local.".into(),
                qtypes: vec!["A".into()],
                observation_source: "proxy".into(),
                ..Default::default()
            })),
        }),
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        ..tcp_flow()
    }
}

fn all_flows() -> Vec<Flow> {
    vec![
        tcp_flow(),
        dropped_flow(),
        http_flow(),
        dns_flow(),
        Flow::default(),
    ]
}

fn wl(ff: FlowFilter) -> FlowFilters {
    FlowFilters::compile(&[ff], &[]).unwrap_or_else(|e| panic!("compile: {e}"))
}

fn m(ff: FlowFilter, f: &Flow) -> bool {
    wl(ff).matches(f)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn err(ff: FlowFilter) -> String {
    FlowFilters::compile(&[ff], &[])
        .expect_err("should fail")
        .to_string()
}

#[test]
fn empty_filters_pass_everything() {
    let f = FlowFilters::compile(&[], &[]).unwrap();
    assert!(f.is_empty());
    assert!(f.matches(&tcp_flow()));
    // An empty FlowFilter in the whitelist matches everything; in the blacklist, nothing passes.
    assert!(m(FlowFilter::default(), &tcp_flow()));
    let f = FlowFilters::compile(&[], &[FlowFilter::default()]).unwrap();
    assert!(!f.is_empty());
    assert!(!f.matches(&tcp_flow()));
}

#[test]
fn uuid() {
    let ff = |v: &str| FlowFilter {
        uuid: s(&[v]),
        ..Default::default()
    };
    assert!(m(ff("6e4a4d5f-2d3b-4a9e-9f2c-0d1d5d7e9a01"), &tcp_flow()));
    assert!(!m(ff("6e4a4d5f"), &tcp_flow()));
}

#[test]
fn ips_exact_and_cidr() {
    let src = |v: &[&str]| FlowFilter {
        source_ip: s(v),
        ..Default::default()
    };
    assert!(m(src(&["10.0.1.5"]), &tcp_flow()));
    assert!(m(src(&["1.1.1.1", "10.0.0.0/16"]), &tcp_flow()));
    assert!(!m(src(&["10.0.2.0/24"]), &tcp_flow()));
    assert!(
        !m(src(&["10.0.1.5"]), &Flow::default()),
        "no IP never matches"
    );
    let dst = FlowFilter {
        destination_ip: s(&["10.0.2.0/24"]),
        ..Default::default()
    };
    assert!(m(dst, &tcp_flow()));
    let mut f = tcp_flow();
    f.ip.as_mut().unwrap().source_xlated = "192.168.1.1".into();
    let x = FlowFilter {
        source_ip_xlated: s(&["192.168.0.0/16"]),
        ..Default::default()
    };
    assert!(m(x.clone(), &f));
    assert!(!m(x, &tcp_flow()));
    let v6 = FlowFilter {
        source_ip: s(&["fd00::/8"]),
        ..Default::default()
    };
    let mut f6 = tcp_flow();
    f6.ip.as_mut().unwrap().source = "fd00::1".into();
    assert!(m(v6.clone(), &f6));
    assert!(!m(v6, &tcp_flow()));
    assert_eq!(
        err(src(&["10.0.0.300/8"])),
        r#"invalid source_ip filter "10.0.0.300/8": invalid CIDR"#
    );
    assert_eq!(
        err(src(&["not-an-ip"])),
        r#"invalid source_ip filter "not-an-ip": invalid IP address"#
    );
}

#[test]
fn pods() {
    let src = |v: &[&str]| FlowFilter {
        source_pod: s(v),
        ..Default::default()
    };
    assert!(
        m(src(&["xwing"]), &tcp_flow()),
        "no namespace means default"
    );
    assert!(m(src(&["default/x"]), &tcp_flow()), "prefix");
    assert!(m(src(&["default/"]), &tcp_flow()));
    assert!(m(src(&["/xw"]), &tcp_flow()), "any namespace");
    assert!(!m(src(&["kube-system/xwing"]), &tcp_flow()));
    assert!(!m(src(&["wing"]), &tcp_flow()));
    let dst = FlowFilter {
        destination_pod: s(&["empire/deathstar"]),
        ..Default::default()
    };
    assert!(m(dst, &tcp_flow()));
    assert!(
        !m(src(&["/"]), &Flow::default()),
        "no namespace and pod never matches"
    );
    assert!(err(src(&[""])).contains("source_pod"));
}

#[test]
fn services() {
    let dst = |v: &[&str]| FlowFilter {
        destination_service: s(v),
        ..Default::default()
    };
    assert!(m(dst(&["empire/death"]), &tcp_flow()));
    assert!(!m(dst(&["deathstar"]), &tcp_flow()), "default namespace");
    let src = FlowFilter {
        source_service: s(&["/"]),
        ..Default::default()
    };
    assert!(!m(src, &tcp_flow()), "no source service");
    assert!(err(dst(&[""])).contains("destination_service"));
}

#[test]
fn fqdns() {
    let dst = |v: &[&str]| FlowFilter {
        destination_fqdn: s(v),
        ..Default::default()
    };
    assert!(m(dst(&["*.empire.svc.cluster.local"]), &tcp_flow()));
    assert!(m(
        dst(&["DEATHSTAR.empire.svc.cluster.local."]),
        &tcp_flow()
    ));
    assert!(!m(dst(&["*.default.svc.cluster.local"]), &tcp_flow()));
    let src = FlowFilter {
        source_fqdn: s(&["*"]),
        ..Default::default()
    };
    assert!(!m(src, &tcp_flow()), "no source names");
    assert!(err(dst(&["bad/name"])).starts_with("invalid destination_fqdn filter \"bad/name\""));
}

#[test]
fn labels() {
    let src = |v: &[&str]| FlowFilter {
        source_label: s(v),
        ..Default::default()
    };
    assert!(m(src(&["app=xwing"]), &tcp_flow()));
    assert!(m(src(&["k8s:app=xwing"]), &tcp_flow()));
    assert!(
        m(src(&["app=tiefighter", "class=xwing"]), &tcp_flow()),
        "OR"
    );
    assert!(!m(src(&["reserved:world"]), &tcp_flow()));
    assert!(m(src(&["app in (xwing, tiefighter), !org"]), &tcp_flow()));
    let dst = FlowFilter {
        destination_label: s(&["org=empire"]),
        ..Default::default()
    };
    assert!(m(dst, &tcp_flow()));
    let node = FlowFilter {
        node_labels: s(&["kubernetes.io/hostname=kind-worker"]),
        ..Default::default()
    };
    assert!(m(node, &tcp_flow()));
    assert!(err(src(&["app in (x"])).starts_with("invalid source_label filter \"app in (x\""));
}

#[test]
fn workloads() {
    let w = |name: &str, kind: &str| FlowFilter {
        source_workload: vec![Workload {
            name: name.into(),
            kind: kind.into(),
        }],
        ..Default::default()
    };
    assert!(m(w("xwing", ""), &tcp_flow()));
    assert!(m(w("", "Deployment"), &tcp_flow()));
    assert!(m(w("xwing", "Deployment"), &tcp_flow()));
    assert!(!m(w("xwing", "StatefulSet"), &tcp_flow()));
    let dst = FlowFilter {
        destination_workload: vec![Workload::default()],
        ..Default::default()
    };
    assert!(!m(dst, &tcp_flow()), "destination has no workloads");
}

#[test]
fn cluster_names() {
    let ff = FlowFilter {
        destination_cluster_name: s(&["galaxy"]),
        ..Default::default()
    };
    assert!(m(ff, &tcp_flow()));
    let ff = FlowFilter {
        source_cluster_name: s(&["prod-*"]),
        ..Default::default()
    };
    assert!(!m(ff, &tcp_flow()), "no globs");
    let ff = FlowFilter {
        source_cluster_name: s(&[""]),
        ..Default::default()
    };
    assert!(err(ff).contains("source_cluster_name"));
}

#[test]
fn enums_verdict_direction_ip_version() {
    let v = |x: flow::Verdict| FlowFilter {
        verdict: vec![x as i32],
        ..Default::default()
    };
    assert!(m(v(flow::Verdict::Forwarded), &tcp_flow()));
    assert!(!m(v(flow::Verdict::Dropped), &tcp_flow()));
    assert!(m(v(flow::Verdict::Dropped), &dropped_flow()));
    let td = FlowFilter {
        traffic_direction: vec![flow::TrafficDirection::Egress as i32],
        ..Default::default()
    };
    assert!(m(td.clone(), &tcp_flow()));
    assert!(!m(td, &dropped_flow()));
    let ipv = |x: flow::IpVersion| FlowFilter {
        ip_version: vec![x as i32],
        ..Default::default()
    };
    assert!(m(ipv(flow::IpVersion::IPv4), &tcp_flow()));
    assert!(!m(ipv(flow::IpVersion::IPv6), &tcp_flow()));
    assert!(m(ipv(flow::IpVersion::IpNotUsed), &Flow::default()));
}

#[test]
fn drop_reason_only_for_dropped() {
    let ff = FlowFilter {
        drop_reason_desc: vec![flow::DropReason::PolicyDenied as i32],
        ..Default::default()
    };
    assert!(m(ff.clone(), &dropped_flow()));
    let mut f = tcp_flow();
    f.drop_reason_desc = flow::DropReason::PolicyDenied as i32;
    assert!(!m(ff, &f), "a forwarded flow never matches a drop reason");
}

#[test]
fn interface() {
    let i = |index: u32, name: &str| FlowFilter {
        interface: vec![NetworkInterface {
            index,
            name: name.into(),
        }],
        ..Default::default()
    };
    assert!(m(i(0, "lxc1234"), &tcp_flow()));
    assert!(m(i(7, ""), &tcp_flow()));
    assert!(!m(i(8, "lxc1234"), &tcp_flow()));
    assert!(!m(i(0, ""), &Flow::default()), "no interface never matches");
}

#[test]
fn event_types() {
    let et = |t: i32, sub: Option<i32>| FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: t,
            match_sub_type: sub.is_some(),
            sub_type: sub.unwrap_or(0),
        }],
        ..Default::default()
    };
    assert!(m(et(4, None), &tcp_flow()));
    assert!(m(et(4, Some(0)), &tcp_flow()));
    assert!(!m(et(4, Some(5)), &tcp_flow()));
    assert!(m(et(0, None), &tcp_flow()), "type 0 = any");
    assert!(m(et(1, Some(133)), &dropped_flow()));
    assert!(!m(et(1, None), &tcp_flow()));
    assert!(
        !m(et(0, None), &Flow::default()),
        "no event type never matches"
    );
}

#[test]
fn http_fields() {
    let f = http_flow();
    let status = |v: &[&str]| FlowFilter {
        http_status_code: s(v),
        ..Default::default()
    };
    assert!(m(status(&["404"]), &f));
    assert!(m(status(&["4+"]), &f));
    assert!(m(status(&["40+"]), &f));
    assert!(!m(status(&["5+"]), &f));
    assert!(!m(status(&["404"]), &tcp_flow()));
    assert!(err(status(&["4xx"])).starts_with("invalid http_status_code filter \"4xx\""));
    let method = |v: &str| FlowFilter {
        http_method: s(&[v]),
        ..Default::default()
    };
    assert!(m(method("get"), &f));
    assert!(!m(method("post"), &f));
    let path = |v: &str| FlowFilter {
        http_path: s(&[v]),
        ..Default::default()
    };
    assert!(m(path("^/v1/request-landing$"), &f));
    assert!(!m(path("x=1"), &f), "path excludes the query");
    assert!(err(path("(")).starts_with("invalid http_path filter \"(\""));
    let url = FlowFilter {
        http_url: s(&[r"deathstar\.empire.*x=1"]),
        ..Default::default()
    };
    assert!(m(url, &f));
    let header = |k: &str, v: &str| FlowFilter {
        http_header: vec![HttpHeader {
            key: k.into(),
            value: v.into(),
        }],
        ..Default::default()
    };
    assert!(m(header("X-Request-Id", "abc"), &f));
    assert!(!m(header("X-Request-Id", "abd"), &f));
    // HTTP fields need an event type filter that includes L7 (129), if any.
    let mut ff = method("get");
    ff.event_type = vec![EventTypeFilter {
        r#type: 4,
        ..Default::default()
    }];
    assert!(err(ff.clone()).contains("http_method"));
    ff.event_type.push(EventTypeFilter {
        r#type: 129,
        ..Default::default()
    });
    assert!(m(ff, &f));
}

#[test]
fn dns_query() {
    let ff = FlowFilter {
        dns_query: s(&[r"deathstar\..*\.local"]),
        ..Default::default()
    };
    assert!(m(ff.clone(), &dns_flow()));
    assert!(!m(ff, &tcp_flow()));
    let bad = FlowFilter {
        dns_query: s(&["*"]),
        ..Default::default()
    };
    assert!(err(bad).starts_with("invalid dns_query filter"));
}

#[test]
fn protocols() {
    let p = |v: &[&str]| FlowFilter {
        protocol: s(v),
        ..Default::default()
    };
    assert!(m(p(&["tcp"]), &tcp_flow()));
    assert!(m(p(&["TCP"]), &tcp_flow()));
    assert!(!m(p(&["udp"]), &tcp_flow()));
    assert!(m(p(&["udp", "icmp"]), &dns_flow()));
    assert!(m(p(&["dns"]), &dns_flow()));
    assert!(m(p(&["http"]), &http_flow()));
    assert!(!m(p(&["kafka"]), &http_flow()));
    let mut icmp = tcp_flow();
    icmp.l4 = Some(Layer4 {
        protocol: Some(layer4::Protocol::IcmPv6(Default::default())),
    });
    assert!(m(p(&["icmp"]), &icmp));
    assert!(m(p(&["icmpv6"]), &icmp));
    assert!(!m(p(&["icmpv4"]), &icmp));
    assert!(err(p(&["quic"])).starts_with("invalid protocol filter \"quic\": unknown protocol"));
}

#[test]
fn ports() {
    let ff = FlowFilter {
        destination_port: s(&["80", "443"]),
        ..Default::default()
    };
    assert!(m(ff, &tcp_flow()));
    let ff = FlowFilter {
        source_port: s(&["53122"]),
        destination_port: s(&["53"]),
        ..Default::default()
    };
    assert!(m(ff, &dns_flow()));
    let ff = FlowFilter {
        destination_port: s(&["0"]),
        ..Default::default()
    };
    assert!(!m(ff, &Flow::default()), "no L4 never matches");
    let bad = FlowFilter {
        source_port: s(&["65536"]),
        ..Default::default()
    };
    assert!(err(bad).starts_with("invalid source_port filter \"65536\""));
    let plus = FlowFilter {
        destination_port: s(&["+80"]),
        ..Default::default()
    };
    assert!(FlowFilters::compile(&[plus], &[]).is_err());
}

#[test]
fn reply_and_encrypted() {
    let r = |v: bool| FlowFilter {
        reply: vec![v],
        ..Default::default()
    };
    assert!(m(r(false), &tcp_flow()));
    assert!(!m(r(true), &tcp_flow()));
    assert!(m(r(true), &http_flow()));
    assert!(
        m(r(false), &dropped_flow()),
        "unset is_reply on drops counts as false"
    );
    let mut unknown = tcp_flow();
    unknown.is_reply = None;
    assert!(
        !m(r(false), &unknown),
        "unset is_reply never matches otherwise"
    );
    let e = |v: bool| FlowFilter {
        encrypted: vec![v],
        ..Default::default()
    };
    assert!(m(e(false), &tcp_flow()));
    assert!(!m(e(true), &tcp_flow()));
}

#[test]
fn identities() {
    let ff = FlowFilter {
        source_identity: vec![5298],
        destination_identity: vec![1, 15153],
        ..Default::default()
    };
    assert!(m(ff, &tcp_flow()));
    let ff = FlowFilter {
        source_identity: vec![0],
        ..Default::default()
    };
    assert!(!m(ff, &Flow::default()), "no endpoint never matches");
}

#[test]
fn tcp_flags() {
    let t = |f: TcpFlags| FlowFilter {
        tcp_flags: vec![f],
        ..Default::default()
    };
    assert!(m(
        t(TcpFlags {
            syn: true,
            ..Default::default()
        }),
        &tcp_flow()
    ));
    assert!(m(
        t(TcpFlags {
            syn: true,
            ack: true,
            ..Default::default()
        }),
        &tcp_flow()
    ));
    assert!(!m(
        t(TcpFlags {
            fin: true,
            ..Default::default()
        }),
        &tcp_flow()
    ));
    assert!(!m(t(TcpFlags::default()), &dns_flow()), "UDP has no flags");
}

#[test]
fn node_names() {
    let n = |v: &[&str]| FlowFilter {
        node_name: s(v),
        ..Default::default()
    };
    assert!(m(n(&["kind-*"]), &tcp_flow()));
    assert!(m(n(&["default/kind-worker"]), &tcp_flow()));
    assert!(!m(n(&["other/kind-worker"]), &tcp_flow()));
    let mut f = tcp_flow();
    f.node_name = "prod/node-1.example.com".into();
    assert!(m(n(&["prod/"]), &f));
    assert!(m(n(&["*.example.com"]), &f));
    assert!(!m(n(&["kind-*"]), &Flow::default()));
    assert!(err(n(&["a/b/c"])).starts_with("invalid node_name filter \"a/b/c\""));
}

#[test]
fn trace_ids() {
    let ff = FlowFilter {
        trace_id: s(&["4bf92f3577b34da6a3ce929d0e0e4736"]),
        ..Default::default()
    };
    assert!(m(ff, &tcp_flow()));
    let ff = FlowFilter {
        ip_trace_id: vec![99],
        ..Default::default()
    };
    assert!(m(ff.clone(), &tcp_flow()));
    assert!(!m(ff, &Flow::default()));
}

#[test]
fn cel_expressions() {
    let cel = |v: &[&str]| FlowFilter {
        experimental: Some(flow::flow_filter::Experimental {
            cel_expression: s(v),
        }),
        ..Default::default()
    };
    assert!(m(
        cel(&["_flow.verdict == Verdict.DROPPED"]),
        &dropped_flow()
    ));
    assert!(!m(cel(&["_flow.verdict == Verdict.DROPPED"]), &tcp_flow()));
    assert!(m(
        cel(&["false", "_flow.l4.TCP.destination_port == 80u"]),
        &tcp_flow()
    ));
    assert!(m(
        cel(&["_flow.source.labels.exists(l, l == 'k8s:app=xwing')"]),
        &tcp_flow()
    ));
    assert!(
        err(cel(&["_flow.verdict =="])).starts_with("invalid experimental.cel_expression filter")
    );
}

#[test]
fn fields_are_anded_values_are_ored() {
    let ff = FlowFilter {
        verdict: vec![
            flow::Verdict::Forwarded as i32,
            flow::Verdict::Dropped as i32,
        ],
        destination_port: s(&["80"]),
        ..Default::default()
    };
    assert!(m(ff.clone(), &tcp_flow()));
    assert!(m(ff.clone(), &dropped_flow()));
    assert!(!m(ff, &dns_flow()));
}

#[test]
fn whitelist_and_blacklist() {
    let forwarded = FlowFilter {
        verdict: vec![flow::Verdict::Forwarded as i32],
        ..Default::default()
    };
    let dropped = FlowFilter {
        verdict: vec![flow::Verdict::Dropped as i32],
        ..Default::default()
    };
    let dns = FlowFilter {
        protocol: s(&["dns"]),
        ..Default::default()
    };
    // Any whitelist filter may match.
    let f = FlowFilters::compile(&[forwarded.clone(), dropped.clone()], &[]).unwrap();
    assert!(f.matches(&tcp_flow()) && f.matches(&dropped_flow()));
    // No blacklist filter may match.
    let f =
        FlowFilters::compile(std::slice::from_ref(&forwarded), std::slice::from_ref(&dns)).unwrap();
    assert!(f.matches(&tcp_flow()));
    assert!(!f.matches(&dns_flow()));
    assert!(!f.matches(&dropped_flow()));
    // Blacklist alone.
    let f = FlowFilters::compile(&[], &[dropped, dns]).unwrap();
    assert!(f.matches(&tcp_flow()) && f.matches(&http_flow()));
    assert!(!f.matches(&dropped_flow()) && !f.matches(&dns_flow()));
    // An error anywhere fails the whole compile.
    let bad = FlowFilter {
        source_port: s(&["x"]),
        ..Default::default()
    };
    assert!(FlowFilters::compile(&[forwarded], &[bad]).is_err());
}

#[test]
fn non_flow_responses_bypass() {
    let f = FlowFilters::compile(
        &[FlowFilter {
            verdict: vec![flow::Verdict::Dropped as i32],
            ..Default::default()
        }],
        &[FlowFilter::default()],
    )
    .unwrap();
    let lost = GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            source: 1,
            num_events_lost: 3,
            ..Default::default()
        })),
        ..Default::default()
    };
    assert!(f.matches_response(&lost));
    let flow = GetFlowsResponse {
        response_types: Some(ResponseTypes::Flow(dropped_flow())),
        ..Default::default()
    };
    assert!(
        !f.matches_response(&flow),
        "blacklist {{}} drops every flow"
    );
    let line = serde_json::to_vec(&lost).unwrap();
    assert!(f.line_may_match(&line));
}

fn line_of(flow: &Flow) -> Vec<u8> {
    let resp = GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time: flow.time,
        response_types: Some(ResponseTypes::Flow(flow.clone())),
    };
    serde_json::to_vec(&resp).unwrap()
}

/// A spread of filters touching every field the pre-check derives needles from.
fn prefilter_cases() -> Vec<FlowFilter> {
    let v = |x: flow::Verdict| vec![x as i32];
    vec![
        FlowFilter {
            verdict: v(flow::Verdict::Dropped),
            ..Default::default()
        },
        FlowFilter {
            verdict: v(flow::Verdict::Forwarded),
            ..Default::default()
        },
        FlowFilter {
            verdict: v(flow::Verdict::Unknown),
            ..Default::default()
        },
        FlowFilter {
            drop_reason_desc: vec![flow::DropReason::PolicyDenied as i32],
            ..Default::default()
        },
        FlowFilter {
            traffic_direction: vec![flow::TrafficDirection::Ingress as i32],
            ip_version: vec![flow::IpVersion::IPv4 as i32],
            ..Default::default()
        },
        FlowFilter {
            uuid: s(&["6e4a4d5f-2d3b-4a9e-9f2c-0d1d5d7e9a01"]),
            ..Default::default()
        },
        FlowFilter {
            source_ip: s(&["10.0.0.0/8", "fd00::/8"]),
            destination_ip: s(&["10.0.2.7"]),
            ..Default::default()
        },
        FlowFilter {
            source_ip: s(&["10.0.1.0/24"]),
            ..Default::default()
        },
        FlowFilter {
            source_pod: s(&["xwing", "kube-system/"]),
            destination_pod: s(&["/death"]),
            ..Default::default()
        },
        FlowFilter {
            destination_service: s(&["empire/"]),
            ..Default::default()
        },
        FlowFilter {
            source_workload: vec![Workload {
                name: "".into(),
                kind: "Deployment".into(),
            }],
            destination_cluster_name: s(&["galaxy"]),
            ..Default::default()
        },
        FlowFilter {
            protocol: s(&["TCP", "dns"]),
            ..Default::default()
        },
        FlowFilter {
            protocol: s(&["icmp"]),
            ..Default::default()
        },
        FlowFilter {
            http_status_code: s(&["4+"]),
            http_method: s(&["get"]),
            ..Default::default()
        },
        FlowFilter {
            dns_query: s(&["deathstar"]),
            ..Default::default()
        },
        FlowFilter {
            tcp_flags: vec![TcpFlags {
                syn: true,
                ..Default::default()
            }],
            trace_id: s(&["4bf92f3577b34da6a3ce929d0e0e4736"]),
            ip_trace_id: vec![99],
            ..Default::default()
        },
        FlowFilter {
            source_label: s(&["app=xwing"]),
            ..Default::default()
        },
        FlowFilter {
            ip_trace_id: vec![0, 7],
            trace_id: s(&[""]),
            ..Default::default()
        },
    ]
}

#[test]
fn line_precheck_never_rejects_a_match() {
    let mut flows = all_flows();
    let mut icmp = tcp_flow();
    icmp.l4 = Some(Layer4 {
        protocol: Some(layer4::Protocol::IcmPv4(Default::default())),
    });
    icmp.ip.as_mut().unwrap().source = "fd00::5".into();
    flows.push(icmp);
    let cases = prefilter_cases();
    // Each filter alone, pairs as whitelist alternatives, and each with a blacklist.
    let mut combos: Vec<(Vec<FlowFilter>, Vec<FlowFilter>)> = Vec::new();
    for (i, a) in cases.iter().enumerate() {
        combos.push((vec![a.clone()], vec![]));
        combos.push((vec![], vec![a.clone()]));
        for b in &cases[i + 1..] {
            combos.push((vec![a.clone(), b.clone()], vec![]));
            combos.push((vec![a.clone()], vec![b.clone()]));
        }
    }
    let mut rejected = 0;
    for (w, b) in &combos {
        let f = FlowFilters::compile(w, b).unwrap();
        for flow in &flows {
            let line = line_of(flow);
            let may = f.line_may_match(&line);
            if f.matches(flow) {
                assert!(
                    may,
                    "pre-check rejected a matching flow: {w:?} {b:?} {flow:?}"
                );
            }
            if !may {
                rejected += 1;
            }
        }
    }
    assert!(rejected > 0, "the pre-check should reject something");
}

#[test]
fn line_precheck_verdict_dropped() {
    let f = FlowFilters::compile(
        &[FlowFilter {
            verdict: vec![flow::Verdict::Dropped as i32],
            ..Default::default()
        }],
        &[],
    )
    .unwrap();
    assert!(f.line_may_match(&line_of(&dropped_flow())));
    assert!(!f.line_may_match(&line_of(&tcp_flow())));
    assert!(f.line_may_match(br#"{"lost_events":{"source":"PERF_EVENT_RING_BUFFER"}}"#));
    assert!(f.line_may_match(br#"{"node_status":{"state_change":"NODE_CONNECTED"}}"#));
}

/// Lines of the recorded / generated fixtures (Go Hubble's and our own JSON output).
fn fixture_lines() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut lines = Vec::new();
    for rel in [
        "flows/demo.jsonl",
        "golden/input.jsonl",
        "golden/input-v1.19.jsonl",
    ] {
        let Ok(text) = std::fs::read(root.join(rel)) else {
            continue;
        };
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    lines
}

/// Filters built from a flow's own values, so that some of them match it.
fn filters_from(flow: &Flow) -> Vec<FlowFilter> {
    let mut out = vec![
        FlowFilter {
            verdict: vec![flow.verdict],
            ..Default::default()
        },
        FlowFilter {
            traffic_direction: vec![flow.traffic_direction],
            drop_reason_desc: vec![flow.drop_reason_desc],
            ..Default::default()
        },
        FlowFilter {
            uuid: vec![flow.uuid.clone()],
            ..Default::default()
        },
    ];
    if let Some(ip) = &flow.ip {
        out.push(FlowFilter {
            source_ip: vec![ip.source.clone()],
            destination_ip: vec![format!("{}/24", ip.destination)],
            ip_version: vec![ip.ip_version],
            ..Default::default()
        });
    }
    for (ep, src) in [(&flow.source, true), (&flow.destination, false)] {
        let Some(ep) = ep else { continue };
        let pod = format!("{}/{}", ep.namespace, ep.pod_name.get(..3).unwrap_or(""));
        let cluster = vec![ep.cluster_name.clone()];
        let workloads = ep.workloads.clone();
        out.push(if src {
            FlowFilter {
                source_pod: vec![pod],
                source_cluster_name: cluster,
                source_workload: workloads,
                ..Default::default()
            }
        } else {
            FlowFilter {
                destination_pod: vec![pod],
                destination_cluster_name: cluster,
                destination_workload: workloads,
                ..Default::default()
            }
        });
    }
    if let Some(svc) = &flow.destination_service {
        out.push(FlowFilter {
            destination_service: vec![format!("{}/{}", svc.namespace, svc.name)],
            ..Default::default()
        });
    }
    if let Some(id) = &flow.ip_trace_id {
        out.push(FlowFilter {
            ip_trace_id: vec![id.trace_id],
            ..Default::default()
        });
    }
    out
}

#[test]
fn line_precheck_on_fixtures() {
    let lines = fixture_lines();
    let responses: Vec<(Vec<u8>, GetFlowsResponse)> = lines
        .into_iter()
        .filter_map(|l| {
            let r = serde_json::from_slice::<GetFlowsResponse>(&l).ok()?;
            Some((l, r))
        })
        .collect();
    let mut filters = prefilter_cases();
    for (_, r) in &responses {
        if let Some(ResponseTypes::Flow(f)) = &r.response_types {
            filters.extend(filters_from(f));
        }
    }
    let mut matched = 0;
    for ff in &filters {
        let Ok(f) = FlowFilters::compile(std::slice::from_ref(ff), &[]) else {
            continue;
        };
        for (line, resp) in &responses {
            if f.matches_response(resp) {
                matched += 1;
                assert!(
                    f.line_may_match(line),
                    "pre-check rejected a matching line\nfilter: {ff:?}\nline: {}",
                    String::from_utf8_lossy(line)
                );
            }
        }
    }
    assert!(responses.len() >= 10, "fixtures should parse");
    assert!(matched > 0);
}

/// Throughput of the pre-check on ~1 KB non-matching lines. Run with
/// `cargo test -p hubble --release --lib prefilter_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn prefilter_throughput() {
    let f = FlowFilters::compile(
        &[FlowFilter {
            verdict: vec![flow::Verdict::Dropped as i32],
            ..Default::default()
        }],
        &[],
    )
    .unwrap();
    let line = line_of(&tcp_flow());
    let n = 2_000_000;
    let start = std::time::Instant::now();
    let mut hits = 0;
    for _ in 0..n {
        if f.line_may_match(std::hint::black_box(&line)) {
            hits += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} bytes/line: {:.1} M lines/s ({hits} hits)",
        line.len(),
        n as f64 / secs / 1e6
    );
}

#[test]
fn filter_lists() {
    let l = parse_filter_list(
        r#"{"verdict":["DROPPED"]},{"source_pod":["kube-system/"]} {"protocol":["dns"]}"#,
    )
    .unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l[1].source_pod, vec!["kube-system/".to_string()]);
    assert!(parse_filter_list("  ").unwrap().is_empty());
    assert!(parse_filter_list(r#"{"verdict":["NOPE"]}"#).is_err());
    assert!(parse_filter_list(r#"{"verdict":["DROPPED"]} x"#).is_err());
}

#[test]
fn filters_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<FlowFilters>();
    assert_send_sync::<FilterError>();
}
