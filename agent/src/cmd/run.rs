//! `hubble-agent run`: the lab source (or, without a lab, the host and its container
//! runtimes) feeds the model, which drives the datapath; records
//! go through the flow builder to the sinks (JSON-lines printer, observer ring, exporter,
//! metrics); agent events go to the Hubble server's store.

use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use super::{DatapathArgs, Started, start};
use crate::daemon::{Event, Watcher};
use crate::enrich::Enricher;
use crate::flows::{FlowBuilder, FlowSink, JsonLines};
use crate::observer::events::{self, AgentEvents};
use crate::sources::policy_files::{self, PolicyDir};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dp: DatapathArgs,
    /// Print every flow as one JSON line (`hubble observe -o json` format).
    #[arg(long)]
    pub print_flows: bool,
    /// Enforce the CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy files (*.yaml,
    /// *.yml, *.json) of this directory, besides the lab's policies; it is watched, and an
    /// invalid file is reported on stderr while its last valid version stays in force.
    #[arg(long, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Stop after this long (default: until SIGINT/SIGTERM), e.g. 30s.
    #[arg(long, value_parser = crate::args::parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub server: crate::observer::run::ServerArgs,
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    pub export: crate::exporter::ExportArgs,
    #[command(flatten)]
    pub redact: crate::l7::redact::RedactArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    let redact = crate::l7::redact::Redact::from_args(&args.redact).map_err(anyhow::Error::msg)?;
    // Bound before entering the node netns: TCP listens where the agent was started.
    let metrics = crate::metrics::setup(&args.metrics)?;
    let exporter = crate::exporter::Exporters::start(&args.export)?;
    let server = crate::observer::run::HubbleServer::bind(&args.server)?;
    let mut dp = args.dp.clone();
    dp.kvstore.peer_address = server.as_ref().and_then(|s| s.peer_address());
    let policy_dir = args.policy_dir.clone();
    let Started {
        mut node,
        banner,
        watchers,
        peers,
    } = start(
        &dp,
        Box::new(move |reserved| policy_dir_source(policy_dir.as_deref(), reserved)),
    )?;
    let node_name = node.model.state().node_name();
    // With a kvstore, the registry's nodes; else a multi-node lab's.
    let peers = match &node.cluster {
        Some(c) => c.peers(),
        None => tokio::sync::watch::channel(peers).1,
    };
    let server = server
        .map(|mut s| {
            s.set_other_peers(peers);
            if let Some(c) = &node.cluster {
                s.set_kvstore_health(c.health());
            }
            if let Some(e) = &exporter {
                s.set_agent_event_sink(e.agent_event_sink());
            }
            s.start(&node_name)
        })
        .transpose()?;
    // Agent events go to the server's store, which hands them to the exporter; without a
    // server, to a store of our own that only feeds the exporter (AGENT_STARTED first).
    let own_events = match (&server, &exporter) {
        (None, Some(e)) => {
            let events = AgentEvents::new(node_name.clone());
            let _ = events.set_sink(e.agent_event_sink());
            let now = std::time::SystemTime::now();
            events.push_at(events::agent_started(now), now);
            Some(events)
        }
        _ => None,
    };
    let agent_events = server
        .as_ref()
        .map(|s| s.observer().agent_events())
        .or(own_events.as_ref());
    let record_events = |evs: &[hubble_api::flow::AgentEvent]| {
        if let Some(store) = agent_events {
            for e in evs {
                store.push(e.clone());
            }
        }
    };
    record_events(&node.events_up);
    let (metrics, metrics_server) = metrics.unzip();
    let _metrics_server = match (&metrics, metrics_server) {
        (Some(m), Some(srv)) => {
            match node.datapath.stats() {
                Ok(dp) => m.set_datapath(dp),
                Err(e) => eprintln!("hubble-agent: warning: no datapath counters in metrics: {e}"),
            }
            if let Some(s) = &server {
                m.set_observer(s.observer().clone());
            }
            if let Some(e) = &exporter {
                m.set_export_dropped(e.dropped_counter());
                if let Some(c) = e.collector() {
                    m.add_collector(c);
                }
            }
            Some(srv.start(m.clone())?)
        }
        _ => None,
    };

    // The sinks, in the order each record's flows reach them.
    let stdout = io::stdout();
    let mut sinks: Vec<Box<dyn FlowSink + '_>> = Vec::new();
    if args.print_flows {
        sinks.push(Box::new(JsonLines::new(BufWriter::new(stdout.lock()))));
    }
    if let Some(m) = &metrics {
        sinks.push(Box::new(m.clone()));
    }
    if let Some(e) = &exporter {
        sinks.push(Box::new(e));
    }
    if let Some(s) = &server {
        sinks.push(Box::new(s.observer().clone()));
    }
    let mut builder = FlowBuilder::new(Enricher::new(node.model.state().clone(), node_name));
    builder.l7.redact = redact;
    let res = node.run(&banner, args.duration, watchers, |ev| {
        match ev {
            Event::Record(rec, more) => {
                let (responses, counters) = builder.handle(rec);
                for s in sinks.iter_mut() {
                    s.take(responses, counters, more)?;
                }
            }
            Event::Changed(state, applied) => {
                builder.enricher_mut().set_getters(state.clone());
                record_events(&applied.events);
                if let Some(m) = &metrics {
                    m.forget_deleted_endpoints(&applied.events);
                }
            }
        }
        Ok(())
    });
    for s in sinks.iter_mut() {
        let _ = s.finish();
    }
    drop(sinks);
    let down = node.shutdown(&builder.counters.to_string());
    record_events(&down);
    if let Some(e) = exporter {
        e.stop();
    }
    if let Some(s) = server
        && let Err(e) = s.stop()
    {
        eprintln!("hubble-agent: {e:#}");
    }
    match res {
        Err(e) if !is_broken_pipe(&e) => Err(e),
        _ => Ok(()),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// The policies of `--policy-dir` (none without it): their first view, printed, and the
/// directory's watcher. `reserved` policy names belong to another source.
fn policy_dir_source(
    dir: Option<&std::path::Path>,
    reserved: Vec<(String, String)>,
) -> Result<(Vec<crate::model::Change>, Vec<Watcher>)> {
    let Some(dir) = dir else {
        return Ok((Vec::new(), Vec::new()));
    };
    if !dir.is_dir() {
        bail!("--policy-dir {}: not a directory", dir.display());
    }
    let mut pd = PolicyDir::new(dir, reserved.into_iter().collect());
    let (changes, errors) = pd.poll();
    for e in errors {
        eprintln!("hubble-agent: {e}");
    }
    let names: Vec<String> = pd
        .policies()
        .map(|p| policy_files::display_key(&p.key()))
        .collect();
    eprintln!(
        "hubble-agent: {} policies from {}: {}",
        names.len(),
        dir.display(),
        names.join(", ")
    );
    Ok((changes, vec![pd.watcher()]))
}

#[cfg(test)]
mod tests {
    use super::RunArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    /// The Hubble flags of cilium-agent that `run` implements parse under Cilium's names
    /// (the parity table in docs/PARITY.md lists them).
    #[test]
    fn ciliums_hubble_flag_names_are_accepted() {
        let cli = Cli::try_parse_from([
            "run",
            "--hubble-socket-path=/tmp/h.sock",
            "--hubble-listen-address=127.0.0.1:4244",
            "--hubble-event-buffer-capacity=1023",
            "--hubble-tls-cert-file=/c",
            "--hubble-tls-key-file=/k",
            "--hubble-tls-client-ca-files=/ca",
            "--hubble-metrics=flow,drop",
            "--hubble-metrics-server=:9965",
            "--enable-hubble-open-metrics",
            "--hubble-export-file-path=/e.log",
            "--hubble-export-file-max-size-mb=5",
            "--hubble-export-file-max-backups=2",
            "--hubble-export-file-compress",
            "--hubble-export-allowlist={}",
            "--hubble-export-denylist={}",
            "--hubble-export-fieldmask=time",
            "--hubble-export-fieldaggregate=source",
            "--hubble-export-aggregation-interval=30s",
            "--hubble-flowlogs-config-path=/f.yaml",
            "--hubble-redact-enabled",
            "--hubble-redact-http-urlquery",
            "--hubble-redact-http-userinfo=false",
            "--hubble-redact-http-headers-deny=authorization",
            "--bpf-ct-timeout-regular-tcp=6h",
            "--allow-localhost=policy",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let r = cli.run;
        assert_eq!(r.server.max_flows, 1023);
        assert_eq!(r.server.socket, std::path::PathBuf::from("/tmp/h.sock"));
        assert_eq!(r.server.listen_address, "127.0.0.1:4244");
        assert!(r.redact.redact_enabled && !r.redact.redact_http_userinfo);
        assert_eq!(r.export.export_file_max_backups, 2);
        Cli::try_parse_from(["run", "--hubble-disable-tls"]).unwrap();
    }
}
