//! Reading and writing JSONL histories: every malformed line and every structural
//! mistake is an error naming its line.

mod common;

use common::Hist;
use kvlab_checker::{
    EventType, HistoryError, MAX_LINE_BYTES, OpFn, read_jsonl, read_jsonl_file, write_jsonl,
};
use serde_json::json;

fn read_err(text: &str) -> HistoryError {
    read_jsonl(text.as_bytes()).expect_err("malformed history")
}

const W0: &str =
    r#"{"index":0,"time_ns":1,"process":0,"type":"invoke","f":"write","key":"x","value":1}"#;
const W1: &str =
    r#"{"index":1,"time_ns":2,"process":0,"type":"ok","f":"write","key":"x","value":1}"#;

#[test]
fn written_history_reads_back_identically() {
    let mut h = Hist::new();
    h.write(0, "x", 1).read(1, "x", Some(1));
    h.invoke(2, OpFn::Cas, "x", json!([1, 2]))
        .info(2, OpFn::Cas, "x", json!([1, 2]));
    h.invoke(3, OpFn::Delete, "x", json!(null));
    h.events[0].node = Some(2);
    h.events[1].error = Some("slow".into());
    let mut out = Vec::new();
    write_jsonl(&mut out, &h.events).expect("written");
    assert_eq!(read_jsonl(out.as_slice()).expect("read back"), h.events);
}

#[test]
fn documented_example_lines_parse() {
    let text = concat!(
        r#"{"index":0,"time_ns":1200,"process":3,"type":"invoke","f":"write","key":"k7","value":4}"#,
        "\n",
        r#"{"index":1,"time_ns":9100,"process":3,"type":"ok","f":"write","key":"k7","value":4}"#,
        "\n"
    );
    let events = read_jsonl(text.as_bytes()).expect("valid");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventType::Ok);
    assert_eq!(events[1].key.as_deref(), Some("k7"));
}

#[test]
fn blank_lines_and_crlf_are_allowed_and_still_counted() {
    let text = format!("\n{W0}\r\n   \n{W1}\r\n\n");
    assert_eq!(read_jsonl(text.as_bytes()).expect("valid").len(), 2);
    let text = format!("\n\n{W0}\nnot json\n");
    let err = read_err(&text);
    assert!(
        matches!(err, HistoryError::BadJson { line: 4, .. }),
        "{err}"
    );
}

#[test]
fn last_line_needs_no_newline() {
    let text = format!("{W0}\n{W1}");
    assert_eq!(read_jsonl(text.as_bytes()).expect("valid").len(), 2);
}

