//! The open RocksDB behind the index, and its reopening after the disk filled: RocksDB
//! refuses every write after one ran out of space, and 7.8.3's C API cannot resume it.
//!
//! So the index refuses writes itself ([`Error::Full`]), serves reads from a read-only copy,
//! closes the database that failed and opens it again once there is room: the open replays
//! the WAL up to its torn end, and every acknowledged write is before it. The database in use
//! sits behind a pointer; each use counts itself on its thread's own counter (no lock), and
//! a swap waits for the uses of the old database to end before closing it.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DataBlockIndexType, LogLevel, Options, DB};

use super::{counts, no_space, Error, State, COUNTS, LIVE, MULTIPART, PENDING, UNLINKED};

/// Least free space to open the index: an open writes a MANIFEST, an OPTIONS file, a new
/// WAL and the info log's header before anything else.
pub(super) const MIN_FREE: u64 = 1 << 20;
/// How often an index whose disk was full looks for free space again.
const POLL: Duration = Duration::from_millis(200);
/// Thread slots counting uses of the database (see [`Inner::enter`]); threads beyond this
/// share slots, which costs contention, not correctness.
const SLOTS: usize = 64;

/// One open RocksDB: the index's own, or a read-only copy that serves reads while the
/// index's own is closed and reopened.
pub(super) struct Db {
    pub(super) db: DB,
    pub(super) writable: bool,
}

impl Db {
    /// Opens the database at `path`, creating it if missing when `writable`; its families
    /// share `cache`.
    pub(super) fn open(path: &Path, writable: bool, cache: &Cache, memtables: usize) -> Result<Db, rocksdb::Error> {
        let mut opts = Options::default();
        // one budget for every family's memtables: the largest is flushed when it is spent
        opts.set_db_write_buffer_size(memtables);
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
        // the skiplist search), hashed data-block indexes (optimize_for_point_lookup's
        // choices), and one block cache for every family, sized by -index-cache: it holds
        // blocks uncompressed, ~80 bytes a record, so a cache too small for the keys read
        // makes most reads decompress a block from the OS's page cache
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        table.set_bloom_filter(10.0, false);
        table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);
        // index and filter blocks in the same cache, those of level 0 pinned: a read never
        // waits for one, and the cache bounds all of the index's memory
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_memtable_prefix_bloom_ratio(0.02);
        cf_opts.set_memtable_whole_key_filtering(true);
        let mut counts_opts = Options::default();
        counts_opts.set_merge_operator_associative("mkv-counts", counts::merge);
        let cfs = [LIVE, UNLINKED, PENDING, MULTIPART]
            .map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()))
            .into_iter()
            .chain([ColumnFamilyDescriptor::new(COUNTS, counts_opts)]);
        let db = if writable {
            DB::open_cf_descriptors(&opts, path, cfs)?
        } else {
            DB::open_cf_descriptors_read_only(&opts, path, cfs, false)?
        };
        Ok(Db { db, writable })
    }

    pub(super) fn cf(&self, state: State) -> &rocksdb::ColumnFamily {
        self.cf_named(state.cf())
    }

    pub(super) fn cf_named(&self, name: &str) -> &rocksdb::ColumnFamily {
        // every family is created by open(); an absent one is a bug, not an input error
        self.db.cf_handle(name).expect("column family created at open")
    }
}

/// What the index shares with the thread that reopens it after its disk was full.
pub(super) struct Inner {
    path: PathBuf,
    /// The block cache every open of the database shares.
    pub(super) cache: Cache,
    /// Bytes of writes all families hold in memory before one is flushed.
    memtables: usize,
    /// The database in use, never null; replaced only by [`Inner::swap`].
    cur: AtomicPtr<Db>,
    /// Uses of `cur` in progress, per thread slot, in two sets that [`Inner::swap`] flips.
    uses: Box<[Uses]>,
    epoch: AtomicUsize,
    /// Whether writes are accepted: [`OK`], [`FULL`] or [`REOPENING`].
    health: AtomicU8,
    /// Swaps one at a time: each relies on the one before having finished.
    swapping: Mutex<()>,
}

