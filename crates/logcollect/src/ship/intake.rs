//! The intake: where caller threads hand encoded records to the shipper.
//!
//! One mutex guards a queue of records and the memory budget of every record
//! this process holds in memory (queued here, or held by the driver until it
//! is confirmed, spooled or given up). A record gets its sequence number under
//! the same lock, so the queue is always in sequence order and the ledger can
//! tell which records were accepted before a flush.
//!
//! Callers do not wake the shipper for every record: the driver comes back on
//! its own every `wake_interval` while records flow (and for a short linger
//! after), and parks only when it has found nothing for a while; then the
//! first record wakes it, and so does a queue that reaches a batch's worth.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::stats::LedgerSnapshot;
use crate::encode::Encoded;

/// What a record costs in memory beyond its bytes: the `Encoded` and its
/// place in the driver's maps. An estimate; it only needs to be of the
/// right size so that a flood of tiny records cannot escape the byte cap.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = 96;

/// The bytes a record is charged against the memory cap.
pub(crate) fn cost(rec: &Encoded) -> usize {
    rec.body.len() + rec.routing_key.len() + RECORD_OVERHEAD_BYTES
}

/// Why a record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `queue_capacity` records are already held in memory.
    QueueFull,
    /// `queue_max_bytes` bytes are already held in memory.
    MemoryFull,
    /// The shipper was shut down.
    Closed,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Encoded>,
    /// Sequence number of the next record accepted (= records accepted).
    next_seq: u64,
    /// Records and bytes held in memory: queued here or held by the driver.
    held_records: usize,
    held_bytes: usize,
    closed: bool,
    /// The driver waits for work without a timer: the next record wakes it.
    parked: bool,
    /// The driver's latest account of the records it took (consistent with
    /// `next_seq` because both are read under this lock).
    snapshot: LedgerSnapshot,
}

/// The limits of the intake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    /// A queue this long wakes the driver at once.
    pub(crate) wake_batch: usize,
}

#[derive(Debug)]
pub(crate) struct Intake {
    state: Mutex<State>,
    limits: Limits,
    wake: Notify,
    /// Set while either bound is reached, so callers can skip encoding a
    /// record that cannot be taken (read without the lock).
    full: AtomicBool,
    pub(crate) refused_queue_full: AtomicU64,
    pub(crate) refused_memory_full: AtomicU64,
    pub(crate) refused_closed: AtomicU64,
    /// Wake-ups callers sent the driver (the tests count them).
    wakes: AtomicU64,
    /// Warnings printed once: the first refusal of each kind.
    warned_queue_full: AtomicBool,
    warned_memory_full: AtomicBool,
}

impl Intake {
    pub(crate) fn new(limits: Limits) -> Intake {
        Intake {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                next_seq: 0,
                held_records: 0,
                held_bytes: 0,
                closed: false,
                parked: false,
                snapshot: LedgerSnapshot::default(),
            }),
            limits,
            wake: Notify::new(),
            full: AtomicBool::new(false),
            refused_queue_full: AtomicU64::new(0),
            refused_memory_full: AtomicU64::new(0),
            refused_closed: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            warned_queue_full: AtomicBool::new(false),
            warned_memory_full: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half
        // changed (every update is a few plain assignments), so a poisoned
        // lock is still good to use: logging must go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a record could be taken now; callers check it before
    /// encoding. `false` also counts the refusal (the record is not made).
    #[inline]
    pub(crate) fn has_room(&self) -> Result<(), Refusal> {
        if !self.full.load(Ordering::Relaxed) {
            return Ok(());
        }
        let st = self.lock();
        let refusal = if st.closed {
            Refusal::Closed
        } else if st.held_records >= self.limits.max_records {
            Refusal::QueueFull
        } else if st.held_bytes >= self.limits.max_bytes {
            Refusal::MemoryFull
        } else {
            return Ok(());
        };
        drop(st);
        self.count(refusal);
        Err(refusal)
    }

