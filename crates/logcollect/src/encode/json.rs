//! JSON text writing, shared by both profiles: strings escaped (UTF-8 kept
//! as it is), numbers, strings cut to a byte budget on a character boundary,
//! and nested values (arrays and objects) bounded in depth.

use std::fmt::{self, Write as _};

use super::keys::{hash_key, sanitize_key};
use crate::record::FieldValue;

/// Nested values (arrays and objects in a field) deeper than this are sent
/// as a string holding their JSON: Elasticsearch refuses objects nested
/// deeper than 20 (`index.mapping.depth.limit`), and a bound keeps a
/// pathological value from exhausting the caller's stack.
pub(crate) const MAX_NESTING: usize = 20;
/// Inside such a string, levels beyond this are written as `"…"`: the text
/// stays bounded whatever the value's depth.
const MAX_NESTING_TEXT: usize = 64;

/// `"00"` to `"99"`, back to back: decimal digits two at a time.
pub(crate) const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal, two digits per division (every record writes
/// `seq` and `lineno`, most write a number field).
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        tmp[i] = b'0' + n as u8;
    }
    buf.extend_from_slice(&tmp[i..]);
}

pub(crate) fn push_f64(buf: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        buf.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        buf.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else if !push_f64_short(buf, v) {
        // `{:?}` keeps a `.0` on whole numbers (as Python: `3.0`) and uses
        // exponents JSON accepts (`1e300`).
        let _ = write!(JsonRaw(buf), "{v:?}");
    }
}

/// Writes `v` exactly as `{:?}` does when it has at most six decimals and
/// fewer than 16 digits (latencies, ratios, prices: most floats that are
/// logged), and returns `false`, having written nothing, otherwise.
/// Formatting a float costs ~600 instructions, as much as a whole field.
///
/// Why it is the same text: for the smallest `k` such that the integer
/// `n = round(|v| * 10^k)` gives back `|v|` as `n / 10^k` (both exact in an
/// `f64`, the division correctly rounded, as parsing is), `n / 10^k` is the
/// shortest decimal that reads back as `v`, which is what `{:?}` prints;
/// with `n` below 10^15, no other `n` with `k` decimals reads back as `v`.
/// `{:?}` uses an exponent below 1e-4 and from 1e16: both are left to it.
fn push_f64_short(buf: &mut Vec<u8>, v: f64) -> bool {
    const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
    let a = v.abs();
    if !(1e-4..1e15).contains(&a) {
        return false;
    }
    for (k, &p) in POW10.iter().enumerate() {
        let n = (a * p).round();
        if n >= 1e15 {
            return false;
        }
        if n / p != a {
            continue;
        }
        // Below 10^15: exact as an integer.
        let (n, p) = (n as u64, 10u64.pow(k as u32));
        if v < 0.0 {
            buf.push(b'-');
        }
        push_u64(buf, n / p);
        buf.push(b'.');
        if k == 0 {
            buf.push(b'0');
        } else {
            let mut digits = [b'0'; 6];
            let mut frac = n % p;
            for d in digits[..k].iter_mut().rev() {
                *d = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            buf.extend_from_slice(&digits[..k]);
        }
        return true;
    }
    false
}

struct JsonRaw<'a>(&'a mut Vec<u8>);
impl fmt::Write for JsonRaw<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Escapes everything written into it as JSON string content.
pub(crate) struct JsonStrWriter<'a>(pub(crate) &'a mut Vec<u8>);
impl fmt::Write for JsonStrWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_json_content(self.0, s);
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as JSON string content (no quotes). UTF-8 is written as is;
/// `"`, `\` and control characters are escaped.
pub(crate) fn push_json_content(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Most strings (paths, module names, messages) need no escape at all: a
    // scan eight bytes at a time, then one copy.
    let Some(first) = first_escape(bytes) else {
        buf.extend_from_slice(bytes);
        return;
    };
    buf.extend_from_slice(&bytes[..first]);
    let mut start = first;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[(b >> 4) as usize]);
            buf.push(HEX[(b & 0xf) as usize]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// Whether JSON needs `b` escaped in a string: a quote, a backslash, a
/// control character or DEL.
pub(crate) fn needs_escape(b: &u8) -> bool {
    *b < 0x20 || *b == b'"' || *b == b'\\' || *b == 0x7f
}

/// The index of the first byte of `bytes` that [`needs_escape`]. Eight bytes
/// at a time (one `u64`): `position` over bytes with four comparisons each
/// was the encoder's largest cost (a record writes ~100 bytes of strings).
fn first_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A high bit set where some byte of `x` is below `n` (n <= 0x80): exact
    // as to whether there is one, which is all that is asked here.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let equal = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if below(x, 0x20) | equal(x, b'"') | equal(x, b'\\') | equal(x, 0x7f) != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(needs_escape).map(|i| at + i)
}

