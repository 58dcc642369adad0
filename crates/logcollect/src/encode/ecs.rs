//! The ECS profile of the encoder ([`Profile::Ecs`](super::Profile)): the
//! same [`RecordWriter`] API, but fields are collected while they are visited
//! and laid out as nested objects in [`EcsParts::finish`]. Our fields are
//! written in the head ([`EcsParts::head`]; they never share a root with user
//! fields); user fields are grouped into a small tree at the end.

use std::collections::HashMap;
use std::error::Error as StdError;

use super::json::{
    cut_to, json_len, push_json_bytes, push_json_str, push_json_str_array, push_json_truncated,
    push_u64,
};
use super::keys::{hash_key, sanitize_key};
use super::time::write_timestamp;
use super::types::{Kind, TypeTracker};
use super::{cut, error_text, Encoded, EncoderSettings, Head, RecordWriter, Scratch, SCRATCH};
use crate::record::{ExceptionInfo, Level};

/// The ECS version the records declare in `ecs.version`.
pub const ECS_VERSION: &str = "8.11.0";

/// Default `ecs_service_key`: the activity-identity key whose value is
/// `service.name` (the Python library's identity names the service
/// `application`).
pub const DEFAULT_ECS_SERVICE_KEY: &str = "application";

/// Default `ecs_extra_prefix`: the object that receives user fields whose
/// first part is one of [`ECS_RESERVED_ROOTS`]. `extra` is no ECS field set
/// (`user` is one, and `labels` holds keywords only), and it echoes the
/// `extra_` renames of the `logcollect` profile.
pub const DEFAULT_ECS_EXTRA_PREFIX: &str = "extra";

/// First path parts a user field may not have: every root of ECS 8.11 (the
/// first part of every field of `generated/ecs/ecs_flat.yml` at elastic/ecs
/// tag v8.11.0: 44 names), plus `logcollect`, which holds our truncation
/// marker. A user field under one of them goes under `ecs_extra_prefix`:
/// `user` = "ann" would be a scalar where ECS has the object `user`, and
/// `url` = 3 a number where `url.*` are keywords; Elasticsearch's ECS
/// mappings would reject the record. `@timestamp` never matches (every key
/// starting with `@` is rewritten to `at_…`); it is listed as ECS lists it.
pub const ECS_RESERVED_ROOTS: &[&str] = &[
    "@timestamp",
    "agent",
    "client",
    "cloud",
    "container",
    "data_stream",
    "destination",
    "device",
    "dll",
    "dns",
    "ecs",
    "email",
    "error",
    "event",
    "faas",
    "file",
    "group",
    "host",
    "http",
    "labels",
    "log",
    "message",
    "network",
    "observer",
    "orchestrator",
    "organization",
    "package",
    "process",
    "registry",
    "related",
    "rule",
    "server",
    "service",
    "source",
    "span",
    "tags",
    "threat",
    "tls",
    "trace",
    "transaction",
    "url",
    "user",
    "user_agent",
    "vulnerability",
    "logcollect",
];

/// Longest `data_stream.dataset` (and `event.dataset`): ECS and
/// Elasticsearch's data stream naming allow 100 bytes.
const MAX_DATASET_BYTES: usize = 100;

