//! `hubble-agent`: the node agent binary.
//!
//! Minimal clap dispatcher written by the lab engineer while the datapath's `run` did not
//! exist yet; the datapath engineer owns this file and adds their subcommands beside `lab`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hubble-agent",
    version,
    about = "Hubble node agent: eBPF datapath, flows, lab"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, drive and tear down a lab of pods as network namespaces (needs root).
    Lab(agent::lab::cli::LabCmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Lab(cmd) => cmd.run(),
    }
}
