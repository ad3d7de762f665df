//! The flow-exporter binary over mutual TLS (the CLI's `--tls*` flags) against an in-process
//! Hubble server: with the CA and a client certificate every flow is exported; without a
//! client certificate the server refuses the handshake and nothing is written.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{FakeHubble, has_flow, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files.
fn certs(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "exporter test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for (name, sans, usage) in [
        (
            "server",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "client",
            vec![SanType::DnsName("hubble-client".try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_mutual_tls_and_is_refused_without_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs(d);
    let tls = hubble::tls::ServerTls::load(
        &d.join("server.crt"),
        &d.join("server.key"),
        &[d.join("ca.crt")],
    )
    .unwrap();
    let hubble = FakeHubble::new(true);
    let (server, addr) = hubble.serve_tls(tls).await;

    let run = |out: &Path, client_cert: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flow-exporter"));
        c.arg("--server")
            .arg(addr.to_string())
            .arg("--tls")
            .arg("--tls-ca-cert-files")
            .arg(d.join("ca.crt"))
            .arg("--tls-server-name")
            .arg("localhost")
            .arg("--output")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if client_cert {
            c.arg("--tls-client-cert-file")
                .arg(d.join("client.crt"))
                .arg("--tls-client-key-file")
                .arg(d.join("client.key"));
        }
        c.spawn().unwrap()
    };

    let good = d.join("good.log");
    let child = run(&good, true);
    hubble.wait_follows(1).await;
    hubble.push_range(0..50);
    wait_until("all 50 flows exported over TLS", || has_flow(&good, 49)).await;
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&good).unwrap();
    assert_eq!(text.lines().count(), 50, "{text}");

    let bad = d.join("bad.log");
    let child = run(&bad, false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let written = std::fs::read_to_string(&bad).unwrap_or_default();
    assert!(
        written.is_empty(),
        "no flow without a client certificate: {written}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retrying"),
        "the refused handshake is reported: {err}"
    );
    server.stop().await;
}
