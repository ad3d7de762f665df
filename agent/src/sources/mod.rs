//! Endpoint sources: each learns endpoints, services and policies its own way and sends the
//! model [`crate::model::Change`]s. A source knows nothing of the datapath or of flows.
//!
//! - [`lab`]: a lab spec file (and the pods `lab add-pod` adds to a running lab).

pub mod lab;
