//! A small deterministic test network for kvlab-raft: a Vec of in-flight messages, a
//! per-node simulated WAL whose unsynced tail a crash may lose, held sends that wait for
//! their sync (the `Effect::Sync` contract), and invariant checks (election safety, log
//! matching, leader completeness, state machine safety). No kvlab-sim dependency.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kvlab_raft::*;
use kvlab_types::{NodeId, Rng, derive_seed, seeded_rng};
use rand::RngExt;

pub const GROUP: GroupId = GroupId(1);

/// A batch of effects waiting for a sync to become durable.
#[derive(Debug)]
struct Held {
    sync_upto: usize,
    ready: Ready,
}

/// One simulated node: the Raft group (None while crashed), its WAL and state machine.
#[derive(Debug)]
pub struct Node {
    pub raft: Option<RaftGroup>,
    pub wal: Vec<Vec<u8>>,
    pub durable_len: usize,
    held: VecDeque<Held>,
    pub rng: Rng,
    /// The state machine: every entry applied since the last restore, in order.
    pub applied: Vec<(u64, u64, Vec<u8>)>,
    pub applied_index: u64,
    pub read_states: Vec<ReadState>,
    pub aborted_reads: Vec<u64>,
}

/// The network and its nodes.
#[derive(Debug)]
pub struct Net {
    /// Every node of the network (the pool membership changes draw from).
    pub ids: Vec<NodeId>,
    /// The group's bootstrap voters (a prefix of `ids`); the others start outside.
    pub bootstrap: Vec<NodeId>,
    pub cfg: RaftConfig,
    pub nodes: BTreeMap<NodeId, Node>,
    pub queue: Vec<RaftMessage>,
    /// Directed links that drop everything: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// When true, every sync completes at once (no crash can lose anything).
    pub auto_sync: bool,
    pub leaders_by_term: BTreeMap<u64, NodeId>,
    /// Every entry any node applied: index → (term, data, highest term led when first
    /// applied). Must never change.
    pub committed: BTreeMap<u64, (u64, Vec<u8>, u64)>,
    pub delivered: u64,
    pub stats: Stats,
    /// Reads requested and not yet granted: ctx → (node, highest index known committed
    /// anywhere when the read was requested). A read point below it misses a write that
    /// completed before the read began: not linearizable.
    pub pending_reads: BTreeMap<u64, (NodeId, u64)>,
    next_read_ctx: u64,
}

/// What the fault phase actually did, to prove the faults bit.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub dropped: u64,
    pub duplicated: u64,
    pub crashes: u64,
    pub lost_unsynced_records: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub compactions: u64,
    pub proposals_accepted: u64,
    /// Membership changes a leader accepted.
    pub conf_changes_proposed: u64,
    /// Membership-change entries applied (summed over nodes).
    pub conf_changes_applied: u64,
    /// Joint changes (`EnterJoint`, and `LeaveJoint` proposed by the harness) a leader
    /// accepted.
    pub joint_changes_proposed: u64,
    /// `EnterJoint` entries applied (summed over nodes).
    pub joint_entries_applied: u64,
    /// `LeaveJoint` entries applied (summed over nodes), automatic leaves included.
    pub leave_joint_entries_applied: u64,
    /// Reads granted (lease or ReadIndex) and checked against earlier commits.
    pub reads_granted: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.crashes += o.crashes;
        self.lost_unsynced_records += o.lost_unsynced_records;
        self.restarts += o.restarts;
        self.partitions += o.partitions;
        self.compactions += o.compactions;
        self.proposals_accepted += o.proposals_accepted;
        self.conf_changes_proposed += o.conf_changes_proposed;
        self.conf_changes_applied += o.conf_changes_applied;
        self.joint_changes_proposed += o.joint_changes_proposed;
        self.joint_entries_applied += o.joint_entries_applied;
        self.leave_joint_entries_applied += o.leave_joint_entries_applied;
        self.reads_granted += o.reads_granted;
    }
}

/// The state machine image carried in snapshots: the applied sequence.
fn encode_sm(applied: &[(u64, u64, Vec<u8>)]) -> Vec<u8> {
    postcard::to_allocvec(applied).expect("encode state machine")
}

fn decode_sm(bytes: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    postcard::from_bytes(bytes).expect("decode state machine")
}

pub fn ids(n: u32) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

