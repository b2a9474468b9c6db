//! The exact number of keys in each state, for `/metrics` and the status page.
//!
//! RocksDB's `estimate-num-keys` counts overwrites as keys and subtracts deletes twice; after
//! many PUT/DELETE rounds it showed 1 live key for an index of ~200. Here every batch that
//! adds or removes a key also merges its change of the counts into one record of the
//! `counts` family, so they change in the same atomic write as the keys, survive crashes
//! exactly, and cost no lock between writers. An index written before the counts existed
//! is counted once, at its first open.

use rocksdb::{IteratorMode, MergeOperands, ReadOptions, WriteBatch};

use super::{reopen::Db, State, COUNTS, LIVE, UNLINKED};

/// The one record of the family: live then unlinked, each an `i64` little-endian.
const KEY: &[u8] = b"keys";

/// A batch's change of the counts.
#[derive(Default)]
pub(super) struct Delta([i64; 2]);

impl Delta {
    pub(super) fn add(&mut self, state: State, n: i64) {
        self.0[slot(state)] += n;
    }

    /// Adds the change to the batch, if there is one.
    pub(super) fn tally(&self, db: &Db, b: &mut WriteBatch) {
        if self.0 != [0, 0] {
            b.merge_cf(db.cf_named(COUNTS), KEY, encode(self.0));
        }
    }
}

fn slot(state: State) -> usize {
    match state {
        State::Live => 0,
        State::Unlinked => 1,
    }
}

fn encode(v: [i64; 2]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&v[0].to_le_bytes());
    out[8..].copy_from_slice(&v[1].to_le_bytes());
    out
}

fn decode(b: &[u8]) -> [i64; 2] {
    let word = |i: usize| b.get(i..i + 8).and_then(|w| w.try_into().ok()).map_or(0, i64::from_le_bytes);
    [word(0), word(8)]
}

/// The merge operator of the family: the sum of the record and every change.
pub(super) fn merge(_key: &[u8], existing: Option<&[u8]>, changes: &MergeOperands) -> Option<Vec<u8>> {
    let mut sum = existing.map_or([0, 0], decode);
    for c in changes {
        let c = decode(c);
        sum = [sum[0] + c[0], sum[1] + c[1]];
    }
    Some(encode(sum).to_vec())
}

/// Live and unlinked keys now (`None`: not readable).
pub(super) fn read(db: &Db) -> Option<[u64; 2]> {
    let v = db.db.get_cf(db.cf_named(COUNTS), KEY).ok()??;
    let [live, unlinked] = decode(&v);
    Some([live.max(0) as u64, unlinked.max(0) as u64])
}

/// Counts the keys of an index that has no counts yet (new, or written before they
/// existed): one pass over the keys, kept out of the block cache.
pub(super) fn init(db: &Db) -> Result<(), rocksdb::Error> {
    if !db.writable || db.db.get_cf(db.cf_named(COUNTS), KEY)?.is_some() {
        return Ok(());
    }
    let mut n = [0i64; 2];
    for (i, cf) in [LIVE, UNLINKED].into_iter().enumerate() {
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        for item in db.db.iterator_cf_opt(db.cf_named(cf), ro, IteratorMode::Start) {
            item?;
            n[i] += 1;
        }
    }
    db.db.put_cf(db.cf_named(COUNTS), KEY, encode(n))
}
