//! The typed flow pipeline: datapath records → [`FlowBuilder`] (monitor decode, L7 parsers,
//! the model's lookups) → responses → [`FlowSink`]s (the observer ring, the exporter,
//! metrics, the JSON-lines printer). The builder does not know which sinks exist.

pub mod builder;
pub mod sink;

pub use builder::{Counters, FlowBuilder};
pub use sink::{FlowSink, JsonLines};
