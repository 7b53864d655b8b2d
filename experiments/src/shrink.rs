//! `kvlab shrink RUN_DIR`: the smallest fault schedule that still fails the same way.
//!
//! A failing simulated run keeps its resolved spec (`spec.toml`), its seed (`meta.json`)
//! and every fault the nemesis injected (`fault_start` / `fault_end` in `events.jsonl`).
//! The shrinker turns those faults into an explicit schedule (`[[nemesis.schedule]]`:
//! at, kind, targets, duration; the random faults off), checks that the schedule alone
//! still fails, and then reduces it while the failure stays the same (same verdict):
//!
//! 1. faults dropped by delta debugging (Zeller's ddmin over the schedule);
//! 2. each remaining fault shortened (halved while it still fails);
//! 3. fewer clients and keys (halved), and the safety phase cut to just past the last
//!    fault, then halved towards it.
//!
//! Every candidate is a whole simulated run of the same seed, so the result is a spec
//! that fails by construction: `kvlab run RUN_DIR/shrunk.toml --seed S` replays it.
//! Partitions keep their shape (the side a `partition-*` cut off, a `bridge`'s node and
//! one side, a `ring`'s order). A fault whose exact shape a schedule cannot name (the
//! direction of a `one-way`, how far a clock jumped, which byte a disk fault flipped,
//! which voter a `replace-voter` swapped and how) is re-drawn by the nemesis.
//!
//! When the explicit schedule does not fail (the failure needs those exact shapes or
//! timings), the shrinker keeps the random nemesis and trims the run instead: the
//! nemesis plans its faults from the seed up front, so a shorter safety phase keeps a
//! prefix of the same plan; fewer clients and keys change only the workload. Once the
//! run is short, its faults are tried as an explicit schedule again (they are fewer
//! now), and shrunk as above if that fails. The result is written either way and says
//! which it is.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ExperimentError;
use crate::reproduce::Reproduce;
use crate::run::{ReportPolicy, RunOptions, run_experiment};
use crate::spec::{FaultKind, ScheduledFault, Spec};

/// Candidate runs one shrink may try at most.
pub const MAX_SHRINK_RUNS: usize = 2_000;

/// What a shrink did.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The seed every candidate ran with.
    pub seed: u64,
    /// The verdict that had to stay.
    pub verdict: String,
    /// Faults injected by the failing run, and by the shrunk one.
    pub faults: (usize, usize),
    /// Whether the shrunk spec names its faults (an explicit schedule) rather than
    /// keeping the random nemesis, trimmed.
    pub explicit: bool,
    /// Safety phase (simulated s) before and after.
    pub duration_s: (f64, f64),
    /// Clients before and after.
    pub clients: (u32, u32),
    /// Keys before and after.
    pub keys: (u32, u32),
    /// Candidate runs tried.
    pub runs: usize,
    /// The shrunk spec.
    pub spec: Spec,
    /// Where it was written.
    pub path: PathBuf,
}

#[derive(Deserialize)]
struct Meta {
    seed: u64,
}

#[derive(Deserialize)]
struct Verdict {
    verdict: String,
}

#[derive(Deserialize)]
struct InjectedSummary {
    faults: InjectedCount,
}

#[derive(Deserialize)]
struct InjectedCount {
    injected: u64,
}

#[derive(Deserialize)]
struct FaultLine {
    time_ns: u64,
    kind: String,
    #[serde(default)]
    node: Option<u32>,
    #[serde(default)]
    fault_id: Option<u64>,
    #[serde(default)]
    fault: Option<String>,
    #[serde(default)]
    side: Vec<u32>,
    #[serde(default)]
    point: Option<kvlab_types::TxnFaultPoint>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ExperimentError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ExperimentError::BadArgument {
        arg: path.display().to_string(),
        reason: format!("not a kvlab run file: {e}"),
    })
}

