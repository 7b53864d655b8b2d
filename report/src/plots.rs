//! The figures: latency over time, throughput over time, latency CDFs, and the comparison
//! of several runs. Each is drawn twice, to PNG and to SVG, by the same generic code.
//!
//! There are no system fonts where kvlab runs, so the DejaVu fonts embedded in the `dejavu`
//! crate are registered with plotters (once per process) before anything is drawn.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kvlab_checker::history::OpFn;
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ReportError;
use crate::data::{LIVENESS_PHASE_NAME, Outcome, RunData};
use crate::html::fmt_count;
use crate::stats::{self, ALL_FNS, MAX_LATENCY_POINTS_DRAWN, Throughput};

/// The font family every text in the figures uses (registered from `dejavu`).
pub(crate) const FONT: &str = "sans-serif";

/// When the slowest drawn latency is this many times the fastest, the latency axis is
/// logarithmic.
const LOG_SCALE_RANGE_RATIO: f64 = 50.0;

/// Latencies below this are drawn at it on a logarithmic axis (which cannot show zero), ms.
const MIN_LOG_LATENCY_MS: f64 = 1e-3;

/// Width of the legend panel right of the time plots, px.
const LEGEND_WIDTH_PX: u32 = 230;

/// Size of the latency and throughput figures, px.
const TIME_FIGURE_SIZE_PX: (u32, u32) = (1280, 620);

/// Size of the CDF figure, px.
const CDF_FIGURE_SIZE_PX: (u32, u32) = (1280, 560);

/// Height of one run's label block under a comparison bar group, px.
const COMPARISON_LABEL_AREA_PX: u32 = 74;

/// The most fault labels written onto the shaded periods of one plot; the legend names
/// every fault kind in any case.
const MAX_FAULT_LABELS: usize = 24;

/// Colour of `ok` operations.
pub(crate) const OK_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Colour of `fail` operations.
pub(crate) const FAIL_COLOR: RGBColor = RGBColor(214, 39, 40);
/// Colour of `info` operations.
pub(crate) const INFO_COLOR: RGBColor = RGBColor(255, 127, 14);
/// Colour of the liveness phase.
pub(crate) const LIVENESS_COLOR: RGBColor = RGBColor(44, 160, 44);
/// Colour of axis text and other phase marks.
pub(crate) const INK: RGBColor = RGBColor(60, 60, 60);
/// Colours of fault kinds, assigned in alphabetical order of the kind's name.
const FAULT_PALETTE: [RGBColor; 6] = [
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(227, 119, 194),
];
/// Colours of op types in the CDF ("all" is drawn in `INK`).
const FN_PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// What drawing code returns; the caller attaches the file name.
pub(crate) type DrawResult = Result<(), Box<dyn Error>>;

/// The axis style every figure shares: its fonts, no light grid lines, and bold grid
/// lines of opacity `grid_alpha`. The caller adds descriptions and formatters, then draws.
pub(crate) fn styled_mesh<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
    grid_alpha: f64,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(grid_alpha))
}

