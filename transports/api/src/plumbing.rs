//! Plumbing every implementation of [`crate::Transport`] needs and would otherwise write
//! again: the peer table of the wire transports ([`PeerTable`]), the closable inbox behind
//! `recv` and `shutdown` ([`Inbox`]), and the two steps of `send` that do not depend on
//! how bytes travel ([`oversize_or_encode_error`], [`route_send`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use kvlab_types::NodeId;
use tokio::sync::{Mutex, mpsc, watch};

use crate::TransportError;
use crate::{CodecError, DelayLine, DropReason, FaultRules, SendVerdict, StatsCounters};

/// Both directions of a peer table.
#[derive(Debug, Default)]
struct Tables {
    by_id: BTreeMap<NodeId, SocketAddr>,
    by_addr: BTreeMap<SocketAddr, NodeId>,
}

impl Tables {
    fn new(peers: BTreeMap<NodeId, SocketAddr>) -> Self {
        let by_addr = peers.iter().map(|(id, a)| (*a, *id)).collect();
        Tables {
            by_id: peers,
            by_addr,
        }
    }
}

/// A wire transport's peer table (`NodeId` ↔ address), updatable at run time and always
/// holding this node's own entry, so a node can send to itself.
#[derive(Debug)]
pub struct PeerTable {
    id: NodeId,
    local_addr: SocketAddr,
    tables: RwLock<Tables>,
}

impl PeerTable {
    /// The table of node `id` bound at `local_addr`, starting from `peers` (this node's
    /// own entry is added if missing).
    pub fn new(id: NodeId, local_addr: SocketAddr, peers: BTreeMap<NodeId, SocketAddr>) -> Self {
        let table = PeerTable {
            id,
            local_addr,
            tables: RwLock::new(Tables::default()),
        };
        table.set(peers);
        table
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // The table is valid at every instruction; recover from a poisoned lock.
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The address of `peer`, if it is in the table.
    pub fn addr_of(&self, peer: NodeId) -> Option<SocketAddr> {
        self.read().by_id.get(&peer).copied()
    }

    /// The peer bound at `addr`, if one is.
    pub fn id_of(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.read().by_addr.get(addr).copied()
    }

    /// Whether `peer` is in the table.
    pub fn contains(&self, peer: NodeId) -> bool {
        self.read().by_id.contains_key(&peer)
    }

    /// The table now.
    pub fn snapshot(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.read().by_id.clone()
    }

    /// Replaces the table (this node's own entry is kept if missing).
    pub fn set(&self, mut peers: BTreeMap<NodeId, SocketAddr>) {
        peers.entry(self.id).or_insert(self.local_addr);
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = Tables::new(peers);
    }

    /// Adds or moves one peer.
    pub fn add(&self, peer: NodeId, addr: SocketAddr) {
        let mut peers = self.snapshot();
        peers.insert(peer, addr);
        self.set(peers);
    }

    /// Forgets one peer.
    pub fn remove(&self, peer: NodeId) {
        let mut peers = self.snapshot();
        peers.remove(&peer);
        self.set(peers);
    }
}

/// The receiving end of a transport: a bounded queue that `recv` waits on and
/// `shutdown` closes, so that a pending `recv` returns [`TransportError::Closed`] at once.
#[derive(Debug)]
pub struct Inbox<P> {
    node: NodeId,
    queue: Mutex<mpsc::Receiver<P>>,
    closed_tx: watch::Sender<bool>,
    closed_rx: watch::Receiver<bool>,
}

impl<P> Inbox<P> {
    /// The inbox of node `node` over the queue `queue`.
    pub fn new(node: NodeId, queue: mpsc::Receiver<P>) -> Self {
        let (closed_tx, closed_rx) = watch::channel(false);
        Inbox {
            node,
            queue: Mutex::new(queue),
            closed_tx,
            closed_rx,
        }
    }

    /// [`TransportError::Closed`] once [`mark_closed`](Inbox::mark_closed) was called.
    pub fn ensure_open(&self) -> Result<(), TransportError> {
        if *self.closed_rx.borrow() {
            return Err(TransportError::Closed { node: self.node });
        }
        Ok(())
    }

