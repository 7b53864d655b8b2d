//! Seeded fuzzing of [`RaftGroup::step`]: a three-node group runs honestly (ticks,
//! proposals, reads, compactions, lossy delivery, crashes that recover from what was
//! persisted) while forged messages are fed to its members — random field values with
//! `0`/`1`/`u64::MAX`-ish extremes and values just around the receiver's term and
//! indexes, random bytes decoded through postcard, and replays of real messages with
//! mutated fields or bytes.
//!
//! What must hold whatever arrives: no panic (every assertion of the crate stays on),
//! the local invariants (`applied <= commit <= last`, a term within [`MAX_TERM`]), every
//! message a member sends passes [`RaftMessage::validate`] and encodes within
//! [`RaftConfig::max_message_bytes`], and a member always recovers from its own
//! persisted records. Safety across members is not checked: Raft is not Byzantine
//! fault tolerant, and a well-formed forgery may legitimately mislead a replica.
//!
//! `cargo test` runs [`DEFAULT_INPUTS`] inputs. `KVLAB_FUZZ_SEED=N` reruns one case;
//! `KVLAB_FUZZ_INPUTS=N` scales the run; the ignored test runs millions (use
//! `--release`):
//! `KVLAB_FUZZ_INPUTS=5000000 cargo test --release -p kvlab-raft --test fuzz -- --ignored`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use kvlab_raft::*;
use kvlab_types::{NodeId, Rng, derive_seed, seeded_rng};
use rand::RngExt;

const GROUP: GroupId = GroupId(1);
const NODES: u32 = 3;
/// Inputs (forged or honest) per case; each case starts a fresh group from its own seed.
const INPUTS_PER_CASE: u64 = 1_000;
/// Inputs of the test `cargo test` runs (a few seconds in debug).
const DEFAULT_INPUTS: u64 = 100_000;
/// Inputs of the ignored long run, unless `KVLAB_FUZZ_INPUTS` says otherwise.
const LONG_INPUTS: u64 = 5_000_000;
/// Real messages kept for replay.
const MAX_CAPTURED: usize = 256;
/// Messages in flight in the honest network; older ones are lost beyond it.
const MAX_QUEUE: usize = 512;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

/// Small but valid limits, so that compaction, snapshots and batching happen within a
/// case.
fn cfg() -> RaftConfig {
    RaftConfig {
        election_ticks: 5,
        heartbeat_ticks: 1,
        max_entries_per_msg: 4,
        max_bytes_per_msg: 4 * (64 + ENTRY_OVERHEAD_BYTES),
        max_entry_bytes: 64,
        max_inflight_msgs: 4,
        max_uncommitted_entries: 64,
        snapshot_chunk_bytes: 16,
        max_snapshot_bytes: 4096,
        ..RaftConfig::default()
    }
}

struct Member {
    raft: RaftGroup,
    /// Every record it persisted, in order (its WAL).
    wal: Vec<RaftRecord>,
    rng: Rng,
}

