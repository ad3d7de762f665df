//! Exporter throughput: GetFlows responses (fixtures/flows/demo.jsonl) filtered, encoded as
//! ExportEvent lines and written in batches to a file rotating at 10 MiB with 5 backups.
//! Run: `cargo bench -p flow-exporter --bench writer` (measured: ~340k flows/s, ~170k with gzip,
//! on a busy 2-core machine).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flow_exporter::export::Exporter;
use flow_exporter::writer::{RotateOptions, RotatingFile, Sink};
use hubble::filter::FlowFilters;
use hubble_api::observer::GetFlowsResponse;

const BATCH: usize = 4096;

fn responses() -> Vec<GetFlowsResponse> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
    std::fs::read_to_string(path)
        .expect("fixture")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn bench(c: &mut Criterion) {
    let flows = responses();
    let batch: Vec<GetFlowsResponse> = flows.iter().cycle().take(BATCH).cloned().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("exporter");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, compress) in [("rotate_10MiB", false), ("rotate_10MiB_gzip", true)] {
        let opts = RotateOptions {
            compress,
            ..RotateOptions::default()
        };
        let mut sink = Sink::File(RotatingFile::new(
            dir.path().join(format!("{name}.log")),
            opts,
        ));
        let mut exp = Exporter::new(FlowFilters::default(), Vec::new());
        g.bench_function(name, |b| {
            b.iter_batched(
                || batch.clone(),
                |batch| {
                    for r in batch {
                        exp.push(r);
                    }
                    exp.flush(&mut sink).expect("write");
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
