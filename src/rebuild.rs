//! The index from what the volumes hold: every volume's (and subvolume's) nginx JSON
//! listings, many directories in flight at once, one `xx` hash folder (a shard) after another.
//!
//! A key sits in the same `xx/yy/` folder on every volume, so finishing shard `xx` on all
//! volumes finishes its keys: they are written and forgotten, and memory holds only the few
//! shards in flight, not the whole key space. Names whose base64 has `/` are nested folders,
//! walked and joined. UNLINK's markers (`_unlinked/xx/yy/...` beside the tree) are listed in
//! the same shard, so unlinked keys come back unlinked.
//!
//! Listings are not trusted: each folder is listed once however often listings name it, and
//! what a volume may make the walk hold or do has named bounds (here, in `entries`, what one
//! listing adds, and in `volumes`, how one is read). A listing over one is refused, named,
//! counted, and the run exits non-zero: keys may be missing.

mod entries;
mod volumes;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{atomic::Ordering, mpsc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{
    config::Config,
    index::{Index, State},
    placement::{self, MARKER_DIR},
    progress::Progress,
    record::Record,
    volume::{self, Client, Topology},
};
use volumes::{discover, fetch, parse_listing, read_md5, Failure, Gate, Layout, Listing, SHARDS};

pub struct Options {
    pub force: bool,
    pub verify: bool,
    pub concurrency: usize,
}

/// Records per index write.
const BATCH: usize = 10_000;
/// A batch tool waits longer for a busy volume than the master's `-voltimeout`.
const MIN_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Most bytes of folders learned from listings and waiting to be listed (a job and its
/// path, ~100 bytes): ~600k folders, twice the `yy` folders of a shard over 1,000
/// subvolume roots, the most the walk (lowest shard first) has waiting.
const QUEUE_MAX: usize = 64 << 20;
/// Strays and size mismatches shown one by one; the rest are counted.
const NAMED_WARNINGS: u64 = 10;

pub fn run(cfg: Config, opts: Options) -> anyhow::Result<()> {
    let timeout = cfg.voltimeout.max(MIN_TIMEOUT);
    let topo = Topology::new(&cfg.volumes, cfg.replicas, cfg.subvolumes, timeout, None);
    // an index built without a volume silently loses the keys only that volume holds
    volume::ANNOUNCE_UP.store(false, Ordering::Relaxed);
    let down = volume::probe_all(topo.all(), cfg.voltimeout);
    volume::ANNOUNCE_UP.store(true, Ordering::Relaxed);
    if !down.is_empty() {
        let names: Vec<String> = down.iter().map(|(n, why)| format!("{n} ({why})")).collect();
        bail!("volume {} unreachable: a rebuild without it would lose its keys", names.join(", "));
    }
    volume::Prober::start(PROBE_INTERVAL, cfg.voltimeout).context("cannot start the volume prober")?.watch(topo.all());
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .context("cannot start the runtime")?;
    let client = Client::new();
    let gate = Gate::new();
    // the folders first (read-only): a volume that cannot be listed leaves the index alone
    let layout = rt.block_on(discover(&client, &topo, &gate, &cfg))?;
    let index = open_empty(&cfg, opts.force)?;
    let progress = Progress::new("rebuild", None);
    progress.count("live", 0);
    progress.count("unlinked", 0);
    progress.note("under-replicated", 0);
    progress.note("strays", 0);
    let subs = layout.roots.iter().filter(|r| r.sv.is_some()).count();
    progress.println(&format!(
        "rebuild: listing {} volumes ({} subvolume folders) into {}{}",
        cfg.volumes.len(),
        subs,
        cfg.db.display(),
        if opts.verify { ", reading every value for its MD5" } else { "" }
    ));

    let (tx, rx) = mpsc::sync_channel::<Vec<(Vec<u8>, State, Record)>>(4);
    let walked = std::thread::scope(|s| {
        let writer = std::thread::Builder::new().name("index writer".into()).spawn_scoped(s, || {
            for mut batch in rx {
                // in key order a memtable insert starts where the last one ended
                batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                index.put_many(&batch)?;
            }
            Ok::<(), crate::index::Error>(())
        });
        let writer = match writer {
            Ok(w) => w,
            Err(e) => return Err(anyhow::anyhow!("cannot start the index writer: {e}")),
        };
        let mut walk = Walk::new(&cfg, &opts, &layout, &progress, tx);
        let walked = rt.block_on(walk.run(&client, &topo, &gate));
        drop(walk); // closes the channel: the writer finishes what it has
        match writer.join() {
            Ok(Ok(())) => walked,
            Ok(Err(e)) => Err(anyhow::anyhow!("cannot write the index {}: {e}", cfg.db.display())),
            Err(_) => Err(anyhow::anyhow!("the index writer panicked")),
        }
    });
    if let Err(e) = walked {
        drop(progress);
        bail!("{e:#}; the index at {} is incomplete: rerun with -force", cfg.db.display());
    }
    // flushed, not only synced: the master's first start then has no log to replay
    index.flush().with_context(|| format!("cannot flush the index {}", cfg.db.display()))?;
    progress.finish()
}

/// Opens the index at `-db`, refusing one that holds keys unless `force`, which empties it:
/// the result is what the volumes hold, nothing else.
fn open_empty(cfg: &Config, force: bool) -> anyhow::Result<Index> {
    let index = Index::open(&cfg.db).map_err(anyhow::Error::msg)?;
    if index.is_empty() {
        return Ok(index);
    }
    if !force {
        bail!("the index {} already holds keys; rebuild writes a new one (-force replaces it)", cfg.db.display());
    }
    drop(index);
    eprintln!("mkv: -force: replacing the index {}", cfg.db.display());
    Index::destroy(&cfg.db).map_err(anyhow::Error::msg)?;
    Index::open(&cfg.db).map_err(anyhow::Error::msg)
}

/// A directory to list.
struct ListJob {
    shard: u8,
    /// Second md5 byte of the keys below (once known, at depth 1).
    yy: u8,
    root: u16,
    marker: bool,
    /// Request path, ending in `/`.
    dir: String,
    /// Where, in `dir`, the (nested) file name starts.
    name_at: usize,
    /// 0: the `xx/` folder, 1: `xx/yy/`, more: nested folders of a base64 name.
    depth: u16,
}

enum Task {
    List(ListJob),
    Read { shard: u8, idx: u32, targets: Vec<(String, String)> },
}

enum Outcome {
    Listed(ListJob, Result<Listing, Failure>),
    Read { shard: u8, idx: u32, result: Result<([u8; 16], u64), Failure> },
}

async fn perform(client: &Client, topo: &Topology, gate: &Gate, layout: &Layout, task: Task) -> Outcome {
    match task {
        Task::List(job) => {
            let server = &layout.volumes[layout.roots[job.root as usize].server];
            let r = fetch(client, topo, gate, server, &job.dir).await;
            Outcome::Listed(job, r)
        }
        Task::Read { shard, idx, targets } => {
            Outcome::Read { shard, idx, result: read_md5(client, topo, &targets).await }
        }
    }
}

/// A key found so far in its shard.
struct Found {
    yy: u8,
    /// (root, size) of each replica.
    reps: Vec<(u16, u64)>,
}

/// A key with its record, ready to write.
struct Done {
    key: Box<[u8]>,
    state: State,
    rec: Record,
}

#[derive(Default)]
struct Shard {
    /// Listings queued or in flight.
    lists: usize,
    /// `-verify` reads in flight or queued.
    reads: usize,
    keys: HashMap<Box<[u8]>, Found>,
    markers: HashSet<Box<[u8]>>,
    /// Entries listed so far below each `xx/yy` folder (by [`subtree`]); REFUSED once over
    /// SUBTREE_MAX.
    subtrees: HashMap<u32, u32>,
    done: Vec<Done>,
    complete: bool,
}

/// A subtree that went over SUBTREE_MAX: nothing more of it is listed.
const REFUSED: u32 = u32::MAX;

/// The `xx/yy` folder of a root (data or markers) that a job at depth 1 or more is below.
fn subtree(job: &ListJob) -> u32 {
    (job.root as u32) << 9 | (job.marker as u32) << 8 | job.yy as u32
}

/// What a folder learned from a listing costs while it waits: QUEUE_MAX counts this.
fn queued_cost(job: &ListJob) -> usize {
    std::mem::size_of::<Task>() + job.dir.len()
}

/// The walk over every shard: what is queued, found and written.
struct Walk<'a> {
    cfg: &'a Config,
    opts: &'a Options,
    layout: &'a Layout,
    progress: &'a Progress,
    queues: Vec<VecDeque<Task>>,
    shards: Vec<Shard>,
    /// Lowest shard not complete: work is taken from here up, so few shards are open at once.
    low: usize,
    completed: usize,
    batch: Vec<(Vec<u8>, State, Record)>,
    tx: Option<mpsc::SyncSender<Vec<(Vec<u8>, State, Record)>>>,
    warned: u64,
    scores: Vec<([u8; 16], usize)>,
    /// Bytes of folders learned from listings, queued (QUEUE_MAX bounds it).
    queued: usize,
}

impl<'a> Walk<'a> {
    fn new(
        cfg: &'a Config,
        opts: &'a Options,
        layout: &'a Layout,
        progress: &'a Progress,
        tx: mpsc::SyncSender<Vec<(Vec<u8>, State, Record)>>,
    ) -> Walk<'a> {
        let mut w = Walk {
            cfg,
            opts,
            layout,
            progress,
            queues: (0..SHARDS).map(|_| VecDeque::new()).collect(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            low: 0,
            completed: 0,
            batch: Vec::with_capacity(BATCH),
            tx: Some(tx),
            warned: 0,
            scores: Vec::new(),
            queued: 0,
        };
        for xx in 0..SHARDS {
            for (i, r) in layout.roots.iter().enumerate() {
                for marker in [false, true] {
                    if (if marker { &r.markers } else { &r.data })[xx] {
                        let dir = format!("{}{}/{xx:02x}/", r.prefix, if marker { MARKER_DIR } else { "" });
                        let job = ListJob { shard: xx as u8, yy: 0, root: i as u16, marker, name_at: 0, dir, depth: 0 };
                        w.queue(job);
                    }
                }
            }
        }
        w
    }