struct Cluster {
    cfg: RaftConfig,
    members: Vec<Member>,
    queue: Vec<RaftMessage>,
    captured: Vec<RaftMessage>,
    rng: Rng,
    refused: u64,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let cfg = cfg();
        let voters: Vec<NodeId> = (1..=NODES).map(n).collect();
        let members = (1..=NODES)
            .map(|i| {
                let mut rng = seeded_rng(derive_seed(seed, "member", u64::from(i)));
                let raft = RaftGroup::new(GROUP, n(i), &voters, cfg.clone(), &mut rng)
                    .expect("valid config");
                Member {
                    raft,
                    wal: Vec::new(),
                    rng,
                }
            })
            .collect();
        Cluster {
            cfg,
            members,
            queue: Vec::new(),
            captured: Vec::new(),
            rng: seeded_rng(derive_seed(seed, "fuzz", 0)),
            refused: 0,
        }
    }

    fn member(&mut self, id: NodeId) -> &mut Member {
        &mut self.members[(id.0 - 1) as usize]
    }

    /// Carries out every `Ready` of `id` and checks what it asks for.
    fn drain(&mut self, id: NodeId) {
        let cfg = self.cfg.clone();
        let mut sent = Vec::new();
        let m = self.member(id);
        while m.raft.has_ready() {
            let rd = m.raft.ready();
            for r in &rd.records {
                if let RaftRecord::Entries(ents) = r {
                    let bytes: usize = ents.iter().map(Entry::size_bytes).sum();
                    assert!(
                        ents.len() == 1 || bytes <= cfg.max_bytes_per_msg,
                        "record of {bytes} bytes"
                    );
                }
            }
            m.wal.extend(rd.records);
            for msg in rd.messages {
                assert_eq!(msg.from, id);
                if let Err(d) = msg.validate(&cfg) {
                    panic!("{id} sent a message it would refuse ({d}): {msg:?}");
                }
                let len = postcard::to_allocvec(&msg).expect("encodes").len();
                assert!(len <= cfg.max_message_bytes(), "{len}-byte message");
                sent.push(msg);
            }
        }
        let g = &m.raft;
        assert!(g.term() <= MAX_TERM);
        assert!(g.applied_index() <= g.commit_index());
        assert!(g.commit_index() <= g.last_index());
        assert!(g.first_index() <= g.last_index() + 1);
        for msg in sent {
            if self.captured.len() >= MAX_CAPTURED {
                let k = self.rng.random_range(0..MAX_CAPTURED);
                self.captured[k] = msg.clone();
            } else {
                self.captured.push(msg.clone());
            }
            if self.queue.len() >= MAX_QUEUE {
                self.queue.remove(0);
            }
            self.queue.push(msg);
        }
    }

    fn step(&mut self, to: NodeId, msg: RaftMessage) {
        let m = self.member(to);
        if let Err(RaftError::MalformedMessage { .. }) = m.raft.step(msg, &mut m.rng) {
            self.refused += 1;
        }
        self.drain(to);
    }

    /// One honest action: deliver (or lose) a message, tick, propose, read, compact, or
    /// crash and recover a member from its WAL.
    fn honest(&mut self) {
        let id = n(self.rng.random_range(1..=NODES));
        match self.rng.random_range(0..100) {
            0..45 if !self.queue.is_empty() => {
                let k = self.rng.random_range(0..self.queue.len());
                let msg = self.queue.swap_remove(k);
                // A forged configuration may make a member send to nodes that do not
                // exist; those messages are lost.
                let known = (1..=NODES).contains(&msg.to.0);
                if known && self.rng.random_range(0..10) > 0 {
                    let to = msg.to;
                    self.step(to, msg);
                }
            }
            0..75 => {
                let m = self.member(id);
                m.raft.tick(&mut m.rng);
                self.drain(id);
            }
            75..88 => {
                let len = self.rng.random_range(0..=self.cfg.max_entry_bytes);
                let m = self.member(id);
                let _ = m.raft.propose(vec![7; len]);
                self.drain(id);
            }
            88..92 => {
                let ctx = self.rng.random::<u64>();
                let _ = self.member(id).raft.read_index(ctx);
                self.drain(id);
            }
            92..93 => {
                // Joint consensus among the three: demote one voter and back.
                let other = n(self.rng.random_range(1..=NODES));
                let auto_leave = self.rng.random();
                let m = self.member(id);
                let change = if m.raft.is_joint() {
                    ConfChange::LeaveJoint
                } else if let Some(&l) = m.raft.learners().first() {
                    ConfChange::EnterJoint(
                        JointChange::replace_voter(l, other).with_auto_leave(auto_leave),
                    )
                } else {
                    ConfChange::EnterJoint(JointChange {
                        demote_voters: MemberSet::from_slice(&[other]).unwrap(),
                        auto_leave,
                        ..JointChange::default()
                    })
                };
                let _ = m.raft.propose_conf_change(change);
                self.drain(id);
            }
            93..98 => {
                let len = self.rng.random_range(0..100);
                let m = self.member(id);
                let applied = m.raft.applied_index();
                let _ = m.raft.compact(applied, vec![3; len]);
                self.drain(id);
            }
            _ => self.restart(id),
        }
    }

    /// A crash: the member comes back from exactly what it persisted.
    fn restart(&mut self, id: NodeId) {
        let cfg = self.cfg.clone();
        let voters: Vec<NodeId> = (1..=NODES).map(n).collect();
        let m = self.member(id);
        let state = RecoveredState::from_records(m.wal.clone())
            .unwrap_or_else(|e| panic!("{id} cannot replay its own WAL: {e}"));
        m.raft = RaftGroup::recover(GROUP, id, &voters, cfg, state, &mut m.rng)
            .unwrap_or_else(|e| panic!("{id} cannot recover from its own WAL: {e}"));
        self.drain(id);
    }

    /// A forged message for `to`.
    fn forge(&mut self, to: NodeId) -> RaftMessage {
        let g = &self.members[(to.0 - 1) as usize].raft;
        let hints = [
            g.term(),
            g.term() + 1,
            g.term().saturating_sub(1),
            g.term() + MAX_TERM_JUMP,
            g.term() + MAX_TERM_JUMP + 1,
            g.last_index(),
            g.last_index() + 1,
            g.commit_index(),
            g.commit_index() + 1,
            g.first_index().saturating_sub(1),
        ];
        match self.rng.random_range(0..10) {
            0..5 => random_message(&mut self.rng, to, &hints),
            5..7 => {
                // Random bytes, many of which postcard refuses; keep the first it takes.
                for _ in 0..64 {
                    let len = self.rng.random_range(1..48);
                    let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                    if let Ok(m) = postcard::from_bytes::<RaftMessage>(&bytes) {
                        return retarget(&mut self.rng, m, to);
                    }
                }
                random_message(&mut self.rng, to, &hints)
            }
            _ if self.captured.is_empty() => random_message(&mut self.rng, to, &hints),
            7..9 => {
                let k = self.rng.random_range(0..self.captured.len());
                let m = self.captured[k].clone();
                let m = retarget(&mut self.rng, m, to);
                mutate_fields(&mut self.rng, m, &hints)
            }
            _ => {
                let k = self.rng.random_range(0..self.captured.len());
                let mut bytes = postcard::to_allocvec(&self.captured[k]).expect("encodes");
                for _ in 0..self.rng.random_range(1..4) {
                    let i = self.rng.random_range(0..bytes.len());
                    bytes[i] = self.rng.random();
                }
                match postcard::from_bytes::<RaftMessage>(&bytes) {
                    Ok(m) => retarget(&mut self.rng, m, to),
                    Err(_) => random_message(&mut self.rng, to, &hints),
                }
            }
        }
    }
}

