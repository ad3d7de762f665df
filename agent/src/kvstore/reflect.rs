//! A prefix of etcd mirrored locally: listed, then watched from the listed revision; when
//! the watch fails (etcd down, compaction) it is listed again once etcd answers, so the
//! mirror never misses a change for good. Every batch hands the whole mirror on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::client::KvError;
use super::client::pb::mvccpb::event::EventType;
use super::session::Session;

/// A prefix's keys (the prefix stripped) and values.
pub type Mirror = BTreeMap<String, Vec<u8>>;

/// Mirrors `prefix` into `tx` until `tx` closes: the first full list, then the mirror
/// after each batch of changes (and a full list again after each reconnect).
pub async fn reflect(session: Arc<Session>, prefix: String, tx: mpsc::Sender<Mirror>) {
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
    tx: &mpsc::Sender<Mirror>,
    backoff: &mut Duration,
) -> Result<(), KvError> {
    let etcd = session.etcd();
    let (kvs, revision) = etcd.get_prefix(prefix).await?;
    let mut mirror: Mirror = kvs
        .into_iter()
        .filter_map(|kv| Some((strip(&kv.key, prefix)?, kv.value)))
        .collect();
    let mut watch = etcd.watch_prefix(prefix, revision + 1).await?;
    session.observe(Ok(()))?;
    *backoff = Duration::from_millis(200);
    if tx.send(mirror.clone()).await.is_err() {
        return Ok(());
    }
    loop {
        let r = watch.next().await?;
        if r.events.is_empty() {
            continue;
        }
        for ev in r.events {
            let Some(kv) = ev.kv else { continue };
            let Some(key) = strip(&kv.key, prefix) else {
                continue;
            };
            if ev.r#type == EventType::Delete as i32 {
                mirror.remove(&key);
            } else {
                mirror.insert(key, kv.value);
            }
        }
        if tx.send(mirror.clone()).await.is_err() {
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
