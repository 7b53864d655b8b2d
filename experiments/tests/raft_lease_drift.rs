//! Clock drift breaks Raft lease reads (issue 3: "lease reads … documented as depending
//! on bounded clock drift — the simulator's clock drift must be able to break it").
//!
//! The spec is `configs/raft-lease-drift.toml` itself, shortened to
//! [`SAFETY_PHASE_S`] simulated seconds: every `isolate-slow-leader` fault cuts the
//! leader off from the other nodes and halves its clock rate, so its lease (8 of its
//! ticks) outlasts the majority's election timeout (10–20 ticks). With `[raft.raft]
//! lease_reads = true` some seed among the first [`LEASE_HUNT_SEEDS`] must yield a
//! history the checker rejects; with `lease_reads = false` (ReadIndex) the same spec
//! must be valid on the same seeds, with the faults injected and leaders changing.

mod common;

use std::path::Path;

use kvlab_experiments::run::{RunOutcome, RunVerdict};
use kvlab_experiments::spec::Spec;

/// How many seeds lease reads get to be caught in.
const LEASE_HUNT_SEEDS: u64 = 6;

/// The safety phase of the shortened spec: two faults (at 1 s and 2 s).
const SAFETY_PHASE_S: f64 = 3.0;

/// The shipped config with the shorter safety phase and `lease_reads` set to `on`.
fn spec(on: bool) -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/raft-lease-drift.toml");
    let mut spec = Spec::load(&path).expect("configs/raft-lease-drift.toml is valid");
    assert!(
        spec.raft.raft.lease_reads,
        "the shipped config demonstrates the broken lease"
    );
    spec.time.duration_s = SAFETY_PHASE_S;
    spec.raft.raft.lease_reads = on;
    spec.validate().expect("the shortened spec is valid");
    spec
}

fn run(spec: &Spec, seed: u64, dir: &Path) -> RunOutcome {
    common::run_quiet(spec, "configs/raft-lease-drift.toml", seed, dir)
}

#[test]
fn slow_isolated_leader_serves_stale_lease_reads_and_read_index_stays_linearizable() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let leased = spec(true);
    let found = (1..=LEASE_HUNT_SEEDS).find_map(|seed| {
        let o = run(&leased, seed, &tmp.path().join(format!("on-{seed}")));
        (o.verdict == RunVerdict::Invalid).then_some((seed, o.failing_key))
    });
    let (seed, key) = found.unwrap_or_else(|| {
        panic!("lease_reads = true stayed linearizable on seeds 1..={LEASE_HUNT_SEEDS}")
    });
    println!("lease reads caught at seed {seed}: not linearizable on key {key:?}");
    let read_index = spec(false);
    for s in 1..=LEASE_HUNT_SEEDS {
        let o = run(&read_index, s, &tmp.path().join(format!("off-{s}")));
        assert_eq!(
            o.verdict,
            RunVerdict::Valid,
            "lease_reads = false: seed {s} not valid (key {:?})",
            o.failing_key
        );
        assert!(
            o.summary
                .faults
                .by_kind
                .get("isolate_slow_leader")
                .copied()
                .unwrap_or(0)
                > 0,
            "seed {s}: no isolate-slow-leader fault injected"
        );
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
