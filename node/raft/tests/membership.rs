//! Membership-change tests (Ongaro's thesis §4: single-server changes, learners), each
//! citing the rule it checks, plus a scripted "learner promotion under partition".

mod common;

use common::*;
use kvlab_raft::*;
use kvlab_types::{NodeId, seeded_rng};

fn n(i: u32) -> NodeId {
    NodeId(i)
}

fn plain_cfg() -> RaftConfig {
    RaftConfig {
        pre_vote: false,
        check_quorum: false,
        ..test_cfg()
    }
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

fn committed_everywhere(net: &Net, nodes: &[u32], index: u64) -> bool {
    nodes
        .iter()
        .all(|&i| net.is_up(n(i)) && net.raft(n(i)).commit_index() >= index)
}

/// Elects node `id` of a fresh net and waits until its no-op committed everywhere.
fn elected(net: &mut Net, id: u32) {
    net.elect(n(id)).unwrap();
    assert_eq!(net.raft(n(id)).role(), Role::Leader);
    let noop = net.raft(n(id)).last_index();
    let voters: Vec<u32> = net.raft(n(id)).voters().iter().map(|v| v.0).collect();
    run_until(net, "no-op commit", |net| {
        committed_everywhere(net, &voters, noop)
    });
}

fn conf_change_entry(index: u64, c: ConfChange) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::ConfChange,
        data: c.encode(),
    }
}

fn vote_response(from: u32, to: u32, term: u64, granted: bool) -> RaftMessage {
    RaftMessage {
        group: GROUP,
        from: n(from),
        to: n(to),
        term,
        body: MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted,
        },
    }
}

/// A group member (plain config) whose log is `entries` at term 1.
fn member_with_log(id: u32, voters: u32, entries: Vec<Entry>) -> RaftGroup {
    let mut rng = seeded_rng(u64::from(id));
    let st = RecoveredState {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        snapshot: None,
        entries,
    };
    RaftGroup::recover(GROUP, n(id), &ids(voters), plain_cfg(), st, &mut rng).unwrap()
}

fn campaign(g: &mut RaftGroup) {
    let mut rng = seeded_rng(5);
    while g.role() == Role::Follower {
        g.tick(&mut rng);
    }
    g.ready();
}

// ----- learners ---------------------------------------------------------------------------

#[test]
fn learner_receives_the_log_but_does_not_count_for_commit() {
    // Thesis §4.2.1: a new server joins as a non-voting member; it is not counted for
    // majorities, so its replica cannot commit anything.
    let mut net = Net::with_pool(3, 5, plain_cfg(), 1);
    elected(&mut net, 1);
    let at = change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    run_until(&mut net, "learner added", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], at.index)
    });
    for i in 1..=4 {
        assert_eq!(net.raft(n(i)).voters(), ids(3).as_slice(), "node {i}");
        assert_eq!(net.raft(n(i)).learners(), &[n(4)], "node {i}");
    }
    // Node 5 is outside the group and hears nothing.
    assert_eq!(net.raft(n(5)).last_index(), 0);

    net.isolate(n(2));
    net.isolate(n(3));
    let x = net.propose(n(1), b"x").unwrap();
    net.deliver_all().unwrap();
    assert_eq!(
        net.raft(n(4)).last_index(),
        x.index,
        "learner holds the entry"
    );
    assert!(
        net.raft(n(1)).commit_index() < x.index,
        "leader + learner is no majority of three voters"
    );
}