fn bad(run_dir: &Path, reason: impl Into<String>) -> ExperimentError {
    ExperimentError::BadArgument {
        arg: run_dir.display().to_string(),
        reason: reason.into(),
    }
}

/// The faults a run injected, as schedule entries, in start order.
pub fn injected_schedule(events: &Path) -> Result<Vec<ScheduledFault>, ExperimentError> {
    let text = std::fs::read_to_string(events).map_err(|source| ExperimentError::Io {
        path: events.to_path_buf(),
        source,
    })?;
    let mut faults: Vec<(u64, ScheduledFault)> = Vec::new();
    for line in text.lines() {
        if !line.contains("\"fault_start\"") && !line.contains("\"fault_end\"") {
            continue;
        }
        let Ok(e) = serde_json::from_str::<FaultLine>(line) else {
            continue;
        };
        let (Some(id), Some(name)) = (e.fault_id, e.fault) else {
            continue;
        };
        let at_s = e.time_ns as f64 / 1e9;
        if e.kind == "fault_start" {
            let kind: FaultKind =
                serde_json::from_value(serde_json::Value::String(name.replace('_', "-")))
                    .map_err(|err| bad(events, format!("fault `{name}`: {err}")))?;
            let targets = match (e.side.is_empty(), e.node) {
                // A bridge's targets: the bridge node, then one side.
                (false, Some(bridge)) if kind == FaultKind::Bridge => {
                    std::iter::once(bridge).chain(e.side).collect()
                }
                (false, _) => e.side,
                (true, Some(n)) if takes_node_target(kind) => vec![n],
                _ => Vec::new(),
            };
            // A fault still on when the safety phase ended keeps the spec's duration.
            let duration_s = None;
            faults.push((
                id,
                ScheduledFault {
                    at_s,
                    kind,
                    targets,
                    duration_s,
                    point: e.point,
                },
            ));
        } else if let Some((_, f)) = faults.iter_mut().find(|(i, _)| *i == id) {
            f.duration_s = Some((((at_s - f.at_s) * 1000.0).round() / 1000.0).max(0.001));
        }
    }
    Ok(faults.into_iter().map(|(_, f)| f).collect())
}

/// Whether a scheduled fault of `kind` takes the one node it hit as its target.
fn takes_node_target(kind: FaultKind) -> bool {
    kind.target_counts(u32::MAX) == Some(1..=1)
}

/// One shrink in progress: the failing run's spec and seed, and how to try a candidate.
struct Shrinker {
    base: Spec,
    seed: u64,
    verdict: String,
    scratch: PathBuf,
    runs: usize,
}

impl Shrinker {
    /// The base spec with `faults` as its whole nemesis schedule.
    fn with(&self, faults: &[ScheduledFault]) -> Spec {
        let mut s = self.base.clone();
        s.nemesis.faults.clear();
        s.nemesis.schedule = faults.to_vec();
        s
    }

    /// Whether `spec` still fails the same way (a spec that does not validate does not).
    fn fails(&mut self, spec: &Spec) -> Result<bool, ExperimentError> {
        if self.runs >= MAX_SHRINK_RUNS {
            return Ok(false);
        }
        self.runs += 1;
        let Ok(text) = spec.to_toml_string() else {
            return Ok(false);
        };
        let Ok(spec) = Spec::from_toml_str(&text, Path::new("shrink-candidate.toml")) else {
            return Ok(false);
        };
        let dir = self.scratch.join(format!("try-{}", self.runs));
        let opts = RunOptions {
            seed: self.seed,
            run_dir: dir.clone(),
            reproduce: Reproduce::new(Path::new("shrunk.toml"), &spec, self.seed, None),
            report: ReportPolicy::Never,
            progress: false,
        };
        let outcome = run_experiment(&spec, &opts);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(outcome.is_ok_and(|o| o.verdict.name() == self.verdict))
    }

