//! [`NodeConfig`]: the TOML file `kvlab node --config NODE.toml` reads. Parsed with
//! `deny_unknown_fields` everywhere (a typo is an error, never a silent default) and
//! checked once by [`NodeConfig::validate`], whose error names the field.
//!
//! ```toml
//! id = 1
//! system = "raft"              # raft | single | async-primary
//! transport = "udp"            # udp | tarpc
//! listen = "127.0.0.1:7001"    # where peers reach this node
//! client = "127.0.0.1:7101"    # the client endpoint (tarpc)
//! data_dir = "data/n1"
//! seed = 1
//! # Keys the MAC on every peer frame: hex ("00ff…", "hex:00ff…") or "base64:…", at least
//! # 16 bytes. Every member has the same; a frame made without it is dropped and counted.
//! # This file holds it and the admin token: keep it private (mode 0600).
//! cluster_secret = "5f0e0c1b9d7a4e2f8c3b6a1d0e9f8a7b"
//!
//! [admin]
//! addr = "127.0.0.1:7201"      # loopback unless allow_non_loopback = true
//! token = "change-me"
//!
//! [peers]                      # every member, this node included or not
//! 1 = "127.0.0.1:7001"
//! 2 = "127.0.0.1:7002"
//! 3 = "127.0.0.1:7003"
//!
//! [storage]                    # kvlab_storage::StorageOptions
//! fsync = "batch"              # always | batch | never
//! max_unsynced_bytes = 1048576 # the most a crash may cut off the log's tail
//! recovery = "strict"          # strict: refuse damage that loses synced records
//!                              # truncate-damaged: cut it, log the loss at WARN
//!
//! [server]                     # limits of the client and admin endpoints (defaults shown)
//! client_max_connections = 1024
//! client_idle_timeout_ms = 60000
//! admin_max_connections = 16
//!
//! [raft]                       # kvlab_node::raft_kv::RaftKvConfig (only with system = "raft")
//! tick_interval_ms = 10
//!
//! [etcd_api]                   # etcd's v3 gRPC API (kvlab-etcd); system = "raft", one group
//! listen = "127.0.0.1:2379"    # loopback unless allow_non_loopback = true (no auth)
//! [etcd_api.members]           # other members' etcd endpoints, for `member list`
//! 2 = "127.0.0.1:2479"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kvlab_node::baseline::{AsyncPrimaryConfig, SingleConfig};
use kvlab_node::composed::KvlabConfig;
use kvlab_node::raft_kv::RaftKvConfig;
use kvlab_storage::StorageOptions;
use kvlab_transport::ClusterSecret;
use kvlab_transport_tarpc::TarpcConfig;
use kvlab_transport_tarpc::guard::ConnectionLimits;
use kvlab_transport_udp::UdpConfig;
use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::ServerError;

/// The longest admin token accepted, in bytes.
pub const MAX_ADMIN_TOKEN_BYTES: usize = 1024;
/// The most members a cluster may have.
pub const MAX_CLUSTER_NODES: usize = 1024;
/// The longest client request timeout accepted.
pub const MAX_CLIENT_REQUEST_TIMEOUT_MS: u64 = 600_000;
/// The largest client queue accepted.
pub const MAX_CLIENT_QUEUE_LEN: usize = 1 << 20;

/// The most threads a node process's async runtime may have (`server.runtime_threads`).
pub const MAX_RUNTIME_THREADS: usize = 64;
/// The largest group-commit batch accepted.
pub const MAX_STEPS_PER_SYNC_LIMIT: usize = 1 << 16;
/// The largest in-memory event log accepted.
pub const MAX_EVENT_LOG_LEN: usize = 1 << 20;
/// The largest frame either endpoint writes (a response: a status with a long event
/// log); clients read up to it.
pub const MAX_RESPONSE_FRAME_BYTES: usize = crate::rpc::MAX_RPC_FRAME_BYTES;
/// Default cap on client connections.
pub const DEFAULT_CLIENT_MAX_CONNECTIONS: usize = 1024;
/// Default idle timeout of a client connection.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default largest client request frame: 1 MiB.
pub const DEFAULT_CLIENT_MAX_REQUEST_BYTES: usize = 1 << 20;
/// Default bound on the bytes all client connections buffer together: 32 MiB.
pub const DEFAULT_CLIENT_MAX_BUFFERED_BYTES: usize = 32 << 20;
/// Default cap on admin connections: small, and separate from the client endpoint's, so
/// a flood of clients never locks out the operator.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 16;
/// Default idle timeout of an admin connection.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default largest admin request frame: 1 MiB (fault rule lists).
pub const DEFAULT_ADMIN_MAX_REQUEST_BYTES: usize = 1 << 20;
/// Default bound on the bytes all admin connections buffer together: 4 MiB.
pub const DEFAULT_ADMIN_MAX_BUFFERED_BYTES: usize = 4 << 20;

