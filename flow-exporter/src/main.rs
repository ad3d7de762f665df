//! The `flow-exporter` binary: flags, signals (SIGHUP reopens, SIGTERM/SIGINT stop) and exit
//! codes around `flow_exporter::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flow_exporter::config::{ConfigError, parse_field_mask, parse_filters};
use flow_exporter::log;
use flow_exporter::run::{Control, Options, run};
use flow_exporter::writer::{RotateOptions, RotatingFile, Sink};
use hubble::filter::flag_filter_warning;

const ABOUT: &str = "Follow a Hubble server (agent or relay) and export flows to a file.

Each flow that passes the allow and deny lists is written as one JSON document per line, an
ExportEvent in Hubble's exporter file format ({\"flow\":{...},\"node_name\":...,\"time\":...}),
the same as `hubble observe -o jsonpb`; `hubble observe --input-file FILE` reads it back.
The file is rotated when it reaches --max-size-mb: it is renamed to
NAME-<UTC time>.EXT (e.g. events-2025-03-04T09-15-02.123.log, .gz with --compress) next to
it, and the oldest backups beyond --max-backups are removed.

If the connection is lost, the exporter reconnects with backoff and resumes after the last
flow it wrote (no flow is written twice; flows the server no longer holds are reported as a
lost_events line). Started again on an existing file, it resumes after the file's last
line the same way (a last line torn by a crash is cut first); on a new file it exports
flows from now on. The file is created with mode 0600, never through a symbolic link, and
fsynced at each rotation and at exit; rotated files a crash left uncompressed (or a
half-written .gz.tmp) are finished at start. Write errors (full disk, unwritable directory)
are logged and retried; an output that cannot be opened at start is an error.

Signals: SIGHUP closes and reopens the file (for logrotate); SIGTERM or SIGINT writes what
is pending and exits.";

const AFTER: &str = "Examples:
  flow-exporter --server unix:///var/run/cilium/hubble.sock --output /var/run/cilium/hubble/events.log
  flow-exporter --allowlist '{\"verdict\":[\"DROPPED\"]}' --denylist '{\"source_pod\":[\"kube-system/\"]}' --output -
  flow-exporter --field-mask time,source.pod_name,destination.pod_name,verdict --compress
  flow-exporter --server tls://relay:4245 --tls-ca-cert-files ca.crt --tls-client-cert-file client.crt --tls-client-key-file client.key

Exit status:
  0  stopped by SIGTERM or SIGINT after writing everything
  1  runtime failure (the output cannot be opened at start, or pending flows could not be
     written when stopping)
  2  bad usage or configuration (invalid flag, filter, field mask or server address)";

#[derive(Debug, Parser)]
#[command(name = "flow-exporter", version, about = ABOUT, after_help = AFTER)]
struct Args {
    /// Address of a Hubble server: unix:///path/to/socket, host:port or tls://host:port.
    #[arg(long, env = "HUBBLE_SERVER", default_value = hubble::client::DEFAULT_SERVER)]
    server: String,

    /// Connection timeout (Go duration: 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = hubble::timefmt::parse_duration_flag)]
    timeout: Duration,

    /// File to write flows to, or - for stdout (no rotation).
    #[arg(long, short = 'o', default_value = "/var/run/cilium/hubble/events.log")]
    output: String,

    /// Rotate the file when it would grow beyond this size, in megabytes (MiB).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    max_size_mb: u64,

    /// Rotation size in bytes (overrides --max-size-mb; for tests).
    #[arg(long, hide = true)]
    max_size_bytes: Option<u64>,

    /// Number of rotated files to keep; 0 keeps all.
    #[arg(long, default_value_t = 5)]
    max_backups: usize,

    /// Gzip rotated files.
    #[arg(long)]
    compress: bool,

    /// Export only flows matching one of these FlowFilters (JSON objects separated by
    /// commas, e.g. '{"verdict":["DROPPED"]},{"source_pod":["kube-system/"]}').
    #[arg(long, default_value = "")]
    allowlist: String,

    /// Do not export flows matching any of these FlowFilters (same form as --allowlist).
    #[arg(long, default_value = "")]
    denylist: String,

    /// Keep only these flow fields (proto names, comma separated, e.g. time,source.pod_name,verdict).
    #[arg(long, default_value = "")]
    field_mask: String,

    #[command(flatten)]
    tls: hubble::tls::ClientTlsArgs,
}

struct Config {
    opts: Options,
    sink: Sink,
}

fn configure(args: Args) -> Result<Config, ConfigError> {
    let tls = args
        .tls
        .client_tls(&args.server)
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let mut opts = Options::new(args.server);
    opts.tls = tls;
    opts.timeout = args.timeout;
    opts.allowlist = parse_filters("allowlist", &args.allowlist)?;
    opts.denylist = parse_filters("denylist", &args.denylist)?;
    let warnings = [
        flag_filter_warning("allowlist", &args.allowlist),
        flag_filter_warning("denylist", &args.denylist),
    ];
    for w in warnings.iter().flatten() {
        eprintln!("flow-exporter: warning: {w}");
    }
    opts.field_mask = parse_field_mask(&args.field_mask)?;
    let sink = if args.output == "-" {
        Sink::Stdout(std::io::stdout())
    } else {
        let rotate = RotateOptions {
            max_size: args
                .max_size_bytes
                .unwrap_or(args.max_size_mb.saturating_mul(1024 * 1024)),
            max_backups: args.max_backups,
            compress: args.compress,
        };
        Sink::File(RotatingFile::new(PathBuf::from(&args.output), rotate))
    };
    Ok(Config { opts, sink })
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut cfg = match configure(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flow-exporter: {e}");
            return ExitCode::from(2);
        }
    };
    // The output is opened at start: a path that cannot be written (or is a symbolic link)
    // is one line now, and a line torn by an earlier crash is cut before anything resumes.
    if let Sink::File(f) = &mut cfg.sink
        && let Err(e) = f.open_now()
    {
        eprintln!("flow-exporter: {}: {e}", f.path().display());
        return ExitCode::from(1);
    }
    if let Err(e) = hubble::client::parse_target(&cfg.opts.server) {
        eprintln!("flow-exporter: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flow-exporter: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if let Err(e) = spawn_signals(tx) {
            eprintln!("flow-exporter: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
        match run(cfg.opts, cfg.sink, rx).await {
            Ok(stats) => {
                log::info(&format!(
                    "stopped: {} lines written, {} filtered, {} duplicates skipped, {} write errors, {} dropped, {} gaps",
                    stats.written,
                    stats.filtered,
                    stats.duplicates,
                    stats.write_errors,
                    stats.dropped,
                    stats.gaps
                ));
                ExitCode::SUCCESS
            }
            Err(e) => {
                log::error(&e.to_string());
                ExitCode::from(1)
            }
        }
    })
}

fn spawn_signals(tx: tokio::sync::mpsc::Sender<Control>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = hup.recv() => Control::Reopen,
                _ = term.recv() => Control::Stop,
                _ = int.recv() => Control::Stop,
            };
            if tx.send(c).await.is_err() || c == Control::Stop {
                break;
            }
        }
    });
    Ok(())
}
