//! `report.html` of one run: the banner, the facts, the reproduce command, then a section
//! for each thing the run measured (the checker's verdict, the numbers and plots of a KV
//! workload; Raft's invariants; SWIM's failure detection), the fault timeline, node
//! events, runner notes, the build, and how to read it all.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    escape, experiment_name, fmt_count, fmt_json, fmt_num, json_table, page, run_id, seed_of,
    shell_quote, summary_or_meta, verdict_of,
};
use crate::data::{Measured, Outcome, RunData, json_at, json_f64, json_text};
use crate::plots::RunPlots;
use crate::stats::{self, MAX_LATENCY_POINTS_DRAWN, MAX_THROUGHPUT_BUCKETS};

/// The most runner notes listed in a report; more are counted, not listed.
const MAX_RUNNER_NOTES_LISTED: usize = 200;

/// The most fault periods listed in the fault timeline table; more are counted.
const MAX_FAULTS_LISTED: usize = 500;

/// Builds `report.html` of one run. `kv_plots` are the KV figures, drawn when the run
/// measured `kv`.
pub(crate) fn run_report(run: &RunData, kv_plots: Option<&RunPlots>) -> String {
    let experiment = experiment_name(run);
    let run_id = run_id(run);
    let measured = run.measured;
    let mut b = banner(run);
    let _ = write!(
        b,
        "<h1>{}</h1><p class=\"subtitle\">run <code>{}</code> · directory <code>{}</code></p>",
        escape(&experiment),
        escape(&run_id),
        escape(&run.dir.display().to_string())
    );
    b.push_str(
        "<p><a href=\"timeline.html\">Open the timeline</a> — every operation, fault and node \
         event of the run on one zoomable time axis.</p>",
    );
    b.push_str(&facts_table(run));
    b.push_str(&reproduce_section(run, &experiment));
    if measured.kv || measured.raft_invariants {
        b.push_str(&verdict_section(run));
    }
    if measured.kv {
        b.push_str(&numbers_section(run));
    }
    if measured.swim {
        b.push_str(&crate::swim::swim_section(run));
    }
    if let Some(plots) = kv_plots.filter(|_| measured.kv) {
        b.push_str(&plots_section(plots));
    }
    b.push_str(&crate::ring::ring_section(run));
    b.push_str(&faults_section(run));
    b.push_str(&node_events_section(run));
    b.push_str(&runner_notes_section(run));
    b.push_str(&build_section(run));
    b.push_str(&warnings_section(run));
    b.push_str(&how_to_read(measured));
    page(&format!("kvlab · {experiment} · {run_id}"), &b)
}

/// The banner: the checker's verdict and the liveness result for a KV run; the run's
/// verdict (its property checks) for a run without a client history.
fn banner(run: &RunData) -> String {
    let s = &run.summary;
    let violation = json_text(s, &["invariant_violation"]).filter(|_| run.measured.raft_invariants);
    let (class, word, what, pill) = if run.measured.kv {
        let verdict = verdict_of(s);
        let (class, word) = match &violation {
            Some(_) => ("bad", "INVARIANT VIOLATED".to_string()),
            None => verdict_banner(verdict.as_deref()),
        };
        let (live_class, live_text) = liveness_pill(s);
        let pill = format!(
            "<span class=\"pill {live_class}\">{}</span>",
            escape(&live_text)
        );
        (class, word, "linearizability checker verdict", pill)
    } else {
        let (class, word) = run_verdict_banner(json_text(s, &["verdict"]).as_deref());
        let what = if run.measured.swim {
            "SWIM property checks (the bounds the spec sets)"
        } else {
            "run verdict"
        };
        (class, word, what, String::new())
    };
    format!(
        "<div class=\"banner {class}\"><div class=\"verdict\">{}</div>\
         <div class=\"what\">{what}</div>{pill}</div>",
        escape(&word)
    )
}

/// CSS class and banner word of a checker verdict.
fn verdict_banner(verdict: Option<&str>) -> (&'static str, String) {
    match verdict {
        Some("valid") => ("good", "VALID".to_string()),
        Some("invalid") => ("bad", "INVALID".to_string()),
        Some("unknown") => ("warn", "UNKNOWN".to_string()),
        Some(other) => ("warn", other.to_uppercase()),
        None => ("warn", "NOT CHECKED".to_string()),
    }
}

