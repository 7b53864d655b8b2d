//! The scale cases, each its own line (run one at a time with a filter to read
//! its own peak RSS): `cargo bench -p kvlab-checker --bench check_scale -- FILTER`.
//!
//! * `wide`: 100,000 operations, 1,000 keys, 20 clients, read/write/cas, 1% info —
//!   porcupine-rs called directly (one partition per key, as its users call it) vs
//!   kvlab's `check` vs whole processes (`target/release/kvlab check FILE` when that
//!   binary exists, and this crate's `check_file` example).
//! * `hot`: 20,000 operations on one key with 20 clients (and with 1% info), and 10 keys
//!   with 50 clients: kvlab's race, and each engine alone under a budget.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{GenSpec, generate};
use kvlab_checker::{CheckConfig, Engine, HistoryEvent, ModelKind, check_with, write_jsonl};
use porcupine_rs::{Model, Operation};

fn peak_rss_mib() -> f64 {
    kvlab_checker::budget::peak_resident_bytes().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64)
}

/// A porcupine model of a whole kv history partitioned by key, as a porcupine-rs user
/// would write it (porcupine starts one thread per partition).
#[derive(Clone, Debug)]
struct DirectKv;

#[derive(Clone, Debug)]
enum DirectOp {
    Read(u32, Option<i64>),
    Write(u32, i64),
    Cas(u32, Option<i64>, i64, bool),
    Delete(u32),
}

impl DirectOp {
    fn key(&self) -> u32 {
        match self {
            DirectOp::Read(k, _)
            | DirectOp::Write(k, _)
            | DirectOp::Cas(k, ..)
            | DirectOp::Delete(k) => *k,
        }
    }
}

impl Model for DirectKv {
    type State = Option<i64>;
    type Op = DirectOp;
    type Metadata = ();
    fn init() -> Option<i64> {
        None
    }
    fn step(s: &Option<i64>, op: &DirectOp) -> (bool, Option<i64>) {
        match *op {
            DirectOp::Read(_, v) => (v == *s, *s),
            DirectOp::Write(_, v) => (true, Some(v)),
            DirectOp::Cas(_, e, n, unknown) => {
                if *s == e {
                    (true, Some(n))
                } else {
                    (unknown, *s)
                }
            }
            DirectOp::Delete(_) => (true, None),
        }
    }
    fn partition_operations(history: &[Operation<Self>]) -> Vec<Vec<Operation<Self>>> {
        let mut by_key: std::collections::BTreeMap<u32, Vec<Operation<Self>>> = Default::default();
        for op in history {
            by_key.entry(op.op.key()).or_default().push(op.clone());
        }
        by_key.into_values().collect()
    }
}

/// Jepsen semantics as porcupine users encode them: fails dropped, info reads dropped,
/// info writes/cas return at the end (no unobserved-write reduction).
fn direct_ops(events: &[HistoryEvent]) -> Vec<Operation<DirectKv>> {
    use kvlab_checker::{EventType, OpFn};
    let end = events.len() as i64;
    let mut open: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut out = Vec::new();
    for (pos, e) in events.iter().enumerate() {
        if e.kind == EventType::Invoke {
            open.insert(e.process, pos);
            continue;
        }
        let Some(call) = open.remove(&e.process) else {
            continue;
        };
        let inv = &events[call];
        let key: u32 = inv
            .key
            .as_deref()
            .and_then(|k| k.trim_start_matches('k').parse().ok())
            .unwrap_or(0);
        let info = e.kind == EventType::Info;
        let op = match (e.kind, inv.f) {
            (EventType::Fail, _) => continue,
            (EventType::Info, OpFn::Read) => continue,
            (_, OpFn::Read) => DirectOp::Read(key, e.value.as_i64()),
            (_, OpFn::Write) => DirectOp::Write(key, inv.value.as_i64().unwrap_or(0)),
            (_, OpFn::Cas) => DirectOp::Cas(
                key,
                inv.value[0].as_i64(),
                inv.value[1].as_i64().unwrap_or(0),
                info,
            ),
            (_, OpFn::Delete) => DirectOp::Delete(key),
            _ => continue,
        };
        out.push(Operation {
            client_id: Some(e.process as u32),
            call_time: call as i64,
            return_time: if info { end } else { pos as i64 },
            op,
            metadata: None,
        });
    }
    for (_, call) in open {
        let inv = &events[call];
        let key: u32 = inv
            .key
            .as_deref()
            .and_then(|k| k.trim_start_matches('k').parse().ok())
            .unwrap_or(0);
        let op = match inv.f {
            OpFn::Write => DirectOp::Write(key, inv.value.as_i64().unwrap_or(0)),
            OpFn::Cas => DirectOp::Cas(
                key,
                inv.value[0].as_i64(),
                inv.value[1].as_i64().unwrap_or(0),
                true,
            ),
            OpFn::Delete => DirectOp::Delete(key),
            _ => continue,
        };
        out.push(Operation {
            client_id: None,
            call_time: call as i64,
            return_time: end,
            op,
            metadata: None,
        });
    }
    out
}

fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn config(engine: Engine, timeout_s: u64) -> CheckConfig {
    CheckConfig {
        model: ModelKind::Kv,
        timeout: Some(Duration::from_secs(timeout_s)),
        memory_limit_bytes: Some(kvlab_checker::DEFAULT_MEMORY_LIMIT_BYTES),
        engine,
        stop_at_first_invalid: true,
    }
}

fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release")
}

fn time_process(program: &Path, args: &[&str]) -> Option<(f64, String)> {
    if !program.exists() {
        return None;
    }
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg(program)
        .args(args)
        .output()
        .ok()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_kb = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    Some((
        ms,
        format!("exit {:?}, max RSS {rss_kb} KB", out.status.code()),
    ))
}

fn wide() {
    let name = "wide: 100k ops, 1,000 keys, 20 clients, 1% info";
    if !selected("wide") {
        return;
    }
    let events = generate(GenSpec {
        seed: 11,
        operations: 100_000,
        keys: 1_000,
        clients: 20,
        info_rate: 0.01,
        kv_ops: true,
    });
    let ops = direct_ops(&events);
    let t = Instant::now();
    let ok = porcupine_rs::check_operations(&ops);
    let porcupine_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut kvlab_ms = Vec::new();
    let mut verdict = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = check_with(&events, &config(Engine::Race, 60)).expect("checks");
        kvlab_ms.push(t.elapsed().as_secs_f64() * 1e3);
        verdict = Some(r.verdict);
    }
    kvlab_ms.sort_by(f64::total_cmp);
    println!("{name}");
    println!(
        "  porcupine-rs direct (1,000 partitions): {porcupine_ms:8.1} ms, linearizable = {ok}"
    );
    println!(
        "  kvlab check_with (race):               {:8.1} ms (median of 3), verdict {:?}",
        kvlab_ms[1], verdict
    );
    let dir = std::env::temp_dir().join(format!("kvlab-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("wide.jsonl");
    let mut text = Vec::new();
    write_jsonl(&mut text, &events).expect("writes");
    std::fs::write(&file, &text).expect("writes file");
    let file_s = file.to_string_lossy().into_owned();
    match time_process(
        &workspace_target().join("kvlab"),
        &["check", &file_s, "--model", "kv"],
    ) {
        Some((ms, how)) => println!("  whole process `kvlab check`:           {ms:8.1} ms ({how})"),
        None => println!("  whole process `kvlab check`: target/release/kvlab not built"),
    }
    match time_process(
        &workspace_target().join("examples/check_file"),
        &[&file_s, "kv"],
    ) {
        Some((ms, how)) => println!("  whole process `check_file` example:    {ms:8.1} ms ({how})"),
        None => println!(
            "  whole process `check_file`: build it with `cargo build --release -p kvlab-checker --example check_file`"
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn hot(label: &str, spec: GenSpec, engines: &[(Engine, u64)]) {
    if !selected(label) {
        return;
    }
    let events = generate(spec);
    for &(engine, timeout_s) in engines {
        let t = Instant::now();
        let r = check_with(&events, &config(engine, timeout_s)).expect("checks");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let explored = r
            .partitions
            .first()
            .map(|p| format!("; {p}"))
            .unwrap_or_default();
        println!(
            "{label} [{engine}, budget {timeout_s} s]: {} in {ms:.0} ms, {} ops checked, max concurrency {}, decided by kvlab {} / porcupine {}, peak RSS {:.0} MiB{}",
            r.verdict,
            r.operations_checked,
            r.max_concurrency,
            r.decided_by.kvlab,
            r.decided_by.porcupine,
            peak_rss_mib(),
            explored.lines().next().unwrap_or("")
        );
    }
}

fn main() {
    wide();
    let one_key = GenSpec {
        seed: 5,
        operations: 20_000,
        keys: 1,
        clients: 20,
        info_rate: 0.0,
        kv_ops: true,
    };
    hot(
        "hot1: 20k ops, 1 key, 20 clients",
        one_key,
        &[(Engine::Race, 60)],
    );
    hot(
        "hot1info: 20k ops, 1 key, 20 clients, 1% info",
        GenSpec {
            info_rate: 0.01,
            ..one_key
        },
        &[(Engine::Race, 60)],
    );
    hot(
        "hot10: 20k ops, 10 keys, 50 clients",
        GenSpec {
            keys: 10,
            clients: 50,
            ..one_key
        },
        &[(Engine::Race, 60)],
    );
    hot(
        "hotkvlab: 20k ops, 1 key, 20 clients",
        one_key,
        &[(Engine::Kvlab, 60)],
    );
    hot(
        "hotporcupine: 20k ops, 1 key, 20 clients",
        one_key,
        &[(Engine::Porcupine, 20)],
    );
}
