//! WAL append throughput and commit latency on real files.
//!
//! `cargo bench -p kvlab-storage --bench wal_append`
//!
//! For each fsync policy, record size and batch size, appends records for at most
//! `CASE_TIME_S` seconds (or `CASE_MAX_APPENDS` appends) into a fresh directory under the
//! cargo target directory (a real disk; /tmp may be tmpfs elsewhere, where fsync is
//! free). The directory can be overridden with `KVLAB_BENCH_DIR`.
//!
//! - `appends/s`: records made durable (or, for `never`, written) per second.
//! - `commit p50/p99`: per record, the time from the start of its `append` to the end of
//!   the `sync` that covers it (for `always`, the append itself). This is what a client
//!   waits for under group commit, not just the cost of the `append` call.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kvlab_storage::{FsyncPolicy, RealFs, StorageOptions, Wal};

/// Wall-clock bound of one case.
const CASE_TIME_S: f64 = 2.0;
/// Append bound of one case (keeps `never` from writing gigabytes).
const CASE_MAX_APPENDS: u64 = 200_000;
/// Segment size used by the benchmark (rolls a few times in the faster cases).
const SEGMENT_BYTES: u64 = 64 << 20;

struct Case {
    policy: FsyncPolicy,
    record_bytes: usize,
    batch: usize,
}

struct Outcome {
    appends: u64,
    elapsed: Duration,
    commit_us: Vec<f64>,
    syncs: u64,
}

fn run(case: &Case, base: &std::path::Path, index: usize) -> Outcome {
    let dir = base.join(format!("case-{index}"));
    let opts = StorageOptions {
        fsync: case.policy,
        segment_size_bytes: SEGMENT_BYTES,
        ..StorageOptions::default()
    };
    let (mut wal, _) = Wal::open(RealFs, &dir, &opts).expect("open wal");
    let payload = vec![0xA5u8; case.record_bytes];
    let mut commit_us = Vec::new();
    let mut starts = Vec::with_capacity(case.batch);
    let begin = Instant::now();
    let mut appends = 0u64;
    while begin.elapsed().as_secs_f64() < CASE_TIME_S && appends < CASE_MAX_APPENDS {
        starts.clear();
        for _ in 0..case.batch {
            starts.push(Instant::now());
            wal.append(&payload).expect("append");
        }
        if case.policy != FsyncPolicy::Always {
            wal.sync().expect("sync");
        }
        let done = Instant::now();
        commit_us.extend(starts.iter().map(|s| (done - *s).as_secs_f64() * 1e6));
        appends += case.batch as u64;
    }
    let elapsed = begin.elapsed();
    let syncs = wal.stats().file_syncs;
    drop(wal);
    std::fs::remove_dir_all(&dir).expect("clean up case dir");
    commit_us.sort_by(f64::total_cmp);
    Outcome {
        appends,
        elapsed,
        commit_us,
        syncs,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn main() {
    let base = std::env::var_os("KVLAB_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("bench dir");
    let tmp = tempfile::Builder::new()
        .prefix("wal_append-")
        .tempdir_in(&base)
        .expect("temp dir");

    let mut cases = Vec::new();
    for record_bytes in [128usize, 4096] {
        cases.push(Case {
            policy: FsyncPolicy::Always,
            record_bytes,
            batch: 1,
        });
        for batch in [1usize, 8, 64] {
            cases.push(Case {
                policy: FsyncPolicy::Batch,
                record_bytes,
                batch,
            });
        }
        cases.push(Case {
            policy: FsyncPolicy::Never,
            record_bytes,
            batch: 64,
        });
    }

    println!(
        "wal_append on {} (each case <= {CASE_TIME_S} s)",
        base.display()
    );
    println!(
        "{:<8} {:>7} {:>6} {:>10} {:>12} {:>9} {:>14} {:>14}",
        "policy",
        "record",
        "batch",
        "appends",
        "appends/s",
        "fsyncs",
        "commit p50 us",
        "commit p99 us"
    );
    for (i, case) in cases.iter().enumerate() {
        let o = run(case, tmp.path(), i);
        println!(
            "{:<8} {:>6}B {:>6} {:>10} {:>12.0} {:>9} {:>14.1} {:>14.1}",
            case.policy.to_string(),
            case.record_bytes,
            case.batch,
            o.appends,
            o.appends as f64 / o.elapsed.as_secs_f64(),
            o.syncs,
            percentile(&o.commit_us, 0.50),
            percentile(&o.commit_us, 0.99),
        );
    }
}
