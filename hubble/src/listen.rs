//! How a gRPC server (the agent's, the relay's) takes its connections: at most
//! `--grpc-max-connections` served at once per listener, TLS handshakes bounded in time and
//! in number, and the HTTP/2 settings of tonic's builder (keepalive pings, streams per
//! connection).
//!
//! A connection holds a slot of its listener from its accept until it closes; while every
//! slot is taken nothing is accepted, and clients wait in the listen backlog. Listeners have
//! slots of their own, so remote clients cannot crowd out the unix socket's. A TLS handshake
//! in progress also holds a pending slot; at the cap the oldest pending handshake is dropped
//! for the new one, so clients that never finish theirs cannot keep a prompt client out.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::timefmt::parse_duration_flag;
use crate::tls::ServerTls;

/// Default `--grpc-keepalive-interval`.
pub const DEFAULT_KEEPALIVE_INTERVAL: &str = "30s";
/// Default `--grpc-keepalive-timeout` (grpc-go's).
pub const DEFAULT_KEEPALIVE_TIMEOUT: &str = "20s";
/// Default `--grpc-max-concurrent-streams`: a relay multiplexes all its clients' requests to
/// an agent over one connection, so this is well above one client's needs.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Default `--grpc-max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `--tls-handshake-timeout`.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
/// Default `--tls-max-pending-handshakes`.
pub const DEFAULT_TLS_MAX_PENDING_HANDSHAKES: usize = 128;
/// Accepted connections handed to the server at once.
const ACCEPT_QUEUE: usize = 16;
/// Dropped or timed-out handshakes are reported at most this often (with a count).
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The server-side limits, as flags of `hubble-agent` and `hubble-relay`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerLimits {
    /// Ping a client connection (HTTP/2 PING) when it has been quiet this long, and close
    /// it when the ping is not answered within --grpc-keepalive-timeout: dead clients,
    /// followers included, are let go (0: no pings).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_KEEPALIVE_INTERVAL, value_parser = parse_duration_flag)]
    pub grpc_keepalive_interval: Duration,
    /// How long an HTTP/2 keepalive ping may go unanswered before the connection is closed.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_KEEPALIVE_TIMEOUT, value_parser = parse_positive_duration)]
    pub grpc_keepalive_timeout: Duration,
    /// Calls (streams) one client connection may have open at once (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); a client's further calls wait for one to end.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_concurrent_streams: u32,
    /// Client connections served at once on each listener (the unix socket and TCP have
    /// their own); further clients wait to be accepted until one closes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = at_least_one)]
    pub grpc_max_connections: usize,
    /// How long a client has to complete its TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TLS_HANDSHAKE_TIMEOUT, value_parser = parse_positive_duration)]
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes in progress at once; past it the oldest one is dropped.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TLS_MAX_PENDING_HANDSHAKES, value_parser = at_least_one)]
    pub tls_max_pending_handshakes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        let d = |s| parse_duration_flag(s).unwrap_or_default();
        ServerLimits {
            grpc_keepalive_interval: d(DEFAULT_KEEPALIVE_INTERVAL),
            grpc_keepalive_timeout: d(DEFAULT_KEEPALIVE_TIMEOUT),
            grpc_max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            grpc_max_connections: DEFAULT_MAX_CONNECTIONS,
            tls_handshake_timeout: d(DEFAULT_TLS_HANDSHAKE_TIMEOUT),
            tls_max_pending_handshakes: DEFAULT_TLS_MAX_PENDING_HANDSHAKES,
        }
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_flag(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of at least 1")),
    }
}

impl ServerLimits {
    /// tonic's server builder with these HTTP/2 settings.
    pub fn builder(&self) -> tonic::transport::Server {
        let interval =
            (!self.grpc_keepalive_interval.is_zero()).then_some(self.grpc_keepalive_interval);
        tonic::transport::Server::builder()
            .http2_keepalive_interval(interval)
            .http2_keepalive_timeout(Some(self.grpc_keepalive_timeout))
            .max_concurrent_streams(self.grpc_max_concurrent_streams)
    }
}

