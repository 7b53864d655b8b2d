//! The metadata ("meta") group on a node that is one of its voters: the replicated
//! [`MetaState`] (kvlab-ring's state machine, applied from the group's log) and, on its
//! leader, the [`Scheduler`] that proposes registrations, node-state changes, descriptors,
//! targets and operators, and sends step commands to vnode leaders.
//!
//! A new meta leader starts a fresh scheduler (its observations are volatile): it seeds
//! it with its own SWIM table and waits for store heartbeats. Proposals are
//! fire-and-forget — the scheduler re-proposes what did not take effect — so nothing
//! waits on a meta entry's answer.

use kvlab_raft::{GroupId, Role};
use kvlab_ring::meta::{
    MetaCmd, MetaEntry, MetaOutcome, MetaState, NodeState, Scheduler, StoreReport, SwimStatus,
};
use kvlab_ring::{RingSpec, StepCommand, VnodeId, vnode_group};
use kvlab_swim::{MemberState, Swim};
use kvlab_types::{NodeEvent, NodeId, Out, Time, Value};

use crate::kv::ApplyResult;
use crate::replica::{Replica, StateMachine};

/// [`MetaState`] as a replica's state machine: entries are encoded [`MetaEntry`]s;
/// outcomes become ring events.
#[derive(Debug)]
pub(crate) struct MetaMachine {
    pub(crate) state: MetaState,
    /// Entries that did not decode (skipped alike on every replica).
    pub(crate) bad_entries: u64,
}

impl StateMachine for MetaMachine {
    fn apply_entry<M>(
        &mut self,
        group: GroupId,
        index: u64,
        _term: u64,
        data: &[u8],
        out: &mut Out<M>,
    ) -> Option<ApplyResult> {
        let entry = match MetaEntry::decode(data) {
            Ok(e) => e,
            Err(e) => {
                self.bad_entries += 1;
                out.event(NodeEvent::BadCommand {
                    group,
                    index,
                    reason: e.to_string(),
                });
                return None;
            }
        };
        let outcome = self.state.apply_entry(&entry);
        if let Some(event) = outcome_event(&self.state, index, &outcome) {
            out.event(event);
        }
        None
    }

    fn read(&self, _key: &str) -> Option<Value> {
        None
    }

    fn encode(&self) -> Vec<u8> {
        self.state.encode_snapshot()
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(MetaMachine {
            state: MetaState::decode_snapshot(bytes).map_err(|e| e.to_string())?,
            bad_entries: 0,
        })
    }
}

/// The event for what applying meta entry `index` did, if it is one a run reports.
fn outcome_event(state: &MetaState, meta_index: u64, outcome: &MetaOutcome) -> Option<NodeEvent> {
    Some(match outcome {
        MetaOutcome::OperatorCreated { id, vnode, kind } => {
            let steps = state
                .operators()
                .get(id)
                .map(|op| op.steps.iter().map(|s| format!("{s:?}")).collect())
                .unwrap_or_default();
            NodeEvent::OperatorCreated {
                meta_index,
                operator: id.0,
                group: vnode_group(*vnode),
                operator_kind: kind.name().to_string(),
                steps,
            }
        }
        MetaOutcome::OperatorAdvanced {
            id,
            vnode,
            step,
            done,
        } => NodeEvent::OperatorAdvanced {
            meta_index,
            operator: id.0,
            group: vnode_group(*vnode),
            step: *step as u32,
            done: *done,
        },
        MetaOutcome::OperatorCancelled { id, vnode, reason } => NodeEvent::OperatorCancelled {
            meta_index,
            operator: id.0,
            group: vnode_group(*vnode),
            reason: format!("{reason:?}"),
        },
        MetaOutcome::NodeStateChanged { node, to, .. } => NodeEvent::RingNodeState {
            meta_index,
            member: *node,
            state: to.name().to_string(),
        },
        MetaOutcome::NodeRegistered(node) => NodeEvent::RingNodeState {
            meta_index,
            member: *node,
            state: NodeState::Up.name().to_string(),
        },
        _ => return None,
    })
}

/// SWIM's member state as the scheduler takes it.
pub(crate) fn swim_status(state: MemberState) -> SwimStatus {
    match state {
        MemberState::Alive => SwimStatus::Alive,
        MemberState::Suspect => SwimStatus::Suspect,
        MemberState::Dead => SwimStatus::Dead,
        MemberState::Left => SwimStatus::Left,
    }
}

