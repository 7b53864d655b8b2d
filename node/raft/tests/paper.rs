//! Paper tests: one per rule of the Raft paper (Ongaro & Ousterhout 2014) and Ongaro's
//! thesis, each citing the section it checks.

mod common;

use common::*;
use kvlab_raft::*;
use kvlab_types::{Effect, NodeId, Out, seeded_rng};

fn n(i: u32) -> NodeId {
    NodeId(i)
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

fn plain_cfg() -> RaftConfig {
    RaftConfig {
        pre_vote: false,
        check_quorum: false,
        ..test_cfg()
    }
}

fn group(id: u32, voters: u32, cfg: RaftConfig, st: RecoveredState) -> RaftGroup {
    let mut rng = seeded_rng(u64::from(id));
    RaftGroup::recover(GROUP, n(id), &ids(voters), cfg, st, &mut rng).unwrap()
}

fn tick_until_campaign(g: &mut RaftGroup) -> usize {
    let mut rng = seeded_rng(99);
    for t in 1..=1000 {
        g.tick(&mut rng);
        if g.role() != Role::Follower {
            return t;
        }
    }
    panic!("never campaigned");
}

fn vote_requests(rd: &Ready) -> Vec<&RaftMessage> {
    rd.messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        .collect()
}

// ----- §5.1 / §5.2 elections ---------------------------------------------------------

#[test]
fn follower_starts_election_after_randomized_timeout() {
    // Reference: Raft §5.2 — a follower that hears nothing for an election timeout
    // becomes a candidate, increments its term, votes for itself and asks every peer.
    let mut g = group(1, 3, plain_cfg(), RecoveredState::default());
    let ticks = tick_until_campaign(&mut g);
    assert!(
        (10..20).contains(&ticks),
        "timeout {ticks} outside [10, 20)"
    );
    assert_eq!(g.role(), Role::Candidate);
    assert_eq!(g.term(), 1);
    assert_eq!(g.vote(), Some(n(1)));
    let rd = g.ready();
    let to: Vec<NodeId> = vote_requests(&rd).iter().map(|m| m.to).collect();
    assert_eq!(to, vec![n(2), n(3)]);
}

#[test]
fn election_timeouts_are_randomized_between_one_and_two_timeouts() {
    // Reference: Raft §5.2 — randomized timeouts in [T, 2T) make split votes rare.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let mut rng = seeded_rng(seed);
        let mut g = RaftGroup::new(GROUP, n(1), &ids(3), plain_cfg(), &mut rng).unwrap();
        let mut t = 0;
        while g.role() == Role::Follower {
            g.tick(&mut rng);
            t += 1;
        }
        assert!((10..20).contains(&t));
        seen.insert(t);
    }
    assert!(seen.len() >= 5, "timeouts barely vary: {seen:?}");
}

#[test]
fn candidate_wins_with_votes_from_a_majority() {
    // Reference: Raft §5.2 — a candidate that receives votes from a majority becomes
    // leader; a minority of rejections does not stop it.
    let mut g = group(1, 5, plain_cfg(), RecoveredState::default());
    tick_until_campaign(&mut g);
    g.ready();
    let mut rng = seeded_rng(1);
    let vote = |from, granted| {
        msg(
            from,
            1,
            1,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted,
            },
        )
    };
    g.step(vote(2, false), &mut rng).unwrap();
    g.step(vote(3, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Candidate);
    g.step(vote(4, true), &mut rng).unwrap();
    assert_eq!(g.role(), Role::Leader);
    assert_eq!(g.leader(), Some(n(1)));
}

#[test]
fn candidate_with_majority_rejections_returns_to_follower() {
    // Reference: Raft §5.2 — a candidate that cannot win goes back to waiting.
    let mut g = group(1, 3, plain_cfg(), RecoveredState::default());
    tick_until_campaign(&mut g);
    let mut rng = seeded_rng(1);
    for from in [2, 3] {
        let m = msg(
            from,
            1,
            1,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: false,
            },
        );
        g.step(m, &mut rng).unwrap();
    }
    assert_eq!(g.role(), Role::Follower);
}

#[test]
fn candidate_steps_down_on_append_entries_from_leader_of_same_term() {
    // Reference: Raft §5.2 — "If AppendEntries RPC received from new leader: convert to
    // follower".
    let mut g = group(1, 3, plain_cfg(), RecoveredState::default());
    tick_until_campaign(&mut g);
    let mut rng = seeded_rng(1);
    let m = msg(
        2,
        1,
        1,
        MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
        },
    );
    g.step(m, &mut rng).unwrap();
    assert_eq!(g.role(), Role::Follower);
    assert_eq!(g.leader(), Some(n(2)));
    assert_eq!(g.term(), 1);
}

#[test]
fn node_grants_at_most_one_vote_per_term() {
    // Reference: Raft §5.2 — each server votes for at most one candidate per term, first
    // come first served; a repeated request from the same candidate is granted again.
    let mut g = group(3, 3, plain_cfg(), RecoveredState::default());
    let mut rng = seeded_rng(1);
    let req = |from| {
        msg(
            from,
            3,
            1,
            MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 0,
                last_log_term: 0,
                leader_transfer: false,
            },
        )
    };
    let granted = |rd: &Ready| match rd.messages[0].body {
        MessageBody::RequestVoteResponse { granted, .. } => granted,
        ref b => panic!("unexpected {b:?}"),
    };
    g.step(req(1), &mut rng).unwrap();
    assert!(granted(&g.ready()));
    g.step(req(2), &mut rng).unwrap();
    assert!(!granted(&g.ready()));
    g.step(req(1), &mut rng).unwrap();
    assert!(granted(&g.ready()));
    assert_eq!(g.vote(), Some(n(1)));
}

