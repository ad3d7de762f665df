//! The hubble library: filter engine, printers, flow sources and the CLI commands.
pub mod client;
pub mod cmd;
pub mod config;
pub mod field_mask;
pub mod files;
pub mod filter;
pub mod limits;
pub mod listen;
pub mod pipeline;
pub mod printer;
pub mod reflection;
pub mod source;
pub mod timefmt;
pub mod tls;
pub mod wire;
