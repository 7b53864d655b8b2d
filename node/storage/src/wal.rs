//! The write-ahead log: records with increasing log sequence numbers in a directory of
//! segment files, checksummed, recovered after a crash with a torn tail cut off and any
//! other damage refused.
//!
//! # On-disk format
//!
//! A segment is named `wal-<first_lsn:020>.log` (zero-padded so that byte order is LSN
//! order) and holds:
//!
//! ```text
//! segment header (16 bytes): magic "KVLWAL01" | first_lsn u64 LE
//! record (16-byte header + payload):
//!     len u32 LE | crc u32 LE | lsn u64 LE | payload (len bytes)
//!     crc = CRC-32 (IEEE, crc32fast) of len LE ‖ lsn LE ‖ payload
//! ```
//!
//! Carrying the LSN in every record (and under the checksum) lets recovery check that
//! records are contiguous, and tells a stray valid-looking record from the one expected.
//! LSNs start at [`Lsn::FIRST`] (1), so a zero-filled region never decodes as a record.
//!
//! # Recovery rule: torn tail or corruption?
//!
//! Recovery reads the segments in LSN order and decodes records one after another. The
//! first record that fails (short header, length over [`MAX_RECORD_BYTES`], length past
//! the end of the file, checksum mismatch, or an LSN other than the next expected one) at
//! byte offset `o` is judged as follows:
//!
//! - In any segment but the last, it is corruption: [`WalError::Corrupt`]. A segment is
//!   only left behind once it was synced (the log syncs a segment before starting the
//!   next), so a damaged one lost acknowledged data.
//! - In the last segment, recovery searches every byte offset after `o` for a complete
//!   record with a valid checksum and an LSN at or after the expected one. If one
//!   exists, valid data follows the damage, so it is corruption in the middle of the log:
//!   refused with the file and offset. If none exists, the damage is a torn tail (a write
//!   that power loss cut short, filled with zeros, or left as garbage): the file is cut
//!   at `o`, the cut is synced, and [`WalRecovery::torn_tail`] reports how many bytes
//!   were dropped.
//!
//! What this rule cannot do: a bit flip inside the very last record of the log looks
//! exactly like a torn write and is truncated (as in etcd and LevelDB); and a crash that
//! persisted later pages of an unsynced write but not earlier ones (a hole followed by
//! valid records) is refused although only unsynced data was hit. The simulated disk
//! keeps prefixes of writes and never produces the latter.
//!
//! # Fsync policy
//!
//! See [`FsyncPolicy`]. Whatever the policy, the log syncs a full segment before it
//! creates the next one (except under [`FsyncPolicy::Never`]), syncs the directory when
//! segments were created or removed, and syncs the cut of a torn tail during recovery.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vfs::{Vfs, VfsFile};
use crate::{FsyncPolicy, OptionsError, StorageOptions};

/// The largest payload one record may carry. Larger appends are refused with
/// [`WalError::RecordTooLarge`]; during recovery a larger length field is damage.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// Bytes of framing before each record's payload (`len`, `crc`, `lsn`).
pub const RECORD_HEADER_BYTES: usize = 16;

/// Bytes of the header at the start of each segment file (`magic`, `first_lsn`).
pub const SEGMENT_HEADER_BYTES: usize = 16;

/// Appended bytes buffered in memory before they are written to the OS even without a
/// sync, bounding the memory a long batch can hold.
pub const WRITE_BUFFER_BYTES: usize = 256 << 10;

const SEGMENT_MAGIC: [u8; 8] = *b"KVLWAL01";
const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const LSN_DIGITS: usize = 20;