pub(crate) fn push_json_bytes(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    push_json_content(buf, s);
    buf.push(b'"');
}

pub(crate) fn push_json_str(out: &mut String, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 2);
    push_json_bytes(&mut v, s);
    // Escaping ASCII bytes of valid UTF-8 keeps it valid UTF-8.
    out.push_str(&String::from_utf8(v).unwrap_or_default());
}

/// Appends `["a","b",…]`.
pub(crate) fn push_json_str_array(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, item);
    }
    out.push(']');
}

/// Length of `s` once escaped, quotes included.
pub(crate) fn json_len(s: &str) -> usize {
    let mut v = Vec::new();
    push_json_bytes(&mut v, s);
    v.len()
}

/// Appends `s` as a JSON string of at most `max` bytes (quotes included); a
/// cut string ends with `…[truncated]`. Cuts only between characters, so no
/// escape sequence or UTF-8 sequence is ever split.
pub(crate) fn push_json_truncated(buf: &mut Vec<u8>, s: &str, max: usize) {
    const MARK: &str = "…[truncated]";
    let start = buf.len();
    push_json_bytes(buf, s);
    if buf.len() - start <= max {
        return;
    }
    buf.truncate(start);
    buf.push(b'"');
    let budget = max.saturating_sub(2 + MARK.len());
    let mut one = Vec::with_capacity(8);
    let mut tmp = [0u8; 4];
    for c in s.chars() {
        one.clear();
        push_json_content(&mut one, c.encode_utf8(&mut tmp));
        if buf.len() - start - 1 + one.len() > budget {
            break;
        }
        buf.extend_from_slice(&one);
    }
    buf.extend_from_slice(MARK.as_bytes());
    buf.push(b'"');
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn cut_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Appends a nested value (an element or member of an array or object
/// field) as JSON. Keys get the top-level rewrites (`@`, `_`, `[` `]`)
/// except the renaming of our own field names, which only matters at the
/// top; a repeated key keeps its first value. Below [`MAX_NESTING`] levels
/// the rest is a string holding its JSON.
pub(crate) fn push_nested(buf: &mut Vec<u8>, v: &FieldValue, depth: usize) {
    match v {
        FieldValue::Null => buf.extend_from_slice(b"null"),
        FieldValue::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        FieldValue::I64(i) => {
            if *i < 0 {
                buf.push(b'-');
            }
            push_u64(buf, i.unsigned_abs());
        }
        FieldValue::U64(u) => push_u64(buf, *u),
        FieldValue::F64(f) => push_f64(buf, *f),
        FieldValue::Str(s) => push_json_bytes(buf, s),
        FieldValue::Array(_) | FieldValue::Object(_) if depth >= MAX_NESTING => {
            let mut inner = Vec::new();
            push_nested_text(&mut inner, v, 0);
            // The inner text is valid UTF-8 JSON: escape it as one string.
            push_json_bytes(buf, &String::from_utf8_lossy(&inner));
        }
        FieldValue::Array(items) => push_items(buf, items, |buf, v| push_nested(buf, v, depth + 1)),
        FieldValue::Object(members) => {
            push_members(buf, members, |buf, v| push_nested(buf, v, depth + 1))
        }
    }
}

/// The JSON text of a value nested too deep, itself bounded at
/// [`MAX_NESTING_TEXT`] levels.
fn push_nested_text(buf: &mut Vec<u8>, v: &FieldValue, depth: usize) {
    match v {
        FieldValue::Array(_) | FieldValue::Object(_) if depth >= MAX_NESTING_TEXT => {
            push_json_bytes(buf, "…");
        }
        FieldValue::Array(items) => {
            push_items(buf, items, |buf, v| push_nested_text(buf, v, depth + 1))
        }
        FieldValue::Object(members) => {
            push_members(buf, members, |buf, v| push_nested_text(buf, v, depth + 1))
        }
        scalar => push_nested(buf, scalar, 0),
    }
}

/// `[v,…]`.
fn push_items(
    buf: &mut Vec<u8>,
    items: &[FieldValue],
    mut value: impl FnMut(&mut Vec<u8>, &FieldValue),
) {
    buf.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        value(buf, item);
    }
    buf.push(b']');
}

/// `{"k":v,…}` with cleaned keys, the first of repeated keys winning.
fn push_members(
    buf: &mut Vec<u8>,
    members: &[(String, FieldValue)],
    mut value: impl FnMut(&mut Vec<u8>, &FieldValue),
) {
    let mut seen = std::collections::HashSet::with_capacity(members.len());
    buf.push(b'{');
    for (k, v) in members {
        let clean = sanitize_key(k, |_| false);
        if !seen.insert(hash_key(&clean)) {
            continue;
        }
        if seen.len() > 1 {
            buf.push(b',');
        }
        push_json_bytes(buf, &clean);
        buf.push(b':');
        value(buf, v);
    }
    buf.push(b'}');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{first_escape, needs_escape, push_f64, push_u64};

    #[test]
    fn integers_are_written_in_decimal() {
        let mut n = 1u64;
        let mut values = vec![0, u64::MAX];
        while let Some(m) = n.checked_mul(10) {
            values.extend([n - 1, n, n + 1]);
            n = m;
        }
        for v in values {
            let mut buf = Vec::new();
            push_u64(&mut buf, v);
            assert_eq!(String::from_utf8(buf).expect("ASCII"), v.to_string());
        }
    }

    fn f64_text(v: f64) -> String {
        let mut buf = Vec::new();
        push_f64(&mut buf, v);
        String::from_utf8(buf).expect("ASCII")
    }

    #[test]
    fn floats_at_the_edges_of_the_short_path_are_written_as_debug_writes_them() {
        for v in [
            1.5,
            -1.5,
            0.0,
            -0.0,
            3.0,
            0.1,
            0.2,
            0.3,
            1e-4,
            1.2e-4,
            9.99e-5,
            5e-5,
            1e-5,
            0.000123,
            0.0001234,
            123456.789,
            1e15,
            999_999_999_999_999.0,
            1e14 + 0.5,
            1e16,
            0.1 + 0.2,
            2.0_f64.sqrt(),
            1.0 / 3.0,
            1234.000001,
            5e-324,
            f64::MAX,
        ] {
            assert_eq!(f64_text(v), format!("{v:?}"), "{v:e}");
        }
    }

    proptest! {
        /// The word-at-a-time scan finds the same first byte as a scan of
        /// one byte at a time, wherever it sits in the eight-byte words.
        #[test]
        fn first_escape_is_the_first_byte_that_needs_one(
            bytes in prop::collection::vec(
                prop_oneof![
                    4 => 0x20u8..0x7f,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => Just(0x7fu8),
                    1 => 0u8..0x20,
                    1 => 0x80u8..=0xff,
                ],
                0..40,
            ),
        ) {
            prop_assert_eq!(first_escape(&bytes), bytes.iter().position(needs_escape));
        }

        /// The short path writes what `{:?}` writes: decimals with up to
        /// eight places (some take the short path, some not) and any bits.
        #[test]
        fn floats_are_written_as_debug_writes_them(
            n in -10_000_000_000_000_000i64..10_000_000_000_000_000,
            small in -1_000_000i64..1_000_000,
            places in 0u32..9,
            bits in any::<u64>(),
        ) {
            for m in [n, small] {
                let decimal = m as f64 / 10f64.powi(places as i32);
                prop_assert_eq!(f64_text(decimal), format!("{decimal:?}"));
            }
            let any = f64::from_bits(bits);
            if any.is_finite() {
                prop_assert_eq!(f64_text(any), format!("{any:?}"));
            }
        }
    }
}
