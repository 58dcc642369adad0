//! The file-system calls of [`MemFs`], each one where a fault can fire.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use super::{eio, enospc, Fault, MemFs, Node, State};
use crate::ship::spool::fs::{Meta, SpoolFile, SpoolFs};

/// An open file of a [`MemFs`].
#[derive(Debug)]
pub(crate) struct MemFile {
    fs: MemFs,
    ino: u64,
    epoch: u64,
}

/// The lock of a spool directory on a [`MemFs`], released when dropped.
#[derive(Debug)]
pub(crate) struct MemLock {
    fs: MemFs,
    path: PathBuf,
    epoch: u64,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut st = self.fs.state();
        if st.epoch == self.epoch {
            st.locks.retain(|p| *p != self.path);
        }
    }
}

impl SpoolFs for MemFs {
    type File = MemFile;
    type Lock = MemLock;

    fn current_uid(&self) -> u32 {
        self.state().uid
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<Meta> {
        let st = self.state();
        let node = st.nodes.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(st.meta(node))
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        let st = self.state();
        let (node, _) = st.resolve(path)?;
        Ok(st.meta(node))
    }

    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        let mut st = self.state();
        let uid = st.uid;
        for dir in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            match st.nodes.get(dir) {
                Some(Node::Dir { .. }) => {}
                Some(_) => return Err(io::Error::other("not a directory")),
                None => {
                    st.nodes.insert(dir.to_owned(), Node::Dir { uid, mode });
                }
            }
        }
        Ok(())
    }

    fn set_mode(&self, path: &Path, new_mode: u32) -> io::Result<()> {
        let mut st = self.state();
        let (_, real) = st.resolve(path)?;
        match st.nodes.get_mut(&real) {
            Some(Node::Dir { mode, .. } | Node::File { mode, .. }) => {
                *mode = new_mode;
                Ok(())
            }
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn lock(&self, path: &Path) -> io::Result<MemLock> {
        let mut st = self.state();
        match st.file_at(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                st.new_file(path)?;
            }
            Err(e) => return Err(e),
        }
        if st.locks.iter().any(|p| p == path) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        st.locks.push(path.to_owned());
        Ok(MemLock {
            fs: self.clone(),
            path: path.to_owned(),
            epoch: st.epoch,
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let st = self.state();
        let (_, real) = st.resolve(dir)?;
        Ok(st
            .nodes
            .keys()
            .filter(|p| p.parent() == Some(real.as_path()))
            .filter_map(|p| p.file_name().map(|n| n.to_owned()))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<MemFile> {
        let mut st = self.state();
        if st.take_fault(|f| f == Fault::CreateError).is_some() {
            return Err(enospc());
        }
        if st.nodes.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let ino = st.new_file(path)?;
        Ok(MemFile {
            fs: self.clone(),
            ino,
            epoch: st.epoch,
        })
    }

    fn open_read(&self, path: &Path) -> io::Result<MemFile> {
        let st = self.state();
        let ino = st.file_at(path)?;
        Ok(MemFile {
            fs: self.clone(),
            ino,
            epoch: st.epoch,
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        if st.take_fault(|f| f == Fault::RemoveError).is_some() {
            return Err(eio("remove"));
        }
        let Some(node) = st.nodes.remove(path) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        if let Node::File { ino, .. } = node {
            let data = st.files.get_mut(&ino).expect("file data");
            if data.entry_durable {
                data.live = Vec::new();
                st.ghosts.push((path.to_owned(), ino));
            } else {
                st.files.remove(&ino);
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        st.sync_dir_calls += 1;
        if st.take_fault(|f| f == Fault::DirSyncError).is_some() {
            return Err(eio("fsync of a directory"));
        }
        let st = &mut *st;
        let (_, real) = st.resolve(dir)?;
        for (path, node) in &st.nodes {
            if let (Node::File { ino, .. }, true) = (node, path.parent() == Some(real.as_path())) {
                st.files.get_mut(ino).expect("file data").entry_durable = true;
            }
        }
        let ghosts = std::mem::take(&mut st.ghosts);
        for (path, ino) in ghosts {
            if path.parent() == Some(real.as_path()) {
                st.files.remove(&ino);
            } else {
                st.ghosts.push((path, ino));
            }
        }
        Ok(())
    }
}

impl MemFile {
    /// The file system, once this handle is known to be from before no crash.
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self.fs.state();
        if st.epoch != self.epoch {
            return Err(io::Error::other(
                "the process that opened this file crashed (MemFs::crash)",
            ));
        }
        if !st.files.contains_key(&self.ino) {
            return Err(io::Error::other(
                "file removed (MemFs keeps no unlinked data)",
            ));
        }
        Ok(st)
    }
}

impl SpoolFile for MemFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.state()?;
        let fault = st.take_fault(|f| {
            matches!(
                f,
                Fault::NoSpace | Fault::PartialWrite(_) | Fault::WriteError
            )
        });
        let room = match st.capacity {
            Some(cap) => cap.saturating_sub(st.used()),
            None => u64::MAX,
        };
        let (n, error) = match fault {
            Some(Fault::NoSpace) => (0, Some(enospc())),
            Some(Fault::WriteError) => (0, Some(eio("write"))),
            Some(Fault::PartialWrite(n)) => (n.min(buf.len()), Some(enospc())),
            _ => (buf.len(), None),
        };
        let (n, error) = if (n as u64) > room {
            (room as usize, Some(enospc()))
        } else {
            (n, error)
        };
        let data = st.files.get_mut(&self.ino).expect("checked");
        data.changed_from = data.changed_from.min(data.live.len());
        data.live.extend_from_slice(&buf[..n]);
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.state()?;
        if st.take_fault(|f| f == Fault::ReadError).is_some() {
            return Err(eio("read"));
        }
        let data = &st.files[&self.ino].live;
        let at = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        Ok(n)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.state()?;
        if st.take_fault(|f| f == Fault::SetLenError).is_some() {
            return Err(eio("ftruncate"));
        }
        let data = st.files.get_mut(&self.ino).expect("checked");
        let len = len as usize;
        data.changed_from = data.changed_from.min(len).min(data.live.len());
        data.live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.state()?;
        st.sync_data_calls += 1;
        let failed = st.take_fault(|f| f == Fault::SyncError).is_some();
        let data = st.files.get_mut(&self.ino).expect("checked");
        if failed {
            // The kernel marks the pages clean without writing them.
            let dropped = data.changed_from..data.live.len();
            data.dropped.push(dropped);
            data.changed_from = data.live.len();
            return Err(eio("fsync"));
        }
        let from = data.changed_from.min(data.durable.len());
        data.durable.truncate(from);
        data.durable.extend_from_slice(&data.live[from..]);
        for r in &data.dropped {
            let end = r.end.min(data.durable.len());
            if r.start < end {
                data.durable[r.start..end].fill(0);
            }
        }
        data.changed_from = data.live.len();
        Ok(())
    }

    fn len(&mut self) -> io::Result<u64> {
        let st = self.state()?;
        Ok(st.files[&self.ino].live.len() as u64)
    }
}
