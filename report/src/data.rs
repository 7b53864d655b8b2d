//! Reading a run directory: the history turned into operations, the events turned into
//! fault periods and phases, and `summary.json` / `meta.json` kept as loose JSON so that a
//! key the runner did not write is a blank in the report, never a failure.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use kvlab_checker::history::{self, EventType, HistoryEvent, OpFn};
use serde_json::Value;

use crate::ReportError;
use crate::events::{EventBody, NemesisKind, RunEvent, RunnerEvent};

/// The runner phase whose period the plots mark as the liveness phase.
pub(crate) const LIVENESS_PHASE_NAME: &str = "liveness";

/// How an operation ended, as far as the report cares.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// Completed and took effect.
    Ok,
    /// Surely did not take effect.
    Fail,
    /// May or may not have taken effect (timeout, crash, or no completion at all).
    Info,
}

impl Outcome {
    /// Every outcome, in the order plots and tables list them.
    pub(crate) const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Fail, Outcome::Info];

    /// The name used in histories and tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// One client operation: an invoke and the next completion of the same process.
#[derive(Clone, Debug)]
pub(crate) struct Op {
    /// The function performed.
    pub(crate) f: OpFn,
    /// The process (client) that performed it.
    pub(crate) process: u64,
    /// The history `index` of its invoke line.
    pub(crate) index: u64,
    /// The key, for single-key operations.
    pub(crate) key: Option<String>,
    /// The node the client talked to, when the history says.
    pub(crate) node: Option<u32>,
    /// What a person wants to see of its value: the completion's value when it has one
    /// (a read's result), else the invoke's (a write's argument).
    pub(crate) value: serde_json::Value,
    /// Why it failed or is uncertain, when the completion says.
    pub(crate) error: Option<String>,
    /// When the client invoked it, ns since the start of the run.
    pub(crate) invoke_ns: u64,
    /// When the completion arrived; `None` when the history ends before it completed.
    pub(crate) complete_ns: Option<u64>,
    /// How it ended (`Info` when it never completed).
    pub(crate) outcome: Outcome,
}

impl Op {
    /// Latency in ms: up to the completion, or up to `run_end_ns` for an operation that
    /// never completed (it is drawn at the end of the run).
    pub(crate) fn latency_ms(&self, run_end_ns: u64) -> f64 {
        let end_ns = self.complete_ns.unwrap_or(run_end_ns.max(self.invoke_ns));
        (end_ns - self.invoke_ns) as f64 / 1e6
    }
}

/// A fault the nemesis injected: from its `fault_start` to the `fault_end` with the same
/// `fault_id`, or to the end of the run when it never ended.
#[derive(Clone, Debug)]
pub(crate) struct FaultPeriod {
    /// The id pairing start and end, when the event carried one.
    pub(crate) fault_id: Option<u64>,
    /// The fault's name (`partition`, `crash`, …).
    pub(crate) fault: String,
    /// The node it concerns, for single-node faults.
    pub(crate) node: Option<u32>,
    /// Start, ns since the start of the run.
    pub(crate) start_ns: u64,
    /// End, ns since the start of the run; `None` when it was never healed.
    pub(crate) end_ns: Option<u64>,
    /// The `detail` of the start event (what exactly was done).
    pub(crate) detail_start: String,
    /// The `detail` of the end event.
    pub(crate) detail_end: Option<String>,
}

/// A runner phase: from its `phase` event to the next one or to the end of the run.
#[derive(Clone, Debug)]
pub(crate) struct Phase {
    /// The phase name (the event's `detail`), e.g. `liveness`.
    pub(crate) name: String,
    /// Start, ns since the start of the run.
    pub(crate) start_ns: u64,
    /// End, ns since the start of the run (the next phase's start or the run end).
    pub(crate) end_ns: u64,
}

/// What a run measured, from `summary.json`'s `measured` list: the report draws the
/// plots and tables of these and of nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Measured {
    /// `kv`: clients ran a workload; `history.jsonl` holds their operations, checked.
    pub(crate) kv: bool,
    /// `swim`: failure detection (summary.json's `swim` section).
    pub(crate) swim: bool,
    /// `raft-invariants`: Raft's safety invariants were checked while the run went on.
    pub(crate) raft_invariants: bool,
}

impl Measured {
    /// Reads the `measured` list of a summary. A summary without one (written before
    /// the list existed, or hand-made) is a SWIM run when it has a `swim` section, and a
    /// KV run otherwise or when the history holds operations.
    pub(crate) fn of(summary: &Value, ops: &[Op]) -> Measured {
        match json_at(summary, &["measured"]).and_then(Value::as_array) {
            Some(list) => {
                let has = |name: &str| list.iter().any(|v| v.as_str() == Some(name));
                Measured {
                    kv: has("kv"),
                    swim: has("swim"),
                    raft_invariants: has("raft-invariants"),
                }
            }
            None => {
                let swim = json_at(summary, &["swim"]).is_some_and(Value::is_object);
                Measured {
                    kv: !swim || !ops.is_empty(),
                    swim,
                    raft_invariants: false,
                }
            }
        }
    }

