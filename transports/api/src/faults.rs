//! Application-level fault rules: every transport consults a node's [`FaultRules`] on send
//! and on receive, so a partition behaves the same between processes on one machine, in
//! one process, and later between pods (where no `tc netem` exists).
//!
//! Rules are small and composable (after turmoil's `partition`, `partition_oneway`,
//! `hold`): drop to a peer, drop from a peer, delay to a peer, lose a fraction of outbound
//! messages. They change at run time (an admin endpoint will set them); the loss draws
//! come from one seeded RNG so a run's loss pattern is reproducible for a given order of
//! sends.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kvlab_types::{NodeId, Rng, seeded_rng};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::TransportError;

/// The longest delay a rule may ask for: one minute. A longer "delay" is a drop and should
/// be written as one.
pub const MAX_FAULT_DELAY_MS: u64 = 60_000;

/// The most rules one node may hold at once; bounds the per-message rule scan.
pub const MAX_FAULT_RULES: usize = 256;

/// One fault rule, as an operator would name it. Serialized with a `rule` tag, e.g.
/// `{"rule":"drop_to","peer":2}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultRule {
    /// Drop every message this node sends to `peer` (one half of a partition).
    DropTo {
        /// The peer cut off.
        peer: NodeId,
    },
    /// Drop every message this node receives from `peer` (the other half).
    DropFrom {
        /// The peer cut off.
        peer: NodeId,
    },
    /// Hold every message to `peer` for `delay_ms` before it leaves. Several delay rules
    /// for one peer add up.
    DelayTo {
        /// The peer slowed down.
        peer: NodeId,
        /// Added one-way delay in milliseconds, at most [`MAX_FAULT_DELAY_MS`].
        delay_ms: u64,
    },
    /// Drop each outbound message with `probability` (to `peer` only, or to everyone when
    /// `peer` is absent). Draws come from the rules' seeded RNG.
    Loss {
        /// The peer concerned, or every peer.
        #[serde(default)]
        peer: Option<NodeId>,
        /// Chance in `[0, 1]` that a message is lost.
        probability: f64,
    },
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultRule::DropTo { peer } => write!(f, "drop_to({peer})"),
            FaultRule::DropFrom { peer } => write!(f, "drop_from({peer})"),
            FaultRule::DelayTo { peer, delay_ms } => write!(f, "delay_to({peer}, {delay_ms} ms)"),
            FaultRule::Loss {
                peer: Some(p),
                probability,
            } => write!(f, "loss({p}, p={probability})"),
            FaultRule::Loss {
                peer: None,
                probability,
            } => write!(f, "loss(all, p={probability})"),
        }
    }
}

impl FaultRule {
    /// Checks the rule's parameters: a probability in `[0, 1]`, a delay within
    /// [`MAX_FAULT_DELAY_MS`].
    pub fn validate(&self) -> Result<(), TransportError> {
        let refuse = |reason: String| TransportError::InvalidFaultRule {
            rule: self.to_string(),
            reason,
        };
        match *self {
            FaultRule::DelayTo { delay_ms, .. } if delay_ms > MAX_FAULT_DELAY_MS => Err(refuse(
                format!("delay_ms must be at most {MAX_FAULT_DELAY_MS}"),
            )),
            FaultRule::Loss { probability, .. } if !(0.0..=1.0).contains(&probability) => {
                Err(refuse("probability must be within [0, 1]".to_string()))
            }
            _ => Ok(()),
        }
    }
}

/// What the rules say about one outbound message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendVerdict {
    /// Send it now.
    Deliver,
    /// Drop it (count it as [`crate::DropReason::FaultRule`]).
    Drop,
    /// Send it after this delay.
    Delay(Duration),
}

#[derive(Debug)]
struct State {
    rules: Vec<FaultRule>,
    rng: Rng,
}

/// A node's fault rules, shared by the transport and whoever steers it (an admin endpoint,
/// a test). Cloning shares the same rules.
///
/// With no rules installed the per-message check is one atomic load.
#[derive(Clone, Debug)]
pub struct FaultRules {
    active: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
}

