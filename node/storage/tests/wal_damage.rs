//! Damage that loses synced, acknowledged records is refused with the file and offset,
//! never cut as if it were a torn tail; `recovery = "truncate-damaged"` cuts it and
//! reports the loss; a genuine torn tail after a crash still recovers by default.
//!
//! Every scenario writes 200 synced records, stops the log (a clean close, or a crash:
//! dropped without closing, and on the simulated disk a power failure), damages the
//! files as a disk fault or an operator would, then opens it strictly and with
//! `truncate-damaged`. Each runs on the simulated disk and on real files.

mod common;

use std::path::{Path, PathBuf};

use common::{Disk, opts, payload, segments};
use kvlab_storage::{
    DAMAGED_SEGMENT_SUFFIX, Damage, DamageKind, DamageTruncated, FsyncPolicy, Lsn,
    RECORD_HEADER_BYTES, RecoveryMode, SEGMENT_HEADER_BYTES, StorageOptions, TRAILER_BYTES,
    WAL_STATE_FILE_NAME, Wal, WalError, WalRecovery,
};

const RECORDS: u64 = 200;
const BIG_SEGMENT_BYTES: u64 = 1 << 20;
const SMALL_SEGMENT_BYTES: u64 = 4096;
const PAYLOAD_BYTES: usize = 100;
const RECORD_BYTES: u64 = (RECORD_HEADER_BYTES + PAYLOAD_BYTES) as u64;
/// Records per small segment: (4096 - 28 - 20) / 116 = 34.
const PER_SMALL_SEGMENT: u64 =
    (SMALL_SEGMENT_BYTES - (SEGMENT_HEADER_BYTES + TRAILER_BYTES) as u64) / RECORD_BYTES;

/// How the log was stopped before the damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// `Wal::close`: the end is recorded.
    Clean,
    /// Dropped without closing, then power loss.
    Crash,
}

fn strict(segment: u64) -> StorageOptions {
    opts(FsyncPolicy::Always, segment)
}

fn truncating(o: &StorageOptions) -> StorageOptions {
    StorageOptions {
        recovery: RecoveryMode::TruncateDamaged,
        ..o.clone()
    }
}

fn offset_of_record(index_in_segment: u64) -> u64 {
    SEGMENT_HEADER_BYTES as u64 + index_in_segment * RECORD_BYTES
}

/// Appends `n` fixed-size records (synced: `o` is `always` or the log is synced), stops
/// the log as `stop` says, and returns the segment paths.
fn write_and_stop<V: Disk>(
    fs: &V,
    dir: &Path,
    n: u64,
    o: &StorageOptions,
    stop: Stop,
) -> Vec<PathBuf> {
    let (mut wal, rec) = Wal::open(fs.clone(), dir, o).expect("open");
    assert!(rec.records.is_empty());
    for i in 0..n {
        assert_eq!(wal.append(&payload(i, PAYLOAD_BYTES)).unwrap(), Lsn(i + 1));
    }
    wal.sync().unwrap();
    match stop {
        Stop::Clean => wal.close().unwrap(),
        Stop::Crash => {
            drop(wal);
            fs.power_loss();
        }
    }
    segments(fs, dir)
}

fn assert_records(rec: &WalRecovery, n: u64) {
    assert_eq!(rec.records.len() as u64, n);
    for (i, (lsn, p)) in rec.records.iter().enumerate() {
        assert_eq!(*lsn, Lsn(i as u64 + 1));
        assert_eq!(*p, payload(i as u64, PAYLOAD_BYTES), "record {i}");
    }
}

