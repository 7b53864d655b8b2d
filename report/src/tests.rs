//! Tests of whole run directories: synthetic runs rendered and compared.
use crate::*;
use std::fmt::Write as _;

/// A deterministic xorshift generator for synthetic histories.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const PARTITION_NS: (u64, u64) = (3_000_000_000, 6_000_000_000);
const CRASH_NS: (u64, u64) = (5_000_000_000, 7_000_000_000);
const LIVENESS_START_NS: u64 = 8_000_000_000;
const CLIENT_TIMEOUT_NS: u64 = 1_000_000_000;

/// Writes a history of `clients` concurrent clients over `run_ns`: ~2 ms reads and
/// writes and some cas, slow or timing out during the partition, fast failures during
/// the crash, and one operation left open at the end.
fn write_history(dir: &Path, clients: u64, run_ns: u64, seed: u64) -> usize {
    let mut rng = Xorshift(seed.wrapping_mul(2).wrapping_add(1));
    // (time, process, line) of every event, sorted by time at the end.
    let mut events: Vec<(u64, String)> = Vec::new();
    let mut ops = 0;
    for client in 0..clients {
        let mut process = client;
        let mut t = rng.next() % 2_000_000;
        while t < run_ns {
            let f = match rng.next() % 10 {
                0..=4 => "read",
                5..=7 => "write",
                _ => "cas",
            };
            let value = match f {
                "read" => "null".to_string(),
                "write" => (rng.next() % 100).to_string(),
                _ => format!("[{},{}]", rng.next() % 100, rng.next() % 100),
            };
            events.push((
                t,
                format!(
                    r#""process":{process},"type":"invoke","f":"{f}","key":"k{}","value":{value}"#,
                    client % 3
                ),
            ));
            ops += 1;
            let in_partition = t >= PARTITION_NS.0 && t < PARTITION_NS.1;
            let in_crash = t >= CRASH_NS.0 && t < CRASH_NS.1;
            let base_ns = (1_000_000.0 * (0.6 + 2.5 * rng.unit().powi(3) * 4.0)) as u64;
            let (kind, latency_ns) = if in_partition && rng.unit() < 0.35 {
                ("info", CLIENT_TIMEOUT_NS)
            } else if in_crash && rng.unit() < 0.3 {
                ("fail", 300_000 + rng.next() % 400_000)
            } else if in_partition {
                ("ok", base_ns * 20 + rng.next() % 80_000_000)
            } else {
                ("ok", base_ns)
            };
            let done = t + latency_ns;
            if done >= run_ns + 500_000_000 {
                break; // left open: the history ends before it completes
            }
            events.push((
                done,
                format!(
                    r#""process":{process},"type":"{kind}","f":"{f}","key":"k{}","value":{value}"#,
                    client % 3
                ),
            ));
            if kind == "info" {
                process += clients;
            }
            t = done + rng.next() % 3_000_000;
        }
    }
    events.sort_by_key(|e| e.0);
    let mut text = String::new();
    for (index, (time_ns, rest)) in events.iter().enumerate() {
        let _ = writeln!(text, r#"{{"index":{index},"time_ns":{time_ns},{rest}}}"#);
    }
    // One operation that never completes.
    let _ = writeln!(
        text,
        r#"{{"index":{},"time_ns":{},"process":999,"type":"invoke","f":"write","key":"k1","value":7}}"#,
        events.len(),
        run_ns - 200_000_000
    );
    std::fs::write(dir.join("history.jsonl"), text).expect("write history");
    ops + 1
}

fn write_events(dir: &Path, run_ns: u64) {
    let lines = [
        r#"{"time_ns":0,"source":"runner","kind":"phase","phase":"safety"}"#.to_string(),
        format!(
            r#"{{"time_ns":{},"source":"nemesis","kind":"fault_start","fault_id":1,"fault":"partition","detail":"[n1 n2] | [n3 n4 n5]"}}"#,
            PARTITION_NS.0
        ),
        format!(
            r#"{{"time_ns":{},"source":"node","node":3,"kind":"leader_elected","group":0,"term":4}}"#,
            PARTITION_NS.0 + 400_000_000
        ),
        format!(
            r#"{{"time_ns":{},"source":"nemesis","kind":"fault_start","fault_id":2,"fault":"crash","node":2,"detail":"kill -9"}}"#,
            CRASH_NS.0
        ),
        format!(
            r#"{{"time_ns":{},"source":"nemesis","kind":"fault_end","fault_id":1,"fault":"partition","detail":"healed"}}"#,
            PARTITION_NS.1
        ),
        format!(
            r#"{{"time_ns":{},"source":"node","node":1,"kind":"leader_elected","group":0,"term":5}}"#,
            PARTITION_NS.1 + 300_000_000
        ),
        format!(
            r#"{{"time_ns":{},"source":"nemesis","kind":"fault_end","fault_id":2,"fault":"crash","node":2,"detail":"restarted"}}"#,
            CRASH_NS.1
        ),
        format!(
            r#"{{"time_ns":{LIVENESS_START_NS},"source":"runner","kind":"phase","phase":"liveness"}}"#
        ),
        format!(
            r#"{{"time_ns":{},"source":"runner","kind":"warning","detail":"client 4 <slow>"}}"#,
            run_ns - 1
        ),
    ];
    std::fs::write(dir.join("events.jsonl"), lines.join("\n") + "\n").expect("write events");
}

/// Writes a summary consistent with the history already in `dir`.
fn write_summary(dir: &Path, experiment: &str, transport: &str, seed: u64, verdict: &str) {
    let ops = data::read_history(&dir.join("history.jsonl")).expect("synthetic history");
    let count = |o: data::Outcome| ops.iter().filter(|op| op.outcome == o).count();
    let (ok, fail, info) = (
        count(data::Outcome::Ok),
        count(data::Outcome::Fail),
        count(data::Outcome::Info),
    );
    let summary = serde_json::json!({
        "experiment": experiment,
        "run_id": format!("{transport}-seed{seed}"),
        "seed": seed,
        "system": "kvlab-raft",
        "backend": "sim",
        "transport": transport,
        "nodes": 5,
        "duration_s": 10.0,
        "ops": {"total": ops.len(), "ok": ok, "fail": fail, "info": info, "dropped_saturated": 3},
        "throughput_ok_per_s": 370.0 + seed as f64,
        "latency_ms": {
            "all": {"count": 3700, "p50": 2.1, "p90": 30.5, "p99": 88.0, "max": 95.0},
            "read": {"count": 1800, "p50": 1.9, "p90": 28.0, "p99": 80.0, "max": 90.0},
            "write": {"count": 1300, "p50": 2.3, "p90": 31.0, "p99": 89.0, "max": 95.0},
            "cas": {"count": 600, "p50": 2.4, "p90": 33.0, "p99": 90.0, "max": 94.0}
        },
        "faults": {"injected": 2, "by_kind": {"partition": 1, "crash": 1}},
        "node_events": {"leader_elected": 2},
        "liveness": {"ok": true, "converged_after_ms": 412},
        "checker": {"verdict": verdict, "invalid_keys": if verdict == "invalid" { vec!["k1"] } else { vec![] }, "unknown_keys": [], "elapsed_ms": 35},
        "sim": {"steps": 123456, "messages_dropped": 77},
        "measured": ["kv", "raft-invariants"],
        "wall_time_s": 1.25
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).expect("json"),
    )
    .expect("write summary");
    let meta = serde_json::json!({"commit": "c3b3b80", "seed": seed, "backend": "sim", "transport": transport, "versions": {"rustc": "1.90"}});
    std::fs::write(dir.join("meta.json"), meta.to_string()).expect("write meta");
    std::fs::write(dir.join("spec.toml"), "name = \"demo\"\n").expect("write spec");
}

/// A complete synthetic run directory under `parent/<name>`.
fn synthetic_run(parent: &Path, name: &str, transport: &str, seed: u64, verdict: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let run_ns = 10_000_000_000;
    write_history(&dir, 8, run_ns, seed);
    write_events(&dir, run_ns);
    write_summary(
        &dir,
        "register-partition <script>alert(1)</script>",
        transport,
        seed,
        verdict,
    );
    dir
}

/// A synthetic SWIM-only run under `parent/<name>`, as `system = "swim"` writes it: an
/// empty history, member events and crashes in events.jsonl, and a summary whose
/// `measured` is `["swim"]` and whose KV numbers are the zeros of no workload.
fn synthetic_swim_run(parent: &Path, name: &str, members: u32, label: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("history.jsonl"), "").expect("write history");
    let events = [
        r#"{"time_ns":0,"source":"runner","kind":"phase","phase":"safety"}"#,
        r#"{"time_ns":2000000000,"source":"nemesis","kind":"fault_start","fault_id":1,"fault":"crash","node":3,"detail":"n3 crashed"}"#,
        r#"{"time_ns":3500000000,"source":"node","node":1,"kind":"member_suspect","member":3,"incarnation":0,"from":1}"#,
        r#"{"time_ns":6000000000,"source":"node","node":1,"kind":"member_dead","member":3,"incarnation":0,"from":1}"#,
        r#"{"time_ns":7000000000,"source":"nemesis","kind":"fault_end","fault_id":1,"fault":"crash","node":3,"detail":"restarted"}"#,
        r#"{"time_ns":9000000000,"source":"runner","kind":"phase","phase":"liveness"}"#,
    ];
    std::fs::write(dir.join("events.jsonl"), events.join("\n") + "\n").expect("write events");
    let stats = |mean: f64| serde_json::json!({"count": 1, "mean": mean, "p50": mean, "p99": mean, "max": mean});
    let summary = serde_json::json!({
        "experiment": "swim-scale",
        "label": label,
        "run_id": name,
        "seed": 1,
        "system": "swim",
        "backend": "sim",
        "transport": "sim",
        "nodes": members,
        "measured": ["swim"],
        "duration_s": 10.0,
        "verdict": "valid",
        "ops": {"total": 0, "ok": 0, "fail": 0, "info": 0, "dropped_saturated": 0},
        "throughput_ok_per_s": 0.0,
        "latency_ms": {"all": {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}},
        "faults": {"injected": 1, "by_kind": {"crash": 1}},
        "liveness": {"ok": true},
        "checker": {"verdict": "not-applicable", "reason": "system = \"swim\" runs no KV workload"},
        "swim": {
            "members": members,
            "crashes": 1,
            "first_suspicion_s": stats(1.5),
            "first_dead_s": stats(4.0),
            "dead_everywhere_s": stats(4.0 + f64::from(members).log10()),
            "rejoin_everywhere_s": stats(1.0),
            "expected_first_detection_s": 1.582,
            "false_positives": 0,
            "false_suspicions": 2,
            "refutations": 2,
            "load": {"messages_per_member_per_s": 3.1, "bytes_per_member_per_s": 420.0},
            "crash_records": [{"member": 3, "crashed_at_s": 2.0, "first_suspicion_s": 1.5, "first_dead_s": 4.0, "dead_everywhere_s": 4.5}],
            "false_positive_records": [],
            "checks": [{"name": "max_false_positives", "bound": 0.0, "value": 0.0, "ok": true}],
            "ok": true
        },
        "wall_time_s": 0.5
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).expect("json"),
    )
    .expect("write summary");
    dir
}

