//! What the agent knows about its node, apart from how it learned it: sources (the lab, a
//! container runtime, policy files) send [`Change`]s; [`NodeModel::apply`] keeps endpoints,
//! identities, services and policies, writes what changed to the datapath's maps through the
//! [`NodeMaps`] port, and returns the agent events of what really happened.
//!
//! Invariants: after `apply` returns, the maps hold exactly the entries the current state
//! compiles to (every change is a recompute and a diff, so a source that resends its whole
//! view is harmless); identities are stable while an endpoint uses them (a new label set
//! gets the next free number from 256, a batch allocates its new sets in label order);
//! endpoint ids are never reused while the agent runs.

pub mod events;
pub mod policy;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hubble_api::flow::AgentEvent;
use ipnet::IpNet;

pub use policy::{CompiledPolicy, Labels, Policy, PolicyEntry};
pub use state::{
    EndpointInfo, IDENTITY_HOST, IDENTITY_LOCAL_BASE, IDENTITY_REMOTE_NODE, IDENTITY_UNKNOWN,
    IDENTITY_WORLD, MIN_ALLOCATED_IDENTITY, NodeState, PolicyRule, ServiceInfo, reserved_labels,
};

/// First endpoint id (Cilium's start small too; ids below are never handed out).
pub const FIRST_ENDPOINT_ID: u16 = 100;

/// What a parser of L7 visibility looks at (values are the datapath's `L7_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L7Kind {
    Dns = 1,
    Http = 2,
}

/// One L7 visibility rule of an endpoint: packets to/from `port` are copied to the L7
/// parsers (`ingress`: the endpoint serves the port; otherwise it calls it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct L7Visibility {
    pub ingress: bool,
    pub port: u16,
    /// IP protocol: 6 or 17.
    pub proto: u8,
    pub kind: L7Kind,
}

/// An endpoint as a source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Unique among all sources' endpoints, stable for the endpoint's life (e.g.
    /// `lab:default/client`, `containerd:k8s.io/<container id>`).
    pub key: String,
    pub namespace: String,
    pub pod_name: String,
    /// `source:key=value` labels (any order; the model sorts them). They decide the identity.
    pub labels: Vec<String>,
    /// (kind, name)
    pub workload: Option<(String, String)>,
    pub ips: Vec<IpAddr>,
    /// The host-side interface of the endpoint, in the agent's network namespace.
    pub ifname: String,
    /// Attach the datapath to `ifname` (a local endpoint). False for an endpoint the node
    /// only needs to name (another node's pod).
    pub attach: bool,
    pub l7: Vec<L7Visibility>,
    /// The identity a kvstore allocated to these labels cluster-wide (`kvstore::cluster`);
    /// None: the model numbers the label set itself.
    pub identity: Option<u32>,
}

/// A service as a source describes it: its backends are the endpoints of its namespace
/// whose labels its selector matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub selector: Labels,
    /// (port, "TCP" | "UDP" | "ANY")
    pub ports: Vec<(u16, String)>,
}

/// One thing a source learned.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The node itself: cluster and node names, the node's own addresses (identity host).
    Node {
        cluster: String,
        node: String,
        host_ips: Vec<IpAddr>,
    },
    /// The addresses of the cluster's other nodes (identity remote-node), all of them:
    /// replaces the set before.
    RemoteNodes {
        ips: Vec<IpAddr>,
    },
    /// An endpoint appeared or changed.
    EndpointUpsert(EndpointSpec),
    /// An endpoint is gone.
    EndpointRemove {
        key: String,
    },
    ServiceUpsert(ServiceSpec),
    ServiceRemove {
        namespace: String,
        name: String,
    },
    /// A policy was imported (or re-imported with new rules).
    PolicyUpsert(Policy),
    /// A policy of several rules, each with its own endpoint selector (Cilium's `specs`),
    /// all under one namespace and name: replaces what the model had under that name (one
    /// POLICY_UPDATED with the rule count). Every rule's `namespace`/`name` must be these.
    PolicyRules {
        namespace: String,
        name: String,
        rules: Vec<Policy>,
    },
    PolicyRemove {
        namespace: String,
        name: String,
    },
}

