//! Scripted scenarios, one per recovery case of design note wave2 §3.3 plus the
//! conflict policies and the 1PC fast path. Each drives the state machines by hand, in
//! the order the scenario names, and checks locks, records, markers and stores.

use std::collections::BTreeMap;

use kvlab_txn::*;
use kvlab_types::{Key, NodeId, Time};

type Store = BTreeMap<Key, TxnValue>;

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);

/// Keys `a..` live in group 1 (the home of a txn whose first key is there), `n..` in 2.
fn group_of(k: &Key) -> GroupId {
    if k.as_str() < "n" { G1 } else { G2 }
}

fn t(seq: u64) -> TxnId {
    TxnId {
        node: NodeId(1),
        boot_epoch: 1,
        seq,
    }
}

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

fn append(key: &str, value: i64) -> MicroOp {
    MicroOp::Append {
        key: key.into(),
        value,
    }
}

fn read(key: &str) -> MicroOp {
    MicroOp::Read { key: key.into() }
}

/// Two groups, each one state machine and one store; entries applied as delivered.
struct Cluster {
    cfg: TxnConfig,
    g: BTreeMap<GroupId, (ParticipantState, Store)>,
}

impl Cluster {
    fn new(cfg: TxnConfig) -> Cluster {
        let g = [G1, G2]
            .map(|id| (id, (ParticipantState::new(id), Store::new())))
            .into();
        Cluster { cfg, g }
    }

    fn apply(&mut self, group: GroupId, entry: &TxnEntry, now: Time) -> Applied {
        let (state, store) = self.g.get_mut(&group).unwrap();
        let mut e = entry.clone();
        e.stamp(now);
        state.apply(&self.cfg, store, &e)
    }

    fn state(&self, group: GroupId) -> &ParticipantState {
        &self.g[&group].0
    }

    fn value(&self, key: &str) -> Option<&TxnValue> {
        self.g[&group_of(&key.to_string())].1.get(key)
    }

    /// Delivers every request of `step` and feeds the answers back, once.
    fn deliver(&mut self, c: &mut Coordinator, step: CoordStep, now: Time) -> CoordStep {
        let mut next = CoordStep {
            send: Vec::new(),
            outcome: step.outcome,
        };
        for r in step.send {
            let a = self.apply(r.group, &r.entry, now);
            let s = c.on_answer(r.group, &a.answer, now);
            next.send.extend(s.send);
            next.outcome = next.outcome.or(s.outcome);
        }
        next
    }

    /// The resolver of `group` polls at `now`; what it asks is answered by the home and
    /// applied at once. Returns how many decisions were applied.
    fn resolve(&mut self, group: GroupId, resolver: &mut Resolver, now: Time) -> usize {
        let actions = resolver.poll(self.state(group), &self.cfg, now);
        let mut applied = 0;
        for a in actions {
            let ResolveAction::AskHome { txn, home } = a else {
                panic!("{a:?}")
            };
            let decision = match home_resolve(self.state(home), &self.cfg, txn, now) {
                HomeResolve::Answer(d) => d,
                HomeResolve::RetryLater => continue,
                HomeResolve::Propose(e) => match self.apply(home, &e, now).answer {
                    EntryAnswer::Decided(d) => d,
                    other => panic!("{other:?}"),
                },
            };
            let e = resolver.on_decision(txn, home, decision);
            self.apply(group, &e, now);
            applied += 1;
        }
        applied
    }
}

/// A two-group txn: append to `a` (home G1), append to `z` (G2).
fn two_group_txn(cl: &mut Cluster, seq: u64) -> (Coordinator, CoordStep) {
    let ops = vec![append("a", seq as i64), append("z", seq as i64)];
    let (c, step) = Coordinator::start(t(seq), ops, &cl.cfg, ms(0), group_of).unwrap();
    assert_eq!(step.send.len(), 2, "one PREPARE per group");
    (c, step)
}

