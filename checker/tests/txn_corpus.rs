//! The transaction checker's unit corpus: one hand-built history per anomaly class, each
//! found with its explanation under the models that forbid it and allowed by the others;
//! valid histories pass under every model; Elle's README example gets Elle's verdict;
//! malformed input is an error that names its line.

mod common;

use common::txn::{TxnHist, a, r, rr, w};
use kvlab_checker::txn::{
    AnomalyKind, TxnCheckOptions, TxnError, TxnModel, TxnReport, check_txn, read_txn_history,
};
use kvlab_checker::{HistoryFormat, Verdict};

use AnomalyKind as A;
use TxnModel::StrictSerializable;

/// Checks `h` under every model; asserts `kind` is found (with an explanation holding
/// each of `phrases`) and the verdict is invalid exactly under the models that forbid it.
fn assert_found(h: &TxnHist, kind: AnomalyKind, phrases: &[&str]) -> TxnReport {
    let mut strict = None;
    for model in TxnModel::ALL {
        let report = h.check(model);
        let forbidden = model.forbids(kind);
        if forbidden {
            assert_eq!(
                report.verdict,
                Verdict::Invalid,
                "{kind} under {model}:\n{report}"
            );
            let found: Vec<_> = report.of_kind(kind).collect();
            assert!(
                !found.is_empty(),
                "{kind} not reported under {model}:\n{report}"
            );
            for p in phrases {
                assert!(
                    found[0].explanation.contains(p),
                    "{kind}: {p:?} not in\n{}",
                    found[0].explanation
                );
            }
            assert!(found[0].forbidden);
            assert!(
                report
                    .not
                    .iter()
                    .chain(&report.also_not)
                    .any(|m| *m == model)
            );
            assert_eq!(report.not.len(), 1);
        } else {
            assert!(
                !report.forbidden.contains(&kind),
                "{kind} forbidden under {model}?\n{report}"
            );
        }
        if model == StrictSerializable {
            strict = Some(report);
        }
    }
    strict.expect("strict is one of the models")
}

fn assert_valid_everywhere(h: &TxnHist) {
    for model in TxnModel::ALL {
        let report = h.check(model);
        assert_eq!(report.verdict, Verdict::Valid, "under {model}:\n{report}");
        assert!(report.anomalies.is_empty(), "{report}");
    }
}

#[test]
fn valid_list_append_histories_pass_under_every_model() {
    let mut h = TxnHist::default();
    h.invoke(0, &[a("x", 1), r("y", &[])]);
    h.invoke(1, &[r("x", &[]), a("y", 1)]);
    h.complete(1, "ok", &[r("x", &[]), a("y", 1)]);
    h.complete(0, "ok", &[a("x", 1), r("y", &[1])]);
    h.ok(1, &[r("x", &[1]), a("x", 2), r("x", &[1, 2])]);
    h.fail(2, &[a("x", 3)]);
    h.invoke(3, &[a("y", 2)]);
    h.complete(3, "info", &[a("y", 2)]);
    h.ok(0, &[r("x", &[1, 2]), r("y", &[1, 2])]);
    assert_valid_everywhere(&h);
    let report = h.check(StrictSerializable);
    assert_eq!((report.ok, report.info, report.fail), (4, 1, 1));
    assert!(report.edges.ww >= 2 && report.edges.wr >= 2 && report.edges.realtime > 0);
}

#[test]
fn valid_rw_register_histories_pass_under_every_model() {
    let mut h = TxnHist::default();
    h.ok(0, &[rr("x", None), w("x", 1)]);
    h.ok(1, &[rr("x", Some(1)), w("x", 2), w("y", 1)]);
    h.ok(0, &[rr("x", Some(2)), rr("y", Some(1))]);
    assert_valid_everywhere(&h);
}

