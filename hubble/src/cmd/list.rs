//! `hubble list nodes` and `hubble list namespaces`.

use std::io::{self, Write};

use clap::{Arg, ArgMatches, Command};

use super::exit;
use super::server::{ServerOpts, runtime, warn_version};
use crate::client;
use crate::printer::list::{self, ListFormat};

fn output_arg() -> Arg {
    Arg::new("output")
        .short('o')
        .long("output")
        .value_name("FORMAT")
        .default_value("table")
        .value_parser(["json", "table", "wide"])
        .hide_possible_values(true)
        .help("Specify the output format, one of:\n json:     JSON encoding\n table:    Tab-aligned columns\n wide:     Tab-aligned columns with additional information")
}

/// `hubble list`.
pub fn command() -> Command {
    Command::new("list")
        .about("List Hubble objects")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("nodes")
                .visible_alias("node")
                .about("List Hubble nodes")
                .long_about(
                    "List the nodes behind a Hubble Relay with their state, age, flow rate and \
                     ring fill (GetNodes; a single agent does not implement it).",
                )
                .arg(output_arg()),
        )
        .subcommand(
            Command::new("namespaces")
                .about("List namespaces with recent flows")
                .long_about("List the namespaces that had flows in the last hour.")
                .arg(output_arg()),
        )
}

/// Runs `hubble list …`.
pub fn run(m: &ArgMatches) -> anyhow::Result<u8> {
    let Some((sub, sm)) = m.subcommand() else {
        unreachable!("clap requires a subcommand")
    };
    let opts = ServerOpts::from_matches(sm)?;
    let format: ListFormat = sm
        .get_one::<String>("output")
        .expect("default")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let rt = runtime()?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match sub {
        "nodes" => {
            let r = rt.block_on(async {
                let ch = opts.connect().await?;
                client::get_nodes(ch, opts.request_timeout).await
            })?;
            warn_version(r.version_warning.as_deref());
            list::write_nodes(&mut out, r.body, format)?;
        }
        "namespaces" => {
            let r = rt.block_on(async {
                let ch = opts.connect().await?;
                client::get_namespaces(ch, opts.request_timeout).await
            })?;
            warn_version(r.version_warning.as_deref());
            list::write_namespaces(&mut out, &r.body, format)?;
        }
        _ => unreachable!("clap knows the subcommands"),
    }
    out.flush()?;
    Ok(exit::OK)
}
