//! Agent events (GetAgentEvents): what the agent did, as Cilium's agent notifications
//! (`AGENT_STARTED`, `ENDPOINT_CREATED`, `IPCACHE_UPSERTED`, `POLICY_UPDATED`, ...), kept in
//! a ring of their own so a flood of flows never pushes them out.
//!
//! The store is a [`Ring`] of the last [`AGENT_EVENTS_CAPACITY`] responses: one writer that
//! never waits, readers walking it by sequence number, followers woken as events arrive.
//! Request semantics follow Cilium's local observer (GetAgentEvents shares GetFlows' reader):
//! `first` starts at the oldest event, `follow` without `number` or `since` at the next new
//! one, otherwise the reader starts `number` events back (all stored events when 0) or at the
//! first event not older than `since`; `number` caps what a non-follow request gets; an event
//! newer than `until` ends the stream, followed or not. `first` with `follow` is refused.
//!
//! Debug events (GetDebugEvents) are not recorded: our datapath emits no debug messages.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use hubble_api::flow::agent_event::Notification;
use hubble_api::flow::{AgentEvent, AgentEventType, TimeNotification};
use hubble_api::observer::{GetAgentEventsRequest, GetAgentEventsResponse};
use pbjson_types::Timestamp;

use super::entry::ts_key;
use super::local::timestamp;
use super::ring::{Read, Ring};
use crate::model::events::event;

/// Agent events kept (Cilium keeps them in its flow ring; ours have their own).
pub const AGENT_EVENTS_CAPACITY: u64 = 4095;

/// Smallest and largest seconds of a valid protobuf Timestamp (0001-01-01 … 9999-12-31).
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// A stored event, shared by every reader.
pub type StoredEvent = Arc<GetAgentEventsResponse>;

/// Why a GetAgentEvents request was refused (InvalidArgument on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRequestError {
    #[error("first cannot be specified with follow")]
    FirstWithFollow,
    #[error("invalid {which} timestamp (seconds {seconds}, nanos {nanos}): out of range")]
    Timestamp {
        which: &'static str,
        seconds: i64,
        nanos: i32,
    },
}

/// Called with every event the store records (the exporter's queue): must not block.
pub type EventSink = Box<dyn Fn(&GetAgentEventsResponse) + Send + Sync>;

/// The agent's event store.
pub struct AgentEvents {
    ring: Ring<StoredEvent>,
    node_name: String,
    sink: OnceLock<EventSink>,
}

/// A validated GetAgentEvents request, read with [`AgentEvents::next`].
#[derive(Debug)]
pub struct EventQuery {
    number: u64,
    follow: bool,
    since: Option<(i64, i32)>,
    until: Option<(i64, i32)>,
    /// Next sequence number to read.
    seq: u64,
    /// Non-follow requests end at the head seen when they started.
    end: u64,
    sent: u64,
    done: bool,
}

/// The stored event's time, as a comparable key.
fn time_key(r: &GetAgentEventsResponse) -> (i64, i32) {
    ts_key(r.time.as_ref())
}

fn valid(
    which: &'static str,
    t: &Option<Timestamp>,
) -> Result<Option<(i64, i32)>, EventRequestError> {
    match t {
        None => Ok(None),
        Some(t)
            if (MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds)
                && (0..1_000_000_000).contains(&t.nanos) =>
        {
            Ok(Some((t.seconds, t.nanos)))
        }
        Some(t) => Err(EventRequestError::Timestamp {
            which,
            seconds: t.seconds,
            nanos: t.nanos,
        }),
    }
}

impl AgentEvents {
    pub fn new(node_name: impl Into<String>) -> Self {
        AgentEvents {
            ring: Ring::new(AGENT_EVENTS_CAPACITY).expect("valid capacity"),
            node_name: node_name.into(),
            sink: OnceLock::new(),
        }
    }

    /// Events stored now.
    pub fn len(&self) -> u64 {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Records an event that happened now.
    pub fn push(&self, event: AgentEvent) {
        self.push_at(event, SystemTime::now());
    }

    /// Records an event with its time (events should be pushed in time order: `since`
    /// looks for its start walking back from the newest).
    pub fn push_at(&self, event: AgentEvent, time: SystemTime) {
        let ev = Arc::new(GetAgentEventsResponse {
            agent_event: Some(event),
            node_name: self.node_name.clone(),
            time: Some(timestamp(time)),
        });
        if let Some(sink) = self.sink.get() {
            sink(&ev);
        }
        self.ring.push(ev);
    }

    /// Sends every event recorded from now on to `sink` too (the agent's exporter); a store
    /// has at most one sink: a second one is refused (returned).
    pub fn set_sink(&self, sink: EventSink) -> Result<(), EventSink> {
        self.sink.set(sink)
    }

    /// Validates a request and finds where it starts.
    pub fn query(&self, req: &GetAgentEventsRequest) -> Result<EventQuery, EventRequestError> {
        if req.first && req.follow {
            return Err(EventRequestError::FirstWithFollow);
        }
        let since = valid("since", &req.since)?;
        let until = valid("until", &req.until)?;
        let head = self.ring.head();
        let oldest = self.ring.oldest();
        let seq = if req.first && since.is_none() {
            oldest
        } else if req.follow && req.number == 0 && since.is_none() {
            head
        } else {
            let mut seq = head;
            let mut counted = 0u64;
            while seq > oldest {
                let Read::Entry(e) = self.ring.read(seq - 1) else {
                    break;
                };
                if let Some(since) = since {
                    if time_key(&e) < since {
                        break;
                    }
                } else if req.number > 0 && counted == req.number {
                    break;
                }
                seq -= 1;
                counted += 1;
            }
            seq
        };
        Ok(EventQuery {
            number: req.number,
            follow: req.follow,
            since,
            until,
            seq,
            end: head,
            sent: 0,
            done: false,
        })
    }

    /// The next event of a query, `None` once it is done; followers wait here for new
    /// events. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&self, q: &mut EventQuery) -> Option<StoredEvent> {
        loop {
            match self.step(q) {
                Step::Event(e) => return Some(e),
                Step::Done => return None,
                Step::Wait => self.ring.wait_for(q.seq).await,
            }
        }
    }

