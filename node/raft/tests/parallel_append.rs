//! The leader writes its log in parallel with replication (Raft thesis §10.2.1,
//! `RaftConfig::parallel_leader_append`): its AppendEntries leave before its own sync,
//! and it counts itself towards a commit only once that sync returned.
//!
//! The scenario: a 3-node group led by n1; n1 proposes `x` and sends it to n2 only (the
//! link to n3 is cut) before its own fsync; n2 persists and acknowledges. Had n1 counted
//! its unsynced copy, `x` would be committed by {n1, n2} and n2 told so. n1 then crashes
//! before its fsync, losing `x`; n3 (which never saw `x`) is elected with the vote of the
//! restarted n1 and writes its own entry at `x`'s index. Counting the leader early turns
//! this into two different entries applied at one index; waiting for its sync does not.

mod common;

use common::*;
use kvlab_raft::{MessageBody, RaftConfig, Role};
use kvlab_types::NodeId;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

/// What the scenario saw.
#[derive(Debug)]
struct Seen {
    /// n1's commit index after n2's acknowledgement, before n1's own sync.
    leader_commit_before_sync: u64,
    /// n2's commit index at the same moment.
    follower_commit_before_sync: u64,
    /// `x`'s index.
    x_index: u64,
    /// Whether n1 sent itself a LocalAppended (to be delivered after its sync).
    self_ack_held: bool,
    /// The outcome of the rest (n1's crash, n3's election, convergence): an invariant
    /// violation is an `Err`.
    rest: Result<(), String>,
}

fn scenario(cfg: RaftConfig) -> Result<Seen, String> {
    let mut net = Net::new(3, cfg, 7);
    net.elect(N1)?;
    if net.raft(N1).role() != Role::Leader {
        return Err("n1 was not elected".into());
    }
    net.auto_sync = false;
    net.blocked.insert((N1, N3));
    let x = net.propose(N1, b"x").map_err(|e| e.to_string())?;
    // n1's append to n2 is in flight; n1's own sync is not done.
    net.deliver_all()?;
    while net.complete_sync(N2)? {}
    net.deliver_all()?;
    while net.complete_sync(N2)? {}
    net.deliver_all()?;
    let seen_commit = (net.raft(N1).commit_index(), net.raft(N2).commit_index());
    let self_ack_held = net.raft(N1).config().parallel_leader_append
        && !net.raft(N1).config().unsafe_count_leader_before_sync;
    let rest = crash_and_elect_n3(&mut net);
    Ok(Seen {
        leader_commit_before_sync: seen_commit.0,
        follower_commit_before_sync: seen_commit.1,
        x_index: x.index,
        self_ack_held,
        rest,
    })
}

/// n1 crashes before its fsync (its unsynced `x` is lost), restarts; n2 is cut off; n3
/// campaigns and wins with n1's vote, commits its own entry; then everything heals.
fn crash_and_elect_n3(net: &mut Net) -> Result<(), String> {
    net.crash(N1, 0);
    net.restart(N1)?;
    net.heal();
    net.isolate(N2);
    net.auto_sync = true;
    for n in [N1, N2, N3] {
        while net.complete_sync(n)? {}
    }
    net.queue.clear();
    for _ in 0..200 {
        if net.raft(N3).role() == Role::Leader {
            break;
        }
        // Only n3's clock runs, so n3 is the one that campaigns.
        net.tick(N3)?;
        net.deliver_all()?;
    }
    if net.raft(N3).role() != Role::Leader {
        return Err("n3 was not elected".into());
    }
    net.propose(N3, b"y").map_err(|e| e.to_string())?;
    net.deliver_all()?;
    net.heal();
    net.converge(b"final")
}

#[test]
fn a_leader_that_crashes_before_its_own_fsync_never_counted_itself() {
    let cfg = RaftConfig {
        parallel_leader_append: true,
        ..test_cfg()
    };
    let seen = scenario(cfg).expect("scenario");
    assert!(seen.self_ack_held);
    // n2 holds x durably and acknowledged it, but n1's copy is not durable: one of
    // three, no commit.
    assert!(
        seen.leader_commit_before_sync < seen.x_index,
        "the leader counted its unsynced entry: {seen:?}"
    );
    assert!(seen.follower_commit_before_sync < seen.x_index, "{seen:?}");
    // And nothing went wrong after n1 lost x: n3's entry took x's index everywhere.
    seen.rest.expect("safe after the leader's crash");
}

#[test]
fn counting_the_leader_before_its_fsync_commits_what_a_crash_then_loses() {
    // The same scenario with the deliberately broken switch: the check above fails, and
    // the run ends in a state machine safety violation.
    let cfg = RaftConfig {
        parallel_leader_append: true,
        unsafe_count_leader_before_sync: true,
        ..test_cfg()
    };
    let seen = scenario(cfg).expect("scenario");
    assert!(seen.leader_commit_before_sync >= seen.x_index, "{seen:?}");
    assert!(seen.follower_commit_before_sync >= seen.x_index, "{seen:?}");
    let err = seen.rest.expect_err("two entries applied at one index");
    assert!(err.contains("state machine safety"), "{err}");
}

#[test]
fn the_leader_commits_once_its_own_sync_returns() {
    let cfg = RaftConfig {
        parallel_leader_append: true,
        ..test_cfg()
    };
    let mut net = Net::new(3, cfg, 3);
    net.elect(N1).unwrap();
    net.auto_sync = false;
    let x = net.propose(N1, b"x").unwrap();
    // The appends left before n1's sync: both followers have x in flight.
    let early: Vec<_> = net
        .queue
        .iter()
        .filter(|m| m.from == N1 && matches!(m.body, MessageBody::AppendEntries { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(early, vec![N2, N3]);
    net.deliver_all().unwrap();
    for n in [N2, N3] {
        while net.complete_sync(n).unwrap() {}
    }
    net.deliver_all().unwrap();
    // Two followers acknowledged: a majority without n1, so x commits before n1's sync.
    assert!(net.raft(N1).commit_index() >= x.index);
    // n1's sync returns and its LocalAppended is delivered: nothing changes but its match.
    while net.complete_sync(N1).unwrap() {}
    net.deliver_all().unwrap();
    assert_eq!(
        net.raft(N1).progress(N1).unwrap().match_index,
        net.raft(N1).last_index()
    );
}

#[test]
fn a_local_appended_from_a_peer_is_refused() {
    let cfg = RaftConfig {
        parallel_leader_append: true,
        ..test_cfg()
    };
    let mut net = Net::new(3, cfg, 5);
    net.elect(N1).unwrap();
    let term = net.raft(N1).term();
    let forged = kvlab_raft::RaftMessage {
        group: GROUP,
        from: N2,
        to: N1,
        term,
        body: MessageBody::LocalAppended { index: 1 },
    };
    let err = net.deliver(forged).expect_err("refused");
    assert!(err.contains("only ever sent by a node to itself"), "{err}");
}