/// CSS class and banner word of the verdict of a run without a client history
/// (summary.json's `verdict`): there is no history to call valid, only checks that held.
fn run_verdict_banner(verdict: Option<&str>) -> (&'static str, String) {
    match verdict {
        Some("valid") => ("good", "PASSED".to_string()),
        Some(v @ ("property-failed" | "invariant_violated" | "liveness-failed" | "invalid")) => {
            ("bad", v.replace(['-', '_'], " ").to_uppercase())
        }
        Some(other) => ("warn", other.to_uppercase()),
        None => ("warn", "NOT CHECKED".to_string()),
    }
}

/// CSS class and text of the liveness result.
fn liveness_pill(summary: &Value) -> (&'static str, String) {
    match json_at(summary, &["liveness", "ok"]).and_then(Value::as_bool) {
        Some(true) => ("good", "liveness: converged".to_string()),
        Some(false) => ("bad", "liveness: did NOT converge".to_string()),
        None => ("warn", "liveness: not checked".to_string()),
    }
}

/// The facts of the run: system, seed, where it ran, how long, what it measured.
fn facts_table(run: &RunData) -> String {
    let s = &run.summary;
    let measured = run.measured.names();
    let mut facts: Vec<(&str, Option<String>)> = vec![
        ("system", summary_or_meta(run, "system")),
        ("seed", seed_of(run)),
        ("backend", summary_or_meta(run, "backend")),
        ("transport", summary_or_meta(run, "transport")),
        ("nodes", summary_or_meta(run, "nodes")),
        (
            "duration",
            json_f64(s, &["duration_s"]).map(|d| format!("{} s", fmt_num(d))),
        ),
        (
            "wall time",
            json_f64(s, &["wall_time_s"]).map(|d| format!("{} s", fmt_num(d))),
        ),
        (
            "commit",
            json_text(&run.meta, &["commit"]).or_else(|| json_text(s, &["commit"])),
        ),
        (
            "measured",
            Some(if measured.is_empty() {
                "nothing".to_string()
            } else {
                measured.join(", ")
            }),
        ),
    ];
    if run.measured.kv {
        facts.push((
            "history",
            Some(format!("{} operations", fmt_count(run.ops.len() as u64))),
        ));
    }
    let mut b = String::from("<table class=\"kv\">");
    for (k, v) in facts {
        let _ = write!(
            b,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            v.map_or_else(
                || "<span class=\"note\">not recorded</span>".to_string(),
                |v| escape(&v)
            )
        );
    }
    b.push_str("</table>");
    b
}

/// Reproduce: the runner's own command when meta.json has it, else one built from the
/// spec it names (or the resolved spec in the run directory) and the seed.
fn reproduce_section(run: &RunData, experiment: &str) -> String {
    let seed = seed_of(run);
    let seed_arg = shell_quote(seed.as_deref().unwrap_or("SEED"));
    let resolved_spec = run.dir.join("spec.toml");
    let spec = json_text(&run.meta, &["spec_file"]).unwrap_or_else(|| {
        if resolved_spec.is_file() {
            resolved_spec.display().to_string()
        } else {
            format!("configs/{experiment}.toml")
        }
    });
    let mut command = String::new();
    if let Some(commit) = json_text(&run.meta, &["commit"]) {
        let _ = writeln!(command, "git checkout {}", shell_quote(&commit));
    }
    match json_text(&run.meta, &["reproduce"]) {
        Some(reproduce) => command.push_str(&reproduce),
        None => {
            let _ = write!(
                command,
                "kvlab run {} --seed {seed_arg}",
                shell_quote(&spec)
            );
        }
    }
    if resolved_spec.is_file() && !command.contains(&resolved_spec.display().to_string()) {
        let _ = write!(
            command,
            "\n# or from the spec as resolved for this run:\nkvlab run {} --seed {seed_arg}",
            shell_quote(&resolved_spec.display().to_string())
        );
    }
    format!(
        "<h2>Reproduce</h2><pre><code>{}</code></pre><p class=\"note\">One seed decides \
         everything in a simulated run: the same spec, seed and commit give the same history.</p>",
        escape(&command)
    )
}

