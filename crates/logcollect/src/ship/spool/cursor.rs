//! Reading segments: one record at a position, the next good record after
//! damage, and the number of records a segment an earlier process left
//! holds. Reads are positional and large, through one reused buffer.

use std::io;

use super::format::{self, Decoded, Version};
use super::fs::SpoolFile;
use super::SegId;

/// Bytes read at once: most records are a few hundred bytes, so one read
/// serves hundreds of them, and the buffer stays small.
const CHUNK: usize = 64 * 1024;
/// The buffer is given back after a large record once it is this big.
const KEEP: usize = 4 * CHUNK;

/// A window on one segment's bytes: `buf` holds the bytes from `start`.
#[derive(Debug, Default)]
pub(super) struct Window {
    seg: Option<SegId>,
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    /// Drops what the window holds of `seg` (deleted, or rewritten).
    pub(super) fn forget(&mut self, seg: SegId) {
        if self.seg == Some(seg) {
            self.seg = None;
            self.buf.clear();
        }
    }

    /// Bytes `[pos, pos + n)` of segment `seg`, never reading past `limit`
    /// (the caller keeps `pos + n <= limit`).
    fn get<H: SpoolFile>(
        &mut self,
        seg: SegId,
        file: &mut H,
        pos: u64,
        n: usize,
        limit: u64,
    ) -> io::Result<&[u8]> {
        let end = pos + n as u64;
        let held = self.start + self.buf.len() as u64;
        if self.seg != Some(seg) || pos < self.start || end > held {
            if n <= CHUNK && self.buf.capacity() > KEEP {
                self.buf = Vec::new();
            }
            let want = (n.max(CHUNK) as u64).min(limit - pos) as usize;
            self.seg = None;
            self.buf.clear();
            self.buf.resize(want, 0);
            let mut got = 0;
            while got < want {
                match file.read_at(&mut self.buf[got..], pos + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.clear();
                        return Err(e);
                    }
                }
            }
            self.buf.truncate(got);
            self.seg = Some(seg);
            self.start = pos;
            if got < n {
                // The file is shorter than the spool knows it to be.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "spool segment shorter than expected",
                ));
            }
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + n])
    }
}

/// One segment being read: its file, format and readable extent.
pub(super) struct Cursor<'a, H> {
    pub(super) window: &'a mut Window,
    pub(super) seg: SegId,
    pub(super) file: &'a mut H,
    pub(super) version: Version,
    /// Nothing at or past this offset is read.
    pub(super) limit: u64,
}

/// What is at a position.
#[derive(Debug)]
pub(super) enum Step {
    /// A good record, which ends at `end`.
    Record { decoded: Decoded, end: u64 },
    /// Bytes that do not make a good record.
    Damaged,
}

impl<H: SpoolFile> Cursor<'_, H> {
    /// The length of the good record at `pos`, if there is one.
    fn good_len_at(&mut self, pos: u64) -> io::Result<Option<usize>> {
        let header = self.version.header_len();
        if self.limit.saturating_sub(pos) < header as u64 {
            return Ok(None);
        }
        let h = self
            .window
            .get(self.seg, self.file, pos, header, self.limit)?;
        let Some(len) = self.version.record_len(h) else {
            return Ok(None);
        };
        if pos + len as u64 > self.limit {
            return Ok(None);
        }
        let rec = self.window.get(self.seg, self.file, pos, len, self.limit)?;
        Ok(self.version.check(rec).then_some(len))
    }

    /// The record at `pos`.
    pub(super) fn read(&mut self, pos: u64) -> io::Result<Step> {
        let Some(len) = self.good_len_at(pos)? else {
            return Ok(Step::Damaged);
        };
        let rec = self.window.get(self.seg, self.file, pos, len, self.limit)?;
        Ok(match self.version.decode(rec) {
            Some(decoded) => Step::Record {
                decoded,
                end: pos + len as u64,
            },
            None => Step::Damaged,
        })
    }

    /// Where the next good record starts at or after `from` (version 2:
    /// the next marker whose length and CRC check out).
    pub(super) fn resync(&mut self, from: u64) -> io::Result<Option<u64>> {
        if self.version == Version::V1 {
            return Ok(None);
        }
        let mut at = from;
        while self.limit.saturating_sub(at) >= format::MARKER.len() as u64 {
            let n = (self.limit - at).min(CHUNK as u64) as usize;
            let chunk = self.window.get(self.seg, self.file, at, n, self.limit)?;
            match format::find_marker(chunk) {
                Some(i) => {
                    let candidate = at + i as u64;
                    if self.good_len_at(candidate)?.is_some() {
                        return Ok(Some(candidate));
                    }
                    at = candidate + 1;
                }
                // A marker may straddle the chunk's end: look again from
                // its last three bytes.
                None => at += (n - (format::MARKER.len() - 1)) as u64,
            }
        }
        Ok(None)
    }

    /// Whether the bytes from `from` to the limit are one record cut short.
    pub(super) fn tail_is_torn(&mut self, from: u64) -> io::Result<bool> {
        let remaining = self.limit - from;
        let n = remaining.min(self.version.header_len() as u64) as usize;
        let head = self.window.get(self.seg, self.file, from, n, self.limit)?;
        Ok(self.version.is_torn(head, remaining))
    }

    /// How many records the segment holds: the index of its last good record
    /// plus one (version 2, looking back from the end), or the good records
    /// before any damage (version 1, reading it all).
    pub(super) fn count_records(&mut self, first: u64) -> io::Result<u64> {
        if self.limit <= first {
            return Ok(0);
        }
        match self.version {
            Version::V1 => {
                let mut n = 0;
                let mut pos = first;
                while let Some(len) = self.good_len_at(pos)? {
                    n += 1;
                    pos += len as u64;
                }
                Ok(n)
            }
            Version::V2 => self
                .last_index(first)
                .map(|i| i.map_or(0, |i| u64::from(i) + 1)),
        }
    }

    /// The index of the last good record, searching back from the end in
    /// doubling spans (a record's start lies in the span, so the span holds
    /// all of it): a few reads for a normal segment.
    fn last_index(&mut self, first: u64) -> io::Result<Option<u32>> {
        let mut span = CHUNK as u64;
        loop {
            let start = self.limit.saturating_sub(span).max(first);
            let n = (self.limit - start) as usize;
            // A copy: checking a candidate moves the window.
            let bytes = self
                .window
                .get(self.seg, self.file, start, n, self.limit)?
                .to_vec();
            let mut before = n;
            while let Some(i) = format::rfind_marker(&bytes, before) {
                let candidate = start + i as u64;
                if let Some(len) = self.good_len_at(candidate)? {
                    let rec = self
                        .window
                        .get(self.seg, self.file, candidate, len, self.limit)?;
                    return Ok(self.version.index(rec));
                }
                if i == 0 {
                    break;
                }
                before = i - 1;
            }
            if start == first {
                return Ok(None);
            }
            span *= 2;
        }
    }
}
