//! The agent's own subcommands: `run` (datapath → flows), `record` (raw perf samples to a
//! file) and `replay` (a recording → flows, without privileges).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use hubble_api::flow::{LostEvent, LostEventSource};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use pbjson_types::Int32Value;
use tokio::sync::mpsc;

use crate::datapath::record::{Reader, Writer};
use crate::datapath::{self, Aggregation, Datapath, LostCounter, Options, RawRecord, policy};
use crate::enrich::{EnrichError, Enricher, NodeState};
use crate::lab::spec::LabSpec;

#[derive(Debug, Clone, Args)]
pub struct DatapathArgs {
    /// Lab spec whose endpoints the datapath attaches to (the lab must be up).
    #[arg(long, value_name = "SPEC")]
    pub lab: PathBuf,
    /// In a multi-node lab, the node this agent plays: only its pods (`node = NAME` in the
    /// spec) are attached and flows carry its name (default: the spec's lab.node).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Monitor aggregation level (Cilium's meaning).
    #[arg(long, value_enum, default_value_t = Aggregation::Medium)]
    pub aggregation: Aggregation,
    /// Packet bytes captured with each event.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=1500))]
    pub capture_len: u32,
    /// Bytes of each DNS/HTTP packet handed to the L7 parsers (pods' `l7` rules and DNS on
    /// port 53, see the lab spec); 0 turns L7 visibility off.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(0..=4096))]
    pub l7_capture_len: u16,
    /// Perf ring data pages per CPU (a power of two; 256 pages = 1 MiB rides out ~20 ms
    /// of reader delay at 400k events/s, where Cilium's 64 lost samples on this machine).
    #[arg(long, default_value_t = datapath::ReaderOptions::default().pages, hide = true)]
    pub perf_pages: usize,
    /// Wake the perf reader once this many bytes are queued (default: a quarter of the ring);
    /// 0 = aya's reader with a wakeup per sample.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub perf_wakeup_bytes: Option<u32>,
}

impl DatapathArgs {
    /// The perf reader settings of these flags.
    pub fn reader_options(&self) -> datapath::ReaderOptions {
        let pages = self.perf_pages.max(1).next_power_of_two();
        datapath::ReaderOptions {
            pages,
            wakeup_bytes: self.perf_wakeup_bytes.unwrap_or((pages * 4096 / 4) as u32),
            ..datapath::ReaderOptions::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dp: DatapathArgs,
    /// Print every flow as one JSON line (`hubble observe -o json` format).
    #[arg(long)]
    pub print_flows: bool,
    /// Stop after this long (default: until SIGINT/SIGTERM), e.g. 30s.
    #[arg(long, value_parser = crate::lab::cli::parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub server: crate::observer::run::ServerArgs,
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    pub export: crate::exporter::ExportArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub dp: DatapathArgs,
    /// File to write the recording to.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Stop after this long (default: until SIGINT/SIGTERM), e.g. 10s.
    #[arg(long, value_parser = crate::lab::cli::parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A recording made by `hubble-agent record`.
    pub file: PathBuf,
}

/// Counters of one run, printed to stderr at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub flows: u64,
    pub decode_errors: u64,
    pub non_ip: u64,
    pub lost: u64,
    /// L7 flows among `flows`, and L7 captures that gave no flow (malformed DNS, …).
    pub l7_flows: u64,
    pub l7_errors: u64,
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flows={} decode_errors={} non_ip={} lost_samples={} l7_flows={} l7_errors={}",
            self.flows, self.decode_errors, self.non_ip, self.lost, self.l7_flows, self.l7_errors
        )
    }
}

/// Turns records into JSON lines; shared by `run` and `replay`. One response (and its flow's
/// buffers) is reused from line to line.
pub struct FlowPrinter<G> {
    pub enricher: Enricher<G>,
    pub counters: Counters,
    /// DNS and HTTP parsing of the datapath's L7 captures.
    pub l7: crate::l7::L7Engine,
    resp: GetFlowsResponse,
    buf: Vec<u8>,
    l7_flows: Vec<hubble_api::flow::Flow>,
    l7_resps: Vec<GetFlowsResponse>,
    /// What the last record produced: 0 none, 1 `resp`, 2 the first `l7_count` of `l7_resps`.
    last: u8,
    l7_count: usize,
}

