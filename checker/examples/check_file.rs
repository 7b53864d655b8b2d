//! Checks one history file, streamed (see `kvlab_checker::input`), and prints the report:
//! `cargo run --release -p kvlab-checker --example check_file -- FILE [MODEL] [ENGINE]
//! [TIMEOUT_S]`.

use std::time::{Duration, Instant};

use kvlab_checker::{CheckConfig, Engine, ModelKind, PreparedHistory, ReadOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: check_file FILE [MODEL] [ENGINE] [TIMEOUT_S]");
        std::process::exit(2);
    };
    let model = args
        .get(1)
        .and_then(|m| ModelKind::from_name(m))
        .unwrap_or(ModelKind::Kv);
    let engine = args
        .get(2)
        .and_then(|e| Engine::from_name(e))
        .unwrap_or_default();
    let timeout = args
        .get(3)
        .and_then(|t| t.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let t = Instant::now();
    let options = ReadOptions {
        decide_while_reading: engine.uses_reads_from(),
        ..ReadOptions::default()
    };
    let history = match PreparedHistory::read_file(path.as_ref(), model, &options) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let read_ms = t.elapsed().as_secs_f64() * 1e3;
    let config = CheckConfig {
        model,
        timeout,
        memory_limit_bytes: Some(kvlab_checker::DEFAULT_MEMORY_LIMIT_BYTES),
        engine,
        stop_at_first_invalid: true,
    };
    let r = history.check(&config, None);
    print!("{r}");
    println!(
        "read {read_ms:.1} ms; decided by kvlab {} / porcupine {}; slowest key {:?} {:.1} ms; peak RSS {:.0} MiB",
        r.decided_by.kvlab,
        r.decided_by.porcupine,
        r.slowest_key,
        r.slowest_key_ms,
        r.peak_resident_bytes.unwrap_or(0) as f64 / (1 << 20) as f64
    );
}
