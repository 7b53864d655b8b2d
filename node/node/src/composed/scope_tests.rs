//! Log-shard scopes ([`Effect::Scope`]): with `Cx::log_shards` > 1, every record a vnode
//! persists and every Raft message sent in a shard's scope belongs to that shard, so a
//! server may commit each shard on its own; with one log nothing changes. Checked on
//! every step of a small cluster driven by hand until its groups elected leaders and
//! served writes.

use std::collections::VecDeque;

use kvlab_types::{OpOutput, Rng, Time, derive_seed, seeded_rng};

use super::tests::{fast_config, ids, write};
use super::*;

/// Walks one step's effects and checks the scope discipline; returns how many effects
/// ran inside a shard's scope.
fn check_scopes(effects: &[Effect<KvlabMsg>], shards: usize) -> usize {
    let mut scope = Scope::Node;
    let mut scoped = 0;
    for e in effects {
        if let Effect::Scope(s) = e {
            assert!(shards > 1, "a scope with one log");
            scope = *s;
            continue;
        }
        let Scope::Shard(i) = scope else { continue };
        scoped += 1;
        match e {
            Effect::Persist { group, .. } => {
                assert_eq!(log_shard(*group, shards), i as usize, "persist of {group}")
            }
            Effect::Send {
                msg: KvlabMsg::Raft(batch),
                ..
            } => {
                for env in batch {
                    let g = env.msg.group;
                    assert_eq!(log_shard(g, shards), i as usize, "message of {g}");
                }
            }
            _ => {}
        }
    }
    scoped
}

struct Cluster {
    nodes: Vec<KvlabNode>,
    rngs: Vec<Rng>,
    shards: usize,
    now: Time,
    inbox: VecDeque<(NodeId, NodeId, KvlabMsg)>,
    replies: Vec<ClientResponse>,
    scoped: usize,
}

impl Cluster {
    fn new(shards: usize) -> Self {
        let cfg = fast_config(3);
        let members = ids(3);
        let mut c = Cluster {
            nodes: Vec::new(),
            rngs: Vec::new(),
            shards,
            now: Time::ZERO,
            inbox: VecDeque::new(),
            replies: Vec::new(),
            scoped: 0,
        };
        for &id in &members {
            let mut rng = seeded_rng(derive_seed(7, "node", u64::from(id.0)));
            let mut out = Out::new();
            let mut cx = Cx::new(id, Time::ZERO, &mut rng).with_log_shards(shards);
            let node = KvlabNode::boot(&mut cx, &cfg, &members, Recovery::default(), &mut out);
            c.nodes.push(node);
            c.rngs.push(rng);
            c.absorb(id, out);
        }
        c
    }

    fn absorb(&mut self, from: NodeId, mut out: Out<KvlabMsg>) {
        self.scoped += check_scopes(out.effects(), self.shards);
        for e in out.drain() {
            match e {
                Effect::Send { to, msg } => self.inbox.push_back((from, to, msg)),
                Effect::Reply(r) => self.replies.push(r),
                _ => {}
            }
        }
    }

    fn step(&mut self, n: NodeId, f: impl FnOnce(&mut KvlabNode, &mut Cx<'_>, &mut Out<KvlabMsg>)) {
        let i = (n.0 - 1) as usize;
        let mut out = Out::new();
        let mut cx = Cx::new(n, self.now, &mut self.rngs[i]).with_log_shards(self.shards);
        f(&mut self.nodes[i], &mut cx, &mut out);
        self.absorb(n, out);
    }

    /// Ticks every node, then delivers every message (and what they cause).
    fn round(&mut self) {
        self.now = self.now + std::time::Duration::from_millis(20);
        for n in ids(3) {
            self.step(n, |p, cx, out| p.on_timer(cx, TICK_TIMER, out));
        }
        while let Some((from, to, msg)) = self.inbox.pop_front() {
            self.step(to, |p, cx, out| p.on_msg(cx, from, msg, out));
        }
    }
}

#[test]
fn with_two_log_shards_every_scoped_effect_belongs_to_its_shard() {
    let mut c = Cluster::new(2);
    for _ in 0..150 {
        c.round();
    }
    for seq in 1..=32 {
        let key = format!("k{seq}");
        c.step(NodeId(1), |p, cx, out| {
            p.on_client(cx, write(1, seq, &key, 1), out)
        });
        for _ in 0..10 {
            c.round();
        }
    }
    let ok = c
        .replies
        .iter()
        .filter(|r| r.result == Ok(OpOutput::Done))
        .count();
    assert!(ok >= 30, "writes answered: {ok} of 32: {:?}", c.replies);
    assert!(c.scoped > 1_000, "scoped effects: {}", c.scoped);
}

#[test]
fn with_one_log_no_scope_is_emitted() {
    let mut c = Cluster::new(1);
    for _ in 0..100 {
        c.round();
    }
    assert_eq!(c.scoped, 0);
}
