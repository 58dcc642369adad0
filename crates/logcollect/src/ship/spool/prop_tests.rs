//! Random schedules on the in-memory file system: appends, reads,
//! acknowledgements, syncs, every fault, crashes and restarts. After each
//! step the spool's word is checked against a model of what it was given.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use proptest::prelude::*;

use super::*;

const DIR: &str = "/spool";

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Next,
    Ack(usize),
    Sync,
    Fault(Fault),
    /// Flip a byte of the `file`-th segment at a fraction of its length.
    Flip(usize, u16),
    Capacity(Option<u64>),
    /// The process dies; a new one opens the spool.
    Crash,
    /// The process ends without a sync; a new one opens the spool.
    Restart,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::NoSpace),
        (0usize..400).prop_map(Fault::PartialWrite),
        Just(Fault::WriteError),
        Just(Fault::ReadError),
        Just(Fault::SyncError),
        Just(Fault::DirSyncError),
        Just(Fault::SetLenError),
        Just(Fault::CreateError),
        Just(Fault::RemoveError),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => prop_oneof![9 => 0usize..300, 1 => 2_000usize..6_000].prop_map(Op::Append),
        20 => Just(Op::Next),
        12 => any::<usize>().prop_map(Op::Ack),
        6 => Just(Op::Sync),
        6 => fault().prop_map(Op::Fault),
        2 => (any::<usize>(), any::<u16>()).prop_map(|(f, at)| Op::Flip(f, at)),
        1 => prop::option::of(0u64..100_000).prop_map(Op::Capacity),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
    ]
}

/// What became of one of this process's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Unread,
    HandedOut,
    Lost,
}

#[derive(Debug)]
struct Own {
    id: uuid::Uuid,
    fate: Fate,
    /// Unread at a successful sync with no failed sync since its append:
    /// surely durable (the spool may know more).
    durable: bool,
}

/// Everything the spool was given, and what it must answer.
#[derive(Debug, Default)]
struct Model {
    /// Every record ever offered to `append` (even failed: a failed write
    /// whose cut-back failed may come back after a crash), by id.
    offered: HashMap<uuid::Uuid, Encoded>,
    /// This process's records appended, by seq.
    own: BTreeMap<u64, Own>,
    next_seq: u64,
    /// Appended since the last successful sync.
    unsynced: Vec<u64>,
    /// Earlier processes' records that must come back or be counted lost,
    /// and whether they are durable (else a crash may take them).
    must_survive: HashMap<uuid::Uuid, bool>,
    /// Inherited records handed out by this process.
    seen: HashSet<uuid::Uuid>,
    /// Handed out and not acknowledged.
    out: Vec<SegId>,
    inherited_losses: u64,
    flips: u64,
    next_id: u128,
    /// Records surely durable so far (a lower bound of `synced_own`).
    surely_synced: u64,
    /// At each crash, the unread records the spool called durable, and the
    /// ids of all unread ones then: as many of those must come back (or be
    /// counted lost).
    claimed_at_crash: u64,
    unread_at_crash: HashSet<uuid::Uuid>,
    came_back: u64,
}

impl Model {
    fn record(&mut self, body: usize) -> Encoded {
        self.next_id += 1;
        let rec = Encoded {
            id: uuid::Uuid::from_u128(self.next_id),
            routing_key: format!("logstash.r{}", self.next_id % 7),
            body: format!("{{\"n\":{},\"b\":\"{}\"}}", self.next_id, "y".repeat(body)).into_bytes(),
            truncated: self.next_id.is_multiple_of(5),
        };
        self.offered.insert(rec.id, rec.clone());
        rec
    }

    fn own_unread(&self) -> u64 {
        self.own.values().filter(|o| o.fate == Fate::Unread).count() as u64
    }

    fn lose_own(&mut self, seqs: &[u64]) {
        for seq in seqs {
            let o = self.own.get_mut(seq).expect("a lost seq was appended");
            assert_eq!(o.fate, Fate::Unread, "seq {seq} lost after {:?}", o.fate);
            o.fate = Fate::Lost;
        }
    }

    fn take_losses(&mut self, s: &mut Spool<MemFs>) {
        let l = s.take_losses();
        self.lose_own(&l.cap_own);
        self.lose_own(&l.corrupt_own);
        self.inherited_losses += l.cap_inherited + l.corrupt_inherited + l.torn_inherited;
    }

    fn handed_out(&mut self, got: &Spooled) {
        let offered = self.offered.get(&got.rec.id).expect("never offered");
        assert!(
            offered.routing_key == got.rec.routing_key
                && offered.body == got.rec.body
                && offered.truncated == got.rec.truncated,
            "record {} changed",
            got.rec.id
        );
        match got.seq {
            Some(seq) => {
                let o = self.own.get_mut(&seq).expect("own seq was appended");
                assert_eq!(o.id, got.rec.id, "seq {seq}");
                assert_eq!(o.fate, Fate::Unread, "seq {seq} handed out twice");
                o.fate = Fate::HandedOut;
            }
            None => {
                assert!(
                    !self.own.values().any(|o| o.id == got.rec.id),
                    "own record without its seq"
                );
                assert!(self.seen.insert(got.rec.id), "inherited record twice");
                self.must_survive.remove(&got.rec.id);
                if self.unread_at_crash.remove(&got.rec.id) {
                    self.came_back += 1;
                }
            }
        }
        self.out.push(got.seg);
    }

