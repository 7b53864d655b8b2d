//! Transactions on the composed node in the simulator: 1PC and 2PC commits, atomicity
//! under contention, and recovery when the coordinating gateway crashes.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_types::{
    ClientError, ClientRequest, KvOp, NodeId, OpOutput, RequestId, TxnMicroOp, TxnMicroResult,
    TxnReadValue,
};

use super::tests::{fast_config, run_ms, sim};

fn txn(client: u64, seq: u64, ops: Vec<TxnMicroOp>) -> ClientRequest {
    ClientRequest {
        id: RequestId { client, seq },
        op: KvOp::Txn { ops },
    }
}

fn append(key: &str, value: i64) -> TxnMicroOp {
    TxnMicroOp::Append {
        key: key.into(),
        value,
    }
}

fn read(key: &str) -> TxnMicroOp {
    TxnMicroOp::Read { key: key.into() }
}

/// The lists a committed read-only transaction saw, by key.
fn lists_read(ops: &[TxnMicroOp], results: &[TxnMicroResult]) -> BTreeMap<String, Vec<i64>> {
    ops.iter()
        .zip(results)
        .filter_map(|(op, r)| match (op, r) {
            (TxnMicroOp::Read { key }, TxnMicroResult::Read(v)) => {
                let l = match v {
                    Some(TxnReadValue::List(l)) => l.clone(),
                    _ => Vec::new(),
                };
                Some((key.clone(), l))
            }
            _ => None,
        })
        .collect()
}

const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn read_all(s: &mut super::tests::KvSim, client: u64) -> BTreeMap<String, Vec<i64>> {
    let ops: Vec<TxnMicroOp> = KEYS.iter().map(|k| read(k)).collect();
    for attempt in 0..10 {
        s.submit(NodeId(1), txn(client, attempt + 1, ops.clone()));
        let (replies, _) = run_ms(s, 1_500);
        let id = RequestId {
            client,
            seq: attempt + 1,
        };
        if let Some(Ok(OpOutput::Txn { results, .. })) = replies.get(&id).map(|r| &r.result) {
            return lists_read(&ops, results);
        }
    }
    panic!("no final read committed in 10 attempts");
}

#[test]
fn a_multi_group_transaction_commits_and_a_later_read_sees_all_its_appends() {
    let mut s = sim(3, 5, fast_config(5));
    run_ms(&mut s, 2_000);
    let layout = s.node(NodeId(1)).expect("node 1").layout();
    let groups: BTreeSet<_> = KEYS.iter().map(|k| layout.vnode_of(k)).collect();
    assert!(groups.len() > 1, "the keys must span several vnodes");
    let ops: Vec<TxnMicroOp> = KEYS.iter().map(|k| append(k, 1)).collect();
    s.submit(NodeId(2), txn(1, 1, ops));
    let (replies, _) = run_ms(&mut s, 2_000);
    let r = &replies[&RequestId { client: 1, seq: 1 }].result;
    let Ok(OpOutput::Txn { results, timing }) = r else {
        panic!("not committed: {r:?}");
    };
    assert_eq!(results.len(), KEYS.len());
    // 2PC: both phases took time (a Raft commit each), and the gateway counted the
    // groups the keys fall in.
    assert_eq!(timing.groups as usize, groups.len(), "{timing:?}");
    assert!(timing.prepare_ns > 0 && timing.decide_ns > 0, "{timing:?}");
    let seen = read_all(&mut s, 2);
    for k in KEYS {
        assert_eq!(seen[k], vec![1], "key {k}");
    }
    let started: u64 = (1..=5)
        .filter_map(|n| s.node(NodeId(n)))
        .map(|n| n.txn_counters().multi_group)
        .sum();
    assert!(started >= 1);
}

