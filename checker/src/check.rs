//! The linearizability check: split a history by key, reduce each key's operations
//! ([`crate::reduce`]), decide each key on a bounded pool of threads within a time budget,
//! and report per key.
//!
//! Every key is an independent porcupine partition (see [`crate::model`]), for all three
//! models: a `register` history over many keys is many registers, checked one by one.
//!
//! Engines ([`Engine`]): the default race gives each key first to the reads-from engine
//! ([`crate::reads_from`]), which decides a register whose written values are unique in
//! `O(n log n)` whatever its concurrency and length, and many keys whose values repeat;
//! a key it leaves undecided goes to kvlab's search ([`crate::engine`]) and porcupine-rs.
//! The limits below are the search engines'.
//!
//! Memory: [`PreparedHistory::read`] holds, per key, the operations its engines need.
//! With [`ReadOptions::decide_while_reading`](crate::ReadOptions) (what `kvlab check`
//! does with the race), the reads-from engine decides each key's oldest operations while
//! the history is read and they are forgotten, so memory is bounded by the operations of a
//! key still open or recent (about twice the undecided ones, at least [`RETIRE_MIN_OPS`]
//! per key), the `info` operations nothing has read yet, and a few words per key — not by
//! the history's length. Keys where a read has several possible sources (deletes and reads
//! of absent, Jepsen's small random values) are cut instead (see [`crate::reads_from`],
//! "Cutting"): at a write every other operation precedes or follows, the part before it
//! is decided exactly and forgotten; a key with no such cut keeps its operations. What is
//! left of a key after retiring goes to the search engines from the value the retired
//! part left, when the reads-from engine cannot decide it.
//!
//! Threads: porcupine-rs starts one OS thread per partition whenever it has more than one
//! partition or a timeout. So the checker never hands it more than one partition: a pool
//! of at most [`MAX_CHECK_THREADS`] workers (fewer if the machine has fewer cores) takes
//! keys one at a time, and each timed porcupine call adds one thread, so at most
//! `2 × workers` threads run however many keys the history has. Keys with at most
//! [`UNTIMED_KEY_MAX_OPS`] operations are searched without a timeout (their search is
//! tiny), which spares them the extra thread.
//!
//! Budget: with a timeout, a first pass gives each key a fair share of half the budget
//! (at least [`MIN_KEY_SLICE`]); keys that run out are retried in a second pass with
//! whatever budget remains. A key still unfinished at the deadline is *unknown*, never
//! valid, and the report says the budget ran out. Keys with more than
//! [`MAX_OPS_PER_KEY`] operations are not searched at all (porcupine's memo table costs
//! about `n²/8` bytes for `n` operations) and are unknown too, unless the reads-from
//! engine decides them (it has no such limit, and is not interrupted by the budget: its
//! work is `O(n log n)`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use porcupine_rs::Operation;
use serde::{Deserialize, Serialize};

use crate::budget::{self, Limits, StopReason};
use crate::engine::{self, EngineResult, EngineVerdict};
use crate::formats::{open_history, read_into};
use crate::history::{
    EventType, HistoryError, HistoryEvent, Location, MicroFn, OpArgs, OpFn, Outcome, PairedOp,
    pair_operations,
};
use crate::input::{EventSink, ReadOptions};
use crate::model::{KeyModel, KeyOp, MultiMicro, MultiModel, MultiOp, OpOrigin, SearchModel, Val};
use crate::progress::Progress;
use crate::{reads_from, reduce};

/// The most worker threads one check uses (each may add one porcupine thread).
pub const MAX_CHECK_THREADS: usize = 8;

/// Keys with at most this many operations are searched without a timeout: the search
/// over so few operations is bounded and tiny, and needs no extra thread.
pub const UNTIMED_KEY_MAX_OPS: usize = 10;

/// Keys with more operations than this are not searched and count as unknown (unless the
/// reads-from engine decides them): porcupine's memo table stores a bitset of all
/// operations per visited state, about `n²/8` bytes for `n` operations even on a
/// sequential history.
pub const MAX_OPS_PER_KEY: usize = 30_000;

/// A key with more operations than this is not drawn by [`write_visualization`].
pub const MAX_VISUALIZED_OPS: usize = 20_000;

/// The least time a key gets in the first pass of a timed check.
pub const MIN_KEY_SLICE: Duration = Duration::from_millis(2);

/// The share of the time budget spread over the keys in the first pass; the rest goes to
/// keys that needed more.
const FIRST_PASS_BUDGET_SHARE: f64 = 0.5;

/// The key name used for operations without a key under `register` and `cas-register`.
pub const UNKEYED: &str = "";

/// Which sequential specification to check against (see [`crate::model`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Read/write registers, one per key.
    Register,
    /// Read/write/compare-and-set registers, one per key.
    CasRegister,
    /// A key-value map: read/write/cas/delete/append, every key independent.
    Kv,
    /// Registers read and written several at a time by transactions (Knossos's
    /// `multi-register`); keys never sharing a transaction are checked apart.
    MultiRegister,
}

impl ModelKind {
    /// Every model, for command-line help.
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Register,
        ModelKind::CasRegister,
        ModelKind::Kv,
        ModelKind::MultiRegister,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Register => "register",
            ModelKind::CasRegister => "cas-register",
            ModelKind::Kv => "kv",
            ModelKind::MultiRegister => "multi-register",
        }
    }

    /// The model with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn supports(self, f: OpFn) -> bool {
        match f {
            OpFn::Read | OpFn::Write => true,
            OpFn::Cas => matches!(self, ModelKind::CasRegister | ModelKind::Kv),
            OpFn::Delete => self == ModelKind::Kv,
            OpFn::Txn => matches!(self, ModelKind::Kv | ModelKind::MultiRegister),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to check a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The sequential specification.
    pub model: ModelKind,
    /// The wall-clock budget for the whole check; `None` searches without limit (only
    /// [`MAX_OPS_PER_KEY`] still applies).
    pub timeout: Option<Duration>,
}

/// The answer of a check.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every key is linearizable.
    Valid,
    /// At least one key is not linearizable.
    Invalid,
    /// No key is known to be invalid, but some key could not be decided (budget or limit).
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        })
    }
}

/// What a check found, for `verdict.json` and for a person.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckReport {
    /// The answer: invalid if any key is invalid, else unknown if any key is undecided.
    pub verdict: Verdict,
    /// The model checked against.
    pub model: ModelKind,
    /// Operations (invokes) in the history.
    pub operations: usize,
    /// Operations that ended `ok`.
    pub operations_ok: usize,
    /// Operations that ended `fail` (dropped: they did not happen).
    pub operations_fail: usize,
    /// Operations that ended `info` or never completed (may have happened).
    pub operations_info: usize,
    /// Operations handed to the engines, after dropping fails, info reads and info
    /// writes whose effect nothing that surely happened observes (including those
    /// decided while reading).
    pub operations_checked: usize,
    /// Info writes, cas and deletes dropped because no operation that surely happened
    /// can observe their effect (see [`crate::reduce`]).
    pub unobserved_info_dropped: usize,
    /// Info operations whose value only they write and that an `ok` operation observes:
    /// they took effect before that observer completed, so they no longer stay open to
    /// the end of the history (see [`crate::reduce`]).
    #[serde(default)]
    pub info_bounded: usize,
    /// Operations decided while the history was read and then forgotten (see
    /// [`ReadOptions::decide_while_reading`](crate::ReadOptions)); they count in
    /// `operations_checked` too.
    #[serde(default)]
    pub decided_while_reading: usize,
    /// Keys in the history; each is checked on its own.
    pub keys_checked: usize,
    /// Keys that are not linearizable, in key order.
    pub invalid_keys: Vec<String>,
    /// Keys not decided (budget ran out, or too many operations), in key order.
    pub unknown_keys: Vec<String>,
    /// Keys with more than [`MAX_OPS_PER_KEY`] operations, not searched (also unknown).
    pub oversized_keys: Vec<String>,
    /// Wall-clock time of the whole check.
    pub elapsed_ms: f64,
    /// The budget given, if any.
    pub timeout_ms: Option<f64>,
    /// The time budget ran out before every key was decided.
    pub budget_exhausted: bool,
    /// Worker threads used.
    pub threads: usize,
    /// The key with the most operations open at one time (info operations stay open to
    /// the end), which is what makes a search slow.
    pub max_concurrency_key: Option<String>,
    /// How many operations were open at once on that key.
    pub max_concurrency: usize,
    /// The key whose search took longest.
    pub slowest_key: Option<String>,
    /// How long that search took.
    pub slowest_key_ms: f64,
    /// Sentences for a person: limits hit, budget spent, reductions made.
    pub notes: Vec<String>,
    /// Every key (or key group, under `multi-register`) that is not valid, in key order,
    /// with what its search found: the first operations that cannot be linearized and
    /// the longest partial linearization for an invalid key, what was explored for an
    /// unknown one. Keys not listed are valid.
    #[serde(default)]
    pub partitions: Vec<PartitionReport>,
    /// Which engine decided how many keys (see [`Engine`]).
    #[serde(default)]
    pub decided_by: EngineWins,
    /// The memory budget the check ran under, if any.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// The process's peak resident memory when the check ended (Linux only).
    #[serde(default)]
    pub peak_resident_bytes: Option<u64>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({} model): {} operations ({} ok, {} fail, {} info), {} keys, {:.1} ms",
            self.verdict,
            self.model,
            self.operations,
            self.operations_ok,
            self.operations_fail,
            self.operations_info,
            self.keys_checked,
            self.elapsed_ms
        )?;
        if !self.invalid_keys.is_empty() {
            writeln!(f, "invalid keys: {}", quoted_list(&self.invalid_keys))?;
        }
        if !self.unknown_keys.is_empty() {
            writeln!(f, "unknown keys: {}", quoted_list(&self.unknown_keys))?;
        }
        for p in &self.partitions {
            writeln!(f, "{p}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// The most keys a one-line summary names before "and N more".
const MAX_KEYS_NAMED_IN_SUMMARY: usize = 20;

fn quoted_list(keys: &[String]) -> String {
    let mut text = keys
        .iter()
        .take(MAX_KEYS_NAMED_IN_SUMMARY)
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > MAX_KEYS_NAMED_IN_SUMMARY {
        text.push_str(&format!(
            " and {} more",
            keys.len() - MAX_KEYS_NAMED_IN_SUMMARY
        ));
    }
    text
}

/// Why [`write_visualization`] could not write its file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The history is malformed or does not fit the model.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The key asked for has no operation the model checks.
    #[error("key {key:?} has no checked operations in this history")]
    UnknownKey {
        /// The key asked for.
        key: String,
    },
    /// No key was named and no key is invalid.
    #[error("no invalid key to show (the verdict is {verdict}); name a key to draw")]
    NoInvalidKey {
        /// The verdict of the check.
        verdict: Verdict,
    },
    /// The key has too many operations to draw.
    #[error("key {key:?} has {operations} operations, more than the {limit} a visualization draws")]
    TooLargeToVisualize {
        /// The key.
        key: String,
        /// Its operations.
        operations: usize,
        /// [`MAX_VISUALIZED_OPS`].
        limit: usize,
    },
    /// The file cannot be written.
    #[error("cannot write visualization {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Which engine decides (see the crate docs, [`crate::engine`] and
/// [`crate::reads_from`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// The reads-from engine first (registers: it decides a key whose written values are
    /// unique in `O(n log n)`, and many others); a key it cannot decide goes to kvlab's
    /// search engine, with a head start of [`RACE_HEAD_START`] (it decides most keys in
    /// microseconds); a key that has not decided by then is raced between kvlab's engine
    /// and porcupine-rs on two threads, and the first definite answer wins — Knossos's
    /// "competition".
    #[default]
    Race,
    /// porcupine-rs alone.
    Porcupine,
    /// kvlab's search engine alone.
    Kvlab,
    /// The reads-from engine alone: a key it cannot decide (values repeat and its
    /// canonical choice fails, appends, `multi-register`) is unknown.
    ReadsFrom,
}

impl Engine {
    /// Every engine, for command-line help.
    pub const ALL: [Engine; 4] = [
        Engine::Race,
        Engine::Porcupine,
        Engine::Kvlab,
        Engine::ReadsFrom,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Race => "race",
            Engine::Porcupine => "porcupine",
            Engine::Kvlab => "kvlab",
            Engine::ReadsFrom => "reads-from",
        }
    }

    /// Whether this choice runs the reads-from engine (so reading may decide keys as it
    /// goes: [`ReadOptions::decide_while_reading`](crate::ReadOptions)).
    pub fn uses_reads_from(self) -> bool {
        matches!(self, Engine::Race | Engine::ReadsFrom)
    }

    /// The engine with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<Engine> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How long kvlab's engine searches a key alone before porcupine-rs joins the race.
pub const RACE_HEAD_START: Duration = Duration::from_secs(1);

/// The memory budget of a check when none is given: the process's resident memory at
/// which porcupine-rs is stopped, and four times the most kvlab's memo takes.
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 1 << 30;

/// The share of the memory budget kvlab's memo may take (the rest is for porcupine-rs,
/// the history and everything else).
const KVLAB_MEMO_SHARE_DIVISOR: u64 = 4;

/// The most operations of a partial linearization a [`PartitionReport`] lists (its
/// last ones: where it broke down).
pub const MAX_EXPLAINED_OPS: usize = 20;

/// Every setting of a check; [`CheckOptions`] is the short form with the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// The sequential specification.
    pub model: ModelKind,
    /// The wall-clock budget for the whole check; `None`: no limit.
    pub timeout: Option<Duration>,
    /// The memory budget: porcupine-rs stops when the process's resident memory passes
    /// it, and kvlab's memo stops growing at a quarter of it. `None`: no limit.
    pub memory_limit_bytes: Option<u64>,
    /// Which engine decides.
    pub engine: Engine,
    /// Stop searching other keys once one key is invalid (the verdict is then known;
    /// the keys left are unknown). porcupine-rs and Knossos do the same.
    pub stop_at_first_invalid: bool,
}

