//! The offline observe pipeline: lines → (prefilter) → parse → time window → FlowFilters →
//! first/last selection → printer. Used by `hubble observe --input-file` and the benches.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use chrono::{DateTime, Utc};
use hubble_api::flow::FlowFilter;
use hubble_api::json::ProtoJson;
use hubble_api::observer::GetFlowsResponse;
use hubble_api::observer::get_flows_response::ResponseTypes;

use crate::field_mask::FlowMask;
use crate::filter::FlowFilters;
use crate::printer::{OutputFormat, Printer, PrinterOptions};
use crate::source::{Block, BlockReader, Line, LineError, LineReader, parse_line};

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
    let mut last_buf: VecDeque<Passed> = VecDeque::new();
    let json = is_json(printer.options());
    let proc = LineProcessor::new(filters, sel, json);

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
        let resp = match proc.process(no, bytes) {
            Outcome::Skip => continue,
            Outcome::Invalid(e) => {
                stats.invalid += 1;
                on_error(&e);
                continue;
            }
            Outcome::Pass(passed) => passed,
        };
        if let Some(n) = last_n {
            if last_buf.len() == n {
                last_buf.pop_front();
            }
            last_buf.push_back(resp);
            continue;
        }
        write_passed(printer, &resp)?;
        stats.printed += 1;
        if first_n.is_some_and(|n| stats.printed >= n) {
            break;
        }
    }
    for resp in &last_buf {
        write_passed(printer, resp)?;
        stats.printed += 1;
    }
    printer.finish()?;
    Ok(stats)
}

/// A response that passed, with the JSON it was read from when that held unknown fields.
struct Passed {
    resp: GetFlowsResponse,
    original: Option<serde_json::Value>,
}

/// Prints a passed response; for JSON output, fields unknown to our schema are merged back
/// in from the original document.
fn write_passed<W: Write>(printer: &mut Printer<W>, p: &Passed) -> io::Result<()> {
    let Some(original) = &p.original else {
        return printer.write_response(&p.resp);
    };
    let ours = p.resp.to_json_vec().map_err(io::Error::other)?;
    let mut merged: serde_json::Value = serde_json::from_slice(&ours).map_err(io::Error::other)?;
    hubble_api::json::merge_unknown_fields(".observer.GetFlowsResponse", original, &mut merged);
    let mut buf = Vec::with_capacity(ours.len() + 64);
    crate::printer::json::write_go_json(&mut buf, &merged)?;
    buf.push(b'\n');
    printer.get_mut().write_all(&buf)
}

/// What became of one input line.
// Outcomes live for one line and are matched at once; boxing the flow would cost an
// allocation per line for nothing.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    /// Blank, or filtered out.
    Skip,
    Invalid(LineError),
    Pass(Passed),
}

/// The per-line work shared by the sequential and the parallel paths.
struct LineProcessor<'a> {
    filters: &'a FlowFilters,
    since: Option<(i64, i32)>,
    until: Option<(i64, i32)>,
    prefilter: bool,
    /// JSON output without a field mask: unknown fields are kept.
    keep_unknown: bool,
    mask: FlowMask,
}

impl<'a> LineProcessor<'a> {
    fn new(filters: &'a FlowFilters, sel: &'a Selection, json: bool) -> Self {
        LineProcessor {
            keep_unknown: json && sel.field_mask.is_empty(),
            mask: FlowMask::new(&sel.field_mask),
            filters,
            since: sel.since.map(to_pair),
            until: sel.until.map(to_pair),
            prefilter: !filters.is_empty(),
        }
    }

    fn process(&self, no: u64, bytes: &[u8]) -> Outcome {
        if self.prefilter && !self.filters.line_may_match(bytes) && looks_like_object(bytes) {
            return Outcome::Skip;
        }
        hubble_api::json::take_unknown_fields_seen();
        let mut resp = match parse_line(no, bytes) {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Skip,
            Err(e) => return Outcome::Invalid(e),
        };
        let unknown = hubble_api::json::take_unknown_fields_seen();
        if self.since.is_some() || self.until.is_some() {
            let t = response_time(&resp);
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return Outcome::Skip;
            }
        }
        if !self.filters.matches_response(&resp) {
            return Outcome::Skip;
        }
        if !self.mask.is_empty() {
            resp = self.mask.apply(&resp);
        }
        // JSON output carries fields we do not know (from a newer Hubble) over unchanged.
        let original = (unknown && self.keep_unknown)
            .then(|| serde_json::from_slice(bytes).ok())
            .flatten();
        Outcome::Pass(Passed { resp, original })
    }
}

fn is_json(opts: &PrinterOptions) -> bool {
    matches!(opts.format, OutputFormat::Json | OutputFormat::JsonPb)
}

