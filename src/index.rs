//! The index: key → [`Record`] in RocksDB, in column family `live` or `unlinked`.
//! Every state change is one WriteBatch, so a crash leaves a key in exactly one state.

mod counts;
mod reopen;

use std::{
    fmt,
    path::Path,
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
};

use rocksdb::{DBPinnableSlice, DBRawIterator, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use self::{
    counts::Delta,
    reopen::{free_bytes, Db, Inner, Use, MIN_FREE},
};
use crate::record::{Corrupt, Pending, Record, RecordRef};

/// Where (in the default column family) [`Index::note_marking`] names keys.
const MARKING: &[u8] = b"marking/";
const LIVE: &str = "live";
const UNLINKED: &str = "unlinked";
/// The block cache, in MiB, unless `-index-cache` says otherwise: at ~80 bytes a record
/// it holds the blocks of ~6M keys.
pub const DEFAULT_CACHE_MB: usize = 512;
/// Writes held in memory (RocksDB's memtables, every family's together) before the largest
/// is flushed to a table file: each family's own limit (64 MiB, two of them, six families)
/// let a write-heavy master hold ~60 MiB more after a few hundred thousand writes, and up
/// to ~768 MiB, with no live data behind it.
pub const MEMTABLES_MB: usize = 64;

/// Replacements being written: key → [`Pending`] (usually empty; read at start-up).
const PENDING: &str = "pending";
/// S3 multipart uploads and their parts, in the S3 layer's own encoding.
const MULTIPART: &str = "multipart";
/// The exact number of keys in each state (see [`counts`]).
const COUNTS: &str = "counts";

/// Which column family a key is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Live,
    /// Soft-deleted, a PUT in flight (or interrupted), or a DELETE that could not finish.
    Unlinked,
}

impl State {
    /// Whether `rec`, kept in this family, is a PUT's or a DELETE's first step (a
    /// [`Record::placeholder`] recorded `unlinked`): in flight, or one that failed and left
    /// the key listed for a DELETE. Its files may be partly there; none is missing, and
    /// there is no value to restore or move.
    pub fn holds_unfinished(self, rec: &Record) -> bool {
        self == State::Unlinked && rec.is_placeholder()
    }

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
    /// The disk holding the index is full: writes are refused until space is freed.
    Full,
    /// Space is back and the index is being reopened for writing.
    Reopening,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Db(e) => write!(f, "index: {e}"),
            Error::Corrupt(e) => write!(f, "index: {e}"),
            Error::Full => {
                write!(f, "the index disk is full (no space left on device): writes resume once space is freed")
            }
            Error::Reopening => write!(f, "the index is reopening after its disk was full: retry shortly"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        if e.kind() == rocksdb::ErrorKind::Corruption {
            found_corrupt(&e);
        }
        Error::Db(e)
    }
}

/// The first corruption RocksDB reported in this process's index (a damaged table file is
/// found only when a read reaches it: the master may have started well). One index a
/// process: the server's; `/health` and the status page say it until a restart.
static CORRUPTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn found_corrupt(e: &rocksdb::Error) {
    let mut first = false;
    CORRUPTION.get_or_init(|| {
        first = true;
        e.to_string()
    });
    if first {
        eprintln!(
            "mkv: the index is corrupt ({e}): reads that reach the damage fail; restore it from a \
             snapshot (mkv snapshot) or make a new one from the volumes (mkv rebuild)"
        );
    }
}

impl From<Corrupt> for Error {
    fn from(e: Corrupt) -> Self {
        Error::Corrupt(e)
    }
}

/// Whether RocksDB failed for want of disk space (its status text is all the crate gives).
fn no_space(e: &rocksdb::Error) -> bool {
    e.as_ref().contains("No space left on device")
}

/// A key and its value, as read from a family.
pub type Entry = (Vec<u8>, Vec<u8>);