#[test]
fn learner_never_campaigns_and_is_not_asked_for_votes() {
    // Thesis §4.2.1: non-voting members do not take part in elections.
    let mut net = Net::with_pool(3, 4, plain_cfg(), 2);
    elected(&mut net, 1);
    let at = change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    run_until(&mut net, "learner added", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], at.index)
    });
    net.isolate(n(4));
    let term = net.raft(n(4)).term();
    for _ in 0..200 {
        net.tick(n(4)).unwrap();
    }
    assert_eq!(net.raft(n(4)).role(), Role::Follower);
    assert_eq!(net.raft(n(4)).term(), term);

    net.heal();
    net.isolate(n(1));
    net.queue.clear();
    while net.raft(n(2)).role() == Role::Follower {
        net.tick(n(2)).unwrap();
    }
    let asked: Vec<NodeId> = net
        .queue
        .iter()
        .filter(|m| m.from == n(2) && matches!(m.body, MessageBody::RequestVote { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(asked, vec![n(1), n(3)]);
}

#[test]
fn vote_from_a_learner_is_not_counted() {
    // Thesis §4.2.1: a candidate needs a majority of the voters; a learner's grant (e.g.
    // from a node that does not know it is a learner) does not count.
    let log = vec![conf_change_entry(1, ConfChange::AddLearner(n(4)))];
    let mut g = member_with_log(1, 3, log);
    assert_eq!(g.learners(), &[n(4)]);
    campaign(&mut g);
    let term = g.term();
    let mut rng = seeded_rng(1);
    g.step(vote_response(4, 1, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Candidate);
    g.step(vote_response(2, 1, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Leader);
}

#[test]
fn learner_is_promoted_after_catching_up_and_then_counts() {
    // Thesis §4.2.1: once the learner caught up, promoting it is a single-server change;
    // from then on it counts for majorities (3 of 4).
    let mut net = Net::with_pool(3, 4, plain_cfg(), 3);
    elected(&mut net, 1);
    for i in 0..20 {
        net.propose(n(1), format!("w{i}").as_bytes()).unwrap();
    }
    net.deliver_all().unwrap();
    let at = change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    run_until(&mut net, "learner caught up", |net| {
        net.raft(n(1))
            .progress(n(4))
            .is_some_and(|p| p.match_index == net.raft(n(1)).last_index())
            && committed_everywhere(net, &[1, 2, 3, 4], at.index)
    });
    let promote = change(&mut net, 1, ConfChange::AddVoter(n(4))).unwrap();
    run_until(&mut net, "promotion", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], promote.index)
    });
    for i in 1..=4 {
        assert_eq!(net.raft(n(i)).voters(), ids(4).as_slice(), "node {i}");
        assert!(net.raft(n(i)).learners().is_empty(), "node {i}");
    }

    net.isolate(n(2));
    net.isolate(n(3));
    let y = net.propose(n(1), b"y").unwrap();
    net.deliver_all().unwrap();
    assert!(
        net.raft(n(1)).commit_index() < y.index,
        "2 of 4 is no majority"
    );
    net.heal();
    net.isolate(n(3));
    let z = net.propose(n(1), b"z").unwrap();
    net.deliver_all().unwrap();
    assert!(
        net.raft(n(1)).commit_index() >= z.index,
        "3 of 4 is a majority"
    );
}

// ----- removal ----------------------------------------------------------------------------

#[test]
fn removing_a_follower_shrinks_the_quorum() {
    // Thesis §4.1: the new configuration takes effect on append; {1, 2} is then a
    // majority of the two remaining voters.
    let mut net = Net::new(3, test_cfg(), 4);
    elected(&mut net, 1);
    let at = change(&mut net, 1, ConfChange::RemoveNode(n(3))).unwrap();
    assert_eq!(net.raft(n(1)).voters(), &[n(1), n(2)], "in effect at once");
    run_until(&mut net, "removal", |net| {
        committed_everywhere(net, &[1, 2], at.index)
    });
    net.isolate(n(3));
    let x = net.propose(n(1), b"x").unwrap();
    net.deliver_all().unwrap();
    assert!(net.raft(n(1)).commit_index() >= x.index);
}

#[test]
fn removed_follower_does_not_disrupt_the_group() {
    // Thesis §4.2.3: a removed server that never learns of its removal times out and
    // campaigns; PreVote and CheckQuorum keep it from deposing the leader.
    let mut net = Net::new(3, test_cfg(), 5);
    elected(&mut net, 1);
    let at = change(&mut net, 1, ConfChange::RemoveNode(n(3))).unwrap();
    run_until(&mut net, "removal", |net| {
        committed_everywhere(net, &[1, 2], at.index)
    });
    let term = net.raft(n(1)).term();
    for _ in 0..300 {
        net.tick_all().unwrap();
        net.deliver_all().unwrap();
    }
    assert_eq!(net.leader(), Some(n(1)));
    assert_eq!(net.raft(n(1)).term(), term);
    assert_eq!(net.raft(n(2)).term(), term);
}

#[test]
fn removed_leader_steps_down_after_committing_its_removal() {
    // Thesis §4.2.2: the leader manages a configuration without itself until C_new
    // commits (its own replica no longer counts), then steps down.
    let mut rng = seeded_rng(6);
    let mut g = member_with_log(1, 2, Vec::new());
    campaign(&mut g);
    let term = g.term();
    g.step(vote_response(2, 1, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Leader);
    let accept = |index| RaftMessage {
        group: GROUP,
        from: n(2),
        to: n(1),
        term,
        body: MessageBody::AppendEntriesResponse {
            result: AppendResult::Accepted { match_index: index },
        },
    };
    g.step(accept(g.last_index()), &mut rng).unwrap();
    g.ready();
    let at = g.propose_conf_change(ConfChange::RemoveNode(n(1))).unwrap();
    assert_eq!(g.voters(), &[n(2)]);
    assert_eq!(g.role(), Role::Leader, "leads until the removal commits");
    assert!(
        g.commit_index() < at.index,
        "its own replica does not count"
    );
    let rd = g.ready();
    assert!(rd.events.iter().any(|e| matches!(
        e,
        RaftEvent::ConfigChanged { index, change: Some(ConfChange::RemoveNode(r)), voters, voters_outgoing, learners }
            if *index == at.index && *r == n(1) && voters.len() == 1 && voters_outgoing.is_empty() && learners.is_empty()
    )));
    g.step(accept(at.index), &mut rng).unwrap();
    assert_eq!(g.commit_index(), at.index);
    assert_eq!(g.role(), Role::Follower);
    let rd = g.ready();
    assert!(rd.events.contains(&RaftEvent::SteppedDownRemoved { term }));
    let applied = rd.committed_entries.last().unwrap();
    assert_eq!(applied.kind, EntryKind::ConfChange);
    assert_eq!(applied.conf_change(), Some(ConfChange::RemoveNode(n(1))));
    // A removed node never campaigns again.
    for _ in 0..200 {
        g.tick(&mut rng);
    }
    assert_eq!(g.role(), Role::Follower);
    assert_eq!(g.term(), term);
}

#[test]
fn after_the_leader_removes_itself_the_rest_elect_a_new_leader() {
    let mut net = Net::new(3, test_cfg(), 7);
    elected(&mut net, 1);
    let at = change(&mut net, 1, ConfChange::RemoveNode(n(1))).unwrap();
    run_until(&mut net, "old leader steps down", |net| {
        net.raft(n(1)).role() != Role::Leader && committed_everywhere(net, &[2, 3], at.index)
    });
    run_until(&mut net, "new leader", |net| {
        net.leader().is_some_and(|l| l != n(1))
    });
    let l = net.leader().unwrap();
    let x = net.propose(l, b"x").unwrap();
    run_until(&mut net, "commit under the new leader", |net| {
        committed_everywhere(net, &[2, 3], x.index)
    });
    assert_eq!(net.raft(n(2)).voters(), &[n(2), n(3)]);
    assert_eq!(net.raft(n(1)).role(), Role::Follower);
}

// ----- one change at a time ---------------------------------------------------------------

#[test]
fn second_change_is_refused_while_one_is_uncommitted() {
    // Thesis §4.1: a leader does not begin a change until the previous one committed, so
    // at most two configurations (whose majorities overlap) are ever in play.
    let mut net = Net::with_pool(3, 5, plain_cfg(), 8);
    elected(&mut net, 1);
    net.isolate(n(2));
    net.isolate(n(3));
    let at = change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    assert_eq!(
        change(&mut net, 1, ConfChange::AddLearner(n(5))),
        Err(RaftError::ConfChangeInProgress { index: at.index })
    );
    net.heal();
    run_until(&mut net, "first change commits", |net| {
        committed_everywhere(net, &[1], at.index)
    });
    change(&mut net, 1, ConfChange::AddLearner(n(5))).unwrap();
}

#[test]
fn changes_that_do_not_apply_are_refused_with_the_reason() {
    let mut net = Net::with_pool(3, 4, plain_cfg(), 9);
    elected(&mut net, 1);
    for c in [
        ConfChange::AddLearner(n(2)),
        ConfChange::AddVoter(n(3)),
        ConfChange::RemoveNode(n(9)),
    ] {
        assert!(
            matches!(change(&mut net, 1, c), Err(RaftError::InvalidConfChange { change, .. }) if *change == c),
            "{c:?}"
        );
    }
    assert!(matches!(
        change(&mut net, 2, ConfChange::AddLearner(n(4))),
        Err(RaftError::NotLeader { leader: Some(l) }) if l == n(1)
    ));
    // The last voter cannot be removed.
    let mut rng = seeded_rng(1);
    let mut solo = RaftGroup::new(GROUP, n(1), &[n(1)], test_cfg(), &mut rng).unwrap();
    while solo.role() != Role::Leader {
        solo.tick(&mut rng);
    }
    solo.ready();
    assert!(matches!(
        solo.propose_conf_change(ConfChange::RemoveNode(n(1))),
        Err(RaftError::InvalidConfChange { .. })
    ));
}

#[test]
fn new_leader_changes_membership_only_after_committing_in_its_term() {
    // Ongaro, raft-dev 2015 ("bug in single-server membership changes"): a leader must
    // commit an entry of its own term before proposing a configuration change.
    let mut g = member_with_log(1, 3, Vec::new());
    campaign(&mut g);
    let term = g.term();
    let mut rng = seeded_rng(1);
    g.step(vote_response(2, 1, term, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Leader);
    assert_eq!(
        g.propose_conf_change(ConfChange::AddLearner(n(4))),
        Err(RaftError::NoCommitInTerm { term })
    );
}

#[test]
fn committed_conf_change_reaches_the_caller_with_its_kind_and_an_event() {
    let mut rng = seeded_rng(1);
    let mut g = RaftGroup::new(GROUP, n(1), &[n(1)], test_cfg(), &mut rng).unwrap();
    while g.role() != Role::Leader {
        g.tick(&mut rng);
    }
    g.ready();
    let at = g.propose_conf_change(ConfChange::AddLearner(n(2))).unwrap();
    let rd = g.ready();
    assert!(rd.events.contains(&RaftEvent::ConfigChanged {
        index: at.index,
        change: Some(ConfChange::AddLearner(n(2))),
        voters: vec![n(1)],
        voters_outgoing: vec![],
        learners: vec![n(2)],
    }));
    let e = rd
        .committed_entries
        .iter()
        .find(|e| e.index == at.index)
        .expect("a lone voter commits at once");
    assert_eq!(e.kind, EntryKind::ConfChange);
    assert_eq!(e.conf_change(), Some(ConfChange::AddLearner(n(2))));
    assert!(
        rd.messages
            .iter()
            .any(|m| m.to == n(2) && matches!(m.body, MessageBody::AppendEntries { .. })),
        "the leader replicates to its learner"
    );
    assert_eq!(g.conf_index(), at.index);
}

// ----- uncommitted configurations and recovery ----------------------------------------------

#[test]
fn truncated_configuration_entry_is_rolled_back() {
    // Thesis §4.1: a server always uses the latest configuration in its log, committed or
    // not; when a new leader overwrites that entry, the previous configuration is back.
    let mut net = Net::with_pool(3, 4, plain_cfg(), 10);
    elected(&mut net, 1);
    net.isolate(n(1));
    change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    assert_eq!(net.raft(n(1)).learners(), &[n(4)]);
    net.elect(n(2)).unwrap();
    assert_eq!(net.raft(n(2)).role(), Role::Leader);
    net.propose(n(2), b"x").unwrap();
    net.heal();
    run_until(&mut net, "old leader's entry overwritten", |net| {
        net.raft(n(1)).last_index() == net.raft(n(2)).last_index()
            && net.raft(n(1)).term() == net.raft(n(2)).term()
    });
    assert!(net.raft(n(1)).learners().is_empty());
    assert_eq!(net.raft(n(1)).conf_index(), 0);
    net.check_logs().unwrap();
}

#[test]
fn configuration_is_restored_from_the_log_after_restart() {
    // The configuration is not part of the hard state: recovery rebuilds it from the
    // bootstrap voters and the configuration entries of the recovered log.
    let mut net = Net::with_pool(3, 5, plain_cfg(), 11);
    elected(&mut net, 1);
    let a = change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    run_until(&mut net, "a", |net| {
        committed_everywhere(net, &[1, 2, 3], a.index)
    });
    let b = change(&mut net, 1, ConfChange::AddVoter(n(4))).unwrap();
    run_until(&mut net, "b", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], b.index)
    });
    let c = change(&mut net, 1, ConfChange::AddLearner(n(5))).unwrap();
    run_until(&mut net, "c", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], c.index)
    });
    for i in [2, 4, 5] {
        net.crash(n(i), 0);
        net.restart(n(i)).unwrap();
        assert_eq!(net.raft(n(i)).voters(), ids(4).as_slice(), "node {i}");
        assert_eq!(net.raft(n(i)).learners(), &[n(5)], "node {i}");
        assert_eq!(net.raft(n(i)).conf_index(), c.index, "node {i}");
    }
}

