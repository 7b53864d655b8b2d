//! Disk faults and clock jumps in simulated runs (issue 14): a node whose synced log
//! record is damaged refuses to start and stays down, never serving from a corrupt log;
//! a node whose fsyncs fail stops at its next fsync and recovers once the disk works; a
//! clock stepped forward only hastens timers. The history stays linearizable in each,
//! and a run with every one of them replays byte for byte.

mod common;

use std::path::Path;

use kvlab_experiments::run::{RunOutcome, RunVerdict};
use kvlab_experiments::spec::Spec;

/// Three Raft nodes with small log bounds, so that a second of writes leaves synced
/// bytes beyond a crash's reach; `{schedule}` is replaced by the test's faults.
const BASE: &str = r#"
name = "disk-faults"
system = "raft"
nodes = 3
[time]
duration_s = 6
liveness_s = 3
[workload]
clients = 6
keys = 4
timeout_ms = 400
think_time_ms = 2
[disk.storage]
segment_size_bytes = 16384
max_unsynced_bytes = 4096
[nemesis]
start_after_s = 0.2
{schedule}
[check]
model = "kv"
"#;

fn spec(schedule: &str) -> Spec {
    let text = BASE.replace("{schedule}", schedule);
    Spec::from_toml_str(&text, Path::new("disk-faults.toml")).expect("valid spec")
}

fn run(spec: &Spec, seed: u64, dir: &Path) -> RunOutcome {
    common::run_quiet(spec, "disk-faults.toml", seed, dir)
}

/// The `events.jsonl` lines of the run that mention `needle`.
fn events_with(dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_node_with_a_damaged_synced_record_refuses_to_start_and_the_rest_stay_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(
        "[[nemesis.schedule]]\nat_s = 3.0\nkind = \"disk-corrupt\"\ntargets = [2]\nduration_s = 0.5\n\
         [[nemesis.schedule]]\nat_s = 4.0\nkind = \"disk-corrupt\"\nduration_s = 0.5",
    );
    for seed in 1..=3 {
        let dir = tmp.path().join(format!("seed-{seed}"));
        let o = run(&spec, seed, &dir);
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}");
        let starts = events_with(&dir, "\"fault_start\"");
        assert!(
            starts
                .iter()
                .any(|e| e.contains("flipped") && e.contains("wal-")),
            "seed {seed}: no log byte was damaged: {starts:?}"
        );
        let ends = events_with(&dir, "refused to start and stays down");
        assert_eq!(ends.len(), 1, "seed {seed}: {ends:?}");
        assert!(
            ends[0].contains("wal recovery refused"),
            "seed {seed}: {}",
            ends[0]
        );
        // Never served again: n2 answers nothing after the fault ended.
        let end_ns = serde_json::from_str::<serde_json::Value>(&ends[0]).unwrap()["time_ns"]
            .as_u64()
            .expect("time_ns");
        let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
        let served_by_n2 = history
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["time_ns"].as_u64() > Some(end_ns) && e["type"] == "ok")
            .filter(|e| e["node"] == 2)
            .count();
        assert_eq!(served_by_n2, 0, "seed {seed}: n2 served from a damaged log");
        assert!(o.summary.ops.ok > 0);
        // A second node down for good would leave 1 of 3: that fault is skipped.
        assert_eq!(
            events_with(&dir, "could leave a group without a quorum").len(),
            1,
            "seed {seed}"
        );
    }
}

#[test]
fn a_node_whose_fsyncs_fail_stops_and_comes_back_when_the_disk_works() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec("faults = [\"disk-fsync-error\"]\ninterval_s = 1.0\nfault_duration_s = 0.6");
    let mut stopped = 0;
    for seed in 1..=3 {
        let dir = tmp.path().join(format!("seed-{seed}"));
        let o = run(&spec, seed, &dir);
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}");
        stopped += events_with(&dir, "injected fsync failure").len();
        let restarted = events_with(&dir, "restarted\"");
        assert!(!restarted.is_empty(), "seed {seed}: no node came back");
    }
    assert!(stopped > 0, "no node ever stopped at a failed fsync");
}

