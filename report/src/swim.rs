//! Figures and report sections of `system = "swim"` runs, drawn from the `swim` section
//! of `summary.json` and from `events.jsonl`:
//!
//! * `plots/swim-detection-cdf.{png,svg}` — per crash, the distribution of the time to
//!   the first suspicion, the first `dead` and `dead` everywhere, and of rejoins, with
//!   the SWIM paper's expected first detection `T·e/(e−1)` marked;
//! * `plots/swim-timeline.{png,svg}` — suspicions, deaths and refutations per second
//!   over the run, crash periods shaded, false positives marked;
//! * comparisons of several SWIM runs: `swim-comparison.{png,svg}` (false positives and
//!   detection latencies per run, e.g. Lifeguard on vs off) and, when the runs differ in
//!   size, `swim-scale.{png,svg}` (time until known dead everywhere and load per member
//!   against n).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kvlab_types::NodeEvent;
use plotters::chart::ChartContext;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use serde_json::Value;

use crate::ReportError;
use crate::data::{RunData, json_at};
use crate::events::RunEvent;
use crate::plots::{
    DrawResult, FAIL_COLOR, FONT, Figure, INFO_COLOR, INK, LIVENESS_COLOR, OK_COLOR, fmt_tick,
    save_figure, styled_mesh,
};

/// Size of every SWIM figure, px.
const FIGURE_SIZE_PX: (u32, u32) = (1200, 560);
/// Most buckets of the timeline.
const MAX_TIMELINE_BUCKETS: u64 = 600;
/// Colour of the rejoin series and of the Lifeguard-off runs.
const PURPLE: RGBColor = RGBColor(148, 103, 189);

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    json_at(v, path).and_then(Value::as_f64)
}

/// A member count on an axis: `10`, `100`, `1000` (a log axis's ticks are whole
/// numbers of members, never `10.0`); anything else as a plain tick.
fn fmt_member_count(n: f64) -> String {
    if n >= 1.0 && (n - n.round()).abs() < 1e-6 {
        format!("{}", n.round() as u64)
    } else {
        fmt_tick(n)
    }
}

/// Empirical CDF points (value, fraction at or below), sorted.
fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, x)| (*x, (i + 1) as f64 / n))
        .collect()
}

/// One line of a figure: label, colour, points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

/// One panel of the scale figure: area, title, y axis, metrics.
type Panel<'a, DB> = (&'a DrawingArea<DB, Shift>, &'a str, &'a str, Vec<Metric>);

/// Draws the series labels at `position` in the box every SWIM (and ring) figure shares.
pub(crate) fn draw_series_labels<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_px: i32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, font_px))
        .draw()?;
    Ok(())
}

/// The legend mark of a line series drawn in `c`.
pub(crate) fn line_legend(c: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
}

struct DetectionCdf {
    title: String,
    series: Vec<Series>,
    expected_s: Option<f64>,
    x_max: f64,
}

impl Figure for DetectionCdf {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..self.x_max, 0f64..1.02)?;
        styled_mesh(
            chart
                .configure_mesh()
                .x_desc("seconds since the crash (rejoin: since the restart)")
                .y_desc("fraction of crashes"),
            0.12,
        )
        .draw()?;
        for (label, color, pts) in &self.series {
            let steps: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
                .chain(pts.iter().enumerate().flat_map(|(i, (x, p))| {
                    let before = if i == 0 { 0.0 } else { pts[i - 1].1 };
                    [(*x, before), (*x, *p)]
                }))
                .collect();
            let c = *color;
            chart
                .draw_series(LineSeries::new(steps, c.stroke_width(2)))?
                .label(format!("{label} ({} crashes)", pts.len()))
                .legend(line_legend(c));
        }
        if let Some(e) = self.expected_s {
            chart
                .draw_series(LineSeries::new(
                    vec![(e, 0.0), (e, 1.0)],
                    INK.mix(0.6).stroke_width(1),
                ))?
                .label(format!("paper: mean first detection T·e/(e−1) = {e:.2} s"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], INK.stroke_width(1)));
        }
        draw_series_labels(&mut chart, SeriesLabelPosition::LowerRight, 14)?;
        Ok(())
    }
}

struct Timeline {
    title: String,
    bucket_s: f64,
    end_s: f64,
    lines: Vec<Series>,
    crashes: Vec<(f64, f64)>,
    false_positives: Vec<f64>,
    y_max: f64,
}

