//! Replay of the committed datapath recording (fixtures/datapath/mini.hlrec, made with
//! `hubble-agent record` on fixtures/lab/mini.toml): decode and enrichment without root.

use std::time::{Duration, UNIX_EPOCH};

use agent::cmd::replay_to;
use agent::datapath::record::{RawRecord, Reader, Writer};
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/datapath/mini.hlrec"
);

fn replay(bytes: &[u8]) -> (Vec<Value>, agent::cmd::Counters) {
    let mut out = Vec::new();
    let c = replay_to(bytes, &mut out).expect("replay");
    let lines = String::from_utf8(out).unwrap();
    (
        lines
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect(),
        c,
    )
}

#[test]
fn recorded_flows_are_enriched() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let (lines, c) = replay(&bytes);
    assert_eq!(c.decode_errors, 0);
    assert_eq!(c.flows as usize, lines.len());
    assert!(c.flows >= 20, "{c}");
    let flows: Vec<&Value> = lines.iter().filter_map(|l| l.get("flow")).collect();
    for l in &lines {
        assert_eq!(l["node_name"], "mini-node");
        assert!(l["time"].is_string());
    }

    let syn = flows
        .iter()
        .find(|f| {
            f["verdict"] == "FORWARDED"
                && f["event_type"]["type"] == 4
                && f["Summary"] == "TCP Flags: SYN"
                && f["source"]["pod_name"] == "client"
                && f["destination"]["pod_name"] == "server"
        })
        .expect("client -> server SYN");
    assert_eq!(syn["l4"]["TCP"]["destination_port"], 8080);
    assert_eq!(syn["traffic_direction"], "INGRESS");
    assert_eq!(syn["trace_observation_point"], "TO_ENDPOINT");
    assert_eq!(syn["destination_service"]["name"], "server");
    assert!(syn["source"]["identity"].as_u64().unwrap() >= 256);
    assert_eq!(syn["destination"]["workloads"][0]["name"], "server");
    assert!(
        syn["interface"]["name"]
            .as_str()
            .unwrap()
            .starts_with("lxc")
    );

    assert!(
        flows
            .iter()
            .any(|f| f["Summary"] == "TCP Flags: SYN, ACK" && f["is_reply"] == true),
        "a SYN-ACK reply"
    );
    let denied = flows
        .iter()
        .find(|f| f["verdict"] == "DROPPED" && f["event_type"]["type"] == 1)
        .expect("a drop");
    assert_eq!(denied["drop_reason_desc"], "POLICY_DENY");
    assert_eq!(denied["source"]["pod_name"], "intruder");
    assert_eq!(denied["traffic_direction"], "INGRESS");
    assert_eq!(denied["file"]["name"], "bpf_lxc.c");
    assert!(
        flows.iter().any(|f| f["destination"]["identity"] == 2
            && f["destination"]["labels"][0] == "reserved:world"),
        "a flow to the world"
    );
    assert!(flows.iter().any(|f| f["l4"]["ICMPv4"].is_object()));
    // Policy correlation from the recorded policy rules.
    assert!(
        flows
            .iter()
            .any(|f| f["ingress_allowed_by"][0]["name"] == "server-ingress"),
        "the allowed verdict names server-ingress"
    );
    assert!(
        flows
            .iter()
            .any(|f| f["ingress_denied_by"][0]["name"] == "server-ingress"),
        "the deny-rule verdict names server-ingress"
    );
    assert!(flows.iter().any(|f| f["l4"]["ICMPv6"].is_object()));
}

#[test]
fn garbage_samples_are_counted_and_skipped() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let state = Reader::new(&bytes[..]).unwrap().state;
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut w = Writer::new(Vec::new(), &state).unwrap();
    let mut x: u64 = 0x1234_5678;
    let mut samples = vec![
        vec![],
        vec![4],
        vec![4; 40],
        vec![1; 20],
        vec![5; 31],
        vec![99; 100],
        vec![130, 0, 0, 0],
    ];
    for n in 0..200 {
        let mut v = Vec::new();
        for _ in 0..(n % 90) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        if let Some(b) = v.first_mut() {
            *b = [1u8, 4, 5][n % 3];
        }
        samples.push(v);
    }
    for data in samples {
        w.write(&RawRecord::Sample {
            cpu: 0,
            time: t,
            data,
        })
        .unwrap();
    }
    w.write(&RawRecord::Lost {
        cpu: 1,
        time: t,
        count: 5,
    })
    .unwrap();
    let mut out = w.finish().unwrap();
    out.extend_from_slice(&[1, 0, 0]); // a truncated record at the end
    let (lines, c) = replay(&out);
    assert!(c.decode_errors >= 7, "{c}");
    assert_eq!(c.lost, 5);
    let lost = lines
        .iter()
        .find_map(|l| l.get("lost_events"))
        .expect("a LostEvent line");
    assert_eq!(lost["source"], "PERF_EVENT_RING_BUFFER");
    assert_eq!(lost["cpu"], 1);
}
