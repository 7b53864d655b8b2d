//! The one job pool: every `kvlab run` — one seed, a seed range, `[[variant]]` sweeps —
//! is a list of [`Job`]s run here, in parallel on the simulator and one at a time on
//! real nodes (they measure real time on a shared machine and start processes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::error::ExperimentError;
use crate::reproduce::Reproduce;
use crate::run::{ReportPolicy, RunOptions, RunOutcome, run_experiment};
use crate::spec::{BackendKind, Spec};

/// One run to do.
#[derive(Clone, Debug)]
pub struct Job {
    /// The resolved spec (a variant's, with `--backend`/`--transport` laid over).
    pub spec: Spec,
    /// The seed.
    pub seed: u64,
    /// The run directory.
    pub run_dir: PathBuf,
    /// How to run it again.
    pub reproduce: Reproduce,
    /// When to draw plots and the report.
    pub report: ReportPolicy,
    /// Whether to show a progress bar over the run's clock.
    pub progress: bool,
}

impl Job {
    fn options(&self) -> RunOptions {
        RunOptions {
            seed: self.seed,
            run_dir: self.run_dir.clone(),
            reproduce: self.reproduce.clone(),
            report: self.report,
            progress: self.progress,
        }
    }
}

/// How many threads `jobs` may use on a machine with `cores`: one if any job runs real
/// nodes, else one per core (at most one per job).
pub fn threads_for(jobs: &[Job], cores: usize) -> usize {
    if jobs.iter().any(|j| j.spec.backend != BackendKind::Sim) {
        1
    } else {
        cores.clamp(1, jobs.len().max(1))
    }
}

/// Runs `jobs` on `threads` threads and calls `on_done` once per job, **in job order**,
/// as results become available.
pub fn run_jobs(
    jobs: &[Job],
    threads: usize,
    mut on_done: impl FnMut(&Job, Result<RunOutcome, ExperimentError>),
) {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else {
                        break;
                    };
                    if tx
                        .send((i, run_experiment(&job.spec, &job.options())))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut ready = BTreeMap::new();
        let mut expected = 0usize;
        for (i, result) in rx {
            ready.insert(i, result);
            while let Some(r) = ready.remove(&expected) {
                on_done(&jobs[expected], r);
                expected += 1;
            }
        }
    });
}
