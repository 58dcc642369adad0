//! W3C `traceparent` values (trace-context §3.2), read on the encoder's side:
//! the ECS profile takes `trace.id` and `span.id` from a `traceparent`
//! field, and [`correlation`](crate::correlation) reads the trace id of a
//! message header with the same rules.

/// The trace id (32 lowercase hex digits) and the span id (16) of a W3C
/// `traceparent` value, or `None` when the value is malformed, uses version
/// `ff`, or has an all-zero trace or span id.
pub(crate) fn parse(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    // Version 00 has exactly four parts; later versions may append more.
    if version == "00" && rest.is_some() {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace, span))
}
