//! # kvlab-experiments
//!
//! The `kvlab` command: experiment specs (TOML), workloads, the nemesis, backends, run
//! directories, metrics, plots and reports.

pub mod report;
