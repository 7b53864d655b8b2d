//! Bounded, streamed reading of history files: every format is read line by line from a
//! [`BufRead`], so memory holds one line (at most [`MAX_HISTORY_LINE_BYTES`], or
//! [`ReadOptions::max_line_bytes`]) and what the consumer keeps — never the file.
//!
//! The pipeline, for every format:
//!
//! ```text
//! BufRead ─► LineReader (one line, capped) ─► EventSource (JSONL | EDN | Jepsen log)
//!         ─► pairing (open operations only) ─► EventSink (a Vec of events, or per-key ops)
//! ```
//!
//! * [`LineReader`] refuses a line longer than the cap as soon as it has seen cap + 2
//!   bytes of it ([`HistoryError::LineTooLong`], naming the line), so a 2 GiB line costs
//!   the cap, not 2 GiB. The EDN reader also caps one op spread over several lines
//!   ([`HistoryError::OpTooLong`]), its nesting ([`crate::edn::MAX_EDN_DEPTH`]) and its
//!   values ([`crate::edn::MAX_EDN_VALUES_PER_OP`]).
//! * Format detection ([`HistoryFormat::Auto`]) looks at the first
//!   [`DETECT_BYTES`](crate::formats::DETECT_BYTES) of the input only, then reads on.
//! * Pairing keeps the open operation of each process (and, for Jepsen's rule that a
//!   process that ended in `info` never invokes again, the index of that `info`).
//!
//! Errors come in the order the old whole-file readers gave them: an error of one line
//! (syntax, a malformed event, a line too long) first, wherever it is; then the first
//! structural error (Jepsen's process discipline); then an operation the model cannot
//! check. So after a structural error the rest of the input is still read — parsed, not
//! kept.

use std::io::{BufRead, Read};

use crate::formats::HistoryFormat;
use crate::history::{
    EventType, HistoryError, HistoryEvent, Location, MAX_HISTORY_EVENTS, PairedOp, Pairer,
    parse_line, parse_value,
};
use crate::progress::Progress;

/// The longest line a history may have, in bytes, without its line ending (the default
/// of [`ReadOptions::max_line_bytes`]). One event is a few hundred bytes; a longer line is
/// refused before it is read whole.
pub const MAX_HISTORY_LINE_BYTES: usize = 1 << 20;

/// Events between two updates of the [`Progress`] counters.
const PROGRESS_EVERY_EVENTS: u64 = 1 << 12;

/// How to read a history.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions<'a> {
    /// The format (`Auto`: detected from the first bytes).
    pub format: HistoryFormat,
    /// The longest line accepted, in bytes (see [`MAX_HISTORY_LINE_BYTES`]); under EDN
    /// also the most bytes one op may span over several lines.
    pub max_line_bytes: usize,
    /// Counters to update while reading, for a progress line.
    pub progress: Option<&'a Progress>,
    /// Decide keys while reading and forget what is decided, so that memory holds the
    /// recent and open operations of each key rather than all of them
    /// ([`PreparedHistory::read`](crate::PreparedHistory::read) only; see
    /// [`crate::reads_from`], "Deciding while reading" and "Cutting"). The rest of a key
    /// of which anything was decided this way goes first to the reads-from engine,
    /// whatever engine the check names, and to the named search engines from the value
    /// the forgotten operations left when it cannot decide it. A key where a read has
    /// several possible sources and no cut is found keeps its operations.
    pub decide_while_reading: bool,
}

impl Default for ReadOptions<'_> {
    fn default() -> Self {
        ReadOptions {
            format: HistoryFormat::Auto,
            max_line_bytes: MAX_HISTORY_LINE_BYTES,
            progress: None,
            decide_while_reading: false,
        }
    }
}

impl ReadOptions<'_> {
    /// The defaults with this format.
    pub fn format(format: HistoryFormat) -> Self {
        ReadOptions {
            format,
            ..ReadOptions::default()
        }
    }
}

/// Reads lines one at a time into one buffer, refusing a line longer than the limit
/// before holding more than limit + 3 bytes of it.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    line: usize,
    limit_bytes: usize,
}

