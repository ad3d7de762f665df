//! Policy compilation: the lab's CiliumNetworkPolicy-like rules become per-endpoint
//! (direction, peer identity, protocol, port) → allow/deny entries for the `hl_policy` map.

use std::collections::{BTreeMap, BTreeSet};

use crate::enrich::state::{IDENTITY_HOST, IDENTITY_WORLD, NodeState, endpoint_id};
use crate::lab::spec::{Entity, LabSpec, NAMESPACE_LABEL, PeerSelector, Protocol, Rule};

use super::maps::PolicyKey;

/// The compiled policy of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Key → deny (true) or allow (false); deny wins when both are written.
    pub entries: BTreeMap<PolicyKey, bool>,
    /// Endpoint id → (ingress enforced, egress enforced).
    pub enforced: BTreeMap<u16, (bool, bool)>,
}

const ANY: u32 = 0;

/// Identities a peer selector stands for (0 = any).
fn peer_identities(
    spec: &LabSpec,
    state: &NodeState,
    policy_ns: &str,
    sel: &PeerSelector,
) -> Vec<u32> {
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
            let ids: BTreeSet<u32> = spec
                .pods
                .iter()
                .filter(|p| {
                    (l.contains_key(NAMESPACE_LABEL) || p.namespace == policy_ns) && p.matches(l)
                })
                .filter_map(|p| {
                    state
                        .endpoints
                        .iter()
                        .find(|e| e.id == endpoint_id(p.index))
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

pub fn compile(spec: &LabSpec, state: &NodeState) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    for pod in &spec.pods {
        let ep = endpoint_id(pod.index);
        let mut enforced = (false, false);
        for pol in spec.policies_for(pod) {
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
                            s.extend(peer_identities(spec, state, &pol.namespace, sel));
                        }
                        s.into_iter().collect()
                    };
                    for id in ids {
                        for (proto, port) in rule_ports(rule) {
                            let key = PolicyKey {
                                sec_identity: id,
                                ep_id: ep,
                                dport: port,
                                proto,
                                egress: egress as u8,
                                pad: 0,
                            };
                            *out.entries.entry(key).or_insert(false) |= deny;
                        }
                    }
                }
            }
        }
        out.enforced.insert(ep, enforced);
    }
    out
}