/// The figure files of a KV run.
const KV_PLOTS: [&str; 6] = [
    "latency.png",
    "latency.svg",
    "throughput.png",
    "throughput.svg",
    "latency-cdf.png",
    "latency-cdf.svg",
];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const PNG_MAGIC: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

#[test]
fn run_report_writes_every_plot_as_png_and_svg_and_the_page() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 42, "valid");
    let rendered = render_run(&dir).expect("render");
    assert_eq!(rendered.report_html, dir.join("report.html"));
    for stem in ["latency", "throughput", "latency-cdf"] {
        let png = dir.join("plots").join(format!("{stem}.png"));
        let svg = dir.join("plots").join(format!("{stem}.svg"));
        assert!(rendered.plots.contains(&png) && rendered.plots.contains(&svg));
        let bytes = std::fs::read(&png).expect("png");
        assert!(bytes.len() > 1_000, "{stem}.png is {} bytes", bytes.len());
        assert_eq!(bytes[..8], PNG_MAGIC, "{stem}.png is not a PNG");
        assert!(read(&svg).starts_with("<svg"), "{stem}.svg is not an SVG");
    }
    let latency_svg = read(&dir.join("plots/latency.svg"));
    assert!(
        latency_svg.contains("partition"),
        "fault name missing from the latency plot"
    );
    assert!(latency_svg.contains("crash"));
    assert!(latency_svg.contains("liveness"));
    assert!(read(&dir.join("plots/throughput.svg")).contains("partition"));
    assert!(!rendered.downsampled);
    assert_eq!(rendered.latency_points_drawn, rendered.ops_total);
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
}

