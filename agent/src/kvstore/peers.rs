//! The node registry as Peer Notify's list: every node of the cluster's registry, named as
//! Cilium names a peer (`cluster/name` outside `default`) at its Hubble API address. A node
//! whose lease ran out leaves the registry, and so the list.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::keys::{self, Node};
use super::reflect::{Mirror, Update, reflect};
use super::session::Session;

/// (peer name, `HOST:PORT`), sorted by name.
pub type PeerList = Vec<(String, String)>;

/// Follows the registry of `cluster` into `out` until every receiver is gone; `port` is
/// this node's own API port, for nodes that do not say where theirs is.
pub async fn registry_peers(
    session: Arc<Session>,
    cluster: String,
    port: Option<u16>,
    out: watch::Sender<PeerList>,
) {
    let (tx, mut rx) = mpsc::channel::<Update>(4);
    tokio::spawn(reflect(session, keys::nodes_prefix(&cluster), tx));
    let mut m = Mirror::new();
    while let Some(update) = rx.recv().await {
        update.apply(&mut m);
        let list = peers_of(&m, port);
        out.send_if_modified(|cur| {
            let changed = *cur != list;
            *cur = list;
            changed
        });
        if out.is_closed() {
            return;
        }
    }
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
    }
}
