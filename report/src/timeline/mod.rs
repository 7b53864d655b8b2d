//! `timeline.html` of one run, as Jepsen's timeline: one lane per client process with
//! each operation a bar from invoke to completion coloured by outcome, the fault periods
//! and node events on the same time axis, zoomable, and the failing key's operations
//! highlighted when the checker found the history not linearizable.
//!
//! The page is self-contained (inline script and style, nothing fetched) and draws on a
//! `<canvas>` only what the visible window holds, so a 30,000-operation history stays
//! usable. Its data is embedded once as JSON in `<script type="application/json"
//! id="timeline-data">` with every time an integer of microseconds since the start of
//! the run:
//!
//! * `processes[i]` is the process of lane `i`, `ops[i]` that lane's operations in
//!   invoke order, `stride` ([`OP_STRIDE`]) numbers each: invoke, completion − invoke (`-1`: never
//!   completed, drawn to `end_us`), outcome (0 ok, 1 fail, 2 info), `fns` index, `keys`
//!   index (`-1`: none), node (`-1`: none), `errors` index (`-1`: none), and the value
//!   (the completion's when it has one, else the invoke's; any JSON);
//! * `rows[i]` is the row lane `i` is drawn in: a client whose operation ended `info`
//!   continues as a new process, and processes whose lifetimes do not overlap share a row;
//! * `faults`: `[start, end or -1 (never healed), fault_kinds index, node or -1, detail]`;
//! * `nodes`: every node a fault, a node event or an operation names, one lane each;
//! * `node_events`: `[time, nodes index, event_kinds index, detail]` for the events in
//!   [`NODE_EVENT_CATEGORIES`] (leaders, node life, membership, replicas); a fault aimed at
//!   one node (a crash, a pause, an isolation) also shades that node's lane;
//! * `phases`: `[start, name]` of the runner's phases;
//! * `verdict`, `invalid_keys`, `highlight_key` (the key drawn highlighted: the one the
//!   checker visualised, else the first invalid key; `null` when the history is valid),
//!   `evidence` (per invalid key, `[lane, position]` of the operations the checker named
//!   as proof) and `explanations` (the checker's sentence per invalid key).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::data::{Op, Outcome, RunData, json_at, json_text};
use crate::html::{escape, experiment_name, run_id, verdict_of};

/// Numbers per operation in a lane of the embedded data.
pub(crate) const OP_STRIDE: usize = 8;

/// The node events drawn in the node lanes, with their category (which colours them).
/// Other node events (elections started, followers, operators, refused messages) are
/// too many to read on a timeline and are left out.
pub(crate) const NODE_EVENT_CATEGORIES: &[(&str, &str)] = &[
    ("leader_elected", "leader"),
    ("raft_leader_lost_quorum", "leader"),
    ("raft_leader_removed", "leader"),
    ("node_started", "life"),
    ("recovery_failed", "life"),
    ("storage_error", "life"),
    ("config_changed", "membership"),
    ("config_committed", "membership"),
    ("node_removed", "membership"),
    ("member_joined", "membership"),
    ("member_suspect", "membership"),
    ("member_alive", "membership"),
    ("member_dead", "membership"),
    ("member_left", "membership"),
    ("ring_node_state", "membership"),
    ("replica_created", "replica"),
    ("replica_destroyed", "replica"),
];

/// The script that draws the page.
const SCRIPT: &str = include_str!("../html/timeline.js");
/// The page's style sheet.
const STYLE: &str = include_str!("../html/timeline.css");

/// Strings numbered in order of first use.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Interner {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }
}

/// The operations grouped into one lane per process, lanes in order of first invoke.
struct Lanes {
    /// The process of each lane.
    processes: Vec<u64>,
    /// Indices into the run's operations, per lane, in invoke order.
    ops: Vec<Vec<usize>>,
}

impl Lanes {
    fn of(ops: &[Op]) -> Lanes {
        let mut lane_of: HashMap<u64, usize> = HashMap::new();
        let mut lanes = Lanes {
            processes: Vec::new(),
            ops: Vec::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            let lane = *lane_of.entry(op.process).or_insert_with(|| {
                lanes.processes.push(op.process);
                lanes.ops.push(Vec::new());
                lanes.processes.len() - 1
            });
            lanes.ops[lane].push(i);
        }
        lanes
    }

