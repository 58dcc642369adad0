//! The disk spool: records the broker cannot take yet, kept in segment files
//! until the broker confirms them.
//!
//! ## Format (version 1)
//!
//! A spool directory holds a lock file `LOCK` (one process at a time) and
//! segment files `seg-<20-digit number>.lcs`, replayed in number order. A
//! segment starts with the 8-byte magic `LCSPOOL1`, then records:
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 (IEEE) of the payload
//! payload: u8 routing-key length, routing key (UTF-8), 16-byte record id, body
//! ```
//!
//! A segment is deleted whole once every record in it has been read and
//! confirmed by the broker. A torn or corrupt record (a crash in the middle of
//! a write, a bad disk) ends the reading of that segment: it is counted
//! (`spool_corrupt`) and never fatal. Over the byte cap the oldest segment is
//! deleted and its unread records counted as `spool_dropped`. A crash may
//! replay a record twice (same `record_id`), never lose one that was written
//! and synced.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Counters;
use crate::encode::Encoded;

const MAGIC: &[u8; 8] = b"LCSPOOL1";
/// A new segment starts past this size, so confirmed data is freed in steps
/// of at most this much.
pub(crate) const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// No valid record is larger (the record cap is at most 128 MiB).
const MAX_PAYLOAD: u32 = 129 * 1024 * 1024;

/// Identifies the segment a record was read from, to acknowledge it.
pub(crate) type SegId = u64;

#[derive(Debug)]
struct Segment {
    id: SegId,
    path: PathBuf,
    bytes: u64,
    /// Records handed out for publishing.
    read: u64,
    /// Of those, confirmed.
    acked: u64,
    /// Reading reached the end (only meaningful once the writer moved on).
    exhausted: bool,
}

#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    _lock: File,
    segments: VecDeque<Segment>,
    writer: Option<(SegId, File)>,
    reader: Option<(SegId, File)>,
    next_id: SegId,
    total_bytes: u64,
    /// Records written and not yet read (exact while the process lives).
    unread: u64,
    dirty: bool,
    counters: Arc<Counters>,
    scratch: Vec<u8>,
}

fn seg_path(dir: &Path, id: SegId) -> PathBuf {
    dir.join(format!("seg-{id:020}.lcs"))
}

