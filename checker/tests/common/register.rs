//! The histories of the issue "decide hot-key histories full of crashed clients": a
//! register per key with read/write/cas, clients whose operations are long compared with
//! the gaps between them (each client's operation overlaps many others), unique written
//! values, and a share of the writes and cas that take effect but end in `info` (the
//! client crashed): the process is renumbered, as Jepsen does, and the `info` operation
//! stays open to the end of the history, while later reads and cas observe its value.
//! Optionally one `ok` read is made stale: it returns a value that a write completed
//! before the read began had already overwritten.
//!
//! A discrete-event simulation of a linearizable register: every operation takes effect
//! at a random moment between its invoke and its completion. Events are handed out one at
//! a time, so a history of any length is generated in constant memory.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use kvlab_checker::{EventType, HistoryEvent, OpFn};
use serde_json::{Value, json};

use super::SplitMix;

/// What [`generate_register_each`] produces.
#[derive(Clone, Copy, Debug)]
pub struct RegisterSpec {
    pub seed: u64,
    pub operations: usize,
    pub keys: usize,
    pub clients: usize,
    /// The share of writes and cas (successful ones) that take effect and end in `info`.
    pub info_rate: f64,
    /// Make one `ok` read stale, the first possible one after this share of the
    /// operations (`None`: the history is linearizable).
    pub stale_read_at: Option<f64>,
}

impl RegisterSpec {
    /// The case: one key, 20 clients, 20,000 operations, 1% info.
    pub fn hot(seed: u64) -> Self {
        RegisterSpec {
            seed,
            operations: 20_000,
            keys: 1,
            clients: 20,
            info_rate: 0.01,
            stale_read_at: None,
        }
    }
}

/// How long an operation takes, in time units (its effect is at a random moment inside).
const OP_DURATION: (u64, u64) = (1_000, 3_000);
/// The pause between a completion and the client's next invoke.
const THINK: (u64, u64) = (0, 100);
/// Completed certain writes remembered per key, to find one a stale read can return.
const RECENT_WRITES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Invoke,
    Apply,
    Complete,
}

/// One client's operation in flight.
#[derive(Clone, Debug)]
struct Flight {
    f: OpFn,
    key: usize,
    args: Value,
    invoked_at: u64,
    /// A read's value, or whether a cas succeeded; set when it takes effect.
    read: Option<Option<i64>>,
    cas_ok: bool,
}

/// A completed write or cas that surely happened: its value and interval.
#[derive(Clone, Copy, Debug)]
struct Done {
    value: i64,
    invoked_at: u64,
    completed_at: u64,
}

struct Sim<'a> {
    spec: RegisterSpec,
    rng: SplitMix,
    queue: BinaryHeap<Reverse<(u64, u64, Action, usize)>>,
    seq: u64,
    processes: Vec<u64>,
    flights: Vec<Option<Flight>>,
    next_process: u64,
    next_value: i64,
    invoked: usize,
    registers: Vec<Option<i64>>,
    /// Per key: the values it held, most recent last (for cas expecting an old value).
    recent_writes: Vec<VecDeque<Done>>,
    stale_done: bool,
    index: u64,
    emit: &'a mut dyn FnMut(HistoryEvent),
}

/// Generates a history of `spec`, handing each event to `emit` in order.
pub fn generate_register_each(spec: RegisterSpec, emit: &mut dyn FnMut(HistoryEvent)) {
    let mut sim = Sim {
        spec,
        rng: SplitMix::new(spec.seed),
        queue: BinaryHeap::new(),
        seq: 0,
        processes: (0..spec.clients as u64).collect(),
        flights: vec![None; spec.clients],
        next_process: spec.clients as u64,
        next_value: 0,
        invoked: 0,
        registers: vec![None; spec.keys],
        recent_writes: vec![VecDeque::new(); spec.keys],
        stale_done: spec.stale_read_at.is_none(),
        index: 0,
        emit,
    };
    for c in 0..spec.clients {
        let at = sim.between(THINK);
        sim.schedule(at, Action::Invoke, c);
    }
    while let Some(Reverse((now, _, action, c))) = sim.queue.pop() {
        match action {
            Action::Invoke => sim.invoke(now, c),
            Action::Apply => sim.apply(c),
            Action::Complete => sim.complete(now, c),
        }
    }
}

/// [`generate_register_each`] into a vector.
pub fn generate_register(spec: RegisterSpec) -> Vec<HistoryEvent> {
    let mut events = Vec::new();
    generate_register_each(spec, &mut |e| events.push(e));
    events
}

