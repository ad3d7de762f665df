//! Hubble's configuration file: the global flags (`server`, `timeout`, the TLS flags …) can
//! be set in a YAML file, with the precedence flag > `HUBBLE_*` environment variable >
//! file > default. The file is `--config FILE`, else `$HUBBLE_CONFIG`, else
//! `$XDG_CONFIG_HOME/hubble/config.yaml` (`~/.config/hubble/config.yaml`), else
//! `~/.hubble/config.yaml` when only that one exists.
//!
//! [`FileConfig`] reads and writes the file (keys it does not know are kept as they are);
//! [`apply_defaults`] makes the file's values the defaults of a clap command, so clap
//! itself applies the precedence; [`yaml_value`] prints values as `hubble config` does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Command;
use serde_yaml::{Mapping, Value};

/// The type of a setting, as Hubble's flags have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Duration,
    String,
    StringSlice,
}

/// One setting of the file: a global flag.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// The flag's default, as text (`""` for none; `[]` for an empty list).
    pub default: &'static str,
}

/// Every key `hubble config` knows, sorted by name (the order `config view` prints).
pub const KEYS: &[Key] = &[
    Key {
        name: "config",
        kind: Kind::String,
        default: "",
    },
    Key {
        name: "debug",
        kind: Kind::Bool,
        default: "false",
    },
    Key {
        name: "request-timeout",
        kind: Kind::Duration,
        default: "12s",
    },
    Key {
        name: "server",
        kind: Kind::String,
        default: crate::client::DEFAULT_SERVER,
    },
    Key {
        name: "timeout",
        kind: Kind::Duration,
        default: "5s",
    },
    Key {
        name: "tls",
        kind: Kind::Bool,
        default: "false",
    },
    Key {
        name: "tls-allow-insecure",
        kind: Kind::Bool,
        default: "false",
    },
    Key {
        name: "tls-ca-cert-files",
        kind: Kind::StringSlice,
        default: "[]",
    },
    Key {
        name: "tls-client-cert-file",
        kind: Kind::String,
        default: "",
    },
    Key {
        name: "tls-client-key-file",
        kind: Kind::String,
        default: "",
    },
    Key {
        name: "tls-server-name",
        kind: Kind::String,
        default: "",
    },
];

/// The key named `name`.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Why the configuration could not be used. One line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key: {0}")]
    UnknownKey(String),
    #[error("cannot assign value={value} for key={key}, expected type={kind}")]
    BadValue {
        key: String,
        value: String,
        kind: &'static str,
    },
    #[error("invalid config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write config file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// `$XDG_CONFIG_HOME/hubble/config.yaml`, or `~/.config/hubble/config.yaml`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("hubble").join("config.yaml")
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The config file a command line uses: `--config FILE` / `--config=FILE` in `args`, else
/// `$HUBBLE_CONFIG`, else the default path (or `~/.hubble/config.yaml` when only it exists).
pub fn path_from_args(args: &[OsString]) -> PathBuf {
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
    if let Some(p) = found {
        return p;
    }
    if let Some(p) = std::env::var_os("HUBBLE_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let default = default_path();
    if !default.exists()
        && let Some(fallback) = home().map(|h| h.join(".hubble").join("config.yaml"))
        && fallback.exists()
    {
        return fallback;
    }
    default
}

/// The settings stored in one config file (empty when it does not exist).
#[derive(Debug, Clone)]
pub struct FileConfig {
    pub path: PathBuf,
    map: Mapping,
}

impl FileConfig {
    /// Reads `path`; a missing file is an empty configuration, a malformed one an error.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        let map = if text.trim().is_empty() {
            Mapping::new()
        } else {
            match serde_yaml::from_str::<Value>(&text) {
                Ok(Value::Mapping(m)) => m,
                Ok(Value::Null) => Mapping::new(),
                Ok(_) => {
                    return Err(ConfigError::Parse {
                        path: path.to_path_buf(),
                        reason: "expected a mapping of keys to values".into(),
                    });
                }
                Err(e) => {
                    return Err(ConfigError::Parse {
                        path: path.to_path_buf(),
                        reason: e.to_string().replace('\n', " "),
                    });
                }
            }
        };
        Ok(FileConfig {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The value of `key` in the file, as flag text (lists as their items).
    pub fn get(&self, key: &str) -> Option<Vec<String>> {
        let v = self.map.get(key)?;
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => vec![b.to_string()],
            Value::Number(n) => vec![n.to_string()],
            Value::String(s) => vec![s.clone()],
            Value::Sequence(items) => items.iter().filter_map(scalar_text).collect(),
            _ => return None,
        })
    }

    /// Sets `key` in the file (the caller checked the type) and writes the file, creating
    /// its directory.
    pub fn set_and_write(&mut self, key: &Key, value: TypedValue) -> Result<(), ConfigError> {
        self.map
            .insert(Value::String(key.name.into()), value.into_yaml());
        self.write()
    }

    fn write(&self) -> Result<(), ConfigError> {
        let err = |e: std::io::Error| ConfigError::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut entries: Vec<(&Value, &Value)> = self.map.iter().collect();
        entries.sort_by_key(|e| key_text(e.0));
        let mut out = String::new();
        for (k, v) in entries {
            out.push_str(&yaml_entry(&key_text(k), v, "    "));
        }
        std::fs::write(&self.path, out).map_err(err)
    }
}

