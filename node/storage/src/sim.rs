//! [`SimFs`]: an in-memory, crash-prone file system for the deterministic simulator.
//!
//! # The model
//!
//! Files are inodes (byte vectors) reached through names. Two things can be lost in a
//! power failure ([`SimFs::crash`]): file bytes that were not synced, and directory
//! changes (create, rename, remove) that were not made durable by [`Vfs::sync_dir`].
//!
//! **File data.** Each inode remembers how many leading bytes are durable (`synced_len`)
//! and where each unsynced write ended. Writes only append (the [`VfsFile`] contract),
//! so the unsynced part is a sequence of writes after the durable prefix. At a crash the
//! file keeps its durable prefix plus the first `k` unsynced writes, `k` uniform in
//! `0..=n`; with probability [`CrashOptions::tear_probability`] the last kept write is
//! torn: from a random point inside it to its end it is cut off, overwritten with random
//! bytes, or overwritten with zeros (one of the three, equally likely). A truncation that
//! cut into durable bytes and was not synced is undone by the crash with probability
//! 1/2 (the old durable content returns, and the writes after the truncation are lost).
//! `sync_data` and `sync_all` are the same here: both make content and size durable.
//!
//! **Directories.** Every create, rename and remove is an operation in one ordered log of
//! pending namespace changes. [`Vfs::sync_dir`] of a directory applies the pending
//! operations on names in that directory to the durable namespace. At a crash a random
//! prefix of the remaining pending operations (in their original order) is kept, the rest
//! is lost: an unsynced creation may vanish (with its data, even if the data was synced),
//! an unsynced removal may be undone, and a rename is atomic (old or new, never both
//! half-done). Directories themselves are durable as soon as they are created, and are
//! never removed.
//!
//! **Handles.** A crash invalidates every open file: using a handle obtained before a
//! crash returns an error, as a process that lost power has no handles left.
//!
//! Everything a crash does is drawn from the caller's [`kvlab_types::Rng`] in a fixed
//! order (inodes and operations are kept in ordered maps), so one seed gives one outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::OptionsError;
use crate::vfs::{Vfs, VfsFile};

/// How a simulated power failure damages unsynced data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashOptions {
    /// Probability in `[0, 1]` that the last unsynced write a file keeps is torn (cut
    /// short, or its end replaced by garbage or zeros).
    pub tear_probability: f64,
}

impl Default for CrashOptions {
    fn default() -> Self {
        CrashOptions {
            tear_probability: 0.5,
        }
    }
}

impl CrashOptions {
    /// Checks that every field is in range, naming the first that is not.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(0.0..=1.0).contains(&self.tear_probability) {
            return Err(OptionsError {
                field: "tear_probability",
                reason: format!("must be within [0, 1], got {}", self.tear_probability),
            });
        }
        Ok(())
    }
}

/// Counters of what happened on a [`SimFs`], for the simulator's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimFsStats {
    /// Bytes passed to `write_all` on any file.
    pub bytes_written: u64,
    /// Calls to `sync_data` or `sync_all` on files.
    pub file_syncs: u64,
    /// Calls to `sync_dir`.
    pub dir_syncs: u64,
    /// Simulated power failures.
    pub crashes: u64,
    /// Unsynced file bytes discarded by crashes (torn bytes count as kept).
    pub unsynced_bytes_lost: u64,
    /// Unsynced directory operations discarded by crashes.
    pub namespace_ops_lost: u64,
    /// Writes torn by crashes.
    pub torn_writes: u64,
    /// File and directory syncs that failed because [`SimFs::set_failing_syncs`] was on.
    #[serde(default)]
    pub syncs_failed: u64,
}

/// An in-memory file system that can lose unsynced data in a simulated power failure.
///
/// A cheap, `Send` handle: clones share the same disk. See the [module docs](crate::sim) for
/// the exact durability model.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimFs")
            .field("files", &st.live.len())
            .field("epoch", &st.epoch)
            .field("stats", &st.stats)
            .finish()
    }
}

type InodeId = u64;

#[derive(Debug, Default)]
struct Inode {
    /// What a reader sees now.
    data: Vec<u8>,
    /// `data[..synced_len]` survives a crash.
    synced_len: usize,
    /// End offsets of the unsynced writes after `synced_len`, ascending.
    write_ends: Vec<usize>,
    /// The durable content before an unsynced truncation cut into it.
    durable_before_truncate: Option<Vec<u8>>,
    /// Open handles (an unlinked inode lives while a handle is open).
    open_handles: u32,
}