#[test]
fn report_shows_verdict_numbers_faults_and_reproduce_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "udp", 7, "valid");
    render_run(&dir).expect("render");
    let html = read(&dir.join("report.html"));
    assert!(html.contains("class=\"banner good\""));
    assert!(html.contains(">VALID<"));
    assert!(html.contains("liveness: converged"));
    assert!(html.contains(&format!(
        "kvlab run {} --seed 7",
        dir.join("spec.toml").display()
    )));
    assert!(html.contains("git checkout c3b3b80"));
    assert!(html.contains("src=\"plots/latency.png\""));
    assert!(html.contains("src=\"plots/throughput.png\""));
    assert!(html.contains("[n1 n2] | [n3 n4 n5] → healed"));
    assert!(html.contains("leader_elected"));
    assert!(html.contains("n1: 1, n3: 1"));
    assert!(html.contains("88.0"), "p99 of all from the summary");
    let ok = data::read_history(&dir.join("history.jsonl"))
        .expect("history")
        .iter()
        .filter(|op| op.outcome == data::Outcome::Ok)
        .count();
    assert!(html.contains(&format!(
        "<td class=\"num\">{}</td>",
        html::fmt_count(ok as u64)
    )));
    assert!(html.contains("How to read this report"));
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
}

#[test]
fn report_escapes_markup_from_the_run_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 1, "valid");
    render_run(&dir).expect("render");
    let html = read(&dir.join("report.html"));
    assert!(!html.contains("<script>alert(1)</script>"));
    assert!(html.contains("register-partition &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("client 4 &lt;slow&gt;"));
}

#[test]
fn invalid_run_is_red_and_links_the_visualisation_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 3, "invalid");
    std::fs::write(dir.join("linearizability.html"), "<html></html>").expect("write");
    render_run(&dir).expect("render");
    let html = read(&dir.join("report.html"));
    assert!(html.contains("class=\"banner bad\""));
    assert!(html.contains(">INVALID<"));
    assert!(html.contains("href=\"linearizability.html\""));
    assert!(html.contains("Keys with a violation: <code>k1</code>"));
    assert!(html.contains("visualisation</a> of key <code>k1</code>"));
}

