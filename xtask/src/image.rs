//! `cargo xtask image [--tag T] [--output DIR]`: static (musl) release builds of
//! `hubble-agent`, `hubble-relay` and `hubble` in an image `FROM scratch`, written as one
//! tar that `docker load` and OCI tools read (see `image_archive`). No daemon, no registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::image_archive::{self, Entry};

/// The Rust target of the image's binaries: static, and its resolver works in `scratch`.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The image's name without a tag; the tag defaults to the workspace's version.
pub const NAME: &str = "hubble-rs";
/// The archive's file name in the output directory.
pub const ARCHIVE: &str = "hubble-rs.tar";
/// The binaries, in /usr/bin of the image.
const BINARIES: &[&str] = &["hubble-agent", "hubble-relay", "hubble"];

const USAGE: &str = "usage: cargo xtask image [--tag NAME:TAG] [--output DIR]
  build hubble-agent, hubble-relay and hubble for x86_64-unknown-linux-musl (release,
  static) and write an image FROM scratch holding them to DIR/hubble-rs.tar, loadable with
  `docker load -i` (also an OCI layout). Entrypoint /usr/bin/hubble-agent, command `run`;
  the relay and the CLI run from the same image with another entrypoint.
  --tag: the image's NAME:TAG (default hubble-rs:<workspace version>)
  --output: where to write (default <target dir>/image)";

/// The default `--tag`.
pub fn default_tag() -> String {
    format!("{NAME}:{}", env!("CARGO_PKG_VERSION"))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut tag = default_tag();
    let mut output = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--tag" => tag = val()?.clone(),
            "--output" => output = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("image: unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if !tag.contains(':') {
        bail!("--tag {tag:?}: give NAME:TAG");
    }
    let output = match output {
        Some(o) => o,
        None => target_dir()?.join("image"),
    };
    let archive = build(&tag, &output)?;
    eprintln!(
        "xtask: image {tag} in {} (docker load -i {0})",
        archive.display()
    );
    Ok(())
}

/// Builds the binaries and writes the image `tag` to `output/hubble-rs.tar`; returns its path.
pub fn build(tag: &str, output: &Path) -> anyhow::Result<PathBuf> {
    use crate::packages::{BUILD, IMAGE, ensure};
    ensure(&[BUILD, IMAGE])?;
    ensure_target()?;
    let binaries = cargo_build()?;
    let contents: Vec<(&str, Vec<u8>)> = BINARIES
        .iter()
        .map(|b| {
            let path = binaries
                .iter()
                .find(|p| p.file_name().is_some_and(|n| n == *b))
                .with_context(|| format!("cargo built no {b}"))?;
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Ok((*b, data))
        })
        .collect::<anyhow::Result<_>>()?;
    let paths: Vec<String> = contents
        .iter()
        .map(|(b, _)| format!("usr/bin/{b}"))
        .collect();
    let mut files = vec![
        Entry::Dir("usr", 0o755),
        Entry::Dir("usr/bin", 0o755),
        // The agent's unix socket (/var/run/cilium/hubble.sock) and temporary files.
        Entry::Dir("var", 0o755),
        Entry::Dir("var/run", 0o755),
        Entry::Dir("var/run/cilium", 0o755),
        Entry::Dir("tmp", 0o1777),
    ];
    for ((_, data), path) in contents.iter().zip(&paths) {
        files.push(Entry::File(path, 0o755, data));
    }
    let version = env!("CARGO_PKG_VERSION");
    let image = image_archive::Image {
        repo_tag: tag,
        architecture: "amd64",
        entrypoint: &["/usr/bin/hubble-agent"],
        cmd: &["run"],
        env: &["PATH=/usr/bin"],
        labels: &[
            ("org.opencontainers.image.title", NAME),
            ("org.opencontainers.image.version", version),
            (
                "org.opencontainers.image.description",
                "hubble-agent, hubble-relay and the hubble CLI (static, musl)",
            ),
        ],
        created: created(),
    };
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let path = output.join(ARCHIVE);
    let tmp = output.join(format!(".{ARCHIVE}.tmp"));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let id = image_archive::write(&image, &files, &mut f)?;
    use std::io::Write;
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    eprintln!("xtask: image id {id}");
    Ok(path)
}

/// The image's creation time: SOURCE_DATE_EPOCH (reproducible builds' convention) or the
/// epoch, so the same binaries always give the same image id.
fn created() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Adds the musl target to the rustup toolchain when it lacks it.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => crate::run(Command::new("rustup").args(["target", "add", TARGET])),
        // No rustup: the toolchain must have the target already; cargo says so if not.
        Err(_) => Ok(()),
    }
}

/// The cargo target directory (CARGO_TARGET_DIR or the workspace's `target`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(crate::fuzz::root())
        .stderr(Stdio::inherit())
        .output()
        .context("cargo metadata")?;
    if !o.status.success() {
        bail!("cargo metadata failed");
    }
    let m: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    m["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata: no target_directory")
}

/// `cargo build --release --target musl` of the binaries (stripped: the release profile's
/// line tables stay out of the image); returns the executables cargo reports.
fn cargo_build() -> anyhow::Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::fuzz::root())
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .args([
            "-p",
            "hubble-agent",
            "-p",
            "hubble-relay",
            "-p",
            "hubble",
            "--bins",
        ])
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .stdout(Stdio::piped());
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .spawn()
        .context("cannot start cargo")?
        .wait_with_output()?;
    if !out.status.success() {
        bail!("cargo build for {TARGET} failed with {}", out.status);
    }
    let mut exes = Vec::new();
    for line in out.stdout.split(|&b| b == b'\n') {
        if let Ok(m) = serde_json::from_slice::<serde_json::Value>(line)
            && m["reason"] == "compiler-artifact"
            && let Some(exe) = m["executable"].as_str()
        {
            exes.push(PathBuf::from(exe));
        }
    }
    Ok(exes)
}