    /// The names of what was measured, as `summary.json` lists them.
    pub(crate) fn names(self) -> Vec<&'static str> {
        [
            (self.kv, "kv"),
            (self.raft_invariants, "raft-invariants"),
            (self.swim, "swim"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Everything the plots and the report need from one run directory.
#[derive(Debug)]
pub(crate) struct RunData {
    /// The run directory as given.
    pub(crate) dir: PathBuf,
    /// Operations in invoke order.
    pub(crate) ops: Vec<Op>,
    /// The last instant anything happened, ns; operations still open are drawn here.
    pub(crate) run_end_ns: u64,
    /// Faults in start order.
    pub(crate) faults: Vec<FaultPeriod>,
    /// Runner phases in order.
    pub(crate) phases: Vec<Phase>,
    /// Every line of `events.jsonl`, in order (empty when the file is absent).
    pub(crate) events: Vec<RunEvent>,
    /// Node events: kind → node (None: no node named) → count.
    pub(crate) node_event_counts: BTreeMap<String, BTreeMap<Option<u32>, u64>>,
    /// Runner events that are not phases (warnings and the like), in order.
    pub(crate) runner_notes: Vec<RunEvent>,
    /// Whether `events.jsonl` was present.
    pub(crate) has_events_file: bool,
    /// `summary.json`, or `Value::Null` when absent.
    pub(crate) summary: Value,
    /// `meta.json`, or `Value::Null` when absent.
    pub(crate) meta: Value,
    /// What the run measured.
    pub(crate) measured: Measured,
    /// Things a reader should know that are not errors (unpaired fault events, missing files).
    pub(crate) warnings: Vec<String>,
}

impl RunData {
    /// Reads a run directory. `history.jsonl` is required; everything else is optional.
    pub(crate) fn load(dir: &Path) -> Result<RunData, ReportError> {
        let mut warnings = Vec::new();
        let history_path = dir.join("history.jsonl");
        if !history_path.is_file() {
            return Err(ReportError::MissingFile { path: history_path });
        }
        let ops = read_history(&history_path)?;

        let events_path = dir.join("events.jsonl");
        let has_events_file = events_path.is_file();
        let events = if has_events_file {
            read_events(&events_path)?
        } else {
            warnings.push("events.jsonl is missing: no faults or phases are shown".to_string());
            Vec::new()
        };

        let summary = read_optional_json(&dir.join("summary.json"), &mut warnings)?;
        let meta = read_optional_json(&dir.join("meta.json"), &mut warnings)?;

        let last_history_ns = ops
            .iter()
            .map(|op| op.complete_ns.unwrap_or(op.invoke_ns))
            .max()
            .unwrap_or(0);
        let last_event_ns = events.iter().map(|e| e.time_ns).max().unwrap_or(0);
        let run_end_ns = last_history_ns.max(last_event_ns);

        if let Some(total) = json_at(&summary, &["ops", "total"]).and_then(Value::as_u64) {
            if total != ops.len() as u64 {
                warnings.push(format!(
                    "summary.json counts {total} operations but history.jsonl holds {}",
                    ops.len()
                ));
            }
        }

        let (faults, fault_warnings) = pair_faults(&events);
        warnings.extend(fault_warnings);
        let phases = phases_of(&events, run_end_ns);

        let mut node_event_counts: BTreeMap<String, BTreeMap<Option<u32>, u64>> = BTreeMap::new();
        let mut runner_notes = Vec::new();
        for event in &events {
            match &event.body {
                EventBody::Node(n) => {
                    *node_event_counts
                        .entry(n.event.kind().to_string())
                        .or_default()
                        .entry(Some(n.node.0))
                        .or_default() += 1;
                }
                EventBody::Runner(RunnerEvent::Phase { .. }) | EventBody::Nemesis(_) => {}
                EventBody::Runner(_) => runner_notes.push(event.clone()),
            }
        }

        let measured = Measured::of(&summary, &ops);
        Ok(RunData {
            dir: dir.to_path_buf(),
            ops,
            run_end_ns,
            faults,
            phases,
            events,
            node_event_counts,
            runner_notes,
            has_events_file,
            summary,
            meta,
            measured,
            warnings,
        })
    }

    /// Whether the porcupine visualisation of a failing key sits next to the report.
    pub(crate) fn has_linearizability_html(&self) -> bool {
        self.dir.join("linearizability.html").is_file()
    }
}

/// Reads `history.jsonl` into operations with the checker's own reader, so the report
/// accepts exactly the histories the checker accepts; its errors name the line.
pub(crate) fn read_history(path: &Path) -> Result<Vec<Op>, ReportError> {
    let events = history::read_jsonl_file(path).map_err(|source| ReportError::History {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(operations_of(&events))
}

/// Pairs each invoke with the next completion of its process. The checker's reader has
/// already rejected completions without invokes and double invokes; were one to slip
/// through, it would be skipped here rather than panic.
fn operations_of(events: &[HistoryEvent]) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    // process → index into ops of its operation not yet completed.
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for event in events {
        match event.kind {
            EventType::Invoke => {
                open.insert(event.process, ops.len());
                ops.push(Op {
                    f: event.f,
                    process: event.process,
                    index: event.index,
                    key: event.key.clone(),
                    node: event.node,
                    value: event.value.clone(),
                    error: None,
                    invoke_ns: event.time_ns,
                    complete_ns: None,
                    outcome: Outcome::Info,
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(op) = open.remove(&event.process).and_then(|i| ops.get_mut(i)) else {
                    continue;
                };
                op.complete_ns = Some(event.time_ns.max(op.invoke_ns));
                if !event.value.is_null() {
                    op.value = event.value.clone();
                }
                op.error = event.error.clone();
                op.outcome = match event.kind {
                    EventType::Ok => Outcome::Ok,
                    EventType::Fail => Outcome::Fail,
                    EventType::Info | EventType::Invoke => Outcome::Info,
                };
            }
        }
    }
    ops
}

/// Reads `events.jsonl`; a line that is not a run event is an error naming the line.
pub(crate) fn read_events(path: &Path) -> Result<Vec<RunEvent>, ReportError> {
    let file = File::open(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut events = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let event: RunEvent = serde_json::from_str(&line).map_err(|e| ReportError::BadLine {
            path: path.to_path_buf(),
            line: index + 1,
            reason: format!("not a run event: {e}"),
        })?;
        events.push(event);
    }
    Ok(events)
}

/// Reads a JSON file that may be absent (then `Null` and a warning); malformed JSON is an
/// error naming the file, line and column.
pub(crate) fn read_optional_json(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Value, ReportError> {
    if !path.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        warnings.push(format!(
            "{} is missing",
            name.unwrap_or_else(|| path.display().to_string())
        ));
        return Ok(Value::Null);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::BadJson {
        path: path.to_path_buf(),
        source,
    })
}

/// Pairs `fault_start` and `fault_end` events by `fault_id`. Unpaired ends and starts
/// without an id become warnings; a start never ended lasts to the end of the run.
fn pair_faults(events: &[RunEvent]) -> (Vec<FaultPeriod>, Vec<String>) {
    let mut faults: Vec<FaultPeriod> = Vec::new();
    let mut warnings = Vec::new();
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for (time_ns, event) in events
        .iter()
        .filter_map(|e| e.nemesis_event().map(|n| (e.time_ns, n)))
    {
        match event.kind {
            NemesisKind::FaultStart => {
                if event.fault_id.is_none() {
                    warnings.push(format!(
                        "a fault_start at {:.3} s has no fault_id, so it cannot be paired with its end",
                        time_ns as f64 / 1e9
                    ));
                }
                if let Some(id) = event.fault_id {
                    match open.entry(id) {
                        std::collections::btree_map::Entry::Occupied(_) => warnings.push(format!(
                            "fault_id {id} starts again before it ended; the first period is kept open"
                        )),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(faults.len());
                        }
                    }
                }
                faults.push(FaultPeriod {
                    fault_id: event.fault_id,
                    fault: event.fault.clone().unwrap_or_else(|| "fault".to_string()),
                    node: event.node.map(|n| n.0),
                    start_ns: time_ns,
                    end_ns: None,
                    detail_start: event.detail.clone(),
                    detail_end: None,
                });
            }
            NemesisKind::FaultEnd => match event.fault_id.and_then(|id| open.remove(&id)) {
                Some(index) => {
                    faults[index].end_ns = Some(time_ns.max(faults[index].start_ns));
                    faults[index].detail_end = Some(event.detail.clone());
                }
                None => warnings.push(format!(
                    "a fault_end at {:.3} s (fault_id {}) has no matching fault_start",
                    time_ns as f64 / 1e9,
                    event
                        .fault_id
                        .map_or_else(|| "none".to_string(), |id| id.to_string())
                )),
            },
            NemesisKind::FaultSkipped | NemesisKind::AdminCommand => {}
        }
    }
    (faults, warnings)
}

/// Turns runner `phase` events into periods: each lasts until the next phase starts.
fn phases_of(events: &[RunEvent], run_end_ns: u64) -> Vec<Phase> {
    let starts: Vec<(u64, crate::events::Phase)> = events
        .iter()
        .filter_map(|e| match e.runner_event() {
            Some(RunnerEvent::Phase { phase }) => Some((e.time_ns, *phase)),
            _ => None,
        })
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &(start_ns, phase))| Phase {
            name: phase.name().to_string(),
            start_ns,
            end_ns: starts
                .get(i + 1)
                .map_or(run_end_ns, |next| next.0)
                .max(start_ns),
        })
        .collect()
}

/// Looks up a nested key of a loose JSON document.
pub(crate) fn json_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.as_object().and_then(|o| o.get(*key)))
        .filter(|v| !v.is_null())
}

/// A nested number of a loose JSON document.
pub(crate) fn json_f64(value: &Value, path: &[&str]) -> Option<f64> {
    json_at(value, path).and_then(Value::as_f64)
}

/// A nested scalar of a loose JSON document as text (strings unquoted).
pub(crate) fn json_text(value: &Value, path: &[&str]) -> Option<String> {
    json_at(value, path).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}
