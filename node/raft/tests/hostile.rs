//! Hostile input: every field of a peer message may be anything. Each test names the
//! rule it checks; a refused message is a typed, counted error that changes nothing, and
//! no value — not even `u64::MAX` — panics a node or overflows its arithmetic.

mod common;

use common::*;
use kvlab_raft::*;
use kvlab_types::{NodeId, seeded_rng};

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

fn group(id: u32, voters: u32, cfg: RaftConfig, st: RecoveredState) -> RaftGroup {
    let mut rng = seeded_rng(u64::from(id));
    RaftGroup::recover(GROUP, n(id), &ids(voters), cfg, st, &mut rng).unwrap()
}

/// Everything a refused message must leave alone.
fn fingerprint(g: &RaftGroup) -> (u64, Option<NodeId>, Role, Option<NodeId>, u64, u64) {
    (
        g.term(),
        g.vote(),
        g.role(),
        g.leader(),
        g.commit_index(),
        g.last_index(),
    )
}

fn refused(g: &mut RaftGroup, m: RaftMessage) -> MessageDefect {
    let before = fingerprint(g);
    let stats = g.stats();
    let mut rng = seeded_rng(7);
    let err = g.step(m.clone(), &mut rng).unwrap_err();
    let RaftError::MalformedMessage { from, defect } = err else {
        panic!("{m:?}: expected MalformedMessage, got {err:?}");
    };
    assert_eq!(from, m.from);
    assert_eq!(fingerprint(g), before, "{m:?} changed the state");
    assert!(
        !g.has_ready() || g.ready().messages.is_empty(),
        "{m:?} was answered"
    );
    assert_eq!(g.stats().messages_refused, stats.messages_refused + 1);
    assert_eq!(g.stats().messages_dropped, stats.messages_dropped + 1);
    defect
}

fn heartbeat(term: u64, leader_commit: u64) -> RaftMessage {
    msg(
        1,
        2,
        term,
        MessageBody::Heartbeat {
            leader_commit,
            read_round: 0,
        },
    )
}

#[test]
fn heartbeat_with_term_u64_max_is_refused_and_the_term_is_not_adopted() {
    // The reported case: a heartbeat "from n1" with term u64::MAX made every node that
    // adopted it overflow in `campaign` (term + 1), and the term was persisted.
    let mut g = group(2, 3, test_cfg(), state_with_log(&[1, 1], 1));
    let defect = refused(&mut g, heartbeat(u64::MAX, 0));
    assert_eq!(defect, MessageDefect::TermAboveMax { term: u64::MAX });
    assert_eq!(g.term(), 1);
    // The node still campaigns normally.
    let mut rng = seeded_rng(3);
    for _ in 0..100 {
        g.tick(&mut rng);
    }
    assert_ne!(g.role(), Role::Follower);
    assert!(g.term() <= 2);
}

#[test]
fn a_term_more_than_max_term_jump_ahead_is_refused_and_moves_the_term_one_jump() {
    // Raft §5.1: a node that sees a higher term raises its own. Beyond MAX_TERM_JUMP the
    // message is refused (no leader, no commit adopted from it), and the term moves one
    // jump towards it: a node stranded behind a peer that accepted a forgery catches up.
    let mut g = group(2, 3, test_cfg(), state_with_log(&[1, 1], 1));
    let mut rng = seeded_rng(1);
    let far = 1 + MAX_TERM_JUMP + 1;
    let err = g.step(heartbeat(far, 2), &mut rng).unwrap_err();
    assert_eq!(
        err,
        RaftError::MalformedMessage {
            from: n(1),
            defect: MessageDefect::TermJump {
                term: far,
                local_term: 1
            }
        }
    );
    assert_eq!(g.term(), 1 + MAX_TERM_JUMP);
    assert_eq!(
        (g.role(), g.leader(), g.commit_index()),
        (Role::Follower, None, 0)
    );
    assert_eq!(g.stats().messages_refused, 1);
    // The next one is within a jump: adopted as usual.
    g.step(heartbeat(far, 2), &mut rng).unwrap();
    assert_eq!(
        (g.term(), g.leader(), g.commit_index()),
        (far, Some(n(1)), 2)
    );
    // A far-ahead vote request to a node that hears from its leader moves nothing
    // (thesis §4.2.3), and a pre-vote never does.
    let term = g.term();
    for pre_vote in [false, true] {
        let m = msg(
            3,
            2,
            term + MAX_TERM_JUMP + 1,
            MessageBody::RequestVote {
                pre_vote,
                last_log_index: 9,
                last_log_term: 9,
                leader_transfer: false,
            },
        );
        assert!(g.step(m, &mut rng).is_err());
        assert_eq!(g.term(), term);
    }
}

