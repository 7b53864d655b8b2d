//! The layout of the runner, proved from its source: the top-level modules of
//! kvlab-experiments form no import cycle, one function drives the phases of every run,
//! and one place picks the backend.
//!
//! A module `a` depends on `b` when code in `a` (not a comment) names `crate::b`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a source file belongs to (`run`, `local`, …).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Code lines (comments dropped) of every source file, by top-level module.
fn code_by_module() -> BTreeMap<String, String> {
    let src = src_dir();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut by_module: BTreeMap<String, String> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        by_module
            .entry(module_of(&src, &f))
            .or_default()
            .push_str(&code);
    }
    by_module
}

fn dependencies(code: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (module, text) in code {
        let deps: BTreeSet<String> = text
            .match_indices("crate::")
            .map(|(i, _)| {
                text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|d| !d.is_empty() && d != module && code.contains_key(d))
            .collect();
        graph.insert(module.clone(), deps);
    }
    graph
}

/// A cycle through `start`, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| p == n) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_runner_modules_form_no_import_cycle() {
    let graph = dependencies(&code_by_module());
    assert!(graph.len() > 10, "found too few modules: {graph:?}");
    // So that the check can fail: the driver does use the cluster seam.
    assert!(graph["driver"].contains("cluster"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle among experiments' modules: {}",
            cycle.join(" -> ")
        );
    }
    // The spec is plain data: it names no module that runs anything.
    for runner in [
        "run", "driver", "local", "cluster", "observe", "sweep", "pool",
    ] {
        assert!(
            !graph["spec"].contains(runner),
            "spec depends on {runner}: {:?}",
            graph["spec"]
        );
    }
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn one_phase_driver_and_one_place_that_picks_a_backend() {
    let code = code_by_module();
    let all: String = code.values().cloned().collect();
    // A phase begins (and is recorded) in one module only: the driver. (`events`
    // defines the record and tests it.)
    for (module, text) in &code {
        if module != "driver" && module != "events" {
            assert!(
                !text.contains("RunEvent::phase(") && !text.contains("Phase::Liveness)"),
                "{module} changes phases"
            );
        }
    }
    assert_eq!(code["driver"].matches("fn enter_phase").count(), 1);
    // The backend is matched to build a cluster in exactly one place.
    assert_eq!(all.matches("match spec.backend").count(), 1);
    assert!(code["run"].contains("match spec.backend"));
}
