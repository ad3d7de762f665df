//! Checks the committed flow fixtures in fixtures/flows/: demo.jsonl covers every kind of
//! event and is exactly what the generator writes; malformed.jsonl's bad lines are the documented ones.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hubble_api::flow::{Flow, Verdict, layer4::Protocol, layer7::Record};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use xtask::flowgen;

/// Seed and line count `fixtures/flows/demo.jsonl` was generated with (see its README).
const DEMO_SEED: u64 = 1;
const DEMO_LINES: usize = 67;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/flows")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(line: &str) -> Result<GetFlowsResponse, serde_json::Error> {
    serde_json::from_str(line)
}

#[test]
fn demo_is_the_generator_output() {
    let mut out = Vec::new();
    flowgen::write_jsonl(&mut out, DEMO_SEED, DEMO_LINES).unwrap();
    let file = fixture("demo.jsonl");
    assert!(
        String::from_utf8(out).unwrap() == file,
        "fixtures/flows/demo.jsonl differs from `cargo xtask gen-flows --count {DEMO_LINES} --seed {DEMO_SEED}`"
    );
}

#[test]
fn demo_round_trips_byte_for_byte() {
    for (i, line) in fixture("demo.jsonl").lines().enumerate() {
        let resp = parse(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        let mut buf = Vec::new();
        flowgen::encode_jsonl(&resp, &mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf).unwrap().trim_end(),
            line,
            "line {}",
            i + 1
        );
    }
}

#[test]
#[allow(deprecated)] // drop_reason, Summary
fn demo_covers_every_kind_of_event() {
    let mut verdicts = BTreeSet::new();
    let mut event_types = BTreeSet::new();
    let mut drop_reasons = BTreeSet::new();
    let mut identities = BTreeSet::new();
    let mut summaries = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    let mut l4 = BTreeSet::new();
    let mut ip_versions = BTreeSet::new();
    let mut reply = BTreeSet::new();
    let (mut dns_req, mut dns_resp, mut http_req, mut http_resp) = (false, false, false, false);
    let (mut src_svc, mut dst_svc, mut lost, mut names) = (false, false, false, false);

    let text = fixture("demo.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    assert!((50..=80).contains(&lines.len()), "{} lines", lines.len());
    for (i, line) in lines.iter().enumerate() {
        let resp = parse(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert!(
            resp.time.is_some() && !resp.node_name.is_empty(),
            "line {}",
            i + 1
        );
        nodes.insert(resp.node_name.clone());
        let f: Flow = match resp.response_types {
            Some(ResponseTypes::Flow(f)) => f,
            Some(ResponseTypes::LostEvents(l)) => {
                assert!(l.num_events_lost > 0 && l.cpu.is_some());
                lost = true;
                continue;
            }
            other => panic!("line {}: unexpected {other:?}", i + 1),
        };
        assert_eq!(f.time, resp.time);
        assert_eq!(f.node_name, resp.node_name);
        assert!(!f.uuid.is_empty() && f.emitter.is_some());
        verdicts.insert(f.verdict);
        let et = f.event_type.expect("event_type");
        event_types.insert(et.r#type);
        if f.drop_reason != 0 {
            assert_eq!(f.drop_reason as i32, f.drop_reason_desc);
            drop_reasons.insert(f.drop_reason);
        }
        if et.r#type == 1 {
            assert_eq!(
                et.sub_type as u32, f.drop_reason,
                "drop sub_type is the drop code"
            );
            assert!(f.is_reply.is_none(), "drops leave is_reply unset");
        }
        reply.insert(f.is_reply.map(|b| b.value));
        for ep in [&f.source, &f.destination].into_iter().flatten() {
            identities.insert(ep.identity);
        }
        summaries.insert(f.summary.clone());
        src_svc |= f.source_service.is_some();
        dst_svc |= f.destination_service.is_some();
        names |= !f.destination_names.is_empty();
        if let Some(ip) = &f.ip {
            ip_versions.insert(ip.ip_version);
        }
        if let Some(p) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            l4.insert(match p {
                Protocol::Tcp(_) => "TCP",
                Protocol::Udp(_) => "UDP",
                Protocol::IcmPv4(_) => "ICMPv4",
                Protocol::IcmPv6(_) => "ICMPv6",
                Protocol::Sctp(_) => "SCTP",
                _ => "other",
            });
        }
        if let Some(l7) = &f.l7 {
            let response = l7.r#type == 2;
            match &l7.record {
                Some(Record::Dns(d)) => {
                    assert_eq!(d.observation_source, "proxy");
                    if response {
                        dns_resp = true;
                    } else {
                        dns_req = true;
                    }
                }
                Some(Record::Http(h)) => {
                    if response {
                        assert!(h.code > 0 && l7.latency_ns > 0);
                        http_resp = true;
                    } else {
                        http_req = true;
                    }
                }
                _ => {}
            }
        }
    }

    for v in 1..=7 {
        assert!(verdicts.contains(&v), "no {:?} flow", Verdict::try_from(v));
    }
    for t in [1, 4, 5, 7, 129] {
        assert!(event_types.contains(&t), "no event type {t}");
    }
    for code in [133, 181] {
        assert!(drop_reasons.contains(&code), "no drop reason {code}");
    }
    assert!(drop_reasons.len() >= 3, "{drop_reasons:?}");
    for id in [1, 2, 4, 6, 7] {
        assert!(identities.contains(&id), "no reserved identity {id}");
    }
    assert!(identities.iter().any(|id| *id >= 256));
    for s in [
        "TCP Flags: SYN",
        "TCP Flags: SYN, ACK",
        "TCP Flags: ACK",
        "TCP Flags: ACK, PSH",
        "TCP Flags: ACK, FIN",
        "TCP Flags: ACK, RST",
        "ICMPv4 EchoRequest",
        "ICMPv6 EchoRequest",
    ] {
        assert!(summaries.contains(s), "no summary {s:?}");
    }
    assert!(summaries.iter().any(|s| s.starts_with("DNS Query ")));
    assert!(
        summaries
            .iter()
            .any(|s| s.starts_with("HTTP/1.1 GET http://"))
    );
    assert_eq!(l4.len(), 5, "{l4:?}");
    assert!(
        ip_versions.contains(&1) && ip_versions.contains(&2),
        "IPv4 and IPv6"
    );
    assert_eq!(reply.len(), 3, "is_reply true, false and absent: {reply:?}");
    assert!(dns_req && dns_resp && http_req && http_resp);
    assert!(src_svc && dst_svc && names && lost);
    assert!(
        nodes.iter().any(|n| n.contains('/')),
        "a node of another cluster: {nodes:?}"
    );
}

#[test]
fn malformed_bad_lines_are_the_documented_ones() {
    // Keep in sync with fixtures/flows/README.md.
    const BAD: &[usize] = &[3, 5, 6, 7, 9];
    let text = fixture("malformed.jsonl");
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.last(), Some(&""), "file ends with a newline");
    let lines = &lines[..lines.len() - 1];
    assert_eq!(lines.len(), 11);
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let result = parse(line);
        if BAD.contains(&n) {
            assert!(result.is_err(), "line {n} should be rejected");
        } else {
            result.unwrap_or_else(|e| panic!("line {n} should be accepted: {e}"));
        }
    }
    assert!(lines[1].contains("\"future_field\":1"));
}
