//! `hubble config view|get|set|reset`: the merged settings and the config file.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Command};
use serde_yaml::Value;

use super::exit;
use crate::config::{self, FileConfig, KEYS, Kind, TypedValue};

const LONG_ABOUT: &str = "\
Config allows to modify or view the hubble configuration. Global hubble options
can be set via flags, environment variables or a configuration file. The
following precedence order is used:

1. Flag
2. Environment variable
3. Configuration file
4. Default value

The \"config view\" subcommand provides a merged view of the configuration. The
\"config set\" and \"config reset\" subcommand modify values in the configuration
file.

Environment variable names start with HUBBLE_ followed by the flag name
capitalized where eventual dashes ('-') are replaced by underscores ('_').
For example, the environment variable that corresponds to the \"--server\" flag
is HUBBLE_SERVER. The environment variable for \"--tls-allow-insecure\" is
HUBBLE_TLS_ALLOW_INSECURE and so on.";

/// `hubble config`.
pub fn command() -> Command {
    let key_arg = |required: bool| {
        Arg::new("key")
            .value_name("KEY")
            .required(required)
            .help("One of: config, debug, request-timeout, server, timeout, tls, tls-allow-insecure, tls-ca-cert-files, tls-client-cert-file, tls-client-key-file, tls-server-name")
    };
    Command::new("config")
        .about("Modify or view hubble config")
        .long_about(LONG_ABOUT)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("view")
                .about("Display merged configuration settings")
                .long_about("Display merged configuration settings"),
        )
        .subcommand(
            Command::new("get")
                .about("Get an individual value in the hubble config file")
                .long_about(
                    "Get an individual value in the hubble config file.\n\
                     If KEY is not provided, this command is equivalent to 'view'.",
                )
                .arg(key_arg(false)),
        )
        .subcommand(
            Command::new("set")
                .about("Set an individual value in the hubble config file")
                .long_about(
                    "Set an individual value in the hubble config file.\n\
                     If VALUE is not provided, the value is reset to its default value.",
                )
                .arg(key_arg(true))
                .arg(
                    Arg::new("value").value_name("VALUE").help(
                        "The new value (lists: comma-separated); empty or absent: the default",
                    ),
                ),
        )
        .subcommand(
            Command::new("reset")
                .about("Reset all or an individual value in the hubble config file")
                .long_about(
                    "Reset all or an individual value in the hubble config file.\n\
                     When KEY is provided, this command is equivalent to 'set KEY'.\n\
                     If KEY is not provided, all values are reset to their default value.",
                )
                .arg(key_arg(false)),
        )
}

/// Runs `hubble config …`; `path` is the config file in use.
pub fn run(m: &ArgMatches, path: PathBuf) -> anyhow::Result<u8> {
    let Some((sub, sm)) = m.subcommand() else {
        unreachable!("clap requires a subcommand")
    };
    match sub {
        "view" => print!("{}", view(sm, &path)),
        "get" => match sm.get_one::<String>("key") {
            Some(k) => {
                config::key(k).ok_or_else(|| config::ConfigError::UnknownKey(k.clone()))?;
                print!("{}", config::yaml_value(&merged(sm, &path, k)))
            }
            None => print!("{}", view(sm, &path)),
        },
        "set" => {
            let k = sm.get_one::<String>("key").expect("required");
            let v = sm
                .get_one::<String>("value")
                .map(String::as_str)
                .unwrap_or("");
            set(&path, k, v)?;
        }
        "reset" => match sm.get_one::<String>("key") {
            Some(k) => set(&path, k, "")?,
            None => {
                for k in KEYS {
                    set(&path, k.name, "")?;
                }
            }
        },
        _ => unreachable!("clap knows the subcommands"),
    }
    Ok(exit::OK)
}

fn set(path: &std::path::Path, name: &str, value: &str) -> anyhow::Result<()> {
    let key = config::key(name).ok_or_else(|| config::ConfigError::UnknownKey(name.into()))?;
    let value = if key.name == "config" && value.is_empty() {
        TypedValue::String(config::default_path().display().to_string())
    } else {
        TypedValue::parse(key, value)?
    };
    let mut file = FileConfig::load(path)?;
    file.set_and_write(key, value)?;
    Ok(())
}

/// Every key with its merged value (flag > environment > file > default), sorted.
fn view(m: &ArgMatches, path: &std::path::Path) -> String {
    KEYS.iter()
        .map(|k| config::yaml_entry(k.name, &merged(m, path, k.name), ""))
        .collect()
}

/// The merged value of one key, read back from the parsed command line (the file's values
/// are its defaults).
fn merged(m: &ArgMatches, path: &std::path::Path, name: &str) -> Value {
    let Some(key) = config::key(name) else {
        return Value::Null;
    };
    let id = key.name_id();
    if key.name == "config" {
        return Value::String(path.display().to_string());
    }
    match key.kind {
        Kind::Bool => Value::Bool(m.try_get_one::<bool>(id).ok().flatten() == Some(&true)),
        Kind::StringSlice => Value::Sequence(
            m.try_get_many::<PathBuf>(id)
                .ok()
                .flatten()
                .into_iter()
                .flatten()
                .map(|p| Value::String(p.display().to_string()))
                .collect(),
        ),
        Kind::Duration | Kind::String => {
            let s = m
                .try_get_one::<String>(id)
                .ok()
                .flatten()
                .cloned()
                .or_else(|| {
                    m.try_get_one::<PathBuf>(id)
                        .ok()
                        .flatten()
                        .map(|p| p.display().to_string())
                })
                .unwrap_or_else(|| key.default.to_string());
            Value::String(s)
        }
    }
}
