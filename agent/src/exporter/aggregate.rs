//! Flow aggregation of a flow log (Cilium's `aggregationOptions`, and the static exporter's
//! `--hubble-export-fieldaggregate` / `--hubble-export-aggregation-interval`): within each
//! window, flows that agree on the aggregation fields make one exported line, the first such
//! flow of the window with `flow.aggregate` counting them by traffic direction.

use std::collections::HashMap;
use std::time::Duration;

use hubble::field_mask::FlowMask;
use hubble_api::flow::{Aggregate, Flow, TrafficDirection};
use hubble_api::observer::get_flows_response::ResponseTypes;
use hubble_api::observer::{ExportEvent, GetFlowsResponse, export_event};
use prost::Message;

/// How a log aggregates: the flow fields that make a key, and the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregation {
    pub fields: Vec<String>,
    pub window: Duration,
}

/// One key's first flow and its counts.
struct Entry {
    first: GetFlowsResponse,
    counts: Aggregate,
}

/// The flows of the current window, by key, in the order their keys were first seen.
pub struct Aggregator {
    key_mask: FlowMask,
    /// The log's field mask, applied to each exported flow before `aggregate` is set (so the
    /// counts survive any mask).
    out_mask: FlowMask,
    index: HashMap<Vec<u8>, usize>,
    entries: Vec<Entry>,
    key_buf: Vec<u8>,
}

impl Aggregator {
    pub fn new(fields: &[String], out_mask: &[String]) -> Self {
        Aggregator {
            key_mask: FlowMask::new(fields),
            out_mask: FlowMask::new(out_mask),
            index: HashMap::new(),
            entries: Vec::new(),
            key_buf: Vec::with_capacity(256),
        }
    }

    /// Counts `resp`'s flow under its key; false when `resp` holds no flow (the caller
    /// exports it as it is).
    pub fn add(&mut self, resp: &GetFlowsResponse) -> bool {
        let Some(ResponseTypes::Flow(flow)) = &resp.response_types else {
            return false;
        };
        self.key_buf.clear();
        if let Some(ResponseTypes::Flow(k)) = self.key_mask.apply(resp).response_types {
            // Encoding into a Vec cannot fail.
            let _ = k.encode(&mut self.key_buf);
        }
        let i = match self.index.get(&self.key_buf) {
            Some(&i) => i,
            None => {
                self.index.insert(self.key_buf.clone(), self.entries.len());
                self.entries.push(Entry {
                    first: resp.clone(),
                    counts: Aggregate::default(),
                });
                self.entries.len() - 1
            }
        };
        count(&mut self.entries[i].counts, flow);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The window's lines, one per key in first-seen order, and an empty window after.
    pub fn drain(&mut self) -> Vec<ExportEvent> {
        self.index.clear();
        self.entries
            .drain(..)
            .filter_map(|e| {
                let resp = if self.out_mask.is_empty() {
                    e.first
                } else {
                    self.out_mask.apply(&e.first)
                };
                let Some(ResponseTypes::Flow(mut flow)) = resp.response_types else {
                    return None;
                };
                flow.aggregate = Some(e.counts);
                let time = resp.time.or(flow.time);
                Some(ExportEvent {
                    response_types: Some(export_event::ResponseTypes::Flow(flow)),
                    node_name: resp.node_name,
                    time,
                })
            })
            .collect()
    }
}

fn count(c: &mut Aggregate, f: &Flow) {
    match TrafficDirection::try_from(f.traffic_direction) {
        Ok(TrafficDirection::Ingress) => c.ingress_flow_count += 1,
        Ok(TrafficDirection::Egress) => c.egress_flow_count += 1,
        _ => c.unknown_direction_flow_count += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubble_api::flow::Endpoint;
    use hubble_api::pbjson_types::Timestamp;

    fn flow(src: &str, dst: &str, dir: TrafficDirection, sec: i64) -> GetFlowsResponse {
        GetFlowsResponse {
            node_name: "kind-worker".into(),
            time: Some(Timestamp {
                seconds: sec,
                nanos: 0,
            }),
            response_types: Some(ResponseTypes::Flow(Flow {
                time: Some(Timestamp {
                    seconds: sec,
                    nanos: 0,
                }),
                verdict: 1,
                traffic_direction: dir as i32,
                source: Some(Endpoint {
                    pod_name: src.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                destination: Some(Endpoint {
                    pod_name: dst.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                node_name: "kind-worker".into(),
                ..Default::default()
            })),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flows_agreeing_on_the_fields_count_once_per_window_by_direction() {
        let mut a = Aggregator::new(
            &strings(&["source", "destination"]),
            &strings(&["source.pod_name", "destination.pod_name", "verdict"]),
        );
        use TrafficDirection::*;
        for (s, d, dir, t) in [
            ("web", "db", Egress, 10),
            ("web", "db", Egress, 11),
            ("web", "db", Ingress, 12),
            ("api", "db", Unknown, 13),
            ("web", "db", Unknown, 14),
        ] {
            assert!(a.add(&flow(s, d, dir, t)));
        }
        let out = a.drain();
        assert!(a.is_empty());
        assert_eq!(out.len(), 2);
        let Some(export_event::ResponseTypes::Flow(f)) = &out[0].response_types else {
            panic!("a flow")
        };
        assert_eq!(f.source.as_ref().unwrap().pod_name, "web");
        assert_eq!(f.source.as_ref().unwrap().namespace, "", "masked");
        assert_eq!(f.time, None, "masked");
        assert_eq!(out[0].time.unwrap().seconds, 10, "the first flow's time");
        assert_eq!(
            f.aggregate,
            Some(Aggregate {
                ingress_flow_count: 1,
                egress_flow_count: 2,
                unknown_direction_flow_count: 1,
            })
        );
        let Some(export_event::ResponseTypes::Flow(f)) = &out[1].response_types else {
            panic!("a flow")
        };
        assert_eq!(f.source.as_ref().unwrap().pod_name, "api");
        assert_eq!(f.aggregate.unwrap().unknown_direction_flow_count, 1);
        // A new window starts empty.
        a.add(&flow("web", "db", Egress, 20));
        assert_eq!(a.drain().len(), 1);
    }

    #[test]
    fn without_a_mask_the_whole_first_flow_is_exported_and_lost_events_pass() {
        let mut a = Aggregator::new(&strings(&["verdict"]), &[]);
        a.add(&flow("web", "db", TrafficDirection::Egress, 10));
        a.add(&flow("api", "db", TrafficDirection::Egress, 11));
        let lost = GetFlowsResponse::default();
        assert!(!a.add(&lost));
        let out = a.drain();
        assert_eq!(out.len(), 1);
        let Some(export_event::ResponseTypes::Flow(f)) = &out[0].response_types else {
            panic!("a flow")
        };
        assert_eq!(f.source.as_ref().unwrap().namespace, "default");
        assert_eq!(f.aggregate.unwrap().egress_flow_count, 2);
    }
}
