//! Relay merge benches. `sort_buffer`: the sort window alone, 3 sources × 100k flows.
//! `fanin_grpc`: 3 fake agents streaming 100k follow flows each as fast as read, through a
//! relay over real TCP gRPC, to one client: flows/s out of the relay.
//! Latency at a paced 3 × 100k flows/s is the `relay_latency` bench.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hubble_api::observer::GetFlowsRequest;
use relay::sort::SortBuffer;

mod common;

// As in the hubble-relay binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_NODE: u64 = 100_000;

fn sort_buffer(c: &mut Criterion) {
    let t = Box::new(common::template());
    let mut g = c.benchmark_group("sort_buffer");
    g.throughput(Throughput::Elements(3 * PER_NODE));
    g.sample_size(10);
    g.bench_function("3x100k", |b| {
        b.iter_batched(
            || (0..PER_NODE * 3).map(|_| t.clone()).collect::<Vec<_>>(),
            |flows| {
                let now = Instant::now();
                let mut buf = SortBuffer::new(100, Duration::from_secs(1));
                let s: Vec<_> = (0..3).map(|_| buf.add_source()).collect();
                let mut out = 0u64;
                for (i, f) in flows.into_iter().enumerate() {
                    buf.push(s[i % 3], i as i128, f, now);
                    while let Some(x) = buf.pop(now) {
                        out += 1;
                        std::hint::black_box(x);
                    }
                }
                for x in s {
                    buf.end_source(x);
                }
                while buf.pop(now).is_some() {
                    out += 1;
                }
                assert_eq!(out, 3 * PER_NODE);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn fanin_grpc(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let template = std::sync::Arc::new(common::template());
    let relay = rt.block_on(async {
        let mut peers = Vec::new();
        for i in 0..3 {
            peers.push(
                common::start(common::FakeAgent {
                    name: format!("node-{i}"),
                    count: PER_NODE,
                    rate: 0,
                    template: template.clone(),
                })
                .await,
            );
        }
        common::relay(&peers, Duration::from_secs(1)).await
    });
    let mut g = c.benchmark_group("fanin_grpc");
    g.throughput(Throughput::Elements(3 * PER_NODE));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("3x100k_follow_to_one_client", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ch = hubble::client::connect(&relay, Duration::from_secs(5))
                        .await
                        .unwrap();
                    let start = Instant::now();
                    let mut s = relay::wire::get_flows(
                        ch,
                        GetFlowsRequest {
                            follow: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                    let mut n = 0u64;
                    while n < 3 * PER_NODE {
                        let r = s.message().await.unwrap().unwrap();
                        if r.is_flow {
                            n += 1;
                        }
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, sort_buffer, fanin_grpc);
criterion_main!(benches);
