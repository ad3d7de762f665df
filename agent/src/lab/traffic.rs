//! Bounded traffic between the lab's pods: HTTP and TCP echo to service backends, DNS
//! queries to the cluster DNS pod, ICMP echo (v4 and v6) pod to pod and to the world, and
//! attempts on paths the spec's policies deny. Every loop is bounded by a round count and
//! a deadline; every probe by a timeout.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dns;
use super::netns;
use super::serve::{self, AppKind, ServerSet};
use super::spec::{L4, LabSpec, Peer, Protocol, Verdict};
use super::topology::{self, LabError};

/// Bounds and switches of one traffic run.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    /// Rounds: each pod runs each of its probes once per round.
    pub count: u32,
    /// Wall-clock bound of the whole run.
    pub duration: Duration,
    /// Per-probe timeout (connect, reply): a policy drop shows up as this timeout.
    pub timeout: Duration,
    /// Pause between rounds.
    pub interval: Duration,
    /// Start the lab's servers for the run (off when `lab serve` already runs them).
    pub serve: bool,
}

impl Default for TrafficOptions {
    fn default() -> Self {
        TrafficOptions {
            count: 20,
            duration: Duration::from_secs(10),
            timeout: Duration::from_millis(300),
            interval: Duration::from_millis(100),
            serve: true,
        }
    }
}

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// TCP connect, then an HTTP/1.1 GET (`http`) or an echoed line.
    Tcp { port: u16, http: bool },
    /// DNS query (A or AAAA by the target's family, names rotating over the services and
    /// one unknown name); over TCP when `tcp`.
    Dns { port: u16, tcp: bool },
    /// UDP datagram, echoed back.
    Udp { port: u16 },
    /// ICMP or ICMPv6 echo request.
    Ping,
}

/// One client → server path, run once per round.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Index of the client pod.
    pub client: usize,
    pub target: Peer,
    pub addr: IpAddr,
    pub kind: ProbeKind,
    /// What the spec's policies say about this path.
    pub expect: Verdict,
    /// `loadgen-… -> shop/catalog-… TCP/8080 http` style description.
    pub label: String,
    /// Host header / DNS context: the service name the probe targets, if any.
    pub service: Option<String>,
}

fn l4_of(kind: &ProbeKind) -> L4 {
    match kind {
        ProbeKind::Tcp { port, .. } | ProbeKind::Dns { port, tcp: true } => L4::Tcp(*port),
        ProbeKind::Dns { port, tcp: false } | ProbeKind::Udp { port } => L4::Udp(*port),
        ProbeKind::Ping => L4::Icmp,
    }
}

fn kind_label(kind: &ProbeKind, addr: IpAddr) -> String {
    let fam = if addr.is_ipv4() { "" } else { " v6" };
    match kind {
        ProbeKind::Tcp { port, http: true } => format!("TCP/{port} http{fam}"),
        ProbeKind::Tcp { port, http: false } => format!("TCP/{port} echo{fam}"),
        ProbeKind::Dns { port, tcp } => {
            format!("{}/{port} dns{fam}", if *tcp { "TCP" } else { "UDP" })
        }
        ProbeKind::Udp { port } => format!("UDP/{port} echo{fam}"),
        ProbeKind::Ping => format!("ICMP{} echo", if addr.is_ipv4() { "" } else { "v6" }),
    }
}

