//! The disk spool: records the broker cannot take yet, kept in segment files
//! until the broker confirms them, replayed in order by this process or the
//! next one.
//!
//! A spool directory holds a lock file `LOCK` (one process at a time) and
//! segment files `seg-<20-digit number>.lcs`, read in number order (the
//! record format is in `format.rs`). What it promises:
//!
//! - **Private**: the directory is 0700 and files 0600; a directory owned by
//!   another user, or a symbolic link where a spool file should be, is
//!   refused at [`Spool::open`] (see `open.rs`).
//! - **A failed write damages nothing**: a partial write is cut back
//!   (`set_len`); when that fails too, the segment is sealed and writing goes
//!   on in a new one. The failed record is never read back by this process
//!   (after a crash, a later one may find it whole or torn).
//! - **Damage is skipped and counted**: the reader resumes at the next good
//!   record; lost records of this process are reported by seq, an earlier
//!   process's by count ([`SpoolLosses`]).
//! - **The byte cap holds whatever its size**: segments are an eighth of the
//!   cap (16 KiB to 8 MiB, at most half the cap), and the oldest segments go, their unread records
//!   counted, before a record would pass the cap. Records already handed out
//!   are not lost when their segment goes: the caller holds them.
//! - **Appends never fsync**; [`Spool::sync`] fsyncs each written file once
//!   and the directory after segments came or went. A failed fsync is never
//!   counted as synced, and the segment it failed on is sealed: Linux may
//!   have dropped its unwritten pages and would report the next fsync as a
//!   success, so nothing written to it before the failure is ever claimed
//!   durable. Its records stay readable while this process lives (they come
//!   from the page cache, and the CRC rejects anything the kernel lost).
//! - **Counters are exact**: every record appended is handed out once, or
//!   reported lost with its cause, or still unread ([`Spool::own_unread`]).
//!
//! A crash may replay a record whose segment was deleted but whose deletion
//! was not synced yet (at-least-once, same record id).

mod error;
mod format;
mod fs;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(not(test), allow(dead_code, unreachable_pub))]
mod memfs;
mod open;
mod reader;
mod segment;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use error::{SpoolError, SpoolErrorKind};
use format::{MAGIC_LEN, MAGIC_V2};
pub(crate) use fs::{OsFs, SpoolFile, SpoolFs};
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(not(test), allow(unused_imports))]
pub(crate) use memfs::{Fault, MemFs};
use reader::{Cursor, Step, Window};
use segment::Segment;

use crate::encode::Encoded;

/// Identifies the segment a record was read from, to acknowledge it.
pub(crate) type SegId = u64;

/// Segments grow to this share of the byte cap, so dropping the oldest
/// frees at most an eighth of the spool at once and the cap holds with
/// about eight files.
const SEGMENTS_PER_CAP: u64 = 8;
/// A floor, so a small cap is not spread over files of a few records.
const MIN_SEGMENT: u64 = 16 << 10;
/// A ceiling, so confirmed data is freed in steps of at most this much.
const MAX_SEGMENT: u64 = 8 << 20;

/// How long a segment grows under a cap of `max_bytes`: never more than half
/// the cap, so dropping the oldest segment never empties the spool.
fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / SEGMENTS_PER_CAP)
        .clamp(MIN_SEGMENT, MAX_SEGMENT)
        .min(max_bytes / 2)
}

/// A record read back from the spool.
#[derive(Debug)]
pub(crate) struct Spooled {
    /// Acknowledge it with [`Spool::ack`] once confirmed.
    pub(crate) seg: SegId,
    /// The seq given to [`Spool::append`] for this process's records;
    /// `None` for records an earlier process left.
    #[cfg_attr(not(test), allow(dead_code))] // read by the v2 driver (issue 11)
    pub(crate) seq: Option<u64>,
    pub(crate) rec: Encoded,
}

/// Records the spool lost, by cause, since the last [`Spool::take_losses`]:
/// this process's by seq, an earlier process's by count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SpoolLosses {
    /// Unread records deleted to stay under the byte cap.
    pub(crate) cap_own: Vec<u64>,
    pub(crate) cap_inherited: u64,
    /// Records whose bytes were damaged or could not be read.
    pub(crate) corrupt_own: Vec<u64>,
    /// An earlier process's damaged records: exact where later records of
    /// the same segment survive (their index says how many are missing),
    /// one for damage at the end of a segment (how many records it held is
    /// unknown).
    pub(crate) corrupt_inherited: u64,
    /// Segments an earlier process left ending in one record cut short: it
    /// stopped in the middle of a write, so that record was never synced
    /// (never promised durable) — or its write had failed and was retried.
    pub(crate) torn_inherited: u64,
}