impl<R: BufRead> LineReader<R> {
    /// A reader of lines of at most `limit_bytes` bytes (without `\n` or `\r\n`).
    pub fn new(inner: R, limit_bytes: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            line: 0,
            limit_bytes,
        }
    }

    /// Reads the next line, with its `\n` if it has one; `false` at the end of the input
    /// (the current line is then empty).
    pub fn advance(&mut self) -> Result<bool, HistoryError> {
        self.buf.clear();
        let line = self.line + 1;
        // A line may end in "\r\n": two bytes more than its text. One byte more than that
        // is enough to know the line is too long.
        let hold_limit = self.limit_bytes.saturating_add(2);
        let pull_limit = u64::try_from(hold_limit).map_or(u64::MAX, |h| h.saturating_add(1));
        Read::take(&mut self.inner, pull_limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| HistoryError::Read { line, source })?;
        if self.buf.is_empty() {
            return Ok(false);
        }
        self.line = line;
        if self.buf.len() > hold_limit || self.text().len() > self.limit_bytes {
            return Err(self.too_long(line));
        }
        Ok(true)
    }

    fn too_long(&mut self, line: usize) -> HistoryError {
        self.line = line;
        // What was read of the line is of no use; give the memory back.
        self.buf = Vec::new();
        HistoryError::LineTooLong {
            line,
            limit_bytes: self.limit_bytes,
        }
    }

    /// The number of the current line, from 1 (0 before the first).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The current line, with its `\n` if it has one.
    pub fn current(&self) -> &[u8] {
        &self.buf
    }

    /// The current line without its `\n` or `\r\n`.
    pub fn text(&self) -> &[u8] {
        let mut text: &[u8] = &self.buf;
        if let Some(t) = text.strip_suffix(b"\n") {
            text = t;
        }
        text.strip_suffix(b"\r").unwrap_or(text)
    }

    /// The most bytes a line may have.
    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }
}

/// A format's reader: yields events one at a time, each with the line it starts on.
pub(crate) trait EventSource {
    /// The next event, or `None` at the end; an error in one line (syntax, a malformed
    /// event, a line too long) ends the reading.
    fn next_event(&mut self) -> Result<Option<(HistoryEvent, usize)>, HistoryError>;
}

/// kvlab's JSONL: one event per line, blank lines allowed; each line's value is checked
/// against its `f` and `type` as it is read.
pub(crate) struct JsonlSource<R> {
    lines: LineReader<R>,
}

impl<R: BufRead> JsonlSource<R> {
    pub(crate) fn new(reader: R, max_line_bytes: usize) -> Self {
        JsonlSource {
            lines: LineReader::new(reader, max_line_bytes),
        }
    }
}

impl<R: BufRead> EventSource for JsonlSource<R> {
    fn next_event(&mut self) -> Result<Option<(HistoryEvent, usize)>, HistoryError> {
        while self.lines.advance()? {
            let text = self.lines.text();
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line = self.lines.line();
            let event = parse_line(text, line)?;
            parse_value(&event, Location::Line(line))?;
            return Ok(Some((event, line)));
        }
        Ok(None)
    }
}

/// Receives what [`drive`] reads: every event that passed the structural checks, and
/// every operation once it is complete (or, at the end, still open).
pub(crate) trait EventSink {
    /// An event, in history order, with the line it starts on.
    fn event(&mut self, event: HistoryEvent, line: usize) -> Result<(), HistoryError>;
    /// An operation: when its completion is read, or at the end of the history if it
    /// never completed. Not in invoke order.
    fn op(&mut self, op: PairedOp);
}

/// Counts of what [`drive`] read.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DriveCounts {
    /// Events read (nemesis events and blank lines do not count).
    pub events: usize,
}

