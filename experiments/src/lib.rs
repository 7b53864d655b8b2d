//! # kvlab-experiments
//!
//! The `kvlab` command and the library behind it: experiment specs (TOML,
//! [`spec`]), Jepsen-style clients ([`workload`]), the fault injector ([`nemesis`]), the
//! runner that drives a simulated cluster through a safety and a liveness phase and
//! writes a run directory ([`run`]), and the numbers of a run ([`summary`]). The run
//! records (`events.jsonl`, [`events`]) and the plots and HTML report ([`report`]) live in
//! kvlab-report, which reads run directories and knows nothing of the runner; they are
//! re-exported here under their old paths.
//!
//! `system = "swim"` specs run SWIM alone, without a KV workload, and measure failure
//! detection the way the SWIM and Lifeguard papers do ([`observe::swim`]).
//!
//! The `local` backend ([`local`]) runs the same spec against real nodes on this machine
//! (`kvlab node` processes over udp or tarpc, in-process tasks over mem, or Docker
//! containers with `backend = "docker"`); tokio is used there and only there.
//! `kvlab kind render` writes a spec's Kubernetes manifests ([`kind`]). `kvlab node` and `kvlab client` are kvlab-node-cli's, the same
//! code as the small `kvlab-node` binary.
//!
//! **Must never depend on:** tokio or any async runtime in the simulated path, the wall
//! clock or unseeded randomness in anything that reaches `history.jsonl` or
//! `events.jsonl`. Wall time appears only in `meta.json` and `summary.json`'s
//! `wall_time_s` (and the checker's own timing fields), so the same spec, seed and
//! commit give byte-identical histories.
//!
//! ```
//! use kvlab_experiments::spec::{Spec, SystemKind};
//! use std::path::Path;
//!
//! let spec = Spec::from_toml_str(
//!     "name = \"demo\"\nsystem = \"single\"\nnodes = 3\n[time]\nduration_s = 1\nliveness_s = 1\n",
//!     Path::new("demo.toml"),
//! )?;
//! assert_eq!(spec.system, SystemKind::Single);
//! assert_eq!(spec.workload.clients, 10); // a default
//! # Ok::<(), kvlab_experiments::error::ExperimentError>(())
//! ```

pub mod bench;
pub mod check_cmd;
pub mod cluster;
pub mod driver;
pub mod error;
pub mod isolation;
pub mod kind;
pub mod local;
pub mod nemesis;
pub mod observe;
pub mod op_stats;
pub mod pool;
pub mod reproduce;
pub mod ring_cmd;
pub mod run;
pub mod shrink;
pub mod spec;
pub mod summary;
pub mod swarm;
pub mod sweep;
pub mod txn_stats;
pub mod txn_sweep;
pub mod workload;

pub use error::ExperimentError;
/// Plots, the HTML report and comparisons of run directories (kvlab-report).
pub use kvlab_report as report;
/// The run records (`events.jsonl`), kvlab-report's: the runner writes them, the report
/// reads them.
pub use kvlab_report::events;