/// Runner events that are not phases (warnings, cluster start, fault errors).
fn runner_notes_section(run: &RunData) -> String {
    if run.runner_notes.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h2>Runner notes</h2><table><thead><tr><th class=\"num\">time (s)</th><th>kind</th><th>detail</th></tr></thead><tbody>",
    );
    for e in run.runner_notes.iter().take(MAX_RUNNER_NOTES_LISTED) {
        let _ = write!(
            b,
            "<tr><td class=\"num\">{:.3}</td><td>{}</td><td>{}</td></tr>",
            e.time_ns as f64 / 1e9,
            escape(e.kind()),
            escape(&e.detail())
        );
    }
    b.push_str("</tbody></table>");
    if run.runner_notes.len() > MAX_RUNNER_NOTES_LISTED {
        let _ = write!(
            b,
            "<p class=\"note\">{} more not listed (at most {MAX_RUNNER_NOTES_LISTED} are).</p>",
            run.runner_notes.len() - MAX_RUNNER_NOTES_LISTED
        );
    }
    b
}

/// The simulator's counters and meta.json.
fn build_section(run: &RunData) -> String {
    let sim = json_at(&run.summary, &["sim"])
        .map(|v| json_table(v, &[]))
        .unwrap_or_default();
    let meta = json_table(&run.meta, &["commit", "seed", "backend", "transport"]);
    if sim.is_empty() && meta.is_empty() {
        return String::new();
    }
    let mut b = String::from("<h2>Simulator and build</h2><div class=\"grid\">");
    if !sim.is_empty() {
        let _ = write!(b, "<div><h3>simulator (summary.json sim)</h3>{sim}</div>");
    }
    if !meta.is_empty() {
        let _ = write!(b, "<div><h3>meta.json</h3>{meta}</div>");
    }
    b.push_str("</div>");
    b
}

/// What the report found odd about the run directory.
fn warnings_section(run: &RunData) -> String {
    if run.warnings.is_empty() {
        return String::new();
    }
    let mut b = String::from("<h2>Warnings about this run directory</h2><ul>");
    for w in &run.warnings {
        let _ = write!(b, "<li>{}</li>", escape(w));
    }
    b.push_str("</ul>");
    b
}

/// The verdict: the checker's findings on the history (KV runs) and whether Raft's
/// safety invariants held (runs that checked them).
fn verdict_section(run: &RunData) -> String {
    let s = &run.summary;
    let mut b = String::from("<h2>Verdict</h2>");
    if run.measured.raft_invariants {
        b.push_str(&raft_invariants_callout(s));
    }
    if run.measured.kv {
        b.push_str(&checker_findings(run));
        if let Some(liveness) = json_at(s, &["liveness"]) {
            let table = json_table(liveness, &[]);
            if !table.is_empty() {
                let _ = write!(b, "<h3>liveness details</h3>{table}");
            }
        }
    }
    b
}

/// Whether Raft's safety invariants, checked while the run went on, held.
fn raft_invariants_callout(summary: &Value) -> String {
    match json_text(summary, &["invariant_violation"]) {
        Some(violation) => format!(
            "<div class=\"callout\">A Raft safety invariant <b>broke</b> during the run, which \
             stopped there: {}</div>",
            escape(&violation)
        ),
        None => "<div class=\"callout ok\">No Raft safety invariant broke while the runner \
                 checked them (election safety, committed entries never change, log matching, \
                 replicas apply the same sequence).</div>"
            .to_string(),
    }
}

