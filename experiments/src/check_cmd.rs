//! `kvlab check`: reading a history file in a named or detected format.

use std::path::Path;

use kvlab_checker::{HistoryEvent, HistoryFormat, ModelKind};

use crate::error::ExperimentError;

/// Reads a history in `format` (`auto`: detected from the first bytes: JSONL, Jepsen
/// EDN, Jepsen logs, porcupine's KV logs). Errors name the file and the line.
pub fn load_history(
    path: &Path,
    format: HistoryFormat,
) -> Result<Vec<HistoryEvent>, ExperimentError> {
    kvlab_checker::read_history_file(path, format).map_err(|e| ExperimentError::History {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

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