#[test]
fn configuration_is_carried_in_snapshots() {
    // The snapshot meta records the configuration at its index: a restart from a
    // snapshot and a learner that joins from a snapshot both learn it.
    let mut net = Net::with_pool(3, 5, plain_cfg(), 12);
    elected(&mut net, 1);
    let a = change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    run_until(&mut net, "a", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], a.index)
    });
    let b = change(&mut net, 1, ConfChange::AddVoter(n(4))).unwrap();
    run_until(&mut net, "b", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], b.index)
    });
    let c = change(&mut net, 1, ConfChange::RemoveNode(n(3))).unwrap();
    run_until(&mut net, "c", |net| {
        committed_everywhere(net, &[1, 2, 4], c.index)
    });
    net.propose(n(1), b"after").unwrap();
    run_until(&mut net, "applied everywhere", |net| {
        [1, 2, 4]
            .iter()
            .all(|&i| net.nodes[&n(i)].applied_index == net.raft(n(1)).last_index())
    });
    for i in [1, 2, 4] {
        net.compact(n(i)).unwrap();
        let meta = net.raft(n(i)).snapshot_meta();
        assert!(meta.index >= c.index);
        assert_eq!(meta.conf.voters.as_slice(), &[n(1), n(2), n(4)]);
        assert!(meta.conf.learners.is_empty());
    }
    net.crash(n(2), 0);
    net.restart(n(2)).unwrap();
    assert_eq!(net.raft(n(2)).voters(), &[n(1), n(2), n(4)]);
    assert_eq!(
        net.raft(n(2)).conf_index(),
        0,
        "from the snapshot, not the log"
    );

    let d = change(&mut net, 1, ConfChange::AddLearner(n(5))).unwrap();
    run_until(&mut net, "learner joins from a snapshot", |net| {
        committed_everywhere(net, &[5], d.index)
    });
    assert!(
        net.raft(n(5)).snapshot_meta().index > 0,
        "it got a snapshot"
    );
    assert_eq!(net.raft(n(5)).voters(), &[n(1), n(2), n(4)]);
    assert_eq!(net.raft(n(5)).learners(), &[n(5)]);
}

