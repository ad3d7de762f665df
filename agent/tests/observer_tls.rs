//! The agent's Hubble API over TLS and mutual TLS, in process over real TCP on 127.0.0.1,
//! with certificates from `agent::certs::generate`: who gets in, who is refused, what the
//! Peer service announces, that refused clients do not stop the server, and that clients
//! that never finish their handshake are let go. No privileges.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent::observer::{Listeners, LocalObserver, ServeOptions, serve};
use hubble::client;
use hubble::listen::ServerLimits;
use hubble::tls::{ClientTls, ClientTlsArgs, ServerTls};
use hubble_api::flow::{Endpoint, Flow};
use hubble_api::observer::GetFlowsRequest;
use hubble_api::peer::NotifyRequest;
use hubble_api::peer::peer_client::PeerClient;
use tokio::sync::oneshot;

mod common;
#[path = "support/raw_peer.rs"]
mod raw_peer;

const T: Duration = Duration::from_secs(5);

struct Server {
    addr: String,
    certs: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A server with 5 flows on 127.0.0.1:0; mutual TLS when `mutual`.
    async fn start(mutual: bool) -> Server {
        Self::start_with(mutual, ServerLimits::default()).await
    }

    /// [`Server::start`] within `limits`.
    async fn start_with(mutual: bool, limits: ServerLimits) -> Server {
        let certs = tempfile::tempdir().unwrap();
        agent::certs::generate(certs.path(), "default", false).unwrap();
        let p = |f: &str| certs.path().join(f);
        let client_cas = if mutual { vec![p("ca.crt")] } else { vec![] };
        let tls = ServerTls::load(&p("server.crt"), &p("server.key"), &client_cas).unwrap();
        let obs = Arc::new(LocalObserver::new(15, "lab-node-1").unwrap());
        for i in 0..5 {
            obs.push_flow(Flow {
                node_name: "lab-node-1".into(),
                source: Some(Endpoint {
                    pod_name: format!("pod-{i}"),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let l = Listeners::bind(&ServeOptions {
            socket: None,
            listen_address: Some("127.0.0.1:0".into()),
            tls: Some(tls),
            limits,
            ..Default::default()
        })
        .unwrap();
        let addr = l.tcp_addr().unwrap().to_string();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            serve(obs, l, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            addr,
            certs,
            stop: Some(tx),
            task,
        }
    }

    fn file(&self, f: &str) -> PathBuf {
        self.certs.path().join(f)
    }

    fn client(&self, ca: bool, keypair: bool, server_name: Option<&str>) -> ClientTls {
        let ca_files = if ca {
            vec![self.file("ca.crt")]
        } else {
            vec![]
        };
        let (c, k) = (self.file("client.crt"), self.file("client.key"));
        ClientTls::new(
            &ca_files,
            keypair.then_some((c.as_path(), k.as_path())),
            server_name.map(str::to_string),
            false,
        )
        .unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(T, self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

/// Flows read with `tls`, or the error's text.
async fn read_flows(addr: &str, tls: Option<&ClientTls>) -> Result<usize, String> {
    let ch = client::connect_tls(addr, T, tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut s = client::get_flows(
        ch,
        GetFlowsRequest {
            number: 100,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut n = 0;
    while let Some(r) = s.next().await {
        r.map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_of_the_ca() {
    let srv = Server::start(true).await;
    let agent_name = "lab-node-1.default.hubble-grpc.cilium.io";

    // The CA, a client certificate and the node's Hubble server name: in.
    let good = srv.client(true, true, Some(agent_name));
    assert_eq!(read_flows(&srv.addr, Some(&good)).await, Ok(5));
    // The default server name is the host dialled: 127.0.0.1 is in the certificate too.
    assert_eq!(
        read_flows(&srv.addr, Some(&srv.client(true, true, None))).await,
        Ok(5)
    );

    // No client certificate: refused, and the error names the server's TLS alert (it
    // arrives after the handshake; HTTP/2 alone would only say the connection closed).
    let err = read_flows(&srv.addr, Some(&srv.client(true, false, Some(agent_name))))
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    // A client certificate from another CA: refused.
    let other = tempfile::tempdir().unwrap();
    agent::certs::generate(other.path(), "default", false).unwrap();
    let foreign = ClientTls::new(
        &[srv.file("ca.crt")],
        Some((
            other.path().join("client.crt").as_path(),
            other.path().join("client.key").as_path(),
        )),
        None,
        false,
    )
    .unwrap();
    assert!(read_flows(&srv.addr, Some(&foreign)).await.is_err());
    // Plain text to a TLS port: refused.
    assert!(read_flows(&srv.addr, None).await.is_err());
    // A server name the certificate does not carry: the client refuses the server.
    let err = read_flows(
        &srv.addr,
        Some(&srv.client(true, true, Some("relay.example.org"))),
    )
    .await
    .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    // Without our CA the server is not trusted...
    assert!(
        read_flows(&srv.addr, Some(&srv.client(false, true, None)))
            .await
            .is_err()
    );
    // ...unless verification is skipped (--tls-allow-insecure).
    let insecure = ClientTlsArgs {
        tls: true,
        tls_allow_insecure: true,
        tls_client_cert_file: Some(srv.file("client.crt")),
        tls_client_key_file: Some(srv.file("client.key")),
        ..Default::default()
    }
    .client_tls(&srv.addr)
    .unwrap();
    assert_eq!(read_flows(&srv.addr, insecure.as_ref()).await, Ok(5));

    // After every refusal the server still serves.
    assert_eq!(read_flows(&srv.addr, Some(&good)).await, Ok(5));

    // Peer announces the TLS server name clients (a relay) must check.
    let ch = client::connect_tls(&srv.addr, T, Some(&good))
        .await
        .unwrap();
    let mut peers = PeerClient::new(ch)
        .notify(NotifyRequest {})
        .await
        .unwrap()
        .into_inner();
    let me = peers.message().await.unwrap().unwrap();
    assert_eq!(me.name, "lab-node-1");
    assert_eq!(me.tls.unwrap().server_name, agent_name);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_without_client_cas_and_the_tls_scheme() {
    let srv = Server::start(false).await;
    // No client certificate needed.
    assert_eq!(
        read_flows(&srv.addr, Some(&srv.client(true, false, None))).await,
        Ok(5)
    );
    // `tls://host:port` turns TLS on by itself, as in Hubble; our CA is not a system CA.
    let args = ClientTlsArgs {
        tls_ca_cert_files: vec![srv.file("ca.crt")],
        ..Default::default()
    };
    let url = format!("tls://{}", srv.addr);
    assert!(args.wants_tls(&url) && !args.wants_tls(&srv.addr));
    let tls = args.client_tls(&url).unwrap();
    assert_eq!(read_flows(&url, tls.as_ref()).await, Ok(5));
    // Plain text to the TLS port fails (the server reports the bad handshake and goes on).
    assert!(read_flows(&srv.addr, None).await.is_err());
    assert_eq!(read_flows(&url, tls.as_ref()).await, Ok(5));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_never_finished_time_out_and_the_oldest_make_room() {
    // Bounded in time: clients that never say ClientHello are let go...
    let limits = ServerLimits {
        tls_handshake_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let srv = Server::start_with(true, limits).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(raw_peer::idle_tcp(&srv.addr).await);
    }
    // ...and do not keep a prompt client out meanwhile.
    let good = srv.client(true, true, None);
    let n = tokio::time::timeout(T, read_flows(&srv.addr, Some(&good))).await;
    assert_eq!(n.expect("a prompt client is answered"), Ok(5));
    for s in &mut idle {
        assert!(
            raw_peer::closed_within(s, T).await,
            "an unfinished handshake times out"
        );
    }
    srv.stop().await;

    // Bounded in number: past the cap the oldest pending handshakes go, long before their
    // timeout, and the newest wait on.
    let limits = ServerLimits {
        tls_handshake_timeout: Duration::from_secs(60),
        tls_max_pending_handshakes: 4,
        ..Default::default()
    };
    let srv = Server::start_with(true, limits).await;
    let mut older = Vec::new();
    for _ in 0..4 {
        older.push(raw_peer::idle_tcp(&srv.addr).await);
    }
    let mut newer = Vec::new();
    for _ in 0..4 {
        newer.push(raw_peer::idle_tcp(&srv.addr).await);
    }
    for s in &mut older {
        assert!(
            raw_peer::closed_within(s, T).await,
            "the oldest pending handshakes make room"
        );
    }
    for s in &mut newer {
        assert!(
            !raw_peer::closed_within(s, Duration::from_millis(200)).await,
            "the newest pending handshakes wait on"
        );
    }
    let good = srv.client(true, true, None);
    let n = tokio::time::timeout(T, read_flows(&srv.addr, Some(&good))).await;
    assert_eq!(n.expect("a prompt client is answered"), Ok(5));
    srv.stop().await;
}

#[test]
fn bad_files_are_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    agent::certs::generate(dir.path(), "default", false).unwrap();
    let p = |f: &str| dir.path().join(f);
    let missing = Path::new("/nonexistent/ca.pem");
    let e = ServerTls::load(&p("server.crt"), &p("server.key"), &[missing.into()]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot load cert '/nonexistent/ca.pem'"),
        "{e}"
    );
    // A key where a certificate should be.
    let e = ServerTls::load(&p("server.key"), &p("server.key"), &[]).unwrap_err();
    assert!(e.to_string().contains("server.key"), "{e}");
    let e = ClientTlsArgs {
        tls_client_cert_file: Some(p("client.crt")),
        ..Default::default()
    }
    .client_tls("localhost:4245")
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "certificate and private key are both required, but only one was provided"
    );
    // Refuses to overwrite without --force.
    let e = agent::certs::generate(dir.path(), "default", false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    agent::certs::generate(dir.path(), "default", true).unwrap();
}

/// The real binaries: `hubble-agent serve-replay` with mutual TLS on TCP, and the `hubble`
/// CLI with Hubble's TLS flags (and their HUBBLE_* environment twins).
#[test]
fn hubble_cli_observes_a_replaying_agent_over_mutual_tls() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let Some(hubble) = common::hubble_bin() else {
        return common::skip_or_fail(
            "hubble CLI over mutual TLS",
            "no hubble binary (cargo build -p hubble)",
        );
    };
    let certs = tempfile::tempdir().unwrap();
    agent::certs::generate(certs.path(), "default", false).unwrap();
    let p = |f: &str| certs.path().join(f).display().to_string();
    let rec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/datapath/mini.hlrec"
    );
    let mut agent = Command::new(env!("CARGO_BIN_EXE_hubble-agent"))
        .args(["serve-replay", rec, "--socket", "", "--duration", "30s"])
        .args(["--listen-address", "127.0.0.1:0"])
        .args(["--hubble-tls-cert-file", &p("server.crt")])
        .args(["--tls-key-file", &p("server.key")])
        .args(["--tls-client-ca-files", &p("ca.crt")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = agent.stderr.take().unwrap();
    let _agent = Kill(agent);
    // "hubble-agent: Hubble API on 127.0.0.1:PORT (mTLS) (...)"
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("agent output").unwrap();
        if let Some(rest) = line.strip_prefix("hubble-agent: Hubble API on ") {
            assert!(rest.contains("(mTLS)"), "{line}");
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let observe = |server: &str, extra: &[&str], env: &[(&str, String)]| {
        let out = Command::new(&hubble)
            .args(["observe", "--server", server, "--last", "3", "-o", "json"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = observe(
        &addr,
        &[
            "--tls",
            "--tls-ca-cert-files",
            &p("ca.crt"),
            "--tls-client-cert-file",
            &p("client.crt"),
            "--tls-client-key-file",
            &p("client.key"),
            "--tls-server-name",
            "lab-node-1.default.hubble-grpc.cilium.io",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["flow"]["verdict"].is_string(), "{l}");
    }
    // The same through the environment, with the tls:// scheme instead of --tls.
    let (code, out, err) = observe(
        &format!("tls://{addr}"),
        &[],
        &[
            ("HUBBLE_TLS_CA_CERT_FILES", p("ca.crt")),
            ("HUBBLE_TLS_CLIENT_CERT_FILE", p("client.crt")),
            ("HUBBLE_TLS_CLIENT_KEY_FILE", p("client.key")),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3);
    // No client certificate: refused, one error, exit code 2.
    let (code, out, err) = observe(&addr, &["--tls", "--tls-ca-cert-files", &p("ca.crt")], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("Error: "), "{err}");
}
