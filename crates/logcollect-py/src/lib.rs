//! `logcollect._native`: the bridge between Python's `logging` and
//! logcollect's Rust shipper. The Python package (`python/logcollect/`) holds
//! the API of Python logcollect 0.14 (`boot.default_config`, the Django and
//! Celery helpers, `handler.AMQPHandler`); this module only turns a
//! `LogRecord` into a [`logcollect::Record`] and hands it to a
//! [`logcollect::Shipper`].
//!
//! Fork safety: a `Shipper` (this module's wrapper) belongs to the process that started it. After
//! a fork the child must never touch the parent's shipper (its mutexes may
//! have been held by threads that do not exist in the child), nor drop it
//! (that runs Rust destructors over that state). `Shipper::submit` refuses
//! to run in another process, and a `Shipper` dropped in another process is
//! leaked on purpose; the Python handler starts a fresh one in the child.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logcollect::{ExceptionInfo, FieldValue, Level, Record};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// Levels of nesting converted from a Python value; deeper parts are `"…"`.
/// The encoder turns anything below 20 levels into a string of its JSON
/// anyway (Elasticsearch's depth limit); this bound only stops the
/// conversion of a self-referencing list from recursing forever.
const MAX_DEPTH: usize = 64;

/// Values converted from one record's fields at most; the rest of a huge
/// list or dict is replaced by one `"…"`. 100,000 small values already
/// encode to more than the default 1 MiB record cap, so nothing that could
/// be sent is cut, while a logging call with a giant value costs
/// milliseconds, not seconds.
const MAX_VALUES: usize = 100_000;

thread_local! {
    /// Set while a record's values are converted: a `__repr__` that logs
    /// must not make the handler convert again inside itself.
    static CONVERTING: Cell<bool> = const { Cell::new(false) };
}

/// A validated configuration: built once by the handler (so that a bad URI
/// or level is an error at set-up, as in the Rust boot), then used for a
/// new [`Shipper`] in every process that logs.
#[pyclass(frozen, module = "logcollect._native")]
#[derive(Debug)]
struct Config {
    config: logcollect::Config,
    /// `LogRecord` attributes that are not `extra=` fields.
    standard: HashSet<String>,
}

#[pymethods]
impl Config {
    /// Every time is in seconds; `None` keeps the Rust default.
    #[new]
    #[pyo3(signature = (*, broker_uri, exchange, routing_key, durable, auto_delete,
        activity_identity, standard_attributes, host=None, type_name=None, tags=None,
        queue_capacity=None, shutdown_timeout=None, connect_timeout=None,
        max_record_bytes=None, spool_dir=None, spool_max_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        broker_uri: String,
        exchange: String,
        routing_key: String,
        durable: bool,
        auto_delete: bool,
        activity_identity: Vec<(String, String)>,
        standard_attributes: Vec<String>,
        host: Option<String>,
        type_name: Option<String>,
        tags: Option<Vec<String>>,
        queue_capacity: Option<usize>,
        shutdown_timeout: Option<f64>,
        connect_timeout: Option<f64>,
        max_record_bytes: Option<usize>,
        spool_dir: Option<std::path::PathBuf>,
        spool_max_bytes: Option<u64>,
    ) -> PyResult<Self> {
        let mut b = logcollect::Config::builder()
            .broker_uri(broker_uri)
            .exchange(exchange)
            .routing_key(routing_key)
            .durable(durable)
            .auto_delete(auto_delete)
            .activity_identity(activity_identity)
            // Python's handler and logger levels decide; the shipper takes
            // whatever the handler passes on.
            .level("trace");
        if let Some(h) = host {
            b = b.host(h);
        }
        if let Some(t) = type_name {
            b = b.type_name(t);
        }
        if let Some(t) = tags {
            b = b.tags(t);
        }
        if let Some(q) = queue_capacity {
            b = b.queue_capacity(q);
        }
        if let Some(s) = shutdown_timeout {
            b = b.shutdown_timeout(seconds("shutdown_timeout", s)?);
        }
        if let Some(s) = connect_timeout {
            b = b.connect_timeout(seconds("connect_timeout", s)?);
        }
        if let Some(m) = max_record_bytes {
            b = b.max_record_bytes(m);
        }
        if let Some(d) = spool_dir {
            b = b.spool_dir(d);
        }
        if let Some(m) = spool_max_bytes {
            b = b.spool_max_bytes(m);
        }
        let config = b
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Config {
            config,
            standard: standard_attributes.into_iter().collect(),
        })
    }

    /// The shutdown deadline in seconds.
    #[getter]
    fn shutdown_timeout(&self) -> f64 {
        self.config.shutdown_timeout().as_secs_f64()
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.config)
    }
}