#[test]
fn unknown_verdict_is_amber_and_not_a_pass() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 3, "unknown");
    render_run(&dir).expect("render");
    let html = read(&dir.join("report.html"));
    assert!(html.contains("class=\"banner warn\""));
    assert!(html.contains(">UNKNOWN<"));
    assert!(html.contains("<b>not</b> a pass"));
}

#[test]
fn malformed_history_line_is_an_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 5, "valid");
    let history = read(&dir.join("history.jsonl"));
    let mut lines: Vec<&str> = history.lines().collect();
    lines[2] = r#"{"index":2,"time_ns":"soon"}"#;
    std::fs::write(dir.join("history.jsonl"), lines.join("\n")).expect("write");
    let err = render_run(&dir).expect_err("a malformed line must be an error");
    assert!(
        matches!(&err, ReportError::History { path, .. } if path.ends_with("history.jsonl")),
        "{err:?}"
    );
    assert!(err.to_string().contains("history.jsonl: line 3: "), "{err}");
}

#[test]
fn completion_without_invoke_is_an_error_naming_the_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("history.jsonl"),
        concat!(
            r#"{"index":0,"time_ns":10,"process":1,"type":"invoke","f":"read","key":"a","value":null}"#, "\n",
            r#"{"index":1,"time_ns":20,"process":1,"type":"ok","f":"read","key":"a","value":null}"#, "\n",
            "\n",
            r#"{"index":2,"time_ns":30,"process":2,"type":"ok","f":"read","key":"a","value":null}"#, "\n",
        ),
    )
    .expect("write");
    let err = render_run(&dir).expect_err("must be an error");
    assert!(matches!(err, ReportError::History { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("line 4: process 2 completes an operation it never invoked"),
        "{err}"
    );
}

#[test]
fn malformed_event_line_is_an_error_naming_the_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 5, "valid");
    let events = read(&dir.join("events.jsonl"))
        + "{\"time_ns\":1,\"source\":\"martians\",\"kind\":\"x\"}\n";
    std::fs::write(dir.join("events.jsonl"), events).expect("write");
    let err = render_run(&dir).expect_err("must be an error");
    assert!(
        matches!(err, ReportError::BadLine { line: 10, .. }),
        "{err:?}"
    );
}

