//! Hubble's context options (`sourceContext`, `destinationContext`, their per-direction
//! variants and `labelsContext`): which `source` / `destination` / context labels a metric has.

use hubble_api::flow::{Endpoint, Flow, TrafficDirection};

use super::vec::KeyBuf;

/// One way to name a flow's source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextId {
    Identity,
    Namespace,
    Pod,
    PodShort,
    PodName,
    Dns,
    Ip,
    ReservedIdentity,
    WorkloadName,
    App,
}

impl ContextId {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "identity" => Self::Identity,
            "namespace" => Self::Namespace,
            "pod" => Self::Pod,
            "pod-short" => Self::PodShort,
            "pod-name" => Self::PodName,
            "dns" => Self::Dns,
            "ip" => Self::Ip,
            "reserved-identity" => Self::ReservedIdentity,
            "workload-name" => Self::WorkloadName,
            "app" => Self::App,
            _ => {
                return Err(format!(
                    "unknown context '{s}' (one of identity, namespace, pod, pod-short, pod-name, dns, ip, reserved-identity, workload-name, app)"
                ));
            }
        })
    }
}

/// `labelsContext` labels, in Hubble's fixed order.
pub const CONTEXT_LABELS: [&str; 11] = [
    "source_ip",
    "source_pod",
    "source_namespace",
    "source_workload",
    "source_app",
    "destination_ip",
    "destination_pod",
    "destination_namespace",
    "destination_workload",
    "destination_app",
    "traffic_direction",
];

/// The context options of one handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextOptions {
    pub source: Vec<ContextId>,
    pub source_egress: Option<Vec<ContextId>>,
    pub source_ingress: Option<Vec<ContextId>>,
    pub destination: Vec<ContextId>,
    pub destination_egress: Option<Vec<ContextId>>,
    pub destination_ingress: Option<Vec<ContextId>>,
    /// Indexes into [`CONTEXT_LABELS`], ascending.
    pub labels: Vec<usize>,
}

fn parse_list(v: &str) -> Result<Vec<ContextId>, String> {
    v.split('|').map(ContextId::parse).collect()
}

impl ContextOptions {
    /// Takes the context keys (case-insensitive, as Hubble) out of `opts`; returns whether
    /// `key` was one.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key.to_ascii_lowercase().as_str() {
            "sourcecontext" => self.source = parse_list(value)?,
            "sourceegresscontext" => self.source_egress = Some(parse_list(value)?),
            "sourceingresscontext" => self.source_ingress = Some(parse_list(value)?),
            "destinationcontext" => self.destination = parse_list(value)?,
            "destinationegresscontext" => self.destination_egress = Some(parse_list(value)?),
            "destinationingresscontext" => self.destination_ingress = Some(parse_list(value)?),
            "labelscontext" => {
                let mut idx = Vec::new();
                for l in value.split(',') {
                    match CONTEXT_LABELS.iter().position(|c| *c == l) {
                        Some(i) => idx.push(i),
                        None => return Err(format!("invalid labelsContext value: {l}")),
                    }
                }
                idx.sort_unstable();
                idx.dedup();
                self.labels = idx;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The label names these options add, in order.
    pub fn label_names(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.labels.iter().map(|i| CONTEXT_LABELS[*i]).collect();
        if !self.source.is_empty() {
            v.push("source");
        }
        if !self.destination.is_empty() {
            v.push("destination");
        }
        v
    }

    /// Appends the label values of `flow` (same order as [`Self::label_names`]); `invert`
    /// swaps source and destination (httpV2 counts responses under the request's names).
    pub fn push_values(&self, flow: &Flow, invert: bool, key: &mut KeyBuf) {
        let none = Endpoint::default();
        let (mut src, mut dst) = (
            flow.source.as_ref().unwrap_or(&none),
            flow.destination.as_ref().unwrap_or(&none),
        );
        let ip = flow.ip.as_ref();
        let (mut src_ip, mut dst_ip) = (
            ip.map_or("", |i| i.source.as_str()),
            ip.map_or("", |i| i.destination.as_str()),
        );
        if invert {
            std::mem::swap(&mut src, &mut dst);
            std::mem::swap(&mut src_ip, &mut dst_ip);
        }
        for i in &self.labels {
            match CONTEXT_LABELS[*i] {
                "source_ip" => key.push(src_ip),
                "source_pod" => key.push(&src.pod_name),
                "source_namespace" => key.push(&src.namespace),
                "source_workload" => key.push(src.workloads.first().map_or("", |w| &w.name)),
                "source_app" => key.push(app(&src.labels)),
                "destination_ip" => key.push(dst_ip),
                "destination_pod" => key.push(&dst.pod_name),
                "destination_namespace" => key.push(&dst.namespace),
                "destination_workload" => key.push(dst.workloads.first().map_or("", |w| &w.name)),
                "destination_app" => key.push(app(&dst.labels)),
                _ => key.push(match TrafficDirection::try_from(flow.traffic_direction) {
                    Ok(TrafficDirection::Ingress) => "ingress",
                    Ok(TrafficDirection::Egress) => "egress",
                    _ => "unknown",
                }),
            }
        }
        let dir = flow.traffic_direction;
        let src_ids = pick(dir, &self.source, &self.source_egress, &self.source_ingress);
        let dst_ids = pick(
            dir,
            &self.destination,
            &self.destination_egress,
            &self.destination_ingress,
        );
        // Source and destination are computed from the flow's own sides and swapped
        // afterwards, as Hubble does.
        let (first, second) = if invert {
            ((dst_ids, false), (src_ids, true))
        } else {
            ((src_ids, true), (dst_ids, false))
        };
        if !self.source.is_empty() {
            key.start();
            push_first_non_empty(flow, first.0, first.1, key);
        }
        if !self.destination.is_empty() {
            key.start();
            push_first_non_empty(flow, second.0, second.1, key);
        }
    }
}

/// The per-direction override of a context list, if set and the flow has that direction.
fn pick<'a>(
    dir: i32,
    all: &'a [ContextId],
    egress: &'a Option<Vec<ContextId>>,
    ingress: &'a Option<Vec<ContextId>>,
) -> &'a [ContextId] {
    match (ingress, egress) {
        (Some(i), _) if dir == TrafficDirection::Ingress as i32 => i,
        (_, Some(e)) if dir == TrafficDirection::Egress as i32 => e,
        _ => all,
    }
}

