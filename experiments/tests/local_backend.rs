//! The local backend end to end through the `kvlab` binary: a short quickstart (Raft, 3
//! nodes, partitions, crashes and pauses) over each transport, and SIGKILL of the leader
//! mid-run. Every run must leave no node process behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A short quickstart: Raft on 3 nodes, the quickstart's faults, 4 s + 1.5 s.
fn short_quickstart(dir: &Path, faults: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("configs/quickstart.toml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let line = match key {
            "system" => "system = \"raft\"".to_string(),
            "nodes" => "nodes = 3".to_string(),
            "duration_s" => "duration_s = 4".to_string(),
            "liveness_s" => "liveness_s = 1.5".to_string(),
            "start_after_s" => "start_after_s = 0.8".to_string(),
            "interval_s" => "interval_s = 1.2".to_string(),
            "fault_duration_s" => "fault_duration_s = 0.8".to_string(),
            "clients" => "clients = 6".to_string(),
            "faults" if !faults.is_empty() => format!("faults = {faults}"),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join("quickstart-short.toml");
    std::fs::write(&path, out).unwrap();
    path
}

/// Runs `kvlab run SPEC --backend local --transport T --out DIR`; returns the exit
/// status and the output.
fn run_local(spec: &Path, transport: &str, out: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .arg("run")
        .arg(spec)
        .args(["--backend", "local", "--transport", transport, "--out"])
        .arg(out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Fails if any process the run started is still alive (a pid reused by another program
/// is told apart by its command line).
fn assert_no_node_survives(run_dir: &Path) {
    let nodes = json(&run_dir.join("nodes.json"));
    let pids: Vec<u64> = nodes["pids"]
        .as_array()
        .expect("pids recorded")
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(!pids.is_empty());
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !(cmdline.contains("kvlab") && cmdline.contains("node")),
            "node process {pid} survived the run: {cmdline}"
        );
    }
}

fn check_quickstart_over(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec = short_quickstart(dir.path(), "");
    let out = dir.path().join("run");
    let (code, text) = run_local(&spec, transport, &out);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("VALID"), "{text}");
    let meta = json(&out.join("meta.json"));
    assert_eq!(meta["backend"], "local");
    assert_eq!(meta["transport"], transport);
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["verdict"], "valid");
    assert_eq!(summary["transport"], transport);
    assert!(summary["ops"]["ok"].as_u64().unwrap() > 50, "{summary}");
    assert!(summary["faults"]["injected"].as_u64().unwrap() >= 2);
    assert!(out.join("report.html").is_file());
    let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    assert!(history.lines().count() > 100);
    if transport != "mem" {
        assert!(out.join("nodes/n1/node.toml").is_file());
        assert_no_node_survives(&out);
    }
}

#[test]
fn short_quickstart_over_mem_exits_zero_with_a_valid_verdict() {
    check_quickstart_over("mem");
}

#[test]
fn short_quickstart_over_udp_processes_exits_zero_with_a_valid_verdict() {
    check_quickstart_over("udp");
}

#[test]
fn short_quickstart_over_tarpc_processes_exits_zero_with_a_valid_verdict() {
    check_quickstart_over("tarpc");
}

