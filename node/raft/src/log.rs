//! The in-memory Raft log: a snapshot base followed by contiguous entries, the commit
//! and apply cursors, and the boundary between what was already handed to the caller for
//! persistence and what was not.
//!
//! Every value reaching this module was checked before: message fields by
//! [`crate::RaftMessage::validate`] and the group's `check_message`, recovered state by
//! [`crate::RaftGroup::recover`]. What this module asserts are its own invariants
//! (`applied <= committed <= last_index`, contiguous entries, a persistence cursor
//! within the log); a failed assertion is a bug in this crate, kept loud in release.

use crate::RaftError;
use crate::storage::{ConfState, Entry, Snapshot, SnapshotMeta};

#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    /// The latest snapshot; its meta is the log's base (index 0 term 0 when none).
    pub snapshot: Snapshot,
    /// Entries after the snapshot: `entries[k].index == snapshot.meta.index + 1 + k`.
    pub entries: Vec<Entry>,
    /// Highest index known to be committed.
    pub committed: u64,
    /// Highest index handed to the caller for application.
    pub applied: u64,
    /// First index not yet handed to the caller for persistence.
    pub unstable_from: u64,
}

impl RaftLog {
    /// A log of `entries` after `snapshot`. `commit` (checked by the caller to be within
    /// the log) may be below the snapshot: a crash can keep an installed snapshot's
    /// record and lose the hard state written after it, and a snapshot is committed.
    pub fn new(snapshot: Snapshot, entries: Vec<Entry>, commit: u64) -> RaftLog {
        let base = snapshot.meta.index;
        let last = base + entries.len() as u64;
        assert!(commit <= last, "commit {commit} beyond last index {last}");
        RaftLog {
            committed: commit.max(base),
            applied: base,
            unstable_from: last + 1,
            snapshot,
            entries,
        }
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot.meta.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.term)
            .unwrap_or(self.snapshot.meta.term)
    }

    /// The term of the entry at `index`; `None` if compacted away (below the snapshot)
    /// or beyond the end.
    pub fn term(&self, index: u64) -> Option<u64> {
        let base = self.snapshot.meta;
        if index == base.index {
            Some(base.term)
        } else if index < base.index || index > self.last_index() {
            None
        } else {
            Some(self.entries[(index - base.index - 1) as usize].term)
        }
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.first_index() || index > self.last_index() {
            None
        } else {
            Some(&self.entries[(index - self.first_index()) as usize])
        }
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: a candidate's log is at least as up-to-date as ours if its last term
    /// is later, or equal with a last index at least as large.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends entries whose first index is at most `last_index + 1`, discarding any
    /// existing entry at or after it. Never discards a committed entry.
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), RaftError> {
        let Some(first) = ents.first().map(|e| e.index) else {
            return Ok(());
        };
        if first <= self.committed {
            return Err(RaftError::CommittedEntryConflict {
                index: first,
                committed: self.committed,
            });
        }
        if first > self.last_index() + 1 || first < self.first_index() {
            return Err(RaftError::LogGap {
                first_index: first,
                last_index: self.last_index(),
            });
        }
        self.entries.truncate((first - self.first_index()) as usize);
        self.entries.extend_from_slice(ents);
        self.unstable_from = self.unstable_from.min(first);
        Ok(())
    }

    /// The index of the first entry of `ents` that this log lacks or holds with another
    /// term (Raft §5.3 "if an existing entry conflicts with a new one").
    fn find_conflict(&self, ents: &[Entry]) -> Option<u64> {
        ents.iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map(|e| e.index)
    }

    /// The follower side of AppendEntries (Raft §5.3): if the log holds
    /// `(prev_index, prev_term)`, adopt `ents` (truncating a conflicting suffix), advance
    /// the commit index to `min(leader_commit, last new index)` and return that last new
    /// index; otherwise `Ok(None)`.
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        leader_commit: u64,
        ents: &[Entry],
    ) -> Result<Option<u64>, RaftError> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        // RaftMessage::validate refused anything else.
        assert!(
            ents.iter()
                .enumerate()
                .all(|(k, e)| e.index == prev_index + 1 + k as u64),
            "entries not contiguous after {prev_index}"
        );
        let last_new = prev_index + ents.len() as u64;
        if let Some(conflict) = self.find_conflict(ents) {
            self.append(&ents[(conflict - prev_index - 1) as usize..])?;
        }
        self.commit_to(leader_commit.min(last_new));
        Ok(Some(last_new))
    }

    /// Raises the commit index to `index` (never lowers it). Callers pass an index the
    /// log holds: a commit index beyond the log would hand out entries that do not exist.
    pub fn commit_to(&mut self, index: u64) {
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        if index > self.committed {
            self.committed = index;
        }
    }

    /// Entries `[lo, hi)` but at most `max_entries` and `max_bytes` (always at least one
    /// entry if the range is not empty, so that one large entry still moves).
    pub fn slice(&self, lo: u64, hi: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        assert!(
            lo >= self.first_index() && hi <= self.last_index() + 1,
            "slice [{lo}, {hi}) outside the log [{}, {}]",
            self.first_index(),
            self.last_index()
        );
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = lo;
        while i < hi && out.len() < max_entries {
            let e = &self.entries[(i - self.first_index()) as usize];
            if !out.is_empty() && bytes + e.size_bytes() > max_bytes {
                break;
            }
            bytes += e.size_bytes();
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// The largest index at or below `index` whose term is at most `term`: where the
    /// log can first agree with a peer that reported `(index, term)` (fast backtracking).
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        assert!(
            index <= self.last_index(),
            "hint {index} beyond last index {}",
            self.last_index()
        );
        let mut i = index;
        while i > self.snapshot.meta.index {
            match self.term(i) {
                Some(t) if t <= term => return i,
                _ => i -= 1,
            }
        }
        i
    }

    /// Entries not yet handed out for persistence, marking them handed out.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        // Entries are applied only after they were handed out for persistence, and only
        // applied entries are compacted, so the cursor never falls below the log.
        assert!(
            self.unstable_from >= self.first_index(),
            "unstable cursor {} below the first index {}",
            self.unstable_from,
            self.first_index()
        );
        let from = self.unstable_from;
        let ents = if from <= self.last_index() {
            self.entries[(from - self.first_index()) as usize..].to_vec()
        } else {
            Vec::new()
        };
        self.unstable_from = self.last_index() + 1;
        ents
    }

    pub fn has_unstable(&self) -> bool {
        // unstable_from >= first_index: see take_unstable.
        self.unstable_from <= self.last_index()
    }

    /// Committed entries not yet handed out for application, at most `max`.
    pub fn take_committed(&mut self, max: usize) -> Vec<Entry> {
        let lo = self.applied + 1;
        let hi = (self.committed + 1).min(lo + max as u64);
        let ents = self.slice(lo, hi, max, usize::MAX);
        if let Some(last) = ents.last() {
            self.applied = last.index;
        }
        ents
    }

    pub fn has_committed_to_apply(&self) -> bool {
        self.committed > self.applied
    }

    /// Replaces the whole log with a snapshot received from the leader (Raft §7).
    pub fn restore(&mut self, snapshot: Snapshot) {
        let idx = snapshot.meta.index;
        self.entries.clear();
        self.snapshot = snapshot;
        self.committed = idx;
        self.applied = idx;
        self.unstable_from = idx + 1;
    }

    /// Discards entries up to `index` (which must be applied), keeping `data` as the
    /// snapshot that replaces them; `conf` is the configuration in effect at `index`.
    pub fn compact(
        &mut self,
        index: u64,
        data: Vec<u8>,
        conf: ConfState,
    ) -> Result<Snapshot, RaftError> {
        if index <= self.snapshot.meta.index || index > self.applied {
            return Err(RaftError::InvalidCompaction {
                index,
                snapshot_index: self.snapshot.meta.index,
                applied: self.applied,
            });
        }
        let term = self.term(index).ok_or(RaftError::InvalidCompaction {
            index,
            snapshot_index: self.snapshot.meta.index,
            applied: self.applied,
        })?;
        let drop = (index - self.snapshot.meta.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        };
        Ok(self.snapshot.clone())
    }
}
