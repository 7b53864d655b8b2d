//! `kvlab check --model <isolation level>` end to end on transaction histories: Elle's
//! README example (EDN from elsewhere) is G1c, a Jepsen-shaped EDN history passes, the
//! JSON report carries the explanation, a forced budget overrun exits 3, and a register
//! model on a txn history (or a txn model on a register history) is a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kvlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .args(args)
        .output()
        .expect("kvlab runs")
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../checker/tests/data/txn")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn elles_readme_history_is_g1c_under_every_model() {
    let path = data("elle_readme_g1c.edn");
    for model in [
        "strict-serializable",
        "serializable",
        "snapshot-isolation",
        "read-committed",
    ] {
        let out = kvlab(&["check", path.to_str().expect("utf-8"), "--model", model]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{model}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("invalid under {model}")),
            "{stdout}"
        );
        assert!(stdout.contains("G1c"), "{stdout}");
        assert!(stdout.contains("a contradiction!"), "{stdout}");
    }
}

#[test]
fn a_jepsen_edn_history_passes_and_the_json_report_explains() {
    let valid = data("serializable_list_append.edn");
    let out = kvlab(&[
        "check",
        valid.to_str().expect("utf-8"),
        "--model",
        "strict-serializable",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("valid under strict-serializable"));
    let g1c = data("elle_readme_g1c.edn");
    let out = kvlab(&[
        "check",
        g1c.to_str().expect("utf-8"),
        "--model",
        "txn",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["verdict"], "invalid");
    assert_eq!(report["model"], "strict-serializable");
    assert_eq!(report["forbidden"][0], "G1c");
    assert_eq!(report["anomalies"][0]["cycle"][0]["edge"], "wr");
}

#[test]
fn a_check_forced_past_its_budget_exits_3() {
    let valid = data("serializable_list_append.edn");
    let out = kvlab(&[
        "check",
        valid.to_str().expect("utf-8"),
        "--model",
        "serializable",
        "--timeout-s",
        "0.000000001",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("unknown under serializable"), "{stdout}");
    assert!(stdout.contains("the time budget ran out"), "{stdout}");
}

#[test]
fn models_and_histories_that_do_not_match_are_clear_errors() {
    let txn = data("elle_readme_g1c.edn");
    let out = kvlab(&["check", txn.to_str().expect("utf-8"), "--model", "register"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("a list-append transaction history cannot be checked under `register`"),
        "{}",
        text(&out.stderr)
    );
    let out = kvlab(&[
        "check",
        txn.to_str().expect("utf-8"),
        "--model",
        "serializable",
        "--html",
        "x.html",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("single-key models"),
        "{}",
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let register = dir.path().join("register.jsonl");
    std::fs::write(
        &register,
        "{\"index\":0,\"time_ns\":1,\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"x\",\"value\":1}\n\
         {\"index\":1,\"time_ns\":2,\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"key\":\"x\",\"value\":1}\n",
    )
    .expect("write");
    let out = kvlab(&[
        "check",
        register.to_str().expect("utf-8"),
        "--model",
        "serializable",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 1: `write` is not a transaction"),
        "{stderr}"
    );
}
