//! The history format of DESIGN.md: one JSON object per line (JSONL), Jepsen semantics.
//!
//! ```text
//! {"index":0,"time_ns":1200,"process":3,"type":"invoke","f":"write","key":"k7","value":4}
//! {"index":1,"time_ns":9100,"process":3,"type":"ok","f":"write","key":"k7","value":4}
//! ```
//!
//! * `type`: `invoke`; then `ok` (happened), `fail` (surely did not happen) or `info` (may or
//!   may not have happened, at any time after its invoke: timeouts, crashes). A process
//!   whose operation ended in `info` issues no further operations; its client continues
//!   as a new process.
//! * `f` and `value`: `read` (invoke `null`; ok: the value read, `null` if absent),
//!   `write` (the value written), `cas` (`[old, new]`, `old` may be `null` for "absent"),
//!   `delete` (`null`), `txn` (a list of micro-ops).
//! * Optional fields: `node` (the node the client talked to), `error` (why it failed or
//!   is uncertain).

use serde::{Deserialize, Serialize};

/// Whether an event starts or ends an operation, and how it ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation starts.
    Invoke,
    /// The operation completed and took effect.
    Ok,
    /// The operation surely did not take effect.
    Fail,
    /// The operation may or may not have taken effect.
    Info,
}

/// The function an operation performs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum OpFn {
    /// Read one key.
    Read,
    /// Write one key.
    Write,
    /// Compare-and-set one key: value `[old, new]`.
    Cas,
    /// Delete one key.
    Delete,
    /// A transaction: value is a list of micro-ops.
    Txn,
}

impl OpFn {
    /// The name used in histories.
    pub fn name(self) -> &'static str {
        match self {
            OpFn::Read => "read",
            OpFn::Write => "write",
            OpFn::Cas => "cas",
            OpFn::Delete => "delete",
            OpFn::Txn => "txn",
        }
    }
}

/// One line of a history.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEvent {
    /// Position in the history, from 0.
    pub index: u64,
    /// When the client saw the event, nanoseconds since the start of the run.
    pub time_ns: u64,
    /// The logical process (a client; a new one after an `info`).
    pub process: u64,
    /// Invoke or completion kind.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The function.
    pub f: OpFn,
    /// The key, for single-key operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value (see the module docs for its shape per `f`).
    #[serde(default)]
    pub value: serde_json::Value,
    /// The node the client talked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// Why the operation failed or is uncertain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