/// Elle's README: three committed transactions; T3's read of x = [1 2] orders the appends
/// to x, and Elle answers `{:valid? false, :anomaly-types (:G1c)}`.
#[test]
fn elles_readme_g1c_example_gets_elles_verdict() {
    let edn = "[{:type :ok, :value [[:append :x 1] [:r :y [1]]]}
           {:type :ok, :value [[:append :x 2] [:append :y 1]]}
           {:type :ok, :value [[:r :x [1 2]]]}]";
    let history = read_txn_history(edn.as_bytes(), HistoryFormat::Auto).expect("Elle's EDN");
    for model in TxnModel::ALL {
        let report = check_txn(&history, &TxnCheckOptions::new(model));
        assert_eq!(report.verdict, Verdict::Invalid, "{report}");
        assert_eq!(report.forbidden, vec![A::G1c], "{report}");
        let g1c = report.of_kind(A::G1c).next().expect("explained");
        assert_eq!(g1c.txns.len(), 2);
        assert_eq!(
            g1c.cycle.iter().map(|s| s.edge).collect::<Vec<_>>().len(),
            2
        );
        let text = &g1c.explanation;
        assert!(
            text.contains("ends in T") && text.contains("append of 1"),
            "{text}"
        );
        assert!(
            text.contains("appended 2 after") && text.contains("to key x"),
            "{text}"
        );
        assert!(text.contains("a contradiction!"), "{text}");
    }
}

#[test]
fn g0_write_cycle() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1), a("y", 1)]);
    h.ok(1, &[a("x", 2), a("y", 2)]);
    h.ok(2, &[r("x", &[1, 2]), r("y", &[2, 1])]);
    let report = assert_found(&h, A::G0, &["appended 2 after", "appended 1 after", "(ww)"]);
    assert_eq!(report.of_kind(A::G0).next().map(|a| a.cycle.len()), Some(2));
}

#[test]
fn g1a_aborted_read() {
    let mut h = TxnHist::default();
    h.fail(0, &[a("x", 1)]);
    h.ok(1, &[r("x", &[1])]);
    assert_found(&h, A::G1a, &["failed", "holds 1"]);
}

#[test]
fn g1b_intermediate_read() {
    let mut h = TxnHist::default();
    h.invoke(0, &[a("x", 1), a("x", 2)]);
    h.ok(1, &[r("x", &[1])]);
    h.complete(0, "ok", &[a("x", 1), a("x", 2)]);
    h.ok(1, &[r("x", &[1, 2])]);
    assert_found(&h, A::G1b, &["intermediate", "ending in 1"]);
}

#[test]
fn g1c_circular_information_flow() {
    let mut h = TxnHist::default();
    h.invoke(0, &[a("x", 1), r("y", &[])]);
    h.invoke(1, &[a("y", 1), r("x", &[])]);
    h.complete(0, "ok", &[a("x", 1), r("y", &[1])]);
    h.complete(1, "ok", &[a("y", 1), r("x", &[1])]);
    assert_found(&h, A::G1c, &["(wr)", "which ends in"]);
}

#[test]
fn g_single_read_skew() {
    let mut h = TxnHist::default();
    h.invoke(0, &[a("x", 1), a("y", 1)]);
    h.invoke(1, &[r("x", &[]), r("y", &[])]);
    h.complete(0, "ok", &[a("x", 1), a("y", 1)]);
    h.complete(1, "ok", &[r("x", &[]), r("y", &[1])]);
    h.ok(2, &[r("x", &[1])]);
    assert_found(&h, A::GSingle, &["lacks", "(rw)", "(wr)"]);
}

#[test]
fn g_nonadjacent_long_fork() {
    let mut h = TxnHist::default();
    for (p, m) in [
        (0, vec![r("x", &[]), r("w", &[])]),
        (1, vec![a("x", 1)]),
        (2, vec![r("x", &[]), r("w", &[])]),
        (3, vec![a("w", 1)]),
    ] {
        h.invoke(p, &m);
    }
    h.complete(1, "ok", &[a("x", 1)]);
    h.complete(3, "ok", &[a("w", 1)]);
    h.complete(0, "ok", &[r("x", &[]), r("w", &[1])]);
    h.complete(2, "ok", &[r("x", &[1]), r("w", &[])]);
    let report = assert_found(&h, A::GNonadjacent, &["(rw)", "(wr)"]);
    assert!(
        report.of_kind(A::G2Item).next().is_none(),
        "the most specific class only"
    );
}

