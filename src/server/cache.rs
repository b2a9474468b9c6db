//! A per-thread cache of what a GET answers for a key: its replicas, the `Key-Volumes`
//! line, MD5 and balance. A hit costs a hash lookup instead of a RocksDB read and four MD5s.
//!
//! Never stale: an entry remembers the key's write sequence number ([`Index::seq`], read
//! before the index was) and the topology generation; any write of the key or volume change
//! makes the numbers differ and the entry is read again. Keys found missing are kept apart,
//! in a set of their own with its own bound, so a flood of random keys churns only that set
//! and never crowds out real answers.
//!
//! Eviction is by two generations of `cap` entries each: new entries go to the young one;
//! when it is full it becomes the old one (the previous old one is dropped), and an old entry
//! that is read is moved back to the young one. So the `cap` keys read most recently are
//! always kept (a thread walking a set of `cap` keys over and over hits every time), at most
//! `2 × cap` are held, and a key is dropped only when it was not read during the last filling
//! of the young generation; a hit in the old generation costs a second lookup. (With `cap / 2`
//! a generation, a walk over 100k keys with `cap` 131072 missed about a third of the time.)
//!
//! [`Index::seq`]: crate::index::Index::seq

use std::{
    collections::{hash_map::Entry, HashMap},
    sync::{Arc, OnceLock},
};

use crate::{
    placement,
    record::RecordRef,
    volume::{Topology, Volume},
};

/// What a GET of one live key writes, ready to copy out. Kept small (one text allocation
/// for the path and the replicas' names): the cache holds a thread's hot keys.
pub struct Answer {
    seq: u64,
    gen: u64,
    /// The key's file path (`/xx/yy/base64`) followed by the `Key-Volumes` value (`a,b,c`).
    text: Box<str>,
    path_len: u16,
    /// Each replica: where its name ends in `text`, and its server's health (None: a server
    /// outside the topology, taken as up).
    replicas: Box<[(u16, Option<Arc<Volume>>)]>,
    /// Reads rotate over the first this many replicas (`-replicas`): a record listing more is
    /// a key being moved, whose last ones are about to be deleted (see `store::relocate`).
    spread: u8,
    pub md5: Option<[u8; 16]>,
    pub balanced: bool,
}

impl Answer {
    pub fn path(&self) -> &str {
        &self.text[..self.path_len as usize]
    }

    /// The `Key-Volumes` value: the replicas as stored, comma separated.
    pub fn key_volumes(&self) -> &str {
        &self.text[self.path_len as usize..]
    }

    fn replica(&self, i: usize) -> &str {
        let start = if i == 0 { self.path_len as usize } else { self.replicas[i - 1].0 as usize + 1 };
        &self.text[start..self.replicas[i].0 as usize]
    }

    /// A replica on a live volume: the first in [`placement::read_order`] from `turn` whose
    /// volume the master watches and finds up, else the first outside `-volumes`.
    pub fn live_replica(&self, turn: usize) -> Option<&str> {
        let order = || placement::read_order(self.replicas.len(), self.spread as usize, turn);
        let up = |i: &usize| self.replicas[*i].1.as_ref().is_some_and(|v| v.is_up());
        // a volume outside -volumes is not probed: up or not, nothing tells (a master started
        // on another list, an index restored from before a volume change), so it is answered
        // only when no replica the master watches is up
        let unwatched = |i: &usize| self.replicas[*i].1.is_none();
        order().find(up).or_else(|| order().find(unwatched)).map(|i| self.replica(i))
    }

    fn current(&self, seq: u64, gen: u64) -> bool {
        self.seq == seq && self.gen == gen
    }
}

/// A map of two generations (see the module's doc).
struct Generations<V> {
    young: HashMap<Box<[u8]>, V>,
    old: HashMap<Box<[u8]>, V>,
    /// Entries per generation.
    cap: usize,
}

impl<V: Send + 'static> Generations<V> {
    fn new(cap: usize) -> Generations<V> {
        Generations { young: HashMap::new(), old: HashMap::new(), cap: cap.max(1) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Moves `key`'s old entry, if any, to the young generation.
    fn revive(&mut self, key: &[u8]) -> Option<&V> {
        let (k, v) = self.old.remove_entry(key)?;
        Some(self.insert(k, v))
    }

    fn insert(&mut self, key: Box<[u8]>, value: V) -> &V {
        if self.young.len() >= self.cap && !self.young.contains_key(&key) {
            let dropped = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
            drop_elsewhere(dropped);
        }
        self.old.remove(&key);
        match self.young.entry(key) {
            Entry::Occupied(mut e) => {
                e.insert(value);
                e.into_mut()
            }
            Entry::Vacant(e) => e.insert(value),
        }
    }
}

/// Frees a dropped generation on a thread of its own: `cap` entries of two or three
/// allocations each take milliseconds to free, which the request that caused the turn (and
/// every request queued behind it on the thread) would otherwise wait out.
fn drop_elsewhere<T: Send + 'static>(dead: T) {
    type Dead = Box<dyn Send>;
    static DROPPER: OnceLock<Option<flume::Sender<Dead>>> = OnceLock::new();
    let tx = DROPPER.get_or_init(|| {
        let (tx, rx) = flume::unbounded::<Dead>();
        let spawned = std::thread::Builder::new().name("mkv-cache-drop".into()).spawn(move || {
            for dead in rx {
                drop(dead);
            }
        });
        spawned.ok().map(|_| tx)
    });
    // no thread to hand it to (or it is gone): the send's error carries it back, freed here
    if let Some(tx) = tx {
        let _ = tx.send(Box::new(dead));
    }
}

