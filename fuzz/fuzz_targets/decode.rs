//! Monitor decode, packet parse and enrichment through the agent's `FlowBuilder`, with the
//! node state of fixtures/datapath/mini.hlrec (its endpoints, identities, services and
//! policies): no input may panic, and every flow built has a JSON form.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use agent::datapath::record::{RawRecord, Reader};
use agent::enrich::{Enricher, NodeState};
use agent::flows::builder::FlowBuilder;
use hubble_api::json::ProtoJson;
use libfuzzer_sys::fuzz_target;

fn state() -> &'static NodeState {
    static STATE: OnceLock<NodeState> = OnceLock::new();
    STATE.get_or_init(|| {
        let rec = include_bytes!("../../fixtures/datapath/mini.hlrec");
        Reader::new(&rec[..]).expect("fixture recording").state
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = agent::monitor::decode(data) {
        let _ = agent::monitor::packet::parse(ev.packet(), false);
        let _ = agent::monitor::packet::parse(ev.packet(), true);
    }
    let state = state().clone();
    let node = state.node_name();
    let mut builder = FlowBuilder::new(Enricher::new(state, node));
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
