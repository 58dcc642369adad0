//! Records between memory and disk: picking up the intake (to the spool
//! when it must), syncing, reading back, and what shutdown keeps.

use futures_util::stream::StreamExt;
use tokio::time::Instant;

use super::{Driver, Key, Pending, SPILL_AT, SPOOL_SYNC_INTERVAL};
use crate::encode::Encoded;
use crate::ship::intake::cost;
use crate::ship::ledger::Place;
use crate::ship::spool::{SpoolFs, SpoolLosses, Spooled};
use crate::ship::stats::Loss;
use crate::ship::transport::Transport;

impl<T: Transport, F: SpoolFs> Driver<T, F> {
    /// Whether new records go to the spool: it still holds unread records
    /// (order is kept through the disk), or memory is filling up.
    pub(super) fn spilling(&self) -> bool {
        self.spool.as_ref().is_some_and(|sp| {
            sp.own_unread() + sp.inherited_unread() > 0 || self.intake.above(SPILL_AT.0, SPILL_AT.1)
        })
    }

    /// Takes everything queued in the intake, into memory or (`to_spool`)
    /// onto disk, and decides when to look again.
    pub(super) fn pick_up(&mut self, to_spool: bool) {
        let mut batch = std::mem::take(&mut self.scratch);
        // After a record, keep looking every `wake_interval` for a while
        // before parking: under a steady trickle of records the driver then
        // finds them on its own, and callers never pay for a wake-up (a
        // system call on their thread). Parked, the next record wakes it.
        let linger = self.empty_pickups < self.s.pickups_before_parking();
        let first = self.intake.drain(&mut batch, !linger);
        let n = batch.len() as u64;
        if n == 0 {
            self.scratch = batch;
            if linger {
                self.empty_pickups += 1;
                self.pickup_at = Some(Instant::now() + self.s.wake_interval);
            }
            return;
        }
        self.empty_pickups = 0;
        self.pickup_at = Some(Instant::now() + self.s.wake_interval);
        self.ledger.took(first, n);
        let now = Instant::now();
        for (i, rec) in batch.drain(..).enumerate() {
            let seq = first + i as u64;
            if to_spool && self.write_to_spool(seq, &rec) {
                continue;
            }
            self.held.insert(
                Key::Own(seq),
                Pending {
                    rec,
                    sent: false,
                    seg: None,
                    refusals: 0,
                    since: now,
                },
            );
        }
        self.scratch = batch;
    }

    /// Writes a held record to the spool; `false` (reported) when the disk
    /// refuses it: the record then stays in memory.
    pub(super) fn write_to_spool(&mut self, seq: u64, rec: &Encoded) -> bool {
        let Some(spool) = self.spool.as_mut() else {
            return false;
        };
        let appended = spool.append(seq, rec);
        // An append over the byte cap drops the oldest records first.
        self.absorb_spool_losses();
        match appended {
            Ok(()) => {
                self.ledger.spooled();
                self.snap.spooled += 1;
                self.free(rec);
                self.spool_dirty_since.get_or_insert_with(Instant::now);
                self.reporter.clear("spool-write");
                true
            }
            Err(e) => {
                let msg = format!(
                    "cannot write to the spool: {e}; records wait in memory (up to queue_capacity / queue_max_bytes), new ones beyond are refused and counted"
                );
                self.set_error(&msg);
                self.reporter.once("spool-write", &msg);
                false
            }
        }
    }

    pub(super) fn sync_spool_if_due(&mut self, now: Instant) {
        let due = self
            .spool_dirty_since
            .is_some_and(|t| now >= t + SPOOL_SYNC_INTERVAL || self.intake.queued() == 0);
        if due {
            self.sync_spool();
        }
    }

    pub(super) fn sync_spool(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        self.spool_dirty_since = None;
        let synced = spool.sync();
        let synced_own = spool.synced_own();
        self.absorb_spool_losses();
        match synced {
            Ok(()) => {
                self.snap.spool_synced = synced_own;
                self.reporter.clear("spool-sync");
            }
            Err(e) => {
                let msg = format!("cannot make the spool durable (fsync failed): {e}; records written since the last good sync may not survive a crash");
                self.set_error(&msg);
                self.reporter.once("spool-sync", &msg);
            }
        }
    }

    /// Reads records back from the spool into memory while there is room.
    pub(super) fn read_back(&mut self) {
        let per = self.s.batching.records_per_message.max(1);
        let max_cost = self.s.batching.max_bytes + 64 + crate::ship::intake::RECORD_OVERHEAD_BYTES;
        for _ in 0..per {
            let Some(spool) = self.spool.as_mut() else {
                return;
            };
            if spool.own_unread() + spool.inherited_unread() == 0 {
                break;
            }
            // Room for the largest record first: memory never goes over
            // its cap, even for a moment.
            if !self.intake.reserve(max_cost) {
                break;
            }
            let next = spool.next();
            self.absorb_spool_losses();
            let Some(Spooled { seg, seq, rec }) = next else {
                self.intake.release(1, max_cost);
                break;
            };
            // Keep exactly the record's cost.
            self.intake.release(0, max_cost - cost(&rec));
            self.snap.replayed += 1;
            let key = match seq {
                Some(seq) => {
                    self.ledger.unspooled();
                    Key::Own(seq)
                }
                None => {
                    self.next_inherited += 1;
                    Key::Inherited(self.next_inherited)
                }
            };
            self.held.insert(
                key,
                Pending {
                    rec,
                    sent: false,
                    seg: Some(seg),
                    refusals: 0,
                    since: Instant::now(),
                },
            );
        }
    }

    pub(super) fn absorb_spool_losses(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let losses = spool.take_losses();
        self.snap.spool_bytes = spool.bytes();
        if losses.is_empty() {
            return;
        }
        let SpoolLosses {
            cap_own,
            cap_inherited,
            corrupt_own,
            corrupt_inherited,
            torn_inherited,
        } = losses;
        for seq in cap_own {
            self.ledger.lost(seq, Place::OnDisk, Loss::SpoolCap);
        }
        for seq in corrupt_own {
            self.ledger.lost(seq, Place::OnDisk, Loss::SpoolCorrupt);
        }
        self.ledger
            .inherited_lost(cap_inherited + corrupt_inherited + torn_inherited);
    }

    /// Shutdown (or the deadline): what is left goes to the spool with one
    /// fsync, or is counted as undelivered; then the caller is answered.
    pub(super) async fn finish(&mut self) {
        self.intake.close();
        self.pick_up(false);
        self.requeue_in_flight();
        let held = std::mem::take(&mut self.held);
        for (key, p) in held {
            let Key::Own(seq) = key else {
                // Read from a segment an earlier process left: it is still
                // there for the next process.
                self.free(&p.rec);
                continue;
            };
            if p.seg.is_some() {
                // Read back from our own segment, which is still on disk
                // (a segment goes only once all of it is confirmed).
                self.ledger.spooled();
                self.kept_read_back += 1;
                self.free(&p.rec);
            } else if !self.write_to_spool(seq, &p.rec) {
                self.ledger.lost(seq, Place::Held, Loss::Undelivered);
                self.free(&p.rec);
            }
        }
        self.sync_spool();
        self.absorb_spool_losses();
        self.snap.shut_down = true;
        self.end_step(Instant::now());
        self.ledger.end_flushes();
        // Give closing connections their (bounded) moment.
        while self.closing.next().await.is_some() {}
        if let Some((_, Some(reply))) = self.shutdown.take() {
            let _ = reply.try_send(());
        }
    }
}
