//! [`SystemKind`]: the systems a node can run, by the name specs and node configs use.

use serde::{Deserialize, Serialize};

/// Which system the nodes run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    /// [`crate::baseline::Single`]: one node holds the data; linearizable.
    Single,
    /// [`crate::baseline::AsyncPrimary`]: asynchronous primary-backup; not linearizable.
    AsyncPrimary,
    /// [`crate::raft_kv::RaftKv`]: the KV store replicated by Raft groups over all nodes;
    /// linearizable, available while a majority can talk.
    Raft,
    /// `kvlab_swim::SwimNode`: SWIM membership alone, without a KV workload.
    Swim,
    /// [`crate::composed::KvlabNode`]: the composed node — SWIM, a ring of vnodes, a
    /// metadata Raft group and one Raft group per vnode; linearizable per key.
    Kvlab,
}

impl SystemKind {
    /// Every system, in the order a help text lists them.
    pub const ALL: [SystemKind; 5] = [
        SystemKind::Kvlab,
        SystemKind::Raft,
        SystemKind::Single,
        SystemKind::AsyncPrimary,
        SystemKind::Swim,
    ];

    /// The name used in specs, node configs and summaries.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Single => "single",
            SystemKind::AsyncPrimary => "async-primary",
            SystemKind::Raft => "raft",
            SystemKind::Swim => "swim",
            SystemKind::Kvlab => "kvlab",
        }
    }

    /// Whether clients can read and write keys (every system but `swim`).
    pub fn serves_keys(self) -> bool {
        self != SystemKind::Swim
    }
}
