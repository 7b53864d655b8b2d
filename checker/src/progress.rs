//! Counters a long check updates as it goes, for a progress line drawn by someone else
//! (the `kvlab` binary draws one on stderr; the checker itself never prints).
//!
//! The reader and the search workers store into atomics; a display thread reads a
//! [`ProgressSnapshot`] whenever it likes. Nothing waits on anything.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// What a check is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressPhase {
    /// Reading the history (operations are being counted).
    Reading,
    /// Searching the keys (keys are being decided).
    Checking,
    /// Finished.
    Done,
}

/// Counters of a check in progress; share one between the check and a display thread.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    events_read: AtomicU64,
    operations_read: AtomicU64,
    keys_total: AtomicU64,
    keys_decided: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// What the check is doing.
    pub phase: ProgressPhase,
    /// Events (lines with an event) read so far.
    pub events_read: u64,
    /// Operations (invokes) read so far.
    pub operations_read: u64,
    /// Keys (or key groups) to search; 0 until reading is done.
    pub keys_total: u64,
    /// Keys whose search has ended (with any answer).
    pub keys_decided: u64,
}

const PHASE_READING: u8 = 0;
const PHASE_CHECKING: u8 = 1;
const PHASE_DONE: u8 = 2;

impl Progress {
    /// Fresh counters, in the reading phase.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            phase: match self.phase.load(Ordering::Relaxed) {
                PHASE_READING => ProgressPhase::Reading,
                PHASE_CHECKING => ProgressPhase::Checking,
                _ => ProgressPhase::Done,
            },
            events_read: self.events_read.load(Ordering::Relaxed),
            operations_read: self.operations_read.load(Ordering::Relaxed),
            keys_total: self.keys_total.load(Ordering::Relaxed),
            keys_decided: self.keys_decided.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_read(&self, events: u64, operations: u64) {
        self.events_read.store(events, Ordering::Relaxed);
        self.operations_read.store(operations, Ordering::Relaxed);
    }

    pub(crate) fn start_checking(&self, keys: usize) {
        self.keys_total.store(keys as u64, Ordering::Relaxed);
        self.keys_decided.store(0, Ordering::Relaxed);
        self.phase.store(PHASE_CHECKING, Ordering::Relaxed);
    }

    pub(crate) fn key_decided(&self) {
        self.keys_decided.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self) {
        self.phase.store(PHASE_DONE, Ordering::Relaxed);
    }
}