    fn queue(&mut self, job: ListJob) {
        let s = job.shard as usize;
        self.shards[s].lists += 1;
        self.queues[s].push_back(Task::List(job));
    }

    /// A folder a listing names: queued, or false when QUEUE_MAX has no room for it.
    fn queue_learned(&mut self, job: ListJob) -> bool {
        let cost = queued_cost(&job);
        if self.queued + cost > QUEUE_MAX {
            return false;
        }
        self.queued += cost;
        self.queue(job);
        true
    }

    /// The next task of the lowest shard that has one; folders of a refused subtree are
    /// dropped unlisted.
    fn next_task(&mut self) -> anyhow::Result<Option<Task>> {
        while let Some(s) = (self.low..SHARDS).find(|&s| !self.queues[s].is_empty()) {
            let Some(task) = self.queues[s].pop_front() else { continue };
            let Task::List(job) = task else { return Ok(Some(task)) };
            if job.depth > 0 {
                self.queued -= queued_cost(&job);
            }
            if !self.refused(&job) {
                return Ok(Some(Task::List(job)));
            }
            self.unqueued(s)?;
        }
        Ok(None)
    }

    /// Whether `job` is below a subtree that went over SUBTREE_MAX.
    fn refused(&self, job: &ListJob) -> bool {
        job.depth > 0 && self.shards[job.shard as usize].subtrees.get(&subtree(job)) == Some(&REFUSED)
    }

