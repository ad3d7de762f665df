//! The lab: a spec file of namespaces, pods, services and policy, made real as network
//! namespaces and veths on this machine, plus bounded traffic between them.
//!
//! - [`spec`]: the TOML spec and its validation (`spec/load`), the accessors the datapath
//!   uses (netns and interface names, addresses in `spec/addressing`; selectors), the
//!   expected policy verdict (`spec/verdict`) and the runtime pods file (`spec/runtime_pods`).
//! - [`topology`]: `up` / `down` / `status` with iproute2, and `add_pod` / `remove_pod` for
//!   pods added to a running lab (listed in its runtime pods file, see `LabSpec::load_live`).
//! - [`traffic`] and [`serve`]: bounded traffic and the small servers that answer it.
//! - [`cli`]: the `hubble-agent lab` subcommands.

pub mod cli;
pub mod dns;
pub mod flood;
pub mod netns;
pub mod serve;
pub mod spec;
pub mod topology;
pub mod traffic;

pub use spec::{LabSpec, SpecError};
