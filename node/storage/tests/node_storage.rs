//! NodeStorage: recovery = latest snapshot + the records persisted after it.

mod common;

use std::path::PathBuf;

use common::{Disk, opts, segments};
use kvlab_storage::{FsyncPolicy, Lsn, NodeStorage, StorageError, Vfs};
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
    fs.cut(seg, kvlab_storage::SEGMENT_HEADER_BYTES as u64);

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
