//! # kvlab-ring
//!
//! placeholder
#![deny(missing_docs)]

pub mod balance;
pub mod config;
pub mod hash;
pub mod limits;
pub mod meta;
pub mod operator;
pub mod placement;
pub mod plan;
pub mod strategy;

pub use config::{ConfigError, RingSpec};
pub use hash::{LayoutError, META_GROUP, MAX_VNODE_COUNT, RingLayout, VnodeId, group_vnode, key_hash, vnode_group};
pub use meta::{MetaCmd, MetaEntry, MetaOutcome, MetaState, NodeState, Scheduler, StoreReport, SwimStatus};
pub use operator::{CancelReason, Operator, OperatorId, OperatorKind, OperatorState, Step, StepCommand};
pub use placement::{ConfEpoch, Descriptor, Placement, PlacementError, ReplicaSet};
pub use plan::{ConfChangeMode, PlacementBug, Plan, PlanConfig, PlanInput, plan};
pub use strategy::{Eligibility, PlacementStrategy, StrategyError, StrategyInput, StrategyParams, initial_placement, target_placement};

#[cfg(test)]
pub(crate) mod testutil;