/// Whether [`observe_parallel`] can produce the same output as [`observe_reader`]: every
/// record must print independently of the others (not table, whose columns are aligned
/// over all rows, nor dict, whose separators depend on the previous record) and the
/// selection must not need the end of the input first (`--last N`).
pub fn can_parallelize(opts: &PrinterOptions, sel: &Selection) -> bool {
    matches!(
        opts.format,
        OutputFormat::Compact | OutputFormat::Json | OutputFormat::JsonPb
    ) && sel.last_n().is_none()
}

/// Result of one block, in input order by `seq`.
struct BlockResult {
    seq: u64,
    out: Vec<u8>,
    /// End offset in `out` of each printed record.
    ends: Vec<usize>,
    errors: Vec<LineError>,
    lines: u64,
}

/// The same as [`observe_reader`], with parsing, filtering and formatting spread over
/// `threads` worker threads; a reader thread cuts the input into blocks of whole lines and
/// this thread writes the results in input order. Memory stays bounded: a few blocks are in
/// flight at any time.
pub fn observe_parallel<R: Read + Send, W: Write>(
    input: R,
    filters: &FlowFilters,
    sel: &Selection,
    opts: &PrinterOptions,
    out: &mut W,
    threads: usize,
    on_error: &mut dyn FnMut(&LineError),
) -> io::Result<Stats> {
    const BLOCK_SIZE: usize = 256 << 10;
    let threads = threads.max(1);
    let proc = LineProcessor::new(filters, sel, is_json(opts));
    let first_n = sel.first_n();
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Block)>(threads);
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::sync_channel::<BlockResult>(threads);
    // Buffers go round instead of being allocated per block: fresh block-sized allocations
    // cost page faults on every block.
    let (free_in_tx, free_in_rx) = mpsc::channel::<Vec<u8>>();
    let (free_out_tx, free_out_rx) = mpsc::channel::<Vec<u8>>();
    let free_out_rx = Mutex::new(free_out_rx);
    let mut stats = Stats::default();

    std::thread::scope(|scope| -> io::Result<Stats> {
        let stop_ref = &stop;
        let proc_ref = &proc;
        let reader = scope.spawn(move || -> io::Result<()> {
            let mut blocks = BlockReader::new(input, BLOCK_SIZE);
            let mut seq = 0;
            while !stop_ref.load(Ordering::Relaxed) {
                let spare = free_in_rx.try_recv().unwrap_or_default();
                let Some(mut block) = blocks.next_block_into(spare)? else {
                    break;
                };
                // Drop lines that cannot match here, so that selective filters
                // (--verdict DROPPED) cost the workers nothing.
                if proc_ref.prefilter && block.too_long.is_none() {
                    block.retain_lines(|l| {
                        proc_ref.filters.line_may_match(l) || !looks_like_object(l)
                    });
                }
                if job_tx.send((seq, block)).is_err() {
                    break;
                }
                seq += 1;
            }
            drop(job_tx);
            Ok(())
        });
        for _ in 0..threads {
            let res_tx = res_tx.clone();
            let free_in_tx = free_in_tx.clone();
            let (job_rx, proc, stop, free_out_rx) = (&job_rx, &proc, &stop, &free_out_rx);
            scope.spawn(move || {
                let mut printer = Printer::new(Vec::with_capacity(BLOCK_SIZE), opts.clone());
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((seq, block))) = job else { break };
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let spare = free_out_rx
                        .lock()
                        .ok()
                        .and_then(|rx| rx.try_recv().ok())
                        .unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE_HINT));
                    let (r, data) = run_block(proc, &mut printer, seq, block, spare);
                    let _ = free_in_tx.send(data);
                    // Once the collector is gone keep draining jobs, so the reader
                    // never blocks on a full queue.
                    let _ = res_tx.send(r);
                }
            });
        }
        drop(res_tx);
        drop(free_in_tx);

        let mut pending: BTreeMap<u64, BlockResult> = BTreeMap::new();
        let mut next = 0;
        let mut result = Ok(());
        'collect: for r in res_rx.iter() {
            pending.insert(r.seq, r);
            while let Some(r) = pending.remove(&next) {
                next += 1;
                stats.lines += r.lines;
                stats.invalid += r.errors.len() as u64;
                for e in &r.errors {
                    on_error(e);
                }
                let mut upto = r.out.len();
                let mut done = false;
                if let Some(n) = first_n {
                    let left = (n - stats.printed) as usize;
                    if r.ends.len() >= left {
                        upto = if left == 0 { 0 } else { r.ends[left - 1] };
                        stats.printed += left as u64;
                        done = true;
                    } else {
                        stats.printed += r.ends.len() as u64;
                    }
                } else {
                    stats.printed += r.ends.len() as u64;
                }
                if let Err(e) = out.write_all(&r.out[..upto]) {
                    result = Err(e);
                    done = true;
                }
                let _ = free_out_tx.send(r.out);
                if done {
                    stop.store(true, Ordering::Relaxed);
                    break 'collect;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        drop(res_rx);
        let read = reader.join().unwrap_or(Ok(()));
        result?;
        read?;
        out.flush()?;
        Ok(stats)
    })
}

