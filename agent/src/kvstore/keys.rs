//! Cilium's kvstore layout: where identities, ipcache entries and nodes live, and their
//! values (Cilium's JSON field names, so its tools read ours and ours read theirs).
//!
//! - `cilium/state/identities/v1/id/<id>` = the label key (`source:key=value;` per label,
//!   sorted), no lease: the master key of an identity.
//! - `cilium/state/identities/v1/value/<label key>/<node suffix>` = `<id>`, under the node's
//!   lease: one node's reference to the identity (the suffix is the node's IP, as Cilium's
//!   `GetNodeSuffix`).
//! - `cilium/state/ip/v1/<cluster>/<ip>` = JSON of Cilium's `IPIdentityPair`, under the
//!   lease of the node owning the pod. Deviation: Cilium's address space segment is always
//!   `default`; ours is the cluster name (`default` unless `--cluster-name`), so that labs
//!   of different clusters can share one etcd.
//! - `cilium/state/nodes/v1/<cluster>/<name>` = JSON of Cilium's `Node` (the fields we
//!   know), under the node's lease. Our agents add the label [`PEER_ADDRESS_LABEL`]: where
//!   their Hubble API listens, for Peer Notify (Cilium's agents derive it from the node IP
//!   and their own `--hubble-listen-address` port, as ours do for nodes without the label).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub const IDENTITIES_PATH: &str = "cilium/state/identities/v1";
pub const IP_PATH: &str = "cilium/state/ip/v1";
pub const NODES_PATH: &str = "cilium/state/nodes/v1";

/// Cilium's key of a label set: every label followed by `;`, sorted.
pub fn label_key(labels: &[String]) -> String {
    let mut sorted: Vec<&String> = labels.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted.iter().map(|l| format!("{l};")).collect()
}

/// The labels of a label key (its inverse).
pub fn labels_of_key(key: &str) -> Vec<String> {
    key.split(';')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `…/id/` and `…/id/<id>`.
pub fn id_prefix() -> String {
    format!("{IDENTITIES_PATH}/id/")
}
pub fn id_key(id: u32) -> String {
    format!("{IDENTITIES_PATH}/id/{id}")
}

/// `…/value/<label key>/`: the references to the identity of a label set.
pub fn value_prefix(label_key: &str) -> String {
    format!("{IDENTITIES_PATH}/value/{label_key}/")
}

pub fn ip_prefix(cluster: &str) -> String {
    format!("{IP_PATH}/{cluster}/")
}
pub fn ip_key(cluster: &str, ip: IpAddr) -> String {
    format!("{IP_PATH}/{cluster}/{ip}")
}

pub fn node_key(cluster: &str, name: &str) -> String {
    format!("{NODES_PATH}/{cluster}/{name}")
}
pub fn nodes_prefix(cluster: &str) -> String {
    format!("{NODES_PATH}/{cluster}/")
}

/// The node label carrying the address of the node's Hubble API (`HOST:PORT`).
pub const PEER_ADDRESS_LABEL: &str = "hubble-agent/peer-address";

/// Cilium's `identity.IPIdentityPair`, as JSON in the kvstore (Go's `net.IP` is a
/// string, `net.IPMask` base64 or null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpIdentityPair {
    #[serde(rename = "IP")]
    pub ip: IpAddr,
    #[serde(rename = "Mask")]
    pub mask: Option<String>,
    #[serde(rename = "HostIP")]
    pub host_ip: Option<IpAddr>,
    #[serde(rename = "ID")]
    pub id: u32,
    #[serde(rename = "Key")]
    pub key: u8,
    #[serde(rename = "Metadata", default)]
    pub metadata: String,
    #[serde(
        rename = "K8sNamespace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_namespace: String,
    #[serde(
        rename = "K8sPodName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_pod_name: String,
}

/// One address of Cilium's `Node` (`Type` is `InternalIP`, `ExternalIP`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "IP")]
    pub ip: IpAddr,
}

/// Cilium's `nodeTypes.Node`, the fields we fill (unknown ones are ignored on read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Cluster")]
    pub cluster: String,
    #[serde(rename = "IPAddresses", default)]
    pub ip_addresses: Vec<NodeAddress>,
    #[serde(rename = "ClusterID", default)]
    pub cluster_id: u32,
    /// Node labels (Cilium's `Labels`).
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// Cilium's `Fullname`: `cluster/name` outside the `default` cluster.
    pub fn fullname(&self) -> String {
        if self.cluster == "default" || self.cluster.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.cluster, self.name)
        }
    }

    /// Where the node's Hubble API is: its label, else its first InternalIP (any address
    /// without one) on `port`, the port this node's own API listens on (as Cilium).
    pub fn peer_address(&self, port: Option<u16>) -> Option<String> {
        if let Some(a) = self.labels.get(PEER_ADDRESS_LABEL) {
            return Some(a.clone());
        }
        let ip = self
            .ip_addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .or(self.ip_addresses.first())?
            .ip;
        Some(SocketAddr::new(ip, port?).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_are_sorted_and_terminated() {
        let labels = vec!["k8s:app=b".to_string(), "k8s:app=a".to_string()];
        let k = label_key(&labels);
        assert_eq!(k, "k8s:app=a;k8s:app=b;");
        assert_eq!(labels_of_key(&k), vec!["k8s:app=a", "k8s:app=b"]);
    }

    #[test]
    fn a_nodes_peer_address_is_its_label_or_its_ip_on_our_port() {
        let go = r#"{"Name":"n2","Cluster":"c1","IPAddresses":[{"Type":"ExternalIP","IP":"192.0.2.9"},{"Type":"InternalIP","IP":"10.1.0.2"}],"IPv4AllocCIDR":null,"ClusterID":3,"Source":"custom-resource","EncryptionKey":0,"Labels":{"kubernetes.io/os":"linux"},"NodeIdentity":0,"WireguardPubKey":""}"#;
        let mut n: Node = serde_json::from_str(go).unwrap();
        assert_eq!(n.fullname(), "c1/n2");
        assert_eq!(n.peer_address(Some(4244)).as_deref(), Some("10.1.0.2:4244"));
        assert_eq!(n.peer_address(None), None);
        n.labels
            .insert(PEER_ADDRESS_LABEL.into(), "127.0.0.1:4300".into());
        assert_eq!(n.peer_address(None).as_deref(), Some("127.0.0.1:4300"));
        n.cluster = "default".into();
        assert_eq!(n.fullname(), "n2");
    }

    #[test]
    fn ip_identity_pairs_are_ciliums_json() {
        let p = IpIdentityPair {
            ip: "10.0.0.1".parse().unwrap(),
            mask: None,
            host_ip: Some("192.168.1.1".parse().unwrap()),
            id: 256,
            key: 0,
            metadata: String::new(),
            k8s_namespace: "default".into(),
            k8s_pod_name: "client".into(),
        };
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(
            j,
            r#"{"IP":"10.0.0.1","Mask":null,"HostIP":"192.168.1.1","ID":256,"Key":0,"Metadata":"","K8sNamespace":"default","K8sPodName":"client"}"#
        );
        // What Cilium writes for a pod without a mask (NamedPorts ignored).
        let go = r#"{"IP":"10.0.0.2","Mask":null,"HostIP":"192.168.1.2","ID":300,"Key":0,"Metadata":"cilium-global:default:n:1","K8sNamespace":"ns","K8sPodName":"p","NamedPorts":[]}"#;
        let back: IpIdentityPair = serde_json::from_str(go).unwrap();
        assert_eq!(back.id, 300);
        assert_eq!(back.k8s_pod_name, "p");
    }
}
