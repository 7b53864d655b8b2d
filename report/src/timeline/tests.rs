//! Tests of `timeline.html`: the data the page embeds, read back, against the history and
//! events it was drawn from (read here independently, line by line).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::OP_STRIDE;

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What one operation looks like, from the history's own lines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    process: u64,
    invoke_us: u64,
    complete_us: Option<u64>,
    outcome: String,
    key: Option<String>,
}

/// Writes a history of `clients` clients with about `ops` operations on 5 keys: reads,
/// writes and cas; some fail, some end `info` (the client continues as a new process),
/// one per 4 clients never completes. Times are not multiples of 1 µs on purpose.
fn write_history(dir: &Path, clients: u64, ops: u64, seed: u64) {
    let mut rng = Rng(seed * 2 + 1);
    let mut events: Vec<(u64, String)> = Vec::new();
    let per_client = ops / clients;
    for client in 0..clients {
        let (mut process, mut t) = (client, rng.next() % 3_000_000);
        for n in 0..per_client {
            let key = format!("k{}", rng.next() % 5);
            let (f, value) = match rng.next() % 3 {
                0 => ("read", "null".to_string()),
                1 => ("write", (rng.next() % 1000).to_string()),
                _ => ("cas", format!("[{},{}]", rng.next() % 9, rng.next() % 9)),
            };
            let line = |kind: &str, value: &str| {
                format!(
                    r#""process":{process},"type":"{kind}","f":"{f}","key":"{key}","value":{value},"node":{}"#,
                    1 + client % 3
                )
            };
            events.push((t, line("invoke", &value)));
            if n + 1 == per_client && client % 4 == 0 {
                break; // never completes
            }
            let kind = ["ok", "ok", "ok", "ok", "fail", "info"][(rng.next() % 6) as usize];
            t += 300_123 + rng.next() % 5_000_000;
            let done = if f == "read" && kind == "ok" {
                (rng.next() % 1000).to_string()
            } else {
                value.clone()
            };
            events.push((t, line(kind, &done)));
            if kind == "info" {
                process += clients;
            }
            t += rng.next() % 2_000_777;
        }
    }
    events.sort_by_key(|e| e.0);
    let mut text = String::new();
    for (index, (time_ns, rest)) in events.iter().enumerate() {
        let _ = writeln!(text, r#"{{"index":{index},"time_ns":{time_ns},{rest}}}"#);
    }
    std::fs::write(dir.join("history.jsonl"), text).expect("write history");
}

/// Reads history.jsonl line by line and pairs invokes with completions.
fn expected_ops(dir: &Path) -> Vec<Expected> {
    let text = std::fs::read_to_string(dir.join("history.jsonl")).expect("history");
    let mut ops: Vec<Expected> = Vec::new();
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).expect("history line");
        let process = e["process"].as_u64().expect("process");
        let time_us = e["time_ns"].as_u64().expect("time") / 1000;
        match e["type"].as_str().expect("type") {
            "invoke" => {
                open.insert(process, ops.len());
                ops.push(Expected {
                    process,
                    invoke_us: time_us,
                    complete_us: None,
                    outcome: "info".into(),
                    key: e["key"].as_str().map(str::to_string),
                });
            }
            kind => {
                let op = &mut ops[open.remove(&process).expect("open op")];
                op.complete_us = Some(time_us);
                op.outcome = kind.to_string();
            }
        }
    }
    ops.sort();
    ops
}

/// The JSON the page embeds, parsed back.
fn embedded_data(page: &str) -> Value {
    let start_tag = r#"<script type="application/json" id="timeline-data">"#;
    let start = page.find(start_tag).expect("data element") + start_tag.len();
    let end = start + page[start..].find("</script>").expect("end of data");
    serde_json::from_str(&page[start..end]).expect("embedded data is JSON")
}