impl From<CheckOptions> for CheckConfig {
    fn from(opts: CheckOptions) -> Self {
        CheckConfig {
            model: opts.model,
            timeout: opts.timeout,
            memory_limit_bytes: Some(DEFAULT_MEMORY_LIMIT_BYTES),
            engine: Engine::Race,
            // `check` has always named every invalid key; keep it so.
            stop_at_first_invalid: false,
        }
    }
}

/// How many keys each engine decided.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct EngineWins {
    /// Keys decided by kvlab's search engine.
    pub kvlab: usize,
    /// Keys decided by porcupine-rs.
    pub porcupine: usize,
    /// Keys decided by the reads-from engine.
    #[serde(default)]
    pub reads_from: usize,
}

/// One operation, as a person finds it in the history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OpRef {
    /// The process.
    pub process: u64,
    /// `index` of the invoke.
    pub invoke_index: u64,
    /// `index` of the completion; `None`: it never completed.
    pub complete_index: Option<u64>,
    /// What it did, e.g. `read() → 3`.
    pub description: String,
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by process {} (index {}",
            self.description, self.process, self.invoke_index
        )?;
        match self.complete_index {
            Some(i) => write!(f, "–{i})"),
            None => write!(f, ", never completed)"),
        }
    }
}

/// What the search found on one key (or key group) that is not valid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartitionReport {
    /// The key (under `multi-register`, the group's keys joined by `+`).
    pub key: String,
    /// Invalid or unknown.
    pub verdict: Verdict,
    /// Operations searched.
    pub operations: usize,
    /// The engine that decided it, if one did.
    pub decided_by: Option<Engine>,
    /// Why it is unknown: `"time budget"`, `"memory budget"`, `"too many operations"`,
    /// `"not reached"`, or why the reads-from engine could not decide it.
    pub unknown_reason: Option<String>,
    /// For a key the reads-from engine found invalid: the rule broken, in a sentence
    /// naming the operations involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// For an invalid key: at the deepest dead end, the operations that could have gone
    /// next but that no state allowed, earliest return first.
    pub first_unlinearizable: Vec<OpRef>,
    /// How many operations the longest partial linearization holds.
    pub longest_partial_len: usize,
    /// Its last operations (at most [`MAX_EXPLAINED_OPS`]), in linearization order.
    pub longest_partial_tail: Vec<OpRef>,
    /// Model steps kvlab's engine took.
    pub steps_explored: u64,
    /// Configurations kvlab's engine remembered.
    pub configurations_remembered: usize,
}

impl fmt::Display for PartitionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?}: {} ({} operations",
            self.key, self.verdict, self.operations
        )?;
        if let Some(e) = self.decided_by {
            write!(f, ", decided by {e}")?;
        }
        if let Some(r) = &self.unknown_reason {
            write!(f, ", stopped by the {r}")?;
        }
        if self.decided_by == Some(Engine::ReadsFrom) {
            write!(f, ")")?;
        } else {
            write!(
                f,
                "; explored {} steps, {} configurations)",
                self.steps_explored, self.configurations_remembered
            )?;
        }
        if let Some(why) = &self.explanation {
            write!(f, "\n  why: {why}")?;
        }
        if !self.first_unlinearizable.is_empty() {
            write!(f, "\n  cannot be linearized next:")?;
            for op in &self.first_unlinearizable {
                write!(f, "\n    {op}")?;
            }
        }
        if self.longest_partial_len > 0 {
            write!(
                f,
                "\n  longest partial linearization: {} operations, ending with:",
                self.longest_partial_len
            )?;
            for op in &self.longest_partial_tail {
                write!(f, "\n    {op}")?;
            }
        }
        Ok(())
    }
}

/// Decides whether `events` is linearizable under `opts.model`, key by key, with the
/// default engine (the race) and memory budget ([`DEFAULT_MEMORY_LIMIT_BYTES`]), every
/// key searched (no stop at the first invalid key).
///
/// Errors are malformed histories (see [`HistoryError`]); a non-linearizable history is
/// an [`Verdict::Invalid`] report. With a timeout, keys not decided in time are unknown,
/// never valid.
pub fn check(events: &[HistoryEvent], opts: &CheckOptions) -> Result<CheckReport, HistoryError> {
    check_with(events, &CheckConfig::from(*opts))
}

/// [`check`] with every setting: engine, time and memory budgets.
pub fn check_with(
    events: &[HistoryEvent],
    config: &CheckConfig,
) -> Result<CheckReport, HistoryError> {
    let start = Instant::now();
    let prepared = prepare(events, config.model)?;
    Ok(run_check(&prepared, config, start, None))
}

/// Searches every job of `prepared` and reports; the elapsed time counts from `start`.
fn run_check(
    prepared: &Prepared,
    config: &CheckConfig,
    start: Instant,
    progress: Option<&Progress>,
) -> CheckReport {
    let threads = worker_threads(prepared.jobs.len());
    if let Some(p) = progress {
        p.start_checking(prepared.jobs.len());
    }
    let results = run_jobs(&prepared.jobs, config, start, threads, progress);
    if let Some(p) = progress {
        p.finish();
    }
    build_report(prepared, &results, config, threads, start.elapsed())
}

/// Writes porcupine-rs's interactive HTML visualization of one key: `key`, or the first
/// invalid key when `key` is `None`. It shows the operations the search saw and the
/// longest partial linearizations it found, so a person can see where every order
/// breaks down. With a timeout, the check and the drawing each get the whole budget; a
/// drawing cut short shows the partial linearizations found so far.
pub fn write_visualization(
    events: &[HistoryEvent],
    opts: &CheckOptions,
    key: Option<&str>,
    path: &Path,
) -> Result<(), CheckError> {
    let config = CheckConfig::from(*opts);
    let start = Instant::now();
    let prepared = prepare(events, opts.model)?;
    let name = match key {
        Some(k) => k.to_owned(),
        None => {
            let report = run_check(&prepared, &config, start, None);
            match report.invalid_keys.into_iter().next() {
                Some(k) => k,
                None => {
                    return Err(CheckError::NoInvalidKey {
                        verdict: report.verdict,
                    });
                }
            }
        }
    };
    visualize_job(&prepared, &name, opts.timeout, path)
}

