//! # kvlab-ring
//!
//! The ring of a kvlab cluster as **pure functions and a pure state machine**: which
//! vnode a key belongs to, where each vnode's replicas should be, how to get them there
//! safely and at a bounded rate, how balanced and how exposed a placement is, and the
//! metadata ("meta") group's replicated state machine with the scheduler its leader
//! runs. Wave 2 §1.2, §2.2, §2.3 and §6 of the design are the specification.
//!
//! **Must never depend on:** kvlab-raft, kvlab-swim or any other protocol crate (they
//! meet in kvlab-node), tokio, tarpc, sockets, the filesystem or a clock. Time comes in as
//! [`kvlab_types::Time`]; nothing here draws randomness (tokens and rendezvous weights
//! are fixed hashes, so every meta leader computes the same thing); every map is ordered.
//! `experiments/tests/architecture.rs` proves the dependency rules from `cargo metadata`.
//!
//! ```
//! use std::collections::{BTreeMap, BTreeSet};
//! use kvlab_ring::limits::NodeLimits;
//! use kvlab_ring::*;
//! use kvlab_types::{NodeId, Time};
//!
//! // 64 vnodes; a key's vnode is the top 6 bits of xxh3-64; vnode v is Raft group v.
//! let layout = RingLayout::new(64)?;
//! let v = layout.vnode_of("user:42");
//! assert_eq!(group_vnode(vnode_group(v)), Some(v));
//!
//! // Five nodes boot with a balanced placement of three voters per vnode.
//! let five: Vec<NodeId> = (1..=5).map(NodeId).collect();
//! let params = StrategyParams::default();
//! let current = initial_placement(PlacementStrategy::Balanced, layout, 3, &five, params)?;
//! current.check(3)?;
//!
//! // Node 6 joins. The balanced target moves the fewest replicas: 64·3/6 = 32.
//! let health: BTreeMap<NodeId, NodeState> = (1..=6).map(|i| (NodeId(i), NodeState::Up)).collect();
//! let members = health.iter().filter_map(|(n, s)| Some((*n, s.eligibility()?))).collect();
//! let input = StrategyInput { layout, replication_factor: 3, members: &members, current: &current, params };
//! let target = target_placement(PlacementStrategy::Balanced, &input)?;
//! assert_eq!(current.moved_replicas_to(&target), 32);
//!
//! // Plan the first operators under the default limits: node 6's add bucket holds a burst
//! // of 4 tokens, so 4 moves start now and the rest as tokens refill.
//! let spec = RingSpec::default();
//! let mut limits = NodeLimits::new(spec.node_rates());
//! let plan = plan(
//!     &PlanInput {
//!         current: &current,
//!         target: &target,
//!         health: &health,
//!         leaders: &BTreeMap::new(),
//!         inflight: &BTreeSet::new(),
//!         next_operator_id: OperatorId(1),
//!         now: Time::ZERO,
//!     },
//!     &spec.plan_config(3),
//!     &mut limits,
//! );
//! assert_eq!(plan.operators.len(), 4);
//! let op = &plan.operators[0];
//! assert_eq!(op.kind, OperatorKind::Rebalance);
//! // Add before remove: learner, joint promote/demote, leave, remove the old learner.
//! assert!(matches!(op.steps[..], [
//!     Step::AddLearner(NodeId(6)), Step::EnterJoint { .. }, Step::LeaveJoint, Step::RemoveLearner(_),
//! ]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The pieces
//!
//! | module | what |
//! |---|---|
//! | [`hash`] | [`RingLayout`] (P, a power of two ≤ 1024), [`RingLayout::vnode_of`], [`VnodeId`], vnode ↔ [`kvlab_types::GroupId`], [`META_GROUP`] |
//! | [`placement`] | [`ReplicaSet`] (voters, outgoing voters while joint, learners, [`ConfEpoch`]), [`Descriptor`], [`Placement`] with [`Placement::check`] and counts |
//! | [`strategy`] | [`PlacementStrategy`]: `balanced` (fewest moves), `rendezvous`, `ring-tokens`; [`target_placement`], [`initial_placement`] |
//! | [`operator`] | [`Operator`], [`Step`] (joint and single-step), [`StepCommand`] (what a group leader executes) |
//! | [`plan`](mod@plan) | [`plan()`](fn@plan::plan): current + target + health → operators, under every limit; the three teaching bugs ([`PlacementBug`]) |
//! | [`limits`] | token buckets on [`kvlab_types::Time`], per-node buckets, the snapshot limiter |
//! | [`balance`] | CV, max/mean, optimum moved bytes, `move_ratio`, `pairs_unavailable_fraction`, `tdtv` |
//! | [`meta`] | [`MetaState`] + [`MetaCmd`] + [`MetaState::apply`] (the meta group's state machine), [`Scheduler`] |
//! | [`config`] | `[ring]`, `[meta]`, `[membership]`, `[scheduler]`, `[snapshot]` and the bug switch, validated once |
//!
//! ## How the composed node uses it
//!
//! Safety lives in each vnode group's own Raft log; meta holds intent and the directory
//! (wave 2 P3). The node must:
//!
//! 1. **Boot**: every node computes [`initial_placement`] from `[ring]` and the initial
//!    member list, creates its vnode groups with those bootstrap voters (conf epoch 0),
//!    and the meta group's voters start from [`MetaState::bootstrap`] with the same
//!    placement.
//! 2. **Run the meta group** ([`META_GROUP`], voters `meta.voters`): propose
//!    [`MetaEntry`] `{ at: now, cmd }` bytes ([`MetaEntry::encode`]); on every replica,
//!    [`MetaEntry::decode`] committed entries (a decode error is a counted bad command)
//!    and [`MetaState::apply_entry`] them; turn the [`MetaOutcome`]s into events
//!    (`node_state`, `operator_created`, `operator_step`, `operator_done`,
//!    `operator_cancelled`); snapshot with [`MetaState::encode_snapshot`] /
//!    [`MetaState::decode_snapshot`].
//! 3. **Feed the meta leader's [`Scheduler`]**: every SWIM membership event through
//!    [`meta::swim_observation`] into [`Scheduler::observe_swim`]; every node's
//!    [`StoreReport`] (sent every `meta.store_heartbeat_interval_ms`: hosted groups with
//!    bytes, led groups with their applied [`Descriptor`], term and down peers — members
//!    not heard from for `membership.peer_down_after_ms`) into
//!    [`Scheduler::observe_report`]. Every `meta.schedule_interval_ms`, propose what
//!    [`Scheduler::tick`] returns. A new meta leader starts a fresh scheduler.
//! 4. **Execute steps**: every schedule interval the meta leader sends
//!    [`Scheduler::step_commands`] to each vnode's leader (the leader hint in
//!    [`MetaState::descriptors`]). The group leader follows [`StepCommand`]'s contract:
//!    skip a step already done; refuse it unless the group's epoch equals
//!    `expected_conf_epoch`, checked again when the conf-change entry is **applied**;
//!    promote a learner only once caught up within
//!    `scheduler.learner_catchup_max_lag_entries`; hand over leadership before demoting
//!    or removing itself; raise `conf_epoch` by one per applied conf-change entry; report
//!    the new descriptor to meta at once. Single-step steps map to today's
//!    [`kvlab_types::AdminAction`]s ([`Step::admin_action`]); joint steps need joint
//!    consensus in kvlab-raft.
//! 5. **Pace snapshots** with a [`limits::SnapshotLimiter`] per node (`[snapshot]`).
//!
//! ## Where this differs from the wave 2 note, and why
//!
//! * The epoch lives in [`ReplicaSet`] (a [`Descriptor`] is a replica set named by its
//!   vnode), so a current [`Placement`] carries each group's epoch to the planner.
//! * [`ReplicaSet::outgoing`] represents joint configurations, so meta can follow an
//!   operator between `EnterJoint` and `LeaveJoint`.
//! * Operator kind [`OperatorKind::Cleanup`] (PD's remove-extra/orphan-peer) tidies what
//!   a cancelled operator leaves: a learner, an extra voter, or a joint configuration.
//!   A timed-out operator does **not** roll a joint configuration back towards the old
//!   voters: etcd-style joint consensus can only leave towards the incoming set, and any
//!   route back needs the same two quorums `LeaveJoint` needs, so finishing forward is
//!   never less available.
//! * The anti-thrash check simulates the next planning round (recompute the target after
//!   the move) instead of CockroachDB's removal scorer: here add and remove come from one
//!   target, so the thrash to fear is a target that flips between rounds.
//! * The M1 table gains `Down → Draining` (decommission a dead node); a Removed node may
//!   register again (and comes back Up and empty).
//! * Meta keeps a leader hint (and term) per vnode beside the descriptor: the route
//!   cache's directory, and what `TransferLeader` steps are checked against.
//! * The scheduler registers a node the first time its store heartbeat arrives (a running
//!   store, not merely a SWIM member).
//! * Vnode `v` is group `v`, as the note says; the meta group is `GroupId(2^32)`, outside
//!   every vnode id and apart from SWIM's `GroupId(u64::MAX)`.
#![deny(missing_docs)]

pub mod balance;
pub mod config;
pub mod hash;
pub mod limits;
pub mod meta;
pub mod operator;
pub mod placement;
pub mod plan;
pub mod strategy;

pub use config::{ConfigError, RingSpec};
pub use hash::{
    LayoutError, MAX_VNODE_COUNT, META_GROUP, RingLayout, VnodeId, group_vnode, key_hash,
    vnode_group,
};
pub use meta::{
    MetaCmd, MetaEntry, MetaOutcome, MetaState, NodeState, Scheduler, StoreReport, SwimStatus,
};
pub use operator::{
    CancelReason, Operator, OperatorId, OperatorKind, OperatorState, Step, StepCommand,
};
pub use placement::{ConfEpoch, Descriptor, Placement, PlacementError, ReplicaSet};
pub use plan::{ConfChangeMode, PlacementBug, Plan, PlanConfig, PlanInput, plan};
pub use strategy::{
    Eligibility, PlacementStrategy, StrategyError, StrategyInput, StrategyParams,
    initial_placement, target_placement,
};

#[cfg(test)]
pub(crate) mod testutil;