/// Which system a node runs (`swim` is refused by [`NodeConfig::validate`]: it runs on
/// the simulator only).
pub use kvlab_node::SystemKind;

/// Which peer transport a node process uses. (`mem` exists only inside one process: see
/// [`crate::LocalCluster`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// [`kvlab_transport_udp::UdpTransport`].
    Udp,
    /// [`kvlab_transport_tarpc::TarpcTransport`].
    Tarpc,
}

impl TransportKind {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tarpc => "tarpc",
        }
    }
}

/// The system and its configuration, resolved from a [`NodeConfig`].
#[derive(Clone, Debug, PartialEq)]
pub enum SystemConfig {
    /// `system = "raft"` with its `[raft]` table.
    Raft(RaftKvConfig),
    /// `system = "single"` with its `[single]` table.
    Single(SingleConfig),
    /// `system = "async-primary"` with its `[async_primary]` table.
    AsyncPrimary(AsyncPrimaryConfig),
    /// `system = "kvlab"` (the composed node) with its `[kvlab]` table.
    Kvlab(Box<KvlabConfig>),
}

impl SystemConfig {
    /// Which system this is.
    pub fn kind(&self) -> SystemKind {
        match self {
            SystemConfig::Raft(_) => SystemKind::Raft,
            SystemConfig::Single(_) => SystemKind::Single,
            SystemConfig::AsyncPrimary(_) => SystemKind::AsyncPrimary,
            SystemConfig::Kvlab(_) => SystemKind::Kvlab,
        }
    }

    /// Checks the system's own configuration against the cluster's members, naming the
    /// field (prefixed with the table name).
    pub fn validate(&self, members: &[NodeId]) -> Result<(), ServerError> {
        let invalid = |field: &str, reason: String| ServerError::InvalidConfig {
            field: field.to_string(),
            reason,
        };
        match self {
            SystemConfig::Raft(c) => c.validate().map_err(|e| match e {
                kvlab_node::raft_kv::RaftKvError::InvalidConfig { field, reason } => {
                    invalid(&format!("raft.{field}"), reason)
                }
                other => invalid("raft", other.to_string()),
            }),
            SystemConfig::Single(c) => {
                if c.forward_timeout_ms == 0 {
                    return Err(invalid(
                        "single.forward_timeout_ms",
                        "must be positive".into(),
                    ));
                }
                match c.holder {
                    Some(h) if !members.contains(&h) => Err(invalid(
                        "single.holder",
                        format!("{h} is not a member of the cluster {members:?}"),
                    )),
                    _ => Ok(()),
                }
            }
            SystemConfig::Kvlab(c) => c
                .validate(members)
                .map_err(|e| invalid(&format!("kvlab.{}", e.field), e.reason)),
            SystemConfig::AsyncPrimary(c) => {
                if c.forward_timeout_ms == 0 {
                    return Err(invalid(
                        "async_primary.forward_timeout_ms",
                        "must be positive".into(),
                    ));
                }
                match c.primary {
                    Some(p) if !members.contains(&p) => Err(invalid(
                        "async_primary.primary",
                        format!("{p} is not a member of the cluster {members:?}"),
                    )),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// The admin endpoint: where it listens and the token every call must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin endpoint listens (default `127.0.0.1:0`: loopback, a free port
    /// that the node logs).
    #[serde(default = "default_admin_addr")]
    pub addr: SocketAddr,
    /// The secret every admin call must carry (non-empty).
    pub token: String,
    /// Allow `addr` to be a non-loopback address. Off by default: fault rules and
    /// shutdown must not be reachable from the network by accident.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// How the driver serves clients and batches durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerOptions {
    /// How long the client endpoint waits for the node's answer before it replies
    /// `Indeterminate` (the request may still take effect).
    pub client_request_timeout_ms: u64,
    /// Client requests queued for the driver at most; beyond it a request is refused
    /// with `Unavailable` (it surely did not take effect).
    pub client_queue_len: usize,
    /// Group commit: the driver handles at most this many ready inputs before it starts
    /// the WAL writers on what they persisted (1 = a writer after every step).
    pub max_steps_per_sync: usize,
    /// WAL shards: group `g`'s records go to log `g % workers`, each log with its own
    /// writer (append + fsync on a blocking thread), so up to `workers` fsyncs run at once.
    /// 1 keeps the log in the data directory itself; more put shard `i` in
    /// `shard-<i>/`. A data directory written with one value refuses to open with
    /// another. See [`crate::commit`].
    pub workers: usize,
    /// Threads of a `kvlab node` process's async runtime. 1 (the default): a
    /// current-thread runtime. The driver is one task whatever this is, so more threads
    /// only run the endpoints and the transport's tasks beside it, and every hand-over
    /// between them becomes a cross-thread wake-up: with three nodes and a client on two
    /// cores, 2 threads cost about 35 % more CPU per put than 1 at 16 clients (181 vs 134
    /// µs, `kvlab bench`). More: a multi-thread runtime with that many workers. fsyncs run
    /// on the runtime's blocking pool either way.
    pub runtime_threads: usize,
    /// Recent protocol events kept in memory for `status()`.
    pub event_log_len: usize,
    /// Client connections served at once; at the cap the one idle longest is closed
    /// (counted) to make room. See `kvlab_transport_tarpc::guard`.
    pub client_max_connections: usize,
    /// A client connection without a request or a response for this long is closed
    /// (counted); longer than `client_request_timeout_ms`, so a connection waiting for an
    /// answer is never idle. `KvClient` reconnects by itself after a shorter idle spell.
    pub client_idle_timeout_ms: u64,
    /// The largest client request frame; a length prefix announcing more closes the
    /// connection (counted).
    pub client_max_request_bytes: usize,
    /// Bytes all client connections may buffer together (frames being assembled count,
    /// beyond a small allowance per connection); the connection that would exceed it is
    /// closed (counted).
    pub client_max_buffered_bytes: usize,
    /// Admin connections served at once (its own cap and accept loop).
    pub admin_max_connections: usize,
    /// An admin connection without a call for this long is closed (`AdminClient`
    /// reconnects).
    pub admin_idle_timeout_ms: u64,
    /// The largest admin request frame.
    pub admin_max_request_bytes: usize,
    /// Bytes all admin connections may buffer together.
    pub admin_max_buffered_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            client_request_timeout_ms: 2_000,
            client_queue_len: 4_096,
            max_steps_per_sync: 256,
            workers: 1,
            runtime_threads: 1,
            event_log_len: 256,
            client_max_connections: DEFAULT_CLIENT_MAX_CONNECTIONS,
            client_idle_timeout_ms: DEFAULT_CLIENT_IDLE_TIMEOUT_MS,
            client_max_request_bytes: DEFAULT_CLIENT_MAX_REQUEST_BYTES,
            client_max_buffered_bytes: DEFAULT_CLIENT_MAX_BUFFERED_BYTES,
            admin_max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            admin_idle_timeout_ms: DEFAULT_ADMIN_IDLE_TIMEOUT_MS,
            admin_max_request_bytes: DEFAULT_ADMIN_MAX_REQUEST_BYTES,
            admin_max_buffered_bytes: DEFAULT_ADMIN_MAX_BUFFERED_BYTES,
        }
    }
}

impl ServerOptions {
    /// The limits of the client endpoint.
    pub fn client_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.client_max_connections,
            idle_timeout_ms: self.client_idle_timeout_ms,
            max_request_frame_bytes: self.client_max_request_bytes,
            max_response_frame_bytes: MAX_RESPONSE_FRAME_BYTES,
            max_buffered_bytes_total: self.client_max_buffered_bytes,
        }
    }