/// Every operation the page embeds, decoded as the page's script decodes it.
fn embedded_ops(data: &Value) -> Vec<Expected> {
    let keys = data["keys"].as_array().expect("keys");
    let mut ops = Vec::new();
    for (lane, ops_of_lane) in data["ops"].as_array().expect("ops").iter().enumerate() {
        let process = data["processes"][lane].as_u64().expect("process");
        let a = ops_of_lane.as_array().expect("lane");
        assert_eq!(a.len() % OP_STRIDE, 0);
        for op in a.chunks(OP_STRIDE) {
            let invoke_us = op[0].as_u64().expect("invoke");
            let duration = op[1].as_i64().expect("duration");
            ops.push(Expected {
                process,
                invoke_us,
                complete_us: (duration >= 0).then(|| invoke_us + duration as u64),
                outcome: ["ok", "fail", "info"][op[2].as_u64().expect("outcome") as usize].into(),
                key: usize::try_from(op[4].as_i64().expect("key"))
                    .ok()
                    .map(|k| keys[k].as_str().expect("key name").to_string()),
            });
        }
    }
    ops.sort();
    ops
}

fn write_events(dir: &Path) {
    let lines = [
        r#"{"time_ns":0,"source":"runner","kind":"phase","phase":"safety"}"#,
        r#"{"time_ns":3000000500,"source":"nemesis","kind":"fault_start","fault_id":1,"fault":"partition","detail":"[n1 n2] | [n3]"}"#,
        r#"{"time_ns":3100000000,"source":"node","node":3,"kind":"raft_election_started","group":0,"term":4,"pre_vote":false}"#,
        r#"{"time_ns":3400000000,"source":"node","node":3,"kind":"leader_elected","group":0,"term":4}"#,
        r#"{"time_ns":5000000000,"source":"nemesis","kind":"fault_start","fault_id":2,"fault":"crash","node":2,"detail":"kill -9"}"#,
        r#"{"time_ns":6000000000,"source":"nemesis","kind":"fault_end","fault_id":1,"fault":"partition","detail":"healed"}"#,
        r#"{"time_ns":7000000000,"source":"nemesis","kind":"fault_end","fault_id":2,"fault":"crash","node":2,"detail":"restarted"}"#,
        r#"{"time_ns":7000500000,"source":"node","node":2,"kind":"node_started","role":"raft","records":12,"snapshot":false,"term":4,"applied":9}"#,
        r#"{"time_ns":8000000000,"source":"nemesis","kind":"fault_start","fault_id":3,"fault":"pause","node":1,"detail":"SIGSTOP"}"#,
        r#"{"time_ns":9000000000,"source":"runner","kind":"phase","phase":"liveness"}"#,
    ];
    std::fs::write(dir.join("events.jsonl"), lines.join("\n") + "\n").expect("write events");
}

fn write_summary(dir: &Path, checker: &Value) {
    let summary = json!({"experiment": "timeline-test", "run_id": "seed-1", "measured": ["kv"], "checker": checker});
    std::fs::write(dir.join("summary.json"), summary.to_string()).expect("write summary");
}

/// Renders a run directory and returns timeline.html's text.
fn render(dir: &Path) -> String {
    let rendered = crate::render_run(dir).expect("render");
    assert_eq!(rendered.timeline_html, dir.join("timeline.html"));
    std::fs::read_to_string(&rendered.timeline_html).expect("timeline.html")
}

