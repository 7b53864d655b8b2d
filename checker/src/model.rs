//! The sequential specifications the checker holds histories to, as porcupine-rs
//! [`Model`]s, shared by both search engines.
//!
//! Values are integers or strings ([`Val`]); a key that was never written, or was deleted,
//! is *absent* (`null` in histories). The initial state of every key is absent.
//!
//! ## Per-key models (every key an independent register)
//!
//! `register`, `cas-register` and `kv` check each key on its own (a history is split by
//! key and every key is one search), and differ only in the operations they accept:
//!
//! * **`register`** — `read` and `write`.
//!   `write(v)`: state := `v`, always accepted. `read() → r`: accepted iff `r` = state
//!   (`null` reads an absent key).
//! * **`cas-register`** (the Knossos model) — `register` plus `cas([old, new])`: accepted
//!   iff state = `old` (`null`: absent), then state := `new`.
//! * **`kv`** — `cas-register` plus `delete()`: state := absent, always accepted; and
//!   `append(s)` (a `txn` of one `["append", key, s]` micro-op, as in Jepsen's
//!   list-append workload, or `:f :append` in EDN): state := state ++ `s` for a string
//!   state, `s` for an absent key, always accepted on strings (an integer state refuses
//!   it); appending `""` changes nothing. A `txn` of one `r`/`w` micro-op is a read or a
//!   write. Every operation must name its key.
//!
//! `register` and `cas-register` also accept a history without keys: an operation with
//! no `key` acts on the register named `""`.
//!
//! ## `multi-register` (several keys in one operation)
//!
//! Operations are `txn`s whose value is a list of micro-ops `["r", key, v]` and
//! `["w", key, v]` (plain `read`/`write` are one-micro-op transactions). The state is a
//! map from keys to values. A transaction applies its micro-ops in order, atomically:
//! `w k v` sets `k` to `v`; `r k v` is accepted iff `k` holds `v` at that point (`null`:
//! absent). The transaction is accepted iff every micro-op is. Keys that never share a
//! transaction are independent objects (linearizability is local), so the history is
//! split into groups of keys connected by transactions, and each group is one search.
//!
//! ## How outcomes enter every model (Jepsen semantics)
//!
//! * `ok`: the operation happened between its invoke and its completion.
//! * `fail`: it did not happen; it is dropped.
//! * `info` (or still open at the end): it may have happened at any time after its
//!   invoke, so its return time is infinity. A read's value is then unknown, so an info
//!   read constrains nothing and is dropped; in an info transaction, reads accept any
//!   value. An info `cas` is accepted from any state: when state = `old` it takes effect,
//!   otherwise it is a no-op (it failed or never ran). Placing an info operation last in
//!   a linearization covers "it never happened", so the models need no second branch.
//!
//! Exact reductions run before every engine, because histories with many timeouts are
//! what make the searches blow up: `info` writes, cas and deletes that nothing certain
//! observes are dropped, and an `info` operation that must have taken effect (an `ok`
//! operation observes the value only it writes) is bounded by its first observer instead
//! of staying open to the end. [`crate::reduce`] states and proves them; the report counts
//! both.

use std::fmt;
use std::sync::Arc;

use porcupine_rs::Model;
use serde_json::Value;

use crate::budget;

/// A value stored under a key: an integer or a string.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Val {
    /// An integer.
    Int(i64),
    /// A string (shared: states are cloned often during the search).
    Str(Arc<str>),
}

