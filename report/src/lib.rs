//! # kvlab-report
//!
//! The run records and what is drawn from them: the typed lines of `events.jsonl`
//! ([`events`], written by the runner, read here), and the plots, HTML report and
//! comparison of run directories.
//!
//! **Must never depend on:** the runner (kvlab-experiments), the simulator, the server,
//! a transport or a node. It reads run directories only — `history.jsonl` through
//! kvlab-checker's reader, `events.jsonl` as [`events::RunEvent`]s, `summary.json` and
//! `meta.json` as loose JSON — so that any run directory (old, copied, hand-made) can be
//! re-rendered, and so that the node binary never carries a plotting library.
//! `experiments/tests/architecture.rs` proves it from `cargo metadata`.
//!
//! A run directory (`results/<experiment>/<run-id>/`) holds `history.jsonl`,
//! `events.jsonl`, `summary.json`, `meta.json`, `spec.toml` and perhaps
//! `linearizability.html`. [`render_run`] reads it and draws what the run measured
//! (`summary.json`'s `measured` list):
//!
//! * with `kv` (a client history): `plots/latency.{png,svg}` — latency of every
//!   operation against its invoke time, coloured by outcome, shaped by op type, fault
//!   periods shaded, the liveness phase marked; `plots/throughput.{png,svg}` —
//!   completions per second per outcome, same shading; `plots/latency-cdf.{png,svg}` —
//!   latency distribution of ok operations per op type; and the checker's verdict, the
//!   operation and latency tables in the report;
//! * with `swim`: `plots/swim-detection-cdf.{png,svg}` and `plots/swim-timeline.{png,svg}`
//!   and the SWIM failure-detection section;
//! * with `raft-invariants`: whether the Raft safety invariants held;
//! * with a `ring` section (the composed node): `plots/ring-replicas.{png,svg}` and the
//!   ring section (operators, data moved, time to balance per membership change);
//! * always `report.html` — one self-contained page: verdict banner, facts, the
//!   reproduce command, the sections above, the fault timeline, node events;
//! * always `timeline.html`, linked from the report — Jepsen's timeline: one lane per
//!   client process, each operation a bar from invoke to completion coloured by outcome,
//!   fault periods and node events (leaders, node starts, membership, replicas) on the
//!   same zoomable time axis, the failing key's operations highlighted when the history
//!   is not linearizable. It draws on a canvas only the visible window, so a
//!   30,000-operation history stays usable; its data is embedded as JSON (the layout is
//!   described in the `timeline` module's source).
//!
//! A run directory without a `measured` list (written before it existed) counts as a
//! SWIM run when its summary has a `swim` section, and as a KV run otherwise.
//!
//! [`render_comparison`] puts several runs side by side: `comparison.{png,svg}` and the
//! KV columns of `compare.html` for runs that measured `kv`, the SWIM figures for runs
//! that measured `swim`.
//!
//! Only `history.jsonl` is required; any key missing from `summary.json` or `meta.json`
//! shows as a blank (or is computed from the history and marked so). Bad input is a
//! [`ReportError`] naming the file and line, never a panic.
//!
//! ```
//! use kvlab_report::events::{Phase, RunEvent};
//! use kvlab_types::Time;
//!
//! let dir = tempfile::tempdir()?;
//! // One write, invoked at 1 ms and acknowledged at 3 ms.
//! std::fs::write(
//!     dir.path().join("history.jsonl"),
//!     "{\"index\":0,\"time_ns\":1000000,\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"k\",\"value\":1}\n\
//!      {\"index\":1,\"time_ns\":3000000,\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"key\":\"k\",\"value\":1}\n",
//! )?;
//! let phase = RunEvent::phase(Time(0), Phase::Safety);
//! std::fs::write(dir.path().join("events.jsonl"), serde_json::to_string(&phase)? + "\n")?;
//! std::fs::write(
//!     dir.path().join("summary.json"),
//!     r#"{"measured": ["kv"], "checker": {"verdict": "valid"}}"#,
//! )?;
//!
//! let rendered = kvlab_report::render_run(dir.path())?;
//! assert!(rendered.plots.contains(&dir.path().join("plots/latency.png")));
//! assert!(std::fs::read_to_string(&rendered.report_html)?.contains(">VALID<"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bench;
mod data;
pub mod events;
mod html;
mod plots;
mod ring;
mod stats;

