//! [`RaftInvariants`]: Raft's safety invariants, checked during the run
//! ([`kvlab_node::raft_kv::invariants`]): from typed `leader_elected` events on every
//! backend, and from inside every up node every [`INVARIANT_CHECK_INTERVAL_MS`] where
//! the backend can show its nodes (the simulator).

use std::time::Duration;

use kvlab_node::raft_kv::invariants::{
    INVARIANT_CHECK_INTERVAL_MS, InvariantChecker, InvariantViolation, RaftNodeView,
};
use kvlab_types::{NodeEvent, NodeId, Time};

use super::{Observer, ObserverReport, Violation};
use crate::cluster::Cluster;
use crate::events::RunEvent;

/// Checks Raft's invariants in every group of nodes of type `N` (the `raft` system's
/// `RaftKv`, the composed `KvlabNode`). See [the module docs](self).
#[derive(Debug)]
pub struct RaftInvariants<N> {
    checker: InvariantChecker,
    next_check: Time,
    node: std::marker::PhantomData<fn(&N)>,
}

impl<N> RaftInvariants<N> {
    /// A checker whose first look inside the nodes is one interval after `start`.
    pub fn new(start: Time) -> Self {
        RaftInvariants {
            checker: InvariantChecker::new(),
            next_check: start + Self::interval(),
            node: std::marker::PhantomData,
        }
    }

    fn interval() -> Duration {
        Duration::from_millis(INVARIANT_CHECK_INTERVAL_MS)
    }
}

fn violation(v: InvariantViolation) -> Violation {
    Violation {
        node: v.node,
        invariant: v.invariant.to_string(),
        detail: v.to_string(),
    }
}

impl<N: RaftNodeView + 'static> Observer for RaftInvariants<N> {
    fn next_wakeup(&self) -> Option<Time> {
        Some(self.next_check)
    }

    fn on_node_event(
        &mut self,
        _cluster: &dyn Cluster,
        _at: Time,
        node: NodeId,
        event: &NodeEvent,
    ) -> Result<(), Violation> {
        self.checker.on_event(node, event).map_err(violation)
    }

    fn on_wakeup(
        &mut self,
        cluster: &mut dyn Cluster,
        now: Time,
        _events: &mut Vec<RunEvent>,
    ) -> Result<(), Violation> {
        if now < self.next_check {
            return Ok(());
        }
        self.next_check = now + Self::interval();
        let nodes = cluster.nodes().to_vec();
        for id in nodes {
            let Some(node) = cluster.protocol(id).and_then(|p| p.downcast_ref::<N>()) else {
                continue; // down, or a backend that cannot show its nodes
            };
            self.checker.observe(id, node).map_err(violation)?;
        }
        Ok(())
    }

    fn finish(&mut self, _cluster: &dyn Cluster, _end: Time) -> ObserverReport {
        ObserverReport {
            measured: "raft-invariants",
            ..ObserverReport::default()
        }
    }
}
