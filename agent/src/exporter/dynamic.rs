//! Dynamic flow logs (Cilium's `--hubble-flowlogs-config-path`): a YAML file of `flowLogs:`
//! entries, each a log of its own (file, filters, field mask, rotation, aggregation, `end`).
//! A thread re-reads the file every [`POLL`]; a log whose entry changed is restarted, one
//! removed is closed, one added starts, one past its `end` is closed. A file that does not
//! parse or validate is reported in one line and the logs in force keep running. The
//! `hubble_dynamic_exporter_*` metrics are Cilium's.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use flow_exporter::config::parse_field_mask;
use flow_exporter::writer::RotateOptions;
use hubble::filter::{FlowFilters, unknown_fields_warning};
use hubble_api::flow::FlowFilter;
use hubble_api::observer::{GetAgentEventsResponse, GetFlowsResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde::Deserialize;

use super::aggregate::Aggregation;
use super::{AgentExporter, LogSpec};

/// How often the file is read (Cilium reads it every 5 s).
pub const POLL: Duration = Duration::from_secs(1);

/// Cilium's defaults for an entry's `fileMaxSizeMb` / `fileMaxBackups` of 0.
const DEFAULT_MAX_SIZE_MB: u64 = 10;
const DEFAULT_MAX_BACKUPS: usize = 5;

/// The file, as Cilium's `DynamicExportersConfig`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    flow_logs: Vec<Option<Entry>>,
}

/// One `flowLogs:` entry, as Cilium's `FlowLogConfig` (with 1.19's `aggregationOptions`, and
/// the `fieldAggregate` / `aggregationInterval` form before it).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct Entry {
    name: String,
    file_path: String,
    field_mask: Vec<String>,
    include_filters: Vec<FlowFilter>,
    exclude_filters: Vec<FlowFilter>,
    file_max_size_mb: u64,
    file_max_backups: usize,
    file_compress: bool,
    end: Option<String>,
    aggregation_options: Option<AggregationOptions>,
    field_aggregate: Vec<String>,
    aggregation_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct AggregationOptions {
    window_interval: Option<String>,
    aggregation_fields: Vec<String>,
}

/// One flow log of the file, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowLog {
    pub name: String,
    pub spec: LogSpec,
    pub end: Option<SystemTime>,
}

impl FlowLog {
    /// Whether the log is before its `end` at `now`.
    fn active_at(&self, now: SystemTime) -> bool {
        self.end.is_none_or(|end| now < end)
    }
}

/// Parses and validates the file's text; the error is one line.
pub fn parse(text: &str) -> Result<Vec<FlowLog>, String> {
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig {
            flow_logs: Vec::new(),
        }
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?
    };
    let mut logs: Vec<FlowLog> = Vec::with_capacity(file.flow_logs.len());
    for (i, entry) in file.flow_logs.into_iter().enumerate() {
        let entry = entry.ok_or_else(|| format!("invalid flowlog at index {i}"))?;
        let log = check(entry).map_err(|e| format!("flowLogs[{i}]: {e}"))?;
        if logs.iter().any(|l| l.name == log.name) {
            return Err(format!("duplicated flowlog name {}", log.name));
        }
        if logs.iter().any(|l| l.spec.path == log.spec.path) {
            return Err(format!("duplicated flowlog path {}", log.spec.path));
        }
        logs.push(log);
    }
    Ok(logs)
}

/// Warnings for the file's filters (`includeFilters`, `excludeFilters`) naming fields no
/// FlowFilter has: those are skipped, as Cilium skips them, so the filter matches more
/// than meant.
pub fn filter_warnings(text: &str) -> Vec<String> {
    let Ok(file) = serde_yaml::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let logs = file["flowLogs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        for key in ["includeFilters", "excludeFilters"] {
            let filters = log[key].as_array().map(Vec::as_slice).unwrap_or_default();
            for (j, f) in filters.iter().enumerate() {
                let unknown = hubble_api::json::unknown_fields(".flow.FlowFilter", f);
                out.extend(unknown_fields_warning(
                    &format!("flowLogs[{i}].{key}[{j}]"),
                    &unknown,
                ));
            }
        }
    }
    out
}

