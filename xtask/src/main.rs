//! `cargo xtask <task>`: build, test, demo, fixture and bench orchestration.

mod bench;
mod bench_agent;
mod bench_containers;
mod bench_kvstore;
mod bench_server;
mod demo;
mod demo_containers;
mod fuzz;
mod gen_flows;
mod image;
mod image_archive;
mod packages;
mod test;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test       everything CI checks: system packages (as root), fmt, clippy, all tests
  demo       (root) installs what it needs, lab up, agent flows into `hubble observe`,
             traffic, lab down
             (--containers: containers of a containerd of its own instead of the lab)
  bench      observe [--count N] [--runs R] [--compare OTHER_HUBBLE]: CLI throughput and memory
             server [--runs R] [--rate N] [--seconds S]: the Hubble API over its unix socket
               (a full ring read whole, then follow mode)
             containers [--count N] [--pings N] [--rounds R]: (root) BPF cost per packet
               between containers vs lab pods; N containers started at once under the agent
               (time to observe, CPU per endpoint, RSS)
             kvstore [--endpoints N]: (root) the agent's RSS with its kvstore watchers
               holding N remote endpoints (default 1000) written into a throwaway etcd
  fuzz       [--seconds N | --runs N] [--merge] [TARGET...]: the libFuzzer targets of fuzz/
             (stable Rust), each from its corpus in fuzz/corpus; fails on a crash
  image      [--tag NAME:TAG] [--output DIR]: static (musl) release binaries of hubble-agent,
             hubble-relay and hubble in an image FROM scratch, DIR/hubble-rs.tar for
             `docker load` (also an OCI layout); no daemon, no registry
  gen-flows  --count N [--seed S] [--out FILE|-]: write generated flows as JSON lines";

/// Runs `cmd` (echoed first), failing unless it exits 0.
fn run(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    use anyhow::Context;
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        anyhow::bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::test(),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("image") => image::run(&args[1..]),
        Some("gen-flows") => gen_flows::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("xtask: unknown task {other:?}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
