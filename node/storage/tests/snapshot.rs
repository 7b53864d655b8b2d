//! Snapshot save/load, atomic replacement under crashes, leftover temp files and damage.

mod common;

use std::path::PathBuf;

use common::{Disk, FailAfter, for_seeds};
use kvlab_storage::{
    CrashOptions, SNAPSHOT_FILE_NAME, SNAPSHOT_TEMP_FILE_NAME, SimFs, SnapshotStore, StorageError,
};
use kvlab_types::seeded_rng;

fn save_and_load<V: Disk>(fs: V, dir: PathBuf) {
    let mut store = SnapshotStore::open(fs.clone(), &dir).unwrap();
    assert_eq!(store.load().unwrap(), None);
    store.save(b"first").unwrap();
    store.save(b"second, longer").unwrap();
    assert_eq!(
        store.load().unwrap().as_deref(),
        Some(&b"second, longer"[..])
    );
    store.save(b"").unwrap();
    let store = SnapshotStore::open(fs.clone(), &dir).unwrap();
    assert_eq!(store.load().unwrap().as_deref(), Some(&b""[..]));
    assert!(!fs.exists(&dir.join(SNAPSHOT_TEMP_FILE_NAME)).unwrap());
}

#[test]
fn saved_snapshot_is_loaded_back_after_reopen() {
    on_both_fs!(save_and_load);
}

fn leftover_temp<V: Disk>(fs: V, dir: PathBuf) {
    let mut store = SnapshotStore::open(fs.clone(), &dir).unwrap();
    store.save(b"good").unwrap();
    // A crash mid-save left a half-written temp file.
    let tmp = dir.join(SNAPSHOT_TEMP_FILE_NAME);
    fs.put(&tmp, b"KVLSNAP1\x40\x00\x00half");
    assert_eq!(
        store.load().unwrap().as_deref(),
        Some(&b"good"[..]),
        "load ignores it"
    );
    let store = SnapshotStore::open(fs.clone(), &dir).unwrap();
    assert!(store.removed_leftover_temp());
    assert!(!fs.exists(&tmp).unwrap(), "open removes it");
    assert_eq!(store.load().unwrap().as_deref(), Some(&b"good"[..]));
}

#[test]
fn leftover_temp_file_is_ignored_and_removed() {
    on_both_fs!(leftover_temp);
}

fn corrupt_snapshot<V: Disk>(fs: V, dir: PathBuf) {
    let mut store = SnapshotStore::open(fs.clone(), &dir).unwrap();
    store.save(b"some state").unwrap();
    let path = dir.join(SNAPSHOT_FILE_NAME);
    for (offset, what) in [(0u64, "magic"), (25, "checksum"), (9, "header says")] {
        fs.poke(&path, offset, &[0xAA]);
        match store.load() {
            Err(StorageError::CorruptSnapshot { file, reason }) => {
                assert_eq!(file, path);
                assert!(reason.contains(what), "offset {offset}: {reason}");
            }
            other => panic!("offset {offset}: expected CorruptSnapshot, got {other:?}"),
        }
        store.save(b"some state").unwrap();
    }
    fs.cut(&path, 10);
    assert!(matches!(
        store.load(),
        Err(StorageError::CorruptSnapshot { .. })
    ));
}

#[test]
fn corrupt_snapshot_is_refused_naming_the_file() {
    on_both_fs!(corrupt_snapshot);
}

/// Crashes a save at each of its steps (create, write, write, fsync, rename, dir fsync)
/// and after it, under many crash outcomes: the snapshot is always exactly the old or
/// the new one, and the new one whenever `save` returned.
#[test]
fn snapshot_replacement_is_atomic_under_a_crash_at_every_step() {
    let old: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let new: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    for_seeds("snapshot", 0..300, |seed| {
        let step = (seed % 8) as i64;
        let fs = SimFs::new();
        let dir = PathBuf::from("/node");
        SnapshotStore::open(fs.clone(), &dir)
            .and_then(|mut s| s.save(&old))
            .map_err(|e| e.to_string())?;
        let faulty = FailAfter::new(fs.clone(), step);
        let saved = SnapshotStore::open(faulty.clone(), &dir)
            .and_then(|mut s| s.save(&new))
            .is_ok();
        if saved == faulty.tripped() {
            return Err(format!(
                "save returned ok={saved} but tripped={}",
                faulty.tripped()
            ));
        }
        fs.crash(&mut seeded_rng(seed), &CrashOptions::default());
        let store = SnapshotStore::open(fs.clone(), &dir).map_err(|e| e.to_string())?;
        let got = store
            .load()
            .map_err(|e| format!("step {step}: {e}"))?
            .ok_or(format!("step {step}: snapshot vanished"))?;
        if saved && got != new {
            return Err(format!(
                "step {step}: save returned but the old snapshot came back"
            ));
        }
        if got != old && got != new {
            return Err(format!(
                "step {step}: a mix of old and new ({} bytes)",
                got.len()
            ));
        }
        Ok(())
    });
}
