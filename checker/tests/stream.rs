//! Bounded, streamed input: an over-long line in every format is refused without being
//! read whole, EDN nesting, values and ops spread over lines are bounded, empty and blank
//! histories of every format hold no operations, and a streamed check answers exactly
//! what a check of the same events in memory answers.

mod common;

use std::cell::Cell;
use std::io::{BufReader, Read, Seek, Write};
use std::rc::Rc;

use common::{GenSpec, generate};
use kvlab_checker::{
    CheckConfig, CheckReport, EdnKeyStyle, Engine, HistoryError, HistoryEvent, HistoryFormat,
    MAX_HISTORY_LINE_BYTES, ModelKind, PreparedHistory, Progress, ProgressPhase, ReadOptions,
    Verdict, check_with, read_history, read_history_bytes, read_history_file, read_history_with,
    write_edn, write_jsonl,
};

/// The size of the over-long lines: far more than any buffer the readers may hold.
const HUGE_LINE_BYTES: u64 = 50 << 20;

/// The most a reader may pull from its input before refusing a line: the line limit, the
/// head auto-detection reads, the `BufReader` between, and the lines before it.
const READ_SLACK_BYTES: u64 = 256 << 10;

/// An input that makes up its bytes as they are read — `prefix`, then `filler` bytes of
/// `fill`, then `suffix` — and counts how many were read, so a test can tell that a
/// reader never pulled (let alone held) the whole of a huge line.
struct LazyInput {
    prefix: Vec<u8>,
    fill: u8,
    filler: u64,
    suffix: Vec<u8>,
    at: u64,
    served: Rc<Cell<u64>>,
}

impl LazyInput {
    fn new(prefix: &str, fill: u8, filler: u64, suffix: &str) -> (Self, Rc<Cell<u64>>) {
        let served = Rc::new(Cell::new(0));
        let input = LazyInput {
            prefix: prefix.as_bytes().to_vec(),
            fill,
            filler,
            suffix: suffix.as_bytes().to_vec(),
            at: 0,
            served: Rc::clone(&served),
        };
        (input, served)
    }

    fn len(&self) -> u64 {
        self.prefix.len() as u64 + self.filler + self.suffix.len() as u64
    }
}

impl Read for LazyInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.at < self.len() {
            let p = self.prefix.len() as u64;
            buf[n] = if self.at < p {
                self.prefix[self.at as usize]
            } else if self.at < p + self.filler {
                self.fill
            } else {
                self.suffix[(self.at - p - self.filler) as usize]
            };
            n += 1;
            self.at += 1;
        }
        self.served.set(self.served.get() + n as u64);
        Ok(n)
    }
}

/// Per format: a valid first line, and the start of a second line that the filler makes
/// 50 MiB long.
fn overlong_cases() -> Vec<(HistoryFormat, &'static str)> {
    vec![
        (
            HistoryFormat::Jsonl,
            "{\"index\":0,\"time_ns\":1,\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"x\",\"value\":1}\n{\"index\":1,\"time_ns\":2,\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"key\":\"x\",\"value\":\"",
        ),
        (
            HistoryFormat::Edn,
            "{:process 0, :type :invoke, :f :write, :value 1}\n{:process 0, :type :ok, :f :write, :value \"",
        ),
        (
            HistoryFormat::Edn,
            "[{:process 0, :type :invoke, :f :write, :value 1}\n {:process 0, :type :ok, :f :write, :value \"",
        ),
        (
            HistoryFormat::JepsenLog,
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:read\t\"",
        ),
        (
            HistoryFormat::PorcupineKv,
            "{:process 0, :type :invoke, :f :get, :key \"k\", :value nil}\n{:process 0, :type :ok, :f :get, :key \"k\", :value \"",
        ),
    ]
}

fn assert_line_too_long(result: Result<impl std::fmt::Debug, HistoryError>, line: usize) {
    match result {
        Err(HistoryError::LineTooLong {
            line: l,
            limit_bytes,
        }) => {
            assert_eq!((l, limit_bytes), (line, MAX_HISTORY_LINE_BYTES));
        }
        other => panic!("expected line {line} too long, got {other:?}"),
    }
}

