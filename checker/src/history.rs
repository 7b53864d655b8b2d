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
//!   `delete` (`null`), `txn` (a list of micro-ops `[f, key, value]`: `["r", "x", null]`
//!   on invoke and `["r", "x", 3]` on ok, `["w", "x", 3]`, `["append", "x", "abc"]`;
//!   Elle's list-append: `["append", "x", 3]`, read back as a list `["r", "x", [1, 3]]`).
//!   Values are integers or strings (a list-append read: a list of them).
//! * Optional fields: `node` (the node the client talked to), `error` (why it failed or
//!   is uncertain).
//!
//! Real-time order is the order of the lines: an operation precedes another when its
//! completion line comes before the other's invoke line. `index` must grow strictly from
//! line to line (gaps are allowed), so a shuffled or concatenated file is caught; `time_ns`
//! is carried for people and plots and is not used for ordering.
//!
//! Reading checks each line on its own (JSON, fields, the value's shape for its `f`), then
//! the structure of the whole history (Jepsen's process discipline): a completion needs an
//! open invoke on its process with the same `f` and key; a process has at most one open
//! operation; a process whose operation ended in `info` never invokes again. An invoke
//! still open at the end of the history counts as `info`. Every error names the line.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::check::ModelKind;
use crate::input::{CollectEvents, JsonlSource, drive};
use crate::model::{Val, val_or_null};

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

impl fmt::Display for OpFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl EventType {
    /// The name used in histories.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The longest line [`read_jsonl`] accepts, in bytes (without the newline): the same
/// limit as [`MAX_HISTORY_LINE_BYTES`](crate::MAX_HISTORY_LINE_BYTES), under its older
/// name. A longer line is an error rather than an unbounded allocation.
pub const MAX_LINE_BYTES: usize = crate::input::MAX_HISTORY_LINE_BYTES;

/// The most events one history may have, in every format. The in-memory readers keep
/// every event; a streamed check keeps every operation the search needs (see
/// [`PreparedHistory`](crate::PreparedHistory)), so this bounds both.
pub const MAX_HISTORY_EVENTS: usize = 50_000_000;

/// Where in a history something is wrong: a line of a file, or an event of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A line of a JSONL file, counted from 1 (blank lines count).
    Line(usize),
    /// An event of an in-memory history.
    Event {
        /// Its position in the slice, from 0.
        position: usize,
        /// Its `index` field.
        index: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Event { position, index } => write!(f, "event #{position} (index {index})"),
        }
    }
}

