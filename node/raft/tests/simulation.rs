//! Randomized simulation of 3- and 5-node groups on the in-crate test network: message
//! loss, duplication, reordering, partitions (isolation, splits, one-way links), crashes
//! that lose the unsynced WAL tail, restarts and compaction. Invariants are checked
//! throughout (election safety, log matching, leader completeness, state machine
//! safety); then the network heals and a leader must commit a fresh command on every
//! node within a bound (liveness). A failure names the seed that reproduces it.

mod common;

use common::*;
use kvlab_raft::RaftConfig;
use kvlab_types::{derive_seed, seeded_rng};

/// Fault-phase events per seed.
const CHAOS_STEPS: usize = 4_000;

/// Totals over a batch of seeds, to prove that faults happened and progress was made.
#[derive(Debug, Default)]
struct Totals {
    seeds: u64,
    faults: Stats,
    terms_led: u64,
    entries_committed: u64,
}

fn run_seed(
    seed: u64,
    nodes: u32,
    cfg: &RaftConfig,
    faults: &Faults,
    totals: &mut Totals,
) -> Result<(), String> {
    let mut net = Net::new(nodes, cfg.clone(), seed);
    let mut rng = seeded_rng(derive_seed(seed, "chaos", u64::from(nodes)));
    let res = net.chaos(&mut rng, CHAOS_STEPS, faults);
    totals.seeds += 1;
    totals.faults.add(&net.stats);
    totals.terms_led += net.leaders_by_term.len() as u64;
    totals.entries_committed += net.committed.len() as u64;
    res?;
    net.converge(b"final")
}

fn run_seeds(seeds: std::ops::Range<u64>, nodes: u32, cfg: &RaftConfig, faults: &Faults) {
    let mut totals = Totals::default();
    let full_run = seeds.end - seeds.start > 1;
    for seed in seeds {
        if let Err(e) = run_seed(seed, nodes, cfg, faults, &mut totals) {
            panic!(
                "{nodes}-node simulation failed at seed {seed}: {e}\n\
                 reproduce: KVLAB_RAFT_SEED={seed} cargo test -p kvlab-raft --test simulation"
            );
        }
    }
    println!("{nodes} nodes: {totals:?}");
    if full_run {
        // The faults must have bitten and the group must have made progress.
        let f = &totals.faults;
        assert!(
            f.dropped > 0 && f.duplicated > 0 && f.partitions > 0,
            "{totals:?}"
        );
        assert!(
            f.crashes > 0 && f.restarts > 0 && f.lost_unsynced_records > 0,
            "{totals:?}"
        );
        assert!(f.compactions > 0, "{totals:?}");
        assert!(
            totals.terms_led > 2 * totals.seeds,
            "few leader changes: {totals:?}"
        );
        assert!(
            totals.entries_committed > 10 * totals.seeds,
            "little progress: {totals:?}"
        );
    }
}

/// Seeds to run: `KVLAB_RAFT_SEED=N` runs only N (to reproduce a failure).
fn seeds(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    match std::env::var("KVLAB_RAFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => s..s + 1,
        None => default,
    }
}

#[test]
fn three_node_groups_stay_safe_and_recover_under_all_faults() {
    run_seeds(seeds(0..150), 3, &test_cfg(), &Faults::all());
}

#[test]
fn five_node_groups_stay_safe_and_recover_under_all_faults() {
    run_seeds(seeds(1000..1080), 5, &test_cfg(), &Faults::all());
}

#[test]
fn groups_without_prevote_or_check_quorum_stay_safe() {
    let cfg = RaftConfig {
        pre_vote: false,
        check_quorum: false,
        ..test_cfg()
    };
    run_seeds(seeds(2000..2060), 3, &cfg, &Faults::all());
    run_seeds(seeds(3000..3040), 5, &cfg, &Faults::all());
}

#[test]
fn small_batches_and_windows_stay_safe() {
    let cfg = RaftConfig {
        max_inflight_msgs: 2,
        max_entries_per_msg: 2,
        snapshot_chunk_bytes: 8,
        ..test_cfg()
    };
    run_seeds(seeds(4000..4060), 3, &cfg, &Faults::all());
}

/// How many seeds the deliberately broken variants get to be caught in.
const BUG_HUNT_SEEDS: u64 = 500;

fn first_failing_seed(nodes: u32, cfg: &RaftConfig) -> Option<(u64, String)> {
    let mut totals = Totals::default();
    (0..BUG_HUNT_SEEDS).find_map(|seed| {
        run_seed(seed, nodes, cfg, &Faults::aggressive(), &mut totals)
            .err()
            .map(|e| (seed, e))
    })
}

#[test]
fn simulation_catches_the_skip_vote_persist_bug() {
    let cfg = RaftConfig {
        unsafe_skip_vote_persist: true,
        pre_vote: false,
        check_quorum: false,
        ..test_cfg()
    };
    let found = first_failing_seed(3, &cfg);
    let (seed, err) = found.expect("the broken variant survived every seed");
    println!("skip-vote-persist caught at seed {seed}: {err}");
}

#[test]
fn simulation_catches_the_commit_previous_term_by_count_bug() {
    let cfg = RaftConfig {
        unsafe_commit_previous_term_by_count: true,
        pre_vote: false,
        check_quorum: false,
        max_entries_per_msg: 1,
        ..test_cfg()
    };
    let found = first_failing_seed(3, &cfg);
    let (seed, err) = found.expect("the broken variant survived every seed");
    println!("commit-by-count caught at seed {seed}: {err}");
}
