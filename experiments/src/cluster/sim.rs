//! [`SimCluster`]: the deterministic simulator behind the [`Cluster`] trait.

use std::any::Any;
use std::collections::BTreeSet;

use kvlab_node::inspect::Inspect;
use kvlab_sim::{FaultRule, RuleId, Sim, SimConfig, SimError, SimOutput};
use kvlab_types::{AdminCommand, ClientRequest, NodeId, Protocol, Time};

use super::{BackendReport, Cluster, ClusterOutput, ClusterView, FaultControl, Restart};
use crate::error::{ExperimentError, FaultAction, FaultError};

/// A simulated cluster of protocol `P`.
#[derive(Debug)]
pub struct SimCluster<P: Protocol> {
    sim: Sim<P>,
    nodes: Vec<NodeId>,
    scratch: Vec<SimOutput>,
}

impl<P: Protocol> SimCluster<P> {
    /// Boots `nodes` nodes (ids `1..=nodes`) of `P` with `config` in a simulator seeded
    /// with `seed`.
    pub fn new(
        sim_config: SimConfig,
        seed: u64,
        nodes: u32,
        config: P::Config,
    ) -> Result<Self, ExperimentError> {
        Self::new_with_absent(sim_config, seed, nodes, &[], config)
    }

    /// Like [`SimCluster::new`], but the nodes in `absent` (joiners) stay down until a
    /// `join` fault starts them.
    pub fn new_with_absent(
        sim_config: SimConfig,
        seed: u64,
        nodes: u32,
        absent: &[NodeId],
        config: P::Config,
    ) -> Result<Self, ExperimentError> {
        let ids: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
        let sim = Sim::<P>::new_with_absent(sim_config, seed, &ids, absent, config)?;
        Ok(SimCluster {
            sim,
            nodes: ids,
            scratch: Vec::new(),
        })
    }

    /// The simulator, for observers that know `P`.
    pub fn sim(&self) -> &Sim<P> {
        &self.sim
    }

    fn drain(&mut self, out: &mut Vec<ClusterOutput>) {
        out.extend(self.scratch.drain(..).map(|o| match o {
            SimOutput::Reply { at, response, .. } => ClusterOutput::Reply { at, response },
            SimOutput::Event { at, node, event } => ClusterOutput::Event { at, node, event },
        }));
    }
}

impl<P: Protocol> FaultControl for SimCluster<P> {
    fn add_rule(&mut self, rule: FaultRule) -> RuleId {
        self.sim.add_rule(rule)
    }
    fn remove_rule(&mut self, rule: RuleId) {
        self.sim.remove_rule(rule);
    }
    fn crash(&mut self, node: NodeId) -> Result<(), FaultError> {
        self.sim.crash(node);
        Ok(())
    }
    fn restart(&mut self, node: NodeId) -> Result<(), FaultError> {
        self.sim
            .restart(node)
            .map_err(|e| FaultError::new(FaultAction::Restart, node, e.to_string()))
    }
    fn pause(&mut self, node: NodeId) -> Result<(), FaultError> {
        self.sim.pause(node);
        Ok(())
    }
    fn resume(&mut self, node: NodeId) -> Result<(), FaultError> {
        self.sim.resume(node);
        Ok(())
    }
    fn start(&mut self, node: NodeId) -> Result<(), FaultError> {
        self.sim
            .start(node)
            .map_err(|e| FaultError::new(FaultAction::Start, node, e.to_string()))
    }
    fn is_started(&self, node: NodeId) -> bool {
        self.sim.is_started(node)
    }
    fn set_clock_drift(&mut self, node: NodeId, ppm: i64) -> Result<(), FaultError> {
        self.sim.set_clock_drift(node, ppm);
        Ok(())
    }
    fn jump_clock(&mut self, node: NodeId, by: std::time::Duration) -> Result<(), FaultError> {
        self.sim.jump_clock(node, by);
        Ok(())
    }
    fn fail_fsyncs(&mut self, node: NodeId, on: bool) -> Result<(), FaultError> {
        self.sim.set_failing_syncs(node, on);
        Ok(())
    }
    fn corrupt_log(&mut self, node: NodeId) -> Result<Option<String>, FaultError> {
        let damage = self
            .sim
            .corrupt_synced_log(node)
            .map_err(|e| FaultError::new(FaultAction::DiskFault, node, e.to_string()))?;
        Ok(damage.map(|d| {
            format!(
                "bit {:#04x} of byte {} of {} flipped",
                d.mask,
                d.offset,
                d.path.display()
            )
        }))
    }
    fn restart_if_down(&mut self, node: NodeId) -> Result<Restart, FaultError> {
        match self.sim.restart(node) {
            Ok(()) => Ok(Restart::Restarted),
            Err(SimError::NodeNotCrashed(_)) => Ok(Restart::WasUp),
            Err(e @ SimError::Storage { .. }) => Ok(Restart::Refused(e.to_string())),
            Err(e) => Err(FaultError::new(FaultAction::Restart, node, e.to_string())),
        }
    }
    fn admin(&mut self, node: NodeId, cmd: AdminCommand) -> Result<bool, FaultError> {
        self.sim
            .admin(node, cmd)
            .map_err(|e| FaultError::new(FaultAction::Admin, node, e.to_string()))
    }
}

