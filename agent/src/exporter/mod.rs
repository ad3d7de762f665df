//! The agent's static exporter (Hubble's `--hubble-export-*`): flows, lost events and agent
//! events that pass the allow / deny lists go through a bounded queue to a writer thread that
//! applies the field mask (flows only) and writes ExportEvent lines to a rotating file, with
//! the flow-exporter crate's code.
//!
//! Like Cilium's exporter, the lists see every event but their criteria look at flows: a
//! FlowFilter matches a non-flow event only when it sets nothing but `event_type` (or nothing
//! at all), and then an agent event matches an event type 0 or 130 (agent) whose sub-type, if
//! matched, is the AgentEventType; a lost event matches any event type. So an allowlist of
//! flow criteria keeps agent and lost events out, and a denylist of flow criteria lets them
//! through.
//!
//! The datapath loop only filters and enqueues; when the queue is full the event is dropped
//! and counted, so a slow disk never slows the agent.
//!
//! Every log is an [`AgentExporter`] built from a [`LogSpec`]: the static one from the flags,
//! the dynamic ones (`dynamic`) from Cilium's flow logs file; `aggregate` counts flows per
//! window when a log aggregates. [`Exporters`] is all of them as one sink.

pub mod aggregate;
pub mod dynamic;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use flow_exporter::config::{parse_field_mask, parse_filters};
use flow_exporter::export::{Exporter, Stats};
use flow_exporter::writer::{RotateOptions, RotatingFile, Sink};
use hubble::filter::{FlowFilters, flag_filter_warning};
use hubble_api::flow::{EventTypeFilter, FlowFilter};
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{ExportEvent, GetAgentEventsResponse, GetFlowsResponse, export_event};

use crate::observer::events::EventSink;
use aggregate::{Aggregation, Aggregator};

/// Cilium's monitor message type of agent notifications (`MessageTypeAgent`).
const MESSAGE_TYPE_AGENT: i32 = 130;

/// Flags of the static exporter, Hubble's names without the `hubble-` prefix (which the
/// aliases accept).
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write flows, lost events and agent events as ExportEvent JSON lines (Hubble's exporter
    /// format, readable with `hubble observe --input-file`) to this file, or `stdout`; unset:
    /// no export. The file is created with mode 0600; a symbolic link there is an error.
    #[arg(long, alias = "hubble-export-file-path", value_name = "PATH")]
    pub export_file_path: Option<String>,
    /// Rotate the export file when it would grow beyond this many megabytes (MiB).
    #[arg(long, alias = "hubble-export-file-max-size-mb", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "MB")]
    pub export_file_max_size_mb: u64,
    /// Rotated export files to keep (0 keeps all).
    #[arg(
        long,
        alias = "hubble-export-file-max-backups",
        default_value_t = 5,
        value_name = "N"
    )]
    pub export_file_max_backups: usize,
    /// Gzip rotated export files.
    #[arg(long, alias = "hubble-export-file-compress")]
    pub export_file_compress: bool,
    /// Export only events matching one of these FlowFilters (JSON objects separated by
    /// commas, e.g. '{"verdict":["DROPPED"]},{"source_pod":["kube-system/"]}'); as in Cilium,
    /// flow criteria match no agent or lost event: add '{"event_type":[{"type":130}]}' to keep
    /// agent events.
    #[arg(
        long,
        alias = "hubble-export-allowlist",
        default_value = "",
        value_name = "FILTERS"
    )]
    pub export_allowlist: String,
    /// Do not export events matching any of these FlowFilters (same form).
    #[arg(
        long,
        alias = "hubble-export-denylist",
        default_value = "",
        value_name = "FILTERS"
    )]
    pub export_denylist: String,
    /// Keep only these flow fields in exported lines (proto names, comma or space separated,
    /// e.g. time,source.pod_name,verdict).
    #[arg(
        long,
        alias = "hubble-export-fieldmask",
        default_value = "",
        value_name = "PATHS"
    )]
    pub export_fieldmask: String,
    /// Aggregate exported flows on these fields (proto paths, e.g. source,destination,verdict):
    /// per --export-aggregation-interval, one line for the flows that agree on them, the first
    /// such flow with `aggregate` counting them by traffic direction.
    #[arg(
        long,
        alias = "hubble-export-fieldaggregate",
        default_value = "",
        value_name = "PATHS"
    )]
    pub export_fieldaggregate: String,
    /// The aggregation window of --export-fieldaggregate (e.g. 30s).
    #[arg(
        long,
        alias = "hubble-export-aggregation-interval",
        value_name = "DURATION"
    )]
    pub export_aggregation_interval: Option<String>,
    /// Dynamic flow logs: Cilium's flowlogs YAML (`flowLogs:` entries with name, filePath,
    /// fieldMask, includeFilters, excludeFilters, fileMaxSizeMb, fileMaxBackups, fileCompress,
    /// end, aggregationOptions). Re-read every second: changes apply without a restart, and a
    /// broken file is reported while the logs in force keep running.
    #[arg(long, alias = "hubble-flowlogs-config-path", value_name = "FILE")]
    pub flowlogs_config_path: Option<PathBuf>,
    /// Events queued for the export writer; beyond it events are dropped and counted.
    #[arg(long, default_value_t = DEFAULT_QUEUE, value_name = "N", hide = true)]
    pub export_queue: usize,
}

