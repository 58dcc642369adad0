//! The ledger: where every accepted record is, by sequence number.
//!
//! Each record accepted by the intake has a sequence number; once the driver
//! takes it, the ledger follows it through its states — held in memory, in
//! flight, on disk — until it is confirmed or lost with a cause. The counts
//! always add up (`pulled = confirmed + held + in_flight + on_disk + lost`),
//! and the smallest sequence number not yet resolved (the watermark) tells a
//! flush when every record accepted before it is settled.
//!
//! Records an earlier process left in the spool have no sequence number
//! here: they are counted apart (`recovered`, `inherited_*`).

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;

use tokio::time::Instant;

use super::stats::{LedgerSnapshot, Loss};
use crate::error::ShutdownError;

/// A set of sequence numbers kept as disjoint half-open ranges: records are
/// taken in order and mostly resolved in order, so it stays a few ranges.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet {
    /// start → end (exclusive).
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `start..end`, which must lie above every member.
    pub(crate) fn push_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        debug_assert!(self.last().is_none_or(|l| l < start));
        self.len += end - start;
        if let Some(mut last) = self.ranges.last_entry() {
            if *last.get() == start {
                *last.get_mut() = end;
                return;
            }
        }
        self.ranges.insert(start, end);
    }

    /// Removes `seq`; whether it was a member.
    pub(crate) fn remove(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.ranges.range(..=seq).next_back() else {
            return false;
        };
        if seq >= end {
            return false;
        }
        self.len -= 1;
        self.ranges.remove(&start);
        if start < seq {
            self.ranges.insert(start, seq);
        }
        if seq + 1 < end {
            self.ranges.insert(seq + 1, end);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    pub(crate) fn first(&self) -> Option<u64> {
        self.ranges.keys().next().copied()
    }

    fn last(&self) -> Option<u64> {
        self.ranges.values().next_back().map(|e| e - 1)
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// Where a record was when it was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Held,
    InFlight,
    OnDisk,
}

struct FlushWaiter {
    upto: u64,
    deadline: Instant,
    reply: SyncSender<Result<(), ShutdownError>>,
}

impl std::fmt::Debug for FlushWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushWaiter")
            .field("upto", &self.upto)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Records taken from the intake: sequence numbers below this.
    pulled: u64,
    /// Taken and neither confirmed nor lost.
    unresolved: SeqSet,
    held: u64,
    in_flight: u64,
    on_disk: u64,
    confirmed: u64,
    unroutable: u64,
    rejected: u64,
    spool_cap: u64,
    spool_corrupt: u64,
    undelivered: u64,
    recovered: u64,
    inherited_lost: u64,
    inherited_unsettled: u64,
    flushes: Vec<FlushWaiter>,
}

impl Ledger {
    /// `n` records from `first` on were taken from the intake; they are
    /// held in memory now.
    pub(crate) fn took(&mut self, first: u64, n: u64) {
        debug_assert_eq!(first, self.pulled, "the intake hands records in order");
        self.unresolved.push_range(first, first + n);
        self.pulled = first + n;
        self.held += n;
    }

    /// Records published (held → in flight).
    pub(crate) fn published(&mut self, n: u64) {
        self.held -= n;
        self.in_flight += n;
    }

    /// Records to publish again after a nack or a lost link (in flight → held).
    pub(crate) fn unpublished(&mut self, n: u64) {
        self.in_flight -= n;
        self.held += n;
    }

    /// A record the broker confirmed; `routed` false: it had no queue.
    pub(crate) fn confirmed(&mut self, seq: u64, routed: bool) {
        self.in_flight -= 1;
        let was = self.unresolved.remove(seq);
        debug_assert!(was, "record {seq} confirmed twice");
        if routed {
            self.confirmed += 1;
        } else {
            self.unroutable += 1;
        }
    }

    /// A record given up, from where it was.
    pub(crate) fn lost(&mut self, seq: u64, from: Place, cause: Loss) {
        match from {
            Place::Held => self.held -= 1,
            Place::InFlight => self.in_flight -= 1,
            Place::OnDisk => self.on_disk -= 1,
        }
        let was = self.unresolved.remove(seq);
        debug_assert!(was, "record {seq} lost twice");
        *self.loss_counter(cause) += 1;
    }

    fn loss_counter(&mut self, cause: Loss) -> &mut u64 {
        match cause {
            Loss::Rejected => &mut self.rejected,
            Loss::SpoolCap => &mut self.spool_cap,
            Loss::SpoolCorrupt => &mut self.spool_corrupt,
            Loss::Undelivered => &mut self.undelivered,
        }
    }

    /// A held record was written to the spool.
    pub(crate) fn spooled(&mut self) {
        self.held -= 1;
        self.on_disk += 1;
    }

    /// A record was read back from the spool into memory.
    pub(crate) fn unspooled(&mut self) {
        self.on_disk -= 1;
        self.held += 1;
    }

    /// Records an earlier process left in the spool, found at start. They
    /// stay in the spool (read back or not) until confirmed or lost.
    pub(crate) fn inherited(&mut self, n: u64) {
        self.inherited_unsettled += n;
    }

    pub(crate) fn inherited_confirmed(&mut self) {
        self.inherited_unsettled = self.inherited_unsettled.saturating_sub(1);
        self.recovered += 1;
    }

    /// Inherited records lost (cap, damage, refused for good).
    pub(crate) fn inherited_lost(&mut self, n: u64) {
        self.inherited_unsettled = self.inherited_unsettled.saturating_sub(n);
        self.inherited_lost += n;
    }

    /// The smallest sequence number not settled: every record below it is
    /// confirmed or lost.
    pub(crate) fn watermark(&self) -> u64 {
        self.unresolved.first().unwrap_or(self.pulled)
    }

    pub(crate) fn pulled(&self) -> u64 {
        self.pulled
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    #[cfg(test)]
    pub(crate) fn on_disk(&self) -> u64 {
        self.on_disk
    }

    pub(crate) fn unresolved(&self) -> u64 {
        self.unresolved.len()
    }

    #[cfg(test)]
    pub(crate) fn is_unresolved(&self, seq: u64) -> bool {
        self.unresolved.contains(seq)
    }

    /// Waits for every record below `upto`, and for those an earlier process
    /// left in the spool (they are older than anything accepted now),
    /// answering by `deadline`.
    pub(crate) fn add_flush(
        &mut self,
        upto: u64,
        deadline: Instant,
        reply: SyncSender<Result<(), ShutdownError>>,
    ) {
        self.flushes.push(FlushWaiter {
            upto,
            deadline,
            reply,
        });
    }

    pub(crate) fn has_flushes(&self) -> bool {
        !self.flushes.is_empty()
    }

    /// The earliest deadline of a waiting flush.
    pub(crate) fn next_flush_deadline(&self) -> Option<Instant> {
        self.flushes.iter().map(|f| f.deadline).min()
    }

    /// Answers the flushes that are settled or past their deadline.
    pub(crate) fn answer_flushes(&mut self, now: Instant) {
        if self.flushes.is_empty() {
            return;
        }
        let mark = self.watermark();
        let inherited_settled = self.inherited_unsettled == 0;
        self.flushes.retain(|f| {
            let answer = if mark >= f.upto && inherited_settled {
                Ok(())
            } else if now >= f.deadline {
                Err(ShutdownError::Timeout)
            } else {
                return true;
            };
            // The caller may have stopped waiting: nothing to do then.
            let _ = f.reply.try_send(answer);
            false
        });
    }

    /// Answers every waiting flush: the shipper is stopping.
    pub(crate) fn end_flushes(&mut self) {
        let mark = self.watermark();
        let inherited_settled = self.inherited_unsettled == 0;
        for f in self.flushes.drain(..) {
            let answer = if mark >= f.upto && inherited_settled {
                Ok(())
            } else {
                Err(ShutdownError::Timeout)
            };
            let _ = f.reply.try_send(answer);
        }
    }

    /// Writes the record counts into `s`.
    pub(crate) fn fill(&self, s: &mut LedgerSnapshot) {
        s.pulled = self.pulled;
        s.confirmed = self.confirmed;
        s.held = self.held;
        s.in_flight = self.in_flight;
        s.on_disk = self.on_disk;
        s.unroutable = self.unroutable;
        s.rejected = self.rejected;
        s.spool_cap = self.spool_cap;
        s.spool_corrupt = self.spool_corrupt;
        s.undelivered = self.undelivered;
        s.recovered = self.recovered;
        s.inherited_lost = self.inherited_lost;
        s.inherited_on_disk = self.inherited_unsettled;
    }

    /// The ledger's own books balance: every record taken is in exactly one
    /// state, and the unresolved ones are exactly those held, in flight or
    /// on disk.
    #[cfg(test)]
    pub(crate) fn balanced(&self) -> bool {
        let lost = self.unroutable
            + self.rejected
            + self.spool_cap
            + self.spool_corrupt
            + self.undelivered;
        self.pulled == self.confirmed + self.held + self.in_flight + self.on_disk + lost
            && self.unresolved.len() == self.held + self.in_flight + self.on_disk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seqset_keeps_ranges_and_splits_on_removal() {
        let mut s = SeqSet::default();
        s.push_range(0, 5);
        s.push_range(5, 8);
        s.push_range(10, 12);
        assert_eq!(s.len(), 10);
        assert_eq!(s.ranges.len(), 2, "adjacent ranges merge");
        assert!(s.remove(3));
        assert!(!s.remove(3), "already gone");
        assert!(!s.remove(9), "never there");
        assert!(s.contains(4) && !s.contains(3) && s.contains(2));
        assert_eq!(s.first(), Some(0));
        for seq in [0, 1, 2, 4, 5, 6, 7] {
            assert!(s.remove(seq));
        }
        assert_eq!(s.first(), Some(10));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn states_add_up_through_every_transition() {
        let mut l = Ledger::default();
        l.took(0, 10);
        assert!(l.balanced());
        l.published(4);
        l.confirmed(0, true);
        l.confirmed(1, false);
        l.unpublished(2); // 2 and 3 come back after a lost link
        l.spooled();
        l.spooled();
        l.unspooled();
        l.lost(9, Place::OnDisk, Loss::SpoolCap);
        l.published(1);
        l.lost(2, Place::InFlight, Loss::Rejected);
        l.lost(8, Place::Held, Loss::Undelivered);
        assert!(l.balanced(), "{l:?}");
        let mut s = LedgerSnapshot::default();
        l.fill(&mut s);
        assert_eq!(s.confirmed, 1);
        assert_eq!(s.unroutable, 1);
        assert_eq!(s.rejected, 1);
        assert_eq!(s.spool_cap, 1);
        assert_eq!(s.undelivered, 1);
        assert_eq!(
            s.on_disk, 0,
            "one spooled record read back, one lost to the cap"
        );
        assert_eq!(
            s.pulled,
            s.confirmed + s.held + s.in_flight + s.on_disk + s.lost()
        );
    }

    #[test]
    fn flush_answers_once_every_record_below_it_is_settled() {
        crate::ship::sim::run_paused(async {
            let mut l = Ledger::default();
            l.took(0, 3);
            l.published(3);
            let now = Instant::now();
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            l.add_flush(2, now + Duration::from_secs(5), tx);
            let (tx_late, rx_late) = std::sync::mpsc::sync_channel(1);
            l.add_flush(3, now + Duration::from_secs(1), tx_late);
            l.confirmed(1, true);
            l.answer_flushes(now);
            assert!(rx.try_recv().is_err(), "record 0 is not settled yet");
            l.confirmed(0, true);
            l.answer_flushes(now);
            assert_eq!(rx.try_recv(), Ok(Ok(())));
            assert!(rx_late.try_recv().is_err());
            l.answer_flushes(now + Duration::from_secs(2));
            assert_eq!(rx_late.try_recv(), Ok(Err(ShutdownError::Timeout)));
            assert!(!l.has_flushes());
        });
    }
}
