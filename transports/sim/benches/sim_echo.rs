//! Throughput of the simulator itself: N nodes ping-ponging a trivial message, reported
//! as delivered messages per second of wall time.
//!
//! Run with `cargo bench -p kvlab-sim --bench sim_echo`. The wall clock is read here, in
//! the benchmark, never inside the simulation.

use std::time::Instant;

use kvlab_sim::{LatencyDist, Sim, SimConfig};
use kvlab_types::{ClientRequest, Cx, NodeId, Out, Protocol, Recovery, Time, TimerId};

/// Every node keeps `window` pings bouncing with each peer: a message is answered by
/// sending it straight back.
#[derive(Debug)]
struct Echo;

impl Protocol for Echo {
    type Msg = u64;
    type Config = u64; // pings in flight per ordered pair of nodes

    fn boot(
        cx: &mut Cx<'_>,
        window: &u64,
        peers: &[NodeId],
        _: Recovery,
        out: &mut Out<u64>,
    ) -> Self {
        for &peer in peers.iter().filter(|&&p| p != cx.id) {
            for i in 0..*window {
                out.send(peer, i);
            }
        }
        Echo
    }

    fn on_msg(&mut self, _: &mut Cx<'_>, from: NodeId, msg: u64, out: &mut Out<u64>) {
        out.send(from, msg.wrapping_add(1));
    }

    fn on_timer(&mut self, _: &mut Cx<'_>, _: TimerId, _: &mut Out<u64>) {}

    fn on_client(&mut self, _: &mut Cx<'_>, _: ClientRequest, _: &mut Out<u64>) {}
}

/// Like [`Echo`], but every answer is persisted and synced first (`Persist, Sync, Send`),
/// so each message also costs a write-ahead-log append, an fsync event and a sync gate.
#[derive(Debug)]
struct DurableEcho;

impl Protocol for DurableEcho {
    type Msg = u64;
    type Config = u64;

    fn boot(
        cx: &mut Cx<'_>,
        window: &u64,
        peers: &[NodeId],
        r: Recovery,
        out: &mut Out<u64>,
    ) -> Self {
        Echo::boot(cx, window, peers, r, out);
        DurableEcho
    }

    fn on_msg(&mut self, _: &mut Cx<'_>, from: NodeId, msg: u64, out: &mut Out<u64>) {
        out.persist(kvlab_types::GroupId::DEFAULT, msg.to_le_bytes().to_vec());
        out.sync();
        out.send(from, msg.wrapping_add(1));
    }

    fn on_timer(&mut self, _: &mut Cx<'_>, _: TimerId, _: &mut Out<u64>) {}

    fn on_client(&mut self, _: &mut Cx<'_>, _: ClientRequest, _: &mut Out<u64>) {}
}

fn measure(label: &str, latency: LatencyDist, nodes: u32, window: u64, virtual_s: u64) {
    measure_protocol::<Echo>(label, latency, nodes, window, virtual_s);
}

fn measure_protocol<P: Protocol<Config = u64>>(
    label: &str,
    latency: LatencyDist,
    nodes: u32,
    window: u64,
    virtual_s: u64,
) {
    let mut config = SimConfig::default();
    config.network.latency = latency;
    config.max_events = u64::MAX;
    // Large segments: this measures the simulator, not log rolling.
    config.disk.storage.segment_size_bytes = 1 << 30;
    let ids: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
    let mut sim = Sim::<P>::new(config, 1, &ids, window).expect("valid sim");
    let mut out = Vec::new();
    let start = Instant::now();
    sim.run_until(Time::from_secs(virtual_s), &mut out)
        .expect("run");
    let wall_s = start.elapsed().as_secs_f64();
    let delivered = sim.stats().messages_delivered;
    println!(
        "{label:<34} nodes={nodes:<3} in_flight={:<6} delivered={delivered:<9} wall_s={wall_s:.3} delivered_per_s={:.0}",
        u64::from(nodes) * u64::from(nodes - 1) * window,
        delivered as f64 / wall_s
    );
}

fn main() {
    println!("sim_echo: delivered messages per second of wall time (one core)");
    // Warm-up so that the first measurement does not pay for page faults.
    measure("warm-up", LatencyDist::Constant { ms: 1.0 }, 3, 10, 5);
    measure(
        "constant 1 ms",
        LatencyDist::Constant { ms: 1.0 },
        3,
        10,
        100,
    );
    measure(
        "constant 1 ms",
        LatencyDist::Constant { ms: 1.0 },
        10,
        10,
        10,
    );
    measure(
        "uniform 0.5..2 ms",
        LatencyDist::Uniform {
            min_ms: 0.5,
            max_ms: 2.0,
        },
        5,
        20,
        10,
    );
    measure(
        "exponential mean 1 ms (0.1..10)",
        LatencyDist::Exponential {
            mean_ms: 1.0,
            min_ms: 0.1,
            max_ms: 10.0,
        },
        5,
        20,
        10,
    );
    measure_protocol::<DurableEcho>(
        "persist+sync+send, constant 1 ms",
        LatencyDist::Constant { ms: 1.0 },
        3,
        10,
        10,
    );
}
