//! The issue "decide hot-key histories full of crashed clients": histories of its class
//! (`tests/common/register.rs`: one key, read/write/cas, unique values, long overlapping
//! operations, a share of writes and cas that take effect and end in `info`) for every
//! combination of 20 and 50 clients, 20,000 and 200,000 operations, 1% and 5% info,
//! valid and with one stale read. Each is written as JSONL to a temporary file and checked
//! by a child process (this bench, run again with `--child`), which reads it streamed,
//! checks it with the race and prints its verdict, time and its own peak RSS.
//!
//! `cargo bench -p kvlab-checker --bench register_scale [-- FILTER...]` (a case runs when
//! its name contains a filter). Extra lines:
//!
//! * `engines`: the 20k/20-client history given to kvlab's search and to
//!   porcupine-rs alone, 10 s each (they answer unknown);
//! * `memory`: each case also read without deciding while reading (the whole key held);
//! * `10m`: 10,000,000 operations on 1,000 keys, 50 clients, 1% info, in this class
//!   (about 2 GB of JSONL in a temporary file); `10m-kv`: the same size from the older
//!   generator of `tests/common` (cas on old values, deletes: absent repeats), 0.1% info;
//!   each read streamed, deciding while reading, and without (`memory`);
//! * with `target/release/kvlab` built (or the binary `KVLAB_BIN` names), `kvlab check
//!   FILE` on each file, timed with its peak RSS by `/usr/bin/time`.
//!
//! The files go to a temporary directory, removed at the end; with `KVLAB_BENCH_DIR` set
//! they are written there and kept.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::register::{RegisterSpec, generate_register_each};
use common::{GenSpec, generate_each};
use kvlab_checker::{
    CheckConfig, Engine, EventType, HistoryEvent, ModelKind, PreparedHistory, ReadOptions,
};

fn filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

fn selected(name: &str) -> bool {
    let f = filters();
    f.is_empty() || f.iter().any(|f| name.contains(f.as_str()))
}

/// Writes the history of `spec` to `path` in constant memory; returns its operations and
/// the most operations open at once (info operations open to the end).
fn write_history(path: &Path, spec: RegisterSpec) -> (u64, usize) {
    write_with(path, &mut |emit| generate_register_each(spec, emit))
}

/// A generator: hands each event of a history to the closure it is given.
type Generate<'a> = dyn FnMut(&mut dyn FnMut(HistoryEvent)) + 'a;

/// Writes what `generate` emits to `path`; see [`write_history`].
fn write_with(path: &Path, generate: &mut Generate<'_>) -> (u64, usize) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("creates"));
    let (mut ops, mut open, mut most) = (0u64, 0usize, 0usize);
    generate(&mut |e| {
        match e.kind {
            EventType::Invoke => {
                ops += 1;
                open += 1;
                most = most.max(open);
            }
            EventType::Ok | EventType::Fail => open -= 1,
            EventType::Info => {}
        }
        serde_json::to_writer(&mut out, &e).expect("writes");
        out.write_all(b"\n").expect("writes");
    });
    out.flush().expect("flushes");
    (ops, most)
}

/// The child: check one file, print one line.
fn child(file: &str, engine: Engine, decide_while_reading: bool, model: ModelKind) {
    let t = Instant::now();
    let options = ReadOptions {
        decide_while_reading,
        ..ReadOptions::default()
    };
    let history = PreparedHistory::read_file(Path::new(file), model, &options).expect("reads");
    let held = history.peak_held_operations();
    let config = CheckConfig {
        model,
        timeout: Some(Duration::from_secs(if engine == Engine::Race {
            60
        } else {
            10
        })),
        memory_limit_bytes: Some(kvlab_checker::DEFAULT_MEMORY_LIMIT_BYTES),
        engine,
        stop_at_first_invalid: true,
    };
    let r = history.check(&config, None);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let peak = kvlab_checker::budget::peak_resident_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
    let why = r
        .partitions
        .first()
        .and_then(|p| p.explanation.clone().or(p.unknown_reason.clone()))
        .unwrap_or_default();
    println!(
        "{} | {ms:.0} ms | peak RSS {peak:.0} MiB | held at most {held} operations | checked {} (decided while reading {}), info {} (bounded {}, dropped {}), decided by reads-from {} kvlab {} porcupine {} | {}",
        r.verdict,
        r.operations_checked,
        r.decided_while_reading,
        r.operations_info,
        r.info_bounded,
        r.unobserved_info_dropped,
        r.decided_by.reads_from,
        r.decided_by.kvlab,
        r.decided_by.porcupine,
        why.chars().take(400).collect::<String>()
    );
}

fn run_child(file: &Path, engine: Engine, decide: bool) -> String {
    run_child_model(file, engine, decide, ModelKind::CasRegister)
}