impl Spool {
    /// Opens (creating) `dir`, takes its lock, and finds the segments a
    /// previous process left, all to be replayed.
    pub(crate) fn open(dir: &Path, max_bytes: u64, counters: Arc<Counters>) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "spool directory {} is in use by another process",
                        dir.display()
                    ),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut ids: Vec<SegId> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".lcs")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut segments = VecDeque::new();
        let mut total = 0;
        let mut unread = 0;
        for id in ids {
            let path = seg_path(dir, id);
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            total += bytes;
            // One pass over what a previous process left: the count of
            // unread records stays exact (bounded by the byte cap), and a
            // torn tail (a crash mid-write) is found and counted here.
            let (n, corrupt) = scan(&path);
            unread += n;
            if corrupt {
                counters.spool_corrupt.fetch_add(1, Ordering::Relaxed);
            }
            segments.push_back(Segment {
                id,
                path,
                bytes,
                read: 0,
                acked: 0,
                exhausted: false,
            });
        }
        let next_id = segments.back().map_or(1, |s| s.id + 1);
        let spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            _lock: lock,
            segments,
            writer: None,
            reader: None,
            next_id,
            total_bytes: total,
            unread,
            dirty: false,
            counters,
            scratch: Vec::new(),
        };
        spool.publish_gauges();
        Ok(spool)
    }

    /// Records waiting to be read.
    pub(crate) fn unread(&self) -> u64 {
        self.unread
    }

    /// Whether records wait to be read.
    pub(crate) fn has_unread(&self) -> bool {
        self.unread > 0
    }

    fn publish_gauges(&self) {
        self.counters
            .spool_bytes
            .store(self.total_bytes, Ordering::Relaxed);
    }

    /// Appends one record (one `write` call, so a reader sees whole records).
    pub(crate) fn append(&mut self, rec: &Encoded) -> io::Result<()> {
        let rk = rec.routing_key.as_bytes();
        let rk_len = rk.len().min(255);
        let payload_len = 1 + rk_len + 16 + rec.body.len();
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.push(rk_len as u8);
        buf.extend_from_slice(&rk[..rk_len]);
        buf.extend_from_slice(rec.id.as_bytes());
        buf.extend_from_slice(&rec.body);
        let crc = crc32fast::hash(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let need_new = match &self.writer {
            None => true,
            Some((id, _)) => self.segments.iter().find(|s| s.id == *id).is_none_or(|s| {
                s.bytes + buf.len() as u64 > SEGMENT_BYTES && s.bytes > MAGIC.len() as u64
            }),
        };
        if need_new {
            self.rotate()?;
        }
        let result = match &mut self.writer {
            Some((id, file)) => {
                let id = *id;
                file.write_all(&buf).map(|()| id)
            }
            None => Err(io::Error::other("no spool segment open")),
        };
        let written = buf.len() as u64;
        self.scratch = buf;
        let id = result?;
        if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
            seg.bytes += written;
        }
        self.total_bytes += written;
        self.unread += 1;
        self.dirty = true;
        self.counters.spooled.fetch_add(1, Ordering::Relaxed);
        self.enforce_cap();
        self.publish_gauges();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync();
        let id = self.next_id;
        self.next_id += 1;
        let path = seg_path(&self.dir, id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        file.write_all(MAGIC)?;
        self.segments.push_back(Segment {
            id,
            path,
            bytes: MAGIC.len() as u64,
            read: 0,
            acked: 0,
            exhausted: false,
        });
        self.total_bytes += MAGIC.len() as u64;
        self.writer = Some((id, file));
        // The directory entry must survive a crash too.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&mut self) {
        if self.dirty {
            if let Some((_, f)) = &self.writer {
                let _ = f.sync_data();
            }
            self.dirty = false;
        }
    }

    /// Deletes the oldest segments while over the byte cap (never the one
    /// being written, so the newest records are kept).
    fn enforce_cap(&mut self) {
        while self.total_bytes > self.max_bytes && self.segments.len() > 1 {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            if self.reader.as_ref().is_some_and(|(id, _)| *id == old.id) {
                // Count what was not read yet in this segment.
                let lost = self.count_remaining_in_reader();
                self.reader = None;
                self.drop_unread(lost);
            } else if !old.exhausted {
                let lost = count_records(&old.path);
                self.drop_unread(lost);
            }
            let _ = fs::remove_file(&old.path);
            self.total_bytes = self.total_bytes.saturating_sub(old.bytes);
        }
    }

    fn drop_unread(&mut self, n: u64) {
        self.unread = self.unread.saturating_sub(n);
        self.counters.spool_dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn count_remaining_in_reader(&mut self) -> u64 {
        let Some((_, f)) = &mut self.reader else {
            return 0;
        };
        let mut n = 0;
        while let Ok(Some(_)) = read_record(f) {
            n += 1;
        }
        n
    }

    /// The next unread record, oldest first, with the segment to acknowledge.
    pub(crate) fn next(&mut self) -> Option<(SegId, Encoded)> {
        loop {
            if self.reader.is_none() {
                let seg = self.segments.iter().find(|s| !s.exhausted)?;
                let id = seg.id;
                match open_for_read(&seg.path) {
                    Ok(f) => self.reader = Some((id, f)),
                    Err(_) => {
                        self.counters.spool_corrupt.fetch_add(1, Ordering::Relaxed);
                        self.mark_exhausted(id);
                        continue;
                    }
                }
            }
            let (id, file) = self.reader.as_mut()?;
            let id = *id;
            let writing_here = self.writer.as_ref().is_some_and(|(w, _)| *w == id);
            match read_record(file) {
                Ok(Some(rec)) => {
                    if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
                        seg.read += 1;
                    }
                    self.unread = self.unread.saturating_sub(1);
                    if self.unread == 0 {
                        self.caught_up();
                    }
                    return Some((id, rec));
                }
                Ok(None) if writing_here => {
                    self.caught_up();
                    return None;
                }
                Ok(None) => {}
                Err(_) => {
                    // Torn tail or corruption: skip the rest of this segment.
                    self.counters.spool_corrupt.fetch_add(1, Ordering::Relaxed);
                    if writing_here {
                        // Never append after garbage: start a new segment.
                        self.writer = None;
                    }
                }
            }
            self.reader = None;
            self.mark_exhausted(id);
        }
    }

    /// Everything written has been read: seal the segment being written and
    /// mark every segment read, so each is deleted as soon as its records
    /// are confirmed; the next append starts a new segment.
    fn caught_up(&mut self) {
        self.sync();
        self.writer = None;
        self.reader = None;
        self.unread = 0;
        let ids: Vec<SegId> = self.segments.iter().map(|s| s.id).collect();
        for id in ids {
            self.mark_exhausted(id);
        }
    }

    fn mark_exhausted(&mut self, id: SegId) {
        if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
            seg.exhausted = true;
        }
        if self.segments.iter().all(|s| s.exhausted) {
            // Corrupt tails may have hidden records we counted at open.
            self.unread = 0;
        }
        self.collect(id);
    }

    /// A record read from segment `id` was confirmed.
    pub(crate) fn ack(&mut self, id: SegId) {
        if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
            seg.acked += 1;
        }
        self.collect(id);
    }

    /// Deletes segment `id` when it is fully read, confirmed, and not being written.
    fn collect(&mut self, id: SegId) {
        let writing = self.writer.as_ref().is_some_and(|(w, _)| *w == id);
        let Some(pos) = self.segments.iter().position(|s| s.id == id) else {
            return;
        };
        let seg = &self.segments[pos];
        if writing || !seg.exhausted || seg.acked < seg.read {
            return;
        }
        let seg = self.segments.remove(pos).expect("position is valid");
        let _ = fs::remove_file(&seg.path);
        self.total_bytes = self.total_bytes.saturating_sub(seg.bytes);
        self.publish_gauges();
    }
}

