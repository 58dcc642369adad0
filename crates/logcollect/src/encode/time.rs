//! The record's `@timestamp`: RFC 3339 in UTC with microseconds and `Z`,
//! from microseconds since the Unix epoch that the caller passes in (the
//! encoder reads no clock).

use std::cell::Cell;

use super::json::DIGIT_PAIRS;

thread_local! {
    /// `(unix seconds, "YYYY-MM-DDTHH:MM:SS")` of the last timestamp on this thread.
    static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC. The date part is cached per second.
pub(crate) fn write_timestamp(buf: &mut Vec<u8>, micros: u64) {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let (cached, mut text) = LAST_SECOND.with(Cell::get);
    if cached != secs {
        text = civil(secs);
        LAST_SECOND.with(|c| c.set((secs, text)));
    }
    buf.extend_from_slice(&text);
    // `.ffffffZ`, the six digits two at a time.
    let mut f = *b".000000Z";
    let mut n = frac as usize;
    for at in [5, 3, 1] {
        let pair = n % 100 * 2;
        n /= 100;
        f[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    buf.extend_from_slice(&f);
}

/// Unix seconds to `YYYY-MM-DDTHH:MM:SS` (proleptic Gregorian, UTC), after
/// Howard Hinnant's `civil_from_days`.
pub(crate) fn civil(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut out = [0u8; 19];
    let put = |out: &mut [u8], v: u64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out[0..4], y.clamp(0, 9999) as u64, 4);
    out[4] = b'-';
    put(&mut out[5..7], m as u64, 2);
    out[7] = b'-';
    put(&mut out[8..10], d as u64, 2);
    out[10] = b'T';
    put(&mut out[11..13], sod / 3600, 2);
    out[13] = b':';
    put(&mut out[14..16], sod / 60 % 60, 2);
    out[16] = b':';
    put(&mut out[17..19], sod % 60, 2);
    out
}