pub use bench::{BenchPlotRow, render_bench_plot};
mod lines;
pub use lines::{Line, LinePanel, render_line_panels};
pub use ring::{MovesRow, render_moves_plot};
mod swim;
mod timeline;

use std::path::{Component, Path, PathBuf};

pub use plots::register_fonts;
pub use stats::MAX_LATENCY_POINTS_DRAWN;

/// Why a report could not be rendered. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file the report needs is not there (only `history.jsonl` is required).
    #[error("{path}: missing (a run directory needs history.jsonl)", path = .path.display())]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `history.jsonl` is malformed; the checker's error names the line and what is wrong.
    #[error("{path}: {source}", path = .path.display())]
    History {
        /// The history file.
        path: PathBuf,
        /// The checker's reader error.
        source: kvlab_checker::history::HistoryError,
    },
    /// A line of `events.jsonl` is malformed.
    #[error("{path}:{line}: {reason}", path = .path.display())]
    BadLine {
        /// The JSONL file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON file (`summary.json`, `meta.json`) is not valid JSON.
    #[error("{path}: not valid JSON: {source}", path = .path.display())]
    BadJson {
        /// The JSON file.
        path: PathBuf,
        /// The parser's error, which names line and column.
        source: serde_json::Error,
    },
    /// The embedded font could not be registered with plotters.
    #[error("font registration failed: {0}")]
    Font(String),
    /// plotters failed to draw or save a figure.
    #[error("{path}: drawing failed: {message}", path = .path.display())]
    Plot {
        /// The figure file being written.
        path: PathBuf,
        /// plotters' error.
        message: String,
    },
    /// `render_comparison` was given no run directory.
    #[error("no run directories to compare")]
    NoRuns,
}

/// What [`render_run`] wrote, and what a caller may want to print about it.
#[derive(Debug, Clone)]
pub struct RenderedRun {
    /// `<run_dir>/report.html`.
    pub report_html: PathBuf,
    /// `<run_dir>/timeline.html`.
    pub timeline_html: PathBuf,
    /// Every figure file written under `<run_dir>/plots/` (PNG and SVG of each figure).
    pub plots: Vec<PathBuf>,
    /// Operations in the history (an invoke with or without completion counts once).
    pub ops_total: usize,
    /// Operations the latency plot drew (at most [`MAX_LATENCY_POINTS_DRAWN`]; 0 when
    /// the run measured no `kv` and no latency plot was drawn).
    pub latency_points_drawn: usize,
    /// Whether the latency plot left operations out because the history was too long.
    pub downsampled: bool,
    /// Things about the run directory a reader should know (missing optional files,
    /// unpaired fault events); also listed in the report.
    pub warnings: Vec<String>,
}

/// Draws the plots of a run directory into `<run_dir>/plots/` and writes
/// `<run_dir>/report.html`: the KV figures when the run measured `kv`, the SWIM figures
/// when it measured `swim`. Safe to call from several threads at once on different run
/// directories.
pub fn render_run(run_dir: &Path) -> Result<RenderedRun, ReportError> {
    let run = data::RunData::load(run_dir)?;
    let plots_dir = run_dir.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(|source| ReportError::Io {
        path: plots_dir.clone(),
        source,
    })?;
    let kv_plots = if run.measured.kv {
        Some(plots::render_run_plots(&run, &plots_dir)?)
    } else {
        None
    };
    let mut files = kv_plots.as_ref().map_or_else(Vec::new, |p| p.files.clone());
    if run.measured.swim {
        files.extend(swim::render_swim_plots(&run, &plots_dir)?);
    }
    files.extend(ring::render_ring_plots(&run, &plots_dir)?);
    let report_html = run_dir.join("report.html");
    write_file(&report_html, &html::run_report(&run, kv_plots.as_ref()))?;
    let timeline_html = run_dir.join("timeline.html");
    write_file(&timeline_html, &timeline::timeline_page(&run))?;
    Ok(RenderedRun {
        report_html,
        timeline_html,
        ops_total: run.ops.len(),
        latency_points_drawn: kv_plots.as_ref().map_or(0, |p| p.latency_points_drawn),
        downsampled: kv_plots.as_ref().is_some_and(|p| p.downsampled),
        plots: files,
        warnings: run.warnings,
    })
}

