//! Linearizability verdicts on hand-made histories, the per-key split, the models'
//! operation sets, the time budget and the visualization.

mod common;

use std::time::Duration;

use common::{GenSpec, Hist, generate};
use kvlab_checker::{
    CheckError, CheckOptions, CheckReport, HistoryError, HistoryEvent, ModelKind, OpFn, Verdict,
    check, write_visualization,
};
use serde_json::{Value, json};

fn run(events: &[HistoryEvent], model: ModelKind) -> CheckReport {
    check(
        events,
        &CheckOptions {
            model,
            timeout: None,
        },
    )
    .expect("well-formed history")
}

fn kv(events: &[HistoryEvent]) -> CheckReport {
    run(events, ModelKind::Kv)
}

#[test]
fn sequential_history_is_valid() {
    let mut h = Hist::new();
    h.read(0, "x", None)
        .write(0, "x", 1)
        .read(1, "x", Some(1))
        .write(1, "x", 2);
    h.read(0, "x", Some(2));
    let r = kv(&h.events);
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!((r.operations, r.operations_ok, r.keys_checked), (5, 5, 1));
    assert!(r.invalid_keys.is_empty() && r.unknown_keys.is_empty());
    assert!(!r.budget_exhausted);
}

#[test]
fn empty_history_is_valid() {
    let r = kv(&[]);
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(r.keys_checked, 0);
}

#[test]
fn stale_read_is_invalid_and_names_the_key() {
    let mut h = Hist::new();
    h.write(0, "a", 1)
        .write(0, "b", 1)
        .write(0, "b", 2)
        .read(1, "a", Some(1));
    h.read(1, "b", Some(1)); // b is 2 by now
    let r = kv(&h.events);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.invalid_keys, vec!["b".to_owned()]);
    assert_eq!(r.keys_checked, 2);
    assert!(r.to_string().contains("invalid keys: \"b\""), "{r}");
}

#[test]
fn lost_write_is_invalid() {
    let mut h = Hist::new();
    h.write(0, "x", 1).read(1, "x", None);
    assert_eq!(kv(&h.events).verdict, Verdict::Invalid);
}

#[test]
fn read_of_a_value_never_written_is_invalid() {
    let mut h = Hist::new();
    h.write(0, "x", 1).read(1, "x", Some(7));
    assert_eq!(kv(&h.events).verdict, Verdict::Invalid);
}

#[test]
fn info_write_that_later_shows_up_in_a_read_is_valid() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Write, "x", json!(2))
        .info(1, OpFn::Write, "x", json!(2))
        .read(0, "x", Some(1)) // not applied yet…
        .read(0, "x", Some(2)) // …applied now
        .read(2, "x", Some(2));
    let r = kv(&h.events);
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(r.operations_info, 1);
    assert_eq!(r.unobserved_info_dropped, 0);
}

#[test]
fn info_write_never_seen_is_valid_and_dropped_before_the_search() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Write, "x", json!(2))
        .info(1, OpFn::Write, "x", json!(2))
        .read(0, "x", Some(1))
        .read(0, "x", Some(1));
    let r = kv(&h.events);
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(r.unobserved_info_dropped, 1);
    assert_eq!(r.operations_checked, 3);
}

#[test]
fn info_write_cannot_take_effect_before_its_invoke() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .read(0, "x", Some(2)) // 2 is read before the write of 2 was invoked
        .invoke(1, OpFn::Write, "x", json!(2))
        .info(1, OpFn::Write, "x", json!(2));
    assert_eq!(kv(&h.events).verdict, Verdict::Invalid);
}

#[test]
fn invoke_without_completion_counts_as_info() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Write, "x", json!(2))
        .read(0, "x", Some(2));
    let r = kv(&h.events);
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!((r.operations, r.operations_info), (3, 1));
}

#[test]
fn failed_write_seen_by_a_read_is_invalid() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Write, "x", json!(2))
        .fail(1, OpFn::Write, "x", json!(2))
        .read(0, "x", Some(2));
    let r = kv(&h.events);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.operations_fail, 1);
}

#[test]
fn failed_write_unseen_is_valid() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Write, "x", json!(2))
        .fail(1, OpFn::Write, "x", json!(2))
        .read(0, "x", Some(1));
    assert_eq!(kv(&h.events).verdict, Verdict::Valid);
}

#[test]
fn info_read_constrains_nothing() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Read, "x", Value::Null)
        .info(1, OpFn::Read, "x", json!(99));
    assert_eq!(kv(&h.events).verdict, Verdict::Valid);
}

