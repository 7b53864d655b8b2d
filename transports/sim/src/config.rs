//! The simulator's configuration: the network model, the disk model and the event budget.
//!
//! Every struct is read from TOML or JSON with unknown fields refused, every field has a
//! default (so a spec names only what it changes), and [`SimConfig::validate`] names the
//! offending field when a value makes no sense.

use kvlab_storage::{CrashOptions, StorageOptions};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// The largest latency any distribution may produce, in milliseconds (one hour of virtual
/// time). A named bound so that a typo such as `mean_ms = 1e300` is refused at validation
/// instead of overflowing the clock.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// A distribution of delays, in milliseconds of virtual time.
///
/// Used for network latency, client latency, fsync latency and extra delay rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LatencyDist {
    /// Always the same delay.
    Constant {
        /// The delay.
        ms: f64,
    },
    /// Uniform between `min_ms` and `max_ms` (inclusive).
    Uniform {
        /// The smallest delay.
        min_ms: f64,
        /// The largest delay.
        max_ms: f64,
    },
    /// Exponential with mean `mean_ms`, clamped into `[min_ms, max_ms]` so that the long
    /// tail is bounded and no delay is shorter than the speed of light allows.
    Exponential {
        /// The mean of the unclamped distribution.
        mean_ms: f64,
        /// Samples below this are raised to it.
        min_ms: f64,
        /// Samples above this are lowered to it.
        max_ms: f64,
    },
}

impl Default for LatencyDist {
    fn default() -> Self {
        LatencyDist::Constant { ms: 0.0 }
    }
}

/// Converts a validated millisecond value to nanoseconds. Non-finite or negative values
/// (which [`LatencyDist::validate`] refuses, but a fault rule built in code may carry)
/// become zero, and values are capped at [`MAX_LATENCY_MS`], so sampling never panics.
fn ms_to_ns(ms: f64) -> u64 {
    if ms.is_nan() || ms <= 0.0 {
        return 0;
    }
    let ms = ms.min(MAX_LATENCY_MS);
    (ms * 1e6).round() as u64
}

