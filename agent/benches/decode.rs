//! Decode + enrich of a recorded TCP TraceNotify into a Flow (target: <= 200 ns, <= 2
//! allocations). Run on demand: `cargo bench -p hubble-agent --bench decode`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use agent::datapath::record::{RawRecord, Reader};
use agent::enrich::Enricher;
use agent::monitor::{MonitorEvent, decode, packet};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

/// Counts allocations so the bench can report allocations per flow.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/datapath/mini.hlrec"
);

fn tcp_trace_sample() -> (agent::enrich::NodeState, Vec<u8>) {
    let bytes = std::fs::read(FIXTURE).expect("fixture");
    let mut r = Reader::new(&bytes[..]).expect("recording");
    while let Ok(Some(rec)) = r.next_record() {
        if let RawRecord::Sample { data, .. } = rec
            && let Ok(MonitorEvent::Trace(_, pkt)) = decode(&data)
            && matches!(packet::parse(pkt, false).l4, Some(packet::L4::Tcp { .. }))
        {
            return (r.state.clone(), data);
        }
    }
    panic!("no TCP TraceNotify in the fixture");
}

fn bench(c: &mut Criterion) {
    let (state, sample) = tcp_trace_sample();
    let node = state.node_name();
    let mut enricher = Enricher::new(state, node);
    let t = UNIX_EPOCH;

    let before = ALLOCS.load(Ordering::Relaxed);
    let n = 10_000u64;
    for _ in 0..n {
        black_box(enricher.flow_from_sample(&sample, t).unwrap());
    }
    let per_flow = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
    eprintln!("decode+enrich: {per_flow:.1} allocations per flow");

    let mut reused = hubble_api::flow::Flow::default();
    for _ in 0..100 {
        enricher
            .flow_into_from_sample(&sample, t, &mut reused)
            .unwrap();
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        enricher
            .flow_into_from_sample(&sample, t, &mut reused)
            .unwrap();
        black_box(&reused);
    }
    let per_flow = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
    eprintln!("decode+enrich into a reused Flow: {per_flow:.2} allocations per flow");

    c.bench_function("monitor_decode_tcp_trace", |b| {
        b.iter(|| {
            let ev = decode(black_box(&sample)).unwrap();
            black_box(packet::parse(ev.packet(), false))
        })
    });
    c.bench_function("decode_enrich_tcp_trace_to_flow", |b| {
        b.iter(|| black_box(enricher.flow_from_sample(black_box(&sample), t).unwrap()))
    });
    c.bench_function("decode_enrich_tcp_trace_into_reused_flow", |b| {
        b.iter(|| {
            enricher
                .flow_into_from_sample(black_box(&sample), t, &mut reused)
                .unwrap();
            black_box(&reused);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