/// The dataset of a service's records, `<service>.log`, as ECS and
/// Elasticsearch's data stream names accept it: lowercase, without `-`
/// (ECS forbids it in a dataset: it separates the parts of the data stream's
/// name) nor the characters index names refuse (`\ / * ? " < > | , # :`
/// and space), each replaced with `_`; at most 100 bytes. `None` for an
/// empty service name.
pub(crate) fn dataset(service: &str) -> Option<String> {
    if service.is_empty() {
        return None;
    }
    let mut name: String = service
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '-' | '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ':' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect();
    let room = MAX_DATASET_BYTES - ".log".len();
    if name.len() > room {
        let mut end = room;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name.push_str(".log");
    Some(name)
}

/// User paths keep at most this many parts; deeper parts are joined with
/// `_` into the last one. Elasticsearch rejects objects nested deeper than
/// 20 (`index.mapping.depth.limit`); 10 leaves room for the extra prefix
/// (4 parts at most) and `.value` moves.
const MAX_DEPTH: usize = 10;

/// Parts the extra prefix may have.
const MAX_PREFIX_PARTS: usize = 4;

/// An id value longer than this (JSON, quotes included) is not taken as
/// `trace.id`, `span.id` or `http.request.id`: ids are short (W3C trace ids
/// 32 characters, correlation ids at most 128), and the fixed part of a
/// record must stay small to fit the smallest size cap.
const MAX_ID_JSON: usize = 258;

/// Longest truncation marker:
/// `,"logcollect":{"truncated":true,"original_bytes":N,"dropped_fields":N}}`
/// with two 20-digit numbers is 109 bytes.
const MARKER_MAX: usize = 110;

/// Room kept for the marker, the `,"message":` key (11 bytes) and the mark
/// of a cut string (16 bytes).
const MARKER_RESERVE: usize = 160;

/// Fields taken as ECS fields, in this order of `ids`.
const SPECIAL_KEYS: [&str; 4] = ["trace_id", "span_id", "request_id", "traceparent"];

/// Checks an `ecs_extra_prefix`: 1 to 4 dot-separated parts, each one a key
/// the guards leave unchanged, the first not a reserved root.
pub(crate) fn check_ecs_extra_prefix(prefix: &str) -> Result<(), String> {
    let parts: Vec<&str> = prefix.split('.').collect();
    let bad = |why: &str| Err(format!("ecs_extra_prefix {prefix:?} {why}"));
    if parts.len() > MAX_PREFIX_PARTS {
        return bad("has more than 4 parts");
    }
    for p in &parts {
        if p.is_empty() || sanitize_key(p, |_| false) != *p {
            return bad("needs non-empty parts without a leading `@` or `_` and without `[` `]`");
        }
    }
    if ECS_RESERVED_ROOTS.contains(&parts[0]) {
        return bad("starts with an ECS field we write");
    }
    Ok(())
}

/// A collected field's raw key (range of `Scratch::keys`) and JSON type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldKey {
    pub(crate) key: (usize, usize),
    pub(crate) kind: Kind,
}

/// Per-configuration fragments of the ECS head.
#[derive(Debug)]
pub(crate) struct EcsParts {
    /// `,"ecs":{…},"host":{…}[,"service":{…}][,"labels":{…}][,"data_stream":{…}],"tags":[…],"event":{["dataset":…,]`
    mid: String,
    /// `,"process":{"pid":N,"thread":{"name":`
    process: String,
    /// The extra prefix's parts.
    extra: Vec<String>,
}

