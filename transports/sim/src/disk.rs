//! A node's simulated disk: one [`SimFs`] per node (it outlives crashes, as a disk
//! outlives its process) and the [`NodeStorage`] the running incarnation has open on it.
//!
//! A crash drops the open storage (its buffered, unsynced writes die with the process)
//! and then cuts the power of the `SimFs`, which keeps synced bytes and loses a random
//! part of the rest (see `kvlab_storage::SimFs`). A restart reopens the storage, which
//! recovers the snapshot and the surviving records, a torn tail cut off.

use std::path::PathBuf;

use kvlab_storage::wal::{SEGMENT_HEADER_BYTES, TRAILER_BYTES};
use kvlab_storage::{
    CrashOptions, FsyncPolicy, NodeStorage, SimFs, SimFsStats, StorageError, StorageOptions, Vfs,
};
use kvlab_types::{GroupId, NodeId, Recovery, Rng};
use rand::RngExt;

/// A bit flipped on a crashed node's disk by [`NodeDisk::corrupt_synced_log`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCorruption {
    /// The damaged segment file.
    pub path: PathBuf,
    /// The byte offset in it.
    pub offset: u64,
    /// The bit flipped (a one-bit mask).
    pub mask: u8,
}

/// One node's disk.
#[derive(Debug)]
pub(crate) struct NodeDisk {
    fs: SimFs,
    dir: PathBuf,
    /// Open while the node runs; `None` while it is crashed.
    storage: Option<NodeStorage<SimFs>>,
}

impl NodeDisk {
    /// An empty disk for `node`; the storage lives in `/n<id>` on it.
    pub fn new(node: NodeId) -> Self {
        NodeDisk {
            fs: SimFs::new(),
            dir: PathBuf::from(format!("/n{}", node.0)),
            storage: None,
        }
    }

    /// Opens the storage and returns what it recovered.
    pub fn open(&mut self, options: &StorageOptions) -> Result<Recovery, StorageError> {
        let (storage, recovery) = NodeStorage::open(self.fs.clone(), &self.dir, options)?;
        self.storage = Some(storage);
        Ok(recovery)
    }

    fn storage(&mut self) -> &mut NodeStorage<SimFs> {
        self.storage
            .as_mut()
            .expect("simulator invariant: a running node has its storage open")
    }

    /// `Effect::Persist`: appends a record (not durable yet).
    pub fn persist(&mut self, group: GroupId, record: &[u8]) -> Result<(), StorageError> {
        self.storage().persist(group, record).map(|_lsn| ())
    }

    /// A completed fsync: every record appended so far is durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.storage().sync()
    }

    /// `Effect::SaveSnapshot`: durably replaces the group's snapshot.
    pub fn save_snapshot(&mut self, group: GroupId, data: &[u8]) -> Result<(), StorageError> {
        self.storage().save_snapshot(group, data)
    }

    /// The process dies (its open storage with it), then the power is cut.
    pub fn crash(&mut self, rng: &mut Rng, options: &CrashOptions) {
        self.storage = None;
        self.fs.crash(rng, options);
    }

    /// Makes every fsync of this disk fail (`on`) or succeed again.
    pub fn set_failing_syncs(&self, on: bool) {
        self.fs.set_failing_syncs(on);
    }

    /// Flips one bit of a synced write-ahead-log byte that no crash could have damaged,
    /// so that recovery must refuse the log ([the WAL's recovery
    /// rule](kvlab_storage::wal#recovery-rule-torn-tail-or-lost-synced-data)): a byte of a
    /// segment that is not the last (its trailer aside: a torn trailer is rewritten), or
    /// of the last segment's synced bytes more than `max_unsynced_bytes` before its end
    /// (a cut that long is more than a crash can explain). Damage *within* the unsynced
    /// bound of the last segment is indistinguishable from a torn write and would be cut,
    /// losing synced records; no rule that reads one disk can tell them apart, so this
    /// fault never makes it. Only on a crashed node; `None` when the log holds no such
    /// byte yet (too short, or the `never` fsync policy, under which nothing is synced).
    pub fn corrupt_synced_log(
        &mut self,
        rng: &mut Rng,
        options: &StorageOptions,
    ) -> Option<LogCorruption> {
        if self.storage.is_some() || options.fsync == FsyncPolicy::Never {
            return None;
        }
        let mut segments: Vec<String> = self
            .fs
            .list_dir(&self.dir)
            .ok()?
            .into_iter()
            .filter(|n| n.starts_with("wal-") && n.ends_with(".log"))
            .collect();
        segments.sort();
        let last = segments.len().checked_sub(1)?;
        let header = SEGMENT_HEADER_BYTES as u64;
        let ranges: Vec<(PathBuf, u64, u64)> = segments
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let path = self.dir.join(name);
                let synced = self.fs.synced_len(&path).ok()?;
                let end = if i == last {
                    synced.checked_sub(options.max_unsynced_bytes.saturating_add(1))?
                } else {
                    synced.checked_sub(TRAILER_BYTES as u64)?
                };
                (end > header).then_some((path, header, end))
            })
            .collect();
        if ranges.is_empty() {
            return None;
        }
        let (path, lo, hi) = &ranges[rng.random_range(0..ranges.len())];
        let (path, lo, hi) = (path.clone(), *lo, *hi);
        let offset = rng.random_range(lo..hi);
        let mask = 1u8 << rng.random_range(0..8u32);
        self.fs.corrupt_byte(&path, offset, mask).ok()?;
        Some(LogCorruption { path, offset, mask })
    }

    /// Counters of the simulated file system.
    pub fn fs_stats(&self) -> SimFsStats {
        self.fs.stats()
    }
}
