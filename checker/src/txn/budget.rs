//! The time and memory budget of one transaction check: every loop of the checker ticks
//! it, and it looks at the clock every [`TICKS_PER_CLOCK_LOOK`] ticks and at the
//! process's resident memory every [`TICKS_PER_MEMORY_LOOK`]. A check that runs out
//! answers `unknown`, never valid.

use std::time::Instant;

/// Ticks between two looks at the clock.
pub const TICKS_PER_CLOCK_LOOK: u32 = 1 << 12;

/// Ticks between two reads of the resident memory (a read of `/proc/self/status`).
pub const TICKS_PER_MEMORY_LOOK: u32 = 1 << 18;

/// Why a check stopped before it could decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The time budget ran out.
    Deadline,
    /// The process's resident memory passed the memory budget.
    Memory,
}

impl Stop {
    /// Why, for a report.
    pub fn reason(self) -> &'static str {
        match self {
            Stop::Deadline => "the time budget ran out",
            Stop::Memory => "the memory budget ran out",
        }
    }
}

/// The limits one check runs under.
#[derive(Clone, Debug)]
pub struct Budget {
    deadline: Option<Instant>,
    memory_limit_bytes: Option<u64>,
    ticks: u32,
}

impl Budget {
    /// A budget ending at `deadline` and at `memory_limit_bytes` of resident memory.
    pub fn new(deadline: Option<Instant>, memory_limit_bytes: Option<u64>) -> Budget {
        Budget {
            deadline,
            memory_limit_bytes,
            ticks: 0,
        }
    }

    /// No limit.
    pub fn unlimited() -> Budget {
        Budget::new(None, None)
    }

    /// Looks at both limits now.
    pub fn check_now(&self) -> Result<(), Stop> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Deadline);
        }
        if let Some(limit) = self.memory_limit_bytes
            && crate::budget::resident_bytes().is_some_and(|r| r > limit)
        {
            return Err(Stop::Memory);
        }
        Ok(())
    }

    /// One step of work: an error once a limit is passed.
    pub fn tick(&mut self) -> Result<(), Stop> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % TICKS_PER_CLOCK_LOOK == 0
            && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Err(Stop::Deadline);
        }
        if self.ticks % TICKS_PER_MEMORY_LOOK == 0 {
            return self.check_now();
        }
        Ok(())
    }
}
