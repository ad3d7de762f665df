//! The CLI's live side: the global `--server` / `--timeout` / `--request-timeout` flags,
//! `hubble observe` against a server and `hubble status`, each on a current-thread runtime.

use std::io::{self, Write};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use clap::{Arg, ArgMatches, Command};
use hubble_api::observer::GetFlowsRequest;

use super::exit;
use crate::client::{self, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SERVER, DEFAULT_TIMEOUT};
use crate::printer::{OutputFormat, Printer, PrinterOptions};

/// Flows a plain `hubble observe` asks for.
pub const DEFAULT_FLOW_COUNT: u64 = 20;

/// Fields the server keeps when the output shows only them (Hubble's default field mask for
/// compact, dict and table output).
pub const DEFAULT_FIELD_MASK: &[&str] = &[
    "time",
    "verdict",
    "ethernet",
    "IP",
    "l4",
    "source.identity",
    "source.namespace",
    "source.pod_name",
    "destination.identity",
    "destination.namespace",
    "destination.pod_name",
    "Type",
    "node_name",
    "l7",
    "event_type",
    "source_service",
    "destination_service",
    "is_reply",
    "Summary",
    "ip_trace_id",
];

/// The root-level server flags (global, so they work before or after the subcommand).
pub fn add_server_args(cmd: Command) -> Command {
    use clap::Args;
    let cmd = cmd.arg(
        Arg::new("server")
            .long("server")
            .global(true)
            .value_name("ADDR")
            .env("HUBBLE_SERVER")
            .default_value(DEFAULT_SERVER)
            .help("Address of a Hubble server: host:port or unix:///path/to/hubble.sock"),
    )
    .arg(
        Arg::new("timeout")
            .long("timeout")
            .global(true)
            .value_name("DURATION")
            .env("HUBBLE_TIMEOUT")
            .default_value("5s")
            .help("Hubble server dialing timeout"),
    )
    .arg(
        Arg::new("request-timeout")
            .long("request-timeout")
            .global(true)
            .value_name("DURATION")
            .env("HUBBLE_REQUEST_TIMEOUT")
            .default_value("12s")
            .help("Unary Request timeout. Only applies to non-streaming RPCs (ServerStatusRequest, ListNodes, ListNamespaces)"),
    );
    crate::tls::ClientTlsArgs::augment_args(cmd)
}

/// The server connection settings of a command line.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    pub server: String,
    pub timeout: Duration,
    pub request_timeout: Duration,
    /// TLS settings when TLS is on for `server`.
    pub tls: Option<crate::tls::ClientTls>,
}

impl ServerOpts {
    pub fn from_matches(m: &ArgMatches) -> anyhow::Result<Self> {
        let dur = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            let Some(s) = m.try_get_one::<String>(name).ok().flatten() else {
                return Ok(default);
            };
            let ns = crate::timefmt::parse_go_duration(s)
                .filter(|n| *n > 0)
                .with_context(|| format!("invalid --{name} {s:?}: expected a duration like 5s"))?;
            Ok(Duration::from_nanos(ns.min(u64::MAX as i128) as u64))
        };
        use clap::FromArgMatches;
        let server = m
            .try_get_one::<String>("server")
            .ok()
            .flatten()
            .cloned()
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let tls = crate::tls::ClientTlsArgs::from_arg_matches(m)?.client_tls(&server)?;
        Ok(ServerOpts {
            server,
            timeout: dur("timeout", DEFAULT_TIMEOUT)?,
            request_timeout: dur("request-timeout", DEFAULT_REQUEST_TIMEOUT)?,
            tls,
        })
    }
}

impl ServerOpts {
    /// Connects to the server, over TLS when it is on.
    pub async fn connect(&self) -> Result<tonic::transport::Channel, client::ClientError> {
        client::connect_tls(&self.server, self.timeout, self.tls.as_ref()).await
    }
}

/// Prints Hubble's version-skew warning on stderr.
pub(crate) fn warn_version(w: Option<&str>) {
    if let Some(w) = w {
        eprintln!("Warning: {w}");
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

/// Streams GetFlows from the server into the printer until the stream ends or Ctrl-C.
pub fn observe(
    opts: &ServerOpts,
    req: GetFlowsRequest,
    popts: PrinterOptions,
    debug: bool,
) -> anyhow::Result<u8> {
    let rt = runtime()?;
    let stdout = io::stdout();
    let out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut printer = Printer::new(out, popts).with_debug(debug);
    let res: anyhow::Result<()> = rt.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let stream = async {
            let ch = opts.connect().await?;
            let mut flows = client::get_flows(ch, req).await?;
            warn_version(flows.version_warning.as_deref());
            loop {
                // Print what has arrived; flush only when the server has nothing more ready.
                let item = match flows.try_next() {
                    Poll::Ready(item) => item,
                    Poll::Pending => {
                        printer.get_mut().flush()?;
                        flows.next().await
                    }
                };
                match item {
                    None => return Ok(()),
                    Some(Ok(resp)) => printer.write_response(&resp)?,
                    Some(Err(e)) => return Err(anyhow::Error::new(e)),
                }
            }
        };
        tokio::select! {
            r = stream => r,
            _ = &mut ctrl_c => Ok(()),
        }
    });
    // Ends the runtime (and the connection) before the last flush.
    drop(rt);
    let fin = printer.finish();
    match res.and(fin.map_err(anyhow::Error::from)) {
        Ok(()) => Ok(exit::OK),
        Err(e) if is_broken_pipe(&e) => Ok(exit::OK),
        Err(e) => Err(e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// `hubble status`.
pub fn status_command() -> Command {
    Command::new("status")
        .about("Display status of Hubble server")
        .long_about(
            "Displays the status of the Hubble server. This is intended as a basic connectivity \
             health check.",
        )
        .arg(
            Arg::new("output")
                .short('o')
                .long("output")
                .value_name("FORMAT")
                .default_value("compact")
                .help("Specify the output format, one of:\n compact:  Compact output\n dict:     Status is shown as KEY:VALUE pair\n json:     JSON encoding\n table:    Tab-aligned columns"),
        )
}

/// Runs `hubble status`.
pub fn status(m: &ArgMatches) -> anyhow::Result<u8> {
    let opts = ServerOpts::from_matches(m)?;
    let output = m.get_one::<String>("output").expect("default").as_str();
    let format = match output {
        "compact" => OutputFormat::Compact,
        "dict" => OutputFormat::Dict,
        "json" | "JSON" | "jsonpb" => OutputFormat::JsonPb,
        "tab" | "table" => OutputFormat::Table,
        other => anyhow::bail!("invalid output format: {other}"),
    };
    let rt = runtime()?;
    let st = rt.block_on(async {
        let ch = opts.connect().await?;
        let health = client::health_check(ch.clone(), opts.request_timeout)
            .await
            .context("failed getting status")?;
        if format == OutputFormat::Compact {
            println!(
                "Healthcheck (via {}): {}",
                opts.server,
                health.as_deref().unwrap_or("Ok")
            );
        }
        if health.is_some() {
            anyhow::bail!("not healthy");
        }
        client::server_status(ch, opts.request_timeout)
            .await
            .context("failed to get hubble server status")
    })?;
    let stdout = io::stdout();
    let mut p = Printer::new(
        stdout.lock(),
        PrinterOptions {
            format,
            ..PrinterOptions::default()
        },
    );
    p.write_server_status(&st)?;
    p.finish()?;
    Ok(exit::OK)
}