fn check(e: Entry) -> Result<FlowLog, String> {
    if e.name.is_empty() {
        return Err("name is required".into());
    }
    if e.file_path.is_empty() {
        return Err(format!("{}: filePath is required", e.name));
    }
    let named = |what: &str, err: String| format!("{}: {what}: {err}", e.name);
    FlowFilters::compile(&e.include_filters, &[])
        .map_err(|err| named("includeFilters", err.to_string()))?;
    FlowFilters::compile(&e.exclude_filters, &[])
        .map_err(|err| named("excludeFilters", err.to_string()))?;
    let mask = parse_field_mask(&e.field_mask.join(","))
        .map_err(|err| named("fieldMask", err.to_string()))?;
    let (fields, window) = match &e.aggregation_options {
        Some(o) => (&o.aggregation_fields, o.window_interval.as_deref()),
        None => (&e.field_aggregate, e.aggregation_interval.as_deref()),
    };
    let aggregation = aggregation(fields, window).map_err(|err| named("aggregation", err))?;
    let end = e
        .end
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(SystemTime::from)
                .map_err(|err| named("end", format!("{t:?} is not an RFC 3339 time: {err}")))
        })
        .transpose()?;
    Ok(FlowLog {
        spec: LogSpec {
            path: e.file_path,
            rotate: RotateOptions {
                max_size: match e.file_max_size_mb {
                    0 => DEFAULT_MAX_SIZE_MB,
                    n => n,
                }
                .saturating_mul(1024 * 1024),
                max_backups: match e.file_max_backups {
                    0 => DEFAULT_MAX_BACKUPS,
                    n => n,
                },
                compress: e.file_compress,
            },
            allow: e.include_filters,
            deny: e.exclude_filters,
            mask,
            aggregation,
            queue: super::DEFAULT_QUEUE,
        },
        name: e.name,
        end,
    })
}

/// Aggregation from its fields and window (both or neither); the error says which is missing.
pub fn aggregation(fields: &[String], window: Option<&str>) -> Result<Option<Aggregation>, String> {
    let window = window
        .map(crate::args::parse_duration)
        .transpose()?
        .filter(|w| !w.is_zero());
    match (fields.is_empty(), window) {
        (true, _) => Ok(None),
        (false, None) => Err("aggregation fields need a window interval above 0".into()),
        (false, Some(window)) => {
            let fields = parse_field_mask(&fields.join(",")).map_err(|e| e.to_string())?;
            Ok(Some(Aggregation { fields, window }))
        }
    }
}

impl Managed {
    /// The log's exporter when it is open and `now` is before its `end`.
    fn writing(&self, now: SystemTime) -> Option<&AgentExporter> {
        self.exporter.as_ref().filter(|_| self.log.active_at(now))
    }
}

/// What the last read of the file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Nothing,
    Unreadable,
    /// Text of this hash (applied when it parsed, reported when not).
    Text(u64),
}

/// A log of the file and its exporter (None once past its `end`).
struct Managed {
    log: FlowLog,
    exporter: Option<AgentExporter>,
}

/// Counters of the reloads, for the metrics.
#[derive(Debug, Default)]
struct ReloadStats {
    /// `add`, `update`, `remove`, `failure`.
    ops: BTreeMap<&'static str, u64>,
    hash: u64,
    applied_at: Option<SystemTime>,
}

struct Inner {
    path: PathBuf,
    logs: RwLock<BTreeMap<String, Managed>>,
    stats: Mutex<ReloadStats>,
    dropped: Arc<AtomicU64>,
}