/// Mostly addressed to `to` of our group from a member (so it gets past the cheap
/// checks), sometimes not.
fn retarget(rng: &mut Rng, mut m: RaftMessage, to: NodeId) -> RaftMessage {
    if rng.random_range(0..10) > 0 {
        m.group = GROUP;
        m.to = to;
        if m.from == to || m.from.0 == 0 || m.from.0 > NODES {
            m.from = n(to.0 % NODES + 1);
        }
    }
    m
}

/// An "interesting" u64: an extreme, a bound and its neighbours, a value around the
/// receiver's state, or anything.
fn pick(rng: &mut Rng, hints: &[u64]) -> u64 {
    const EXTREMES: [u64; 10] = [
        0,
        1,
        2,
        u64::MAX,
        u64::MAX - 1,
        MAX_TERM,
        MAX_TERM + 1,
        MAX_INDEX - 1,
        1 << 32,
        1 << 63,
    ];
    match rng.random_range(0..10) {
        0..3 => EXTREMES[rng.random_range(0..EXTREMES.len())],
        3..8 => hints[rng.random_range(0..hints.len())],
        8 => rng.random_range(0..16),
        _ => rng.random(),
    }
}

fn random_entries(rng: &mut Rng, hints: &[u64], prev: u64) -> Vec<Entry> {
    let count = rng.random_range(0..5);
    let contiguous = rng.random_range(0..3) > 0;
    let mut term = pick(rng, hints);
    (0..count)
        .map(|k| {
            if rng.random_range(0..4) == 0 {
                term = pick(rng, hints);
            }
            let index = if contiguous {
                prev.wrapping_add(1 + k)
            } else {
                pick(rng, hints)
            };
            let len = match rng.random_range(0..20) {
                0 => 65,
                1 => 64,
                _ => rng.random_range(0..8),
            };
            let kind = match rng.random_range(0..3) {
                0 => EntryKind::Normal,
                1 => EntryKind::Noop,
                _ => EntryKind::ConfChange,
            };
            let data = if kind == EntryKind::ConfChange && rng.random_range(0..2) == 0 {
                let node = n(rng.random_range(0..6));
                let change = match rng.random_range(0..5) {
                    0 => ConfChange::AddLearner(node),
                    1 => ConfChange::AddVoter(node),
                    2 => ConfChange::RemoveNode(node),
                    3 => ConfChange::LeaveJoint,
                    _ => {
                        // Often ill-formed (empty, a node named twice), sometimes fine.
                        let mut set = || {
                            let ids: Vec<NodeId> = (0..rng.random_range(0..3))
                                .map(|_| n(rng.random_range(0..6)))
                                .collect();
                            MemberSet::from_slice(&ids).unwrap_or_default()
                        };
                        ConfChange::EnterJoint(JointChange {
                            add_voters: set(),
                            demote_voters: set(),
                            add_learners: set(),
                            remove: set(),
                            auto_leave: rng.random(),
                        })
                    }
                };
                change.encode()
            } else {
                vec![rng.random(); len]
            };
            Entry {
                term,
                index,
                kind,
                data,
            }
        })
        .collect()
}

