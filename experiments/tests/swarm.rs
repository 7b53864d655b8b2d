//! `kvlab swarm` end to end on the simulator: bad ranges are refused naming the field, a
//! seed's draw is a function of the seed and stays within the ranges, passing runs leave
//! nothing behind, and a failing run is kept with a spec that replays it byte for byte.

use std::path::Path;

use kvlab_experiments::run::{ReportPolicy, RunOptions, RunVerdict, run_experiment};
use kvlab_experiments::spec::Spec;
use kvlab_experiments::swarm::{Distribution, Drawn, Swarm, SwarmOptions, run_swarm};

const BASE: &str = r#"
name = "swarm-test"
system = "raft"
[time]
liveness_s = 2
[workload]
timeout_ms = 300
think_time_ms = 5
[nemesis]
start_after_s = 0.3
[swarm]
systems = ["raft", "single", "kvlab"]
nodes = [3, 5]
faults = ["partition-halves", "crash", "pause", "loss", "crash-leader"]
interval_s = [0.5, 1.5]
fault_duration_s = [0.2, 1.0]
latency_max_ms = [1.0, 8.0]
loss = [0.0, 0.02]
fsync_ms = [0.1, 2.0]
clients = [2, 6]
keys = [1, 8]
clock_drift_ppm_max = [0, 1000]
duration_s = [1.0, 2.0]
"#;

fn swarm(text: &str) -> Swarm {
    Swarm::from_toml_str(text, Path::new("swarm-test.toml")).unwrap()
}

fn field_of(text: &str) -> String {
    match Swarm::from_toml_str(text, Path::new("s.toml")) {
        Err(kvlab_experiments::error::ExperimentError::SpecInvalid { field, .. }) => field,
        other => panic!("expected an invalid swarm, got {other:?}"),
    }
}

#[test]
fn bad_ranges_and_a_missing_table_name_their_field() {
    assert_eq!(
        field_of(&BASE.replace("nodes = [3, 5]", "nodes = [5, 3]")),
        "swarm.nodes"
    );
    assert_eq!(
        field_of(&BASE.replace("loss = [0.0, 0.02]", "loss = [0.0, 1.0]")),
        "swarm.loss"
    );
    assert_eq!(
        field_of(&BASE.replace("systems = [", "sytems = [")),
        "swarm"
    );
    assert_eq!(field_of(&BASE.replace("[swarm]", "[swam]")), "swarm");
    let no_table = BASE.split("[swarm]").next().unwrap();
    assert_eq!(field_of(no_table), "swarm");
}

#[test]
fn a_draw_is_a_function_of_the_seed_and_stays_in_its_ranges() {
    let s = swarm(BASE);
    let mut systems = std::collections::BTreeSet::new();
    for seed in 1..=200 {
        let a = s.draw(seed).unwrap();
        let b = s.draw(seed).unwrap();
        assert_eq!(a.params, b.params, "seed {seed}");
        assert_eq!(
            a.spec.to_toml_string().unwrap(),
            b.spec.to_toml_string().unwrap()
        );
        assert!((3..=5).contains(&a.spec.nodes), "seed {seed}");
        assert!((2..=6).contains(&a.spec.workload.clients), "seed {seed}");
        assert!((1..=8).contains(&a.spec.workload.keys), "seed {seed}");
        assert!((1.0..=2.0).contains(&a.spec.time.duration_s), "seed {seed}");
        assert!(!a.spec.nemesis.faults.is_empty(), "seed {seed}");
        assert!(a.spec.network.loss_probability <= 0.02);
        systems.insert(a.spec.system);
    }
    assert_eq!(systems.len(), 3, "every system drawn in 200 seeds");
    assert_ne!(s.draw(1).unwrap().params, s.draw(2).unwrap().params);
}

