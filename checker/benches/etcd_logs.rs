//! porcupine's etcd Jepsen logs (and KV logs): kvlab (read + check, the race) against
//! porcupine-rs called directly on the same operations with porcupine's own etcd model,
//! in one run. Run: `cargo bench -p kvlab-checker --bench etcd_logs`.
//!
//! porcupine's etcd model (from porcupine-rs's `test_data/jepsen_loader.rs`, MIT) is
//! restated here so the engine runs exactly as its own test suite runs it.

use std::path::Path;
use std::time::{Duration, Instant};

use kvlab_checker::{
    CheckConfig, CheckOptions, Engine, EventType, HistoryEvent, HistoryFormat, ModelKind, OpFn,
    Verdict, check, check_with, read_history_file,
};
use porcupine_rs::{Event, EventModel, Model};

/// Repetitions of the whole corpus; the median total is reported.
const REPETITIONS: usize = 5;

#[derive(Clone, Debug)]
enum EtcdOp {
    Read {
        exists: bool,
        value: i64,
        unknown: bool,
    },
    Write {
        value: i64,
    },
    Cas {
        from: i64,
        to: i64,
        ok: bool,
        unknown: bool,
    },
}

#[derive(Clone, Debug)]
struct EtcdModel;

const ABSENT: i64 = -1_000_000;

