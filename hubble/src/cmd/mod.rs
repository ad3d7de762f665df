//! The `hubble` command line: clap definitions, dispatch and exit codes. Each subcommand
//! lives in its own module and turns flags into calls on the library.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};

pub mod config;
pub mod events;
pub mod list;
pub mod observe;
pub mod reflect;
pub mod server;
pub mod watch;

/// Exit codes, documented in `hubble --help`.
pub mod exit {
    /// Success (also: the reader of our output went away, e.g. `| head`).
    pub const OK: u8 = 0;
    /// Done, but some input lines were invalid and skipped (each reported on stderr).
    pub const PARTIAL: u8 = 1;
    /// Nothing (more) could be done: bad flags, invalid filter, unreadable input, no
    /// connection to the server, I/O error.
    pub const ERROR: u8 = 2;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  finished, but some input lines were invalid and skipped (each reported on stderr)
  2  error: bad flags or filters, unreadable input, no connection to the server, or an I/O error";

/// Version string shown by `hubble version` and `--version`.
pub fn version_string() -> String {
    format!(
        "hubble v{} compiled with rust on {}/{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        go_arch()
    )
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The root command with every subcommand.
pub fn command() -> Command {
    let root = Command::new("hubble")
        .about("CLI for Hubble: observe network flows of Kubernetes nodes, live or from files")
        .long_about(
            "Hubble is a network observability tool. This CLI reads flows from a Hubble server \
             (agent or relay) or from files written by `hubble observe -o json`, filters them and \
             prints them in compact, dict, table or JSON form.",
        )
        .after_help(EXIT_CODES_HELP)
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("config")
                .long("config")
                .global(true)
                .value_name("FILE")
                .env("HUBBLE_CONFIG")
                .help("Optional config file (default $XDG_CONFIG_HOME/hubble/config.yaml)"),
        )
        .arg(
            Arg::new("debug")
                .short('D')
                .long("debug")
                .global(true)
                .action(ArgAction::SetTrue)
                .env("HUBBLE_DEBUG")
                .help("Enable debug messages"),
        )
        .subcommand(observe::command())
        .subcommand(server::status_command())
        .subcommand(list::command())
        .subcommand(config::command())
        .subcommand(watch::command())
        .subcommand(reflect::command())
        .subcommand(
            Command::new("completion")
                .about("Generate the autocompletion script for the specified shell")
                .long_about(
                    "Generate the autocompletion script for hubble for the specified shell.\n\n\
                     Bash:   source <(hubble completion bash)\n\
                     Zsh:    hubble completion zsh > \"${fpath[1]}/_hubble\"\n\
                     Fish:   hubble completion fish | source\n\
                     PowerShell: hubble completion powershell | Out-String | Invoke-Expression",
                )
                .arg(Arg::new("shell").required(true).value_parser([
                    "bash",
                    "zsh",
                    "fish",
                    "powershell",
                ])),
        )
        .subcommand(Command::new("version").about("Display detailed version information"));
    server::add_server_args(root)
}

/// [`command`] with the config file's values as the defaults of the global flags (flag >
/// environment > file > default).
pub fn command_with_config(file: &crate::config::FileConfig) -> Command {
    crate::config::apply_defaults(command(), file)
}

/// Runs the CLI with `args` and returns the process exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let config_path = crate::config::path_from_args(&args);
    let file = match crate::config::FileConfig::load(&config_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let mut cmd = command_with_config(&file);
    let matches = match cmd.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            });
        }
    };
    let result = match matches.subcommand() {
        Some(("observe", m)) => observe::run(m),
        Some(("status", m)) => server::status(m),
        Some(("list", m)) => list::run(m),
        Some(("config", m)) => config::run(m, config_path),
        Some(("watch", m)) => watch::run(m),
        Some(("reflect", m)) => reflect::run(m),
        Some(("completion", m)) => {
            let shell = match m.get_one::<String>("shell").map(String::as_str) {
                Some("bash") => clap_complete::Shell::Bash,
                Some("zsh") => clap_complete::Shell::Zsh,
                Some("fish") => clap_complete::Shell::Fish,
                _ => clap_complete::Shell::PowerShell,
            };
            clap_complete::generate(shell, &mut cmd, "hubble", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Some(("version", _)) => {
            println!("{}", version_string());
            Ok(exit::OK)
        }
        _ => unreachable!("clap requires a subcommand"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}
