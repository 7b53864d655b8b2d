//! Group commit over W WAL shards, pipelined with the protocol's steps.
//!
//! A node's groups are spread over `W = server.workers` write-ahead logs by group id
//! ([`shard_of`]: `group % W`, CockroachDB's static modulo). Each shard has one writer:
//! at most one blocking task at a time appends that shard's queued records and fsyncs
//! them (TiKV's store-io writer). The driver never waits for a disk:
//!
//! - `Effect::Persist` queues the record on its group's shard (`Commit::persist`);
//! - `Effect::Sync` sets a **barrier**: every record queued so far, on every shard, must
//!   be durable before anything the step sends or replies after it
//!   (`Commit::barrier`); in a shard's scope ([`Effect::Scope`]) only that shard's
//!   records;
//! - a `Send` or `Reply` waits for every barrier set before it, or in a shard's scope for
//!   that shard's part of them (`Commit::send_or_hold`); held items form one FIFO lane
//!   per shard scope and one for the node scope, so none overtakes an earlier held one of
//!   its lane, and a shard's items do not wait for another shard's disk;
//! - after each batch of steps the driver starts a writer on every idle shard with
//!   queued records (`Commit::pump`); records queued while a writer runs go into that
//!   shard's next batch: the disk's latency sets the batch size, not a timer;
//! - when a writer returns (`Commit::on_done`), the barriers it satisfies release
//!   their held items, oldest first.
//!
//! Per group, records reach the disk in the order they were persisted (one shard, one
//! writer at a time, FIFO queue), so recovery sees a prefix of each group's records.
//! Without scopes every barrier is node-wide and W > 1 only buys parallel fsyncs, each
//! barrier waiting for the slowest; with them (the composed node scopes each vnode's
//! effects and batches its messages per shard) each shard commits on its own. A persist
//! of another shard's group inside a shard's scope turns the rest of that scope into the
//! node scope: a protocol's mistake costs waiting, never durability.
//!
//! [`Effect::Scope`]: kvlab_types::Effect::Scope
//!
//! The simulator does not use this module: it applies effects in order at simulated
//! times (`kvlab-sim`), with one log per node.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kvlab_storage::{StorageError, WalStats};
use kvlab_types::{ClientResponse, GroupId, NodeId, Scope};
use tokio::sync::mpsc;

use crate::driver::{DriverStats, DurableStore};

/// The most WAL shards (`server.workers`) a node may have.
pub const MAX_WORKERS: usize = 16;

/// Bytes of records queued (not yet handed to a writer) above which the driver takes no
/// new input until a writer returns: the disk's backpressure on the protocol.
pub const MAX_QUEUED_IO_BYTES: usize = 64 << 20;

/// The shard of `group` among `workers` WAL shards ([`kvlab_types::log_shard`]).
pub fn shard_of(group: GroupId, workers: usize) -> usize {
    kvlab_types::log_shard(group, workers)
}

/// What a held item waits for.
#[derive(Debug)]
enum Need {
    /// Records of one shard durable up to a count.
    Shard(usize, u64),
    /// Every shard's records durable up to its count.
    Node(Vec<u64>),
}

/// A send or reply held back until its barrier is durable.
#[derive(Debug)]
pub(crate) enum Held<M> {
    Send { to: NodeId, msg: M },
    Reply(ClientResponse),
}

/// What a finished writer reports.
#[derive(Debug)]
pub(crate) struct IoDone {
    shard: usize,
    /// The shard's queued-record count this batch covers.
    upto: u64,
    result: Result<(), (&'static str, StorageError)>,
    took_us: u64,
}

fn lock<S>(store: &Mutex<S>) -> MutexGuard<'_, S> {
    // Only the driver and one writer per shard use a store, one at a time; a poisoned
    // lock means a panic inside the store, after which the driver stops anyway.
    store.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Shard<S> {
    store: Arc<Mutex<S>>,
    queue: Vec<(GroupId, Vec<u8>)>,
    queue_bytes: usize,
    /// Records ever queued on this shard.
    queued: u64,
    /// Records known durable (covered by a returned writer).
    durable: u64,
    in_flight: bool,
}

/// The WAL shards of one node and the sends and replies waiting for them.
#[derive(Debug)]
pub(crate) struct Commit<S, M> {
    shards: Vec<Shard<S>>,
    /// Per shard, the queued count the newest barrier on it requires.
    frontier: Vec<u64>,
    /// The current step's scope: a shard, or `None` for the node.
    scope: Option<usize>,
    /// Held items with what they wait for: one FIFO lane per shard, then the node's.
    lanes: Vec<VecDeque<(Need, Held<M>)>>,
    done_tx: mpsc::UnboundedSender<IoDone>,
    done_rx: mpsc::UnboundedReceiver<IoDone>,
}

impl<S: DurableStore, M> Commit<S, M> {
    /// One shard per store, in shard order.
    pub(crate) fn new(stores: Vec<S>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let workers = stores.len();
        Commit {
            shards: stores
                .into_iter()
                .map(|s| Shard {
                    store: Arc::new(Mutex::new(s)),
                    queue: Vec::new(),
                    queue_bytes: 0,
                    queued: 0,
                    durable: 0,
                    in_flight: false,
                })
                .collect(),
            frontier: vec![0; workers],
            scope: None,
            lanes: (0..=workers).map(|_| VecDeque::new()).collect(),
            done_tx,
            done_rx,
        }
    }

