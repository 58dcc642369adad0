//! What the shipper did, in numbers: the public [`Stats`] and the driver's
//! account it is made from.

use std::fmt;

/// Why an accepted record was given up. Each cause has its own counter in
/// [`Stats`] (unroutable records are settled by their confirm instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Loss {
    /// The broker refused it every time (too large, forbidden).
    Rejected,
    /// Deleted from the spool by its byte cap before it was read.
    SpoolCap,
    /// Damaged in the spool (a bad disk, a torn write).
    SpoolCorrupt,
    /// Neither delivered nor kept in the spool by the shutdown deadline.
    Undelivered,
}

/// The driver's account of every record it took from the intake, published
/// under the intake's lock so that it is read together with the number of
/// records accepted. Every field is exact at the moment it was published:
/// `pulled = confirmed + held + in_flight + on_disk + lost`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LedgerSnapshot {
    pub(crate) pulled: u64,
    pub(crate) confirmed: u64,
    pub(crate) held: u64,
    pub(crate) in_flight: u64,
    pub(crate) on_disk: u64,
    pub(crate) unroutable: u64,
    pub(crate) rejected: u64,
    pub(crate) spool_cap: u64,
    pub(crate) spool_corrupt: u64,
    pub(crate) undelivered: u64,
    /// Records an earlier process left in the spool: confirmed, and lost.
    pub(crate) recovered: u64,
    pub(crate) inherited_lost: u64,
    pub(crate) inherited_on_disk: u64,
    pub(crate) published: u64,
    pub(crate) republished: u64,
    pub(crate) nacked: u64,
    pub(crate) connects: u64,
    pub(crate) connect_failures: u64,
    pub(crate) connection_losses: u64,
    pub(crate) spooled: u64,
    pub(crate) spool_synced: u64,
    pub(crate) replayed: u64,
    pub(crate) spool_bytes: u64,
    pub(crate) connected: bool,
    pub(crate) blocked: bool,
    pub(crate) shut_down: bool,
    pub(crate) last_error: Option<String>,
}

impl LedgerSnapshot {
    #[cfg(test)]
    pub(crate) fn lost(&self) -> u64 {
        self.unroutable + self.rejected + self.spool_cap + self.spool_corrupt + self.undelivered
    }
}

/// A snapshot of the shipper's counters, consistent at one moment: every
/// record accepted is, at every moment, in exactly one place,
///
/// `accepted = confirmed + pending() + on_disk + lost_accepted()`,
///
/// and records that were never accepted are counted apart
/// (`dropped_queue_full`, `dropped_memory_full`, `dropped_after_shutdown`,
/// `dropped_reentrant`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records taken into the queue.
    pub accepted: u64,
    /// Records the broker confirmed and routed to at least one queue.
    pub confirmed: u64,
    /// Accepted records waiting in the queue for the shipper thread.
    pub queued: u64,
    /// Accepted records the shipper holds in memory, not yet published (or
    /// to be published again).
    pub held: u64,
    /// Published records awaiting their confirm right now.
    pub in_flight: u64,
    /// Accepted records in the disk spool right now, waiting for the broker
    /// (at shutdown: kept for the next process).
    pub on_disk: u64,
    /// Confirmed records the broker could not route to any queue (no queue
    /// bound for their routing key): it discarded them.
    pub unroutable: u64,
    /// Records the broker refused every time it was offered them (larger
    /// than its `max_message_size`, or a publish it forbids): given up after
    /// a few attempts so that the records behind them flow.
    pub rejected: u64,
    /// Unread records deleted from the spool because it was over its byte
    /// cap (oldest first).
    pub spool_dropped: u64,
    /// Records found damaged in the spool (a bad disk, a torn write) and
    /// skipped.
    pub spool_corrupt: u64,
    /// Accepted records neither delivered nor kept in the spool by the
    /// shutdown deadline.
    pub undelivered_at_shutdown: u64,
    /// Accepted records not delivered by the shutdown deadline but kept in
    /// the spool for the next process (equal to `on_disk` after shutdown).
    pub kept_in_spool_at_shutdown: u64,
    /// Records refused because `queue_capacity` records were held in memory
    /// (never accepted).
    pub dropped_queue_full: u64,
    /// Records refused because `queue_max_bytes` were held in memory (never
    /// accepted).
    pub dropped_memory_full: u64,
    /// Records logged after shutdown (never accepted).
    pub dropped_after_shutdown: u64,
    /// Records logged from inside our own encoding (a `Display` impl that
    /// logs); dropped instead of recursing (never accepted).
    pub dropped_reentrant: u64,
    /// Records cut to the size cap (delivered, marked `truncated`).
    pub truncated: u64,
    /// Field values sent as `[redacted]` (their name or value matched a
    /// redaction pattern).
    pub redacted: u64,
    /// Messages published (including republishes; a batch is one message).
    pub published: u64,
    /// Records published again after a nack or a lost connection.
    pub republished: u64,
    /// Negative acknowledgements received (each record is republished).
    pub nacked: u64,
    /// Successful connections (the first one included).
    pub connects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Established connections that were lost (closed by the broker, cut,
    /// or found dead by the heartbeat or the confirm watchdog).
    pub connection_losses: u64,
    /// Records written to the disk spool (cumulative).
    pub spooled: u64,
    /// Of those, made durable by an fsync that succeeded.
    pub spool_synced: u64,
    /// Records published from the spool (this process's and earlier ones').
    pub replayed: u64,
    /// Records an earlier process left in the spool, confirmed by this one
    /// (not counted in `accepted` nor `confirmed`).
    pub recovered: u64,
    /// Records an earlier process left in the spool that were lost (spool
    /// cap or damage) in this one.
    pub recovered_lost: u64,
    /// Records an earlier process left that are neither confirmed nor lost
    /// yet: they stay in the spool until they are.
    pub inherited_on_disk: u64,
    /// Bytes in the spool directory right now.
    pub spool_bytes: u64,
    /// Whether the shipper is connected right now.
    pub connected: bool,
    /// Whether the broker is blocking publishers right now (memory or disk alarm).
    pub blocked: bool,
    /// The last problem, in words (never contains a password).
    pub last_error: Option<String>,
}

