//! Cycle search inside each strongly connected component: for each anomaly class, the
//! shortest cycle of its shape, found breadth-first over (transaction, automaton state)
//! from each edge of the kind that anchors the class (an rw edge for G-single,
//! G-nonadjacent and G2-item; a wr edge for G1c; a ww edge for G0). Each edge may carry
//! several kinds; the search tries each allowed one.
//!
//! A class is searched from every anchor edge of the component until one cycle is found
//! (so a class that is there is never missed), then from at most
//! [`MAX_ANCHORS_AFTER_FOUND`] more anchors for a shorter one. The budget bounds it all.

use std::collections::VecDeque;

use super::budget::{Budget, Stop};
use super::graph::{Graph, PROCESS, REALTIME, RW, WR, WW, strongly_connected};
use super::history::TxnId;
use super::list_append::FxMap;
use super::model::AnomalyKind;

/// Anchors tried for a shorter cycle after the first cycle of a class is found.
pub const MAX_ANCHORS_AFTER_FOUND: usize = 32;

/// A cycle: edge `i` goes from `nodes[i]` to `nodes[(i + 1) % len]` as `kinds[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub nodes: Vec<TxnId>,
    pub kinds: Vec<u8>,
}

/// The data-edge rule of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// ww only.
    G0,
    /// ww and wr, at least one wr.
    G1c,
    /// exactly one rw.
    Single,
    /// at least two rw, no two adjacent.
    Nonadjacent,
    /// at least one rw.
    G2,
}

/// A class to search for: its rule, and which order edges it may (and must) use.
#[derive(Clone, Copy, Debug)]
struct Shape {
    rule: Rule,
    /// `0` (data only), `PROCESS`, or `REALTIME` (which allows process edges too).
    extra: u8,
}

impl Shape {
    fn anchor(self) -> u8 {
        match self.rule {
            Rule::G0 => WW,
            Rule::G1c => WR,
            _ => RW,
        }
    }

    fn allowed(self) -> u8 {
        let data = match self.rule {
            Rule::G0 => WW,
            Rule::G1c => WW | WR,
            _ => WW | WR | RW,
        };
        match self.extra {
            PROCESS => data | PROCESS,
            REALTIME => data | PROCESS | REALTIME,
            _ => data,
        }
    }

    fn kind(self) -> AnomalyKind {
        use AnomalyKind as A;
        match (self.rule, self.extra) {
            (Rule::G0, 0) => A::G0,
            (Rule::G1c, 0) => A::G1c,
            (Rule::Single, 0) => A::GSingle,
            (Rule::Nonadjacent, 0) => A::GNonadjacent,
            (Rule::G2, 0) => A::G2Item,
            (Rule::G0, PROCESS) => A::G0Process,
            (Rule::G1c, PROCESS) => A::G1cProcess,
            (Rule::Single, PROCESS) => A::GSingleProcess,
            (Rule::Nonadjacent, PROCESS) => A::GNonadjacentProcess,
            (Rule::G2, PROCESS) => A::G2ItemProcess,
            (Rule::G0, _) => A::G0Realtime,
            (Rule::G1c, _) => A::G1cRealtime,
            (Rule::Single, _) => A::GSingleRealtime,
            (Rule::Nonadjacent, _) => A::GNonadjacentRealtime,
            (Rule::G2, _) => A::G2ItemRealtime,
        }
    }

    /// The state after taking an edge of `kind` in `state`, if the class allows it.
    /// State bits: 0-1 rw count (capped at 2), 2 the last edge was rw, 3 a wr was
    /// seen, 4 an edge of the `extra` kind was seen.
    fn step(self, state: u8, kind: u8) -> Option<u8> {
        if kind & self.allowed() == 0 {
            return None;
        }
        let mut rw = state & 3;
        let last_rw = state & 4 != 0;
        let mut s = state & !4;
        if kind == RW {
            match self.rule {
                Rule::Single if rw >= 1 => return None,
                Rule::Nonadjacent if last_rw => return None,
                _ => {}
            }
            rw = (rw + 1).min(2);
            s = (s & !3) | rw | 4;
        }
        if kind == WR {
            s |= 8;
        }
        if self.extra != 0 && kind == self.extra {
            s |= 16;
        }
        Some(s)
    }

