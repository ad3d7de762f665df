//! `hubble-agent serve-replay` and `serve-flows`: a recording's flows, or a JSON-lines file's,
//! served over the Hubble API like a live agent's, without root or eBPF (benchmarks,
//! debugging).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::datapath::record::Reader;
use crate::enrich::Enricher;
use crate::flows::{FlowBuilder, FlowSink};
use crate::observer::run::{HubbleServer, ServerArgs};

/// `hubble-agent serve-replay`: the flows of a recording, served like a live agent's.
#[derive(Debug, Clone, Args)]
pub struct ServeReplayArgs {
    /// A recording made by `hubble-agent record`.
    pub file: PathBuf,
    /// Stop after this long (default: until SIGINT/SIGTERM), e.g. 30s.
    #[arg(long, value_parser = crate::args::parse_duration)]
    pub duration: Option<std::time::Duration>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Replays a recording into the ring, then serves it until a signal or `--duration`.
pub fn serve_replay(args: ServeReplayArgs) -> Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut reader = Reader::new(std::io::BufReader::new(file))?;
    let node_name = reader.state.node_name();
    let Some(server) = HubbleServer::bind_any(&args.server)? else {
        anyhow::bail!("--no-hubble-server leaves nothing to do");
    };
    let server = server.start(&node_name)?;
    let mut builder = FlowBuilder::new(Enricher::new(reader.state.clone(), node_name));
    let mut ring = server.observer().clone();
    while let Some(rec) = reader.next_record().unwrap_or(None) {
        let (responses, counters) = builder.handle(&rec);
        ring.take(responses, counters, false)?;
    }
    eprintln!(
        "hubble-agent: serving {} replayed records",
        builder.counters
    );
    wait_for_stop(args.duration)?;
    server.stop()
}

/// `hubble-agent serve-flows`: the flows of a JSON-lines file (`hubble observe -o json`
/// output, or `cargo xtask gen-flows`) served like a live agent's, without root or eBPF.
#[derive(Debug, Clone, Args)]
pub struct ServeFlowsArgs {
    /// A file of GetFlowsResponse JSON lines.
    pub file: PathBuf,
    /// Push flows at this rate (flows per second) instead of all at once before serving.
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,
    /// Push this many flows in all, going round the file again as needed (default: the
    /// file once).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Wait this long after the server is up before pushing (lets followers connect).
    #[arg(long, value_parser = crate::args::parse_duration)]
    pub start_delay: Option<std::time::Duration>,
    /// Stop after this long (default: until SIGINT/SIGTERM), e.g. 30s.
    #[arg(long, value_parser = crate::args::parse_duration)]
    pub duration: Option<std::time::Duration>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// GetFlowsResponses of a JSON-lines file, one line at a time (bad lines reported, skipped).
struct FlowLines {
    reader: std::io::BufReader<std::fs::File>,
    path: PathBuf,
    line: Vec<u8>,
    n: u64,
}

impl FlowLines {
    fn next(&mut self) -> Option<hubble_api::observer::GetFlowsResponse> {
        use std::io::BufRead;
        loop {
            self.line.clear();
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("hubble-agent: {}: {e}", self.path.display());
                    return None;
                }
            }
            self.n += 1;
            let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            match hubble::source::parse_line(self.n, line) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(e) => eprintln!("hubble-agent: {}: {e}", self.path.display()),
            }
        }
    }
}

/// Pushes the file's flows into the ring (paced with `--rate`) while serving. Without
/// `--count` the file is read as it is pushed, so the agent then holds what a live one would
/// (the ring); with it, the flows are loaded first and pushed round and round.
pub fn serve_flows(args: ServeFlowsArgs) -> Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut lines = FlowLines {
        reader: std::io::BufReader::with_capacity(1 << 20, file),
        path: args.file.clone(),
        line: Vec::new(),
        n: 0,
    };
    let Some(first) = lines.next() else {
        anyhow::bail!("{}: no flows", args.file.display());
    };
    let Some(server) = HubbleServer::bind_any(&args.server)? else {
        anyhow::bail!("--no-hubble-server leaves nothing to do");
    };
    let server = server.start(&first.node_name)?;
    let obs = server.observer().clone();
    let round: Option<Vec<_>> = args.count.map(|_| {
        let mut all = vec![first.clone()];
        all.extend(std::iter::from_fn(|| lines.next()));
        all
    });
    let count = args.count.unwrap_or(u64::MAX);
    let rate = args.rate;
    let delay = args.start_delay.unwrap_or_default();
    let pusher = std::thread::Builder::new()
        .name("serve-flows".into())
        .spawn(move || {
            std::thread::sleep(delay);
            let start = std::time::Instant::now();
            let pace = |n: u64| {
                if let Some(rate) = rate.filter(|r| *r > 0)
                    && n.is_multiple_of(64)
                {
                    let due = std::time::Duration::from_secs_f64(n as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            };
            let mut pushed = 0u64;
            match &round {
                Some(all) => {
                    for r in all.iter().cycle().take(count as usize) {
                        pace(pushed);
                        obs.push(r);
                        pushed += 1;
                    }
                }
                None => {
                    let mut next = Some(first);
                    while let Some(r) = next {
                        pace(pushed);
                        obs.push(&r);
                        pushed += 1;
                        next = lines.next();
                    }
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let count = pushed;
            eprintln!("hubble-agent: pushed {count} flows in {secs:.3}s");
        })
        .context("starting the pusher thread")?;
    wait_for_stop(args.duration)?;
    drop(pusher);
    server.stop()
}

fn wait_for_stop(duration: Option<std::time::Duration>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = sleep => {}
        }
        Ok(())
    })
}
