//! Real clients of the metrics endpoint for the metrics tests: a Prometheus server (Debian's
//! package) on loopback with a config and data directory of its own, and curl (for HTTPS
//! and mutual TLS). Both are required under CI=true; elsewhere a test without them skips.
#![allow(dead_code)] // each test file uses some

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether `tool` runs; a failure under CI=true when it does not.
pub fn have(tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        !ci(),
        "{tool} is needed under CI=true (apt-get install {tool})"
    );
    eprintln!("{tool} not found: part of the test is skipped");
    false
}

/// A Prometheus server scraping one target every second; stopped on drop.
pub struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target` (HOST:PORT) with its
    /// config and data under `dir`; `flags` are added (e.g. a feature flag). `None` (a
    /// failure under CI=true) without the binary.
    pub fn start(dir: &Path, target: &str, flags: &[&str]) -> Option<Prometheus> {
        if !have("prometheus") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: hubble\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Some(Prometheus {
            child,
            addr: format!("127.0.0.1:{port}"),
        })
    }

    /// Polls the HTTP API at `path_and_query` every half second for up to 30 s until `done`
    /// accepts a response body; returns it, or panics with the last body.
    pub fn wait_for(&self, path_and_query: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            if let Some(body) = http_get(&self.addr, path_and_query) {
                if done(&body) {
                    return body;
                }
                last = body;
            }
        }
        panic!("Prometheus did not answer {path_and_query} as expected within 30 s: {last}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a plain HTTP/1.1 GET, if the server answered.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// What curl got: the body, then a last line `<HTTP status> <HTTP version>`.
pub struct Fetched {
    pub ok: bool,
    pub body: String,
    pub status: String,
    pub version: String,
    pub stderr: String,
}

/// GETs `url` with curl and `args` (TLS files…), within 10 s.
pub fn curl(url: &str, args: &[&str]) -> Fetched {
    let o: Output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, last) = out.rsplit_once('\n').unwrap_or(("", &out));
    let (status, version) = last.split_once(' ').unwrap_or((last, ""));
    Fetched {
        ok: o.status.success(),
        body: body.to_string(),
        status: status.to_string(),
        version: version.to_string(),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}
