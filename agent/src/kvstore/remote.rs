//! Other nodes' pods as the model's remote endpoints: the ipcache and identities prefixes
//! mirrored, each entry of another host named with its pod, namespace, identity and the
//! identity's labels (`kvstore:<ip>`), sent as upserts and removals when either changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::keys::{self, IpIdentityPair};
use super::reflect::{Mirror, reflect};
use super::session::Session;
use crate::model::{Change, EndpointSpec};

/// The node's addresses, shared with the remote watcher (entries of these hosts are ours).
pub type HostIps = Arc<Mutex<BTreeSet<IpAddr>>>;

/// Other nodes' ipcache entries, named with the identities' labels, as remote endpoints
/// (`kvstore:<ip>`): sent to `out` as upserts and removals whenever either mirror changes.
pub async fn remote_endpoints(
    session: Arc<Session>,
    cluster: String,
    host_ips: HostIps,
    out: mpsc::Sender<Vec<Change>>,
) {
    let (ip_tx, mut ip_rx) = mpsc::channel::<Mirror>(4);
    let (id_tx, mut id_rx) = mpsc::channel::<Mirror>(4);
    tokio::spawn(reflect(session.clone(), keys::ip_prefix(&cluster), ip_tx));
    tokio::spawn(reflect(session, keys::id_prefix(), id_tx));
    let (mut ips, mut ids) = (Mirror::new(), Mirror::new());
    let mut pairs = Pairs::default();
    let mut sent: BTreeMap<String, EndpointSpec> = BTreeMap::new();
    loop {
        tokio::select! {
            Some(m) = ip_rx.recv() => ips = m,
            Some(m) = id_rx.recv() => ids = m,
            else => return,
        }
        // Each message is a whole mirror: of those queued meanwhile only the last counts.
        while let Ok(m) = ip_rx.try_recv() {
            ips = m;
        }
        while let Ok(m) = id_rx.try_recv() {
            ids = m;
        }
        pairs.update(&ips);
        let ours = host_ips.lock().expect("host ips").clone();
        let now = remote_specs(&pairs, &ids, &ours);
        let mut batch = Vec::new();
        for (key, spec) in &now {
            if sent.get(key) != Some(spec) {
                batch.push(Change::EndpointUpsert(spec.clone()));
            }
        }
        for key in sent.keys().filter(|k| !now.contains_key(*k)) {
            batch.push(Change::EndpointRemove { key: key.clone() });
        }
        sent = now;
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return;
        }
    }
}

/// The ipcache mirror's entries parsed, each parsed again only when its value changed.
#[derive(Default)]
struct Pairs(BTreeMap<String, (Vec<u8>, Option<IpIdentityPair>)>);

impl Pairs {
    fn update(&mut self, ips: &Mirror) {
        self.0.retain(|k, _| ips.contains_key(k));
        for (k, v) in ips {
            if self.0.get(k).is_some_and(|(raw, _)| raw == v) {
                continue;
            }
            let parsed = serde_json::from_slice::<IpIdentityPair>(v).ok();
            self.0.insert(k.clone(), (v.clone(), parsed));
        }
    }

    fn iter(&self) -> impl Iterator<Item = &IpIdentityPair> {
        self.0.values().filter_map(|(_, p)| p.as_ref())
    }
}

/// The remote endpoints of the parsed ipcache (entries of `ours` hosts left out).
fn remote_specs(
    ips: &Pairs,
    ids: &Mirror,
    ours: &BTreeSet<IpAddr>,
) -> BTreeMap<String, EndpointSpec> {
    let mut specs = BTreeMap::new();
    for pair in ips.iter() {
        if pair.host_ip.is_some_and(|h| ours.contains(&h)) {
            continue;
        }
        let labels = ids
            .get(&pair.id.to_string())
            .map(|v| keys::labels_of_key(&String::from_utf8_lossy(v)))
            .unwrap_or_default();
        let key = format!("kvstore:{}", pair.ip);
        specs.insert(
            key.clone(),
            EndpointSpec {
                key,
                namespace: pair.k8s_namespace.clone(),
                pod_name: pair.k8s_pod_name.clone(),
                labels,
                workload: None,
                ips: vec![pair.ip],
                ifname: String::new(),
                attach: false,
                l7: Vec::new(),
                identity: Some(pair.id),
            },
        );
    }
    specs
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
        let ours: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into();
        let mut pairs = Pairs::default();
        pairs.update(&ips);
        let specs = remote_specs(&pairs, &ids, &ours);
        assert_eq!(specs.keys().collect::<Vec<_>>(), ["kvstore:10.0.1.10"]);
        let s = &specs["kvstore:10.0.1.10"];
        assert_eq!((s.identity, s.attach), (Some(300), false));
        assert_eq!((s.namespace.as_str(), s.pod_name.as_str()), ("kv", "far"));
        assert_eq!(s.labels, ["k8s:app=far", "k8s:x=y"]);
    }

    #[test]
    fn parsed_entries_follow_the_mirror() {
        let mut pairs = Pairs::default();
        let mut ips: Mirror = [("a".to_string(), pair("10.0.1.10", "10.0.1.1", 300, "one"))].into();
        pairs.update(&ips);
        ips.insert("a".into(), pair("10.0.1.10", "10.0.1.1", 301, "two"));
        ips.insert("b".into(), pair("10.0.1.11", "10.0.1.1", 302, "three"));
        pairs.update(&ips);
        let ids: Vec<u32> = pairs.iter().map(|p| p.id).collect();
        assert_eq!(ids, [301, 302], "a changed value is parsed again");
        ips.remove("a");
        pairs.update(&ips);
        assert_eq!(pairs.iter().map(|p| p.id).collect::<Vec<_>>(), [302]);
    }
}
