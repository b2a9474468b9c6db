//! `mkv bench-index` (hidden, for bench/): N synthetic records written straight into an
//! index, as the master would write them, so GETs over millions of keys can be timed without
//! PUTting them first. A GET is a redirect and never touches the volumes: no files are made.

use std::time::Instant;

use anyhow::Context as _;

use crate::{
    config::Config,
    index::{self, Index, State},
    md5::Md5,
    placement,
    record::{now_ms, Record},
};

/// Records per WriteBatch.
const BATCH: usize = 100_000;
/// The value size every record claims (as bench/'s preloaded keys have).
const SIZE: u64 = 64;

/// Writes records for `prefix0` … `prefix{keys-1}` into `-db`, flushes it and returns.
pub fn run(cfg: &Config, keys: u64, prefix: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let index = Index::open_with_cache(&cfg.db, cfg.index_cache_mb).map_err(anyhow::Error::msg)?;
    write(&index, &cfg.volumes, cfg.replicas, cfg.subvolumes, keys, prefix)
        .with_context(|| format!("cannot write the index {}", cfg.db.display()))?;
    // flushed, as rebuild leaves it: the master's first start then has no log to replay
    index.flush().with_context(|| format!("cannot flush the index {}", cfg.db.display()))?;
    eprintln!(
        "bench-index: {keys} records {prefix}0…{prefix}{} written into {} in {:.1} s",
        keys.saturating_sub(1),
        cfg.db.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One record per key: live, placed by [`placement::key_volumes`], [`SIZE`] bytes, the key's
/// MD5 standing in for the value's.
fn write(
    index: &Index,
    volumes: &[String],
    replicas: usize,
    subvolumes: u32,
    keys: u64,
    prefix: &str,
) -> Result<(), index::Error> {
    let mtime = now_ms();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..keys {
        let key = format!("{prefix}{i}").into_bytes();
        let rec = Record {
            volumes: placement::key_volumes(&key, volumes, replicas, subvolumes),
            size: SIZE,
            md5: Some(Md5::digest(&key)),
            mtime,
            meta: Vec::new(),
        };
        batch.push((key, State::Live, rec));
        if batch.len() == BATCH || i + 1 == keys {
            // in key order a memtable insert starts where the last one ended
            batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            index.put_many(&batch, false)?;
            batch.clear();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_as_the_master_writes_them() {
        let db = std::env::temp_dir().join(format!("mkv-benchindex-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&db);
        let volumes: Vec<String> = ["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"].map(String::from).into();
        let index = Index::open(&db).unwrap();
        write(&index, &volumes, 2, 10, 1234, "/t/k").unwrap();
        index.flush().unwrap();
        for key in ["/t/k0", "/t/k617", "/t/k1233"] {
            let (state, rec) = index.get(key.as_bytes()).unwrap().unwrap();
            assert_eq!(state, State::Live, "{key}");
            assert_eq!(rec.volumes, placement::key_volumes(key.as_bytes(), &volumes, 2, 10), "{key}");
            assert!(rec.volumes.iter().all(|v| v.contains("/sv")), "{key}: {:?}", rec.volumes);
            assert_eq!((rec.size, rec.md5), (SIZE, Some(Md5::digest(key.as_bytes()))), "{key}");
            assert!(rec.mtime > 0);
        }
        assert_eq!(index.get(b"/t/k1234").unwrap(), None);
        let mut scan = index.scan(State::Live, b"/t/", b"");
        let mut n = 0;
        while scan.next().is_some() {
            n += 1;
        }
        assert_eq!(n, 1234);
        drop(scan);
        drop(index);
        std::fs::remove_dir_all(&db).unwrap();
    }
}
