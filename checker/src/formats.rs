//! History formats other than kvlab's JSONL: Jepsen EDN, the Jepsen log lines of
//! porcupine's etcd test data, and porcupine's KV log; detection; export as EDN.
//!
//! Every reader turns its input into [`HistoryEvent`]s and then runs the same
//! structural checks as [`read_jsonl`](crate::read_jsonl) (Jepsen's process discipline),
//! so every error names a line of the input.
//!
//! * **`edn`** — a vector (or list) of op maps, or a sequence of op maps (Jepsen's
//!   `history.edn`): `{:process 0, :type :invoke, :f :write, :value 3}` with optional
//!   `:time` (ns), `:index`, `:key` and `:error`; other keys are ignored. `:f` is
//!   `:read`/`:r`/`:get`, `:write`/`:w`/`:put`, `:cas` (`[old new]`), `:delete`,
//!   `:append` (a one-micro-op txn, see [`crate::model`]) or `:txn` (`[[:r k v] [:w k v]
//!   [:append k v]]`). A `:value` of the form `[k v]` on a read or write, or `[k [old
//!   new]]` on a cas, is Jepsen's `independent` tuple: key `k`, value `v`. Events whose
//!   `:process` is not an integer (`:nemesis`) are skipped. A keyword value on a `fail` or
//!   `info` completion (`:timed-out`) means "no value" and becomes its `error`.
//! * **`jepsen-log`** — lines `INFO  jepsen.util - 3 :invoke :cas [1 4]` (tab-separated) as in
//!   porcupine's `test_data/jepsen/etcd_*.log`: process, type, `:f`, value (EDN). Lines
//!   without `jepsen.util - ` (other log output) and `:nemesis` lines are skipped.
//! * **`porcupine-kv`** — porcupine's `test_data/kv/*.txt`: EDN op maps with `:key`, `:f`
//!   `:get`/`:put`/`:append` and string values, where a missing key reads as `""`. So a
//!   `get` that returns `""` reads an absent key, and a `put` of `""` is a delete.
//!
//! Semantics differ from porcupine's etcd loader in one place: a `:fail :cas` did not
//! happen (Jepsen), where porcupine's etcd model also learns "the value was not `old`".

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::edn::{Edn, EdnReadError, EdnReader};
use crate::history::{EventType, HistoryError, HistoryEvent, OpFn};
use crate::input::{
    CollectEvents, DriveCounts, EventSink, EventSource, JsonlSource, LineReader, ReadOptions, drive,
};

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HistoryFormat {
    /// Decide from the content (see [`detect_format`]).
    Auto,
    /// kvlab's JSONL (see [`crate::history`]).
    Jsonl,
    /// Jepsen EDN histories.
    Edn,
    /// Jepsen log lines (porcupine's etcd test data).
    JepsenLog,
    /// porcupine's KV log (EDN with `:key`, `get`/`put`/`append`, `""` for absent).
    PorcupineKv,
}

impl HistoryFormat {
    /// Every format, for command-line help.
    pub const ALL: [HistoryFormat; 5] = [
        HistoryFormat::Auto,
        HistoryFormat::Jsonl,
        HistoryFormat::Edn,
        HistoryFormat::JepsenLog,
        HistoryFormat::PorcupineKv,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HistoryFormat::Auto => "auto",
            HistoryFormat::Jsonl => "jsonl",
            HistoryFormat::Edn => "edn",
            HistoryFormat::JepsenLog => "jepsen-log",
            HistoryFormat::PorcupineKv => "porcupine-kv",
        }
    }

    /// The format with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<HistoryFormat> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl std::fmt::Display for HistoryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How far into a file [`detect_format`] looks; auto-detection reads this much before
/// it reads on in the detected format.
pub const DETECT_BYTES: usize = 64 * 1024;