#[test]
fn vote_is_persisted_and_synced_before_the_reply_is_sent() {
    // Reference: Raft §5.2 and Figure 2 — currentTerm and votedFor are persistent state,
    // updated on stable storage before responding to RPCs.
    let mut g = group(3, 3, plain_cfg(), RecoveredState::default());
    let mut rng = seeded_rng(1);
    g.step(
        msg(
            1,
            3,
            5,
            MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 0,
                last_log_term: 0,
                leader_transfer: false,
            },
        ),
        &mut rng,
    )
    .unwrap();
    let mut rd = g.ready();
    assert!(rd.records.contains(&RaftRecord::HardState(HardState {
        term: 5,
        vote: Some(n(1)),
        commit: 0
    })));
    let mut out: Out<RaftMessage> = Out::new();
    rd.emit_effects(&mut out, |m| m);
    let kinds: Vec<&str> = out
        .effects()
        .iter()
        .map(|e| match e {
            Effect::Persist { .. } => "persist",
            Effect::Sync => "sync",
            Effect::Send { .. } => "send",
            Effect::Event(_) => "event",
            _ => "other",
        })
        .filter(|k| *k != "event")
        .collect();
    assert_eq!(kinds, ["persist", "sync", "send"]);
}

#[test]
fn vote_is_refused_to_candidate_with_less_up_to_date_log() {
    // Reference: Raft §5.4.1 — a voter denies its vote if its own log is more
    // up-to-date: later last term, or same last term and longer.
    let voter_log = [1, 1, 2]; // last term 2, last index 3
    let cases = [
        (3, 2, true),  // identical
        (4, 2, true),  // longer, same term
        (2, 2, false), // shorter, same term
        (9, 1, false), // much longer but older term
        (1, 3, true),  // shorter but later term
    ];
    for (last_log_index, last_log_term, want) in cases {
        let mut g = group(3, 3, plain_cfg(), state_with_log(&voter_log, 2));
        let mut rng = seeded_rng(1);
        g.step(
            msg(
                1,
                3,
                3,
                MessageBody::RequestVote {
                    pre_vote: false,
                    last_log_index,
                    last_log_term,
                    leader_transfer: false,
                },
            ),
            &mut rng,
        )
        .unwrap();
        let rd = g.ready();
        let got = matches!(
            rd.messages[0].body,
            MessageBody::RequestVoteResponse { granted: true, .. }
        );
        assert_eq!(got, want, "candidate ({last_log_index},{last_log_term})");
    }
}

#[test]
fn refusing_a_vote_of_a_later_term_does_not_restart_the_election_timer() {
    // Reference: Raft Figure 2, Rules for Servers, Followers — a follower becomes a
    // candidate when its election timeout elapses "without receiving AppendEntries RPC
    // from current leader or granting vote to candidate". A request it refuses (the
    // candidate's log is behind, §5.4.1) raises its term (§5.1) but does not restart
    // the timer; a request it grants does.
    let voter_log = [1, 1, 2];
    let timeout = tick_until_campaign(&mut group(3, 3, plain_cfg(), state_with_log(&voter_log, 2)));
    for (last_log_index, grant) in [(2, false), (3, true)] {
        let mut g = group(3, 3, plain_cfg(), state_with_log(&voter_log, 2));
        let mut rng = seeded_rng(99);
        for _ in 1..timeout {
            g.tick(&mut rng);
        }
        let request = MessageBody::RequestVote {
            pre_vote: false,
            last_log_index,
            last_log_term: 2,
            leader_transfer: false,
        };
        g.step(msg(1, 3, 5, request), &mut rng).unwrap();
        assert_eq!((g.role(), g.term()), (Role::Follower, 5));
        g.tick(&mut rng);
        let campaigned = g.role() == Role::Candidate;
        assert_eq!(
            campaigned, !grant,
            "granted {grant}: the timer must restart exactly when the vote is granted"
        );
    }
}

#[test]
fn leader_steps_down_on_message_with_higher_term() {
    // Reference: Raft §5.1 — a server that sees a larger term updates its term and
    // reverts to follower.
    let mut net = Net::new(3, plain_cfg(), 1);
    net.elect(n(1)).unwrap();
    assert_eq!(net.raft(n(1)).role(), Role::Leader);
    let mut rng = seeded_rng(1);
    let m = msg(2, 1, 9, MessageBody::HeartbeatResponse { read_round: 0 });
    net.raft_mut(n(1)).step(m, &mut rng).unwrap();
    assert_eq!(net.raft(n(1)).role(), Role::Follower);
    assert_eq!(net.raft(n(1)).term(), 9);
}

#[test]
fn message_with_stale_term_is_ignored() {
    // Reference: Raft §5.1 — a request with a stale term is rejected.
    let mut g = group(2, 3, plain_cfg(), state_with_log(&[], 5));
    let mut rng = seeded_rng(1);
    g.step(
        msg(
            1,
            2,
            3,
            MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: entries_with_terms(&[3]),
                leader_commit: 1,
            },
        ),
        &mut rng,
    )
    .unwrap();
    assert_eq!(g.last_index(), 0);
    assert_eq!(g.term(), 5);
    assert_eq!(g.leader(), None);
}

#[test]
fn prevote_keeps_an_isolated_node_from_inflating_terms() {
    // Reference: Ongaro thesis §9.6 — a node that cannot reach a majority never wins
    // a pre-vote, so it never increments its term and does not disrupt the leader
    // when it rejoins.
    let mut net = Net::new(3, test_cfg(), 2);
    net.elect(n(1)).unwrap();
    let term = net.raft(n(1)).term();
    net.isolate(n(3));
    for _ in 0..200 {
        net.tick_all().unwrap();
        net.deliver_all().unwrap();
    }
    assert_eq!(net.raft(n(3)).term(), term);
    net.heal();
    for _ in 0..50 {
        net.tick_all().unwrap();
        net.deliver_all().unwrap();
    }
    assert_eq!(net.leader(), Some(n(1)));
    assert_eq!(net.raft(n(1)).term(), term);
}

