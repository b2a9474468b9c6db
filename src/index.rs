//! The index: key → [`Record`] in RocksDB, in column family `live` or `unlinked`.
//! Every state change is one WriteBatch, so a crash leaves a key in exactly one state.

use std::{
    fmt,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use rocksdb::{
    ColumnFamilyDescriptor, DBPinnableSlice, DBRawIterator, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use crate::record::{Corrupt, Pending, Record, RecordRef};

const LIVE: &str = "live";
const UNLINKED: &str = "unlinked";
/// Replacements being written: key → [`Pending`] (usually empty; read at start-up).
const PENDING: &str = "pending";

/// Which column family a key is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Live,
    /// Soft-deleted, a PUT in flight (or interrupted), or a DELETE that could not finish.
    Unlinked,
}

impl State {
    fn cf(self) -> &'static str {
        match self {
            State::Live => LIVE,
            State::Unlinked => UNLINKED,
        }
    }
}

#[derive(Debug)]
pub enum Error {
    Db(rocksdb::Error),
    Corrupt(Corrupt),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Db(e) => write!(f, "index: {e}"),
            Error::Corrupt(e) => write!(f, "index: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Db(e)
    }
}

impl From<Corrupt> for Error {
    fn from(e: Corrupt) -> Self {
        Error::Corrupt(e)
    }
}

pub struct Index {
    db: DB,
    // No fsync: the WAL is in the OS page cache once write() returns, so a `201` survives
    // `kill -9` of the master; syncing inline would cost ~150 µs per write on a runtime thread.
    wopts: WriteOptions,
    /// Made once: the default per-call ReadOptions is a C++ allocation per GET.
    ropts: ReadOptions,
    /// Write sequence numbers by key hash, bumped after every write (see [`Index::seq`]).
    seqs: Box<[AtomicU64]>,
}

/// Buckets of write sequence numbers: a write makes cached answers of 1/SEQS of the keys stale.
const SEQS: usize = 4096;

/// A pinned value read from the index: no copy on the GET path.
pub struct Pinned<'a>(DBPinnableSlice<'a>);

impl Pinned<'_> {
    pub fn record(&self) -> Result<RecordRef<'_>, Error> {
        Ok(RecordRef::parse(&self.0)?)
    }
}