#[test]
fn a_node_at_max_term_stays_a_follower_and_reports_it_once() {
    // Reachable only through 2^31 accepted forgeries in a row; it must not overflow.
    let mut st = state_with_log(&[1], MAX_TERM);
    st.hard_state.vote = None;
    let mut g = group(1, 3, test_cfg(), st);
    let mut rng = seeded_rng(5);
    let mut reported = 0;
    for _ in 0..500 {
        g.tick(&mut rng);
        let rd = g.ready();
        reported += rd
            .events
            .iter()
            .filter(|e| matches!(e, RaftEvent::Exhausted { term, .. } if *term == MAX_TERM))
            .count();
        assert!(rd.messages.is_empty(), "campaigned at MAX_TERM");
    }
    assert_eq!(g.role(), Role::Follower);
    assert_eq!(g.term(), MAX_TERM);
    assert_eq!(reported, 1);
    assert!(g.stats().campaigns_refused_exhausted >= 10);
    // A single-voter group cannot elect itself either.
    let mut solo = group(1, 1, test_cfg(), state_with_log(&[1], MAX_TERM));
    for _ in 0..100 {
        solo.tick(&mut rng);
    }
    assert_eq!(solo.role(), Role::Follower);
}

#[test]
fn a_node_whose_log_reached_max_index_stays_a_follower() {
    // A forged snapshot at MAX_INDEX, once installed: no index is left for a leader's
    // no-op, so the node neither campaigns nor appends past the bound.
    let st = RecoveredState {
        hard_state: HardState {
            term: 2,
            vote: None,
            commit: MAX_INDEX,
        },
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                index: MAX_INDEX,
                term: 2,
                ..Default::default()
            },
            data: Vec::new(),
        }),
        entries: Vec::new(),
    };
    let mut g = group(1, 1, test_cfg(), st);
    let mut rng = seeded_rng(2);
    let mut events = Vec::new();
    for _ in 0..100 {
        g.tick(&mut rng);
        events.extend(g.ready().events);
    }
    assert_eq!(g.role(), Role::Follower);
    assert_eq!(g.last_index(), MAX_INDEX);
    assert_eq!(
        events,
        vec![RaftEvent::Exhausted {
            term: 2,
            last_index: MAX_INDEX
        }]
    );
}

#[test]
fn recovery_refuses_a_term_above_max_term_and_a_commit_beyond_the_log() {
    let mut rng = seeded_rng(1);
    let recover = |st: RecoveredState, rng: &mut kvlab_types::Rng| {
        RaftGroup::recover(GROUP, n(1), &ids(3), test_cfg(), st, rng)
    };
    // What an older build persisted after adopting the forged term.
    let err = recover(state_with_log(&[1], u64::MAX), &mut rng).unwrap_err();
    assert!(
        matches!(err, RaftError::InvalidRecoveredState { .. }),
        "{err:?}"
    );
    let mut st = state_with_log(&[1, 1], 1);
    st.hard_state.commit = 3;
    let err = recover(st, &mut rng).unwrap_err();
    assert!(
        matches!(err, RaftError::InvalidRecoveredState { .. }),
        "{err:?}"
    );
    // Records naming an index beyond MAX_INDEX are corrupt, not an overflow.
    let records = [RaftRecord::Snapshot(Snapshot {
        meta: SnapshotMeta {
            index: u64::MAX,
            term: 1,
            ..Default::default()
        },
        data: Vec::new(),
    })];
    assert!(matches!(
        RecoveredState::from_records(records),
        Err(RaftError::CorruptRecord { .. })
    ));
}

