//! What a verify does beyond listing, one key at a time: read a replica whole (`-deep`),
//! look again at what it found (a key written meanwhile is not damage), repair, delete a
//! file no key owns. Through the index and [`store::repair`] directly (offline, or the
//! master's own scrub), or through a running master's admin methods (`-online`).

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde::Deserialize;

use super::judge::{Kind, Problem};
use crate::{
    index::State,
    md5::{lanes, Md5},
    placement::{key_path, replica_target, MARKER_DIR},
    record::Record,
    store::{self, repair, Ctx},
    volume::{Client, Download, Topology},
};

/// Attempts for a key another request is writing (`409`) before it counts as failed: about
/// 10 s in all, longer than any small write holds a key.
const BUSY_RETRIES: u32 = 40;
/// Largest piece of a value read at once.
const READ_CHUNK: usize = 256 << 10;
/// Bytes gathered before they go off to be hashed while the next are read: small enough
/// that a 1 MiB value is read and hashed in step, and that each reader keeps a piece in the
/// lanes most of the time (an idle lane is work lost), large enough to be few jobs.
const HASH_PIECE: usize = 256 << 10;
/// Records per listing page read from the master.
pub const PAGE: usize = 10_000;
/// Largest answer read from the master (a page of records).
const ANSWER_MAX: usize = 256 << 20;
/// Longest wait for the master's answer to `REPAIR /?parts` (a deep check reads every part).
const PARTS_WAIT: Duration = Duration::from_secs(6 * 3600);

/// Where records come from and repairs go.
pub enum Backend {
    /// The index itself, and the store's repairs on this thread.
    Local(Ctx),
    /// A running master.
    Online(Master),
}

/// A running master, spoken to with its admin methods.
pub struct Master {
    pub addr: String,
    /// For the client: the master is no volume, so it is never probed (assumed up).
    topo: Topology,
    /// `Authorization: Bearer ...\r\n` with `-admin-token`, else empty.
    auth: String,
}

/// What the master's volume list is.
pub struct Volumes {
    pub volumes: Vec<String>,
    pub replicas: usize,
    pub subvolumes: u32,
}

impl Master {
    /// `http://host:port` (the API port, or the admin port).
    pub fn new(url: &str, token: Option<&str>) -> anyhow::Result<Master> {
        let addr = crate::config::master_addr(url).map_err(anyhow::Error::msg)?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        Ok(Master { addr, topo: Topology::new(&[], 1, 1, Duration::from_secs(60), None), auth })
    }

    /// A whole answer: status and body.
    pub async fn call(&self, client: &Client, method: &str, target: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        client
            .get_with(&self.topo, &self.addr, method, target, self.auth.as_bytes(), ANSWER_MAX)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the master at {}: {}", self.addr, e.cause()))
    }

    /// What a refusal's body says, in one line.
    pub fn refusal(&self, body: &[u8]) -> String {
        crate::config::master_refusal(&self.addr, body)
    }

    /// A page of a listing the master answered. Not one (the `-admin` port answers its
    /// status page to a listing's GET): says which address was asked.
    pub fn listing(&self, body: &[u8]) -> anyhow::Result<Page> {
        serde_json::from_slice(body).with_context(|| {
            format!(
                "{} answered a listing with no JSON listing: is it the master's API address (not its -admin one)?",
                self.addr
            )
        })
    }

    /// The volume list in force (`VOLUMES /`).
    pub async fn volumes(&self, client: &Client) -> anyhow::Result<Volumes> {
        #[derive(Deserialize)]
        struct Answer {
            volumes: Vec<String>,
            replicas: usize,
            subvolumes: u32,
        }
        let (status, body) = self.call(client, "VOLUMES", "/").await?;
        if status != 200 {
            bail!("the master refused VOLUMES ({status}): {}", self.refusal(&body));
        }
        let a: Answer = serde_json::from_slice(&body).context("bad answer to VOLUMES")?;
        Ok(Volumes { volumes: a.volumes, replicas: a.replicas, subvolumes: a.subvolumes })
    }

