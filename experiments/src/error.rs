//! The one error type of this crate's library boundary, and how each kind maps to the
//! `kvlab` exit status (`2` for bad input, `1` for a run whose checks failed).

use std::fmt;
use std::path::PathBuf;

use kvlab_types::NodeId;

/// What the nemesis (or the heal) asked a cluster to do to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Crash it.
    Crash,
    /// Restart it from its durable storage.
    Restart,
    /// Pause it.
    Pause,
    /// Resume it.
    Resume,
    /// Skew its clock.
    SetClockDrift,
    /// Send it an operator's command.
    Admin,
    /// Boot it for the first time (a joiner).
    Start,
    /// Step its clock.
    JumpClock,
    /// Damage or fail its disk.
    DiskFault,
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultAction::Crash => "crash",
            FaultAction::Start => "start",
            FaultAction::Restart => "restart",
            FaultAction::Pause => "pause",
            FaultAction::Resume => "resume",
            FaultAction::SetClockDrift => "skew the clock of",
            FaultAction::Admin => "send an admin command to",
            FaultAction::JumpClock => "step the clock of",
            FaultAction::DiskFault => "inject a disk fault into",
        })
    }
}

/// A fault a backend could not apply to a node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} {node}: {reason}")]
pub struct FaultError {
    /// What was asked.
    pub action: FaultAction,
    /// The node.
    pub node: NodeId,
    /// Why it failed.
    pub reason: String,
}

impl FaultError {
    /// Wraps a backend's message.
    pub fn new(action: FaultAction, node: NodeId, reason: impl Into<String>) -> Self {
        FaultError {
            action,
            node,
            reason: reason.into(),
        }
    }
}

/// Everything that can go wrong in `kvlab run`, `kvlab check` or `kvlab plot` before a
/// verdict is reached. A failed check is not an error: it is a verdict in the run result.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The spec file is not valid TOML, or does not match the spec's shape.
    #[error("{file}:{line}:{column}: {message}{}", field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    SpecParse {
        /// The spec file.
        file: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// The dotted path of the field, when known (`workload.clients`).
        field: Option<String>,
        /// What the parser said.
        message: String,
    },
    /// The spec file could not be read.
    #[error("{file}: cannot read the spec: {source}")]
    SpecRead {
        /// The spec file.
        file: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The spec parsed but a value is out of range or inconsistent.
    #[error("{file}: invalid `{field}`: {reason}")]
    SpecInvalid {
        /// The spec file.
        file: PathBuf,
        /// The dotted path of the field (`workload.mix`).
        field: String,
        /// Why the value is refused.
        reason: String,
    },
    /// A command-line argument is malformed (e.g. `--seeds 5..3`).
    #[error("bad argument `{arg}`: {reason}")]
    BadArgument {
        /// The argument as given.
        arg: String,
        /// Why it is refused.
        reason: String,
    },
    /// A history file could not be read or parsed.
    #[error("{path}: {message}")]
    History {
        /// The history file.
        path: PathBuf,
        /// The checker's error, which names the line.
        message: String,
    },
    /// A history holds no operations: there is nothing to check, and "valid" would say
    /// more than was shown.
    #[error(
        "no operations in {path}: the history is empty, or holds only blank lines, comments, log output or nemesis events"
    )]
    EmptyHistory {
        /// The history file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Encoding a result file failed (a bug: every written type is serializable).
    #[error("{path}: cannot encode: {message}")]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// The encoder's error.
        message: String,
    },
    /// The simulator refused or aborted the run (e.g. its event budget ran out).
    #[error("simulator: {0}")]
    Sim(#[from] kvlab_sim::SimError),
    /// The local backend could not start, drive or stop its nodes.
    #[error("local backend: {0}")]
    Backend(String),
    /// A run reached a named limit and stopped.
    #[error("the run reached its limit of {limit} {what}: {hint}")]
    LimitReached {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// What to change.
        hint: String,
    },
    /// A fault could not be applied (a node would not crash, restart, pause, …).
    #[error("nemesis: {0}")]
    Fault(#[from] FaultError),
    /// The checker could not run on a history the runner wrote (a bug in the runner).
    #[error("checker: {0}")]
    Checker(String),
    /// Drawing plots or the report failed; with `kvlab plot` this means the run
    /// directory's files are missing or malformed (bad input).
    #[error("report: {0}")]
    Report(String),
}

impl ExperimentError {
    /// The `kvlab` exit status for this error: `2` when the user's input (spec, history,
    /// arguments) is at fault, `1` otherwise — a run that could not finish did not pass.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExperimentError::SpecParse { .. }
            | ExperimentError::SpecRead { .. }
            | ExperimentError::SpecInvalid { .. }
            | ExperimentError::BadArgument { .. }
            | ExperimentError::History { .. }
            | ExperimentError::EmptyHistory { .. }
            | ExperimentError::Report(_) => 2,
            ExperimentError::Io { .. }
            | ExperimentError::Encode { .. }
            | ExperimentError::Sim(_)
            | ExperimentError::Backend(_)
            | ExperimentError::Fault(_)
            | ExperimentError::LimitReached { .. }
            | ExperimentError::Checker(_) => 1,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExperimentError::Io {
            path: path.into(),
            source,
        }
    }
}