#[test]
fn g2_item_write_skew() {
    let mut h = TxnHist::default();
    h.invoke(0, &[r("x", &[]), r("y", &[]), a("x", 1)]);
    h.invoke(1, &[r("x", &[]), r("y", &[]), a("y", 1)]);
    h.complete(0, "ok", &[r("x", &[]), r("y", &[]), a("x", 1)]);
    h.complete(1, "ok", &[r("x", &[]), r("y", &[]), a("y", 1)]);
    h.ok(2, &[r("x", &[1]), r("y", &[1])]);
    let report = assert_found(&h, A::G2Item, &["lacks", "(rw)"]);
    assert_eq!(
        report.of_kind(A::G2Item).next().map(|a| a.cycle.len()),
        Some(2)
    );
}

#[test]
fn g_single_process_stale_read_of_the_same_process() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(0, &[r("x", &[])]);
    h.ok(1, &[r("x", &[1])]);
    assert_found(&h, A::GSingleProcess, &["began on process 0", "(process)"]);
}

#[test]
fn g_single_realtime_stale_read() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(1, &[r("x", &[])]);
    h.ok(2, &[r("x", &[1])]);
    assert_found(&h, A::GSingleRealtime, &["was invoked", "(realtime)"]);
}

#[test]
fn g0_realtime_writes_ordered_against_real_time() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(1, &[a("x", 2)]);
    h.ok(2, &[r("x", &[2, 1])]);
    assert_found(&h, A::G0Realtime, &["(ww)", "(realtime)"]);
}

#[test]
fn g1c_process_reads_from_the_future_of_its_own_process() {
    // T2 (process 0, after T1) appends y; T1 read it: wr T2→T1, process T1→T2.
    let mut h = TxnHist::default();
    h.invoke(1, &[r("z", &[])]);
    h.ok(0, &[r("y", &[2])]);
    h.ok(0, &[a("y", 2)]);
    h.complete(1, "ok", &[r("z", &[])]);
    assert_found(&h, A::G1cProcess, &["(wr)", "(process)"]);
}

#[test]
fn internal_inconsistency() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1), r("x", &[])]);
    assert_found(
        &h,
        A::Internal,
        &["its own earlier operations", "ending in [1]"],
    );
    let mut h = TxnHist::default();
    h.ok(0, &[rr("x", None), w("x", 3), rr("x", None)]);
    assert_found(&h, A::Internal, &["should have read 3"]);
}

#[test]
fn future_read() {
    let mut h = TxnHist::default();
    h.ok(0, &[r("x", &[1]), a("x", 1)]);
    assert_found(&h, A::FutureRead, &["appends only later"]);
}

#[test]
fn incompatible_order() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(1, &[a("x", 2)]);
    h.ok(2, &[r("x", &[1, 2])]);
    h.ok(3, &[r("x", &[2])]);
    assert_found(
        &h,
        A::IncompatibleOrder,
        &["[1 2]", "[2]", "neither is a prefix"],
    );
}

#[test]
fn duplicate_elements() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(1, &[r("x", &[1, 1])]);
    assert_found(&h, A::DuplicateElements, &["appears more than once"]);
}

#[test]
fn garbage_reads() {
    let mut h = TxnHist::default();
    h.ok(0, &[r("x", &[9])]);
    assert_found(&h, A::GarbageRead, &["no transaction ever appended 9"]);
    let mut h = TxnHist::default();
    h.ok(0, &[rr("x", Some(9))]);
    assert_found(&h, A::GarbageRead, &["no transaction ever wrote 9"]);
}

