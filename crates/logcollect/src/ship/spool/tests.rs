//! The spool's guarantees on the in-memory file system, every fault of it.

use std::path::{Path, PathBuf};

use super::format::{Version, MAGIC_LEN, MAGIC_V1};
use super::*;

const DIR: &str = "/var/spool/lc";
const BIG: u64 = 1 << 30;

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Record number `i`: its id, routing key and body all say `i`.
fn rec(i: u64) -> Encoded {
    rec_sized(i, 20)
}

fn rec_sized(i: u64, pad: usize) -> Encoded {
    Encoded {
        id: uuid::Uuid::from_u128(u128::from(i) + 1),
        routing_key: format!("logstash.t{i}"),
        body: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)).into_bytes(),
        truncated: i.is_multiple_of(3),
    }
}

fn same(a: &Encoded, b: &Encoded) -> bool {
    a.id == b.id && a.routing_key == b.routing_key && a.body == b.body && a.truncated == b.truncated
}

/// Which record a body says it is.
fn num(r: &Encoded) -> u64 {
    let s = std::str::from_utf8(&r.body).unwrap();
    s[5..s.find(',').unwrap()].parse().unwrap()
}

fn open(fs: &MemFs, max: u64) -> Spool<MemFs> {
    Spool::open(fs.clone(), dir(), max).unwrap()
}

fn open_err(fs: &MemFs) -> SpoolError {
    Spool::open(fs.clone(), dir(), BIG).unwrap_err()
}

/// Appends records `range` with seq = number.
fn fill(s: &mut Spool<MemFs>, range: std::ops::Range<u64>) {
    for i in range {
        s.append(i, &rec(i)).unwrap();
    }
}

fn drain(s: &mut Spool<MemFs>) -> Vec<Spooled> {
    std::iter::from_fn(|| s.next()).collect()
}

fn nums(got: &[Spooled]) -> Vec<u64> {
    got.iter().map(|s| num(&s.rec)).collect()
}

fn segments(fs: &MemFs) -> Vec<(PathBuf, u64)> {
    fs.files(dir(), "seg-")
}

/// Start and length of every record of a version 2 segment.
fn records_of(fs: &MemFs, path: &Path) -> Vec<(u64, u64)> {
    let bytes = fs.contents(path).unwrap();
    let mut pos = MAGIC_LEN as usize;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let len = Version::V2.record_len(&bytes[pos..]).unwrap();
        out.push((pos as u64, len as u64));
        pos += len;
    }
    out
}

/// Flips a byte near the end of record `k` of segment `path` (in its body).
fn damage(fs: &MemFs, path: &Path, k: usize) {
    let (start, len) = records_of(fs, path)[k];
    assert!(fs.flip_byte(path, start + len - 3));
}

fn check_bytes(fs: &MemFs, s: &Spool<MemFs>) {
    let on_disk: u64 = segments(fs).iter().map(|(_, len)| len).sum();
    assert_eq!(s.bytes(), on_disk, "bytes() is what the files hold");
}

#[test]
fn records_come_back_in_order_whole_with_their_seq_and_segments_go_once_confirmed() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..100);
    assert_eq!((s.own_unread(), s.inherited_unread()), (100, 0));
    let got = drain(&mut s);
    assert_eq!(nums(&got), (0..100).collect::<Vec<_>>());
    for g in &got {
        assert!(same(&g.rec, &rec(num(&g.rec))));
        assert_eq!(g.seq, Some(num(&g.rec)));
    }
    assert_eq!(s.own_unread(), 0);
    assert_eq!(segments(&fs).len(), 1, "kept until confirmed");
    for g in &got {
        s.ack(g.seg);
    }
    assert!(segments(&fs).is_empty(), "deleted once all is confirmed");
    assert_eq!(s.bytes(), 0);
    assert!(s.take_losses().is_empty());
}

