//! Flow printers of `hubble observe`: compact, dict, table and json/jsonpb output, byte for
//! byte as Go Hubble (v1.19.4) prints GetFlowsResponses, lost events and node status events.

pub mod descriptor;
mod escape;
mod events;
mod fields;
pub mod json;
pub mod list;
pub mod peer;
mod protojson;
mod tabwriter;
mod time;

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use hubble_api::flow::{Flow, LostEvent, LostEventSource};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use hubble_api::pbjson_types::Timestamp;
use hubble_api::relay::{NodeState, NodeStatusEvent};

pub use fields::drop_reason_text;
pub use protojson::{write_flow as write_flow_json, write_get_flows_response as write_json_line};
pub use time::TimeFormat;

use fields::{Side, push_enum, push_flow_type, push_host, push_identity, push_int, push_str};
use tabwriter::TabWriter;

const DICT_SEPARATOR: &str = "------------";
const NODE_NAMES_CUT_OFF: usize = 50;

/// An `-o/--output` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// One line per flow (the CLI's default).
    #[default]
    Compact,
    /// One block of `KEY: value` lines per flow.
    Dict,
    /// Aligned columns, printed when the stream ends.
    Table,
    /// One GetFlowsResponse per line (same as jsonpb since Hubble v0.11).
    Json,
    /// One GetFlowsResponse per line.
    JsonPb,
}

/// An unknown `--output` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid output format: {0}")]
pub struct InvalidOutputFormat(pub String);

impl FromStr for OutputFormat {
    type Err = InvalidOutputFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "compact" => OutputFormat::Compact,
            "dict" => OutputFormat::Dict,
            "json" | "JSON" => OutputFormat::Json,
            "jsonpb" => OutputFormat::JsonPb,
            "table" | "tab" => OutputFormat::Table,
            _ => return Err(InvalidOutputFormat(s.to_string())),
        })
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputFormat::Compact => "compact",
            OutputFormat::Dict => "dict",
            OutputFormat::Table => "table",
            OutputFormat::Json => "json",
            OutputFormat::JsonPb => "jsonpb",
        })
    }
}

/// How flows are printed. `color` is the resolved `--color` (auto is decided by the caller);
/// table output never uses colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterOptions {
    pub format: OutputFormat,
    pub time_format: TimeFormat,
    /// `--print-node-name`
    pub node_name: bool,
    pub color: bool,
    /// `--ip-translation` (false with `--numeric`)
    pub ip_translation: bool,
    /// `--print-policy-names`
    pub policy_names: bool,
}

impl Default for PrinterOptions {
    fn default() -> Self {
        PrinterOptions {
            format: OutputFormat::Compact,
            time_format: TimeFormat::StampMilli,
            node_name: false,
            color: false,
            ip_translation: true,
            policy_names: false,
        }
    }
}