impl Sim<'_> {
    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.rng.below(hi - lo + 1)
    }

    fn schedule(&mut self, at: u64, action: Action, client: usize) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, action, client)));
    }

    fn event(&mut self, now: u64, c: usize, kind: EventType, f: OpFn, key: usize, value: Value) {
        let value = if f == OpFn::Read && kind == EventType::Invoke {
            Value::Null
        } else {
            value
        };
        let index = self.index;
        self.index += 1;
        (self.emit)(HistoryEvent {
            index,
            time_ns: now,
            process: self.processes[c],
            kind,
            f,
            key: Some(format!("k{key}")),
            value,
            node: None,
            error: None,
        });
    }

    fn invoke(&mut self, now: u64, c: usize) {
        if self.invoked >= self.spec.operations {
            return;
        }
        self.invoked += 1;
        let key = self.rng.below(self.spec.keys as u64) as usize;
        let roll = self.rng.below(100);
        let (f, args) = if roll < 50 {
            (OpFn::Read, Value::Null)
        } else if roll < 80 {
            self.next_value += 1;
            (OpFn::Write, json!(self.next_value))
        } else {
            self.next_value += 1;
            // Mostly the current value (the cas may still lose a race), sometimes an old one.
            let expected = match self.recent_writes[key].len() {
                n if n > 1 && self.rng.chance(0.2) => {
                    Some(self.recent_writes[key][self.rng.below(n as u64) as usize].value)
                }
                _ => self.registers[key],
            };
            (OpFn::Cas, json!([expected, self.next_value]))
        };
        self.event(now, c, EventType::Invoke, f, key, args.clone());
        let duration = self.between(OP_DURATION);
        let effect = now + 1 + self.rng.below(duration - 1);
        self.flights[c] = Some(Flight {
            f,
            key,
            args,
            invoked_at: now,
            read: None,
            cas_ok: false,
        });
        self.schedule(effect, Action::Apply, c);
        self.schedule(now + duration, Action::Complete, c);
    }

    fn apply(&mut self, c: usize) {
        let Some(flight) = self.flights[c].as_mut() else {
            return;
        };
        let register = &mut self.registers[flight.key];
        match flight.f {
            OpFn::Read => flight.read = Some(*register),
            OpFn::Write => *register = flight.args.as_i64(),
            _ => {
                if *register == flight.args[0].as_i64() {
                    *register = flight.args[1].as_i64();
                    flight.cas_ok = true;
                }
            }
        }
    }

    fn complete(&mut self, now: u64, c: usize) {
        let Some(flight) = self.flights[c].take() else {
            return;
        };
        let (f, key) = (flight.f, flight.key);
        match f {
            OpFn::Read => {
                let mut value = flight.read.flatten();
                if !self.stale_done
                    && self.invoked as f64
                        >= self.spec.stale_read_at.unwrap_or(0.0) * self.spec.operations as f64
                    && let Some(stale) = self.stale_value(key, flight.invoked_at, value)
                {
                    value = Some(stale);
                    self.stale_done = true;
                }
                self.event(now, c, EventType::Ok, f, key, json!(value));
            }
            OpFn::Cas if !flight.cas_ok => {
                self.event(now, c, EventType::Fail, f, key, flight.args);
            }
            _ => {
                let value = if f == OpFn::Write {
                    flight.args.as_i64()
                } else {
                    flight.args[1].as_i64()
                };
                if self.rng.chance(self.spec.info_rate) {
                    // It took effect, but the client crashed: a new process goes on.
                    self.event(now, c, EventType::Info, f, key, flight.args);
                    self.processes[c] = self.next_process;
                    self.next_process += 1;
                } else {
                    self.event(now, c, EventType::Ok, f, key, flight.args);
                    let recent = &mut self.recent_writes[key];
                    recent.push_back(Done {
                        value: value.expect("written values are integers"),
                        invoked_at: flight.invoked_at,
                        completed_at: now,
                    });
                    if recent.len() > RECENT_WRITES {
                        recent.pop_front();
                    }
                }
            }
        }
        let think = self.between(THINK);
        self.schedule(now + think, Action::Invoke, c);
    }

    /// A value a read invoked at `invoked_at` cannot return: written by a completed write
    /// `w`, overwritten by a write `x` invoked after `w` completed and completed before
    /// the read began (so `w` < `x` < the read in every linearization).
    fn stale_value(&self, key: usize, invoked_at: u64, actual: Option<i64>) -> Option<i64> {
        let recent = &self.recent_writes[key];
        recent
            .iter()
            .rev()
            .find(|w| {
                Some(w.value) != actual
                    && recent
                        .iter()
                        .any(|x| x.invoked_at > w.completed_at && x.completed_at < invoked_at)
            })
            .map(|w| w.value)
    }
}
