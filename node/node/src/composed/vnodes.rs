//! The vnode replicas a node hosts: creating them (at boot from the initial placement,
//! when a leader first contacts the node), destroying them (when meta says a newer
//! configuration left this node out), and what their leaders do for meta (carry out
//! steps, report descriptors and down peers).
//!
//! ## When a replica may exist
//!
//! * **Bootstrap**: a node in vnode `v`'s initial placement creates `v`'s replica at
//!   boot, with the initial voters as the group's bootstrap configuration. Every node
//!   computes the same initial placement, so every node passes the same bootstrap list;
//!   a replica created later for `v` uses that same list, because the group's log only
//!   makes sense on top of it.
//! * **Contacted**: a node without a replica of `v` creates one when a leader of `v`
//!   sends it AppendEntries, a heartbeat or a snapshot chunk — never on a vote request,
//!   so a removed node's campaign cannot resurrect anything. Such a replica is
//!   *uninitialized* until its log or snapshot holds something, and an uninitialized
//!   replica does not tick: it cannot campaign with the bootstrap configuration's
//!   stale view of who votes.
//! * **Destroyed**: meta answers a node's store heartbeat with the replicas whose
//!   recorded configuration (epoch `E`) leaves the node out while the replica's own log
//!   has not reached `E` ([`Vnodes::destroy_stale`]). Such a replica never acknowledged
//!   anything at or after the entry that removed it, so no quorum of any later
//!   configuration counts on it. The node writes a durable tombstone `{E}` as the group's
//!   snapshot (dropping its records) and forgets the replica.
//! * **Tombstones** stop stale leaders: every Raft message carries its sender's log epoch
//!   (configuration entries in its log), and a tombstoned replica is recreated only by a
//!   leader whose log epoch is above `E` — a leader that has re-added this node. A stale
//!   leader of a configuration that still lists the node has a log epoch of at most `E`
//!   (it lacks the removal, and Raft keeps one configuration change in flight), so it
//!   cannot bring back an empty replica that it would then count as a voter.
//!
//! This is TiKV's peer lifecycle (region epochs, tombstone state, "create peer on
//! message"), with the configuration epoch in place of TiKV's region epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kvlab_raft::{
    ConfChange, EntryKind, JointChange, MemberSet, MessageBody, RaftConfig, RaftError, RaftGroup,
    RaftMessage, RecoveredState, Role,
};
use kvlab_ring::{
    ConfEpoch, Descriptor, Placement, ReplicaSet, Step, StepCommand, VnodeId, meta::LedGroup,
    vnode_group,
};
use kvlab_types::{Cx, GroupRecovery, NodeEvent, NodeId, Out, ReplicaCause, Rng, Time};

use super::txn_store::VnodeStore;
use crate::replica::{Replica, ReplicaError, ReplicaTuning, WalImage};

/// One hosted vnode replica.
#[derive(Debug)]
pub(crate) struct VnodeReplica {
    pub(crate) r: Replica<VnodeStore>,
    /// Created at boot as a member of the initial placement (it may campaign at once).
    pub(crate) bootstrapped: bool,
    /// When a message of this group last came from each peer (leaders' down peers).
    pub(crate) last_heard: BTreeMap<NodeId, Time>,
    /// When this node became the group's leader (peers unheard since get that long).
    pub(crate) led_since: Option<Time>,
    /// When a leader last sent this replica something (uninitialized replicas that no
    /// leader contacts for `stale_peer_check_ms` are dropped).
    pub(crate) last_leader_contact: Time,
    /// The epoch this node last reported for the group it leads (a change reports at once).
    pub(crate) reported: Option<(u64, u64)>,
}

impl VnodeReplica {
    /// Whether the replica's log or snapshot holds anything (else it is a placeholder
    /// waiting for its first snapshot or entries).
    pub(crate) fn initialized(&self) -> bool {
        self.r.raft.last_index() > 0 || self.r.raft.snapshot_meta().index > 0
    }

    fn may_tick(&self) -> bool {
        (self.bootstrapped || self.initialized()) && !self.r.told_removed()
    }

    /// The configuration epoch of the replica's log: applied configuration entries plus
    /// those appended but not applied yet.
    pub(crate) fn log_epoch(&self) -> u64 {
        let raft = &self.r.raft;
        let pending = (self.r.applied + 1..=raft.last_index())
            .filter(|&i| {
                raft.entry(i)
                    .is_some_and(|e| e.kind == EntryKind::ConfChange)
            })
            .count() as u64;
        self.r.conf_epoch + pending
    }