/// Events queued per log by default.
pub const DEFAULT_QUEUE: usize = 16_384;

/// One log: where it writes, what passes, what it keeps, how it aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSpec {
    /// A file, or `stdout`.
    pub path: String,
    pub rotate: RotateOptions,
    pub allow: Vec<FlowFilter>,
    pub deny: Vec<FlowFilter>,
    /// Flow field paths kept (empty: the whole flow).
    pub mask: Vec<String>,
    pub aggregation: Option<Aggregation>,
    pub queue: usize,
}

impl ExportArgs {
    /// The static log of the flags (None without --export-file-path); an invalid filter,
    /// mask or aggregation is one line naming its flag.
    pub fn spec(&self) -> Result<Option<LogSpec>> {
        let Some(path) = self.export_file_path.as_deref().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let allow = parse_filters("export-allowlist", &self.export_allowlist)?;
        let deny = parse_filters("export-denylist", &self.export_denylist)?;
        let warnings = [
            flag_filter_warning("export-allowlist", &self.export_allowlist),
            flag_filter_warning("export-denylist", &self.export_denylist),
        ];
        for w in warnings.iter().flatten() {
            eprintln!("hubble-agent: warning: {w}");
        }
        let renamed = |flag: &str, e: flow_exporter::config::ConfigError| {
            anyhow::anyhow!("{}", e.to_string().replace("--field-mask", flag))
        };
        let mask = parse_field_mask(&self.export_fieldmask)
            .map_err(|e| renamed("--export-fieldmask", e))?;
        let fields = parse_field_mask(&self.export_fieldaggregate)
            .map_err(|e| renamed("--export-fieldaggregate", e))?;
        let aggregation =
            dynamic::aggregation(&fields, self.export_aggregation_interval.as_deref())
                .map_err(|e| anyhow::anyhow!("--export-fieldaggregate: {e}"))?;
        Ok(Some(LogSpec {
            path: path.to_string(),
            rotate: RotateOptions {
                max_size: self.export_file_max_size_mb.saturating_mul(1024 * 1024),
                max_backups: self.export_file_max_backups,
                compress: self.export_file_compress,
            },
            allow,
            deny,
            mask,
            aggregation,
            queue: self.export_queue,
        }))
    }
}

/// Opens where `spec` writes: stdout, or its file (directories created; a symbolic link at
/// its path is an error naming `label`).
fn open_sink(spec: &LogSpec, label: &str) -> Result<Sink> {
    if spec.path == "stdout" {
        return Ok(Sink::Stdout(std::io::stdout()));
    }
    let path = PathBuf::from(&spec.path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{label}: creating {}", dir.display()))?;
    }
    let mut file = RotatingFile::new(path.clone(), spec.rotate);
    file.open_now()
        .with_context(|| format!("{label} {}", path.display()))?;
    Ok(Sink::File(file))
}

