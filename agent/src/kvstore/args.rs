//! Cilium's kvstore flags (`--kvstore`, `--kvstore-opt`, `--kvstore-lease-ttl`,
//! `--cluster-name`) and what they configure.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use super::cluster::ClusterConfig;

#[derive(Debug, Clone, Args)]
pub struct KvstoreArgs {
    /// Key-value store for cluster-wide state (Cilium's flag; default none): `etcd` makes
    /// identities cluster-wide, publishes this node's pods as ipcache entries and the node
    /// in the registry, and names other nodes' pods from theirs
    #[arg(long, value_name = "TYPE", default_value = "", value_parser = ["", "etcd"])]
    pub kvstore: String,
    /// Key-value store options (Cilium's flag): `etcd.address=HOST:PORT` (plain HTTP/2) or
    /// `etcd.config=FILE` (etcd's client YAML: its first `endpoints` entry)
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
        for opt in &self.kvstore_opt {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("--kvstore-opt {opt:?}: expected KEY=VALUE"))?;
            address = Some(match k {
                "etcd.address" => v.to_string(),
                "etcd.config" => address_of_config(Path::new(v))?,
                _ => {
                    return Err(format!(
                        "--kvstore-opt {k}: unknown option (etcd.address or etcd.config)"
                    ));
                }
            });
        }
        let address = address.ok_or(
            "--kvstore etcd needs --kvstore-opt etcd.address=HOST:PORT or etcd.config=FILE",
        )?;
        Ok(Some(ClusterConfig {
            address,
            cluster: self.cluster_name.clone(),
            lease_ttl: self.kvstore_lease_ttl.as_secs().max(1) as i64,
            peer_address: self.peer_address.clone(),
        }))
    }
}

/// The first endpoint of an etcd client config file (Cilium's `etcd.config`).
fn address_of_config(path: &Path) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        endpoints: Vec<String>,
        #[serde(rename = "trusted-ca-file")]
        trusted_ca_file: Option<String>,
    }
    let err = |e: String| format!("--kvstore-opt etcd.config={}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let c: Config = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
    if c.trusted_ca_file.is_some() {
        return Err(err("TLS to etcd is not supported yet".into()));
    }
    c.endpoints
        .into_iter()
        .next()
        .ok_or_else(|| err("no endpoints".into()))
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
        assert!(parse(&["--kvstore", "consul"]).is_err());
        assert!(
            parse(&["--kvstore", "etcd", "--kvstore-opt", "x=1"])
                .unwrap_err()
                .contains("unknown option")
        );
    }
}