    /// Whether a configuration entry is appended but not applied yet.
    fn conf_change_pending(&self) -> bool {
        self.r.raft.conf_index() > self.r.applied
    }

    /// The applied configuration as the ring names it (`None` while a change is in
    /// flight: members and epoch would not match).
    pub(crate) fn replica_set(&self) -> Option<ReplicaSet> {
        if self.conf_change_pending() {
            return None;
        }
        let raft = &self.r.raft;
        Some(ReplicaSet {
            voters: raft.voters().iter().copied().collect(),
            outgoing: raft.voters_outgoing().iter().copied().collect(),
            learners: raft.learners().iter().copied().collect(),
            conf_epoch: ConfEpoch(self.r.conf_epoch),
        })
    }

    /// Approximate bytes of the replica's data (keys and values), for store reports.
    pub(crate) fn bytes(&self) -> u64 {
        self.r.machine.approx_bytes()
    }
}

/// What a group leader did with a step command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StepOutcome {
    /// The step's effect is already there: report the descriptor.
    AlreadyDone,
    /// Proposed (or a transfer started).
    Started,
    /// Not now (a change in flight, a learner catching up, not the leader): meta resends.
    Deferred(String),
    /// Refused for good (epoch moved, an impossible change).
    Refused(String),
}

/// The vnode replicas of one node, and the tombstones of destroyed ones.
#[derive(Debug, Default)]
pub(crate) struct Vnodes {
    pub(crate) replicas: BTreeMap<VnodeId, VnodeReplica>,
    pub(crate) tombstones: BTreeMap<VnodeId, u64>,
    pub(crate) next_read_ctx: u64,
    /// `[txn]`, shared by every replica's state machine.
    pub(crate) txn_cfg: std::sync::Arc<kvlab_txn::TxnConfig>,
}

/// What creating or running replicas needs from the node.
pub(crate) struct VnodeEnv<'a> {
    pub(crate) me: NodeId,
    pub(crate) raft: &'a RaftConfig,
    pub(crate) bootstrap: &'a Placement,
}

impl VnodeEnv<'_> {
    fn bootstrap_voters(&self, v: VnodeId) -> Vec<NodeId> {
        self.bootstrap
            .get(v)
            .map(|s| s.voters.iter().copied().collect())
            .unwrap_or_default()
    }

    fn build(
        &self,
        v: VnodeId,
        state: RecoveredState,
        rng: &mut Rng,
    ) -> Result<RaftGroup, RaftError> {
        RaftGroup::recover(
            vnode_group(v),
            self.me,
            &self.bootstrap_voters(v),
            self.raft.clone(),
            state,
            rng,
        )
    }
}

impl Vnodes {
    /// Rebuilds `v`'s replica (or tombstone) from what survived of it.
    pub(crate) fn recover(
        &mut self,
        env: &VnodeEnv<'_>,
        v: VnodeId,
        durable: GroupRecovery,
        now: Time,
        rng: &mut Rng,
        out: &mut Out<impl Sized>,
    ) -> Result<(), String> {
        let group = vnode_group(v);
        let mut wal: Vec<Vec<u8>> = Vec::new();
        if let Some(bytes) = &durable.snapshot {
            let image = WalImage::decode(bytes)
                .map_err(|e| format!("group {group}: durable snapshot: {e}"))?;
            if let Some(conf_epoch) = image.tombstone {
                self.tombstones.insert(v, conf_epoch);
            }
            wal.extend(image.records);
        }
        wal.extend(durable.records);
        if wal.is_empty() {
            return Ok(());
        }
        let state = RecoveredState::from_wal(group, &wal).map_err(|e| e.to_string())?;
        let raft = env.build(v, state, rng).map_err(|e| e.to_string())?;
        let bootstrapped =
            !self.tombstones.contains_key(&v) && env.bootstrap_voters(v).contains(&env.me);
        self.insert(v, raft, bootstrapped, now, ReplicaCause::Recovered, out);
        Ok(())
    }