#[test]
fn clock_jumps_keep_the_history_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(
        "faults = [\"clock-jump\", \"crash\"]\ninterval_s = 0.3\nfault_duration_s = 0.2\nclock_jump_ms_max = 3000",
    );
    for seed in 1..=3 {
        let dir = tmp.path().join(format!("seed-{seed}"));
        let o = run(&spec, seed, &dir);
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}");
        assert!(
            !events_with(&dir, "clock steps forward").is_empty(),
            "seed {seed}: no clock jumped"
        );
    }
}

#[test]
fn a_run_with_every_disk_fault_replays_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(
        "faults = [\"disk-fsync-error\", \"clock-jump\", \"crash\"]\ninterval_s = 0.5\nfault_duration_s = 0.4\n[[nemesis.schedule]]\nat_s = 2.5\nkind = \"disk-corrupt\"\nduration_s = 0.3",
    );
    run(&spec, 9, &tmp.path().join("a"));
    run(&spec, 9, &tmp.path().join("b"));
    for f in ["history.jsonl", "events.jsonl"] {
        let x = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let y = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs of seed 9");
    }
}

#[test]
fn disk_faults_are_refused_off_the_simulator_and_skipped_where_they_would_lose_data() {
    for kind in ["disk-fsync-error", "disk-corrupt", "clock-jump"] {
        let text = BASE
            .replace("{schedule}", &format!("faults = [\"{kind}\"]"))
            .replace("nodes = 3", "nodes = 3\nbackend = \"local\"");
        let err = Spec::from_toml_str(&text, Path::new("disk-faults.toml"))
            .expect_err("refused on real nodes")
            .to_string();
        assert!(
            err.contains("nemesis.faults") && err.contains(kind),
            "{err}"
        );
    }
    let text = BASE.replace("{schedule}", "clock_jump_ms_max = 0.5");
    let err = Spec::from_toml_str(&text, Path::new("disk-faults.toml"))
        .expect_err("too small")
        .to_string();
    assert!(err.contains("nemesis.clock_jump_ms_max"), "{err}");
    // The single-copy baseline: a damaged disk would lose its data, so the fault skips.
    let tmp = tempfile::tempdir().unwrap();
    let single = Spec::from_toml_str(
        &BASE
            .replace("system = \"raft\"", "system = \"single\"")
            .replace(
                "{schedule}",
                "[[nemesis.schedule]]\nat_s = 1.0\nkind = \"disk-corrupt\"\nduration_s = 0.5",
            ),
        Path::new("disk-faults.toml"),
    )
    .unwrap();
    let o = run(&single, 1, &tmp.path().join("single"));
    assert_eq!(o.verdict, RunVerdict::Valid);
    assert_eq!(
        events_with(&tmp.path().join("single"), "keeps one copy").len(),
        1
    );
}

/// A `disk-corrupt` fault still running when the safety phase ends is healed with the
/// rest: its node refuses to start then, and the clients that used it move to the nodes
/// left, so every client makes progress in the liveness phase.
#[test]
fn a_node_refused_at_the_heal_is_no_longer_a_gateway_in_the_liveness_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(
        "[[nemesis.schedule]]\nat_s = 4.0\nkind = \"disk-corrupt\"\ntargets = [3]\nduration_s = 5.0",
    );
    for seed in 1..=2 {
        let dir = tmp.path().join(format!("seed-{seed}"));
        let o = run(&spec, seed, &dir);
        let refused = events_with(&dir, "refused to start and stays down");
        assert_eq!(refused.len(), 1, "seed {seed}: {refused:?}");
        assert!(
            refused[0].contains("healed for the liveness phase"),
            "seed {seed}"
        );
        assert_eq!(
            o.verdict,
            RunVerdict::Valid,
            "seed {seed}: liveness or safety failed"
        );
    }
}