#[test]
fn every_operation_of_the_history_appears_once_with_its_process_times_outcome_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 12, 3_000, 7);
    write_events(dir.path());
    write_summary(dir.path(), &json!({"verdict": "valid"}));
    let data = embedded_data(&render(dir.path()));
    let expected = expected_ops(dir.path());
    assert!(expected.len() > 2_900, "{} operations", expected.len());
    assert!(expected.iter().any(|o| o.complete_us.is_none()));
    assert!(expected.iter().any(|o| o.outcome == "fail"));
    assert!(
        expected
            .iter()
            .any(|o| o.outcome == "info" && o.complete_us.is_some())
    );
    assert_eq!(embedded_ops(&data), expected);
    assert_eq!(data["highlight_key"], Value::Null);
    // Never-completed operations are drawn to the end of the history.
    let last_ns = std::fs::read_to_string(dir.path().join("history.jsonl"))
        .expect("history")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["time_ns"].as_u64())
        .max()
        .expect("events");
    assert!(data["end_us"].as_u64().expect("end") >= last_ns / 1000);
    // One lane per process, drawn in rows that never hold two live processes at once.
    let lanes = data["processes"].as_array().expect("processes");
    let mut processes: Vec<u64> = lanes.iter().filter_map(Value::as_u64).collect();
    processes.sort_unstable();
    processes.dedup();
    assert_eq!(processes.len(), lanes.len());
    assert!(data["rows"].as_array().expect("rows").len() == lanes.len());
}

#[test]
fn rows_never_hold_two_processes_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 6, 2_000, 3);
    write_summary(dir.path(), &json!({"verdict": "valid"}));
    let data = embedded_data(&render(dir.path()));
    let end = data["end_us"].as_u64().expect("end");
    let mut spans: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (lane, a) in data["ops"].as_array().expect("ops").iter().enumerate() {
        let a = a.as_array().expect("lane");
        let first = a[0].as_u64().expect("invoke");
        let last = &a[a.len() - OP_STRIDE..];
        let d = last[1].as_i64().expect("duration");
        let stop = if d < 0 {
            end
        } else {
            last[0].as_u64().expect("invoke") + d as u64
        };
        let row = data["rows"][lane].as_u64().expect("row");
        spans.entry(row).or_default().push((first, stop));
    }
    assert!(spans.len() < data["processes"].as_array().expect("lanes").len());
    for (_, mut s) in spans {
        s.sort_unstable();
        assert!(
            s.windows(2).all(|w| w[0].1 <= w[1].0),
            "overlap in a row: {s:?}"
        );
    }
}

#[test]
fn faults_are_bands_with_their_start_and_end_and_node_events_are_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 3, 100, 1);
    write_events(dir.path());
    write_summary(dir.path(), &json!({"verdict": "valid"}));
    let data = embedded_data(&render(dir.path()));
    let kinds = &data["fault_kinds"];
    let faults: Vec<(u64, i64, String, i64)> = data["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .map(|f| {
            let kind = kinds[f[2].as_u64().expect("kind") as usize]
                .as_str()
                .expect("name");
            (
                f[0].as_u64().expect("start"),
                f[1].as_i64().expect("end"),
                kind.to_string(),
                f[3].as_i64().expect("node"),
            )
        })
        .collect();
    assert_eq!(
        faults,
        vec![
            (3_000_000, 6_000_000, "partition".to_string(), -1),
            (5_000_000, 7_000_000, "crash".to_string(), 2),
            (8_000_000, -1, "pause".to_string(), 1),
        ]
    );
    assert_eq!(data["nodes"], json!([1, 2, 3]));
    let events: Vec<(u64, u64, &str)> = data["node_events"]
        .as_array()
        .expect("node events")
        .iter()
        .map(|e| {
            let node = data["nodes"][e[1].as_u64().expect("n") as usize]
                .as_u64()
                .expect("node");
            let kind = data["event_kinds"][e[2].as_u64().expect("k") as usize]
                .as_str()
                .expect("kind");
            (e[0].as_u64().expect("t"), node, kind)
        })
        .collect();
    // The election start is left out (too many to read); the leader and the restart are in.
    assert_eq!(
        events,
        vec![
            (3_400_000, 3, "leader_elected"),
            (7_000_500, 2, "node_started")
        ]
    );
    assert_eq!(
        data["phases"],
        json!([[0, "safety"], [9_000_000, "liveness"]])
    );
}

