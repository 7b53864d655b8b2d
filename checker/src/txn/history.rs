//! Transaction histories: the types the checker works on, and the two readers (kvlab
//! JSONL and Jepsen/Elle EDN) with their errors. The formats are described in the
//! [module docs](super).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Read};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::edn::{Edn, EdnReadError, EdnReader};
use crate::formats::{DETECT_BYTES, HistoryFormat, detect_format};
use crate::history::{EventType, HistoryError, MAX_HISTORY_EVENTS};
use crate::input::{LineReader, MAX_HISTORY_LINE_BYTES};

/// A key, as an index into [`TxnHistory::keys`].
pub type KeyId = u32;

/// A transaction's id: its position in [`TxnHistory::txns`] (invoke order).
pub type TxnId = u32;

/// What a micro-op read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadValue {
    /// Not known: the read of an invoke, or of a transaction that did not complete `ok`.
    Unknown,
    /// `nil`: an empty list (list-append) or an absent key (rw-register).
    Nil,
    /// A list of elements (list-append).
    List(Box<[i64]>),
    /// A register's value (rw-register).
    Int(i64),
}

/// One micro-op of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mop {
    /// `[:append k v]`: append `elem` to the list at `key`.
    Append {
        /// The key.
        key: KeyId,
        /// The element (unique per key).
        elem: i64,
    },
    /// `[:w k v]`: write `value` to the register at `key`.
    Write {
        /// The key.
        key: KeyId,
        /// The value (unique per key).
        value: i64,
    },
    /// `[:r k v]`: read `key`.
    Read {
        /// The key.
        key: KeyId,
        /// What was read.
        value: ReadValue,
    },
}

impl Mop {
    /// The key this micro-op touches.
    pub fn key(&self) -> KeyId {
        match self {
            Mop::Append { key, .. } | Mop::Write { key, .. } | Mop::Read { key, .. } => *key,
        }
    }
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TxnStatus {
    /// Committed; its reads carry their values.
    Ok,
    /// May or may not have committed (also: still open at the end of the history).
    Info,
    /// Surely did not commit.
    Fail,
}

/// One transaction: an invoke paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// The process that ran it.
    pub process: u64,
    /// How it ended.
    pub status: TxnStatus,
    /// The `index` of its invoke.
    pub invoke_index: u64,
    /// The `index` of its completion, if it completed.
    pub complete_index: Option<u64>,
    /// The line of its invoke, from 1.
    pub line: usize,
    /// Its micro-ops (with the values read, when `ok`).
    pub mops: Vec<Mop>,
}

/// Which kind of transactions a history holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Appends to lists and reads of whole lists (the stronger inference).
    ListAppend,
    /// Writes and reads of registers (the weaker inference).
    RwRegister,
}

impl Workload {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::ListAppend => "list-append",
            Workload::RwRegister => "rw-register",
        }
    }
}

/// A transaction history, read and paired.
#[derive(Clone, Debug)]
pub struct TxnHistory {
    /// Transactions in invoke order; a [`TxnId`] is a position here.
    pub txns: Vec<Txn>,
    /// Key names, by [`KeyId`].
    pub keys: Vec<String>,
    /// List-append or rw-register.
    pub workload: Workload,
    /// Every invoke and completion in history order: `id * 2` an invoke, `id * 2 + 1`
    /// a completion.
    pub(crate) order: Vec<u32>,
}

impl TxnHistory {
    /// The name of a key.
    pub fn key_name(&self, key: KeyId) -> &str {
        &self.keys[key as usize]
    }
}

