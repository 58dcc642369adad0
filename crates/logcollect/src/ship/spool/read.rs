//! Reading: handing records out oldest first, skipping and counting
//! damage, and deleting segments once everything in them is confirmed.

use std::io;

use super::cursor::{Cursor, Step};
use super::format::MAGIC_LEN;
use super::{Cause, SegId, Spool, SpoolFs, Spooled};

impl<F: SpoolFs> Spool<F> {
    /// The oldest unread record (an earlier process's first), or `None` when
    /// everything has been read. Damaged records are skipped and counted.
    pub(crate) fn next(&mut self) -> Option<Spooled> {
        loop {
            let i = self.segs.iter().position(|s| !s.read_done)?;
            let seg = &self.segs[i];
            if seg.read_pos >= seg.good_len {
                if self.is_writer(i) {
                    // Caught up with the writer: damaged records before its
                    // end are lost now; it goes once all is confirmed.
                    let seg = &mut self.segs[i];
                    self.tally
                        .lose(seg, seg.passed, seg.records, Cause::Corrupt);
                    seg.passed = seg.records;
                    self.collect(i);
                    return None;
                }
                self.finish_segment(i);
                continue;
            }
            match self.read_one(i) {
                Ok(Some(spooled)) => return Some(spooled),
                Ok(None) => {}
                Err(_) => self.give_up(i),
            }
        }
    }

    /// Reads at segment `i`'s position: a record, or `None` after skipping
    /// damage (the position moved on).
    fn read_one(&mut self, i: usize) -> io::Result<Option<Spooled>> {
        let seg = &mut self.segs[i];
        if seg.file.is_none() {
            seg.file = Some(self.fs.open_read(&seg.path)?);
        }
        let mut cursor = Cursor {
            window: &mut self.window,
            seg: seg.id,
            file: seg.file.as_mut().expect("opened above"),
            version: seg.version,
            limit: seg.good_len,
        };
        let pos = seg.read_pos;
        let (decoded, end) = match cursor.read(pos)? {
            Step::Record { decoded, end } => (decoded, end),
            Step::Damaged => {
                seg.read_pos = cursor.resync(pos + 1)?.unwrap_or(seg.good_len);
                return Ok(None);
            }
        };
        seg.read_pos = end;
        let index = decoded.index.map_or(seg.passed, u64::from);
        if index < seg.passed || (seg.own.is_some() && index >= seg.records) {
            // Not a record of this segment's sequence (older bytes found by
            // resynchronising): passed over.
            return Ok(None);
        }
        if index >= seg.records {
            // An earlier process's record the count missed (it was damaged
            // when the spool opened, and is whole again).
            self.tally.inherited_unread += index + 1 - seg.records;
            seg.records = index + 1;
        }
        self.tally.lose(seg, seg.passed, index, Cause::Corrupt);
        self.tally.unread_gone(seg, 1);
        seg.passed = index + 1;
        seg.returned += 1;
        seg.last_good_end = end;
        let seq = seg.own.as_ref().and_then(|seqs| seqs.get(index));
        debug_assert!(
            seq.is_none() || seq == decoded.seq,
            "seq on disk and in memory"
        );
        Ok(Some(Spooled {
            seg: seg.id,
            seq,
            rec: decoded.rec,
        }))
    }

    /// Counts the records of an earlier process's segment `i` if that is
    /// not done yet (its index says how many lie before the last good one).
    pub(super) fn count(&mut self, i: usize) {
        let seg = &mut self.segs[i];
        if seg.counted {
            return;
        }
        if seg.file.is_none() {
            match self.fs.open_read(&seg.path) {
                Ok(file) => seg.file = Some(file),
                Err(_) => return,
            }
        }
        let counted = Cursor {
            window: &mut self.window,
            seg: seg.id,
            file: seg.file.as_mut().expect("opened above"),
            version: seg.version,
            limit: seg.good_len,
        }
        .count_records(MAGIC_LEN);
        if let Ok(n) = counted {
            seg.counted = true;
            if n > seg.records {
                self.tally.inherited_unread += n - seg.records;
                seg.records = n;
            }
        }
    }

    /// Segment `i` cannot be read: its unread records are lost.
    fn give_up(&mut self, i: usize) {
        self.count(i);
        let seg = &mut self.segs[i];
        let unread = seg.unread();
        self.tally
            .lose(seg, seg.passed, seg.records, Cause::Corrupt);
        if unread == 0 && seg.own.is_none() && seg.last_good_end < seg.good_len {
            // Unreadable bytes past the last record known: at least one.
            self.tally.losses.corrupt_inherited += 1;
        }
        seg.passed = seg.records;
        seg.read_pos = seg.good_len;
        seg.last_good_end = seg.good_len;
        if self.is_writer(i) {
            self.writing = false;
        }
    }

    /// The reader is past the end of segment `i` (not being written).
    fn finish_segment(&mut self, i: usize) {
        self.count(i);
        let seg = &mut self.segs[i];
        let all_seen = seg.unread() == 0;
        self.tally
            .lose(seg, seg.passed, seg.records, Cause::Corrupt);
        seg.passed = seg.records;
        if seg.own.is_none() && all_seen && seg.last_good_end < seg.good_len {
            // Bytes after the last record: a record cut short, or damage.
            let torn = match seg.file.as_mut() {
                Some(file) => Cursor {
                    window: &mut self.window,
                    seg: seg.id,
                    file,
                    version: seg.version,
                    limit: seg.good_len,
                }
                .tail_is_torn(seg.last_good_end)
                .unwrap_or(false),
                None => false,
            };
            if torn {
                self.tally.losses.torn_inherited += 1;
            } else {
                self.tally.losses.corrupt_inherited += 1;
            }
        }
        seg.read_done = true;
        if !seg.dirty {
            seg.file = None;
        }
        self.window.forget(seg.id);
        self.collect(i);
    }

    /// A record read from segment `seg` was confirmed.
    pub(crate) fn ack(&mut self, seg: SegId) {
        let Ok(i) = self.segs.binary_search_by_key(&seg, |s| s.id) else {
            return;
        };
        let s = &mut self.segs[i];
        if s.acked < s.returned {
            s.acked += 1;
        }
        self.collect(i);
    }

    /// Deletes segment `i` once nothing in it is needed: read through,
    /// everything handed out confirmed. The segment being written goes too
    /// (the next record starts a new one): a finished process must leave no
    /// confirmed record behind. `false`: kept.
    fn collect(&mut self, i: usize) -> bool {
        let seg = &self.segs[i];
        let read_through = if self.is_writer(i) {
            seg.unread() == 0 && seg.read_pos >= seg.good_len
        } else {
            seg.read_done
        };
        if !read_through || seg.acked < seg.returned {
            return false;
        }
        match self.fs.remove(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Kept; tried again at the next sync.
            Err(_) => return false,
        }
        if self.is_writer(i) {
            self.writing = false;
        }
        let seg = self.segs.remove(i).expect("index is valid");
        self.forget(&seg);
        true
    }

    /// Retries the deletion of segments whose deletion failed.
    pub(super) fn collect_all(&mut self) {
        let mut i = 0;
        while i < self.segs.len() {
            if !self.collect(i) {
                i += 1;
            }
        }
    }
}
