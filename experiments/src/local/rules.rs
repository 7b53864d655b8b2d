//! The nemesis speaks the simulator's fault rules; real nodes take the transports'
//! per-node rules. [`transport_rules`] translates one into the other.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_sim::{FaultRule as SimRule, LatencyDist, RuleId};
use kvlab_transport::FaultRule;
use kvlab_types::{NodeId, derive_seed};

/// Turns the simulator's fault rules (what the nemesis speaks) into each node's
/// transport rules. Partitions cut both the sending and the receiving side, so messages
/// already in flight are dropped too. A `Delay` rule delays each (node, peer) link by a
/// fixed amount drawn once from its distribution (seeded by the rule), so messages on
/// different links overtake each other. `Duplicate` and `Hold` have no transport
/// counterpart; they are returned as unsupported.
pub fn transport_rules(
    rules: &BTreeMap<RuleId, SimRule>,
    nodes: &[NodeId],
    seed: u64,
) -> (BTreeMap<NodeId, Vec<FaultRule>>, Vec<String>) {
    let mut out: BTreeMap<NodeId, BTreeSet<OrdRule>> =
        nodes.iter().map(|n| (*n, BTreeSet::new())).collect();
    let mut unsupported = Vec::new();
    let mut add = |node: NodeId, rule: FaultRule| {
        if let Some(set) = out.get_mut(&node) {
            set.insert(OrdRule(rule));
        }
    };
    let cut = |a: NodeId, b: NodeId, add: &mut dyn FnMut(NodeId, FaultRule)| {
        if a != b {
            add(a, FaultRule::DropTo { peer: b });
            add(b, FaultRule::DropFrom { peer: a });
        }
    };
    for (id, rule) in rules {
        match rule {
            SimRule::Partition { a, b } => {
                for &x in a {
                    for &y in b {
                        cut(x, y, &mut add);
                        cut(y, x, &mut add);
                    }
                }
            }
            SimRule::OneWay { from, to } => {
                for &f in from {
                    for &t in to {
                        cut(f, t, &mut add);
                    }
                }
            }
            SimRule::Isolate { node } => {
                for &o in nodes {
                    cut(*node, o, &mut add);
                    cut(o, *node, &mut add);
                }
            }
            SimRule::Loss { probability } => {
                for &n in nodes {
                    add(
                        n,
                        FaultRule::Loss {
                            peer: None,
                            probability: probability.clamp(0.0, 1.0),
                        },
                    );
                }
            }
            SimRule::Delay { extra } => {
                let mut rng = kvlab_types::seeded_rng(derive_seed(seed, "local-delay", id.0));
                for &n in nodes {
                    for &p in nodes {
                        if n != p {
                            let delay_ms =
                                sample_ms(extra, &mut rng).min(kvlab_transport::MAX_FAULT_DELAY_MS);
                            add(n, FaultRule::DelayTo { peer: p, delay_ms });
                        }
                    }
                }
            }
            other => unsupported.push(format!(
                "fault rule `{}` has no transport counterpart",
                other.name()
            )),
        }
    }
    let out = out
        .into_iter()
        .map(|(n, set)| (n, set.into_iter().map(|r| r.0).collect()))
        .collect();
    (out, unsupported)
}

fn sample_ms(dist: &LatencyDist, rng: &mut kvlab_types::Rng) -> u64 {
    dist.sample_ns(rng).div_ceil(1_000_000)
}

/// A transport rule with a total order (by its display form), so a node's rule list is
/// deduplicated and always in the same order.
#[derive(Clone, Debug, PartialEq)]
struct OrdRule(FaultRule);

impl Eq for OrdRule {}
impl PartialOrd for OrdRule {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdRule {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to_string().cmp(&other.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn a_partition_cuts_both_directions_on_both_sides() {
        let mut rules = BTreeMap::new();
        rules.insert(
            RuleId(0),
            SimRule::Partition {
                a: ids(&[1]),
                b: ids(&[2, 3]),
            },
        );
        let (per_node, unsupported) = transport_rules(&rules, &ids(&[1, 2, 3]), 1);
        assert!(unsupported.is_empty());
        let n1: Vec<String> = per_node[&NodeId(1)].iter().map(|r| r.to_string()).collect();
        assert_eq!(
            n1,
            [
                "drop_from(n2)",
                "drop_from(n3)",
                "drop_to(n2)",
                "drop_to(n3)"
            ]
        );
        let n2: Vec<String> = per_node[&NodeId(2)].iter().map(|r| r.to_string()).collect();
        assert_eq!(n2, ["drop_from(n1)", "drop_to(n1)"]);
    }

    #[test]
    fn one_way_drops_only_from_senders_to_receivers() {
        let mut rules = BTreeMap::new();
        rules.insert(
            RuleId(0),
            SimRule::OneWay {
                from: ids(&[1]),
                to: ids(&[2]),
            },
        );
        let (per_node, _) = transport_rules(&rules, &ids(&[1, 2, 3]), 1);
        assert_eq!(
            per_node[&NodeId(1)],
            [FaultRule::DropTo { peer: NodeId(2) }]
        );
        assert_eq!(
            per_node[&NodeId(2)],
            [FaultRule::DropFrom { peer: NodeId(1) }]
        );
        assert!(per_node[&NodeId(3)].is_empty());
    }

    #[test]
    fn overlapping_rules_are_deduplicated_and_removal_restores_the_rest() {
        let mut rules = BTreeMap::new();
        rules.insert(RuleId(0), SimRule::Isolate { node: NodeId(1) });
        rules.insert(
            RuleId(1),
            SimRule::Partition {
                a: ids(&[1]),
                b: ids(&[2]),
            },
        );
        let (both, _) = transport_rules(&rules, &ids(&[1, 2]), 1);
        assert_eq!(both[&NodeId(1)].len(), 2);
        rules.remove(&RuleId(0));
        let (one, _) = transport_rules(&rules, &ids(&[1, 2]), 1);
        assert_eq!(one, both, "the partition alone cuts the same links");
        rules.clear();
        let (none, _) = transport_rules(&rules, &ids(&[1, 2]), 1);
        assert!(none.values().all(Vec::is_empty));
    }

    #[test]
    fn delay_draws_a_fixed_delay_per_link_from_the_rule_seed() {
        let mut rules = BTreeMap::new();
        rules.insert(
            RuleId(3),
            SimRule::Delay {
                extra: LatencyDist::Uniform {
                    min_ms: 1.0,
                    max_ms: 20.0,
                },
            },
        );
        let (a, _) = transport_rules(&rules, &ids(&[1, 2, 3]), 9);
        let (b, _) = transport_rules(&rules, &ids(&[1, 2, 3]), 9);
        assert_eq!(a, b);
        for r in a.values().flatten() {
            match r {
                FaultRule::DelayTo { delay_ms, .. } => assert!((1..=20).contains(delay_ms)),
                other => panic!("{other}"),
            }
        }
        rules.insert(RuleId(4), SimRule::Duplicate { probability: 0.5 });
        let (_, unsupported) = transport_rules(&rules, &ids(&[1, 2, 3]), 9);
        assert_eq!(unsupported.len(), 1);
    }
}
