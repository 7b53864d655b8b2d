//! NodeStorage: recovery = latest snapshot + the records persisted after it.

mod common;

use std::path::PathBuf;

use common::{Disk, opts, segments};
use kvlab_storage::{
    DamageKind, FsyncPolicy, Lsn, NodeStorage, RecoveryMode, SEGMENT_HEADER_BYTES, StorageError,
    StorageOptions, Vfs, WalError,
};
use kvlab_types::{GroupId, Recovery};

/// The group every test here persists to (one test uses two).
const G: GroupId = GroupId::DEFAULT;

const SMALL_SEGMENT_BYTES: u64 = 4096;

fn recs(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn snapshot_then_records<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (mut st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec, Recovery::default());
    st.persist(G, b"a").unwrap();
    st.persist(G, b"b").unwrap();
    st.save_snapshot(G, b"state after a,b").unwrap();
    st.persist(G, b"c").unwrap();
    assert_eq!(st.persist(G, b"d").unwrap(), Lsn(4));
    st.sync().unwrap();
    drop(st);

    let (st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(
        rec.group(G).snapshot.as_deref(),
        Some(&b"state after a,b"[..])
    );
    assert_eq!(rec.group(G).records, recs(&["c", "d"]));
    let report = st.recovery_report();
    assert_eq!(report.snapshot_lsns.get(&G).copied(), Some(Lsn(3)));
    assert_eq!(report.records, 2);
    assert_eq!(report.records_covered_by_snapshot, 2);
    assert_eq!(st.next_lsn(), Lsn(5));
}

#[test]
fn recovery_returns_the_snapshot_and_only_later_records() {
    on_both_fs!(snapshot_then_records);
}

fn snapshot_truncates<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Always, SMALL_SEGMENT_BYTES);
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    for i in 0..300u32 {
        st.persist(G, &[i as u8; 100]).unwrap();
    }
    assert!(segments(&fs, &dir).len() > 5);
    st.save_snapshot(G, b"all 300").unwrap();
    st.sync().unwrap();
    // Only the active segment is left.
    assert_eq!(segments(&fs, &dir).len(), 1);
    st.persist(G, b"after").unwrap();
    drop(st);
    let (_, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.group(G).snapshot.as_deref(), Some(&b"all 300"[..]));
    assert_eq!(rec.group(G).records, recs(&["after"]));
}

#[test]
fn saving_a_snapshot_removes_the_log_segments_it_covers() {
    on_both_fs!(snapshot_truncates);
}

fn log_behind_snapshot<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    for r in ["a", "b", "c"] {
        st.persist(G, r.as_bytes()).unwrap();
    }
    st.sync().unwrap();
    st.save_snapshot(G, b"abc").unwrap();
    drop(st);
    // The records before the snapshot were lost (as unsynced records may be): only the
    // segment header is left.
    let seg = &segments(&fs, &dir)[0];
    fs.cut(seg, SEGMENT_HEADER_BYTES as u64);

    let (mut st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.group(G).snapshot.as_deref(), Some(&b"abc"[..]));
    assert!(rec.group(G).records.is_empty());
    assert!(st.recovery_report().wal_skipped_to_snapshot);
    // New records continue after the snapshot, not over it.
    assert_eq!(st.persist(G, b"d").unwrap(), Lsn(4));
    st.sync().unwrap();
    drop(st);
    let (_, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.group(G).records, recs(&["d"]));
}

#[test]
fn a_log_that_ends_before_the_snapshot_continues_at_the_snapshot() {
    on_both_fs!(log_behind_snapshot);
}

