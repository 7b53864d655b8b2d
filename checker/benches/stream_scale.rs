//! The streaming-input scale case: a generated 10-million-operation, 1,000-key JSONL
//! history (about 1.9 GB, written to a temporary file and removed afterwards, never
//! committed) checked by whole `kvlab check` processes, each timed with its peak RSS.
//!
//! `cargo bench -p kvlab-checker --bench stream_scale` generates the file (in constant
//! memory) and runs `target/release/kvlab check FILE --model kv` on it; build that binary
//! first (`cargo build --release -p kvlab-experiments --bin kvlab`). Settings come from
//! the environment:
//!
//! * `KVLAB_STREAM_OPS` (default 10,000,000), `KVLAB_STREAM_KEYS` (1,000),
//!   `KVLAB_STREAM_CLIENTS` (50), `KVLAB_STREAM_INFO_RATE` (0.001);
//! * `KVLAB_STREAM_BINS`: `:`-separated `kvlab` binaries to compare (default
//!   `target/release/kvlab`), e.g. a copy built from an older commit;
//! * `KVLAB_STREAM_FILE`: where the history goes (default a temporary directory); an
//!   existing file of that name is reused, and kept;
//! * `KVLAB_STREAM_ARGS`: extra arguments for `kvlab check`, space-separated.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{GenSpec, generate_each};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_history(path: &Path, spec: GenSpec) -> std::io::Result<(u64, f64)> {
    let t = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut failed = None;
    let mut lines = 0u64;
    generate_each(spec, &mut |event| {
        if failed.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut out, &event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        match written {
            Ok(()) => lines += 1,
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    out.flush()?;
    Ok((lines, t.elapsed().as_secs_f64()))
}

fn main() {
    let spec = GenSpec {
        seed: 16,
        operations: env_or("KVLAB_STREAM_OPS", 10_000_000usize),
        keys: env_or("KVLAB_STREAM_KEYS", 1_000usize),
        clients: env_or("KVLAB_STREAM_CLIENTS", 50usize),
        info_rate: env_or("KVLAB_STREAM_INFO_RATE", 0.001f64),
        kv_ops: true,
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins: Vec<PathBuf> = match std::env::var("KVLAB_STREAM_BINS") {
        Ok(list) => list.split(':').map(PathBuf::from).collect(),
        Err(_) => vec![workspace.join("target/release/kvlab")],
    };
    let kept = std::env::var("KVLAB_STREAM_FILE").ok().map(PathBuf::from);
    let dir = std::env::temp_dir().join(format!("kvlab-stream-{}", std::process::id()));
    let file = kept.clone().unwrap_or_else(|| dir.join("history.jsonl"));
    if !file.exists() {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("creates the directory");
        }
        let (lines, secs) = write_history(&file, spec).expect("writes the history");
        let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
        println!(
            "generated {} operations on {} keys ({} clients, info rate {}): {lines} lines, {:.2} GB in {secs:.1} s",
            spec.operations,
            spec.keys,
            spec.clients,
            spec.info_rate,
            bytes as f64 / 1e9
        );
    }
    let file_arg = file.to_string_lossy().into_owned();
    let extra = std::env::var("KVLAB_STREAM_ARGS").unwrap_or_default();
    for bin in &bins {
        if !bin.exists() {
            println!("{}: not built", bin.display());
            continue;
        }
        let t = Instant::now();
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(bin)
            .args(["check", &file_arg, "--model", "kv"])
            .args(extra.split_whitespace())
            .output()
            .expect("runs /usr/bin/time");
        let secs = t.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let peak_kib: f64 = stderr
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(f64::NAN);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!(
            "{}: exit {:?} in {secs:.1} s, peak RSS {:.0} MiB\n  {}",
            bin.display(),
            out.status.code(),
            peak_kib / 1024.0,
            stdout.lines().next().unwrap_or("(no output)")
        );
        // The last line is /usr/bin/time's.
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        for line in lines.iter().rev().skip(1).rev().take(5) {
            println!("  stderr: {line}");
        }
    }
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
