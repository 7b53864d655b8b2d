//! # kvlab-storage
//!
//! The durable state of a kvlab node: a checksummed write-ahead log ([`Wal`]) and
//! atomically replaced snapshots ([`SnapshotStore`], one per replication group),
//! combined in [`NodeStorage`], which serves the storage effects of
//! [`kvlab_types::Effect`] and returns the [`kvlab_types::Recovery`] a node boots from.
//!
//! Everything runs over a small file-system seam, [`Vfs`], with two implementations:
//! [`RealFs`] (std::fs with real fsyncs, for the server) and [`SimFs`] (in memory, for the
//! deterministic simulator), whose [`SimFs::crash`] models power loss: unsynced bytes
//! and unsynced directory changes may be lost, and the last write may be torn.
//!
//! **Must never depend on:** tokio or any async runtime, the network, a clock, or any
//! kvlab crate but `kvlab-types`. Nothing here reads the time or draws randomness except
//! from the RNG a caller passes to [`SimFs::crash`], so a simulated run stays
//! reproducible from its seed.
//!
//! ## Durability contract
//!
//! - [`NodeStorage::persist`] appends; the record is durable only once a later
//!   [`NodeStorage::sync`] returns (immediately under [`FsyncPolicy::Always`]; never
//!   promised under [`FsyncPolicy::Never`]). The log never leaves more than
//!   [`StorageOptions::max_unsynced_bytes`] unsynced: it syncs by itself first.
//! - After a crash, [`NodeStorage::open`] returns the latest snapshot and a prefix of the
//!   records persisted after it that contains at least every record synced before the
//!   crash, in order, never garbage. A torn tail (what a crash can leave: at most
//!   `max_unsynced_bytes`) is cut off. Damage beyond it would lose synced records and is
//!   refused with [`WalError::Damaged`], naming the file and byte offset, unless the
//!   operator chose [`RecoveryMode::TruncateDamaged`], which cuts the log there and
//!   reports the loss in [`RecoveryReport::damage_truncated`].
//! - [`NodeStorage::close`] (a graceful stop) records where the log ends; the next open
//!   refuses any shortfall from it, however small.
//! - [`NodeStorage::save_snapshot`] is durable and atomic when it returns.
//!
//! The modules document the details: [`wal`] (segment and record format, the write
//! order, the rule that tells a torn tail from lost synced data and what it cannot
//! tell), [`snapshot`] (format, atomic replacement), [`sim`] (exactly what a simulated
//! crash may lose) and [`vfs`] (the contract every file system implementation honours).
//! Their public items are re-exported here.
//!
//! ```
//! use kvlab_storage::{CrashOptions, NodeStorage, SimFs, StorageOptions};
//! use kvlab_types::GroupId;
//! use std::path::Path;
//!
//! let g = GroupId::DEFAULT;
//!
//! let fs = SimFs::new();
//! let dir = Path::new("/n1");
//! let opts = StorageOptions::default(); // fsync = "batch", recovery = "strict"
//! let (mut st, rec) = NodeStorage::open(fs.clone(), dir, &opts).unwrap();
//! assert!(rec.is_empty());
//!
//! st.persist(g, b"term=1").unwrap();
//! st.sync().unwrap(); // durable from here on
//! st.persist(g, b"vote=n2").unwrap(); // not synced: a crash may lose it
//! drop(st);
//!
//! fs.crash(&mut kvlab_types::seeded_rng(7), &CrashOptions::default());
//! let (_st, rec) = NodeStorage::open(fs.clone(), dir, &opts).unwrap();
//! assert_eq!(rec.group(g).records[0], b"term=1");
//! assert!(rec.group(g).records.len() <= 2);
//! ```
//!
//! After a graceful stop even one damaged byte at the very end of the log is refused,
//! where after a crash it would pass for a torn write:
//!
//! ```
//! use kvlab_storage::{
//!     DamageKind, Lsn, NodeStorage, SimFs, StorageError, StorageOptions, Vfs, WalError,
//!     segment_file_name,
//! };
//! use kvlab_types::GroupId;
//! use std::path::Path;
//!
//! let (fs, dir, opts) = (SimFs::new(), Path::new("/n1"), StorageOptions::default());
//! let (mut st, _) = NodeStorage::open(fs.clone(), dir, &opts).unwrap();
//! st.persist(GroupId::DEFAULT, b"term=1").unwrap();
//! st.close().unwrap(); // synced, and the log's end recorded
//!
//! let segment = dir.join(segment_file_name(Lsn::FIRST));
//! let len = fs.read(&segment).unwrap().len() as u64;
//! fs.corrupt_byte(&segment, len - 1, 0xFF).unwrap(); // bit rot in the last record
//! match NodeStorage::open(fs.clone(), dir, &opts) {
//!     Err(StorageError::Wal(WalError::Damaged(d))) => {
//!         assert_eq!(d.file, segment);
//!         assert!(matches!(d.kind, DamageKind::CleanShutdownMismatch { .. }));
//!     }
//!     other => panic!("expected a refusal, got {:?}", other.map(|(_, r)| r)),
//! }
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod node;
pub mod sim;
pub mod snapshot;
pub mod vfs;
pub mod wal;

pub use node::{NodeStorage, RecoveryReport};
pub use sim::{CrashOptions, SimFile, SimFs, SimFsStats};
pub use snapshot::{
    MAX_SNAPSHOT_BYTES, SNAPSHOT_FILE_NAME, SNAPSHOT_TEMP_FILE_NAME, SnapshotStore,
};
pub use vfs::{RealFile, RealFs, Vfs, VfsFile};
pub use wal::{
    DAMAGED_SEGMENT_SUFFIX, Damage, DamageKind, DamageTruncated, Lsn, MAX_RECORD_BYTES,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, TRAILER_BYTES, TornTail, WAL_STATE_FILE_NAME,
    WAL_STATE_TEMP_FILE_NAME, WRITE_BUFFER_BYTES, Wal, WalError, WalRecovery, WalStats,
    segment_file_name,
};