impl Inode {
    fn append(&mut self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        self.data.extend_from_slice(buf);
        self.write_ends.push(self.data.len());
    }

    fn truncate(&mut self, len: usize) {
        if len >= self.data.len() {
            // Extending: the new bytes are zeros, written but not synced.
            let extra = len - self.data.len();
            if extra > 0 {
                self.data.resize(len, 0);
                self.write_ends.push(len);
            }
            return;
        }
        if len < self.synced_len {
            if self.durable_before_truncate.is_none() {
                self.durable_before_truncate = Some(self.data[..self.synced_len].to_vec());
            }
            self.synced_len = len;
        }
        self.data.truncate(len);
        self.write_ends.retain(|&e| e < len);
        if len > self.synced_len && self.write_ends.last().copied() != Some(len) {
            // The write the cut fell into keeps its first part.
            self.write_ends.push(len);
        }
    }

    fn sync(&mut self) {
        self.synced_len = self.data.len();
        self.write_ends.clear();
        self.durable_before_truncate = None;
    }

    /// Applies a power failure to this inode's content.
    fn crash(&mut self, rng: &mut kvlab_types::Rng, opts: &CrashOptions, stats: &mut SimFsStats) {
        if let Some(old) = self.durable_before_truncate.take()
            && rng.random_bool(0.5)
        {
            stats.unsynced_bytes_lost += (self.data.len() - self.synced_len) as u64;
            self.data = old;
        } else {
            let n = self.write_ends.len();
            let k = rng.random_range(0..=n);
            let keep = if k == 0 {
                self.synced_len
            } else {
                self.write_ends[k - 1]
            };
            stats.unsynced_bytes_lost += (self.data.len() - keep) as u64;
            self.data.truncate(keep);
            if k >= 1 && rng.random_bool(opts.tear_probability) {
                let start = if k >= 2 {
                    self.write_ends[k - 2]
                } else {
                    self.synced_len
                };
                // `start < keep`: empty writes are never recorded.
                let torn_from = rng.random_range(start..keep);
                stats.torn_writes += 1;
                match rng.random_range(0..3u8) {
                    0 => {
                        stats.unsynced_bytes_lost += (keep - torn_from) as u64;
                        self.data.truncate(torn_from);
                    }
                    1 => rng.fill(&mut self.data[torn_from..]),
                    _ => self.data[torn_from..].fill(0),
                }
            }
        }
        self.synced_len = self.data.len();
        self.write_ends.clear();
    }
}

/// One pending change of the namespace.
#[derive(Debug, Clone)]
enum NsOp {
    /// `path` now names `ino` (creation, or replacement by a rename's target side).
    Link { path: PathBuf, ino: InodeId },
    /// `path` names nothing any more.
    Unlink { path: PathBuf },
    /// Atomic rename: `from` names nothing and `to` names `ino`.
    Rename {
        from: PathBuf,
        to: PathBuf,
        ino: InodeId,
    },
}

impl NsOp {
    fn touches_dir(&self, dir: &Path) -> bool {
        let in_dir = |p: &Path| p.parent() == Some(dir);
        match self {
            NsOp::Link { path, .. } | NsOp::Unlink { path } => in_dir(path),
            NsOp::Rename { from, to, .. } => in_dir(from) || in_dir(to),
        }
    }

    fn apply(&self, ns: &mut BTreeMap<PathBuf, InodeId>) {
        match self {
            NsOp::Link { path, ino } => {
                ns.insert(path.clone(), *ino);
            }
            NsOp::Unlink { path } => {
                ns.remove(path);
            }
            NsOp::Rename { from, to, ino } => {
                ns.remove(from);
                ns.insert(to.clone(), *ino);
            }
        }
    }
}

#[derive(Debug, Default)]
struct SimState {
    inodes: BTreeMap<InodeId, Inode>,
    next_ino: InodeId,
    /// The namespace a reader sees now.
    live: BTreeMap<PathBuf, InodeId>,
    /// The namespace that survives a crash.
    durable: BTreeMap<PathBuf, InodeId>,
    /// Namespace changes not yet durable, in the order they happened.
    pending: Vec<NsOp>,
    dirs: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles from an older epoch are dead.
    epoch: u64,
    /// While set, every file and directory sync fails (an injected `EIO`).
    failing_syncs: bool,
    stats: SimFsStats,
}

