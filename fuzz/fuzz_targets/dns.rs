//! The DNS parser on any bytes, then the same bytes as the payload of a query to port 53 and
//! of its answer, through the L7 engine and enrichment: no input may panic.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::UNIX_EPOCH;

use agent::enrich::{Enricher, NodeState};
use agent::l7::{L7_KIND_DNS, L7Engine, build, dns::Message};
use libfuzzer_sys::fuzz_target;

/// One enricher for the whole run, as in the agent (building one costs more than a parse;
/// its caches are bounded); the L7 engine starts afresh for every input.
fn enricher() -> &'static Mutex<Enricher<NodeState>> {
    static E: OnceLock<Mutex<Enricher<NodeState>>> = OnceLock::new();
    E.get_or_init(|| {
        let state = NodeState {
            cluster: "default".into(),
            node: "fuzz".into(),
            host_ips: vec![],
            remote_node_ips: vec![],
            endpoints: vec![],
            services: vec![],
            identities: Default::default(),
            policy_rules: Vec::new(),
            index: Default::default(),
        };
        Mutex::new(Enricher::new(state, "fuzz"))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut m = Message::default();
    if m.parse_into(data).is_ok() {
        let _ = m.ips().count();
        let _ = m.cnames().count();
        let _ = m.min_ip_ttl();
    }
    let (client, server) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let query = build::capture(
        L7_KIND_DNS,
        1,
        0,
        1,
        &build::udp4(client, server, 4000, 53, data),
    );
    let answer = build::capture(
        L7_KIND_DNS,
        1,
        1,
        2,
        &build::udp4(server, client, 53, 4000, data),
    );
    let mut en = enricher().lock().unwrap_or_else(|e| e.into_inner());
    let mut l7 = L7Engine::new();
    let mut out = Vec::new();
    for sample in [&query[..], &answer[..], data] {
        let _ = l7.handle(sample, UNIX_EPOCH, &mut en, &mut out);
    }
});