    /// A listing of shard `s` is done with (listed or dropped).
    fn unqueued(&mut self, s: usize) -> anyhow::Result<()> {
        self.shards[s].lists -= 1;
        if self.shards[s].lists == 0 {
            self.listed(s)?;
        }
        Ok(())
    }

    async fn run(&mut self, client: &Client, topo: &Topology, gate: &Gate) -> anyhow::Result<()> {
        // shards with nothing to list (no volume has their folder)
        for s in 0..SHARDS {
            if self.shards[s].lists == 0 {
                self.listed(s)?;
            }
        }
        let layout = self.layout;
        let mut inflight = FuturesUnordered::new();
        loop {
            while inflight.len() < self.opts.concurrency {
                let Some(task) = self.next_task()? else { break };
                inflight.push(perform(client, topo, gate, layout, task));
            }
            let Some(outcome) = inflight.next().await else { break };
            match outcome {
                Outcome::Listed(job, r) => self.on_listing(topo, job, r)?,
                Outcome::Read { shard, idx, result } => self.on_read(shard as usize, idx as usize, result)?,
            }
        }
        if self.completed != SHARDS {
            bail!("internal error: {} shards left unfinished", SHARDS - self.completed);
        }
        self.flush()
    }

    fn on_listing(&mut self, topo: &Topology, job: ListJob, r: Result<Listing, Failure>) -> anyhow::Result<()> {
        let s = job.shard as usize;
        let layout = self.layout;
        let server = &layout.volumes[layout.roots[job.root as usize].server];
        match r {
            // its subtree went over SUBTREE_MAX while this listing was in flight
            Ok(_) if self.refused(&job) => {}
            Ok(listing) => match parse_listing(&listing.body) {
                Ok(entries) => self.take_listing(&job, &entries),
                Err(e) => self.refuse(&job, &job.dir, &e.to_string()),
            },
            // a volume that stopped answering would cost its keys: stop rather than write half
            Err(f) if f.unreachable && !topo.is_up(server) => {
                bail!("volume {server} stopped answering during the rebuild ({})", f.why)
            }
            Err(f) if f.refused => self.refuse(&job, &job.dir, &f.why),
            Err(f) => self.progress.error(&format!("{server}{}", job.dir), &f.why),
        }
        self.unqueued(s)
    }

