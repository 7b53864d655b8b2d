//! How the transaction checker scales: generated list-append histories of 10,000,
//! 100,000 and 1,000,000 transactions (10 concurrent clients, 1–4 micro-ops each, half
//! appends, 16 live keys each retired after 32 appends as in Elle's generator, 2% `info`,
//! executed by a strict-serializable store), written as kvlab JSONL to a temporary file
//! and checked under `strict-serializable` by a child process (this bench run again with
//! `--child FILE`), which prints its read and check times and its own peak RSS (VmHWM).
//!
//! `cargo bench -p kvlab-checker --bench txn_scale [-- SIZE...] [si]` (sizes in
//! transactions; default 10000 100000 1000000). With `si` the store is snapshot
//! isolation instead (no `info`; first committer wins) and each history is checked
//! under `serializable` and `snapshot-isolation`.

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

/// A transaction in flight: its micro-ops, and each key's length at its invoke.
type Open = (Vec<Mop>, Vec<(u64, usize)>);

/// Streams a history of `txns` transactions to `out`.
fn generate(txns: usize, seed: u64, si: bool, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = SplitMix::new(seed);
    let mut data: std::collections::HashMap<u64, Vec<i64>> = Default::default();
    let mut live: Vec<(u64, u32)> = (0..LIVE_KEYS as u64).map(|k| (k, 0)).collect();
    let mut next_key = LIVE_KEYS as u64;
    let mut next_elem = 0i64;
    let mut procs: Vec<(u64, Option<Open>)> = (0..CLIENTS).map(|p| (p, None)).collect();
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
                // The snapshot of each key: its length now (lists only grow).
                let snap = mops
                    .iter()
                    .map(|&(_, k, _)| (k, data.get(&k).map_or(0, Vec::len)))
                    .collect();
                *slot = Some((mops, snap));
                started += 1;
            }
            None => continue,
            Some((mops, snap)) if si => {
                snapshot_commit(&mut data, &mops, &snap, out, index, *process)?;
            }
            Some((mops, _)) => {
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

/// Snapshot isolation: reads from the snapshot taken at invoke plus the transaction's
/// own appends; first committer wins on the keys it appends to.
fn snapshot_commit(
    data: &mut std::collections::HashMap<u64, Vec<i64>>,
    mops: &[Mop],
    snap: &[(u64, usize)],
    out: &mut impl Write,
    index: u64,
    process: u64,
) -> std::io::Result<()> {
    let at = |k: u64| snap.iter().find(|(s, _)| *s == k).map_or(0, |(_, n)| *n);
    let mut own: Vec<(u64, i64)> = Vec::new();
    let mut reads = Vec::new();
    for &(append, k, e) in mops {
        if append {
            own.push((k, e));
        } else {
            let mut l = data.get(&k).map_or(&[][..], |l| &l[..at(k)]).to_vec();
            l.extend(own.iter().filter(|(ok, _)| *ok == k).map(|(_, e)| *e));
            reads.push(l);
        }
    }
    if own
        .iter()
        .any(|&(k, _)| data.get(&k).map_or(0, Vec::len) != at(k))
    {
        return line(out, index, process, "fail", mops, None);
    }
    for (k, e) in own {
        data.entry(k).or_default().push(e);
    }
    line(out, index, process, "ok", mops, Some(&reads))
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

fn child(path: &Path, model: TxnModel) {
    let t = Instant::now();
    let history = read_txn_history_file(path, HistoryFormat::Auto).expect("generated history");
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut options = TxnCheckOptions::new(model);
    options.timeout = Some(std::time::Duration::from_secs(120));
    let report = check_txn(&history, &options);
    let check_s = t.elapsed().as_secs_f64();
    let peak = kvlab_checker::budget::peak_resident_bytes().unwrap_or(0);
    if report.verdict != kvlab_checker::Verdict::Valid {
        // The first lines: verdict and counts.
        let text = report.to_string();
        for l in text.lines().take(3) {
            eprintln!("{l}");
        }
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
        let model = args.get(2).and_then(|m| TxnModel::from_name(m));
        child(
            Path::new(&args[1]),
            model.unwrap_or(TxnModel::StrictSerializable),
        );
        return;
    }
    let si = args.iter().any(|a| a == "si");
    let models: &[TxnModel] = if si {
        &[TxnModel::Serializable, TxnModel::SnapshotIsolation]
    } else {
        &[TxnModel::StrictSerializable]
    };
    let sizes: Vec<usize> = if args.iter().all(|a| a.parse::<usize>().is_err()) {
        vec![10_000, 100_000, 1_000_000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "{:>9} {:>8} {:>7} {:>8} {:>12} {:>13} {:>9} {:>8} {:>10} model",
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
        generate(size, 42, si, &mut out).expect("write");
        out.flush().expect("flush");
        drop(out);
        let mb = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1e6;
        for model in models {
            let exe = std::env::current_exe().expect("this bench");
            let output = Command::new(exe)
                .arg("--child")
                .arg(&path)
                .arg(model.name())
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
                "{:>9} {mb:>8.1} {read_s:>7.2} {check_s:>8.2} {:>12.0} {:>13.0} {peak_mb:>9.0} {:>8} {:>10} {model}",
                txns as u64,
                txns / check_s,
                txns / (read_s + check_s),
                f[4],
                f[5]
            );
        }
    }
}