    /// The row of each lane: a lane goes into the row that became free last before its
    /// first invoke (a client's next process after an `info` usually), else a new row.
    fn rows(&self, ops: &[Op], end_ns: u64) -> Vec<usize> {
        // Per row, when its last operation ended (never-completed ones: the run's end).
        let mut free_at: Vec<u64> = Vec::new();
        let mut rows = Vec::with_capacity(self.ops.len());
        for lane in &self.ops {
            let (Some(&first), Some(&last)) = (lane.first(), lane.last()) else {
                rows.push(0);
                continue;
            };
            let start = ops[first].invoke_ns;
            let best = (0..free_at.len())
                .filter(|&r| free_at[r] < start)
                .max_by_key(|&r| free_at[r]);
            let row = best.unwrap_or_else(|| {
                free_at.push(0);
                free_at.len() - 1
            });
            free_at[row] = ops[last].complete_ns.unwrap_or(end_ns.max(start) + 1);
            rows.push(row);
        }
        rows
    }
}

/// Microseconds of a time in nanoseconds (rounded down).
fn us(ns: u64) -> u64 {
    ns / 1_000
}

/// Builds the whole `timeline.html` of a run.
pub(crate) fn timeline_page(run: &RunData) -> String {
    let data = timeline_json(run);
    let experiment = experiment_name(run);
    let run_id = run_id(run);
    let title = format!("kvlab · timeline · {experiment} · {run_id}");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         {header}\n<script type=\"application/json\" id=\"timeline-data\">{data}</script>\n\
         <script>{SCRIPT}</script>\n</body>\n</html>\n",
        title = escape(&title),
        header = header(run, &experiment, &run_id),
    )
}

/// The page's header: title, verdict sentence, controls, legend and the canvas.
fn header(run: &RunData, experiment: &str, run_id: &str) -> String {
    let mut h = format!(
        "<header><h1>Timeline · {} · <code>{}</code></h1>\
         <p class=\"sub\"><a href=\"report.html\">← report</a> · {} operations · {} processes · \
         {} faults</p>{}",
        escape(experiment),
        escape(run_id),
        crate::html::fmt_count(run.ops.len() as u64),
        crate::html::fmt_count(Lanes::of(&run.ops).processes.len() as u64),
        crate::html::fmt_count(run.faults.len() as u64),
        verdict_sentence(run),
    );
    h.push_str(
        "<div class=\"controls\"><button id=\"all\">All</button><button id=\"zin\">Zoom in</button>\
         <button id=\"zout\">Zoom out</button><button id=\"w1s\">1 s</button>\
         <button id=\"w100ms\">100 ms</button><button id=\"w10ms\">10 ms</button>\
         <button id=\"evidence\" hidden>Evidence</button>\
         <label>highlight key <select id=\"key\"><option value=\"-1\">none</option></select></label>\
         <span id=\"range\"></span></div>\
         <div class=\"legend\"><span class=\"sw ok\"></span>ok <span class=\"sw fail\"></span>fail \
         <span class=\"sw info\"></span>info <span class=\"sw open\"></span>never completed \
         <span class=\"sw fault\"></span>fault <span class=\"mk leader\"></span>leader \
         <span class=\"mk life\"></span>node start/stop <span class=\"mk membership\"></span>membership \
         <span class=\"mk replica\"></span>replica <span class=\"sw ev\"></span>checker's evidence\
         </div><p class=\"note\">Wheel: zoom at the pointer · drag: pan · click an operation: \
         highlight its key · hover: details.</p><p id=\"explain\" class=\"explain\"></p></header>\
         <div id=\"wrap\"><canvas id=\"timeline\"></canvas></div><div id=\"tip\" hidden></div>",
    );
    h
}

