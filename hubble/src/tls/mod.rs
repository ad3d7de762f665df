//! TLS for Hubble's gRPC connections, on rustls with the ring provider.
//!
//! Client side: Hubble's CLI flags ([`ClientTlsArgs`]: `--tls`, `--tls-allow-insecure`,
//! `--tls-ca-cert-files`, `--tls-client-cert-file`, `--tls-client-key-file`,
//! `--tls-server-name`) become a [`ClientTls`], which [`crate::client::connect_tls`] uses.
//! Server side: [`ServerTls`] (certificate, key, optional client CAs for mTLS) and
//! [`incoming`], a stream of TLS connections for tonic's `serve_with_incoming` in which
//! a failed handshake is reported on stderr and skipped, never ending the server (the
//! servers' own listeners go through [`crate::listen`] with their flags).
//!
//! Both sides follow their files as Cilium's certloader does (`tls/reload.rs`): a rotated
//! certificate, key or CA file is used from the next handshake on, without a restart.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::Stream;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer, ServerName};

mod reload;
mod watch;

use reload::{ClientCas, Keypair, ServerCas};

/// The scheme prefix of `--server` that turns TLS on (`tls://relay:443`).
pub const TLS_PREFIX: &str = "tls://";

/// Why a TLS setting could not be used. Displays as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load cert '{path}': {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot load key '{path}': {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and private key are both required, but only one was provided")]
    InvalidKeypair,
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

// Hubble's client TLS flags, for `#[command(flatten)]` or `augment_args` (global: they work
// before or after a subcommand). Each also reads `HUBBLE_<FLAG>` from the environment.
// (A plain comment: clap would turn a doc comment into the about text of the command.)
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClientTlsArgs {
    /// Specify that TLS must be used when establishing a connection to a Hubble server.
    /// By default, TLS is only enabled if the server address starts with 'tls://'.
    #[arg(long, global = true, env = "HUBBLE_TLS")]
    pub tls: bool,
    /// Allows the client to skip verifying the server's certificate chain and host name.
    /// This option is NOT recommended as, in this mode, TLS is susceptible to
    /// machine-in-the-middle attacks. See also --tls-server-name.
    #[arg(long, global = true, env = "HUBBLE_TLS_ALLOW_INSECURE")]
    pub tls_allow_insecure: bool,
    /// Paths to custom Certificate Authority (CA) certificate files (comma-separated or
    /// repeated). The files must contain PEM encoded data. Default: the system's CAs.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        value_name = "FILES",
        env = "HUBBLE_TLS_CA_CERT_FILES"
    )]
    pub tls_ca_cert_files: Vec<PathBuf>,
    /// Path to the public key file for the client certificate to connect to a Hubble server
    /// (implies TLS). The file must contain PEM encoded data.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "HUBBLE_TLS_CLIENT_CERT_FILE"
    )]
    pub tls_client_cert_file: Option<PathBuf>,
    /// Path to the private key file for the client certificate to connect a Hubble server
    /// (implies TLS). The file must contain PEM encoded data.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "HUBBLE_TLS_CLIENT_KEY_FILE"
    )]
    pub tls_client_key_file: Option<PathBuf>,
    /// Specify a server name to verify the hostname on the returned certificate (eg:
    /// 'instance.hubble-relay.cilium.io'). Default: the host of --server.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "HUBBLE_TLS_SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// Whether these flags ask for TLS to `server` (`--tls`, a `tls://` address, or a client
    /// certificate, which implies TLS).
    pub fn wants_tls(&self, server: &str) -> bool {
        self.tls
            || server.trim_start().starts_with(TLS_PREFIX)
            || self.tls_client_cert_file.is_some()
            || self.tls_client_key_file.is_some()
    }

    /// The TLS settings for `server`, `None` when TLS is off for it.
    pub fn client_tls(&self, server: &str) -> Result<Option<ClientTls>, TlsError> {
        if !self.wants_tls(server) {
            return Ok(None);
        }
        let keypair = match (&self.tls_client_cert_file, &self.tls_client_key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err(TlsError::InvalidKeypair),
        };
        ClientTls::new(
            &self.tls_ca_cert_files,
            keypair,
            self.tls_server_name.clone().filter(|s| !s.is_empty()),
            self.tls_allow_insecure,
        )
        .map(Some)
    }
}

/// A client's TLS settings, ready to dial many times.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClientTls {
    /// Trusts the CAs in `ca_files` (the system's CAs when empty), presents `client_keypair`
    /// (cert, key) when the server asks, and checks the certificate against `server_name`
    /// (default: the host dialled). `allow_insecure` skips every check of the server. The
    /// CA files and the keypair are read again whenever they change (see `tls/reload.rs`).
    pub fn new(
        ca_files: &[PathBuf],
        client_keypair: Option<(&Path, &Path)>,
        server_name: Option<String>,
        allow_insecure: bool,
    ) -> Result<Self, TlsError> {
        if let Some(n) = &server_name {
            ServerName::try_from(n.as_str()).map_err(|_| TlsError::ServerName(n.clone()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if allow_insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider())))
        } else if ca_files.is_empty() {
            builder.with_root_certificates(root_store(ca_files)?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(ServerCas::follow(ca_files)?)
        };
        let mut config = match client_keypair {
            Some((cert, key)) => {
                builder.with_client_cert_resolver(Keypair::follow(cert.into(), key.into())?)
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The name the server's certificate is checked against when dialling `host`.
    pub fn server_name_for(&self, host: &str) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
    }

    /// This config with another server name (e.g. a relay dialling each node by its name).
    pub fn with_server_name(&self, name: impl Into<String>) -> Self {
        ClientTls {
            config: self.config.clone(),
            server_name: Some(name.into()),
        }
    }

    /// Runs the TLS handshake over `tcp` to `host`.
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> io::Result<Watched<tokio_rustls::client::TlsStream<TcpStream>>> {
        let name = self.server_name_for(host);
        let name = ServerName::try_from(name.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, TlsError::ServerName(name)))?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map(Watched)
    }
}

