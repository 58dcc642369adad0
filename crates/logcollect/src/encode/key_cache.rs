//! What a field key comes to under one encoder, remembered per thread: a
//! `tracing` call site sends the same keys on every call, and the checks on
//! a key (redaction globs, reserved names, the rewrite guard, escaping, the
//! field-type tracker) give the same answer each time for one encoder.
//!
//! An entry is found by the key's address and matched by the encoder's id
//! and the key's bytes, so a key at a reused address, or a key met under
//! another encoder (another shipper, a rebuilt configuration), is never
//! answered from a stale entry.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::types::Kind;

/// Keys longer than this are not cached (they are checked every time).
const MAX_KEY_LEN: usize = 32;
/// Entries per thread (a power of two): a few call sites' worth of keys.
const SLOTS: usize = 64;

/// The outcome of the checks on one key under one encoder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyFacts {
    /// A redaction glob matches the key: its values are never sent.
    pub(crate) redacted: bool,
    /// `logcollect` profile: the key is written as it is (no rewrite, not
    /// reserved) and `hash` is its hash.
    pub(crate) plain: bool,
    pub(crate) hash: u64,
    /// The key needs no JSON escaping.
    pub(crate) bare: bool,
    /// `logcollect` profile: a type the tracker has agreed to for the key
    /// (a recorded type never changes, so the agreement holds).
    pub(crate) agreed: Option<Kind>,
}

#[derive(Clone, Copy)]
struct Slot {
    /// 0: empty (encoder ids start at 1).
    encoder: u64,
    len: u8,
    bytes: [u8; MAX_KEY_LEN],
    facts: KeyFacts,
}

const EMPTY: Slot = Slot {
    encoder: 0,
    len: 0,
    bytes: [0; MAX_KEY_LEN],
    facts: KeyFacts {
        redacted: false,
        plain: false,
        hash: 0,
        bare: false,
        agreed: None,
    },
};

thread_local! {
    static CACHE: RefCell<[Slot; SLOTS]> = const { RefCell::new([EMPTY; SLOTS]) };
}

/// A fresh encoder id: never 0, never reused in the process.
pub(crate) fn next_encoder_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The slot of `text` in a per-thread table of `slots` entries (a power of
/// two), from its address and length: the same `&'static str` of a call site
/// lands in the same slot every time. Used here and by the routing-key cache.
pub(crate) fn slot_for(text: &str, slots: usize) -> usize {
    let p = text.as_ptr() as usize;
    ((p >> 3) ^ (p >> 9) ^ text.len()) & (slots - 1)
}

fn slot_of(key: &str) -> usize {
    slot_for(key, SLOTS)
}

fn matches(s: &Slot, encoder: u64, key: &str) -> bool {
    s.encoder == encoder
        && usize::from(s.len) == key.len()
        && &s.bytes[..key.len()] == key.as_bytes()
}

/// The facts of `key` under `encoder`, from this thread's cache or from
/// `compute` (then remembered).
#[inline]
pub(crate) fn facts(encoder: u64, key: &str, compute: impl FnOnce() -> KeyFacts) -> KeyFacts {
    if key.len() > MAX_KEY_LEN {
        return compute();
    }
    let i = slot_of(key);
    let hit = CACHE
        .try_with(|c| {
            let c = c.try_borrow().ok()?;
            let s = &c[i];
            matches(s, encoder, key).then_some(s.facts)
        })
        .ok()
        .flatten();
    if let Some(f) = hit {
        return f;
    }
    let f = compute();
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            let mut bytes = [0; MAX_KEY_LEN];
            bytes[..key.len()].copy_from_slice(key.as_bytes());
            c[i] = Slot {
                encoder,
                len: key.len() as u8,
                bytes,
                facts: f,
            };
        }
    });
    f
}

/// Remembers that the tracker agreed to `kind` for `key` under `encoder`.
pub(crate) fn note_agreed(encoder: u64, key: &str, kind: Kind) {
    if key.len() > MAX_KEY_LEN {
        return;
    }
    let i = slot_of(key);
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            let s = &mut c[i];
            if matches(s, encoder, key) {
                s.facts.agreed = Some(kind);
            }
        }
    });
}
