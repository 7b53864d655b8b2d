//! The transactional experiments (`configs/txn-latency.toml`, `configs/txn-contention.toml`,
//! shortened) on the simulator: transactions touch exactly the partitions asked for, the
//! commit latency splits consistently into prepare and decide, wait-die works end to
//! end, and a transactional run's report draws without warnings.

mod common;

use std::path::Path;

use kvlab_checker::check::Verdict;
use kvlab_experiments::reproduce::Reproduce;
use kvlab_experiments::run::{ReportPolicy, RunOptions, RunOutcome, RunVerdict, run_experiment};
use kvlab_experiments::spec::{PartitionsPerTxn, Spec};
use kvlab_experiments::sweep;

fn load(file: &str) -> (String, std::path::PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    (
        std::fs::read_to_string(&path).expect("the shipped spec"),
        path,
    )
}

/// The variants of a shipped sweep, each shortened to `secs` of workload.
fn variants(file: &str, secs: f64) -> Vec<sweep::Variant> {
    let (text, path) = load(file);
    let mut v = sweep::expand(&text, &path).expect("the shipped sweep expands");
    for x in &mut v {
        x.spec.time.duration_s = secs;
        x.spec.time.liveness_s = 2.0;
    }
    v
}

fn run(spec: &Spec, seed: u64, dir: &Path) -> RunOutcome {
    common::run_quiet(spec, "configs/txn-latency.toml", seed, dir)
}

#[test]
fn every_transaction_touches_exactly_the_partitions_asked_for_and_the_split_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    for v in variants("configs/txn-latency.toml", 3.0) {
        let PartitionsPerTxn::Exactly(n) = v.spec.workload.partitions_per_txn else {
            panic!("{}: partitions_per_txn not fixed", v.label);
        };
        let o = run(&v.spec, 1, &tmp.path().join(&v.slug));
        let iso = o.summary.isolation.as_ref().expect("an isolation summary");
        assert_eq!(o.verdict, RunVerdict::Valid, "{}", v.label);
        assert_eq!(iso.verdict, Verdict::Valid, "{}", v.label);
        // The final reads are one-key transactions; every other touches exactly n.
        let others: usize = iso
            .by_partitions
            .iter()
            .filter(|(p, _)| **p != n as usize && **p != 1)
            .map(|(_, c)| c)
            .sum();
        assert_eq!(others, 0, "{}: {:?}", v.label, iso.by_partitions);
        assert!(iso.by_partitions.get(&(n as usize)).copied().unwrap_or(0) > 50);
        let c = &iso.commit;
        assert_eq!(c.split_inconsistent, 0, "{}", v.label);
        assert!(c.goodput_per_s > 10.0, "{}: {}", v.label, c.goodput_per_s);
        let key = kvlab_experiments::txn_stats::partitions_bucket(n);
        assert_eq!(
            c.latency_ms_by_partitions.keys().collect::<Vec<_>>(),
            [&key]
        );
        let l = &c.latency_ms_by_partitions[&key];
        assert_eq!(l.total.count as usize, iso.committed - final_reads(&o));
        // Each sample's prepare + decide <= its total (split_inconsistent above); medians
        // do not add up that way, so only each phase's median is bounded by the total's.
        assert!(l.prepare.p50 > 0.0, "{}: {l:?}", v.label);
        assert!(l.prepare.p50 <= l.total.p50, "{}: {l:?}", v.label);
        assert!(l.decide.p50 <= l.total.p50, "{}: {l:?}", v.label);
        if n == 1 {
            assert_eq!(l.decide.max, 0.0, "1PC has no decide phase");
        } else {
            // The decision is one more Raft commit at the home, after every vote.
            assert!(l.decide.p50 > 0.0, "{}", v.label);
            assert!(l.total.p50 > l.prepare.p50 + 1.0, "{}", v.label);
        }
    }
}

/// Committed final reads (one per appended key, after the liveness phase): in the
/// history, not in the latency samples.
fn final_reads(o: &RunOutcome) -> usize {
    let iso = o.summary.isolation.as_ref().unwrap();
    iso.committed
        - iso
            .commit
            .latency_ms_by_partitions
            .values()
            .map(|l| l.total.count as usize)
            .sum::<usize>()
}

#[test]
fn wait_die_commits_under_contention_and_stays_strictly_serializable() {
    let tmp = tempfile::tempdir().unwrap();
    let all = variants("configs/txn-contention.toml", 3.0);
    let pick = |label: &str| all.iter().find(|v| v.label == label).expect(label);
    let mut rates = Vec::new();
    for label in ["no-wait 4 ops theta 0.99", "wait-die 4 ops theta 0.99"] {
        let v = pick(label);
        let o = common::run_quiet(
            &v.spec,
            "configs/txn-contention.toml",
            1,
            &tmp.path().join(&v.slug),
        );
        let iso = o.summary.isolation.as_ref().expect("an isolation summary");
        assert_eq!(
            o.verdict,
            RunVerdict::Valid,
            "{label}: {:?}",
            o.summary.liveness
        );
        assert_eq!(iso.verdict, Verdict::Valid, "{label}");
        assert!(iso.committed > 20 && iso.aborted > 0, "{label}: {iso:?}");
        rates.push(iso.commit.abort_rate);
    }
    assert!(
        rates[1] < rates[0],
        "wait-die lets older transactions wait instead of aborting: abort rates {rates:?}"
    );
}

#[test]
fn a_transactional_runs_report_draws_without_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let (text, path) = load("configs/txn-list-append.toml");
    let mut spec = Spec::from_toml_str(&text, &path).unwrap();
    spec.time.duration_s = 2.0;
    spec.time.liveness_s = 2.0;
    let dir = tmp.path().join("run");
    let o = run_experiment(
        &spec,
        &RunOptions {
            seed: 1,
            run_dir: dir.clone(),
            reproduce: Reproduce::new(&path, &spec, 1, None),
            report: ReportPolicy::Always,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(o.report_error, None);
    let rendered = kvlab_experiments::report::render_run(&dir).unwrap();
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    assert!(!rendered.plots.is_empty());
}
