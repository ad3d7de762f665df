//! Hubble's wire API (packages `flow`, `observer`, `peer`, `relay`) as Rust types.
//! Generated from proto/ at build time: prost messages, tonic clients and servers, and
//! serde impls that follow protojson with proto field names. Types only, no logic.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

pub mod json;
pub mod transcode;

pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
    include!(concat!(env!("OUT_DIR"), "/flow.serde.rs"));
}

pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
    include!(concat!(env!("OUT_DIR"), "/relay.serde.rs"));
}

pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
    include!(concat!(env!("OUT_DIR"), "/observer.serde.rs"));
}

pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/peer.rs"));
    include!(concat!(env!("OUT_DIR"), "/peer.serde.rs"));
}

// Generated `impl json::ProtoJson` for every message (deprecated fields are still encoded).
#[allow(deprecated)]
mod protojson_impls {
    include!(concat!(env!("OUT_DIR"), "/protojson.rs"));
}

/// Encoded `FileDescriptorSet` of every package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hubble_descriptor.bin"));

pub use pbjson_types;
