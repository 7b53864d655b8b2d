//! End-to-end runs of the composed node (`system = "kvlab"`) on the simulator: the same
//! seed replays byte for byte (history and the operator log in the events), and a join
//! plus a node lost for good move replicas while the history stays linearizable.

mod common;

use std::path::Path;

use kvlab_experiments::run::{RunOutcome, RunVerdict};
use kvlab_experiments::spec::Spec;

/// Five nodes, four boot; n5 joins at 2 s and n2 is lost for good at 5 s, while the
/// nemesis crashes the meta leader, partitions and pauses nodes.
const RING: &str = r#"
name = "ring-short"
system = "kvlab"
nodes = 5
[time]
duration_s = 10
liveness_s = 6
[workload]
clients = 6
keys = 16
timeout_ms = 500
think_time_ms = 5
[nemesis]
faults = ["partition-halves", "crash-leader", "pause"]
start_after_s = 1
interval_s = 2
fault_duration_s = 1
[[nemesis.schedule]]
at_s = 2
kind = "join"
targets = [5]
[[nemesis.schedule]]
at_s = 5
kind = "kill-permanently"
targets = [2]
[kvlab]
replication_factor = 3
initial_members = [1, 2, 3, 4]
[kvlab.ring]
vnode_count = 8
[kvlab.meta]
voters = [1, 3, 4]
store_heartbeat_interval_ms = 200
schedule_interval_ms = 100
[kvlab.membership]
suspect_hold_ms = 500
replace_down_after_ms = 1500
peer_down_after_ms = 500
[kvlab.scheduler]
node_add_replica_per_s = 20.0
node_remove_replica_per_s = 20.0
[kvlab.swim]
protocol_period_ms = 100
ack_timeout_ms = 40
push_pull_interval_ms = 1000
join_retry_ms = 100
[ring_experiment]
max_operators_unfinished = 0
max_under_replicated_final = 0
[check]
model = "kv"
"#;

fn run(spec: &Spec, seed: u64, dir: &Path) -> RunOutcome {
    common::run_quiet(spec, "ring-short.toml", seed, dir)
}

#[test]
fn same_seed_replays_history_and_operator_log_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::from_toml_str(RING, Path::new("ring-short.toml")).unwrap();
    let a = run(&spec, 3, &tmp.path().join("a"));
    let b = run(&spec, 3, &tmp.path().join("b"));
    for f in ["history.jsonl", "events.jsonl"] {
        let x = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let y = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs of seed 3");
    }
    let events = std::fs::read_to_string(tmp.path().join("a/events.jsonl")).unwrap();
    assert!(events.contains("\"operator_created\""), "no operator log");
    assert_eq!(a.summary.ops, b.summary.ops);
}

/// The protocol a server with two WAL shards runs (`[sim] log_shards = 2`: each vnode's
/// effects scoped to its shard, Raft batches split per shard), stepped by the
/// simulator: the same seed replays byte for byte, the run stays linearizable with the
/// join and the node loss handled, and its messages differ from the one-log run's.
#[test]
fn two_log_shards_replay_byte_for_byte_and_stay_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!("{RING}\n[sim]\nlog_shards = 2\n");
    let spec = Spec::from_toml_str(&text, Path::new("ring-short.toml")).unwrap();
    let a = run(&spec, 4, &tmp.path().join("a"));
    let b = run(&spec, 4, &tmp.path().join("b"));
    for f in ["history.jsonl", "events.jsonl"] {
        let x = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let y = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs of seed 4");
    }
    assert_eq!(a.summary.ops, b.summary.ops);
    assert_eq!(a.verdict, RunVerdict::Valid, "{:?}", a.summary.ring);
    let ring = a.summary.ring.as_ref().expect("ring summary");
    assert!(ring.replicas_moved > 0, "nothing moved");
    let one = Spec::from_toml_str(RING, Path::new("ring-short.toml")).unwrap();
    run(&one, 4, &tmp.path().join("one"));
    let x = std::fs::read(tmp.path().join("a/history.jsonl")).unwrap();
    let y = std::fs::read(tmp.path().join("one/history.jsonl")).unwrap();
    assert_ne!(x, y, "log_shards changed nothing the run saw");
}

#[test]
fn a_join_and_a_node_lost_for_good_move_replicas_and_stay_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::from_toml_str(RING, Path::new("ring-short.toml")).unwrap();
    let mut crashed_meta_leaders = 0;
    for seed in 1..=2 {
        let o = run(&spec, seed, &tmp.path().join(format!("seed-{seed}")));
        assert_eq!(
            o.verdict,
            RunVerdict::Valid,
            "seed {seed}: {:?}",
            o.summary.ring
        );
        let ring = o.summary.ring.as_ref().expect("ring summary");
        assert!(ring.replicas_moved > 0, "seed {seed}: nothing moved");
        assert!(
            ring.operators_done_by_kind.contains_key("replace-down"),
            "seed {seed}: n2's replicas were not replaced: {:?}",
            ring.operators_done_by_kind
        );
        assert!(!ring.replicas_final.contains_key("n2"), "seed {seed}");
        crashed_meta_leaders += o
            .summary
            .faults
            .by_kind
            .get("crash_leader")
            .copied()
            .unwrap_or(0);
    }
    // `crash-leader` aims at the meta group's leader (the placement driver).
    assert!(crashed_meta_leaders > 0, "no meta leader was ever crashed");
}

/// Faults aimed at one layer, each longer than `replace_down_after_ms`: SWIM traffic
/// alone cut or delayed, one vnode group's Raft traffic cut. SWIM declares live nodes
/// dead, a group elects on its majority side, and still no replica moves (the Raft
/// evidence a replacement needs never comes) and the history stays linearizable.
#[test]
fn faults_aimed_at_one_layer_move_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let text = RING
        .replace(
            "faults = [\"partition-halves\", \"crash-leader\", \"pause\"]\nstart_after_s = 1\ninterval_s = 2\nfault_duration_s = 1",
            "faults = [\"swim-partition\", \"swim-delay\", \"group-partition\"]\nstart_after_s = 1\ninterval_s = 4\nfault_duration_s = 3.5",
        )
        .replace(
            "[[nemesis.schedule]]\nat_s = 2\nkind = \"join\"\ntargets = [5]\n[[nemesis.schedule]]\nat_s = 5\nkind = \"kill-permanently\"\ntargets = [2]\n",
            "",
        )
        .replace("initial_members = [1, 2, 3, 4]", "initial_members = [1, 2, 3, 4, 5]")
        .replace("duration_s = 10", "duration_s = 14")
        .replace(
            "[ring_experiment]",
            "[ring_experiment]\nmax_replicas_moved = 0",
        );
    let spec = Spec::from_toml_str(&text, Path::new("ring-layers.toml")).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 1..=3 {
        let o = run(&spec, seed, &tmp.path().join(format!("seed-{seed}")));
        assert_eq!(
            o.verdict,
            RunVerdict::Valid,
            "seed {seed}: {:?}",
            o.summary.ring
        );
        assert_eq!(
            o.summary.ring.as_ref().unwrap().replicas_moved,
            0,
            "seed {seed}"
        );
        kinds.extend(o.summary.faults.by_kind.keys().cloned());
    }
    for k in ["swim_partition", "swim_delay", "group_partition"] {
        assert!(kinds.contains(k), "{k} never ran: {kinds:?}");
    }
}
