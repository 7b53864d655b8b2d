//! The comparison figure of `kvlab bench`: for each operation, throughput and p99
//! latency of two systems against the number of concurrent clients.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ReportError;
use crate::plots::{DrawResult, FONT, Figure, save_figure, styled_mesh};
use crate::swim::{draw_series_labels, line_legend};

/// The two systems' colours (the first system, the second).
const COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
/// Pixels per operation (a column of two panels).
const COLUMN_PX: u32 = 520;
/// The figure's height.
const HEIGHT_PX: u32 = 760;

/// One cell of a bench as drawn: both systems' medians.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchPlotRow {
    /// The operation (`put`, `get`, `cas`).
    pub op: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations per second of the first and the second system.
    pub ops_per_s: [f64; 2],
    /// p99 latency in ms of the first and the second system.
    pub p99_ms: [f64; 2],
}

struct BenchFigure<'a> {
    rows: &'a [BenchPlotRow],
    names: [&'a str; 2],
}

impl BenchFigure<'_> {
    /// The client counts drawn, in order: the x axis is categorical (one slot each).
    fn client_counts(&self) -> Vec<usize> {
        let mut c: Vec<usize> = self.rows.iter().map(|r| r.clients).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// The x slot of a client count.
    fn x_of(&self, clients: usize) -> f64 {
        self.client_counts()
            .iter()
            .position(|&c| c == clients)
            .unwrap_or(0) as f64
    }

    fn ops(&self) -> Vec<&str> {
        let mut ops: Vec<&str> = Vec::new();
        for r in self.rows {
            if !ops.contains(&r.op.as_str()) {
                ops.push(&r.op);
            }
        }
        ops
    }

    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        op: &str,
        metric: fn(&BenchPlotRow) -> [f64; 2],
        y_desc: &str,
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let rows: Vec<&BenchPlotRow> = self.rows.iter().filter(|r| r.op == op).collect();
        let counts = self.client_counts();
        let x_max = counts.len().saturating_sub(1) as f64;
        let y_max = rows
            .iter()
            .flat_map(|r| metric(r))
            .filter(|y| y.is_finite())
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{op}: {y_desc}"), (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.3f64..x_max + 0.3, 0f64..y_max)?;
        styled_mesh(chart.configure_mesh().x_desc("clients").y_desc(y_desc), 0.1)
            .x_labels(counts.len() + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                match counts.get(i as usize) {
                    Some(c) if (x - i).abs() < 0.01 && i >= 0.0 => c.to_string(),
                    _ => String::new(),
                }
            })
            .draw()?;
        for (i, name) in self.names.iter().enumerate() {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .map(|r| (self.x_of(r.clients), metric(r)[i]))
                .collect();
            let c = COLORS[i];
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
                .label(*name)
                .legend(line_legend(c));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
        draw_series_labels(&mut chart, SeriesLabelPosition::UpperLeft, 13)
    }
}

impl Figure for BenchFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let ops = self.ops();
        let panels = root.split_evenly((2, ops.len().max(1)));
        for (i, op) in ops.iter().enumerate() {
            self.panel(&panels[i], op, |r| r.ops_per_s, "ops/s")?;
            self.panel(&panels[ops.len() + i], op, |r| r.p99_ms, "p99 latency (ms)")?;
        }
        Ok(())
    }
}

/// Draws `<dir>/bench.{png,svg}`: per operation, ops/s (top) and p99 (bottom) of the
/// two systems `names` against the client count.
pub fn render_bench_plot(
    rows: &[BenchPlotRow],
    names: [&str; 2],
    dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let figure = BenchFigure { rows, names };
    let columns = figure.ops().len().max(1) as u32;
    save_figure(&figure, dir, "bench", (COLUMN_PX * columns, HEIGHT_PX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_files_for_three_ops() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();
        for op in ["put", "get", "cas"] {
            for clients in [1, 16, 64, 256] {
                rows.push(BenchPlotRow {
                    op: op.into(),
                    clients,
                    ops_per_s: [clients as f64 * 100.0, clients as f64 * 50.0],
                    p99_ms: [1.0, 2.0],
                });
            }
        }
        let files = render_bench_plot(&rows, ["kvlab", "etcd"], dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        for f in files {
            assert!(
                std::fs::metadata(&f).unwrap().len() > 1_000,
                "{} is too small",
                f.display()
            );
        }
    }
}