impl EcsParts {
    pub(crate) fn new(settings: &EncoderSettings) -> EcsParts {
        let mut mid = String::with_capacity(256);
        mid.push_str(",\"ecs\":{\"version\":");
        push_json_str(&mut mid, ECS_VERSION);
        mid.push_str("},\"host\":{\"hostname\":");
        push_json_str(&mut mid, &settings.host);
        mid.push_str(",\"name\":");
        push_json_str(&mut mid, &settings.host);
        mid.push('}');
        let service_key = settings.ecs_service_key.as_str();
        let service = settings
            .activity_identity
            .iter()
            .find(|(k, _)| k == service_key)
            .map(|(_, v)| v.as_str());
        if let Some(name) = service {
            mid.push_str(",\"service\":{\"name\":");
            push_json_str(&mut mid, name);
            mid.push('}');
        }
        let mut labels: Vec<(String, &str)> = Vec::new();
        for (k, v) in &settings.activity_identity {
            // Labels are flat keywords: no dots, and a repeated key keeps
            // its first value.
            let key = sanitize_key(k, |_| false).replace('.', "_");
            if k != service_key && !labels.iter().any(|(l, _)| *l == key) {
                labels.push((key, v));
            }
        }
        if !labels.is_empty() {
            mid.push_str(",\"labels\":{");
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    mid.push(',');
                }
                push_json_str(&mut mid, k);
                mid.push(':');
                push_json_str(&mut mid, v);
            }
            mid.push('}');
        }
        let dataset = service.and_then(dataset);
        if let Some(dataset) = &dataset {
            // Logstash's elasticsearch output routes a record to the data
            // stream its `data_stream` fields name: one per service.
            mid.push_str(",\"data_stream\":{\"dataset\":");
            push_json_str(&mut mid, dataset);
            mid.push('}');
        }
        mid.push_str(",\"tags\":");
        push_json_str_array(&mut mid, &settings.tags);
        mid.push_str(",\"event\":{");
        if let Some(dataset) = &dataset {
            // ECS: `event.dataset` should equal `data_stream.dataset`.
            mid.push_str("\"dataset\":");
            push_json_str(&mut mid, dataset);
            mid.push(',');
        }
        let process = format!(
            ",\"process\":{{\"pid\":{},\"thread\":{{\"name\":",
            settings.process_id
        );
        EcsParts {
            mid,
            process,
            extra: settings
                .ecs_extra_prefix
                .split('.')
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The head: `{` and our fields up to `process`; user fields are
    /// collected after it in the writer's buffer.
    pub(crate) fn head(&self, h: &Head<'_>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(512 + self.mid.len());
        buf.extend_from_slice(b"{\"@timestamp\":\"");
        write_timestamp(&mut buf, h.micros);
        buf.extend_from_slice(b"\",\"log\":{\"level\":\"");
        buf.extend_from_slice(level_name(h.level).as_bytes());
        buf.extend_from_slice(b"\",\"logger\":");
        push_json_bytes(&mut buf, cut(h.logger));
        let loc = &h.loc;
        if loc.file.is_some() || loc.line.is_some() {
            buf.extend_from_slice(b",\"origin\":{\"file\":{");
            if let Some(file) = loc.file {
                buf.extend_from_slice(b"\"name\":");
                push_json_bytes(&mut buf, cut(file));
            }
            if let Some(line) = loc.line {
                if loc.file.is_some() {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"\"line\":");
                push_u64(&mut buf, u64::from(line));
            }
            buf.extend_from_slice(b"}}");
        }
        buf.push(b'}');
        buf.extend_from_slice(self.mid.as_bytes());
        buf.extend_from_slice(b"\"sequence\":");
        push_u64(&mut buf, h.seq);
        buf.extend_from_slice(b",\"id\":\"");
        let mut tmp = [0u8; uuid::fmt::Hyphenated::LENGTH];
        buf.extend_from_slice(h.id.hyphenated().encode_lower(&mut tmp).as_bytes());
        buf.extend_from_slice(b"\"}");
        buf.extend_from_slice(self.process.as_bytes());
        h.origin.push_thread(&mut buf);
        buf.extend_from_slice(b"}}");
        buf
    }

    /// Keeps the raw key for [`finish`](Self::finish); the value follows in
    /// the writer's buffer.
    pub(crate) fn key(&self, w: &mut RecordWriter<'_>, key: &str, kind: Kind) -> bool {
        let start = w.buf.len();
        let s = w.scratch();
        let k0 = s.keys.len();
        s.keys.push_str(key);
        s.ecs_fields.push(FieldKey {
            key: (k0, s.keys.len()),
            kind,
        });
        s.fields.push((start, start));
        true
    }

    /// An exception that arrives already formatted (a Python traceback):
    /// `error.*`, unless the record already has an error.
    pub(crate) fn exception(&self, w: &mut RecordWriter<'_>, e: &ExceptionInfo) {
        if w.ecs_error.is_some() || !w.error_chain.is_empty() || !w.scratch().exc.is_empty() {
            return;
        }
        let s = w.scratch();
        s.exc.clear();
        s.exc.push_str(&e.message);
        s.exc.push_str(&e.text);
        let msg_len = e.message.len();
        w.error_chain = e.chain.clone();
        w.ecs_error = Some((e.type_name.clone(), msg_len, msg_len));
    }

    /// The first error of a record fills `error.*` (its field name is
    /// `error.type`); later ones are ordinary string fields.
    pub(crate) fn error(
        &self,
        w: &mut RecordWriter<'_>,
        key: &str,
        err: &(dyn StdError + 'static),
    ) {
        if w.ecs_error.is_none() {
            let (text, msg_len, chain) = error_text(err);
            w.scratch().exc = text;
            w.error_chain = chain;
            w.ecs_error = Some((key.to_owned(), msg_len, 0));
            return;
        }
        w.display(key, format_args!("{err}"));
    }

    /// Builds the record: our head, `message`, `error`, `trace`, `span`,
    /// `http`, then the user fields as nested objects; enforces the size cap.
    pub(crate) fn finish(&self, w: RecordWriter<'_>) -> Encoded {
        finish(self, w)
    }
}

/// ECS `log.level`: the lowercase Rust level names (`warn`, not Python's
/// `warning`), `critical` for panics.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warning => "warn",
        Level::Error => "error",
        Level::Critical => "critical",
    }
}