    /// The next event if one is stored now (followers included), else `None`: for the
    /// last events a follower gets when the server shuts down.
    pub fn next_now(&self, q: &mut EventQuery) -> Option<StoredEvent> {
        match self.step(q) {
            Step::Event(e) => Some(e),
            Step::Done | Step::Wait => None,
        }
    }

    fn step(&self, q: &mut EventQuery) -> Step {
        loop {
            if q.done || (!q.follow && (q.seq >= q.end || (q.number > 0 && q.sent >= q.number))) {
                return Step::Done;
            }
            match self.ring.read(q.seq) {
                Read::Entry(e) => {
                    q.seq += 1;
                    let t = time_key(&e);
                    if q.until.is_some_and(|u| t > u) {
                        q.done = true;
                        return Step::Done;
                    }
                    if q.since.is_some_and(|s| t < s) {
                        continue;
                    }
                    q.sent += 1;
                    return Step::Event(e);
                }
                // Overwritten before this reader got to them: agent event streams have no
                // lost-event message, the reader skips to the oldest event left.
                Read::Lost { next, .. } => q.seq = next,
                Read::Pending if q.follow => return Step::Wait,
                Read::Pending => return Step::Done,
            }
        }
    }
}

enum Step {
    Event(StoredEvent),
    Wait,
    Done,
}

/// `AGENT_STARTED`, with the time the agent started (Cilium's StartMessage).
pub fn agent_started(t: SystemTime) -> AgentEvent {
    event(
        AgentEventType::AgentStarted,
        Notification::AgentStart(TimeNotification {
            time: Some(timestamp(t)),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(secs: u64) -> AgentEvent {
        agent_started(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }

    fn store(n: u64) -> AgentEvents {
        let s = AgentEvents::new("node");
        for i in 0..n {
            s.push_at(
                started(i),
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i),
            );
        }
        s
    }

    fn secs(events: &AgentEvents, req: GetAgentEventsRequest) -> Vec<i64> {
        let mut q = events.query(&req).unwrap();
        std::iter::from_fn(|| events.next_now(&mut q))
            .map(|e| e.time.as_ref().unwrap().seconds - 1000)
            .collect()
    }

    #[test]
    fn request_semantics() {
        let s = store(10);
        let all = GetAgentEventsRequest::default();
        assert_eq!(secs(&s, all), (0..10).collect::<Vec<_>>());
        let last3 = GetAgentEventsRequest {
            number: 3,
            ..Default::default()
        };
        assert_eq!(secs(&s, last3), vec![7, 8, 9]);
        let first3 = GetAgentEventsRequest {
            number: 3,
            first: true,
            ..Default::default()
        };
        assert_eq!(secs(&s, first3), vec![0, 1, 2]);
        let window = GetAgentEventsRequest {
            since: Some(Timestamp {
                seconds: 1004,
                nanos: 0,
            }),
            until: Some(Timestamp {
                seconds: 1006,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(secs(&s, window), vec![4, 5, 6]);
        let inverted = GetAgentEventsRequest {
            since: Some(Timestamp {
                seconds: 1006,
                nanos: 0,
            }),
            until: Some(Timestamp {
                seconds: 1004,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(secs(&s, inverted), Vec::<i64>::new());
        let follow_new = GetAgentEventsRequest {
            follow: true,
            ..Default::default()
        };
        assert_eq!(secs(&s, follow_new), Vec::<i64>::new());
    }

    #[test]
    fn bad_requests_are_refused() {
        let s = store(1);
        let both = GetAgentEventsRequest {
            first: true,
            follow: true,
            ..Default::default()
        };
        assert_eq!(
            s.query(&both).unwrap_err(),
            EventRequestError::FirstWithFollow
        );
        let bad = GetAgentEventsRequest {
            since: Some(Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        };
        assert!(matches!(
            s.query(&bad).unwrap_err(),
            EventRequestError::Timestamp { which: "since", .. }
        ));
    }

    #[test]
    fn oldest_events_are_overwritten() {
        let s = store(AGENT_EVENTS_CAPACITY + 10);
        assert_eq!(s.len(), AGENT_EVENTS_CAPACITY);
        let first = GetAgentEventsRequest {
            number: 1,
            first: true,
            ..Default::default()
        };
        assert_eq!(secs(&s, first), vec![10]);
    }
}