/// Decides the format of a history from its first bytes: `{"` starts JSONL; a line with
/// `jepsen.util - ` is a Jepsen log; `{:`, `[` or `(` start EDN, which is porcupine's KV
/// log when its ops use `:f :get`/`:f :put`. An empty input is JSONL (an empty history).
pub fn detect_format(head: &[u8]) -> Result<HistoryFormat, HistoryError> {
    let head = &head[..head.len().min(DETECT_BYTES)];
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Ok(HistoryFormat::Jsonl);
    }
    if text.contains("jepsen.util - ") {
        return Ok(HistoryFormat::JepsenLog);
    }
    let mut chars = trimmed.chars();
    let first = chars.next();
    let second = chars.find(|c| !c.is_whitespace());
    match (first, second) {
        (Some('{'), Some('"')) => Ok(HistoryFormat::Jsonl),
        (Some('{' | '[' | '('), _) | (Some(';'), _) => {
            if text.contains(":f :get") || text.contains(":f :put") {
                Ok(HistoryFormat::PorcupineKv)
            } else {
                Ok(HistoryFormat::Edn)
            }
        }
        _ => Err(HistoryError::UnknownFormat {
            reason: format!(
                "the first characters {:?} start none of: JSONL (`{{\"`), EDN (`{{:`, `[`, `(`), a Jepsen log (`… jepsen.util - …`)",
                trimmed.chars().take(24).collect::<String>()
            ),
        }),
    }
}

/// Reads a history in `format` (`Auto`: detected) from `reader`, checks it like
/// [`read_jsonl`](crate::read_jsonl), and returns its events. The input is streamed a line
/// at a time (see [`crate::input`]); a line longer than
/// [`MAX_HISTORY_LINE_BYTES`](crate::MAX_HISTORY_LINE_BYTES) is refused.
pub fn read_history<R: BufRead>(
    reader: R,
    format: HistoryFormat,
) -> Result<Vec<HistoryEvent>, HistoryError> {
    read_history_with(reader, &ReadOptions::format(format))
}

/// [`read_history`] with every setting: format, line limit, progress counters.
pub fn read_history_with<R: BufRead>(
    reader: R,
    options: &ReadOptions<'_>,
) -> Result<Vec<HistoryEvent>, HistoryError> {
    let mut sink = CollectEvents::default();
    read_into(reader, options, &mut sink)?;
    Ok(sink.events)
}

/// Reads a history file in `format`; see [`read_history`].
pub fn read_history_file(
    path: &Path,
    format: HistoryFormat,
) -> Result<Vec<HistoryEvent>, HistoryError> {
    read_history_with(open_history(path)?, &ReadOptions::format(format))
}

/// Opens a history file for reading.
pub(crate) fn open_history(path: &Path) -> Result<BufReader<File>, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(BufReader::with_capacity(READ_BUFFER_BYTES, file))
}

/// The buffer between a history file and its line reader.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Reads a history held in memory; see [`read_history`].
pub fn read_history_bytes(
    bytes: &[u8],
    format: HistoryFormat,
) -> Result<Vec<HistoryEvent>, HistoryError> {
    read_history(bytes, format)
}

/// Streams the history in `reader` through its format's reader and the structural
/// checks into `sink`; returns what was read.
pub(crate) fn read_into<R: BufRead>(
    mut reader: R,
    options: &ReadOptions<'_>,
    sink: &mut dyn EventSink,
) -> Result<DriveCounts, HistoryError> {
    // Detection looks at the head only; the head is then read again from memory.
    let mut head = Vec::new();
    let format = match options.format {
        HistoryFormat::Auto => {
            Read::take(&mut reader, DETECT_BYTES as u64)
                .read_to_end(&mut head)
                .map_err(|source| HistoryError::Read { line: 1, source })?;
            detect_format(&head)?
        }
        f => f,
    };
    let input = io::Cursor::new(head).chain(reader);
    let max = options.max_line_bytes;
    let mut source: Box<dyn EventSource + '_> = match format {
        HistoryFormat::Auto | HistoryFormat::Jsonl => Box::new(JsonlSource::new(input, max)),
        HistoryFormat::Edn => Box::new(EdnSource::new(input, max, false)),
        HistoryFormat::PorcupineKv => Box::new(EdnSource::new(input, max, true)),
        HistoryFormat::JepsenLog => Box::new(JepsenLogSource::new(input, max)),
    };
    drive(source.as_mut(), options.progress, sink)
}

