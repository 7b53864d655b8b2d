//! Time to balance after a membership change (a join, a drain, a node killed for good),
//! against what the scheduler's rate limits predict.
//!
//! An *episode* runs from one membership change to the next (or to the end of the
//! run). Within it, the observer's replica changes (a replica created on or removed from
//! a node, each counted once) give:
//!
//! - `first_move_after_s`: change → first replica created or removed — detection
//!   (SWIM, meta's node states, `replace_down_after_ms` for a loss) plus planning;
//! - `settled_after_s`: change → last replica created or removed in the episode: when
//!   the placement stopped moving;
//! - `moving_s`: the difference, the part the rate limits govern;
//! - `predicted_moving_s`: the rate limits' bound on it. Each node takes new replicas
//!   from a token bucket refilled at `node_add_replica_per_s` holding
//!   `node_bucket_burst` tokens, and gives them up at `node_remove_replica_per_s`
//!   (PD's store limits), so a node that gains `g` replicas needs at least
//!   `(g − burst) / add_rate` seconds, one that loses `l` at least
//!   `(l − burst) / remove_rate`; the episode needs the slowest node's time
//!   (`predicted_rate_s`). The last operator then still runs its steps — add learner,
//!   perhaps a leader transfer, enter joint, leave joint, remove — each sent at one
//!   scheduling round and seen done at the next, about two `meta.schedule_interval_ms`
//!   (`predicted_steps_s`). `predicted_moving_s` is their sum; faults that stall an
//!   operator (a paused group leader) come on top.

use std::collections::BTreeMap;

use kvlab_node::composed::KvlabConfig;
use kvlab_types::{NodeId, Time};
use serde::{Deserialize, Serialize};

/// One membership change and how the ring settled after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalanceEpisode {
    /// What changed: `join n6`, `drain n3`, `kill-permanently n4`.
    pub event: String,
    /// When (seconds of run time).
    pub at_s: f64,
    /// Change → first replica created or removed, if any moved.
    pub first_move_after_s: Option<f64>,
    /// Change → last replica created or removed before the next change.
    pub settled_after_s: Option<f64>,
    /// `settled_after_s − first_move_after_s`.
    pub moving_s: Option<f64>,
    /// The token buckets' bound (see the module docs).
    pub predicted_rate_s: f64,
    /// The last operator's steps, two scheduling rounds each.
    pub predicted_steps_s: f64,
    /// `predicted_rate_s + predicted_steps_s`: what `moving_s` should be without faults.
    pub predicted_moving_s: f64,
    /// Replicas created, per node.
    pub gained: BTreeMap<String, u32>,
    /// Replicas removed, per node.
    pub lost: BTreeMap<String, u32>,
}

/// The scheduler limits the prediction uses.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    add_per_s: f64,
    remove_per_s: f64,
    burst: u32,
    schedule_interval_s: f64,
}

impl RateLimits {
    /// The limits of a node configuration.
    pub fn of(config: &KvlabConfig) -> Self {
        RateLimits {
            add_per_s: config.scheduler.node_add_replica_per_s,
            remove_per_s: config.scheduler.node_remove_replica_per_s,
            burst: config.scheduler.node_bucket_burst,
            schedule_interval_s: config.meta.schedule_interval_ms as f64 / 1000.0,
        }
    }

    /// About how long an operator of `steps` steps takes: two scheduling rounds a step.
    pub fn steps_time(&self, steps: usize) -> f64 {
        2.0 * self.schedule_interval_s * steps as f64
    }

    /// The least time the buckets allow for these per-node gains and losses.
    pub fn predict(&self, gained: &BTreeMap<NodeId, u32>, lost: &BTreeMap<NodeId, u32>) -> f64 {
        let time = |count: u32, rate: f64| {
            if rate > 0.0 {
                f64::from(count.saturating_sub(self.burst)) / rate
            } else if count > self.burst {
                f64::INFINITY
            } else {
                0.0
            }
        };
        let add = gained.values().map(|&g| time(g, self.add_per_s));
        let remove = lost.values().map(|&l| time(l, self.remove_per_s));
        add.chain(remove).fold(0.0, f64::max)
    }
}

/// A replica created (`+1`) on or removed (`−1`) from a node at a time.
pub type ReplicaChange = (Time, NodeId, i8);