#[test]
fn overlong_line_is_refused_in_every_format_without_reading_it_whole() {
    for (format, prefix) in overlong_cases() {
        for asked in [format, HistoryFormat::Auto] {
            let (input, served) = LazyInput::new(prefix, b'a', HUGE_LINE_BYTES, "\"}\n");
            let result = read_history(BufReader::new(input), asked);
            let err = format!("{:?}", result.as_ref().err());
            assert_line_too_long(result, 2);
            assert!(
                served.get() < MAX_HISTORY_LINE_BYTES as u64 + READ_SLACK_BYTES,
                "{format} read as {asked}: {} bytes pulled for {err}",
                served.get()
            );
            // The streamed check reads the same way.
            let (input, served) = LazyInput::new(prefix, b'a', HUGE_LINE_BYTES, "\"}\n");
            let model = if format == HistoryFormat::JepsenLog {
                ModelKind::CasRegister
            } else {
                ModelKind::Kv
            };
            let options = ReadOptions::format(asked);
            assert_line_too_long(
                PreparedHistory::read(BufReader::new(input), model, &options),
                2,
            );
            assert!(served.get() < MAX_HISTORY_LINE_BYTES as u64 + READ_SLACK_BYTES);
        }
    }
}

/// Counts the bytes read from a file.
struct Counting<R> {
    inner: R,
    served: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.served.set(self.served.get() + n as u64);
        Ok(n)
    }
}

#[test]
fn fifty_mib_line_in_a_file_is_refused_naming_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (n, (format, prefix)) in overlong_cases().into_iter().enumerate() {
        let path = dir.path().join(format!("long-{n}.{format}"));
        {
            // The 50 MiB of the line are a hole (a sparse file, read back as zero bytes):
            // the test needs a huge line, not huge disk use — CI hosts can be short of
            // space.
            let mut file = std::fs::File::create(&path).expect("creates");
            file.write_all(prefix.as_bytes()).expect("writes");
            let len = prefix.len() as u64 + HUGE_LINE_BYTES;
            file.set_len(len).expect("extends");
            file.seek(std::io::SeekFrom::Start(len)).expect("seeks");
            file.write_all(b"\"}\n").expect("writes");
            file.sync_all().expect("syncs");
        }
        assert_line_too_long(read_history_file(&path, HistoryFormat::Auto), 2);
        let err = read_history_file(&path, format).unwrap_err().to_string();
        assert!(
            err.starts_with("line 2: longer than 1048576 bytes"),
            "{err}"
        );
        let served = Rc::new(Cell::new(0));
        let file = Counting {
            inner: std::fs::File::open(&path).expect("opens"),
            served: Rc::clone(&served),
        };
        assert_line_too_long(
            PreparedHistory::read(
                BufReader::new(file),
                ModelKind::CasRegister,
                &ReadOptions::default(),
            ),
            2,
        );
        assert!(
            served.get() < MAX_HISTORY_LINE_BYTES as u64 + READ_SLACK_BYTES,
            "{format}: {} bytes read",
            served.get()
        );
    }
}