/// The result of registering the embedded fonts, computed once per process.
static FONTS_REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the embedded DejaVu fonts with plotters under the families `sans-serif`,
/// `serif` and `monospace`. Idempotent and thread-safe: the first caller registers, later
/// callers (on any thread) get the same answer. Every render function calls it; call it
/// yourself only when drawing with plotters outside this module.
pub fn register_fonts() -> Result<(), ReportError> {
    FONTS_REGISTERED
        .get_or_init(|| {
            let faces: [(&str, FontStyle, &'static [u8]); 6] = [
                ("sans-serif", FontStyle::Normal, dejavu::sans::regular()),
                ("sans-serif", FontStyle::Bold, dejavu::sans::bold()),
                ("serif", FontStyle::Normal, dejavu::sans::regular()),
                ("serif", FontStyle::Bold, dejavu::sans::bold()),
                ("monospace", FontStyle::Normal, dejavu::sans_mono::regular()),
                ("monospace", FontStyle::Bold, dejavu::sans_mono::bold()),
            ];
            for (family, style, bytes) in faces {
                plotters::style::register_font(family, style, bytes).map_err(|_| {
                    format!("the embedded DejaVu font for {family} is not a valid font")
                })?;
            }
            Ok(())
        })
        .clone()
        .map_err(ReportError::Font)
}

/// A figure that can be drawn on any plotters backend.
pub(crate) trait Figure {
    /// Draws the whole figure on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Draws `figure` to `<dir>/<stem>.png` and `<dir>/<stem>.svg`; returns both paths.
pub(crate) fn save_figure<F: Figure>(
    figure: &F,
    dir: &Path,
    stem: &str,
    size_px: (u32, u32),
) -> Result<Vec<PathBuf>, ReportError> {
    register_fonts()?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let plot_error = |path: &Path, e: &dyn std::fmt::Display| ReportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    {
        let root = BitMapBackend::new(&png, size_px).into_drawing_area();
        figure.draw(&root).map_err(|e| plot_error(&png, &e))?;
        root.present().map_err(|e| plot_error(&png, &e))?;
    }
    {
        let root = SVGBackend::new(&svg, size_px).into_drawing_area();
        figure.draw(&root).map_err(|e| plot_error(&svg, &e))?;
        root.present().map_err(|e| plot_error(&svg, &e))?;
    }
    Ok(vec![png, svg])
}

/// What `render_run_plots` produced.
#[derive(Debug)]
pub(crate) struct RunPlots {
    /// Every file written, PNG and SVG of each figure.
    pub(crate) files: Vec<PathBuf>,
    /// How many operations the latency plot drew.
    pub(crate) latency_points_drawn: usize,
    /// Whether the latency plot left operations out (see `MAX_LATENCY_POINTS_DRAWN`).
    pub(crate) downsampled: bool,
    /// Whether the latency axis is logarithmic.
    pub(crate) latency_log_scale: bool,
    /// The width of a throughput bucket, s.
    pub(crate) throughput_bucket_s: f64,
}

/// Draws latency, throughput and latency-CDF figures of a run into `plots_dir`.
pub(crate) fn render_run_plots(run: &RunData, plots_dir: &Path) -> Result<RunPlots, ReportError> {
    let title = run_title(run);
    let overlay = Overlay::of(run);
    let latency = LatencyFigure::of(run, &title, &overlay);
    let throughput = ThroughputFigure {
        title: &title,
        overlay: &overlay,
        throughput: stats::throughput(&run.ops, run.run_end_ns),
        run_end_s: run.run_end_ns as f64 / 1e9,
    };
    let cdf = CdfFigure::of(run, &title);
    let mut files = save_figure(&latency, plots_dir, "latency", TIME_FIGURE_SIZE_PX)?;
    files.extend(save_figure(
        &throughput,
        plots_dir,
        "throughput",
        TIME_FIGURE_SIZE_PX,
    )?);
    files.extend(save_figure(
        &cdf,
        plots_dir,
        "latency-cdf",
        CDF_FIGURE_SIZE_PX,
    )?);
    Ok(RunPlots {
        files,
        latency_points_drawn: latency.points.len(),
        downsampled: latency.points.len() < run.ops.len(),
        latency_log_scale: latency.log_scale,
        throughput_bucket_s: throughput.throughput.bucket_s,
    })
}

/// "experiment · system · seed N" for figure captions.
fn run_title(run: &RunData) -> String {
    let mut parts = vec![crate::html::experiment_name(run)];
    if let Some(system) = crate::data::json_text(&run.summary, &["system"]) {
        parts.push(system);
    }
    if let Some(seed) = crate::html::seed_of(run) {
        parts.push(format!("seed {seed}"));
    }
    parts.join(" · ")
}

/// The shaded periods and marks drawn behind both time plots.
struct Overlay {
    /// Fault periods: start s, end s, name, colour.
    faults: Vec<(f64, f64, String, RGBColor)>,
    /// Fault kinds with their colours, for the legend.
    fault_kinds: Vec<(String, RGBColor)>,
    /// The liveness phase, start s and end s.
    liveness: Option<(f64, f64)>,
    /// Starts of other phases after time zero: s, name.
    phase_marks: Vec<(f64, String)>,
}

impl Overlay {
    /// Collects the overlay of a run.
    fn of(run: &RunData) -> Overlay {
        let mut kinds: Vec<String> = run.faults.iter().map(|f| f.fault.clone()).collect();
        kinds.sort();
        kinds.dedup();
        let fault_kinds: Vec<(String, RGBColor)> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, FAULT_PALETTE[i % FAULT_PALETTE.len()]))
            .collect();
        let color_of = |name: &str| {
            fault_kinds
                .iter()
                .find(|(k, _)| k == name)
                .map_or(FAULT_PALETTE[0], |(_, c)| *c)
        };
        let faults = run
            .faults
            .iter()
            .map(|f| {
                let end_ns = f.end_ns.unwrap_or(run.run_end_ns).max(f.start_ns);
                (
                    f.start_ns as f64 / 1e9,
                    end_ns as f64 / 1e9,
                    f.fault.clone(),
                    color_of(&f.fault),
                )
            })
            .collect();
        let liveness = run
            .phases
            .iter()
            .find(|p| p.name == LIVENESS_PHASE_NAME)
            .map(|p| (p.start_ns as f64 / 1e9, p.end_ns as f64 / 1e9));
        // A phase that starts at time zero or is a sliver at the end of the run (a final
        // drain) has nothing worth marking.
        let sliver_ns = run.run_end_ns / 100;
        let phase_marks = run
            .phases
            .iter()
            .filter(|p| {
                p.name != LIVENESS_PHASE_NAME
                    && p.start_ns > 0
                    && p.end_ns.saturating_sub(p.start_ns) >= sliver_ns
            })
            .map(|p| (p.start_ns as f64 / 1e9, p.name.clone()))
            .collect();
        Overlay {
            faults,
            fault_kinds,
            liveness,
            phase_marks,
        }
    }

    /// Legend entries for the overlay.
    fn legend(&self) -> Vec<LegendEntry> {
        let mut entries: Vec<LegendEntry> = self
            .fault_kinds
            .iter()
            .map(|(k, c)| LegendEntry::Band(*c, format!("fault: {k}")))
            .collect();
        if self.liveness.is_some() {
            entries.push(LegendEntry::Band(
                LIVENESS_COLOR,
                "liveness phase".to_string(),
            ));
        }
        if !self.phase_marks.is_empty() {
            entries.push(LegendEntry::Line(INK, "phase start".to_string()));
        }
        entries
    }

    /// Shades fault periods and the liveness phase and marks phase starts, between the
    /// values `y_lo` and `y_hi` of the chart's y axis.
    fn draw<DB, Y>(
        &self,
        chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
        y_lo: f64,
        y_hi: f64,
    ) -> DrawResult
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        Y: Ranged<ValueType = f64>,
    {
        let area = chart.plotting_area();
        if let Some((start, end)) = self.liveness {
            area.draw(&Rectangle::new(
                [(start, y_lo), (end, y_hi)],
                LIVENESS_COLOR.mix(0.10).filled(),
            ))?;
            area.draw(&PathElement::new(
                vec![(start, y_lo), (start, y_hi)],
                LIVENESS_COLOR.stroke_width(2),
            ))?;
            area.draw(
                &(EmptyElement::at((start, y_lo))
                    + Text::new(
                        "liveness",
                        (4, -16),
                        (FONT, 13).into_font().color(&LIVENESS_COLOR.mix(0.9)),
                    )),
            )?;
        }
        // Lanes keep the labels of overlapping faults from sitting on each other.
        let mut lane_ends: Vec<f64> = Vec::new();
        let mut labels_written = 0usize;
        let label_style = (FONT, 12).into_font();
        for (start, end, name, color) in &self.faults {
            area.draw(&Rectangle::new(
                [(*start, y_lo), (*end, y_hi)],
                color.mix(0.16).filled(),
            ))?;
            area.draw(&PathElement::new(
                vec![(*start, y_lo), (*start, y_hi)],
                color.mix(0.55).stroke_width(1),
            ))?;
            let lane = match lane_ends.iter().position(|e| *e <= *start) {
                Some(lane) => lane,
                None => {
                    lane_ends.push(f64::NEG_INFINITY);
                    lane_ends.len() - 1
                }
            };
            let label_end_s = *start + (end - start).max(0.0);
            lane_ends[lane] = label_end_s;
            let width_px =
                chart.backend_coord(&(*end, y_hi)).0 - chart.backend_coord(&(*start, y_hi)).0;
            let text_px = label_style
                .box_size(name)
                .map_or(i32::MAX, |(w, _)| w as i32);
            if labels_written < MAX_FAULT_LABELS && width_px >= text_px + 6 {
                area.draw(
                    &(EmptyElement::at((*start, y_hi))
                        + Text::new(
                            name.clone(),
                            (3, 3 + 14 * (lane as i32 % 3)),
                            label_style.color(&color.mix(1.0)),
                        )),
                )?;
                labels_written += 1;
            }
        }
        for (at, name) in &self.phase_marks {
            area.draw(&PathElement::new(
                vec![(*at, y_lo), (*at, y_hi)],
                INK.mix(0.6).stroke_width(1),
            ))?;
            area.draw(
                &(EmptyElement::at((*at, y_lo))
                    + Text::new(name.clone(), (4, -16), (FONT, 12).into_font().color(&INK))),
            )?;
        }
        Ok(())
    }
}