#[test]
fn passing_runs_leave_nothing_and_swarm_json_lists_every_draw() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("swarm");
    let opts = SwarmOptions {
        first_seed: 1,
        runs: 6,
        time_budget: None,
        threads: 2,
        out: out.clone(),
        stop_at_first_failure: false,
    };
    let mut seen = 0;
    let report = run_swarm(&swarm(BASE), &opts, |_| seen += 1).unwrap();
    assert_eq!(seen, 6);
    let seeds: Vec<u64> = report.rows.iter().map(|r| r.seed).collect();
    assert_eq!(seeds, [1, 2, 3, 4, 5, 6]);
    for r in &report.rows {
        assert_eq!(r.verdict, RunVerdict::Valid.name(), "{r:?}");
        assert!(r.run_dir.is_none());
        assert!(matches!(r.params.get("system"), Some(Drawn::Names(n)) if n.len() == 1));
    }
    assert_eq!(report.failures, 0);
    let kept = std::fs::read_dir(out.join("runs")).map_or(0, |d| d.count());
    assert_eq!(kept, 0, "passing runs were kept");
    let Some(Distribution::Counts(systems)) = report.distribution.get("system") else {
        panic!("{:?}", report.distribution);
    };
    assert_eq!(systems.values().sum::<u64>(), 6);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("swarm.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 6);
}

