//! The spool's file layer: the few file-system calls it makes, behind a
//! trait so tests can make every one of them fail ([`super::memfs::MemFs`]),
//! and the real implementation on the operating system's files ([`OsFs`]).

use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// What a path is, without following a final symbolic link (or following it,
/// for [`SpoolFs::metadata`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device: never a spool file (opening a FIFO blocks).
    Other,
}

/// The part of a file's metadata the spool checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) kind: Kind,
    /// Owner's user id.
    pub(crate) uid: u32,
    /// Permission bits (`0o777` and the set-id/sticky bits).
    pub(crate) mode: u32,
    pub(crate) len: u64,
}

/// A synchronous, std-io style file layer: everything the spool does to its
/// directory. Calls that open files never follow a symbolic link in the
/// last component.
pub(crate) trait SpoolFs: Debug {
    /// A segment file open for reading, or for reading and appending.
    type File: SpoolFile + Send;
    /// Held while the spool lives: one process per directory.
    type Lock: Debug + Send;

    /// The user this process runs as (effective uid), who must own the spool.
    fn current_uid(&self) -> u32;
    /// Metadata of `path` itself (a symbolic link is reported as one).
    fn symlink_metadata(&self, path: &Path) -> io::Result<Meta>;
    /// Metadata of what `path` leads to (symbolic links followed).
    fn metadata(&self, path: &Path) -> io::Result<Meta>;
    /// Creates `path` and its missing parents with permission bits `mode`.
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Sets the permission bits of `path` (following symbolic links).
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Opens or creates (0600) the lock file and takes its lock without
    /// waiting: `WouldBlock` when another process holds it.
    fn lock(&self, path: &Path) -> io::Result<Self::Lock>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Creates a new file (0600; fails if `path` exists), open for reading
    /// and appending.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Self::File>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the creation and removal of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open segment file.
pub(crate) trait SpoolFile: Debug {
    /// Appends all of `buf` at the end of the file. On error a prefix of
    /// `buf` may have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Reads at `offset` without moving any position; `Ok(0)` at the end.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Cuts the file to (or extends it to) `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// The file's length now.
    fn len(&mut self) -> io::Result<u64>;
}

/// The operating system's files.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OsFs;

/// A segment file on disk.
#[derive(Debug)]
pub(crate) struct OsFile(File);

impl SpoolFs for OsFs {
    type File = OsFile;
    type Lock = File;

    fn current_uid(&self) -> u32 {
        platform::euid()
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<Meta> {
        std::fs::symlink_metadata(path).map(|m| platform::meta(&m))
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        std::fs::metadata(path).map(|m| platform::meta(&m))
    }

    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        platform::dir_mode(&mut builder, mode);
        builder.create(path)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        platform::set_mode(path, mode)
    }

    fn lock(&self, path: &Path) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        platform::private_no_follow(&mut options);
        let file = options.open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn create_new(&self, path: &Path) -> io::Result<OsFile> {
        let mut options = OpenOptions::new();
        options.read(true).append(true).create_new(true);
        platform::private_no_follow(&mut options);
        options.open(path).map(OsFile)
    }

    fn open_read(&self, path: &Path) -> io::Result<OsFile> {
        let mut options = OpenOptions::new();
        options.read(true);
        platform::private_no_follow(&mut options);
        options.open(path).map(OsFile)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl SpoolFile for OsFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // std's `write_all` retries short writes and EINTR; opened with
        // O_APPEND, every write lands at the current end.
        self.0.write_all(buf)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        platform::read_at(&self.0, buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&mut self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }
}

fn kind(m: &std::fs::Metadata) -> Kind {
    let t = m.file_type();
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

#[cfg(unix)]
mod platform {
    use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    use super::{kind, Meta};

    pub(super) fn euid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    pub(super) fn meta(m: &Metadata) -> Meta {
        Meta {
            kind: kind(m),
            uid: m.uid(),
            mode: m.mode() & 0o7777,
            len: m.len(),
        }
    }

    pub(super) fn dir_mode(builder: &mut DirBuilder, mode: u32) {
        builder.mode(mode);
    }

    pub(super) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, Permissions::from_mode(mode))
    }

    /// Files are created 0600, and a symbolic link in the last component is
    /// refused (ELOOP) rather than followed: nobody can make us write or
    /// read through a link planted in the directory.
    pub(super) fn private_no_follow(options: &mut OpenOptions) {
        options.mode(0o600);
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }

    pub(super) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        file.read_at(buf, offset)
    }
}

#[cfg(not(unix))]
mod platform {
    //! Without unix owners and permission bits in std, the spool's owner and
    //! mode checks cannot be made: everyone counts as the owner, and the
    //! directory's ACLs decide who may read it. Not tested on such systems.
    use std::fs::{DirBuilder, File, Metadata, OpenOptions};
    use std::io;
    use std::path::Path;

    use super::{kind, Kind, Meta};

    pub(super) fn euid() -> u32 {
        0
    }

    pub(super) fn meta(m: &Metadata) -> Meta {
        let kind = kind(m);
        let mode = if kind == Kind::Dir { 0o700 } else { 0o600 };
        Meta {
            kind,
            uid: 0,
            mode,
            len: m.len(),
        }
    }

    pub(super) fn dir_mode(_: &mut DirBuilder, _: u32) {}

    pub(super) fn set_mode(_: &Path, _: u32) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn private_no_follow(_: &mut OpenOptions) {}

    pub(super) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read(buf)
    }
}