/// A duration from seconds, refusing what `Duration` cannot hold.
fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a finite number of seconds >= 0, got {s}"
        ))
    })
}

/// One process's shipper thread and queue.
#[pyclass(frozen, module = "logcollect._native")]
#[derive(Debug)]
struct Shipper {
    /// Always `Some` until dropped; taken by `Drop` to leak it in a child.
    inner: Option<logcollect::Shipper>,
    standard: HashSet<String>,
    /// The process that started the shipper thread.
    pid: u32,
    /// Records dropped because they were logged while converting another
    /// (a `__repr__` that logs).
    reentrant: AtomicU64,
}

/// What [`Shipper::submit`] did.
const ACCEPTED: i32 = 1;
const REFUSED: i32 = 0;
/// The shipper belongs to another process (the caller forked): start a new one.
const OTHER_PROCESS: i32 = -1;

impl Shipper {
    fn shipper(&self) -> PyResult<&logcollect::Shipper> {
        self.inner
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("shipper already dropped"))
    }

    fn in_owner_process(&self) -> bool {
        std::process::id() == self.pid
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        if !self.in_owner_process() {
            // Inherited through fork: its thread does not exist here and its
            // locks may be held forever. Dropping would run destructors over
            // that state; leak it instead (one allocation per fork).
            std::mem::forget(self.inner.take());
        }
    }
}

#[pymethods]
impl Shipper {
    /// Starts the shipper thread. Never waits for the broker.
    #[new]
    fn new(config: &Config) -> PyResult<Self> {
        let inner = logcollect::Shipper::builder()
            .config(config.config.clone())
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(Shipper {
            inner: Some(inner),
            standard: config.standard.clone(),
            pid: std::process::id(),
            reentrant: AtomicU64::new(0),
        })
    }

    /// The process that started this shipper.
    #[getter]
    fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one `LogRecord` without blocking. `message` is the formatted
    /// message, `exception` `(type name, message, traceback text, chain)`,
    /// `fields` extra `(key, value)` pairs placed before the record's own
    /// `extra=` keys. Returns 1 when accepted, 0 when refused (queue full,
    /// after shutdown: counted in `stats()`), -1 when this shipper belongs to
    /// another process (after a fork).
    #[pyo3(signature = (record, message, exception=None, fields=None))]
    fn submit(
        &self,
        record: &Bound<'_, PyAny>,
        message: &str,
        exception: Option<(String, String, String, Vec<String>)>,
        fields: Option<&Bound<'_, PyList>>,
    ) -> PyResult<i32> {
        if !self.in_owner_process() {
            return Ok(OTHER_PROCESS);
        }
        if CONVERTING.with(|c| c.replace(true)) {
            self.reentrant.fetch_add(1, Ordering::Relaxed);
            return Ok(REFUSED);
        }
        let built = self.build_record(record, message, exception, fields);
        CONVERTING.with(|c| c.set(false));
        let accepted = self.shipper()?.submit(&built?);
        Ok(if accepted { ACCEPTED } else { REFUSED })
    }

    /// Waits (without the GIL) until every record accepted before the call is
    /// confirmed by the broker, or `timeout` seconds pass. `True` when all
    /// were confirmed; `False` on timeout, after shutdown, or in another
    /// process.
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        if !self.in_owner_process() {
            return Ok(false);
        }
        let timeout = seconds("timeout", timeout)?;
        let shipper = self.shipper()?;
        Ok(py.detach(|| shipper.flush(timeout)).is_ok())
    }

    /// Delivers what it can within `timeout` seconds (without the GIL), then
    /// stops the shipper thread; what was not delivered is counted and
    /// reported on stderr. `True` when everything was delivered; `False`
    /// otherwise, also when already shut down or in another process.
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        if !self.in_owner_process() {
            return Ok(false);
        }
        let timeout = seconds("timeout", timeout)?;
        let shipper = self.shipper()?;
        Ok(py.detach(|| shipper.shutdown(timeout)).is_ok())
    }

    /// The counters, as a dict (`accepted`, `confirmed`, `pending`, `lost`
    /// and every cause; see the Rust `Stats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if !self.in_owner_process() {
            d.set_item("other_process", true)?;
            return Ok(d);
        }
        let s = self.shipper()?.stats();
        let reentrant = self.reentrant.load(Ordering::Relaxed);
        for (k, v) in [
            ("accepted", s.accepted),
            ("published", s.published),
            ("confirmed", s.confirmed),
            ("pending", s.pending()),
            ("lost", s.lost() + reentrant),
            ("nacked", s.nacked),
            ("republished", s.republished),
            ("unroutable", s.unroutable),
            ("dropped_queue_full", s.dropped_queue_full),
            ("dropped_after_shutdown", s.dropped_after_shutdown),
            ("dropped_reentrant", s.dropped_reentrant + reentrant),
            ("undelivered_at_shutdown", s.undelivered_at_shutdown),
            ("truncated", s.truncated),
            ("connects", s.connects),
            ("connect_failures", s.connect_failures),
            ("connection_losses", s.connection_losses),
            ("in_flight", s.in_flight),
        ] {
            d.set_item(k, v)?;
        }
        d.set_item("connected", s.connected)?;
        d.set_item("blocked", s.blocked)?;
        d.set_item("last_error", s.last_error)?;
        Ok(d)
    }
}