    /// `REPAIR /?parts`: the master checks (`deep`: reads) the replicas of the parts of S3
    /// uploads in progress and, with `repair`, copies the damaged ones again.
    pub async fn check_parts(
        &self,
        client: &Client,
        opts: crate::s3::multipart::CheckOpts,
    ) -> anyhow::Result<crate::s3::multipart::PartsChecked> {
        // the answer comes once every part was looked at: as long as reading them all takes
        let patient = Topology::new(&[], 1, 1, PARTS_WAIT, None);
        let target =
            format!("/?parts&deep={}&check={}&rate={}", u8::from(opts.deep), u8::from(!opts.repair), opts.rate);
        let (status, body) = client
            .get_with(&patient, &self.addr, "REPAIR", &target, self.auth.as_bytes(), ANSWER_MAX)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the master at {}: {}", self.addr, e.cause()))?;
        if status != 200 {
            bail!("the master refused to check S3 upload parts ({status}): {}", self.refusal(&body));
        }
        serde_json::from_slice(&body).context("bad answer to REPAIR /?parts (a master too old to check parts?)")
    }

    /// The record of `key` now, in either state.
    async fn record(&self, client: &Client, key: &[u8]) -> anyhow::Result<Option<(State, Record)>> {
        let enc = encode(key);
        for (list, state) in [("list", State::Live), ("unlinked", State::Unlinked)] {
            let target = format!("{enc}?{list}&records&encoding=url&limit=1&start={enc}");
            let (status, body) = self.call(client, "GET", &target).await?;
            if status != 200 {
                bail!("the master answered {status} to a listing");
            }
            let page: Page = self.listing(&body)?;
            if let Some(l) = page.keys.into_iter().next() {
                let (k, rec) = l.decode()?;
                if k == key {
                    return Ok(Some((state, rec)));
                }
            }
        }
        Ok(None)
    }
}

/// A page of `?list&records&encoding=url`.
#[derive(Deserialize)]
pub struct Page {
    #[serde(default)]
    pub next: String,
    pub keys: Vec<super::records::Listed>,
}

/// `key` as a request path (and query value).
pub fn encode(key: &[u8]) -> String {
    let mut out = Vec::with_capacity(key.len() + 8);
    crate::http::percent_encode(&mut out, key);
    // percent_encode leaves only ASCII
    String::from_utf8_lossy(&out).into_owned()
}

/// Paces `-deep` reads to `-rate`: each piece read books its time; a reader waits for its
/// turn. One thread, so a `Cell` holds the schedule.
pub struct Throttle {
    /// Bytes per second; 0: no limit.
    rate: f64,
    next: Cell<Instant>,
}

impl Throttle {
    pub fn new(mib_per_sec: f64) -> Throttle {
        Throttle { rate: mib_per_sec * (1 << 20) as f64, next: Cell::new(Instant::now()) }
    }

    async fn take(&self, n: usize) {
        if self.rate <= 0.0 {
            return;
        }
        let now = Instant::now();
        let at = self.next.get().max(now);
        self.next.set(at + Duration::from_secs_f64(n as f64 / self.rate));
        if at > now {
            monoio::time::sleep(at - now).await;
        }
    }
}

/// Work on one key (or one file) a verify found something about.
pub enum Job {
    /// `-deep`: read a replica whole.
    Read { item: u32, key: Box<[u8]>, replica: String },
    /// Look again: is it still wrong, with the record as it is now?
    Check { item: u32, key: Box<[u8]>, seen: Option<(State, Record)>, problems: Vec<Problem> },
    /// Repair the key.
    Repair { item: u32, key: Box<[u8]>, fix: Fix },
    /// Delete a file that is no key's (a `_tmp` file, a name no key makes).
    Delete { item: u32, server: String, path: String },
}