/// A user field placed in the tree: its final path and its value (a range
/// of the writer's buffer).
#[derive(Debug)]
struct UserField {
    path: Vec<String>,
    val: (usize, usize),
}

/// The first error of a record.
struct ErrorParts<'a> {
    /// The field name, cut to 128 bytes: a key is no place for an essay.
    kind: &'a str,
    message: &'a str,
    stack_trace: &'a str,
}

impl ErrorParts<'_> {
    fn push(&self, out: &mut Vec<u8>, caps: Option<usize>) {
        out.extend_from_slice(b",\"error\":{\"type\":");
        push_json_bytes(out, self.kind);
        out.extend_from_slice(b",\"message\":");
        match caps {
            None => push_json_bytes(out, self.message),
            Some(cap) => push_json_truncated(out, self.message, cap),
        }
        out.extend_from_slice(b",\"stack_trace\":");
        match caps {
            None => push_json_bytes(out, self.stack_trace),
            Some(cap) => push_json_truncated(out, self.stack_trace, cap),
        }
        out.push(b'}');
    }

    /// Bytes taken by `,"error":{"type":…,"message":"","stack_trace":""}`.
    fn overhead(&self) -> usize {
        json_len(self.kind) + 48
    }
}

/// [`EcsParts::finish`].
fn finish(parts: &EcsParts, mut w: RecordWriter<'_>) -> Encoded {
    let enc = w.enc;
    let mut scratch = w.scratch.take().expect("scratch is present until finish");
    let arena = std::mem::take(&mut w.buf);
    let head = &arena[..w.head_end];

    // Ids taken from fields, then the user fields' paths.
    let mut ids: [Option<Vec<u8>>; 3] = Default::default();
    let mut from_traceparent: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut special_seen = [false; SPECIAL_KEYS.len()];
    let mut users = Vec::with_capacity(scratch.ecs_fields.len());
    let s: &mut Scratch = &mut scratch;
    for (i, fk) in s.ecs_fields.iter().enumerate() {
        let key = &s.keys[fk.key.0..fk.key.1];
        let (a, b) = s.fields[i];
        let val = &arena[a..b];
        if let Some(si) = SPECIAL_KEYS.iter().position(|k| *k == key) {
            // The first value decides; later ones are duplicates.
            if std::mem::replace(&mut special_seen[si], true) {
                continue;
            }
            if si < ids.len() {
                if let Some(v) = id_json(val, fk.kind) {
                    ids[si] = Some(v);
                    continue;
                }
            } else if let Some(tp) = parse_traceparent(val, fk.kind) {
                from_traceparent = Some(tp);
                continue;
            }
        }
        let path = user_path(key, &parts.extra);
        // Duplicates keep the first value, before any type rename (as in
        // the `logcollect` profile).
        let h = hash_key(&path.join("."));
        if s.seen.contains(&h) {
            continue;
        }
        s.seen.push(h);
        if let Some(path) = stabilize(&enc.types, path, fk.kind) {
            users.push(UserField { path, val: (a, b) });
        }
    }
    let mut specials = Vec::new();
    let (tp_trace, tp_span) = match &from_traceparent {
        Some((t, s)) => (Some(t), Some(s)),
        None => (None, None),
    };
    if let Some(t) = ids[0].as_ref().or(tp_trace) {
        specials.extend_from_slice(b",\"trace\":{\"id\":");
        specials.extend_from_slice(t);
        specials.push(b'}');
    }
    if let Some(t) = ids[1].as_ref().or(tp_span) {
        specials.extend_from_slice(b",\"span\":{\"id\":");
        specials.extend_from_slice(t);
        specials.push(b'}');
    }
    if let Some(r) = &ids[2] {
        specials.extend_from_slice(b",\"http\":{\"request\":{\"id\":");
        specials.extend_from_slice(r);
        specials.extend_from_slice(b"}}");
    }
    let error = w
        .ecs_error
        .as_ref()
        .map(|(key, msg_len, trace_start)| ErrorParts {
            kind: cut_to(key, 128),
            message: &scratch.exc[..*msg_len],
            stack_trace: &scratch.exc[*trace_start..],
        });

    let mut tree = Tree::default();
    for u in &users {
        tree.insert(&u.path, u.val);
    }
    let mut out = Vec::with_capacity(arena.len() + scratch.message.len() + 64);
    out.extend_from_slice(head);
    out.extend_from_slice(b",\"message\":");
    push_json_bytes(&mut out, &scratch.message);
    if let Some(e) = &error {
        e.push(&mut out, None);
    }
    out.extend_from_slice(&specials);
    tree.render_root(&mut out, &arena);
    out.push(b'}');
    let truncated = out.len() > enc.max_bytes;
    if truncated {
        out = truncate(
            enc.max_bytes,
            out.len(),
            head,
            &scratch.message,
            error.as_ref(),
            &specials,
            &users,
            &arena,
        );
    }
    let _ = SCRATCH.try_with(|slot| slot.give_back(scratch));
    Encoded {
        id: w.id,
        routing_key: std::mem::take(&mut w.routing_key),
        body: out,
        truncated,
    }
}

