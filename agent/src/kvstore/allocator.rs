//! Cluster-wide identities in etcd, on Cilium's layout (see `keys`): the same label set
//! gets the same id on every node.
//!
//! Invariants, each kept by one etcd transaction:
//! - an id is created (`id/<n>` = labels) only together with the creating node's
//!   reference, and only while no reference to the label set exists: two nodes racing for
//!   new labels cannot end up with two ids (the loser's transaction fails and it finds the
//!   winner's reference on its next read);
//! - a reference (`value/<labels>/<node>` = id, under the node's lease) is written only
//!   while `id/<n>` holds those labels;
//! - `id/<n>` is deleted only while no reference to its labels exists. A node tries this
//!   when it releases its last reference, and [`Allocator::gc`] sweeps for ids whose
//!   references went with a dead node's lease (Cilium's operator does the same sweep).
//!
//! Ids are numbered from 256 (Cilium's cluster-local range ends at 65535): the lowest free
//! as this node last read them. A label set takes one read and one transaction when that
//! guess holds (or another node's reference gives the id), more otherwise. (A master key whose references all expired is not reused by the guess: it
//! is left to the sweep, and the labels get a fresh id.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::client::KvError;
use super::client::pb::etcdserverpb::{
    RangeRequest, RequestOp, ResponseOp, TxnRequest, request_op, response_op,
};
use super::keys;
use super::session::{Leased, Session, absent, delete_op, none_under, put_op, value_is};

pub const MIN_ID: u32 = 256;
pub const MAX_ID: u32 = 65535;
/// Transactions lost to other nodes before an allocation gives up.
const ATTEMPTS: usize = 32;

pub struct Allocator {
    session: Arc<Session>,
    /// This node's part of reference keys (Cilium: the node's IP).
    suffix: String,
    /// Label key → id this node holds a reference to.
    held: Mutex<BTreeMap<String, u32>>,
    /// The ids allocated cluster-wide as this node last read them (a guess: every
    /// transaction checks).
    taken: Mutex<BTreeSet<u32>>,
}

impl Allocator {
    pub fn new(session: Arc<Session>, suffix: &str) -> Allocator {
        Allocator {
            session,
            suffix: suffix.to_string(),
            held: Mutex::new(BTreeMap::new()),
            taken: Mutex::new(BTreeSet::new()),
        }
    }

    fn reference_key(&self, label_key: &str) -> String {
        format!("{}{}", keys::value_prefix(label_key), self.suffix)
    }

    /// Whether this node holds a reference for `labels` (allocating them again needs no
    /// etcd).
    pub fn holds(&self, labels: &[String]) -> bool {
        let key = keys::label_key(labels);
        self.held.lock().expect("held").contains_key(&key)
    }

    /// The identity of `labels`, cluster-wide: the one some node allocated, or a new one.
    pub async fn allocate(&self, labels: &[String]) -> Result<u32, KvError> {
        let key = keys::label_key(labels);
        if let Some(id) = self.held.lock().expect("held").get(&key) {
            return Ok(*id);
        }
        let r = self.allocate_key(&key).await;
        self.session.observe(r)
    }

    /// Allocation in (usually) one round trip: the first transaction guesses from what
    /// this node last read (no reference yet, the lowest id it believes free); a failed
    /// transaction reads the label set's reference and all ids at once, and the next
    /// attempt acts on that.
    async fn allocate_key(&self, key: &str) -> Result<u32, KvError> {
        let etcd = self.session.etcd();
        let refs = keys::value_prefix(key);
        let ref_key = self.reference_key(key);
        let ids = keys::id_prefix();
        let reads = vec![range_op(&refs, 1), range_op(&ids, 0)];
        // A read is cheap, a failed transaction with writes is not (it goes through raft):
        // look for another node's reference first.
        let mut existing = self.reference_of(&refs).await?;
        for _ in 0..ATTEMPTS {
            let lease = self.session.lease().await?;
            let id = match existing {
                Some(id) => id,
                None => lowest_free(&self.taken.lock().expect("taken")),
            };
            if id > MAX_ID {
                return Err(self.error("no free identity left in 256..=65535"));
            }
            let id_key = keys::id_key(id);
            let reference = put_op(&ref_key, id.to_string().as_bytes(), lease);
            let txn = if existing.is_some() {
                TxnRequest {
                    compare: vec![value_is(&id_key, key.as_bytes())],
                    success: vec![reference],
                    failure: reads.clone(),
                }
            } else {
                TxnRequest {
                    compare: vec![absent(&id_key), none_under(&refs)],
                    success: vec![put_op(&id_key, key.as_bytes(), 0), reference],
                    failure: reads.clone(),
                }
            };
            let r = etcd.txn(txn).await?;
            if r.succeeded {
                self.taken.lock().expect("taken").insert(id);
                self.held.lock().expect("held").insert(key.to_string(), id);
                self.session.remember(
                    ref_key,
                    Leased {
                        value: id.to_string().into_bytes(),
                        guard: Some((id_key, key.as_bytes().to_vec())),
                    },
                );
                return Ok(id);
            }
            let (found, taken) = parse_reads(r.responses, key, &ids);
            existing = found;
            *self.taken.lock().expect("taken") = taken;
        }
        Err(self.error(&format!(
            "identity of {key}: {ATTEMPTS} transactions lost to other nodes"
        )))
    }