/// Writes the first non-empty value of `ids` for one side of the flow.
fn push_first_non_empty(flow: &Flow, ids: &[ContextId], source: bool, key: &mut KeyBuf) {
    let mark = key.mark();
    for id in ids {
        push_context_value(flow, *id, source, key);
        if key.mark().0 != mark.0 {
            return;
        }
    }
}

fn push_context_value(flow: &Flow, id: ContextId, source: bool, key: &mut KeyBuf) {
    let none = Endpoint::default();
    let ep = if source {
        flow.source.as_ref()
    } else {
        flow.destination.as_ref()
    }
    .unwrap_or(&none);
    match id {
        ContextId::Namespace => key.push_raw(&ep.namespace),
        ContextId::Identity => join(&ep.labels, key),
        ContextId::Pod | ContextId::PodShort => {
            if !ep.namespace.is_empty() {
                key.push_raw(&ep.namespace);
                key.push_raw("/");
            }
            if id == ContextId::Pod {
                key.push_raw(&ep.pod_name)
            } else {
                key.push_raw(short_pod_name(&ep.pod_name))
            }
        }
        ContextId::PodName => key.push_raw(&ep.pod_name),
        ContextId::Dns => join(
            if source {
                &flow.source_names
            } else {
                &flow.destination_names
            },
            key,
        ),
        ContextId::Ip => {
            if let Some(ip) = &flow.ip {
                key.push_raw(if source { &ip.source } else { &ip.destination })
            }
        }
        ContextId::ReservedIdentity => key.push_raw(reserved_identity(&ep.labels)),
        ContextId::WorkloadName => {
            key.push_raw(ep.workloads.first().map_or("", |w| w.name.as_str()))
        }
        ContextId::App => key.push_raw(app(&ep.labels)),
    }
}

fn join(v: &[String], key: &mut KeyBuf) {
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            key.push_raw(",");
        }
        key.push_raw(s);
    }
}

/// `reserved:kube-apiserver` if present, else the first `reserved:` label.
fn reserved_identity(labels: &[String]) -> &str {
    if labels.iter().any(|l| l == "reserved:kube-apiserver") {
        return "reserved:kube-apiserver";
    }
    labels
        .iter()
        .find(|l| l.starts_with("reserved:"))
        .map_or("", |s| s.as_str())
}

/// The pod's app: `app.kubernetes.io/name`, else `k8s-app`, else `app` (k8s source labels).
pub fn app(labels: &[String]) -> &str {
    for key in ["k8s:app.kubernetes.io/name=", "k8s:k8s-app=", "k8s:app="] {
        for l in labels {
            if let Some(v) = l.strip_prefix(key)
                && !v.is_empty()
            {
                return v;
            }
        }
    }
    ""
}

/// Hubble's deprecated `pod-short`: the name without one or two trailing `-[a-z0-9]+`
/// segments (`^(.+?)(-[a-z0-9]+){1,2}$`, shortest prefix).
pub fn short_pod_name(name: &str) -> &str {
    let seg_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    for (i, b) in name.bytes().enumerate().skip(1) {
        if b != b'-' {
            continue;
        }
        let rest = &name[i + 1..];
        let mut parts = rest.split('-');
        let (a, b2, c) = (parts.next(), parts.next(), parts.next());
        let ok = match (a, b2, c) {
            (Some(a), None, None) => seg_ok(a),
            (Some(a), Some(b2), None) => seg_ok(a) && seg_ok(b2),
            _ => false,
        };
        if ok {
            return &name[..i];
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_pod_names() {
        assert_eq!(short_pod_name("frontend-7d4b9c8f6-x2x9z"), "frontend");
        assert_eq!(short_pod_name("coredns-abc"), "coredns");
        assert_eq!(short_pod_name("my-app-5f6d-abcde"), "my-app");
        assert_eq!(short_pod_name("plain"), "plain");
        assert_eq!(short_pod_name("UPPER-X"), "UPPER-X");
    }

    #[test]
    fn app_label_preference() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(app(&l(&["k8s:app=a", "k8s:k8s-app=b"])), "b");
        assert_eq!(app(&l(&["k8s:app=a", "k8s:app.kubernetes.io/name=c"])), "c");
        assert_eq!(app(&l(&["k8s:app=", "k8s:app=x"])), "x");
        assert_eq!(app(&l(&["reserved:world"])), "");
    }

    #[test]
    fn bad_context_values_are_named() {
        let mut o = ContextOptions::default();
        let e = o.apply("sourceContext", "pod|bogus").unwrap_err();
        assert!(e.contains("'bogus'"), "{e}");
        let e = o.apply("labelsContext", "source_ip,nope").unwrap_err();
        assert_eq!(e, "invalid labelsContext value: nope");
        assert!(!o.apply("query", "").unwrap());
    }
}
