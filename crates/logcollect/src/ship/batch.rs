//! Several records in one AMQP message: which records go together and how
//! the body is written.

use crate::config::BatchFormat;
use crate::encode::Encoded;

/// How records become message bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub(crate) records_per_message: usize,
    pub(crate) max_bytes: usize,
    pub(crate) format: BatchFormat,
}

impl Batching {
    /// Whether bodies are batch-shaped even with one record: `json_lines`
    /// bodies always end with a newline (Logstash's codec holds an
    /// unterminated line back), and with batching on a lone record is still
    /// written the batch's way.
    fn batched(&self) -> bool {
        self.records_per_message > 1 || self.format == BatchFormat::JsonLines
    }

    /// How many of `sizes` (record body lengths, in order) the next message
    /// takes: at most `limit` records and `max_bytes` of body, and always
    /// the first one (a record alone always fits: `batch_max_bytes` is at
    /// least `max_record_bytes`).
    pub(crate) fn take(&self, sizes: impl Iterator<Item = usize>, limit: usize) -> usize {
        let limit = limit.min(self.records_per_message).max(1);
        let mut bytes = 2; // the array's brackets
        let mut n = 0;
        for size in sizes.take(limit) {
            bytes += size + 1; // a comma or a newline
            if n > 0 && bytes > self.max_bytes {
                break;
            }
            n += 1;
        }
        n
    }

    /// The body of one message carrying `records` (all with one routing key).
    pub(crate) fn body<'a>(&self, records: impl ExactSizeIterator<Item = &'a Encoded>) -> Vec<u8> {
        let n = records.len();
        let mut records = records.peekable();
        if !self.batched() {
            return records.next().map(|r| r.body.clone()).unwrap_or_default();
        }
        let mut b = Vec::new();
        match self.format {
            BatchFormat::JsonLines => {
                for r in records {
                    b.extend_from_slice(&r.body);
                    b.push(b'\n');
                }
            }
            _ if n == 1 => {
                if let Some(r) = records.next() {
                    b.extend_from_slice(&r.body);
                }
            }
            _ => {
                b.push(b'[');
                for (i, r) in records.enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    b.extend_from_slice(&r.body);
                }
                b.push(b']');
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(body: &str) -> Encoded {
        Encoded {
            id: uuid::Uuid::nil(),
            routing_key: "k".into(),
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    fn batching(n: usize, max_bytes: usize, format: BatchFormat) -> Batching {
        Batching {
            records_per_message: n,
            max_bytes,
            format,
        }
    }

    #[test]
    fn one_record_per_message_is_the_record_itself() {
        let b = batching(1, 1 << 20, BatchFormat::JsonArray);
        let r = rec(r#"{"a":1}"#);
        assert_eq!(b.body([&r].into_iter()), br#"{"a":1}"#);
        assert_eq!(b.take([7, 7, 7].into_iter(), usize::MAX), 1);
    }

    #[test]
    fn arrays_and_lines_hold_every_record_once() {
        let (a, c) = (rec(r#"{"a":1}"#), rec(r#"{"c":2}"#));
        let arr = batching(10, 1 << 20, BatchFormat::JsonArray);
        assert_eq!(arr.body([&a, &c].into_iter()), br#"[{"a":1},{"c":2}]"#);
        assert_eq!(
            arr.body([&a].into_iter()),
            br#"{"a":1}"#,
            "a lone record stays an object"
        );
        let lines = batching(1, 1 << 20, BatchFormat::JsonLines);
        assert_eq!(lines.body([&a].into_iter()), b"{\"a\":1}\n");
    }

    #[test]
    fn take_respects_count_and_bytes_but_always_takes_one() {
        let b = batching(3, 20, BatchFormat::JsonArray);
        assert_eq!(b.take([5, 5, 5, 5].into_iter(), usize::MAX), 3);
        assert_eq!(b.take([9, 9, 9].into_iter(), usize::MAX), 1);
        assert_eq!(
            b.take([50].into_iter(), usize::MAX),
            1,
            "oversized alone still goes"
        );
        assert_eq!(
            b.take([5, 5].into_iter(), 1),
            1,
            "caller's limit (cautious mode)"
        );
    }
}