/// What the checker said, for the header; names the highlighted key when it is invalid.
fn verdict_sentence(run: &RunData) -> String {
    let verdict = verdict_of(&run.summary);
    match verdict.as_deref() {
        Some("invalid") => {
            let key = highlight_key(run);
            format!(
                "<p class=\"verdict bad\">INVALID — the history is not linearizable{}. \
                 Invalid keys: {}.</p>",
                key.map_or(String::new(), |k| format!(
                    "; key <code>{}</code>'s operations are highlighted, the others dimmed",
                    escape(&k)
                )),
                escape(&invalid_keys(&run.summary).join(", "))
            )
        }
        Some(v) => format!(
            "<p class=\"verdict {}\">{}</p>",
            if v == "valid" { "good" } else { "warn" },
            escape(&v.to_uppercase())
        ),
        None => "<p class=\"verdict warn\">NOT CHECKED</p>".to_string(),
    }
}

/// The keys the checker found not linearizable.
fn invalid_keys(summary: &Value) -> Vec<String> {
    json_at(summary, &["checker", "invalid_keys"])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The key to highlight: only for an invalid history, the key the checker visualised,
/// else the first invalid key.
pub(crate) fn highlight_key(run: &RunData) -> Option<String> {
    if verdict_of(&run.summary).as_deref() != Some("invalid") {
        return None;
    }
    let s = &run.summary;
    json_text(s, &["checker", "visualized_key"])
        .or_else(|| json_text(s, &["failing_key"]))
        .or_else(|| invalid_keys(s).into_iter().next())
}

/// The embedded data (see the module docs), with `<` escaped so that no text from the
/// run directory can close the script element.
fn timeline_json(run: &RunData) -> String {
    let lanes = Lanes::of(&run.ops);
    let mut keys = Interner::default();
    let mut errors = Interner::default();
    let mut fns = Interner::default();
    let mut text = String::with_capacity(run.ops.len() * 40 + 4096);
    text.push_str("{\"ops\":[");
    for (l, lane) in lanes.ops.iter().enumerate() {
        text.push_str(if l == 0 { "[" } else { ",[" });
        for (i, &op) in lane.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            write_op(&mut text, &run.ops[op], &mut fns, &mut keys, &mut errors);
        }
        text.push(']');
    }
    text.push(']');
    let highlight = highlight_key(run);
    let invalid = invalid_keys(&run.summary);
    for key in invalid.iter().chain(&highlight) {
        keys.id(key);
    }
    let rest = json!({
        "stride": OP_STRIDE,
        "end_us": run.run_end_ns.div_ceil(1_000),
        "processes": lanes.processes,
        "rows": lanes.rows(&run.ops, run.run_end_ns),
        "fns": fns.names,
        "errors": errors.names,
        "verdict": verdict_of(&run.summary),
        "invalid_keys": invalid,
        "highlight_key": highlight,
        "evidence": evidence(run, &lanes, &invalid),
        "explanations": explanations(&run.summary, &invalid),
        "phases": run.phases.iter().map(|p| json!([us(p.start_ns), p.name])).collect::<Vec<_>>(),
    });
    let Value::Object(rest) = rest else {
        unreachable!("json! of an object literal is an object")
    };
    for (name, value) in rest {
        let _ = write!(text, ",{}:{}", Value::String(name), value);
    }
    let _ = write!(text, ",\"keys\":{}", json!(keys.names));
    text.push_str(&events_json(run));
    text.push('}');
    text.replace('<', "\\u003c")
}

/// One operation's [`OP_STRIDE`] numbers.
fn write_op(
    text: &mut String,
    op: &Op,
    fns: &mut Interner,
    keys: &mut Interner,
    errors: &mut Interner,
) {
    let invoke = us(op.invoke_ns);
    let duration = op
        .complete_ns
        .map_or(-1, |c| i64::try_from(us(c) - invoke).unwrap_or(i64::MAX));
    let outcome = match op.outcome {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Info => 2,
    };
    let id = |i: Option<usize>| i.map_or(-1, |i| i as i64);
    let key = id(op.key.as_deref().map(|k| keys.id(k)));
    let error = id(op.error.as_deref().map(|e| errors.id(e)));
    let node = op.node.map_or(-1, i64::from);
    let _ = write!(
        text,
        "{invoke},{duration},{outcome},{},{key},{node},{error},{}",
        fns.id(op.f.name()),
        op.value
    );
}