#[test]
fn check_quorum_leader_steps_down_when_it_cannot_hear_a_majority() {
    // Reference: Ongaro thesis §6.2 — a leader that has not heard from a majority for an
    // election timeout steps down.
    let mut net = Net::new(3, test_cfg(), 3);
    net.elect(n(1)).unwrap();
    net.isolate(n(1));
    for _ in 0..25 {
        net.tick(n(1)).unwrap();
    }
    assert_eq!(net.raft(n(1)).role(), Role::Follower);
    assert!(net.leaders().is_empty());
}

#[test]
fn follower_with_live_leader_ignores_vote_requests() {
    // Reference: Ongaro thesis §4.2.3 — servers that heard from a leader within the
    // minimum election timeout ignore RequestVote (the leader lease of CheckQuorum).
    let mut net = Net::new(3, test_cfg(), 4);
    net.elect(n(1)).unwrap();
    let term = net.raft(n(2)).term();
    let mut rng = seeded_rng(1);
    let m = msg(
        3,
        2,
        term + 1,
        MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 100,
            // A log at least as up to date as the follower's (§5.4.1); a candidate's
            // log never holds a term above the one it campaigns in.
            last_log_term: term,
            leader_transfer: false,
        },
    );
    net.raft_mut(n(2)).step(m, &mut rng).unwrap();
    assert_eq!(net.raft(n(2)).term(), term);
    assert_eq!(net.raft(n(2)).leader(), Some(n(1)));
}

// ----- §5.3 log replication ------------------------------------------------------------

#[test]
fn new_leader_appends_a_noop_of_its_term() {
    // Reference: Raft §8 — a leader commits a blank no-op entry at the start of its term.
    let mut net = Net::new(3, plain_cfg(), 5);
    net.elect(n(1)).unwrap();
    let e = net.raft(n(1)).entry(1).unwrap().clone();
    assert_eq!((e.kind, e.term), (EntryKind::Noop, net.raft(n(1)).term()));
    assert_eq!(net.raft(n(1)).commit_index(), 1);
}

#[test]
fn leader_commits_once_a_majority_stores_the_entry() {
    // Reference: Raft §5.3 — an entry is committed once the leader has replicated it on
    // a majority; one slow follower does not block it.
    let mut net = Net::new(3, plain_cfg(), 6);
    net.elect(n(1)).unwrap();
    net.isolate(n(3));
    net.blocked.remove(&(n(1), n(3))); // n3 receives but cannot answer
    net.blocked.remove(&(n(3), n(1)));
    net.blocked.insert((n(3), n(1)));
    let at = net.propose(n(1), b"x").unwrap();
    net.deliver_all().unwrap();
    assert_eq!(net.raft(n(1)).commit_index(), at.index);
    net.isolate(n(2));
    net.isolate(n(3));
    let at2 = net.propose(n(1), b"y").unwrap();
    net.deliver_all().unwrap();
    assert!(
        net.raft(n(1)).commit_index() < at2.index,
        "committed without a majority"
    );
}

#[test]
fn followers_learn_the_commit_index_and_apply_in_order() {
    // Reference: Raft §5.3 — the leader includes its commit index in AppendEntries and
    // followers apply committed entries in log order.
    let mut net = Net::new(3, plain_cfg(), 7);
    net.elect(n(1)).unwrap();
    for i in 0..5 {
        net.propose(n(1), format!("c{i}").as_bytes()).unwrap();
    }
    net.deliver_all().unwrap();
    net.tick(n(1)).unwrap(); // heartbeat carries the final commit index
    net.deliver_all().unwrap();
    for id in ids(3) {
        let applied: Vec<Vec<u8>> = net.nodes[&id]
            .applied
            .iter()
            .filter(|e| !e.2.is_empty())
            .map(|e| e.2.clone())
            .collect();
        let want: Vec<Vec<u8>> = (0..5).map(|i| format!("c{i}").into_bytes()).collect();
        assert_eq!(applied, want, "{id:?}");
    }
}

#[test]
fn follower_rejects_append_when_previous_entry_does_not_match() {
    // Reference: Raft §5.3 — consistency check: reject if the log has no entry at
    // prevLogIndex with prevLogTerm; the rejection carries a conflict hint.
    let mut g = group(2, 3, plain_cfg(), state_with_log(&[1, 1, 2, 2, 2], 2));
    let mut rng = seeded_rng(1);
    g.step(
        msg(
            1,
            2,
            3,
            MessageBody::AppendEntries {
                prev_log_index: 5,
                prev_log_term: 3,
                entries: vec![],
                leader_commit: 0,
            },
        ),
        &mut rng,
    )
    .unwrap();
    let rd = g.ready();
    match rd.messages[0].body {
        MessageBody::AppendEntriesResponse {
            result:
                AppendResult::Rejected {
                    prev_log_index,
                    conflict_hint_index,
                    conflict_hint_term,
                },
        } => {
            assert_eq!(prev_log_index, 5);
            // The follower's last index with term <= 3 is 5 (term 2).
            assert_eq!((conflict_hint_index, conflict_hint_term), (5, 2));
        }
        ref b => panic!("unexpected {b:?}"),
    }
    assert_eq!(g.last_index(), 5);
}

