//! hubble-agent: loads the eBPF datapath onto lab endpoints, decodes the kernel's monitor
//! events and enriches them into Hubble flows.

pub mod certs;
pub mod cmd;
pub mod datapath;
pub mod enrich;
pub mod exporter;
pub mod l7;
pub mod lab;
pub mod metrics;
pub mod monitor;
pub mod observer;
