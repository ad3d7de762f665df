//! `hubble observe -o json` against a server, per flow, without I/O: prost decode of the
//! response bytes + the generated `ProtoJson` encoder (the path before) against the
//! protobuf → JSON transcoder (`hubble_api::transcode`, the path now), over generated
//! realistic responses. Run on demand: `cargo bench -p hubble --bench transcode`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hubble_api::json::ProtoJson;
use hubble_api::observer::GetFlowsResponse;
use prost::Message;

fn corpus(n: usize) -> Vec<bytes::Bytes> {
    let mut g = xtask::flowgen::FlowGen::new(1);
    (0..n)
        .map(|_| bytes::Bytes::from(g.next_response().encode_to_vec()))
        .collect()
}

fn bench(c: &mut Criterion) {
    let msgs = corpus(2000);
    let mut g = c.benchmark_group("json_from_protobuf");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    let mut out = Vec::with_capacity(4 << 20);
    g.bench_function("decode_then_encode", |b| {
        b.iter(|| {
            out.clear();
            for m in &msgs {
                let r = GetFlowsResponse::decode(m.clone()).unwrap();
                r.write_json(&mut out).unwrap();
                out.push(b'\n');
            }
            out.len()
        })
    });
    g.bench_function("transcode", |b| {
        b.iter(|| {
            out.clear();
            for m in &msgs {
                hubble_api::transcode::get_flows_response(m, &mut out).unwrap();
                out.push(b'\n');
            }
            out.len()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("prost");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            msgs.iter()
                .map(|m| GetFlowsResponse::decode(m.clone()).unwrap().node_name.len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
