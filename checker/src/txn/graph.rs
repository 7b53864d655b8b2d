//! The dependency graph: edges packed in one `u64` each while they are collected, then a
//! compressed adjacency (CSR) whose edges carry a bit set of kinds; process and real-time
//! edges; Tarjan's strongly connected components (iterative, so a long chain cannot
//! overflow the stack).

use std::collections::HashMap;

use super::budget::{Budget, Stop};
use super::history::{TxnHistory, TxnId, TxnStatus};

/// Write-write: the target installed the next version of a key after the source's.
pub const WW: u8 = 1;
/// Write-read: the target read a version the source wrote.
pub const WR: u8 = 2;
/// Read-write (anti-dependency): the source read a version the target overwrote.
pub const RW: u8 = 4;
/// Process order: the same process ran the source, then the target.
pub const PROCESS: u8 = 8;
/// Real-time order: the source completed before the target was invoked.
pub const REALTIME: u8 = 16;
/// The data edges.
pub const DATA: u8 = WW | WR | RW;

/// The name of one edge kind bit.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        PROCESS => "process",
        REALTIME => "realtime",
        _ => "?",
    }
}

/// The most transactions a graph may have: ids and kinds share one `u64` per edge.
pub const MAX_GRAPH_TXNS: usize = 1 << 28;

/// Edges as they are found: `from << 36 | to << 8 | kind`, duplicates allowed.
#[derive(Debug, Default)]
pub struct EdgeList {
    packed: Vec<u64>,
}

impl EdgeList {
    /// Adds an edge (a self-edge is dropped: Elle's graphs have none).
    pub fn add(&mut self, from: TxnId, to: TxnId, kind: u8) {
        if from != to {
            self.packed
                .push((u64::from(from) << 36) | (u64::from(to) << 8) | u64::from(kind));
        }
    }

    /// Edges collected so far (duplicates included).
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// Whether no edge was added.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }
}

/// A graph in compressed adjacency form: the out-edges of `v` are
/// `targets[offsets[v]..offsets[v + 1]]`, each with its kinds in `kinds`.
#[derive(Debug)]
pub struct Graph {
    offsets: Vec<u32>,
    targets: Vec<TxnId>,
    kinds: Vec<u8>,
}

impl Graph {
    /// Sorts and merges `edges` (one edge per pair, its kinds or-ed) over `n` nodes.
    pub fn build(n: usize, mut edges: EdgeList) -> Graph {
        assert!(
            n < MAX_GRAPH_TXNS,
            "{n} transactions; at most {MAX_GRAPH_TXNS}"
        );
        edges.packed.sort_unstable();
        let mut offsets = vec![0u32; n + 1];
        let mut targets: Vec<TxnId> = Vec::with_capacity(edges.packed.len());
        let mut kinds: Vec<u8> = Vec::with_capacity(edges.packed.len());
        let mut last: Option<(u32, u32)> = None;
        for e in edges.packed {
            let (from, to, kind) = ((e >> 36) as u32, ((e >> 8) & 0x0FFF_FFFF) as u32, e as u8);
            if last == Some((from, to)) {
                if let Some(k) = kinds.last_mut() {
                    *k |= kind;
                }
                continue;
            }
            last = Some((from, to));
            offsets[from as usize + 1] += 1;
            targets.push(to);
            kinds.push(kind);
        }
        for v in 0..n {
            offsets[v + 1] += offsets[v];
        }
        Graph {
            offsets,
            targets,
            kinds,
        }
    }

    /// The number of nodes.
    pub fn nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The number of edges (pairs; an edge may have several kinds).
    pub fn edges(&self) -> usize {
        self.targets.len()
    }

    /// The out-edges of `v` with their kinds.
    pub fn out(&self, v: TxnId) -> impl Iterator<Item = (TxnId, u8)> + '_ {
        let (a, b) = (
            self.offsets[v as usize] as usize,
            self.offsets[v as usize + 1] as usize,
        );
        self.targets[a..b]
            .iter()
            .copied()
            .zip(self.kinds[a..b].iter().copied())
    }

    /// The kinds of the edge `from → to` (0 if there is none).
    pub fn kinds_between(&self, from: TxnId, to: TxnId) -> u8 {
        let (a, b) = (
            self.offsets[from as usize] as usize,
            self.offsets[from as usize + 1] as usize,
        );
        match self.targets[a..b].binary_search(&to) {
            Ok(i) => self.kinds[a + i],
            Err(_) => 0,
        }
    }

    /// Counts of edges by kind (an edge with two kinds counts for both).
    pub fn count_kinds(&self) -> [usize; 5] {
        let mut counts = [0usize; 5];
        for k in &self.kinds {
            for (i, c) in counts.iter_mut().enumerate() {
                if k & (1 << i) != 0 {
                    *c += 1;
                }
            }
        }
        counts
    }
}

