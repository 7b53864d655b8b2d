//! The sequential specifications the checker holds histories to, as one porcupine-rs
//! [`Model`] of a single key.
//!
//! All three models check each key as an independent register (its state: the key's value,
//! or absent), so a history is split by key and every key is one porcupine partition. They
//! differ only in the operations they accept:
//!
//! * **`register`** — `read` and `write`.
//!   `write(v)`: state := `v`, always accepted. `read() → r`: accepted iff `r` = state
//!   (`null` reads an absent key).
//! * **`cas-register`** — `register` plus `cas([old, new])`: accepted iff state = `old`
//!   (`null`: absent), then state := `new`.
//! * **`kv`** — `cas-register` plus `delete()`: state := absent, always accepted. Every
//!   operation must name its key.
//!
//! The initial state of every key is absent. `register` and `cas-register` also accept a
//! history without keys: an operation with no `key` acts on the register named `""`.
//!
//! How outcomes enter the model (Jepsen semantics):
//!
//! * `ok`: the operation happened between its invoke and its completion.
//! * `fail`: it did not happen; it is dropped.
//! * `info` (or still open at the end): it may have happened at any time after its
//!   invoke, so its return time is infinity. A read's value is then unknown, so an info
//!   read constrains nothing and is dropped. An info `cas` is accepted from any state:
//!   when state = `old` it takes effect, otherwise it is a no-op (it failed or never ran).
//!   Placing it last in a linearization covers "it never happened", so the model needs no
//!   second branch.
//!
//! One sound reduction runs before the search, because histories with many timeouts are
//! what make the search blow up: an `info` write, `info` cas or `info` delete whose
//! resulting value (`v`, `new`, absent) no kept operation can observe — no `ok` read
//! returned it and no `ok`/`info` cas expects it — is dropped. Proof sketch: given a
//! linearization with the operation, remove it; until the next write or delete nothing in
//! between could have observed its value (no read returns it, no successful cas expects
//! it), and the info cas operations in that stretch were no-ops, so move them to the end,
//! where an info operation is always accepted. Conversely, the dropped operation can
//! always be placed last. The report counts the dropped operations.

use porcupine_rs::Model;

/// One operation on one key, as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyOp {
    /// An `ok` read that returned this value (`None`: absent).
    Read(Option<i64>),
    /// A write (`ok` or `info`).
    Write(i64),
    /// A compare-and-set; `uncertain` when it ended in `info`.
    Cas {
        /// The value the key must hold (`None`: absent).
        expected: Option<i64>,
        /// The value stored.
        new: i64,
        /// Ended in `info`: accepted from any state, a no-op on a mismatch.
        uncertain: bool,
    },
    /// A delete (`ok` or `info`).
    Delete,
}

/// Where an operation came from, shown in the visualization's tooltips.
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
}

/// The per-key register model (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyModel;

fn describe_value(v: Option<i64>) -> String {
    v.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}

impl Model for KeyModel {
    /// The key's value; `None` when absent.
    type State = Option<i64>;
    type Op = KeyOp;
    type Metadata = OpOrigin;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Self::Op) -> (bool, Self::State) {
        match *op {
            KeyOp::Read(value) => (value == *state, *state),
            KeyOp::Write(value) => (true, Some(value)),
            KeyOp::Cas {
                expected,
                new,
                uncertain,
            } => {
                if *state == expected {
                    (true, Some(new))
                } else {
                    (uncertain, *state)
                }
            }
            KeyOp::Delete => (true, None),
        }
    }

    fn describe_operation(op: &Self::Op) -> String {
        match *op {
            KeyOp::Read(value) => format!("read() → {}", describe_value(value)),
            KeyOp::Write(value) => format!("write({value})"),
            KeyOp::Cas {
                expected,
                new,
                uncertain,
            } => format!(
                "cas({} → {new}){}",
                describe_value(expected),
                if uncertain { " ?" } else { "" }
            ),
            KeyOp::Delete => "delete()".to_owned(),
        }
    }

    fn describe_state(state: &Self::State) -> String {
        describe_value(*state)
    }

    fn describe_metadata(origin: Option<&Self::Metadata>) -> String {
        let Some(o) = origin else {
            return String::new();
        };
        let completion = match (o.complete_index, o.uncertain) {
            (Some(i), false) => format!("completed at index {i}"),
            (Some(i), true) => format!("info at index {i}"),
            (None, _) => "never completed".to_owned(),
        };
        let node = o.node.map(|n| format!(", node {n}")).unwrap_or_default();
        format!(
            "process {}, invoked at index {}, {completion}{node}",
            o.process, o.invoke_index
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_accepts_only_the_current_value() {
        assert_eq!(
            KeyModel::step(&Some(3), &KeyOp::Read(Some(3))),
            (true, Some(3))
        );
        assert!(!KeyModel::step(&Some(3), &KeyOp::Read(Some(4))).0);
        assert!(KeyModel::step(&None, &KeyOp::Read(None)).0);
        assert!(!KeyModel::step(&None, &KeyOp::Read(Some(0))).0);
    }

    #[test]
    fn certain_cas_needs_the_expected_value() {
        let cas = KeyOp::Cas {
            expected: Some(1),
            new: 2,
            uncertain: false,
        };
        assert_eq!(KeyModel::step(&Some(1), &cas), (true, Some(2)));
        assert!(!KeyModel::step(&Some(5), &cas).0);
        let cas_absent = KeyOp::Cas {
            expected: None,
            new: 7,
            uncertain: false,
        };
        assert_eq!(KeyModel::step(&None, &cas_absent), (true, Some(7)));
    }

    #[test]
    fn uncertain_cas_is_a_no_op_on_mismatch() {
        let cas = KeyOp::Cas {
            expected: Some(1),
            new: 2,
            uncertain: true,
        };
        assert_eq!(KeyModel::step(&Some(5), &cas), (true, Some(5)));
        assert_eq!(KeyModel::step(&Some(1), &cas), (true, Some(2)));
    }

    #[test]
    fn delete_makes_the_key_absent() {
        assert_eq!(KeyModel::step(&Some(9), &KeyOp::Delete), (true, None));
    }
}
