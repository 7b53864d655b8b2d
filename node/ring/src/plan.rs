//! The planner: from the current placement towards a target, a bounded list of
//! [`Operator`]s (wave 2 §2.2 M2).
//!
//! Rules, each with a named bound and a reason when it holds an operator back
//! ([`HoldReason`]):
//!
//! * **Never remove before add.** A move adds the new replica as a learner, then promotes
//!   it in the same joint step that demotes the old one (or, single-step, promotes it
//!   before removing the old one). A dead voter is only ever demoted together with its
//!   replacement's promotion.
//! * **At most one operator per vnode**, and at most `max_inflight_operators` running in
//!   the cluster (PD `replica-schedule-limit`), most urgent kinds first.
//! * **Per-node token buckets** for replicas added and removed (PD store limit), and for
//!   leader transfers, refilled from `now`.
//! * **No action without a quorum**: a group whose live voters are not a majority gets
//!   nothing (no conf change could commit); it is reported as [`HoldReason::NoQuorum`].
//! * **Rebalance only outside the tolerance band**: a move from X to Y is planned only if
//!   X holds more than `mean·(1 + tolerance)` or Y fewer than `mean·(1 − tolerance)`
//!   (counted with the moves already planned this round).
//! * **Anti-thrash check** (CockroachDB's, adapted): before a rebalance move is planned,
//!   the next planning round is simulated — the move applied, the target recomputed with
//!   the same strategy — and the move is skipped if that target would take the new
//!   replica out again. (CRDB simulates its removal scorer after the addition; here add
//!   and remove come from one target, so the thrash to fear is a target that flips
//!   between rounds, which this catches.)
//! * **A deadline per operator**: `now + operator_timeout`.
//!
//! Three deliberately broken variants ([`PlacementBug`]) exist to show that the
//! simulation catches them; each is documented as the teaching bug it is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kvlab_types::{NodeId, Time};
use serde::{Deserialize, Serialize};

use crate::hash::VnodeId;
use crate::limits::{NodeBucket, NodeLimits};
use crate::meta::NodeState;
use crate::operator::{Operator, OperatorId, OperatorKind, OperatorState, Step};
use crate::placement::{Placement, ReplicaSet};
use crate::strategy::{
    Eligibility, PlacementStrategy, StrategyInput, StrategyParams, target_placement,
};

/// How membership changes are made (`scheduler.conf_change`).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum ConfChangeMode {
    /// Joint consensus: `EnterJoint{promote, demote}` then `LeaveJoint`.
    #[default]
    Joint,
    /// One voter at a time: `AddVoter` before `RemoveNode` (kvlab-raft's single-server
    /// changes; RF+1 voters while a move is half done).
    SingleStep,
}

/// Deliberately broken placement variants (`faults.bugs.placement`), compiled in and off
/// unless a spec names one; a run that uses one says so in its metadata.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementBug {
    /// No bug.
    #[default]
    None,
    /// **Teaching bug:** a move removes the old voter *before* adding the new one
    /// (CockroachDB before #28875). While the new replica catches up the group runs on
    /// RF−1 voters; one more failure loses the quorum, and with a dead voter removed
    /// first, a healed node plus one failure can lose acknowledged data's majority.
    RemoveBeforeAdd,
    /// **Teaching bug:** a move promotes the new voter and removes the old one in one
    /// non-joint configuration change ([`Step::SwapVoters`]). Old and new majorities need
    /// not intersect, so two leaders can commit different entries at one index
    /// (etcd's `confchange` refuses exactly this outside a joint config).
    TwoVotersWithoutJoint,
    /// **Teaching bug:** step commands carry no epoch precondition
    /// ([`crate::StepCommand::expected_conf_epoch`] is `None`); the node applies a step
    /// whatever the group's configuration, so a duplicated or stale step (a re-send after
    /// a meta leader change) is applied on top of a configuration it was not planned for.
    SkipEpochCheck,
}

impl PlacementBug {
    /// The name used in specs.
    pub fn name(self) -> &'static str {
        match self {
            PlacementBug::None => "none",
            PlacementBug::RemoveBeforeAdd => "remove-before-add",
            PlacementBug::TwoVotersWithoutJoint => "two-voters-without-joint",
            PlacementBug::SkipEpochCheck => "skip-epoch-check",
        }
    }
}