impl Stats {
    /// Accepted records neither confirmed, on disk, nor given up: queued,
    /// held or in flight.
    pub fn pending(&self) -> u64 {
        self.queued + self.held + self.in_flight
    }

    /// Accepted records given up, all causes together.
    pub fn lost_accepted(&self) -> u64 {
        self.unroutable
            + self.rejected
            + self.spool_dropped
            + self.spool_corrupt
            + self.undelivered_at_shutdown
    }

    /// Records refused before they were accepted, all causes together.
    pub fn refused(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_memory_full
            + self.dropped_after_shutdown
            + self.dropped_reentrant
    }

    /// Everything that was lost or refused, all causes together.
    pub fn lost(&self) -> u64 {
        self.lost_accepted() + self.refused()
    }

    /// Whether every accepted record is accounted for:
    /// `accepted = confirmed + pending + on_disk + lost_accepted`. Always
    /// true of a snapshot the shipper made; a check for tests and monitors.
    pub fn balanced(&self) -> bool {
        self.accepted == self.confirmed + self.pending() + self.on_disk + self.lost_accepted()
    }

    /// `cause count` for every cause of loss or refusal that happened, for
    /// the shutdown summary.
    pub(crate) fn causes(&self) -> Vec<String> {
        [
            (self.unroutable, "unroutable (no queue bound)"),
            (self.rejected, "rejected by the broker"),
            (self.spool_dropped, "dropped by the spool's byte cap"),
            (self.spool_corrupt, "damaged in the spool"),
            (
                self.undelivered_at_shutdown,
                "undelivered at the shutdown deadline",
            ),
            (self.dropped_queue_full, "refused: queue full"),
            (self.dropped_memory_full, "refused: memory cap reached"),
            (self.dropped_after_shutdown, "logged after shutdown"),
            (self.dropped_reentrant, "logged while encoding a record"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect()
    }

    pub(crate) fn from_parts(
        accepted: u64,
        s: &LedgerSnapshot,
        refused: [u64; 4],
        truncated: u64,
    ) -> Stats {
        Stats {
            accepted,
            confirmed: s.confirmed,
            queued: accepted.saturating_sub(s.pulled),
            held: s.held,
            in_flight: s.in_flight,
            on_disk: s.on_disk,
            unroutable: s.unroutable,
            rejected: s.rejected,
            spool_dropped: s.spool_cap,
            spool_corrupt: s.spool_corrupt,
            undelivered_at_shutdown: s.undelivered,
            kept_in_spool_at_shutdown: if s.shut_down { s.on_disk } else { 0 },
            dropped_queue_full: refused[0],
            dropped_memory_full: refused[1],
            dropped_after_shutdown: refused[2],
            dropped_reentrant: refused[3],
            truncated,
            redacted: 0,
            published: s.published,
            republished: s.republished,
            nacked: s.nacked,
            connects: s.connects,
            connect_failures: s.connect_failures,
            connection_losses: s.connection_losses,
            spooled: s.spooled,
            spool_synced: s.spool_synced,
            replayed: s.replayed,
            recovered: s.recovered,
            recovered_lost: s.inherited_lost,
            inherited_on_disk: s.inherited_on_disk,
            spool_bytes: s.spool_bytes,
            connected: s.connected,
            blocked: s.blocked,
            last_error: s.last_error.clone(),
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {}, confirmed {}, pending {}, on disk {}, lost {}",
            self.accepted,
            self.confirmed,
            self.pending(),
            self.on_disk,
            self.lost_accepted(),
        )?;
        let causes = self.causes();
        if !causes.is_empty() {
            write!(f, " ({})", causes.join(", "))?;
        }
        write!(
            f,
            ", republished {}, reconnects {}",
            self.republished,
            self.connects.saturating_sub(1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_every_cause_that_happened_and_only_those() {
        let s = Stats {
            accepted: 10,
            confirmed: 6,
            on_disk: 1,
            spool_dropped: 2,
            undelivered_at_shutdown: 1,
            dropped_memory_full: 4,
            ..Stats::default()
        };
        assert!(s.balanced());
        let text = s.to_string();
        assert!(text.contains("2 dropped by the spool's byte cap"), "{text}");
        assert!(
            text.contains("1 undelivered at the shutdown deadline"),
            "{text}"
        );
        assert!(text.contains("4 refused: memory cap reached"), "{text}");
        assert!(!text.contains("unroutable"), "{text}");
        assert_eq!(s.lost(), 7);
    }

    #[test]
    fn queued_is_what_the_driver_has_not_taken_yet() {
        let snap = LedgerSnapshot {
            pulled: 7,
            confirmed: 5,
            held: 1,
            in_flight: 1,
            ..LedgerSnapshot::default()
        };
        let s = Stats::from_parts(9, &snap, [0; 4], 0);
        assert_eq!(s.queued, 2);
        assert_eq!(s.pending(), 4);
        assert!(s.balanced());
    }
}
