//! `hubble observe agent-events` and `hubble observe debug-events`: the selector and
//! formatting flags → a GetAgentEvents / GetDebugEvents request, streamed to the printer.

use std::io::{self, Write};

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

use super::exit;
use super::observe::{output_args, time_bounds, time_format, time_format_arg, timestamp};
use super::server::{DEFAULT_FLOW_COUNT, ServerOpts, is_broken_pipe, runtime, warn_version};
use crate::printer::{OutputFormat, Printer, PrinterOptions};

const AGENT_LONG: &str = "\
Observe Cilium agent events: what the agent did (started, endpoints created or deleted, \
ipcache entries upserted, policies updated, ...), as recorded by the Hubble server given by \
--server. Without selectors, the last 20 stored events; --follow waits for new ones.";

const DEBUG_LONG: &str = "\
Observe Cilium datapath debug events of the Hubble server given by --server (Cilium emits \
them in datapath debug mode; hubble-agent's datapath emits none).";

const EXAMPLES: &str = "\
Examples:
  # What the local agent did, then follow it
  hubble observe agent-events --server unix:///var/run/cilium/hubble.sock --all
  hubble observe agent-events --server unix:///var/run/cilium/hubble.sock -f

  # Agent events of the last 10 minutes as JSON
  hubble observe agent-events --since 10m -o json

Exit codes:
  0  success
  2  error: bad flags, no connection to the server, a refused request, or an I/O error";

fn event_args(cmd: Command, what: &'static str) -> Command {
    cmd.next_help_heading("Selectors")
        .arg(
            Arg::new("all")
                .long("all")
                .action(ArgAction::SetTrue)
                .help(format!("Get all {what} stored in Hubble's buffer")),
        )
        .arg(
            Arg::new("last")
                .long("last")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help(format!("Get the last N {what} (default 20)")),
        )
        .arg(
            Arg::new("first")
                .long("first")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help(format!("Get the first N {what} stored")),
        )
        .arg(
            Arg::new("follow")
                .short('f')
                .long("follow")
                .action(ArgAction::SetTrue)
                .help(format!("Follow {what} output")),
        )
        .arg(
            Arg::new("since")
                .long("since")
                .value_name("TIME")
                .help(format!(
                    "Get {what} since a specific date: relative (e.g. 3s, 4m, 1h43m) or RFC3339"
                )),
        )
        .arg(
            Arg::new("until")
                .long("until")
                .value_name("TIME")
                .help(format!(
                    "Get {what} until a specific date: relative (e.g. 3s, 4m, 1h43m) or RFC3339"
                )),
        )
        .next_help_heading("Formatting")
        .args(output_args())
        .arg(time_format_arg())
}

pub fn agent_events_command() -> Command {
    event_args(
        Command::new("agent-events")
            .about("Observe Cilium agent events")
            .long_about(AGENT_LONG)
            .after_help(EXAMPLES),
        "agent events",
    )
}

pub fn debug_events_command() -> Command {
    event_args(
        Command::new("debug-events")
            .about("Observe Cilium debug events")
            .long_about(DEBUG_LONG)
            .after_help(EXAMPLES),
        "debug events",
    )
}

/// The fields both requests share, as Hubble's CLI fills them: `--until` only without
/// `--follow`; without time bounds the last 20 events unless `--last`, `--all` (or, unlike
/// Go Hubble, which ignores it here, `--first`) says otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSelection {
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<hubble_api::pbjson_types::Timestamp>,
    pub until: Option<hubble_api::pbjson_types::Timestamp>,
}

pub fn selection(m: &ArgMatches) -> anyhow::Result<EventSelection> {
    let first = m.get_one::<u64>("first").copied().unwrap_or(0);
    let mut last = m.get_one::<u64>("last").copied().unwrap_or(0);
    let all = m.get_flag("all");
    let follow = m.get_flag("follow");
    if first > 0 && (last > 0 || all) {
        anyhow::bail!("cannot set both --first and --last or --all");
    }
    if first > 0 && follow {
        anyhow::bail!("cannot set both --first and --follow");
    }
    let (since, until) = time_bounds(m, follow)?;
    let (since, until) = (since.map(timestamp), until.map(timestamp));
    if first > 0 {
        return Ok(EventSelection {
            number: first,
            first: true,
            follow,
            since,
            until,
        });
    }
    if since.is_none() && until.is_none() {
        if all {
            last = u64::MAX;
        } else if last == 0 {
            last = DEFAULT_FLOW_COUNT;
        }
    }
    Ok(EventSelection {
        number: last,
        first: false,
        follow,
        since,
        until,
    })
}