pub struct Index {
    inner: Arc<Inner>,
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
pub struct Pinned<'a> {
    value: DBPinnableSlice<'a>,
    // declared after `value`, so the value is released before the database may be closed
    _use: Use<'a>,
}

impl Pinned<'_> {
    pub fn record(&self) -> Result<RecordRef<'_>, Error> {
        Ok(RecordRef::parse(&self.value)?)
    }
}

impl Index {
    /// Opens (creating if missing) the index at `path` with the default block cache. The
    /// error says, in one line, why not.
    pub fn open(path: &Path) -> Result<Index, String> {
        Self::open_with_cache(path, DEFAULT_CACHE_MB)
    }

    /// [`Index::open`] of an index that must exist already (verify, rebalance): a `-db` that
    /// holds none is refused, not made empty (a verify `-repair` over an empty index would
    /// take every file on the volumes for an orphan).
    pub fn open_existing(path: &Path) -> Result<Index, String> {
        if !path.join("CURRENT").is_file() {
            return Err(format!(
                "no index at {} (a master makes one; `mkv rebuild` makes one from the volumes)",
                path.display()
            ));
        }
        Self::open(path)
    }

    /// [`Index::open`] with a block cache of `cache_mb` MiB (`-index-cache`).
    pub fn open_with_cache(path: &Path, cache_mb: usize) -> Result<Index, String> {
        Self::open_sized(path, cache_mb, MEMTABLES_MB)
    }

