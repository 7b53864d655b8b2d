//! Times reading and checking generated linearizable histories, and the memory a large
//! single key costs. Run: `cargo bench -p kvlab-checker --bench check_generated [-- FILTER]`;
//! with a filter only cases whose name contains it run (peak RSS is a process-wide high
//! water mark, so run a memory case alone to read its own footprint).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{GenSpec, generate};
use kvlab_checker::{CheckOptions, ModelKind, Verdict, check, read_jsonl, write_jsonl};

/// Repetitions per case; the median is reported.
const REPETITIONS: usize = 5;

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn case(name: &str, spec: GenSpec, timeout: Option<Duration>) {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        return;
    }
    let events = generate(spec);
    let mut text = Vec::new();
    write_jsonl(&mut text, &events).expect("written");
    let opts = CheckOptions {
        model: if spec.kv_ops {
            ModelKind::Kv
        } else {
            ModelKind::Register
        },
        timeout,
    };
    let (mut read_ms, mut check_ms) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..REPETITIONS {
        let t = Instant::now();
        let read = read_jsonl(text.as_slice()).expect("readable");
        read_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let report = check(&read, &opts).expect("well formed");
        check_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(report.verdict, Verdict::Valid, "{name}: {report}");
        last = Some(report);
    }
    let r = last.expect("ran");
    println!(
        "{name:<44} ops {:>6} keys {:>4} clients {:>3} info {:>4.0}% | read {:>8.1} ms | check {:>8.1} ms (median of {REPETITIONS}) | checked {:>6} ops, max concurrency {:>3}, threads {}, peak RSS {:.0} MiB",
        r.operations,
        r.keys_checked,
        spec.clients,
        spec.info_rate * 100.0,
        median_ms(read_ms),
        median_ms(check_ms),
        r.operations_checked,
        r.max_concurrency,
        r.threads,
        peak_rss_mib(),
    );
}

fn main() {
    let base = GenSpec {
        seed: 7,
        operations: 10_000,
        keys: 100,
        clients: 10,
        info_rate: 0.0,
        kv_ops: true,
    };
    case("10k ops, 100 keys, 10 clients", base, None);
    case(
        "10k ops, 100 keys, 10 clients, 10 s budget",
        base,
        Some(Duration::from_secs(10)),
    );
    case(
        "10k ops, 100 keys, 10 clients, 5% info",
        GenSpec {
            info_rate: 0.05,
            ..base
        },
        None,
    );
    case(
        "10k ops, 10,000 keys, 10 clients",
        GenSpec {
            keys: 10_000,
            ..base
        },
        None,
    );
    case(
        "10k ops, 10,000 keys, 10 clients, 10 s budget",
        GenSpec {
            keys: 10_000,
            ..base
        },
        Some(Duration::from_secs(10)),
    );
    case(
        "10k ops, 1 key, 10 clients",
        GenSpec { keys: 1, ..base },
        None,
    );
    case(
        "10k ops, 1 key, 10 clients, 5% info",
        GenSpec {
            keys: 1,
            info_rate: 0.05,
            ..base
        },
        Some(Duration::from_secs(30)),
    );
    case(
        "100k ops, 1,000 keys, 10 clients",
        GenSpec {
            operations: 100_000,
            keys: 1_000,
            ..base
        },
        None,
    );
    case(
        "30k ops, 1 key, 1 client (memory of MAX_OPS_PER_KEY)",
        GenSpec {
            operations: 30_000,
            keys: 1,
            clients: 1,
            ..base
        },
        None,
    );
    case(
        "30k ops, 1 key, 10 clients (memory of MAX_OPS_PER_KEY)",
        GenSpec {
            operations: 30_000,
            keys: 1,
            ..base
        },
        None,
    );
}
