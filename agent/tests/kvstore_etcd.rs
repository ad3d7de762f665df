//! The kvstore against a real etcd (Debian's etcd-server) on loopback, data in a tempdir:
//! identities agreed by two nodes, freed when both let go, a dead node's keys gone with its
//! lease, ipcache entries seen through a watch, etcd going away and coming back.
//! Without /usr/bin/etcd the tests are skipped with a message (under CI=true they fail).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::kvstore::reflect::{Mirror, Update, reflect};
use agent::kvstore::{Allocator, Cluster, ClusterConfig, Etcd, Session, keys};
use agent::model::{Change, EndpointSpec};
use tokio::sync::mpsc;

#[path = "support/etcd.rs"]
mod etcd;
use etcd::EtcdServer;

/// A node's session and allocator (`suffix`: its IP).
fn node(etcd: &EtcdServer, suffix: &str, ttl: i64) -> (Arc<Session>, Allocator) {
    let client = Etcd::connect(&etcd.address()).unwrap();
    let session = Arc::new(Session::new(client, ttl));
    let alloc = Allocator::new(session.clone(), suffix);
    (session, alloc)
}

fn labels(app: &str) -> Vec<String> {
    vec![
        format!("k8s:app={app}"),
        "k8s:io.kubernetes.pod.namespace=default".to_string(),
    ]
}

