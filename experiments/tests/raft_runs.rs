//! `system = "raft"` end to end on the simulator: leader-aimed faults and membership
//! changes bite (the summary shows them), the run stays linearizable with its invariants
//! checked, and a seed replays byte for byte.

mod common;

use std::path::Path;

use kvlab_experiments::run::{RunOutcome, RunVerdict};
use kvlab_experiments::spec::Spec;

/// Five nodes, three bootstrap voters, membership and leader faults for 6 s.
fn spec() -> Spec {
    let text = r#"
name = "raft-short"
system = "raft"
nodes = 5
[time]
duration_s = 6
liveness_s = 3
[workload]
clients = 5
keys = 4
timeout_ms = 300
think_time_ms = 5
[raft]
initial_voters = 3
snapshot_every_entries = 100
[nemesis]
faults = ["membership", "crash-leader", "isolate-leader", "duplicate", "reorder"]
start_after_s = 1
interval_s = 0.8
fault_duration_s = 0.5
"#;
    Spec::from_toml_str(text, Path::new("raft-short.toml")).expect("valid spec")
}

fn run(spec: &Spec, seed: u64, dir: &Path) -> RunOutcome {
    common::run_quiet(spec, "raft-short.toml", seed, dir)
}

#[test]
fn membership_and_leader_faults_bite_and_runs_stay_valid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = spec();
    for seed in 1..=3 {
        let o = run(&s, seed, &tmp.path().join(format!("s{seed}")));
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}: {:?}", o.summary);
        let ev = &o.summary.node_events;
        assert!(
            ev.get("leader_elected").copied().unwrap_or(0) >= 2,
            "seed {seed}: {ev:?}"
        );
        // The group grew from 3 to 5 voters, and membership faults changed it again.
        assert!(
            ev.get("config_committed").copied().unwrap_or(0) >= 4 * 5,
            "seed {seed}: {ev:?}"
        );
        let f = &o.summary.faults.by_kind;
        assert!(f.values().sum::<u64>() >= 5, "seed {seed}: {f:?}");
        let events =
            std::fs::read_to_string(tmp.path().join(format!("s{seed}/events.jsonl"))).unwrap();
        assert!(
            events.contains("\"admin_command\""),
            "seed {seed}: no admin command"
        );
    }
}

#[test]
fn same_seed_replays_the_same_raft_run_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = spec();
    run(&s, 5, &tmp.path().join("a"));
    run(&s, 5, &tmp.path().join("b"));
    for f in ["history.jsonl", "events.jsonl"] {
        let a = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let b = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(a == b, "{f} differs between two runs of seed 5");
    }
}

#[test]
fn replace_voter_swaps_spares_in_jointly_and_one_at_a_time_and_runs_stay_valid() {
    let text = spec()
        .to_toml_string()
        .expect("serializable")
        .replace("initial_voters = 3", "initial_voters = 4");
    let mut s = Spec::from_toml_str(&text, Path::new("raft-replace.toml")).expect("valid spec");
    s.nemesis.faults = vec![
        kvlab_experiments::spec::FaultKind::ReplaceVoter,
        kvlab_experiments::spec::FaultKind::CrashLeader,
        kvlab_experiments::spec::FaultKind::PartitionHalves,
    ];
    s.nemesis.spare_learners = 1;
    s.nemesis.interval_s = 0.4;
    s.nemesis.fault_duration_s = 0.3;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut joint, mut single) = (0, 0);
    for seed in 1..=4 {
        let o = run(&s, seed, &tmp.path().join(format!("r{seed}")));
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}: {:?}", o.summary);
        let events =
            std::fs::read_to_string(tmp.path().join(format!("r{seed}/events.jsonl"))).unwrap();
        joint += events.matches("EnterJoint").count();
        single += events.matches("one server at a time").count();
        assert!(
            o.summary
                .faults
                .by_kind
                .get("replace_voter")
                .copied()
                .unwrap_or(0)
                > 0,
            "seed {seed}: no replace-voter fault started: {:?}",
            o.summary.faults.by_kind
        );
    }
    assert!(
        joint > 0 && single > 0,
        "joint commands {joint}, one-at-a-time swaps {single}"
    );
}
