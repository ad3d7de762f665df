//! Fuzzes monitor decode, packet decode and enrichment: no input may panic.
#![no_main]

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use agent::enrich::{Enricher, NodeState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = agent::monitor::decode(data) {
        let _ = agent::monitor::packet::parse(ev.packet(), false);
        let _ = agent::monitor::packet::parse(ev.packet(), true);
    }
    let state = NodeState {
        cluster: "default".into(),
        node: "fuzz".into(),
        host_ips: vec![],
        endpoints: vec![],
        services: vec![],
        identities: BTreeMap::new(),
        policy_rules: Vec::new(),
        index: Default::default(),
    };
    let mut e = Enricher::new(state, "fuzz");
    let _ = e.flow_from_sample(data, UNIX_EPOCH);
});