/// Draws the job named `name` of `prepared` (see [`write_visualization`]).
fn visualize_job(
    prepared: &Prepared,
    name: &str,
    timeout: Option<Duration>,
    path: &Path,
) -> Result<(), CheckError> {
    let Some(job) = prepared.jobs.iter().find(|j| j.name == name) else {
        return Err(CheckError::UnknownKey {
            key: name.to_owned(),
        });
    };
    let write_error = |source| CheckError::Write {
        path: path.to_path_buf(),
        source,
    };
    // A key the reads-from engine decides is drawn from its answer (a window of it, when
    // the key is large); the others by porcupine-rs's search.
    if let JobOps::Key(ops) = &job.ops {
        let decision = match job.retired.as_ref() {
            Some(r) if r.violation.is_some() => reads_from::Decision::Violated(
                r.violation.clone().unwrap_or_else(|| unreachable!()),
            ),
            Some(r) => reads_from::decide(ops, &r.carry),
            None => reads_from::decide(ops, &reads_from::Carry::default()),
        };
        let drawn =
            match decision {
                reads_from::Decision::Linearizable(order) => {
                    Some(draw_reads_from(ops, &[order], &[], None, path))
                }
                reads_from::Decision::Violated(v) => {
                    let mut orders = v.attempts.clone();
                    orders.push(v.partial.clone());
                    let note = (v.kind.name(), v.sentence.as_str());
                    Some(draw_reads_from(ops, &orders, &v.ops, Some(note), path))
                }
                reads_from::Decision::Unsure(why) if job.retired.is_some() => Some(
                    draw_reads_from(ops, &[], &[], Some(("undecided", &why)), path),
                ),
                reads_from::Decision::Unsure(_) => None,
            };
        if let Some(drawn) = drawn {
            return drawn.map_err(write_error);
        }
    }
    if job.len() > MAX_VISUALIZED_OPS {
        return Err(CheckError::TooLargeToVisualize {
            key: name.to_owned(),
            operations: job.len(),
            limit: MAX_VISUALIZED_OPS,
        });
    }
    let written = match &job.ops {
        JobOps::Key(ops) => visualize(ops, timeout, path),
        JobOps::Multi(ops) => visualize(ops, timeout, path),
    };
    written.map_err(write_error)
}

/// Draws `ops` (a key's operations in invoke order) with porcupine's HTML view, showing
/// `orders` (partial linearizations, positions) and marking the operations of `focus`
/// with `note`. A key with more than [`MAX_VISUALIZED_OPS`] operations is drawn as a
/// window around `focus` (its start, without focus), each order as its longest stretch
/// that lies in the window and replays on its own.
fn draw_reads_from(
    ops: &[Operation<KeyModel>],
    orders: &[Vec<usize>],
    focus: &[usize],
    note: Option<(&str, &str)>,
    path: &Path,
) -> std::io::Result<()> {
    let shown = visual_window(ops.len(), focus);
    let mut index_of = vec![usize::MAX; ops.len()];
    for (j, &i) in shown.iter().enumerate() {
        index_of[i] = j;
    }
    let partial: Vec<Vec<usize>> = orders
        .iter()
        .map(|order| drawable_run(ops, order, &index_of))
        .filter(|run| !run.is_empty())
        .map(|run| run.iter().map(|&i| index_of[i]).collect())
        .collect();
    let mut info = porcupine_rs::LinearizationInfo::<KeyModel> {
        partial_linearizations: vec![partial],
        partition_ops: vec![shown.iter().map(|&i| ops[i].clone()).collect()],
        annotations: Vec::new(),
    };
    if let Some((what, why)) = note {
        info.add_annotations(vec![porcupine_rs::Annotation {
            tag: Some("reads-from".to_owned()),
            start: focus.iter().map(|&i| ops[i].call_time).min().unwrap_or(0),
            end: focus.iter().map(|&i| ops[i].return_time).max(),
            description: what.to_owned(),
            details: why.to_owned(),
            ..porcupine_rs::Annotation::default()
        }]);
    }
    porcupine_rs::visualize_path::<KeyModel>(&info, path)
}

/// The positions drawn of a key with `n` operations: all, or a window of at most
/// [`MAX_VISUALIZED_OPS`] around `focus` (most of it before: what led there).
fn visual_window(n: usize, focus: &[usize]) -> Vec<usize> {
    if n <= MAX_VISUALIZED_OPS {
        return (0..n).collect();
    }
    let lo = focus.iter().copied().min().unwrap_or(0);
    let hi = focus.iter().copied().max().unwrap_or(0);
    let mut shown: Vec<usize> = if hi - lo < MAX_VISUALIZED_OPS / 2 {
        let spare = MAX_VISUALIZED_OPS - (hi - lo + 1);
        let from = lo.saturating_sub(spare * 3 / 4);
        let to = (from + MAX_VISUALIZED_OPS).min(n);
        (to.saturating_sub(MAX_VISUALIZED_OPS)..to).collect()
    } else {
        // Far apart: a window around each.
        let around = MAX_VISUALIZED_OPS / (2 * focus.len().max(1));
        focus
            .iter()
            .flat_map(|&f| f.saturating_sub(around)..(f + around).min(n))
            .collect()
    };
    shown.extend_from_slice(focus);
    shown.sort_unstable();
    shown.dedup();
    shown
}

/// The longest stretch of `order` whose operations are all drawn (`index_of` is not
/// `usize::MAX`) and that replays from the absent state: starting at the order's start or
/// at a write, cut where the model refuses.
fn drawable_run(ops: &[Operation<KeyModel>], order: &[usize], index_of: &[usize]) -> Vec<usize> {
    let mut best: &[usize] = &[];
    let mut start = Some(0);
    for (j, &i) in order.iter().enumerate() {
        if index_of[i] == usize::MAX {
            if let Some(s) = start.take()
                && j - s > best.len()
            {
                best = &order[s..j];
            }
            continue;
        }
        if start.is_none() && matches!(ops[i].op, KeyOp::Write(_) | KeyOp::Delete) {
            start = Some(j);
        }
    }
    if let Some(s) = start
        && order.len() - s > best.len()
    {
        best = &order[s..];
    }
    let mut state = None;
    let legal = best
        .iter()
        .take_while(|&&i| {
            let (ok, next) = crate::model::key_step(&state, &ops[i].op);
            state = next;
            ok
        })
        .count();
    best[..legal].to_vec()
}

/// A history read and lowered for one model: what the search needs of it — per key (or
/// key group) the operations to linearize — and the counts the report gives, but not its
/// events. Reading streams the input (see [`crate::input`]), so memory holds the open
/// operations and these per-key operations, never the file or its events; deciding while
/// reading ([`ReadOptions::decide_while_reading`](crate::ReadOptions)) keeps only the
/// operations of each key not yet decided (see the module docs).
///
/// ```
/// use kvlab_checker::{CheckConfig, CheckOptions, ModelKind, PreparedHistory, ReadOptions, Verdict};
///
/// let history = r#"{"index":0,"time_ns":10,"process":0,"type":"invoke","f":"write","key":"k1","value":1}
/// {"index":1,"time_ns":20,"process":0,"type":"ok","f":"write","key":"k1","value":1}
/// "#;
/// let prepared = PreparedHistory::read(history.as_bytes(), ModelKind::Kv, &ReadOptions::default())?;
/// assert_eq!((prepared.operations(), prepared.keys()), (1, 1));
/// let config = CheckConfig::from(CheckOptions { model: ModelKind::Kv, timeout: None });
/// assert_eq!(prepared.check(&config, None).verdict, Verdict::Valid);
/// # Ok::<(), kvlab_checker::HistoryError>(())
/// ```
pub struct PreparedHistory {
    model: ModelKind,
    prepared: Prepared,
}

impl fmt::Debug for PreparedHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedHistory")
            .field("model", &self.model)
            .field("events", &self.prepared.events)
            .field("operations", &self.prepared.operations)
            .field("keys", &self.prepared.jobs.len())
            .finish()
    }
}

/// What [`PreparedHistory::read_visiting`] hands every event to.
pub type EventVisitor<'v> = dyn FnMut(&HistoryEvent) -> Result<(), HistoryError> + 'v;

/// Lowers the operations of a streamed history, handing each event to a visitor.
struct LoweringSink<'v, 'f> {
    lowering: Lowering,
    visit: Option<&'v mut EventVisitor<'f>>,
}

impl EventSink for LoweringSink<'_, '_> {
    fn event(&mut self, event: HistoryEvent, _line: usize) -> Result<(), HistoryError> {
        self.lowering.note_event(&event);
        match &mut self.visit {
            Some(visit) => visit(&event),
            None => Ok(()),
        }
    }
    fn op(&mut self, op: PairedOp) {
        self.lowering.add(op);
    }
}

impl PreparedHistory {
    /// Reads a history from `reader` (streamed; see [`crate::input`]) and lowers it for
    /// `model`. Errors name the line: a malformed line, a structural mistake, an
    /// operation `model` cannot check.
    pub fn read<R: BufRead>(
        reader: R,
        model: ModelKind,
        options: &ReadOptions<'_>,
    ) -> Result<Self, HistoryError> {
        Self::read_inner(reader, model, options, None)
    }

    /// [`read`](Self::read), handing every event to `visit` as it is read (e.g. to
    /// write it out in another format); an error from `visit` ends the reading.
    pub fn read_visiting<R: BufRead>(
        reader: R,
        model: ModelKind,
        options: &ReadOptions<'_>,
        visit: &mut EventVisitor<'_>,
    ) -> Result<Self, HistoryError> {
        Self::read_inner(reader, model, options, Some(visit))
    }

    /// [`read`](Self::read) from a file.
    pub fn read_file(
        path: &Path,
        model: ModelKind,
        options: &ReadOptions<'_>,
    ) -> Result<Self, HistoryError> {
        Self::read(open_history(path)?, model, options)
    }

    fn read_inner<R: BufRead>(
        reader: R,
        model: ModelKind,
        options: &ReadOptions<'_>,
        visit: Option<&mut EventVisitor<'_>>,
    ) -> Result<Self, HistoryError> {
        let mut sink = LoweringSink {
            lowering: Lowering::new(model, options.decide_while_reading),
            visit,
        };
        let counts = read_into(reader, options, &mut sink)?;
        Ok(PreparedHistory {
            model,
            prepared: sink.lowering.finish(counts.events)?,
        })
    }

    /// Lowers events held in memory for `model` (what [`check_with`] does first).
    pub fn from_events(events: &[HistoryEvent], model: ModelKind) -> Result<Self, HistoryError> {
        Ok(PreparedHistory {
            model,
            prepared: prepare(events, model)?,
        })
    }

    /// The model the history was lowered for.
    pub fn model(&self) -> ModelKind {
        self.model
    }

    /// Events in the history.
    pub fn events(&self) -> usize {
        self.prepared.events
    }

    /// Operations (invokes) in the history; 0 for a history with no events.
    pub fn operations(&self) -> usize {
        self.prepared.operations
    }

    /// The most operations held at once, over all keys, while the history was read
    /// (with [`ReadOptions::decide_while_reading`](crate::ReadOptions): the open ones and
    /// those not decided yet; without: every operation that constrains anything).
    pub fn peak_held_operations(&self) -> usize {
        self.prepared.peak_held
    }

    /// Keys (or key groups under `multi-register`) the search will take one by one.
    pub fn keys(&self) -> usize {
        self.prepared.jobs.len()
    }

