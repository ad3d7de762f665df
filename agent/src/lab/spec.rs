//! The lab spec: a TOML file naming the lab, its pods, services and network policies,
//! parsed with serde and fully validated before anything is created on the machine.
//!
//! Addressing (see `topology`): every pod gets its IPv4 as a /32 and its IPv6 as a /128 on
//! `eth0`, with host routes and a default route via the node address, like Cilium does.
//! Services are headless: DNS answers with the addresses of the selected pods.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

pub use crate::model::policy::{
    Entity, Labels, NAMESPACE_LABEL, PeerSelector, Policy, PortSpec, Protocol, Rule,
};

/// Label key carrying the cluster name (Cilium's `io.cilium.k8s.policy.cluster`).
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
/// DNS suffix of service names: `<svc>.<ns>.svc.cluster.local.`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Name of the pod-side interface in every pod netns.
pub const POD_IFNAME: &str = "eth0";
/// Name of the node-side interface carrying the node (host) address, as in Cilium.
pub const NODE_HOST_IFNAME: &str = "cilium_host";
/// Peer of `cilium_host` inside the node netns.
pub const NODE_NET_IFNAME: &str = "cilium_net";
/// Node-side interface of the veth to the world netns.
pub const NODE_WORLD_IFNAME: &str = "world0";

/// A spec that could not be read, parsed or validated: one line naming the file and field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{origin}: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{origin}: line {line}: {message}")]
    Parse {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// `[lab]`: the lab's identity and address plan.
#[derive(Debug, Clone)]
pub struct LabMeta {
    /// Short name (<= 8 chars of `[a-z0-9-]`), part of every netns name.
    pub name: String,
    /// Node name reported in flows (`node_name`).
    pub node: String,
    /// Cluster name (default `default`).
    pub cluster: String,
    pub ipv4_cidr: Ipv4Net,
    pub ipv6_cidr: Ipv6Net,
    /// Host identity address on `cilium_host` in the node netns (default: first host of the CIDR).
    pub node_ipv4: Ipv4Addr,
    pub node_ipv6: Ipv6Addr,
    /// Address of the world netns, outside the pod CIDRs (default 192.0.2.1, a documentation range).
    pub world_ipv4: Ipv4Addr,
    /// Default 2001:db8::1 (documentation range).
    pub world_ipv6: Ipv6Addr,
    /// DNS visibility on every pod's egress to port 53 (UDP and TCP), as Cilium's DNS proxy
    /// gives with a DNS rule (default true).
    pub dns_visibility: bool,
}

/// What an L7 visibility rule parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L7Protocol {
    Http,
    Dns,
}

/// One L7 visibility rule of a pod: its ingress (as server) or egress (as client) traffic on
/// `port`/`protocol` is handed to the agent's L7 parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L7Rule {
    pub ingress: bool,
    pub port: u16,
    /// Tcp or Udp.
    pub protocol: Protocol,
    pub l7: L7Protocol,
}

impl L7Rule {
    /// `http/8080`, `dns/53` (ingress, TCP for http, UDP for dns) or Cilium's visibility
    /// annotation form `<Ingress/8080/TCP/HTTP>`, `<Egress/53/UDP/DNS>`.
    pub fn parse(s: &str) -> Result<L7Rule, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "{s:?} is not an L7 rule: use \"http/8080\", \"dns/53\" or \"<Ingress/8080/TCP/HTTP>\""
            )
        };
        let l7_of = |p: &str| match p.to_ascii_lowercase().as_str() {
            "http" => Some(L7Protocol::Http),
            "dns" => Some(L7Protocol::Dns),
            _ => None,
        };
        let port_of = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
        if let Some(inner) = t.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
            let parts: Vec<&str> = inner.split('/').collect();
            let [dir, port, proto, l7] = parts[..] else {
                return Err(bad());
            };
            let ingress = match dir.to_ascii_lowercase().as_str() {
                "ingress" => true,
                "egress" => false,
                _ => return Err(bad()),
            };
            let protocol = match proto.to_ascii_uppercase().as_str() {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => return Err(bad()),
            };
            let l7 = l7_of(l7).ok_or_else(bad)?;
            if l7 == L7Protocol::Http && protocol != Protocol::Tcp {
                return Err(format!("{s:?}: HTTP runs over TCP"));
            }
            return Ok(L7Rule {
                ingress,
                port: port_of(port).ok_or_else(bad)?,
                protocol,
                l7,
            });
        }
        let (l7, port) = t.split_once('/').ok_or_else(bad)?;
        let l7 = l7_of(l7).ok_or_else(bad)?;
        Ok(L7Rule {
            ingress: true,
            port: port_of(port).ok_or_else(bad)?,
            protocol: if l7 == L7Protocol::Http {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            l7,
        })
    }
}

/// The controller that owns a pod (`workload = { kind = "Deployment", name = "catalog" }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

/// One pod: a network namespace joined to the node by a veth pair.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Position in the spec's `[[pods]]` list.
    pub index: usize,
    /// The simulated node whose agent owns this pod (`node = ...`, default `lab.node`).
    pub node: String,
    pub namespace: String,
    pub name: String,
    /// The labels written in the spec (without the namespace label).
    pub labels: Labels,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub workload: Option<Workload>,
    /// Network namespace name: `hl-<lab>-<namespace>-<name>`.
    pub netns: String,
    /// Host-side veth in the node netns, Cilium style: `lxc` + 12 hex digits.
    pub host_veth: String,
    /// Pod-side interface: always `eth0`.
    pub pod_ifname: &'static str,
    /// MAC of the host-side veth (locally administered, derived from the pod's name).
    pub host_mac: [u8; 6],
    /// MAC of the pod's `eth0`.
    pub pod_mac: [u8; 6],
    /// L7 visibility rules (`l7 = ["http/8080"]`).
    pub l7: Vec<L7Rule>,
    /// True for a pod added at runtime with `lab add-pod` (listed in the lab's runtime
    /// pods file, see [`LabSpec::live_pods_path`]), false for a pod of the spec file.
    pub added: bool,
}

impl Pod {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The spec labels plus `io.kubernetes.pod.namespace`: what selectors match against.
    pub fn effective_labels(&self) -> Labels {
        let mut l = self.labels.clone();
        l.insert(NAMESPACE_LABEL.to_string(), self.namespace.clone());
        l
    }

    /// Labels in Cilium's `source:key=value` form, sorted, as Hubble shows them on endpoints:
    /// the spec labels, the namespace label and the cluster label, all with source `k8s`.
    pub fn k8s_labels(&self, cluster: &str) -> Vec<String> {
        let mut l = self.effective_labels();
        l.insert(CLUSTER_LABEL.to_string(), cluster.to_string());
        l.iter().map(|(k, v)| format!("k8s:{k}={v}")).collect()
    }

    pub fn matches(&self, selector: &Labels) -> bool {
        let eff = self.effective_labels();
        selector.iter().all(|(k, v)| eff.get(k) == Some(v))
    }
}

/// A Kubernetes-style service: headless, its endpoints are the pods its selector matches
/// in its own namespace.
#[derive(Debug, Clone)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub selector: Labels,
    pub ports: Vec<PortSpec>,
}

impl Service {
    /// `<name>.<namespace>.svc.cluster.local.`
    pub fn dns_name(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}.", self.name, self.namespace)
    }
}

/// `[[nodes]]`: a simulated node of a multi-node lab. Its agent runs
/// `hubble-agent run --lab SPEC --node NAME` and owns the pods with `node = NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// The Hubble API (TCP, `HOST:PORT`) of this node's agent, announced by every agent's
    /// Peer service so a relay seeded with one agent finds all.
    pub address: Option<String>,
}

/// Every node of a lab: `lab.node` first, then `[[nodes]]` in order.
fn node_names<'a>(lab: &'a LabMeta, nodes: &'a [NodeSpec]) -> Vec<&'a str> {
    let mut v = vec![lab.node.as_str()];
    for n in nodes {
        if !v.contains(&n.name.as_str()) {
            v.push(&n.name);
        }
    }
    v
}

/// The host addresses (`cilium_host`) of the node at `index` of [`node_names`]: the lab's
/// node addresses for the first, the next ones after them for the others.
fn node_addresses_at(lab: &LabMeta, index: usize) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::from(u32::from(lab.node_ipv4).wrapping_add(index as u32)),
        Ipv6Addr::from(u128::from(lab.node_ipv6).wrapping_add(index as u128)),
    )
}

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A peer of a connection in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A pod, by index in `LabSpec::pods`.
    Pod(usize),
    /// The node netns.
    Host,
    /// The world netns (or any address outside the lab).
    World,
}

/// What a packet is, for policy purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp(u16),
    Udp(u16),
    /// ICMP / ICMPv6: only rules without ports allow it.
    Icmp,
}

/// The spec's expected verdict for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Denied at the destination's ingress (`ingress: true`) or the source's egress.
    Denied {
        ingress: bool,
    },
}

/// A validated lab spec.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Where it came from (file path), used in messages.
    pub origin: String,
    pub lab: LabMeta,
    /// Simulated nodes besides `lab.node` (`[[nodes]]`), each run by its own agent.
    pub nodes: Vec<NodeSpec>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub policies: Vec<Policy>,
}

