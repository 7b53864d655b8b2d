//! The write-ahead log: records with increasing log sequence numbers in a directory of
//! segment files, checksummed, recovered after a crash with a torn tail cut off, and
//! refused when the damage could have destroyed records that were synced.
//!
//! # On-disk format
//!
//! A log is a directory of segment files plus one small state file. A segment is named
//! `wal-<first_lsn:020>.log` (zero-padded so that byte order is LSN order) and holds:
//!
//! ```text
//! segment header (28 bytes): magic "KVLWAL02" | first_lsn u64 LE | prev_end_lsn u64 LE | crc u32 LE
//!     crc          = CRC-32 of the 24 bytes before it
//!     prev_end_lsn = the LSN after the previous segment's last record: first_lsn, unless
//!                    the log skipped ahead to a snapshot's LSN (see `NodeStorage`)
//! record (16-byte header + payload):
//!     len u32 LE | crc u32 LE | lsn u64 LE | payload (len bytes)
//!     crc = CRC-32 (IEEE, crc32fast) of len LE ‖ lsn LE ‖ payload
//! trailer (20 bytes), closing every segment that has a successor:
//!     magic "KVLWEND1" | next_lsn u64 LE | crc u32 LE
//!     next_lsn = the successor's first_lsn; crc = CRC-32 of the 16 bytes before it
//! ```
//!
//! and `wal-state.bin` (52 bytes), replaced atomically (written to `wal-state.bin.tmp`,
//! fsynced, renamed over, directory fsynced):
//!
//! ```text
//! magic "KVLWST01" | start_lsn u64 | max_unsynced_bytes u64
//!     | end_segment u64 | end_len_bytes u64 | end_next_lsn u64 | crc u32 (of the 48 bytes before it)
//! start_lsn          the log holds every record from this LSN on (raised by prefix truncation)
//! max_unsynced_bytes the bound the last segment's tail is written under (u64::MAX: none)
//! end_*              zero while the log is open; a clean close records where the log ended:
//!                    the last segment's first LSN, its length, and the next LSN
//! ```
//!
//! Carrying the LSN in every record (and under the checksum) lets recovery check that
//! records are contiguous, and tells a stray valid-looking record from the one expected.
//! LSNs start at [`Lsn::FIRST`] (1), so a zero-filled region never decodes as a record;
//! a trailer's magic read as a record length is far above [`MAX_RECORD_BYTES`], so a
//! trailer never decodes as a record either.
//!
//! # Write order: what is durable before what
//!
//! Recovery can tell what a crash did from what it cannot have done only because the log
//! writes in an order that makes some states impossible after a crash:
//!
//! 1. **Headers first.** A segment's header is fsynced, and the directory with it, before
//!    any record is written after it. A new log writes its state file only once its
//!    first segment is durable.
//! 2. **Trailers last.** Rolling to a new segment fsyncs the old one, creates the new one
//!    and fsyncs its header and the directory, and only then appends (and fsyncs) the
//!    old segment's trailer. A trailer therefore proves its successor was durable.
//! 3. **A bounded unsynced window.** The bytes appended to the last segment since its
//!    last fsync never exceed [`StorageOptions::max_unsynced_bytes`]: an append that
//!    would exceed it first syncs what is pending. The one exception is a single record
//!    larger than the bound, alone in the window.
//! 4. **Start before removal.** [`Wal::truncate_prefix`] records the new `start_lsn`
//!    before it removes segments.
//! 5. **Clean close.** [`Wal::close`] fsyncs everything and then records the log's end;
//!    [`Wal::open`] clears that record, durably, before the log accepts an append.
//!
//! # Recovery rule: torn tail or lost synced data?
//!
//! A crash can only damage what was not synced, and by (1)–(3) that is the end of the
//! last segment, at most `max_unsynced_bytes` long. Recovery reads the segments in LSN
//! order, decodes records one after another, and judges the first failure (short
//! header, length over [`MAX_RECORD_BYTES`], length past the end of the file, checksum
//! mismatch, an LSN other than the next expected one) at byte offset `o` of a file of
//! `L` bytes:
//!
//! - **A torn tail** is cut at `o` (the cut is fsynced) and reported in
//!   [`WalRecovery::torn_tail`]: the failure is in the last segment, no complete record
//!   with a valid checksum and an LSN at or after the expected one starts at any byte
//!   offset after `o`, and the cut `L - o` is at most the recorded `max_unsynced_bytes`
//!   (or at most one record whose intact header announces the expected LSN: the
//!   oversized record alone in its window). A last segment no longer than a header,
//!   whose header is unreadable and which no trailer names, was being created: its
//!   header is rewritten.
//! - **Everything else is lost synced data** and is refused with [`WalError::Damaged`],
//!   naming the file and byte offset and leaving every file untouched:
//!   - bytes that fail in a segment that is not the last, or that valid records follow
//!     ([`DamageKind::Corrupt`]). The one exception is a torn trailer: at most
//!     [`TRAILER_BYTES`] at the end of a segment whose successor starts where it ends
//!     (a crash while rolling); the trailer is rewritten;
//!   - an unreadable header in a segment longer than a header
//!     ([`DamageKind::SegmentHeader`]): the only segment zeroed is this;
//!   - a cut longer than the bound ([`DamageKind::TailBeyondUnsyncedBound`]): a zeroed
//!     or garbage tail after a crash;
//!   - a missing segment ([`DamageKind::MissingSegment`]): one that the last segment's
//!     trailer names (the newest deleted), one between two segments (a `prev_end_lsn`
//!     that does not match), one at the recorded `start_lsn` (the oldest deleted), or
//!     every segment while the state file exists;
//!   - after a clean close, any log but exactly the recorded one
//!     ([`DamageKind::CleanShutdownMismatch`]): a truncated or zeroed tail is detected
//!     to the byte, whatever its size;
//!   - a state file that is unreadable, or missing while the log holds records
//!     ([`DamageKind::State`]).
//!
//! With [`RecoveryMode::TruncateDamaged`] recovery does a point-in-time recovery
//! instead: it cuts the log at its first damage (the log is a sequence; records after a
//! hole are useless to a replica), renames later segments to `<name>.damaged`, and
//! reports the damage and how many bytes (and, when a clean close recorded the end, how
//! many records) it dropped in [`WalRecovery::damage_truncated`].
//!
//! What this rule cannot do:
//!
//! - **After a crash, damage within the bound looks like a torn tail.** A truncated
//!   last segment (the bytes are gone, not garbled), or up to `max_unsynced_bytes` of
//!   zeros or garbage at its end, is cut like a torn write. Only a clean close records
//!   the end exactly. A bit flip in the very last record is likewise cut (as in etcd
//!   and LevelDB). A smaller bound narrows this, at the price of more fsyncs when a
//!   driver batches more than the bound between syncs.
//! - **A torn header of an oversized record.** If a crash garbles the 16-byte header of
//!   a record larger than `max_unsynced_bytes`, its length is unknown and the cut is
//!   refused although only unsynced data was hit (`truncate-damaged` recovers it).
//!   Keep the bound above the largest record a driver writes.
//! - **Holes.** A crash that persisted later pages of an unsynced write but not earlier
//!   ones (a hole followed by valid records) is refused. The simulated disk keeps
//!   prefixes of writes and never produces this.
//! - **The state file itself** can be replaced by an older valid copy, which no check
//!   here can tell.
//!
//! Why this design: the issue it answers is that a rule which only asks "is anything
//! valid after the damage?" cannot bound what it cuts. Bounding the unsynced window
//! (like a group-commit size limit) makes "longer than a crash could explain"
//! decidable after any crash; trailers make the newest segment's deletion visible, as
//! `prev_end_lsn` does a middle one's and `start_lsn` the oldest's (RocksDB tracks WALs
//! and their synced sizes in its MANIFEST for the same reason); the clean-shutdown
//! record gives the exact answer in the common case of a graceful stop, without an
//! extra fsync per commit. `strict` versus `truncate-damaged` mirrors RocksDB's
//! `WALRecoveryMode` (`kTolerateCorruptedTailRecords` / `kPointInTimeRecovery`).
//!
//! # Fsync policy
//!
//! See [`FsyncPolicy`]. Under `always` and `batch` the log follows the write order
//! above. Under `never` it fsyncs no record, writes no trailers, records no bound
//! (`u64::MAX`) and no clean end; it still fsyncs a new log's first header and the state
//! file (which are written rarely), so that its state stays consistent. The cut of a
//! torn tail is always fsynced.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vfs::{Vfs, VfsFile};
use crate::{FsyncPolicy, OptionsError, RecoveryMode, StorageOptions};