/// One line of a legend panel.
enum LegendEntry {
    /// A filled dot in a colour (an outcome).
    Dot(RGBColor, String),
    /// The marker shape of an op type, in ink.
    Shape(OpFn, String),
    /// A shaded band (a fault kind or a phase).
    Band(RGBColor, String),
    /// A line (a series).
    Line(RGBColor, String),
    /// A heading.
    Heading(String),
    /// A note in small text.
    Note(String),
}

/// Draws a legend panel: entries from the top, then notes.
fn draw_legend<DB>(area: &DrawingArea<DB, Shift>, entries: &[LegendEntry]) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let text = (FONT, 14).into_font().color(&BLACK);
    let heading = (FONT, 14).into_font().style(FontStyle::Bold).color(&BLACK);
    let note = (FONT, 12).into_font().color(&INK);
    let mut y = 44;
    let x = 10;
    for entry in entries {
        match entry {
            LegendEntry::Heading(label) => {
                y += 6;
                area.draw(&Text::new(label.clone(), (x, y - 7), heading.clone()))?;
                y += 22;
                continue;
            }
            LegendEntry::Note(label) => {
                for line in wrap(label, 32) {
                    area.draw(&Text::new(line, (x, y - 7), note.clone()))?;
                    y += 16;
                }
                continue;
            }
            LegendEntry::Dot(color, _) => {
                area.draw(&Circle::new((x + 10, y), 5, color.filled()))?;
            }
            LegendEntry::Shape(f, _) => {
                draw_marker(area, std::iter::once((x + 10, y)), *f, INK.into(), 5)?;
            }
            LegendEntry::Band(color, _) => {
                area.draw(&Rectangle::new(
                    [(x, y - 7), (x + 20, y + 7)],
                    color.mix(0.3).filled(),
                ))?;
            }
            LegendEntry::Line(color, _) => {
                area.draw(&PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    color.stroke_width(3),
                ))?;
            }
        }
        let label = match entry {
            LegendEntry::Dot(_, l)
            | LegendEntry::Shape(_, l)
            | LegendEntry::Band(_, l)
            | LegendEntry::Line(_, l) => l.clone(),
            LegendEntry::Heading(_) | LegendEntry::Note(_) => String::new(),
        };
        area.draw(&Text::new(label, (x + 30, y - 8), text.clone()))?;
        y += 22;
    }
    Ok(())
}

