//! What the container runtime sources share: the default L7 visibility, the diff between
//! two views, skipped containers reported once, and reconnecting to their daemon.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

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

/// A runtime source's connection to its daemon: the backoff between attempts, each distinct
/// failure said once on stderr, and the line when it is back.
pub struct Reconnect {
    runtime: &'static str,
    socket: String,
    backoff: std::time::Duration,
    down: Option<String>,
}

const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

impl Reconnect {
    /// `down`: the error of a first attempt already reported.
    pub fn new(runtime: &'static str, socket: &std::path::Path, down: Option<String>) -> Self {
        Reconnect {
            runtime,
            socket: socket.display().to_string(),
            backoff: FIRST_BACKOFF,
            down,
        }
    }

    /// A connection attempt failed: said once per distinct error, then the backoff (doubled
    /// up to 5 s) is waited. True when the model's channel closed meanwhile.
    pub async fn failed(&mut self, e: String, tx: &mpsc::Sender<Vec<Change>>) -> bool {
        if self.down.as_deref() != Some(e.as_str()) {
            eprintln!("hubble-agent: {}: {e} (retrying)", self.runtime);
            self.down = Some(e);
        }
        if sleep_or_closed(tx, self.backoff).await {
            return true;
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        false
    }

    /// Connected: says so when it was down, and resets the backoff.
    pub fn connected(&mut self) {
        if self.down.take().is_some() {
            eprintln!(
                "hubble-agent: {}: connected to {}",
                self.runtime, self.socket
            );
        }
        self.backoff = FIRST_BACKOFF;
    }

    /// A working connection was lost: said, then the backoff is waited. True when the
    /// model's channel closed meanwhile.
    pub async fn lost(&mut self, e: String, tx: &mpsc::Sender<Vec<Change>>) -> bool {
        eprintln!("hubble-agent: {}: {e}; reconnecting", self.runtime);
        self.down = Some(e);
        sleep_or_closed(tx, self.backoff).await
    }
}

/// Sleeps `d`; true when the channel closed meanwhile.
async fn sleep_or_closed(tx: &mpsc::Sender<Vec<Change>>, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = tx.closed() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
