//! Turning GetFlows responses into exporter lines: allow / deny lists, field mask, ExportEvent
//! JSON, and the bookkeeping that lets a reconnect resume without writing a flow twice.

use hubble::field_mask::FlowMask;
use hubble::filter::FlowFilters;
use hubble_api::flow::{LostEvent, LostEventSource};
use hubble_api::json::ProtoJson;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{ExportEvent, GetFlowsResponse, export_event};
use hubble_api::pbjson_types::Timestamp;

use crate::writer::Sink;

/// Lines kept in memory while the output cannot be written; beyond this, events are dropped.
pub const MAX_PENDING: usize = 64 << 20;

/// Counters of an exporter run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines written to the output.
    pub written: u64,
    /// Flows left out by the allow / deny lists.
    pub filtered: u64,
    /// Events received again after a reconnect and skipped.
    pub duplicates: u64,
    /// Events dropped because the output could not be written for too long.
    pub dropped: u64,
    /// Events without a JSON form (invalid timestamps).
    pub encode_errors: u64,
    /// Failed writes (full disk, unwritable directory, …).
    pub write_errors: u64,
    /// Gaps detected after reconnects.
    pub gaps: u64,
}

/// Builds exporter lines and hands them to a sink in batches.
pub struct Exporter {
    filters: FlowFilters,
    field_mask: FlowMask,
    /// Whole lines not yet written.
    pending: Vec<u8>,
    pending_lines: u64,
    /// Time of the newest event accepted so far, and the lines accepted with exactly that time.
    last_time: Option<(i64, i32)>,
    at_last_time: Vec<u8>,
    /// While resuming after a reconnect: events at or before this time may be repeats.
    resume_until: Option<(i64, i32)>,
    stats: Stats,
}

fn key(t: &Timestamp) -> (i64, i32) {
    (t.seconds, t.nanos)
}

/// The `time` of an exporter line.
fn line_time(line: &[u8]) -> Option<(i64, i32)> {
    #[derive(serde::Deserialize)]
    struct Line {
        time: Option<String>,
    }
    let l: Line = serde_json::from_slice(line).ok()?;
    let t = chrono::DateTime::parse_from_rfc3339(&l.time?).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos() as i32))
}

impl Exporter {
    /// An exporter applying `filters` and `field_mask` (flow field paths; empty = everything).
    pub fn new(filters: FlowFilters, field_mask: Vec<String>) -> Self {
        Exporter {
            filters,
            field_mask: FlowMask::new(&field_mask),
            pending: Vec::with_capacity(1 << 20),
            pending_lines: 0,
            last_time: None,
            at_last_time: Vec::new(),
            resume_until: None,
            stats: Stats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// True when lines wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes of lines waiting to be written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Time of the newest event exported, where a reconnect resumes (`since`).
    pub fn last_time(&self) -> Option<Timestamp> {
        self.last_time
            .map(|(seconds, nanos)| Timestamp { seconds, nanos })
    }

    /// Learns where an earlier run stopped from the end of its output (`tail`: whole lines
    /// as written): the time of the last line and the lines written at that time. Returns
    /// that time, or None when no line has a readable time.
    pub fn resume_after(&mut self, tail: &[u8]) -> Option<Timestamp> {
        let mut last: Option<((i64, i32), Vec<u8>)> = None;
        for line in tail.split_inclusive(|&b| b == b'\n') {
            if !line.ends_with(b"\n") {
                break; // torn last line: not written by us
            }
            let Some(t) = line_time(line) else { continue };
            match &mut last {
                Some((lt, lines)) if *lt == t => lines.extend_from_slice(line),
                _ => last = Some((t, line.to_vec())),
            }
        }
        let (t, lines) = last?;
        self.last_time = Some(t);
        self.at_last_time = lines;
        self.last_time()
    }

    /// Called on reconnect: events up to the last exported time are compared with what was
    /// already written and skipped when identical.
    pub fn start_resume(&mut self) {
        self.resume_until = self.last_time;
    }

    /// Adds the line of one response (if it passes the filters and is not a repeat).
    pub fn push(&mut self, mut resp: GetFlowsResponse) {
        if let Some(ResponseTypes::Flow(flow)) = &resp.response_types {
            if !self.filters.matches(flow) {
                self.stats.filtered += 1;
                return;
            }
            if !self.field_mask.is_empty() {
                resp = self.field_mask.apply(&resp);
            }
        }
        let time = resp.time.or(match &resp.response_types {
            Some(ResponseTypes::Flow(f)) => f.time,
            _ => None,
        });
        let ev = ExportEvent {
            response_types: resp.response_types.map(|r| match r {
                ResponseTypes::Flow(f) => export_event::ResponseTypes::Flow(f),
                ResponseTypes::NodeStatus(n) => export_event::ResponseTypes::NodeStatus(n),
                ResponseTypes::LostEvents(l) => export_event::ResponseTypes::LostEvents(l),
            }),
            node_name: resp.node_name,
            time,
        };
        self.push_event(&ev);
    }

    /// Adds the line of an ExportEvent.
    pub fn push_event(&mut self, ev: &ExportEvent) {
        if self.pending.len() >= MAX_PENDING {
            self.stats.dropped += 1;
            return;
        }
        let t = ev.time.as_ref().map(key).unwrap_or((0, 0));
        let start = self.pending.len();
        if ev.write_json(&mut self.pending).is_err() {
            self.pending.truncate(start);
            self.stats.encode_errors += 1;
            return;
        }
        self.pending.push(b'\n');
        if let Some(until) = self.resume_until {
            if t > until {
                self.resume_until = None;
            } else if t < until || self.seen_at_last_time(&self.pending[start..]) {
                // Older than the last written event (a resumed stream repeats only those)
                // or identical to a line written at the same time.
                self.pending.truncate(start);
                self.stats.duplicates += 1;
                return;
            }
        }
        if self.last_time != Some(t) {
            if self.last_time.is_some_and(|l| t < l) {
                // Out of order (a relay merging nodes): not a resume point.
            } else {
                self.last_time = Some(t);
                self.at_last_time.clear();
            }
        }
        if self.last_time == Some(t) && self.at_last_time.len() < MAX_PENDING {
            self.at_last_time.extend_from_slice(&self.pending[start..]);
        }
        self.pending_lines += 1;
    }

    fn seen_at_last_time(&self, line: &[u8]) -> bool {
        self.at_last_time
            .split_inclusive(|&b| b == b'\n')
            .any(|l| l == line)
    }

    /// Records a gap: flows between the last exported one and `now` were lost while
    /// disconnected. Written as a lost event of the server's ring buffer.
    pub fn push_gap(&mut self, node_name: &str, now: Timestamp) {
        self.stats.gaps += 1;
        let ev = ExportEvent {
            response_types: Some(export_event::ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::HubbleRingBuffer as i32,
                // Unknown how many: at least one.
                num_events_lost: 1,
                ..Default::default()
            })),
            node_name: node_name.to_string(),
            time: Some(now),
        };
        let resume = self.resume_until.take();
        self.push_event(&ev);
        self.resume_until = resume;
    }