/// Opens strictly, expects a refusal, and checks that refusing changed no file.
fn refused<V: Disk>(fs: &V, dir: &Path, o: &StorageOptions) -> Damage {
    let before: Vec<(String, Vec<u8>)> = fs
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|n| {
            let b = fs.read(&dir.join(&n)).unwrap();
            (n, b)
        })
        .collect();
    let d = match Wal::open(fs.clone(), dir, o) {
        Err(WalError::Damaged(d)) => d,
        Err(e) => panic!("expected WalError::Damaged, got {e}"),
        Ok((_, rec)) => panic!(
            "expected a refusal, but the log opened with {} records (torn tail {:?})",
            rec.records.len(),
            rec.torn_tail
        ),
    };
    let after: Vec<(String, Vec<u8>)> = fs
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|n| {
            let b = fs.read(&dir.join(&n)).unwrap();
            (n, b)
        })
        .collect();
    assert!(before == after, "refusing must not modify any file");
    // The message an operator sees names the file, the offset and the way out.
    let msg = WalError::Damaged(d.clone()).to_string();
    assert!(msg.contains(&d.file.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("at byte {}", d.offset)), "{msg}");
    assert!(msg.contains("truncate-damaged"), "{msg}");
    d
}

/// Opens with `truncate-damaged`, expects exactly one cut of `damage`, and checks that
/// the log then opens strictly with the same records and carries on.
fn truncated<V: Disk>(
    fs: &V,
    dir: &Path,
    o: &StorageOptions,
    damage: &Damage,
    records_left: u64,
) -> DamageTruncated {
    let (mut wal, rec) = Wal::open(fs.clone(), dir, &truncating(o)).expect("truncate-damaged");
    assert_records(&rec, records_left);
    assert_eq!(rec.damage_truncated.len(), 1, "{:?}", rec.damage_truncated);
    let cut = rec.damage_truncated[0].clone();
    assert_eq!(
        &cut.damage, damage,
        "the cut is where strict recovery refused"
    );
    assert_eq!(wal.next_lsn(), Lsn(records_left + 1));
    // The log carries on after the cut, and the cut was durable.
    wal.append(&payload(records_left, PAYLOAD_BYTES)).unwrap();
    wal.close().unwrap();
    drop(wal);
    fs.power_loss();
    let (_, rec) = Wal::open(fs.clone(), dir, o).expect("strict reopen after the cut");
    assert_records(&rec, records_left + 1);
    assert!(rec.clean_shutdown);
    assert!(rec.damage_truncated.is_empty());
    cut
}

fn only_segment_zeroed<V: Disk>(fs: V, dir: PathBuf) {
    for stop in [Stop::Clean, Stop::Crash] {
        let dir = dir.join(format!("{stop:?}"));
        let o = strict(BIG_SEGMENT_BYTES);
        let segs = write_and_stop(&fs, &dir, RECORDS, &o, stop);
        assert_eq!(segs.len(), 1);
        let len = fs.size(&segs[0]);
        fs.poke(&segs[0], 0, &vec![0u8; len as usize]);

        let d = refused(&fs, &dir, &o);
        assert_eq!((&d.file, d.offset), (&segs[0], 0), "{stop:?}");
        match &d.kind {
            DamageKind::SegmentHeader {
                file_len_bytes,
                reason,
            } => {
                assert_eq!(*file_len_bytes, len);
                assert!(reason.contains("magic"), "{reason}");
            }
            k => panic!("{stop:?}: expected SegmentHeader, got {k}"),
        }

        let cut = truncated(&fs, &dir, &o, &d, 0);
        assert_eq!(cut.bytes_dropped, len);
        let known = (stop == Stop::Clean).then_some(RECORDS);
        assert_eq!(cut.records_dropped, known, "{stop:?}");
    }
}

/// Issue case (a): the only segment zeroed used to open as an empty log.
#[test]
fn the_only_segment_zeroed_is_refused_and_truncate_damaged_reports_200_records() {
    on_both_fs!(only_segment_zeroed);
}