impl SimState {
    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if p.as_os_str().is_empty() || self.dirs.contains(p) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("simfs: no directory for {}", path.display()),
            )),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<InodeId> {
        self.live.get(path).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("simfs: no file {}", path.display()),
            )
        })
    }

    /// Drops inodes no name (live, durable or pending) and no handle refers to.
    fn collect_garbage(&mut self) {
        let mut referenced: BTreeSet<InodeId> = self.live.values().copied().collect();
        referenced.extend(self.durable.values().copied());
        for op in &self.pending {
            match op {
                NsOp::Link { ino, .. } | NsOp::Rename { ino, .. } => {
                    referenced.insert(*ino);
                }
                NsOp::Unlink { .. } => {}
            }
        }
        self.inodes
            .retain(|ino, inode| inode.open_handles > 0 || referenced.contains(ino));
    }
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than the panic itself; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a power failure: every file keeps its synced bytes plus a random prefix
    /// of its unsynced writes (the last one possibly torn), and a random prefix of the
    /// unsynced directory changes survives. All open handles die. Deterministic given
    /// the state of `rng`. The whole disk loses power: give each simulated node its own
    /// `SimFs` so that crashing one node leaves the others' files alone.
    pub fn crash(&self, rng: &mut kvlab_types::Rng, opts: &CrashOptions) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.stats.crashes += 1;
        st.epoch += 1;

        // Directory changes first: decide which names exist after the crash.
        let n = st.pending.len();
        let k = rng.random_range(0..=n);
        for op in st.pending.drain(..).take(k).collect::<Vec<_>>() {
            op.apply(&mut st.durable);
        }
        st.stats.namespace_ops_lost += (n - k) as u64;
        st.pending.clear();
        st.live = st.durable.clone();

        // Handles are gone, so only named inodes survive.
        for inode in st.inodes.values_mut() {
            inode.open_handles = 0;
        }
        st.collect_garbage();

        let stats = &mut st.stats;
        for inode in st.inodes.values_mut() {
            inode.crash(rng, opts, stats);
        }
    }

    /// Counters since this disk was created.
    pub fn stats(&self) -> SimFsStats {
        self.lock().stats.clone()
    }

    /// XORs `mask` into the byte at `offset` of the file at `path`, in both its current
    /// and its durable content: a bit rot on the medium, for corruption tests and for a
    /// simulator nemesis.
    pub fn corrupt_byte(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        let mut st = self.lock();
        let ino = st.lookup(path)?;
        let inode = st
            .inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "simfs: dangling inode"))?;
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        if off >= inode.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "simfs: offset {offset} beyond the end of {} ({} bytes)",
                    path.display(),
                    inode.data.len()
                ),
            ));
        }
        inode.data[off] ^= mask;
        if let Some(old) = inode.durable_before_truncate.as_mut()
            && off < old.len()
        {
            old[off] ^= mask;
        }
        Ok(())
    }

    /// While `on`, every file and directory sync fails with an I/O error and makes
    /// nothing durable: a disk returning `EIO`, for the simulator's `disk-fsync-error`
    /// fault. What a failed sync leaves in the page cache is unknown (Linux may drop the
    /// dirty pages and report success on the next try: "fsyncgate"), so a caller must
    /// treat the error as fatal, as every kvlab driver does.
    pub fn set_failing_syncs(&self, on: bool) {
        self.lock().failing_syncs = on;
    }

    fn sync_failed(&self, path: &Path) -> io::Error {
        self.lock().stats.syncs_failed += 1;
        io::Error::other(format!(
            "simfs: injected fsync failure (EIO) on {}",
            path.display()
        ))
    }

    /// How many bytes of the file at `path` are durable (survive any crash).
    pub fn synced_len(&self, path: &Path) -> io::Result<u64> {
        let st = self.lock();
        let ino = st.lookup(path)?;
        st.inodes
            .get(&ino)
            .map(|i| i.synced_len as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "simfs: dangling inode"))
    }

    /// Total bytes held by files that still have a name, for memory accounting.
    pub fn used_bytes(&self) -> u64 {
        let st = self.lock();
        st.live
            .values()
            .filter_map(|ino| st.inodes.get(ino))
            .map(|i| i.data.len() as u64)
            .sum()
    }
}