    /// The limits of the admin endpoint.
    pub fn admin_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.admin_max_connections,
            idle_timeout_ms: self.admin_idle_timeout_ms,
            max_request_frame_bytes: self.admin_max_request_bytes,
            max_response_frame_bytes: MAX_RESPONSE_FRAME_BYTES,
            max_buffered_bytes_total: self.admin_max_buffered_bytes,
        }
    }

    /// Checks every field, naming it with the `server.` prefix.
    pub fn validate(&self) -> Result<(), ServerError> {
        let check = |field: &str, v: u64, max: u64| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(ServerError::InvalidConfig {
                    field: format!("server.{field}"),
                    reason: format!("{v} is outside [1, {max}]"),
                })
            }
        };
        check(
            "client_request_timeout_ms",
            self.client_request_timeout_ms,
            MAX_CLIENT_REQUEST_TIMEOUT_MS,
        )?;
        check(
            "client_queue_len",
            self.client_queue_len as u64,
            MAX_CLIENT_QUEUE_LEN as u64,
        )?;
        check(
            "max_steps_per_sync",
            self.max_steps_per_sync as u64,
            MAX_STEPS_PER_SYNC_LIMIT as u64,
        )?;
        check(
            "workers",
            self.workers as u64,
            crate::commit::MAX_WORKERS as u64,
        )?;
        check(
            "runtime_threads",
            self.runtime_threads as u64,
            MAX_RUNTIME_THREADS as u64,
        )?;
        check(
            "event_log_len",
            self.event_log_len as u64,
            MAX_EVENT_LOG_LEN as u64,
        )?;
        for (prefix, limits) in [
            ("client_", self.client_limits()),
            ("admin_", self.admin_limits()),
        ] {
            if !(1..=MAX_RESPONSE_FRAME_BYTES).contains(&limits.max_request_frame_bytes) {
                return Err(ServerError::InvalidConfig {
                    field: format!("server.{prefix}max_request_bytes"),
                    reason: format!(
                        "{} is outside [1, {MAX_RESPONSE_FRAME_BYTES}]",
                        limits.max_request_frame_bytes
                    ),
                });
            }
            limits
                .validate()
                .map_err(|(field, reason)| ServerError::InvalidConfig {
                    field: format!("server.{prefix}{field}"),
                    reason,
                })?;
        }
        if self.client_idle_timeout_ms <= self.client_request_timeout_ms {
            return Err(ServerError::InvalidConfig {
                field: "server.client_idle_timeout_ms".into(),
                reason: format!(
                    "{} must be longer than client_request_timeout_ms = {}, or a connection waiting for its answer would be closed",
                    self.client_idle_timeout_ms, self.client_request_timeout_ms
                ),
            });
        }
        Ok(())
    }
}

