//! Field masks (GetFlowsRequest.field_mask): only the listed flow fields (`time`, `IP`,
//! `source.pod_name`, …) are kept. One implementation for the server, the CLI and the exporter.
//!
//! Paths of top-level fields and of endpoint fields (`source.*`, `destination.*`) are copied
//! directly; a mask with any deeper path falls back to the generic JSON-based copy.

use hubble_api::flow::{Endpoint, Flow};
use hubble_api::observer::GetFlowsResponse;
use hubble_api::observer::get_flows_response::ResponseTypes;

/// A field mask compiled once per request.
#[derive(Debug, Clone, Default)]
pub struct FlowMask {
    paths: Vec<String>,
    /// True when every path has a direct copy.
    direct: bool,
    /// The direct mask as field numbers, to cut encoded responses.
    wire: Option<WireMask>,
}

/// A direct mask as protobuf field numbers: Flow fields kept whole, and the Endpoint fields
/// kept of `source` (8) and `destination` (9) when only some of theirs are asked for.
#[derive(Debug, Clone, Default)]
struct WireMask {
    whole: Vec<u32>,
    sides: [(u32, Vec<u32>); 2],
}

impl WireMask {
    fn new(paths: &[String]) -> Option<WireMask> {
        use hubble_api::transcode::field_number;
        let mut m = WireMask {
            whole: Vec::new(),
            sides: [(8, Vec::new()), (9, Vec::new())],
        };
        for p in paths {
            match p.split_once('.') {
                None => m.whole.push(field_number("flow.Flow", p)?),
                Some((side, field)) => {
                    let n = field_number("flow.Flow", side)?;
                    let f = if field == "id" { "ID" } else { field };
                    let f = field_number("flow.Endpoint", f)?;
                    m.sides.iter_mut().find(|s| s.0 == n)?.1.push(f);
                }
            }
        }
        Some(m)
    }

    /// The masked response: every field of the response but the flow is copied; of the
    /// flow, the masked fields. Byte for byte what encoding the masked decoded response
    /// gives, since both keep prost's field order. None on malformed input.
    fn apply(&self, resp: &[u8]) -> Option<Vec<u8>> {
        use hubble_api::transcode::{fields, put_len_field};
        let mut out = Vec::with_capacity(resp.len() / 2);
        let mut flow = Vec::new();
        let mut side = Vec::new();
        for f in fields(resp) {
            let f = f.ok()?;
            if f.number != 1 || f.wire_type != 2 {
                out.extend_from_slice(f.raw);
                continue;
            }
            flow.clear();
            for ff in fields(f.payload) {
                let ff = ff.ok()?;
                if self.whole.contains(&ff.number) {
                    flow.extend_from_slice(ff.raw);
                } else if let Some((_, keep)) = self
                    .sides
                    .iter()
                    .find(|s| s.0 == ff.number && !s.1.is_empty() && ff.wire_type == 2)
                {
                    side.clear();
                    for ef in fields(ff.payload) {
                        let ef = ef.ok()?;
                        if keep.contains(&ef.number) {
                            side.extend_from_slice(ef.raw);
                        }
                    }
                    put_len_field(&mut flow, ff.number, &side);
                }
            }
            put_len_field(&mut out, 1, &flow);
        }
        Some(out)
    }
}

impl FlowMask {
    pub fn new(paths: &[String]) -> Self {
        let mut probe = Flow::default();
        let src = Flow::default();
        let direct = paths.iter().all(|p| copy_path(&mut probe, &src, p));
        FlowMask {
            paths: paths.to_vec(),
            direct,
            wire: if direct && !paths.is_empty() {
                WireMask::new(paths)
            } else {
                None
            },
        }
    }

    /// [`apply`](Self::apply) to a response encoded by prost, without decoding it: the
    /// encoding of the masked response. None when the mask has no field-number form (deep
    /// paths) or the bytes are malformed; then decode, apply and encode.
    pub fn apply_encoded(&self, resp: &[u8]) -> Option<Vec<u8>> {
        self.wire.as_ref()?.apply(resp)
    }

