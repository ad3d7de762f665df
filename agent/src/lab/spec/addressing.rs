//! Names and addresses of everything a lab makes: its nodes (in order, with their host and
//! underlay addresses), network namespaces, the world link, interface names and MACs
//! derived from stable hashes, and free addresses for a pod added at runtime.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::{LabMeta, LabSpec, NodeSpec};

/// Every node of a lab: `lab.node` first, then `[[nodes]]` in order.
pub(super) fn node_names<'a>(lab: &'a LabMeta, nodes: &'a [NodeSpec]) -> Vec<&'a str> {
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
pub(super) fn node_addresses_at(lab: &LabMeta, index: usize) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::from(u32::from(lab.node_ipv4).wrapping_add(index as u32)),
        Ipv6Addr::from(u128::from(lab.node_ipv6).wrapping_add(index as u128)),
    )
}

pub(super) fn v4_host_ok(cidr: Ipv4Net, a: Ipv4Addr) -> bool {
    cidr.contains(&a) && a != cidr.network() && a != cidr.broadcast()
}

pub(super) fn v6_host_ok(cidr: Ipv6Net, a: Ipv6Addr) -> bool {
    cidr.contains(&a) && a != cidr.network()
}

/// Network namespace name of a pod: `hl-<lab>-<namespace>-<name>`.
pub fn pod_netns_name(lab: &str, namespace: &str, name: &str) -> String {
    format!("hl-{lab}-{namespace}-{name}")
}

/// Host-side veth of a pod, Cilium style: `lxc` + 12 hex digits of a hash of its
/// `namespace/name` (stable across loads: the datapath and status rely on it).
pub(super) fn pod_host_veth(namespace: &str, name: &str) -> String {
    let h = fnv1a(format!("{namespace}/{name}").as_bytes());
    format!("lxc{:012x}", h >> 16)
}

/// MACs of a pod's host-side veth and of its `eth0`, derived from its `namespace/name`.
pub(super) fn pod_macs(namespace: &str, name: &str) -> ([u8; 6], [u8; 6]) {
    let key = format!("{namespace}/{name}");
    (
        mac_from(fnv1a(format!("host:{key}").as_bytes())),
        mac_from(fnv1a(format!("pod:{key}").as_bytes())),
    )
}

/// 64-bit FNV-1a: a stable, dependency-free hash for interface names and MACs.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A locally administered unicast MAC from a hash.
fn mac_from(h: u64) -> [u8; 6] {
    let b = h.to_be_bytes();
    // Locally administered, unicast.
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

impl LabSpec {
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::testdata::{MINI, demo};
    use super::super::{Labels, PodDef};
    use super::*;

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