#[test]
fn ok_cas_needs_the_expected_value() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(0, OpFn::Cas, "x", json!([1, 2]))
        .ok(0, OpFn::Cas, "x", json!([1, 2]))
        .read(0, "x", Some(2));
    assert_eq!(
        run(&h.events, ModelKind::CasRegister).verdict,
        Verdict::Valid
    );

    let mut bad = Hist::new();
    bad.write(0, "x", 5)
        .invoke(0, OpFn::Cas, "x", json!([1, 2]))
        .ok(0, OpFn::Cas, "x", json!([1, 2]));
    assert_eq!(
        run(&bad.events, ModelKind::CasRegister).verdict,
        Verdict::Invalid
    );
}

#[test]
fn cas_from_absent_uses_null() {
    let mut h = Hist::new();
    h.invoke(0, OpFn::Cas, "x", json!([null, 3]))
        .ok(0, OpFn::Cas, "x", json!([null, 3]))
        .read(1, "x", Some(3));
    assert_eq!(kv(&h.events).verdict, Verdict::Valid);
}

#[test]
fn info_cas_may_have_happened() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Cas, "x", json!([1, 2]))
        .info(1, OpFn::Cas, "x", json!([1, 2]))
        .read(0, "x", Some(2));
    assert_eq!(kv(&h.events).verdict, Verdict::Valid);
}

#[test]
fn info_cas_may_not_have_happened() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Cas, "x", json!([1, 2]))
        .info(1, OpFn::Cas, "x", json!([1, 2]))
        .read(0, "x", Some(1))
        .write(0, "x", 3)
        .read(0, "x", Some(3));
    assert_eq!(kv(&h.events).verdict, Verdict::Valid);
}

#[test]
fn info_cas_with_a_mismatched_expected_value_is_accepted_as_a_no_op() {
    // cas(7 → 2) can never apply, yet its `new` value is observed, so it is searched
    // and must be accepted as a no-op from state 1; the read of 2 stays impossible.
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(1, OpFn::Cas, "x", json!([7, 2]))
        .info(1, OpFn::Cas, "x", json!([7, 2]))
        .read(0, "x", Some(1));
    assert_eq!(kv(&h.events).verdict, Verdict::Valid);
    h.read(0, "x", Some(2));
    assert_eq!(kv(&h.events).verdict, Verdict::Invalid);
}

#[test]
fn concurrent_write_and_read_may_order_either_way() {
    for seen in [None, Some(1)] {
        let mut h = Hist::new();
        h.invoke(0, OpFn::Write, "x", json!(1))
            .invoke(1, OpFn::Read, "x", Value::Null)
            .ok(1, OpFn::Read, "x", json!(seen))
            .ok(0, OpFn::Write, "x", json!(1));
        assert_eq!(kv(&h.events).verdict, Verdict::Valid, "read saw {seen:?}");
    }
}

#[test]
fn read_after_completed_write_must_see_it() {
    let mut h = Hist::new();
    h.invoke(0, OpFn::Write, "x", json!(1))
        .ok(0, OpFn::Write, "x", json!(1))
        .invoke(1, OpFn::Read, "x", Value::Null)
        .ok(1, OpFn::Read, "x", json!(null));
    assert_eq!(kv(&h.events).verdict, Verdict::Invalid);
}

#[test]
fn new_then_old_reads_during_one_write_are_invalid() {
    // Two sequential reads, both concurrent with a write: once a read sees the new
    // value, a later read must not see the old one.
    let mut h = Hist::new();
    h.write(0, "x", 0)
        .invoke(0, OpFn::Write, "x", json!(1))
        .read(1, "x", Some(1))
        .read(1, "x", Some(0))
        .ok(0, OpFn::Write, "x", json!(1));
    assert_eq!(kv(&h.events).verdict, Verdict::Invalid);
}

#[test]
fn delete_makes_a_key_read_absent() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(0, OpFn::Delete, "x", Value::Null)
        .ok(0, OpFn::Delete, "x", Value::Null)
        .read(1, "x", None);
    assert_eq!(kv(&h.events).verdict, Verdict::Valid);
    h.read(1, "x", Some(1));
    assert_eq!(kv(&h.events).verdict, Verdict::Invalid);
}

#[test]
fn multi_key_history_is_split_and_only_the_bad_keys_are_invalid() {
    let mut h = Hist::new();
    for k in 0..50 {
        let key = format!("k{k}");
        h.write(k % 7, &key, k as i64)
            .read((k + 1) % 7, &key, Some(k as i64));
    }
    h.read(3, "k13", Some(12)).read(3, "k40", None);
    for model in [ModelKind::Register, ModelKind::CasRegister, ModelKind::Kv] {
        let r = run(&h.events, model);
        assert_eq!(r.verdict, Verdict::Invalid, "{model}");
        assert_eq!(r.keys_checked, 50);
        assert_eq!(r.invalid_keys, vec!["k13".to_owned(), "k40".to_owned()]);
    }
}

