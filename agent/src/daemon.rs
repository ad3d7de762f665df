//! The running agent: the model and the datapath it drives, and the one loop that hands
//! datapath records to the flow pipeline and sources' changes to the model.
//!
//! [`Node::start`] loads the datapath and applies the sources' first view (the agent must
//! already be in the network namespace of the endpoints' interfaces, before any tokio
//! runtime exists: setns is per thread). [`Node::run`] then reads records until a signal
//! or the duration, applying changes as they come: endpoints are attached and detached
//! while the readers keep reading the others' events.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hubble_api::flow::AgentEvent;
use tokio::sync::mpsc;

use crate::datapath::{self, Datapath, LostCounter, Options, RawRecord, ReaderOptions};
use crate::kvstore::Cluster;
use crate::model::{Applied, Change, NodeModel, NodeState};

pub use crate::sources::Watcher;

/// The loaded datapath and the model driving it.
pub struct Node {
    pub datapath: Datapath,
    pub model: NodeModel,
    /// How the perf rings are read.
    pub reader: ReaderOptions,
    /// What bringing the node up did, as agent events (ipcache entries, policies,
    /// endpoints), for the Hubble server to record once it runs.
    pub events_up: Vec<AgentEvent>,
    /// With a kvstore: the stage every batch of changes goes through before the model
    /// (cluster identities, publications), stopped (lease revoked) at shutdown.
    pub cluster: Option<Cluster>,
}

/// What the loop tells its caller.
pub enum Event<'a> {
    /// A record from the datapath; `more`: another is already waiting.
    Record(&'a RawRecord, bool),
    /// The model changed: its new state and what happened.
    Changed(&'a NodeState, &'a Applied),
}

/// Prints what an `apply` attached, detached or failed to do.
fn report(applied: &Applied) {
    for a in &applied.attached {
        eprintln!("hubble-agent: endpoint {a} attached");
    }
    for d in &applied.detached {
        eprintln!("hubble-agent: endpoint {d} detached");
    }
    for e in &applied.errors {
        eprintln!("hubble-agent: warning: {e}");
    }
}

impl Node {
    /// Loads the datapath and has `model` apply `initial`; any failed attach or map write
    /// fails the start (and detaches what was attached).
    pub fn start(
        opts: &Options,
        reader: ReaderOptions,
        mut model: NodeModel,
        initial: Vec<Change>,
    ) -> Result<Node> {
        let mut dp = Datapath::load(opts)?;
        let applied = model.apply(initial, &mut dp);
        if let Some(e) = applied.errors.first() {
            model.detach_all(&mut dp);
            dp.shutdown();
            bail!("{e}");
        }
        Ok(Node {
            datapath: dp,
            model,
            reader,
            events_up: applied.events,
            cluster: None,
        })
    }

    /// Applies changes from a source, reporting on stderr what happened.
    pub fn apply(&mut self, changes: Vec<Change>) -> Applied {
        let applied = self.model.apply(changes, &mut self.datapath);
        report(&applied);
        applied
    }

    /// Reads records until a signal or `duration`, handing each record and each model
    /// change to `f`. `banner` is printed once the readers run (tools wait for it before
    /// driving traffic). Returns the first error of `f`.
    pub fn run(
        &mut self,
        banner: &str,
        duration: Option<Duration>,
        watchers: Vec<Watcher>,
        mut f: impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        let rt = runtime()?;
        let lost = Arc::new(LostCounter::default());
        let result = rt.block_on(async {
            let (tx, mut rx) = mpsc::channel::<RawRecord>(8192);
            let mut handles =
                datapath::start_readers(&mut self.datapath, self.reader, tx.clone(), lost)?;
            handles.push(datapath::spawn_l7_reader(&mut self.datapath, tx)?);
            handles.push(self.datapath.spawn_ct_sweeper()?);
            let (ctx, mut crx) = mpsc::channel::<Vec<Change>>(64);
            for w in watchers {
                handles.push(tokio::spawn(w(ctx.clone())));
            }
            drop(ctx);
            let stop = shutdown_signal(duration);
            eprintln!("{banner}");
            tokio::pin!(stop);
            let mut r: Result<()> = loop {
                tokio::select! {
                    _ = &mut stop => break Ok(()),
                    rec = rx.recv() => {
                        let Some(rec) = rec else { break Ok(()) };
                        let more = !rx.is_empty();
                        if let Err(e) = f(Event::Record(&rec, more)) {
                            break Err(e);
                        }
                    }
                    Some(changes) = crx.recv() => {
                        let changes = match &self.cluster {
                            Some(c) => c.resolve(changes).await,
                            None => changes,
                        };
                        let applied = self.apply(changes);
                        if let Err(e) = f(Event::Changed(self.model.state(), &applied)) {
                            break Err(e);
                        }
                    }
                }
            };
            // Let the readers hand over what the rings still hold (the watermark readers
            // flush every 50 ms), handling records meanwhile so that no reader waits on a
            // full channel, until none came for 150 ms (a reader behind on a busy machine
            // still empties its ring) or 2 s passed; then stop them and drain the channel.
            let hard = tokio::time::sleep(Duration::from_secs(2));
            tokio::pin!(hard);
            while r.is_ok() {
                tokio::select! {
                    _ = &mut hard => break,
                    _ = tokio::time::sleep(Duration::from_millis(150)) => break,
                    rec = rx.recv() => {
                        let Some(rec) = rec else { break };
                        let more = !rx.is_empty();
                        r = f(Event::Record(&rec, more));
                    }
                }
            }
            for h in handles {
                h.abort();
            }
            while r.is_ok() {
                let Ok(rec) = rx.try_recv() else { break };
                let more = !rx.is_empty();
                r = f(Event::Record(&rec, more));
            }
            r
        });
        drop(rt);
        result
    }

    /// Detaches every endpoint, prints the datapath's counters with `summary` and unloads
    /// it; returns the endpoints' ENDPOINT_DELETED events.
    pub fn shutdown(mut self, summary: &str) -> Vec<AgentEvent> {
        if let Some(c) = self.cluster.take() {
            c.stop();
        }
        let applied = self.model.detach_all(&mut self.datapath);
        let dp = self.datapath;
        if let Ok(rows) = dp.metrics() {
            let (mut fwd, mut drop) = (0u64, 0u64);
            for (_, reason, p, _) in rows {
                if reason == 0 {
                    fwd += p;
                } else {
                    drop += p;
                }
            }
            eprintln!("hubble-agent: datapath packets forwarded={fwd} dropped={drop}; {summary}");
        }
        if let Ok((sent, lost)) = dp.l7_stats() {
            eprintln!("hubble-agent: L7 captures sent={sent} lost={lost}");
        }
        let (removed, live) = dp.ct_sweep_stats();
        eprintln!("hubble-agent: conntrack expired_removed={removed} live_at_last_sweep={live}");
        for p in dp.prog_stats() {
            eprintln!(
                "hubble-agent: bpf {} runs={} mean={:.0} ns/packet",
                p.name,
                p.run_count,
                p.ns_per_run()
            );
        }
        dp.shutdown();
        applied.events
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

/// Resolves on SIGINT, SIGTERM or after `duration`. The signal handlers are installed by
/// this call, not at the first poll: a signal that comes right after the agent says it is
/// attached still stops it cleanly (must be called inside the runtime).
fn shutdown_signal(duration: Option<Duration>) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = received(int.as_mut()) => {}
            _ = received(term.as_mut()) => {}
            _ = sleep => {}
        }
    }
}

/// Resolves when `s` is received (never without a handler).
async fn received(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
