//! `send --file PATH [--follow]`: the lines of a log file, followed across
//! rotation and truncation as `tail -F` does, and the position file that
//! lets a restart continue where the last run stopped.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};

/// Where reading stands in one file: the file's identity (device and inode,
/// which survive a rename) and the byte offset after the last line shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) offset: u64,
}

impl Position {
    fn text(self) -> String {
        format!("{} {} {}", self.dev, self.ino, self.offset)
    }

    fn parse(text: &str) -> Option<Position> {
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        let position = Position {
            dev: parts.next()?.ok()?,
            ino: parts.next()?.ok()?,
            offset: parts.next()?.ok()?,
        };
        parts.next().is_none().then_some(position)
    }
}

/// The identity of a file: device and inode.
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> (u64, u64) {
    // No inode: a rotation is then only seen as a truncation.
    (0, 0)
}

/// What [`Follower::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A line (without its line break), `number` counting from 1 in its file.
    Line { number: u64, text: String },
    /// Everything written so far was read (following): look again later.
    Idle,
    /// The end (not following): every line was returned.
    End,
}

/// The file being read.
#[derive(Debug)]
struct Open {
    reader: BufReader<File>,
    dev: u64,
    ino: u64,
    /// Bytes of the file consumed: up to the end of the last whole line.
    offset: u64,
    /// Line number of the last line returned.
    number: u64,
    /// PATH names another file now (rotated): this one is read to its end,
    /// then the new one is opened.
    rotated: bool,
}

/// Reads PATH line by line, following it with `follow`.
#[derive(Debug)]
pub(crate) struct Follower {
    path: PathBuf,
    follow: bool,
    open: Option<Open>,
    /// Where a restart would begin: the position saved by the last run,
    /// until the file is opened.
    resume: Option<Position>,
    /// The bytes of a line whose line break has not been written yet.
    partial: Vec<u8>,
    /// Position before the last line returned.
    before_last: Option<Position>,
    /// "Waiting for PATH" was said (once per absence).
    said_missing: bool,
}

impl Follower {
    /// Opens `path`. Without `follow` it must exist; with it, a missing
    /// file is waited for. `resume` is where the last run stopped: used when
    /// `path` is still that file, else the file is read from its start.
    pub(crate) fn open(
        path: &Path,
        follow: bool,
        resume: Option<Position>,
    ) -> io::Result<Follower> {
        let mut follower = Follower {
            path: path.to_owned(),
            follow,
            open: None,
            resume,
            partial: Vec::new(),
            before_last: None,
            said_missing: false,
        };
        match follower.reopen() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && follow => Ok(follower),
            Err(e) => Err(e),
            Ok(()) => Ok(follower),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Where the next line starts: what to save once everything returned so
    /// far is confirmed.
    pub(crate) fn position(&self) -> Option<Position> {
        match &self.open {
            Some(o) => Some(Position {
                dev: o.dev,
                ino: o.ino,
                offset: o.offset,
            }),
            None => self.resume,
        }
    }

    /// Where the last line returned starts (to read it again).
    pub(crate) fn position_before_last(&self) -> Option<Position> {
        self.before_last.or(self.position())
    }

    /// Opens PATH, at the saved position when it is the same file.
    fn reopen(&mut self) -> io::Result<()> {
        let file = File::open(&self.path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is a directory",
                self.path.display()
            )));
        }
        let (dev, ino) = identity(&meta);
        let mut offset = 0;
        if let Some(saved) = self.resume.take() {
            if (saved.dev, saved.ino) != (dev, ino) {
                note(&format!(
                    "{} is not the file the position file names (rotated while send was not \
                     running?): reading it from the start",
                    self.path.display()
                ));
            } else if saved.offset > meta.len() {
                note(&format!(
                    "{} is shorter than the saved position (truncated while send was not \
                     running?): reading it from the start",
                    self.path.display()
                ));
            } else {
                offset = saved.offset;
            }
        }
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(offset))?;
        self.partial.clear();
        self.said_missing = false;
        self.open = Some(Open {
            reader,
            dev,
            ino,
            offset,
            number: 0,
            rotated: false,
        });
        Ok(())
    }

    /// The next line, or what keeps it from coming.
    pub(crate) fn next(&mut self) -> io::Result<Next> {
        loop {
            let Some(open) = &mut self.open else {
                // Following, and PATH is missing.
                match self.reopen() {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if !std::mem::replace(&mut self.said_missing, true) {
                            note(&format!(
                                "{} does not exist; waiting for it to appear",
                                self.path.display()
                            ));
                        }
                        return Ok(Next::Idle);
                    }
                    Err(e) => return Err(e),
                }
            };
            let start = open.offset;
            open.reader.read_until(b'\n', &mut self.partial)?;
            if self.partial.last() == Some(&b'\n') {
                return Ok(self.take_line(start));
            }
            // At the end of what is written so far; `partial` holds the
            // start of a line whose line break has not come yet.
            if !self.follow {
                if self.partial.is_empty() {
                    return Ok(Next::End);
                }
                return Ok(self.take_line(start));
            }
            if open.rotated {
                // The old file's last line, even without its line break:
                // nothing more will be written to it.
                if !self.partial.is_empty() {
                    return Ok(self.take_line(start));
                }
                note(&format!(
                    "{} was rotated; reading the new file",
                    self.path.display()
                ));
                self.open = None;
                continue;
            }
            match std::fs::metadata(&self.path) {
                Ok(meta) if identity(&meta) != (open.dev, open.ino) => {
                    // Renamed away and created again: read the rest of the
                    // old file (its writer may have added to it since our
                    // last read), then move on.
                    open.rotated = true;
                }
                Ok(meta) if meta.len() < open.offset + self.partial.len() as u64 => {
                    note(&format!(
                        "{} was truncated; reading it from the start",
                        self.path.display()
                    ));
                    open.reader.seek(SeekFrom::Start(0))?;
                    open.offset = 0;
                    open.number = 0;
                    self.partial.clear();
                }
                Ok(_) => return Ok(Next::Idle),
                // Renamed or deleted, no new file yet: the old one may still
                // grow (its writer has not reopened), so keep reading it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Next::Idle),
                Err(e) => return Err(e),
            }
        }
    }

    /// Returns `partial` as a line that started at `start`.
    fn take_line(&mut self, start: u64) -> Next {
        let Some(open) = &mut self.open else {
            return Next::End;
        };
        self.before_last = Some(Position {
            dev: open.dev,
            ino: open.ino,
            offset: start,
        });
        open.offset = start + self.partial.len() as u64;
        open.number += 1;
        let bytes = std::mem::take(&mut self.partial);
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_suffix('\n').unwrap_or(&text).to_owned();
        Next::Line {
            number: open.number,
            text,
        }
    }
}

