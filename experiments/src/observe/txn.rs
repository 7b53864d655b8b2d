//! [`TxnObserver`]: coordinator recovery in the composed node's two-phase commit
//! (design note wave 2 §5.2), from the typed [`NodeEvent::TxnStep`] events its replicas
//! report, for `summary.json`'s `txn_recovery`:
//!
//! * `in_doubt_ns` — per participant: from the first report that it applied the
//!   PREPARE (locks taken, vote YES) to the first report that it applied the decision
//!   (locks released);
//! * `coordinator_recovery_ns` — per crash of a gateway (`kill-gateway`, `crash`,
//!   `crash-leader`, …) that left prepared transactions behind: from the crash to the
//!   release of the last of those orphaned locks (transactions of that gateway prepared
//!   somewhere and undecided at the crash, and their participants that prepare later);
//! * `resolver_invocations` (a leader asked a home about a transaction prepared for
//!   `txn.resolve_after_ms`) and `resolver_aborts` (participants whose resolver asked
//!   and that then aborted);
//! * the recovery bound ([`recovery_bound_ns`]) and how many recoveries exceeded it,
//!   and orphaned locks never released by the end of the run.
//!
//! The step events are measurements only: they are left out of `events.jsonl`.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_types::{GroupId, NodeEvent, NodeId, Time, TxnRef, TxnStepKind};
use serde::Serialize;

use super::{Observer, ObserverReport};
use crate::cluster::Cluster;
use crate::events::{NemesisEvent, NemesisKind};

/// What the bound allows beyond `txn_ttl_ms + 2 × resolve_after_ms`: a node tick, a
/// Raft election where the crashed gateway led a participant's group, two Raft commits
/// (the home's Abort, the participant's) and the one-way delays between them.
pub const RECOVERY_SLACK_MS: u64 = 1_000;

/// How long orphaned locks may live after their coordinator crashed: the home's
/// `Pending` record expires at most `txn_ttl_ms` after the crash (its PREPARE was
/// proposed before); a participant's resolver asks every `resolve_after_ms`, so its
/// first question after the expiry comes within one more `resolve_after_ms`, plus one
/// retry for a question that met a leader change; then the home's Abort and the
/// participant's decision are two Raft commits ([`RECOVERY_SLACK_MS`] covers them). A
/// coordinator killed after the decision needs less: the first question already finds
/// `Committed`.
pub fn recovery_bound_ns(txn_ttl_ms: u64, resolve_after_ms: u64) -> u64 {
    (txn_ttl_ms + 2 * resolve_after_ms + RECOVERY_SLACK_MS) * 1_000_000
}

/// Percentiles of durations in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NsStats {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl NsStats {
    /// The percentiles of `samples` (any order); all zero when empty.
    pub fn of(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return NsStats::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        NsStats {
            count: n as u64,
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[n - 1],
        }
    }
}

/// `summary.json`'s `txn_recovery` (`system = "kvlab"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TxnRecoverySummary {
    /// Prepare applied → decision applied, per participant.
    pub in_doubt_ns: NsStats,
    /// Gateway crash → last orphaned lock released, per crash that orphaned any.
    pub coordinator_recovery_ns: NsStats,
    /// Crashes of a gateway that left prepared transactions behind.
    pub orphaning_crashes: u64,
    /// Orphaned participant locks (transaction × group) those crashes left.
    pub orphaned_locks: u64,
    /// Orphaned locks still held when the run ended.
    pub orphaned_locks_unreleased: u64,
    /// [`recovery_bound_ns`] of the spec's `[kvlab.txn]`.
    pub recovery_bound_ns: u64,
    /// Recoveries that took longer than the bound (other faults may delay a recovery:
    /// a partitioned home, a crashed participant).
    pub recoveries_over_bound: u64,
    /// Questions resolvers sent to homes.
    pub resolver_invocations: u64,
    /// Participants that aborted after their resolver asked.
    pub resolver_aborts: u64,
}

/// One crash of a gateway and the locks it orphaned.
#[derive(Debug)]
struct Orphaning {
    at: Time,
    gateway: NodeId,
    /// Its transactions that had prepared somewhere, undecided at the crash.
    txns: BTreeSet<TxnRef>,
    /// Their participants still holding locks.
    open: BTreeSet<(TxnRef, GroupId)>,
    /// When the last one released.
    last_release: Option<Time>,
    locks: u64,
}

