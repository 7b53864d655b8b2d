//! `compare.html`: several runs side by side. The KV columns and the throughput and
//! latency chart are there for runs that measured `kv`; the SWIM figures (drawn by
//! `crate::swim`) for runs that measured `swim`. A run that did not measure something
//! shows "not measured", never a zero.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    escape, experiment_name, fmt_count, fmt_num, page, run_id, seed_of, summary_or_meta, verdict_of,
};
use crate::data::{Outcome, RunData, json_at, json_f64, json_text};
use crate::plots::ComparedRun;
use crate::stats;

/// Builds `compare.html`: a table of the runs, the KV comparison chart when `kv_chart`
/// (some run measured `kv`), then `swim_figures` (HTML, perhaps empty).
pub(crate) fn comparison_page(
    rows: &[ComparisonRow],
    kv_chart: bool,
    swim_figures: &str,
) -> String {
    let kv_columns = rows.iter().any(|r| r.kv);
    let mut b = String::from("<h1>kvlab · comparison of runs</h1>");
    let _ = write!(
        b,
        "<p class=\"subtitle\">{} runs. Bars are labelled by the number in the first column.</p>",
        rows.len()
    );
    if kv_chart {
        b.push_str(
            "<figure><a href=\"comparison.svg\"><img src=\"comparison.png\" alt=\"throughput and latency per run\"></a>\
             <figcaption>Runs with a KV workload. Top: ok operations per second. Bottom: median (p50) and 99th \
             percentile (p99) latency of ok operations. <a href=\"comparison.svg\">SVG</a> · \
             <a href=\"comparison.png\">PNG</a></figcaption></figure>",
        );
    }
    b.push_str(
        "<table><thead><tr><th class=\"num\">#</th><th>run</th><th>experiment</th><th>system</th><th>transport</th>\
         <th>backend</th><th>seed</th><th>measured</th><th>verdict</th>",
    );
    if kv_columns {
        b.push_str(
            "<th>liveness</th><th class=\"num\">ok ops</th><th class=\"num\">ok ops/s</th>\
             <th class=\"num\">p50 (ms)</th><th class=\"num\">p99 (ms)</th>",
        );
    }
    b.push_str("</tr></thead><tbody>");
    for (i, r) in rows.iter().enumerate() {
        b.push_str(&r.table_row(i + 1, kv_columns));
    }
    b.push_str("</tbody></table>");
    if rows.iter().any(|r| r.derived) {
        b.push_str(
            "<p class=\"note\">Where a summary.json lacked a number, it was computed from that \
             run's history.jsonl (latency percentiles by nearest rank over ok operations).</p>",
        );
    }
    b.push_str(swim_figures);
    page("kvlab · comparison", &b)
}

/// One run of a comparison, as the page and the chart show it.
#[derive(Debug, Clone)]
pub(crate) struct ComparisonRow {
    /// Relative (or absolute) link to the run's report.html.
    pub(crate) report_href: String,
    /// The run's id.
    pub(crate) run_id: String,
    /// The experiment's name.
    pub(crate) experiment: String,
    /// System under test.
    pub(crate) system: Option<String>,
    /// Transport.
    pub(crate) transport: Option<String>,
    /// Backend.
    pub(crate) backend: Option<String>,
    /// Seed.
    pub(crate) seed: Option<String>,
    /// What the run measured (`kv, raft-invariants`, `swim`).
    pub(crate) measured: String,
    /// Whether the run measured `kv`: only then are the KV numbers and bars shown.
    pub(crate) kv: bool,
    /// The checker's verdict for a KV run; the run's verdict otherwise.
    pub(crate) verdict: Option<String>,
    /// Liveness result in words.
    pub(crate) liveness: Option<String>,
    /// Ok operations.
    pub(crate) ops_ok: Option<u64>,
    /// Whether any number was computed from the history rather than read from the summary.
    pub(crate) derived: bool,
    /// The bar group of this run.
    pub(crate) bars: ComparedRun,
}

/// The KV numbers of a run in a comparison.
#[derive(Debug, Default)]
struct KvNumbers {
    ops_ok: Option<u64>,
    throughput_ok_per_s: Option<f64>,
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
    /// Whether any was computed from the history rather than read from the summary.
    derived: bool,
}