    /// Writes pending lines. On failure the lines not written stay pending for the next try.
    pub fn flush(&mut self, sink: &mut Sink) -> Result<(), std::io::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match sink.write_lines(&self.pending) {
            Ok(()) => {
                self.stats.written += self.pending_lines;
                self.pending_lines = 0;
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                self.stats.write_errors += 1;
                if e.written > 0 {
                    let n = self.pending[..e.written]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count() as u64;
                    self.stats.written += n;
                    self.pending_lines -= n;
                    self.pending.drain(..e.written);
                }
                Err(e.error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{RotateOptions, RotatingFile};
    use hubble_api::flow::{Endpoint, Flow, Verdict};

    pub(crate) fn response(i: u32, ns: &str, verdict: Verdict) -> GetFlowsResponse {
        let time = Timestamp {
            seconds: 1_700_000_000 + i64::from(i / 2),
            nanos: 0,
        };
        GetFlowsResponse {
            node_name: "node-1".into(),
            time: Some(time),
            response_types: Some(ResponseTypes::Flow(Flow {
                time: Some(time),
                verdict: verdict as i32,
                source: Some(Endpoint {
                    namespace: ns.into(),
                    pod_name: format!("pod-{i}"),
                    ..Default::default()
                }),
                node_name: "node-1".into(),
                ..Default::default()
            })),
        }
    }

    fn output(e: &mut Exporter) -> Vec<serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut sink = Sink::File(RotatingFile::new(&path, RotateOptions::default()));
        e.flush(&mut sink).unwrap();
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_export_events() {
        let mut e = Exporter::new(FlowFilters::default(), vec![]);
        e.push(response(3, "default", Verdict::Forwarded));
        let v = output(&mut e);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["node_name"], "node-1");
        assert_eq!(v[0]["time"], "2023-11-14T22:13:21Z");
        assert_eq!(v[0]["flow"]["source"]["pod_name"], "pod-3");
        assert_eq!(v[0]["flow"]["verdict"], "FORWARDED");
        assert_eq!(e.stats().written, 1);
    }

    #[test]
    fn lines_match_hubble_observe_jsonpb() {
        // The fixture is in `hubble observe -o jsonpb` form, which the exporter format equals.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
        let text = std::fs::read_to_string(path).unwrap();
        let mut e = Exporter::new(FlowFilters::default(), vec![]);
        for l in text.lines() {
            e.push(serde_json::from_str(l).unwrap());
        }
        assert_eq!(String::from_utf8(e.pending.clone()).unwrap(), text);
    }

    #[test]
    fn allow_deny_and_field_mask() {
        let allow = crate::config::parse_filters("allowlist", r#"{"verdict":["DROPPED"]}"#);
        let deny = crate::config::parse_filters("denylist", r#"{"source_pod":["kube-system/"]}"#);
        let filters = FlowFilters::compile(&allow.unwrap(), &deny.unwrap()).unwrap();
        let mask = crate::config::parse_field_mask("time,source.pod_name").unwrap();
        let mut e = Exporter::new(filters, mask);
        e.push(response(1, "default", Verdict::Dropped));
        e.push(response(2, "default", Verdict::Forwarded));
        e.push(response(3, "kube-system", Verdict::Dropped));
        let v = output(&mut e);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0]["flow"],
            serde_json::json!({"time": "2023-11-14T22:13:20Z", "source": {"pod_name": "pod-1"}})
        );
        assert_eq!(e.stats().filtered, 2);
    }

    #[test]
    fn resume_skips_repeats_but_keeps_new_flows_at_the_same_time() {
        let mut e = Exporter::new(FlowFilters::default(), vec![]);
        for i in 0..4 {
            e.push(response(i, "default", Verdict::Forwarded));
        }
        // Flow 4 has the same time as flow 5, which was not received before the reconnect.
        e.push(response(4, "default", Verdict::Forwarded));
        let _ = output(&mut e);
        e.start_resume();
        // The server repeats from `since` = time of flow 4 (inclusive), then goes on.
        for i in 4..8 {
            e.push(response(i, "default", Verdict::Forwarded));
        }
        let v = output(&mut e);
        let pods: Vec<&str> = v
            .iter()
            .map(|l| l["flow"]["source"]["pod_name"].as_str().unwrap())
            .collect();
        assert_eq!(pods, ["pod-5", "pod-6", "pod-7"]);
        assert_eq!(e.stats().duplicates, 1);
        assert_eq!(e.stats().written, 8);
    }

    #[test]
    fn a_restart_resumes_after_the_last_line_of_the_file() {
        let mut first = Exporter::new(FlowFilters::default(), vec![]);
        for i in 0..5 {
            first.push(response(i, "default", Verdict::Forwarded));
        }
        let mut tail = first.pending.clone();
        tail.extend_from_slice(b"{\"flow\":{\"ti"); // torn by a crash: ignored
        let mut e = Exporter::new(FlowFilters::default(), vec![]);
        let t = e.resume_after(&tail).unwrap();
        assert_eq!(t.seconds, 1_700_000_002);
        e.start_resume();
        for i in 3..7 {
            e.push(response(i, "default", Verdict::Forwarded));
        }
        let v = output(&mut e);
        let pods: Vec<&str> = v
            .iter()
            .map(|l| l["flow"]["source"]["pod_name"].as_str().unwrap())
            .collect();
        assert_eq!(pods, ["pod-5", "pod-6"]);
        assert_eq!(
            Exporter::new(FlowFilters::default(), vec![]).resume_after(b""),
            None
        );
    }

    #[test]
    fn gap_is_a_lost_event_line() {
        let mut e = Exporter::new(FlowFilters::default(), vec![]);
        e.push_gap(
            "node-1",
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            },
        );
        let v = output(&mut e);
        assert_eq!(
            v[0]["lost_events"],
            serde_json::json!({"source": "HUBBLE_RING_BUFFER", "num_events_lost": "1"})
        );
    }

    #[test]
    fn full_disk_is_counted_and_retried() {
        // /dev/full fails every write with ENOSPC.
        if !std::path::Path::new("/dev/full").exists() {
            return;
        }
        let mut sink = Sink::File(RotatingFile::new("/dev/full", RotateOptions::default()));
        let mut e = Exporter::new(FlowFilters::default(), vec![]);
        e.push(response(1, "default", Verdict::Forwarded));
        for _ in 0..3 {
            let err = e.flush(&mut sink).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        }
        assert_eq!(e.stats().write_errors, 3);
        assert_eq!(e.stats().written, 0);
        assert!(e.has_pending());
    }

    #[test]
    fn failed_write_keeps_lines_pending() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("sub");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("events.log");
        let mut sink = Sink::File(RotatingFile::new(&path, RotateOptions::default()));
        let mut e = Exporter::new(FlowFilters::default(), vec![]);
        e.push(response(1, "default", Verdict::Forwarded));
        assert!(e.flush(&mut sink).is_err());
        assert!(e.has_pending());
        assert_eq!(e.stats().write_errors, 1);
        std::fs::remove_file(&blocker).unwrap();
        e.push(response(2, "default", Verdict::Forwarded));
        e.flush(&mut sink).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        assert_eq!(e.stats().written, 2);
    }
}
