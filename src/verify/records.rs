//! The index as a verify compares it: every record sorted into the 256 `xx` shards the walk
//! goes through (a key's shard is its md5's first byte), kept on disk, so memory holds one
//! shard's records at a time however many keys there are.
//!
//! The index is read in key order and the volumes in hash order: sorting it once into a
//! file per shard (sequential writes, ~100 bytes a key) is what lets the two meet.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File},
    io::{BufWriter, Write as _},
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{bail, Context as _};

use super::work::{self, Master};
use crate::{
    index::{Index, State},
    md5::Md5,
    record::{Record, RecordRef},
    volume::Client,
    walk::SHARDS,
};

/// One record of the index.
pub struct Entry {
    pub key: Box<[u8]>,
    pub state: State,
    pub rec: Record,
}

/// Records by shard, in a temporary folder removed on drop.
pub struct Shelf {
    dir: PathBuf,
    out: Vec<BufWriter<File>>,
    pub keys: u64,
    /// `dir/lock`, locked (flock) while this shelf lives: how another verify tells a live
    /// folder from one a killed verify left, in any pid namespace.
    _lock: File,
}

impl Shelf {
    pub fn new() -> anyhow::Result<Shelf> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        sweep_dead();
        let dir = std::env::temp_dir().join(format!("mkv-verify-{}-{n}", std::process::id()));
        // left by a run killed earlier under the same pid: ours now
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).with_context(|| format!("cannot make a working folder {}", dir.display()))?;
        let lock = File::create(dir.join(LOCK)).with_context(|| format!("cannot write in {}", dir.display()))?;
        // waits out a sweep by another verify that holds it for a moment
        if !lock_file(&lock, true) {
            bail!("cannot lock {}", dir.join(LOCK).display());
        }
        let mut shelf = Shelf { dir, out: Vec::with_capacity(SHARDS), keys: 0, _lock: lock };
        for s in 0..SHARDS {
            let f = File::create(shelf.path(s)).with_context(|| format!("cannot write in {}", shelf.dir.display()))?;
            shelf.out.push(BufWriter::with_capacity(16 << 10, f));
        }
        Ok(shelf)
    }

    fn path(&self, s: usize) -> PathBuf {
        self.dir.join(format!("{s:02x}"))
    }

    /// Files `key`'s record (its encoded bytes, as the index keeps them) under its shard.
    pub fn put(&mut self, key: &[u8], state: State, rec: &[u8]) -> anyhow::Result<()> {
        let s = Md5::digest(key)[0] as usize;
        let Some(out) = self.out.get_mut(s) else { bail!("the shelf is sealed") };
        let w = (|| {
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(key)?;
            out.write_all(&[(state == State::Live) as u8])?;
            out.write_all(&(rec.len() as u32).to_le_bytes())?;
            out.write_all(rec)
        })();
        w.with_context(|| format!("cannot write in {}", self.dir.display()))?;
        self.keys += 1;
        Ok(())
    }

    /// Every record is in: the files are closed, ready for [`Shelf::take`].
    pub fn seal(&mut self) -> anyhow::Result<()> {
        for mut out in self.out.drain(..) {
            out.flush().with_context(|| format!("cannot write in {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// The records of shard `s` (its file is removed: each shard is taken once).
    pub fn take(&self, s: usize) -> anyhow::Result<Vec<Entry>> {
        let path = self.path(s);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let _ = fs::remove_file(&path);
        let mut out = Vec::new();
        let mut at = 0;
        let bad = || anyhow::anyhow!("{} is damaged", path.display());
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        while at < bytes.len() {
            let klen = word(field(&bytes, &mut at, 4).ok_or_else(bad)?);
            let key: Box<[u8]> = field(&bytes, &mut at, klen).ok_or_else(bad)?.into();
            let state = if field(&bytes, &mut at, 1).ok_or_else(bad)?[0] == 1 { State::Live } else { State::Unlinked };
            let rlen = word(field(&bytes, &mut at, 4).ok_or_else(bad)?);
            let rec = RecordRef::parse(field(&bytes, &mut at, rlen).ok_or_else(bad)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", String::from_utf8_lossy(&key)))?;
            out.push(Entry { key, state, rec: rec.to_owned() });
        }
        Ok(out)
    }
}

/// The `n` bytes at `*at`, moving past them.
fn field<'b>(bytes: &'b [u8], at: &mut usize, n: usize) -> Option<&'b [u8]> {
    let b = bytes.get(*at..*at + n)?;
    *at += n;
    Some(b)
}

/// The file a live shelf holds locked.
const LOCK: &str = "lock";

/// An exclusive flock of `f` (waiting for it, or not); released when the file closes or
/// the process ends.
fn lock_file(f: &File, wait: bool) -> bool {
    use std::os::fd::AsRawFd;
    let how = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on an fd the File holds open
    unsafe { libc::flock(f.as_raw_fd(), how) == 0 }
}

/// Removes the working folders of verifies killed before they could (`kill -9`, a crash),
/// which would otherwise keep ~100 bytes a key in the temp folder for good: a folder whose
/// lock file no one holds. One without a lock file (left by a version before it) goes when
/// its pid names no process here.
fn sweep_dead() {
    let Ok(dir) = fs::read_dir(std::env::temp_dir()) else { return };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some((pid, n)) = name.to_str().and_then(|n| n.strip_prefix("mkv-verify-")).and_then(|r| r.split_once('-'))
        else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u64>()) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dead = match File::open(e.path().join(LOCK)) {
            // held by a live shelf (of another pid namespace, or one being made: it is locked
            // right after its folder)
            Ok(f) => lock_file(&f, false),
            // no /proc here: no telling
            Err(_) => std::path::Path::new("/proc/self").exists(),
        };
        if dead {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Shelf {
    fn drop(&mut self) {
        self.out.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Shelves every record of a local index (master stopped, or the master's own scrub).
pub fn shelve_index(index: &Index, shelf: &mut Shelf, stop: &dyn Fn() -> bool) -> anyhow::Result<()> {
    for state in [State::Live, State::Unlinked] {
        let mut scan = index.scan(state, b"", b"");
        let mut n = 0u32;
        while let Some((k, v)) = scan.next() {
            shelf.put(k, state, v)?;
            n = n.wrapping_add(1);
            if n.is_multiple_of(65_536) && stop() {
                bail!("stopped");
            }
        }
        scan.status()?;
    }
    shelf.seal()
}

/// The replacements being written when the run looked: whose files are not orphans.
#[derive(Default)]
pub struct Pending {
    /// Key → the replicas its replacement is written to.
    pub by_key: HashMap<Box<[u8]>, Vec<String>>,
    /// Their `_tmp/<id>` names.
    pub ids: HashSet<String>,
}

impl Pending {
    pub fn of_index(index: &Index) -> anyhow::Result<Pending> {
        let mut p = Pending::default();
        let mut start = Vec::new();
        loop {
            let keys = index.pending_keys(&start, 1024)?;
            let Some(last) = keys.last() else { break };
            start = last.clone();
            start.push(0);
            for k in keys {
                if let Some(e) = index.pending(&k)? {
                    p.ids.insert(e.id);
                    p.by_key.insert(k.into_boxed_slice(), e.record.volumes);
                }
            }
        }
        Ok(p)
    }
}

/// A record as `?list&records&encoding=url` gives it.
#[derive(serde::Deserialize)]
pub struct Listed {
    pub key: String,
    pub volumes: Vec<String>,
    pub size: u64,
    pub md5: Option<String>,
    #[serde(default)]
    pub mtime: u64,
}

impl Listed {
    /// The key's bytes and its record.
    pub fn decode(self) -> anyhow::Result<(Vec<u8>, Record)> {
        let mut key = Vec::with_capacity(self.key.len());
        crate::http::percent_decode(self.key.as_bytes(), &mut key)
            .map_err(|_| anyhow::anyhow!("bad key in the master's listing: {}", self.key))?;
        let md5 = match self.md5 {
            None => None,
            Some(hex) => {
                Some(crate::md5::from_hex(&hex).with_context(|| format!("bad MD5 in the master's listing: {hex}"))?)
            }
        };
        Ok((key, Record { volumes: self.volumes, size: self.size, md5, mtime: self.mtime, meta: Vec::new() }))
    }
}

/// Shelves every record through the master's listings (`?list&records`, `?unlinked&records`).
pub async fn shelve_master(m: &Master, client: &Client, shelf: &mut Shelf) -> anyhow::Result<()> {
    for (list, state) in [("list", State::Live), ("unlinked", State::Unlinked)] {
        let mut start = String::new();
        loop {
            let target = format!("/?{list}&records&encoding=url&limit={}&start={start}", work::PAGE);
            let (status, body) = m.call(client, "GET", &target).await?;
            if status != 200 {
                bail!("listing records failed: the master answered {status}");
            }
            let page = m.listing(&body)?;
            for l in page.keys {
                let (key, rec) = l.decode()?;
                shelf.put(&key, state, &rec.encode())?;
            }
            if page.next.is_empty() {
                break;
            }
            start = page.next;
        }
    }
    shelf.seal()
}

/// The replacements being written, as the master lists them (`?pending`).
pub async fn pending_of_master(m: &Master, client: &Client) -> anyhow::Result<Pending> {
    #[derive(serde::Deserialize)]
    struct Entry {
        key: String,
        id: String,
        volumes: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct PendingPage {
        next: String,
        keys: Vec<Entry>,
    }
    let mut p = Pending::default();
    every_page(m, client, "pending&encoding=url", "replacements being written", |body| {
        let page: PendingPage = serde_json::from_slice(body).context("bad ?pending listing from the master")?;
        for e in page.keys {
            let mut key = Vec::new();
            crate::http::percent_decode(e.key.as_bytes(), &mut key)
                .map_err(|_| anyhow::anyhow!("bad key {}", e.key))?;
            p.ids.insert(e.id);
            p.by_key.insert(key.into_boxed_slice(), e.volumes);
        }
        Ok(page.next)
    })
    .await?;
    Ok(p)
}

/// Reads every page of the master's listing `GET /?{query}&start=…`: `take` reads a page's
/// body and returns its `next` (empty at the end). `what` names the listing in errors.
async fn every_page(
    m: &Master,
    client: &Client,
    query: &str,
    what: &str,
    mut take: impl FnMut(&[u8]) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let mut start = String::new();
    loop {
        let (status, body) = m.call(client, "GET", &format!("/?{query}&start={start}")).await?;
        if status != 200 {
            bail!("listing {what} failed: the master answered {status}");
        }
        start = take(&body)?;
        if start.is_empty() {
            return Ok(());
        }
    }
}

/// The S3 part files that part records name, as the master lists them (`?parts`).
pub async fn part_files_of_master(m: &Master, client: &Client) -> anyhow::Result<HashSet<String>> {
    #[derive(serde::Deserialize)]
    struct PartsPage {
        files: Vec<String>,
        next: String,
    }
    let mut names = HashSet::new();
    every_page(m, client, "parts", "S3 part files", |body| {
        let page: PartsPage = serde_json::from_slice(body).context("bad ?parts listing from the master")?;
        names.extend(page.files);
        Ok(page.next)
    })
    .await?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_by_shard() {
        let mut shelf = Shelf::new().unwrap();
        let rec =
            Record { volumes: vec!["a:1/sv01".into()], size: 7, md5: Some([3; 16]), mtime: 5, ..Record::default() };
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("/k/{i}").into_bytes()).collect();
        for (i, k) in keys.iter().enumerate() {
            let state = if i.is_multiple_of(7) { State::Unlinked } else { State::Live };
            shelf.put(k, state, &rec.encode()).unwrap();
        }
        shelf.seal().unwrap();
        let mut seen = 0;
        for s in 0..SHARDS {
            for e in shelf.take(s).unwrap() {
                assert_eq!(Md5::digest(&e.key)[0] as usize, s);
                assert_eq!(e.rec, rec);
                let i: usize = String::from_utf8_lossy(&e.key[3..]).parse().unwrap();
                assert_eq!(e.state == State::Unlinked, i.is_multiple_of(7));
                seen += 1;
            }
        }
        assert_eq!((seen, shelf.keys), (2000, 2000));
        let dir = shelf.dir.clone();
        drop(shelf);
        assert!(!dir.exists());
    }

    #[test]
    fn listed_records_decode() {
        let l = Listed {
            key: "/a%20b/%FF".into(),
            volumes: vec!["v:1".into()],
            size: 3,
            md5: Some("000102030405060708090a0b0c0d0e0f".into()),
            mtime: 4,
        };
        let (key, rec) = l.decode().unwrap();
        assert_eq!(key, b"/a b/\xff");
        assert_eq!(rec.md5, Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]));
        assert!(crate::md5::from_hex("xyz").is_none());
    }
}