fn printer_options(m: &ArgMatches, follow: bool) -> anyhow::Result<PrinterOptions> {
    let format: OutputFormat = m
        .get_one::<String>("output")
        .expect("default")
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if format == OutputFormat::Table && follow {
        anyhow::bail!("table output format is not compatible with follow mode");
    }
    Ok(PrinterOptions {
        format,
        time_format: time_format(m)?,
        node_name: m.get_flag("print-node-name"),
        ..PrinterOptions::default()
    })
}

/// Runs `observe agent-events` (`debug = false`) or `observe debug-events`.
pub fn run(m: &ArgMatches, debug_events: bool) -> anyhow::Result<u8> {
    let sel = selection(m)?;
    let popts = printer_options(m, sel.follow)?;
    let server = ServerOpts::from_matches(m)?;
    let debug = m.try_get_one::<bool>("debug").ok().flatten() == Some(&true);
    let stdout = io::stdout();
    let mut printer = Printer::new(io::BufWriter::new(stdout.lock()), popts).with_debug(debug);
    let rt = runtime()?;
    let res: anyhow::Result<()> = rt.block_on(async {
        let stream = async {
            let ch = server.connect().await?;
            if debug_events {
                let req = hubble_api::observer::GetDebugEventsRequest {
                    number: sel.number,
                    first: sel.first,
                    follow: sel.follow,
                    since: sel.since,
                    until: sel.until,
                };
                let mut s = crate::client::get_debug_events(ch, req).await?;
                warn_version(s.version_warning.as_deref());
                while let Some(r) = s.next().await {
                    printer.write_debug_event(&r?)?;
                    printer.get_mut().flush()?;
                }
            } else {
                let req = hubble_api::observer::GetAgentEventsRequest {
                    number: sel.number,
                    first: sel.first,
                    follow: sel.follow,
                    since: sel.since,
                    until: sel.until,
                };
                let mut s = crate::client::get_agent_events(ch, req).await?;
                warn_version(s.version_warning.as_deref());
                while let Some(r) = s.next().await {
                    printer.write_agent_event(&r?)?;
                    printer.get_mut().flush()?;
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            r = stream => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    drop(rt);
    match res.and_then(|()| printer.finish().map_err(Into::into)) {
        Ok(()) => Ok(exit::OK),
        Err(e) if is_broken_pipe(&e) => Ok(exit::OK),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(args: &[&str]) -> anyhow::Result<EventSelection> {
        let m = agent_events_command()
            .try_get_matches_from(std::iter::once("agent-events").chain(args.iter().copied()))?;
        selection(&m)
    }

    #[test]
    fn requests_follow_hubbles_cli() {
        let s = sel(&[]).unwrap();
        assert_eq!((s.number, s.first, s.follow), (20, false, false));
        let s = sel(&["--last", "3"]).unwrap();
        assert_eq!((s.number, s.first), (3, false));
        let s = sel(&["--all"]).unwrap();
        assert_eq!(s.number, u64::MAX);
        let s = sel(&["--first", "2"]).unwrap();
        assert_eq!((s.number, s.first), (2, true));
        // Hubble's CLI asks for the last 20 and then follows.
        let s = sel(&["-f"]).unwrap();
        assert_eq!((s.number, s.follow), (20, true));
        // Time bounds: no default count; --until is dropped with --follow.
        let s = sel(&["--since", "2024-01-02T03:04:05Z", "--until", "1m"]).unwrap();
        assert_eq!(s.number, 0);
        assert_eq!(s.since.unwrap().seconds, 1_704_164_645);
        assert!(s.until.is_some());
        let s = sel(&["--since", "5m", "--until", "1m", "-f"]).unwrap();
        assert!(s.since.is_some() && s.until.is_none());
    }

    #[test]
    fn bad_selections_are_refused() {
        assert!(sel(&["--first", "2", "--follow"]).is_err());
        assert!(sel(&["--first", "2", "--last", "3"]).is_err());
        assert!(sel(&["--since", "yesterday-ish"]).is_err());
        let m = agent_events_command()
            .try_get_matches_from(["agent-events", "-o", "table", "-f"])
            .unwrap();
        assert!(printer_options(&m, true).is_err());
        let m = agent_events_command()
            .try_get_matches_from(["agent-events", "-o", "yaml"])
            .unwrap();
        assert!(printer_options(&m, false).is_err());
    }
}
