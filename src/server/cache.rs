//! A per-thread cache of what a GET answers for a key: its replicas, the `Key-Volumes`
//! line, MD5 and balance. A hit costs a hash lookup instead of a RocksDB read and four MD5s.
//!
//! Never stale: an entry remembers the key's write sequence number ([`Index::seq`], read
//! before the index was) and the topology generation; any write of the key or volume change
//! makes the numbers differ and the entry is read again. Keys found missing are kept apart,
//! in a set of their own with its own bound, so a flood of random keys churns only that set
//! and never crowds out real answers (when full, either simply starts over). A miss then costs
//! a hash lookup too, not a RocksDB read.
//!
//! [`Index::seq`]: crate::index::Index::seq

use std::{
    collections::{hash_map::Entry, HashMap},
    sync::Arc,
};

use crate::{
    placement,
    record::RecordRef,
    volume::{Topology, Volume},
};

/// What a GET of one live key writes, ready to copy out.
pub struct Answer {
    seq: u64,
    gen: u64,
    /// Replicas in stored order, each `host:port[/svXX]`, with its server's health (None: a
    /// server outside the topology, taken as up).
    pub volumes: Box<[(Box<str>, Option<Arc<Volume>>)]>,
    /// The key's file path, `/xx/yy/base64`.
    pub path: Box<str>,
    /// `a,b,c`: the `Key-Volumes` value.
    pub key_volumes: Box<str>,
    pub md5_hex: Option<[u8; 32]>,
    pub balanced: bool,
}

impl Answer {
    /// A replica on a live volume: the one at `turn` (modulo the count), or the next live one
    /// after it. Callers rotate `turn`, so the reads of a hot key divide among its replicas.
    pub fn live_replica(&self, turn: usize) -> Option<&str> {
        let n = self.volumes.len();
        (0..n)
            .map(|i| &self.volumes[(turn + i) % n])
            .find(|(_, v)| v.as_ref().is_none_or(|v| v.is_up()))
            .map(|(r, _)| &**r)
    }
}

pub struct Cache {
    map: HashMap<Box<[u8]>, Answer>,
    /// Turns taken by redirects on this thread: each picks the next replica.
    pub turn: usize,
    /// Keys with no live record, each with the write sequence number it was read at.
    missing: HashMap<Box<[u8]>, u64>,
    cap: usize,
    scores: Vec<([u8; 16], usize)>,
}

impl Cache {
    /// A cache of at most `cap` keys (0: nothing is cached).
    pub fn new(cap: usize) -> Cache {
        Cache { map: HashMap::new(), turn: 0, missing: HashMap::new(), cap, scores: Vec::new() }
    }

    /// Whether `key` was found missing and nothing wrote it since (write sequence `seq`).
    pub fn is_missing(&self, key: &[u8], seq: u64) -> bool {
        self.missing.get(key) == Some(&seq)
    }

    /// Remembers that `key` had no live record at write sequence `seq`.
    pub fn note_missing(&mut self, key: &[u8], seq: u64) {
        if self.cap == 0 {
            return;
        }
        if self.missing.len() >= self.cap {
            self.missing.clear();
        }
        self.missing.insert(key.into(), seq);
    }

    /// The cached answer for `key`, if still current for write sequence `seq` and topology `gen`.
    pub fn get(&self, key: &[u8], seq: u64, gen: u64) -> Option<&Answer> {
        self.map.get(key).filter(|a| a.seq == seq && a.gen == gen)
    }

