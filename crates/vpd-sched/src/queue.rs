//! Bounded lane hand-off queues.
//!
//! A thin wrapper over `crossbeam_queue::ArrayQueue` (Dmitry Vyukov's bounded MPMC array
//! queue, as crossbeam implements it). We write no lock-free code of our own, so this crate
//! stays `forbid(unsafe_code)` and needs no loom model: crossbeam carries those proofs.
//!
//! Bounded on purpose: a full queue is back-pressure that the sending lane must handle
//! (keep the request and retry, or stop admitting), never a silent drop. `try_push` hands the
//! item back when the queue is full.

use crossbeam_queue::ArrayQueue;

/// A bounded multi-producer multi-consumer queue between two lanes.
#[derive(Debug)]
pub struct LaneQueue<T> {
    inner: ArrayQueue<T>,
}

/// A queue of capacity zero was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a lane queue needs a capacity of at least 1")]
pub struct ZeroCapacity;

impl<T> LaneQueue<T> {
    /// A queue holding at most `capacity` items.
    ///
    /// # Errors
    /// [`ZeroCapacity`] when `capacity` is 0 (crossbeam would panic).
    pub fn new(capacity: usize) -> Result<Self, ZeroCapacity> {
        if capacity == 0 {
            return Err(ZeroCapacity);
        }
        Ok(Self {
            inner: ArrayQueue::new(capacity),
        })
    }

    /// Pushes `item`, or gives it back in `Err` when the queue is full. Never blocks.
    ///
    /// # Errors
    /// `Err(item)` when full: the caller still owns the item.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        self.inner.push(item)
    }

    /// Pops the oldest item, or `None` when empty. Never blocks.
    pub fn try_pop(&self) -> Option<T> {
        self.inner.pop()
    }

    /// Items queued now (a snapshot: other threads may change it at once).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the queue was empty at the time of the call.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Whether the queue was full at the time of the call.
    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// The bound given to [`Self::new`].
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;

    fn iters(n: usize) -> usize {
        if cfg!(miri) {
            n / 100
        } else {
            n
        }
    }

    #[test]
    fn smoke() {
        let q = LaneQueue::new(2).unwrap();
        assert!(q.is_empty());
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        assert!(q.is_full());
        assert_eq!(q.try_push(3), Err(3), "a full queue hands the item back");
        assert_eq!(q.len(), 2);
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.try_pop(), Some(2));
        assert_eq!(q.try_pop(), None);
        assert_eq!(q.capacity(), 2);
        assert_eq!(LaneQueue::<u8>::new(0).unwrap_err(), ZeroCapacity);
    }

    /// One producer, one consumer: everything arrives, in order, none lost or duplicated.
    #[test]
    fn spsc() {
        let n = iters(100_000);
        let q = Arc::new(LaneQueue::new(3).unwrap());
        let p = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                for i in 0..n {
                    let mut item = i;
                    while let Err(back) = q.try_push(item) {
                        item = back;
                        thread::yield_now();
                    }
                }
            })
        };
        let mut next = 0;
        while next < n {
            if let Some(v) = q.try_pop() {
                assert_eq!(v, next);
                next += 1;
            } else {
                thread::yield_now();
            }
        }
        p.join().unwrap();
        assert!(q.is_empty());
    }

    /// Several producers and consumers: every item is received exactly once.
    #[test]
    fn mpmc() {
        const THREADS: usize = 3;
        let n = iters(30_000);
        let q = Arc::new(LaneQueue::new(8).unwrap());
        let seen: Arc<Vec<AtomicUsize>> = Arc::new((0..n * THREADS).map(|_| AtomicUsize::new(0)).collect());
        let received = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::new();
        for t in 0..THREADS {
            let q = Arc::clone(&q);
            hs.push(thread::spawn(move || {
                for i in 0..n {
                    let mut item = t * n + i;
                    while let Err(back) = q.try_push(item) {
                        item = back;
                        thread::yield_now();
                    }
                }
            }));
        }
        for _ in 0..THREADS {
            let (q, seen, received) = (Arc::clone(&q), Arc::clone(&seen), Arc::clone(&received));
            hs.push(thread::spawn(move || {
                while received.load(Ordering::Relaxed) < n * THREADS {
                    if let Some(v) = q.try_pop() {
                        seen[v].fetch_add(1, Ordering::Relaxed);
                        received.fetch_add(1, Ordering::Relaxed);
                    } else {
                        thread::yield_now();
                    }
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    /// Items left in a dropped queue, and items refused by a full one, are dropped exactly once.
    #[test]
    fn drops() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let rounds = iters(200).max(2);
        for r in 0..rounds {
            let dropped = Arc::new(AtomicUsize::new(0));
            let cap = 1 + r % 7;
            let q = LaneQueue::new(cap).unwrap();
            let pushed = cap + r % 3;
            let mut refused = Vec::new();
            for _ in 0..pushed {
                if let Err(back) = q.try_push(Counted(Arc::clone(&dropped))) {
                    refused.push(back);
                }
            }
            assert_eq!(refused.len(), pushed - cap);
            let popped = r % (cap + 1);
            for _ in 0..popped {
                drop(q.try_pop().unwrap());
            }
            assert_eq!(dropped.load(Ordering::Relaxed), popped, "nothing dropped early");
            drop(refused);
            drop(q);
            assert_eq!(dropped.load(Ordering::Relaxed), pushed);
        }
    }
}