/// Keys of the checker's report named by `field` (`invalid_keys`, `unknown_keys`).
fn checker_keys(summary: &Value, field: &str) -> Vec<String> {
    json_at(summary, &["checker", field])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|k| match k {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Keys as a list of code spans.
fn key_list(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("<code>{}</code>", escape(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The checker's findings: invalid and unknown keys, the link to the visualisation,
/// the checker's details.
fn checker_findings(run: &RunData) -> String {
    let s = &run.summary;
    let verdict = verdict_of(s);
    let invalid = checker_keys(s, "invalid_keys");
    let unknown = checker_keys(s, "unknown_keys");
    let mut b = String::new();
    match verdict.as_deref() {
        Some("valid") => b.push_str(
            "<div class=\"callout ok\">Every key's history is linearizable: each operation can be \
             placed at one instant between its invoke and its completion so that the results \
             match a single copy of the data.</div>",
        ),
        Some("invalid") => {
            let _ = write!(
                b,
                "<div class=\"callout\">The history is <b>not linearizable</b>. {}</div>",
                if invalid.is_empty() {
                    "The checker named no key.".to_string()
                } else {
                    format!("Keys with a violation: {}.", key_list(&invalid))
                }
            );
        }
        Some("unknown") => b.push_str(
            "<div class=\"callout warn\">The checker ran out of budget before deciding: this is \
             <b>not</b> a pass. Shorten the run, lower per-key concurrency, or raise the budget.</div>",
        ),
        _ => b.push_str(
            "<div class=\"callout warn\">summary.json records no checker verdict.</div>",
        ),
    }
    if !unknown.is_empty() {
        let _ = write!(
            b,
            "<p>Keys the checker could not decide: {}.</p>",
            key_list(&unknown)
        );
    }
    b.push_str(&visualisation_link(run, verdict.as_deref(), &invalid));
    if let Some(checker) = json_at(s, &["checker"]) {
        let table = json_table(checker, &["verdict", "invalid_keys", "unknown_keys"]);
        if !table.is_empty() {
            let _ = write!(b, "<h3>checker details</h3>{table}");
        }
    }
    b
}

/// The link to porcupine's visualisation of the failing key, when it was written.
fn visualisation_link(run: &RunData, verdict: Option<&str>, invalid: &[String]) -> String {
    if run.has_linearizability_html() {
        // The runner draws one key: the one it names, else the first invalid key.
        let s = &run.summary;
        let drawn_key = json_text(s, &["checker", "visualized_key"])
            .or_else(|| json_text(s, &["failing_key"]))
            .or_else(|| invalid.first().cloned());
        format!(
            "<p><a href=\"linearizability.html\">Open the linearizability visualisation</a>{} — \
             it shows that key's operations on a timeline and the longest prefix that could be \
             linearized.</p>",
            drawn_key.map_or(String::new(), |k| format!(
                " of key <code>{}</code>",
                escape(&k)
            ))
        )
    } else if verdict == Some("invalid") {
        "<p class=\"note\">No linearizability.html was written for this run.</p>".to_string()
    } else {
        String::new()
    }
}

/// Operations by outcome, throughput and latency percentiles.
fn numbers_section(run: &RunData) -> String {
    let s = &run.summary;
    // Whether any number was computed from the history because the summary lacks it.
    let mut derived = false;
    let mut b =
        String::from("<h2>Numbers</h2><div class=\"grid\"><div><h3>operations by outcome</h3>");
    b.push_str(&outcome_table(run, &mut derived));
    b.push_str(&throughput_line(run, &mut derived));
    if let Some(injected) = json_at(s, &["faults", "injected"]).and_then(Value::as_u64) {
        let _ = write!(b, "<p><b>faults injected:</b> {}</p>", fmt_count(injected));
    }
    b.push_str(&ops_by_fn_table(s));
    b.push_str("</div><div><h3>latency of ok operations (ms)</h3>");
    b.push_str(&latency_table(run, &mut derived));
    if let Some(workload) = json_at(s, &["workload"]) {
        let table = json_table(workload, &[]);
        if !table.is_empty() {
            let _ = write!(b, "<h3>workload</h3>{table}");
        }
    }
    b.push_str("</div></div>");
    if derived {
        b.push_str(
            "<p class=\"note\">summary.json lacks some of these numbers; the missing ones were \
             computed from history.jsonl (latency percentiles by nearest rank over ok operations).</p>",
        );
    }
    b
}

/// Operations in the history with each outcome (indexed like `Outcome::ALL`).
fn outcome_counts(run: &RunData) -> [u64; 3] {
    Outcome::ALL.map(|o| run.ops.iter().filter(|op| op.outcome == o).count() as u64)
}

/// Operations by outcome, from the summary, else counted in the history (and then
/// `derived` is set).
fn outcome_table(run: &RunData, derived: &mut bool) -> String {
    let s = &run.summary;
    let computed = outcome_counts(run);
    let count = |key: &str, fallback: Option<u64>, derived: &mut bool| -> Option<u64> {
        match json_at(s, &["ops", key]).and_then(Value::as_u64) {
            Some(v) => Some(v),
            None => {
                if fallback.is_some() {
                    *derived = true;
                }
                fallback
            }
        }
    };
    let total = count("total", Some(run.ops.len() as u64), derived);
    let mut b = String::from(
        "<table><thead><tr><th>outcome</th><th class=\"num\">operations</th><th class=\"num\">share</th><th>meaning</th></tr></thead><tbody>",
    );
    let meanings = [
        "completed and took effect",
        "surely did not take effect",
        "may or may not have taken effect (timeout, crash, never completed)",
    ];
    for (i, outcome) in Outcome::ALL.iter().enumerate() {
        let n = count(outcome.name(), Some(computed[i]), derived);
        let share = match (n, total) {
            (Some(n), Some(t)) if t > 0 => format!("{:.1}%", 100.0 * n as f64 / t as f64),
            _ => "—".to_string(),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{share}</td><td class=\"note\">{}</td></tr>",
            outcome.name(),
            n.map_or("—".to_string(), fmt_count),
            meanings[i]
        );
    }
    let _ = write!(
        b,
        "<tr><th>total</th><th class=\"num\">{}</th><th></th><th></th></tr>",
        total.map_or("—".to_string(), fmt_count)
    );
    if let Some(dropped) = json_at(s, &["ops", "dropped_saturated"]).and_then(Value::as_u64) {
        let _ = write!(
            b,
            "<tr><td>dropped (saturated)</td><td class=\"num\">{}</td><td></td><td class=\"note\">not issued: every client was busy</td></tr>",
            fmt_count(dropped)
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// Ok operations per second, from the summary, else over the run's duration.
fn throughput_line(run: &RunData, derived: &mut bool) -> String {
    let s = &run.summary;
    let duration_s = json_f64(s, &["duration_s"]).unwrap_or(run.run_end_ns as f64 / 1e9);
    let throughput = json_f64(s, &["throughput_ok_per_s"]).or_else(|| {
        *derived = true;
        (duration_s > 0.0).then(|| outcome_counts(run)[0] as f64 / duration_s)
    });
    format!(
        "<p><b>throughput:</b> {} ok operations per second</p>",
        throughput.map_or("—".to_string(), fmt_num)
    )
}

/// Operations by op type and outcome (summary.json's `ops_by_f`), if recorded.
fn ops_by_fn_table(summary: &Value) -> String {
    let Some(Value::Object(by_fn)) = json_at(summary, &["ops_by_f"]) else {
        return String::new();
    };
    let mut b = String::from(
        "<h3>operations by op type</h3><table><thead><tr><th>op type</th><th class=\"num\">total</th><th class=\"num\">ok</th><th class=\"num\">fail</th><th class=\"num\">info</th></tr></thead><tbody>",
    );
    for (f, counts) in by_fn {
        let _ = write!(b, "<tr><td>{}</td>", escape(f));
        for key in ["total", "ok", "fail", "info"] {
            let cell = json_at(counts, &[key]).map_or("—".to_string(), fmt_json);
            let _ = write!(b, "<td class=\"num\">{cell}</td>");
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table>");
    b
}

/// Latency percentiles by op type: count, p50, p90, p99, max.
type LatencyRow = (String, [Option<f64>; 5]);

/// Latency percentiles of ok operations by op type, from the summary, else computed
/// from the history (and then `derived` is set).
fn latency_rows(run: &RunData, derived: &mut bool) -> Vec<LatencyRow> {
    let mut rows = Vec::new();
    if let Some(Value::Object(by_fn)) = json_at(&run.summary, &["latency_ms"]) {
        let order = ["all", "read", "write", "cas", "delete", "txn"];
        let mut keys: Vec<&String> = by_fn.keys().collect();
        keys.sort_by_key(|k| {
            (
                order.iter().position(|o| o == k).unwrap_or(order.len()),
                (*k).clone(),
            )
        });
        for k in keys {
            let v = &by_fn[k];
            let get = |f: &str| json_f64(v, &[f]);
            rows.push((
                k.clone(),
                [get("count"), get("p50"), get("p90"), get("p99"), get("max")],
            ));
        }
    } else {
        *derived = *derived || !run.ops.is_empty();
        for (k, st) in stats::ok_latency_by_fn(&run.ops) {
            rows.push((
                k,
                [
                    Some(st.count as f64),
                    Some(st.p50_ms),
                    Some(st.p90_ms),
                    Some(st.p99_ms),
                    Some(st.max_ms),
                ],
            ));
        }
    }
    rows
}

/// The latency table of ok operations.
fn latency_table(run: &RunData, derived: &mut bool) -> String {
    let rows = latency_rows(run, derived);
    let mut b = String::from(
        "<table><thead><tr><th>op type</th><th class=\"num\">count</th><th class=\"num\">p50</th><th class=\"num\">p90</th><th class=\"num\">p99</th><th class=\"num\">max</th></tr></thead><tbody>",
    );
    for (k, cells) in &rows {
        let _ = write!(b, "<tr><td>{}</td>", escape(k));
        for (i, c) in cells.iter().enumerate() {
            let text = match c {
                None => "—".to_string(),
                Some(v) if i == 0 => fmt_count(v.max(0.0) as u64),
                Some(v) => fmt_num(*v),
            };
            let _ = write!(b, "<td class=\"num\">{text}</td>");
        }
        b.push_str("</tr>");
    }
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"note\">no ok operations</td></tr>");
    }
    b.push_str("</tbody></table>");
    b
}

/// The figures with captions.
fn plots_section(plots: &RunPlots) -> String {
    let downsampled = if plots.downsampled {
        format!(
            " <b>Downsampled:</b> {} operations are drawn (the bound is {MAX_LATENCY_POINTS_DRAWN}); \
             every info and the slowest operation of each time slice are kept; ok and fail \
             operations are thinned alike, so their proportions hold.",
            fmt_count(plots.latency_points_drawn as u64)
        )
    } else {
        String::new()
    };
    let scale = if plots.latency_log_scale {
        " The latency axis is logarithmic because latencies span more than a factor of 50."
    } else {
        ""
    };
    let figure = |stem: &str, alt: &str, caption: &str| {
        format!(
            "<figure><a href=\"plots/{stem}.svg\"><img src=\"plots/{stem}.png\" alt=\"{}\"></a>\
             <figcaption>{caption} <a href=\"plots/{stem}.svg\">SVG</a> · <a href=\"plots/{stem}.png\">PNG</a></figcaption></figure>",
            escape(alt)
        )
    };
    let mut b = String::from("<h2>Plots</h2>");
    b.push_str(&figure(
        "latency",
        "latency of each operation over time",
        &format!(
            "Each mark is one operation: where it started (x) and how long it took (y). Colour is \
             the outcome, shape the op type. Shaded bands are fault periods (named in the legend), \
             green the liveness phase. Operations that never completed are drawn at the end of the \
             run.{scale}{downsampled}"
        ),
    ));
    b.push_str(&figure(
        "throughput",
        "completed operations per second over time",
        &format!(
            "Operations completed per second, counted in {} s buckets (at most \
             {MAX_THROUGHPUT_BUCKETS} buckets), one line per outcome, with the same shading. A dip \
             to zero during a fault is unavailability; it should recover after the fault ends.",
            fmt_num(plots.throughput_bucket_s)
        ),
    ));
    b.push_str(&figure(
        "latency-cdf",
        "latency distribution of ok operations per op type",
        "The share of ok operations (y) that completed within a latency (x, log scale), per op \
         type. The guide lines mark p50, p90 and p99.",
    ));
    b
}

/// The fault timeline table.
fn faults_section(run: &RunData) -> String {
    let mut b = String::from("<h2>Fault timeline</h2>");
    if run.faults.is_empty() {
        if let Some(by_kind) = json_at(&run.summary, &["faults", "by_kind"]) {
            let table = json_table(by_kind, &[]);
            if !table.is_empty() {
                let _ = write!(b, "<p>Faults by kind (from summary.json):</p>{table}");
                return b;
            }
        }
        b.push_str(if run.has_events_file {
            "<p>No faults were injected in this run.</p>"
        } else {
            "<p>events.jsonl is missing, so the fault timeline is unknown.</p>"
        });
        return b;
    }
    b.push_str(
        "<table><thead><tr><th class=\"num\">id</th><th>fault</th><th class=\"num\">start (s)</th>\
         <th class=\"num\">end (s)</th><th class=\"num\">duration (s)</th><th>node</th><th>detail</th></tr></thead><tbody>",
    );
    for f in run.faults.iter().take(MAX_FAULTS_LISTED) {
        let end = f.end_ns.map_or("never healed".to_string(), |e| {
            format!("{:.3}", e as f64 / 1e9)
        });
        let duration = f.end_ns.map_or("—".to_string(), |e| {
            format!("{:.3}", e.saturating_sub(f.start_ns) as f64 / 1e9)
        });
        let detail = match &f.detail_end {
            Some(end) if !end.is_empty() => format!("{} → {}", f.detail_start, end),
            _ => f.detail_start.clone(),
        };
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            f.fault_id.map_or("—".to_string(), |id| id.to_string()),
            escape(&f.fault),
            f.start_ns as f64 / 1e9,
            escape(&end),
            duration,
            f.node.map_or("—".to_string(), |n| format!("n{n}")),
            escape(&detail)
        );
    }
    b.push_str("</tbody></table>");
    if run.faults.len() > MAX_FAULTS_LISTED {
        let _ = write!(
            b,
            "<p class=\"note\">{} more faults not listed (at most {MAX_FAULTS_LISTED} are).</p>",
            run.faults.len() - MAX_FAULTS_LISTED
        );
    }
    b
}

/// Counts of node events by kind and node.
fn node_events_section(run: &RunData) -> String {
    let mut b = String::from("<h2>Node events</h2>");
    if run.node_event_counts.is_empty() {
        if let Some(v) = json_at(&run.summary, &["node_events"]) {
            let table = json_table(v, &[]);
            if !table.is_empty() {
                let _ = write!(b, "<p>From summary.json:</p>{table}");
                return b;
            }
        }
        b.push_str("<p>No node reported an event.</p>");
        return b;
    }
    b.push_str("<table><thead><tr><th>event</th><th class=\"num\">count</th><th>by node</th></tr></thead><tbody>");
    for (kind, by_node) in &run.node_event_counts {
        let total: u64 = by_node.values().sum();
        let per_node = by_node
            .iter()
            .map(|(node, n)| match node {
                Some(node) => format!("n{node}: {n}"),
                None => format!("(no node): {n}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(kind),
            fmt_count(total),
            escape(&per_node)
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// The paragraph on a KV run for a student opening a report for the first time.
const HOW_TO_READ_KV: &str =
    "<p>kvlab ran a workload of client operations against the cluster while a <i>nemesis</i>
injected faults (network partitions, crashes, pauses), then healed everything and ran a
<i>liveness phase</i> in which the cluster must recover. Every client operation was recorded
in <code>history.jsonl</code> as an <i>invoke</i> and a completion: <b>ok</b> (it happened),
<b>fail</b> (it surely did not) or <b>info</b> (unknown: a timeout or a crash — it may have
happened). The <b>banner</b> is the linearizability checker's verdict on that history:
<b>valid</b> means the results are what one single, non-replicated copy of the data could have
produced; <b>invalid</b> means some client saw something impossible (a lost write, a stale
read) and the linked visualisation shows where; <b>unknown</b> means the checker ran out of
budget and proved nothing. The liveness pill says whether the cluster served requests again
after the faults ended. In the plots, look at what happens inside the shaded fault periods:
latency rising to the client timeout and throughput dropping are expected while a majority is
unreachable; they should come back after the band ends. Failures and infos are not bugs in
themselves — only a wrong answer (an invalid verdict) or no recovery (failed liveness) is.
To replay this exact run, use the command under <i>Reproduce</i>.</p>";

/// The paragraph on a SWIM run for a student opening a report for the first time.
const HOW_TO_READ_SWIM: &str = "<p>kvlab ran SWIM members alone — no clients, no key-value
workload, so there is no history to check — while a <i>nemesis</i> crashed (and perhaps
restarted) members, slowed some or dropped messages. SWIM's job is to notice: a member that
misses its probes is <i>suspected</i>, then declared <i>dead</i> unless it refutes the
suspicion with a higher incarnation number. The <b>banner</b> says whether every bound the spec
sets held (detection time, false positives). In the SWIM table, <b>first suspicion</b> is how
long after a crash someone first suspected the crashed member (the SWIM paper's expected mean
is shown next to it), <b>dead everywhere</b> how long until every live member declared it dead,
and a <b>false positive</b> is a live member declared dead — the mistake Lifeguard exists to
avoid. The detection figure shows those times per crash as distributions; the timeline shows
suspicions, deaths and refutations over the run, with crashes shaded. To replay this exact run,
use the command under <i>Reproduce</i>.</p>";

/// How to read this report, for what the run measured.
fn how_to_read(measured: Measured) -> String {
    let mut b = String::new();
    if measured.kv {
        b.push_str(HOW_TO_READ_KV);
    }
    if measured.swim {
        b.push_str(HOW_TO_READ_SWIM);
    }
    if b.is_empty() {
        return b;
    }
    format!("<h2>How to read this report</h2>\n{b}")
}