    /// Searches every key, like [`check_with`]; `config.model` is replaced by the model
    /// the history was lowered for. `progress` counts keys as they are decided.
    pub fn check(&self, config: &CheckConfig, progress: Option<&Progress>) -> CheckReport {
        let config = CheckConfig {
            model: self.model,
            ..*config
        };
        run_check(&self.prepared, &config, Instant::now(), progress)
    }

    /// Writes porcupine-rs's HTML visualization of `key` (see [`write_visualization`]).
    pub fn write_visualization(
        &self,
        key: &str,
        timeout: Option<Duration>,
        path: &Path,
    ) -> Result<(), CheckError> {
        visualize_job(&self.prepared, key, timeout, path)
    }
}

fn visualize<M: porcupine_rs::Model>(
    ops: &[Operation<M>],
    timeout: Option<Duration>,
    path: &Path,
) -> std::io::Result<()> {
    // The verdict porcupine returns here is ignored: with a timeout, its info mode
    // reports partitions it cancelled as illegal. Only the partial linearizations matter.
    let (_, info) = match timeout {
        None => porcupine_rs::check_operations_info(ops),
        Some(t) => porcupine_rs::check_operations_info_timeout(ops, t),
    };
    porcupine_rs::visualize_path::<M>(&info, path)
}

/// One partition's operations, in the model that checks them.
enum JobOps {
    Key(Vec<Operation<KeyModel>>),
    Multi(Vec<Operation<MultiModel>>),
}

/// One key (or key group), ready for the search.
struct KeyJob {
    name: String,
    ops: JobOps,
    max_concurrency: usize,
    /// What was decided of the key while reading: the rest is checked after it (by the
    /// search engines from the value it left, see [`search_rest`]).
    retired: Option<Box<KeyRetirement>>,
}

impl KeyJob {
    fn len(&self) -> usize {
        match &self.ops {
            JobOps::Key(o) => o.len(),
            JobOps::Multi(o) => o.len(),
        }
    }
}

/// A history lowered to per-key jobs, with the counts the report needs.
struct Prepared {
    jobs: Vec<KeyJob>,
    /// Events in the history.
    events: usize,
    operations: usize,
    operations_ok: usize,
    operations_fail: usize,
    operations_info: usize,
    unobserved_info_dropped: usize,
    info_bounded: usize,
    decided_while_reading: usize,
    /// The most operations the keys' buffers held at once while the history was read.
    peak_held: usize,
}

/// The single-key operation a one-micro-op `txn` stands for under `kv`.
fn single_micro(op: &PairedOp) -> Option<(String, KeyOp)> {
    let OpArgs::Txn(micro) = &op.args else {
        return None;
    };
    let [m] = micro.as_slice() else {
        return None;
    };
    let key_op = match m.f {
        MicroFn::Read => match &op.outcome {
            Outcome::Ok {
                txn: Some(done), ..
            } => {
                let seen = done.first()?;
                if seen.list.is_some() {
                    return None;
                }
                KeyOp::Read(seen.value.clone())
            }
            _ => KeyOp::Read(None),
        },
        MicroFn::Write => KeyOp::Write(m.value.clone()?),
        MicroFn::Append => match m.value.clone()? {
            Val::Str(s) => KeyOp::Append(s),
            Val::Int(_) => return None,
        },
    };
    Some((m.key.clone(), key_op))
}

fn porcupine_op<M: porcupine_rs::Model<Metadata = OpOrigin>>(
    op: &PairedOp,
    m_op: M::Op,
    end_time: i64,
) -> Operation<M> {
    let uncertain = matches!(op.outcome, Outcome::Info | Outcome::Open);
    let return_time = match (op.complete_position, uncertain) {
        (Some(p), false) => i64::try_from(p).unwrap_or(i64::MAX),
        _ => end_time,
    };
    Operation {
        client_id: u32::try_from(op.process).ok(),
        call_time: i64::try_from(op.invoke_position).unwrap_or(i64::MAX),
        return_time,
        op: m_op,
        metadata: Some(OpOrigin {
            process: op.process,
            invoke_index: op.invoke_index,
            complete_index: op.complete_index,
            uncertain,
            node: op.node,
            bounded_by: None,
        }),
    }
}

/// The return time given to uncertain operations until the history's end is known.
const END_NOT_YET_KNOWN: i64 = i64::MAX;

/// A key is first handed to the reads-from engine while the history is read (see
/// [`ReadOptions::decide_while_reading`](crate::ReadOptions)) once it holds this many
/// operations, and again each time what it holds has doubled since.
pub const RETIRE_MIN_OPS: usize = 256;

/// Lowers operations, as the reader completes them, into per-key porcupine operations
/// (see [`crate::model`] for the rules), keeping the counts the report needs. Errors
/// (an operation the model cannot take) come out in the order a whole-history pass
/// finds them: the first unsupported operation in invoke order, else the first
/// operation that cannot be lowered.
///
/// With `retire`, a key's operations go to the reads-from engine whenever they reach
/// [`RETIRE_MIN_OPS`] or have doubled since it last looked, and what it decides for good
/// is forgotten ([`crate::reads_from::retire`]); so memory holds, per key, the recent
/// operations, the open ones and the `info` operations nothing has read yet.
struct Lowering {
    model: ModelKind,
    per_key: BTreeMap<String, KeyBuffer>,
    /// Under `multi-register`: the operations, grouped at the end.
    multi: Vec<PairedOp>,
    operations: usize,
    ok: usize,
    fail: usize,
    info: usize,
    /// The first refusal: (0 unsupported / 1 not lowerable, invoke position, error).
    refused: Option<(u8, usize, HistoryError)>,
    /// Decide while reading.
    retire: bool,
    /// Events seen so far: the position of the next one.
    events_seen: usize,
    /// Operations held in the keys' buffers now, and at most.
    held: usize,
    peak_held: usize,
}

/// One key's operations while the history is read.
#[derive(Default)]
struct KeyBuffer {
    /// Lowered operations not retired, in completion order (sorted at the end).
    ops: Vec<Operation<KeyModel>>,
    /// While deciding while reading: the key's operations invoked and not complete, with
    /// their invoke position and the value they write (`Some(None)`: a delete).
    open: Vec<(usize, Option<Option<Val>>)>,
    /// What was decided while reading, once anything was.
    retired: Option<Box<KeyRetirement>>,
    /// `ops.len()` at which the reads-from engine looks again.
    next_attempt: usize,
    /// The most operations open at once among those already retired.
    max_concurrency: usize,
}

/// What was decided of a key while its history was read.
#[derive(Clone, Debug, Default)]
struct KeyRetirement {
    /// What the retired operations leave for the rest.
    carry: reads_from::Carry,
    /// Found invalid while reading: the key's operations at that point are kept (the
    /// violation's positions refer to them, in invoke order) and later ones ignored.
    violation: Option<reads_from::Violation>,
    /// Operations read after the violation and ignored.
    ignored: usize,
}

impl Lowering {
    fn new(model: ModelKind, retire: bool) -> Self {
        Lowering {
            model,
            per_key: BTreeMap::new(),
            multi: Vec::new(),
            operations: 0,
            ok: 0,
            fail: 0,
            info: 0,
            refused: None,
            retire: retire && model != ModelKind::MultiRegister,
            events_seen: 0,
            held: 0,
            peak_held: 0,
        }
    }

    fn refuse(&mut self, rank: u8, position: usize, error: HistoryError) {
        if self
            .refused
            .as_ref()
            .is_none_or(|(r, p, _)| (rank, position) < (*r, *p))
        {
            self.refused = Some((rank, position, error));
            // The check will not run: what was kept is of no use.
            self.per_key = BTreeMap::new();
            self.multi = Vec::new();
            self.retire = false;
        }
    }

