//! What the end-to-end tests share: one simulated run, quiet, without a report.

use std::path::Path;

use kvlab_experiments::reproduce::Reproduce;
use kvlab_experiments::run::{ReportPolicy, RunOptions, RunOutcome, run_experiment};
use kvlab_experiments::spec::Spec;

/// Runs `spec` (named `file` in its reproduce command) with `seed` into `dir`; panics
/// if the run cannot be carried out (a verdict, valid or not, is an outcome).
pub fn run_quiet(spec: &Spec, file: &str, seed: u64, dir: &Path) -> RunOutcome {
    run_experiment(
        spec,
        &RunOptions {
            seed,
            run_dir: dir.to_path_buf(),
            reproduce: Reproduce::new(Path::new(file), spec, seed, None),
            report: ReportPolicy::Never,
            progress: false,
        },
    )
    .expect("the run completes")
}
