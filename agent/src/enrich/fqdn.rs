//! The DNS cache behind FQDN enrichment: which names each local endpoint resolved to which
//! addresses, learnt from observed DNS answers and forgotten when their TTL runs out.

/// Seeded per map (foldhash): lookups run for every flow once the cache holds names.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::IpAddr;

use crate::enrich::{DnsGetter, DnsStore};

/// Most (endpoint, address) entries kept; beyond it expired ones are swept, then new ones
/// are refused (counted in `refused`).
pub const MAX_ENTRIES: usize = 65_536;
/// Most names kept per address.
const MAX_NAMES: usize = 16;

#[derive(Debug, Default)]
pub struct DnsCache {
    /// (endpoint id, address) → (name, expiry in Unix seconds), names sorted.
    map: HashMap<(u32, IpAddr), Vec<(String, i64)>>,
    pub refused: u64,
}

impl DnsCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records that endpoint `ep` resolved `name` to `ip` at `now` (Unix seconds) for `ttl`.
    /// Names are kept without the trailing dot, as Hubble shows them in `*_names`.
    pub fn insert(&mut self, ep: u32, ip: IpAddr, name: &str, ttl: u32, now: i64) {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return;
        }
        let expires = now + ttl as i64;
        if !self.map.contains_key(&(ep, ip)) && self.map.len() >= MAX_ENTRIES {
            self.expire(now);
            if self.map.len() >= MAX_ENTRIES {
                self.refused += 1;
                return;
            }
        }
        let names = self.map.entry((ep, ip)).or_default();
        match names.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => names[i].1 = names[i].1.max(expires),
            Err(i) if names.len() < MAX_NAMES => names.insert(i, (name.to_string(), expires)),
            Err(_) => self.refused += 1,
        }
    }

    /// Drops every name whose TTL ran out before `now`.
    pub fn expire(&mut self, now: i64) {
        self.map.retain(|_, names| {
            names.retain(|(_, exp)| *exp >= now);
            !names.is_empty()
        });
    }
}

impl DnsGetter for DnsCache {
    fn names_into(&self, ep: u32, ip: IpAddr, now: i64, out: &mut Vec<String>) {
        let Some(names) = self.map.get(&(ep, ip)) else {
            out.clear();
            return;
        };
        let mut n = 0;
        for (name, exp) in names {
            if *exp < now {
                continue;
            }
            if n < out.len() {
                if out[n] != *name {
                    out[n].clear();
                    out[n].push_str(name);
                }
            } else {
                out.push(name.clone());
            }
            n += 1;
        }
        out.truncate(n);
    }
}

impl DnsStore for DnsCache {
    fn learn(&mut self, ep: u32, ip: IpAddr, name: &str, ttl: u32, now: i64) {
        self.insert(ep, ip, name, ttl, now);
    }

    fn is_empty(&self) -> bool {
        DnsCache::is_empty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_endpoint_with_ttl() {
        let mut c = DnsCache::new();
        let ip: IpAddr = "10.244.1.11".parse().unwrap();
        c.insert(7, ip, "catalog.shop.svc.cluster.local.", 30, 1000);
        c.insert(7, ip, "a.example", 5, 1000);
        let mut out = Vec::new();
        c.names_into(7, ip, 1001, &mut out);
        assert_eq!(out, ["a.example", "catalog.shop.svc.cluster.local"]);
        // Another endpoint did not look it up.
        c.names_into(8, ip, 1001, &mut out);
        assert!(out.is_empty());
        // After 5 s one name is gone, after 30 s both.
        c.names_into(7, ip, 1006, &mut out);
        assert_eq!(out, ["catalog.shop.svc.cluster.local"]);
        c.expire(1031);
        assert!(c.is_empty());
    }
}