#[test]
fn coordinator_dies_between_prepare_and_decision_and_the_resolver_aborts_after_expiry() {
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c, step) = two_group_txn(&mut cl, 1);
    let step = cl.deliver(&mut c, step, ms(0));
    // Both voted YES; the coordinator would now send Commit to the home. It dies instead.
    assert_eq!(step.send.len(), 1);
    drop((c, step));
    assert!(cl.state(G2).locks().get("z").is_some());
    let mut r2 = Resolver::default();
    // Before resolve_after_ms nobody asks.
    assert_eq!(cl.resolve(G2, &mut r2, ms(999)), 0);
    // After it, the home's record is Pending and not expired: retry later.
    assert_eq!(cl.resolve(G2, &mut r2, ms(1000)), 0);
    assert!(matches!(
        cl.state(G1).record(t(1)),
        Some(TxnRecord::Pending { .. })
    ));
    // Once the record expired (txn_ttl_ms = 3000), the home aborts it, and G2 obeys.
    assert_eq!(cl.resolve(G2, &mut r2, ms(3000)), 1);
    assert_eq!(cl.state(G1).record(t(1)), Some(&TxnRecord::Aborted));
    assert!(cl.state(G2).prepared().is_empty() && cl.state(G2).locks().is_empty());
    // The home's Abort entry released the home's own locks in the same entry, so the
    // home's resolver has nothing left to do.
    assert!(cl.state(G1).locks().is_empty() && cl.state(G1).prepared().is_empty());
    let mut r1 = Resolver::default();
    assert_eq!(cl.resolve(G1, &mut r1, ms(3000)), 0);
    assert_eq!(cl.value("a"), None);
    assert_eq!(cl.value("z"), None);
}

#[test]
fn coordinator_dies_after_the_homes_commit_and_the_resolver_learns_committed() {
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c, step) = two_group_txn(&mut cl, 1);
    let step = cl.deliver(&mut c, step, ms(0));
    // Deliver only the Commit to the home: the client gets ok now.
    let commit = step.send.into_iter().find(|r| r.group == G1).unwrap();
    let a = cl.apply(G1, &commit.entry, ms(1));
    let s = c.on_answer(G1, &a.answer, ms(1));
    assert_eq!(s.outcome.map(|o| o.history_type()), Some("ok"));
    assert_eq!(s.send.len(), 1, "Commit to G2 next");
    drop(c); // dies before G2 hears the decision
    assert_eq!(cl.value("a"), Some(&TxnValue::List(vec![1])));
    assert_eq!(cl.value("z"), None, "G2 still holds the buffered write");
    let mut r2 = Resolver::default();
    assert_eq!(cl.resolve(G2, &mut r2, ms(1000)), 1);
    assert_eq!(cl.value("z"), Some(&TxnValue::List(vec![1])));
    assert!(cl.state(G2).locks().is_empty());
    assert_eq!(
        cl.state(G2).finished(t(1)).map(|f| f.decision),
        Some(Decision::Commit)
    );
}

#[test]
fn a_late_duplicate_prepare_after_the_decision_is_refused() {
    for (decide, expect) in [
        (Decision::Commit, Decision::Commit),
        (Decision::Abort, Decision::Abort),
    ] {
        let mut cl = Cluster::new(TxnConfig::default());
        let (mut c, step) = two_group_txn(&mut cl, 1);
        let prepares = step.send.clone();
        cl.deliver(&mut c, step, ms(0));
        let entry = match decide {
            Decision::Commit => TxnEntry::Commit {
                txn: t(1),
                home: G1,
            },
            Decision::Abort => TxnEntry::Abort {
                txn: t(1),
                home: G1,
            },
        };
        cl.apply(G1, &entry, ms(1));
        cl.apply(G2, &entry, ms(1));
        for p in &prepares {
            let a = cl.apply(p.group, &p.entry, ms(2));
            let refused = match a.answer {
                EntryAnswer::Vote(Vote::No(Refusal::Finished(d))) => d == expect,
                EntryAnswer::Vote(Vote::No(Refusal::RecordAborted)) => expect == Decision::Abort,
                _ => false,
            };
            assert!(
                refused,
                "{decide:?} then a late PREPARE at {:?}: {:?}",
                p.group, a.answer
            );
            assert!(cl.state(p.group).locks().is_empty());
        }
        let once = if expect == Decision::Commit {
            Some(TxnValue::List(vec![1]))
        } else {
            None
        };
        assert_eq!(cl.value("z").cloned(), once);
    }
}