#[test]
fn appends_never_fsync_and_sync_fsyncs_each_written_file_once() {
    let fs = MemFs::new();
    // A 1 MiB cap makes 128 KiB segments: 3,000 records of ~100 bytes
    // fill three of them.
    let mut s = open(&fs, 1 << 20);
    fill(&mut s, 0..3000);
    assert_eq!(fs.sync_calls(), (0, 0), "no fsync while appending");
    assert_eq!(s.synced_own(), 0);
    let files = segments(&fs).len() as u64;
    assert!(files >= 3, "{files}");
    s.sync().unwrap();
    assert_eq!(
        fs.sync_calls(),
        (files, 1),
        "one fsync per file, one for the directory"
    );
    assert_eq!(s.synced_own(), 3000);
    assert_eq!(s.own_unread_not_durable(), 0);
    s.sync().unwrap();
    assert_eq!(fs.sync_calls(), (files, 1), "nothing new, nothing synced");
}

#[test]
fn a_new_process_reads_what_the_last_one_left_first_without_seqs() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..10);
        s.sync().unwrap();
        // One read and confirmed: the segment stays, the record comes again
        // (at-least-once).
        let first = s.next().unwrap();
        s.ack(first.seg);
    }
    let mut s = open(&fs, BIG);
    assert_eq!((s.inherited_unread(), s.own_unread()), (10, 0));
    fill(&mut s, 100..103);
    let got = drain(&mut s);
    assert_eq!(
        nums(&got),
        [(0..10).collect::<Vec<_>>(), (100..103).collect()].concat()
    );
    assert!(got[..10].iter().all(|g| g.seq.is_none()));
    assert_eq!(got[10].seq, Some(100));
    assert!(got.iter().all(|g| same(&g.rec, &rec(num(&g.rec)))));
    assert_eq!((s.inherited_unread(), s.own_unread()), (0, 0));
    assert!(s.take_losses().is_empty());
}

#[test]
fn the_lock_keeps_a_second_spool_out_until_the_first_is_gone() {
    let fs = MemFs::new();
    let first = open(&fs, BIG);
    let err = open_err(&fs);
    assert_eq!(err.kind(), SpoolErrorKind::InUse);
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(first);
    open(&fs, BIG);
}

#[test]
fn a_partial_write_is_cut_back_and_later_records_are_whole() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..3);
    let before = segments(&fs);
    fs.inject(Fault::PartialWrite(10));
    let err = s.append(3, &rec(3)).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::NoSpace, "{err}");
    assert_eq!(
        segments(&fs),
        before,
        "nothing of the failed record is left"
    );
    // Even a write that wrote everything but reported a failure is undone.
    fs.inject(Fault::PartialWrite(usize::MAX));
    s.append(3, &rec(3)).unwrap_err();
    assert_eq!(segments(&fs), before);
    fill(&mut s, 4..6);
    check_bytes(&fs, &s);
    assert_eq!(nums(&drain(&mut s)), [0, 1, 2, 4, 5]);
    assert!(s.take_losses().is_empty());
}

#[test]
fn when_the_cut_back_fails_too_the_segment_is_sealed_and_a_new_one_takes_records() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..3);
        fs.inject(Fault::PartialWrite(20));
        fs.inject(Fault::SetLenError);
        s.append(3, &rec(3)).unwrap_err();
        check_bytes(&fs, &s);
        fill(&mut s, 4..6);
        assert_eq!(segments(&fs).len(), 2, "never append after the torn bytes");
        check_bytes(&fs, &s);
        assert_eq!(s.own_unread(), 5);
        s.sync().unwrap();
        assert_eq!(s.synced_own(), 5);
    }
    // Read by the next process: the torn record is not a record, and is
    // told apart from damage.
    let mut s = open(&fs, BIG);
    assert_eq!(nums(&drain(&mut s)), [0, 1, 2, 4, 5]);
    let lost = s.take_losses();
    assert_eq!(
        (lost.torn_inherited, lost.corrupt_inherited),
        (1, 0),
        "{lost:?}"
    );
}

#[test]
fn the_same_in_this_process_the_torn_bytes_are_never_read() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..3);
    fs.inject(Fault::PartialWrite(usize::MAX));
    fs.inject(Fault::SetLenError);
    s.append(3, &rec(3)).unwrap_err();
    fill(&mut s, 4..5);
    assert_eq!(nums(&drain(&mut s)), [0, 1, 2, 4]);
    assert!(s.take_losses().is_empty());
}

