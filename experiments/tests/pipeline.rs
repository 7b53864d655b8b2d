//! End-to-end runs on the simulator: determinism, a linearizable baseline that passes,
//! a non-linearizable one that is caught, and the liveness requirement.

use std::path::Path;

use kvlab_experiments::run::{ReportPolicy, RunOptions, RunVerdict, run_experiment};
use kvlab_experiments::spec::Spec;

/// A short spec: 4 s of faults, 2 s of liveness.
fn spec(system: &str, faults: &str) -> Spec {
    let text = format!(
        r#"
name = "short"
system = "{system}"
nodes = 5
[time]
duration_s = 4
liveness_s = 2
[workload]
clients = 6
keys = 4
timeout_ms = 300
think_time_ms = 5
[nemesis]
faults = [{faults}]
start_after_s = 0.5
interval_s = 1
fault_duration_s = 0.6
"#
    );
    Spec::from_toml_str(&text, Path::new("short.toml")).unwrap()
}

fn run(spec: &Spec, seed: u64, dir: &Path) -> kvlab_experiments::run::RunOutcome {
    run_experiment(
        spec,
        &RunOptions {
            seed,
            run_dir: dir.to_path_buf(),
            reproduce: kvlab_experiments::reproduce::Reproduce::new(
                Path::new("short.toml"),
                spec,
                seed,
                None,
            ),
            report: ReportPolicy::Never,
            progress: false,
        },
    )
    .unwrap()
}

const ALL_FAULTS: &str = r#""partition-halves", "partition-random", "one-way", "isolate", "bridge", "ring", "crash", "pause", "clock-drift", "loss""#;

#[test]
fn same_seed_gives_byte_identical_history_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("single", ALL_FAULTS);
    let a = run(&s, 7, &tmp.path().join("a"));
    let b = run(&s, 7, &tmp.path().join("b"));
    for f in ["history.jsonl", "events.jsonl", "spec.toml"] {
        let x = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let y = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(!x.is_empty(), "{f} is empty");
        assert!(x == y, "{f} differs between two runs of seed 7");
    }
    assert_eq!(a.summary.ops, b.summary.ops);
    assert!(a.summary.ops.total > 100, "{:?}", a.summary.ops);
    assert!(a.summary.faults.injected >= 3, "{:?}", a.summary.faults);
}

#[test]
fn different_seeds_give_different_histories() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("single", ALL_FAULTS);
    run(&s, 1, &tmp.path().join("a"));
    run(&s, 2, &tmp.path().join("b"));
    let x = std::fs::read(tmp.path().join("a/history.jsonl")).unwrap();
    let y = std::fs::read(tmp.path().join("b/history.jsonl")).unwrap();
    assert_ne!(x, y);
    let x = std::fs::read(tmp.path().join("a/events.jsonl")).unwrap();
    let y = std::fs::read(tmp.path().join("b/events.jsonl")).unwrap();
    assert_ne!(x, y);
}

#[test]
fn single_holder_under_every_fault_is_valid_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("single", ALL_FAULTS);
    for seed in 1..=3 {
        let dir = tmp.path().join(format!("seed-{seed}"));
        let o = run(&s, seed, &dir);
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}: {:?}", o.check);
        assert!(
            o.summary.liveness.ok,
            "seed {seed}: {:?}",
            o.summary.liveness
        );
        assert!(o.summary.ops.ok > 0);
        for f in [
            "spec.toml",
            "meta.json",
            "history.jsonl",
            "events.jsonl",
            "summary.json",
        ] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
        assert!(!dir.join("linearizability.html").exists());
        // The history the runner wrote is the one the checker reads back.
        let h = kvlab_checker::read_jsonl_file(&dir.join("history.jsonl")).unwrap();
        assert_eq!(h.len() as u64, o.summary.ops.total * 2);
    }
}

#[test]
fn async_primary_is_caught_losing_or_reordering_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("async-primary", r#""partition-halves", "crash""#);
    let mut invalid = Vec::new();
    for seed in 1..=4 {
        let dir = tmp.path().join(format!("seed-{seed}"));
        let o = run(&s, seed, &dir);
        if o.verdict == RunVerdict::Invalid {
            let key = o.failing_key.clone().expect("an invalid run names its key");
            assert!(key.starts_with('k'), "{key}");
            assert!(o.check.invalid_keys.contains(&key));
            assert!(dir.join("linearizability.html").is_file());
            assert_eq!(o.verdict.exit_code(), 1);
            invalid.push(seed);
        }
    }
    assert!(
        !invalid.is_empty(),
        "no seed of 1..=4 was found non-linearizable"
    );
}

#[test]
fn summary_counts_agree_with_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("single", r#""crash""#);
    let o = run(&s, 3, tmp.path());
    let ops = &o.summary.ops;
    assert_eq!(
        ops.total,
        ops.ok + ops.fail + ops.info,
        "in-flight ops were left open"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["ops"]["ok"], ops.ok);
    assert_eq!(json["checker"]["verdict"], "valid");
    assert_eq!(json["duration_s"], 6.0);
    for f in ["all", "read", "write", "cas"] {
        assert!(json["latency_ms"][f]["p99"].is_number(), "{f}");
    }
    assert!(json["sim"]["events_processed"].as_u64().unwrap() > 0);
}

#[test]
fn a_cluster_that_never_answers_fails_liveness() {
    // Loss configured in the network model is not a fault, so healing does not undo it.
    // Client 0 talks to n1, the holder, and progresses; client 1 talks to n2, whose
    // forwards to n1 are all lost, so it never completes an operation.
    let text = r#"
name = "dead"
system = "single"
nodes = 2
[time]
duration_s = 1
liveness_s = 1
[workload]
clients = 2
timeout_ms = 100
[network]
loss_probability = 1.0
"#;
    let s = Spec::from_toml_str(text, Path::new("dead.toml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&s, 1, tmp.path());
    assert_eq!(
        o.verdict,
        RunVerdict::LivenessFailed,
        "{:?}",
        o.summary.liveness
    );
    assert!(!o.summary.liveness.ok);
    assert_eq!(o.summary.liveness.clients_with_progress, 1);
    assert_eq!(o.verdict.exit_code(), 1);
}