#[test]
fn lost_append_in_the_final_read() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(0, &[a("x", 2)]);
    h.ok(1, &[r("x", &[2])]);
    let report = assert_found(
        &h,
        A::LostAppend,
        &["committed the append of 1", "lacks it"],
    );
    assert!(
        report
            .of_kind(A::LostAppend)
            .all(|a| a.key.as_deref() == Some("x"))
    );
}

#[test]
fn partial_txn_in_the_final_reads() {
    let mut h = TxnHist::default();
    h.invoke(0, &[a("x", 1), a("y", 1)]);
    h.complete(0, "info", &[a("x", 1), a("y", 1)]);
    h.ok(1, &[r("x", &[1]), r("y", &[])]);
    assert_found(&h, A::PartialTxn, &["1 to x", "not of 1 to y", "in part"]);
}

#[test]
fn rw_register_cycles() {
    let mut h = TxnHist::default();
    h.invoke(0, &[rr("x", None), w("x", 1)]);
    h.invoke(1, &[rr("x", None), w("x", 2)]);
    h.complete(0, "ok", &[rr("x", None), w("x", 1)]);
    h.complete(1, "ok", &[rr("x", None), w("x", 2)]);
    assert_found(&h, A::G2Item, &["overwrote x", "(rw)"]);
    // Write skew over registers with blind writes, seen through the initial state.
    let mut h = TxnHist::default();
    h.invoke(0, &[rr("y", None), w("x", 1)]);
    h.invoke(1, &[rr("x", None), w("y", 1)]);
    h.complete(0, "ok", &[rr("y", None), w("x", 1)]);
    h.complete(1, "ok", &[rr("x", None), w("y", 1)]);
    assert_found(&h, A::G2Item, &["its initial state", "a later version"]);
    let mut h = TxnHist::default();
    h.invoke(0, &[w("x", 1), rr("y", None)]);
    h.invoke(1, &[w("y", 2), rr("x", None)]);
    h.complete(0, "ok", &[w("x", 1), rr("y", Some(2))]);
    h.complete(1, "ok", &[w("y", 2), rr("x", Some(1))]);
    assert_found(&h, A::G1c, &["written by", "(wr)"]);
    let mut h = TxnHist::default();
    h.fail(0, &[w("x", 1)]);
    h.ok(1, &[rr("x", Some(1))]);
    assert_found(&h, A::G1a, &["failed"]);
}

#[test]
fn jsonl_and_edn_give_the_same_report() {
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1), a("y", 1)]);
    h.ok(1, &[a("x", 2), a("y", 2)]);
    h.ok(2, &[r("x", &[1, 2]), r("y", &[2, 1])]);
    let from_json = read_txn_history(h.jsonl().as_bytes(), HistoryFormat::Auto).expect("jsonl");
    let options = TxnCheckOptions::new(StrictSerializable);
    let (mut a, mut b) = (
        check_txn(&from_json, &options),
        check_txn(&h.history(), &options),
    );
    a.elapsed_ms = 0.0;
    b.elapsed_ms = 0.0;
    assert_eq!(a, b);
    assert_eq!(a.forbidden, vec![A::G0]);
    // Integer keys read as their decimal names.
    let json = r#"{"index":0,"process":0,"type":"invoke","f":"txn","value":[["append",7,1]]}
{"index":1,"process":0,"type":"ok","f":"txn","value":[["append",7,1]]}"#;
    let h = read_txn_history(json.as_bytes(), HistoryFormat::Jsonl).expect("integer keys");
    assert_eq!(h.keys, vec!["7".to_owned()]);
}

fn read_error(text: &str) -> TxnError {
    read_txn_history(text.as_bytes(), HistoryFormat::Auto).expect_err("malformed")
}

