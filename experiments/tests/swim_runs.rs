//! `system = "swim"` runs end to end on the simulator: the run directory and its `swim`
//! summary, bounds that fail a run, typed errors for bad `[swim]` fields, and the two
//! convergence properties of issue 4 — a healed partition reaches one view within a
//! bound, and a restarted member with a new address is alive everywhere within a bound.

use std::path::Path;

use kvlab_experiments::ExperimentError;
use kvlab_experiments::observe::swim::SwimSummary;
use kvlab_experiments::run::{ReportPolicy, RunOptions, RunOutcome, RunVerdict, run_experiment};
use kvlab_experiments::spec::Spec;

/// A small SWIM experiment: `nodes` members, crashes one at a time from 10 s, every
/// 15 s for 13 s, plus `extra` TOML appended.
fn spec(nodes: u32, extra: &str) -> Result<Spec, ExperimentError> {
    let text = format!(
        r#"
name = "swim-test"
system = "swim"
nodes = {nodes}
[time]
duration_s = 70
liveness_s = 40
[nemesis]
faults = ["crash"]
start_after_s = 10
interval_s = 15
fault_duration_s = 13
{extra}
"#
    );
    Spec::from_toml_str(&text, Path::new("swim-test.toml"))
}

fn run(spec: &Spec, seed: u64, dir: &Path, report: ReportPolicy) -> RunOutcome {
    run_experiment(
        spec,
        &RunOptions {
            seed,
            run_dir: dir.to_path_buf(),
            reproduce: kvlab_experiments::reproduce::Reproduce::new(
                Path::new("swim-test.toml"),
                spec,
                seed,
                None,
            ),
            report,
            progress: false,
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
}

fn swim(o: &RunOutcome) -> &SwimSummary {
    o.summary
        .swim
        .as_ref()
        .expect("a swim run has a swim summary")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn swim_run_writes_summary_events_plots_and_a_not_applicable_checker_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(12, "[swim_experiment]\nmax_false_positives = 0\n").unwrap();
    let o = run(&s, 3, tmp.path(), ReportPolicy::Always);
    assert_eq!(o.verdict, RunVerdict::Valid, "{:?}", swim(&o).checks);
    assert_eq!(o.verdict.exit_code(), 0);
    let summary = json(&tmp.path().join("summary.json"));
    assert_eq!(summary["system"], "swim");
    assert_eq!(summary["checker"]["verdict"], "not-applicable");
    let sw = &summary["swim"];
    assert_eq!(sw["crashes"], 4);
    for k in ["first_suspicion_s", "first_dead_s", "dead_everywhere_s"] {
        assert_eq!(sw[k]["count"], 4, "{k}: {}", sw[k]);
        assert!(sw[k]["p50"].as_f64().unwrap() > 0.0, "{k}");
        assert!(sw[k]["p99"].as_f64().unwrap() >= sw[k]["p50"].as_f64().unwrap());
        assert!(sw[k]["max"].as_f64().unwrap() >= sw[k]["p99"].as_f64().unwrap());
    }
    assert!((sw["expected_first_detection_s"].as_f64().unwrap() - 1.582).abs() < 1e-3);
    assert!(sw["load"]["messages_per_member_per_s"].as_f64().unwrap() > 0.5);
    let bytes = sw["load"]["bytes_per_member_per_s"].as_f64().unwrap();
    assert!(bytes > 10.0);
    // Push-pull by digest: a small share of the bytes, but some (digests go out).
    let push_pull = sw["load"]["push_pull_bytes_per_member_per_s"]
        .as_f64()
        .unwrap();
    assert!(push_pull > 0.0 && push_pull < bytes / 4.0, "{}", sw["load"]);
    assert_eq!(sw["false_positives"], 0);
    // No KV workload: an empty history; membership changes are in events.jsonl.
    assert_eq!(
        std::fs::read(tmp.path().join("history.jsonl"))
            .unwrap()
            .len(),
        0
    );
    let events = std::fs::read_to_string(tmp.path().join("events.jsonl")).unwrap();
    for kind in ["member_suspect", "member_dead", "member_address_changed"] {
        assert!(events.contains(kind), "events.jsonl lacks {kind}");
    }
    for f in [
        "plots/swim-detection-cdf.png",
        "plots/swim-detection-cdf.svg",
        "plots/swim-timeline.png",
        "plots/swim-timeline.svg",
        "report.html",
    ] {
        assert!(tmp.path().join(f).is_file(), "{f} missing");
    }
    let report = std::fs::read_to_string(tmp.path().join("report.html")).unwrap();
    assert!(report.contains("SWIM failure detection"));
    // The run measured SWIM only: no KV plot, no KV section.
    assert_eq!(summary["measured"], serde_json::json!(["swim"]));
    for f in [
        "plots/latency.png",
        "plots/throughput.png",
        "plots/latency-cdf.png",
    ] {
        assert!(!tmp.path().join(f).exists(), "{f} drawn for a SWIM run");
    }
    assert!(!report.contains("latency of ok operations"));
}

#[test]
fn same_seed_gives_identical_events_and_swim_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(10, "[network]\nloss_probability = 0.05\n").unwrap();
    let a = run(&s, 9, &tmp.path().join("a"), ReportPolicy::Never);
    let b = run(&s, 9, &tmp.path().join("b"), ReportPolicy::Never);
    let x = std::fs::read(tmp.path().join("a/events.jsonl")).unwrap();
    let y = std::fs::read(tmp.path().join("b/events.jsonl")).unwrap();
    assert!(x == y, "events.jsonl differs between two runs of seed 9");
    assert_eq!(swim(&a), swim(&b));
}

#[test]
fn exceeded_bound_fails_the_run_and_names_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(8, "[swim_experiment]\nmax_dead_everywhere_s = 0.5\n").unwrap();
    let o = run(&s, 1, tmp.path(), ReportPolicy::Never);
    assert_eq!(o.verdict, RunVerdict::PropertyFailed);
    assert_eq!(o.verdict.exit_code(), 1);
    let failed: Vec<&str> = swim(&o)
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["max_dead_everywhere_s"]);
    assert_eq!(
        json(&tmp.path().join("summary.json"))["verdict"],
        "property-failed"
    );
}

