//! Key guards shared by both profiles: a user key is made safe for Logstash
//! and Elasticsearch (`@x` → `at_x`, leading `_` and names we write →
//! `extra_…`, `[` `]` → `_`), and keys are told apart by a 64-bit hash.

use std::borrow::Cow;

/// Prefix given to a user key that collides with a reserved or identity key.
pub const RENAMED_KEY_PREFIX: &str = "extra_";

/// Makes a user key safe for Logstash and Elasticsearch.
pub(crate) fn sanitize_key(key: &str, reserved: impl Fn(&str) -> bool) -> Cow<'_, str> {
    if !needs_rewrite(key) && !reserved(key) {
        return Cow::Borrowed(key);
    }
    let mut k = String::with_capacity(key.len() + RENAMED_KEY_PREFIX.len());
    if key.is_empty() {
        k.push_str("empty_key");
    } else if let Some(rest) = key.strip_prefix('@') {
        // `@timestamp` from a user must not become our timestamp: `at_timestamp`.
        k.push_str("at_");
        k.push_str(rest);
    } else {
        k.push_str(key);
    }
    // Logstash reads `[a][b]` as a field reference: keep the text, drop the syntax.
    let mut k = k.replace(['[', ']'], "_");
    // Leading `_` collides with Elasticsearch metadata (`_id`, `_source`).
    if k.starts_with('_') || reserved(&k) {
        k.insert_str(0, RENAMED_KEY_PREFIX);
    }
    Cow::Owned(k)
}

/// Whether `key` is rewritten whatever the reserved names: empty, starting
/// with `@` or `_`, or holding `[` or `]`.
pub(crate) fn needs_rewrite(key: &str) -> bool {
    // Bytes, not chars: every byte looked for is ASCII, and `contains` with
    // a char pattern decodes UTF-8 along the way.
    let bytes = key.as_bytes();
    matches!(bytes.first(), None | Some(b'@' | b'_'))
        || bytes.iter().any(|&b| b == b'[' || b == b']')
}

pub(crate) fn hash_key(k: &str) -> u64 {
    // FNV-1a: keys are short; a 64-bit collision between two keys of one
    // record is practically impossible.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
