//! The index: key → [`Record`] in RocksDB, in column family `live` or `unlinked`.
//! Every state change is one WriteBatch, so a crash leaves a key in exactly one state.

use std::{
    ffi::CString,
    fmt,
    os::unix::ffi::OsStrExt,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use rocksdb::{
    ColumnFamilyDescriptor, DBPinnableSlice, DBRawIterator, LogLevel, Options, ReadOptions, WriteBatch, WriteOptions,
    DB,
};

use crate::record::{Corrupt, Record, RecordRef};

const LIVE: &str = "live";
const UNLINKED: &str = "unlinked";

/// Least free space to open the index: an open writes a MANIFEST, an OPTIONS file, a new
/// WAL and the info log's header before anything else.
const MIN_FREE: u64 = 1 << 20;

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
        let fail = |why: String| format!("cannot open index {}: {why}", path.display());
        // RocksDB's first writes at open go to its info log, whose assertion aborts the
        // process on a full disk (see below): refuse before it starts
        if let Some(free) = free_bytes(path) {
            if free < MIN_FREE {
                return Err(fail(format!("no space left on device ({} KiB free)", free >> 10)));
            }
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_keep_log_file_num(4);
        // The info log sits beside the index, and Debian's librocksdb keeps its assertions:
        // a log line written after a log write failed for want of space aborts the process
        // (WritableFileWriter::AssertFalseAndGetStatusForPrevError). At this level only the
        // header is written, at open, so nothing writes the log while the disk is full.
        opts.set_log_level(LogLevel::Fatal);
        let mut cf_opts = Options::default();
        // point reads dominate: bloom filters in SST files and in the memtable (a miss skips
        // the skiplist search), hashed data-block indexes, a 64 MiB block cache
        cf_opts.optimize_for_point_lookup(64);
        let cfs = [LIVE, UNLINKED].map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()));
        match DB::open_cf_descriptors(&opts, path, cfs) {
            Ok(db) => Ok(Index {
                db,
                wopts: WriteOptions::default(),
                ropts: ReadOptions::default(),
                seqs: (0..SEQS).map(|_| AtomicU64::new(0)).collect(),
            }),
            Err(e) => {
                let msg = e.into_string();
                Err(fail(if msg.contains("lock") {
                    "it is locked by another process (is another mkv running on it?)".to_string()
                } else if msg.contains("Corruption") {
                    format!("it is corrupt ({msg})")
                } else if msg.contains("No space left on device") {
                    format!("no space left on device ({msg})")
                } else {
                    msg
                }))
            }
        }
    }

    /// Deletes the index at `path` (rebuild -force replaces one); it must not be open.
    pub fn destroy(path: &Path) -> Result<(), String> {
        DB::destroy(&Options::default(), path).map_err(|e| format!("cannot remove index {}: {e}", path.display()))
    }

    fn cf(&self, state: State) -> &rocksdb::ColumnFamily {
        // both families are created by open(); their absence is a bug, not an input error
        self.db.cf_handle(state.cf()).expect("column family created at open")
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
        b.delete_cf(self.cf(other), key);
        b.put_cf(self.cf(to), key, rec.encode());
        self.db.write_opt(b, &self.wopts)?;
        self.bump(key);
        Ok(())
    }

    /// Forgets `key` in both families.
    pub fn remove(&self, key: &[u8]) -> Result<(), Error> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(State::Live), key);
        b.delete_cf(self.cf(State::Unlinked), key);
        self.db.write_opt(b, &self.wopts)?;
        self.bump(key);
        Ok(())
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

    /// Syncs the WAL to disk: the batch tools call it before they exit.
    pub fn sync(&self) -> Result<(), Error> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

/// Bytes that this process may still write on the filesystem holding `path` (or the nearest
/// existing folder above it).
fn free_bytes(path: &Path) -> Option<u64> {
    let mut at = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    loop {
        if let Ok(c) = CString::new(at.as_os_str().as_bytes()) {
            // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs; a zeroed
            // statvfs is valid (plain integers).
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 {
                // root may also write into the blocks the filesystem reserves for it
                // SAFETY: geteuid cannot fail.
                let blocks = if unsafe { libc::geteuid() } == 0 { st.f_bfree } else { st.f_bavail };
                return Some(blocks as u64 * st.f_frsize as u64);
            }
        }
        at = match at.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => return None,
        };
    }
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
        let r = Record { volumes: vec!["a:1".into()], size: 3, md5: None };
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
    fn scan_prefix_and_start() {
        let p = tmp("scan");
        let idx = Index::open(&p).unwrap();
        let r = Record { volumes: vec!["a:1".into()], size: 1, md5: None };
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