pub struct Cache {
    answers: Generations<Answer>,
    /// Keys with no live record, each with the write sequence number it was read at.
    missing: Generations<u64>,
    on: bool,
    /// Turns taken by redirects on this thread: each picks the next replica.
    pub turn: usize,
    scores: Vec<([u8; 16], usize)>,
}

impl Cache {
    /// A cache that keeps the `cap` answers and the `cap` missing keys read last, and at most
    /// twice as many of each (0: nothing is kept, but the answer being built).
    pub fn new(cap: usize) -> Cache {
        Cache {
            answers: Generations::new(cap),
            missing: Generations::new(cap),
            on: cap > 0,
            turn: 0,
            scores: Vec::new(),
        }
    }

    /// Whether `key` was found missing and nothing wrote it since (write sequence `seq`).
    pub fn is_missing(&mut self, key: &[u8], seq: u64) -> bool {
        match self.missing.young.get(key) {
            Some(s) => *s == seq,
            None => self.missing.revive(key) == Some(&seq),
        }
    }

    /// Remembers that `key` had no live record at write sequence `seq`.
    pub fn note_missing(&mut self, key: &[u8], seq: u64) {
        if self.on {
            self.missing.insert(key.into(), seq);
        }
    }

    /// The cached answer for `key` in the young generation, if current for write sequence
    /// `seq` and topology `gen`: the hot path's one lookup.
    pub fn get(&self, key: &[u8], seq: u64, gen: u64) -> Option<&Answer> {
        self.answers.young.get(key).filter(|a| a.current(seq, gen))
    }

    /// [`Cache::get`] in the old generation, moving a current answer back to the young one.
    pub fn revive(&mut self, key: &[u8], seq: u64, gen: u64) -> Option<&Answer> {
        self.answers.revive(key).filter(|a| a.current(seq, gen))
    }