#[test]
fn the_no_finished_marker_variant_accepts_the_late_prepare_and_appends_twice() {
    let mut cl = Cluster::new(TxnConfig {
        bug: TxnBug::NoFinishedMarker,
        ..TxnConfig::default()
    });
    let (mut c, step) = two_group_txn(&mut cl, 1);
    let prepare_z = step.send.iter().find(|r| r.group == G2).unwrap().clone();
    let step = cl.deliver(&mut c, step, ms(0));
    let step = cl.deliver(&mut c, step, ms(1)); // Commit at the home
    cl.deliver(&mut c, step, ms(1)); // Commit at G2
    assert_eq!(cl.value("z"), Some(&TxnValue::List(vec![1])));
    let a = cl.apply(G2, &prepare_z.entry, ms(5));
    assert!(
        matches!(a.answer, EntryAnswer::Vote(Vote::Yes { .. })),
        "{a:?}"
    );
    let mut r2 = Resolver::default();
    assert_eq!(cl.resolve(G2, &mut r2, ms(2000)), 1);
    assert_eq!(
        cl.value("z"),
        Some(&TxnValue::List(vec![1, 1])),
        "duplicate elements"
    );
}

#[test]
fn a_participant_leader_change_rebuilds_the_precheck_empty_and_apply_decides() {
    let mut cl = Cluster::new(TxnConfig::default());
    let p = |seq| {
        let (_, s) = Coordinator::start(
            t(seq),
            vec![append("a", 1), append("z", 1)],
            &cl.cfg,
            ms(0),
            group_of,
        )
        .unwrap();
        s.send.into_iter().find(|r| r.group == G2).unwrap().entry
    };
    let (p1, p2) = (p(1), p(2));
    let reqs = |e: &TxnEntry| match e {
        TxnEntry::Prepare(p) => lock_requests(&key_modes(&p.ops), true),
        _ => unreachable!(),
    };
    // The old leader proposed T1's PREPARE; T2's is refused by its pre-check, no entry.
    let mut old = LeaderPrecheck::default();
    old.note_proposed(t(1), reqs(&p1));
    assert!(old.check(cl.state(G2).locks(), t(2), &reqs(&p2)).is_some());
    // A new leader starts with an empty set and lets T2's PREPARE through.
    let new = LeaderPrecheck::default();
    assert!(new.check(cl.state(G2).locks(), t(2), &reqs(&p2)).is_none());
    // T1's entry was committed by the new leader after all and applies first; the
    // apply-time check then refuses T2.
    let a1 = cl.apply(G2, &p1, ms(1));
    assert!(matches!(a1.answer, EntryAnswer::Vote(Vote::Yes { .. })));
    let a2 = cl.apply(G2, &p2, ms(1));
    assert!(
        matches!(a2.answer, EntryAnswer::Vote(Vote::No(Refusal::Conflict(_)))),
        "{a2:?}"
    );
    assert_eq!(cl.state(G2).locks().get("z"), Some(&Lock::Exclusive(t(1))));
}

#[test]
fn a_no_wait_conflict_votes_no_without_a_log_entry_and_the_txn_fails() {
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c1, s1) = two_group_txn(&mut cl, 1);
    cl.deliver(&mut c1, s1, ms(0)); // T1 holds a and z
    let (mut c2, s2) = two_group_txn(&mut cl, 2);
    let before = cl.state(G2).stats().clone();
    let mut next = CoordStep::default();
    for r in s2.send {
        // The leader's pre-check answers; nothing is proposed.
        let (state, _) = &cl.g[&r.group];
        let TxnEntry::Prepare(p) = &r.entry else {
            unreachable!()
        };
        let reqs = lock_requests(&key_modes(&p.ops), true);
        let c = LeaderPrecheck::default()
            .check(state.locks(), t(2), &reqs)
            .expect("conflict");
        let s = c2.on_answer(
            r.group,
            &EntryAnswer::Vote(Vote::No(Refusal::Conflict(c))),
            ms(1),
        );
        next.send.extend(s.send);
    }
    assert_eq!(cl.state(G2).stats(), &before, "no entry was applied");
    // The coordinator aborts at the home (create-if-absent) and reports fail.
    assert_eq!(next.send.len(), 1);
    assert_eq!(
        next.send[0].entry,
        TxnEntry::Abort {
            txn: t(2),
            home: G1
        }
    );
    let out = cl.deliver(&mut c2, next, ms(2));
    assert_eq!(out.outcome.map(|o| o.history_type()), Some("fail"));
    assert_eq!(cl.state(G1).record(t(2)), Some(&TxnRecord::Aborted));
}

