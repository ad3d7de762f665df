//! The relay's view of the cluster: one entry per peer (agent), each kept connected by its own
//! task with exponential backoff and a periodic ServerStatus probe; peers come from a static
//! `--peer` list and/or the Peer Notify stream of a seed agent (`--peer-service`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hubble::client;
use hubble_api::observer::ServerStatusResponse;
use hubble_api::peer::peer_client::PeerClient;
use hubble_api::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
use hubble_api::relay::NodeState;
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

/// How often a connected peer is probed with ServerStatus.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// First reconnection delay; doubles up to `--retry-timeout`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Port of an agent's Hubble API when a Peer notification gives a bare host.
pub const DEFAULT_PEER_PORT: u16 = 4244;
/// Default `--cluster-name` (Cilium's default cluster name).
pub const DEFAULT_CLUSTER_NAME: &str = "default";
/// Name of the peer service in its TLS server name.
const PEER_SERVICE: &str = "hubble-peer";

/// How peers are dialled.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Connection (and unary call) timeout.
    pub dial_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub retry_timeout: Duration,
    /// TLS towards the agents (None: plaintext); each peer is dialled with the server name
    /// from its Peer notification, else [`tls_server_name`] of its name.
    pub tls: Option<hubble::tls::ClientTls>,
    /// `--cluster-name`: the cluster of peers named without one, and of the peer service's
    /// TLS name (`hubble-peer.<cluster>.hubble-grpc.cilium.io`).
    pub cluster_name: String,
}

/// A peer as seen at one moment.
#[derive(Clone)]
pub struct PeerSnapshot {
    pub name: String,
    pub address: String,
    pub state: NodeState,
    /// Set while connected.
    pub channel: Option<Channel>,
    /// Fires (becomes true) when this connection is lost; streams on it then stop.
    pub down: watch::Receiver<bool>,
    /// TLS server name dialled (None: plaintext).
    pub tls_server_name: Option<String>,
    /// Why the peer is not connected.
    pub error: Option<String>,
    /// The peer's last ServerStatus.
    pub status: Option<ServerStatusResponse>,
}

struct Entry {
    address: String,
    tls_server_name: Option<String>,
    state: NodeState,
    channel: Option<Channel>,
    down: watch::Sender<bool>,
    error: Option<String>,
    status: Option<ServerStatusResponse>,
    /// Wakes the connection task to reconnect now (a stream on it failed).
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// All known peers.
pub struct Peers {
    entries: Mutex<HashMap<String, Entry>>,
    opts: PeerOptions,
    /// Bumped on every change of any peer's state.
    changed: watch::Sender<u64>,
    /// The peer service's Notify stream: None when there is no peer service, else whether
    /// the stream is open.
    peer_service: watch::Sender<Option<bool>>,
}

impl Peers {
    pub fn new(opts: PeerOptions) -> Arc<Self> {
        Arc::new(Peers {
            entries: Mutex::new(HashMap::new()),
            opts,
            changed: watch::Sender::new(0),
            peer_service: watch::Sender::new(None),
        })
    }

