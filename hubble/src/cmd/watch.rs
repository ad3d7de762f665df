//! `hubble watch peers`: follows the Peer service (Peer.Notify) of --server and prints every
//! change. Hidden from `hubble --help`, as in Hubble: it is for development and debugging.

use std::io::{self, Write};

use clap::{ArgMatches, Command};

use super::exit;
use super::server::{ServerOpts, is_broken_pipe, runtime, warn_version};
use crate::printer::peer::write_change;

const PEERS_LONG: &str = "\
Watch for Hubble peers updates: connects to the Peer service of the Hubble server given by \
--server (an agent announces itself and the other nodes of its cluster) and prints each \
change notification as it arrives, one per line:

  PEER_ADDED   10.0.0.1:4244 node-1 (TLS.ServerName: node-1.default.hubble-grpc.cilium.io)

The type (PEER_ADDED, PEER_DELETED, PEER_UPDATED), the address and the node name, then the \
name its TLS certificate carries when the peer serves TLS. Runs until the server ends the \
stream or Ctrl-C.

Exit codes:
  0  the server ended the stream, or Ctrl-C
  2  error: bad flags, no connection to the server, a refused request, or an I/O error";

/// `hubble watch`.
pub fn command() -> Command {
    Command::new("watch")
        .alias("w")
        .hide(true)
        .about("Watch Hubble objects")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("peers")
                .alias("peer")
                .about("Watch for Hubble peers updates")
                .long_about(PEERS_LONG),
        )
}

/// Runs `hubble watch peers`.
pub fn run(m: &ArgMatches) -> anyhow::Result<u8> {
    let Some(("peers", m)) = m.subcommand() else {
        unreachable!("clap knows the subcommands")
    };
    let opts = ServerOpts::from_matches(m)?;
    let rt = runtime()?;
    let res: anyhow::Result<()> = rt.block_on(async {
        let watch = async {
            let ch = opts.connect().await?;
            let mut changes = crate::client::peer_notify(ch).await?;
            warn_version(changes.version_warning.as_deref());
            let stdout = io::stdout();
            while let Some(c) = changes.next().await {
                let mut out = stdout.lock();
                write_change(&mut out, &c?)?;
                out.flush()?;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            r = watch => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match res {
        Ok(()) => Ok(exit::OK),
        Err(e) if is_broken_pipe(&e) => Ok(exit::OK),
        Err(e) => Err(e),
    }
}
