//! Both search engines (kvlab's and porcupine-rs) agree on every history of the corpus
//! besides the etcd logs (tested in `formats.rs`) and the small random histories
//! (`brute_force.rs`): generated histories with info operations, hand-made edge cases,
//! multi-register transactions; the reads-from engine agrees wherever it decides; and the
//! budgets answer unknown, never valid.

mod common;

use std::time::Duration;

use common::{GenSpec, Hist, generate};
use kvlab_checker::{CheckConfig, Engine, HistoryEvent, ModelKind, OpFn, Verdict, check_with};
use serde_json::{Value, json};

fn verdict(events: &[HistoryEvent], model: ModelKind, engine: Engine) -> Verdict {
    check_with(
        events,
        &CheckConfig {
            model,
            timeout: None,
            memory_limit_bytes: None,
            engine,
            stop_at_first_invalid: false,
        },
    )
    .expect("well formed")
    .verdict
}

fn agree(events: &[HistoryEvent], model: ModelKind, what: &str) -> Verdict {
    let kvlab = verdict(events, model, Engine::Kvlab);
    let porcupine = verdict(events, model, Engine::Porcupine);
    let race = verdict(events, model, Engine::Race);
    let reads_from = verdict(events, model, Engine::ReadsFrom);
    assert_eq!(
        kvlab, porcupine,
        "{what}: kvlab {kvlab}, porcupine {porcupine}"
    );
    assert_eq!(race, kvlab, "{what}: race {race}");
    // The reads-from engine may leave a key with repeated values undecided, never wrong.
    assert!(
        reads_from == kvlab || reads_from == Verdict::Unknown,
        "{what}: reads-from {reads_from}"
    );
    kvlab
}

#[test]
fn engines_agree_on_generated_histories_valid_and_corrupted() {
    for seed in 0..12 {
        let spec = GenSpec {
            seed,
            operations: 300,
            keys: 3,
            clients: 6,
            info_rate: 0.1,
            kv_ops: true,
        };
        let mut events = generate(spec);
        assert_eq!(
            agree(&events, ModelKind::Kv, &format!("seed {seed}")),
            Verdict::Valid
        );
        // Corrupt one ok read so the history (very likely) stops being linearizable.
        if let Some(e) = events
            .iter_mut()
            .rev()
            .find(|e| e.f == OpFn::Read && e.kind == kvlab_checker::EventType::Ok)
        {
            e.value = json!(-7);
        }
        assert_eq!(
            agree(&events, ModelKind::Kv, &format!("corrupted seed {seed}")),
            Verdict::Invalid
        );
    }
}

/// One event of a hand-made case: process, type, function, value.
type Step = (u64, kvlab_checker::EventType, OpFn, Value);

