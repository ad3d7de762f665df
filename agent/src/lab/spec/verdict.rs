//! The policy verdict a lab expects: which peer (pod, host, world) owns an address, and
//! whether the spec's policies allow a connection between two peers, egress then ingress,
//! deny rules first. Lab traffic checks what the datapath did against it.

use std::fmt;
use std::net::IpAddr;

use super::{Entity, LabSpec, NAMESPACE_LABEL, PeerSelector, Pod, Protocol, Rule};

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

impl LabSpec {
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

#[cfg(test)]
mod tests {
    use super::super::testdata::{FIXTURES, MINI, demo};
    use super::*;

    #[test]
    fn peer_of_addresses() {
        let d = demo();
        let db = d.pod("payments", "db-0").unwrap();
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
}