/// The largest payload one record may carry. Larger appends are refused with
/// [`WalError::RecordTooLarge`]; during recovery a larger length field is damage.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// Bytes of framing before each record's payload (`len`, `crc`, `lsn`).
pub const RECORD_HEADER_BYTES: usize = 16;

/// Bytes of the header at the start of each segment file (`magic`, `first_lsn`,
/// `prev_end_lsn`, `crc`).
pub const SEGMENT_HEADER_BYTES: usize = 28;

/// Bytes of the trailer that closes a segment with a successor (`magic`, `next_lsn`,
/// `crc`).
pub const TRAILER_BYTES: usize = 20;

/// Appended bytes buffered in memory before they are written to the OS even without a
/// sync, bounding the memory a long batch can hold.
pub const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// The log's state file: where it starts, the bound on its unsynced tail, and where a
/// clean close left it.
pub const WAL_STATE_FILE_NAME: &str = "wal-state.bin";

/// The temporary file the state file is written to before it is renamed into place.
pub const WAL_STATE_TEMP_FILE_NAME: &str = "wal-state.bin.tmp";

/// Appended to the name of a segment that `truncate-damaged` recovery set aside.
pub const DAMAGED_SEGMENT_SUFFIX: &str = ".damaged";

/// The bound recorded when there is none (under [`FsyncPolicy::Never`]).
const UNBOUNDED: u64 = u64::MAX;

const SEGMENT_MAGIC: [u8; 8] = *b"KVLWAL02";
const OLD_SEGMENT_MAGIC: [u8; 8] = *b"KVLWAL01";
const TRAILER_MAGIC: [u8; 8] = *b"KVLWEND1";
const STATE_MAGIC: [u8; 8] = *b"KVLWST01";
const STATE_BYTES: usize = 52;
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
    /// Damage that strict recovery must not paper over: records that were (or may have
    /// been) synced and acknowledged are unreadable or missing. Nothing was modified.
    #[error(
        "wal recovery refused: {0}; a crash cannot explain this, so records that were synced \
         may be lost (recovery = \"truncate-damaged\" cuts the log there and reports the loss)"
    )]
    Damaged(Damage),
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
    /// The log was closed with [`Wal::close`]; reopen it to continue.
    #[error("wal in {} was closed", dir.display())]
    Closed {
        /// The log directory.
        dir: PathBuf,
    },
    /// The options were invalid.
    #[error(transparent)]
    InvalidOptions(#[from] OptionsError),
}

/// Where the log is damaged and how: what strict recovery refuses
/// ([`WalError::Damaged`]) and what `truncate-damaged` recovery cuts
/// ([`DamageTruncated`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file, or the missing one.
    pub file: PathBuf,
    /// The byte offset in `file` where the readable log ends (0 for a missing file).
    pub offset: u64,
    /// What is wrong.
    pub kind: DamageKind,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.file.display(),
            self.offset,
            self.kind
        )
    }
}

/// The kinds of damage recovery tells apart. See the
/// [recovery rule](crate::wal#recovery-rule-torn-tail-or-lost-synced-data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DamageKind {
    /// Unreadable bytes that a crash cannot explain: in a segment that is not the last,
    /// or followed by a valid record.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
    /// The segment's header is unreadable although the file holds more than a header
    /// (headers are synced before any record is written after them).
    SegmentHeader {
        /// The file's length.
        file_len_bytes: u64,
        /// What is wrong with the header.
        reason: String,
    },
    /// The damaged tail of the last segment is longer than any unsynced window the log
    /// allows: a crash cannot have done it.
    TailBeyondUnsyncedBound {
        /// Bytes from the first unreadable record to the end of the file.
        dropped_bytes: u64,
        /// The bound the tail was written under.
        max_unsynced_bytes: u64,
        /// Why the first of those bytes is unreadable.
        reason: String,
    },
    /// A segment the log must hold is missing (`Damage::file` names it).
    MissingSegment {
        /// How recovery knows it must exist.
        reason: String,
    },
    /// The log was closed cleanly but is no longer what the close recorded.
    CleanShutdownMismatch {
        /// The LSN after the last record, as recorded by the close.
        expected_next_lsn: Lsn,
        /// The LSN after the last readable record now.
        found_next_lsn: Lsn,
        /// What differs.
        reason: String,
    },
    /// The state file is unreadable, or missing while the log holds records.
    State {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::Corrupt { reason } => write!(f, "corrupt: {reason}"),
            DamageKind::SegmentHeader {
                file_len_bytes,
                reason,
            } => write!(
                f,
                "unreadable segment header ({reason}) in a file of {file_len_bytes} bytes \
                 (a header is synced before any record is written after it)"
            ),
            DamageKind::TailBeyondUnsyncedBound {
                dropped_bytes,
                max_unsynced_bytes,
                reason,
            } => write!(
                f,
                "{reason}, and no valid record follows, but cutting there would drop \
                 {dropped_bytes} bytes, more than the {max_unsynced_bytes} bytes a crash can \
                 leave unsynced (max_unsynced_bytes)"
            ),
            DamageKind::MissingSegment { reason } => write!(f, "missing segment: {reason}"),
            DamageKind::CleanShutdownMismatch {
                expected_next_lsn,
                found_next_lsn,
                reason,
            } => write!(
                f,
                "the log was closed cleanly with its last record at lsn {}, but its readable \
                 records now end at lsn {} ({} records short): {reason}",
                expected_next_lsn.0.saturating_sub(1),
                found_next_lsn.0.saturating_sub(1),
                expected_next_lsn.0.saturating_sub(found_next_lsn.0)
            ),
            DamageKind::State { reason } => write!(f, "bad wal state file: {reason}"),
        }
    }
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

/// What `truncate-damaged` recovery dropped to open a damaged log (strict recovery
/// refuses the same log with [`WalError::Damaged`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamageTruncated {
    /// The damage, where the log was cut.
    pub damage: Damage,
    /// Bytes of log dropped: from the cut to the end of its segment (the end a clean
    /// close recorded, if it did, so bytes already missing count too), plus the segments
    /// set aside. Bytes of segment files that were already missing are not counted.
    pub bytes_dropped: u64,
    /// Records lost: exact when a clean close had recorded the log's end, `None` when
    /// unknowable (zeroed or missing bytes cannot be counted as records).
    pub records_dropped: Option<u64>,
    /// Later segments, renamed to `<name>.damaged` (kept for inspection, never read).
    pub segments_set_aside: Vec<PathBuf>,
}

impl fmt::Display for DamageTruncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cut the log at {}; dropped {} bytes",
            self.damage, self.bytes_dropped
        )?;
        match self.records_dropped {
            Some(n) => write!(f, " and {n} records")?,
            None => write!(f, " and an unknown number of records")?,
        }
        if !self.segments_set_aside.is_empty() {
            write!(
                f,
                "; {} later segments renamed to *{DAMAGED_SEGMENT_SUFFIX}",
                self.segments_set_aside.len()
            )?;
        }
        Ok(())
    }
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalRecovery {
    /// Every record in the log, in LSN order (contiguous LSNs).
    pub records: Vec<(Lsn, Vec<u8>)>,
    /// The torn tail that was cut off, if there was one.
    pub torn_tail: Option<TornTail>,
    /// The log had been closed cleanly and was found exactly as the close left it.
    pub clean_shutdown: bool,
    /// What `truncate-damaged` recovery cut (always empty under strict recovery, which
    /// refuses instead). Drivers log each at WARN.
    pub damage_truncated: Vec<DamageTruncated>,
    /// Segments below the recorded start that a crash in the middle of
    /// [`Wal::truncate_prefix`] left behind, removed now.
    pub leftover_segments_removed: usize,
    /// Segments that are not the last but lacked their trailer (a crash while rolling),
    /// given one now.
    pub trailers_repaired: usize,
}

