//! The history formats: porcupine's etcd Jepsen logs and KV logs get the verdicts
//! porcupine's own test suite expects, file by file; Jepsen EDN reads with its
//! conventions; EDN export reads back; malformed input of each kind names its line.

use std::path::{Path, PathBuf};

use kvlab_checker::{
    CheckConfig, CheckOptions, EdnKeyStyle, Engine, HistoryError, HistoryFormat, ModelKind,
    Verdict, check, check_with, read_history_bytes, read_history_file, write_edn,
};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/porcupine")
        .join(rel)
}

/// porcupine-rs 0.3.0 `tests/etcd_jepsen.rs`: the expected verdict of each etcd log
/// (`true`: linearizable). etcd_095 holds no operations (the cluster never started);
/// porcupine's suite skips it, and an empty history is valid.
const ETCD_EXPECTED: [(u32, bool); 103] = [
    (0, false),
    (1, false),
    (2, true),
    (3, false),
    (4, false),
    (5, true),
    (6, false),
    (7, true),
    (8, false),
    (9, false),
    (10, false),
    (11, false),
    (12, false),
    (13, false),
    (14, false),
    (15, false),
    (16, false),
    (17, false),
    (18, true),
    (19, false),
    (20, false),
    (21, false),
    (22, false),
    (23, false),
    (24, false),
    (25, true),
    (26, false),
    (27, false),
    (28, false),
    (29, false),
    (30, false),
    (31, true),
    (32, false),
    (33, false),
    (34, false),
    (35, false),
    (36, false),
    (37, false),
    (38, true),
    (39, false),
    (40, false),
    (41, false),
    (42, false),
    (43, false),
    (44, false),
    (45, true),
    (46, false),
    (47, false),
    (48, true),
    (49, true),
    (50, false),
    (51, true),
    (52, false),
    (53, true),
    (54, false),
    (55, false),
    (56, true),
    (57, false),
    (58, false),
    (59, false),
    (60, false),
    (61, false),
    (62, false),
    (63, false),
    (64, false),
    (65, false),
    (66, false),
    (67, true),
    (68, false),
    (69, false),
    (70, false),
    (71, false),
    (72, false),
    (73, false),
    (74, false),
    (75, true),
    (76, true),
    (77, false),
    (78, false),
    (79, false),
    (80, true),
    (81, false),
    (82, false),
    (83, false),
    (84, false),
    (85, false),
    (86, false),
    (87, true),
    (88, false),
    (89, false),
    (90, false),
    (91, false),
    (92, true),
    (93, false),
    (94, false),
    (95, true),
    (96, false),
    (97, false),
    (98, true),
    (99, false),
    (100, true),
    (101, true),
    (102, true),
];

fn etcd_path(n: u32) -> PathBuf {
    data(&format!("jepsen/etcd_{n:03}.log"))
}

fn config(engine: Engine) -> CheckConfig {
    CheckConfig {
        model: ModelKind::CasRegister,
        timeout: None,
        memory_limit_bytes: Some(kvlab_checker::DEFAULT_MEMORY_LIMIT_BYTES),
        engine,
        stop_at_first_invalid: true,
    }
}

