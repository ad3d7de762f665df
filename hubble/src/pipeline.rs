//! The offline observe pipeline: lines → (prefilter) → parse → time window → FlowFilters →
//! first/last selection → printer. Used by `hubble observe --input-file` and the benches.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use chrono::{DateTime, Utc};
use hubble_api::observer::GetFlowsResponse;
use hubble_api::observer::get_flows_response::ResponseTypes;

use crate::filter::FlowFilters;
use crate::printer::Printer;
use crate::source::{Line, LineError, LineReader, parse_line};

/// Largest `--last N` accepted when reading files (as Hubble).
pub const MAX_LAST: u64 = 1_000_000;

/// Which flows of the input to print, in Hubble's GetFlowsRequest terms.
pub struct Selection {
    /// 0 or `u64::MAX` = all; otherwise the first or last `number` matching responses.
    pub number: u64,
    /// With `number`: the first N instead of the last N.
    pub first: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Flow field paths to keep (JSON outputs only); empty = everything.
    pub field_mask: Vec<String>,
}

impl Selection {
    /// Everything, unfiltered by time.
    pub fn all() -> Self {
        Selection {
            number: 0,
            first: false,
            since: None,
            until: None,
            field_mask: Vec::new(),
        }
    }

    fn last_n(&self) -> Option<usize> {
        (!self.first && self.number != 0 && self.number != u64::MAX).then_some(self.number as usize)
    }

    fn first_n(&self) -> Option<u64> {
        (self.first && self.number != 0 && self.number != u64::MAX).then_some(self.number)
    }
}

/// What happened while reading one input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub lines: u64,
    pub printed: u64,
    pub invalid: u64,
}

/// Reads `input` to the end (or until `--first N` is satisfied), printing what passes.
/// Invalid lines are handed to `on_error` and skipped. I/O errors of the input or the
/// output end the run.
pub fn observe_reader<R: Read, W: Write>(
    input: R,
    filters: &FlowFilters,
    sel: &Selection,
    printer: &mut Printer<W>,
    on_error: &mut dyn FnMut(&LineError),
) -> io::Result<Stats> {
    let mut reader = LineReader::new(input);
    let mut stats = Stats::default();
    let last_n = sel.last_n();
    let first_n = sel.first_n();
    let mut last_buf: VecDeque<GetFlowsResponse> = VecDeque::new();
    let since = sel.since.map(to_pair);
    let until = sel.until.map(to_pair);
    let prefilter = !filters.is_empty();

    while let Some(line) = reader.next_line()? {
        stats.lines += 1;
        let (no, bytes) = match line {
            Line::Data(no, bytes) => (no, bytes),
            Line::TooLong(no) => {
                stats.invalid += 1;
                on_error(&LineError::TooLong(no));
                continue;
            }
        };
        if prefilter && !filters.line_may_match(bytes) && looks_like_object(bytes) {
            continue;
        }
        let mut resp = match parse_line(no, bytes) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                stats.invalid += 1;
                on_error(&e);
                continue;
            }
        };
        if since.is_some() || until.is_some() {
            let t = response_time(&resp);
            if since.is_some_and(|s| t < s) || until.is_some_and(|u| t > u) {
                continue;
            }
        }
        if !filters.matches_response(&resp) {
            continue;
        }
        if !sel.field_mask.is_empty() {
            apply_field_mask(&mut resp, &sel.field_mask);
        }
        if let Some(n) = last_n {
            if last_buf.len() == n {
                last_buf.pop_front();
            }
            last_buf.push_back(resp);
            continue;
        }
        printer.write_response(&resp)?;
        stats.printed += 1;
        if first_n.is_some_and(|n| stats.printed >= n) {
            break;
        }
    }
    for resp in &last_buf {
        printer.write_response(resp)?;
        stats.printed += 1;
    }
    printer.finish()?;
    Ok(stats)
}

/// A line skipped by the prefilter still has to look like a JSON object, so that garbage
/// is reported even when it could never match.
fn looks_like_object(line: &[u8]) -> bool {
    let t = line.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

fn to_pair(t: DateTime<Utc>) -> (i64, i32) {
    (t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

/// The response's time; responses without one fall back to the flow's time (Hubble
/// itself treats a missing time as the Unix epoch).
fn response_time(resp: &GetFlowsResponse) -> (i64, i32) {
    let t = resp.time.as_ref().or(match &resp.response_types {
        Some(ResponseTypes::Flow(f)) => f.time.as_ref(),
        _ => None,
    });
    t.map(|t| (t.seconds, t.nanos)).unwrap_or((0, 0))
}

/// Keeps only the listed flow field paths (`source.pod_name`, `IP`, `l4`, `Type`…), like a
/// server applying GetFlowsRequest.field_mask.
pub fn apply_field_mask(resp: &mut GetFlowsResponse, paths: &[String]) {
    let Some(ResponseTypes::Flow(flow)) = &mut resp.response_types else {
        return;
    };
    let Ok(serde_json::Value::Object(full)) = serde_json::to_value(&*flow) else {
        return;
    };
    let mut kept = serde_json::Map::new();
    for path in paths {
        copy_path(&full, &mut kept, path.split('.'));
    }
    if let Ok(masked) = serde_json::from_value(serde_json::Value::Object(kept)) {
        *flow = masked;
    }
}

fn copy_path<'a>(
    src: &serde_json::Map<String, serde_json::Value>,
    dst: &mut serde_json::Map<String, serde_json::Value>,
    mut parts: impl Iterator<Item = &'a str>,
) {
    let Some(key) = parts.next() else { return };
    let Some(value) = src.get(key) else { return };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        dst.insert(key.to_string(), value.clone());
        return;
    }
    if let serde_json::Value::Object(inner) = value {
        let entry = dst
            .entry(key.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(d) = entry {
            copy_path(inner, d, rest.into_iter());
        }
    }
}