/// The probes a traffic run makes, from the spec: every pod to every service it is not a
/// backend of (backends picked round-robin, some over IPv6), ping to the next pod (v4 and
/// v6), HTTP and ICMPv6 to the world.
pub fn plan(spec: &LabSpec) -> Vec<Probe> {
    let mut out = Vec::new();
    let peer_name = |p: Peer| match p {
        Peer::Pod(i) => spec.pods[i].id(),
        Peer::Host => "host".to_string(),
        Peer::World => "world".to_string(),
    };
    let mut add =
        |client: usize, target: Peer, addr: IpAddr, kind: ProbeKind, service: Option<String>| {
            let expect = spec.policy_verdict(Peer::Pod(client), target, l4_of(&kind));
            let label = format!(
                "{} -> {} {}",
                spec.pods[client].id(),
                peer_name(target),
                kind_label(&kind, addr)
            );
            out.push(Probe {
                client,
                target,
                addr,
                kind,
                expect,
                label,
                service,
            });
        };
    for (si, svc) in spec.services.iter().enumerate() {
        let backends = spec.service_backends(svc);
        if backends.is_empty() {
            continue;
        }
        // Every client the policy allows, plus one it denies (the last in spec order): a
        // denied attempt costs a whole timeout, so they are kept few.
        let denied_client = spec
            .pods
            .iter()
            .rev()
            .find(|c| {
                !backends.iter().any(|b| b.index == c.index)
                    && svc.ports.iter().any(|port| {
                        let l4 = match port.protocol {
                            Protocol::Udp => L4::Udp(port.port),
                            _ => L4::Tcp(port.port),
                        };
                        backends.iter().any(|b| {
                            spec.policy_verdict(Peer::Pod(c.index), Peer::Pod(b.index), l4)
                                != Verdict::Allowed
                        })
                    })
            })
            .map(|c| c.index);
        for client in &spec.pods {
            if backends.iter().any(|b| b.index == client.index) {
                continue;
            }
            let any_allowed = svc.ports.iter().any(|port| {
                let l4 = match port.protocol {
                    Protocol::Udp => L4::Udp(port.port),
                    _ => L4::Tcp(port.port),
                };
                backends.iter().any(|b| {
                    spec.policy_verdict(Peer::Pod(client.index), Peer::Pod(b.index), l4)
                        == Verdict::Allowed
                })
            });
            if !any_allowed && Some(client.index) != denied_client {
                continue;
            }
            let b = backends[(client.index + si) % backends.len()];
            let v6 = (client.index + si) % 3 == 2;
            let addr = if v6 {
                IpAddr::V6(b.ipv6)
            } else {
                IpAddr::V4(b.ipv4)
            };
            for port in &svc.ports {
                let kind = match (AppKind::of(port), port.protocol) {
                    (AppKind::Dns, Protocol::Udp) => ProbeKind::Dns {
                        port: port.port,
                        tcp: false,
                    },
                    // DNS over TCP is rare: probe it from every third client only.
                    (AppKind::Dns, _) if client.index % 3 == 0 => ProbeKind::Dns {
                        port: port.port,
                        tcp: true,
                    },
                    (AppKind::Dns, _) => continue,
                    (AppKind::Http, Protocol::Tcp | Protocol::Any) => ProbeKind::Tcp {
                        port: port.port,
                        http: true,
                    },
                    (_, Protocol::Udp) => ProbeKind::Udp { port: port.port },
                    (_, _) => ProbeKind::Tcp {
                        port: port.port,
                        http: false,
                    },
                };
                add(
                    client.index,
                    Peer::Pod(b.index),
                    addr,
                    kind,
                    Some(svc.dns_name()),
                );
            }
        }
    }
    let n = spec.pods.len();
    if n > 1 {
        for p in &spec.pods {
            // The next pod in ring order that the policy lets this pod ping, else the next.
            let next = (1..n)
                .map(|k| &spec.pods[(p.index + k) % n])
                .find(|q| {
                    spec.policy_verdict(Peer::Pod(p.index), Peer::Pod(q.index), L4::Icmp)
                        == Verdict::Allowed
                })
                .unwrap_or(&spec.pods[(p.index + 1) % n]);
            add(
                p.index,
                Peer::Pod(next.index),
                IpAddr::V4(next.ipv4),
                ProbeKind::Ping,
                None,
            );
            add(
                p.index,
                Peer::Pod(next.index),
                IpAddr::V6(next.ipv6),
                ProbeKind::Ping,
                None,
            );
        }
    }
    for p in &spec.pods {
        add(
            p.index,
            Peer::World,
            IpAddr::V4(spec.lab.world_ipv4),
            ProbeKind::Tcp {
                port: 80,
                http: true,
            },
            None,
        );
        add(
            p.index,
            Peer::World,
            IpAddr::V6(spec.lab.world_ipv6),
            ProbeKind::Ping,
            None,
        );
    }
    out
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and got the expected reply.
    Ok,
    /// No answer within the timeout: what a policy drop looks like.
    Blocked,
    /// Anything else (refused: no server; bad reply; socket error).
    Error(String),
}

