//! [`ServerError`]: everything that can stop a node server or refuse its configuration.
//! Every variant names the node, the file, the field or the address involved, so one log
//! line is enough to act on.

use std::net::SocketAddr;
use std::path::PathBuf;

use kvlab_types::NodeId;

/// Why a node server could not start, had to stop, or refused its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The node configuration file could not be read.
    #[error("cannot read node config {}: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The node configuration is not valid TOML or does not fit the schema (unknown field,
    /// wrong type, missing field).
    #[error("{}:{line}:{column}: {message}", path.display())]
    ParseConfig {
        /// The file (or `<inline>` for a string).
        path: PathBuf,
        /// 1-based line of the offending text (0 when the parser gave no position).
        line: usize,
        /// 1-based column of the offending text (0 when unknown).
        column: usize,
        /// What the parser said, naming the field.
        message: String,
    },
    /// A field of the node configuration is out of range or inconsistent.
    #[error("invalid node config: field `{field}`: {reason}")]
    InvalidConfig {
        /// The field, as written in the TOML (`admin.token`, `peers.3`, …).
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// The node's storage failed to open, or an append, fsync or snapshot failed while
    /// running. The node stops: it never continues after a failed fsync.
    #[error("node {node}: storage failed during {op}: {source}")]
    Storage {
        /// The node.
        node: NodeId,
        /// What the server was doing (`open`, `persist`, `sync`, `save_snapshot`).
        op: &'static str,
        /// The storage error, naming the file.
        source: kvlab_storage::StorageError,
    },
    /// The peer transport failed to start.
    #[error("node {node}: transport: {source}")]
    Transport {
        /// The node.
        node: NodeId,
        /// The transport error.
        source: kvlab_transport::TransportError,
    },
    /// A client or admin endpoint could not listen.
    #[error("node {node}: cannot bind the {endpoint} endpoint on {addr}: {source}")]
    Bind {
        /// The node.
        node: NodeId,
        /// `client` or `admin`.
        endpoint: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("node {node}: cannot create data dir {}: {source}", path.display())]
    DataDir {
        /// The node.
        node: NodeId,
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node of a local cluster was asked for that does not exist, or is not running.
    #[error("node {node}: {reason}")]
    NodeState {
        /// The node.
        node: NodeId,
        /// What is wrong (`not a member of the cluster`, `not running`, …).
        reason: String,
    },
    /// The driver task of a node ended abnormally (a panic in the protocol).
    #[error("node {node}: driver task failed: {reason}")]
    Driver {
        /// The node.
        node: NodeId,
        /// What the runtime reported.
        reason: String,
    },
}
