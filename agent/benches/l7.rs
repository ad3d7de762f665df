//! L7 parsing into Hubble flows (targets: DNS parse + flow <= 1 us per message, an HTTP
//! request/response pair <= 2 us). Captures are built from the lab's own DNS server and
//! HTTP-like traffic of demo.toml. Run on demand: `cargo bench -p hubble-agent --bench l7`.

use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use agent::enrich::Enricher;
use agent::l7::build::{capture, tcp4, udp4};
use agent::l7::{L7_F_INGRESS, L7_F_RESPONSE, L7_KIND_DNS, L7_KIND_HTTP, L7Engine, dns};
use agent::lab::spec::LabSpec;
use criterion::{Criterion, black_box, criterion_group, criterion_main};

const LOADGEN: [u8; 4] = [10, 244, 1, 40];
const COREDNS: [u8; 4] = [10, 244, 1, 30];
const FRONTEND: [u8; 4] = [10, 244, 1, 10];
const CATALOG: [u8; 4] = [10, 244, 1, 11];
/// Offset of the TCP sequence number in a capture: L7Notify 40 + Ethernet 14 + IPv4 20 + 4.
const SEQ_AT: usize = 78;

fn bench(c: &mut Criterion) {
    let spec = LabSpec::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/lab/demo.toml"
    ))
    .expect("demo.toml");
    let state = agent::sources::lab::state_of(&spec);
    let ep = |ip: [u8; 4]| {
        state
            .endpoints
            .iter()
            .find(|e| e.ips.contains(&IpAddr::from(ip)))
            .expect("pod")
            .id
    };
    let (lg, cat) = (ep(LOADGEN), ep(CATALOG));
    let mut en = Enricher::new(state.clone(), "lab-node-1");
    let mut l7 = L7Engine::new();
    let mut out = Vec::new();
    let t = UNIX_EPOCH;

    let query =
        agent::lab::dns::build_query(7, "catalog.shop.svc.cluster.local.", dns::TYPE_A).unwrap();
    let answer = agent::lab::serve::answer_dns(&spec, &query).expect("answer");
    let dns_req = capture(
        L7_KIND_DNS,
        lg,
        0,
        1_000,
        &udp4(LOADGEN, COREDNS, 40000, 53, &query),
    );
    let dns_resp = capture(
        L7_KIND_DNS,
        lg,
        L7_F_RESPONSE,
        2_000,
        &udp4(COREDNS, LOADGEN, 53, 40000, &answer),
    );

    c.bench_function("l7_dns_message_parse", |b| {
        let mut m = dns::Message::default();
        b.iter(|| {
            m.parse_into(black_box(&answer)).unwrap();
            black_box(&m);
        })
    });
    c.bench_function("l7_dns_answer_to_flow", |b| {
        b.iter(|| {
            black_box(
                l7.handle(black_box(&dns_resp), t, &mut en, &mut out)
                    .unwrap(),
            );
        })
    });
    c.bench_function("l7_dns_query_and_answer_to_flows", |b| {
        b.iter(|| {
            l7.handle(black_box(&dns_req), t, &mut en, &mut out)
                .unwrap();
            black_box(
                l7.handle(black_box(&dns_resp), t, &mut en, &mut out)
                    .unwrap(),
            );
        })
    });

    let req = b"GET /api/v1/items HTTP/1.1\r\nHost: catalog.shop.svc.cluster.local\r\nUser-Agent: hubble-lab/0.1.0\r\nAccept: */*\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nServer: hubble-lab\r\n\r\n{}";
    let mut http_req = capture(
        L7_KIND_HTTP,
        cat,
        L7_F_INGRESS,
        10_000,
        &tcp4(FRONTEND, CATALOG, 43000, 8080, 1, req),
    );
    let mut http_resp = capture(
        L7_KIND_HTTP,
        cat,
        L7_F_INGRESS | L7_F_RESPONSE,
        20_000,
        &tcp4(CATALOG, FRONTEND, 8080, 43000, 1, resp),
    );
    // One keep-alive connection: each pair continues the TCP sequence of the previous one.
    let (mut seq_req, mut seq_resp) = (1u32, 1u32);
    c.bench_function("l7_http_request_response_pair_to_flows", |b| {
        b.iter(|| {
            http_req[SEQ_AT..SEQ_AT + 4].copy_from_slice(&seq_req.to_be_bytes());
            http_resp[SEQ_AT..SEQ_AT + 4].copy_from_slice(&seq_resp.to_be_bytes());
            seq_req = seq_req.wrapping_add(req.len() as u32);
            seq_resp = seq_resp.wrapping_add(resp.len() as u32);
            assert_eq!(l7.handle(&http_req, t, &mut en, &mut out), Ok(1));
            assert_eq!(l7.handle(&http_resp, t, &mut en, &mut out), Ok(1));
            black_box(&out);
        })
    });
    eprintln!("l7 stats: {:?}", l7.stats);
}

criterion_group!(benches, bench);
criterion_main!(benches);