/// Adds process edges: each transaction that did not fail → the next one of its process
/// that did not fail.
pub fn add_process_edges(history: &TxnHistory, edges: &mut EdgeList) {
    let mut last: HashMap<u64, TxnId> = HashMap::new();
    for (id, txn) in history.txns.iter().enumerate() {
        if txn.status == TxnStatus::Fail {
            continue;
        }
        let id = id as TxnId;
        if let Some(prev) = last.insert(txn.process, id) {
            edges.add(prev, id, PROCESS);
        }
    }
}

/// Adds real-time edges: T1 → T2 when T1 completed `ok` before T2 was invoked, as a
/// transitive reduction. A frontier holds the completed transactions no later completed
/// transaction is known to follow; an invoke gets an edge from each, and a completion
/// replaces the frontier members its transaction follows. So edges number about
/// transactions × concurrency, not transactions².
pub fn add_realtime_edges(
    history: &TxnHistory,
    edges: &mut EdgeList,
    budget: &mut Budget,
) -> Result<(), Stop> {
    let mut frontier: Vec<TxnId> = Vec::new();
    // The frontier each open transaction saw at its invoke.
    let mut seen: HashMap<TxnId, Vec<TxnId>> = HashMap::new();
    for &event in &history.order {
        budget.tick()?;
        let id = event / 2;
        let txn = &history.txns[id as usize];
        if txn.status == TxnStatus::Fail {
            continue;
        }
        if event % 2 == 0 {
            for &p in &frontier {
                edges.add(p, id, REALTIME);
            }
            if txn.status == TxnStatus::Ok {
                seen.insert(id, frontier.clone());
            }
        } else if txn.status == TxnStatus::Ok {
            let preds = seen.remove(&id).unwrap_or_default();
            frontier.retain(|f| !preds.contains(f));
            frontier.push(id);
        }
    }
    Ok(())
}