fn syntax(format: HistoryFormat, e: EdnReadError) -> HistoryError {
    match e {
        EdnReadError::Syntax(e) => HistoryError::Syntax {
            line: e.line,
            format: format.name(),
            expected: e.expected,
            found: e.found,
        },
        EdnReadError::Input(e) => e,
    }
}

/// Numbers events without an `:index` after the previous one.
#[derive(Debug, Default)]
struct Numbering {
    next_index: u64,
}

impl Numbering {
    fn assign(&mut self, event: &mut HistoryEvent, index: Option<u64>) {
        event.index = index.unwrap_or(self.next_index);
        self.next_index = event.index.saturating_add(1);
    }
}

/// Where an EDN history is: before its first op, among its ops, or done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EdnState {
    Start,
    /// Among the ops; `Some(b)`: inside a vector or list closed by `b`.
    Ops(Option<u8>),
    Done,
}

/// Jepsen EDN (and porcupine's KV log): a vector or list of op maps, or a sequence of
/// them, read one op at a time.
struct EdnSource<R> {
    reader: EdnReader<R>,
    format: HistoryFormat,
    kv: bool,
    state: EdnState,
    numbering: Numbering,
}

impl<R: BufRead> EdnSource<R> {
    fn new(reader: R, max_line_bytes: usize, kv: bool) -> Self {
        EdnSource {
            reader: EdnReader::new(LineReader::new(reader, max_line_bytes)),
            format: if kv {
                HistoryFormat::PorcupineKv
            } else {
                HistoryFormat::Edn
            },
            kv,
            state: EdnState::Start,
            numbering: Numbering::default(),
        }
    }

    fn syntax(&self, e: EdnReadError) -> HistoryError {
        syntax(self.format, e)
    }

    fn step(&mut self) -> Result<Option<(HistoryEvent, usize)>, HistoryError> {
        loop {
            let close = match self.state {
                EdnState::Done => return Ok(None),
                EdnState::Start => {
                    // A history wrapped in one vector or list: read its elements one at a time.
                    let close = match self.reader.peek().map_err(|e| self.syntax(e))? {
                        Some(b'[') => Some(b']'),
                        Some(b'(') => Some(b')'),
                        _ => None,
                    };
                    if let Some(c) = close {
                        let open = if c == b']' { b'[' } else { b'(' };
                        self.reader.eat(open).map_err(|e| self.syntax(e))?;
                    }
                    self.state = EdnState::Ops(close);
                    close
                }
                EdnState::Ops(close) => close,
            };
            let next = self.reader.peek().map_err(|e| self.syntax(e))?;
            match (next, close) {
                (None, None) => {
                    self.state = EdnState::Done;
                    return Ok(None);
                }
                (None, Some(c)) => {
                    return Err(HistoryError::Syntax {
                        line: self.reader.line(),
                        format: self.format.name(),
                        expected: format!("`{}` to close the history", c as char),
                        found: "the end of the input".into(),
                    });
                }
                (Some(b), Some(c)) if b == c => {
                    self.reader.eat(c).map_err(|e| self.syntax(e))?;
                    if let Some(b) = self.reader.peek().map_err(|e| self.syntax(e))? {
                        return Err(HistoryError::Syntax {
                            line: self.reader.line(),
                            format: self.format.name(),
                            expected: "the end of the input after the history".into(),
                            found: format!("{:?}", b as char),
                        });
                    }
                    self.state = EdnState::Done;
                    return Ok(None);
                }
                _ => {}
            }
            self.reader.skip_blank().map_err(|e| self.syntax(e))?;
            let line = self.reader.line();
            let op = self.reader.value().map_err(|e| self.syntax(e))?;
            if let Some((mut event, index)) = event_from_edn(&op, line, self.kv)? {
                self.numbering.assign(&mut event, index);
                return Ok(Some((event, line)));
            }
        }
    }
}

impl<R: BufRead> EventSource for EdnSource<R> {
    fn next_event(&mut self) -> Result<Option<(HistoryEvent, usize)>, HistoryError> {
        self.step()
    }
}