fn truncated_at_half<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(BIG_SEGMENT_BYTES);
    let segs = write_and_stop(&fs, &dir, RECORDS, &o, Stop::Clean);
    let len = fs.size(&segs[0]);
    assert_eq!(len, offset_of_record(RECORDS));
    fs.cut(&segs[0], len / 2);
    // 99 whole records fit in the first half; the 100th is cut short.
    let kept = (len / 2 - SEGMENT_HEADER_BYTES as u64) / RECORD_BYTES;
    assert_eq!(kept, 99);

    let d = refused(&fs, &dir, &o);
    assert_eq!((&d.file, d.offset), (&segs[0], offset_of_record(kept)));
    match &d.kind {
        DamageKind::CleanShutdownMismatch {
            expected_next_lsn,
            found_next_lsn,
            reason,
        } => {
            assert_eq!(*expected_next_lsn, Lsn(RECORDS + 1));
            assert_eq!(*found_next_lsn, Lsn(kept + 1));
            assert!(
                reason.contains(&format!("closed at {len} bytes")),
                "{reason}"
            );
        }
        k => panic!("expected CleanShutdownMismatch, got {k}"),
    }

    let cut = truncated(&fs, &dir, &o, &d, kept);
    // Counted to the end the clean close recorded, not just to the end of what is left.
    assert_eq!(cut.bytes_dropped, len - offset_of_record(kept));
    assert_eq!(cut.records_dropped, Some(RECORDS - kept));
}

/// Issue case (b): a segment truncated at half after a clean stop used to lose 98
/// records silently.
#[test]
fn a_segment_truncated_at_half_after_a_clean_stop_is_refused() {
    on_both_fs!(truncated_at_half);
}

fn second_half_zeroed<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(BIG_SEGMENT_BYTES);
    let segs = write_and_stop(&fs, &dir, RECORDS, &o, Stop::Clean);
    let len = fs.size(&segs[0]);
    fs.poke(&segs[0], len / 2, &vec![0u8; (len - len / 2) as usize]);
    let kept = (len / 2 - SEGMENT_HEADER_BYTES as u64) / RECORD_BYTES;

    let d = refused(&fs, &dir, &o);
    assert_eq!((&d.file, d.offset), (&segs[0], offset_of_record(kept)));
    match &d.kind {
        DamageKind::CleanShutdownMismatch {
            expected_next_lsn,
            found_next_lsn,
            reason,
        } => {
            assert_eq!(
                (*expected_next_lsn, *found_next_lsn),
                (Lsn(RECORDS + 1), Lsn(kept + 1))
            );
            assert!(reason.contains("unreadable from byte"), "{reason}");
        }
        k => panic!("expected CleanShutdownMismatch, got {k}"),
    }

    let cut = truncated(&fs, &dir, &o, &d, kept);
    assert_eq!(cut.bytes_dropped, len - offset_of_record(kept));
    assert_eq!(cut.records_dropped, Some(RECORDS - kept));
}

/// Issue case (c): the second half zeroed after a clean stop.
#[test]
fn a_segment_whose_second_half_is_zeroed_after_a_clean_stop_is_refused() {
    on_both_fs!(second_half_zeroed);
}

fn newest_segment_deleted<V: Disk>(fs: V, dir: PathBuf) {
    for stop in [Stop::Clean, Stop::Crash] {
        let dir = dir.join(format!("{stop:?}"));
        let o = strict(SMALL_SEGMENT_BYTES);
        let segs = write_and_stop(&fs, &dir, RECORDS, &o, stop);
        assert_eq!(segs.len(), 6);
        let newest = segs.last().unwrap();
        fs.remove_file(newest).unwrap();
        fs.sync_dir(&dir).unwrap();
        let kept = 5 * PER_SMALL_SEGMENT;

        let d = refused(&fs, &dir, &o);
        assert_eq!((&d.file, d.offset), (newest, 0), "{stop:?}");
        match &d.kind {
            DamageKind::MissingSegment { reason } => {
                let trailer_at = offset_of_record(PER_SMALL_SEGMENT);
                assert!(
                    reason.contains(&format!("trailer at byte {trailer_at}")),
                    "{reason}"
                );
                assert!(reason.contains(&segs[4].display().to_string()), "{reason}");
            }
            k => panic!("{stop:?}: expected MissingSegment, got {k}"),
        }

        let cut = truncated(&fs, &dir, &o, &d, kept);
        assert_eq!(
            cut.bytes_dropped, TRAILER_BYTES as u64,
            "the trailer is cut"
        );
        let known = (stop == Stop::Clean).then_some(RECORDS - kept);
        assert_eq!(cut.records_dropped, known, "{stop:?}");
    }
}