/// What a repair of one key is asked to do.
#[derive(Debug, Default)]
pub struct Fix {
    /// Replicas found missing, short or corrupt.
    pub bad: Vec<String>,
    /// Those of them found corrupt (a HEAD cannot tell: the repair must be told).
    pub suspects: Vec<String>,
    /// Replicas whose files of the key no record names: deleted.
    pub orphans: Vec<String>,
    /// Put the unlink markers right.
    pub markers: bool,
    /// Bytes the restores copy (the value's size for each bad replica).
    pub bytes: u64,
}

/// What a job found or did.
pub enum Done {
    /// The MD5 and length read; `None`: the file is not there (`404`).
    Read {
        item: u32,
        replica: String,
        result: Result<Option<([u8; 16], u64)>, String>,
    },
    /// The problems still there.
    Checked {
        item: u32,
        result: Result<Vec<Problem>, String>,
    },
    Repaired {
        item: u32,
        result: Result<Fixed, Unfixed>,
    },
    /// Whether the file was there.
    Deleted {
        item: u32,
        result: Result<bool, String>,
    },
}

/// What a repair did (REPAIR's answer).
#[derive(Debug, Default, Deserialize)]
pub struct Fixed {
    #[serde(default)]
    pub restored: Vec<String>,
    #[serde(default)]
    pub markers: usize,
    #[serde(default)]
    pub orphans: usize,
    #[serde(default)]
    pub skipped: Vec<String>,
    /// The record was stale: it now names the value every replica holds.
    #[serde(default)]
    pub adopted: bool,
}

/// Why a repair did not happen.
#[derive(Debug)]
pub enum Unfixed {
    /// The key is gone (deleted meanwhile): nothing to repair.
    Gone,
    /// No replica holds the value: left as it is.
    NoGoodReplica,
    Failed(String),
}

/// Does a verify's jobs.
pub struct Work<'a> {
    /// The volumes: reads, deletes, and files looked at again.
    pub client: &'a Client,
    pub topo: &'a Topology,
    pub backend: &'a Backend,
    pub throttle: Throttle,
    /// Buffers of `-deep` reads, kept for the next ones.
    pub buffers: Buffers,
    /// Nothing else writes (offline: the master is stopped, the index is ours): what the
    /// listings showed is still so, and repairs need not look again (no HEADs).
    pub quiet: bool,
    /// Bytes the repairs in flight copy ([`COPYING_MAX`]).
    pub copying: Cell<u64>,
}

/// Most bytes repairs copy at once, whatever `-concurrency` lets run: a wiped volume's
/// hundreds of large restores at once stalled its disk past `-voltimeout` (each copy then
/// failed `504`, the volume was taken for down, and clients' writes to it failed meanwhile).
/// A larger value is copied alone.
const COPYING_MAX: u64 = 256 << 20;

impl crate::walk::Worker<Job, Done> for Work<'_> {
    async fn perform(&self, job: Job) -> Done {
        match job {
            Job::Read { item, key, replica } => {
                let result = self.read(&key, &replica).await;
                Done::Read { item, replica, result }
            }
            Job::Check { item, key, seen, problems } => {
                Done::Checked { item, result: self.check(&key, seen, problems).await.map_err(|e| format!("{e:#}")) }
            }
            Job::Repair { item, key, fix } => Done::Repaired { item, result: self.repair(&key, &fix).await },
            Job::Delete { item, server, path } => {
                let r = self.client.request(self.topo, &server, "DELETE", &path, Bytes::new()).await;
                let result = match r {
                    Ok(200 | 204) => Ok(true),
                    Ok(404) => Ok(false),
                    Ok(s) => Err(format!("volume {server} answered {s} to DELETE")),
                    Err(e) => Err(e.to_string()),
                };
                Done::Deleted { item, result }
            }
        }
    }
}