#[test]
fn bad_json_names_its_line_and_column() {
    let err = read_err(&format!("{W0}\n{{\"index\":1,\n"));
    assert!(
        matches!(err, HistoryError::BadJson { line: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("line 2: not valid JSON"),
        "{err}"
    );
    assert!(err.to_string().contains("column"), "{err}");
    assert!(
        !err.to_string().contains("at line 1"),
        "serde's own line is hidden: {err}"
    );
}

#[test]
fn unknown_field_names_its_line_and_the_field() {
    let err = read_err(&format!(
        "{W0}\n{}\n",
        W1.replace("\"value\":1", "\"value\":1,\"colour\":\"red\"")
    ));
    assert!(
        matches!(err, HistoryError::BadEvent { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
}

#[test]
fn unknown_f_names_its_line() {
    let err = read_err(&W0.replace("\"write\"", "\"append\""));
    assert!(
        matches!(err, HistoryError::BadEvent { line: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("unknown variant `append`"),
        "{err}"
    );
}

#[test]
fn unknown_type_names_its_line() {
    let err = read_err(&format!("{W0}\n{}", W1.replace("\"ok\"", "\"done\"")));
    assert!(
        matches!(err, HistoryError::BadEvent { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unknown variant `done`"), "{err}");
}

#[test]
fn missing_field_names_its_line() {
    let err = read_err(&W0.replace("\"process\":0,", ""));
    assert!(
        matches!(err, HistoryError::BadEvent { line: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("missing field `process`"), "{err}");
}

#[test]
fn wrong_value_shapes_name_their_line_and_the_shape() {
    let cases = [
        (
            W0.replace("\"value\":1", "\"value\":true"),
            "an integer or a string",
        ),
        (W0.replace("\"value\":1", "\"value\":1.5"), "an integer"),
        (W0.replace("\"value\":1", "\"value\":null"), "an integer"),
        (
            W0.replace("\"write\"", "\"cas\"")
                .replace("\"value\":1", "\"value\":[1]"),
            "[old, new]",
        ),
        (
            W0.replace("\"write\"", "\"cas\"")
                .replace("\"value\":1", "\"value\":[1,null]"),
            "[old, new]",
        ),
        (W0.replace("\"write\"", "\"read\""), "null"),
        (W0.replace("\"write\"", "\"delete\""), "null"),
        (W0.replace("\"write\"", "\"txn\""), "a list of micro-ops"),
    ];
    for (line, expected) in cases {
        let err = read_err(&format!("\n{line}\n"));
        match &err {
            HistoryError::BadValue {
                at, expected: e, ..
            } => {
                assert_eq!(at.to_string(), "line 2", "{line}");
                assert!(e.contains(expected), "{line}: {err}");
            }
            other => panic!("{line}: expected BadValue, got {other}"),
        }
    }
    let bad_read = format!(
        "{}\n{}",
        W0.replace("\"write\"", "\"read\"")
            .replace("\"value\":1", "\"value\":null"),
        W1.replace("\"write\"", "\"read\"")
            .replace("\"value\":1", "\"value\":[1]")
    );
    let err = read_err(&bad_read);
    assert!(
        matches!(
            err,
            HistoryError::BadValue {
                f: OpFn::Read,
                kind: EventType::Ok,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("line 2: `read` ok needs"),
        "{err}"
    );
}

#[test]
fn overlong_line_is_refused() {
    let long = format!("{W0}{}\n", " ".repeat(MAX_LINE_BYTES));
    let err = read_err(&long);
    assert!(
        matches!(err, HistoryError::LineTooLong { line: 1, .. }),
        "{err}"
    );
}

#[test]
fn completion_without_invoke_names_its_line() {
    let err = read_err(&format!(
        "{W0}\n{W1}\n{}",
        W1.replace("\"index\":1", "\"index\":2")
    ));
    assert!(
        matches!(
            err,
            HistoryError::CompletionWithoutInvoke { process: 0, .. }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "line 3: process 0 completes an operation it never invoked"
    );
}

#[test]
fn two_open_invokes_on_one_process_are_refused() {
    let err = read_err(&format!(
        "{W0}\n\n{}",
        W0.replace("\"index\":0", "\"index\":1")
    ));
    assert!(
        matches!(
            err,
            HistoryError::ConcurrentInvoke {
                process: 0,
                open_index: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("line 3:"), "{err}");
}

#[test]
fn completion_with_another_f_is_refused() {
    let err = read_err(&format!(
        "{W0}\n{}",
        W1.replace("\"write\"", "\"cas\"")
            .replace("\"value\":1", "\"value\":null")
    ));
    assert!(
        matches!(
            err,
            HistoryError::CompletionFnMismatch {
                invoked: OpFn::Write,
                completed: OpFn::Cas,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("line 2:"), "{err}");
}

#[test]
fn completion_with_another_key_or_value_is_refused() {
    let err = read_err(&format!("{W0}\n{}", W1.replace("\"x\"", "\"y\"")));
    assert!(
        matches!(err, HistoryError::CompletionKeyMismatch { .. }),
        "{err}"
    );
    let err = read_err(&format!(
        "{W0}\n{}",
        W1.replace("\"value\":1", "\"value\":2")
    ));
    assert!(
        matches!(err, HistoryError::CompletionValueMismatch { .. }),
        "{err}"
    );
    // A completion may leave the key and value out.
    let terse = W1.replace(",\"key\":\"x\"", "").replace(",\"value\":1", "");
    assert_eq!(
        read_jsonl(format!("{W0}\n{terse}").as_bytes())
            .expect("valid")
            .len(),
        2
    );
}

#[test]
fn process_that_ended_in_info_must_not_invoke_again() {
    let info = W1.replace("\"ok\"", "\"info\"");
    let again = W0.replace("\"index\":0", "\"index\":2");
    let err = read_err(&format!("{W0}\n{info}\n{again}"));
    assert!(
        matches!(
            err,
            HistoryError::InvokeAfterInfo {
                process: 0,
                info_index: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("line 3:"), "{err}");
    assert!(err.to_string().contains("new process id"), "{err}");
}

#[test]
fn indices_must_grow() {
    let err = read_err(&format!(
        "{W0}\n{}",
        W1.replace("\"index\":1", "\"index\":0")
    ));
    assert!(
        matches!(
            err,
            HistoryError::IndexNotIncreasing {
                index: 0,
                previous: 0,
                ..
            }
        ),
        "{err}"
    );
    // Gaps are fine.
    let gap = W1.replace("\"index\":1", "\"index\":9");
    assert_eq!(
        read_jsonl(format!("{W0}\n{gap}").as_bytes())
            .expect("valid")
            .len(),
        2
    );
}

#[test]
fn missing_file_error_names_the_path() {
    let err = read_jsonl_file(std::path::Path::new("/nonexistent/history.jsonl")).unwrap_err();
    assert!(matches!(err, HistoryError::Open { .. }));
    assert!(
        err.to_string().contains("/nonexistent/history.jsonl"),
        "{err}"
    );
}

#[test]
fn history_file_reads_like_a_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, format!("{W0}\n{W1}\n")).expect("written");
    assert_eq!(read_jsonl_file(&path).expect("valid").len(), 2);
}
