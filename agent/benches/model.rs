//! The node model applying one change at cluster scale: the demo lab's pods, services and
//! policies on this node plus 1,000 remote endpoints (another node's pods, as the kvstore
//! delivers them), then one remote endpoint changing its identity per iteration — what a
//! pod rollout elsewhere in the cluster costs this node. Maps are `NoMaps` (no kernel).
//!
//! Run on demand: `cargo bench -p hubble-agent --bench model`.

use agent::lab::spec::LabSpec;
use agent::model::{Change, EndpointSpec, NoMaps, NodeModel};
use criterion::{Criterion, criterion_group, criterion_main};

const REMOTE: usize = 1000;

fn remote(i: usize, identity: u32) -> Change {
    Change::EndpointUpsert(EndpointSpec {
        key: format!("kvstore:fd00:250:98::{:x}", i + 1),
        namespace: "far".into(),
        pod_name: format!("pod{i}"),
        labels: vec![
            format!("k8s:app=app{}", i % 50),
            "k8s:io.kubernetes.pod.namespace=far".into(),
        ],
        workload: None,
        ips: vec![format!("fd00:250:98::{:x}", i + 1).parse().unwrap()],
        ifname: String::new(),
        attach: false,
        l7: Vec::new(),
        identity: Some(identity),
    })
}

fn bench(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lab/demo.toml");
    let spec = LabSpec::load(path).expect("the demo lab spec");
    let mut model = NodeModel::new();
    let mut changes = agent::sources::lab::changes(&spec, &spec.lab.node);
    changes.extend((0..REMOTE).map(|i| remote(i, 1000 + (i % 50) as u32)));
    model.apply(changes, &mut NoMaps);
    let mut n = 0usize;
    c.bench_function("model_apply_one_remote_change_1000_remote", |b| {
        b.iter(|| {
            n += 1;
            let i = n % REMOTE;
            let id = 1000 + ((i + n / REMOTE) % 50) as u32;
            model.apply(vec![remote(i, id)], &mut NoMaps)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
