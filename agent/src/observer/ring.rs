//! Hubble's flow ring: a fixed number of the newest events, overwritten oldest first by one
//! writer that never waits for readers; readers walk it by sequence number and followers await new entries.
//!
//! Every event gets a sequence number (0, 1, 2, …). The ring keeps the last `capacity` of
//! them, capacity = 2^n − 1; the storage has 2^n slots so the slot being written is never one
//! a reader may legitimately ask for. A reader that asks for an overwritten number is told how
//! many it lost and where the oldest entry now is.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use tokio::sync::Notify;

/// Largest capacity accepted (Hubble's limit for `hubble-event-buffer-capacity`).
pub const MAX_CAPACITY: u64 = 65_535;
/// Our default `--max-flows` (Hubble's is 4095).
pub const DEFAULT_CAPACITY: u64 = 65_535;

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("invalid ring capacity {0}: must be one less than a power of two, between 1 and 65535")]
    InvalidCapacity(u64),
}

/// The outcome of reading one sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    /// The entry with that sequence number.
    Entry(T),
    /// The entry was overwritten: `lost` entries are gone and `next` is the oldest one left.
    Lost { lost: u64, next: u64 },
    /// Nothing was written at that number yet.
    Pending,
}

struct Slot<T> {
    seq: u64,
    value: Option<T>,
}

/// A ring of `T` (cheap to clone, e.g. an `Arc`), shared by one writer and many readers.
pub struct Ring<T> {
    slots: Box<[RwLock<Slot<T>>]>,
    mask: u64,
    capacity: u64,
    /// Number of entries written so far, i.e. the next sequence number.
    head: AtomicU64,
    /// Serialises writers, so `push` stays correct if called from several threads.
    writer: Mutex<()>,
    notify: Notify,
    /// Followers inside `wait_for`; the writer skips waking when there are none.
    waiters: AtomicUsize,
}

impl<T: Clone> Ring<T> {
    /// A ring that keeps the last `capacity` entries; `capacity` must be 2^n − 1 (1…65535).
    pub fn new(capacity: u64) -> Result<Self, RingError> {
        if capacity == 0 || capacity > MAX_CAPACITY || !(capacity + 1).is_power_of_two() {
            return Err(RingError::InvalidCapacity(capacity));
        }
        let size = capacity + 1;
        let slots = (0..size)
            .map(|_| {
                RwLock::new(Slot {
                    seq: u64::MAX,
                    value: None,
                })
            })
            .collect();
        Ok(Ring {
            slots,
            mask: size - 1,
            capacity,
            head: AtomicU64::new(0),
            writer: Mutex::new(()),
            notify: Notify::new(),
            waiters: AtomicUsize::new(0),
        })
    }

    /// How many entries the ring keeps.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The sequence number the next entry will get (= entries written so far).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// The sequence number of the oldest entry still readable.
    pub fn oldest(&self) -> u64 {
        self.head().saturating_sub(self.capacity)
    }

    /// Number of entries currently held.
    pub fn len(&self) -> u64 {
        self.head().min(self.capacity)
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.head() == 0
    }