// ---- raw (serde) form ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    lab: RawLab,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    pods: Vec<RawPod>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    name: String,
    node: String,
    cluster: Option<String>,
    ipv4_cidr: String,
    ipv6_cidr: String,
    node_ipv4: Option<String>,
    node_ipv6: Option<String>,
    world_ipv4: Option<String>,
    world_ipv6: Option<String>,
    dns_visibility: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    address: Option<String>,
}

/// One `[[pods]]` entry as written (in a spec file or in the runtime pods file of
/// `lab add-pod`), before validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodDef {
    pub node: Option<String>,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub ipv4: String,
    pub ipv6: String,
    pub workload: Option<WorkloadDef>,
    #[serde(default)]
    pub l7: Vec<String>,
}

/// `workload = { kind = "...", name = "..." }` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadDef {
    pub kind: String,
    pub name: String,
}

type RawPod = PodDef;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    namespace: String,
    name: String,
    #[serde(default)]
    selector: Labels,
    #[serde(default)]
    ports: Vec<RawPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    port: i64,
    #[serde(default = "default_protocol")]
    protocol: String,
    name: Option<String>,
}

fn default_protocol() -> String {
    "TCP".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    namespace: String,
    endpoint_selector: Labels,
    #[serde(default)]
    ingress: Vec<RawIngress>,
    #[serde(default)]
    egress: Vec<RawEgress>,
    #[serde(default)]
    ingress_deny: Vec<RawIngress>,
    #[serde(default)]
    egress_deny: Vec<RawEgress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    #[serde(default)]
    from: Vec<RawPeer>,
    #[serde(default)]
    ports: Vec<RawPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    to: Vec<RawPeer>,
    #[serde(default)]
    ports: Vec<RawPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    labels: Option<Labels>,
    entity: Option<String>,
}

// ---- loading and validation ------------------------------------------------------------

struct Ctx<'a> {
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            origin: self.origin.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_name(c: &Ctx<'_>, field: &str, s: &str) -> Result<(), SpecError> {
    if is_dns_label(s) {
        Ok(())
    } else {
        Err(c.err(
            field,
            format!("{s:?} is not a valid name (1-63 chars of a-z, 0-9 and '-', not starting or ending with '-')"),
        ))
    }
}

fn check_labels(c: &Ctx<'_>, field: &str, labels: &Labels) -> Result<(), SpecError> {
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !key_ok {
            return Err(c.err(
                format!("{field}.{k}"),
                format!("{k:?} is not a valid label key"),
            ));
        }
        let val_ok = v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !val_ok {
            return Err(c.err(
                format!("{field}.{k}"),
                format!(
                    "{v:?} is not a valid label value (<= 63 chars of a-z, A-Z, 0-9, '-', '_', '.')"
                ),
            ));
        }
    }
    Ok(())
}

fn parse_ports(c: &Ctx<'_>, field: &str, raw: &[RawPort]) -> Result<Vec<PortSpec>, SpecError> {
    let mut out: Vec<PortSpec> = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let port = u16::try_from(p.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| {
                c.err(
                    format!("{f}.port"),
                    format!("{} is not a port (1..65535)", p.port),
                )
            })?;
        let protocol = Protocol::parse(&p.protocol).ok_or_else(|| {
            c.err(
                format!("{f}.protocol"),
                format!("{:?} is not a protocol (TCP, UDP or ANY)", p.protocol),
            )
        })?;
        if let Some(n) = &p.name {
            check_name(c, &format!("{f}.name"), n)?;
        }
        if out.iter().any(|o| o.port == port && o.protocol == protocol) {
            return Err(c.err(f, format!("port {port}/{protocol} is listed twice")));
        }
        out.push(PortSpec {
            port,
            protocol,
            name: p.name.clone(),
        });
    }
    Ok(out)
}

fn parse_peers(c: &Ctx<'_>, field: &str, raw: &[RawPeer]) -> Result<Vec<PeerSelector>, SpecError> {
    raw.iter()
        .enumerate()
        .map(|(i, p)| {
            let f = format!("{field}[{i}]");
            match (&p.labels, &p.entity) {
                (Some(l), None) => {
                    if l.is_empty() {
                        return Err(c.err(
                            format!("{f}.labels"),
                            "empty selector: name at least one label (or use entity = \"all\")",
                        ));
                    }
                    check_labels(c, &format!("{f}.labels"), l)?;
                    Ok(PeerSelector::Labels(l.clone()))
                }
                (None, Some(e)) => Entity::parse(e).map(PeerSelector::Entity).ok_or_else(|| {
                    c.err(
                        format!("{f}.entity"),
                        format!("{e:?} is not an entity (world, host, cluster or all)"),
                    )
                }),
                _ => Err(c.err(f, "a peer needs exactly one of `labels` or `entity`")),
            }
        })
        .collect()
}

fn parse_v4(c: &Ctx<'_>, field: &str, s: &str) -> Result<Ipv4Addr, SpecError> {
    s.parse()
        .map_err(|_| c.err(field, format!("{s:?} is not an IPv4 address")))
}

fn parse_v6(c: &Ctx<'_>, field: &str, s: &str) -> Result<Ipv6Addr, SpecError> {
    s.parse()
        .map_err(|_| c.err(field, format!("{s:?} is not an IPv6 address")))
}