impl Index {
    /// Opens (creating if missing) the index at `path`. The error says, in one line, why not.
    pub fn open(path: &Path) -> Result<Index, String> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_keep_log_file_num(4);
        let mut cf_opts = Options::default();
        // point reads dominate: bloom filters in SST files and in the memtable (a miss skips
        // the skiplist search), hashed data-block indexes, a 64 MiB block cache
        cf_opts.optimize_for_point_lookup(64);
        let cfs = [LIVE, UNLINKED, PENDING].map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()));
        match DB::open_cf_descriptors(&opts, path, cfs) {
            Ok(db) => Ok(Index {
                db,
                wopts: WriteOptions::default(),
                ropts: ReadOptions::default(),
                seqs: (0..SEQS).map(|_| AtomicU64::new(0)).collect(),
            }),
            Err(e) => {
                let msg = e.into_string();
                let why = if msg.contains("lock") {
                    "it is locked by another process (is another mkv running on it?)".to_string()
                } else if msg.contains("Corruption") {
                    format!("it is corrupt ({msg})")
                } else {
                    msg
                };
                Err(format!("cannot open index {}: {why}", path.display()))
            }
        }
    }

    /// Deletes the index at `path` (rebuild -force replaces one); it must not be open.
    pub fn destroy(path: &Path) -> Result<(), String> {
        DB::destroy(&Options::default(), path).map_err(|e| format!("cannot remove index {}: {e}", path.display()))
    }

    fn cf(&self, state: State) -> &rocksdb::ColumnFamily {
        self.cf_named(state.cf())
    }

    fn cf_named(&self, name: &str) -> &rocksdb::ColumnFamily {
        // every family is created by open(); an absent one is a bug, not an input error
        self.db.cf_handle(name).expect("column family created at open")
    }

    /// The record bytes of `key` in `state`, pinned.
    pub fn get_pinned(&self, state: State, key: &[u8]) -> Result<Option<Pinned<'_>>, Error> {
        Ok(self.db.get_pinned_cf_opt(self.cf(state), key, &self.ropts)?.map(Pinned))
    }

    /// The write sequence number of `key`'s bucket. A reader that takes it *before* reading
    /// the index and finds it unchanged later knows no write of the key happened since.
    pub fn seq(&self, key: &[u8]) -> u64 {
        self.seqs[crc32fast::hash(key) as usize % SEQS].load(Ordering::Acquire)
    }

    fn bump(&self, key: &[u8]) {
        self.seqs[crc32fast::hash(key) as usize % SEQS].fetch_add(1, Ordering::Release);
    }

    /// The record of `key` and its state, live first.
    pub fn get(&self, key: &[u8]) -> Result<Option<(State, Record)>, Error> {
        for state in [State::Live, State::Unlinked] {
            if let Some(p) = self.get_pinned(state, key)? {
                return Ok(Some((state, p.record()?.to_owned())));
            }
        }
        Ok(None)
    }

    /// Puts `key` in `to` with `rec`, removing it from the other family, in one batch.
    pub fn set(&self, key: &[u8], to: State, rec: &Record) -> Result<(), Error> {
        let mut b = WriteBatch::default();
        let other = if to == State::Live { State::Unlinked } else { State::Live };
        self.delete_held(&mut b, other, key)?;
        b.put_cf(self.cf(to), key, rec.encode());
        self.db.write_opt(b, &self.wopts)?;
        self.bump(key);
        Ok(())
    }

    /// Forgets `key` in both families.
    pub fn remove(&self, key: &[u8]) -> Result<(), Error> {
        let mut b = WriteBatch::default();
        self.delete_held(&mut b, State::Live, key)?;
        self.delete_held(&mut b, State::Unlinked, key)?;
        self.db.write_opt(b, &self.wopts)?;
        self.bump(key);
        Ok(())
    }

    /// Adds the delete of `key` from `state` to `b` only when `state` holds it. RocksDB
    /// estimates a family's keys as its entries less twice its deletes, so each blind
    /// delete of an absent key would hide a present one from the key counts (`/metrics`).
    /// Writers hold the key's claim, so what this reads stays true until the batch lands.
    fn delete_held(&self, b: &mut WriteBatch, state: State, key: &[u8]) -> Result<(), Error> {
        if self.db.get_pinned_cf_opt(self.cf(state), key, &self.ropts)?.is_some() {
            b.delete_cf(self.cf(state), key);
        }
        Ok(())
    }

    /// The replacement of `key` being written, if any.
    pub fn pending(&self, key: &[u8]) -> Result<Option<Pending>, Error> {
        match self.db.get_pinned_cf(self.cf_named(PENDING), key)? {
            Some(v) => Ok(Some(Pending::decode(&v)?)),
            None => Ok(None),
        }
    }

    pub fn set_pending(&self, key: &[u8], p: &Pending) -> Result<(), Error> {
        Ok(self.db.put_cf_opt(self.cf_named(PENDING), key, p.encode(), &self.wopts)?)
    }

    pub fn remove_pending(&self, key: &[u8]) -> Result<(), Error> {
        Ok(self.db.delete_cf_opt(self.cf_named(PENDING), key, &self.wopts)?)
    }

    /// A replacement is in place: `key` takes `rec` in `to` and its pending entry goes, in
    /// one batch.
    pub fn commit_pending(&self, key: &[u8], to: State, rec: &Record) -> Result<(), Error> {
        let mut b = WriteBatch::default();
        let other = if to == State::Live { State::Unlinked } else { State::Live };
        self.delete_held(&mut b, other, key)?;
        b.put_cf(self.cf(to), key, rec.encode());
        b.delete_cf(self.cf_named(PENDING), key);
        self.db.write_opt(b, &self.wopts)?;
        self.bump(key);
        Ok(())
    }

    /// Up to `n` keys with a pending replacement, from `start` on.
    pub fn pending_keys(&self, start: &[u8], n: usize) -> Result<Vec<Vec<u8>>, Error> {
        let mut it = self.db.raw_iterator_cf(self.cf_named(PENDING));
        it.seek(start);
        let mut out = Vec::new();
        while out.len() < n {
            let Some(k) = it.key() else { break };
            out.push(k.to_vec());
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Keys of `state` with `prefix`, from `start` (or the prefix) on, byte-wise sorted.
    pub fn scan(&self, state: State, prefix: &[u8], start: &[u8]) -> Scan<'_> {
        let mut it = self.db.raw_iterator_cf(self.cf(state));
        it.seek(if start > prefix { start } else { prefix });
        Scan { it, prefix: prefix.to_vec(), first: true }
    }

    /// Whether the index holds no key at all (rebuild refuses to overwrite one that does).
    pub fn is_empty(&self) -> bool {
        [State::Live, State::Unlinked].iter().all(|&s| {
            let mut it = self.db.raw_iterator_cf(self.cf(s));
            it.seek_to_first();
            !it.valid()
        })
    }

    /// Writes many records at once (rebuild): one batch, no per-key round trip.
    pub fn put_many(&self, items: &[(Vec<u8>, State, Record)]) -> Result<(), Error> {
        let mut b = WriteBatch::default();
        for (key, state, rec) in items {
            b.put_cf(self.cf(*state), key, rec.encode());
        }
        self.db.write_opt(b, &self.wopts)?;
        items.iter().for_each(|(key, _, _)| self.bump(key));
        Ok(())
    }

    /// A setting kept beside the keys (in the default column family), e.g. the volume list
    /// an online rebalance switched to.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get(format!("meta/{name}"))?)
    }

    pub fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        Ok(self.db.put_opt(format!("meta/{name}"), value, &self.wopts)?)
    }

    /// RocksDB's own figures, for `/metrics` and the status page (estimates).
    pub fn stats(&self) -> Stats {
        let cf_int = |state: State, name: &str| self.db.property_int_value_cf(self.cf(state), name).ok().flatten();
        let all = |name: &str| {
            [LIVE, UNLINKED, PENDING]
                .iter()
                .filter_map(|cf| self.db.property_int_value_cf(self.cf_named(cf), name).ok().flatten())
                .sum::<u64>()
        };
        Stats {
            live_keys: cf_int(State::Live, "rocksdb.estimate-num-keys").unwrap_or(0),
            unlinked_keys: cf_int(State::Unlinked, "rocksdb.estimate-num-keys").unwrap_or(0),
            sst_bytes: all("rocksdb.total-sst-files-size"),
            memtable_bytes: all("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: all("rocksdb.estimate-pending-compaction-bytes"),
        }
    }

    /// Syncs the WAL to disk: the batch tools call it before they exit.
    pub fn sync(&self) -> Result<(), Error> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Writes the memtables out to table files (and syncs the WAL first), so the next open
    /// has no log to replay: a stopping master and the batch tools call it last.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush_wal(true)?;
        for state in [State::Live, State::Unlinked] {
            self.db.flush_cf(self.cf(state))?;
        }
        self.db.flush()?;
        Ok(())
    }
}