fn random_conf(rng: &mut Rng) -> ConfState {
    let mut set = || {
        if rng.random_range(0..4) == 0 {
            // Whatever postcard makes of random bytes: unsorted, overfull, duplicated.
            let bytes: Vec<u8> = (0..40).map(|_| rng.random_range(0..20)).collect();
            postcard::from_bytes::<MemberSet>(&bytes).unwrap_or_default()
        } else {
            let ids: Vec<NodeId> = (0..rng.random_range(0..5))
                .map(|_| n(rng.random_range(0..6)))
                .collect();
            MemberSet::from_slice(&ids).unwrap_or_default()
        }
    };
    let (voters, learners) = (set(), set());
    let (voters_outgoing, learners_next) = (set(), set());
    if rng.random_range(0..2) == 0 {
        return ConfState {
            voters,
            learners,
            ..ConfState::default()
        };
    }
    // A joint configuration, well formed or not.
    ConfState {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave: rng.random(),
    }
}

fn random_meta(rng: &mut Rng, hints: &[u64]) -> SnapshotMeta {
    SnapshotMeta {
        index: pick(rng, hints),
        term: pick(rng, hints),
        conf: if rng.random_range(0..2) == 0 {
            ConfState::default()
        } else {
            random_conf(rng)
        },
    }
}

fn random_body(rng: &mut Rng, hints: &[u64]) -> MessageBody {
    match rng.random_range(0..10) {
        0 => MessageBody::RequestVote {
            pre_vote: rng.random(),
            last_log_index: pick(rng, hints),
            last_log_term: pick(rng, hints),
            leader_transfer: rng.random(),
        },
        1 => MessageBody::RequestVoteResponse {
            pre_vote: rng.random(),
            granted: rng.random(),
        },
        2 => {
            let prev_log_index = pick(rng, hints);
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term: pick(rng, hints),
                entries: random_entries(rng, hints, prev_log_index),
                leader_commit: pick(rng, hints),
            }
        }
        3 => MessageBody::AppendEntriesResponse {
            result: if rng.random() {
                AppendResult::Accepted {
                    match_index: pick(rng, hints),
                }
            } else {
                AppendResult::Rejected {
                    prev_log_index: pick(rng, hints),
                    conflict_hint_index: pick(rng, hints),
                    conflict_hint_term: pick(rng, hints),
                }
            },
        },
        4 => MessageBody::Heartbeat {
            leader_commit: pick(rng, hints),
            read_round: pick(rng, hints),
        },
        5 => MessageBody::HeartbeatResponse {
            read_round: pick(rng, hints),
        },
        6 => {
            let len = rng.random_range(0..40);
            MessageBody::InstallSnapshot {
                snapshot: Box::new(random_meta(rng, hints)),
                offset: pick(rng, hints),
                data: vec![rng.random(); len],
                done: rng.random(),
            }
        }
        7 => MessageBody::InstallSnapshotResponse {
            snapshot: Box::new(random_meta(rng, hints)),
            next_offset: pick(rng, hints),
        },
        _ => MessageBody::TimeoutNow,
    }
}

fn random_message(rng: &mut Rng, to: NodeId, hints: &[u64]) -> RaftMessage {
    let from = match rng.random_range(0..12) {
        0 => to,
        1 => n(0),
        2 => n(u32::MAX),
        3 => n(NODES + 1),
        _ => n(rng.random_range(1..=NODES)),
    };
    let term = pick(rng, hints);
    let m = RaftMessage {
        group: GROUP,
        from,
        to,
        term,
        body: random_body(rng, hints),
    };
    if rng.random_range(0..30) == 0 {
        RaftMessage {
            group: GroupId(rng.random()),
            ..m
        }
    } else {
        m
    }
}

