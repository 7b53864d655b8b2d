//! The HTML pages: `report.html` of one run and `compare.html` of several. Self-contained
//! (inline CSS, no scripts, nothing fetched from the internet); images are referenced
//! relatively. Every piece of text that comes from a run directory is escaped.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::data::{Outcome, RunData, json_at, json_f64, json_text};
use crate::plots::{ComparedRun, RunPlots};
use crate::stats::{self, MAX_LATENCY_POINTS_DRAWN, MAX_THROUGHPUT_BUCKETS};

/// The most runner notes listed in a report; more are counted, not listed.
const MAX_RUNNER_NOTES_LISTED: usize = 200;

/// The most fault periods listed in the fault timeline table; more are counted.
const MAX_FAULTS_LISTED: usize = 500;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The experiment's name: from summary.json, else meta.json, else the run directory's
/// parent directory name (`results/<experiment>/<run-id>`).
pub(crate) fn experiment_name(run: &RunData) -> String {
    json_text(&run.summary, &["experiment"])
        .or_else(|| json_text(&run.meta, &["experiment"]))
        .or_else(|| {
            run.dir
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "experiment".to_string())
}

/// The run's id: from summary.json, else the run directory's name.
fn run_id(run: &RunData) -> String {
    json_text(&run.summary, &["run_id"])
        .or_else(|| {
            run.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "run".to_string())
}

/// The run's seed: from summary.json, else meta.json.
pub(crate) fn seed_of(run: &RunData) -> Option<String> {
    json_text(&run.summary, &["seed"]).or_else(|| json_text(&run.meta, &["seed"]))
}

/// A field from summary.json, else meta.json.
fn summary_or_meta(run: &RunData, key: &str) -> Option<String> {
    json_text(&run.summary, &[key]).or_else(|| json_text(&run.meta, &[key]))
}

/// The checker verdict as written in summary.json (`valid`, `invalid`, `unknown`), or
/// `None` when the summary has none.
fn verdict_of(summary: &Value) -> Option<String> {
    json_text(summary, &["checker", "verdict"])
}

/// CSS class and banner word of a verdict.
fn verdict_banner(verdict: Option<&str>) -> (&'static str, String) {
    match verdict {
        Some("valid") => ("good", "VALID".to_string()),
        Some("invalid") => ("bad", "INVALID".to_string()),
        Some("unknown") => ("warn", "UNKNOWN".to_string()),
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

/// Formats a count with thousands separators.
pub(crate) fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a number with a precision that suits its size.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        fmt_count(v.round() as u64)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Formats a loose JSON scalar for a table cell (escaped).
fn fmt_json(v: &Value) -> String {
    match v {
        Value::Null => "—".to_string(),
        Value::String(s) => escape(s),
        Value::Array(items) if items.is_empty() => "none".to_string(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(fmt_json).collect::<Vec<_>>().join("; ")
        }
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => fmt_count(u),
            (None, Some(f)) => fmt_num(f),
            (None, None) => escape(&n.to_string()),
        },
        other => escape(&other.to_string()),
    }
}

/// Flattens a JSON object into (dotted key, value) rows, in key order.
fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, &map[k], rows);
            }
        }
        other => rows.push((prefix.to_string(), other.clone())),
    }
}

/// Whether a JSON value is an object of objects of scalars (say, counters per node), which
/// reads better as a matrix than as dotted keys.
fn is_matrix(v: &Value) -> bool {
    v.as_object().is_some_and(|outer| {
        !outer.is_empty()
            && outer.values().all(|inner| {
                inner
                    .as_object()
                    .is_some_and(|m| m.values().all(|x| !x.is_object() && !x.is_array()))
            })
    })
}