    /// [`Index::open`] with a block cache of `cache_mb` MiB and `memtables_mb` MiB of writes
    /// held in memory.
    fn open_sized(path: &Path, cache_mb: usize, memtables_mb: usize) -> Result<Index, String> {
        let cache = rocksdb::Cache::new_lru_cache(cache_mb.max(1) << 20);
        let memtables = memtables_mb.max(1) << 20;
        let fail = |why: String| format!("cannot open index {}: {why}", path.display());
        if path.exists() && !path.is_dir() {
            return Err(fail("it is a file, not a folder (-db names the index's folder)".into()));
        }
        // made here, not by RocksDB, whose error is a Rust debug dump of the I/O error
        std::fs::create_dir_all(path).map_err(|e| fail(format!("cannot create its folder: {e}")))?;
        // RocksDB's first writes at open go to its info log, whose assertion aborts the
        // process on a full disk (see Db::open): refuse before it starts
        if let Some(free) = free_bytes(path) {
            if free < MIN_FREE {
                return Err(fail(format!("no space left on device ({} KiB free)", free >> 10)));
            }
        }
        let db = Db::open(path, true, &cache, memtables).map_err(|e| {
            let msg = e.to_string();
            // a corruption's text may hold "block" and a path may hold anything: its kind first
            fail(if e.kind() == rocksdb::ErrorKind::Corruption {
                format!("it is corrupt ({msg})")
            } else if msg.contains("lock file") || msg.contains("/LOCK:") {
                "it is locked by another process (is another mkv running on it?)".to_string()
            } else if no_space(&e) {
                format!("no space left on device ({msg})")
            } else {
                msg
            })
        })?;
        counts::init(&db).map_err(|e| fail(format!("cannot count its keys: {e}")))?;
        Ok(Index {
            inner: Arc::new(Inner::new(path, db, cache, memtables)),
            wopts: WriteOptions::default(),
            ropts: ReadOptions::default(),
            seqs: (0..SEQS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Deletes the index at `path` (rebuild -force replaces one); it must not be open.
    pub fn destroy(path: &Path) -> Result<(), String> {
        DB::destroy(&Options::default(), path).map_err(|e| format!("cannot remove index {}: {e}", path.display()))
    }

    /// The record bytes of `key` in `state`, pinned.
    pub fn get_pinned(&self, state: State, key: &[u8]) -> Result<Option<Pinned<'_>>, Error> {
        let u = self.inner.enter();
        let found = u.db.db.get_pinned_cf_opt(u.db.cf(state), key, &self.ropts)?;
        Ok(found.map(|value| Pinned { value, _use: u }))
    }

    /// The write sequence number of `key`'s bucket. A reader that takes it *before* reading
    /// the index and finds it unchanged later knows no write of the key happened since.
    pub fn seq(&self, key: &[u8]) -> u64 {
        self.seqs[crc32fast::hash(key) as usize % SEQS].load(Ordering::Acquire)
    }

    /// Makes cached answers and readers of `key` look again (every write does it).
    pub fn bump(&self, key: &[u8]) {
        self.seqs[crc32fast::hash(key) as usize % SEQS].fetch_add(1, Ordering::Release);
    }

    /// The record of `key` and its state, live first.
    pub fn get(&self, key: &[u8]) -> Result<Option<(State, Record)>, Error> {
        let u = self.inner.enter();
        for state in [State::Live, State::Unlinked] {
            if let Some(v) = u.db.db.get_pinned_cf_opt(u.db.cf(state), key, &self.ropts)? {
                return Ok(Some((state, RecordRef::parse(&v)?.to_owned())));
            }
        }
        Ok(None)
    }

    /// Writes one batch, filled against the database in use. Refused at once while the disk
    /// is full; the write that finds it full says so, and the index recovers by itself.
    fn write(&self, fill: impl FnOnce(&Db, &mut WriteBatch)) -> Result<(), Error> {
        self.write_read(|db, b| {
            fill(db, b);
            Ok(())
        })
    }

    /// [`Index::write`] for a batch whose filling reads the database (where a key is, for the
    /// counts): a read that fails fails the write, rather than a count going wrong for good.
    fn write_read(&self, fill: impl FnOnce(&Db, &mut WriteBatch) -> Result<(), Error>) -> Result<(), Error> {
        self.inner.writable()?;
        let u = self.inner.enter();
        if !u.db.writable {
            // the read-only copy went in after this write saw the index healthy
            self.inner.writable()?;
            return Err(Error::Reopening);
        }
        let mut b = WriteBatch::default();
        fill(u.db, &mut b)?;
        u.db.db.write_opt(b, &self.wopts).map_err(|e| self.inner.failed(e))
    }

    /// Puts `key` in `to` with `rec`, removing it from the other family, in one batch.
    pub fn set(&self, key: &[u8], to: State, rec: &Record) -> Result<(), Error> {
        self.set_and(key, to, rec, |_, _| {})
    }

    /// [`Index::set`], with what `and` adds to the same batch (a pending entry's fate).
    fn set_and(
        &self,
        key: &[u8],
        to: State,
        rec: &Record,
        and: impl FnOnce(&Db, &mut WriteBatch),
    ) -> Result<(), Error> {
        self.write_read(|db, b| {
            let mut d = Delta::default();
            moved_in(db, b, &mut d, key, to)?;
            b.put_cf(db.cf(to), key, rec.encode());
            and(db, b);
            d.tally(db, b);
            Ok(())
        })?;
        self.bump(key);
        Ok(())
    }

    /// [`Index::set`] for a caller that knows where the key is: `from` (if another family)
    /// loses it, with no read to find out.
    pub fn set_from(&self, key: &[u8], from: Option<State>, to: State, rec: &Record) -> Result<(), Error> {
        self.write(|db, b| {
            let mut d = Delta::default();
            match from {
                Some(f) if f == to => {}
                Some(f) => {
                    b.delete_cf(db.cf(f), key);
                    d.add(f, -1);
                    d.add(to, 1);
                }
                None => d.add(to, 1),
            }
            b.put_cf(db.cf(to), key, rec.encode());
            d.tally(db, b);
        })?;
        self.bump(key);
        Ok(())
    }

    /// Forgets `key` in both families, and a replacement of it left pending (whose files
    /// the caller deleted with the key's).
    pub fn remove(&self, key: &[u8]) -> Result<(), Error> {
        self.write_read(|db, b| {
            let mut d = Delta::default();
            for state in [State::Live, State::Unlinked] {
                if held(db, state, key)? {
                    b.delete_cf(db.cf(state), key);
                    d.add(state, -1);
                }
            }
            b.delete_cf(db.cf_named(PENDING), key);
            d.tally(db, b);
            Ok(())
        })?;
        self.bump(key);
        Ok(())
    }

    /// Keys of `state` with `prefix`, from `start` (or the prefix) on, byte-wise sorted.
    pub fn scan(&self, state: State, prefix: &[u8], start: &[u8]) -> Scan<'_> {
        let u = self.inner.enter();
        let mut it = u.db.db.raw_iterator_cf(u.db.cf(state));
        it.seek(if start > prefix { start } else { prefix });
        Scan { it, _use: u, prefix: prefix.to_vec(), first: true }
    }

    /// Whether the index holds no key at all (rebuild refuses to overwrite one that does).
    pub fn is_empty(&self) -> bool {
        let u = self.inner.enter();
        [State::Live, State::Unlinked].iter().all(|&s| {
            let mut it = u.db.db.raw_iterator_cf(u.db.cf(s));
            it.seek_to_first();
            !it.valid()
        })
    }

    /// Writes many records at once (rebuild, bench-index): one batch, no per-key round
    /// trip. `new`: the caller knows no key of them is in the index yet (a rebuild writes
    /// each key once into an empty index), so they are counted without a read each.
    pub fn put_many(&self, items: &[(Vec<u8>, State, Record)], new: bool) -> Result<(), Error> {
        self.write_read(|db, b| {
            let mut d = Delta::default();
            for (key, state, rec) in items {
                if new || !held(db, *state, key)? {
                    d.add(*state, 1);
                }
                b.put_cf(db.cf(*state), key, rec.encode());
            }
            d.tally(db, b);
            Ok(())
        })?;
        items.iter().for_each(|(key, _, _)| self.bump(key));
        Ok(())
    }

    /// A setting kept beside the keys (in the default column family), e.g. the volume list
    /// an online rebalance switched to.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.enter().db.db.get(format!("meta/{name}"))?)
    }

    pub fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        self.write(|_, b| b.put(format!("meta/{name}"), value))
    }

