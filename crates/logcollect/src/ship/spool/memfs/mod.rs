//! A file system in memory for tests: deterministic, cheap, and able to fail
//! in every way a disk fails (a test double, not for production).
//!
//! Clones share one file system, so a test keeps a handle to inject faults
//! while the spool owns another. Faults are armed with [`MemFs::inject`] and
//! fire once, at the next call they apply to; [`MemFs::set_capacity`] makes
//! writes past a total size fail with ENOSPC after writing what fits.
//!
//! ## Durability and [`MemFs::crash`]
//!
//! What survives a crash is exactly what was made durable:
//! - a file's contents are those of its last successful `sync_data`
//!   (nothing, if it never had one);
//! - a directory's entries are those of its last successful `sync_dir`:
//!   a file created since then vanishes (even if its data was synced), and a
//!   file removed since then comes back with its durable contents;
//! - a failed `sync_data` behaves as Linux does: the kernel drops the
//!   unwritten pages, so bytes written before the failure never become
//!   durable, even if a later `sync_data` of the same file succeeds (they
//!   come back as zeros), while reads before a crash still see them.
//!
//! Directories are durable as soon as they are created. A crash also ends
//! the "process": every lock is released and every open file handle fails
//! from then on.

mod calls;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{Kind, Meta};

/// A failure to inject: each fires once, at the next call of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The next write fails with ENOSPC, writing nothing.
    NoSpace,
    /// The next write writes this many bytes (at most all of them), then
    /// fails with ENOSPC.
    PartialWrite(usize),
    /// The next write fails with EIO, writing nothing.
    WriteError,
    /// The next `read_at` fails with EIO.
    ReadError,
    /// The next `sync_data` fails with EIO (and drops the unsynced bytes).
    SyncError,
    /// The next `sync_dir` fails with EIO.
    DirSyncError,
    /// The next `set_len` fails with EIO.
    SetLenError,
    /// The next `create_new` fails with ENOSPC.
    CreateError,
    /// The next `remove` fails with EIO.
    RemoveError,
}

/// The shared in-memory file system.
#[derive(Debug, Clone)]
pub(crate) struct MemFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    uid: u32,
    /// Bumped by each crash: handles from before fail.
    epoch: u64,
    nodes: BTreeMap<PathBuf, Node>,
    files: BTreeMap<u64, Data>,
    next_ino: u64,
    /// Removed files whose removal is not durable yet.
    ghosts: Vec<(PathBuf, u64)>,
    locks: Vec<PathBuf>,
    faults: VecDeque<Fault>,
    capacity: Option<u64>,
    sync_data_calls: u64,
    sync_dir_calls: u64,
}

#[derive(Debug, Clone)]
enum Node {
    Dir { uid: u32, mode: u32 },
    File { ino: u64, uid: u32, mode: u32 },
    Symlink(PathBuf),
}

#[derive(Debug, Default)]
struct Data {
    live: Vec<u8>,
    /// Contents as of the last successful `sync_data`.
    durable: Vec<u8>,
    /// Lowest offset changed since then (`live` from there on is new).
    changed_from: usize,
    /// Bytes the kernel dropped after a failed fsync.
    dropped: Vec<Range<usize>>,
    /// The entry exists in the durable state of its directory.
    entry_durable: bool,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("{what}: input/output error (injected)"))
}

fn enospc() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "no space left on device (MemFs)",
    )
}

impl Default for MemFs {
    fn default() -> Self {
        MemFs::new()
    }
}

