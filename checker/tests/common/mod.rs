//! Shared helpers for the checker's tests and benchmark: a seeded random number
//! generator, a history builder, and a generator of linearizable histories.
#![allow(dead_code)]

pub mod register;
pub mod txn;

use std::collections::BTreeMap;

use kvlab_checker::{EventType, HistoryEvent, OpFn};
use serde_json::{Value, json};

/// SplitMix64: a tiny seeded generator, so tests need no RNG crate and never use entropy.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Builds histories event by event; `index` and `time_ns` follow the order of calls.
#[derive(Default, Debug)]
pub struct Hist {
    pub events: Vec<HistoryEvent>,
}

impl Hist {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(
        &mut self,
        process: u64,
        kind: EventType,
        f: OpFn,
        key: Option<&str>,
        value: Value,
    ) -> &mut Self {
        let index = self.events.len() as u64;
        self.events.push(HistoryEvent {
            index,
            time_ns: index * 1000,
            process,
            kind,
            f,
            key: key.map(str::to_owned),
            value,
            node: None,
            error: None,
        });
        self
    }
    pub fn invoke(&mut self, p: u64, f: OpFn, key: &str, value: Value) -> &mut Self {
        let value = if f == OpFn::Read { Value::Null } else { value };
        self.push(p, EventType::Invoke, f, Some(key), value)
    }
    pub fn ok(&mut self, p: u64, f: OpFn, key: &str, value: Value) -> &mut Self {
        self.push(p, EventType::Ok, f, Some(key), value)
    }
    pub fn fail(&mut self, p: u64, f: OpFn, key: &str, value: Value) -> &mut Self {
        self.push(p, EventType::Fail, f, Some(key), value)
    }
    pub fn info(&mut self, p: u64, f: OpFn, key: &str, value: Value) -> &mut Self {
        self.push(p, EventType::Info, f, Some(key), value)
    }
    /// A write that completes `ok` before anything else happens.
    pub fn write(&mut self, p: u64, key: &str, v: i64) -> &mut Self {
        self.invoke(p, OpFn::Write, key, json!(v))
            .ok(p, OpFn::Write, key, json!(v))
    }
    /// A read that completes `ok` with `v` before anything else happens.
    pub fn read(&mut self, p: u64, key: &str, v: Option<i64>) -> &mut Self {
        self.invoke(p, OpFn::Read, key, Value::Null)
            .ok(p, OpFn::Read, key, json!(v))
    }
    /// The history as JSONL text.
    pub fn jsonl(&self) -> String {
        let mut out = Vec::new();
        kvlab_checker::write_jsonl(&mut out, &self.events).expect("writing to a Vec");
        String::from_utf8(out).expect("JSON is UTF-8")
    }
}

/// What [`generate`] produces.
#[derive(Clone, Copy, Debug)]
pub struct GenSpec {
    pub seed: u64,
    pub operations: usize,
    pub keys: usize,
    pub clients: usize,
    /// Probability that an operation ends in `info` (half before, half after it applies).
    pub info_rate: f64,
    /// Whether to issue cas and delete (the kv model) or only reads and writes.
    pub kv_ops: bool,
}

enum Client {
    Idle,
    Open {
        f: OpFn,
        key: String,
        args: Value,
        /// `Some(result)` once applied to the store; the result a read returns.
        applied: Option<Result<Option<i64>, ()>>,
    },
}

/// Generates a linearizable history: clients invoke operations on a sequential store,
/// each takes effect at a random moment between invoke and completion, and some end in
/// `info` (the client then continues as a new process). Values written are unique.
pub fn generate(spec: GenSpec) -> Vec<HistoryEvent> {
    let mut events = Vec::new();
    generate_each(spec, &mut |e| events.push(e));
    events
}