/// The etcd v3 API of a node (`[etcd_api]`): served on its own port by kvlab-etcd, on the
/// single-group `raft` system only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdApiConfig {
    /// Where the API listens (gRPC over plain HTTP/2; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Allow a `listen` address other than loopback: the API has no authentication.
    #[serde(default)]
    pub allow_non_loopback: bool,
    /// Other members' etcd API addresses by node id (`2 = "127.0.0.1:2479"`), listed by
    /// `Cluster.MemberList` as their client URLs.
    #[serde(default)]
    pub members: BTreeMap<String, SocketAddr>,
}

/// One node process: who it is, what it runs, where it listens, where its peers and its
/// data are. See the [module docs](self) for an example file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (positive).
    pub id: u32,
    /// The system this node runs.
    pub system: SystemKind,
    /// The peer transport.
    pub transport: TransportKind,
    /// Where peers reach this node (port 0 picks a free one; peers must then learn it).
    pub listen: SocketAddr,
    /// Where the client endpoint listens.
    pub client: SocketAddr,
    /// The admin endpoint.
    pub admin: AdminConfig,
    /// The secret shared by every member: it keys the MAC on every peer frame, so a
    /// frame from anyone without it is dropped (and counted) before it is decoded. Hex
    /// (`"00ff…"`, `"hex:00ff…"`) or `"base64:…"`, at least 16 bytes once decoded.
    pub cluster_secret: ClusterSecret,
    /// Every member's peer address by node id (`1 = "127.0.0.1:7001"` or
    /// `n1 = "…"`). This node may be listed or not; when it is not, `listen` stands in
    /// for it (list it when `listen` is a wildcard such as `0.0.0.0:7001`, so messages to
    /// itself carry the address its peers know).
    #[serde(default)]
    pub peers: BTreeMap<String, SocketAddr>,
    /// Where the write-ahead log and snapshots live; a restarted node recovers from it.
    pub data_dir: PathBuf,
    /// The run seed; the node's RNG and its fault-rule RNG derive from it and the id.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Storage options (fsync policy, segment size, bound on unsynced bytes, what
    /// recovery does with damage beyond a torn tail).
    #[serde(default)]
    pub storage: StorageOptions,
    /// Driver options (client timeout, queue bound, group commit).
    #[serde(default)]
    pub server: ServerOptions,
    /// UDP transport options (only with `transport = "udp"`).
    #[serde(default)]
    pub udp: Option<UdpConfig>,
    /// tarpc transport options (only with `transport = "tarpc"`).
    #[serde(default)]
    pub tarpc: Option<TarpcConfig>,
    /// `raft` system configuration (only with `system = "raft"`).
    #[serde(default)]
    pub raft: Option<RaftKvConfig>,
    /// `single` system configuration (only with `system = "single"`).
    #[serde(default)]
    pub single: Option<SingleConfig>,
    /// `async-primary` system configuration (only with `system = "async-primary"`).
    #[serde(default)]
    pub async_primary: Option<AsyncPrimaryConfig>,
    /// `kvlab` (the composed node) configuration (only with `system = "kvlab"`).
    #[serde(default)]
    pub kvlab: Option<KvlabConfig>,
    /// etcd's v3 API on its own port (only with `system = "raft"` and one group).
    #[serde(default)]
    pub etcd_api: Option<EtcdApiConfig>,
}

