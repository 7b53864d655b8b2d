//! [`Inspect`]: what a running protocol tells the admin endpoint about itself (role,
//! leader, term, indexes, data size). The protocol crates know nothing of the server, so
//! the trait lives here and is implemented here for every system the server runs.

use kvlab_node::baseline::{AsyncPrimary, Single};
use kvlab_node::raft_kv::RaftKv;
use kvlab_raft::Role;
use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

/// A protocol's view of itself, as far as it exposes one. Every field is optional: a
/// system without leaders has no leader to report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolStatus {
    /// The node's role (`leader`, `follower`, `candidate`, `pre-candidate`, `holder`,
    /// `forwarder`, …).
    pub role: Option<String>,
    /// The node this one believes leads (or holds the data).
    pub leader: Option<NodeId>,
    /// The current Raft term.
    pub term: Option<u64>,
    /// The Raft commit index.
    pub commit_index: Option<u64>,
    /// The last log index applied to the store.
    pub applied_index: Option<u64>,
    /// Keys in this node's copy of the store.
    pub keys: Option<usize>,
    /// Why the node refuses to serve, if it does (it could not recover its state).
    pub poisoned: Option<String>,
}

/// What the server may ask a protocol about itself. The defaults report nothing, so a new
/// system can be served before it implements the trait.
pub trait Inspect {
    /// The node's role for tracing spans, cheap enough to call after every step.
    fn role_name(&self, _me: NodeId) -> Option<&'static str> {
        None
    }
    /// A fuller status for the admin endpoint.
    fn inspect(&self, me: NodeId) -> ProtocolStatus {
        ProtocolStatus {
            role: self.role_name(me).map(str::to_string),
            ..ProtocolStatus::default()
        }
    }
}

/// The name of a Raft role as the admin endpoint reports it.
pub fn raft_role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

impl Inspect for RaftKv {
    fn role_name(&self, _me: NodeId) -> Option<&'static str> {
        Some(raft_role_name(self.role()))
    }
    fn inspect(&self, me: NodeId) -> ProtocolStatus {
        ProtocolStatus {
            role: self.role_name(me).map(str::to_string),
            leader: self.leader(),
            term: Some(self.term()),
            commit_index: Some(self.commit_index()),
            applied_index: Some(self.applied_index()),
            keys: Some(self.key_count()),
            poisoned: self.poisoned().map(str::to_string),
        }
    }
}

impl Inspect for Single {
    fn role_name(&self, me: NodeId) -> Option<&'static str> {
        Some(if self.is_holder(me) {
            "holder"
        } else {
            "forwarder"
        })
    }
    fn inspect(&self, me: NodeId) -> ProtocolStatus {
        ProtocolStatus {
            role: self.role_name(me).map(str::to_string),
            leader: self.is_holder(me).then_some(me),
            keys: Some(self.store().len()),
            ..ProtocolStatus::default()
        }
    }
}

impl Inspect for AsyncPrimary {
    fn inspect(&self, _me: NodeId) -> ProtocolStatus {
        ProtocolStatus {
            keys: Some(self.store().len()),
            ..ProtocolStatus::default()
        }
    }
}
