//! The record model: a record's [`Level`], and the owned [`Record`] for
//! callers that build records by hand (the CLI, integrations, tests). The
//! `log` and `tracing` front-ends encode straight from their borrowed data
//! and never build a `Record`.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::error::{Error, ErrorKind};

/// Default minimum level. Python's `default_config` ships DEBUG; Rust
/// dependencies (hyper, h2, tower…) log heavily at DEBUG, so we start at INFO
/// and let `level` (or `LOGCOLLECT_LEVEL`) lower it.
pub const DEFAULT_LEVEL: Level = Level::Info;

/// A record's severity, ordered from the most verbose to the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `TRACE` (Python has no such level; sent as `"TRACE"`).
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARNING` (Python's name for `warn`).
    Warning,
    /// `ERROR`.
    Error,
    /// `CRITICAL`: panics and records explicitly marked critical.
    Critical,
}

impl Level {
    /// The Python `levelname` sent on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = Error;

    /// Accepts Rust and Python names in any case: `trace`, `debug`, `info`,
    /// `warn`/`warning`, `error`, `critical`/`fatal`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warning),
            "error" => Ok(Level::Error),
            "critical" | "fatal" => Ok(Level::Critical),
            other => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "unknown level {other:?}: expected trace, debug, info, warning, error, critical or off"
                ),
            )),
        }
    }
}

/// A structured field value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FieldValue {
    /// JSON `null`.
    Null,
    /// JSON `true` / `false`.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float; NaN and infinities are sent as the strings `"NaN"`,
    /// `"Infinity"`, `"-Infinity"` (JSON has no such numbers).
    F64(f64),
    /// A string.
    Str(String),
    /// A JSON array, for values that arrive nested (a Python `list`).
    Array(Vec<FieldValue>),
    /// A JSON object, keys in order (a Python `dict`). Keys get the same
    /// rewrites as top-level keys (`@x` → `at_x`, `[` `]` → `_`); a repeated
    /// key keeps its first value.
    Object(Vec<(String, FieldValue)>),
}

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(v.to_owned())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(v)
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::I64(v)
    }
}
impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        FieldValue::U64(v)
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::F64(v)
    }
}

impl FieldValue {
    /// Reads a command-line value: `true`/`false`, integers and floats become
    /// numbers and booleans, `null` becomes null, anything else a string.
    pub fn infer(s: &str) -> FieldValue {
        match s {
            "true" => return FieldValue::Bool(true),
            "false" => return FieldValue::Bool(false),
            "null" => return FieldValue::Null,
            _ => {}
        }
        if let Ok(i) = s.parse::<i64>() {
            return FieldValue::I64(i);
        }
        if let Ok(u) = s.parse::<u64>() {
            return FieldValue::U64(u);
        }
        // Only plain decimal floats: "inf", "NaN" and "1e5" stay strings, so a
        // word never turns into a number by accident.
        if s.bytes().any(|b| b == b'.')
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            if let Ok(f) = s.parse::<f64>() {
                return FieldValue::F64(f);
            }
        }
        FieldValue::Str(s.to_owned())
    }
}

/// One log record built by hand; see [`Shipper::submit`](crate::Shipper::submit).
///
/// Build it with [`Record::new`] and the setters (`field`, `file`, `line`,
/// `timestamp`…); the fields stay readable and writable, and new ones may
/// come in a minor release (`#[non_exhaustive]`).
///
/// ```
/// use logcollect::{Level, Record};
/// let r = Record::new(Level::Info, "billing", "invoice sent")
///     .field("invoice", 42i64)
///     .file("src/billing.rs")
///     .line(17);
/// assert_eq!(r.line, Some(17));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// Severity.
    pub level: Level,
    /// Logger name (routing key suffix); `::` is sent as `.` in the routing key.
    pub logger: String,
    /// The message.
    pub message: String,
    /// Structured fields, in order; a later duplicate key is ignored.
    pub fields: Vec<(String, FieldValue)>,
    /// Source file, if known.
    pub file: Option<String>,
    /// Source line, if known.
    pub line: Option<u32>,
    /// Module path, if known.
    pub module_path: Option<String>,
    /// When the record was made (default: when it is submitted). A record
    /// that arrives from elsewhere (a Python `LogRecord`) keeps its own time.
    pub timestamp: Option<SystemTime>,
    /// The `threadName` field (default: the submitting thread's name).
    pub thread_name: Option<String>,
    /// The `stack_info` field (default `null`, as the Python library).
    pub stack_info: Option<String>,
    /// An exception that arrives already formatted (a Python traceback).
    pub exception: Option<ExceptionInfo>,
}