impl<G: crate::enrich::Getters> FlowPrinter<G> {
    pub fn new(enricher: Enricher<G>) -> Self {
        let resp = GetFlowsResponse {
            node_name: enricher.node_name().to_string(),
            ..GetFlowsResponse::default()
        };
        Self {
            enricher,
            counters: Counters::default(),
            l7: crate::l7::L7Engine::new(),
            resp,
            buf: Vec::with_capacity(4096),
            l7_flows: Vec::new(),
            l7_resps: Vec::new(),
            last: 0,
            l7_count: 0,
        }
    }

    /// The responses (flows or a lost event) the last record produced, in order: one for a
    /// monitor event, any number for an L7 capture (pipelined HTTP), none when skipped.
    pub fn responses(&self) -> &[GetFlowsResponse] {
        match self.last {
            1 => std::slice::from_ref(&self.resp),
            2 => &self.l7_resps[..self.l7_count],
            _ => &[],
        }
    }

    fn handle_l7(
        &mut self,
        data: &[u8],
        time: SystemTime,
        mut out: Option<&mut dyn Write>,
    ) -> io::Result<()> {
        let n = match self
            .l7
            .handle(data, time, &mut self.enricher, &mut self.l7_flows)
        {
            Ok(n) => n,
            Err(_) => {
                self.counters.l7_errors += 1;
                return Ok(());
            }
        };
        while self.l7_resps.len() < n {
            self.l7_resps.push(GetFlowsResponse {
                node_name: self.enricher.node_name().to_string(),
                ..GetFlowsResponse::default()
            });
        }
        for (f, r) in self
            .l7_flows
            .iter_mut()
            .zip(self.l7_resps.iter_mut())
            .take(n)
        {
            r.time = f.time;
            // Swap, not take: the flow the response held goes back to be refilled, so L7
            // flows reuse their buffers as trace flows do.
            match &mut r.response_types {
                Some(ResponseTypes::Flow(held)) => std::mem::swap(held, f),
                _ => r.response_types = Some(ResponseTypes::Flow(std::mem::take(f))),
            }
            if let Some(out) = out.as_deref_mut() {
                self.buf.clear();
                hubble::printer::json::write_get_flows_response(&mut self.buf, r)?;
                out.write_all(&self.buf)?;
            }
        }
        self.counters.flows += n as u64;
        self.counters.l7_flows += n as u64;
        self.l7_count = n;
        self.last = 2;
        Ok(())
    }

    /// The response of the last record handled (stale when that record gave no flow).
    pub fn response(&self) -> &GetFlowsResponse {
        &self.resp
    }

    /// Handles one record; writes a JSON line when `out` is given.
    pub fn handle(&mut self, r: &RawRecord, out: Option<&mut dyn Write>) -> io::Result<()> {
        self.last = 0;
        match r {
            RawRecord::Sample { time, data, .. }
                if data.first() == Some(&crate::l7::MSG_L7_CAPTURE) =>
            {
                return self.handle_l7(data, *time, out);
            }
            RawRecord::Sample { time, data, .. } => {
                let mut flow = match self.resp.response_types.take() {
                    Some(ResponseTypes::Flow(f)) => f,
                    _ => Default::default(),
                };
                let res = self.enricher.flow_into_from_sample(data, *time, &mut flow);
                self.resp.time = flow.time;
                self.resp.response_types = Some(ResponseTypes::Flow(flow));
                match res {
                    Ok(()) => self.counters.flows += 1,
                    Err(EnrichError::NotIp) => {
                        self.counters.non_ip += 1;
                        return Ok(());
                    }
                    Err(EnrichError::Decode(_)) => {
                        self.counters.decode_errors += 1;
                        return Ok(());
                    }
                }
            }
            RawRecord::Lost { cpu, time, count } => {
                self.counters.lost += count;
                let ts = timestamp(*time);
                self.resp.time = Some(ts);
                self.resp.response_types = Some(ResponseTypes::LostEvents(LostEvent {
                    source: LostEventSource::PerfEventRingBuffer as i32,
                    num_events_lost: *count,
                    cpu: Some(Int32Value { value: *cpu as i32 }),
                    first: Some(ts),
                    last: Some(ts),
                }));
            }
        }
        self.last = 1;
        if let Some(out) = out {
            // Go Hubble's exact `-o json` bytes (field order, `Z` timestamps, HTML escaping).
            self.buf.clear();
            hubble::printer::json::write_get_flows_response(&mut self.buf, &self.resp)?;
            out.write_all(&self.buf)?;
        }
        Ok(())
    }
}

fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The attached datapath of a lab, with everything needed to enrich its events.
///
/// For other front ends (e.g. a gRPC observer): `attach_lab` before building the tokio
/// runtime, then `start_readers` inside it, `Enricher::new(att.state.clone(), ..)` on the
/// records, and `shutdown` at the end.
pub struct Attached {
    pub datapath: Datapath,
    pub state: NodeState,
    /// The "datapath attached …" line, printed once the perf readers run (events sent
    /// before that are lost, so tools wait for this line before driving traffic).
    pub banner: String,
    /// How `start_readers` reads the perf rings.
    pub reader: datapath::ReaderOptions,
    /// What bringing up the node did, as agent events (ipcache entries, policies,
    /// endpoints), for the Hubble server to record once it runs.
    pub events_up: Vec<hubble_api::flow::AgentEvent>,
    /// The agent events of tearing the node down (its endpoints deleted).
    pub events_down: Vec<hubble_api::flow::AgentEvent>,
}

impl Attached {
    /// Starts one perf reader task per CPU sending into `tx` (call inside a tokio runtime).
    pub fn start_readers(
        &mut self,
        tx: mpsc::Sender<RawRecord>,
        lost: Arc<LostCounter>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut handles =
            datapath::start_readers(&mut self.datapath, self.reader, tx.clone(), lost)?;
        handles.push(datapath::spawn_l7_reader(&mut self.datapath, tx)?);
        Ok(handles)
    }

    /// Prints the datapath counters and detaches everything.
    pub fn shutdown(self, counters: Counters) {
        finish(self, counters)
    }
}