#[test]
fn follower_truncates_conflicting_suffix_and_appends() {
    // Reference: Raft §5.3 — if an existing entry conflicts with a new one, delete it and
    // all that follow, then append; the WAL record says so.
    let mut g = group(2, 3, plain_cfg(), state_with_log(&[1, 1, 2, 2, 2], 2));
    let mut rng = seeded_rng(1);
    let mut new = entries_with_terms(&[1, 1, 3, 3]);
    let new = new.split_off(2);
    g.step(
        msg(
            1,
            2,
            3,
            MessageBody::AppendEntries {
                prev_log_index: 2,
                prev_log_term: 1,
                entries: new.clone(),
                leader_commit: 0,
            },
        ),
        &mut rng,
    )
    .unwrap();
    assert_eq!(g.last_index(), 4);
    assert_eq!(g.term_at(3), Some(3));
    let rd = g.ready();
    assert!(rd.records.contains(&RaftRecord::Entries(new)));
    assert!(matches!(
        rd.messages[0].body,
        MessageBody::AppendEntriesResponse {
            result: AppendResult::Accepted { match_index: 4 }
        }
    ));
}

#[test]
fn figure7_followers_a_to_f_converge_to_the_leaders_log() {
    // Reference: Raft §5.3, Figure 7 — whatever a follower's log (missing entries,
    // extra uncommitted entries, or both), the leader's consistency check and
    // backtracking bring it to exactly the leader's log.
    let leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[u64]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (name, f) in followers {
        let states = vec![
            state_with_log(&leader, 7),
            state_with_log(f, 7),
            state_with_log(&leader, 7),
        ];
        let mut net = Net::with_states(states, test_cfg(), 8);
        net.elect(n(1)).unwrap();
        assert_eq!(net.raft(n(1)).role(), Role::Leader, "case {name}");
        net.tick(n(1)).unwrap();
        net.deliver_all().unwrap();
        let (l, fl) = (net.raft(n(1)), net.raft(n(2)));
        assert_eq!(fl.last_index(), l.last_index(), "case {name}");
        for i in 1..=l.last_index() {
            assert_eq!(fl.entry(i), l.entry(i), "case {name} index {i}");
        }
        net.check_logs().unwrap();
    }
}

#[test]
fn fast_backtracking_skips_a_whole_term_per_round_trip() {
    // Reference: Raft §5.3 (end) — with the conflicting term in the rejection the leader
    // bypasses all conflicting entries of that term in one round trip.
    let leader: Vec<u64> = std::iter::repeat_n(1, 3)
        .chain(std::iter::repeat_n(5, 50))
        .collect();
    let follower: Vec<u64> = std::iter::repeat_n(1, 3)
        .chain(std::iter::repeat_n(3, 60))
        .collect();
    let states = vec![
        state_with_log(&leader, 6),
        state_with_log(&follower, 6),
        state_with_log(&leader, 6),
    ];
    let mut net = Net::with_states(states, test_cfg(), 9);
    let before = net.delivered;
    net.elect(n(1)).unwrap();
    let rejections_bound = 4;
    assert!(
        net.delivered - before < 20 + 2 * rejections_bound,
        "{} messages",
        net.delivered - before
    );
    assert_eq!(net.raft(n(2)).last_index(), net.raft(n(1)).last_index());
}

// ----- §5.4 safety ----------------------------------------------------------------------

/// Figure 8 (c): S1 leads term 4 holding index 2 from term 2; S5 holds a term-3 entry
/// at index 2. S1 replicates index 2 to a majority but not its own term-4 entry.
fn figure8_setup(cfg: RaftConfig) -> Net {
    let states = vec![
        state_with_log(&[1, 2], 3),
        state_with_log(&[1, 2], 3),
        state_with_log(&[1], 3),
        state_with_log(&[1], 3),
        state_with_log(&[1, 3], 3),
    ];
    let cfg = RaftConfig {
        max_entries_per_msg: 1,
        ..cfg
    };
    let mut net = Net::with_states(states, cfg, 10);
    net.isolate(n(5));
    net.isolate(n(4));
    // Elect S1 in term 4 but lose every AppendEntries that carries its term-4 entry.
    net.tick(n(1)).unwrap();
    for _ in 0..100 {
        if net.raft(n(1)).role() != Role::Follower {
            break;
        }
        net.tick(n(1)).unwrap();
    }
    for _ in 0..3 {
        for _ in 0..1000 {
            if net.queue.is_empty() {
                break;
            }
            let mut m = net.queue.remove(0);
            if let MessageBody::AppendEntries { entries, .. } = &mut m.body {
                entries.retain(|e| e.term != 4);
            }
            net.deliver(m).unwrap();
        }
        net.tick(n(1)).unwrap(); // heartbeats restart stalled probes
    }
    assert_eq!(net.raft(n(1)).role(), Role::Leader);
    assert_eq!(net.raft(n(1)).term(), 4);
    assert_eq!(
        net.raft(n(3)).term_at(2),
        Some(2),
        "S3 must hold index 2 from term 2"
    );
    net
}

#[test]
fn figure8_leader_never_commits_an_earlier_term_entry_by_counting_replicas() {
    // Reference: Raft §5.4.2, Figure 8 — index 2 (term 2) is on a majority (S1, S2, S3)
    // but must not be committed until an entry of the current term is.
    let mut net = figure8_setup(plain_cfg());
    assert_eq!(net.raft(n(1)).commit_index(), 0);
    // Once S1's term-4 entry reaches the majority, both commit together.
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    assert_eq!(net.raft(n(1)).commit_index(), 3);
    assert_eq!(net.raft(n(1)).term_at(2), Some(2));
}

