//! The CLI's live side: the global `--server` / `--timeout` / `--request-timeout` flags,
//! `hubble observe` against a server and `hubble status`, each on a current-thread runtime.

use std::io::{self, Write};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use clap::{Arg, ArgMatches, Command};
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse};

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

/// Responses handed from the connection thread to the printer thread: their bytes end to
/// end in one buffer. Batches go back to the connection thread to be filled again, so the
/// client streams through the same few buffers (no fresh pages, no cross-thread frees)
/// and the connection's receive buffer is released as soon as each response is copied out.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    /// End offset in `data` of each response.
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, msg: &[u8]) {
        self.data.extend_from_slice(msg);
        self.ends.push(self.data.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn messages(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let m = &self.data[start..end];
            start = end;
            m
        })
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

/// Streams GetFlows from the server into the printer until the stream ends or Ctrl-C.
///
/// Two threads share the work: this one runs the connection and hands over the responses
/// still encoded, in batches of whatever has arrived; a printer thread decodes and prints
/// them in order, flushing whenever it has caught up.
pub fn observe(
    opts: &ServerOpts,
    req: GetFlowsRequest,
    popts: PrinterOptions,
    debug: bool,
) -> anyhow::Result<u8> {
    const BATCH: usize = 256;
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
    let printer = std::thread::Builder::new()
        .name("printer".into())
        .spawn(move || print_encoded(rx, back_tx, popts, debug))
        .context("starting the printer thread")?;
    let res: anyhow::Result<()> = rt.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let stream = async {
            let ch = opts.connect().await?;
            let mut flows = client::get_flows_raw(ch, req).await?;
            warn_version(flows.version_warning.as_deref());
            loop {
                let first = match flows.next().await {
                    None => return Ok(()),
                    Some(r) => r?,
                };
                let mut batch = back_rx.try_recv().unwrap_or_else(|_| Batch {
                    data: Vec::with_capacity(256 << 10),
                    ends: Vec::with_capacity(BATCH),
                });
                batch.push(&first);
                drop(first);
                let mut end = false;
                while batch.len() < BATCH {
                    match flows.try_next() {
                        Poll::Pending => break,
                        Poll::Ready(None) => {
                            end = true;
                            break;
                        }
                        Poll::Ready(Some(r)) => batch.push(&r?),
                    }
                }
                // The printer went away (its error is reported below).
                if tx.send(batch).is_err() || end {
                    return Ok(());
                }
            }
        };
        tokio::select! {
            r = stream => r,
            _ = &mut ctrl_c => Ok(()),
        }
    });
    // Ends the runtime (and the connection); the printer drains what it was given.
    drop(rt);
    drop(tx);
    let printed = printer
        .join()
        .map_err(|_| anyhow::anyhow!("the printer thread panicked"))?;
    match res.and(printed) {
        Ok(()) => Ok(exit::OK),
        Err(e) if is_broken_pipe(&e) => Ok(exit::OK),
        Err(e) => Err(e),
    }
}

/// The printer thread of [`observe`]: decodes and prints every batch, in order, and hands
/// the emptied batches back.
fn print_encoded(
    rx: std::sync::mpsc::Receiver<Batch>,
    back: std::sync::mpsc::Sender<Batch>,
    popts: PrinterOptions,
    debug: bool,
) -> anyhow::Result<()> {
    use prost::Message;
    let stdout = io::stdout();
    let out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut printer = Printer::new(out, popts).with_debug(debug);
    let mut batch = match rx.recv() {
        Ok(b) => b,
        Err(_) => return printer.finish().map_err(Into::into),
    };
    // JSON lines of flows and lost events come straight from the protobuf bytes; anything
    // else (node status events, which may go to stderr or nowhere, and whatever the
    // transcoder leaves to prost) is decoded and printed as before: same bytes either way.
    let transcode = matches!(
        printer.options().format,
        OutputFormat::Json | OutputFormat::JsonPb
    );
    // Transcoded lines go into `lines`, handed to the writer in big pieces (which pass
    // through its buffer without a copy) and always before anything the printer writes.
    const LINES: usize = 256 << 10;
    let mut lines: Vec<u8> = Vec::with_capacity(if transcode { LINES + (64 << 10) } else { 0 });
    loop {
        for msg in batch.messages() {
            if transcode {
                use hubble_api::transcode::{ResponseKind, get_flows_response};
                let start = lines.len();
                match get_flows_response(msg, &mut lines) {
                    Ok(ResponseKind::Flow | ResponseKind::LostEvents) => {
                        lines.push(b'\n');
                        if lines.len() >= LINES {
                            printer.get_mut().write_all(&lines)?;
                            lines.clear();
                        }
                        continue;
                    }
                    _ => {
                        lines.truncate(start);
                        printer.get_mut().write_all(&lines)?;
                        lines.clear();
                    }
                }
            }
            let resp = GetFlowsResponse::decode(msg)
                .map_err(|e| anyhow::anyhow!("invalid response from the server: {e}"))?;
            printer.write_response(&resp)?;
        }
        batch.clear();
        // The connection thread may be gone; the batch is then simply dropped.
        let _ = back.send(batch);
        batch = match rx.try_recv() {
            Ok(b) => b,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                // Caught up with the connection: show what we have.
                printer.get_mut().write_all(&lines)?;
                lines.clear();
                printer.get_mut().flush()?;
                match rx.recv() {
                    Ok(b) => b,
                    Err(_) => break,
                }
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        };
    }
    printer.get_mut().write_all(&lines)?;
    printer.finish().map_err(Into::into)
}

pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
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
        // Only agents with a kvstore answer for it; Go's hubble has no such line.
        if format == OutputFormat::Compact
            && let Some(ok) = client::kvstore_health(ch.clone(), opts.request_timeout).await
        {
            println!(
                "KVStore: {}",
                if ok {
                    "Ok"
                } else {
                    "Failure (etcd unreachable)"
                }
            );
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