/// Issue case (d): deleting the newest segment used to lose its records with
/// `torn_tail = None`.
#[test]
fn a_deleted_newest_segment_is_refused_naming_it() {
    on_both_fs!(newest_segment_deleted);
}

fn cut_beyond_bound<V: Disk>(fs: V, dir: PathBuf) {
    let o = StorageOptions {
        max_unsynced_bytes: 4096,
        ..strict(BIG_SEGMENT_BYTES)
    };
    let segs = write_and_stop(&fs, &dir, RECORDS, &o, Stop::Crash);
    let len = fs.size(&segs[0]);
    // 8000 bytes of zeros at the end: about 69 records, twice what a crash could tear.
    let from = len - 8000;
    fs.poke(&segs[0], from, &[0u8; 8000]);
    let kept = (from - SEGMENT_HEADER_BYTES as u64) / RECORD_BYTES;

    let d = refused(&fs, &dir, &o);
    assert_eq!((&d.file, d.offset), (&segs[0], offset_of_record(kept)));
    match &d.kind {
        DamageKind::TailBeyondUnsyncedBound {
            dropped_bytes,
            max_unsynced_bytes,
            reason,
        } => {
            assert_eq!(*dropped_bytes, len - offset_of_record(kept));
            assert_eq!(*max_unsynced_bytes, 4096);
            assert!(reason.contains("checksum"), "{reason}");
        }
        k => panic!("expected TailBeyondUnsyncedBound, got {k}"),
    }

    let cut = truncated(&fs, &dir, &o, &d, kept);
    assert_eq!(cut.bytes_dropped, len - offset_of_record(kept));
    assert_eq!(cut.records_dropped, None, "no clean close recorded the end");
}

/// Issue case (e): after a crash, a cut longer than `max_unsynced_bytes` is not a torn
/// tail.
#[test]
fn a_cut_longer_than_the_unsynced_bound_after_a_crash_is_refused() {
    on_both_fs!(cut_beyond_bound);
}

/// A real crash on the simulated disk: synced records, then unsynced ones large enough
/// to reach the OS in several writes (the write buffer overflows), then power loss with
/// torn writes. The default (strict) recovery opens every time, keeps every synced
/// record, and some seeds need a torn tail cut.
#[test]
fn a_genuine_torn_tail_after_a_crash_still_recovers_by_default() {
    const BIG_PAYLOAD_BYTES: usize = 60_000;
    let mut torn = 0;
    for seed in 0..40 {
        let fs = kvlab_storage::SimFs::new();
        let dir = Path::new("/node");
        let o = opts(FsyncPolicy::Batch, 16 << 20);
        let (mut wal, _) = Wal::open(fs.clone(), dir, &o).unwrap();
        for i in 0..RECORDS {
            wal.append(&payload(i, PAYLOAD_BYTES)).unwrap();
        }
        wal.sync().unwrap();
        for i in RECORDS..RECORDS + 12 {
            wal.append(&payload(i, BIG_PAYLOAD_BYTES)).unwrap();
        }
        // Whatever is still buffered dies with the process.
        drop(wal);
        fs.crash(
            &mut kvlab_types::seeded_rng(seed),
            &kvlab_storage::CrashOptions {
                tear_probability: 1.0,
            },
        );
        let (_, rec) = Wal::open(fs.clone(), dir, &o)
            .unwrap_or_else(|e| panic!("seed {seed}: a crash must recover by default: {e}"));
        assert!(rec.records.len() as u64 >= RECORDS, "seed {seed}");
        for (i, (lsn, p)) in rec.records.iter().enumerate() {
            let len = if (i as u64) < RECORDS {
                PAYLOAD_BYTES
            } else {
                BIG_PAYLOAD_BYTES
            };
            assert_eq!(*lsn, Lsn(i as u64 + 1));
            assert_eq!(*p, payload(i as u64, len), "seed {seed}");
        }
        assert!(rec.damage_truncated.is_empty());
        torn += usize::from(rec.torn_tail.is_some());
    }
    assert!(torn > 10, "only {torn} of 40 seeds tore a write");
}

