//! [`NodeStorage`]: the write-ahead log and the snapshots of one node, serving the
//! storage effects of [`kvlab_types::Effect`] (`Persist`, `Sync`, `SaveSnapshot`) and
//! producing the [`kvlab_types::Recovery`] a node boots from.
//!
//! # Many groups, one log
//!
//! A node runs several replication groups. Their records share one write-ahead log (one
//! fsync makes every group's records durable); each group has its own snapshot, in its
//! own file `snapshot-g<N>.bin`. A WAL payload is `group u64 LE ‖ record`. A snapshot
//! payload on disk is `snapshot_lsn u64 LE ‖ data`, where `snapshot_lsn` is the LSN the
//! next record got when the snapshot was saved: recovery returns, for each group, its
//! snapshot and exactly **that group's** records with LSN ≥ its `snapshot_lsn`. Saving a
//! snapshot of group A therefore never drops a record of group B.
//!
//! Log segments are removed once no group needs them: the log's prefix is cut below the
//! oldest record that some group still needs (the first record after that group's
//! snapshot). A group that never snapshots keeps every segment since its first record.
//!
//! # What `open` detects, and what it cannot
//!
//! The log refuses lost synced data by itself (see the
//! [recovery rule](crate::wal#recovery-rule-torn-tail-or-lost-synced-data)); across the
//! log and the snapshots, [`NodeStorage::open`] adds:
//!
//! - **A log prefix a group still needs is gone.** Cutting the log's prefix records, in
//!   the log's state file, the LSN from which the log holds every record: the oldest one
//!   some group still needs. If the oldest segment now starts later (or is missing), a
//!   group without a snapshot there lost records, even if another group's snapshot
//!   covers that range: refused as [`crate::DamageKind::MissingSegment`], naming the
//!   missing segment.
//! - **No snapshot at all, but the log starts after LSN 1** (every snapshot file gone):
//!   refused as [`StorageError::Inconsistent`].
//! - **A log that ends before a snapshot.** A snapshot is durable when saved, the log's
//!   tail only at the next sync, so after a crash the log may end before the newest
//!   snapshot's LSN. That is no damage: the log continues at that LSN (a new segment
//!   whose header says where the records before it end), keeping every record it holds,
//!   the synced records of the other groups among them.
//!
//! Not detected: a deleted `snapshot-g<N>.bin` while the log still holds records of
//! that group (the group then recovers without its snapshot, from whatever records the
//! log kept; a node-level record of each group's snapshot LSN would catch it), and a
//! snapshot or state file replaced by an older valid copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvlab_types::{GroupId, GroupRecovery, Recovery};

use crate::snapshot::SnapshotStore;
use crate::vfs::Vfs;
use crate::wal::{DamageTruncated, Lsn, TornTail, Wal, WalStats};
use crate::{StorageError, StorageOptions};

const SNAPSHOT_LSN_BYTES: usize = 8;
const GROUP_TAG_BYTES: usize = 8;
/// A group's snapshot file is `snapshot-g<N>.bin`.
pub const GROUP_SNAPSHOT_PREFIX: &str = "snapshot-g";
const GROUP_SNAPSHOT_SUFFIX: &str = ".bin";

/// What [`NodeStorage::open`] found and repaired, for the run's events and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Groups with a snapshot, and the LSN after the last record each snapshot covers.
    pub snapshot_lsns: BTreeMap<GroupId, Lsn>,
    /// Records returned in the [`Recovery`], over all groups.
    pub records: usize,
    /// Records still in the log but covered by their group's snapshot, skipped.
    pub records_covered_by_snapshot: usize,
    /// The torn tail cut off the log, if any.
    pub torn_tail: Option<TornTail>,
    /// The log had been closed cleanly ([`NodeStorage::close`]) and was found exactly as
    /// the close left it.
    pub clean_shutdown: bool,
    /// What `recovery = "truncate-damaged"` cut off a damaged log: records that were
    /// synced are lost. Drivers must log each at WARN. Always empty under strict
    /// recovery, which refuses to open instead.
    pub damage_truncated: Vec<DamageTruncated>,
    /// Log segments below the log's start that a crash during a prefix truncation left
    /// behind, removed now.
    pub leftover_segments_removed: usize,
    /// Log segments whose trailer a crash while rolling had cut short, rewritten now.
    pub trailers_repaired: usize,
    /// Whether a temp snapshot left by a crash mid-save was removed.
    pub removed_leftover_temp_snapshot: bool,
    /// Whether the log ended before a snapshot (its unsynced tail was lost) and now
    /// continues at the newest snapshot's LSN (every record it held is kept).
    pub wal_skipped_to_snapshot: bool,
}

/// One group's snapshot store and what the log holds for it.
#[derive(Debug)]
struct GroupFiles<V: Vfs> {
    snapshots: SnapshotStore<V>,
    /// The LSN after the last record the group's snapshot covers (`Lsn::FIRST` without
    /// a snapshot).
    floor: Lsn,
    /// The LSN of the group's oldest record the log must keep (`None`: none).
    first_live: Option<Lsn>,
}

