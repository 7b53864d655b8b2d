//! The event queue: a binary heap of `(time, seq)` keys over a slab of payloads.
//!
//! `seq` is a global counter, so events at the same virtual time run in the order they
//! were scheduled and the order never depends on anything but the inputs. Payloads live
//! in a slab whose slots are reused, so the heap moves 24-byte keys and a steady-state
//! run allocates nothing per event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A min-queue of events ordered by `(time_ns, seq)`.
#[derive(Debug)]
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slab: Vec<Option<E>>,
    free: Vec<usize>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time_ns`, after every event already scheduled at that time.
    pub fn push(&mut self, time_ns: u64, event: E) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(event);
                i
            }
            None => {
                self.slab.push(Some(event));
                self.slab.len() - 1
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((time_ns, seq, slot)));
    }

    /// The time of the next event, if any.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Takes the next event.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let Reverse((time_ns, _, slot)) = self.heap.pop()?;
        let event = self.slab[slot]
            .take()
            .expect("simulator invariant: a queued key points at a filled slab slot");
        self.free.push(slot);
        Some((time_ns, event))
    }

    /// Number of scheduled events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_run_in_scheduling_order_and_slots_are_reused() {
        let mut q = EventQueue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        assert_eq!(q.pop(), Some((1, "a")));
        q.push(5, "d");
        let rest: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, vec![(5, "b"), (5, "c"), (5, "d")]);
        assert!(q.slab.len() <= 3);
    }
}
