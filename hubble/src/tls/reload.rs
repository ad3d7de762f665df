//! TLS material that follows its files, as Cilium's certloader: a certificate with its key,
//! or a CA pool (as a verifier), loaded again whenever a file changes ([`super::watch`]).
//!
//! The rustls configs hold these as their certificate resolver and certificate verifier,
//! so every handshake takes the material current at its start. A load that fails (a file
//! half written, a key that does not match its certificate, no certificate in a CA file)
//! keeps the previous material and says so in one line on stderr.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::rustls::{self, pki_types};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use pki_types::{CertificateDer, ServerName, UnixTime};

use super::watch::{self, OnChange};
use super::{TlsError, load_certs, load_key, provider, root_store};

/// How one kind of material is read from its files.
type Loader<T> = fn(&[PathBuf]) -> Result<T, TlsError>;

/// The current value of `T`, loaded from `files` and loaded again when they change.
pub(crate) struct Reloadable<T> {
    /// What the material is, in log lines ("keypair", "certificate authority").
    what: &'static str,
    files: Vec<PathBuf>,
    load: Loader<T>,
    current: RwLock<T>,
}

impl<T> std::fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Reloadable<T> {
    /// Loads `files` (an error if that fails) and watches them from now on.
    fn watched(
        what: &'static str,
        files: Vec<PathBuf>,
        load: Loader<T>,
    ) -> Result<Arc<Self>, TlsError> {
        let seen = watch::snapshot(&files);
        let first = load(&files)?;
        let r = Arc::new(Reloadable {
            what,
            files: files.clone(),
            load,
            current: RwLock::new(first),
        });
        let owner: std::sync::Weak<dyn OnChange> = Arc::downgrade(&r) as _;
        watch::watch(files, seen, owner);
        Ok(r)
    }

    fn get(&self) -> T {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<T: Clone + Send + Sync> OnChange for Reloadable<T> {
    fn changed(&self) {
        let files = self
            .files
            .iter()
            .map(|f| format!("'{}'", f.display()))
            .collect::<Vec<_>>()
            .join(", ");
        match (self.load)(&self.files) {
            Ok(v) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = v;
                eprintln!("{}: TLS {} updated from {files}", program(), self.what);
            }
            Err(e) => eprintln!(
                "{}: TLS {} update failed, keeping the previous one: {e}",
                program(),
                self.what
            ),
        }
    }
}

/// The running program's name, which starts our log lines ("hubble-agent", "hubble-relay").
fn program() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "hubble".into())
}

/// A certificate chain and its private key.
pub(crate) type Keypair = Reloadable<Arc<CertifiedKey>>;

impl Keypair {
    /// The keypair of `cert` and `key`, followed.
    pub(crate) fn follow(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        Reloadable::watched("keypair", vec![cert, key], load_keypair)
    }
}

/// `files`: the certificate chain, then the key; they must match.
fn load_keypair(files: &[PathBuf]) -> Result<Arc<CertifiedKey>, TlsError> {
    let [cert, key] = files else {
        unreachable!("a keypair is two files")
    };
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    CertifiedKey::from_der(chain, key_der, &provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Key {
            path: key.clone(),
            reason: match e {
                rustls::Error::InconsistentKeys(_) => {
                    format!("does not match the certificate '{}'", cert.display())
                }
                e => e.to_string(),
            },
        })
}

impl ResolvesServerCert for Keypair {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for Keypair {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server's check of client certificates against CA files (mutual TLS).
pub(crate) type ClientCas = Reloadable<Arc<dyn ClientCertVerifier>>;

impl ClientCas {
    /// The client certificate check of `ca_files`, followed.
    pub(crate) fn follow(ca_files: &[PathBuf]) -> Result<Arc<Self>, TlsError> {
        Reloadable::watched("certificate authority", ca_files.to_vec(), load_client_cas)
    }
}

fn load_client_cas(files: &[PathBuf]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(files)?), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

impl ClientCertVerifier for ClientCas {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: they would have to outlive every reload. Without them a client sends the
    /// certificate it has (RFC 8446 4.2.4; Go's and rustls's clients do).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// A client's check of server certificates against CA files.
pub(crate) type ServerCas = Reloadable<Arc<WebPkiServerVerifier>>;

impl ServerCas {
    /// The server certificate check of `ca_files`, followed.
    pub(crate) fn follow(ca_files: &[PathBuf]) -> Result<Arc<Self>, TlsError> {
        Reloadable::watched("certificate authority", ca_files.to_vec(), load_server_cas)
    }
}

fn load_server_cas(files: &[PathBuf]) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(files)?), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

impl ServerCertVerifier for ServerCas {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! Real handshakes over loopback while the files under them are rotated.

    use std::path::Path;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::tls::{ClientTls, ServerTls};

    /// Longest wait for a rotation to be picked up (polls are 1 s apart).
    const PICKED_UP: Duration = Duration::from_secs(6);
    /// Long enough for at least one poll and its settling to have happened.
    const ONE_POLL: Duration = Duration::from_millis(1600);

    struct Ca(rcgen::Issuer<'static, rcgen::KeyPair>, String);

    fn ca(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = p.self_signed(&key).unwrap().pem();
        Ca(rcgen::Issuer::new(p, key), pem)
    }

    /// A certificate for `localhost` (cert PEM, key PEM, cert DER).
    struct Leaf {
        cert: String,
        key: String,
        der: Vec<u8>,
    }

    fn leaf(ca: &Ca, cn: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca.0).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn put(dir: &Path, name: &str, content: &str) {
        std::fs::write(dir.join(name), content).unwrap();
    }

    /// A TLS server on loopback with one acceptor made now: each connection gets the
    /// client certificate it presented (empty without one) and is closed.
    async fn serve(tls: &ServerTls) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = tls.acceptor();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let seen = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c[0].to_vec())
                        .unwrap_or_default();
                    let _ = s.write_all(&seen).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    }