    /// Zeller's ddmin: a subset of `faults` that still fails, none of whose chunks at
    /// the final granularity can be dropped.
    fn ddmin(
        &mut self,
        mut faults: Vec<ScheduledFault>,
    ) -> Result<Vec<ScheduledFault>, ExperimentError> {
        let mut n = 2usize;
        while faults.len() >= 2 {
            let chunk = faults.len().div_ceil(n);
            let mut reduced = false;
            for start in (0..faults.len()).step_by(chunk) {
                let rest: Vec<ScheduledFault> = faults
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i < start || *i >= start + chunk)
                    .map(|(_, f)| f.clone())
                    .collect();
                if self.fails(&self.with(&rest))? {
                    faults = rest;
                    n = n.saturating_sub(1).max(2);
                    reduced = true;
                    break;
                }
            }
            if !reduced {
                if n >= faults.len() {
                    break;
                }
                n = (n * 2).min(faults.len());
            }
        }
        if faults.len() == 1 && self.fails(&self.with(&[]))? {
            faults.clear();
        }
        Ok(faults)
    }

    /// Halves each fault's duration while the run still fails.
    fn shorten(
        &mut self,
        mut faults: Vec<ScheduledFault>,
    ) -> Result<Vec<ScheduledFault>, ExperimentError> {
        for i in 0..faults.len() {
            while let Some(d) = faults[i].duration_s.filter(|d| *d > 0.1) {
                let mut t = faults.clone();
                t[i].duration_s = Some((d / 2.0 * 1000.0).round() / 1000.0);
                if !self.fails(&self.with(&t))? {
                    break;
                }
                faults = t;
            }
        }
        Ok(faults)
    }

    /// Halves clients, keys and the safety phase (never before the last fault's end)
    /// while the run still fails; returns the smallest failing spec.
    fn trim(&mut self, faults: &[ScheduledFault]) -> Result<Spec, ExperimentError> {
        let last_end = faults
            .iter()
            .map(|f| f.at_s + f.duration_s.unwrap_or(0.0))
            .fold(0.0, f64::max);
        self.trim_spec(self.with(faults), last_end + 0.5)
    }

    /// [`Shrinker::trim`] from `best`, the safety phase never below `floor_s`.
    fn trim_spec(&mut self, mut best: Spec, floor_s: f64) -> Result<Spec, ExperimentError> {
        type Step = fn(&mut Spec, f64) -> bool;
        let steps: [Step; 3] = [
            |s, _| halve_u32(&mut s.workload.clients),
            |s, _| halve_u32(&mut s.workload.keys),
            |s, floor| {
                let d = s.time.duration_s;
                let next = ((d + floor) / 2.0 * 1000.0).round() / 1000.0;
                s.time.duration_s = next.max(floor);
                next < d - 0.05
            },
        ];
        for step in steps {
            loop {
                let mut t = best.clone();
                if !step(&mut t, floor_s) || !self.fails(&t)? {
                    break;
                }
                best = t;
            }
        }
        Ok(best)
    }
}

fn halve_u32(v: &mut u32) -> bool {
    if *v <= 1 {
        return false;
    }
    *v /= 2;
    true
}

/// Shrinks the failing simulated run in `run_dir`; writes the smallest spec that still
/// fails the same way to `out` (default `run_dir/shrunk.toml`).
pub fn shrink(run_dir: &Path, out: Option<&Path>) -> Result<Shrunk, ExperimentError> {
    let base = Spec::load(&run_dir.join("spec.toml"))?;
    if base.backend != crate::spec::BackendKind::Sim {
        return Err(bad(run_dir, "shrink replays simulated runs only"));
    }
    let seed = read_json::<Meta>(&run_dir.join("meta.json"))?.seed;
    let verdict = read_json::<Verdict>(&run_dir.join("summary.json"))?.verdict;
    if verdict == "valid" || verdict == "unknown" {
        return Err(bad(
            run_dir,
            format!("the run did not fail (verdict {verdict})"),
        ));
    }
    let injected = injected_schedule(&run_dir.join("events.jsonl"))?;
    let injected_count = read_json::<InjectedSummary>(&run_dir.join("summary.json"))?
        .faults
        .injected;
    let mut s = Shrinker {
        base: base.clone(),
        seed,
        verdict: verdict.clone(),
        scratch: run_dir.join("shrink-tries"),
        runs: 0,
    };
    let result = shrink_with(&mut s, &injected, run_dir, out);
    let _ = std::fs::remove_dir_all(&s.scratch);
    let (spec, path, faults_after) = result?;
    Ok(Shrunk {
        seed,
        verdict,
        faults: (injected_count as usize, faults_after),
        explicit: spec.nemesis.faults.is_empty(),
        duration_s: (base.time.duration_s, spec.time.duration_s),
        clients: (base.workload.clients, spec.workload.clients),
        keys: (base.workload.keys, spec.workload.keys),
        runs: s.runs,
        spec,
        path,
    })
}

