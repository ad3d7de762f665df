//! Docker as an endpoint source: every running container of the Docker Engine with a
//! network namespace of its own and a veth becomes an endpoint attached at the veth's host
//! side (`docker:<id>`).
//!
//! - Named by the container's name (without the leading `/`), in the namespace of its
//!   compose project (label `com.docker.compose.project`) or else `docker`.
//! - Labelled `container:KEY=VALUE` from the container's labels, less compose's bookkeeping
//!   (`com.docker.compose.*` but the project and service) and values over
//!   [`MAX_LABEL_VALUE`] bytes.
//! - A compose service's container (`com.docker.compose.service`) has the workload
//!   (`DockerComposeService`, service).
//!
//! The network is read, never changed ([`super::netns`]), as the containerd source does:
//! host-network containers (`NetworkMode` host, or the agent's own netns), containers
//! sharing another container's network and those without a veth are skipped, each
//! reported once.
//!
//! Live: the watcher follows `GET /events` of containers and lists again on each start,
//! die or destroy (and every [`RESYNC`]), sending only what changed; when dockerd goes away
//! it reconnects with backoff and resyncs, keeping the endpoints it knows meanwhile.

pub mod api;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::endpoints::{Reconnect, Skips, diff, dns_visibility};
use super::netns::{Located, locate};
use crate::model::{Change, EndpointSpec};
use api::Client;

/// dockerd's default socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// A full list this often, events or not.
pub const RESYNC: Duration = Duration::from_secs(10);
/// How long one API call may take (the event stream: until its head).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one full listing (list and inspects) may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(20);
/// The container actions after which the watcher lists again.
pub const ACTIONS: &[&str] = &["start", "die", "destroy"];
/// The namespace of containers outside a compose project.
pub const NAMESPACE: &str = "docker";
/// Label values longer than this are left out.
pub const MAX_LABEL_VALUE: usize = 1024;
/// The workload kind of a compose service's containers.
pub const COMPOSE_WORKLOAD: &str = "DockerComposeService";

const COMPOSE_PREFIX: &str = "com.docker.compose.";
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// The model key of a container.
pub fn endpoint_key(id: &str) -> String {
    format!("docker:{id}")
}

/// Whether label `key` is compose's bookkeeping rather than the workload's.
fn is_compose_bookkeeping(key: &str) -> bool {
    key.starts_with(COMPOSE_PREFIX) && key != COMPOSE_PROJECT && key != COMPOSE_SERVICE
}

/// The endpoint labels of a container's labels.
pub fn endpoint_labels(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels
        .iter()
        .filter(|(k, v)| !is_compose_bookkeeping(k) && v.len() <= MAX_LABEL_VALUE)
        .map(|(k, v)| format!("container:{k}={v}"))
        .collect()
}

/// An endpoint to be, before its network is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: String,
    /// The container's name.
    pub name: String,
    pub namespace: String,
    pub labels: Vec<String>,
    pub workload: Option<(String, String)>,
    pub pid: u32,
}

/// The endpoint an inspected container would be: `Err` (why) when its network is not its
/// own, `Ok(None)` when it does not run.
pub fn candidate(c: &api::Inspect) -> Result<Option<Candidate>, String> {
    if !c.state.running || c.state.pid == 0 {
        return Ok(None);
    }
    let mode = c.host_config.network_mode.as_str();
    if mode == "host" {
        return Err("uses the host network".to_string());
    }
    if mode == "none" {
        return Err("has no network (network mode none)".to_string());
    }
    if let Some(other) = mode.strip_prefix("container:") {
        return Err(format!("shares the network of container {other}"));
    }
    let empty = BTreeMap::new();
    let labels = c.config.labels.as_ref().unwrap_or(&empty);
    Ok(Some(Candidate {
        key: endpoint_key(&c.id),
        name: c.name.trim_start_matches('/').to_string(),
        namespace: labels
            .get(COMPOSE_PROJECT)
            .filter(|p| !p.is_empty())
            .cloned()
            .unwrap_or_else(|| NAMESPACE.to_string()),
        labels: endpoint_labels(labels),
        workload: labels
            .get(COMPOSE_SERVICE)
            .filter(|s| !s.is_empty())
            .map(|s| (COMPOSE_WORKLOAD.to_string(), s.clone())),
        pid: c.state.pid,
    }))
}

/// The endpoint of a candidate whose veth's host side is `ifname`.
pub fn endpoint(c: &Candidate, ifname: String, ips: Vec<IpAddr>) -> EndpointSpec {
    EndpointSpec {
        key: c.key.clone(),
        namespace: c.namespace.clone(),
        pod_name: c.name.clone(),
        labels: c.labels.clone(),
        workload: c.workload.clone(),
        ips,
        ifname,
        attach: true,
        l7: dns_visibility(),
        identity: None,
    }
}

/// Whether an event calls for a new listing.
pub fn is_resync_event(e: &api::Event) -> bool {
    e.kind == "container" && ACTIONS.contains(&e.action.as_str())
}

