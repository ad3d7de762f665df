//! Tiny servers inside the lab's namespaces: on every service port of every selected pod a
//! TCP server (HTTP/1.1 when the client speaks HTTP: 404 on /missing, any status on
//! /status/<code>, else 200; echo otherwise; DNS over TCP on DNS ports)
//! and a UDP server (DNS on DNS ports, else echo); plus HTTP on TCP 80 and echo on 443 in
//! the world netns. All threads of one process; they stop on `ServerSet::stop` or a deadline.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::dns;
use super::netns;
use super::spec::{LabSpec, PortSpec, Protocol};

/// What a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    Http,
    Dns,
    Echo,
}

impl AppKind {
    /// DNS on ports named `dns*` or 53; HTTP on ports named `http*` or 80/8080; echo otherwise.
    pub fn of(port: &PortSpec) -> AppKind {
        let name = port.name.as_deref().unwrap_or("");
        if name.starts_with("dns") || port.port == 53 {
            AppKind::Dns
        } else if name.starts_with("http") || matches!(port.port, 80 | 8080) {
            AppKind::Http
        } else {
            AppKind::Echo
        }
    }
}

/// One socket to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeTarget {
    pub netns: String,
    /// `namespace/pod` or `world`: shown in HTTP bodies and messages.
    pub owner: String,
    pub port: u16,
    /// Tcp or Udp (Any is split in two targets).
    pub protocol: Protocol,
    pub kind: AppKind,
}

/// Every socket the lab's servers listen on, deduplicated per netns/port/protocol.
pub fn plan(spec: &LabSpec) -> Vec<ServeTarget> {
    let mut out: Vec<ServeTarget> = Vec::new();
    let mut push = |t: ServeTarget| {
        if !out
            .iter()
            .any(|o| o.netns == t.netns && o.port == t.port && o.protocol == t.protocol)
        {
            out.push(t);
        }
    };
    for svc in &spec.services {
        for pod in spec.service_backends(svc) {
            for port in &svc.ports {
                let protos: &[Protocol] = match port.protocol {
                    Protocol::Any => &[Protocol::Tcp, Protocol::Udp],
                    Protocol::Tcp => &[Protocol::Tcp],
                    Protocol::Udp => &[Protocol::Udp],
                };
                for &protocol in protos {
                    push(ServeTarget {
                        netns: pod.netns.clone(),
                        owner: pod.id(),
                        port: port.port,
                        protocol,
                        kind: AppKind::of(port),
                    });
                }
            }
        }
    }
    for (port, kind) in [(80, AppKind::Http), (443, AppKind::Echo)] {
        push(ServeTarget {
            netns: spec.world_netns(),
            owner: "world".to_string(),
            port,
            protocol: Protocol::Tcp,
            kind,
        });
    }
    out
}

/// Running servers.
pub struct ServerSet {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<io::Result<()>>>,
    /// Targets that are listening.
    pub listening: Vec<ServeTarget>,
    /// Targets that could not bind, with why (e.g. another `lab serve` holds the port).
    pub failed: Vec<(ServeTarget, String)>,
}

/// How long a connection may sit idle before the server drops it.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Most connections handled at once per process; more are closed at once.
const MAX_CONNS: usize = 256;

impl ServerSet {
    /// Starts a thread per target and waits until each is listening or failed. Every
    /// thread exits by itself at `deadline`.
    pub fn start(spec: Arc<LabSpec>, targets: Vec<ServeTarget>, deadline: Instant) -> ServerSet {
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel::<(ServeTarget, Result<(), String>)>();
        let mut handles = Vec::new();
        let mut failed = Vec::new();
        let mut expected = 0;
        for t in targets {
            let ctx = Ctx {
                spec: spec.clone(),
                target: t.clone(),
                stop: stop.clone(),
                conns: conns.clone(),
                deadline,
            };
            let tx = tx.clone();
            let t2 = t.clone();
            let spawned = netns::spawn_in(&t.netns, move || {
                let bound = bind(&ctx.target);
                match bound {
                    Err(e) => {
                        let _ = tx.send((ctx.target.clone(), Err(e.to_string())));
                    }
                    Ok(sock) => {
                        let _ = tx.send((ctx.target.clone(), Ok(())));
                        drop(tx);
                        match sock {
                            Bound::Tcp(l) => serve_tcp(&ctx, l),
                            Bound::Udp(s) => serve_udp(&ctx, s),
                        }
                    }
                }
                Ok(())
            });
            match spawned {
                Ok(h) => {
                    expected += 1;
                    handles.push(h);
                }
                Err(e) => failed.push((t2, e.to_string())),
            }
        }
        drop(tx);
        let mut listening = Vec::new();
        for _ in 0..expected {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok((t, Ok(()))) => listening.push(t),
                Ok((t, Err(e))) => failed.push((t, e)),
                Err(_) => break,
            }
        }
        ServerSet {
            stop,
            handles,
            listening,
            failed,
        }
    }

    /// Stops every server and waits for the threads (at most ~100 ms each).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

struct Ctx {
    spec: Arc<LabSpec>,
    target: ServeTarget,
    stop: Arc<AtomicBool>,
    conns: Arc<AtomicUsize>,
    deadline: Instant,
}

impl Ctx {
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

fn bind(t: &ServeTarget) -> io::Result<Bound> {
    // `[::]` is dual-stack on Linux (bindv6only=0), so one socket serves IPv4 and IPv6.
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, t.port));
    let err = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("{} {}/{}: {e}", t.owner, t.port, t.protocol),
        )
    };
    match t.protocol {
        Protocol::Udp => {
            let s = UdpSocket::bind(addr).map_err(err)?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(Bound::Udp(s))
        }
        _ => {
            let l = TcpListener::bind(addr).map_err(err)?;
            l.set_nonblocking(true)?;
            Ok(Bound::Tcp(l))
        }
    }
}

