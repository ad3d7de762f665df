//! `hubble-agent lab flood`: a bounded, paced UDP flood from one lab pod to another, to
//! measure the datapath and the agent's perf readers (optionally running the agent itself).
//!
//! Bounds: at most 1 M packets/s, 60 s and 20 M packets; only between the lab's own pods.

use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::netns;
use super::spec::{LabSpec, Pod};

pub const MAX_PPS: u64 = 1_000_000;
pub const MAX_DURATION: Duration = Duration::from_secs(60);
pub const MAX_PACKETS: u64 = 20_000_000;
const BATCH: usize = 32;

#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// Sending pod (`namespace/pod`, a name or a unique prefix).
    pub from: String,
    /// Receiving pod.
    pub to: String,
    pub port: u16,
    pub pps: u64,
    pub duration: Duration,
    pub payload: usize,
    pub ipv6: bool,
    /// Sender threads (1-8), each sending its share of the rate.
    pub threads: usize,
}

/// What the sender did.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodReport {
    pub sent: u64,
    pub send_errors: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn find_pod<'a>(spec: &'a LabSpec, target: &str) -> io::Result<&'a Pod> {
    let hits: Vec<&Pod> = spec
        .pods
        .iter()
        .filter(|p| p.id() == target || p.name == target)
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no single pod {target:?} in the lab (use namespace/pod)"),
        )),
    }
}

/// Sends the flood and returns when the duration or the packet budget is used up.
pub fn flood(spec: &LabSpec, opts: &FloodOptions) -> io::Result<FloodReport> {
    let from = find_pod(spec, &opts.from)?;
    let to = find_pod(spec, &opts.to)?;
    let dst: IpAddr = if opts.ipv6 {
        to.ipv6.into()
    } else {
        to.ipv4.into()
    };
    let pps = opts.pps.clamp(1, MAX_PPS);
    let duration = opts.duration.min(MAX_DURATION);
    let budget = ((pps as f64 * duration.as_secs_f64()) as u64).min(MAX_PACKETS);
    let payload = vec![0x5au8; opts.payload.clamp(1, 1400)];
    let payload = std::sync::Arc::new(payload);
    let port = opts.port;
    // A bound socket that is never read: packets end in its full receive queue, which costs
    // less than the ICMP port-unreachable path of a closed port.
    let sink_addr = SocketAddr::new(dst, port);
    let sink = netns::run_in(&to.netns, move || UdpSocket::bind(sink_addr))?;
    // Each sender thread takes an equal share of the rate and the budget.
    let threads = opts.threads.clamp(1, 8) as u64;
    let mut senders = Vec::new();
    for i in 0..threads {
        let payload = payload.clone();
        let share = |v: u64| v / threads + u64::from(i < v % threads);
        let (pps, budget) = (share(pps).max(1), share(budget));
        senders.push(netns::spawn_in(&from.netns, move || {
            let bind: SocketAddr = if dst.is_ipv4() {
                "0.0.0.0:0".parse().expect("addr")
            } else {
                "[::]:0".parse().expect("addr")
            };
            let sock = UdpSocket::bind(bind)?;
            sock.connect(SocketAddr::new(dst, port))?;
            send_paced(&sock, &payload, pps, duration, budget)
        })?);
    }
    let mut res = Ok(FloodReport::default());
    for h in senders {
        let r = h
            .join()
            .map_err(|_| io::Error::other("a sender thread panicked"))
            .and_then(|r| r);
        res = match (res, r) {
            (Ok(a), Ok(b)) => Ok(FloodReport {
                sent: a.sent + b.sent,
                send_errors: a.send_errors + b.send_errors,
                elapsed: a.elapsed.max(b.elapsed),
            }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    drop(sink);
    res
}

fn send_paced(
    sock: &UdpSocket,
    payload: &[u8],
    pps: u64,
    duration: Duration,
    budget: u64,
) -> io::Result<FloodReport> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for m in msgs.iter_mut() {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut rep = FloodReport::default();
    let start = Instant::now();
    let per_ns = pps as f64 / 1e9;
    while rep.sent < budget {
        let now = start.elapsed();
        if now >= duration {
            break;
        }
        let due = ((now.as_nanos() as f64 * per_ns) as u64).min(budget);
        if due <= rep.sent {
            // Ahead of schedule: wait about one batch's worth of time.
            let wait = Duration::from_nanos((BATCH as f64 / per_ns) as u64 / 2);
            std::thread::sleep(wait.min(Duration::from_millis(1)));
            continue;
        }
        let n = (due - rep.sent).min(BATCH as u64) as usize;
        // SAFETY: msgs[..n] point at `iov`, which points at `payload`; all outlive the call.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Full queues and ICMP errors of earlier packets: count and go on.
                Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::EINTR) => {
                    rep.send_errors += 1;
                }
                _ => return Err(e),
            }
        } else {
            rep.sent += r as u64;
        }
    }
    rep.elapsed = start.elapsed();
    Ok(rep)
}

