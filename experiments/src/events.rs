//! `events.jsonl`: what happened to the cluster during a run, one JSON object per line —
//! faults the nemesis injected and healed, events nodes reported (leader changes,
//! membership changes), and the runner's phases.
//!
//! ```text
//! {"time_ns":5000000000,"source":"nemesis","kind":"fault_start","fault_id":1,"fault":"partition","detail":"[n1 n2] | [n3 n4 n5]"}
//! {"time_ns":8000000000,"source":"nemesis","kind":"fault_end","fault_id":1,"fault":"partition","detail":"healed"}
//! {"time_ns":8100000000,"source":"node","node":3,"kind":"leader_elected","detail":"term=4"}
//! {"time_ns":60000000000,"source":"runner","kind":"phase","detail":"liveness"}
//! ```
//!
//! A fault period is the interval between a `fault_start` and the `fault_end` with the
//! same `fault_id` (or the end of the run if it never ended); plots shade these.

use serde::{Deserialize, Serialize};

/// Who reported an event.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    /// The fault injector.
    Nemesis,
    /// A node (through `Effect::Event`).
    Node,
    /// The experiment runner itself (phases, warnings).
    Runner,
}

/// One line of `events.jsonl`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEvent {
    /// When, in nanoseconds since the start of the run (the same clock as the history).
    pub time_ns: u64,
    /// Who reported it.
    pub source: EventSource,
    /// `fault_start`, `fault_end`, `phase`, or a node event kind such as `leader_elected`.
    pub kind: String,
    /// The node it concerns, for node events and single-node faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// For faults: the id pairing a `fault_start` with its `fault_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_id: Option<u64>,
    /// For faults: the fault's name (`partition`, `crash`, `pause`, `clock_drift`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Free text for a person.
    #[serde(default)]
    pub detail: String,
}
