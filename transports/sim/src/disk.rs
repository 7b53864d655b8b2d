//! A node's simulated disk: one [`SimFs`] per node (it outlives crashes, as a disk
//! outlives its process) and the [`NodeStorage`] the running incarnation has open on it.
//!
//! A crash drops the open storage (its buffered, unsynced writes die with the process)
//! and then cuts the power of the `SimFs`, which keeps synced bytes and loses a random
//! part of the rest (see `kvlab_storage::SimFs`). A restart reopens the storage, which
//! recovers the snapshot and the surviving records, a torn tail cut off.

use std::path::PathBuf;

use kvlab_storage::{CrashOptions, NodeStorage, SimFs, SimFsStats, StorageError, StorageOptions};
use kvlab_types::{GroupId, NodeId, Recovery, Rng};

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

    /// Counters of the simulated file system.
    pub fn fs_stats(&self) -> SimFsStats {
        self.fs.stats()
    }
}
