//! Type stability (both profiles): the first JSON type each user key is sent
//! with is remembered per encoder ([`TypeTracker`], part of the encoder's
//! state), and a later value of another type goes to `<key>_<type>`, so
//! Elasticsearch's dynamic mapping never rejects a document.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

/// How many user keys (ECS: paths) one shipper remembers the JSON type of.
/// 10,000 covers any sane schema at about 20 bytes each (200 KB); a service
/// that makes keys from data (ids as keys) stops being tracked there instead
/// of growing without bound.
pub const TYPE_TRACKING_MAX_KEYS: usize = 10_000;

/// JSON type of a field value, as far as Elasticsearch's mapping cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    /// Integers and floats: Elasticsearch coerces one into the other.
    Num,
    Str,
    Arr,
    Obj,
}

impl Kind {
    /// The suffix of a renamed key: `count_str`.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Num => "num",
            Kind::Str => "str",
            Kind::Arr => "arr",
            Kind::Obj => "obj",
        }
    }

    /// The type of a valid JSON value.
    pub(crate) fn of_json(json: &[u8]) -> Kind {
        match json.first() {
            Some(b'"') | None => Kind::Str,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            Some(b'[') => Kind::Arr,
            Some(b'{') => Kind::Obj,
            Some(_) => Kind::Num,
        }
    }

    pub(crate) fn of_f64(v: f64) -> Kind {
        if v.is_finite() {
            Kind::Num
        } else {
            Kind::Str // written as "NaN", "Infinity", "-Infinity"
        }
    }
}

/// Hashes that are already FNV-1a hashes of the key, mixed once more so the
/// map's buckets and control bytes both get well-spread bits.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        let h = self.0 ^ (self.0 >> 31);
        h.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// 16 shards: records logged from many threads rarely meet on one lock.
const TYPE_SHARDS: usize = 16;

type KindMap = HashMap<u64, Kind, BuildHasherDefault<KeyHashHasher>>;

/// The first JSON type seen per user key (by key hash), bounded in size.
#[derive(Debug)]
pub(crate) struct TypeTracker {
    shards: [RwLock<KindMap>; TYPE_SHARDS],
    pub(crate) len: AtomicUsize,
    max: usize,
    /// Tells this tracker's entries apart in the per-thread cache.
    salt: u64,
}

/// Entries of the per-thread cache before it starts afresh.
const KIND_CACHE_MAX: usize = 1024;

thread_local! {
    /// Types this thread has read from a tracker (key hash ^ tracker salt).
    /// A recorded type never changes, so a copy is always right, and a key
    /// on every record (`request_id`) is then read without touching a lock
    /// shared with other threads.
    static KIND_CACHE: RefCell<KindMap> = RefCell::new(KindMap::default());
}

impl TypeTracker {
    pub(crate) fn new(max: usize) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TypeTracker {
            shards: Default::default(),
            len: AtomicUsize::new(0),
            max,
            salt: NEXT
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Whether `kind` differs from the first type seen for the key hashed
    /// `h`. The first sighting records `kind` (while there is room); `null`
    /// and untracked keys never conflict.
    pub(crate) fn conflicts(&self, h: u64, kind: Kind) -> bool {
        if kind == Kind::Null || self.max == 0 {
            return false;
        }
        let slot = h ^ self.salt;
        let cached = KIND_CACHE
            .try_with(|c| c.try_borrow().ok().and_then(|c| c.get(&slot).copied()))
            .ok()
            .flatten();
        if let Some(k) = cached {
            return k != kind;
        }
        let Some(first) = self.first_kind(h, kind) else {
            return false; // not tracked
        };
        let _ = KIND_CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if c.len() >= KIND_CACHE_MAX {
                    c.clear();
                }
                c.insert(slot, first);
            }
        });
        first != kind
    }

    /// The first type recorded for `h`, recording `kind` if there is none
    /// yet and there is room; `None` when the key is not tracked.
    fn first_kind(&self, h: u64, kind: Kind) -> Option<Kind> {
        let shard = &self.shards[(h >> 60) as usize % TYPE_SHARDS];
        if let Some(k) = shard.read().unwrap_or_else(PoisonError::into_inner).get(&h) {
            return Some(*k);
        }
        if self.len.load(Ordering::Relaxed) >= self.max {
            return None;
        }
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = map.get(&h) {
            return Some(*k); // another thread was first
        }
        let room = self
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        room.then(|| {
            map.insert(h, kind);
            kind
        })
    }
}