/// An exception described in words, for records made outside Rust: the
/// `logcollect` profile sends `text` as `exc_info` and `chain` as
/// `error_chain`; ECS sends `error.type`, `error.message` and
/// `error.stack_trace`. Build it with [`ExceptionInfo::new`] (and
/// [`chain`](Self::chain)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExceptionInfo {
    /// The exception's type name (`ValueError`).
    pub type_name: String,
    /// Its message (`str(exc)` in Python).
    pub message: String,
    /// The whole formatted text (a Python traceback).
    pub text: String,
    /// The messages of the exceptions that caused it, nearest first.
    pub chain: Vec<String>,
}

impl Record {
    /// A record with no fields and no source location.
    pub fn new(level: Level, logger: impl Into<String>, message: impl Into<String>) -> Self {
        Record {
            level,
            logger: logger.into(),
            message: message.into(),
            fields: Vec::new(),
            file: None,
            line: None,
            module_path: None,
            timestamp: None,
            thread_name: None,
            stack_info: None,
            exception: None,
        }
    }

    /// Adds a field.
    #[must_use]
    pub fn field(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.fields.push((key.into(), value.into()));
        self
    }

    /// Sets the source file.
    #[must_use]
    pub fn file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// Sets the source line.
    #[must_use]
    pub fn line(mut self, line: u32) -> Self {
        self.line = Some(line);
        self
    }

    /// Sets the module path.
    #[must_use]
    pub fn module_path(mut self, module_path: impl Into<String>) -> Self {
        self.module_path = Some(module_path.into());
        self
    }

    /// Sets when the record was made (default: when it is submitted).
    #[must_use]
    pub fn timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the `threadName` field (default: the submitting thread's name).
    #[must_use]
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = Some(name.into());
        self
    }

    /// Sets the `stack_info` field (default `null`).
    #[must_use]
    pub fn stack_info(mut self, stack: impl Into<String>) -> Self {
        self.stack_info = Some(stack.into());
        self
    }

    /// Sets an exception that arrives already formatted.
    #[must_use]
    pub fn exception(mut self, exception: ExceptionInfo) -> Self {
        self.exception = Some(exception);
        self
    }
}

impl ExceptionInfo {
    /// An exception of type `type_name` with its message and its whole
    /// formatted text, and no causes.
    pub fn new(
        type_name: impl Into<String>,
        message: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        ExceptionInfo {
            type_name: type_name.into(),
            message: message.into(),
            text: text.into(),
            chain: Vec::new(),
        }
    }

    /// Sets the messages of the exceptions that caused it, nearest first.
    #[must_use]
    pub fn chain<T: Into<String>>(mut self, chain: impl IntoIterator<Item = T>) -> Self {
        self.chain = chain.into_iter().map(Into::into).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_types() {
        assert_eq!(FieldValue::infer("42"), FieldValue::I64(42));
        assert_eq!(FieldValue::infer("-3"), FieldValue::I64(-3));
        assert_eq!(
            FieldValue::infer("18446744073709551615"),
            FieldValue::U64(u64::MAX)
        );
        assert_eq!(FieldValue::infer("1.5"), FieldValue::F64(1.5));
        assert_eq!(FieldValue::infer("true"), FieldValue::Bool(true));
        assert_eq!(FieldValue::infer("null"), FieldValue::Null);
        assert_eq!(FieldValue::infer("inf"), FieldValue::Str("inf".into()));
        assert_eq!(FieldValue::infer("1.2.3"), FieldValue::Str("1.2.3".into()));
        assert_eq!(FieldValue::infer("abc"), FieldValue::Str("abc".into()));
    }
}
