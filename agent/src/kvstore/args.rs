//! Cilium's kvstore flags (`--kvstore`, `--kvstore-opt`, `--kvstore-lease-ttl`,
//! `--cluster-name`) and what they configure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::cluster::{ClusterConfig, EtcdTls};

#[derive(Debug, Clone, Args)]
pub struct KvstoreArgs {
    /// Key-value store for cluster-wide state (Cilium's flag; default none): `etcd` makes
    /// identities cluster-wide, publishes this node's pods as ipcache entries and the node
    /// in the registry, and names other nodes' pods from theirs
    #[arg(long, value_name = "TYPE", default_value = "", value_parser = ["", "etcd"])]
    pub kvstore: String,
    /// Key-value store options (Cilium's flag): `etcd.address=HOST:PORT` (plain HTTP/2;
    /// `https://HOST:PORT` checks the system's CAs) or `etcd.config=FILE` (etcd's client
    /// YAML: its first `endpoints` entry, and `trusted-ca-file`, `cert-file`, `key-file`
    /// for TLS and a client certificate)
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub kvstore_opt: Vec<String>,
    /// Time-to-live of the node's kvstore lease: this long after a node dies, it leaves the
    /// registry and its identity references and ipcache entries go (a node that stops
    /// revokes its lease at once) (Cilium's flag and default)
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = crate::args::parse_duration)]
    pub kvstore_lease_ttl: Duration,
    /// Name of the cluster, the ipcache's and registry's path segment in the kvstore
    /// (Cilium's flag and default)
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub cluster_name: String,
    /// Where this node's Hubble API listens, announced in the registry (set by `run`).
    #[arg(skip)]
    pub peer_address: Option<String>,
}

impl KvstoreArgs {
    /// The cluster these flags configure (none without `--kvstore`); a bad option is one
    /// line.
    pub fn config(&self) -> Result<Option<ClusterConfig>, String> {
        if self.kvstore.is_empty() {
            if !self.kvstore_opt.is_empty() {
                return Err("--kvstore-opt needs --kvstore etcd".into());
            }
            return Ok(None);
        }
        let mut address = None;
        let mut tls = None;
        for opt in &self.kvstore_opt {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("--kvstore-opt {opt:?}: expected KEY=VALUE"))?;
            match k {
                "etcd.address" => address = Some(v.to_string()),
                "etcd.config" => {
                    let c = read_config(Path::new(v))?;
                    address = Some(c.0);
                    tls = c.1;
                }
                _ => {
                    return Err(format!(
                        "--kvstore-opt {k}: unknown option (etcd.address or etcd.config)"
                    ));
                }
            }
        }
        let address = address.ok_or(
            "--kvstore etcd needs --kvstore-opt etcd.address=HOST:PORT or etcd.config=FILE",
        )?;
        Ok(Some(ClusterConfig {
            address,
            cluster: self.cluster_name.clone(),
            lease_ttl: self.kvstore_lease_ttl.as_secs().max(1) as i64,
            peer_address: self.peer_address.clone(),
            tls,
        }))
    }
}

/// The first endpoint of an etcd client config file (Cilium's `etcd.config`) and its TLS
/// files.
fn read_config(path: &Path) -> Result<(String, Option<EtcdTls>), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Config {
        #[serde(default)]
        endpoints: Vec<String>,
        trusted_ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    }
    let err = |e: String| format!("--kvstore-opt etcd.config={}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let c: Config = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let keypair = match (c.cert_file, c.key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err(err("cert-file and key-file go together".into())),
    };
    let tls = (c.trusted_ca_file.is_some() || keypair.is_some()).then_some(EtcdTls {
        ca_file: c.trusted_ca_file,
        keypair,
    });
    let address = c
        .endpoints
        .into_iter()
        .next()
        .ok_or_else(|| err("no endpoints".into()))?;
    if tls.is_some() && !address.starts_with("https://") {
        return Err(err(format!(
            "TLS files are given but the endpoint {address} is not https://"
        )));
    }
    Ok((address, tls))
}

#[cfg(test)]
mod tests {
    use super::KvstoreArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kv: KvstoreArgs,
    }

    fn parse(args: &[&str]) -> Result<Option<super::ClusterConfig>, String> {
        let mut v = vec!["x"];
        v.extend(args);
        Cli::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .kv
            .config()
    }

    #[test]
    fn ciliums_kvstore_flags() {
        assert!(parse(&[]).unwrap().is_none());
        let c = parse(&[
            "--kvstore",
            "etcd",
            "--kvstore-opt",
            "etcd.address=127.0.0.1:2379",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.address.as_str(), c.cluster.as_str(), c.lease_ttl),
            ("127.0.0.1:2379", "default", 900)
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("etcd.config");
        std::fs::write(&f, "endpoints:\n- http://127.0.0.1:2379\n").unwrap();
        let opt = format!("etcd.config={}", f.display());
        let c = parse(&[
            "--kvstore=etcd",
            "--kvstore-opt",
            &opt,
            "--cluster-name=c1",
            "--kvstore-lease-ttl=20s",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.address.as_str(), c.cluster.as_str(), c.lease_ttl),
            ("http://127.0.0.1:2379", "c1", 20)
        );
        assert!(
            parse(&["--kvstore", "etcd"])
                .unwrap_err()
                .contains("etcd.address")
        );
        for (address, plain) in [
            ("127.0.0.1:2379", false),
            ("http://[::1]:2379", false),
            ("localhost:2379", false),
            ("http://10.0.0.5:2379", true),
            ("etcd.kube-system:2379", true),
            ("https://10.0.0.5:2379", false),
        ] {
            let opt = format!("etcd.address={address}");
            let c = parse(&["--kvstore", "etcd", "--kvstore-opt", &opt])
                .unwrap()
                .unwrap();
            assert_eq!(c.plaintext_beyond_loopback(), plain, "{address}");
        }
        assert!(parse(&["--kvstore", "consul"]).is_err());
        assert!(
            parse(&["--kvstore", "etcd", "--kvstore-opt", "x=1"])
                .unwrap_err()
                .contains("unknown option")
        );
    }
}