/// Watches 2PC steps; see [the module docs](self).
#[derive(Debug)]
pub struct TxnObserver {
    prepared_at: BTreeMap<(TxnRef, GroupId), Time>,
    decided: BTreeMap<(TxnRef, GroupId), TxnStepKind>,
    in_doubt: Vec<u64>,
    asked: BTreeSet<(TxnRef, GroupId)>,
    invocations: u64,
    crashes: Vec<Orphaning>,
    recoveries: Vec<u64>,
    bound_ns: u64,
}

/// The faults that crash the node they name.
const CRASHING_FAULTS: [&str; 5] = [
    "crash",
    "crash_leader",
    "kill_gateway",
    "kill_permanently",
    "disk_corrupt",
];

impl TxnObserver {
    /// An observer for a run whose `[kvlab.txn]` has these timeouts.
    pub fn new(txn_ttl_ms: u64, resolve_after_ms: u64) -> Self {
        TxnObserver {
            prepared_at: BTreeMap::new(),
            decided: BTreeMap::new(),
            in_doubt: Vec::new(),
            asked: BTreeSet::new(),
            invocations: 0,
            crashes: Vec::new(),
            recoveries: Vec::new(),
            bound_ns: recovery_bound_ns(txn_ttl_ms, resolve_after_ms),
        }
    }

    fn on_prepared(&mut self, at: Time, key: (TxnRef, GroupId)) {
        if self.decided.contains_key(&key) || self.prepared_at.contains_key(&key) {
            return;
        }
        self.prepared_at.insert(key, at);
        for c in self.crashes.iter_mut() {
            if c.txns.contains(&key.0) && c.open.insert(key) {
                c.locks += 1;
            }
        }
    }

    fn on_decided(&mut self, at: Time, key: (TxnRef, GroupId), step: TxnStepKind) {
        let Some(prepared) = self.prepared_at.get(&key) else {
            return; // never prepared here: no lock to release
        };
        if self.decided.contains_key(&key) {
            return;
        }
        self.in_doubt
            .push(at.saturating_since(*prepared).as_nanos() as u64);
        self.decided.insert(key, step);
        for c in self.crashes.iter_mut() {
            if c.open.remove(&key) {
                c.last_release = Some(at);
                if c.open.is_empty() {
                    self.recoveries
                        .push(at.saturating_since(c.at).as_nanos() as u64);
                }
            }
        }
    }

    fn on_crash(&mut self, at: Time, gateway: NodeId) {
        let open: BTreeSet<(TxnRef, GroupId)> = (self.prepared_at.keys())
            .filter(|(t, _)| t.node == gateway)
            .filter(|k| !self.decided.contains_key(k))
            .copied()
            .collect();
        if open.is_empty() {
            return;
        }
        let txns = open.iter().map(|(t, _)| *t).collect();
        let locks = open.len() as u64;
        self.crashes.push(Orphaning {
            at,
            gateway,
            txns,
            open,
            last_release: None,
            locks,
        });
    }

    /// The summary so far.
    pub fn summary(&self) -> TxnRecoverySummary {
        let resolver_aborts = (self.asked.iter())
            .filter(|k| self.decided.get(k) == Some(&TxnStepKind::Aborted))
            .count() as u64;
        let unreleased = self.crashes.iter().map(|c| c.open.len() as u64).sum();
        TxnRecoverySummary {
            in_doubt_ns: NsStats::of(self.in_doubt.clone()),
            coordinator_recovery_ns: NsStats::of(self.recoveries.clone()),
            orphaning_crashes: self.crashes.len() as u64,
            orphaned_locks: self.crashes.iter().map(|c| c.locks).sum(),
            orphaned_locks_unreleased: unreleased,
            recovery_bound_ns: self.bound_ns,
            recoveries_over_bound: (self.recoveries.iter())
                .filter(|&&r| r > self.bound_ns)
                .count() as u64,
            resolver_invocations: self.invocations,
            resolver_aborts,
        }
    }

    /// The crashes that orphaned locks, for a person: gateway, time, locks, recovery.
    pub fn crash_lines(&self) -> Vec<String> {
        (self.crashes.iter())
            .map(|c| {
                let took = c.last_release.filter(|_| c.open.is_empty());
                format!(
                    "{} at {:.3} s: {} orphaned lock(s), {}",
                    c.gateway,
                    c.at.as_nanos() as f64 / 1e9,
                    c.locks,
                    match took {
                        Some(t) => format!("released after {} ms", ms_since(t, c.at)),
                        None => format!("{} never released", c.open.len()),
                    }
                )
            })
            .collect()
    }
}