fn bad(line: usize, message: impl Into<String>) -> HistoryError {
    HistoryError::BadEvent {
        line,
        message: message.into(),
    }
}

const KNOWN_FS: &str = ":read :write :cas :delete :append :txn (or :r :w :get :put)";

fn edn_key(v: &Edn, line: usize) -> Result<String, HistoryError> {
    match v {
        Edn::Str(s) => Ok(s.clone()),
        Edn::Int(i) => Ok(i.to_string()),
        Edn::Keyword(k) | Edn::Symbol(k) => Ok(k.clone()),
        other => Err(bad(
            line,
            format!(
                "a key must be a string, integer or keyword, found {}",
                other.kind()
            ),
        )),
    }
}

/// EDN → JSON for values: nil, integers, strings, and vectors of them.
fn edn_to_json(v: &Edn, line: usize, what: &str) -> Result<Value, HistoryError> {
    match v {
        Edn::Nil => Ok(Value::Null),
        Edn::Int(i) => Ok(json!(i)),
        Edn::Str(s) => Ok(json!(s)),
        Edn::Vector(items) | Edn::List(items) => items
            .iter()
            .map(|i| edn_to_json(i, line, what))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Err(bad(
            line,
            format!(
                "{what}: expected nil, an integer, a string or a vector, found {} `{other}`",
                other.kind()
            ),
        )),
    }
}