#[test]
fn a_full_disk_fails_the_append_and_leaves_the_spool_consistent() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fs.set_capacity(Some(2_000));
    let mut ok = Vec::new();
    let mut failed = 0;
    for i in 0..40 {
        match s.append(i, &rec(i)) {
            Ok(()) => ok.push(i),
            Err(e) => {
                assert_eq!(e.kind(), SpoolErrorKind::NoSpace, "{e}");
                assert!(e.to_string().contains("full"), "{e}");
                failed += 1;
            }
        }
        check_bytes(&fs, &s);
        assert_eq!(s.own_unread(), ok.len() as u64);
    }
    assert!(failed > 0 && !ok.is_empty());
    fs.set_capacity(None);
    s.append(99, &rec(99)).unwrap();
    ok.push(99);
    assert_eq!(nums(&drain(&mut s)), ok);
    assert!(s.take_losses().is_empty());
}

#[test]
fn write_and_create_failures_are_reported_with_their_kind() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fs.inject(Fault::CreateError);
    assert_eq!(
        s.append(0, &rec(0)).unwrap_err().kind(),
        SpoolErrorKind::NoSpace
    );
    assert!(segments(&fs).is_empty());
    fill(&mut s, 1..2);
    fs.inject(Fault::WriteError);
    let err = s.append(2, &rec(2)).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::Io, "{err}");
    assert!(std::error::Error::source(&err).is_some());
    fill(&mut s, 3..4);
    assert_eq!(nums(&drain(&mut s)), [1, 3]);
}

#[test]
fn a_flipped_byte_mid_segment_loses_that_record_only_and_says_which() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..10);
    let (seg, _) = segments(&fs).pop().unwrap();
    damage(&fs, &seg, 4);
    assert_eq!(nums(&drain(&mut s)), [0, 1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(s.take_losses().corrupt_own, [4]);
    assert_eq!(s.own_unread(), 0);
}

#[test]
fn damage_to_markers_lengths_and_runs_of_records_is_skipped_and_counted_by_seq() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    // Seqs need not be consecutive: they are kept as runs.
    let seqs: Vec<u64> = (0..20).map(|i| if i < 10 { i } else { 100 + i }).collect();
    for (i, &seq) in seqs.iter().enumerate() {
        s.append(seq, &rec(i as u64)).unwrap();
    }
    let (seg, _) = segments(&fs).pop().unwrap();
    let recs = records_of(&fs, &seg);
    // A run of three, a marker, a length field, the very last record.
    for k in [3, 4, 5] {
        damage(&fs, &seg, k);
    }
    fs.flip_byte(&seg, recs[9].0 + 1);
    fs.flip_byte(&seg, recs[12].0 + 9);
    fs.flip_byte(&seg, recs[19].0 + recs[19].1 - 3);
    let got = drain(&mut s);
    let expect: Vec<u64> = (0..19).filter(|k| ![3, 4, 5, 9, 12].contains(k)).collect();
    assert_eq!(nums(&got), expect);
    assert!(got
        .iter()
        .all(|g| g.seq == Some(seqs[num(&g.rec) as usize])));
    let lost = s.take_losses();
    assert_eq!(lost.corrupt_own, [3, 4, 5, 9, 112, 119]);
    assert_eq!(s.own_unread(), 0);
}

#[test]
fn damage_in_a_sealed_segment_of_this_process_is_counted_when_read() {
    let fs = MemFs::new();
    let mut s = open(&fs, 1 << 20);
    fill(&mut s, 0..3000);
    let segs = segments(&fs);
    let first = records_of(&fs, &segs[0].0);
    let last = first.len() - 1;
    damage(&fs, &segs[0].0, last);
    let got = drain(&mut s);
    assert_eq!(got.len(), 2999);
    assert_eq!(s.take_losses().corrupt_own, [last as u64]);
}

#[test]
fn an_earlier_process_damaged_records_are_counted_exactly() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..10);
        s.sync().unwrap();
    }
    let (seg, _) = segments(&fs).pop().unwrap();
    damage(&fs, &seg, 4);
    damage(&fs, &seg, 5);
    let mut s = open(&fs, BIG);
    assert_eq!(s.inherited_unread(), 10, "the last index counts them");
    assert_eq!(nums(&drain(&mut s)), [0, 1, 2, 3, 6, 7, 8, 9]);
    let lost = s.take_losses();
    assert_eq!((lost.corrupt_inherited, lost.torn_inherited), (2, 0));
    assert_eq!(s.inherited_unread(), 0);
}