    /// The number of shards.
    pub(crate) fn workers(&self) -> usize {
        self.shards.len()
    }

    /// A new step begins, in the node's scope.
    pub(crate) fn begin_step(&mut self) {
        self.scope = None;
    }

    /// `Effect::Scope`: a shard number beyond the shards is taken as the node's scope.
    pub(crate) fn set_scope(&mut self, scope: Scope) {
        self.scope = match scope {
            Scope::Shard(i) if (i as usize) < self.shards.len() => Some(i as usize),
            _ => None,
        };
    }

    /// Queues a record of `group` on its shard (`Effect::Persist`).
    pub(crate) fn persist(&mut self, group: GroupId, record: Vec<u8>) {
        let i = shard_of(group, self.shards.len());
        if self.scope.is_some_and(|s| s != i) {
            // Not this scope's group: what follows may depend on it.
            self.scope = None;
        }
        let shard = &mut self.shards[i];
        shard.queue_bytes += record.len();
        shard.queue.push((group, record));
        shard.queued += 1;
    }

    /// Sets a barrier at everything queued so far, on the scope's shard or on every shard
    /// (`Effect::Sync`).
    pub(crate) fn barrier(&mut self) {
        match self.scope {
            Some(i) => self.frontier[i] = self.shards[i].queued,
            None => {
                for (f, s) in self.frontier.iter_mut().zip(&self.shards) {
                    *f = s.queued;
                }
            }
        }
    }

    /// Whether anything is held.
    #[cfg(test)]
    pub(crate) fn holding(&self) -> bool {
        self.lanes.iter().any(|l| !l.is_empty())
    }

    fn satisfied(&self, need: &Need) -> bool {
        match need {
            Need::Shard(i, n) => self.shards[*i].durable >= *n,
            Need::Node(v) => self.shards.iter().zip(v).all(|(s, &n)| s.durable >= n),
        }
    }

    /// `item` if it may leave now, or `None` after holding it behind the barriers it
    /// needs (its scope's part of every barrier set so far).
    pub(crate) fn send_or_hold(&mut self, item: Held<M>) -> Option<Held<M>> {
        let (lane, need) = match self.scope {
            Some(i) => (i, Need::Shard(i, self.frontier[i])),
            None => {
                let durable = self
                    .shards
                    .iter()
                    .zip(&self.frontier)
                    .all(|(s, &f)| s.durable >= f);
                if durable && self.lanes[self.shards.len()].is_empty() {
                    return Some(item);
                }
                (self.shards.len(), Need::Node(self.frontier.clone()))
            }
        };
        if self.lanes[lane].is_empty() && self.satisfied(&need) {
            return Some(item);
        }
        self.lanes[lane].push_back((need, item));
        None
    }

    /// Whether the queued bytes are past [`MAX_QUEUED_IO_BYTES`].
    pub(crate) fn backlogged(&self) -> bool {
        self.shards.iter().map(|s| s.queue_bytes).sum::<usize>() > MAX_QUEUED_IO_BYTES
    }

    /// Whether any writer runs or any record waits for one.
    pub(crate) fn busy(&self) -> bool {
        self.shards
            .iter()
            .any(|s| s.in_flight || !s.queue.is_empty())
    }

    /// Starts a writer on every idle shard with queued records. Must run inside a tokio
    /// runtime.
    pub(crate) fn pump(&mut self, stats: &mut DriverStats)
    where
        S: 'static,
    {
        for (i, shard) in self.shards.iter_mut().enumerate() {
            if shard.in_flight || shard.queue.is_empty() {
                continue;
            }
            shard.in_flight = true;
            shard.queue_bytes = 0;
            let batch = std::mem::take(&mut shard.queue);
            let upto = shard.queued;
            let store = shard.store.clone();
            let tx = self.done_tx.clone();
            stats.syncs_requested += 1;
            tokio::task::spawn_blocking(move || {
                let begun = Instant::now();
                let result = write_batch(&mut *lock(&store), batch);
                let took_us = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = tx.send(IoDone {
                    shard: i,
                    upto,
                    result,
                    took_us,
                });
            });
        }
    }

