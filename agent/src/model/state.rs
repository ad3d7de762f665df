//! The node's state as the flow builder looks it up: endpoints, identities, ipcache,
//! services and policy correlation, a snapshot the model rebuilds on every change and
//! recordings serialize so they can be replayed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Reserved identities (Cilium's numbers).
pub const IDENTITY_UNKNOWN: u32 = 0;
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_REMOTE_NODE: u32 = 6;
/// First identity allocated to a label set.
pub const MIN_ALLOCATED_IDENTITY: u32 = 256;
/// Cilium's local identities (scope 1 << 24): the model gives one to each CIDR prefix a
/// policy names, from `IDENTITY_LOCAL_BASE + 1`.
pub const IDENTITY_LOCAL_BASE: u32 = 1 << 24;
/// The label of a CIDR identity (`cidr:10.0.0.0/8`), beside `reserved:world`.
pub const CIDR_LABEL_SOURCE: &str = "cidr:";

/// Labels of a reserved identity, as Hubble shows them.
pub fn reserved_labels(identity: u32) -> Option<&'static [&'static str]> {
    Some(match identity {
        1 => &["reserved:host"],
        2 => &["reserved:world"],
        3 => &["reserved:unmanaged"],
        4 => &["reserved:health"],
        5 => &["reserved:init"],
        6 => &["reserved:remote-node"],
        7 => &["reserved:kube-apiserver"],
        8 => &["reserved:ingress"],
        9 => &["reserved:world-ipv4"],
        10 => &["reserved:world-ipv6"],
        _ => return None,
    })
}

/// An endpoint the node knows: one of its own (a lab pod it runs, a container) or a remote
/// one (another node's pod, known from the lab spec or the kvstore's ipcache).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub id: u16,
    pub identity: u32,
    pub cluster: String,
    pub namespace: String,
    pub pod_name: String,
    /// Sorted `source:key=value` labels.
    pub labels: Vec<String>,
    /// (kind, name)
    pub workload: Option<(String, String)>,
    pub ips: Vec<IpAddr>,
    /// Host-side veth in the node netns.
    pub ifname: String,
    /// Its ifindex (0 when not known, e.g. a state built without the lab).
    pub ifindex: u32,
    /// The node's own endpoint (its datapath attaches there); a remote one is only named
    /// in flows, without endpoint id or workload, as Hubble names other nodes' pods.
    #[serde(default = "own")]
    pub local: bool,
}

/// Endpoints recorded before remote ones were told apart were all the node's own.
fn own() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    /// Endpoint ids of the backends.
    pub backends: Vec<u16>,
    /// (port, "TCP" | "UDP" | "ANY")
    pub ports: Vec<(u16, String)>,
}

/// One compiled policy entry and the policy it came from (for policy correlation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub ep_id: u16,
    pub egress: bool,
    /// 0 = any identity; `proto` 0 = any protocol; `port` 0 = any port.
    pub identity: u32,
    pub proto: u8,
    pub port: u16,
    pub deny: bool,
    pub name: String,
    pub namespace: String,
}

/// The node's view, shared by the datapath loader (maps) and enrichment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub cluster: String,
    pub node: String,
    /// Addresses of the node itself (identity host).
    pub host_ips: Vec<IpAddr>,
    /// Addresses of the cluster's other nodes (identity remote-node; absent in older
    /// recordings).
    #[serde(default)]
    pub remote_node_ips: Vec<IpAddr>,
    pub endpoints: Vec<EndpointInfo>,
    pub services: Vec<ServiceInfo>,
    /// Allocated identity → labels.
    pub identities: BTreeMap<u32, Vec<String>>,
    /// Compiled policy entries with their policies (absent in older recordings).
    #[serde(default)]
    pub policy_rules: Vec<PolicyRule>,
    /// Lookup tables over `endpoints` and `services`, built on first use.
    #[serde(skip)]
    pub index: LookupIndex,
}

type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Hash tables for the per-flow lookups (endpoint by address, services by port), built on
/// first use from a NodeState's `endpoints` and `services`, which do not change once the
/// state is built. Never serialized; compares equal; a clone starts empty.
#[derive(Default)]
pub struct LookupIndex(OnceLock<Index>);

struct Index {
    /// Address → position in `endpoints` (the first endpoint with it).
    by_ip: FastMap<IpAddr, usize>,
    /// (port, IP protocol) → positions in `services`, in order.
    by_port: FastMap<(u16, u8), Vec<usize>>,
}

impl LookupIndex {
    fn get(&self, state: &NodeState) -> &Index {
        self.0.get_or_init(|| {
            let mut by_ip = FastMap::default();
            for (i, e) in state.endpoints.iter().enumerate() {
                for ip in &e.ips {
                    by_ip.entry(*ip).or_insert(i);
                }
            }
            let mut by_port: FastMap<(u16, u8), Vec<usize>> = FastMap::default();
            for (i, s) in state.services.iter().enumerate() {
                for (port, proto) in &s.ports {
                    let protos: &[u8] = match proto.as_str() {
                        "TCP" => &[6],
                        "UDP" => &[17],
                        _ => &[6, 17],
                    };
                    for p in protos {
                        let v = by_port.entry((*port, *p)).or_default();
                        if v.last() != Some(&i) {
                            v.push(i);
                        }
                    }
                }
            }
            Index { by_ip, by_port }
        })
    }
}

impl Clone for LookupIndex {
    fn clone(&self) -> Self {
        LookupIndex::default()
    }
}

impl PartialEq for LookupIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LookupIndex {}

impl std::fmt::Debug for LookupIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupIndex")
    }
}

impl NodeState {
    /// The CIDR identities (local identities labelled `cidr:<prefix>`) and their prefixes.
    pub fn cidr_identities(&self) -> impl Iterator<Item = (ipnet::IpNet, u32)> + '_ {
        self.identities
            .range(IDENTITY_LOCAL_BASE..)
            .filter_map(|(id, labels)| {
                let net = labels
                    .iter()
                    .find_map(|l| l.strip_prefix(CIDR_LABEL_SOURCE)?.parse().ok())?;
                Some((net, *id))
            })
    }

    /// The identity of the longest CIDR prefix holding `ip` (none when no prefix does).
    pub fn cidr_identity_of(&self, ip: IpAddr) -> Option<u32> {
        self.cidr_identities()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, id)| id)
    }

    /// The endpoint holding `ip` (the first one, when several claim it).
    pub fn endpoint_with_ip(&self, ip: IpAddr) -> Option<&EndpointInfo> {
        let i = *self.index.get(self).by_ip.get(&ip)?;
        self.endpoints.get(i)
    }

    /// Services with a port `port`/`proto`, in order (none for most ports).
    pub fn services_on_port(
        &self,
        port: u16,
        proto: u8,
    ) -> Option<impl Iterator<Item = &ServiceInfo>> {
        let on_port = self.index.get(self).by_port.get(&(port, proto))?;
        Some(on_port.iter().map(|&i| &self.services[i]))
    }

    /// Hubble's node name: `cluster/node` unless the cluster is `default`.
    pub fn node_name(&self) -> String {
        if self.cluster.is_empty() || self.cluster == "default" {
            self.node.clone()
        } else {
            format!("{}/{}", self.cluster, self.node)
        }
    }
}
