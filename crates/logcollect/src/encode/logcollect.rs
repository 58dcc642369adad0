//! The `logcollect` profile ([`Profile::Logcollect`](super::Profile)): flat
//! Logstash JSON as the Python library sends it. Our fields are written at
//! the head, in the Python library's order where it has one; each user
//! field is written as it comes (`,"key":value`); `message`, the error
//! details and the activity identity close the record.

use std::cell::Cell;
use std::error::Error as StdError;

use super::json::{
    json_len, push_json_bytes, push_json_content, push_json_str, push_json_str_array,
    push_json_truncated, push_u64,
};
use super::key_cache::{note_agreed, KeyFacts};
use super::keys::{hash_key, needs_rewrite, sanitize_key, RENAMED_KEY_PREFIX};
use super::time::write_timestamp;
use super::types::Kind;
use super::{
    cut, error_text, Encoded, EncoderSettings, Head, RecordWriter, Scratch, MAX_HEAD_STR, SCRATCH,
    SIZE_HINT,
};
use crate::record::ExceptionInfo;

/// Fields we write ourselves; a user field with one of these names is renamed.
pub(crate) const RESERVED_KEYS: &[&str] = &[
    "@timestamp",
    "@version",
    "message",
    "host",
    "tags",
    "type",
    "seq",
    "levelname",
    "logger",
    "stack_info",
    "process",
    "threadName",
    "pathname",
    "lineno",
    "module",
    "record_id",
    "exc_info",
    "error_chain",
    "truncated",
    "original_bytes",
    "dropped_fields",
];

/// The fields of the `logcollect` profile's fixed head, in the order they are
/// written (`@timestamp` … `record_id`): what a consumer can treat as the
/// record's frame rather than its content (the CLI's `tail` does).
pub const RECORD_FIELDS: &[&str] = RESERVED_KEYS.split_at(16).0;

/// The field of the `logcollect` profile holding the record id, which
/// Logstash uses as the Elasticsearch document id.
pub(crate) const RECORD_ID_FIELD: &str = "record_id";

/// Room kept for the truncation marker and closing brace.
pub(crate) const MARKER_RESERVE: usize = 96;
/// Which dynamic built-in fields to write (an identity key of the same name wins).
#[derive(Debug, Clone, Copy)]
struct Emit {
    timestamp: bool,
    version: bool,
    message: bool,
    seq: bool,
    levelname: bool,
    logger: bool,
    stack_info: bool,
    thread: bool,
    pathname: bool,
    lineno: bool,
    module: bool,
    record_id: bool,
    exc_info: bool,
    error_chain: bool,
    /// The three truncation marker fields.
    truncated: bool,
    original_bytes: bool,
    dropped_fields: bool,
}

/// Per-configuration fragments of the `logcollect` record.
#[derive(Debug)]
pub(crate) struct Parts {
    /// `,"host":"…","tags":[…],"type":"…"` (minus fields the identity overrides).
    fixed: String,
    /// `,"process":1234` or empty.
    process: String,
    /// `,"k":"v"` for every identity pair.
    identity: String,
    identity_keys: Vec<String>,
    /// `hash_key` of every reserved and identity key, sorted: a user key
    /// whose hash is not among them is not reserved, which is known without
    /// comparing it to each name.
    reserved_hashes: Vec<u64>,
    emit: Emit,
}

impl Parts {
    pub(crate) fn new(settings: &EncoderSettings) -> Parts {
        let identity_keys: Vec<String> = settings
            .activity_identity
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        let has = |k: &str| identity_keys.iter().any(|i| i == k);
        let mut fixed = String::new();
        if !has("host") {
            fixed.push_str(",\"host\":");
            push_json_str(&mut fixed, &settings.host);
        }
        if !has("tags") {
            fixed.push_str(",\"tags\":");
            push_json_str_array(&mut fixed, &settings.tags);
        }
        if !has("type") {
            fixed.push_str(",\"type\":");
            push_json_str(&mut fixed, &settings.type_name);
        }
        let process = if has("process") {
            String::new()
        } else {
            format!(",\"process\":{}", settings.process_id)
        };
        let mut identity = String::new();
        for (k, v) in &settings.activity_identity {
            identity.push(',');
            push_json_str(&mut identity, k);
            identity.push(':');
            push_json_str(&mut identity, v);
        }
        let emit = Emit {
            timestamp: !has("@timestamp"),
            version: !has("@version"),
            message: !has("message"),
            seq: !has("seq"),
            levelname: !has("levelname"),
            logger: !has("logger"),
            stack_info: !has("stack_info"),
            thread: !has("threadName"),
            pathname: !has("pathname"),
            lineno: !has("lineno"),
            module: !has("module"),
            record_id: !has("record_id"),
            exc_info: !has("exc_info"),
            error_chain: !has("error_chain"),
            truncated: !has("truncated"),
            original_bytes: !has("original_bytes"),
            dropped_fields: !has("dropped_fields"),
        };
        let mut reserved_hashes: Vec<u64> = RESERVED_KEYS
            .iter()
            .copied()
            .chain(identity_keys.iter().map(String::as_str))
            .map(hash_key)
            .collect();
        reserved_hashes.sort_unstable();
        Parts {
            fixed,
            process,
            identity,
            identity_keys,
            reserved_hashes,
            emit,
        }
    }