impl Figure for Timeline {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..self.end_s.max(1.0), 0f64..self.y_max)?;
        styled_mesh(
            chart
                .configure_mesh()
                .x_desc("simulated time (s)")
                .y_desc(format!("events per {} s (all members)", self.bucket_s)),
            0.12,
        )
        .draw()?;
        chart
            .draw_series(self.crashes.iter().map(|(a, b)| {
                Rectangle::new([(*a, 0.0), (*b, self.y_max)], BLACK.mix(0.07).filled())
            }))?
            .label("member crashed (shaded)")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 18, y + 5)], BLACK.mix(0.15).filled())
            });
        for (label, color, pts) in &self.lines {
            let c = *color;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                .label(label.as_str())
                .legend(line_legend(c));
        }
        if !self.false_positives.is_empty() {
            let top = self.y_max * 0.97;
            chart
                .draw_series(
                    self.false_positives
                        .iter()
                        .map(|t| TriangleMarker::new((*t, top), 7, FAIL_COLOR.filled())),
                )?
                .label(format!("false positive ({})", self.false_positives.len()))
                .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, FAIL_COLOR.filled()));
        }
        draw_series_labels(&mut chart, SeriesLabelPosition::UpperRight, 14)?;
        Ok(())
    }
}

/// Draws the SWIM figures of a run into `plots_dir`; returns the files written.
pub(crate) fn render_swim_plots(
    run: &RunData,
    plots_dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let s = &run.summary;
    let name = json_at(s, &["label"])
        .and_then(Value::as_str)
        .or_else(|| json_at(s, &["experiment"]).and_then(Value::as_str))
        .unwrap_or("swim")
        .to_string();
    let members = num(s, &["swim", "members"]).unwrap_or(0.0);
    let cdf_fig = DetectionCdf::of(s, &name, members);
    let mut files = save_figure(&cdf_fig, plots_dir, "swim-detection-cdf", FIGURE_SIZE_PX)?;
    let timeline = Timeline::of(run, &name, members);
    files.extend(save_figure(
        &timeline,
        plots_dir,
        "swim-timeline",
        FIGURE_SIZE_PX,
    )?);
    Ok(files)
}

impl DetectionCdf {
    /// Per crash, the distribution of each detection time in the summary's
    /// `swim.crash_records`.
    fn of(summary: &Value, name: &str, members: f64) -> DetectionCdf {
        let records: Vec<Value> = json_at(summary, &["swim", "crash_records"])
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let field = |k: &str| -> Vec<f64> { records.iter().filter_map(|r| num(r, &[k])).collect() };
        let mut series = Vec::new();
        let mut x_max: f64 = 1.0;
        for (label, key, color) in [
            ("first suspicion", "first_suspicion_s", INFO_COLOR),
            ("first dead", "first_dead_s", FAIL_COLOR),
            ("dead everywhere", "dead_everywhere_s", INK),
            (
                "rejoined everywhere",
                "rejoined_everywhere_s",
                LIVENESS_COLOR,
            ),
        ] {
            let v = field(key);
            x_max = v.iter().copied().fold(x_max, f64::max);
            if !v.is_empty() {
                series.push((label.to_string(), color, cdf(v)));
            }
        }
        DetectionCdf {
            title: format!("SWIM detection latency — {name}, n = {members}"),
            series,
            expected_s: num(summary, &["swim", "expected_first_detection_s"]),
            x_max: x_max * 1.1,
        }
    }
}

/// Suspicions, deaths and refutations reported by members, counted per `bucket_ns`
/// (indexed like the timeline's lines).
fn member_event_counts(events: &[RunEvent], bucket_ns: u64, buckets: usize) -> [Vec<u64>; 3] {
    let mut counts = [
        vec![0u64; buckets],
        vec![0u64; buckets],
        vec![0u64; buckets],
    ];
    for e in events {
        let k = match e.node_event().map(|(_, ev)| ev) {
            Some(NodeEvent::MemberSuspect { .. }) => 0,
            Some(NodeEvent::MemberDead { .. }) => 1,
            Some(NodeEvent::MemberRefuted { .. }) => 2,
            _ => continue,
        };
        let bucket = ((e.time_ns / bucket_ns) as usize).min(buckets - 1);
        counts[k][bucket] += 1;
    }
    counts
}