    /// Whether a cycle that ends in `state` (its first edge the anchor) is of the class.
    fn accepts(self, state: u8) -> bool {
        let (rw, last_rw, wr, extra) = (state & 3, state & 4 != 0, state & 8 != 0, state & 16 != 0);
        let data = match self.rule {
            Rule::G0 => true,
            Rule::G1c => wr,
            Rule::Single => rw == 1,
            Rule::Nonadjacent => rw >= 2 && !last_rw,
            Rule::G2 => rw >= 1,
        };
        data && (self.extra == 0 || extra)
    }
}

/// The strongly connected components of the graph under each edge mask a class
/// allows, computed once per mask when first needed: a cycle of a class lies within one
/// component of its allowed edges, so its anchors and its search stay there.
#[derive(Debug)]
pub(crate) struct Memberships<'g> {
    graph: &'g Graph,
    by_mask: Vec<(u8, Vec<u32>)>,
}

impl<'g> Memberships<'g> {
    pub(crate) fn new(graph: &'g Graph) -> Self {
        Memberships {
            graph,
            by_mask: Vec::new(),
        }
    }

    /// Per node, its component under `mask` (`u32::MAX`: none, or one of one node).
    fn get(&mut self, mask: u8, budget: &mut Budget) -> Result<&[u32], Stop> {
        let i = match self.by_mask.iter().position(|(m, _)| *m == mask) {
            Some(i) => i,
            None => {
                let mut member = vec![u32::MAX; self.graph.nodes()];
                for (c, nodes) in strongly_connected(self.graph, mask, budget)?
                    .iter()
                    .enumerate()
                {
                    for &v in nodes {
                        member[v as usize] = c as u32;
                    }
                }
                self.by_mask.push((mask, member));
                self.by_mask.len() - 1
            }
        };
        Ok(&self.by_mask[i].1)
    }
}

/// What the search of one component found.
#[derive(Debug, Default)]
pub(crate) struct ComponentFindings {
    /// Each class found, with its shortest cycle found.
    pub found: Vec<(AnomalyKind, Cycle)>,
    /// Classes whose search was cut at its work limit before finding one.
    pub cut: Vec<AnomalyKind>,
}

/// Searches one component (`nodes`, under the model's edge `mask`) for the classes the
/// model needs, most specific first.
pub(crate) fn search_component(
    graph: &Graph,
    nodes: &[TxnId],
    memberships: &mut Memberships<'_>,
    mask: u8,
    work: WorkLimit,
    budget: &mut Budget,
) -> Result<ComponentFindings, Stop> {
    let mut out = ComponentFindings::default();
    let edges: usize = nodes.iter().map(|&v| graph.out(v).count()).sum();
    let work_limit = work.min.max(work.per_edge.saturating_mul(edges));
    let levels: &[u8] = if mask & (PROCESS | REALTIME) != 0 {
        &[0, PROCESS, REALTIME]
    } else {
        &[0]
    };
    let rules: &[Rule] = if mask & RW != 0 {
        &[
            Rule::G0,
            Rule::G1c,
            Rule::Single,
            Rule::Nonadjacent,
            Rule::G2,
        ]
    } else {
        &[Rule::G0, Rule::G1c]
    };
    for &extra in levels {
        let mut rw_found = false;
        for &rule in rules {
            if rw_found && matches!(rule, Rule::Nonadjacent | Rule::G2) {
                continue;
            }
            let shape = Shape { rule, extra };
            let member = memberships.get(shape.allowed(), budget)?;
            let search = Search {
                graph,
                member,
                work_left: work_limit,
            };
            match search.shortest(shape, nodes, budget)? {
                Outcome::Found(cycle) => {
                    rw_found |= matches!(rule, Rule::Single | Rule::Nonadjacent);
                    out.found.push((shape.kind(), cycle));
                }
                Outcome::Cut => out.cut.push(shape.kind()),
                Outcome::None => {}
            }
        }
        // A variant is searched only where no simpler cycle explains the component.
        if !out.found.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// How many edge visits one class's search may spend in a component: `per_edge` times
/// its edges, at least `min`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkLimit {
    pub min: usize,
    pub per_edge: usize,
}

impl Default for WorkLimit {
    fn default() -> Self {
        WorkLimit {
            min: MIN_CYCLE_WORK,
            per_edge: CYCLE_WORK_PER_EDGE,
        }
    }
}

/// Edge visits one class's search may spend in a component, at least.
pub const MIN_CYCLE_WORK: usize = 1 << 22;

/// Edge visits one class's search may spend per edge of the component, beyond
/// [`MIN_CYCLE_WORK`]; a search cut there makes a forbidden class's absence unknown.
pub const CYCLE_WORK_PER_EDGE: usize = 16;

enum Outcome {
    Found(Cycle),
    Cut,
    None,
}

struct Search<'a> {
    graph: &'a Graph,
    /// Components under the class's allowed edges.
    member: &'a [u32],
    work_left: usize,
}

