//! Observers: what a run watches besides the clients' history. The phase driver feeds
//! every observer the nodes' typed events and the nemesis's faults, wakes it when it
//! asks, tells it the phases, and collects its report at the end.
//!
//! - [`raft::RaftInvariants`] — Raft's safety invariants: election safety from
//!   [`kvlab_types::NodeEvent::LeaderElected`] on every backend; log matching, committed
//!   entries and state machines from inside the nodes where the backend lets it look
//!   (the simulator);
//! - [`ring::RingObserver`] — the composed system's ring: operators, data moved, replicas
//!   per node, leaderless groups, under-replication, and meta's directory invariant;
//! - [`swim::SwimObserver`] — SWIM's detection latency, false positives and load, and
//!   the slow members of Lifeguard experiments;
//! - [`txn::TxnObserver`] — the composed system's two-phase commit: in-doubt times,
//!   coordinator recovery after gateway crashes, resolver invocations.
//!
//! An observer matches events by type, never by their text.

pub mod raft;
pub mod ring;
pub mod ring_balance;
pub mod swim;
pub mod txn;

use kvlab_types::{NodeEvent, NodeId, Time};

use crate::cluster::Cluster;
use crate::events::{NemesisEvent, Phase, RunEvent};
use crate::workload::LivenessReport;

/// A broken invariant: the run stops where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The node whose state contradicts what was seen before.
    pub node: NodeId,
    /// Which invariant (`election_safety`, `log_matching`, …).
    pub invariant: String,
    /// The evidence, for a person.
    pub detail: String,
}

/// What an observer adds to the run's verdict and summary.
#[derive(Clone, Debug, Default)]
pub struct ObserverReport {
    /// What the observer measured, for the summary's `measured` list (`raft-invariants`,
    /// `swim`).
    pub measured: &'static str,
    /// The SWIM measurements.
    pub swim: Option<crate::observe::swim::SwimSummary>,
    /// The ring's measurements (`system = "kvlab"`).
    pub ring: Option<crate::observe::ring::RingSummary>,
    /// Two-phase commit's recovery measurements (`system = "kvlab"`).
    pub txn: Option<crate::observe::txn::TxnRecoverySummary>,
    /// The liveness verdict, for runs without a client workload (the workload's own
    /// otherwise).
    pub liveness: Option<LivenessReport>,
    /// Whether a bound the spec set was exceeded (the run's verdict is then
    /// `property-failed`).
    pub property_failed: bool,
}

/// Something that watches a run. Every method but [`Observer::finish`] has a default
/// that does nothing.
pub trait Observer {
    /// When the observer wants [`Observer::on_wakeup`] next.
    fn next_wakeup(&self) -> Option<Time> {
        None
    }
    /// Whether a node event goes into `events.jsonl` (every observer is asked; all must
    /// agree). SWIM runs leave out the `n·(n−1)` joins of a large cluster.
    fn keep_event(&mut self, at: Time, event: &NodeEvent) -> bool {
        let _ = (at, event);
        true
    }
    /// A node reported `event`.
    fn on_node_event(
        &mut self,
        cluster: &dyn Cluster,
        at: Time,
        node: NodeId,
        event: &NodeEvent,
    ) -> Result<(), Violation> {
        let _ = (cluster, at, node, event);
        Ok(())
    }
    /// The nemesis started, ended or skipped a fault.
    fn on_nemesis_event(&mut self, cluster: &dyn Cluster, at: Time, event: &NemesisEvent) {
        let _ = (cluster, at, event);
    }
    /// Its wakeup time came; it may look at (and, for experiments that need it, act on)
    /// the cluster, and record runner events.
    fn on_wakeup(
        &mut self,
        cluster: &mut dyn Cluster,
        now: Time,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), Violation> {
        let _ = (cluster, now, events);
        Ok(())
    }
    /// A phase began (the cluster was just healed when it is the liveness phase).
    fn on_phase(
        &mut self,
        cluster: &mut dyn Cluster,
        at: Time,
        phase: Phase,
        events: &mut Vec<RunEvent>,
    ) {
        let _ = (cluster, at, phase, events);
    }
    /// The run is over (at `end`); what the observer found.
    fn finish(&mut self, cluster: &dyn Cluster, end: Time) -> ObserverReport;
}