impl Timeline {
    /// The member events of a run per time bucket, its crash periods and its false
    /// positives.
    fn of(run: &RunData, name: &str, members: f64) -> Timeline {
        let end_ns = run.run_end_ns;
        // Whole seconds per bucket, at most MAX_TIMELINE_BUCKETS of them.
        let bucket_ns =
            end_ns.div_ceil(MAX_TIMELINE_BUCKETS * 1_000_000_000).max(1) * 1_000_000_000;
        let buckets = (end_ns / bucket_ns + 1) as usize;
        let counts = member_event_counts(&run.events, bucket_ns, buckets);
        let bucket_s = bucket_ns as f64 / 1e9;
        let y_max = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64 * 1.15;
        let line = |c: &Vec<u64>| -> Vec<(f64, f64)> {
            c.iter()
                .enumerate()
                .map(|(i, v)| (i as f64 * bucket_s, *v as f64))
                .collect()
        };
        let crashes = run
            .faults
            .iter()
            .filter(|f| f.fault == "crash")
            .map(|f| {
                (
                    f.start_ns as f64 / 1e9,
                    f.end_ns.unwrap_or(end_ns) as f64 / 1e9,
                )
            })
            .collect();
        let false_positives = json_at(&run.summary, &["swim", "false_positive_records"])
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|r| num(r, &["at_s"])).collect())
            .unwrap_or_default();
        Timeline {
            title: format!("SWIM suspicions and deaths over time — {name}, n = {members}"),
            bucket_s,
            end_s: end_ns as f64 / 1e9,
            lines: vec![
                ("suspicions".into(), INFO_COLOR, line(&counts[0])),
                ("deaths declared".into(), FAIL_COLOR, line(&counts[1])),
                ("refutations".into(), OK_COLOR, line(&counts[2])),
            ],
            crashes,
            false_positives,
            y_max,
        }
    }
}

