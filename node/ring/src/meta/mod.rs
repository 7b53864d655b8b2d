//! The metadata group's state machine and scheduler (wave 2 §1.2 P3, §2.2).
//!
//! The meta group is one more Raft group in the composed node (group [`crate::META_GROUP`],
//! voters `meta.voters`). Its log holds [`MetaEntry`]s; every replica applies them to a
//! [`MetaState`] with [`MetaState::apply`], deterministically. Its snapshot is the whole
//! state ([`MetaState::encode_snapshot`]). The meta *leader* also runs a [`Scheduler`],
//! which reads the state plus its own volatile observations (SWIM, store heartbeats) and
//! proposes commands.
//!
//! Meta holds **intent and directory**, never the safety truth: a group's membership
//! changes only through its own log, with the epoch precondition carried by every
//! [`crate::StepCommand`]; meta records what groups report (newest epoch wins, older
//! reports are ignored as PD's `check` does).

mod command;
mod report;
mod scheduler;
mod state;

pub use command::{
    Ignored, MAX_ADDRESS_BYTES, MAX_DESCRIPTOR_NODES, MAX_META_ENTRY_BYTES,
    MAX_META_SNAPSHOT_BYTES, META_FORMAT_VERSION, MetaCmd, MetaCodecError, MetaEntry, MetaOutcome,
    MetaReject,
};
pub use report::{LedGroup, MAX_DOWN_PEERS_PER_GROUP, ReportError, StoreReport, SwimStatus};
pub use scheduler::{
    PROPOSAL_RESEND_INTERVALS, REPORT_FRESH_HEARTBEATS, Scheduler, SchedulerCounters,
    SwimObservation, hold_reason_name, swim_observation,
};
pub use state::{
    DescriptorRecord, FINISHED_OPERATORS_KEPT, Member, MetaCounters, MetaInitError, MetaState,
    NodeState,
};

#[cfg(test)]
mod tests;