/// Why a history cannot be read or checked. A history that is well formed but not
/// linearizable is not an error: it is an `Invalid` verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The history file cannot be opened.
    #[error("cannot open history {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: io::Error,
    },
    /// Reading failed part-way.
    #[error("line {line}: read error: {source}")]
    Read {
        /// The line being read.
        line: usize,
        /// The operating-system error.
        source: io::Error,
    },
    /// Writing a history failed.
    #[error("cannot write history: {source}")]
    Write {
        /// The underlying error.
        source: io::Error,
    },
    /// A line is longer than the limit ([`MAX_LINE_BYTES`] unless configured); found
    /// after reading at most the limit of it.
    #[error("line {line}: longer than {limit_bytes} bytes, the longest line a history may have")]
    LineTooLong {
        /// The line.
        line: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// An EDN op spread over several lines is longer than the line limit.
    #[error(
        "line {line}: the op that starts on line {start_line} is longer than {limit_bytes} bytes, the most one op may span"
    )]
    OpTooLong {
        /// The line where the limit was passed.
        line: usize,
        /// The line where the op starts.
        start_line: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// The history has more than [`MAX_HISTORY_EVENTS`] events.
    #[error("line {line}: more than {limit} events in one history")]
    TooManyEvents {
        /// The first line over the limit.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// A line is not JSON.
    #[error("line {line}: not valid JSON: {message}")]
    BadJson {
        /// The line.
        line: usize,
        /// What the parser found.
        message: String,
    },
    /// A line is JSON but not an event: an unknown field, an unknown `f` or `type`, a
    /// missing field, a field of the wrong type.
    #[error("line {line}: not a history event: {message}")]
    BadEvent {
        /// The line.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The `value` does not have the shape its `f` and `type` require.
    #[error("{at}: `{f}` {kind} needs a value that is {expected}, found {found}")]
    BadValue {
        /// Where.
        at: Location,
        /// The function.
        f: OpFn,
        /// The event type.
        kind: EventType,
        /// The shape required.
        expected: &'static str,
        /// The value found (JSON).
        found: String,
    },
    /// A single-key operation has no `key` where the model needs one.
    #[error("{at}: `{f}` needs a `key`")]
    MissingKey {
        /// Where.
        at: Location,
        /// The function.
        f: OpFn,
    },
    /// `index` does not grow strictly from one event to the next.
    #[error("{at}: index {index} does not follow index {previous} (indices must grow)")]
    IndexNotIncreasing {
        /// Where.
        at: Location,
        /// This event's index.
        index: u64,
        /// The previous event's index.
        previous: u64,
    },
    /// A completion (`ok`, `fail`, `info`) on a process with no open invoke.
    #[error("{at}: process {process} completes an operation it never invoked")]
    CompletionWithoutInvoke {
        /// Where.
        at: Location,
        /// The process.
        process: u64,
    },
    /// An invoke on a process whose previous operation is still open.
    #[error(
        "{at}: process {process} invokes while its operation invoked at index {open_index} is still open"
    )]
    ConcurrentInvoke {
        /// Where.
        at: Location,
        /// The process.
        process: u64,
        /// The `index` of the open invoke.
        open_index: u64,
    },
    /// A completion whose `f` differs from its invoke's.
    #[error(
        "{at}: process {process} completes `{completed}` but invoked `{invoked}` at index {invoke_index}"
    )]
    CompletionFnMismatch {
        /// Where.
        at: Location,
        /// The process.
        process: u64,
        /// The invoked function.
        invoked: OpFn,
        /// The completed function.
        completed: OpFn,
        /// The `index` of the invoke.
        invoke_index: u64,
    },
    /// A completion whose key differs from its invoke's.
    #[error(
        "{at}: process {process} completes key {completed:?} but invoked key {invoked:?} at index {invoke_index}"
    )]
    CompletionKeyMismatch {
        /// Where.
        at: Location,
        /// The process.
        process: u64,
        /// The invoked key.
        invoked: Option<String>,
        /// The completed key.
        completed: Option<String>,
        /// The `index` of the invoke.
        invoke_index: u64,
    },
    /// A write, cas or delete completion whose value differs from its invoke's (a
    /// completion may repeat the value or leave it `null`).
    #[error(
        "{at}: `{f}` completes with value {completed} but invoked {invoked} at index {invoke_index}"
    )]
    CompletionValueMismatch {
        /// Where.
        at: Location,
        /// The function.
        f: OpFn,
        /// The invoked value (JSON).
        invoked: String,
        /// The completion value (JSON).
        completed: String,
        /// The `index` of the invoke.
        invoke_index: u64,
    },
    /// A process invokes again after an operation of its ended in `info`. Jepsen: a
    /// crashed process never returns; its client continues under a new process id.
    #[error(
        "{at}: process {process} invokes again after its operation ended in `info` at index {info_index} (a process that ended in info must not invoke again; use a new process id)"
    )]
    InvokeAfterInfo {
        /// Where.
        at: Location,
        /// The process.
        process: u64,
        /// The `index` of the `info` completion.
        info_index: u64,
    },
    /// A history in EDN or a Jepsen log is not well formed text.
    #[error("line {line}: bad {format}: expected {expected}, found {found}")]
    Syntax {
        /// The line, from 1.
        line: usize,
        /// The format being read.
        format: &'static str,
        /// What the reader expected.
        expected: String,
        /// What it found.
        found: String,
    },
    /// `--format auto` cannot tell the format.
    #[error("cannot detect the history format: {reason}; name it with --format")]
    UnknownFormat {
        /// What was seen.
        reason: String,
    },
    /// The model cannot check this kind of operation.
    #[error("{at}: model `{model}` cannot check `{f}` operations")]
    UnsupportedOp {
        /// Where.
        at: Location,
        /// The function.
        f: OpFn,
        /// The model asked for.
        model: ModelKind,
    },
}

