//! The sort window: responses of many nodes, each stream in time order, merged into one
//! time-ordered stream with a bounded buffer and a bounded wait.
//!
//! An entry leaves the buffer, oldest flow time first, as soon as one of these holds:
//! every live source has an entry buffered (nothing older can still come: exact k-way merge),
//! the buffer holds more than `max_len` entries (`--sort-buffer-len-max`), the entry is not
//! newer than one already sent (a late arrival), or some buffered entry has waited `window`
//! (`--sort-buffer-drain-timeout`). An idle or hanging source thus delays others by at most
//! the window, never blocks them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// Index of a source (one node's stream) in a [`SortBuffer`].
pub type Source = usize;

struct Entry<T> {
    key: i128,
    seq: u64,
    source: Source,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key && self.seq == o.seq
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed: BinaryHeap is a max-heap, the oldest key (then first arrival) must be on top.
    fn cmp(&self, o: &Self) -> Ordering {
        o.key.cmp(&self.key).then_with(|| o.seq.cmp(&self.seq))
    }
}

/// A k-way merge by time with a length bound and a wait bound. Not thread-safe: one per
/// GetFlows request, owned by its merge task.
pub struct SortBuffer<T> {
    heap: BinaryHeap<Entry<T>>,
    /// Arrival time and key of buffered entries, in arrival order (entries already sent are
    /// dropped lazily).
    arrivals: VecDeque<(Instant, i128)>,
    /// Per source: entries buffered, and whether more can come.
    pending: Vec<usize>,
    live: Vec<bool>,
    /// Live sources with nothing buffered: while non-zero, the merge cannot be sure.
    waiting: usize,
    /// Key of the newest entry sent.
    released: i128,
    max_len: usize,
    window: Duration,
    seq: u64,
}

impl<T> SortBuffer<T> {
    /// `window` of `Duration::MAX`: no wait bound.
    pub fn new(max_len: usize, window: Duration) -> Self {
        SortBuffer {
            heap: BinaryHeap::new(),
            arrivals: VecDeque::new(),
            pending: Vec::new(),
            live: Vec::new(),
            waiting: 0,
            released: i128::MIN,
            max_len: max_len.max(1),
            window,
            seq: 0,
        }
    }

    /// A new live source.
    pub fn add_source(&mut self) -> Source {
        self.pending.push(0);
        self.live.push(true);
        self.waiting += 1;
        self.pending.len() - 1
    }

    /// No more entries will come from `s` (its stream ended or failed).
    pub fn end_source(&mut self, s: Source) {
        if self.live.get(s).copied().unwrap_or(false) {
            self.live[s] = false;
            if self.pending[s] == 0 {
                self.waiting -= 1;
            }
        }
    }

    /// Sources still live.
    pub fn live_sources(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Buffers one entry of source `s` with its time key (see [`time_key`]).
    pub fn push(&mut self, s: Source, key: i128, item: T, now: Instant) {
        let Some(p) = self.pending.get_mut(s) else {
            return;
        };
        if *p == 0 && self.live[s] {
            self.waiting -= 1;
        }
        *p += 1;
        self.seq += 1;
        self.heap.push(Entry {
            key,
            seq: self.seq,
            source: s,
            item,
        });
        if !self.window.is_zero() && self.window != Duration::MAX {
            self.arrivals.push_back((now, key));
        }
    }

    /// The next entry that may be sent now, if any.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let top = self.heap.peek()?;
        let ready = self.waiting == 0
            || self.heap.len() > self.max_len
            || top.key <= self.released
            || self.window.is_zero()
            || self.overdue(now);
        if ready { self.take() } else { None }
    }

    /// The next entry regardless of the window (all sources ended, or the request ends).
    pub fn pop_any(&mut self) -> Option<T> {
        self.take()
    }

    /// When the oldest-waiting entry is due (for the merge task's timer).
    pub fn deadline(&mut self) -> Option<Instant> {
        self.drop_released_arrivals();
        self.arrivals
            .front()
            .and_then(|(t, _)| t.checked_add(self.window))
    }

    fn overdue(&mut self, now: Instant) -> bool {
        self.drop_released_arrivals();
        match self.arrivals.front() {
            Some((t, _)) => now.saturating_duration_since(*t) >= self.window,
            None => false,
        }
    }

