//! Write-ahead log recovery, torn tails, corruption and segment management, each on
//! both the simulated disk and real files.

mod common;

use std::path::{Path, PathBuf};

use common::{Disk, opts, payload, segments};
use kvlab_storage::{
    Damage, DamageKind, FsyncPolicy, Lsn, MAX_RECORD_BYTES, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES, TRAILER_BYTES, Vfs, Wal, WalError, WalRecovery,
};

const BIG_SEGMENT_BYTES: u64 = 1 << 20;
const SMALL_SEGMENT_BYTES: u64 = 4096;
/// Records of this payload size have a fixed on-disk size, so offsets are computable.
const PAYLOAD_BYTES: usize = 100;
const RECORD_BYTES: u64 = (RECORD_HEADER_BYTES + PAYLOAD_BYTES) as u64;

fn open<V: Vfs>(fs: &V, dir: &Path, segment: u64) -> Result<(Wal<V>, WalRecovery), WalError> {
    Wal::open(fs.clone(), dir, &opts(FsyncPolicy::Batch, segment))
}

/// Writes `n` fixed-size records and syncs; returns the segment paths.
fn write_records<V: Vfs>(fs: &V, dir: &Path, n: u64, segment: u64) -> Vec<PathBuf> {
    let (mut wal, rec) = open(fs, dir, segment).expect("open");
    assert!(rec.records.is_empty());
    for i in 0..n {
        let lsn = wal.append(&payload(i, PAYLOAD_BYTES)).expect("append");
        assert_eq!(lsn, Lsn(i + 1));
    }
    wal.sync().expect("sync");
    segments(fs, dir)
}

fn offset_of_record(index_in_segment: u64) -> u64 {
    SEGMENT_HEADER_BYTES as u64 + index_in_segment * RECORD_BYTES
}

fn assert_records(rec: &WalRecovery, n: u64) {
    assert_eq!(rec.records.len() as u64, n);
    for (i, (lsn, p)) in rec.records.iter().enumerate() {
        assert_eq!(*lsn, Lsn(i as u64 + 1));
        assert_eq!(*p, payload(i as u64, PAYLOAD_BYTES), "record {i}");
    }
}

fn damage_err(r: Result<(Wal<impl Vfs>, WalRecovery), WalError>) -> Damage {
    match r {
        Err(WalError::Damaged(d)) => d,
        Err(e) => panic!("expected Damaged, got {e}"),
        Ok((_, rec)) => panic!(
            "expected Damaged, opened with {} records",
            rec.records.len()
        ),
    }
}

fn corrupt_err(r: Result<(Wal<impl Vfs>, WalRecovery), WalError>) -> (PathBuf, u64, String) {
    match damage_err(r) {
        Damage {
            file,
            offset,
            kind: DamageKind::Corrupt { reason },
        } => (file, offset, reason),
        d => panic!("expected Corrupt, got {d}"),
    }
}

fn clean_reopen<V: Disk>(fs: V, dir: PathBuf) {
    for policy in [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::Never] {
        let dir = dir.join(policy.to_string());
        let o = opts(policy, BIG_SEGMENT_BYTES);
        let (mut wal, _) = Wal::open(fs.clone(), &dir, &o).unwrap();
        for i in 0..50 {
            wal.append(&payload(i, PAYLOAD_BYTES)).unwrap();
        }
        wal.append(b"").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (wal, rec) = Wal::open(fs.clone(), &dir, &o).unwrap();
        assert_eq!(rec.records.len(), 51, "{policy}");
        assert_eq!(rec.records[50], (Lsn(51), Vec::new()));
        assert_eq!(rec.torn_tail, None);
        assert_eq!(wal.next_lsn(), Lsn(52));
    }
}

