//! `hubble-agent replay`: the flows of a recording as JSON lines (no privileges needed).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::datapath::record::Reader;
use crate::enrich::Enricher;
use crate::flows::{Counters, FlowBuilder, FlowSink, JsonLines};

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A recording made by `hubble-agent record`.
    pub file: PathBuf,
}

pub fn replay(args: ReplayArgs) -> Result<()> {
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let counters = replay_to(io::BufReader::new(file), &mut out)?;
    out.flush()?;
    eprintln!("hubble-agent: replayed {counters}");
    Ok(())
}

/// Replays a recording into `out` as JSON lines; returns the counters.
pub fn replay_to(input: impl io::Read, out: &mut dyn Write) -> Result<Counters> {
    let mut reader = Reader::new(input)?;
    let node_name = reader.state.node_name();
    let mut builder = FlowBuilder::new(Enricher::new(reader.state.clone(), node_name));
    let mut printer = JsonLines::new(out);
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => {
                let (responses, counters) = builder.handle(&rec);
                printer.take(responses, counters, true)?;
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("hubble-agent: recording ends early: {e}");
                break;
            }
        }
    }
    printer.finish()?;
    Ok(builder.counters)
}
