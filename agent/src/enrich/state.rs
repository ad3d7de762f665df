//! What the agent knows about its node: endpoints, identities, ipcache, services and
//! interfaces, built from a lab spec and serializable so recordings can be replayed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{EndpointGetter, IdentityGetter, IpcacheGetter, PolicyGetter, ServiceGetter};
use crate::lab::spec::LabSpec;

/// Reserved identities (Cilium's numbers).
pub const IDENTITY_UNKNOWN: u32 = 0;
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
/// First identity allocated to a label set.
pub const MIN_ALLOCATED_IDENTITY: u32 = 256;

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

/// A local endpoint (a lab pod).
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

/// Endpoint ids: small, stable, Cilium-like numbers per pod position in the spec.
pub fn endpoint_id(pod_index: usize) -> u16 {
    100 + pod_index as u16
}

impl NodeState {
    /// Builds the state of a lab. `ifindex` resolves a host-side veth name (0 when unknown).
    pub fn from_spec(spec: &LabSpec, ifindex: impl Fn(&str) -> u32) -> NodeState {
        let cluster = spec.lab.cluster.clone();
        // One identity per unique label set, numbered in label order from 256.
        let mut sets: BTreeMap<Vec<String>, u32> = spec
            .pods
            .iter()
            .map(|p| (p.k8s_labels(&cluster), 0))
            .collect();
        for (i, id) in sets.values_mut().enumerate() {
            *id = MIN_ALLOCATED_IDENTITY + i as u32;
        }
        let endpoints = spec
            .pods
            .iter()
            .map(|p| {
                let labels = p.k8s_labels(&cluster);
                EndpointInfo {
                    id: endpoint_id(p.index),
                    identity: sets[&labels],
                    cluster: cluster.clone(),
                    namespace: p.namespace.clone(),
                    pod_name: p.name.clone(),
                    labels,
                    workload: p
                        .workload
                        .as_ref()
                        .map(|w| (w.kind.clone(), w.name.clone())),
                    ips: vec![IpAddr::V4(p.ipv4), IpAddr::V6(p.ipv6)],
                    ifname: p.host_veth.clone(),
                    ifindex: ifindex(&p.host_veth),
                }
            })
            .collect();
        let services = spec
            .services
            .iter()
            .map(|s| ServiceInfo {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                backends: spec
                    .service_backends(s)
                    .iter()
                    .map(|p| endpoint_id(p.index))
                    .collect(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| (p.port, p.protocol.to_string()))
                    .collect(),
            })
            .collect();
        NodeState {
            cluster,
            node: spec.lab.node.clone(),
            host_ips: vec![
                IpAddr::V4(spec.lab.node_ipv4),
                IpAddr::V6(spec.lab.node_ipv6),
                IpAddr::V4(spec.world_gateway_ipv4()),
                IpAddr::V6(spec.world_gateway_ipv6()),
            ],
            endpoints,
            services,
            identities: sets.into_iter().map(|(l, id)| (id, l)).collect(),
            policy_rules: Vec::new(),
            index: LookupIndex::default(),
        }
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

impl EndpointGetter for NodeState {
    fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&EndpointInfo> {
        let i = *self.index.get(self).by_ip.get(&ip)?;
        self.endpoints.get(i)
    }

    fn endpoint_by_id(&self, id: u16) -> Option<&EndpointInfo> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    fn interface_name(&self, ifindex: u32) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|e| e.ifindex == ifindex && ifindex != 0)
            .map(|e| e.ifname.as_str())
    }
}

impl IdentityGetter for NodeState {
    fn labels_of(&self, identity: u32) -> Option<&[String]> {
        self.identities.get(&identity).map(Vec::as_slice)
    }
}

impl IpcacheGetter for NodeState {
    fn identity_of(&self, ip: IpAddr) -> u32 {
        if let Some(e) = self.endpoint_by_ip(ip) {
            e.identity
        } else if self.host_ips.contains(&ip) {
            IDENTITY_HOST
        } else {
            IDENTITY_WORLD
        }
    }
}

impl ServiceGetter for NodeState {
    fn service_of(&self, ip: IpAddr, port: u16, proto: u8) -> Option<(&str, &str)> {
        // Most ports (ephemeral ones) belong to no service: skip the endpoint lookup then.
        let on_port = self.index.get(self).by_port.get(&(port, proto))?;
        let ep = self.endpoint_by_ip(ip)?;
        on_port
            .iter()
            .map(|&i| &self.services[i])
            .find(|s| s.backends.contains(&ep.id))
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
    }
}

impl PolicyGetter for NodeState {
    fn policies_matching(
        &self,
        ep_id: u16,
        egress: bool,
        identity: u32,
        proto: u8,
        port: u16,
        deny: bool,
    ) -> Vec<(&str, &str)> {
        self.policy_rules
            .iter()
            .filter(|r| {
                r.ep_id == ep_id
                    && r.egress == egress
                    && r.identity == identity
                    && r.proto == proto
                    && r.port == port
                    && r.deny == deny
            })
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            .collect()
    }
}