/// Size of the position file's one record, padded with spaces: rewritten in
/// place, one small write, so a crash leaves the old or the new text
/// (never a mix across a sector) and a lock held on the file stays valid
/// (a rename would replace the locked file).
const RECORD_BYTES: usize = 64;

/// The file that remembers how far a file was shipped, locked for as long
/// as it is open: one `send` per position file.
#[derive(Debug)]
pub(crate) struct PositionFile {
    file: File,
    saved: Option<Position>,
}

impl PositionFile {
    pub(crate) fn open(path: &Path) -> anyhow::Result<PositionFile> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the position file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(anyhow!(
                    "the position file {} is in use by another logcollect send",
                    path.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!(e).context(format!("cannot lock {}", path.display())))
            }
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .with_context(|| format!("cannot read the position file {}", path.display()))?;
        let saved = if text.trim().is_empty() {
            None
        } else {
            Some(Position::parse(&text).ok_or_else(|| {
                anyhow!(
                    "the position file {} holds {:?}, not a position; delete it to read the \
                     file from its start",
                    path.display(),
                    text.trim()
                )
            })?)
        };
        Ok(PositionFile { file, saved })
    }

    /// The position the last run saved.
    pub(crate) fn saved(&self) -> Option<Position> {
        self.saved
    }

    /// Saves `position` (nothing to save before a file was ever opened).
    pub(crate) fn save(&mut self, position: Option<Position>) -> io::Result<()> {
        let Some(position) = position else {
            return Ok(());
        };
        if self.saved == Some(position) {
            return Ok(());
        }
        let mut record = format!("{:<width$}", position.text(), width = RECORD_BYTES - 1);
        record.push('\n');
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(record.as_bytes())?;
        self.file.set_len(record.len() as u64)?;
        self.file.sync_data()?;
        self.saved = Some(position);
        Ok(())
    }
}

