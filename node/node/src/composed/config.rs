//! [`KvlabConfig`]: the composed node's configuration, the same on every node.

use kvlab_raft::RaftConfig;
use kvlab_ring::config::{
    MembershipConfig, MetaConfig, RingConfig, SchedulerConfig, SnapshotConfig,
};
use kvlab_ring::{ConfigError, PlacementBug, RingLayout, RingSpec};
use kvlab_swim::SwimConfig;
use kvlab_types::{MAX_REQUEST_BYTES, NodeId};
use serde::{Deserialize, Serialize};

use crate::raft_kv::ReadMode;

/// The most attempts a gateway makes to route one request (refusals with hints); past
/// it the client is told `Unavailable`.
pub const MAX_ROUTE_ATTEMPTS: u32 = 16;

/// Configuration of the composed `kvlab` system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvlabConfig {
    /// Replicas per vnode (RF).
    pub replication_factor: u32,
    /// The nodes that form the cluster at boot (they hold the initial placement and
    /// seed SWIM); every other node of the run is a joiner. Empty: every node.
    pub initial_members: Vec<NodeId>,
    /// `[ring]`: the number of vnodes, the key hash, the placement strategy.
    pub ring: RingConfig,
    /// `[meta]`: the metadata group's voters and intervals.
    pub meta: MetaConfig,
    /// `[membership]`: when a node counts as suspect, down, replaced.
    pub membership: MembershipConfig,
    /// `[scheduler]`: operator limits, rates, rebalancing, the conf-change mode.
    pub scheduler: SchedulerConfig,
    /// `[snapshot]`: data movement limits.
    pub snapshot: SnapshotConfig,
    /// The placement teaching bug: `none` | `remove-before-add` |
    /// `two-voters-without-joint` | `skip-epoch-check`.
    pub placement_bug: PlacementBug,
    /// Raft tuning of every group (vnodes and metadata). The default heartbeats every 3
    /// ticks (30 ms) with elections after 15–30 ticks, not Raft's single-group default
    /// of a heartbeat per tick: a node hosts dozens of groups, and per-tick heartbeats
    /// made them most of its work (5 nodes × 64 groups: 16 s of wall time per 70
    /// simulated seconds with per-tick heartbeats).
    pub raft: RaftConfig,
    /// SWIM membership and failure detection. `seeds` empty: the three lowest
    /// initial members.
    pub swim: SwimConfig,
    /// Real time between two Raft ticks.
    pub tick_interval_ms: u64,
    /// How long a vnode leader waits for a proposal to apply (or a read to be served)
    /// before answering `Indeterminate` (writes) or `Unavailable` (reads).
    pub request_timeout_ms: u64,
    /// How long a gateway routes one request; then a write's outcome is unknown
    /// (`Indeterminate`) and a read fails. An attempt silent for a quarter of it
    /// (`route::ATTEMPTS_PER_ROUTE_TIMEOUT`) is tried again at another replica.
    pub route_timeout_ms: u64,
    /// Attempts per request at most (each after a refusal that names where to go).
    pub max_route_attempts: u32,
    /// Pause before retrying after a refusal that names no leader (an election).
    pub route_backoff_ms: u64,
    /// How reads are served.
    pub read_mode: ReadMode,
    /// Compact a group's log into a snapshot every this many applied entries (0: never).
    pub snapshot_every_entries: u64,
    /// `[txn]`: the transaction layer (kvlab-txn's knobs, design note wave 2 §7).
    pub txn: kvlab_txn::TxnConfig,
    /// The transaction teaching bug (`faults.bugs.txn` of the design note): `none` |
    /// `no-read-locks` | `release-before-decision` | `writes-at-prepare` |
    /// `commit-on-partial-votes` | `no-decision-record` | `resolver-commits-pending` |
    /// `no-finished-marker`.
    pub txn_bug: kvlab_txn::TxnBug,
}

impl Default for KvlabConfig {
    fn default() -> Self {
        KvlabConfig {
            replication_factor: 3,
            initial_members: Vec::new(),
            ring: RingConfig::default(),
            meta: MetaConfig::default(),
            membership: MembershipConfig::default(),
            scheduler: SchedulerConfig::default(),
            snapshot: SnapshotConfig::default(),
            placement_bug: PlacementBug::None,
            raft: RaftConfig {
                heartbeat_ticks: 3,
                election_ticks: 15,
                ..RaftConfig::default()
            },
            swim: SwimConfig::default(),
            tick_interval_ms: 10,
            request_timeout_ms: 1_000,
            route_timeout_ms: 1_500,
            max_route_attempts: 8,
            route_backoff_ms: 50,
            read_mode: ReadMode::ReadIndex,
            snapshot_every_entries: 1_000,
            txn: kvlab_txn::TxnConfig::default(),
            txn_bug: kvlab_txn::TxnBug::None,
        }
    }
}

