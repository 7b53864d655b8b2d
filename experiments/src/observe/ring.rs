//! [`RingObserver`] for `system = "kvlab"`: what the ring did during a run.
//!
//! From the nodes' typed events, on every backend:
//! * replicas per node over time (`replica_created` / `replica_destroyed`, kept as a set
//!   of `(node, group)`, so a restart that re-reports its replicas counts once);
//! * operators created, done, cancelled and in flight (`operator_*` events, which every
//!   meta replica reports: deduplicated by operator id);
//! * data moved (`snapshot_sent`: bytes of completed snapshot transfers).
//!
//! From inside the nodes, where the backend can show them (the simulator), sampled every
//! [`SAMPLE_INTERVAL_MS`]:
//! * per-group leaderless episodes (no up node leads the group), their p50/p99/max;
//! * under-replicated groups (fewer voters on up nodes than RF) over time, and when they
//!   last fell to zero;
//! * the directory invariant: the meta leader never records a configuration a group has
//!   not applied — a recorded epoch that stays above every up replica's applied epoch for
//!   longer than [`META_AHEAD_GRACE`], or the same epoch with other members, is a
//!   violation (`meta_directory`); and at quiescence (no
//!   operator running, every group led with no change in flight, reports fresh) meta's
//!   descriptors equal every group's applied configuration. The quiescent comparisons
//!   made are counted (`directory_checks`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kvlab_node::composed::{KvlabConfig, KvlabNode};
use kvlab_raft::Role;
use kvlab_ring::{VnodeId, group_vnode};
use kvlab_types::{GroupId, NodeEvent, NodeId, ReplicaCause, Time};
use serde::{Deserialize, Serialize};

use super::ring_balance::{self, BalanceEpisode, OperatorSteps, RateLimits, ReplicaChange};
use super::swim::{PropertyCheck, SecondsStats};
use super::{Observer, ObserverReport, Violation};
use crate::cluster::Cluster;
use crate::events::{NemesisEvent, NemesisKind, Phase, RunEvent};
use crate::nemesis::fault_name;
use crate::spec::FaultKind;
use crate::spec::ring::RingExperimentSpec;

/// How often the observer samples the nodes (simulated milliseconds).
pub const SAMPLE_INTERVAL_MS: u64 = 100;
/// Timeline points kept at most (a long run is thinned to this many).
pub const MAX_TIMELINE_POINTS: usize = 2_000;

/// The ring's timelines, for plots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RingTimeline {
    /// Sample times, simulated seconds.
    pub t_s: Vec<f64>,
    /// Replicas per node at each sample (node name → counts).
    pub replicas: BTreeMap<String, Vec<u32>>,
    /// Operators in flight at each sample.
    pub operators_inflight: Vec<u32>,
    /// Under-replicated groups at each sample (simulator only; empty otherwise).
    pub under_replicated: Vec<u32>,
}

/// What `summary.json` says about the ring.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RingSummary {
    /// P.
    pub vnodes: u32,
    /// RF.
    pub replication_factor: u32,
    /// Operators created (distinct ids).
    pub operators_created: u64,
    /// Operators that finished every step.
    pub operators_done: u64,
    /// Operators cancelled.
    pub operators_cancelled: u64,
    /// Operators done, by kind (`add-replica`, `replace-down`, `drain-node`,
    /// `rebalance`, `transfer-leader`, `cleanup`).
    pub operators_done_by_kind: BTreeMap<String, u64>,
    /// The most operators in flight at once.
    pub operators_inflight_max: u64,
    /// When the last operator finished (simulated seconds), if any did.
    pub last_operator_done_s: Option<f64>,
    /// Completed snapshot transfers.
    pub snapshots_sent: u64,
    /// Their bytes: data moved between nodes.
    pub moved_bytes: u64,
    /// The part of `moved_bytes` that filled new replicas (the first snapshot a replica
    /// created by a move received): what a placement change costs. The rest caught up
    /// followers that fell behind a leader's log compaction.
    #[serde(default)]
    pub moved_bytes_new_replicas: u64,
    /// Bytes of all vnodes' state machines at the end (one replica each): `D`.
    pub data_bytes: Option<u64>,
    /// Replicas per node at the end, for the nodes up at the end (a node lost for good
    /// or never joined is left out).
    pub replicas_final: BTreeMap<String, u32>,
    /// Leaderless episodes of a group, in seconds (simulator only).
    pub leaderless_s: Option<SecondsStats>,
    /// The most groups under-replicated at once (simulator only).
    pub under_replicated_max: Option<u32>,
    /// Under-replicated groups at the end (simulator only).
    pub under_replicated_final: Option<u32>,
    /// When under-replication last fell to zero (simulated seconds), if it ever rose.
    pub under_replicated_cleared_s: Option<f64>,
    /// Routing redirects the gateways followed (simulator only).
    pub redirects: Option<u64>,
    /// Quiescent moments at which meta's directory was compared with every group.
    pub directory_checks: u64,
    /// Replicas created by moves (on a node that did not hold the vnode before).
    pub replicas_moved: u64,
    /// Why wanted operators waited, by reason (`node_add_limit`, `inflight_cap`,
    /// `anti_thrash`, …): one count per wanted operator per scheduling round, from the
    /// meta leader's scheduler at the end (its term only).
    #[serde(default)]
    pub held: BTreeMap<String, u64>,
    /// Per membership change (join, drain, node killed for good): how long until the
    /// replicas stopped moving, against the rate limits' prediction
    /// ([`super::ring_balance`]).
    #[serde(default)]
    pub balance: Vec<BalanceEpisode>,
    /// The `[ring_experiment]` bounds and whether the run met them.
    pub checks: Vec<PropertyCheck>,
    /// Timelines.
    pub timeline: RingTimeline,
}