fn torn_write_on_real_files<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(BIG_SEGMENT_BYTES);
    let segs = write_and_stop(&fs, &dir, RECORDS, &o, Stop::Crash);
    // What a torn unsynced write looks like: the start of a record, then zeros.
    let mut next = Vec::new();
    next.extend_from_slice(&payload(RECORDS, PAYLOAD_BYTES)[..40]);
    next.extend_from_slice(&[0u8; 1000]);
    fs.append_raw(&segs[0], &next);
    let (_, rec) = Wal::open(fs.clone(), &dir, &o).unwrap();
    assert_records(&rec, RECORDS);
    let torn = rec.torn_tail.expect("a torn tail");
    assert_eq!(
        (torn.offset, torn.dropped_bytes),
        (offset_of_record(RECORDS), 1040)
    );
    assert!(rec.damage_truncated.is_empty());
}

#[test]
fn a_torn_write_after_a_crash_is_cut_by_default() {
    on_both_fs!(torn_write_on_real_files);
}

fn oversized_record_torn<V: Disk>(fs: V, dir: PathBuf) {
    let o = StorageOptions {
        max_unsynced_bytes: 4096,
        ..opts(FsyncPolicy::Batch, BIG_SEGMENT_BYTES)
    };
    let (mut wal, _) = Wal::open(fs.clone(), &dir, &o).unwrap();
    for i in 0..10 {
        wal.append(&payload(i, PAYLOAD_BYTES)).unwrap();
    }
    wal.sync().unwrap();
    // A record larger than the bound, alone in its unsynced window.
    let big = payload(10, 20_000);
    wal.append(&big).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let seg = &segments(&fs, &dir)[0];
    let at = offset_of_record(10);
    // Torn: its second half is zeros.
    fs.poke(seg, at + 10_000, &[0u8; 10_016]);
    let (_, rec) = Wal::open(fs.clone(), &dir, &o).expect("one oversized record may be torn");
    assert_eq!(rec.records.len(), 10);
    assert_eq!(rec.torn_tail.unwrap().dropped_bytes, 20_016);

    // Its header garbled too: the length is unknown, so the cut is refused (the
    // documented limit; truncate-damaged recovers).
    let (mut wal, _) = Wal::open(fs.clone(), &dir, &o).unwrap();
    wal.append(&big).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.poke(seg, at, &[0u8; 20_016]);
    let d = refused(&fs, &dir, &o);
    assert!(
        matches!(
            d.kind,
            DamageKind::TailBeyondUnsyncedBound {
                dropped_bytes: 20_016,
                ..
            }
        ),
        "{d}"
    );
}

#[test]
fn a_torn_record_larger_than_the_bound_is_cut_when_its_header_announces_it() {
    on_both_fs!(oversized_record_torn);
}

/// The documented limit: after a crash, a shortened file leaves no trace, so a
/// truncation looks like a torn tail. Only a clean close records the end.
fn truncation_after_crash<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(BIG_SEGMENT_BYTES);
    let segs = write_and_stop(&fs, &dir, RECORDS, &o, Stop::Crash);
    let len = fs.size(&segs[0]);
    fs.cut(&segs[0], len / 2);
    let (_, rec) = Wal::open(fs.clone(), &dir, &o).unwrap();
    assert_records(&rec, 99);
    assert!(rec.torn_tail.is_some());
}