/// A matrix table of an object of objects: one column per outer key, one row per inner
/// key (the union, in order).
fn json_matrix(name: &str, v: &Value) -> String {
    let Some(outer) = v.as_object() else {
        return String::new();
    };
    let mut columns: Vec<&String> = outer.keys().collect();
    columns.sort_by_key(|k| (k.parse::<u64>().unwrap_or(u64::MAX), (*k).clone()));
    let mut rows: Vec<&String> = outer
        .values()
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys())
        .collect();
    rows.sort();
    rows.dedup();
    let mut html = format!("<table><thead><tr><th>{}</th>", escape(name));
    for c in &columns {
        let _ = write!(html, "<th class=\"num\">{}</th>", escape(c));
    }
    html.push_str("</tr></thead><tbody>");
    for r in rows {
        let _ = write!(html, "<tr><th>{}</th>", escape(r));
        for c in &columns {
            let cell = outer[c.as_str()]
                .get(r.as_str())
                .map_or("—".to_string(), fmt_json);
            let _ = write!(html, "<td class=\"num\">{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

/// A two-column key/value table of a JSON object, leaving out `skip` top-level keys;
/// members that are objects of objects follow as matrices.
fn json_table(v: &Value, skip: &[&str]) -> String {
    let mut rows = Vec::new();
    let mut matrices = String::new();
    if let Value::Object(map) = v {
        let mut keys: Vec<&String> = map.keys().filter(|k| !skip.contains(&k.as_str())).collect();
        keys.sort();
        for k in keys {
            if is_matrix(&map[k]) {
                matrices.push_str(&json_matrix(k, &map[k]));
            } else {
                flatten(k, &map[k], &mut rows);
            }
        }
    }
    if rows.is_empty() {
        return matrices;
    }
    let mut html = String::from("<table class=\"kv\">");
    for (k, v) in rows {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&k),
            fmt_json(&v)
        );
    }
    html.push_str("</table>");
    html.push_str(&matrices);
    html
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain && !word.is_empty() {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The page skeleton around `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n{}\n</main>\n</body>\n</html>\n",
        escape(title),
        CSS,
        body
    )
}

/// The style sheet of both pages.
const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;background:#f6f7f9;color:#1d232b;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:0 24px 48px}
h1{margin:18px 0 2px;font-size:1.8em}
h2{margin:34px 0 10px;padding-bottom:4px;border-bottom:2px solid #dde1e6;font-size:1.3em}
.subtitle{color:#5a6472;margin:0 0 14px}
.banner{margin:0 -24px;padding:22px 24px;color:#fff;display:flex;align-items:center;gap:22px;flex-wrap:wrap}
.banner.good{background:#1e8e3e}.banner.bad{background:#c5221f}.banner.warn{background:#e37400}
.banner .verdict{font-size:2.6em;font-weight:800;letter-spacing:.04em}
.banner .what{font-size:1.05em;opacity:.95}
.pill{display:inline-block;padding:4px 12px;border-radius:999px;font-weight:600;border:2px solid #fff}
.pill.good{background:#137333}.pill.bad{background:#a50e0e}.pill.warn{background:#b06000}
table{border-collapse:collapse;background:#fff;margin:6px 0 14px;font-size:.95em}
th,td{border:1px solid #dde1e6;padding:5px 10px;text-align:left;vertical-align:top}
thead th{background:#eef1f4}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{background:#f3f5f7;font-weight:600}
pre{background:#1d232b;color:#e8eaed;padding:12px 14px;border-radius:6px;overflow-x:auto}
code{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace}
figure{margin:14px 0 26px;background:#fff;border:1px solid #dde1e6;padding:10px}
figure img{max-width:100%;height:auto;display:block}
figcaption{color:#3c4450;margin-top:6px;font-size:.95em}
.note{color:#5a6472;font-size:.92em}
.callout{background:#fff;border-left:5px solid #c5221f;padding:10px 14px;margin:10px 0}
.callout.ok{border-left-color:#1e8e3e}.callout.warn{border-left-color:#e37400}
.grid{display:flex;gap:24px;flex-wrap:wrap}
";

/// Builds `report.html` of one run.
pub(crate) fn run_report(run: &RunData, plots: &RunPlots) -> String {
    let s = &run.summary;
    let experiment = experiment_name(run);
    let run_id = run_id(run);
    let seed = seed_of(run);
    let verdict = verdict_of(s);
    let (verdict_class, verdict_word) = verdict_banner(verdict.as_deref());
    let (live_class, live_text) = liveness_pill(s);
    let mut b = String::new();

    // Banner.
    let _ = write!(
        b,
        "<div class=\"banner {verdict_class}\"><div class=\"verdict\">{}</div>\
         <div class=\"what\">linearizability checker verdict</div>\
         <span class=\"pill {live_class}\">{}</span></div>",
        escape(&verdict_word),
        escape(&live_text)
    );
    let _ = write!(
        b,
        "<h1>{}</h1><p class=\"subtitle\">run <code>{}</code> · directory <code>{}</code></p>",
        escape(&experiment),
        escape(&run_id),
        escape(&run.dir.display().to_string())
    );

    // Facts.
    b.push_str("<table class=\"kv\">");
    let facts: [(&str, Option<String>); 9] = [
        ("system", summary_or_meta(run, "system")),
        ("seed", seed.clone()),
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
            "history",
            Some(format!("{} operations", fmt_count(run.ops.len() as u64))),
        ),
    ];
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

    // Reproduce: the runner's own command when meta.json has it, else one built from the
    // spec it names (or the resolved spec in the run directory) and the seed.
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
    b.push_str("<h2>Reproduce</h2>");
    let _ = write!(
        b,
        "<pre><code>{}</code></pre><p class=\"note\">One seed decides everything in a simulated run: \
         the same spec, seed and commit give the same history.</p>",
        escape(&command)
    );

    b.push_str(&verdict_section(run, verdict.as_deref()));
    b.push_str(&numbers_section(run));
    b.push_str(&plots_section(plots));
    b.push_str(&faults_section(run));
    b.push_str(&node_events_section(run));

    if !run.runner_notes.is_empty() {
        b.push_str("<h2>Runner notes</h2><table><thead><tr><th class=\"num\">time (s)</th><th>kind</th><th>detail</th></tr></thead><tbody>");
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
    }

    let sim = json_at(s, &["sim"])
        .map(|v| json_table(v, &[]))
        .unwrap_or_default();
    let meta = json_table(&run.meta, &["commit", "seed", "backend", "transport"]);
    if !sim.is_empty() || !meta.is_empty() {
        b.push_str("<h2>Simulator and build</h2><div class=\"grid\">");
        if !sim.is_empty() {
            let _ = write!(b, "<div><h3>simulator (summary.json sim)</h3>{sim}</div>");
        }
        if !meta.is_empty() {
            let _ = write!(b, "<div><h3>meta.json</h3>{meta}</div>");
        }
        b.push_str("</div>");
    }

    if !run.warnings.is_empty() {
        b.push_str("<h2>Warnings about this run directory</h2><ul>");
        for w in &run.warnings {
            let _ = write!(b, "<li>{}</li>", escape(w));
        }
        b.push_str("</ul>");
    }

    b.push_str(HOW_TO_READ);
    page(&format!("kvlab · {experiment} · {run_id}"), &b)
}

/// The checker's findings: invalid and unknown keys, the link to the visualisation.
fn verdict_section(run: &RunData, verdict: Option<&str>) -> String {
    let s = &run.summary;
    let mut b = String::from("<h2>Verdict</h2>");
    let keys = |field: &str| -> Vec<String> {
        json_at(s, &["checker", field])
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
    };
    let invalid = keys("invalid_keys");
    let unknown = keys("unknown_keys");
    let list = |keys: &[String]| {
        keys.iter()
            .map(|k| format!("<code>{}</code>", escape(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match verdict {
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
                    format!("Keys with a violation: {}.", list(&invalid))
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
            list(&unknown)
        );
    }
    if run.has_linearizability_html() {
        // The runner draws one key: the one it names, else the first invalid key.
        let drawn_key = json_text(s, &["checker", "visualized_key"])
            .or_else(|| json_text(s, &["failing_key"]))
            .or_else(|| invalid.first().cloned());
        let _ = write!(
            b,
            "<p><a href=\"linearizability.html\">Open the linearizability visualisation</a>{} — \
             it shows that key's operations on a timeline and the longest prefix that could be \
             linearized.</p>",
            drawn_key.map_or(String::new(), |k| format!(
                " of key <code>{}</code>",
                escape(&k)
            ))
        );
    } else if verdict == Some("invalid") {
        b.push_str("<p class=\"note\">No linearizability.html was written for this run.</p>");
    }
    if let Some(checker) = json_at(s, &["checker"]) {
        let table = json_table(checker, &["verdict", "invalid_keys", "unknown_keys"]);
        if !table.is_empty() {
            let _ = write!(b, "<h3>checker details</h3>{table}");
        }
    }
    if let Some(liveness) = json_at(s, &["liveness"]) {
        let table = json_table(liveness, &[]);
        if !table.is_empty() {
            let _ = write!(b, "<h3>liveness details</h3>{table}");
        }
    }
    b
}

/// Operations by outcome, throughput and latency percentiles.
fn numbers_section(run: &RunData) -> String {
    let s = &run.summary;
    let mut b =
        String::from("<h2>Numbers</h2><div class=\"grid\"><div><h3>operations by outcome</h3>");
    let mut derived = false;
    let computed: Vec<u64> = Outcome::ALL
        .iter()
        .map(|o| run.ops.iter().filter(|op| op.outcome == *o).count() as u64)
        .collect();
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
    let total = count("total", Some(run.ops.len() as u64), &mut derived);
    b.push_str("<table><thead><tr><th>outcome</th><th class=\"num\">operations</th><th class=\"num\">share</th><th>meaning</th></tr></thead><tbody>");
    let meanings = [
        "completed and took effect",
        "surely did not take effect",
        "may or may not have taken effect (timeout, crash, never completed)",
    ];
    for (i, outcome) in Outcome::ALL.iter().enumerate() {
        let n = count(outcome.name(), Some(computed[i]), &mut derived);
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

    let duration_s = json_f64(s, &["duration_s"]).unwrap_or(run.run_end_ns as f64 / 1e9);
    let throughput = json_f64(s, &["throughput_ok_per_s"]).or_else(|| {
        derived = true;
        (duration_s > 0.0).then(|| computed[0] as f64 / duration_s)
    });
    let _ = write!(
        b,
        "<p><b>throughput:</b> {} ok operations per second</p>",
        throughput.map_or("—".to_string(), fmt_num)
    );
    if let Some(injected) = json_at(s, &["faults", "injected"]).and_then(Value::as_u64) {
        let _ = write!(b, "<p><b>faults injected:</b> {}</p>", fmt_count(injected));
    }
    if let Some(Value::Object(by_fn)) = json_at(s, &["ops_by_f"]) {
        b.push_str("<h3>operations by op type</h3><table><thead><tr><th>op type</th><th class=\"num\">total</th><th class=\"num\">ok</th><th class=\"num\">fail</th><th class=\"num\">info</th></tr></thead><tbody>");
        for (f, counts) in by_fn {
            let _ = write!(b, "<tr><td>{}</td>", escape(f));
            for key in ["total", "ok", "fail", "info"] {
                let cell = json_at(counts, &[key]).map_or("—".to_string(), fmt_json);
                let _ = write!(b, "<td class=\"num\">{cell}</td>");
            }
            b.push_str("</tr>");
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</div><div><h3>latency of ok operations (ms)</h3>");
    b.push_str("<table><thead><tr><th>op type</th><th class=\"num\">count</th><th class=\"num\">p50</th><th class=\"num\">p90</th><th class=\"num\">p99</th><th class=\"num\">max</th></tr></thead><tbody>");
    let mut rows: Vec<(String, [Option<f64>; 5])> = Vec::new();
    if let Some(Value::Object(by_fn)) = json_at(s, &["latency_ms"]) {
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
        derived = derived || !run.ops.is_empty();
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

/// The paragraph for a student opening a report for the first time.
const HOW_TO_READ: &str = "<h2>How to read this report</h2>
<p>kvlab ran a workload of client operations against the cluster while a <i>nemesis</i>
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

/// Builds `compare.html`: a table of the runs and the comparison chart.
pub(crate) fn comparison_page(rows: &[ComparisonRow]) -> String {
    let mut b = String::from("<h1>kvlab · comparison of runs</h1>");
    let _ = write!(
        b,
        "<p class=\"subtitle\">{} runs. Bars are labelled by the number in the first column.</p>",
        rows.len()
    );
    b.push_str(
        "<figure><a href=\"comparison.svg\"><img src=\"comparison.png\" alt=\"throughput and latency per run\"></a>\
         <figcaption>Top: ok operations per second. Bottom: median (p50) and 99th percentile (p99) latency \
         of ok operations. <a href=\"comparison.svg\">SVG</a> · <a href=\"comparison.png\">PNG</a></figcaption></figure>",
    );
    b.push_str(
        "<table><thead><tr><th class=\"num\">#</th><th>run</th><th>experiment</th><th>system</th><th>transport</th>\
         <th>backend</th><th>seed</th><th>verdict</th><th>liveness</th><th class=\"num\">ok ops</th>\
         <th class=\"num\">ok ops/s</th><th class=\"num\">p50 (ms)</th><th class=\"num\">p99 (ms)</th></tr></thead><tbody>",
    );
    for (i, r) in rows.iter().enumerate() {
        let opt = |v: &Option<String>| v.as_deref().map_or("—".to_string(), escape);
        let num = |v: Option<f64>| v.map_or("—".to_string(), fmt_num);
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            i + 1,
            escape(&r.report_href),
            escape(&r.run_id),
            escape(&r.experiment),
            opt(&r.system),
            opt(&r.transport),
            opt(&r.backend),
            opt(&r.seed),
            opt(&r.verdict),
            opt(&r.liveness),
            r.ops_ok.map_or("—".to_string(), fmt_count),
            num(r.bars.throughput_ok_per_s),
            num(r.bars.latency_ms_p50),
            num(r.bars.latency_ms_p99),
        );
    }
    b.push_str("</tbody></table>");
    if rows.iter().any(|r| r.derived) {
        b.push_str(
            "<p class=\"note\">Where a summary.json lacked a number, it was computed from that \
             run's history.jsonl (latency percentiles by nearest rank over ok operations).</p>",
        );
    }
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
    /// Checker verdict.
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

impl ComparisonRow {
    /// Reads a run for comparison: numbers from summary.json, the missing ones from the
    /// history. `index` numbers the run's bar group (from 1).
    pub(crate) fn of(run: &RunData, index: usize, report_href: String) -> ComparisonRow {
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
        let system = summary_or_meta(run, "system");
        let transport = summary_or_meta(run, "transport");
        let backend = summary_or_meta(run, "backend");
        let seed = seed_of(run);
        let label = json_at(s, &["label"])
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
        let tb: Vec<String> = [transport.clone(), backend.clone()]
            .into_iter()
            .flatten()
            .collect();
        if !tb.is_empty() {
            label_lines.push(tb.join(" / "));
        }
        if let Some(seed) = &seed {
            label_lines.push(format!("seed {seed}"));
        }
        ComparisonRow {
            report_href,
            run_id: run_id(run),
            experiment: experiment_name(run),
            system,
            transport,
            backend,
            seed,
            verdict: verdict_of(s),
            liveness: json_at(s, &["liveness", "ok"])
                .and_then(Value::as_bool)
                .map(|ok| if ok { "converged" } else { "FAILED" }.to_string()),
            ops_ok,
            derived,
            bars: ComparedRun {
                label_lines,
                throughput_ok_per_s,
                latency_ms_p50,
                latency_ms_p99,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1_000), "1,000");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
    }

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("results/a-b/spec.toml"),
            "results/a-b/spec.toml"
        );
        assert_eq!(shell_quote("my dir/it's"), r"'my dir/it'\''s'");
    }
}