/// The running dynamic exporter: `offer` / `agent_event_sink` from the agent, `stop` at
/// the end.
pub struct DynamicExporter {
    inner: Arc<Inner>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DynamicExporter {
    /// Applies the file (a missing or broken file is reported; logs start when it is fixed)
    /// and starts the thread that follows it.
    pub fn start(path: &Path, dropped: Arc<AtomicU64>) -> Result<Self> {
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            logs: RwLock::new(BTreeMap::new()),
            stats: Mutex::new(ReloadStats::default()),
            dropped,
        });
        let mut last = inner.reload(Seen::Nothing);
        let (stop, stopped) = mpsc::channel::<()>();
        let follower = inner.clone();
        let thread = std::thread::Builder::new()
            .name("flowlogs-config".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                    last = follower.reload(last);
                    follower.close_ended();
                }
            })
            .context("starting the flow logs config thread")?;
        eprintln!(
            "hubble-agent: dynamic flow logs from {} (re-read every {}s)",
            path.display(),
            POLL.as_secs()
        );
        Ok(Self {
            inner,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Queues `resp` on every active log whose lists it passes; never blocks.
    pub fn offer(&self, resp: &GetFlowsResponse) {
        self.inner.each_writing(|e| e.offer(resp));
    }

    /// A sink for the agent-event store: every active log whose lists pass the event queues
    /// it; never blocks.
    pub fn agent_event_sink(&self) -> impl Fn(&GetAgentEventsResponse) + Send + Sync + 'static {
        let inner = self.inner.clone();
        move |ev| inner.each_writing(|e| e.offer_agent_event(ev))
    }

    /// The `hubble_dynamic_exporter_*` metrics.
    pub fn collector(&self) -> Arc<dyn Collector> {
        Arc::new(DynamicMetrics(self.inner.clone()))
    }

    /// The names of the logs writing now.
    pub fn active(&self) -> Vec<String> {
        let now = SystemTime::now();
        self.inner
            .read()
            .iter()
            .filter(|(_, m)| m.writing(now).is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Stops following the file and closes every log (what is queued is written).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let logs = std::mem::take(&mut *self.inner.write());
        for m in logs.into_values() {
            if let Some(e) = m.exporter {
                e.stop();
            }
        }
    }
}

impl Drop for DynamicExporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicExporter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Managed>> {
        self.logs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Managed>> {
        self.logs.write().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, op: &'static str) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *s.ops.entry(op).or_default() += 1;
    }

    /// Calls `f` with the exporter of every log writing now (open and before its `end`).
    fn each_writing(&self, mut f: impl FnMut(&AgentExporter)) {
        let now = SystemTime::now();
        for m in self.read().values() {
            if let Some(e) = m.writing(now) {
                f(e);
            }
        }
    }

    /// Reads the file and applies it when its bytes changed since `last`; returns what is
    /// in force now. An unreadable file is reported once until it is back.
    fn reload(&self, last: Seen) -> Seen {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                if last != Seen::Unreadable {
                    self.count("failure");
                    eprintln!(
                        "hubble-agent: flow logs config {}: {e}; the logs in force keep running",
                        self.path.display()
                    );
                }
                return Seen::Unreadable;
            }
        };
        let hash = {
            let mut h = std::hash::DefaultHasher::new();
            text.hash(&mut h);
            h.finish()
        };
        if last == Seen::Text(hash) {
            return last;
        }
        match parse(&text) {
            Ok(logs) => {
                for w in filter_warnings(&text) {
                    eprintln!(
                        "hubble-agent: flow logs config {}: warning: {w}",
                        self.path.display()
                    );
                }
                self.apply(logs);
                let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.hash = hash;
                s.applied_at = Some(SystemTime::now());
            }
            Err(e) => {
                self.count("failure");
                eprintln!(
                    "hubble-agent: flow logs config {}: {e}; the logs in force keep running",
                    self.path.display()
                );
            }
        }
        Seen::Text(hash)
    }

    /// Makes the running logs those of `logs`: unchanged ones keep writing, changed ones
    /// restart (the old one is closed first: it may own the same file), removed ones close.
    fn apply(&self, logs: Vec<FlowLog>) {
        let mut ops: Vec<(FlowLog, &'static str)> = Vec::new();
        let mut closing: Vec<(String, Managed)> = Vec::new();
        {
            let mut cur = self.write();
            for l in logs.iter() {
                match cur.get(&l.name) {
                    Some(m) if m.log == *l => {}
                    Some(_) => ops.push((l.clone(), "update")),
                    None => ops.push((l.clone(), "add")),
                }
            }
            let stale: Vec<String> = cur
                .keys()
                .filter(|n| {
                    !logs.iter().any(|l| &l.name == *n) || ops.iter().any(|(l, _)| &l.name == *n)
                })
                .cloned()
                .collect();
            for n in stale {
                if let Some(m) = cur.remove(&n) {
                    closing.push((n, m));
                }
            }
        }
        for (name, m) in closing {
            if !logs.iter().any(|l| l.name == name) {
                self.count("remove");
                eprintln!("hubble-agent: flow log {name}: removed; closed");
            }
            if let Some(e) = m.exporter {
                e.stop();
            }
        }
        for (log, op) in ops {
            let exporter = if log.active_at(SystemTime::now()) {
                let label = format!("flow log {}", log.name);
                match AgentExporter::start(&log.spec, &label, self.dropped.clone()) {
                    Ok(e) => {
                        eprintln!("hubble-agent: {label}: exporting to {}", e.describe());
                        Some(e)
                    }
                    Err(e) => {
                        eprintln!("hubble-agent: {e:#}; not applied");
                        continue;
                    }
                }
            } else {
                None
            };
            self.count(op);
            self.write()
                .insert(log.name.clone(), Managed { log, exporter });
        }
    }

    /// Closes the logs whose `end` has passed.
    fn close_ended(&self) {
        let now = SystemTime::now();
        let ended: Vec<(String, AgentExporter)> = {
            let mut cur = self.write();
            cur.iter_mut()
                .filter(|(_, m)| m.exporter.is_some() && !m.log.active_at(now))
                .filter_map(|(n, m)| m.exporter.take().map(|e| (n.clone(), e)))
                .collect()
        };
        for (name, e) in ended {
            eprintln!("hubble-agent: flow log {name}: past its end; closed");
            e.stop();
        }
    }
}

