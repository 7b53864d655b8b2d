//! The ring figures of a `system = "kvlab"` run (summary.json's `ring` section):
//!
//! * `plots/ring-replicas.{png,svg}` — replicas per node over time, one line per node,
//!   with the operators in flight below, and each membership change (join, drain, node
//!   killed for good) marked where it happened;
//! * the "Ring" section of the report: operators, data moved, and per membership change
//!   the time to balance against the rate limits' prediction.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::ReportError;
use crate::data::{RunData, json_at, json_f64 as num};
use crate::plots::{DrawResult, FONT, Figure, INK, save_figure, styled_mesh};
use crate::swim::{draw_series_labels, line_legend};

/// The figure's size.
const FIGURE_SIZE_PX: (u32, u32) = (1200, 640);

/// Line colours, one per node (cycled).
const NODE_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Replicas per node and operators in flight over time, membership changes marked.
struct ReplicasFigure {
    title: String,
    t_s: Vec<f64>,
    nodes: Vec<(String, Vec<f64>)>,
    inflight: Vec<f64>,
    changes: Vec<(f64, String)>,
}

impl ReplicasFigure {
    /// `None` when the summary has no ring timeline.
    fn of(summary: &Value, name: &str) -> Option<ReplicasFigure> {
        let timeline = json_at(summary, &["ring", "timeline"])?;
        let series = |v: &Value| -> Vec<f64> {
            v.as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let t_s = series(timeline.get("t_s")?);
        if t_s.is_empty() {
            return None;
        }
        let mut nodes: Vec<(String, Vec<f64>)> = timeline
            .get("replicas")?
            .as_object()?
            .iter()
            .map(|(n, v)| (n.clone(), series(v)))
            .collect();
        // n2 before n10.
        nodes.sort_by_key(|(n, _)| (n.len(), n.clone()));
        let changes = json_at(summary, &["ring", "balance"])
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((num(e, &["at_s"])?, e.get("event")?.as_str()?.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(ReplicasFigure {
            title: format!("{name}: replicas per node"),
            inflight: series(timeline.get("operators_inflight").unwrap_or(&Value::Null)),
            t_s,
            nodes,
            changes,
        })
    }

    fn end_s(&self) -> f64 {
        self.t_s.last().copied().unwrap_or(1.0).max(1.0)
    }

    fn draw_replicas<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let y_max = self
            .nodes
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 20))
            .margin(14)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..self.end_s(), 0f64..y_max)?;
        styled_mesh(chart.configure_mesh().y_desc("replicas hosted"), 0.12).draw()?;
        for (at, what) in &self.changes {
            chart.draw_series(LineSeries::new(
                vec![(*at, 0.0), (*at, y_max)],
                INK.mix(0.5).stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                what.clone(),
                (*at, y_max * 0.97),
                (FONT, 13).into_font().color(&INK),
            )))?;
        }
        for (i, (node, counts)) in self.nodes.iter().enumerate() {
            let c = NODE_COLORS[i % NODE_COLORS.len()];
            let pts = self.t_s.iter().copied().zip(counts.iter().copied());
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
                .label(node.as_str())
                .legend(line_legend(c));
        }
        draw_series_labels(&mut chart, SeriesLabelPosition::LowerRight, 14)
    }

    fn draw_inflight<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let y_max = self.inflight.iter().copied().fold(1.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..self.end_s(), 0f64..y_max)?;
        styled_mesh(
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc("operators in flight"),
            0.12,
        )
        .draw()?;
        let pts = self.t_s.iter().copied().zip(self.inflight.iter().copied());
        chart.draw_series(LineSeries::new(pts, INK.stroke_width(1)))?;
        Ok(())
    }
}

impl Figure for ReplicasFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 * 7 / 10);
        self.draw_replicas(&top)?;
        self.draw_inflight(&bottom)
    }
}

/// Draws the ring figures of a run into `plots_dir` (nothing when the summary has no
/// ring timeline); returns the files written.
pub(crate) fn render_ring_plots(
    run: &RunData,
    plots_dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let s = &run.summary;
    let name = json_at(s, &["label"])
        .or_else(|| json_at(s, &["experiment"]))
        .and_then(Value::as_str)
        .unwrap_or("ring");
    match ReplicasFigure::of(s, name) {
        Some(fig) => save_figure(&fig, plots_dir, "ring-replicas", FIGURE_SIZE_PX),
        None => Ok(Vec::new()),
    }
}

/// The "Ring" section of the run report: empty when the summary has no `ring` section.
pub(crate) fn ring_section(run: &RunData) -> String {
    let s = &run.summary;
    let Some(ring) = json_at(s, &["ring"]).filter(|r| r.is_object()) else {
        return String::new();
    };
    let mut b = String::from("<h2>Ring</h2><table class=\"kv\">");
    let n = |k: &str| num(ring, &[k]).map_or("—".into(), |v| format!("{v}"));
    for (label, key) in [
        ("vnodes", "vnodes"),
        ("replication factor", "replication_factor"),
        ("operators created", "operators_created"),
        ("operators done", "operators_done"),
        ("operators cancelled", "operators_cancelled"),
        ("replicas created by moves", "replicas_moved"),
        ("snapshots sent", "snapshots_sent"),
        ("bytes moved (all snapshots)", "moved_bytes"),
        ("bytes moved into new replicas", "moved_bytes_new_replicas"),
        ("data D (one replica of each vnode)", "data_bytes"),
    ] {
        let _ = write!(b, "<tr><th>{label}</th><td>{}</td></tr>", n(key));
    }
    b.push_str("</table>");
    b.push_str(&balance_table(ring));
    if run.dir.join("plots/ring-replicas.png").exists() {
        b.push_str(
            "<figure><img src=\"plots/ring-replicas.png\" alt=\"replicas per node over time\">\
             <figcaption>Replicas per node over time; membership changes marked.</figcaption></figure>",
        );
    }
    b
}

