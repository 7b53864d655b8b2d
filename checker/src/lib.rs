//! # kvlab-checker
//!
//! Reads histories of client operations and decides whether they are linearizable.
//!
//! **Must never depend on:** any other kvlab crate — the checker reads histories, never
//! nodes, so a simulated run, a real run and a Jepsen history are checked by the same
//! code. No tokio, no network.
//!
//! * [`history`]: the JSONL history format, its reader and writer, and the structural
//!   checks (Jepsen's process discipline) every error of which names its line.
//! * [`formats`]: Jepsen EDN, Jepsen log lines (porcupine's etcd data), porcupine's KV
//!   log, auto-detection ([`read_history`] with [`HistoryFormat`]) and EDN export
//!   ([`write_edn`]); [`edn`] is the small EDN reader underneath.
//! * [`input`]: every format is streamed a line at a time with a cap on each line
//!   ([`MAX_HISTORY_LINE_BYTES`], [`ReadOptions`]); [`PreparedHistory`] reads a history
//!   straight into what the search needs per key, keeping neither the file nor its events;
//!   [`progress`] counts operations read and keys decided for a progress line.
//! * [`model`]: the sequential specifications (`register`, `cas-register`, `kv`,
//!   `multi-register`) as porcupine-rs models, and how `ok`/`fail`/`info` enter them;
//!   [`reduce`]: the exact reductions every key goes through before any engine runs.
//! * [`check()`] / [`check_with`]: splits a history by key (or key group) and decides each
//!   on a bounded pool of threads within time and memory budgets with three engines: the
//!   reads-from engine ([`reads_from`]), which decides a register whose written values are
//!   unique in `O(n log n)` (Gibbons & Korach), first; then a race of two searches —
//!   porcupine-rs and kvlab's own ([`engine`]) — for the keys it leaves; it reports per key
//!   with an explanation; [`write_visualization`] draws one key with porcupine's HTML
//!   visualization.
//! * [`txn`]: the transaction-isolation checker (Elle-style, list-append and
//!   rw-register): dependency graphs, cycles and anomaly classes under
//!   `strict-serializable`, `serializable`, `snapshot-isolation` and `read-committed`.
//!
//! A malformed history is an error ([`HistoryError`]); a well-formed history that is not
//! linearizable is an [`Verdict::Invalid`] report; a budget that runs out is
//! [`Verdict::Unknown`], never valid.
//!
//! ```
//! use kvlab_checker::{CheckOptions, ModelKind, Verdict, check, read_jsonl};
//!
//! // Process 0 writes 1; process 1 then reads 0, a value nobody wrote.
//! let history = r#"
//! {"index":0,"time_ns":10,"process":0,"type":"invoke","f":"write","key":"k1","value":1}
//! {"index":1,"time_ns":20,"process":0,"type":"ok","f":"write","key":"k1","value":1}
//! {"index":2,"time_ns":30,"process":1,"type":"invoke","f":"read","key":"k1","value":null}
//! {"index":3,"time_ns":40,"process":1,"type":"ok","f":"read","key":"k1","value":0}
//! "#;
//! let events = read_jsonl(history.as_bytes())?;
//! let opts = CheckOptions { model: ModelKind::Kv, timeout: None };
//! let report = check(&events, &opts)?;
//! assert_eq!(report.verdict, Verdict::Invalid);
//! assert_eq!(report.invalid_keys, vec!["k1".to_owned()]);
//! # Ok::<(), kvlab_checker::HistoryError>(())
//! ```

pub mod budget;
pub mod check;
pub mod edn;
pub mod engine;
pub mod formats;
pub mod history;
pub mod input;
pub mod model;
pub mod progress;
pub mod reads_from;
pub mod reduce;
pub mod txn;

pub use check::{
    CheckConfig, CheckError, CheckOptions, CheckReport, DEFAULT_MEMORY_LIMIT_BYTES, Engine,
    EngineWins, EventVisitor, MAX_CHECK_THREADS, MAX_EXPLAINED_OPS, MAX_OPS_PER_KEY,
    MAX_VISUALIZED_OPS, MIN_KEY_SLICE, ModelKind, OpRef, PartitionReport, PreparedHistory,
    RACE_HEAD_START, UNKEYED, UNTIMED_KEY_MAX_OPS, Verdict, check, check_with, write_visualization,
};
pub use formats::{
    EdnKeyStyle, HistoryFormat, detect_format, read_history, read_history_bytes, read_history_file,
    read_history_with, write_edn, write_edn_event,
};
pub use history::{
    EventType, HistoryError, HistoryEvent, Location, MAX_HISTORY_EVENTS, MAX_LINE_BYTES, MicroFn,
    MicroOp, OpFn, read_jsonl, read_jsonl_file, write_jsonl,
};
pub use input::{MAX_HISTORY_LINE_BYTES, ReadOptions};
pub use model::Val;
pub use progress::{Progress, ProgressPhase, ProgressSnapshot};
