//! What the spool keeps in memory about each segment file.

use std::path::PathBuf;

use super::format::{Version, MAGIC_LEN};
use super::SegId;

/// The seqs of this process's records in one segment, in the order they were
/// appended, as runs of consecutive numbers: a segment written during one
/// outage is a single run however many records it holds, and the seq of a
/// record whose bytes were damaged is still known.
#[derive(Debug, Default)]
pub(super) struct SeqRuns {
    runs: Vec<Run>,
    len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    /// Index (in the segment) of the run's first record.
    first_index: u64,
    first_seq: u64,
    len: u64,
}

impl SeqRuns {
    pub(super) fn push(&mut self, seq: u64) {
        match self.runs.last_mut() {
            Some(run) if run.first_seq.checked_add(run.len) == Some(seq) => run.len += 1,
            _ => self.runs.push(Run {
                first_index: self.len,
                first_seq: seq,
                len: 1,
            }),
        }
        self.len += 1;
    }

    /// The seq of the record with this index.
    pub(super) fn get(&self, index: u64) -> Option<u64> {
        let at = self.runs.partition_point(|r| r.first_index <= index);
        let run = self.runs.get(at.checked_sub(1)?)?;
        (index < run.first_index + run.len).then(|| run.first_seq + (index - run.first_index))
    }

    /// Appends to `out` the seqs of the records with indexes `from..to`.
    pub(super) fn extend_into(&self, from: u64, to: u64, out: &mut Vec<u64>) {
        let start = self.runs.partition_point(|r| r.first_index + r.len <= from);
        for run in &self.runs[start..] {
            if run.first_index >= to {
                break;
            }
            let lo = from.max(run.first_index) - run.first_index;
            let hi = to.min(run.first_index + run.len) - run.first_index;
            out.extend((lo..hi).map(|k| run.first_seq + k));
        }
    }
}

/// One segment file and where the spool stands with it.
///
/// Records are numbered by their index in the segment: `passed` of them
/// (the first ones) have been handed out by the reader or counted lost,
/// `records - passed` are unread.
#[derive(Debug)]
pub(super) struct Segment<H> {
    pub(super) id: SegId,
    pub(super) path: PathBuf,
    /// Open while being written, read, or waiting for its fsync.
    pub(super) file: Option<H>,
    pub(super) version: Version,
    /// This process's segment: the seqs of its records. `None`: left by an
    /// earlier process.
    pub(super) own: Option<SeqRuns>,
    /// Bytes of the file on disk (what the byte cap counts).
    pub(super) disk_len: u64,
    /// End of the last record known whole: the reader never reads past it.
    pub(super) good_len: u64,
    /// Records the segment holds: appended (own), or the last good index
    /// plus one (an earlier process's).
    pub(super) records: u64,
    /// `records` is known: false while the segment of an earlier process
    /// could not be read to count them (then only records read count).
    pub(super) counted: bool,
    pub(super) passed: u64,
    /// Where the reader goes on.
    pub(super) read_pos: u64,
    /// End of the last good record the reader saw.
    pub(super) last_good_end: u64,
    /// Records handed out by the reader, and of those, confirmed.
    pub(super) returned: u64,
    pub(super) acked: u64,
    /// The reader is done with it (never set on the segment being written).
    pub(super) read_done: bool,
    /// Written since its last fsync.
    pub(super) dirty: bool,
    /// Records appended since its last successful fsync.
    pub(super) unsynced: u64,
    /// An fsync of it failed: its unsynced records are never counted durable.
    pub(super) suspect: bool,
    /// Created since the directory was last synced.
    pub(super) entry_new: bool,
}

impl<H> Segment<H> {
    /// A new segment of this process, its magic written.
    pub(super) fn own(id: SegId, path: PathBuf, file: H) -> Self {
        Segment {
            file: Some(file),
            own: Some(SeqRuns::default()),
            counted: true,
            dirty: true,
            entry_new: true,
            ..Segment::inherited(id, path, Version::V2, MAGIC_LEN)
        }
    }

    /// A segment an earlier process left, `len` bytes, its records not
    /// counted yet.
    pub(super) fn inherited(id: SegId, path: PathBuf, version: Version, len: u64) -> Self {
        Segment {
            id,
            path,
            file: None,
            version,
            own: None,
            disk_len: len,
            good_len: len,
            records: 0,
            counted: false,
            passed: 0,
            read_pos: MAGIC_LEN,
            last_good_end: MAGIC_LEN,
            returned: 0,
            acked: 0,
            read_done: false,
            dirty: false,
            unsynced: 0,
            suspect: false,
            entry_new: false,
        }
    }

    pub(super) fn unread(&self) -> u64 {
        self.records - self.passed
    }
}