    /// A new process opens the spool: what this one held unread must come
    /// back (all of it after a clean exit; the durable part after a crash).
    fn new_process(&mut self, crashed: bool) {
        if crashed {
            self.must_survive.retain(|_, durable| *durable);
        }
        for o in self.own.values() {
            if o.fate == Fate::Unread && (o.durable || !crashed) {
                self.must_survive.insert(o.id, o.durable);
            }
            if o.fate == Fate::Unread && crashed {
                self.unread_at_crash.insert(o.id);
            }
        }
        self.own.clear();
        self.unsynced.clear();
        self.surely_synced = 0;
        self.seen.clear();
        self.out.clear();
    }
}

fn check(fs: &MemFs, s: &Spool<MemFs>, m: &Model, max: u64) {
    assert_eq!(s.own_unread(), m.own_unread(), "own_unread");
    let on_disk: u64 = fs.files(Path::new(DIR), "seg-").iter().map(|f| f.1).sum();
    assert_eq!(s.bytes(), on_disk, "bytes() against the files");
    assert!(s.bytes() <= max, "{} bytes over the cap {max}", s.bytes());
    assert!(
        s.synced_own() >= m.surely_synced,
        "synced_own {} below the {} surely synced",
        s.synced_own(),
        m.surely_synced
    );
    assert!(s.own_unread_not_durable() <= s.own_unread());
}

fn run(max: u64, ops: Vec<Op>) {
    let fs = MemFs::new();
    let dir = Path::new(DIR);
    let mut s = Spool::open(fs.clone(), dir, max).unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append(body) => {
                let rec = m.record(body);
                let seq = m.next_seq;
                m.next_seq += 1;
                if s.append(seq, &rec).is_ok() {
                    m.own.insert(
                        seq,
                        Own {
                            id: rec.id,
                            fate: Fate::Unread,
                            durable: false,
                        },
                    );
                    m.unsynced.push(seq);
                }
            }
            Op::Next => {
                if let Some(got) = s.next() {
                    m.handed_out(&got);
                }
            }
            Op::Ack(pick) => {
                if !m.out.is_empty() {
                    let seg = m.out.swap_remove(pick % m.out.len());
                    s.ack(seg);
                }
            }
            Op::Sync => {
                let ok = s.sync().is_ok();
                for seq in std::mem::take(&mut m.unsynced) {
                    let o = m.own.get_mut(&seq).expect("appended");
                    if ok && o.fate == Fate::Unread {
                        o.durable = true;
                        m.surely_synced += 1;
                    }
                }
            }
            Op::Fault(f) => fs.inject(f),
            Op::Flip(file, at) => {
                let files = fs.files(dir, "seg-");
                if !files.is_empty() {
                    let (path, len) = &files[file % files.len()];
                    let offset = len * u64::from(at) / u64::from(u16::MAX);
                    m.flips += u64::from(fs.flip_byte(path, offset));
                }
            }
            Op::Capacity(c) => fs.set_capacity(c),
            Op::Crash | Op::Restart => {
                let crashed = matches!(op, Op::Crash);
                m.take_losses(&mut s);
                if crashed {
                    m.claimed_at_crash += s.own_unread() - s.own_unread_not_durable();
                    fs.crash();
                }
                drop(s);
                m.new_process(crashed);
                s = Spool::open(fs.clone(), dir, max).expect("reopen");
            }
        }
        m.take_losses(&mut s);
        check(&fs, &s, &m, max);
    }
    // The disk heals: everything comes back or is counted, and a finished
    // reader leaves nothing behind.
    fs.clear_faults();
    fs.set_capacity(None);
    while let Some(got) = s.next() {
        m.handed_out(&got);
        m.take_losses(&mut s);
    }
    m.take_losses(&mut s);
    check(&fs, &s, &m, max);
    assert_eq!((s.own_unread(), s.inherited_unread()), (0, 0));
    for seg in std::mem::take(&mut m.out) {
        s.ack(seg);
    }
    s.sync().unwrap();
    assert!(
        fs.files(dir, "seg-").is_empty(),
        "all read and confirmed, yet {:?} left",
        fs.files(dir, "seg-")
    );
    // A byte flip damages one record at most; anything else missing must
    // have been counted.
    assert!(
        m.came_back + m.inherited_losses + m.flips >= m.claimed_at_crash,
        "{} records called durable at a crash, {} came back, {} counted lost, {} flips",
        m.claimed_at_crash,
        m.came_back,
        m.inherited_losses,
        m.flips
    );
    assert!(
        m.must_survive.len() as u64 <= m.inherited_losses + m.flips,
        "{} records of earlier processes vanished uncounted ({} counted, {} flips)",
        m.must_survive.len(),
        m.inherited_losses,
        m.flips
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_record_comes_back_once_or_is_counted_lost_whatever_the_disk_does(
        max in prop_oneof![Just(24u64 << 10), Just(100 << 10), Just(1 << 20)],
        ops in prop::collection::vec(op(), 1..250),
    ) {
        run(max, ops);
    }
}
