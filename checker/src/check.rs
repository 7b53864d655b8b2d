//! The linearizability check: split a history by key, search each key with porcupine-rs
//! on a bounded pool of threads within a time budget, and report per key.
//!
//! Every key is an independent porcupine partition (see [`crate::model`]), for all three
//! models: a `register` history over many keys is many registers, checked one by one.
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
//! about `n²/8` bytes for `n` operations) and are unknown too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use porcupine_rs::{CheckResult, Operation};
use serde::{Deserialize, Serialize};

use crate::history::{
    HistoryError, HistoryEvent, Location, OpArgs, OpFn, Outcome, pair_operations,
};
use crate::model::{KeyModel, KeyOp, OpOrigin};

/// The most worker threads one check uses (each may add one porcupine thread).
pub const MAX_CHECK_THREADS: usize = 8;

/// Keys with at most this many operations are searched without a timeout: the search
/// over so few operations is bounded and tiny, and needs no extra thread.
pub const UNTIMED_KEY_MAX_OPS: usize = 10;

/// Keys with more operations than this are not searched and count as unknown:
/// porcupine's memo table stores a bitset of all operations per visited state, about
/// `n²/8` bytes for `n` operations even on a sequential history.
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
    /// A key-value map: read/write/cas/delete, every key independent.
    Kv,
}

