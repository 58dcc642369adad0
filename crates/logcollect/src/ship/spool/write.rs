//! Writing: appending records (one write each, undone on failure), keeping
//! the byte cap, and making what was written durable.

use std::io;

use super::format::{self, MAGIC_LEN, MAGIC_V2};
use super::segment::Segment;
use super::{segment_path, Cause, Spool, SpoolError, SpoolErrorKind, SpoolFile, SpoolFs};
use crate::encode::Encoded;

impl<F: SpoolFs> Spool<F> {
    /// Appends one record in one write, without fsync. On error nothing of
    /// it can be read back and earlier records are intact; the caller keeps
    /// the record.
    pub(crate) fn append(&mut self, seq: u64, rec: &Encoded) -> Result<(), SpoolError> {
        let len = match format::encoded_len(rec) {
            Some(len) if len + MAGIC_LEN <= self.max_bytes => len,
            _ => {
                return Err(SpoolError::new(
                    SpoolErrorKind::TooLarge,
                    format!(
                        "a record of {} bytes does not fit in the spool's byte cap of {} bytes: \
                         it is not written to disk; raise spool_max_bytes or lower max_record_bytes",
                        rec.body.len(),
                        self.max_bytes
                    ),
                ))
            }
        };
        self.make_room(len)?;
        if self.needs_new_segment(len) {
            self.start_segment()?;
        }
        let seg = self.segs.back_mut().expect("a segment takes appends");
        let file = seg
            .file
            .as_mut()
            .expect("the segment being written is open");
        format::encode(&mut self.scratch, seg.records as u32, seq, rec);
        match file.write_all(&self.scratch) {
            Ok(()) => {
                seg.good_len += len;
                seg.disk_len += len;
                seg.records += 1;
                seg.own
                    .as_mut()
                    .expect("written segments are own")
                    .push(seq);
                seg.dirty = true;
                seg.unsynced += 1;
                self.bytes += len;
                self.tally.own_unread += 1;
                Ok(())
            }
            Err(e) => Err(self.undo_write(len, e)),
        }
    }

    /// A write failed after writing who knows how much: cut the segment
    /// back to its last good length, or, when even that fails, seal it.
    fn undo_write(&mut self, len: u64, e: io::Error) -> SpoolError {
        let seg = self.segs.back_mut().expect("a segment takes appends");
        let file = seg
            .file
            .as_mut()
            .expect("the segment being written is open");
        seg.dirty = true;
        let what = format!("cannot write to spool segment {}", seg.path.display());
        if file.set_len(seg.good_len).is_err() {
            // Never append after bytes of unknown state: the reader stops
            // at `good_len`, and a new segment takes the next record.
            let on_disk = file.len().unwrap_or(seg.good_len + len);
            self.bytes = self.bytes - seg.disk_len + on_disk;
            seg.disk_len = on_disk;
            self.writing = false;
        }
        SpoolError::io(what, e)
    }

    /// Whether the next record of `len` bytes needs a new segment.
    fn needs_new_segment(&self, len: u64) -> bool {
        match self.writer() {
            None => true,
            Some(w) => {
                w.records > 0
                    && (w.good_len + len > self.segment_bytes || w.records >= u64::from(u32::MAX))
            }
        }
    }

    /// Drops the oldest segments until a record of `len` bytes fits under
    /// the cap.
    fn make_room(&mut self, len: u64) -> Result<(), SpoolError> {
        loop {
            let magic = if self.needs_new_segment(len) {
                MAGIC_LEN
            } else {
                0
            };
            if self.bytes + len + magic <= self.max_bytes || self.segs.is_empty() {
                return Ok(());
            }
            if self.segs.len() == 1 {
                // The segment being written is also the oldest.
                self.writing = false;
            }
            self.drop_oldest()?;
        }
    }