// ----- scenario ------------------------------------------------------------------------------

#[test]
fn learner_promotion_under_partition_is_rolled_back_then_redone() {
    // Leader 1 and learner 4 are cut off from voters 2 and 3 right after 1 proposes to
    // promote 4. The promotion cannot commit (2 of 4); 2 and 3 elect a leader and make
    // progress; after healing, the promotion entry is overwritten everywhere, 4 is a
    // learner again, and the new leader can promote it for real.
    let mut net = Net::with_pool(3, 4, test_cfg(), 13);
    elected(&mut net, 1);
    for i in 0..10 {
        net.propose(n(1), format!("w{i}").as_bytes()).unwrap();
    }
    let a = change(&mut net, 1, ConfChange::AddLearner(n(4))).unwrap();
    run_until(&mut net, "learner added", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], a.index)
    });
    for x in [n(1), n(4)] {
        for y in [n(2), n(3)] {
            net.blocked.insert((x, y));
            net.blocked.insert((y, x));
        }
    }
    let promote = change(&mut net, 1, ConfChange::AddVoter(n(4))).unwrap();
    net.deliver_all().unwrap();
    assert_eq!(net.raft(n(4)).voters(), ids(4).as_slice(), "4 appended it");
    run_until(&mut net, "majority side elects", |net| {
        net.leader().is_some_and(|l| l == n(2) || l == n(3))
    });
    let l = net.leader().unwrap();
    let w = net.propose(l, b"majority").unwrap();
    run_until(&mut net, "majority commits", |net| {
        committed_everywhere(net, &[2, 3], w.index)
    });
    assert!(net.raft(n(1)).commit_index() < promote.index);
    run_until(
        &mut net,
        "CheckQuorum steps the cut-off leader down",
        |net| net.raft(n(1)).role() != Role::Leader,
    );
    assert!(net.raft(n(1)).commit_index() < promote.index);

    net.heal();
    net.converge(b"healed").unwrap();
    for i in 1..=4 {
        assert_eq!(net.raft(n(i)).voters(), ids(3).as_slice(), "node {i}");
        assert_eq!(net.raft(n(i)).learners(), &[n(4)], "node {i}");
    }
    let l = net.leader().unwrap();
    let p = change(&mut net, l.0, ConfChange::AddVoter(n(4))).unwrap();
    run_until(&mut net, "promotion", |net| {
        committed_everywhere(net, &[1, 2, 3, 4], p.index)
    });
    for i in 1..=4 {
        assert_eq!(net.raft(n(i)).voters(), ids(4).as_slice(), "node {i}");
    }
    net.check_logs().unwrap();
}

#[test]
fn snapshot_with_a_malformed_configuration_is_a_typed_error() {
    // A configuration decoded from the network may be unsorted or overfull; it is refused
    // before it can reach lookups that assume the canonical shape.
    let mut g = member_with_log(2, 3, Vec::new());
    let mut meta = SnapshotMeta {
        index: 5,
        term: 1,
        ..Default::default()
    };
    let good = MemberSet::from_slice(&[n(1), n(2), n(3)]).unwrap();
    meta.conf.voters = good;
    meta.conf.learners = MemberSet::from_slice(&[n(3)]).unwrap(); // voter and learner
    let m = RaftMessage {
        group: GROUP,
        from: n(1),
        to: n(2),
        term: 1,
        body: MessageBody::InstallSnapshot {
            snapshot: Box::new(meta),
            offset: 0,
            data: Vec::new(),
            done: true,
        },
    };
    let mut rng = seeded_rng(1);
    assert!(matches!(
        g.step(m, &mut rng),
        Err(RaftError::MalformedMessage { .. })
    ));
    assert!(good.is_well_formed());
    assert!(!meta.conf.is_well_formed());
}
