//! The CEL subset of `experimental.cel_expression`: any UTF-8 text compiled as a filter and
//! evaluated against four flows of fixtures/golden/input.jsonl (TCP, DNS, HTTP, a drop). No
//! input may panic, and an expression and its negation never both match a flow.
#![no_main]

use std::sync::OnceLock;

use hubble::filter::FlowFilters;
use hubble_api::flow::{Flow, FlowFilter, flow_filter::Experimental};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use libfuzzer_sys::fuzz_target;

fn flows() -> &'static [Flow] {
    static FLOWS: OnceLock<Vec<Flow>> = OnceLock::new();
    FLOWS.get_or_init(|| {
        include_str!("../../fixtures/golden/input.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<GetFlowsResponse>(l).ok())
            .filter_map(|r| match r.response_types {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            })
            .fold(Vec::new(), |mut kept: Vec<Flow>, f| {
                // The first flow of each kind: evaluation converts the flow to JSON, so a
                // few keep the target fast.
                if !kept.iter().any(|k| kind(k) == kind(&f)) {
                    kept.push(f);
                }
                kept
            })
    })
}

fn kind(f: &Flow) -> u8 {
    use hubble_api::flow::layer7::Record;
    match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(Record::Dns(_)) => 1,
        Some(Record::Http(_)) => 2,
        _ if f.verdict == hubble_api::flow::Verdict::Dropped as i32 => 3,
        _ => 0,
    }
}

fn compile(expr: String) -> Option<FlowFilters> {
    let ff = FlowFilter {
        experimental: Some(Experimental {
            cel_expression: vec![expr],
        }),
        ..Default::default()
    };
    FlowFilters::compile(&[ff], &[]).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Some(filter) = compile(src.to_string()) else {
        return;
    };
    let matched: Vec<&Flow> = flows().iter().filter(|f| filter.matches(f)).collect();
    if matched.is_empty() {
        return;
    }
    // The newline ends a trailing `//` comment.
    if let Some(negated) = compile(format!("!({src}\n)")) {
        for flow in matched {
            assert!(
                !negated.matches(flow),
                "{src:?} and its negation both match"
            );
        }
    }
});
