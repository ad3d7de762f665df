//! Reading a lab spec: the TOML schema as serde reads it, and its validation into a
//! [`LabSpec`] (names, addresses, selectors, ports, peers), every error one line naming the
//! file and field. [`PodChecker`] is shared with the runtime pods file.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

use super::addressing::{
    node_addresses_at, node_names, pod_host_veth, pod_macs, pod_netns_name, v4_host_ok, v6_host_ok,
};
use super::{
    Entity, L7Rule, LabMeta, LabSpec, Labels, NAMESPACE_LABEL, NodeSpec, POD_IFNAME, PeerSelector,
    Pod, Policy, PortSpec, Protocol, Rule, Service, SpecError, Workload,
};

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

pub(super) struct Ctx<'a> {
    pub(super) origin: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(&self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
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

/// A TOML syntax or schema error as one line naming `origin` and the line.
pub(super) fn parse_error(origin: &str, text: &str, e: &toml::de::Error) -> SpecError {
    SpecError::Parse {
        origin: origin.to_string(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().trim().replace('\n', " "),
    }
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
pub(super) struct PodChecker<'a> {
    lab: &'a LabMeta,
    nodes: &'a [NodeSpec],
    ids: HashSet<(String, String)>,
    v4: HashSet<IpAddr>,
    v6: HashSet<IpAddr>,
    netns: HashSet<String>,
    veth: HashSet<String>,
}

impl<'a> PodChecker<'a> {
    pub(super) fn new(lab: &'a LabMeta, nodes: &'a [NodeSpec]) -> Self {
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
    pub(super) fn seed(&mut self, p: &Pod) {
        self.ids.insert((p.namespace.clone(), p.name.clone()));
        self.v4.insert(IpAddr::V4(p.ipv4));
        self.v6.insert(IpAddr::V6(p.ipv6));
        self.netns.insert(p.netns.clone());
        self.veth.insert(p.host_veth.clone());
    }

    /// Validates one pod; `f` names it in errors (`pods[3]`), `index` is its position in
    /// `LabSpec::pods`.
    pub(super) fn check(
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
        let host_veth = pod_host_veth(&p.namespace, &p.name);
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
        let (host_mac, pod_mac) = pod_macs(&p.namespace, &p.name);
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
            host_mac,
            pod_mac,
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
    pub(super) fn check_reserved(&self, c: &Ctx<'_>) -> Result<(), SpecError> {
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

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
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
        let raw: RawSpec = toml::from_str(text).map_err(|e| parse_error(origin, text, &e))?;
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
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::super::testdata::{FIXTURES, MINI, demo};
    use super::*;

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
}