/// Figure 8 (d): S1 crashes; S5 (log [1, 3]) wins term 5 with S2, S3, S4 and overwrites
/// index 2 everywhere.
fn figure8_continue_with_s5(net: &mut Net) -> Result<(), String> {
    net.crash(n(1), 0);
    net.heal();
    net.isolate(n(1));
    for _ in 0..200 {
        if net.leader() == Some(n(5)) {
            break;
        }
        net.tick(n(5))?;
        net.deliver_all()?;
    }
    for _ in 0..5 {
        net.tick(n(5))?;
        net.deliver_all()?;
    }
    net.check_logs()
}

#[test]
fn figure8_entry_not_committed_may_be_overwritten_safely() {
    // Reference: Raft §5.4.2, Figure 8 (d) — because S1 never committed index 2, S5 may
    // overwrite it without violating state machine safety.
    let mut net = figure8_setup(plain_cfg());
    figure8_continue_with_s5(&mut net).unwrap();
    assert_eq!(net.leader(), Some(n(5)));
    assert_eq!(net.raft(n(2)).term_at(2), Some(3));
}

#[test]
fn bug_switch_commit_previous_term_by_count_is_caught_by_state_machine_safety() {
    // Reference: Raft §5.4.2, Figure 8 — the deliberately broken rule commits index 2 on
    // S1, then S5 overwrites and commits another entry there; the checker notices.
    let cfg = RaftConfig {
        unsafe_commit_previous_term_by_count: true,
        ..plain_cfg()
    };
    let mut net = figure8_setup(cfg);
    assert_eq!(
        net.raft(n(1)).commit_index(),
        2,
        "the bug commits by counting"
    );
    let err = figure8_continue_with_s5(&mut net).unwrap_err();
    assert!(err.contains("state machine safety"), "{err}");
}

#[test]
fn leader_completeness_elected_leader_holds_all_committed_entries() {
    // Reference: Raft §5.4 — a node missing a committed entry cannot be elected.
    let mut net = Net::new(3, plain_cfg(), 11);
    net.elect(n(1)).unwrap();
    net.isolate(n(3));
    let at = net.propose(n(1), b"committed").unwrap();
    net.deliver_all().unwrap();
    assert_eq!(net.raft(n(1)).commit_index(), at.index);
    net.crash(n(1), 0);
    net.heal();
    net.isolate(n(1));
    // n3 lacks the entry: it cannot win, n2 can.
    net.elect(n(3)).unwrap();
    assert_ne!(net.leader(), Some(n(3)));
    net.elect(n(2)).unwrap();
    assert_eq!(net.leader(), Some(n(2)));
    assert_eq!(net.raft(n(2)).entry(at.index).unwrap().data, b"committed");
}

// ----- durability and recovery -----------------------------------------------------------

#[test]
fn follower_acknowledges_entries_only_after_they_are_persisted() {
    // Reference: Raft §5.3 and Figure 2 — a follower's success reply promises the entries
    // are on stable storage: the records come before the Sync, the reply after it.
    let mut g = group(2, 3, plain_cfg(), RecoveredState::default());
    let mut rng = seeded_rng(1);
    g.step(
        msg(
            1,
            2,
            1,
            MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: entries_with_terms(&[1]),
                leader_commit: 0,
            },
        ),
        &mut rng,
    )
    .unwrap();
    let mut rd = g.ready();
    let mut out: Out<u32> = Out::new();
    rd.emit_effects(&mut out, |m| m.to.0);
    let effects = out.effects();
    let sync_at = effects.iter().position(|e| *e == Effect::Sync).unwrap();
    let send_at = effects
        .iter()
        .position(|e| matches!(e, Effect::Send { .. }))
        .unwrap();
    assert!(
        effects[..sync_at]
            .iter()
            .all(|e| matches!(e, Effect::Persist { .. }))
    );
    assert!(sync_at < send_at);
    let recs: Vec<RaftRecord> = effects[..sync_at]
        .iter()
        .map(|e| match e {
            Effect::Persist { record: b, .. } => WalRecord::decode(b, 0).unwrap().record,
            _ => unreachable!(),
        })
        .collect();
    assert!(
        recs.iter()
            .any(|r| matches!(r, RaftRecord::Entries(e) if e.len() == 1))
    );
}

#[test]
fn recovery_restores_term_vote_log_and_reapplies_committed_entries() {
    // Reference: Raft Figure 2 — currentTerm, votedFor and log[] survive a crash; the
    // state machine is rebuilt by re-applying committed entries.
    let mut net = Net::new(3, plain_cfg(), 12);
    net.elect(n(1)).unwrap();
    for i in 0..3 {
        net.propose(n(1), format!("c{i}").as_bytes()).unwrap();
    }
    net.deliver_all().unwrap();
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    let before = net.raft(n(2)).hard_state();
    let last = net.raft(n(2)).last_index();
    let applied_before = net.nodes[&n(2)].applied.clone();
    net.crash(n(2), 0);
    net.restart(n(2)).unwrap();
    let g = net.raft(n(2));
    assert_eq!(
        (g.term(), g.vote(), g.last_index()),
        (before.term, before.vote, last)
    );
    // The commit index is persisted only as a hint riding with later records, so the
    // node re-applies what its last hint covered at once, and the rest when the leader's
    // next heartbeat tells it the commit index again.
    assert_reapplies_prefix_then_all(&mut net, n(2), &applied_before);
}

/// After a restart, `id` has applied a prefix of `before`; after one heartbeat from
/// the leader `n(1)`, all of it.
fn assert_reapplies_prefix_then_all(net: &mut Net, id: NodeId, before: &[(u64, u64, Vec<u8>)]) {
    let now = &net.nodes[&id].applied;
    assert!(
        before.starts_with(now),
        "{now:?} is not a prefix of {before:?}"
    );
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    assert_eq!(net.nodes[&id].applied, before);
}