impl KvNumbers {
    /// Numbers from summary.json, the missing ones from the history.
    fn of(run: &RunData) -> KvNumbers {
        let s = &run.summary;
        let mut derived = false;
        let ok_stats = || {
            stats::ok_latency_by_fn(&run.ops)
                .into_iter()
                .find(|(k, _)| k == "all")
                .map(|(_, st)| st)
        };
        let ops_ok = json_at(s, &["ops", "ok"])
            .and_then(Value::as_u64)
            .or_else(|| {
                derived = true;
                Some(
                    run.ops
                        .iter()
                        .filter(|op| op.outcome == Outcome::Ok)
                        .count() as u64,
                )
            });
        let throughput_ok_per_s = json_f64(s, &["throughput_ok_per_s"]).or_else(|| {
            derived = true;
            let duration_s = json_f64(s, &["duration_s"]).unwrap_or(run.run_end_ns as f64 / 1e9);
            (duration_s > 0.0).then(|| ops_ok.unwrap_or(0) as f64 / duration_s)
        });
        let latency_ms_p50 = json_f64(s, &["latency_ms", "all", "p50"]).or_else(|| {
            derived = true;
            ok_stats().map(|st| st.p50_ms)
        });
        let latency_ms_p99 = json_f64(s, &["latency_ms", "all", "p99"]).or_else(|| {
            derived = true;
            ok_stats().map(|st| st.p99_ms)
        });
        KvNumbers {
            ops_ok,
            throughput_ok_per_s,
            latency_ms_p50,
            latency_ms_p99,
            derived,
        }
    }
}

/// The lines of a run's label under its bar group: `#index` and its label (or system,
/// or id), the system under a label, transport / backend, seed.
fn bar_label_lines(run: &RunData, index: usize) -> Vec<String> {
    let system = summary_or_meta(run, "system");
    let label = json_at(&run.summary, &["label"])
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut label_lines = vec![format!(
        "#{index} {}",
        label
            .clone()
            .or_else(|| system.clone())
            .unwrap_or_else(|| run_id(run))
    )];
    if label.is_some()
        && let Some(system) = &system
    {
        label_lines.push(system.clone());
    }
    let tb: Vec<String> = [
        summary_or_meta(run, "transport"),
        summary_or_meta(run, "backend"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !tb.is_empty() {
        label_lines.push(tb.join(" / "));
    }
    if let Some(seed) = seed_of(run) {
        label_lines.push(format!("seed {seed}"));
    }
    label_lines
}

/// The verdict of a run without a client history (summary.json's `verdict`): `passed`
/// when its checks held — there is no history to call valid.
fn run_verdict(summary: &Value) -> Option<String> {
    json_text(summary, &["verdict"]).map(|v| match v.as_str() {
        "valid" => "passed".to_string(),
        _ => v,
    })
}

impl ComparisonRow {
    /// Reads a run for comparison: numbers from summary.json, the missing ones from the
    /// history, and none at all when the run did not measure `kv`. `index` numbers the
    /// run's bar group (from 1).
    pub(crate) fn of(run: &RunData, index: usize, report_href: String) -> ComparisonRow {
        let s = &run.summary;
        let kv = run.measured.kv;
        let numbers = if kv {
            KvNumbers::of(run)
        } else {
            KvNumbers::default()
        };
        let measured = run.measured.names();
        ComparisonRow {
            report_href,
            run_id: run_id(run),
            experiment: experiment_name(run),
            system: summary_or_meta(run, "system"),
            transport: summary_or_meta(run, "transport"),
            backend: summary_or_meta(run, "backend"),
            seed: seed_of(run),
            measured: if measured.is_empty() {
                "nothing".to_string()
            } else {
                measured.join(", ")
            },
            kv,
            verdict: if kv { verdict_of(s) } else { run_verdict(s) },
            liveness: json_at(s, &["liveness", "ok"])
                .and_then(Value::as_bool)
                .filter(|_| kv)
                .map(|ok| if ok { "converged" } else { "FAILED" }.to_string()),
            ops_ok: numbers.ops_ok,
            derived: numbers.derived,
            bars: ComparedRun {
                label_lines: bar_label_lines(run, index),
                throughput_ok_per_s: numbers.throughput_ok_per_s,
                latency_ms_p50: numbers.latency_ms_p50,
                latency_ms_p99: numbers.latency_ms_p99,
            },
        }
    }

    /// The row of the runs table; `kv_columns` when the table has the KV columns.
    fn table_row(&self, number: usize, kv_columns: bool) -> String {
        let opt = |v: &Option<String>| v.as_deref().map_or("—".to_string(), escape);
        let mut b = format!(
            "<tr><td class=\"num\">{number}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&self.report_href),
            escape(&self.run_id),
            escape(&self.experiment),
            opt(&self.system),
            opt(&self.transport),
            opt(&self.backend),
            opt(&self.seed),
            escape(&self.measured),
            opt(&self.verdict),
        );
        if kv_columns && self.kv {
            let num = |v: Option<f64>| v.map_or("—".to_string(), fmt_num);
            let _ = write!(
                b,
                "<td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
                opt(&self.liveness),
                self.ops_ok.map_or("—".to_string(), fmt_count),
                num(self.bars.throughput_ok_per_s),
                num(self.bars.latency_ms_p50),
                num(self.bars.latency_ms_p99),
            );
        } else if kv_columns {
            b.push_str("<td colspan=\"5\" class=\"note\">no KV workload: not measured</td>");
        }
        b.push_str("</tr>");
        b
    }
}