#[test]
fn malformed_input_is_an_error_naming_its_line() {
    let e = read_error(
        "{:index 0 :type :invoke :process 0 :f :txn :value [[:append :x 1]]}\n\
         {:index 1 :type :ok :process 0 :f :txn :value [[:append :x 1]]}\n\
         {:index 2 :type :invoke :process 0 :f :txn :value [[:bogus :x 1]]}\n",
    );
    assert!(e.to_string().starts_with("line 3:"), "{e}");
    let e = read_error(
        "{\"index\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n\
         {\"index\":1,\"process\":0,\"type\":\"ok\",\"f\":\"txn\",\"value\":[[\"r\",\"x\",[1,\"a\"]]]}\n",
    );
    assert!(e.to_string().starts_with("line 2:"), "{e}");
    let e = read_error(
        "{\"index\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"x\",\"value\":1}\n",
    );
    assert!(matches!(e, TxnError::NotTxn { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("--model register"), "{e}");
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(1, &[a("x", 1)]);
    let e = read_error(&h.edn());
    assert!(
        matches!(
            e,
            TxnError::NotUnique {
                line: 3,
                first_line: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = read_error("{:index 0 :type :ok :process 0 :f :txn :value [[:append :x 1]]}\n");
    assert!(e.to_string().contains("line 1: process 0 completes"), "{e}");
    let mut h = TxnHist::default();
    h.ok(0, &[a("x", 1)]);
    h.ok(1, &[w("y", 1)]);
    assert!(matches!(
        read_error(&h.edn()),
        TxnError::MixedWorkload { line: 3, .. }
    ));
    let e = read_error("[{:index 0 :type :invoke :process 0 :f :txn :value [[:r :x nil]]}\n");
    assert!(e.to_string().contains("close the history"), "{e}");
}

fn check_edn(edn: &str, model: TxnModel) -> TxnReport {
    let history = read_txn_history(edn.as_bytes(), HistoryFormat::Auto).expect("Elle's EDN");
    check_txn(&history, &TxnCheckOptions::new(model))
}

/// Asserts the verdict under `model` and exactly these forbidden classes.
fn assert_elle(name: &str, edn: &str, model: TxnModel, expected: &[AnomalyKind]) {
    let report = check_edn(edn, model);
    let verdict = if expected.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    assert_eq!(report.verdict, verdict, "{name} under {model}:\n{report}");
    assert_eq!(
        report.forbidden, expected,
        "{name} under {model}:\n{report}"
    );
}

/// Cases from Elle's own test suite (`test/elle/list_append_test.clj`), with the
/// verdicts Elle gives them, mapped to the four models here (Elle's repeatable-read and
/// strong-session models have no counterpart: strict-serializable stands for them).
#[test]
fn elles_test_cases_get_elles_verdicts() {
    use TxnModel::{ReadCommitted, Serializable, SnapshotIsolation};
    // G1a: T2 sees T1's failed write (Elle writes only T1's completion; Jepsen records
    // the invoke too).
    let g1a = "{:process 0 :type :invoke :value [[:append :x 1]]}
               {:process 0 :type :fail :value [[:append :x 1]]}
               {:type :ok :value [[:r :x [1]]]}";
    assert_elle("G1a", g1a, ReadCommitted, &[A::G1a]);
    // G1c: T2 writes x after T1, but T1 observes T2's write on y.
    let g1c = "{:type :ok :value [[:append :x 1] [:r :y [1]]]}
               {:type :ok :value [[:append :x 2] [:append :y 1]]}
               {:type :ok :value [[:r :x [1 2]] [:r :y [1]]]}";
    assert_elle("G1c", g1c, ReadCommitted, &[A::G1c]);
    // G-single: valid under G1 (read committed), G-single-item otherwise.
    let single = "{:type :ok :value [[:append :x 1] [:append :y 1]]}
                  {:type :ok :value [[:append :x 2] [:r :y nil]]}
                  {:type :ok :value [[:r :x [1 2]]]}";
    assert_elle("G-single", single, ReadCommitted, &[]);
    assert_elle("G-single", single, SnapshotIsolation, &[A::GSingle]);
    // G2: a pure anti-dependency cycle; read committed passes it.
    let g2 = "{:type :ok :value [[:append :x 1] [:r :y nil]]}
              {:type :ok :value [[:append :y 1] [:r :x nil]]}";
    assert_elle("G2", g2, ReadCommitted, &[]);
    assert_elle("G2", g2, SnapshotIsolation, &[]);
    assert_elle("G2", g2, Serializable, &[A::G2Item]);
    // Strong SI violation: T2 anti-depends on T1 but begins after T1 completed.
    let realtime = "{:process 0, :index 0, :type :invoke, :value [[:append :x 1]]}
                    {:process 0, :index 1, :type :ok,     :value [[:append :x 1]]}
                    {:process 1, :index 2, :type :invoke, :value [[:append :x 2]]}
                    {:process 1, :index 3, :type :ok,     :value [[:append :x 2]]}
                    {:process 2, :index 4, :type :invoke, :value [[:r :x nil]]}
                    {:process 2, :index 5, :type :ok,     :value [[:r :x [1]]]}
                    {:process 3, :index 6, :type :invoke, :value [[:r :x nil]]}
                    {:process 3, :index 7, :type :ok,     :value [[:r :x [1 2]]]}";
    assert_elle("strong SI", realtime, Serializable, &[]);
    assert_elle(
        "strong SI",
        realtime,
        StrictSerializable,
        &[A::GSingleRealtime],
    );
    // Strong session SI violation: the same, in one process's order.
    let process = realtime
        .replace(":process 2, :index 4", ":process 1, :index 4")
        .replace(":process 2, :index 5", ":process 1, :index 5");
    assert_elle("strong session SI", &process, Serializable, &[]);
    assert_elle(
        "strong session SI",
        &process,
        StrictSerializable,
        &[A::GSingleProcess],
    );
    // G-nonadjacent-process (Elle issue 17).
    let nonadjacent = "{:process 0, :index 0, :type :invoke, :value [[:r :x nil] [:r :z nil]]}
                       {:process 0, :index 1, :type :ok,     :value [[:r :x nil] [:r :z [1]]]}
                       {:process 1, :index 2, :type :invoke, :value [[:append :x 1]]}
                       {:process 1, :index 3, :type :ok,     :value [[:append :x 1]]}
                       {:process 1, :index 4, :type :invoke, :value [[:r :z nil]]}
                       {:process 1, :index 5, :type :ok,     :value [[:r :z nil]]}
                       {:process 2, :index 6, :type :invoke, :value [[:append :z 1]]}
                       {:process 2, :index 7, :type :ok,     :value [[:append :z 1]]}";
    assert_elle("G-nonadjacent-process", nonadjacent, Serializable, &[]);
    let report = check_edn(nonadjacent, StrictSerializable);
    assert_eq!(report.verdict, Verdict::Invalid, "{report}");
    assert!(
        report.forbidden.contains(&A::GNonadjacentProcess),
        "{report}"
    );
    // Contradictory read orders: G1c and incompatible-order.
    let contradictory = "{:type :ok :value [[:append :x 1] [:r :y [1]]]}
                         {:type :ok :value [[:append :x 2]]}
                         {:type :ok :value [[:append :x 3] [:append :y 1]]}
                         {:type :ok :value [[:r :x [1 3]]]}
                         {:type :ok :value [[:r :x [1 2 3]]]}";
    assert_elle(
        "contradictory",
        contradictory,
        ReadCommitted,
        &[A::G1c, A::IncompatibleOrder],
    );
    // G1b: Elle reports G1b and G-single-item under strict-serializable; the read is
    // also the final read of x and lacks 2, which kvlab adds as lost-append.
    let g1b = "{:process 0 :type :invoke :value [[:append :x 1] [:append :x 2]]}
               {:process 0 :type :ok :value [[:append :x 1] [:append :x 2]]}
               {:process 1 :type :invoke :value [[:r :x nil]]}
               {:process 1 :type :ok :value [[:r :x [1]]]}";
    let report = check_edn(g1b, StrictSerializable);
    for kind in [A::G1b, A::GSingle] {
        assert!(report.forbidden.contains(&kind), "{kind}: {report}");
    }
}