fn serve_tcp(ctx: &Ctx, l: TcpListener) {
    while !ctx.done() {
        match l.accept() {
            Ok((stream, _)) => {
                if ctx.conns.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
                    ctx.conns.fetch_sub(1, Ordering::SeqCst);
                    continue; // dropped: closes the connection
                }
                let spec = ctx.spec.clone();
                let target = ctx.target.clone();
                let conns = ctx.conns.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("lab-conn".into())
                        .spawn(move || {
                            let _ = handle_conn(&spec, &target, stream);
                            conns.fetch_sub(1, Ordering::SeqCst);
                        });
                if spawned.is_err() {
                    ctx.conns.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

const HTTP_METHODS: [&[u8]; 7] = [
    b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"PATC", b"OPTI",
];

fn handle_conn(spec: &LabSpec, t: &ServeTarget, mut s: TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; 8192];
    let mut n = s.read(&mut buf)?;
    if n == 0 {
        return Ok(());
    }
    if t.kind == AppKind::Dns {
        // DNS over TCP: 2-byte length, then the message.
        while n >= 2 && n < 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]])) && n < buf.len() {
            let m = s.read(&mut buf[n..])?;
            if m == 0 {
                break;
            }
            n += m;
        }
        let len = usize::from(u16::from_be_bytes([buf[0], buf[1]])).min(n.saturating_sub(2));
        if let Some(resp) = answer_dns(spec, &buf[2..2 + len]) {
            let mut out = (resp.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&resp);
            s.write_all(&out)?;
        }
        return Ok(());
    }
    if HTTP_METHODS.iter().any(|m| buf[..n].starts_with(m)) {
        // Read the head (to the blank line), bounded by the buffer.
        while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
            let m = s.read(&mut buf[n..])?;
            if m == 0 {
                break;
            }
            n += m;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let mut parts = head.lines().next().unwrap_or("").split_whitespace();
        let method = parts.next().unwrap_or("GET");
        let path = parts.next().unwrap_or("/");
        let status = path
            .strip_prefix("/status/")
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..=599).contains(c));
        let (code, reason) = if let Some(c) = status {
            (c, reason_phrase(c))
        } else if path.starts_with("/missing") {
            (404, "Not Found")
        } else if method == "DELETE" {
            (405, "Method Not Allowed")
        } else {
            (200, "OK")
        };
        let body = format!(
            "{{\"served_by\":\"{}\",\"method\":\"{method}\",\"path\":\"{}\",\"status\":{code}}}\n",
            t.owner,
            path.replace(['"', '\\'], "")
        );
        let resp = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nServer: hubble-lab\r\nConnection: close\r\n\r\n{}",
            body.len(),
            if method == "HEAD" { "" } else { &body }
        );
        s.write_all(resp.as_bytes())?;
        return Ok(());
    }
    // Echo until the peer closes (or goes idle), at most 1 MiB.
    let mut total = 0usize;
    loop {
        s.write_all(&buf[..n])?;
        total += n;
        if total > 1 << 20 {
            return Ok(());
        }
        n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// The reason phrase of a status the servers answer with (`/status/<code>`).
fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Answers a DNS query from the spec's services; None for messages not worth an answer.
pub fn answer_dns(spec: &LabSpec, msg: &[u8]) -> Option<Vec<u8>> {
    let Some(q) = dns::parse_query(msg) else {
        return dns::build_formerr(msg);
    };
    let found = spec.resolve(&q.name).map(|pods| {
        let v4: Vec<Ipv4Addr> = pods.iter().map(|p| p.ipv4).collect();
        let v6: Vec<Ipv6Addr> = pods.iter().map(|p| p.ipv6).collect();
        (v4, v6)
    });
    Some(dns::build_response(
        &q,
        found.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())),
    ))
}

fn serve_udp(ctx: &Ctx, s: UdpSocket) {
    let mut buf = [0u8; 2048];
    while !ctx.done() {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => {
                let reply = match ctx.target.kind {
                    AppKind::Dns => answer_dns(&ctx.spec, &buf[..n]),
                    _ => Some(buf[..n].to_vec()),
                };
                if let Some(r) = reply {
                    let _ = s.send_to(&r, from);
                }
            }
            Err(_) => continue, // timeout: check the stop flag
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_service_ports_and_world() {
        let spec = LabSpec::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/lab/demo.toml"
        ))
        .unwrap();
        let p = plan(&spec);
        // Both catalog pods serve 8080.
        assert_eq!(p.iter().filter(|t| t.port == 8080).count(), 2);
        let dns: Vec<_> = p.iter().filter(|t| t.port == 53).collect();
        assert_eq!(dns.len(), 2);
        assert!(dns.iter().all(|t| t.kind == AppKind::Dns));
        assert!(
            p.iter()
                .any(|t| t.owner == "world" && t.port == 80 && t.kind == AppKind::Http)
        );
        let q = dns::build_query(9, "db.payments.svc.cluster.local.", dns::TYPE_AAAA).unwrap();
        let r = answer_dns(&spec, &q).unwrap();
        assert_eq!(dns::parse_response(&r), Some((9, dns::RCODE_NOERROR, 1)));
        let q = dns::build_query(9, "nope.payments.svc.cluster.local.", dns::TYPE_A).unwrap();
        let r = answer_dns(&spec, &q).unwrap();
        assert_eq!(dns::parse_response(&r), Some((9, dns::RCODE_NXDOMAIN, 0)));
    }
}
