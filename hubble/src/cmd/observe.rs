//! `hubble observe [flows]` (`agent-events` and `debug-events` are in `events`): selector, formatting and filter flags → a Selection, FlowFilters
//! and a Printer; then the flows are read from `--input-file` (a file, or `-` for stdin).

use std::fs::File;
use std::io::{self, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

use super::exit;
use crate::filter::FlowFilters;
use crate::filter::flags::{Filters, add_filter_args, filters_from_matches};
use crate::pipeline::{MAX_LAST, Selection, can_parallelize, observe_parallel, observe_reader};
use crate::printer::{OutputFormat, Printer, PrinterOptions, TimeFormat};
use crate::timefmt::parse_time;

const TIME_LAYOUTS_HELP: &str = "The format is relative (e.g. 3s, 4m, 1h43m, ...) or one of:
  YearMonthDay:           2006-01-02
  YearMonthDayHour:       2006-01-02T15-07:00
  YearMonthDayHourMinute: 2006-01-02T15:04-07:00
  RFC3339:                2006-01-02T15:04:05-07:00
  RFC3339Milli:           2006-01-02T15:04:05.999-07:00
  RFC3339Micro:           2006-01-02T15:04:05.999999-07:00
  RFC3339Nano:            2006-01-02T15:04:05.999999999-07:00
  RFC1123Z:               Mon, 02 Jan 2006 15:04:05 -0700";

const OBSERVE_LONG: &str = "\
Observe flows: what happened to each packet or request, with verdict, endpoints, \
identities and L7 details.

Filters: a flow must match at least one value of each filter flag given, and every \
filter flag given. Put --not in front of a filter flag to exclude the flows it matches \
instead. Without --input-file, flows come from the Hubble server given by --server \
(agent or relay): the last 20 it stores, unless --last, --first, --all, --since, --until \
or --follow say otherwise; filters are applied by the server. Reading from a file \
(--input-file FILE, or - for stdin) takes lines written by `hubble observe -o json` or \
the flow exporter; they are processed in file order.";

const OBSERVE_EXAMPLES: &str = "\
Examples:
  # Follow the drops seen by a local agent
  hubble observe --server unix:///var/run/cilium/hubble.sock -f --verdict DROPPED

  # Save flows, then look at the drops among them
  hubble observe -o jsonpb --last 1000 > flows.json
  hubble observe --input-file flows.json --verdict DROPPED

  # GET or PUT requests to the namespace foo
  hubble observe --input-file - --http-method put --http-method get --to-namespace foo < flows.json

  # Everything except DNS, as JSON for jq
  hubble observe --input-file flows.json --not --protocol dns -o json | jq .flow.verdict

Exit codes:
  0  success
  1  finished, but some input lines were invalid and skipped (each reported on stderr)
  2  error: bad flags or filters, unreadable input, no connection to the server, or an I/O error";

fn bool_flag(name: &'static str, default: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .num_args(0..=1)
        .require_equals(true)
        .default_value(default)
        .default_missing_value("true")
        .value_parser(value_parser!(bool))
        .help(help)
}

fn add_flow_args(cmd: Command) -> Command {
    let cmd = cmd
        .next_help_heading("Selectors")
        .arg(
            Arg::new("all")
                .long("all")
                .action(ArgAction::SetTrue)
                .help("Get all flows (of the input file, or stored in Hubble's buffer)"),
        )
        .arg(
            Arg::new("last")
                .long("last")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help("Get the last N flows (default 20 against a server; all of an input file)"),
        )
        .arg(
            Arg::new("first")
                .long("first")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help("Get the first N flows"),
        )
        .arg(
            Arg::new("follow")
                .short('f')
                .long("follow")
                .action(ArgAction::SetTrue)
                .help("Follow flows output (ignored for input files, which are read to the end)"),
        )
        .arg(
            Arg::new("since")
                .long("since")
                .value_name("TIME")
                .help("Filter flows since a specific date")
                .long_help(format!("Filter flows since a specific date. {TIME_LAYOUTS_HELP}")),
        )
        .arg(
            Arg::new("until")
                .long("until")
                .value_name("TIME")
                .help("Filter flows until a specific date")
                .long_help(format!("Filter flows until a specific date. {TIME_LAYOUTS_HELP}")),
        )
        .next_help_heading("Formatting")
        .args(output_args())
        .arg(
            Arg::new("print-policy-names")
                .long("print-policy-names")
                .action(ArgAction::SetTrue)
                .help("Print policy names in output"),
        )
        .arg(time_format_arg())
        .arg(
            Arg::new("color")
                .long("color")
                .value_name("WHEN")
                .default_value("auto")
                .value_parser(["auto", "always", "never"])
                .help("Colorize compact and dict output: auto (a terminal without NO_COLOR), always, never"),
        )
        .arg(
            Arg::new("numeric")
                .long("numeric")
                .action(ArgAction::SetTrue)
                .help("Display all information in numeric form"),
        )
        .arg(bool_flag(
            "ip-translation",
            "true",
            "Translate IP addresses to logical names such as pod name, FQDN, ... (--ip-translation=false to turn off)",
        ))
        .next_help_heading("Other")
        .arg(
            Arg::new("silent-errors")
                .short('s')
                .long("silent-errors")
                .action(ArgAction::SetTrue)
                .help("Silently ignore errors and warnings"),
        )
        .arg(
            Arg::new("print-raw-filters")
                .long("print-raw-filters")
                .action(ArgAction::SetTrue)
                .help("Print allowlist/denylist filters and exit without reading flows"),
        )
        .arg(
            Arg::new("input-file")
                .long("input-file")
                .value_name("FILE")
                .help("Query flows from this file instead of the server. Use '-' to read from stdin."),
        )
        .arg(
            Arg::new("field-mask")
                .long("field-mask")
                .value_name("FIELDS")
                .value_delimiter(',')
                .action(ArgAction::Append)
                .help("Comma-separated list of flow fields to keep (json outputs only)"),
        )
        .arg(bool_flag(
            "use-default-field-masks",
            "true",
            "Request only visible fields when the output format is compact, table, or dict",
        ))
        .next_help_heading("Filters");
    add_filter_args(cmd)
}

/// `observe`, with its `flows` subcommand taking the same flags.
pub fn command() -> Command {
    let flows = add_flow_args(
        Command::new("flows")
            .about("Observe flows of a Hubble server or file")
            .long_about(OBSERVE_LONG)
            .after_help(OBSERVE_EXAMPLES),
    );
    add_flow_args(
        Command::new("observe")
            .about("Observe flows and events of a Hubble server or file")
            .long_about(OBSERVE_LONG)
            .after_help(OBSERVE_EXAMPLES),
    )
    .subcommand(flows)
    .subcommand(super::events::agent_events_command())
    .subcommand(super::events::debug_events_command())
}

/// Runs `observe` (or `observe flows`).
pub fn run(m: &ArgMatches) -> anyhow::Result<u8> {
    let m = match m.subcommand() {
        Some(("flows", sub)) => sub,
        Some(("agent-events", sub)) => return super::events::run(sub, false),
        Some(("debug-events", sub)) => return super::events::run(sub, true),
        _ => m,
    };
    let Filters {
        whitelist,
        blacklist,
    } = filters_from_matches(m)?;

    let format: OutputFormat = m
        .get_one::<String>("output")
        .expect("default")
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let json = matches!(format, OutputFormat::Json | OutputFormat::JsonPb);
    let follow = m.get_flag("follow");
    if matches!(format, OutputFormat::Table) && follow {
        bail!("table output format is not compatible with follow mode");
    }
    let field_mask: Vec<String> = m
        .get_many::<String>("field-mask")
        .map(|v| v.filter(|s| !s.is_empty()).cloned().collect())
        .unwrap_or_default();
    if !json && !field_mask.is_empty() {
        bail!(
            "{} output format is not compatible with custom field mask",
            m.get_one::<String>("output").expect("default")
        );
    }

    let first = m.get_one::<u64>("first").copied().unwrap_or(0);
    let last = m.get_one::<u64>("last").copied().unwrap_or(0);
    let all = m.get_flag("all");
    if first > 0 && last > 0 {
        bail!("cannot set both --first and --last");
    }
    if first > 0 && all {
        bail!("cannot set both --first and --all");
    }
    if first > 0 && follow {
        bail!("cannot set both --first and --follow");
    }
    if last > 0 && all {
        bail!("cannot set both --last and --all");
    }
    let (since, until) = time_bounds(m, follow)?;
    let number = if first > 0 {
        first
    } else if all {
        u64::MAX
    } else {
        last
    };
    if first == 0 && number != 0 && number != u64::MAX && number > MAX_LAST {
        bail!("--last must be <= 1_000_000, got {number}");
    }

    if m.get_flag("print-raw-filters") {
        print_raw_filters(&whitelist, &blacklist)?;
        return Ok(exit::OK);
    }

    let filters = FlowFilters::compile(&whitelist, &blacklist)?;

    let time_format = time_format(m)?;
    let stdout = io::stdout();
    let color = match m.get_one::<String>("color").map(String::as_str) {
        Some("always") => true,
        Some("never") => false,
        _ => stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    let numeric = m.get_flag("numeric");
    let ip_translation = !numeric && *m.get_one::<bool>("ip-translation").expect("default");
    let opts = PrinterOptions {
        format,
        time_format,
        node_name: m.get_flag("print-node-name"),
        color,
        ip_translation,
        policy_names: m.get_flag("print-policy-names"),
    };
    let sel = Selection {
        number,
        first: first > 0,
        since,
        until,
        field_mask,
    };

    let Some(input) = m.get_one::<String>("input-file") else {
        let req = server_request(m, whitelist, blacklist, &sel, follow, json);
        let server = super::server::ServerOpts::from_matches(m)?;
        let debug = m.try_get_one::<bool>("debug").ok().flatten() == Some(&true);
        return super::server::observe(&server, req, opts, debug);
    };
    let silent = m.get_flag("silent-errors");
    let name = if input == "-" {
        "stdin"
    } else {
        input.as_str()
    };
    let mut report = |e: &crate::source::LineError| {
        if !silent {
            eprintln!("Warning: {name}: {e}");
        }
    };
    let source: Box<dyn io::Read + Send> = if input == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(input).with_context(|| format!("cannot open input file {input}"))?)
    };
    let mut out = io::BufWriter::with_capacity(256 << 10, stdout.lock());
    // HUBBLE_OBSERVE_THREADS (undocumented) pins the worker count, for tests and benches.
    let threads = std::env::var("HUBBLE_OBSERVE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Fields neither printed nor filtered on are not even built while parsing.
    crate::pipeline::skip_unused_fields(&opts, &whitelist, &blacklist);
    let result = if threads > 1 && can_parallelize(&opts, &sel) {
        observe_parallel(
            source,
            &filters,
            &sel,
            &opts,
            &mut out,
            threads,
            &mut report,
        )
    } else {
        let mut printer = Printer::new(out, opts);
        observe_reader(source, &filters, &sel, &mut printer, &mut report)
    };
    let stats = match result {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(exit::OK),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {name}"))),
    };
    if stats.invalid > 0 {
        if !silent {
            eprintln!(
                "Warning: {name}: {} of {} lines were invalid and skipped",
                stats.invalid, stats.lines
            );
        }
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}

/// The GetFlowsRequest `hubble observe` sends to a server (Hubble's selector defaults: plain
/// `observe` asks for the last 20 flows; `--all` for all of them unless a time bound is set).
fn server_request(
    m: &ArgMatches,
    whitelist: Vec<hubble_api::flow::FlowFilter>,
    blacklist: Vec<hubble_api::flow::FlowFilter>,
    sel: &Selection,
    follow: bool,
    json: bool,
) -> hubble_api::observer::GetFlowsRequest {
    let last = m.get_one::<u64>("last").copied().unwrap_or(0);
    let mut number = if sel.first { sel.number } else { last };
    if sel.since.is_none() && sel.until.is_none() && !sel.first {
        if m.get_flag("all") {
            number = u64::MAX;
        } else if last == 0 && !follow {
            number = super::server::DEFAULT_FLOW_COUNT;
        }
    }
    let mut paths = sel.field_mask.clone();
    if !json
        && *m
            .get_one::<bool>("use-default-field-masks")
            .expect("default")
    {
        paths = super::server::DEFAULT_FIELD_MASK
            .iter()
            .map(|p| p.to_string())
            .collect();
    }
    hubble_api::observer::GetFlowsRequest {
        number,
        first: sel.first,
        follow,
        whitelist,
        blacklist,
        since: sel.since.map(timestamp),
        until: sel.until.map(timestamp),
        field_mask: (!paths.is_empty()).then_some(hubble_api::pbjson_types::FieldMask { paths }),
        ..Default::default()
    }
}

/// `--print-raw-filters`: the request's filters as YAML lists of JSON strings.
fn print_raw_filters(
    whitelist: &[hubble_api::flow::FlowFilter],
    blacklist: &[hubble_api::flow::FlowFilter],
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    for (key, list) in [("allowlist", whitelist), ("denylist", blacklist)] {
        if list.is_empty() {
            continue;
        }
        writeln!(out, "{key}:")?;
        for f in list {
            let json = serde_json::to_string(f)?;
            // A YAML single-quoted scalar: quotes are doubled.
            writeln!(out, "    - '{}'", json.replace('\'', "''"))?;
        }
    }
    Ok(())
}

/// `-o/--output` and `--print-node-name`, shared by `observe` and its event subcommands.
pub(crate) fn output_args() -> [Arg; 2] {
    [
        Arg::new("output")
            .short('o')
            .long("output")
            .value_name("FORMAT")
            .default_value("compact")
            .help("Output format: compact, dict, jsonpb, json (alias for jsonpb), table"),
        Arg::new("print-node-name")
            .long("print-node-name")
            .action(ArgAction::SetTrue)
            .help("Print node name in output"),
    ]
}

/// `--time-format`, shared by `observe` and its event subcommands.
pub(crate) fn time_format_arg() -> Arg {
    Arg::new("time-format")
        .long("time-format")
        .value_name("FORMAT")
        .default_value("StampMilli")
        .help(
            "Time format for printing (not for json): StampMilli, YearMonthDay, \
             YearMonthDayHour, YearMonthDayHourMinute, RFC3339, RFC3339Milli, \
             RFC3339Micro, RFC3339Nano, RFC1123Z",
        )
}

/// The parsed `--time-format`.
pub(crate) fn time_format(m: &ArgMatches) -> anyhow::Result<TimeFormat> {
    m.get_one::<String>("time-format")
        .expect("default")
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A point in time, as the CLI parses it.
type Time = chrono::DateTime<chrono::Utc>;

/// `--since` and `--until` (relative to now, or absolute); `--until` is dropped when
/// following, as Hubble does.
pub(crate) fn time_bounds(
    m: &ArgMatches,
    follow: bool,
) -> anyhow::Result<(Option<Time>, Option<Time>)> {
    let now = chrono::Utc::now();
    let since = m
        .get_one::<String>("since")
        .map(|s| parse_time(s, now).context("failed to parse the since time"))
        .transpose()?;
    let until = match (m.get_one::<String>("until"), follow) {
        (Some(s), false) => Some(parse_time(s, now).context("failed to parse the until time")?),
        _ => None,
    };
    Ok((since, until))
}

/// A time as the protobuf Timestamp of a request.
pub(crate) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> hubble_api::pbjson_types::Timestamp {
    hubble_api::pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}
