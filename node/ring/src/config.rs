//! The spec knobs of the ring, the meta group, membership reaction, the scheduler and
//! snapshots (wave 2 §7), as serde structs with `deny_unknown_fields`. Defaults are for
//! simulation (timeouts scaled down); each field's doc names the production value of the
//! system it is modelled on, so a researcher can restore realistic ratios.
//!
//! Each section is its own TOML table (`[ring]`, `[meta]`, `[membership]`,
//! `[scheduler]`, `[snapshot]`) and the bug switch is `[faults.bugs] placement`;
//! [`RingSpec`] gathers them for the node and [`RingSpec::validate`] checks them once.

use std::time::Duration;

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::hash::RingLayout;
use crate::limits::{NodeRates, SnapshotRates};
use crate::placement::MAX_REPLICATION_FACTOR;
use crate::plan::{ConfChangeMode, PlacementBug, PlanConfig};
use crate::strategy::{MAX_RING_TOKENS_PER_NODE, PlacementStrategy, StrategyParams};

/// The most meta voters (a Raft group of more than 7 buys nothing).
pub const MAX_META_VOTERS: usize = 7;
/// The largest snapshot chunk (bytes).
pub const MAX_SNAPSHOT_CHUNK_BYTES: u64 = 16 << 20;

/// A configuration field with a value the ring cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The field and why.
    #[error("invalid ring config: field `{field}`: {reason}")]
    Invalid {
        /// The field, as `section.name` in TOML.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The key hash (`ring.key_hash`). Only one, fixed and seedless; named in the spec so a
/// run records which one it used.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub enum KeyHash {
    /// xxh3-64 with its default secret.
    #[default]
    #[serde(rename = "xxh3-64")]
    Xxh3_64,
}

/// `[ring]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// `P`, a power of two in 1..=1024; one Raft group per vnode (YugabyteDB: up to 64K
    /// hash tablets per table).
    pub vnode_count: u32,
    /// The key hash: `xxh3-64`, fixed and seedless.
    pub key_hash: KeyHash,
    /// `balanced` | `rendezvous` | `ring-tokens`.
    pub placement_strategy: PlacementStrategy,
    /// Tokens per node for `ring-tokens` (Cassandra `num_tokens`: 16 since 4.0, was 256).
    pub ring_tokens_per_node: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            vnode_count: 64,
            key_hash: KeyHash::Xxh3_64,
            placement_strategy: PlacementStrategy::Balanced,
            ring_tokens_per_node: 16,
        }
    }
}

/// `[meta]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaConfig {
    /// The meta group's voters (fixed in wave 2; M4).
    pub voters: Vec<NodeId>,
    /// How often each node sends its store heartbeat (TiKV store heartbeat: 10 s).
    pub store_heartbeat_interval_ms: u64,
    /// How often the meta leader runs the scheduler (PD `patrol-region-interval`: 10 ms).
    pub schedule_interval_ms: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            store_heartbeat_interval_ms: 1000,
            schedule_interval_ms: 200,
        }
    }
}

/// `[membership]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// A Suspect node must be alive this long before it is Up again (CRDB
    /// `server.time_after_store_suspect`: 30 s).
    pub suspect_hold_ms: u64,
    /// SWIM must say dead this long before a node is Down and replaced (PD
    /// `max-store-down-time`: 30 min; CRDB `server.time_until_store_dead`: 5 min;
    /// YugabyteDB `follower_unavailable_considered_failed_sec`: 15 min).
    pub replace_down_after_ms: u64,
    /// A group leader reports a member down after this long without hearing from it
    /// (TiKV `max-peer-down-duration`: 10 min).
    pub peer_down_after_ms: u64,
    /// Act on SWIM "dead" only if every group leader with a replica on the node also
    /// reports it down (the Consul lesson: a SWIM false positive must not move data).
    pub require_raft_evidence: bool,
    /// A replica without a leader this long asks meta whether it is still a member
    /// (TiKV `max-leader-missing-duration`: 2 h).
    pub stale_peer_check_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            suspect_hold_ms: 5000,
            replace_down_after_ms: 10_000,
            peer_down_after_ms: 3000,
            require_raft_evidence: true,
            stale_peer_check_ms: 30_000,
        }
    }
}

