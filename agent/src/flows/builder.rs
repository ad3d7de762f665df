//! The flow builder: one datapath record in, the Hubble responses it makes out.

use std::time::SystemTime;

use hubble_api::flow::{LostEvent, LostEventSource};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use pbjson_types::Int32Value;

use crate::datapath::RawRecord;
use crate::enrich::{EnrichError, Enricher, Getters, timestamp};

/// Counters of one run, printed to stderr at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub flows: u64,
    pub decode_errors: u64,
    pub non_ip: u64,
    pub lost: u64,
    /// L7 captures the datapath's L7 ring buffer lost.
    pub l7_lost: u64,
    /// L7 flows among `flows`, and L7 captures that gave no flow (malformed DNS, …).
    pub l7_flows: u64,
    pub l7_errors: u64,
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flows={} decode_errors={} non_ip={} lost_samples={} l7_flows={} l7_errors={} l7_lost={}",
            self.flows,
            self.decode_errors,
            self.non_ip,
            self.lost,
            self.l7_flows,
            self.l7_errors,
            self.l7_lost
        )
    }
}

/// Turns datapath records into Hubble responses: a monitor sample into one flow, an L7
/// capture into any number (pipelined HTTP), lost samples or captures into a LostEvent. One response (and
/// its flow's buffers) is reused from record to record.
pub struct FlowBuilder<G> {
    pub enricher: Enricher<G>,
    pub counters: Counters,
    /// DNS and HTTP parsing of the datapath's L7 captures.
    pub l7: crate::l7::L7Engine,
    resp: GetFlowsResponse,
    l7_flows: Vec<hubble_api::flow::Flow>,
    l7_resps: Vec<GetFlowsResponse>,
    /// What the last record produced: 0 none, 1 `resp`, 2 the first `l7_count` of `l7_resps`.
    last: u8,
    l7_count: usize,
}

impl<G: Getters> FlowBuilder<G> {
    pub fn new(enricher: Enricher<G>) -> Self {
        let resp = GetFlowsResponse {
            node_name: enricher.node_name().to_string(),
            ..GetFlowsResponse::default()
        };
        Self {
            enricher,
            counters: Counters::default(),
            l7: crate::l7::L7Engine::new(),
            resp,
            l7_flows: Vec::new(),
            l7_resps: Vec::new(),
            last: 0,
            l7_count: 0,
        }
    }

    /// The responses (flows or a lost event) the last record produced, in order: one for a
    /// monitor event, any number for an L7 capture (pipelined HTTP), none when skipped.
    pub fn responses(&self) -> &[GetFlowsResponse] {
        match self.last {
            1 => std::slice::from_ref(&self.resp),
            2 => &self.l7_resps[..self.l7_count],
            _ => &[],
        }
    }

    /// The enricher, for callers that refresh its lookups (the model's new snapshot).
    pub fn enricher_mut(&mut self) -> &mut Enricher<G> {
        &mut self.enricher
    }

    fn handle_l7(&mut self, data: &[u8], time: SystemTime) {
        let n = match self
            .l7
            .handle(data, time, &mut self.enricher, &mut self.l7_flows)
        {
            Ok(n) => n,
            Err(_) => {
                self.counters.l7_errors += 1;
                return;
            }
        };
        while self.l7_resps.len() < n {
            self.l7_resps.push(GetFlowsResponse {
                node_name: self.enricher.node_name().to_string(),
                ..GetFlowsResponse::default()
            });
        }
        for (f, r) in self
            .l7_flows
            .iter_mut()
            .zip(self.l7_resps.iter_mut())
            .take(n)
        {
            r.time = f.time;
            // Swap, not take: the flow the response held goes back to be refilled, so L7
            // flows reuse their buffers as trace flows do.
            match &mut r.response_types {
                Some(ResponseTypes::Flow(held)) => std::mem::swap(held, f),
                _ => r.response_types = Some(ResponseTypes::Flow(std::mem::take(f))),
            }
        }
        self.counters.flows += n as u64;
        self.counters.l7_flows += n as u64;
        self.l7_count = n;
        self.last = 2;
    }

    /// Makes the response a LostEvent of `count` events from `source`.
    fn lost(
        &mut self,
        source: LostEventSource,
        cpu: Option<Int32Value>,
        time: SystemTime,
        count: u64,
    ) {
        let ts = timestamp(time);
        self.resp.time = Some(ts);
        self.resp.response_types = Some(ResponseTypes::LostEvents(LostEvent {
            source: source as i32,
            num_events_lost: count,
            cpu,
            first: Some(ts),
            last: Some(ts),
        }));
    }

    /// The response of the last record handled (stale when that record gave no flow).
    pub fn response(&self) -> &GetFlowsResponse {
        &self.resp
    }

    /// Handles one record; returns the responses it produced (see [`Self::responses`]) and
    /// the counters after it.
    pub fn handle(&mut self, r: &RawRecord) -> (&[GetFlowsResponse], &Counters) {
        self.build(r);
        (self.responses(), &self.counters)
    }

    fn build(&mut self, r: &RawRecord) {
        self.last = 0;
        match r {
            RawRecord::L7 { time, data } => {
                self.handle_l7(data, *time);
                return;
            }
            RawRecord::Sample { time, data, .. } => {
                let mut flow = match self.resp.response_types.take() {
                    Some(ResponseTypes::Flow(f)) => f,
                    _ => Default::default(),
                };
                let res = self.enricher.flow_into_from_sample(data, *time, &mut flow);
                self.resp.time = flow.time;
                self.resp.response_types = Some(ResponseTypes::Flow(flow));
                match res {
                    Ok(()) => self.counters.flows += 1,
                    Err(EnrichError::NotIp) => {
                        self.counters.non_ip += 1;
                        return;
                    }
                    Err(EnrichError::Decode(_)) => {
                        self.counters.decode_errors += 1;
                        return;
                    }
                }
            }
            RawRecord::Lost { cpu, time, count } => {
                self.counters.lost += count;
                let cpu = Some(Int32Value { value: *cpu as i32 });
                self.lost(LostEventSource::PerfEventRingBuffer, cpu, *time, *count);
            }
            // Cilium's L7 events reach Hubble through the observer's events queue, whose
            // losses it reports as OBSERVER_EVENTS_QUEUE, without a CPU.
            RawRecord::L7Lost { time, count } => {
                self.counters.l7_lost += count;
                self.lost(LostEventSource::ObserverEventsQueue, None, *time, *count);
            }
        }
        self.last = 1;
    }
}