impl SpoolLosses {
    pub(crate) fn is_empty(&self) -> bool {
        *self == SpoolLosses::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Cause {
    Cap,
    Corrupt,
}

/// The spool's counts, kept apart from the segments so both can be borrowed.
#[derive(Debug, Default)]
struct Tally {
    own_unread: u64,
    inherited_unread: u64,
    synced_own: u64,
    losses: SpoolLosses,
}

impl Tally {
    /// Records `from..to` of `seg` are lost.
    fn lose<H>(&mut self, seg: &Segment<H>, from: u64, to: u64, cause: Cause) {
        if to <= from {
            return;
        }
        let n = to - from;
        match (&seg.own, cause) {
            (Some(seqs), Cause::Cap) => seqs.extend_into(from, to, &mut self.losses.cap_own),
            (Some(seqs), Cause::Corrupt) => {
                seqs.extend_into(from, to, &mut self.losses.corrupt_own);
            }
            (None, Cause::Cap) => self.losses.cap_inherited += n,
            (None, Cause::Corrupt) => self.losses.corrupt_inherited += n,
        }
        self.unread_gone(seg, n);
    }

    /// `n` unread records of `seg` were handed out or lost.
    fn unread_gone<H>(&mut self, seg: &Segment<H>, n: u64) {
        let count = if seg.own.is_some() {
            &mut self.own_unread
        } else {
            &mut self.inherited_unread
        };
        *count -= n;
    }
}

/// The disk spool over a file layer `F` ([`OsFs`] in production).
#[derive(Debug)]
pub(crate) struct Spool<F: SpoolFs> {
    fs: F,
    dir: PathBuf,
    max_bytes: u64,
    /// A segment takes no more records once this long.
    segment_bytes: u64,
    _lock: F::Lock,
    /// Oldest first; ids increase.
    segs: VecDeque<Segment<F::File>>,
    /// The newest segment takes appends.
    writing: bool,
    next_id: SegId,
    /// Bytes of all segment files.
    bytes: u64,
    /// Segments came or went since the directory was last synced.
    dir_dirty: bool,
    tally: Tally,
    /// One record's bytes, reused: appends allocate nothing.
    scratch: Vec<u8>,
    window: Window,
}

fn segment_path(dir: &Path, id: SegId) -> PathBuf {
    dir.join(format!("seg-{id:020}.lcs"))
}

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

    fn writer(&self) -> Option<&Segment<F::File>> {
        if self.writing {
            self.segs.back()
        } else {
            None
        }
    }

    fn is_writer(&self, i: usize) -> bool {
        self.writing && i + 1 == self.segs.len()
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
    fn drop_oldest(&mut self) -> Result<(), SpoolError> {
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

    /// Accounts for a segment file that is gone.
    fn forget(&mut self, seg: &Segment<F::File>) {
        self.bytes -= seg.disk_len;
        self.dir_dirty = true;
        self.window.forget(seg.id);
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

    /// This process's records made durable by a successful [`sync`](Self::sync),
    /// in all (records handed out and confirmed before any sync never were).
    pub(crate) fn synced_own(&self) -> u64 {
        self.tally.synced_own
    }

    /// This process's unread records not known durable: appended since the
    /// last successful sync, or in a segment whose fsync failed. A crash
    /// may lose them.
    #[cfg_attr(not(test), allow(dead_code))] // read by the v2 driver (issue 11)
    pub(crate) fn own_unread_not_durable(&self) -> u64 {
        self.segs
            .iter()
            .filter(|s| s.own.is_some())
            .map(|s| s.unread().min(s.unsynced))
            .sum()
    }

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
    fn count(&mut self, i: usize) {
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
    fn collect_all(&mut self) {
        let mut i = 0;
        while i < self.segs.len() {
            if !self.collect(i) {
                i += 1;
            }
        }
    }

    /// What was lost since the last call.
    pub(crate) fn take_losses(&mut self) -> SpoolLosses {
        std::mem::take(&mut self.tally.losses)
    }

    /// This process's records appended and neither handed out nor lost.
    pub(crate) fn own_unread(&self) -> u64 {
        self.tally.own_unread
    }

    /// An earlier process's records neither handed out nor lost yet.
    pub(crate) fn inherited_unread(&self) -> u64 {
        self.tally.inherited_unread
    }

    /// Bytes of the spool's segment files on disk now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(all(test, unix))]
mod os_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
