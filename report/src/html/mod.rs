//! The HTML pages: `report.html` of one run and `compare.html` of several. Self-contained
//! (inline CSS, no scripts, nothing fetched from the internet); images are referenced
//! relatively. Every piece of text that comes from a run directory is escaped.

//!
//! This module has what both pages share: escaping, number formats, tables of loose
//! JSON, the page skeleton and its style sheet.

mod compare_page;
mod run_page;

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::data::{RunData, json_text};

pub(crate) use compare_page::{ComparisonRow, comparison_page};
pub(crate) use run_page::run_report;

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
pub(crate) fn run_id(run: &RunData) -> String {
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
pub(crate) fn summary_or_meta(run: &RunData, key: &str) -> Option<String> {
    json_text(&run.summary, &[key]).or_else(|| json_text(&run.meta, &[key]))
}

/// The checker verdict as written in summary.json (`valid`, `invalid`, `unknown`), or
/// `None` when the summary has none.
pub(crate) fn verdict_of(summary: &Value) -> Option<String> {
    json_text(summary, &["checker", "verdict"])
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
pub(crate) fn fmt_num(v: f64) -> String {
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
pub(crate) fn fmt_json(v: &Value) -> String {
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
pub(crate) fn json_table(v: &Value, skip: &[&str]) -> String {
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
pub(crate) fn shell_quote(word: &str) -> String {
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
pub(crate) fn page(title: &str, body: &str) -> String {
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