    /// Takes a record; its sequence number on success. Never waits for
    /// anything but the lock, which is only ever held for a few assignments.
    pub(crate) fn push(&self, rec: Encoded) -> Result<u64, Refusal> {
        let bytes = cost(&rec);
        let mut st = self.lock();
        let refusal = if st.closed {
            Some(Refusal::Closed)
        } else if st.held_records >= self.limits.max_records {
            Some(Refusal::QueueFull)
        } else if st.held_bytes.saturating_add(bytes) > self.limits.max_bytes {
            Some(Refusal::MemoryFull)
        } else {
            None
        };
        if let Some(r) = refusal {
            if r != Refusal::Closed {
                self.full.store(true, Ordering::Relaxed);
            }
            drop(st);
            self.count(r);
            return Err(r);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.held_records += 1;
        st.held_bytes += bytes;
        st.queue.push_back(rec);
        let wake = if st.parked {
            st.parked = false;
            true
        } else {
            st.queue.len() == self.limits.wake_batch
        };
        if st.held_records >= self.limits.max_records || st.held_bytes >= self.limits.max_bytes {
            self.full.store(true, Ordering::Relaxed);
        }
        drop(st);
        if wake {
            self.wakes.fetch_add(1, Ordering::Relaxed);
            self.wake.notify_one();
        }
        Ok(seq)
    }

    fn count(&self, r: Refusal) {
        let counter = match r {
            Refusal::QueueFull => &self.refused_queue_full,
            Refusal::MemoryFull => &self.refused_memory_full,
            Refusal::Closed => &self.refused_closed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this refusal is the first of its kind (to warn once).
    pub(crate) fn first_refusal(&self, r: Refusal) -> bool {
        let flag = match r {
            Refusal::QueueFull => &self.warned_queue_full,
            Refusal::MemoryFull => &self.warned_memory_full,
            Refusal::Closed => return false,
        };
        // A load first: once set, the flag is only ever read, and a swap on
        // every refusal would bounce its cache line between logging threads.
        !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::Relaxed)
    }

    /// Moves every queued record to `out`; returns the sequence number of
    /// the first one. With `park`, a driver that finds nothing parks: the
    /// next record then wakes it.
    pub(crate) fn drain(&self, out: &mut VecDeque<Encoded>, park: bool) -> u64 {
        let mut st = self.lock();
        let first = st.next_seq - st.queue.len() as u64;
        if st.queue.is_empty() {
            st.parked = park;
        } else if out.is_empty() {
            std::mem::swap(&mut st.queue, out);
        } else {
            out.extend(st.queue.drain(..));
        }
        first
    }

    /// Records left memory (confirmed, spooled or given up): their budget
    /// returns to callers.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        if records == 0 && bytes == 0 {
            return;
        }
        let mut st = self.lock();
        st.held_records = st.held_records.saturating_sub(records);
        st.held_bytes = st.held_bytes.saturating_sub(bytes);
        self.update_full(&st);
    }

    /// Takes budget for `bytes` of records read back from the spool; `false`
    /// when callers' records fill memory (the spool waits, it loses nothing).
    pub(crate) fn reserve(&self, bytes: usize) -> bool {
        let mut st = self.lock();
        if st.held_records >= self.limits.max_records
            || st.held_bytes.saturating_add(bytes) > self.limits.max_bytes
        {
            return false;
        }
        st.held_records += 1;
        st.held_bytes += bytes;
        self.update_full(&st);
        true
    }

    fn update_full(&self, st: &State) {
        let full = st.closed
            || st.held_records >= self.limits.max_records
            || st.held_bytes >= self.limits.max_bytes;
        self.full.store(full, Ordering::Relaxed);
    }

