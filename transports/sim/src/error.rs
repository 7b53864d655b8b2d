//! The one error type of the simulator's public API.

use kvlab_types::{NodeId, Time};

/// Why a simulator call failed. Protocol misbehaviour (a message to an unknown node, a
/// reply nobody waits for) is never an error: it is a counted drop in
/// [`crate::SimStats`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A configuration value is out of range; `field` is its dotted path
    /// (`network.latency.max_ms`).
    #[error("invalid simulator config: {field}: {reason}")]
    InvalidConfig {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The run processed `max_events` events and was stopped before the next one.
    #[error(
        "event budget exhausted: {max_events} events processed by virtual time {at} (raise max_events or look for a livelock)"
    )]
    EventBudgetExhausted {
        /// The configured budget.
        max_events: u64,
        /// The virtual time of the event that would have exceeded it.
        at: Time,
    },
    /// [`crate::Sim::new`] was given no node.
    #[error("a simulation needs at least one node")]
    NoNodes,
    /// [`crate::Sim::new`] was given the same node id twice.
    #[error("node {0} is listed twice")]
    DuplicateNode(NodeId),
    /// The node id is not part of this simulation.
    #[error("node {0} is not part of this simulation")]
    UnknownNode(NodeId),
    /// [`crate::Sim::restart`] was called on a node that is up.
    #[error("node {0} cannot restart: it is up (crash it first)")]
    NodeNotCrashed(NodeId),
    /// [`crate::Sim::start`] was called on a node that already booted once.
    #[error("node {0} cannot start: it already booted once (restart it instead)")]
    AlreadyStarted(NodeId),
    /// [`crate::Sim::restart`] was called on an absent node that never booted.
    #[error("node {0} cannot restart: it never started (start it first)")]
    NeverStarted(NodeId),
    /// [`crate::Sim::run_until`] was asked to run to a time before the current one.
    #[error("deadline {deadline} is before the current virtual time {now}")]
    DeadlineInPast {
        /// The current virtual time.
        now: Time,
        /// The requested deadline.
        deadline: Time,
    },
    /// The node's simulated storage could not be opened or recovered (for instance a
    /// log damaged beyond a torn tail, which `fsync = "never"` can produce).
    #[error("storage of node {node}: {source}")]
    Storage {
        /// The node whose storage failed.
        node: NodeId,
        /// What the storage layer reported (it names the file).
        #[source]
        source: kvlab_storage::StorageError,
    },
}

impl SimError {
    /// Shorthand for [`SimError::InvalidConfig`].
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SimError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