/// Splits `text` into lines of at most about `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Draws the marker of op type `f` at each of `points`: read ●, write ▲, cas ✕,
/// delete ■, txn ○.
fn draw_marker<DB, CT>(
    area: &DrawingArea<DB, CT>,
    points: impl Iterator<Item = CT::From>,
    f: OpFn,
    style: ShapeStyle,
    size: i32,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    // Small markers (dense plots) get thin strokes, so crosses do not outweigh dots.
    let thin_or_bold = if size <= 2 { 1 } else { 2 };
    for p in points {
        match f {
            OpFn::Read => area.draw(&Circle::new(p, size, style.filled()))?,
            OpFn::Write => area.draw(&TriangleMarker::new(p, size + 1, style.filled()))?,
            OpFn::Cas => area.draw(&Cross::new(p, size, style.stroke_width(thin_or_bold)))?,
            OpFn::Delete => area.draw(
                &(EmptyElement::at(p)
                    + Rectangle::new([(-size, -size), (size, size)], style.filled())),
            )?,
            OpFn::Txn => area.draw(&Circle::new(p, size + 1, style.stroke_width(thin_or_bold)))?,
        }
    }
    Ok(())
}

/// Formats an axis tick with at most three significant digits and no trailing zeros.
pub(crate) fn fmt_tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    if v.abs() >= 1000.0 {
        return format!("{v:.0}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// "1 op", "2 ops", "1,000 ops".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        fmt_count(n as u64),
        if n == 1 { one } else { many }
    )
}

/// Formats a bar's value: thousands separators for large ones, three digits for small.
fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        fmt_count(v.round() as u64)
    } else {
        fmt_tick(v)
    }
}

/// Formats a tail-percentile axis value `v = -log10(1 - p)` as the percentile `p`:
/// 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9%.
fn fmt_tail_percentile(v: f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-v));
    let decimals = (v.ceil() as i32 - 2).clamp(0, 6) as usize;
    format!("{pct:.decimals$}%")
}

/// Latency of every (drawn) operation against its invoke time.
struct LatencyFigure<'a> {
    /// Caption suffix naming the run.
    title: &'a str,
    /// Fault and phase shading.
    overlay: &'a Overlay,
    /// (invoke s, latency ms, outcome, op type), in history order.
    points: Vec<(f64, f64, Outcome, OpFn)>,
    /// How many operations the history has.
    ops_total: usize,
    /// How many operations ended with each outcome (indexed like `Outcome::ALL`), drawn or not.
    outcome_totals: [usize; 3],
    /// How many never completed (drawn at the run end).
    pending: usize,
    /// X axis end, s.
    x_max_s: f64,
    /// Y axis range, ms.
    y_range_ms: (f64, f64),
    /// Whether the y axis is logarithmic.
    log_scale: bool,
}