#[test]
fn register_models_check_unkeyed_histories_as_one_register() {
    let mut h = Hist::new();
    h.push(
        0,
        kvlab_checker::EventType::Invoke,
        OpFn::Write,
        None,
        json!(1),
    )
    .push(0, kvlab_checker::EventType::Ok, OpFn::Write, None, json!(1))
    .push(
        1,
        kvlab_checker::EventType::Invoke,
        OpFn::Read,
        None,
        Value::Null,
    )
    .push(1, kvlab_checker::EventType::Ok, OpFn::Read, None, json!(1));
    let r = run(&h.events, ModelKind::Register);
    assert_eq!((r.verdict, r.keys_checked), (Verdict::Valid, 1));
    let err = check(
        &h.events,
        &CheckOptions {
            model: ModelKind::Kv,
            timeout: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, HistoryError::MissingKey { f: OpFn::Write, .. }),
        "{err}"
    );
    assert_eq!(err.to_string(), "event #0 (index 0): `write` needs a `key`");
}

#[test]
fn register_model_rejects_cas_naming_the_event() {
    let mut h = Hist::new();
    h.write(0, "x", 1)
        .invoke(0, OpFn::Cas, "x", json!([1, 2]))
        .ok(0, OpFn::Cas, "x", json!([1, 2]));
    let err = check(
        &h.events,
        &CheckOptions {
            model: ModelKind::Register,
            timeout: None,
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "event #2 (index 2): model `register` cannot check `cas` operations"
    );
}

#[test]
fn cas_register_rejects_delete_and_txn_and_kv_rejects_multi_key_txn() {
    let mut h = Hist::new();
    h.invoke(0, OpFn::Delete, "x", Value::Null);
    let err = check(
        &h.events,
        &CheckOptions {
            model: ModelKind::CasRegister,
            timeout: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            HistoryError::UnsupportedOp {
                f: OpFn::Delete,
                ..
            }
        ),
        "{err}"
    );

    let mut t = Hist::new();
    t.push(
        0,
        kvlab_checker::EventType::Invoke,
        OpFn::Txn,
        None,
        json!([["r", "x", null], ["w", "y", 1]]),
    );
    for model in [ModelKind::CasRegister, ModelKind::Kv] {
        let err = check(
            &t.events,
            &CheckOptions {
                model,
                timeout: None,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, HistoryError::UnsupportedOp { f: OpFn::Txn, .. }),
            "{err}"
        );
    }
    // The same transaction is what multi-register checks.
    let r = check(
        &t.events,
        &CheckOptions {
            model: ModelKind::MultiRegister,
            timeout: None,
        },
    )
    .expect("multi-register checks transactions");
    assert_eq!(r.verdict, Verdict::Valid);
}

#[test]
fn generated_linearizable_histories_are_valid() {
    for seed in 0..8 {
        let events = generate(GenSpec {
            seed,
            operations: 400,
            keys: 4,
            clients: 5,
            info_rate: 0.1,
            kv_ops: true,
        });
        let r = kv(&events);
        assert_eq!(r.verdict, Verdict::Valid, "seed {seed}: {r}");
        assert!(r.operations_info > 0, "seed {seed} should exercise info");
    }
}

#[test]
fn generated_history_with_one_impossible_read_is_invalid_on_that_key() {
    for seed in 0..8 {
        let mut events = generate(GenSpec {
            seed,
            operations: 300,
            keys: 3,
            clients: 4,
            info_rate: 0.05,
            kv_ops: true,
        });
        let victim = events
            .iter()
            .position(|e| e.f == OpFn::Read && e.kind == kvlab_checker::EventType::Ok)
            .expect("some ok read");
        events[victim].value = json!(-1); // never written
        let key = events[victim].key.clone().expect("keyed");
        let r = kv(&events);
        assert_eq!(r.verdict, Verdict::Invalid, "seed {seed}");
        assert_eq!(r.invalid_keys, vec![key]);
    }
}

/// A single key on which the search is exponential and the reads-from engine cannot
/// decide: 40 concurrent info writes of four repeated values, every value read (so none
/// is dropped), then a read of the value a completed write wrote before them all — stale,
/// since one of the info writes took effect before the first of those reads completed,
/// but nothing short of a search over the info writes shows it.
fn pathological() -> Vec<HistoryEvent> {
    let mut h = Hist::new();
    let writers = 40u64;
    h.write(100, "hot", -1);
    for p in 0..writers {
        h.invoke(p, OpFn::Write, "hot", json!(p % 4));
    }
    for v in 0..4 {
        h.read(100, "hot", Some(v));
    }
    h.read(100, "hot", Some(-1));
    h.write(101, "cold", 1).read(101, "cold", Some(1));
    h.events
}

#[test]
fn budget_that_runs_out_answers_unknown_and_says_so() {
    let events = pathological();
    let opts = CheckOptions {
        model: ModelKind::Kv,
        timeout: Some(Duration::from_millis(30)),
    };
    let r = check(&events, &opts).expect("well formed");
    assert_eq!(r.verdict, Verdict::Unknown, "{r}");
    assert!(r.budget_exhausted);
    assert_eq!(r.unknown_keys, vec!["hot".to_owned()]);
    assert!(r.invalid_keys.is_empty());
    assert_eq!(r.keys_checked, 2);
    assert_eq!(r.max_concurrency_key.as_deref(), Some("hot"));
    assert!(r.max_concurrency >= 40);
    assert!(
        r.notes.iter().any(|n| n.contains("ran out")),
        "{:?}",
        r.notes
    );
    assert!(r.elapsed_ms < 5_000.0, "the budget bounds the check: {r}");
}

#[test]
fn budget_never_hides_an_invalid_key() {
    let mut events = pathological();
    let mut h = Hist { events: Vec::new() };
    h.write(200, "bad", 1).read(200, "bad", Some(2));
    let base = events.last().map_or(0, |e| e.index + 1);
    for (i, mut e) in h.events.into_iter().enumerate() {
        e.index = base + i as u64;
        events.push(e);
    }
    let opts = CheckOptions {
        model: ModelKind::Kv,
        timeout: Some(Duration::from_millis(30)),
    };
    let r = check(&events, &opts).expect("well formed");
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.invalid_keys, vec!["bad".to_owned()]);
    assert_eq!(r.unknown_keys, vec!["hot".to_owned()]);
    assert!(r.budget_exhausted);
}

