//! The bytes of a spool segment: how a record is written, checked and read
//! back, in the current format (2) and in the one version 0.1 wrote (1).
//!
//! ## Version 2
//!
//! A segment starts with the 8-byte magic `LCSPOOL2`, then records:
//!
//! ```text
//! [FE 4C 43 FF]  sync marker
//! u32 LE         CRC-32 (IEEE) of the next field and the payload
//! u32 LE         payload length
//! payload:
//!   u32 LE       index of the record in its segment (0, 1, 2, …)
//!   u64 LE       seq: the sequence number the writing process gave it
//!   16 bytes     record id (UUID)
//!   u8           flags (bit 0: the body was truncated to the size cap)
//!   u16 LE       routing key length, then the routing key (UTF-8)
//!   body         the rest
//! ```
//!
//! The marker holds 0xFE and 0xFF, bytes that never occur in UTF-8, so it
//! cannot appear inside a routing key or a (JSON) body: after damage, the
//! reader looks for the next marker whose length and CRC check out and
//! resumes there. The index makes the count of what was skipped exact: the
//! records between the last good index and the next one are the lost ones.
//!
//! ## Version 1 (logcollect 0.1)
//!
//! Magic `LCSPOOL1`; records are `u32 LE payload length`, `u32 LE CRC-32 of
//! the payload`, payload `u8 routing key length, routing key, 16-byte id,
//! body`. Without a marker there is no resynchronising: damage ends the
//! reading of a version 1 segment.

use crate::encode::Encoded;

pub(super) const MAGIC_LEN: u64 = 8;
pub(super) const MAGIC_V1: [u8; 8] = *b"LCSPOOL1";
pub(super) const MAGIC_V2: [u8; 8] = *b"LCSPOOL2";
pub(super) const MARKER: [u8; 4] = [0xFE, b'L', b'C', 0xFF];

/// Marker, CRC, length.
const HEADER_V2: usize = 12;
/// Index, seq, id, flags, routing key length.
const FIXED_V2: usize = 4 + 8 + 16 + 1 + 2;
/// Length, CRC.
const HEADER_V1: usize = 8;
/// Routing key length, id.
const FIXED_V1: usize = 1 + 16;
/// No valid payload is larger: a record is at most 128 MiB (RabbitMQ's
/// message limit, which the configuration enforces), plus its fields.
pub(super) const MAX_PAYLOAD: usize = 129 << 20;
const FLAG_TRUNCATED: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

impl Version {
    pub(super) fn from_magic(magic: &[u8]) -> Option<Version> {
        if magic == MAGIC_V2 {
            Some(Version::V2)
        } else if magic == MAGIC_V1 {
            Some(Version::V1)
        } else {
            None
        }
    }

    pub(super) fn header_len(self) -> usize {
        match self {
            Version::V1 => HEADER_V1,
            Version::V2 => HEADER_V2,
        }
    }

    /// The whole length of the record whose header is `h` (at least
    /// `header_len` bytes), or `None` when `h` cannot start a record.
    pub(super) fn record_len(self, h: &[u8]) -> Option<usize> {
        let (len_at, fixed) = match self {
            Version::V1 => (0, FIXED_V1),
            Version::V2 if h[..4] == MARKER => (8, FIXED_V2),
            Version::V2 => return None,
        };
        let len = u32::from_le_bytes(h[len_at..len_at + 4].try_into().ok()?) as usize;
        (fixed..=MAX_PAYLOAD)
            .contains(&len)
            .then_some(self.header_len() + len)
    }

    /// Whether `rec` (exactly one record's bytes, `record_len` long) is
    /// whole: its CRC matches and its fields fit.
    pub(super) fn check(self, rec: &[u8]) -> bool {
        let covered = match self {
            Version::V1 => &rec[HEADER_V1..],
            Version::V2 => &rec[8..],
        };
        let crc = u32::from_le_bytes(rec[4..8].try_into().expect("4 bytes"));
        crc32fast::hash(covered) == crc && self.layout(rec).is_some()
    }

    /// Where the routing key, the id and the body are in `rec`, when they
    /// fit and the routing key is UTF-8.
    fn layout(self, rec: &[u8]) -> Option<Layout> {
        let (rk_at, rk_len) = match self {
            Version::V1 => (HEADER_V1 + 1, usize::from(rec[HEADER_V1])),
            Version::V2 => {
                let at = HEADER_V2 + 29;
                let len = u16::from_le_bytes(rec[at..at + 2].try_into().ok()?);
                (at + 2, usize::from(len))
            }
        };
        let rk_end = rk_at + rk_len;
        let (id_at, body_at) = match self {
            Version::V1 => (rk_end, rk_end + 16),
            Version::V2 => (HEADER_V2 + 12, rk_end),
        };
        if body_at > rec.len() {
            return None;
        }
        std::str::from_utf8(&rec[rk_at..rk_end]).ok()?;
        Some(Layout {
            rk_at,
            rk_end,
            id_at,
            body_at,
        })
    }

