//! `kvlab check`: reading a history file in a named or detected format (streamed, with a
//! cap on every line), exporting it as EDN on the way, and a progress line on stderr.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvlab_checker::{
    EdnKeyStyle, HistoryError, HistoryEvent, HistoryFormat, ModelKind, PreparedHistory, Progress,
    ProgressPhase, ProgressSnapshot, ReadOptions,
};

use crate::error::ExperimentError;

/// Reads a history in `format` (`auto`: detected from the first bytes: JSONL, Jepsen
/// EDN, Jepsen logs, porcupine's KV logs) into memory. Errors name the file and the line.
pub fn load_history(
    path: &Path,
    format: HistoryFormat,
) -> Result<Vec<HistoryEvent>, ExperimentError> {
    kvlab_checker::read_history_file(path, format).map_err(|e| history_error(path, e))
}

fn history_error(path: &Path, e: HistoryError) -> ExperimentError {
    ExperimentError::History {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Reads the history at `path` for a check under `model`, streamed (see
/// [`kvlab_checker::input`]): memory holds one line, the open operations and the
/// operations each key's search needs. With `export_edn`, every event is also written
/// there as Jepsen EDN as it is read; if the history turns out malformed, that file is
/// removed. A history without operations is an error ([`ExperimentError::EmptyHistory`]).
pub fn read_for_check(
    path: &Path,
    model: ModelKind,
    options: &ReadOptions<'_>,
    export_edn: Option<&Path>,
) -> Result<PreparedHistory, ExperimentError> {
    let file = std::fs::File::open(path).map_err(|source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = std::io::BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let history = match export_edn {
        None => PreparedHistory::read(reader, model, options).map_err(|e| history_error(path, e)),
        Some(out) => {
            let exported = std::fs::File::create(out).map_err(|source| ExperimentError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            let mut writer = std::io::BufWriter::new(exported);
            let mut write = |event: &HistoryEvent| {
                kvlab_checker::write_edn_event(&mut writer, event, EdnKeyStyle::default())
            };
            let read = PreparedHistory::read_visiting(reader, model, options, &mut write)
                .map_err(|e| match e {
                    HistoryError::Write { .. } => ExperimentError::History {
                        path: out.to_path_buf(),
                        message: e.to_string(),
                    },
                    e => history_error(path, e),
                })
                .and_then(|h| {
                    writer.flush().map_err(|source| ExperimentError::Io {
                        path: out.to_path_buf(),
                        source,
                    })?;
                    Ok(h)
                });
            if read.is_err() {
                // Half a history is no export.
                let _ = std::fs::remove_file(out);
            }
            read
        }
    }?;
    if history.operations() == 0 {
        return Err(ExperimentError::EmptyHistory {
            path: path.to_path_buf(),
        });
    }
    Ok(history)
}

/// The buffer between a history file and the checker's line reader.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Parses a model name (`register`, `cas-register`, `kv`, …) for the command line.
pub fn parse_model(name: &str) -> Result<ModelKind, String> {
    ModelKind::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = ModelKind::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown model {name:?}; expected one of: {}",
            names.join(", ")
        )
    })
}

/// What `kvlab check --model` names: a linearizability model of single keys, or a
/// transaction isolation model (the Elle-style checker, [`kvlab_checker::txn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckModel {
    /// `register`, `cas-register`, `kv`, `multi-register`.
    Linear(ModelKind),
    /// `strict-serializable`, `serializable`, `snapshot-isolation`, `read-committed`
    /// (`txn` is `strict-serializable`).
    Txn(kvlab_checker::txn::TxnModel),
}

/// Parses a model name for `kvlab check --model`.
pub fn parse_check_model(name: &str) -> Result<CheckModel, String> {
    use kvlab_checker::txn::TxnModel;
    if name == "txn" {
        return Ok(CheckModel::Txn(TxnModel::StrictSerializable));
    }
    if let Some(m) = TxnModel::from_name(name) {
        return Ok(CheckModel::Txn(m));
    }
    parse_model(name).map(CheckModel::Linear).map_err(|_| {
        let linear = ModelKind::ALL.iter().map(|m| m.name());
        let txn = TxnModel::ALL.iter().map(|m| m.name());
        let names: Vec<&str> = linear.chain(txn).collect();
        format!(
            "unknown model {name:?}; expected one of: {}",
            names.join(", ")
        )
    })
}

/// Checks the transaction history at `path` (format `auto`: JSONL or EDN, detected).
/// A malformed history, or one of single-key operations, is an error naming the line.
pub fn check_txn_file(
    path: &Path,
    format: HistoryFormat,
    options: &kvlab_checker::txn::TxnCheckOptions,
) -> Result<kvlab_checker::txn::TxnReport, ExperimentError> {
    let history = kvlab_checker::txn::read_txn_history_file(path, format).map_err(|e| {
        ExperimentError::History {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    Ok(kvlab_checker::txn::check_txn(&history, options))
}

/// The error of a single-key model given a list-append transaction history, or `e`.
pub fn hint_txn_history(path: &Path, model: ModelKind, e: ExperimentError) -> ExperimentError {
    if kvlab_checker::txn::looks_like_list_append(path) {
        return ExperimentError::History {
            path: path.to_path_buf(),
            message: format!(
                "a list-append transaction history cannot be checked under `{model}`; use --model strict-serializable, serializable, snapshot-isolation or read-committed ({e})"
            ),
        };
    }
    e
}

/// Parses a history format name (`auto`, `jsonl`, `edn`, …) for the command line.
pub fn parse_format(name: &str) -> Result<HistoryFormat, String> {
    HistoryFormat::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = HistoryFormat::ALL.iter().map(|f| f.name()).collect();
        format!(
            "unknown format {name:?}; expected one of: {}",
            names.join(", ")
        )
    })
}

/// When `kvlab check` draws a progress line on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// When stderr is a terminal (redrawn in place).
    Auto,
    /// Always; a line a second when stderr is not a terminal (for logs).
    Always,
    /// Never.
    Never,
}

/// Parses `auto`, `always` or `never` for `--progress`.
pub fn parse_progress(name: &str) -> Result<ProgressMode, String> {
    match name {
        "auto" => Ok(ProgressMode::Auto),
        "always" => Ok(ProgressMode::Always),
        "never" => Ok(ProgressMode::Never),
        other => Err(format!(
            "unknown progress mode {other:?}; expected one of: auto, always, never"
        )),
    }
}

/// How long a check runs before its progress line appears.
pub const PROGRESS_DELAY: Duration = Duration::from_secs(1);

/// How often a progress line on a terminal is redrawn.
const PROGRESS_REDRAW: Duration = Duration::from_millis(100);

/// How often a progress line goes to a stderr that is not a terminal.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(1);

/// How often the display thread looks whether the check is over.
const PROGRESS_POLL: Duration = Duration::from_millis(20);

/// The progress line of a check: operations read, keys decided out of all, elapsed.
pub fn progress_line(s: &ProgressSnapshot, elapsed: Duration) -> String {
    let ops = thousands(s.operations_read);
    let secs = elapsed.as_secs_f64();
    match s.phase {
        ProgressPhase::Reading => format!("{ops} operations read, reading… {secs:.1} s"),
        ProgressPhase::Checking | ProgressPhase::Done => format!(
            "{ops} operations read, {}/{} keys decided, {secs:.1} s",
            thousands(s.keys_decided),
            thousands(s.keys_total)
        ),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A thread that draws the progress line of a check on stderr once the check has run
/// longer than a delay; stopped (and its line cleared, on a terminal) when dropped.
#[derive(Debug)]
pub struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    /// Starts drawing `progress` after `delay`, if `mode` says so.
    pub fn start(progress: Arc<Progress>, mode: ProgressMode, delay: Duration) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let stop = Arc::new(AtomicBool::new(false));
        let enabled = match mode {
            ProgressMode::Auto => terminal,
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        let thread = enabled.then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || draw(&progress, &stop, delay, terminal))
        });
        ProgressDisplay { stop, thread }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sleeps up to `period`, waking early when `stop` is set; whether it was.
fn wait(stop: &AtomicBool, period: Duration) -> bool {
    let until = Instant::now() + period;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep(PROGRESS_POLL.min(until - now));
    }
}

