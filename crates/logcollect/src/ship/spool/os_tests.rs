//! The spool on the real file system: permissions, owners, symbolic links,
//! the lock, and what a process that never synced leaves.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

/// A fresh directory under the system's temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("lc-spool-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rec(i: u64) -> Encoded {
    Encoded {
        id: uuid::Uuid::from_u128(u128::from(i) + 1),
        routing_key: format!("logstash.t{i}"),
        body: format!("{{\"i\":{i}}}").into_bytes(),
        truncated: false,
    }
}

fn open(dir: &Path) -> Result<Spool<OsFs>, SpoolError> {
    Spool::open(OsFs, dir, 1 << 30)
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lcs"))
        .collect();
    v.sort();
    v
}

fn ids(s: &mut Spool<OsFs>) -> Vec<uuid::Uuid> {
    std::iter::from_fn(|| s.next()).map(|g| g.rec.id).collect()
}

fn expected(n: u64) -> Vec<uuid::Uuid> {
    (0..n).map(|i| rec(i).id).collect()
}

/// Owner and permission checks only mean something when the test can make
/// a file of another user: as root.
fn can_chown() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("not root: cannot give files to another user, owner checks not exercised");
    }
    root
}

#[test]
fn on_disk_the_directory_is_0700_and_files_0600_even_when_made_wider() {
    let t = Scratch::new("modes");
    let dir = t.path("a/b/spool");
    let mut s = open(&dir).unwrap();
    s.append(0, &rec(0)).unwrap();
    s.sync().unwrap();
    drop(s);
    let seg = segment_files(&dir).pop().unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&seg), 0o600);
    assert_eq!(mode(&dir.join("LOCK")), 0o600);
    for (p, m) in [(&dir, 0o755), (&seg, 0o644), (&dir.join("LOCK"), 0o666)] {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }
    let mut s = open(&dir).unwrap();
    assert_eq!(
        (mode(&dir), mode(&seg), mode(&dir.join("LOCK"))),
        (0o700, 0o600, 0o600)
    );
    assert_eq!(ids(&mut s), expected(1));
}

#[test]
fn on_disk_a_directory_or_file_of_another_user_is_refused() {
    if !can_chown() {
        return;
    }
    let t = Scratch::new("owner");
    let dir = t.path("spool");
    let mut s = open(&dir).unwrap();
    s.append(0, &rec(0)).unwrap();
    drop(s);
    let seg = segment_files(&dir).pop().unwrap();
    std::os::unix::fs::chown(&seg, Some(65534), None).unwrap();
    let err = open(&dir).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("uid 65534"), "{err}");
    std::os::unix::fs::chown(&seg, Some(0), None).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let err = open(&dir).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
}

#[test]
fn on_disk_a_directory_linked_to_another_users_is_refused_and_to_ours_is_fine() {
    let t = Scratch::new("dirlink");
    let ours = t.path("ours");
    fs::create_dir(&ours).unwrap();
    symlink(&ours, t.path("link-ours")).unwrap();
    let mut s = open(&t.path("link-ours")).unwrap();
    s.append(0, &rec(0)).unwrap();
    assert_eq!(ids(&mut s), expected(1));
    drop(s);
    if !can_chown() {
        return;
    }
    let theirs = t.path("theirs");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    symlink(&theirs, t.path("link-theirs")).unwrap();
    let err = open(&t.path("link-theirs")).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::Refused, "{err}");
    assert!(
        fs::read_dir(&theirs).unwrap().next().is_none(),
        "nothing made there"
    );
}

#[test]
fn on_disk_a_symlinked_lock_or_segment_is_refused_and_its_target_untouched() {
    let t = Scratch::new("links");
    let dir = t.path("spool");
    fs::create_dir(&dir).unwrap();
    let target = t.path("precious");
    fs::write(&target, b"keep me").unwrap();
    symlink(&target, dir.join("LOCK")).unwrap();
    let err = open(&dir).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    fs::remove_file(dir.join("LOCK")).unwrap();
    symlink(&target, dir.join("seg-00000000000000000003.lcs")).unwrap();
    let err = open(&dir).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::Refused, "{err}");
    assert!(
        err.to_string().contains("seg-00000000000000000003.lcs"),
        "{err}"
    );
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    assert_eq!(mode(&target), 0o644, "the link's target keeps its mode");
}

#[test]
fn on_disk_the_lock_keeps_a_second_spool_out() {
    let t = Scratch::new("lock");
    let dir = t.path("spool");
    let first = open(&dir).unwrap();
    let err = open(&dir).unwrap_err();
    assert_eq!(err.kind(), SpoolErrorKind::InUse, "{err}");
    drop(first);
    open(&dir).unwrap();
}

#[test]
fn on_disk_a_process_killed_before_its_sync_leaves_its_records_to_the_next() {
    let t = Scratch::new("killed");
    let dir = t.path("spool");
    let mut s = open(&dir).unwrap();
    for i in 0..1000 {
        s.append(i, &rec(i)).unwrap();
    }
    // Killed: no sync, files closed by the kernel, data in the page cache.
    drop(s);
    let mut s = open(&dir).unwrap();
    assert_eq!(s.inherited_unread(), 1000);
    assert_eq!(ids(&mut s), expected(1000));
    assert_eq!(s.inherited_unread(), 0);
}

#[test]
fn on_disk_a_record_cut_short_by_a_crash_is_told_apart_from_damage() {
    let t = Scratch::new("torn");
    let dir = t.path("spool");
    let mut s = open(&dir).unwrap();
    for i in 0..3 {
        s.append(i, &rec(i)).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let seg = segment_files(&dir).pop().unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xFE, b'L', b'C', 0xFF, 1, 2, 3, 4, 200, 0, 0, 0, b'x'])
        .unwrap();
    drop(f);
    let mut s = open(&dir).unwrap();
    assert_eq!(ids(&mut s), expected(3));
    let lost = s.take_losses();
    assert_eq!((lost.torn_inherited, lost.corrupt_inherited), (1, 0));
}