impl Search<'_> {
    /// The shortest cycle of `shape` through the anchors tried (see the module docs).
    fn shortest(
        mut self,
        shape: Shape,
        nodes: &[TxnId],
        budget: &mut Budget,
    ) -> Result<Outcome, Stop> {
        let mut best: Option<Cycle> = None;
        let mut tried_after = 0usize;
        for &a in nodes {
            let comp = self.member[a as usize];
            if comp == u32::MAX {
                continue;
            }
            for (b, kinds) in self.graph.out(a) {
                if kinds & shape.anchor() == 0 || self.member[b as usize] != comp {
                    continue;
                }
                budget.tick()?;
                let Some(s0) = shape.step(0, shape.anchor()) else {
                    continue;
                };
                let limit = best.as_ref().map_or(usize::MAX, |c| c.nodes.len() - 1);
                match self.bfs(shape, (a, b, comp), s0, limit, budget)? {
                    Some(Some(c)) => best = Some(c),
                    Some(None) => {}
                    None => return Ok(best.map_or(Outcome::Cut, Outcome::Found)),
                }
                if let Some(c) = best.take() {
                    tried_after += 1;
                    if c.nodes.len() == 2 || tried_after > MAX_ANCHORS_AFTER_FOUND {
                        return Ok(Outcome::Found(c));
                    }
                    best = Some(c);
                }
            }
        }
        Ok(best.map_or(Outcome::None, Outcome::Found))
    }

    /// Breadth-first from `b` (entered from `a` by the anchor edge, in state `s0`) back
    /// to `a` in an accepting state, with fewer than `limit` edges after the anchor,
    /// within component `comp`; `None` when the work limit ran out.
    fn bfs(
        &mut self,
        shape: Shape,
        (a, b, comp): (TxnId, TxnId, u32),
        s0: u8,
        limit: usize,
        budget: &mut Budget,
    ) -> Result<Option<Option<Cycle>>, Stop> {
        // (node, state) → (previous node, previous state, kind of the edge taken).
        let mut parent: FxMap<(TxnId, u8), (TxnId, u8, u8)> = FxMap::default();
        let mut queue: VecDeque<(TxnId, u8, usize)> = VecDeque::new();
        parent.insert((b, s0), (a, 0, shape.anchor()));
        queue.push_back((b, s0, 0));
        while let Some((v, s, depth)) = queue.pop_front() {
            if depth + 1 >= limit {
                break;
            }
            for (w, kinds) in self.graph.out(v) {
                budget.tick()?;
                if self.work_left == 0 {
                    return Ok(None);
                }
                self.work_left -= 1;
                if self.member[w as usize] != comp {
                    continue;
                }
                for bit in [WW, WR, RW, PROCESS, REALTIME] {
                    if kinds & bit == 0 {
                        continue;
                    }
                    let Some(t) = shape.step(s, bit) else {
                        continue;
                    };
                    if w == a {
                        if shape.accepts(t) {
                            return Ok(Some(Some(Self::unwind(&parent, (b, s0), v, s, bit))));
                        }
                        continue;
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) = parent.entry((w, t)) {
                        e.insert((v, s, bit));
                        queue.push_back((w, t, depth + 1));
                    }
                }
            }
        }
        Ok(Some(None))
    }

    /// The cycle a → b → … → v → a, from the parent links (the anchor edge a → b
    /// entered `b` in state `s0`).
    fn unwind(
        parent: &FxMap<(TxnId, u8), (TxnId, u8, u8)>,
        (b, s0): (TxnId, u8),
        v: TxnId,
        s: u8,
        closing: u8,
    ) -> Cycle {
        let mut nodes = vec![v];
        let mut kinds = vec![closing];
        let (mut at, mut state) = (v, s);
        while let Some(&(p, ps, kind)) = parent.get(&(at, state)) {
            nodes.push(p);
            kinds.push(kind);
            if (at, state) == (b, s0) {
                break;
            }
            at = p;
            state = ps;
        }
        // Collected backwards: v, …, b, a and the closing edge first.
        nodes.reverse();
        kinds.reverse();
        Cycle { nodes, kinds }
    }
}