/// Counts of one probe over the run.
#[derive(Debug, Clone, Default)]
pub struct ProbeStats {
    pub ok: u32,
    pub blocked: u32,
    pub errors: u32,
    pub last_error: Option<String>,
}

impl ProbeStats {
    /// Attempts whose outcome disagrees with the spec's verdict (ok on a denied path,
    /// blocked on an allowed one).
    pub fn mismatches(&self, expect: Verdict) -> u32 {
        match expect {
            Verdict::Allowed => self.blocked,
            Verdict::Denied { .. } => self.ok,
        }
    }
}

/// Result of a traffic run.
#[derive(Debug, Clone)]
pub struct Report {
    pub probes: Vec<Probe>,
    pub stats: Vec<ProbeStats>,
    pub rounds: u32,
    pub elapsed: Duration,
    /// Servers that could not start (port already taken, …).
    pub server_failures: Vec<String>,
}

impl Report {
    pub fn attempts(&self) -> u32 {
        self.stats.iter().map(|s| s.ok + s.blocked + s.errors).sum()
    }

    pub fn mismatches(&self) -> u32 {
        self.probes
            .iter()
            .zip(&self.stats)
            .map(|(p, s)| s.mismatches(p.expect))
            .sum()
    }

    pub fn errors(&self) -> u32 {
        self.stats.iter().map(|s| s.errors).sum()
    }

    /// Human summary: totals, then one row per probe (all rows when `verbose`, else only
    /// rows with errors or mismatches).
    pub fn render(&self, verbose: bool) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let ok: u32 = self.stats.iter().map(|s| s.ok).sum();
        let blocked: u32 = self.stats.iter().map(|s| s.blocked).sum();
        let _ = writeln!(
            s,
            "lab traffic: {} rounds, {} probes, {} attempts in {:.1}s: {ok} answered, {blocked} blocked (timed out), {} errors",
            self.rounds,
            self.probes.len(),
            self.attempts(),
            self.elapsed.as_secs_f64(),
            self.errors()
        );
        let denied = self
            .probes
            .iter()
            .filter(|p| matches!(p.expect, Verdict::Denied { .. }))
            .count();
        let _ = writeln!(
            s,
            "policy: {denied} of {} probes are on paths the spec denies; {} attempts disagreed with the spec",
            self.probes.len(),
            self.mismatches()
        );
        for f in &self.server_failures {
            let _ = writeln!(s, "server not started: {f}");
        }
        let rows: Vec<(&Probe, &ProbeStats)> = self
            .probes
            .iter()
            .zip(&self.stats)
            .filter(|(p, st)| verbose || st.errors > 0 || st.mismatches(p.expect) > 0)
            .collect();
        if !rows.is_empty() {
            let width = rows.iter().map(|(p, _)| p.label.len()).max().unwrap_or(10);
            let _ = writeln!(
                s,
                "{:<width$}  {:<7} {:>4} {:>7} {:>6}",
                "PROBE", "SPEC", "OK", "BLOCKED", "ERROR"
            );
            for (p, st) in rows {
                let spec = match p.expect {
                    Verdict::Allowed => "allow",
                    Verdict::Denied { ingress: true } => "deny-in",
                    Verdict::Denied { ingress: false } => "deny-eg",
                };
                let _ = write!(
                    s,
                    "{:<width$}  {spec:<7} {:>4} {:>7} {:>6}",
                    p.label, st.ok, st.blocked, st.errors
                );
                if let Some(e) = &st.last_error {
                    let _ = write!(s, "  ({e})");
                }
                s.push('\n');
            }
        }
        s
    }
}