    /// A listing refused (over a bound, or no listing at all): named, counted, and what it
    /// holds is not indexed.
    fn refuse(&mut self, job: &ListJob, folder: &str, why: &str) {
        let server = &self.layout.volumes[self.layout.roots[job.root as usize].server];
        self.progress.note("listings refused", 1);
        self.progress.error(&format!("{server}{folder}"), why);
    }

    /// A line about something odd but not failed (a stray, a size mismatch): the first few
    /// are shown, the rest only counted in the summary.
    fn warn(&mut self, msg: &str) {
        self.warned += 1;
        if self.warned <= NAMED_WARNINGS {
            self.progress.println(&format!("rebuild: {msg}"));
        } else if self.warned == NAMED_WARNINGS + 1 {
            self.progress.println("rebuild: more of these are only counted in the summary");
        }
    }

    /// Every listing of shard `s` is in: its keys get their records.
    fn listed(&mut self, s: usize) -> anyhow::Result<()> {
        let keys = std::mem::take(&mut self.shards[s].keys);
        let markers = std::mem::take(&mut self.shards[s].markers);
        let mut done = Vec::with_capacity(keys.len());
        let (mut live, mut unlinked, mut under, mut differ) = (0, 0, 0, 0);
        let mut seen_markers = 0;
        for (key, mut f) in keys {
            self.order(&key, &mut f.reps);
            let state = if markers.contains(&key) {
                seen_markers += 1;
                unlinked += 1;
                State::Unlinked
            } else {
                live += 1;
                State::Live
            };
            let mut servers: Vec<usize> = f.reps.iter().map(|(r, _)| self.layout.roots[*r as usize].server).collect();
            servers.sort_unstable();
            servers.dedup();
            if servers.len() < self.cfg.replicas {
                under += 1;
            }
            let size = f.reps[0].1;
            if f.reps.iter().any(|(_, sz)| *sz != size) {
                differ += 1;
                let sizes: Vec<String> =
                    f.reps.iter().map(|(r, sz)| format!("{} {sz}", self.layout.roots[*r as usize].name)).collect();
                self.warn(&format!(
                    "{} has replicas of different sizes ({}); the record takes the first",
                    String::from_utf8_lossy(&key),
                    sizes.join(", ")
                ));
            }
            let volumes = f.reps.iter().map(|(r, _)| self.layout.roots[*r as usize].name.clone()).collect();
            done.push(Done { key, state, rec: Record { volumes, size, ..Record::default() } });
        }
        let p = self.progress;
        p.count("live", live);
        p.count("unlinked", unlinked);
        p.note("under-replicated", under);
        if differ > 0 {
            p.note("size mismatch", differ);
        }
        if markers.len() > seen_markers {
            p.note("markers without data", (markers.len() - seen_markers) as u64);
        }
        if self.opts.verify && !done.is_empty() {
            for (idx, d) in done.iter().enumerate() {
                let path = placement::key_path(&d.key);
                let targets = placement::targets(&d.rec.volumes, &path);
                self.queues[s].push_back(Task::Read { shard: s as u8, idx: idx as u32, targets });
            }
            self.shards[s].reads = done.len();
            self.shards[s].done = done;
            return Ok(());
        }
        self.complete(s, done)
    }

