//! NodeStorage: recovery = latest snapshot + the records persisted after it.

mod common;

use std::path::PathBuf;

use common::{Disk, opts, segments};
use kvlab_storage::{FsyncPolicy, Lsn, NodeStorage, SNAPSHOT_FILE_NAME, StorageError, Vfs};
use kvlab_types::Recovery;

const SMALL_SEGMENT_BYTES: u64 = 4096;

fn recs(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn snapshot_then_records<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (mut st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec, Recovery::default());
    st.persist(b"a").unwrap();
    st.persist(b"b").unwrap();
    st.save_snapshot(b"state after a,b").unwrap();
    st.persist(b"c").unwrap();
    assert_eq!(st.persist(b"d").unwrap(), Lsn(4));
    st.sync().unwrap();
    drop(st);

    let (st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.snapshot.as_deref(), Some(&b"state after a,b"[..]));
    assert_eq!(rec.records, recs(&["c", "d"]));
    let report = st.recovery_report();
    assert_eq!(report.snapshot_lsn, Some(Lsn(3)));
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
        st.persist(&[i as u8; 100]).unwrap();
    }
    assert!(segments(&fs, &dir).len() > 5);
    st.save_snapshot(b"all 300").unwrap();
    st.sync().unwrap();
    // Only the active segment is left.
    assert_eq!(segments(&fs, &dir).len(), 1);
    st.persist(b"after").unwrap();
    drop(st);
    let (_, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.snapshot.as_deref(), Some(&b"all 300"[..]));
    assert_eq!(rec.records, recs(&["after"]));
}

#[test]
fn saving_a_snapshot_removes_the_log_segments_it_covers() {
    on_both_fs!(snapshot_truncates);
}

fn log_behind_snapshot<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    for r in ["a", "b", "c"] {
        st.persist(r.as_bytes()).unwrap();
    }
    st.sync().unwrap();
    st.save_snapshot(b"abc").unwrap();
    drop(st);
    // The records before the snapshot were lost (as unsynced records may be): only the
    // segment header is left.
    let seg = &segments(&fs, &dir)[0];
    fs.cut(seg, 16);

    let (mut st, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.snapshot.as_deref(), Some(&b"abc"[..]));
    assert!(rec.records.is_empty());
    assert!(st.recovery_report().wal_restarted_at_snapshot);
    // New records continue after the snapshot, not over it.
    assert_eq!(st.persist(b"d").unwrap(), Lsn(4));
    st.sync().unwrap();
    drop(st);
    let (_, rec) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    assert_eq!(rec.records, recs(&["d"]));
}

#[test]
fn a_log_that_ends_before_the_snapshot_restarts_at_the_snapshot() {
    on_both_fs!(log_behind_snapshot);
}

fn lost_snapshot<V: Disk>(fs: V, dir: PathBuf) {
    let o = opts(FsyncPolicy::Batch, SMALL_SEGMENT_BYTES);
    let (mut st, _) = NodeStorage::open(fs.clone(), &dir, &o).unwrap();
    for i in 0..100u32 {
        st.persist(&[i as u8; 100]).unwrap();
    }
    st.save_snapshot(b"covers 100").unwrap();
    st.persist(b"x").unwrap();
    st.sync().unwrap();
    drop(st);
    fs.remove_file(&dir.join(SNAPSHOT_FILE_NAME)).unwrap();
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
    st.save_snapshot(b"state").unwrap();
    drop(st);
    let path = dir.join(SNAPSHOT_FILE_NAME);
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