#[test]
fn every_defect_is_refused_before_it_reaches_the_state() {
    // A follower of n1 at term 3 with log [1, 2, 3] (committed up to 1).
    let mut st = state_with_log(&[1, 2, 3], 3);
    st.hard_state.commit = 1;
    let cfg = test_cfg();
    let entry = |term, index, len| Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: vec![0; len],
    };
    let append = |prev_log_index, prev_log_term, entries, leader_commit| {
        msg(
            1,
            2,
            3,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        )
    };
    let snapshot = |meta: SnapshotMeta, offset: u64, data: Vec<u8>| {
        msg(
            1,
            2,
            3,
            MessageBody::InstallSnapshot {
                snapshot: Box::new(meta),
                offset,
                data,
                done: false,
            },
        )
    };
    let meta = |index, term| SnapshotMeta {
        index,
        term,
        ..Default::default()
    };
    let mut bad_conf = meta(5, 3);
    bad_conf.conf.voters = MemberSet::from_slice(&[n(1), n(2)]).unwrap();
    bad_conf.conf.learners = MemberSet::from_slice(&[n(2)]).unwrap();
    // A joint configuration whose demoted voter is not an outgoing voter.
    let mut bad_joint = meta(5, 3);
    bad_joint.conf.voters = MemberSet::from_slice(&[n(1), n(2)]).unwrap();
    bad_joint.conf.voters_outgoing = MemberSet::from_slice(&[n(1), n(2), n(3)]).unwrap();
    bad_joint.conf.learners_next = MemberSet::from_slice(&[n(4)]).unwrap();
    // Joint fields outside a joint configuration.
    let mut stray_auto_leave = meta(5, 3);
    stray_auto_leave.conf.voters = MemberSet::from_slice(&[n(1), n(2)]).unwrap();
    stray_auto_leave.conf.auto_leave = true;
    let conf_entry = |data: Vec<u8>| Entry {
        term: 3,
        index: 4,
        kind: EntryKind::ConfChange,
        data,
    };
    let named_twice = ConfChange::EnterJoint(JointChange {
        add_voters: MemberSet::from_slice(&[n(4)]).unwrap(),
        remove: MemberSet::from_slice(&[n(4)]).unwrap(),
        ..JointChange::default()
    });
    let cases: Vec<(&str, RaftMessage)> = vec![
        ("term above MAX_TERM", heartbeat(MAX_TERM + 1, 0)),
        (
            "configuration entry that does not decode",
            append(3, 3, vec![conf_entry(vec![0xff, 0xff, 0xff])], 0),
        ),
        (
            "joint change naming a node twice",
            append(3, 3, vec![conf_entry(named_twice.encode())], 0),
        ),
        (
            "joint change naming nobody",
            append(
                3,
                3,
                vec![conf_entry(
                    ConfChange::EnterJoint(JointChange::default()).encode(),
                )],
                0,
            ),
        ),
        (
            "joint change with an unsorted list",
            // EnterJoint, add_voters [4, 2], then three empty lists and auto_leave.
            append(3, 3, vec![conf_entry(vec![3, 2, 4, 2, 0, 0, 0, 0])], 0),
        ),
        (
            "snapshot with a demoted voter that is not outgoing",
            snapshot(bad_joint, 0, Vec::new()),
        ),
        (
            "snapshot with auto-leave outside a joint configuration",
            snapshot(stray_auto_leave, 0, Vec::new()),
        ),
        (
            "vote request with a last log term from the future",
            msg(
                3,
                2,
                4,
                MessageBody::RequestVote {
                    pre_vote: false,
                    last_log_index: 3,
                    last_log_term: 5,
                    leader_transfer: false,
                },
            ),
        ),
        (
            "vote request with an index above MAX_INDEX",
            msg(
                3,
                2,
                4,
                MessageBody::RequestVote {
                    pre_vote: true,
                    last_log_index: u64::MAX,
                    last_log_term: 3,
                    leader_transfer: false,
                },
            ),
        ),
        (
            "prev_log_index above MAX_INDEX",
            append(u64::MAX - 1, 3, vec![entry(3, u64::MAX, 1)], 0),
        ),
        (
            "the last entry's index would pass MAX_INDEX",
            append(MAX_INDEX, 3, vec![entry(3, MAX_INDEX + 1, 1)], 0),
        ),
        (
            "entries not contiguous",
            append(3, 3, vec![entry(3, 4, 1), entry(3, 6, 1)], 0),
        ),
        (
            "entry terms decrease",
            append(3, 3, vec![entry(3, 4, 1), entry(2, 5, 1)], 0),
        ),
        ("entry term 0", append(0, 0, vec![entry(0, 1, 1)], 0)),
        (
            "entry term above the message's",
            append(3, 3, vec![entry(9, 4, 1)], 0),
        ),
        (
            "entry larger than max_entry_bytes",
            append(3, 3, vec![entry(3, 4, cfg.max_entry_bytes + 1)], 0),
        ),
        (
            "leader_commit above MAX_INDEX",
            append(3, 3, Vec::new(), u64::MAX),
        ),
        ("heartbeat commit beyond the log", heartbeat(3, 4)),
        (
            "snapshot term above the message's",
            snapshot(meta(5, 4), 0, Vec::new()),
        ),
        ("snapshot with term 0", snapshot(meta(5, 0), 0, Vec::new())),
        (
            "snapshot index above MAX_INDEX",
            snapshot(meta(u64::MAX, 3), 0, Vec::new()),
        ),
        (
            "snapshot with a malformed configuration",
            snapshot(bad_conf, 0, Vec::new()),
        ),
        (
            "snapshot chunk beyond max_snapshot_bytes",
            snapshot(meta(5, 3), cfg.max_snapshot_bytes as u64, vec![1]),
        ),
        (
            "snapshot offset overflows",
            snapshot(meta(5, 3), u64::MAX, vec![1]),
        ),
        (
            "rejection hint beyond the rejected index",
            msg(
                3,
                2,
                3,
                MessageBody::AppendEntriesResponse {
                    result: AppendResult::Rejected {
                        prev_log_index: 2,
                        conflict_hint_index: 3,
                        conflict_hint_term: 1,
                    },
                },
            ),
        ),
    ];
    for (what, m) in cases {
        let mut g = group(2, 3, cfg.clone(), st.clone());
        let defect = refused(&mut g, m);
        println!("{what}: {defect}");
    }
}