#[test]
fn sigkill_of_the_leader_loses_no_acknowledged_write_and_it_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let spec = short_quickstart(dir.path(), "[\"crash-leader\"]");
    let out = dir.path().join("run");
    let (code, text) = run_local(&spec, "tarpc", &out);
    // The checker passing is the proof that no acknowledged write was lost: every
    // read after the kill saw every write acknowledged before it.
    assert_eq!(code, 0, "{text}");
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["checker"]["verdict"], "valid", "{summary}");
    assert!(summary["ops_by_f"]["write"]["ok"].as_u64().unwrap() > 10);
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let crashed: Vec<u64> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "fault_start" && e["fault"] == "crash_leader")
        .map(|e| e["node"].as_u64().unwrap())
        .collect();
    assert!(!crashed.is_empty(), "no leader was killed:\n{events}");
    // Restarted processes are new processes: more pids than nodes.
    let nodes = json(&out.join("nodes.json"));
    assert!(nodes["pids"].as_array().unwrap().len() >= 3 + crashed.len());
    // The killed nodes rejoined: every node applied the same log prefix at the end.
    assert_eq!(nodes["converged"], true, "{nodes}");
    let applied: Vec<u64> = (1..=3)
        .map(|i| {
            nodes["nodes"][format!("n{i}")]["protocol"]["applied_index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        applied.iter().all(|a| *a == applied[0] && *a > 0),
        "{applied:?}"
    );
    assert_no_node_survives(&out);
}

/// The composed node as processes with two WAL shards each, under `kill -9` crashes:
/// every node recovers from its two logs (groups split by `g % 2`), the checker finds no
/// acknowledged write lost, and the status reports the shards.
#[test]
fn two_wal_shards_per_node_survive_sigkill_with_no_acknowledged_write_lost() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("ring-workers-crash.toml");
    std::fs::write(
        &spec,
        r#"
name = "ring-workers-crash"
system = "kvlab"
nodes = 3
[time]
duration_s = 5
liveness_s = 2
[workload]
clients = 6
keys = 32
timeout_ms = 1000
think_time_ms = 5
[nemesis]
faults = ["crash"]
start_after_s = 1
interval_s = 1.5
fault_duration_s = 0.8
[local]
storage = { fsync = "batch" }
workers = 2
[kvlab]
replication_factor = 3
[kvlab.ring]
vnode_count = 8
[kvlab.meta]
voters = [1, 2, 3]
[check]
model = "kv"
"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    let (code, text) = run_local(&spec, "tarpc", &out);
    assert_eq!(code, 0, "{text}");
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["checker"]["verdict"], "valid", "{summary}");
    assert!(summary["ops_by_f"]["write"]["ok"].as_u64().unwrap() > 10);
    assert!(
        summary["faults"]["injected"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    let nodes = json(&out.join("nodes.json"));
    for i in 1..=3 {
        let status = &nodes["nodes"][format!("n{i}")];
        assert_eq!(status["storage"]["wal_shards"], 2, "{status}");
        let data = out.join(format!("nodes/n{i}/data"));
        assert!(data.join("shard-0").is_dir() && data.join("shard-1").is_dir());
    }
    assert_no_node_survives(&out);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kvlab client ADDR ARGS...`: the exit status and the printed answer.
fn client(addr: &str, args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .arg("client")
        .arg(addr)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

/// Starts `kvlab node --config`, waits until its client endpoint takes a write.
fn start_node(config: &Path, addr: &str) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .args(["node", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // A one-node Raft group elects itself within a few election timeouts.
    while client(addr, &["write", "ready", "1"]).0 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// Writes the config of a one-node cluster of `system` over tarpc on free loopback
/// ports (its own peer table, data under `dir`), with `extra` TOML appended; returns
/// the config's path and the client address.
fn one_node_config(dir: &Path, system: &str, extra: &str) -> (PathBuf, String) {
    let (peer, cl, admin) = (free_port(), free_port(), free_port());
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\nsystem = \"{system}\"\ntransport = \"tarpc\"\nlisten = \"127.0.0.1:{peer}\"\n\
             client = \"127.0.0.1:{cl}\"\ndata_dir = \"{}\"\ncluster_secret = \"000102030405060708090a0b0c0d0e0f\"\n\
             [admin]\naddr = \"127.0.0.1:{admin}\"\ntoken = \"t\"\n[peers]\n1 = \"127.0.0.1:{peer}\"\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    (config, format!("127.0.0.1:{cl}"))
}

fn sigterm_and_wait(mut child: std::process::Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    child.wait().unwrap()
}

#[test]
fn kvlab_node_serves_kvlab_client_stops_on_sigterm_and_recovers_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = one_node_config(dir.path(), "raft", "");
    let node = start_node(&config, &addr);
    assert_eq!(client(&addr, &["write", "k", "5"]), (0, "ok".into()));
    assert_eq!(client(&addr, &["read", "k"]), (0, "5".into()));
    let (code, out) = client(&addr, &["cas", "k", "4", "6"]);
    assert_eq!(code, 1, "a cas with the wrong expected value fails: {out}");
    assert_eq!(client(&addr, &["cas", "k", "5", "6"]), (0, "ok".into()));
    assert_eq!(client(&addr, &["read", "missing"]), (0, "none".into()));
    assert_eq!(client(&addr, &["put", "k"]).0, 2, "unknown operation");
    assert!(
        sigterm_and_wait(node).success(),
        "SIGTERM is a graceful stop"
    );
    let node = start_node(&config, &addr);
    assert_eq!(client(&addr, &["read", "k"]), (0, "6".into()), "recovered");
    assert!(sigterm_and_wait(node).success());
}

#[test]
fn kvlab_client_txn_commits_on_a_composed_node_and_reads_its_appends_back() {
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = one_node_config(
        dir.path(),
        "kvlab",
        "[kvlab]\nreplication_factor = 1\n[kvlab.meta]\nvoters = [1]\n",
    );
    let node = start_node(&config, &addr);
    let (code, out) = client(&addr, &["txn", "r:x", "append:x=3", "w:z=5"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["committed", "r x none", "append x 3", "w z 5"],
        "{out}"
    );
    assert!(lines[4].starts_with("groups "), "{out}");
    let (code, out) = client(&addr, &["txn", "r:x", "r:z", "append:x=4", "r:x"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..5],
        ["committed", "r x [3]", "r z 5", "append x 4", "r x [3, 4]"],
        "{out}"
    );
    for bad in [
        vec!["txn"],
        vec!["txn", "r:x", "w:"],
        vec!["txn", "incr:x=1"],
    ] {
        assert_eq!(client(&addr, &bad).0, 2, "{bad:?} is bad input");
    }
    assert!(sigterm_and_wait(node).success());
}
