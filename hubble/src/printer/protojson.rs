//! JSON lines for `-o json` / `-o jsonpb`, through the encoder that hubble-api generates from
//! the .proto descriptors (`hubble_api::json::ProtoJson`): Go Hubble's bytes (protojson with
//! proto names, declaration order, Go's HTML-safe escaping), without a per-flow allocation.

use std::io;

use hubble_api::flow::Flow;
use hubble_api::json::ProtoJson;
use hubble_api::observer::GetFlowsResponse;

/// Appends a Flow as protojson with proto field names (no newline), e.g. for Hubble's legacy
/// `-o json` (bare flows) or other JSON-lines writers.
pub fn write_flow(out: &mut Vec<u8>, f: &Flow) -> io::Result<()> {
    let start = out.len();
    f.write_json(out).map_err(|e| {
        out.truncate(start);
        io::Error::other(e)
    })
}

/// Appends a GetFlowsResponse line (with the newline) as Go Hubble's `-o jsonpb` prints it.
/// On error, `out` is restored to its previous length.
pub fn write_get_flows_response(out: &mut Vec<u8>, r: &GetFlowsResponse) -> io::Result<()> {
    let start = out.len();
    match r.write_json(out) {
        Ok(()) => {
            out.push(b'\n');
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(io::Error::other(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_timestamp_leaves_nothing_behind() {
        let r = GetFlowsResponse {
            time: Some(hubble_api::pbjson_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..Default::default()
        };
        let mut out = b"before".to_vec();
        assert!(write_get_flows_response(&mut out, &r).is_err());
        assert_eq!(out, b"before");
    }
}