/// 64-bit FNV-1a: a stable, dependency-free hash for interface names and MACs.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn mac_from(h: u64) -> [u8; 6] {
    let b = h.to_be_bytes();
    // Locally administered, unicast.
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Line number (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Validates pods one by one against the lab and the pods before them (names, addresses,
/// netns and interface names must be unique): shared by the spec's `[[pods]]` and the
/// runtime pods file, so both give the same messages.
struct PodChecker<'a> {
    lab: &'a LabMeta,
    nodes: &'a [NodeSpec],
    ids: HashSet<(String, String)>,
    v4: HashSet<IpAddr>,
    v6: HashSet<IpAddr>,
    netns: HashSet<String>,
    veth: HashSet<String>,
}

impl<'a> PodChecker<'a> {
    fn new(lab: &'a LabMeta, nodes: &'a [NodeSpec]) -> Self {
        let hosts: Vec<(Ipv4Addr, Ipv6Addr)> = (0..node_names(lab, nodes).len())
            .map(|i| node_addresses_at(lab, i))
            .collect();
        PodChecker {
            lab,
            nodes,
            ids: HashSet::new(),
            v4: hosts.iter().map(|h| IpAddr::V4(h.0)).collect(),
            v6: hosts.iter().map(|h| IpAddr::V6(h.1)).collect(),
            netns: HashSet::new(),
            veth: HashSet::new(),
        }
    }

    /// Records an already validated pod.
    fn seed(&mut self, p: &Pod) {
        self.ids.insert((p.namespace.clone(), p.name.clone()));
        self.v4.insert(IpAddr::V4(p.ipv4));
        self.v6.insert(IpAddr::V6(p.ipv6));
        self.netns.insert(p.netns.clone());
        self.veth.insert(p.host_veth.clone());
    }

    /// Validates one pod; `f` names it in errors (`pods[3]`), `index` is its position in
    /// `LabSpec::pods`.
    fn check(
        &mut self,
        c: &Ctx<'_>,
        f: &str,
        index: usize,
        p: &PodDef,
        added: bool,
    ) -> Result<Pod, SpecError> {
        let lab = self.lab;
        let (ipv4_cidr, ipv6_cidr) = (lab.ipv4_cidr, lab.ipv6_cidr);
        check_name(c, &format!("{f}.namespace"), &p.namespace)?;
        check_name(c, &format!("{f}.name"), &p.name)?;
        if !self.ids.insert((p.namespace.clone(), p.name.clone())) {
            return Err(c.err(
                format!("{f}.name"),
                format!("pod {}/{} is defined twice", p.namespace, p.name),
            ));
        }
        check_labels(c, &format!("{f}.labels"), &p.labels)?;
        if p.labels.contains_key(NAMESPACE_LABEL) {
            return Err(c.err(
                format!("{f}.labels"),
                format!("{NAMESPACE_LABEL} is set from `namespace`; remove it"),
            ));
        }
        let ipv4 = parse_v4(c, &format!("{f}.ipv4"), &p.ipv4)?;
        if !v4_host_ok(ipv4_cidr, ipv4) {
            return Err(c.err(
                format!("{f}.ipv4"),
                format!("{ipv4} is not a host address inside lab.ipv4_cidr {ipv4_cidr}"),
            ));
        }
        if !self.v4.insert(IpAddr::V4(ipv4)) {
            return Err(c.err(
                format!("{f}.ipv4"),
                format!("{ipv4} is already used (by another pod or the node)"),
            ));
        }
        let ipv6 = parse_v6(c, &format!("{f}.ipv6"), &p.ipv6)?;
        if !v6_host_ok(ipv6_cidr, ipv6) {
            return Err(c.err(
                format!("{f}.ipv6"),
                format!("{ipv6} is not a host address inside lab.ipv6_cidr {ipv6_cidr}"),
            ));
        }
        if !self.v6.insert(IpAddr::V6(ipv6)) {
            return Err(c.err(
                format!("{f}.ipv6"),
                format!("{ipv6} is already used (by another pod or the node)"),
            ));
        }
        let workload = match &p.workload {
            None => None,
            Some(w) => {
                let kind_ok = !w.kind.is_empty()
                    && w.kind.len() <= 63
                    && w.kind.bytes().all(|b| b.is_ascii_alphanumeric());
                if !kind_ok {
                    return Err(c.err(
                        format!("{f}.workload.kind"),
                        format!("{:?} is not a workload kind (like Deployment)", w.kind),
                    ));
                }
                check_name(c, &format!("{f}.workload.name"), &w.name)?;
                Some(Workload {
                    kind: w.kind.clone(),
                    name: w.name.clone(),
                })
            }
        };
        let netns = pod_netns_name(&lab.name, &p.namespace, &p.name);
        if !self.netns.insert(netns.clone()) {
            return Err(c.err(
                format!("{f}.name"),
                format!("netns name {netns} collides with another pod's; rename one"),
            ));
        }
        let key = format!("{}/{}", p.namespace, p.name);
        let h = fnv1a(key.as_bytes());
        let host_veth = format!("lxc{:012x}", h >> 16);
        if !self.veth.insert(host_veth.clone()) {
            return Err(c.err(
                format!("{f}.name"),
                "interface name hash collision; rename the pod",
            ));
        }
        let node = match &p.node {
            None => lab.node.clone(),
            Some(n) if *n == lab.node || self.nodes.iter().any(|x| x.name == *n) => n.clone(),
            Some(n) => {
                return Err(c.err(
                    format!("{f}.node"),
                    format!("node {n:?} is neither lab.node nor listed in [[nodes]]"),
                ));
            }
        };
        Ok(Pod {
            index,
            node,
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            labels: p.labels.clone(),
            ipv4,
            ipv6,
            workload,
            netns,
            host_veth,
            pod_ifname: POD_IFNAME,
            host_mac: mac_from(fnv1a(format!("host:{key}").as_bytes())),
            pod_mac: mac_from(fnv1a(format!("pod:{key}").as_bytes())),
            l7: p
                .l7
                .iter()
                .enumerate()
                .map(|(j, r)| L7Rule::parse(r).map_err(|m| c.err(format!("{f}.l7[{j}]"), m)))
                .collect::<Result<Vec<_>, _>>()?,
            added,
        })
    }

    /// No pod's netns may be named like the lab's own `node` or `world` netns.
    fn check_reserved(&self, c: &Ctx<'_>) -> Result<(), SpecError> {
        for reserved in ["node", "world"] {
            let n = format!("hl-{}-{reserved}", self.lab.name);
            if self.netns.contains(&n) {
                return Err(c.err(
                    "pods",
                    format!("a pod's netns name collides with the lab's {n}"),
                ));
            }
        }
        Ok(())
    }
}

fn v4_host_ok(cidr: Ipv4Net, a: Ipv4Addr) -> bool {
    cidr.contains(&a) && a != cidr.network() && a != cidr.broadcast()
}

fn v6_host_ok(cidr: Ipv6Net, a: Ipv6Addr) -> bool {
    cidr.contains(&a) && a != cidr.network()
}

/// Network namespace name of a pod: `hl-<lab>-<namespace>-<name>`.
pub fn pod_netns_name(lab: &str, namespace: &str, name: &str) -> String {
    format!("hl-{lab}-{namespace}-{name}")
}

impl LabSpec {
    /// Reads, parses and validates a spec file.
    pub fn load(path: impl AsRef<Path>) -> Result<LabSpec, SpecError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses and validates spec text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<LabSpec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError::Parse {
            origin: origin.to_string(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim().replace('\n', " "),
        })?;
        Self::validate(raw, origin)
    }

    fn validate(raw: RawSpec, origin: &str) -> Result<LabSpec, SpecError> {
        let c = Ctx { origin };
        let l = &raw.lab;
        let name_ok = !l.name.is_empty()
            && l.name.len() <= 8
            && l.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(c.err(
                "lab.name",
                format!("{:?} must be 1-8 chars of a-z, 0-9 and '-'", l.name),
            ));
        }
        let node_ok = valid_node_name(&l.node);
        if !node_ok {
            return Err(c.err("lab.node", format!("{:?} is not a valid node name", l.node)));
        }
        let mut nodes: Vec<NodeSpec> = Vec::new();
        for (i, n) in raw.nodes.iter().enumerate() {
            if !valid_node_name(&n.name) {
                return Err(c.err(
                    format!("nodes[{i}].name"),
                    format!("{:?} is not a valid node name", n.name),
                ));
            }
            if n.name != l.node && nodes.iter().any(|x| x.name == n.name) {
                return Err(c.err(
                    format!("nodes[{i}].name"),
                    format!("node {} is listed twice", n.name),
                ));
            }
            if let Some(a) = &n.address {
                let ok = a
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
                if !ok {
                    return Err(c.err(
                        format!("nodes[{i}].address"),
                        format!("{a:?} is not HOST:PORT"),
                    ));
                }
            }
            nodes.push(NodeSpec {
                name: n.name.clone(),
                address: n.address.clone(),
            });
        }
        let cluster = l.cluster.clone().unwrap_or_else(|| "default".to_string());
        check_name(&c, "lab.cluster", &cluster)?;
        let ipv4_cidr: Ipv4Net = l.ipv4_cidr.parse().map_err(|_| {
            c.err(
                "lab.ipv4_cidr",
                format!("{:?} is not an IPv4 CIDR (like 10.200.0.0/24)", l.ipv4_cidr),
            )
        })?;
        if ipv4_cidr.prefix_len() > 30 {
            return Err(c.err("lab.ipv4_cidr", "prefix must be /30 or shorter"));
        }
        let ipv6_cidr: Ipv6Net = l.ipv6_cidr.parse().map_err(|_| {
            c.err(
                "lab.ipv6_cidr",
                format!("{:?} is not an IPv6 CIDR (like fd00:200::/64)", l.ipv6_cidr),
            )
        })?;
        if ipv6_cidr.prefix_len() > 126 {
            return Err(c.err("lab.ipv6_cidr", "prefix must be /126 or shorter"));
        }
        let ipv4_cidr = ipv4_cidr.trunc();
        let ipv6_cidr = ipv6_cidr.trunc();
        let first_v4 = Ipv4Addr::from(u32::from(ipv4_cidr.network()) + 1);
        let first_v6 = Ipv6Addr::from(u128::from(ipv6_cidr.network()) + 1);
        let node_ipv4 = match &l.node_ipv4 {
            Some(s) => parse_v4(&c, "lab.node_ipv4", s)?,
            None => first_v4,
        };
        let node_ipv6 = match &l.node_ipv6 {
            Some(s) => parse_v6(&c, "lab.node_ipv6", s)?,
            None => first_v6,
        };
        if !v4_host_ok(ipv4_cidr, node_ipv4) {
            return Err(c.err(
                "lab.node_ipv4",
                format!("{node_ipv4} is not a host address of {ipv4_cidr}"),
            ));
        }
        if !v6_host_ok(ipv6_cidr, node_ipv6) {
            return Err(c.err(
                "lab.node_ipv6",
                format!("{node_ipv6} is not a host address of {ipv6_cidr}"),
            ));
        }
        let world_ipv4 = match &l.world_ipv4 {
            Some(s) => parse_v4(&c, "lab.world_ipv4", s)?,
            None => Ipv4Addr::new(192, 0, 2, 1),
        };
        let world_ipv6 = match &l.world_ipv6 {
            Some(s) => parse_v6(&c, "lab.world_ipv6", s)?,
            None => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        };
        let world4_net = Ipv4Net::new(world_ipv4, 24)
            .expect("24 is a valid prefix")
            .trunc();
        if world4_net.contains(&ipv4_cidr.network()) || ipv4_cidr.contains(&world_ipv4) {
            return Err(c.err(
                "lab.world_ipv4",
                format!("{world_ipv4}/24 overlaps {ipv4_cidr}"),
            ));
        }
        if world_ipv4.is_unspecified() || world_ipv4.is_loopback() || world_ipv4.is_multicast() {
            return Err(c.err(
                "lab.world_ipv4",
                format!("{world_ipv4} is not a unicast address"),
            ));
        }
        let world6_net = Ipv6Net::new(world_ipv6, 64)
            .expect("64 is a valid prefix")
            .trunc();
        if world6_net.contains(&ipv6_cidr.network()) || ipv6_cidr.contains(&world_ipv6) {
            return Err(c.err(
                "lab.world_ipv6",
                format!("{world_ipv6}/64 overlaps {ipv6_cidr}"),
            ));
        }
        if world_ipv6.is_unspecified() || world_ipv6.is_loopback() || world_ipv6.is_multicast() {
            return Err(c.err(
                "lab.world_ipv6",
                format!("{world_ipv6} is not a unicast address"),
            ));
        }
        let lab = LabMeta {
            name: l.name.clone(),
            node: l.node.clone(),
            cluster,
            ipv4_cidr,
            ipv6_cidr,
            node_ipv4,
            node_ipv6,
            world_ipv4,
            world_ipv6,
            dns_visibility: l.dns_visibility.unwrap_or(true),
        };

        // Each other node's host addresses follow the lab's node addresses.
        for (i, name) in node_names(&lab, &nodes).iter().enumerate().skip(1) {
            let (a4, a6) = node_addresses_at(&lab, i);
            if !v4_host_ok(lab.ipv4_cidr, a4) || !v6_host_ok(lab.ipv6_cidr, a6) {
                return Err(c.err(
                    "nodes",
                    format!(
                        "node {name}'s addresses {a4} and {a6} (after lab.node_ipv4/node_ipv6) are not host addresses of the lab's CIDRs"
                    ),
                ));
            }
        }
        if raw.pods.is_empty() {
            return Err(c.err("pods", "a lab needs at least one [[pods]] entry"));
        }
        let mut checker = PodChecker::new(&lab, &nodes);
        let mut pods: Vec<Pod> = Vec::with_capacity(raw.pods.len());
        for (i, p) in raw.pods.iter().enumerate() {
            pods.push(checker.check(&c, &format!("pods[{i}]"), i, p, false)?);
        }
        checker.check_reserved(&c)?;

        let mut services = Vec::with_capacity(raw.services.len());
        let mut seen_svc = HashSet::new();
        for (i, s) in raw.services.iter().enumerate() {
            let f = format!("services[{i}]");
            check_name(&c, &format!("{f}.namespace"), &s.namespace)?;
            check_name(&c, &format!("{f}.name"), &s.name)?;
            if !seen_svc.insert((s.namespace.clone(), s.name.clone())) {
                return Err(c.err(
                    format!("{f}.name"),
                    format!("service {}/{} is defined twice", s.namespace, s.name),
                ));
            }
            if s.selector.is_empty() {
                return Err(c.err(
                    format!("{f}.selector"),
                    "empty selector: name at least one label",
                ));
            }
            check_labels(&c, &format!("{f}.selector"), &s.selector)?;
            if s.ports.is_empty() {
                return Err(c.err(format!("{f}.ports"), "a service needs at least one port"));
            }
            let ports = parse_ports(&c, &format!("{f}.ports"), &s.ports)?;
            services.push(Service {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                selector: s.selector.clone(),
                ports,
            });
        }

        let mut policies = Vec::with_capacity(raw.policies.len());
        let mut seen_pol = HashSet::new();
        for (i, p) in raw.policies.iter().enumerate() {
            let f = format!("policies[{i}]");
            check_name(&c, &format!("{f}.namespace"), &p.namespace)?;
            check_name(&c, &format!("{f}.name"), &p.name)?;
            if !seen_pol.insert((p.namespace.clone(), p.name.clone())) {
                return Err(c.err(
                    format!("{f}.name"),
                    format!("policy {}/{} is defined twice", p.namespace, p.name),
                ));
            }
            check_labels(&c, &format!("{f}.endpoint_selector"), &p.endpoint_selector)?;
            let ingress_rules = |field: &str,
                                 rules: &[RawIngress]|
             -> Result<Vec<Rule>, SpecError> {
                rules
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        Ok(Rule {
                            peers: parse_peers(&c, &format!("{f}.{field}[{j}].from"), &r.from)?,
                            ports: parse_ports(&c, &format!("{f}.{field}[{j}].ports"), &r.ports)?,
                            l7: None,
                        })
                    })
                    .collect()
            };
            let egress_rules = |field: &str, rules: &[RawEgress]| -> Result<Vec<Rule>, SpecError> {
                rules
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        Ok(Rule {
                            peers: parse_peers(&c, &format!("{f}.{field}[{j}].to"), &r.to)?,
                            ports: parse_ports(&c, &format!("{f}.{field}[{j}].ports"), &r.ports)?,
                            l7: None,
                        })
                    })
                    .collect()
            };
            let policy = Policy {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                endpoint_selector: p.endpoint_selector.clone(),
                ingress: ingress_rules("ingress", &p.ingress)?,
                egress: egress_rules("egress", &p.egress)?,
                ingress_deny: ingress_rules("ingress_deny", &p.ingress_deny)?,
                egress_deny: egress_rules("egress_deny", &p.egress_deny)?,
                ..Policy::default()
            };
            if policy.ingress.is_empty()
                && policy.egress.is_empty()
                && policy.ingress_deny.is_empty()
                && policy.egress_deny.is_empty()
            {
                return Err(c.err(
                    f,
                    "a policy needs at least one of ingress, egress, ingress_deny, egress_deny",
                ));
            }
            policies.push(policy);
        }

        Ok(LabSpec {
            origin: origin.to_string(),
            lab,
            nodes,
            pods,
            services,
            policies,
        })
    }

    /// Every simulated node: `lab.node` first, then `[[nodes]]` in order.
    pub fn node_names(&self) -> Vec<&str> {
        node_names(&self.lab, &self.nodes)
    }

    /// A multi-node lab: each node is a netns of its own, joined by an underlay.
    pub fn is_multi_node(&self) -> bool {
        self.node_names().len() > 1
    }

    /// Position of `node` in [`LabSpec::node_names`] (0 for an unknown name: the lab's node).
    fn node_index(&self, node: &str) -> usize {
        self.node_names()
            .iter()
            .position(|n| *n == node)
            .unwrap_or(0)
    }

    /// The host addresses of `node` (on its `cilium_host`): `lab.node_ipv4`/`node_ipv6` for
    /// `lab.node`, the next addresses for the other nodes in order.
    pub fn node_addresses(&self, node: &str) -> (Ipv4Addr, Ipv6Addr) {
        node_addresses_at(&self.lab, self.node_index(node))
    }

    /// The netns of `node`: `hl-<lab>-node` for `lab.node`, `hl-<lab>-node@<name>` for
    /// the others.
    pub fn node_netns_of(&self, node: &str) -> String {
        match self.node_index(node) {
            0 => self.node_netns(),
            _ => format!("hl-{}-node@{node}", self.lab.name),
        }
    }

    /// The underlay of a multi-node lab (a bridge every node is linked to):
    /// `hl-<lab>-underlay`.
    pub fn underlay_netns(&self) -> String {
        format!("hl-{}-underlay", self.lab.name)
    }

    /// The underlay addresses of `node` (198.18.0.0/24 and fd00:198:18::/64, the
    /// benchmarking range, only ever inside the lab's namespaces).
    pub fn underlay_addresses(&self, node: &str) -> (Ipv4Addr, Ipv6Addr) {
        let i = self.node_index(node) as u32 + 1;
        (
            Ipv4Addr::new(198, 18, 0, i as u8),
            Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, i as u16),
        )
    }

    /// The MAC of `node`'s underlay interface.
    pub fn underlay_mac(&self, node: &str) -> [u8; 6] {
        mac_from(fnv1a(
            format!("{}/underlay/{node}", self.lab.name).as_bytes(),
        ))
    }

    /// Hubble's name of a node of this lab: `cluster/node` unless the cluster is `default`.
    pub fn hubble_node_name(&self, node: &str) -> String {
        if self.lab.cluster.is_empty() || self.lab.cluster == "default" {
            node.to_string()
        } else {
            format!("{}/{}", self.lab.cluster, node)
        }
    }

    /// Name of the node netns: `hl-<lab>-node`.
    pub fn node_netns(&self) -> String {
        format!("hl-{}-node", self.lab.name)
    }

    /// Name of the world netns: `hl-<lab>-world`.
    pub fn world_netns(&self) -> String {
        format!("hl-{}-world", self.lab.name)
    }

    /// Every netns the lab owns: nodes first (and the underlay), world last.
    pub fn all_netns(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .node_names()
            .iter()
            .map(|n| self.node_netns_of(n))
            .collect();
        if self.is_multi_node() {
            v.push(self.underlay_netns());
        }
        v.extend(self.pods.iter().map(|p| p.netns.clone()));
        v.push(self.world_netns());
        v
    }

    /// Node-side address of the world link (`/24`): `.254` of the world's /24 (or `.253`).
    pub fn world_gateway_ipv4(&self) -> Ipv4Addr {
        let o = self.lab.world_ipv4.octets();
        let last = if o[3] == 254 { 253 } else { 254 };
        Ipv4Addr::new(o[0], o[1], o[2], last)
    }

    /// Node-side IPv6 of the world link (`/64`): `::fffe` of the world's /64 (or `::fffd`).
    pub fn world_gateway_ipv6(&self) -> Ipv6Addr {
        let net = u128::from(self.lab.world_ipv6) & !0xffff_ffff_ffff_ffff_u128;
        let gw = Ipv6Addr::from(net | 0xfffe);
        if gw == self.lab.world_ipv6 {
            Ipv6Addr::from(net | 0xfffd)
        } else {
            gw
        }
    }

    /// MAC of the node's `world0` (locally administered, derived from the lab name).
    pub fn world_gateway_mac(&self) -> [u8; 6] {
        mac_from(fnv1a(format!("world-gw:{}", self.lab.name).as_bytes()))
    }

    /// MAC of the world netns' `eth0`.
    pub fn world_mac(&self) -> [u8; 6] {
        mac_from(fnv1a(format!("world:{}", self.lab.name).as_bytes()))
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The pod, host or world owning an address, as the lab sees it.
    pub fn peer_of(&self, ip: IpAddr) -> Peer {
        if let Some(p) = self
            .pods
            .iter()
            .find(|p| IpAddr::V4(p.ipv4) == ip || IpAddr::V6(p.ipv6) == ip)
        {
            return Peer::Pod(p.index);
        }
        let is_node = self.node_names().into_iter().any(|n| {
            let (a4, a6) = self.node_addresses(n);
            ip == IpAddr::V4(a4) || ip == IpAddr::V6(a6)
        });
        let gateway = [
            IpAddr::V4(self.world_gateway_ipv4()),
            IpAddr::V6(self.world_gateway_ipv6()),
        ];
        if is_node || gateway.contains(&ip) {
            Peer::Host
        } else {
            Peer::World
        }
    }

    /// Pods whose effective labels (spec labels plus `io.kubernetes.pod.namespace`) contain
    /// every `key=value` of `labels`, in any namespace.
    pub fn pods_selected_by(&self, labels: &Labels) -> Vec<&Pod> {
        self.pods.iter().filter(|p| p.matches(labels)).collect()
    }

    /// Pods of `namespace` matching `labels`.
    pub fn pods_selected_in(&self, namespace: &str, labels: &Labels) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| p.namespace == namespace && p.matches(labels))
            .collect()
    }

    /// A service's endpoints: the pods of its namespace its selector matches.
    pub fn service_backends(&self, svc: &Service) -> Vec<&Pod> {
        self.pods_selected_in(&svc.namespace, &svc.selector)
    }

    /// Services selecting a pod.
    pub fn services_of(&self, pod: &Pod) -> Vec<&Service> {
        self.services
            .iter()
            .filter(|s| s.namespace == pod.namespace && pod.matches(&s.selector))
            .collect()
    }

    /// Policies whose endpoint selector matches the pod (same namespace).
    pub fn policies_for(&self, pod: &Pod) -> Vec<&Policy> {
        self.policies
            .iter()
            .filter(|p| p.namespace == pod.namespace && pod.matches(&p.endpoint_selector))
            .collect()
    }

    /// Resolves a DNS name the way the lab's DNS server does: `<svc>.<ns>.svc.cluster.local.`
    /// (case-insensitive, trailing dot optional) to the service's backends.
    pub fn resolve(&self, name: &str) -> Option<Vec<&Pod>> {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        self.services
            .iter()
            .find(|s| s.dns_name().trim_end_matches('.') == n)
            .map(|s| self.service_backends(s))
    }

    fn peer_matches(&self, sel: &PeerSelector, policy_ns: &str, peer: Peer) -> bool {
        match (sel, peer) {
            (PeerSelector::Entity(Entity::All), _) => true,
            (PeerSelector::Entity(Entity::Cluster), Peer::Pod(_) | Peer::Host) => true,
            (PeerSelector::Entity(Entity::World), Peer::World) => true,
            (PeerSelector::Entity(Entity::Host), Peer::Host) => true,
            (PeerSelector::Labels(l), Peer::Pod(i)) => {
                let pod = &self.pods[i];
                (l.contains_key(NAMESPACE_LABEL) || pod.namespace == policy_ns) && pod.matches(l)
            }
            _ => false,
        }
    }

    fn rule_matches(&self, rule: &Rule, policy_ns: &str, peer: Peer, l4: L4) -> bool {
        if rule.peers.is_empty() && rule.ports.is_empty() {
            return false;
        }
        let peer_ok = rule.peers.is_empty()
            || rule
                .peers
                .iter()
                .any(|s| self.peer_matches(s, policy_ns, peer));
        let port_ok = rule.ports.is_empty()
            || match l4 {
                L4::Tcp(p) => rule
                    .ports
                    .iter()
                    .any(|r| r.port == p && r.protocol.covers(Protocol::Tcp)),
                L4::Udp(p) => rule
                    .ports
                    .iter()
                    .any(|r| r.port == p && r.protocol.covers(Protocol::Udp)),
                L4::Icmp => false,
            };
        peer_ok && port_ok
    }

    /// Verdict of one direction at one pod: `ingress` true checks `pod`'s ingress from `peer`.
    fn direction_allows(&self, pod: &Pod, ingress: bool, peer: Peer, l4: L4) -> bool {
        let mut enforced = false;
        let mut allowed = false;
        for pol in self.policies_for(pod) {
            let (allow, deny) = if ingress {
                (&pol.ingress, &pol.ingress_deny)
            } else {
                (&pol.egress, &pol.egress_deny)
            };
            if deny
                .iter()
                .any(|r| self.rule_matches(r, &pol.namespace, peer, l4))
            {
                return false;
            }
            enforced |= !allow.is_empty() || !deny.is_empty();
            allowed |= allow
                .iter()
                .any(|r| self.rule_matches(r, &pol.namespace, peer, l4));
        }
        !enforced || allowed
    }

    /// The verdict the spec's policies give a connection from `src` to `dst`: `src`'s egress
    /// first, then `dst`'s ingress (the host and the world enforce nothing).
    pub fn policy_verdict(&self, src: Peer, dst: Peer, l4: L4) -> Verdict {
        if let Peer::Pod(i) = src
            && !self.direction_allows(&self.pods[i], false, dst, l4)
        {
            return Verdict::Denied { ingress: false };
        }
        if let Peer::Pod(i) = dst
            && !self.direction_allows(&self.pods[i], true, src, l4)
        {
            return Verdict::Denied { ingress: true };
        }
        Verdict::Allowed
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pod(i) => write!(f, "pod#{i}"),
            Peer::Host => f.write_str("host"),
            Peer::World => f.write_str("world"),
        }
    }
}