    /// Records and bytes held in memory right now (tests).
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let st = self.lock();
        (st.held_records, st.held_bytes)
    }

    /// Whether memory is over `num/den` of either bound (the spool then
    /// takes new records).
    pub(crate) fn above(&self, num: usize, den: usize) -> bool {
        let st = self.lock();
        st.held_records.saturating_mul(den) > self.limits.max_records.saturating_mul(num)
            || st.held_bytes.saturating_mul(den) > self.limits.max_bytes.saturating_mul(num)
    }

    /// Wake-ups callers sent the driver so far.
    #[cfg(test)]
    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// Records accepted so far: a flush waits for every record below it.
    pub(crate) fn accepted(&self) -> u64 {
        self.lock().next_seq
    }

    /// Records waiting in the queue and their cost (tests).
    #[cfg(test)]
    pub(crate) fn queued_cost(&self) -> (usize, usize) {
        let st = self.lock();
        (st.queue.len(), st.queue.iter().map(cost).sum())
    }

    /// Records waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Refuses every later record (shutdown).
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.full.store(true, Ordering::Relaxed);
        drop(st);
        self.wake.notify_one();
    }

    /// Resolves when a caller wakes the driver.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Stores the driver's account; read with the accepted count by
    /// [`snapshot`](Self::snapshot).
    pub(crate) fn publish(&self, snapshot: &LedgerSnapshot) {
        self.lock().snapshot = snapshot.clone();
    }

    /// The driver's latest account and the records accepted, read together.
    pub(crate) fn snapshot(&self) -> (u64, LedgerSnapshot) {
        let st = self.lock();
        (st.next_seq, st.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> Encoded {
        Encoded {
            id: uuid::Uuid::nil(),
            routing_key: "k".into(),
            body: vec![b'x'; n],
            truncated: false,
        }
    }

    fn intake(max_records: usize, max_bytes: usize) -> Intake {
        Intake::new(Limits {
            max_records,
            max_bytes,
            wake_batch: 4,
        })
    }

    #[test]
    fn sequence_numbers_follow_queue_order_and_drain_gives_the_first() {
        let i = intake(10, 1 << 20);
        assert_eq!(i.push(rec(1)), Ok(0));
        assert_eq!(i.push(rec(1)), Ok(1));
        let mut out = VecDeque::new();
        assert_eq!(i.drain(&mut out, true), 0);
        assert_eq!(out.len(), 2);
        assert_eq!(i.push(rec(1)), Ok(2));
        out.clear();
        assert_eq!(i.drain(&mut out, true), 2);
        assert_eq!(i.accepted(), 3);
    }

    #[test]
    fn record_bound_counts_memory_held_by_the_driver_too() {
        let i = intake(2, 1 << 20);
        i.push(rec(1)).unwrap();
        i.push(rec(1)).unwrap();
        let mut out = VecDeque::new();
        i.drain(&mut out, true);
        // Drained but not released: still in memory.
        assert_eq!(i.push(rec(1)), Err(Refusal::QueueFull));
        assert_eq!(i.has_room(), Err(Refusal::QueueFull));
        assert_eq!(i.refused_queue_full.load(Ordering::Relaxed), 2);
        i.release(1, cost(&rec(1)));
        assert_eq!(i.has_room(), Ok(()));
        assert_eq!(i.push(rec(1)), Ok(2));
    }

    #[test]
    fn byte_bound_refuses_large_records_and_counts_them_apart() {
        let cap = 10 * (1000 + 1 + RECORD_OVERHEAD_BYTES);
        let i = intake(1_000_000, cap);
        for _ in 0..10 {
            i.push(rec(1000)).unwrap();
        }
        assert_eq!(i.push(rec(1000)), Err(Refusal::MemoryFull));
        assert_eq!(i.refused_memory_full.load(Ordering::Relaxed), 1);
        assert_eq!(i.refused_queue_full.load(Ordering::Relaxed), 0);
        assert_eq!(i.held().1, cap);
    }

    #[test]
    fn closed_intake_refuses_and_counts() {
        let i = intake(10, 1 << 20);
        i.close();
        assert_eq!(i.push(rec(1)), Err(Refusal::Closed));
        assert_eq!(i.refused_closed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_a_parked_driver_or_a_batchs_worth_wakes() {
        crate::ship::sim::run_paused(async {
            let i = intake(100, 1 << 20);
            let woken = |i: &Intake| {
                let fut = i.woken();
                futures_util::FutureExt::now_or_never(fut).is_some()
            };
            // Not parked: pushes below the batch size wake nobody.
            i.push(rec(1)).unwrap();
            assert!(!woken(&i));
            // The driver drains and parks when it finds nothing.
            let mut out = VecDeque::new();
            i.drain(&mut out, true);
            i.drain(&mut out, true);
            i.push(rec(1)).unwrap();
            assert!(woken(&i), "first record after parking wakes");
            i.push(rec(1)).unwrap();
            i.push(rec(1)).unwrap();
            assert!(!woken(&i), "later records do not");
            i.push(rec(1)).unwrap(); // the fourth queued: a batch's worth
            assert!(woken(&i));
        });
    }
}
