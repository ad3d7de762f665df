//! What the container runtime sources share about their endpoints: the default L7
//! visibility, the diff between two views, and skipped containers reported once.

use std::collections::BTreeMap;

use crate::model::{Change, EndpointSpec, L7Kind, L7Visibility};

/// L7 visibility of every container: DNS on egress port 53 (UDP and TCP), as the lab's
/// default.
pub fn dns_visibility() -> Vec<L7Visibility> {
    [17, 6]
        .into_iter()
        .map(|proto| L7Visibility {
            ingress: false,
            port: 53,
            proto,
            kind: L7Kind::Dns,
        })
        .collect()
}

/// The changes taking a model that knows `old` to `new`: removals first, then upserts of
/// what is new or different.
pub fn diff(
    old: &BTreeMap<String, EndpointSpec>,
    new: &BTreeMap<String, EndpointSpec>,
) -> Vec<Change> {
    let mut out: Vec<Change> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| Change::EndpointRemove { key: k.clone() })
        .collect();
    out.extend(
        new.iter()
            .filter(|(k, e)| old.get(*k) != Some(e))
            .map(|(_, e)| Change::EndpointUpsert(e.clone())),
    );
    out
}

/// Skipped containers and the reason last printed for each: a reason is printed once, and
/// again only when it changes.
#[derive(Debug, Default)]
pub struct Skips(BTreeMap<String, String>);

impl Skips {
    /// Whether `why` is news for `key` (and remembers it).
    pub fn is_new(&mut self, key: &str, why: &str) -> bool {
        if self.0.get(key).map(String::as_str) == Some(why) {
            return false;
        }
        self.0.insert(key.to_string(), why.to_string());
        true
    }

    /// Forgets `key` (it is an endpoint now).
    pub fn forget(&mut self, key: &str) {
        self.0.remove(key);
    }

    /// Keeps only the keys `live` holds.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.0.retain(|k, _| live(k));
    }
}