/// A replica-moving operator created at a time, with its number of steps.
pub type OperatorSteps = (Time, usize);

/// The episodes of a run: one per membership change, in time order; `end` closes the
/// last one.
pub fn episodes(
    changes: &[(Time, String)],
    replica_changes: &[ReplicaChange],
    operators: &[OperatorSteps],
    limits: RateLimits,
    end: Time,
) -> Vec<BalanceEpisode> {
    let mut out = Vec::new();
    for (i, (at, event)) in changes.iter().enumerate() {
        let until = changes.get(i + 1).map_or(end, |(t, _)| *t);
        let inside: Vec<&ReplicaChange> = replica_changes
            .iter()
            .filter(|(t, _, _)| *t >= *at && *t < until)
            .collect();
        let mut gained: BTreeMap<NodeId, u32> = BTreeMap::new();
        let mut lost: BTreeMap<NodeId, u32> = BTreeMap::new();
        for (_, n, d) in &inside {
            let side = if *d > 0 { &mut gained } else { &mut lost };
            *side.entry(*n).or_insert(0) += 1;
        }
        let after = |t: Time| t.saturating_since(*at).as_secs_f64();
        let first = inside.first().map(|(t, _, _)| after(*t));
        let last = inside.last().map(|(t, _, _)| after(*t));
        let names = |m: &BTreeMap<NodeId, u32>| -> BTreeMap<String, u32> {
            m.iter().map(|(n, c)| (n.to_string(), *c)).collect()
        };
        let steps = operators
            .iter()
            .filter(|(t, _)| *t >= *at && *t < until)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        let rate = limits.predict(&gained, &lost);
        let steps = limits.steps_time(steps);
        out.push(BalanceEpisode {
            event: event.clone(),
            at_s: at.as_secs_f64(),
            first_move_after_s: first,
            settled_after_s: last,
            moving_s: first.zip(last).map(|(f, l)| l - f),
            predicted_rate_s: rate,
            predicted_steps_s: steps,
            predicted_moving_s: rate + steps,
            gained: names(&gained),
            lost: names(&lost),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RateLimits {
        RateLimits {
            add_per_s: 2.0,
            remove_per_s: 4.0,
            burst: 4,
            schedule_interval_s: 0.1,
        }
    }

    #[test]
    fn the_slowest_bucket_bounds_the_moving_time() {
        let gained = BTreeMap::from([(NodeId(6), 10), (NodeId(7), 5)]);
        let lost = BTreeMap::from([(NodeId(1), 12)]);
        // n6: (10 − 4) / 2 = 3 s; n7: 0.5 s; n1: (12 − 4) / 4 = 2 s.
        assert_eq!(limits().predict(&gained, &lost), 3.0);
        // Within the burst nothing waits.
        let small = BTreeMap::from([(NodeId(6), 4)]);
        assert_eq!(limits().predict(&small, &BTreeMap::new()), 0.0);
    }

    #[test]
    fn each_change_opens_an_episode_that_the_next_one_closes() {
        let t = |ms: u64| Time(ms * 1_000_000);
        let changes = vec![(t(1_000), "join n6".into()), (t(5_000), "join n7".into())];
        let replica_changes = vec![
            (t(500), NodeId(1), 1),
            (t(1_500), NodeId(6), 1),
            (t(2_500), NodeId(6), 1),
            (t(3_000), NodeId(1), -1),
            (t(6_000), NodeId(7), 1),
        ];
        let operators = vec![(t(1_100), 4), (t(1_200), 5), (t(5_500), 4)];
        let e = episodes(&changes, &replica_changes, &operators, limits(), t(9_000));
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].first_move_after_s, Some(0.5));
        assert_eq!(e[0].settled_after_s, Some(2.0));
        assert_eq!(e[0].moving_s, Some(1.5));
        assert_eq!(e[0].gained["n6"], 2);
        assert_eq!(e[0].lost["n1"], 1);
        // Five steps of two 0.1 s rounds.
        assert!((e[0].predicted_steps_s - 1.0).abs() < 1e-9);
        assert_eq!(e[1].settled_after_s, Some(1.0));
        let none = episodes(&[(t(1), "drain n2".into())], &[], &[], limits(), t(9));
        assert_eq!(none[0].settled_after_s, None);
        assert_eq!(none[0].predicted_moving_s, 0.0);
    }
}