#[test]
fn wait_die_lets_an_older_prepare_wait_and_kills_a_younger_one() {
    let cfg = TxnConfig {
        conflict: ConflictPolicy::WaitDie,
        lock_wait_queue_max: 1,
        ..TxnConfig::default()
    };
    let mut cl = Cluster::new(cfg);
    let prep = |seq: u64| {
        TxnEntry::Prepare(Prepare {
            txn: t(seq),
            home: G2,
            ops: vec![append("z", seq as i64)],
            participants: vec![G2],
            ttl_ms: 3000,
            proposed_at: Time::ZERO,
        })
    };
    assert!(matches!(
        cl.apply(G2, &prep(5), ms(0)).answer,
        EntryAnswer::Vote(Vote::Yes { .. })
    ));
    // T9 is younger than the holder T5: it dies.
    let a = cl.apply(G2, &prep(9), ms(0)).answer;
    assert!(
        matches!(a, EntryAnswer::Vote(Vote::No(Refusal::Conflict(_)))),
        "{a:?}"
    );
    // T1 is older: it waits. T2 is older too, but the queue (max 1) is full.
    assert_eq!(cl.apply(G2, &prep(1), ms(0)).answer, EntryAnswer::Waiting);
    let a = cl.apply(G2, &prep(2), ms(0)).answer;
    assert!(
        matches!(a, EntryAnswer::Vote(Vote::No(Refusal::QueueFull { .. }))),
        "{a:?}"
    );
    // T5 commits: the same entry grants T1 the lock and decides its vote.
    let done = cl.apply(
        G2,
        &TxnEntry::Commit {
            txn: t(5),
            home: G2,
        },
        ms(1),
    );
    assert_eq!(done.answer, EntryAnswer::Decided(Decision::Commit));
    assert_eq!(done.woken.len(), 1);
    assert_eq!(done.woken[0].0, t(1));
    let Vote::Yes { results } = &done.woken[0].1 else {
        panic!("{:?}", done.woken)
    };
    assert_eq!(
        results,
        &vec![OpResult::Appended {
            key: "z".into(),
            value: 1
        }]
    );
    assert_eq!(cl.state(G2).locks().get("z"), Some(&Lock::Exclusive(t(1))));
}

#[test]
fn one_pc_fast_path_is_one_entry_without_a_record_and_duplicates_answer_from_the_marker() {
    let mut cl = Cluster::new(TxnConfig::default());
    let ops = vec![append("a", 1), read("a"), append("b", 2)];
    let (mut c, step) = Coordinator::start(t(1), ops, &cl.cfg, ms(0), group_of).unwrap();
    assert_eq!(step.send.len(), 1);
    let entry = step.send[0].entry.clone();
    assert!(matches!(entry, TxnEntry::Execute1Pc { .. }));
    let out = cl.deliver(&mut c, step, ms(0));
    let Some(TxnOutcome::Committed { results }) = out.outcome else {
        panic!("{out:?}")
    };
    assert_eq!(
        results[1],
        OpResult::Read {
            key: "a".into(),
            value: Some(TxnValue::List(vec![1]))
        }
    );
    assert!(out.send.is_empty() && c.is_done());
    assert_eq!(cl.state(G1).record(t(1)), None, "no record for 1PC");
    // A duplicate of the entry answers the same and does not append again.
    let again = cl.apply(G1, &entry, ms(5));
    assert_eq!(again.answer, EntryAnswer::OnePc(Ok(results)));
    assert_eq!(cl.value("a"), Some(&TxnValue::List(vec![1])));
}