/// The figures an agent prints at exit.
#[derive(Debug, Clone, Default)]
pub struct AgentReport {
    pub flows: u64,
    pub lost: u64,
    /// The agent's own summary lines (counters, BPF run time).
    pub lines: Vec<String>,
}

/// A `hubble-agent run` child of this process, its stderr lines read by a thread of their own
/// (so a silent agent cannot hold up the deadline).
pub struct AgentChild {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

/// How long the agent may take to attach its datapath.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl AgentChild {
    /// Starts `exe run --lab SPEC --aggregation none --no-hubble-server EXTRA…` and waits
    /// (at most 30 s) until its perf readers run. When it does not get there, the error says
    /// what the agent said last (or how it ended), never nothing.
    pub fn start(exe: &Path, spec: &Path, extra: &[String]) -> io::Result<Self> {
        Self::start_within(exe, spec, extra, START_TIMEOUT)
    }

    fn start_within(
        exe: &Path,
        spec: &Path,
        extra: &[String],
        timeout: Duration,
    ) -> io::Result<Self> {
        let mut child = Command::new(exe)
            .args(["run", "--lab"])
            .arg(spec)
            .args([
                "--aggregation",
                "none",
                "--no-hubble-server",
                "--duration",
                "90s",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", exe.display())))?;
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        // What the agent said, kept for the error: the reason is usually its last line.
        let mut said: Vec<String> = Vec::new();
        let failure = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("datapath attached") => {
                    return Ok(Self { child, stderr: rx });
                }
                Ok(line) => {
                    if !line.trim().is_empty() {
                        said.push(line.trim().to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    break format!("the agent exited ({status}) before attaching its datapath");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!(
                        "the agent did not attach its datapath within {timeout:?} and was stopped"
                    );
                }
            }
        };
        let last = said.iter().rev().take(3).rev().cloned().collect::<Vec<_>>();
        Err(io::Error::other(if last.is_empty() {
            format!(
                "{failure}, saying nothing; try `{} run --lab {}` by hand",
                exe.display(),
                spec.display()
            )
        } else {
            format!("{failure}: {}", last.join(" / "))
        }))
    }

    /// Sends SIGTERM, waits for the exit and parses the counters it printed.
    pub fn stop(mut self) -> io::Result<AgentReport> {
        // SAFETY: kill on the pid of our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let mut rep = AgentReport::default();
        // Until the agent closes its stderr (it exits).
        for l in self.stderr.iter() {
            let l = l.trim().to_string();
            for word in l.split_whitespace() {
                if let Some(v) = word.strip_prefix("flows=") {
                    rep.flows = v.parse().unwrap_or(0);
                } else if let Some(v) = word.strip_prefix("lost_samples=") {
                    rep.lost = v.parse().unwrap_or(0);
                }
            }
            rep.lines.push(l);
        }
        self.child.wait()?;
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for `hubble-agent` running `body` as a shell script.
    fn fake_agent(dir: &Path, body: &str) -> std::path::PathBuf {
        let p = dir.join("fake-agent");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn start_error(body: &str, timeout: Duration) -> String {
        let dir = tempfile::tempdir().unwrap();
        let exe = fake_agent(dir.path(), body);
        match AgentChild::start_within(&exe, Path::new("lab.toml"), &[], timeout) {
            Ok(_) => panic!("started"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_agent_that_fails_to_start_is_quoted() {
        let e = start_error(
            "echo 'hubble-agent: loading'; echo >&2 'hubble-agent: reading the lab'; echo >&2 'error: lab fl is not up: run `hubble-agent lab up lab.toml` first'; exit 1",
            Duration::from_secs(10),
        );
        assert!(
            e.starts_with("the agent exited (exit status: 1) before attaching its datapath: "),
            "{e}"
        );
        assert!(
            e.ends_with("hubble-agent: reading the lab / error: lab fl is not up: run `hubble-agent lab up lab.toml` first"),
            "{e}"
        );
    }

    #[test]
    fn a_silent_or_stuck_agent_still_gets_a_reason() {
        let e = start_error("exit 3", Duration::from_secs(10));
        assert!(e.contains("exited (exit status: 3)"), "{e}");
        assert!(e.contains("saying nothing; try `"), "{e}");
        let e = start_error(
            "echo >&2 'hubble-agent: thinking'; exec sleep 30",
            Duration::from_millis(300),
        );
        assert_eq!(
            e,
            "the agent did not attach its datapath within 300ms and was stopped: hubble-agent: thinking"
        );
    }

    #[test]
    fn an_attached_agent_is_stopped_and_its_counters_read() {
        let dir = tempfile::tempdir().unwrap();
        let exe = fake_agent(
            dir.path(),
            "trap 'echo >&2 \"hubble-agent: flows=7 lost_samples=2\"; exit 0' TERM\necho >&2 'hubble-agent: datapath attached to 2 endpoints'\nwhile :; do sleep 0.05; done",
        );
        let a = AgentChild::start(&exe, Path::new("lab.toml"), &[]).unwrap();
        let rep = a.stop().unwrap();
        assert_eq!((rep.flows, rep.lost), (7, 2), "{:?}", rep.lines);
    }
}