/// Why a transaction history cannot be read. A history that reads fine but shows an
/// anomaly is not an error: it is an invalid report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxnError {
    /// The input failed, a line was too long, or EDN syntax is broken.
    #[error(transparent)]
    Input(#[from] HistoryError),
    /// A line is not a transaction event.
    #[error("line {line}: not a transaction event: {message}")]
    BadEvent {
        /// The line, from 1.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// An operation that is not a transaction.
    #[error(
        "line {line}: `{f}` is not a transaction; the transaction models (strict-serializable, serializable, snapshot-isolation, read-committed) check histories of `txn` operations — for a register or key-value history use --model register, cas-register or kv"
    )]
    NotTxn {
        /// The line.
        line: usize,
        /// The function found.
        f: String,
    },
    /// List-append and rw-register micro-ops in one history.
    #[error(
        "line {line}: {found} in a {workload} history (a history is list-append or rw-register, not both)"
    )]
    MixedWorkload {
        /// The line.
        line: usize,
        /// What the first micro-ops made the history.
        workload: &'static str,
        /// What was found.
        found: String,
    },
    /// Two appends of one element to one key, or two writes of one value: the inference
    /// needs them unique.
    #[error(
        "line {line}: {what} {value} to key {key} again (first on line {first_line}); the checker needs every appended element and written value unique per key"
    )]
    NotUnique {
        /// The line of the second.
        line: usize,
        /// The line of the first.
        first_line: usize,
        /// `appends` or `writes`.
        what: &'static str,
        /// The key.
        key: String,
        /// The element or value.
        value: i64,
    },
    /// A break of Jepsen's process discipline or of the pairing of invoke and completion.
    #[error("line {line}: {message}")]
    Structure {
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A history format the transaction checker does not read.
    #[error("the transaction checker reads JSONL or EDN histories, not {format}")]
    Format {
        /// The format found.
        format: HistoryFormat,
    },
    /// No transaction in the history.
    #[error("the history holds no transaction")]
    Empty,
}

/// A micro-op as read, before keys are interned and the workload is known.
#[derive(Clone, Debug, PartialEq)]
struct RawMop {
    f: RawFn,
    key: String,
    value: RawValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawFn {
    Read,
    Write,
    Append,
}

#[derive(Clone, Debug, PartialEq)]
enum RawValue {
    Nil,
    Int(i64),
    List(Vec<i64>),
}

/// One event as read from either format.
#[derive(Debug)]
struct RawEvent {
    index: Option<u64>,
    process: u64,
    kind: EventType,
    /// `None`: the completion carries no micro-ops (a keyword, `nil`).
    mops: Option<Vec<RawMop>>,
    line: usize,
    /// A completion without `:process` (as in Elle's README): a transaction of its own,
    /// invoked just before it completes.
    bare: bool,
}

/// Reads a transaction history in `format` (`Auto`: detected from the first bytes; JSONL
/// and EDN only).
pub fn read_txn_history<R: BufRead>(
    mut reader: R,
    format: HistoryFormat,
) -> Result<TxnHistory, TxnError> {
    let mut head = Vec::new();
    let format = match format {
        HistoryFormat::Auto => {
            Read::take(&mut reader, DETECT_BYTES as u64)
                .read_to_end(&mut head)
                .map_err(|source| HistoryError::Read { line: 1, source })?;
            detect_format(&head)?
        }
        f => f,
    };
    let input = io::Cursor::new(head).chain(reader);
    let lines = LineReader::new(input, MAX_HISTORY_LINE_BYTES);
    let mut builder = Builder::default();
    match format {
        HistoryFormat::Jsonl | HistoryFormat::Auto => {
            let mut source = JsonlTxnSource { lines };
            while let Some(event) = source.next_event()? {
                builder.push(event)?;
            }
        }
        HistoryFormat::Edn => {
            let mut source = EdnTxnSource {
                reader: EdnReader::new(lines),
                close: None,
                started: false,
            };
            while let Some(event) = source.next_event()? {
                builder.push(event)?;
            }
        }
        other => return Err(TxnError::Format { format: other }),
    }
    builder.finish()
}

/// Reads a transaction history file; see [`read_txn_history`].
pub fn read_txn_history_file(path: &Path, format: HistoryFormat) -> Result<TxnHistory, TxnError> {
    let file = std::fs::File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_txn_history(io::BufReader::with_capacity(1 << 16, file), format)
}

/// Whether the first bytes of `path` hold a list-append transaction history: a
/// register model asked to check one can then say what to ask for instead.
pub fn looks_like_list_append(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if Read::take(file, DETECT_BYTES as u64)
        .read_to_end(&mut head)
        .is_err()
    {
        return false;
    }
    // Cut at the last newline: a truncated op would be a syntax error.
    let end = head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut builder = Builder::default();
    let format = detect_format(&head).unwrap_or(HistoryFormat::Auto);
    let lines = LineReader::new(&head[..end], MAX_HISTORY_LINE_BYTES);
    let mut push = |e: Result<Option<RawEvent>, TxnError>| match e {
        Ok(Some(event)) => builder.push(event).is_ok(),
        _ => false,
    };
    match format {
        HistoryFormat::Jsonl => {
            let mut source = JsonlTxnSource { lines };
            while push(source.next_event()) {}
        }
        HistoryFormat::Edn => {
            let mut source = EdnTxnSource {
                reader: EdnReader::new(lines),
                close: None,
                started: false,
            };
            while push(source.next_event()) {}
        }
        _ => return false,
    }
    builder.workload == Some(Workload::ListAppend)
}

// ---------------------------------------------------------------------------------------
// JSONL

/// kvlab's JSONL transaction event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    index: u64,
    #[serde(default)]
    #[allow(dead_code)]
    time_ns: u64,
    process: u64,
    #[serde(rename = "type")]
    kind: EventType,
    f: String,
    #[serde(default)]
    value: Value,
    /// Single-key operations carry one; a txn has none (read so that a register
    /// history is named as such rather than as an unknown field).
    #[serde(default)]
    #[allow(dead_code)]
    key: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    node: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    error: Option<String>,
}

