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

mod cursor;
mod error;
mod format;
mod fs;
#[cfg(test)]
mod memfs;
mod open;
mod read;
mod segment;
mod write;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use cursor::Window;
pub(crate) use error::{SpoolError, SpoolErrorKind};
pub(crate) use fs::{OsFs, SpoolFile, SpoolFs};
#[cfg(test)]
pub(crate) use memfs::{Fault, MemFs};
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

    /// Accounts for a segment file that is gone.
    fn forget(&mut self, seg: &Segment<F::File>) {
        self.bytes -= seg.disk_len;
        self.dir_dirty = true;
        self.window.forget(seg.id);
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
