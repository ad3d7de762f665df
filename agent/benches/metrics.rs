//! Metrics cost per flow with every handler on (target: <= 300 ns): the fixture flows of
//! `fixtures/flows/demo.jsonl` (TCP, UDP, ICMP, drops, policy verdicts, DNS and HTTP)
//! through `Metrics::record`, as the datapath loop calls it (lock, counters, handlers).
//! Run on demand: `cargo bench -p hubble-agent --bench metrics`.

use agent::cmd::Counters;
use agent::metrics::vec::Limits;
use agent::metrics::{FlowMetrics, Metrics};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use hubble_api::observer::GetFlowsResponse;

const ALL: &str = "flow,drop,tcp,dns:query;ignoreAAAA,http,icmp,port-distribution,policy";
const ALL_WITH_CONTEXT: &str = "flow:sourceContext=pod;destinationContext=pod,\
drop:sourceContext=pod;destinationContext=pod,tcp:sourceContext=namespace;destinationContext=namespace,\
dns:query;ignoreAAAA;sourceContext=pod,http:sourceContext=pod;destinationContext=pod,\
icmp,port-distribution:destinationContext=workload-name,policy:sourceContext=app;destinationContext=app;labelsContext=traffic_direction";

fn demo() -> Vec<GetFlowsResponse> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/flows/demo.jsonl"
    ))
    .expect("demo fixture");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let flows = demo();
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(flows.len() as u64));
    for (name, spec) in [
        ("all_handlers", ALL),
        ("all_handlers_with_contexts", ALL_WITH_CONTEXT),
    ] {
        let m = Metrics::new(FlowMetrics::new(&[spec.to_string()], Limits::default()).unwrap());
        let counters = Counters::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                for f in &flows {
                    m.record(Some(black_box(f)), &counters);
                }
            })
        });
    }
    g.finish();
    // A scrape of the series the fixture produced (not on the datapath loop).
    let m =
        Metrics::new(FlowMetrics::new(&[ALL_WITH_CONTEXT.to_string()], Limits::default()).unwrap());
    for f in &flows {
        m.record(Some(f), &Counters::default());
    }
    c.bench_function("metrics/scrape_encode", |b| {
        b.iter(|| black_box(m.encode_text().len()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