    /// Syncs the WAL to disk: the batch tools call it before they exit.
    pub fn sync(&self) -> Result<(), Error> {
        self.inner.writable()?;
        let u = self.inner.enter();
        u.db.db.flush_wal(true).map_err(|e| self.inner.failed(e))
    }

    /// Writes the memtables out to table files (after syncing the WAL), so the next open
    /// has no log to replay: a stopping master and the batch tools call it last.
    pub fn flush(&self) -> Result<(), Error> {
        self.sync()?;
        let u = self.inner.enter();
        for cf in [LIVE, UNLINKED, PENDING, MULTIPART, COUNTS] {
            u.db.db.flush_cf(u.db.cf_named(cf)).map_err(|e| self.inner.failed(e))?;
        }
        u.db.db.flush().map_err(|e| self.inner.failed(e))
    }

    /// The replacement of `key` being written, if any.
    pub fn pending(&self, key: &[u8]) -> Result<Option<Pending>, Error> {
        let u = self.inner.enter();
        match u.db.db.get_pinned_cf_opt(u.db.cf_named(PENDING), key, &self.ropts)? {
            Some(v) => Ok(Some(Pending::decode(&v)?)),
            None => Ok(None),
        }
    }

    pub fn set_pending(&self, key: &[u8], p: &Pending) -> Result<(), Error> {
        self.write(|db, b| b.put_cf(db.cf_named(PENDING), key, p.encode()))
    }

    pub fn remove_pending(&self, key: &[u8]) -> Result<(), Error> {
        self.write(|db, b| b.delete_cf(db.cf_named(PENDING), key))
    }

    /// A replacement is in place: `key` takes `rec` in `to` and its pending entry goes, in
    /// one batch.
    pub fn commit_pending(&self, key: &[u8], to: State, rec: &Record) -> Result<(), Error> {
        self.set_and(key, to, rec, |db, b| b.delete_cf(db.cf_named(PENDING), key))
    }

