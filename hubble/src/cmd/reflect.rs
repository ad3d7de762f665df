//! `hubble reflect`: the proto files of the Hubble API a server offers, read through its gRPC
//! reflection service. Hidden from `hubble --help`, as in Hubble: it is for development.

use std::io::{self, Write};

use clap::{ArgMatches, Command};

use super::exit;
use super::server::{ServerOpts, is_broken_pipe, runtime};
use crate::printer::descriptor::write_file;

const LONG: &str = "\
Use gRPC reflection to explore Hubble's API: asks the server given by --server which gRPC \
services it offers (besides health and reflection themselves) and prints the proto file \
defining each one, then every file those import, each once, as one JSON object per line \
(Go's encoding/json of google.protobuf.FileDescriptorProto, as Hubble prints it).

Examples:
  # The services and messages of the local agent's Hubble API
  hubble reflect --server unix:///var/run/cilium/hubble.sock

  # The file names only
  hubble reflect --server localhost:4245 | jq -r .name

Exit codes:
  0  success
  2  error: bad flags, no connection to the server, no reflection service there, or an
     I/O error";

/// `hubble reflect`.
pub fn command() -> Command {
    Command::new("reflect")
        .hide(true)
        .about("Use gRPC reflection to explore Hubble's API")
        .long_about(LONG)
}

/// Runs `hubble reflect`.
pub fn run(m: &ArgMatches) -> anyhow::Result<u8> {
    let opts = ServerOpts::from_matches(m)?;
    let rt = runtime()?;
    let mut files = Vec::new();
    let walked: anyhow::Result<()> = rt.block_on(async {
        let walk = async {
            let ch = opts.connect().await?;
            crate::reflection::walk(ch, &mut files).await?;
            anyhow::Ok(())
        };
        tokio::select! {
            r = walk => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    // What was found before an error is printed, then the error.
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let printed: anyhow::Result<()> = files
        .iter()
        .try_for_each(|f| write_file(&mut out, f))
        .and_then(|()| out.flush())
        .map_err(Into::into);
    match printed.and(walked) {
        Ok(()) => Ok(exit::OK),
        Err(e) if is_broken_pipe(&e) => Ok(exit::OK),
        Err(e) => Err(e),
    }
}