/// Processes one block; returns its result and the block's buffer for reuse. `spare` is
/// the (empty) buffer the printer writes the next block into.
fn run_block(
    proc: &LineProcessor<'_>,
    printer: &mut Printer<Vec<u8>>,
    seq: u64,
    block: Block,
    mut spare: Vec<u8>,
) -> (BlockResult, Vec<u8>) {
    let mut r = BlockResult {
        seq,
        out: Vec::new(),
        ends: Vec::new(),
        errors: Vec::new(),
        lines: 0,
    };
    if let Some(no) = block.too_long {
        r.lines = 1;
        r.errors.push(LineError::TooLong(no));
        return (r, block.data);
    }
    r.lines = block.dropped;
    let data = block.data.strip_suffix(b"\n").unwrap_or(&block.data);
    let numbers = block.line_numbers.as_deref();
    // memchr finds each newline a word or a vector at a time; a byte-by-byte split cost as
    // much as a fifth of the whole run.
    let mut next = Some(0);
    let lines = std::iter::from_fn(|| {
        let start = next?;
        let end = match memchr::memchr(b'\n', &data[start..]) {
            Some(p) => {
                next = Some(start + p + 1);
                start + p
            }
            None => {
                next = None;
                data.len()
            }
        };
        Some(&data[start..end])
    });
    for (i, line) in lines.enumerate() {
        if data.is_empty() && numbers.is_some() {
            break;
        }
        r.lines += 1;
        let no = numbers.map_or(block.first_line + i as u64, |n| n[i]);
        match proc.process(no, line) {
            Outcome::Skip => {}
            Outcome::Invalid(e) => r.errors.push(e),
            Outcome::Pass(resp) => {
                // Writing into a Vec cannot fail.
                let _ = write_passed(printer, &resp);
                r.ends.push(printer.get_mut().len());
            }
        }
    }
    spare.clear();
    r.out = std::mem::replace(printer.get_mut(), spare);
    (r, block.data)
}

const BLOCK_SIZE_HINT: usize = 128 << 10;

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

/// Flow fields that a non-JSON printer never shows and the given filters never read: the
/// parser may skip them (see `hubble_api::json::mask`). Empty for JSON output, which prints
/// everything, and when a CEL expression may look at any field.
pub fn unused_fields(
    opts: &PrinterOptions,
    whitelist: &[FlowFilter],
    blacklist: &[FlowFilter],
) -> Vec<(&'static str, Vec<&'static str>)> {
    if is_json(opts) {
        return Vec::new();
    }
    let all = || whitelist.iter().chain(blacklist);
    if all().any(|f| {
        f.experimental
            .as_ref()
            .is_some_and(|e| !e.cel_expression.is_empty())
    }) {
        return Vec::new();
    }
    let uses = |pred: &dyn Fn(&FlowFilter) -> bool| all().any(pred);
    let mut endpoint = Vec::new();
    if !uses(&|f| !f.source_label.is_empty() || !f.destination_label.is_empty()) {
        endpoint.push("labels");
    }
    if !uses(&|f| !f.source_workload.is_empty() || !f.destination_workload.is_empty()) {
        endpoint.push("workloads");
    }
    let mut flow = vec!["emitter", "policy_log", "aggregate", "file", "extensions"];
    if !uses(&|f| !f.uuid.is_empty()) {
        flow.push("uuid");
    }
    if !uses(&|f| !f.node_labels.is_empty()) {
        flow.push("node_labels");
    }
    if !uses(&|f| !f.trace_id.is_empty()) {
        flow.push("trace_context");
    }
    if !uses(&|f| !f.interface.is_empty()) {
        flow.push("interface");
    }
    if !opts.policy_names {
        flow.extend([
            "egress_allowed_by",
            "ingress_allowed_by",
            "egress_denied_by",
            "ingress_denied_by",
        ]);
    }
    let mut out = vec![("flow.Endpoint", endpoint), ("flow.Flow", flow)];
    if !uses(&|f| !f.http_header.is_empty()) {
        out.push(("flow.HTTP", vec!["headers"]));
    }
    out
}

/// Tells the parser to skip [`unused_fields`]. Process-wide: for the CLI's one run.
pub fn skip_unused_fields(
    opts: &PrinterOptions,
    whitelist: &[FlowFilter],
    blacklist: &[FlowFilter],
) {
    for (message, fields) in unused_fields(opts, whitelist, blacklist) {
        // The names are ours and exist in the schema; a failure would only mean less skipping.
        let _ = hubble_api::json::mask::skip_fields(message, &fields);
    }
}
