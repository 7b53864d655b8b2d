//! `kvlab check`: reading a history file in a named or detected format.

use std::path::Path;

use kvlab_checker::HistoryEvent;

use crate::error::ExperimentError;

/// History file formats `kvlab check` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryFormat {
    /// Decide from the file name and its first non-blank character.
    Auto,
    /// One JSON history event per line.
    Jsonl,
}

/// Reads a history in `format`. `auto` accepts a `.jsonl`/`.json` file, or any file whose
/// first non-blank character is `{`; other formats (Jepsen EDN, Jepsen logs) are not
/// supported yet and say so.
pub fn load_history(
    path: &Path,
    format: HistoryFormat,
) -> Result<Vec<HistoryEvent>, ExperimentError> {
    let history_err = |message: String| ExperimentError::History {
        path: path.to_path_buf(),
        message,
    };
    if format == HistoryFormat::Auto {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "jsonl" | "json") {
            let text = std::fs::read(path).map_err(|e| history_err(format!("cannot read: {e}")))?;
            let first = text.iter().find(|b| !b.is_ascii_whitespace());
            if first.is_some_and(|&b| b != b'{') {
                return Err(history_err(
                    "cannot detect the format: only JSONL histories (one JSON object per line) are supported; pass --format jsonl to force it".into(),
                ));
            }
        }
    }
    kvlab_checker::read_jsonl_file(path).map_err(|e| history_err(e.to_string()))
}
