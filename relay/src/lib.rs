//! hubble-relay: one Hubble Observer API in front of many agents. Peers are found through a
//! seed agent's Peer service or a static list ([`peers`]), each GetFlows request fans out to
//! every connected peer and the streams are merged by flow time ([`sort`], [`observer`],
//! node errors coalesced by [`node_errors`]), served over gRPC ([`server`]) with gRPC health
//! ([`health`]) and Prometheus metrics ([`metrics`]); [`cmd`] holds the flags and
//! [`config`] the config file and environment behind them.

pub mod cmd;
pub mod config;
pub mod health;
pub mod metrics;
pub mod node_errors;
pub mod observer;
pub mod peers;
pub mod server;
pub mod sort;
pub mod wire;