impl Work<'_> {
    /// Reads replica `replica` of `key` whole: its MD5 and length. The bytes are read
    /// straight into the pieces to hash, and the hashing runs behind the reading, off this
    /// thread: with AVX-512 on one thread that hashes the pieces of many replicas at once in
    /// the lanes of a register ([`lanes::Stream`]), else on the blocking pool, a thread per
    /// core (MD5 runs at ~600 MiB/s on one).
    async fn read(&self, key: &[u8], replica: &str) -> Result<Option<([u8; 16], u64)>, String> {
        let (server, path) = replica_target(replica, &key_path(key));
        let mut d = self.client.download(self.topo, &server, &path).await.map_err(|e| e.to_string())?;
        // gone since the listing: a key deleted or moved meanwhile, or a replica lost
        if d.status == 404 {
            return Ok(None);
        }
        if d.status != 200 {
            return Err(format!("volume {server} answered {}", d.status));
        }
        let mut hash = Hashing::new(&self.buffers);
        let mut n = 0u64;
        loop {
            let k = hash.read(self.client, &mut d, &self.buffers).await?;
            if k == 0 {
                break;
            }
            self.throttle.take(k).await;
            n += k as u64;
        }
        self.client.finish(d);
        Ok(Some((hash.finish(&self.buffers).await?, n)))
    }

    /// The record of `key` now.
    async fn record(&self, key: &[u8]) -> anyhow::Result<Option<(State, Record)>> {
        match self.backend {
            Backend::Local(ctx) => Ok(ctx.shared.index.get(key)?),
            Backend::Online(m) => m.record(self.client, key).await,
        }
    }

    /// The `problems` found with record `seen` that are still there: none if the record
    /// changed since (the key was written: its files are the new write's business).
    async fn check(
        &self,
        key: &[u8],
        seen: Option<(State, Record)>,
        problems: Vec<Problem>,
    ) -> anyhow::Result<Vec<Problem>> {
        let now = self.record(key).await?;
        let same = match (&now, &seen) {
            (Some((s1, r1)), Some((s2, r2))) => s1 == s2 && same_record(r1, r2),
            (None, None) => true,
            _ => false,
        };
        if !same {
            return Ok(Vec::new());
        }
        let path = key_path(key);
        let marker = format!("{MARKER_DIR}{path}");
        let mut still = Vec::with_capacity(problems.len());
        for p in problems {
            let here = |file: &str| {
                let (server, file) = replica_target(&p.replica, file);
                async move { self.client.stat(self.topo, &server, &file).await }
            };
            let wrong = match p.kind {
                // a folder where the file goes: missing all the same (repair says so)
                Kind::Missing => matches!(here(&path).await, Ok(None) | Err(crate::volume::Error::Folder(_))),
                Kind::Size => matches!((here(&path).await, &now), (Ok(Some(n)), Some((_, r))) if n != r.size),
                // the same record, and the bytes were read against it
                Kind::Corrupt => true,
                Kind::Marker => {
                    let live = matches!(now, Some((State::Live, _)));
                    matches!(here(&marker).await, Ok(m) if m.is_some() == live)
                }
                Kind::Outside | Kind::Orphan => {
                    matches!(here(&path).await, Ok(Some(_))) || matches!(here(&marker).await, Ok(Some(_)))
                }
            };
            if wrong {
                still.push(p);
            }
        }
        Ok(still)
    }

    async fn repair(&self, key: &[u8], fix: &Fix) -> Result<Fixed, Unfixed> {
        // a fix that copies nothing (orphans, markers) never waits
        while fix.bytes > 0 && self.copying.get() > 0 && self.copying.get() + fix.bytes > COPYING_MAX {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        self.copying.set(self.copying.get() + fix.bytes);
        let r = self.repair_now(key, fix).await;
        self.copying.set(self.copying.get() - fix.bytes);
        r
    }

    async fn repair_now(&self, key: &[u8], fix: &Fix) -> Result<Fixed, Unfixed> {
        let mut tries = 0;
        loop {
            let r = match self.backend {
                Backend::Local(ctx) => local_repair(ctx, key, fix, self.quiet).await,
                Backend::Online(m) => online_repair(m, self.client, key, fix).await,
            };
            match r {
                Err(None) if tries < BUSY_RETRIES => {
                    tries += 1;
                    monoio::time::sleep(Duration::from_millis(25 * u64::from(tries.min(10)))).await;
                }
                Err(None) => return Err(Unfixed::Failed("another write of it kept it busy: retry later".into())),
                Err(Some(e)) => return Err(e),
                Ok(f) => return Ok(f),
            }
        }
    }
}

