//! A map with per-entry expiry and bounds on entry count and total weight (bytes).
//!
//! Used by the job store and the introspection cache. Eviction is oldest-first
//! (insertion order); expired entries are never returned and are dropped when met.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use mydata_protocol::date::UnixTime;

struct Slot<V> {
    value: V,
    expires: UnixTime,
    seq: u64,
    weight: usize,
}

/// The map. Not synchronised: callers wrap it in a mutex.
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, Slot<V>>,
    order: VecDeque<(K, u64)>,
    next_seq: u64,
    max_len: usize,
    max_weight: usize,
    weight: usize,
}

impl<K, V> std::fmt::Debug for BoundedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoundedMap({} entries)", self.map.len())
    }
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    /// An empty map holding at most `max_len` entries (at least 1) and `max_weight` in total.
    pub(crate) fn new(max_len: usize, max_weight: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            max_len: max_len.max(1),
            max_weight,
            weight: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn total_weight(&self) -> usize {
        self.weight
    }

    /// The live entry for `key`; an expired one is removed.
    pub(crate) fn get_mut(&mut self, key: &K, now: UnixTime) -> Option<&mut V> {
        let expired = match self.map.get(key) {
            None => return None,
            Some(s) => s.expires <= now,
        };
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Inserts or replaces an entry, then evicts the oldest entries while over a bound.
    pub(crate) fn insert(&mut self, key: K, value: V, expires: UnixTime, weight: usize) {
        self.remove(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.weight = self.weight.saturating_add(weight);
        self.map.insert(
            key.clone(),
            Slot {
                value,
                expires,
                seq,
                weight,
            },
        );
        self.order.push_back((key, seq));
        self.enforce_bounds();
    }

    /// Changes the weight of an entry (its value grew or shrank), then enforces the bounds.
    pub(crate) fn set_weight(&mut self, key: &K, weight: usize) {
        if let Some(s) = self.map.get_mut(key) {
            self.weight = self.weight.saturating_sub(s.weight).saturating_add(weight);
            s.weight = weight;
        }
        self.enforce_bounds();
    }

    /// Removes an entry.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let s = self.map.remove(key)?;
        self.weight = self.weight.saturating_sub(s.weight);
        Some(s.value)
    }

    /// Drops every expired entry.
    pub(crate) fn purge_expired(&mut self, now: UnixTime) {
        let mut freed = 0usize;
        self.map.retain(|_, s| {
            let keep = s.expires > now;
            if !keep {
                freed = freed.saturating_add(s.weight);
            }
            keep
        });
        self.weight = self.weight.saturating_sub(freed);
        self.compact();
    }

    fn enforce_bounds(&mut self) {
        while self.map.len() > self.max_len || self.weight > self.max_weight {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|s| s.seq == seq) {
                self.remove(&key);
            }
        }
        if self.order.len() > 2 * self.map.len() + 64 {
            self.compact();
        }
    }

    /// Drops order records of entries that are gone or were replaced.
    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, seq)| map.get(k).is_some_and(|s| s.seq == *seq));
    }

    #[cfg(test)]
    pub(crate) fn order_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_exclusive_and_removes() {
        let mut m = BoundedMap::new(10, usize::MAX);
        m.insert("a", 1, UnixTime(10), 0);
        assert_eq!(m.get_mut(&"a", UnixTime(9)).copied(), Some(1));
        assert_eq!(m.get_mut(&"a", UnixTime(10)), None);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn evicts_oldest_by_count_and_weight() {
        let mut m = BoundedMap::new(2, 100);
        m.insert(1, (), UnixTime(99), 10);
        m.insert(2, (), UnixTime(99), 10);
        m.insert(3, (), UnixTime(99), 10);
        assert!(m.get_mut(&1, UnixTime(0)).is_none());
        assert!(m.get_mut(&2, UnixTime(0)).is_some());
        m.set_weight(&3, 95);
        assert!(m.get_mut(&2, UnixTime(0)).is_none(), "evicted by weight");
        assert_eq!(m.total_weight(), 95);
        // Re-inserting a key does not let its old order record evict the new entry.
        m.insert(3, (), UnixTime(99), 1);
        m.insert(4, (), UnixTime(99), 1);
        assert!(m.get_mut(&3, UnixTime(0)).is_some());
        assert!(m.get_mut(&4, UnixTime(0)).is_some());
    }

    #[test]
    fn order_records_stay_bounded() {
        let mut m = BoundedMap::new(1000, usize::MAX);
        for i in 0..10_000u32 {
            m.insert(i, (), UnixTime(1), 0);
            assert!(m.get_mut(&i, UnixTime(5)).is_none());
        }
        assert!(m.order_len() < 200, "{}", m.order_len());
        m.insert(1, (), UnixTime(1), 0);
        m.purge_expired(UnixTime(5));
        assert_eq!((m.len(), m.order_len()), (0, 0));
    }
}