#[test]
fn recovery_after_losing_the_unsynced_tail_is_safe_and_catches_up() {
    // Reference: Raft §5.3/§5.4 with a crash-faulty disk — records never synced were
    // never acknowledged, so losing them only shortens the log; the leader repairs it.
    let mut net = Net::new(3, plain_cfg(), 13);
    net.elect(n(1)).unwrap();
    net.auto_sync = false;
    for i in 0..4 {
        net.propose(n(1), format!("c{i}").as_bytes()).unwrap();
    }
    while net.complete_sync(n(1)).unwrap() {}
    // n2 receives and persists the entries, but its sync never completes.
    while let Some(i) = net.queue.iter().position(|m| m.to == n(2)) {
        net.deliver_at(i).unwrap();
    }
    let unsynced = net.nodes[&n(2)].wal.len() - net.nodes[&n(2)].durable_len;
    assert!(unsynced > 0);
    assert!(
        !net.queue.iter().any(|m| m.from == n(2)),
        "acked before sync"
    );
    net.crash(n(2), 0);
    net.restart(n(2)).unwrap();
    assert!(net.raft(n(2)).last_index() < net.raft(n(1)).last_index());
    net.converge(b"after").unwrap();
    assert_eq!(net.raft(n(2)).last_index(), net.raft(n(1)).last_index());
}

#[test]
fn bug_switch_skip_vote_persist_lets_a_restarted_node_vote_twice() {
    // Reference: Raft §5.2, Figure 2 — votedFor must be persistent. With the vote not
    // persisted, a voter that restarts votes again in the same term and two leaders win.
    for broken in [false, true] {
        let cfg = RaftConfig {
            unsafe_skip_vote_persist: broken,
            ..plain_cfg()
        };
        let mut net = Net::new(3, cfg, 14);
        net.blocked.insert((n(1), n(3)));
        while net.raft(n(1)).role() == Role::Follower {
            net.tick(n(1)).unwrap();
        }
        // n2 votes for n1; n1 wins and is cut off before its first AppendEntries lands.
        while net.raft(n(1)).role() != Role::Leader {
            net.deliver_at(0).unwrap();
        }
        net.isolate(n(1));
        net.crash(n(2), 0);
        net.restart(n(2)).unwrap();
        assert_eq!(net.raft(n(3)).term(), 0);
        let res = net.elect(n(3));
        if broken {
            let err = res.unwrap_err();
            assert!(err.contains("election safety"), "{err}");
        } else {
            res.unwrap();
            assert_ne!(net.raft(n(3)).role(), Role::Leader);
        }
    }
}

// ----- §6 / thesis: reads and leadership transfer ------------------------------------------

#[test]
fn read_index_is_granted_only_after_a_heartbeat_quorum() {
    // Reference: Ongaro thesis §6.4 — the leader records its commit index, confirms
    // leadership with a round of heartbeats, then the read may be served.
    let mut net = Net::new(3, plain_cfg(), 15);
    net.elect(n(1)).unwrap();
    net.isolate(n(1));
    net.raft_mut(n(1)).read_index(77).unwrap();
    net.process(n(1)).unwrap();
    net.deliver_all().unwrap();
    assert!(
        net.nodes[&n(1)].read_states.is_empty(),
        "served without a quorum"
    );
    net.heal();
    net.raft_mut(n(1)).read_index(78).unwrap();
    net.process(n(1)).unwrap();
    net.deliver_all().unwrap();
    let rs = &net.nodes[&n(1)].read_states;
    assert_eq!(rs.iter().map(|r| r.ctx).collect::<Vec<_>>(), vec![77, 78]);
    assert!(rs.iter().all(|r| r.index == net.raft(n(1)).commit_index()));
}

#[test]
fn read_index_waits_until_the_leader_commits_in_its_term() {
    // Reference: Ongaro thesis §6.4 step 1 — a new leader's commit index may be stale
    // until its no-op commits.
    let mut net = Net::new(3, plain_cfg(), 16);
    net.isolate(n(1));
    net.blocked.remove(&(n(1), n(2)));
    net.blocked.remove(&(n(2), n(1)));
    net.blocked.insert((n(1), n(2)));
    net.tick(n(1)).unwrap();
    while net.raft(n(1)).role() == Role::Follower {
        net.tick(n(1)).unwrap();
    }
    net.blocked.clear();
    net.isolate(n(3));
    // Deliver only the votes so n1 wins but its no-op is not acknowledged yet.
    net.deliver_all().unwrap();
    net.blocked.insert((n(2), n(1)));
    net.tick(n(2)).unwrap();
    let _ = net.raft_mut(n(1)).read_index(5);
    if net.raft(n(1)).role() == Role::Leader {
        net.process(n(1)).unwrap();
        net.deliver_all().unwrap();
        let commit_term = net.raft(n(1)).term_at(net.raft(n(1)).commit_index());
        if commit_term != Some(net.raft(n(1)).term()) {
            assert!(net.nodes[&n(1)].read_states.is_empty());
        }
    }
    net.heal();
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    if net.raft(n(1)).role() == Role::Leader {
        assert_eq!(net.nodes[&n(1)].read_states.len(), 1);
        assert!(net.nodes[&n(1)].read_states[0].index >= 1);
    }
}

#[test]
fn read_index_on_a_follower_is_refused_with_the_leader_hint() {
    // Reference: Ongaro thesis §6.4 — only the leader serves ReadIndex.
    let mut net = Net::new(3, plain_cfg(), 17);
    net.elect(n(1)).unwrap();
    let err = net.raft_mut(n(2)).read_index(1).unwrap_err();
    assert_eq!(err, RaftError::NotLeader { leader: Some(n(1)) });
}