impl MemFs {
    /// An empty file system where this process runs as uid 1000.
    pub(crate) fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            PathBuf::from("/"),
            Node::Dir {
                uid: 0,
                mode: 0o755,
            },
        );
        MemFs {
            state: Arc::new(Mutex::new(State {
                uid: 1000,
                epoch: 0,
                nodes,
                files: BTreeMap::new(),
                next_ino: 1,
                ghosts: Vec::new(),
                locks: Vec::new(),
                faults: VecDeque::new(),
                capacity: None,
                sync_data_calls: 0,
                sync_dir_calls: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the
        // state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms `fault` for the next call it applies to.
    pub(crate) fn inject(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }

    /// Disarms every fault not fired yet.
    pub(crate) fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Writes beyond this many bytes in all files fail with ENOSPC.
    pub(crate) fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Flips every bit of the byte at `offset` of the file at `path`, in its
    /// live and durable contents (a bad disk). `false`: no such byte.
    pub(crate) fn flip_byte(&self, path: &Path, offset: u64) -> bool {
        let mut st = self.state();
        let Some(Node::File { ino, .. }) = st.nodes.get(path).cloned() else {
            return false;
        };
        let data = st.files.get_mut(&ino).expect("file data");
        let at = offset as usize;
        let mut hit = false;
        if let Some(b) = data.live.get_mut(at) {
            *b ^= 0xFF;
            hit = true;
        }
        if let Some(b) = data.durable.get_mut(at) {
            *b ^= 0xFF;
            hit = true;
        }
        hit
    }

    /// The process dies: everything not durable is lost (see the module docs).
    pub(crate) fn crash(&self) {
        let mut st = self.state();
        st.epoch += 1;
        st.locks.clear();
        st.faults.clear();
        let st = &mut *st;
        let mut gone = Vec::new();
        for (path, node) in &st.nodes {
            if let Node::File { ino, .. } = node {
                let data = st.files.get_mut(ino).expect("file data");
                if data.entry_durable {
                    data.live = data.durable.clone();
                    data.changed_from = data.live.len();
                    data.dropped.clear();
                } else {
                    gone.push((path.clone(), *ino));
                }
            }
        }
        for (path, ino) in gone {
            st.nodes.remove(&path);
            st.files.remove(&ino);
        }
        for (path, ino) in std::mem::take(&mut st.ghosts) {
            let data = st.files.get_mut(&ino).expect("ghost data");
            data.live = data.durable.clone();
            data.changed_from = data.live.len();
            data.dropped.clear();
            st.nodes.entry(path).or_insert(Node::File {
                ino,
                uid: st.uid,
                mode: 0o600,
            });
        }
        let live: Vec<u64> = st
            .nodes
            .values()
            .filter_map(|n| match n {
                Node::File { ino, .. } => Some(*ino),
                _ => None,
            })
            .collect();
        st.files.retain(|ino, _| live.contains(ino));
    }

    /// Makes `path` belong to `uid` (a directory or file of another user).
    pub(crate) fn set_owner(&self, path: &Path, new_uid: u32) {
        match self.state().nodes.get_mut(path) {
            Some(Node::Dir { uid, .. } | Node::File { uid, .. }) => *uid = new_uid,
            _ => panic!(
                "MemFs::set_owner: no file or directory at {}",
                path.display()
            ),
        }
    }

    /// Sets the permission bits of `path` without the spool (a test's setup).
    pub(crate) fn chmod(&self, path: &Path, new_mode: u32) {
        match self.state().nodes.get_mut(path) {
            Some(Node::Dir { mode, .. } | Node::File { mode, .. }) => *mode = new_mode,
            _ => panic!("MemFs::chmod: no file or directory at {}", path.display()),
        }
    }

    /// Creates a symbolic link at `path` to `target`.
    pub(crate) fn symlink(&self, target: &Path, path: &Path) {
        self.state()
            .nodes
            .insert(path.to_owned(), Node::Symlink(target.to_owned()));
    }

    /// Creates a directory owned by `uid` (another user's, for a test).
    pub(crate) fn mkdir_owned(&self, path: &Path, uid: u32, mode: u32) {
        self.state()
            .nodes
            .insert(path.to_owned(), Node::Dir { uid, mode });
    }

    /// Writes a whole durable file (what an earlier version left), owned by
    /// this process's user, 0600.
    pub(crate) fn put_file(&self, path: &Path, contents: &[u8]) {
        let mut st = self.state();
        let ino = st.next_ino;
        st.next_ino += 1;
        st.files.insert(
            ino,
            Data {
                live: contents.to_vec(),
                durable: contents.to_vec(),
                changed_from: contents.len(),
                dropped: Vec::new(),
                entry_durable: true,
            },
        );
        let uid = st.uid;
        st.nodes.insert(
            path.to_owned(),
            Node::File {
                ino,
                uid,
                mode: 0o600,
            },
        );
    }

    /// The live contents of the file at `path`.
    pub(crate) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state();
        match st.nodes.get(path)? {
            Node::File { ino, .. } => Some(st.files[ino].live.clone()),
            _ => None,
        }
    }

    /// Entries of `dir` whose names start with `prefix`, sorted, with their
    /// live lengths.
    pub(crate) fn files(&self, dir: &Path, prefix: &str) -> Vec<(PathBuf, u64)> {
        let st = self.state();
        st.nodes
            .iter()
            .filter(|(p, _)| {
                p.parent() == Some(dir)
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
            })
            .filter_map(|(p, n)| match n {
                Node::File { ino, .. } => Some((p.clone(), st.files[ino].live.len() as u64)),
                _ => None,
            })
            .collect()
    }

    /// `sync_data` and `sync_dir` calls so far (successful or not).
    pub(crate) fn sync_calls(&self) -> (u64, u64) {
        let st = self.state();
        (st.sync_data_calls, st.sync_dir_calls)
    }
}

impl State {
    /// Takes the first armed fault `pick` accepts.
    fn take_fault(&mut self, pick: impl Fn(Fault) -> bool) -> Option<Fault> {
        let at = self.faults.iter().position(|f| pick(*f))?;
        self.faults.remove(at)
    }

    fn used(&self) -> u64 {
        self.nodes
            .values()
            .filter_map(|n| match n {
                Node::File { ino, .. } => Some(self.files[ino].live.len() as u64),
                _ => None,
            })
            .sum()
    }

    /// `path`, following symbolic links (a few levels).
    fn resolve<'a>(&'a self, path: &Path) -> io::Result<(&'a Node, PathBuf)> {
        let mut p = path.to_owned();
        for _ in 0..8 {
            match self.nodes.get(&p) {
                Some(Node::Symlink(target)) => {
                    p = match p.parent() {
                        Some(parent) => parent.join(target),
                        None => target.clone(),
                    }
                }
                Some(node) => return Ok((node, p)),
                None => return Err(io::ErrorKind::NotFound.into()),
            }
        }
        Err(io::Error::other("too many levels of symbolic links"))
    }

    fn meta(&self, node: &Node) -> Meta {
        match node {
            Node::Dir { uid, mode } => Meta {
                kind: Kind::Dir,
                uid: *uid,
                mode: *mode,
                len: 0,
            },
            Node::File { ino, uid, mode } => Meta {
                kind: Kind::File,
                uid: *uid,
                mode: *mode,
                len: self.files[ino].live.len() as u64,
            },
            Node::Symlink(_) => Meta {
                kind: Kind::Symlink,
                uid: self.uid,
                mode: 0o777,
                len: 0,
            },
        }
    }

    /// The file at `path` itself; a symbolic link is refused as with
    /// `O_NOFOLLOW`.
    fn file_at(&self, path: &Path) -> io::Result<u64> {
        match self.nodes.get(path) {
            Some(Node::File { ino, .. }) => Ok(*ino),
            Some(Node::Symlink(_)) => Err(io::Error::other(
                "too many levels of symbolic links (O_NOFOLLOW)",
            )),
            Some(Node::Dir { .. }) => Err(io::Error::other("is a directory")),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn new_file(&mut self, path: &Path) -> io::Result<u64> {
        let parent = path.parent().ok_or(io::ErrorKind::NotFound)?;
        if !matches!(self.resolve(parent)?.0, Node::Dir { .. }) {
            return Err(io::Error::other("not a directory"));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.files.insert(ino, Data::default());
        let uid = self.uid;
        self.nodes.insert(
            path.to_owned(),
            Node::File {
                ino,
                uid,
                mode: 0o600,
            },
        );
        Ok(ino)
    }
}