/// A real message with one or two fields replaced by interesting values.
fn mutate_fields(rng: &mut Rng, mut m: RaftMessage, hints: &[u64]) -> RaftMessage {
    for _ in 0..rng.random_range(1..3) {
        let v = pick(rng, hints);
        match (&mut m.body, rng.random_range(0..4)) {
            (_, 0) => m.term = v,
            (
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                },
                k,
            ) => match k {
                1 => *prev_log_index = v,
                2 => *leader_commit = v,
                _ => {
                    if let Some(e) = entries.first_mut() {
                        if rng.random() {
                            e.index = v;
                        } else {
                            e.term = v;
                        }
                    } else {
                        *prev_log_term = v;
                    }
                }
            },
            (MessageBody::Heartbeat { leader_commit, .. }, _) => *leader_commit = v,
            (MessageBody::HeartbeatResponse { read_round }, _) => *read_round = v,
            (MessageBody::AppendEntriesResponse { result }, _) => match result {
                AppendResult::Accepted { match_index } => *match_index = v,
                AppendResult::Rejected {
                    conflict_hint_index,
                    ..
                } => *conflict_hint_index = v,
            },
            (
                MessageBody::InstallSnapshot {
                    snapshot, offset, ..
                },
                k,
            ) => {
                if k == 1 {
                    *offset = v;
                } else {
                    snapshot.index = v;
                }
            }
            (MessageBody::InstallSnapshotResponse { next_offset, .. }, _) => *next_offset = v,
            (
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    ..
                },
                k,
            ) => {
                if k == 1 {
                    *last_log_index = v;
                } else {
                    *last_log_term = v;
                }
            }
            _ => m.term = v,
        }
    }
    m
}

/// What one case did, to show that the forgeries met a live group.
#[derive(Debug, Default)]
struct Totals {
    forged: u64,
    refused: u64,
    /// Inputs after which some member led.
    led: u64,
    /// Sum over cases of the highest commit index any member reached.
    committed: u64,
}

/// Runs one case: a fresh group, `inputs` inputs of which 2 to 40 % are forged.
fn run_case(seed: u64, inputs: u64, t: &mut Totals) {
    let mut c = Cluster::new(seed);
    let mut max_commit = 0;
    // Some cases are mostly honest (forgeries then meet a live, busy group), some are
    // a flood.
    let forged_per_100 = [2, 5, 10, 40][c.rng.random_range(0..4)];
    for _ in 0..inputs {
        if c.rng.random_range(0..100) < forged_per_100 {
            let to = n(c.rng.random_range(1..=NODES));
            let m = c.forge(to);
            t.forged += 1;
            c.step(to, m);
        } else {
            c.honest();
        }
        if c.members.iter().any(|m| m.raft.role() == Role::Leader) {
            t.led += 1;
        }
        let commit = c.members.iter().map(|m| m.raft.commit_index()).max();
        max_commit = max_commit.max(commit.unwrap_or(0));
    }
    t.refused += c.refused;
    // A forged snapshot or commit may claim any index; count honest-sized progress.
    t.committed += max_commit.min(INPUTS_PER_CASE);
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Runs `inputs` inputs in cases of [`INPUTS_PER_CASE`], each from its own seed; a
/// panic is reported with the seed that reproduces it.
fn fuzz(label: &str, inputs: u64) {
    let start = Instant::now();
    let cases: Vec<u64> = match env_u64("KVLAB_FUZZ_SEED") {
        Some(seed) => vec![seed],
        None => (0..inputs.div_ceil(INPUTS_PER_CASE))
            .map(|k| derive_seed(0x5eed, label, k))
            .collect(),
    };
    let mut t = Totals::default();
    for &seed in &cases {
        match catch_unwind(AssertUnwindSafe(|| run_case(seed, INPUTS_PER_CASE, &mut t))) {
            Ok(()) => {}
            Err(_) => panic!(
                "raft fuzz case failed (see the panic above)\n\
                 reproduce: KVLAB_FUZZ_SEED={seed} cargo test -p kvlab-raft --test fuzz -- --include-ignored"
            ),
        }
    }
    let total = cases.len() as u64 * INPUTS_PER_CASE;
    println!(
        "raft fuzz: {total} inputs in {} cases, {:.1} s: {t:?}",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    if cases.len() > 1 {
        assert!(t.refused > t.forged / 10, "few forgeries refused: {t:?}");
        assert!(t.led > total / 4, "the group rarely had a leader: {t:?}");
        assert!(
            t.committed > cases.len() as u64 * 5,
            "little progress: {t:?}"
        );
    }
}

#[test]
fn raft_group_survives_arbitrary_messages() {
    fuzz(
        "raft",
        env_u64("KVLAB_FUZZ_INPUTS").unwrap_or(DEFAULT_INPUTS),
    );
}

#[test]
#[ignore = "long: millions of inputs, run with --release"]
fn raft_group_survives_millions_of_arbitrary_messages() {
    fuzz(
        "raft-long",
        env_u64("KVLAB_FUZZ_INPUTS").unwrap_or(LONG_INPUTS),
    );
}