/// Polls `f` every 50 ms until it holds or `secs` pass.
async fn eventually(secs: u64, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_get_the_same_ids_for_the_same_labels() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let (_sa, a) = node(&etcd, "10.0.0.1", 30);
    let (_sb, b) = node(&etcd, "10.0.0.2", 30);
    let apps: Vec<String> = (0..8).map(|i| format!("app{i}")).collect();
    let (ids_a, ids_b) = tokio::join!(
        async {
            let mut v = Vec::new();
            for app in &apps {
                v.push(a.allocate(&labels(app)).await.unwrap());
            }
            v
        },
        async {
            let mut v = Vec::new();
            for app in apps.iter().rev() {
                v.push(b.allocate(&labels(app)).await.unwrap());
            }
            v.reverse();
            v
        }
    );
    assert_eq!(ids_a, ids_b);
    let distinct: BTreeSet<u32> = ids_a.iter().copied().collect();
    assert_eq!(distinct.len(), apps.len(), "{ids_a:?}");
    assert!(ids_a.iter().all(|id| (256..=65535).contains(id)));
    // Cilium's layout: the master key holds the label key, each node its reference.
    let client = Etcd::connect(&etcd.address()).unwrap();
    let master = client.get(&keys::id_key(ids_a[0])).await.unwrap().unwrap();
    assert_eq!(master.value, keys::label_key(&labels("app0")).into_bytes());
    let refs = keys::value_prefix(&keys::label_key(&labels("app0")));
    let (kvs, _) = client.get_prefix(&refs).await.unwrap();
    let nodes: Vec<String> = kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key[refs.len()..]).into_owned())
        .collect();
    assert_eq!(nodes, ["10.0.0.1", "10.0.0.2"]);
    assert!(
        kvs.iter()
            .all(|kv| kv.lease != 0 && kv.value == ids_a[0].to_string().as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_freed_when_no_node_uses_it() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let (_sa, a) = node(&etcd, "10.0.0.1", 30);
    let (_sb, b) = node(&etcd, "10.0.0.2", 30);
    let id = a.allocate(&labels("web")).await.unwrap();
    assert_eq!(b.allocate(&labels("web")).await.unwrap(), id);
    let client = Etcd::connect(&etcd.address()).unwrap();
    a.release(&labels("web")).await.unwrap();
    assert!(
        client.get(&keys::id_key(id)).await.unwrap().is_some(),
        "b still uses it"
    );
    b.release(&labels("web")).await.unwrap();
    assert!(
        client.get(&keys::id_key(id)).await.unwrap().is_none(),
        "nobody uses it"
    );
    // The freed number is handed out again.
    assert_eq!(a.allocate(&labels("db")).await.unwrap(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_keys_go_with_its_lease() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let (dead, d) = node(&etcd, "10.0.0.9", 2);
    let id = d.allocate(&labels("gone")).await.unwrap();
    let node_key = keys::node_key("default", "dead");
    dead.put(&node_key, b"{}".to_vec()).await.unwrap();
    // The dead node never renews its lease: etcd deletes its keys after the TTL.
    let client = Etcd::connect(&etcd.address()).unwrap();
    let refs = keys::value_prefix(&keys::label_key(&labels("gone")));
    let gone = eventually(15, async || {
        client.get(&node_key).await.unwrap().is_none()
            && client.get_prefix(&refs).await.unwrap().0.is_empty()
    })
    .await;
    assert!(gone, "the dead node's keys outlived its lease");
    // Its identity has no reference left: a live node's sweep frees it.
    let (_sl, live) = node(&etcd, "10.0.0.1", 30);
    assert_eq!(live.gc().await.unwrap(), 1);
    assert!(client.get(&keys::id_key(id)).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_lost_lease_are_written_again() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let (session, a) = node(&etcd, "10.0.0.1", 3);
    let id = a.allocate(&labels("kept")).await.unwrap();
    let node_key = keys::node_key("default", "n1");
    session.put(&node_key, b"{}".to_vec()).await.unwrap();
    let keeper = tokio::spawn({
        let s = session.clone();
        async move { s.keep_alive().await }
    });
    // Kept alive past its TTL.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let client = Etcd::connect(&etcd.address()).unwrap();
    assert!(
        client.get(&node_key).await.unwrap().is_some(),
        "the lease was not kept alive"
    );
    // The lease goes (as after etcd was away longer than the TTL): so do the keys.
    let lost = session.lease().await.unwrap();
    client.revoke(lost).await.unwrap();
    let ref_key = format!(
        "{}10.0.0.1",
        keys::value_prefix(&keys::label_key(&labels("kept")))
    );
    assert!(client.get(&node_key).await.unwrap().is_none());
    // The keepalive finds the lease gone and writes them again under a new one (the
    // identity's master key was deleted meanwhile: it is created again with it).
    client.delete(&keys::id_key(id)).await.unwrap();
    let back = eventually(15, async || {
        let (Some(n), Some(r)) = (
            client.get(&node_key).await.unwrap(),
            client.get(&ref_key).await.unwrap(),
        ) else {
            return false;
        };
        let master = client.get(&keys::id_key(id)).await.unwrap();
        n.lease != 0 && n.lease != lost && r.lease == n.lease && master.is_some()
    })
    .await;
    keeper.abort();
    assert!(back, "the keys were not written again");
    let master = client.get(&keys::id_key(id)).await.unwrap().unwrap();
    assert_eq!(master.value, keys::label_key(&labels("kept")).into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_remote_ipcache_entries() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let (sa, _) = node(&etcd, "10.0.0.1", 30);
    let (sb, _) = node(&etcd, "10.0.0.2", 30);
    let (tx, mut rx) = mpsc::channel::<Update>(16);
    tokio::spawn(reflect(sb, keys::ip_prefix("default"), tx));
    assert_eq!(rx.recv().await.unwrap(), Update::Listed(Mirror::new()));
    let mut m = Mirror::new();
    let pair = keys::IpIdentityPair {
        ip: "10.250.75.10".parse().unwrap(),
        mask: None,
        host_ip: Some("10.250.75.1".parse().unwrap()),
        id: 256,
        key: 0,
        metadata: String::new(),
        k8s_namespace: "default".into(),
        k8s_pod_name: "client".into(),
    };
    let key = keys::ip_key("default", pair.ip);
    sa.put(&key, serde_json::to_vec(&pair).unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .apply(&mut m);
    let seen: keys::IpIdentityPair = serde_json::from_slice(&m["10.250.75.10"]).unwrap();
    assert_eq!(seen, pair);
    sa.delete(&key).await.unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        deleted,
        Update::Changed(vec![("10.250.75.10".into(), None)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_fails_in_one_line_and_the_watch_resyncs() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let (sa, a) = node(&etcd, "10.0.0.1", 30);
    let (sb, _) = node(&etcd, "10.0.0.2", 30);
    let (tx, mut rx) = mpsc::channel::<Update>(16);
    tokio::spawn(reflect(sb.clone(), keys::ip_prefix("default"), tx));
    assert_eq!(rx.recv().await.unwrap(), Update::Listed(Mirror::new()));
    a.allocate(&labels("before")).await.unwrap();

    etcd.kill();
    let t = Instant::now();
    let e = a.allocate(&labels("during")).await.unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(e.starts_with("etcd 127.0.0.1:") && !e.contains('\n'), "{e}");
    assert!(!sa.is_healthy());
    assert!(
        eventually(10, async || !sb.is_healthy()).await,
        "the watcher saw nothing"
    );

    etcd.launch();
    // Written while the watcher was away: it re-lists once etcd is back.
    let key = keys::ip_key("default", "10.250.75.11".parse().unwrap());
    let writer = Etcd::connect(&etcd.address()).unwrap();
    writer.put(&key, b"{}", 0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut m = Mirror::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let update = tokio::time::timeout(left, rx.recv())
            .await
            .expect("no resync")
            .unwrap();
        update.apply(&mut m);
        if m.contains_key("10.250.75.11") {
            break;
        }
    }
    assert!(sb.is_healthy());
    assert!(a.allocate(&labels("after")).await.is_ok());
    assert!(sa.is_healthy());
}

fn pod(name: &str, app: &str, ip: &str) -> Change {
    Change::EndpointUpsert(EndpointSpec {
        key: format!("test:{name}"),
        namespace: "default".into(),
        pod_name: name.into(),
        labels: labels(app),
        workload: None,
        ips: vec![ip.parse().unwrap()],
        ifname: format!("veth-{name}"),
        attach: true,
        l7: Vec::new(),
        identity: None,
    })
}

fn identity(c: &Change) -> Option<u32> {
    match c {
        Change::EndpointUpsert(s) => s.identity,
        _ => None,
    }
}

/// A batch is published in as few transactions as etcd takes: more pods than one
/// transaction's operations are all published; a label set whose last pod goes keeps its
/// identity when a pod of the same batch takes it up again, and is freed once no pod uses it.
#[test]
fn a_batch_is_published_whole_and_ids_in_use_stay() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async { Etcd::connect(&etcd.address()).unwrap() });
    let ipcache_len = || {
        rt.block_on(async {
            let (kvs, _) = client
                .get_prefix(&keys::ip_prefix("default"))
                .await
                .unwrap();
            kvs.len()
        })
    };
    let cluster = Cluster::start(ClusterConfig {
        address: etcd.address(),
        cluster: "default".into(),
        lease_ttl: 30,
        peer_address: None,
        tls: None,
    })
    .unwrap();
    let mut batch = vec![Change::Node {
        cluster: "default".into(),
        node: "n1".into(),
        host_ips: vec!["10.0.0.1".parse().unwrap()],
    }];
    batch.extend((0..300).map(|i| {
        pod(
            &format!("p{i}"),
            "many",
            &format!("10.1.{}.{}", i / 200, i % 200 + 1),
        )
    }));
    batch.push(pod("solo", "solo", "10.1.9.1"));
    let out = cluster.resolve_blocking(batch);
    assert!(out[1..].iter().all(|c| identity(c).is_some()));
    assert_eq!(ipcache_len(), 301, "every pod of the batch is published");
    let solo = identity(&out[301]).unwrap();

    // The solo pod replaced within one batch: its label set keeps its id.
    let out = cluster.resolve_blocking(vec![
        Change::EndpointRemove {
            key: "test:solo".into(),
        },
        pod("solo2", "solo", "10.1.9.2"),
    ]);
    assert_eq!(identity(&out[1]), Some(solo));
    let (id_master, old_entry, new_entry) = rt.block_on(async {
        (
            client.get(&keys::id_key(solo)).await.unwrap(),
            client
                .get(&keys::ip_key("default", "10.1.9.1".parse().unwrap()))
                .await
                .unwrap(),
            client
                .get(&keys::ip_key("default", "10.1.9.2".parse().unwrap()))
                .await
                .unwrap(),
        )
    });
    assert!(id_master.is_some(), "an id in use was freed");
    assert!(old_entry.is_none() && new_entry.is_some());

    // Its last pod gone: the id is freed after the entry.
    cluster.resolve_blocking(vec![Change::EndpointRemove {
        key: "test:solo2".into(),
    }]);
    let freed = rt.block_on(async { client.get(&keys::id_key(solo)).await.unwrap().is_none() });
    assert!(freed, "an id no pod uses stayed");
    assert_eq!(ipcache_len(), 300);
    cluster.stop();
}

/// The stage between sources and model: local pods get cluster identities and are
/// published; while etcd is away a new pod waits with none, and once etcd is back it
/// reaches the model with one; a stopped stage's keys go with its lease.
#[test]
fn the_stage_publishes_and_catches_up_after_etcd_was_away() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cluster = Cluster::start(ClusterConfig {
        address: etcd.address(),
        cluster: "default".into(),
        lease_ttl: 30,
        peer_address: Some("127.0.0.1:4999".into()),
        tls: None,
    })
    .unwrap();
    let node = Change::Node {
        cluster: "default".into(),
        node: "n1".into(),
        host_ips: vec!["10.0.0.1".parse().unwrap()],
    };
    let out = cluster.resolve_blocking(vec![node, pod("a", "web", "10.1.0.1")]);
    let id = identity(&out[1]).expect("a cluster identity");
    let a_key = keys::ip_key("default", "10.1.0.1".parse().unwrap());
    let published = rt.block_on(async {
        let client = Etcd::connect(&etcd.address()).unwrap();
        let v = client.get(&a_key).await.unwrap().expect("published").value;
        serde_json::from_slice::<keys::IpIdentityPair>(&v).unwrap()
    });
    assert_eq!((published.id, published.k8s_pod_name.as_str()), (id, "a"));
    assert_eq!(published.host_ip, Some("10.0.0.1".parse().unwrap()));
    // The registry, as Peer Notify lists it: the node at its announced address.
    let mut peers = cluster.peers();
    let listed = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), peers.wait_for(|p| !p.is_empty()))
            .await
            .map(|r| r.unwrap().clone())
    });
    let listed = listed.expect("the registry never listed the node");
    assert_eq!(listed, [("n1".to_string(), "127.0.0.1:4999".to_string())]);

    etcd.kill();
    let out = cluster.resolve_blocking(vec![pod("b", "db", "10.1.0.2")]);
    assert_eq!(identity(&out[0]), None, "no identity while etcd is away");
    etcd.launch();
    let watcher = cluster.watcher().unwrap();
    let caught_up = rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(watcher(tx));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(batch)) = tokio::time::timeout(left, rx.recv()).await else {
                return None;
            };
            if let Some(c) = batch
                .iter()
                .find(|c| matches!(c, Change::EndpointUpsert(s) if s.pod_name == "b"))
            {
                return identity(c);
            }
        }
    });
    let b_id = caught_up.expect("b never got its identity");
    assert!(b_id >= 256 && b_id != id);

    cluster.stop();
    let gone = rt.block_on(async {
        let client = Etcd::connect(&etcd.address()).unwrap();
        client.get(&a_key).await.unwrap().is_none()
    });
    assert!(gone, "a stopped node's ipcache entries outlived it");
}