impl Shipper {
    fn build_record(
        &self,
        record: &Bound<'_, PyAny>,
        message: &str,
        exception: Option<(String, String, String, Vec<String>)>,
        fields: Option<&Bound<'_, PyList>>,
    ) -> PyResult<Record> {
        let mut r = Record::new(Level::Info, "", message);
        let mut budget = MAX_VALUES;
        if let Some(fields) = fields {
            for pair in fields.iter() {
                let (k, v): (String, Bound<'_, PyAny>) = pair.extract()?;
                let value = to_field(&v, 1, &mut budget);
                r.fields.push((k, value));
            }
        }
        // Everything a LogRecord holds is in its __dict__: one pass picks our
        // fields and, in the caller's order, the `extra=` keys.
        let attrs = record.getattr(pyo3::intern!(record.py(), "__dict__"))?;
        let attrs = attrs.cast::<PyDict>()?;
        for (k, v) in attrs.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                continue; // setattr only makes str keys; a hand-made one is skipped
            };
            let key = key.to_string_lossy();
            match &*key {
                "levelno" => r.level = level(v.extract::<i64>().unwrap_or(20)),
                "name" => r.logger = opt_str(&v).unwrap_or_default(),
                "created" => r.timestamp = v.extract::<f64>().ok().and_then(timestamp),
                "threadName" => r.thread_name = opt_str(&v),
                "pathname" => r.file = opt_str(&v),
                "lineno" => r.line = v.extract::<u32>().ok(),
                "module" => r.module_path = opt_str(&v),
                "stack_info" => r.stack_info = opt_str(&v),
                "funcName" => {
                    if let Some(f) = opt_str(&v) {
                        r.fields
                            .insert(0, ("funcName".to_owned(), FieldValue::Str(f)));
                    }
                }
                k if self.standard.contains(k) => {}
                _ => {
                    let value = to_top_field(&v, &mut budget);
                    r.fields.push((key.into_owned(), value));
                }
            }
        }
        r.exception = exception.map(|(type_name, message, text, chain)| {
            ExceptionInfo::new(type_name, message, text).chain(chain)
        });
        Ok(r)
    }
}

/// Python's numeric level to ours: each band of ten to its named level
/// (custom levels such as 25 go with the level below them).
fn level(levelno: i64) -> Level {
    match levelno {
        i64::MIN..=9 => Level::Trace,
        10..=19 => Level::Debug,
        20..=29 => Level::Info,
        30..=39 => Level::Warning,
        40..=49 => Level::Error,
        _ => Level::Critical,
    }
}

/// `LogRecord.created` (seconds, float) to a time, to the microsecond.
fn timestamp(created: f64) -> Option<SystemTime> {
    if !created.is_finite() || created < 0.0 {
        return None; // the shipper stamps it with the current time
    }
    // As CPython's datetime.fromtimestamp: the fraction alone is scaled and
    // rounded half to even (scaling the whole value first loses the last
    // microsecond to float precision at today's epoch seconds).
    let secs = created.trunc();
    let mut micros = ((created - secs) * 1e6).round_ties_even();
    let mut secs = secs;
    if micros >= 1e6 {
        secs += 1.0;
        micros -= 1e6;
    }
    (secs < u64::MAX as f64).then(|| {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(micros as u64)
    })
}

