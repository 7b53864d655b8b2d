//! Fault rules: small, composable statements about the network that an operator would
//! name ("partition a from b", "hold what n1 sends to n2"). All active rules apply to
//! every node-to-node message at the moment it is sent.

use kvlab_types::{Layer, NodeId};
use serde::{Deserialize, Serialize};

use crate::config::{LatencyDist, validate_probability};
use crate::error::SimError;

/// Identifies an active rule so that it can be removed.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
pub struct RuleId(pub u64);

/// One fault rule. Rules compose: a message is dropped if any cutting rule matches it,
/// held if any hold rule matches it, and otherwise suffers every loss, delay and
/// duplication rule at once.
///
/// Cutting and holding rules never apply to a node's messages to itself: a partition
/// separates machines, not a process from its own loopback.
///
/// Client traffic (requests and replies) is never subject to these rules, as in Jepsen:
/// nodes are partitioned from each other, clients still reach their node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultRule {
    /// Drops every message between a node of `a` and a node of `b`, both ways.
    Partition {
        /// One side.
        a: Vec<NodeId>,
        /// The other side.
        b: Vec<NodeId>,
    },
    /// Drops every message from a node of `from` to a node of `to` (not the reverse).
    OneWay {
        /// Senders whose messages are dropped.
        from: Vec<NodeId>,
        /// Receivers that do not get them.
        to: Vec<NodeId>,
    },
    /// Drops every message to or from `node` (other than to itself).
    Isolate {
        /// The isolated node.
        node: NodeId,
    },
    /// Loses each message with `probability`, on top of the configured loss.
    Loss {
        /// Probability of loss, in `[0, 1]`.
        probability: f64,
    },
    /// Adds a delay drawn from `extra` to each message.
    Delay {
        /// The extra delay.
        extra: LatencyDist,
    },
    /// Duplicates each message with `probability`, on top of the configured duplication.
    Duplicate {
        /// Probability of a second copy, in `[0, 1]`.
        probability: f64,
    },
    /// Holds (does not drop) every message from a node of `from` to a node of `to` until
    /// the rule is removed or [`crate::Sim::heal`] runs; then they are sent, in their
    /// original order, through the rules active at that moment.
    Hold {
        /// Senders whose messages are held.
        from: Vec<NodeId>,
        /// Receivers whose messages are held.
        to: Vec<NodeId>,
    },
    /// Applies `rule` (a partition, one-way cut, isolation, loss or delay) only to the
    /// part of each message that belongs to `layer` — a composed node's SWIM traffic,
    /// or one Raft group's — and leaves the rest of the message alone. The protocol says
    /// which part is which (`Protocol::split_layer`); traffic of a protocol without
    /// layers is never touched.
    Layered {
        /// The layer aimed at.
        layer: Layer,
        /// What happens to that layer's traffic.
        apply: Box<FaultRule>,
    },
}

impl FaultRule {
    /// The operator's name of the rule (`partition`, `one_way`, …), for events and logs.
    pub fn name(&self) -> &'static str {
        match self {
            FaultRule::Partition { .. } => "partition",
            FaultRule::OneWay { .. } => "one_way",
            FaultRule::Isolate { .. } => "isolate",
            FaultRule::Loss { .. } => "loss",
            FaultRule::Delay { .. } => "delay",
            FaultRule::Duplicate { .. } => "duplicate",
            FaultRule::Hold { .. } => "hold",
            FaultRule::Layered { .. } => "layered",
        }
    }

    /// Checks probabilities and delays; `field` names the rule in the error. Invalid
    /// values in a rule that was added anyway are clamped when applied (a probability to
    /// `[0, 1]`, a delay to `[0, MAX_LATENCY_MS]`), never a panic.
    pub fn validate(&self, field: &str) -> Result<(), SimError> {
        match self {
            FaultRule::Loss { probability } | FaultRule::Duplicate { probability } => {
                validate_probability(&format!("{field}.probability"), *probability)
            }
            FaultRule::Delay { extra } => extra.validate(&format!("{field}.extra")),
            FaultRule::Layered { apply: rule, .. } => match **rule {
                FaultRule::Partition { .. }
                | FaultRule::OneWay { .. }
                | FaultRule::Isolate { .. }
                | FaultRule::Loss { .. }
                | FaultRule::Delay { .. } => rule.validate(&format!("{field}.apply")),
                _ => Err(SimError::InvalidConfig {
                    field: format!("{field}.apply"),
                    reason: format!(
                        "a layered rule takes a partition, one_way, isolate, loss or delay, not {}",
                        rule.name()
                    ),
                }),
            },
            FaultRule::Partition { .. }
            | FaultRule::OneWay { .. }
            | FaultRule::Isolate { .. }
            | FaultRule::Hold { .. } => Ok(()),
        }
    }

    /// Whether this rule drops a message from `from` to `to` (with `from != to`).
    pub(crate) fn cuts(&self, from: NodeId, to: NodeId) -> bool {
        match self {
            FaultRule::Partition { a, b } => {
                (a.contains(&from) && b.contains(&to)) || (b.contains(&from) && a.contains(&to))
            }
            FaultRule::OneWay { from: f, to: t } => f.contains(&from) && t.contains(&to),
            FaultRule::Isolate { node } => *node == from || *node == to,
            _ => false,
        }
    }

    /// Whether this rule holds a message from `from` to `to` (with `from != to`).
    pub(crate) fn holds(&self, from: NodeId, to: NodeId) -> bool {
        match self {
            FaultRule::Hold { from: f, to: t } => f.contains(&from) && t.contains(&to),
            _ => false,
        }
    }
}

/// What the active rules decide for one message.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// A cutting rule matched.
    pub cut: bool,
    /// A hold rule matched (and no cutting rule).
    pub held: bool,
}

/// Clamps a probability from a rule into `[0, 1]` (not-a-number counts as zero).
pub(crate) fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layered_rule_takes_only_rules_that_act_on_one_message() {
        let layered = |apply| FaultRule::Layered {
            layer: Layer::Swim,
            apply: Box::new(apply),
        };
        assert!(
            layered(FaultRule::Isolate { node: NodeId(1) })
                .validate("r")
                .is_ok()
        );
        let held = layered(FaultRule::Hold {
            from: vec![NodeId(1)],
            to: vec![NodeId(2)],
        });
        let e = held.validate("rules[0]").unwrap_err().to_string();
        assert!(e.contains("rules[0].apply") && e.contains("hold"), "{e}");
        let bad_loss = layered(FaultRule::Loss { probability: 2.0 });
        assert!(bad_loss.validate("r").is_err());
        // A layered rule cuts nothing by itself: the simulator applies it to the
        // layer's part of each message only.
        assert!(!layered(FaultRule::Isolate { node: NodeId(1) }).cuts(NodeId(1), NodeId(2)));
    }
}