fn lost_snapshot<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    for i in 0..100u32 {
        st.persist(G, &[i as u8; 100]).unwrap();
    }
    st.save_snapshot(G, b"covers 100").unwrap();
    st.persist(G, b"x").unwrap();
    st.sync().unwrap();
    drop(st);
    fs.remove_file(&dir.join("snapshot-g0.bin")).unwrap();
    match NodeStorage::open(fs.clone(), &dir, &o) {
        Err(StorageError::Inconsistent { dir: d, reason }) => {
            assert_eq!(d, dir);
            assert!(reason.contains("no snapshot"), "{reason}");
        }
        other => panic!("expected Inconsistent, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn a_log_whose_prefix_is_gone_without_a_snapshot_is_refused() {
    on_both_fs!(lost_snapshot);
}

fn corrupt_snapshot_surfaces<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    st.save_snapshot(G, b"state").unwrap();
    drop(st);
    let path = dir.join("snapshot-g0.bin");
    fs.poke(&path, 30, &[0x80]);
    match NodeStorage::open(fs.clone(), &dir, &o) {
        Err(StorageError::CorruptSnapshot { file, .. }) => assert_eq!(file, path),
        other => panic!("expected CorruptSnapshot, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn a_corrupt_snapshot_is_refused_on_open() {
    on_both_fs!(corrupt_snapshot_surfaces);
}

fn two_groups<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (g1, g2) = (GroupId(1), GroupId(2));
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    // Interleaved records of two groups, over several segments.
    for i in 0..120u32 {
        st.persist(g1, format!("g1-{i}").as_bytes()).unwrap();
        st.persist(g2, format!("g2-{i}").as_bytes()).unwrap();
    }
    st.save_snapshot(g1, b"g1 covers 120").unwrap();
    st.persist(g1, b"g1-after").unwrap();
    st.sync().unwrap();
    drop(st);

    let (mut st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(
        rec.group(g1).snapshot.as_deref(),
        Some(&b"g1 covers 120"[..])
    );
    assert_eq!(rec.group(g1).records, recs(&["g1-after"]));
    let want: Vec<String> = (0..120).map(|i| format!("g2-{i}")).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(rec.group(g2).snapshot, None);
    assert_eq!(
        rec.group(g2).records,
        recs(&want),
        "group 2's log must be intact"
    );
    // Once group 2 snapshots too, the old segments go.
    let before = segments(&fs, &dir).len();
    st.save_snapshot(g2, b"g2 covers all").unwrap();
    st.sync().unwrap();
    assert!(segments(&fs, &dir).len() < before);
    drop(st);
    let (_, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.group(g1).records, recs(&["g1-after"]));
    assert!(rec.group(g2).records.is_empty());
    assert_eq!(
        rec.group(g2).snapshot.as_deref(),
        Some(&b"g2 covers all"[..])
    );
}

#[test]
fn a_snapshot_of_one_group_keeps_the_other_groups_records() {
    on_both_fs!(two_groups);
}

fn skip_keeps_other_groups<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (g1, g2) = (GroupId(1), GroupId(2));
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    st.persist(g2, b"g2-synced").unwrap();
    st.sync().unwrap();
    let synced_len = fs.size(&segments(&fs, &dir)[0]);
    st.persist(g1, b"g1-unsynced").unwrap();
    st.save_snapshot(g1, b"g1 covers g1-unsynced").unwrap();
    drop(st);
    // Power failed before the log was synced again: g1's record is lost, the snapshot
    // (always durable) is ahead of the log.
    fs.cut(&segments(&fs, &dir)[0], synced_len);

    let (mut st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert!(st.recovery_report().wal_skipped_to_snapshot);
    assert_eq!(rec.group(g2).records, recs(&["g2-synced"]));
    assert_eq!(st.persist(g2, b"g2-after").unwrap(), Lsn(3));
    st.sync().unwrap();
    drop(st);
    // The next restart still has group 2's synced record: the log was continued at the
    // snapshot's lsn, not discarded.
    let (_, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.group(g2).records, recs(&["g2-synced", "g2-after"]));
    assert_eq!(
        rec.group(g1).snapshot.as_deref(),
        Some(&b"g1 covers g1-unsynced"[..])
    );
    assert!(rec.group(g1).records.is_empty());
}

/// Continuing the log at a snapshot that is ahead of it used to discard the whole log,
/// and with it the synced records of the other groups (lost at the next restart).
#[test]
fn a_log_behind_one_groups_snapshot_keeps_the_other_groups_synced_records() {
    on_both_fs!(skip_keeps_other_groups);
}

fn prefix_gone_under_a_group<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (g1, g2) = (GroupId(1), GroupId(2));
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    for i in 0..100u32 {
        st.persist(g1, &[i as u8; 100]).unwrap();
    }
    // Group 2 never snapshots: the log must keep its record from here on.
    st.persist(g2, b"g2-only").unwrap();
    for i in 0..100u32 {
        st.persist(g1, &[i as u8; 100]).unwrap();
    }
    st.save_snapshot(g1, b"g1 covers 200").unwrap();
    st.sync().unwrap();
    drop(st);
    let segs = segments(&fs, &dir);
    assert!(
        segs.len() > 2,
        "the snapshot removed the segments below group 2's record"
    );
    // The oldest segment left, which holds group 2's record, is deleted.
    fs.remove_file(&segs[0]).unwrap();
    match NodeStorage::open(fs.clone(), &dir, &o) {
        Err(StorageError::Wal(WalError::Damaged(d))) => {
            assert_eq!((&d.file, d.offset), (&segs[0], 0));
            match &d.kind {
                DamageKind::MissingSegment { reason } => assert!(reason.contains("state file")),
                k => panic!("expected MissingSegment, got {k}"),
            }
        }
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|(_, r)| r.group(g2))
        ),
    }
}

