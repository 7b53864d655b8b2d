//! Joint consensus (Ongaro's thesis §4.3; etcd raft's `ConfChangeV2`): paper tests, one
//! per rule, each ending with the section it checks, plus the wave-2 replace operator
//! (`AddLearner(Y)` → `EnterJoint{promote Y, demote X}` → `LeaveJoint` →
//! `RemoveNode(X)`) and recovery in the middle of a joint configuration.
//!
//! Most scripted tests use one shape: voters C_old = {1, 2, 3}, learners 4 and 5, and
//! the joint change `EnterJoint{add 4 and 5, remove 2 and 3}`, so that C_new = {1, 4, 5}.
//! The two configurations share only node 1, so {1, 4, 5} is a majority of C_new and a
//! minority of C_old, {1, 2, 3} the other way round.

mod common;

use common::*;
use kvlab_raft::*;
use kvlab_types::{MembershipChange, NodeEvent, NodeId, seeded_rng};
use serde::Serialize;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

fn set(ids: &[u32]) -> MemberSet {
    MemberSet::from_slice(&ids.iter().map(|&i| n(i)).collect::<Vec<_>>()).unwrap()
}

fn nodes(ids: &[u32]) -> Vec<NodeId> {
    ids.iter().map(|&i| n(i)).collect()
}

fn plain_cfg() -> RaftConfig {
    RaftConfig {
        pre_vote: false,
        check_quorum: false,
        ..test_cfg()
    }
}

fn msg(from: u32, to: u32, term: u64, body: MessageBody) -> RaftMessage {
    RaftMessage {
        group: GROUP,
        from: n(from),
        to: n(to),
        term,
        body,
    }
}

fn accept(from: u32, term: u64, match_index: u64) -> RaftMessage {
    msg(
        from,
        1,
        term,
        MessageBody::AppendEntriesResponse {
            result: AppendResult::Accepted { match_index },
        },
    )
}

fn vote(from: u32, term: u64, granted: bool) -> RaftMessage {
    msg(
        from,
        1,
        term,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted,
        },
    )
}

fn conf_entry(index: u64, c: ConfChange) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::ConfChange,
        data: c.encode(),
    }
}

/// C_old {1, 2, 3} → C_new {1, 4, 5}.
fn swap_two() -> ConfChange {
    ConfChange::EnterJoint(JointChange {
        add_voters: set(&[4, 5]),
        remove: set(&[2, 3]),
        ..JointChange::default()
    })
}

/// Node 1 of bootstrap voters {1, 2, 3} with `entries` (term 1) and `commit`.
fn member_with_log(cfg: RaftConfig, entries: Vec<Entry>, commit: u64) -> RaftGroup {
    let mut rng = seeded_rng(1);
    let st = RecoveredState {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit,
        },
        snapshot: None,
        entries,
    };
    RaftGroup::recover(GROUP, n(1), &ids(3), cfg, st, &mut rng).unwrap()
}

fn campaign(g: &mut RaftGroup) -> Ready {
    let mut rng = seeded_rng(5);
    while g.role() == Role::Follower || g.role() == Role::PreCandidate {
        g.tick(&mut rng);
        if g.role() == Role::PreCandidate {
            // Pre-votes from everyone, so that the real election follows.
            let term = g.term() + 1;
            for from in [2, 3, 4, 5] {
                let m = msg(
                    from,
                    1,
                    term,
                    MessageBody::RequestVoteResponse {
                        pre_vote: true,
                        granted: true,
                    },
                );
                g.step(m, &mut rng).unwrap();
            }
        }
    }
    g.ready()
}