#[test]
fn damage_at_the_end_of_an_inherited_segment_counts_one() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..10);
        s.sync().unwrap();
    }
    let (seg, _) = segments(&fs).pop().unwrap();
    damage(&fs, &seg, 9);
    // A damaged magic loses nothing: records find themselves.
    fs.flip_byte(&seg, 2);
    let mut s = open(&fs, BIG);
    assert_eq!(nums(&drain(&mut s)), (0..9).collect::<Vec<_>>());
    let lost = s.take_losses();
    assert_eq!((lost.corrupt_inherited, lost.torn_inherited), (1, 0));
    assert_eq!(s.inherited_unread(), 0);
}

#[test]
fn a_read_error_loses_the_rest_of_that_segment_by_seq() {
    let fs = MemFs::new();
    let mut s = open(&fs, 1 << 20);
    fill(&mut s, 0..3000);
    let in_first = records_of(&fs, &segments(&fs)[0].0).len() as u64;
    let mut got = vec![s.next().unwrap()];
    fs.inject(Fault::ReadError);
    got.extend(drain(&mut s));
    let lost = s.take_losses().corrupt_own;
    assert!(!lost.is_empty());
    assert_eq!(got.len() + lost.len(), 3000, "each read or counted");
    assert!(lost.iter().all(|&q| q < in_first), "only that segment");
    assert_eq!(s.own_unread(), 0);
}

#[test]
fn the_cap_holds_at_every_append_with_segments_an_eighth_of_it() {
    let fs = MemFs::new();
    let cap = 1 << 20;
    let mut s = open(&fs, cap);
    let mut dropped = Vec::new();
    for i in 0..4000 {
        s.append(i, &rec_sized(i, 1000)).unwrap();
        assert!(s.bytes() <= cap, "{} over {cap} after {i}", s.bytes());
        dropped.extend(s.take_losses().cap_own);
    }
    check_bytes(&fs, &s);
    assert!(segments(&fs).iter().all(|(_, len)| *len <= cap / 8 + 1100));
    // The oldest went, each counted once, in order.
    assert_eq!(dropped, (0..dropped.len() as u64).collect::<Vec<_>>());
    let got = drain(&mut s);
    assert_eq!(
        nums(&got),
        (dropped.len() as u64..4000).collect::<Vec<_>>(),
        "the newest are kept"
    );
    assert_eq!(s.own_unread(), 0);
}

#[test]
fn records_handed_out_are_not_lost_when_the_cap_drops_their_segment() {
    let fs = MemFs::new();
    let cap = 1 << 20;
    let mut s = open(&fs, cap);
    fill(&mut s, 0..1000);
    let out: Vec<Spooled> = (0..50).map(|_| s.next().unwrap()).collect();
    let mut dropped = Vec::new();
    for i in 1000..12_000 {
        s.append(i, &rec(i)).unwrap();
        dropped.extend(s.take_losses().cap_own);
    }
    assert_eq!(dropped.first(), Some(&50), "the 50 handed out are not lost");
    for o in &out {
        s.ack(o.seg); // their segment is gone: nothing happens
    }
    let got = drain(&mut s);
    assert_eq!(50 + dropped.len() + got.len(), 12_000);
    assert_eq!(s.own_unread(), 0);
}