impl Net {
    /// `n` fresh nodes; each node's RNG derives from `seed`.
    pub fn new(n: u32, cfg: RaftConfig, seed: u64) -> Net {
        let states = (0..n).map(|_| RecoveredState::default()).collect();
        Net::with_states(states, cfg, seed)
    }

    /// Nodes starting from the given durable states (node i+1 gets `states[i]`).
    pub fn with_states(states: Vec<RecoveredState>, cfg: RaftConfig, seed: u64) -> Net {
        let n = states.len() as u32;
        Net::with_pool_states(n, states, cfg, seed)
    }

    /// `pool` fresh nodes of which the first `voters` are the bootstrap voters; the
    /// others run but are outside the group until a membership change adds them.
    pub fn with_pool(voters: u32, pool: u32, cfg: RaftConfig, seed: u64) -> Net {
        let states = (0..pool).map(|_| RecoveredState::default()).collect();
        Net::with_pool_states(voters, states, cfg, seed)
    }

    fn with_pool_states(
        voters: u32,
        states: Vec<RecoveredState>,
        cfg: RaftConfig,
        seed: u64,
    ) -> Net {
        let ids = ids(states.len() as u32);
        let bootstrap = self::ids(voters);
        let mut nodes = BTreeMap::new();
        for (i, st) in states.into_iter().enumerate() {
            let id = ids[i];
            let mut rng = seeded_rng(derive_seed(seed, "raft-node", u64::from(id.0)));
            // Write the starting state to the WAL so that a restart finds it again.
            let mut wal = Vec::new();
            if let Some(s) = &st.snapshot {
                wal.push(rec(RaftRecord::Snapshot(s.clone())));
            }
            if !st.entries.is_empty() {
                wal.push(rec(RaftRecord::Entries(st.entries.clone())));
            }
            wal.push(rec(RaftRecord::HardState(st.hard_state)));
            let raft = RaftGroup::recover(GROUP, id, &bootstrap, cfg.clone(), st, &mut rng)
                .expect("valid recovered state");
            let durable_len = wal.len();
            nodes.insert(
                id,
                Node {
                    raft: Some(raft),
                    wal,
                    durable_len,
                    held: VecDeque::new(),
                    rng,
                    applied: Vec::new(),
                    applied_index: 0,
                    read_states: Vec::new(),
                    aborted_reads: Vec::new(),
                },
            );
        }
        let mut net = Net {
            ids,
            bootstrap,
            cfg,
            nodes,
            queue: Vec::new(),
            blocked: BTreeSet::new(),
            auto_sync: true,
            leaders_by_term: BTreeMap::new(),
            committed: BTreeMap::new(),
            delivered: 0,
            stats: Stats::default(),
            pending_reads: BTreeMap::new(),
            next_read_ctx: 0,
        };
        for id in net.ids.clone() {
            net.process(id).expect("initial ready");
        }
        net
    }