/// An ipcache entry: address → identity (and the local endpoint holding it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcacheEntry {
    pub identity: u32,
    pub ep_id: u16,
    pub local: bool,
}

/// An endpoint map entry: the endpoint behind an attached interface and its enforcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointEntry {
    pub identity: u32,
    pub ep_id: u16,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
}

/// A failed map write or attach: one line saying what and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MapError(pub String);

/// The datapath as the model drives it: map entries written one by one, interfaces
/// attached and detached. Implemented by `datapath::Datapath`; tests use a fake.
pub trait NodeMaps {
    /// The ifindex of `ifname` (0 when there is no such interface).
    fn ifindex(&self, ifname: &str) -> u32;
    fn upsert_ipcache(&mut self, ip: IpAddr, e: IpcacheEntry) -> Result<(), MapError>;
    fn delete_ipcache(&mut self, ip: IpAddr) -> Result<(), MapError>;
    /// Maps every address of `net` without a longer entry to `e` (CIDR identities, and world
    /// for a CIDR's `except`s).
    fn upsert_ipcache_prefix(&mut self, net: IpNet, e: IpcacheEntry) -> Result<(), MapError>;
    fn delete_ipcache_prefix(&mut self, net: IpNet) -> Result<(), MapError>;
    fn upsert_endpoint(&mut self, ifindex: u32, e: EndpointEntry) -> Result<(), MapError>;
    fn delete_endpoint(&mut self, ifindex: u32) -> Result<(), MapError>;
    fn upsert_policy(&mut self, k: PolicyEntry, deny: bool) -> Result<(), MapError>;
    fn delete_policy(&mut self, k: PolicyEntry) -> Result<(), MapError>;
    /// Replaces the L7 visibility rules with `rules` (endpoint id, rule).
    fn set_l7(&mut self, rules: &BTreeSet<(u16, L7Visibility)>) -> Result<(), MapError>;
    /// Attaches the datapath to `ifname`, leaving other programs there in place.
    fn attach(&mut self, ifname: &str) -> Result<(), MapError>;
    /// Detaches it again (nothing when it is not attached or the interface is gone).
    fn detach(&mut self, ifname: &str);
}

/// Maps that take every write and attach nothing: for building a state without a datapath
/// (replays of specs, tests, benches).
#[derive(Debug, Default)]
pub struct NoMaps;

impl NodeMaps for NoMaps {
    fn ifindex(&self, _: &str) -> u32 {
        0
    }
    fn upsert_ipcache(&mut self, _: IpAddr, _: IpcacheEntry) -> Result<(), MapError> {
        Ok(())
    }
    fn delete_ipcache(&mut self, _: IpAddr) -> Result<(), MapError> {
        Ok(())
    }
    fn upsert_ipcache_prefix(&mut self, _: IpNet, _: IpcacheEntry) -> Result<(), MapError> {
        Ok(())
    }
    fn delete_ipcache_prefix(&mut self, _: IpNet) -> Result<(), MapError> {
        Ok(())
    }
    fn upsert_endpoint(&mut self, _: u32, _: EndpointEntry) -> Result<(), MapError> {
        Ok(())
    }
    fn delete_endpoint(&mut self, _: u32) -> Result<(), MapError> {
        Ok(())
    }
    fn upsert_policy(&mut self, _: PolicyEntry, _: bool) -> Result<(), MapError> {
        Ok(())
    }
    fn delete_policy(&mut self, _: PolicyEntry) -> Result<(), MapError> {
        Ok(())
    }
    fn set_l7(&mut self, _: &BTreeSet<(u16, L7Visibility)>) -> Result<(), MapError> {
        Ok(())
    }
    fn attach(&mut self, _: &str) -> Result<(), MapError> {
        Ok(())
    }
    fn detach(&mut self, _: &str) {}
}