/// One listener's connection slots and pending TLS handshakes.
pub struct Acceptor {
    slots: Arc<Semaphore>,
    pending: Arc<Pending>,
    handshake_timeout: Duration,
}

impl Acceptor {
    pub fn new(limits: &ServerLimits) -> Self {
        Acceptor {
            slots: Arc::new(Semaphore::new(limits.grpc_max_connections.max(1))),
            pending: Arc::new(Pending {
                max: limits.tls_max_pending_handshakes.max(1),
                queue: Mutex::new(VecDeque::new()),
                next_id: AtomicU64::new(0),
                dropped: Report::default(),
                timed_out: Report::default(),
            }),
            handshake_timeout: limits.tls_handshake_timeout,
        }
    }

    /// Plain-text TCP connections (Nagle off: responses are batched already).
    pub fn tcp(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Conn<TcpStream>>> + Send + use<> {
        self.plain(listener)
    }

    /// Unix socket connections.
    pub fn unix(
        &self,
        listener: UnixListener,
    ) -> impl Stream<Item = io::Result<Conn<UnixStream>>> + Send + use<> {
        self.plain(listener)
    }

    fn plain<L: Listen>(
        &self,
        listener: L,
    ) -> impl Stream<Item = io::Result<Conn<L::Io>>> + Send + use<L> {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let slots = self.slots.clone();
        tokio::spawn(async move {
            while let Some((io, slot)) = accept(&listener, &slots, &tx).await {
                if tx.send(Ok(Conn { io, _slot: slot })).await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// TLS connections on `listener`. Handshakes run concurrently, each within the
    /// handshake timeout; a failed one (no client certificate, wrong CA, plain-text client)
    /// is reported on stderr as `"<who>: TLS handshake with <peer> failed: <why>"` and
    /// skipped; timed-out and dropped ones are counted and reported now and then.
    pub fn tls(
        &self,
        listener: TcpListener,
        tls: &ServerTls,
        who: &'static str,
    ) -> impl Stream<Item = io::Result<Conn<tokio_rustls::server::TlsStream<TcpStream>>>> + Send + use<>
    {
        let acceptor = tls.acceptor();
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let slots = self.slots.clone();
        let pending = self.pending.clone();
        let timeout = self.handshake_timeout;
        tokio::spawn(async move {
            while let Some((tcp, slot)) = accept(&listener, &slots, &tx).await {
                let peer = tcp
                    .peer_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                let (id, mut dropped) = pending.admit(who);
                let acceptor = acceptor.clone();
                let conn_tx = tx.clone();
                let pending = pending.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(timeout, acceptor.accept(tcp).into_fallible());
                    let result = tokio::select! {
                        r = handshake => r,
                        _ = &mut dropped => return,
                    };
                    pending.done(id);
                    match result {
                        Ok(Ok(io)) => {
                            let _ = conn_tx.send(Ok(Conn { io, _slot: slot })).await;
                        }
                        Ok(Err((e, tcp))) => {
                            eprintln!("{who}: TLS handshake with {peer} failed: {e}");
                            drop(slot);
                            linger(tcp).await;
                        }
                        Err(_) => pending.timed_out.note(who, || {
                            format!("TLS handshake with {peer} failed: timed out after {timeout:?}")
                        }),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// TLS handshakes in progress, oldest first; dropping a handshake's sender cancels it.
struct Pending {
    max: usize,
    queue: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    next_id: AtomicU64,
    dropped: Report,
    timed_out: Report,
}

impl Pending {
    /// Registers a new handshake, dropping the oldest one when at the cap; the receiver
    /// completes when this one is dropped in turn.
    fn admit(&self, who: &'static str) -> (u64, oneshot::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while q.len() >= self.max {
            q.pop_front();
            let max = self.max;
            self.dropped.note(who, || {
                format!("dropped the oldest pending TLS handshake (at most {max} at once)")
            });
        }
        q.push_back((id, tx));
        (id, rx)
    }

    /// The handshake `id` is over (done, failed or timed out).
    fn done(&self, id: u64) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = q.iter().position(|(x, _)| *x == id) {
            q.remove(i);
        }
    }
}

/// A stderr line that repeats at most every [`REPORT_INTERVAL`], with how many it stands for:
/// a flood of bad clients must not become a flood of log lines.
#[derive(Default)]
struct Report {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Report {
    fn note(&self, who: &str, line: impl FnOnce() -> String) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 += 1;
        if st.0.is_some_and(|t| t.elapsed() < REPORT_INTERVAL) {
            return;
        }
        let more = st.1 - 1;
        *st = (Some(Instant::now()), 0);
        drop(st);
        if more > 0 {
            eprintln!("{who}: {} ({more} more like it before)", line());
        } else {
            eprintln!("{who}: {}", line());
        }
    }
}

/// A served connection with its slot, released when the connection closes.
pub struct Conn<S> {
    io: S,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Conn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A listening socket of either kind.
trait Listen: Send + Sync + 'static {
    type Io: Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listen for TcpListener {
    type Io = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        let (s, _) = TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Listen for UnixListener {
    type Io = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// The next connection with its slot; `None` once the server is gone (`tx` closed) or the
/// listener failed for good (the error is sent first). Waits for a free slot before
/// accepting.
async fn accept<L: Listen, T>(
    listener: &L,
    slots: &Arc<Semaphore>,
    tx: &mpsc::Sender<io::Result<T>>,
) -> Option<(L::Io, OwnedSemaphorePermit)> {
    loop {
        let slot = tokio::select! {
            _ = tx.closed() => return None,
            s = slots.clone().acquire_owned() => s.ok()?,
        };
        let conn = tokio::select! {
            _ = tx.closed() => return None,
            c = listener.accept() => c,
        };
        match conn {
            Ok(io) => return Some((io, slot)),
            Err(e) if is_transient_accept_error(&e) => {
                drop(slot);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return None;
            }
        }
    }
}

/// Closes a connection whose handshake failed without resetting it: the client's request
/// may already be on its way, and closing with unread data would send a reset that discards
/// our alert (say, "certificate required") before the client reads it. Bounded: 64 KiB or
/// one second.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Accept errors that concern one connection or a passing shortage, not the listener.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

/// Where a listener of `addr` (`HOST:PORT` or `:PORT`) goes: `:PORT` without TLS is
/// 127.0.0.1:PORT, so plaintext stays on this host unless an address is named; anything else
/// as given. With the change, the sentence that tells the user so.
pub fn loopback_unless_tls(addr: &str, tls: bool) -> (String, Option<String>) {
    match addr.strip_prefix(':') {
        Some(port) if !tls => {
            let local = format!("127.0.0.1:{port}");
            let notice = format!(
                "{addr} is {local} (loopback) only; name an address (e.g. 0.0.0.0{addr}) to \
                 serve other hosts"
            );
            (local, Some(notice))
        }
        _ => (addr.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: ServerLimits,
    }

    fn parse(args: &[&str]) -> Result<ServerLimits, String> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map(|c| c.limits)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_defaults_and_bad_values() {
        let d = parse(&[]).unwrap();
        assert_eq!(d, ServerLimits::default());
        assert_eq!(d.grpc_keepalive_interval, Duration::from_secs(30));
        assert_eq!(d.grpc_keepalive_timeout, Duration::from_secs(20));
        assert_eq!(d.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(
            (d.grpc_max_concurrent_streams, d.grpc_max_connections),
            (1024, 1024)
        );
        assert_eq!(d.tls_max_pending_handshakes, 128);
        let l = parse(&[
            "--grpc-keepalive-interval",
            "0",
            "--tls-handshake-timeout",
            "1m30s",
        ]);
        let l = l.unwrap();
        assert!(l.grpc_keepalive_interval.is_zero());
        assert_eq!(l.tls_handshake_timeout, Duration::from_secs(90));
        for bad in [
            ["--grpc-keepalive-interval", "soon"],
            ["--grpc-keepalive-timeout", "0s"],
            ["--grpc-max-concurrent-streams", "0"],
            ["--grpc-max-connections", "0"],
            ["--tls-handshake-timeout", "0"],
            ["--tls-max-pending-handshakes", "many"],
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.contains(bad[0]), "{e}");
        }
    }
}