#[test]
fn a_new_log_reports_no_torn_tail_and_never_fsyncs_under_never() {
    let fs = kvlab_storage::SimFs::new();
    let (mut wal, rec) = Wal::open(
        fs.clone(),
        Path::new("/n"),
        &opts(FsyncPolicy::Never, BIG_SEGMENT_BYTES),
    )
    .unwrap();
    assert_eq!(rec, WalRecovery::default());
    // Creating the log made its first header and its state file durable; records are
    // never fsynced.
    let (file_syncs, dir_syncs) = (wal.stats().file_syncs, wal.stats().dir_syncs);
    let disk_syncs = fs.stats().file_syncs;
    for i in 0..100 {
        wal.append(&payload(i, PAYLOAD_BYTES)).unwrap();
    }
    wal.sync().unwrap();
    assert_eq!(
        (wal.stats().file_syncs, wal.stats().dir_syncs),
        (file_syncs, dir_syncs)
    );
    assert_eq!(fs.stats().file_syncs, disk_syncs);
    // A segment left empty by a crash right after its creation is not a torn tail.
    let fs = kvlab_storage::SimFs::new();
    let (wal, _) = open(&fs, Path::new("/n"), BIG_SEGMENT_BYTES).unwrap();
    drop(wal);
    let (_, rec) = open(&fs, Path::new("/n"), BIG_SEGMENT_BYTES).unwrap();
    assert_eq!(rec.torn_tail, None);
}

#[test]
fn clean_reopen_returns_every_record_in_order() {
    on_both_fs!(clean_reopen);
}

fn torn_partial_record<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 10, BIG_SEGMENT_BYTES);
    let seg = &segs[0];
    let full = fs.size(seg);
    fs.cut(seg, full - 5);
    let (mut wal, rec) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    assert_records(&rec, 9);
    let torn = rec.torn_tail.expect("a torn tail");
    assert_eq!(torn.file, *seg);
    assert_eq!(torn.offset, offset_of_record(9));
    assert_eq!(torn.dropped_bytes, RECORD_BYTES - 5);
    assert_eq!(fs.size(seg), offset_of_record(9), "the cut is applied");
    // The log continues right after the cut.
    assert_eq!(wal.append(&payload(9, PAYLOAD_BYTES)).unwrap(), Lsn(10));
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    assert_records(&rec, 10);
    assert_eq!(rec.torn_tail, None);
}

#[test]
fn torn_tail_is_truncated_on_recovery() {
    on_both_fs!(torn_partial_record);
}

fn torn_then_zeros<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 10, BIG_SEGMENT_BYTES);
    // A torn last record whose end reads as zeros, followed by a zero-filled extent.
    let seg = &segs[0];
    fs.poke(seg, offset_of_record(9) + 40, &[0u8; 76]);
    fs.append_raw(seg, &[0u8; 4096]);
    let (_, rec) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    assert_records(&rec, 9);
    let torn = rec.torn_tail.expect("a torn tail");
    assert_eq!(torn.offset, offset_of_record(9));
    assert_eq!(torn.dropped_bytes, RECORD_BYTES + 4096);
    assert!(torn.reason.contains("checksum"), "{}", torn.reason);
}

#[test]
fn torn_tail_followed_by_zeros_is_truncated() {
    on_both_fs!(torn_then_zeros);
}

fn garbage_tail<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 10, BIG_SEGMENT_BYTES);
    let garbage: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs.append_raw(&segs[0], &garbage);
    let (_, rec) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    assert_records(&rec, 10);
    assert_eq!(rec.torn_tail.unwrap().dropped_bytes, 3000);
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    on_both_fs!(garbage_tail);
}

fn flip_mid_last_segment<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 10, BIG_SEGMENT_BYTES);
    let at = offset_of_record(4) + RECORD_HEADER_BYTES as u64 + 7;
    fs.poke(&segs[0], at, &[0xFF]);
    let (file, offset, reason) = corrupt_err(open(&fs, &dir, BIG_SEGMENT_BYTES));
    assert_eq!(file, segs[0]);
    assert_eq!(offset, offset_of_record(4));
    assert!(reason.contains("valid record (lsn 6)"), "{reason}");
    // Refusing must not have modified the file.
    assert_eq!(fs.size(&segs[0]), offset_of_record(10));
}

