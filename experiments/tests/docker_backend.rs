//! The docker backend end to end through the `kvlab` binary: a short Raft run in
//! containers with a partition (iptables in the containers' network namespaces), a
//! `docker kill` of the leader and a `docker pause`; a fourth container of the composed
//! node that joins the ring later, replicas moved onto it; a run killed with SIGKILL whose
//! leftovers `kvlab docker clean` removes; a run interrupted with ctrl-c that cleans up
//! after itself.
//!
//! These tests need a Docker daemon and the node image (`kind-cluster/build-image.sh`).
//! Without them each test prints `skipped: …` and passes — unless
//! `KVLAB_REQUIRE_DOCKER=1` (CI sets it), which turns a missing daemon or image into a
//! failure. The tests run one at a time (they measure real time on a shared machine).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The environment variable that turns "no docker" into a failure.
const REQUIRE_ENV: &str = "KVLAB_REQUIRE_DOCKER";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn image() -> String {
    std::env::var("KVLAB_DOCKER_IMAGE").unwrap_or_else(|_| "kvlab-node:latest".into())
}

/// Whether the docker tests can run here; prints why not (or fails under
/// `KVLAB_REQUIRE_DOCKER=1`).
fn docker_available(test: &str) -> bool {
    let why = match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stderr(Stdio::null())
        .output()
    {
        Err(e) => Some(format!("no docker client ({e})")),
        Ok(o) if !o.status.success() => Some("no docker daemon".to_string()),
        Ok(_) => {
            let ok = Command::new("docker")
                .args(["image", "inspect", &image()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (!ok).then(|| {
                format!(
                    "no image {} (build it with kind-cluster/build-image.sh)",
                    image()
                )
            })
        }
    };
    match why {
        None => true,
        Some(why) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {why}, and {REQUIRE_ENV}=1 requires the docker tests to run")
        }
        Some(why) => {
            // Straight to the process's stderr: the test harness captures `eprintln!` of
            // passing tests, and a skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
            false
        }
    }
}

/// A short quickstart on 3 nodes with `faults`, as one Raft group over all nodes (system
/// = "raft", as in `configs/docker-faults.toml`: its leader is the one `crash-leader`
/// kills): seed 2 draws a partition (at 1 s), a kill of the leader (2.5 s) and a pause
/// (4 s), each lasting 1 s.
fn short_spec(dir: &Path, duration_s: f64, faults: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("configs/quickstart.toml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let line = match key {
            "system" => "system = \"raft\"".to_string(),
            "nodes" => "nodes = 3".to_string(),
            "seed" => "seed = 2".to_string(),
            "duration_s" => format!("duration_s = {duration_s}"),
            "liveness_s" => "liveness_s = 3".to_string(),
            "start_after_s" => "start_after_s = 1".to_string(),
            "interval_s" => "interval_s = 1.5".to_string(),
            "fault_duration_s" => "fault_duration_s = 1".to_string(),
            "clients" => "clients = 6".to_string(),
            "faults" => format!("faults = {faults}"),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join("docker-short.toml");
    std::fs::write(&path, out).unwrap();
    path
}

fn kvlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvlab"));
    c.env("KVLAB_DOCKER_IMAGE", image());
    c
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Names of the containers, networks and volumes labelled with `label` (`key=value` or
/// a key).
fn docker_objects(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut all = Vec::new();
    for args in [
        vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        vec![
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ],
        vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"],
    ] {
        let o = Command::new("docker").args(&args).output().unwrap();
        assert!(o.status.success(), "docker {args:?}");
        all.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    all
}

#[test]
fn docker_run_with_a_partition_a_leader_kill_and_a_pause_is_valid_and_leaves_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !docker_available("docker_run_with_a_partition_a_leader_kill_and_a_pause") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = short_spec(
        dir.path(),
        6.0,
        "[\"partition-halves\", \"crash-leader\", \"pause\"]",
    );
    let out = dir.path().join("run");
    let o = kvlab()
        .arg("run")
        .arg(&spec)
        .args(["--backend", "docker", "--transport", "tarpc", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("VALID"), "{text}");
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["backend"], "docker");
    assert_eq!(summary["checker"]["verdict"], "valid", "{summary}");

    // Every fault kind happened, and when.
    let events = lines(&out.join("events.jsonl"));
    let band = |fault: &str| -> (u64, u64, Option<u64>) {
        let start = events
            .iter()
            .find(|e| e["kind"] == "fault_start" && e["fault"] == fault)
            .unwrap_or_else(|| panic!("no {fault} in events.jsonl"));
        let id = start["fault_id"].clone();
        let end = events
            .iter()
            .find(|e| e["kind"] == "fault_end" && e["fault_id"] == id)
            .unwrap_or_else(|| panic!("{fault} never healed"));
        (
            start["time_ns"].as_u64().unwrap(),
            end["time_ns"].as_u64().unwrap(),
            start["node"].as_u64(),
        )
    };
    let (part_start, part_end, _) = band("partition_halves");
    let (kill_at, _, killed) = band("crash_leader");
    let (_, _, paused) = band("pause");
    assert!(killed.is_some() && paused.is_some());

    // The partition was iptables rules in the containers' network namespaces, set and
    // then removed.
    let nodes = json(&out.join("nodes.json"));
    let cuts = nodes["docker"]["link_cuts"].as_array().unwrap();
    assert!(
        cuts.iter().any(|c| c["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("-j DROP"))),
        "{nodes}"
    );
    assert!(
        cuts.iter()
            .any(|c| c["rules"].as_array().unwrap().is_empty())
    );
    // The killed leader's container was started again (3 + at least one restart).
    assert!(nodes["docker"]["container_starts"].as_u64().unwrap() >= 4);
    assert_eq!(nodes["converged"], true, "{nodes}");

    // The history shows the partition: operations that failed or timed out during it,
    // and acknowledged writes after it healed.
    let history = lines(&out.join("history.jsonl"));
    let in_band = |e: &Value, a: u64, b: u64| {
        let t = e["time_ns"].as_u64().unwrap();
        t >= a && t <= b
    };
    let hurt = history
        .iter()
        .filter(|e| e["type"] == "fail" || e["type"] == "info")
        .filter(|e| in_band(e, part_start, part_end + 600_000_000))
        .count();
    assert!(hurt > 0, "no fail or info during the partition");
    let ok_writes = |a: u64, b: u64| {
        history
            .iter()
            .filter(|e| e["type"] == "ok" && e["f"] == "write" && in_band(e, a, b))
            .count()
    };
    assert!(
        ok_writes(0, kill_at) > 10,
        "more than 10 writes acknowledged before the leader was killed"
    );
    assert!(ok_writes(part_end, u64::MAX) > 0, "writes after the heal");

    // Nothing of the run is left on the daemon.
    let run_id = nodes["docker"]["run_id"].as_str().unwrap();
    let left = docker_objects(&format!("org.kvlab.run={run_id}"));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(out.join("nodes/n1/node.log").is_file());
    assert!(out.join("nodes/n1/events.jsonl").is_file());
}

/// Waits (bounded) until a container of the run `kvlab` process `pid` started is up;
/// returns its run id.
fn wait_for_run_of(pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = Command::new("docker")
            .args([
                "ps",
                "--filter",
                "label=org.kvlab.run",
                "--format",
                "{{.Label \"org.kvlab.run\"}} {{.Label \"org.kvlab.owner\"}}",
            ])
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let mut parts = l.split_whitespace();
            let (run, owner) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if owner.split('/').nth(1) == Some(&pid.to_string()) {
                return run.to_string();
            }
        }
        assert!(Instant::now() < deadline, "the run started no container");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_long_run(dir: &Path) -> std::process::Child {
    let spec = short_spec(dir, 60.0, "[\"partition-halves\"]");
    kvlab()
        .arg("run")
        .arg(&spec)
        .args(["--backend", "docker", "--transport", "udp", "--out"])
        .arg(dir.join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_run_killed_with_sigkill_leaves_labelled_objects_that_kvlab_docker_clean_removes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !docker_available("a_run_killed_with_sigkill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_long_run(dir.path());
    let run_id = wait_for_run_of(child.id());
    // Let all three containers come up, then kill the runner hard.
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    let label = format!("org.kvlab.run={run_id}");
    let left = docker_objects(&label);
    assert!(
        left.len() >= 2,
        "a run killed hard cannot clean up: its objects stay, labelled: {left:?}"
    );
    let o = kvlab().args(["docker", "clean"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("(run {run_id})")), "{text}");
    let left = docker_objects(&label);
    assert!(left.is_empty(), "kvlab docker clean left {left:?}");
}

#[test]
fn ctrl_c_stops_a_docker_run_and_removes_everything_it_created() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !docker_available("ctrl_c_stops_a_docker_run") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_long_run(dir.path());
    let run_id = wait_for_run_of(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "kvlab did not stop on ctrl-c");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    let left = docker_objects(&format!("org.kvlab.run={run_id}"));
    assert!(left.is_empty(), "ctrl-c left {left:?}");
}

/// `configs/docker-ring-join.toml` (the composed `kvlab` node, n1..n3 booted, n4 a
/// joiner), shortened for the test suite: the join at 3 s, 12 s of workload, 6 s of
/// liveness.
fn ring_join_spec(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("configs/docker-ring-join.toml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let line = match key {
            "duration_s" => "duration_s = 12".to_string(),
            "liveness_s" => "liveness_s = 6".to_string(),
            "at_s" => "at_s = 3".to_string(),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join("docker-ring-join-short.toml");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn a_fourth_container_joins_the_ring_later_and_replicas_move_onto_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !docker_available("a_fourth_container_joins_the_ring_later") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = ring_join_spec(dir.path());
    let out = dir.path().join("run");
    let o = kvlab()
        .arg("run")
        .arg(&spec)
        .args(["--backend", "docker", "--transport", "tarpc", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("VALID"), "{text}");
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["backend"], "docker");
    assert_eq!(summary["checker"]["verdict"], "valid", "{summary}");

    // n4's container existed from the start but ran only from the join on: 3 started
    // at boot, n4 once at the join.
    let events = lines(&out.join("events.jsonl"));
    let join = events
        .iter()
        .find(|e| e["kind"] == "fault_start" && e["fault"] == "join")
        .unwrap_or_else(|| panic!("no join in events.jsonl"));
    assert_eq!(join["node"], 4, "{join}");
    let nodes = json(&out.join("nodes.json"));
    assert_eq!(nodes["docker"]["container_starts"], 4, "{nodes}");
    assert_eq!(
        nodes["docker"]["containers"]["n4"]["started"], true,
        "{nodes}"
    );

    // Data moved onto it: replicas created by moves, snapshot bytes sent, and n4 holds
    // replicas at the end.
    let ring = &summary["ring"];
    assert!(ring["replicas_moved"].as_u64().unwrap() > 0, "{ring}");
    assert!(ring["moved_bytes"].as_u64().unwrap() > 0, "{ring}");
    assert!(
        ring["replicas_final"]["n4"].as_u64().unwrap_or(0) > 0,
        "{ring}"
    );

    let run_id = nodes["docker"]["run_id"].as_str().unwrap();
    let left = docker_objects(&format!("org.kvlab.run={run_id}"));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(out.join("nodes/n4/node.log").is_file());
}
