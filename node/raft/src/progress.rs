//! The leader's view of one follower: how much of the log it holds and how the leader
//! sends to it (the probe / replicate / snapshot flow-control states of etcd's raft).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::storage::SnapshotMeta;

/// How the leader currently sends entries to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches: one AppendEntries at
    /// a time, backing off on rejection.
    Probe,
    /// The logs match up to `match_index`: the leader streams entries optimistically,
    /// up to `max_inflight_msgs` unacknowledged messages.
    Replicate,
    /// The entries the follower needs were compacted: the leader streams a snapshot.
    Snapshot,
}

/// A read-only view of one follower's progress, for status pages and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    /// Highest index known to be replicated on the follower.
    pub match_index: u64,
    /// Next index the leader will send.
    pub next_index: u64,
    /// The flow-control state.
    pub state: ProgressState,
    /// AppendEntries messages sent and not yet acknowledged.
    pub inflight_msgs: usize,
    /// Whether the follower answered during the current CheckQuorum window.
    pub recent_active: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// In probe state: an AppendEntries is outstanding, wait for an answer or heartbeat.
    pub probe_sent: bool,
    /// Last index of each unacknowledged AppendEntries (replicate state), oldest first.
    pub inflights: VecDeque<u64>,
    pub recent_active: bool,
    /// Whether `match_index` advanced since the last heartbeat response; if not while
    /// entries are outstanding, messages were probably lost and the leader re-probes.
    pub progressed_since_heartbeat: bool,
    /// The snapshot being streamed (snapshot state) and the follower's acknowledged offset.
    pub snapshot: SnapshotMeta,
    pub snapshot_offset: u64,
    /// Highest ReadIndex round this follower acknowledged in the current term.
    pub read_round_acked: u64,
}

impl Progress {
    pub fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: VecDeque::new(),
            recent_active: false,
            progressed_since_heartbeat: false,
            snapshot: SnapshotMeta::default(),
            snapshot_offset: 0,
            read_round_acked: 0,
        }
    }

    pub fn view(&self) -> PeerProgress {
        PeerProgress {
            match_index: self.match_index,
            next_index: self.next_index,
            state: self.state,
            inflight_msgs: self.inflights.len(),
            recent_active: self.recent_active,
        }
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            self.next_index = self
                .next_index
                .max(self.match_index + 1)
                .max(self.snapshot.index + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
    }

    pub fn become_snapshot(&mut self, snapshot: SnapshotMeta) {
        self.state = ProgressState::Snapshot;
        self.snapshot = snapshot;
        self.snapshot_offset = 0;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Whether the leader must not send another AppendEntries now.
    pub fn is_paused(&self, max_inflight_msgs: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.len() >= max_inflight_msgs,
            ProgressState::Snapshot => true,
        }
    }

    /// Records an accepted AppendEntries up to `index`; returns whether it was news.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.progressed_since_heartbeat = true;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflights.front().is_some_and(|&last| last <= index) {
            self.inflights.pop_front();
        }
        updated
    }

    /// Handles a rejection of the AppendEntries after `rejected`; `hint` is the largest
    /// index at which the logs may agree. Returns false if the rejection is stale.
    pub fn maybe_decr_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.become_probe();
            return true;
        }
        // next_index starts at last + 1 >= 1 and only ever moves to some index + 1.
        assert!(self.next_index >= 1, "next_index 0");
        if self.next_index - 1 != rejected {
            return false;
        }
        // The hint is at most the rejected index (checked when the message arrived).
        self.next_index = rejected.min(hint + 1).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// Notes that an AppendEntries ending at `last` was sent.
    pub fn sent_entries(&mut self, last: Option<u64>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflights.push_back(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }
}