impl Model for EtcdModel {
    type State = i64;
    type Op = EtcdOp;
    type Metadata = ();
    fn init() -> i64 {
        ABSENT
    }
    fn step(state: &i64, op: &EtcdOp) -> (bool, i64) {
        match *op {
            EtcdOp::Read {
                exists,
                value,
                unknown,
            } => (
                (!exists && *state == ABSENT) || (exists && *state == value) || unknown,
                *state,
            ),
            EtcdOp::Write { value } => (true, value),
            EtcdOp::Cas {
                from,
                to,
                ok,
                unknown,
            } => {
                let accepted = (from == *state && ok) || (from != *state && !ok) || unknown;
                (accepted, if from == *state { to } else { *state })
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Input {
    Read,
    Write(i64),
    Cas(i64, i64),
}

#[derive(Clone, Debug)]
enum Output {
    Read(Option<i64>, bool),
    Write,
    Cas(bool, bool),
}

impl EventModel for EtcdModel {
    type Input = Input;
    type Output = Output;
    fn combine(input: &Input, output: &Output) -> EtcdOp {
        match (input, output) {
            (Input::Read, Output::Read(v, unknown)) => EtcdOp::Read {
                exists: v.is_some(),
                value: v.unwrap_or(0),
                unknown: *unknown,
            },
            (Input::Write(v), _) => EtcdOp::Write { value: *v },
            (Input::Cas(from, to), Output::Cas(ok, unknown)) => EtcdOp::Cas {
                from: *from,
                to: *to,
                ok: *ok,
                unknown: *unknown,
            },
            // Mismatches cannot come out of `to_porcupine`.
            _ => EtcdOp::Read {
                exists: false,
                value: 0,
                unknown: true,
            },
        }
    }
}

/// The events porcupine's loader builds: reads that failed with a timeout return as
/// unknown; info writes and cas never return and get an unknown return at the end.
fn to_porcupine(events: &[HistoryEvent]) -> Vec<Event<EtcdModel>> {
    let mut out = Vec::new();
    let mut pending: std::collections::BTreeMap<u64, (usize, Input)> = Default::default();
    let mut id = 0;
    for e in events {
        let client_id = Some(e.process as u32);
        match e.kind {
            EventType::Invoke => {
                let input = match e.f {
                    OpFn::Read => Input::Read,
                    OpFn::Write => Input::Write(e.value.as_i64().unwrap_or(0)),
                    _ => Input::Cas(
                        e.value[0].as_i64().unwrap_or(0),
                        e.value[1].as_i64().unwrap_or(0),
                    ),
                };
                out.push(Event::Call {
                    client_id,
                    value: input.clone(),
                    id,
                    metadata: None,
                });
                pending.insert(e.process, (id, input));
                id += 1;
            }
            EventType::Info => {}
            kind => {
                let Some((call, input)) = pending.remove(&e.process) else {
                    continue;
                };
                let output = match (input, kind) {
                    (Input::Read, EventType::Ok) => Output::Read(e.value.as_i64(), false),
                    (Input::Read, _) => Output::Read(None, true),
                    (Input::Write(_), _) => Output::Write,
                    (Input::Cas(..), k) => Output::Cas(k == EventType::Ok, false),
                };
                out.push(Event::Return {
                    client_id,
                    value: output,
                    id: call,
                    metadata: None,
                });
            }
        }
    }
    for (p, (call, input)) in pending {
        let output = match input {
            Input::Read => Output::Read(None, true),
            Input::Write(_) => Output::Write,
            Input::Cas(..) => Output::Cas(false, true),
        };
        out.push(Event::Return {
            client_id: Some(p as u32),
            value: output,
            id: call,
            metadata: None,
        });
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/porcupine");
    let opts = CheckOptions {
        model: ModelKind::CasRegister,
        timeout: None,
    };
    let mut kvlab_totals = Vec::new();
    let mut kvlab_check_totals = Vec::new();
    let mut porcupine_totals = Vec::new();
    let mut slowest_kvlab = (0.0, 0u32);
    let mut slowest_porcupine = (0.0, 0u32);
    for rep in 0..REPETITIONS {
        let (mut kv_total, mut kv_check_total, mut pc_total) = (0.0, 0.0, 0.0);
        for n in 0..=102u32 {
            let path = dir.join(format!("jepsen/etcd_{n:03}.log"));
            let t = Instant::now();
            let events = read_history_file(&path, HistoryFormat::Auto).expect("reads");
            let tc = Instant::now();
            let report = check(&events, &opts).expect("checks");
            let check_ms = tc.elapsed().as_secs_f64() * 1e3;
            let kv_ms = t.elapsed().as_secs_f64() * 1e3;
            let pevents = to_porcupine(&events);
            let t = Instant::now();
            let ok = porcupine_rs::check_events(&pevents);
            let pc_ms = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(
                report.verdict == Verdict::Valid,
                ok,
                "etcd_{n:03}: engines disagree"
            );
            kv_total += kv_ms;
            kv_check_total += check_ms;
            pc_total += pc_ms;
            if rep == 0 {
                if kv_ms > slowest_kvlab.0 {
                    slowest_kvlab = (kv_ms, n);
                }
                if pc_ms > slowest_porcupine.0 {
                    slowest_porcupine = (pc_ms, n);
                }
            }
        }
        kvlab_totals.push(kv_total);
        kvlab_check_totals.push(kv_check_total);
        porcupine_totals.push(pc_total);
    }
    let (kv, kvc, pc) = (
        median(kvlab_totals),
        median(kvlab_check_totals),
        median(porcupine_totals),
    );
    println!("etcd logs (103 files, median of {REPETITIONS} runs of the whole corpus):");
    println!(
        "  kvlab read+check total {kv:8.2} ms (check alone {kvc:.2} ms); slowest file etcd_{:03} {:.2} ms",
        slowest_kvlab.1, slowest_kvlab.0
    );
    println!(
        "  porcupine-rs check_events total {pc:8.2} ms; slowest file etcd_{:03} {:.2} ms",
        slowest_porcupine.1, slowest_porcupine.0
    );
    println!(
        "  ratio kvlab/porcupine: {:.2} (read+check), {:.2} (check alone)",
        kv / pc,
        kvc / pc
    );

    println!("porcupine KV logs (kv model), per engine:");
    for name in [
        "c01-ok", "c01-bad", "c10-ok", "c10-bad", "c50-ok", "c50-bad",
    ] {
        let events = read_history_file(&dir.join(format!("kv/{name}.txt")), HistoryFormat::Auto)
            .expect("reads");
        let mut line = format!("  {name:<8}");
        for engine in Engine::ALL {
            let config = CheckConfig {
                model: ModelKind::Kv,
                timeout: Some(Duration::from_secs(60)),
                memory_limit_bytes: Some(kvlab_checker::DEFAULT_MEMORY_LIMIT_BYTES),
                engine,
                stop_at_first_invalid: true,
            };
            let t = Instant::now();
            let r = check_with(&events, &config).expect("checks");
            line.push_str(&format!(
                " | {engine}: {} {:8.1} ms",
                r.verdict,
                t.elapsed().as_secs_f64() * 1e3
            ));
        }
        println!("{line}");
    }
}