#[test]
fn corruption_in_the_middle_is_refused_with_file_and_offset() {
    on_both_fs!(flip_mid_last_segment);
}

fn bad_length_mid_log<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 10, BIG_SEGMENT_BYTES);
    // A length field claiming more bytes than the file holds, with valid records after.
    fs.poke(&segs[0], offset_of_record(2), &u32::MAX.to_le_bytes());
    let (file, offset, reason) = corrupt_err(open(&fs, &dir, BIG_SEGMENT_BYTES));
    assert_eq!((file, offset), (segs[0].clone(), offset_of_record(2)));
    assert!(reason.contains("exceeds MAX_RECORD_BYTES"), "{reason}");
}

#[test]
fn corrupt_length_field_in_the_middle_is_refused() {
    on_both_fs!(bad_length_mid_log);
}

fn flip_in_last_record<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 10, BIG_SEGMENT_BYTES);
    fs.poke(&segs[0], offset_of_record(9) + 20, &[0x55]);
    let (_, rec) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    assert_records(&rec, 9);
    assert_eq!(rec.torn_tail.unwrap().offset, offset_of_record(9));
}

/// The documented limit of the rule: damage to the final record cannot be told from a
/// torn write, so it is cut like one.
#[test]
fn damaged_final_record_is_treated_as_a_torn_tail() {
    on_both_fs!(flip_in_last_record);
}

/// Records per small segment, which keeps room for its trailer: (4096 - 28 - 20) / 116 = 34.
const PER_SMALL_SEGMENT: u64 =
    (SMALL_SEGMENT_BYTES - (SEGMENT_HEADER_BYTES + TRAILER_BYTES) as u64) / RECORD_BYTES;

fn flip_in_earlier_segment<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 100, SMALL_SEGMENT_BYTES);
    assert_eq!(segs.len(), 3);
    // Damage the final record of the first segment: in an earlier segment even the
    // last record is not a torn tail.
    let at = offset_of_record(PER_SMALL_SEGMENT - 1) + 30;
    fs.poke(&segs[0], at, &[0x01]);
    let (file, offset, reason) = corrupt_err(open(&fs, &dir, SMALL_SEGMENT_BYTES));
    assert_eq!(file, segs[0]);
    assert_eq!(offset, offset_of_record(PER_SMALL_SEGMENT - 1));
    assert!(reason.contains("not the last"), "{reason}");
}

#[test]
fn bit_flip_in_an_earlier_segment_is_refused() {
    on_both_fs!(flip_in_earlier_segment);
}

fn cut_earlier_segment<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 100, SMALL_SEGMENT_BYTES);
    // Cut the trailer and 3 bytes of the last record.
    let len = fs.size(&segs[1]);
    fs.cut(&segs[1], len - TRAILER_BYTES as u64 - 3);
    let (file, offset, _) = corrupt_err(open(&fs, &dir, SMALL_SEGMENT_BYTES));
    assert_eq!(file, segs[1]);
    assert_eq!(offset, offset_of_record(PER_SMALL_SEGMENT - 1));
}

#[test]
fn truncated_earlier_segment_is_refused() {
    on_both_fs!(cut_earlier_segment);
}

fn missing_middle_segment<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 100, SMALL_SEGMENT_BYTES);
    fs.remove_file(&segs[1]).unwrap();
    let d = damage_err(open(&fs, &dir, SMALL_SEGMENT_BYTES));
    // The error names the missing file; the first segment's trailer names it too.
    assert_eq!((&d.file, d.offset), (&segs[1], 0));
    match &d.kind {
        DamageKind::MissingSegment { reason } => {
            assert!(reason.contains("trailer at byte"), "{reason}")
        }
        k => panic!("expected MissingSegment, got {k}"),
    }
}

#[test]
fn missing_segment_in_the_middle_is_refused() {
    on_both_fs!(missing_middle_segment);
}