    /// True when no mask was requested (the whole flow is sent).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The response to send for `resp`: a copy holding only the masked flow fields.
    pub fn apply(&self, resp: &GetFlowsResponse) -> GetFlowsResponse {
        match &resp.response_types {
            Some(ResponseTypes::Flow(src)) if !self.is_empty() => {
                if self.direct {
                    let mut flow = Flow::default();
                    for p in &self.paths {
                        copy_path(&mut flow, src, p);
                    }
                    GetFlowsResponse {
                        node_name: resp.node_name.clone(),
                        time: resp.time,
                        response_types: Some(ResponseTypes::Flow(flow)),
                    }
                } else {
                    let mut out = resp.clone();
                    apply_generic(&mut out, &self.paths);
                    out
                }
            }
            _ => resp.clone(),
        }
    }
}

/// Copies one path from `src` into `dst`; false when the path has no direct copy.
fn copy_path(dst: &mut Flow, src: &Flow, path: &str) -> bool {
    match path.split_once('.') {
        None => copy_top(dst, src, path),
        Some((side @ ("source" | "destination"), field)) => {
            let (d, s) = if side == "source" {
                (&mut dst.source, &src.source)
            } else {
                (&mut dst.destination, &src.destination)
            };
            if !is_endpoint_field(field) {
                return false;
            }
            if let Some(s) = s {
                copy_endpoint(d.get_or_insert_with(Endpoint::default), s, field);
            }
            true
        }
        Some(_) => false,
    }
}

fn is_endpoint_field(f: &str) -> bool {
    matches!(
        f,
        "id" | "identity" | "cluster_name" | "namespace" | "labels" | "pod_name" | "workloads"
    )
}

fn copy_endpoint(d: &mut Endpoint, s: &Endpoint, field: &str) {
    match field {
        "id" => d.id = s.id,
        "identity" => d.identity = s.identity,
        "cluster_name" => d.cluster_name.clone_from(&s.cluster_name),
        "namespace" => d.namespace.clone_from(&s.namespace),
        "labels" => d.labels.clone_from(&s.labels),
        "pod_name" => d.pod_name.clone_from(&s.pod_name),
        "workloads" => d.workloads.clone_from(&s.workloads),
        _ => {}
    }
}

/// Top-level fields by their proto names (as in Hubble's JSON and field masks). Deprecated
/// fields are still sent when asked for, as Hubble does.
#[allow(deprecated)]
fn copy_top(d: &mut Flow, s: &Flow, name: &str) -> bool {
    macro_rules! copy {
        ($($name:literal => $field:ident),* $(,)?) => {
            match name {
                $($name => d.$field.clone_from(&s.$field),)*
                _ => return false,
            }
        };
    }
    copy! {
        "time" => time,
        "uuid" => uuid,
        "emitter" => emitter,
        "verdict" => verdict,
        "drop_reason" => drop_reason,
        "auth_type" => auth_type,
        "ethernet" => ethernet,
        "IP" => ip,
        "l4" => l4,
        "tunnel" => tunnel,
        "source" => source,
        "destination" => destination,
        "Type" => r#type,
        "node_name" => node_name,
        "node_labels" => node_labels,
        "source_names" => source_names,
        "destination_names" => destination_names,
        "l7" => l7,
        "reply" => reply,
        "event_type" => event_type,
        "source_service" => source_service,
        "destination_service" => destination_service,
        "traffic_direction" => traffic_direction,
        "policy_match_type" => policy_match_type,
        "trace_observation_point" => trace_observation_point,
        "trace_reason" => trace_reason,
        "file" => file,
        "ip_trace_id" => ip_trace_id,
        "drop_reason_desc" => drop_reason_desc,
        "is_reply" => is_reply,
        "debug_capture_point" => debug_capture_point,
        "interface" => interface,
        "proxy_port" => proxy_port,
        "trace_context" => trace_context,
        "sock_xlate_point" => sock_xlate_point,
        "socket_cookie" => socket_cookie,
        "cgroup_id" => cgroup_id,
        "Summary" => summary,
        "extensions" => extensions,
        "egress_allowed_by" => egress_allowed_by,
        "ingress_allowed_by" => ingress_allowed_by,
        "egress_denied_by" => egress_denied_by,
        "ingress_denied_by" => ingress_denied_by,
        "policy_log" => policy_log,
        "aggregate" => aggregate,
    }
    true
}