    /// Appends an entry, overwriting the oldest when full, and wakes followers. Waits at most
    /// for a reader cloning the one slot being replaced, never for a reader to catch up.
    pub fn push(&self, value: T) {
        let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.head.load(Ordering::Relaxed);
        let old = {
            let mut slot = self.slots[(seq & self.mask) as usize]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            slot.seq = seq;
            slot.value.replace(value)
        };
        // SeqCst pairs with `wait_for`: either the follower sees the new head, or we see it
        // waiting and wake it.
        self.head.store(seq + 1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
        // The overwritten entry is freed outside the slot lock.
        drop(old);
    }

    /// Reads the entry with sequence number `seq`.
    pub fn read(&self, seq: u64) -> Read<T> {
        let head = self.head();
        if seq >= head {
            return Read::Pending;
        }
        let oldest = head.saturating_sub(self.capacity);
        if seq < oldest {
            return Read::Lost {
                lost: oldest - seq,
                next: oldest,
            };
        }
        {
            let slot = self.slots[(seq & self.mask) as usize]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.seq == seq
                && let Some(v) = &slot.value
            {
                return Read::Entry(v.clone());
            }
        }
        // Overwritten between loading the head and locking the slot.
        let oldest = self.oldest().max(seq + 1);
        Read::Lost {
            lost: oldest - seq,
            next: oldest,
        }
    }

    /// Waits until the entry `seq` has been written (returns at once if it has).
    pub async fn wait_for(&self, seq: u64) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.head.load(Ordering::SeqCst) > seq {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn capacity_must_be_power_of_two_minus_one() {
        for ok in [1, 3, 7, 4095, 65535] {
            assert!(Ring::<u64>::new(ok).is_ok(), "{ok}");
        }
        for bad in [0, 2, 4, 100, 4096, 131_071] {
            assert_eq!(
                Ring::<u64>::new(bad).err(),
                Some(RingError::InvalidCapacity(bad))
            );
        }
    }

    #[test]
    fn reads_in_order_and_reports_pending() {
        let r = Ring::new(7).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.read(0), Read::Pending);
        for i in 0..5u64 {
            r.push(i * 10);
        }
        assert_eq!(r.len(), 5);
        assert_eq!(r.oldest(), 0);
        for i in 0..5u64 {
            assert_eq!(r.read(i), Read::Entry(i * 10));
        }
        assert_eq!(r.read(5), Read::Pending);
    }

    #[test]
    fn overwrites_oldest_and_reports_lost() {
        let r = Ring::new(3).unwrap();
        for i in 0..10u64 {
            r.push(i);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.capacity(), 3);
        assert_eq!(r.oldest(), 7);
        assert_eq!(r.read(2), Read::Lost { lost: 5, next: 7 });
        assert_eq!(r.read(7), Read::Entry(7));
        assert_eq!(r.read(9), Read::Entry(9));
        assert_eq!(r.read(10), Read::Pending);
    }

    #[tokio::test]
    async fn follower_wakes_on_push() {
        let r = Arc::new(Ring::new(15).unwrap());
        let r2 = r.clone();
        let follower = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut seq = 0;
            while got.len() < 3 {
                match r2.read(seq) {
                    Read::Entry(v) => {
                        got.push(v);
                        seq += 1;
                    }
                    Read::Pending => r2.wait_for(seq).await,
                    Read::Lost { next, .. } => seq = next,
                }
            }
            got
        });
        for i in 0..3u64 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            r.push(i);
        }
        assert_eq!(follower.await.unwrap(), vec![0, 1, 2]);
    }

    /// Followers that wait while the writer runs on another thread never miss a wake-up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn followers_keep_up_with_a_writer_thread() {
        const N: u64 = 50_000;
        let r = Arc::new(Ring::<u64>::new(65_535).unwrap());
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move {
                    let mut seq = 0;
                    while seq < N {
                        match r.read(seq) {
                            Read::Entry(v) => {
                                assert_eq!(v, seq);
                                seq += 1;
                            }
                            Read::Pending => r.wait_for(seq).await,
                            Read::Lost { .. } => panic!("ring is large enough"),
                        }
                    }
                })
            })
            .collect();
        let w = r.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..N {
                w.push(i);
                if i % 1000 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        });
        for f in followers {
            tokio::time::timeout(std::time::Duration::from_secs(20), f)
                .await
                .expect("follower done")
                .unwrap();
        }
        writer.join().unwrap();
        assert_eq!(r.waiters.load(Ordering::SeqCst), 0);
    }

    /// A fast writer and several slow readers: every reader sees strictly increasing values,
    /// and values read + values reported lost account for everything written.
    #[test]
    fn concurrent_writer_and_readers() {
        const N: u64 = 200_000;
        let r = Arc::new(Ring::<u64>::new(63).unwrap());
        let readers: Vec<_> = (0..3)
            .map(|k| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let (mut seq, mut seen, mut lost, mut last) = (0u64, 0u64, 0u64, None);
                    while seq < N {
                        match r.read(seq) {
                            Read::Entry(v) => {
                                assert_eq!(v, seq, "entry carries its own sequence number");
                                assert!(last.is_none_or(|l| v > l));
                                last = Some(v);
                                seen += 1;
                                seq += 1;
                                if k == 0 && seq % 64 == 0 {
                                    std::thread::yield_now();
                                }
                            }
                            Read::Lost { lost: l, next } => {
                                assert_eq!(next, seq + l);
                                lost += l;
                                seq = next;
                            }
                            Read::Pending => std::thread::yield_now(),
                        }
                    }
                    (seen, lost)
                })
            })
            .collect();
        for i in 0..N {
            r.push(i);
        }
        for h in readers {
            let (seen, lost) = h.join().unwrap();
            assert_eq!(seen + lost, N);
        }
        assert_eq!(r.head(), N);
    }
}