#[test]
fn every_etcd_log_gets_the_verdict_porcupine_expects() {
    let mut wrong = Vec::new();
    for (n, linearizable) in ETCD_EXPECTED {
        let events = read_history_file(&etcd_path(n), HistoryFormat::Auto)
            .unwrap_or_else(|e| panic!("etcd_{n:03}: {e}"));
        let report = check(
            &events,
            &CheckOptions {
                model: ModelKind::CasRegister,
                timeout: None,
            },
        )
        .expect("well formed");
        let expected = if linearizable {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        if report.verdict != expected {
            wrong.push(format!(
                "etcd_{n:03}: expected {expected}, got {}",
                report.verdict
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn both_engines_agree_on_every_etcd_log() {
    for (n, _) in ETCD_EXPECTED {
        let events = read_history_file(&etcd_path(n), HistoryFormat::JepsenLog).expect("reads");
        let kvlab = check_with(&events, &config(Engine::Kvlab)).expect("checks");
        let porcupine = check_with(&events, &config(Engine::Porcupine)).expect("checks");
        assert_eq!(kvlab.verdict, porcupine.verdict, "etcd_{n:03}");
    }
}

/// The etcd logs write values 0–4 over and over, so the reads-from engine is unsure on
/// many of them; wherever it decides one, it must agree with porcupine's expectation.
#[test]
fn reads_from_engine_agrees_on_every_etcd_log_it_decides() {
    let (mut decided, mut invalid) = (0, 0);
    for (n, linearizable) in ETCD_EXPECTED {
        let events = read_history_file(&etcd_path(n), HistoryFormat::JepsenLog).expect("reads");
        let report = check_with(&events, &config(Engine::ReadsFrom)).expect("checks");
        let expected = if linearizable {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        if report.verdict != Verdict::Unknown {
            assert_eq!(report.verdict, expected, "etcd_{n:03}: {report}");
            decided += 1;
            invalid += usize::from(!linearizable);
        }
    }
    eprintln!(
        "reads-from alone decided {decided} of {} etcd logs ({invalid} invalid)",
        ETCD_EXPECTED.len()
    );
    assert!(decided > 0);
}

#[test]
fn etcd_095_is_empty_and_valid() {
    let events = read_history_file(&etcd_path(95), HistoryFormat::JepsenLog).expect("reads");
    assert!(events.is_empty());
}

#[test]
fn invalid_etcd_log_explains_which_operations_cannot_be_linearized() {
    let events = read_history_file(&etcd_path(0), HistoryFormat::Auto).expect("reads");
    let report = check(
        &events,
        &CheckOptions {
            model: ModelKind::CasRegister,
            timeout: None,
        },
    )
    .expect("checks");
    assert_eq!(report.verdict, Verdict::Invalid);
    let p = &report.partitions[0];
    assert_eq!(p.verdict, Verdict::Invalid);
    assert!(!p.first_unlinearizable.is_empty(), "{p}");
    assert!(
        p.longest_partial_len > 0 && !p.longest_partial_tail.is_empty(),
        "{p}"
    );
    assert!(
        report.to_string().contains("cannot be linearized next"),
        "{report}"
    );
}

/// porcupine-rs 0.3.0 `tests/kv_log.rs`.
const KV_EXPECTED: [(&str, bool); 6] = [
    ("c01-ok", true),
    ("c01-bad", false),
    ("c10-ok", true),
    ("c10-bad", false),
    ("c50-ok", true),
    ("c50-bad", false),
];

#[test]
fn every_porcupine_kv_log_gets_the_verdict_porcupine_expects() {
    for (name, linearizable) in KV_EXPECTED {
        let path = data(&format!("kv/{name}.txt"));
        let head = std::fs::read(&path).expect("exists");
        assert_eq!(
            kvlab_checker::detect_format(&head).expect("detects"),
            HistoryFormat::PorcupineKv
        );
        let events = read_history_file(&path, HistoryFormat::Auto).expect("reads");
        for engine in Engine::ALL {
            let report = check_with(
                &events,
                &CheckConfig {
                    model: ModelKind::Kv,
                    ..config(engine)
                },
            )
            .expect("checks");
            let expected = if linearizable {
                Verdict::Valid
            } else {
                Verdict::Invalid
            };
            if engine == Engine::ReadsFrom {
                // Appends: not single writes, so the reads-from engine leaves them alone.
                assert_eq!(report.verdict, Verdict::Unknown, "{name} with {engine}");
                assert!(
                    report.partitions[0]
                        .unknown_reason
                        .as_deref()
                        .is_some_and(|r| r.contains("appends")),
                    "{report}"
                );
            } else {
                assert_eq!(report.verdict, expected, "{name} with {engine}");
            }
        }
    }
}

fn read(
    text: &str,
    format: HistoryFormat,
) -> Result<Vec<kvlab_checker::HistoryEvent>, HistoryError> {
    read_history_bytes(text.as_bytes(), format)
}

fn kv_check(text: &str) -> Verdict {
    let events = read(text, HistoryFormat::Auto).expect("reads");
    check(
        &events,
        &CheckOptions {
            model: ModelKind::CasRegister,
            timeout: None,
        },
    )
    .expect("checks")
    .verdict
}

#[test]
fn jepsen_edn_vector_with_nemesis_info_and_crashed_process_reads() {
    let text = r#"[{:process 0, :type :invoke, :f :write, :value 1, :time 10, :index 0}
 {:process :nemesis, :type :info, :f :start, :value nil}
 {:process 1, :type :invoke, :f :cas, :value [1 2], :time 20, :index 2}
 {:process 0, :type :ok, :f :write, :value 1, :time 30, :index 3}
 {:process 1, :type :info, :f :cas, :value [1 2], :error :timeout, :index 4}
 {:process 6, :type :invoke, :f :read, :value nil, :index 5}
 {:process 6, :type :ok, :f :read, :value 2, :index 6}]"#;
    let events = read(text, HistoryFormat::Auto).expect("reads");
    assert_eq!(events.len(), 6, "nemesis event skipped");
    assert_eq!(events[0].time_ns, 10);
    assert_eq!(events[3].error.as_deref(), Some(":timeout"));
    assert_eq!(kv_check(text), Verdict::Valid);
    // The info cas never returning, a read of 3 is impossible.
    assert_eq!(
        kv_check(&text.replace(":value 2, :index 6", ":value 3, :index 6")),
        Verdict::Invalid
    );
}

#[test]
fn jepsen_edn_sequence_with_independent_tuples_splits_by_key() {
    let text = "{:process 0, :type :invoke, :f :write, :value [\"a\" 1]}\n\
{:process 0, :type :ok, :f :write, :value [\"a\" 1]}\n\
{:process 1, :type :invoke, :f :read, :value [\"b\" nil]}\n\
{:process 1, :type :ok, :f :read, :value [\"b\" nil]}\n\
{:process 1, :type :invoke, :f :cas, :value [\"a\" [1 2]]}\n\
{:process 1, :type :fail, :f :cas, :value [\"a\" [1 2]]}\n";
    let events = read(text, HistoryFormat::Edn).expect("reads");
    assert_eq!(events[0].key.as_deref(), Some("a"));
    assert_eq!(events[2].key.as_deref(), Some("b"));
    assert_eq!(events[4].value, serde_json::json!([1, 2]));
    assert_eq!(kv_check(text), Verdict::Valid);
}

#[test]
fn edn_txn_and_append_read_as_micro_ops() {
    let text = r#"{:process 0, :type :invoke, :f :txn, :value [[:r :x nil] [:w :y 2]]}
{:process 0, :type :ok, :f :txn, :value [[:r :x nil] [:w :y 2]]}
{:process 1, :type :invoke, :f :txn, :value [[:r :y nil] [:r :x nil]]}
{:process 1, :type :ok, :f :txn, :value [[:r :y 2] [:r :x nil]]}"#;
    let events = read(text, HistoryFormat::Auto).expect("reads");
    let report = check(
        &events,
        &CheckOptions {
            model: ModelKind::MultiRegister,
            timeout: None,
        },
    )
    .expect("checks");
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert_eq!(
        report.keys_checked, 1,
        "x and y share a transaction: one group"
    );
    let stale = text.replace("[[:r :y 2] [:r :x nil]]", "[[:r :y nil] [:r :x nil]]");
    let events = read(&stale, HistoryFormat::Auto).expect("reads");
    let report = check(
        &events,
        &CheckOptions {
            model: ModelKind::MultiRegister,
            timeout: None,
        },
    )
    .expect("checks");
    assert_eq!(report.verdict, Verdict::Invalid);

    let append = r#"{:process 0, :type :invoke, :f :append, :key "k", :value "a"}
{:process 0, :type :ok, :f :append, :key "k", :value "a"}
{:process 0, :type :invoke, :f :append, :key "k", :value "b"}
{:process 0, :type :ok, :f :append, :key "k", :value "b"}
{:process 0, :type :invoke, :f :read, :key "k", :value nil}
{:process 0, :type :ok, :f :read, :key "k", :value "ab"}"#;
    let events = read(append, HistoryFormat::Edn).expect("reads");
    let kv = CheckOptions {
        model: ModelKind::Kv,
        timeout: None,
    };
    assert_eq!(check(&events, &kv).expect("checks").verdict, Verdict::Valid);
    let events = read(&append.replace("\"ab\"", "\"ba\""), HistoryFormat::Edn).expect("reads");
    assert_eq!(
        check(&events, &kv).expect("checks").verdict,
        Verdict::Invalid
    );
}

#[test]
fn edn_export_reads_back_to_the_same_events() {
    for n in [0, 2, 48] {
        let events = read_history_file(&etcd_path(n), HistoryFormat::JepsenLog).expect("reads");
        let mut out = Vec::new();
        write_edn(&mut out, &events, EdnKeyStyle::KeyField).expect("writes");
        let back = read_history_bytes(&out, HistoryFormat::Auto).expect("reads back");
        assert_eq!(back, events, "etcd_{n:03}");
    }
    let text = r#"{:process 0, :type :invoke, :f :txn, :value [[:r "x" nil] [:w "y" "s\"q"]]}
{:process 0, :type :ok, :f :txn, :value [[:r "x" 5] [:w "y" "s\"q"]]}
{:process 1, :type :invoke, :f :write, :key "k", :value 3}
{:process 1, :type :info, :f :write, :key "k", :value 3, :error "timeout"}"#;
    let events = read(text, HistoryFormat::Edn).expect("reads");
    for style in [EdnKeyStyle::KeyField, EdnKeyStyle::IndependentTuple] {
        let mut out = Vec::new();
        write_edn(&mut out, &events, style).expect("writes");
        let back = read_history_bytes(&out, HistoryFormat::Edn).expect("reads back");
        assert_eq!(back, events, "{style:?}\n{}", String::from_utf8_lossy(&out));
    }
}

/// Each kind of malformed input, in each format: the error names the line.
#[test]
fn malformed_input_of_each_kind_names_its_line() {
    let cases: Vec<(&str, HistoryFormat, &str, &str)> = vec![
        // (input, format, "line N", a phrase the message must contain)
        (
            "{:process 0, :type :invoke, :f :write, :value 1}\n{:process 0, :type :ok, :f :write,\n",
            HistoryFormat::Edn,
            "line 3",
            "expected `}`",
        ),
        (
            "[{:process 0, :type :invoke, :f :write, :value 1}\n",
            HistoryFormat::Edn,
            "line 2",
            "close the history",
        ),
        (
            "{:process 0, :type :invoke, :f :frobnicate, :value 1}\n",
            HistoryFormat::Edn,
            "line 1",
            "unknown :f :frobnicate",
        ),
        (
            "{:process 0, :type :invoke, :f :write, :value 1}\n{:process 1, :type :ok, :f :write, :value 1}\n",
            HistoryFormat::Edn,
            "line 2",
            "never invoked",
        ),
        (
            "{:process 0, :type :invoke, :f :write, :value 1}\n\n{:process 0, :type :invoke, :f :read, :value nil}\n",
            HistoryFormat::Edn,
            "line 3",
            "still open",
        ),
        (
            "{:process 0, :type :invoke, :f :write, :value 1.5}\n",
            HistoryFormat::Edn,
            "line 1",
            "found a float",
        ),
        (
            "{:process 0, :type :begin, :f :write, :value 1}\n",
            HistoryFormat::Edn,
            "line 1",
            "unknown :type :begin",
        ),
        (
            "{:type :invoke, :f :write, :value 1}\n",
            HistoryFormat::Edn,
            "line 1",
            "missing :process",
        ),
        (
            "{:process 0, :type :invoke, :f :get, :key \"k\", :value nil}\n{:process 0, :type :ok, :f :get, :key \"k\", :value \"x\n",
            HistoryFormat::PorcupineKv,
            "line 3",
            "close the string opened on line 2",
        ),
        (
            "{:process 0, :type :invoke, :f :sing, :key \"k\", :value nil}\n",
            HistoryFormat::PorcupineKv,
            "line 1",
            "unknown :f :sing",
        ),
        (
            "{:process 0, :type :ok, :f :get, :key \"k\", :value \"\"}\n",
            HistoryFormat::PorcupineKv,
            "line 1",
            "never invoked",
        ),
        (
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:read\t[1 2\n",
            HistoryFormat::JepsenLog,
            "line 2",
            "the value",
        ),
        (
            "INFO  jepsen.util - 0\t:invoke\t:dance\tnil\n",
            HistoryFormat::JepsenLog,
            "line 1",
            "unknown :f :dance",
        ),
        (
            "noise\nINFO  jepsen.util - 3\t:ok\t:read\t1\n",
            HistoryFormat::JepsenLog,
            "line 2",
            "never invoked",
        ),
        (
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:invoke\t:write\t1\n",
            HistoryFormat::JepsenLog,
            "line 2",
            "still open",
        ),
        (
            "INFO  jepsen.util - 0\t:invoke\n",
            HistoryFormat::JepsenLog,
            "line 1",
            "the :f",
        ),
        (
            "{\"index\":0,\"time_ns\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"value\":1}\n{\"index\":1,\"time_ns\":0,\"process\":0,\"type\":\"ok\",\"f\":\"write\"",
            HistoryFormat::Jsonl,
            "line 2",
            "JSON",
        ),
        (
            "{\"index\":0,\"time_ns\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"fly\",\"value\":1}\n",
            HistoryFormat::Jsonl,
            "line 1",
            "fly",
        ),
    ];
    for (text, format, line, phrase) in cases {
        let err = read(text, format).expect_err(text);
        let message = err.to_string();
        assert!(
            message.starts_with(line),
            "{format}: {text:?}\n → {message}"
        );
        assert!(message.contains(phrase), "{format}: {text:?}\n → {message}");
        // Auto-detection reaches the same reader.
        let auto = read(text, HistoryFormat::Auto).expect_err(text).to_string();
        assert_eq!(auto, message, "{text:?}");
    }
}

#[test]
fn unknown_format_is_an_error_that_says_so() {
    let err = read("hello world\n", HistoryFormat::Auto).unwrap_err();
    assert!(matches!(err, HistoryError::UnknownFormat { .. }), "{err}");
    assert!(err.to_string().contains("--format"), "{err}");
}

#[test]
fn format_names_round_trip() {
    for f in HistoryFormat::ALL {
        assert_eq!(HistoryFormat::from_name(f.name()), Some(f));
    }
    assert_eq!(HistoryFormat::from_name("yaml"), None);
}
