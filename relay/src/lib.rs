//! hubble-relay: one Hubble Observer API in front of many agents. Peers are found through a
//! seed agent's Peer service or a static list ([`peers`]), each GetFlows request fans out to
//! every connected peer and the streams are merged by flow time ([`sort`], [`observer`]),
//! served over gRPC ([`server`]); [`cmd`] holds the flags.

pub mod cmd;
pub mod observer;
pub mod peers;
pub mod server;
pub mod sort;
pub mod wire;