const OK: u8 = 0;
const FULL: u8 = 1;
const REOPENING: u8 = 2;

/// One slot's two counts, alone on a cache line so that threads never contend on them.
#[repr(align(128))]
struct Uses([AtomicUsize; 2]);

/// A counted use of the database in use: while it lives, that database stays open.
pub(super) struct Use<'a> {
    pub(super) db: &'a Db,
    count: &'a AtomicUsize,
}

impl Drop for Use<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Release);
    }
}

/// This thread's slot in [`Inner::uses`].
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS);
    SLOT.with(|s| *s)
}

impl Inner {
    /// The index's folder, as opened.
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(super) fn new(path: &Path, db: Db, cache: Cache, memtables: usize) -> Inner {
        Inner {
            path: path.to_path_buf(),
            cache,
            memtables,
            cur: AtomicPtr::new(Box::into_raw(Box::new(db))),
            uses: (0..SLOTS).map(|_| Uses([AtomicUsize::new(0), AtomicUsize::new(0)])).collect(),
            epoch: AtomicUsize::new(0),
            health: AtomicU8::new(OK),
            swapping: Mutex::new(()),
        }
    }

    /// The database in use, counted so that a swap cannot close it under the caller. Costs two
    /// uncontended atomic increments on this thread's own cache line, no lock.
    pub(super) fn enter(&self) -> Use<'_> {
        let counts = &self.uses[slot()].0;
        let count = loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let count = &counts[epoch % 2];
            count.fetch_add(1, Ordering::SeqCst);
            // counted before any flip of `epoch`, so a swap that flips it waits for this use;
            // if one flipped meanwhile, count again in the set the next swap will wait for
            if self.epoch.load(Ordering::SeqCst) == epoch {
                break count;
            }
            count.fetch_sub(1, Ordering::SeqCst);
        };
        // SAFETY: `cur` is never null, and a database taken out of `cur` is freed only after
        // every use counted before the swap's flip has ended (see `swap`), this one included.
        let db = unsafe { &*self.cur.load(Ordering::SeqCst) };
        Use { db, count }
    }

    /// Puts `next` in use and returns the database it replaces once nothing uses that one.
    /// Blocks while uses of it end (a point read, or a listing's scan): never call it from
    /// a runtime thread.
    pub(super) fn swap(&self, next: Db) -> Db {
        let _one = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.cur.swap(Box::into_raw(Box::new(next)), Ordering::SeqCst);
        // Uses counted in the old set may hold `old`; uses from now on count in the other set
        // and load `next`. The old set only drains, so this ends.
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst);
        for slot in self.uses.iter() {
            while slot.0[epoch % 2].load(Ordering::SeqCst) != 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        // SAFETY: `old` came from Box::into_raw, is out of `cur`, and no use of it is left.
        *unsafe { Box::from_raw(old) }
    }

    /// Refuses a write while the disk is (or was just) full.
    pub(super) fn writable(&self) -> Result<(), Error> {
        match self.health.load(Ordering::Acquire) {
            OK => Ok(()),
            FULL => Err(Error::Full),
            _ => Err(Error::Reopening),
        }
    }

    /// What a write that RocksDB refused with `e` answers. The first one that ran out of
    /// space starts the recovery.
    pub(super) fn failed(self: &Arc<Self>, e: rocksdb::Error) -> Error {
        if !no_space(&e) {
            return Error::from(e);
        }
        if self.health.compare_exchange(OK, FULL, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            eprintln!(
                "mkv: index {}: the disk is full ({e}); writes are refused until space is freed",
                self.path.display()
            );
            let inner = self.clone();
            if let Err(e) = thread::Builder::new().name("mkv-index".into()).spawn(move || inner.recover()) {
                eprintln!(
                    "mkv: index {}: cannot start its recovery ({e}); restart mkv once space is freed",
                    self.path.display()
                );
            }
        }
        Error::Full
    }

    /// After the disk filled: serve reads from a read-only copy, close the database that
    /// failed, and reopen it once there is room. A fresh open is the path RocksDB knows best,
    /// where resuming the failed one would write again through its failed WAL writer.
    fn recover(&self) {
        let mut said = String::new();
        let mut say = |what: &str, e: &rocksdb::Error| {
            let line = format!("mkv: index {}: {what}: {e}", self.path.display());
            if line != said {
                eprintln!("{line}");
                said = line;
            }
        };
        // read-only, the copy opens without writing, even on a full disk
        let copy = loop {
            match Db::open(&self.path, false, &self.cache, self.memtables) {
                Ok(copy) => break copy,
                Err(e) => say("cannot open a read-only copy, retrying", &e),
            }
            thread::sleep(POLL);
        };
        drop(self.swap(copy));
        loop {
            thread::sleep(POLL);
            if free_bytes(&self.path).unwrap_or(0) < room_to_open(&self.path) {
                continue;
            }
            self.health.store(REOPENING, Ordering::Release);
            match Db::open(&self.path, true, &self.cache, self.memtables) {
                Ok(db) => {
                    let copy = self.swap(db);
                    self.health.store(OK, Ordering::Release);
                    drop(copy);
                    eprintln!("mkv: index {}: space is back; writes resumed", self.path.display());
                    return;
                }
                Err(e) => {
                    self.health.store(FULL, Ordering::Release);
                    if !no_space(&e) {
                        say("cannot reopen, retrying", &e);
                    }
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: uses borrow the Index that holds this Arc, and the recovery thread holds
        // another: with the last reference going, nothing uses `cur` any more.
        drop(unsafe { Box::from_raw(*self.cur.get_mut()) });
    }
}

/// Bytes that this process may still write on the filesystem holding `path` (or the nearest
/// existing folder above it).
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    let mut at = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    loop {
        if let Ok(c) = CString::new(at.as_os_str().as_bytes()) {
            // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs; a zeroed
            // statvfs is valid (plain integers).
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 {
                if st.f_blocks == 0 {
                    // a filesystem with no blocks at all (/proc, /sys): its "no room" says
                    // nothing; the open's own error will say why
                    return None;
                }
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

/// Free space to wait for before reopening: the open replays the WALs into table files
/// (no larger than the WALs), then writes [`MIN_FREE`]'s worth of other files.
fn room_to_open(path: &Path) -> u64 {
    let wals: u64 = fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    wals + MIN_FREE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{index::Index, record::Record};

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mkv-reopen-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn swap_waits_for_the_uses_of_the_old_database() {
        let p = tmp("swap");
        let idx = Index::open(&p).unwrap();
        let r = Record { volumes: vec!["a:1".into()], size: 1, ..Record::default() };
        idx.set(b"/k", State::Live, &r).unwrap();
        let pinned = idx.get_pinned(State::Live, b"/k").unwrap().unwrap();
        let scan = idx.scan(State::Live, b"/", b"");
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = idx.inner.clone();
        let copy = Db::open(&p, false, &Cache::new_lru_cache(1 << 20), 1 << 20).unwrap();
        let swapper = std::thread::spawn(move || {
            let old = inner.swap(copy);
            tx.send(old.writable).unwrap();
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "the swap closed a database still in use");
        assert_eq!(pinned.record().unwrap().to_owned(), r);
        drop(pinned);
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "the swap closed a database a scan still reads");
        drop(scan);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
        swapper.join().unwrap();
        // reads go to the read-only copy, which holds the same keys; writes are refused there
        assert_eq!(idx.get(b"/k").unwrap(), Some((State::Live, r.clone())));
        assert!(matches!(idx.set(b"/j", State::Live, &r), Err(Error::Reopening)));
        drop(idx);
        std::fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn free_space_of_a_path_not_made_yet() {
        let p = tmp("free").join("not/made/yet");
        assert!(free_bytes(&p).is_some_and(|n| n > 0));
        assert!(free_bytes(Path::new("relative-and-missing")).is_some());
        assert_eq!(room_to_open(&p), MIN_FREE);
    }
}
