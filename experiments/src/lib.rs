//! # kvlab-experiments
//!
//! The `kvlab` command and the library behind it: experiment specs (TOML,
//! [`spec`]), Jepsen-style clients ([`workload`]), the fault injector ([`nemesis`]), the
//! runner that drives a simulated cluster through a safety and a liveness phase and
//! writes a run directory ([`run`]), the numbers of a run ([`summary`]), `events.jsonl`
//! ([`events`]), and plots and the HTML report ([`report`]).
//!
//! `system = "swim"` specs run SWIM alone, without a KV workload, and measure failure
//! detection the way the SWIM and Lifeguard papers do ([`swim_exp`]).
//!
//! The `local` backend ([`local`]) runs the same spec against real nodes on this machine
//! (`kvlab node` processes over udp or tarpc, or in-process tasks over mem), and
//! [`node_cmd`] is `kvlab node` and `kvlab client`; tokio is used there and only there.
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

pub mod check_cmd;
pub mod cluster;
pub mod driver;
pub mod error;
pub mod events;
pub mod local;
pub mod nemesis;
pub mod node_cmd;
pub mod observe;
pub mod op_stats;
pub mod pool;
pub mod report;
pub mod reproduce;
pub mod run;
pub mod spec;
pub mod summary;
pub mod sweep;
pub mod workload;

pub use error::ExperimentError;