/// Every log of the agent, the static one and the dynamic ones, as one sink.
pub struct Exporters {
    fixed: Option<AgentExporter>,
    dynamic: Option<dynamic::DynamicExporter>,
    dropped: Arc<AtomicU64>,
}

impl Exporters {
    /// Starts the static log (--export-file-path) and the dynamic ones
    /// (--flowlogs-config-path); None with neither.
    pub fn start(args: &ExportArgs) -> Result<Option<Self>> {
        let dropped = Arc::new(AtomicU64::new(0));
        let fixed = match args.spec()? {
            Some(spec) => {
                let e = AgentExporter::start(&spec, "--export-file-path", dropped.clone())?;
                eprintln!(
                    "hubble-agent: exporting flows and agent events to {}",
                    e.describe()
                );
                Some(e)
            }
            None => None,
        };
        let dynamic = args
            .flowlogs_config_path
            .as_deref()
            .map(|p| dynamic::DynamicExporter::start(p, dropped.clone()))
            .transpose()?;
        if fixed.is_none() && dynamic.is_none() {
            return Ok(None);
        }
        Ok(Some(Exporters {
            fixed,
            dynamic,
            dropped,
        }))
    }

    /// Queues `resp` on every log it passes; never blocks.
    pub fn offer(&self, resp: &GetFlowsResponse) {
        if let Some(e) = &self.fixed {
            e.offer(resp);
        }
        if let Some(d) = &self.dynamic {
            d.offer(resp);
        }
    }

    /// A sink for [`crate::observer::events::AgentEvents::set_sink`]: every log gets the event.
    pub fn agent_event_sink(&self) -> EventSink {
        let fixed = self.fixed.as_ref().map(|e| e.agent_event_sink());
        let dynamic = self.dynamic.as_ref().map(|d| d.agent_event_sink());
        Box::new(move |ev| {
            if let Some(f) = &fixed {
                f(ev);
            }
            if let Some(d) = &dynamic {
                d(ev);
            }
        })
    }

    /// Events any log dropped because its writer fell behind (for metrics).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// The dynamic exporter's metrics, with one.
    pub fn collector(&self) -> Option<Arc<dyn prometheus_client::collector::Collector>> {
        self.dynamic.as_ref().map(|d| d.collector())
    }

    /// Writes what is queued and closes every log, printing each one's counters.
    pub fn stop(self) {
        if let Some(e) = self.fixed {
            e.stop();
        }
        if let Some(d) = self.dynamic {
            d.stop();
        }
    }
}

/// The logs as a sink of the flow pipeline.
impl crate::flows::FlowSink for &Exporters {
    fn take(
        &mut self,
        responses: &[GetFlowsResponse],
        _: &crate::flows::Counters,
        _: bool,
    ) -> std::io::Result<()> {
        for r in responses {
            self.offer(r);
        }
        Ok(())
    }
}

/// What goes through the queue: a GetFlows response (flows are masked by the writer) or a
/// finished ExportEvent (agent events).
enum Item {
    Response(GetFlowsResponse),
    Event(ExportEvent),
}

/// A non-flow event, as the allow / deny lists see it.
#[derive(Debug, Clone, Copy)]
enum NonFlow {
    /// An agent event of this AgentEventType.
    Agent(i32),
    Lost,
}

/// The allow / deny lists as they apply to non-flow events: per FlowFilter, its event types
/// when it sets nothing else, `None` when it has a flow criterion (and so never matches).
#[derive(Debug, Default)]
struct NonFlowLists {
    allow: Vec<Option<Vec<EventTypeFilter>>>,
    deny: Vec<Option<Vec<EventTypeFilter>>>,
}

