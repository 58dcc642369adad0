//! The records the driver holds in memory and in flight: when to publish,
//! how a batch is sent, what a confirm, a nack or a refusal does to them.

use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::{Driver, Key, Pending, Sent, MAX_REFUSALS};
use crate::encode::Encoded;
use crate::ship::intake::cost;
use crate::ship::ledger::Place;
use crate::ship::spool::SpoolFs;
use crate::ship::stats::Loss;
use crate::ship::transport::{Confirm, Link, LinkDown, Outgoing, Transport};

impl<T: Transport, F: SpoolFs> Driver<T, F> {
    /// When the oldest unconfirmed publish shows the link dead, unless the
    /// broker said it blocks us (then confirms legitimately wait).
    pub(super) fn watchdog(&self, blocked: bool, watch_from: Instant) -> Option<Instant> {
        if blocked {
            return None;
        }
        let oldest = self.sent.values().next()?;
        Some(oldest.at.max(watch_from) + self.s.liveness_timeout)
    }

    /// When the next partial batch has waited long enough (`None`: nothing
    /// held, or no batching).
    pub(super) fn linger_until(&self) -> Option<Instant> {
        if self.s.batching.records_per_message <= 1 || self.cautious.is_some() {
            return None;
        }
        // The first in publishing order is the oldest (records come in
        // order; those put back after a lost link are older still).
        let (_, first) = self.held.first_key_value()?;
        Some(first.since + self.s.batch_linger)
    }

    /// Whether to publish now: records are held (or can be read back from
    /// the spool) and a batch is full, has lingered enough, or is awaited.
    pub(super) fn ready_to_publish(&mut self, now: Instant) -> bool {
        if self.held.is_empty() {
            self.read_back();
        }
        if self.held.is_empty() {
            return false;
        }
        let per = self.s.batching.records_per_message;
        per <= 1
            || self.cautious.is_some()
            || self.held.len() >= per
            || self.linger_until().is_some_and(|t| now >= t)
            || self.ledger.has_flushes()
            || self.shutdown.is_some()
    }