/// The log records where it must start (the oldest record some group still needs);
/// losing that prefix is refused even though group 1's snapshot covers it.
#[test]
fn a_log_prefix_gone_while_a_group_without_snapshot_needs_it_is_refused() {
    on_both_fs!(prefix_gone_under_a_group);
}

fn close_and_truncate<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Always, SMALL_SEGMENT_BYTES);
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    for i in 0..50u32 {
        st.persist(G, format!("r{i}").as_bytes()).unwrap();
    }
    st.close().unwrap();
    assert!(
        st.persist(G, b"late").is_err(),
        "a closed storage refuses work"
    );
    drop(st);
    let (st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert!(st.recovery_report().clean_shutdown);
    assert_eq!(rec.group(G).records.len(), 50);
    let mut st = st;
    st.close().unwrap();
    drop(st);
    // Ten records' worth cut off after the clean stop: refused, then cut on request.
    let seg = segments(&fs, &dir)[0].clone();
    let len = fs.size(&seg);
    fs.cut(&seg, len - 10 * (16 + 8 + 3));
    assert!(matches!(
        NodeStorage::open(fs.clone(), &dir, &o),
        Err(StorageError::Wal(WalError::Damaged(_)))
    ));
    let t = StorageOptions {
        recovery: RecoveryMode::TruncateDamaged,
        ..o.clone()
    };
    let (st, rec) = NodeStorage::open(fs.clone(), &dir, &t).unwrap();
    assert_eq!(rec.group(G).records.len(), 40);
    let cut = &st.recovery_report().damage_truncated;
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].records_dropped, Some(10));
    assert!(cut[0].to_string().contains("10 records"), "{}", cut[0]);
}

#[test]
fn a_clean_close_is_verified_and_truncate_damaged_reports_what_it_cut() {
    on_both_fs!(close_and_truncate);
}

#[test]
fn storage_options_parse_from_toml_with_lowercase_policies() {
    let o: kvlab_storage::StorageOptions =
        toml::from_str("fsync = \"always\"\nsegment_size_bytes = 65536").unwrap();
    assert_eq!(o, opts(FsyncPolicy::Always, 65536));
    let o: kvlab_storage::StorageOptions = toml::from_str("fsync = \"never\"").unwrap();
    assert_eq!(o.fsync, FsyncPolicy::Never);
    assert_eq!(
        o.segment_size_bytes,
        kvlab_storage::StorageOptions::default().segment_size_bytes
    );
    assert!(toml::from_str::<kvlab_storage::StorageOptions>("fsync = \"Always\"").is_err());
    assert!(toml::from_str::<kvlab_storage::StorageOptions>("fsnyc = \"batch\"").is_err());
    let err = opts(FsyncPolicy::Batch, 1 << 40).validate().unwrap_err();
    assert_eq!(err.field, "segment_size_bytes");
    let fs = kvlab_storage::SimFs::new();
    assert!(matches!(
        NodeStorage::open(
            fs.clone(),
            std::path::Path::new("/n"),
            &opts(FsyncPolicy::Batch, 0)
        ),
        Err(StorageError::InvalidOptions(_))
    ));
    assert!(
        fs.list_dir(std::path::Path::new("/n")).is_err(),
        "nothing created"
    );
}