struct JsonlTxnSource<R> {
    lines: LineReader<R>,
}

impl<R: BufRead> JsonlTxnSource<R> {
    fn next_event(&mut self) -> Result<Option<RawEvent>, TxnError> {
        while self.lines.advance()? {
            let text = self.lines.text();
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line = self.lines.line();
            let event: JsonEvent =
                serde_json::from_slice(text).map_err(|e| TxnError::BadEvent {
                    line,
                    message: e.to_string(),
                })?;
            if event.f != "txn" {
                return Err(TxnError::NotTxn { line, f: event.f });
            }
            let mops = json_mops(&event.value, line)?;
            return Ok(Some(RawEvent {
                index: Some(event.index),
                process: event.process,
                kind: event.kind,
                mops,
                line,
                bare: false,
            }));
        }
        Ok(None)
    }
}

const MOPS_SHAPE: &str = "a list of micro-ops [f, key, value]: f \"r\", \"w\" or \"append\"; key a string or an integer; value an integer, a list of integers (a list-append read) or null";

fn json_mops(value: &Value, line: usize) -> Result<Option<Vec<RawMop>>, TxnError> {
    let bad = |why: String| TxnError::BadEvent {
        line,
        message: format!("`value` must be {MOPS_SHAPE}: {why}"),
    };
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        other => return Err(bad(format!("found {other}"))),
    };
    let mut mops = Vec::with_capacity(items.len());
    for item in items {
        let Some([f, key, v]) = item.as_array().map(Vec::as_slice) else {
            return Err(bad(format!("found {item}")));
        };
        let f = raw_fn(f.as_str().unwrap_or("")).ok_or_else(|| bad(format!("found f {f}")))?;
        let key = match key {
            Value::String(k) => k.clone(),
            Value::Number(n) if n.is_i64() => n.to_string(),
            other => return Err(bad(format!("found key {other}"))),
        };
        let value = match v {
            Value::Null => RawValue::Nil,
            Value::Number(n) if n.is_i64() => RawValue::Int(n.as_i64().unwrap_or(0)),
            Value::Array(elems) => RawValue::List(
                elems
                    .iter()
                    .map(Value::as_i64)
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| bad(format!("found a list {v} with a non-integer")))?,
            ),
            other => return Err(bad(format!("found value {other}"))),
        };
        mops.push(RawMop { f, key, value });
    }
    Ok(Some(mops))
}