/// The generic copy, through the flow's JSON form: any path depth.
fn apply_generic(resp: &mut GetFlowsResponse, paths: &[String]) {
    let Some(ResponseTypes::Flow(flow)) = &mut resp.response_types else {
        return;
    };
    let Ok(serde_json::Value::Object(full)) = serde_json::to_value(&*flow) else {
        return;
    };
    let mut kept = serde_json::Map::new();
    for path in paths {
        copy_json_path(&full, &mut kept, path.split('.'));
    }
    if let Ok(masked) = serde_json::from_value(serde_json::Value::Object(kept)) {
        *flow = masked;
    }
}

fn copy_json_path<'a>(
    src: &serde_json::Map<String, serde_json::Value>,
    dst: &mut serde_json::Map<String, serde_json::Value>,
    mut parts: impl Iterator<Item = &'a str>,
) {
    let Some(key) = parts.next() else { return };
    let Some(value) = src.get(key) else { return };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        dst.insert(key.to_string(), value.clone());
        return;
    }
    if let serde_json::Value::Object(inner) = value {
        let entry = dst
            .entry(key.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(d) = entry {
            copy_json_path(inner, d, rest.into_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Vec<GetFlowsResponse> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
        crate::source::read_responses(std::path::Path::new(path)).unwrap()
    }

    fn paths(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The direct copy gives what the generic JSON-based copy gives.
    #[test]
    fn direct_copy_equals_generic_copy() {
        let default_mask = paths(&[
            "time",
            "verdict",
            "ethernet",
            "IP",
            "l4",
            "source.identity",
            "source.namespace",
            "source.pod_name",
            "destination.identity",
            "destination.namespace",
            "destination.pod_name",
            "Type",
            "node_name",
            "l7",
            "event_type",
            "source_service",
            "destination_service",
            "is_reply",
            "Summary",
            "ip_trace_id",
        ]);
        let masks = [
            default_mask,
            paths(&["source", "destination.labels", "uuid", "drop_reason_desc"]),
            paths(&[
                "egress_allowed_by",
                "traffic_direction",
                "policy_match_type",
            ]),
        ];
        for mask in &masks {
            let m = FlowMask::new(mask);
            assert!(m.direct, "{mask:?}");
            for r in demo() {
                let mut want = r.clone();
                apply_generic(&mut want, mask);
                assert_eq!(m.apply(&r), want, "{mask:?}");
            }
        }
    }

    /// Cutting the encoded response gives the encoding of the decoded response cut.
    #[test]
    fn encoded_cut_equals_decoded_cut() {
        use prost::Message;
        let masks = [
            paths(crate::cmd::server::DEFAULT_FIELD_MASK),
            paths(&["source", "destination.labels", "uuid", "drop_reason_desc"]),
            paths(&["source.identity", "source", "destination.id", "time"]),
            paths(&[
                "egress_allowed_by",
                "traffic_direction",
                "l7",
                "node_labels",
            ]),
        ];
        let mut responses = demo();
        let mut g = xtask::flowgen::FlowGen::new(5);
        responses.extend((0..3000).map(|_| g.next_response()));
        for mask in &masks {
            let m = FlowMask::new(mask);
            for r in &responses {
                let got = m.apply_encoded(&r.encode_to_vec()).expect("direct mask");
                assert_eq!(got, m.apply(r).encode_to_vec(), "{mask:?}");
            }
        }
        let deep = FlowMask::new(&paths(&["l4.TCP.destination_port"]));
        assert!(deep.apply_encoded(&responses[0].encode_to_vec()).is_none());
        let m = FlowMask::new(&masks[0]);
        let b = responses[0].encode_to_vec();
        assert!(m.apply_encoded(&b[..b.len() - 3]).is_none(), "malformed");
    }

    #[test]
    fn deep_paths_use_the_generic_copy() {
        let mask = paths(&["l4.TCP.destination_port", "time"]);
        let m = FlowMask::new(&mask);
        assert!(!m.direct);
        for r in demo() {
            let mut want = r.clone();
            apply_generic(&mut want, &mask);
            assert_eq!(m.apply(&r), want);
        }
        assert!(FlowMask::new(&[]).is_empty());
    }
}