/// One row per membership change: time to balance against the prediction.
fn balance_table(ring: &Value) -> String {
    let Some(list) = ring.get("balance").and_then(Value::as_array) else {
        return String::new();
    };
    if list.is_empty() {
        return String::new();
    }
    let secs = |e: &Value, k: &str| num(e, &[k]).map_or("—".into(), |v| format!("{v:.2} s"));
    let mut b = String::from(
        "<h3>Time to balance</h3><table><tr><th>change</th><th>at</th><th>first move after</th>\
         <th>moving</th><th>predicted (rate limits + steps)</th><th>settled after</th></tr>",
    );
    for e in list {
        let event = e.get("event").and_then(Value::as_str).unwrap_or("?");
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({} + {})</td><td>{}</td></tr>",
            crate::html::escape(event),
            secs(e, "at_s"),
            secs(e, "first_move_after_s"),
            secs(e, "moving_s"),
            secs(e, "predicted_moving_s"),
            secs(e, "predicted_rate_s"),
            secs(e, "predicted_steps_s"),
            secs(e, "settled_after_s"),
        );
    }
    b.push_str("</table>");
    b
}

/// One row of `kvlab ring moves`: what a strategy's plan moves on a join.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MovesRow {
    /// The placement strategy.
    pub strategy: String,
    /// P.
    pub vnodes: u32,
    /// Nodes before the join.
    pub before: u32,
    /// Nodes after it.
    pub after: u32,
    /// Replicas placed on a node that did not hold them.
    pub moved_replicas: usize,
    /// The optimum, `P·RF·j/(N+j)` replicas (RF·D·j/(N+j) bytes with data spread evenly).
    pub optimum_replicas: f64,
    /// `moved / optimum`.
    pub ratio: f64,
    /// Most replicas on a node over the mean, after the join.
    pub max_over_mean: f64,
    /// The same join measured in a simulated run, if one was given: bytes moved into new
    /// replicas over RF·D·j/(N+j).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_ratio: Option<f64>,
}

/// Grouped bars of `moved / optimum` per strategy and P, one panel per join size; a
/// cross marks the measured ratio where a run was given.
struct MovesFigure<'a> {
    rows: &'a [MovesRow],
}

impl MovesFigure<'_> {
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        (before, after): (u32, u32),
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let rows: Vec<&MovesRow> = self
            .rows
            .iter()
            .filter(|r| (r.before, r.after) == (before, after))
            .collect();
        let y_max = rows
            .iter()
            .map(|r| r.ratio)
            .filter(|r| r.is_finite())
            .fold(1.2, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(
                if rows.iter().any(|r| r.measured_ratio.is_some()) {
                    format!(
                        "join {before} → {after} nodes (bars: the planner; ×: measured in a run)"
                    )
                } else {
                    format!("join {before} → {after} nodes (the planner)")
                },
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..rows.len().max(1) as f64, 0f64..y_max)?;
        styled_mesh(
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_desc("moved / optimum (RF·D·j/(N+j))"),
            0.12,
        )
        .draw()?;
        let strategies: Vec<&str> = {
            let mut s: Vec<&str> = rows.iter().map(|r| r.strategy.as_str()).collect();
            s.dedup();
            s
        };
        for (i, r) in rows.iter().enumerate() {
            let k = strategies
                .iter()
                .position(|s| *s == r.strategy)
                .unwrap_or(0);
            let c = NODE_COLORS[k % NODE_COLORS.len()];
            let x = i as f64;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, r.ratio.min(y_max))],
                c.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{:.2}", r.ratio),
                (x + 0.2, r.ratio.min(y_max) + y_max * 0.01),
                (FONT, 12).into_font().color(&INK),
            )))?;
            if let Some(m) = r.measured_ratio.filter(|m| m.is_finite()) {
                chart.draw_series(std::iter::once(Cross::new(
                    (x + 0.5, m.min(y_max)),
                    7,
                    INK.stroke_width(3),
                )))?;
            }
            chart.draw_series(std::iter::once(Text::new(
                format!("{} P={}", r.strategy, r.vnodes),
                (x + 0.1, -y_max * 0.05),
                (FONT, 11).into_font().color(&INK),
            )))?;
        }
        for (y, label) in [(1.0, "optimum"), (1.1, "1.1 × optimum")] {
            chart.draw_series(LineSeries::new(
                vec![(0.0, y), (rows.len() as f64, y)],
                INK.mix(0.6).stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                label,
                (rows.len() as f64 * 0.85, y + y_max * 0.01),
                (FONT, 12).into_font().color(&INK),
            )))?;
        }
        Ok(())
    }
}

impl Figure for MovesFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let mut joins: Vec<(u32, u32)> = self.rows.iter().map(|r| (r.before, r.after)).collect();
        joins.sort();
        joins.dedup();
        let panels = root.split_evenly((joins.len().max(1), 1));
        for (area, join) in panels.iter().zip(joins) {
            self.panel(area, join)?;
        }
        Ok(())
    }
}

/// Draws `<dir>/moves.{png,svg}`: `moved / optimum` per strategy and P, a panel per join.
pub fn render_moves_plot(rows: &[MovesRow], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let joins = rows
        .iter()
        .map(|r| (r.before, r.after))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .max(1) as u32;
    save_figure(&MovesFigure { rows }, dir, "moves", (1300, 420 * joins))
}