impl<P: Protocol + Inspect + 'static> Cluster for SimCluster<P> {
    fn backend_name(&self) -> &'static str {
        "sim"
    }

    fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    fn now(&self) -> Time {
        self.sim.now()
    }

    fn submit(&mut self, node: NodeId, req: ClientRequest) {
        self.sim.submit(node, req);
    }

    /// Runs the simulator event time by event time up to `deadline` and returns at the
    /// first event time that produced output, so the workload can act at the very
    /// instant a reply arrives.
    fn advance(
        &mut self,
        deadline: Time,
        out: &mut Vec<ClusterOutput>,
    ) -> Result<(), ExperimentError> {
        let deadline = deadline.max(self.sim.now());
        // Outputs produced between steps (a restarted node's boot events).
        self.sim.drain_outputs(&mut self.scratch);
        loop {
            let step_to = match self.sim.next_event_time() {
                Some(next) if next < deadline => next.max(self.sim.now()),
                _ => deadline,
            };
            self.sim.run_until(step_to, &mut self.scratch)?;
            let produced = !self.scratch.is_empty();
            self.drain(out);
            if produced || step_to == deadline {
                return Ok(());
            }
        }
    }

    fn takes_admin_commands(&self) -> bool {
        true
    }

    fn is_up(&self, node: NodeId) -> bool {
        self.sim.is_up(node)
    }

    fn view(&mut self) -> ClusterView {
        let statuses: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|&n| self.sim.node(n).map(|p| (n, p.inspect(n))))
            .collect();
        ClusterView::from_statuses(statuses)
    }

    fn heal_all(&mut self, retired: &BTreeSet<NodeId>) -> Vec<String> {
        let mut warnings = Vec::new();
        self.sim.heal();
        for &n in &self.nodes {
            // A joiner that never started stays a machine switched off.
            if !self.sim.is_up(n)
                && self.sim.is_started(n)
                && !retired.contains(&n)
                && let Err(e) = self.sim.restart(n)
            {
                warnings.push(format!("{n} could not restart: {e}"));
            }
            self.sim.set_failing_syncs(n, false);
            self.sim.resume(n);
            self.sim.set_clock_drift(n, 0);
        }
        warnings
    }

    fn protocol(&self, node: NodeId) -> Option<&dyn Any> {
        self.sim.node(node).map(|p| p as &dyn Any)
    }

    fn sim_stats(&self) -> Option<kvlab_sim::SimStats> {
        Some(self.sim.stats().clone())
    }

    fn finish(&mut self) -> Result<BackendReport, ExperimentError> {
        Ok(BackendReport {
            sim_stats: Some(self.sim.stats().clone()),
            warnings: Vec::new(),
        })
    }
}
