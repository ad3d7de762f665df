//! Identity allocation through etcd (issue 19's target: <= 5 ms per new label set on
//! loopback): a node allocating label sets nobody has yet (one read, one transaction). A throwaway Debian etcd on loopback, data in a tempdir (its log fsyncs:
//! most of the time is etcd's disk). Run on demand: `cargo bench -p hubble-agent --bench
//! kvstore` (needs /usr/bin/etcd).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agent::kvstore::{Allocator, Etcd, Session};
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../tests/support/etcd.rs"]
mod etcd;

fn labels(n: u64) -> Vec<String> {
    vec![
        format!("k8s:app=bench{n}"),
        "k8s:io.kubernetes.pod.namespace=default".to_string(),
    ]
}

fn bench(c: &mut Criterion) {
    let Some(server) = etcd::EtcdServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = |ip: &str| {
        let _guard = rt.enter();
        let client = Etcd::connect(&server.address()).unwrap();
        Allocator::new(Arc::new(Session::new(client, 60)), ip)
    };
    let a = node("10.0.0.1");
    rt.block_on(a.allocate(&labels(u64::MAX))).unwrap();
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group("identity_allocation");
    g.sample_size(50);
    g.bench_function("new_label_set", |bch| {
        bch.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            rt.block_on(a.allocate(&labels(n))).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