/// One op map (or log line fields) → an event, or `None` for a nemesis event.
fn event_from_edn(
    op: &Edn,
    line: usize,
    kv: bool,
) -> Result<Option<(HistoryEvent, Option<u64>)>, HistoryError> {
    if !matches!(op, Edn::Map(_)) {
        return Err(bad(
            line,
            format!(
                "expected an op map {{:process … :type … :f … :value …}}, found {}",
                op.kind()
            ),
        ));
    }
    let process = match op.get("process") {
        Some(Edn::Int(p)) => u64::try_from(*p)
            .map_err(|_| bad(line, format!(":process must not be negative, found {p}")))?,
        Some(Edn::Keyword(_)) => return Ok(None),
        Some(other) => {
            return Err(bad(
                line,
                format!(
                    ":process must be an integer or :nemesis, found {}",
                    other.kind()
                ),
            ));
        }
        None => return Err(bad(line, "missing :process")),
    };
    let kind = match op.get("type") {
        Some(Edn::Keyword(t)) => t.as_str(),
        Some(other) => {
            return Err(bad(
                line,
                format!(":type must be :invoke, :ok, :fail or :info, found {other}"),
            ));
        }
        None => return Err(bad(line, "missing :type")),
    };
    let f = match op.get("f") {
        Some(Edn::Keyword(f)) => f.as_str(),
        Some(other) => {
            return Err(bad(
                line,
                format!(":f must be a keyword ({KNOWN_FS}), found {other}"),
            ));
        }
        None => return Err(bad(line, "missing :f")),
    };
    let value = op.get("value").unwrap_or(&Edn::Nil);
    let key = op.get("key").map(|k| edn_key(k, line)).transpose()?;
    let time_ns = match op.get("time") {
        Some(Edn::Int(t)) => u64::try_from(*t).unwrap_or(0),
        _ => 0,
    };
    let index = match op.get("index") {
        Some(Edn::Int(i)) => Some(
            u64::try_from(*i)
                .map_err(|_| bad(line, format!(":index must not be negative, found {i}")))?,
        ),
        Some(other) => {
            return Err(bad(
                line,
                format!(":index must be an integer, found {}", other.kind()),
            ));
        }
        None => None,
    };
    let error = match op.get("error") {
        None | Some(Edn::Nil) => None,
        Some(Edn::Str(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let node = match op.get("node") {
        Some(Edn::Int(n)) => u32::try_from(*n).ok(),
        _ => None,
    };
    let mut event = event_from_parts(process, kind, f, value, key, line, kv)?;
    event.time_ns = time_ns;
    if event.error.is_none() {
        event.error = error;
    }
    event.node = node;
    Ok(Some((event, index)))
}

/// The common part of EDN maps and log lines: type, f, value and key → an event.
fn event_from_parts(
    process: u64,
    kind: &str,
    f: &str,
    value: &Edn,
    key: Option<String>,
    line: usize,
    kv: bool,
) -> Result<HistoryEvent, HistoryError> {
    let kind = event_type(kind, line)?;
    let mut error = None;
    // `:timed-out` and other keywords on an uncertain or failed completion: no value.
    let mut value = match value {
        Edn::Keyword(k) if matches!(kind, EventType::Fail | EventType::Info) => {
            error = Some(k.clone());
            &Edn::Nil
        }
        v => v,
    };
    let mut key = key;
    let op_fn = op_fn_of(f, line)?;
    // Jepsen's independent tuples: [k v] (read, write), [k [old new]] (cas).
    if key.is_none()
        && let Edn::Vector(pair) = value
        && let [k, inner] = pair.as_slice()
    {
        let tuple = match op_fn {
            OpFn::Read | OpFn::Write | OpFn::Delete => true,
            OpFn::Cas => matches!(inner, Edn::Vector(_) | Edn::Nil),
            OpFn::Txn => f == "append",
        };
        if tuple {
            key = Some(edn_key(k, line)?);
            value = inner;
        }
    }
    let mut json_value = match (op_fn, f) {
        (OpFn::Txn, "append") => {
            let Some(k) = &key else {
                return Err(bad(line, ":append needs a :key (or a [key value] tuple)"));
            };
            let v = edn_to_json(value, line, ":value")?;
            let micro = json!([["append", k, v]]);
            key = None;
            micro
        }
        (OpFn::Txn, _) => txn_micro_ops(value, line)?,
        _ => edn_to_json(value, line, ":value")?,
    };
    let mut op_fn = op_fn;
    if kv {
        // porcupine's KV store answers "" for a missing key, and `put ""` empties it.
        match (op_fn, &json_value) {
            (OpFn::Read, Value::String(s)) if s.is_empty() => json_value = Value::Null,
            (OpFn::Write, Value::String(s)) if s.is_empty() => {
                op_fn = OpFn::Delete;
                json_value = Value::Null;
            }
            _ => {}
        }
    }
    // A completion of an append or failed/info op may carry no value.
    if op_fn == OpFn::Txn && kind != EventType::Invoke && f == "append" && kind != EventType::Ok {
        json_value = Value::Null;
    }
    if op_fn == OpFn::Read && kind == EventType::Invoke {
        // Jepsen invokes reads with nil; some clients put the key or a placeholder.
        json_value = Value::Null;
    }
    Ok(HistoryEvent {
        index: 0,
        time_ns: 0,
        process,
        kind,
        f: op_fn,
        key,
        value: json_value,
        node: None,
        error,
    })
}

/// An EDN `:type`.
fn event_type(kind: &str, line: usize) -> Result<EventType, HistoryError> {
    Ok(match kind {
        "invoke" => EventType::Invoke,
        "ok" => EventType::Ok,
        "fail" => EventType::Fail,
        "info" => EventType::Info,
        other => {
            return Err(bad(
                line,
                format!("unknown :type :{other}; expected :invoke, :ok, :fail or :info"),
            ));
        }
    })
}

/// An EDN `:f`, with the names Jepsen's and porcupine's workloads use.
fn op_fn_of(f: &str, line: usize) -> Result<OpFn, HistoryError> {
    Ok(match f {
        "read" | "r" | "get" => OpFn::Read,
        "write" | "w" | "put" => OpFn::Write,
        "cas" | "compare-and-set" => OpFn::Cas,
        "delete" | "del" => OpFn::Delete,
        "append" | "txn" => OpFn::Txn,
        other => {
            return Err(bad(
                line,
                format!("unknown :f :{other}; expected one of {KNOWN_FS}"),
            ));
        }
    })
}

/// A `:txn` value: a vector of `[f k v]` micro-ops, as JSON `[["r", k, v], …]`.
fn txn_micro_ops(value: &Edn, line: usize) -> Result<Value, HistoryError> {
    match value {
        Edn::Nil => Ok(Value::Null),
        Edn::Vector(ops) | Edn::List(ops) => ops
            .iter()
            .map(|m| micro_op(m, line))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Err(bad(
            line,
            format!(":txn needs a vector of micro-ops, found {}", other.kind()),
        )),
    }
}

/// One micro-op `[f k v]` of a `:txn`.
fn micro_op(m: &Edn, line: usize) -> Result<Value, HistoryError> {
    let (Edn::Vector(parts) | Edn::List(parts)) = m else {
        return Err(bad(
            line,
            format!(
                "a :txn micro-op must be a vector [f k v], found {}",
                m.kind()
            ),
        ));
    };
    let [mf, mk, mv] = parts.as_slice() else {
        return Err(bad(
            line,
            format!("a :txn micro-op must be [f k v], found {m}"),
        ));
    };
    let mf = match mf {
        Edn::Keyword(k) | Edn::Symbol(k) => match k.as_str() {
            "r" | "read" => "r",
            "w" | "write" => "w",
            "append" => "append",
            other => {
                return Err(bad(
                    line,
                    format!("unknown micro-op :{other}; expected :r, :w or :append"),
                ));
            }
        },
        other => {
            return Err(bad(
                line,
                format!("a micro-op's f must be a keyword, found {other}"),
            ));
        }
    };
    Ok(json!([
        mf,
        edn_key(mk, line)?,
        edn_to_json(mv, line, "micro-op value")?
    ]))
}

/// The marker of an operation line in a Jepsen log.
const JEPSEN_LOG_MARKER: &str = "jepsen.util - ";

/// Jepsen log lines (porcupine's etcd data), one op per line among other log output.
struct JepsenLogSource<R> {
    lines: LineReader<R>,
    numbering: Numbering,
}

impl<R: BufRead> JepsenLogSource<R> {
    fn new(reader: R, max_line_bytes: usize) -> Self {
        JepsenLogSource {
            lines: LineReader::new(reader, max_line_bytes),
            numbering: Numbering::default(),
        }
    }
}

impl<R: BufRead> EventSource for JepsenLogSource<R> {
    fn next_event(&mut self) -> Result<Option<(HistoryEvent, usize)>, HistoryError> {
        while self.lines.advance()? {
            let line = self.lines.line();
            let raw = self.lines.current();
            let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
            if let Some(mut event) = jepsen_log_event(raw, line)? {
                self.numbering.assign(&mut event, None);
                return Ok(Some((event, line)));
            }
        }
        Ok(None)
    }
}

/// The event on one line of a Jepsen log; `None` for other log output and nemesis lines.
fn jepsen_log_event(raw: &[u8], line: usize) -> Result<Option<HistoryEvent>, HistoryError> {
    let text = std::str::from_utf8(raw).map_err(|_| bad(line, "not UTF-8"))?;
    let Some(at) = text.find(JEPSEN_LOG_MARKER) else {
        return Ok(None);
    };
    let rest = text[at + JEPSEN_LOG_MARKER.len()..].trim();
    let mut reader = EdnReader::from_slice(rest.as_bytes());
    let mut next = |what: &str| -> Result<Edn, HistoryError> {
        reader.value().map_err(|e| match e {
            EdnReadError::Syntax(e) => HistoryError::Syntax {
                line,
                format: HistoryFormat::JepsenLog.name(),
                expected: format!("{what}: {}", e.expected),
                found: e.found,
            },
            EdnReadError::Input(e) => e,
        })
    };
    let process = next("the process")?;
    let process = match process {
        Edn::Int(p) => u64::try_from(p)
            .map_err(|_| bad(line, format!("the process must not be negative, found {p}")))?,
        Edn::Keyword(_) => return Ok(None), // :nemesis
        other => {
            return Err(bad(
                line,
                format!("the process must be an integer or :nemesis, found {other}"),
            ));
        }
    };
    let kind = match next("the type (:invoke, :ok, :fail, :info)")? {
        Edn::Keyword(k) => k,
        other => {
            return Err(bad(
                line,
                format!("the type must be :invoke, :ok, :fail or :info, found {other}"),
            ));
        }
    };
    let f = match next("the :f")? {
        Edn::Keyword(k) => k,
        other => {
            return Err(bad(
                line,
                format!(":f must be a keyword ({KNOWN_FS}), found {other}"),
            ));
        }
    };
    let value = next("the value")?;
    let mut event = event_from_parts(process, &kind, &f, &value, None, line, false)?;
    event.time_ns = 0;
    Ok(Some(event))
}

/// How [`write_edn`] names keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EdnKeyStyle {
    /// A `:key` field (porcupine's KV log; kvlab reads it back as is).
    #[default]
    KeyField,
    /// Jepsen's `independent` tuples: `:value [key value]` (Knossos with
    /// `jepsen.independent/checker`).
    IndependentTuple,
}

fn json_to_edn(v: &Value, out: &mut String, micro_op_head: bool) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) if micro_op_head => {
            out.push(':');
            out.push_str(s);
        }
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                json_to_edn(item, out, false);
            }
            out.push(']');
        }
        Value::Object(_) => out.push_str("nil"),
    }
}

