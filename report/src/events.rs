//! `events.jsonl`: what happened to the cluster during a run, one JSON object per line —
//! faults the nemesis injected and healed, events nodes reported (leader changes,
//! membership changes), and the runner's phases. Every line is a typed value: `source`
//! says who reported it, `kind` what it is, and the other keys are that kind's fields.
//!
//! ```text
//! {"time_ns":5000000000,"source":"nemesis","kind":"fault_start","fault_id":1,"fault":"partition_halves","detail":"[n1 n2] | [n3 n4 n5]"}
//! {"time_ns":8000000000,"source":"nemesis","kind":"fault_end","fault_id":1,"fault":"partition_halves","detail":"healed"}
//! {"time_ns":8100000000,"source":"node","node":3,"kind":"leader_elected","group":0,"term":4}
//! {"time_ns":60000000000,"source":"runner","kind":"phase","phase":"liveness"}
//! ```
//!
//! A fault period is the interval between a `fault_start` and the `fault_end` with the
//! same `fault_id` (or the end of the run if it never ended); plots shade these.

use kvlab_types::{NodeEvent, NodeId, Time};
use serde::{Deserialize, Serialize};

/// One line of `events.jsonl`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RunEvent {
    /// When, in nanoseconds since the start of the run (the same clock as the history).
    pub time_ns: u64,
    /// Who reported what.
    #[serde(flatten)]
    pub body: EventBody,
}

/// Who reported an event, and the event.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum EventBody {
    /// The fault injector.
    Nemesis(NemesisEvent),
    /// A node (through `Effect::Event`, or its driver).
    Node(NodeReport),
    /// The experiment runner itself (phases, warnings).
    Runner(RunnerEvent),
}

/// What the nemesis did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NemesisKind {
    /// A fault began.
    FaultStart,
    /// A fault was undone.
    FaultEnd,
    /// A planned fault was skipped (no eligible node, no leader known, …).
    FaultSkipped,
    /// The membership reconciler sent an operator command.
    AdminCommand,
}

/// A line from the nemesis.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// What it did.
    pub kind: NemesisKind,
    /// The node it concerns, for single-node faults and commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// The id pairing a `fault_start` with its `fault_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_id: Option<u64>,
    /// The fault's name (`partition_halves`, `crash`, `pause`, `clock_drift`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// What exactly was done, for a person.
    #[serde(default)]
    pub detail: String,
    /// The side a `partition_halves` or `partition_random` cut off from the rest (a
    /// scheduled fault's `targets` that would cut the same), so that a shrunk schedule
    /// can replay it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub side: Vec<NodeId>,
    /// The point of two-phase commit a `kill_gateway` fault hit, so that a shrunk
    /// schedule can replay it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<kvlab_types::TxnFaultPoint>,
}

/// A line from a node.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeReport {
    /// The reporting node.
    pub node: NodeId,
    /// The event, typed.
    #[serde(flatten)]
    pub event: NodeEvent,
}

/// A phase of a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Workload and faults.
    Safety,
    /// Faults healed; the cluster must make progress.
    Liveness,
    /// No new operations; those in flight finish.
    Drain,
}

impl Phase {
    /// The phase's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Safety => "safety",
            Phase::Liveness => "liveness",
            Phase::Drain => "drain",
        }
    }
}

/// A line from the runner.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunnerEvent {
    /// A phase began.
    Phase {
        /// Which.
        phase: Phase,
    },
    /// A safety invariant checked during the run broke; the run stopped there.
    InvariantViolated {
        /// The node whose state contradicts what was seen before.
        node: NodeId,
        /// Which invariant (`election_safety`, `log_matching`, …).
        invariant: String,
        /// The evidence.
        detail: String,
    },
    /// A real cluster answered and the workload is about to start.
    ClusterStarted {
        /// How many nodes, over what, in how long.
        detail: String,
    },
    /// A fault could not be applied to a real node.
    FaultError {
        /// What went wrong.
        detail: String,
    },
    /// Something a person should know about the run.
    Warning {
        /// What.
        detail: String,
    },
    /// SWIM members reached one view (every live member sees every other alive).
    SwimConverged {
        /// Seconds after the heal, if this is the convergence after the heal.
        after_heal_s: Option<f64>,
    },
    /// Members made slow for a SWIM experiment.
    SlowMembers {
        /// Which and how.
        detail: String,
    },
}

impl RunnerEvent {
    /// The event's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunnerEvent::Phase { .. } => "phase",
            RunnerEvent::InvariantViolated { .. } => "invariant_violated",
            RunnerEvent::ClusterStarted { .. } => "cluster_started",
            RunnerEvent::FaultError { .. } => "fault_error",
            RunnerEvent::Warning { .. } => "warning",
            RunnerEvent::SwimConverged { .. } => "swim_converged",
            RunnerEvent::SlowMembers { .. } => "slow_members",
        }
    }

    /// The event's text for a person.
    pub fn detail(&self) -> String {
        match self {
            RunnerEvent::Phase { phase } => phase.name().to_string(),
            RunnerEvent::InvariantViolated { detail, .. }
            | RunnerEvent::ClusterStarted { detail }
            | RunnerEvent::FaultError { detail }
            | RunnerEvent::Warning { detail }
            | RunnerEvent::SlowMembers { detail } => detail.clone(),
            RunnerEvent::SwimConverged { after_heal_s } => match after_heal_s {
                Some(s) => format!("one view {s:.3} s after the heal"),
                None => "one view after the joins".to_string(),
            },
        }
    }
}

