//! The cluster-wide state of Cilium's kvstore mode, in etcd on Cilium's key layout:
//! identities allocated cluster-wide, ipcache entries published by the node owning a pod
//! and mirrored by all, a node registry under leases.
//!
//! - [`client`]: etcd v3 over gRPC (our proto subset), lazily (re)connecting.
//! - [`keys`]: Cilium's key paths and JSON values.
//! - [`session`]: the node's lease, kept alive; its keys written again when it was lost.
//! - [`allocator`]: identities (same labels, same id on every node; freed when unused).
//! - [`reflect`]: a prefix mirrored by list + watch, re-listed after each reconnect.
//! - [`cluster`]: the node's stage between sources and model (identities, publications,
//!   remote endpoints), on a thread of its own; [`remote`]: other nodes' pods from the
//!   mirrored ipcache; [`peers`]: the node registry as Peer Notify's list and as the
//!   remote-node addresses; [`args`]:
//!   Cilium's flags.

pub mod allocator;
pub mod args;
pub mod client;
pub mod cluster;
pub mod keys;
pub mod peers;
pub mod reflect;
pub mod remote;
pub mod session;

pub use allocator::Allocator;
pub use args::KvstoreArgs;
pub use client::{Etcd, KvError};
pub use cluster::{Cluster, ClusterConfig};
pub use session::Session;