#[test]
fn leader_transfer_hands_leadership_to_a_caught_up_follower() {
    // Reference: Ongaro thesis §3.10 — the leader brings the target up to date and sends
    // TimeoutNow; the target wins the next term at once.
    let mut net = Net::new(3, test_cfg(), 18);
    net.elect(n(1)).unwrap();
    let term = net.raft(n(1)).term();
    net.raft_mut(n(1)).transfer_leader(n(3)).unwrap();
    net.process(n(1)).unwrap();
    net.deliver_all().unwrap();
    assert_eq!(net.leader(), Some(n(3)));
    assert_eq!(net.raft(n(3)).term(), term + 1);
}

#[test]
fn leader_transfer_to_a_lagging_follower_catches_it_up_first() {
    // Reference: Ongaro thesis §3.10 step 2 — the target receives the missing entries
    // before TimeoutNow; proposals are refused meanwhile.
    let mut net = Net::new(3, test_cfg(), 19);
    net.elect(n(1)).unwrap();
    net.isolate(n(3));
    for i in 0..5 {
        net.propose(n(1), format!("c{i}").as_bytes()).unwrap();
    }
    net.deliver_all().unwrap();
    net.heal();
    net.raft_mut(n(1)).transfer_leader(n(3)).unwrap();
    assert_eq!(
        net.raft_mut(n(1)).propose(b"no".to_vec()).unwrap_err(),
        RaftError::TransferInProgress { to: n(3) }
    );
    net.process(n(1)).unwrap();
    net.deliver_all().unwrap();
    // The AppendEntries lost during the isolation fill the follower's window
    // (`max_inflight_msgs`); as in etcd, the next heartbeat's answer frees it and the
    // catch-up starts.
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    assert_eq!(net.leader(), Some(n(3)));
    assert!(net.raft(n(3)).last_index() >= 6);
}

// ----- §7 log compaction ---------------------------------------------------------------------

#[test]
fn lagging_follower_receives_the_snapshot_in_bounded_chunks() {
    // Reference: Raft §7, Figure 13 — a follower that needs compacted entries gets the
    // snapshot with InstallSnapshot, chunk by chunk (offset, data, done).
    let cfg = RaftConfig {
        snapshot_chunk_bytes: 16,
        ..plain_cfg()
    };
    let mut net = Net::new(3, cfg, 20);
    net.elect(n(1)).unwrap();
    net.isolate(n(3));
    for i in 0..20 {
        net.propose(n(1), format!("command-{i}").as_bytes())
            .unwrap();
    }
    net.deliver_all().unwrap();
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    net.compact(n(1)).unwrap();
    assert!(net.raft(n(1)).first_index() > 10);
    net.heal();
    let mut chunks = 0;
    for _ in 0..200 {
        net.tick(n(1)).unwrap();
        while !net.queue.is_empty() {
            if let MessageBody::InstallSnapshot { data, .. } = &net.queue[0].body {
                assert!(data.len() <= 16);
                chunks += 1;
            }
            net.deliver_at(0).unwrap();
        }
        if net.raft(n(3)).last_index() == net.raft(n(1)).last_index() {
            break;
        }
    }
    assert!(chunks > 1, "snapshot was not chunked ({chunks})");
    assert_eq!(
        net.raft(n(3)).snapshot_meta(),
        net.raft(n(1)).snapshot_meta()
    );
    assert_eq!(net.nodes[&n(3)].applied, net.nodes[&n(1)].applied);
}

#[test]
fn restart_from_snapshot_restores_state_and_reapplies_later_entries() {
    // Reference: Raft §7 — after a restart the state machine is loaded from the snapshot
    // and only later committed entries are re-applied.
    let mut net = Net::new(3, plain_cfg(), 21);
    net.elect(n(1)).unwrap();
    for i in 0..6 {
        net.propose(n(1), format!("c{i}").as_bytes()).unwrap();
    }
    net.deliver_all().unwrap();
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    net.compact(n(2)).unwrap();
    net.propose(n(1), b"later").unwrap();
    net.deliver_all().unwrap();
    net.tick(n(1)).unwrap();
    net.deliver_all().unwrap();
    let applied = net.nodes[&n(2)].applied.clone();
    net.crash(n(2), 0);
    net.restart(n(2)).unwrap();
    assert!(net.raft(n(2)).snapshot_meta().index > 0);
    assert_reapplies_prefix_then_all(&mut net, n(2), &applied);
}

// ----- flow control ------------------------------------------------------------------------

#[test]
fn replicate_state_bounds_inflight_messages() {
    // Reference: etcd raft flow control (Raft §10.2.1 pipelining) — at most
    // max_inflight_msgs unacknowledged AppendEntries per follower.
    let cfg = RaftConfig {
        max_inflight_msgs: 4,
        max_entries_per_msg: 1,
        ..plain_cfg()
    };
    let mut net = Net::new(3, cfg, 22);
    net.elect(n(1)).unwrap();
    assert_eq!(
        net.raft(n(1)).progress(n(2)).unwrap().state,
        ProgressState::Replicate
    );
    net.blocked.insert((n(2), n(1)));
    for i in 0..20 {
        net.propose(n(1), format!("c{i}").as_bytes()).unwrap();
    }
    let to2 = net.queue.iter().filter(|m| m.to == n(2)).count();
    assert_eq!(to2, 4, "in-flight bound not respected");
    assert_eq!(net.raft(n(1)).progress(n(2)).unwrap().inflight_msgs, 4);
}