impl ModelKind {
    /// Every model, for command-line help.
    pub const ALL: [ModelKind; 3] = [ModelKind::Register, ModelKind::CasRegister, ModelKind::Kv];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Register => "register",
            ModelKind::CasRegister => "cas-register",
            ModelKind::Kv => "kv",
        }
    }

    /// The model with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn supports(self, f: OpFn) -> bool {
        match f {
            OpFn::Read | OpFn::Write => true,
            OpFn::Cas => self != ModelKind::Register,
            OpFn::Delete => self == ModelKind::Kv,
            OpFn::Txn => false,
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
    /// Operations handed to the search, after dropping fails, info reads and info
    /// writes whose effect nothing observes.
    pub operations_checked: usize,
    /// Info writes, cas and deletes dropped because no operation observes their effect.
    pub unobserved_info_dropped: usize,
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

/// Decides whether `events` is linearizable under `opts.model`, key by key.
///
/// Errors are malformed histories (see [`HistoryError`]); a non-linearizable history is
/// an [`Verdict::Invalid`] report. With a timeout, keys not decided in time are unknown,
/// never valid.
pub fn check(events: &[HistoryEvent], opts: &CheckOptions) -> Result<CheckReport, HistoryError> {
    let start = Instant::now();
    let prepared = prepare(events, opts.model)?;
    let threads = worker_threads(prepared.jobs.len());
    let results = run_jobs(&prepared.jobs, opts.timeout, start, threads);
    Ok(build_report(
        &prepared,
        &results,
        opts,
        threads,
        start.elapsed(),
    ))
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
    let start = Instant::now();
    let prepared = prepare(events, opts.model)?;
    let name = match key {
        Some(k) => k.to_owned(),
        None => {
            let threads = worker_threads(prepared.jobs.len());
            let results = run_jobs(&prepared.jobs, opts.timeout, start, threads);
            let report = build_report(&prepared, &results, opts, threads, start.elapsed());
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
    let Some(job) = prepared.jobs.iter().find(|j| j.name == name) else {
        return Err(CheckError::UnknownKey { key: name });
    };
    if job.ops.len() > MAX_VISUALIZED_OPS {
        return Err(CheckError::TooLargeToVisualize {
            key: name,
            operations: job.ops.len(),
            limit: MAX_VISUALIZED_OPS,
        });
    }
    // The verdict porcupine returns here is ignored: with a timeout, its info mode
    // reports partitions it cancelled as illegal. Only the partial linearizations matter.
    let (_, info) = match opts.timeout {
        None => porcupine_rs::check_operations_info(&job.ops),
        Some(t) => porcupine_rs::check_operations_info_timeout(&job.ops, t),
    };
    porcupine_rs::visualize_path::<KeyModel>(&info, path).map_err(|source| CheckError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// One key's operations, ready for the search.
struct KeyJob {
    name: String,
    ops: Vec<Operation<KeyModel>>,
    max_concurrency: usize,
}

/// A history lowered to per-key jobs, with the counts the report needs.
struct Prepared {
    jobs: Vec<KeyJob>,
    operations: usize,
    operations_ok: usize,
    operations_fail: usize,
    operations_info: usize,
    unobserved_info_dropped: usize,
}

/// Validates the history, checks that the model supports every operation, and lowers
/// operations into per-key porcupine operations (see [`crate::model`] for the rules).
fn prepare(events: &[HistoryEvent], model: ModelKind) -> Result<Prepared, HistoryError> {
    let locate = |position: usize| Location::Event {
        position,
        index: events[position].index,
    };
    let ops = pair_operations(events, &locate)?;
    // Info operations return "at infinity": after every event of the history.
    let end_time = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let mut per_key: BTreeMap<String, Vec<Operation<KeyModel>>> = BTreeMap::new();
    let (mut ok, mut fail, mut info) = (0, 0, 0);
    for op in &ops {
        let at = locate(op.invoke_position);
        if !model.supports(op.f) {
            return Err(HistoryError::UnsupportedOp { at, f: op.f, model });
        }
        let key = match (&op.key, model) {
            (Some(k), _) => k.clone(),
            (None, ModelKind::Kv) => return Err(HistoryError::MissingKey { at, f: op.f }),
            (None, _) => UNKEYED.to_owned(),
        };
        let uncertain = matches!(op.outcome, Outcome::Info | Outcome::Open);
        match op.outcome {
            Outcome::Ok { .. } => ok += 1,
            Outcome::Fail => fail += 1,
            Outcome::Info | Outcome::Open => info += 1,
        }
        let key_op = match (op.args, op.outcome) {
            (_, Outcome::Fail) => continue,
            (OpArgs::Read, Outcome::Ok { read }) => KeyOp::Read(read),
            (OpArgs::Read, _) => continue,
            (OpArgs::Write(v), _) => KeyOp::Write(v),
            (OpArgs::Cas { expected, new }, _) => KeyOp::Cas {
                expected,
                new,
                uncertain,
            },
            (OpArgs::Delete, _) => KeyOp::Delete,
            // Unreachable: no model supports txn, rejected above.
            (OpArgs::Txn, _) => continue,
        };
        let return_time = match (op.complete_position, uncertain) {
            (Some(p), false) => i64::try_from(p).unwrap_or(i64::MAX),
            _ => end_time,
        };
        per_key.entry(key).or_default().push(Operation {
            client_id: u32::try_from(op.process).ok(),
            call_time: i64::try_from(op.invoke_position).unwrap_or(i64::MAX),
            return_time,
            op: key_op,
            metadata: Some(OpOrigin {
                process: op.process,
                invoke_index: op.invoke_index,
                complete_index: op.complete_index,
                uncertain,
                node: op.node,
            }),
        });
    }
    let mut dropped = 0;
    let jobs = per_key
        .into_iter()
        .map(|(name, ops)| {
            let before = ops.len();
            let ops = drop_unobserved_info(ops);
            dropped += before - ops.len();
            let max_concurrency = max_concurrency(&ops);
            KeyJob {
                name,
                ops,
                max_concurrency,
            }
        })
        .collect();
    Ok(Prepared {
        jobs,
        operations: ops.len(),
        operations_ok: ok,
        operations_fail: fail,
        operations_info: info,
        unobserved_info_dropped: dropped,
    })
}

fn is_uncertain(op: &Operation<KeyModel>) -> bool {
    op.metadata.as_ref().is_some_and(|m| m.uncertain)
}

/// Drops info writes, cas and deletes whose resulting value no kept operation can
/// observe (the sound reduction proved in [`crate::model`]).
fn drop_unobserved_info(ops: Vec<Operation<KeyModel>>) -> Vec<Operation<KeyModel>> {
    let mut observed: BTreeSet<Option<i64>> = BTreeSet::new();
    for op in &ops {
        match op.op {
            KeyOp::Read(v) => {
                observed.insert(v);
            }
            KeyOp::Cas { expected, .. } => {
                observed.insert(expected);
            }
            KeyOp::Write(_) | KeyOp::Delete => {}
        }
    }
    ops.into_iter()
        .filter(|op| {
            !is_uncertain(op)
                || match op.op {
                    KeyOp::Read(_) => true,
                    KeyOp::Write(v) => observed.contains(&Some(v)),
                    KeyOp::Cas { new, .. } => observed.contains(&Some(new)),
                    KeyOp::Delete => observed.contains(&None),
                }
        })
        .collect()
}

/// The most operations open at one instant.
fn max_concurrency(ops: &[Operation<KeyModel>]) -> usize {
    let mut edges: Vec<(i64, i8)> = Vec::with_capacity(ops.len() * 2);
    for op in ops {
        edges.push((op.call_time, 1));
        edges.push((op.return_time, -1));
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
    /// The deadline passed before its turn.
    NotReached,
    /// More than [`MAX_OPS_PER_KEY`] operations.
    Oversized,
}

#[derive(Clone, Copy, Debug)]
struct KeyResult {
    verdict: KeyVerdict,
    elapsed: Duration,
}

fn worker_threads(jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(MAX_CHECK_THREADS).min(jobs).max(1)
}

/// Searches one key, within `limit` if given.
fn search_key(job: &KeyJob, limit: Option<Duration>) -> KeyVerdict {
    match limit {
        None => {
            if porcupine_rs::check_operations(&job.ops) {
                KeyVerdict::Valid
            } else {
                KeyVerdict::Invalid
            }
        }
        Some(t) => match porcupine_rs::check_operations_timeout(&job.ops, t) {
            CheckResult::Ok => KeyVerdict::Valid,
            CheckResult::Illegal => KeyVerdict::Invalid,
            CheckResult::Unknown => KeyVerdict::TimedOut,
        },
    }
}

/// Runs the two passes described in the module docs; returns one result per job.
fn run_jobs(
    jobs: &[KeyJob],
    timeout: Option<Duration>,
    start: Instant,
    threads: usize,
) -> Vec<KeyResult> {
    // A budget too large to add to a clock reading is no budget at all.
    let timeout = timeout.filter(|t| start.checked_add(*t).is_some());
    let deadline = timeout.and_then(|t| start.checked_add(t));
    let remaining = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let timed_jobs = jobs
        .iter()
        .filter(|j| j.ops.len() > UNTIMED_KEY_MAX_OPS && j.ops.len() <= MAX_OPS_PER_KEY)
        .count()
        .max(1);
    let first_slice = timeout.map(|t| {
        let share = FIRST_PASS_BUDGET_SHARE * threads as f64 / timed_jobs as f64;
        Duration::try_from_secs_f64(t.as_secs_f64() * share)
            .unwrap_or(t)
            .max(MIN_KEY_SLICE)
            .min(t)
    });

    let all: Vec<usize> = (0..jobs.len()).collect();
    let mut results = parallel_map(&all, threads, |i| {
        let job = &jobs[i];
        if job.ops.len() > MAX_OPS_PER_KEY {
            return KeyVerdict::Oversized;
        }
        if job.ops.len() <= UNTIMED_KEY_MAX_OPS {
            return search_key(job, None);
        }
        match (first_slice, remaining()) {
            (Some(_), Some(left)) if left.is_zero() => KeyVerdict::NotReached,
            (Some(slice), Some(left)) => search_key(job, Some(slice.min(left))),
            _ => search_key(job, None),
        }
    });

    let retry: Vec<usize> = (0..jobs.len())
        .filter(|&i| results[i].verdict == KeyVerdict::TimedOut)
        .collect();
    if !retry.is_empty() && remaining().is_some_and(|left| !left.is_zero()) {
        let second = parallel_map(&retry, threads, |i| match remaining() {
            Some(left) if !left.is_zero() => search_key(&jobs[i], Some(left)),
            _ => KeyVerdict::TimedOut,
        });
        for i in retry {
            let again = second[i];
            results[i] = KeyResult {
                verdict: again.verdict,
                elapsed: results[i].elapsed + again.elapsed,
            };
        }
    }
    results
}

/// Applies `f` to every job index in `indices` on up to `threads` workers; the result
/// vector is indexed like the job list (entries for other indices are `NotReached`).
fn parallel_map<F>(indices: &[usize], threads: usize, f: F) -> Vec<KeyResult>
where
    F: Fn(usize) -> KeyVerdict + Sync,
{
    let size = indices.iter().max().map_or(0, |m| m + 1);
    let results = Mutex::new(vec![
        KeyResult {
            verdict: KeyVerdict::NotReached,
            elapsed: Duration::ZERO,
        };
        size
    ]);
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let slot = next.fetch_add(1, Ordering::Relaxed);
            let Some(&i) = indices.get(slot) else {
                break;
            };
            let began = Instant::now();
            let verdict = f(i);
            let result = KeyResult {
                verdict,
                elapsed: began.elapsed(),
            };
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

fn build_report(
    prepared: &Prepared,
    results: &[KeyResult],
    opts: &CheckOptions,
    threads: usize,
    elapsed: Duration,
) -> CheckReport {
    let mut invalid_keys = Vec::new();
    let mut unknown_keys = Vec::new();
    let mut oversized_keys = Vec::new();
    let mut budget_exhausted = false;
    let (mut timed_out, mut not_reached) = (0, 0);
    let mut slowest: Option<(&str, Duration)> = None;
    for (job, result) in prepared.jobs.iter().zip(results) {
        match result.verdict {
            KeyVerdict::Valid => {}
            KeyVerdict::Invalid => invalid_keys.push(job.name.clone()),
            KeyVerdict::TimedOut | KeyVerdict::NotReached => {
                budget_exhausted = true;
                if result.verdict == KeyVerdict::TimedOut {
                    timed_out += 1;
                } else {
                    not_reached += 1;
                }
                unknown_keys.push(job.name.clone());
            }
            KeyVerdict::Oversized => {
                oversized_keys.push(job.name.clone());
                unknown_keys.push(job.name.clone());
            }
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
    let operations_checked = prepared.jobs.iter().map(|j| j.ops.len()).sum();

    let mut notes = Vec::new();
    if budget_exhausted {
        notes.push(format!(
            "the time budget of {} ms ran out: {timed_out} keys timed out and {not_reached} were not reached; their verdict is unknown",
            opts.timeout.map_or(0, |t| t.as_millis())
        ));
    }
    if !oversized_keys.is_empty() {
        notes.push(format!(
            "{} keys have more than {MAX_OPS_PER_KEY} operations and were not searched",
            oversized_keys.len()
        ));
    }
    if prepared.unobserved_info_dropped > 0 {
        notes.push(format!(
            "{} info operations were dropped because no operation observes their effect",
            prepared.unobserved_info_dropped
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

    CheckReport {
        verdict,
        model: opts.model,
        operations: prepared.operations,
        operations_ok: prepared.operations_ok,
        operations_fail: prepared.operations_fail,
        operations_info: prepared.operations_info,
        operations_checked,
        unobserved_info_dropped: prepared.unobserved_info_dropped,
        keys_checked: prepared.jobs.len(),
        invalid_keys,
        unknown_keys,
        oversized_keys,
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        timeout_ms: opts.timeout.map(|t| t.as_secs_f64() * 1e3),
        budget_exhausted,
        threads,
        max_concurrency_key: busiest.map(|j| j.name.clone()),
        max_concurrency: busiest.map_or(0, |j| j.max_concurrency),
        slowest_key: slowest.map(|(k, _)| k.to_owned()),
        slowest_key_ms: slowest.map_or(0.0, |(_, t)| t.as_secs_f64() * 1e3),
        notes,
    }
}
