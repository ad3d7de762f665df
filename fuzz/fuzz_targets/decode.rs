//! Monitor decode, packet parse and enrichment through the agent's `FlowBuilder`, with the
//! node state of fixtures/datapath/mini.hlrec (its endpoints, identities, services and
//! policies): no input may panic, and every flow built has a JSON form.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use agent::datapath::record::{RawRecord, Reader};
use agent::enrich::{Enricher, NodeState};
use agent::flows::builder::FlowBuilder;
use agent::l7::L7Engine;
use hubble_api::json::ProtoJson;
use libfuzzer_sys::fuzz_target;

/// One builder for the whole run, as in the agent (building an enricher costs more than a
/// decode; its caches are bounded); its L7 engine starts afresh for every input.
fn builder() -> &'static Mutex<FlowBuilder<NodeState>> {
    static B: OnceLock<Mutex<FlowBuilder<NodeState>>> = OnceLock::new();
    B.get_or_init(|| {
        let rec = include_bytes!("../../fixtures/datapath/mini.hlrec");
        let state = Reader::new(&rec[..]).expect("fixture recording").state;
        let node = state.node_name();
        Mutex::new(FlowBuilder::new(Enricher::new(state, node)))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = agent::monitor::decode(data) {
        let _ = agent::monitor::packet::parse(ev.packet(), false);
        let _ = agent::monitor::packet::parse(ev.packet(), true);
    }
    let mut builder = builder().lock().unwrap_or_else(|e| e.into_inner());
    builder.l7 = L7Engine::new();
    let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // What the perf reader hands over, and the same bytes as an L7 capture (the recording
    // reader turns a sample whose first byte is MSG_L7_CAPTURE into one).
    let records = [
        RawRecord::Sample {
            cpu: 0,
            time,
            data: data.to_vec(),
        },
        RawRecord::L7 {
            time,
            data: data.to_vec(),
        },
    ];
    let mut json = Vec::new();
    for r in &records {
        let (responses, _) = builder.handle(r);
        for resp in responses {
            json.clear();
            resp.write_json(&mut json)
                .expect("a flow the agent builds has a JSON form");
        }
    }
});
