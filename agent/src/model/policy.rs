//! Network policy as the model holds it (CiliumNetworkPolicy's shape: an endpoint selector,
//! allow and deny rules per direction) and its compilation against the node's endpoints into
//! per-endpoint (direction, peer identity, protocol, port) → allow/deny entries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::state::{EndpointInfo, IDENTITY_HOST, IDENTITY_WORLD, NodeState, PolicyRule};

/// Label key every pod carries with its namespace (as in Cilium, `k8s:io.kubernetes.pod.namespace`).
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Labels: key to value, ordered so output is stable.
pub type Labels = BTreeMap<String, String>;

/// L4 protocol of a port in a service or policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    /// TCP or UDP (Cilium's `ANY`).
    Any,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "ANY" => Some(Self::Any),
            _ => None,
        }
    }

    /// True when a port rule with protocol `self` covers traffic of protocol `other`.
    pub fn covers(self, other: Protocol) -> bool {
        self == Protocol::Any || other == Protocol::Any || self == other
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Any => "ANY",
        })
    }
}

/// One port of a service or of a policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: Protocol,
    /// Optional port name (`http`, `dns`, `postgres`): the traffic generator speaks HTTP on
    /// ports named `http*` (and 80/8080), DNS on `dns`/53, and echoes bytes otherwise.
    pub name: Option<String>,
}

/// Reserved identities a policy peer can name (Cilium's `fromEntities`/`toEntities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// Anything outside the cluster: in the lab, the world netns.
    World,
    /// The node itself (the node netns).
    Host,
    /// Every pod and the host.
    Cluster,
    /// Everything.
    All,
}

impl Entity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "world" => Some(Self::World),
            "host" => Some(Self::Host),
            "cluster" => Some(Self::Cluster),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// One peer of a policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSelector {
    /// Pods whose effective labels contain these. Scoped to the policy's namespace unless
    /// the selector names `io.kubernetes.pod.namespace` itself (Cilium semantics).
    Labels(Labels),
    Entity(Entity),
}

/// One allow or deny rule: peers (empty = any peer, when ports are given) and ports (empty = any).
/// A rule with neither peers nor ports matches nothing (Cilium's `ingress: [{}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub peers: Vec<PeerSelector>,
    pub ports: Vec<PortSpec>,
}

/// A CiliumNetworkPolicy-like policy. Selecting an endpoint with any ingress (or
/// ingress_deny) rule makes its ingress default-deny; same for egress. Deny beats allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    /// Pods of `namespace` this policy applies to (`{}` = all of them).
    pub endpoint_selector: Labels,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    pub ingress_deny: Vec<Rule>,
    pub egress_deny: Vec<Rule>,
}

/// One entry of the compiled policy: what the datapath's policy map is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyEntry {
    /// Peer identity (0 = any).
    pub identity: u32,
    pub ep_id: u16,
    /// Destination port (0 = any).
    pub port: u16,
    /// IP protocol (0 = any).
    pub proto: u8,
    pub egress: bool,
}

/// The compiled policy of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Entry → deny (true) or allow (false); deny wins when both are written.
    pub entries: BTreeMap<PolicyEntry, bool>,
    /// Endpoint id → (ingress enforced, egress enforced).
    pub enforced: BTreeMap<u16, (bool, bool)>,
    /// Entry → the policies (namespace, name) whose rules wrote it, with whether each wrote
    /// a deny.
    pub sources: BTreeMap<PolicyEntry, Vec<(usize, bool)>>,
}

const ANY: u32 = 0;