    /// The next writer to return (pending forever when none runs).
    pub(crate) async fn next_done(&mut self) -> IoDone {
        match self.done_rx.recv().await {
            Some(done) => done,
            // The sender lives in `self`: the channel never closes.
            None => std::future::pending().await,
        }
    }

    /// Takes a returned writer into account and returns what it releases, in order; a
    /// failed write or fsync is returned as the error that stops the node.
    pub(crate) fn on_done(
        &mut self,
        done: IoDone,
        stats: &mut DriverStats,
    ) -> Result<Vec<Held<M>>, (&'static str, StorageError)> {
        let shard = &mut self.shards[done.shard];
        shard.in_flight = false;
        done.result?;
        shard.durable = shard.durable.max(done.upto);
        stats.syncs_done += 1;
        stats.sync_us_total = stats.sync_us_total.saturating_add(done.took_us);
        stats.sync_us_max = stats.sync_us_max.max(done.took_us);
        let mut released = Vec::new();
        for lane in 0..self.lanes.len() {
            while self.lanes[lane]
                .front()
                .is_some_and(|(need, _)| self.satisfied(need))
            {
                if let Some((_, item)) = self.lanes[lane].pop_front() {
                    released.push(item);
                }
            }
        }
        Ok(released)
    }

    /// Writes everything queued and waits for every writer; returns what that releases.
    pub(crate) async fn drain(
        &mut self,
        stats: &mut DriverStats,
    ) -> Result<Vec<Held<M>>, (&'static str, StorageError)>
    where
        S: 'static,
    {
        let mut released = Vec::new();
        while self.busy() {
            self.pump(stats);
            let done = self.next_done().await;
            released.extend(self.on_done(done, stats)?);
        }
        Ok(released)
    }

    /// The store of `group`'s shard.
    pub(crate) fn store_of(&self, group: GroupId) -> Arc<Mutex<S>> {
        self.shards[shard_of(group, self.shards.len())]
            .store
            .clone()
    }

    /// Every shard's store.
    pub(crate) fn stores(&self) -> impl Iterator<Item = Arc<Mutex<S>>> + '_ {
        self.shards.iter().map(|s| s.store.clone())
    }