    fn buffer(&mut self, key: Cow<'_, str>) -> &mut KeyBuffer {
        // Most keys are there already: look up without allocating a key.
        if !self.per_key.contains_key(key.as_ref()) {
            self.per_key
                .insert(key.clone().into_owned(), KeyBuffer::default());
        }
        self.per_key
            .get_mut(key.as_ref())
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Sees every event in history order (the open operations of each key matter while
    /// deciding while reading).
    fn note_event(&mut self, event: &HistoryEvent) {
        let position = self.events_seen;
        self.events_seen += 1;
        if !self.retire || event.kind != EventType::Invoke {
            return;
        }
        if let Some((key, writes)) = invoke_target(event, self.model) {
            self.buffer(key).open.push((position, writes));
        }
    }

    fn add(&mut self, op: PairedOp) {
        self.operations += 1;
        match op.outcome {
            Outcome::Ok { .. } => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info | Outcome::Open => self.info += 1,
        }
        let (model, at, position) = (self.model, op.invoke_at, op.invoke_position);
        if !model.supports(op.f) {
            self.refuse(
                0,
                position,
                HistoryError::UnsupportedOp { at, f: op.f, model },
            );
            return;
        }
        if model == ModelKind::MultiRegister {
            if self.refused.is_none() {
                self.multi.push(op);
            }
            return;
        }
        if self.retire
            && let Some(key) = op_key(&op, model)
            && let Some(buffer) = self.per_key.get_mut(key.as_ref())
        {
            buffer.open.retain(|&(p, _)| p != op.invoke_position);
        }
        match lower_key_op(&op, model) {
            Ok(None) => {}
            Ok(Some((key, key_op))) => {
                if self.refused.is_none() {
                    let lowered = porcupine_op(&op, key_op, END_NOT_YET_KNOWN);
                    let (retire, now) = (self.retire, self.events_seen);
                    let buffer = self.buffer(key);
                    if buffer.frozen() {
                        if let Some(r) = buffer.retired.as_mut() {
                            r.ignored += 1;
                        }
                        return;
                    }
                    buffer.ops.push(lowered);
                    let held = buffer.ops.len();
                    if retire && held >= buffer.next_attempt.max(RETIRE_MIN_OPS) {
                        buffer.retire(now);
                    }
                    let forgotten = held - buffer.ops.len();
                    self.held += 1;
                    self.peak_held = self.peak_held.max(self.held);
                    self.held -= forgotten;
                }
            }
            Err(e) => self.refuse(1, position, e),
        }
    }

    /// The jobs, once the history's `events` are all read.
    fn finish(self, events: usize) -> Result<Prepared, HistoryError> {
        if let Some((_, _, e)) = self.refused {
            return Err(e);
        }
        // Info operations return "at infinity": after every event of the history.
        let end_time = i64::try_from(events).unwrap_or(i64::MAX);
        let mut prepared = Prepared {
            jobs: Vec::new(),
            events,
            operations: self.operations,
            operations_ok: self.ok,
            operations_fail: self.fail,
            operations_info: self.info,
            unobserved_info_dropped: 0,
            info_bounded: 0,
            decided_while_reading: 0,
            peak_held: self.peak_held,
        };
        if self.model == ModelKind::MultiRegister {
            let mut ops = self.multi;
            ops.sort_by_key(|op| op.invoke_position);
            prepared.jobs = prepare_multi(&ops, end_time)?;
            return Ok(prepared);
        }
        for (name, buffer) in self.per_key {
            if let Some(job) = buffer.into_job(name, end_time, &mut prepared) {
                prepared.jobs.push(job);
            }
        }
        Ok(prepared)
    }
}

impl KeyBuffer {
    /// Found invalid while reading.
    fn frozen(&self) -> bool {
        self.retired.as_ref().is_some_and(|r| r.violation.is_some())
    }

    /// Hands the key's operations to the reads-from engine and forgets what it decided;
    /// `now` is the position of the next event.
    fn retire(&mut self, now: usize) {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let safe = self
            .open
            .iter()
            .map(|&(p, _)| i64::try_from(p).unwrap_or(i64::MAX))
            .fold(now, i64::min);
        let open_writes: Vec<Option<Val>> =
            self.open.iter().filter_map(|(_, w)| w.clone()).collect();
        let horizon = reads_from::Horizon {
            safe,
            open_writes: &open_writes,
        };
        let mut retirement = self.retired.as_deref().cloned().unwrap_or_default();
        let times = |ops: &[Operation<KeyModel>]| {
            max_concurrency(ops.iter().map(|o| (o.call_time, o.return_time)))
        };
        match reads_from::retire(&self.ops, &mut retirement.carry, &horizon) {
            reads_from::Retired::Nothing => {}
            reads_from::Retired::Ops { positions } => {
                self.max_concurrency = self.max_concurrency.max(times(&self.ops));
                let mut gone = positions.into_iter().peekable();
                let mut i = 0;
                self.ops.retain(|_| {
                    let drop = gone.next_if_eq(&i).is_some();
                    i += 1;
                    !drop
                });
                self.retired = Some(Box::new(retirement));
            }
            reads_from::Retired::Violated(mut v) => {
                self.max_concurrency = self.max_concurrency.max(times(&self.ops));
                // Invoke order, as every job has its operations; the violation follows.
                let mut order: Vec<usize> = (0..self.ops.len()).collect();
                order.sort_by_key(|&i| self.ops[i].call_time);
                let mut rank = vec![0; order.len()];
                for (r, &i) in order.iter().enumerate() {
                    rank[i] = r;
                }
                for p in v.ops.iter_mut().chain(v.partial.iter_mut()) {
                    *p = rank[*p];
                }
                let mut slots: Vec<Option<Operation<KeyModel>>> = std::mem::take(&mut self.ops)
                    .into_iter()
                    .map(Some)
                    .collect();
                self.ops = order.iter().filter_map(|&i| slots[i].take()).collect();
                retirement.violation = Some(v);
                self.retired = Some(Box::new(retirement));
                self.open = Vec::new();
            }
        }
        self.next_attempt = 2 * self.ops.len();
    }

    /// The key's job at the end of the history (`None`: nothing of it is checked).
    fn into_job(self, name: String, end_time: i64, prepared: &mut Prepared) -> Option<KeyJob> {
        let KeyBuffer {
            mut ops,
            retired,
            max_concurrency: retired_concurrency,
            ..
        } = self;
        if ops.is_empty() && retired.is_none() {
            return None;
        }
        for op in &mut ops {
            if op.return_time == END_NOT_YET_KNOWN {
                op.return_time = end_time;
            }
        }
        if let Some(r) = &retired {
            prepared.decided_while_reading += r.carry.retired_ops;
        }
        let ops = if retired.as_ref().is_some_and(|r| r.violation.is_some()) {
            ops
        } else {
            // Invoke order, as the history has them (they arrive as they complete).
            ops.sort_by_key(|op| op.call_time);
            let reduced = reduce_after(ops, retired.as_deref());
            prepared.unobserved_info_dropped += reduced.dropped;
            prepared.info_bounded += reduced.bounded;
            reduced.ops
        };
        let max_concurrency = retired_concurrency.max(max_concurrency(
            ops.iter().map(|o| (o.call_time, o.return_time)),
        ));
        Some(KeyJob {
            name,
            ops: JobOps::Key(ops),
            max_concurrency,
            retired,
        })
    }
}

/// The reductions on what is left of a key (in invoke order) after what was decided
/// while reading: when a cut left a value, after an operation writing it (so that no
/// `info` write of the same value counts as its only writer), taken out again.
fn reduce_after(ops: Vec<Operation<KeyModel>>, retired: Option<&KeyRetirement>) -> reduce::Reduced {
    let Some(carry) = retired.map(|r| &r.carry).filter(|c| c.state.is_some()) else {
        return reduce::reduce(ops);
    };
    let mut reduced = reduce::reduce(reads_from::with_start(&ops, carry));
    reduced.ops.remove(0);
    reduced
}

/// The key an operation acts on under a per-key model (`None`: it names none, or is a
/// transaction of several micro-ops).
fn op_key(op: &PairedOp, model: ModelKind) -> Option<Cow<'_, str>> {
    match (&op.args, &op.key, model) {
        (OpArgs::Txn(micro), _, _) => match micro.as_slice() {
            [m] => Some(Cow::Borrowed(m.key.as_str())),
            _ => None,
        },
        (_, Some(k), _) => Some(Cow::Borrowed(k.as_str())),
        (_, None, ModelKind::Kv) => None,
        (_, None, _) => Some(Cow::Borrowed(UNKEYED)),
    }
}

/// The key an invoke acts on and the value it writes (`Some(None)`: a delete; `None`: it
/// writes nothing the reads-from engine tracks), under a per-key model.
fn invoke_target(
    event: &HistoryEvent,
    model: ModelKind,
) -> Option<(Cow<'_, str>, Option<Option<Val>>)> {
    use serde_json::Value;
    if event.f == OpFn::Txn {
        let Value::Array(micro) = &event.value else {
            return None;
        };
        let [Value::Array(parts)] = micro.as_slice() else {
            return None;
        };
        let [f, key, value] = parts.as_slice() else {
            return None;
        };
        let key = match key {
            Value::String(k) => Cow::Borrowed(k.as_str()),
            Value::Number(n) => Cow::Owned(n.to_string()),
            _ => return None,
        };
        let writes = matches!(f.as_str(), Some("w" | "write")).then(|| Val::from_json(value));
        return Some((key, writes));
    }
    let key = match (&event.key, model) {
        (Some(k), _) => Cow::Borrowed(k.as_str()),
        (None, ModelKind::Kv) => return None,
        (None, _) => Cow::Borrowed(UNKEYED),
    };
    let writes = match event.f {
        OpFn::Write => Some(Val::from_json(&event.value)),
        OpFn::Cas => Some(event.value.get(1).and_then(Val::from_json)),
        OpFn::Delete => Some(None),
        OpFn::Read | OpFn::Txn => None,
    };
    Some((key, writes))
}

/// The key and single-key operation `op` is under a per-key model; `None` when the
/// operation constrains nothing (it failed, or it is a read whose value is unknown).
fn lower_key_op(
    op: &PairedOp,
    model: ModelKind,
) -> Result<Option<(Cow<'_, str>, KeyOp)>, HistoryError> {
    let at = op.invoke_at;
    let uncertain = matches!(op.outcome, Outcome::Info | Outcome::Open);
    if op.outcome == Outcome::Fail {
        return Ok(None);
    }
    let (key, key_op) = if op.f == OpFn::Txn {
        match single_micro(op) {
            Some((key, key_op)) => (Cow::Owned(key), key_op),
            None => return Err(HistoryError::UnsupportedOp { at, f: op.f, model }),
        }
    } else {
        let key = match (&op.key, model) {
            (Some(k), _) => Cow::Borrowed(k.as_str()),
            (None, ModelKind::Kv) => return Err(HistoryError::MissingKey { at, f: op.f }),
            (None, _) => Cow::Borrowed(UNKEYED),
        };
        let key_op = match (&op.args, &op.outcome) {
            (OpArgs::Read, Outcome::Ok { read, .. }) => KeyOp::Read(read.clone()),
            (OpArgs::Read, _) => return Ok(None),
            (OpArgs::Write(v), _) => KeyOp::Write(v.clone()),
            (OpArgs::Cas { expected, new }, _) => KeyOp::Cas {
                expected: expected.clone(),
                new: new.clone(),
                uncertain,
            },
            (OpArgs::Delete, _) => KeyOp::Delete,
            (OpArgs::Txn(_), _) => return Ok(None),
        };
        (key, key_op)
    };
    // An info read constrains nothing.
    if uncertain && matches!(key_op, KeyOp::Read(_)) {
        return Ok(None);
    }
    Ok(Some((key, key_op)))
}

/// Validates the history, checks that the model supports every operation, and lowers
/// operations into per-key porcupine operations (see [`crate::model`] for the rules).
fn prepare(events: &[HistoryEvent], model: ModelKind) -> Result<Prepared, HistoryError> {
    let locate = |position: usize| Location::Event {
        position,
        index: events[position].index,
    };
    let mut lowering = Lowering::new(model, false);
    for op in pair_operations(events, &locate)? {
        lowering.add(op);
    }
    lowering.finish(events.len())
}

/// The most key names a multi-register group's name lists.
const MAX_GROUP_NAME_KEYS: usize = 3;

/// A micro-op on a key name: a read's expectation (`None`: unknown) or a write.
enum Lowered {
    Read(String, Option<Option<Val>>),
    Write(String, Val),
}

impl Lowered {
    fn key(&self) -> &str {
        match self {
            Lowered::Read(k, _) | Lowered::Write(k, _) => k,
        }
    }
}

/// `op` as register micro-ops on key names; `None` for what tells the model nothing (a
/// failed op, an unanswered read, an uncertain transaction that only reads).
fn lower_multi(op: &PairedOp) -> Result<Option<Vec<Lowered>>, HistoryError> {
    let uncertain = matches!(op.outcome, Outcome::Info | Outcome::Open);
    if op.outcome == Outcome::Fail {
        return Ok(None);
    }
    let unsupported = HistoryError::UnsupportedOp {
        at: op.invoke_at,
        f: op.f,
        model: ModelKind::MultiRegister,
    };
    let key = || op.key.clone().unwrap_or_else(|| UNKEYED.to_owned());
    let micro: Vec<Lowered> = match (&op.args, &op.outcome) {
        (OpArgs::Read, Outcome::Ok { read, .. }) => {
            vec![Lowered::Read(key(), Some(read.clone()))]
        }
        (OpArgs::Read, _) => return Ok(None),
        (OpArgs::Write(v), _) => vec![Lowered::Write(key(), v.clone())],
        (OpArgs::Txn(invoked), outcome) => {
            let done = match outcome {
                Outcome::Ok {
                    txn: Some(done), ..
                } => Some(done),
                _ => None,
            };
            let mut out = Vec::with_capacity(invoked.len());
            for (i, m) in invoked.iter().enumerate() {
                match (m.f, &m.value) {
                    (MicroFn::Read, _) => {
                        // Reads of an info transaction are unknown; a list read is
                        // not a register's.
                        let done = done.and_then(|d| d.get(i));
                        if done.is_some_and(|d| d.list.is_some()) {
                            return Err(unsupported);
                        }
                        let seen = done.map(|d| d.value.clone());
                        out.push(Lowered::Read(m.key.clone(), seen));
                    }
                    (MicroFn::Write, Some(v)) => out.push(Lowered::Write(m.key.clone(), v.clone())),
                    _ => return Err(unsupported),
                }
            }
            out
        }
        _ => return Err(unsupported),
    };
    if micro.is_empty() || (uncertain && micro.iter().all(|m| matches!(m, Lowered::Read(..)))) {
        return Ok(None);
    }
    Ok(Some(micro))
}

/// Keys that one transaction touches together are one object: the groups of keys
/// (each in name order, groups in order of their smallest key's id) by union-find, and
/// each key's group.
fn key_groups<'a>(
    lowered: impl Iterator<Item = &'a [Lowered]> + Clone,
) -> (Vec<Arc<Vec<String>>>, BTreeMap<String, usize>) {
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for micro in lowered.clone() {
        for m in micro {
            let next = ids.len();
            ids.entry(m.key().to_owned()).or_insert(next);
        }
    }
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for micro in lowered {
        if let Some((first, rest)) = micro.split_first() {
            let f = ids[first.key()];
            for m in rest {
                let (a, b) = (find(&mut parent, f), find(&mut parent, ids[m.key()]));
                parent[a] = b;
            }
        }
    }
    // Group keys (in name order) by root.
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (k, &id) in &ids {
        let root = find(&mut parent, id);
        groups.entry(root).or_default().push(k.clone());
    }
    let mut group_of_key = BTreeMap::new();
    let mut names = Vec::with_capacity(groups.len());
    for keys in groups.into_values() {
        for k in &keys {
            group_of_key.insert(k.clone(), names.len());
        }
        names.push(Arc::new(keys));
    }
    (names, group_of_key)
}