    fn drop_released_arrivals(&mut self) {
        while let Some((_, k)) = self.arrivals.front() {
            if *k <= self.released {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        if self.heap.is_empty() {
            self.arrivals.clear();
        }
    }

    fn take(&mut self) -> Option<T> {
        let e = self.heap.pop()?;
        self.released = self.released.max(e.key);
        let p = &mut self.pending[e.source];
        *p -= 1;
        if *p == 0 && self.live[e.source] {
            self.waiting += 1;
        }
        Some(e.item)
    }
}

/// Nanoseconds since the epoch of a protobuf timestamp (`i128::MIN` for none: sent at once).
pub fn time_key(t: Option<&pbjson_types::Timestamp>) -> i128 {
    match t {
        Some(t) => t.seconds as i128 * 1_000_000_000 + t.nanos as i128,
        None => i128::MIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut SortBuffer<i128>, now: Instant) -> Vec<i128> {
        std::iter::from_fn(|| b.pop(now)).collect()
    }

    #[test]
    fn merges_sorted_sources_exactly_once_every_source_has_an_entry() {
        let now = Instant::now();
        let mut b = SortBuffer::new(100, Duration::from_secs(1));
        let s: Vec<_> = (0..3).map(|_| b.add_source()).collect();
        b.push(s[0], 10, 10, now);
        b.push(s[0], 40, 40, now);
        b.push(s[1], 20, 20, now);
        // Source 2 has nothing yet: nothing may leave.
        assert_eq!(drain(&mut b, now), Vec::<i128>::new());
        b.push(s[2], 5, 5, now);
        // 5 is safe; then source 2 is empty again and might still send something older.
        assert_eq!(drain(&mut b, now), vec![5]);
        b.push(s[2], 30, 30, now);
        assert_eq!(drain(&mut b, now), vec![10, 20]);
        b.end_source(s[1]);
        assert_eq!(drain(&mut b, now), vec![30]);
        b.end_source(s[2]);
        assert_eq!(drain(&mut b, now), vec![40]);
        assert!(b.is_empty());
    }

    #[test]
    fn an_idle_source_delays_by_the_window_only() {
        let t0 = Instant::now();
        let w = Duration::from_millis(100);
        let mut b = SortBuffer::new(100, w);
        let a = b.add_source();
        let _idle = b.add_source();
        b.push(a, 2, 2, t0);
        b.push(a, 1, 1, t0 + Duration::from_millis(50));
        assert_eq!(
            drain(&mut b, t0 + Duration::from_millis(99)),
            Vec::<i128>::new()
        );
        assert_eq!(b.deadline(), Some(t0 + w));
        // The first arrival is due: everything up to it leaves, in time order.
        assert_eq!(drain(&mut b, t0 + w), vec![1, 2]);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn the_length_bound_releases_the_oldest() {
        let now = Instant::now();
        let mut b = SortBuffer::new(3, Duration::from_secs(10));
        let a = b.add_source();
        let _idle = b.add_source();
        for k in [5, 3, 4, 1] {
            b.push(a, k, k, now);
        }
        assert_eq!(drain(&mut b, now), vec![1]);
        // A late entry older than one already sent goes out at once.
        b.push(a, 0, 0, now);
        assert_eq!(drain(&mut b, now), vec![0]);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn equal_times_keep_arrival_order_and_pop_any_drains() {
        let now = Instant::now();
        let mut b = SortBuffer::new(100, Duration::from_secs(10));
        let a = b.add_source();
        let c = b.add_source();
        b.push(a, 7, 1, now);
        b.push(c, 7, 2, now);
        b.push(a, 8, 3, now);
        assert_eq!(drain(&mut b, now), vec![1, 2]);
        assert_eq!(b.pop_any(), Some(3));
        assert_eq!(b.pop_any(), None);
    }

    #[test]
    fn zero_window_is_pass_through() {
        let now = Instant::now();
        let mut b = SortBuffer::new(100, Duration::ZERO);
        let a = b.add_source();
        let _idle = b.add_source();
        b.push(a, 9, 9, now);
        assert_eq!(b.pop(now), Some(9));
    }
}