    /// Creates the replicas of the initial placement that boot did not recover (a first
    /// boot, or a crash before anything of them was persisted).
    pub(crate) fn bootstrap(
        &mut self,
        env: &VnodeEnv<'_>,
        now: Time,
        rng: &mut Rng,
        out: &mut Out<impl Sized>,
    ) -> Result<(), String> {
        let mine: Vec<VnodeId> = env.bootstrap.vnodes_of(env.me).collect();
        for v in mine {
            if self.replicas.contains_key(&v) || self.tombstones.contains_key(&v) {
                continue;
            }
            let raft = env
                .build(v, RecoveredState::default(), rng)
                .map_err(|e| e.to_string())?;
            self.insert(v, raft, true, now, ReplicaCause::Bootstrap, out);
        }
        Ok(())
    }

    fn insert(
        &mut self,
        v: VnodeId,
        raft: RaftGroup,
        bootstrapped: bool,
        now: Time,
        cause: ReplicaCause,
        out: &mut Out<impl Sized>,
    ) {
        let group = raft.group();
        let rep = VnodeReplica {
            r: Replica::new(raft, VnodeStore::new(std::sync::Arc::clone(&self.txn_cfg))),
            bootstrapped,
            last_heard: BTreeMap::new(),
            led_since: None,
            last_leader_contact: now,
            reported: None,
        };
        self.replicas.insert(v, rep);
        out.event(NodeEvent::ReplicaCreated { group, cause });
    }