impl Val {
    /// The value of a JSON integer or string; `None` for any other JSON.
    pub fn from_json(v: &Value) -> Option<Val> {
        match v {
            Value::Number(n) => n.as_i64().map(Val::Int),
            Value::String(s) => Some(Val::Str(Arc::from(s.as_str()))),
            _ => None,
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Val::Int(i) => Value::from(*i),
            Val::Str(s) => Value::from(&**s),
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Int(i) => write!(f, "{i}"),
            Val::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A JSON integer, string or null (`Some(None)`: null, absent); `None` for other JSON.
pub(crate) fn val_or_null(v: &Value) -> Option<Option<Val>> {
    match v {
        Value::Null => Some(None),
        other => Val::from_json(other).map(Some),
    }
}

fn describe_value(v: Option<&Val>) -> String {
    v.map_or_else(|| "absent".to_owned(), Val::to_string)
}

/// What the search needs to know about a model beyond porcupine's [`Model`].
pub(crate) trait SearchModel: Model {
    /// Whether the operation never changes the state when accepted (a read). Such an
    /// operation, when it may be linearized now and is accepted by the current state,
    /// is linearized at once: doing so never loses a linearization.
    fn read_only(op: &Self::Op) -> bool;

    /// Heap bytes a state holds beyond its own size (strings, maps), so the memo's
    /// memory bound counts what it really keeps.
    fn state_heap_bytes(state: &Self::State) -> usize;
}

/// One operation on one key, as the search sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyOp {
    /// An `ok` read that returned this value (`None`: absent).
    Read(Option<Val>),
    /// A write (`ok` or `info`).
    Write(Val),
    /// A compare-and-set; `uncertain` when it ended in `info`.
    Cas {
        /// The value the key must hold (`None`: absent).
        expected: Option<Val>,
        /// The value stored.
        new: Val,
        /// Ended in `info`: accepted from any state, a no-op on a mismatch.
        uncertain: bool,
    },
    /// A delete (`ok` or `info`).
    Delete,
    /// Append a string (`ok` or `info`).
    Append(Arc<str>),
}

/// Where an operation came from, shown in the visualization's tooltips and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpOrigin {
    /// The process.
    pub process: u64,
    /// `index` of the invoke.
    pub invoke_index: u64,
    /// `index` of the completion (`None`: never completed).
    pub complete_index: Option<u64>,
    /// Whether the outcome was uncertain (`info` or never completed).
    pub uncertain: bool,
    /// The node the client talked to.
    pub node: Option<u32>,
    /// For an info operation that had to take effect (see [`crate::reduce`]): the index of
    /// the completion of its first `ok` observer, before which it took effect.
    pub bounded_by: Option<u64>,
}

fn describe_origin(origin: Option<&OpOrigin>) -> String {
    let Some(o) = origin else {
        return String::new();
    };
    let mut completion = match (o.complete_index, o.uncertain) {
        (Some(i), false) => format!("completed at index {i}"),
        (Some(i), true) => format!("info at index {i}"),
        (None, _) => "never completed".to_owned(),
    };
    if let Some(i) = o.bounded_by {
        completion.push_str(&format!(
            ", took effect before index {i} (an ok operation observed its value)"
        ));
    }
    let node = o.node.map(|n| format!(", node {n}")).unwrap_or_default();
    format!(
        "process {}, invoked at index {}, {completion}{node}",
        o.process, o.invoke_index
    )
}

/// The per-key register model (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyModel;

/// The sequential step of one key, shared by [`KeyModel`] and the kvlab engine.
pub(crate) fn key_step(state: &Option<Val>, op: &KeyOp) -> (bool, Option<Val>) {
    match op {
        KeyOp::Read(value) => (value == state, state.clone()),
        KeyOp::Write(value) => (true, Some(value.clone())),
        KeyOp::Cas {
            expected,
            new,
            uncertain,
        } => {
            if state == expected {
                (true, Some(new.clone()))
            } else {
                (*uncertain, state.clone())
            }
        }
        KeyOp::Delete => (true, None),
        KeyOp::Append(s) => match state {
            _ if s.is_empty() => (true, state.clone()),
            None => (true, Some(Val::Str(s.clone()))),
            Some(Val::Str(old)) => {
                let mut joined = String::with_capacity(old.len() + s.len());
                joined.push_str(old);
                joined.push_str(s);
                (true, Some(Val::Str(Arc::from(joined))))
            }
            Some(Val::Int(_)) => (false, state.clone()),
        },
    }
}

impl Model for KeyModel {
    /// The key's value; `None` when absent.
    type State = Option<Val>;
    type Op = KeyOp;
    type Metadata = OpOrigin;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Self::Op) -> (bool, Self::State) {
        // When porcupine-rs runs under the race's budget, a cancelled search refuses
        // every step so that it unwinds at once (its verdict is then discarded).
        if budget::porcupine_poll() {
            return (false, state.clone());
        }
        key_step(state, op)
    }