#[test]
fn a_leader_refuses_acknowledgements_of_what_it_never_sent() {
    // Reference: Raft §5.3 — a leader never overwrites or deletes entries in its log, so
    // an honest follower cannot acknowledge (or reject at) an index beyond it.
    let mut net = Net::new(3, test_cfg(), 11);
    net.elect(n(1)).unwrap();
    net.propose(n(1), b"x").unwrap();
    net.deliver_all().unwrap();
    let term = net.raft(n(1)).term();
    let last = net.raft(n(1)).last_index();
    let leader = net.raft_mut(n(1));
    let cases = [
        MessageBody::AppendEntriesResponse {
            result: AppendResult::Accepted {
                match_index: last + 1,
            },
        },
        MessageBody::AppendEntriesResponse {
            result: AppendResult::Accepted {
                match_index: u64::MAX,
            },
        },
        MessageBody::AppendEntriesResponse {
            result: AppendResult::Rejected {
                prev_log_index: last + 5,
                conflict_hint_index: last + 5,
                conflict_hint_term: term,
            },
        },
        MessageBody::HeartbeatResponse {
            read_round: u64::MAX,
        },
    ];
    for body in cases {
        let defect = refused(leader, msg(2, 1, term, body));
        println!("{defect}");
    }
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.progress(n(2)).unwrap().match_index, last);
}

#[test]
fn a_forged_read_round_cannot_confirm_a_read() {
    // Reference: thesis §6.4 — a read point is granted only once a quorum acknowledged a
    // heartbeat sent after the read arrived; an echo of a round never sent is refused.
    let mut net = Net::new(3, test_cfg(), 12);
    net.elect(n(1)).unwrap();
    net.deliver_all().unwrap();
    let term = net.raft(n(1)).term();
    let leader = net.raft_mut(n(1));
    leader.read_index(77).unwrap();
    let _ = leader.ready();
    refused(
        leader,
        msg(
            2,
            1,
            term,
            MessageBody::HeartbeatResponse {
                read_round: 1 << 40,
            },
        ),
    );
    assert!(leader.ready().read_states.is_empty());
}

#[test]
fn a_proposal_larger_than_max_entry_bytes_never_enters_the_log() {
    let cfg = test_cfg();
    let mut g = group(1, 1, cfg.clone(), RecoveredState::default());
    let mut rng = seeded_rng(1);
    while g.role() != Role::Leader {
        g.tick(&mut rng);
    }
    let _ = g.ready();
    let last = g.last_index();
    for len in [cfg.max_entry_bytes + 1, 1 << 20, 5_000_000] {
        assert_eq!(
            g.propose(vec![0; len]),
            Err(RaftError::EntryTooLarge {
                len_bytes: len,
                max_bytes: cfg.max_entry_bytes
            })
        );
    }
    assert_eq!(g.last_index(), last);
    assert_eq!(g.stats().proposals_too_large, 3);
    // The largest allowed entry commits.
    let at = g.propose(vec![7; cfg.max_entry_bytes]).unwrap();
    let rd = g.ready();
    assert!(rd.committed_entries.iter().any(|e| e.index == at.index));
}

#[test]
fn config_bounds_entries_by_the_message_budget() {
    let cfg = RaftConfig {
        max_entry_bytes: RaftConfig::default().max_bytes_per_msg,
        ..RaftConfig::default()
    };
    assert!(matches!(
        cfg.validate(),
        Err(RaftError::InvalidConfig {
            field: "max_entry_bytes",
            ..
        })
    ));
    let cfg = RaftConfig {
        election_ticks: u32::MAX,
        ..RaftConfig::default()
    };
    assert!(matches!(
        cfg.validate(),
        Err(RaftError::InvalidConfig {
            field: "election_ticks",
            ..
        })
    ));
    let d = RaftConfig::default();
    d.validate().unwrap();
    assert_eq!(d.max_message_bytes(), (512 << 10) + MESSAGE_OVERHEAD_BYTES);
}

