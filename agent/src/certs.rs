//! `hubble-agent certs generate DIR`: a private CA and the certificates a lab needs to turn
//! TLS on in one step, named as Cilium names them:
//!
//! | files | for | subject alternative names |
//! |---|---|---|
//! | `ca.crt`, `ca.key` | trust anchor of everything below | |
//! | `server.crt`, `server.key` | agents' Hubble API (`--tls-cert-file`) | `*.<cluster>.hubble-grpc.cilium.io`, localhost, 127.0.0.1, ::1 |
//! | `relay.crt`, `relay.key` | hubble-relay's API | `*.hubble-relay.cilium.io`, localhost, 127.0.0.1, ::1 |
//! | `client.crt`, `client.key` | clients (CLI, relay → agents, exporter) for mTLS | `hubble-client` |
//!
//! Keys are ECDSA P-256, written with mode 0600; certificates are valid for a year.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// `hubble-agent certs`.
#[derive(Debug, Clone, Subcommand)]
pub enum CertsCmd {
    /// Write a CA and server, relay and client certificates for the lab into DIR.
    Generate(GenerateArgs),
}

/// `hubble-agent certs generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Directory to write into (created if missing).
    pub dir: PathBuf,
    /// Cluster name in the agents' certificate (`*.<cluster>.hubble-grpc.cilium.io`).
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

impl CertsCmd {
    pub fn run(self) -> Result<()> {
        match self {
            CertsCmd::Generate(a) => {
                let files = generate(&a.dir, &a.cluster, a.force)?;
                for f in files {
                    println!("{}", f.display());
                }
                Ok(())
            }
        }
    }
}

/// The file names [`generate`] writes, in order.
pub const FILES: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "relay.crt",
    "relay.key",
    "client.crt",
    "client.key",
];

/// Writes the CA and the server, relay and client certificates into `dir`; refuses to
/// overwrite unless `force`. Returns the paths written.
pub fn generate(dir: &Path, cluster: &str, force: bool) -> Result<Vec<PathBuf>> {
    if cluster.is_empty() || cluster.contains('/') {
        anyhow::bail!("invalid --cluster {cluster:?}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !force && let Some(f) = FILES.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
        anyhow::bail!(
            "{} exists; use --force to replace the certificates in {}",
            f.display(),
            dir.display()
        );
    }
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Hubble lab CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "hubble-rs lab");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let loopback = ["localhost", "127.0.0.1", "::1"];
    let agent_wildcard = format!("*.{}.hubble-grpc.cilium.io", cluster.replace('.', "-"));
    let leaves: [(&str, &str, Vec<&str>, ExtendedKeyUsagePurpose); 3] = [
        (
            "server",
            agent_wildcard.as_str(),
            [agent_wildcard.as_str()]
                .into_iter()
                .chain(loopback)
                .collect(),
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "relay",
            "*.hubble-relay.cilium.io",
            ["*.hubble-relay.cilium.io"]
                .into_iter()
                .chain(loopback)
                .collect(),
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "client",
            "hubble-client",
            vec!["hubble-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ];
    let mut written = Vec::new();
    let mut write = |name: &str, pem: String, secret: bool| -> Result<()> {
        let p = dir.join(name);
        write_file(&p, pem.as_bytes(), secret)?;
        written.push(p);
        Ok(())
    };
    write("ca.crt", ca_cert.pem(), false)?;
    write("ca.key", issuer.key().serialize_pem(), true)?;
    for (name, cn, sans, usage) in leaves {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*s).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        validity(&mut p);
        let cert = p.signed_by(&key, &issuer)?;
        write(&format!("{name}.crt"), cert.pem(), false)?;
        write(&format!("{name}.key"), key.serialize_pem(), true)?;
    }
    Ok(written)
}

fn validity(p: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    p.not_before = (now - std::time::Duration::from_secs(3600)).into();
    p.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
}

/// Writes `path` from scratch: 0600 for private keys, 0644 otherwise, whatever mode an
/// earlier file there had (`--force`); a symbolic link at the path is an error.
fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let mode = if secret {
        hubble::files::PRIVATE
    } else {
        0o644
    };
    let mut f = hubble::files::replace(path, mode)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn force_rewrites_keys_private_whatever_their_old_mode() {
        let dir = tempfile::tempdir().unwrap();
        super::generate(dir.path(), "default", false).unwrap();
        let key = dir.path().join("server.key");
        assert_eq!(mode(&key), 0o600);
        // Someone made the old key world-readable; --force replaces it with a private one.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = std::fs::read_to_string(&key).unwrap();
        super::generate(dir.path(), "default", true).unwrap();
        assert_ne!(std::fs::read_to_string(&key).unwrap(), before);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir.path().join("server.crt")), 0o644);
    }

    #[test]
    fn a_symlink_in_place_of_a_key_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "not a key").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("ca.key")).unwrap();
        let e = super::generate(dir.path(), "default", true).unwrap_err();
        assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "not a key");
    }
}
