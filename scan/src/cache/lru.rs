//! A least-recently-used cache bounded in bytes (each entry states its size): the scan
//! worker's in-memory layer inventories.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
pub struct Lru<K, V> {
    budget: usize,
    used: usize,
    tick: u64,
    entries: HashMap<K, (V, usize, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub fn new(budget_bytes: usize) -> Self {
        Lru {
            budget: budget_bytes,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The entry, now the most recently used.
    pub fn get(&mut self, k: &K) -> Option<&V> {
        self.tick += 1;
        let (_, _, t) = self.entries.get_mut(k)?;
        let old = std::mem::replace(t, self.tick);
        let key = self.order.remove(&old).expect("ordered");
        self.order.insert(self.tick, key);
        self.entries.get(k).map(|(v, _, _)| v)
    }

    /// Stores an entry of `size` bytes, evicting the least recently used ones to fit.
    /// An entry larger than the whole budget is not stored.
    pub fn insert(&mut self, k: K, v: V, size: usize) {
        self.remove(&k);
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, s, _)) = self.entries.remove(&oldest) {
                self.used -= s;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, k.clone());
        self.entries.insert(k, (v, size, self.tick));
        self.used += size;
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (v, s, t) = self.entries.remove(k)?;
        self.order.remove(&t);
        self.used -= s;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evicts_the_least_recently_used_to_fit() {
        let mut c = Lru::new(100);
        c.insert("a", 1, 40);
        c.insert("b", 2, 40);
        assert_eq!(c.get(&"a"), Some(&1)); // b is now the oldest
        c.insert("c", 3, 40);
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.get(&"a"), Some(&1));
        assert_eq!(c.used(), 80);
        c.insert("huge", 4, 101);
        assert_eq!(c.get(&"huge"), None, "larger than the budget");
        c.insert("a", 5, 10);
        assert_eq!(c.get(&"a"), Some(&5));
        assert_eq!(c.used(), 50);
    }

    proptest! {
        #[test]
        fn never_exceeds_its_budget(ops in proptest::collection::vec((0u8..20, 1usize..60), 1..200)) {
            let mut c = Lru::new(150);
            for (k, size) in ops {
                c.insert(k, (), size);
                prop_assert!(c.used() <= 150);
                prop_assert_eq!(c.used() > 0, !c.is_empty());
            }
        }
    }
}