impl<'a> LatencyFigure<'a> {
    /// Chooses the points and axes for a run.
    fn of(run: &RunData, title: &'a str, overlay: &'a Overlay) -> LatencyFigure<'a> {
        let chosen =
            stats::downsample_latency_points(&run.ops, run.run_end_ns, MAX_LATENCY_POINTS_DRAWN);
        let points: Vec<(f64, f64, Outcome, OpFn)> = chosen
            .iter()
            .map(|&i| {
                let op = &run.ops[i];
                (
                    op.invoke_ns as f64 / 1e9,
                    op.latency_ms(run.run_end_ns),
                    op.outcome,
                    op.f,
                )
            })
            .collect();
        let positive = points.iter().map(|p| p.1).filter(|l| *l > 0.0);
        let lo = positive.clone().fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(0.0, f64::max);
        let log_scale = lo.is_finite() && hi / lo > LOG_SCALE_RANGE_RATIO;
        let y_range_ms = if log_scale {
            // Round 1-2-5 bounds with headroom, so points at the client timeout do not sit
            // on the frame.
            let lo = lo.max(MIN_LOG_LATENCY_MS);
            (
                stats::nice_floor(lo / 1.2).max(MIN_LOG_LATENCY_MS),
                stats::nice_ceil(hi * 1.25),
            )
        } else {
            (0.0, if hi > 0.0 { hi * 1.08 } else { 1.0 })
        };
        LatencyFigure {
            title,
            overlay,
            ops_total: run.ops.len(),
            outcome_totals: Outcome::ALL
                .map(|o| run.ops.iter().filter(|op| op.outcome == o).count()),
            pending: run.ops.iter().filter(|op| op.complete_ns.is_none()).count(),
            points,
            x_max_s: if run.run_end_ns == 0 {
                1.0
            } else {
                run.run_end_ns as f64 / 1e9
            },
            y_range_ms,
            log_scale,
        }
    }

    /// Draws the points and overlay on a chart whose y axis is either linear or log.
    fn draw_on<DB, Y>(
        &self,
        mut chart: ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
    ) -> DrawResult
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        let (y_lo, y_hi) = self.y_range_ms;
        let y_desc = if self.log_scale {
            "latency (ms, log scale)"
        } else {
            "latency (ms)"
        };
        styled_mesh(
            chart
                .configure_mesh()
                .x_desc("time since start of run (s)")
                .y_desc(y_desc)
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&|v| fmt_tick(*v)),
            0.08,
        )
        .draw()?;
        self.overlay.draw(&mut chart, y_lo, y_hi)?;
        let area = chart.plotting_area();
        let many = self.points.len() > 2_000;
        let size = if many { 2 } else { 3 };
        for outcome in Outcome::ALL {
            let color = outcome_color(outcome);
            let style: ShapeStyle = if many && outcome != Outcome::Info {
                color.mix(0.55).into()
            } else {
                color.mix(0.9).into()
            };
            for f in ALL_FNS {
                let pts = self
                    .points
                    .iter()
                    .filter(|p| p.2 == outcome && p.3 == f)
                    .map(|p| (p.0, p.1.clamp(y_lo, y_hi)));
                draw_marker(area, pts, f, style, size)?;
            }
        }
        Ok(())
    }
}

impl Figure for LatencyFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (w, _) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w - LEGEND_WIDTH_PX);
        let caption = format!("Latency of each operation — {}", self.title);
        let mut builder = ChartBuilder::on(&plot);
        builder
            .caption(caption, (FONT, 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72);
        let x = 0f64..self.x_max_s;
        let (y_lo, y_hi) = self.y_range_ms;
        if self.log_scale {
            self.draw_on(builder.build_cartesian_2d(x, (y_lo..y_hi).log_scale())?)?;
        } else {
            self.draw_on(builder.build_cartesian_2d(x, y_lo..y_hi)?)?;
        }

        let mut entries = vec![LegendEntry::Heading("outcome (colour)".to_string())];
        for (outcome, n) in Outcome::ALL.into_iter().zip(self.outcome_totals) {
            entries.push(LegendEntry::Dot(
                outcome_color(outcome),
                format!("{} ({})", outcome.name(), fmt_count(n as u64)),
            ));
        }
        let fns: Vec<OpFn> = ALL_FNS
            .into_iter()
            .filter(|f| self.points.iter().any(|p| p.3 == *f))
            .collect();
        if !fns.is_empty() {
            entries.push(LegendEntry::Heading("op type (shape)".to_string()));
            entries.extend(
                fns.into_iter()
                    .map(|f| LegendEntry::Shape(f, f.name().to_string())),
            );
        }
        let overlay = self.overlay.legend();
        if !overlay.is_empty() {
            entries.push(LegendEntry::Heading("periods".to_string()));
            entries.extend(overlay);
        }
        entries.push(LegendEntry::Heading("notes".to_string()));
        if self.points.len() < self.ops_total {
            entries.push(LegendEntry::Note(format!(
                "Downsampled: {} of {} ops drawn (bound {}); every info and the slowest op of each time slice are kept, ok and fail thinned alike.",
                fmt_count(self.points.len() as u64),
                fmt_count(self.ops_total as u64),
                fmt_count(MAX_LATENCY_POINTS_DRAWN as u64)
            )));
        } else {
            entries.push(LegendEntry::Note(format!(
                "All {} ops drawn.",
                fmt_count(self.ops_total as u64)
            )));
        }
        if self.pending > 0 {
            entries.push(LegendEntry::Note(format!(
                "{} never completed; drawn as info at the end of the run.",
                plural(self.pending, "op", "ops")
            )));
        }
        draw_legend(&legend, &entries)
    }
}

