//! `[txn]`: the knobs of design note §7, validated once.

use serde::{Deserialize, Serialize};

use crate::bugs::TxnBug;
use crate::locks::ConflictPolicy;

/// How multi-group read-only transactions run (`txn.read_only`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadOnlyMode {
    /// Through the same PREPARE with shared locks, then a release. The only mode built.
    #[default]
    Locking,
}

/// The transaction layer's configuration (`[txn]`), plus the broken variant
/// (`faults.bugs.txn`, copied here by the node). Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TxnConfig {
    /// `"2pl-2pc"`, the only protocol built.
    pub protocol: String,
    /// NO_WAIT or wait-die.
    pub conflict: ConflictPolicy,
    /// Wait-die only: the most PREPAREs waiting behind one key.
    pub lock_wait_queue_max: usize,
    /// Run a transaction that touches one group as one `Execute1Pc` entry.
    pub one_pc: bool,
    /// How multi-group read-only transactions run.
    pub read_only: ReadOnlyMode,
    /// How long a `Pending` record lives before a resolver may abort it.
    pub txn_ttl_ms: u64,
    /// How long a participant holds a prepared transaction before asking the home.
    pub resolve_after_ms: u64,
    /// How long the coordinator waits for votes before aborting.
    pub prepare_timeout_ms: u64,
    /// How often the coordinator resends an unanswered request.
    pub decision_retry_ms: u64,
    /// How many times the coordinator sends one decision before it gives up (the client
    /// gets `info` if the home never answered; resolvers finish the rest). Not in the
    /// design note's §7: added because every retry loop needs a bound.
    pub decision_retries_max: u32,
    /// The most distinct keys one transaction may touch.
    pub max_keys_per_txn: usize,
    /// The most transactions one gateway coordinates at once (enforced by the node).
    pub max_inflight_per_gateway: usize,
    /// The most transactions one group remembers (records, finished markers, prepared
    /// and waiting ones); no GC in wave 2, reaching it is a typed refusal.
    pub records_max: usize,
    /// The broken variant switched on, if any. Not a `[txn]` field: the node copies it
    /// from `faults.bugs.txn`.
    #[serde(skip)]
    pub bug: TxnBug,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            protocol: "2pl-2pc".to_string(),
            conflict: ConflictPolicy::NoWait,
            lock_wait_queue_max: 8,
            one_pc: true,
            read_only: ReadOnlyMode::Locking,
            txn_ttl_ms: 3000,
            resolve_after_ms: 1000,
            prepare_timeout_ms: 1000,
            decision_retry_ms: 200,
            decision_retries_max: 50,
            max_keys_per_txn: 16,
            max_inflight_per_gateway: 256,
            records_max: 1_000_000,
            bug: TxnBug::None,
        }
    }
}

/// A `[txn]` value that cannot be used; the message names the field (`txn.<field>`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("txn.{field}: {reason}")]
pub struct TxnConfigError {
    /// The field, without the `txn.` prefix.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn positive(field: &'static str, v: u64) -> Result<(), TxnConfigError> {
    if v == 0 {
        return Err(TxnConfigError {
            field,
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

impl TxnConfig {
    /// Checks every field; the first bad one is named.
    pub fn validate(&self) -> Result<(), TxnConfigError> {
        if self.protocol != "2pl-2pc" {
            return Err(TxnConfigError {
                field: "protocol",
                reason: format!("{:?} is not built; only \"2pl-2pc\"", self.protocol),
            });
        }
        positive("lock_wait_queue_max", self.lock_wait_queue_max as u64)?;
        positive("txn_ttl_ms", self.txn_ttl_ms)?;
        positive("resolve_after_ms", self.resolve_after_ms)?;
        positive("prepare_timeout_ms", self.prepare_timeout_ms)?;
        positive("decision_retry_ms", self.decision_retry_ms)?;
        positive("decision_retries_max", u64::from(self.decision_retries_max))?;
        positive("max_keys_per_txn", self.max_keys_per_txn as u64)?;
        positive(
            "max_inflight_per_gateway",
            self.max_inflight_per_gateway as u64,
        )?;
        positive("records_max", self.records_max as u64)?;
        if self.decision_retry_ms > self.prepare_timeout_ms {
            return Err(TxnConfigError {
                field: "decision_retry_ms",
                reason: format!(
                    "{} exceeds txn.prepare_timeout_ms ({}): a lost PREPARE would never be resent",
                    self.decision_retry_ms, self.prepare_timeout_ms
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_error_names_the_field() {
        assert_eq!(TxnConfig::default().validate(), Ok(()));
        let cfg = TxnConfig {
            records_max: 0,
            ..TxnConfig::default()
        };
        let e = cfg.validate().unwrap_err();
        assert!(e.to_string().starts_with("txn.records_max:"), "{e}");
        let cfg = TxnConfig {
            decision_retry_ms: 5000,
            ..TxnConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "decision_retry_ms");
        let cfg = TxnConfig {
            protocol: "percolator-si".into(),
            ..TxnConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "protocol");
    }
}

#[cfg(test)]
mod toml_tests {
    use super::*;

    /// The `[txn]` block of design note wave2 §7, verbatim.
    const DESIGN_TXN: &str = r#"
protocol = "2pl-2pc"                # later: percolator-si | parallel-commit
conflict = "no-wait"                # no-wait | wait-die
lock_wait_queue_max = 8             # wait-die only
one_pc = true
read_only = "locking"               # locking | validate-release (later)
txn_ttl_ms = 3000                   # Pending record expiry (CRDB design doc: txn heartbeat 5 s)
resolve_after_ms = 1000
prepare_timeout_ms = 1000
decision_retry_ms = 200
max_keys_per_txn = 16
max_inflight_per_gateway = 256
records_max = 1_000_000             # no GC in wave 2; reaching it is a reported error
"#;

    #[test]
    fn the_design_notes_txn_block_parses_to_the_defaults() {
        let cfg: TxnConfig = toml::from_str(DESIGN_TXN).unwrap();
        assert_eq!(cfg, TxnConfig::default());
        assert_eq!(cfg.validate(), Ok(()));
        let wd: TxnConfig = toml::from_str("conflict = \"wait-die\"").unwrap();
        assert_eq!(wd.conflict, ConflictPolicy::WaitDie);
    }

    #[test]
    fn unknown_fields_and_the_bug_switch_are_refused_in_txn() {
        let e = toml::from_str::<TxnConfig>("txn_ttl = 5").unwrap_err();
        assert!(e.to_string().contains("txn_ttl"), "{e}");
        assert!(toml::from_str::<TxnConfig>("bug = \"no-read-locks\"").is_err());
        assert!(toml::from_str::<TxnConfig>("read_only = \"validate-release\"").is_err());
    }
}