/// Reads a JSONL history: one [`HistoryEvent`] per line, blank lines allowed. Checks every
/// line, then the history's structure (see the module docs); every error names its line.
/// The input is read a line at a time (see [`crate::input`]); lines longer than
/// [`MAX_LINE_BYTES`] are refused.
pub fn read_jsonl<R: BufRead>(reader: R) -> Result<Vec<HistoryEvent>, HistoryError> {
    let mut source = JsonlSource::new(reader, MAX_LINE_BYTES);
    let mut sink = CollectEvents::default();
    drive(&mut source, None, &mut sink)?;
    Ok(sink.events)
}

/// Reads a JSONL history file; see [`read_jsonl`].
pub fn read_jsonl_file(path: &Path) -> Result<Vec<HistoryEvent>, HistoryError> {
    let file = std::fs::File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_jsonl(io::BufReader::new(file))
}

/// Writes events as JSONL, one per line, and flushes the writer.
pub fn write_jsonl<W: Write>(mut writer: W, events: &[HistoryEvent]) -> Result<(), HistoryError> {
    for event in events {
        serde_json::to_writer(&mut writer, event)
            .map_err(|e| HistoryError::Write { source: e.into() })?;
        writer
            .write_all(b"\n")
            .map_err(|source| HistoryError::Write { source })?;
    }
    writer
        .flush()
        .map_err(|source| HistoryError::Write { source })
}

/// Parses one non-blank line, turning serde's "at line 1 column N" into a column only
/// (the line is ours).
pub(crate) fn parse_line(text: &[u8], line: usize) -> Result<HistoryEvent, HistoryError> {
    serde_json::from_slice::<HistoryEvent>(text).map_err(|e| {
        let mut message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = format!("{stripped} (column {})", e.column());
        }
        match e.classify() {
            serde_json::error::Category::Data => HistoryError::BadEvent { line, message },
            _ => HistoryError::BadJson { line, message },
        }
    })
}

/// The function of one micro-op of a `txn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MicroFn {
    /// `"r"` (or `"read"`): read the key.
    Read,
    /// `"w"` (or `"write"`): write the key.
    Write,
    /// `"append"`: append a string (to a string register) or an element (to a list:
    /// Elle's list-append, whose elements are integers) to the key.
    Append,
}

impl MicroFn {
    /// The name written in histories.
    pub fn name(self) -> &'static str {
        match self {
            MicroFn::Read => "r",
            MicroFn::Write => "w",
            MicroFn::Append => "append",
        }
    }
}

/// One micro-op of a `txn`: `[f, key, value]` in JSON (`["r", "x", null]`,
/// `["w", "x", 3]`, `["append", "x", "abc"]`, and Elle's list-append
/// `["append", "x", 3]`, `["r", "x", [1, 3]]`); an integer key is read as its decimal
/// string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicroOp {
    /// The function.
    pub f: MicroFn,
    /// The key.
    pub key: String,
    /// The value written or appended, or the value read (`None`: absent, not yet
    /// known in an invoke, or a list).
    pub value: Option<Val>,
    /// A read that returned a list (list-append): its elements. The single-key models
    /// do not check such reads; the transaction checker (`txn`) does.
    pub list: Option<Vec<Val>>,
}

/// What an operation asks for, parsed from its invoke's `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpArgs {
    /// Read the key.
    Read,
    /// Write the value.
    Write(Val),
    /// Set `new` if the value is `expected` (`None`: absent).
    Cas { expected: Option<Val>, new: Val },
    /// Remove the key.
    Delete,
    /// A transaction of micro-ops.
    Txn(Vec<MicroOp>),
}

