//! One run, from a validated spec and a seed to a run directory and a verdict: start the
//! cluster on the spec's backend, drive it through its phases ([`crate::driver`]), write
//! `spec.toml`, `meta.json`, `history.jsonl`, `events.jsonl`, check the history, write
//! `summary.json`, `linearizability.html` (invalid runs), plots and `report.html`.
//!
//! [`start_cluster`] is the one place that picks a backend.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;
use kvlab_checker::{CheckConfig, CheckOptions, CheckReport, HistoryEvent, ReadOptions, Verdict};
use kvlab_node::SystemKind;
use kvlab_node::baseline::{AsyncPrimary, Single};
use kvlab_node::composed::KvlabNode;
use kvlab_node::raft_kv::RaftKv;
use kvlab_swim::SwimNode;
use kvlab_types::Time;
use serde::Serialize;

use crate::cluster::{BackendReport, Cluster, SimCluster};
use crate::driver::{Driven, Progress, ProgressLine, drive};
use crate::error::ExperimentError;
use crate::events::RunEvent;
use crate::isolation::{IsolationSummary, check_isolation};
use crate::observe::raft::RaftInvariants;
use crate::observe::ring::RingObserver;
use crate::observe::swim::SwimObserver;
use crate::observe::txn::TxnObserver;
use crate::observe::{Observer, ObserverReport};
use crate::reproduce::Reproduce;
use crate::spec::{BackendKind, Spec, secs_to_ns};
use crate::summary::{OpCounts, Summary};

/// The commit this binary was built from (`git rev-parse HEAD` at build time, or
/// `unknown`).
pub const BUILD_COMMIT: &str = env!("KVLAB_COMMIT");
/// The compiler that built this binary (`rustc --version`, or `unknown`).
pub const BUILD_RUSTC: &str = env!("KVLAB_RUSTC");

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunVerdict {
    /// Linearizable and live.
    Valid,
    /// The checker could not decide within its budget (and nothing failed).
    Unknown,
    /// The cluster made no progress in the liveness phase.
    LivenessFailed,
    /// Not linearizable.
    Invalid,
    /// A property bound of the spec (e.g. SWIM's `max_false_positives`) was exceeded.
    PropertyFailed,
    /// A safety invariant checked during the simulation broke (the run stopped there).
    InvariantViolated,
}

impl RunVerdict {
    /// The name used in output and `summary.json`.
    pub fn name(self) -> &'static str {
        match self {
            RunVerdict::Valid => "valid",
            RunVerdict::Unknown => "unknown",
            RunVerdict::LivenessFailed => "liveness-failed",
            RunVerdict::Invalid => "invalid",
            RunVerdict::PropertyFailed => "property-failed",
            RunVerdict::InvariantViolated => "invariant_violated",
        }
    }

    /// The `kvlab run` exit status: 0 valid, 1 a check failed (invalid or liveness), 3
    /// unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            RunVerdict::Valid => 0,
            RunVerdict::Invalid
            | RunVerdict::LivenessFailed
            | RunVerdict::PropertyFailed
            | RunVerdict::InvariantViolated => 1,
            RunVerdict::Unknown => 3,
        }
    }
}

/// When a run draws its plots and `report.html` (drawing costs more than a short
/// simulation, so a sweep over many seeds draws only what someone will look at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportPolicy {
    /// Always.
    Always,
    /// Only when the verdict is not valid.
    OnFailure,
    /// Never.
    Never,
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run seed.
    pub seed: u64,
    /// The run directory to write (created if missing; files in it are replaced).
    pub run_dir: PathBuf,
    /// How to run it again (shown on failure, written to `meta.json`).
    pub reproduce: Reproduce,
    /// When to draw plots and `report.html`.
    pub report: ReportPolicy,
    /// Whether to show a progress bar over the run's clock (hidden when stderr is not a
    /// terminal).
    pub progress: bool,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The verdict.
    pub verdict: RunVerdict,
    /// The first key the checker found not linearizable.
    pub failing_key: Option<String>,
    /// The checker's report.
    pub check: CheckReport,
    /// The numbers.
    pub summary: Summary,
    /// How to run it again.
    pub reproduce: Reproduce,
    /// Why plotting failed, if it did (the run's verdict stands regardless).
    pub report_error: Option<String>,
}

