//! Benchmark of the sans-IO core alone: entries committed per second of CPU by a 3-node
//! group in an in-memory loop with no network delay and no disk (every Ready is carried
//! out at once). Run with `cargo bench -p kvlab-raft --bench raft_core`.

use std::collections::VecDeque;
use std::time::Instant;

use kvlab_raft::{GroupId, RaftConfig, RaftGroup, RaftMessage, Role};
use kvlab_types::{NodeId, seeded_rng};

/// Entries proposed per leader step (client commands batched by the caller).
const PROPOSALS_PER_STEP: usize = 64;
/// Bytes per command.
const COMMAND_BYTES: usize = 64;
/// Entries to commit in the measured run.
const TARGET_ENTRIES: u64 = 2_000_000;

fn main() {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let mut rng = seeded_rng(42);
    let cfg = RaftConfig::default();
    let mut nodes: Vec<RaftGroup> = ids
        .iter()
        .map(|&id| RaftGroup::new(GroupId(1), id, &ids, cfg.clone(), &mut rng).expect("config"))
        .collect();
    let mut queue: VecDeque<RaftMessage> = VecDeque::new();
    let mut applied = [0u64; 3];
    let drain = |nodes: &mut Vec<RaftGroup>,
                 queue: &mut VecDeque<RaftMessage>,
                 applied: &mut [u64; 3],
                 rng: &mut kvlab_types::Rng| {
        loop {
            for (i, g) in nodes.iter_mut().enumerate() {
                if g.has_ready() {
                    let rd = g.ready();
                    queue.extend(rd.messages);
                    applied[i] += rd.committed_entries.len() as u64;
                }
            }
            let Some(m) = queue.pop_front() else { break };
            let to = (m.to.0 - 1) as usize;
            nodes[to].step(m, rng).expect("valid message");
        }
    };
    while nodes[0].role() != Role::Leader {
        nodes[0].tick(&mut rng);
        drain(&mut nodes, &mut queue, &mut applied, &mut rng);
    }
    let start_applied = applied[0];
    let cmd = vec![7u8; COMMAND_BYTES];
    let t0 = Instant::now();
    while applied[0] - start_applied < TARGET_ENTRIES {
        for _ in 0..PROPOSALS_PER_STEP {
            nodes[0].propose(cmd.clone()).expect("leader accepts");
        }
        drain(&mut nodes, &mut queue, &mut applied, &mut rng);
    }
    let secs = t0.elapsed().as_secs_f64();
    let committed = applied[0] - start_applied;
    assert!(
        applied
            .iter()
            .all(|&a| a >= applied[0] - PROPOSALS_PER_STEP as u64)
    );
    println!(
        "raft_core: 3 nodes, {COMMAND_BYTES}-byte commands, {PROPOSALS_PER_STEP} proposals/step: \
         {committed} entries committed in {secs:.3} s = {:.0} entries/s",
        committed as f64 / secs
    );
}