    fn describe_operation(op: &Self::Op) -> String {
        match op {
            KeyOp::Read(value) => format!("read() → {}", describe_value(value.as_ref())),
            KeyOp::Write(value) => format!("write({value})"),
            KeyOp::Cas {
                expected,
                new,
                uncertain,
            } => format!(
                "cas({} → {new}){}",
                describe_value(expected.as_ref()),
                if *uncertain { " ?" } else { "" }
            ),
            KeyOp::Delete => "delete()".to_owned(),
            KeyOp::Append(s) => format!("append({s:?})"),
        }
    }

    fn describe_state(state: &Self::State) -> String {
        describe_value(state.as_ref())
    }

    fn describe_metadata(origin: Option<&Self::Metadata>) -> String {
        describe_origin(origin)
    }
}

impl SearchModel for KeyModel {
    fn read_only(op: &KeyOp) -> bool {
        matches!(op, KeyOp::Read(_))
    }

    fn state_heap_bytes(state: &Option<Val>) -> usize {
        match state {
            Some(Val::Str(s)) => s.len() + 16,
            _ => 0,
        }
    }
}

/// One micro-op of a `multi-register` transaction, on a key numbered within its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MultiMicro {
    /// Read key `.0`; `Some(v)`: it must hold `v` (`None` inside: absent); `None`: the
    /// value is unknown (an info transaction) and anything is accepted.
    Read(u32, Option<Option<Val>>),
    /// Write key `.0`.
    Write(u32, Val),
}

/// A `multi-register` transaction: micro-ops applied in order, atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MultiOp {
    /// The micro-ops.
    pub micro: Vec<MultiMicro>,
    /// The key names, by number, for descriptions.
    pub names: Arc<Vec<String>>,
}

/// The `multi-register` model (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MultiModel;

/// The step of [`MultiModel`], shared with the kvlab engine. The state lists the present
/// keys, sorted by number.
pub(crate) fn multi_step(state: &Vec<(u32, Val)>, op: &MultiOp) -> (bool, Vec<(u32, Val)>) {
    let mut next: Option<Vec<(u32, Val)>> = None;
    for micro in &op.micro {
        let current = next.as_ref().unwrap_or(state);
        match micro {
            MultiMicro::Read(_, None) => {}
            MultiMicro::Read(k, Some(expected)) => {
                let held = current
                    .binary_search_by_key(k, |(key, _)| *key)
                    .ok()
                    .map(|i| &current[i].1);
                if held != expected.as_ref() {
                    return (false, state.clone());
                }
            }
            MultiMicro::Write(k, v) => {
                let map = next.get_or_insert_with(|| state.clone());
                match map.binary_search_by_key(k, |(key, _)| *key) {
                    Ok(i) => map[i].1 = v.clone(),
                    Err(i) => map.insert(i, (*k, v.clone())),
                }
            }
        }
    }
    (true, next.unwrap_or_else(|| state.clone()))
}

impl Model for MultiModel {
    /// The present keys and their values, sorted by key number.
    type State = Vec<(u32, Val)>;
    type Op = MultiOp;
    type Metadata = OpOrigin;

    fn init() -> Self::State {
        Vec::new()
    }

    fn step(state: &Self::State, op: &Self::Op) -> (bool, Self::State) {
        if budget::porcupine_poll() {
            return (false, state.clone());
        }
        multi_step(state, op)
    }

    fn describe_operation(op: &Self::Op) -> String {
        let name = |k: &u32| op.names.get(*k as usize).map_or("?", String::as_str);
        let parts: Vec<String> = op
            .micro
            .iter()
            .map(|m| match m {
                MultiMicro::Read(k, Some(v)) => {
                    format!("r {} → {}", name(k), describe_value(v.as_ref()))
                }
                MultiMicro::Read(k, None) => format!("r {} → ?", name(k)),
                MultiMicro::Write(k, v) => format!("w {} {v}", name(k)),
            })
            .collect();
        format!("txn[{}]", parts.join(", "))
    }

