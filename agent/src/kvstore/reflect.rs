//! A prefix of etcd mirrored locally: listed, then watched from the listed revision; when
//! the watch fails (etcd down, compaction) it is listed again once etcd answers, so the
//! mirror never misses a change for good. The consumer gets the list whole, then each watch
//! response's changes only (keeping its own state costs it O(changes), not O(keys)).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::client::KvError;
use super::client::pb::mvccpb::event::EventType;
use super::session::Session;

/// A prefix's keys (the prefix stripped) and values.
pub type Mirror = BTreeMap<String, Vec<u8>>;

/// What a mirrored prefix did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Everything under the prefix: the first list, and again after each reconnect.
    Listed(Mirror),
    /// One watch response: each key's new value, or `None` when it was deleted.
    Changed(Vec<(String, Option<Vec<u8>>)>),
}

impl Update {
    /// Brings `mirror` up to date.
    pub fn apply(self, mirror: &mut Mirror) {
        match self {
            Update::Listed(m) => *mirror = m,
            Update::Changed(changes) => {
                for (key, value) in changes {
                    match value {
                        Some(v) => mirror.insert(key, v),
                        None => mirror.remove(&key),
                    };
                }
            }
        }
    }
}

/// Mirrors `prefix` into `tx` until `tx` closes: the first full list, then the changes of
/// each watch response (and a full list again after each reconnect).
pub async fn reflect(session: Arc<Session>, prefix: String, tx: mpsc::Sender<Update>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session.observe(follow(&session, &prefix, &tx, &mut backoff).await) {
            Ok(()) => return,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// One list and the watch after it, until the watch fails (`Err`) or `tx` closes (`Ok`).
/// `backoff` starts over once the watch is up.
async fn follow(
    session: &Session,
    prefix: &str,
    tx: &mpsc::Sender<Update>,
    backoff: &mut Duration,
) -> Result<(), KvError> {
    let etcd = session.etcd();
    let (kvs, revision) = etcd.get_prefix(prefix).await?;
    let listed: Mirror = kvs
        .into_iter()
        .filter_map(|kv| Some((strip(&kv.key, prefix)?, kv.value)))
        .collect();
    let mut watch = etcd.watch_prefix(prefix, revision + 1).await?;
    session.observe(Ok(()))?;
    *backoff = Duration::from_millis(200);
    if tx.send(Update::Listed(listed)).await.is_err() {
        return Ok(());
    }
    loop {
        let r = watch.next().await?;
        let changes: Vec<(String, Option<Vec<u8>>)> = r
            .events
            .into_iter()
            .filter_map(|ev| {
                let kv = ev.kv?;
                let key = strip(&kv.key, prefix)?;
                let deleted = ev.r#type == EventType::Delete as i32;
                Some((key, (!deleted).then_some(kv.value)))
            })
            .collect();
        if changes.is_empty() {
            continue;
        }
        if tx.send(Update::Changed(changes)).await.is_err() {
            return Ok(());
        }
    }
}

fn strip(key: &[u8], prefix: &str) -> Option<String> {
    Some(
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(prefix)?
            .to_string(),
    )
}