    fn on_read(&mut self, s: usize, idx: usize, r: Result<([u8; 16], u64), Failure>) -> anyhow::Result<()> {
        let d = &mut self.shards[s].done[idx];
        let name = String::from_utf8_lossy(&d.key).into_owned();
        match r {
            Ok((md5, n)) => {
                d.rec.md5 = Some(md5);
                if n != d.rec.size {
                    self.progress.note("size mismatch", 1);
                    let msg = format!("{name}: {n} bytes read, but {} listed", d.rec.size);
                    self.warn(&msg);
                }
            }
            Err(f) => self.progress.error(&name, &format!("cannot read it for -verify: {}", f.why)),
        }
        self.shards[s].reads -= 1;
        if self.shards[s].reads == 0 {
            let done = std::mem::take(&mut self.shards[s].done);
            self.complete(s, done)?;
        }
        Ok(())
    }

    fn complete(&mut self, s: usize, done: Vec<Done>) -> anyhow::Result<()> {
        for d in done {
            self.batch.push((d.key.into_vec(), d.state, d.rec));
        }
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        self.shards[s] = Shard { complete: true, ..Shard::default() };
        self.completed += 1;
        while self.low < SHARDS && self.shards[self.low].complete {
            self.low += 1;
        }
        self.progress.set_fraction(self.completed as f64 / SHARDS as f64);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let tx = self.tx.as_ref().context("index writer gone")?;
        // the writer stopped on an error; run() reports it
        tx.send(batch).map_err(|_| anyhow::anyhow!("the index writer stopped"))
    }

    /// Sorts `reps` into placement order over `-volumes`: each server where placement puts
    /// the key (with its subvolume) by rank; replicas anywhere else after them.
    fn order(&mut self, key: &[u8], reps: &mut [(u16, u64)]) {
        let vols = &self.layout.volumes;
        placement::scores(key, vols, &mut self.scores);
        let n = vols.len();
        let roots = &self.layout.roots;
        let sub = self.cfg.subvolumes;
        let scores = &self.scores;
        reps.sort_by_key(|(r, _)| {
            let root = &roots[*r as usize];
            let rank = scores.iter().position(|(_, i)| *i == root.server).unwrap_or(n);
            let want = (sub > 1).then(|| placement::subvolume(&scores[rank].0, sub));
            let exact = root.sv.map(u32::from) == want;
            (if exact { rank } else { n + rank }, root.sv)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_follows_placement() {
        let vols: Vec<String> = ["a:1", "b:2", "c:3", "d:4"].map(String::from).into();
        let mut scores = Vec::new();
        for key in [&b"/k"[..], b"/hello", b"/x/y"] {
            for sub in [1u32, 10] {
                let want = placement::key_volumes(key, &vols, 4, sub);
                placement::scores(key, &vols, &mut scores);
                let got: Vec<String> = scores
                    .iter()
                    .map(|(s, i)| {
                        if sub > 1 {
                            format!("{}/sv{:02X}", vols[*i], placement::subvolume(s, sub))
                        } else {
                            vols[*i].clone()
                        }
                    })
                    .collect();
                assert_eq!(got, want);
            }
        }
    }
}
