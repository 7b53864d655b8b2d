//! Counters of a simulated run, for `summary.json` and for tests that check the network
//! model did what it was told.

use std::collections::BTreeMap;

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

/// What happened during a run, over the whole cluster and per node.
///
/// Every node-to-node message that was sent ends in exactly one of: delivered, one of the
/// `messages_dropped_*` counters, or still in flight (`messages_in_flight`). Duplicated
/// copies are counted in `messages_duplicated` and then end like any other message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimStats {
    /// Events taken from the queue (stale timers included); bounded by
    /// `SimConfig::max_events`.
    pub events_processed: u64,
    /// Node-to-node messages the protocols sent (released from a sync gate, if held).
    pub messages_sent: u64,
    /// Messages handed to `Protocol::on_msg`.
    pub messages_delivered: u64,
    /// Messages dropped by a partition, one-way or isolate rule.
    pub messages_dropped_by_rule: u64,
    /// Messages lost by the configured loss probability or a loss rule.
    pub messages_dropped_by_loss: u64,
    /// Messages that arrived at a node that was down or had restarted since they were
    /// sent, and messages waiting for a paused node that crashed.
    pub messages_dropped_by_crash: u64,
    /// Messages dropped because `network.max_in_flight_messages` were already in flight.
    pub messages_dropped_by_bound: u64,
    /// Messages addressed to a node that is not part of the simulation.
    pub messages_dropped_unknown_node: u64,
    /// Messages corrupted on the wire (`network.corrupt_probability`) whose frame the
    /// receiver's decoder rejected.
    #[serde(default)]
    pub messages_dropped_corrupt: u64,
    /// Forged frames (`network.forge_probability`) the receiver's decoder rejected.
    /// These are extra frames an attacker sent, not messages a node sent: they are not
    /// counted in `messages_sent`.
    #[serde(default)]
    pub messages_dropped_forged: u64,
    /// Extra copies created by duplication.
    pub messages_duplicated: u64,
    /// Messages that a hold rule kept back (each time it did).
    pub messages_held: u64,
    /// Messages currently on the wire, held, or waiting for a paused node.
    pub messages_in_flight: u64,
    /// Sum of `Message::wire_size` of sent messages; zero unless
    /// `network.measure_bytes` is on.
    pub bytes_sent: u64,
    /// Client requests submitted.
    pub client_requests_submitted: u64,
    /// Client requests that arrived at a node that was down (the client times out).
    pub client_requests_lost: u64,
    /// Client requests addressed to a node that is not part of the simulation.
    pub client_requests_unknown_node: u64,
    /// Replies that reached their client.
    pub client_replies_delivered: u64,
    /// Sends and replies that waited for a sync and were never released because their
    /// node crashed first.
    pub effects_lost_unsynced: u64,
    /// Syncs (fsyncs) completed.
    pub syncs: u64,
    /// Timers that fired (stale, re-armed or cancelled ones excluded).
    pub timers_fired: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Storage operations that failed (each stopped its node).
    pub storage_errors: u64,
    /// Per-node counters, ordered by node id.
    pub per_node: BTreeMap<NodeId, NodeStats>,
}

/// What happened at one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStats {
    /// Node-to-node messages it sent.
    pub messages_sent: u64,
    /// Messages delivered to it.
    pub messages_delivered: u64,
    /// Client requests delivered to it.
    pub client_requests_delivered: u64,
    /// Client requests lost because it was down when they arrived.
    pub client_requests_lost: u64,
    /// Replies it sent.
    pub replies_sent: u64,
    /// Timers that fired on it.
    pub timers_fired: u64,
    /// Records it persisted.
    pub records_persisted: u64,
    /// Syncs it completed.
    pub syncs: u64,
    /// Snapshots it saved.
    pub snapshots_saved: u64,
    /// Events (`Effect::Event`) it reported.
    pub events_reported: u64,
    /// Sends and replies of it that a crash cancelled while they waited for a sync.
    pub effects_lost_unsynced: u64,
    /// Storage operations that failed (the simulator crashes the node, as a real server
    /// would stop on a failed write-ahead-log write).
    pub storage_errors: u64,
    /// Times it crashed.
    pub crashes: u64,
    /// Times it restarted.
    pub restarts: u64,
    /// Bytes written to its simulated disk.
    pub disk_bytes_written: u64,
    /// File fsyncs on its simulated disk.
    pub disk_file_syncs: u64,
    /// Unsynced bytes its disk lost in crashes.
    pub disk_unsynced_bytes_lost: u64,
    /// Writes its disk tore in crashes.
    pub disk_torn_writes: u64,
    /// Fsyncs its disk failed (the `disk-fsync-error` fault).
    #[serde(default)]
    pub disk_syncs_failed: u64,
}