/// Counters of one open log, for reports and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WalStats {
    /// Records appended since open.
    pub appends: u64,
    /// Bytes appended since open, framing included.
    pub bytes_appended: u64,
    /// `fdatasync` calls on segment files.
    pub file_syncs: u64,
    /// `fsync` calls on the directory.
    pub dir_syncs: u64,
    /// Syncs the log issued itself because an append would have left more than
    /// `max_unsynced_bytes` unsynced (also counted in `file_syncs`).
    pub bound_syncs: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segment files removed by [`Wal::truncate_prefix`].
    pub segments_removed: u64,
    /// Atomic replacements of the state file.
    pub state_writes: u64,
}

impl std::ops::AddAssign<&WalStats> for WalStats {
    /// Adds another log's counters (a node with several WAL shards reports their sum).
    fn add_assign(&mut self, o: &WalStats) {
        self.appends += o.appends;
        self.bytes_appended += o.bytes_appended;
        self.file_syncs += o.file_syncs;
        self.dir_syncs += o.dir_syncs;
        self.bound_syncs += o.bound_syncs;
        self.segments_created += o.segments_created;
        self.segments_removed += o.segments_removed;
        self.state_writes += o.state_writes;
    }
}

#[derive(Debug, Clone)]
struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
}

/// Where a clean close left the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CleanEnd {
    segment_first_lsn: Lsn,
    len_bytes: u64,
    next_lsn: Lsn,
}

/// The content of the state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WalState {
    start_lsn: Lsn,
    max_unsynced_bytes: u64,
    clean_end: Option<CleanEnd>,
}

/// A write-ahead log in one directory. See the [module docs](crate::wal) for the format, the
/// recovery rule and the durability contract.
///
/// Dropping a `Wal` discards appends still buffered in memory, as a process crash would;
/// call [`Wal::close`] for a clean shutdown (or at least [`Wal::sync`]).
pub struct Wal<V: Vfs> {
    vfs: V,
    dir: PathBuf,
    fsync: FsyncPolicy,
    segment_size_bytes: u64,
    /// The bound on `unsynced_bytes` (`UNBOUNDED` under `Never`).
    max_unsynced_bytes: u64,
    /// Oldest first; the last one is the active segment.
    segments: Vec<Segment>,
    file: V::File,
    /// Bytes in the active segment, buffered ones included.
    active_len_bytes: u64,
    /// Bytes appended to the active segment since its last data sync.
    unsynced_bytes: u64,
    /// Encoded bytes not yet handed to the OS.
    buf: Vec<u8>,
    next_lsn: Lsn,
    /// Bytes were handed to the OS (or buffered) since the last data sync.
    data_unsynced: bool,
    /// Segments were created or removed since the last directory sync.
    dir_unsynced: bool,
    /// What the state file holds now.
    state: WalState,
    poisoned: Option<String>,
    closed: bool,
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
            .field("unsynced_bytes", &self.unsynced_bytes)
            .field("poisoned", &self.poisoned)
            .field("closed", &self.closed)
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

/// The header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegmentHeader {
    first_lsn: Lsn,
    /// The LSN after the previous segment's last record.
    prev_end_lsn: Lsn,
}