/// Compares several run directories; returns the path of `<out_dir>/compare.html`, a
/// table linking each run's report. Runs that measured `kv` get their numbers in the
/// table and a group in `<out_dir>/comparison.{png,svg}` (grouped bars of ok throughput
/// and of latency p50/p99 per run, labelled by system, transport, backend and seed);
/// runs that measured `swim` are compared in `swim-comparison.{png,svg}` (and
/// `swim-scale.{png,svg}` when they differ in size). Numbers come from each run's
/// summary.json; ones it lacks are computed from that run's history.
pub fn render_comparison(run_dirs: &[PathBuf], out_dir: &Path) -> Result<PathBuf, ReportError> {
    if run_dirs.is_empty() {
        return Err(ReportError::NoRuns);
    }
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut rows = Vec::with_capacity(run_dirs.len());
    // (number in the comparison, summary) of the runs that measured SWIM.
    let mut swim_runs = Vec::new();
    for (i, dir) in run_dirs.iter().enumerate() {
        let run = data::RunData::load(dir)?;
        let href = relative_href(out_dir, &dir.join("report.html"));
        rows.push(html::ComparisonRow::of(&run, i + 1, href));
        if run.measured.swim {
            swim_runs.push((i + 1, run.summary));
        }
    }
    let kv_bars: Vec<plots::ComparedRun> = rows
        .iter()
        .filter(|r| r.kv)
        .map(|r| r.bars.clone())
        .collect();
    if !kv_bars.is_empty() {
        plots::render_comparison_plot(&kv_bars, out_dir)?;
    }
    let swim_figures = if swim_runs.is_empty() {
        String::new()
    } else {
        let summaries: Vec<(usize, &serde_json::Value)> =
            swim_runs.iter().map(|(i, s)| (*i, s)).collect();
        swim::render_swim_comparison(&summaries, out_dir)?.0
    };
    let page = out_dir.join("compare.html");
    write_file(
        &page,
        &html::comparison_page(&rows, !kv_bars.is_empty(), &swim_figures),
    )?;
    Ok(page)
}

/// Writes a whole file, naming it on failure.
fn write_file(path: &Path, contents: &str) -> Result<(), ReportError> {
    std::fs::write(path, contents).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A link from a page in `from_dir` to `target`: relative when both resolve on disk and
/// share a root, else the target's absolute path.
fn relative_href(from_dir: &Path, target: &Path) -> String {
    let absolute = |p: &Path| -> Option<PathBuf> {
        let base = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(p)
        };
        // Canonicalize the directory (the target file may not exist yet).
        let (dir, file) = match (base.parent(), base.file_name()) {
            (Some(dir), Some(file)) if !base.is_dir() => (dir.to_path_buf(), Some(file.to_owned())),
            _ => (base.clone(), None),
        };
        let dir = dir.canonicalize().ok()?;
        Some(match file {
            Some(f) => dir.join(f),
            None => dir,
        })
    };
    let (Some(from), Some(to)) = (absolute(from_dir), absolute(target)) else {
        return target.display().to_string();
    };
    let from: Vec<Component<'_>> = from.components().collect();
    let to_parts: Vec<Component<'_>> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        return to.display().to_string();
    }
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    parts.extend(
        to_parts[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[cfg(test)]
mod tests;