#[test]
fn a_vote_from_a_single_voter_group_waits_for_the_prepares_fsync() {
    // One node, RF 1: each group commits and applies a PREPARE in the step that appends
    // it. Its YES vote must not reach this node's coordinator before the fsync that
    // makes the PREPARE durable (a crash in between would lose the prepared locks and
    // writes of a transaction the coordinator then commits). So the prepare phase takes
    // at least one simulated fsync; it took zero when local votes skipped the sync.
    for seed in 1..=5 {
        let mut cfg = fast_config(1);
        cfg.replication_factor = 1;
        cfg.meta.voters = vec![NodeId(1)];
        let mut s = sim(seed, 1, cfg);
        run_ms(&mut s, 2_000);
        let ops: Vec<TxnMicroOp> = KEYS.iter().map(|k| append(k, 1)).collect();
        s.submit(NodeId(1), txn(1, 1, ops));
        let (replies, _) = run_ms(&mut s, 2_000);
        let r = &replies[&RequestId { client: 1, seq: 1 }].result;
        let Ok(OpOutput::Txn { timing, .. }) = r else {
            panic!("seed {seed}: not committed: {r:?}");
        };
        assert!(timing.groups > 1, "seed {seed}: {timing:?}");
        assert!(timing.prepare_ns > 0, "seed {seed}: {timing:?}");
        assert!(timing.decide_ns > 0, "seed {seed}: {timing:?}");
    }
}

#[test]
fn concurrent_conflicting_transactions_are_all_or_nothing() {
    let mut s = sim(5, 5, fast_config(5));
    run_ms(&mut s, 2_000);
    // 40 transactions from 5 gateways, each appending its number to three keys.
    // In waves of 8 a few milliseconds apart, so that some overlap and some do not.
    let mut ops_of = BTreeMap::new();
    let mut replies = BTreeMap::new();
    for t in 0..40u64 {
        let ks = [
            KEYS[t as usize % 6],
            KEYS[(t as usize + 1) % 6],
            KEYS[(t as usize + 3) % 6],
        ];
        let ops: Vec<TxnMicroOp> = ks.iter().map(|k| append(k, t as i64 + 1)).collect();
        ops_of.insert(t + 1, ks);
        s.submit(NodeId(1 + (t % 5) as u32), txn(100 + t, 1, ops));
        replies.extend(run_ms(&mut s, 40).0);
    }
    replies.extend(run_ms(&mut s, 5_000).0);
    let seen = read_all(&mut s, 999);
    let (mut ok, mut aborted) = (0, 0);
    for (t, ks) in &ops_of {
        let id = RequestId {
            client: 99 + t,
            seq: 1,
        };
        let present: Vec<bool> = ks.iter().map(|k| seen[*k].contains(&(*t as i64))).collect();
        assert!(
            present.iter().all(|p| *p) || present.iter().all(|p| !*p),
            "txn {t} half applied: {present:?} over {ks:?}"
        );
        match replies.get(&id).map(|r| &r.result) {
            Some(Ok(_)) => {
                ok += 1;
                assert!(present[0], "committed txn {t} missing");
            }
            Some(Err(ClientError::TxnAborted { .. })) => {
                aborted += 1;
                assert!(!present[0], "aborted txn {t} visible");
            }
            _ => {}
        }
    }
    assert!(ok >= 20, "{ok} transactions committed");
    // Every key's list is in one order: each element once.
    for (k, l) in &seen {
        let set: BTreeSet<_> = l.iter().collect();
        assert_eq!(set.len(), l.len(), "duplicate elements in {k}: {l:?}");
    }
    eprintln!("{ok} committed, {aborted} aborted of {}", ops_of.len());
}

/// Every prepared transaction and lock held by any replica of any vnode.
fn leftovers(s: &super::tests::KvSim) -> (usize, usize) {
    let mut prepared = 0;
    let mut locks = 0;
    for n in 1..=5 {
        let Some(node) = s.node(NodeId(n)) else {
            continue;
        };
        for v in node.hosted().collect::<Vec<_>>() {
            if let Some(p) = node.vnode_store(v).and_then(|st| st.participant()) {
                prepared += p.prepared().len();
                locks += p.locks().len();
            }
        }
    }
    (prepared, locks)
}