#[test]
fn bad_swim_field_is_an_error_naming_the_field() {
    let field_of = |extra: &str| match spec(8, extra) {
        Err(ExperimentError::SpecParse { field, .. }) => field.unwrap_or_default(),
        Err(ExperimentError::SpecInvalid { field, .. }) => field,
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("accepted: {extra}"),
    };
    assert_eq!(
        field_of("[swim]\nprotocol_period = 100\n"),
        "swim.protocol_period"
    );
    assert_eq!(
        field_of("[swim]\nack_timeout_ms = 5000\n"),
        "swim.ack_timeout_ms"
    );
    assert_eq!(field_of("[swim]\nseeds = [99]\n"), "swim.seeds");
    assert_eq!(
        field_of("[swim.lifeguard]\nbudy = true\n"),
        "swim.lifeguard.budy"
    );
    assert_eq!(
        field_of("[swim_experiment]\nslow_nodes = [0]\n"),
        "swim_experiment.slow_nodes"
    );
    assert_eq!(
        field_of(
            "[swim_experiment]\nslow_nodes = [2]\nslow_pause_ms = 2000\nslow_period_ms = 1000\n"
        ),
        "swim_experiment.slow_pause_ms"
    );
    // SWIM may have far more members than the KV systems, but not without limit.
    match Spec::from_toml_str(
        "name = \"x\"\nsystem = \"swim\"\nnodes = 20000\n",
        Path::new("x.toml"),
    ) {
        Err(ExperimentError::SpecInvalid { field, reason, .. }) => {
            assert_eq!(field, "nodes");
            assert!(reason.contains("MAX_SWIM_NODES"), "{reason}");
        }
        other => panic!("20000 members accepted: {other:?}"),
    }
    assert!(
        Spec::from_toml_str(
            "name = \"x\"\nsystem = \"swim\"\nnodes = 1000\n",
            Path::new("x.toml")
        )
        .is_ok()
    );
}

