//! The agent's static flow exporter (Hubble's `--hubble-export-*`): flows that pass the
//! allow / deny lists go through a bounded queue to a writer thread that applies the field
//! mask and writes ExportEvent lines to a rotating file, with the flow-exporter crate's code.
//!
//! The datapath loop only filters and enqueues; when the queue is full the flow is dropped
//! and counted, so a slow disk never slows the agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use flow_exporter::config::{parse_field_mask, parse_filters};
use flow_exporter::export::{Exporter, Stats};
use flow_exporter::writer::{RotateOptions, RotatingFile, Sink};
use hubble::filter::FlowFilters;
use hubble_api::observer::GetFlowsResponse;

/// Flags of the static exporter, Hubble's names without the `hubble-` prefix (which the
/// aliases accept).
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write flows as ExportEvent JSON lines (Hubble's exporter format, readable with
    /// `hubble observe --input-file`) to this file, or `stdout`; unset: no export.
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
    /// Export only flows matching one of these FlowFilters (JSON objects separated by commas,
    /// e.g. '{"verdict":["DROPPED"]},{"source_pod":["kube-system/"]}').
    #[arg(
        long,
        alias = "hubble-export-allowlist",
        default_value = "",
        value_name = "FILTERS"
    )]
    pub export_allowlist: String,
    /// Do not export flows matching any of these FlowFilters (same form).
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
    /// Flows queued for the export writer; beyond it flows are dropped and counted.
    #[arg(long, default_value_t = 16_384, value_name = "N", hide = true)]
    pub export_queue: usize,
}

/// The running exporter: `offer` from the datapath loop, `stop` at the end.
pub struct AgentExporter {
    filters: FlowFilters,
    tx: Option<SyncSender<GetFlowsResponse>>,
    dropped: Arc<AtomicU64>,
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
        let sink = if path == "stdout" {
            Sink::Stdout(std::io::stdout())
        } else {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("--export-file-path: creating {}", dir.display()))?;
            }
            Sink::File(RotatingFile::new(
                path,
                RotateOptions {
                    max_size: args.export_file_max_size_mb.saturating_mul(1024 * 1024),
                    max_backups: args.export_file_max_backups,
                    compress: args.export_file_compress,
                },
            ))
        };
        let what = sink.describe();
        // The writer only masks and encodes: the lists were applied before the queue.
        let exporter = Exporter::new(FlowFilters::default(), mask);
        let (tx, rx) = std::sync::mpsc::sync_channel(args.export_queue.max(1));
        let thread = std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || writer(rx, exporter, sink))
            .context("starting the export thread")?;
        eprintln!("hubble-agent: exporting flows to {what}");
        Ok(Some(Self {
            filters,
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            thread: Some(thread),
            what,
        }))
    }

    /// Queues one response if it passes the lists (lost events always do); never blocks.
    pub fn offer(&self, resp: &GetFlowsResponse) {
        if !self.filters.matches_response(resp) {
            return;
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(resp.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counter of flows dropped because the writer fell behind (for metrics).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Flows dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued, stops the writer and prints its counters.
    pub fn stop(mut self) -> Stats {
        self.tx.take();
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
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: batches what the queue holds, writes it, retries failed writes (the
/// exporter keeps failed lines pending, bounded) and logs errors at most every 10 s.
fn writer(rx: Receiver<GetFlowsResponse>, mut exp: Exporter, mut sink: Sink) -> Stats {
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
            Ok(r) => {
                exp.push(r);
                while exp.pending_bytes() < (1 << 20) {
                    match rx.try_recv() {
                        Ok(r) => exp.push(r),
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
                return exp.stats();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use hubble_api::observer::get_flows_response::ResponseTypes;

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
                _ => true,
            })
            .collect();
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
}