/// How long meta's directory may show a vnode at an epoch no up replica has applied.
/// It happens legitimately: a leader that removes itself applies the change, reports it
/// to meta and is then destroyed, while a partition keeps the remaining replicas from
/// learning that the entry committed. Once the partition heals (faults here last
/// seconds) they apply it. A directory that invents a configuration stays ahead for good.
pub const META_AHEAD_GRACE: Duration = Duration::from_secs(10);

/// Watches the ring. See [the module docs](self).
#[derive(Debug)]
pub struct RingObserver {
    expect: RingExperimentSpec,
    replicas_moved: u64,
    rf: u32,
    vnodes: u32,
    next_sample: Time,
    hosted: BTreeSet<(NodeId, GroupId)>,
    created: BTreeSet<u64>,
    kinds: BTreeMap<u64, String>,
    done: BTreeSet<u64>,
    cancelled: BTreeSet<u64>,
    inflight_max: u64,
    last_done: Option<Time>,
    snapshots: u64,
    moved_bytes: u64,
    moved_bytes_new: u64,
    /// Replicas created by a move that have not received their first snapshot yet.
    awaiting_snapshot: BTreeSet<(NodeId, GroupId)>,
    /// Per group: when its current leaderless episode began.
    leaderless_since: BTreeMap<VnodeId, Time>,
    leaderless_episodes: Vec<f64>,
    /// Per vnode: since when meta's directory is ahead of every up replica.
    meta_ahead_since: BTreeMap<VnodeId, Time>,
    under_max: u32,
    under_last: u32,
    under_cleared: Option<Time>,
    sampled_inside: bool,
    directory_checks: u64,
    timeline: RingTimeline,
    nodes: Vec<NodeId>,
    limits: RateLimits,
    /// Membership changes the nemesis made (join, drain, kill for good), in order.
    membership_changes: Vec<(Time, String)>,
    /// Every replica created or removed, once each.
    replica_changes: Vec<ReplicaChange>,
    /// Replica-moving operators created, with their step counts.
    operator_steps: Vec<OperatorSteps>,
}

impl RingObserver {
    /// An observer of a run of `config` over `nodes` nodes, sampling from `start`.
    pub fn new(config: &KvlabConfig, expect: &RingExperimentSpec, nodes: u32, start: Time) -> Self {
        RingObserver {
            expect: expect.clone(),
            replicas_moved: 0,
            rf: config.replication_factor,
            vnodes: config.ring.vnode_count,
            next_sample: start,
            hosted: BTreeSet::new(),
            created: BTreeSet::new(),
            kinds: BTreeMap::new(),
            done: BTreeSet::new(),
            cancelled: BTreeSet::new(),
            inflight_max: 0,
            last_done: None,
            snapshots: 0,
            moved_bytes: 0,
            moved_bytes_new: 0,
            awaiting_snapshot: BTreeSet::new(),
            leaderless_since: BTreeMap::new(),
            leaderless_episodes: Vec::new(),
            meta_ahead_since: BTreeMap::new(),
            under_max: 0,
            under_last: 0,
            under_cleared: None,
            sampled_inside: false,
            directory_checks: 0,
            timeline: RingTimeline::default(),
            nodes: (1..=nodes).map(NodeId).collect(),
            limits: RateLimits::of(config),
            membership_changes: Vec::new(),
            replica_changes: Vec::new(),
            operator_steps: Vec::new(),
        }
    }

