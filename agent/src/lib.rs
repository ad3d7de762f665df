//! hubble-agent: sources (the lab, …) feed a node model that drives the eBPF datapath; the
//! kernel's monitor events are decoded and enriched into Hubble flows for the sinks (the
//! observer ring served over gRPC, the exporter, metrics, a JSON-lines printer).

pub mod args;
pub mod certs;
pub mod cmd;
#[doc(hidden)]
pub mod cri_testing;
pub mod daemon;
pub mod datapath;
pub mod enrich;
pub mod exporter;
pub mod flows;
pub mod kvstore;
pub mod l7;
pub mod lab;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod observer;
pub mod sources;