fn default_seed() -> u64 {
    1
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ServerError {
    ServerError::InvalidConfig {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses a peer key: `3` or `n3`.
fn parse_peer_key(key: &str) -> Option<NodeId> {
    let digits = key.strip_prefix('n').unwrap_or(key);
    digits.parse::<u32>().ok().filter(|v| *v > 0).map(NodeId)
}

impl NodeConfig {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.id)
    }

    /// The peer table: every member's address by id (this node at its own entry, or at
    /// `listen`). Fails on a key that is not a node id, naming it.
    pub fn peer_table(&self) -> Result<BTreeMap<NodeId, SocketAddr>, ServerError> {
        let mut table = BTreeMap::new();
        for (key, addr) in &self.peers {
            let id = parse_peer_key(key).ok_or_else(|| {
                invalid(
                    format!("peers.{key}"),
                    "keys must be positive node ids (`3` or `n3`)",
                )
            })?;
            if table.insert(id, *addr).is_some() {
                return Err(invalid(
                    format!("peers.{key}"),
                    format!("node {id} is listed twice"),
                ));
            }
        }
        table.entry(self.node_id()).or_insert(self.listen);
        Ok(table)
    }

    /// Every member of the cluster, in order (this node included).
    pub fn members(&self) -> Result<Vec<NodeId>, ServerError> {
        Ok(self.peer_table()?.into_keys().collect())
    }

    /// The system with its configuration (defaults where the table is absent).
    pub fn system_config(&self) -> Result<SystemConfig, ServerError> {
        Ok(match self.system {
            SystemKind::Raft => SystemConfig::Raft(self.raft.clone().unwrap_or_default()),
            SystemKind::Single => SystemConfig::Single(self.single.clone().unwrap_or_default()),
            SystemKind::AsyncPrimary => {
                SystemConfig::AsyncPrimary(self.async_primary.clone().unwrap_or_default())
            }
            SystemKind::Kvlab => {
                SystemConfig::Kvlab(Box::new(self.kvlab.clone().unwrap_or_default()))
            }
            SystemKind::Swim => {
                return Err(invalid(
                    "system",
                    "\"swim\" runs on the simulator only; kvlab node runs kvlab, raft, single or async-primary",
                ));
            }
        })
    }

    /// The UDP options (defaults where absent), keyed with the cluster secret.
    pub fn udp_config(&self) -> UdpConfig {
        let mut c = self.udp.unwrap_or_default();
        c.transport.peer_key = self.cluster_secret.peer_key();
        c
    }

    /// The tarpc options (defaults where absent), keyed with the cluster secret.
    pub fn tarpc_config(&self) -> TarpcConfig {
        let mut c = self.tarpc.unwrap_or_default();
        c.transport.peer_key = self.cluster_secret.peer_key();
        c
    }

    /// The etcd API's client addresses of other members, by node id.
    pub fn etcd_members(&self) -> Result<BTreeMap<NodeId, SocketAddr>, ServerError> {
        let mut table = BTreeMap::new();
        if let Some(e) = &self.etcd_api {
            for (key, addr) in &e.members {
                let id = parse_peer_key(key).ok_or_else(|| {
                    invalid(
                        format!("etcd_api.members.{key}"),
                        "keys must be positive node ids (`3` or `n3`)",
                    )
                })?;
                table.insert(id, *addr);
            }
            table.insert(self.node_id(), e.listen);
        }
        Ok(table)
    }

    fn validate_etcd_api(&self) -> Result<(), ServerError> {
        let Some(e) = &self.etcd_api else {
            return Ok(());
        };
        if self.system != SystemKind::Raft {
            return Err(invalid(
                "etcd_api",
                format!(
                    "served on system = \"raft\" only (etcd's revisions are global; the composed system would need per-group revisions), not \"{}\"",
                    self.system.name()
                ),
            ));
        }
        let groups = self.raft.as_ref().map_or(1, |r| r.groups);
        if groups != 1 {
            return Err(invalid(
                "etcd_api",
                format!("needs raft.groups = 1 (one global revision), got {groups}"),
            ));
        }
        if !e.listen.ip().is_loopback() && !e.allow_non_loopback {
            return Err(invalid(
                "etcd_api.listen",
                format!(
                    "{} is not a loopback address; set etcd_api.allow_non_loopback = true to expose the etcd API (it has no authentication)",
                    e.listen
                ),
            ));
        }
        if e.listen.port() != 0 {
            for (field, addr) in [
                ("listen", self.listen),
                ("client", self.client),
                ("admin.addr", self.admin.addr),
            ] {
                if addr.port() == e.listen.port() && addr.ip() == e.listen.ip() {
                    return Err(invalid(
                        "etcd_api.listen",
                        format!(
                            "{} is also `{field}`: the etcd API needs its own port",
                            e.listen
                        ),
                    ));
                }
            }
        }
        self.etcd_members()?;
        Ok(())
    }

    /// Checks the whole configuration once; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.id == 0 {
            return Err(invalid("id", "must be a positive node id"));
        }
        if self.admin.token.is_empty() {
            return Err(invalid("admin.token", "must not be empty"));
        }
        if self.admin.token.len() > MAX_ADMIN_TOKEN_BYTES {
            return Err(invalid(
                "admin.token",
                format!("longer than MAX_ADMIN_TOKEN_BYTES = {MAX_ADMIN_TOKEN_BYTES}"),
            ));
        }
        if !self.admin.addr.ip().is_loopback() && !self.admin.allow_non_loopback {
            return Err(invalid(
                "admin.addr",
                format!(
                    "{} is not a loopback address; set admin.allow_non_loopback = true to expose the admin endpoint",
                    self.admin.addr
                ),
            ));
        }
        self.system_config()?;
        self.validate_etcd_api()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let members = self.members()?;
        if members.len() > MAX_CLUSTER_NODES {
            return Err(invalid(
                "peers",
                format!(
                    "{} members exceed MAX_CLUSTER_NODES = {MAX_CLUSTER_NODES}",
                    members.len()
                ),
            ));
        }
        for (table, given, wanted) in [
            ("raft", self.raft.is_some(), SystemKind::Raft),
            ("single", self.single.is_some(), SystemKind::Single),
            (
                "async_primary",
                self.async_primary.is_some(),
                SystemKind::AsyncPrimary,
            ),
            ("kvlab", self.kvlab.is_some(), SystemKind::Kvlab),
        ] {
            if given && self.system != wanted {
                return Err(invalid(
                    table,
                    format!(
                        "the [{table}] table is given but system = \"{}\"",
                        self.system.name()
                    ),
                ));
            }
        }
        for (table, given, wanted) in [
            ("udp", self.udp.is_some(), TransportKind::Udp),
            ("tarpc", self.tarpc.is_some(), TransportKind::Tarpc),
        ] {
            if given && self.transport != wanted {
                return Err(invalid(
                    table,
                    format!(
                        "the [{table}] table is given but transport = \"{}\"",
                        self.transport.name()
                    ),
                ));
            }
        }
        let transport_check = match self.transport {
            TransportKind::Udp => self.udp_config().validate(),
            TransportKind::Tarpc => self.tarpc_config().validate(),
        };
        transport_check.map_err(|e| match e {
            kvlab_transport::TransportError::InvalidConfig { field, reason } => {
                invalid(format!("{}.{field}", self.transport.name()), reason)
            }
            other => invalid(self.transport.name(), other.to_string()),
        })?;
        self.storage
            .validate()
            .map_err(|e| invalid(format!("storage.{}", e.field), e.reason))?;
        self.server.validate()?;
        self.system_config()?.validate(&members)
    }

    /// Renders the configuration as TOML that [`load_node_config`] reads back unchanged
    /// (how a launcher writes one file per node process).
    pub fn to_toml_string(&self) -> Result<String, ServerError> {
        toml::to_string(self).map_err(|e| ServerError::InvalidConfig {
            field: "(whole config)".into(),
            reason: format!("cannot be written as TOML: {e}"),
        })
    }

    /// Writes the configuration as TOML to `path`, readable and writable by the owner
    /// only (mode 0600 on Unix): it holds the admin token and the cluster secret. An
    /// existing file's mode is tightened too.
    pub fn write_private(&self, path: &Path) -> Result<(), ServerError> {
        let text = self.to_toml_string()?;
        write_private_file(path, text.as_bytes()).map_err(|e| ServerError::InvalidConfig {
            field: "(whole config)".into(),
            reason: format!("cannot write {}: {e}", path.display()),
        })
    }

    /// Parses a configuration from TOML text (`origin` names it in errors) and validates
    /// it.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<NodeConfig, ServerError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((0, 0));
            ServerError::ParseConfig {
                path: origin.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }
}

