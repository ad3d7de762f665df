//! The node in a kvstore cluster: between the sources and the model, every endpoint's
//! label set gets its cluster-wide identity (`EndpointSpec::identity`), the node's own
//! endpoints are published as ipcache entries (a batch's in few transactions) and the node
//! in the registry; other nodes' ipcache entries come back as remote endpoints (named, with
//! their identity and labels), other nodes' addresses as remote-node.
//!
//! All etcd I/O runs on a thread of its own, started before the agent enters a lab's
//! network namespace, so that etcd on the host's loopback stays reachable. While etcd is
//! down, a change is passed on with what is known (an endpoint whose labels have no cluster
//! identity yet keeps a local one, tried again every 2 s and sent to the model once it has
//! one) and the failure is one line on stderr.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::allocator::Allocator;
use super::client::Etcd;
use super::keys::{self, IpIdentityPair, Node as NodeValue, NodeAddress};
use super::peers::{PeerList, RegistryOut, follow_registry};
use super::remote::{HostIps, remote_endpoints};
use super::session::Session;
use crate::model::{Change, EndpointSpec};
use crate::sources::Watcher;

/// How often ids no node refers to any more are freed (Cilium's operator:
/// `--identity-gc-interval`).
const GC_INTERVAL: Duration = Duration::from_secs(60);

/// How often identities that could not be allocated are tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Where the cluster's state is.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd's `HOST:PORT` or `http://HOST:PORT`.
    pub address: String,
    /// The cluster's name in key paths (Cilium's `--cluster-name`).
    pub cluster: String,
    /// The node's lease TTL in seconds.
    pub lease_ttl: i64,
    /// Where this node's Hubble API listens (`HOST:PORT`), announced in the registry.
    pub peer_address: Option<String>,
    /// TLS to etcd (from `etcd.config`), for an `https://` address.
    pub tls: Option<EtcdTls>,
}

impl ClusterConfig {
    /// etcd is reached in plaintext on another host than this one's loopback.
    pub fn plaintext_beyond_loopback(&self) -> bool {
        if self.address.starts_with("https://") {
            return false;
        }
        let hp = self.address.trim_start_matches("http://");
        let host = hp.rsplit_once(':').map_or(hp, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        !loopback
    }
}

/// The TLS files of an etcd client config (etcd's `trusted-ca-file`, `cert-file`,
/// `key-file`); they are followed as they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CAs etcd's certificate must chain to (the system's when none).
    pub ca_file: Option<std::path::PathBuf>,
    /// (certificate, key) presented to etcd.
    pub keypair: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl EtcdTls {
    fn client(&self) -> anyhow::Result<hubble::tls::ClientTls> {
        let cas: Vec<std::path::PathBuf> = self.ca_file.iter().cloned().collect();
        let keypair = self
            .keypair
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        hubble::tls::ClientTls::new(&cas, keypair, None, false)
            .map_err(|e| anyhow::anyhow!("TLS to etcd: {e}"))
    }
}

enum Request {
    Resolve(Vec<Change>, oneshot::Sender<Vec<Change>>),
    Stop(oneshot::Sender<()>),
}

/// The handle the agent keeps; the work is on the kvstore thread.
pub struct Cluster {
    tx: mpsc::UnboundedSender<Request>,
    remote: Option<mpsc::Receiver<Vec<Change>>>,
    peers: watch::Receiver<PeerList>,
    health: watch::Receiver<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cluster {
    /// Starts the kvstore thread (call it in the network namespace etcd is reached from).
    pub fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let etcd = {
            let _in_rt = rt.enter();
            let tls = cfg.tls.as_ref().map(EtcdTls::client).transpose()?;
            Etcd::connect_tls(&cfg.address, tls)?
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (remote_tx, remote_rx) = mpsc::channel(64);
        let (peers_tx, peers) = watch::channel(PeerList::new());
        let session = Arc::new(Session::new(etcd, cfg.lease_ttl));
        let health = session.health();
        let thread = std::thread::Builder::new()
            .name("kvstore".into())
            .spawn(move || rt.block_on(serve(cfg, session, rx, remote_tx, peers_tx)))?;
        Ok(Cluster {
            tx,
            remote: Some(remote_rx),
            peers,
            health,
            thread: Some(thread),
        })
    }

    /// Whether etcd answers (its last call worked), followed.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.health.clone()
    }