/// An open file of a [`SimFs`]. Dies (every call errors) when the disk crashes.
pub struct SimFile {
    fs: SimFs,
    ino: InodeId,
    epoch: u64,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .finish()
    }
}

impl SimFile {
    fn with_inode<T>(&self, f: impl FnOnce(&mut Inode, &mut SimFsStats) -> T) -> io::Result<T> {
        let mut guard = self.fs.lock();
        let st = &mut *guard;
        if st.epoch != self.epoch {
            return Err(io::Error::other(format!(
                "simfs: handle to {} was lost in a crash",
                self.path.display()
            )));
        }
        let inode = st
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| io::Error::other("simfs: dangling inode"))?;
        Ok(f(inode, &mut st.stats))
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.epoch == self.epoch {
            if let Some(inode) = st.inodes.get_mut(&self.ino) {
                inode.open_handles = inode.open_handles.saturating_sub(1);
            }
            st.collect_garbage();
        }
    }
}

impl VfsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with_inode(|inode, stats| {
            stats.bytes_written += buf.len() as u64;
            inode.append(buf);
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.fs.lock().failing_syncs {
            return Err(self.fs.sync_failed(&self.path));
        }
        self.with_inode(|inode, stats| {
            stats.file_syncs += 1;
            inode.sync();
        })
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, len_bytes: u64) -> io::Result<()> {
        let len = usize::try_from(len_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "simfs: length too large"))?;
        self.with_inode(|inode, _| inode.truncate(len))
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.with_inode(|inode, _| inode.data.len() as u64)
    }
}

impl SimFs {
    fn open_handle(&self, st: &mut SimState, ino: InodeId, path: &Path) -> SimFile {
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.open_handles += 1;
        }
        SimFile {
            fs: self.clone(),
            ino,
            epoch: st.epoch,
            path: path.to_path_buf(),
        }
    }
}

