//! The one error type of this crate's boundary.

use thiserror::Error;

/// What can go wrong at the boundary of kvlab-swim: a configuration that makes no sense,
/// or a persisted record this crate cannot read. Network input never produces an error:
/// a malformed or stale message is a counted drop (see [`crate::SwimCounters`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SwimError {
    /// A configuration field has a value the protocol cannot run with.
    #[error("invalid swim config: field `{field}`: {reason}")]
    InvalidConfig {
        /// The field's name as written in TOML.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },
    /// A persisted incarnation record could not be decoded.
    #[error("corrupt swim incarnation record #{index}: {reason}")]
    CorruptRecord {
        /// The record's position in the recovered records (0-based; the snapshot is
        /// reported as `usize::MAX`).
        index: usize,
        /// What the decoder said.
        reason: String,
    },
}
