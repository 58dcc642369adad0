//! Opening a spool at boot: the directory is checked (ours, private, no
//! symbolic links), locked, and what an earlier process left is counted.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use super::cursor::Window;
use super::format::{Version, MAGIC_LEN};
use super::fs::{Kind, Meta, SpoolFile, SpoolFs};
use super::segment::Segment;
use super::{segment_bytes, segment_path, SegId, Spool, SpoolError, SpoolErrorKind, Tally};

const LOCK: &str = "LOCK";
/// Only the owner may list, read or write the spool: records hold logs.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

impl<F: SpoolFs> Spool<F> {
    /// Opens (creating, 0700) the spool at `dir`, holding at most
    /// `max_bytes` of segments: checks the directory is ours and private,
    /// takes its lock, and counts what an earlier process left (all of it
    /// inherited, read first). Refuses a directory of another user, or a
    /// symbolic link where the lock or a segment should be.
    pub(crate) fn open(fs: F, dir: &Path, max_bytes: u64) -> Result<Spool<F>, SpoolError> {
        let uid = fs.current_uid();
        prepare_dir(&fs, dir, uid)?;
        let lock_path = dir.join(LOCK);
        check_file(&fs, &lock_path, uid)?;
        let lock = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                SpoolError::new(
                    SpoolErrorKind::InUse,
                    format!(
                        "the spool directory {} is in use by another process (it holds {}); \
                         give each process its own spool_dir",
                        dir.display(),
                        lock_path.display()
                    ),
                )
            } else {
                SpoolError::io(format!("cannot lock {}", lock_path.display()), e)
            }
        })?;
        // A lock file created just now is 0600 already; an older one is fixed.
        check_file(&fs, &lock_path, uid)?;
        let names = fs
            .list(dir)
            .map_err(|e| SpoolError::io(format!("cannot list {}", dir.display()), e))?;
        let mut ids: Vec<SegId> = names
            .iter()
            .filter_map(|n| parse_segment_name(n.to_str()?))
            .collect();
        ids.sort_unstable();
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let path = segment_path(dir, id);
            if let Some(meta) = check_file(&fs, &path, uid)? {
                found.push((id, meta.len));
            }
        }
        let mut spool = Spool {
            fs,
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: segment_bytes(max_bytes),
            _lock: lock,
            segs: VecDeque::new(),
            writing: false,
            next_id: found.last().map_or(1, |(id, _)| id + 1),
            bytes: 0,
            dir_dirty: false,
            tally: Tally::default(),
            scratch: Vec::new(),
            window: Window::default(),
        };
        for (id, len) in found {
            spool.inherit(id, len);
        }
        // A cap lowered since the last run holds from the start.
        while spool.bytes > spool.max_bytes {
            spool.drop_oldest()?;
        }
        Ok(spool)
    }

    /// Takes in segment `id` of `len` bytes that an earlier process left.
    /// Damage is never fatal: what cannot be read is counted when the
    /// reader gets there.
    fn inherit(&mut self, id: SegId, len: u64) {
        let path = segment_path(&self.dir, id);
        let Ok(mut file) = self.fs.open_read(&path) else {
            return self.keep(Segment::inherited(id, path, Version::V2, len));
        };
        let mut magic = [0u8; MAGIC_LEN as usize];
        // Once more if reading failed: a passing error costs no count.
        let got = read_full(&mut file, &mut magic).or_else(|_| read_full(&mut file, &mut magic));
        let Ok(got) = got else {
            return self.keep(Segment::inherited(id, path, Version::V2, len));
        };
        // A damaged magic loses nothing: read it as version 2, whose records
        // find themselves by their marker and index. A file too short for a
        // record (its writer stopped before anything of it was durable)
        // holds none, and goes once the reader passes it.
        let version = Version::from_magic(&magic[..got]).unwrap_or(Version::V2);
        let mut seg = Segment::inherited(id, path, version, len);
        seg.file = Some(file);
        self.keep(seg);
        let i = self.segs.len() - 1;
        // Once more if reading failed: a passing error costs no count.
        self.count(i);
        self.count(i);
        self.segs[i].file = None;
        self.window.forget(id);
    }

    fn keep(&mut self, seg: Segment<F::File>) {
        self.bytes += seg.disk_len;
        self.segs.push_back(seg);
    }
}

/// Creates the directory (0700), or checks an existing one is a directory
/// owned by this process's user, and makes it private.
fn prepare_dir<F: SpoolFs>(fs: &F, dir: &Path, uid: u32) -> Result<(), SpoolError> {
    match fs.symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs.create_dir_all(dir, DIR_MODE).map_err(|e| {
                SpoolError::io(
                    format!("cannot create the spool directory {}", dir.display()),
                    e,
                )
            })?;
        }
        Err(e) => {
            return Err(SpoolError::io(
                format!("cannot inspect the spool directory {}", dir.display()),
                e,
            ))
        }
    }
    // A symbolic link to a directory of ours is fine (a spool moved to a
    // larger disk); one to somebody else's is not.
    let meta = match fs.metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SpoolError::refused(
                dir,
                "it is a symbolic link to nothing; point it at a directory or remove it",
            ))
        }
        Err(e) => {
            return Err(SpoolError::io(
                format!("cannot inspect the spool directory {}", dir.display()),
                e,
            ))
        }
    };
    if meta.kind != Kind::Dir {
        return Err(SpoolError::refused(
            dir,
            "it is not a directory; set spool_dir to a directory",
        ));
    }
    if meta.uid != uid {
        return Err(SpoolError::refused(
            dir,
            format_args!(
                "the directory belongs to uid {}, not to this process's user (uid {uid}); its \
                 owner could read the logs in it or plant records. Use a directory of uid {uid} \
                 (e.g. `chown {uid} {}`) or another spool_dir",
                meta.uid,
                dir.display()
            ),
        ));
    }
    if meta.mode & 0o777 != DIR_MODE {
        fs.set_mode(dir, DIR_MODE).map_err(|e| {
            SpoolError::io(
                format!(
                    "cannot make the spool directory {} private (0700)",
                    dir.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Checks the spool file at `path`, when there is one: a regular file, not
/// a symbolic link, owned by this process's user; makes it 0600.
fn check_file<F: SpoolFs>(fs: &F, path: &Path, uid: u32) -> Result<Option<Meta>, SpoolError> {
    let meta = match fs.symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SpoolError::io(
                format!("cannot inspect {}", path.display()),
                e,
            ))
        }
    };
    match meta.kind {
        Kind::File => {}
        Kind::Symlink => {
            return Err(SpoolError::refused(
                path,
                "it is a symbolic link, and the spool never follows one (it could lead to any \
                 file); remove it",
            ))
        }
        Kind::Dir | Kind::Other => {
            return Err(SpoolError::refused(
                path,
                "it is not a regular file; remove it",
            ))
        }
    }
    if meta.uid != uid {
        return Err(SpoolError::refused(
            path,
            format_args!(
                "it belongs to uid {}, not to this process's user (uid {uid}); remove it or \
                 `chown {uid}` it",
                meta.uid
            ),
        ));
    }
    if meta.mode & 0o777 != FILE_MODE {
        fs.set_mode(path, FILE_MODE).map_err(|e| {
            SpoolError::io(format!("cannot make {} private (0600)", path.display()), e)
        })?;
    }
    Ok(Some(meta))
}

/// `seg-<number>.lcs` → the number.
fn parse_segment_name(name: &str) -> Option<SegId> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".lcs")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn read_full<H: SpoolFile>(file: &mut H, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
