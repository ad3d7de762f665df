//! The protobuf → JSON transcoder (`hubble_api::transcode`, what `hubble observe -o json`
//! uses against a server) writes exactly what decoding with prost and encoding with the
//! generated `ProtoJson` encoder write, on every fixture and on a large generated corpus.

use hubble_api::json::ProtoJson;
use hubble_api::observer::GetFlowsResponse;
use hubble_api::transcode::{self, ResponseKind};
use prost::Message;

fn check(resp: &GetFlowsResponse, what: &str) -> ResponseKind {
    let bytes = resp.encode_to_vec();
    let mut got = Vec::new();
    let kind =
        transcode::get_flows_response(&bytes, &mut got).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = GetFlowsResponse::decode(&bytes[..])
        .unwrap()
        .to_json_vec()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "{what}"
    );
    kind
}

#[test]
fn every_fixture_response_transcodes_to_the_encoders_bytes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");
    let mut n = 0;
    for f in [
        "flows/demo.jsonl",
        "flows/malformed.jsonl",
        "golden/input.jsonl",
        "golden/input-v1.19.jsonl",
    ] {
        let path = format!("{root}/{f}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for (i, line) in text.lines().enumerate() {
            if let Ok(resp) = serde_json::from_str::<GetFlowsResponse>(line) {
                check(&resp, &format!("{f}:{}", i + 1));
                n += 1;
            }
        }
    }
    assert!(n > 100, "only {n} responses checked");
}

#[test]
fn generated_corpus_transcodes_to_the_encoders_bytes() {
    let mut kinds = [0usize; 4];
    for seed in [1, 2, 3] {
        let mut g = xtask::flowgen::FlowGen::new(seed);
        for i in 0..8000 {
            let kind = check(&g.next_response(), &format!("seed {seed} response {i}"));
            kinds[kind as usize] += 1;
        }
    }
    assert!(
        kinds[ResponseKind::Flow as usize] > 20_000 && kinds[ResponseKind::LostEvents as usize] > 0,
        "{kinds:?}"
    );
}
