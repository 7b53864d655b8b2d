mod common;
use common::*;
use kvlab_types::{derive_seed, seeded_rng};
#[test]
fn dbg_seed() {
    for seed in 0..5 {
        let mut net = Net::new(3, test_cfg(), seed);
        let mut rng = seeded_rng(derive_seed(seed, "chaos", 3));
        net.chaos(&mut rng, 3000, &Faults::all()).unwrap();
        println!("seed {seed} stats {:?} queue {}", net.stats, net.queue.len());
        for (id, nd) in &net.nodes {
            if let Some(r) = &nd.raft {
                println!("  {id:?} {:?} t{} last {} commit {} applied {} held {} progress {:?}", r.role(), r.term(), r.last_index(), r.commit_index(), r.applied_index(), nd.wal.len()-nd.durable_len,
                  ids(3).iter().map(|p| r.progress(*p)).collect::<Vec<_>>());
            } else { println!("  {id:?} down"); }
        }
    }
}