#[test]
fn summary_disagreeing_with_the_history_is_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 5, "valid");
    std::fs::write(dir.join("summary.json"), r#"{"ops":{"total":3}}"#).expect("write");
    let rendered = render_run(&dir).expect("render");
    assert!(
        rendered
            .warnings
            .iter()
            .any(|w| w.contains("summary.json counts 3 operations")),
        "{:?}",
        rendered.warnings
    );
    assert!(read(&rendered.report_html).contains("summary.json counts 3 operations"));
}

#[test]
fn malformed_summary_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 5, "valid");
    std::fs::write(dir.join("summary.json"), "{\"ops\": ").expect("write");
    let err = render_run(&dir).expect_err("must be an error");
    assert!(
        matches!(&err, ReportError::BadJson { path, .. } if path.ends_with("summary.json")),
        "{err:?}"
    );
}

#[test]
fn missing_summary_fields_and_files_render_without_panicking() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for summary in [
        None,
        Some("{}"),
        Some("[1,2]"),
        Some(r#"{"ops":"many","checker":{"verdict":7},"latency_ms":{"all":null}}"#),
    ] {
        let dir = tmp
            .path()
            .join(format!("run-{}", summary.map_or(0, str::len)));
        std::fs::create_dir_all(&dir).expect("mkdir");
        write_history(&dir, 3, 2_000_000_000, 9);
        if let Some(summary) = summary {
            std::fs::write(dir.join("summary.json"), summary).expect("write");
        }
        let rendered = render_run(&dir).unwrap_or_else(|e| panic!("{summary:?}: {e}"));
        let html = read(&rendered.report_html);
        assert!(html.contains("class=\"banner warn\""), "{summary:?}");
        assert!(html.contains("computed from history.jsonl"), "{summary:?}");
        assert!(rendered.warnings.iter().any(|w| w.contains("events.jsonl")));
    }
}

#[test]
fn empty_history_still_renders() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("history.jsonl"), "").expect("write");
    let rendered = render_run(tmp.path()).expect("render");
    assert_eq!(rendered.ops_total, 0);
    assert!(read(&rendered.report_html).contains("no ok operations"));
}

#[test]
fn missing_history_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = render_run(tmp.path()).expect_err("must be an error");
    assert!(
        matches!(&err, ReportError::MissingFile { path } if path.ends_with("history.jsonl")),
        "{err:?}"
    );
}

#[test]
fn unpaired_fault_events_become_warnings_and_open_faults_last_to_the_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_history(&dir, 2, 2_000_000_000, 4);
    std::fs::write(
        dir.join("events.jsonl"),
        concat!(
            r#"{"time_ns":100,"source":"nemesis","kind":"fault_end","fault_id":9,"fault":"pause"}"#, "\n",
            r#"{"time_ns":500000000,"source":"nemesis","kind":"fault_start","fault_id":3,"fault":"clock_drift","detail":"+200ms"}"#, "\n",
        ),
    )
    .expect("write");
    let rendered = render_run(&dir).expect("render");
    assert!(
        rendered
            .warnings
            .iter()
            .any(|w| w.contains("fault_id 9") && w.contains("no matching fault_start"))
    );
    let html = read(&rendered.report_html);
    assert!(html.contains("never healed"));
    assert!(read(&dir.join("plots/latency.svg")).contains("clock_drift"));
}