fn key_text(v: &Value) -> String {
    scalar_text(v).unwrap_or_default()
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A value checked against its key's type.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    Bool(bool),
    /// Durations keep the text given (`7s`), as Hubble's file holds them.
    Duration(String),
    String(String),
    StringSlice(Vec<String>),
}

impl TypedValue {
    /// Parses `text` as `key`'s type, as `hubble config set KEY VALUE` does (an empty value
    /// means the key's default; lists are comma-separated, optionally in brackets).
    pub fn parse(key: &Key, text: &str) -> Result<Self, ConfigError> {
        let given = text;
        let text = if text.is_empty() { key.default } else { text };
        let bad = |kind| ConfigError::BadValue {
            key: key.name.into(),
            value: given.into(),
            kind,
        };
        Ok(match key.kind {
            Kind::Bool => TypedValue::Bool(parse_go_bool(text).ok_or_else(|| bad("bool"))?),
            Kind::Duration => {
                crate::timefmt::parse_go_duration(text).ok_or_else(|| bad("duration"))?;
                TypedValue::Duration(text.to_string())
            }
            Kind::String => TypedValue::String(text.to_string()),
            Kind::StringSlice => {
                let inner = text.trim_start_matches('[').trim_end_matches(']');
                TypedValue::StringSlice(if inner.is_empty() {
                    Vec::new()
                } else {
                    inner.split(',').map(|s| s.trim().to_string()).collect()
                })
            }
        })
    }

