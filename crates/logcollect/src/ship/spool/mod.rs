//! TEMPORARY in-memory stand-in with the new spool interface, so the driver
//! compiles while the real spool (segment files, file layer) is written.
//! Replaced before this branch lands.

use std::collections::VecDeque;
use std::path::Path;

use crate::encode::Encoded;

pub(crate) type SegId = u64;

pub(crate) trait SpoolFs {}

#[derive(Debug, Default, Clone)]
pub(crate) struct OsFs;
impl SpoolFs for OsFs {}

#[derive(Debug)]
pub(crate) struct SpoolError(pub(crate) String);
impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SpoolError {}

#[derive(Debug)]
pub(crate) struct Spooled {
    pub(crate) seg: SegId,
    pub(crate) seq: Option<u64>,
    pub(crate) rec: Encoded,
}

#[derive(Debug, Default)]
pub(crate) struct SpoolLosses {
    pub(crate) cap_own: Vec<u64>,
    pub(crate) cap_inherited: u64,
    pub(crate) corrupt_own: Vec<u64>,
    pub(crate) corrupt_inherited: u64,
}

#[derive(Debug)]
pub(crate) struct Spool<F: SpoolFs> {
    _fs: F,
    q: VecDeque<(u64, Encoded)>,
    appended: u64,
    synced: u64,
}

impl<F: SpoolFs> Spool<F> {
    pub(crate) fn open(fs: F, _dir: &Path, _max_bytes: u64) -> Result<Spool<F>, SpoolError> {
        Ok(Spool {
            _fs: fs,
            q: VecDeque::new(),
            appended: 0,
            synced: 0,
        })
    }
    pub(crate) fn append(&mut self, seq: u64, rec: &Encoded) -> Result<(), SpoolError> {
        self.q.push_back((seq, rec.clone()));
        self.appended += 1;
        Ok(())
    }
    pub(crate) fn sync(&mut self) -> Result<(), SpoolError> {
        self.synced = self.appended;
        Ok(())
    }
    pub(crate) fn synced_own(&self) -> u64 {
        self.synced
    }
    pub(crate) fn next(&mut self) -> Option<Spooled> {
        self.q.pop_front().map(|(seq, rec)| Spooled {
            seg: 0,
            seq: Some(seq),
            rec,
        })
    }
    pub(crate) fn ack(&mut self, _seg: SegId) {}
    pub(crate) fn take_losses(&mut self) -> SpoolLosses {
        SpoolLosses::default()
    }
    pub(crate) fn own_unread(&self) -> u64 {
        self.q.len() as u64
    }
    pub(crate) fn inherited_unread(&self) -> u64 {
        0
    }
    pub(crate) fn bytes(&self) -> u64 {
        0
    }
}