#[test]
fn long_history_is_downsampled_within_the_bound_and_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ops = write_history(&dir, 60, 10_000_000_000, 11);
    assert!(ops > MAX_LATENCY_POINTS_DRAWN, "only {ops} ops");
    let rendered = render_run(&dir).expect("render");
    assert_eq!(rendered.ops_total, ops);
    assert!(rendered.downsampled);
    assert!(rendered.latency_points_drawn <= MAX_LATENCY_POINTS_DRAWN);
    assert!(read(&rendered.report_html).contains("Downsampled:"));
    assert!(read(&dir.join("plots/latency.svg")).contains("Downsampled"));
}

#[test]
fn runs_render_in_parallel_threads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = (0..4)
        .map(|seed| synthetic_run(tmp.path(), &format!("seed-{seed}"), "mem", seed, "valid"))
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| scope.spawn(move || render_run(d)))
            .collect();
        for h in handles {
            h.join().expect("no panic").expect("render");
        }
    });
    for d in &dirs {
        assert!(d.join("plots/latency.png").is_file());
    }
}

#[test]
fn comparison_of_two_runs_writes_bars_and_a_linked_table() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = synthetic_run(tmp.path(), "mem-42", "mem", 42, "valid");
    let b = synthetic_run(tmp.path(), "udp-42", "udp", 42, "invalid");
    let out = tmp.path().join("compare");
    let page = render_comparison(&[a, b], &out).expect("compare");
    assert_eq!(page, out.join("compare.html"));
    let png = std::fs::read(out.join("comparison.png")).expect("png");
    assert_eq!(png[..8], PNG_MAGIC);
    let svg = read(&out.join("comparison.svg"));
    assert!(svg.contains("udp") && svg.contains("seed 42") && svg.contains("412"));
    let html = read(&page);
    assert!(html.contains("href=\"../mem-42/report.html\""), "{html}");
    assert!(html.contains("href=\"../udp-42/report.html\""));
    assert!(html.contains(">invalid<") && html.contains(">valid<"));
    assert!(html.contains("src=\"comparison.png\""));
}

#[test]
fn comparison_fills_missing_summary_numbers_from_the_history() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("bare");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_history(&dir, 3, 2_000_000_000, 9);
    let page = render_comparison(&[dir], &tmp.path().join("out")).expect("compare");
    let html = read(&page);
    assert!(html.contains("computed from that run"));
    assert!(
        !html.contains("<td class=\"num\">—</td><td class=\"num\">—</td>"),
        "numbers left blank: {html}"
    );
}

#[test]
fn comparison_of_no_runs_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        render_comparison(&[], tmp.path()),
        Err(ReportError::NoRuns)
    ));
}

#[test]
fn swim_only_run_draws_no_kv_plot_and_the_report_has_no_kv_section() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_swim_run(tmp.path(), "swim-1", 12, "lifeguard on");
    let rendered = render_run(&dir).expect("render");
    for f in KV_PLOTS {
        assert!(
            !dir.join("plots").join(f).exists(),
            "{f} drawn for a SWIM run"
        );
    }
    for f in ["swim-detection-cdf.png", "swim-timeline.svg"] {
        assert!(rendered.plots.contains(&dir.join("plots").join(f)), "{f}");
    }
    assert_eq!((rendered.ops_total, rendered.latency_points_drawn), (0, 0));
    let html = read(&rendered.report_html);
    for kv in [
        "plots/latency",
        "plots/throughput",
        "latency of ok operations",
        "operations by outcome",
        "linearizability checker verdict",
        "liveness:",
        "no ok operations",
        "history.jsonl</code> as an <i>invoke</i>",
    ] {
        assert!(!html.contains(kv), "a SWIM-only report shows {kv:?}");
    }
    assert!(html.contains("SWIM failure detection"));
    assert!(html.contains("src=\"plots/swim-detection-cdf.png\""));
    assert!(html.contains("class=\"banner good\"") && html.contains(">PASSED<"));
    assert!(html.contains("<tr><th>measured</th><td>swim</td></tr>"));
    assert!(
        html.contains("SWIM members alone"),
        "how to read a SWIM run"
    );
}

