//! Throughput of the flow printers (compact, dict, table, json) over the demo flows, written to
//! an in-memory sink. Run on demand: `cargo bench -p hubble --bench printer`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hubble::printer::{OutputFormat, Printer, PrinterOptions};
use hubble_api::observer::GetFlowsResponse;

fn demo() -> Vec<GetFlowsResponse> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Discards output but keeps the bytes count, like a fast pipe.
struct Sink(usize);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let flows = demo();
    let mut g = c.benchmark_group("printer");
    g.throughput(Throughput::Elements(flows.len() as u64));
    for (name, format, color) in [
        ("compact", OutputFormat::Compact, false),
        ("compact_color", OutputFormat::Compact, true),
        ("dict", OutputFormat::Dict, false),
        ("table", OutputFormat::Table, false),
        ("json", OutputFormat::Json, false),
    ] {
        let opts = PrinterOptions {
            format,
            color,
            ..Default::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut p = Printer::new(Sink(0), opts.clone()).with_stderr(std::io::sink());
                for f in &flows {
                    p.write_response(f).unwrap();
                }
                p.finish().unwrap();
                p.into_inner().0
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
