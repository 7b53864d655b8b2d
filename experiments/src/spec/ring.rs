//! `[ring_experiment]`: the bounds a `system = "kvlab"` run's ring measurements must
//! meet (see [`crate::observe::ring`]); a bound missed fails the run (exit status 1).

use serde::{Deserialize, Serialize};

/// The `[ring_experiment]` table.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RingExperimentSpec {
    /// Fail the run if more replicas than this were created by moves (a new replica on
    /// a node that did not hold the vnode: data moved). `0` states "nothing flaps".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_moved: Option<u64>,
    /// Fail the run unless at least this many replica-moving operators finished (joins,
    /// drains and replacements must get done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replica_operators_done: Option<u64>,
    /// Fail the run if more operators than this are neither done nor cancelled at the
    /// end (`0`: every operator, even one whose meta leader died mid-way, completed or
    /// was cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_operators_unfinished: Option<u64>,
    /// Fail the run if groups are still under-replicated at the end (simulator only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_under_replicated_final: Option<u64>,
    /// Fail the run unless meta's directory was found equal to every group's applied
    /// configuration at least this many times (simulator only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_directory_checks: Option<u64>,
}