/// Writes events as a Jepsen EDN history, one op map per line, so Knossos, Elle or
/// porcupine can cross-check kvlab's verdicts: `{:index 0, :time 1200, :process 3,
/// :type :invoke, :f :write, :key "k7", :value 4}`. `txn` micro-ops are written
/// `[:r "x" nil]`. Reading the output back with [`read_history`] gives the same events.
pub fn write_edn<W: Write>(
    mut writer: W,
    events: &[HistoryEvent],
    style: EdnKeyStyle,
) -> Result<(), HistoryError> {
    for e in events {
        write_edn_event(&mut writer, e, style)?;
    }
    writer
        .flush()
        .map_err(|source| HistoryError::Write { source })
}

/// Writes one event as a line of a Jepsen EDN history (see [`write_edn`]), so a history
/// can be exported as it is read; the caller flushes.
pub fn write_edn_event<W: Write>(
    writer: &mut W,
    e: &HistoryEvent,
    style: EdnKeyStyle,
) -> Result<(), HistoryError> {
    let mut line = String::new();
    line.push_str(&format!(
        "{{:index {}, :time {}, :process {}, :type :{}, :f :{}",
        e.index, e.time_ns, e.process, e.kind, e.f
    ));
    let mut value = String::new();
    match &e.value {
        Value::Array(items) if e.f == OpFn::Txn => {
            value.push('[');
            for (i, m) in items.iter().enumerate() {
                if i > 0 {
                    value.push(' ');
                }
                match m {
                    Value::Array(parts) if !parts.is_empty() => {
                        value.push('[');
                        for (j, p) in parts.iter().enumerate() {
                            if j > 0 {
                                value.push(' ');
                            }
                            json_to_edn(p, &mut value, j == 0);
                        }
                        value.push(']');
                    }
                    other => json_to_edn(other, &mut value, false),
                }
            }
            value.push(']');
        }
        v => json_to_edn(v, &mut value, false),
    }
    match (&e.key, style) {
        (Some(k), EdnKeyStyle::IndependentTuple) => {
            let mut key = String::new();
            json_to_edn(&Value::String(k.clone()), &mut key, false);
            line.push_str(&format!(", :value [{key} {value}]"));
        }
        (Some(k), EdnKeyStyle::KeyField) => {
            let mut key = String::new();
            json_to_edn(&Value::String(k.clone()), &mut key, false);
            line.push_str(&format!(", :key {key}, :value {value}"));
        }
        (None, _) => line.push_str(&format!(", :value {value}")),
    }
    if let Some(node) = e.node {
        line.push_str(&format!(", :node {node}"));
    }
    if let Some(err) = &e.error {
        let mut text = String::new();
        json_to_edn(&Value::String(err.clone()), &mut text, false);
        line.push_str(&format!(", :error {text}"));
    }
    line.push_str("}\n");
    writer
        .write_all(line.as_bytes())
        .map_err(|source| HistoryError::Write { source })
}
