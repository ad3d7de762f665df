//! Who can reach a started agent's Hubble API, through the real binary (`serve-flows`, no
//! privileges): plaintext TCP stays on loopback unless `--disable-server-tls`, the unix socket
//! is 0660, and a second agent on the same socket refuses to start instead of taking it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const FLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");

/// A serving agent, killed when dropped.
struct Agent {
    child: Child,
    /// Its stderr up to and including "Hubble API on …".
    log: Vec<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_flows(socket: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["serve-flows", FLOWS, "--duration", "20s", "--socket"])
        .arg(socket)
        .args(extra);
    c
}

/// Starts an agent and reads its stderr until it says where it serves.
fn start(socket: &Path, extra: &[&str]) -> Agent {
    let mut child = serve_flows(socket, extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hubble-agent");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the agent exited before serving: {log:?}"))
            .unwrap();
        let done = line.contains("Hubble API on");
        log.push(line);
        if done {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Agent { child, log }
}

/// "… Hubble API on unix:///p and 127.0.0.1:PORT (…)" → "127.0.0.1:PORT".
fn tcp_of(agent: &Agent) -> std::net::SocketAddr {
    let line = agent.log.last().unwrap();
    let rest = line.split(" and ").nth(1).expect("a TCP address");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn without_tls_the_default_port_is_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(&dir.path().join("h.sock"), &["--listen-address", ":0"]);
    let addr = tcp_of(&a);
    assert_eq!(
        addr.ip(),
        std::net::Ipv4Addr::LOCALHOST,
        "plaintext on {addr}: {:?}",
        a.log
    );
    assert!(
        a.log.iter().any(|l| l.contains("(loopback) only")
            && l.contains("--tls-cert-file")
            && l.contains("--disable-server-tls")),
        "{:?}",
        a.log
    );
}

#[test]
fn plaintext_beyond_loopback_needs_the_flag_and_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve_flows(
        &dir.path().join("h.sock"),
        &["--listen-address", "0.0.0.0:0"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("refusing to serve the Hubble API in plaintext on 0.0.0.0:"),
        "{err}"
    );
    assert!(!dir.path().join("h.sock").exists(), "nothing was bound");

    let a = start(
        &dir.path().join("h.sock"),
        &["--listen-address", "0.0.0.0:0", "--hubble-disable-tls"],
    );
    assert!(tcp_of(&a).ip().is_unspecified());
    assert!(
        a.log
            .iter()
            .any(|l| l.contains("serving plaintext on 0.0.0.0:")
                && l.contains("anyone who can reach it reads every flow")),
        "{:?}",
        a.log
    );
}

#[test]
fn the_socket_is_0660_and_a_live_one_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let first = start(&sock, &["--listen-address", ""]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");

    let out = serve_flows(&sock, &["--listen-address", ""])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another Hubble server answers on"), "{err}");
    // The first agent still serves on its socket.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());

    // Killed, it leaves its socket file behind: the next agent replaces it.
    drop(first);
    assert!(sock.exists());
    let _second = start(&sock, &["--listen-address", ""]);
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
}

#[test]
fn an_unknown_socket_group_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve_flows(
        &dir.path().join("h.sock"),
        &["--socket-group", "no-such-group-hl"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no group named \"no-such-group-hl\""), "{err}");
}