/// Checks privileges and the lab, enters the node netns (this thread and the threads it
/// creates afterwards), loads the datapath, fills its maps and attaches it to every endpoint.
/// Must run before any tokio runtime exists (setns is per thread).
pub fn attach_lab(args: &DatapathArgs) -> Result<Attached> {
    let spec = LabSpec::load(&args.lab).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !datapath::is_root() {
        bail!("the datapath needs root (CAP_BPF, CAP_NET_ADMIN): run hubble-agent as root");
    }
    let st = crate::lab::topology::status(&spec);
    if !st.is_up() {
        bail!(
            "lab {} is not up: run `hubble-agent lab up {}` first",
            spec.lab.name,
            args.lab.display()
        );
    }
    let node = args.node.clone().unwrap_or_else(|| spec.lab.node.clone());
    if !spec.node_names().contains(&node.as_str()) {
        bail!(
            "--node {node:?} is not a node of lab {} (nodes: {})",
            spec.lab.name,
            spec.node_names().join(", ")
        );
    }
    // Veths of the pods this node owns; other nodes' agents attach to the rest.
    let own: std::collections::HashSet<&str> = spec
        .pods
        .iter()
        .filter(|p| p.node == node)
        .map(|p| p.host_veth.as_str())
        .collect();
    crate::lab::netns::enter(&spec.node_netns()).context("entering the node netns")?;
    let state = NodeState::from_spec(&spec, |ifname| {
        let Ok(c) = std::ffi::CString::new(ifname) else {
            return 0;
        };
        // SAFETY: c is a valid NUL-terminated string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    });
    if let Some(ep) = state.endpoints.iter().find(|e| e.ifindex == 0) {
        bail!(
            "interface {} of pod {}/{} is missing in the node netns: re-run `hubble-agent lab up`",
            ep.ifname,
            ep.namespace,
            ep.pod_name
        );
    }
    // Leftovers of a crashed run: its clsact qdiscs (and their filters).
    for ep in state
        .endpoints
        .iter()
        .filter(|e| own.contains(e.ifname.as_str()))
    {
        datapath::remove_clsact(&ep.ifname);
    }
    let compiled = policy::compile(&spec, &state);
    let mut state = state;
    state.node = node;
    state.policy_rules = policy::rules(&spec, &compiled);
    let opts = Options {
        aggregation: args.aggregation,
        capture_len: args.capture_len,
        l7_capture_len: args.l7_capture_len,
        ..Options::default()
    };
    let mut dp = Datapath::load(&opts)?;
    dp.fill(&state, &compiled)?;
    let l7_rules = crate::l7::datapath_rules(&spec, &state);
    dp.fill_l7(&l7_rules)?;
    for ep in state
        .endpoints
        .iter()
        .filter(|e| own.contains(e.ifname.as_str()))
    {
        if let Err(e) = dp.attach(&ep.ifname) {
            dp.shutdown();
            return Err(e.into());
        }
    }
    let banner = format!(
        "hubble-agent: datapath attached to {} endpoints of lab {} (aggregation {:?}, capture {} bytes, {} L7 rules, L7 capture {} bytes)",
        own.len(),
        spec.lab.name,
        args.aggregation,
        args.capture_len,
        l7_rules.len(),
        args.l7_capture_len
    );
    let policies: Vec<(String, String)> = spec
        .policies
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    let is_own = |e: &crate::enrich::state::EndpointInfo| own.contains(e.ifname.as_str());
    let events_up = crate::observer::events::lab_up(&state, &policies, is_own);
    let events_down = state
        .endpoints
        .iter()
        .filter(|e| is_own(e))
        .map(crate::observer::events::endpoint_deleted)
        .collect();
    Ok(Attached {
        datapath: dp,
        state,
        banner,
        reader: args.reader_options(),
        events_up,
        events_down,
    })
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
fn shutdown_signal(duration: Option<Duration>) -> impl std::future::Future<Output = ()> {
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

/// Reads records from the datapath until a signal or the duration, handing each to `f`.
fn pump(
    mut att: Attached,
    duration: Option<Duration>,
    f: impl FnMut(&NodeState, &RawRecord, bool) -> Result<()>,
) -> (Attached, Result<()>) {
    let r = pump_inner(&mut att, duration, f);
    (att, r)
}

fn pump_inner(
    att: &mut Attached,
    duration: Option<Duration>,
    mut f: impl FnMut(&NodeState, &RawRecord, bool) -> Result<()>,
) -> Result<()> {
    let rt = runtime()?;
    let lost = Arc::new(LostCounter::default());
    let result = rt.block_on(async {
        let (tx, mut rx) = mpsc::channel::<RawRecord>(8192);
        let handles = att.start_readers(tx, lost.clone())?;
        let stop = shutdown_signal(duration);
        eprintln!("{}", att.banner);
        tokio::pin!(stop);
        let mut r: Result<()> = loop {
            tokio::select! {
                _ = &mut stop => break Ok(()),
                rec = rx.recv() => {
                    let Some(rec) = rec else { break Ok(()) };
                    let more = !rx.is_empty();
                    if let Err(e) = f(&att.state, &rec, more) {
                        break Err(e);
                    }
                }
            }
        };
        // Let the readers hand over what the rings still hold (the watermark readers flush
        // every 50 ms), handling records meanwhile so that no reader waits on a full channel;
        // then stop them and drain the channel.
        let grace = tokio::time::sleep(Duration::from_millis(150));
        tokio::pin!(grace);
        while r.is_ok() {
            tokio::select! {
                _ = &mut grace => break,
                rec = rx.recv() => {
                    let Some(rec) = rec else { break };
                    let more = !rx.is_empty();
                    r = f(&att.state, &rec, more);
                }
            }
        }
        for h in handles {
            h.abort();
        }
        while r.is_ok() {
            let Ok(rec) = rx.try_recv() else { break };
            let more = !rx.is_empty();
            r = f(&att.state, &rec, more);
        }
        r
    });
    drop(rt);
    result
}

fn finish(att: Attached, counters: Counters) {
    if let Ok(rows) = att.datapath.metrics() {
        let (mut fwd, mut drop) = (0u64, 0u64);
        for (_, reason, p, _) in rows {
            if reason == 0 {
                fwd += p;
            } else {
                drop += p;
            }
        }
        eprintln!("hubble-agent: datapath packets forwarded={fwd} dropped={drop}; {counters}");
    }
    if let Ok((sent, lost)) = att.datapath.l7_stats() {
        eprintln!("hubble-agent: L7 captures sent={sent} lost={lost}");
    }
    for p in att.datapath.prog_stats() {
        eprintln!(
            "hubble-agent: bpf {} runs={} mean={:.0} ns/packet",
            p.name,
            p.run_count,
            p.ns_per_run()
        );
    }
    att.datapath.shutdown();
}

/// `hubble-agent run`.
/// The other nodes of a multi-node lab with an address (`[[nodes]]`), for Peer Notify.
fn lab_peers(spec: &std::path::Path, me: &str) -> Vec<(String, String)> {
    let Ok(spec) = LabSpec::load(spec) else {
        return Vec::new();
    };
    spec.nodes
        .iter()
        .filter(|n| n.name != me)
        .filter_map(|n| Some((spec.hubble_node_name(&n.name), n.address.clone()?)))
        .collect()
}

pub fn run(args: RunArgs) -> Result<()> {
    // Bound before entering the node netns: TCP listens where the agent was started.
    let metrics = crate::metrics::setup(&args.metrics)?;
    let exporter = crate::exporter::AgentExporter::start(&args.export)?;
    let server = crate::observer::run::HubbleServer::bind(&args.server)?;
    let att = attach_lab(&args.dp)?;
    let node_name = att.state.node_name();
    let server = server
        .map(|mut s| {
            s.set_other_peers(lab_peers(&args.dp.lab, &att.state.node));
            if let Some(e) = &exporter {
                s.set_agent_event_sink(e.agent_event_sink());
            }
            s.start(&node_name)
        })
        .transpose()?;
    // Agent events go to the server's store, which hands them to the exporter; without a
    // server, to a store of our own that only feeds the exporter (AGENT_STARTED first).
    let own_events = match (&server, &exporter) {
        (None, Some(e)) => {
            let events = crate::observer::events::AgentEvents::new(node_name.clone());
            let _ = events.set_sink(e.agent_event_sink());
            let now = std::time::SystemTime::now();
            events.push_at(crate::observer::events::agent_started(now), now);
            Some(events)
        }
        _ => None,
    };
    let agent_events = server
        .as_ref()
        .map(|s| s.observer().agent_events())
        .or(own_events.as_ref());
    if let Some(events) = agent_events {
        for e in &att.events_up {
            events.push(e.clone());
        }
    }
    let (metrics, _metrics_server) = match metrics {
        Some((m, srv)) => {
            match att.datapath.stats() {
                Ok(dp) => m.set_datapath(dp),
                Err(e) => eprintln!("hubble-agent: warning: no datapath counters in metrics: {e}"),
            }
            if let Some(s) = &server {
                m.set_observer(s.observer().clone());
            }
            if let Some(e) = &exporter {
                m.set_export_dropped(e.dropped_counter());
            }
            let running = srv.start(m.clone())?;
            (Some(m), Some(running))
        }
        None => (None, None),
    };
    let mut printer = FlowPrinter::new(Enricher::new(att.state.clone(), node_name));
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let print = args.print_flows;
    let res = pump(att, args.duration, |_, rec, more| {
        if print {
            printer.handle(rec, Some(&mut out))?;
            if !more {
                out.flush()?;
            }
        } else {
            printer.handle(rec, None)?;
        }
        if let Some(m) = &metrics {
            m.record_all(printer.responses(), &printer.counters);
        }
        if let Some(e) = &exporter {
            for r in printer.responses() {
                e.offer(r);
            }
        }
        if let Some(s) = &server {
            for r in printer.responses() {
                s.observer().push(r);
            }
        }
        Ok(())
    });
    let (att, res) = res;
    let _ = out.flush();
    if let Some(events) = agent_events {
        for e in &att.events_down {
            events.push(e.clone());
        }
    }
    if let Some(e) = exporter {
        e.stop();
    }
    if let Some(s) = server
        && let Err(e) = s.stop()
    {
        eprintln!("hubble-agent: {e:#}");
    }
    finish(att, printer.counters);
    match res {
        Err(e) if !is_broken_pipe(&e) => Err(e),
        _ => Ok(()),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// `hubble-agent record`.
pub fn record(args: RecordArgs) -> Result<()> {
    let file = File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let att = attach_lab(&args.dp)?;
    let mut w = Writer::new(BufWriter::new(file), &att.state)?;
    let mut n = 0u64;
    let started = Instant::now();
    let res = pump(att, args.duration, |_, rec, _| {
        w.write(rec)?;
        n += 1;
        Ok(())
    });
    let (att, res) = res;
    let flushed = w.finish();
    if let Err(e) = res.and(flushed.map(|_| ()).map_err(anyhow::Error::from)) {
        finish(att, Counters::default());
        return Err(e);
    }
    eprintln!(
        "hubble-agent: recorded {n} records in {:.1}s to {}",
        started.elapsed().as_secs_f64(),
        args.output.display()
    );
    finish(att, Counters::default());
    Ok(())
}

/// `hubble-agent replay`: prints the flows of a recording (no privileges needed).
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
    let mut printer = FlowPrinter::new(Enricher::new(reader.state.clone(), node_name));
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => printer.handle(&rec, Some(&mut *out))?,
            Ok(None) => break,
            Err(e) => {
                eprintln!("hubble-agent: recording ends early: {e}");
                break;
            }
        }
    }
    Ok(printer.counters)
}