/// Rebuilds an oversized record within `max`: our fields and ids whole;
/// then, as in the `logcollect` profile, the message keeps at least half the
/// room when it is large, the error an eighth, and the user fields share
/// the rest in order; marked with `logcollect.*`.
#[allow(clippy::too_many_arguments)]
fn truncate(
    max: usize,
    original: usize,
    head: &[u8],
    message: &str,
    error: Option<&ErrorParts<'_>>,
    specials: &[u8],
    users: &[UserField],
    arena: &[u8],
) -> Vec<u8> {
    let avail = max.saturating_sub(head.len() + specials.len() + MARKER_RESERVE);
    let msg_len = json_len(message);
    let err_len = error.map_or(0, |e| {
        e.overhead() + json_len(e.message) + json_len(e.stack_trace)
    });
    let err_share = err_len.min(avail / 8);
    let fields_cap = avail.saturating_sub(msg_len.min(avail / 2) + err_share);
    let mut dropped = 0u64;
    let mut used = 0;
    let mut tree = Tree::default();
    for u in users {
        let cost = field_cost(u);
        if used + cost > fields_cap {
            dropped += 1;
        } else if tree.insert(&u.path, u.val) {
            used += cost;
        }
    }
    let mut fields = Vec::with_capacity(used);
    tree.render_root(&mut fields, arena);
    let mut out = Vec::with_capacity(max);
    out.extend_from_slice(head);
    out.extend_from_slice(b",\"message\":");
    let msg_cap = avail.saturating_sub(fields.len() + err_share);
    push_json_truncated(&mut out, message, msg_cap);
    if let Some(e) = error {
        if err_len <= err_share {
            e.push(&mut out, None);
        } else {
            // Message and stack trace share what is left after the keys;
            // below 64 bytes each there is nothing worth keeping.
            let each = err_share.saturating_sub(e.overhead()) / 2;
            if each >= 64 {
                e.push(&mut out, Some(each));
            } else {
                dropped += 1;
            }
        }
    }
    out.extend_from_slice(specials);
    out.extend_from_slice(&fields);
    if out.len() + MARKER_MAX > max {
        // Cannot happen with the estimates above; if it does, keep the
        // promise (one object under the cap) at the fields' expense.
        dropped = users.len() as u64 + u64::from(error.is_some());
        out.truncate(head.len());
        out.extend_from_slice(b",\"message\":");
        let cap = max.saturating_sub(head.len() + specials.len() + MARKER_RESERVE);
        push_json_truncated(&mut out, message, cap);
        out.extend_from_slice(specials);
    }
    out.extend_from_slice(b",\"logcollect\":{\"truncated\":true,\"original_bytes\":");
    push_u64(&mut out, original as u64);
    out.extend_from_slice(b",\"dropped_fields\":");
    push_u64(&mut out, dropped);
    out.extend_from_slice(b"}}");
    out
}

