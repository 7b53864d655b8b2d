//! The run's clock on real nodes, and the nodes' events read live from their
//! `events.jsonl` files.
//!
//! Each node appends one JSON line per protocol event to `events.jsonl` in its data
//! directory, timed by its own clock (nanoseconds since that incarnation started). The
//! runner notes, at every (re)start, where the file ends and what the run's clock reads
//! ([`EventSegment`]); [`EventTail::poll`] then reads the new complete lines and times
//! them on the run's clock. A line torn by a `SIGKILL` is skipped (and counted) once the
//! next incarnation's segment begins after it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kvlab_types::{NodeId, Time};

use crate::cluster::ClusterOutput;

/// Most bytes read from one node's events file per poll: a node that logs faster than
/// this is read over several polls.
pub const MAX_EVENT_BYTES_PER_POLL: usize = 4 << 20;

/// The run's clock: nanoseconds of wall time since the run started, monotonic.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        RunClock {
            start: Instant::now(),
        }
    }

    /// Time since the start.
    pub fn now(&self) -> Time {
        Time(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Where a node's protocol events start in its `events.jsonl`: the file's length when
/// the node (re)started and the run time it started at. A node's own event times count
/// from its start, so each incarnation is shifted by its start time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventSegment {
    pub(crate) offset_bytes: u64,
    pub(crate) started_ns: u64,
}

impl EventSegment {
    /// The segment a node starting now, writing `events_file`, will append.
    pub(crate) fn begin(events_file: &Path, clock: &RunClock) -> Self {
        EventSegment {
            offset_bytes: std::fs::metadata(events_file).map(|m| m.len()).unwrap_or(0),
            started_ns: clock.now().as_nanos(),
        }
    }
}

/// A node's events file being read as it grows.
#[derive(Debug)]
pub(crate) struct EventTail {
    node: NodeId,
    path: PathBuf,
    segments: Vec<EventSegment>,
    /// Bytes of the file consumed so far.
    offset: u64,
    /// Lines that were not valid events (torn by a kill, or garbage).
    pub(crate) malformed: u64,
}

impl EventTail {
    /// A tail of `node`'s `path`, whose first incarnation starts now.
    #[cfg(test)]
    pub(crate) fn new(node: NodeId, path: PathBuf, clock: &RunClock) -> Self {
        let first = EventSegment::begin(&path, clock);
        Self::from_segment(node, path, first)
    }

    /// A tail of a file the cluster's first incarnation started writing at
    /// `started_ns` on the run's clock, read from its first byte: the events a node
    /// writes while it boots, before the runner gets to look, are kept.
    pub(crate) fn from_boot(node: NodeId, path: PathBuf, started_ns: u64) -> Self {
        let first = EventSegment {
            offset_bytes: 0,
            started_ns,
        };
        Self::from_segment(node, path, first)
    }

    fn from_segment(node: NodeId, path: PathBuf, first: EventSegment) -> Self {
        EventTail {
            node,
            path,
            offset: first.offset_bytes,
            segments: vec![first],
            malformed: 0,
        }
    }

    /// The node (re)starts now: its next events count from now.
    pub(crate) fn restarted(&mut self, clock: &RunClock) {
        self.segments.push(EventSegment::begin(&self.path, clock));
    }

    /// The segment the byte at `offset` belongs to.
    fn segment_at(&self, offset: u64) -> EventSegment {
        self.segments
            .iter()
            .rev()
            .find(|s| s.offset_bytes <= offset)
            .copied()
            .unwrap_or(self.segments[0])
    }

    /// Reads every complete line appended since the last poll as events on the run's
    /// clock. A partial last line waits for the next poll, unless a later incarnation
    /// began after it (then it was torn and is skipped).
    pub(crate) fn poll(&mut self, out: &mut Vec<ClusterOutput>) {
        let bytes = match self.read_new() {
            Some(b) if !b.is_empty() => b,
            _ => return,
        };
        let mut pos = 0usize;
        while pos < bytes.len() {
            let line_start = self.offset + pos as u64;
            let end = bytes[pos..].iter().position(|b| *b == b'\n');
            let line_end = end.map_or(self.offset + bytes.len() as u64, |len| {
                line_start + len as u64
            });
            // A later incarnation began inside this line: the line was torn by a kill.
            if let Some(next) = self
                .segments
                .iter()
                .map(|s| s.offset_bytes)
                .find(|&o| o > line_start && o <= line_end)
            {
                self.malformed += 1;
                pos = (next - self.offset) as usize;
                continue;
            }
            let Some(len) = end else {
                break; // a partial line: the rest comes with a later poll
            };
            let line = &bytes[pos..pos + len];
            pos += len + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<kvlab_server::EventRecord>(line) {
                Ok(r) => out.push(ClusterOutput::Event {
                    at: Time(
                        self.segment_at(line_start)
                            .started_ns
                            .saturating_add(r.time_ns),
                    ),
                    node: self.node,
                    event: r.event,
                }),
                Err(_) => self.malformed += 1,
            }
        }
        self.offset += pos as u64;
    }

    /// The bytes after `offset`, at most [`MAX_EVENT_BYTES_PER_POLL`].
    fn read_new(&self) -> Option<Vec<u8>> {
        let mut f = std::fs::File::open(&self.path).ok()?;
        f.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut buf = Vec::new();
        f.take(MAX_EVENT_BYTES_PER_POLL as u64)
            .read_to_end(&mut buf)
            .ok()?;
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_types::{GroupId, NodeEvent};
    use std::io::Write;

    fn line(time_ns: u64, term: u64) -> String {
        let r = kvlab_server::EventRecord {
            time_ns,
            node: NodeId(1),
            event: NodeEvent::LeaderElected {
                group: GroupId(0),
                term,
            },
        };
        serde_json::to_string(&r).unwrap() + "\n"
    }

    fn append(path: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn terms(out: &[ClusterOutput]) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                ClusterOutput::Event {
                    event: NodeEvent::LeaderElected { term, .. },
                    ..
                } => Some(*term),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lines_are_read_as_they_come_and_a_torn_line_is_skipped_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let clock = RunClock::start();
        let mut tail = EventTail::new(NodeId(1), path.clone(), &clock);
        let mut out = Vec::new();
        tail.poll(&mut out);
        assert!(out.is_empty(), "no file yet");
        append(&path, &line(5, 1));
        let half = line(6, 2);
        append(&path, &half[..half.len() / 2]);
        tail.poll(&mut out);
        assert_eq!(terms(&out), [1], "the partial line waits");
        // Killed mid-line; the next incarnation appends after the torn bytes.
        tail.restarted(&clock);
        append(&path, &line(1, 3));
        tail.poll(&mut out);
        assert_eq!(terms(&out), [1, 3]);
        assert_eq!(tail.malformed, 1);
    }
}
