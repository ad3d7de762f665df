//! The exporter's connection loop: follow GetFlows on an agent or relay, batch lines into the
//! sink, reconnect with backoff and resume from the last written flow, obey reopen / stop.

use std::time::{Duration, Instant};

use hubble::client::{self, ClientError};
use hubble::filter::FlowFilters;
use hubble_api::flow::FlowFilter;
use hubble_api::observer::GetFlowsRequest;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::pbjson_types::{FieldMask, Timestamp};
use tokio::sync::mpsc;

use crate::export::{Exporter, Stats};
use crate::log;
use crate::writer::Sink;

/// Responses taken from the stream before the batch is written.
const BATCH: usize = 4096;
/// Bytes of pending lines that end a batch early.
const BATCH_BYTES: usize = 1 << 20;
/// Bytes read from the end of an existing output file to find where to resume.
const TAIL: u64 = 1 << 20;
/// How often failed writes are retried while the stream is idle.
const RETRY_WRITE: Duration = Duration::from_secs(1);
/// Repeated errors of the same kind are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// What the signal handlers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGHUP: close and reopen the output file.
    Reopen,
    /// SIGTERM / SIGINT: write what is pending and stop.
    Stop,
}

/// Where to read and what to keep.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--server`: `unix:///path` or `host:port`.
    pub server: String,
    /// Connect timeout.
    pub timeout: Duration,
    pub allowlist: Vec<FlowFilter>,
    pub denylist: Vec<FlowFilter>,
    pub field_mask: Vec<String>,
    /// TLS to the server (`--tls*` flags or a `tls://` address); `None`: plaintext.
    pub tls: Option<hubble::tls::ClientTls>,
    /// First and largest wait between reconnects.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Options {
    /// Options with Hubble's defaults for everything but the server.
    pub fn new(server: impl Into<String>) -> Self {
        Options {
            server: server.into(),
            timeout: client::DEFAULT_TIMEOUT,
            allowlist: Vec::new(),
            denylist: Vec::new(),
            field_mask: Vec::new(),
            tls: None,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl Options {
    /// Connects to the server, over TLS when configured.
    pub async fn connect(&self) -> Result<tonic::transport::Channel, ClientError> {
        client::connect_tls(&self.server, self.timeout, self.tls.as_ref()).await
    }
}

/// The end of a run that could not write everything it received.
#[derive(Debug, thiserror::Error)]
#[error("lines could not be written to {sink} when stopping: {source}")]
pub struct RunError {
    pub sink: String,
    pub source: std::io::Error,
    pub stats: Stats,
}

/// Rate-limits a repeated log line.
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new() -> Self {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `msg` unless it was logged within LOG_EVERY; repeats are counted into the next.
    fn log(&mut self, f: fn(&str), msg: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            f(&format!(
                "{msg} ({} more since the last report)",
                self.suppressed
            ));
        } else {
            f(msg);
        }
        self.last = Some(now);
        self.suppressed = 0;
    }

    fn reset(&mut self) -> bool {
        let was = self.last.is_some();
        self.last = None;
        self.suppressed = 0;
        was
    }
}

struct Runner {
    opts: Options,
    exporter: Exporter,
    sink: Sink,
    write_log: Throttle,
    /// Stdout was closed by its reader: nothing more can be written.
    closed: bool,
}

impl Runner {
    fn flush(&mut self) {
        match self.exporter.flush(&mut self.sink) {
            Ok(()) => {
                if self.write_log.reset() {
                    log::info(&format!("writing to {} again", self.sink.describe()));
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::BrokenPipe
                    && matches!(self.sink, Sink::Stdout(_)) =>
            {
                log::info("stdout was closed; stopping");
                self.closed = true;
            }
            Err(e) => {
                let msg = format!(
                    "failed to write to {}: {e} (write errors: {}, will retry)",
                    self.sink.describe(),
                    self.exporter.stats().write_errors
                );
                self.write_log.log(log::error, &msg);
            }
        }
    }

    fn request(&self) -> GetFlowsRequest {
        GetFlowsRequest {
            follow: true,
            since: self.exporter.last_time(),
            whitelist: self.opts.allowlist.clone(),
            blacklist: self.opts.denylist.clone(),
            field_mask: (!self.opts.field_mask.is_empty()).then(|| FieldMask {
                paths: self.opts.field_mask.clone(),
            }),
            ..Default::default()
        }
    }

    /// After a reconnect: were flows newer than the last written one already overwritten in
    /// the server's ring? Then the oldest flow it still holds is newer than ours and it has
    /// seen more flows than it holds.
    async fn check_gap(&mut self, last: Timestamp) {
        let probe = async {
            let ch = self.opts.connect().await?;
            let status = client::server_status(ch.clone(), self.opts.timeout).await?;
            if status.seen_flows <= status.num_flows {
                return Ok::<_, ClientError>(None);
            }
            let req = GetFlowsRequest {
                first: true,
                number: 1,
                ..Default::default()
            };
            let mut s = client::get_flows(ch, req).await?;
            Ok(match s.next().await {
                Some(Ok(r)) => r.time.map(|t| (r.node_name, t)),
                _ => None,
            })
        };
        match tokio::time::timeout(self.opts.timeout, probe).await {
            Ok(Ok(Some((node, oldest))))
                if (oldest.seconds, oldest.nanos) > (last.seconds, last.nanos) =>
            {
                log::warn(&format!(
                    "flows between {} and {} were lost while disconnected (the server no longer holds them)",
                    fmt_time(&last),
                    fmt_time(&oldest)
                ));
                self.exporter.push_gap(&node, oldest);
            }
            _ => {}
        }
    }
}

fn fmt_time(t: &Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_else(|| format!("{}.{:09}", t.seconds, t.nanos))
}

/// Follows `opts.server` and writes to `sink` until `Control::Stop` (or the control channel
/// closes). Returns the counters, or an error when pending lines could not be written at stop.
pub async fn run(
    opts: Options,
    sink: Sink,
    mut control: mpsc::Receiver<Control>,
) -> Result<Stats, RunError> {
    // With a field mask the server filters first and masks after (filter fields may be masked
    // away); without one, the lists are applied here too.
    let filters = if opts.field_mask.is_empty() {
        FlowFilters::compile(&opts.allowlist, &opts.denylist).unwrap_or_default()
    } else {
        FlowFilters::default()
    };
    let mut r = Runner {
        exporter: Exporter::new(filters, opts.field_mask.clone()),
        opts,
        sink,
        write_log: Throttle::new(),
        closed: false,
    };
    if let Sink::File(f) = &r.sink {
        match f.tail(TAIL) {
            Ok(tail) => {
                if let Some(t) = r.exporter.resume_after(&tail) {
                    log::info(&format!(
                        "{} ends at {}: resuming after it",
                        f.path().display(),
                        fmt_time(&t)
                    ));
                }
            }
            Err(e) => log::warn(&format!("cannot read {}: {e}", f.path().display())),
        }
    }
    let mut connect_log = Throttle::new();
    let mut lost_log = Throttle::new();
    let mut backoff = r.opts.backoff_min;
    let mut connected_before = false;
    'outer: loop {
        // Connect (or wait to retry), still obeying control messages.
        let attempt = async {
            let ch = r.opts.connect().await?;
            client::get_flows(ch, r.request()).await
        };
        let mut stream = tokio::select! {
            res = attempt => match res {
                Ok(s) => s,
                Err(e) => {
                    connect_log.log(log::error, &format!("{e}; retrying"));
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            c = control.recv() => match c {
                                Some(Control::Reopen) => r.sink.reopen(),
                                Some(Control::Stop) | None => break 'outer,
                            },
                        }
                    }
                    backoff = (backoff * 2).min(r.opts.backoff_max);
                    continue;
                }
            },
            c = control.recv() => match c {
                Some(Control::Reopen) => { r.sink.reopen(); continue; }
                Some(Control::Stop) | None => break 'outer,
            },
        };
        connect_log.reset();
        backoff = r.opts.backoff_min;
        if let Some(last) = r.exporter.last_time() {
            r.check_gap(last).await;
            r.exporter.start_resume();
        }
        if connected_before {
            log::info(&format!("reconnected to {}", r.opts.server));
        } else {
            log::info(&format!(
                "following {}, writing to {}",
                r.opts.server,
                r.sink.describe()
            ));
        }
        connected_before = true;
        let mut retry = tokio::time::interval(RETRY_WRITE);
        loop {
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::Reopen) => {
                        r.flush();
                        r.sink.reopen();
                        log::info(&format!("reopened {}", r.sink.describe()));
                    }
                    Some(Control::Stop) | None => break 'outer,
                },
                resp = stream.next() => match resp {
                    Some(Ok(resp)) => {
                        push(&mut r.exporter, &mut lost_log, resp);
                        let mut n = 1;
                        while n < BATCH && r.exporter.pending_bytes() < BATCH_BYTES {
                            match stream.try_next() {
                                std::task::Poll::Ready(Some(Ok(resp))) => {
                                    push(&mut r.exporter, &mut lost_log, resp)
                                }
                                _ => break,
                            }
                            n += 1;
                        }
                        r.flush();
                        if r.closed {
                            break 'outer;
                        }
                    }
                    Some(Err(e)) => {
                        log::warn(&format!("lost the connection to {}: {e}; reconnecting", r.opts.server));
                        break;
                    }
                    None => {
                        log::warn(&format!("{} ended the flow stream; reconnecting", r.opts.server));
                        break;
                    }
                },
                _ = retry.tick(), if r.exporter.has_pending() => r.flush(),
            }
        }
        r.flush();
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                c = control.recv() => match c {
                    Some(Control::Reopen) => r.sink.reopen(),
                    Some(Control::Stop) | None => break 'outer,
                },
            }
        }
        backoff = (backoff * 2).min(r.opts.backoff_max);
    }
    // Stop: write what is pending, one last try, and make it durable.
    if r.closed {
        return Ok(r.exporter.stats());
    }
    let flushed = r.exporter.flush(&mut r.sink);
    if let Err(e) = r.sink.sync() {
        log::error(&format!("failed to sync {}: {e}", r.sink.describe()));
    }
    match flushed {
        Ok(()) => Ok(r.exporter.stats()),
        Err(source) => Err(RunError {
            sink: r.sink.describe(),
            source,
            stats: r.exporter.stats(),
        }),
    }
}

fn push(e: &mut Exporter, lost_log: &mut Throttle, resp: hubble_api::observer::GetFlowsResponse) {
    if matches!(resp.response_types, Some(ResponseTypes::LostEvents(_))) {
        lost_log.log(
            log::warn,
            "the server reported lost flows (written as lost_events lines)",
        );
    }
    e.push(resp);
}