#[test]
fn the_largest_messages_encode_within_max_message_bytes() {
    // Every integer at its longest varint, full member sets, entries and chunks at
    // their limits: the encoding must stay within the bound a transport is sized by.
    let cfg = RaftConfig::default();
    let full: Vec<NodeId> = (0..MAX_MEMBERS as u32 / 2)
        .map(|i| NodeId(u32::MAX - i))
        .collect();
    let learners: Vec<NodeId> = (0..MAX_MEMBERS as u32 / 2).map(NodeId).collect();
    let longest: Vec<NodeId> = (0..MAX_MEMBERS as u32)
        .map(|i| NodeId(u32::MAX - i))
        .collect();
    let meta = SnapshotMeta {
        index: u64::MAX,
        term: u64::MAX,
        // Encoded sizes only: every slot of all four sets at its longest varint (a
        // joint configuration's sets never all fill up at once, but the bound holds).
        conf: ConfState {
            voters: MemberSet::from_slice(&full).unwrap(),
            learners: MemberSet::from_slice(&learners).unwrap(),
            voters_outgoing: MemberSet::from_slice(&longest).unwrap(),
            learners_next: MemberSet::from_slice(&longest).unwrap(),
            auto_leave: true,
        },
    };
    let per_entry = cfg.max_entry_bytes;
    let count = cfg.max_bytes_per_msg / (per_entry + ENTRY_OVERHEAD_BYTES);
    let entries: Vec<Entry> = (0..count as u64)
        .map(|i| Entry {
            term: u64::MAX,
            index: u64::MAX - i,
            kind: EntryKind::ConfChange,
            data: vec![0xff; per_entry],
        })
        .collect();
    let bodies = [
        MessageBody::AppendEntries {
            prev_log_index: u64::MAX,
            prev_log_term: u64::MAX,
            entries,
            leader_commit: u64::MAX,
        },
        MessageBody::InstallSnapshot {
            snapshot: Box::new(meta),
            offset: u64::MAX,
            data: vec![0xff; cfg.snapshot_chunk_bytes],
            done: true,
        },
        MessageBody::InstallSnapshotResponse {
            snapshot: Box::new(meta),
            next_offset: u64::MAX,
        },
        MessageBody::AppendEntriesResponse {
            result: AppendResult::Rejected {
                prev_log_index: u64::MAX,
                conflict_hint_index: u64::MAX,
                conflict_hint_term: u64::MAX,
            },
        },
    ];
    for body in bodies {
        let m = RaftMessage {
            group: GroupId(u64::MAX),
            from: NodeId(u32::MAX),
            to: NodeId(u32::MAX),
            term: u64::MAX,
            body,
        };
        let len = postcard::to_allocvec(&m).unwrap().len();
        assert!(
            len <= cfg.max_message_bytes(),
            "{len} > {}",
            cfg.max_message_bytes()
        );
    }
}

#[test]
fn unstable_entries_are_persisted_in_message_sized_records() {
    // A WAL record never outgrows max_bytes_per_msg (plus the record's own framing), so
    // it stays under the storage's record limit whatever the batch.
    let cfg = RaftConfig {
        max_bytes_per_msg: 4 * (100 + ENTRY_OVERHEAD_BYTES),
        max_entry_bytes: 100,
        ..test_cfg()
    };
    let mut g = group(1, 1, cfg.clone(), RecoveredState::default());
    let mut rng = seeded_rng(1);
    while g.role() != Role::Leader {
        g.tick(&mut rng);
    }
    let mut records = g.ready().records;
    for _ in 0..10 {
        g.propose(vec![1; 100]).unwrap();
    }
    let rd = g.ready();
    records.extend(rd.records.iter().cloned());
    let batches: Vec<usize> = rd
        .records
        .iter()
        .filter_map(|r| match r {
            RaftRecord::Entries(e) => Some(e.iter().map(Entry::size_bytes).sum()),
            _ => None,
        })
        .collect();
    assert_eq!(batches.len(), 3, "{batches:?}");
    assert!(batches.iter().all(|&b| b <= cfg.max_bytes_per_msg));
    // Replaying the split records rebuilds the same log.
    let st = RecoveredState::from_records(records).unwrap();
    assert_eq!(st.entries.len() as u64, g.last_index());
}