fn encode_segment_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut b = [0u8; SEGMENT_HEADER_BYTES];
    b[..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..16].copy_from_slice(&h.first_lsn.0.to_le_bytes());
    b[16..24].copy_from_slice(&h.prev_end_lsn.0.to_le_bytes());
    let crc = crc32fast::hash(&b[..24]);
    b[24..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the header of the segment whose file name says `name_lsn`.
fn decode_segment_header(b: &[u8], name_lsn: Lsn) -> Result<SegmentHeader, String> {
    if b.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "incomplete segment header: {} of {SEGMENT_HEADER_BYTES} bytes",
            b.len()
        ));
    }
    if b[..8] == OLD_SEGMENT_MAGIC {
        return Err(
            "segment of the older format KVLWAL01, which this version does not read".to_owned(),
        );
    }
    if b[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".to_owned());
    }
    let stored_crc = u32_at(b, 24);
    let crc = crc32fast::hash(&b[..24]);
    if crc != stored_crc {
        return Err(format!(
            "segment header checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        ));
    }
    let h = SegmentHeader {
        first_lsn: Lsn(u64_at(b, 8)),
        prev_end_lsn: Lsn(u64_at(b, 16)),
    };
    if h.first_lsn != name_lsn {
        return Err(format!(
            "header says first lsn {}, file name says {name_lsn}",
            h.first_lsn
        ));
    }
    if h.prev_end_lsn < Lsn::FIRST || h.prev_end_lsn > h.first_lsn {
        return Err(format!(
            "header says the log before it ends at lsn {}, not in 1..={}",
            h.prev_end_lsn, h.first_lsn
        ));
    }
    Ok(h)
}

fn encode_trailer(next_lsn: Lsn) -> [u8; TRAILER_BYTES] {
    let mut b = [0u8; TRAILER_BYTES];
    b[..8].copy_from_slice(&TRAILER_MAGIC);
    b[8..16].copy_from_slice(&next_lsn.0.to_le_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the trailer at `off` of a segment whose records end before `expected`.
fn decode_trailer(b: &[u8], off: usize, expected: Lsn) -> Result<Lsn, String> {
    let left = b.len() - off;
    if left < TRAILER_BYTES {
        return Err(format!(
            "incomplete segment trailer: {left} of {TRAILER_BYTES} bytes"
        ));
    }
    let stored_crc = u32_at(b, off + 16);
    let crc = crc32fast::hash(&b[off..off + 16]);
    if crc != stored_crc {
        return Err(format!(
            "segment trailer checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        ));
    }
    let next = Lsn(u64_at(b, off + 8));
    if next < expected {
        return Err(format!(
            "trailer names lsn {next} as the next, but the segment's records end before {expected}"
        ));
    }
    if left > TRAILER_BYTES {
        return Err(format!(
            "segment trailer followed by {} more bytes",
            left - TRAILER_BYTES
        ));
    }
    Ok(next)
}

fn encode_state(s: &WalState) -> [u8; STATE_BYTES] {
    let mut b = [0u8; STATE_BYTES];
    let end = s.clean_end.unwrap_or(CleanEnd {
        segment_first_lsn: Lsn(0),
        len_bytes: 0,
        next_lsn: Lsn(0),
    });
    b[..8].copy_from_slice(&STATE_MAGIC);
    for (i, v) in [
        s.start_lsn.0,
        s.max_unsynced_bytes,
        end.segment_first_lsn.0,
        end.len_bytes,
        end.next_lsn.0,
    ]
    .into_iter()
    .enumerate()
    {
        b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[..48]);
    b[48..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_state(b: &[u8]) -> Result<WalState, String> {
    if b.len() != STATE_BYTES {
        return Err(format!("{} bytes, expected {STATE_BYTES}", b.len()));
    }
    if b[..8] != STATE_MAGIC {
        return Err("bad magic".to_owned());
    }
    let stored_crc = u32_at(b, 48);
    let crc = crc32fast::hash(&b[..48]);
    if crc != stored_crc {
        return Err(format!(
            "checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        ));
    }
    let start_lsn = Lsn(u64_at(b, 8));
    if start_lsn < Lsn::FIRST {
        return Err("start lsn 0".to_owned());
    }
    let end_next = Lsn(u64_at(b, 40));
    Ok(WalState {
        start_lsn,
        max_unsynced_bytes: u64_at(b, 16),
        clean_end: (end_next.0 != 0).then(|| CleanEnd {
            segment_first_lsn: Lsn(u64_at(b, 24)),
            len_bytes: u64_at(b, 32),
            next_lsn: end_next,
        }),
    })
}

/// Reads the state file: `None` if there is none, `Some(Err(why))` if it is unreadable.
fn read_state<V: Vfs>(vfs: &V, path: &Path) -> Result<Option<Result<WalState, String>>, WalError> {
    if !vfs.exists(path).map_err(io_err(path, "stat state file"))? {
        return Ok(None);
    }
    let bytes = vfs.read(path).map_err(io_err(path, "read state file"))?;
    Ok(Some(decode_state(&bytes)))
}

/// Durably and atomically replaces the state file with `s`.
fn write_state_file<V: Vfs>(vfs: &V, dir: &Path, s: &WalState) -> Result<(), WalError> {
    let tmp = dir.join(WAL_STATE_TEMP_FILE_NAME);
    let path = dir.join(WAL_STATE_FILE_NAME);
    let mut f = vfs
        .create(&tmp)
        .map_err(io_err(&tmp, "create temp state file"))?;
    f.write_all(&encode_state(s))
        .map_err(io_err(&tmp, "write temp state file"))?;
    f.sync_all()
        .map_err(io_err(&tmp, "fsync temp state file"))?;
    drop(f);
    vfs.rename(&tmp, &path)
        .map_err(io_err(&path, "rename temp state file into place"))?;
    vfs.sync_dir(dir).map_err(io_err(dir, "fsync directory"))
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

/// Whether the damaged tail `b[off..]` can be one record, larger than `bound`, that was
/// alone in the unsynced window: its header is intact enough to announce the expected
/// LSN and a length that covers the whole tail.
fn is_one_oversized_record(b: &[u8], off: usize, expected: Lsn, bound: u64) -> bool {
    if b.len() - off < RECORD_HEADER_BYTES {
        return false;
    }
    let len = u32_at(b, off) as usize;
    let framed = (RECORD_HEADER_BYTES + len) as u64;
    len <= MAX_RECORD_BYTES
        && u64_at(b, off + 8) == expected.0
        && framed > bound
        && (b.len() - off) as u64 <= framed
}

/// The result of reading one segment.
struct SegmentScan {
    /// The header, or why it is unreadable (then nothing else was read).
    header: Result<SegmentHeader, String>,
    /// The good records.
    records: Vec<(Lsn, Range<usize>)>,
    /// The offset after the last good record (the header's end if none).
    records_end: usize,
    /// The trailer's offset and the successor's first LSN.
    trailer: Option<(usize, Lsn)>,
    /// The first unreadable frame after the header: its offset and why.
    failure: Option<(usize, String)>,
}

fn scan_segment(b: &[u8], name_lsn: Lsn) -> SegmentScan {
    let mut scan = SegmentScan {
        header: decode_segment_header(b, name_lsn),
        records: Vec::new(),
        records_end: 0,
        trailer: None,
        failure: None,
    };
    let Ok(header) = scan.header else {
        return scan;
    };
    let mut off = SEGMENT_HEADER_BYTES;
    let mut expected = header.first_lsn;
    while off < b.len() {
        if b[off..].starts_with(&TRAILER_MAGIC) {
            match decode_trailer(b, off, expected) {
                Ok(next) => scan.trailer = Some((off, next)),
                Err(reason) => scan.failure = Some((off, reason)),
            }
            break;
        }
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
    scan.records_end = off;
    scan
}

/// Where the readable log ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LogEnd {
    /// Keep `segments[..=seg]`; cut `segments[seg]` at `offset` (its length: no cut).
    /// With `rewrite_header`, `offset` is 0 and the header is written anew.
    At {
        seg: usize,
        offset: u64,
        next_lsn: Lsn,
        rewrite_header: Option<SegmentHeader>,
    },
    /// Keep no segment; start a new one at `first_lsn`.
    Fresh { first_lsn: Lsn },
}

/// A damaged tail of the last segment: torn, or longer than a crash explains.
struct Tail {
    offset: usize,
    dropped_bytes: u64,
    reason: String,
    one_oversized_record: bool,
}

/// What reading the log found, before recovery decides what to do with it.
struct LogScan {
    records: Vec<(Lsn, Vec<u8>)>,
    /// Lengths of the segments read, by index.
    lens: Vec<u64>,
    end: LogEnd,
    /// The first damage, if any; `end` is then the point right before it.
    damage: Option<Damage>,
    /// A damaged tail of the last segment (judged against the bound by the caller).
    tail: Option<Tail>,
    /// A last segment no longer than a header, being created when power failed.
    torn_creation: Option<TornTail>,
    /// Segments that are not the last and have no (intact) trailer: (index, where their
    /// records end).
    missing_trailers: Vec<(usize, u64)>,
}

/// Reads every segment in order and finds where the readable log ends and the first
/// damage a crash cannot explain (apart from a damaged tail, which needs the bound).
/// Cuts the log where damage begins (`RecoveryMode::TruncateDamaged`): the segments
/// after it are renamed aside (kept for a person to look at), the records past the cut
/// dropped, and the cut reported in `out.damage_truncated`. Whether the directory changed.
fn cut_damage<V: Vfs>(
    vfs: &V,
    damage: Damage,
    scan: &mut LogScan,
    segments: &mut Vec<Segment>,
    clean_end: Option<CleanEnd>,
    out: &mut WalRecovery,
) -> Result<bool, WalError> {
    let mut set_aside = Vec::new();
    let mut dir_changed = false;
    let (kept, cut_at, next_lsn) = match &scan.end {
        LogEnd::At {
            seg,
            offset,
            next_lsn,
            ..
        } => (seg + 1, Some((*seg, *offset)), *next_lsn),
        LogEnd::Fresh { first_lsn } => (0, None, *first_lsn),
    };
    let mut bytes_dropped = 0;
    if let Some((seg, offset)) = cut_at {
        // What the cut removes now, or, if a clean close recorded this segment's
        // length, everything it held past the cut (part may be missing already).
        let recorded = clean_end
            .filter(|e| e.segment_first_lsn == segments[seg].first_lsn)
            .map_or(0, |e| e.len_bytes);
        bytes_dropped += scan.lens[seg].max(recorded).saturating_sub(offset);
    }
    for seg in &segments[kept..] {
        let bytes = vfs
            .read(&seg.path)
            .map_err(io_err(&seg.path, "read segment"))?;
        bytes_dropped += bytes.len() as u64;
        let mut aside = seg.path.clone().into_os_string();
        aside.push(DAMAGED_SEGMENT_SUFFIX);
        let aside = PathBuf::from(aside);
        vfs.rename(&seg.path, &aside)
            .map_err(io_err(&seg.path, "set damaged segment aside"))?;
        set_aside.push(aside);
        dir_changed = true;
    }
    segments.truncate(kept);
    out.damage_truncated.push(DamageTruncated {
        damage,
        bytes_dropped,
        records_dropped: clean_end.map(|e| e.next_lsn.0.saturating_sub(next_lsn.0)),
        segments_set_aside: set_aside,
    });
    let keep_below = next_lsn;
    out.records.clear();
    out.records.extend(
        std::mem::take(&mut scan.records)
            .into_iter()
            .filter(|(lsn, _)| *lsn < keep_below),
    );
    Ok(dir_changed)
}

/// Gives every segment but the last its trailer (a crash while rolling left some
/// without one), so that the loss of its successor stays detectable. Returns how many.
fn repair_trailers<V: Vfs>(
    vfs: &V,
    scan: &LogScan,
    segments: &[Segment],
    stats: &mut WalStats,
) -> Result<usize, WalError> {
    let mut repaired = 0;
    for &(i, records_end) in &scan.missing_trailers {
        if i + 1 >= segments.len() {
            continue;
        }
        let path = &segments[i].path;
        let mut f = vfs
            .open_append(path)
            .map_err(io_err(path, "open segment"))?;
        f.truncate(records_end)
            .map_err(io_err(path, "cut torn trailer"))?;
        f.write_all(&encode_trailer(segments[i + 1].first_lsn))
            .map_err(io_err(path, "write segment trailer"))?;
        f.sync_all()
            .map_err(io_err(path, "fsync segment trailer"))?;
        stats.file_syncs += 1;
        repaired += 1;
    }
    Ok(repaired)
}

/// Opens the segment appends go to: a new first segment for a fresh log, else the last
/// one, cut where the log ends (the cut synced) and its header rewritten if recovery
/// asks. Returns the file, its length and the next LSN.
fn open_active<V: Vfs>(
    vfs: &V,
    dir: &Path,
    scan: &LogScan,
    segments: &mut Vec<Segment>,
    stats: &mut WalStats,
    dir_changed: &mut bool,
) -> Result<(V::File, u64, Lsn), WalError> {
    Ok(match scan.end {
        LogEnd::Fresh { first_lsn } => {
            let path = dir.join(segment_file_name(first_lsn));
            let mut file = vfs.create(&path).map_err(io_err(&path, "create segment"))?;
            file.write_all(&encode_segment_header(SegmentHeader {
                first_lsn,
                prev_end_lsn: first_lsn,
            }))
            .map_err(io_err(&path, "write segment header"))?;
            file.sync_data().map_err(io_err(&path, "fsync segment"))?;
            stats.file_syncs += 1;
            stats.segments_created += 1;
            *dir_changed = true;
            *segments = vec![Segment { first_lsn, path }];
            (file, SEGMENT_HEADER_BYTES as u64, first_lsn)
        }
        LogEnd::At {
            seg,
            offset,
            next_lsn,
            rewrite_header,
        } => {
            segments.truncate(seg + 1);
            let path = &segments[seg].path;
            let mut file = vfs
                .open_append(path)
                .map_err(io_err(path, "open segment"))?;
            let mut len = scan.lens[seg];
            if offset < len {
                file.truncate(offset)
                    .map_err(io_err(path, "cut damaged tail"))?;
                len = offset;
            }
            if let Some(h) = rewrite_header {
                file.write_all(&encode_segment_header(h))
                    .map_err(io_err(path, "rewrite segment header"))?;
                len = SEGMENT_HEADER_BYTES as u64;
            }
            if len != scan.lens[seg] || rewrite_header.is_some() {
                file.sync_all().map_err(io_err(path, "fsync cut segment"))?;
                stats.file_syncs += 1;
            }
            (file, len, next_lsn)
        }
    })
}

/// A tail of the last segment that does not read: torn by a crash (at most
/// `tail_bound` unsynced bytes, or one oversized record), or damage beyond what a crash
/// explains, recorded in `scan.damage`. The torn tail to cut, if any.
fn judge_tail<V: Vfs>(
    vfs: &V,
    scan: &mut LogScan,
    segments: &[Segment],
    tail_bound: u64,
) -> Result<Option<TornTail>, WalError> {
    let mut torn_tail = scan.torn_creation.take();
    if scan.damage.is_none()
        && let Some(tail) = &mut scan.tail
        && let LogEnd::At { seg, next_lsn, .. } = scan.end
    {
        let path = &segments[seg].path;
        if tail.dropped_bytes > tail_bound {
            let bytes = vfs.read(path).map_err(io_err(path, "read segment"))?;
            tail.one_oversized_record =
                is_one_oversized_record(&bytes, tail.offset, next_lsn, tail_bound);
        }
        if tail.dropped_bytes <= tail_bound || tail.one_oversized_record {
            torn_tail = Some(TornTail {
                file: path.clone(),
                offset: tail.offset as u64,
                dropped_bytes: tail.dropped_bytes,
                reason: tail.reason.clone(),
            });
        } else {
            scan.damage = Some(Damage {
                file: path.clone(),
                offset: tail.offset as u64,
                kind: DamageKind::TailBeyondUnsyncedBound {
                    dropped_bytes: tail.dropped_bytes,
                    max_unsynced_bytes: tail_bound,
                    reason: tail.reason.clone(),
                },
            });
        }
    }
    Ok(torn_tail)
}

/// After a clean [`Wal::close`] recorded where the log ends, anything else is loss, to the
/// byte: records it in `scan.damage`. Whether the log ends exactly as recorded.
fn compare_clean_end(
    scan: &mut LogScan,
    segments: &[Segment],
    dir: &Path,
    clean_end: Option<CleanEnd>,
) -> bool {
    if scan.damage.is_none()
        && let LogEnd::At { seg, next_lsn, .. } = scan.end
        && let Some(end) = clean_end
    {
        // A clean close recorded the end: anything else is loss, to the byte.
        let last = &segments[seg];
        let len = scan.lens[seg];
        let offset = scan.tail.as_ref().map_or(len, |t| t.offset as u64);
        if last.first_lsn < end.segment_first_lsn {
            scan.damage = Some(Damage {
                file: dir.join(segment_file_name(end.segment_first_lsn)),
                offset: 0,
                kind: DamageKind::MissingSegment {
                    reason: format!(
                        "the log was closed cleanly ending in it ({} bytes, before lsn {}), \
                         but the last segment present is {}",
                        end.len_bytes,
                        end.next_lsn,
                        last.path.display()
                    ),
                },
            });
        } else if last.first_lsn != end.segment_first_lsn
            || scan.tail.is_some()
            || len != end.len_bytes
            || next_lsn != end.next_lsn
        {
            let reason = if last.first_lsn != end.segment_first_lsn {
                format!(
                    "it was closed ending in {}, but the last segment is {}",
                    segment_file_name(end.segment_first_lsn),
                    last.path.display()
                )
            } else {
                let mut r = format!(
                    "the segment was closed at {} bytes and is {len} bytes now",
                    end.len_bytes
                );
                if let Some(t) = &scan.tail {
                    r += &format!(", unreadable from byte {} ({})", t.offset, t.reason);
                }
                r
            };
            scan.damage = Some(Damage {
                file: last.path.clone(),
                offset,
                kind: DamageKind::CleanShutdownMismatch {
                    expected_next_lsn: end.next_lsn,
                    found_next_lsn: next_lsn,
                    reason,
                },
            });
        } else {
            return true;
        }
    }
    false
}

/// What recovery knows of the segment before the current one.
struct PrevSegment<'a> {
    path: &'a Path,
    records_end: u64,
    trailer: Option<(usize, Lsn)>,
    end_lsn: Lsn,
}

/// Whether [`read_log`] goes on to the next segment.
enum Next<'a> {
    /// Read on; this segment was fine up to its end.
    Segment(PrevSegment<'a>),
    /// Stop: `scan` says where the log ends and why.
    Stop,
}

/// One segment being judged by [`read_log`]: its index, whether it is the last, and
/// where the log ends if it is refused as a whole (after the previous segment).
struct Current<'a> {
    i: usize,
    seg: &'a Segment,
    is_last: bool,
    end_before: Option<LogEnd>,
}

fn read_log<V: Vfs>(
    vfs: &V,
    dir: &Path,
    segments: &[Segment],
    state: Option<&WalState>,
) -> Result<LogScan, WalError> {
    let mut scan = LogScan {
        records: Vec::new(),
        lens: Vec::new(),
        end: LogEnd::Fresh {
            first_lsn: state.map_or(Lsn::FIRST, |s| s.start_lsn),
        },
        damage: None,
        tail: None,
        torn_creation: None,
        missing_trailers: Vec::new(),
    };
    if let Some(st) = state {
        scan.damage = missing_start(dir, segments, st);
        if scan.damage.is_some() {
            return Ok(scan);
        }
    }
    let mut prev: Option<PrevSegment<'_>> = None;
    for (i, seg) in segments.iter().enumerate() {
        // The log is readable up to the end of the previous segment's records.
        let end_before = prev.as_ref().map(|p| LogEnd::At {
            seg: i - 1,
            offset: p.records_end,
            next_lsn: p.end_lsn,
            rewrite_header: None,
        });
        let cur = Current {
            i,
            seg,
            is_last: i + 1 == segments.len(),
            end_before,
        };
        match read_segment(vfs, dir, &mut scan, cur, prev.as_ref())? {
            Next::Segment(p) => prev = Some(p),
            Next::Stop => return Ok(scan),
        }
    }
    Ok(scan)
}

/// The state file says the log starts at `start_lsn`, but no segment starts there.
fn missing_start(dir: &Path, segments: &[Segment], st: &WalState) -> Option<Damage> {
    let oldest = segments.first().map(|s| s.first_lsn);
    if oldest.is_some_and(|f| f <= st.start_lsn) {
        return None;
    }
    let found = match oldest {
        None => "it has no segment at all".to_owned(),
        Some(f) => format!("its oldest segment starts at lsn {f}"),
    };
    Some(Damage {
        file: dir.join(segment_file_name(st.start_lsn)),
        offset: 0,
        kind: DamageKind::MissingSegment {
            reason: format!(
                "the log's state file says the log holds every record from lsn {} on, but {found}",
                st.start_lsn
            ),
        },
    })
}

/// Reads and judges one segment: its link to the previous one, its header, its records
/// and what ends them.
fn read_segment<'a, V: Vfs>(
    vfs: &V,
    dir: &Path,
    scan: &mut LogScan,
    cur: Current<'a>,
    prev: Option<&PrevSegment<'_>>,
) -> Result<Next<'a>, WalError> {
    let seg = cur.seg;
    if let Some(damage) = prev.and_then(|p| trailer_names_another(dir, p, seg)) {
        return Ok(stop_at(scan, damage, cur.end_before));
    }
    let bytes = vfs
        .read(&seg.path)
        .map_err(io_err(&seg.path, "read segment"))?;
    scan.lens.push(bytes.len() as u64);
    let s = scan_segment(&bytes, seg.first_lsn);
    let header = match s.header {
        Ok(h) => h,
        Err(reason) => {
            unreadable_header(scan, &cur, bytes.len(), prev, reason);
            return Ok(Next::Stop);
        }
    };
    if let Some(p) = prev
        && header.prev_end_lsn != p.end_lsn
    {
        let damage = Damage {
            file: dir.join(segment_file_name(p.end_lsn)),
            offset: 0,
            kind: DamageKind::MissingSegment {
                reason: format!(
                    "{} ends before lsn {}, but the next segment present, {}, says the log \
                     before it ends before lsn {}",
                    p.path.display(),
                    p.end_lsn,
                    seg.path.display(),
                    header.prev_end_lsn
                ),
            },
        };
        return Ok(stop_at(scan, damage, cur.end_before));
    }
    for (lsn, range) in &s.records {
        scan.records.push((*lsn, bytes[range.clone()].to_vec()));
    }
    let end_lsn = Lsn(header.first_lsn.0 + s.records.len() as u64);
    let records_end = s.records_end as u64;
    let end_here = LogEnd::At {
        seg: cur.i,
        offset: records_end,
        next_lsn: end_lsn,
        rewrite_header: None,
    };
    if let Some((o, reason)) = s.failure {
        if cur.is_last || s.trailer.is_some() || bytes.len() - o > TRAILER_BYTES {
            judge_failure(scan, &cur, &bytes, (o, reason), end_lsn);
            scan.end = end_here;
            return Ok(Next::Stop);
        }
        // A trailer a crash cut short while rolling; the next segment must carry on
        // where this one's records end (checked next).
        scan.missing_trailers.push((cur.i, records_end));
    } else if let Some((t_off, next)) = s.trailer {
        if cur.is_last {
            scan.damage = Some(Damage {
                file: dir.join(segment_file_name(next)),
                offset: 0,
                kind: DamageKind::MissingSegment {
                    reason: format!(
                        "the last segment present, {}, ends with a trailer at byte {t_off} \
                         naming it as the next segment",
                        seg.path.display()
                    ),
                },
            });
            scan.end = end_here;
            return Ok(Next::Stop);
        }
    } else if !cur.is_last {
        scan.missing_trailers.push((cur.i, records_end));
    }
    if cur.is_last {
        scan.end = LogEnd::At {
            seg: cur.i,
            offset: bytes.len() as u64,
            next_lsn: end_lsn,
            rewrite_header: None,
        };
    }
    Ok(Next::Segment(PrevSegment {
        path: &seg.path,
        records_end,
        trailer: s.trailer,
        end_lsn,
    }))
}

/// Records `damage` and ends the log before the segment it was found at.
fn stop_at<'a>(scan: &mut LogScan, damage: Damage, end_before: Option<LogEnd>) -> Next<'a> {
    scan.damage = Some(damage);
    if let Some(end) = end_before {
        scan.end = end;
    }
    Next::Stop
}

/// The previous segment's trailer names a successor other than `seg`: that one is gone.
fn trailer_names_another(dir: &Path, p: &PrevSegment<'_>, seg: &Segment) -> Option<Damage> {
    let (t_off, next) = p.trailer?;
    (seg.first_lsn != next).then(|| Damage {
        file: dir.join(segment_file_name(next)),
        offset: 0,
        kind: DamageKind::MissingSegment {
            reason: format!(
                "the trailer at byte {t_off} of {} names it as the next segment, but the next \
                 one present is {}",
                p.path.display(),
                seg.path.display()
            ),
        },
    })
}

/// A segment whose header cannot be read: a last segment no longer than a header that
/// no trailer names was being created (its header is rewritten); anything else is
/// damage.
fn unreadable_header(
    scan: &mut LogScan,
    cur: &Current<'_>,
    len: usize,
    prev: Option<&PrevSegment<'_>>,
    reason: String,
) {
    let seg = cur.seg;
    let expected = prev.map_or(seg.first_lsn, |p| p.end_lsn);
    let being_created = cur.is_last
        && len <= SEGMENT_HEADER_BYTES
        && prev.is_none_or(|p| p.trailer.is_none())
        && seg.first_lsn >= expected;
    if being_created {
        scan.torn_creation = Some(TornTail {
            file: seg.path.clone(),
            offset: 0,
            dropped_bytes: len as u64,
            reason,
        });
        scan.end = LogEnd::At {
            seg: cur.i,
            offset: 0,
            next_lsn: seg.first_lsn,
            rewrite_header: Some(SegmentHeader {
                first_lsn: seg.first_lsn,
                prev_end_lsn: expected,
            }),
        };
        return;
    }
    scan.damage = Some(Damage {
        file: seg.path.clone(),
        offset: 0,
        kind: DamageKind::SegmentHeader {
            file_len_bytes: len as u64,
            reason,
        },
    });
    scan.end = cur.end_before.clone().unwrap_or(LogEnd::At {
        seg: 0,
        offset: 0,
        next_lsn: seg.first_lsn,
        rewrite_header: Some(SegmentHeader {
            first_lsn: seg.first_lsn,
            prev_end_lsn: seg.first_lsn,
        }),
    });
}

/// The first unreadable frame at byte `o` of a segment: damage in a segment that is not
/// the last, or with a valid record after it; otherwise a tail the caller judges
/// against the unsynced bound.
fn judge_failure(
    scan: &mut LogScan,
    cur: &Current<'_>,
    bytes: &[u8],
    (o, reason): (usize, String),
    end_lsn: Lsn,
) {
    let corrupt = |reason: String| Damage {
        file: cur.seg.path.clone(),
        offset: o as u64,
        kind: DamageKind::Corrupt { reason },
    };
    if !cur.is_last {
        scan.damage = Some(corrupt(format!(
            "{reason} (in a segment that is not the last one)"
        )));
    } else if let Some((p, lsn)) = find_valid_record_after(bytes, o + 1, end_lsn) {
        scan.damage = Some(corrupt(format!(
            "{reason}; a valid record (lsn {lsn}) follows at byte {p}, so this is not a torn tail"
        )));
    } else {
        scan.tail = Some(Tail {
            offset: o,
            dropped_bytes: (bytes.len() - o) as u64,
            reason,
            one_oversized_record: false,
        });
    }
}

/// Under strict recovery, `damage` refuses the log; otherwise it is noted as cut.
fn refuse_or_note(strict: bool, out: &mut WalRecovery, damage: Damage) -> Result<(), WalError> {
    if strict {
        return Err(WalError::Damaged(damage));
    }
    out.damage_truncated.push(DamageTruncated {
        damage,
        bytes_dropped: 0,
        records_dropped: None,
        segments_set_aside: Vec::new(),
    });
    Ok(())
}

/// The segment files in `dir` in LSN order, and apart from them the segments a crash in
/// the middle of `truncate_prefix` left behind (every record in them is below the
/// recorded start; removed once recovery proceeds).
fn list_segments<V: Vfs>(
    vfs: &V,
    dir: &Path,
    state: Option<&WalState>,
) -> Result<(Vec<Segment>, Vec<Segment>), WalError> {
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
    let mut leftovers = Vec::new();
    if let Some(st) = state {
        while segments.len() > 1 && segments[1].first_lsn <= st.start_lsn {
            leftovers.push(segments.remove(0));
        }
    }
    Ok((segments, leftovers))
}

/// A log without a state file: nothing but a crash at the very creation of the log
/// leaves segments without one, and then the only segment holds at most a header.
fn state_file_missing(state_path: &Path, segments: &[Segment], scan: &LogScan) -> Option<Damage> {
    let first_len = scan.lens.first().copied().unwrap_or(0);
    if segments.len() <= 1 && first_len <= SEGMENT_HEADER_BYTES as u64 {
        return None;
    }
    Some(Damage {
        file: state_path.to_path_buf(),
        offset: 0,
        kind: DamageKind::State {
            reason: format!(
                "missing, but the log holds {} segment(s) ({first_len} bytes in the first)",
                segments.len(),
            ),
        },
    })
}

/// Removes the segments [`list_segments`] set apart; whether the directory changed.
fn remove_leftovers<V: Vfs>(
    vfs: &V,
    leftovers: &[Segment],
    out: &mut WalRecovery,
) -> Result<bool, WalError> {
    let mut changed = false;
    for seg in leftovers {
        match vfs.remove_file(&seg.path) {
            Ok(()) => {
                out.leftover_segments_removed += 1;
                changed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&seg.path, "remove leftover segment")(e)),
        }
    }
    Ok(changed)
}

impl<V: Vfs> Wal<V> {
    /// Opens (or creates) the log in `dir` and recovers its records.
    ///
    /// Reads every segment in LSN order and verifies every checksum, the links between
    /// segments and, after a clean [`Wal::close`], the recorded end. A torn tail of the
    /// last segment is cut off and the cut is synced (reported in
    /// [`WalRecovery::torn_tail`]). Damage a crash cannot explain is refused with
    /// [`WalError::Damaged`] naming the file and byte offset, leaving the files as they
    /// are, or under [`RecoveryMode::TruncateDamaged`] cut off and reported in
    /// [`WalRecovery::damage_truncated`]. Files in `dir` whose names are not segment
    /// names are ignored. Every returned record was durable.
    pub fn open(
        vfs: V,
        dir: &Path,
        options: &StorageOptions,
    ) -> Result<(Wal<V>, WalRecovery), WalError> {
        options.validate()?;
        vfs.create_dir_all(dir)
            .map_err(io_err(dir, "create directory"))?;
        let strict = options.recovery == RecoveryMode::Strict;
        let mut out = WalRecovery::default();
        let state_path = dir.join(WAL_STATE_FILE_NAME);
        let state = match read_state(&vfs, &state_path)? {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(reason)) => {
                let damage = Damage {
                    file: state_path.clone(),
                    offset: 0,
                    kind: DamageKind::State { reason },
                };
                refuse_or_note(strict, &mut out, damage)?;
                None
            }
        };
        let (mut segments, leftovers) = list_segments(&vfs, dir, state.as_ref())?;
        let mut scan = read_log(&vfs, dir, &segments, state.as_ref())?;
        if state.is_none()
            && out.damage_truncated.is_empty()
            && let Some(damage) = state_file_missing(&state_path, &segments, &scan)
        {
            refuse_or_note(strict, &mut out, damage)?;
        }
        let clean_end = state.and_then(|s| s.clean_end);
        out.clean_shutdown = compare_clean_end(&mut scan, &segments, dir, clean_end);
        let tail_bound = state.map_or(UNBOUNDED, |s| s.max_unsynced_bytes);
        let torn_tail = judge_tail(&vfs, &mut scan, &segments, tail_bound)?;

        // Decided. From here on, files change.
        let mut dir_changed = match scan.damage.take() {
            Some(damage) if strict => return Err(WalError::Damaged(damage)),
            Some(damage) => {
                cut_damage(&vfs, damage, &mut scan, &mut segments, clean_end, &mut out)?
            }
            None => {
                out.records = std::mem::take(&mut scan.records);
                false
            }
        };
        out.torn_tail = torn_tail;
        dir_changed |= remove_leftovers(&vfs, &leftovers, &mut out)?;

        let bound = if options.fsync == FsyncPolicy::Never {
            UNBOUNDED
        } else {
            options.max_unsynced_bytes
        };
        let mut stats = WalStats::default();
        let (file, active_len_bytes, next_lsn) = open_active(
            &vfs,
            dir,
            &scan,
            &mut segments,
            &mut stats,
            &mut dir_changed,
        )?;
        if options.fsync != FsyncPolicy::Never {
            out.trailers_repaired += repair_trailers(&vfs, &scan, &segments, &mut stats)?;
        }
        if dir_changed {
            vfs.sync_dir(dir).map_err(io_err(dir, "fsync directory"))?;
            stats.dir_syncs += 1;
        }

        let new_state = WalState {
            start_lsn: match (&state, out.damage_truncated.is_empty()) {
                (Some(s), true) => s.start_lsn,
                _ => segments[0].first_lsn,
            },
            max_unsynced_bytes: bound,
            clean_end: None,
        };
        if state != Some(new_state) {
            // Before any append: clears the clean-shutdown record and records the bound
            // the tail is written under from now on.
            write_state_file(&vfs, dir, &new_state)?;
            stats.state_writes += 1;
        }
        let wal = Wal {
            vfs,
            dir: dir.to_path_buf(),
            fsync: options.fsync,
            segment_size_bytes: options.segment_size_bytes,
            max_unsynced_bytes: bound,
            segments,
            file,
            active_len_bytes,
            unsynced_bytes: 0,
            buf: Vec::new(),
            next_lsn,
            data_unsynced: false,
            dir_unsynced: false,
            state: new_state,
            poisoned: None,
            closed: false,
            stats,
        };
        Ok((wal, out))
    }

    /// Appends one record and returns its LSN.
    ///
    /// Durability: under [`FsyncPolicy::Always`] the record is durable when this
    /// returns; otherwise it is buffered and becomes durable at the next [`Wal::sync`]
    /// (never, under [`FsyncPolicy::Never`]), or earlier: if the record would leave more
    /// than `max_unsynced_bytes` unsynced, what is pending is synced first. A payload
    /// over [`MAX_RECORD_BYTES`] is refused and leaves the log unchanged. The segment is
    /// rolled first if the record (and the trailer) would push it past
    /// `segment_size_bytes` (a record alone in a segment may exceed it).
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, WalError> {
        self.check_usable()?;
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge {
                len_bytes: payload.len(),
                max_bytes: MAX_RECORD_BYTES,
            });
        }
        let record_bytes = (RECORD_HEADER_BYTES + payload.len()) as u64;
        if self.active_len_bytes > SEGMENT_HEADER_BYTES as u64
            && self.active_len_bytes + record_bytes + TRAILER_BYTES as u64 > self.segment_size_bytes
        {
            let r = self.roll_to(self.next_lsn);
            self.poison_on_err(r)?;
        }
        if self.fsync == FsyncPolicy::Batch
            && self.unsynced_bytes > 0
            && self.unsynced_bytes + record_bytes > self.max_unsynced_bytes
        {
            // Keep the unsynced window within the bound recovery relies on.
            let r = self.sync_inner();
            self.poison_on_err(r)?;
            self.stats.bound_syncs += 1;
        }
        let lsn = self.next_lsn;
        encode_record(&mut self.buf, lsn, payload);
        self.next_lsn = lsn.next();
        self.active_len_bytes += record_bytes;
        self.unsynced_bytes += record_bytes;
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
        self.check_usable()?;
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
            self.unsynced_bytes = 0;
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

    /// Closes the active segment and starts a new one whose first record will be
    /// `first_lsn` (`next_lsn`, or later to skip ahead). Unless the policy is `Never`:
    /// the old segment is synced, the new one's header and name are made durable, and
    /// only then the old segment gets its trailer, synced (see the write order).
    fn roll_to(&mut self, first_lsn: Lsn) -> Result<(), WalError> {
        debug_assert!(first_lsn >= self.next_lsn);
        let durable = self.fsync != FsyncPolicy::Never;
        self.flush_buf()?;
        if durable && self.data_unsynced {
            let path = &self.segments[self.segments.len() - 1].path;
            self.file
                .sync_data()
                .map_err(io_err(path, "fsync segment"))?;
            self.stats.file_syncs += 1;
            self.data_unsynced = false;
        }
        let path = self.dir.join(segment_file_name(first_lsn));
        let mut file = self
            .vfs
            .create(&path)
            .map_err(io_err(&path, "create segment"))?;
        self.stats.segments_created += 1;
        file.write_all(&encode_segment_header(SegmentHeader {
            first_lsn,
            prev_end_lsn: self.next_lsn,
        }))
        .map_err(io_err(&path, "write segment header"))?;
        let old_path = self.segments[self.segments.len() - 1].path.clone();
        let mut old = std::mem::replace(&mut self.file, file);
        self.segments.push(Segment { first_lsn, path });
        self.active_len_bytes = SEGMENT_HEADER_BYTES as u64;
        self.next_lsn = first_lsn;
        self.unsynced_bytes = 0;
        if durable {
            let path = &self.segments[self.segments.len() - 1].path;
            self.file
                .sync_data()
                .map_err(io_err(path, "fsync segment header"))?;
            self.stats.file_syncs += 1;
            self.vfs
                .sync_dir(&self.dir)
                .map_err(io_err(&self.dir, "fsync directory"))?;
            self.stats.dir_syncs += 1;
            self.dir_unsynced = false;
            old.write_all(&encode_trailer(first_lsn))
                .map_err(io_err(&old_path, "write segment trailer"))?;
            old.sync_data()
                .map_err(io_err(&old_path, "fsync segment trailer"))?;
            self.stats.file_syncs += 1;
        } else {
            self.data_unsynced = true;
            self.dir_unsynced = true;
        }
        Ok(())
    }

    /// Removes every whole segment whose records all have LSNs below `upto` (used after
    /// a snapshot covers them). The active segment is never removed. Returns how many
    /// segments were removed. The new start is recorded durably in the state file first;
    /// the removals become durable at the next [`Wal::sync`], and a crash before that may
    /// bring some back, which recovery removes again.
    pub fn truncate_prefix(&mut self, upto: Lsn) -> Result<usize, WalError> {
        self.check_usable()?;
        let mut k = 0;
        while k + 1 < self.segments.len() && self.segments[k + 1].first_lsn <= upto {
            k += 1;
        }
        if k == 0 {
            return Ok(0);
        }
        self.write_state(WalState {
            start_lsn: self.segments[k].first_lsn,
            ..self.state
        })?;
        for seg in self.segments.drain(..k) {
            match self.vfs.remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&seg.path, "remove segment")(e)),
            }
            self.dir_unsynced = true;
            self.stats.segments_removed += 1;
        }
        Ok(k)
    }

    /// Continues the log at `lsn` (above [`Wal::next_lsn`]), keeping every record it
    /// holds: a new segment starts at `lsn`, its header saying where the records before
    /// it end. Used when a snapshot is ahead of what the log kept (the records in
    /// between were unsynced and lost). Durable when it returns, unless the policy is
    /// `Never`.
    pub(crate) fn skip_to(&mut self, lsn: Lsn) -> Result<(), WalError> {
        self.check_usable()?;
        if lsn <= self.next_lsn {
            return Ok(());
        }
        let r = self.roll_to(lsn);
        self.poison_on_err(r)
    }

    /// Closes the log cleanly: makes every record durable and records in the state file
    /// where the log ends, so that the next [`Wal::open`] verifies the log is exactly as
    /// it was left and refuses any shortfall (a truncated or zeroed tail, a missing
    /// segment) however small. Afterwards the log refuses further work
    /// ([`WalError::Closed`]). Under [`FsyncPolicy::Never`] it only writes the buffer to
    /// the OS and records no end.
    pub fn close(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        let r = self.close_inner();
        self.poison_on_err(r)?;
        self.closed = true;
        Ok(())
    }

    fn close_inner(&mut self) -> Result<(), WalError> {
        self.sync_inner()?;
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        self.write_state(WalState {
            clean_end: Some(CleanEnd {
                segment_first_lsn: self.segments[self.segments.len() - 1].first_lsn,
                len_bytes: self.active_len_bytes,
                next_lsn: self.next_lsn,
            }),
            ..self.state
        })
    }

    fn write_state(&mut self, state: WalState) -> Result<(), WalError> {
        write_state_file(&self.vfs, &self.dir, &state)?;
        self.state = state;
        self.stats.state_writes += 1;
        self.stats.dir_syncs += 1;
        // The directory sync made every pending creation and removal durable too.
        self.dir_unsynced = false;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.closed {
            return Err(WalError::Closed {
                dir: self.dir.clone(),
            });
        }
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
        assert_eq!(parse_segment_name(WAL_STATE_FILE_NAME), None);
        assert_eq!(
            parse_segment_name(&format!("{b}{DAMAGED_SEGMENT_SUFFIX}")),
            None
        );
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
        assert!(decode_segment_header(&zeros, Lsn(0)).is_err());
        assert!(decode_state(&zeros[..STATE_BYTES]).is_err());
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

    #[test]
    fn headers_trailers_and_state_round_trip_and_a_flipped_bit_is_caught() {
        let h = SegmentHeader {
            first_lsn: Lsn(40),
            prev_end_lsn: Lsn(33),
        };
        let hb = encode_segment_header(h);
        assert_eq!(decode_segment_header(&hb, Lsn(40)), Ok(h));
        assert!(
            decode_segment_header(&hb, Lsn(41)).is_err(),
            "name mismatch"
        );
        let tb = encode_trailer(Lsn(40));
        assert_eq!(decode_trailer(&tb, 0, Lsn(40)), Ok(Lsn(40)));
        assert!(
            decode_trailer(&tb, 0, Lsn(41)).is_err(),
            "names an lsn it holds"
        );
        let s = WalState {
            start_lsn: Lsn(3),
            max_unsynced_bytes: 1 << 20,
            clean_end: Some(CleanEnd {
                segment_first_lsn: Lsn(7),
                len_bytes: 4000,
                next_lsn: Lsn(90),
            }),
        };
        let sb = encode_state(&s);
        assert_eq!(decode_state(&sb), Ok(s));
        let open = WalState {
            clean_end: None,
            ..s
        };
        assert_eq!(decode_state(&encode_state(&open)), Ok(open));
        for bytes in [&hb[..], &tb[..], &sb[..]] {
            for bit in 0..bytes.len() * 8 {
                let mut c = bytes.to_vec();
                c[bit / 8] ^= 1 << (bit % 8);
                let caught = match bytes.len() {
                    SEGMENT_HEADER_BYTES => decode_segment_header(&c, Lsn(40)).is_err(),
                    TRAILER_BYTES => decode_trailer(&c, 0, Lsn(40)).is_err(),
                    _ => decode_state(&c).is_err(),
                };
                assert!(caught, "{} bytes, bit {bit}", bytes.len());
            }
        }
    }

    #[test]
    fn a_trailer_never_decodes_as_a_record() {
        let mut b = encode_trailer(Lsn(1)).to_vec();
        b.extend_from_slice(&[0u8; 64]);
        assert!(u32_at(&b, 0) as usize > MAX_RECORD_BYTES);
        assert!(decode_record(&b, 0, Lsn(1)).is_err());
    }
}
