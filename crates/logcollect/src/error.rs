//! Error types: one opaque [`Error`] for setup calls, a narrow
//! [`ShutdownError`] for lifecycle calls (STYLE §3).

use std::fmt;

/// What kind of setup failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker URI (or failover list) could not be parsed.
    InvalidUri,
    /// A configuration value is invalid (level, number, identity, …).
    InvalidConfig,
    /// An environment variable holds a value that cannot be used.
    InvalidEnv,
    /// A global logger or subscriber is already installed.
    AlreadyInstalled,
    /// The shipper thread could not be started.
    Spawn,
    /// Talking to the broker failed (used by the CLI and checks, never by boot).
    Broker,
    /// The spool directory cannot be used (owned by another user, a symlink
    /// where a file should be, in use by another process, unreadable).
    Spool,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidUri => "invalid broker URI",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::InvalidEnv => "invalid environment variable",
            ErrorKind::AlreadyInstalled => "already installed",
            ErrorKind::Spawn => "cannot start the shipper thread",
            ErrorKind::Broker => "broker error",
            ErrorKind::Spool => "spool directory unusable",
        })
    }
}

/// The error of every setup call (build, boot, connect checks).
///
/// Its message never contains a broker password.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Why [`flush`](crate::Shipper::flush) or [`shutdown`](crate::Shipper::shutdown)
/// did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The deadline passed with records still undelivered; they are counted in
    /// [`Stats`](crate::Stats) (and, with a spool, kept on disk).
    Timeout,
    /// The shipper was already shut down.
    AlreadyShutdown,
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShutdownError::Timeout => "timed out with records still undelivered",
            ShutdownError::AlreadyShutdown => "the shipper is already shut down",
        })
    }
}

impl std::error::Error for ShutdownError {}