#[test]
fn the_cap_drops_an_earlier_process_records_by_count() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, 1 << 20);
        fill(&mut s, 0..6000);
        s.sync().unwrap();
    }
    let counts: Vec<u64> = segments(&fs)
        .iter()
        .map(|(p, _)| records_of(&fs, p).len() as u64)
        .collect();
    // A cap lowered since: the oldest segments go at open.
    let mut s = open(&fs, 300 << 10);
    let lost = s.take_losses();
    assert!(lost.cap_inherited > 0);
    let mut n = 0;
    let mut gone = 0;
    while gone < lost.cap_inherited {
        gone += counts[n];
        n += 1;
    }
    assert_eq!(gone, lost.cap_inherited, "whole segments, counted exactly");
    assert_eq!(s.inherited_unread(), 6000 - gone);
    // Appending past the cap drops more of them.
    for i in 0..3000 {
        s.append(10_000 + i, &rec(i)).unwrap();
    }
    let more = s.take_losses().cap_inherited;
    assert!(more > 0);
    let got = drain(&mut s);
    let inherited = got.iter().filter(|g| g.seq.is_none()).count() as u64;
    assert_eq!(inherited + gone + more, 6000);
    assert_eq!((s.own_unread(), s.inherited_unread()), (0, 0));
}

#[test]
fn a_record_larger_than_the_cap_is_refused_and_not_written() {
    let fs = MemFs::new();
    let mut s = open(&fs, 64 << 10);
    let err = s.append(0, &rec_sized(0, 70 << 10)).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("spool_max_bytes"), "{err}");
    assert!(segments(&fs).is_empty());
    s.append(1, &rec(1)).unwrap();
    assert_eq!(nums(&drain(&mut s)), [1]);
}

#[test]
fn a_failed_fsync_is_never_counted_and_its_segment_takes_no_more_records() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..5);
        fs.inject(Fault::SyncError);
        assert_eq!(s.sync().unwrap_err().kind(), SpoolErrorKind::Io);
        assert_eq!(s.synced_own(), 0);
        assert_eq!(s.own_unread_not_durable(), 5);
        fill(&mut s, 5..10);
        assert_eq!(segments(&fs).len(), 2, "new records in a new segment");
        s.sync().unwrap();
        assert_eq!(s.synced_own(), 5, "only the records after the failure");
        assert_eq!(s.own_unread_not_durable(), 5);
        // Still readable in this process.
        assert_eq!(nums(&drain(&mut s)), (0..10).collect::<Vec<_>>());
        fs.crash();
    }
    // The kernel dropped the first five: gone after a crash, as promised.
    let mut s = open(&fs, BIG);
    assert_eq!(nums(&drain(&mut s)), (5..10).collect::<Vec<_>>());
}

#[test]
fn a_failed_directory_fsync_is_never_counted() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..5);
    fs.inject(Fault::DirSyncError);
    s.sync().unwrap_err();
    assert_eq!(s.synced_own(), 0);
    fill(&mut s, 5..8);
    s.sync().unwrap();
    assert_eq!(s.synced_own(), 3, "not the five whose segment may vanish");
    drop(s);
    // And they may indeed vanish: a crash before the directory is synced.
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..5);
        fs.inject(Fault::DirSyncError);
        s.sync().unwrap_err();
        fs.crash();
    }
    let mut s = open(&fs, BIG);
    assert!(s.next().is_none());
}

#[test]
fn a_crash_keeps_exactly_what_was_synced() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..10);
        s.sync().unwrap();
        fill(&mut s, 10..15);
        fs.crash();
    }
    let mut s = open(&fs, BIG);
    assert_eq!(s.inherited_unread(), 10);
    assert_eq!(nums(&drain(&mut s)), (0..10).collect::<Vec<_>>());
    assert!(s.take_losses().is_empty());
    {
        // A segment whose directory entry was never synced vanishes.
        let mut s = open_after_drop(&fs, s);
        fill(&mut s, 20..25);
        fs.crash();
    }
    let mut s = open(&fs, BIG);
    assert_eq!(nums(&drain(&mut s)), (0..10).collect::<Vec<_>>());
}

fn open_after_drop(fs: &MemFs, s: Spool<MemFs>) -> Spool<MemFs> {
    drop(s);
    open(fs, BIG)
}

#[test]
fn a_finished_reader_leaves_no_confirmed_record_behind() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..5);
    let got = drain(&mut s);
    assert_eq!(segments(&fs).len(), 1);
    for g in &got {
        s.ack(g.seg);
    }
    assert!(
        segments(&fs).is_empty(),
        "the segment being written goes too"
    );
    fill(&mut s, 5..7);
    s.sync().unwrap();
    drop(s);
    let mut s = open(&fs, BIG);
    assert_eq!(nums(&drain(&mut s)), [5, 6]);
}