impl NonFlowLists {
    fn new(allow: &[FlowFilter], deny: &[FlowFilter]) -> Self {
        let event_types_only = |ff: &FlowFilter| {
            let mut rest = ff.clone();
            let types = std::mem::take(&mut rest.event_type);
            if rest
                .experimental
                .as_ref()
                .is_some_and(|x| x.cel_expression.is_empty())
            {
                rest.experimental = None;
            }
            (rest == FlowFilter::default()).then_some(types)
        };
        NonFlowLists {
            allow: allow.iter().map(event_types_only).collect(),
            deny: deny.iter().map(event_types_only).collect(),
        }
    }

    fn matches(filter: &Option<Vec<EventTypeFilter>>, ev: NonFlow) -> bool {
        let Some(types) = filter else { return false };
        if types.is_empty() {
            return true;
        }
        match ev {
            NonFlow::Lost => true,
            NonFlow::Agent(sub) => types.iter().any(|t| {
                (t.r#type == 0 || t.r#type == MESSAGE_TYPE_AGENT)
                    && (!t.match_sub_type || t.sub_type == sub)
            }),
        }
    }

    /// Cilium's `filters.Apply`: some allow filter (or none) and no deny filter match.
    fn passes(&self, ev: NonFlow) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|f| Self::matches(f, ev)))
            && !self.deny.iter().any(|f| Self::matches(f, ev))
    }
}

/// What the agent-event sink shares with the exporter.
struct Shared {
    lists: NonFlowLists,
    /// The queue for agent events; taken at `stop` so the writer can finish.
    events_tx: Mutex<Option<SyncSender<Item>>>,
    dropped: Arc<AtomicU64>,
}