    /// The record in `rec`, which passed [`check`](Self::check).
    pub(super) fn decode(self, rec: &[u8]) -> Option<Decoded> {
        let l = self.layout(rec)?;
        let id: [u8; 16] = rec[l.id_at..l.id_at + 16].try_into().ok()?;
        let routing_key = std::str::from_utf8(&rec[l.rk_at..l.rk_end]).ok()?;
        let (index, seq, truncated) = match self {
            Version::V1 => (None, None, false),
            Version::V2 => {
                let p = &rec[HEADER_V2..];
                let index = u32::from_le_bytes(p[0..4].try_into().ok()?);
                let seq = u64::from_le_bytes(p[4..12].try_into().ok()?);
                (Some(index), Some(seq), p[28] & FLAG_TRUNCATED != 0)
            }
        };
        Some(Decoded {
            index,
            seq,
            rec: Encoded {
                id: uuid::Uuid::from_bytes(id),
                routing_key: routing_key.to_owned(),
                body: rec[l.body_at..].to_vec(),
                truncated,
            },
        })
    }

    /// The index field of a checked version 2 record.
    pub(super) fn index(self, rec: &[u8]) -> Option<u32> {
        match self {
            Version::V1 => None,
            Version::V2 => Some(u32::from_le_bytes(
                rec[HEADER_V2..HEADER_V2 + 4].try_into().expect("4 bytes"),
            )),
        }
    }

    /// Whether the bytes from a position to the end of the file, `remaining`
    /// of them starting with `head` (at most a header's worth), are one
    /// record cut short by the end of the file: a write that never finished
    /// (a crash, or a failed write whose cut-back failed too), as opposed to
    /// damaged bytes.
    pub(super) fn is_torn(self, head: &[u8], remaining: u64) -> bool {
        if head.len() < self.header_len() {
            return match self {
                Version::V1 => true,
                Version::V2 => {
                    let n = head.len().min(MARKER.len());
                    head[..n] == MARKER[..n]
                }
            };
        }
        self.record_len(head)
            .is_some_and(|len| len as u64 > remaining)
    }
}

struct Layout {
    rk_at: usize,
    rk_end: usize,
    id_at: usize,
    body_at: usize,
}

/// A record read back, with what its format carries besides.
#[derive(Debug)]
pub(super) struct Decoded {
    /// Its index in the segment (version 2).
    pub(super) index: Option<u32>,
    /// The seq its writer gave it (version 2).
    pub(super) seq: Option<u64>,
    pub(super) rec: Encoded,
}

/// Bytes `rec` takes in a version 2 segment, or `None` when it cannot be
/// stored at all (a routing key over 64 KiB, a payload over `MAX_PAYLOAD`).
pub(super) fn encoded_len(rec: &Encoded) -> Option<u64> {
    let rk = rec.routing_key.len();
    let payload = FIXED_V2 + rk + rec.body.len();
    (rk <= usize::from(u16::MAX) && payload <= MAX_PAYLOAD).then_some((HEADER_V2 + payload) as u64)
}

/// Writes `rec` as one version 2 record into `buf` (cleared first), so it
/// goes to disk in one write. `rec` must pass [`encoded_len`].
pub(super) fn encode(buf: &mut Vec<u8>, index: u32, seq: u64, rec: &Encoded) {
    let rk = rec.routing_key.as_bytes();
    let payload = FIXED_V2 + rk.len() + rec.body.len();
    buf.clear();
    buf.reserve(HEADER_V2 + payload);
    buf.extend_from_slice(&MARKER);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(payload as u32).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(rec.id.as_bytes());
    buf.push(if rec.truncated { FLAG_TRUNCATED } else { 0 });
    buf.extend_from_slice(&(rk.len() as u16).to_le_bytes());
    buf.extend_from_slice(rk);
    buf.extend_from_slice(&rec.body);
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Where the next sync marker starts in `bytes`.
pub(super) fn find_marker(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MARKER.len()).position(|w| w == MARKER)
}

/// Where the last sync marker starts in `bytes` at or before `before`.
pub(super) fn rfind_marker(bytes: &[u8], before: usize) -> Option<usize> {
    let end = (before + MARKER.len()).min(bytes.len());
    bytes[..end]
        .windows(MARKER.len())
        .rposition(|w| w == MARKER)
}
