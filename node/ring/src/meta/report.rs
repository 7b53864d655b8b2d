//! What the node feeds the meta leader's scheduler: SWIM's view of each member and the
//! store heartbeats ([`StoreReport`]) every node sends every
//! `meta.store_heartbeat_interval_ms`.

use std::collections::BTreeMap;

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::hash::{MAX_VNODE_COUNT, VnodeId};
use crate::placement::Descriptor;

/// The most down peers one led group may list (a group has at most
/// [`super::MAX_DESCRIPTOR_NODES`] members).
pub const MAX_DOWN_PEERS_PER_GROUP: usize = super::MAX_DESCRIPTOR_NODES;

/// SWIM's opinion of a member, as the meta leader's own SWIM instance holds it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwimStatus {
    /// Alive (`member_joined`, `member_alive`).
    Alive,
    /// Suspected (`member_suspect`).
    Suspect,
    /// Declared dead (`member_dead`).
    Dead,
    /// Left on purpose (`member_left`); treated like dead for replacement.
    Left,
}

impl SwimStatus {
    /// Dead or left.
    pub fn is_gone(self) -> bool {
        matches!(self, SwimStatus::Dead | SwimStatus::Left)
    }
}

/// One group this node leads, as its heartbeat reports it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LedGroup {
    /// The group's applied descriptor.
    pub descriptor: Descriptor,
    /// The leader's Raft term.
    pub term: u64,
    /// Members the leader has not heard from for `membership.peer_down_after_ms`
    /// (TiKV's down peers).
    pub down_peers: Vec<NodeId>,
}

/// A node's store heartbeat (wave 2 §2.2 M1).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StoreReport {
    /// The reporting node.
    pub node: NodeId,
    /// Its address (used to register it if meta does not know it).
    pub address: Option<String>,
    /// Every group it hosts a replica of, with the replica's size in bytes.
    pub hosted_bytes: BTreeMap<VnodeId, u64>,
    /// The groups it leads.
    pub led: Vec<LedGroup>,
}

/// Why a report was dropped (counted by the scheduler, never a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// More groups than a ring can have.
    #[error("report from {node} names {count} groups (max {MAX_VNODE_COUNT})")]
    TooManyGroups {
        /// The reporter.
        node: NodeId,
        /// How many.
        count: usize,
    },
    /// A led group lists too many down peers.
    #[error("report from {node}: {vnode} lists {count} down peers")]
    TooManyDownPeers {
        /// The reporter.
        node: NodeId,
        /// The group.
        vnode: VnodeId,
        /// How many.
        count: usize,
    },
    /// The address is too long.
    #[error("report from {0}: address too long")]
    AddressTooLong(NodeId),
}

impl StoreReport {
    /// Checks the report's bounds.
    pub fn check(&self) -> Result<(), ReportError> {
        let max = MAX_VNODE_COUNT as usize;
        for count in [self.hosted_bytes.len(), self.led.len()] {
            if count > max {
                return Err(ReportError::TooManyGroups {
                    node: self.node,
                    count,
                });
            }
        }
        for g in &self.led {
            if g.down_peers.len() > MAX_DOWN_PEERS_PER_GROUP {
                return Err(ReportError::TooManyDownPeers {
                    node: self.node,
                    vnode: g.descriptor.vnode,
                    count: g.down_peers.len(),
                });
            }
        }
        if self
            .address
            .as_ref()
            .is_some_and(|a| a.len() > super::MAX_ADDRESS_BYTES)
        {
            return Err(ReportError::AddressTooLong(self.node));
        }
        Ok(())
    }

    /// The led group of vnode `v`, if this node leads it.
    pub fn led_group(&self, v: VnodeId) -> Option<&LedGroup> {
        self.led.iter().find(|g| g.descriptor.vnode == v)
    }
}