impl Shared {
    fn offer_agent_event(&self, ev: &GetAgentEventsResponse) {
        let Some(agent_event) = &ev.agent_event else {
            return;
        };
        if !self.lists.passes(NonFlow::Agent(agent_event.r#type)) {
            return;
        }
        let item = Item::Event(ExportEvent {
            response_types: Some(export_event::ResponseTypes::AgentEvent(agent_event.clone())),
            node_name: ev.node_name.clone(),
            time: ev.time,
        });
        let tx = self.events_tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref()
            && tx.try_send(item).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The running exporter: `offer` from the datapath loop, agent events through
/// `agent_event_sink` (or `offer_agent_event`), `stop` at the end.
pub struct AgentExporter {
    filters: FlowFilters,
    tx: Option<SyncSender<Item>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Stats>>,
    what: String,
}

impl AgentExporter {
    /// Starts the writer thread of one log (`label` names it in messages: the flag or the
    /// flow log); events dropped because its queue is full count in `dropped`.
    pub fn start(spec: &LogSpec, label: &str, dropped: Arc<AtomicU64>) -> Result<Self> {
        let filters = FlowFilters::compile(&spec.allow, &spec.deny)
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        let lists = NonFlowLists::new(&spec.allow, &spec.deny);
        let sink = open_sink(spec, label)?;
        let what = sink.describe();
        // The writer only masks and encodes: the lists were applied before the queue.
        let exporter = Exporter::new(FlowFilters::default(), spec.mask.clone());
        let aggregator = spec
            .aggregation
            .as_ref()
            .map(|a| (Aggregator::new(&a.fields, &spec.mask), a.window));
        let (tx, rx) = std::sync::mpsc::sync_channel(spec.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || writer(rx, exporter, aggregator, sink))
            .context("starting the export thread")?;
        Ok(Self {
            filters,
            shared: Arc::new(Shared {
                lists,
                events_tx: Mutex::new(Some(tx.clone())),
                dropped,
            }),
            tx: Some(tx),
            thread: Some(thread),
            what,
        })
    }

    /// Where the lines go, e.g. `file /var/run/cilium/hubble/events.log`.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Queues one response if it passes the lists; never blocks.
    pub fn offer(&self, resp: &GetFlowsResponse) {
        let pass = match &resp.response_types {
            Some(ResponseTypes::Flow(flow)) => self.filters.matches(flow),
            Some(ResponseTypes::LostEvents(_)) => self.shared.lists.passes(NonFlow::Lost),
            _ => true,
        };
        if !pass {
            return;
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Item::Response(resp.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues one agent event if it passes the lists; never blocks (a full queue drops it
    /// and counts it with the flows). Events offered after `stop` are ignored.
    pub fn offer_agent_event(&self, ev: &GetAgentEventsResponse) {
        self.shared.offer_agent_event(ev);
    }

    /// A sink for [`crate::observer::events::AgentEvents::set_sink`] doing `offer_agent_event`.
    pub fn agent_event_sink(&self) -> EventSink {
        let shared = self.shared.clone();
        Box::new(move |ev| shared.offer_agent_event(ev))
    }

    /// The counter of events dropped because the writer fell behind (for metrics).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.shared.dropped.clone()
    }

    /// Events dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Closes both ends of the queue held here, so the writer ends once it is drained.
    fn close(&mut self) {
        self.tx.take();
        self.shared
            .events_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Writes what is queued, stops the writer and prints its counters.
    pub fn stop(mut self) -> Stats {
        self.close();
        let stats = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        eprintln!(
            "hubble-agent: export to {}: written={} dropped_queue_full={} dropped_pending={} write_errors={}",
            self.what,
            stats.written,
            self.dropped(),
            stats.dropped,
            stats.write_errors
        );
        stats
    }
}

impl Drop for AgentExporter {
    fn drop(&mut self) {
        self.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: batches what the queue holds, writes it, retries failed writes (the
/// exporter keeps failed lines pending, bounded) and logs errors at most every 10 s. With an
/// aggregator, flows are counted and each window's aggregates are written when it closes.
fn writer(
    rx: Receiver<Item>,
    mut exp: Exporter,
    mut agg: Option<(Aggregator, Duration)>,
    mut sink: Sink,
) -> Stats {
    let mut window_end = agg.as_ref().map(|(_, w)| Instant::now() + *w);
    let push = |exp: &mut Exporter, agg: &mut Option<(Aggregator, Duration)>, item: Item| match item
    {
        Item::Response(r) => {
            if !agg.as_mut().is_some_and(|(a, _)| a.add(&r)) {
                exp.push(r)
            }
        }
        Item::Event(e) => exp.push_event(&e),
    };
    let mut last_error: Option<Instant> = None;
    let mut flush = |exp: &mut Exporter, sink: &mut Sink| {
        if let Err(e) = exp.flush(sink)
            && last_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            eprintln!(
                "hubble-agent: export: writing {}: {e}; retrying",
                sink.describe()
            );
            last_error = Some(Instant::now());
        }
    };
    loop {
        let wait = window_end.map_or(Duration::from_millis(200), |end| {
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200))
        });
        let closed = match rx.recv_timeout(wait) {
            Ok(item) => {
                push(&mut exp, &mut agg, item);
                while exp.pending_bytes() < (1 << 20) {
                    match rx.try_recv() {
                        Ok(item) => push(&mut exp, &mut agg, item),
                        Err(_) => break,
                    }
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if let (Some(end), Some((a, w))) = (window_end.as_mut(), agg.as_mut())
            && (closed || Instant::now() >= *end)
        {
            for ev in a.drain() {
                exp.push_event(&ev);
            }
            *end = Instant::now() + *w;
        }
        if exp.has_pending() {
            flush(&mut exp, &mut sink);
        }
        if closed {
            if let Err(e) = sink.sync() {
                eprintln!("hubble-agent: export: syncing {}: {e}", sink.describe());
            }
            return exp.stats();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use hubble_api::flow::{AgentEventType, LostEvent};
    use hubble_api::json::ProtoJson;
    use hubble_api::pbjson_types::Timestamp;
    use std::time::SystemTime;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        e: ExportArgs,
    }

    fn start_static(a: &ExportArgs) -> Result<Option<AgentExporter>> {
        a.spec()?
            .map(|s| AgentExporter::start(&s, "--export-file-path", Arc::new(AtomicU64::new(0))))
            .transpose()
    }

    fn args(extra: &[&str]) -> ExportArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().e
    }

    fn demo() -> Vec<GetFlowsResponse> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/flows/demo.jsonl"
        ))
        .unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole line"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn exports_filtered_masked_rotated_lines_with_hubble_flag_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/events.log");
        let a = args(&[
            "--hubble-export-file-path",
            path.to_str().unwrap(),
            "--hubble-export-allowlist",
            r#"{"verdict":["FORWARDED","DROPPED"]}"#,
            "--hubble-export-denylist",
            r#"{"source_pod":["kube-system/"]}"#,
            "--hubble-export-fieldmask",
            "time,verdict,source.pod_name,source.namespace",
            "--hubble-export-file-max-backups",
            "0",
        ]);
        let flows = demo();
        let want: Vec<&GetFlowsResponse> = flows
            .iter()
            .filter(|r| match &r.response_types {
                Some(ResponseTypes::Flow(f)) => {
                    (f.verdict == 1 || f.verdict == 2)
                        && f.source
                            .as_ref()
                            .is_none_or(|s| s.namespace != "kube-system")
                }
                // Cilium: a lost event matches no verdict filter, so the allowlist drops it.
                Some(ResponseTypes::LostEvents(_)) => false,
                _ => true,
            })
            .collect();
        assert!(
            flows
                .iter()
                .any(|r| matches!(r.response_types, Some(ResponseTypes::LostEvents(_)))),
            "the fixture has a lost event"
        );
        let e = start_static(&a).unwrap().unwrap();
        for r in &flows {
            e.offer(r);
        }
        let stats = e.stop();
        assert_eq!(stats.written, want.len() as u64);
        let got = lines(dir.path().join("out").as_path());
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let Some(ResponseTypes::Flow(f)) = &w.response_types else {
                continue;
            };
            let flow = g["flow"].as_object().unwrap();
            let keys: Vec<&str> = flow.keys().map(|k| k.as_str()).collect();
            assert!(
                keys.iter()
                    .all(|k| ["time", "verdict", "source"].contains(k)),
                "{keys:?}"
            );
            assert_eq!(
                g["flow"]["source"]["pod_name"].as_str().unwrap_or(""),
                f.source.as_ref().map_or("", |s| s.pod_name.as_str())
            );
            assert!(g["node_name"].is_string() && g["time"].is_string());
        }
    }

    #[test]
    fn static_aggregation_counts_every_flow_once_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agg.log");
        let a = args(&[
            "--hubble-export-file-path",
            path.to_str().unwrap(),
            "--hubble-export-fieldaggregate",
            "source.pod_name,verdict",
            "--hubble-export-aggregation-interval",
            "1h",
            "--export-fieldmask",
            "source.pod_name,verdict",
        ]);
        let flows: Vec<_> = demo()
            .into_iter()
            .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
            .collect();
        let keys: std::collections::HashSet<(String, i32)> = flows
            .iter()
            .map(|r| match &r.response_types {
                Some(ResponseTypes::Flow(f)) => (
                    f.source.as_ref().map_or("", |s| &s.pod_name).to_string(),
                    f.verdict,
                ),
                _ => unreachable!(),
            })
            .collect();
        let e = start_static(&a).unwrap().unwrap();
        for r in &flows {
            e.offer(r);
        }
        // The window (1 h) closes at stop.
        e.stop();
        let got = lines(dir.path());
        assert_eq!(got.len(), keys.len());
        let counted: u64 = got
            .iter()
            .map(|l| {
                let a = &l["flow"]["aggregate"];
                [
                    "ingress_flow_count",
                    "egress_flow_count",
                    "unknown_direction_flow_count",
                ]
                .iter()
                .map(|k| a[k].as_u64().unwrap_or(0))
                .sum::<u64>()
            })
            .sum();
        assert_eq!(counted, flows.len() as u64);
        let e = start_static(&args(&[
            "--export-file-path",
            "/tmp/never-written.log",
            "--export-fieldaggregate",
            "source",
        ]))
        .err()
        .expect("refused");
        assert_eq!(
            format!("{e:#}"),
            "--export-fieldaggregate: aggregation fields need a window interval above 0"
        );
    }

    #[test]
    fn rotation_keeps_every_flow_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let a = args(&[
            "--export-file-path",
            path.to_str().unwrap(),
            "--export-file-max-size-mb",
            "1",
            "--export-file-max-backups",
            "0",
        ]);
        let flows = demo();
        let e = start_static(&a).unwrap().unwrap();
        // ~1.2 KB a line: 2000 lines rotate at least once at 1 MiB.
        let mut n = 0;
        for _ in 0..30 {
            for r in &flows {
                e.offer(r);
                n += 1;
            }
        }
        let stats = e.stop();
        assert_eq!(stats.written, n);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(files >= 2, "rotated: {files} files");
        let got = lines(dir.path());
        assert_eq!(got.len() as u64, n);
        let uuids: std::collections::HashSet<_> =
            got.iter().map(|v| v["flow"]["uuid"].to_string()).collect();
        assert_eq!(
            uuids.len(),
            flows.len(),
            "each fixture flow 30 times, none lost"
        );
    }

    #[test]
    fn invalid_lists_and_masks_refuse_with_one_line_naming_the_flag() {
        let err = |extra: &[&str]| {
            let mut v = vec!["--export-file-path", "/tmp/never-written.log"];
            v.extend_from_slice(extra);
            let e = start_static(&args(&v)).err().expect("refused");
            format!("{e:#}")
        };
        let e = err(&["--export-allowlist", r#"{"verdict":["NOPE"]}"#]);
        assert!(e.starts_with("invalid --export-allowlist"), "{e}");
        let e = err(&["--export-denylist", "{not json"]);
        assert!(e.starts_with("invalid --export-denylist"), "{e}");
        let e = err(&["--export-fieldmask", "time,sauce.pod_name"]);
        assert!(
            e.starts_with("invalid --export-fieldmask path \"sauce.pod_name\""),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(start_static(&args(&[])).unwrap().is_none());
    }

    /// The export file holds every flow: created 0600, and a symbolic link planted at its
    /// path is refused at start (one line naming the flag) instead of followed.
    #[test]
    fn export_file_is_private_and_a_symlink_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let e = start_static(&args(&["--export-file-path", path.to_str().unwrap()]))
            .unwrap()
            .unwrap();
        e.offer(&demo()[0]);
        e.stop();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");

        let target = dir.path().join("shadow");
        std::fs::write(&target, "keep\n").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = start_static(&args(&["--export-file-path", link.to_str().unwrap()]))
            .err()
            .expect("refused");
        let e = format!("{e:#}");
        assert!(e.starts_with("--export-file-path"), "{e}");
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    }

    fn agent_event(t: AgentEventType, seconds: i64) -> GetAgentEventsResponse {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64);
        let mut ev = crate::observer::events::agent_started(time);
        ev.r#type = t as i32;
        GetAgentEventsResponse {
            agent_event: Some(ev),
            node_name: "kind-worker".into(),
            time: Some(Timestamp { seconds, nanos: 5 }),
        }
    }

    /// The export file's lines, raw.
    fn raw_lines(allow: &str, deny: &str, feed: impl FnOnce(&AgentExporter)) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let a = args(&[
            "--export-file-path",
            path.to_str().unwrap(),
            "--export-allowlist",
            allow,
            "--export-denylist",
            deny,
            "--export-fieldmask",
            "time,verdict",
        ]);
        let e = start_static(&a).unwrap().unwrap();
        feed(&e);
        e.stop();
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn agent_events_are_written_as_export_events_byte_for_byte() {
        let ev = agent_event(AgentEventType::AgentStarted, 1_700_000_000);
        let got = raw_lines("", "", |e| {
            let sink = e.agent_event_sink();
            sink(&ev);
            e.offer_agent_event(&agent_event(AgentEventType::EndpointCreated, 1_700_000_001));
        });
        let mut want = Vec::new();
        ExportEvent {
            response_types: Some(export_event::ResponseTypes::AgentEvent(
                ev.agent_event.clone().unwrap(),
            )),
            node_name: "kind-worker".into(),
            time: ev.time,
        }
        .write_json(&mut want)
        .unwrap();
        let want = String::from_utf8(want).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        // The field mask is for flows: the agent event is whole.
        assert_eq!(got[0], want);
        assert!(
            got[0].starts_with(r#"{"agent_event":{"type":"AGENT_STARTED","agent_start":{"time":"2023-11-14T22:13:20Z"}},"node_name":"kind-worker","time":"2023-11-14T22:13:20.000000005Z"}"#),
            "{}",
            got[0]
        );
        assert!(
            got[1].contains(r#""type":"ENDPOINT_CREATED""#),
            "{}",
            got[1]
        );
    }

    #[test]
    fn lists_treat_agent_and_lost_events_as_cilium_does() {
        let lost = GetFlowsResponse {
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: 1,
                num_events_lost: 3,
                ..Default::default()
            })),
            node_name: "kind-worker".into(),
            time: Some(Timestamp {
                seconds: 1_700_000_002,
                nanos: 0,
            }),
        };
        let kinds = |allow: &str, deny: &str| {
            raw_lines(allow, deny, |e| {
                e.offer_agent_event(&agent_event(AgentEventType::AgentStarted, 1_700_000_000));
                e.offer_agent_event(&agent_event(AgentEventType::EndpointCreated, 1_700_000_001));
                e.offer(&lost);
            })
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.get("agent_event")
                    .map_or("LOST".into(), |a| a["type"].as_str().unwrap().to_string())
            })
            .collect::<Vec<String>>()
        };
        let all = ["AGENT_STARTED", "ENDPOINT_CREATED", "LOST"];
        // No lists, an empty FlowFilter, a denylist of flow criteria: everything.
        assert_eq!(kinds("", ""), all);
        assert_eq!(kinds("{}", ""), all);
        assert_eq!(
            kinds("", r#"{"verdict":["DROPPED"]},{"reply":[false]}"#),
            all
        );
        // An allowlist of flow criteria: no agent or lost event.
        assert!(kinds(r#"{"verdict":["FORWARDED","DROPPED"]}"#, "").is_empty());
        assert!(kinds(r#"{"reply":[false]}"#, "").is_empty());
        // Event types: agent (130) and its sub-type, the AgentEventType; lost events match
        // any event type filter.
        assert_eq!(
            kinds(r#"{"event_type":[{"type":130}]}"#, ""),
            ["AGENT_STARTED", "ENDPOINT_CREATED", "LOST"]
        );
        assert_eq!(
            kinds(
                &format!(
                    r#"{{"event_type":[{{"type":130,"match_sub_type":true,"sub_type":{}}}]}}"#,
                    AgentEventType::AgentStarted as i32
                ),
                ""
            ),
            ["AGENT_STARTED", "LOST"]
        );
        assert_eq!(kinds(r#"{"event_type":[{"type":1}]}"#, ""), ["LOST"]);
        assert_eq!(
            kinds("", r#"{"event_type":[{"type":130}]}"#),
            Vec::<String>::new()
        );
        // A flow criterion next to the event type: the filter matches no non-flow event.
        assert!(kinds(r#"{"event_type":[{"type":130}],"verdict":["DROPPED"]}"#, "").is_empty());
        assert_eq!(
            kinds("", r#"{"event_type":[{"type":130}],"verdict":["DROPPED"]}"#),
            all
        );
    }

    #[test]
    fn a_sink_outliving_the_exporter_neither_blocks_stop_nor_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let e = start_static(&args(&["--export-file-path", path.to_str().unwrap()]))
            .unwrap()
            .unwrap();
        let store = crate::observer::events::AgentEvents::new("kind-worker");
        assert!(store.set_sink(e.agent_event_sink()).is_ok());
        assert!(store.set_sink(e.agent_event_sink()).is_err(), "one sink");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        store.push_at(crate::observer::events::agent_started(t), t);
        let stats = e.stop();
        assert_eq!(stats.written, 1);
        store.push_at(crate::observer::events::agent_started(t), t);
        assert_eq!(store.len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with(r#"{"agent_event":{"type":"AGENT_STARTED""#));
    }
}