/// Design note wave 2 §3.3 step 5: the gateway that coordinates a multi-group
/// transaction crashes at various points of 2PC (before, during and after PREPARE and
/// the decision); the participants' resolvers ask the home and finish the transaction,
/// so no lock or prepared transaction is left, and the transaction is all-or-nothing.
#[test]
fn a_gateway_crash_mid_transaction_is_finished_by_the_resolvers() {
    let mut outcomes = BTreeSet::new();
    for (i, crash_after_ms) in [2u64, 6, 12, 20, 35, 60, 90, 130].into_iter().enumerate() {
        let mut s = sim(20 + i as u64, 5, fast_config(5));
        run_ms(&mut s, 2_000);
        let ops: Vec<TxnMicroOp> = KEYS.iter().map(|k| append(k, 7)).collect();
        s.submit(NodeId(2), txn(1, 1, ops));
        run_ms(&mut s, crash_after_ms);
        s.crash(NodeId(2));
        // resolve_after_ms (1 s) + txn_ttl_ms (3 s) + the resolve round trips.
        run_ms(&mut s, 6_000);
        s.restart(NodeId(2)).expect("restart");
        run_ms(&mut s, 2_000);
        assert_eq!(leftovers(&s), (0, 0), "crash after {crash_after_ms} ms");
        let seen = read_all(&mut s, 2);
        let present: Vec<bool> = KEYS.iter().map(|k| seen[*k] == vec![7]).collect();
        assert!(
            present.iter().all(|p| *p) || present.iter().all(|p| !*p),
            "crash after {crash_after_ms} ms: half applied {present:?} ({seen:?})"
        );
        eprintln!(
            "crash after {crash_after_ms} ms: committed = {}",
            present[0]
        );
        outcomes.insert(present[0]);
    }
    // Crashes before the decision end aborted, crashes after it committed.
    assert_eq!(outcomes.len(), 2, "only one outcome over every crash point");
}

/// A resolver asks the home leader it has cached; after a leader change that may be a
/// replica that no longer leads. Such a replica passes the question on to the leader it
/// follows (and tells the asker who leads): the question is answered now, not one
/// `resolve_after_ms` later (each lost question delayed an orphaned lock's release by
/// that much). Here the question for a transaction the home never saw reaches a home
/// follower, and the home leader records the abort that answers it.
#[test]
fn a_resolvers_question_to_a_home_follower_is_passed_on_to_the_leader() {
    use kvlab_ring::vnode_group;
    use kvlab_txn::{TxnId, TxnMsg, TxnRecord};
    for seed in 1..=5 {
        let mut s = sim(seed, 5, fast_config(5));
        run_ms(&mut s, 2_000);
        let v = s.node(NodeId(1)).expect("node 1").layout().vnode_of("a");
        let leader = (1..=5)
            .find_map(|n| s.node(NodeId(n))?.raft(v)?.leader())
            .expect("a leader");
        let follower = (1..=5)
            .map(NodeId)
            .find(|&n| n != leader && s.node(n).is_some_and(|p| p.is_member_of(v)))
            .expect("a follower");
        let asker = (1..=5)
            .map(NodeId)
            .find(|&n| n != leader && n != follower)
            .expect("a third node");
        let txn = TxnId {
            node: NodeId(9),
            boot_epoch: 1,
            seq: 1,
        };
        let home = vnode_group(v);
        let ask = TxnMsg::Resolve {
            home,
            txn,
            asker: home,
            reply_to: asker,
        };
        s.inject(asker, follower, super::KvlabMsg::Txn(ask))
            .expect("known");
        run_ms(&mut s, 200);
        let record = s
            .node(leader)
            .and_then(|p| p.vnode_store(v)?.participant()?.record(txn).cloned());
        assert_eq!(
            record,
            Some(TxnRecord::Aborted),
            "seed {seed}: leader {leader}, follower {follower}, asker {asker}"
        );
    }
}
