//! Architecture invariants that `cargo metadata` can prove: the protocol crates and
//! kvlab-node do no I/O, so they must not (even transitively, through normal
//! dependencies) depend on an async runtime, an RPC framework, a socket or filesystem
//! crate, or on the kvlab crates that do I/O; the report reads run records only; the
//! node binary carries no plotting, checker or simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Crates that must stay sans-IO. Those not (yet) in the workspace are skipped, but at
/// least kvlab-types, kvlab-node and kvlab-ring must be found.
const SANS_IO_CRATES: &[&str] = &[
    "kvlab-types",
    "kvlab-node",
    "kvlab-swim",
    "kvlab-raft",
    "kvlab-ring",
    "kvlab-txn",
];

/// Dependencies that mean I/O: runtimes, RPC, sockets, files, and kvlab's I/O crates.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tarpc",
    "mio",
    "socket2",
    "async-std",
    "smol",
    "tempfile",
    "fs2",
    "fs-err",
    "memmap2",
    "walkdir",
    "notify",
    "kvlab-storage",
    "kvlab-sim",
    "kvlab-server",
    "kvlab-transport",
    "kvlab-experiments",
];

/// Protocol crates meet only in kvlab-node: none may depend on another.
const PROTOCOL_CRATES: &[&str] = &["kvlab-swim", "kvlab-raft", "kvlab-ring", "kvlab-txn"];

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package id → (name, normal dependencies' ids).
fn graph(meta: &serde_json::Value) -> BTreeMap<String, (String, Vec<String>)> {
    let names: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap().to_string();
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    // Only normal dependencies: dev-dependencies never reach the library.
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap().to_string())
                .collect();
            (id.clone(), (names[&id].clone(), deps))
        })
        .collect()
}

fn transitive_deps(g: &BTreeMap<String, (String, Vec<String>)>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&String> = g
        .iter()
        .filter(|(_, (name, _))| name == root)
        .flat_map(|(_, (_, deps))| deps)
        .collect();
    while let Some(id) = stack.pop() {
        if seen.insert(id.clone()) {
            stack.extend(g[id].1.iter());
        }
    }
    seen.iter().map(|id| g[id].0.clone()).collect()
}

#[test]
fn sans_io_crates_depend_on_no_runtime_network_or_filesystem_crate() {
    let g = graph(&metadata());
    let present: BTreeSet<&str> = g.values().map(|(n, _)| n.as_str()).collect();
    for required in ["kvlab-types", "kvlab-node", "kvlab-ring"] {
        assert!(
            present.contains(required),
            "{required} is not in the workspace"
        );
    }
    for krate in SANS_IO_CRATES.iter().filter(|c| present.contains(*c)) {
        let deps = transitive_deps(&g, krate);
        let bad: Vec<_> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
        assert!(bad.is_empty(), "{krate} depends (transitively) on {bad:?}");
    }
}

#[test]
fn protocol_crates_do_not_depend_on_each_other() {
    let g = graph(&metadata());
    for krate in PROTOCOL_CRATES {
        let deps = transitive_deps(&g, krate);
        let bad: Vec<_> = PROTOCOL_CRATES
            .iter()
            .filter(|p| deps.contains(**p))
            .collect();
        assert!(
            bad.is_empty(),
            "{krate} depends on {bad:?}; protocols meet only in kvlab-node"
        );
    }
}

/// kvlab-ring is pure placement, planning and a state machine: its direct normal
/// dependencies are exactly kvlab-types, serde, postcard, thiserror and the fixed hash.
#[test]
fn ring_depends_only_on_types_serde_postcard_thiserror_and_its_hash() {
    let g = graph(&metadata());
    let allowed = [
        "kvlab-types",
        "serde",
        "postcard",
        "thiserror",
        "xxhash-rust",
    ];
    let direct: BTreeSet<&str> = g
        .values()
        .filter(|(name, _)| name == "kvlab-ring")
        .flat_map(|(_, deps)| deps.iter().map(|d| g[d].0.as_str()))
        .collect();
    assert!(!direct.is_empty(), "kvlab-ring not found");
    let extra: Vec<_> = direct.iter().filter(|d| !allowed.contains(d)).collect();
    assert!(extra.is_empty(), "kvlab-ring depends on {extra:?}");
}

/// The simulator may use the simulated disk (kvlab-storage) but never a runtime or
/// sockets: it drives nodes in virtual time.
#[test]
fn simulator_depends_on_no_runtime_or_sockets() {
    let g = graph(&metadata());
    let deps = transitive_deps(&g, "kvlab-sim");
    let bad: Vec<_> = ["tokio", "tarpc", "mio", "socket2", "async-std", "smol"]
        .iter()
        .filter(|f| deps.contains(**f))
        .collect();
    assert!(bad.is_empty(), "kvlab-sim depends on {bad:?}");
}

/// The checker reads histories, never nodes; kvlab-types is the bottom of the graph.
#[test]
fn checker_and_types_depend_on_no_other_kvlab_crate() {
    let g = graph(&metadata());
    for krate in ["kvlab-checker", "kvlab-types"] {
        let kvlab: Vec<String> = transitive_deps(&g, krate)
            .into_iter()
            .filter(|d| d.starts_with("kvlab"))
            .collect();
        assert!(kvlab.is_empty(), "{krate} depends on {kvlab:?}");
    }
}

/// The report reads run directories (history, events, summary), never a runner, a
/// simulator, a server, a transport or a node.
#[test]
fn report_depends_on_no_runner_simulator_server_or_transport() {
    let g = graph(&metadata());
    let deps = transitive_deps(&g, "kvlab-report");
    assert!(
        deps.contains("plotters"),
        "kvlab-report not found or not what it was"
    );
    let bad: Vec<&String> = deps
        .iter()
        .filter(|d| {
            d.starts_with("kvlab-transport")
                || [
                    "kvlab-experiments",
                    "kvlab-sim",
                    "kvlab-server",
                    "kvlab-storage",
                    "kvlab-node",
                    "kvlab-node-cli",
                    "kvlab-raft",
                    "kvlab-swim",
                    "tokio",
                ]
                .contains(&d.as_str())
        })
        .collect();
    assert!(bad.is_empty(), "kvlab-report depends on {bad:?}");
}

/// `kvlab-node` goes into a container image: it runs a node and nothing else.
#[test]
fn node_binary_reaches_no_plotting_checker_simulator_or_report() {
    let g = graph(&metadata());
    let deps = transitive_deps(&g, "kvlab-node-cli");
    assert!(
        deps.contains("kvlab-server"),
        "kvlab-node-cli not found or not what it was"
    );
    let bad: Vec<_> = [
        "plotters",
        "dejavu",
        "kvlab-checker",
        "porcupine-rs",
        "kvlab-sim",
        "kvlab-report",
        "kvlab-experiments",
        "indicatif",
    ]
    .iter()
    .filter(|f| deps.contains(**f))
    .collect();
    assert!(bad.is_empty(), "kvlab-node-cli depends on {bad:?}");
}

#[test]
fn the_check_itself_sees_a_forbidden_dependency() {
    // Guard against a check that cannot fail: kvlab-experiments does depend on
    // kvlab-sim, so the same walk must find it there.
    let g = graph(&metadata());
    let experiments = transitive_deps(&g, "kvlab-experiments");
    assert!(experiments.contains("kvlab-sim"));
    assert!(experiments.contains("plotters") && experiments.contains("kvlab-node-cli"));
}