/// The durable state of one node: a write-ahead log shared by its groups and one
/// snapshot per group, in one directory.
///
/// The driver (simulator or server) calls [`NodeStorage::persist`] for
/// `Effect::Persist`, [`NodeStorage::sync`] for `Effect::Sync` and
/// [`NodeStorage::save_snapshot`] for `Effect::SaveSnapshot`, in effect order, and holds
/// back sends and replies that follow a `Sync` until `sync` returns.
#[derive(Debug)]
pub struct NodeStorage<V: Vfs> {
    vfs: V,
    dir: PathBuf,
    wal: Wal<V>,
    groups: BTreeMap<GroupId, GroupFiles<V>>,
    report: RecoveryReport,
}

fn group_snapshot_name(group: GroupId) -> String {
    format!("{GROUP_SNAPSHOT_PREFIX}{}{GROUP_SNAPSHOT_SUFFIX}", group.0)
}

/// The group whose snapshot (or leftover temporary snapshot) file this is.
fn group_of_snapshot_file(name: &str) -> Option<GroupId> {
    let rest = name.strip_prefix(GROUP_SNAPSHOT_PREFIX)?;
    let rest = rest.strip_suffix(".tmp").unwrap_or(rest);
    let n = rest.strip_suffix(GROUP_SNAPSHOT_SUFFIX)?;
    n.parse::<u64>().ok().map(GroupId)
}

/// Splits a snapshot payload into its LSN and data.
fn split_snapshot(file: &Path, mut bytes: Vec<u8>) -> Result<(Lsn, Vec<u8>), StorageError> {
    if bytes.len() < SNAPSHOT_LSN_BYTES {
        return Err(StorageError::CorruptSnapshot {
            file: file.to_path_buf(),
            reason: format!(
                "payload of {} bytes is shorter than its {SNAPSHOT_LSN_BYTES}-byte lsn",
                bytes.len()
            ),
        });
    }
    let mut lsn8 = [0u8; SNAPSHOT_LSN_BYTES];
    lsn8.copy_from_slice(&bytes[..SNAPSHOT_LSN_BYTES]);
    bytes.drain(..SNAPSHOT_LSN_BYTES);
    Ok((Lsn(u64::from_le_bytes(lsn8)), bytes))
}

/// Splits a WAL payload into its group and record.
fn split_record(lsn: Lsn, mut payload: Vec<u8>) -> Result<(GroupId, Vec<u8>), String> {
    if payload.len() < GROUP_TAG_BYTES {
        return Err(format!(
            "record at lsn {lsn} has {} bytes, fewer than its {GROUP_TAG_BYTES}-byte group tag",
            payload.len()
        ));
    }
    let mut g8 = [0u8; GROUP_TAG_BYTES];
    g8.copy_from_slice(&payload[..GROUP_TAG_BYTES]);
    payload.drain(..GROUP_TAG_BYTES);
    Ok((GroupId(u64::from_le_bytes(g8)), payload))
}

