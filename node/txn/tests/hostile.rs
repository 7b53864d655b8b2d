//! Any sequence of entries, however senseless (decisions for unknown transactions,
//! appends to registers, PREPAREs naming other homes, duplicates, every broken variant,
//! both conflict policies, tiny bounds), is applied without a panic, and the state keeps
//! its invariants: every lock belongs to a prepared transaction that lists it, and a
//! group never remembers more than `records_max` transactions.

use std::collections::BTreeMap;

use kvlab_txn::*;
use kvlab_types::{Key, NodeId, Time};
use rand::{RngExt, SeedableRng};

type Rng = rand::rngs::ChaCha8Rng;

fn random_entry(rng: &mut Rng) -> TxnEntry {
    let txn = TxnId {
        node: NodeId(rng.random_range(0..3)),
        boot_epoch: 1,
        seq: rng.random_range(0..12),
    };
    let home = GroupId(rng.random_range(0..2));
    let ops = (0..rng.random_range(0..5))
        .map(|_| {
            let key: Key = ["a", "b", "c"][rng.random_range(0..3)].into();
            let value = rng.random_range(0..100);
            match rng.random_range(0..3) {
                0 => MicroOp::Read { key },
                1 => MicroOp::Append { key, value },
                _ => MicroOp::Write { key, value },
            }
        })
        .collect();
    match rng.random_range(0..4) {
        0 => TxnEntry::Execute1Pc { txn, ops },
        1 => TxnEntry::Prepare(Prepare {
            txn,
            home,
            ops,
            participants: vec![home],
            ttl_ms: rng.random_range(0..u64::MAX),
            proposed_at: Time(rng.random_range(0..u64::MAX)),
        }),
        2 => TxnEntry::Commit { txn, home },
        _ => TxnEntry::Abort { txn, home },
    }
}

fn check_invariants(state: &ParticipantState, cfg: &TxnConfig) -> Result<(), String> {
    let mut holders: BTreeMap<TxnId, Vec<String>> = BTreeMap::new();
    for key in ["a", "b", "c"] {
        match state.locks().get(key) {
            Some(Lock::Exclusive(t)) => holders.entry(*t).or_default().push(key.into()),
            Some(Lock::Shared(s)) => {
                if s.is_empty() {
                    return Err(format!("empty shared lock on {key}"));
                }
                for t in s {
                    holders.entry(*t).or_default().push(key.into());
                }
            }
            None => {}
        }
    }
    for (t, keys) in &holders {
        let Some(p) = state.prepared().get(t) else {
            return Err(format!("{t:?} holds {keys:?}, not prepared"));
        };
        if keys.iter().any(|k| !p.locked.contains(k)) {
            return Err(format!("{t:?} holds {keys:?} but lists {:?}", p.locked));
        }
    }
    for (t, p) in state.prepared() {
        if p.locked
            .iter()
            .any(|k| !holders.get(t).is_some_and(|h| h.contains(k)))
        {
            return Err(format!("{t:?} lists {:?} it does not hold", p.locked));
        }
    }
    // Capacity is checked before admitting; a decision may add one marker at most.
    if state.occupancy() > cfg.records_max + 1 {
        return Err(format!(
            "occupancy {} > records_max {}",
            state.occupancy(),
            cfg.records_max
        ));
    }
    Ok(())
}

#[test]
fn random_entries_never_panic_and_keep_the_lock_invariants() {
    let bugs = std::iter::once(TxnBug::None).chain(TxnBug::ALL);
    for (i, bug) in bugs.enumerate() {
        for policy in [ConflictPolicy::NoWait, ConflictPolicy::WaitDie] {
            for seed in 0..40u64 {
                let cfg = TxnConfig {
                    bug,
                    conflict: policy,
                    lock_wait_queue_max: 2,
                    records_max: 1 + (seed as usize % 20),
                    max_keys_per_txn: 2,
                    ..TxnConfig::default()
                };
                let mut rng = Rng::seed_from_u64(seed * 31 + i as u64);
                let mut state = ParticipantState::new(GroupId(0));
                let mut store: BTreeMap<Key, TxnValue> = BTreeMap::new();
                for n in 0..300 {
                    let e = random_entry(&mut rng);
                    state.apply(&cfg, &mut store, &e);
                    // Invariants hold for the protocol; `release-before-decision` breaks
                    // "prepared holds its locks" on purpose, so it is checked for panics only.
                    if bug != TxnBug::ReleaseBeforeDecision {
                        if let Err(why) = check_invariants(&state, &cfg) {
                            panic!(
                                "bug {} {policy:?} seed {seed} entry {n} {e:?}: {why}",
                                bug.name()
                            );
                        }
                    }
                }
            }
        }
    }
}
