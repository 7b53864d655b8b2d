//! Architecture invariants of DESIGN.md, proven from `cargo metadata`: the sans-IO
//! crates never depend (even transitively, through normal dependencies) on an async
//! runtime or a network stack, and the checker reads histories, never nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Crates that do I/O or run an event loop.
const FORBIDDEN_IN_SANS_IO: &[&str] = &["tokio", "tarpc", "mio", "socket2", "async-std", "smol"];

/// The resolved graph: package name -> names of its normal (non-dev, non-build)
/// dependencies.
fn normal_dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = name_of[node["id"].as_str().unwrap()].to_string();
        let deps = graph.entry(name).or_default();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                deps.insert(name_of[dep["pkg"].as_str().unwrap()].to_string());
            }
        }
    }
    graph
}

fn transitive(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_string()];
    while let Some(n) = stack.pop() {
        for d in graph.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn sans_io_crates_never_depend_on_a_runtime_or_sockets() {
    let graph = normal_dependency_graph();
    let sans_io: Vec<&String> = graph
        .keys()
        .filter(|n| {
            matches!(
                n.as_str(),
                "kvlab-types"
                    | "kvlab-node"
                    | "kvlab-raft"
                    | "kvlab-swim"
                    | "kvlab-ring"
                    | "kvlab-txn"
                    | "kvlab-sim"
            )
        })
        .collect();
    assert!(
        sans_io.iter().any(|n| *n == "kvlab-node"),
        "kvlab-node not in the graph"
    );
    for krate in sans_io {
        let deps = transitive(&graph, krate);
        let bad: Vec<&String> = deps
            .iter()
            .filter(|d| FORBIDDEN_IN_SANS_IO.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "{krate} depends on {bad:?}");
    }
}

#[test]
fn checker_and_types_depend_on_no_other_kvlab_crate() {
    let graph = normal_dependency_graph();
    for krate in ["kvlab-checker", "kvlab-types"] {
        let kvlab: Vec<String> = transitive(&graph, krate)
            .into_iter()
            .filter(|d| d.starts_with("kvlab"))
            .collect();
        assert!(kvlab.is_empty(), "{krate} depends on {kvlab:?}");
    }
}