    pub fn options(&self) -> &PeerOptions {
        &self.opts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// Notified on every change (peer added, removed, connected, lost).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether the peer service's Notify stream is open (None: no peer service).
    pub fn peer_service_connected(&self) -> Option<bool> {
        *self.peer_service.borrow()
    }

    /// Adds a peer, or re-dials it when its address or TLS name changed. Needs a tokio runtime.
    pub fn upsert(self: &Arc<Self>, name: &str, address: &str, tls_server_name: Option<String>) {
        let address = normalize_address(address);
        let tls_server_name = if self.opts.tls.is_some() && !address.starts_with("unix:") {
            Some(tls_server_name.unwrap_or_else(|| peer_server_name(name, &self.opts.cluster_name)))
        } else {
            None
        };
        let mut map = self.lock();
        if let Some(e) = map.get(name)
            && e.address == address
            && e.tls_server_name == tls_server_name
        {
            return;
        }
        if let Some(old) = map.remove(name) {
            old.task.abort();
            let _ = old.down.send(true);
        }
        let kick = Arc::new(Notify::new());
        let task = tokio::spawn(connection_task(
            Arc::downgrade(self),
            name.to_string(),
            address.clone(),
            tls_server_name.clone(),
            kick.clone(),
        ));
        map.insert(
            name.to_string(),
            Entry {
                address,
                tls_server_name,
                state: NodeState::UnknownNodeState,
                channel: None,
                down: watch::Sender::new(false),
                error: None,
                status: None,
                kick,
                task,
            },
        );
        drop(map);
        self.bump();
    }

    /// Forgets a peer (Peer Notify: deleted).
    pub fn remove(&self, name: &str) {
        if let Some(old) = self.lock().remove(name) {
            old.task.abort();
            let _ = old.down.send(true);
            self.bump();
        }
    }

    /// Every peer, sorted by name.
    pub fn list(&self) -> Vec<PeerSnapshot> {
        let map = self.lock();
        let mut v: Vec<_> = map
            .iter()
            .map(|(name, e)| PeerSnapshot {
                name: name.clone(),
                address: e.address.clone(),
                state: e.state,
                channel: e.channel.clone(),
                down: e.down.subscribe(),
                tls_server_name: e.tls_server_name.clone(),
                error: e.error.clone(),
                status: e.status.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A stream on `name` failed: mark it unavailable and reconnect now.
    pub fn report_failure(&self, name: &str, error: &str) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(name)
            && e.state == NodeState::NodeConnected
        {
            set_down(e, error);
            e.kick.notify_one();
            drop(map);
            self.bump();
        }
    }

    fn set_connected(&self, name: &str, channel: Channel, status: ServerStatusResponse) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(name) {
            e.state = NodeState::NodeConnected;
            e.channel = Some(channel);
            e.error = None;
            e.status = Some(status);
            e.down = watch::Sender::new(false);
            drop(map);
            self.bump();
        }
    }

    fn set_status(&self, name: &str, status: ServerStatusResponse) {
        if let Some(e) = self.lock().get_mut(name) {
            e.status = Some(status);
        }
    }

    fn set_unavailable(&self, name: &str, error: &str) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(name) {
            let changed = e.state != NodeState::NodeUnavailable;
            set_down(e, error);
            drop(map);
            if changed {
                self.bump();
            }
        }
    }
}

fn set_down(e: &mut Entry, error: &str) {
    e.state = NodeState::NodeUnavailable;
    e.channel = None;
    e.error = Some(error.to_string());
    let _ = e.down.send(true);
}

impl Drop for Peers {
    fn drop(&mut self) {
        for e in self.lock().values() {
            e.task.abort();
        }
    }
}

/// Dials `address` (TLS with `server_name` when the relay has client TLS).
pub async fn dial(
    opts: &PeerOptions,
    address: &str,
    server_name: Option<&str>,
) -> Result<Channel, client::ClientError> {
    match (&opts.tls, server_name) {
        (Some(tls), Some(sn)) => {
            let tls = tls.with_server_name(sn);
            client::connect_tls(address, opts.dial_timeout, Some(&tls)).await
        }
        _ => client::connect(address, opts.dial_timeout).await,
    }
}

async fn connection_task(
    peers: std::sync::Weak<Peers>,
    name: String,
    address: String,
    server_name: Option<String>,
    kick: Arc<Notify>,
) {
    let Some(opts) = peers.upgrade().map(|p| p.opts.clone()) else {
        return;
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let attempt = async {
            let ch = dial(&opts, &address, server_name.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let st = client::server_status(ch.clone(), opts.dial_timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((ch, st))
        };
        match attempt.await {
            Ok((ch, st)) => {
                let Some(p) = peers.upgrade() else { return };
                eprintln!("hubble-relay: peer {name} connected ({address})");
                p.set_connected(&name, ch.clone(), st);
                drop(p);
                backoff = MIN_BACKOFF;
                let err = loop {
                    tokio::select! {
                        _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                        _ = kick.notified() => break "stream failed".to_string(),
                    }
                    let probe = client::server_status(ch.clone(), opts.dial_timeout).await;
                    let Some(p) = peers.upgrade() else { return };
                    match probe {
                        Ok(st) => p.set_status(&name, st),
                        Err(e) => break e.to_string(),
                    }
                };
                eprintln!("hubble-relay: peer {name} unavailable: {err}");
                if let Some(p) = peers.upgrade() {
                    p.set_unavailable(&name, &err);
                }
            }
            Err(err) => {
                let Some(p) = peers.upgrade() else { return };
                p.set_unavailable(&name, &err);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = kick.notified() => {}
        }
        backoff = (backoff * 2).min(opts.retry_timeout.max(MIN_BACKOFF));
    }
}

/// Cilium's TLS server name of a node: `<node>.<cluster>.hubble-grpc.cilium.io`, dots in
/// both names turned into dashes (every node's name at the same DNS level, so that one
/// `*.<cluster>.hubble-grpc.cilium.io` certificate covers them); no cluster means `default`.
pub fn tls_server_name(node: &str, cluster: &str) -> String {
    let cluster = if cluster.is_empty() {
        DEFAULT_CLUSTER_NAME
    } else {
        cluster
    };
    format!(
        "{}.{}.hubble-grpc.cilium.io",
        node.replace('.', "-"),
        cluster.replace('.', "-")
    )
}

/// The TLS server name of a peer named `node` or `cluster/node` (the cluster of a bare
/// name is `cluster_name`).
pub fn peer_server_name(name: &str, cluster_name: &str) -> String {
    let (cluster, node) = name.split_once('/').unwrap_or((cluster_name, name));
    tls_server_name(node, cluster)
}

/// `host` → `host:4244`; `host:port`, `[v6]:port` and `unix://` as given; bare IPv6 bracketed.
pub fn normalize_address(addr: &str) -> String {
    let a = addr.trim();
    if a.starts_with("unix:") || a.starts_with("http://") {
        return a.to_string();
    }
    if let Ok(ip) = a.parse::<std::net::IpAddr>() {
        return std::net::SocketAddr::new(ip, DEFAULT_PEER_PORT).to_string();
    }
    if a.starts_with('[') {
        if a.contains("]:") {
            return a.to_string();
        }
        return format!("{a}:{DEFAULT_PEER_PORT}");
    }
    match a.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => a.to_string(),
        _ => format!("{a}:{DEFAULT_PEER_PORT}"),
    }
}

/// Follows the Peer Notify stream of `target` forever, applying additions, updates and
/// deletions to `peers`; reconnects with backoff when the stream ends or fails.
pub async fn discover(peers: Arc<Peers>, target: String) {
    let opts = peers.opts.clone();
    let mut backoff = MIN_BACKOFF;
    peers.peer_service.send_replace(Some(false));
    loop {
        let started = Instant::now();
        let res = async {
            let server_name = tls_server_name(PEER_SERVICE, &opts.cluster_name);
            let ch = dial(
                &opts,
                &target,
                opts.tls.as_ref().map(|_| server_name.as_str()),
            )
            .await
            .map_err(|e| e.to_string())?;
            let mut stream = tokio::time::timeout(
                opts.dial_timeout,
                PeerClient::new(ch).notify(NotifyRequest {}),
            )
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|s| s.message().to_string())?
            .into_inner();
            peers.peer_service.send_replace(Some(true));
            loop {
                match stream.message().await {
                    Ok(Some(cn)) => apply(&peers, cn),
                    Ok(None) => return Err("stream ended".to_string()),
                    Err(s) => return Err(s.message().to_string()),
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        }
        .await;
        peers.peer_service.send_replace(Some(false));
        if let Err(e) = res {
            eprintln!("hubble-relay: peer service {target}: {e}; retrying");
        }
        if started.elapsed() > opts.retry_timeout {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(opts.retry_timeout.max(MIN_BACKOFF));
    }
}

fn apply(peers: &Arc<Peers>, cn: ChangeNotification) {
    if cn.name.is_empty() {
        eprintln!("hubble-relay: ignoring a peer notification without a name");
        return;
    }
    let tls = cn.tls.map(|t| t.server_name).filter(|s| !s.is_empty());
    match ChangeNotificationType::try_from(cn.r#type) {
        Ok(ChangeNotificationType::PeerAdded | ChangeNotificationType::PeerUpdated) => {
            if cn.address.is_empty() {
                eprintln!("hubble-relay: peer {} has no address; ignoring it", cn.name);
                return;
            }
            peers.upsert(&cn.name, &cn.address, tls);
        }
        Ok(ChangeNotificationType::PeerDeleted) => peers.remove(&cn.name),
        _ => eprintln!(
            "hubble-relay: ignoring peer notification of unknown type {} for {}",
            cn.r#type, cn.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(normalize_address("10.0.0.1"), "10.0.0.1:4244");
        assert_eq!(normalize_address("10.0.0.1:5000"), "10.0.0.1:5000");
        assert_eq!(normalize_address("::1"), "[::1]:4244");
        assert_eq!(normalize_address("[::1]:9"), "[::1]:9");
        assert_eq!(normalize_address("node-1"), "node-1:4244");
        assert_eq!(normalize_address("unix:///x.sock"), "unix:///x.sock");
    }

    #[test]
    fn server_names() {
        assert_eq!(
            peer_server_name("node-1", "default"),
            "node-1.default.hubble-grpc.cilium.io"
        );
        assert_eq!(
            peer_server_name("worker.eu-1", "prod.eu"),
            "worker-eu-1.prod-eu.hubble-grpc.cilium.io"
        );
        assert_eq!(
            peer_server_name("c1/node.a", "prod"),
            "node-a.c1.hubble-grpc.cilium.io"
        );
        assert_eq!(
            tls_server_name("hubble-peer", ""),
            "hubble-peer.default.hubble-grpc.cilium.io"
        );
    }
}