#[test]
fn a_one_pc_refused_by_the_precheck_is_settled_by_an_abort_in_its_group() {
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c, step) =
        Coordinator::start(t(1), vec![append("a", 1)], &cl.cfg, ms(0), group_of).unwrap();
    let entry = step.send[0].entry.clone();
    // The pre-check refused (say, a PREPARE proposed but not applied held `a`).
    let conflict = Conflict {
        key: "a".into(),
        holders: vec![t(7)],
    };
    let s = c.on_answer(
        G1,
        &EntryAnswer::Vote(Vote::No(Refusal::Conflict(conflict))),
        ms(1),
    );
    assert_eq!(s.outcome, None, "not yet: an earlier copy may still apply");
    assert_eq!(
        s.send[0].entry,
        TxnEntry::Abort {
            txn: t(1),
            home: G1
        }
    );
    let out = cl.deliver(&mut c, s, ms(2));
    assert_eq!(out.outcome.map(|o| o.history_type()), Some("fail"));
    // A copy of the 1PC entry that applies later is refused: fail stays true.
    let late = cl.apply(G1, &entry, ms(3));
    assert_eq!(
        late.answer,
        EntryAnswer::OnePc(Err(Refusal::Finished(Decision::Abort)))
    );
    assert_eq!(cl.value("a"), None);
}

#[test]
fn a_missing_vote_aborts_after_prepare_timeout_and_a_late_home_prepare_is_refused() {
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c, step) = two_group_txn(&mut cl, 1);
    let home_prepare = step.send.iter().find(|r| r.group == G1).unwrap().clone();
    // Only G2's PREPARE arrives; the home's is lost.
    let z = step.send.into_iter().find(|r| r.group == G2).unwrap();
    let a = cl.apply(G2, &z.entry, ms(0));
    assert!(c.on_answer(G2, &a.answer, ms(0)).send.is_empty());
    assert_eq!(
        c.on_tick(ms(200)).send.len(),
        1,
        "the missing PREPARE is resent"
    );
    let s = c.on_tick(ms(1000));
    assert_eq!(
        s.send,
        vec![Request {
            group: G1,
            entry: TxnEntry::Abort {
                txn: t(1),
                home: G1
            }
        }]
    );
    let s = cl.deliver(&mut c, s, ms(1001));
    assert_eq!(s.outcome.as_ref().map(|o| o.history_type()), Some("fail"));
    cl.deliver(&mut c, s, ms(1002));
    assert!(c.is_done());
    assert!(cl.state(G2).locks().is_empty());
    let late = cl.apply(G1, &home_prepare.entry, ms(1003));
    assert_eq!(
        late.answer,
        EntryAnswer::Vote(Vote::No(Refusal::RecordAborted))
    );
    assert!(cl.state(G1).locks().is_empty());
}

#[test]
fn a_home_that_never_prepared_is_aborted_by_the_resolver_create_if_absent() {
    let cfg = TxnConfig::default();
    let state = ParticipantState::new(G1);
    assert_eq!(
        home_resolve(&state, &cfg, t(3), ms(0)),
        HomeResolve::Propose(TxnEntry::Abort {
            txn: t(3),
            home: G1
        })
    );
    let mut cl = Cluster::new(cfg);
    let a = cl.apply(
        G1,
        &TxnEntry::Commit {
            txn: t(3),
            home: G1,
        },
        ms(0),
    );
    assert_eq!(
        a.answer,
        EntryAnswer::NoRecord,
        "a commit never creates a record"
    );
    let a = cl.apply(
        G1,
        &TxnEntry::Abort {
            txn: t(3),
            home: G1,
        },
        ms(0),
    );
    assert_eq!(a.answer, EntryAnswer::Decided(Decision::Abort));
    let a = cl.apply(
        G1,
        &TxnEntry::Commit {
            txn: t(3),
            home: G1,
        },
        ms(0),
    );
    assert_eq!(
        a.answer,
        EntryAnswer::Decided(Decision::Abort),
        "the CAS refuses the other decision"
    );
}