#[test]
fn a_failed_deletion_is_retried() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..2);
    let got = drain(&mut s);
    fs.inject(Fault::RemoveError);
    for g in &got {
        s.ack(g.seg);
    }
    assert_eq!(segments(&fs).len(), 1, "still there");
    check_bytes(&fs, &s);
    s.sync().unwrap();
    assert!(segments(&fs).is_empty());
    assert_eq!(s.bytes(), 0);
}

/// A segment as version 0.1 wrote it.
fn v1_segment(records: &[Encoded]) -> Vec<u8> {
    let mut out = MAGIC_V1.to_vec();
    for r in records {
        let mut payload = vec![r.routing_key.len() as u8];
        payload.extend_from_slice(r.routing_key.as_bytes());
        payload.extend_from_slice(r.id.as_bytes());
        payload.extend_from_slice(&r.body);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

#[test]
fn version_1_segments_left_by_0_1_are_read_then_new_ones_are_version_2() {
    let fs = MemFs::new();
    fs.create_dir_all(dir(), 0o700).unwrap();
    let old: Vec<Encoded> = (0..4)
        .map(|i| Encoded {
            truncated: false,
            ..rec(i)
        })
        .collect();
    fs.put_file(
        &dir().join("seg-00000000000000000007.lcs"),
        &v1_segment(&old),
    );
    let mut damaged = v1_segment(&old);
    let n = damaged.len();
    damaged[n - 2] ^= 0xFF;
    fs.put_file(&dir().join("seg-00000000000000000008.lcs"), &damaged);
    let mut s = open(&fs, BIG);
    assert_eq!(s.inherited_unread(), 7);
    s.append(50, &rec(50)).unwrap();
    let got = drain(&mut s);
    assert_eq!(nums(&got), [0, 1, 2, 3, 0, 1, 2, 50]);
    assert!(got[..7]
        .iter()
        .all(|g| g.seq.is_none() && same(&g.rec, &old[num(&g.rec) as usize])));
    assert_eq!(s.take_losses().corrupt_inherited, 1);
    let newest = segments(&fs).pop().unwrap().0;
    assert!(newest.ends_with("seg-00000000000000000009.lcs"));
    assert_eq!(&fs.contents(&newest).unwrap()[..8], b"LCSPOOL2");
}

#[test]
fn an_empty_segment_from_a_crash_is_cleared_at_open() {
    let fs = MemFs::new();
    fs.create_dir_all(dir(), 0o700).unwrap();
    fs.put_file(&dir().join("seg-00000000000000000001.lcs"), b"");
    fs.put_file(&dir().join("seg-00000000000000000002.lcs"), b"LCSP");
    fs.put_file(&dir().join("seg-not-a-number.lcs"), b"left alone");
    let mut s = open(&fs, BIG);
    assert_eq!(s.inherited_unread(), 0);
    assert!(s.next().is_none());
    assert!(s.take_losses().is_empty());
    assert!(segments(&fs)
        .iter()
        .all(|(p, _)| p.ends_with("seg-not-a-number.lcs")));
}

#[test]
fn the_directory_and_files_are_made_private_and_anothers_are_refused() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..1);
    s.sync().unwrap();
    drop(s);
    assert_eq!(fs.symlink_metadata(dir()).unwrap().mode, 0o700);
    let (seg, _) = segments(&fs).pop().unwrap();
    assert_eq!(fs.symlink_metadata(&seg).unwrap().mode, 0o600);
    assert_eq!(
        fs.symlink_metadata(&dir().join("LOCK")).unwrap().mode,
        0o600
    );
    // Modes widened by someone are narrowed again.
    fs.chmod(dir(), 0o755);
    fs.chmod(&seg, 0o644);
    drop(open(&fs, BIG));
    assert_eq!(fs.symlink_metadata(dir()).unwrap().mode, 0o700);
    assert_eq!(fs.symlink_metadata(&seg).unwrap().mode, 0o600);
    // Another user's segment, then another user's directory.
    fs.set_owner(&seg, 0);
    let err = open_err(&fs);
    assert_eq!(err.kind(), SpoolErrorKind::Refused);
    assert!(err.to_string().contains("belongs to uid 0"), "{err}");
    fs.set_owner(&seg, 1000);
    fs.set_owner(dir(), 65534);
    let err = open_err(&fs);
    assert_eq!(err.kind(), SpoolErrorKind::Refused);
    assert!(err.to_string().contains("uid 65534"), "{err}");
}

