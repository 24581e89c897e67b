//! A bounded map: two generations, the older dropped whole when the newer fills up. Recently used
//! entries survive (they are promoted), memory stays within about `capacity` entries.

use std::collections::HashMap;
use std::hash::Hash;

pub struct Cache<K, V> {
    hot: HashMap<K, V>,
    cold: HashMap<K, V>,
    half: usize,
}

impl<K: Hash + Eq + Clone, V> Cache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            hot: HashMap::new(),
            cold: HashMap::new(),
            half: (capacity / 2).max(1),
        }
    }

    pub fn get(&mut self, k: &K) -> Option<&V> {
        if let Some(v) = self.cold.remove(k) {
            self.insert(k.clone(), v);
        }
        self.hot.get(k)
    }

    pub fn insert(&mut self, k: K, v: V) {
        if self.hot.len() >= self.half && !self.hot.contains_key(&k) {
            self.cold = std::mem::take(&mut self.hot);
        }
        self.cold.remove(&k);
        self.hot.insert(k, v);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.hot.clear();
        self.cold.clear();
    }

    pub fn remove(&mut self, k: &K) {
        self.hot.remove(k);
        self.cold.remove(k);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Cache;

    #[test]
    fn stays_bounded_and_keeps_what_is_used() {
        let mut c = Cache::new(10);
        c.insert(0, 0);
        for i in 1..1000 {
            c.insert(i, i);
            assert!(c.get(&0).is_some(), "entry 0 is used every time");
            assert!(c.len() <= 11);
        }
        assert!(c.get(&1).is_none());
        assert_eq!(c.get(&999), Some(&999));
    }
}