/// A log sequence number: the position of a record in the log. The first record ever
/// appended gets [`Lsn::FIRST`]; each append gets the next number, across segments,
/// snapshots and restarts.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN of the first record of a new log.
    pub const FIRST: Lsn = Lsn(1);

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What went wrong in the write-ahead log. Every variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system call failed.
    #[error("wal i/o error: {op} {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the log was doing, e.g. `"fsync segment"`.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Damage that recovery must not paper over: data that was (or may have been)
    /// acknowledged as durable is unreadable.
    #[error("corrupt wal segment {} at byte {offset}: {reason}", file.display())]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the damaged record (or header) in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An append larger than [`MAX_RECORD_BYTES`] was refused; the log is unchanged.
    #[error("wal record of {len_bytes} bytes exceeds MAX_RECORD_BYTES ({max_bytes})")]
    RecordTooLarge {
        /// Size of the refused payload.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// An earlier write or sync failed, so what is on disk is unknown (a failed fsync
    /// may have dropped dirty pages). The log refuses further work; reopen it to recover.
    #[error("wal in {} is unusable after an earlier failure: {cause}", dir.display())]
    Poisoned {
        /// The log directory.
        dir: PathBuf,
        /// The first failure.
        cause: String,
    },
    /// The options were invalid.
    #[error(transparent)]
    InvalidOptions(#[from] OptionsError),
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// A tail that recovery cut off the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub file: PathBuf,
    /// Where it was cut (its new length).
    pub offset: u64,
    /// How many bytes were dropped.
    pub dropped_bytes: u64,
    /// Why the first dropped record was unreadable.
    pub reason: String,
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalRecovery {
    /// Every record in the log, in LSN order (contiguous LSNs).
    pub records: Vec<(Lsn, Vec<u8>)>,
    /// The torn tail that was cut off, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// Counters of one open log, for reports and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalStats {
    /// Records appended since open.
    pub appends: u64,
    /// Bytes appended since open, framing included.
    pub bytes_appended: u64,
    /// `fdatasync` calls on segment files.
    pub file_syncs: u64,
    /// `fsync` calls on the directory.
    pub dir_syncs: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segment files removed by [`Wal::truncate_prefix`].
    pub segments_removed: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
}

/// A write-ahead log in one directory. See the [module docs](crate::wal) for the format, the
/// recovery rule and the durability contract.
///
/// Dropping a `Wal` discards appends still buffered in memory, as a process crash would;
/// call [`Wal::sync`] for a clean shutdown.
pub struct Wal<V: Vfs> {
    vfs: V,
    dir: PathBuf,
    fsync: FsyncPolicy,
    segment_size_bytes: u64,
    /// Oldest first; the last one is the active segment.
    segments: Vec<Segment>,
    file: V::File,
    /// Bytes in the active segment, buffered ones included.
    active_len_bytes: u64,
    /// Encoded bytes not yet handed to the OS.
    buf: Vec<u8>,
    next_lsn: Lsn,
    /// Bytes were handed to the OS (or buffered) since the last data sync.
    data_unsynced: bool,
    /// Segments were created or removed since the last directory sync.
    dir_unsynced: bool,
    poisoned: Option<String>,
    stats: WalStats,
}

impl<V: Vfs> fmt::Debug for Wal<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("segments", &self.segments.len())
            .field("next_lsn", &self.next_lsn)
            .field("buffered_bytes", &self.buf.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// The file name of the segment whose first record is `first_lsn`.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!(
        "{SEGMENT_PREFIX}{:0width$}{SEGMENT_SUFFIX}",
        first_lsn.0,
        width = LSN_DIGITS
    )
}

fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

fn record_crc(len: u32, lsn: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_record(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    // Callers checked `payload.len() <= MAX_RECORD_BYTES`, which fits in u32.
    let len = payload.len() as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(len, lsn.0, payload).to_le_bytes());
    buf.extend_from_slice(&lsn.0.to_le_bytes());
    buf.extend_from_slice(payload);
}

fn segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first_lsn.0.to_le_bytes());
    h
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at `off`, expecting LSN `expected`. Returns the payload range and
/// the offset after the record, or why it is unreadable.
fn decode_record(b: &[u8], off: usize, expected: Lsn) -> Result<(Range<usize>, usize), String> {
    let left = b.len() - off;
    if left < RECORD_HEADER_BYTES {
        return Err(format!(
            "incomplete record header: {left} of {RECORD_HEADER_BYTES} bytes"
        ));
    }
    let len = u32_at(b, off);
    let stored_crc = u32_at(b, off + 4);
    let lsn = u64_at(b, off + 8);
    let len_usize = len as usize;
    if len_usize > MAX_RECORD_BYTES {
        return Err(format!(
            "record length {len} exceeds MAX_RECORD_BYTES ({MAX_RECORD_BYTES})"
        ));
    }
    let start = off + RECORD_HEADER_BYTES;
    if len_usize > b.len() - start {
        return Err(format!(
            "record of {len} bytes runs past the end of the file ({} bytes left)",
            b.len() - start
        ));
    }
    let payload = start..start + len_usize;
    let crc = record_crc(len, lsn, &b[payload.clone()]);
    if crc != stored_crc {
        return Err(format!(
            "checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        ));
    }
    if lsn != expected.0 {
        return Err(format!("record has lsn {lsn}, expected {expected}"));
    }
    Ok((payload.clone(), payload.end))
}

/// Searches every offset from `from` for a complete, checksum-valid record with an LSN
/// at or after `expected`: evidence that data follows a damaged record.
fn find_valid_record_after(b: &[u8], from: usize, expected: Lsn) -> Option<(usize, Lsn)> {
    // No record in `b[from..]` can carry an LSN beyond this (each takes >= 16 bytes).
    let max_lsn = expected
        .0
        .saturating_add((b.len().saturating_sub(from) / RECORD_HEADER_BYTES) as u64 + 1);
    let last = b.len().checked_sub(RECORD_HEADER_BYTES)?;
    (from..=last).find_map(|p| {
        let len = u32_at(b, p) as usize;
        let lsn = u64_at(b, p + 8);
        if len > MAX_RECORD_BYTES
            || len > b.len() - p - RECORD_HEADER_BYTES
            || lsn < expected.0
            || lsn > max_lsn
        {
            return None;
        }
        let payload = &b[p + RECORD_HEADER_BYTES..p + RECORD_HEADER_BYTES + len];
        (record_crc(len as u32, lsn, payload) == u32_at(b, p + 4)).then_some((p, Lsn(lsn)))
    })
}

/// The result of reading one segment: its good records, and the first failure.
struct SegmentScan {
    records: Vec<(Lsn, Range<usize>)>,
    failure: Option<(usize, String)>,
}

fn scan_segment(b: &[u8], first_lsn: Lsn) -> SegmentScan {
    let mut scan = SegmentScan {
        records: Vec::new(),
        failure: None,
    };
    if b.len() < SEGMENT_HEADER_BYTES {
        scan.failure = Some((
            0,
            format!(
                "incomplete segment header: {} of {SEGMENT_HEADER_BYTES} bytes",
                b.len()
            ),
        ));
        return scan;
    }
    if b[..8] != SEGMENT_MAGIC {
        scan.failure = Some((0, "bad segment magic".to_owned()));
        return scan;
    }
    let header_lsn = u64_at(b, 8);
    if header_lsn != first_lsn.0 {
        scan.failure = Some((
            8,
            format!("header says first lsn {header_lsn}, file name says {first_lsn}"),
        ));
        return scan;
    }
    let mut off = SEGMENT_HEADER_BYTES;
    let mut expected = first_lsn;
    while off < b.len() {
        match decode_record(b, off, expected) {
            Ok((payload, next)) => {
                scan.records.push((expected, payload));
                expected = expected.next();
                off = next;
            }
            Err(reason) => {
                scan.failure = Some((off, reason));
                break;
            }
        }
    }
    scan
}

impl<V: Vfs> Wal<V> {
    /// Opens (or creates) the log in `dir` and recovers its records.
    ///
    /// Reads every segment in LSN order and verifies every checksum. A torn tail of the
    /// last segment is cut off and the cut is synced (reported in
    /// [`WalRecovery::torn_tail`]); any other damage, or a gap between segments, is
    /// refused with [`WalError::Corrupt`] naming the file and byte offset. Files in `dir`
    /// whose names are not segment names are ignored. Every returned record was durable.
    pub fn open(
        vfs: V,
        dir: &Path,
        options: &StorageOptions,
    ) -> Result<(Wal<V>, WalRecovery), WalError> {
        options.validate()?;
        vfs.create_dir_all(dir)
            .map_err(io_err(dir, "create directory"))?;
        let names = vfs.list_dir(dir).map_err(io_err(dir, "list directory"))?;
        let mut segments: Vec<Segment> = names
            .iter()
            .filter_map(|n| {
                parse_segment_name(n).map(|first_lsn| Segment {
                    first_lsn,
                    path: dir.join(n),
                })
            })
            .collect();
        segments.sort_by_key(|s| s.first_lsn);
        let created = segments.is_empty();

        let mut wal = Wal {
            file: match segments.last() {
                Some(s) => vfs
                    .open_append(&s.path)
                    .map_err(io_err(&s.path, "open segment"))?,
                None => {
                    let path = dir.join(segment_file_name(Lsn::FIRST));
                    let file = vfs.create(&path).map_err(io_err(&path, "create segment"))?;
                    segments.push(Segment {
                        first_lsn: Lsn::FIRST,
                        path,
                    });
                    file
                }
            },
            vfs,
            dir: dir.to_path_buf(),
            fsync: options.fsync,
            segment_size_bytes: options.segment_size_bytes,
            segments,
            active_len_bytes: 0,
            buf: Vec::new(),
            next_lsn: Lsn::FIRST,
            data_unsynced: false,
            dir_unsynced: false,
            poisoned: None,
            stats: WalStats::default(),
        };
        if created {
            wal.stats.segments_created = 1;
        }
        let recovery = wal.recover()?;
        Ok((wal, recovery))
    }

    /// Reads all segments, cuts a torn tail, and positions the log for appending.
    fn recover(&mut self) -> Result<WalRecovery, WalError> {
        let mut out = WalRecovery::default();
        let mut expected = self.segments[0].first_lsn;
        let n = self.segments.len();
        let mut active_valid_len = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            let is_last = i + 1 == n;
            if seg.first_lsn != expected {
                return Err(WalError::Corrupt {
                    file: seg.path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at lsn {} but the previous segment ends before lsn {expected}",
                        seg.first_lsn
                    ),
                });
            }
            let bytes = self
                .vfs
                .read(&seg.path)
                .map_err(io_err(&seg.path, "read segment"))?;
            if bytes.is_empty() && is_last {
                // Just created (now, or right before a crash): nothing was lost. The
                // header is written below.
                continue;
            }
            let scan = scan_segment(&bytes, seg.first_lsn);
            for (lsn, range) in &scan.records {
                out.records.push((*lsn, bytes[range.clone()].to_vec()));
            }
            expected = Lsn(seg.first_lsn.0 + scan.records.len() as u64);
            let valid_len = match &scan.failure {
                None => bytes.len(),
                Some((offset, reason)) => {
                    let corrupt = |reason: String| WalError::Corrupt {
                        file: seg.path.clone(),
                        offset: *offset as u64,
                        reason,
                    };
                    if !is_last {
                        return Err(corrupt(format!(
                            "{reason} (in a segment that is not the last one)"
                        )));
                    }
                    if let Some((p, lsn)) = find_valid_record_after(&bytes, offset + 1, expected) {
                        return Err(corrupt(format!(
                            "{reason}; a valid record (lsn {lsn}) follows at byte {p}, so this is not a torn tail"
                        )));
                    }
                    // A damaged header means nothing of this segment is usable.
                    let cut = if *offset < SEGMENT_HEADER_BYTES {
                        0
                    } else {
                        *offset
                    };
                    out.torn_tail = Some(TornTail {
                        file: seg.path.clone(),
                        offset: cut as u64,
                        dropped_bytes: (bytes.len() - cut) as u64,
                        reason: reason.clone(),
                    });
                    cut
                }
            };
            if is_last {
                active_valid_len = valid_len as u64;
            }
        }
        self.next_lsn = expected;
        self.active_len_bytes = active_valid_len;

        let active = self.segments[n - 1].clone();
        if let Some(torn) = &out.torn_tail {
            self.file
                .truncate(torn.offset)
                .map_err(io_err(&active.path, "truncate torn tail"))?;
            self.file
                .sync_all()
                .map_err(io_err(&active.path, "fsync truncated segment"))?;
            self.stats.file_syncs += 1;
        }
        if self.active_len_bytes == 0 {
            // A new segment, or one whose header was torn: (re)write the header.
            self.buf
                .extend_from_slice(&segment_header(active.first_lsn));
            self.active_len_bytes = SEGMENT_HEADER_BYTES as u64;
            self.data_unsynced = true;
            self.dir_unsynced = true;
        }
        Ok(out)
    }

    /// Appends one record and returns its LSN.
    ///
    /// Durability: under [`FsyncPolicy::Always`] the record is durable when this
    /// returns; otherwise it is buffered and becomes durable at the next [`Wal::sync`]
    /// (never, under [`FsyncPolicy::Never`]). A payload over [`MAX_RECORD_BYTES`] is
    /// refused and leaves the log unchanged. The segment is rolled first if the record
    /// would push it past `segment_size_bytes` (a record alone in a segment may exceed
    /// it).
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, WalError> {
        self.check_poisoned()?;
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge {
                len_bytes: payload.len(),
                max_bytes: MAX_RECORD_BYTES,
            });
        }
        let record_bytes = (RECORD_HEADER_BYTES + payload.len()) as u64;
        if self.active_len_bytes > SEGMENT_HEADER_BYTES as u64
            && self.active_len_bytes + record_bytes > self.segment_size_bytes
        {
            let r = self.roll();
            self.poison_on_err(r)?;
        }
        let lsn = self.next_lsn;
        encode_record(&mut self.buf, lsn, payload);
        self.next_lsn = lsn.next();
        self.active_len_bytes += record_bytes;
        self.data_unsynced = true;
        self.stats.appends += 1;
        self.stats.bytes_appended += record_bytes;
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            let r = self.flush_buf();
            self.poison_on_err(r)?;
        }
        if self.fsync == FsyncPolicy::Always {
            self.sync()?;
        }
        Ok(lsn)
    }

    /// Makes every record appended so far durable: writes the buffer to the OS, syncs the
    /// active segment's data and, if segments were created or removed, the directory.
    /// Under [`FsyncPolicy::Never`] it only writes to the OS.
    ///
    /// After a failure the log is poisoned ([`WalError::Poisoned`]): reopen it.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        let r = self.sync_inner();
        self.poison_on_err(r)
    }

    fn sync_inner(&mut self) -> Result<(), WalError> {
        self.flush_buf()?;
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        if self.data_unsynced {
            let path = &self.segments[self.segments.len() - 1].path;
            self.file
                .sync_data()
                .map_err(io_err(path, "fsync segment"))?;
            self.stats.file_syncs += 1;
            self.data_unsynced = false;
        }
        if self.dir_unsynced {
            self.vfs
                .sync_dir(&self.dir)
                .map_err(io_err(&self.dir, "fsync directory"))?;
            self.stats.dir_syncs += 1;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = &self.segments[self.segments.len() - 1].path;
        self.file
            .write_all(&self.buf)
            .map_err(io_err(path, "write segment"))?;
        self.buf.clear();
        Ok(())
    }

    /// Closes the active segment (synced, unless the policy is `Never`) and starts a new
    /// one at `next_lsn`.
    fn roll(&mut self) -> Result<(), WalError> {
        self.flush_buf()?;
        if self.fsync != FsyncPolicy::Never && self.data_unsynced {
            let path = &self.segments[self.segments.len() - 1].path;
            self.file
                .sync_data()
                .map_err(io_err(path, "fsync segment"))?;
            self.stats.file_syncs += 1;
            self.data_unsynced = false;
        }
        self.start_segment()
    }

    fn start_segment(&mut self) -> Result<(), WalError> {
        let path = self.dir.join(segment_file_name(self.next_lsn));
        self.file = self
            .vfs
            .create(&path)
            .map_err(io_err(&path, "create segment"))?;
        self.segments.push(Segment {
            first_lsn: self.next_lsn,
            path,
        });
        self.buf.extend_from_slice(&segment_header(self.next_lsn));
        self.active_len_bytes = SEGMENT_HEADER_BYTES as u64;
        self.data_unsynced = true;
        self.dir_unsynced = true;
        self.stats.segments_created += 1;
        Ok(())
    }

    /// Removes every whole segment whose records all have LSNs below `upto` (used after
    /// a snapshot covers them). The active segment is never removed. Returns how many
    /// segments were removed. The removals become durable at the next [`Wal::sync`];
    /// until then a crash may bring some back, oldest last, which is harmless.
    pub fn truncate_prefix(&mut self, upto: Lsn) -> Result<usize, WalError> {
        self.check_poisoned()?;
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first_lsn <= upto {
            let seg = &self.segments[0];
            match self.vfs.remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&seg.path, "remove segment")(e)),
            }
            self.segments.remove(0);
            self.dir_unsynced = true;
            self.stats.segments_removed += 1;
            removed += 1;
        }
        Ok(removed)
    }

    /// Discards the whole log and continues it at `lsn` (which must not be below
    /// [`Wal::next_lsn`]): used when a snapshot is ahead of what the log kept. Durable
    /// when it returns, whatever the policy: old segments are removed and the directory
    /// synced before the new segment exists, so a crash in between leaves no gap.
    pub(crate) fn restart_at(&mut self, lsn: Lsn) -> Result<(), WalError> {
        self.check_poisoned()?;
        debug_assert!(lsn >= self.next_lsn);
        let r = self.restart_inner(lsn);
        self.poison_on_err(r)
    }

    fn restart_inner(&mut self, lsn: Lsn) -> Result<(), WalError> {
        self.buf.clear();
        for seg in std::mem::take(&mut self.segments) {
            match self.vfs.remove_file(&seg.path) {
                Ok(()) => self.stats.segments_removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&seg.path, "remove segment")(e)),
            }
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(io_err(&self.dir, "fsync directory"))?;
        self.stats.dir_syncs += 1;
        self.next_lsn = lsn;
        self.start_segment()?;
        self.flush_buf()?;
        let path = &self.segments[0].path;
        self.file
            .sync_data()
            .map_err(io_err(path, "fsync segment"))?;
        self.stats.file_syncs += 1;
        self.data_unsynced = false;
        self.vfs
            .sync_dir(&self.dir)
            .map_err(io_err(&self.dir, "fsync directory"))?;
        self.stats.dir_syncs += 1;
        self.dir_unsynced = false;
        Ok(())
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(cause) => Err(WalError::Poisoned {
                dir: self.dir.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_on_err<T>(&mut self, r: Result<T, WalError>) -> Result<T, WalError> {
        if let Err(e) = &r
            && self.poisoned.is_none()
        {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The LSN of the oldest record the log still holds (or would hold: the first LSN of
    /// its oldest segment).
    pub fn first_lsn(&self) -> Lsn {
        self.segments[0].first_lsn
    }

    /// The number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since open.
    pub fn stats(&self) -> &WalStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_in_lsn_order_and_parse_back() {
        let a = segment_file_name(Lsn(9));
        let b = segment_file_name(Lsn(10));
        assert!(a < b);
        assert_eq!(a, "wal-00000000000000000009.log");
        assert_eq!(parse_segment_name(&b), Some(Lsn(10)));
        assert_eq!(parse_segment_name("wal-9.log"), None);
        assert_eq!(parse_segment_name("snapshot.bin"), None);
        assert_eq!(
            parse_segment_name(&segment_file_name(Lsn(u64::MAX))),
            Some(Lsn(u64::MAX))
        );
    }

    #[test]
    fn a_zero_filled_region_never_decodes_as_a_record() {
        let zeros = vec![0u8; 64];
        assert!(decode_record(&zeros, 0, Lsn::FIRST).is_err());
        assert_eq!(find_valid_record_after(&zeros, 0, Lsn::FIRST), None);
    }

    #[test]
    fn an_encoded_record_decodes_and_a_flipped_bit_does_not() {
        let mut b = Vec::new();
        encode_record(&mut b, Lsn(5), b"hello");
        assert_eq!(decode_record(&b, 0, Lsn(5)).unwrap(), (16..21, 21));
        assert!(decode_record(&b, 0, Lsn(6)).unwrap_err().contains("lsn 5"));
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&c, 0, Lsn(5)).is_err(), "bit {bit}");
        }
    }
}
