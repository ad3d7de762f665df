//! `cargo xtask gen-flows --count N [--seed S] [--out FILE|-]`: writes generated flows
//! (GetFlowsResponse JSON lines, see `xtask::flowgen`) to a file or stdout.

use std::fs::File;
use std::io::{self, BufWriter};

use anyhow::{Context, Result, bail};
use xtask::flowgen;

const USAGE: &str = "usage: cargo xtask gen-flows --count N [--seed S] [--out FILE|-]
  write N generated flows (GetFlowsResponse JSON lines) to FILE or stdout (default);
  the default seed is 1";

/// `gen-flows --count N [--seed S] [--out FILE|-]`
pub fn run(args: &[String]) -> Result<()> {
    let mut count: Option<usize> = None;
    let mut seed = flowgen::DEFAULT_SEED;
    let mut out = String::from("-");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .with_context(|| format!("{name} needs a value"))
        };
        match name {
            "--count" | "-n" => count = Some(value()?.parse().context("--count: not a number")?),
            "--seed" | "-s" => seed = value()?.parse().context("--seed: not a number")?,
            "--out" | "-o" => out = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("gen-flows: unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let count = count.context("gen-flows: --count N is required")?;
    if out == "-" {
        let stdout = io::stdout().lock();
        flowgen::write_jsonl(BufWriter::with_capacity(1 << 16, stdout), seed, count)
            .context("writing flows to stdout")?;
    } else {
        if let Some(dir) = std::path::Path::new(&out)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::create(&out).with_context(|| format!("creating {out}"))?;
        flowgen::write_jsonl(BufWriter::with_capacity(1 << 16, file), seed, count)
            .with_context(|| format!("writing flows to {out}"))?;
    }
    Ok(())
}