    /// Deletes the oldest segment to stay under the cap; its unread records
    /// are lost (those handed out are not: the caller holds them).
    pub(super) fn drop_oldest(&mut self) -> Result<(), SpoolError> {
        self.count(0);
        let seg = self.segs.front().expect("a segment to drop");
        match self.fs.remove(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SpoolError::io(
                    format!(
                        "cannot delete the oldest spool segment {} to stay under spool_max_bytes",
                        seg.path.display()
                    ),
                    e,
                ))
            }
        }
        let seg = self.segs.pop_front().expect("a segment to drop");
        self.tally.lose(&seg, seg.passed, seg.records, Cause::Cap);
        self.forget(&seg);
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        self.writing = false;
        let id = self.next_id;
        self.next_id += 1;
        let path = segment_path(&self.dir, id);
        let mut file = self.fs.create_new(&path).map_err(|e| {
            SpoolError::io(format!("cannot create spool segment {}", path.display()), e)
        })?;
        self.dir_dirty = true;
        if let Err(e) = file.write_all(&MAGIC_V2) {
            let error = SpoolError::io(format!("cannot write to {}", path.display()), e);
            if self.fs.remove(&path).is_err() {
                // Left as an empty segment, deleted when the reader passes.
                let on_disk = file.len().unwrap_or(MAGIC_LEN);
                let mut seg = Segment::own(id, path, file);
                seg.disk_len = on_disk;
                self.bytes += on_disk;
                self.segs.push_back(seg);
            }
            return Err(error);
        }
        self.segs.push_back(Segment::own(id, path, file));
        self.bytes += MAGIC_LEN;
        self.writing = true;
        Ok(())
    }

    /// Makes everything appended so far durable: one fsync per written
    /// file, then the directory's. On error nothing new counts as synced.
    /// Appends alone are never durable: call this at shutdown too.
    pub(crate) fn sync(&mut self) -> Result<(), SpoolError> {
        let mut failure: Option<SpoolError> = None;
        let writer = self.writer().map(|w| w.id);
        for seg in self.segs.iter_mut() {
            if !seg.dirty {
                continue;
            }
            let Some(file) = seg.file.as_mut() else {
                continue;
            };
            let result = file.sync_data();
            // Never fsync this file again after a failure: the kernel may
            // have dropped the pages and would call the next fsync a success.
            seg.dirty = false;
            if let Err(e) = result {
                seg.suspect = true;
                if Some(seg.id) == writer {
                    self.writing = false;
                }
                failure.get_or_insert_with(|| {
                    SpoolError::io(
                        format!(
                            "cannot fsync {} (what was written to it since is not known to be \
                             on disk; new records go to a new segment)",
                            seg.path.display()
                        ),
                        e,
                    )
                });
            }
        }
        self.collect_all();
        if self.dir_dirty {
            match self.fs.sync_dir(&self.dir) {
                Ok(()) => {
                    self.dir_dirty = false;
                    self.segs.iter_mut().for_each(|s| s.entry_new = false);
                }
                Err(e) => {
                    // New segments may vanish in a crash: never claim them,
                    // never write to them again.
                    let writer = self.writer().map(|w| w.id);
                    for seg in self.segs.iter_mut().filter(|s| s.entry_new) {
                        seg.suspect = true;
                        if Some(seg.id) == writer {
                            self.writing = false;
                        }
                    }
                    failure.get_or_insert_with(|| {
                        SpoolError::io(
                            format!("cannot fsync the spool directory {}", self.dir.display()),
                            e,
                        )
                    });
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for seg in self.segs.iter_mut().filter(|s| !s.suspect) {
            self.tally.synced_own += seg.unsynced;
            seg.unsynced = 0;
        }
        self.close_idle_files();
        Ok(())
    }

    /// Closes the files of segments nobody writes, reads or fsyncs now, so
    /// a large spool does not hold a descriptor per segment.
    fn close_idle_files(&mut self) {
        let reading = self.segs.iter().position(|s| !s.read_done);
        let writer = self.writing.then(|| self.segs.len() - 1);
        for (i, seg) in self.segs.iter_mut().enumerate() {
            if !seg.dirty && Some(i) != reading && Some(i) != writer {
                seg.file = None;
            }
        }
    }
}