fn raw_fn(name: &str) -> Option<RawFn> {
    match name {
        "r" | "read" => Some(RawFn::Read),
        "w" | "write" => Some(RawFn::Write),
        "append" => Some(RawFn::Append),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// EDN

struct EdnTxnSource<R> {
    reader: EdnReader<R>,
    /// The closing bracket of a history wrapped in one vector or list.
    close: Option<u8>,
    started: bool,
}

fn edn_error(e: EdnReadError) -> TxnError {
    match e {
        EdnReadError::Syntax(e) => TxnError::Input(HistoryError::Syntax {
            line: e.line,
            format: "edn",
            expected: e.expected,
            found: e.found,
        }),
        EdnReadError::Input(e) => TxnError::Input(e),
    }
}

impl<R: BufRead> EdnTxnSource<R> {
    fn next_event(&mut self) -> Result<Option<RawEvent>, TxnError> {
        if !self.started {
            self.started = true;
            self.close = match self.reader.peek().map_err(edn_error)? {
                Some(b'[') => Some(b']'),
                Some(b'(') => Some(b')'),
                _ => None,
            };
            if let Some(c) = self.close {
                self.reader
                    .eat(if c == b']' { b'[' } else { b'(' })
                    .map_err(edn_error)?;
            }
        }
        loop {
            let next = self.reader.peek().map_err(edn_error)?;
            match (next, self.close) {
                (None, None) => return Ok(None),
                (Some(b), Some(c)) if b == c => {
                    self.reader.eat(c).map_err(edn_error)?;
                    self.close = None;
                    continue;
                }
                (None, Some(c)) => {
                    return Err(TxnError::Input(HistoryError::Syntax {
                        line: self.reader.line(),
                        format: "edn",
                        expected: format!("`{}` to close the history", c as char),
                        found: "the end of the input".into(),
                    }));
                }
                _ => {}
            }
            self.reader.skip_blank().map_err(edn_error)?;
            let line = self.reader.line();
            let op = self.reader.value().map_err(edn_error)?;
            if let Some(event) = edn_event(&op, line)? {
                return Ok(Some(event));
            }
        }
    }
}

/// One EDN op map → an event; `None` for a nemesis op.
fn edn_event(op: &Edn, line: usize) -> Result<Option<RawEvent>, TxnError> {
    let bad = |message: String| TxnError::BadEvent { line, message };
    if !matches!(op, Edn::Map(_)) {
        return Err(bad(format!("expected an op map, found {}", op.kind())));
    }
    let (process, bare) = match op.get("process") {
        Some(Edn::Int(p)) => (
            u64::try_from(*p).map_err(|_| bad(format!(":process {p} is negative")))?,
            false,
        ),
        Some(Edn::Keyword(_)) => return Ok(None),
        Some(other) => return Err(bad(format!(":process must be an integer, found {other}"))),
        None => (0, true),
    };
    let kind = match op.get("type") {
        Some(Edn::Keyword(t)) => match t.as_str() {
            "invoke" => EventType::Invoke,
            "ok" => EventType::Ok,
            "fail" => EventType::Fail,
            "info" => EventType::Info,
            other => return Err(bad(format!("unknown :type :{other}"))),
        },
        other => return Err(bad(format!(":type must be a keyword, found {other:?}"))),
    };
    if bare && kind == EventType::Invoke {
        return Err(bad("missing :process".into()));
    }
    match op.get("f") {
        // Elle's own test histories leave `:f` out.
        Some(Edn::Keyword(f)) if f == "txn" => {}
        None => {}
        Some(f) => {
            return Err(TxnError::NotTxn {
                line,
                f: f.to_string(),
            });
        }
    }
    let index = match op.get("index") {
        Some(Edn::Int(i)) => Some(u64::try_from(*i).map_err(|_| bad(format!(":index {i}")))?),
        None => None,
        Some(other) => return Err(bad(format!(":index must be an integer, found {other}"))),
    };
    let mops = match op.get("value") {
        None | Some(Edn::Nil) | Some(Edn::Keyword(_)) => None,
        Some(Edn::Vector(items) | Edn::List(items)) => Some(
            items
                .iter()
                .map(|m| edn_mop(m).map_err(|why| bad(format!("micro-op {m}: {why}"))))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => {
            return Err(bad(format!(
                ":value must be a vector of micro-ops, found {other}"
            )));
        }
    };
    Ok(Some(RawEvent {
        index,
        process,
        kind,
        mops,
        line,
        bare,
    }))
}

fn edn_mop(m: &Edn) -> Result<RawMop, String> {
    let (Edn::Vector(parts) | Edn::List(parts)) = m else {
        return Err("expected [f key value]".into());
    };
    let [f, key, value] = parts.as_slice() else {
        return Err("expected three elements [f key value]".into());
    };
    let f = match f {
        Edn::Keyword(f) | Edn::Symbol(f) | Edn::Str(f) => raw_fn(f),
        _ => None,
    }
    .ok_or("f must be :r, :w or :append")?;
    let key = match key {
        Edn::Int(i) => i.to_string(),
        Edn::Str(s) | Edn::Keyword(s) | Edn::Symbol(s) => s.clone(),
        _ => return Err("a key must be an integer, a string or a keyword".into()),
    };
    let value = match value {
        Edn::Nil => RawValue::Nil,
        Edn::Int(i) => RawValue::Int(*i),
        Edn::Vector(items) | Edn::List(items) => RawValue::List(
            items
                .iter()
                .map(|e| match e {
                    Edn::Int(i) => Ok(*i),
                    _ => Err("list elements must be integers".to_owned()),
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err("a value must be nil, an integer or a vector of integers".into()),
    };
    Ok(RawMop { f, key, value })
}

// ---------------------------------------------------------------------------------------
// Pairing

/// Pairs events into transactions, interning keys and deciding the workload.
#[derive(Default)]
struct Builder {
    txns: Vec<Txn>,
    order: Vec<u32>,
    keys: Vec<String>,
    key_ids: HashMap<String, KeyId>,
    workload: Option<Workload>,
    workload_line: usize,
    /// Open transaction of each process, or `None` once it ended in `info`.
    processes: HashMap<u64, Option<TxnId>>,
    /// `(key, value)` → line of its append or write.
    written: HashMap<(KeyId, i64), usize>,
    next_index: u64,
    previous_index: Option<u64>,
    events: usize,
    /// Processes given to bare completions, counting down from `u64::MAX`.
    bare_processes: u64,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("txns", &self.txns.len())
            .finish()
    }
}

impl Builder {
    fn push(&mut self, mut event: RawEvent) -> Result<(), TxnError> {
        if event.bare {
            // A process of its own, invoked just before (no index of its own).
            self.bare_processes += 1;
            event.process = u64::MAX - self.bare_processes;
            event.bare = false;
            let invoke = RawEvent {
                index: None,
                process: event.process,
                kind: EventType::Invoke,
                mops: event.mops.clone(),
                line: event.line,
                bare: false,
            };
            self.push(invoke)?;
            // Numbered after its invoke; an `:index` of its own is ignored.
            event.index = None;
        }
        let line = event.line;
        let structure = |message: String| TxnError::Structure { line, message };
        self.events += 1;
        if self.events > MAX_HISTORY_EVENTS {
            return Err(HistoryError::TooManyEvents {
                line,
                limit: MAX_HISTORY_EVENTS,
            }
            .into());
        }
        let index = event.index.unwrap_or(self.next_index);
        if let Some(previous) = self.previous_index
            && index <= previous
        {
            return Err(structure(format!(
                "index {index} does not follow index {previous} (indices must grow)"
            )));
        }
        self.previous_index = Some(index);
        self.next_index = index + 1;
        let open = self.processes.get(&event.process).copied();
        if event.kind == EventType::Invoke {
            match open {
                Some(Some(id)) => {
                    return Err(structure(format!(
                        "process {} invokes while its transaction invoked on line {} is open",
                        event.process, self.txns[id as usize].line
                    )));
                }
                Some(None) => {
                    return Err(structure(format!(
                        "process {} invokes again after a transaction of its ended in info (use a new process id)",
                        event.process
                    )));
                }
                None => {}
            }
            let Some(raw) = event.mops else {
                return Err(structure("an invoke needs its micro-ops".into()));
            };
            let mops = self.intern(raw, false, line)?;
            let id = TxnId::try_from(self.txns.len()).map_err(|_| structure("too many".into()))?;
            self.txns.push(Txn {
                process: event.process,
                status: TxnStatus::Info,
                invoke_index: index,
                complete_index: None,
                line,
                mops,
            });
            self.order.push(id * 2);
            self.processes.insert(event.process, Some(id));
            return Ok(());
        }
        let Some(Some(id)) = open else {
            return Err(structure(format!(
                "process {} completes a transaction it never invoked",
                event.process
            )));
        };
        self.complete(id, event, index)
    }

    fn complete(&mut self, id: TxnId, event: RawEvent, index: u64) -> Result<(), TxnError> {
        let line = event.line;
        let ok = event.kind == EventType::Ok;
        let mops = match event.mops {
            Some(raw) => Some(self.intern(raw, ok, line)?),
            None if ok => {
                return Err(TxnError::BadEvent {
                    line,
                    message: "an ok transaction needs its micro-ops with the values read".into(),
                });
            }
            None => None,
        };
        let txn = &mut self.txns[id as usize];
        if let Some(mops) = mops {
            let same = mops.len() == txn.mops.len()
                && mops.iter().zip(&txn.mops).all(|(a, b)| match (a, b) {
                    (Mop::Read { key: x, .. }, Mop::Read { key: y, .. }) => x == y,
                    (a, b) => a == b,
                });
            if !same {
                return Err(TxnError::Structure {
                    line,
                    message: format!(
                        "the completion's micro-ops differ from those invoked on line {}",
                        txn.line
                    ),
                });
            }
            if ok {
                txn.mops = mops;
            }
        }
        txn.status = match event.kind {
            EventType::Ok => TxnStatus::Ok,
            EventType::Fail => TxnStatus::Fail,
            _ => TxnStatus::Info,
        };
        txn.complete_index = Some(index);
        // A process whose transaction ended in info never invokes again (Jepsen).
        if txn.status == TxnStatus::Info {
            self.processes.insert(event.process, None);
        } else {
            self.processes.remove(&event.process);
        }
        self.order.push(id * 2 + 1);
        Ok(())
    }

    /// Interns keys, records written values (invokes only), and decides the workload.
    fn intern(&mut self, raw: Vec<RawMop>, ok: bool, line: usize) -> Result<Vec<Mop>, TxnError> {
        let mut mops = Vec::with_capacity(raw.len());
        for m in raw {
            let key = self.key_id(m.key);
            let mop = match (m.f, m.value) {
                (RawFn::Append, RawValue::Int(elem)) => {
                    self.set_workload(Workload::ListAppend, line, "an append")?;
                    Mop::Append { key, elem }
                }
                (RawFn::Write, RawValue::Int(value)) => {
                    self.set_workload(Workload::RwRegister, line, "a write")?;
                    Mop::Write { key, value }
                }
                (RawFn::Read, value) => {
                    let value = match value {
                        _ if !ok => ReadValue::Unknown,
                        RawValue::Nil => ReadValue::Nil,
                        RawValue::Int(v) => {
                            self.set_workload(Workload::RwRegister, line, "a register read")?;
                            ReadValue::Int(v)
                        }
                        RawValue::List(l) => {
                            self.set_workload(Workload::ListAppend, line, "a list read")?;
                            ReadValue::List(l.into_boxed_slice())
                        }
                    };
                    Mop::Read { key, value }
                }
                (f, v) => {
                    return Err(TxnError::BadEvent {
                        line,
                        message: format!("{f:?} of {v:?}: appends and writes take an integer"),
                    });
                }
            };
            mops.push(mop);
        }
        Ok(mops)
    }

    fn key_id(&mut self, name: String) -> KeyId {
        if let Some(&id) = self.key_ids.get(&name) {
            return id;
        }
        let id = self.keys.len() as KeyId;
        self.keys.push(name.clone());
        self.key_ids.insert(name, id);
        id
    }

    fn set_workload(&mut self, w: Workload, line: usize, found: &str) -> Result<(), TxnError> {
        match self.workload {
            None => {
                self.workload = Some(w);
                self.workload_line = line;
                Ok(())
            }
            Some(have) if have == w => Ok(()),
            Some(have) => Err(TxnError::MixedWorkload {
                line,
                workload: have.name(),
                found: format!(
                    "{found} (the workload was set on line {})",
                    self.workload_line
                ),
            }),
        }
    }

    /// Checks that appended elements and written values are unique per key.
    fn check_unique(&mut self) -> Result<(), TxnError> {
        for txn in &self.txns {
            for m in &txn.mops {
                let (key, value, what) = match m {
                    Mop::Append { key, elem } => (*key, *elem, "appends"),
                    Mop::Write { key, value } => (*key, *value, "writes"),
                    Mop::Read { .. } => continue,
                };
                if let Some(&first_line) = self.written.get(&(key, value)) {
                    return Err(TxnError::NotUnique {
                        line: txn.line,
                        first_line,
                        what,
                        key: self.keys[key as usize].clone(),
                        value,
                    });
                }
                self.written.insert((key, value), txn.line);
            }
        }
        self.written = HashMap::new();
        Ok(())
    }

    fn finish(mut self) -> Result<TxnHistory, TxnError> {
        if self.txns.is_empty() {
            return Err(TxnError::Empty);
        }
        self.check_unique()?;
        Ok(TxnHistory {
            txns: self.txns,
            keys: self.keys,
            workload: self.workload.unwrap_or(Workload::ListAppend),
            order: self.order,
        })
    }
}
