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
//! Among the vnodes that could move (and the nodes that could fill), the one whose other
//! voters share the *fewest* vnodes with the receiver is chosen (then the lowest id).
//! Spreading each node's peers keeps later moves minimal: when a node fails, the vnodes
//! that lost it contain many different peers, so the least loaded nodes can take them
//! without a second round of balancing moves (with peers concentrated instead, a 5-node
//! P = 64 loss needed 6 extra moves), and the re-created replicas stream from many
//! sources. The price is the copyset trade-off: more distinct node pairs share a vnode,
//! so [`crate::balance::pairs_unavailable_fraction`] is high (1.0 for 5 nodes, where
//! every pair shares a vnode anyway; 1.0 rather than 0.75 after a 5→8 join at P = 64).
//! A `copyset` strategy (wave 2, later) is the place to optimise that instead.
//!
//! Cost: O(P·RF·N) to fill and O(P·RF/N · RF) per balancing move, with nodes indexed
//! densely (a 1,024-vnode ring is planned every scheduler tick).

use std::collections::{BTreeMap, BTreeSet};

use kvlab_types::NodeId;

use super::{StrategyError, StrategyInput};
use crate::hash::VnodeId;
use crate::placement::{Placement, ReplicaSet};

/// Dense working state: nodes by index (index order = id order).
struct Work {
    ids: Vec<NodeId>,
    active: Vec<bool>,
    count: Vec<usize>,
    /// Vnodes each node is a voter of.
    holds: Vec<BTreeSet<u32>>,
    /// Voters per vnode, as node indices.
    sets: Vec<Vec<usize>>,
    /// Vnodes shared by each node pair, `n × n`.
    pairs: Vec<u32>,
}

impl Work {
    fn n(&self) -> usize {
        self.ids.len()
    }

    fn overlap(&self, x: usize, v: usize, except: Option<usize>) -> u32 {
        self.sets[v]
            .iter()
            .filter(|m| Some(**m) != except && **m != x)
            .map(|m| self.pairs[x * self.n() + m])
            .sum()
    }

    fn add(&mut self, x: usize, v: usize) {
        let n = self.n();
        for &m in &self.sets[v] {
            self.pairs[x * n + m] += 1;
            self.pairs[m * n + x] += 1;
        }
        self.sets[v].push(x);
        self.holds[x].insert(v as u32);
        self.count[x] += 1;
    }

    fn remove(&mut self, x: usize, v: usize) {
        let n = self.n();
        self.sets[v].retain(|m| *m != x);
        for &m in &self.sets[v] {
            self.pairs[x * n + m] = self.pairs[x * n + m].saturating_sub(1);
            self.pairs[m * n + x] = self.pairs[m * n + x].saturating_sub(1);
        }
        self.holds[x].remove(&(v as u32));
        self.count[x] -= 1;
    }
}

pub(super) fn place(input: &StrategyInput<'_>) -> Result<Placement, StrategyError> {
    let rf = input.replication_factor;
    let active_set = input.active();
    let p = input.layout.vnode_count() as usize;

    // What may stay, per vnode: frozen voters (capped at RF) and active voters.
    let mut keep: Vec<BTreeSet<NodeId>> = Vec::with_capacity(p);
    for v in input.layout.vnodes() {
        let mut k = input.frozen_kept(v);
        if let Some(cur) = input.current.get(v) {
            k.extend(
                cur.voters
                    .iter()
                    .filter(|n| active_set.contains(n))
                    .copied(),
            );
        }
        keep.push(k);
    }
    let ids: Vec<NodeId> = active_set
        .iter()
        .copied()
        .chain(keep.iter().flatten().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<NodeId, usize> = ids.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let n = ids.len();
    let mut w = Work {
        active: ids.iter().map(|x| active_set.contains(x)).collect(),
        ids,
        count: vec![0; n],
        holds: vec![BTreeSet::new(); n],
        sets: vec![Vec::new(); p],
        pairs: vec![0; n * n],
    };

    // 1. Keep what may stay; too many voters (an unfinished or broken change) drops the
    //    most loaded active ones.
    for (v, k) in keep.iter().enumerate() {
        for x in k {
            w.add(index[x], v);
        }
    }
    for v in 0..p {
        while w.sets[v].len() > rf {
            let Some(drop) = w.sets[v]
                .iter()
                .copied()
                .filter(|x| w.active[*x])
                .max_by_key(|x| (w.count[*x], *x))
            else {
                break; // only frozen voters left: frozen_kept already capped them at RF
            };
            w.remove(drop, v);
        }
    }

    // 2. Fill vnodes short of RF with the least loaded active nodes.
    for v in 0..p {
        while w.sets[v].len() < rf {
            let pick = (0..n)
                .filter(|x| w.active[*x] && !w.sets[v].contains(x))
                .min_by_key(|x| (w.count[*x], w.overlap(*x, v, None), *x));
            let Some(x) = pick else {
                return Err(StrategyError::NotEnoughNodes {
                    vnode: VnodeId(v as u32),
                    needed: rf - w.sets[v].len(),
                    available: 0,
                });
            };
            w.add(x, v);
        }
    }

    // 3. Balance: the most loaded gives to the least loaded until they differ by ≤ 1.
    let active_ix: Vec<usize> = (0..n).filter(|x| w.active[*x]).collect();
    let extremes = |w: &Work| {
        let max = active_ix
            .iter()
            .copied()
            .max_by_key(|x| (w.count[*x], std::cmp::Reverse(*x)))?;
        let min = active_ix
            .iter()
            .copied()
            .min_by_key(|x| (w.count[*x], *x))?;
        (w.count[max] > w.count[min] + 1).then_some((max, min))
    };
    while let Some((max, min)) = extremes(&w) {
        // count[max] ≥ count[min] + 2 vnodes hold max, at most count[min] of them hold
        // min: one lacks min.
        let v = w.holds[max]
            .iter()
            .map(|v| *v as usize)
            .filter(|v| !w.sets[*v].contains(&min))
            .min_by_key(|v| (w.overlap(min, *v, Some(max)), *v))
            .expect("a vnode of the most loaded node lacks the least loaded one");
        w.remove(max, v);
        w.add(min, v);
    }

    let mut target = Placement::new(input.layout);
    for (v, set) in w.sets.iter().enumerate() {
        let vnode = VnodeId(v as u32);
        let replicas = ReplicaSet {
            voters: set.iter().map(|x| w.ids[*x]).collect(),
            conf_epoch: input.epoch(vnode),
            ..ReplicaSet::default()
        };
        target.insert(vnode, replicas)?;
    }
    Ok(target)
}
