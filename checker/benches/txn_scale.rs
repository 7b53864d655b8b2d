//! How the transaction checker scales: generated list-append histories of 10,000,
//! 100,000 and 1,000,000 transactions (10 concurrent clients, 1–4 micro-ops each, half
//! appends, 16 live keys each retired after 32 appends as in Elle's generator, 2% `info`,
//! executed by a strict-serializable store), written as kvlab JSONL to a temporary file
//! and checked under `strict-serializable` by a child process (this bench run again with
//! `--child FILE`), which prints its read and check times and its own peak RSS (VmHWM).
//!
//! `cargo bench -p kvlab-checker --bench txn_scale [-- SIZE...]` (sizes in transactions;
//! default 10000 100000 1000000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::SplitMix;
use kvlab_checker::HistoryFormat;
use kvlab_checker::txn::{TxnCheckOptions, TxnModel, check_txn, read_txn_history_file};

const CLIENTS: u64 = 10;
const LIVE_KEYS: usize = 16;
const APPENDS_PER_KEY: u32 = 32;

/// One micro-op: (append?, key, element).
type Mop = (bool, u64, i64);

/// Streams a history of `txns` transactions to `out`.
fn generate(txns: usize, seed: u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = SplitMix::new(seed);
    let mut data: std::collections::HashMap<u64, Vec<i64>> = Default::default();
    let mut live: Vec<(u64, u32)> = (0..LIVE_KEYS as u64).map(|k| (k, 0)).collect();
    let mut next_key = LIVE_KEYS as u64;
    let mut next_elem = 0i64;
    let mut procs: Vec<(u64, Option<Vec<Mop>>)> = (0..CLIENTS).map(|p| (p, None)).collect();
    let mut next_process = CLIENTS;
    let (mut index, mut started) = (0u64, 0usize);
    while started < txns || procs.iter().any(|(_, o)| o.is_some()) {
        let i = rng.below(CLIENTS) as usize;
        let (process, slot) = &mut procs[i];
        match slot.take() {
            None if started < txns => {
                let n = 1 + rng.below(4);
                let mops: Vec<Mop> = (0..n)
                    .map(|_| {
                        let slot = rng.below(LIVE_KEYS as u64) as usize;
                        let (k, count) = &mut live[slot];
                        let key = *k;
                        if rng.chance(0.5) {
                            *count += 1;
                            if *count >= APPENDS_PER_KEY {
                                live[slot] = (next_key, 0);
                                next_key += 1;
                            }
                            next_elem += 1;
                            (true, key, next_elem)
                        } else {
                            (false, key, 0)
                        }
                    })
                    .collect();
                line(out, index, *process, "invoke", &mops, None)?;
                *slot = Some(mops);
                started += 1;
            }
            None => continue,
            Some(mops) => {
                let info = rng.chance(0.02);
                let mut reads = Vec::new();
                for &(append, k, e) in &mops {
                    let list = data.entry(k).or_default();
                    if append {
                        list.push(e);
                    } else {
                        reads.push(list.clone());
                    }
                }
                let kind = if info { "info" } else { "ok" };
                line(out, index, *process, kind, &mops, (!info).then_some(&reads))?;
                if info {
                    *process = next_process;
                    next_process += 1;
                }
            }
        }
        index += 1;
    }
    Ok(())
}

fn line(
    out: &mut impl Write,
    index: u64,
    process: u64,
    kind: &str,
    mops: &[Mop],
    reads: Option<&Vec<Vec<i64>>>,
) -> std::io::Result<()> {
    write!(
        out,
        "{{\"index\":{index},\"time_ns\":{},\"process\":{process},\"type\":\"{kind}\",\"f\":\"txn\",\"value\":[",
        index * 1000
    )?;
    let mut r = reads.map(|v| v.iter());
    for (i, &(append, k, e)) in mops.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if append {
            write!(out, "[\"append\",{k},{e}]")?;
        } else {
            match r.as_mut().and_then(Iterator::next) {
                None => write!(out, "[\"r\",{k},null]")?,
                Some(l) => {
                    write!(out, "[\"r\",{k},[")?;
                    for (j, x) in l.iter().enumerate() {
                        if j > 0 {
                            out.write_all(b",")?;
                        }
                        write!(out, "{x}")?;
                    }
                    out.write_all(b"]]")?;
                }
            }
        }
    }
    out.write_all(b"]}\n")
}

fn child(path: &Path) {
    let t = Instant::now();
    let history = read_txn_history_file(path, HistoryFormat::Auto).expect("generated history");
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = check_txn(
        &history,
        &TxnCheckOptions::new(TxnModel::StrictSerializable),
    );
    let check_s = t.elapsed().as_secs_f64();
    let peak = kvlab_checker::budget::peak_resident_bytes().unwrap_or(0);
    if report.verdict != kvlab_checker::Verdict::Valid {
        eprintln!("{report}");
    }
    println!(
        "{} {read_s:.3} {check_s:.3} {} {} {}",
        history.txns.len(),
        peak,
        report.verdict,
        report.edges.ww
            + report.edges.wr
            + report.edges.rw
            + report.edges.process
            + report.edges.realtime
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(Path::new(&args[1]));
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "{:>9} {:>8} {:>7} {:>8} {:>12} {:>13} {:>9} {:>8} {:>10}",
        "txns",
        "file MB",
        "read s",
        "check s",
        "check txn/s",
        "read+check/s",
        "peak MB",
        "verdict",
        "edges"
    );
    for size in sizes {
        let path = dir.path().join(format!("txn-{size}.jsonl"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("create"));
        generate(size, 42, &mut out).expect("write");
        out.flush().expect("flush");
        drop(out);
        let mb = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1e6;
        let exe = std::env::current_exe().expect("this bench");
        let output = Command::new(exe)
            .arg("--child")
            .arg(&path)
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&output.stdout);
        std::io::stderr().write_all(&output.stderr).expect("stderr");
        let f: Vec<&str> = text.split_whitespace().collect();
        assert!(
            f.len() == 6,
            "child: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (txns, read_s, check_s): (f64, f64, f64) = (
            f[0].parse().unwrap_or(0.0),
            f[1].parse().unwrap_or(0.0),
            f[2].parse().unwrap_or(0.0),
        );
        let peak_mb = f[3].parse::<f64>().unwrap_or(0.0) / 1e6;
        println!(
            "{:>9} {mb:>8.1} {read_s:>7.2} {check_s:>8.2} {:>12.0} {:>13.0} {peak_mb:>9.0} {:>8} {:>10}",
            txns as u64,
            txns / check_s,
            txns / (read_s + check_s),
            f[4],
            f[5]
        );
    }
}
