//! Time and memory budgets shared by both search engines, and the hook that lets the
//! race stop porcupine-rs from outside.
//!
//! porcupine-rs has no cancellation but its own timeout (which costs a thread per call),
//! and no memory bound at all. Its search calls the model's `step` for every move, so the
//! checker's models call `porcupine_poll` first: when the search runs under a
//! `run_porcupine_guarded` guard and the guard is tripped (the other engine answered,
//! the deadline passed, or the process outgrew the memory budget), every step is refused
//! and the search unwinds within a few steps per level. The guard remembers why, so a
//! verdict produced after a trip is never believed.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Steps between two looks at the cancel flag and the clock.
pub const POLL_EVERY_STEPS: u32 = 1 << 10;

/// Steps between two reads of the process's resident memory (a file read: ~10 µs).
pub const MEMORY_POLL_EVERY_STEPS: u32 = 1 << 16;

/// Why a search stopped before deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The other engine answered first (or the caller gave up).
    Cancelled,
    /// The time budget ran out.
    Deadline,
    /// The process's resident memory passed the memory budget.
    Memory,
    /// Another key of the same check was found invalid, so the verdict is known.
    Aborted,
}

/// The limits a search runs under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits<'a> {
    /// Stop at this instant.
    pub deadline: Option<Instant>,
    /// Stop when the process's resident set exceeds this many bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Stop when this flag is set (the race's rival answered).
    pub cancel: Option<&'a AtomicBool>,
    /// Stop when this flag is set (another key of the check is invalid).
    pub abort: Option<&'a AtomicBool>,
}

impl Limits<'_> {
    /// Whether the cancel flag or the deadline says stop.
    pub(crate) fn poll_fast(&self) -> Option<StopReason> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Some(StopReason::Cancelled);
        }
        if self.abort.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Some(StopReason::Aborted);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(StopReason::Deadline);
        }
        None
    }

    /// Whether the process is over the memory budget.
    pub(crate) fn poll_memory(&self) -> Option<StopReason> {
        let limit = self.memory_limit_bytes?;
        (resident_bytes()? > limit).then_some(StopReason::Memory)
    }
}

/// The resident set size of this process, from `/proc/self/status` (`None` where that
/// file does not exist).
pub fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// The peak resident set size of this process (`VmHWM`), for benchmarks and reports.
pub fn peak_resident_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Guard {
    deadline: Option<Instant>,
    memory_limit_bytes: Option<u64>,
    cancel: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    steps: u32,
    stopped: Option<StopReason>,
}

thread_local! {
    static GUARD: RefCell<Option<Guard>> = const { RefCell::new(None) };
}

/// Called by the models' `step`: true when the guarded porcupine search on this thread
/// must stop. Without a guard (the kvlab engine, or porcupine called plainly) it is one
/// thread-local read.
pub(crate) fn porcupine_poll() -> bool {
    GUARD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let Some(g) = slot.as_mut() else {
            return false;
        };
        if g.stopped.is_some() {
            return true;
        }
        g.steps = g.steps.wrapping_add(1);
        if g.steps % POLL_EVERY_STEPS == 0 {
            let limits = Limits {
                deadline: g.deadline,
                memory_limit_bytes: g.memory_limit_bytes,
                cancel: Some(&g.cancel),
                abort: Some(&g.abort),
            };
            g.stopped = limits.poll_fast();
            if g.stopped.is_none() && g.steps % MEMORY_POLL_EVERY_STEPS == 0 {
                g.stopped = limits.poll_memory();
            }
        }
        g.stopped.is_some()
    })
}

/// Runs `search` (a porcupine-rs call on this thread, without porcupine's own timeout)
/// under `deadline`, `memory_limit_bytes` and `cancel`. Returns its result and, if the
/// guard tripped, why — in which case the result is meaningless.
pub(crate) fn run_porcupine_guarded<R>(
    deadline: Option<Instant>,
    memory_limit_bytes: Option<u64>,
    cancel: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    search: impl FnOnce() -> R,
) -> (R, Option<StopReason>) {
    GUARD.with(|cell| {
        *cell.borrow_mut() = Some(Guard {
            deadline,
            memory_limit_bytes,
            cancel,
            abort,
            steps: 0,
            stopped: None,
        });
    });
    let result = search();
    let stopped = GUARD.with(|cell| cell.borrow_mut().take().and_then(|g| g.stopped));
    (result, stopped)
}
