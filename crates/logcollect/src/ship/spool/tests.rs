use super::*;

fn counters() -> Arc<Counters> {
    Arc::new(Counters::default())
}

fn rec(i: u32) -> Encoded {
    Encoded {
        id: uuid::Uuid::now_v7(),
        routing_key: format!("logstash.t{i}"),
        body: format!("{{\"i\":{i}}}").into_bytes(),
        truncated: false,
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "lc-spool-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = fs::remove_dir_all(&d);
    d
}

fn body_i(e: &Encoded) -> u32 {
    let s = std::str::from_utf8(&e.body).unwrap();
    s.trim_start_matches("{\"i\":")
        .trim_end_matches('}')
        .parse()
        .unwrap()
}

fn segment_files(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lcs"))
        .collect();
    v.sort();
    v
}

#[test]
fn records_come_back_in_order_with_id_and_key_and_segments_go_when_confirmed() {
    let d = dir("order");
    let c = counters();
    let mut s = Spool::open(&d, 1 << 30, c.clone()).unwrap();
    let written: Vec<Encoded> = (0..100).map(rec).collect();
    for r in &written {
        s.append(r).unwrap();
    }
    assert_eq!(s.unread(), 100);
    let mut got = Vec::new();
    while let Some((seg, r)) = s.next() {
        got.push((seg, r));
    }
    assert_eq!(got.len(), 100);
    for (w, (_, g)) in written.iter().zip(&got) {
        assert_eq!(w.id, g.id);
        assert_eq!(w.routing_key, g.routing_key);
        assert_eq!(w.body, g.body);
    }
    assert!(!s.has_unread());
    assert_eq!(segment_files(&d).len(), 1, "kept until confirmed");
    for (seg, _) in &got {
        s.ack(*seg);
    }
    assert!(
        segment_files(&d).is_empty(),
        "deleted once every record is confirmed"
    );
    assert_eq!(c.spooled.load(Ordering::Relaxed), 100);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_second_process_replays_what_the_first_left() {
    let d = dir("replay");
    {
        let mut s = Spool::open(&d, 1 << 30, counters()).unwrap();
        for i in 0..10 {
            s.append(&rec(i)).unwrap();
        }
        s.sync();
        // One record read and confirmed, the rest not: the segment stays.
        let (seg, _) = s.next().unwrap();
        s.ack(seg);
    }
    let mut s = Spool::open(&d, 1 << 30, counters()).unwrap();
    assert_eq!(
        s.unread(),
        10,
        "the whole segment is replayed (at-least-once)"
    );
    let got: Vec<u32> = std::iter::from_fn(|| s.next())
        .map(|(_, r)| body_i(&r))
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn the_lock_keeps_a_second_spool_out() {
    let d = dir("lock");
    let _first = Spool::open(&d, 1 << 30, counters()).unwrap();
    let err = Spool::open(&d, 1 << 30, counters()).unwrap_err();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn torn_tail_is_skipped_and_counted_and_the_rest_is_read() {
    let d = dir("torn");
    {
        let mut s = Spool::open(&d, 1 << 30, counters()).unwrap();
        for i in 0..5 {
            s.append(&rec(i)).unwrap();
        }
        s.sync();
    }
    // A crash in the middle of a write: half a record at the end.
    let seg = segment_files(&d).pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
    drop(f);
    let c = counters();
    let mut s = Spool::open(&d, 1 << 30, c.clone()).unwrap();
    let got: Vec<u32> = std::iter::from_fn(|| s.next())
        .map(|(_, r)| body_i(&r))
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(c.spool_corrupt.load(Ordering::Relaxed), 1);
    // New records go to a fresh segment, never after the garbage.
    s.append(&rec(9)).unwrap();
    let (_, r) = s.next().unwrap();
    assert_eq!(body_i(&r), 9);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn corrupt_crc_in_the_middle_skips_the_rest_of_that_segment_only() {
    let d = dir("crc");
    {
        let mut s = Spool::open(&d, 1 << 30, counters()).unwrap();
        for i in 0..3 {
            s.append(&rec(i)).unwrap();
        }
        s.sync();
    }
    let seg = segment_files(&d).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff; // flip a body byte of the last record
    fs::write(&seg, bytes).unwrap();
    let c = counters();
    let mut s = Spool::open(&d, 1 << 30, c.clone()).unwrap();
    let got: Vec<u32> = std::iter::from_fn(|| s.next())
        .map(|(_, r)| body_i(&r))
        .collect();
    assert_eq!(got, vec![0, 1]);
    assert!(c.spool_corrupt.load(Ordering::Relaxed) >= 1);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn over_the_cap_the_oldest_records_go_first_and_are_counted() {
    let d = dir("cap");
    let c = counters();
    // Segments rotate at SEGMENT_BYTES; with a cap of just over one segment
    // the oldest segment must go.
    let mut s = Spool::open(&d, SEGMENT_BYTES + SEGMENT_BYTES / 2, c.clone()).unwrap();
    let big = |i: u32| Encoded {
        id: uuid::Uuid::now_v7(),
        routing_key: "logstash.big".into(),
        body: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(64 * 1024)).into_bytes(),
        truncated: false,
    };
    let n = 300; // ~19 MiB
    for i in 0..n {
        s.append(&big(i)).unwrap();
    }
    let dropped = c.spool_dropped.load(Ordering::Relaxed);
    assert!(dropped > 0);
    assert!(
        s.total_bytes <= SEGMENT_BYTES + SEGMENT_BYTES / 2 + 70 * 1024,
        "{}",
        s.total_bytes
    );
    let got: Vec<u32> = std::iter::from_fn(|| s.next())
        .map(|(_, r)| {
            let v = std::str::from_utf8(&r.body).unwrap();
            v[5..v.find(',').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(
        got.len() as u64 + dropped,
        u64::from(n),
        "every record read or counted"
    );
    assert_eq!(*got.last().unwrap(), n - 1, "the newest are kept");
    assert!(
        got.windows(2).all(|w| w[0] + 1 == w[1]),
        "in order, oldest dropped"
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn reader_catching_up_seals_the_segment_and_writing_goes_on() {
    let d = dir("catchup");
    let mut s = Spool::open(&d, 1 << 30, counters()).unwrap();
    s.append(&rec(1)).unwrap();
    let (seg1, _) = s.next().unwrap();
    assert!(!s.has_unread());
    assert!(s.next().is_none());
    s.append(&rec(2)).unwrap();
    let (seg2, r) = s.next().unwrap();
    assert_eq!(body_i(&r), 2);
    assert_ne!(seg1, seg2, "a new segment after catching up");
    s.ack(seg1);
    assert_eq!(segment_files(&d).len(), 1);
    assert!(s.next().is_none());
    s.ack(seg2);
    assert!(segment_files(&d).is_empty());
    let _ = fs::remove_dir_all(&d);
}