/// A field of [`KvlabConfig`] that does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid kvlab config: field `{field}`: {reason}")]
pub struct KvlabConfigError {
    /// The field (dotted path).
    pub field: String,
    /// Why.
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> KvlabConfigError {
    KvlabConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl KvlabConfig {
    /// The initial members: [`KvlabConfig::initial_members`], or every peer; sorted.
    pub fn initial(&self, peers: &[NodeId]) -> Vec<NodeId> {
        let mut v = if self.initial_members.is_empty() {
            peers.to_vec()
        } else {
            self.initial_members.clone()
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The ring's sections as kvlab-ring takes them.
    pub fn ring_spec(&self) -> RingSpec {
        RingSpec {
            ring: self.ring.clone(),
            meta: self.meta.clone(),
            membership: self.membership.clone(),
            scheduler: self.scheduler.clone(),
            snapshot: self.snapshot.clone(),
            placement_bug: self.placement_bug,
        }
    }

    /// The ring layout (P vnodes).
    pub fn layout(&self) -> Result<RingLayout, KvlabConfigError> {
        self.ring_spec()
            .layout()
            .map_err(|e| bad("ring.vnode_count", e.to_string()))
    }

    /// Checks every field against the cluster's nodes, naming the first bad one.
    pub fn validate(&self, peers: &[NodeId]) -> Result<(), KvlabConfigError> {
        let rf = self.replication_factor as usize;
        self.ring_spec()
            .validate(rf)
            .map_err(|ConfigError::Invalid { field, reason }| bad(field, reason))?;
        self.raft
            .validate()
            .map_err(|e| bad("raft", e.to_string()))?;
        if self.raft.max_entry_bytes < MAX_REQUEST_BYTES {
            return Err(bad(
                "raft.max_entry_bytes",
                format!("must hold the largest valid request: at least {MAX_REQUEST_BYTES}"),
            ));
        }
        self.swim
            .validate()
            .map_err(|e| bad("swim", e.to_string()))?;
        self.txn
            .validate()
            .map_err(|e| bad(&format!("txn.{}", e.field), e.reason))?;
        for (field, v) in [
            ("tick_interval_ms", self.tick_interval_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("route_timeout_ms", self.route_timeout_ms),
            ("route_backoff_ms", self.route_backoff_ms),
        ] {
            if v == 0 {
                return Err(bad(field, "must be positive"));
            }
        }
        if self.max_route_attempts == 0 || self.max_route_attempts > MAX_ROUTE_ATTEMPTS {
            return Err(bad(
                "max_route_attempts",
                format!("must be in 1..={MAX_ROUTE_ATTEMPTS}"),
            ));
        }
        let initial = self.initial(peers);
        if let Some(n) = initial.iter().find(|n| !peers.contains(n)) {
            return Err(bad(
                "initial_members",
                format!("{n} is not a node of the cluster {peers:?}"),
            ));
        }
        if initial.len() < rf {
            return Err(bad(
                "initial_members",
                format!(
                    "{} initial members cannot hold {rf} replicas per vnode",
                    initial.len()
                ),
            ));
        }
        if let Some(n) = self.meta.voters.iter().find(|n| !initial.contains(n)) {
            return Err(bad(
                "meta.voters",
                format!("{n} is not an initial member {initial:?}"),
            ));
        }
        Ok(())
    }

    /// `[txn]` with the teaching bug copied in, as kvlab-txn takes it.
    pub fn txn_config(&self) -> kvlab_txn::TxnConfig {
        kvlab_txn::TxnConfig {
            bug: self.txn_bug,
            ..self.txn.clone()
        }
    }

    /// Whether the `two-voters-without-joint` teaching bug is on: vnode groups then let
    /// two configuration changes be in flight at once.
    pub(crate) fn swaps_voters(&self) -> bool {
        self.placement_bug == PlacementBug::TwoVotersWithoutJoint
    }
}