impl Vfs for SimFs {
    type File = SimFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        for anc in dir.ancestors() {
            if !anc.as_os_str().is_empty() {
                st.dirs.insert(anc.to_path_buf());
            }
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("simfs: no directory {}", dir.display()),
            ));
        }
        // BTreeMap order of full paths with one parent is byte order of the names.
        Ok(st
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock().live.contains_key(path))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock();
        let ino = st.lookup(path)?;
        Ok(st
            .inodes
            .get(&ino)
            .map(|i| i.data.clone())
            .unwrap_or_default())
    }

    fn create(&self, path: &Path) -> io::Result<SimFile> {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.check_parent(path)?;
        if let Some(&ino) = st.live.get(path) {
            if let Some(inode) = st.inodes.get_mut(&ino) {
                inode.truncate(0);
            }
            return Ok(self.open_handle(st, ino, path));
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(ino, Inode::default());
        st.live.insert(path.to_path_buf(), ino);
        st.pending.push(NsOp::Link {
            path: path.to_path_buf(),
            ino,
        });
        Ok(self.open_handle(st, ino, path))
    }

    fn open_append(&self, path: &Path) -> io::Result<SimFile> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let ino = st.lookup(path)?;
        Ok(self.open_handle(st, ino, path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_parent(to)?;
        let ino = st.lookup(from)?;
        st.live.remove(from);
        st.live.insert(to.to_path_buf(), ino);
        st.pending.push(NsOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            ino,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.lookup(path)?;
        st.live.remove(path);
        st.pending.push(NsOp::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.lock().failing_syncs {
            return Err(self.sync_failed(dir));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("simfs: no directory {}", dir.display()),
            ));
        }
        st.stats.dir_syncs += 1;
        let mut rest = Vec::with_capacity(st.pending.len());
        for op in st.pending.drain(..) {
            if op.touches_dir(dir) {
                op.apply(&mut st.durable);
            } else {
                rest.push(op);
            }
        }
        st.pending = rest;
        st.collect_garbage();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_types::seeded_rng;

    fn no_tear() -> CrashOptions {
        CrashOptions {
            tear_probability: 0.0,
        }
    }

    #[test]
    fn synced_bytes_survive_a_crash_and_unsynced_bytes_are_a_prefix() {
        for seed in 0..200 {
            let fs = SimFs::new();
            let dir = Path::new("/d");
            fs.create_dir_all(dir).unwrap();
            let p = dir.join("f");
            let mut f = fs.create(&p).unwrap();
            fs.sync_dir(dir).unwrap();
            f.write_all(b"durable").unwrap();
            f.sync_data().unwrap();
            f.write_all(b"-one").unwrap();
            f.write_all(b"-two").unwrap();
            fs.crash(&mut seeded_rng(seed), &no_tear());
            let got = fs.read(&p).unwrap();
            let full = b"durable-one-two";
            assert!(got.starts_with(b"durable"), "seed {seed}: {got:?}");
            assert!(
                [7usize, 11, 15].contains(&got.len()) && full.starts_with(&got),
                "seed {seed}: kept a non-prefix {got:?}"
            );
        }
    }

    #[test]
    fn unsynced_creation_may_vanish_but_synced_directory_keeps_it() {
        let mut lost = 0;
        for seed in 0..100 {
            let fs = SimFs::new();
            let dir = Path::new("/d");
            fs.create_dir_all(dir).unwrap();
            let p = dir.join("f");
            let mut f = fs.create(&p).unwrap();
            f.write_all(b"x").unwrap();
            f.sync_all().unwrap();
            drop(f);
            fs.crash(&mut seeded_rng(seed), &no_tear());
            if !fs.exists(&p).unwrap() {
                lost += 1;
            }
        }
        assert!(
            lost > 10 && lost < 90,
            "lost {lost} of 100 unsynced creations"
        );

        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let p = dir.join("f");
        let mut f = fs.create(&p).unwrap();
        f.write_all(b"x").unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(dir).unwrap();
        fs.crash(&mut seeded_rng(1), &no_tear());
        assert_eq!(fs.read(&p).unwrap(), b"x");
    }

    #[test]
    fn rename_is_atomic_across_a_crash() {
        for seed in 0..100 {
            let fs = SimFs::new();
            let dir = Path::new("/d");
            fs.create_dir_all(dir).unwrap();
            let (old, tmp) = (dir.join("snap"), dir.join("snap.tmp"));
            let mut f = fs.create(&old).unwrap();
            f.write_all(b"old").unwrap();
            f.sync_all().unwrap();
            fs.sync_dir(dir).unwrap();
            let mut t = fs.create(&tmp).unwrap();
            t.write_all(b"new").unwrap();
            t.sync_all().unwrap();
            fs.rename(&tmp, &old).unwrap();
            fs.crash(&mut seeded_rng(seed), &CrashOptions::default());
            let got = fs.read(&old).unwrap();
            assert!(got == b"old" || got == b"new", "seed {seed}: {got:?}");
        }
    }

    #[test]
    fn handles_die_in_a_crash() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = fs.create(Path::new("/d/f")).unwrap();
        fs.crash(&mut seeded_rng(0), &CrashOptions::default());
        assert!(f.write_all(b"x").is_err());
    }

    #[test]
    fn unsynced_truncation_may_be_undone_by_a_crash() {
        let mut undone = 0;
        for seed in 0..100 {
            let fs = SimFs::new();
            fs.create_dir_all(Path::new("/d")).unwrap();
            let p = Path::new("/d/f");
            let mut f = fs.create(p).unwrap();
            fs.sync_dir(Path::new("/d")).unwrap();
            f.write_all(b"abcdef").unwrap();
            f.sync_data().unwrap();
            f.truncate(2).unwrap();
            fs.crash(&mut seeded_rng(seed), &no_tear());
            let got = fs.read(p).unwrap();
            assert!(got == b"abcdef" || got == b"ab", "seed {seed}: {got:?}");
            undone += usize::from(got == b"abcdef");
        }
        assert!(undone > 10 && undone < 90);
    }

    #[test]
    fn crashes_are_deterministic_for_a_seed() {
        let run = |seed| {
            let fs = SimFs::new();
            fs.create_dir_all(Path::new("/d")).unwrap();
            let mut f = fs.create(Path::new("/d/f")).unwrap();
            fs.sync_dir(Path::new("/d")).unwrap();
            for i in 0..50u8 {
                f.write_all(&[i; 37]).unwrap();
            }
            fs.crash(
                &mut seeded_rng(seed),
                &CrashOptions {
                    tear_probability: 1.0,
                },
            );
            fs.read(Path::new("/d/f")).unwrap()
        };
        assert_eq!(run(9), run(9));
    }

    #[test]
    fn crash_options_reject_a_probability_out_of_range() {
        let err = CrashOptions {
            tear_probability: 1.5,
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "tear_probability");
    }
}