/// The planner's knobs (from `[ring]`, `[scheduler]` and the bug switch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanConfig {
    /// Voters per vnode.
    pub replication_factor: usize,
    /// Joint or single-step changes.
    pub conf_change: ConfChangeMode,
    /// The broken variant, if any.
    pub bug: PlacementBug,
    /// Cap on running operators cluster-wide.
    pub max_inflight_operators: usize,
    /// Whether rebalance moves are planned at all.
    pub rebalance: bool,
    /// The tolerance band around the mean replica (and leader) count.
    pub rebalance_tolerance_ratio: f64,
    /// Whether leader-balance transfers are planned.
    pub leader_balance: bool,
    /// Deadline of each operator after its creation.
    pub operator_timeout: Duration,
    /// The strategy, for the anti-thrash check.
    pub strategy: PlacementStrategy,
    /// Its parameters.
    pub strategy_params: StrategyParams,
}

/// What the planner looks at.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// Where replicas are (from the newest descriptors; epochs included).
    pub current: &'a Placement,
    /// Where they should be.
    pub target: &'a Placement,
    /// The state of every member (absent nodes count as Removed).
    pub health: &'a BTreeMap<NodeId, NodeState>,
    /// Which node leads each vnode, where known.
    pub leaders: &'a BTreeMap<VnodeId, NodeId>,
    /// The vnodes that have a running operator.
    pub inflight: &'a BTreeSet<VnodeId>,
    /// The id for the first new operator; the next ones follow.
    pub next_operator_id: OperatorId,
    /// The proposing meta leader's time.
    pub now: Time,
}

/// Why a wanted operator was not planned this round.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum HoldReason {
    /// `max_inflight_operators` operators are running or planned.
    InflightCap,
    /// The node's bucket is empty.
    NodeLimit(NodeId, NodeBucket),
    /// Rebalancing is off (`scheduler.rebalance = false`).
    RebalanceOff,
    /// Both nodes are inside the tolerance band.
    WithinTolerance,
    /// The next round's target would undo the move.
    AntiThrash,
    /// Live voters are not a majority: no change can commit (CRDB's purgatory).
    NoQuorum,
    /// The node that would receive the replica is not Up.
    TargetNotUp(NodeId),
}

/// An operator the planner wanted but held back, and why.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Held {
    /// The vnode.
    pub vnode: VnodeId,
    /// What it would have been.
    pub kind: OperatorKind,
    /// Why not now.
    pub reason: HoldReason,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// New operators, most urgent first, ids consecutive from `next_operator_id`.
    pub operators: Vec<Operator>,
    /// What was held back (one entry per vnode that wanted an operator).
    pub held: Vec<Held>,
}

/// One wanted change of one vnode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    kind: OperatorKind,
    vnode: VnodeId,
    add: Option<NodeId>,
    remove: Option<NodeId>,
    /// A leftover to tidy (joint config or orphan learner) instead of add/remove.
    tidy: Option<Tidy>,
    /// A leader transfer target.
    transfer_to: Option<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tidy {
    LeaveJoint,
    RemoveLearner(NodeId),
}

fn state_of(health: &BTreeMap<NodeId, NodeState>, n: NodeId) -> NodeState {
    health.get(&n).copied().unwrap_or(NodeState::Removed)
}

/// Plans operators from `input.current` towards `input.target`, taking tokens from
/// `limits` for the operators it returns.
pub fn plan(input: &PlanInput<'_>, config: &PlanConfig, limits: &mut NodeLimits) -> Plan {
    let mut out = Plan::default();
    let mut wants: Vec<Want> = Vec::new();
    for (v, cur) in input.current.iter() {
        if input.inflight.contains(&v) {
            continue;
        }
        match want_for(v, cur, input, config) {
            Ok(Some(w)) => wants.push(w),
            Ok(None) => {}
            Err(h) => out.held.push(h),
        }
    }
    wants.sort();

    // Replica counts over Up nodes, updated as moves are admitted (for the band).
    let up: BTreeSet<NodeId> = input
        .health
        .iter()
        .filter(|(_, s)| **s == NodeState::Up)
        .map(|(n, _)| *n)
        .collect();
    let mut counts = input.current.replicas_per_node_of(&up);
    let mut inflight = input.inflight.len();
    let mut next_id = input.next_operator_id.0;
    let mut planned: BTreeSet<VnodeId> = BTreeSet::new();
    for want in wants {
        if inflight >= config.max_inflight_operators {
            out.held.push(held(&want, HoldReason::InflightCap));
            continue;
        }
        match admit(&want, input, config, limits, &up, &counts) {
            Err(reason) => out.held.push(held(&want, reason)),
            Ok(None) => {}
            Ok(Some(steps)) => {
                let Some(cur) = input.current.get(want.vnode) else {
                    continue;
                };
                if let Some(x) = want.remove
                    && let Some(c) = counts.get_mut(&x)
                {
                    *c = c.saturating_sub(1);
                }
                if let Some(y) = want.add {
                    *counts.entry(y).or_insert(0) += 1;
                }
                let id = OperatorId(next_id);
                out.operators
                    .push(new_operator(id, &want, steps, cur, input.now, config));
                next_id += 1;
                inflight += 1;
                planned.insert(want.vnode);
            }
        }
    }

    if config.leader_balance {
        plan_leader_transfers(
            input,
            config,
            limits,
            &up,
            &mut planned,
            &mut inflight,
            &mut next_id,
            &mut out,
        );
    }
    out
}