    pub fn raft(&self, id: NodeId) -> &RaftGroup {
        self.nodes[&id].raft.as_ref().expect("node is up")
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut RaftGroup {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raft.as_mut())
            .expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].raft.is_some()
    }

    /// Nodes that currently believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .map(|(id, r)| (id, r.term()))
            .collect()
    }

    /// The leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .max_by_key(|&(_, t)| t)
            .map(|(id, _)| id)
    }

    /// Takes the node's Ready and carries it out: records to the WAL, then (after the
    /// sync, at once if `auto_sync`) messages to the network and entries to the state
    /// machine.
    pub fn process(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        if !raft.has_ready() {
            return Ok(());
        }
        let mut rd = raft.ready();
        // Early messages (a parallel leader's appends) leave before the records are even
        // written: they promise nothing about this node's disk.
        self.queue.append(&mut rd.early_messages);
        let node = self.nodes.get_mut(&id).expect("known node");
        for r in rd.records.drain(..) {
            node.wal.push(rec(r));
        }
        if rd.apply_before_sync {
            // Committed entries are durable on a quorum already: apply them now, before
            // this node's own sync, as a parallel leader's caller does.
            let apply = Ready {
                restore: rd.restore.take(),
                committed_entries: std::mem::take(&mut rd.committed_entries),
                read_states: std::mem::take(&mut rd.read_states),
                aborted_reads: std::mem::take(&mut rd.aborted_reads),
                ..Ready::default()
            };
            self.apply(id, apply)?;
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        let held = Held {
            sync_upto: node.wal.len(),
            ready: rd,
        };
        node.held.push_back(held);
        if self.auto_sync {
            while self.complete_sync(id)? {}
        }
        self.check_election_safety()
    }

    /// Completes the node's oldest pending sync; returns whether there was one.
    pub fn complete_sync(&mut self, id: NodeId) -> Result<bool, String> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(held) = node.held.pop_front() else {
            return Ok(false);
        };
        node.durable_len = node.durable_len.max(held.sync_upto);
        let mut rd = held.ready;
        self.queue.append(&mut rd.messages);
        self.apply(id, rd)?;
        Ok(true)
    }

    /// Restores, applies and serves what `rd` holds, and checks state machine safety and
    /// the read points.
    fn apply(&mut self, id: NodeId, rd: Ready) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(s) = rd.restore {
            node.applied = decode_sm(&s.data);
            node.applied_index = s.meta.index;
            if node.applied.last().map_or(0, |e| e.0) != s.meta.index {
                return Err(format!("{id:?}: snapshot image does not end at its index"));
            }
        }
        for e in rd.committed_entries {
            if e.index != node.applied_index + 1 {
                return Err(format!(
                    "{id:?} applied {} after {} (out of order)",
                    e.index, node.applied_index
                ));
            }
            node.applied_index = e.index;
            if e.kind == EntryKind::ConfChange {
                self.stats.conf_changes_applied += 1;
                match e.conf_change() {
                    Some(ConfChange::EnterJoint(_)) => self.stats.joint_entries_applied += 1,
                    Some(ConfChange::LeaveJoint) => self.stats.leave_joint_entries_applied += 1,
                    _ => {}
                }
            }
            node.applied.push((e.index, e.term, e.data.clone()));
        }
        for r in &rd.read_states {
            if let Some((_, floor)) = self.pending_reads.remove(&r.ctx) {
                self.stats.reads_granted += 1;
                if r.index < floor {
                    return Err(format!(
                        "linearizable reads: {id:?} granted read {} at index {} but index \
                         {floor} was committed before the read was requested",
                        r.ctx, r.index
                    ));
                }
            }
        }
        for ctx in &rd.aborted_reads {
            self.pending_reads.remove(ctx);
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        node.read_states.extend(rd.read_states);
        node.aborted_reads.extend(rd.aborted_reads);
        // State machine safety: an index is applied with the same entry everywhere.
        let node = &self.nodes[&id];
        let led_bound = self
            .leaders_by_term
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        for (index, term, data) in node.applied.iter().rev().take(64) {
            match self.committed.get(index) {
                Some((t, d, _)) if t != term || d != data => {
                    return Err(format!(
                        "state machine safety: {id:?} applied index {index} term {term} but \
                         term {t} was applied elsewhere"
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed
                        .insert(*index, (*term, data.clone(), led_bound));
                }
            }
        }
        Ok(())
    }

    pub fn check_election_safety(&mut self) -> Result<(), String> {
        for (id, term) in self.leaders() {
            match self.leaders_by_term.get(&term) {
                Some(other) if *other != id => {
                    return Err(format!(
                        "election safety: {id:?} and {other:?} both lead term {term}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.leaders_by_term.insert(term, id);
                }
            }
        }
        Ok(())
    }

    /// Log matching (Raft §5.3) over every pair of live nodes, and leader completeness
    /// (§5.4): every applied entry is in every current leader's log.
    pub fn check_logs(&self) -> Result<(), String> {
        let live: Vec<&RaftGroup> = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .collect();
        for (i, a) in live.iter().enumerate() {
            for b in &live[i + 1..] {
                let lo = a.first_index().max(b.first_index());
                let hi = a.last_index().min(b.last_index());
                let mut agree_below = false;
                for idx in (lo..=hi).rev() {
                    let (ea, eb) = (a.entry(idx), b.entry(idx));
                    match (ea, eb) {
                        (Some(x), Some(y)) if x.term == y.term => {
                            if x != y {
                                return Err(format!(
                                    "log matching: {:?} and {:?} differ at {idx} with the same term",
                                    a.id(),
                                    b.id()
                                ));
                            }
                            agree_below = true;
                        }
                        (Some(x), Some(y)) if agree_below => {
                            return Err(format!(
                                "log matching: {:?} and {:?} agree above {idx} but differ there ({} vs {})",
                                a.id(),
                                b.id(),
                                x.term,
                                y.term
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        for leader in live.iter().filter(|r| r.role() == Role::Leader) {
            for (idx, (term, data, led_bound)) in self.committed.range(leader.first_index()..) {
                // Leader completeness binds leaders of terms after the commit; the entry
                // was committed by a leader of term at most `led_bound`.
                if leader.term() <= *led_bound {
                    continue;
                }
                match leader.entry(*idx) {
                    Some(e) if e.term == *term && e.data == *data => {}
                    other => {
                        return Err(format!(
                            "leader completeness: leader {:?} of term {} lacks applied entry {idx} (term {term}); has {:?}",
                            leader.id(),
                            leader.term(),
                            other.map(|e| e.term)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// One line per live node: role, term, log and configuration, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (id, n) in &self.nodes {
            if let Some(r) = &n.raft {
                out += &format!(
                    "\n  {id:?}: {:?} term {} leader {:?} last {} commit {} conf@{} voters {:?} outgoing {:?} learners {:?} next {:?}",
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.last_index(),
                    r.commit_index(),
                    r.conf_index(),
                    r.voters(),
                    r.voters_outgoing(),
                    r.learners(),
                    r.learners_next()
                );
            }
        }
        out
    }

    pub fn tick(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(raft) = node.raft.as_mut() {
            raft.tick(&mut node.rng);
        }
        self.process(id)
    }

    /// The highest index known committed anywhere: live commit indexes and every
    /// index some node applied.
    pub fn max_known_commit(&self) -> u64 {
        let live = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .map(RaftGroup::commit_index)
            .max()
            .unwrap_or(0);
        let applied = self.committed.keys().next_back().copied().unwrap_or(0);
        live.max(applied)
    }

    /// Asks `id` for a read point, recording the commit floor it must not fall below.
    pub fn request_read(&mut self, id: NodeId) -> Result<(), String> {
        self.next_read_ctx += 1;
        let ctx = self.next_read_ctx;
        let floor = self.max_known_commit();
        if self.raft_mut(id).read_index(ctx).is_ok() {
            self.pending_reads.insert(ctx, (id, floor));
        }
        self.process(id)
    }

    pub fn tick_all(&mut self) -> Result<(), String> {
        for id in self.ids.clone() {
            self.tick(id)?;
        }
        Ok(())
    }

    /// Delivers queue[i] (removing it) unless its link is blocked or its target is down.
    pub fn deliver_at(&mut self, i: usize) -> Result<(), String> {
        let m = self.queue.remove(i);
        self.deliver(m)
    }

    pub fn deliver(&mut self, m: RaftMessage) -> Result<(), String> {
        if self.blocked.contains(&(m.from, m.to)) {
            return Ok(());
        }
        let to = m.to;
        let node = self.nodes.get_mut(&to).expect("known node");
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        self.delivered += 1;
        if let Err(e) = raft.step(m, &mut node.rng) {
            return Err(format!("{to:?} rejected a message: {e}"));
        }
        self.process(to)
    }

    /// Delivers messages in FIFO order until none is left (bounded).
    pub fn deliver_all(&mut self) -> Result<(), String> {
        const MAX_DELIVERIES: usize = 1_000_000;
        for _ in 0..MAX_DELIVERIES {
            if self.queue.is_empty() {
                return Ok(());
            }
            self.deliver_at(0)?;
        }
        Err("deliver_all: message storm did not settle".into())
    }

    /// Ticks `id` until it starts an election and delivers everything.
    pub fn elect(&mut self, id: NodeId) -> Result<(), String> {
        const MAX_TICKS: usize = 100;
        for _ in 0..MAX_TICKS {
            if self.raft(id).role() != Role::Follower {
                break;
            }
            self.tick(id)?;
        }
        self.deliver_all()
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Result<EntryId, RaftError> {
        let r = self.raft_mut(id).propose(data.to_vec());
        self.process(id).expect("process after propose");
        r
    }

    pub fn isolate(&mut self, id: NodeId) {
        for &o in &self.ids {
            if o != id {
                self.blocked.insert((id, o));
                self.blocked.insert((o, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Crashes `id`: held sends are lost, and of the unsynced WAL tail only the first
    /// `keep_unsynced` records survive (a prefix, as a real disk may have written them).
    pub fn crash(&mut self, id: NodeId, keep_unsynced: usize) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let keep = (node.durable_len + keep_unsynced).min(node.wal.len());
        node.wal.truncate(keep);
        node.durable_len = keep;
        node.held.clear();
        node.raft = None;
        node.applied.clear();
        node.applied_index = 0;
    }

    /// Restarts `id` from its WAL.
    pub fn restart(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let st = RecoveredState::from_wal(GROUP, &node.wal).map_err(|e| e.to_string())?;
        let raft = RaftGroup::recover(
            GROUP,
            id,
            &self.bootstrap,
            self.cfg.clone(),
            st,
            &mut node.rng,
        )
        .map_err(|e| e.to_string())?;
        node.raft = Some(raft);
        self.process(id)
    }

    /// Compacts `id`'s log up to what it applied, with its state machine as snapshot.
    pub fn compact(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let idx = node.applied_index;
        if idx <= raft.snapshot_meta().index {
            return Ok(());
        }
        raft.compact(idx, encode_sm(&node.applied))
            .map_err(|e| e.to_string())?;
        self.process(id)
    }

    /// Liveness: with the network healed and every node up, a leader is elected and a
    /// fresh command commits on every node within a bounded number of ticks.
    pub fn converge(&mut self, label: &[u8]) -> Result<(), String> {
        const MAX_ROUNDS: usize = 400;
        self.heal();
        self.auto_sync = true;
        for id in self.ids.clone() {
            while self.complete_sync(id)? {}
            if !self.is_up(id) {
                self.restart(id)?;
            }
        }
        let mut proposed: Option<(NodeId, EntryId)> = None;
        for _ in 0..MAX_ROUNDS {
            self.deliver_all()?;
            self.check_logs()?;
            if let Some((l, at)) = proposed {
                // Every member of the leader's configuration (removed nodes get nothing).
                let members: Vec<NodeId> = if self.is_up(l) {
                    self.raft(l).conf_state().members()
                } else {
                    self.ids.clone()
                };
                let done = members.iter().all(|id| {
                    self.nodes[id]
                        .applied
                        .iter()
                        .any(|(i, t, d)| *i == at.index && *t == at.term && d == label)
                });
                if done {
                    return Ok(());
                }
            }
            if let Some(l) = self.leader() {
                let stale = proposed.is_none_or(|(p, at)| p != l || self.raft(l).term() != at.term);
                if stale && let Ok(at) = self.propose(l, label) {
                    proposed = Some((l, at));
                }
            }
            self.tick_all()?;
        }
        Err(format!(
            "liveness: no convergence within {MAX_ROUNDS} rounds; leaders {:?}; nodes: {}",
            self.leaders(),
            self.describe()
        ))
    }

    /// Splits the network into a random side and the rest (adding to what is blocked).
    fn split_randomly(&mut self, rng: &mut Rng) {
        let mut side = BTreeSet::new();
        for &id in &self.ids {
            if rng.random_range(0..2) == 0 {
                side.insert(id);
            }
        }
        for &a in &self.ids {
            for &b in &self.ids {
                if side.contains(&a) != side.contains(&b) {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    /// Randomized fault injection for `steps` events, drawn from `rng`.
    pub fn chaos(&mut self, rng: &mut Rng, steps: usize, faults: &Faults) -> Result<(), String> {
        self.auto_sync = false;
        let n = self.ids.len();
        // Clock drift: node k's clock ticks `rates[k]` times as often as a rate-1 clock.
        // Rates are redrawn every `DRIFT_PERIOD_STEPS`, so that a leader elected for its
        // fast clock may find itself the slow one.
        const DRIFT_PERIOD_STEPS: usize = 300;
        let mut rates: Vec<u32> = vec![1; n];
        for step in 0..steps {
            if faults.drift_max_rate > 1 && step % DRIFT_PERIOD_STEPS == 0 {
                for r in rates.iter_mut() {
                    *r = rng.random_range(faults.drift_min_rate.max(1)..=faults.drift_max_rate);
                }
            }
            let pick = self.ids[rng.random_range(0..n)];
            match chaos_roll(rng, faults) {
                0..450 if !self.queue.is_empty() => self.chaos_deliver(rng, faults)?,
                450..600 => {
                    // One fsync makes everything written so far durable (group commit).
                    while self.complete_sync(pick)? {}
                }
                600..850 if faults.drift_max_rate > 1 => self.chaos_tick_drifted(rng, &rates)?,
                600..850 => self.tick(pick)?,
                930 => {
                    // Ask whoever believes it leads (the stale ones included).
                    for (l, _) in self.leaders() {
                        self.request_read(l)?;
                    }
                }
                850..890 => {
                    if let Some(l) = self.leader() {
                        let data = format!("c{step}").into_bytes();
                        if self.propose(l, &data).is_ok() {
                            self.stats.proposals_accepted += 1;
                        }
                    }
                }
                900 if faults.crash && self.is_up(pick) => self.chaos_crash(rng, pick),
                902 if faults.crash && !self.is_up(pick) => {
                    self.stats.restarts += 1;
                    self.restart(pick)?;
                }
                910 if faults.partition => self.chaos_partition(rng, pick),
                920 => self.chaos_single_server_change(pick)?,
                940 => self.chaos_joint_step(rng, faults)?,
                890..900 if faults.compact => {
                    let before = self.is_up(pick).then(|| self.raft(pick).snapshot_meta());
                    self.compact(pick)?;
                    if before.is_some_and(|b| b != self.raft(pick).snapshot_meta()) {
                        self.stats.compactions += 1;
                    }
                }
                _ => {}
            }
            if step % 64 == 0 {
                self.check_logs()?;
            }
        }
        self.check_logs()
    }

    /// Delivers (or drops, or duplicates and delivers) a queued message: the first one,
    /// or a random one when reordering.
    fn chaos_deliver(&mut self, rng: &mut Rng, faults: &Faults) -> Result<(), String> {
        let i = if faults.reorder {
            rng.random_range(0..self.queue.len())
        } else {
            0
        };
        if rng.random_range(0..1000) < faults.drop_per_mille {
            self.queue.remove(i);
            self.stats.dropped += 1;
            return Ok(());
        }
        if rng.random_range(0..1000) < faults.duplicate_per_mille {
            self.stats.duplicated += 1;
            let copy = self.queue[i].clone();
            self.queue.push(copy);
        }
        self.deliver_at(i)
    }

    /// One tick of a node drawn in proportion to its clock rate.
    fn chaos_tick_drifted(&mut self, rng: &mut Rng, rates: &[u32]) -> Result<(), String> {
        let mut k = rng.random_range(0..rates.iter().sum::<u32>());
        let mut i = 0;
        while k >= rates[i] {
            k -= rates[i];
            i += 1;
        }
        self.tick(self.ids[i])
    }

    /// Crashes `pick`, keeping 0–2 of its unsynced records.
    fn chaos_crash(&mut self, rng: &mut Rng, pick: NodeId) {
        let keep = rng.random_range(0..3);
        let node = &self.nodes[&pick];
        let unsynced = (node.wal.len() - node.durable_len) as u64;
        self.stats.lost_unsynced_records += unsynced.saturating_sub(keep as u64);
        self.stats.crashes += 1;
        self.crash(pick, keep);
    }

    /// Heals, then isolates `pick`, splits the network at random, cuts one link, or
    /// leaves it whole.
    fn chaos_partition(&mut self, rng: &mut Rng, pick: NodeId) {
        self.heal();
        self.stats.partitions += 1;
        match rng.random_range(0..4) {
            0 => self.isolate(pick),
            1 => self.split_randomly(rng),
            2 => {
                let other = self.ids[rng.random_range(0..self.ids.len())];
                if other != pick {
                    self.blocked.insert((pick, other));
                }
            }
            _ => {}
        }
    }

    /// Random single-server change among the pool: a voter is removed, a learner
    /// promoted, an outsider added as a learner.
    fn chaos_single_server_change(&mut self, pick: NodeId) -> Result<(), String> {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let r = self.raft(l);
        let change = if r.voters().contains(&pick) {
            ConfChange::RemoveNode(pick)
        } else if r.learners().contains(&pick) {
            ConfChange::AddVoter(pick)
        } else {
            ConfChange::AddLearner(pick)
        };
        let res = self.raft_mut(l).propose_conf_change(change);
        self.process(l)?;
        if res.is_ok() {
            self.stats.conf_changes_proposed += 1;
        }
        Ok(())
    }

    /// The wave-2 replace operator, one step at a time: a joint leader leaves; otherwise
    /// a learner replaces a random voter (the leader included), demoted to a learner or
    /// removed, with or without automatic leave; without a learner, an outsider is added
    /// as one.
    fn chaos_joint_step(&mut self, rng: &mut Rng, faults: &Faults) -> Result<(), String> {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let Some(change) = self.next_joint_change(rng, l) else {
            return Ok(());
        };
        let res = self.raft_mut(l).propose_conf_change(change);
        self.process(l)?;
        if res.is_ok() {
            self.stats.conf_changes_proposed += 1;
            if !matches!(change, ConfChange::AddLearner(_)) {
                self.stats.joint_changes_proposed += 1;
            }
            // A partition in the middle of a reconfiguration.
            if rng.random_range(0..1000) < faults.split_after_joint_per_mille {
                self.heal();
                self.stats.partitions += 1;
                self.split_randomly(rng);
            }
        }
        Ok(())
    }

    /// The next step of the replace operator on leader `l`'s configuration.
    fn next_joint_change(&self, rng: &mut Rng, l: NodeId) -> Option<ConfChange> {
        let r = self.raft(l);
        // As the wave-2 operator does, promote only learners that have caught up
        // (within a few entries of the commit index).
        const CATCH_UP_LAG_ENTRIES: u64 = 16;
        let caught_up = |n: &NodeId| {
            r.progress(*n)
                .is_some_and(|p| p.match_index + CATCH_UP_LAG_ENTRIES >= r.commit_index())
        };
        let mut voters = r.voters().to_vec();
        let mut learners: Vec<NodeId> = r.learners().iter().copied().filter(caught_up).collect();
        if r.is_joint() {
            return Some(ConfChange::LeaveJoint);
        }
        if learners.is_empty() {
            // Nobody to promote yet: add an outsider as a learner.
            let outsiders: Vec<NodeId> = self
                .ids
                .iter()
                .copied()
                .filter(|&n| !r.is_member(n))
                .collect();
            let k = rng.random_range(0..outsiders.len().max(1));
            return outsiders.get(k).map(|&n| ConfChange::AddLearner(n));
        }
        // Usually one voter, sometimes two at once when two learners are there (a change
        // single-server steps cannot make in one go).
        let count = if learners.len() >= 2 && voters.len() >= 3 {
            rng.random_range(1..=2)
        } else {
            1
        };
        let mut add = Vec::new();
        let mut out = Vec::new();
        for _ in 0..count {
            add.push(learners.swap_remove(rng.random_range(0..learners.len())));
            out.push(voters.swap_remove(rng.random_range(0..voters.len())));
        }
        let add = MemberSet::from_slice(&add).expect("few");
        let out = MemberSet::from_slice(&out).expect("few");
        let j = if rng.random_range(0..2) == 0 {
            JointChange {
                add_voters: add,
                demote_voters: out,
                ..JointChange::default()
            }
        } else {
            JointChange {
                add_voters: add,
                remove: out,
                ..JointChange::default()
            }
        };
        Some(ConfChange::EnterJoint(
            j.with_auto_leave(rng.random_range(0..2) == 0),
        ))
    }
}

/// The kind of the next chaos event: a fault by its per-10k rate (900 crash, 902
/// restart, 910 partition, 920 single-server change, 930 reads, 940 joint step), else a
/// normal event in `0..900`.
fn chaos_roll(rng: &mut Rng, faults: &Faults) -> u32 {
    let fault_roll: u32 = rng.random_range(0..10_000);
    let rates = [
        (faults.crash_per_10k, 900),
        (faults.restart_per_10k, 902),
        (faults.partition_per_10k, 910),
        (faults.membership_per_10k, 920),
        (faults.reads_per_10k, 930),
        (faults.joint_per_10k, 940),
    ];
    let mut bound = 0;
    for (rate, kind) in rates {
        bound += rate;
        if fault_roll < bound {
            return kind;
        }
    }
    rng.random_range(0..900)
}

/// Which faults [`Net::chaos`] injects.
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub reorder: bool,
    pub partition: bool,
    pub crash: bool,
    pub compact: bool,
    /// Chance per step (in 1/10,000) of crashing a node.
    pub crash_per_10k: u32,
    /// Chance per step (in 1/10,000) of restarting a node if it is down.
    pub restart_per_10k: u32,
    /// Chance per step (in 1/10,000) of replacing the partition (or healing).
    pub partition_per_10k: u32,
    /// Chance per step (in 1/10,000) of proposing a random membership change.
    pub membership_per_10k: u32,
    /// Chance per step (in 1/10,000) of asking every self-styled leader for a read.
    pub reads_per_10k: u32,
    /// Chance per step (in 1/10,000) of a joint-consensus step: entering a joint
    /// configuration that replaces a voter by a learner, or leaving one.
    pub joint_per_10k: u32,
    /// Chance (in 1/1,000) that an accepted joint step is followed at once by a random
    /// split of the network: a partition in the middle of a reconfiguration.
    pub split_after_joint_per_mille: u32,
    /// Above 1: each node's clock gets a rate in `1..=drift_max_rate` (redrawn every few
    /// hundred steps), and a tick step picks a node with probability proportional to its
    /// rate (sustained clock drift, as the simulator's per-node tick rates model it).
    pub drift_max_rate: u32,
    /// The slowest clock rate drawn when `drift_max_rate` > 1 (0 or 1: rate 1). With
    /// rates in `5..=6`, clocks differ by at most 1.2x: bounded drift.
    pub drift_min_rate: u32,
}

impl Faults {
    pub fn all() -> Faults {
        Faults {
            drop_per_mille: 100,
            duplicate_per_mille: 20,
            reorder: true,
            partition: true,
            crash: true,
            compact: true,
            crash_per_10k: 20,
            restart_per_10k: 80,
            partition_per_10k: 30,
            membership_per_10k: 0,
            reads_per_10k: 0,
            joint_per_10k: 0,
            split_after_joint_per_mille: 0,
            drift_max_rate: 0,
            drift_min_rate: 0,
        }
    }

    /// [`Faults::all`] plus random membership changes among the node pool.
    pub fn with_membership() -> Faults {
        Faults {
            membership_per_10k: 60,
            ..Faults::all()
        }
    }

    /// [`Faults::with_membership`] plus joint-consensus steps (replace a voter by a
    /// learner through a joint configuration, leave it).
    pub fn with_joint() -> Faults {
        Faults {
            joint_per_10k: 200,
            split_after_joint_per_mille: 100,
            ..Faults::with_membership()
        }
    }

    /// Reconfiguration under partitions: joint operator steps only (no single-server
    /// changes), each followed by a random split of the network that lasts until the
    /// next step; loss, duplication and reordering, no crashes and no other
    /// partitions. A joint decision taken by the wrong majority shows when the split
    /// separates the nodes that already switched to the joint configuration from an
    /// old majority that did not.
    pub fn splits_at_reconfiguration() -> Faults {
        Faults {
            crash_per_10k: 0,
            partition_per_10k: 0,
            membership_per_10k: 0,
            joint_per_10k: 400,
            split_after_joint_per_mille: 1000,
            ..Faults::all()
        }
    }

    /// Dense crashes and partitions, for hunting the deliberately broken variants.
    pub fn aggressive() -> Faults {
        Faults {
            crash_per_10k: 80,
            restart_per_10k: 300,
            partition_per_10k: 120,
            ..Faults::all()
        }
    }
}

pub fn rec(r: RaftRecord) -> Vec<u8> {
    WalRecord {
        group: GROUP,
        record: r,
    }
    .encode()
}

/// Entries with the given terms, at indexes 1, 2, …
pub fn entries_with_terms(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            term: t,
            index: i as u64 + 1,
            kind: EntryKind::Normal,
            data: format!("t{t}i{}", i + 1).into_bytes(),
        })
        .collect()
}

/// A durable state with the given log terms and current term.
pub fn state_with_log(terms: &[u64], term: u64) -> RecoveredState {
    RecoveredState {
        hard_state: HardState {
            term,
            vote: None,
            commit: 0,
        },
        snapshot: None,
        entries: entries_with_terms(terms),
    }
}

/// A config for tests: PreVote and CheckQuorum on, small election timeout.
pub fn test_cfg() -> RaftConfig {
    RaftConfig {
        election_ticks: 10,
        heartbeat_ticks: 1,
        ..RaftConfig::default()
    }
}