#[test]
fn a_summary_without_a_measured_list_is_a_swim_run_when_it_has_a_swim_section() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_swim_run(tmp.path(), "old", 5, "old");
    let path = dir.join("summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&read(&path)).expect("json");
    summary.as_object_mut().expect("object").remove("measured");
    std::fs::write(&path, summary.to_string()).expect("write");
    let rendered = render_run(&dir).expect("render");
    assert!(!dir.join("plots/latency.png").exists());
    assert!(read(&rendered.report_html).contains("SWIM failure detection"));
}

#[test]
fn kv_run_that_checked_raft_invariants_says_whether_they_held() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = synthetic_run(tmp.path(), "run-1", "mem", 8, "valid");
    render_run(&dir).expect("render");
    let html = read(&dir.join("report.html"));
    assert!(html.contains("No Raft safety invariant broke"));
    assert!(html.contains("<tr><th>measured</th><td>kv, raft-invariants</td></tr>"));

    let path = dir.join("summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&read(&path)).expect("json");
    summary["invariant_violation"] = "election_safety at n2: two leaders in term 4".into();
    std::fs::write(&path, summary.to_string()).expect("write");
    render_run(&dir).expect("render");
    let html = read(&dir.join("report.html"));
    assert!(html.contains("class=\"banner bad\"") && html.contains(">INVARIANT VIOLATED<"));
    assert!(html.contains("two leaders in term 4"));
}

#[test]
fn comparison_of_swim_runs_shows_no_kv_numbers_and_counts_members_in_whole_numbers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = [10, 100, 1000]
        .into_iter()
        .map(|n| synthetic_swim_run(tmp.path(), &format!("n{n}"), n, &format!("n = {n}")))
        .collect();
    let out = tmp.path().join("compare");
    let page = render_comparison(&dirs, &out).expect("compare");
    let html = read(&page);
    for kv in [
        "ok ops/s",
        "p50 (ms)",
        "src=\"comparison.png\"",
        ">0.0<",
        ">0.00<",
        ">valid<",
    ] {
        assert!(!html.contains(kv), "a SWIM comparison shows {kv:?}");
    }
    assert!(!out.join("comparison.png").exists());
    assert!(html.contains(">passed<") && html.contains("<td>swim</td>"));
    assert!(
        html.contains("src=\"swim-comparison.png\"") && html.contains("src=\"swim-scale.png\"")
    );
    let scale = read(&out.join("swim-scale.svg"));
    for n in ["10", "100", "1000"] {
        assert!(
            scale.contains(&format!(">\n{n}\n</text>")),
            "no tick {n} on the members axis"
        );
    }
    for n in ["10.0", "100.0", "1000.0"] {
        assert!(
            !scale.contains(&format!(">\n{n}\n</text>")),
            "tick {n} on the members axis"
        );
    }
}

#[test]
fn comparison_of_a_kv_run_and_a_swim_run_compares_kv_numbers_of_the_kv_run_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kv = synthetic_run(tmp.path(), "kv", "mem", 42, "valid");
    let swim = synthetic_swim_run(tmp.path(), "swim", 12, "swim");
    let out = tmp.path().join("compare");
    let html = read(&render_comparison(&[kv, swim], &out).expect("compare"));
    assert!(out.join("comparison.png").is_file() && out.join("swim-comparison.png").is_file());
    assert!(html.contains("ok ops/s") && html.contains("412"));
    assert!(html.contains("no KV workload: not measured"));
    let svg = read(&out.join("comparison.svg"));
    assert!(
        svg.contains("#1 kvlab-raft") && !svg.contains("#2"),
        "the SWIM run got KV bars"
    );
}