#[test]
fn an_invalid_run_highlights_the_failing_key_and_marks_the_checkers_evidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 6, 600, 5);
    // Two k3 operations the checker names as proof, by their invoke lines' index.
    let lines: Vec<Value> = std::fs::read_to_string(dir.path().join("history.jsonl"))
        .expect("history")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    let named: Vec<&Value> = lines
        .iter()
        .filter(|e| e["key"] == "k3" && e["type"] == "invoke")
        .take(2)
        .collect();
    let proof: Vec<Value> = named
        .iter()
        .map(|e| json!({"invoke_index": e["index"], "complete_index": 0, "process": e["process"], "description": "x"}))
        .collect();
    write_summary(
        dir.path(),
        &json!({"verdict": "invalid", "invalid_keys": ["k3", "k1"], "partitions": [
            {"key": "k3", "verdict": "invalid", "explanation": "read() → 5 saw <overwritten> data", "first_unlinearizable": proof}
        ]}),
    );
    let page = render(dir.path());
    let data = embedded_data(&page);
    assert_eq!(data["highlight_key"], "k3");
    assert_eq!(data["invalid_keys"], json!(["k3", "k1"]));
    assert!(
        page.contains("key <code>k3</code>'s operations are highlighted"),
        "{page}"
    );
    assert!(page.contains("INVALID"));
    let evidence = data["evidence"]["k3"].as_array().expect("evidence of k3");
    assert_eq!(evidence.len(), 2);
    for (pair, e) in evidence.iter().zip(&named) {
        let (lane, pos) = (
            pair[0].as_u64().expect("lane") as usize,
            pair[1].as_u64().expect("pos") as usize,
        );
        assert_eq!(data["processes"][lane], e["process"]);
        let op = &data["ops"][lane].as_array().expect("lane")[pos * OP_STRIDE..];
        assert_eq!(op[0].as_u64(), e["time_ns"].as_u64().map(|t| t / 1000));
        assert_eq!(data["keys"][op[4].as_u64().expect("key") as usize], "k3");
    }
    assert_eq!(
        data["explanations"]["k3"],
        "read() → 5 saw <overwritten> data"
    );
    assert!(
        !page.contains("<overwritten>"),
        "text from the run is escaped in the script"
    );
}

#[test]
fn a_valid_run_highlights_nothing_and_the_report_links_the_timeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 3, 60, 2);
    write_summary(dir.path(), &json!({"verdict": "valid", "invalid_keys": []}));
    let page = render(dir.path());
    assert_eq!(embedded_data(&page)["highlight_key"], Value::Null);
    assert!(page.contains("class=\"verdict good\">VALID"));
    let report = std::fs::read_to_string(dir.path().join("report.html")).expect("report");
    assert!(report.contains("href=\"timeline.html\""));
}

#[test]
fn markup_in_keys_and_details_cannot_close_the_data_element() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("history.jsonl"),
        "{\"index\":0,\"time_ns\":1000,\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"</script><b>\",\"value\":1}\n\
         {\"index\":1,\"time_ns\":5000,\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"key\":\"</script><b>\",\"value\":1}\n",
    )
    .expect("history");
    let page = render(dir.path());
    assert_eq!(
        page.matches("</script>").count(),
        2,
        "only the two script elements close"
    );
    assert_eq!(embedded_data(&page)["keys"], json!(["</script><b>"]));
}

#[test]
fn a_30000_operation_history_stays_under_120_bytes_per_operation() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 50, 30_000, 11);
    write_events(dir.path());
    write_summary(dir.path(), &json!({"verdict": "valid"}));
    let page = render(dir.path());
    let ops = embedded_ops(&embedded_data(&page)).len();
    assert!(ops >= 29_900, "{ops} operations");
    let per_op = page.len() as f64 / ops as f64;
    assert!(
        per_op < 120.0,
        "{} bytes for {ops} operations: {per_op:.1} B/op",
        page.len()
    );
}