    /// Builds the answer for `key` from its record and keeps it (when the cache is on).
    pub fn fill(&mut self, key: &[u8], rec: RecordRef<'_>, topo: &Topology, seq: u64, gen: u64) -> &Answer {
        let volumes: Box<[(Box<str>, Option<Arc<Volume>>)]> =
            rec.volumes().map(|v| (Box::from(v), topo.volume(placement::server_of(v)).cloned())).collect();
        let balanced =
            placement::is_balanced(key, rec.volumes(), &topo.volumes, topo.replicas, topo.subvolumes, &mut self.scores);
        let answer = Answer {
            seq,
            gen,
            key_volumes: rec.volumes().collect::<Vec<_>>().join(",").into(),
            volumes,
            path: placement::key_path(key).into(),
            md5_hex: rec.md5.map(hex),
            balanced,
        };
        // full: start over (cheaper than tracking recency, and a cap of 0 keeps just this one)
        if self.map.len() >= self.cap.max(1) {
            self.map.clear();
        }
        match self.map.entry(key.into()) {
            Entry::Occupied(mut e) => {
                e.insert(answer);
                e.into_mut()
            }
            Entry::Vacant(e) => e.insert(answer),
        }
    }
}

fn hex(m: &[u8; 16]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in m.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
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
        assert_eq!(&*a.key_volumes, want.join(",").as_str());
        assert_eq!(&a.md5_hex.unwrap()[..4], b"abab");
        assert!(c.get(b"/k", 7, 1).is_some());
        assert!(c.get(b"/k", 8, 1).is_none(), "a write of the key");
        assert!(c.get(b"/k", 7, 2).is_none(), "a volume change");
        assert!(c.get(b"/other", 7, 1).is_none());
    }

    #[test]
    fn misses_expire_with_writes_and_stay_apart() {
        let topo = Topology::new(&["a:1".into()], 1, 1, std::time::Duration::from_secs(1), None);
        let bytes = Record { volumes: vec!["a:1".into()], size: 1, ..Record::default() }.encode();
        let mut c = Cache::new(2);
        c.fill(b"/live", RecordRef::parse(&bytes).unwrap(), &topo, 3, 0);
        c.note_missing(b"/gone", 5);
        assert!(c.is_missing(b"/gone", 5));
        assert!(!c.is_missing(b"/gone", 6), "a write of the key");
        assert!(!c.is_missing(b"/live", 3));
        // a flood of missing keys churns the missing set only
        for i in 0..100u8 {
            c.note_missing(&[i], 0);
            assert!(c.missing.len() <= 2);
        }
        assert!(c.get(b"/live", 3, 0).is_some());
        let mut off = Cache::new(0);
        off.note_missing(b"/gone", 5);
        assert!(!off.is_missing(b"/gone", 5));
    }

    #[test]
    fn redirects_take_turns_over_the_replicas() {
        // servers outside the topology have no probe and count as up
        let topo = Topology::new(&["a:1".into()], 1, 1, std::time::Duration::from_secs(1), None);
        let vols = vec!["x:1".into(), "y:2".into(), "z:3".into()];
        let bytes = Record { volumes: vols.clone(), size: 1, ..Record::default() }.encode();
        let mut c = Cache::new(1);
        let a = c.fill(b"/k", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        let picked: Vec<&str> = (0..6).map(|t| a.live_replica(t).unwrap()).collect();
        assert_eq!(picked, ["x:1", "y:2", "z:3", "x:1", "y:2", "z:3"]);
        // a known volume never seen up is skipped: the next one in turn answers
        let bytes = Record { volumes: vec!["a:1".into(), "y:2".into()], size: 1, ..Record::default() }.encode();
        let a = c.fill(b"/j", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        assert_eq!([a.live_replica(0), a.live_replica(1)], [Some("y:2"), Some("y:2")]);
    }

    #[test]
    fn bounded() {
        let topo = Topology::new(&["a:1".into()], 1, 1, std::time::Duration::from_secs(1), None);
        let bytes = Record { volumes: vec!["a:1".into()], size: 1, ..Record::default() }.encode();
        let mut c = Cache::new(3);
        for i in 0..10u8 {
            c.fill(&[i], RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
            assert!(c.map.len() <= 3);
        }
        let mut off = Cache::new(0);
        off.fill(b"/k", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        off.fill(b"/j", RecordRef::parse(&bytes).unwrap(), &topo, 0, 0);
        assert_eq!(off.map.len(), 1);
    }
}
