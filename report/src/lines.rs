//! Line panels: a grid of small charts, each some named lines over a numeric x axis —
//! the figures of a sweep whose numbers the caller already has (the transaction sweeps
//! of `kvlab run`: abort rate and goodput against contention, commit latency against
//! partitions touched).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ReportError;
use crate::plots::{DrawResult, FONT, Figure, fmt_tick, save_figure, styled_mesh};
use crate::swim::{draw_series_labels, line_legend};

/// Line colours, in the order the lines are given.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];
/// Pixels per panel.
const PANEL_PX: (u32, u32) = (560, 400);

/// One line of a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Its legend.
    pub name: String,
    /// `(x, y)` points, drawn in x order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (a model next to measurements).
    pub dashed: bool,
}

/// One chart of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePanel {
    /// Its caption.
    pub title: String,
    /// The x axis.
    pub x_desc: String,
    /// The y axis.
    pub y_desc: String,
    /// Its lines.
    pub lines: Vec<Line>,
}

struct LinePanels<'a> {
    panels: &'a [LinePanel],
    columns: usize,
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &LinePanel) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let points = || p.lines.iter().flat_map(|l| l.points.iter()).copied();
    let finite = |v: &f64| v.is_finite();
    let x_min = points()
        .map(|(x, _)| x)
        .filter(finite)
        .fold(f64::MAX, f64::min);
    let x_max = points()
        .map(|(x, _)| x)
        .filter(finite)
        .fold(f64::MIN, f64::max);
    let (x_min, x_max) = if x_min <= x_max {
        (x_min, x_max)
    } else {
        (0.0, 1.0)
    };
    let pad = ((x_max - x_min) * 0.05).max(0.05);
    let y_max = points()
        .map(|(_, y)| y)
        .filter(finite)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min - pad..x_max + pad, 0f64..y_max)?;
    styled_mesh(
        chart.configure_mesh().x_desc(&p.x_desc).y_desc(&p.y_desc),
        0.1,
    )
    .x_label_formatter(&|x| fmt_tick(*x))
    .y_label_formatter(&|y| fmt_tick(*y))
    .draw()?;
    for (i, line) in p.lines.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut pts: Vec<(f64, f64)> = line
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = c.stroke_width(if line.dashed { 1 } else { 3 });
        chart
            .draw_series(LineSeries::new(pts.clone(), style))?
            .label(line.name.as_str())
            .legend(line_legend(c));
        chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, c.filled())))?;
    }
    draw_series_labels(&mut chart, SeriesLabelPosition::UpperLeft, 12)
}

impl Figure for LinePanels<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let rows = self.panels.len().div_ceil(self.columns).max(1);
        let areas = root.split_evenly((rows, self.columns));
        for (p, area) in self.panels.iter().zip(&areas) {
            draw_panel(area, p)?;
        }
        Ok(())
    }
}

/// Draws `<dir>/<stem>.{png,svg}`: `panels` in a grid `columns` wide, row by row.
pub fn render_line_panels(
    panels: &[LinePanel],
    columns: usize,
    dir: &Path,
    stem: &str,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let figure = LinePanels { panels, columns };
    let size = (PANEL_PX.0 * columns as u32, PANEL_PX.1 * rows as u32);
    save_figure(&figure, dir, stem, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_grid_of_panels_with_a_dashed_model_line() {
        let dir = tempfile::tempdir().unwrap();
        let line = |name: &str, k: f64, dashed| Line {
            name: name.into(),
            points: (0..5)
                .map(|i| (f64::from(i) * 0.3, k * f64::from(i)))
                .collect(),
            dashed,
        };
        let panel = |t: &str| LinePanel {
            title: t.into(),
            x_desc: "zipf θ".into(),
            y_desc: "abort rate".into(),
            lines: vec![line("2 ops", 0.1, false), line("model", 0.2, true)],
        };
        let panels = [panel("a"), panel("b"), panel("c")];
        let files = render_line_panels(&panels, 2, dir.path(), "t").unwrap();
        assert_eq!(files.len(), 2);
        for f in files {
            assert!(
                std::fs::metadata(&f).unwrap().len() > 1_000,
                "{}",
                f.display()
            );
        }
    }
}