#[test]
fn line_limit_is_configurable_and_counts_text_without_line_ending() {
    let line =
        r#"{"index":0,"time_ns":1,"process":0,"type":"invoke","f":"write","key":"x","value":1}"#;
    let options = |max_line_bytes| ReadOptions {
        max_line_bytes,
        ..ReadOptions::format(HistoryFormat::Jsonl)
    };
    let text = format!("{line}\r\n");
    assert_eq!(
        read_history_with(text.as_bytes(), &options(line.len()))
            .expect("a line at the limit is read")
            .len(),
        1
    );
    match read_history_with(text.as_bytes(), &options(line.len() - 1)) {
        Err(HistoryError::LineTooLong {
            line: 1,
            limit_bytes,
        }) => assert_eq!(limit_bytes, line.len() - 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn edn_op_spread_over_many_lines_is_bounded_too() {
    // An unclosed string runs over 2 million short lines: refused once the op spans more
    // than the limit, having read little more than the limit.
    let (input, served) = LazyInput::new(
        "{:process 0, :type :invoke, :f :write, :value 1}\n{:process 0, :type :ok, :f :write, :value \"",
        b'\n',
        2_000_000,
        "\"}\n",
    );
    match read_history(BufReader::new(input), HistoryFormat::Edn) {
        Err(HistoryError::OpTooLong {
            start_line,
            limit_bytes,
            line,
        }) => {
            assert_eq!((start_line, limit_bytes), (2, MAX_HISTORY_LINE_BYTES));
            assert!(line > 2, "{line}");
        }
        other => panic!("{other:?}"),
    }
    assert!(served.get() < MAX_HISTORY_LINE_BYTES as u64 + READ_SLACK_BYTES);
    // Within the limit, an op may span lines.
    let text = "{:process 0,\n :type :invoke,\n :f :write,\n :value 1}\n{:process 0 :type :ok\n :f :write :value 1}\n";
    let options = ReadOptions {
        max_line_bytes: 64,
        ..ReadOptions::format(HistoryFormat::Edn)
    };
    assert_eq!(
        read_history_with(text.as_bytes(), &options)
            .expect("reads")
            .len(),
        2
    );
    let options = ReadOptions {
        max_line_bytes: 32,
        ..options
    };
    let err = read_history_with(text.as_bytes(), &options).unwrap_err();
    assert!(
        matches!(err, HistoryError::OpTooLong { start_line: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("the op that starts on line 1"),
        "{err}"
    );
}

#[test]
fn deep_edn_nesting_is_refused_naming_the_line() {
    let deep = "[".repeat(200_000);
    let inside_op = format!(
        "{{:process 0, :type :invoke, :f :write, :value 1}}\n{{:process 0, :type :ok, :f :write, :value {}1{}}}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    for (text, line) in [(deep.as_str(), 1), (inside_op.as_str(), 2)] {
        for format in [HistoryFormat::Edn, HistoryFormat::Auto] {
            let err = read_history_bytes(text.as_bytes(), format).unwrap_err();
            assert!(
                matches!(err, HistoryError::Syntax { line: l, .. } if l == line),
                "{err}"
            );
            assert!(err.to_string().contains("nested collections"), "{err}");
        }
    }
    let log = format!(
        "INFO  jepsen.util - 0\t:invoke\t:write\t{}\n",
        "[".repeat(1000)
    );
    let err = read_history_bytes(log.as_bytes(), HistoryFormat::JepsenLog).unwrap_err();
    assert!(err.to_string().starts_with("line 1:"), "{err}");
    assert!(err.to_string().contains("nested collections"), "{err}");
}

#[test]
fn edn_op_with_too_many_values_is_refused() {
    let text = format!(
        "{{:process 0, :type :invoke, :f :txn, :value [{}]}}\n",
        "[:r :x nil] ".repeat(20_000)
    );
    let err = read_history_bytes(text.as_bytes(), HistoryFormat::Edn).unwrap_err();
    assert!(err.to_string().contains("values in one op"), "{err}");
    assert!(err.to_string().starts_with("line 1:"), "{err}");
}

/// Inputs without a single operation, each with the formats it is read as.
fn empty_inputs() -> Vec<(&'static str, Vec<HistoryFormat>)> {
    use HistoryFormat::*;
    vec![
        ("", vec![Auto, Jsonl, Edn, JepsenLog, PorcupineKv]),
        (
            "  \n\n\t\r\n   ",
            vec![Auto, Jsonl, Edn, JepsenLog, PorcupineKv],
        ),
        (
            ";; a comment\n; and another\n",
            vec![Auto, Edn, PorcupineKv],
        ),
        ("[]", vec![Auto, Edn, PorcupineKv]),
        ("[\n ; nothing yet\n #_ {:process 0}\n]\n", vec![Auto, Edn]),
        ("()", vec![Auto, Edn]),
        (
            "{:process :nemesis, :type :info, :f :start, :value nil}\n",
            vec![Auto, Edn],
        ),
        (
            "INFO  jepsen.core - starting\nINFO  jepsen.util - :nemesis\t:info\t:start\tnil\n",
            vec![Auto, JepsenLog],
        ),
        ("2024-01-01 noise only\n", vec![JepsenLog]),
    ]
}

#[test]
fn empty_blank_and_comment_only_histories_hold_no_operations_in_every_format() {
    for (text, formats) in empty_inputs() {
        for format in formats {
            let events = read_history_bytes(text.as_bytes(), format)
                .unwrap_or_else(|e| panic!("{text:?} as {format}: {e}"));
            assert!(events.is_empty(), "{text:?} as {format}");
            let prepared =
                PreparedHistory::read(text.as_bytes(), ModelKind::Kv, &ReadOptions::format(format))
                    .unwrap_or_else(|e| panic!("{text:?} as {format}: {e}"));
            assert_eq!(
                (prepared.events(), prepared.operations(), prepared.keys()),
                (0, 0, 0),
                "{text:?} as {format}"
            );
            let report = prepared.check(&kvlab_config(ModelKind::Kv), None);
            assert!(
                report.notes.iter().any(|n| n.contains("no operations")),
                "{report}"
            );
        }
    }
}

/// The parts of a report that do not depend on the clock.
fn stable(r: &CheckReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("serializes");
    for field in [
        "elapsed_ms",
        "slowest_key",
        "slowest_key_ms",
        "peak_resident_bytes",
        "threads",
    ] {
        v[field] = serde_json::Value::Null;
    }
    v
}

fn kvlab_config(model: ModelKind) -> CheckConfig {
    CheckConfig {
        model,
        timeout: None,
        memory_limit_bytes: Some(kvlab_checker::DEFAULT_MEMORY_LIMIT_BYTES),
        engine: Engine::Kvlab,
        stop_at_first_invalid: false,
    }
}

fn assert_streamed_matches(
    events: &[HistoryEvent],
    text: &[u8],
    format: HistoryFormat,
    model: ModelKind,
) {
    let config = kvlab_config(model);
    let in_memory = check_with(events, &config).expect("checks");
    let streamed = PreparedHistory::read(text, model, &ReadOptions::format(format))
        .expect("reads")
        .check(&config, None);
    assert_eq!(stable(&streamed), stable(&in_memory), "{format} {model}");
}

#[test]
fn streamed_check_answers_what_the_in_memory_check_answers() {
    for seed in 0..12 {
        let mut events = generate(GenSpec {
            seed,
            operations: 400,
            keys: 4,
            clients: 6,
            info_rate: 0.1,
            kv_ops: seed % 2 == 0,
        });
        if seed % 3 == 0 {
            // One impossible read, so some histories are invalid.
            if let Some(e) = events.iter_mut().rev().find(|e| {
                e.kind == kvlab_checker::EventType::Ok && e.f == kvlab_checker::OpFn::Read
            }) {
                e.value = serde_json::json!(-7);
            }
        }
        let model = if seed % 2 == 0 {
            ModelKind::Kv
        } else {
            ModelKind::CasRegister
        };
        let mut jsonl = Vec::new();
        write_jsonl(&mut jsonl, &events).expect("writes");
        assert_streamed_matches(&events, &jsonl, HistoryFormat::Auto, model);
        let mut edn = Vec::new();
        write_edn(&mut edn, &events, EdnKeyStyle::KeyField).expect("writes");
        assert_streamed_matches(&events, &edn, HistoryFormat::Edn, model);
    }
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/porcupine");
    for name in [
        "jepsen/etcd_000.log",
        "jepsen/etcd_002.log",
        "jepsen/etcd_048.log",
    ] {
        let text = std::fs::read(data.join(name)).expect("exists");
        let events = read_history_bytes(&text, HistoryFormat::Auto).expect("reads");
        assert_streamed_matches(&events, &text, HistoryFormat::Auto, ModelKind::CasRegister);
    }
    for name in ["kv/c10-ok.txt", "kv/c10-bad.txt"] {
        let text = std::fs::read(data.join(name)).expect("exists");
        let events = read_history_bytes(&text, HistoryFormat::Auto).expect("reads");
        assert_streamed_matches(&events, &text, HistoryFormat::Auto, ModelKind::Kv);
    }
    let txn = r#"{:process 0, :type :invoke, :f :txn, :value [[:r :x nil] [:w :y 2]]}
{:process 1, :type :invoke, :f :txn, :value [[:r :y nil] [:r :x nil]]}
{:process 0, :type :ok, :f :txn, :value [[:r :x nil] [:w :y 2]]}
{:process 1, :type :ok, :f :txn, :value [[:r :y 3] [:r :x nil]]}
{:process 2, :type :invoke, :f :write, :key :z, :value 1}"#;
    let events = read_history_bytes(txn.as_bytes(), HistoryFormat::Edn).expect("reads");
    assert_streamed_matches(
        &events,
        txn.as_bytes(),
        HistoryFormat::Edn,
        ModelKind::MultiRegister,
    );
}

const W0: &str =
    r#"{"index":0,"time_ns":1,"process":0,"type":"invoke","f":"cas","key":"x","value":[null,1]}"#;
const W1: &str =
    r#"{"index":1,"time_ns":2,"process":0,"type":"ok","f":"cas","key":"x","value":[null,1]}"#;

#[test]
fn errors_come_in_the_order_the_whole_file_readers_gave_them() {
    // A line that is not JSON is reported even after an earlier structural mistake.
    let orphan = W1.replace("\"index\":1", "\"index\":2");
    let text = format!("{W0}\n{W1}\n{orphan}\n{{oops\n");
    let err = read_history_bytes(text.as_bytes(), HistoryFormat::Auto).unwrap_err();
    assert!(
        matches!(err, HistoryError::BadJson { line: 4, .. }),
        "{err}"
    );
    let err =
        PreparedHistory::read(text.as_bytes(), ModelKind::Kv, &ReadOptions::default()).unwrap_err();
    assert!(
        matches!(err, HistoryError::BadJson { line: 4, .. }),
        "{err}"
    );
    // A structural mistake comes before an operation the model cannot check.
    let text = format!("{W0}\n{W1}\n{orphan}\n");
    let err = PreparedHistory::read(
        text.as_bytes(),
        ModelKind::Register,
        &ReadOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, HistoryError::CompletionWithoutInvoke { .. }),
        "{err}"
    );
    // Streamed, the model's refusal names the line of the invoke.
    let text = format!("{W0}\n{W1}\n");
    let err = PreparedHistory::read(
        text.as_bytes(),
        ModelKind::Register,
        &ReadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1: model `register` cannot check `cas` operations"
    );
}

#[test]
fn progress_counts_operations_read_and_keys_decided() {
    let events = generate(GenSpec {
        seed: 3,
        operations: 10_000,
        keys: 7,
        clients: 5,
        info_rate: 0.0,
        kv_ops: true,
    });
    let mut text = Vec::new();
    write_jsonl(&mut text, &events).expect("writes");
    let progress = Progress::new();
    let options = ReadOptions {
        progress: Some(&progress),
        ..ReadOptions::default()
    };
    let prepared = PreparedHistory::read(text.as_slice(), ModelKind::Kv, &options).expect("reads");
    let read = progress.snapshot();
    assert_eq!(read.phase, ProgressPhase::Reading);
    assert_eq!(read.events_read, events.len() as u64);
    assert_eq!(read.operations_read, 10_000);
    let report = prepared.check(&kvlab_config(ModelKind::Kv), Some(&progress));
    assert_eq!(report.verdict, Verdict::Valid);
    let done = progress.snapshot();
    assert_eq!(done.phase, ProgressPhase::Done);
    assert_eq!((done.keys_decided, done.keys_total), (7, 7));
}