    /// The replica for a message of `v` from a leader with log epoch `epoch`: the hosted
    /// one, or a new one if the message may create it (see the module docs).
    pub(crate) fn for_message(
        &mut self,
        env: &VnodeEnv<'_>,
        v: VnodeId,
        m: &RaftMessage,
        epoch: u64,
        cx: &mut Cx<'_>,
        out: &mut Out<impl Sized>,
    ) -> Option<&mut VnodeReplica> {
        if !self.replicas.contains_key(&v) {
            let from_leader = matches!(
                m.body,
                MessageBody::AppendEntries { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::InstallSnapshot { .. }
            );
            let stale = self.tombstones.get(&v).is_some_and(|&e| epoch <= e);
            if !from_leader || stale {
                return None;
            }
            let raft = env.build(v, RecoveredState::default(), cx.rng).ok()?;
            self.insert(v, raft, false, cx.now, ReplicaCause::Contacted, out);
        }
        let rep = self.replicas.get_mut(&v)?;
        rep.last_heard.insert(m.from, cx.now);
        if matches!(
            m.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        ) {
            rep.last_leader_contact = cx.now;
        }
        Some(rep)
    }

    /// Ticks every replica that may tick.
    pub(crate) fn tick(&mut self, rng: &mut Rng) {
        for rep in self.replicas.values_mut() {
            if rep.may_tick() {
                rep.r.removed_by_conf = None;
                rep.r.raft.tick(rng);
            }
        }
    }

    /// Notes leadership changes (for down-peer grace).
    pub(crate) fn note_roles(&mut self, now: Time) {
        for rep in self.replicas.values_mut() {
            let leads = rep.r.raft.role() == Role::Leader;
            match (leads, rep.led_since) {
                (true, None) => rep.led_since = Some(now),
                (false, Some(_)) => {
                    rep.led_since = None;
                    rep.reported = None;
                }
                _ => {}
            }
        }
    }

    /// Destroys `v`'s replica for configuration epoch `conf_epoch`, if its log has not
    /// reached that epoch (see the module docs). Returns whether it did.
    pub(crate) fn destroy_stale(
        &mut self,
        v: VnodeId,
        conf_epoch: u64,
        out: &mut Out<impl Sized>,
    ) -> Option<Replica<VnodeStore>> {
        let rep = self.replicas.get(&v)?;
        if rep.log_epoch() >= conf_epoch {
            return None;
        }
        self.destroy(v, conf_epoch, out)
    }

    /// Forgets `v`'s replica and writes the tombstone `conf_epoch` durably; returns the
    /// replica so the caller can answer what waited on it.
    pub(crate) fn destroy(
        &mut self,
        v: VnodeId,
        conf_epoch: u64,
        out: &mut Out<impl Sized>,
    ) -> Option<Replica<VnodeStore>> {
        let rep = self.replicas.remove(&v)?;
        let conf_epoch = conf_epoch.max(self.tombstones.get(&v).copied().unwrap_or(0));
        self.tombstones.insert(v, conf_epoch);
        let group = vnode_group(v);
        out.save_snapshot(group, WalImage::tombstone(conf_epoch).encode());
        out.event(NodeEvent::ReplicaDestroyed { group, conf_epoch });
        Some(rep.r)
    }

    /// Uninitialized replicas that no leader contacted for `after` (a stale contact, an
    /// add that was cancelled).
    pub(crate) fn abandoned(&self, now: Time, after: Duration) -> Vec<VnodeId> {
        self.replicas
            .iter()
            .filter(|(_, r)| {
                !r.initialized()
                    && !r.bootstrapped
                    && now.saturating_since(r.last_leader_contact) >= after
            })
            .map(|(v, _)| *v)
            .collect()
    }

    /// The groups this node leads whose applied descriptor changed since it last
    /// reported (to report at once).
    pub(crate) fn descriptors_changed(&self) -> bool {
        self.replicas.values().any(|r| {
            r.r.raft.role() == Role::Leader
                && r.replica_set().is_some()
                && r.reported != Some((r.r.conf_epoch, r.r.raft.term()))
        })
    }

    /// The led groups for a store report, with their down peers; marks them reported.
    pub(crate) fn led_groups(&mut self, now: Time, peer_down_after: Duration) -> Vec<LedGroup> {
        let mut led = Vec::new();
        for (&v, rep) in self.replicas.iter_mut() {
            if rep.r.raft.role() != Role::Leader {
                continue;
            }
            let Some(set) = rep.replica_set() else {
                continue;
            };
            let since = rep.led_since.unwrap_or(now);
            let me = rep.r.raft.id();
            // A peer never heard from is timed from when this leader first saw it in the
            // configuration, not from when it began to lead: a learner just added (a
            // join) was reported down at once, meta marked the joiner Suspect, and
            // every join stalled for `suspect_hold_ms` after its first moves.
            let down_peers: Vec<NodeId> = set
                .nodes()
                .into_iter()
                .filter(|&n| n != me)
                .filter(|n| {
                    let heard = (*rep.last_heard.entry(*n).or_insert(now)).max(since);
                    now.saturating_since(heard) >= peer_down_after
                })
                .collect();
            rep.reported = Some((rep.r.conf_epoch, rep.r.raft.term()));
            led.push(LedGroup {
                descriptor: Descriptor::new(v, set),
                term: rep.r.raft.term(),
                down_peers,
            });
        }
        led
    }

    /// Carries out `cmd` on the group's leader (wave 2 §1.2; the contract is
    /// [`StepCommand`]'s).
    pub(crate) fn execute(
        &mut self,
        cmd: &StepCommand,
        lag_max: u64,
        swaps_voters: bool,
    ) -> StepOutcome {
        let Some(rep) = self.replicas.get_mut(&cmd.vnode) else {
            return StepOutcome::Deferred("no replica here".into());
        };
        let me = rep.r.raft.id();
        if rep.r.raft.role() != Role::Leader {
            return StepOutcome::Deferred("not the leader".into());
        }
        if rep.conf_change_pending() {
            return StepOutcome::Deferred("a configuration change is in flight".into());
        }
        let Some(set) = rep.replica_set() else {
            return StepOutcome::Deferred("a configuration change is in flight".into());
        };
        if cmd.step.is_done(&set, Some(me)) {
            return StepOutcome::AlreadyDone;
        }
        if let Some(expected) = cmd.expected_conf_epoch
            && expected != set.conf_epoch
        {
            return StepOutcome::Refused(format!(
                "epoch moved: the group is at {}, the step expects {}",
                set.conf_epoch.0, expected.0
            ));
        }
        if matches!(cmd.step, Step::AddLearner(_))
            && rep.r.raft.snapshot_meta().index < rep.r.applied
            && let Err(e) = rep.r.compact_now()
        {
            // Give a newcomer a snapshot rather than the whole log: data moves as
            // snapshots (wave 2 §4), paced by the node's snapshot limiter.
            return StepOutcome::Deferred(format!("snapshot for the learner: {e}"));
        }
        let raft = &mut rep.r.raft;
        let result = match &cmd.step {
            Step::AddLearner(n) => raft.propose_conf_change(ConfChange::AddLearner(*n)),
            Step::AddVoter(n) => {
                let caught_up = raft
                    .progress(*n)
                    .is_some_and(|p| p.match_index + lag_max >= raft.commit_index());
                if !caught_up {
                    return StepOutcome::Deferred(format!("learner {n} is catching up"));
                }
                raft.propose_conf_change(ConfChange::AddVoter(*n))
            }
            Step::RemoveNode(n) | Step::RemoveLearner(n) if *n == me => {
                return transfer_away(raft);
            }
            Step::RemoveNode(n) | Step::RemoveLearner(n) => {
                raft.propose_conf_change(ConfChange::RemoveNode(*n))
            }
            Step::TransferLeader(n) => {
                if !answering(raft, *n) {
                    // A transfer to a silent voter stalls the group's proposals for an
                    // election timeout and then is abandoned; wait until it answers.
                    return StepOutcome::Deferred(format!("voter {n} is not answering"));
                }
                return match raft.transfer_leader(*n) {
                    Ok(()) => StepOutcome::Started,
                    Err(e) => StepOutcome::Deferred(e.to_string()),
                };
            }
            Step::EnterJoint { promote, demote } => {
                if demote.contains(&me) {
                    return transfer_away(raft);
                }
                let lagging = promote.iter().find(|&&n| {
                    raft.progress(n)
                        .is_none_or(|p| p.match_index + lag_max < raft.commit_index())
                });
                if let Some(n) = lagging {
                    return StepOutcome::Deferred(format!("learner {n} is catching up"));
                }
                let ids = |set: &BTreeSet<NodeId>| {
                    let v: Vec<NodeId> = set.iter().copied().collect();
                    MemberSet::from_slice(&v).unwrap_or_default()
                };
                let change = JointChange {
                    add_voters: ids(promote),
                    demote_voters: ids(demote),
                    ..JointChange::default()
                };
                raft.propose_conf_change(ConfChange::EnterJoint(change))
            }
            Step::LeaveJoint => raft.propose_conf_change(ConfChange::LeaveJoint),
            Step::SwapVoters { add, remove } if swaps_voters => {
                if *remove == me {
                    return transfer_away(raft);
                }
                // The teaching bug: two voter changes in flight at once, no joint config.
                raft.propose_conf_change(ConfChange::AddVoter(*add))
                    .and_then(|_| raft.propose_conf_change(ConfChange::RemoveNode(*remove)))
            }
            Step::SwapVoters { .. } => {
                return StepOutcome::Refused(
                    "SwapVoters is the two-voters-without-joint teaching bug, which is off".into(),
                );
            }
        };
        match result {
            Ok(_) => StepOutcome::Started,
            Err(e @ RaftError::InvalidConfChange { .. }) => StepOutcome::Refused(e.to_string()),
            Err(e) => StepOutcome::Deferred(e.to_string()),
        }
    }

    /// Drives one replica's `Ready`s into `scratch` (messages unwrapped).
    pub(crate) fn drive_one(
        rep: &mut VnodeReplica,
        tuning: ReplicaTuning,
        scratch: &mut Out<RaftMessage>,
    ) -> Result<(), ReplicaError> {
        rep.r.drive(tuning, scratch, |m| m)
    }
}

/// Whether voter `n` answered the leader within the current CheckQuorum window: a
/// transfer to a crashed or cut-off voter would only stall the group.
fn answering(raft: &RaftGroup, n: NodeId) -> bool {
    raft.progress(n).is_some_and(|p| p.recent_active)
}

/// A leader asked to remove itself hands leadership to the most caught-up other voter
/// that is answering first (the step is then re-sent to the new leader).
fn transfer_away(raft: &mut RaftGroup) -> StepOutcome {
    let me = raft.id();
    let others: Vec<NodeId> = raft.voters().iter().copied().filter(|&n| n != me).collect();
    let to = others
        .iter()
        .copied()
        .filter(|&n| answering(raft, n))
        .max_by_key(|&n| {
            (
                raft.progress(n).map_or(0, |p| p.match_index),
                std::cmp::Reverse(n),
            )
        });
    match to {
        Some(to) => match raft.transfer_leader(to) {
            Ok(()) => StepOutcome::Deferred(format!("handing leadership to {to} first")),
            Err(e) => StepOutcome::Deferred(e.to_string()),
        },
        None if others.is_empty() => StepOutcome::Refused("the leader is the only voter".into()),
        None => StepOutcome::Deferred("no other voter is answering".into()),
    }
}
