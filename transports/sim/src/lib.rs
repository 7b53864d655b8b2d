//! # kvlab-sim
//!
//! A deterministic discrete-event simulator for sans-IO kvlab nodes. It runs N values of
//! any [`kvlab_types::Protocol`] — the very `Node` the real server runs — on a virtual
//! clock, with one seed, an event queue ordered by `(time, seq)`, a network model
//! (latency, loss, duplication, reordering, a bound on messages in flight), composable
//! [`FaultRule`]s (partition, one-way, isolate, loss, delay, duplicate, hold), crashes
//! with a simulated disk that loses unsynced writes, pauses and per-node clock drift.
//!
//! **Must never depend on:** tokio or any async runtime, sockets, the real filesystem, the
//! wall clock, or unseeded randomness. Nothing observable iterates a `HashMap`. Same
//! seed, same inputs → the same outputs and statistics, bit for bit.
//!
//! The durability contract of [`kvlab_types::Effect`] is enforced: `Persist` appends to
//! the node's disk (not durable), `Sync` makes it durable after a simulated fsync latency,
//! and every `Send`/`Reply` emitted after a `Sync` in the same step leaves the node only
//! when that sync completes — never, if the node crashes first. `SaveSnapshot` is durable
//! at once. A restarted node boots with the [`kvlab_types::Recovery`] its disk kept.
//!
//! ```
//! use kvlab_sim::{FaultRule, Sim, SimConfig, SimOutput};
//! use kvlab_types::*;
//!
//! /// Answers every request with "not found" and tells node 1 about it.
//! #[derive(Debug)]
//! struct Echo;
//! impl Protocol for Echo {
//!     type Msg = u8;
//!     type Config = ();
//!     fn boot(_: &mut Cx<'_>, _: &(), _: &[NodeId], _: Recovery, _: &mut Out<u8>) -> Self {
//!         Echo
//!     }
//!     fn on_msg(&mut self, _: &mut Cx<'_>, _: NodeId, _: u8, _: &mut Out<u8>) {}
//!     fn on_timer(&mut self, _: &mut Cx<'_>, _: TimerId, _: &mut Out<u8>) {}
//!     fn on_client(&mut self, _: &mut Cx<'_>, req: ClientRequest, out: &mut Out<u8>) {
//!         out.send(NodeId(1), 0);
//!         out.reply(req.id, Ok(OpOutput::Read(None)));
//!     }
//! }
//!
//! let nodes = [NodeId(1), NodeId(2)];
//! let mut sim = Sim::<Echo>::new(SimConfig::default(), 42, &nodes, ()).unwrap();
//! sim.add_rule(FaultRule::Isolate { node: NodeId(1) });
//! let req = ClientRequest { id: RequestId { client: 1, seq: 1 }, op: KvOp::Read { key: "k".into() } };
//! sim.submit(NodeId(2), req);
//! let mut out = Vec::new();
//! sim.run_until(Time::from_secs(1), &mut out).unwrap();
//! // Clients are not partitioned: the reply arrives; the message to n1 was cut.
//! assert!(matches!(out.as_slice(), [SimOutput::Reply { node: NodeId(2), .. }]));
//! assert_eq!(sim.stats().messages_dropped_by_rule, 1);
//! assert_eq!(sim.now(), Time::from_secs(1));
//! ```

#![warn(missing_docs)]

mod config;
mod disk;
mod error;
mod queue;
mod rules;
mod sim;
mod stats;

pub use config::{
    DiskConfig, LatencyDist, MAX_LATENCY_MS, MAX_LOG_SHARDS, NetworkConfig, SimConfig,
};
pub use disk::LogCorruption;
pub use error::SimError;
pub use rules::{FaultRule, RuleId};
pub use sim::{MAX_CLOCK_DRIFT_PPM, Sim, SimOutput};
pub use stats::{NodeStats, SimStats};