/// What vnode `v`, replicated as `cur`, needs next on its way to its target: one make-up,
/// cleanup, tidy or move; `Ok(None)` if nothing; `Err` if something is needed but must
/// wait (no quorum alive, or the node to add is not up).
fn want_for(
    v: VnodeId,
    cur: &ReplicaSet,
    input: &PlanInput<'_>,
    config: &PlanConfig,
) -> Result<Option<Want>, Held> {
    let health = input.health;
    let blank = Want {
        kind: OperatorKind::Cleanup,
        vnode: v,
        add: None,
        remove: None,
        tidy: None,
        transfer_to: None,
    };
    if !cur.has_quorum(|n| state_of(health, n).is_alive()) {
        return Err(Held {
            vnode: v,
            kind: OperatorKind::ReplaceDown,
            reason: HoldReason::NoQuorum,
        });
    }
    if cur.is_joint() {
        return Ok(Some(Want {
            tidy: Some(Tidy::LeaveJoint),
            ..blank
        }));
    }
    let Some(tgt) = input.target.get(v) else {
        return Ok(None);
    };
    let rf = config.replication_factor;
    let adds: Vec<NodeId> = tgt.voters.difference(&cur.voters).copied().collect();
    let mut removes: Vec<NodeId> = cur.voters.difference(&tgt.voters).copied().collect();
    // Dead first, then draining, then by id; never a Suspect node's replica.
    removes.retain(|n| state_of(health, *n) != NodeState::Suspect);
    removes.sort_by_key(|n| (state_of(health, *n).removal_rank(), *n));
    let orphan = cur
        .learners
        .iter()
        .find(|l| !adds.contains(l) && state_of(health, **l) != NodeState::Suspect)
        .copied();

    let want = if cur.voters.len() < rf && !adds.is_empty() {
        Want {
            kind: OperatorKind::MakeUpReplica,
            add: Some(adds[0]),
            ..blank
        }
    } else if cur.voters.len() > rf && !removes.is_empty() {
        Want {
            kind: OperatorKind::Cleanup,
            remove: Some(removes[0]),
            ..blank
        }
    } else if let Some(l) = orphan {
        Want {
            tidy: Some(Tidy::RemoveLearner(l)),
            ..blank
        }
    } else if let (Some(&add), Some(&remove)) = (adds.first(), removes.first()) {
        let kind = match state_of(health, remove) {
            NodeState::Down | NodeState::Removed => OperatorKind::ReplaceDown,
            NodeState::Draining => OperatorKind::DrainNode,
            NodeState::Up | NodeState::Suspect => OperatorKind::Rebalance,
        };
        Want {
            kind,
            add: Some(add),
            remove: Some(remove),
            ..blank
        }
    } else {
        return Ok(None);
    };
    if let Some(y) = want.add
        && state_of(health, y) != NodeState::Up
    {
        return Err(Held {
            vnode: v,
            kind: want.kind,
            reason: HoldReason::TargetNotUp(y),
        });
    }
    Ok(Some(want))
}