/// The MD5 of a value read piece by piece, hashed off the reading thread behind the reading.
enum Hashing {
    /// Whole blocks go to the lanes' thread; `buf` gathers the next piece.
    Lanes { stream: lanes::Stream, buf: Vec<u8> },
    /// Pieces go to the blocking pool, in order.
    Pool {
        h: Option<Md5>,
        piece: Vec<Bytes>,
        piece_len: usize,
        pending: Option<monoio::task::JoinHandle<Result<Md5, monoio::blocking::JoinError>>>,
    },
}

/// Buffers of `-deep` reads kept for the next ones (a fresh MiB costs page faults).
pub type Buffers = std::cell::RefCell<Vec<Vec<u8>>>;
/// Buffers kept at most.
const BUFFERS_KEPT: usize = 64;

fn take_buffer(buffers: &Buffers) -> Vec<u8> {
    buffers.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(HASH_PIECE + READ_CHUNK))
}

fn give_buffer(buffers: &Buffers, mut b: Vec<u8>) {
    let mut kept = buffers.borrow_mut();
    if kept.len() < BUFFERS_KEPT && b.capacity() >= HASH_PIECE {
        b.clear();
        kept.push(b);
    }
}

impl Hashing {
    fn new(buffers: &Buffers) -> Hashing {
        match lanes::available().then(lanes::Stream::new).flatten() {
            Some(stream) => Hashing::Lanes { stream, buf: take_buffer(buffers) },
            None => Hashing::Pool { h: Some(Md5::new()), piece: Vec::new(), piece_len: 0, pending: None },
        }
    }

    /// Reads the next bytes of `d` in (straight into the piece being gathered, where the
    /// lanes hash); a full piece goes off to be hashed while the reading goes on. The bytes
    /// read; 0 at the end.
    async fn read(&mut self, client: &Client, d: &mut Download, buffers: &Buffers) -> Result<usize, String> {
        match self {
            Hashing::Lanes { stream, buf } => {
                let room = HASH_PIECE.saturating_sub(buf.len()).max(64);
                let k = client.read_into(d, buf, room.min(READ_CHUNK)).await.map_err(|e| e.to_string())?;
                if buf.len() >= HASH_PIECE {
                    hand_over(stream, buf, buffers).await?;
                }
                Ok(k)
            }
            Hashing::Pool { h, piece, piece_len, pending } => {
                let Some(c) = client.next_chunk(d, READ_CHUNK).await.map_err(|e| e.to_string())? else { return Ok(0) };
                let k = c.len();
                *piece_len += k;
                piece.push(c);
                if *piece_len < HASH_PIECE {
                    return Ok(k);
                }
                if let Some(p) = pending.take() {
                    *h = Some(p.await.map_err(|_| "the hashing pool dropped a job")?);
                }
                let mut hh = h.take().ok_or("internal error: no hash state")?;
                let p = std::mem::take(piece);
                *piece_len = 0;
                *pending = Some(monoio::spawn_blocking(move || {
                    p.iter().for_each(|c| hh.update(c));
                    hh
                }));
                Ok(k)
            }
        }
    }

