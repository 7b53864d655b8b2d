//! Where an experiment's nodes run: `backend` (`sim`, `local`, `docker`, `kind`), the
//! peer `transport` of real nodes, and the `[local]`, `[docker]` and `[kind]` tables.
//! Plain data; the backends themselves live in [`crate::cluster`] and [`crate::local`].

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
    /// One container per node on a private Docker bridge network, real time (see
    /// [`crate::local::docker`]).
    Docker,
    /// Pods of a StatefulSet in a kind cluster, through `kubectl`. Manifests are
    /// rendered by `kvlab kind render`; running an experiment on it is not built yet.
    Kind,
}

impl BackendKind {
    /// The name used in specs, on the command line and in `meta.json`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Sim => "sim",
            BackendKind::Local => "local",
            BackendKind::Docker => "docker",
            BackendKind::Kind => "kind",
        }
    }

    /// Whether the nodes are real processes (with real transports, real time).
    pub fn is_real(self) -> bool {
        self != BackendKind::Sim
    }

    /// The transport's name in summaries and `meta.json` for nodes that talk over
    /// `transport`: the simulator's network is `sim`.
    pub fn transport_name(self, transport: TransportChoice) -> &'static str {
        match self {
            BackendKind::Sim => "sim",
            BackendKind::Local | BackendKind::Docker | BackendKind::Kind => transport.name(),
        }
    }

    /// The unit of the run's clock, for progress bars.
    pub fn clock_unit(self) -> &'static str {
        match self {
            BackendKind::Sim => "simulated ms",
            BackendKind::Local | BackendKind::Docker | BackendKind::Kind => "ms",
        }
    }

    /// Whether a run on this backend replays exactly from its seed (then the reproduce
    /// command needs no backend flags).
    pub fn is_simulated(self) -> bool {
        self == BackendKind::Sim
    }

    /// Parses `sim`, `local`, `docker` or `kind` (the `--backend` flag).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "sim" => Ok(BackendKind::Sim),
            "local" => Ok(BackendKind::Local),
            "docker" => Ok(BackendKind::Docker),
            "kind" => Ok(BackendKind::Kind),
            other => Err(format!(
                "unknown backend `{other}`: use sim, local, docker or kind"
            )),
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
    /// Every node's WAL shards (`server.workers`): group `g` is logged in shard
    /// `g % workers`, each shard with its own writer, so up to `workers` fsyncs run at
    /// once. See `kvlab_server::commit`.
    pub workers: usize,
}

impl Default for LocalSpec {
    fn default() -> Self {
        LocalSpec {
            startup_timeout_s: 20.0,
            stop_timeout_s: 5.0,
            storage: kvlab_storage::StorageOptions::default(),
            workers: 1,
        }
    }
}

/// The image every container of a `docker` run (and every pod of a `kind` deployment)
/// runs unless the spec or `KVLAB_DOCKER_IMAGE` names another: built by
/// `kind-cluster/build-image.sh`.
pub const DEFAULT_NODE_IMAGE: &str = "kvlab-node:latest";

/// Options of `backend = "docker"` (the `[docker]` table of a spec). Startup and stop
/// bounds and storage come from `[local]`, as for node processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSpec {
    /// The node image (`KVLAB_DOCKER_IMAGE` overrides it).
    pub image: String,
    /// Bound on one `docker` command (create, kill, start, inspect, …) in seconds; a
    /// command that takes longer is killed and reported.
    pub command_timeout_s: f64,
    /// Memory limit of each container in MiB (0: none).
    pub memory_mb: u64,
}

impl Default for DockerSpec {
    fn default() -> Self {
        DockerSpec {
            image: DEFAULT_NODE_IMAGE.into(),
            command_timeout_s: 30.0,
            memory_mb: 512,
        }
    }
}

/// Options of the kind deployment (the `[kind]` table): what `kvlab kind render` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindSpec {
    /// The namespace the objects go to.
    pub namespace: String,
    /// The node image, loaded into kind with `kind load docker-image`.
    pub image: String,
    /// The first three octets of the fixed ClusterIPs of the per-node Services, inside
    /// the cluster's service CIDR (kind's default is 10.96.0.0/16): node `i` gets
    /// `<prefix>.<10 + i>`. Peers are addressed by these stable IPs because a node config
    /// names its peers by address.
    pub service_ip_prefix: String,
    /// CPU limit of each pod, in millicores.
    pub cpu_millis: u32,
    /// Memory limit of each pod, in MiB.
    pub memory_mb: u32,
    /// Size of each pod's data volume, in MiB.
    pub storage_mb: u32,
}

impl Default for KindSpec {
    fn default() -> Self {
        KindSpec {
            namespace: "kvlab".into(),
            image: DEFAULT_NODE_IMAGE.into(),
            service_ip_prefix: "10.96.77".into(),
            cpu_millis: 500,
            memory_mb: 256,
            storage_mb: 1024,
        }
    }
}
