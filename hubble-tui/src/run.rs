//! The `hubble-tui` command: flags, the terminal (raw mode, alternate screen, restored on exit,
//! panic and signals) and the one loop that takes keys and flows and draws at most 30 frames
//! a second. The source runs on its own thread or task; drawing never waits for it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::time::Duration;

use anyhow::Context;
use clap::{Arg, ArgMatches, Command, value_parser};
use crossterm::event::{Event, KeyEventKind};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use hubble::cmd::server::{ServerOpts, add_server_args};
use hubble::filter::flags::add_filter_args;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use crate::app::{App, SourceStatus, parse_filter_flags};
use crate::source::{self, ServerSource, SourceEvent};

/// Exit codes.
pub mod exit {
    /// Quit by the user (q, Ctrl-C, SIGTERM).
    pub const OK: u8 = 0;
    /// Bad flags or filter, unreadable input file, or no terminal.
    pub const ERROR: u8 = 2;
}

const ABOUT: &str = "Hubble flows in the terminal: a live flow table with filters and \
details, a service map and live aggregates";

const LONG_ABOUT: &str = "\
hubble-tui shows the flows of a Hubble server (agent or relay) as they happen, or of a flow \
file: a flow table that follows new flows (and pauses when you scroll), a filter bar that \
takes `hubble observe` filter flags, every field of a flow, a service map of the workloads \
and reserved identities (world, host, ...) with the traffic between them, and live \
aggregates (top talkers, drop reasons, HTTP status and latency per service, DNS errors) \
over the last minute.

Flows come from --server (followed; reconnects with backoff, shown on screen) unless \
--input-file is given. Filter flags given on the command line are the initial filter; \
they are applied in the TUI (press / to change them), the server sends every flow.";

const AFTER_HELP: &str = "\
Examples:
  # Follow a local agent
  hubble-tui --server unix:///var/run/cilium/hubble.sock

  # Look at the drops to one namespace in a saved file
  hubble observe -o json --all > flows.json
  hubble-tui --input-file flows.json --verdict DROPPED --to-namespace shop

Keys: Tab switches views, / edits the filter, Enter drills in, Esc goes back, ? shows all keys, q quits.
The environment variable NO_COLOR (non-empty) turns colours off.

Exit codes:
  0  quit by the user
  2  error: bad flags or filter, unreadable input file, or no terminal";

/// The command line.
pub fn command() -> Command {
    let cmd = Command::new("hubble-tui")
        .about(ABOUT)
        .long_about(LONG_ABOUT)
        .after_help(AFTER_HELP)
        .version(env!("CARGO_PKG_VERSION"))
        .arg(
            Arg::new("input-file")
                .long("input-file")
                .value_name("FILE")
                .help("Read flows from FILE (JSON lines of `hubble observe -o json`; - for stdin) instead of a server"),
        )
        .arg(
            Arg::new("history")
                .long("history")
                .value_name("N")
                .default_value("65536")
                .value_parser(value_parser!(u64).range(1..=10_000_000))
                .help("Flows kept in memory (older ones are dropped; memory is bounded by this)"),
        )
        .arg(
            Arg::new("last")
                .long("last")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help("Flows the server is asked for before following (default: --history)"),
        )
        .arg(
            Arg::new("color")
                .long("color")
                .value_name("WHEN")
                .default_value("auto")
                .value_parser(["auto", "always", "never"])
                .help("Colours: auto (unless NO_COLOR is set), always or never"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .env("HUBBLE_CONFIG")
                .help("hubble's config file for the server and TLS settings (default $XDG_CONFIG_HOME/hubble/config.yaml; flags and HUBBLE_* variables win)"),
        );
    let cmd = add_server_args(cmd.next_help_heading("Server"));
    add_filter_args(cmd.next_help_heading("Filters"))
}

/// The filter flags of an argument list, as text for the filter bar: every argument except
/// the TUI's own flags (server, TLS, history, ...) and their values.
fn filter_text(args: &[OsString]) -> String {
    let filter_ids: Vec<String> = add_filter_args(Command::new("f"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let cmd = command();
    let own: Vec<(String, bool)> = cmd
        .get_arguments()
        .filter(|a| !filter_ids.iter().any(|id| id == a.get_id().as_str()))
        .filter_map(|a| {
            let takes = a.get_action().takes_values();
            a.get_long().map(|l| (format!("--{l}"), takes))
        })
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut skip = false;
    for a in args.iter().skip(1) {
        let a = a.to_string_lossy();
        if skip {
            skip = false;
            continue;
        }
        if let Some((_, takes)) = own.iter().find(|(l, _)| *l == a) {
            skip = *takes;
            continue;
        }
        if own.iter().any(|(l, _)| a.starts_with(&format!("{l}="))) {
            continue;
        }
        if a.contains(char::is_whitespace) || a.is_empty() {
            out.push(format!("{a:?}"));
        } else {
            out.push(a.into_owned());
        }
    }
    out.join(" ")
}

/// Runs the TUI with `args`; returns the exit code.
pub fn main_with_args(args: Vec<OsString>) -> u8 {
    // The hubble CLI's config file gives the server and TLS flags their defaults.
    let file = match hubble::config::FileConfig::load(&hubble::config::path_from_args(&args)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("Error: {e}");
            return exit::ERROR;
        }
    };
    let m = match hubble::config::apply_defaults(command(), &file).try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            };
        }
    };
    match run(&m, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            exit::ERROR
        }
    }
}

