//! [`Inspect`]: what a running protocol tells the outside world about itself (role,
//! leader, term, indexes, data size, its group's membership). The server's admin
//! endpoint reports it; the simulator's runner reads the same values straight from the
//! nodes, so the nemesis sees a simulated and a real cluster through one view.

use kvlab_raft::Role;
use kvlab_swim::SwimNode;
use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::baseline::{AsyncPrimary, Single};
use crate::composed::KvlabNode;
use crate::raft_kv::RaftKv;

/// A learner counts as caught up (and may be promoted) when its match index is at most
/// this many entries behind the leader's commit index.
pub const LEARNER_CATCH_UP_LAG_ENTRIES: u64 = 16;

/// A replication group's configuration as its leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipStatus {
    /// Voters, sorted.
    pub voters: Vec<NodeId>,
    /// Learners, sorted.
    pub learners: Vec<NodeId>,
    /// Learners that caught up with the leader's log and may be promoted.
    pub caught_up: Vec<NodeId>,
    /// A configuration change is appended but not committed (a new one would be
    /// refused).
    pub change_pending: bool,
    /// The configuration in effect is joint (thesis §4.3): `voters` are the incoming
    /// ones, and a `LeaveJoint` is due.
    #[serde(default)]
    pub joint: bool,
}

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
    /// The default group's configuration, when this node leads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipStatus>,
    /// The composed system's ring, as this node holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingStatus>,
}

/// One node's part of the ring (the composed `kvlab` system).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingStatus {
    /// Vnode replicas hosted.
    pub replicas: usize,
    /// Vnode groups led.
    pub led: usize,
    /// Destroyed replicas remembered as tombstones.
    pub tombstones: usize,
    /// Snapshot bytes sent (data moved off this node).
    pub snapshot_bytes_sent: u64,
    /// Routing redirects this node's gateway followed.
    pub redirects: u64,
    /// On a meta voter: operators running.
    pub operators_running: Option<usize>,
}

/// What a driver may ask a protocol about itself. The defaults report nothing, so a new
/// system can be run before it implements the trait.
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
            membership: self.membership(),
            ring: None,
        }
    }
}

impl RaftKv {
    /// The default group's configuration as this node sees it, if it leads the group.
    fn membership(&self) -> Option<MembershipStatus> {
        let g = self.group().filter(|g| g.role() == Role::Leader)?;
        let commit = g.commit_index();
        let caught_up = g
            .learners()
            .iter()
            .copied()
            .filter(|&n| {
                g.progress(n)
                    .is_some_and(|p| p.match_index + LEARNER_CATCH_UP_LAG_ENTRIES >= commit)
            })
            .collect();
        Some(MembershipStatus {
            voters: g.voters().to_vec(),
            learners: g.learners().to_vec(),
            caught_up,
            change_pending: g.conf_index() > commit,
            joint: g.is_joint(),
        })
    }
}

impl Inspect for SwimNode {
    fn role_name(&self, _me: NodeId) -> Option<&'static str> {
        Some("member")
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

impl Inspect for KvlabNode {
    fn role_name(&self, _me: NodeId) -> Option<&'static str> {
        Some(match self.meta_raft().map(|r| r.role()) {
            Some(Role::Leader) => "meta-leader",
            Some(_) => "meta-voter",
            None => "node",
        })
    }
    fn inspect(&self, me: NodeId) -> ProtocolStatus {
        let meta = self.meta_raft();
        ProtocolStatus {
            role: self.role_name(me).map(str::to_string),
            // The leader the nemesis aims at is the meta group's (`crash-leader` kills
            // the placement driver).
            leader: meta.and_then(|r| r.leader()),
            term: meta.map(|r| r.term()),
            commit_index: meta.map(|r| r.commit_index()),
            applied_index: Some(
                self.hosted()
                    .filter_map(|v| self.applied(v))
                    .map(|a| a.0)
                    .sum(),
            ),
            keys: Some(
                self.hosted()
                    .filter_map(|v| self.store(v))
                    .map(|s| s.len())
                    .sum(),
            ),
            poisoned: self.poisoned().map(str::to_string),
            membership: None,
            ring: Some(RingStatus {
                replicas: self.hosted().count(),
                led: self.led().count(),
                tombstones: self.tombstones().count(),
                snapshot_bytes_sent: self.snapshot_bytes_sent(),
                redirects: self.redirects(),
                operators_running: self
                    .meta_state()
                    .map(|s| s.operators().values().filter(|o| o.is_running()).count()),
            }),
        }
    }
}
