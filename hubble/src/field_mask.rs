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
}

impl FlowMask {
    pub fn new(paths: &[String]) -> Self {
        let mut probe = Flow::default();
        let src = Flow::default();
        let direct = paths.iter().all(|p| copy_path(&mut probe, &src, p));
        FlowMask {
            paths: paths.to_vec(),
            direct,
        }
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
        let text = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/flows/demo.jsonl"
        ))
        .unwrap();
        text.split(|b| *b == b'\n')
            .enumerate()
            .filter_map(|(i, l)| crate::source::parse_line(i as u64 + 1, l).unwrap())
            .collect()
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
