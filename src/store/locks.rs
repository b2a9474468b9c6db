//! Per-key in-flight state: a key being PUT, DELETEd or UNLINKed is claimed here, and a
//! second writer gets `409`. Sharded by key hash so cores rarely meet on one mutex; a
//! shard's mutex is held for a hash-set insert or remove, never across an `.await`.

use std::{collections::HashSet, hash::BuildHasher, sync::Mutex};

pub struct KeyLocks {
    shards: Box<[Mutex<HashSet<Vec<u8>>>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// Held while a write of one key is in flight; dropping it releases the key.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    shard: usize,
    key: Vec<u8>,
}

impl KeyLocks {
    pub fn new(shards: usize) -> KeyLocks {
        KeyLocks {
            shards: (0..shards.max(1)).map(|_| Mutex::new(HashSet::new())).collect(),
            hasher: Default::default(),
        }
    }

    /// Claims `key`, or `None` when another request holds it.
    pub fn try_lock(&self, key: &[u8]) -> Option<KeyGuard<'_>> {
        let shard = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        let mut set = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(key.to_vec()) {
            return None;
        }
        Some(KeyGuard { locks: self, shard, key: key.to_vec() })
    }
}

impl KeyGuard<'_> {
    /// The key held.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut set = self.locks.shards[self.shard].lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_key() {
        let l = KeyLocks::new(8);
        let a = l.try_lock(b"/a").unwrap();
        assert!(l.try_lock(b"/a").is_none());
        let b = l.try_lock(b"/b");
        assert!(b.is_some());
        drop(a);
        assert!(l.try_lock(b"/a").is_some());
    }
}