/// Prints GetFlowsResponses to `out` (node status events go to stderr, as in Hubble).
pub struct Printer<W: Write> {
    out: W,
    err: Box<dyn Write + Send>,
    opts: PrinterOptions,
    /// Colours in effect (never for table and JSON output).
    color: bool,
    debug: bool,
    /// Records printed so far (Go's `line`: drives table headers and dict separators).
    line: u64,
    scratch: Vec<u8>,
    tw: Option<TabWriter>,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, opts: PrinterOptions) -> Self {
        let table = opts.format == OutputFormat::Table;
        Printer {
            out,
            err: Box::new(io::stderr()),
            color: opts.color && matches!(opts.format, OutputFormat::Compact | OutputFormat::Dict),
            opts,
            debug: false,
            line: 0,
            scratch: Vec::with_capacity(512),
            tw: table.then(|| TabWriter::new(2, 3)),
        }
    }

    /// Sends node status events somewhere other than stderr (`--silent-errors` passes a sink).
    pub fn with_stderr(mut self, err: impl Write + Send + 'static) -> Self {
        self.err = Box::new(err);
        self
    }

    /// `--debug`: also print informational node status events (node connected, gone).
    pub fn with_debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// The options in use.
    pub fn options(&self) -> &PrinterOptions {
        &self.opts
    }

    /// Prints one response: a flow, a lost event or a node status event.
    pub fn write_response(&mut self, resp: &GetFlowsResponse) -> io::Result<()> {
        match &resp.response_types {
            Some(ResponseTypes::Flow(f)) => self.write_flow(resp, f),
            Some(ResponseTypes::LostEvents(l)) => self.write_lost_event(resp, l),
            Some(ResponseTypes::NodeStatus(s)) => self.write_node_status(resp, s),
            None => Ok(()),
        }
    }

    /// Lays out the table (if any) and flushes the writer.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(tw) = self.tw.as_mut() {
            tw.flush(&mut self.out)?;
        }
        self.out.flush()
    }

    /// Consumes the printer, returning the writer (call `finish` first).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// The writer, e.g. to take a buffer's bytes between batches.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn push_time(&mut self, ts: Option<&Timestamp>) {
        time::push_timestamp(&mut self.scratch, self.opts.time_format, ts);
    }

    /// Writes the scratch buffer through the terminal escaper (and the tabwriter for tables).
    fn emit(&mut self) -> io::Result<()> {
        let res = match self.tw.as_mut() {
            Some(tw) => {
                let mut escaped = Vec::with_capacity(self.scratch.len());
                escape::write_escaped(&mut escaped, &self.scratch, false)?;
                tw.write(&mut self.out, &escaped)
            }
            None => escape::write_escaped(&mut self.out, &self.scratch, self.color),
        };
        self.scratch.clear();
        res
    }

    fn write_json(&mut self, resp: &GetFlowsResponse) -> io::Result<()> {
        self.scratch.clear();
        let res = protojson::write_get_flows_response(&mut self.scratch, resp)
            .and_then(|()| self.out.write_all(&self.scratch));
        self.scratch.clear();
        res
    }

    fn push_table_header(&mut self) {
        push_str(&mut self.scratch, "TIMESTAMP\t");
        if self.opts.node_name {
            push_str(&mut self.scratch, "NODE\t");
        }
        push_str(
            &mut self.scratch,
            "SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n",
        );
    }

    fn write_flow(&mut self, resp: &GetFlowsResponse, f: &Flow) -> io::Result<()> {
        let color = self.color;
        let ipt = self.opts.ip_translation;
        self.scratch.clear();
        match self.opts.format {
            OutputFormat::Json | OutputFormat::JsonPb => return self.write_json(resp),
            OutputFormat::Compact => {
                self.push_time(f.time.as_ref());
                let b = &mut self.scratch;
                if self.opts.node_name {
                    push_str(b, " [");
                    push_str(b, &f.node_name);
                    b.push(b']');
                }
                push_str(b, ": ");
                // Replies print the original destination first, with the arrow flipped.
                let (first, second, arrow) = match f.is_reply.as_ref() {
                    None => (Side::Source, Side::Destination, "<>"),
                    Some(r) if r.value => (Side::Destination, Side::Source, "<-"),
                    Some(_) => (Side::Source, Side::Destination, "->"),
                };
                let ep = |s: Side| {
                    if s == Side::Source {
                        f.source.as_ref()
                    } else {
                        f.destination.as_ref()
                    }
                };
                push_host(b, f, first, color, ipt);
                b.push(b' ');
                push_identity(b, ep(first), color);
                b.push(b' ');
                push_str(b, arrow);
                b.push(b' ');
                push_host(b, f, second, color, ipt);
                b.push(b' ');
                push_identity(b, ep(second), color);
                b.push(b' ');
                push_flow_type(b, f);
                b.push(b' ');
                fields::push_verdict(b, f, color, self.opts.policy_names);
                push_str(b, " (");
                fields::push_summary(b, f, color);
                push_str(b, ")\n");
            }
            OutputFormat::Dict => {
                if self.line != 0 {
                    push_str(&mut self.scratch, DICT_SEPARATOR);
                    self.scratch.push(b'\n');
                }
                push_str(&mut self.scratch, "  TIMESTAMP: ");
                self.push_time(f.time.as_ref());
                let b = &mut self.scratch;
                b.push(b'\n');
                if self.opts.node_name {
                    push_str(b, "       NODE: ");
                    push_str(b, &f.node_name);
                    b.push(b'\n');
                }
                push_str(b, "     SOURCE: ");
                push_host(b, f, Side::Source, color, ipt);
                push_str(b, "\nDESTINATION: ");
                push_host(b, f, Side::Destination, color, ipt);
                push_str(b, "\n       TYPE: ");
                push_flow_type(b, f);
                push_str(b, "\n    VERDICT: ");
                fields::push_verdict(b, f, color, self.opts.policy_names);
                push_str(b, "\n    SUMMARY: ");
                fields::push_summary(b, f, color);
                b.push(b'\n');
            }
            OutputFormat::Table => {
                if self.line == 0 {
                    self.push_table_header();
                }
                self.push_time(f.time.as_ref());
                let b = &mut self.scratch;
                b.push(b'\t');
                if self.opts.node_name {
                    push_str(b, &f.node_name);
                    b.push(b'\t');
                }
                push_host(b, f, Side::Source, false, ipt);
                b.push(b'\t');
                push_host(b, f, Side::Destination, false, ipt);
                b.push(b'\t');
                push_flow_type(b, f);
                b.push(b'\t');
                fields::push_verdict(b, f, false, self.opts.policy_names);
                b.push(b'\t');
                fields::push_summary(b, f, false);
                b.push(b'\n');
            }
        }
        self.emit()?;
        self.line += 1;
        Ok(())
    }

    /// `CPU(n) - count` (dict/table) or `CPU(n) count` (compact), then first/last if both set.
    fn push_lost_summary(&mut self, l: &LostEvent, dash: bool) {
        push_str(&mut self.scratch, "CPU(");
        push_int(&mut self.scratch, l.cpu.as_ref().map_or(0, |c| c.value));
        push_str(&mut self.scratch, if dash { ") - " } else { ") " });
        push_int(&mut self.scratch, l.num_events_lost);
        if let (Some(first), Some(last)) = (l.first.as_ref(), l.last.as_ref()) {
            push_str(&mut self.scratch, " (first: ");
            self.push_time(Some(first));
            push_str(&mut self.scratch, ", last: ");
            self.push_time(Some(last));
            self.scratch.push(b')');
        }
    }

    fn push_lost_source(&mut self, l: &LostEvent) {
        let s = l.source;
        push_enum(
            &mut self.scratch,
            LostEventSource::try_from(s).ok().map(|v| v.as_str_name()),
            s,
        );
    }

    fn push_lost_node(&mut self, resp: &GetFlowsResponse) {
        let node = if resp.node_name.is_empty() {
            "-"
        } else {
            resp.node_name.as_str()
        };
        push_str(&mut self.scratch, node);
    }

    fn write_lost_event(&mut self, resp: &GetFlowsResponse, l: &LostEvent) -> io::Result<()> {
        self.scratch.clear();
        match self.opts.format {
            OutputFormat::Json | OutputFormat::JsonPb => return self.write_json(resp),
            OutputFormat::Compact => {
                self.push_time(resp.time.as_ref());
                push_str(&mut self.scratch, " EVENTS LOST: ");
                self.push_lost_source(l);
                self.scratch.push(b' ');
                self.push_lost_summary(l, false);
                self.scratch.push(b'\n');
            }
            OutputFormat::Dict => {
                if self.line != 0 {
                    push_str(&mut self.scratch, DICT_SEPARATOR);
                    self.scratch.push(b'\n');
                }
                push_str(&mut self.scratch, "  TIMESTAMP: ");
                self.push_time(resp.time.as_ref());
                self.scratch.push(b'\n');
                if self.opts.node_name {
                    push_str(&mut self.scratch, "       NODE: ");
                    self.push_lost_node(resp);
                    self.scratch.push(b'\n');
                }
                push_str(&mut self.scratch, "     SOURCE: ");
                self.push_lost_source(l);
                push_str(
                    &mut self.scratch,
                    "\n       TYPE: EVENTS LOST\n    VERDICT: -\n    SUMMARY: ",
                );
                self.push_lost_summary(l, true);
                self.scratch.push(b'\n');
            }
            OutputFormat::Table => {
                if self.line == 0 {
                    self.push_table_header();
                }
                self.push_time(resp.time.as_ref());
                self.scratch.push(b'\t');
                if self.opts.node_name {
                    self.push_lost_node(resp);
                    self.scratch.push(b'\t');
                }
                self.push_lost_source(l);
                push_str(&mut self.scratch, "\t-\tEVENTS LOST\t-\t");
                self.push_lost_summary(l, true);
                self.scratch.push(b'\n');
            }
        }
        self.emit()?;
        self.line += 1;
        Ok(())
    }

    fn write_node_status(
        &mut self,
        resp: &GetFlowsResponse,
        s: &NodeStatusEvent,
    ) -> io::Result<()> {
        let state = NodeState::try_from(s.state_change).ok();
        if !self.debug
            && !matches!(
                state,
                Some(NodeState::NodeError | NodeState::NodeUnavailable)
            )
        {
            return Ok(());
        }
        let mut b = Vec::new();
        let names = join_with_cut_off(&s.node_names, ", ", NODE_NAMES_CUT_OFF);
        let state_name =
            |b: &mut Vec<u8>| push_enum(b, state.map(|v| v.as_str_name()), s.state_change);
        match self.opts.format {
            OutputFormat::Json | OutputFormat::JsonPb => {
                protojson::write_get_flows_response(&mut b, resp)?;
                return self.err.write_all(&b);
            }
            OutputFormat::Dict => {
                if self.line != 0 {
                    push_str(&mut b, DICT_SEPARATOR);
                    b.push(b'\n');
                } else {
                    self.line += 1;
                }
                push_str(&mut b, "  TIMESTAMP: ");
                time::push_timestamp(&mut b, self.opts.time_format, resp.time.as_ref());
                push_str(&mut b, "\n      STATE: ");
                state_name(&mut b);
                push_str(&mut b, "\n      NODES: ");
                push_str(&mut b, &names);
                push_str(&mut b, "\n    MESSAGE: ");
                if s.message.is_empty() {
                    push_str(&mut b, "N/A");
                } else {
                    push_str(&mut b, &go_quote(&s.message));
                }
                b.push(b'\n');
            }
            OutputFormat::Compact | OutputFormat::Table => {
                time::push_timestamp(&mut b, self.opts.time_format, resp.time.as_ref());
                push_str(&mut b, " [");
                push_str(&mut b, &resp.node_name);
                push_str(&mut b, "]: ");
                let n = s.node_names.len();
                match state {
                    Some(NodeState::NodeConnected) => {
                        push_str(&mut b, &format!("Receiving flows from {n} nodes: {names}"));
                    }
                    Some(NodeState::NodeUnavailable) => {
                        push_str(&mut b, &format!("{n} nodes are unavailable: {names}"));
                    }
                    Some(NodeState::NodeGone) => {
                        push_str(&mut b, &format!("{n} nodes removed from cluster: {names}"));
                    }
                    Some(NodeState::NodeError) => {
                        let m = go_quote(&s.message);
                        push_str(&mut b, &format!("Error {m} on {n} nodes: {names}"));
                    }
                    _ => {
                        // Go prints the message struct with %+v here; we print its fields.
                        push_str(&mut b, "unknown node status event: state_change:");
                        state_name(&mut b);
                        push_str(
                            &mut b,
                            &format!(
                                " node_names:{:?} message:{}",
                                s.node_names,
                                go_quote(&s.message)
                            ),
                        );
                    }
                }
                b.push(b'\n');
            }
        }
        escape::write_escaped(&mut self.err, &b, self.color)
    }
}