/// Cilium's `hubble_dynamic_exporter_*` families.
#[derive(Debug)]
struct DynamicMetrics(Arc<Inner>);

impl Collector for DynamicMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let now = SystemTime::now();
        let up: Vec<(String, i64)> = self
            .0
            .read()
            .iter()
            .map(|(n, m)| (n.clone(), i64::from(m.writing(now).is_some())))
            .collect();
        let active = up.iter().filter(|(_, v)| *v == 1).count() as i64;
        let mut m = enc.encode_descriptor(
            "hubble_dynamic_exporter_exporters_total",
            "Number of configured exporters",
            None,
            MetricType::Gauge,
        )?;
        for (status, v) in [("active", active), ("inactive", up.len() as i64 - active)] {
            m.encode_family(&[("status", status)])?.encode_gauge(&v)?;
        }
        let mut m = enc.encode_descriptor(
            "hubble_dynamic_exporter_up",
            "Status of individual exporters",
            None,
            MetricType::Gauge,
        )?;
        for (name, v) in &up {
            m.encode_family(&[("name", name.as_str())])?
                .encode_gauge(v)?;
        }
        let s = self.0.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut m = enc.encode_descriptor(
            "hubble_dynamic_exporter_reconfigurations",
            "Number of dynamic exporters reconfigurations",
            None,
            MetricType::Counter,
        )?;
        for (op, v) in &s.ops {
            m.encode_family(&[("op", *op)])?
                .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
        }
        enc.encode_descriptor(
            "hubble_dynamic_exporter_config_hash",
            "Hash of last applied config",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(s.hash as f64))?;
        let applied = s
            .applied_at
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        enc.encode_descriptor(
            "hubble_dynamic_exporter_config_last_applied",
            "Timestamp of last applied config",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&applied)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cilium's own example file (pkg/hubble/exporter/testdata), in its older aggregation form.
    const CILIUM_EXAMPLE: &str = r#"
flowLogs:
- name: "test001"
  filePath: "/var/log/network/flow-log/pa/test001.log"
  fieldMask: []
  fieldAggregate: []
  aggregationInterval: 0s
  includeFilters: []
  excludeFilters: []
  fileMaxSizeMb: 0
  fileMaxBackups: 0
  fileCompress: false
  end: "2023-10-09T23:59:59-07:00"