/// A job's name: its first keys joined by `+`, and how many more.
fn group_job_name(names: &[String]) -> String {
    let mut name = names
        .iter()
        .take(MAX_GROUP_NAME_KEYS)
        .cloned()
        .collect::<Vec<_>>()
        .join("+");
    if names.len() > MAX_GROUP_NAME_KEYS {
        name.push_str(&format!("+{} more", names.len() - MAX_GROUP_NAME_KEYS));
    }
    name
}

fn prepare_multi(ops: &[PairedOp], end_time: i64) -> Result<Vec<KeyJob>, HistoryError> {
    let mut lowered: Vec<(&PairedOp, Vec<Lowered>)> = Vec::new();
    for op in ops {
        if let Some(micro) = lower_multi(op)? {
            lowered.push((op, micro));
        }
    }
    let (group_names, group_of_key) = key_groups(lowered.iter().map(|(_, m)| m.as_slice()));
    // A key's index within its group, in name order.
    let local: BTreeMap<&str, u32> = group_names
        .iter()
        .flat_map(|keys| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_str(), u32::try_from(i).unwrap_or(u32::MAX)))
        })
        .collect();
    let mut per_group: Vec<Vec<Operation<MultiModel>>> = vec![Vec::new(); group_names.len()];
    for (op, micro) in lowered {
        let Some(first) = micro.first() else {
            continue;
        };
        let g = group_of_key[first.key()];
        let multi = MultiOp {
            micro: micro
                .into_iter()
                .map(|m| match m {
                    Lowered::Write(k, v) => MultiMicro::Write(local[k.as_str()], v),
                    Lowered::Read(k, expected) => MultiMicro::Read(local[k.as_str()], expected),
                })
                .collect(),
            names: group_names[g].clone(),
        };
        per_group[g].push(porcupine_op(op, multi, end_time));
    }
    Ok(per_group
        .into_iter()
        .zip(group_names)
        .map(|(ops, names)| {
            let max_concurrency = max_concurrency(ops.iter().map(|o| (o.call_time, o.return_time)));
            KeyJob {
                name: group_job_name(&names),
                ops: JobOps::Multi(ops),
                max_concurrency,
                retired: None,
            }
        })
        .collect())
}

/// The most operations open at one instant, from (call, return) times.
fn max_concurrency(times: impl Iterator<Item = (i64, i64)>) -> usize {
    let mut edges: Vec<(i64, i8)> = Vec::new();
    for (call, ret) in times {
        edges.push((call, 1));
        edges.push((ret, -1));
    }
    // At equal times a return comes first: it closed before the other opened.
    edges.sort_unstable();
    let (mut open, mut most) = (0usize, 0usize);
    for (_, delta) in edges {
        if delta > 0 {
            open += 1;
            most = most.max(open);
        } else {
            open = open.saturating_sub(1);
        }
    }
    most
}

/// How one key's search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyVerdict {
    Valid,
    Invalid,
    /// Its time slice ran out.
    TimedOut,
    /// The memory budget ran out.
    OutOfMemory,
    /// The deadline passed before its turn.
    NotReached,
    /// More than [`MAX_OPS_PER_KEY`] operations.
    Oversized,
    /// Not decided because another key was found invalid first.
    Skipped,
    /// The reads-from engine, the only one allowed, could not decide it.
    Undecided,
}

/// What one key's search found.
#[derive(Clone, Debug)]
struct KeyResult {
    verdict: KeyVerdict,
    elapsed: Duration,
    decided_by: Option<Engine>,
    /// kvlab's engine's account, when it ran.
    kvlab: Option<EngineResult>,
    /// The reads-from engine's proof, when it found the key invalid.
    violation: Option<Box<reads_from::Violation>>,
    /// Why the reads-from engine could not decide, when that matters.
    reason: Option<String>,
}

impl KeyResult {
    fn not_reached() -> Self {
        KeyResult {
            verdict: KeyVerdict::NotReached,
            elapsed: Duration::ZERO,
            decided_by: None,
            kvlab: None,
            violation: None,
            reason: None,
        }
    }

    fn with_verdict(verdict: KeyVerdict) -> Self {
        KeyResult {
            verdict,
            ..KeyResult::not_reached()
        }
    }

    fn from_reads_from(decision: reads_from::Decision) -> Self {
        match decision {
            reads_from::Decision::Linearizable(_) => KeyResult {
                decided_by: Some(Engine::ReadsFrom),
                ..KeyResult::with_verdict(KeyVerdict::Valid)
            },
            reads_from::Decision::Violated(v) => KeyResult {
                decided_by: Some(Engine::ReadsFrom),
                violation: Some(Box::new(v)),
                ..KeyResult::with_verdict(KeyVerdict::Invalid)
            },
            reads_from::Decision::Unsure(why) => KeyResult {
                reason: Some(why),
                ..KeyResult::with_verdict(KeyVerdict::Undecided)
            },
        }
    }
}

fn worker_threads(jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(MAX_CHECK_THREADS).min(jobs).max(1)
}

fn stop_verdict(reason: StopReason) -> KeyVerdict {
    match reason {
        StopReason::Memory => KeyVerdict::OutOfMemory,
        StopReason::Deadline | StopReason::Cancelled => KeyVerdict::TimedOut,
        StopReason::Aborted => KeyVerdict::Skipped,
    }
}

/// Runs one engine, or the race, on one partition until `deadline`.
fn search_ops<M: SearchModel<Metadata = OpOrigin>>(
    ops: &[Operation<M>],
    config: &CheckConfig,
    deadline: Option<Instant>,
    abort: &Arc<AtomicBool>,
) -> KeyResult {
    let began = Instant::now();
    let memo_bytes = config
        .memory_limit_bytes
        .map_or(u64::MAX, |m| m / KVLAB_MEMO_SHARE_DIVISOR);
    let kvlab = |deadline: Option<Instant>, cancel: Option<&AtomicBool>| {
        let limits = Limits {
            deadline,
            memory_limit_bytes: None,
            cancel,
            abort: Some(abort),
        };
        engine::search(ops, &limits, memo_bytes)
    };
    let porcupine = |cancel: Arc<AtomicBool>| {
        let (ok, stopped) = budget::run_porcupine_guarded(
            deadline,
            config.memory_limit_bytes,
            cancel,
            Arc::clone(abort),
            || porcupine_rs::check_operations(ops),
        );
        match stopped {
            Some(reason) => stop_verdict(reason),
            None if ok => KeyVerdict::Valid,
            None => KeyVerdict::Invalid,
        }
    };
    let from_engine = |r: &EngineResult| match r.verdict {
        EngineVerdict::Linearizable => KeyVerdict::Valid,
        EngineVerdict::NotLinearizable => KeyVerdict::Invalid,
        EngineVerdict::Stopped(reason) => stop_verdict(reason),
    };
    let decided = |v: KeyVerdict| matches!(v, KeyVerdict::Valid | KeyVerdict::Invalid);
    let (verdict, decided_by, kvlab_result) = match config.engine {
        // `ReadsFrom` never gets here: `search_job` answers for it.
        Engine::Kvlab | Engine::ReadsFrom => {
            let r = kvlab(deadline, None);
            let v = from_engine(&r);
            (v, decided(v).then_some(Engine::Kvlab), Some(r))
        }
        Engine::Porcupine => {
            let v = porcupine(Arc::new(AtomicBool::new(false)));
            (v, decided(v).then_some(Engine::Porcupine), None)
        }
        Engine::Race => {
            let head_start = began.checked_add(RACE_HEAD_START);
            let first_deadline = match (deadline, head_start) {
                (Some(d), Some(h)) => Some(d.min(h)),
                (d, h) => d.or(h),
            };
            let first = kvlab(first_deadline, None);
            let v = from_engine(&first);
            if decided(v) || deadline.is_some_and(|d| Instant::now() >= d) {
                (v, decided(v).then_some(Engine::Kvlab), Some(first))
            } else {
                // The race: porcupine-rs on a second thread, kvlab's engine (from scratch)
                // here; the first definite answer cancels the other.
                let stop_porcupine = Arc::new(AtomicBool::new(false));
                let stop_kvlab = AtomicBool::new(false);
                std::thread::scope(|s| {
                    let rival = {
                        let stop = Arc::clone(&stop_porcupine);
                        let stop_kvlab = &stop_kvlab;
                        let porcupine = &porcupine;
                        s.spawn(move || {
                            let v = porcupine(stop);
                            if decided(v) {
                                stop_kvlab.store(true, Ordering::Relaxed);
                            }
                            v
                        })
                    };
                    let mine = kvlab(deadline, Some(&stop_kvlab));
                    let mine_v = from_engine(&mine);
                    if decided(mine_v) {
                        stop_porcupine.store(true, Ordering::Relaxed);
                    }
                    // A panic in porcupine-rs is an engine failure, not an answer.
                    let theirs = rival.join().unwrap_or(KeyVerdict::TimedOut);
                    if decided(mine_v) {
                        (mine_v, Some(Engine::Kvlab), Some(mine))
                    } else if decided(theirs) {
                        (theirs, Some(Engine::Porcupine), Some(mine))
                    } else {
                        let v = if theirs == KeyVerdict::OutOfMemory {
                            theirs
                        } else {
                            mine_v
                        };
                        (v, None, Some(mine))
                    }
                })
            }
        }
    };
    KeyResult {
        verdict,
        elapsed: began.elapsed(),
        decided_by,
        kvlab: kvlab_result,
        violation: None,
        reason: None,
    }
}