/// The colour of an outcome.
fn outcome_color(outcome: Outcome) -> RGBColor {
    match outcome {
        Outcome::Ok => OK_COLOR,
        Outcome::Fail => FAIL_COLOR,
        Outcome::Info => INFO_COLOR,
    }
}

/// Completions per second over time, one line per outcome.
struct ThroughputFigure<'a> {
    /// Caption suffix naming the run.
    title: &'a str,
    /// Fault and phase shading.
    overlay: &'a Overlay,
    /// The bucketed counts.
    throughput: Throughput,
    /// X axis end, s.
    run_end_s: f64,
}

impl Figure for ThroughputFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (w, _) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w - LEGEND_WIDTH_PX);
        let bucket_s = self.throughput.bucket_s;
        let rate = |count: u64| count as f64 / bucket_s;
        let y_max = self
            .throughput
            .counts
            .iter()
            .flat_map(|c| c.iter().copied())
            .map(rate)
            .fold(0.0, f64::max);
        let y_hi = if y_max > 0.0 { y_max * 1.12 } else { 1.0 };
        let x_max = self
            .run_end_s
            .max(bucket_s * self.throughput.counts.len() as f64)
            .max(1e-3);
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                format!("Completed operations per second — {}", self.title),
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..x_max, 0f64..y_hi)?;
        styled_mesh(
            chart
                .configure_mesh()
                .x_desc("time since start of run (s)")
                .y_desc(format!(
                    "completions per second ({} s buckets)",
                    fmt_tick(bucket_s)
                ))
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&|v| fmt_tick(*v)),
            0.08,
        )
        .draw()?;
        self.overlay.draw(&mut chart, 0.0, y_hi)?;
        let mut entries = vec![LegendEntry::Heading("completions".to_string())];
        for (slot, outcome) in Outcome::ALL.into_iter().enumerate() {
            let total: u64 = self.throughput.counts.iter().map(|c| c[slot]).sum();
            let color = outcome_color(outcome);
            entries.push(LegendEntry::Line(
                color,
                format!("{} ({})", outcome.name(), fmt_count(total)),
            ));
            if total == 0 && outcome != Outcome::Ok {
                continue;
            }
            // A step line: flat across each bucket, so a bucket reads as what it counted.
            let points = self
                .throughput
                .counts
                .iter()
                .enumerate()
                .flat_map(|(i, c)| {
                    let v = rate(c[slot]);
                    [(i as f64 * bucket_s, v), ((i + 1) as f64 * bucket_s, v)]
                });
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
        }
        let overlay = self.overlay.legend();
        if !overlay.is_empty() {
            entries.push(LegendEntry::Heading("periods".to_string()));
            entries.extend(overlay);
        }
        entries.push(LegendEntry::Heading("notes".to_string()));
        entries.push(LegendEntry::Note(
            "Counted at completion time. Ops that never completed are not counted.".to_string(),
        ));
        draw_legend(&legend, &entries)
    }
}

/// One line of the CDF figure: label, colour, number of ops, points (ms, mid-rank fraction).
type CdfLine = (String, RGBColor, usize, Vec<(f64, f64)>);

/// One bar series of a comparison panel: legend label, colour, the value of a run.
type BarSeries<'s> = (&'s str, RGBColor, fn(&ComparedRun) -> Option<f64>);

/// CDF of ok latencies, one line per op type and one for all.
struct CdfFigure<'a> {
    /// Caption suffix naming the run.
    title: &'a str,
    /// One line per op type (and one for all).
    lines: Vec<CdfLine>,
    /// X axis range, ms (log scale).
    x_range_ms: (f64, f64),
}