/// Resolves `--color` as Hubble (fatih/color) does: `always` / `never` (any case); anything
/// else means auto: colour only if stdout is a terminal, `NO_COLOR` is unset or empty and
/// `TERM` is not `dumb`.
pub fn resolve_color(when: &str, stdout_is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    resolve_color_with(when, stdout_is_terminal, no_color, dumb)
}

fn resolve_color_with(when: &str, tty: bool, no_color: bool, dumb_term: bool) -> bool {
    if when.eq_ignore_ascii_case("always") {
        true
    } else if when.eq_ignore_ascii_case("never") {
        false
    } else {
        tty && !no_color && !dumb_term
    }
}

/// Joins `elems` with `sep`, leaving out elements past `target_len` bytes (at least one is
/// kept) and appending ` (and N more)`.
fn join_with_cut_off(elems: &[String], sep: &str, target_len: usize) -> String {
    let mut len = 0;
    let mut end = elems.len();
    for (i, e) in elems.iter().enumerate() {
        len += e.len() + sep.len();
        if len > target_len && i > 0 {
            end = i;
            break;
        }
    }
    let joined = elems[..end].join(sep);
    match elems.len() - end {
        0 => joined,
        omitted => format!("{joined} (and {omitted} more)"),
    }
}

/// Go's `strconv.Quote` for the characters node status messages carry.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A timestamp in `format`, or `N/A` (for callers outside the hot path, e.g. the TUI).
pub fn format_timestamp(ts: Option<&Timestamp>, format: TimeFormat) -> String {
    let mut b = Vec::with_capacity(32);
    time::push_timestamp(&mut b, format, ts);
    String::from_utf8(b).unwrap_or_default()
}