// ---- runtime pods (`lab add-pod`) ------------------------------------------------------

/// The runtime pods file: the `[[pods]]` entries `lab add-pod` added to a running lab.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPodsFile {
    #[serde(default)]
    pods: Vec<PodDef>,
}

/// Reads a runtime pods file (`[[pods]]` entries, the spec's pod schema); a missing file
/// has no pods. Parse errors name the file and line.
pub fn read_pods_file(path: impl AsRef<Path>) -> Result<Vec<PodDef>, SpecError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SpecError::Read { origin, source }),
    };
    let raw: RawPodsFile = toml::from_str(&text).map_err(|e| SpecError::Parse {
        origin: origin.clone(),
        line: e.span().map_or(1, |s| line_of(&text, s.start)),
        message: e.message().trim().replace('\n', " "),
    })?;
    Ok(raw.pods)
}

/// A TOML basic string: `"..."` with `"`, `\` and control characters escaped.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text of a runtime pods file: one `[[pods]]` table per pod, fields in the spec's
/// order, absent options left out.
pub fn pods_file_text(pods: &[PodDef]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "# Pods added to a running lab with `hubble-agent lab add-pod` (removed by\n\
         # `lab remove-pod` and `lab down`). Same schema as the spec's [[pods]].\n",
    );
    for p in pods {
        let _ = writeln!(s, "\n[[pods]]");
        if let Some(n) = &p.node {
            let _ = writeln!(s, "node = {}", toml_str(n));
        }
        let _ = writeln!(s, "namespace = {}", toml_str(&p.namespace));
        let _ = writeln!(s, "name = {}", toml_str(&p.name));
        let labels: Vec<String> = p
            .labels
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(s, "labels = {{}}");
        } else {
            let _ = writeln!(s, "labels = {{ {} }}", labels.join(", "));
        }
        let _ = writeln!(s, "ipv4 = {}", toml_str(&p.ipv4));
        let _ = writeln!(s, "ipv6 = {}", toml_str(&p.ipv6));
        if let Some(w) = &p.workload {
            let _ = writeln!(
                s,
                "workload = {{ kind = {}, name = {} }}",
                toml_str(&w.kind),
                toml_str(&w.name)
            );
        }
        if !p.l7.is_empty() {
            let rules: Vec<String> = p.l7.iter().map(|r| toml_str(r)).collect();
            let _ = writeln!(s, "l7 = [{}]", rules.join(", "));
        }
    }
    s
}