/// `[scheduler]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Running operators cluster-wide (PD `replica-schedule-limit`: 64).
    pub max_inflight_operators: usize,
    /// New replicas per node per second (PD store limit add-peer: 15/min).
    pub node_add_replica_per_s: f64,
    /// Removed replicas per node per second (PD store limit remove-peer: 15/min).
    pub node_remove_replica_per_s: f64,
    /// Tokens a node's bucket banks.
    pub node_bucket_burst: u32,
    /// Whether rebalance moves are planned.
    pub rebalance: bool,
    /// Rebalance only outside `mean·(1 ± ratio)` (CRDB store rebalancer: ±10%).
    pub rebalance_tolerance_ratio: f64,
    /// Whether leader-balance transfers are planned.
    pub leader_balance: bool,
    /// Leader transfers away from one node per second (CRDB: one lease transfer a second).
    pub leader_transfer_per_node_per_s: f64,
    /// An operator not done after this long is cancelled (CRDB replicate queue: 60 s per
    /// replica).
    pub operator_timeout_ms: u64,
    /// `joint` | `single-step`.
    pub conf_change: ConfChangeMode,
    /// A promoted learner must be within this many entries of the commit index
    /// (enforced by the group leader before `EnterJoint`/`AddVoter`).
    pub learner_catchup_max_lag_entries: u64,
    /// Ignored: an old setting that nothing ever read. Still accepted so that specs and
    /// run directories written before it was removed load; never written out.
    #[serde(skip_serializing)]
    pub balance_stable_ms: Option<u64>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_inflight_operators: 16,
            node_add_replica_per_s: 2.0,
            node_remove_replica_per_s: 2.0,
            node_bucket_burst: 4,
            rebalance: true,
            rebalance_tolerance_ratio: 0.10,
            leader_balance: true,
            leader_transfer_per_node_per_s: 1.0,
            operator_timeout_ms: 60_000,
            conf_change: ConfChangeMode::Joint,
            learner_catchup_max_lag_entries: 64,
            balance_stable_ms: None,
        }
    }
}

/// `[snapshot]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Bytes per snapshot chunk.
    pub chunk_bytes: u64,
    /// Snapshot bytes a node may send per second (TiKV `snap-io-max-bytes-per-sec`:
    /// 100 MiB/s; YugabyteDB `remote_bootstrap_rate_limit_bytes_per_sec`).
    pub max_bytes_per_s_per_node: u64,
    /// Snapshots a node may send at once (TiKV `concurrent-send-snap-limit`: 32).
    pub max_concurrent_send_per_node: u32,
    /// Snapshots a node may receive at once (CRDB: one applying snapshot per receiver).
    pub max_concurrent_recv_per_node: u32,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            chunk_bytes: 65_536,
            max_bytes_per_s_per_node: 10_000_000,
            max_concurrent_send_per_node: 2,
            max_concurrent_recv_per_node: 1,
        }
    }
}

/// Every ring-related section, as the node and the scheduler take them.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingSpec {
    /// `[ring]`.
    pub ring: RingConfig,
    /// `[meta]`.
    pub meta: MetaConfig,
    /// `[membership]`.
    pub membership: MembershipConfig,
    /// `[scheduler]`.
    pub scheduler: SchedulerConfig,
    /// `[snapshot]`.
    pub snapshot: SnapshotConfig,
    /// `[faults.bugs] placement`: `none` | `remove-before-add` |
    /// `two-voters-without-joint` | `skip-epoch-check`.
    pub placement_bug: PlacementBug,
}

fn positive(field: &'static str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(invalid(field, "must be > 0"));
    }
    Ok(())
}

fn rate(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if !v.is_finite() || v <= 0.0 || v > 1e6 {
        return Err(invalid(
            field,
            format!("{v} must be a finite rate in (0, 1e6]"),
        ));
    }
    Ok(())
}