    /// Waits for the next packet that `accept` turns into a value (a packet it refuses,
    /// returning `None`, is skipped: `accept` counts why). Several tasks may wait at once;
    /// each packet goes to one of them. Returns [`TransportError::Closed`] as soon as the
    /// inbox is closed.
    pub async fn recv_with<R>(
        &self,
        mut accept: impl FnMut(P) -> Option<R>,
    ) -> Result<R, TransportError> {
        let closed = || TransportError::Closed { node: self.node };
        let mut closed_rx = self.closed_rx.clone();
        if *closed_rx.borrow_and_update() {
            return Err(closed());
        }
        let mut queue = tokio::select! {
            biased;
            _ = closed_rx.changed() => return Err(closed()),
            guard = self.queue.lock() => guard,
        };
        loop {
            let packet = tokio::select! {
                biased;
                _ = closed_rx.changed() => return Err(closed()),
                p = queue.recv() => p.ok_or_else(closed)?,
            };
            if let Some(r) = accept(packet) {
                return Ok(r);
            }
        }
    }

    /// Marks the inbox closed: from now on `send` checks fail and waiting `recv`s return.
    pub fn mark_closed(&self) {
        self.closed_tx.send_replace(true);
    }

    /// Closes the queue and drops what it still holds (call after
    /// [`mark_closed`](Inbox::mark_closed), once nothing feeds it any more).
    pub async fn close_and_drain(&self) {
        let mut queue = self.queue.lock().await;
        queue.close();
        while queue.try_recv().is_ok() {}
    }
}

/// The error (and the counted drop) for a message to `peer` that does not encode: an
/// oversize frame is counted as [`DropReason::Oversize`]; any other codec failure is an
/// [`TransportError::Encode`] (a bug in a `Serialize` impl, not a network drop).
pub fn oversize_or_encode_error(
    stats: &StatsCounters,
    peer: NodeId,
    error: CodecError,
) -> TransportError {
    match error {
        CodecError::TooLarge {
            len_bytes,
            max_bytes,
        } => {
            stats.record_drop(DropReason::Oversize, 1);
            TransportError::Oversize {
                peer,
                size_bytes: len_bytes,
                max_bytes,
            }
        }
        source => TransportError::Encode { peer, source },
    }
}

/// Applies the sender's fault rules to a message for `to`: delivers it now with
/// `deliver`, drops it (counted [`DropReason::FaultRule`], `Ok` to the caller, as a
/// partition looks to a protocol), or holds it on `delay` (a full delay line is a counted
/// [`DropReason::QueueFull`] and [`TransportError::QueueFull`]).
pub fn route_send<P: Send + 'static>(
    faults: &FaultRules,
    stats: &StatsCounters,
    delay: &DelayLine<P>,
    to: NodeId,
    packet: P,
    deliver: impl FnOnce(P) -> Result<(), TransportError>,
) -> Result<(), TransportError> {
    match faults.on_send(to) {
        SendVerdict::Deliver => deliver(packet),
        SendVerdict::Drop => {
            stats.record_drop(DropReason::FaultRule, 1);
            Ok(())
        }
        SendVerdict::Delay(d) => delay.push(d, packet).map_err(|_| {
            stats.record_drop(DropReason::QueueFull, 1);
            TransportError::QueueFull {
                peer: to,
                capacity: delay.capacity(),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn peer_table_keeps_its_own_entry_and_maps_both_ways() {
        let table = PeerTable::new(NodeId(1), addr(1), BTreeMap::new());
        assert_eq!(table.addr_of(NodeId(1)), Some(addr(1)));
        table.add(NodeId(2), addr(2));
        assert_eq!(table.id_of(&addr(2)), Some(NodeId(2)));
        table.set(BTreeMap::from([(NodeId(3), addr(3))]));
        assert_eq!(
            table.snapshot(),
            BTreeMap::from([(NodeId(1), addr(1)), (NodeId(3), addr(3))])
        );
        assert!(!table.contains(NodeId(2)));
        assert_eq!(table.id_of(&addr(2)), None);
        table.remove(NodeId(3));
        assert_eq!(table.snapshot(), BTreeMap::from([(NodeId(1), addr(1))]));
    }

    #[tokio::test]
    async fn closing_an_inbox_wakes_a_waiting_recv() {
        let (tx, rx) = mpsc::channel::<u8>(4);
        let inbox = std::sync::Arc::new(Inbox::new(NodeId(1), rx));
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        // A refused packet is skipped.
        assert_eq!(inbox.recv_with(|p| (p == 2).then_some(p)).await.unwrap(), 2);
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.recv_with(Some).await }
        });
        inbox.mark_closed();
        assert!(matches!(
            waiting.await.unwrap(),
            Err(TransportError::Closed { node: NodeId(1) })
        ));
        assert!(inbox.ensure_open().is_err());
        inbox.close_and_drain().await;
    }
}