#[test]
fn a_truncation_after_a_crash_is_indistinguishable_from_a_torn_tail() {
    on_both_fs!(truncation_after_crash);
}

fn oldest_segment_deleted<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(SMALL_SEGMENT_BYTES);
    let (mut wal, _) = Wal::open(fs.clone(), &dir, &o).unwrap();
    for i in 0..RECORDS {
        wal.append(&payload(i, PAYLOAD_BYTES)).unwrap();
    }
    // A snapshot covers the first two segments: the log now starts at lsn 69.
    assert_eq!(
        wal.truncate_prefix(Lsn(2 * PER_SMALL_SEGMENT + 1)).unwrap(),
        2
    );
    wal.sync().unwrap();
    drop(wal);
    let segs = segments(&fs, &dir);
    assert_eq!(segs.len(), 4);
    fs.remove_file(&segs[0]).unwrap();

    let d = refused(&fs, &dir, &o);
    assert_eq!((&d.file, d.offset), (&segs[0], 0));
    match &d.kind {
        DamageKind::MissingSegment { reason } => assert!(
            reason.contains(&format!(
                "every record from lsn {} on",
                2 * PER_SMALL_SEGMENT + 1
            )),
            "{reason}"
        ),
        k => panic!("expected MissingSegment, got {k}"),
    }
    // Point in time: the log cannot start anywhere later, so nothing of it is kept.
    let (wal, rec) = Wal::open(fs.clone(), &dir, &truncating(&o)).unwrap();
    assert!(rec.records.is_empty());
    assert_eq!(wal.next_lsn(), Lsn(2 * PER_SMALL_SEGMENT + 1));
    assert_eq!(rec.damage_truncated[0].segments_set_aside.len(), 3);
    drop(wal);
    // Every segment was deleted: refused too.
    for s in segments(&fs, &dir) {
        fs.remove_file(&s).unwrap();
    }
    let d = refused(&fs, &dir, &o);
    assert!(matches!(d.kind, DamageKind::MissingSegment { .. }), "{d}");
}

#[test]
fn a_deleted_oldest_segment_is_refused_as_a_missing_start() {
    on_both_fs!(oldest_segment_deleted);
}

fn mid_log_corruption_truncated<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(SMALL_SEGMENT_BYTES);
    let segs = write_and_stop(&fs, &dir, RECORDS, &o, Stop::Crash);
    fs.poke(&segs[1], offset_of_record(3) + 20, &[0x40]);
    let d = refused(&fs, &dir, &o);
    assert_eq!((&d.file, d.offset), (&segs[1], offset_of_record(3)));
    assert!(matches!(d.kind, DamageKind::Corrupt { .. }));
    let cut = truncated(&fs, &dir, &o, &d, PER_SMALL_SEGMENT + 3);
    // The rest of segment two and the four later segments, set aside for inspection.
    assert_eq!(cut.segments_set_aside.len(), 4);
    for s in &cut.segments_set_aside {
        assert!(s.to_string_lossy().ends_with(DAMAGED_SEGMENT_SUFFIX));
        assert!(fs.exists(s).unwrap());
    }
}

#[test]
fn truncate_damaged_cuts_mid_log_corruption_and_sets_later_segments_aside() {
    on_both_fs!(mid_log_corruption_truncated);
}

fn state_file_damage<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(BIG_SEGMENT_BYTES);
    write_and_stop(&fs, &dir, 10, &o, Stop::Clean);
    let state = dir.join(WAL_STATE_FILE_NAME);
    fs.poke(&state, 9, &[0x01]);
    let d = refused(&fs, &dir, &o);
    assert_eq!((&d.file, d.offset), (&state, 0));
    assert!(matches!(d.kind, DamageKind::State { .. }), "{d}");
    fs.remove_file(&state).unwrap();
    let d = refused(&fs, &dir, &o);
    match &d.kind {
        DamageKind::State { reason } => assert!(reason.contains("missing"), "{reason}"),
        k => panic!("expected State, got {k}"),
    }
    // truncate-damaged rebuilds it from the log (nothing else is lost).
    let (_, rec) = Wal::open(fs.clone(), &dir, &truncating(&o)).unwrap();
    assert_records(&rec, 10);
    assert_eq!(rec.damage_truncated.len(), 1);
    assert_eq!(rec.damage_truncated[0].bytes_dropped, 0);
    let (_, rec) = Wal::open(fs.clone(), &dir, &o).unwrap();
    assert_records(&rec, 10);
}

