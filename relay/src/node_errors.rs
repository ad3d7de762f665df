//! Node errors of one GetFlows stream coalesced as Hubble Relay does: a NODE_ERROR event
//! waits for up to the aggregation window, taking in the nodes of later errors with the
//! same message, and goes out when the window is over, when an error with another message
//! comes, or when the stream ends. Other events are never held back.
//!
//! One difference from Hubble Relay: a node named twice in a window is listed once.

use std::time::{Duration, Instant};

use pbjson_types::Timestamp;

/// Default `--error-aggregation-window` (Hubble Relay's `ErrorAggregationWindow`).
pub const DEFAULT_ERROR_AGGREGATION_WINDOW: Duration = Duration::from_secs(10);

/// One NODE_ERROR event to send.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    pub node_names: Vec<String>,
    pub message: String,
    /// When the first of its errors happened.
    pub time: Timestamp,
}

/// The error being aggregated (at most one at a time).
pub struct NodeErrors {
    window: Duration,
    pending: Option<(NodeError, Instant)>,
}

impl NodeErrors {
    pub fn new(window: Duration) -> Self {
        NodeErrors {
            window,
            pending: None,
        }
    }

    /// Takes an error of `node_names`; returns what is to be sent now: the pending error
    /// when this one has another message, or this one itself with a zero window.
    pub fn push(
        &mut self,
        node_names: Vec<String>,
        message: String,
        time: Timestamp,
        now: Instant,
    ) -> Option<NodeError> {
        if let Some((p, _)) = &mut self.pending
            && p.message == message
        {
            for n in node_names {
                if !p.node_names.contains(&n) {
                    p.node_names.push(n);
                }
            }
            return None;
        }
        let e = NodeError {
            node_names,
            message,
            time,
        };
        if self.window.is_zero() {
            return Some(e);
        }
        self.pending
            .replace((e, now + self.window))
            .map(|(previous, _)| previous)
    }

    /// When the pending error is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(_, due)| *due)
    }

    /// The pending error once its window is over.
    pub fn due(&mut self, now: Instant) -> Option<NodeError> {
        match self.deadline() {
            Some(due) if due <= now => self.take(),
            _ => None,
        }
    }

    /// The pending error, due or not (the stream ends).
    pub fn take(&mut self) -> Option<NodeError> {
        self.pending.take().map(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp {
            seconds: s,
            nanos: 0,
        }
    }

    fn names(e: &NodeError) -> Vec<&str> {
        e.node_names.iter().map(String::as_str).collect()
    }

    #[test]
    fn same_message_within_the_window_goes_out_once() {
        let t0 = Instant::now();
        let mut a = NodeErrors::new(Duration::from_secs(10));
        assert_eq!(a.push(vec!["b".into()], "EOF".into(), ts(1), t0), None);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(a.push(vec!["c".into()], "EOF".into(), ts(4), later), None);
        assert_eq!(a.push(vec!["b".into()], "EOF".into(), ts(5), later), None);
        // Not before the window of the first one is over; not restarted by the others.
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(a.due(t0 + Duration::from_secs(9)), None);
        let e = a.due(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(names(&e), ["b", "c"]);
        assert_eq!((e.message.as_str(), e.time), ("EOF", ts(1)));
        assert_eq!(a.deadline(), None);
        assert_eq!(a.take(), None);
    }

    #[test]
    fn another_message_sends_the_pending_one() {
        let t0 = Instant::now();
        let mut a = NodeErrors::new(Duration::from_secs(10));
        assert_eq!(a.push(vec!["b".into()], "EOF".into(), ts(1), t0), None);
        let e = a.push(vec!["c".into()], "reset".into(), ts(2), t0).unwrap();
        assert_eq!((names(&e), e.message.as_str()), (vec!["b"], "EOF"));
        // The new one waits its own window; the end of the stream sends it.
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(10)));
        let e = a.take().unwrap();
        assert_eq!((names(&e), e.message.as_str()), (vec!["c"], "reset"));
    }

    #[test]
    fn a_zero_window_sends_each_error() {
        let mut a = NodeErrors::new(Duration::ZERO);
        let now = Instant::now();
        let e = a.push(vec!["b".into()], "EOF".into(), ts(1), now).unwrap();
        assert_eq!(names(&e), ["b"]);
        assert!(a.push(vec!["b".into()], "EOF".into(), ts(2), now).is_some());
        assert_eq!(a.deadline(), None);
    }
}