/// The last error read from a client's TLS connection. A server that refuses the client's
/// certificate says so with an alert after the TLS 1.3 handshake; HTTP/2 then reports only
/// a closed connection, so the command's error names the alert from here.
static LAST_READ_ERROR: std::sync::Mutex<Option<(std::time::Instant, String)>> =
    std::sync::Mutex::new(None);

/// The error last read from a client TLS connection in the past few seconds (see
/// [`Watched`]).
pub fn last_read_error() -> Option<String> {
    let last = LAST_READ_ERROR.lock().ok()?;
    let (at, e) = last.as_ref()?;
    (at.elapsed() < Duration::from_secs(5)).then(|| e.clone())
}

/// A client TLS stream that remembers its read errors (see [`last_read_error`]).
pub struct Watched<S>(S);

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if let std::task::Poll::Ready(Err(e)) = &r {
            remember(e);
        }
        r
    }
}

fn remember(e: &io::Error) {
    if let Ok(mut last) = LAST_READ_ERROR.lock() {
        *last = Some((std::time::Instant::now(), e.to_string()));
    }
}

impl<S: tokio::io::AsyncRead + Unpin> Watched<S> {
    /// After a failed write (the server closed the connection), reads what the server sent
    /// before closing: its alert explains why.
    fn read_alert(&mut self, cx: &mut std::task::Context<'_>) {
        let mut tmp = [0u8; 512];
        let mut rb = tokio::io::ReadBuf::new(&mut tmp);
        if let std::task::Poll::Ready(Err(e)) =
            std::pin::Pin::new(&mut self.0).poll_read(cx, &mut rb)
        {
            remember(&e);
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.0).poll_write(cx, buf);
        if let std::task::Poll::Ready(Err(_)) = &r {
            self.read_alert(cx);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Err(_)) = &r {
            self.read_alert(cx);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.0).poll_flush(cx);
        if let std::task::Poll::Ready(Err(_)) = &r {
            self.read_alert(cx);
        }
        r
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn root_store(ca_files: &[PathBuf]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_files.is_empty() {
        // Unreadable system certificates are skipped: the handshake then says what failed.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        return Ok(roots);
    }
    for path in ca_files {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Cert {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(roots)
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Cert {
        path: path.to_path_buf(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(format!(
                "must be a PEM encoded certificate: {}",
                pem_reason(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(err("must be a PEM encoded certificate".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        reason: format!("must be a PEM encoded private key: {}", pem_reason(&e)),
    })
}

/// A PEM error in words (the library's own shows the markers as byte lists).
fn pem_reason(e: &pki_types::pem::Error) -> String {
    use pki_types::pem::Error;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match e {
        Error::MissingSectionEnd { end_marker } => {
            format!(
                "no \"-----END {}-----\" line (incomplete file?)",
                text(end_marker)
            )
        }
        Error::IllegalSectionStart { line } => format!("bad section start {:?}", text(line)),
        other => other.to_string(),
    }
}

/// `--tls-allow-insecure`: accepts any server certificate, still checking that the
/// handshake is signed by the key it presents.
#[derive(Debug)]
struct NoServerVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server's TLS settings: its certificate and key, and, for mutual TLS, the CAs whose
/// client certificates it accepts (a client without one is refused).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `cert` and `key`; with `client_ca_files`, requires client certificates signed
    /// by one of them (mTLS). TLS 1.3 only, as Hubble's servers. The files are read again
    /// whenever they change (see `tls/reload.rs`): acceptors made before and after a change
    /// alike present the new certificate from their next handshake on.
    pub fn load(cert: &Path, key: &Path, client_ca_files: &[PathBuf]) -> Result<Self, TlsError> {
        let keypair = Keypair::follow(cert.into(), key.into())?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if client_ca_files.is_empty() {
            builder.with_no_client_auth()
        } else {
            builder.with_client_cert_verifier(ClientCas::follow(client_ca_files)?)
        };
        let mut config = builder.with_cert_resolver(keypair);
        config.alpn_protocols = vec![b"h2".to_vec()];
        // No session tickets: a resumed session would skip the (possibly rotated) client
        // CAs. Hubble's connections are long-lived HTTP/2 ones; resumption saves little.
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            mutual: !client_ca_files.is_empty(),
        })
    }

    /// Whether client certificates are required.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// An acceptor for one connection at a time.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The same settings offering `protocols` by ALPN instead of h2 (an HTTP/1.1 server);
    /// certificates and CAs are still followed.
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> ServerTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        ServerTls {
            config: Arc::new(config),
            mutual: self.mutual,
        }
    }
}

/// The TLS connections accepted on `listener`, for tonic's `serve_with_incoming`, with the
/// default [`ServerLimits`](crate::listen::ServerLimits): see
/// [`Acceptor::tls`](crate::listen::Acceptor::tls).
pub fn incoming(
    listener: TcpListener,
    tls: &ServerTls,
    who: &'static str,
) -> impl Stream<Item = io::Result<crate::listen::Conn<tokio_rustls::server::TlsStream<TcpStream>>>>
+ Send
+ 'static {
    crate::listen::Acceptor::new(&crate::listen::ServerLimits::default()).tls(listener, tls, who)
}