/// Node 1, leader of term 2 over voters {1, 2, 3} and learners {4, 5}, its no-op
/// committed (acknowledged by 2), that has just proposed [`swap_two`] and a command.
/// Returns the group and the ids of the joint entry and of the command.
fn joint_leader(cfg: RaftConfig) -> (RaftGroup, EntryId, EntryId) {
    let log = vec![
        conf_entry(1, ConfChange::AddLearner(n(4))),
        conf_entry(2, ConfChange::AddLearner(n(5))),
    ];
    let mut g = member_with_log(cfg, log, 0);
    campaign(&mut g);
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(vote(2, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Leader);
    g.step(accept(2, term, 3), &mut rng).unwrap();
    assert_eq!(g.commit_index(), 3, "the no-op is committed");
    g.ready();
    let joint = g.propose_conf_change(swap_two()).unwrap();
    let x = g.propose(b"x".to_vec()).unwrap();
    assert!(g.is_joint());
    assert_eq!(g.voters(), nodes(&[1, 4, 5]).as_slice());
    assert_eq!(g.voters_outgoing(), nodes(&[1, 2, 3]).as_slice());
    g.ready();
    (g, joint, x)
}

/// Proposes `c` on `leader` and carries out the resulting Ready.
fn change(net: &mut Net, leader: u32, c: ConfChange) -> Result<EntryId, RaftError> {
    let r = net.raft_mut(n(leader)).propose_conf_change(c);
    net.process(n(leader)).unwrap();
    r
}

/// Ticks everyone and delivers everything until `done` holds (bounded).
fn run_until(net: &mut Net, what: &str, done: impl Fn(&Net) -> bool) {
    const MAX_ROUNDS: usize = 500;
    for _ in 0..MAX_ROUNDS {
        net.deliver_all().unwrap();
        if done(net) {
            return;
        }
        net.tick_all().unwrap();
    }
    panic!(
        "{what}: not reached within {MAX_ROUNDS} rounds:{}",
        net.describe()
    );
}

fn committed_on(net: &Net, on: &[u32], index: u64) -> bool {
    on.iter()
        .all(|&i| net.is_up(n(i)) && net.raft(n(i)).commit_index() >= index)
}

/// Elects `id` and waits until its no-op committed on the bootstrap voters.
fn elected(net: &mut Net, id: u32) {
    net.elect(n(id)).unwrap();
    assert_eq!(net.raft(n(id)).role(), Role::Leader);
    let noop = net.raft(n(id)).last_index();
    run_until(net, "no-op commit", |net| {
        committed_on(net, &[1, 2, 3], noop)
    });
}

/// Adds learner `l` on `leader` and waits until it holds the leader's whole log.
fn add_caught_up_learner(net: &mut Net, leader: u32, l: u32) {
    let at = change(net, leader, ConfChange::AddLearner(n(l))).unwrap();
    run_until(net, "learner caught up", |net| {
        let r = net.raft(n(leader));
        r.commit_index() >= at.index
            && r.progress(n(l))
                .is_some_and(|p| p.match_index == r.last_index())
    });
}

/// Waits until some node leads and committed an entry of its term; returns it.
fn settled_leader(net: &mut Net) -> u32 {
    run_until(net, "a settled leader", |net| {
        net.leader().is_some_and(|l| {
            let r = net.raft(l);
            r.term_at(r.commit_index()) == Some(r.term())
        })
    });
    net.leader().unwrap().0
}

/// Proposes a command on `leader` and waits until it committed on `on`.
fn write(net: &mut Net, leader: u32, on: &[u32], data: &[u8]) {
    let at = net.propose(n(leader), data).unwrap();
    run_until(net, "write commits", |net| committed_on(net, on, at.index));
}

// ----- commitment ---------------------------------------------------------------------

/// While joint, an entry held by a majority of C_new but only a minority of C_old is
/// not committed; a majority of each commits it.
/// Reference: §4.3
#[test]
fn entry_acknowledged_only_by_the_new_majority_does_not_commit_while_joint() {
    let (mut g, joint, x) = joint_leader(plain_cfg());
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(accept(4, term, x.index), &mut rng).unwrap();
    g.step(accept(5, term, x.index), &mut rng).unwrap();
    assert!(
        g.commit_index() < joint.index,
        "all of C_new but only 1 of C_old: nothing commits"
    );
    g.step(accept(2, term, x.index), &mut rng).unwrap();
    assert_eq!(g.commit_index(), x.index, "and now 2 of C_old");
}

/// While joint, an entry held by a majority of C_old but only a minority of C_new is
/// not committed either.
/// Reference: §4.3
#[test]
fn entry_acknowledged_only_by_the_old_majority_does_not_commit_while_joint() {
    let (mut g, joint, x) = joint_leader(plain_cfg());
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(accept(2, term, x.index), &mut rng).unwrap();
    g.step(accept(3, term, x.index), &mut rng).unwrap();
    assert!(
        g.commit_index() < joint.index,
        "all of C_old but only 1 of C_new: nothing commits"
    );
    g.step(accept(5, term, x.index), &mut rng).unwrap();
    assert_eq!(g.commit_index(), x.index, "and now 2 of C_new");
}

/// The commit index while joint is the smaller of the two majorities' indexes.
/// Reference: §4.3
#[test]
fn joint_commit_index_is_the_smaller_of_the_two_majority_indexes() {
    let (mut g, joint, x) = joint_leader(plain_cfg());
    let mut rng = seeded_rng(1);
    let term = g.term();
    // C_old's majority holds the joint entry only, C_new's the command too.
    g.step(accept(2, term, joint.index), &mut rng).unwrap();
    g.step(accept(4, term, x.index), &mut rng).unwrap();
    assert_eq!(g.commit_index(), joint.index);
    g.step(accept(2, term, x.index), &mut rng).unwrap();
    assert_eq!(g.commit_index(), x.index);
}

// ----- elections ----------------------------------------------------------------------

/// A candidate whose log holds the joint entry asks every voter of both configurations
/// and needs a majority of each: all of C_new is not enough, nor all of C_old.
/// Reference: §4.3
#[test]
fn election_needs_a_majority_of_both_configurations_while_joint() {
    let log = || {
        vec![
            conf_entry(1, ConfChange::AddLearner(n(4))),
            conf_entry(2, ConfChange::AddLearner(n(5))),
            conf_entry(3, swap_two()),
        ]
    };
    let mut rng = seeded_rng(1);

    let mut g = member_with_log(plain_cfg(), log(), 0);
    assert!(g.is_joint());
    let rd = campaign(&mut g);
    let asked: Vec<NodeId> = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(asked, nodes(&[2, 3, 4, 5]), "both configurations are asked");
    let term = g.term();
    g.step(vote(4, term, true), &mut rng).unwrap();
    g.step(vote(5, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Candidate, "C_new alone does not elect");
    g.step(vote(2, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Leader);

    let mut g = member_with_log(plain_cfg(), log(), 0);
    campaign(&mut g);
    let term = g.term();
    g.step(vote(2, term, true), &mut rng).unwrap();
    g.step(vote(3, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Candidate, "C_old alone does not elect");
    g.step(vote(4, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Leader);
}

/// A candidate that a majority of either configuration refuses has lost, whatever
/// the other configuration says.
/// Reference: §4.3
#[test]
fn refusal_by_a_majority_of_either_configuration_loses_the_election() {
    let log = vec![
        conf_entry(1, ConfChange::AddLearner(n(4))),
        conf_entry(2, ConfChange::AddLearner(n(5))),
        conf_entry(3, swap_two()),
    ];
    let mut g = member_with_log(plain_cfg(), log, 0);
    campaign(&mut g);
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(vote(4, term, true), &mut rng).unwrap();
    g.step(vote(5, term, true), &mut rng).unwrap();
    g.step(vote(2, term, false), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Candidate);
    g.step(vote(3, term, false), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Follower, "C_old refused");
}

// ----- leader checks --------------------------------------------------------------------

fn heartbeat_round(rd: &Ready) -> u64 {
    rd.messages
        .iter()
        .find_map(|m| match m.body {
            MessageBody::Heartbeat { read_round, .. } => Some(read_round),
            _ => None,
        })
        .expect("a heartbeat was sent")
}

fn heartbeat_ack(from: u32, term: u64, read_round: u64) -> RaftMessage {
    msg(from, 1, term, MessageBody::HeartbeatResponse { read_round })
}

/// ReadIndex confirms leadership with a majority of each configuration while joint.
/// Reference: §4.3 (with §6.4)
#[test]
fn read_index_needs_both_majorities_while_joint() {
    let (mut g, _, x) = joint_leader(plain_cfg());
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(accept(2, term, x.index), &mut rng).unwrap();
    g.step(accept(4, term, x.index), &mut rng).unwrap();
    assert_eq!(g.commit_index(), x.index);
    g.ready();
    g.read_index(7).unwrap();
    let round = heartbeat_round(&g.ready());
    g.step(heartbeat_ack(4, term, round), &mut rng).unwrap();
    g.step(heartbeat_ack(5, term, round), &mut rng).unwrap();
    assert!(g.ready().read_states.is_empty(), "C_new alone");
    g.step(heartbeat_ack(3, term, round), &mut rng).unwrap();
    let rd = g.ready();
    assert_eq!(rd.read_states.len(), 1);
    assert_eq!(rd.read_states[0].ctx, 7);
}

/// CheckQuorum: a joint leader that hears only from a majority of one configuration
/// for an election timeout steps down.
/// Reference: §4.3 (with §6.2)
#[test]
fn check_quorum_needs_both_majorities_while_joint() {
    let cfg = RaftConfig {
        pre_vote: false,
        ..test_cfg()
    };
    let cases: [(&[u32], bool); 3] = [(&[4, 5], false), (&[2, 3], false), (&[2, 4], true)];
    for (active, stays) in cases {
        let (mut g, _, _) = joint_leader(cfg.clone());
        let mut rng = seeded_rng(1);
        let term = g.term();
        // One window in which everyone answers, then one in which only `active` do.
        for window in [&[2, 3, 4, 5][..], active] {
            for _ in 0..cfg.election_ticks {
                for &from in window {
                    g.step(heartbeat_ack(from, term, 0), &mut rng).unwrap();
                }
                g.tick(&mut rng);
            }
        }
        assert_eq!(g.role() == Role::Leader, stays, "active {active:?}");
        if !stays {
            assert!(
                g.ready()
                    .events
                    .contains(&RaftEvent::SteppedDownNoQuorum { term })
            );
        }
    }
}

/// The lease of a joint leader needs a heartbeat acknowledged by a majority of each
/// configuration.
/// Reference: §4.3 (with §6.4.1)
#[test]
fn lease_needs_both_majorities_while_joint() {
    let cfg = RaftConfig {
        pre_vote: false,
        lease_reads: true,
        lease_ticks: 8,
        ..test_cfg()
    };
    let (mut g, _, x) = joint_leader(cfg);
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(accept(2, term, x.index), &mut rng).unwrap();
    g.step(accept(4, term, x.index), &mut rng).unwrap();
    g.ready();
    g.tick(&mut rng);
    let round = heartbeat_round(&g.ready());
    g.step(heartbeat_ack(4, term, round), &mut rng).unwrap();
    g.step(heartbeat_ack(5, term, round), &mut rng).unwrap();
    assert!(!g.has_lease(), "C_new alone");
    g.step(heartbeat_ack(2, term, round), &mut rng).unwrap();
    assert!(g.has_lease());
}

// ----- the transition ------------------------------------------------------------------

/// `LeaveJoint` moves every node to C_new: the demoted voter is a learner, and a
/// majority of C_new alone commits.
/// Reference: §4.3
#[test]
fn leave_joint_completes_the_transition() {
    let mut net = Net::with_pool(3, 4, plain_cfg(), 21);
    elected(&mut net, 1);
    add_caught_up_learner(&mut net, 1, 4);
    let enter = change(
        &mut net,
        1,
        ConfChange::EnterJoint(JointChange::replace_voter(n(4), n(3))),
    )
    .unwrap();
    run_until(&mut net, "joint entry commits", |net| {
        committed_on(net, &[1, 2, 3, 4], enter.index)
    });
    for i in 1..=4 {
        let r = net.raft(n(i));
        assert_eq!(r.voters(), nodes(&[1, 2, 4]).as_slice(), "node {i}");
        assert_eq!(
            r.voters_outgoing(),
            nodes(&[1, 2, 3]).as_slice(),
            "node {i}"
        );
        assert_eq!(r.learners_next(), &[n(3)], "node {i}");
        assert!(r.learners().is_empty(), "node {i}");
    }
    let leave = change(&mut net, 1, ConfChange::LeaveJoint).unwrap();
    run_until(&mut net, "leave commits", |net| {
        committed_on(net, &[1, 2, 3, 4], leave.index)
    });
    for i in 1..=4 {
        let r = net.raft(n(i));
        assert!(!r.is_joint(), "node {i}");
        assert_eq!(r.voters(), nodes(&[1, 2, 4]).as_slice(), "node {i}");
        assert!(r.voters_outgoing().is_empty() && r.learners_next().is_empty());
        assert_eq!(r.learners(), &[n(3)], "node {i}: the demoted voter learns");
    }
    // {1, 4} is a majority of C_new though not of C_old.
    net.isolate(n(2));
    net.isolate(n(3));
    let y = net.propose(n(1), b"y").unwrap();
    net.deliver_all().unwrap();
    assert!(net.raft(n(1)).commit_index() >= y.index);
    // The demoted voter, now a learner, never campaigns.
    let term = net.raft(n(3)).term();
    for _ in 0..200 {
        net.tick(n(3)).unwrap();
    }
    assert_eq!(net.raft(n(3)).role(), Role::Follower);
    assert_eq!(net.raft(n(3)).term(), term);
}

/// With `auto_leave`, the leader proposes `LeaveJoint` itself as soon as the joint
/// entry commits (etcd's `autoLeave`).
/// Reference: §4.3
#[test]
fn auto_leave_proposes_leave_joint_once_the_joint_entry_commits() {
    let mut net = Net::with_pool(3, 4, plain_cfg(), 22);
    elected(&mut net, 1);
    add_caught_up_learner(&mut net, 1, 4);
    let j = JointChange::replace_voter(n(4), n(3)).with_auto_leave(true);
    let enter = change(&mut net, 1, ConfChange::EnterJoint(j)).unwrap();
    assert!(net.raft(n(1)).conf_state().auto_leave);
    assert_eq!(
        net.raft(n(1)).last_index(),
        enter.index,
        "no leave before the joint entry commits"
    );
    run_until(&mut net, "left on every node", |net| {
        (1..=4).all(|i| !net.raft(n(i)).is_joint())
            && committed_on(net, &[1, 2, 3, 4], enter.index + 1)
    });
    let leave = net.raft(n(1)).entry(enter.index + 1).unwrap();
    assert_eq!(leave.conf_change(), Some(ConfChange::LeaveJoint));
    assert_eq!(net.raft(n(2)).learners(), &[n(3)]);
}

/// A leader elected in a committed auto-leave joint configuration finishes the
/// transition once it committed an entry of its term.
/// Reference: §4.3
#[test]
fn a_new_leader_finishes_an_automatic_leave() {
    let j = JointChange::replace_voter(n(4), n(3)).with_auto_leave(true);
    let log = vec![
        conf_entry(1, ConfChange::AddLearner(n(4))),
        conf_entry(2, ConfChange::EnterJoint(j)),
    ];
    let mut g = member_with_log(plain_cfg(), log, 2);
    assert!(g.is_joint());
    campaign(&mut g);
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(vote(2, term, true), &mut rng).unwrap();
    assert_eq!(
        g.role(),
        Role::Leader,
        "2 is a majority of {{1,2,3}} and {{1,2,4}}"
    );
    assert!(g.is_joint(), "no leave before an entry of its term commits");
    g.step(accept(2, term, 3), &mut rng).unwrap();
    assert_eq!(g.commit_index(), 3);
    assert!(!g.is_joint());
    assert_eq!(
        g.entry(4).and_then(Entry::conf_change),
        Some(ConfChange::LeaveJoint)
    );
}

/// A leader demoted by the joint change keeps leading through the joint configuration
/// (it is an outgoing voter and counts for C_old), steps down once `LeaveJoint`
/// commits, and is then a learner that never campaigns.
/// Reference: §4.3 (with §4.2.2)
#[test]
fn leader_demoted_by_the_joint_change_steps_down_after_leave_joint_commits() {
    let mut net = Net::with_pool(3, 4, test_cfg(), 23);
    elected(&mut net, 1);
    add_caught_up_learner(&mut net, 1, 4);
    let enter = change(
        &mut net,
        1,
        ConfChange::EnterJoint(JointChange::replace_voter(n(4), n(1))),
    )
    .unwrap();
    run_until(&mut net, "joint entry commits", |net| {
        committed_on(net, &[1, 2, 3, 4], enter.index)
    });
    for _ in 0..50 {
        net.tick_all().unwrap();
        net.deliver_all().unwrap();
    }
    assert_eq!(
        net.leader(),
        Some(n(1)),
        "leads through the joint configuration"
    );
    write(&mut net, 1, &[1, 2, 3, 4], b"joint");
    let leave = change(&mut net, 1, ConfChange::LeaveJoint).unwrap();
    run_until(&mut net, "the demoted leader steps down", |net| {
        net.raft(n(1)).role() != Role::Leader && committed_on(net, &[2, 3, 4], leave.index)
    });
    run_until(&mut net, "C_new elects a leader", |net| {
        net.leader().is_some_and(|l| l != n(1))
    });
    let l = net.leader().unwrap().0;
    write(&mut net, l, &[1, 2, 3, 4], b"after");
    assert_eq!(net.raft(n(1)).learners(), &[n(1)]);
    assert_eq!(net.raft(n(1)).voters(), nodes(&[2, 3, 4]).as_slice());
    for _ in 0..200 {
        net.tick(n(1)).unwrap();
    }
    assert_eq!(
        net.raft(n(1)).role(),
        Role::Follower,
        "a learner never campaigns"
    );
    net.check_logs().unwrap();
}

/// The caller may instead hand leadership over first (the wave-2 operator does, as
/// CockroachDB does before a replica removes itself); while joint, only an incoming
/// voter can receive it.
/// Reference: §4.3 (with §3.10)
#[test]
fn leadership_is_transferred_to_an_incoming_voter_before_a_demotion() {
    let mut net = Net::with_pool(3, 4, test_cfg(), 24);
    elected(&mut net, 1);
    add_caught_up_learner(&mut net, 1, 4);
    net.raft_mut(n(1)).transfer_leader(n(2)).unwrap();
    net.process(n(1)).unwrap();
    run_until(&mut net, "transfer", |net| net.leader() == Some(n(2)));
    let noop = net.raft(n(2)).last_index();
    run_until(&mut net, "new leader's no-op", |net| {
        committed_on(net, &[1, 2, 3], noop)
    });
    let enter = change(
        &mut net,
        2,
        ConfChange::EnterJoint(JointChange::replace_voter(n(4), n(1))),
    )
    .unwrap();
    assert_eq!(
        net.raft_mut(n(2)).transfer_leader(n(1)),
        Err(RaftError::InvalidTransferTarget { to: n(1) }),
        "an outgoing-only voter would step down after the leave"
    );
    run_until(&mut net, "joint entry commits", |net| {
        committed_on(net, &[1, 2, 3, 4], enter.index)
    });
    let leave = change(&mut net, 2, ConfChange::LeaveJoint).unwrap();
    run_until(&mut net, "leave commits", |net| {
        committed_on(net, &[1, 2, 3, 4], leave.index)
    });
    assert_eq!(net.leader(), Some(n(2)), "no election was needed");
    assert_eq!(net.raft(n(3)).learners(), &[n(1)]);
}

// ----- the replace operator ----------------------------------------------------------------

/// Replacing voter 3 by node 4 as the wave-2 operator does — `AddLearner(4)`, catch
/// up, `EnterJoint{promote 4, demote 3}`, `LeaveJoint`, `RemoveNode(3)` — keeps a
/// quorum at every step with one node down: another voter (2), or the replaced voter
/// itself (3, the "replace a dead voter" case). A write commits after every step.
/// Reference: §4.3
#[test]
fn replacing_a_voter_keeps_a_quorum_at_every_step_with_one_node_down() {
    for down in [2, 3] {
        let mut net = Net::with_pool(3, 4, test_cfg(), 25);
        elected(&mut net, 1);
        net.crash(n(down), 0);
        let up: Vec<u32> = [1, 2, 3, 4].into_iter().filter(|&i| i != down).collect();
        let voters_up: Vec<u32> = [1, 2, 3].into_iter().filter(|&i| i != down).collect();

        add_caught_up_learner(&mut net, 1, 4);
        write(&mut net, 1, &voters_up, b"learner");
        let steps = [
            ConfChange::EnterJoint(JointChange::replace_voter(n(4), n(3))),
            ConfChange::LeaveJoint,
            ConfChange::RemoveNode(n(3)),
        ];
        for step in steps {
            let at = change(&mut net, 1, step)
                .unwrap_or_else(|e| panic!("down {down}: {step:?} refused: {e}"));
            run_until(&mut net, "step commits on the leader", |net| {
                committed_on(net, &[1], at.index)
            });
            assert_eq!(net.leader(), Some(n(1)), "down {down}: after {step:?}");
            let on: Vec<u32> = up
                .iter()
                .copied()
                .filter(|&i| net.raft(n(1)).is_member(n(i)))
                .collect();
            write(&mut net, 1, &on, format!("after {step:?}").as_bytes());
        }
        let r = net.raft(n(1));
        assert_eq!(r.voters(), nodes(&[1, 2, 4]).as_slice(), "down {down}");
        assert!(r.learners().is_empty() && !r.is_joint(), "down {down}");
        net.check_logs().unwrap();
    }
}

// ----- one change at a time and what does not apply -------------------------------------

/// At most one change is in flight: `LeaveJoint` (or anything else) waits until the
/// joint entry commits.
/// Reference: §4.3 (with §4.1)
#[test]
fn a_second_change_is_refused_while_the_joint_entry_is_uncommitted() {
    let (mut g, joint, x) = joint_leader(plain_cfg());
    for c in [ConfChange::LeaveJoint, ConfChange::AddLearner(n(6))] {
        assert_eq!(
            g.propose_conf_change(c),
            Err(RaftError::ConfChangeInProgress { index: joint.index }),
            "{c:?}"
        );
    }
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(accept(2, term, x.index), &mut rng).unwrap();
    g.step(accept(4, term, x.index), &mut rng).unwrap();
    assert_eq!(g.commit_index(), x.index);
    g.propose_conf_change(ConfChange::LeaveJoint).unwrap();
    assert!(!g.is_joint());
}

/// No entering a joint configuration while joint, no leaving one while not joint, no
/// single-server change while joint, and no joint change that leaves no incoming
/// voter, names nobody, names a node twice or exceeds `MAX_MEMBERS`.
/// Reference: §4.3
#[test]
fn joint_changes_that_do_not_apply_are_refused_with_the_reason() {
    let (mut g, _, x) = joint_leader(plain_cfg());
    let mut rng = seeded_rng(1);
    let term = g.term();
    g.step(accept(2, term, x.index), &mut rng).unwrap();
    g.step(accept(4, term, x.index), &mut rng).unwrap();
    let refused = |g: &mut RaftGroup, c: ConfChange| {
        matches!(
            g.propose_conf_change(c),
            Err(RaftError::InvalidConfChange { change, .. }) if *change == c
        )
    };
    for c in [
        swap_two(),
        ConfChange::AddLearner(n(6)),
        ConfChange::AddVoter(n(2)),
        ConfChange::RemoveNode(n(4)),
    ] {
        assert!(refused(&mut g, c), "while joint: {c:?}");
    }
    g.propose_conf_change(ConfChange::LeaveJoint).unwrap();
    let leave = g.last_index();
    g.step(accept(4, term, leave), &mut rng).unwrap();
    assert_eq!(g.commit_index(), leave);
    let demote_all = ConfChange::EnterJoint(JointChange {
        demote_voters: set(&[1, 4, 5]),
        ..JointChange::default()
    });
    let twice = ConfChange::EnterJoint(JointChange {
        add_voters: set(&[2]),
        add_learners: set(&[2]),
        ..JointChange::default()
    });
    for c in [
        ConfChange::LeaveJoint,
        demote_all,
        twice,
        ConfChange::EnterJoint(JointChange::default()),
        ConfChange::EnterJoint(JointChange::replace_voter(n(9), n(2))),
    ] {
        assert!(refused(&mut g, c), "not joint: {c:?}");
    }

    // MAX_MEMBERS counts every member of the joint configuration.
    let full: Vec<NodeId> = (1..=MAX_MEMBERS as u32).map(NodeId).collect();
    let conf = ConfState {
        voters: MemberSet::from_slice(&full[..3]).unwrap(),
        learners: MemberSet::from_slice(&full[3..]).unwrap(),
        ..ConfState::default()
    };
    let promote_all = JointChange {
        add_voters: MemberSet::from_slice(&full[3..]).unwrap(),
        ..JointChange::default()
    };
    assert!(conf.apply(ConfChange::EnterJoint(promote_all)).is_ok());
    let one_more = JointChange {
        add_learners: set(&[MAX_MEMBERS as u32 + 1]),
        ..JointChange::default()
    };
    let err = conf.apply(ConfChange::EnterJoint(one_more)).unwrap_err();
    assert!(err.contains("members"), "{err}");
}

// ----- a configuration takes effect on append --------------------------------------------

/// The joint configuration takes effect when its entry is appended; when a new leader
/// overwrites the uncommitted entry, the configuration before it is back.
/// Reference: §4.3 (with §4.1)
#[test]
fn truncated_joint_entry_reverts_the_configuration() {
    let mut net = Net::with_pool(3, 4, plain_cfg(), 26);
    elected(&mut net, 1);
    add_caught_up_learner(&mut net, 1, 4);
    let conf_before = net.raft(n(1)).conf_state();
    let index_before = net.raft(n(1)).conf_index();
    net.isolate(n(1));
    change(
        &mut net,
        1,
        ConfChange::EnterJoint(JointChange::replace_voter(n(4), n(3))),
    )
    .unwrap();
    assert!(net.raft(n(1)).is_joint(), "in effect on append");
    net.elect(n(2)).unwrap();
    assert_eq!(net.raft(n(2)).role(), Role::Leader);
    net.propose(n(2), b"x").unwrap();
    net.heal();
    run_until(&mut net, "the joint entry is overwritten", |net| {
        net.raft(n(1)).last_index() == net.raft(n(2)).last_index()
            && net.raft(n(1)).term() == net.raft(n(2)).term()
    });
    assert!(!net.raft(n(1)).is_joint());
    assert_eq!(net.raft(n(1)).conf_state(), conf_before);
    assert_eq!(net.raft(n(1)).conf_index(), index_before);
    net.check_logs().unwrap();
}

// ----- durability ----------------------------------------------------------------------

/// Enters the joint configuration {1, 2, 3} → {1, 2, 4} (3 demoted) on a fresh net and
/// waits until it committed on 1, 2 and 4.
fn net_in_joint(seed: u64) -> (Net, EntryId) {
    let mut net = Net::with_pool(3, 5, plain_cfg(), seed);
    elected(&mut net, 1);
    add_caught_up_learner(&mut net, 1, 4);
    let enter = change(
        &mut net,
        1,
        ConfChange::EnterJoint(JointChange::replace_voter(n(4), n(3))),
    )
    .unwrap();
    run_until(&mut net, "joint entry commits", |net| {
        committed_on(net, &[1, 2, 4], enter.index)
    });
    (net, enter)
}

fn assert_joint(net: &Net, i: u32) {
    let r = net.raft(n(i));
    assert!(r.is_joint(), "node {i}");
    assert_eq!(r.voters(), nodes(&[1, 2, 4]).as_slice(), "node {i}");
    assert_eq!(
        r.voters_outgoing(),
        nodes(&[1, 2, 3]).as_slice(),
        "node {i}"
    );
    assert_eq!(r.learners_next(), &[n(3)], "node {i}");
}

/// A node that restarts in the middle of a joint configuration rebuilds it from the
/// configuration entries of its WAL, and the transition completes afterwards.
/// Reference: §4.3
#[test]
fn joint_configuration_is_recovered_from_the_wal() {
    let (mut net, enter) = net_in_joint(27);
    for i in [1, 2, 4] {
        net.crash(n(i), 0);
        net.restart(n(i)).unwrap();
        assert_joint(&net, i);
        assert_eq!(net.raft(n(i)).conf_index(), enter.index, "node {i}");
    }
    let l = settled_leader(&mut net);
    let leave = change(&mut net, l, ConfChange::LeaveJoint).unwrap();
    run_until(&mut net, "leave commits", |net| {
        committed_on(net, &[1, 2, 3, 4], leave.index)
    });
    assert_eq!(net.raft(n(3)).learners(), &[n(3)]);
}

/// A snapshot taken in the middle of a joint configuration carries all of it: a node
/// restarting from the snapshot and a node brought up to date by one are joint, with
/// the same outgoing voters, demoted voters and auto-leave flag.
/// Reference: §4.3
#[test]
fn joint_configuration_is_carried_in_snapshots() {
    let mut net = Net::with_pool(3, 5, plain_cfg(), 28);
    elected(&mut net, 1);
    add_caught_up_learner(&mut net, 1, 4);
    // Node 3 misses the whole joint phase; 2 and 4 with 1 are both majorities.
    net.crash(n(3), 0);
    let enter = change(
        &mut net,
        1,
        ConfChange::EnterJoint(JointChange::replace_voter(n(4), n(3))),
    )
    .unwrap();
    run_until(&mut net, "joint entry commits", |net| {
        committed_on(net, &[1, 2, 4], enter.index)
    });
    net.propose(n(1), b"after").unwrap();
    run_until(&mut net, "applied on 1, 2, 4", |net| {
        [1, 2, 4]
            .iter()
            .all(|&i| net.nodes[&n(i)].applied_index == net.raft(n(1)).last_index())
    });
    for i in [1, 2, 4] {
        net.compact(n(i)).unwrap();
        let meta = net.raft(n(i)).snapshot_meta();
        assert!(meta.index > enter.index);
        assert!(meta.conf.is_joint() && meta.conf.is_well_formed());
        assert_eq!(meta.conf.voters_outgoing, set(&[1, 2, 3]));
        assert_eq!(meta.conf.learners_next, set(&[3]));
    }
    net.crash(n(2), 0);
    net.restart(n(2)).unwrap();
    assert_joint(&net, 2);
    assert_eq!(net.raft(n(2)).conf_index(), 0, "from the snapshot");

    net.restart(n(3)).unwrap();
    run_until(&mut net, "3 catches up from a snapshot", |net| {
        net.raft(n(3)).snapshot_meta().index > enter.index
    });
    assert_joint(&net, 3);
    let l = settled_leader(&mut net);
    let leave = change(&mut net, l, ConfChange::LeaveJoint).unwrap();
    run_until(&mut net, "leave commits", |net| {
        committed_on(net, &[1, 2, 3, 4], leave.index)
    });
    assert_eq!(net.raft(n(3)).learners(), &[n(3)]);
}

/// The WAL format before joint consensus, rebuilt here field by field: a snapshot
/// record whose configuration has voters and learners only.
mod format1 {
    use super::*;

    #[derive(Serialize)]
    pub struct ConfState {
        pub voters: MemberSet,
        pub learners: MemberSet,
    }
    #[derive(Serialize)]
    pub struct SnapshotMeta {
        pub index: u64,
        pub term: u64,
        pub conf: ConfState,
    }
    #[derive(Serialize)]
    pub struct Snapshot {
        pub meta: SnapshotMeta,
        pub data: Vec<u8>,
    }
    #[derive(Serialize)]
    pub enum RaftRecord {
        HardState(HardState),
        Entries(Vec<Entry>),
        Snapshot(Snapshot),
    }
    #[derive(Serialize)]
    pub struct WalRecord {
        pub group: GroupId,
        pub record: RaftRecord,
    }
}

/// A WAL written before joint consensus (snapshot records without the joint fields,
/// single-server configuration entries) still replays, and this build's records round
/// trip with the joint fields.
#[test]
fn wal_written_before_joint_consensus_still_replays() {
    let old_snapshot = format1::WalRecord {
        group: GROUP,
        record: format1::RaftRecord::Snapshot(format1::Snapshot {
            meta: format1::SnapshotMeta {
                index: 5,
                term: 2,
                conf: format1::ConfState {
                    voters: set(&[1, 2, 3]),
                    learners: set(&[4]),
                },
            },
            data: b"image".to_vec(),
        }),
    };
    let old_entries = format1::WalRecord {
        group: GROUP,
        record: format1::RaftRecord::Entries(vec![Entry {
            term: 2,
            index: 6,
            kind: EntryKind::ConfChange,
            data: ConfChange::AddVoter(n(4)).encode(),
        }]),
    };
    let old_hard_state = format1::WalRecord {
        group: GROUP,
        record: format1::RaftRecord::HardState(HardState {
            term: 2,
            vote: Some(n(1)),
            commit: 6,
        }),
    };
    let wal: Vec<Vec<u8>> = [&old_snapshot, &old_entries]
        .iter()
        .map(|r| postcard::to_allocvec(r).unwrap())
        .chain([postcard::to_allocvec(&old_hard_state).unwrap()])
        .collect();
    let st = RecoveredState::from_wal(GROUP, &wal).unwrap();
    let snap = st.snapshot.clone().unwrap();
    assert_eq!(snap.meta.conf.voters, set(&[1, 2, 3]));
    assert_eq!(snap.meta.conf.learners, set(&[4]));
    assert!(!snap.meta.conf.is_joint() && snap.meta.conf.is_well_formed());
    assert_eq!(snap.data, b"image");
    assert_eq!(
        st.entries[0].conf_change(),
        Some(ConfChange::AddVoter(n(4)))
    );
    let mut rng = seeded_rng(1);
    let g = RaftGroup::recover(GROUP, n(2), &ids(3), plain_cfg(), st, &mut rng).unwrap();
    assert_eq!(g.voters(), nodes(&[1, 2, 3, 4]).as_slice());

    // This build's snapshot records carry the joint fields.
    let mut conf = snap.meta.conf;
    conf = conf
        .apply(ConfChange::EnterJoint(
            JointChange::replace_voter(n(4), n(3)).with_auto_leave(true),
        ))
        .unwrap();
    let rec = WalRecord {
        group: GROUP,
        record: RaftRecord::Snapshot(Snapshot {
            meta: SnapshotMeta {
                index: 9,
                term: 3,
                conf,
            },
            data: b"joint".to_vec(),
        }),
    };
    assert_eq!(WalRecord::decode(&rec.encode(), 0).unwrap(), rec);
}

// ----- events ----------------------------------------------------------------------------

/// `ConfigChanged` names the outgoing voters while joint, and the node event carries
/// them and the typed change.
#[test]
fn config_changed_reports_the_outgoing_voters() {
    let mut rng = seeded_rng(1);
    let mut g = RaftGroup::new(GROUP, n(1), &[n(1)], test_cfg(), &mut rng).unwrap();
    while g.role() != Role::Leader {
        g.tick(&mut rng);
    }
    g.ready();
    g.propose_conf_change(ConfChange::AddLearner(n(2))).unwrap();
    g.ready();
    let j = JointChange {
        add_voters: set(&[2]),
        ..JointChange::default()
    };
    let at = g.propose_conf_change(ConfChange::EnterJoint(j)).unwrap();
    let rd = g.ready();
    let ev = rd
        .events
        .iter()
        .find(|e| matches!(e, RaftEvent::ConfigChanged { index, .. } if *index == at.index))
        .expect("config changed")
        .clone();
    assert_eq!(
        ev,
        RaftEvent::ConfigChanged {
            index: at.index,
            change: Some(ConfChange::EnterJoint(j)),
            voters: nodes(&[1, 2]),
            voters_outgoing: vec![n(1)],
            learners: vec![],
        }
    );
    match ev.into_node_event(GROUP) {
        NodeEvent::ConfigChanged {
            voters_outgoing,
            change: Some(MembershipChange::EnterJoint { add_voters, .. }),
            ..
        } => {
            assert_eq!(voters_outgoing, vec![n(1)]);
            assert_eq!(add_voters, vec![n(2)]);
        }
        other => panic!("{other:?}"),
    }
}

/// A joint change is encoded compactly, each set as a sorted list, and only the
/// canonical list decodes (so one change has one encoding).
#[test]
fn joint_change_encoding_is_a_compact_canonical_list() {
    let c = ConfChange::EnterJoint(JointChange {
        add_voters: set(&[2, 4]),
        auto_leave: true,
        ..JointChange::default()
    });
    // Variant 3, add_voters [2, 4], three empty lists, auto_leave.
    assert_eq!(c.encode(), vec![3, 2, 2, 4, 0, 0, 0, 1]);
    assert_eq!(postcard::from_bytes::<ConfChange>(&c.encode()).unwrap(), c);
    for bad in [[3, 2, 4, 2, 0, 0, 0, 1], [3, 2, 2, 2, 0, 0, 0, 1]] {
        assert!(postcard::from_bytes::<ConfChange>(&bad).is_err(), "{bad:?}");
    }
    assert_eq!(ConfChange::LeaveJoint.encode(), vec![4]);
    // Single-server changes keep their encoding from before joint consensus.
    assert_eq!(ConfChange::AddLearner(n(7)).encode(), vec![0, 7]);
}
