//! The protobuf → JSON transcoder (`hubble_api::transcode`, `hubble observe -o json` against a
//! server) on any bytes, as a GetFlowsResponse and as a Flow: no input may panic; what it
//! transcodes, prost decodes and `ProtoJson` writes to the same bytes; what prost refuses, it
//! refuses; and prost's own re-encoding of what it decodes always transcodes.
#![no_main]

use hubble_api::flow::Flow;
use hubble_api::json::ProtoJson;
use hubble_api::observer::GetFlowsResponse;
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::transcode::{self, ResponseKind, TranscodeError};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Checks the transcoder's answer `got` (JSON appended to `out`) against prost's `decoded`.
fn agree<M: Message + ProtoJson>(
    what: &str,
    got: Result<(), TranscodeError>,
    out: &[u8],
    decoded: &Result<M, prost::DecodeError>,
) {
    match (got, decoded) {
        (Ok(()), Ok(m)) => {
            let want = m.to_json_vec().expect("transcoded, so it has a JSON form");
            assert_eq!(
                String::from_utf8_lossy(out),
                String::from_utf8_lossy(&want),
                "{what}: transcoder and prost + ProtoJson differ"
            );
        }
        (Ok(()), Err(e)) => panic!("{what}: transcoded what prost refuses ({e})"),
        (Err(TranscodeError::Malformed(why)), Ok(_)) => {
            panic!("{what}: transcoder calls malformed ({why}) what prost decodes")
        }
        (Err(TranscodeError::Json(e)), Ok(m)) => {
            assert!(
                m.to_json_vec().is_err(),
                "{what}: transcoder says {e}, ProtoJson writes it"
            )
        }
        (Err(_), _) => {}
    }
    if !out.is_empty() {
        assert!(decoded.is_ok(), "{what}: output left after an error");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let got = transcode::get_flows_response(data, &mut out);
    let decoded = GetFlowsResponse::decode(data);
    if let (Ok(kind), Ok(resp)) = (&got, &decoded) {
        let want = match resp.response_types {
            None => ResponseKind::None,
            Some(ResponseTypes::Flow(_)) => ResponseKind::Flow,
            Some(ResponseTypes::NodeStatus(_)) => ResponseKind::NodeStatus,
            Some(ResponseTypes::LostEvents(_)) => ResponseKind::LostEvents,
        };
        assert_eq!(*kind, want, "response kind");
    }
    agree("GetFlowsResponse", got.map(|_| ()), &out, &decoded);
    if let Ok(resp) = &decoded {
        let canonical = resp.encode_to_vec();
        out.clear();
        let got = transcode::get_flows_response(&canonical, &mut out);
        assert!(
            !matches!(got, Err(TranscodeError::Malformed(_))),
            "prost's own encoding is malformed: {got:?}"
        );
        agree(
            "re-encoded GetFlowsResponse",
            got.map(|_| ()),
            &out,
            &decoded,
        );
    }

    out.clear();
    let got = transcode::flow(data, &mut out);
    agree("Flow", got, &out, &Flow::decode(data));

    for field in transcode::fields(data) {
        if field.is_err() {
            break;
        }
    }
});
