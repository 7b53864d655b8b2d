//! [`NodeStorage`]: the write-ahead log and the snapshot of one node, serving the storage
//! effects of [`kvlab_types::Effect`] (`Persist`, `Sync`, `SaveSnapshot`) and producing the
//! [`kvlab_types::Recovery`] a node boots from.
//!
//! The snapshot payload on disk is `snapshot_lsn u64 LE ‖ data`, where `snapshot_lsn`
//! is the LSN the next record got when the snapshot was saved: recovery returns the
//! snapshot and exactly the records with LSN ≥ `snapshot_lsn`.

use std::path::{Path, PathBuf};

use kvlab_types::Recovery;

use crate::snapshot::SnapshotStore;
use crate::vfs::Vfs;
use crate::wal::{Lsn, TornTail, Wal, WalStats};
use crate::{StorageError, StorageOptions};

const SNAPSHOT_LSN_BYTES: usize = 8;

/// What [`NodeStorage::open`] found and repaired, for the run's events and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The LSN after the last record the snapshot covers, if there is a snapshot.
    pub snapshot_lsn: Option<Lsn>,
    /// Records returned in [`Recovery::records`].
    pub records: usize,
    /// Records still in the log but covered by the snapshot, skipped.
    pub records_covered_by_snapshot: usize,
    /// The torn tail cut off the log, if any.
    pub torn_tail: Option<TornTail>,
    /// Whether a temp snapshot left by a crash mid-save was removed.
    pub removed_leftover_temp_snapshot: bool,
    /// Whether the log ended before the snapshot (its unsynced tail was lost) and was
    /// restarted at the snapshot's LSN.
    pub wal_restarted_at_snapshot: bool,
}

/// The durable state of one node: a write-ahead log and a snapshot in one directory.
///
/// The driver (simulator or server) calls [`NodeStorage::persist`] for
/// `Effect::Persist`, [`NodeStorage::sync`] for `Effect::Sync` and
/// [`NodeStorage::save_snapshot`] for `Effect::SaveSnapshot`, in effect order, and holds
/// back sends and replies that follow a `Sync` until `sync` returns.
#[derive(Debug)]
pub struct NodeStorage<V: Vfs> {
    dir: PathBuf,
    wal: Wal<V>,
    snapshots: SnapshotStore<V>,
    report: RecoveryReport,
}

impl<V: Vfs> NodeStorage<V> {
    /// Opens (or creates) the storage in `dir` and recovers what is durable: the latest
    /// snapshot and every record persisted after it, in order. A torn log tail is cut
    /// off (see [`NodeStorage::recovery_report`]); any other damage is an error naming
    /// the file (and offset, for the log).
    pub fn open(
        vfs: V,
        dir: &Path,
        options: &StorageOptions,
    ) -> Result<(NodeStorage<V>, Recovery), StorageError> {
        options.validate()?;
        let snapshots = SnapshotStore::open(vfs.clone(), dir)?;
        let snapshot = match snapshots.load()? {
            None => None,
            Some(bytes) if bytes.len() < SNAPSHOT_LSN_BYTES => {
                return Err(StorageError::CorruptSnapshot {
                    file: snapshots.path().to_path_buf(),
                    reason: format!(
                        "payload of {} bytes is shorter than its {SNAPSHOT_LSN_BYTES}-byte lsn",
                        bytes.len()
                    ),
                });
            }
            Some(mut bytes) => {
                let mut lsn8 = [0u8; SNAPSHOT_LSN_BYTES];
                lsn8.copy_from_slice(&bytes[..SNAPSHOT_LSN_BYTES]);
                bytes.drain(..SNAPSHOT_LSN_BYTES);
                Some((Lsn(u64::from_le_bytes(lsn8)), bytes))
            }
        };
        let (mut wal, wal_recovery) = Wal::open(vfs, dir, options)?;
        let floor = snapshot.as_ref().map_or(Lsn::FIRST, |(lsn, _)| *lsn);
        let mut report = RecoveryReport {
            snapshot_lsn: snapshot.as_ref().map(|(lsn, _)| *lsn),
            torn_tail: wal_recovery.torn_tail,
            removed_leftover_temp_snapshot: snapshots.removed_leftover_temp(),
            ..RecoveryReport::default()
        };
        if wal.first_lsn() > floor {
            return Err(StorageError::Inconsistent {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the log starts at lsn {} but {} (lsn {floor} onward is needed)",
                    wal.first_lsn(),
                    match &snapshot {
                        Some(_) => "the snapshot covers only up to there",
                        None => "there is no snapshot",
                    }
                ),
            });
        }
        if wal.next_lsn() < floor {
            // The records before the snapshot were never synced and were lost; the
            // snapshot covers them. Continue the log where the snapshot says.
            wal.restart_at(floor)?;
            report.wal_restarted_at_snapshot = true;
        }
        let mut records = Vec::with_capacity(wal_recovery.records.len());
        for (lsn, payload) in wal_recovery.records {
            if lsn >= floor {
                records.push(payload);
            } else {
                report.records_covered_by_snapshot += 1;
            }
        }
        report.records = records.len();
        let recovery = Recovery {
            snapshot: snapshot.map(|(_, data)| data),
            records,
        };
        Ok((
            NodeStorage {
                dir: dir.to_path_buf(),
                wal,
                snapshots,
                report,
            },
            recovery,
        ))
    }

    /// Appends a record (`Effect::Persist`). Durable when a later [`NodeStorage::sync`]
    /// returns (at once under [`crate::FsyncPolicy::Always`]); a crash before that may
    /// lose it, and then loses every record after it too.
    pub fn persist(&mut self, record: &[u8]) -> Result<Lsn, StorageError> {
        Ok(self.wal.append(record)?)
    }

    /// Makes every record persisted so far durable (`Effect::Sync`). Under
    /// [`crate::FsyncPolicy::Never`] it does not fsync and durability is not promised.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        Ok(self.wal.sync()?)
    }

    /// Durably replaces the snapshot with `data` (`Effect::SaveSnapshot`): when this
    /// returns, recovery yields `data` and only the records persisted after this call.
    /// Log segments the snapshot covers are removed. Always fsynced, whatever the policy.
    pub fn save_snapshot(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let lsn = self.wal.next_lsn();
        let mut payload = Vec::with_capacity(SNAPSHOT_LSN_BYTES + data.len());
        payload.extend_from_slice(&lsn.0.to_le_bytes());
        payload.extend_from_slice(data);
        self.snapshots.save(&payload)?;
        self.wal.truncate_prefix(lsn)?;
        Ok(())
    }

    /// What the last [`NodeStorage::open`] found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The log's counters since open.
    pub fn wal_stats(&self) -> &WalStats {
        self.wal.stats()
    }

    /// The LSN the next persisted record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.wal.next_lsn()
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