#[cfg(test)]
mod tests {
    use super::super::graph::EdgeList;
    use super::*;

    fn classes(edges: &[(u32, u32, u8)], n: usize, mask: u8) -> Vec<(AnomalyKind, usize)> {
        let mut list = EdgeList::default();
        for &(a, b, k) in edges {
            list.add(a, b, k);
        }
        let g = Graph::build(n, list);
        let mut budget = Budget::unlimited();
        let mut memberships = Memberships::new(&g);
        let mut out = Vec::new();
        for c in strongly_connected(&g, mask, &mut budget).expect("no budget") {
            let found = search_component(
                &g,
                &c,
                &mut memberships,
                mask,
                WorkLimit::default(),
                &mut budget,
            )
            .expect("no budget");
            assert!(found.cut.is_empty());
            for (k, cycle) in found.found {
                assert_eq!(cycle.nodes.len(), cycle.kinds.len());
                out.push((k, cycle.nodes.len()));
            }
        }
        out
    }

    const DATA: u8 = WW | WR | RW;
    const ALL: u8 = DATA | PROCESS | REALTIME;

    #[test]
    fn a_search_cut_at_its_work_limit_says_so() {
        // Write skew: a G2-item but no G-single, which a search must rule out by work.
        let mut list = EdgeList::default();
        for (a, b, k) in [(0, 1, RW), (1, 0, RW)] {
            list.add(a, b, k);
        }
        let g = Graph::build(2, list);
        let mut budget = Budget::unlimited();
        let mut memberships = Memberships::new(&g);
        let tight = WorkLimit {
            min: 1,
            per_edge: 0,
        };
        let found = search_component(&g, &[0, 1], &mut memberships, DATA, tight, &mut budget)
            .expect("no budget");
        assert!(found.cut.contains(&AnomalyKind::GSingle), "{found:?}");
        let roomy = WorkLimit::default();
        let found = search_component(&g, &[0, 1], &mut memberships, DATA, roomy, &mut budget)
            .expect("no budget");
        assert!(found.cut.is_empty(), "{found:?}");
        assert_eq!(found.found[0].0, AnomalyKind::G2Item);
    }

    #[test]
    fn each_shape_is_classified() {
        use AnomalyKind as A;
        assert_eq!(
            classes(&[(0, 1, WW), (1, 0, WW)], 2, DATA),
            vec![(A::G0, 2)]
        );
        assert_eq!(
            classes(&[(0, 1, WW), (1, 0, WR)], 2, DATA),
            vec![(A::G1c, 2)]
        );
        assert_eq!(
            classes(&[(0, 1, RW), (1, 0, WR)], 2, DATA),
            vec![(A::GSingle, 2)]
        );
        assert_eq!(
            classes(&[(0, 1, RW), (1, 0, RW)], 2, DATA),
            vec![(A::G2Item, 2)]
        );
        let nonadjacent = [(0, 1, RW), (1, 2, WR), (2, 3, RW), (3, 0, WW)];
        assert_eq!(classes(&nonadjacent, 4, DATA), vec![(A::GNonadjacent, 4)]);
        assert_eq!(
            classes(&[(0, 1, RW), (1, 0, REALTIME)], 2, ALL),
            vec![(A::GSingleRealtime, 2)]
        );
        assert_eq!(
            classes(&[(0, 1, WW), (1, 0, PROCESS)], 2, ALL),
            vec![(A::G0Process, 2)]
        );
        assert_eq!(classes(&[(0, 1, RW), (1, 0, RW)], 2, WW | WR), vec![]);
    }
}