/// An event's `value`, parsed by the shape its `f` and `type` require.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ParsedValue {
    /// An invoke's arguments.
    Args(OpArgs),
    /// A read completion: the value read (`None`: absent).
    ReadResult(Option<Val>),
    /// A write/cas/delete/txn completion: `None` when the value is `null`.
    Echo(Option<OpArgs>),
}

const MICRO_OPS_SHAPE: &str = "a list of micro-ops [f, key, value] (f \"r\", \"w\" or \"append\"; key a string or integer; w and append: an integer or string; r: null, an integer, a string or a list of them)";

/// Parses the micro-ops of a `txn` value; `invoke` reads must carry `null`.
fn parse_micro_ops(value: &serde_json::Value, invoke: bool) -> Option<Vec<MicroOp>> {
    use serde_json::Value;
    let Value::Array(items) = value else {
        return None;
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let [f, key, v] = parts.as_slice() else {
                return None;
            };
            let f = match f.as_str()? {
                "r" | "read" => MicroFn::Read,
                "w" | "write" => MicroFn::Write,
                "append" => MicroFn::Append,
                _ => return None,
            };
            let key = match key {
                Value::String(k) => k.clone(),
                Value::Number(n) if n.is_i64() => n.to_string(),
                _ => return None,
            };
            let (value, list) = match (f, v) {
                (MicroFn::Read, Value::Null) => (None, None),
                (MicroFn::Read, _) if invoke => return None,
                (MicroFn::Read, Value::Array(items)) => {
                    let list: Option<Vec<Val>> = items.iter().map(Val::from_json).collect();
                    (None, Some(list?))
                }
                (MicroFn::Read, _) => (val_or_null(v)?, None),
                (MicroFn::Write | MicroFn::Append, _) => (Some(Val::from_json(v)?), None),
            };
            Some(MicroOp {
                f,
                key,
                value,
                list,
            })
        })
        .collect()
}

/// Checks an event's `value` against its `f` and `type` and parses it.
pub(crate) fn parse_value(event: &HistoryEvent, at: Location) -> Result<ParsedValue, HistoryError> {
    use serde_json::Value;
    let value = &event.value;
    let invoke = event.kind == EventType::Invoke;
    let bad = |expected: &'static str| HistoryError::BadValue {
        at,
        f: event.f,
        kind: event.kind,
        expected,
        found: truncated_json(value),
    };
    let wrap = |args: OpArgs| {
        if invoke {
            ParsedValue::Args(args)
        } else {
            ParsedValue::Echo(Some(args))
        }
    };
    match event.f {
        OpFn::Read if invoke => match value {
            Value::Null => Ok(ParsedValue::Args(OpArgs::Read)),
            _ => Err(bad("null")),
        },
        OpFn::Read => val_or_null(value)
            .map(ParsedValue::ReadResult)
            .ok_or_else(|| bad("an integer, a string or null")),
        OpFn::Write => match (value, invoke) {
            (Value::Null, false) => Ok(ParsedValue::Echo(None)),
            _ => match Val::from_json(value) {
                Some(v) => Ok(wrap(OpArgs::Write(v))),
                None => Err(bad(if invoke {
                    "an integer or a string"
                } else {
                    "an integer, a string or null"
                })),
            },
        },
        OpFn::Cas => match (value, invoke) {
            (Value::Null, false) => Ok(ParsedValue::Echo(None)),
            (Value::Array(pair), _) if pair.len() == 2 => {
                match (val_or_null(&pair[0]), Val::from_json(&pair[1])) {
                    (Some(expected), Some(new)) => Ok(wrap(OpArgs::Cas { expected, new })),
                    _ => Err(bad(
                        "[old, new]: old an integer, a string or null, new an integer or a string",
                    )),
                }
            }
            _ => Err(bad(
                "[old, new]: old an integer, a string or null, new an integer or a string",
            )),
        },
        OpFn::Delete => match value {
            Value::Null if invoke => Ok(ParsedValue::Args(OpArgs::Delete)),
            Value::Null => Ok(ParsedValue::Echo(None)),
            _ => Err(bad("null")),
        },
        OpFn::Txn => match value {
            Value::Null if !invoke && event.kind != EventType::Ok => Ok(ParsedValue::Echo(None)),
            _ => match parse_micro_ops(value, invoke) {
                Some(micro) if !micro.is_empty() => Ok(wrap(OpArgs::Txn(micro))),
                _ => Err(bad(MICRO_OPS_SHAPE)),
            },
        },
    }
}