/// Whether `want` may start now: a rebalancing move only outside the tolerance band
/// and when it would not thrash; every move only with its nodes' tokens (taken here).
/// The steps of the operator to create, `Ok(None)` if there is none to create, or why
/// it waits.
fn admit(
    want: &Want,
    input: &PlanInput<'_>,
    config: &PlanConfig,
    limits: &mut NodeLimits,
    up: &BTreeSet<NodeId>,
    counts: &BTreeMap<NodeId, usize>,
) -> Result<Option<Vec<Step>>, HoldReason> {
    let mut needs = Vec::new();
    if let Some(y) = want.add {
        needs.push((y, NodeBucket::AddReplica));
    }
    if let Some(x) = want.remove {
        needs.push((x, NodeBucket::RemoveReplica));
    }
    if let Some(Tidy::RemoveLearner(l)) = want.tidy {
        needs.push((l, NodeBucket::RemoveReplica));
    }
    if want.kind == OperatorKind::Rebalance {
        let (Some(x), Some(y)) = (want.remove, want.add) else {
            return Ok(None);
        };
        if !config.rebalance {
            return Err(HoldReason::RebalanceOff);
        }
        let total: usize = up.iter().map(|n| counts.get(n).copied().unwrap_or(0)).sum();
        let mean = total as f64 / up.len().max(1) as f64;
        let tol = config.rebalance_tolerance_ratio;
        let cx = counts.get(&x).copied().unwrap_or(0) as f64;
        let cy = counts.get(&y).copied().unwrap_or(0) as f64;
        if cx <= mean * (1.0 + tol) && cy >= mean * (1.0 - tol) {
            return Err(HoldReason::WithinTolerance);
        }
        // Tokens before the anti-thrash check: the check recomputes a whole target, so
        // it runs only for moves that could start now.
        limits
            .check_all(input.now, &needs)
            .map_err(|(n, b)| HoldReason::NodeLimit(n, b))?;
        if would_thrash(input, config, want.vnode, x, y) {
            return Err(HoldReason::AntiThrash);
        }
    }
    limits
        .try_take_all(input.now, &needs)
        .map_err(|(n, b)| HoldReason::NodeLimit(n, b))?;
    let Some(cur) = input.current.get(want.vnode) else {
        return Ok(None);
    };
    let leader = input.leaders.get(&want.vnode).copied();
    Ok(Some(steps_for(want, cur, leader, input.health, config)))
}

fn held(want: &Want, reason: HoldReason) -> Held {
    Held {
        vnode: want.vnode,
        kind: want.kind,
        reason,
    }
}

fn new_operator(
    id: OperatorId,
    want: &Want,
    steps: Vec<Step>,
    cur: &ReplicaSet,
    now: Time,
    config: &PlanConfig,
) -> Operator {
    Operator {
        id,
        vnode: want.vnode,
        kind: want.kind,
        steps,
        current_step: 0,
        expected_conf_epoch: cur.conf_epoch,
        created_at: now,
        deadline: now + config.operator_timeout,
        state: OperatorState::Running,
    }
}

/// The voter that takes over leadership when `x` must give it up: the lowest-id Up voter
/// other than `x`.
fn transfer_target(
    cur: &ReplicaSet,
    x: NodeId,
    health: &BTreeMap<NodeId, NodeState>,
) -> Option<NodeId> {
    cur.voters
        .iter()
        .find(|n| **n != x && state_of(health, **n) == NodeState::Up)
        .copied()
}

/// The steps of one wanted change, in the configured mode (or the configured bug).
fn steps_for(
    want: &Want,
    cur: &ReplicaSet,
    leader: Option<NodeId>,
    health: &BTreeMap<NodeId, NodeState>,
    config: &PlanConfig,
) -> Vec<Step> {
    if let Some(to) = want.transfer_to {
        return vec![Step::TransferLeader(to)];
    }
    match want.tidy {
        Some(Tidy::LeaveJoint) => return vec![Step::LeaveJoint],
        Some(Tidy::RemoveLearner(l)) => return vec![Step::RemoveLearner(l)],
        None => {}
    }
    // A leader about to lose its vote hands leadership over first (CRDB: a replica gives
    // up its lease before removing itself).
    let handover = |x: NodeId| -> Option<Step> {
        (leader == Some(x))
            .then(|| transfer_target(cur, x, health))
            .flatten()
            .map(Step::TransferLeader)
    };
    match (want.add, want.remove) {
        (Some(y), None) => vec![Step::AddLearner(y), Step::AddVoter(y)],
        (None, Some(x)) => handover(x)
            .into_iter()
            .chain([Step::RemoveNode(x)])
            .collect(),
        (Some(y), Some(x)) => {
            let mut s = Vec::new();
            match config.bug {
                PlacementBug::RemoveBeforeAdd => {
                    s.extend(handover(x));
                    s.push(Step::RemoveNode(x));
                    s.push(Step::AddLearner(y));
                    s.push(Step::AddVoter(y));
                }
                PlacementBug::TwoVotersWithoutJoint => {
                    s.push(Step::AddLearner(y));
                    s.extend(handover(x));
                    s.push(Step::SwapVoters { add: y, remove: x });
                }
                PlacementBug::None | PlacementBug::SkipEpochCheck => match config.conf_change {
                    ConfChangeMode::Joint => {
                        s.push(Step::AddLearner(y));
                        s.extend(handover(x));
                        s.push(Step::EnterJoint {
                            promote: [y].into(),
                            demote: [x].into(),
                        });
                        s.push(Step::LeaveJoint);
                        s.push(Step::RemoveLearner(x));
                    }
                    ConfChangeMode::SingleStep => {
                        s.push(Step::AddLearner(y));
                        s.push(Step::AddVoter(y));
                        s.extend(handover(x));
                        s.push(Step::RemoveNode(x));
                    }
                },
            }
            s
        }
        (None, None) => Vec::new(),
    }
}

