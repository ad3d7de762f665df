//! The hubble library: filter engine, printers, flow sources and the CLI commands.
pub mod filter;
pub mod printer;
pub mod source;
pub mod timefmt;