    /// A delete takes a replacement left pending with it: `key` takes `rec` in `to`, and the
    /// pending entry becomes `rollback` (a replacement still being written, which recovery
    /// ends by deleting its temporary files, never by moving them into place), in one batch.
    pub fn abandon_pending(&self, key: &[u8], to: State, rec: &Record, rollback: &Pending) -> Result<(), Error> {
        self.set_and(key, to, rec, |db, b| b.put_cf(db.cf_named(PENDING), key, rollback.encode()))
    }

    /// Up to `n` keys with a pending replacement, from `start` on.
    pub fn pending_keys(&self, start: &[u8], n: usize) -> Result<Vec<Vec<u8>>, Error> {
        let u = self.inner.enter();
        let mut it = u.db.db.raw_iterator_cf(u.db.cf_named(PENDING));
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

    /// A multipart entry (an S3 upload or part record).
    pub fn mp_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let u = self.inner.enter();
        Ok(u.db.db.get_pinned_cf_opt(u.db.cf_named(MULTIPART), key, &self.ropts)?.map(|v| v.to_vec()))
    }

    pub fn mp_put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.write(|db, b| b.put_cf(db.cf_named(MULTIPART), key, value))
    }

    /// Removes multipart entries, in one batch.
    pub fn mp_delete(&self, keys: &[Vec<u8>]) -> Result<(), Error> {
        self.mp_write(&[], keys)
    }

    /// Puts some multipart entries and removes others, in one batch: all or none of it.
    pub fn mp_write(&self, puts: &[(&[u8], &[u8])], deletes: &[Vec<u8>]) -> Result<(), Error> {
        self.write(|db, b| {
            let cf = db.cf_named(MULTIPART);
            puts.iter().for_each(|(k, v)| b.put_cf(cf, k, v));
            deletes.iter().for_each(|k| b.delete_cf(cf, k));
        })
    }

    /// Up to `n` multipart entries (key, value) with `prefix`, from `start` (or the prefix) on.
    pub fn mp_scan(&self, prefix: &[u8], start: &[u8], n: usize) -> Result<Vec<Entry>, Error> {
        let u = self.inner.enter();
        let mut it = u.db.db.raw_iterator_cf(u.db.cf_named(MULTIPART));
        it.seek(if start > prefix { start } else { prefix });
        let mut out = Vec::new();
        while out.len() < n {
            match (it.key(), it.value()) {
                (Some(k), Some(v)) if k.starts_with(prefix) => out.push((k.to_vec(), v.to_vec())),
                _ => break,
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Every setting whose name starts with `prefix` (e.g. the S3 buckets made empty).
    pub fn meta_with(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let u = self.inner.enter();
        let mut it = u.db.db.raw_iterator();
        let full = format!("meta/{prefix}");
        it.seek(full.as_bytes());
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(full.as_bytes()) {
                break;
            }
            out.push((String::from_utf8_lossy(&k[5..]).into_owned(), v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    pub fn remove_meta(&self, name: &str) -> Result<(), Error> {
        self.write(|_, b| b.delete(format!("meta/{name}")))
    }

    /// Names `key` as having unlink markers written beside it (before an UNLINK writes
    /// them), so that what a failed UNLINK or a crash leaves beside a live key is found again
    /// after a restart; [`Index::forget_marking`] once the key is unlinked or the markers
    /// are deleted.
    pub fn note_marking(&self, key: &[u8]) -> Result<(), Error> {
        self.write(|_, b| b.put([MARKING, key].concat(), b""))
    }

    pub fn forget_marking(&self, key: &[u8]) -> Result<(), Error> {
        self.write(|_, b| b.delete([MARKING, key].concat()))
    }

    /// Every key [`Index::note_marking`] named and nothing forgot yet.
    pub fn marking_keys(&self) -> Result<Vec<Vec<u8>>, Error> {
        let u = self.inner.enter();
        let mut it = u.db.db.raw_iterator();
        it.seek(MARKING);
        let mut out = Vec::new();
        while let Some(k) = it.key() {
            let Some(key) = k.strip_prefix(MARKING) else { break };
            out.push(key.to_vec());
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Whether writes are accepted now (not while the disk is full or the index reopens).
    pub fn writable(&self) -> Result<(), Error> {
        self.inner.writable()
    }

    /// What keeps the index from serving every read and write now, in one line: corruption
    /// found, a full disk, a reopening; None when nothing does.
    pub fn problem(&self) -> Option<String> {
        if let Some(e) = CORRUPTION.get() {
            return Some(format!("the index is corrupt ({e}): restore a snapshot or run mkv rebuild"));
        }
        self.writable().err().map(|e| format!("writes refused: {e}"))
    }

    /// The key counts and RocksDB's own figures, for `/metrics` and the status page.
    pub fn stats(&self) -> Stats {
        let u = self.inner.enter();
        let cf_int = |cf: &str, name: &str| u.db.db.property_int_value_cf(u.db.cf_named(cf), name).ok().flatten();
        let all = |name: &str| [LIVE, UNLINKED, PENDING].iter().filter_map(|cf| cf_int(cf, name)).sum::<u64>();
        let [live_keys, unlinked_keys] = counts::read(u.db).unwrap_or_default();
        Stats {
            live_keys,
            unlinked_keys,
            sst_bytes: all("rocksdb.total-sst-files-size"),
            memtable_bytes: all("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: all("rocksdb.estimate-pending-compaction-bytes"),
        }
    }

    /// A consistent copy of the index in `dir` (which must not exist; the folders on the way
    /// are made as needed): a RocksDB checkpoint, hard links where `dir` is on the same
    /// filesystem. The error is one line.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), String> {
        if dir.exists() {
            return Err(format!("{} exists already: a snapshot goes into a new folder", dir.display()));
        }
        // inside the index's own folder, RocksDB would take it for files of its own: judged
        // by the nearest folder on the way that exists, before any is made
        let own = std::fs::canonicalize(self.inner.path()).unwrap_or_else(|_| self.inner.path().to_path_buf());
        let dir = std::path::absolute(dir).map_err(|e| format!("cannot snapshot into {}: {e}", dir.display()))?;
        let nearest = dir.ancestors().skip(1).find(|a| a.exists()).and_then(|a| std::fs::canonicalize(a).ok());
        if nearest.is_some_and(|p| p.starts_with(&own)) {
            return Err(format!(
                "{} is inside the index's own folder {}: a snapshot goes elsewhere",
                dir.display(),
                own.display()
            ));
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        }
        let dir = dir.as_path();
        let u = self.inner.enter();
        let cp = rocksdb::checkpoint::Checkpoint::new(&u.db.db).map_err(|e| format!("cannot snapshot: {e}"))?;
        cp.create_checkpoint(dir).map_err(|e| format!("cannot snapshot into {}: {e}", dir.display()))
    }
}

/// Before `key` is put in `to`: deletes it from the other family if there, and counts the
/// key in `to` if it is new there.
fn moved_in(db: &Db, b: &mut WriteBatch, d: &mut Delta, key: &[u8], to: State) -> Result<(), Error> {
    let other = if to == State::Live { State::Unlinked } else { State::Live };
    if held(db, other, key)? {
        b.delete_cf(db.cf(other), key);
        d.add(other, -1);
    }
    if !held(db, to, key)? {
        d.add(to, 1);
    }
    Ok(())
}

/// Whether `state` holds `key`, for the key counts: a delete is added to a batch only then,
/// and a put counts the key only when it is new there. Writers hold the key's claim, so
/// what this reads stays true until the batch lands.
fn held(db: &Db, state: State, key: &[u8]) -> Result<bool, Error> {
    Ok(db.db.get_pinned_cf(db.cf(state), key)?.is_some())
}

/// The index's key counts (exact) and RocksDB's estimates of its size and work.
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
    // after `it`: the iterator is released before the database may be closed
    _use: Use<'a>,
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

    /// A -db whose folder cannot be made says why in one line (RocksDB's own error was a
    /// Rust debug dump: `Os { code: 2, kind: NotFound, … }`).
    #[test]
    fn an_index_folder_that_cannot_be_made_is_one_clear_line() {
        let e = Index::open(Path::new("/proc/no-such-dir/db")).err().expect("cannot be made");
        assert_eq!(
            e,
            "cannot open index /proc/no-such-dir/db: cannot create its folder: No such file or directory (os error 2)"
        );
    }

    /// The writes held in memory are bounded for all the families together: each family
    /// held up to its own 64 MiB (×2), so writes spread over the families grew the master's
    /// memory by their sum, flushing nothing.
    #[test]
    fn writes_held_in_memory_are_bounded_across_families() {
        let p = tmp("memtables");
        let idx = Index::open_sized(&p, 8, 4).unwrap();
        let r = Record { volumes: vec!["a:1".into(), "b:2".into(), "c:3".into()], size: 3, ..Record::default() };
        // ~14 MiB of records, over three families
        for batch in 0..120u32 {
            let items: Vec<(Vec<u8>, State, Record)> = (0..1000u32)
                .map(|i| {
                    let key = format!("/memtables/{batch:04}/{i:04}/{}", "x".repeat(40)).into_bytes();
                    (key, if i % 2 == 0 { State::Live } else { State::Unlinked }, r.clone())
                })
                .collect();
            idx.put_many(&items, true).unwrap();
            let entries: Vec<(Vec<u8>, Vec<u8>)> =
                (0..500u32).map(|i| (format!("u/{batch:04}/{i:04}").into_bytes(), vec![7u8; 100])).collect();
            let puts: Vec<(&[u8], &[u8])> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            idx.mp_write(&puts, &[]).unwrap();
        }
        // RocksDB weighs the budget at a write: one whose flush it picked while others ran
        // can leave the last state over it (10 MB once, on CI's loaded cores) until the next
        // write, which a master in use sends soon; so writes go on here too, a few a second
        let began = std::time::Instant::now();
        while idx.stats().memtable_bytes > 6 << 20 && began.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            idx.mp_write(&[(b"u/tick", b"t")], &[]).unwrap();
        }
        let s = idx.stats();
        assert!(s.memtable_bytes <= 6 << 20, "{} bytes of memtables over a budget of 4 MiB", s.memtable_bytes);
        assert!(s.sst_bytes > 0, "flushed to tables");
        drop(idx);
        std::fs::remove_dir_all(&p).unwrap();
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

    /// An index written before the counts existed (no counts record) is counted at its
    /// first open; rebuild's batches count the keys they add, not those already there.
    #[test]
    fn key_counts_of_an_older_index_and_of_batches() {
        let p = tmp("counts-old");
        let idx = Index::open(&p).unwrap();
        let r = Record { volumes: vec!["a:1".into()], size: 3, ..Record::default() };
        let items: Vec<(Vec<u8>, State, Record)> =
            (0..7u8).map(|i| (vec![b'/', i], if i < 5 { State::Live } else { State::Unlinked }, r.clone())).collect();
        idx.put_many(&items, true).unwrap();
        idx.put_many(&items[..3], false).unwrap();
        let s = idx.stats();
        assert_eq!((s.live_keys, s.unlinked_keys), (5, 2));
        {
            let u = idx.inner.enter();
            u.db.db.delete_cf(u.db.cf_named(COUNTS), b"keys").unwrap();
        }
        idx.flush().unwrap();
        drop(idx);
        let idx = Index::open(&p).unwrap();
        let s = idx.stats();
        assert_eq!((s.live_keys, s.unlinked_keys), (5, 2), "counted at open");
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
