//! flow-exporter: follows a Hubble server (agent or relay) and writes the flows that pass the
//! allow / deny lists, field-masked, as ExportEvent JSON lines to a rotating file or stdout.

pub mod backups;
pub mod config;
pub mod export;
pub mod log;
pub mod run;
pub mod writer;