/// RocksDB's estimates of the index's size and work.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub live_keys: u64,
    pub unlinked_keys: u64,
    pub sst_bytes: u64,
    pub memtable_bytes: u64,
    pub pending_compaction_bytes: u64,
}

/// A cursor over the keys of one family under one prefix.
pub struct Scan<'a> {
    it: DBRawIterator<'a>,
    prefix: Vec<u8>,
    first: bool,
}

impl Scan<'_> {
    /// The next key with the prefix, with its record bytes.
    pub fn next(&mut self) -> Option<(&[u8], &[u8])> {
        if !self.first {
            self.it.next();
        }
        self.first = false;
        match (self.it.key(), self.it.value()) {
            (Some(k), Some(v)) if k.starts_with(&self.prefix) => Some((k, v)),
            _ => None,
        }
    }

    /// An iterator error (I/O, corruption) ends a scan like the end of the keys; say so.
    pub fn status(&self) -> Result<(), Error> {
        Ok(self.it.status()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("mkv-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn states_move_in_one_batch() {
        let p = tmp("states");
        let idx = Index::open(&p).unwrap();
        let r = Record { volumes: vec!["a:1".into()], size: 3, ..Record::default() };
        idx.set(b"/k", State::Unlinked, &r).unwrap();
        assert_eq!(idx.get(b"/k").unwrap(), Some((State::Unlinked, r.clone())));
        idx.set(b"/k", State::Live, &r).unwrap();
        assert_eq!(idx.get(b"/k").unwrap(), Some((State::Live, r.clone())));
        assert!(idx.get_pinned(State::Unlinked, b"/k").unwrap().is_none());
        idx.remove(b"/k").unwrap();
        assert_eq!(idx.get(b"/k").unwrap(), None);
        drop(idx);
        std::fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn key_counts_follow_a_put_unlink_delete() {
        let p = tmp("counts");
        let idx = Index::open(&p).unwrap();
        let r = Record { volumes: vec!["a:1".into()], size: 3, ..Record::default() };
        for k in [b"/a", b"/b", b"/c"] {
            // what a PUT does: unlinked while the replicas are written, then live
            idx.set(k, State::Unlinked, &r).unwrap();
            idx.set(k, State::Live, &r).unwrap();
        }
        idx.set(b"/c", State::Unlinked, &r).unwrap();
        let s = idx.stats();
        assert_eq!((s.live_keys, s.unlinked_keys), (2, 1));
        idx.remove(b"/c").unwrap();
        let s = idx.stats();
        assert_eq!((s.live_keys, s.unlinked_keys), (2, 0));
        drop(idx);
        std::fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn scan_prefix_and_start() {
        let p = tmp("scan");
        let idx = Index::open(&p).unwrap();
        let r = Record { volumes: vec!["a:1".into()], size: 1, ..Record::default() };
        for k in ["/a", "/b/1", "/b/2", "/b/3", "/c"] {
            idx.set(k.as_bytes(), State::Live, &r).unwrap();
        }
        let collect = |prefix: &[u8], start: &[u8]| {
            let mut s = idx.scan(State::Live, prefix, start);
            let mut out = vec![];
            while let Some((k, _)) = s.next() {
                out.push(String::from_utf8(k.to_vec()).unwrap());
            }
            out
        };
        assert_eq!(collect(b"/b", b""), ["/b/1", "/b/2", "/b/3"]);
        assert_eq!(collect(b"/b", b"/b/2"), ["/b/2", "/b/3"]);
        assert_eq!(collect(b"/", b"/b/3"), ["/b/3", "/c"]);
        assert_eq!(collect(b"/b", b"/a"), ["/b/1", "/b/2", "/b/3"]);
        assert!(collect(b"/z", b"").is_empty());
        drop(idx);
        std::fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn second_open_is_refused_with_a_reason() {
        let p = tmp("lock");
        let idx = Index::open(&p).unwrap();
        let err = Index::open(&p).err().unwrap();
        assert!(err.contains("locked"), "{err}");
        drop(idx);
        std::fs::remove_dir_all(&p).unwrap();
    }
}