fn opt_str(v: &Bound<'_, PyAny>) -> Option<String> {
    if v.is_none() {
        return None;
    }
    match v.cast::<PyString>() {
        Ok(s) => Some(s.to_string_lossy().into_owned()),
        Err(_) => v.str().ok().map(|s| s.to_string_lossy().into_owned()),
    }
}

/// A top-level `extra=` value, converted as Python logcollect 0.14 did: str,
/// bool, int, float, None, list and dict as JSON, anything else (a tuple, a
/// datetime, bytes, an object) as its `repr()`.
fn to_top_field(v: &Bound<'_, PyAny>, budget: &mut usize) -> FieldValue {
    if v.cast::<PyTuple>().is_ok() {
        *budget = budget.saturating_sub(1);
        return repr(v);
    }
    to_field(v, 1, budget)
}

/// A value as JSON: what `json.dumps` accepts keeps its JSON type (a tuple
/// inside a list is an array, as `json.dumps` writes it), anything else is
/// its `repr()`; NaN and infinities become strings in the encoder.
fn to_field(v: &Bound<'_, PyAny>, depth: usize, budget: &mut usize) -> FieldValue {
    if *budget == 0 || depth > MAX_DEPTH {
        return FieldValue::Str("…".to_owned());
    }
    *budget -= 1;
    if v.is_none() {
        return FieldValue::Null;
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return FieldValue::Bool(b.is_true());
    }
    if v.cast::<PyInt>().is_ok() {
        if let Ok(i) = v.extract::<i64>() {
            return FieldValue::I64(i);
        }
        if let Ok(u) = v.extract::<u64>() {
            return FieldValue::U64(u);
        }
        // Beyond 64 bits: a string, as the Rust encoder does (Elasticsearch's
        // `long` is 64-bit).
        return v
            .str()
            .map(|s| FieldValue::Str(s.to_string_lossy().into_owned()))
            .unwrap_or_else(|_| repr(v));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return FieldValue::F64(f.value());
    }
    if let Ok(s) = v.cast::<PyString>() {
        return FieldValue::Str(s.to_string_lossy().into_owned());
    }
    if let Ok(list) = v.cast::<PyList>() {
        return FieldValue::Array(
            list.iter()
                .map(|item| to_field(&item, depth + 1, budget))
                .collect(),
        );
    }
    if let Ok(tuple) = v.cast::<PyTuple>() {
        return FieldValue::Array(
            tuple
                .iter()
                .map(|item| to_field(&item, depth + 1, budget))
                .collect(),
        );
    }
    if let Ok(dict) = v.cast::<PyDict>() {
        let mut members = Vec::with_capacity(dict.len());
        for (k, item) in dict.iter() {
            members.push((key_text(&k), to_field(&item, depth + 1, budget)));
        }
        return FieldValue::Object(members);
    }
    repr(v)
}

/// A dict key as `json.dumps` writes it (`True` → `"true"`, `None` →
/// `"null"`, numbers as their text); other keys, which `json.dumps` refuses,
/// as their `str()`.
fn key_text(k: &Bound<'_, PyAny>) -> String {
    if let Ok(s) = k.cast::<PyString>() {
        return s.to_string_lossy().into_owned();
    }
    if k.is_none() {
        return "null".to_owned();
    }
    if let Ok(b) = k.cast::<PyBool>() {
        return if b.is_true() { "true" } else { "false" }.to_owned();
    }
    match k.str() {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => format!("<unprintable {} key>", type_name(k)),
    }
}

/// `repr(v)`; a `__repr__` that raises gives a placeholder naming the type
/// (the record is kept).
fn repr(v: &Bound<'_, PyAny>) -> FieldValue {
    match v.repr() {
        Ok(s) => FieldValue::Str(s.to_string_lossy().into_owned()),
        Err(_) => FieldValue::Str(format!("<unrepresentable {}>", type_name(v))),
    }
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "object".to_owned())
}

/// The Rust half of the `logcollect` Python package.
/// Gives the record-id generator a fresh seed; the fork hook calls it in
/// the child (see `logcollect::after_fork_in_child`).
#[pyfunction]
fn after_fork_in_child() {
    logcollect::after_fork_in_child();
}

#[pymodule]
mod _native {
    #[pymodule_export]
    use super::{after_fork_in_child, Config, Shipper};

    #[pymodule_export]
    const ACCEPTED: i32 = super::ACCEPTED;
    #[pymodule_export]
    const REFUSED: i32 = super::REFUSED;
    #[pymodule_export]
    const OTHER_PROCESS: i32 = super::OTHER_PROCESS;
}