#[test]
fn report_serializes_with_the_documented_names() {
    let mut h = Hist::new();
    h.write(0, "x", 1);
    let r = run(&h.events, ModelKind::CasRegister);
    let json = serde_json::to_value(&r).expect("serializable");
    assert_eq!(json["verdict"], "valid");
    assert_eq!(json["model"], "cas-register");
    assert_eq!(json["keys_checked"], 1);
    let back: CheckReport = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, r);
    assert_eq!(
        ModelKind::from_name("cas-register"),
        Some(ModelKind::CasRegister)
    );
    assert_eq!(ModelKind::from_name("txn"), None);
}

#[test]
fn visualization_of_the_first_invalid_key_is_written() {
    let mut h = Hist::new();
    h.write(0, "good", 1).read(1, "good", Some(1));
    h.write(0, "bad", 1)
        .write(0, "bad", 2)
        .read(1, "bad", Some(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.html");
    let opts = CheckOptions {
        model: ModelKind::Kv,
        timeout: None,
    };
    write_visualization(&h.events, &opts, None, &path).expect("written");
    let html = std::fs::read_to_string(&path).expect("readable");
    assert!(html.contains("read() → 1"), "describes the failing read");
    assert!(html.contains("write(2)"));
    // The longest partial linearization, write(1) then write(2), is drawn with its states.
    assert!(
        html.contains(r#""stateDescription":"2""#),
        "partial linearizations drawn"
    );
    assert!(!html.contains("good"), "only the invalid key is drawn");

    let named = dir.path().join("good.html");
    write_visualization(&h.events, &opts, Some("good"), &named).expect("written");
    assert!(
        std::fs::read_to_string(&named)
            .expect("readable")
            .contains("process 1")
    );
}

#[test]
fn visualization_without_an_invalid_key_or_of_an_unknown_key_is_an_error() {
    let mut h = Hist::new();
    h.write(0, "x", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v.html");
    let opts = CheckOptions {
        model: ModelKind::Kv,
        timeout: None,
    };
    let err = write_visualization(&h.events, &opts, None, &path).unwrap_err();
    assert!(
        matches!(
            err,
            CheckError::NoInvalidKey {
                verdict: Verdict::Valid
            }
        ),
        "{err}"
    );
    let err = write_visualization(&h.events, &opts, Some("nope"), &path).unwrap_err();
    assert!(matches!(err, CheckError::UnknownKey { .. }), "{err}");
    assert!(!path.exists());
}

#[test]
fn huge_or_zero_budgets_do_not_panic() {
    let mut h = Hist::new();
    for i in 0..30 {
        h.write(i % 3, "x", i as i64)
            .read((i + 1) % 3, "x", Some(i as i64));
    }
    let huge = CheckOptions {
        model: ModelKind::Kv,
        timeout: Some(Duration::MAX),
    };
    assert_eq!(
        check(&h.events, &huge).expect("well formed").verdict,
        Verdict::Valid
    );
    let zero = CheckOptions {
        model: ModelKind::Kv,
        timeout: Some(Duration::ZERO),
    };
    let r = check(&h.events, &zero).expect("well formed");
    assert_eq!(
        r.verdict,
        Verdict::Unknown,
        "a zero budget decides nothing large: {r}"
    );
    assert!(r.budget_exhausted);
}