/// A uniform float in `[0, 1)` from 53 random bits: portable and exactly reproducible.
pub(crate) fn unit_f64(rng: &mut kvlab_types::Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Whether an event of probability `p` happens. Draws nothing when `p` is zero (or not a
/// number), so configurations without loss cost no randomness.
pub(crate) fn chance(rng: &mut kvlab_types::Rng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    unit_f64(rng) < p
}

impl LatencyDist {
    /// Draws one delay in nanoseconds. A constant draws no randomness.
    pub fn sample_ns(&self, rng: &mut kvlab_types::Rng) -> u64 {
        match *self {
            LatencyDist::Constant { ms } => ms_to_ns(ms),
            LatencyDist::Uniform { min_ms, max_ms } => {
                let (lo, hi) = (ms_to_ns(min_ms), ms_to_ns(max_ms));
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                let span = hi - lo;
                if span == 0 {
                    lo
                } else {
                    // Inclusive range by multiply-shift of a 64-bit draw: the bias is below
                    // span / 2^64 (< 2^-11 at MAX_LATENCY_MS), far below what a run observes.
                    let r = u128::from(rng.next_u64()) * u128::from(span + 1);
                    lo + (r >> 64) as u64
                }
            }
            LatencyDist::Exponential {
                mean_ms,
                min_ms,
                max_ms,
            } => {
                let u = unit_f64(rng);
                let mean = if mean_ms.is_finite() && mean_ms > 0.0 {
                    mean_ms
                } else {
                    0.0
                };
                let raw_ms = -mean * (1.0 - u).ln();
                let (lo, hi) = (ms_to_ns(min_ms), ms_to_ns(max_ms));
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                ms_to_ns(raw_ms).clamp(lo, hi)
            }
        }
    }

    /// Checks that every bound is finite, non-negative, at most [`MAX_LATENCY_MS`] and
    /// that `min_ms <= max_ms`; `field` names this distribution in the error.
    pub fn validate(&self, field: &str) -> Result<(), SimError> {
        let check = |name: &str, v: f64| -> Result<(), SimError> {
            if !v.is_finite() || v < 0.0 {
                return Err(SimError::invalid(
                    format!("{field}.{name}"),
                    format!("must be a finite number >= 0, got {v}"),
                ));
            }
            if v > MAX_LATENCY_MS {
                return Err(SimError::invalid(
                    format!("{field}.{name}"),
                    format!("must be at most MAX_LATENCY_MS = {MAX_LATENCY_MS}, got {v}"),
                ));
            }
            Ok(())
        };
        match *self {
            LatencyDist::Constant { ms } => check("ms", ms),
            LatencyDist::Uniform { min_ms, max_ms } => {
                check("min_ms", min_ms)?;
                check("max_ms", max_ms)?;
                if min_ms > max_ms {
                    return Err(SimError::invalid(
                        format!("{field}.min_ms"),
                        format!("min_ms ({min_ms}) is larger than max_ms ({max_ms})"),
                    ));
                }
                Ok(())
            }
            LatencyDist::Exponential {
                mean_ms,
                min_ms,
                max_ms,
            } => {
                check("mean_ms", mean_ms)?;
                check("min_ms", min_ms)?;
                check("max_ms", max_ms)?;
                if min_ms > max_ms {
                    return Err(SimError::invalid(
                        format!("{field}.min_ms"),
                        format!("min_ms ({min_ms}) is larger than max_ms ({max_ms})"),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Checks that a probability is a number in `[0, 1]`.
pub(crate) fn validate_probability(field: &str, p: f64) -> Result<(), SimError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(SimError::invalid(
            field,
            format!("must be a probability in [0, 1], got {p}"),
        ));
    }
    Ok(())
}

/// The network model between nodes, and between clients and nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// One-way latency of a node-to-node message (messages to self included).
    pub latency: LatencyDist,
    /// One-way latency between a client and the node it talks to (requests and replies).
    pub client_latency: LatencyDist,
    /// Probability that a node-to-node message is lost.
    pub loss_probability: f64,
    /// Probability that a node-to-node message is delivered twice (the copy draws its
    /// own latency).
    pub duplicate_probability: f64,
    /// Probability that a message gets an extra delay, uniform in
    /// `[0, reorder_window_ms]`, so that it overtakes or is overtaken by others.
    pub reorder_probability: f64,
    /// The largest extra delay of a reordered message.
    pub reorder_window_ms: f64,
    /// Probability that a node-to-node message is corrupted on the wire: it is encoded
    /// with the real peer frame codec (`kvlab-codec`, keyed with the run's cluster key),
    /// one random bit is flipped, and the receiver's decoder must reject it (counted in
    /// `SimStats::messages_dropped_corrupt`; the message is lost). A frame the decoder
    /// accepted would stop the run: it is a codec bug.
    pub corrupt_probability: f64,
    /// Probability that, besides a node-to-node message, an attacker without the
    /// cluster secret sends a forged copy to the same node: framed with a random wrong
    /// key and claiming a random member as sender. The receiver's decoder must reject it
    /// (counted in `SimStats::messages_dropped_forged`); it never reaches the protocol.
    pub forge_probability: f64,
    /// Bound on node-to-node messages on the wire (scheduled, held by a rule, or waiting
    /// for a paused node). A send beyond it is dropped and counted in
    /// `SimStats::messages_dropped_by_bound`.
    pub max_in_flight_messages: usize,
    /// Whether to add up `Message::wire_size` of every sent message into
    /// `SimStats::bytes_sent`. Off by default: encoding every message costs time.
    pub measure_bytes: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency: LatencyDist::Uniform {
                min_ms: 1.0,
                max_ms: 5.0,
            },
            client_latency: LatencyDist::Uniform {
                min_ms: 0.5,
                max_ms: 2.0,
            },
            loss_probability: 0.0,
            duplicate_probability: 0.0,
            reorder_probability: 0.0,
            reorder_window_ms: 10.0,
            corrupt_probability: 0.0,
            forge_probability: 0.0,
            max_in_flight_messages: 1_000_000,
            measure_bytes: false,
        }
    }
}

impl NetworkConfig {
    /// Checks every field; the error names `network.<field>`.
    pub fn validate(&self) -> Result<(), SimError> {
        self.latency.validate("network.latency")?;
        self.client_latency.validate("network.client_latency")?;
        validate_probability("network.loss_probability", self.loss_probability)?;
        validate_probability("network.duplicate_probability", self.duplicate_probability)?;
        validate_probability("network.reorder_probability", self.reorder_probability)?;
        validate_probability("network.corrupt_probability", self.corrupt_probability)?;
        validate_probability("network.forge_probability", self.forge_probability)?;
        LatencyDist::Constant {
            ms: self.reorder_window_ms,
        }
        .validate("network.reorder_window")?;
        if self.max_in_flight_messages == 0 {
            return Err(SimError::invalid(
                "network.max_in_flight_messages",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The simulated disk of every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskConfig {
    /// Time from a `Sync` effect to the moment its records are durable and the sends held
    /// behind it are released. Syncs of one node complete in the order they were issued.
    pub fsync_latency: LatencyDist,
    /// Probability that, at a crash, the last unsynced write that reached the disk is
    /// torn (only part of it survives; recovery cuts it off). Which unsynced writes
    /// reached the disk is a prefix of them, its length uniform in `0..=n`.
    pub tear_probability: f64,
    /// Options of every node's write-ahead log and snapshot store (fsync policy, segment
    /// size).
    pub storage: StorageOptions,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            // FINDINGS.md: fdatasync of a 4 KiB append has p50 0.33 ms, p99 7.8 ms.
            fsync_latency: LatencyDist::Exponential {
                mean_ms: 0.5,
                min_ms: 0.2,
                max_ms: 10.0,
            },
            tear_probability: 0.1,
            storage: StorageOptions::default(),
        }
    }
}

impl DiskConfig {
    /// Checks every field; the error names `disk.<field>`.
    pub fn validate(&self) -> Result<(), SimError> {
        self.fsync_latency.validate("disk.fsync_latency")?;
        validate_probability("disk.tear_probability", self.tear_probability)?;
        self.storage
            .validate()
            .map_err(|e| SimError::invalid(format!("disk.storage.{}", e.field), e.reason))?;
        Ok(())
    }

    /// The power-failure model handed to `SimFs::crash`.
    pub fn crash_options(&self) -> CrashOptions {
        CrashOptions {
            tear_probability: self.tear_probability,
        }
    }
}

/// Everything the simulator needs besides the seed, the node ids and the nodes' own
/// configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The network model.
    pub network: NetworkConfig,
    /// The disk model.
    pub disk: DiskConfig,
    /// Budget of processed events over the whole run; exceeding it stops
    /// [`crate::Sim::run_until`] with [`SimError::EventBudgetExhausted`], so a livelocked
    /// protocol cannot spin forever.
    pub max_events: u64,
    /// What every node's protocol sees as [`kvlab_types::Cx::log_shards`]: the logs a
    /// server with `server.workers` = this many would spread its groups over. The
    /// simulator keeps one log per node and applies effects in order, so only the
    /// protocol's own scoping and batching change; runs stay deterministic. 1 to
    /// [`MAX_LOG_SHARDS`].
    pub log_shards: usize,
}

/// The most log shards [`SimConfig::log_shards`] may name (as `server.workers`).
pub const MAX_LOG_SHARDS: usize = 16;

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            network: NetworkConfig::default(),
            disk: DiskConfig::default(),
            max_events: 100_000_000,
            log_shards: 1,
        }
    }
}

impl SimConfig {
    /// Checks the whole configuration; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), SimError> {
        self.network.validate()?;
        self.disk.validate()?;
        if self.max_events == 0 {
            return Err(SimError::invalid("max_events", "must be at least 1"));
        }
        if !(1..=MAX_LOG_SHARDS).contains(&self.log_shards) {
            return Err(SimError::invalid(
                "log_shards",
                format!("must be in [1, {MAX_LOG_SHARDS}], got {}", self.log_shards),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(dist: &LatencyDist, n: usize) -> Vec<u64> {
        let mut rng = kvlab_types::seeded_rng(3);
        (0..n).map(|_| dist.sample_ns(&mut rng)).collect()
    }

    #[test]
    fn constant_latency_is_exact_and_draws_nothing() {
        let mut rng = kvlab_types::seeded_rng(1);
        assert_eq!(
            LatencyDist::Constant { ms: 1.5 }.sample_ns(&mut rng),
            1_500_000
        );
        assert_eq!(rng.next_u64(), kvlab_types::seeded_rng(1).next_u64());
    }

    #[test]
    fn uniform_latency_stays_within_its_bounds_and_spans_them() {
        let d = LatencyDist::Uniform {
            min_ms: 1.0,
            max_ms: 2.0,
        };
        let s = samples(&d, 20_000);
        assert!(s.iter().all(|&v| (1_000_000..=2_000_000).contains(&v)));
        assert!(s.iter().any(|&v| v < 1_010_000) && s.iter().any(|&v| v > 1_990_000));
        let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
        assert!((mean / 1e6 - 1.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn exponential_latency_is_clamped_to_min_and_max() {
        let d = LatencyDist::Exponential {
            mean_ms: 5.0,
            min_ms: 1.0,
            max_ms: 3.0,
        };
        let s = samples(&d, 20_000);
        assert!(s.iter().all(|&v| (1_000_000..=3_000_000).contains(&v)));
        // P(x < 1) = 1 - e^-0.2 ≈ 18% land on the floor, P(x > 3) = e^-0.6 ≈ 55% on the cap.
        let at_min = s.iter().filter(|&&v| v == 1_000_000).count() as f64 / 20_000.0;
        let at_max = s.iter().filter(|&&v| v == 3_000_000).count() as f64 / 20_000.0;
        assert!((at_min - 0.181).abs() < 0.02, "floor share {at_min}");
        assert!((at_max - 0.549).abs() < 0.02, "cap share {at_max}");
    }

    #[test]
    fn exponential_latency_has_its_mean_when_the_clamps_are_wide() {
        let d = LatencyDist::Exponential {
            mean_ms: 2.0,
            min_ms: 0.0,
            max_ms: 1000.0,
        };
        let s = samples(&d, 50_000);
        let mean = s.iter().sum::<u64>() as f64 / s.len() as f64 / 1e6;
        assert!((mean - 2.0).abs() < 0.05, "mean {mean} ms");
    }

    #[test]
    fn nonsense_bounds_are_refused_by_validation_and_never_panic_when_sampled() {
        let bad = [
            LatencyDist::Constant { ms: f64::NAN },
            LatencyDist::Constant { ms: -1.0 },
            LatencyDist::Uniform {
                min_ms: 3.0,
                max_ms: 1.0,
            },
            LatencyDist::Exponential {
                mean_ms: f64::INFINITY,
                min_ms: 0.0,
                max_ms: 1.0,
            },
            LatencyDist::Constant { ms: 1e300 },
        ];
        for d in &bad {
            assert!(d.validate("x").is_err(), "{d:?}");
            let s = samples(d, 100);
            assert!(s.iter().all(|&v| v <= ms_to_ns(MAX_LATENCY_MS)), "{d:?}");
        }
    }

    #[test]
    fn default_config_is_valid() {
        SimConfig::default().validate().expect("defaults are valid");
    }
}