/// etcd serving TLS and asking for client certificates: the agent's etcd config file with
/// `trusted-ca-file`, `cert-file` and `key-file` gets in (identities allocated over it);
/// without a client certificate, or trusting another CA, it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_etcd_from_an_etcd_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    agent::certs::generate(&certs, "default", false).unwrap();
    let Some(etcd) = EtcdServer::start_tls(
        certs.join("server.crt"),
        certs.join("server.key"),
        certs.join("ca.crt"),
    ) else {
        return;
    };
    let url = format!("https://{}", etcd.address());
    let config = |extra: &str| {
        let f = dir.path().join(format!("etcd-{}.yaml", extra.len()));
        std::fs::write(&f, format!("endpoints:\n- {url}\n{extra}")).unwrap();
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            kv: agent::kvstore::KvstoreArgs,
        }
        let opt = format!("etcd.config={}", f.display());
        Cli::try_parse_from(["x", "--kvstore", "etcd", "--kvstore-opt", &opt])
            .unwrap()
            .kv
            .config()
    };
    let full = format!(
        "trusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
        certs.join("ca.crt").display(),
        certs.join("client.crt").display(),
        certs.join("client.key").display()
    );
    let cfg = config(&full).unwrap().unwrap();
    let tls = cfg.tls.clone().expect("TLS from the config file");
    let client_tls = |t: &agent::kvstore::cluster::EtcdTls| {
        let cas: Vec<_> = t.ca_file.iter().cloned().collect();
        let kp = t.keypair.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        hubble::tls::ClientTls::new(&cas, kp, None, false).unwrap()
    };
    let client = Etcd::connect_tls(&cfg.address, Some(client_tls(&tls))).unwrap();
    let session = Arc::new(Session::new(client, 30));
    let id = Allocator::new(session, "10.0.0.1")
        .allocate(&labels("tls"))
        .await
        .expect("an identity over TLS");
    assert!(id >= 256);

    // No client certificate: refused.
    let ca_only = agent::kvstore::cluster::EtcdTls {
        ca_file: tls.ca_file.clone(),
        keypair: None,
    };
    let c = Etcd::connect_tls(&cfg.address, Some(client_tls(&ca_only))).unwrap();
    assert!(c.get(&keys::id_key(id)).await.is_err());
    // Another CA: etcd's certificate is not trusted.
    let other = dir.path().join("other");
    agent::certs::generate(&other, "default", false).unwrap();
    let wrong = agent::kvstore::cluster::EtcdTls {
        ca_file: Some(other.join("ca.crt")),
        keypair: tls.keypair.clone(),
    };
    let c = Etcd::connect_tls(&cfg.address, Some(client_tls(&wrong))).unwrap();
    assert!(c.get(&keys::id_key(id)).await.is_err());
    // TLS files with a plaintext endpoint, half a keypair: one line each.
    let plain = dir.path().join("plain.yaml");
    std::fs::write(
        &plain,
        format!("endpoints:\n- http://{}\n{full}", etcd.address()),
    )
    .unwrap();
    let e = agent::kvstore::KvstoreArgs {
        kvstore: "etcd".into(),
        kvstore_opt: vec![format!("etcd.config={}", plain.display())],
        kvstore_lease_ttl: Duration::from_secs(60),
        cluster_name: "default".into(),
        peer_address: None,
    }
    .config()
    .unwrap_err();
    assert!(e.contains("not https://"), "{e}");
    let half = config(&format!(
        "cert-file: {}\n",
        certs.join("client.crt").display()
    ));
    assert!(half.unwrap_err().contains("go together"));
}