fn run_child_model(file: &Path, engine: Engine, decide: bool, model: ModelKind) -> String {
    let exe = std::env::current_exe().expect("knows itself");
    let out = Command::new(exe)
        .args(["--child", &file.to_string_lossy(), engine.name()])
        .arg(if decide { "decide" } else { "hold" })
        .arg(model.name())
        .output()
        .expect("runs the child");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text.is_empty() {
        format!("child failed: {}", String::from_utf8_lossy(&out.stderr))
    } else {
        text
    }
}

fn run_kvlab_binary(file: &Path) -> Option<String> {
    let bin = std::env::var_os("KVLAB_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/kvlab"),
        PathBuf::from,
    );
    if !bin.exists() {
        return None;
    }
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(&bin)
        .arg("check")
        .arg(file)
        .args(["--model", "kv", "--progress", "never"])
        .output()
        .ok()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = stderr.lines().last()?.trim().parse().ok()?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .to_owned();
    Some(format!(
        "exit {:?}, {ms:.0} ms, peak RSS {:.0} MiB: {first}",
        out.status.code(),
        kib / 1024.0
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let engine = Engine::from_name(&args[i + 2]).expect("an engine");
        let model = ModelKind::from_name(&args[i + 4]).expect("a model");
        child(&args[i + 1], engine, args[i + 3] == "decide", model);
        return;
    }
    let keep = std::env::var_os("KVLAB_BENCH_DIR").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("kvlab-register-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).expect("creates the directory");
    let memory = filters().iter().any(|f| f == "memory");
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for operations in [20_000, 200_000] {
        for clients in [20, 50] {
            for info_rate in [0.01, 0.05] {
                for stale in [false, true] {
                    let name = format!(
                        "{}k ops, {clients} clients, {:.0}% info, {}",
                        operations / 1000,
                        info_rate * 100.0,
                        if stale { "stale read" } else { "valid" }
                    );
                    if !selected(&name) {
                        continue;
                    }
                    let spec = RegisterSpec {
                        seed: 15,
                        operations,
                        keys: 1,
                        clients,
                        info_rate,
                        stale_read_at: stale.then_some(0.6),
                    };
                    let file = dir.join(format!(
                        "h-{operations}-{clients}-{info_rate}-{stale}.jsonl"
                    ));
                    let (ops, most) = write_history(&file, spec);
                    println!("{name}: {ops} operations, up to {most} open at once");
                    println!(
                        "  check (read streamed, race): {}",
                        run_child(&file, Engine::Race, true)
                    );
                    if memory {
                        println!(
                            "  whole key held (no deciding while reading): {}",
                            run_child(&file, Engine::Race, false)
                        );
                    }
                    if let Some(line) = run_kvlab_binary(&file) {
                        println!("  kvlab check: {line}");
                    }
                    files.push((name, file));
                }
            }
        }
    }
    for (name, kv) in [("10m", false), ("10m-kv", true)] {
        if !filters().iter().any(|f| f == name) {
            continue;
        }
        let file = dir.join(format!("{name}.jsonl"));
        let t = Instant::now();
        let (ops, most) = if kv {
            let spec = GenSpec {
                seed: 16,
                operations: 10_000_000,
                keys: 1_000,
                clients: 50,
                info_rate: 0.001,
                kv_ops: true,
            };
            write_with(&file, &mut |emit| generate_each(spec, emit))
        } else {
            write_history(
                &file,
                RegisterSpec {
                    seed: 16,
                    operations: 10_000_000,
                    keys: 1_000,
                    clients: 50,
                    info_rate: 0.01,
                    stale_read_at: None,
                },
            )
        };
        let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
        println!(
            "{name}: {ops} operations on 1,000 keys, up to {most} open at once, {:.2} GB of JSONL (written in {:.0} s)",
            bytes as f64 / 1e9,
            t.elapsed().as_secs_f64()
        );
        let model = if kv {
            ModelKind::Kv
        } else {
            ModelKind::CasRegister
        };
        println!(
            "  read streamed, deciding while reading: {}",
            run_child_model(&file, Engine::Race, true, model)
        );
        if memory {
            println!(
                "  read streamed, whole keys held: {}",
                run_child_model(&file, Engine::Race, false, model)
            );
        }
        if let Some(line) = run_kvlab_binary(&file) {
            println!("  kvlab check: {line}");
        }
        if keep.is_none() {
            let _ = std::fs::remove_file(&file);
        }
    }
    if filters().iter().any(|f| f == "engines") {
        let file = dir.join("issue.jsonl");
        let (ops, most) = write_history(&file, RegisterSpec::hot(15));
        println!("the issue's history ({ops} operations, up to {most} open at once), 10 s each:");
        for engine in [Engine::Kvlab, Engine::Porcupine] {
            println!("  {engine} alone: {}", run_child(&file, engine, false));
        }
        println!("  race: {}", run_child(&file, Engine::Race, false));
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
