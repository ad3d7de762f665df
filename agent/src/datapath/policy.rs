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
    /// Key → indexes (in `LabSpec::policies`) of the policies whose rules wrote it, with
    /// whether each wrote a deny.
    pub sources: BTreeMap<PolicyKey, Vec<(usize, bool)>>,
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
            let pol_idx = spec
                .policies
                .iter()
                .position(|p| p.name == pol.name && p.namespace == pol.namespace)
                .unwrap_or(0);
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
                            let src = out.sources.entry(key).or_default();
                            if !src.contains(&(pol_idx, deny)) {
                                src.push((pol_idx, deny));
                            }
                        }
                    }
                }
            }
        }
        out.enforced.insert(ep, enforced);
    }
    out
}

/// The policies behind the compiled entries, for flows' `*_allowed_by` / `*_denied_by`.
pub fn rules(spec: &LabSpec, compiled: &CompiledPolicy) -> Vec<crate::enrich::state::PolicyRule> {
    compiled
        .sources
        .iter()
        .flat_map(|(k, srcs)| {
            srcs.iter().map(move |(idx, deny)| {
                let p = &spec.policies[*idx];
                crate::enrich::state::PolicyRule {
                    ep_id: k.ep_id,
                    egress: k.egress != 0,
                    identity: k.sec_identity,
                    proto: k.proto,
                    port: k.dport,
                    deny: *deny,
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::state::endpoint_id;

    const SPEC: &str = r#"
[lab]
name = "pt"
node = "pt-node"
ipv4_cidr = "10.9.0.0/24"
ipv6_cidr = "fd00:9::/64"

[[pods]]
namespace = "a"
name = "client"
labels = { app = "client" }
ipv4 = "10.9.0.10"
ipv6 = "fd00:9::10"

[[pods]]
namespace = "a"
name = "server"
labels = { app = "server" }
ipv4 = "10.9.0.20"
ipv6 = "fd00:9::20"

[[pods]]
namespace = "b"
name = "client"
labels = { app = "client" }
ipv4 = "10.9.0.30"
ipv6 = "fd00:9::30"

[[policies]]
name = "server"
namespace = "a"
endpoint_selector = { app = "server" }
ingress = [
  { from = [{ labels = { app = "client" } }], ports = [{ port = 8080, protocol = "TCP" }] },
  { from = [{ entity = "world" }] },
]
ingress_deny = [{ from = [{ labels = { app = "client" } }], ports = [{ port = 9090, protocol = "ANY" }] }]
egress = [{ to = [{ entity = "all" }], ports = [{ port = 53, protocol = "UDP" }] }]
"#;

    fn key(ep: u16, egress: bool, id: u32, proto: u8, port: u16) -> PolicyKey {
        PolicyKey {
            sec_identity: id,
            ep_id: ep,
            dport: port,
            proto,
            egress: egress as u8,
            pad: 0,
        }
    }

    #[test]
    fn compiles_allow_deny_and_entities() {
        let spec = LabSpec::parse(SPEC, "test").unwrap();
        let state = NodeState::from_spec(&spec, |_| 0);
        let id = |i: usize| state.endpoints[i].identity;
        let c = compile(&spec, &state);
        let server = endpoint_id(1);
        assert_eq!(c.enforced[&server], (true, true));
        assert_eq!(c.enforced[&endpoint_id(0)], (false, false));
        // Same labels in another namespace: a different identity, and not selected.
        assert_ne!(id(0), id(2));
        assert_eq!(
            c.entries.get(&key(server, false, id(0), 6, 8080)),
            Some(&false)
        );
        assert_eq!(c.entries.get(&key(server, false, id(2), 6, 8080)), None);
        assert_eq!(
            c.entries.get(&key(server, false, IDENTITY_WORLD, 0, 0)),
            Some(&false)
        );
        for proto in [6, 17, 132] {
            assert_eq!(
                c.entries.get(&key(server, false, id(0), proto, 9090)),
                Some(&true)
            );
        }
        assert_eq!(c.entries.get(&key(server, true, ANY, 17, 53)), Some(&false));
        assert_eq!(c.entries.len(), 1 + 1 + 3 + 1);
    }
}