    /// The nodes of the registry (this one included), for Peer Notify.
    pub fn peers(&self) -> watch::Receiver<PeerList> {
        self.peers.clone()
    }

    /// `changes` with cluster identities, after publishing what is the node's own.
    pub async fn resolve(&self, changes: Vec<Change>) -> Vec<Change> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Resolve(changes.clone(), tx)).is_err() {
            return changes;
        }
        rx.await.unwrap_or(changes)
    }

    /// [`Cluster::resolve`] from outside any runtime.
    pub fn resolve_blocking(&self, changes: Vec<Change>) -> Vec<Change> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Resolve(changes.clone(), tx)).is_err() {
            return changes;
        }
        rx.blocking_recv().unwrap_or(changes)
    }

    /// Other nodes' endpoints as changes, for the model's channel (once).
    pub fn watcher(&mut self) -> Option<Watcher> {
        let mut rx = self.remote.take()?;
        Some(Box::new(move |out| {
            Box::pin(async move {
                while let Some(batch) = rx.recv().await {
                    if out.send(batch).await.is_err() {
                        return;
                    }
                }
            })
        }))
    }

    /// Revokes the node's lease (its references, ipcache entries and registry entry go at
    /// once) and stops the thread.
    pub fn stop(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Stop(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the node published, to tell what changed.
#[derive(Default)]
struct Published {
    /// Endpoint key → (sorted labels, addresses published for it).
    endpoints: BTreeMap<String, (Vec<String>, Vec<IpAddr>)>,
    /// Label set → how many endpoints use it.
    label_sets: BTreeMap<Vec<String>, usize>,
}

async fn serve(
    cfg: ClusterConfig,
    session: Arc<Session>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    model_tx: mpsc::Sender<Vec<Change>>,
    peers_tx: watch::Sender<PeerList>,
) {
    let host_ips: HostIps = Arc::default();
    let mut tasks = vec![tokio::spawn({
        let s = session.clone();
        async move { s.keep_alive().await }
    })];
    tasks.push(tokio::spawn(remote_endpoints(
        session.clone(),
        cfg.cluster.clone(),
        host_ips.clone(),
        model_tx.clone(),
    )));
    let port = cfg
        .peer_address
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port());
    tasks.push(tokio::spawn(follow_registry(
        session.clone(),
        cfg.cluster.clone(),
        port,
        host_ips.clone(),
        RegistryOut {
            peers: peers_tx,
            model: model_tx.clone(),
        },
    )));
    let mut node = Stage {
        cfg,
        session: session.clone(),
        allocator: None,
        host_ips,
        published: Published::default(),
        node_ip: None,
        pending: BTreeMap::new(),
        writes: BTreeMap::new(),
        unused: Vec::new(),
    };
    let mut retry = tokio::time::interval(RETRY_INTERVAL);
    let mut gc = tokio::time::interval(GC_INTERVAL);
    loop {
        tokio::select! {
            req = rx.recv() => match req {
                Some(Request::Resolve(changes, reply)) => {
                    let _ = reply.send(node.resolve(changes).await);
                }
                Some(Request::Stop(done)) => {
                    for t in &tasks {
                        t.abort();
                    }
                    if let Err(e) = session.close().await {
                        eprintln!("hubble-agent: kvstore: {e}");
                    }
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            _ = retry.tick(), if !node.pending.is_empty() => {
                let batch = node.retry().await;
                if !batch.is_empty() {
                    let _ = model_tx.send(batch).await;
                }
            }
            _ = gc.tick() => {
                if let Some(a) = &node.allocator
                    && let Err(e) = a.gc().await
                {
                    eprintln!("hubble-agent: kvstore: identity gc: {e}");
                }
            }
        }
    }
    // (tasks end with the runtime)
}

/// The resolving side: allocator, publications.
struct Stage {
    cfg: ClusterConfig,
    session: Arc<Session>,
    /// Made once the node's address (its reference suffix) is known.
    allocator: Option<Allocator>,
    host_ips: HostIps,
    published: Published,
    node_ip: Option<IpAddr>,
    /// Endpoints whose identity could not be allocated (etcd down): tried again every
    /// [`RETRY_INTERVAL`], and sent to the model once they have one.
    pending: BTreeMap<String, EndpointSpec>,
    /// The batch's ipcache writes (an entry's JSON, or `None` to delete it), the last per
    /// address, sent together by [`Stage::flush`].
    writes: BTreeMap<IpAddr, Option<Vec<u8>>>,
    /// Label sets whose last endpoint went in this batch: their references are released
    /// after the batch's ipcache writes (no entry names a freed id meanwhile), unless an
    /// endpoint of the same batch uses them again.
    unused: Vec<Vec<String>>,
}

impl Stage {
    async fn resolve(&mut self, changes: Vec<Change>) -> Vec<Change> {
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            match c {
                Change::Node {
                    cluster,
                    node,
                    host_ips,
                } => {
                    self.register(&node, &host_ips).await;
                    out.push(Change::Node {
                        cluster,
                        node,
                        host_ips,
                    });
                }
                Change::EndpointUpsert(spec) if spec.identity.is_none() => {
                    // While etcd is known to be away, the model gets the change at once (the
                    // retry allocates) rather than after a timeout per endpoint.
                    let ask = self.session.is_healthy();
                    out.push(Change::EndpointUpsert(self.endpoint(spec, ask).await));
                }
                Change::EndpointRemove { key } => {
                    self.forget(&key);
                    out.push(Change::EndpointRemove { key });
                }
                other => out.push(other),
            }
        }
        self.flush().await;
        out
    }

    /// The node in the registry (under the lease), and its allocator.
    async fn register(&mut self, name: &str, host_ips: &[IpAddr]) {
        *self.host_ips.lock().expect("host ips") = host_ips.iter().copied().collect();
        self.node_ip = host_ips.first().copied();
        if self.allocator.is_none() {
            let suffix = self.node_ip.map_or(name.to_string(), |ip| ip.to_string());
            self.allocator = Some(Allocator::new(self.session.clone(), &suffix));
        }
        let value = NodeValue {
            name: name.to_string(),
            cluster: self.cfg.cluster.clone(),
            ip_addresses: host_ips
                .iter()
                .map(|ip| NodeAddress {
                    kind: "InternalIP".into(),
                    ip: *ip,
                })
                .collect(),
            cluster_id: 0,
            labels: self
                .cfg
                .peer_address
                .iter()
                .map(|a| (keys::PEER_ADDRESS_LABEL.to_string(), a.clone()))
                .collect(),
        };
        let key = keys::node_key(&self.cfg.cluster, name);
        let json = serde_json::to_vec(&value).expect("node JSON");
        if let Err(e) = self.session.put(&key, json).await {
            eprintln!("hubble-agent: kvstore: node registry: {e}");
        }
    }

    /// An endpoint with its cluster identity; a local one's addresses published.
    /// `ask`: try etcd (otherwise the endpoint waits for the retry).
    async fn endpoint(&mut self, mut spec: EndpointSpec, ask: bool) -> EndpointSpec {
        let mut labels = spec.labels.clone();
        labels.sort();
        labels.dedup();
        let before = self.published.endpoints.get(&spec.key).cloned();
        if before.as_ref().map(|(l, _)| l) != Some(&labels) {
            *self.published.label_sets.entry(labels.clone()).or_default() += 1;
            if let Some((old, _)) = &before {
                self.unuse(old);
            }
        }
        let id = match &self.allocator {
            Some(a) if ask || a.holds(&labels) => {
                a.allocate(&labels).await.map_err(|e| e.to_string())
            }
            Some(_) => Err("etcd is unreachable".to_string()),
            None => Err("the node's address is not known yet".to_string()),
        };
        match id {
            Ok(id) => {
                self.pending.remove(&spec.key);
                spec.identity = Some(id);
            }
            Err(e) => {
                if !self.pending.contains_key(&spec.key) {
                    eprintln!(
                        "hubble-agent: kvstore: identity of {}/{}: {e}; a local one until etcd answers",
                        spec.namespace, spec.pod_name
                    );
                }
                self.pending.insert(spec.key.clone(), spec.clone());
            }
        }
        // A local endpoint's addresses, once it has a cluster identity to publish them with.
        let ips = if spec.attach && spec.identity.is_some() {
            spec.ips.clone()
        } else {
            Vec::new()
        };
        let unchanged = before.as_ref() == Some(&(labels.clone(), ips.clone()));
        let old_ips = before.map(|(_, ips)| ips).unwrap_or_default();
        for ip in old_ips.iter().filter(|ip| !ips.contains(ip)) {
            self.writes.insert(*ip, None);
        }
        if let Some(id) = spec.identity
            && !unchanged
        {
            for ip in &ips {
                self.publish(*ip, id, &spec);
            }
        }
        self.published
            .endpoints
            .insert(spec.key.clone(), (labels, ips));
        spec
    }

    /// The pending endpoints that have an identity now, as upserts.
    async fn retry(&mut self) -> Vec<Change> {
        let mut batch = Vec::new();
        let pending: Vec<EndpointSpec> = self.pending.values().cloned().collect();
        for spec in pending {
            let spec = self.endpoint(spec, true).await;
            if spec.identity.is_none() {
                break; // etcd still away: the rest waits for the next round
            }
            batch.push(Change::EndpointUpsert(spec));
        }
        self.flush().await;
        batch
    }

    fn forget(&mut self, key: &str) {
        self.pending.remove(key);
        let Some((labels, ips)) = self.published.endpoints.remove(key) else {
            return;
        };
        for ip in ips {
            self.writes.insert(ip, None);
        }
        self.unuse(&labels);
    }

    /// One endpoint less uses `labels`: the node's reference goes with the last (at
    /// [`Stage::flush`]).
    fn unuse(&mut self, labels: &[String]) {
        let Some(n) = self.published.label_sets.get_mut(labels) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.published.label_sets.remove(labels);
        self.unused.push(labels.to_vec());
    }

    /// Sends the batch's ipcache writes, then releases the label sets no endpoint uses.
    async fn flush(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        let n = writes.len();
        let ops = writes
            .into_iter()
            .map(|(ip, v)| (keys::ip_key(&self.cfg.cluster, ip), v))
            .collect();
        if let Err(e) = self.session.write_many(ops).await {
            eprintln!("hubble-agent: kvstore: ipcache ({n} entries): {e}");
        }
        for labels in std::mem::take(&mut self.unused) {
            if self.published.label_sets.contains_key(&labels) {
                continue; // used again in the same batch
            }
            if let Some(a) = &self.allocator
                && let Err(e) = a.release(&labels).await
            {
                eprintln!("hubble-agent: kvstore: releasing an identity: {e}");
            }
        }
    }

    fn publish(&mut self, ip: IpAddr, id: u32, spec: &EndpointSpec) {
        let pair = IpIdentityPair {
            ip,
            mask: None,
            host_ip: self.node_ip,
            id,
            key: 0,
            metadata: String::new(),
            k8s_namespace: spec.namespace.clone(),
            k8s_pod_name: spec.pod_name.clone(),
        };
        let json = serde_json::to_vec(&pair).expect("ipcache JSON");
        self.writes.insert(ip, Some(json));
    }
}