- name: "test002"
  filePath: "/var/log/network/flow-log/pa/test002.log"
  fieldMask: ["source.namespace", "source.pod_name", "destination.namespace", "destination.pod_name", "verdict"]
  includeFilters:
  - source_pod: ["default/"]
    source_label: ["networking.example.com/flow-logs=enabled"]
    event_type:
    - type: 1
  - destination_pod: ["frontend/nginx-975996d4c-7hhgt"]
  fileMaxSizeMb: 10
  fileMaxBackups: 3
  fileCompress: true
- name: "test003"
  filePath: "/var/log/network/flow-log/pa/test003.log"
  fieldAggregate: ["source", "destination","verdict"]
  aggregationInterval: 30s
  excludeFilters:
  - destination_pod: ["ingress/"]
- name: "test004"
  filePath: stdout
  aggregationOptions:
    windowInterval: 100ms
    aggregationFields: [source, destination]
"#;

    #[test]
    fn parses_ciliums_flow_logs_file() {
        let logs = parse(CILIUM_EXAMPLE).unwrap();
        assert_eq!(logs.len(), 4);
        let t1 = &logs[0];
        assert_eq!(t1.name, "test001");
        assert_eq!(t1.spec.rotate.max_size, 10 << 20, "0 is Cilium's default");
        assert_eq!(t1.spec.rotate.max_backups, 5);
        assert_eq!(t1.spec.aggregation, None);
        let end = t1
            .end
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(end.as_secs(), 1_696_921_199);
        assert!(!t1.active_at(SystemTime::now()));
        let t2 = &logs[1];
        assert_eq!(t2.spec.allow.len(), 2);
        assert_eq!(t2.spec.allow[0].source_pod, ["default/"]);
        assert_eq!(t2.spec.allow[0].event_type[0].r#type, 1);
        assert_eq!(t2.spec.mask.len(), 5);
        assert_eq!(
            (
                t2.spec.rotate.max_size,
                t2.spec.rotate.max_backups,
                t2.spec.rotate.compress
            ),
            (10 << 20, 3, true)
        );
        assert_eq!(t2.end, None);
        let a = logs[2].spec.aggregation.as_ref().unwrap();
        assert_eq!(a.fields, ["source", "destination", "verdict"]);
        assert_eq!(a.window, Duration::from_secs(30));
        assert_eq!(logs[2].spec.deny[0].destination_pod, ["ingress/"]);
        let a = logs[3].spec.aggregation.as_ref().unwrap();
        assert_eq!(a.window, Duration::from_millis(100));
        assert_eq!(logs[3].spec.path, "stdout");
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(filter_warnings(CILIUM_EXAMPLE).is_empty());
        let typo = "flowLogs:\n- name: a\n  filePath: /tmp/a.log\n  excludeFilters:\n  - source_pod: [x/]\n  - destination_pods: [y/]\n";
        assert!(parse(typo).is_ok(), "skipped, as Cilium skips it");
        let w = filter_warnings(typo);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "flowLogs[0].excludeFilters[1]: no FlowFilter field is named \"destination_pods\""
            ),
            "{w:?}"
        );
        assert_eq!(parse("flowLogs: []").unwrap(), vec![]);
    }

    #[test]
    fn invalid_files_are_one_line_naming_the_problem() {
        let err = |text: &str| {
            let e = parse(text).expect_err(text);
            assert!(!e.contains('\n'), "{e}");
            e
        };
        let two = |a: &str, b: &str| {
            format!("flowLogs:\n- name: {a}\n  filePath: /x/{a}\n- name: {b}\n  filePath: /x/{a}\n")
        };
        assert_eq!(err(&two("a", "a")), "duplicated flowlog name a");
        assert_eq!(err(&two("a", "b")), "duplicated flowlog path /x/a");
        assert!(err("flowLogs:\n- filePath: /x\n").contains("name is required"));
        assert!(err("flowLogs:\n- name: a\n").contains("a: filePath is required"));
        assert!(err("flowLogs:\n- null\n").contains("invalid flowlog at index 0"));
        let e =
            err("flowLogs:\n- name: a\n  filePath: /x\n  includeFilters:\n  - verdict: [NOPE]\n");
        assert!(
            e.starts_with("flowLogs[0].includeFilters[0].verdict[0]: unknown variant `NOPE`"),
            "{e}"
        );
        let e = err("flowLogs:\n- name: a\n  filePath: /x\n  fieldMask: [sauce.pod_name]\n");
        assert!(e.contains("a: fieldMask"), "{e}");
        let e = err("flowLogs:\n- name: a\n  filePath: /x\n  end: tomorrow\n");
        assert!(
            e.contains("a: end: \"tomorrow\" is not an RFC 3339 time"),
            "{e}"
        );
        let e = err(
            "flowLogs:\n- name: a\n  filePath: /x\n  aggregationOptions:\n    aggregationFields: [source]\n",
        );
        assert!(e.contains("need a window interval"), "{e}");
        let e = err("flowLogs:\n- name: a\n  filepath: /x\n");
        assert!(e.contains("unknown field `filepath`"), "{e}");
        err("flowLogs: {name: [unclosed");
    }

    fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn flow(pod: &str) -> GetFlowsResponse {
        serde_json::from_str(&format!(
            r#"{{"flow":{{"time":"2024-01-01T10:00:00Z","verdict":"FORWARDED","source":{{"namespace":"default","pod_name":"{pod}"}}}},"node_name":"n","time":"2024-01-01T10:00:00Z"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn logs_follow_the_file_and_a_broken_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("flowlogs.yaml");
        let log = |name: &str, extra: &str| {
            format!(
                "- name: {name}\n  filePath: {}/{name}.log\n{extra}",
                dir.path().display()
            )
        };
        let web_only = "  includeFilters:\n  - source_pod: [default/web]\n";
        std::fs::write(
            &cfg,
            format!("flowLogs:\n{}{}", log("a", ""), log("b", web_only)),
        )
        .unwrap();
        let d = DynamicExporter::start(&cfg, Arc::new(AtomicU64::new(0))).unwrap();
        assert_eq!(d.active(), ["a", "b"]);
        d.offer(&flow("web"));
        d.offer(&flow("db"));
        // b changes (now db only), a goes, c comes.
        std::fs::write(
            &cfg,
            format!(
                "flowLogs:\n{}{}",
                log("b", "  includeFilters:\n  - source_pod: [default/db]\n"),
                log("c", "")
            ),
        )
        .unwrap();
        wait("c starts", || d.active() == ["b", "c"]);
        d.offer(&flow("web"));
        d.offer(&flow("db"));
        std::fs::write(&cfg, "flowLogs: [").unwrap();
        wait("the failure is counted", || {
            d.inner.stats.lock().unwrap().ops.get("failure") == Some(&1)
        });
        assert_eq!(d.active(), ["b", "c"]);
        d.offer(&flow("db"));
        let ops = d.inner.stats.lock().unwrap().ops.clone();
        assert_eq!(
            ops,
            BTreeMap::from([("add", 3), ("update", 1), ("remove", 1), ("failure", 1)])
        );
        d.stop();
        let pods = |name: &str| -> Vec<String> {
            std::fs::read_to_string(dir.path().join(format!("{name}.log")))
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["flow"]["source"]["pod_name"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(pods("a"), ["web", "db"]);
        // b's first version wrote web; its second db twice (the broken file changed nothing).
        assert_eq!(pods("b"), ["web", "db", "db"]);
        assert_eq!(pods("c"), ["web", "db", "db"]);
    }

    #[test]
    fn a_missing_file_is_reported_once_and_followed_when_it_comes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("flowlogs.yaml");
        let d = DynamicExporter::start(&cfg, Arc::new(AtomicU64::new(0))).unwrap();
        let failures = || d.inner.stats.lock().unwrap().ops.get("failure").copied();
        assert_eq!(failures(), Some(1));
        std::thread::sleep(POLL + POLL / 2);
        assert_eq!(failures(), Some(1), "reported once");
        std::fs::write(
            &cfg,
            format!(
                "flowLogs:\n- name: a\n  filePath: {}/a.log\n",
                dir.path().display()
            ),
        )
        .unwrap();
        wait("a starts", || d.active() == ["a"]);
        d.stop();
    }
}
