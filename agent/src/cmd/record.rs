//! `hubble-agent record`: the datapath's raw records to a file, with the node state they
//! are to be enriched with (the state when recording started).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use super::{DatapathArgs, Started, no_extra, start};
use crate::daemon::Event;
use crate::datapath::record::Writer;

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub dp: DatapathArgs,
    /// File to write the recording to (created or replaced with mode 0600; a symbolic link
    /// there is an error).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Stop after this long (default: until SIGINT/SIGTERM), e.g. 10s.
    #[arg(long, value_parser = crate::args::parse_duration)]
    pub duration: Option<Duration>,
}

pub fn record(args: RecordArgs) -> Result<()> {
    // Opened first, so a bad path fails before the datapath is touched. Recordings hold
    // every packet's headers and payloads of L7 captures: private, never through a symlink.
    let file: File = hubble::files::replace(&args.output, hubble::files::PRIVATE)
        .with_context(|| format!("creating {}", args.output.display()))?;
    // The recording holds the state at its start: no watcher changes it afterwards.
    let Started {
        mut node, banner, ..
    } = match start(&args.dp, no_extra()) {
        Ok(s) => s,
        Err(e) => {
            // Nothing was recorded: no empty file left behind.
            let _ = std::fs::remove_file(&args.output);
            return Err(e);
        }
    };
    let mut w = Writer::new(BufWriter::new(file), node.model.state())?;
    let mut n = 0u64;
    let started = Instant::now();
    let res = node.run(&banner, args.duration, Vec::new(), |ev| {
        if let Event::Record(rec, _) = ev {
            w.write(rec)?;
            n += 1;
        }
        Ok(())
    });
    let flushed = w.finish();
    let summary = crate::flows::Counters::default().to_string();
    if let Err(e) = res.and(flushed.map(|_| ()).map_err(anyhow::Error::from)) {
        node.shutdown(&summary);
        return Err(e);
    }
    eprintln!(
        "hubble-agent: recorded {n} records in {:.1}s to {}",
        started.elapsed().as_secs_f64(),
        args.output.display()
    );
    node.shutdown(&summary);
    Ok(())
}