/// What one `apply` did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Agent events, in the order things happened.
    pub events: Vec<AgentEvent>,
    /// Writes or attaches that failed (the rest was applied).
    pub errors: Vec<MapError>,
    /// Endpoints attached and detached (`namespace/pod` on its interface).
    pub attached: Vec<String>,
    pub detached: Vec<String>,
}

/// A known endpoint: the source's spec and what the model gave it.
#[derive(Debug, Clone)]
struct Known {
    spec: EndpointSpec,
    id: u16,
    ifindex: u32,
}

/// What the maps hold now (the last applied compile).
#[derive(Debug, Default)]
struct InMaps {
    ipcache: BTreeMap<IpAddr, IpcacheEntry>,
    /// CIDR prefixes (policies' CIDR peers and their excepts).
    prefixes: BTreeMap<IpNet, IpcacheEntry>,
    endpoints: BTreeMap<u32, EndpointEntry>,
    policy: BTreeMap<PolicyEntry, bool>,
    l7: BTreeSet<(u16, L7Visibility)>,
    /// (ifname, the endpoint attached there), in the order they were attached.
    attached: Vec<(String, EndpointInfo)>,
}

/// The node model.
#[derive(Debug)]
pub struct NodeModel {
    cluster: String,
    node: String,
    host_ips: Vec<IpAddr>,
    remote_node_ips: Vec<IpAddr>,
    /// key → endpoint, in the order they were added (ids ascend).
    endpoints: Vec<Known>,
    next_endpoint_id: u16,
    /// Sorted label set → identity.
    identities: BTreeMap<Vec<String>, u32>,
    /// CIDR prefix a policy names → its local identity (from `IDENTITY_LOCAL_BASE + 1`).
    cidr_identities: BTreeMap<IpNet, u32>,
    services: Vec<ServiceSpec>,
    policies: Vec<Policy>,
    /// The policy repository's revision (Cilium starts at 1; every import or removal adds 1).
    revision: u64,
    state: NodeState,
    in_maps: InMaps,
    /// Traffic from the host to an endpoint is allowed whatever its ingress policy
    /// (Cilium's `--allow-localhost`, on by default).
    allow_localhost: bool,
}

impl Default for NodeModel {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeModel {
    pub fn new() -> Self {
        NodeModel {
            cluster: "default".to_string(),
            node: String::new(),
            host_ips: Vec::new(),
            remote_node_ips: Vec::new(),
            endpoints: Vec::new(),
            next_endpoint_id: FIRST_ENDPOINT_ID,
            identities: BTreeMap::new(),
            cidr_identities: BTreeMap::new(),
            services: Vec::new(),
            policies: Vec::new(),
            revision: 1,
            state: NodeState {
                cluster: "default".to_string(),
                node: String::new(),
                host_ips: Vec::new(),
                remote_node_ips: Vec::new(),
                endpoints: Vec::new(),
                services: Vec::new(),
                identities: BTreeMap::new(),
                policy_rules: Vec::new(),
                index: Default::default(),
            },
            in_maps: InMaps::default(),
            allow_localhost: true,
        }
    }

    /// With `false`, traffic from the host reaches an endpoint whose ingress is enforced only
    /// when a policy allows it (Cilium's `--allow-localhost=policy`).
    pub fn allow_localhost(mut self, allow: bool) -> Self {
        self.allow_localhost = allow;
        self
    }

    /// The current snapshot, for the flow builder's lookups and recordings.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// The policy repository's revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// L7 visibility rules in the maps now.
    pub fn l7_rule_count(&self) -> usize {
        self.in_maps.l7.len()
    }