    fn is_reserved(&self, key: &str) -> bool {
        RESERVED_KEYS.contains(&key) || self.identity_keys.iter().any(|k| k == key)
    }

    /// The head: `{` and our fields up to `record_id`.
    #[inline]
    pub(crate) fn head(&self, h: &Head<'_>) -> Vec<u8> {
        // Sized like this thread's last record, so a typical record is built
        // without growing its buffer (a regrowth copies and doubles it).
        let hint = SIZE_HINT.try_with(Cell::get).unwrap_or(0);
        let mut buf = Vec::with_capacity(hint.max(256 + self.identity.len()));
        let e = &self.emit;
        buf.push(b'{');
        let mut first = true;
        let mut sep = |buf: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
        };
        if e.timestamp {
            sep(&mut buf);
            buf.extend_from_slice(b"\"@timestamp\":\"");
            write_timestamp(&mut buf, h.micros);
            buf.push(b'"');
        }
        if e.version {
            sep(&mut buf);
            buf.extend_from_slice(b"\"@version\":1");
        }
        let fixed = self.fixed.as_bytes();
        if !fixed.is_empty() {
            sep(&mut buf);
            buf.extend_from_slice(&fixed[1..]);
        }
        if e.seq {
            sep(&mut buf);
            buf.extend_from_slice(b"\"seq\":");
            push_u64(&mut buf, h.seq);
        }
        if e.levelname {
            sep(&mut buf);
            buf.extend_from_slice(b"\"levelname\":\"");
            buf.extend_from_slice(h.level.name().as_bytes());
            buf.push(b'"');
        }
        if e.logger {
            sep(&mut buf);
            buf.extend_from_slice(b"\"logger\":");
            push_json_bytes(&mut buf, cut(h.logger));
        }
        if e.stack_info {
            sep(&mut buf);
            buf.extend_from_slice(b"\"stack_info\":");
            match h.origin.stack_info {
                Some(stack) => push_stack_info(&mut buf, stack),
                None => buf.extend_from_slice(b"null"),
            }
        }
        if !self.process.is_empty() {
            sep(&mut buf);
            buf.extend_from_slice(&self.process.as_bytes()[1..]);
        }
        if e.thread {
            sep(&mut buf);
            buf.extend_from_slice(b"\"threadName\":");
            h.origin.push_thread(&mut buf);
        }
        if let (true, Some(file)) = (e.pathname, h.loc.file) {
            sep(&mut buf);
            buf.extend_from_slice(b"\"pathname\":");
            push_json_bytes(&mut buf, cut(file));
        }
        if let (true, Some(line)) = (e.lineno, h.loc.line) {
            sep(&mut buf);
            buf.extend_from_slice(b"\"lineno\":");
            push_u64(&mut buf, u64::from(line));
        }
        if let (true, Some(module)) = (e.module, h.loc.module) {
            sep(&mut buf);
            buf.extend_from_slice(b"\"module\":");
            push_json_bytes(&mut buf, cut(module));
        }
        if e.record_id {
            sep(&mut buf);
            buf.extend_from_slice(b"\"record_id\":\"");
            let mut tmp = [0u8; uuid::fmt::Hyphenated::LENGTH];
            buf.extend_from_slice(h.id.hyphenated().encode_lower(&mut tmp).as_bytes());
            buf.push(b'"');
        }
        // The identity may have removed every built-in field: the JSON stays
        // valid because each field below starts with a comma and `{` is fixed up.
        buf
    }

    /// Whether `key` is written as it is (not rewritten, not reserved),
    /// and its hash: most keys are hashed once and told apart from the
    /// reserved names by that hash.
    pub(crate) fn plain(&self, key: &str) -> (bool, u64) {
        let h = hash_key(key);
        let plain = !needs_rewrite(key) && self.reserved_hashes.binary_search(&h).is_err();
        (plain, h)
    }

    /// Writes `,"key":` for a new key; `false` if the key was already
    /// written (or the field is dropped). A value of `kind` that differs from
    /// the key's first type goes to `<key>_<kind>`. `facts` are the key's
    /// checks, cached per thread.
    pub(crate) fn key(
        &self,
        w: &mut RecordWriter<'_>,
        key: &str,
        kind: Kind,
        facts: &KeyFacts,
    ) -> bool {
        let (clean, h) = if facts.plain {
            (std::borrow::Cow::Borrowed(key), facts.hash)
        } else {
            let clean = sanitize_key(key, |k| self.is_reserved(k));
            let h = hash_key(&clean);
            (clean, h)
        };
        let start = w.buf.len();
        let s = w.scratch();
        if s.seen.contains(&h) {
            return false;
        }
        s.seen.push(h);
        let clean = if facts.agreed == Some(kind) {
            clean
        } else if w.enc.types.conflicts(h, kind) {
            match self.retyped(w, &clean, kind) {
                Some(k) => std::borrow::Cow::Owned(k),
                None => return false,
            }
        } else {
            note_agreed(w.enc.id, key, kind);
            clean
        };
        w.scratch().fields.push((start, start));
        if facts.plain && facts.bare && matches!(clean, std::borrow::Cow::Borrowed(_)) {
            // Written as it is and nothing to escape.
            w.buf.extend_from_slice(b",\"");
            w.buf.extend_from_slice(clean.as_bytes());
            w.buf.extend_from_slice(b"\":");
        } else {
            w.buf.push(b',');
            push_json_bytes(&mut w.buf, &clean);
            w.buf.push(b':');
        }
        true
    }

    /// `<key>_<kind>` for a value whose type is not the key's first one;
    /// `None` (field dropped) when that name is taken in this record or has
    /// itself another type after three tries (a user sending `count_str` as
    /// a number…).
    fn retyped(&self, w: &mut RecordWriter<'_>, key: &str, kind: Kind) -> Option<String> {
        let mut name = key.to_owned();
        for _ in 0..3 {
            name.push('_');
            name.push_str(kind.suffix());
            if self.is_reserved(&name) {
                name.insert_str(0, RENAMED_KEY_PREFIX);
            }
            let h = hash_key(&name);
            let s = w.scratch();
            if s.seen.contains(&h) {
                return None;
            }
            s.seen.push(h);
            if !w.enc.types.conflicts(h, kind) {
                return Some(name);
            }
        }
        None
    }

    /// An exception that arrives already formatted: `exc_info` and
    /// `error_chain`, unless the record already has an error.
    pub(crate) fn exception(&self, w: &mut RecordWriter<'_>, e: &ExceptionInfo) {
        if !w.error_chain.is_empty() || !w.scratch().exc.is_empty() {
            return;
        }
        w.scratch().exc.push_str(&e.text);
        w.error_chain = e.chain.clone();
    }

    /// An error field: its message as the value; the first error of a record
    /// also fills `exc_info` (message and `Caused by:` chain, like a
    /// traceback) and `error_chain` (the sources' messages).
    pub(crate) fn error(
        &self,
        w: &mut RecordWriter<'_>,
        key: &str,
        err: &(dyn StdError + 'static),
    ) {
        w.display(key, format_args!("{err}"));
        if !w.error_chain.is_empty() || !w.scratch().exc.is_empty() {
            return;
        }
        let (text, _, chain) = error_text(err);
        w.scratch().exc = text;
        w.error_chain = chain;
    }

    /// Writes the message, error details and identity, closes the object and
    /// enforces the size cap.
    pub(crate) fn finish(&self, mut w: RecordWriter<'_>) -> Encoded {
        let max_bytes = w.enc.max_bytes;
        let scratch = w.scratch.take().expect("scratch");
        let mut buf = std::mem::take(&mut w.buf);
        let tail_start = buf.len();
        if self.emit.message {
            buf.extend_from_slice(b",\"message\":");
            push_json_bytes(&mut buf, &scratch.message);
        }
        if !scratch.exc.is_empty() {
            if self.emit.exc_info {
                buf.extend_from_slice(b",\"exc_info\":");
                push_json_bytes(&mut buf, &scratch.exc);
            }
            if self.emit.error_chain {
                buf.extend_from_slice(b",\"error_chain\":[");
                for (i, m) in w.error_chain.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    push_json_bytes(&mut buf, m);
                }
                buf.push(b']');
            }
        }
        buf.extend_from_slice(self.identity.as_bytes());
        buf.push(b'}');
        // Slack for a longer message next time; capped so one huge record
        // does not make every later buffer huge.
        let _ = SIZE_HINT.try_with(|h| h.set((buf.len() + 64).min(16 * 1024)));
        let truncated = buf.len() > max_bytes;
        if truncated {
            buf = self.truncated(&w, max_bytes, &buf, tail_start, &scratch);
        }
        fix_leading_comma(&mut buf);
        let _ = SCRATCH.try_with(|slot| slot.give_back(scratch));
        Encoded {
            id: w.id,
            routing_key: std::mem::take(&mut w.routing_key),
            body: buf,
            truncated,
        }
    }

    /// Rebuilds an oversized record within the cap: keeps the built-in fields
    /// and the identity, then as many user fields as fit (in order) and as much
    /// of the message and `exc_info` as fits, and marks it.
    fn truncated(
        &self,
        w: &RecordWriter<'_>,
        max: usize,
        full: &[u8],
        tail_start: usize,
        s: &Scratch,
    ) -> Vec<u8> {
        let head = &full[..w.head_end];
        let fixed = head.len() + self.identity.len() + MARKER_RESERVE;
        // Config guarantees max >= 4096; a pathological identity could still
        // exceed it, in which case we keep only the head and marker.
        let avail = max.saturating_sub(fixed);
        let msg_len = json_len(&s.message);
        // Room the error details need whole: `,"exc_info":…` and `,"error_chain":[…]`.
        let exc_need = if s.exc.is_empty() {
            0
        } else {
            json_len(&s.exc) + 16
        };
        let chain_need = if s.exc.is_empty() {
            0
        } else {
            w.error_chain.iter().map(|m| json_len(m) + 1).sum::<usize>() + 20
        };
        let exc_len = exc_need + chain_need;
        // The message keeps at least half the room when it is large; exc_info
        // an eighth; the user fields share the rest.
        let exc_share = exc_len.min(avail / 8);
        let fields_cap = avail.saturating_sub(msg_len.min(avail / 2) + exc_share);
        let mut out = Vec::with_capacity(max);
        out.extend_from_slice(head);
        let mut dropped = 0u64;
        let mut used = 0usize;
        for &(a, b) in &s.fields {
            let len = b.saturating_sub(a);
            if b > a && b <= tail_start && used + len <= fields_cap {
                out.extend_from_slice(&full[a..b]);
                used += len;
            } else {
                dropped += 1;
            }
        }
        let msg_cap = avail.saturating_sub(used + exc_share + 16);
        if self.emit.message {
            out.extend_from_slice(b",\"message\":");
            push_json_truncated(&mut out, &s.message, msg_cap);
        }
        if !s.exc.is_empty() && exc_share > 64 {
            // Whole when both fit; otherwise exc_info and error_chain share
            // the error's room half and half.
            let (exc_cap, chain_cap) = if exc_len <= exc_share {
                (exc_need, chain_need)
            } else {
                (exc_share / 2, exc_share / 2)
            };
            if self.emit.exc_info {
                out.extend_from_slice(b",\"exc_info\":");
                push_json_truncated(&mut out, &s.exc, exc_cap - 16);
            }
            if self.emit.error_chain {
                out.extend_from_slice(b",\"error_chain\":[");
                let n = w.error_chain.len().max(1);
                let each = (chain_cap - 20) / n;
                for (i, m) in w.error_chain.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_json_truncated(&mut out, m, each.saturating_sub(1).max(16));
                }
                out.push(b']');
            }
        }
        out.extend_from_slice(self.identity.as_bytes());
        if self.emit.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        if self.emit.original_bytes {
            out.extend_from_slice(b",\"original_bytes\":");
            push_u64(&mut out, full.len() as u64);
        }
        if self.emit.dropped_fields {
            out.extend_from_slice(b",\"dropped_fields\":");
            push_u64(&mut out, dropped);
        }
        out.push(b'}');
        out
    }
}

/// A `stack_info` text of at most [`MAX_HEAD_STR`] bytes: it sits in the
/// record's fixed head, which must fit the smallest size cap. A longer one
/// keeps its end, where Python puts the most recent calls, after `…`.
fn push_stack_info(buf: &mut Vec<u8>, stack: &str) {
    if stack.len() <= MAX_HEAD_STR {
        push_json_bytes(buf, stack);
        return;
    }
    let mut start = stack.len() - (MAX_HEAD_STR - '…'.len_utf8());
    while !stack.is_char_boundary(start) {
        start += 1;
    }
    buf.push(b'"');
    push_json_content(buf, "…");
    push_json_content(buf, &stack[start..]);
    buf.push(b'"');
}
/// After `{`, the first field may carry a leading comma (when the identity
/// replaced every built-in field before it); remove it.
fn fix_leading_comma(buf: &mut Vec<u8>) {
    if buf.get(1) == Some(&b',') {
        buf.remove(1);
    }
}