fn run(m: &ArgMatches, args: &[OsString]) -> anyhow::Result<u8> {
    let text = filter_text(args);
    let filters = parse_filter_flags(&text).map_err(|e| anyhow::anyhow!("invalid filter: {e}"))?;
    let history = *m.get_one::<u64>("history").expect("default") as usize;
    let color = match m.get_one::<String>("color").map(String::as_str) {
        Some("always") => true,
        Some("never") => false,
        _ => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    if !io::stdout().is_terminal() {
        anyhow::bail!("stdout is not a terminal (hubble-tui draws a full-screen interface)");
    }
    let mut app = App::new(history, color);
    app.set_filters(filters, text);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let (src_tx, src_rx) = mpsc::channel::<SourceEvent>(64);
    match m.get_one::<String>("input-file") {
        Some(path) => {
            let input: Box<dyn io::Read + Send> = if path == "-" {
                Box::new(io::stdin())
            } else {
                Box::new(
                    File::open(path).with_context(|| format!("cannot open input file {path}"))?,
                )
            };
            let name = path.clone();
            std::thread::Builder::new()
                .name("file-source".into())
                .spawn(move || source::read_file(name, input, src_tx))
                .context("starting the file reader")?;
        }
        None => {
            let opts = ServerOpts::from_matches(m)?;
            let src = ServerSource {
                opts,
                backfill: m.get_one::<u64>("last").copied().unwrap_or(history as u64),
                whitelist: Vec::new(),
                blacklist: Vec::new(),
            };
            rt.spawn(source::follow_server(src, src_tx));
        }
    }
    let res = rt.block_on(ui_loop(&mut app, src_rx));
    rt.shutdown_timeout(Duration::from_millis(100));
    res.map(|()| exit::OK)
}

/// Puts the terminal back: leaves raw mode and the alternate screen, shows the cursor.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

async fn ui_loop(app: &mut App, mut src_rx: mpsc::Receiver<SourceEvent>) -> anyhow::Result<()> {
    // The terminal is restored on every way out: return, error, panic (hook) and signals.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    enable_raw_mode().context("cannot put the terminal in raw mode")?;
    let _guard = TerminalGuard;
    execute!(io::stdout(), EnterAlternateScreen, crossterm::cursor::Hide)
        .context("cannot switch to the alternate screen")?;
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    term.clear()?;

    // Keys are read on their own thread (crossterm's read blocks).
    let (key_tx, mut key_rx) = mpsc::unbounded_channel::<Event>();
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            while let Ok(ev) = crossterm::event::read() {
                if key_tx.send(ev).is_err() {
                    break;
                }
            }
        })
        .context("starting the input thread")?;

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut src_open = true;
    let mut dirty = true;
    loop {
        tokio::select! {
            biased;
            ev = key_rx.recv() => {
                match ev {
                    Some(Event::Key(k)) if k.kind != KeyEventKind::Release => app.on_key(k),
                    Some(_) => {}
                    None => app.quit = true,
                }
                if app.quit {
                    break;
                }
                term.draw(|f| crate::ui::draw(f, app))?;
                dirty = false;
            }
            _ = tick.tick() => {
                if dirty {
                    term.draw(|f| crate::ui::draw(f, app))?;
                    dirty = false;
                }
            }
            ev = src_rx.recv(), if src_open => {
                match ev {
                    Some(ev) => {
                        apply(app, ev);
                        // Take what else is queued, within a budget so keys stay responsive.
                        for _ in 0..16 {
                            match src_rx.try_recv() {
                                Ok(ev) => apply(app, ev),
                                Err(_) => break,
                            }
                        }
                    }
                    None => src_open = false,
                }
                dirty = true;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    Ok(())
}

/// Applies one source event to the state.
pub fn apply(app: &mut App, ev: SourceEvent) {
    match ev {
        SourceEvent::Flows(flows) => {
            for f in flows {
                app.ingest(Box::new(f));
            }
        }
        SourceEvent::Lost(n) => app.lost += n,
        SourceEvent::Invalid(e) => {
            app.invalid += 1;
            app.last_warning = Some(e);
        }
        SourceEvent::Status(s) => {
            if matches!(s, SourceStatus::Connected { .. }) {
                app.last_warning = None;
            }
            app.status = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_text_keeps_only_filter_flags() {
        let args: Vec<OsString> = [
            "hubble-tui",
            "--server",
            "localhost:1",
            "--tls",
            "--tls-server-name",
            "relay.example",
            "--verdict",
            "DROPPED",
            "--history=10",
            "--http-path",
            "/a b",
            "--to-namespace",
            "shop",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            filter_text(&args),
            r#"--verdict DROPPED --http-path "/a b" --to-namespace shop"#
        );
        assert!(command().try_get_matches_from(&args).is_ok());
    }

    #[test]
    fn the_config_file_gives_the_server_unless_a_flag_does() {
        let p = std::env::temp_dir().join(format!("hubble-tui-config-{}.yaml", std::process::id()));
        std::fs::write(
            &p,
            "server: unix:///tmp/from-config.sock\ntls-server-name: relay.example\n",
        )
        .unwrap();
        let file = hubble::config::FileConfig::load(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        let cmd = || hubble::config::apply_defaults(command(), &file);
        let m = cmd().get_matches_from(["hubble-tui"]);
        assert_eq!(
            m.get_one::<String>("server").unwrap(),
            "unix:///tmp/from-config.sock"
        );
        assert_eq!(
            m.get_one::<String>("tls_server_name").unwrap(),
            "relay.example"
        );
        let m = cmd().get_matches_from(["hubble-tui", "--server", "x:1"]);
        assert_eq!(m.get_one::<String>("server").unwrap(), "x:1");
    }

    #[test]
    fn history_default_is_the_model_default() {
        let m = command().get_matches_from(["hubble-tui"]);
        assert_eq!(
            *m.get_one::<u64>("history").unwrap(),
            crate::model::DEFAULT_HISTORY as u64
        );
    }

    #[test]
    fn help_and_bad_flags() {
        command().debug_assert();
        assert_eq!(
            main_with_args(vec!["hubble-tui".into(), "--bogus".into()]),
            exit::ERROR
        );
        assert_eq!(
            main_with_args(
                [
                    "hubble-tui",
                    "--input-file",
                    "/nonexistent",
                    "--verdict",
                    "NOPE"
                ]
                .iter()
                .map(OsString::from)
                .collect()
            ),
            exit::ERROR
        );
    }
}
