#![allow(deprecated)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::build::*;
use super::*;
use crate::enrich::NodeState;
use crate::lab::spec::LabSpec;

fn demo() -> (NodeState, LabSpec) {
    let spec = LabSpec::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/lab/demo.toml"
    ))
    .unwrap();
    (crate::sources::lab::state_of(&spec), spec)
}

const LOADGEN: [u8; 4] = [10, 244, 1, 40];
const COREDNS: [u8; 4] = [10, 244, 1, 30];
const CATALOG: [u8; 4] = [10, 244, 1, 11];

fn ep_of(st: &NodeState, ip: [u8; 4]) -> u16 {
    st.endpoints
        .iter()
        .find(|e| e.ips.contains(&IpAddr::from(ip)))
        .unwrap()
        .id
}

fn query(name: &str) -> Vec<u8> {
    crate::lab::dns::build_query(0x1234, name, dns::TYPE_A).unwrap()
}

#[test]
fn dns_query_and_answer_become_hubble_flows_and_teach_names() {
    let (st, spec) = demo();
    let lg = ep_of(&st, LOADGEN);
    let mut en = Enricher::new(st.clone(), "lab-node-1");
    let mut l7 = L7Engine::new();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::new();

    let q = query("catalog.shop.svc.cluster.local.");
    let req = capture(
        L7_KIND_DNS,
        lg,
        0,
        1_000,
        &udp4(LOADGEN, COREDNS, 40000, 53, &q),
    );
    assert_eq!(l7.handle(&req, t0, &mut en, &mut out), Ok(1));
    let f = &out[0];
    assert_eq!(f.r#type, flow::FlowType::L7 as i32);
    assert_eq!(f.event_type.as_ref().unwrap().r#type, 129);
    assert_eq!(f.verdict, flow::Verdict::Forwarded as i32);
    assert_eq!(f.is_reply, Some(pbjson_types::BoolValue { value: false }));
    assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
    assert_eq!(f.summary, "DNS Query catalog.shop.svc.cluster.local. A");
    assert_eq!(f.source.as_ref().unwrap().pod_name, "loadgen-8c5f7-m2n4r");
    assert_eq!(
        f.destination_service.as_ref().map(|s| s.name.as_str()),
        Some("kube-dns")
    );
    let Some(layer7::Record::Dns(d)) = &f.l7.as_ref().unwrap().record else {
        panic!("no dns record")
    };
    assert_eq!(d.qtypes, ["A"]);
    assert!(d.ips.is_empty());

    // The lab's DNS server answers (the same code that runs in the lab).
    let resp = crate::lab::serve::answer_dns(&spec, &q).unwrap();
    let ans = capture(
        L7_KIND_DNS,
        lg,
        L7_F_RESPONSE,
        3_501_000,
        &udp4(COREDNS, LOADGEN, 53, 40000, &resp),
    );
    assert_eq!(l7.handle(&ans, t0, &mut en, &mut out), Ok(1));
    let f = &out[0];
    let l = f.l7.as_ref().unwrap();
    assert_eq!(l.r#type, flow::L7FlowType::Response as i32);
    assert_eq!(l.latency_ns, 3_500_000);
    let Some(layer7::Record::Dns(d)) = &l.record else {
        panic!()
    };
    assert_eq!(d.query, "catalog.shop.svc.cluster.local.");
    assert_eq!(d.ips, ["10.244.1.11", "10.244.1.12"]);
    assert_eq!(d.rcode, 0);
    assert_eq!(d.ttl, 30);
    assert_eq!(d.rrtypes, ["A", "A"]);
    assert_eq!(d.observation_source, DNS_OBSERVATION_SOURCE);
    assert_eq!(f.is_reply, Some(pbjson_types::BoolValue { value: true }));
    assert_eq!(
        f.summary,
        "DNS Answer \"10.244.1.11,10.244.1.12\" TTL: 30 (Query catalog.shop.svc.cluster.local. A)"
    );
    assert_eq!(l7.state_len(), (0, 0));

    // A later TCP flow from loadgen to a catalog pod carries the name.
    let t = crate::monitor::encode::trace(
        &crate::monitor::TraceNotify {
            hdr: crate::monitor::NotifyCaptureHdr {
                source: lg,
                ..Default::default()
            },
            reason: 0,
            ..Default::default()
        },
        &crate::monitor::packet::build::tcp4(LOADGEN, CATALOG, 41000, 8080, 0x02),
    );
    let flow = en
        .flow_from_sample(&t, t0 + Duration::from_secs(5))
        .unwrap();
    assert_eq!(flow.destination_names, ["catalog.shop.svc.cluster.local"]);
    assert!(flow.source_names.is_empty());
    // ... until the TTL runs out.
    let flow = en
        .flow_from_sample(&t, t0 + Duration::from_secs(31))
        .unwrap();
    assert!(flow.destination_names.is_empty());

    // NXDOMAIN.
    let q = query("nope.example.com.");
    let resp = crate::lab::serve::answer_dns(&spec, &q).unwrap();
    let ans = capture(
        L7_KIND_DNS,
        lg,
        L7_F_RESPONSE,
        5_000_000,
        &udp4(COREDNS, LOADGEN, 53, 40001, &resp),
    );
    assert_eq!(l7.handle(&ans, t0, &mut en, &mut out), Ok(1));
    assert_eq!(
        out[0].summary,
        "DNS Answer RCode: Non-Existent Domain TTL: 0 (Query nope.example.com. A)"
    );
    assert_eq!(l7.stats.dns_unpaired, 1);
}

/// The names a TCP flow from loadgen to a catalog pod carries at `t`.
fn names_loadgen_to_catalog(en: &mut Enricher<NodeState>, lg: u16, t: SystemTime) -> Vec<String> {
    let sample = crate::monitor::encode::trace(
        &crate::monitor::TraceNotify {
            hdr: crate::monitor::NotifyCaptureHdr {
                source: lg,
                ..Default::default()
            },
            reason: 0,
            ..Default::default()
        },
        &crate::monitor::packet::build::tcp4(LOADGEN, CATALOG, 41000, 8080, 0x02),
    );
    en.flow_from_sample(&sample, t).unwrap().destination_names
}

/// Only an answer to a query in flight (same addresses and ports, id and name) teaches
/// names; an unsolicited or forged answer is still a flow, but renames nothing.
#[test]
fn dns_answers_teach_names_only_for_queries_in_flight() {
    let (st, spec) = demo();
    let lg = ep_of(&st, LOADGEN);
    let mut en = Enricher::new(st.clone(), "lab-node-1");
    let mut l7 = L7Engine::new();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let later = t0 + Duration::from_secs(5);
    let mut out = Vec::new();
    let catalog_q = query("catalog.shop.svc.cluster.local.");
    let catalog_a = crate::lab::serve::answer_dns(&spec, &catalog_q).unwrap();
    let answer_from = |server: [u8; 4], ktime: u64| {
        capture(
            L7_KIND_DNS,
            lg,
            L7_F_RESPONSE,
            ktime,
            &udp4(server, LOADGEN, 53, 40000, &catalog_a),
        )
    };

    // Nobody asked: the answer is a flow with its addresses, and teaches nothing.
    assert_eq!(
        l7.handle(&answer_from(COREDNS, 1_000), t0, &mut en, &mut out),
        Ok(1)
    );
    let Some(layer7::Record::Dns(d)) = &out[0].l7.as_ref().unwrap().record else {
        panic!("no dns record")
    };
    assert_eq!(d.ips, ["10.244.1.11", "10.244.1.12"]);
    assert_eq!(l7.stats.dns_unpaired, 1);
    assert!(names_loadgen_to_catalog(&mut en, lg, later).is_empty());

    // A query for another name with the same id: an answer naming catalog does not pair.
    let other_q = query("other.example.com.");
    let req = capture(
        L7_KIND_DNS,
        lg,
        0,
        2_000,
        &udp4(LOADGEN, COREDNS, 40000, 53, &other_q),
    );
    assert_eq!(l7.handle(&req, t0, &mut en, &mut out), Ok(1));
    l7.handle(&answer_from(COREDNS, 3_000), t0, &mut en, &mut out)
        .unwrap();
    assert!(names_loadgen_to_catalog(&mut en, lg, later).is_empty());
    assert_eq!(
        l7.state_len().1,
        1,
        "the query still waits for its own answer"
    );

    // The catalog query in flight, answered from another address (a spoofed server).
    let req = capture(
        L7_KIND_DNS,
        lg,
        0,
        4_000,
        &udp4(LOADGEN, COREDNS, 40000, 53, &catalog_q),
    );
    l7.handle(&req, t0, &mut en, &mut out).unwrap();
    l7.handle(&answer_from([10, 244, 1, 99], 5_000), t0, &mut en, &mut out)
        .unwrap();
    assert!(names_loadgen_to_catalog(&mut en, lg, later).is_empty());
    assert_eq!(l7.stats.dns_unpaired, 3);

    // Its real answer pairs (with latency) and teaches the name.
    l7.handle(&answer_from(COREDNS, 6_000), t0, &mut en, &mut out)
        .unwrap();
    let Some(l) = out[0].l7.as_ref() else {
        panic!("no l7")
    };
    assert_eq!(l.latency_ns, 2_000);
    assert_eq!(
        names_loadgen_to_catalog(&mut en, lg, later),
        ["catalog.shop.svc.cluster.local"]
    );
    assert_eq!(l7.state_len().1, 0);
}

#[test]
fn http_get_and_500_are_paired_with_latency() {
    let (st, _) = demo();
    let cat = ep_of(&st, CATALOG);
    let front = [10, 244, 1, 10];
    let mut en = Enricher::new(st, "lab-node-1");
    let mut l7 = L7Engine::new();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::new();
    let req = b"GET /api/v1/items HTTP/1.1\r\nHost: catalog.shop.svc.cluster.local\r\nAccept: */*\r\n\r\n";
    let c = capture(
        L7_KIND_HTTP,
        cat,
        L7_F_INGRESS,
        10_000,
        &tcp4(front, CATALOG, 43000, 8080, 1, req),
    );
    assert_eq!(l7.handle(&c, t0, &mut en, &mut out), Ok(1));
    assert_eq!(
        out[0].summary,
        "HTTP/1.1 GET http://catalog.shop.svc.cluster.local/api/v1/items"
    );
    assert_eq!(
        out[0].traffic_direction,
        flow::TrafficDirection::Ingress as i32
    );
    let Some(flow::Layer4 {
        protocol: Some(flow::layer4::Protocol::Tcp(t)),
    }) = &out[0].l4
    else {
        panic!()
    };
    assert_eq!(
        (t.source_port, t.destination_port, t.flags),
        (43000, 8080, None)
    );
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    let c = capture(
        L7_KIND_HTTP,
        cat,
        L7_F_INGRESS | L7_F_RESPONSE,
        2_010_000,
        &tcp4(CATALOG, front, 8080, 43000, 1, resp),
    );
    assert_eq!(l7.handle(&c, t0, &mut en, &mut out), Ok(1));
    let l = out[0].l7.as_ref().unwrap();
    assert_eq!(l.latency_ns, 2_000_000);
    let Some(layer7::Record::Http(h)) = &l.record else {
        panic!()
    };
    assert_eq!((h.code, h.method.as_str()), (200, "GET"));
    assert_eq!(h.headers[0].key, "Content-Length");
    assert_eq!(
        out[0].summary,
        "HTTP/1.1 200 2ms (GET http://catalog.shop.svc.cluster.local/api/v1/items)"
    );
    // Keep-alive: a second request on the same connection answered 500.
    let req2 = b"GET /status/500 HTTP/1.1\r\nHost: catalog\r\n\r\n";
    let c = capture(
        L7_KIND_HTTP,
        cat,
        L7_F_INGRESS,
        3_000_000,
        &tcp4(front, CATALOG, 43000, 8080, 1 + req.len() as u32, req2),
    );
    l7.handle(&c, t0, &mut en, &mut out).unwrap();
    let resp2 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
    let c = capture(
        L7_KIND_HTTP,
        cat,
        L7_F_INGRESS | L7_F_RESPONSE,
        4_000_000,
        &tcp4(CATALOG, front, 8080, 43000, 1 + resp.len() as u32, resp2),
    );
    l7.handle(&c, t0, &mut en, &mut out).unwrap();
    let l = out[0].l7.as_ref().unwrap();
    let Some(layer7::Record::Http(h)) = &l.record else {
        panic!()
    };
    assert_eq!((h.code, h.url.as_str()), (500, "http://catalog/status/500"));
    assert_eq!(l.latency_ns, 1_000_000);
    assert_eq!(l7.state_len(), (1, 0));
    // Idle connections expire.
    let c = capture(
        L7_KIND_DNS,
        cat,
        0,
        4_000_000 + IDLE_NS + 2_000_000_000,
        &udp4(CATALOG, COREDNS, 40000, 53, &query("a.b.")),
    );
    l7.handle(&c, t0, &mut en, &mut out).unwrap();
    assert_eq!(l7.state_len(), (0, 1));
}

#[test]
fn bad_captures_are_errors_not_panics() {
    let (st, _) = demo();
    let mut en = Enricher::new(st, "n");
    let mut l7 = L7Engine::new();
    let mut out = Vec::new();
    let t0 = UNIX_EPOCH;
    assert_eq!(
        l7.handle(&[64, 1, 2], t0, &mut en, &mut out),
        Err(L7Error::Truncated)
    );
    let garbage = capture(L7_KIND_DNS, 1, 0, 1, &udp4(LOADGEN, COREDNS, 1, 53, b"xx"));
    assert!(matches!(
        l7.handle(&garbage, t0, &mut en, &mut out),
        Err(L7Error::Dns(_))
    ));
    let full = capture(
        L7_KIND_HTTP,
        1,
        0,
        1,
        &tcp4(
            LOADGEN,
            CATALOG,
            1,
            80,
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    );
    for n in 0..full.len() {
        let mut cut = full[..n].to_vec();
        if cut.len() >= 14 {
            // keep len_cap consistent with the cut
            let cap = (n.saturating_sub(L7_NOTIFY_LEN)) as u16;
            cut[12..14].copy_from_slice(&cap.to_ne_bytes());
        }
        let _ = l7.handle(&cut, t0, &mut en, &mut out);
    }
}

/// The CLI's filters and compact printer on L7 flows: --protocol dns|http, --dns-query,
/// --to-fqdn, --http-status, and Hubble's L7 TYPE column and summaries.
#[test]
fn cli_filters_and_compact_output_on_l7_flows() {
    use hubble::filter::FlowFilters;
    use hubble::printer::{Printer, PrinterOptions};
    use hubble_api::flow::FlowFilter;
    use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};

    let (st, spec) = demo();
    let lg = ep_of(&st, LOADGEN);
    let cat = ep_of(&st, CATALOG);
    let mut en = Enricher::new(st, "lab-node-1");
    let mut l7 = L7Engine::new();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut flows = Vec::new();
    let mut out = Vec::new();
    let q = query("catalog.shop.svc.cluster.local.");
    let a = crate::lab::serve::answer_dns(&spec, &q).unwrap();
    let front = [10, 244, 1, 10];
    let req = b"GET /status/500 HTTP/1.1\r\nHost: catalog\r\n\r\n";
    let resp = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
    for c in [
        capture(
            L7_KIND_DNS,
            lg,
            0,
            1,
            &udp4(LOADGEN, COREDNS, 40000, 53, &q),
        ),
        capture(
            L7_KIND_DNS,
            lg,
            L7_F_RESPONSE,
            2,
            &udp4(COREDNS, LOADGEN, 53, 40000, &a),
        ),
        capture(
            L7_KIND_HTTP,
            cat,
            L7_F_INGRESS,
            3,
            &tcp4(front, CATALOG, 43000, 8080, 1, req),
        ),
        capture(
            L7_KIND_HTTP,
            cat,
            L7_F_INGRESS | L7_F_RESPONSE,
            4_000_004,
            &tcp4(CATALOG, front, 8080, 43000, 1, resp),
        ),
    ] {
        assert_eq!(l7.handle(&c, t0, &mut en, &mut out), Ok(1));
        flows.push(out[0].clone());
    }
    let t = crate::monitor::encode::trace(
        &crate::monitor::TraceNotify {
            hdr: crate::monitor::NotifyCaptureHdr {
                source: lg,
                ..Default::default()
            },
            ..Default::default()
        },
        &crate::monitor::packet::build::tcp4(LOADGEN, CATALOG, 41000, 8080, 0x02),
    );
    flows.push(en.flow_from_sample(&t, t0).unwrap());

    let pick = |ff: FlowFilter| {
        let f = FlowFilters::compile(&[ff], &[]).unwrap();
        flows
            .iter()
            .enumerate()
            .filter(|(_, fl)| f.matches(fl))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let ff = |f: fn(&mut FlowFilter)| {
        let mut x = FlowFilter::default();
        f(&mut x);
        x
    };
    assert_eq!(pick(ff(|f| f.protocol = vec!["dns".into()])), [0, 1]);
    assert_eq!(pick(ff(|f| f.protocol = vec!["http".into()])), [2, 3]);
    assert_eq!(
        pick(ff(|f| f.dns_query = vec!["catalog\\.shop".into()])),
        [0, 1]
    );
    assert_eq!(pick(ff(|f| f.http_status_code = vec!["5+".into()])), [3]);
    // The answer taught loadgen the name: its later flow to the catalog pod matches --to-fqdn.
    assert_eq!(
        pick(ff(
            |f| f.destination_fqdn = vec!["*.shop.svc.cluster.local".into()]
        )),
        [4]
    );

    let mut p = Printer::new(Vec::new(), PrinterOptions::default());
    for f in &flows {
        p.write_response(&GetFlowsResponse {
            time: f.time,
            response_types: Some(ResponseTypes::Flow(f.clone())),
            ..Default::default()
        })
        .unwrap();
    }
    p.finish().unwrap();
    let text = String::from_utf8(p.into_inner()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("{text}");
    assert!(
        lines[0].ends_with(
            "dns-request datapath FORWARDED (DNS Query catalog.shop.svc.cluster.local. A)"
        )
    );
    assert!(lines[0].contains("default/loadgen-8c5f7-m2n4r:40000 (ID:"));
    assert!(lines[1].contains(" <- "), "{}", lines[1]);
    assert!(lines[1].contains("dns-response datapath FORWARDED (DNS Answer"));
    assert!(
        lines[3].ends_with(
            "http-response FORWARDED (HTTP/1.1 500 4ms (GET http://catalog/status/500))"
        )
    );
}