impl RunEvent {
    /// A nemesis line.
    pub fn nemesis(at: Time, event: NemesisEvent) -> Self {
        RunEvent {
            time_ns: at.as_nanos(),
            body: EventBody::Nemesis(event),
        }
    }

    /// A node line.
    pub fn node(at: Time, node: NodeId, event: NodeEvent) -> Self {
        RunEvent {
            time_ns: at.as_nanos(),
            body: EventBody::Node(NodeReport { node, event }),
        }
    }

    /// A runner line.
    pub fn runner(at: Time, event: RunnerEvent) -> Self {
        RunEvent {
            time_ns: at.as_nanos(),
            body: EventBody::Runner(event),
        }
    }

    /// The start of `phase`.
    pub fn phase(at: Time, phase: Phase) -> Self {
        Self::runner(at, RunnerEvent::Phase { phase })
    }

    /// When it happened.
    pub fn at(&self) -> Time {
        Time(self.time_ns)
    }

    /// The line's `kind`.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            EventBody::Nemesis(n) => match n.kind {
                NemesisKind::FaultStart => "fault_start",
                NemesisKind::FaultEnd => "fault_end",
                NemesisKind::FaultSkipped => "fault_skipped",
                NemesisKind::AdminCommand => "admin_command",
            },
            EventBody::Node(n) => n.event.kind(),
            EventBody::Runner(r) => r.kind(),
        }
    }

    /// The node it concerns, if any.
    pub fn node_id(&self) -> Option<NodeId> {
        match &self.body {
            EventBody::Nemesis(n) => n.node,
            EventBody::Node(n) => Some(n.node),
            EventBody::Runner(RunnerEvent::InvariantViolated { node, .. }) => Some(*node),
            EventBody::Runner(_) => None,
        }
    }

    /// The node event, if a node reported it.
    pub fn node_event(&self) -> Option<(NodeId, &NodeEvent)> {
        match &self.body {
            EventBody::Node(n) => Some((n.node, &n.event)),
            _ => None,
        }
    }

    /// The nemesis event, if the nemesis reported it.
    pub fn nemesis_event(&self) -> Option<&NemesisEvent> {
        match &self.body {
            EventBody::Nemesis(n) => Some(n),
            _ => None,
        }
    }

    /// The runner event, if the runner reported it.
    pub fn runner_event(&self) -> Option<&RunnerEvent> {
        match &self.body {
            EventBody::Runner(r) => Some(r),
            _ => None,
        }
    }

    /// The line's text for a person (the event's fields for node events).
    pub fn detail(&self) -> String {
        match &self.body {
            EventBody::Nemesis(n) => n.detail.clone(),
            EventBody::Node(n) => n.event.to_string(),
            EventBody::Runner(r) => r.detail(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_types::GroupId;

    #[test]
    fn every_source_round_trips_through_one_json_line() {
        let events = [
            RunEvent::phase(Time(1), Phase::Liveness),
            RunEvent::node(
                Time(2),
                NodeId(3),
                NodeEvent::LeaderElected {
                    group: GroupId(0),
                    term: 4,
                },
            ),
            RunEvent::nemesis(
                Time(3),
                NemesisEvent {
                    kind: NemesisKind::FaultStart,
                    node: Some(NodeId(2)),
                    fault_id: Some(1),
                    fault: Some("crash".into()),
                    detail: "n2 crashed".into(),
                    side: Vec::new(),
                    point: None,
                },
            ),
        ];
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(
            lines[1],
            r#"{"time_ns":2,"source":"node","node":3,"kind":"leader_elected","group":0,"term":4}"#
        );
        assert_eq!(
            lines[0],
            r#"{"time_ns":1,"source":"runner","kind":"phase","phase":"liveness"}"#
        );
        for (e, line) in events.iter().zip(&lines) {
            assert_eq!(&serde_json::from_str::<RunEvent>(line).unwrap(), e);
        }
        assert_eq!(events[2].kind(), "fault_start");
        assert_eq!(events[1].node_id(), Some(NodeId(3)));
    }

    #[test]
    fn an_unknown_source_or_kind_is_an_error() {
        assert!(
            serde_json::from_str::<RunEvent>(r#"{"time_ns":1,"source":"martians","kind":"x"}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<RunEvent>(
                r#"{"time_ns":1,"source":"node","node":1,"kind":"x"}"#
            )
            .is_err()
        );
    }
}