    fn into_yaml(self) -> Value {
        match self {
            TypedValue::Bool(b) => Value::Bool(b),
            TypedValue::Duration(s) | TypedValue::String(s) => Value::String(s),
            TypedValue::StringSlice(v) => {
                Value::Sequence(v.into_iter().map(Value::String).collect())
            }
        }
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Makes the file's values the defaults of the matching global arguments of `cmd`, so a
/// flag or environment variable still wins over the file.
pub fn apply_defaults(mut cmd: Command, file: &FileConfig) -> Command {
    for k in KEYS {
        if k.name == "config" {
            continue;
        }
        let Some(values) = file.get(k.name) else {
            continue;
        };
        let values = match k.kind {
            // A flag's false/true from the file, in Go's spellings.
            Kind::Bool => match values.first().and_then(|v| parse_go_bool(v)) {
                Some(b) => vec![b.to_string()],
                None => continue,
            },
            _ => values,
        };
        if !cmd.get_arguments().any(|a| a.get_id() == k.name_id()) {
            continue;
        }
        let id = k.name_id();
        cmd = cmd.mut_arg(id, |a| a.default_values(values));
    }
    cmd
}

impl Key {
    /// The clap argument id of this key: the derive names fields with underscores.
    pub fn name_id(&self) -> &'static str {
        match self.name {
            "tls-allow-insecure" => "tls_allow_insecure",
            "tls-ca-cert-files" => "tls_ca_cert_files",
            "tls-client-cert-file" => "tls_client_cert_file",
            "tls-client-key-file" => "tls_client_key_file",
            "tls-server-name" => "tls_server_name",
            other => other,
        }
    }
}

/// `key: value` lines as Go's YAML encoder writes them; list items indented by `indent`
/// (`hubble config view` uses none, the file four spaces).
pub fn yaml_entry(key: &str, v: &Value, indent: &str) -> String {
    match v {
        Value::Sequence(items) if !items.is_empty() => {
            let mut s = format!("{}:\n", yaml_scalar(key));
            for it in items {
                s.push_str(&format!("{indent}- {}\n", yaml_value(it).trim_end()));
            }
            s
        }
        _ => format!("{}: {}\n", yaml_scalar(key), yaml_value(v).trim_end()),
    }
}

/// One value as YAML text (scalars plain when unambiguous, else double-quoted; lists as
/// `- item` lines; `[]` when empty), newline-terminated as `hubble config get` prints it.
pub fn yaml_value(v: &Value) -> String {
    match v {
        Value::Null => "null\n".into(),
        Value::Bool(b) => format!("{b}\n"),
        Value::Number(n) => format!("{n}\n"),
        Value::String(s) => format!("{}\n", yaml_scalar(s)),
        Value::Sequence(items) if items.is_empty() => "[]\n".into(),
        Value::Sequence(items) => items
            .iter()
            .map(|it| format!("- {}\n", yaml_value(it).trim_end()))
            .collect(),
        other => serde_yaml::to_string(other).unwrap_or_default(),
    }
}

/// A string as a YAML scalar: plain when that reads back as the same string.
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.trim() == s
        && !s.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`',
        ])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.chars().any(char::is_control)
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        assert_eq!(yaml_scalar("localhost:4245"), "localhost:4245");
        assert_eq!(
            yaml_scalar("unix:///var/run/cilium/hubble.sock"),
            "unix:///var/run/cilium/hubble.sock"
        );
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("4245"), "\"4245\"");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
        assert_eq!(yaml_scalar("-x"), "\"-x\"");
        // Every quoted form reads back as the same string.
        for s in ["", "true", "4245", "a: b", "-x", "x #y", "tab\there"] {
            let back: String = serde_yaml::from_str(&yaml_scalar(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn values_parse_as_their_key_type() {
        let k = key("timeout").unwrap();
        assert_eq!(
            TypedValue::parse(k, "7s").unwrap(),
            TypedValue::Duration("7s".into())
        );
        assert_eq!(
            TypedValue::parse(k, "").unwrap(),
            TypedValue::Duration("5s".into())
        );
        assert_eq!(
            TypedValue::parse(k, "soon").unwrap_err().to_string(),
            "cannot assign value=soon for key=timeout, expected type=duration"
        );
        let k = key("tls").unwrap();
        assert_eq!(TypedValue::parse(k, "T").unwrap(), TypedValue::Bool(true));
        assert!(TypedValue::parse(k, "yes").is_err());
        let k = key("tls-ca-cert-files").unwrap();
        assert_eq!(
            TypedValue::parse(k, "[a.pem,b.pem]").unwrap(),
            TypedValue::StringSlice(vec!["a.pem".into(), "b.pem".into()])
        );
        assert_eq!(
            TypedValue::parse(k, "").unwrap(),
            TypedValue::StringSlice(vec![])
        );
    }

    #[test]
    fn config_path_from_flags() {
        let args: Vec<OsString> = ["hubble", "observe", "--config", "/x/c.yaml"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(path_from_args(&args), PathBuf::from("/x/c.yaml"));
        let args: Vec<OsString> = ["hubble", "--config=/y.yaml", "status"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(path_from_args(&args), PathBuf::from("/y.yaml"));
    }
}