/// A fresh cluster secret for one run: 32 bytes from the operating system's randomness,
/// mixed with the run `seed`. Should the OS refuse, the seed, the process id and the
/// wall clock stand in (still unknown to whoever reads only the run's seed).
pub fn generate_cluster_secret(seed: u64) -> ClusterSecret {
    let mut entropy = [0u8; 56];
    entropy[..8].copy_from_slice(&seed.to_le_bytes());
    entropy[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    entropy[12..28].copy_from_slice(&nanos.to_le_bytes());
    if getrandom::fill(&mut entropy[24..]).is_err() {
        tracing::warn!("no OS randomness: the cluster secret derives from the seed, pid and clock");
    }
    ClusterSecret::from_entropy(&entropy)
}

/// Writes `bytes` to `path` with mode 0600 (Unix), replacing what is there: the file is
/// created private, and an existing file's mode is tightened before it is truncated.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset - line_start + 1)
}

/// Reads, parses and validates a node configuration file. Errors name the file, the line
/// and column of a parse error, or the field that is out of range.
pub fn load_node_config(path: impl AsRef<Path>) -> Result<NodeConfig, ServerError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    NodeConfig::from_toml_str(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 1
system = "raft"
transport = "udp"
listen = "127.0.0.1:7001"
client = "127.0.0.1:7101"
cluster_secret = "000102030405060708090a0b0c0d0e0f"
data_dir = "data/n1"

[admin]
addr = "127.0.0.1:7201"
token = "t"

[peers]
1 = "127.0.0.1:7001"
n2 = "127.0.0.1:7002"
3 = "127.0.0.1:7003"

[raft]
tick_interval_ms = 20
"#;

    fn parse(text: &str) -> Result<NodeConfig, ServerError> {
        NodeConfig::from_toml_str(text, Path::new("node.toml"))
    }

    fn field_of(err: ServerError) -> String {
        match err {
            ServerError::InvalidConfig { field, .. } => field,
            other => panic!("expected InvalidConfig, got {other}"),
        }
    }

    #[test]
    fn a_complete_config_parses_with_members_and_system_table() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.members().unwrap(), [NodeId(1), NodeId(2), NodeId(3)]);
        match c.system_config().unwrap() {
            SystemConfig::Raft(r) => assert_eq!(r.tick_interval_ms, 20),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.storage, StorageOptions::default());
    }

    #[test]
    fn the_storage_recovery_mode_flows_from_the_storage_table() {
        let text = GOOD.replace(
            "data_dir = \"data/n1\"",
            "data_dir = \"data/n1\"\n[storage]\nrecovery = \"truncate-damaged\"\nmax_unsynced_bytes = 65536",
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.storage.recovery,
            kvlab_storage::RecoveryMode::TruncateDamaged
        );
        assert_eq!(c.storage.max_unsynced_bytes, 65536);
        // Written back for a node process, it reads the same.
        let again = parse(&c.to_toml_string().unwrap()).unwrap();
        assert_eq!(again.storage, c.storage);
        let bad = GOOD.replace(
            "data_dir = \"data/n1\"",
            "data_dir = \"data/n1\"\n[storage]\nrecovery = \"lenient\"",
        );
        assert!(parse(&bad).unwrap_err().to_string().contains("lenient"));
    }

    #[test]
    fn etcd_api_is_validated_and_its_errors_name_the_field() {
        let on = format!(
            "{GOOD}\n[etcd_api]\nlisten = \"127.0.0.1:2379\"\n[etcd_api.members]\n2 = \"127.0.0.1:2479\"\n"
        );
        let check = |text: &str| parse(text).and_then(|c| c.validate());
        check(&on).unwrap();
        let c = parse(&on).unwrap();
        let members = c.etcd_members().unwrap();
        assert_eq!(members[&NodeId(2)], "127.0.0.1:2479".parse().unwrap());
        assert_eq!(members[&NodeId(1)], "127.0.0.1:2379".parse().unwrap());
        let two_groups = on.replace("tick_interval_ms = 20", "tick_interval_ms = 20\ngroups = 2");
        assert_eq!(field_of(check(&two_groups).unwrap_err()), "etcd_api");
        let single = on
            .replace("system = \"raft\"", "system = \"single\"")
            .replace("[raft]\ntick_interval_ms = 20", "");
        assert_eq!(field_of(check(&single).unwrap_err()), "etcd_api");
        let exposed = on.replace("listen = \"127.0.0.1:2379\"", "listen = \"0.0.0.0:2379\"");
        assert_eq!(field_of(check(&exposed).unwrap_err()), "etcd_api.listen");
        let clash = on.replace("listen = \"127.0.0.1:2379\"", "listen = \"127.0.0.1:7101\"");
        let err = check(&clash).unwrap_err();
        assert!(err.to_string().contains("`client`"), "{err}");
        assert_eq!(field_of(err), "etcd_api.listen");
        let bad_key = on.replace("2 = \"127.0.0.1:2479\"", "x = \"127.0.0.1:2479\"");
        assert_eq!(field_of(check(&bad_key).unwrap_err()), "etcd_api.members.x");
        let typo = on.replace("[etcd_api]\n", "[etcd_api]\nlistne = \"127.0.0.1:1\"\n");
        assert!(parse(&typo).unwrap_err().to_string().contains("listne"));
    }

    #[test]
    fn unknown_field_is_refused_with_file_line_and_name() {
        let text = GOOD.replace(
            "data_dir = \"data/n1\"",
            "data_dir = \"data/n1\"\nlisten_adress = \"127.0.0.1:1\"",
        );
        let err = parse(&text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("listen_adress"), "{shown}");
        assert!(shown.starts_with("node.toml:9:"), "{shown}");
    }

    #[test]
    fn unknown_field_inside_a_system_table_is_refused() {
        let text = GOOD.replace("tick_interval_ms = 20", "tick_intreval_ms = 20");
        let shown = parse(&text).unwrap_err().to_string();
        assert!(shown.contains("tick_intreval_ms"), "{shown}");
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            ("id = 1", "id = 0", "id"),
            ("token = \"t\"", "token = \"\"", "admin.token"),
            (
                "addr = \"127.0.0.1:7201\"",
                "addr = \"0.0.0.0:7201\"",
                "admin.addr",
            ),
            ("n2 = ", "x2 = ", "peers.x2"),
            (
                "tick_interval_ms = 20",
                "tick_interval_ms = 0",
                "raft.tick_interval_ms",
            ),
            ("[raft]", "[single]\n[raft]", "single"),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[storage]\nsegment_size_bytes = 1",
                "storage.segment_size_bytes",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[storage]\nmax_unsynced_bytes = 1",
                "storage.max_unsynced_bytes",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[server]\nclient_queue_len = 0",
                "server.client_queue_len",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[server]\nruntime_threads = 0",
                "server.runtime_threads",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[tarpc]\nrpc_timeout_ms = 5",
                "tarpc",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[udp]\nmax_datagram_bytes = 1",
                "udp.max_datagram_bytes",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[server]\nadmin_max_connections = 0",
                "server.admin_max_connections",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[server]\nclient_idle_timeout_ms = 1000",
                "server.client_idle_timeout_ms",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[server]\nclient_max_buffered_bytes = 10",
                "server.client_max_buffered_bytes",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[server]\nworkers = 0",
                "server.workers",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\n[server]\nworkers = 17",
                "server.workers",
            ),
        ];
        for (from, to, field) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "case {field} did not change the text");
            let err = parse(&text).unwrap_err();
            assert_eq!(field_of(err), field, "case {to}");
        }
    }

    #[test]
    fn a_holder_outside_the_cluster_is_refused() {
        let text = GOOD
            .replace("system = \"raft\"", "system = \"single\"")
            .replace("[raft]\ntick_interval_ms = 20", "[single]\nholder = 9");
        assert_eq!(field_of(parse(&text).unwrap_err()), "single.holder");
    }

    #[test]
    fn a_wrong_type_is_refused_with_its_line() {
        let text = GOOD.replace("id = 1", "id = \"one\"");
        match parse(&text).unwrap_err() {
            ServerError::ParseConfig { line, message, .. } => {
                assert_eq!(line, 2);
                assert!(
                    message.contains("integer") || message.contains("invalid type"),
                    "{message}"
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_rendered_config_reads_back_unchanged() {
        let mut c = parse(GOOD).unwrap();
        c.storage.fsync = kvlab_storage::FsyncPolicy::Always;
        c.udp = Some(UdpConfig::default());
        let text = c.to_toml_string().unwrap();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn a_missing_short_or_malformed_cluster_secret_is_refused_with_its_line() {
        let missing = GOOD.replace(
            "cluster_secret = \"000102030405060708090a0b0c0d0e0f\"\n",
            "",
        );
        assert_ne!(missing, GOOD);
        let shown = parse(&missing).unwrap_err().to_string();
        assert!(shown.contains("cluster_secret"), "{shown}");
        for bad in ["\"abcd\"", "\"not hex at all, not base64 either\""] {
            let text = GOOD.replace("\"000102030405060708090a0b0c0d0e0f\"", bad);
            match parse(&text).unwrap_err() {
                ServerError::ParseConfig { line, message, .. } => {
                    assert_eq!(line, 7, "{message}");
                    assert!(message.contains("cluster secret"), "{message}");
                }
                other => panic!("{other}"),
            }
        }
        let b64 = GOOD.replace(
            "\"000102030405060708090a0b0c0d0e0f\"",
            "\"base64:AAECAwQFBgcICQoLDA0ODw==\"",
        );
        assert_eq!(parse(&b64).unwrap(), parse(GOOD).unwrap());
    }

    #[test]
    fn the_secret_keys_both_wire_transports_and_is_never_shown() {
        let c = parse(GOOD).unwrap();
        let key = c.cluster_secret.peer_key();
        assert!(!key.is_unauthenticated());
        assert_eq!(c.udp_config().transport.peer_key, key);
        assert_eq!(c.tarpc_config().transport.peer_key, key);
        assert!(
            !format!("{c:?}").contains("0001020304"),
            "Debug shows the secret"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_config_is_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = parse(GOOD).unwrap();
        c.write_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_node_config(&path).unwrap(), c);
        let fresh = dir.path().join("fresh.toml");
        c.write_private(&fresh).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load_node_config("/nonexistent/node.toml").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/node.toml"), "{err}");
    }

    #[test]
    fn admin_may_listen_beyond_loopback_only_when_allowed() {
        let text = GOOD.replace(
            "addr = \"127.0.0.1:7201\"",
            "addr = \"0.0.0.0:7201\"\nallow_non_loopback = true",
        );
        parse(&text).unwrap();
    }
}