fn search_job(
    job: &KeyJob,
    config: &CheckConfig,
    deadline: Option<Instant>,
    abort: &Arc<AtomicBool>,
) -> KeyResult {
    if abort.load(Ordering::Relaxed) {
        return KeyResult::with_verdict(KeyVerdict::Skipped);
    }
    let result = match &job.ops {
        JobOps::Key(ops) => search_key(job, ops, config, deadline, abort),
        JobOps::Multi(_) if config.engine == Engine::ReadsFrom => KeyResult {
            reason: Some(
                "multi-register transactions are not single-register operations".to_owned(),
            ),
            ..KeyResult::with_verdict(KeyVerdict::Undecided)
        },
        JobOps::Multi(ops) if ops.len() > MAX_OPS_PER_KEY => {
            KeyResult::with_verdict(KeyVerdict::Oversized)
        }
        JobOps::Multi(ops) => search_ops(ops, config, deadline, abort),
    };
    if result.verdict == KeyVerdict::Invalid && config.stop_at_first_invalid {
        abort.store(true, Ordering::Relaxed);
    }
    result
}

/// One key: the reads-from engine first when the engine choice includes it (and alone
/// when part of the key was decided while reading), then the search engines.
fn search_key(
    job: &KeyJob,
    ops: &[Operation<KeyModel>],
    config: &CheckConfig,
    deadline: Option<Instant>,
    abort: &Arc<AtomicBool>,
) -> KeyResult {
    if let Some(v) = job.retired.as_ref().and_then(|r| r.violation.clone()) {
        return KeyResult::from_reads_from(reads_from::Decision::Violated(v));
    }
    if config.engine.uses_reads_from() || job.retired.is_some() {
        let carry = job
            .retired
            .as_ref()
            .map_or_else(reads_from::Carry::default, |r| r.carry.clone());
        let result = KeyResult::from_reads_from(reads_from::decide(ops, &carry));
        if result.verdict != KeyVerdict::Undecided {
            return result;
        }
        if config.engine == Engine::ReadsFrom {
            return result;
        }
        if let Some(r) = &job.retired {
            return search_rest(ops, &r.carry, config, deadline, abort);
        }
    }
    if ops.len() > MAX_OPS_PER_KEY {
        return KeyResult::with_verdict(KeyVerdict::Oversized);
    }
    search_ops(ops, config, deadline, abort)
}

/// The search engines on what is left of a key after what was decided while reading
/// (`ops`, which the reads-from engine could not decide): the retired operations come
/// first in a linearization if there is one (see [`reads_from`], "Deciding while
/// reading" and "Cutting"), so the key is linearizable iff no operation left completed
/// before a retired one began and `ops` linearize from the state the retired ones left.
fn search_rest(
    ops: &[Operation<KeyModel>],
    carry: &reads_from::Carry,
    config: &CheckConfig,
    deadline: Option<Instant>,
    abort: &Arc<AtomicBool>,
) -> KeyResult {
    if let Some(v) = reads_from::completed_before_retired(ops, carry) {
        return KeyResult::from_reads_from(reads_from::Decision::Violated(v));
    }
    if ops.len() >= MAX_OPS_PER_KEY {
        return KeyResult::with_verdict(KeyVerdict::Oversized);
    }
    let mut result = search_ops(&reads_from::with_start(ops, carry), config, deadline, abort);
    // Positions in `ops` again (the first operation stands for the retired ones).
    if let Some(r) = result.kvlab.as_mut() {
        for list in [&mut r.longest, &mut r.stuck] {
            list.retain(|&p| p > 0);
            list.iter_mut().for_each(|p| *p -= 1);
        }
        r.max_depth = r.max_depth.saturating_sub(1);
    }
    result
}

/// Runs the two passes described in the module docs; returns one result per job.
fn run_jobs(
    jobs: &[KeyJob],
    config: &CheckConfig,
    start: Instant,
    threads: usize,
    progress: Option<&Progress>,
) -> Vec<KeyResult> {
    // A budget too large to add to a clock reading is no budget at all.
    let timeout = config.timeout.filter(|t| start.checked_add(*t).is_some());
    let deadline = timeout.and_then(|t| start.checked_add(t));
    let remaining = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let timed_jobs = jobs
        .iter()
        .filter(|j| j.len() > UNTIMED_KEY_MAX_OPS)
        .count()
        .max(1);
    let first_slice = timeout.map(|t| {
        let share = FIRST_PASS_BUDGET_SHARE * threads as f64 / timed_jobs as f64;
        Duration::try_from_secs_f64(t.as_secs_f64() * share)
            .unwrap_or(t)
            .max(MIN_KEY_SLICE)
            .min(t)
    });
    // A key is decided when its search ends with anything but a time-out, which the
    // second pass may retry.
    let counted = |result: KeyResult, final_pass: bool| {
        if let Some(p) = progress
            && (final_pass || result.verdict != KeyVerdict::TimedOut)
        {
            p.key_decided();
        }
        result
    };

    let abort = Arc::new(AtomicBool::new(false));
    let abort = &abort;
    let all: Vec<usize> = (0..jobs.len()).collect();
    let mut results = parallel_map(&all, threads, |i| {
        let job = &jobs[i];
        let result = if job.len() <= UNTIMED_KEY_MAX_OPS {
            search_job(job, config, None, abort)
        } else {
            match (first_slice, remaining()) {
                (Some(_), Some(left)) if left.is_zero() => KeyResult::not_reached(),
                (Some(slice), Some(left)) => search_job(
                    job,
                    config,
                    Instant::now().checked_add(slice.min(left)),
                    abort,
                ),
                _ => search_job(job, config, None, abort),
            }
        };
        counted(result, false)
    });

    let retry: Vec<usize> = (0..jobs.len())
        .filter(|&i| results[i].verdict == KeyVerdict::TimedOut)
        .collect();
    if !retry.is_empty() && remaining().is_some_and(|left| !left.is_zero()) {
        let second = parallel_map(&retry, threads, |i| {
            let result = match remaining() {
                Some(left) if !left.is_zero() => search_job(&jobs[i], config, deadline, abort),
                _ => KeyResult::with_verdict(KeyVerdict::TimedOut),
            };
            counted(result, true)
        });
        for i in retry {
            let mut again = second[i].clone();
            again.elapsed += results[i].elapsed;
            results[i] = again;
        }
    }
    results
}

/// Applies `f` to every job index in `indices` on up to `threads` workers; the result
/// vector is indexed like the job list (entries for other indices are `NotReached`).
fn parallel_map<F>(indices: &[usize], threads: usize, f: F) -> Vec<KeyResult>
where
    F: Fn(usize) -> KeyResult + Sync,
{
    let size = indices.iter().max().map_or(0, |m| m + 1);
    let results = Mutex::new(vec![KeyResult::not_reached(); size]);
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let slot = next.fetch_add(1, Ordering::Relaxed);
            let Some(&i) = indices.get(slot) else {
                break;
            };
            let began = Instant::now();
            let mut result = f(i);
            result.elapsed = began.elapsed();
            // A poisoned lock means another worker panicked; the scope re-raises it.
            if let Ok(mut r) = results.lock() {
                r[i] = result;
            }
        }
    };
    let workers = threads.min(indices.len()).max(1);
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// How a person finds `o` in the history.
pub(crate) fn op_ref<M: porcupine_rs::Model<Metadata = OpOrigin>>(o: &Operation<M>) -> OpRef {
    let m = o.metadata.as_ref();
    OpRef {
        process: m.map_or(0, |m| m.process),
        invoke_index: m.map_or(0, |m| m.invoke_index),
        complete_index: m.and_then(|m| m.complete_index),
        description: format!(
            "{}{}",
            M::describe_operation(&o.op),
            if m.is_some_and(|m| m.uncertain) {
                " (info)"
            } else {
                ""
            }
        ),
    }
}

/// Turns input positions of a job's operations into [`OpRef`]s.
fn op_refs(job: &KeyJob, positions: &[usize]) -> Vec<OpRef> {
    fn refs<M: porcupine_rs::Model<Metadata = OpOrigin>>(
        ops: &[Operation<M>],
        positions: &[usize],
    ) -> Vec<OpRef> {
        positions
            .iter()
            .filter_map(|&p| ops.get(p))
            .map(op_ref)
            .collect()
    }
    match &job.ops {
        JobOps::Key(ops) => refs(ops, positions),
        JobOps::Multi(ops) => refs(ops, positions),
    }
}