/// The anti-thrash check: would the next round's target take `y` out of `v` again?
fn would_thrash(
    input: &PlanInput<'_>,
    config: &PlanConfig,
    v: VnodeId,
    x: NodeId,
    y: NodeId,
) -> bool {
    let mut after = input.current.clone();
    if let Some(set) = after.get_mut(v) {
        set.voters.remove(&x);
        set.voters.insert(y);
    }
    let members: BTreeMap<NodeId, Eligibility> = input
        .health
        .iter()
        .filter_map(|(n, s)| s.eligibility().map(|e| (*n, e)))
        .collect();
    let next = target_placement(
        config.strategy,
        &StrategyInput {
            layout: after.layout(),
            replication_factor: config.replication_factor,
            members: &members,
            current: &after,
            params: config.strategy_params,
        },
    );
    match next {
        Ok(next) => !next.get(v).is_some_and(|s| s.voters.contains(&y)),
        // No target next round means nothing would be planned: no thrash.
        Err(_) => false,
    }
}

/// Leader balance: from the node leading the most vnodes to the voter of one of them
/// that leads the fewest, while the source is above the band and two above the receiver.
#[allow(clippy::too_many_arguments)]
fn plan_leader_transfers(
    input: &PlanInput<'_>,
    config: &PlanConfig,
    limits: &mut NodeLimits,
    up: &BTreeSet<NodeId>,
    planned: &mut BTreeSet<VnodeId>,
    inflight: &mut usize,
    next_id: &mut u64,
    out: &mut Plan,
) {
    if up.is_empty() {
        return;
    }
    let mut led: BTreeMap<NodeId, usize> = up.iter().map(|n| (*n, 0)).collect();
    for (v, l) in input.leaders {
        if input.current.get(*v).is_some_and(|s| s.voters.contains(l))
            && let Some(c) = led.get_mut(l)
        {
            *c += 1;
        }
    }
    let total: usize = led.values().sum();
    let mean = total as f64 / up.len() as f64;
    let ceiling = mean * (1.0 + config.rebalance_tolerance_ratio);
    // Each source gives at most one leadership per round; bounded by the Up nodes.
    let mut sources: Vec<(usize, NodeId)> = led.iter().map(|(n, c)| (*c, *n)).collect();
    sources.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, from) in sources {
        let from_count = led[&from];
        if (from_count as f64) <= ceiling {
            break;
        }
        let choice = input
            .leaders
            .iter()
            .filter(|(v, l)| **l == from && !input.inflight.contains(v) && !planned.contains(v))
            .filter_map(|(v, _)| {
                let cur = input.current.get(*v)?;
                if cur.is_joint() {
                    return None;
                }
                cur.voters
                    .iter()
                    .filter(|n| **n != from && up.contains(n))
                    .map(|n| (led[n], *n, *v))
                    .min()
            })
            .min();
        let Some((to_count, to, v)) = choice else {
            continue;
        };
        if to_count + 2 > from_count {
            continue;
        }
        let want = Want {
            kind: OperatorKind::TransferLeader,
            vnode: v,
            add: None,
            remove: None,
            tidy: None,
            transfer_to: Some(to),
        };
        if *inflight >= config.max_inflight_operators {
            out.held.push(held(&want, HoldReason::InflightCap));
            return;
        }
        if let Err((n, b)) = limits.try_take_all(input.now, &[(from, NodeBucket::LeaderTransfer)]) {
            out.held.push(held(&want, HoldReason::NodeLimit(n, b)));
            continue;
        }
        let Some(cur) = input.current.get(v) else {
            continue;
        };
        let steps = vec![Step::TransferLeader(to)];
        out.operators.push(new_operator(
            OperatorId(*next_id),
            &want,
            steps,
            cur,
            input.now,
            config,
        ));
        *next_id += 1;
        *inflight += 1;
        planned.insert(v);
        *led.get_mut(&from).expect("counted") -= 1;
        *led.get_mut(&to).expect("counted") += 1;
    }
}

#[cfg(test)]
mod tests;