/// The smallest allowed [`StorageOptions::segment_size_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;

/// The largest allowed [`StorageOptions::segment_size_bytes`].
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// The smallest allowed [`StorageOptions::max_unsynced_bytes`].
pub const MIN_UNSYNCED_BYTES: u64 = 4 << 10;

/// The largest allowed [`StorageOptions::max_unsynced_bytes`].
pub const MAX_UNSYNCED_BYTES: u64 = 1 << 30;

/// When the write-ahead log calls `fdatasync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every append is synced before it returns: simplest and slowest.
    Always,
    /// Group commit: appends are buffered and become durable together at the next
    /// `sync()`, which the caller issues once for many appends (e.g. on `Effect::Sync`).
    #[default]
    Batch,
    /// `sync()` only hands the bytes to the OS and never fsyncs records. **Unsafe**:
    /// power loss may lose acknowledged records, and may even leave a log that refuses to
    /// open (a full segment that lost its tail before the next one). A research knob to
    /// measure what durability costs and what skipping it breaks. The log's small state
    /// file, the header of a new log and snapshots are still fsynced; recovery puts no
    /// bound on the tail it cuts, and a clean close records no end to verify.
    Never,
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::Never => "never",
        })
    }
}

/// What recovery does with damage that a crash cannot explain, i.e. damage that loses
/// records which were (or may have been) synced and acknowledged. See the
/// [recovery rule](crate::wal#recovery-rule-torn-tail-or-lost-synced-data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryMode {
    /// Refuse to open with [`WalError::Damaged`], naming the file and byte offset, and
    /// leave every file as it is. Only a torn tail (what a crash leaves) is cut.
    #[default]
    Strict,
    /// Point-in-time recovery, for an operator who accepts the loss: cut the log at its
    /// first damage, set later segments aside (renamed `<name>.damaged`), and report
    /// what was dropped in [`WalRecovery::damage_truncated`] (the node logs it at WARN).
    TruncateDamaged,
}

impl std::fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecoveryMode::Strict => "strict",
            RecoveryMode::TruncateDamaged => "truncate-damaged",
        })
    }
}

/// How a node's storage behaves; part of an experiment's node configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageOptions {
    /// When the log fsyncs (`"always"`, `"batch"` or `"never"`).
    pub fsync: FsyncPolicy,
    /// A log segment is rolled before an append would push it past this size, within
    /// [`MIN_SEGMENT_BYTES`]..=[`MAX_SEGMENT_BYTES`].
    pub segment_size_bytes: u64,
    /// The most appended bytes the log leaves without an fsync, within
    /// [`MIN_UNSYNCED_BYTES`]..=[`MAX_UNSYNCED_BYTES`]: an append that would exceed it
    /// first syncs what is pending (drivers that sync at least this often never see
    /// it). Recovery after a crash cuts at most this much off the log's tail (or one
    /// record, if a larger record was alone in the unsynced window) and refuses a longer
    /// cut as lost synced data. Ignored under [`FsyncPolicy::Never`].
    pub max_unsynced_bytes: u64,
    /// What recovery does with damage beyond a torn tail: `"strict"` (refuse, the
    /// default) or `"truncate-damaged"` (cut the log there and report the loss).
    pub recovery: RecoveryMode,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            fsync: FsyncPolicy::Batch,
            segment_size_bytes: 16 << 20,
            max_unsynced_bytes: 1 << 20,
            recovery: RecoveryMode::Strict,
        }
    }
}

impl StorageOptions {
    /// Checks every field, naming the first that is out of range.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_size_bytes) {
            return Err(OptionsError {
                field: "segment_size_bytes",
                reason: format!(
                    "must be within {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}, got {}",
                    self.segment_size_bytes
                ),
            });
        }
        if !(MIN_UNSYNCED_BYTES..=MAX_UNSYNCED_BYTES).contains(&self.max_unsynced_bytes) {
            return Err(OptionsError {
                field: "max_unsynced_bytes",
                reason: format!(
                    "must be within {MIN_UNSYNCED_BYTES}..={MAX_UNSYNCED_BYTES}, got {}",
                    self.max_unsynced_bytes
                ),
            });
        }
        Ok(())
    }
}

/// An option that is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid storage option `{field}`: {reason}")]
pub struct OptionsError {
    /// The field's name as written in the configuration.
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// What went wrong in a node's storage. Every variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The write-ahead log failed or is damaged.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// An operating-system call on the snapshot or the directory failed.
    #[error("storage i/o error: {op} {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the storage was doing, e.g. `"fsync temp snapshot"`.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The snapshot file is damaged.
    #[error("corrupt snapshot {}: {reason}", file.display())]
    CorruptSnapshot {
        /// The snapshot file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot larger than [`MAX_SNAPSHOT_BYTES`] was refused; the old one is kept.
    #[error("snapshot of {len_bytes} bytes exceeds MAX_SNAPSHOT_BYTES ({max_bytes})")]
    SnapshotTooLarge {
        /// Size of the refused snapshot.
        len_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The log and the snapshot do not fit together (records between them are missing).
    #[error("storage in {} is inconsistent: {reason}", dir.display())]
    Inconsistent {
        /// The storage directory.
        dir: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The options were invalid.
    #[error(transparent)]
    InvalidOptions(#[from] OptionsError),
}