    fn inflight(&self) -> u64 {
        self.created.len() as u64 - (self.done.len() + self.cancelled.len()) as u64
    }

    fn replicas_of(&self, n: NodeId) -> u32 {
        self.hosted.iter().filter(|(m, _)| *m == n).count() as u32
    }

    /// Samples the nodes' insides: leaders, under-replication, the directory invariant.
    fn sample_inside(
        &mut self,
        cluster: &dyn Cluster,
        now: Time,
    ) -> Result<Option<u32>, Violation> {
        let nodes: Vec<(NodeId, &KvlabNode)> = self
            .nodes
            .iter()
            .filter(|&&n| cluster.is_up(n))
            .filter_map(|&n| Some((n, cluster.protocol(n)?.downcast_ref::<KvlabNode>()?)))
            .collect();
        let Some(layout) = nodes.first().map(|(_, p)| p.layout()) else {
            return Ok(None);
        };
        self.sampled_inside = true;
        let mut under = 0u32;
        let mut quiescent = true;
        for v in layout.vnodes() {
            let leads = nodes.iter().any(|(n, p)| {
                p.raft(v).is_some_and(|r| r.role() == Role::Leader)
                    && p.is_member_of(v)
                    && cluster.is_up(*n)
            });
            match (leads, self.leaderless_since.get(&v).copied()) {
                (false, None) => {
                    self.leaderless_since.insert(v, now);
                }
                (true, Some(since)) => {
                    self.leaderless_since.remove(&v);
                    self.leaderless_episodes
                        .push(now.saturating_since(since).as_secs_f64());
                }
                _ => {}
            }
            // The newest applied configuration any replica holds.
            let newest = nodes
                .iter()
                .filter_map(|(_, p)| p.replica_set(v))
                .max_by_key(|s| s.conf_epoch);
            let live_voters = newest.as_ref().map_or(0, |s| {
                s.voters.iter().filter(|n| cluster.is_up(**n)).count()
            });
            if live_voters < self.rf as usize {
                under += 1;
            }
            quiescent &= leads;
        }
        self.check_directory(now, &nodes, quiescent)?;
        Ok(Some(under))
    }

    /// The directory invariant (see the module docs).
    fn check_directory(
        &mut self,
        now: Time,
        nodes: &[(NodeId, &KvlabNode)],
        quiescent: bool,
    ) -> Result<(), Violation> {
        let Some((meta_node, state)) = nodes.iter().find_map(|(n, p)| {
            let leads = p.meta_raft().is_some_and(|r| r.role() == Role::Leader);
            leads.then(|| p.meta_state().map(|s| (*n, s))).flatten()
        }) else {
            return Ok(());
        };
        let running = state.operators().values().any(|o| o.is_running());
        let mut all_equal = true;
        for (v, rec) in state.descriptors() {
            let recorded = &rec.descriptor.replicas;
            let applied: Vec<kvlab_ring::ReplicaSet> = nodes
                .iter()
                .filter_map(|(_, p)| p.replica_set(*v))
                .collect();
            let newest = applied.iter().map(|s| s.conf_epoch).max();
            let Some(newest) = newest else {
                all_equal = false;
                continue;
            };
            // Groups may have moved on since their last report; meta may be ahead only
            // briefly (see META_AHEAD_GRACE).
            if recorded.conf_epoch > newest {
                let since = *self.meta_ahead_since.entry(*v).or_insert(now);
                if now.saturating_since(since) > META_AHEAD_GRACE {
                    return Err(Violation {
                        node: meta_node,
                        invariant: "meta_directory".into(),
                        detail: format!(
                            "meta records {v} at epoch {} but no up replica applied beyond {} for {} ms",
                            recorded.conf_epoch.0,
                            newest.0,
                            now.saturating_since(since).as_millis()
                        ),
                    });
                }
            } else {
                self.meta_ahead_since.remove(v);
            }
            if let Some(s) = applied.iter().find(|s| s.conf_epoch == recorded.conf_epoch)
                && !s.same_members(recorded)
            {
                return Err(Violation {
                    node: meta_node,
                    invariant: "meta_directory".into(),
                    detail: format!(
                        "meta records {v} at epoch {} as {recorded:?}, the group applied {s:?}",
                        recorded.conf_epoch.0
                    ),
                });
            }
            all_equal &= recorded.conf_epoch == newest;
        }
        if quiescent && !running && all_equal {
            self.directory_checks += 1;
        }
        Ok(())
    }