fn draw(progress: &Progress, stop: &AtomicBool, delay: Duration, terminal: bool) {
    let began = Instant::now();
    // A zero delay draws even a check that is already over (its last line).
    if !delay.is_zero() && wait(stop, delay) {
        return;
    }
    let line = || progress_line(&progress.snapshot(), began.elapsed());
    if terminal {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} kvlab check: {msg}") {
            bar.set_style(style);
        }
        loop {
            bar.set_message(line());
            bar.tick();
            if wait(stop, PROGRESS_REDRAW) {
                break;
            }
        }
        bar.finish_and_clear();
    } else {
        let mut stderr = std::io::stderr();
        loop {
            let _ = writeln!(stderr, "kvlab check: {}", line());
            if wait(stop, PROGRESS_LOG_EVERY) {
                let _ = writeln!(stderr, "kvlab check: {}", line());
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_names_operations_keys_and_time() {
        let mut s = ProgressSnapshot {
            phase: ProgressPhase::Reading,
            events_read: 2_000_000,
            operations_read: 1_000_000,
            keys_total: 0,
            keys_decided: 0,
        };
        assert_eq!(
            progress_line(&s, Duration::from_millis(2_500)),
            "1,000,000 operations read, reading… 2.5 s"
        );
        s.phase = ProgressPhase::Checking;
        s.keys_total = 1_000;
        s.keys_decided = 12;
        assert_eq!(
            progress_line(&s, Duration::from_secs(3)),
            "1,000,000 operations read, 12/1,000 keys decided, 3.0 s"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
