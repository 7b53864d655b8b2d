//! `kvlab bench` end to end, short: both clusters start, every cell runs on both and
//! measures something, the table, bench.json and the plot are written, and no server
//! process is left behind.
//!
//! It needs etcd (`$KVLAB_ETCD_BIN`, or `etcd` on PATH: Debian's `etcd-server`). Without
//! one it prints `skipped: …` and passes — unless `KVLAB_REQUIRE_ETCD=1`, which turns a
//! missing etcd into a failure (as the differential test in kvlab-etcd does).

use std::path::PathBuf;
use std::process::Command;

fn etcd_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KVLAB_ETCD_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// Whether a process with this pid still runs (a zombie counts as gone).
fn running(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Pids of processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
            && running(pid)
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn bench_runs_both_systems_end_to_end_and_stops_them() {
    let Some(etcd) = etcd_bin() else {
        assert!(
            std::env::var("KVLAB_REQUIRE_ETCD").as_deref() != Ok("1"),
            "KVLAB_REQUIRE_ETCD=1 but no etcd found (install etcd-server or set KVLAB_ETCD_BIN)"
        );
        eprintln!("skipped: no etcd binary (install Debian's etcd-server or set KVLAB_ETCD_BIN)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let o = Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .args([
            "bench",
            "--clients",
            "1,4",
            "--duration-s",
            "0.5",
            "--warmup-s",
            "0.2",
        ])
        .args(["--rounds", "2", "--keys", "50"])
        .arg("--etcd")
        .arg(&etcd)
        .arg("--out")
        .arg(&out)
        .env("KVLAB_NODE_EXE", env!("CARGO_BIN_EXE_kvlab"))
        .output()
        .expect("run kvlab bench");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "kvlab bench failed:\n{stdout}\n{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    // 2 rounds × 3 ops × 2 client counts × 2 systems.
    assert_eq!(cells.len(), 24, "{json:#}");
    for c in cells {
        assert!(
            c["ok"].as_u64().unwrap() > 0,
            "a cell measured nothing: {c}"
        );
        assert!(c["p99_ms"].as_f64().unwrap() > 0.0, "{c}");
    }
    // Both systems went first once: the rounds alternate.
    assert_eq!(cells[0]["system"], "kvlab");
    let second_round_first = cells.iter().find(|c| c["round"] == 1).unwrap();
    assert_eq!(second_round_first["system"], "etcd");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        assert!(r["ops_ratio"]["median"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["ops_ratio"]["min"].as_f64() <= r["ops_ratio"]["max"].as_f64(),
            "{r}"
        );
        // Serving requests costs each cluster's members CPU time, read from /proc.
        for cpu in ["kvlab_cpu_us_per_op", "etcd_cpu_us_per_op"] {
            assert!(r[cpu].as_f64().unwrap() > 0.0, "{cpu}: {r}");
        }
    }
    for line in ["put        1", "get        4", "cas        4"] {
        assert!(
            stdout.contains(line),
            "no row {line:?} in the table:\n{stdout}"
        );
    }
    for f in ["bench.png", "bench.svg", "table.txt"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // Every server it started is gone: its temporary data dirs named kvlab-bench-*.
    let left = pids_mentioning("kvlab-bench-");
    assert!(left.is_empty(), "server processes left behind: {left:?}");
}

#[test]
fn bench_refuses_bad_options_as_bad_input() {
    let o = Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .args(["bench", "--ops", "put,scan", "--etcd", "/nonexistent"])
        .output()
        .expect("run kvlab bench");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown op \"scan\""));
    let o = Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .args(["bench", "--clients", "0", "--etcd", "/nonexistent"])
        .output()
        .expect("run kvlab bench");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
