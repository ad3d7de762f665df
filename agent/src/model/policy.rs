//! Network policy as the model holds it (CiliumNetworkPolicy's shape: an endpoint selector,
//! allow and deny rules per direction) and its compilation against the node's endpoints into
//! per-endpoint (direction, peer identity, protocol, port) → allow/deny entries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::IpNet;

use super::state::{
    EndpointInfo, IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD, NodeState, PolicyRule,
};
use super::{L7Kind, L7Visibility};

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
    /// One more of Cilium's reserved identities (`remote-node` 6, `health` 4, `init` 5,
    /// `kube-apiserver` 7, `unmanaged` 3): only that identity.
    Reserved(u32),
}

impl Entity {
    /// The lab's entities: world, host, cluster, all.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "world" => Some(Self::World),
            "host" => Some(Self::Host),
            "cluster" => Some(Self::Cluster),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Cilium's entity names (`fromEntities` / `toEntities`): the lab's and the other
    /// reserved identities.
    pub fn parse_cilium(s: &str) -> Option<Self> {
        Self::parse(s).or(match s {
            "remote-node" => Some(Self::Reserved(6)),
            "health" => Some(Self::Reserved(4)),
            "init" => Some(Self::Reserved(5)),
            "kube-apiserver" => Some(Self::Reserved(7)),
            "unmanaged" => Some(Self::Reserved(3)),
            _ => None,
        })
    }
}

/// The operator of a label selector's expression (Kubernetes' `matchExpressions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` item: `key` (without a label source) `op` `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelExpr {
    pub key: String,
    pub op: LabelOp,
    pub values: Vec<String>,
}

impl LabelExpr {
    /// Kubernetes' semantics: `In` needs the label with one of the values, `NotIn` the
    /// label absent or with none of them, `Exists` / `DoesNotExist` its presence / absence.
    pub fn matches(&self, ep: &EndpointInfo) -> bool {
        let v = label_value(ep, &self.key);
        match self.op {
            LabelOp::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            LabelOp::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            LabelOp::Exists => v.is_some(),
            LabelOp::DoesNotExist => v.is_none(),
        }
    }
}

/// A Kubernetes label selector: every `match_labels` pair and every expression must hold
/// (empty = everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: Labels,
    pub match_expressions: Vec<LabelExpr>,
}

impl Selector {
    pub fn matches(&self, ep: &EndpointInfo) -> bool {
        selects(&self.match_labels, ep) && self.match_expressions.iter().all(|e| e.matches(ep))
    }

    /// True when the selector itself names the namespace label (then a namespaced policy's
    /// peer selector is not confined to the policy's namespace).
    pub fn names_namespace(&self) -> bool {
        self.match_labels.contains_key(NAMESPACE_LABEL)
            || self
                .match_expressions
                .iter()
                .any(|e| e.key == NAMESPACE_LABEL)
    }
}

/// One peer of a policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSelector {
    /// Pods whose effective labels contain these. Scoped to the policy's namespace unless
    /// the selector names `io.kubernetes.pod.namespace` itself (Cilium semantics).
    Labels(Labels),
    Entity(Entity),
    /// Pods matching a label selector with expressions; scoped like `Labels` (and not
    /// scoped at all in a cluster-wide policy).
    Selector(Selector),
    /// Addresses in `net` but in none of `except` (Cilium's `toCIDRSet`): the local
    /// identities the model gives the policies' prefixes (see [`cidr_prefixes`]) that lie
    /// within `net` and outside every `except`; `/0` also stands for world.
    Cidr {
        net: IpNet,
        except: Vec<IpNet>,
    },
}

/// One allow or deny rule: peers (empty = any peer, when ports are given) and ports (empty = any).
/// A rule with neither peers nor ports matches nothing (Cilium's `ingress: [{}]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub peers: Vec<PeerSelector>,
    pub ports: Vec<PortSpec>,
    /// L7 visibility on the rule's ports (from Cilium's `toPorts.rules`): what the parsers
    /// should see there. Visibility only: nothing is enforced at L7.
    pub l7: Option<L7Kind>,
}

/// A CiliumNetworkPolicy-like policy. Selecting an endpoint with any ingress (or
/// ingress_deny) rule makes its ingress default-deny; same for egress. Deny beats allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    /// The policy's namespace (empty for a cluster-wide policy).
    pub namespace: String,
    /// Pods of `namespace` this policy applies to (`{}` = all of them).
    pub endpoint_selector: Labels,
    /// More conditions on the pods selected (`matchExpressions`; empty = none).
    pub endpoint_expressions: Vec<LabelExpr>,
    /// A CiliumClusterwideNetworkPolicy: selects pods of every namespace, and its label peers
    /// are not confined to a namespace.
    pub cluster_wide: bool,
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
    /// L7 visibility the policies' rules ask for: (endpoint id, rule).
    pub l7: BTreeSet<(u16, L7Visibility)>,
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