    /// One handshake: the server's certificate and the client certificate the server saw.
    async fn dial(
        addr: std::net::SocketAddr,
        tls: &ClientTls,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let go = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let mut s = tls
                .handshake("localhost", tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut seen = Vec::new();
            s.0.read_to_end(&mut seen)
                .await
                .map_err(|e| e.to_string())?;
            let server = s.0.get_ref().1.peer_certificates().unwrap()[0].to_vec();
            Ok((server, seen))
        };
        tokio::time::timeout(Duration::from_secs(5), go)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }

    /// Dials until the server presents `want` (and the server saw `client`).
    async fn until_presented(
        addr: std::net::SocketAddr,
        tls: &ClientTls,
        want: &[u8],
        client: &[u8],
    ) {
        let deadline = Instant::now() + PICKED_UP;
        loop {
            let got = dial(addr, tls).await;
            if matches!(&got, Ok((s, c)) if s == want && c == client) {
                return;
            }
            assert!(Instant::now() < deadline, "rotation not picked up: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// For a poll's time, every handshake presents `want`.
    async fn keeps_presenting(addr: std::net::SocketAddr, tls: &ClientTls, want: &[u8]) {
        let end = Instant::now() + ONE_POLL;
        while Instant::now() < end {
            let (server, _) = dial(addr, tls).await.unwrap();
            assert!(server == want, "a broken rotation replaced the certificate");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn a_rotated_keypair_is_presented_and_a_broken_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = ca("rotation CA");
        let (a, b, c) = (leaf(&ca, "a"), leaf(&ca, "b"), leaf(&ca, "c"));
        put(d, "ca.crt", &ca.1);
        put(d, "tls.crt", &a.cert);
        put(d, "tls.key", &a.key);
        let tls = ServerTls::load(&d.join("tls.crt"), &d.join("tls.key"), &[]).unwrap();
        let addr = serve(&tls).await;
        let client = ClientTls::new(&[d.join("ca.crt")], None, None, false).unwrap();
        assert_eq!(dial(addr, &client).await.unwrap().0, a.der);

        // Rewritten in place, key first: the acceptor made before presents the new one.
        put(d, "tls.key", &b.key);
        put(d, "tls.crt", &b.cert);
        until_presented(addr, &client, &b.der, &[]).await;

        // Half a certificate, then a whole one that does not match the key: both kept out.
        put(d, "tls.crt", &c.cert[..c.cert.len() / 2]);
        keeps_presenting(addr, &client, &b.der).await;
        put(d, "tls.crt", &c.cert);
        keeps_presenting(addr, &client, &b.der).await;
        // Its key arrives: now it is whole.
        put(d, "tls.key", &c.key);
        until_presented(addr, &client, &c.der, &[]).await;

        // Replaced by a rename, as `kubectl` secret volumes do through a symlink.
        put(d, "new.crt", &a.cert);
        put(d, "new.key", &a.key);
        std::fs::rename(d.join("new.key"), d.join("tls.key")).unwrap();
        std::fs::rename(d.join("new.crt"), d.join("tls.crt")).unwrap();
        until_presented(addr, &client, &a.der, &[]).await;
    }

    #[tokio::test]
    async fn mutual_tls_follows_a_new_ca_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (old, new) = (ca("old CA"), ca("new CA"));
        let (server1, client1) = (leaf(&old, "server"), leaf(&old, "client"));
        let (server2, client2) = (leaf(&new, "server"), leaf(&new, "client"));
        let write = |ca: &Ca, server: &Leaf, client: &Leaf| {
            put(d, "ca.crt", &ca.1);
            put(d, "server.crt", &server.cert);
            put(d, "server.key", &server.key);
            put(d, "client.crt", &client.cert);
            put(d, "client.key", &client.key);
        };
        write(&old, &server1, &client1);
        let p = |f: &str| d.join(f);
        let tls = ServerTls::load(&p("server.crt"), &p("server.key"), &[p("ca.crt")]).unwrap();
        assert!(tls.is_mutual());
        let addr = serve(&tls).await;
        let (cc, ck) = (p("client.crt"), p("client.key"));
        let client = ClientTls::new(&[p("ca.crt")], Some((&cc, &ck)), None, false).unwrap();
        assert_eq!(
            dial(addr, &client).await.unwrap(),
            (server1.der.clone(), client1.der.clone())
        );

        // Everything moves to a new CA: the server's client CAs and keypair, the client's
        // server CAs and keypair, each followed on its own.
        write(&new, &server2, &client2);
        until_presented(addr, &client, &server2.der, &client2.der).await;

        // A client still holding the old CA's certificate is refused now.
        let dir1 = tempfile::tempdir().unwrap();
        let o = |f: &str| dir1.path().join(f);
        put(dir1.path(), "ca.crt", &new.1);
        put(dir1.path(), "client.crt", &client1.cert);
        put(dir1.path(), "client.key", &client1.key);
        let (oc, ok) = (o("client.crt"), o("client.key"));
        let stale = ClientTls::new(&[o("ca.crt")], Some((&oc, &ok)), None, false).unwrap();
        assert!(dial(addr, &stale).await.is_err());
    }
}