/// The SWIM section of a run's report: the key numbers and the two figures.
pub(crate) fn swim_section(run: &RunData) -> String {
    let s = &run.summary;
    let mut b = String::from("<h2>SWIM failure detection</h2><table class=\"kv\">");
    let row = |b: &mut String, k: &str, v: String| {
        let _ = write!(b, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    let stat = |k: &str| -> String {
        match json_at(s, &["swim", k]) {
            Some(v) => format!(
                "mean {:.2} s · p50 {:.2} s · p99 {:.2} s · max {:.2} s ({} samples)",
                num(v, &["mean"]).unwrap_or(0.0),
                num(v, &["p50"]).unwrap_or(0.0),
                num(v, &["p99"]).unwrap_or(0.0),
                num(v, &["max"]).unwrap_or(0.0),
                num(v, &["count"]).unwrap_or(0.0),
            ),
            None => "—".into(),
        }
    };
    let n = |k: &[&str]| num(s, &[&["swim"], k].concat()).map_or("—".into(), |v| format!("{v}"));
    row(&mut b, "members", n(&["members"]));
    row(&mut b, "crashes", n(&["crashes"]));
    row(&mut b, "first suspicion", stat("first_suspicion_s"));
    row(
        &mut b,
        "paper: mean first detection T·e/(e−1)",
        num(s, &["swim", "expected_first_detection_s"])
            .map_or("—".into(), |v| format!("{v:.2} s")),
    );
    row(&mut b, "first dead", stat("first_dead_s"));
    row(&mut b, "dead everywhere", stat("dead_everywhere_s"));
    row(&mut b, "rejoined everywhere", stat("rejoin_everywhere_s"));
    row(&mut b, "false positives", n(&["false_positives"]));
    row(&mut b, "false suspicions", n(&["false_suspicions"]));
    row(&mut b, "refutations", n(&["refutations"]));
    row(
        &mut b,
        "messages / member / s",
        n(&["load", "messages_per_member_per_s"]),
    );
    row(
        &mut b,
        "bytes / member / s",
        n(&["load", "bytes_per_member_per_s"]),
    );
    row(
        &mut b,
        "one view after the heal (s)",
        n(&["converged_after_heal_s"]),
    );
    if let Some(checks) = json_at(s, &["swim", "checks"]).and_then(Value::as_array) {
        for c in checks {
            let ok = json_at(c, &["ok"])
                .and_then(Value::as_bool)
                .unwrap_or(false);
            row(
                &mut b,
                &format!(
                    "bound {}",
                    json_at(c, &["name"]).and_then(Value::as_str).unwrap_or("?")
                ),
                format!(
                    "{} (value {}, bound {})",
                    if ok { "held" } else { "EXCEEDED" },
                    num(c, &["value"]).map_or("never reached".into(), |v| format!("{v:.3}")),
                    num(c, &["bound"]).unwrap_or(0.0)
                ),
            );
        }
    }
    b.push_str("</table>");
    for (stem, caption) in [
        (
            "swim-detection-cdf",
            "Per crash: time to the first suspicion by anyone, the first dead declaration, and \
             until every live member declared it dead; per restart, until every live member held \
             its new incarnation alive. The vertical line is the SWIM paper's expected mean \
             first detection.",
        ),
        (
            "swim-timeline",
            "Suspicions, deaths and refutations per time bucket, summed over members; grey bands \
             are crashed periods; red triangles are false positives (a live member declared dead).",
        ),
    ] {
        let _ = write!(
            b,
            "<figure><a href=\"plots/{stem}.svg\"><img src=\"plots/{stem}.png\" alt=\"{stem}\"></a>\
             <figcaption>{caption} <a href=\"plots/{stem}.svg\">SVG</a> · <a href=\"plots/{stem}.png\">PNG</a></figcaption></figure>"
        );
    }
    b
}

/// One run in a SWIM comparison.
struct Compared {
    label: String,
    members: f64,
    false_positives: f64,
    false_suspicions: f64,
    first_suspicion_mean_s: f64,
    dead_everywhere_p50_s: f64,
    dead_everywhere_p99_s: f64,
    messages_per_member_per_s: f64,
    bytes_per_member_per_s: f64,
}

impl Compared {
    fn of(summary: &Value, index: usize) -> Compared {
        let g = |p: &[&str]| num(summary, &[&["swim"], p].concat()).unwrap_or(0.0);
        let label = json_at(summary, &["label"])
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("run {index}"));
        Compared {
            label,
            members: g(&["members"]),
            false_positives: g(&["false_positives"]),
            false_suspicions: g(&["false_suspicions"]),
            first_suspicion_mean_s: g(&["first_suspicion_s", "mean"]),
            dead_everywhere_p50_s: g(&["dead_everywhere_s", "p50"]),
            dead_everywhere_p99_s: g(&["dead_everywhere_s", "p99"]),
            messages_per_member_per_s: g(&["load", "messages_per_member_per_s"]),
            bytes_per_member_per_s: g(&["load", "bytes_per_member_per_s"]),
        }
    }
}

type Metric = (&'static str, RGBColor, fn(&Compared) -> f64);

/// The top of a y axis that shows every run's `metrics` with 20 % headroom (at least 1).
fn y_axis_max(runs: &[Compared], metrics: &[Metric]) -> f64 {
    runs.iter()
        .flat_map(|r| metrics.iter().map(move |m| (m.2)(r)))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.2
}

struct Bars {
    runs: Vec<Compared>,
}

impl Bars {
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        title: &str,
        y_desc: &str,
        metrics: &[Metric],
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let groups = self.runs.len();
        let width = metrics.len() as f64 + 1.0;
        let y_max = y_axis_max(&self.runs, metrics);
        let labels: Vec<String> = self.runs.iter().map(|r| r.label.clone()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..groups as f64 * width, 0f64..y_max)?;
        styled_mesh(
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(groups * 2 + 1)
                .x_label_formatter(&|x| {
                    let g = (x / width).floor() as usize;
                    let centre = g as f64 * width + width / 2.0;
                    if (x - centre).abs() < width / 4.0 {
                        labels.get(g).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_desc(y_desc),
            0.12,
        )
        .draw()?;
        for (mi, (name, color, f)) in metrics.iter().enumerate() {
            let c = *color;
            chart
                .draw_series(self.runs.iter().enumerate().map(|(g, r)| {
                    let x0 = g as f64 * width + 0.5 + mi as f64;
                    Rectangle::new([(x0, 0.0), (x0 + 0.9, f(r))], c.filled())
                }))?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
            for (g, r) in self.runs.iter().enumerate() {
                let x0 = g as f64 * width + 0.5 + mi as f64;
                let v = f(r);
                chart.plotting_area().draw(&Text::new(
                    if v.fract() == 0.0 {
                        format!("{v}")
                    } else {
                        format!("{v:.2}")
                    },
                    (x0 + 0.1, v + y_max * 0.02),
                    (FONT, 12).into_font().color(&INK),
                ))?;
            }
        }
        draw_series_labels(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
        Ok(())
    }
}

impl Figure for Bars {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        // Three panels: false positives are rare next to suspicions and need their own
        // scale.
        let panels = root.split_evenly((1, 3));
        self.panel(
            &panels[0],
            "Live members declared dead",
            "false positives over the run",
            &[("false positives", FAIL_COLOR, |r| r.false_positives)],
        )?;
        self.panel(
            &panels[1],
            "Live members suspected",
            "false suspicions over the run",
            &[("false suspicions", INFO_COLOR, |r| r.false_suspicions)],
        )?;
        self.panel(
            &panels[2],
            "Detection latency",
            "seconds after the crash",
            &[
                ("first suspicion, mean", INFO_COLOR, |r| {
                    r.first_suspicion_mean_s
                }),
                ("dead everywhere, p50", INK, |r| r.dead_everywhere_p50_s),
                ("dead everywhere, p99", PURPLE, |r| r.dead_everywhere_p99_s),
            ],
        )
    }
}

struct Scale {
    runs: Vec<Compared>,
}

impl Figure for Scale {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        let n_min = self
            .runs
            .iter()
            .map(|r| r.members)
            .fold(f64::INFINITY, f64::min);
        let n_max = self.runs.iter().map(|r| r.members).fold(1.0, f64::max);
        let x_range = (n_min.max(1.0) / 1.5)..(n_max * 1.5);
        let panels: [Panel<'_, DB>; 2] = [
            (
                &left,
                "Time until a crash is known",
                "seconds after the crash",
                vec![
                    ("first suspicion, mean", INFO_COLOR, |r| {
                        r.first_suspicion_mean_s
                    }),
                    ("dead everywhere, p50", INK, |r| r.dead_everywhere_p50_s),
                    ("dead everywhere, p99", PURPLE, |r| r.dead_everywhere_p99_s),
                ],
            ),
            (
                &right,
                "Load per member",
                "per member per second",
                vec![
                    ("messages", OK_COLOR, |r| r.messages_per_member_per_s),
                    ("bytes / 100", LIVENESS_COLOR, |r| {
                        r.bytes_per_member_per_s / 100.0
                    }),
                ],
            ),
        ];
        for (area, title, y_desc, metrics) in panels {
            let y_max = y_axis_max(&self.runs, &metrics);
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 18))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(60)
                .build_cartesian_2d(x_range.clone().log_scale(), 0f64..y_max)?;
            styled_mesh(
                chart
                    .configure_mesh()
                    .x_desc("members n (log scale)")
                    .x_label_formatter(&|n| fmt_member_count(*n))
                    .y_label_formatter(&|v| fmt_tick(*v))
                    .y_desc(y_desc),
                0.12,
            )
            .draw()?;
            for (name, color, f) in &metrics {
                let c = *color;
                let pts: Vec<(f64, f64)> = self.runs.iter().map(|r| (r.members, f(r))).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                    .label(*name)
                    .legend(line_legend(c));
                chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
            }
            draw_series_labels(&mut chart, SeriesLabelPosition::UpperLeft, 13)?;
        }
        Ok(())
    }
}

/// Draws the SWIM comparison of several runs' summaries into `out_dir`; returns the
/// HTML of the figures (for `compare.html`) and the files written. Each run comes with
/// its number in the comparison (from 1), which labels it when it has no label.
pub(crate) fn render_swim_comparison(
    summaries: &[(usize, &Value)],
    out_dir: &Path,
) -> Result<(String, Vec<PathBuf>), ReportError> {
    let mut runs: Vec<Compared> = summaries
        .iter()
        .map(|(index, s)| Compared::of(s, *index))
        .collect();
    let width = (450 + 390 * runs.len() as u32).clamp(1400, 3000);
    let mut files = save_figure(
        &Bars {
            runs: runs
                .iter()
                .map(|r| Compared {
                    label: r.label.clone(),
                    ..*r
                })
                .collect(),
        },
        out_dir,
        "swim-comparison",
        (width, 560),
    )?;
    let mut html = String::from("<h2>SWIM</h2>");
    let figure = |stem: &str, caption: &str| {
        format!(
            "<figure><a href=\"{stem}.svg\"><img src=\"{stem}.png\" alt=\"{stem}\"></a>\
             <figcaption>{caption} <a href=\"{stem}.svg\">SVG</a> · <a href=\"{stem}.png\">PNG</a></figcaption></figure>"
        )
    };
    html.push_str(&figure(
        "swim-comparison",
        "Per run: live members declared dead (false positives) and suspected; detection latency.",
    ));
    let mut sizes: Vec<u64> = runs.iter().map(|r| r.members as u64).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.len() > 1 {
        runs.sort_by(|a, b| a.members.total_cmp(&b.members));
        files.extend(save_figure(
            &Scale { runs },
            out_dir,
            "swim-scale",
            FIGURE_SIZE_PX,
        )?);
        html.push_str(&figure(
            "swim-scale",
            "Against cluster size: the time until a crash is known (first suspicion, dead \
             everywhere) and the load per member. SWIM's promise: the first grows like log n, \
             the second stays flat.",
        ));
    }
    Ok((html, files))
}