/// The TYPE column of a flow (`to-endpoint`, `Policy denied`, `http-request`, ...).
pub fn flow_type(flow: &Flow) -> String {
    let mut b = Vec::with_capacity(32);
    push_flow_type(&mut b, flow);
    String::from_utf8(b).unwrap_or_default()
}

/// The VERDICT column of a flow, without colour.
pub fn verdict_text(flow: &Flow, policy_names: bool) -> String {
    let mut b = Vec::with_capacity(16);
    fields::push_verdict(&mut b, flow, false, policy_names);
    String::from_utf8(b).unwrap_or_default()
}

/// The SOURCE and DESTINATION columns of a flow, without colour.
pub fn host_names(flow: &Flow, ip_translation: bool) -> (String, String) {
    let mut s = Vec::new();
    let mut d = Vec::new();
    push_host(&mut s, flow, Side::Source, false, ip_translation);
    push_host(&mut d, flow, Side::Destination, false, ip_translation);
    (
        String::from_utf8(s).unwrap_or_default(),
        String::from_utf8(d).unwrap_or_default(),
    )
}

/// The SUMMARY column of a flow, without colour.
pub fn summary_text(flow: &Flow) -> String {
    let mut b = Vec::new();
    fields::push_summary(&mut b, flow, false);
    String::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_names() {
        for (s, f) in [
            ("compact", OutputFormat::Compact),
            ("dict", OutputFormat::Dict),
            ("json", OutputFormat::Json),
            ("JSON", OutputFormat::Json),
            ("jsonpb", OutputFormat::JsonPb),
            ("table", OutputFormat::Table),
            ("tab", OutputFormat::Table),
        ] {
            assert_eq!(s.parse::<OutputFormat>().unwrap(), f);
        }
        assert_eq!(
            "yaml".parse::<OutputFormat>().unwrap_err().to_string(),
            "invalid output format: yaml"
        );
    }

    #[test]
    fn color_resolution() {
        assert!(resolve_color_with("ALWAYS", false, true, true));
        assert!(!resolve_color_with("never", true, false, false));
        assert!(resolve_color_with("auto", true, false, false));
        assert!(resolve_color_with("bogus", true, false, false));
        assert!(!resolve_color_with("auto", false, false, false));
        assert!(!resolve_color_with("auto", true, true, false));
        assert!(!resolve_color_with("auto", true, false, true));
    }

    #[test]
    fn cut_off() {
        let v: Vec<String> = (0..10).map(|i| format!("node-{i:02}")).collect();
        assert_eq!(
            join_with_cut_off(&v, ", ", 50),
            "node-00, node-01, node-02, node-03, node-04 (and 5 more)"
        );
        assert_eq!(join_with_cut_off(&v[..1], ", ", 1), "node-00");
        assert_eq!(go_quote("a\"b\n\x01é"), "\"a\\\"b\\n\\x01é\"");
    }
}