    /// Builds the answer for `key` from its record and keeps it (when the cache is on).
    pub fn fill(&mut self, key: &[u8], rec: RecordRef<'_>, topo: &Topology, seq: u64, gen: u64) -> &Answer {
        let balanced =
            placement::is_balanced(key, rec.volumes(), &topo.volumes, topo.replicas, topo.subvolumes, &mut self.scores);
        let mut text = placement::key_path(key);
        let path_len = text.len() as u16;
        let mut replicas = Vec::with_capacity(3);
        for (i, v) in rec.volumes().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(v);
            replicas.push((text.len() as u16, topo.volume(placement::server_of(v)).cloned()));
        }
        let answer = Answer {
            seq,
            gen,
            text: text.into_boxed_str(),
            path_len,
            replicas: replicas.into_boxed_slice(),
            spread: topo.replicas.min(u8::MAX as usize) as u8,
            md5: rec.md5.copied(),
            balanced,
        };
        if !self.on {
            // a cap of 0 keeps just this one, to answer from
            self.answers.young.clear();
            self.answers.old.clear();
        }
        self.answers.insert(key.into(), answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    #[test]
    fn entries_expire_with_writes_and_volume_changes() {
        let topo = Topology::new(&["a:1".into(), "b:2".into()], 2, 1, std::time::Duration::from_secs(1), None);
        let want = topo.place(b"/k");
        let bytes = Record { volumes: want.clone(), size: 1, md5: Some([0xab; 16]), ..Record::default() }.encode();
        let rec = RecordRef::parse(&bytes).unwrap();
        let mut c = Cache::new(10);
        c.fill(b"/k", rec, &topo, 7, 1);
        let a = c.get(b"/k", 7, 1).unwrap();
        assert!(a.balanced);
        assert_eq!(a.key_volumes(), want.join(",").as_str());
        assert_eq!(a.path(), placement::key_path(b"/k"));
        assert_eq!(a.md5, Some([0xab; 16]));
        assert!(c.get(b"/k", 8, 1).is_none(), "a write of the key");
        assert!(c.get(b"/k", 7, 2).is_none(), "a volume change");
        assert!(c.get(b"/other", 7, 1).is_none());
    }

    /// Reads rotate over every replica, but never to those a move is about to delete (the
    /// record lists more than `-replicas` while a key is rebalanced) unless nothing else is up.
    #[test]
    fn reads_rotate_over_the_replicas_placement_keeps() {
        // servers outside the topology have no probe and count as up
        let topo = Topology::new(&["q:9".into()], 3, 1, std::time::Duration::from_secs(1), None);
        let names: Vec<String> = ["a:1", "b:2", "c:3", "d:4"].map(String::from).to_vec();
        let bytes = Record { volumes: names.clone(), size: 1, ..Record::default() }.encode();
        let mut c = Cache::new(4);
        let a = c.fill(b"/k", RecordRef::parse(&bytes).unwrap(), &topo, 1, 0);
        let mut seen: Vec<&str> = (0..30).map(|t| a.live_replica(t).unwrap()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["a:1", "b:2", "c:3"], "d:4 is on its way out");
        // known volumes never seen up are down: the last one left still serves
        let topo = Topology::new(&names[..3], 3, 1, std::time::Duration::from_secs(1), None);
        let a = c.fill(b"/j", RecordRef::parse(&bytes).unwrap(), &topo, 1, 0);
        assert_eq!((0..4).map(|t| a.live_replica(t)).collect::<Vec<_>>(), [Some("d:4"); 4]);
    }

    #[test]
    fn misses_expire_with_writes_and_stay_apart() {
        let topo = Topology::new(&["a:1".into()], 1, 1, std::time::Duration::from_secs(1), None);
        let bytes = Record { volumes: vec!["a:1".into()], size: 1, ..Record::default() }.encode();
        let mut c = Cache::new(4);
        c.fill(b"/live", RecordRef::parse(&bytes).unwrap(), &topo, 3, 0);
        c.note_missing(b"/gone", 5);
        assert!(c.is_missing(b"/gone", 5));
        assert!(!c.is_missing(b"/gone", 6), "a write of the key");
        assert!(!c.is_missing(b"/live", 3));
        // a flood of missing keys churns the missing set only
        for i in 0..100u8 {
            c.note_missing(&[i], 0);
            assert!(c.missing.len() <= 8);
        }
        assert!(c.get(b"/live", 3, 0).is_some());
        let mut off = Cache::new(0);
        off.note_missing(b"/gone", 5);
        assert!(!off.is_missing(b"/gone", 5));
    }

    #[test]
    fn redirects_take_turns_over_the_replicas() {
        // servers outside the topology have no probe and count as up
        let topo = Topology::new(&["a:1".into()], 3, 1, std::time::Duration::from_secs(1), None);
        let bytes =
            Record { volumes: vec!["x:1".into(), "y:2".into(), "z:3".into()], size: 1, ..Record::default() }.encode();
        let mut c = Cache::new(1);
        let a = c.fill(b"/k", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        let picked: Vec<&str> = (0..6).map(|t| a.live_replica(t).unwrap()).collect();
        assert_eq!(picked, ["x:1", "y:2", "z:3", "x:1", "y:2", "z:3"]);
        // a known volume never seen up is skipped: the next one in turn answers
        let bytes = Record { volumes: vec!["a:1".into(), "y:2".into()], size: 1, ..Record::default() }.encode();
        let a = c.fill(b"/j", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        assert_eq!([a.live_replica(0), a.live_replica(1)], [Some("y:2"), Some("y:2")]);
    }

    /// A thread that reads the same `cap` keys over and over, in any order, always hits.
    #[test]
    fn a_walk_over_cap_keys_always_hits() {
        let topo = Topology::new(&["a:1".into()], 1, 1, std::time::Duration::from_secs(1), None);
        let bytes = Record { volumes: vec!["a:1".into()], size: 1, ..Record::default() }.encode();
        let cap = 1000u32;
        let mut c = Cache::new(cap as usize);
        let mut misses = 0;
        for round in 0..5 {
            for i in 0..cap {
                // a different order each round
                let k = ((i * 7919 + round * 104_729) % cap).to_be_bytes();
                if c.get(&k, 0, 0).is_none() && c.revive(&k, 0, 0).is_none() {
                    misses += 1;
                    c.fill(&k, RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
                }
            }
        }
        assert_eq!(misses, cap, "only the first reads miss");
    }

    #[test]
    fn bounded_and_what_is_read_survives() {
        let topo = Topology::new(&["a:1".into()], 1, 1, std::time::Duration::from_secs(1), None);
        let bytes = Record { volumes: vec!["a:1".into()], size: 1, ..Record::default() }.encode();
        let mut c = Cache::new(4);
        c.fill(b"/hot", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        for i in 0..50u8 {
            c.fill(&[i], RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
            assert!(c.answers.len() <= 8);
            // read in every round: it is never the one dropped
            if c.get(b"/hot", 0, 0).is_none() {
                assert!(c.revive(b"/hot", 0, 0).is_some(), "round {i}");
            }
        }
        let mut off = Cache::new(0);
        off.fill(b"/k", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        off.fill(b"/j", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        assert_eq!(off.answers.len(), 1);
    }
}