    /// The MD5 of everything added; its buffers go back to `buffers`.
    async fn finish(self, buffers: &Buffers) -> Result<[u8; 16], String> {
        match self {
            Hashing::Lanes { mut stream, mut buf } => {
                // the tail's whole blocks go to the lanes too, not through one MD5 here
                if buf.len() >= 64 {
                    hand_over(&mut stream, &mut buf, buffers).await?;
                }
                let (state, hashed, back) = stream.finish().await.ok_or("the hashing thread is gone")?;
                back.into_iter().for_each(|b| give_buffer(buffers, b));
                let mut h = Md5::resume(state, hashed);
                h.update(&buf);
                give_buffer(buffers, buf);
                Ok(h.finalize())
            }
            Hashing::Pool { mut h, piece, pending, .. } => {
                if let Some(p) = pending {
                    h = Some(p.await.map_err(|_| "the hashing pool dropped a job")?);
                }
                let mut h = h.ok_or("internal error: no hash state")?;
                piece.iter().for_each(|c| h.update(c));
                Ok(h.finalize())
            }
        }
    }
}

/// Hands the whole blocks of `buf` to the lanes; `buf` becomes a kept buffer holding the
/// bytes past them.
async fn hand_over(stream: &mut lanes::Stream, buf: &mut Vec<u8>, buffers: &Buffers) -> Result<(), String> {
    let whole = buf.len() / 64 * 64;
    let mut next = take_buffer(buffers);
    next.extend_from_slice(&buf[whole..]);
    buf.truncate(whole);
    let piece = std::mem::replace(buf, next);
    if let Some(back) = stream.push(piece).await.ok_or("the hashing thread is gone")? {
        give_buffer(buffers, back);
    }
    Ok(())
}

/// Records equal in what a verify judged (the front-end metadata aside).
fn same_record(a: &Record, b: &Record) -> bool {
    a.volumes == b.volumes && a.size == b.size && a.md5 == b.md5 && a.mtime == b.mtime
}

/// A repair through the store, under the key's lock (`quiet`: trusting the listing for
/// which replicas are bad). `Err(None)`: the key is busy.
async fn local_repair(ctx: &Ctx, key: &[u8], fix: &Fix, quiet: bool) -> Result<Fixed, Option<Unfixed>> {
    let fail = |e: store::Error| match e {
        store::Error::InFlight => None,
        store::Error::NotFound => Some(Unfixed::Gone),
        store::Error::NoGoodReplica => Some(Unfixed::NoGoodReplica),
        e => Some(Unfixed::Failed(e.to_string())),
    };
    let ask = repair::Ask {
        suspects: &fix.suspects,
        markers: fix.markers,
        strays: &fix.orphans,
        known_bad: quiet.then_some(fix.bad.as_slice()),
    };
    let (done, removed) = repair::key(ctx, key, &ask).await.map_err(fail)?;
    Ok(Fixed {
        restored: done.restored,
        markers: done.markers,
        orphans: removed,
        skipped: done.skipped,
        adopted: done.adopted,
    })
}

/// `REPAIR /key?...` on the master. `Err(None)`: `409`, the key is busy.
async fn online_repair(m: &Master, client: &Client, key: &[u8], fix: &Fix) -> Result<Fixed, Option<Unfixed>> {
    let mut target = encode(key);
    let mut sep = '?';
    for (name, list) in [("suspects", &fix.suspects), ("orphans", &fix.orphans)] {
        if !list.is_empty() {
            target.push(sep);
            target.push_str(name);
            target.push('=');
            target.push_str(&encode(list.join(",").as_bytes()));
            sep = '&';
        }
    }
    if fix.markers {
        target.push(sep);
        target.push_str("markers=1");
    }
    let (status, body) =
        m.call(client, "REPAIR", &target).await.map_err(|e| Some(Unfixed::Failed(format!("{e:#}"))))?;
    let text = || String::from_utf8_lossy(&body).trim().to_string();
    match status {
        200 => serde_json::from_slice(&body).map_err(|e| Some(Unfixed::Failed(format!("bad answer to REPAIR: {e}")))),
        404 => Err(Some(Unfixed::Gone)),
        409 => Err(None),
        503 if text().contains("no replica of this key holds its value") => Err(Some(Unfixed::NoGoodReplica)),
        s => Err(Some(Unfixed::Failed(format!("the master answered {s} to REPAIR: {}", text())))),
    }
}
