//! A small test protocol, [`Probe`], commanded through client requests so that scenario
//! tests can make one node send, persist, sync, snapshot or arm timers at a chosen time,
//! and then inspect what every node saw.
#![allow(dead_code)] // each test file uses a different part of it

use std::time::Duration;

use kvlab_sim::{LatencyDist, SimConfig};
use kvlab_types::{
    ClientRequest, Cx, GroupId, KvOp, NodeEvent, NodeId, OpOutput, Out, Protocol, Recovery,
    RequestId, Time, TimerId, TimerSpace,
};

/// The probe's gossip timer.
pub const GOSSIP_TIMER: TimerId = TimerId::new(TimerSpace::Test, 99);

/// Timer `id` of the probe's `timer:` command.
pub fn test_timer(id: u64) -> TimerId {
    TimerId::new(TimerSpace::Test, id)
}
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The messages probes exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Answered with a pong when `ProbeConfig::reply_pong` is on.
    Ping(i64),
    /// The answer to a ping.
    Pong(i64),
}

/// How probes behave besides obeying commands.
#[derive(Clone, Debug, Default)]
pub struct ProbeConfig {
    /// Answer every ping with a pong.
    pub reply_pong: bool,
    /// Arm timer 99 at boot and, every time it fires, ping a random peer and re-arm it
    /// after a random delay in `[1, gossip_ms]` (randomness from `Cx::rng`).
    pub gossip_ms: Option<u64>,
}

/// A node that records everything it sees.
#[derive(Debug)]
pub struct Probe {
    pub id: NodeId,
    pub peers: Vec<NodeId>,
    pub config: ProbeConfig,
    /// Messages received: sender, message, local time.
    pub received: Vec<(NodeId, Msg, Time)>,
    /// Timers fired: timer, local time.
    pub fired: Vec<(TimerId, Time)>,
    /// What storage gave at boot.
    pub recovered: Recovery,
    /// Last value persisted (or recovered).
    pub counter: i64,
}

fn decode(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().expect("probe records are 8 bytes"))
}

impl Protocol for Probe {
    type Msg = Msg;
    type Config = ProbeConfig;
    /// The probe's `persist` command replies before any sync, so that tests can watch a
    /// crash lose an acknowledged but unsynced record.
    const SENDS_UNSYNCED_STATE: bool = true;

    fn boot(
        cx: &mut Cx<'_>,
        config: &ProbeConfig,
        peers: &[NodeId],
        recovered: Recovery,
        out: &mut Out<Msg>,
    ) -> Self {
        let state = recovered.group(GroupId::DEFAULT);
        let mut counter = state.snapshot.as_deref().map(decode).unwrap_or(0);
        if let Some(last) = state.records.last() {
            counter = decode(last);
        }
        if let Some(ms) = config.gossip_ms {
            let first = cx.rng.random_range(1..=ms);
            out.set_timer(GOSSIP_TIMER, Duration::from_millis(first));
        }
        out.event(NodeEvent::NodeStarted {
            role: "probe".into(),
            records: state.records.len() as u64,
            snapshot: state.snapshot.is_some(),
            term: 0,
            applied: counter as u64,
        });
        Probe {
            id: cx.id,
            peers: peers.to_vec(),
            config: config.clone(),
            received: Vec::new(),
            fired: Vec::new(),
            recovered,
            counter,
        }
    }

    fn on_msg(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: Msg, out: &mut Out<Msg>) {
        if let (true, Msg::Ping(v)) = (self.config.reply_pong, &msg) {
            out.send(from, Msg::Pong(*v));
        }
        self.received.push((from, msg, cx.now));
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<Msg>) {
        self.fired.push((timer, cx.now));
        out.event(NodeEvent::TimerFired { timer });
        if let (GOSSIP_TIMER, Some(ms)) = (timer, self.config.gossip_ms) {
            let peer = self.peers[cx.rng.random_range(0..self.peers.len())];
            let v: i64 = cx.rng.random_range(0..1_000_000);
            out.send(peer, Msg::Ping(v));
            if v % 7 == 0 {
                self.counter += 1;
                out.persist(GroupId::DEFAULT, self.counter.to_le_bytes().to_vec());
                out.sync();
                out.send(peer, Msg::Ping(-self.counter));
            }
            let next = cx.rng.random_range(1..=ms);
            out.set_timer(GOSSIP_TIMER, Duration::from_millis(next));
        }
    }

    fn on_client(&mut self, _cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<Msg>) {
        let (cmd, value) = match &req.op {
            KvOp::Read { .. } => {
                out.reply(req.id, Ok(OpOutput::Read(Some(self.counter))));
                return;
            }
            KvOp::Write { key, value } => (key.clone(), *value),
            _ => {
                out.reply(req.id, Ok(OpOutput::Done));
                return;
            }
        };
        let (verb, arg) = cmd.split_once(':').unwrap_or((cmd.as_str(), "0"));
        let arg: u64 = arg.parse().expect("probe command argument is a number");
        match verb {
            "send" => out.send(NodeId(arg as u32), Msg::Ping(value)),
            "burst" => {
                for i in 0..value {
                    out.send(NodeId(arg as u32), Msg::Ping(i));
                }
            }
            "persist" => {
                self.counter = value;
                out.persist(GroupId::DEFAULT, value.to_le_bytes().to_vec());
            }
            "incr" => {
                self.counter += 1;
                out.persist(GroupId::DEFAULT, self.counter.to_le_bytes().to_vec());
                out.sync();
            }
            "incr_send" => {
                self.counter += 1;
                out.persist(GroupId::DEFAULT, self.counter.to_le_bytes().to_vec());
                out.sync();
                out.send(NodeId(arg as u32), Msg::Ping(self.counter));
            }
            "persist_too_large" => out.persist(
                GroupId::DEFAULT,
                vec![0; kvlab_storage::MAX_RECORD_BYTES + 1],
            ),
            "snapshot" => out.save_snapshot(GroupId::DEFAULT, self.counter.to_le_bytes().to_vec()),
            "timer" => out.set_timer(test_timer(arg), Duration::from_millis(value as u64)),
            "cancel" => out.cancel_timer(test_timer(arg)),
            other => panic!("unknown probe command {other}"),
        }
        out.reply(req.id, Ok(OpOutput::Done));
    }
}

/// A write request whose key is a probe command.
pub fn cmd(seq: u64, command: &str, value: i64) -> ClientRequest {
    ClientRequest {
        id: RequestId { client: 1, seq },
        op: KvOp::Write {
            key: command.to_string(),
            value,
        },
    }
}

/// A read request (answered with the probe's counter).
pub fn read(seq: u64) -> ClientRequest {
    ClientRequest {
        id: RequestId { client: 1, seq },
        op: KvOp::Read { key: "k".into() },
    }
}

/// Constant latencies that make arrival times exact: node-to-node 1 ms, client 0.5 ms,
/// fsync 2 ms.
pub fn exact_config() -> SimConfig {
    let mut c = SimConfig::default();
    c.network.latency = LatencyDist::Constant { ms: 1.0 };
    c.network.client_latency = LatencyDist::Constant { ms: 0.5 };
    c.disk.fsync_latency = LatencyDist::Constant { ms: 2.0 };
    c
}

/// Nodes `n1..=n{count}`.
pub fn ids(count: u32) -> Vec<NodeId> {
    (1..=count).map(NodeId).collect()
}

/// Milliseconds (possibly fractional) as a [`Time`].
pub fn ms(v: f64) -> Time {
    Time((v * 1e6).round() as u64)
}