/// Runs the traffic: starts the servers (unless `opts.serve` is off), then one thread per
/// client pod runs its probes for `opts.count` rounds or until `opts.duration` passes.
pub fn run(spec: Arc<LabSpec>, opts: &TrafficOptions) -> Result<Report, LabError> {
    if !topology::is_root() {
        return Err(LabError::NotRoot);
    }
    let st = topology::status(&spec);
    if !st.is_up() {
        return Err(LabError::Io(io::Error::other(format!(
            "lab {} is not up: run `hubble-agent lab up {}` first",
            spec.lab.name, spec.origin
        ))));
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    let servers = if opts.serve {
        // Servers outlive the clients' deadline a little so late probes get answers.
        Some(ServerSet::start(
            spec.clone(),
            serve::plan(&spec),
            deadline + opts.timeout * 2 + Duration::from_secs(1),
        ))
    } else {
        None
    };
    let server_failures = servers
        .as_ref()
        .map(|s| {
            s.failed
                .iter()
                .map(|(t, e)| format!("{} {}/{}: {e}", t.owner, t.port, t.protocol))
                .collect()
        })
        .unwrap_or_default();

    let probes = plan(&spec);
    let mut by_client: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in probes.iter().enumerate() {
        by_client.entry(p.client).or_default().push(i);
    }
    let probes_arc = Arc::new(probes);
    let mut handles = Vec::new();
    for (client, idxs) in by_client {
        let spec = spec.clone();
        let probes = probes_arc.clone();
        let opts = opts.clone();
        let netns_name = spec.pods[client].netns.clone();
        let h = netns::spawn_in(&netns_name, move || {
            let mut stats: Vec<(usize, ProbeStats)> =
                idxs.iter().map(|&i| (i, ProbeStats::default())).collect();
            let mut rounds = 0;
            let mut seq: u16 = 0;
            'rounds: for round in 0..opts.count {
                for (i, st) in stats.iter_mut() {
                    if Instant::now() >= deadline {
                        break 'rounds;
                    }
                    seq = seq.wrapping_add(1);
                    let outcome = run_probe(&spec, &probes[*i], round, seq, opts.timeout);
                    match outcome {
                        Outcome::Ok => st.ok += 1,
                        Outcome::Blocked => st.blocked += 1,
                        Outcome::Error(e) => {
                            st.errors += 1;
                            st.last_error = Some(e);
                        }
                    }
                }
                rounds = round + 1;
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(opts.interval.min(left));
            }
            Ok((rounds, stats))
        })?;
        handles.push(h);
    }
    let mut stats = vec![ProbeStats::default(); probes_arc.len()];
    let mut rounds = 0;
    for h in handles {
        match h.join() {
            Ok(Ok((r, s))) => {
                rounds = rounds.max(r);
                for (i, st) in s {
                    stats[i] = st;
                }
            }
            Ok(Err(e)) => {
                if let Some(s) = servers {
                    s.stop();
                }
                return Err(e.into());
            }
            Err(_) => {
                if let Some(s) = servers {
                    s.stop();
                }
                return Err(io::Error::other("a traffic thread panicked").into());
            }
        }
    }
    if let Some(s) = servers {
        s.stop();
    }
    Ok(Report {
        probes: Arc::try_unwrap(probes_arc).unwrap_or_else(|a| (*a).clone()),
        stats,
        rounds,
        elapsed: start.elapsed(),
        server_failures,
    })
}

/// Paths the HTTP probes rotate over: 200s, a 404 and a 500 (see lab/serve.rs).
const HTTP_PATHS: [&str; 6] = [
    "/",
    "/api/v1/items",
    "/api/v1/items/42",
    "/healthz",
    "/missing",
    "/status/500",
];