/// What a sync saw, for the agent's first words about docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub containers: usize,
    pub endpoints: usize,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} container{}; {} endpoint{}",
            self.containers,
            s(self.containers),
            self.endpoints,
            s(self.endpoints)
        )
    }
}

/// The running containers, inspected (those gone meanwhile left out).
async fn list(client: &Client) -> Result<Vec<api::Inspect>, String> {
    let mut out = Vec::new();
    for c in client.containers().await? {
        if let Some(i) = client.inspect(&c.id).await? {
            out.push(i);
        }
    }
    Ok(out)
}

/// The Docker source: its socket and the endpoints it told the model about.
pub struct Docker {
    socket: PathBuf,
    known: BTreeMap<String, EndpointSpec>,
    reported: Skips,
    /// Why dockerd could not be reached, as last printed (not repeated by the watcher).
    down: Option<String>,
}

impl Docker {
    pub fn new(socket: &Path) -> Docker {
        Docker {
            socket: socket.to_path_buf(),
            known: BTreeMap::new(),
            reported: Skips::default(),
            down: None,
        }
    }

    /// Notes that dockerd could not be reached for `why`, already said to the user.
    pub fn set_down(&mut self, why: String) {
        self.down = Some(why);
    }

    /// A client of the socket (which must be there).
    pub fn client(&self) -> Result<Client, String> {
        Client::new(&self.socket, CALL_TIMEOUT)
    }

    /// Lists dockerd's containers and returns the changes since the last sync.
    pub async fn sync(&mut self, client: &Client) -> Result<(Vec<Change>, SyncReport), String> {
        let listed = tokio::time::timeout(LIST_TIMEOUT, list(client))
            .await
            .map_err(|_| "listing containers: timed out".to_string())??;
        let mut cands = Vec::new();
        for c in &listed {
            match candidate(c) {
                Ok(Some(cand)) => cands.push(cand),
                Ok(None) => {}
                Err(why) => self.skipped(&endpoint_key(&c.id), &c.name, &why),
            }
        }
        let found = locate(cands.iter().map(|c| c.pid).collect()).await;
        let mut next = BTreeMap::new();
        for (c, found) in cands.iter().zip(found) {
            match found {
                Located::Gone => {}
                Located::Veth { ifname, ips } => {
                    self.reported.forget(&c.key);
                    next.insert(c.key.clone(), endpoint(c, ifname, ips));
                }
                Located::Skip(why) => self.skipped(&c.key, &c.name, &why),
            }
        }
        let live: BTreeSet<String> = listed.iter().map(|c| endpoint_key(&c.id)).collect();
        self.reported.retain(|k| live.contains(k));
        let changes = diff(&self.known, &next);
        let report = SyncReport {
            containers: listed.len(),
            endpoints: next.len(),
        };
        self.known = next;
        Ok((changes, report))
    }

    fn skipped(&mut self, key: &str, name: &str, why: &str) {
        if self.reported.is_new(key, why) {
            let name = name.trim_start_matches('/');
            eprintln!("hubble-agent: docker: container {name} skipped: {why}");
        }
    }

    /// The watcher: events and periodic resyncs, reconnecting with backoff.
    pub fn watcher(self) -> super::Watcher {
        Box::new(move |tx| Box::pin(self.watch(tx)))
    }

    async fn watch(mut self, tx: mpsc::Sender<Vec<Change>>) {
        let mut conn = Reconnect::new("docker", &self.socket, self.down.take());
        loop {
            // Subscribed before listing: nothing happens unseen in between.
            let connected = match self.client() {
                Ok(c) => c.events().await.map(|e| (c, e)),
                Err(e) => Err(e),
            };
            let (client, mut events) = match connected {
                Ok(c) => c,
                Err(e) => {
                    if conn.failed(e, &tx).await {
                        return;
                    }
                    continue;
                }
            };
            conn.connected();
            let mut buf = BytesMut::new();
            let mut ticker = tokio::time::interval(RESYNC);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is now: the resync after (re)connecting.
            let lost = loop {
                tokio::select! {
                    biased;
                    _ = tx.closed() => return,
                    f = events.frame() => match f {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else { continue };
                            buf.extend_from_slice(&data);
                            match api::take_lines(&mut buf) {
                                Ok(lines) => {
                                    let resync = lines.iter().any(|l| {
                                        serde_json::from_slice::<api::Event>(l)
                                            .is_ok_and(|e| is_resync_event(&e))
                                    });
                                    if !resync {
                                        continue;
                                    }
                                }
                                Err(e) => break e,
                            }
                        }
                        Some(Err(e)) => break format!("event stream: {e}"),
                        None => break "the event stream ended".to_string(),
                    },
                    _ = ticker.tick() => {}
                }
                match self.sync(&client).await {
                    Ok((changes, _)) => {
                        if !changes.is_empty() && tx.send(changes).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => break e,
                }
            };
            if conn.lost(lost, &tx).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