impl RingSpec {
    /// Checks every field with the cluster's replication factor; the error names the
    /// first bad field and why.
    pub fn validate(&self, replication_factor: usize) -> Result<(), ConfigError> {
        if replication_factor == 0 || replication_factor > MAX_REPLICATION_FACTOR {
            return Err(invalid(
                "cluster.replication_factor",
                format!("{replication_factor} must be in 1..={MAX_REPLICATION_FACTOR}"),
            ));
        }
        let r = &self.ring;
        RingLayout::new(r.vnode_count).map_err(|e| invalid("ring.vnode_count", e.to_string()))?;
        if r.ring_tokens_per_node == 0 || r.ring_tokens_per_node > MAX_RING_TOKENS_PER_NODE {
            return Err(invalid(
                "ring.ring_tokens_per_node",
                format!("must be in 1..={MAX_RING_TOKENS_PER_NODE}"),
            ));
        }
        let m = &self.meta;
        if m.voters.is_empty() || m.voters.len() > MAX_META_VOTERS {
            return Err(invalid(
                "meta.voters",
                format!("needs 1..={MAX_META_VOTERS} voters"),
            ));
        }
        let mut sorted = m.voters.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != m.voters.len() {
            return Err(invalid("meta.voters", "a voter is listed twice"));
        }
        positive(
            "meta.store_heartbeat_interval_ms",
            m.store_heartbeat_interval_ms,
        )?;
        positive("meta.schedule_interval_ms", m.schedule_interval_ms)?;
        let b = &self.membership;
        positive("membership.suspect_hold_ms", b.suspect_hold_ms)?;
        positive("membership.replace_down_after_ms", b.replace_down_after_ms)?;
        positive("membership.peer_down_after_ms", b.peer_down_after_ms)?;
        positive("membership.stale_peer_check_ms", b.stale_peer_check_ms)?;
        let s = &self.scheduler;
        positive(
            "scheduler.max_inflight_operators",
            s.max_inflight_operators as u64,
        )?;
        rate("scheduler.node_add_replica_per_s", s.node_add_replica_per_s)?;
        rate(
            "scheduler.node_remove_replica_per_s",
            s.node_remove_replica_per_s,
        )?;
        rate(
            "scheduler.leader_transfer_per_node_per_s",
            s.leader_transfer_per_node_per_s,
        )?;
        positive(
            "scheduler.node_bucket_burst",
            u64::from(s.node_bucket_burst),
        )?;
        if !(0.0..1.0).contains(&s.rebalance_tolerance_ratio) {
            return Err(invalid(
                "scheduler.rebalance_tolerance_ratio",
                "must be in [0, 1)",
            ));
        }
        positive("scheduler.operator_timeout_ms", s.operator_timeout_ms)?;
        let p = &self.snapshot;
        if p.chunk_bytes == 0 || p.chunk_bytes > MAX_SNAPSHOT_CHUNK_BYTES {
            return Err(invalid(
                "snapshot.chunk_bytes",
                format!("must be in 1..={MAX_SNAPSHOT_CHUNK_BYTES}"),
            ));
        }
        positive(
            "snapshot.max_bytes_per_s_per_node",
            p.max_bytes_per_s_per_node,
        )?;
        positive(
            "snapshot.max_concurrent_send_per_node",
            u64::from(p.max_concurrent_send_per_node),
        )?;
        positive(
            "snapshot.max_concurrent_recv_per_node",
            u64::from(p.max_concurrent_recv_per_node),
        )?;
        Ok(())
    }

    /// The ring layout (call after [`RingSpec::validate`]).
    pub fn layout(&self) -> Result<RingLayout, ConfigError> {
        RingLayout::new(self.ring.vnode_count)
            .map_err(|e| invalid("ring.vnode_count", e.to_string()))
    }

    /// Strategy parameters.
    pub fn strategy_params(&self) -> StrategyParams {
        StrategyParams {
            ring_tokens_per_node: self.ring.ring_tokens_per_node,
        }
    }

    /// The planner's knobs.
    pub fn plan_config(&self, replication_factor: usize) -> PlanConfig {
        let s = &self.scheduler;
        PlanConfig {
            replication_factor,
            conf_change: s.conf_change,
            bug: self.placement_bug,
            max_inflight_operators: s.max_inflight_operators,
            rebalance: s.rebalance,
            rebalance_tolerance_ratio: s.rebalance_tolerance_ratio,
            leader_balance: s.leader_balance,
            operator_timeout: Duration::from_millis(s.operator_timeout_ms),
            strategy: self.ring.placement_strategy,
            strategy_params: self.strategy_params(),
        }
    }

