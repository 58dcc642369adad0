//! The driver's books checked against the records themselves, after its
//! steps in tests (the simulation test runs it thousands of times).

use super::{Driver, Key};
use crate::ship::intake::cost;
use crate::ship::spool::SpoolFs;
use crate::ship::transport::Transport;

impl<T: Transport, F: SpoolFs> Driver<T, F> {
    /// Checks the books against the records themselves (tests).
    pub(crate) fn audit(&self) {
        let own_held = self
            .held
            .keys()
            .filter(|k| matches!(k, Key::Own(_)))
            .count() as u64;
        let own_sent = self
            .sent
            .values()
            .flat_map(|s| s.records.iter())
            .filter(|(k, _)| matches!(k, Key::Own(_)))
            .count() as u64;
        assert!(
            self.ledger.balanced(),
            "ledger does not balance: {:?}",
            self.ledger
        );
        assert_eq!(self.ledger.held(), own_held, "held records");
        assert_eq!(self.ledger.in_flight(), own_sent, "records in flight");
        if let Some(sp) = &self.spool {
            assert_eq!(
                self.ledger.on_disk(),
                sp.own_unread() + self.kept_read_back,
                "records on disk"
            );
        }
        let in_memory = self.held.iter().chain(
            self.sent
                .values()
                .flat_map(|s| s.records.iter().map(|(k, p)| (k, p))),
        );
        let (mut records, mut bytes) = (0, 0);
        for (key, p) in in_memory {
            if let Key::Own(seq) = key {
                assert!(
                    self.ledger.is_unresolved(*seq),
                    "record {seq} held but settled"
                );
            }
            records += 1;
            bytes += cost(&p.rec);
        }
        // What the intake charges callers for is what is really held.
        let (queued, queued_bytes) = self.intake.queued_cost();
        let (charged, charged_bytes) = self.intake.held();
        assert_eq!(
            (
                records + queued + self.freed.0,
                bytes + queued_bytes + self.freed.1
            ),
            (charged, charged_bytes),
            "memory charged to callers differs from the records held"
        );
    }
}