/// The meta group on one of its voters.
#[derive(Debug)]
pub(crate) struct MetaNode {
    pub(crate) replica: Replica<MetaMachine>,
    /// The scheduler, while this node leads the meta group (with the term it leads).
    pub(crate) scheduler: Option<(u64, Scheduler)>,
    spec: RingSpec,
}

impl MetaNode {
    pub(crate) fn new(replica: Replica<MetaMachine>, spec: RingSpec) -> Self {
        MetaNode {
            replica,
            scheduler: None,
            spec,
        }
    }

    pub(crate) fn state(&self) -> &MetaState {
        &self.replica.machine.state
    }

    /// Whether this node leads the meta group and has applied everything committed (its
    /// state is current, so it may schedule).
    fn is_current_leader(&self) -> bool {
        let raft = &self.replica.raft;
        raft.role() == Role::Leader && self.replica.applied >= raft.commit_index()
    }

    /// The scheduler, when this node leads; a new leader (or a new term) starts a fresh
    /// one seeded with this node's SWIM table.
    pub(crate) fn scheduler(&mut self, now: Time, swim: Option<&Swim>) -> Option<&mut Scheduler> {
        if !self.is_current_leader() {
            self.scheduler = None;
            return None;
        }
        let term = self.replica.raft.term();
        if self.scheduler.as_ref().is_none_or(|(t, _)| *t != term) {
            let mut s = Scheduler::new(self.spec.clone());
            for m in swim.into_iter().flat_map(Swim::members) {
                s.observe_swim(now, m.id, swim_status(m.state), m.incarnation);
            }
            self.scheduler = Some((term, s));
        }
        self.scheduler.as_mut().map(|(_, s)| s)
    }

    /// The scheduler if it is already running (observations only).
    pub(crate) fn running_scheduler(&mut self) -> Option<&mut Scheduler> {
        if !self.is_current_leader() {
            return None;
        }
        self.scheduler.as_mut().map(|(_, s)| s)
    }

    /// One scheduling round on the leader: proposes what the scheduler decided and
    /// returns the step commands to send, by the vnode leader they go to.
    pub(crate) fn schedule(
        &mut self,
        now: Time,
        swim: Option<&Swim>,
    ) -> Vec<(NodeId, StepCommand)> {
        if self.scheduler(now, swim).is_none() {
            return Vec::new();
        }
        let MetaNode {
            replica, scheduler, ..
        } = self;
        let Some((_, sched)) = scheduler.as_mut() else {
            return Vec::new();
        };
        let state = &replica.machine.state;
        let cmds = sched.tick(now, state);
        let steps = sched.step_commands(state);
        for cmd in cmds {
            self.propose(now, cmd);
        }
        let state = self.state();
        steps
            .into_iter()
            .flat_map(|cmd| {
                let rec = state.descriptor(cmd.vnode);
                let to: Vec<NodeId> = match rec.and_then(|r| r.leader) {
                    Some(l) => vec![l],
                    None => rec
                        .map(|r| r.descriptor.replicas.voters.iter().copied().collect())
                        .unwrap_or_default(),
                };
                to.into_iter().map(move |n| (n, cmd.clone()))
            })
            .collect()
    }

    /// Proposes `cmd` (fire and forget: refused proposals are re-made by the scheduler).
    pub(crate) fn propose(&mut self, now: Time, cmd: MetaCmd) {
        let entry = MetaEntry { at: now, cmd };
        let _ = self.replica.raft.propose(entry.encode());
    }

    /// A store heartbeat: fed to the scheduler on the leader. Returns the replicas the
    /// reporter should destroy: those whose recorded configuration leaves it out at an
    /// epoch its log has not reached (`epochs`: the reporter's replicas and log epochs).
    pub(crate) fn on_report(
        &mut self,
        now: Time,
        report: StoreReport,
        epochs: &[(VnodeId, u64)],
    ) -> Vec<(VnodeId, u64)> {
        let node = report.node;
        let Some(sched) = self.running_scheduler() else {
            return Vec::new();
        };
        if sched.observe_report(now, report).is_err() {
            return Vec::new();
        }
        let state = self.state();
        epochs
            .iter()
            .filter_map(|&(v, log_epoch)| {
                let rec = state.descriptor(v)?;
                let recorded = rec.descriptor.conf_epoch().0;
                (recorded > log_epoch && !rec.descriptor.replicas.contains(node))
                    .then_some((v, recorded))
            })
            .collect()
    }
}