/// A message for the person running send, on standard error.
fn note(text: &str) {
    let _ = writeln!(io::stderr(), "logcollect send: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "logcollect-follow-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn append(path: &Path, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Every line until the follower is idle (or at the end).
    fn drain(f: &mut Follower) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match f.next().unwrap() {
                Next::Line { text, .. } => lines.push(text),
                Next::Idle | Next::End => return lines,
            }
        }
    }

    #[test]
    fn positions_read_back() {
        let p = Position {
            dev: 1,
            ino: 2,
            offset: 3,
        };
        assert_eq!(Position::parse(&p.text()), Some(p));
        assert_eq!(Position::parse("1 2"), None);
        assert_eq!(Position::parse("1 2 3 4"), None);
        assert_eq!(Position::parse("a b c"), None);
    }

    #[test]
    fn whole_file_without_follow() {
        let dir = scratch("whole");
        let path = dir.join("app.log");
        append(&path, "one\n\ntwo\nthree without a line break");
        let mut f = Follower::open(&path, false, None).unwrap();
        assert_eq!(
            drain(&mut f),
            ["one", "", "two", "three without a line break"]
        );
        assert_eq!(f.next().unwrap(), Next::End);
        assert!(Follower::open(&dir.join("missing"), false, None).is_err());
    }

    #[test]
    fn follows_growth_rotation_and_truncation() {
        let dir = scratch("rotate");
        let path = dir.join("app.log");
        append(&path, "a1\na2\npart");
        let mut f = Follower::open(&path, true, None).unwrap();
        assert_eq!(
            drain(&mut f),
            ["a1", "a2"],
            "a line is whole once its break is written"
        );
        append(&path, "ial\n");
        assert_eq!(drain(&mut f), ["partial"]);
        // Rotation: written to the old file after the rename, then a new file.
        std::fs::rename(&path, dir.join("app.log.1")).unwrap();
        append(&dir.join("app.log.1"), "a3\n");
        assert_eq!(
            drain(&mut f),
            ["a3"],
            "PATH missing: the old file is still read"
        );
        append(&path, "b1\n");
        assert_eq!(drain(&mut f), ["b1"]);
        // Truncation (copytruncate).
        std::fs::write(&path, "").unwrap();
        assert_eq!(drain(&mut f), Vec::<String>::new());
        append(&path, "c1\n");
        assert_eq!(drain(&mut f), ["c1"]);
        // Deleted, then created again.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(f.next().unwrap(), Next::Idle);
        append(&path, "d1\n");
        assert_eq!(drain(&mut f), ["d1"]);
    }

    #[test]
    fn waits_for_a_missing_file() {
        let dir = scratch("missing");
        let path = dir.join("later.log");
        let mut f = Follower::open(&path, true, None).unwrap();
        assert_eq!(f.next().unwrap(), Next::Idle);
        append(&path, "x\n");
        assert_eq!(drain(&mut f), ["x"]);
    }

    #[test]
    fn resumes_at_the_saved_position_of_the_same_file() {
        let dir = scratch("resume");
        let path = dir.join("app.log");
        append(&path, "1\n2\n");
        let mut f = Follower::open(&path, true, None).unwrap();
        assert_eq!(drain(&mut f), ["1", "2"]);
        let saved = f.position();
        append(&path, "3\n");
        let mut again = Follower::open(&path, true, saved).unwrap();
        assert_eq!(drain(&mut again), ["3"]);
        // Another file at PATH: from its start.
        std::fs::rename(&path, dir.join("old")).unwrap();
        append(&path, "new\n");
        let mut other = Follower::open(&path, true, saved).unwrap();
        assert_eq!(drain(&mut other), ["new"]);
    }

    #[test]
    fn position_file_saves_and_reads_back() {
        // The lock is tested with two processes (tests/send_input.rs): in
        // this process other tests fork children, which hold a copy of an
        // open descriptor (and so its lock) until they exec.
        let dir = scratch("posfile");
        let path = dir.join("pos");
        let mut file = PositionFile::open(&path).unwrap();
        assert_eq!(file.saved(), None);
        let p = Position {
            dev: 7,
            ino: 8,
            offset: 9,
        };
        file.save(Some(p)).unwrap();
        file.save(Some(Position { offset: 10, ..p })).unwrap();
        drop(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), RECORD_BYTES, "{text:?}");
        assert_eq!(Position::parse(&text), Some(Position { offset: 10, ..p }));
        let garbage = dir.join("garbage");
        std::fs::write(&garbage, "garbage").unwrap();
        let e = PositionFile::open(&garbage).unwrap_err().to_string();
        assert!(e.contains("not a position"), "{e}");
    }
}
