//! Other nodes' pods as the model's remote endpoints: the ipcache and identities prefixes
//! mirrored, each entry of another host named with its pod, namespace, identity and the
//! identity's labels (`kvstore:<ip>`), sent as upserts and removals when either changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::keys::{self, IpIdentityPair};
use super::reflect::{Mirror, Update, reflect};
use super::session::Session;
use crate::model::{Change, EndpointSpec};

/// The node's addresses, shared with the remote watcher (entries of these hosts are ours).
pub type HostIps = Arc<Mutex<BTreeSet<IpAddr>>>;

/// Other nodes' ipcache entries, named with the identities' labels, as remote endpoints
/// (`kvstore:<ip>`): sent to `out` as upserts and removals whenever either prefix changes.
/// The updates queued meanwhile are taken together: one batch for all of them.
pub async fn remote_endpoints(
    session: Arc<Session>,
    cluster: String,
    host_ips: HostIps,
    out: mpsc::Sender<Vec<Change>>,
) {
    let (ip_tx, mut ip_rx) = mpsc::channel::<Update>(64);
    let (id_tx, mut id_rx) = mpsc::channel::<Update>(64);
    tokio::spawn(reflect(session.clone(), keys::ip_prefix(&cluster), ip_tx));
    tokio::spawn(reflect(session, keys::id_prefix(), id_tx));
    let mut remote = Remote::default();
    loop {
        tokio::select! {
            Some(u) = ip_rx.recv() => remote.ipcache(u),
            Some(u) = id_rx.recv() => remote.identities(u),
            else => return,
        }
        while let Ok(u) = ip_rx.try_recv() {
            remote.ipcache(u);
        }
        while let Ok(u) = id_rx.try_recv() {
            remote.identities(u);
        }
        remote.hosts(&host_ips.lock().expect("host ips"));
        let batch = remote.changes();
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return;
        }
    }
}

/// The remote endpoints as the mirrored prefixes give them, kept up to date one changed key
/// at a time: a changed ipcache entry, or a changed identity (the entries naming it), marks
/// what [`Remote::changes`] looks at again.
#[derive(Default)]
struct Remote {
    /// ipcache key → its entry (values that are no entry JSON are left out).
    pairs: BTreeMap<String, IpIdentityPair>,
    /// Identity → the ipcache keys naming it.
    by_id: BTreeMap<u32, BTreeSet<String>>,
    /// Identity (`id/<n>`'s `n`) → its label key.
    ids: Mirror,
    /// This node's addresses: entries of these hosts are not remote.
    ours: BTreeSet<IpAddr>,
    /// ipcache key → the endpoint last sent for it.
    sent: BTreeMap<String, EndpointSpec>,
    /// ipcache keys to look at again.
    dirty: BTreeSet<String>,
}

impl Remote {
    fn ipcache(&mut self, update: Update) {
        match update {
            Update::Listed(m) => {
                self.dirty.extend(self.pairs.keys().cloned());
                self.pairs.clear();
                self.by_id.clear();
                for (key, value) in m {
                    self.set_pair(key, Some(value));
                }
            }
            Update::Changed(changes) => {
                for (key, value) in changes {
                    self.set_pair(key, value);
                }
            }
        }
    }