/// An upper bound of the bytes a user field adds to the rendered tree:
/// `,"part":{` per part, its value, and room for a `.value` move.
fn field_cost(u: &UserField) -> usize {
    u.path.iter().map(|p| json_len(p) + 3).sum::<usize>() + (u.val.1 - u.val.0) + 12
}

/// An id field's value as a JSON string: strings as they are, numbers
/// quoted (ECS ids are keywords); `None` for other types, empty strings and
/// values over [`MAX_ID_JSON`].
fn id_json(val: &[u8], kind: Kind) -> Option<Vec<u8>> {
    match kind {
        Kind::Str if val.len() > 2 && val.len() <= MAX_ID_JSON => Some(val.to_vec()),
        Kind::Num if val.len() + 2 <= MAX_ID_JSON => {
            let mut v = Vec::with_capacity(val.len() + 2);
            v.push(b'"');
            v.extend_from_slice(val);
            v.push(b'"');
            Some(v)
        }
        _ => None,
    }
}

/// The trace and span ids (as JSON strings) of a valid W3C `traceparent`.
fn parse_traceparent(val: &[u8], kind: Kind) -> Option<(Vec<u8>, Vec<u8>)> {
    if kind != Kind::Str || val.len() > MAX_ID_JSON || val.len() < 2 {
        return None;
    }
    // A valid value has no character JSON escapes, so the JSON text between
    // the quotes is the value itself.
    let text = std::str::from_utf8(&val[1..val.len() - 1]).ok()?;
    let (trace, span) = super::traceparent::parse(text)?;
    let quoted = |s: &str| {
        let mut v = Vec::with_capacity(s.len() + 2);
        push_json_bytes(&mut v, s);
        v
    };
    Some((quoted(trace), quoted(span)))
}

/// A user key's path: split at `.`, empty parts skipped, each part through
/// the key guards, at most [`MAX_DEPTH`] parts, and under `extra` when the
/// first part is a reserved root.
fn user_path(key: &str, extra: &[String]) -> Vec<String> {
    let mut path: Vec<String> = key
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| sanitize_key(p, |_| false).into_owned())
        .collect();
    if path.is_empty() {
        path.push("empty_key".to_owned());
    }
    if path.len() > MAX_DEPTH {
        let tail = path.split_off(MAX_DEPTH - 1).join("_");
        path.push(tail);
    }
    if ECS_RESERVED_ROOTS.contains(&path[0].as_str()) {
        path.splice(0..0, extra.iter().cloned());
    }
    path
}