fn header_damage_in_earlier_segment<V: Disk>(fs: V, dir: PathBuf) {
    let segs = write_records(&fs, &dir, 100, SMALL_SEGMENT_BYTES);
    fs.poke(&segs[0], 0, b"XX");
    let d = damage_err(open(&fs, &dir, SMALL_SEGMENT_BYTES));
    assert_eq!((&d.file, d.offset), (&segs[0], 0));
    match &d.kind {
        DamageKind::SegmentHeader { reason, .. } => assert!(reason.contains("magic"), "{reason}"),
        k => panic!("expected SegmentHeader, got {k}"),
    }
}

#[test]
fn damaged_segment_header_in_an_earlier_segment_is_refused() {
    on_both_fs!(header_damage_in_earlier_segment);
}

fn torn_header_of_new_segment<V: Disk>(fs: V, dir: PathBuf) {
    // 34 records fill the first segment; the 35th starts segment two.
    let segs = write_records(&fs, &dir, PER_SMALL_SEGMENT + 1, SMALL_SEGMENT_BYTES);
    assert_eq!(segs.len(), 2);
    // Power failed while segment two was being created: before its header was durable,
    // so before segment one got its trailer.
    let len = fs.size(&segs[0]);
    fs.cut(&segs[0], len - TRAILER_BYTES as u64);
    fs.cut(&segs[1], 7);
    let (mut wal, rec) = open(&fs, &dir, SMALL_SEGMENT_BYTES).unwrap();
    assert_records(&rec, PER_SMALL_SEGMENT);
    let torn = rec.torn_tail.unwrap();
    assert_eq!(
        (torn.file, torn.offset, torn.dropped_bytes),
        (segs[1].clone(), 0, 7)
    );
    assert_eq!(
        wal.append(&payload(PER_SMALL_SEGMENT, PAYLOAD_BYTES))
            .unwrap(),
        Lsn(PER_SMALL_SEGMENT + 1)
    );
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(&fs, &dir, SMALL_SEGMENT_BYTES).unwrap();
    assert_records(&rec, PER_SMALL_SEGMENT + 1);
}

#[test]
fn torn_header_of_the_last_segment_is_truncated_and_rewritten() {
    on_both_fs!(torn_header_of_new_segment);
}

fn too_large<V: Disk>(fs: V, dir: PathBuf) {
    let (mut wal, _) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    wal.append(b"before").unwrap();
    let err = wal.append(&vec![0u8; MAX_RECORD_BYTES + 1]).unwrap_err();
    assert!(
        matches!(err, WalError::RecordTooLarge { len_bytes, max_bytes }
            if len_bytes == MAX_RECORD_BYTES + 1 && max_bytes == MAX_RECORD_BYTES),
        "{err}"
    );
    // The log is unchanged and still usable; a record of exactly the limit fits.
    assert_eq!(wal.append(&vec![7u8; MAX_RECORD_BYTES]).unwrap(), Lsn(2));
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    assert_eq!(rec.records.len(), 2);
    assert_eq!(rec.records[1].1.len(), MAX_RECORD_BYTES);
}

#[test]
fn record_too_large_is_refused() {
    on_both_fs!(too_large);
}