/// Writes a runtime pods file atomically: a temporary file (mode 0600) in the same
/// directory, fsync, rename over `path`, fsync of the directory. A reader polling the file
/// sees the old or the new list, never half of one. No pods removes the file.
pub fn write_pods_file(path: impl AsRef<Path>, pods: &[PodDef]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if pods.is_empty() {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    } else {
        let file_name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other(format!("{}: not a file path", path.display())))?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(pods_file_text(pods).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    // Make the rename (or removal) itself durable.
    std::fs::File::open(&dir)?.sync_all()
}

impl LabSpec {
    /// The runtime pods file of this lab: `/run/hubble-lab/<lab>.pods.toml`, next to the
    /// `<lab>.netns` state file. `lab add-pod` writes it, `lab remove-pod` and `lab down`
    /// shrink or remove it.
    pub fn live_pods_path(&self) -> PathBuf {
        Path::new(super::topology::STATE_DIR).join(format!("{}.pods.toml", self.lab.name))
    }

    /// The spec file plus the pods added at runtime ([`LabSpec::live_pods_path`]), validated
    /// together: the runtime pods follow the spec's (their `index` continues after them,
    /// `added` is true) and must not repeat a name or address. A missing runtime file gives
    /// just the spec. Errors in the runtime file name that file.
    pub fn load_live(path: impl AsRef<Path>) -> Result<LabSpec, SpecError> {
        Self::load(path)?.with_live_pods()
    }

    /// [`LabSpec::load_live`] with the runtime pods read from `pods_path`.
    pub fn load_with_pods(
        path: impl AsRef<Path>,
        pods_path: impl AsRef<Path>,
    ) -> Result<LabSpec, SpecError> {
        Self::load(path)?.with_pods_file(pods_path)
    }

    /// This spec's own pods plus the lab's current runtime pods (any runtime pods this
    /// value already carries are replaced).
    pub fn with_live_pods(&self) -> Result<LabSpec, SpecError> {
        self.with_pods_file(self.live_pods_path())
    }

    /// This spec's own pods plus the pods of a runtime pods file (missing = none).
    pub fn with_pods_file(&self, pods_path: impl AsRef<Path>) -> Result<LabSpec, SpecError> {
        let pods_path = pods_path.as_ref();
        let defs = read_pods_file(pods_path)?;
        self.with_pods(&defs, &pods_path.display().to_string())
    }

    /// This spec's own pods plus `defs` (added pods), validated like the spec's `[[pods]]`;
    /// errors name `origin` and `pods[i]`, `i` counting in `defs`.
    pub fn with_pods(&self, defs: &[PodDef], origin: &str) -> Result<LabSpec, SpecError> {
        let mut out = self.spec_only();
        let c = Ctx { origin };
        let mut checker = PodChecker::new(&out.lab, &out.nodes);
        for p in &out.pods {
            checker.seed(p);
        }
        let first = out.pods.len();
        let mut added = Vec::with_capacity(defs.len());
        for (j, d) in defs.iter().enumerate() {
            added.push(checker.check(&c, &format!("pods[{j}]"), first + j, d, true)?);
        }
        checker.check_reserved(&c)?;
        out.pods.extend(added);
        Ok(out)
    }

    /// The spec file's part of this spec: without the pods added at runtime.
    pub fn spec_only(&self) -> LabSpec {
        let mut s = self.clone();
        s.pods.retain(|p| !p.added);
        s
    }

    /// How many pods come from the spec file (they are `pods[..spec_pod_count()]`).
    pub fn spec_pod_count(&self) -> usize {
        self.pods.iter().filter(|p| !p.added).count()
    }

    /// The lowest free host address of `lab.ipv4_cidr` above its first one (`.1`), not the
    /// node's and not any pod's; `None` when the CIDR is full.
    pub fn free_ipv4(&self) -> Option<Ipv4Addr> {
        let cidr = self.lab.ipv4_cidr;
        let hosts = self
            .node_names()
            .into_iter()
            .map(|n| self.node_addresses(n));
        let used: HashSet<Ipv4Addr> = self
            .pods
            .iter()
            .map(|p| p.ipv4)
            .chain(hosts.map(|h| h.0))
            .collect();
        let (lo, hi) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
        (lo.saturating_add(2)..hi)
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
    }

    /// The IPv6 address for a pod with IPv4 `ipv4`: the address of `lab.ipv6_cidr` whose
    /// last hex digits spell the IPv4's host number in decimal (10.244.9.12 in a /24 ->
    /// `<ipv6 prefix>::12`, the fixtures' convention) when that is free, else the lowest
    /// free host address above the CIDR's first one. `None` when nothing is free.
    pub fn free_ipv6_for(&self, ipv4: Ipv4Addr) -> Option<Ipv6Addr> {
        let cidr = self.lab.ipv6_cidr;
        let hosts = self
            .node_names()
            .into_iter()
            .map(|n| self.node_addresses(n));
        let used: HashSet<Ipv6Addr> = self
            .pods
            .iter()
            .map(|p| p.ipv6)
            .chain(hosts.map(|h| h.1))
            .collect();
        let free = |a: Ipv6Addr| v6_host_ok(cidr, a) && !used.contains(&a);
        let net = u128::from(cidr.network());
        let host = u32::from(ipv4).wrapping_sub(u32::from(self.lab.ipv4_cidr.network()));
        let derived = u128::from_str_radix(&host.to_string(), 16)
            .ok()
            .and_then(|h| net.checked_add(h))
            .map(Ipv6Addr::from);
        if let Some(a) = derived.filter(|&a| free(a)) {
            return Some(a);
        }
        // At most used.len() candidates are taken, so this ends quickly.
        (2..=used.len() as u128 + 2)
            .filter_map(|h| net.checked_add(h).map(Ipv6Addr::from))
            .find(|&a| free(a))
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lab");

    fn demo() -> LabSpec {
        LabSpec::load(format!("{FIXTURES}/demo.toml")).unwrap()
    }

    #[test]
    fn multinode_fixture_and_node_errors() {
        let m = LabSpec::load(format!("{FIXTURES}/multinode.toml")).unwrap();
        assert_eq!(m.node_names(), ["node-1", "node-2", "node-3"]);
        assert_eq!(m.nodes[2].address.as_deref(), Some("127.0.0.1:4313"));
        let per_node: Vec<_> = m.pods.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(per_node, ["node-1", "node-2", "node-3", "node-3", "node-2"]);
        // Single-node specs: every pod on lab.node, no [[nodes]].
        let mini = LabSpec::parse(MINI, "t.toml").unwrap();
        assert!(mini.nodes.is_empty() && mini.pods.iter().all(|p| p.node == "n1"));
        assert_eq!(mini.node_names(), ["n1"]);
        let e = LabSpec::parse(
            &MINI.replacen(
                "namespace = \"default\"",
                "node = \"n9\"\nnamespace = \"default\"",
                1,
            ),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pods[0].node") && e.contains("n9"), "{e}");
        let e = LabSpec::parse(
            &format!("{MINI}\n[[nodes]]\nname = \"n2\"\naddress = \"nope\"\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nodes[0].address"), "{e}");
    }

    const MINI: &str = r#"
[lab]
name = "t1"
node = "n1"
ipv4_cidr = "10.9.0.0/24"
ipv6_cidr = "fd00:9::/64"

[[pods]]
namespace = "default"
name = "a"
labels = { app = "a" }
ipv4 = "10.9.0.10"
ipv6 = "fd00:9::10"

[[pods]]
namespace = "default"
name = "b"
labels = { app = "b" }
ipv4 = "10.9.0.11"
ipv6 = "fd00:9::11"
"#;

    /// Parses MINI with `from` replaced by `to` and returns the error line.
    fn err_with(from: &str, to: &str) -> String {
        assert!(MINI.contains(from), "{from}");
        LabSpec::parse(&MINI.replacen(from, to, 1), "t.toml")
            .unwrap_err()
            .to_string()
    }

    fn err_appending(extra: &str) -> String {
        LabSpec::parse(&format!("{MINI}{extra}"), "t.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn fixtures_load() {
        let d = demo();
        assert_eq!(d.lab.name, "demo");
        assert_eq!(d.lab.cluster, "default");
        assert!(d.pods.len() >= 8);
        let namespaces: HashSet<_> = d.pods.iter().map(|p| p.namespace.as_str()).collect();
        assert!(namespaces.len() >= 3);
        assert!(d.services.len() >= 2);
        assert_eq!(d.lab.node_ipv4, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(d.lab.world_ipv4, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(d.world_gateway_ipv4(), Ipv4Addr::new(192, 0, 2, 254));
        assert_eq!(
            d.world_gateway_ipv6(),
            "2001:db8::fffe".parse::<Ipv6Addr>().unwrap()
        );
        let m = LabSpec::load(format!("{FIXTURES}/mini.toml")).unwrap();
        assert_eq!(m.pods.len(), 3);
    }

    #[test]
    fn names_and_accessors() {
        let d = demo();
        assert_eq!(d.node_netns(), "hl-demo-node");
        assert_eq!(d.world_netns(), "hl-demo-world");
        let fe = d.pod("shop", "frontend-58c7d-h2kfp").unwrap();
        assert_eq!(fe.netns, "hl-demo-shop-frontend-58c7d-h2kfp");
        assert!(fe.host_veth.starts_with("lxc") && fe.host_veth.len() == 15);
        assert_eq!(fe.pod_ifname, "eth0");
        assert_eq!(fe.host_mac[0] & 0x03, 0x02, "locally administered unicast");
        let all = d.all_netns();
        assert_eq!(all.len(), d.pods.len() + 2);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
        let veths: HashSet<_> = d.pods.iter().map(|p| &p.host_veth).collect();
        assert_eq!(veths.len(), d.pods.len());
        // Stable across loads (the datapath and status rely on it).
        assert_eq!(demo().pods[0].host_veth, d.pods[0].host_veth);
        assert_eq!(
            fe.k8s_labels("default"),
            vec![
                "k8s:app=frontend",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.kubernetes.pod.namespace=shop",
                "k8s:tier=web",
            ]
        );
    }

    #[test]
    fn selectors() {
        let d = demo();
        let sel = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(d.pods_selected_by(&sel(&[("app", "catalog")])).len(), 2);
        assert_eq!(d.pods_selected_by(&sel(&[("tier", "backend")])).len(), 3);
        assert_eq!(
            d.pods_selected_by(&sel(&[(NAMESPACE_LABEL, "payments")]))
                .len(),
            2
        );
        assert!(d.pods_selected_by(&sel(&[("app", "nope")])).is_empty());
        assert!(
            d.pods_selected_in("payments", &sel(&[("app", "catalog")]))
                .is_empty()
        );
        let catalog = d.services.iter().find(|s| s.name == "catalog").unwrap();
        assert_eq!(d.service_backends(catalog).len(), 2);
        assert_eq!(catalog.dns_name(), "catalog.shop.svc.cluster.local.");
        assert_eq!(
            d.resolve("CATALOG.shop.svc.cluster.local").unwrap().len(),
            2
        );
        assert!(d.resolve("catalog.payments.svc.cluster.local.").is_none());
        let db = d.pod("payments", "db-0").unwrap();
        assert_eq!(d.policies_for(db).len(), 1);
        assert_eq!(d.peer_of(IpAddr::V4(db.ipv4)), Peer::Pod(db.index));
        assert_eq!(d.peer_of(IpAddr::V6(d.lab.node_ipv6)), Peer::Host);
        assert_eq!(d.peer_of("192.0.2.1".parse().unwrap()), Peer::World);
    }

    #[test]
    fn policy_verdicts() {
        let d = demo();
        let idx = |ns: &str, prefix: &str| {
            Peer::Pod(
                d.pods
                    .iter()
                    .find(|p| p.namespace == ns && p.name.starts_with(prefix))
                    .unwrap()
                    .index,
            )
        };
        let (fe, cat, cart) = (
            idx("shop", "frontend"),
            idx("shop", "catalog"),
            idx("shop", "cart"),
        );
        let (api, db, dns, lg) = (
            idx("payments", "payments-api"),
            idx("payments", "db"),
            idx("kube-system", "coredns"),
            idx("default", "loadgen"),
        );
        let allowed = Verdict::Allowed;
        let deny_in = Verdict::Denied { ingress: true };
        let deny_eg = Verdict::Denied { ingress: false };
        assert_eq!(d.policy_verdict(fe, cat, L4::Tcp(8080)), allowed);
        assert_eq!(d.policy_verdict(fe, cat, L4::Tcp(8081)), deny_in);
        assert_eq!(d.policy_verdict(fe, cat, L4::Icmp), deny_in);
        assert_eq!(d.policy_verdict(lg, cat, L4::Tcp(8080)), deny_in);
        assert_eq!(d.policy_verdict(cart, cat, L4::Tcp(8080)), deny_in);
        // Cross-namespace peers need the namespace label in the selector.
        assert_eq!(d.policy_verdict(lg, fe, L4::Tcp(80)), allowed);
        assert_eq!(d.policy_verdict(cart, fe, L4::Tcp(80)), deny_in);
        assert_eq!(d.policy_verdict(Peer::World, fe, L4::Tcp(80)), allowed);
        assert_eq!(d.policy_verdict(cart, api, L4::Tcp(9090)), allowed);
        assert_eq!(d.policy_verdict(fe, api, L4::Tcp(9090)), deny_in);
        assert_eq!(d.policy_verdict(api, db, L4::Tcp(5432)), allowed);
        assert_eq!(d.policy_verdict(lg, db, L4::Tcp(5432)), deny_in);
        // db's egress: cluster allowed, world explicitly denied.
        assert_eq!(d.policy_verdict(db, dns, L4::Udp(53)), allowed);
        assert_eq!(d.policy_verdict(db, Peer::World, L4::Tcp(80)), deny_eg);
        assert_eq!(d.policy_verdict(db, Peer::World, L4::Icmp), deny_eg);
        // Unselected endpoints allow everything.
        assert_eq!(d.policy_verdict(lg, dns, L4::Udp(53)), allowed);
        assert_eq!(d.policy_verdict(lg, Peer::World, L4::Icmp), allowed);
        assert_eq!(d.policy_verdict(fe, cart, L4::Tcp(7070)), allowed);

        let m = LabSpec::load(format!("{FIXTURES}/mini.toml")).unwrap();
        let p = |n: &str| Peer::Pod(m.pod("default", n).unwrap().index);
        assert_eq!(
            m.policy_verdict(p("client"), p("server"), L4::Tcp(8080)),
            allowed
        );
        assert_eq!(
            m.policy_verdict(p("intruder"), p("server"), L4::Tcp(8080)),
            deny_in
        );
        assert_eq!(
            m.policy_verdict(p("server"), p("client"), L4::Tcp(8080)),
            allowed
        );
    }

    #[test]
    fn deny_beats_allow_and_empty_rule_matches_nothing() {
        let extra = r#"
[[policies]]
name = "p"
namespace = "default"
endpoint_selector = { app = "b" }
ingress = [{ from = [{ entity = "all" }] }]
ingress_deny = [{ ports = [{ port = 22 }] }]

[[policies]]
name = "q"
namespace = "default"
endpoint_selector = { app = "a" }
ingress = [{}]
"#;
        let s = LabSpec::parse(&format!("{MINI}{extra}"), "t").unwrap();
        let (a, b) = (Peer::Pod(0), Peer::Pod(1));
        assert_eq!(s.policy_verdict(a, b, L4::Tcp(80)), Verdict::Allowed);
        assert_eq!(s.policy_verdict(a, b, L4::Icmp), Verdict::Allowed);
        assert_eq!(
            s.policy_verdict(a, b, L4::Tcp(22)),
            Verdict::Denied { ingress: true }
        );
        assert_eq!(s.policy_verdict(a, b, L4::Udp(22)), Verdict::Allowed);
        assert_eq!(
            s.policy_verdict(b, a, L4::Tcp(80)),
            Verdict::Denied { ingress: true }
        );
        assert_eq!(
            s.policy_verdict(Peer::Host, a, L4::Icmp),
            Verdict::Denied { ingress: true }
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err_with("10.9.0.11", "10.9.0.300"),
            r#"t.toml: pods[1].ipv4: "10.9.0.300" is not an IPv4 address"#
        );
        assert_eq!(
            err_with("10.9.0.11", "10.9.1.11"),
            "t.toml: pods[1].ipv4: 10.9.1.11 is not a host address inside lab.ipv4_cidr 10.9.0.0/24"
        );
        assert_eq!(
            err_with("10.9.0.11", "10.9.0.10"),
            "t.toml: pods[1].ipv4: 10.9.0.10 is already used (by another pod or the node)"
        );
        assert_eq!(
            err_with("10.9.0.11", "10.9.0.1"),
            "t.toml: pods[1].ipv4: 10.9.0.1 is already used (by another pod or the node)"
        );
        assert_eq!(
            err_with("fd00:9::11", "fd00:9::10"),
            "t.toml: pods[1].ipv6: fd00:9::10 is already used (by another pod or the node)"
        );
        assert!(
            err_with("fd00:9::11", "fd01::11")
                .starts_with("t.toml: pods[1].ipv6: fd01::11 is not a host address")
        );
        assert_eq!(
            err_with("name = \"b\"", "name = \"a\""),
            "t.toml: pods[1].name: pod default/a is defined twice"
        );
        assert!(
            err_with("name = \"b\"", "name = \"B\"")
                .starts_with("t.toml: pods[1].name: \"B\" is not a valid name")
        );
        assert_eq!(
            err_with("name = \"t1\"", "name = \"much-too-long\""),
            "t.toml: lab.name: \"much-too-long\" must be 1-8 chars of a-z, 0-9 and '-'"
        );
        assert!(
            err_with("10.9.0.0/24", "10.9.0.0")
                .starts_with("t.toml: lab.ipv4_cidr: \"10.9.0.0\" is not an IPv4 CIDR")
        );
        assert!(
            err_with("[lab]", "[lab]\nworld_ipv4 = \"10.9.0.200\"")
                .starts_with("t.toml: lab.world_ipv4: ")
        );
        assert!(
            err_with("app = \"b\"", "\"bad key!\" = \"b\"")
                .starts_with("t.toml: pods[1].labels.bad key!: ")
        );
        // Parse-level errors give a line number and one line.
        let e = err_with("ipv4 = \"10.9.0.11\"", "ipv4 = 5");
        assert!(e.starts_with("t.toml: line 19: "), "{e}");
        assert!(!e.contains('\n'));
        let e = err_with("labels = { app = \"b\" }", "lables = { app = \"b\" }");
        assert!(
            e.starts_with("t.toml: line 18: unknown field `lables`"),
            "{e}"
        );
        let e = err_appending(
            "\n[[services]]\nnamespace = \"default\"\nname = \"s\"\nselector = {}\nports = [{ port = 80 }]\n",
        );
        assert_eq!(
            e,
            "t.toml: services[0].selector: empty selector: name at least one label"
        );
        let e = err_appending(
            "\n[[services]]\nnamespace = \"default\"\nname = \"s\"\nselector = { app = \"a\" }\nports = [{ port = 70000 }]\n",
        );
        assert_eq!(
            e,
            "t.toml: services[0].ports[0].port: 70000 is not a port (1..65535)"
        );
        let e = err_appending(
            "\n[[services]]\nnamespace = \"default\"\nname = \"s\"\nselector = { app = \"a\" }\nports = [{ port = 0 }]\n",
        );
        assert_eq!(
            e,
            "t.toml: services[0].ports[0].port: 0 is not a port (1..65535)"
        );
        let e = err_appending(
            "\n[[services]]\nnamespace = \"default\"\nname = \"s\"\nselector = { app = \"a\" }\nports = [{ port = 80, protocol = \"SCTP\" }]\n",
        );
        assert_eq!(
            e,
            "t.toml: services[0].ports[0].protocol: \"SCTP\" is not a protocol (TCP, UDP or ANY)"
        );
        let pol = |body: &str| {
            err_appending(&format!(
                "\n[[policies]]\nname = \"p\"\nnamespace = \"default\"\nendpoint_selector = {{ app = \"a\" }}\n{body}\n"
            ))
        };
        assert_eq!(
            pol("ingress = [{ from = [{ entity = \"moon\" }] }]"),
            "t.toml: policies[0].ingress[0].from[0].entity: \"moon\" is not an entity (world, host, cluster or all)"
        );
        assert_eq!(
            pol("egress = [{ to = [{ labels = {} }] }]"),
            "t.toml: policies[0].egress[0].to[0].labels: empty selector: name at least one label (or use entity = \"all\")"
        );
        assert_eq!(
            pol("egress_deny = [{ to = [{ labels = { app = \"b\" }, entity = \"world\" }] }]"),
            "t.toml: policies[0].egress_deny[0].to[0]: a peer needs exactly one of `labels` or `entity`"
        );
        assert_eq!(
            pol(""),
            "t.toml: policies[0]: a policy needs at least one of ingress, egress, ingress_deny, egress_deny"
        );
        let no_pods = "[lab]\nname = \"x\"\nnode = \"n\"\nipv4_cidr = \"10.0.0.0/24\"\nipv6_cidr = \"fd00::/64\"\n";
        assert_eq!(
            LabSpec::parse(no_pods, "t.toml").unwrap_err().to_string(),
            "t.toml: pods: a lab needs at least one [[pods]] entry"
        );
        let missing = LabSpec::load("/nonexistent/lab.toml")
            .unwrap_err()
            .to_string();
        assert!(missing.starts_with("/nonexistent/lab.toml: "), "{missing}");
    }

    /// A file in a fresh temporary directory.
    fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const RUNTIME: &str = r#"
[[pods]]
namespace = "default"
name = "c"
labels = { app = "b" }
ipv4 = "10.9.0.12"
ipv6 = "fd00:9::12"
workload = { kind = "Deployment", name = "c" }
l7 = ["http/8080"]

[[pods]]
namespace = "other"
name = "d"
ipv4 = "10.9.0.13"
ipv6 = "fd00:9::13"
"#;

    #[test]
    fn load_live_merges_runtime_pods() {
        let (_d, spec_path) = temp_file("t.toml", MINI);
        let pods_path = spec_path.with_file_name("t1.pods.toml");
        // Missing runtime file: just the spec.
        let s = LabSpec::load_with_pods(&spec_path, &pods_path).unwrap();
        assert_eq!(s.pods.len(), 2);
        assert_eq!(s.spec_pod_count(), 2);
        assert!(s.pods.iter().all(|p| !p.added));

        std::fs::write(&pods_path, RUNTIME).unwrap();
        let s = LabSpec::load_with_pods(&spec_path, &pods_path).unwrap();
        assert_eq!(s.pods.len(), 4);
        assert_eq!(s.spec_pod_count(), 2);
        let idx: Vec<_> = s.pods.iter().map(|p| (p.index, p.added)).collect();
        assert_eq!(idx, [(0, false), (1, false), (2, true), (3, true)]);
        let c = s.pod("default", "c").unwrap();
        assert_eq!(c.netns, "hl-t1-default-c");
        assert_eq!(c.l7.len(), 1);
        assert_eq!(c.workload.as_ref().unwrap().kind, "Deployment");
        assert_eq!(s.peer_of("10.9.0.13".parse().unwrap()), Peer::Pod(3));
        // Runtime pods are selected like spec pods.
        let sel = Labels::from([("app".to_string(), "b".to_string())]);
        assert_eq!(s.pods_selected_by(&sel).len(), 2);
        // The spec file alone is unchanged, and merging again replaces the runtime pods.
        assert_eq!(LabSpec::load(&spec_path).unwrap().pods.len(), 2);
        assert_eq!(s.spec_only().pods.len(), 2);
        assert_eq!(s.with_pods_file(&pods_path).unwrap().pods.len(), 4);
        assert_eq!(s.all_netns().len(), 6);
        assert_eq!(
            LabSpec::parse(MINI, "t.toml").unwrap().live_pods_path(),
            PathBuf::from("/run/hubble-lab/t1.pods.toml")
        );
    }

    #[test]
    fn load_live_rejects_clashes_naming_the_runtime_file() {
        let (_d, spec_path) = temp_file("t.toml", MINI);
        let pods_path = spec_path.with_file_name("t1.pods.toml");
        let origin = pods_path.display().to_string();
        let err = |text: &str| {
            std::fs::write(&pods_path, text).unwrap();
            LabSpec::load_with_pods(&spec_path, &pods_path)
                .unwrap_err()
                .to_string()
        };
        // Same name as a spec pod.
        assert_eq!(
            err(&RUNTIME.replacen("name = \"c\"", "name = \"a\"", 1)),
            format!("{origin}: pods[0].name: pod default/a is defined twice")
        );
        // Same name twice in the runtime file.
        assert_eq!(
            err(&RUNTIME
                .replacen("name = \"d\"", "name = \"c\"", 1)
                .replacen("namespace = \"other\"", "namespace = \"default\"", 1)),
            format!("{origin}: pods[1].name: pod default/c is defined twice")
        );
        // A spec pod's address, the node's address.
        assert_eq!(
            err(&RUNTIME.replacen("10.9.0.13", "10.9.0.11", 1)),
            format!(
                "{origin}: pods[1].ipv4: 10.9.0.11 is already used (by another pod or the node)"
            )
        );
        assert_eq!(
            err(&RUNTIME.replacen("fd00:9::12", "fd00:9::1", 1)),
            format!(
                "{origin}: pods[0].ipv6: fd00:9::1 is already used (by another pod or the node)"
            )
        );
        assert_eq!(
            err(&RUNTIME.replacen("10.9.0.12", "10.9.1.12", 1)),
            format!(
                "{origin}: pods[0].ipv4: 10.9.1.12 is not a host address inside lab.ipv4_cidr 10.9.0.0/24"
            )
        );
        // Parse errors name the runtime file and its line; unknown fields are rejected.
        let e = err(&RUNTIME.replacen("labels", "lables", 1));
        assert!(
            e.starts_with(&format!("{origin}: line 5: unknown field `lables`")),
            "{e}"
        );
        let e = err("[lab]\nname = \"x\"\n");
        assert!(e.starts_with(&format!("{origin}: line 1: ")), "{e}");
    }

    #[test]
    fn pods_file_round_trip_and_atomic_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t1.pods.toml");
        let mut defs = read_pods_file(&path).unwrap();
        assert!(defs.is_empty(), "a missing file has no pods");
        let (_d, spec_path) = temp_file("t.toml", MINI);
        let runtime = dir.path().join("runtime.toml");
        std::fs::write(&runtime, RUNTIME).unwrap();
        defs.extend(read_pods_file(&runtime).unwrap());
        defs[1].labels.insert("we\"ird".into(), "x".into());
        defs[1].node = Some("n1".into());
        write_pods_file(&path, &defs).unwrap();
        assert_eq!(read_pods_file(&path).unwrap(), defs);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the file itself is left (no temporary).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // What we write loads back as runtime pods (with a valid label key).
        defs[1].labels.clear();
        write_pods_file(&path, &defs).unwrap();
        let s = LabSpec::load_with_pods(&spec_path, &path).unwrap();
        assert_eq!(s.pods.len(), 4);
        assert_eq!(s.pods[3].node, "n1");
        // No pods: no file.
        write_pods_file(&path, &[]).unwrap();
        assert!(!path.exists());
        write_pods_file(&path, &[]).unwrap();
    }

    #[test]
    fn address_allocation() {
        let s = LabSpec::parse(MINI, "t.toml").unwrap();
        // .1 is the node; .2 is the lowest free; its IPv6 repeats the host number.
        assert_eq!(s.free_ipv4(), Some(Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(
            s.free_ipv6_for(Ipv4Addr::new(10, 9, 0, 2)),
            Some("fd00:9::2".parse().unwrap())
        );
        assert_eq!(
            s.free_ipv6_for(Ipv4Addr::new(10, 9, 0, 123)),
            Some("fd00:9::123".parse().unwrap())
        );
        // Taken by pod a (fd00:9::10): the lowest free one instead.
        assert_eq!(
            s.free_ipv6_for(Ipv4Addr::new(10, 9, 0, 10)),
            Some("fd00:9::2".parse().unwrap())
        );
        // Fill .2 to .9: next is .12 (.10 and .11 are pods a and b).
        let defs: Vec<PodDef> = (2..10)
            .map(|i| PodDef {
                node: None,
                namespace: "default".into(),
                name: format!("p{i}"),
                labels: Labels::new(),
                ipv4: format!("10.9.0.{i}"),
                ipv6: format!("fd00:9::{i}"),
                workload: None,
                l7: Vec::new(),
            })
            .collect();
        let live = s.with_pods(&defs, "runtime").unwrap();
        assert_eq!(live.free_ipv4(), Some(Ipv4Addr::new(10, 9, 0, 12)));
        assert_eq!(
            live.free_ipv6_for(Ipv4Addr::new(10, 9, 0, 12)),
            Some("fd00:9::12".parse().unwrap())
        );
        assert_eq!(
            live.free_ipv6_for(Ipv4Addr::new(10, 9, 0, 5)),
            Some("fd00:9::a".parse().unwrap()),
            "::2-::9 and ::10-::11 are taken; ::a is the lowest free"
        );
        // A full /30: .9 is the node, .10 pod a, .11 the broadcast address.
        let one_pod = MINI
            .split("\n[[pods]]")
            .take(2)
            .collect::<Vec<_>>()
            .join("\n[[pods]]");
        let t =
            LabSpec::parse(&one_pod.replacen("10.9.0.0/24", "10.9.0.8/30", 1), "t.toml").unwrap();
        assert_eq!(t.free_ipv4(), None, "node .9 and pod .10 fill 10.9.0.8/30");
    }
}