/// Applies type stability to every part of a path: each parent must stay an
/// object and the leaf keep its first type; a part that would change type
/// gets `_<type>`. `None` when a part cannot be placed after three tries.
fn stabilize(types: &TypeTracker, mut path: Vec<String>, kind: Kind) -> Option<Vec<String>> {
    let mut joined = String::new();
    let n = path.len();
    for (i, part) in path.iter_mut().enumerate() {
        let node = if i + 1 == n { kind } else { Kind::Obj };
        let base = joined.len();
        let mut tries = 0;
        loop {
            joined.truncate(base);
            if base > 0 {
                joined.push('.');
            }
            joined.push_str(part);
            if !types.conflicts(hash_key(&joined), node) {
                break;
            }
            tries += 1;
            if tries > 3 {
                return None;
            }
            part.push('_');
            part.push_str(node.suffix());
        }
    }
    Some(path)
}

/// User fields as a tree of objects, children in first-seen order.
#[derive(Debug, Default)]
struct Tree {
    /// Node 0 is the record itself (created on first use).
    nodes: Vec<Node>,
    /// `(parent, hash of the name)` → child.
    index: HashMap<(usize, u64), usize>,
}

#[derive(Debug)]
struct Node {
    name: String,
    /// A value (range of the arena), or `None` for an object.
    leaf: Option<(usize, usize)>,
    children: Vec<usize>,
}

impl Tree {
    fn child(&self, parent: usize, name: &str) -> Option<usize> {
        self.index.get(&(parent, hash_key(name))).copied()
    }

    fn add(&mut self, parent: usize, name: &str, leaf: Option<(usize, usize)>) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_owned(),
            leaf,
            children: Vec::new(),
        });
        self.nodes[parent].children.push(id);
        self.index.insert((parent, hash_key(name)), id);
        id
    }

    /// Places a value at `path`. A value where an object is (or an object
    /// needed where a value is) makes the object win and moves the value to
    /// `<path>.value`. `false` when the place is taken by a value
    /// (a duplicate: the first one stays).
    fn insert(&mut self, path: &[String], val: (usize, usize)) -> bool {
        if self.nodes.is_empty() {
            self.nodes.push(Node {
                name: String::new(),
                leaf: None,
                children: Vec::new(),
            });
        }
        let mut cur = 0;
        for (i, part) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            match self.child(cur, part) {
                None if last => {
                    self.add(cur, part, Some(val));
                    return true;
                }
                None => cur = self.add(cur, part, None),
                Some(c) if last => {
                    if self.nodes[c].leaf.is_some() {
                        return false;
                    }
                    return self.insert_value(c, val);
                }
                Some(c) => {
                    if let Some(old) = self.nodes[c].leaf.take() {
                        self.add(c, "value", Some(old));
                    }
                    cur = c;
                }
            }
        }
        false // an empty path; `user_path` never makes one
    }

    /// Puts a value into object `obj` as `value` (descending while `value`
    /// is itself an object).
    fn insert_value(&mut self, mut obj: usize, val: (usize, usize)) -> bool {
        loop {
            match self.child(obj, "value") {
                None => {
                    self.add(obj, "value", Some(val));
                    return true;
                }
                Some(c) if self.nodes[c].leaf.is_some() => return false,
                Some(c) => obj = c,
            }
        }
    }

    /// `,"k":v` for every top-level field.
    fn render_root(&self, out: &mut Vec<u8>, arena: &[u8]) {
        if let Some(root) = self.nodes.first() {
            for &c in &root.children {
                out.push(b',');
                self.render(c, out, arena);
            }
        }
    }

    fn render(&self, id: usize, out: &mut Vec<u8>, arena: &[u8]) {
        let node = &self.nodes[id];
        push_json_bytes(out, &node.name);
        out.push(b':');
        match node.leaf {
            Some((a, b)) => out.extend_from_slice(&arena[a..b]),
            None => {
                out.push(b'{');
                for (i, &c) in node.children.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.render(c, out, arena);
                }
                out.push(b'}');
            }
        }
    }
}

#[cfg(test)]
#[path = "ecs_tests.rs"]
mod tests;