/// Runs one attempt of a probe (on a thread already inside the client's netns).
pub fn run_probe(spec: &LabSpec, p: &Probe, round: u32, seq: u16, timeout: Duration) -> Outcome {
    let res = match &p.kind {
        ProbeKind::Tcp { port, http } => tcp_probe(spec, p, *port, *http, round, timeout),
        ProbeKind::Dns { port, tcp } => dns_probe(spec, p, *port, *tcp, round, seq, timeout),
        ProbeKind::Udp { port } => udp_probe(p.addr, *port, timeout),
        ProbeKind::Ping => ping(p.addr, seq, timeout),
    };
    match res {
        Ok(o) => o,
        Err(e) if is_timeout(&e) => Outcome::Blocked,
        Err(e) => Outcome::Error(e.to_string()),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn tcp_probe(
    spec: &LabSpec,
    p: &Probe,
    port: u16,
    http: bool,
    round: u32,
    timeout: Duration,
) -> io::Result<Outcome> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(p.addr, port), timeout)?;
    s.set_read_timeout(Some(timeout * 3))?;
    s.set_write_timeout(Some(timeout * 3))?;
    if http {
        let host = match &p.service {
            Some(n) => n.trim_end_matches('.').to_string(),
            None => p.addr.to_string(),
        };
        let path = HTTP_PATHS[(round as usize + p.client) % HTTP_PATHS.len()];
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hubble-lab/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        s.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        s.take(64 * 1024).read_to_end(&mut resp)?;
        if resp.starts_with(b"HTTP/1.1 ") {
            Ok(Outcome::Ok)
        } else {
            Ok(Outcome::Error("not an HTTP response".into()))
        }
    } else {
        let line = format!(
            "hubble-lab round {round} from {}\n",
            spec.pods[p.client].id()
        );
        s.write_all(line.as_bytes())?;
        let mut back = vec![0u8; line.len()];
        s.read_exact(&mut back)?;
        let _ = s.shutdown(std::net::Shutdown::Write);
        if back == line.as_bytes() {
            Ok(Outcome::Ok)
        } else {
            Ok(Outcome::Error("echo mismatch".into()))
        }
    }
}

fn dns_probe(
    spec: &LabSpec,
    p: &Probe,
    port: u16,
    tcp: bool,
    round: u32,
    seq: u16,
    timeout: Duration,
) -> io::Result<Outcome> {
    // Rotate over the services' names; every fifth query asks for a name that does not exist.
    let n = spec.services.len();
    let slot = (round as usize + p.client) % (n + 1);
    let name = if slot == n || n == 0 {
        "api.example.com.".to_string()
    } else {
        spec.services[slot].dns_name()
    };
    let qtype = if round.is_multiple_of(2) {
        dns::TYPE_A
    } else {
        dns::TYPE_AAAA
    };
    let id = seq ^ ((p.client as u16) << 12);
    let q = dns::build_query(id, &name, qtype).ok_or_else(|| io::Error::other("bad DNS name"))?;
    let resp = if tcp {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(p.addr, port), timeout)?;
        s.set_read_timeout(Some(timeout * 3))?;
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        s.write_all(&msg)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut r)?;
        r
    } else {
        let bind: SocketAddr = match p.addr {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let s = UdpSocket::bind(bind)?;
        s.connect(SocketAddr::new(p.addr, port))?;
        s.set_read_timeout(Some(timeout))?;
        s.send(&q)?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf)?;
        buf[..n].to_vec()
    };
    match dns::parse_response(&resp) {
        Some((rid, rcode, _))
            if rid == id && (rcode == dns::RCODE_NOERROR || rcode == dns::RCODE_NXDOMAIN) =>
        {
            Ok(Outcome::Ok)
        }
        _ => Ok(Outcome::Error("bad DNS response".into())),
    }
}