/// Whether a completion's echoed arguments agree with the invoke's: the same value for
/// write/cas; for a txn, the same micro-ops with the same written values (reads carry
/// their results).
fn echo_matches(invoked: &OpArgs, echo: &OpArgs) -> bool {
    match (invoked, echo) {
        (OpArgs::Txn(a), OpArgs::Txn(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    x.f == y.f && x.key == y.key && (x.f == MicroFn::Read || x.value == y.value)
                })
        }
        (a, b) => a == b,
    }
}

/// The most characters of a value an error message quotes.
const MAX_QUOTED_VALUE_CHARS: usize = 80;

fn truncated_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_QUOTED_VALUE_CHARS {
        text
    } else {
        let mut short: String = text.chars().take(MAX_QUOTED_VALUE_CHARS).collect();
        short.push('…');
        short
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It took effect; a read carries the value it returned, a txn its micro-ops with
    /// the values read.
    Ok {
        read: Option<Val>,
        txn: Option<Vec<MicroOp>>,
    },
    /// It surely did not take effect.
    Fail,
    /// It may have taken effect, at any time after its invoke.
    Info,
    /// It was still open at the end of the history: the same as `Info`.
    Open,
}

/// One operation: an invoke paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PairedOp {
    /// The process.
    pub process: u64,
    /// The function.
    pub f: OpFn,
    /// The key, if any.
    pub key: Option<String>,
    /// The arguments, from the invoke.
    pub args: OpArgs,
    /// How it ended.
    pub outcome: Outcome,
    /// Position of the invoke in the history.
    pub invoke_position: usize,
    /// Position of the completion, if it completed.
    pub complete_position: Option<usize>,
    /// `index` of the invoke.
    pub invoke_index: u64,
    /// `index` of the completion.
    pub complete_index: Option<u64>,
    /// The node the client talked to, if recorded.
    pub node: Option<u32>,
    /// Where the invoke is (a line of a file, or an event of a slice), for errors.
    pub invoke_at: Location,
}

/// A process's place in Jepsen's discipline; an idle process has no entry.
enum ProcessState {
    /// Its operation is open.
    Open(Box<OpenOp>),
    /// Its last operation ended in `info`: it must not invoke again.
    Crashed { info_index: u64 },
}

/// An invoked operation waiting for its completion.
struct OpenOp {
    op: PairedOp,
    /// The invoke's `value`, quoted if a completion disagrees with it.
    invoke_value: serde_json::Value,
}

/// Checks values and structure event by event and pairs invokes with completions,
/// keeping only what is open: one operation per process with an open invoke, and the
/// `info` index of each process that ended in `info` (Jepsen: it never invokes again).
#[derive(Default)]
pub(crate) struct Pairer {
    processes: BTreeMap<u64, ProcessState>,
    previous_index: Option<u64>,
}