impl<'a> CdfFigure<'a> {
    /// Builds the CDF lines of a run's ok operations.
    fn of(run: &RunData, title: &'a str) -> CdfFigure<'a> {
        let ok_latencies = |f: Option<OpFn>| -> Vec<f64> {
            run.ops
                .iter()
                .filter(|op| op.outcome == Outcome::Ok && f.is_none_or(|f| op.f == f))
                .map(|op| op.latency_ms(run.run_end_ns).max(MIN_LOG_LATENCY_MS))
                .collect()
        };
        let mut lines = Vec::new();
        let present: Vec<OpFn> = ALL_FNS
            .into_iter()
            .filter(|f| {
                run.ops
                    .iter()
                    .any(|op| op.outcome == Outcome::Ok && op.f == *f)
            })
            .collect();
        if present.len() > 1 {
            let all = ok_latencies(None);
            lines.push(("all".to_string(), INK, all.len(), stats::cdf_points(all)));
        }
        for (i, f) in ALL_FNS.into_iter().enumerate() {
            if present.contains(&f) {
                let of_f = ok_latencies(Some(f));
                lines.push((
                    f.name().to_string(),
                    FN_PALETTE[i % FN_PALETTE.len()],
                    of_f.len(),
                    stats::cdf_points(of_f),
                ));
            }
        }
        let lo = lines
            .iter()
            .flat_map(|l| l.3.iter().map(|p| p.0))
            .fold(f64::INFINITY, f64::min);
        let hi = lines
            .iter()
            .flat_map(|l| l.3.iter().map(|p| p.0))
            .fold(0.0, f64::max);
        let x_range_ms = if lo.is_finite() && hi > 0.0 {
            (
                stats::nice_floor(lo / 1.2),
                stats::nice_ceil(hi * 1.25).max(lo * 10.0),
            )
        } else {
            (0.1, 1000.0)
        };
        CdfFigure {
            title,
            lines,
            x_range_ms,
        }
    }
}

impl Figure for CdfFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (w, _) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w - LEGEND_WIDTH_PX);
        let (x_lo, x_hi) = self.x_range_ms;
        // The y axis is the tail percentile -log10(1 - p): 90%, 99%, 99.9% are evenly
        // spaced, so the tail, where the trouble is, gets as much room as the median.
        let tail = |p: f64| -(1.0 - p).log10();
        let y_top = self
            .lines
            .iter()
            .flat_map(|l| l.3.iter().map(|pt| tail(pt.1)))
            .fold(2.0, f64::max)
            .ceil();
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                format!("Latency distribution of ok operations — {}", self.title),
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..y_top)?;
        styled_mesh(
            chart
                .configure_mesh()
                .x_desc("latency (ms, log scale)")
                .y_desc("percentile (ops at or below)")
                .y_labels(y_top as usize + 1)
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&|v| fmt_tail_percentile(*v)),
            0.12,
        )
        .draw()?;
        let median = tail(0.5);
        chart.draw_series(LineSeries::new(
            vec![(x_lo, median), (x_hi, median)],
            INK.mix(0.35).stroke_width(1),
        ))?;
        chart.plotting_area().draw(
            &(EmptyElement::at((x_hi, median))
                + Text::new(
                    "median (50%)",
                    (-4, -16),
                    (FONT, 12)
                        .into_font()
                        .color(&INK)
                        .pos(Pos::new(HPos::Right, VPos::Top)),
                )),
        )?;
        let mut entries = vec![LegendEntry::Heading("op type".to_string())];
        for (label, color, count, points) in &self.lines {
            let width = if label == "all" { 3 } else { 2 };
            // A step line: flat to the next latency, then up, as an empirical CDF is.
            let steps = points.iter().enumerate().flat_map(|(i, (x, p))| {
                let before = if i == 0 { *p } else { points[i - 1].1 };
                [(*x, tail(before)), (*x, tail(*p))]
            });
            chart.draw_series(LineSeries::new(steps, color.stroke_width(width)))?;
            entries.push(LegendEntry::Line(
                *color,
                format!("{label} ({} ops)", fmt_count(*count as u64)),
            ));
        }
        if self.lines.is_empty() {
            entries.push(LegendEntry::Note("No ok operations to show.".to_string()));
        }
        entries.push(LegendEntry::Heading("notes".to_string()));
        entries.push(LegendEntry::Note(
            "Follow a line to the 99% row: the x value there is the p99 latency of that op type. The y axis stretches the tail: each row is ten times rarer than the one below.".to_string(),
        ));
        draw_legend(&legend, &entries)
    }
}

/// One bar group of the comparison chart.
#[derive(Clone, Debug)]
pub(crate) struct ComparedRun {
    /// Lines of the label under the group (system, transport/backend, seed).
    pub(crate) label_lines: Vec<String>,
    /// Ok operations per second.
    pub(crate) throughput_ok_per_s: Option<f64>,
    /// Median latency, ms.
    pub(crate) latency_ms_p50: Option<f64>,
    /// 99th percentile latency, ms.
    pub(crate) latency_ms_p99: Option<f64>,
}

