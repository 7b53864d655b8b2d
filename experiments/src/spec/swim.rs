//! `[swim_experiment]`: what a `system = "swim"` run does besides the nemesis (slow
//! members), and the bounds its measurements must meet (see
//! [`crate::observe::swim`]).

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use super::FieldError;

/// Most members a spec may mark slow.
pub const MAX_SLOW_NODES: usize = 64;
/// Shortest sampling interval of the members' tables, ms: sampling costs `O(n)` to
/// `O(n²)` lookups, so it must not run at every simulated microsecond.
pub const MIN_SAMPLE_INTERVAL_MS: u64 = 10;

/// How a slow member is slow.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SlowMode {
    /// The whole process stops (`Sim::pause`): timers and messages wait together, so
    /// when it resumes it sees acks before the timeouts they beat.
    Pause,
    /// Its incoming messages are held (a `Hold` rule) while its timers keep running: it
    /// processes what others say late, as an overloaded process does (Lifeguard §II),
    /// so it misses acks and suspects healthy members.
    HoldIncoming,
}

/// The `[swim_experiment]` table: what a `system = "swim"` run does besides the
/// nemesis, and the bounds it must meet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwimExperimentSpec {
    /// Members that are slow: paused for `slow_pause_ms` out of every
    /// `slow_period_ms`, from `slow_from_s` to the end of the safety phase (Lifeguard's
    /// overloaded member, which answers late and misses its own acks).
    pub slow_nodes: Vec<NodeId>,
    /// How the slow members are slow.
    pub slow_mode: SlowMode,
    /// How long each pause of a slow member lasts, ms.
    pub slow_pause_ms: u64,
    /// A slow member is paused once per this period, ms.
    pub slow_period_ms: u64,
    /// When the slow members start being slow, seconds into the run.
    pub slow_from_s: f64,
    /// How often the runner reads the members' tables to time rejoins and convergence,
    /// ms (detection times come from events and are exact).
    pub sample_interval_ms: u64,
    /// Write the `member_joined` events of the initial joins (before
    /// `nemesis.start_after_s`) to `events.jsonl`. There are `n·(n−1)` of them; large
    /// clusters turn this off and the summary counts them instead.
    pub log_initial_joins: bool,
    /// Fail the run if more live members than this are declared dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_false_positives: Option<u64>,
    /// Fail the run if a crash takes longer than this to be known dead by every live
    /// member (or never is, before its restart), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_dead_everywhere_s: Option<f64>,
    /// Fail the run if a restarted member takes longer than this to be alive in every
    /// live member's table (or never is), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rejoin_s: Option<f64>,
    /// Fail the run if, after the heal, the cluster takes longer than this to reach one
    /// view, seconds (it must in any case within `time.liveness_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_converge_after_heal_s: Option<f64>,
}

impl Default for SwimExperimentSpec {
    fn default() -> Self {
        SwimExperimentSpec {
            slow_nodes: Vec::new(),
            slow_mode: SlowMode::HoldIncoming,
            slow_pause_ms: 800,
            slow_period_ms: 1_000,
            slow_from_s: 0.0,
            sample_interval_ms: 100,
            log_initial_joins: true,
            max_false_positives: None,
            max_dead_everywhere_s: None,
            max_rejoin_s: None,
            max_converge_after_heal_s: None,
        }
    }
}

impl SwimExperimentSpec {
    /// Checks every field for a cluster of `nodes` members; the error is the dotted
    /// field name and the reason.
    pub fn validate(&self, nodes: u32) -> Result<(), FieldError> {
        let bad = |field: &str, reason: String| {
            Err(FieldError {
                field: format!("swim_experiment.{field}"),
                reason,
            })
        };
        if self.slow_nodes.len() > MAX_SLOW_NODES {
            return bad(
                "slow_nodes",
                format!(
                    "at most {MAX_SLOW_NODES} (MAX_SLOW_NODES), got {}",
                    self.slow_nodes.len()
                ),
            );
        }
        if let Some(n) = self.slow_nodes.iter().find(|n| n.0 == 0 || n.0 > nodes) {
            return bad(
                "slow_nodes",
                format!("must be node ids in 1..={nodes}, got {}", n.0),
            );
        }
        if !self.slow_nodes.is_empty() {
            if self.slow_period_ms == 0 {
                return bad("slow_period_ms", "must be > 0".into());
            }
            if self.slow_pause_ms == 0 || self.slow_pause_ms >= self.slow_period_ms {
                return bad(
                    "slow_pause_ms",
                    format!(
                        "must be > 0 and < slow_period_ms ({}), got {}",
                        self.slow_period_ms, self.slow_pause_ms
                    ),
                );
            }
        }
        if !self.slow_from_s.is_finite() || self.slow_from_s < 0.0 {
            return bad(
                "slow_from_s",
                format!(
                    "must be a finite number of seconds >= 0, got {}",
                    self.slow_from_s
                ),
            );
        }
        if self.sample_interval_ms < MIN_SAMPLE_INTERVAL_MS {
            return bad(
                "sample_interval_ms",
                format!(
                    "must be >= {MIN_SAMPLE_INTERVAL_MS} (MIN_SAMPLE_INTERVAL_MS), got {}",
                    self.sample_interval_ms
                ),
            );
        }
        for (field, v) in [
            ("max_dead_everywhere_s", self.max_dead_everywhere_s),
            ("max_rejoin_s", self.max_rejoin_s),
            ("max_converge_after_heal_s", self.max_converge_after_heal_s),
        ] {
            if let Some(v) = v
                && (!v.is_finite() || v <= 0.0)
            {
                return bad(
                    field,
                    format!("must be a finite number of seconds > 0, got {v}"),
                );
            }
        }
        Ok(())
    }
}