fn udp_probe(addr: IpAddr, port: u16, timeout: Duration) -> io::Result<Outcome> {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(SocketAddr::new(addr, port))?;
    s.set_read_timeout(Some(timeout))?;
    s.send(b"hubble-lab udp\n")?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf)?;
    Ok(if &buf[..n] == b"hubble-lab udp\n" {
        Outcome::Ok
    } else {
        Outcome::Error("echo mismatch".into())
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ICMP (or ICMPv6) echo request on a raw socket and waits for the matching reply.
/// Needs CAP_NET_RAW (the lab runs as root).
pub fn ping(addr: IpAddr, seq: u16, timeout: Duration) -> io::Result<Outcome> {
    let (domain, proto, req_type, reply_type) = match addr {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8),
    };
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let id = (std::process::id() as u16) ^ 0x4c42;
    let mut pkt = vec![req_type, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"hubble-lab ping 0123456789abcdef");
    if addr.is_ipv4() {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // ICMPv6 raw sockets get their checksum from the kernel.
    let (sa, sa_len) = sockaddr(addr);
    // SAFETY: pkt and sa are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&raw const sa).cast(),
            sa_len,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Outcome::Blocked);
        }
        set_rcvtimeo(&sock, left)?;
        // SAFETY: storage is large enough for any sockaddr; buf is valid for its length.
        let mut from: libc::sockaddr_storage = unsafe { zeroed() };
        let mut from_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if is_timeout(&e) {
                return Ok(Outcome::Blocked);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let msg = &buf[..n as usize];
        // IPv4 raw sockets deliver the IP header too.
        let icmp = if addr.is_ipv4() {
            let ihl = usize::from(msg.first().map_or(0, |b| b & 0x0f)) * 4;
            if msg.len() < ihl + 8
                || msg[12..16]
                    != match addr {
                        IpAddr::V4(a) => a.octets(),
                        IpAddr::V6(_) => [0; 4],
                    }
            {
                continue;
            }
            &msg[ihl..]
        } else {
            let src = sockaddr_in6_addr(&from);
            if msg.len() < 8 || src != Some(addr) {
                continue;
            }
            msg
        };
        if icmp[0] == reply_type
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(Outcome::Ok);
        }
        if icmp[0] == 3 || (addr.is_ipv6() && icmp[0] == 1) {
            // Destination unreachable about some packet: not necessarily ours; keep waiting.
            continue;
        }
    }
}

fn set_rcvtimeo(sock: &OwnedFd, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(d.subsec_micros().max(1)),
    };
    // SAFETY: tv is a valid timeval for SO_RCVTIMEO.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the family-specific view.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            (ss, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            (ss, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn sockaddr_in6_addr(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    if i32::from(ss.ss_family) != libc::AF_INET6 {
        return None;
    }
    // SAFETY: the family says this storage holds a sockaddr_in6.
    let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> LabSpec {
        LabSpec::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/lab/demo.toml"
        ))
        .unwrap()
    }

    #[test]
    fn plan_covers_allowed_and_denied_paths() {
        let spec = demo();
        let probes = plan(&spec);
        let find = |needle: &str| {
            probes
                .iter()
                .find(|p| p.label.contains(needle))
                .unwrap_or_else(|| panic!("no probe {needle}"))
        };
        assert_eq!(
            find("shop/frontend-58c7d-h2kfp -> shop/catalog").expect,
            Verdict::Allowed
        );
        assert_eq!(
            find("default/loadgen-8c5f7-m2n4r -> shop/catalog").expect,
            Verdict::Denied { ingress: true }
        );
        assert_eq!(
            find("default/loadgen-8c5f7-m2n4r -> payments/db-0 TCP/5432").expect,
            Verdict::Denied { ingress: true }
        );
        assert_eq!(
            find("payments/payments-api-5b9d7-k3l8p -> payments/db-0 TCP/5432").expect,
            Verdict::Allowed
        );
        assert_eq!(
            find("payments/db-0 -> world TCP/80").expect,
            Verdict::Denied { ingress: false }
        );
        assert!(
            probes
                .iter()
                .any(|p| matches!(p.kind, ProbeKind::Dns { tcp: false, .. }))
        );
        assert!(
            probes
                .iter()
                .any(|p| p.kind == ProbeKind::Ping && p.addr.is_ipv6())
        );
        assert!(
            probes
                .iter()
                .any(|p| p.addr.is_ipv6() && matches!(p.kind, ProbeKind::Tcp { .. }))
        );
    }

    #[test]
    fn icmp_checksum() {
        // Echo request id=1 seq=1, no payload: checksum 0xf7fd.
        let pkt = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&pkt), 0xf7fd);
    }
}
