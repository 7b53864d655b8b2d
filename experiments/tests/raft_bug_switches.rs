//! The runner's randomized simulation catches Raft's deliberately broken variants (issue
//! 3, "a deliberately broken variant is caught"): with `[raft.raft]
//! unsafe_skip_vote_persist` or `unsafe_commit_previous_term_by_count` switched on, some
//! seed among the first [`BUG_HUNT_SEEDS`] fails the linearizability checker or one of
//! the invariants checked during the run; with the switches off the same spec passes on
//! the same seeds.
//!
//! The fault profile is aimed at elections, where both bugs live: three nodes, short
//! election timeouts (4–8 ticks of 5 ms) without PreVote or CheckQuorum (so candidates
//! collide and split votes), a crash every 10 ms lasting 4 ms (a voter that forgot its
//! vote restarts while the election it voted in is still running), leader crashes and
//! random partitions, and a network that delays and reorders messages by up to 20 ms.
//! One entry per AppendEntries lets a follower acknowledge an old term's entry before
//! the new leader's no-op (the Figure 8 setting).

mod common;

use std::path::Path;

use kvlab_experiments::run::{RunOutcome, RunVerdict};
use kvlab_experiments::spec::Spec;

/// How many seeds a broken variant gets to be caught in.
const BUG_HUNT_SEEDS: u64 = 40;

/// The election-focused spec, with `switch` (a `[raft.raft]` field) set to `on`.
fn spec(switch: &str, on: bool) -> Spec {
    let text = format!(
        r#"
name = "raft-bug-hunt"
system = "raft"
nodes = 3
[time]
duration_s = 8
liveness_s = 3
[workload]
clients = 6
keys = 3
timeout_ms = 300
think_time_ms = 2
[network]
latency = {{ kind = "uniform", min_ms = 1.0, max_ms = 8.0 }}
loss_probability = 0.05
reorder_probability = 0.5
reorder_window_ms = 20.0
[disk]
fsync_latency = {{ kind = "exponential", mean_ms = 1.0, min_ms = 0.2, max_ms = 10.0 }}
tear_probability = 0.5
[raft]
tick_interval_ms = 5
snapshot_every_entries = 0
[raft.raft]
election_ticks = 4
heartbeat_ticks = 1
pre_vote = false
check_quorum = false
max_entries_per_msg = 1
{switch} = {on}
[nemesis]
faults = ["crash", "crash", "crash-leader", "partition-random"]
start_after_s = 0.3
interval_s = 0.01
fault_duration_s = 0.004
overlap = true
[check]
model = "kv"
timeout_s = 10
"#
    );
    Spec::from_toml_str(&text, Path::new("raft-bug-hunt.toml")).expect("the test spec is valid")
}

fn run(spec: &Spec, seed: u64, dir: &Path) -> RunOutcome {
    common::run_quiet(spec, "raft-bug-hunt.toml", seed, dir)
}

/// Why a run failed (the checker or an invariant), or `None` if it passed.
fn failure(o: &RunOutcome) -> Option<String> {
    match o.verdict {
        RunVerdict::Valid | RunVerdict::Unknown => None,
        RunVerdict::InvariantViolated => o.summary.invariant_violation.clone(),
        RunVerdict::Invalid => Some(format!("not linearizable on key {:?}", o.failing_key)),
        other => Some(format!("verdict {}", other.name())),
    }
}

/// Hunts the first failing seed with `switch` on, then checks that the same spec with
/// the switch off passes on every seed up to it.
fn caught(switch: &str) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let broken = spec(switch, true);
    let found = (1..=BUG_HUNT_SEEDS).find_map(|seed| {
        let o = run(&broken, seed, &tmp.path().join(format!("on-{seed}")));
        failure(&o).map(|why| (seed, why))
    });
    let (seed, why) = found.unwrap_or_else(|| {
        panic!("{switch} = true survived seeds 1..={BUG_HUNT_SEEDS}: the simulation missed it")
    });
    println!("{switch} caught at seed {seed}: {why}");
    let correct = spec(switch, false);
    for s in 1..=seed {
        let o = run(&correct, s, &tmp.path().join(format!("off-{s}")));
        assert_eq!(failure(&o), None, "{switch} = false failed at seed {s}");
        assert!(o.summary.faults.injected > 0, "seed {s}: no fault injected");
        assert!(
            o.summary
                .node_events
                .get("leader_elected")
                .copied()
                .unwrap_or(0)
                > 1,
            "seed {s}: no leader change"
        );
    }
}

#[test]
fn runner_catches_skip_vote_persist_and_passes_without_it() {
    caught("unsafe_skip_vote_persist");
}

#[test]
fn runner_catches_commit_previous_term_by_count_and_passes_without_it() {
    caught("unsafe_commit_previous_term_by_count");
}
