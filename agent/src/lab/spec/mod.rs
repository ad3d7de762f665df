//! The lab spec: a TOML file naming the lab, its nodes, pods, services and network
//! policies. This module holds the validated model (what a lab is) and its lookups
//! (pods by name or selector, service backends, DNS names); the submodules read it
//! (`load`), name and address its parts (`addressing`), give the policy verdict it
//! expects (`verdict`) and keep the pods `lab add-pod` adds (`runtime_pods`).
//!
//! Addressing (see `topology`): every pod gets its IPv4 as a /32 and its IPv6 as a /128 on
//! `eth0`, with host routes and a default route via the node address, like Cilium does.
//! Services are headless: DNS answers with the addresses of the selected pods.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

pub use crate::model::policy::{
    Entity, Labels, NAMESPACE_LABEL, PeerSelector, Policy, PortSpec, Protocol, Rule,
};

mod addressing;
mod load;
mod runtime_pods;
mod verdict;

pub use addressing::{mac_string, pod_netns_name};
pub use load::{PodDef, WorkloadDef};
pub use runtime_pods::{pods_file_text, read_pods_file, write_pods_file};
pub use verdict::{L4, Peer, Verdict};

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

impl LabSpec {
    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
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
}

#[cfg(test)]
mod testdata;

#[cfg(test)]
mod tests {
    use super::testdata::demo;
    use super::*;

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
    }
}