    /// The id of some node's reference under `refs`, if any.
    async fn reference_of(&self, refs: &str) -> Result<Option<u32>, KvError> {
        let req = RangeRequest {
            key: refs.as_bytes().to_vec(),
            range_end: super::client::prefix_end(refs.as_bytes()),
            limit: 1,
            // A hint (the transaction checks it): the member's own view will do.
            serializable: true,
            ..Default::default()
        };
        let kvs = self.session.etcd().range(req).await?;
        Ok(kvs
            .first()
            .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok()))
    }

    /// Drops this node's reference to the identity of `labels`; frees the id when no node
    /// holds one any more.
    pub async fn release(&self, labels: &[String]) -> Result<(), KvError> {
        let key = keys::label_key(labels);
        let Some(id) = self.held.lock().expect("held").remove(&key) else {
            return Ok(());
        };
        // Guess it free for the next allocation: it is, once no node refers to it (and a
        // wrong guess costs one round trip).
        self.taken.lock().expect("taken").remove(&id);
        self.session.delete(&self.reference_key(&key)).await?;
        let r = self.try_free(id, &key).await;
        self.session.observe(r).map(drop)
    }

    /// Deletes `id/<id>` if it still names `key` and nothing refers to it: whether it did.
    async fn try_free(&self, id: u32, key: &str) -> Result<bool, KvError> {
        let id_key = keys::id_key(id);
        let txn = TxnRequest {
            compare: vec![
                value_is(&id_key, key.as_bytes()),
                none_under(&keys::value_prefix(key)),
            ],
            success: vec![delete_op(&id_key)],
            failure: vec![],
        };
        Ok(self.session.etcd().txn(txn).await?.succeeded)
    }

    /// Frees every id no node refers to any more (e.g. a dead node's, once its lease
    /// expired): how many.
    pub async fn gc(&self) -> Result<usize, KvError> {
        let ids = keys::id_prefix();
        let (masters, _) = self
            .session
            .observe(self.session.etcd().get_prefix(&ids).await)?;
        let mut freed = 0;
        for kv in masters {
            let (Some(id), Ok(key)) = (id_of(&kv.key, &ids), std::str::from_utf8(&kv.value)) else {
                continue;
            };
            if self.session.observe(self.try_free(id, key).await)? {
                freed += 1;
            }
        }
        Ok(freed)
    }

    fn error(&self, message: &str) -> KvError {
        KvError {
            address: self.session.etcd().address().to_string(),
            message: message.to_string(),
        }
    }
}

/// What a failed allocation read (a reference of the label set, then every `id/` key):
/// the id a reference or a master key gives `key`, and every allocated id.
fn parse_reads(responses: Vec<ResponseOp>, key: &str, ids: &str) -> (Option<u32>, BTreeSet<u32>) {
    let mut ranges = responses.into_iter().filter_map(|op| match op.response {
        Some(response_op::Response::ResponseRange(r)) => Some(r.kvs),
        _ => None,
    });
    let (refs, masters) = (
        ranges.next().unwrap_or_default(),
        ranges.next().unwrap_or_default(),
    );
    let by_ref = refs
        .first()
        .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok());
    let mut by_master = None;
    let mut taken = BTreeSet::new();
    for kv in &masters {
        let Some(id) = id_of(&kv.key, ids) else {
            continue;
        };
        taken.insert(id);
        if kv.value == key.as_bytes() {
            by_master = Some(id);
        }
    }
    (by_ref.or(by_master), taken)
}

fn range_op(prefix: &str, limit: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: super::client::prefix_end(prefix.as_bytes()),
            limit,
            ..Default::default()
        })),
    }
}

/// The id of an `id/<n>` key.
fn id_of(key: &[u8], prefix: &str) -> Option<u32> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}

fn lowest_free(taken: &BTreeSet<u32>) -> u32 {
    let mut id = MIN_ID;
    for t in taken.range(MIN_ID..) {
        if *t != id {
            break;
        }
        id += 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_fills_gaps_from_256() {
        assert_eq!(lowest_free(&BTreeSet::new()), 256);
        assert_eq!(lowest_free(&[1, 256, 257, 259].into()), 258);
        assert_eq!(lowest_free(&[257].into()), 256);
    }
}