fn ms_since(later: Time, earlier: Time) -> u128 {
    later.saturating_since(earlier).as_millis()
}

impl Observer for TxnObserver {
    fn keep_event(&mut self, _at: Time, event: &NodeEvent) -> bool {
        !matches!(event, NodeEvent::TxnStep { .. })
    }

    fn on_node_event(
        &mut self,
        _cluster: &dyn Cluster,
        at: Time,
        _node: NodeId,
        event: &NodeEvent,
    ) -> Result<(), super::Violation> {
        let NodeEvent::TxnStep {
            txn, group, step, ..
        } = event
        else {
            return Ok(());
        };
        let key = (*txn, *group);
        match step {
            TxnStepKind::Prepared => self.on_prepared(at, key),
            TxnStepKind::Committed | TxnStepKind::Aborted => self.on_decided(at, key, *step),
            TxnStepKind::ResolveAsked => {
                self.invocations += 1;
                self.asked.insert(key);
            }
        }
        Ok(())
    }

    fn on_nemesis_event(&mut self, _cluster: &dyn Cluster, at: Time, event: &NemesisEvent) {
        let crashing = event
            .fault
            .as_deref()
            .is_some_and(|f| CRASHING_FAULTS.contains(&f));
        if event.kind == NemesisKind::FaultStart
            && crashing
            && let Some(n) = event.node
        {
            self.on_crash(at, n);
        }
    }

    fn finish(&mut self, _cluster: &dyn Cluster, _end: Time) -> ObserverReport {
        ObserverReport {
            measured: "txn-recovery",
            txn: Some(self.summary()),
            ..ObserverReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(node: u32, seq: u64) -> TxnRef {
        TxnRef {
            node: NodeId(node),
            boot_epoch: 1,
            seq,
        }
    }

    fn ms(t: u64) -> Time {
        Time::from_millis(t)
    }

    #[test]
    fn in_doubt_runs_from_the_first_prepare_report_to_the_first_decision_report() {
        let mut o = TxnObserver::new(2_000, 1_000);
        let k = (txn(1, 1), GroupId(3));
        o.on_prepared(ms(10), k);
        o.on_prepared(ms(12), k); // a follower's report
        o.on_decided(ms(40), k, TxnStepKind::Committed);
        o.on_decided(ms(41), k, TxnStepKind::Committed);
        // A decision where nothing was prepared releases no lock.
        o.on_decided(ms(50), (txn(1, 2), GroupId(3)), TxnStepKind::Aborted);
        let s = o.summary();
        assert_eq!(s.in_doubt_ns.count, 1);
        assert_eq!(s.in_doubt_ns.max, 30_000_000);
    }

    #[test]
    fn a_gateway_crash_recovers_when_its_last_orphaned_lock_is_released() {
        let mut o = TxnObserver::new(2_000, 1_000);
        let (a, b) = (txn(2, 1), txn(3, 1));
        o.on_prepared(ms(10), (a, GroupId(1)));
        o.on_prepared(ms(10), (b, GroupId(1)));
        o.on_crash(ms(20), NodeId(2));
        // A participant of the orphaned txn prepares after the crash: orphaned too.
        o.on_prepared(ms(22), (a, GroupId(4)));
        o.on_decided(ms(30), (b, GroupId(1)), TxnStepKind::Committed);
        o.on_decided(ms(2_500), (a, GroupId(1)), TxnStepKind::Aborted);
        assert_eq!(o.summary().coordinator_recovery_ns.count, 0, "g4 holds");
        o.on_decided(ms(3_020), (a, GroupId(4)), TxnStepKind::Aborted);
        let s = o.summary();
        assert_eq!(s.coordinator_recovery_ns.count, 1);
        assert_eq!(s.coordinator_recovery_ns.max, 3_000_000_000);
        assert_eq!((s.orphaning_crashes, s.orphaned_locks), (1, 2));
        assert_eq!(s.orphaned_locks_unreleased, 0);
        assert_eq!(s.recovery_bound_ns, 5_000_000_000);
        assert_eq!(s.recoveries_over_bound, 0);
        // A crash of a node with nothing prepared orphans nothing.
        o.on_crash(ms(4_000), NodeId(5));
        assert_eq!(o.summary().orphaning_crashes, 1);
    }
}
