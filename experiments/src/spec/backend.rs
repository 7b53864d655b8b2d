//! Where an experiment's nodes run: `backend` (`sim`, `local`), the peer `transport` of
//! real nodes, and the `[local]` table. Plain data; the backends themselves live in
//! [`crate::cluster`] and [`crate::local`].

use serde::{Deserialize, Serialize};

/// Where the nodes of an experiment run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The deterministic simulator (virtual time, one seed decides everything).
    #[default]
    Sim,
    /// Real nodes on this machine, real time (see [`crate::local`]).
    Local,
}

impl BackendKind {
    /// The name used in specs, on the command line and in `meta.json`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Sim => "sim",
            BackendKind::Local => "local",
        }
    }

    /// The transport's name in summaries and `meta.json` for nodes that talk over
    /// `transport`: the simulator's network is `sim`.
    pub fn transport_name(self, transport: TransportChoice) -> &'static str {
        match self {
            BackendKind::Sim => "sim",
            BackendKind::Local => transport.name(),
        }
    }

    /// The unit of the run's clock, for progress bars.
    pub fn clock_unit(self) -> &'static str {
        match self {
            BackendKind::Sim => "simulated ms",
            BackendKind::Local => "ms",
        }
    }

    /// Whether a run on this backend replays exactly from its seed (then the reproduce
    /// command needs no backend flags).
    pub fn is_simulated(self) -> bool {
        self == BackendKind::Sim
    }

    /// Parses `sim` or `local` (the `--backend` flag); `kind` is not available here.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "sim" => Ok(BackendKind::Sim),
            "local" => Ok(BackendKind::Local),
            "kind" => Err("the kind backend is not built yet: use sim or local".into()),
            other => Err(format!("unknown backend `{other}`: use sim or local")),
        }
    }
}

/// The peer transport of a `local` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportChoice {
    /// Every node a task of the `kvlab` process, over tokio channels.
    Mem,
    /// One process per node, peers over UDP.
    Udp,
    /// One process per node, peers over tarpc (TCP).
    #[default]
    Tarpc,
}

impl TransportChoice {
    /// The name used in specs, on the command line and in `meta.json`.
    pub fn name(self) -> &'static str {
        match self {
            TransportChoice::Mem => "mem",
            TransportChoice::Udp => "udp",
            TransportChoice::Tarpc => "tarpc",
        }
    }

    /// Parses `mem`, `udp` or `tarpc` (the `--transport` flag).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "mem" => Ok(TransportChoice::Mem),
            "udp" => Ok(TransportChoice::Udp),
            "tarpc" => Ok(TransportChoice::Tarpc),
            other => Err(format!(
                "unknown transport `{other}`: use mem, udp or tarpc"
            )),
        }
    }
}

/// Options of `backend = "local"` (the `[local]` table of a spec).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSpec {
    /// Bound on starting the cluster (every node answering its admin endpoint and, for
    /// Raft, a leader elected) and on one node's restart.
    pub startup_timeout_s: f64,
    /// Bound on a node's graceful stop (`SIGTERM`) at the end of the run; then `SIGKILL`.
    pub stop_timeout_s: f64,
    /// Every node's storage (fsync policy: `batch` = group commit, fsync on).
    pub storage: kvlab_storage::StorageOptions,
}

impl Default for LocalSpec {
    fn default() -> Self {
        LocalSpec {
            startup_timeout_s: 20.0,
            stop_timeout_s: 5.0,
            storage: kvlab_storage::StorageOptions::default(),
        }
    }
}