fn open_for_read(path: &Path) -> io::Result<File> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a logcollect spool segment",
        ));
    }
    Ok(f)
}

/// Records readable in a segment, and whether a torn or corrupt record (or
/// a bad header) ends it early.
fn scan(path: &Path) -> (u64, bool) {
    let Ok(mut f) = open_for_read(path) else {
        return (0, true);
    };
    let mut n = 0;
    loop {
        match read_record(&mut f) {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, false),
            Err(_) => return (n, true),
        }
    }
}

fn count_records(path: &Path) -> u64 {
    scan(path).0
}

/// Reads one record. `Ok(None)`: clean end (or a partial header still being
/// written). `Err`: a torn or corrupt record; the file position is restored
/// so a record still being written can be read later.
fn read_record(f: &mut File) -> io::Result<Option<Encoded>> {
    let start = f.stream_position()?;
    let mut header = [0u8; 8];
    let n = read_full(f, &mut header)?;
    if n == 0 {
        return Ok(None);
    }
    if n < 8 {
        f.seek(SeekFrom::Start(start))?;
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "torn record header",
        ));
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if !(17..=MAX_PAYLOAD).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad record length",
        ));
    }
    let mut payload = vec![0u8; len as usize];
    if read_full(f, &mut payload)? < payload.len() {
        f.seek(SeekFrom::Start(start))?;
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "torn record"));
    }
    if crc32fast::hash(&payload) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "record CRC mismatch",
        ));
    }
    let rk_len = payload[0] as usize;
    if payload.len() < 1 + rk_len + 16 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short record"));
    }
    let routing_key = String::from_utf8(payload[1..1 + rk_len].to_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "routing key not UTF-8"))?;
    let id_bytes: [u8; 16] = payload[1 + rk_len..17 + rk_len]
        .try_into()
        .expect("16 bytes");
    let body = payload[17 + rk_len..].to_vec();
    Ok(Some(Encoded {
        id: uuid::Uuid::from_bytes(id_bytes),
        routing_key,
        body,
        truncated: false,
    }))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests;