#[test]
fn bounds_are_typed_refusals_never_panics() {
    let cfg = TxnConfig {
        records_max: 2,
        max_keys_per_txn: 2,
        ..TxnConfig::default()
    };
    let too_many = vec![read("a"), read("b"), read("c")];
    assert_eq!(
        Coordinator::start(t(1), too_many.clone(), &cfg, ms(0), group_of).unwrap_err(),
        TxnError::TooManyKeys { keys: 3, max: 2 }
    );
    assert_eq!(
        Coordinator::start(t(1), vec![], &cfg, ms(0), group_of).unwrap_err(),
        TxnError::Empty
    );
    let mut cl = Cluster::new(cfg);
    let one = |seq| TxnEntry::Execute1Pc {
        txn: t(seq),
        ops: vec![append("a", seq as i64)],
    };
    let a = cl.apply(
        G1,
        &TxnEntry::Execute1Pc {
            txn: t(9),
            ops: too_many,
        },
        ms(0),
    );
    assert_eq!(
        a.answer,
        EntryAnswer::OnePc(Err(Refusal::TooManyKeys { keys: 3, max: 2 }))
    );
    assert!(matches!(
        cl.apply(G1, &one(1), ms(0)).answer,
        EntryAnswer::OnePc(Ok(_))
    ));
    assert!(matches!(
        cl.apply(G1, &one(2), ms(0)).answer,
        EntryAnswer::OnePc(Ok(_))
    ));
    assert_eq!(
        cl.apply(G1, &one(3), ms(0)).answer,
        EntryAnswer::OnePc(Err(Refusal::RecordsFull { max: 2 }))
    );
    let a = cl.apply(
        G1,
        &TxnEntry::Abort {
            txn: t(4),
            home: G1,
        },
        ms(0),
    );
    assert_eq!(a.answer, EntryAnswer::RecordsFull { max: 2 });
    // An append to a register is a NO, not a panic.
    let mut cl = Cluster::new(TxnConfig::default());
    cl.apply(
        G1,
        &TxnEntry::Execute1Pc {
            txn: t(1),
            ops: vec![MicroOp::Write {
                key: "a".into(),
                value: 1,
            }],
        },
        ms(0),
    );
    let a = cl.apply(
        G1,
        &TxnEntry::Execute1Pc {
            txn: t(2),
            ops: vec![append("a", 2)],
        },
        ms(0),
    );
    assert!(
        matches!(a.answer, EntryAnswer::OnePc(Err(Refusal::Eval(_)))),
        "{a:?}"
    );
}

#[test]
fn participant_state_survives_a_snapshot_with_a_prepared_txn() {
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c, step) = two_group_txn(&mut cl, 1);
    let step = cl.deliver(&mut c, step, ms(0));
    let bytes = postcard::to_allocvec(cl.state(G2)).unwrap();
    let restored: ParticipantState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(&restored, cl.state(G2));
    // The restored replica carries on: the decision applies the buffered write.
    cl.g.get_mut(&G2).unwrap().0 = restored;
    let step = cl.deliver(&mut c, step, ms(1));
    cl.deliver(&mut c, step, ms(2));
    assert_eq!(cl.value("z"), Some(&TxnValue::List(vec![1])));
    assert!(c.is_done());
}