/// Partitions (longer than the suspicion timeout, so each side declares the other
/// dead) heal at the start of the liveness phase; push-pull with a dead member
/// reconnects the sides. One view must be back within a bound set by the push-pull
/// interval.
#[test]
fn healed_partition_converges_to_one_view_within_bound() {
    let bound_s = 25.0;
    let s = spec(
        16,
        &format!(
            r#"
[swim]
push_pull_interval_ms = 5000
[swim_experiment]
max_converge_after_heal_s = {bound_s}
"#
        ),
    )
    .unwrap();
    let mut s = s;
    s.nemesis.faults = vec![kvlab_experiments::spec::FaultKind::PartitionHalves];
    s.nemesis.start_after_s = 10.0;
    s.nemesis.interval_s = 59.0;
    s.nemesis.fault_duration_s = 58.0; // still cut when the liveness phase heals it
    for seed in 1..=3 {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(&s, seed, tmp.path(), ReportPolicy::Never);
        let sw = swim(&o);
        assert!(
            sw.false_positives_by_cause
                .get("partitioned")
                .copied()
                .unwrap_or(0)
                > 0,
            "seed {seed}: the partition was too short to declare anyone dead"
        );
        let t = sw
            .converged_after_heal_s
            .unwrap_or_else(|| panic!("seed {seed}: no single view after the heal"));
        assert!(
            t <= bound_s,
            "seed {seed}: one view after {t} s > {bound_s} s"
        );
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}: {:?}", sw.checks);
    }
}

/// Every crashed member is restarted with a new address (`SwimNode` comes back as
/// `<id>/inc<incarnation>`); every live member must then hold it alive at its new
/// incarnation within a bound of a few protocol periods.
#[test]
fn restarted_member_with_new_address_rejoins_alive_everywhere_within_bound() {
    let bound_s = 10.0;
    let s = spec(
        20,
        &format!(
            "[network]\nloss_probability = 0.01\n[swim_experiment]\nmax_rejoin_s = {bound_s}\n"
        ),
    )
    .unwrap();
    for seed in 1..=3 {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(&s, seed, tmp.path(), ReportPolicy::Never);
        let sw = swim(&o);
        assert_eq!(sw.restarts_not_rejoined, 0, "seed {seed}");
        assert_eq!(sw.rejoin_everywhere_s.count, sw.crashes, "seed {seed}");
        assert!(
            sw.rejoin_everywhere_s.max <= bound_s,
            "seed {seed}: rejoin took {} s",
            sw.rejoin_everywhere_s.max
        );
        let events = std::fs::read_to_string(tmp.path().join("events.jsonl")).unwrap();
        assert!(
            events.contains("member_address_changed"),
            "seed {seed}: no address change seen"
        );
        assert_eq!(o.verdict, RunVerdict::Valid, "seed {seed}: {:?}", sw.checks);
    }
}

/// Issue 4: with Lifeguard on, false positives under 5% loss plus a slow member are
/// lower than with it off, in the same seeded runs of `configs/swim-lifeguard.toml`.
#[test]
fn lifeguard_cuts_false_positives_caused_by_a_slow_member() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/swim-lifeguard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let variants = kvlab_experiments::sweep::expand(&text, &path).unwrap();
    let total = |label: &str| -> (u64, u64) {
        let v = variants
            .iter()
            .find(|v| v.label == label)
            .unwrap_or_else(|| panic!("no variant {label}"));
        let mut sums = (0, 0);
        for seed in 1..=3 {
            let tmp = tempfile::tempdir().unwrap();
            let o = run(&v.spec, seed, tmp.path(), ReportPolicy::Never);
            let sw = swim(&o);
            sums.0 += sw.false_positives;
            sums.1 += sw.false_suspicions;
        }
        sums
    };
    let (fp_on, fs_on) = total("lifeguard on");
    let (fp_off, fs_off) = total("lifeguard off");
    assert!(
        fp_off > 0,
        "the scenario must produce false positives without Lifeguard"
    );
    assert!(
        fp_on < fp_off,
        "false positives: Lifeguard on {fp_on}, off {fp_off}"
    );
    assert!(
        fs_on < fs_off,
        "false suspicions: Lifeguard on {fs_on}, off {fs_off}"
    );
}
