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
use hubble::filter::FlowFilters;
use hubble_api::flow::{EventTypeFilter, FlowFilter};
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{ExportEvent, GetAgentEventsResponse, GetFlowsResponse, export_event};

use crate::observer::events::EventSink;

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
    /// Events queued for the export writer; beyond it events are dropped and counted.
    #[arg(long, default_value_t = 16_384, value_name = "N", hide = true)]
    pub export_queue: usize,
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
    /// Validates the flags (an invalid filter or field mask is one line naming the flag) and
    /// starts the writer thread; `None` without `--export-file-path`.
    pub fn start(args: &ExportArgs) -> Result<Option<Self>> {
        let Some(path) = args.export_file_path.as_deref().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let allow = parse_filters("export-allowlist", &args.export_allowlist)?;
        let deny = parse_filters("export-denylist", &args.export_denylist)?;
        let mask = parse_field_mask(&args.export_fieldmask).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string().replace("--field-mask", "--export-fieldmask")
            )
        })?;
        let filters = FlowFilters::compile(&allow, &deny).map_err(|e| anyhow::anyhow!("{e}"))?;
        let lists = NonFlowLists::new(&allow, &deny);
        let sink = if path == "stdout" {
            Sink::Stdout(std::io::stdout())
        } else {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("--export-file-path: creating {}", dir.display()))?;
            }
            let mut file = RotatingFile::new(
                path.clone(),
                RotateOptions {
                    max_size: args.export_file_max_size_mb.saturating_mul(1024 * 1024),
                    max_backups: args.export_file_max_backups,
                    compress: args.export_file_compress,
                },
            );
            file.open_now()
                .with_context(|| format!("--export-file-path {}", path.display()))?;
            Sink::File(file)
        };
        let what = sink.describe();
        // The writer only masks and encodes: the lists were applied before the queue.
        let exporter = Exporter::new(FlowFilters::default(), mask);
        let (tx, rx) = std::sync::mpsc::sync_channel(args.export_queue.max(1));
        let thread = std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || writer(rx, exporter, sink))
            .context("starting the export thread")?;
        eprintln!("hubble-agent: exporting flows and agent events to {what}");
        Ok(Some(Self {
            filters,
            shared: Arc::new(Shared {
                lists,
                events_tx: Mutex::new(Some(tx.clone())),
                dropped: Arc::new(AtomicU64::new(0)),
            }),
            tx: Some(tx),
            thread: Some(thread),
            what,
        }))
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
/// exporter keeps failed lines pending, bounded) and logs errors at most every 10 s.
fn writer(rx: Receiver<Item>, mut exp: Exporter, mut sink: Sink) -> Stats {
    let push = |exp: &mut Exporter, item: Item| match item {
        Item::Response(r) => exp.push(r),
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
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(item) => {
                push(&mut exp, item);
                while exp.pending_bytes() < (1 << 20) {
                    match rx.try_recv() {
                        Ok(item) => push(&mut exp, item),
                        Err(_) => break,
                    }
                }
                flush(&mut exp, &mut sink);
            }
            Err(RecvTimeoutError::Timeout) => {
                if exp.has_pending() {
                    flush(&mut exp, &mut sink);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut exp, &mut sink);
                if let Err(e) = sink.sync() {
                    eprintln!("hubble-agent: export: syncing {}: {e}", sink.describe());
                }
                return exp.stats();
            }
        }
    }
}

/// The exporter as a sink of the flow pipeline: flows and lost events are offered to its
/// queue (allow/deny applied first; a full queue drops and counts).
impl crate::flows::FlowSink for &AgentExporter {
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
        let e = AgentExporter::start(&a).unwrap().unwrap();
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
        let e = AgentExporter::start(&a).unwrap().unwrap();
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
            let e = AgentExporter::start(&args(&v)).err().expect("refused");
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
        assert!(AgentExporter::start(&args(&[])).unwrap().is_none());
    }

    /// The export file holds every flow: created 0600, and a symbolic link planted at its
    /// path is refused at start (one line naming the flag) instead of followed.
    #[test]
    fn export_file_is_private_and_a_symlink_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let e = AgentExporter::start(&args(&["--export-file-path", path.to_str().unwrap()]))
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
        let e = AgentExporter::start(&args(&["--export-file-path", link.to_str().unwrap()]))
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
        let e = AgentExporter::start(&a).unwrap().unwrap();
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
        let e = AgentExporter::start(&args(&["--export-file-path", path.to_str().unwrap()]))
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