    /// The endpoints the datapath is attached to now.
    pub fn attached(&self) -> impl Iterator<Item = &EndpointInfo> {
        self.in_maps.attached.iter().map(|(_, ep)| ep)
    }

    /// Applies a batch of changes: updates the state, writes the differences to `maps` and
    /// returns what happened. A failed write or attach is reported in `errors`; the rest of
    /// the batch still applies.
    pub fn apply(&mut self, changes: Vec<Change>, maps: &mut dyn NodeMaps) -> Applied {
        let mut policy_events = Vec::new();
        for c in changes {
            self.take(c, maps, &mut policy_events);
        }
        self.rebuild();
        let mut out = Applied::default();
        self.sync(maps, policy_events, &mut out);
        out
    }

    /// Detaches every endpoint (agent shutdown): their ENDPOINT_DELETED events.
    pub fn detach_all(&mut self, maps: &mut dyn NodeMaps) -> Applied {
        let mut out = Applied::default();
        for (ifname, ep) in std::mem::take(&mut self.in_maps.attached) {
            maps.detach(&ifname);
            out.detached
                .push(format!("{}/{} ({ifname})", ep.namespace, ep.pod_name));
            out.events.push(events::endpoint_deleted(&ep));
        }
        out
    }

    /// Folds one change into the model's sources of truth.
    fn take(&mut self, c: Change, maps: &dyn NodeMaps, policy_events: &mut Vec<AgentEvent>) {
        match c {
            Change::Node {
                cluster,
                node,
                host_ips,
            } => {
                self.cluster = cluster;
                self.node = node;
                self.host_ips = host_ips;
            }
            Change::RemoteNodes { ips } => self.remote_node_ips = ips,
            Change::EndpointUpsert(mut spec) => {
                // Sorted once here: identities and the snapshot key on the sorted set.
                spec.labels.sort();
                spec.labels.dedup();
                let ifindex = maps.ifindex(&spec.ifname);
                match self.endpoints.iter_mut().find(|k| k.spec.key == spec.key) {
                    Some(k) => {
                        if k.spec.ifname != spec.ifname || k.ifindex == 0 {
                            k.ifindex = ifindex;
                        }
                        k.spec = spec;
                    }
                    None => {
                        let id = self.next_endpoint_id;
                        self.next_endpoint_id = self.next_endpoint_id.saturating_add(1);
                        self.endpoints.push(Known { spec, id, ifindex });
                    }
                }
            }
            Change::EndpointRemove { key } => self.endpoints.retain(|k| k.spec.key != key),
            Change::ServiceUpsert(s) => {
                match self
                    .services
                    .iter_mut()
                    .find(|x| x.namespace == s.namespace && x.name == s.name)
                {
                    Some(x) => *x = s,
                    None => self.services.push(s),
                }
            }
            Change::ServiceRemove { namespace, name } => self
                .services
                .retain(|x| !(x.namespace == namespace && x.name == name)),
            Change::PolicyUpsert(p) => {
                self.revision += 1;
                policy_events.push(events::policy_updated(
                    &p.namespace,
                    &p.name,
                    self.revision,
                    1,
                ));
                match self
                    .policies
                    .iter_mut()
                    .find(|x| x.namespace == p.namespace && x.name == p.name)
                {
                    Some(x) => *x = p,
                    None => self.policies.push(p),
                }
            }
            Change::PolicyRules {
                namespace,
                name,
                rules,
            } => {
                self.revision += 1;
                policy_events.push(events::policy_updated(
                    &namespace,
                    &name,
                    self.revision,
                    rules.len() as i64,
                ));
                let at = self
                    .policies
                    .iter()
                    .position(|x| x.namespace == namespace && x.name == name)
                    .unwrap_or(self.policies.len());
                self.policies
                    .retain(|x| !(x.namespace == namespace && x.name == name));
                let at = at.min(self.policies.len());
                self.policies.splice(
                    at..at,
                    rules.into_iter().map(|mut r| {
                        r.namespace.clone_from(&namespace);
                        r.name.clone_from(&name);
                        r
                    }),
                );
            }
            Change::PolicyRemove { namespace, name } => {
                let before = self.policies.len();
                self.policies
                    .retain(|x| !(x.namespace == namespace && x.name == name));
                let removed = before - self.policies.len();
                if removed != 0 {
                    self.revision += 1;
                    policy_events.push(events::policy_deleted(
                        &namespace,
                        &name,
                        self.revision,
                        removed as i64,
                    ));
                }
            }
        }
    }