#[test]
fn symbolic_links_in_the_spool_are_refused() {
    let fs = MemFs::new();
    fs.create_dir_all(dir(), 0o700).unwrap();
    fs.put_file(Path::new("/etc/passwd"), b"root:x:0:0");
    fs.symlink(Path::new("/etc/passwd"), &dir().join("LOCK"));
    let err = open_err(&fs);
    assert_eq!(err.kind(), SpoolErrorKind::Refused);
    assert!(err.to_string().contains("symbolic link"), "{err}");
    fs.remove(&dir().join("LOCK")).unwrap();
    fs.symlink(
        Path::new("/etc/passwd"),
        &dir().join("seg-00000000000000000001.lcs"),
    );
    let err = open_err(&fs);
    assert_eq!(err.kind(), SpoolErrorKind::Refused);
    assert!(
        err.to_string().contains("seg-00000000000000000001.lcs"),
        "{err}"
    );
}

#[test]
fn a_spool_directory_linked_to_anothers_directory_is_refused_and_to_ours_is_fine() {
    let fs = MemFs::new();
    fs.create_dir_all(Path::new("/var/spool"), 0o755).unwrap();
    fs.mkdir_owned(Path::new("/srv/eve"), 1001, 0o700);
    fs.symlink(Path::new("/srv/eve"), dir());
    let err = open_err(&fs);
    assert_eq!(err.kind(), SpoolErrorKind::Refused);
    let fs = MemFs::new();
    fs.create_dir_all(Path::new("/data/lc"), 0o700).unwrap();
    fs.create_dir_all(Path::new("/var/spool"), 0o755).unwrap();
    fs.symlink(Path::new("/data/lc"), dir());
    let mut s = open(&fs, BIG);
    fill(&mut s, 0..1);
    assert_eq!(nums(&drain(&mut s)), [0]);
}

// Found by the property test: each failed before its fix.

#[test]
fn records_an_earlier_process_left_are_counted_even_if_reading_failed_at_open() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..13);
        s.sync().unwrap();
    }
    // Reading the magic fails twice at open, then the reader's first read.
    for _ in 0..3 {
        fs.inject(Fault::ReadError);
    }
    let mut s = open(&fs, BIG);
    assert!(s.next().is_none());
    assert_eq!(s.take_losses().corrupt_inherited, 13, "each record counted");
    assert_eq!(s.inherited_unread(), 0);
}

#[test]
fn a_failed_directory_fsync_seals_the_segment_being_written_even_after_a_deletion() {
    let fs = MemFs::new();
    {
        let mut s = open(&fs, BIG);
        fill(&mut s, 0..2);
        s.sync().unwrap();
    }
    let mut s = open(&fs, BIG);
    let got = drain(&mut s);
    // The old segment's deletion fails: it goes at the next sync, which
    // moves the segment being written to another place in the list.
    fs.inject(Fault::RemoveError);
    for g in &got {
        s.ack(g.seg);
    }
    fill(&mut s, 2..3);
    fs.inject(Fault::DirSyncError);
    s.sync().unwrap_err();
    fill(&mut s, 3..4);
    assert_eq!(
        segments(&fs).len(),
        2,
        "the record after the failure is in a new segment"
    );
    s.sync().unwrap();
    assert_eq!(s.synced_own(), 1);
}

#[test]
fn an_empty_segment_left_by_a_failed_first_write_goes_when_the_reader_catches_up() {
    let fs = MemFs::new();
    let mut s = open(&fs, BIG);
    // Room for the segment's magic, not for the record.
    fs.set_capacity(Some(MAGIC_LEN));
    s.append(0, &rec(0)).unwrap_err();
    assert_eq!(
        segments(&fs),
        [(dir().join("seg-00000000000000000001.lcs"), 8)]
    );
    assert!(s.next().is_none());
    assert!(segments(&fs).is_empty());
    assert_eq!(s.bytes(), 0);
}
