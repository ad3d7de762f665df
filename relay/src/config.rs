//! Where `hubble-relay serve` takes its settings from, with Hubble Relay's (viper's)
//! precedence: a flag, else its `RELAY_*` environment variable (`--listen-address` →
//! `RELAY_LISTEN_ADDRESS`), else the config file, else the default. The config file is YAML
//! keyed by the flags' names (`listen-address: :4245`), as Helm's `hubble-relay-config`
//! ConfigMap writes it: `--config FILE`, else `/etc/hubble-relay/config.yaml` when it exists.
//!
//! The file's values become the defaults of the flags and the environment variables their
//! clap `env`, so clap applies the precedence; a key that names no flag is an error.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command};
use serde_yaml::Value;

/// Where Hubble Relay reads its config file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/hubble-relay/config.yaml";
/// Prefix of the environment variables (Hubble Relay's viper `SetEnvPrefix("relay")`).
const ENV_PREFIX: &str = "RELAY_";
/// Keys Hubble Relay's config file may hold that have no effect here (debugging endpoints
/// and logging of the Go binary): accepted so that Helm's ConfigMap works, and reported.
pub const IGNORED_KEYS: &[&str] = &[
    "debug",
    "gops",
    "gops-port",
    "log-format",
    "log-level",
    "pprof",
    "pprof-address",
    "pprof-port",
];

/// Why the configuration cannot be used. One line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error(
        "config file {path}: unknown key {key:?} (keys are the long flags of `hubble-relay serve --help`)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: {key}: {reason}")]
    BadValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// The environment variable of a flag: `RELAY_` and its name in capitals, dashes as
/// underscores.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"))
}

/// Gives every flag of `serve` its environment variable (shown in `--help`); switches read
/// from the environment take Go's spellings of true and false (1, t, TRUE, …).
pub fn with_env(serve: Command) -> Command {
    let ids: Vec<(clap::Id, String, bool)> = serve
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let switch = matches!(a.get_action(), ArgAction::SetTrue);
            Some((a.get_id().clone(), env_name(long), switch))
        })
        .collect();
    ids.into_iter().fold(serve, |cmd, (id, env, switch)| {
        cmd.mut_arg(id, |a| {
            let a = a.env(env);
            if switch {
                a.value_parser(clap::builder::BoolishValueParser::new())
            } else {
                a
            }
        })
    })
}

/// The config file of a command line: `--config FILE` (or `--config=FILE`), else
/// `$RELAY_CONFIG`, else [`DEFAULT_CONFIG_FILE`] when it exists. The flag is true when the
/// file was asked for (then it must exist).
pub fn config_path(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().skip(1);
    let mut found = None;
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            found = it.next().map(PathBuf::from);
        } else if let Some(v) = s.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        }
    }
    if let Some(p) = found.or_else(|| {
        std::env::var_os(env_name("config"))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }) {
        return Some((p, true));
    }
    let default = Path::new(DEFAULT_CONFIG_FILE);
    default.exists().then(|| (default.to_path_buf(), false))
}

/// The keys and values of one config file, in file order.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    entries: Vec<(String, Value)>,
}