    /// Identities for the endpoints' label sets: a kvstore's where it gave one, otherwise
    /// kept while used, new sets numbered from the next free id in label order.
    fn allocate_identities(&mut self) {
        let used: BTreeSet<&Vec<String>> = self.endpoints.iter().map(|k| &k.spec.labels).collect();
        self.identities.retain(|l, _| used.contains(l));
        for k in &self.endpoints {
            if let Some(id) = k.spec.identity
                && self.identities.get(&k.spec.labels) != Some(&id)
            {
                self.identities.insert(k.spec.labels.clone(), id);
            }
        }
        let taken: BTreeSet<u32> = self.identities.values().copied().collect();
        let mut next = MIN_ALLOCATED_IDENTITY;
        for labels in used {
            if self.identities.contains_key(labels) {
                continue;
            }
            while taken.contains(&next) {
                next += 1;
            }
            self.identities.insert(labels.clone(), next);
            next += 1;
        }
    }

    /// Local identities for the policies' CIDR prefixes: kept while named, new prefixes
    /// numbered from the next free local id in prefix order.
    fn allocate_cidr_identities(&mut self) {
        let used = policy::cidr_prefixes(&self.policies);
        self.cidr_identities.retain(|n, _| used.contains(n));
        let taken: BTreeSet<u32> = self.cidr_identities.values().copied().collect();
        let mut next = IDENTITY_LOCAL_BASE + 1;
        for net in used {
            if self.cidr_identities.contains_key(&net) {
                continue;
            }
            while taken.contains(&next) {
                next += 1;
            }
            self.cidr_identities.insert(net, next);
            next += 1;
        }
    }

    /// Rebuilds the snapshot from the sources of truth.
    fn rebuild(&mut self) {
        self.allocate_identities();
        self.allocate_cidr_identities();
        let endpoints: Vec<EndpointInfo> = self
            .endpoints
            .iter()
            .map(|k| {
                let labels = k.spec.labels.clone();
                EndpointInfo {
                    id: k.id,
                    identity: k.spec.identity.unwrap_or_else(|| self.identities[&labels]),
                    cluster: self.cluster.clone(),
                    namespace: k.spec.namespace.clone(),
                    pod_name: k.spec.pod_name.clone(),
                    labels,
                    workload: k.spec.workload.clone(),
                    ips: k.spec.ips.clone(),
                    ifname: k.spec.ifname.clone(),
                    ifindex: k.ifindex,
                    local: k.spec.attach,
                }
            })
            .collect();
        let services = self
            .services
            .iter()
            .map(|s| ServiceInfo {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                backends: endpoints
                    .iter()
                    .filter(|e| e.namespace == s.namespace && policy::selects(&s.selector, e))
                    .map(|e| e.id)
                    .collect(),
                ports: s.ports.clone(),
            })
            .collect();
        self.state = NodeState {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            host_ips: self.host_ips.clone(),
            remote_node_ips: self.remote_node_ips.clone(),
            endpoints,
            services,
            identities: self
                .identities
                .iter()
                .map(|(l, id)| (*id, l.clone()))
                .chain(self.cidr_identities.iter().map(|(net, id)| {
                    let labels = vec![
                        format!("{}{net}", state::CIDR_LABEL_SOURCE),
                        "reserved:world".to_string(),
                    ];
                    (*id, labels)
                }))
                .collect(),
            policy_rules: Vec::new(),
            index: Default::default(),
        };
    }

