//! The `kvlab` binary's exit statuses: `check` on valid, invalid and malformed
//! histories, `run` on a bad spec and bad arguments.

use std::path::Path;
use std::process::{Command, Output};

fn kvlab(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const VALID: &str = r#"{"index":0,"time_ns":10,"process":0,"type":"invoke","f":"write","key":"k1","value":1}
{"index":1,"time_ns":20,"process":0,"type":"ok","f":"write","key":"k1","value":1}
{"index":2,"time_ns":30,"process":1,"type":"invoke","f":"read","key":"k1","value":null}
{"index":3,"time_ns":40,"process":1,"type":"ok","f":"read","key":"k1","value":1}
"#;

#[test]
fn check_valid_history_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.jsonl", VALID);
    let out = kvlab(&["check", &h], tmp.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn check_invalid_history_exits_1_and_writes_html() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(
        tmp.path(),
        "h.jsonl",
        &VALID.replace(
            r#""ok","f":"read","key":"k1","value":1"#,
            r#""ok","f":"read","key":"k1","value":5"#,
        ),
    );
    let html = tmp.path().join("viz.html");
    let out = kvlab(
        &[
            "check",
            &h,
            "--model",
            "kv",
            "--html",
            &html.display().to_string(),
            "--json",
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "invalid");
    assert_eq!(report["invalid_keys"][0], "k1");
    assert!(html.is_file());
}

#[test]
fn check_malformed_history_exits_2_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(
        tmp.path(),
        "h.jsonl",
        &format!("{VALID}{{\"index\":4, oops\n"),
    );
    let out = kvlab(&["check", &h], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains('5'), "the error should name line 5: {err}");
}

#[test]
fn check_unrecognised_format_or_model_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.txt", "hello world\n");
    let out = kvlab(&["check", &h], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("JSONL"),
        "{out:?}"
    );
    let h = write(tmp.path(), "h.jsonl", VALID);
    let out = kvlab(&["check", &h, "--model", "sql"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = kvlab(&["check", &h, "--format", "xml"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = kvlab(&["check", &h, "--timeout-s", "0"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn run_with_a_bad_spec_exits_2_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let s = write(
        tmp.path(),
        "bad.toml",
        "name = \"x\"\nsystem = \"single\"\nnodes = 0\n",
    );
    let out = kvlab(&["run", &s], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nodes`"));
    let s = write(tmp.path(), "syntax.toml", "name = \"x\"\nsystem = single\n");
    let out = kvlab(&["run", &s], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("syntax.toml:2:"),
        "{out:?}"
    );
}

#[test]
fn run_with_bad_arguments_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let s = write(tmp.path(), "ok.toml", "name = \"x\"\nsystem = \"single\"\n");
    for args in [
        vec!["run", s.as_str(), "--seeds", "5..3"],
        vec!["run", s.as_str(), "--seeds", "x"],
        vec!["run", s.as_str(), "--seed", "-1"],
        vec!["run", s.as_str(), "--seed", "1", "--seeds", "1..2"],
        vec!["run", s.as_str(), "--seed", "18446744073709551615"],
        vec!["run"],
    ] {
        let out = kvlab(&args, tmp.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

#[test]
fn run_sweep_writes_one_dir_per_seed_and_tallies() {
    let tmp = tempfile::tempdir().unwrap();
    let s = write(
        tmp.path(),
        "sweep.toml",
        "name = \"sweep\"\nsystem = \"async-primary\"\nnodes = 3\n[time]\nduration_s = 2\nliveness_s = 1\n[workload]\nclients = 4\nkeys = 2\n[nemesis]\nfaults = [\"crash\"]\nstart_after_s = 0.5\ninterval_s = 0.5\nfault_duration_s = 0.3\n",
    );
    let out = kvlab(&["run", &s, "--seeds", "1..3"], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for seed in 1..=3 {
        assert!(
            tmp.path()
                .join(format!("results/sweep/seed-{seed}/history.jsonl"))
                .is_file()
        );
        assert!(stdout.contains(&format!("seed {seed}: ")), "{stdout}");
    }
    // Lines come in seed order, then the tally.
    let p1 = stdout.find("seed 1: ").unwrap();
    let p3 = stdout.find("seed 3: ").unwrap();
    assert!(p1 < p3);
    assert!(stdout.contains("3 seeds: "), "{stdout}");
    // The first seed always gets a report.
    assert!(
        tmp.path()
            .join("results/sweep/seed-1/report.html")
            .is_file()
    );
    let code = out.status.code().unwrap();
    if stdout.contains("INVALID") {
        assert_eq!(code, 1, "{stdout}");
        assert!(stdout.contains("reproduce: kvlab run"), "{stdout}");
    } else {
        assert_eq!(code, 0, "{stdout}");
    }
}

#[test]
fn check_undecidable_history_exits_3() {
    // More operations on one key than the search engines search (MAX_OPS_PER_KEY): the
    // key is undecided, so the answer is unknown, never valid. (The reads-from engine,
    // which the default race runs first, would decide these unique writes: valid.)
    let tmp = tempfile::tempdir().unwrap();
    let n = kvlab_checker::MAX_OPS_PER_KEY + 1;
    let mut text = String::new();
    for i in 0..n {
        let t = i as u64 * 10;
        text.push_str(&format!(
            "{{\"index\":{},\"time_ns\":{t},\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"k0\",\"value\":{i}}}\n",
            2 * i
        ));
        text.push_str(&format!(
            "{{\"index\":{},\"time_ns\":{},\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"key\":\"k0\",\"value\":{i}}}\n",
            2 * i + 1,
            t + 5
        ));
    }
    let h = write(tmp.path(), "big.jsonl", &text);
    let out = kvlab(&["check", &h, "--json", "--engine", "kvlab"], tmp.path());
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "unknown");
}

#[test]
fn plot_redraws_runs_and_compares_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = write(
        tmp.path(),
        "p.toml",
        "name = \"p\"\nsystem = \"single\"\nnodes = 3\n[time]\nduration_s = 1\nliveness_s = 1\n[workload]\nclients = 2\n",
    );
    for seed in ["1", "2"] {
        let out = kvlab(&["run", &s, "--seed", seed], tmp.path());
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let out = kvlab(
        &[
            "plot",
            "results/p/seed-1",
            "results/p/seed-2",
            "--out",
            "cmp",
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(tmp.path().join("results/p/seed-1/report.html").is_file());
    assert!(tmp.path().join("cmp").is_dir());
    let out = kvlab(&["plot", "nowhere"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn check_history_without_operations_exits_2_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("empty.jsonl", "", "auto"),
        ("empty.edn", "", "edn"),
        ("empty.log", "", "jepsen-log"),
        ("empty.txt", "", "porcupine-kv"),
        ("blank.jsonl", "\n   \n\t\n", "auto"),
        ("blank.jsonl", "\n   \n\t\n", "jsonl"),
        ("comments.edn", ";; no ops yet\n; none at all\n", "auto"),
        ("vector.edn", "[\n ; the cluster never started\n]\n", "edn"),
        (
            "nemesis.edn",
            "[{:process :nemesis, :type :info, :f :start, :value nil}]\n",
            "auto",
        ),
        (
            "noise.log",
            "INFO  jepsen.core - starting\nINFO  jepsen.util - :nemesis\t:info\t:start\tnil\n",
            "jepsen-log",
        ),
        ("kv.txt", "  \n", "porcupine-kv"),
    ];
    for (name, text, format) in cases {
        let h = write(tmp.path(), name, text);
        let out = kvlab(&["check", &h, "--format", format], tmp.path());
        assert_eq!(out.status.code(), Some(2), "{name} as {format}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("no operations in {h}")),
            "{name} as {format}: {err}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("valid"), "{name} as {format}: {stdout}");
    }
}

#[test]
fn check_refuses_a_50_mib_line_naming_the_file_and_line() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("long.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        file.write_all(VALID.lines().next().unwrap().as_bytes())
            .unwrap();
        file.write_all(b"\n{\"index\":1,\"time_ns\":20,\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"key\":\"k1\",\"value\":\"")
            .unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..50 {
            file.write_all(&chunk).unwrap();
        }
        file.write_all(b"\"}\n").unwrap();
    }
    let h = path.display().to_string();
    for format in ["auto", "jsonl"] {
        let out = kvlab(&["check", &h, "--format", format], tmp.path());
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{h}: line 2: longer than 1048576 bytes")),
            "{err}"
        );
    }
    // The limit is the user's to set.
    let small = write(tmp.path(), "h.jsonl", VALID);
    let out = kvlab(&["check", &small, "--max-line-bytes", "64"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1: longer than 64 bytes"),
        "{out:?}"
    );
    let out = kvlab(&["check", &small, "--max-line-bytes", "100"], tmp.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = kvlab(&["check", &small, "--max-line-bytes", "0"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn check_draws_a_progress_line_on_request_and_not_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.jsonl", VALID);
    let out = kvlab(
        &[
            "check",
            &h,
            "--progress",
            "always",
            "--progress-delay-ms",
            "0",
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kvlab check: 2 operations read, 1/1 keys decided"),
        "{err}"
    );
    // stderr is not a terminal here: `auto` draws nothing, and neither does a check
    // shorter than the delay.
    for args in [
        vec!["check", h.as_str()],
        vec!["check", h.as_str(), "--progress", "always"],
    ] {
        let out = kvlab(&args, tmp.path());
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    }
    let out = kvlab(&["check", &h, "--progress", "sometimes"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn check_export_of_a_malformed_history_leaves_no_half_file() {
    let tmp = tempfile::tempdir().unwrap();
    let edn = tmp.path().join("out.edn");
    let edn_arg = edn.display().to_string();
    let h = write(tmp.path(), "h.jsonl", VALID);
    let out = kvlab(&["check", &h, "--export-edn", &edn_arg], tmp.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let back = kvlab(&["check", &edn_arg], tmp.path());
    assert_eq!(back.status.code(), Some(0), "{back:?}");
    let bad = write(tmp.path(), "bad.jsonl", &format!("{VALID}{{oops\n"));
    let out = kvlab(&["check", &bad, "--export-edn", &edn_arg], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!edn.exists());
}

/// A sweep of SWIM variants measures no KV workload: its table prints no ok/s or
/// latency (not 0.0 / 0.00) and says the checks passed rather than calling a history
/// that does not exist valid; its comparison has no KV chart.
#[test]
fn swim_variant_sweep_table_shows_what_the_runs_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let s = write(
        tmp.path(),
        "s.toml",
        "name = \"s\"\nsystem = \"swim\"\nnodes = 5\n[time]\nduration_s = 30\nliveness_s = 20\n\
         [nemesis]\nfaults = [\"crash\"]\nstart_after_s = 10\ninterval_s = 15\nfault_duration_s = 10\n\
         [[variant]]\nlabel = \"n=5\"\n[[variant]]\nlabel = \"n=8\"\nnodes = 8\n",
    );
    let out = kvlab(&["run", &s], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("n=5 · seed 1: PASSED: swim, 5 members"),
        "{stdout}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("variant "))
        .filter(|l| l.starts_with("n=5 ") || l.starts_with("n=8 "))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        assert!(!row.contains("0.0"), "KV numbers in a SWIM row: {row}");
        assert!(row.ends_with("passed"), "{row}");
    }
    let compare = tmp.path().join("results/s/compare.html");
    if compare.is_file() {
        let html = std::fs::read_to_string(compare).unwrap();
        assert!(!html.contains("ok ops/s"));
    }
}