#[test]
fn append_batches_respect_entry_and_byte_limits() {
    // Reference: etcd raft MaxSizePerMsg — batches are bounded in entries and bytes.
    let cfg = RaftConfig {
        max_entries_per_msg: 3,
        max_bytes_per_msg: 2 * (100 + ENTRY_OVERHEAD_BYTES),
        max_entry_bytes: 100,
        ..plain_cfg()
    };
    let mut net = Net::new(3, cfg, 23);
    net.elect(n(1)).unwrap();
    net.isolate(n(2));
    for _ in 0..10 {
        net.propose(n(1), &[7u8; 100]).unwrap();
    }
    net.deliver_all().unwrap();
    net.heal();
    net.tick(n(1)).unwrap();
    let mut max_batch = 0;
    for _ in 0..100 {
        if net.queue.is_empty() {
            break;
        }
        if let MessageBody::AppendEntries { entries, .. } = &net.queue[0].body {
            max_batch = max_batch.max(entries.len());
        }
        net.deliver_at(0).unwrap();
    }
    assert_eq!(max_batch, 2);
    assert_eq!(net.raft(n(2)).last_index(), net.raft(n(1)).last_index());
}

#[test]
fn probe_state_sends_one_append_at_a_time() {
    // Reference: etcd raft progress "probe" — while the match point is unknown the leader
    // waits for each answer (or a heartbeat) before sending again.
    let mut net = Net::new(3, plain_cfg(), 24);
    net.isolate(n(2));
    net.elect(n(1)).unwrap();
    let p = net.raft(n(1)).progress(n(2)).unwrap();
    assert_eq!(p.state, ProgressState::Probe);
    for i in 0..5 {
        net.propose(n(1), format!("c{i}").as_bytes()).unwrap();
    }
    let appends_to_2 = |net: &Net| {
        net.queue
            .iter()
            .filter(|m| m.to == n(2) && matches!(m.body, MessageBody::AppendEntries { .. }))
            .count()
    };
    assert_eq!(appends_to_2(&net), 0, "the first probe is still unanswered");
    net.deliver_all().unwrap();
    net.heal();
    net.tick(n(1)).unwrap();
    net.deliver_at(net.queue.iter().position(|m| m.to == n(2)).unwrap())
        .unwrap();
    net.deliver_at(net.queue.iter().position(|m| m.from == n(2)).unwrap())
        .unwrap();
    assert_eq!(
        appends_to_2(&net),
        1,
        "one probe after the heartbeat answer"
    );
    net.deliver_all().unwrap();
    assert_eq!(net.raft(n(2)).last_index(), net.raft(n(1)).last_index());
}

// ----- boundaries ------------------------------------------------------------------------------

#[test]
fn message_for_another_group_is_a_typed_error() {
    let mut g = group(1, 3, plain_cfg(), RecoveredState::default());
    let mut rng = seeded_rng(1);
    let mut m = msg(2, 1, 1, MessageBody::TimeoutNow);
    m.group = GroupId(9);
    assert_eq!(
        g.step(m, &mut rng).unwrap_err(),
        RaftError::WrongGroup {
            expected: GROUP,
            found: GroupId(9)
        }
    );
    // From itself, or addressed to another node. (Senders outside the configuration
    // are accepted: joining nodes and learners talk before everyone knows them.)
    for m in [
        msg(1, 1, 1, MessageBody::TimeoutNow),
        msg(2, 3, 1, MessageBody::TimeoutNow),
    ] {
        assert!(matches!(
            g.step(m, &mut rng),
            Err(RaftError::UnknownPeer { .. })
        ));
    }
    assert_eq!(g.dropped_messages(), 3);
}

#[test]
fn config_validation_names_the_field() {
    let cfg = RaftConfig {
        heartbeat_ticks: 10,
        ..RaftConfig::default()
    };
    assert!(matches!(
        cfg.validate(),
        Err(RaftError::InvalidConfig {
            field: "heartbeat_ticks",
            ..
        })
    ));
    let cfg = RaftConfig {
        max_inflight_msgs: 0,
        ..RaftConfig::default()
    };
    assert!(matches!(
        cfg.validate(),
        Err(RaftError::InvalidConfig {
            field: "max_inflight_msgs",
            ..
        })
    ));
}

#[test]
fn wal_replay_truncates_on_conflicting_entries_and_applies_snapshots() {
    let e = entries_with_terms(&[1, 1, 1, 2]);
    let mut replacement = entries_with_terms(&[1, 1, 3]);
    let replacement = replacement.split_off(2);
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: 2,
            term: 1,
            ..Default::default()
        },
        data: b"img".to_vec(),
    };
    let st = RecoveredState::from_records(vec![
        RaftRecord::HardState(HardState {
            term: 2,
            vote: Some(n(1)),
            commit: 1,
        }),
        RaftRecord::Entries(e),
        RaftRecord::Entries(replacement.clone()),
        RaftRecord::Snapshot(snap.clone()),
        RaftRecord::HardState(HardState {
            term: 3,
            vote: None,
            commit: 3,
        }),
    ])
    .unwrap();
    assert_eq!(st.hard_state.term, 3);
    assert_eq!(st.snapshot, Some(snap));
    assert_eq!(st.entries, replacement);
}

#[test]
fn corrupt_or_gapped_wal_records_are_typed_errors() {
    let err = WalRecord::decode(&[0xff, 0xff, 0xff], 4).unwrap_err();
    assert!(matches!(err, RaftError::CorruptRecord { position: 4, .. }));
    let mut gap = entries_with_terms(&[1, 1, 1, 1]);
    let gap = gap.split_off(3);
    let err = RecoveredState::from_records(vec![RaftRecord::Entries(gap)]).unwrap_err();
    assert!(matches!(err, RaftError::CorruptRecord { position: 0, .. }));
}