/// Reads a history from `source` through the structural checks into `sink`, with the
/// error order described in the module docs.
pub(crate) fn drive(
    source: &mut dyn EventSource,
    progress: Option<&Progress>,
    sink: &mut dyn EventSink,
) -> Result<DriveCounts, HistoryError> {
    let mut pairer = Pairer::default();
    let mut structural: Option<HistoryError> = None;
    let mut events = 0usize;
    let mut operations = 0u64;
    while let Some((event, line)) = source.next_event()? {
        if events == MAX_HISTORY_EVENTS {
            return Err(HistoryError::TooManyEvents {
                line,
                limit: MAX_HISTORY_EVENTS,
            });
        }
        if structural.is_none() {
            match pairer.push(&event, events, Location::Line(line)) {
                Ok(done) => {
                    if event.kind == EventType::Invoke {
                        operations += 1;
                    }
                    sink.event(event, line)?;
                    if let Some(op) = done {
                        sink.op(op);
                    }
                }
                Err(e) => structural = Some(e),
            }
        }
        events += 1;
        if let Some(p) = progress
            && events as u64 % PROGRESS_EVERY_EVENTS == 0
        {
            p.set_read(events as u64, operations);
        }
    }
    if let Some(p) = progress {
        p.set_read(events as u64, operations);
    }
    if let Some(e) = structural {
        return Err(e);
    }
    for op in pairer.finish() {
        sink.op(op);
    }
    Ok(DriveCounts { events })
}

/// Collects the events of a history (the in-memory readers).
#[derive(Default)]
pub(crate) struct CollectEvents {
    pub events: Vec<HistoryEvent>,
}

impl EventSink for CollectEvents {
    fn event(&mut self, event: HistoryEvent, _line: usize) -> Result<(), HistoryError> {
        self.events.push(event);
        Ok(())
    }
    fn op(&mut self, _op: PairedOp) {}
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn lines(text: &[u8], limit: usize, chunk: usize) -> Result<Vec<Vec<u8>>, HistoryError> {
        let mut reader = LineReader::new(io::BufReader::with_capacity(chunk, text), limit);
        let mut out = Vec::new();
        while reader.advance()? {
            assert_eq!(reader.line(), out.len() + 1);
            assert!(reader.current().len() <= limit + 3);
            out.push(reader.text().to_vec());
        }
        Ok(out)
    }

    #[test]
    fn lines_are_read_whole_whatever_the_chunks() {
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(
                lines(b"ab\r\n\ncdef\nghi", 4, chunk).expect("fits"),
                vec![
                    b"ab".to_vec(),
                    b"".to_vec(),
                    b"cdef".to_vec(),
                    b"ghi".to_vec()
                ]
            );
        }
    }

    #[test]
    fn a_line_over_the_limit_is_refused_before_it_is_held() {
        for chunk in [1, 3, 64] {
            // At the limit, with either line ending, and at the end without one.
            assert!(lines(b"abcd\nabcd\r\nabcd", 4, chunk).is_ok());
            for text in [&b"ok\nabcde\n"[..], b"ok\nabcde", b"ok\nabcde\r\n"] {
                match lines(text, 4, chunk) {
                    Err(HistoryError::LineTooLong {
                        line: 2,
                        limit_bytes: 4,
                    }) => {}
                    other => panic!("{text:?}: {other:?}"),
                }
            }
        }
        // A huge line costs the limit: the reader stops pulling at limit + 3 bytes.
        let huge = vec![b'x'; 1 << 20];
        let mut input: &[u8] = &huge;
        let mut reader = LineReader::new(io::BufReader::with_capacity(16, &mut input), 100);
        assert!(matches!(
            reader.advance(),
            Err(HistoryError::LineTooLong { line: 1, .. })
        ));
        assert!(reader.current().is_empty());
        drop(reader);
        let pulled = huge.len() - input.len();
        assert!(pulled <= 100 + 3 + 16, "{pulled} bytes pulled");
    }

    #[test]
    fn the_end_of_the_input_is_the_end_of_the_lines() {
        assert_eq!(lines(b"", 4, 8).expect("empty").len(), 0);
        let mut reader = LineReader::new(&b"a\n"[..], 4);
        assert!(reader.advance().expect("a line"));
        assert!(!reader.advance().expect("the end"));
        assert!(!reader.advance().expect("still the end"));
        assert_eq!(reader.line(), 1);
    }
}