    /// The shards' log counters, added up.
    pub(crate) fn wal_stats(&self) -> WalStats {
        let mut sum = WalStats::default();
        for s in &self.shards {
            sum += &lock(&s.store).wal_stats();
        }
        sum
    }
}

/// One writer's work: append the batch, then make it durable.
fn write_batch<S: DurableStore>(
    store: &mut S,
    batch: Vec<(GroupId, Vec<u8>)>,
) -> Result<(), (&'static str, StorageError)> {
    for (group, record) in &batch {
        store.persist(*group, record).map_err(|e| ("persist", e))?;
    }
    store.sync().map_err(|e| ("sync", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Mem {
        records: Vec<(GroupId, Vec<u8>)>,
        synced: usize,
    }

    impl DurableStore for Mem {
        fn persist(&mut self, group: GroupId, record: &[u8]) -> Result<(), StorageError> {
            self.records.push((group, record.to_vec()));
            Ok(())
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            self.synced = self.records.len();
            Ok(())
        }
        fn save_snapshot(&mut self, _: GroupId, _: &[u8]) -> Result<(), StorageError> {
            Ok(())
        }
        fn wal_stats(&self) -> WalStats {
            WalStats {
                appends: self.records.len() as u64,
                ..WalStats::default()
            }
        }
    }

    fn reply(seq: u64) -> Held<u8> {
        Held::Reply(ClientResponse {
            id: kvlab_types::RequestId { client: 1, seq },
            result: Ok(kvlab_types::OpOutput::Done),
        })
    }

    fn seq_of(h: &Held<u8>) -> u64 {
        match h {
            Held::Reply(r) => r.id.seq,
            Held::Send { msg, .. } => u64::from(*msg),
        }
    }

    #[test]
    fn groups_go_to_their_shard_by_modulo() {
        assert_eq!(shard_of(GroupId(0), 1), 0);
        assert_eq!(shard_of(GroupId(7), 1), 0);
        assert_eq!(shard_of(GroupId(7), 2), 1);
        assert_eq!(shard_of(GroupId(8), 2), 0);
        assert_eq!(shard_of(GroupId(5), 0), 0, "0 workers is treated as 1");
    }

    #[tokio::test]
    async fn a_barrier_holds_until_every_shard_is_durable_and_releases_in_order() {
        let mut stats = DriverStats::default();
        let mut c: Commit<Mem, u8> = Commit::new(vec![Mem::default(), Mem::default()]);
        // Nothing queued: a barrier is durable at once and nothing is held.
        c.barrier();
        assert!(c.send_or_hold(reply(0)).is_some());
        c.persist(GroupId(0), vec![1]);
        c.persist(GroupId(1), vec![2]);
        c.barrier();
        assert!(c.send_or_hold(reply(1)).is_none());
        // A later step's record and send: held behind the same barrier, after reply 1.
        c.persist(GroupId(3), vec![3]);
        assert!(
            c.send_or_hold(Held::Send {
                to: NodeId(2),
                msg: 2
            })
            .is_none()
        );
        c.pump(&mut stats);
        let first = c.next_done().await;
        let got = c.on_done(first, &mut stats).unwrap();
        assert!(
            got.is_empty(),
            "one shard alone does not satisfy the barrier"
        );
        let second = c.next_done().await;
        let got: Vec<u64> = c
            .on_done(second, &mut stats)
            .unwrap()
            .iter()
            .map(seq_of)
            .collect();
        assert_eq!(got, [1, 2]);
        assert!(!c.holding());
        assert!(!c.busy());
        let per_shard: Vec<u64> = c.stores().map(|s| lock(&s).wal_stats().appends).collect();
        assert_eq!(
            per_shard,
            [1, 2],
            "group 0 on shard 0; groups 1 and 3 on shard 1"
        );
        assert_eq!(c.wal_stats().appends, 3);
    }

    #[tokio::test]
    async fn a_shard_scoped_reply_waits_for_its_shard_alone_and_a_stray_persist_widens_the_scope() {
        let mut stats = DriverStats::default();
        let mut c: Commit<Mem, u8> = Commit::new(vec![Mem::default(), Mem::default()]);
        c.begin_step();
        c.set_scope(Scope::Shard(1));
        c.persist(GroupId(1), vec![1]);
        c.barrier();
        assert!(c.send_or_hold(reply(1)).is_none());
        c.set_scope(Scope::Shard(0));
        c.persist(GroupId(0), vec![2]);
        c.barrier();
        assert!(c.send_or_hold(reply(2)).is_none());
        // Shard 0 alone: a persist of shard 1's group makes the rest of the scope the
        // node's, so this reply waits for both shards.
        c.set_scope(Scope::Shard(0));
        c.persist(GroupId(3), vec![3]);
        c.barrier();
        assert!(c.send_or_hold(reply(3)).is_none());
        c.pump(&mut stats);
        let mut order = Vec::new();
        while c.busy() {
            let done = c.next_done().await;
            let shard = done.shard;
            let got: Vec<u64> = c
                .on_done(done, &mut stats)
                .unwrap()
                .iter()
                .map(seq_of)
                .collect();
            order.push((shard, got));
            c.pump(&mut stats);
        }
        // Whichever shard returns first releases its own reply; reply 3 needs both.
        let released: Vec<u64> = order.iter().flat_map(|(_, g)| g.clone()).collect();
        assert_eq!(released.len(), 3, "{order:?}");
        assert_eq!(*released.last().unwrap(), 3, "{order:?}");
        let (first_shard, first) = &order[0];
        assert_eq!(
            first,
            &vec![if *first_shard == 0 { 2 } else { 1 }],
            "{order:?}"
        );
        // A scope beyond the shards is the node's.
        c.begin_step();
        c.set_scope(Scope::Shard(9));
        c.persist(GroupId(0), vec![4]);
        c.barrier();
        assert!(c.send_or_hold(reply(4)).is_none());
        assert!(c.holding());
    }

    #[tokio::test]
    async fn records_queued_during_a_write_go_into_the_next_batch() {
        let mut stats = DriverStats::default();
        let mut c: Commit<Mem, u8> = Commit::new(vec![Mem::default()]);
        c.persist(GroupId(0), vec![1]);
        c.barrier();
        c.pump(&mut stats);
        c.persist(GroupId(0), vec![2]);
        c.barrier();
        assert!(c.send_or_hold(reply(7)).is_none());
        c.pump(&mut stats); // the shard is busy: no second writer
        let done = c.next_done().await;
        assert!(c.on_done(done, &mut stats).unwrap().is_empty());
        let released = c.drain(&mut stats).await.unwrap();
        assert_eq!(released.iter().map(seq_of).collect::<Vec<_>>(), [7]);
        let store = c.store_of(GroupId(0));
        let mem = lock(&store);
        assert_eq!(mem.records.len(), 2);
        assert_eq!(mem.synced, 2);
        assert_eq!(stats.syncs_done, 2);
    }
}