    /// The scheduler's per-node bucket rates.
    pub fn node_rates(&self) -> NodeRates {
        let s = &self.scheduler;
        NodeRates {
            add_replica_per_s: s.node_add_replica_per_s,
            remove_replica_per_s: s.node_remove_replica_per_s,
            leader_transfer_per_s: s.leader_transfer_per_node_per_s,
            burst: s.node_bucket_burst,
        }
    }

    /// The node-level snapshot limits.
    pub fn snapshot_rates(&self) -> SnapshotRates {
        let p = &self.snapshot;
        SnapshotRates {
            max_bytes_per_s: p.max_bytes_per_s_per_node,
            max_concurrent_send: p.max_concurrent_send_per_node,
            max_concurrent_recv: p.max_concurrent_recv_per_node,
            chunk_bytes: p.chunk_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_the_design_table() {
        let s = RingSpec::default();
        assert_eq!(s.validate(3), Ok(()));
        assert_eq!(s.ring.vnode_count, 64);
        assert_eq!(s.membership.replace_down_after_ms, 10_000);
        assert_eq!(s.scheduler.max_inflight_operators, 16);
        assert_eq!(s.placement_bug, PlacementBug::None);
    }

    #[test]
    fn toml_sections_parse_and_unknown_fields_are_refused() {
        let ring: RingConfig = toml::from_str(
            "vnode_count = 16\nkey_hash = \"xxh3-64\"\nplacement_strategy = \"ring-tokens\"\nring_tokens_per_node = 8",
        )
        .unwrap();
        assert_eq!(ring.placement_strategy, PlacementStrategy::RingTokens);
        let sched: SchedulerConfig =
            toml::from_str("conf_change = \"single-step\"\nnode_add_replica_per_s = 0.5").unwrap();
        assert_eq!(sched.conf_change, ConfChangeMode::SingleStep);
        assert!(toml::from_str::<MembershipConfig>("replace_down_after = 5").is_err());
        assert!(toml::from_str::<RingConfig>("placement_strategy = \"copyset\"").is_err());
        // A setting nothing read, removed: old files still load, and it is not written.
        let old: SchedulerConfig = toml::from_str("balance_stable_ms = 1000").unwrap();
        assert!(!toml::to_string(&old).unwrap().contains("balance_stable"));
        let spec: RingSpec = toml::from_str(
            "placement_bug = \"two-voters-without-joint\"\n[meta]\nvoters = [1, 2, 4]",
        )
        .unwrap();
        assert_eq!(spec.placement_bug, PlacementBug::TwoVotersWithoutJoint);
        assert_eq!(spec.meta.voters, [NodeId(1), NodeId(2), NodeId(4)]);
    }

    #[test]
    fn validate_names_the_bad_field() {
        type Breaker = fn(&mut RingSpec);
        let cases: Vec<(Breaker, &str)> = vec![
            (|s| s.ring.vnode_count = 48, "ring.vnode_count"),
            (
                |s| s.ring.ring_tokens_per_node = 0,
                "ring.ring_tokens_per_node",
            ),
            (
                |s| s.meta.voters = vec![NodeId(1), NodeId(1)],
                "meta.voters",
            ),
            (
                |s| s.meta.schedule_interval_ms = 0,
                "meta.schedule_interval_ms",
            ),
            (
                |s| s.membership.replace_down_after_ms = 0,
                "membership.replace_down_after_ms",
            ),
            (
                |s| s.scheduler.node_add_replica_per_s = f64::NAN,
                "scheduler.node_add_replica_per_s",
            ),
            (
                |s| s.scheduler.rebalance_tolerance_ratio = 1.5,
                "scheduler.rebalance_tolerance_ratio",
            ),
            (
                |s| s.scheduler.max_inflight_operators = 0,
                "scheduler.max_inflight_operators",
            ),
            (|s| s.snapshot.chunk_bytes = 0, "snapshot.chunk_bytes"),
            (
                |s| s.snapshot.max_concurrent_recv_per_node = 0,
                "snapshot.max_concurrent_recv_per_node",
            ),
        ];
        for (break_it, field) in cases {
            let mut s = RingSpec::default();
            break_it(&mut s);
            match s.validate(3) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected an error, got {other:?}"),
            }
        }
        assert!(matches!(
            RingSpec::default().validate(0),
            Err(ConfigError::Invalid {
                field: "cluster.replication_factor",
                ..
            })
        ));
    }
}
