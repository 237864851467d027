//! Where the sled store's sweeper looks: entries (`expires_at`, key) in expiry order. Owns
//! only the order; the sweeper still reads each entry's own expiry before removing it, so
//! a stale, duplicated or missing queue entry can delay a removal, never make one early.
//!
//! # Why a heap and not insertion order
//! Most entries are written with `now + window`, so insertion order is nearly expiry
//! order, and a first-in-first-out queue looked enough. It is not: a refresh-token
//! family lives for days, a refresh token's claim for its idle time, and at the front of
//! a FIFO either one holds back every minutes-long entry queued after it until it expires
//! itself (memory and disk grow for days at a site with people signing in). A binary
//! heap hands out whatever is due, whatever came before it, for O(log n) per entry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

/// The entries to look at, earliest expiry first.
pub struct SweepQueue<K: Ord>(Mutex<BinaryHeap<Reverse<(i64, K)>>>);

impl<K: Ord> Default for SweepQueue<K> {
    fn default() -> Self {
        SweepQueue(Mutex::new(BinaryHeap::new()))
    }
}

impl<K: Ord> SweepQueue<K> {
    /// Queues `key`, to be looked at from `expires_at` on.
    pub fn push(&self, expires_at: i64, key: K) {
        self.lock().push(Reverse((expires_at, key)));
    }

    /// Queues many at once (entries found on disk, loaded at start-up).
    pub fn extend(&self, entries: impl IntoIterator<Item = (i64, K)>) {
        self.lock().extend(entries.into_iter().map(Reverse));
    }

    /// Takes up to `max` entries due at `now`, earliest first.
    pub fn take_due(&self, now: i64, max: usize) -> Vec<(i64, K)> {
        let mut heap = self.lock();
        let mut due = Vec::new();
        while due.len() < max && heap.peek().is_some_and(|Reverse((exp, _))| *exp <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                due.push(entry);
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<(i64, K)>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_lived_entry_does_not_hold_back_those_queued_after_it() {
        let queue = SweepQueue::default();
        queue.push(1_000_000, "family");
        queue.push(300, "token a");
        queue.push(200, "token b");
        queue.extend([(250, "from disk")]);
        assert_eq!(queue.take_due(100, 10), vec![]);
        assert_eq!(queue.take_due(260, 1), vec![(200, "token b")]);
        assert_eq!(
            queue.take_due(400, 10),
            vec![(250, "from disk"), (300, "token a")]
        );
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take_due(1_000_000, 10), vec![(1_000_000, "family")]);
        assert!(queue.is_empty());
    }
}