fn rollover_and_prefix_truncation<V: Disk>(fs: V, dir: PathBuf) {
    let (mut wal, _) = open(&fs, &dir, SMALL_SEGMENT_BYTES).unwrap();
    for i in 0..200 {
        wal.append(&payload(i, PAYLOAD_BYTES)).unwrap();
    }
    wal.sync().unwrap();
    let segs = segments(&fs, &dir);
    // 200 records at 34 per segment.
    assert_eq!(segs.len(), 6);
    assert_eq!(wal.segment_count(), 6);
    for s in &segs {
        assert!(fs.size(s) <= SMALL_SEGMENT_BYTES, "{} too big", s.display());
    }
    assert!(segs[1].ends_with(format!("wal-{:020}.log", PER_SMALL_SEGMENT + 1)));

    // Nothing below lsn 35 can go without also dropping lsn 35..: keep segment 0.
    assert_eq!(wal.truncate_prefix(Lsn(PER_SMALL_SEGMENT)).unwrap(), 0);
    // Everything below 2 * 34 + 1 = 69 is in the first two segments.
    assert_eq!(
        wal.truncate_prefix(Lsn(2 * PER_SMALL_SEGMENT + 1)).unwrap(),
        2
    );
    assert_eq!(wal.first_lsn(), Lsn(2 * PER_SMALL_SEGMENT + 1));
    // The active segment is never removed, even when all of it is below `upto`.
    assert_eq!(wal.truncate_prefix(Lsn(10_000)).unwrap(), 3);
    assert_eq!(wal.segment_count(), 1);
    wal.sync().unwrap();
    drop(wal);

    let (wal, rec) = open(&fs, &dir, SMALL_SEGMENT_BYTES).unwrap();
    let first = 5 * PER_SMALL_SEGMENT + 1;
    assert_eq!(rec.records.first().unwrap().0, Lsn(first));
    assert_eq!(rec.records.len() as u64, 200 - first + 1);
    assert_eq!(wal.next_lsn(), Lsn(201));
}

#[test]
fn segments_roll_over_and_prefix_truncation_removes_whole_segments() {
    on_both_fs!(rollover_and_prefix_truncation);
}

fn record_larger_than_a_segment<V: Disk>(fs: V, dir: PathBuf) {
    let (mut wal, _) = open(&fs, &dir, SMALL_SEGMENT_BYTES).unwrap();
    wal.append(b"small").unwrap();
    wal.append(&vec![1u8; 3 * SMALL_SEGMENT_BYTES as usize])
        .unwrap();
    wal.append(b"after").unwrap();
    wal.sync().unwrap();
    assert_eq!(segments(&fs, &dir).len(), 3);
    drop(wal);
    let (_, rec) = open(&fs, &dir, SMALL_SEGMENT_BYTES).unwrap();
    assert_eq!(rec.records.len(), 3);
    assert_eq!(rec.records[2].1, b"after");
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    on_both_fs!(record_larger_than_a_segment);
}

fn foreign_files_ignored<V: Disk>(fs: V, dir: PathBuf) {
    write_records(&fs, &dir, 3, BIG_SEGMENT_BYTES);
    fs.put(&dir.join("notes.txt"), b"hello");
    fs.put(&dir.join("wal-12.log"), b"not ours: wrong digit count");
    let (_, rec) = open(&fs, &dir, BIG_SEGMENT_BYTES).unwrap();
    assert_records(&rec, 3);
}

#[test]
fn files_that_are_not_segments_are_ignored() {
    on_both_fs!(foreign_files_ignored);
}

#[test]
fn a_failed_write_poisons_the_log_until_reopened() {
    let fs = kvlab_storage::SimFs::new();
    let dir = Path::new("/node");
    let (mut wal, _) = open(&fs, dir, BIG_SEGMENT_BYTES).unwrap();
    wal.append(b"a").unwrap();
    wal.sync().unwrap();
    // Power loss under a live log: its file handle is dead, so the next sync fails.
    fs.crash(
        &mut kvlab_types::seeded_rng(1),
        &kvlab_storage::CrashOptions::default(),
    );
    wal.append(b"b").unwrap();
    assert!(matches!(wal.sync(), Err(WalError::Io { .. })));
    assert!(matches!(wal.append(b"c"), Err(WalError::Poisoned { .. })));
    drop(wal);
    let (_, rec) = open(&fs, dir, BIG_SEGMENT_BYTES).unwrap();
    assert_eq!(rec.records, vec![(Lsn(1), b"a".to_vec())]);
}

#[test]
fn invalid_options_are_refused_naming_the_field() {
    let fs = kvlab_storage::SimFs::new();
    let err = Wal::open(fs, Path::new("/n"), &opts(FsyncPolicy::Batch, 10)).unwrap_err();
    assert!(
        matches!(&err, WalError::InvalidOptions(e) if e.field == "segment_size_bytes"),
        "{err}"
    );
}
