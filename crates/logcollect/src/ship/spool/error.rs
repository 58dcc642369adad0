//! The spool's error: what went wrong, in words that say what to do.

use std::fmt;
use std::io;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpoolErrorKind {
    /// The file system (or the user's quota) is full.
    NoSpace,
    /// Any other failure of the disk or the file system.
    Io,
    /// One record is larger than the spool's byte cap: it is not written.
    TooLarge,
    /// The directory is not safe to use: owned by another user, a symbolic
    /// link where a spool file should be, not a directory.
    Refused,
    /// Another process uses the directory (it holds the lock).
    InUse,
}

#[derive(Debug)]
pub(crate) struct SpoolError {
    #[cfg_attr(not(test), allow(dead_code))] // read by the v2 driver (issue 11)
    kind: SpoolErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl SpoolError {
    #[cfg_attr(not(test), allow(dead_code))] // read by the v2 driver (issue 11)
    pub(crate) fn kind(&self) -> SpoolErrorKind {
        self.kind
    }

    pub(super) fn new(kind: SpoolErrorKind, message: String) -> Self {
        SpoolError {
            kind,
            message,
            source: None,
        }
    }

    /// `what` failed with `e`: a full disk, or another I/O failure, with
    /// what to do about each.
    pub(super) fn io(what: String, e: io::Error) -> Self {
        let (kind, advice) = if is_no_space(&e) {
            (
                SpoolErrorKind::NoSpace,
                "the file system holding the spool is full: free space there, or set \
                 spool_max_bytes below the free space",
            )
        } else {
            (
                SpoolErrorKind::Io,
                "check the disk and the spool directory (permissions, read-only mount, \
                 kernel log)",
            )
        };
        SpoolError {
            kind,
            message: format!("{what}: {e}; {advice}"),
            source: Some(e),
        }
    }

    pub(super) fn refused(path: &Path, why: impl fmt::Display) -> Self {
        SpoolError::new(
            SpoolErrorKind::Refused,
            format!("refusing the spool at {}: {why}", path.display()),
        )
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
