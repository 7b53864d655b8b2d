//! `balanced`: the fewest moves from the current placement to one where every active
//! node holds ⌊T/N⌋ or ⌈T/N⌉ replicas (T = replicas not pinned on frozen nodes).
//!
//! 1. Keep the current voters on eligible nodes; drop the rest (Down, Draining,
//!    Removed). A vnode with more than RF voters drops its most loaded active ones.
//! 2. Fill: each vnode short of RF takes the least loaded active node it lacks.
//! 3. Balance: while the most loaded active node holds at least two more than the least
//!    loaded one, move one of its replicas (of a vnode the other lacks) to it.
//!
//! Why this is minimal: every move of step 3 either takes from a node above ⌈T/N⌉ or
//! gives to a node below ⌊T/N⌋ (the max/min pair is chosen), and it does both whenever
//! both exist, so the number of moves equals the larger of the total excess and the total
//! deficit — a lower bound for any plan. Step 2 creates only the replicas that were lost.
//!
//! Among the vnodes that could move, the one whose other voters share the fewest vnodes
//! with the receiver is chosen (then the lowest id): it spreads each node's peers, which
//! lowers [`crate::balance::pairs_unavailable_fraction`] without costing a move.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_types::NodeId;

use super::{StrategyError, StrategyInput};
use crate::hash::VnodeId;
use crate::placement::{Placement, ReplicaSet};

/// How many vnodes each unordered node pair shares.
#[derive(Default)]
struct PairCounts(BTreeMap<(NodeId, NodeId), u32>);

impl PairCounts {
    fn key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
        if a < b { (a, b) } else { (b, a) }
    }
    fn get(&self, a: NodeId, b: NodeId) -> u32 {
        self.0.get(&Self::key(a, b)).copied().unwrap_or(0)
    }
    fn add(&mut self, n: NodeId, others: &BTreeSet<NodeId>) {
        for o in others.iter().filter(|o| **o != n) {
            *self.0.entry(Self::key(n, *o)).or_insert(0) += 1;
        }
    }
    fn remove(&mut self, n: NodeId, others: &BTreeSet<NodeId>) {
        for o in others.iter().filter(|o| **o != n) {
            if let Some(c) = self.0.get_mut(&Self::key(n, *o)) {
                *c = c.saturating_sub(1);
            }
        }
    }
    /// How much `n` would overlap with the members of `set` other than `except`.
    fn overlap(&self, n: NodeId, set: &BTreeSet<NodeId>, except: Option<NodeId>) -> u32 {
        set.iter()
            .filter(|m| Some(**m) != except && **m != n)
            .map(|m| self.get(n, *m))
            .sum()
    }
}

pub(super) fn place(input: &StrategyInput<'_>) -> Result<Placement, StrategyError> {
    let rf = input.replication_factor;
    let active = input.active();
    let mut count: BTreeMap<NodeId, usize> = active.iter().map(|n| (*n, 0)).collect();
    let mut sets: BTreeMap<VnodeId, BTreeSet<NodeId>> = BTreeMap::new();

    // 1. Keep what may stay.
    for v in input.layout.vnodes() {
        let mut keep = input.frozen_kept(v);
        if let Some(cur) = input.current.get(v) {
            keep.extend(cur.voters.iter().filter(|n| active.contains(n)).copied());
        }
        for n in &keep {
            if let Some(c) = count.get_mut(n) {
                *c += 1;
            }
        }
        sets.insert(v, keep);
    }
    // Too many voters (an unfinished or broken change): drop the most loaded active ones.
    for set in sets.values_mut() {
        while set.len() > rf {
            let Some(drop) = set
                .iter()
                .filter(|n| active.contains(n))
                .max_by_key(|n| (count[*n], **n))
                .copied()
            else {
                break; // only frozen voters left: frozen_kept already capped them at RF
            };
            set.remove(&drop);
            if let Some(c) = count.get_mut(&drop) {
                *c -= 1;
            }
        }
    }

    let mut pairs = PairCounts::default();
    for set in sets.values() {
        let members: Vec<NodeId> = set.iter().copied().collect();
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                *pairs.0.entry(PairCounts::key(*a, *b)).or_insert(0) += 1;
            }
        }
    }

    // 2. Fill vnodes short of RF with the least loaded active nodes.
    for (v, set) in sets.iter_mut() {
        while set.len() < rf {
            let pick = active
                .iter()
                .filter(|n| !set.contains(n))
                .min_by_key(|n| (count[*n], pairs.overlap(**n, set, None), **n))
                .copied();
            let Some(n) = pick else {
                return Err(StrategyError::NotEnoughNodes {
                    vnode: *v,
                    needed: rf - set.len(),
                    available: active.iter().filter(|n| !set.contains(n)).count(),
                });
            };
            pairs.add(n, set);
            set.insert(n);
            *count.get_mut(&n).expect("active nodes are counted") += 1;
        }
    }

    // 3. Balance: most loaded gives to least loaded until they differ by at most one.
    loop {
        let Some((&max_n, &max_c)) = count.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
        else {
            break;
        };
        let Some((&min_n, &min_c)) = count.iter().min_by_key(|(n, c)| (**c, **n)) else {
            break;
        };
        if max_c <= min_c + 1 {
            break;
        }
        // max_c ≥ min_c + 2 vnodes hold max_n, at most min_c of them hold min_n: one exists.
        let v = sets
            .iter()
            .filter(|(_, s)| s.contains(&max_n) && !s.contains(&min_n))
            .min_by_key(|(v, s)| (pairs.overlap(min_n, s, Some(max_n)), **v))
            .map(|(v, _)| *v)
            .expect("a vnode of the most loaded node lacks the least loaded one");
        let set = sets.get_mut(&v).expect("vnode exists");
        set.remove(&max_n);
        pairs.remove(max_n, set);
        pairs.add(min_n, set);
        set.insert(min_n);
        *count.get_mut(&max_n).expect("counted") -= 1;
        *count.get_mut(&min_n).expect("counted") += 1;
    }

    let mut target = Placement::new(input.layout);
    for (v, voters) in sets {
        let set = ReplicaSet {
            voters,
            conf_epoch: input.epoch(v),
            ..ReplicaSet::default()
        };
        target.insert(v, set)?;
    }
    Ok(target)
}
