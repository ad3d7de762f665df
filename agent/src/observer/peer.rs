//! `peer.Peer`: Notify announces this node first, then the other nodes it knows (a
//! multi-node lab's list, or the kvstore's registry), and follows that list: a node that
//! joins is PEER_ADDED, one that moved PEER_UPDATED, one that left PEER_DELETED.

use std::collections::BTreeMap;
use std::pin::Pin;

use hubble_api::peer::peer_server::Peer;
use hubble_api::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest, Tls};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// (node name as flows carry it, `HOST:PORT`).
pub type PeerList = Vec<(String, String)>;

type NotifyStream = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[derive(Clone)]
pub struct PeerService {
    node_name: String,
    address: String,
    /// Other nodes (name, address), announced after this one with the same TLS setting.
    others: watch::Receiver<PeerList>,
    /// The TLS server name clients should check, when the TCP listener speaks TLS.
    tls_server_name: Option<String>,
}

impl PeerService {
    pub fn new(node_name: impl Into<String>, address: impl Into<String>) -> Self {
        PeerService {
            node_name: node_name.into(),
            address: address.into(),
            others: watch::channel(PeerList::new()).1,
            tls_server_name: None,
        }
    }

    /// Also announces these nodes, followed as they change (an entry named like this node
    /// is left out: it comes first, at its own address).
    pub fn with_others(mut self, others: watch::Receiver<PeerList>) -> Self {
        self.others = others;
        self
    }

    /// Announces that the node's address speaks TLS with certificates for `server_name`.
    pub fn with_tls(mut self, server_name: Option<String>) -> Self {
        self.tls_server_name = server_name;
        self
    }
}

/// Hubble's per-node TLS server name, `<node>.<cluster>.hubble-grpc.cilium.io`, from a
/// node name as flows carry it (`cluster/node`, or `node` in the default cluster); dots in
/// the cluster name become dashes, as in Cilium's certificates.
pub fn tls_server_name(node_name: &str) -> String {
    let (cluster, node) = node_name.split_once('/').unwrap_or(("default", node_name));
    format!("{node}.{}.hubble-grpc.cilium.io", cluster.replace('.', "-"))
}

fn notification(
    name: &str,
    address: &str,
    kind: ChangeNotificationType,
    tls: bool,
) -> ChangeNotification {
    ChangeNotification {
        name: name.to_string(),
        address: address.to_string(),
        r#type: kind as i32,
        tls: tls.then(|| Tls {
            server_name: tls_server_name(name),
        }),
    }
}

/// What a client that was told `sent` must be told to know `now`.
fn changes(
    sent: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
    tls: bool,
) -> Vec<ChangeNotification> {
    let mut out = Vec::new();
    for (name, address) in now {
        match sent.get(name) {
            None => out.push(notification(
                name,
                address,
                ChangeNotificationType::PeerAdded,
                tls,
            )),
            Some(a) if a != address => out.push(notification(
                name,
                address,
                ChangeNotificationType::PeerUpdated,
                tls,
            )),
            Some(_) => {}
        }
    }
    for (name, address) in sent.iter().filter(|(n, _)| !now.contains_key(*n)) {
        out.push(notification(
            name,
            address,
            ChangeNotificationType::PeerDeleted,
            tls,
        ));
    }
    out
}

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = NotifyStream;

    async fn notify(
        &self,
        _req: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let me = ChangeNotification {
            name: self.node_name.clone(),
            address: self.address.clone(),
            r#type: ChangeNotificationType::PeerAdded as i32,
            tls: self
                .tls_server_name
                .clone()
                .map(|server_name| Tls { server_name }),
        };
        let tls = self.tls_server_name.is_some();
        let own = self.node_name.clone();
        let mut others = self.others.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            if tx.send(Ok(me)).await.is_err() {
                return;
            }
            let mut sent = BTreeMap::new();
            loop {
                let now: BTreeMap<String, String> = others
                    .borrow_and_update()
                    .iter()
                    .filter(|(name, _)| *name != own)
                    .cloned()
                    .collect();
                for cn in changes(&sent, &now, tls) {
                    if tx.send(Ok(cn)).await.is_err() {
                        return;
                    }
                }
                sent = now;
                tokio::select! {
                    r = others.changed() => if r.is_err() {
                        // A fixed list: nothing more to say while the client listens.
                        tx.closed().await;
                        return;
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_moves_and_departures_become_notifications() {
        let m = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect()
        };
        let sent = m(&[("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")]);
        let now = m(&[("b", "127.0.0.1:3"), ("c", "127.0.0.1:4")]);
        let got: Vec<(String, i32, bool)> = changes(&sent, &now, true)
            .into_iter()
            .map(|c| (c.name, c.r#type, c.tls.is_some()))
            .collect();
        use ChangeNotificationType as T;
        assert_eq!(
            got,
            [
                ("b".to_string(), T::PeerUpdated as i32, true),
                ("c".to_string(), T::PeerAdded as i32, true),
                ("a".to_string(), T::PeerDeleted as i32, true),
            ]
        );
        assert!(changes(&now, &now, false).is_empty());
    }
}
