//! DNS parser on arbitrary bytes, raw and as an L7 capture through the whole engine:
//! `cargo +nightly fuzz run dns` from agent/.
#![no_main]

use agent::l7::dns::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut m = Message::default();
    if m.parse_into(data).is_ok() {
        let _ = m.ips().count();
        let _ = m.cnames().count();
        let _ = m.min_ip_ttl();
    }
    let frame = agent::l7::build::udp4([10, 0, 0, 1], [10, 0, 0, 2], 53, 4000, data);
    let sample = agent::l7::build::capture(agent::l7::L7_KIND_DNS, 1, 1, 1, &frame);
    let state = agent::enrich::NodeState {
        cluster: "default".into(),
        node: "fuzz".into(),
        host_ips: vec![],
        endpoints: vec![],
        services: vec![],
        identities: Default::default(),
        policy_rules: Vec::new(),
        index: Default::default(),
    };
    let mut en = agent::enrich::Enricher::new(state, "fuzz");
    let mut l7 = agent::l7::L7Engine::new();
    let mut out = Vec::new();
    let _ = l7.handle(&sample, std::time::UNIX_EPOCH, &mut en, &mut out);
    // The raw bytes as a whole sample too.
    let _ = l7.handle(data, std::time::UNIX_EPOCH, &mut en, &mut out);
});