impl FaultRules {
    /// Empty rules whose loss draws come from `seed` (derive it from the run seed with
    /// [`kvlab_types::derive_seed`], e.g. label `"transport-faults"` and the node id).
    pub fn new(seed: u64) -> Self {
        FaultRules {
            active: Arc::new(AtomicBool::new(false)),
            state: Arc::new(Mutex::new(State {
                rules: Vec::new(),
                rng: seeded_rng(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a bug in this module; the
        // state (a rule list and an RNG) is valid at every instruction, so recover it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces all rules at once (validated first; on error nothing changes).
    pub fn set(&self, rules: Vec<FaultRule>) -> Result<(), TransportError> {
        if rules.len() > MAX_FAULT_RULES {
            return Err(TransportError::InvalidFaultRule {
                rule: format!("{} rules", rules.len()),
                reason: format!("at most MAX_FAULT_RULES = {MAX_FAULT_RULES} rules"),
            });
        }
        for r in &rules {
            r.validate()?;
        }
        let mut st = self.lock();
        self.active.store(!rules.is_empty(), Ordering::Release);
        st.rules = rules;
        Ok(())
    }

    /// Adds one rule (validated first).
    pub fn add(&self, rule: FaultRule) -> Result<(), TransportError> {
        rule.validate()?;
        let mut st = self.lock();
        if st.rules.len() >= MAX_FAULT_RULES {
            return Err(TransportError::InvalidFaultRule {
                rule: rule.to_string(),
                reason: format!("already holding MAX_FAULT_RULES = {MAX_FAULT_RULES} rules"),
            });
        }
        st.rules.push(rule);
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes every rule equal to `rule`; returns how many were removed.
    pub fn remove(&self, rule: &FaultRule) -> usize {
        let mut st = self.lock();
        let before = st.rules.len();
        st.rules.retain(|r| r != rule);
        self.active.store(!st.rules.is_empty(), Ordering::Release);
        before - st.rules.len()
    }

    /// Removes every rule: traffic flows again.
    pub fn clear(&self) {
        let mut st = self.lock();
        st.rules.clear();
        self.active.store(false, Ordering::Release);
    }

    /// The rules in force, in the order they were added.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.lock().rules.clone()
    }

    /// Decides the fate of one message to `to`. Drop rules win over delays; a loss draw
    /// is made only when no drop rule already applies, so adding a partition does not
    /// shift the loss stream of other peers more than necessary.
    pub fn on_send(&self, to: NodeId) -> SendVerdict {
        if !self.active.load(Ordering::Acquire) {
            return SendVerdict::Deliver;
        }
        let mut st = self.lock();
        let mut delay_ms: u64 = 0;
        let mut loss: Option<f64> = None;
        for r in &st.rules {
            match *r {
                FaultRule::DropTo { peer } if peer == to => return SendVerdict::Drop,
                FaultRule::DelayTo { peer, delay_ms: d } if peer == to => {
                    delay_ms = delay_ms.saturating_add(d);
                }
                FaultRule::Loss { peer, probability } if peer.is_none_or(|p| p == to) => {
                    // Independent losses combine: survive both with (1-p1)(1-p2).
                    let keep = (1.0 - loss.unwrap_or(0.0)) * (1.0 - probability);
                    loss = Some(1.0 - keep);
                }
                _ => {}
            }
        }
        if let Some(p) = loss
            && st.rng.random_bool(p.clamp(0.0, 1.0))
        {
            return SendVerdict::Drop;
        }
        if delay_ms > 0 {
            SendVerdict::Delay(Duration::from_millis(delay_ms))
        } else {
            SendVerdict::Deliver
        }
    }

    /// Whether a message arriving from `from` must be dropped.
    pub fn drops_from(&self, from: NodeId) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        self.lock()
            .rules
            .iter()
            .any(|r| matches!(*r, FaultRule::DropFrom { peer } if peer == from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rules_deliver_everything() {
        let f = FaultRules::new(1);
        assert_eq!(f.on_send(NodeId(2)), SendVerdict::Deliver);
        assert!(!f.drops_from(NodeId(2)));
    }

    #[test]
    fn drop_rules_cut_only_the_named_peer_and_clear_restores() {
        let f = FaultRules::new(1);
        f.add(FaultRule::DropTo { peer: NodeId(2) }).unwrap();
        f.add(FaultRule::DropFrom { peer: NodeId(3) }).unwrap();
        assert_eq!(f.on_send(NodeId(2)), SendVerdict::Drop);
        assert_eq!(f.on_send(NodeId(3)), SendVerdict::Deliver);
        assert!(f.drops_from(NodeId(3)));
        assert!(!f.drops_from(NodeId(2)));
        f.clear();
        assert_eq!(f.on_send(NodeId(2)), SendVerdict::Deliver);
        assert!(!f.drops_from(NodeId(3)));
    }

    #[test]
    fn delays_to_one_peer_add_up_and_drop_wins_over_delay() {
        let f = FaultRules::new(1);
        f.add(FaultRule::DelayTo {
            peer: NodeId(2),
            delay_ms: 30,
        })
        .unwrap();
        f.add(FaultRule::DelayTo {
            peer: NodeId(2),
            delay_ms: 20,
        })
        .unwrap();
        assert_eq!(
            f.on_send(NodeId(2)),
            SendVerdict::Delay(Duration::from_millis(50))
        );
        f.add(FaultRule::DropTo { peer: NodeId(2) }).unwrap();
        assert_eq!(f.on_send(NodeId(2)), SendVerdict::Drop);
        assert_eq!(f.remove(&FaultRule::DropTo { peer: NodeId(2) }), 1);
        assert_eq!(
            f.on_send(NodeId(2)),
            SendVerdict::Delay(Duration::from_millis(50))
        );
    }

    #[test]
    fn loss_is_reproducible_for_a_seed() {
        let draws = |seed| {
            let f = FaultRules::new(seed);
            f.add(FaultRule::Loss {
                peer: None,
                probability: 0.5,
            })
            .unwrap();
            (0..200)
                .map(|_| f.on_send(NodeId(2)) == SendVerdict::Drop)
                .collect::<Vec<_>>()
        };
        let a = draws(9);
        assert_eq!(a, draws(9));
        assert_ne!(a, draws(10));
        let dropped = a.iter().filter(|d| **d).count();
        assert!(
            (50..150).contains(&dropped),
            "{dropped} of 200 dropped at p=0.5"
        );
    }

    #[test]
    fn loss_for_one_peer_spares_the_others() {
        let f = FaultRules::new(3);
        f.add(FaultRule::Loss {
            peer: Some(NodeId(2)),
            probability: 1.0,
        })
        .unwrap();
        assert_eq!(f.on_send(NodeId(2)), SendVerdict::Drop);
        assert_eq!(f.on_send(NodeId(4)), SendVerdict::Deliver);
    }

    #[test]
    fn out_of_range_rules_are_refused_and_change_nothing() {
        let f = FaultRules::new(1);
        f.add(FaultRule::DropTo { peer: NodeId(2) }).unwrap();
        let err = f
            .set(vec![FaultRule::Loss {
                peer: None,
                probability: 1.5,
            }])
            .unwrap_err();
        assert!(err.to_string().contains("probability"), "{err}");
        let err = f
            .add(FaultRule::DelayTo {
                peer: NodeId(2),
                delay_ms: MAX_FAULT_DELAY_MS + 1,
            })
            .unwrap_err();
        assert!(err.to_string().contains("delay_ms"), "{err}");
        assert_eq!(f.rules(), vec![FaultRule::DropTo { peer: NodeId(2) }]);
        let nan = FaultRule::Loss {
            peer: None,
            probability: f64::NAN,
        };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn rules_read_from_json_with_a_rule_tag() {
        let rules: Vec<FaultRule> = serde_json::from_str(
            r#"[{"rule":"drop_to","peer":2},{"rule":"delay_to","peer":3,"delay_ms":40},{"rule":"loss","probability":0.1}]"#,
        )
        .unwrap();
        assert_eq!(
            rules,
            vec![
                FaultRule::DropTo { peer: NodeId(2) },
                FaultRule::DelayTo {
                    peer: NodeId(3),
                    delay_ms: 40
                },
                FaultRule::Loss {
                    peer: None,
                    probability: 0.1
                },
            ]
        );
        let bad = serde_json::from_str::<FaultRule>(r#"{"rule":"drop_to","peer":2,"typo":1}"#);
        assert!(bad.is_err());
    }
}