#[test]
fn engines_agree_on_hand_made_edge_cases() {
    use kvlab_checker::EventType::{Fail, Info, Invoke, Ok};
    let k = Some("k");
    let cases: Vec<(&str, Vec<Step>, Verdict)> = vec![
        (
            "info cas that may not have happened is acceptable from any state",
            vec![
                (0, Invoke, OpFn::Write, json!(1)),
                (0, Ok, OpFn::Write, json!(1)),
                (1, Invoke, OpFn::Cas, json!([5, 6])),
                (1, Info, OpFn::Cas, Value::Null),
                (2, Invoke, OpFn::Read, Value::Null),
                (2, Ok, OpFn::Read, json!(1)),
            ],
            Verdict::Valid,
        ),
        (
            "info cas that did happen explains a later read",
            vec![
                (0, Invoke, OpFn::Write, json!(1)),
                (0, Ok, OpFn::Write, json!(1)),
                (1, Invoke, OpFn::Cas, json!([1, 6])),
                (1, Info, OpFn::Cas, Value::Null),
                (2, Invoke, OpFn::Read, Value::Null),
                (2, Ok, OpFn::Read, json!(6)),
            ],
            Verdict::Valid,
        ),
        (
            "a fail cas did not happen",
            vec![
                (0, Invoke, OpFn::Write, json!(1)),
                (0, Ok, OpFn::Write, json!(1)),
                (1, Invoke, OpFn::Cas, json!([1, 6])),
                (1, Fail, OpFn::Cas, Value::Null),
                (2, Invoke, OpFn::Read, Value::Null),
                (2, Ok, OpFn::Read, json!(6)),
            ],
            Verdict::Invalid,
        ),
        (
            "an info write may take effect long after its invoke",
            vec![
                (0, Invoke, OpFn::Write, json!(2)),
                (0, Info, OpFn::Write, Value::Null),
                (1, Invoke, OpFn::Write, json!(1)),
                (1, Ok, OpFn::Write, json!(1)),
                (1, Invoke, OpFn::Read, Value::Null),
                (1, Ok, OpFn::Read, json!(1)),
                (2, Invoke, OpFn::Read, Value::Null),
                (2, Ok, OpFn::Read, json!(2)),
            ],
            Verdict::Valid,
        ),
        (
            "a value cannot come back after being overwritten",
            vec![
                (0, Invoke, OpFn::Write, json!(2)),
                (0, Ok, OpFn::Write, json!(2)),
                (1, Invoke, OpFn::Write, json!(1)),
                (1, Ok, OpFn::Write, json!(1)),
                (1, Invoke, OpFn::Read, Value::Null),
                (1, Ok, OpFn::Read, json!(2)),
            ],
            Verdict::Invalid,
        ),
        (
            "concurrent reads may see old and new",
            vec![
                (0, Invoke, OpFn::Write, json!(1)),
                (1, Invoke, OpFn::Read, Value::Null),
                (1, Ok, OpFn::Read, Value::Null),
                (2, Invoke, OpFn::Read, Value::Null),
                (2, Ok, OpFn::Read, json!(1)),
                (0, Ok, OpFn::Write, json!(1)),
            ],
            Verdict::Valid,
        ),
        (
            "reads may not go back in time",
            vec![
                (0, Invoke, OpFn::Write, json!(1)),
                (2, Invoke, OpFn::Read, Value::Null),
                (2, Ok, OpFn::Read, json!(1)),
                (1, Invoke, OpFn::Read, Value::Null),
                (1, Ok, OpFn::Read, Value::Null),
                (0, Ok, OpFn::Write, json!(1)),
            ],
            Verdict::Invalid,
        ),
        (
            "a crashed process's write never returns",
            vec![
                (0, Invoke, OpFn::Write, json!(3)),
                (1, Invoke, OpFn::Read, Value::Null),
                (1, Ok, OpFn::Read, json!(3)),
                (1, Invoke, OpFn::Read, Value::Null),
                (1, Ok, OpFn::Read, json!(3)),
            ],
            Verdict::Valid,
        ),
    ];
    for (what, steps, expected) in cases {
        let mut h = Hist::new();
        for (p, kind, f, v) in steps {
            h.push(p, kind, f, k, v);
        }
        assert_eq!(agree(&h.events, ModelKind::Kv, what), expected, "{what}");
    }
}

#[test]
fn engines_agree_on_multi_register_transactions() {
    use kvlab_checker::EventType::{Invoke, Ok};
    let mut h = Hist::new();
    let t = |ops: Value| ops;
    h.push(
        0,
        Invoke,
        OpFn::Txn,
        None,
        t(json!([["w", "x", 1], ["w", "y", 1]])),
    );
    h.push(
        1,
        Invoke,
        OpFn::Txn,
        None,
        t(json!([["r", "x", null], ["r", "y", null]])),
    );
    h.push(
        0,
        Ok,
        OpFn::Txn,
        None,
        t(json!([["w", "x", 1], ["w", "y", 1]])),
    );
    h.push(
        1,
        Ok,
        OpFn::Txn,
        None,
        t(json!([["r", "x", 1], ["r", "y", null]])),
    );
    // Torn read: x new, y old, though both were written atomically.
    assert_eq!(
        agree(&h.events, ModelKind::MultiRegister, "torn read"),
        Verdict::Invalid
    );
    let mut good = Hist::new();
    good.push(
        0,
        Invoke,
        OpFn::Txn,
        None,
        json!([["w", "x", 1], ["w", "y", 1]]),
    );
    good.push(
        1,
        Invoke,
        OpFn::Txn,
        None,
        json!([["r", "x", null], ["r", "y", null]]),
    );
    good.push(
        0,
        Ok,
        OpFn::Txn,
        None,
        json!([["w", "x", 1], ["w", "y", 1]]),
    );
    good.push(
        1,
        Ok,
        OpFn::Txn,
        None,
        json!([["r", "x", 1], ["r", "y", 1]]),
    );
    assert_eq!(
        agree(&good.events, ModelKind::MultiRegister, "atomic read"),
        Verdict::Valid
    );
}

#[test]
fn a_budget_that_runs_out_answers_unknown_never_valid() {
    let events = generate(GenSpec {
        seed: 3,
        operations: 4000,
        keys: 1,
        clients: 20,
        info_rate: 0.05,
        kv_ops: true,
    });
    for engine in [Engine::Kvlab, Engine::Porcupine] {
        let r = check_with(
            &events,
            &CheckConfig {
                model: ModelKind::Kv,
                timeout: Some(Duration::from_micros(1)),
                memory_limit_bytes: None,
                engine,
                stop_at_first_invalid: true,
            },
        )
        .expect("well formed");
        assert_eq!(r.verdict, Verdict::Unknown, "{engine}");
        assert!(r.budget_exhausted);
        assert_eq!(r.partitions[0].verdict, Verdict::Unknown);
        assert!(r.partitions[0].unknown_reason.is_some());
    }
}
