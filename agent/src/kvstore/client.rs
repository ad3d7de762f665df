//! An etcd v3 client over gRPC (our own subset of etcd's protos in `agent/proto/etcd`):
//! ranges, puts, deletes and transactions, leases and their keepalive stream, prefix
//! watches. The channel connects lazily and reconnects by itself: while etcd is down
//! every call fails within [`CALL_TIMEOUT`] with one line, and works again once it is back.

use std::time::Duration;

use hubble::tls::ClientTls;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use pb::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient,
    watch_request::RequestUnion,
};
use pb::mvccpb::KeyValue;

/// The generated types, nested as their proto packages are (prost's relative paths need
/// it).
#[allow(clippy::all, rust_2018_idioms)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// How long one unary call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A failed kvstore operation: one line saying where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etcd {address}: {message}")]
pub struct KvError {
    pub address: String,
    pub message: String,
}

/// A connection to one etcd member (cheap to clone: clones share the channel).
#[derive(Clone)]
pub struct Etcd {
    address: String,
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
}

/// The end of the range of keys under `prefix` (etcd's "prefix plus one").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Etcd {
    /// A client of the etcd member at `address` (`HOST:PORT`, `http://HOST:PORT`, or
    /// `https://HOST:PORT` checked against the system's CAs). It connects on first use
    /// (must be called inside a tokio runtime).
    pub fn connect(address: &str) -> Result<Etcd, KvError> {
        Self::connect_tls(address, None)
    }

    /// [`Etcd::connect`] over TLS with `tls` (its CAs, its client certificate): the
    /// address must be `https://HOST:PORT`.
    pub fn connect_tls(address: &str, tls: Option<ClientTls>) -> Result<Etcd, KvError> {
        let err = |message: String| KvError {
            address: address.to_string(),
            message,
        };
        let (host_port, tls) = match (address.strip_prefix("https://"), tls) {
            (Some(hp), Some(t)) => (hp, Some(t)),
            (Some(hp), None) => (
                hp,
                Some(ClientTls::new(&[], None, None, false).map_err(|e| err(format!("TLS: {e}")))?),
            ),
            (None, Some(_)) => {
                return Err(err(
                    "TLS files are given for a plaintext endpoint: use https://".into(),
                ));
            }
            (None, None) => (address.strip_prefix("http://").unwrap_or(address), None),
        };
        let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
            .map_err(|e| err(format!("invalid address: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = match tls {
            None => endpoint.connect_lazy(),
            Some(tls) => endpoint.connect_with_connector_lazy(tower::service_fn(
                move |uri: tonic::codegen::http::Uri| {
                    let tls = tls.clone();
                    async move {
                        let host = uri.host().unwrap_or_default().to_string();
                        let port = uri.port_u16().unwrap_or(2379);
                        let bare = host.trim_start_matches('[').trim_end_matches(']');
                        let tcp = tokio::net::TcpStream::connect((bare, port)).await?;
                        tcp.set_nodelay(true)?;
                        let s = tls.handshake(&host, tcp).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                },
            )),
        };
        Ok(Etcd {
            address: address.to_string(),
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn error(&self, message: impl std::fmt::Display) -> KvError {
        KvError {
            address: self.address.clone(),
            message: message.to_string(),
        }
    }

    /// Runs one unary call under [`CALL_TIMEOUT`].
    async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, KvError> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.error(format!("{what}: {}", status_line(&s)))),
            Err(_) => Err(self.error(format!("{what}: no answer in {CALL_TIMEOUT:?}"))),
        }
    }

    /// The keys under `prefix` and the store's revision they were read at.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), KvError> {
        let req = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        };
        let r = self.call("range", self.kv.clone().range(req)).await?;
        Ok((r.kvs, r.header.map_or(0, |h| h.revision)))
    }

    /// The keys of a range request.
    pub async fn range(&self, req: RangeRequest) -> Result<Vec<KeyValue>, KvError> {
        Ok(self.call("range", self.kv.clone().range(req)).await?.kvs)
    }

    /// One key's value (none when it does not exist).
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let req = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let r = self.call("range", self.kv.clone().range(req)).await?;
        Ok(r.kvs.into_iter().next())
    }

    /// Writes `key`; under `lease` unless it is 0.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), KvError> {
        let req = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        self.call("put", self.kv.clone().put(req)).await.map(drop)
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let req = DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let r = self
            .call("delete", self.kv.clone().delete_range(req))
            .await?;
        Ok(r.deleted > 0)
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, KvError> {
        self.call("txn", self.kv.clone().txn(req)).await
    }

    /// A new lease of `ttl` seconds: its id.
    pub async fn grant(&self, ttl: i64) -> Result<i64, KvError> {
        let req = LeaseGrantRequest { ttl, id: 0 };
        let r = self
            .call("lease grant", self.lease.clone().lease_grant(req))
            .await?;
        if !r.error.is_empty() {
            return Err(self.error(format!("lease grant: {}", r.error)));
        }
        Ok(r.id)
    }

    /// Revokes a lease: the keys under it are deleted.
    pub async fn revoke(&self, id: i64) -> Result<(), KvError> {
        let req = LeaseRevokeRequest { id };
        self.call("lease revoke", self.lease.clone().lease_revoke(req))
            .await
            .map(drop)
    }

    /// Renews `lease` once over a keepalive stream (`keepalive`, opened on first use):
    /// the TTL left, 0 when the lease no longer exists.
    pub async fn keep_alive(
        &self,
        keepalive: &mut Option<KeepAlive>,
        lease: i64,
    ) -> Result<i64, KvError> {
        let renewed = async {
            let request = LeaseKeepAliveRequest { id: lease };
            let ka = match keepalive {
                Some(ka) => {
                    ka.tx
                        .send(request)
                        .await
                        .map_err(|_| "stream closed".to_string())?;
                    ka
                }
                None => {
                    // etcd answers the stream's headers with its first message: the
                    // request must be on its way before the call is awaited.
                    let (tx, rx) = mpsc::channel(4);
                    tx.try_send(request).expect("an empty channel");
                    let stream = self
                        .lease
                        .clone()
                        .lease_keep_alive(ReceiverStream::new(rx))
                        .await
                        .map_err(|s| status_line(&s))?
                        .into_inner();
                    keepalive.insert(KeepAlive { tx, stream })
                }
            };
            match ka.stream.message().await {
                Ok(Some(r)) => Ok(r.ttl),
                Ok(None) => Err("stream ended".to_string()),
                Err(s) => Err(status_line(&s)),
            }
        };
        let r = match tokio::time::timeout(CALL_TIMEOUT, renewed).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer in {CALL_TIMEOUT:?}")),
        };
        r.map_err(|e| {
            *keepalive = None;
            self.error(format!("lease keepalive: {e}"))
        })
    }

    /// Watches the keys under `prefix` from `start_revision` (0: from now). The stream's
    /// first message confirms the watch.
    pub async fn watch_prefix(&self, prefix: &str, start_revision: i64) -> Result<Watch, KvError> {
        let (tx, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                start_revision,
                ..Default::default()
            })),
        };
        tx.send(create)
            .await
            .map_err(|_| self.error("watch: request stream closed"))?;
        let mut stream = self
            .call("watch", self.watch.clone().watch(ReceiverStream::new(rx)))
            .await?;
        match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(r))) if r.created && !r.canceled => Ok(Watch {
                _tx: tx,
                stream,
                address: self.address.clone(),
            }),
            Ok(Ok(Some(r))) => Err(self.error(format!("watch refused: {}", r.cancel_reason))),
            Ok(Ok(None)) => Err(self.error("watch: stream ended")),
            Ok(Err(s)) => Err(self.error(format!("watch: {}", status_line(&s)))),
            Err(_) => Err(self.error(format!("watch: no answer in {CALL_TIMEOUT:?}"))),
        }
    }
}

/// An open lease keepalive stream.
pub struct KeepAlive {
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    stream: tonic::Streaming<pb::etcdserverpb::LeaseKeepAliveResponse>,
}

/// An open watch: its responses, until the stream fails or the watch is canceled.
pub struct Watch {
    /// Keeps the request side open (closing it ends the watch).
    _tx: mpsc::Sender<WatchRequest>,
    stream: tonic::Streaming<WatchResponse>,
    address: String,
}

impl Watch {
    /// The next batch of events.
    pub async fn next(&mut self) -> Result<WatchResponse, KvError> {
        let err = |message: String| KvError {
            address: self.address.clone(),
            message,
        };
        match self.stream.message().await {
            Ok(Some(r)) if r.canceled => Err(err(format!(
                "watch canceled: {} (compacted at {})",
                r.cancel_reason, r.compact_revision
            ))),
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(err("watch: stream ended".into())),
            Err(s) => Err(err(format!("watch: {}", status_line(&s)))),
        }
    }
}

/// A gRPC status as one short line.
fn status_line(s: &tonic::Status) -> String {
    let msg = s.message().lines().next().unwrap_or("");
    if msg.is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {msg}", s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_prefix_plus_one() {
        assert_eq!(prefix_end(b"a/b"), b"a/c");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
