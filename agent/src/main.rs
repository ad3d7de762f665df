//! `hubble-agent`: the node agent binary.
//!
//! A small clap dispatcher over `agent::cmd` (one module per subcommand).

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
    /// Attach the eBPF datapath to a lab's endpoints, or without a lab to this host's
    /// containers, and turn its events into flows (root).
    Run(Box<agent::cmd::RunArgs>),
    /// Save raw datapath events and the endpoint state to a file (root).
    Record(agent::cmd::RecordArgs),
    /// Print the flows of a recording as JSON lines (no privileges needed).
    Replay(agent::cmd::ReplayArgs),
    /// Serve the flows of a recording over the Hubble API, like a live agent (debugging).
    #[command(hide = true)]
    ServeReplay(agent::cmd::serve::ServeReplayArgs),
    /// Serve the flows of a JSON-lines file over the Hubble API (benchmarks, no root needed).
    #[command(hide = true)]
    ServeFlows(agent::cmd::serve::ServeFlowsArgs),
    /// Build, drive and tear down a lab of pods as network namespaces (needs root).
    Lab(agent::cmd::lab::LabCmd),
    /// Make a CA and TLS certificates for the Hubble API, the relay and clients.
    #[command(subcommand)]
    Certs(agent::certs::CertsCmd),
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
    let res = match cli.command {
        Command::Lab(cmd) => return cmd.run(),
        Command::Run(args) => agent::cmd::run(*args),
        Command::Record(args) => agent::cmd::record(args),
        Command::Replay(args) => agent::cmd::replay(args),
        Command::ServeReplay(args) => agent::cmd::serve::serve_replay(args),
        Command::ServeFlows(args) => agent::cmd::serve::serve_flows(args),
        Command::Certs(cmd) => cmd.run(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
