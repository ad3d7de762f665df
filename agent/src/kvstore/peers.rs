//! The node registry, followed: as Peer Notify's list (every node of the cluster, named as
//! Cilium names a peer, `cluster/name` outside `default`, at its Hubble API address), and
//! the other nodes' addresses for the model (identity remote-node, as Cilium's node
//! manager puts them in the ipcache). A node whose lease ran out leaves the registry, and
//! so both.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::keys::{self, Node};
use super::reflect::{Mirror, Update, reflect};
use super::remote::HostIps;
use super::session::Session;
use crate::model::Change;

/// (peer name, `HOST:PORT`), sorted by name.
pub type PeerList = Vec<(String, String)>;

/// Where the registry goes.
pub struct RegistryOut {
    /// Peer Notify's list.
    pub peers: watch::Sender<PeerList>,
    /// The model: `Change::RemoteNodes` whenever the other nodes' addresses change.
    pub model: mpsc::Sender<Vec<Change>>,
}

/// Follows the registry of `cluster` until Peer Notify's receivers and the model are both
/// gone; `port` is this node's own API port, for nodes that do not say where theirs is;
/// `ours`: this node's addresses (its own entry is not a remote node).
pub async fn follow_registry(
    session: Arc<Session>,
    cluster: String,
    port: Option<u16>,
    ours: HostIps,
    out: RegistryOut,
) {
    let (tx, mut rx) = mpsc::channel::<Update>(4);
    tokio::spawn(reflect(session, keys::nodes_prefix(&cluster), tx));
    let mut m = Mirror::new();
    let mut sent: Option<Vec<IpAddr>> = None;
    while let Some(update) = rx.recv().await {
        update.apply(&mut m);
        let list = peers_of(&m, port);
        out.peers.send_if_modified(|cur| {
            let changed = *cur != list;
            *cur = list;
            changed
        });
        let ips = remote_node_ips(&m, &ours.lock().expect("host ips"));
        if sent.as_ref() != Some(&ips) {
            sent = Some(ips.clone());
            let _ = out.model.send(vec![Change::RemoteNodes { ips }]).await;
        }
        if out.peers.is_closed() && out.model.is_closed() {
            return;
        }
    }
}

/// Every address of the registry's nodes but this one's (a node with any of `ours`), sorted.
fn remote_node_ips(m: &Mirror, ours: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
    let ips: BTreeSet<IpAddr> = m
        .values()
        .filter_map(|v| serde_json::from_slice::<Node>(v).ok())
        .map(|n| n.ip_addresses.into_iter().map(|a| a.ip).collect::<Vec<_>>())
        .filter(|ips| !ips.iter().any(|ip| ours.contains(ip)))
        .flatten()
        .collect();
    ips.into_iter().collect()
}

/// The peers of a mirrored registry (entries that are no node JSON are left out).
fn peers_of(m: &Mirror, port: Option<u16>) -> PeerList {
    let mut list: PeerList = m
        .values()
        .filter_map(|v| serde_json::from_slice::<Node>(v).ok())
        .filter_map(|n| Some((n.fullname(), n.peer_address(port)?)))
        .collect();
    list.sort();
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_entries_become_named_peers() {
        let node = |name: &str, ip: &str, label: Option<&str>| {
            let mut n = Node {
                name: name.into(),
                cluster: "lab".into(),
                ip_addresses: vec![keys::NodeAddress {
                    kind: "InternalIP".into(),
                    ip: ip.parse().unwrap(),
                }],
                cluster_id: 0,
                labels: Default::default(),
            };
            if let Some(a) = label {
                n.labels.insert(keys::PEER_ADDRESS_LABEL.into(), a.into());
            }
            serde_json::to_vec(&n).unwrap()
        };
        let m: Mirror = [
            ("b".to_string(), node("b", "10.0.0.2", None)),
            (
                "a".to_string(),
                node("a", "10.0.0.1", Some("127.0.0.1:4301")),
            ),
            ("junk".to_string(), b"{".to_vec()),
        ]
        .into();
        assert_eq!(
            peers_of(&m, Some(4244)),
            [
                ("lab/a".to_string(), "127.0.0.1:4301".to_string()),
                ("lab/b".to_string(), "10.0.0.2:4244".to_string())
            ]
        );
        // Without a port of our own, a node without the label cannot be reached.
        assert_eq!(peers_of(&m, None).len(), 1);
        // Node a is this one: b is the remote node.
        let ours = ["10.0.0.1".parse().unwrap()].into();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(remote_node_ips(&m, &ours), [b]);
    }
}
