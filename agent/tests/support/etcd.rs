//! A throwaway etcd (Debian's etcd-server) for the kvstore tests: loopback, random free
//! ports, data in a tempdir, killed when dropped. Missing etcd skips a test with a message,
//! or fails it under CI=true.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway etcd member: killed when dropped.
pub struct EtcdServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// (server certificate, key, client CA): serves https and asks for client certificates.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdServer {
    /// A running etcd, or None (with a message) when it is not installed outside CI.
    pub fn start() -> Option<EtcdServer> {
        Self::start_with(None)
    }

    #[allow(dead_code)] // not every test crate that shares this file uses TLS
    /// [`EtcdServer::start`] serving TLS with (certificate, key) and requiring client
    /// certificates of `client_ca`.
    pub fn start_tls(cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Option<EtcdServer> {
        Self::start_with(Some((cert, key, client_ca)))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Option<EtcdServer> {
        let bin = PathBuf::from("/usr/bin/etcd");
        if !bin.exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "etcd is missing: apt-get install -y etcd-server"
            );
            eprintln!("skipped: no /usr/bin/etcd (apt-get install -y etcd-server)");
            return None;
        }
        let mut s = EtcdServer {
            bin,
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            child: None,
        };
        s.launch();
        Some(s)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn launch(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let mut cmd = Command::new(&self.bin);
        if let Some((cert, key, ca)) = &self.tls {
            cmd.arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .arg("--trusted-ca-file")
                .arg(ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.address()).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