    /// Compiles the snapshot and brings the maps to it: additions first (policy, then the
    /// ipcache, then endpoints and L7 rules, then attach), removals after (detach first).
    fn sync(&mut self, maps: &mut dyn NodeMaps, policy_events: Vec<AgentEvent>, out: &mut Applied) {
        let compiled = policy::compile(&self.policies, &self.state, self.allow_localhost);
        self.state.policy_rules = policy::rules(&self.policies, &compiled);
        let st = &self.state;
        let node_ip = st.host_ips.first().copied();

        // What the maps should hold.
        let mut ipcache: BTreeMap<IpAddr, IpcacheEntry> = BTreeMap::new();
        let mut ipcache_order: Vec<(IpAddr, Option<&EndpointInfo>)> = Vec::new();
        for ep in &st.endpoints {
            for ip in &ep.ips {
                if ipcache.contains_key(ip) {
                    continue;
                }
                ipcache.insert(
                    *ip,
                    IpcacheEntry {
                        identity: ep.identity,
                        ep_id: if ep.local { ep.id } else { 0 },
                        local: ep.local,
                    },
                );
                ipcache_order.push((*ip, Some(ep)));
            }
        }
        let nodes = (st.host_ips.iter().map(|ip| (ip, IDENTITY_HOST))).chain(
            st.remote_node_ips
                .iter()
                .map(|ip| (ip, IDENTITY_REMOTE_NODE)),
        );
        for (ip, identity) in nodes {
            if ipcache.contains_key(ip) {
                continue;
            }
            ipcache.insert(
                *ip,
                IpcacheEntry {
                    identity,
                    ep_id: 0,
                    local: false,
                },
            );
            ipcache_order.push((*ip, None));
        }
        // CIDR prefixes: their identities, and world for excepts that are no CIDR peer.
        let mut prefixes: BTreeMap<IpNet, IpcacheEntry> = self
            .cidr_identities
            .iter()
            .map(|(net, id)| {
                let e = IpcacheEntry {
                    identity: *id,
                    ep_id: 0,
                    local: false,
                };
                (*net, e)
            })
            .collect();
        for net in policy::except_prefixes(&self.policies) {
            let e = IpcacheEntry {
                identity: IDENTITY_WORLD,
                ep_id: 0,
                local: false,
            };
            prefixes.insert(net, e);
        }
        let mut endpoints: BTreeMap<u32, EndpointEntry> = BTreeMap::new();
        for ep in st.endpoints.iter().filter(|e| e.local && e.ifindex != 0) {
            let (ing, egr) = compiled.enforced.get(&ep.id).copied().unwrap_or_default();
            endpoints.insert(
                ep.ifindex,
                EndpointEntry {
                    identity: ep.identity,
                    ep_id: ep.id,
                    ingress_enforced: ing,
                    egress_enforced: egr,
                },
            );
        }
        let mut l7 = BTreeSet::new();
        let mut attach: Vec<(String, EndpointInfo)> = Vec::new();
        for (k, ep) in self.endpoints.iter().zip(&st.endpoints) {
            for r in &k.spec.l7 {
                l7.insert((ep.id, *r));
            }
            if k.spec.attach {
                attach.push((ep.ifname.clone(), ep.clone()));
            }
        }
        // Policies' L7 visibility, where the source's own rules do not already name the port.
        for (ep_id, r) in &compiled.l7 {
            let taken = l7.iter().any(|(id, x): &(u16, L7Visibility)| {
                *id == *ep_id && (x.ingress, x.port, x.proto) == (r.ingress, r.port, r.proto)
            });
            if !taken {
                l7.insert((*ep_id, *r));
            }
        }

        let mut errors = Vec::new();
        let mut err = |r: Result<(), MapError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        // Additions.
        for (k, deny) in &compiled.entries {
            if self.in_maps.policy.get(k) != Some(deny) {
                err(maps.upsert_policy(*k, *deny));
            }
        }
        let mut ipcache_events = Vec::new();
        for (ip, ep) in &ipcache_order {
            let e = ipcache[ip];
            if self.in_maps.ipcache.get(ip) != Some(&e) {
                err(maps.upsert_ipcache(*ip, e));
                // A remote pod's host is another node, which the entry does not say.
                let host = if ep.is_some_and(|e| e.local) {
                    node_ip
                } else {
                    None
                };
                ipcache_events.push(events::ipcache_upserted(*ip, e.identity, host, *ep));
            }
        }
        for (net, e) in &prefixes {
            if self.in_maps.prefixes.get(net) != Some(e) {
                err(maps.upsert_ipcache_prefix(*net, *e));
                ipcache_events.push(events::ipcache_prefix_upserted(*net, e.identity));
            }
        }
        for (ifindex, e) in &endpoints {
            if self.in_maps.endpoints.get(ifindex) != Some(e) {
                err(maps.upsert_endpoint(*ifindex, *e));
            }
        }
        if l7 != self.in_maps.l7 {
            err(maps.set_l7(&l7));
        }
        let mut created = Vec::new();
        let mut attached_now = Vec::new();
        for (ifname, ep) in attach {
            if let Some(i) = self.in_maps.attached.iter().position(|(n, _)| *n == ifname) {
                self.in_maps.attached.remove(i);
                attached_now.push((ifname, ep));
                continue;
            }
            match maps.attach(&ifname) {
                Ok(()) => {
                    out.attached
                        .push(format!("{}/{} ({ifname})", ep.namespace, ep.pod_name));
                    created.push(events::endpoint_created(&ep));
                    attached_now.push((ifname, ep));
                }
                Err(e) => err(Err(MapError(format!(
                    "endpoint {}/{}: {e}",
                    ep.namespace, ep.pod_name
                )))),
            }
        }
        // Removals: what was attached and is no longer wanted.
        let mut deleted = Vec::new();
        for (ifname, ep) in std::mem::replace(&mut self.in_maps.attached, attached_now) {
            maps.detach(&ifname);
            out.detached
                .push(format!("{}/{} ({ifname})", ep.namespace, ep.pod_name));
            deleted.push(events::endpoint_deleted(&ep));
        }
        for ifindex in self.in_maps.endpoints.keys() {
            if !endpoints.contains_key(ifindex) {
                err(maps.delete_endpoint(*ifindex));
            }
        }
        let mut ipcache_deleted = Vec::new();
        for (ip, e) in &self.in_maps.ipcache {
            if !ipcache.contains_key(ip) {
                err(maps.delete_ipcache(*ip));
                ipcache_deleted.push(events::ipcache_deleted(*ip, e.identity, None));
            }
        }
        for (net, e) in &self.in_maps.prefixes {
            if !prefixes.contains_key(net) {
                err(maps.delete_ipcache_prefix(*net));
                ipcache_deleted.push(events::ipcache_prefix_deleted(*net, e.identity));
            }
        }
        for k in self.in_maps.policy.keys() {
            if !compiled.entries.contains_key(k) {
                err(maps.delete_policy(*k));
            }
        }
        out.errors.extend(errors);
        self.in_maps.ipcache = ipcache;
        self.in_maps.prefixes = prefixes;
        self.in_maps.endpoints = endpoints;
        self.in_maps.policy = compiled.entries;
        self.in_maps.l7 = l7;

        // Events in Cilium's order of a node coming up: ipcache, policy, endpoints; then
        // what went away.
        out.events.extend(ipcache_events);
        out.events.extend(policy_events);
        out.events.extend(created);
        out.events.extend(deleted);
        out.events.extend(ipcache_deleted);
    }
}

#[cfg(test)]
mod tests;