/// The shrink proper: the explicit schedule first, then faults, their lengths, the
/// workload and the run; when the explicit schedule does not fail, the random run
/// trimmed (and its fewer faults tried as a schedule again). Writes the result; returns
/// it, where, and how many faults it injects.
fn shrink_with(
    s: &mut Shrinker,
    injected: &[ScheduledFault],
    run_dir: &Path,
    out: Option<&Path>,
) -> Result<(Spec, PathBuf, usize), ExperimentError> {
    let explicit = s.with(injected);
    let (spec, faults) = if s.fails(&explicit)? {
        let spec = shrink_schedule(s, injected.to_vec())?;
        let n = spec.nemesis.schedule.len();
        (spec, n)
    } else {
        let floor = s.base.nemesis.start_after_s + 0.1;
        let trimmed = s.trim_spec(s.base.clone(), floor)?;
        let (verdict_ok, faults) = s.replay_schedule(&trimmed)?;
        match faults {
            Some(schedule) if verdict_ok => {
                let spec = shrink_schedule(s, schedule)?;
                let n = spec.nemesis.schedule.len();
                (spec, n)
            }
            Some(schedule) => (trimmed, schedule.len()),
            None => {
                return Err(bad(
                    run_dir,
                    "the trimmed run no longer injects faults the shrinker can read",
                ));
            }
        }
    };
    let path = out.map_or_else(|| run_dir.join("shrunk.toml"), Path::to_path_buf);
    let text = spec.to_toml_string()?;
    std::fs::write(&path, text).map_err(|source| ExperimentError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((spec, path, faults))
}

/// ddmin over `faults`, then shorter faults, then the workload and the run.
fn shrink_schedule(s: &mut Shrinker, faults: Vec<ScheduledFault>) -> Result<Spec, ExperimentError> {
    let faults = s.ddmin(faults)?;
    let faults = s.shorten(faults)?;
    s.trim(&faults)
}

impl Shrinker {
    /// Runs `spec` once (it fails: it was kept because it did) and returns whether its
    /// injected faults, as an explicit schedule, fail the same way too, with that
    /// schedule (`None` if the run could not be read back).
    fn replay_schedule(
        &mut self,
        spec: &Spec,
    ) -> Result<(bool, Option<Vec<ScheduledFault>>), ExperimentError> {
        let dir = self.scratch.join("trimmed");
        let opts = RunOptions {
            seed: self.seed,
            run_dir: dir.clone(),
            reproduce: Reproduce::new(Path::new("shrunk.toml"), spec, self.seed, None),
            report: ReportPolicy::Never,
            progress: false,
        };
        self.runs += 1;
        if run_experiment(spec, &opts).is_err() {
            return Ok((false, None));
        }
        let schedule = injected_schedule(&dir.join("events.jsonl")).ok();
        let _ = std::fs::remove_dir_all(&dir);
        let Some(schedule) = schedule else {
            return Ok((false, None));
        };
        let fails = self.fails(&self.with(&schedule))?;
        Ok((fails, Some(schedule)))
    }
}