/// The value of label `key` on an endpoint (its labels are `source:key=value`).
fn label_value<'a>(ep: &'a EndpointInfo, key: &str) -> Option<&'a str> {
    ep.labels.iter().find_map(|l| {
        let kv = l.split_once(':').map_or(l.as_str(), |(_, kv)| kv);
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// True when every `key=value` of `selector` is among the endpoint's labels.
pub fn selects(selector: &Labels, ep: &EndpointInfo) -> bool {
    selector
        .iter()
        .all(|(k, v)| label_value(ep, k) == Some(v.as_str()))
}

/// Identities a peer selector stands for (0 = any).
fn peer_identities(state: &NodeState, policy_ns: &str, sel: &PeerSelector) -> Vec<u32> {
    match sel {
        PeerSelector::Entity(Entity::All) => vec![ANY],
        PeerSelector::Entity(Entity::World) => vec![IDENTITY_WORLD],
        PeerSelector::Entity(Entity::Host) => vec![IDENTITY_HOST],
        PeerSelector::Entity(Entity::Cluster) => {
            let mut v: BTreeSet<u32> = state.endpoints.iter().map(|e| e.identity).collect();
            v.insert(IDENTITY_HOST);
            v.into_iter().collect()
        }
        PeerSelector::Labels(l) => {
            let ids: BTreeSet<u32> = state
                .endpoints
                .iter()
                .filter(|e| {
                    (l.contains_key(NAMESPACE_LABEL) || e.namespace == policy_ns) && selects(l, e)
                })
                .map(|e| e.identity)
                .collect();
            ids.into_iter().collect()
        }
    }
}

/// (proto, port) pairs a rule's ports stand for; (0, 0) = any.
fn rule_ports(rule: &Rule) -> Vec<(u8, u16)> {
    if rule.ports.is_empty() {
        return vec![(0, 0)];
    }
    let mut v = Vec::new();
    for p in &rule.ports {
        match p.protocol {
            Protocol::Tcp => v.push((6, p.port)),
            Protocol::Udp => v.push((17, p.port)),
            Protocol::Any => {
                v.push((6, p.port));
                v.push((17, p.port));
                v.push((132, p.port));
            }
        }
    }
    v
}

/// Compiles `policies` against the endpoints of `state`: a policy applies to the endpoints
/// of its namespace its selector matches; selecting an endpoint with any rule of a direction
/// makes that direction default-deny (Cilium's semantics).
pub fn compile(policies: &[Policy], state: &NodeState) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    for ep in &state.endpoints {
        let mut enforced = (false, false);
        for (pol_idx, pol) in policies.iter().enumerate() {
            if pol.namespace != ep.namespace || !selects(&pol.endpoint_selector, ep) {
                continue;
            }
            let dirs: [(&[Rule], bool, bool); 4] = [
                (&pol.ingress, false, false),
                (&pol.ingress_deny, false, true),
                (&pol.egress, true, false),
                (&pol.egress_deny, true, true),
            ];
            for (rules, egress, deny) in dirs {
                if rules.is_empty() {
                    continue;
                }
                if egress {
                    enforced.1 = true;
                } else {
                    enforced.0 = true;
                }
                for rule in rules {
                    if rule.peers.is_empty() && rule.ports.is_empty() {
                        continue;
                    }
                    let ids = if rule.peers.is_empty() {
                        vec![ANY]
                    } else {
                        let mut s = BTreeSet::new();
                        for sel in &rule.peers {
                            s.extend(peer_identities(state, &pol.namespace, sel));
                        }
                        s.into_iter().collect()
                    };
                    for id in ids {
                        for (proto, port) in rule_ports(rule) {
                            let key = PolicyEntry {
                                identity: id,
                                ep_id: ep.id,
                                port,
                                proto,
                                egress,
                            };
                            *out.entries.entry(key).or_insert(false) |= deny;
                            let src = out.sources.entry(key).or_default();
                            if !src.contains(&(pol_idx, deny)) {
                                src.push((pol_idx, deny));
                            }
                        }
                    }
                }
            }
        }
        out.enforced.insert(ep.id, enforced);
    }
    out
}

/// The policies behind the compiled entries, for flows' `*_allowed_by` / `*_denied_by`.
pub fn rules(policies: &[Policy], compiled: &CompiledPolicy) -> Vec<PolicyRule> {
    compiled
        .sources
        .iter()
        .flat_map(|(k, srcs)| {
            srcs.iter().map(move |(idx, deny)| {
                let p = &policies[*idx];
                PolicyRule {
                    ep_id: k.ep_id,
                    egress: k.egress,
                    identity: k.identity,
                    proto: k.proto,
                    port: k.port,
                    deny: *deny,
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                }
            })
        })
        .collect()
}
