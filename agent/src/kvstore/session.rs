//! A node's session with etcd: one lease kept alive, and the keys the node wrote under it,
//! remembered so that they are written again under a new lease when the old one was lost
//! (etcd down longer than the TTL). The session is healthy while its last etcd call worked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::client::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, compare, request_op,
};
use super::client::{Etcd, KeepAlive, KvError};

/// Operations per transaction etcd accepts by default (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// A key under the lease. `guard`: (master key, value) the key is only valid with (an
/// identity reference is written only while its identity's master key holds its labels;
/// when the master key is gone it is created again, when it holds other labels the
/// reference is not written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub value: Vec<u8>,
    pub guard: Option<(String, Vec<u8>)>,
}

pub struct Session {
    etcd: Etcd,
    ttl: i64,
    /// The current lease (0: none yet, or lost). Grants are serialized.
    lease: tokio::sync::Mutex<i64>,
    keys: Mutex<BTreeMap<String, Leased>>,
    healthy: watch::Sender<bool>,
}

impl Session {
    pub fn new(etcd: Etcd, ttl: i64) -> Session {
        Session {
            etcd,
            ttl,
            lease: tokio::sync::Mutex::new(0),
            keys: Mutex::new(BTreeMap::new()),
            healthy: watch::Sender::new(true),
        }
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// Whether the last call to etcd worked.
    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// Follows [`Session::is_healthy`].
    pub fn health(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }

    /// Notes how a call went (one line when health changes) and passes its result on.
    pub fn observe<T>(&self, r: Result<T, KvError>) -> Result<T, KvError> {
        let ok = r.is_ok();
        if self.healthy.send_replace(ok) != ok {
            match &r {
                Err(e) => eprintln!("hubble-agent: kvstore unhealthy: {e}"),
                Ok(_) => eprintln!(
                    "hubble-agent: kvstore healthy: etcd {}",
                    self.etcd.address()
                ),
            }
        }
        r
    }

    /// The current lease, granted when there is none.
    pub async fn lease(&self) -> Result<i64, KvError> {
        let mut lease = self.lease.lock().await;
        if *lease == 0 {
            *lease = self.observe(self.etcd.grant(self.ttl).await)?;
        }
        Ok(*lease)
    }

    /// Remembers `key` as written under the lease (the caller wrote it).
    pub fn remember(&self, key: String, leased: Leased) {
        self.keys.lock().expect("session keys").insert(key, leased);
    }

    /// Forgets `key` (the caller deletes it).
    pub fn forget(&self, key: &str) {
        self.keys.lock().expect("session keys").remove(key);
    }

    /// Writes `key` under the lease and remembers it.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.remember(
            key.to_string(),
            Leased {
                value: value.clone(),
                guard: None,
            },
        );
        let lease = self.lease().await?;
        self.observe(self.etcd.put(key, &value, lease).await)
    }

    /// Writes (`Some`) and deletes (`None`) many keys, the writes under the lease, in as
    /// few transactions as etcd takes (its `--max-txn-ops`, 128 by default): one raft
    /// entry, one WAL sync and one watch response per transaction instead of per key.
    /// `ops` names each key once.
    pub async fn write_many(&self, ops: Vec<(String, Option<Vec<u8>>)>) -> Result<(), KvError> {
        if ops.is_empty() {
            return Ok(());
        }
        for (key, value) in &ops {
            match value {
                Some(v) => self.remember(
                    key.clone(),
                    Leased {
                        value: v.clone(),
                        guard: None,
                    },
                ),
                None => self.forget(key),
            }
        }
        let lease = self.lease().await?;
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let txn = TxnRequest {
                compare: vec![],
                success: chunk
                    .iter()
                    .map(|(key, value)| match value {
                        Some(v) => put_op(key, v, lease),
                        None => delete_op(key),
                    })
                    .collect(),
                failure: vec![],
            };
            self.observe(self.etcd.txn(txn).await)?;
        }
        Ok(())
    }

    /// Deletes `key` and forgets it.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.forget(key);
        self.observe(self.etcd.delete(key).await).map(drop)
    }

    /// Keeps the lease alive every third of the TTL until dropped. A lost lease is granted
    /// anew and the remembered keys are written again; a failed renewal is retried every
    /// second (each failure and the recovery reported once).
    pub async fn keep_alive(&self) {
        let mut stream: Option<KeepAlive> = None;
        loop {
            let ok = self.renew(&mut stream).await;
            let pause = if ok {
                Duration::from_millis((self.ttl.max(1) as u64 * 1000) / 3)
            } else {
                Duration::from_secs(1)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One renewal: whether the lease is alive (or was granted again) afterwards.
    async fn renew(&self, stream: &mut Option<KeepAlive>) -> bool {
        let current = *self.lease.lock().await;
        if current != 0 {
            match self.observe(self.etcd.keep_alive(stream, current).await) {
                Ok(ttl) if ttl > 0 => return true,
                Ok(_) => {
                    eprintln!(
                        "hubble-agent: kvstore: lease {current:x} expired; writing our keys again"
                    );
                    let mut lease = self.lease.lock().await;
                    if *lease == current {
                        *lease = 0;
                    }
                }
                Err(_) => return false,
            }
        } else if self.keys.lock().expect("session keys").is_empty() {
            return true;
        }
        match self.restore().await {
            Ok(n) => {
                if n > 0 {
                    eprintln!("hubble-agent: kvstore: {n} keys written again");
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Writes every remembered key under the current lease: how many.
    pub async fn restore(&self) -> Result<usize, KvError> {
        let lease = self.lease().await?;
        let keys = self.keys.lock().expect("session keys").clone();
        for (key, l) in &keys {
            let r = match &l.guard {
                None => self.etcd.put(key, &l.value, lease).await,
                Some((master, mv)) => self.put_guarded(key, &l.value, master, mv, lease).await,
            };
            self.observe(r)?;
        }
        Ok(keys.len())
    }

    async fn put_guarded(
        &self,
        key: &str,
        value: &[u8],
        master: &str,
        master_value: &[u8],
        lease: i64,
    ) -> Result<(), KvError> {
        let put_key = put_op(key, value, lease);
        let held = TxnRequest {
            compare: vec![value_is(master, master_value)],
            success: vec![put_key.clone()],
            failure: vec![],
        };
        if self.etcd.txn(held).await?.succeeded {
            return Ok(());
        }
        let recreate = TxnRequest {
            compare: vec![absent(master)],
            success: vec![put_op(master, master_value, 0), put_key],
            failure: vec![],
        };
        if !self.etcd.txn(recreate).await?.succeeded {
            eprintln!(
                "hubble-agent: kvstore: {master} now names other labels; {key} not written again"
            );
        }
        Ok(())
    }

    /// Revokes the lease (agent shutdown): the node's keys go at once.
    pub async fn close(&self) -> Result<(), KvError> {
        let lease = std::mem::take(&mut *self.lease.lock().await);
        if lease != 0 {
            self.etcd.revoke(lease).await?;
        }
        Ok(())
    }
}

/// A put as a transaction's operation.
pub fn put_op(key: &str, value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// A delete of one key as a transaction's operation.
pub fn delete_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// `key` holds `value`.
pub fn value_is(key: &str, value: &[u8]) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Value as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::Value(value.to_vec())),
        range_end: Vec::new(),
    }
}

/// `key` does not exist.
pub fn absent(key: &str) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        range_end: Vec::new(),
    }
}

/// No key exists under `prefix` (etcd compares an empty range against a zero key).
pub fn none_under(prefix: &str) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Version as i32,
        key: prefix.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::Version(0)),
        range_end: super::client::prefix_end(prefix.as_bytes()),
    }
}
