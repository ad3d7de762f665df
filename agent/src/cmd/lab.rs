//! `hubble-agent lab …`: the lab's own command line (building, driving and tearing down
//! labs lives in `crate::lab`).

pub use crate::lab::cli::LabCmd;
