//! A bounded delay line: holds items for a while on a tokio timer, then hands them to a
//! sink in due order. Transports use it to carry out [`crate::SendVerdict::Delay`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Holds at most `capacity` items; each leaves through the sink once its delay has passed.
/// Items due at the same instant leave in the order they were pushed, so a constant delay
/// to one peer keeps that peer's order.
///
/// Dropping the line aborts its task; items still held are lost (the owner is shutting
/// down).
pub struct DelayLine<P> {
    tx: mpsc::UnboundedSender<(Instant, P)>,
    pending: Arc<AtomicUsize>,
    capacity: usize,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<P> fmt::Debug for DelayLine<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayLine")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<P: Send + 'static> DelayLine<P> {
    /// Starts the line's task on the current tokio runtime. Must be called from within a
    /// runtime (every transport constructor is).
    pub fn spawn(capacity: usize, mut sink: impl FnMut(P) + Send + 'static) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, P)>();
        let pending = Arc::new(AtomicUsize::new(0));
        let pending_task = pending.clone();
        let task = tokio::spawn(async move {
            let mut held: BTreeMap<(Instant, u64), P> = BTreeMap::new();
            let mut seq: u64 = 0;
            loop {
                let next_due = held.first_key_value().map(|((due, _), _)| *due);
                tokio::select! {
                    biased;
                    item = rx.recv() => match item {
                        Some((due, p)) => {
                            held.insert((due, seq), p);
                            seq += 1;
                        }
                        None => return,
                    },
                    _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                        let now = Instant::now();
                        while let Some(entry) = held.first_entry() {
                            if entry.key().0 > now {
                                break;
                            }
                            let p = entry.remove();
                            pending_task.fetch_sub(1, Ordering::AcqRel);
                            sink(p);
                        }
                    }
                }
            }
        });
        DelayLine {
            tx,
            pending,
            capacity,
            task: Mutex::new(Some(task)),
        }
    }

    /// Holds `item` for `delay`. Gives the item back when the line already holds
    /// `capacity` items (count it as [`crate::DropReason::QueueFull`]) or has stopped.
    pub fn push(&self, delay: Duration, item: P) -> Result<(), P> {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(item);
        }
        match self.tx.send((Instant::now() + delay, item)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError((_, item))) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                Err(item)
            }
        }
    }

    /// Items held right now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// The bound given at construction.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl<P> DelayLine<P> {
    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Stops the line and waits for its task to end; items still held are dropped and
    /// later pushes are refused.
    pub async fn stop(&self) {
        if let Some(task) = self.take_task() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl<P> Drop for DelayLine<P> {
    fn drop(&mut self) {
        if let Some(task) = self.take_task() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_leave_in_due_order_and_the_bound_holds() {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let line = DelayLine::spawn(3, move |p: u32| {
            let _ = out_tx.send(p);
        });
        line.push(Duration::from_millis(40), 1).unwrap();
        line.push(Duration::from_millis(10), 2).unwrap();
        line.push(Duration::from_millis(10), 3).unwrap();
        assert_eq!(line.push(Duration::from_millis(1), 4), Err(4));
        let got: Vec<u32> = tokio::time::timeout(Duration::from_secs(5), async {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(out_rx.recv().await.unwrap());
            }
            v
        })
        .await
        .unwrap();
        assert_eq!(got, [2, 3, 1]);
        assert_eq!(line.pending(), 0);
    }
}
