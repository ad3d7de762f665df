//! The host itself as a source: the node's name and addresses, for an agent that observes
//! the machine it runs on (no lab).

use std::net::IpAddr;

use crate::model::Change;

/// The cluster name of a single host.
pub const CLUSTER: &str = "default";

/// The machine's hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether `ip` names this host to others (not loopback, not link-local).
pub fn is_host_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The addresses of the calling thread's network namespace that name the host, sorted.
pub fn host_ips() -> std::io::Result<Vec<IpAddr>> {
    let s = super::netlink::Socket::open()?;
    let mut ips: Vec<IpAddr> = s
        .addrs()?
        .into_iter()
        .map(|a| a.ip)
        .filter(is_host_address)
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// The node change of this host, named `node` (default: the hostname).
pub fn node_change(node: Option<&str>) -> std::io::Result<Change> {
    Ok(Change::Node {
        cluster: CLUSTER.to_string(),
        node: node.map_or_else(hostname, str::to_string),
        host_ips: host_ips()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_do_not_name_the_host() {
        for (ip, host) in [
            ("127.0.0.1", false),
            ("::1", false),
            ("fe80::1", false),
            ("169.254.1.1", false),
            ("10.1.2.3", true),
            ("2001:db8::1", true),
        ] {
            assert_eq!(is_host_address(&ip.parse().unwrap()), host, "{ip}");
        }
    }
}