    fn describe_state(state: &Self::State) -> String {
        let parts: Vec<String> = state.iter().map(|(k, v)| format!("#{k}={v}")).collect();
        format!("{{{}}}", parts.join(", "))
    }

    fn describe_metadata(origin: Option<&Self::Metadata>) -> String {
        describe_origin(origin)
    }
}

impl SearchModel for MultiModel {
    fn read_only(op: &MultiOp) -> bool {
        op.micro.iter().all(|m| matches!(m, MultiMicro::Read(..)))
    }

    fn state_heap_bytes(state: &Vec<(u32, Val)>) -> usize {
        state.capacity() * std::mem::size_of::<(u32, Val)>()
            + state
                .iter()
                .map(|(_, v)| match v {
                    Val::Str(s) => s.len() + 16,
                    Val::Int(_) => 0,
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val {
        Val::Str(Arc::from(text))
    }

    #[test]
    fn read_accepts_only_the_current_value() {
        let three = Some(Val::Int(3));
        assert_eq!(
            key_step(&three, &KeyOp::Read(three.clone())),
            (true, three.clone())
        );
        assert!(!key_step(&three, &KeyOp::Read(Some(Val::Int(4)))).0);
        assert!(key_step(&None, &KeyOp::Read(None)).0);
        assert!(!key_step(&None, &KeyOp::Read(Some(Val::Int(0)))).0);
    }

    #[test]
    fn certain_cas_needs_the_expected_value() {
        let cas = KeyOp::Cas {
            expected: Some(Val::Int(1)),
            new: Val::Int(2),
            uncertain: false,
        };
        assert_eq!(
            key_step(&Some(Val::Int(1)), &cas),
            (true, Some(Val::Int(2)))
        );
        assert!(!key_step(&Some(Val::Int(5)), &cas).0);
        let cas_absent = KeyOp::Cas {
            expected: None,
            new: Val::Int(7),
            uncertain: false,
        };
        assert_eq!(key_step(&None, &cas_absent), (true, Some(Val::Int(7))));
    }

    #[test]
    fn uncertain_cas_is_a_no_op_on_mismatch() {
        let cas = KeyOp::Cas {
            expected: Some(Val::Int(1)),
            new: Val::Int(2),
            uncertain: true,
        };
        assert_eq!(
            key_step(&Some(Val::Int(5)), &cas),
            (true, Some(Val::Int(5)))
        );
        assert_eq!(
            key_step(&Some(Val::Int(1)), &cas),
            (true, Some(Val::Int(2)))
        );
    }

    #[test]
    fn delete_makes_the_key_absent() {
        assert_eq!(key_step(&Some(Val::Int(9)), &KeyOp::Delete), (true, None));
    }

    #[test]
    fn append_concatenates_strings_and_refuses_integers() {
        let a = KeyOp::Append(Arc::from("ab"));
        assert_eq!(key_step(&None, &a), (true, Some(s("ab"))));
        assert_eq!(key_step(&Some(s("x")), &a), (true, Some(s("xab"))));
        assert!(!key_step(&Some(Val::Int(1)), &a).0);
        assert_eq!(key_step(&None, &KeyOp::Append(Arc::from(""))), (true, None));
    }

    #[test]
    fn multi_register_reads_see_earlier_writes_of_the_same_transaction() {
        let names = Arc::new(vec!["x".to_owned(), "y".to_owned()]);
        let op = MultiOp {
            micro: vec![
                MultiMicro::Read(0, Some(None)),
                MultiMicro::Write(0, Val::Int(1)),
                MultiMicro::Read(0, Some(Some(Val::Int(1)))),
                MultiMicro::Write(1, Val::Int(2)),
            ],
            names,
        };
        let (ok, next) = multi_step(&Vec::new(), &op);
        assert!(ok);
        assert_eq!(next, vec![(0, Val::Int(1)), (1, Val::Int(2))]);
        // Run again: x is 1 now, so the first read (absent) fails and nothing changes.
        let (ok, after) = multi_step(&next, &op);
        assert!(!ok);
        assert_eq!(after, next);
        assert!(!MultiModel::read_only(&op));
    }
}