impl<V: Vfs> NodeStorage<V> {
    /// Opens (or creates) the storage in `dir` and recovers what is durable: each
    /// group's latest snapshot and every record of that group persisted after it, in
    /// order. A torn log tail is cut off (see [`NodeStorage::recovery_report`]); any
    /// other damage is an error naming the file (and offset, for the log).
    pub fn open(
        vfs: V,
        dir: &Path,
        options: &StorageOptions,
    ) -> Result<(NodeStorage<V>, Recovery), StorageError> {
        options.validate()?;
        vfs.create_dir_all(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            op: "create directory",
            source,
        })?;
        let mut report = RecoveryReport::default();
        let mut groups = BTreeMap::new();
        let mut recovery = Recovery::default();
        let names = vfs.list_dir(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            op: "list directory",
            source,
        })?;
        for group in names.iter().filter_map(|n| group_of_snapshot_file(n)) {
            if groups.contains_key(&group) {
                continue;
            }
            let files = Self::open_group(&vfs, dir, group, &mut report, &mut recovery)?;
            groups.insert(group, files);
        }
        let (mut wal, wal_recovery) = Wal::open(vfs.clone(), dir, options)?;
        report.torn_tail = wal_recovery.torn_tail;
        report.clean_shutdown = wal_recovery.clean_shutdown;
        report.damage_truncated = wal_recovery.damage_truncated;
        report.leftover_segments_removed = wal_recovery.leftover_segments_removed;
        report.trailers_repaired = wal_recovery.trailers_repaired;
        if groups.is_empty() && wal.first_lsn() > Lsn::FIRST {
            return Err(StorageError::Inconsistent {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the log starts at lsn {} but there is no snapshot (lsn {} onward is needed)",
                    wal.first_lsn(),
                    Lsn::FIRST
                ),
            });
        }
        let newest_floor = groups.values().map(|g| g.floor).max().unwrap_or(Lsn::FIRST);
        if wal.next_lsn() < newest_floor {
            // The records before that snapshot were never synced and were lost; the
            // snapshot covers its own group's, and the others' were unsynced too. Continue
            // the log where the snapshot says, so that no later record of that group
            // falls under it, and keep what the log holds: the synced records of the
            // other groups in it are still needed.
            wal.skip_to(newest_floor)?;
            report.wal_skipped_to_snapshot = true;
        }
        for (lsn, payload) in wal_recovery.records {
            let (group, record) =
                split_record(lsn, payload).map_err(|reason| StorageError::Inconsistent {
                    dir: dir.to_path_buf(),
                    reason,
                })?;
            let files = match groups.entry(group) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(Self::group_files(&vfs, dir, group)?)
                }
            };
            if lsn < files.floor {
                report.records_covered_by_snapshot += 1;
                continue;
            }
            files.first_live.get_or_insert(lsn);
            recovery
                .groups
                .entry(group)
                .or_insert_with(GroupRecovery::default)
                .records
                .push(record);
            report.records += 1;
        }
        Ok((
            NodeStorage {
                vfs,
                dir: dir.to_path_buf(),
                wal,
                groups,
                report,
            },
            recovery,
        ))
    }

    fn group_files(vfs: &V, dir: &Path, group: GroupId) -> Result<GroupFiles<V>, StorageError> {
        Ok(GroupFiles {
            snapshots: SnapshotStore::open_named(vfs.clone(), dir, &group_snapshot_name(group))?,
            floor: Lsn::FIRST,
            first_live: None,
        })
    }

    /// Opens a group's snapshot directory and loads its snapshot into `recovery`.
    fn open_group(
        vfs: &V,
        dir: &Path,
        group: GroupId,
        report: &mut RecoveryReport,
        recovery: &mut Recovery,
    ) -> Result<GroupFiles<V>, StorageError> {
        let mut files = Self::group_files(vfs, dir, group)?;
        report.removed_leftover_temp_snapshot |= files.snapshots.removed_leftover_temp();
        if let Some(bytes) = files.snapshots.load()? {
            let (lsn, data) = split_snapshot(files.snapshots.path(), bytes)?;
            files.floor = lsn;
            report.snapshot_lsns.insert(group, lsn);
            recovery.groups.insert(
                group,
                GroupRecovery {
                    snapshot: Some(data),
                    records: Vec::new(),
                },
            );
        }
        Ok(files)
    }

    /// The files of `group`, opened on first use.
    fn files_mut(&mut self, group: GroupId) -> Result<&mut GroupFiles<V>, StorageError> {
        Ok(match self.groups.entry(group) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Self::group_files(&self.vfs, &self.dir, group)?)
            }
        })
    }

    /// Appends a record of `group` (`Effect::Persist`). Durable when a later
    /// [`NodeStorage::sync`] returns (at once under [`crate::FsyncPolicy::Always`]); a
    /// crash before that may lose it, and then loses every record after it too.
    pub fn persist(&mut self, group: GroupId, record: &[u8]) -> Result<Lsn, StorageError> {
        let mut payload = Vec::with_capacity(GROUP_TAG_BYTES + record.len());
        payload.extend_from_slice(&group.0.to_le_bytes());
        payload.extend_from_slice(record);
        let lsn = self.wal.append(&payload)?;
        self.files_mut(group)?.first_live.get_or_insert(lsn);
        Ok(lsn)
    }

    /// Makes every record persisted so far durable (`Effect::Sync`). Under
    /// [`crate::FsyncPolicy::Never`] it does not fsync and durability is not promised.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        Ok(self.wal.sync()?)
    }

    /// Durably replaces `group`'s snapshot with `data` (`Effect::SaveSnapshot`): when this
    /// returns, recovery yields `data` and only the records of `group` persisted after
    /// this call; other groups' records are untouched. Log segments no group needs any
    /// more are removed. Always fsynced, whatever the policy.
    pub fn save_snapshot(&mut self, group: GroupId, data: &[u8]) -> Result<(), StorageError> {
        let lsn = self.wal.next_lsn();
        let mut payload = Vec::with_capacity(SNAPSHOT_LSN_BYTES + data.len());
        payload.extend_from_slice(&lsn.0.to_le_bytes());
        payload.extend_from_slice(data);
        let files = self.files_mut(group)?;
        files.snapshots.save(&payload)?;
        files.floor = lsn;
        files.first_live = None;
        let keep_from = self
            .groups
            .values()
            .filter_map(|g| g.first_live)
            .min()
            .unwrap_or(lsn);
        self.wal.truncate_prefix(keep_from)?;
        Ok(())
    }

    /// Closes the storage cleanly (a graceful stop): every record is made durable and the
    /// log's end is recorded, so that the next [`NodeStorage::open`] refuses any
    /// shortfall, however small, instead of taking it for a torn tail. Afterwards the
    /// storage refuses further work.
    pub fn close(&mut self) -> Result<(), StorageError> {
        Ok(self.wal.close()?)
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
