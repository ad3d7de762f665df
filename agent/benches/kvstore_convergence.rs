//! Convergence of a kvstore cluster (issue 19's target: 1,000 pods across 3 nodes, every
//! node knows every ipcache entry, within 2 s). Three in-process kvstore stages
//! (`agent::kvstore::Cluster`, each on its own thread as in the agent) are three nodes with
//! their own names and host IPs on one throwaway Debian etcd on loopback (data in a tempdir).
//! One round: every node publishes its share of the pods at once (the node, then its
//! endpoints, in one `resolve_blocking` as the agent does at start: identities of 50 label
//! sets new to the cluster allocated, ipcache entries written), and the round ends when
//! every node's watcher has delivered each other node's pod as a remote endpoint with its
//! identity and labels. Each round is a cluster and a namespace of its own (fresh keys,
//! fresh label sets); starting and stopping the stages is outside the time.
//!
//! Run on demand: `cargo bench -p hubble-agent --bench kvstore_convergence` (needs
//! /usr/bin/etcd). The pods' addresses are data only (fd00:250:97:N::/64, no interface).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent::kvstore::{Cluster, ClusterConfig};
use agent::model::{Change, EndpointSpec};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

#[path = "../tests/support/etcd.rs"]
mod etcd;

const NODES: usize = 3;
const PODS: usize = 1000;
/// Distinct label sets (apps) among the pods.
const APPS: usize = 50;
/// A round that has not converged by then fails the bench.
const GIVE_UP: Duration = Duration::from_secs(60);

/// Node `n`'s own changes in round `round`: the node, then its share of the pods.
fn node_changes(round: u64, n: usize) -> Vec<Change> {
    let ns = format!("conv{round}");
    let mut changes = vec![Change::Node {
        cluster: format!("bench{round}"),
        node: format!("node{n}"),
        host_ips: vec![host_ip(n)],
    }];
    for p in (0..PODS).filter(|p| p % NODES == n) {
        changes.push(Change::EndpointUpsert(EndpointSpec {
            key: format!("bench:{ns}/pod{p}"),
            namespace: ns.clone(),
            pod_name: format!("pod{p}"),
            labels: vec![
                format!("k8s:app=app{}", p % APPS),
                format!("k8s:io.kubernetes.pod.namespace={ns}"),
            ],
            workload: None,
            ips: vec![
                format!("fd00:250:97:{}::{:x}", n + 1, p + 1)
                    .parse()
                    .unwrap(),
            ],
            ifname: String::new(),
            attach: true,
            l7: Vec::new(),
            identity: None,
        }));
    }
    changes
}

fn host_ip(n: usize) -> IpAddr {
    format!("10.250.97.{}", n + 1).parse().unwrap()
}

/// How many pods are not node `n`'s.
fn remote_count(n: usize) -> usize {
    (0..PODS).filter(|p| p % NODES != n).count()
}

/// Follows a node's watcher on `rt`: the returned channel says when it has delivered
/// `expected` remote endpoints, each named (identity and labels).
fn converged(rt: &Runtime, cluster: &mut Cluster, expected: usize) -> oneshot::Receiver<Instant> {
    let watcher = cluster.watcher().expect("a fresh stage's watcher");
    let (tx, mut rx) = mpsc::channel::<Vec<Change>>(64);
    let (done_tx, done) = oneshot::channel();
    rt.spawn(watcher(tx));
    rt.spawn(async move {
        let mut known = BTreeSet::new();
        while let Some(batch) = rx.recv().await {
            for c in batch {
                match c {
                    Change::EndpointUpsert(s) if s.identity.is_some() && !s.labels.is_empty() => {
                        known.insert(s.key);
                    }
                    Change::EndpointUpsert(s) => {
                        known.remove(&s.key);
                    }
                    Change::EndpointRemove { key } => {
                        known.remove(&key);
                    }
                    _ => {}
                }
            }
            if known.len() == expected {
                let _ = done_tx.send(Instant::now());
                return;
            }
        }
    });
    done
}

/// One round on etcd `address`: how long from the first publication until every node knew
/// every other node's pods.
fn round(rt: &Runtime, address: &str, round: u64) -> Duration {
    let mut nodes: Vec<Cluster> = (0..NODES)
        .map(|_| {
            Cluster::start(ClusterConfig {
                address: address.to_string(),
                cluster: format!("bench{round}"),
                lease_ttl: 60,
                peer_address: None,
                tls: None,
            })
            .unwrap()
        })
        .collect();
    let done: Vec<_> = nodes
        .iter_mut()
        .enumerate()
        .map(|(n, c)| converged(rt, c, remote_count(n)))
        .collect();
    let changes: Vec<Vec<Change>> = (0..NODES).map(|n| node_changes(round, n)).collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (c, ch) in nodes.iter().zip(changes) {
            s.spawn(move || c.resolve_blocking(ch));
        }
    });
    let last = rt.block_on(async {
        let mut last = start;
        for d in done {
            let t = tokio::time::timeout_at((start + GIVE_UP).into(), d)
                .await
                .expect("a node did not know every other node's pods within 60 s")
                .expect("a watcher ended");
            last = last.max(t);
        }
        last
    });
    for c in nodes {
        c.stop();
    }
    last - start
}

fn bench(c: &mut Criterion) {
    let Some(server) = etcd::EtcdServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group("kvstore_convergence");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("1000_pods_3_nodes", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| round(&rt, &server.address(), next.fetch_add(1, Ordering::Relaxed)))
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