    fn record_point(&mut self, now: Time, under: Option<u32>) {
        if self.timeline.t_s.len() >= MAX_TIMELINE_POINTS {
            return;
        }
        self.timeline.t_s.push(now.as_secs_f64());
        for n in self.nodes.clone() {
            let c = self.replicas_of(n);
            self.timeline
                .replicas
                .entry(n.to_string())
                .or_default()
                .push(c);
        }
        self.timeline
            .operators_inflight
            .push(self.inflight() as u32);
        if let Some(u) = under {
            self.timeline.under_replicated.push(u);
        }
    }
}

impl Observer for RingObserver {
    fn next_wakeup(&self) -> Option<Time> {
        Some(self.next_sample)
    }

    fn on_node_event(
        &mut self,
        _cluster: &dyn Cluster,
        at: Time,
        node: NodeId,
        event: &NodeEvent,
    ) -> Result<(), Violation> {
        match event {
            NodeEvent::ReplicaCreated { group, cause } if group_vnode(*group).is_some() => {
                if self.hosted.insert((node, *group)) {
                    self.replica_changes.push((at, node, 1));
                }
                if *cause == ReplicaCause::Contacted {
                    self.replicas_moved += 1;
                    self.awaiting_snapshot.insert((node, *group));
                }
            }
            NodeEvent::ReplicaDestroyed { group, .. } if self.hosted.remove(&(node, *group)) => {
                self.replica_changes.push((at, node, -1));
            }
            NodeEvent::OperatorCreated {
                operator,
                operator_kind,
                steps,
                ..
            } => {
                if !self.created.contains(operator) && moves_replicas(operator_kind) {
                    self.operator_steps.push((at, steps.len()));
                }
                self.created.insert(*operator);
                self.kinds.insert(*operator, operator_kind.clone());
                self.inflight_max = self.inflight_max.max(self.inflight());
            }
            NodeEvent::OperatorAdvanced {
                operator,
                done: true,
                ..
            } if self.done.insert(*operator) => {
                self.last_done = Some(at);
            }
            NodeEvent::OperatorCancelled { operator, .. } => {
                self.cancelled.insert(*operator);
            }
            NodeEvent::SnapshotSent {
                bytes, group, to, ..
            } => {
                self.snapshots += 1;
                self.moved_bytes += bytes;
                if self.awaiting_snapshot.remove(&(*to, *group)) {
                    self.moved_bytes_new += bytes;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_wakeup(
        &mut self,
        cluster: &mut dyn Cluster,
        now: Time,
        _events: &mut Vec<RunEvent>,
    ) -> Result<(), Violation> {
        if now < self.next_sample {
            return Ok(());
        }
        self.next_sample = now + Duration::from_millis(SAMPLE_INTERVAL_MS);
        let under = self.sample_inside(&*cluster, now)?;
        if let Some(u) = under {
            self.under_max = self.under_max.max(u);
            if u == 0 && self.under_last > 0 {
                self.under_cleared = Some(now);
            }
            self.under_last = u;
        }
        self.record_point(now, under);
        Ok(())
    }

    fn on_nemesis_event(&mut self, _cluster: &dyn Cluster, at: Time, event: &NemesisEvent) {
        // The permanent kinds are the membership changes (join, drain, kill for good).
        let membership = [
            FaultKind::Join,
            FaultKind::Drain,
            FaultKind::KillPermanently,
        ]
        .into_iter()
        .find(|k| event.fault.as_deref() == Some(fault_name(*k).as_str()));
        if event.kind == NemesisKind::FaultStart
            && let (Some(kind), Some(node)) = (membership, event.node)
        {
            let name = kind.spec_name();
            // Changes made at one instant (three joins at once) are one episode.
            match self.membership_changes.last_mut() {
                Some((t, what)) if *t == at => what.push_str(&format!(", {name} {node}")),
                _ => self.membership_changes.push((at, format!("{name} {node}"))),
            }
        }
    }

    fn on_phase(
        &mut self,
        _cluster: &mut dyn Cluster,
        _at: Time,
        _phase: Phase,
        _events: &mut Vec<RunEvent>,
    ) {
    }

    fn finish(&mut self, cluster: &dyn Cluster, end: Time) -> ObserverReport {
        let nodes: Vec<&KvlabNode> = self
            .nodes
            .iter()
            .filter_map(|&n| cluster.protocol(n)?.downcast_ref::<KvlabNode>())
            .collect();
        let data_bytes = nodes.first().map(|p| {
            p.layout()
                .vnodes()
                .filter_map(|v| nodes.iter().find_map(|q| q.image_bytes(v)))
                .sum()
        });
        let redirects = (!nodes.is_empty()).then(|| nodes.iter().map(|p| p.redirects()).sum());
        let held = nodes
            .iter()
            .find_map(|p| p.scheduler_counters())
            .map(|c| c.held.iter().map(|(k, v)| (k.to_string(), *v)).collect())
            .unwrap_or_default();
        let mut episodes = self.leaderless_episodes.clone();
        episodes.extend(
            self.leaderless_since
                .values()
                .map(|since| end.saturating_since(*since).as_secs_f64()),
        );
        let inside = self.sampled_inside;
        let mut summary = RingSummary {
            vnodes: self.vnodes,
            replication_factor: self.rf,
            operators_created: self.created.len() as u64,
            operators_done: self.done.len() as u64,
            operators_cancelled: self.cancelled.len() as u64,
            operators_done_by_kind: self.done.iter().fold(BTreeMap::new(), |mut m, id| {
                let kind = self.kinds.get(id).cloned().unwrap_or_default();
                *m.entry(kind).or_insert(0) += 1;
                m
            }),
            operators_inflight_max: self.inflight_max,
            last_operator_done_s: self.last_done.map(Time::as_secs_f64),
            snapshots_sent: self.snapshots,
            moved_bytes: self.moved_bytes,
            moved_bytes_new_replicas: self.moved_bytes_new,
            data_bytes,
            replicas_final: self
                .nodes
                .iter()
                .filter(|&&n| cluster.is_up(n))
                .map(|&n| (n.to_string(), self.replicas_of(n)))
                .collect(),
            leaderless_s: inside.then(|| SecondsStats::of(&episodes)),
            under_replicated_max: inside.then_some(self.under_max),
            under_replicated_final: inside.then_some(self.under_last),
            under_replicated_cleared_s: self.under_cleared.map(Time::as_secs_f64),
            redirects,
            directory_checks: self.directory_checks,
            replicas_moved: self.replicas_moved,
            held,
            balance: ring_balance::episodes(
                &self.membership_changes,
                &self.replica_changes,
                &self.operator_steps,
                self.limits,
                end,
            ),
            checks: Vec::new(),
            timeline: std::mem::take(&mut self.timeline),
        };
        summary.checks = property_checks(&self.expect, &summary);
        ObserverReport {
            measured: "ring",
            property_failed: !summary.checks.iter().all(|c| c.ok),
            ring: Some(summary),
            ..ObserverReport::default()
        }
    }
}

/// The operator kinds that move replicas (every kind but `transfer-leader`).
fn moves_replicas(kind: &str) -> bool {
    kind != "transfer-leader"
}

/// Checks the `[ring_experiment]` bounds against a run's ring measurements. The bounds
/// on what only the simulator can see inside the nodes (under-replication, directory
/// checks) are left out on real nodes, where nothing measured them.
pub fn property_checks(x: &RingExperimentSpec, s: &RingSummary) -> Vec<PropertyCheck> {
    let inside = s.leaderless_s.is_some();
    let only_inside = |bound: Option<u64>| bound.filter(|_| inside);
    let mut checks = Vec::new();
    let mut at_most = |name: &str, bound: Option<u64>, value: Option<u64>| {
        if let Some(b) = bound {
            checks.push(PropertyCheck {
                name: name.into(),
                bound: b as f64,
                ok: value.is_some_and(|v| v <= b),
                value: value.map(|v| v as f64),
            });
        }
    };
    at_most(
        "max_replicas_moved",
        x.max_replicas_moved,
        Some(s.replicas_moved),
    );
    at_most(
        "max_operators_unfinished",
        x.max_operators_unfinished,
        Some(s.operators_created - s.operators_done - s.operators_cancelled),
    );
    at_most(
        "max_under_replicated_final",
        only_inside(x.max_under_replicated_final),
        s.under_replicated_final.map(u64::from),
    );
    let moving: u64 = s
        .operators_done_by_kind
        .iter()
        .filter(|(k, _)| moves_replicas(k))
        .map(|(_, n)| n)
        .sum();
    for (name, bound, value) in [
        (
            "min_replica_operators_done",
            x.min_replica_operators_done,
            moving,
        ),
        (
            "min_directory_checks",
            only_inside(x.min_directory_checks),
            s.directory_checks,
        ),
    ] {
        if let Some(b) = bound {
            checks.push(PropertyCheck {
                name: name.into(),
                bound: b as f64,
                ok: value >= b,
                value: Some(value as f64),
            });
        }
    }
    checks
}