/// `meta.json`: where a run came from.
#[derive(Clone, Debug, Serialize)]
struct Meta<'a> {
    experiment: &'a str,
    commit: &'a str,
    seed: u64,
    backend: &'a str,
    transport: &'a str,
    kvlab_version: &'a str,
    rustc_version: &'a str,
    spec_file: String,
    reproduce: &'a Reproduce,
    started_unix_s: u64,
    wall_time_s: f64,
    /// Problems the backend had stopping its nodes.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    backend_warnings: &'a [String],
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExperimentError> {
    std::fs::write(path, bytes).map_err(|e| ExperimentError::io(path, e))
}

fn to_json_pretty<T: Serialize>(path: &Path, v: &T) -> Result<Vec<u8>, ExperimentError> {
    let mut s = serde_json::to_vec_pretty(v).map_err(|e| ExperimentError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    s.push(b'\n');
    Ok(s)
}

/// Writes one JSON value per line.
pub fn write_events_jsonl(path: &Path, events: &[RunEvent]) -> Result<(), ExperimentError> {
    let mut buf = Vec::with_capacity(events.len() * 120);
    for e in events {
        serde_json::to_writer(&mut buf, e).map_err(|err| ExperimentError::Encode {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        buf.push(b'\n');
    }
    write_file(path, &buf)
}

/// Writes a history, one event per line.
pub fn write_history_jsonl(path: &Path, history: &[HistoryEvent]) -> Result<(), ExperimentError> {
    let file = std::fs::File::create(path).map_err(|e| ExperimentError::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    kvlab_checker::write_jsonl(&mut w, history).map_err(|e| ExperimentError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    w.flush().map_err(|e| ExperimentError::io(path, e))
}

/// Starts the spec's cluster on its backend: the one place that picks a backend (and,
/// for the simulator, the protocol type of the system).
pub fn start_cluster(
    spec: &Spec,
    seed: u64,
    dir: &Path,
) -> Result<Box<dyn Cluster>, ExperimentError> {
    match spec.backend {
        BackendKind::Sim => {
            let mut config = spec.sim_config();
            let n = spec.nodes;
            Ok(match spec.system {
                SystemKind::Single => Box::new(SimCluster::<Single>::new(
                    config,
                    seed,
                    n,
                    spec.single.clone(),
                )?),
                SystemKind::AsyncPrimary => Box::new(SimCluster::<AsyncPrimary>::new(
                    config,
                    seed,
                    n,
                    spec.async_primary.clone(),
                )?),
                SystemKind::Raft => Box::new(SimCluster::<RaftKv>::new(
                    config,
                    seed,
                    n,
                    spec.raft.clone(),
                )?),
                SystemKind::Kvlab => Box::new(SimCluster::<KvlabNode>::new_with_absent(
                    config,
                    seed,
                    n,
                    &spec.absent_nodes(),
                    spec.kvlab.clone(),
                )?),
                SystemKind::Swim => {
                    // Bytes per member per second is one of the measurements.
                    config.network.measure_bytes = true;
                    Box::new(SimCluster::<SwimNode>::new(
                        config,
                        seed,
                        n,
                        spec.swim.clone(),
                    )?)
                }
            })
        }
        // The docker backend is the local backend's cluster with containers for
        // processes: the same fault bookkeeping, event tails, view and heal.
        BackendKind::Local | BackendKind::Docker => Ok(Box::new(
            crate::local::LocalCluster::start(spec, seed, dir)?,
        )),
        BackendKind::Kind => Err(ExperimentError::Backend(
            "running an experiment on kind is not built yet: `kvlab kind render SPEC` writes the manifests (see kind-cluster/README.md); --backend docker runs the same image here".into(),
        )),
    }
}

/// What a run of `spec` watches besides its history, for a safety phase from `start`.
pub fn observers_for(spec: &Spec, start: Time) -> Vec<Box<dyn Observer>> {
    let safety_end = start + Duration::from_nanos(secs_to_ns(spec.time.duration_s));
    match spec.system {
        SystemKind::Raft => vec![Box::new(RaftInvariants::<RaftKv>::new(start))],
        SystemKind::Kvlab => {
            let mut v: Vec<Box<dyn Observer>> = vec![
                Box::new(RaftInvariants::<KvlabNode>::new(start)),
                Box::new(RingObserver::new(
                    &spec.kvlab,
                    &spec.ring_experiment,
                    spec.nodes,
                    start,
                )),
            ];
            if !spec.workload.kind.is_kv() {
                let t = &spec.kvlab.txn;
                v.push(Box::new(TxnObserver::new(t.txn_ttl_ms, t.resolve_after_ms)));
            }
            v
        }
        SystemKind::Swim => vec![Box::new(SwimObserver::new(spec, start, safety_end))],
        SystemKind::Single | SystemKind::AsyncPrimary => Vec::new(),
    }
}

/// Removes what an earlier run left in `dir` that must not pass for this run's.
fn prepare_run_dir(dir: &Path) -> Result<(), ExperimentError> {
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    for stale in ["report.html", "linearizability.html"] {
        let p = dir.join(stale);
        if p.is_file() {
            std::fs::remove_file(&p).map_err(|e| ExperimentError::io(&p, e))?;
        }
    }
    let plots = dir.join("plots");
    if plots.is_dir() {
        std::fs::remove_dir_all(&plots).map_err(|e| ExperimentError::io(&plots, e))?;
    }
    // The workload streams the history here; a run without clients leaves it empty.
    write_file(&dir.join("history.jsonl"), b"")?;
    Ok(())
}

/// Progress over the run's clock, for runs longer than two seconds: a bar on a
/// terminal, a line every few seconds of wall time otherwise (logs, CI).
fn progress_for(spec: &Spec, opts: &RunOptions) -> Option<Box<dyn Progress>> {
    if !opts.progress || spec.time.duration_s + spec.time.liveness_s <= 2.0 {
        return None;
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return Some(Box::new(ProgressLine::new(format!(
            "{} seed {}",
            spec.name, opts.seed
        ))));
    }
    let unit = spec.backend.clock_unit();
    let pb = ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{elapsed}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(format!("{} seed {}", spec.name, opts.seed));
    Some(Box::new(pb))
}

/// Starts the cluster, drives it, and stops it (also when driving failed).
fn execute(spec: &Spec, opts: &RunOptions) -> Result<(Driven, BackendReport), ExperimentError> {
    let progress = progress_for(spec, opts);
    let mut cluster = start_cluster(spec, opts.seed, &opts.run_dir)?;
    let mut observers = observers_for(spec, cluster.now());
    let driven = drive(
        spec,
        opts.seed,
        cluster.as_mut(),
        &mut observers,
        progress.as_deref(),
        Some(&opts.run_dir.join("history.jsonl")),
    );
    if let Some(p) = &progress {
        p.finish();
    }
    let backend = cluster.finish();
    let driven = driven?;
    Ok((driven, backend?))
}

/// The run's verdict from the checker, the invariants, liveness and the observers.
fn verdict_of(
    check: &CheckReport,
    isolation: Option<&IsolationSummary>,
    driven: &Driven,
) -> RunVerdict {
    let property_failed = driven.reports.iter().any(|r| r.property_failed);
    let has_clients = driven.history_events > 0 || driven.liveness.clients > 0;
    // The worse of the two checkers' verdicts.
    let verdict = match (check.verdict, isolation.map(|i| i.verdict)) {
        (Verdict::Invalid, _) | (_, Some(Verdict::Invalid)) => Verdict::Invalid,
        (Verdict::Unknown, _) | (_, Some(Verdict::Unknown)) => Verdict::Unknown,
        _ => Verdict::Valid,
    };
    match verdict {
        _ if driven.violation.is_some() => RunVerdict::InvariantViolated,
        Verdict::Invalid if has_clients => RunVerdict::Invalid,
        _ if !driven.liveness.ok => RunVerdict::LivenessFailed,
        _ if property_failed => RunVerdict::PropertyFailed,
        Verdict::Unknown if has_clients => RunVerdict::Unknown,
        _ => RunVerdict::Valid,
    }
}

/// What the checkers said about a run's history.
struct Checked {
    /// Per-key linearizability.
    check: CheckReport,
    /// The first key that is not linearizable.
    failing_key: Option<String>,
    /// Why porcupine's drawing failed, if it did.
    viz_error: Option<String>,
    /// Transaction isolation, for a transactional workload.
    isolation: Option<IsolationSummary>,
}

/// Checks the history the run streamed to `dir/history.jsonl` (read back streamed:
/// memory holds the per-key search input, not the events) and, if a key is not
/// linearizable, draws porcupine's visualization of it. A transactional workload's
/// history holds transactions only: the transaction checker judges it, and the
/// linearizability report is that of no single-key operation.
fn check_history(spec: &Spec, dir: &Path) -> Result<Checked, ExperimentError> {
    let path = dir.join("history.jsonl");
    let model = spec.check.model.to_checker();
    let timeout = Some(Duration::from_secs_f64(spec.check.timeout_s));
    if !spec.workload.kind.is_kv() {
        let none = kvlab_checker::PreparedHistory::from_events(&[], model)
            .map_err(|e| ExperimentError::Checker(e.to_string()))?;
        let config = CheckConfig::from(CheckOptions { model, timeout });
        let has_txns = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        return Ok(Checked {
            check: none.check(&config, None),
            failing_key: None,
            viz_error: None,
            isolation: has_txns.then(|| check_isolation(spec, &path)).transpose()?,
        });
    }
    // The race decides every key the reads-from engine can while the history is read.
    let options = ReadOptions {
        decide_while_reading: true,
        ..ReadOptions::default()
    };
    let prepared =
        kvlab_checker::PreparedHistory::read_file(&path, model, &options).map_err(|e| {
            ExperimentError::Checker(format!("the runner wrote a malformed history: {e}"))
        })?;
    let config = CheckConfig::from(CheckOptions { model, timeout });
    let check = prepared.check(&config, None);
    let failing_key = check.invalid_keys.first().cloned();
    let viz_path = dir.join("linearizability.html");
    let mut viz_error = None;
    if let Some(key) = &failing_key
        && let Err(e) = prepared.write_visualization(key, timeout, &viz_path)
    {
        viz_error = Some(format!("linearizability.html: {e}"));
    }
    Ok(Checked {
        check,
        failing_key,
        viz_error,
        isolation: None,
    })
}

/// `summary.json`'s content.
fn build_summary(
    spec: &Spec,
    opts: &RunOptions,
    driven: &Driven,
    backend: &BackendReport,
    check: &CheckReport,
    verdict: RunVerdict,
) -> Summary {
    let stats = &driven.stats;
    let duration_s = driven.end.saturating_since(driven.start).as_secs_f64();
    let mut node_events = std::collections::BTreeMap::new();
    for (_, e) in driven.events.iter().filter_map(RunEvent::node_event) {
        *node_events.entry(e.kind().to_string()).or_insert(0u64) += 1;
    }
    let swim = driven.reports.iter().find_map(|r| r.swim.clone());
    let ring = driven.reports.iter().find_map(|r| r.ring.clone());
    let txn_recovery = driven.reports.iter().find_map(|r| r.txn.clone());
    let mut measured: Vec<String> = Vec::new();
    if spec.system.serves_keys() {
        measured.push("kv".into());
    }
    measured.extend(
        driven
            .reports
            .iter()
            .map(|r: &ObserverReport| r.measured.to_string()),
    );
    let checker = if spec.system.serves_keys() {
        serde_json::to_value(check).unwrap_or(serde_json::Value::Null)
    } else {
        serde_json::json!({
            "verdict": "not-applicable",
            "reason": format!("system = \"{}\" runs no KV workload", spec.system.name()),
        })
    };
    Summary {
        experiment: spec.name.clone(),
        label: spec.label.clone(),
        run_id: opts
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        seed: opts.seed,
        system: spec.system.name().into(),
        backend: spec.backend.name().into(),
        transport: spec.backend.transport_name(spec.transport).into(),
        nodes: spec.nodes,
        measured,
        duration_s,
        safety_s: spec.time.duration_s,
        liveness_s: spec.time.liveness_s,
        verdict: verdict.name().into(),
        ops: OpCounts {
            total: stats.counts.total,
            ok: stats.counts.ok,
            fail: stats.counts.fail,
            info: stats.counts.info,
            dropped_saturated: driven.counters.dropped_saturated,
        },
        ops_by_f: stats.by_f.clone(),
        throughput_ok_per_s: if duration_s > 0.0 {
            stats.counts.ok as f64 / duration_s
        } else {
            0.0
        },
        latency_ms: stats.latency_ms.clone(),
        faults: driven.faults.clone(),
        node_events,
        liveness: driven.liveness.clone(),
        workload: driven.counters.clone(),
        checker,
        sim: backend
            .sim_stats
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(serde_json::Value::Null),
        swim,
        ring,
        txn_recovery,
        invariant_violation: driven.violation.as_ref().map(|v| v.detail.clone()),
        isolation: None,
        wall_time_s: 0.0,
    }
}

/// Runs one experiment end to end: start the cluster, drive it, write the run
/// directory, check, summarize, and (if asked) draw the report.
pub fn run_experiment(spec: &Spec, opts: &RunOptions) -> Result<RunOutcome, ExperimentError> {
    let wall_start = std::time::Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = &opts.run_dir;
    prepare_run_dir(dir)?;
    let (driven, backend) = execute(spec, opts)?;

    // The resolved spec, with the seed actually used.
    let mut resolved = spec.clone();
    resolved.seed = opts.seed;
    write_file(
        &dir.join("spec.toml"),
        resolved.to_toml_string()?.as_bytes(),
    )?;
    write_events_jsonl(&dir.join("events.jsonl"), &driven.events)?;
    let Checked {
        check,
        failing_key,
        viz_error,
        isolation,
    } = check_history(spec, dir)?;
    let verdict = verdict_of(&check, isolation.as_ref(), &driven);
    let mut summary = build_summary(spec, opts, &driven, &backend, &check, verdict);
    summary.isolation = isolation.map(|mut i| {
        i.commit = crate::txn_stats::TxnCommitStats::new(
            &driven.txn_samples,
            i.aborted,
            summary.duration_s,
        );
        i
    });
    summary.wall_time_s = wall_start.elapsed().as_secs_f64();
    let summary_path = dir.join("summary.json");
    write_file(&summary_path, &to_json_pretty(&summary_path, &summary)?)?;

    let meta_path = dir.join("meta.json");
    let meta = Meta {
        experiment: &spec.name,
        commit: BUILD_COMMIT,
        seed: opts.seed,
        backend: spec.backend.name(),
        transport: spec.backend.transport_name(spec.transport),
        kvlab_version: env!("CARGO_PKG_VERSION"),
        rustc_version: BUILD_RUSTC,
        spec_file: opts.reproduce.spec_file.display().to_string(),
        reproduce: &opts.reproduce,
        started_unix_s,
        wall_time_s: wall_start.elapsed().as_secs_f64(),
        backend_warnings: &backend.warnings,
    };
    write_file(&meta_path, &to_json_pretty(&meta_path, &meta)?)?;

    let render = match opts.report {
        ReportPolicy::Always => true,
        ReportPolicy::OnFailure => verdict != RunVerdict::Valid,
        ReportPolicy::Never => false,
    };
    let mut report_error = viz_error;
    if render && let Err(e) = render_report(dir) {
        let msg = e.to_string();
        report_error = Some(match report_error {
            Some(prev) => format!("{prev}; {msg}"),
            None => msg,
        });
    }
    Ok(RunOutcome {
        run_dir: dir.clone(),
        verdict,
        failing_key,
        check,
        summary,
        reproduce: opts.reproduce.clone(),
        report_error,
    })
}

/// Draws the plots and `report.html` of a run directory; returns the report's path.
pub fn render_report(dir: &Path) -> Result<PathBuf, ExperimentError> {
    crate::report::render_run(dir)
        .map(|r| r.report_html)
        .map_err(|e| ExperimentError::Report(e.to_string()))
}

/// Most seeds one `--seeds A..B` sweep may run.
pub const MAX_SEEDS_PER_SWEEP: u64 = 100_000;

/// Parses a seed range `A..B` (inclusive, as the CLI documents) or `A..=B`.
pub fn parse_seed_range(s: &str) -> Result<std::ops::RangeInclusive<u64>, ExperimentError> {
    let bad = |reason: &str| ExperimentError::BadArgument {
        arg: format!("--seeds {s}"),
        reason: reason.into(),
    };
    let (a, b) = s
        .split_once("..=")
        .or_else(|| s.split_once(".."))
        .ok_or_else(|| bad("expected A..B, an inclusive range of seeds such as 1..20"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| bad("the start is not a non-negative integer"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| bad("the end is not a non-negative integer"))?;
    if a > b {
        return Err(bad("the start is larger than the end"));
    }
    if b > crate::spec::MAX_SEED {
        return Err(bad(&format!(
            "seeds must be at most {} (MAX_SEED)",
            crate::spec::MAX_SEED
        )));
    }
    if b - a >= MAX_SEEDS_PER_SWEEP {
        return Err(bad(&format!(
            "more than {MAX_SEEDS_PER_SWEEP} seeds (MAX_SEEDS_PER_SWEEP)"
        )));
    }
    Ok(a..=b)
}

/// The directory of one seed's run under `base` (`base/seed-<N>`).
pub fn seed_run_dir(base: &Path, seed: u64) -> PathBuf {
    base.join(format!("seed-{seed}"))
}

/// Draws comparison plots of several run directories into `out_dir`; returns the
/// comparison page's path.
pub fn render_comparison(run_dirs: &[PathBuf], out_dir: &Path) -> Result<PathBuf, ExperimentError> {
    crate::report::render_comparison(run_dirs, out_dir)
        .map_err(|e| ExperimentError::Report(e.to_string()))
}