/// Grouped bars: throughput per run on top, latency p50 and p99 per run below.
struct ComparisonFigure<'a> {
    /// The runs, in the order given.
    runs: &'a [ComparedRun],
}

/// Draws the comparison chart to `<out_dir>/comparison.{png,svg}`.
pub(crate) fn render_comparison_plot(
    runs: &[ComparedRun],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let width_px = (260 + 150 * runs.len() as u32).clamp(900, 2400);
    save_figure(
        &ComparisonFigure { runs },
        out_dir,
        "comparison",
        (width_px, 900),
    )
}

impl ComparisonFigure<'_> {
    /// Draws one panel of bars; `series` gives (legend label, colour, value of a run).
    fn panel<DB>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: &str,
        y_desc: &str,
        series: &[BarSeries<'_>],
    ) -> DrawResult
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
    {
        let n = self.runs.len().max(1);
        let y_max = self
            .runs
            .iter()
            .flat_map(|r| series.iter().filter_map(move |s| (s.2)(r)))
            .fold(0.0, f64::max);
        let y_hi = if y_max > 0.0 { y_max * 1.18 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, 20))
            .margin(14)
            .x_label_area_size(COMPARISON_LABEL_AREA_PX)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..n as f64, 0f64..y_hi)?;
        styled_mesh(
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_desc(y_desc)
                .y_label_formatter(&|v| fmt_tick(*v)),
            0.08,
        )
        .draw()?;
        let group_width = 0.7;
        let bar_width = group_width / series.len() as f64;
        let value_style = (FONT, 12)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for (i, run) in self.runs.iter().enumerate() {
            for (k, (_, color, value_of)) in series.iter().enumerate() {
                let x0 = i as f64 + (1.0 - group_width) / 2.0 + k as f64 * bar_width;
                let x1 = x0 + bar_width * 0.92;
                match value_of(run) {
                    Some(v) => {
                        chart
                            .plotting_area()
                            .draw(&Rectangle::new([(x0, 0.0), (x1, v)], color.filled()))?;
                        chart.plotting_area().draw(
                            &(EmptyElement::at(((x0 + x1) / 2.0, v))
                                + Text::new(fmt_value(v), (0, -3), value_style.clone())),
                        )?;
                    }
                    None => {
                        chart.plotting_area().draw(
                            &(EmptyElement::at(((x0 + x1) / 2.0, 0.0))
                                + Text::new("n/a", (0, -3), value_style.clone())),
                        )?;
                    }
                }
            }
            // The run's label, centred under its group, in the x label area.
            let (cx, cy) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let (bx, by) = area.get_base_pixel();
            let label_style = (FONT, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top));
            for (line_no, line) in run.label_lines.iter().enumerate() {
                area.draw(&Text::new(
                    line.clone(),
                    (cx - bx, cy - by + 8 + 16 * line_no as i32),
                    label_style.clone(),
                ))?;
            }
        }
        if series.len() > 1 {
            let (w, _) = area.dim_in_pixel();
            let mut x = w as i32 - 40 - 110 * series.len() as i32;
            for (label, color, _) in series {
                area.draw(&Rectangle::new([(x, 16), (x + 16, 30)], color.filled()))?;
                area.draw(&Text::new(
                    label.to_string(),
                    (x + 22, 15),
                    (FONT, 14).into_font(),
                ))?;
                x += 110;
            }
        }
        Ok(())
    }
}

impl Figure for ComparisonFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (_, h) = root.dim_in_pixel();
        let (top, bottom) = root.split_vertically(h / 2);
        self.panel(
            &top,
            "Throughput of ok operations per run",
            "ok operations per second",
            &[("ok ops/s", OK_COLOR, |r| r.throughput_ok_per_s)],
        )?;
        self.panel(
            &bottom,
            "Latency per run",
            "latency (ms)",
            &[
                ("p50", RGBColor(107, 174, 214), |r| r.latency_ms_p50),
                ("p99", RGBColor(8, 69, 148), |r| r.latency_ms_p99),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_keep_three_significant_digits_without_trailing_zeros() {
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(0.30000000000000004), "0.3");
        assert_eq!(fmt_tick(12.5), "12.5");
        assert_eq!(fmt_tick(0.001), "0.001");
        assert_eq!(fmt_tick(100.0), "100");
        assert_eq!(fmt_tick(25_000.0), "25000");
    }

    #[test]
    fn fonts_register_from_many_threads_at_once() {
        let handles: Vec<_> = (0..8).map(|_| std::thread::spawn(register_fonts)).collect();
        for h in handles {
            assert!(h.join().expect("thread panicked").is_ok());
        }
    }

    #[test]
    fn legend_notes_wrap_at_spaces() {
        assert_eq!(wrap("aaa bbb ccc", 7), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("", 7), Vec::<String>::new());
    }
}
