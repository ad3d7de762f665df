//! Certificate rotation on a running agent, through the real binaries: `hubble-agent
//! serve-replay` with mutual TLS, its certificate, key and client CA files replaced by those
//! of another CA while it runs, and the `hubble` CLI, which gets in with the new CA's
//! certificates only. A half-written certificate never replaces the good one. No privileges.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

/// The agent's node name: its certificate's name for the CLI's --tls-server-name.
const SERVER_NAME: &str = "lab-node-1.default.hubble-grpc.cilium.io";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn copy(from: &Path, to: &Path, files: &[&str]) {
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// `hubble observe --last 1` over mutual TLS with the CA and client certificate of `certs`:
/// the exit code and stderr.
fn observe(hubble: &Path, addr: &str, certs: &Path) -> (Option<i32>, String) {
    let p = |f: &str| certs.join(f);
    let out = Command::new(hubble)
        .args([
            "observe", "--server", addr, "--last", "1", "-o", "json", "--tls",
        ])
        .arg("--tls-ca-cert-files")
        .arg(p("ca.crt"))
        .arg("--tls-client-cert-file")
        .arg(p("client.crt"))
        .arg("--tls-client-key-file")
        .arg(p("client.key"))
        .args(["--tls-server-name", SERVER_NAME, "--timeout", "3s"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_running_agent_serves_rotated_certificates() {
    let Some(hubble) = common::hubble_bin() else {
        return common::skip_or_fail(
            "hubble CLI against rotated certificates",
            "no hubble binary (cargo build -p hubble)",
        );
    };
    let (old, new, live) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    agent::certs::generate(old.path(), "default", false).unwrap();
    agent::certs::generate(new.path(), "default", false).unwrap();
    let server_files = ["ca.crt", "server.crt", "server.key"];
    copy(old.path(), live.path(), &server_files);
    let l = |f: &str| live.path().join(f);
    let rec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/datapath/mini.hlrec"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubble-agent"))
        .args(["serve-replay", rec, "--socket", "", "--duration", "60s"])
        .args(["--listen-address", "127.0.0.1:0"])
        .arg("--tls-cert-file")
        .arg(l("server.crt"))
        .arg("--tls-key-file")
        .arg(l("server.key"))
        .arg("--tls-client-ca-files")
        .arg(l("ca.crt"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _agent = Kill(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("agent output").unwrap();
        if let Some(rest) = line.strip_prefix("hubble-agent: Hubble API on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });

    let (code, err) = observe(&hubble, &addr, old.path());
    assert_eq!(code, Some(0), "{err}");

    // Rotation to another CA: the agent's keypair and client CAs, in place, while it runs.
    copy(new.path(), live.path(), &server_files);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, err) = observe(&hubble, &addr, new.path());
        if code == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "rotation not picked up: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The old CA's client sees a certificate it does not trust.
    let (code, err) = observe(&hubble, &addr, old.path());
    assert_eq!(code, Some(2), "{err}");

    // Half a certificate: one warning, and the new certificate is still served.
    let cert = std::fs::read_to_string(old.path().join("server.crt")).unwrap();
    std::fs::write(l("server.crt"), &cert[..cert.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let warned = |log: &[String]| {
        log.iter()
            .filter(|l| l.contains("TLS keypair update failed, keeping the previous one"))
            .count()
    };
    while warned(&log.lock().unwrap()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no warning for a broken certificate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, err) = observe(&hubble, &addr, new.path());
    assert_eq!(code, Some(0), "{err}");
    let log = log.lock().unwrap();
    assert_eq!(warned(&log), 1, "{log:#?}");
    let warning = log.iter().find(|l| l.contains("update failed")).unwrap();
    assert!(
        warning.starts_with("hubble-agent: ") && warning.contains("server.crt"),
        "{warning}"
    );
}