/// True when `pol` applies to `ep`: its namespace (any, cluster-wide) and its selector.
pub fn policy_selects(pol: &Policy, ep: &EndpointInfo) -> bool {
    (pol.cluster_wide || pol.namespace == ep.namespace)
        && selects(&pol.endpoint_selector, ep)
        && pol.endpoint_expressions.iter().all(|e| e.matches(ep))
}

/// Every CIDR prefix the policies name as a peer (their `net`s, not their `except`s): each
/// gets a local identity from the model.
pub fn cidr_prefixes(policies: &[Policy]) -> BTreeSet<IpNet> {
    peer_cidrs(policies)
        .map(|(net, _)| net.trunc())
        .filter(|n| n.prefix_len() > 0)
        .collect()
}

/// The `except` prefixes of the policies' CIDR peers that are not themselves peers: the
/// model maps them to world.
pub fn except_prefixes(policies: &[Policy]) -> BTreeSet<IpNet> {
    let nets = cidr_prefixes(policies);
    peer_cidrs(policies)
        .flat_map(|(_, except)| except.iter().map(IpNet::trunc))
        .filter(|n| !nets.contains(n))
        .collect()
}

fn peer_cidrs(policies: &[Policy]) -> impl Iterator<Item = (&IpNet, &Vec<IpNet>)> {
    policies
        .iter()
        .flat_map(|p| [&p.ingress, &p.egress, &p.ingress_deny, &p.egress_deny])
        .flatten()
        .flat_map(|r| &r.peers)
        .filter_map(|s| match s {
            PeerSelector::Cidr { net, except } => Some((net, except)),
            _ => None,
        })
}

/// Identities a peer selector stands for (0 = any).
fn peer_identities(state: &NodeState, pol: &Policy, sel: &PeerSelector) -> Vec<u32> {
    let policy_ns = pol.namespace.as_str();
    match sel {
        PeerSelector::Entity(Entity::All) => vec![ANY],
        PeerSelector::Entity(Entity::World) => {
            // CIDR identities are outside the cluster too (Cilium gives them reserved:world).
            let mut v = vec![IDENTITY_WORLD];
            v.extend(state.cidr_identities().map(|(_, id)| id));
            v
        }
        PeerSelector::Entity(Entity::Host) => vec![IDENTITY_HOST],
        PeerSelector::Entity(Entity::Reserved(id)) => vec![*id],
        PeerSelector::Selector(sel) => {
            let ids: BTreeSet<u32> = state
                .endpoints
                .iter()
                .filter(|e| {
                    (pol.cluster_wide || sel.names_namespace() || e.namespace == policy_ns)
                        && sel.matches(e)
                })
                .map(|e| e.identity)
                .collect();
            ids.into_iter().collect()
        }
        PeerSelector::Cidr { net, except } => {
            let within = |p: &IpNet| net.contains(p) && !except.iter().any(|x| x.contains(p));
            let mut v: Vec<u32> = state
                .cidr_identities()
                .filter(|(p, _)| within(p))
                .map(|(_, id)| id)
                .collect();
            if net.prefix_len() == 0 {
                v.push(IDENTITY_WORLD);
            }
            v
        }
        PeerSelector::Entity(Entity::Cluster) => {
            // Cilium's cluster entity: every pod, the host and the other nodes.
            let mut v: BTreeSet<u32> = state.endpoints.iter().map(|e| e.identity).collect();
            v.extend([IDENTITY_HOST, IDENTITY_REMOTE_NODE]);
            v.into_iter().collect()
        }
        PeerSelector::Labels(l) => {
            let ids: BTreeSet<u32> = state
                .endpoints
                .iter()
                .filter(|e| {
                    (pol.cluster_wide
                        || l.contains_key(NAMESPACE_LABEL)
                        || e.namespace == policy_ns)
                        && selects(l, e)
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
/// `allow_localhost`: an endpoint whose ingress is enforced still takes anything from the
/// host (an allow entry for the host identity, which a deny entry of a policy overrides),
/// as Cilium's default `--allow-localhost` does: node-local probes keep working.
pub fn compile(policies: &[Policy], state: &NodeState, allow_localhost: bool) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    for ep in &state.endpoints {
        let mut enforced = (false, false);
        for (pol_idx, pol) in policies.iter().enumerate() {
            if !policy_selects(pol, ep) {
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
                    if let (Some(kind), false) = (rule.l7, deny) {
                        for (proto, port) in rule_ports(rule) {
                            if port != 0 && proto != 132 {
                                let ingress = !egress;
                                let v = L7Visibility {
                                    ingress,
                                    port,
                                    proto,
                                    kind,
                                };
                                out.l7.insert((ep.id, v));
                            }
                        }
                    }
                    let ids = if rule.peers.is_empty() {
                        vec![ANY]
                    } else {
                        let mut s = BTreeSet::new();
                        for sel in &rule.peers {
                            s.extend(peer_identities(state, pol, sel));
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
        if enforced.0 && allow_localhost {
            let key = PolicyEntry {
                identity: IDENTITY_HOST,
                ep_id: ep.id,
                port: 0,
                proto: 0,
                egress: false,
            };
            out.entries.entry(key).or_insert(false);
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