fn partition_report(job: &KeyJob, result: &KeyResult, verdict: Verdict) -> PartitionReport {
    let explored = result.kvlab.as_ref();
    let unknown_reason = match result.verdict {
        KeyVerdict::TimedOut => Some("time budget".to_owned()),
        KeyVerdict::OutOfMemory => Some("memory budget".to_owned()),
        KeyVerdict::NotReached => Some("time budget (not reached)".to_owned()),
        KeyVerdict::Oversized => Some("limit on operations per key".to_owned()),
        KeyVerdict::Skipped => {
            Some("stop at the first invalid key (another key is invalid)".to_owned())
        }
        KeyVerdict::Undecided => Some(format!(
            "reads-from engine, which could not decide it: {}",
            result.reason.as_deref().unwrap_or("no reason given")
        )),
        KeyVerdict::Valid | KeyVerdict::Invalid => None,
    };
    if let Some(v) = &result.violation {
        let mut first = op_refs(job, &v.ops);
        first.extend(v.retired.iter().cloned());
        // The engine's partial linearization; for a small key without one, the longest
        // one kvlab's search finds quickly.
        let searched = match (&job.ops, job.retired.is_some()) {
            (JobOps::Key(ops), false) if v.partial.is_empty() && ops.len() <= MAX_OPS_PER_KEY => {
                let limits = Limits {
                    deadline: Instant::now().checked_add(EXPLANATION_BUDGET),
                    memory_limit_bytes: None,
                    cancel: None,
                    abort: None,
                };
                Some(engine::search(ops, &limits, EXPLANATION_MEMO_BYTES).longest)
            }
            _ => None,
        };
        let partial = searched.as_deref().unwrap_or(&v.partial);
        let from = partial.len().saturating_sub(MAX_EXPLAINED_OPS);
        return PartitionReport {
            key: job.name.clone(),
            verdict,
            operations: job.len() + job.retired.as_ref().map_or(0, |r| r.carry.retired_ops),
            decided_by: result.decided_by,
            unknown_reason,
            explanation: Some(v.sentence.clone()),
            first_unlinearizable: first,
            longest_partial_len: partial.len(),
            longest_partial_tail: op_refs(job, &partial[from..]),
            steps_explored: 0,
            configurations_remembered: 0,
        };
    }
    // The explanation comes from kvlab's engine; when porcupine-rs decided first, run
    // kvlab's engine briefly to get one.
    let explanation = match (verdict, explored) {
        (Verdict::Invalid, Some(r)) if r.verdict == EngineVerdict::NotLinearizable => {
            Some(r.clone())
        }
        // Without the operations decided while reading, the search would explain
        // another history.
        (Verdict::Invalid, _) if job.retired.is_none() => {
            let limits = Limits {
                deadline: Instant::now().checked_add(EXPLANATION_BUDGET),
                memory_limit_bytes: None,
                cancel: None,
                abort: None,
            };
            let r = match &job.ops {
                JobOps::Key(ops) => engine::search(ops, &limits, EXPLANATION_MEMO_BYTES),
                JobOps::Multi(ops) => engine::search(ops, &limits, EXPLANATION_MEMO_BYTES),
            };
            (r.verdict == EngineVerdict::NotLinearizable).then_some(r)
        }
        _ => None,
    };
    let (first, longest_len, tail) = match &explanation {
        Some(r) => {
            let from = r.longest.len().saturating_sub(MAX_EXPLAINED_OPS);
            (
                op_refs(job, &r.stuck),
                r.longest.len(),
                op_refs(job, &r.longest[from..]),
            )
        }
        None => (Vec::new(), explored.map_or(0, |r| r.max_depth), Vec::new()),
    };
    PartitionReport {
        key: job.name.clone(),
        verdict,
        operations: job.len() + job.retired.as_ref().map_or(0, |r| r.carry.retired_ops),
        decided_by: result.decided_by,
        unknown_reason,
        explanation: None,
        first_unlinearizable: first,
        longest_partial_len: longest_len,
        longest_partial_tail: tail,
        steps_explored: explored.map_or(0, |r| r.steps),
        configurations_remembered: explored.map_or(0, |r| r.memo_entries),
    }
}

/// The time kvlab's engine gets to explain a key porcupine-rs found invalid.
const EXPLANATION_BUDGET: Duration = Duration::from_secs(2);

/// The memo kvlab's engine gets to explain a key porcupine-rs found invalid.
const EXPLANATION_MEMO_BYTES: u64 = 64 << 20;

/// What [`build_report`] counted of the keys, for its notes.
#[derive(Default)]
struct Tally {
    timed_out: usize,
    not_reached: usize,
    out_of_memory: usize,
    memo_full_keys: usize,
    skipped: usize,
    undecided: usize,
    oversized: usize,
}

/// The report's sentences for a person: limits hit, budget spent, reductions made.
fn report_notes(
    prepared: &Prepared,
    config: &CheckConfig,
    tally: &Tally,
    busiest: Option<&KeyJob>,
    verdict: Verdict,
) -> Vec<String> {
    let mut notes = Vec::new();
    if prepared.operations == 0 {
        notes.push(
            "the history holds no operations: it is valid only because there is nothing to check"
                .to_owned(),
        );
    }
    if tally.timed_out + tally.not_reached > 0 {
        notes.push(format!(
            "the time budget of {} ms ran out: {} keys timed out and {} were not reached; their verdict is unknown",
            config.timeout.map_or(0, |t| t.as_millis()),
            tally.timed_out,
            tally.not_reached
        ));
    }
    if tally.skipped > 0 {
        notes.push(format!(
            "{} keys were left undecided because another key was found invalid first",
            tally.skipped
        ));
    }
    if tally.out_of_memory > 0 {
        notes.push(format!(
            "the memory budget of {} MiB ran out on {} keys; their verdict is unknown",
            config.memory_limit_bytes.unwrap_or(0) >> 20,
            tally.out_of_memory
        ));
    }
    if tally.memo_full_keys > 0 {
        notes.push(format!(
            "kvlab's engine filled its memo (a quarter of the memory budget) on {} keys and searched on without remembering more",
            tally.memo_full_keys
        ));
    }
    if tally.oversized > 0 {
        notes.push(format!(
            "{} keys have more than {MAX_OPS_PER_KEY} operations and were not searched",
            tally.oversized
        ));
    }
    if tally.undecided > 0 {
        notes.push(format!(
            "{} keys were left to the reads-from engine alone, which could not decide them",
            tally.undecided
        ));
    }
    if prepared.unobserved_info_dropped > 0 {
        notes.push(format!(
            "{} info operations were dropped because no operation that surely happened can observe their effect",
            prepared.unobserved_info_dropped
        ));
    }
    if prepared.info_bounded > 0 {
        notes.push(format!(
            "{} info operations had to take effect (an ok operation observes the value only they write), so they stay open only until their first observer completed",
            prepared.info_bounded
        ));
    }
    if prepared.decided_while_reading > 0 {
        notes.push(format!(
            "{} operations were decided by the reads-from engine while the history was read, and forgotten",
            prepared.decided_while_reading
        ));
    }
    if let Some(j) = busiest
        && verdict == Verdict::Unknown
    {
        notes.push(format!(
            "key {:?} has up to {} operations open at once; concurrency per key is what makes the search slow",
            j.name, j.max_concurrency
        ));
    }

    notes
}

fn build_report(
    prepared: &Prepared,
    results: &[KeyResult],
    config: &CheckConfig,
    threads: usize,
    elapsed: Duration,
) -> CheckReport {
    let mut invalid_keys = Vec::new();
    let mut unknown_keys = Vec::new();
    let mut oversized_keys = Vec::new();
    let mut partitions = Vec::new();
    let mut budget_exhausted = false;
    let mut tally = Tally::default();
    let mut decided_by = EngineWins::default();
    let mut slowest: Option<(&str, Duration)> = None;
    for (job, result) in prepared.jobs.iter().zip(results) {
        match result.decided_by {
            Some(Engine::Porcupine) => decided_by.porcupine += 1,
            Some(Engine::ReadsFrom) => decided_by.reads_from += 1,
            Some(_) => decided_by.kvlab += 1,
            None => {}
        }
        if result.kvlab.as_ref().is_some_and(|r| r.memo_full) {
            tally.memo_full_keys += 1;
        }
        let verdict = match result.verdict {
            KeyVerdict::Valid => Verdict::Valid,
            KeyVerdict::Invalid => {
                invalid_keys.push(job.name.clone());
                Verdict::Invalid
            }
            KeyVerdict::TimedOut | KeyVerdict::NotReached | KeyVerdict::OutOfMemory => {
                budget_exhausted = true;
                match result.verdict {
                    KeyVerdict::TimedOut => tally.timed_out += 1,
                    KeyVerdict::NotReached => tally.not_reached += 1,
                    _ => tally.out_of_memory += 1,
                }
                unknown_keys.push(job.name.clone());
                Verdict::Unknown
            }
            KeyVerdict::Oversized => {
                oversized_keys.push(job.name.clone());
                unknown_keys.push(job.name.clone());
                Verdict::Unknown
            }
            KeyVerdict::Skipped => {
                tally.skipped += 1;
                unknown_keys.push(job.name.clone());
                Verdict::Unknown
            }
            KeyVerdict::Undecided => {
                tally.undecided += 1;
                unknown_keys.push(job.name.clone());
                Verdict::Unknown
            }
        };
        if verdict != Verdict::Valid {
            partitions.push(partition_report(job, result, verdict));
        }
        if slowest.is_none_or(|(_, t)| result.elapsed > t) {
            slowest = Some((&job.name, result.elapsed));
        }
    }
    let busiest = prepared
        .jobs
        .iter()
        .max_by_key(|j| (j.max_concurrency, std::cmp::Reverse(&j.name)));
    let verdict = if !invalid_keys.is_empty() {
        Verdict::Invalid
    } else if !unknown_keys.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let operations_checked =
        prepared.jobs.iter().map(KeyJob::len).sum::<usize>() + prepared.decided_while_reading;

    tally.oversized = oversized_keys.len();
    let notes = report_notes(prepared, config, &tally, busiest, verdict);

    CheckReport {
        verdict,
        model: config.model,
        operations: prepared.operations,
        operations_ok: prepared.operations_ok,
        operations_fail: prepared.operations_fail,
        operations_info: prepared.operations_info,
        operations_checked,
        unobserved_info_dropped: prepared.unobserved_info_dropped,
        info_bounded: prepared.info_bounded,
        decided_while_reading: prepared.decided_while_reading,
        keys_checked: prepared.jobs.len(),
        invalid_keys,
        unknown_keys,
        oversized_keys,
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        timeout_ms: config.timeout.map(|t| t.as_secs_f64() * 1e3),
        budget_exhausted,
        threads,
        max_concurrency_key: busiest.map(|j| j.name.clone()),
        max_concurrency: busiest.map_or(0, |j| j.max_concurrency),
        slowest_key: slowest.map(|(k, _)| k.to_owned()),
        slowest_key_ms: slowest.map_or(0.0, |(_, t)| t.as_secs_f64() * 1e3),
        notes,
        partitions,
        decided_by,
        memory_limit_bytes: config.memory_limit_bytes,
        peak_resident_bytes: budget::peak_resident_bytes(),
    }
}