#[test]
fn a_resolver_abort_that_wins_the_cas_makes_the_late_commit_fail() {
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c, step) = two_group_txn(&mut cl, 1);
    let step = cl.deliver(&mut c, step, ms(0));
    // The coordinator is slow: G2's resolver gets the home to abort the expired record.
    let mut r2 = Resolver::default();
    assert_eq!(cl.resolve(G2, &mut r2, ms(3000)), 1);
    // Now the coordinator's Commit reaches the home: the CAS refuses it.
    let out = cl.deliver(&mut c, step, ms(3001));
    match out.outcome {
        Some(TxnOutcome::Aborted {
            reason: AbortReason::AbortedByResolver,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(cl.state(G1).record(t(1)), Some(&TxnRecord::Aborted));
    assert_eq!(cl.value("a"), None);
    assert_eq!(cl.value("z"), None);
}

#[test]
fn an_unreachable_home_makes_the_outcome_info_after_the_retry_bound() {
    let cfg = TxnConfig {
        decision_retries_max: 3,
        ..TxnConfig::default()
    };
    let mut cl = Cluster::new(cfg);
    let (mut c, step) = two_group_txn(&mut cl, 1);
    let step = cl.deliver(&mut c, step, ms(0));
    assert_eq!(
        step.send[0].entry,
        TxnEntry::Commit {
            txn: t(1),
            home: G1
        }
    );
    // The Commit and every resend are lost.
    let mut now = 0;
    let outcome = loop {
        now += 200;
        let s = c.on_tick(ms(now));
        if let Some(o) = s.outcome {
            break o;
        }
        assert_eq!(s.send.len(), 1, "a resend at {now} ms");
    };
    assert_eq!(outcome.history_type(), "info");
    assert_eq!(now, 800, "three resends, then give up");
    assert!(c.is_done());
    // A coordinator abandoned by its node answers info too, once.
    let (mut c2, _) = two_group_txn(&mut cl, 2);
    assert_eq!(c2.abandon(ms(1)).map(|o| o.history_type()), Some("info"));
    assert_eq!(c2.abandon(ms(2)), None);
}

#[test]
fn plain_operations_conflict_with_the_locks_of_prepared_transactions() {
    let mut cl = Cluster::new(TxnConfig::default());
    // T1 writes z and only reads y (both in G2), home G1.
    let ops = vec![append("a", 1), append("z", 1), read("y")];
    let (mut c, step) = Coordinator::start(t(1), ops, &cl.cfg, ms(0), group_of).unwrap();
    cl.deliver(&mut c, step, ms(0));
    let g2 = cl.state(G2);
    assert!(
        g2.plain_conflict("z", false).is_some(),
        "a plain read of a key about to change"
    );
    assert!(g2.plain_conflict("z", true).is_some());
    assert!(g2.plain_conflict("y", false).is_none(), "readers share");
    assert!(
        g2.plain_conflict("y", true).is_some(),
        "a plain write of a key read under lock"
    );
    assert!(g2.plain_conflict("x", true).is_none());
}

#[test]
fn timing_splits_a_2pc_commit_into_prepare_and_decide_and_a_1pc_is_all_prepare() {
    // 2PC: votes at 3 ms and 5 ms, the home's Committed applied at 9 ms.
    let mut cl = Cluster::new(TxnConfig::default());
    let (mut c, step) = two_group_txn(&mut cl, 1);
    assert_eq!(c.timing(), None, "no outcome yet");
    let mut decide = CoordStep::default();
    for (r, at) in step.send.into_iter().zip([ms(3), ms(5)]) {
        let a = cl.apply(r.group, &r.entry, at);
        let s = c.on_answer(r.group, &a.answer, at);
        decide.send.extend(s.send);
    }
    assert_eq!(decide.send.len(), 1, "the Commit to the home");
    let done = cl.deliver(&mut c, decide, ms(9));
    assert!(matches!(done.outcome, Some(TxnOutcome::Committed { .. })));
    let timing = c.timing().unwrap();
    assert_eq!(
        (timing.groups, timing.prepare_ns, timing.decide_ns),
        (2, 5_000_000, 4_000_000)
    );

    // 1PC: the one entry is the prepare; there is no decide phase.
    let mut cl = Cluster::new(TxnConfig::default());
    let ops = vec![append("a", 1), read("b")];
    let (mut c, step) = Coordinator::start(t(2), ops, &cl.cfg, ms(1), group_of).unwrap();
    let done = cl.deliver(&mut c, step, ms(4));
    assert!(matches!(done.outcome, Some(TxnOutcome::Committed { .. })));
    let timing = c.timing().unwrap();
    assert_eq!(
        (timing.groups, timing.prepare_ns, timing.decide_ns),
        (1, 3_000_000, 0)
    );
}