#[test]
fn a_damaged_or_missing_state_file_is_refused() {
    on_both_fs!(state_file_damage);
}

fn clean_close<V: Disk>(fs: V, dir: PathBuf) {
    let o = strict(SMALL_SEGMENT_BYTES);
    write_and_stop(&fs, &dir, RECORDS, &o, Stop::Clean);
    let (mut wal, rec) = Wal::open(fs.clone(), &dir, &o).unwrap();
    assert_records(&rec, RECORDS);
    assert!(rec.clean_shutdown);
    assert_eq!(rec.torn_tail, None);
    // Reopening cleared the record: a crash now is judged as a crash.
    wal.append(&payload(RECORDS, PAYLOAD_BYTES)).unwrap();
    drop(wal);
    fs.power_loss();
    let (mut wal, rec) = Wal::open(fs.clone(), &dir, &o).unwrap();
    assert!(!rec.clean_shutdown);
    assert_records(&rec, RECORDS + 1);
    wal.close().unwrap();
    assert!(matches!(wal.append(b"late"), Err(WalError::Closed { .. })));
    assert!(matches!(wal.sync(), Err(WalError::Closed { .. })));
}

#[test]
fn a_clean_close_is_verified_on_open_and_cleared() {
    on_both_fs!(clean_close);
}

/// Group commit that batches more than `max_unsynced_bytes` between syncs: the log
/// syncs by itself, so a power failure loses at most the bound.
#[test]
fn the_log_syncs_by_itself_before_exceeding_max_unsynced_bytes() {
    for seed in 0..20 {
        let fs = kvlab_storage::SimFs::new();
        let dir = Path::new("/node");
        let o = StorageOptions {
            max_unsynced_bytes: 4096,
            ..opts(FsyncPolicy::Batch, BIG_SEGMENT_BYTES)
        };
        let (mut wal, _) = Wal::open(fs.clone(), dir, &o).unwrap();
        for i in 0..RECORDS {
            wal.append(&payload(i, PAYLOAD_BYTES)).unwrap();
        }
        // 4096 / 116 = 35 records per window.
        assert_eq!(wal.stats().bound_syncs, RECORDS / 35);
        let buffered = RECORDS - (RECORDS / 35) * 35;
        wal.sync().ok();
        drop(wal);
        fs.crash(
            &mut kvlab_types::seeded_rng(seed),
            &kvlab_storage::CrashOptions::default(),
        );
        let (_, rec) = Wal::open(fs.clone(), dir, &o).unwrap();
        assert!(
            rec.records.len() as u64 >= RECORDS - buffered,
            "seed {seed}"
        );
    }
}

#[test]
fn recovery_options_parse_and_validate() {
    let o: StorageOptions = toml::from_str(
        "fsync = \"always\"\nmax_unsynced_bytes = 65536\nrecovery = \"truncate-damaged\"",
    )
    .unwrap();
    assert_eq!(o.recovery, RecoveryMode::TruncateDamaged);
    assert_eq!(o.max_unsynced_bytes, 65536);
    assert_eq!(StorageOptions::default().recovery, RecoveryMode::Strict);
    assert_eq!(
        RecoveryMode::TruncateDamaged.to_string(),
        "truncate-damaged"
    );
    assert!(toml::from_str::<StorageOptions>("recovery = \"lenient\"").is_err());
    let err = StorageOptions {
        max_unsynced_bytes: 10,
        ..StorageOptions::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(err.field, "max_unsynced_bytes");
}