/// `[lane, position]` of the operations the checker named as proof, per invalid key.
fn evidence(run: &RunData, lanes: &Lanes, invalid: &[String]) -> BTreeMap<String, Vec<[usize; 2]>> {
    let mut at: HashMap<u64, [usize; 2]> = HashMap::new();
    for (l, lane) in lanes.ops.iter().enumerate() {
        for (p, &op) in lane.iter().enumerate() {
            at.insert(run.ops[op].index, [l, p]);
        }
    }
    let mut out: BTreeMap<String, Vec<[usize; 2]>> = BTreeMap::new();
    for partition in checker_partitions(&run.summary) {
        let Some(key) = json_text(partition, &["key"]).filter(|k| invalid.contains(k)) else {
            continue;
        };
        let named = json_at(partition, &["first_unlinearizable"]).and_then(Value::as_array);
        let found = named
            .into_iter()
            .flatten()
            .filter_map(|op| json_at(op, &["invoke_index"]).and_then(Value::as_u64))
            .filter_map(|index| at.get(&index).copied());
        out.entry(key).or_default().extend(found);
    }
    out
}

/// The checker's per-key partitions in summary.json.
fn checker_partitions(summary: &Value) -> &[Value] {
    json_at(summary, &["checker", "partitions"])
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The checker's explanation per invalid key.
fn explanations(summary: &Value, invalid: &[String]) -> BTreeMap<String, String> {
    checker_partitions(summary)
        .iter()
        .filter_map(|p| Some((json_text(p, &["key"])?, json_text(p, &["explanation"])?)))
        .filter(|(k, _)| invalid.contains(k))
        .collect()
}

/// The `faults`, `fault_kinds`, `nodes`, `node_events` and `event_kinds` members.
fn events_json(run: &RunData) -> String {
    let mut kinds = Interner::default();
    let faults: Vec<Value> = run
        .faults
        .iter()
        .map(|f| {
            let detail = match &f.detail_end {
                Some(end) => format!("{} → {end}", f.detail_start),
                None => f.detail_start.clone(),
            };
            json!([
                us(f.start_ns),
                f.end_ns.map_or(-1, |e| us(e) as i64),
                kinds.id(&f.fault),
                f.node.map_or(-1, i64::from),
                detail
            ])
        })
        .collect();
    let mut nodes: Vec<u32> = run.faults.iter().filter_map(|f| f.node).collect();
    nodes.extend(run.ops.iter().filter_map(|op| op.node));
    let drawn: Vec<(u64, u32, &str, String)> = run
        .events
        .iter()
        .filter_map(|e| {
            let (node, event) = e.node_event()?;
            let kind = event.kind();
            NODE_EVENT_CATEGORIES.iter().find(|(k, _)| *k == kind)?;
            Some((us(e.time_ns), node.0, kind, event.to_string()))
        })
        .collect();
    nodes.extend(drawn.iter().map(|d| d.1));
    nodes.sort_unstable();
    nodes.dedup();
    let mut event_kinds = Interner::default();
    let node_events: Vec<Value> = drawn
        .into_iter()
        .map(|(t, node, kind, detail)| {
            let n = nodes.binary_search(&node).unwrap_or(0);
            json!([t, n, event_kinds.id(kind), detail])
        })
        .collect();
    let categories: Vec<&str> = event_kinds
        .names
        .iter()
        .map(|k| {
            NODE_EVENT_CATEGORIES
                .iter()
                .find(|(n, _)| n == k)
                .map_or("", |c| c.1)
        })
        .collect();
    format!(
        ",\"faults\":{},\"fault_kinds\":{},\"nodes\":{},\"node_events\":{},\"event_kinds\":{},\"event_categories\":{}",
        Value::Array(faults),
        json!(kinds.names),
        json!(nodes),
        Value::Array(node_events),
        json!(event_kinds.names),
        json!(categories)
    )
}

#[cfg(test)]
mod tests;