impl Pairer {
    /// Takes the event at `position` (from 0) of the history, found `at`; returns the
    /// operation it completes, if it is a completion.
    pub(crate) fn push(
        &mut self,
        event: &HistoryEvent,
        position: usize,
        at: Location,
    ) -> Result<Option<PairedOp>, HistoryError> {
        if let Some(previous) = self.previous_index
            && event.index <= previous
        {
            return Err(HistoryError::IndexNotIncreasing {
                at,
                index: event.index,
                previous,
            });
        }
        self.previous_index = Some(event.index);
        let parsed = parse_value(event, at)?;
        let process = event.process;
        // `parse_value` returns `Args` exactly for invokes.
        if let ParsedValue::Args(args) = parsed {
            match self.processes.get(&process) {
                Some(ProcessState::Open(open)) => {
                    return Err(HistoryError::ConcurrentInvoke {
                        at,
                        process,
                        open_index: open.op.invoke_index,
                    });
                }
                Some(ProcessState::Crashed { info_index }) => {
                    return Err(HistoryError::InvokeAfterInfo {
                        at,
                        process,
                        info_index: *info_index,
                    });
                }
                None => {}
            }
            let op = PairedOp {
                process,
                f: event.f,
                key: event.key.clone(),
                args,
                outcome: Outcome::Open,
                invoke_position: position,
                complete_position: None,
                invoke_index: event.index,
                complete_index: None,
                node: event.node,
                invoke_at: at,
            };
            self.processes.insert(
                process,
                ProcessState::Open(Box::new(OpenOp {
                    op,
                    invoke_value: event.value.clone(),
                })),
            );
            return Ok(None);
        }
        let kind = event.kind;
        // Taken out here; after an error the pairer is not used again.
        let open = match self.processes.remove(&process) {
            Some(ProcessState::Open(open)) => open,
            other => {
                if let Some(state) = other {
                    self.processes.insert(process, state);
                }
                return Err(HistoryError::CompletionWithoutInvoke { at, process });
            }
        };
        let op = &open.op;
        if op.f != event.f {
            return Err(HistoryError::CompletionFnMismatch {
                at,
                process,
                invoked: op.f,
                completed: event.f,
                invoke_index: op.invoke_index,
            });
        }
        if event.key.is_some() && event.key != op.key {
            return Err(HistoryError::CompletionKeyMismatch {
                at,
                process,
                invoked: op.key.clone(),
                completed: event.key.clone(),
                invoke_index: op.invoke_index,
            });
        }
        if let ParsedValue::Echo(Some(echo)) = &parsed
            && !echo_matches(&op.args, echo)
        {
            return Err(HistoryError::CompletionValueMismatch {
                at,
                f: event.f,
                invoked: truncated_json(&open.invoke_value),
                completed: truncated_json(&event.value),
                invoke_index: op.invoke_index,
            });
        }
        if kind == EventType::Info {
            self.processes.insert(
                process,
                ProcessState::Crashed {
                    info_index: event.index,
                },
            );
        }
        let mut op = open.op;
        op.outcome = match (kind, parsed) {
            (EventType::Ok, ParsedValue::ReadResult(read)) => Outcome::Ok { read, txn: None },
            (EventType::Ok, ParsedValue::Echo(Some(OpArgs::Txn(micro)))) => Outcome::Ok {
                read: None,
                txn: Some(micro),
            },
            (EventType::Ok, _) => Outcome::Ok {
                read: None,
                txn: None,
            },
            (EventType::Fail, _) => Outcome::Fail,
            _ => Outcome::Info,
        };
        op.complete_position = Some(position);
        op.complete_index = Some(event.index);
        if op.node.is_none() {
            op.node = event.node;
        }
        Ok(Some(op))
    }

    /// The operations still open at the end of the history (they count as `info`), in
    /// invoke order.
    pub(crate) fn finish(self) -> Vec<PairedOp> {
        let mut open: Vec<PairedOp> = self
            .processes
            .into_values()
            .filter_map(|state| match state {
                ProcessState::Open(open) => Some(open.op),
                ProcessState::Crashed { .. } => None,
            })
            .collect();
        open.sort_by_key(|op| op.invoke_position);
        open
    }
}

/// Checks values and structure and pairs invokes with completions, in invoke order.
pub(crate) fn pair_operations(
    events: &[HistoryEvent],
    locate: &dyn Fn(usize) -> Location,
) -> Result<Vec<PairedOp>, HistoryError> {
    let mut pairer = Pairer::default();
    let mut ops = Vec::new();
    for (position, event) in events.iter().enumerate() {
        if let Some(op) = pairer.push(event, position, locate(position))? {
            ops.push(op);
        }
    }
    ops.extend(pairer.finish());
    ops.sort_by_key(|op| op.invoke_position);
    Ok(ops)
}