    fn set_pair(&mut self, key: String, value: Option<Vec<u8>>) {
        if let Some(old) = self.pairs.remove(&key)
            && let Some(keys) = self.by_id.get_mut(&old.id)
        {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_id.remove(&old.id);
            }
        }
        let parsed = value.and_then(|v| serde_json::from_slice::<IpIdentityPair>(&v).ok());
        if let Some(pair) = parsed {
            self.by_id.entry(pair.id).or_default().insert(key.clone());
            self.pairs.insert(key.clone(), pair);
        }
        self.dirty.insert(key);
    }

    fn identities(&mut self, update: Update) {
        let changed: Vec<String> = match &update {
            Update::Listed(m) => {
                let gone = self.ids.keys().filter(|k| !m.contains_key(*k));
                let new = m.iter().filter(|(k, v)| self.ids.get(*k) != Some(*v));
                gone.chain(new.map(|(k, _)| k)).cloned().collect()
            }
            Update::Changed(changes) => changes.iter().map(|(k, _)| k.clone()).collect(),
        };
        for id in changed.iter().filter_map(|k| k.parse::<u32>().ok()) {
            if let Some(keys) = self.by_id.get(&id) {
                self.dirty.extend(keys.iter().cloned());
            }
        }
        update.apply(&mut self.ids);
    }

    /// This node's addresses as they are now (a change looks at every entry again).
    fn hosts(&mut self, ours: &BTreeSet<IpAddr>) {
        if self.ours != *ours {
            self.ours = ours.clone();
            self.dirty.extend(self.pairs.keys().cloned());
        }
    }

    /// Upserts and removals for the keys marked since the last call.
    fn changes(&mut self) -> Vec<Change> {
        let mut batch = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let now = self.pairs.get(&key).and_then(|p| self.spec_of(p));
            let before = self.sent.remove(&key);
            if let Some(old) = &before
                && now.as_ref().is_none_or(|n| n.key != old.key)
            {
                batch.push(Change::EndpointRemove {
                    key: old.key.clone(),
                });
            }
            if let Some(spec) = now {
                if before.as_ref() != Some(&spec) {
                    batch.push(Change::EndpointUpsert(spec.clone()));
                }
                self.sent.insert(key, spec);
            }
        }
        batch
    }

    /// The remote endpoint of an entry (none for this node's own).
    fn spec_of(&self, pair: &IpIdentityPair) -> Option<EndpointSpec> {
        if pair.host_ip.is_some_and(|h| self.ours.contains(&h)) {
            return None;
        }
        let labels = self
            .ids
            .get(&pair.id.to_string())
            .map(|v| keys::labels_of_key(&String::from_utf8_lossy(v)))
            .unwrap_or_default();
        Some(EndpointSpec {
            key: format!("kvstore:{}", pair.ip),
            namespace: pair.k8s_namespace.clone(),
            pod_name: pair.k8s_pod_name.clone(),
            labels,
            workload: None,
            ips: vec![pair.ip],
            ifname: String::new(),
            attach: false,
            l7: Vec::new(),
            identity: Some(pair.id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(ip: &str, host: &str, id: u32, pod: &str) -> Vec<u8> {
        serde_json::to_vec(&IpIdentityPair {
            ip: ip.parse().unwrap(),
            mask: None,
            host_ip: Some(host.parse().unwrap()),
            id,
            key: 0,
            metadata: String::new(),
            k8s_namespace: "kv".into(),
            k8s_pod_name: pod.into(),
        })
        .unwrap()
    }

    fn upserts(batch: &[Change]) -> Vec<(&str, &[String])> {
        batch
            .iter()
            .filter_map(|c| match c {
                Change::EndpointUpsert(s) => Some((s.key.as_str(), s.labels.as_slice())),
                _ => None,
            })
            .collect()
    }

    fn removals(batch: &[Change]) -> Vec<&str> {
        batch
            .iter()
            .filter_map(|c| match c {
                Change::EndpointRemove { key } => Some(key.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn other_nodes_entries_become_named_remote_endpoints() {
        let ips: Mirror = [
            (
                "10.0.1.10".to_string(),
                pair("10.0.1.10", "10.0.1.1", 300, "far"),
            ),
            (
                "10.0.0.10".to_string(),
                pair("10.0.0.10", "10.0.0.1", 256, "ours"),
            ),
            ("10.0.1.11".to_string(), b"not json".to_vec()),
        ]
        .into();
        let ids: Mirror = [("300".to_string(), b"k8s:app=far;k8s:x=y;".to_vec())].into();
        let mut remote = Remote::default();
        remote.ipcache(Update::Listed(ips));
        remote.identities(Update::Listed(ids));
        remote.hosts(&["10.0.0.1".parse().unwrap()].into());
        let batch = remote.changes();
        assert_eq!(batch.len(), 1, "{batch:?}");
        let Change::EndpointUpsert(s) = &batch[0] else {
            panic!("{batch:?}")
        };
        assert_eq!(s.key, "kvstore:10.0.1.10");
        assert_eq!((s.identity, s.attach), (Some(300), false));
        assert_eq!((s.namespace.as_str(), s.pod_name.as_str()), ("kv", "far"));
        assert_eq!(s.labels, ["k8s:app=far", "k8s:x=y"]);
        assert!(remote.changes().is_empty(), "nothing changed since");
    }

    #[test]
    fn only_what_changed_is_sent_again() {
        let mut remote = Remote::default();
        remote.hosts(&["10.0.0.1".parse().unwrap()].into());
        remote.ipcache(Update::Listed(
            [
                ("a".to_string(), pair("10.0.1.10", "10.0.1.1", 300, "one")),
                ("b".to_string(), pair("10.0.1.11", "10.0.1.1", 301, "two")),
            ]
            .into(),
        ));
        remote.identities(Update::Listed(Mirror::new()));
        let first = remote.changes();
        let no_labels: &[String] = &[];
        assert_eq!(
            upserts(&first),
            [
                ("kvstore:10.0.1.10", no_labels),
                ("kvstore:10.0.1.11", no_labels)
            ]
        );
        // An identity's labels arrive: only the entry naming it is sent again.
        remote.identities(Update::Changed(vec![(
            "301".into(),
            Some(b"k8s:app=two;".to_vec()),
        )]));
        let labelled = remote.changes();
        assert_eq!(
            upserts(&labelled),
            [("kvstore:10.0.1.11", &["k8s:app=two".to_string()][..])]
        );
        // The same list again (a resync) changes nothing.
        remote.identities(Update::Listed(
            [("301".to_string(), b"k8s:app=two;".to_vec())].into(),
        ));
        assert!(remote.changes().is_empty());
        // An entry deleted, another now this node's: both removed; an unparsable value too.
        remote.ipcache(Update::Changed(vec![
            ("a".into(), None),
            ("b".into(), Some(pair("10.0.1.11", "10.0.0.1", 301, "two"))),
            ("c".into(), Some(b"{".to_vec())),
        ]));
        let gone = remote.changes();
        assert_eq!(removals(&gone), ["kvstore:10.0.1.10", "kvstore:10.0.1.11"]);
        assert!(upserts(&gone).is_empty());
        // A list after a reconnect drops what it no longer has.
        remote.ipcache(Update::Changed(vec![(
            "d".into(),
            Some(pair("10.0.1.12", "10.0.1.1", 301, "three")),
        )]));
        assert_eq!(upserts(&remote.changes()).len(), 1);
        remote.ipcache(Update::Listed(Mirror::new()));
        assert_eq!(removals(&remote.changes()), ["kvstore:10.0.1.12"]);
    }
}