    /// Publishes the next message(s) from `held`.
    pub(super) fn publish(&mut self, link: &mut T::Link, window: usize) {
        let limit = if self.cautious.is_some() {
            1
        } else {
            usize::MAX
        };
        let n = self
            .s
            .batching
            .take(self.held.values().map(|p| p.rec.body.len()), limit);
        let mut records: Vec<(Key, Pending)> = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some(kv) = self.held.pop_first() {
                records.push(kv);
            }
        }
        // One message per routing key; records keep their order within it.
        while !records.is_empty() && self.sent.len() < window.max(1) {
            let rk = records[0].1.rec.routing_key.clone();
            let (group, rest): (Vec<_>, Vec<_>) = records
                .into_iter()
                .partition(|(_, p)| p.rec.routing_key == rk);
            records = rest;
            self.send(link, group);
        }
        for (k, p) in records {
            self.held.insert(k, p);
        }
    }

    pub(super) fn send(&mut self, link: &mut T::Link, mut group: Vec<(Key, Pending)>) {
        let message_id = if group.len() == 1 {
            group[0].1.rec.id
        } else {
            uuid::Uuid::now_v7()
        };
        let body = self.s.batching.body(group.iter().map(|(_, p)| &p.rec));
        let own = group
            .iter()
            .filter(|(k, _)| matches!(k, Key::Own(_)))
            .count() as u64;
        self.ledger.published(own);
        for (_, p) in group.iter_mut() {
            if p.sent {
                self.snap.republished += 1;
            }
            p.sent = true;
        }
        self.snap.published += 1;
        let no = self.next_msg;
        self.next_msg += 1;
        let fut = link.publish(Outgoing {
            routing_key: group[0].1.rec.routing_key.clone(),
            body,
            message_id,
        });
        self.confirms.push(Box::pin(async move { (no, fut.await) }));
        self.sent.insert(
            no,
            Sent {
                records: group,
                at: Instant::now(),
            },
        );
    }

    pub(super) fn on_confirm(
        &mut self,
        no: u64,
        res: Result<Confirm, LinkDown>,
    ) -> Result<(), LinkDown> {
        let Some(sent) = self.sent.remove(&no) else {
            return Ok(());
        };
        match res {
            Ok(Confirm::Nack) => {
                self.snap.nacked += 1;
                self.reporter.report(
                    "nack",
                    "the broker refused a message (nack); its records will be published again",
                );
                self.back_to_held(sent.records);
                Ok(())
            }
            Ok(c) => {
                let last = sent.records.iter().map(|(k, _)| *k).max();
                if self.cautious.is_some_and(|until| last >= Some(until)) {
                    self.cautious = None;
                    self.reporter.clear("refused");
                }
                let routed = c == Confirm::Ack;
                for (key, p) in sent.records {
                    if let (Some(seg), Some(spool)) = (p.seg, self.spool.as_mut()) {
                        spool.ack(seg);
                    }
                    match key {
                        Key::Own(seq) => self.ledger.confirmed(seq, routed),
                        Key::Inherited(_) => self.ledger.inherited_confirmed(),
                    }
                    if !routed {
                        let msg = format!(
                            "exchange {:?} has no queue bound for routing key {:?}: the broker discards these records. \
                             Bind a queue with `{}.#` (see `logcollect setup`)",
                            self.s.exchange, p.rec.routing_key, self.s.routing_key
                        );
                        self.set_error(&msg);
                        self.reporter.report("unroutable", &msg);
                    }
                    self.free(&p.rec);
                }
                Ok(())
            }
            Err(down) => {
                // Back where it was: the link is gone, and what is in flight
                // is requeued (and judged) in one place.
                self.sent.insert(no, sent);
                Err(down)
            }
        }
    }

    /// The broker refused a publish: when one record alone was in flight,
    /// the refusal is that record's. One more refusal for it; refused too
    /// often, it is given up.
    pub(super) fn strike_lone_message(&mut self) {
        if self.sent.len() != 1 {
            return;
        }
        let Some(mut entry) = self.sent.first_entry() else {
            return;
        };
        if entry.get().records.len() != 1 {
            return;
        }
        let mut records = std::mem::take(&mut entry.get_mut().records);
        self.strike(&mut records);
        if let Some(mut entry) = self.sent.first_entry() {
            entry.get_mut().records = records;
        }
    }

    /// One more refusal for each record; those refused too often are given up.
    pub(super) fn strike(&mut self, records: &mut Vec<(Key, Pending)>) {
        records.retain_mut(|(key, p)| {
            p.refusals += 1;
            if p.refusals < MAX_REFUSALS {
                return true;
            }
            if self.cautious.is_some_and(|until| *key >= until) {
                // Everything that was in flight at the refusal has been
                // tried alone: back to the full window.
                self.cautious = None;
            }
            match *key {
                Key::Own(seq) => self.ledger.lost(seq, Place::InFlight, Loss::Rejected),
                Key::Inherited(_) => self.ledger.inherited_lost(1),
            }
            if let (Some(seg), Some(spool)) = (p.seg, self.spool.as_mut()) {
                spool.ack(seg);
            }
            self.freed.0 += 1;
            self.freed.1 += cost(&p.rec);
            false
        });
    }

    pub(super) fn back_to_held(&mut self, records: Vec<(Key, Pending)>) {
        let own = records
            .iter()
            .filter(|(k, _)| matches!(k, Key::Own(_)))
            .count() as u64;
        self.ledger.unpublished(own);
        for (k, p) in records {
            self.held.insert(k, p);
        }
    }

    /// The link is gone: everything in flight is published again later.
    pub(super) fn requeue_in_flight(&mut self) {
        self.confirms = FuturesUnordered::new();
        for (_, sent) in std::mem::take(&mut self.sent) {
            self.back_to_held(sent.records);
        }
    }

    pub(super) fn free(&mut self, rec: &Encoded) {
        self.freed.0 += 1;
        self.freed.1 += cost(rec);
    }
}