impl ConfigFile {
    /// Reads `path`: a mapping of keys to values (an empty file is an empty mapping).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let parse = |reason: String| ConfigError::Parse {
            path: path.to_path_buf(),
            reason,
        };
        let map = match serde_yaml::from_str::<Value>(&text) {
            Ok(Value::Mapping(m)) => m,
            Ok(Value::Null) => Default::default(),
            Ok(_) => return Err(parse("expected a mapping of keys to values".into())),
            Err(e) => return Err(parse(e.to_string().replace('\n', " "))),
        };
        let mut entries = Vec::new();
        for (k, v) in map {
            let Value::String(k) = k else {
                return Err(parse(format!("key {k:?} is not a string")));
            };
            entries.push((k, v));
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Makes the file's values the defaults of the flags of `hubble-relay serve` in `cli`
    /// (the whole command, without environment variables yet). Keys without a value mean the
    /// default, as in Helm's ConfigMap; values are checked as the flags would check them.
    /// Returns the command and the [`IGNORED_KEYS`] the file holds.
    pub fn apply(&self, cli: Command) -> Result<(Command, Vec<String>), ConfigError> {
        let serve = cli
            .find_subcommand("serve")
            .expect("hubble-relay has a serve command");
        let mut defaults = Vec::new();
        let mut ignored = Vec::new();
        for (key, value) in &self.entries {
            let bad = |reason: String| ConfigError::BadValue {
                path: self.path.clone(),
                key: key.clone(),
                reason,
            };
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()) && key != "config");
            let Some(arg) = arg else {
                if IGNORED_KEYS.contains(&key.as_str()) {
                    ignored.push(key.clone());
                    continue;
                }
                return Err(ConfigError::UnknownKey {
                    path: self.path.clone(),
                    key: key.clone(),
                });
            };
            let Some(values) = values_of(value) else {
                return Err(bad(format!(
                    "expected a value or a list of values, got {}",
                    serde_yaml::to_string(value)
                        .unwrap_or_default()
                        .trim()
                        .replace('\n', " ")
                )));
            };
            if values.is_empty() && !matches!(value, Value::Sequence(_)) {
                continue; // `key:` with nothing: the default.
            }
            let values = match arg.get_action() {
                ArgAction::SetTrue => match values.as_slice() {
                    [v] => match hubble::config::parse_go_bool(v) {
                        Some(b) => vec![b.to_string()],
                        None => return Err(bad(format!("{v:?} is not true or false"))),
                    },
                    _ => return Err(bad("expected true or false".into())),
                },
                ArgAction::Append => values,
                _ if values.len() == 1 => values,
                _ => return Err(bad("expected one value, not a list".into())),
            };
            check(&cli, key, arg.get_action(), &values).map_err(bad)?;
            defaults.push((arg.get_id().clone(), values));
        }
        let cli = cli.mut_subcommand("serve", |serve| {
            defaults.into_iter().fold(serve, |cmd, (id, values)| {
                cmd.mut_arg(id, |a| a.default_values(values))
            })
        });
        Ok((cli, ignored))
    }
}

/// A YAML value as flag values: a scalar is one, a sequence of scalars many, nothing none.
fn values_of(v: &Value) -> Option<Vec<String>> {
    let scalar = |v: &Value| match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    match v {
        Value::Null => Some(Vec::new()),
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

/// Checks the values of `--key` by parsing them as flags would be (switches are checked
/// already); the error is clap's first line.
fn check(cli: &Command, key: &str, action: &ArgAction, values: &[String]) -> Result<(), String> {
    if matches!(action, ArgAction::SetTrue) {
        return Ok(());
    }
    let args = ["hubble-relay", "serve"]
        .into_iter()
        .map(OsString::from)
        .chain(
            values
                .iter()
                .map(|v| OsString::from(format!("--{key}={v}"))),
        );
    match cli.clone().try_get_matches_from(args) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            Err(line.strip_prefix("error: ").unwrap_or(line).to_string())
        }
    }
}

/// Whether `args` ask for help or the version, which never read a config file.
pub fn is_informational(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| a.as_os_str() != OsStr::new("--"))
        .any(|a| matches!(a.to_str(), Some("-h" | "--help" | "-V" | "--version")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names() {
        assert_eq!(env_name("listen-address"), "RELAY_LISTEN_ADDRESS");
        assert_eq!(
            env_name("tls-hubble-server-ca-files"),
            "RELAY_TLS_HUBBLE_SERVER_CA_FILES"
        );
    }

    #[test]
    fn yaml_values() {
        let v = |s: &str| values_of(&serde_yaml::from_str(s).unwrap());
        assert_eq!(v("~"), Some(vec![]));
        assert_eq!(v("100"), Some(vec!["100".into()]));
        assert_eq!(v("true"), Some(vec!["true".into()]));
        assert_eq!(v(":4245"), Some(vec![":4245".into()]));
        assert_eq!(v("[a, b]"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(v("{a: 1}"), None);
    }

    #[test]
    fn config_flag_wins() {
        let args: Vec<OsString> = ["hubble-relay", "serve", "--config", "/x.yaml"]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(config_path(&args), Some((PathBuf::from("/x.yaml"), true)));
        let args: Vec<OsString> = [
            "hubble-relay",
            "serve",
            "--config=/y.yaml",
            "--",
            "--config",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        assert_eq!(config_path(&args), Some((PathBuf::from("/y.yaml"), true)));
    }
}
