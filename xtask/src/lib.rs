//! Build, fixture, demo and bench helpers for the workspace (`cargo xtask ...`).
//! The library part is shared with benches and tests: see [`flowgen`].

pub mod containerd;
pub mod dockerd;
pub mod flowgen;
pub mod workloads;