/// [`generate`], handing each event to `emit` as it is made instead of keeping them: a
/// history of any length in constant memory (for the streaming benchmark).
pub fn generate_each(spec: GenSpec, emit: &mut dyn FnMut(HistoryEvent)) {
    let mut rng = SplitMix::new(spec.seed);
    let mut h = Emitter {
        next_index: 0,
        emit,
    };
    let mut store: BTreeMap<String, i64> = BTreeMap::new();
    let mut clients: Vec<(u64, Client)> = (0..spec.clients as u64)
        .map(|p| (p, Client::Idle))
        .collect();
    let mut next_process = spec.clients as u64;
    let mut next_value = 1i64;
    let mut invoked = 0usize;
    loop {
        let all_idle = clients.iter().all(|(_, c)| matches!(c, Client::Idle));
        if invoked >= spec.operations && all_idle {
            break;
        }
        let c = rng.below(spec.clients as u64) as usize;
        let (process, client) = &mut clients[c];
        let p = *process;
        match client {
            Client::Idle => {
                if invoked >= spec.operations {
                    continue;
                }
                invoked += 1;
                let key = format!("k{}", rng.below(spec.keys as u64));
                let roll = rng.below(100);
                let (f, args) = if roll < 45 {
                    (OpFn::Read, Value::Null)
                } else if roll < 80 || !spec.kv_ops {
                    next_value += 1;
                    (OpFn::Write, json!(next_value))
                } else if roll < 95 {
                    next_value += 1;
                    let expected = if rng.chance(0.7) {
                        store.get(&key).copied()
                    } else {
                        Some(next_value - 1 - rng.below(5) as i64)
                    };
                    (OpFn::Cas, json!([expected, next_value]))
                } else {
                    (OpFn::Delete, Value::Null)
                };
                h.invoke(p, f, &key, args.clone());
                *client = Client::Open {
                    f,
                    key,
                    args,
                    applied: None,
                };
            }
            Client::Open {
                f,
                key,
                args,
                applied,
            } => {
                let (f, key, args) = (*f, key.clone(), args.clone());
                match applied {
                    None => {
                        if rng.chance(spec.info_rate / 2.0) {
                            // Times out before taking effect, and never takes effect.
                            h.info(p, f, &key, args);
                            *client = Client::Idle;
                            *process = next_process;
                            next_process += 1;
                            continue;
                        }
                        let result = match f {
                            OpFn::Read => Ok(store.get(&key).copied()),
                            OpFn::Write => {
                                store.insert(key.clone(), args.as_i64().expect("int"));
                                Ok(None)
                            }
                            OpFn::Cas => {
                                let expected = args[0].as_i64();
                                if store.get(&key).copied() == expected {
                                    store.insert(key.clone(), args[1].as_i64().expect("int"));
                                    Ok(None)
                                } else {
                                    Err(())
                                }
                            }
                            OpFn::Delete => {
                                store.remove(&key);
                                Ok(None)
                            }
                            OpFn::Txn => unreachable!("never generated"),
                        };
                        *applied = Some(result);
                    }
                    Some(result) => {
                        let result = *result;
                        if rng.chance(spec.info_rate / 2.0) {
                            h.info(p, f, &key, args);
                            *process = next_process;
                            next_process += 1;
                        } else {
                            match (f, result) {
                                (OpFn::Read, Ok(v)) => h.ok(p, f, &key, json!(v)),
                                (_, Ok(_)) => h.ok(p, f, &key, args),
                                (_, Err(())) => h.fail(p, f, &key, args),
                            };
                        }
                        *client = Client::Idle;
                    }
                }
            }
        }
    }
}

/// Hands events to a closure with the numbering [`Hist`] gives them.
struct Emitter<'a> {
    next_index: u64,
    emit: &'a mut dyn FnMut(HistoryEvent),
}

impl Emitter<'_> {
    fn push(&mut self, process: u64, kind: EventType, f: OpFn, key: &str, value: Value) {
        let index = self.next_index;
        self.next_index += 1;
        (self.emit)(HistoryEvent {
            index,
            time_ns: index * 1000,
            process,
            kind,
            f,
            key: Some(key.to_owned()),
            value,
            node: None,
            error: None,
        });
    }
    fn invoke(&mut self, p: u64, f: OpFn, key: &str, value: Value) {
        let value = if f == OpFn::Read { Value::Null } else { value };
        self.push(p, EventType::Invoke, f, key, value);
    }
    fn ok(&mut self, p: u64, f: OpFn, key: &str, value: Value) {
        self.push(p, EventType::Ok, f, key, value);
    }
    fn fail(&mut self, p: u64, f: OpFn, key: &str, value: Value) {
        self.push(p, EventType::Fail, f, key, value);
    }
    fn info(&mut self, p: u64, f: OpFn, key: &str, value: Value) {
        self.push(p, EventType::Info, f, key, value);
    }
}
