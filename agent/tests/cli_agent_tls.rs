//! The `hubble` CLI against a running agent (`hubble-agent serve-replay`) over mutual TLS,
//! through the real binaries: the agent's certificate, key and client CA files replaced by
//! those of another CA while it runs (the CLI gets in with the new CA's certificates only;
//! a half-written certificate never replaces the good one), and the debugging commands
//! `hubble watch peers` and `hubble reflect`. No privileges.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

/// The agent's node name: its certificate's name for the CLI's --tls-server-name.
const SERVER_NAME: &str = "lab-node-1.default.hubble-grpc.cilium.io";

/// A serving agent, killed when dropped.
struct Agent {
    child: Child,
    /// Its TCP address.
    addr: String,
    /// Its stderr after "Hubble API on …".
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an agent replaying a recording on 127.0.0.1 with mutual TLS from `dir`'s
/// ca.crt, server.crt and server.key.
fn start_agent(dir: &Path) -> Agent {
    let rec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/datapath/mini.hlrec"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubble-agent"))
        .args(["serve-replay", rec, "--socket", "", "--duration", "60s"])
        .args(["--listen-address", "127.0.0.1:0"])
        .arg("--tls-cert-file")
        .arg(dir.join("server.crt"))
        .arg("--tls-key-file")
        .arg(dir.join("server.key"))
        .arg("--tls-client-ca-files")
        .arg(dir.join("ca.crt"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut agent = Agent {
        child,
        addr: String::new(),
        log: Arc::default(),
    };
    agent.addr = loop {
        let line = lines.next().expect("agent output").unwrap();
        if let Some(rest) = line.strip_prefix("hubble-agent: Hubble API on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let sink = agent.log.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    agent
}

fn copy(from: &Path, to: &Path, files: &[&str]) {
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// `hubble <args> --server addr` over mutual TLS with the CA and client certificate of
/// `certs`.
fn hubble_tls(hubble: &Path, args: &[&str], addr: &str, certs: &Path) -> Command {
    let p = |f: &str| certs.join(f);
    let mut c = Command::new(hubble);
    c.args(args)
        .args(["--server", addr, "--tls", "--tls-ca-cert-files"])
        .arg(p("ca.crt"))
        .arg("--tls-client-cert-file")
        .arg(p("client.crt"))
        .arg("--tls-client-key-file")
        .arg(p("client.key"))
        .args(["--tls-server-name", SERVER_NAME, "--timeout", "3s"]);
    c
}

/// `hubble observe --last 1`: the exit code and stderr.
fn observe(hubble: &Path, addr: &str, certs: &Path) -> (Option<i32>, String) {
    let out = hubble_tls(
        hubble,
        &["observe", "--last", "1", "-o", "json"],
        addr,
        certs,
    )
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
    let agent = start_agent(live.path());
    let (addr, log) = (agent.addr.clone(), agent.log.clone());

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
    let before = log.lock().unwrap().len();
    let cert = std::fs::read_to_string(old.path().join("server.crt")).unwrap();
    std::fs::write(l("server.crt"), &cert[..cert.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let warned = |log: &[String]| {
        log[before..]
            .iter()
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
    let warning = log[before..]
        .iter()
        .find(|l| l.contains("update failed"))
        .unwrap();
    assert!(
        warning.starts_with("hubble-agent: ") && warning.contains("server.crt"),
        "{warning}"
    );
}

#[test]
fn watch_peers_and_reflect_against_an_agent() {
    let Some(hubble) = common::hubble_bin() else {
        return common::skip_or_fail(
            "hubble watch peers and reflect",
            "no hubble binary (cargo build -p hubble)",
        );
    };
    let certs = tempfile::tempdir().unwrap();
    agent::certs::generate(certs.path(), "default", false).unwrap();
    let agent = start_agent(certs.path());

    // The agent announces itself with the name its certificate carries; the stream stays
    // open for changes.
    let child = hubble_tls(&hubble, &["watch", "peers"], &agent.addr, certs.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut watch = Kill(child);
    let stdout = watch.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a peer within 10 s (the CLI's error is above)");
    assert_eq!(
        first,
        format!(
            "PEER_ADDED   {} mini-node (TLS.ServerName: mini-node.default.hubble-grpc.cilium.io)",
            agent.addr
        )
    );
    assert!(
        watch.0.try_wait().unwrap().is_none(),
        "watch keeps watching"
    );
    drop(watch);

    // reflect: the files of observer.Observer and peer.Peer with their imports, each once,
    // one JSON object a line; health and reflection left out.
    let out = hubble_tls(&hubble, &["reflect"], &agent.addr, certs.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "observer/observer.proto",
            "google/protobuf/any.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/field_mask.proto",
            "flow/flow.proto",
            "relay/relay.proto",
            "peer/peer.proto",
        ]
    );
    let service = |file: &serde_json::Value| file["service"][0]["name"].clone();
    assert_eq!(service(&files[0]), "Observer");
    assert_eq!(service(&files[7]), "Peer");
    assert_eq!(
        files[7]["service"][0]["method"][0]["server_streaming"],
        true
    );
}