/// The strongly connected components of the subgraph of edges with a kind in `mask`,
/// as lists of nodes; components of one node are left out (the graph has no
/// self-edges, so they hold no cycle).
pub fn strongly_connected(
    graph: &Graph,
    mask: u8,
    budget: &mut Budget,
) -> Result<Vec<Vec<TxnId>>, Stop> {
    const UNSEEN: u32 = u32::MAX;
    let n = graph.nodes();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<TxnId> = Vec::new();
    // The DFS: (node, position in its out-edges).
    let mut calls: Vec<(TxnId, u32)> = Vec::new();
    let mut next_index = 0u32;
    let mut components = Vec::new();
    for root in 0..n as TxnId {
        if index[root as usize] != UNSEEN {
            continue;
        }
        calls.push((root, graph.offsets[root as usize]));
        index[root as usize] = next_index;
        low[root as usize] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root as usize] = true;
        while let Some(&(v, start)) = calls.last() {
            budget.tick()?;
            let end = graph.offsets[v as usize + 1];
            let mut pos = start;
            let mut child = None;
            while pos < end {
                let (w, kind) = (graph.targets[pos as usize], graph.kinds[pos as usize]);
                pos += 1;
                if kind & mask == 0 {
                    continue;
                }
                if index[w as usize] == UNSEEN {
                    child = Some(w);
                    break;
                } else if on_stack[w as usize] {
                    low[v as usize] = low[v as usize].min(index[w as usize]);
                }
            }
            if let Some(top) = calls.last_mut() {
                top.1 = pos;
            }
            if let Some(w) = child {
                index[w as usize] = next_index;
                low[w as usize] = next_index;
                next_index += 1;
                stack.push(w);
                on_stack[w as usize] = true;
                calls.push((w, graph.offsets[w as usize]));
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent as usize] = low[parent as usize].min(low[v as usize]);
            }
            if low[v as usize] == index[v as usize] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w as usize] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort_unstable();
                    components.push(component);
                }
            }
        }
    }
    Ok(components)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scc(n: usize, edges: &[(u32, u32, u8)], mask: u8) -> Vec<Vec<u32>> {
        let mut list = EdgeList::default();
        for &(a, b, k) in edges {
            list.add(a, b, k);
        }
        let g = Graph::build(n, list);
        let mut budget = Budget::unlimited();
        let mut c = strongly_connected(&g, mask, &mut budget).expect("no budget");
        c.sort();
        c
    }

    #[test]
    fn tarjan_finds_components_under_a_mask() {
        let edges = [
            (0, 1, WW),
            (1, 2, WR),
            (2, 0, RW),
            (3, 4, WW),
            (4, 3, PROCESS),
        ];
        assert_eq!(scc(5, &edges, DATA), vec![vec![0, 1, 2]]);
        assert_eq!(scc(5, &edges, WW | WR), Vec::<Vec<u32>>::new());
        assert_eq!(
            scc(5, &edges, DATA | PROCESS),
            vec![vec![0, 1, 2], vec![3, 4]]
        );
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 200_000u32;
        let mut edges: Vec<(u32, u32, u8)> = (0..n - 1).map(|i| (i, i + 1, WW)).collect();
        edges.push((n - 1, 0, WW));
        assert_eq!(scc(n as usize, &edges, WW)[0].len(), n as usize);
    }

    /// A random history of `n` transactions over `procs` processes: each step invokes
    /// or completes (ok, sometimes fail or info) one process's transaction.
    fn random_history(seed: u64, n: usize, procs: u64) -> TxnHistory {
        use super::super::history::{Txn, Workload};
        let mut x = seed | 1;
        let mut rand = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let (mut txns, mut order) = (Vec::<Txn>::new(), Vec::new());
        let mut open: Vec<Option<u32>> = vec![None; procs as usize];
        let mut next_process = procs;
        let mut pids: Vec<u64> = (0..procs).collect();
        while txns.len() < n || open.iter().any(Option::is_some) {
            let p = rand(procs) as usize;
            match open[p].take() {
                None if txns.len() < n => {
                    order.push(txns.len() as u32 * 2);
                    open[p] = Some(txns.len() as u32);
                    txns.push(Txn {
                        process: pids[p],
                        status: TxnStatus::Info,
                        invoke_index: order.len() as u64,
                        complete_index: None,
                        line: 0,
                        mops: Vec::new(),
                    });
                }
                None => {}
                Some(id) => {
                    let t = &mut txns[id as usize];
                    t.status = match rand(10) {
                        0 => TxnStatus::Fail,
                        1 => TxnStatus::Info,
                        _ => TxnStatus::Ok,
                    };
                    if t.status == TxnStatus::Info {
                        pids[p] = next_process;
                        next_process += 1;
                    }
                    order.push(id * 2 + 1);
                }
            }
        }
        TxnHistory {
            txns,
            keys: Vec::new(),
            workload: Workload::ListAppend,
            order,
        }
    }

    #[test]
    fn realtime_edges_reach_exactly_the_real_time_order() {
        for seed in 0..200u64 {
            let h = random_history(seed * 7919 + 1, 40, 1 + seed % 6);
            let mut list = EdgeList::default();
            add_realtime_edges(&h, &mut list, &mut Budget::unlimited()).expect("no budget");
            let edges = list.len();
            let g = Graph::build(h.txns.len(), list);
            let pos = |e: u32| h.order.iter().position(|&x| x == e).expect("in order");
            let n = h.txns.len() as u32;
            for i in 0..n {
                // Reachable from i over real-time edges.
                let mut seen = vec![false; n as usize];
                let mut stack = vec![i];
                while let Some(v) = stack.pop() {
                    for (w, _) in g.out(v) {
                        if !seen[w as usize] {
                            seen[w as usize] = true;
                            stack.push(w);
                        }
                    }
                }
                for j in 0..n {
                    let (a, b) = (&h.txns[i as usize], &h.txns[j as usize]);
                    let before = a.status == TxnStatus::Ok
                        && b.status != TxnStatus::Fail
                        && pos(i * 2 + 1) < pos(j * 2);
                    assert_eq!(seen[j as usize], before, "seed {seed}: {i} → {j}");
                }
            }
            assert!(edges <= h.txns.len() * 8, "seed {seed}: {edges} edges");
        }
    }

    #[test]
    fn parallel_edges_merge_their_kinds() {
        let mut list = EdgeList::default();
        list.add(0, 1, WW);
        list.add(0, 1, RW);
        list.add(1, 1, WW);
        let g = Graph::build(2, list);
        assert_eq!(g.kinds_between(0, 1), WW | RW);
        assert_eq!(g.edges(), 1);
    }
}