#[test]
fn a_failing_run_is_kept_and_its_spec_replays_it_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("swarm");
    // The async-primary baseline acknowledges writes it may lose: it must fail.
    let text = BASE.replace(
        r#"systems = ["raft", "single", "kvlab"]"#,
        r#"systems = ["async-primary"]"#,
    );
    let opts = SwarmOptions {
        first_seed: 1,
        runs: 8,
        time_budget: None,
        threads: 2,
        out: out.clone(),
        stop_at_first_failure: true,
    };
    let report = run_swarm(&swarm(&text), &opts, |_| {}).unwrap();
    let failed = report
        .rows
        .iter()
        .find(|r| r.failed())
        .unwrap_or_else(|| panic!("async-primary never failed: {:?}", report.rows));
    let dir = failed.run_dir.clone().expect("kept");
    assert!(failed.replay().unwrap().contains("spec.toml --seed"));
    let spec = Spec::load(&dir.join("spec.toml")).unwrap();
    let again = tmp.path().join("again");
    let o = run_experiment(
        &spec,
        &RunOptions {
            seed: failed.seed,
            run_dir: again.clone(),
            reproduce: kvlab_experiments::reproduce::Reproduce::new(
                &dir.join("spec.toml"),
                &spec,
                failed.seed,
                None,
            ),
            report: ReportPolicy::Never,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(o.verdict.name(), failed.verdict);
    let x = std::fs::read(dir.join("history.jsonl")).unwrap();
    let y = std::fs::read(again.join("history.jsonl")).unwrap();
    assert!(x == y, "the replay's history differs from the kept run's");
}

/// `kvlab shrink` on the async-primary baseline: its failure needs no fault at all
/// (backups serve reads they have not caught up on), so the schedule shrinks to at most
/// two faults, the run to a few clients, keys and seconds, and the shrunk spec still
/// fails the same way. A valid run is refused.
#[test]
fn shrink_reduces_a_failing_run_to_a_small_schedule_that_still_fails() {
    use kvlab_experiments::shrink::shrink;
    let tmp = tempfile::tempdir().unwrap();
    let text = r#"
name = "shrink-test"
system = "async-primary"
nodes = 3
[time]
duration_s = 6
liveness_s = 2
[workload]
clients = 6
keys = 4
timeout_ms = 300
think_time_ms = 2
[nemesis]
faults = ["partition-halves", "crash", "pause"]
start_after_s = 0.5
interval_s = 1
fault_duration_s = 0.5
"#;
    let spec = Spec::from_toml_str(text, Path::new("shrink-test.toml")).unwrap();
    let dir = tmp.path().join("failing");
    let run = |spec: &Spec, dir: &Path| {
        run_experiment(
            spec,
            &RunOptions {
                seed: 3,
                run_dir: dir.to_path_buf(),
                reproduce: kvlab_experiments::reproduce::Reproduce::new(
                    Path::new("shrink-test.toml"),
                    spec,
                    3,
                    None,
                ),
                report: ReportPolicy::Never,
                progress: false,
            },
        )
        .unwrap()
    };
    let o = run(&spec, &dir);
    assert_eq!(o.verdict, RunVerdict::Invalid);
    let s = shrink(&dir, None).unwrap();
    assert_eq!(s.verdict, "invalid");
    assert!(s.faults.0 >= 3, "{:?}", s.faults);
    assert!(s.faults.1 <= 2, "{:?}", s.faults);
    assert!(s.duration_s.1 < s.duration_s.0, "{:?}", s.duration_s);
    assert!(s.runs > 1);
    let shrunk = Spec::load(&dir.join("shrunk.toml")).unwrap();
    assert!(shrunk.nemesis.faults.is_empty(), "random faults are off");
    assert_eq!(shrunk.nemesis.schedule.len(), s.faults.1);
    let again = run(&shrunk, &tmp.path().join("again"));
    assert_eq!(
        again.verdict,
        RunVerdict::Invalid,
        "the shrunk spec no longer fails"
    );
    // A valid run has nothing to shrink.
    let valid = Spec::from_toml_str(
        &text.replace("async-primary", "single"),
        Path::new("shrink-test.toml"),
    )
    .unwrap();
    let vdir = tmp.path().join("valid");
    assert_eq!(run(&valid, &vdir).verdict, RunVerdict::Valid);
    let err = shrink(&vdir, None).unwrap_err().to_string();
    assert!(err.contains("did not fail"), "{err}");
}

#[test]
fn set_overrides_reach_every_drawn_spec_and_bad_ones_name_the_argument() {
    let sets = vec![
        "raft.raft.unsafe_skip_vote_persist=true".to_string(),
        "swarm.systems=[\"raft\"]".to_string(),
        "swarm.tear_probability = [0.5, 0.5]".to_string(),
    ];
    let s = Swarm::from_toml_str_with(BASE, Path::new("swarm-test.toml"), &sets).unwrap();
    for seed in 1..=20 {
        let d = s.draw(seed).unwrap();
        assert!(d.spec.raft.raft.unsafe_skip_vote_persist, "seed {seed}");
        assert_eq!(d.spec.system.name(), "raft", "seed {seed}");
        assert_eq!(d.spec.disk.tear_probability, 0.5, "seed {seed}");
    }
    for (bad, why) in [
        ("raft.raft.pre_vote", "KEY=VALUE"),
        ("raft.raft.pre_vote=yes please", "TOML value"),
        ("raft..pre_vote=true", "dotted path"),
        ("name.x=1", "not a table"),
    ] {
        let err = Swarm::from_toml_str_with(BASE, Path::new("s.toml"), &[bad.to_string()])
            .expect_err(bad)
            .to_string();
        assert!(err.contains("--set") && err.contains(why), "{bad}: {err}");
    }
    // A set that makes the spec invalid is refused like the file itself would be.
    let err = Swarm::from_toml_str_with(
        BASE,
        Path::new("s.toml"),
        &["raft.raft.no_such_switch=true".to_string()],
    )
    .expect_err("unknown field")
    .to_string();
    assert!(err.contains("no_such_switch"), "{err}");
}

#[test]
fn log_timing_and_raft_params_are_drawn_into_both_raft_sections() {
    let text = BASE
        .replace(
            "interval_s = [0.5, 1.5]",
            "interval_s = [0.01, 3.0]\nlog_timing = true\nraft_params = true",
        )
        .replace(
            "fault_duration_s = [0.2, 1.0]",
            "fault_duration_s = [0.004, 2.0]",
        );
    let s = swarm(&text);
    let (mut short, mut long, mut pre_vote_off, mut one_entry) = (0, 0, 0, 0);
    for seed in 1..=200 {
        let d = s.draw(seed).unwrap();
        let i = d.spec.nemesis.interval_s;
        assert!((0.01..=3.0).contains(&i), "seed {seed}: {i}");
        short += usize::from(i < 0.1);
        long += usize::from(i > 1.0);
        let (r, k) = (&d.spec.raft.raft, &d.spec.kvlab.raft);
        // [3, 10], shifted up to 3 round trips plus an fsync of the drawn network.
        let kvlab_sim::LatencyDist::Uniform { max_ms: lat, .. } = d.spec.network.latency else {
            unreachable!("the swarm draws a uniform latency")
        };
        let fsync = match d.spec.disk.fsync_latency {
            kvlab_sim::LatencyDist::Constant { ms } => ms,
            _ => unreachable!("the swarm draws a constant fsync latency"),
        };
        let lo = ((3.0 * (2.0 * lat + fsync) / 10.0).ceil() as u32).max(3);
        assert!(
            (lo..=lo + 7).contains(&r.election_ticks),
            "seed {seed}: {} not in [{lo}, {}]",
            r.election_ticks,
            lo + 7
        );
        assert_eq!(r.election_ticks, k.election_ticks, "seed {seed}");
        assert_eq!(r.pre_vote, k.pre_vote);
        assert_eq!(r.check_quorum, k.check_quorum);
        assert_eq!(r.max_entries_per_msg, k.max_entries_per_msg);
        pre_vote_off += usize::from(!r.pre_vote);
        one_entry += usize::from(r.max_entries_per_msg == 1);
    }
    // Log-uniform over [0.01, 3]: about 40 % below 0.1 s, about 19 % above 1 s.
    assert!(short > 50 && long > 20, "short {short}, long {long}");
    assert!((60..=140).contains(&pre_vote_off), "{pre_vote_off}");
    assert!((60..=140).contains(&one_entry), "{one_entry}");
    // Without the switches, the base's Raft settings stay as they were.
    let plain = swarm(BASE).draw(1).unwrap();
    assert_eq!(plain.spec.raft.raft.election_ticks, 10);
}

#[test]
fn storm_runs_are_election_storms_and_only_on_raft() {
    let text = BASE.replace(
        "duration_s = [1.0, 2.0]",
        "duration_s = [1.0, 2.0]\nstorm = 0.5",
    );
    let s = swarm(&text);
    let (mut storms, mut raft_runs) = (0, 0);
    for seed in 1..=300 {
        let d = s.draw(seed).unwrap();
        let storm = d.params.get("profile") == Some(&Drawn::Names(vec!["storm".into()]));
        raft_runs += usize::from(d.spec.system == kvlab_node::SystemKind::Raft);
        if !storm {
            continue;
        }
        storms += 1;
        let (spec, r) = (&d.spec, &d.spec.raft.raft);
        assert_eq!(spec.system, kvlab_node::SystemKind::Raft, "seed {seed}");
        assert!([3, 5].contains(&spec.nodes), "seed {seed}: {}", spec.nodes);
        assert!((4..=8).contains(&r.election_ticks), "seed {seed}");
        assert!(!r.pre_vote && !r.check_quorum && r.max_entries_per_msg == 1);
        assert_eq!(spec.raft.tick_interval_ms, 5);
        assert!((0.01..=0.03).contains(&spec.nemesis.interval_s));
        assert!(spec.nemesis.overlap && spec.nemesis.fault_duration_s == 0.004);
        assert_eq!(spec.network.reorder_probability, 0.5);
    }
    // Half of the raft runs, within sampling noise.
    assert!(
        storms * 3 > raft_runs && storms * 3 < raft_runs * 2,
        "{storms} storms in {raft_runs} raft runs"
    );
    // Without the share, no run is a storm and no profile is drawn.
    assert!(!swarm(BASE).draw(1).unwrap().params.contains_key("profile"));
    let bad = BASE.replace(
        "duration_s = [1.0, 2.0]",
        "duration_s = [1.0, 2.0]\nstorm = 1.5",
    );
    assert_eq!(field_of(&bad), "swarm.storm");
}

#[test]
fn replace_voter_on_raft_draws_a_spare_learner_that_starts_as_one() {
    let text = BASE.replace("nodes = [3, 5]", "nodes = [4, 7]").replace(
        "\"crash-leader\"]",
        "\"crash-leader\", \"replace-voter\", \"membership\"]",
    );
    let s = swarm(&text);
    let mut spared = 0;
    for seed in 1..=100 {
        let d = s.draw(seed).unwrap();
        let replaces = d
            .spec
            .nemesis
            .faults
            .contains(&kvlab_experiments::spec::FaultKind::ReplaceVoter);
        let spare = replaces && d.spec.system == kvlab_node::SystemKind::Raft;
        assert_eq!(
            d.spec.nemesis.spare_learners,
            u32::from(spare),
            "seed {seed}"
        );
        if spare {
            assert_eq!(d.spec.raft.initial_voters, d.spec.nodes - 1, "seed {seed}");
            spared += 1;
        }
    }
    assert!(spared > 5, "{spared}");
}
