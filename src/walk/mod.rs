//! What every volume holds, read from their nginx JSON listings (every volume and `svXX`
//! folder, many folders in flight, one `xx` hash folder — a shard — after another), handed
//! shard by shard to a [`Consumer`]: `rebuild` makes records of it, `verify` compares it.
//!
//! A key sits in the same `xx/yy/` folder on every volume, so once shard `xx` is listed on
//! all volumes its keys are known whole: the consumer gets them, may ask for more work on
//! them (reads, repairs) run within the same bounds, and then they are forgotten, so memory
//! holds only the few shards in flight, not the whole key space. Names whose base64 has `/`
//! are nested folders, walked and joined. UNLINK's markers (`_unlinked/xx/yy/...` beside the
//! tree) are listed in the same shard.
//!
//! Listings are not trusted: each folder is listed once however often listings name it, and
//! what a volume may make the walk hold or do has named bounds (here, in `entries`, what one
//! listing adds, and in `volumes`, how one is read). A listing over one is refused, named,
//! and counted (`listings refused`): keys there may be unseen.

mod entries;
pub mod volumes;

use std::{
    cell::Cell,
    collections::{HashMap, VecDeque},
};

use anyhow::bail;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{placement::MARKER_DIR, progress::Progress, volume::Topology};
pub use volumes::{discover, Gate, Layout, SHARDS};
use volumes::{fetch, parse_listing, Failure, Listing};

/// Most bytes of folders learned from listings and waiting to be listed (a job and its
/// path, ~100 bytes): ~600k folders, twice the `yy` folders of a shard over 1,000
/// subvolume roots, the most the walk (lowest shard first) has waiting.
const QUEUE_MAX: usize = 64 << 20;
/// Strays and size mismatches shown one by one; the rest are counted.
const NAMED_WARNINGS: u64 = 10;

/// One replica file (or unlink marker) found: on which root, its size and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rep {
    /// Index into [`Layout::roots`].
    pub root: u16,
    pub size: u64,
    /// Last modified, Unix seconds, as the listing says (0: it did not).
    pub mtime: i64,
}

/// A key found in its shard: its `yy` folder and its replicas.
pub struct Found {
    pub yy: u8,
    pub reps: Vec<Rep>,
}

/// A file in a shard's tree that is no key's: its path on its server and its time.
pub struct Junk {
    pub root: u16,
    pub path: String,
    pub mtime: i64,
}

/// What one shard holds on every volume.
#[derive(Default)]
pub struct Findings {
    pub keys: HashMap<Box<[u8]>, Found>,
    /// Keys with unlink markers, and which roots hold one.
    pub markers: HashMap<Box<[u8]>, Vec<Rep>>,
    pub junk: Vec<Junk>,
}

/// What a walk hands each shard to, and the work it wants done on it.
pub trait Consumer {
    type Job;
    type Done;
    /// Every listing of shard `s` is in: what it holds. Returns work to do on it, run by
    /// the [`Worker`] with the walk's concurrency, lowest shard first.
    fn listed(&mut self, s: usize, found: Findings) -> anyhow::Result<Vec<Self::Job>>;
    /// A job of shard `s` is done; returns more work for the shard, if any.
    fn worked(&mut self, s: usize, done: Self::Done) -> anyhow::Result<Vec<Self::Job>>;
    /// Shard `s` is finished: listed, and all its work done.
    fn completed(&mut self, s: usize) -> anyhow::Result<()>;
    /// Whether to stop the walk now (a master that stops ends its scrub).
    fn stopped(&self) -> bool {
        false
    }
}

/// Does a [`Consumer`]'s jobs (it is borrowed while the consumer is not).
#[allow(async_fn_in_trait)] // single-threaded runtime: no Send bound wanted
pub trait Worker<J, D> {
    async fn perform(&self, job: J) -> D;
}

/// Lines about odd things (strays, mismatches): the first few are shown, the rest only
/// counted in the summary. Shared by the walk and its consumer.
pub struct Warnings<'a> {
    progress: &'a Progress,
    warned: Cell<u64>,
}

impl<'a> Warnings<'a> {
    pub fn new(progress: &'a Progress) -> Warnings<'a> {
        Warnings { progress, warned: Cell::new(0) }
    }

    pub fn warn(&self, msg: &str) {
        let n = self.warned.get() + 1;
        self.warned.set(n);
        let label = self.progress.label();
        if n <= NAMED_WARNINGS {
            self.progress.println(&format!("{label}: {msg}"));
        } else if n == NAMED_WARNINGS + 1 {
            self.progress.println(&format!("{label}: more of these are only counted in the summary"));
        }
    }
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

enum Task<J> {
    List(ListJob),
    Work { shard: u8, job: J },
}

enum Outcome<D> {
    Listed(ListJob, Result<Listing, Failure>),
    Worked { shard: u8, done: D },
}

async fn perform<J, D, W: Worker<J, D>>(
    client: &crate::volume::Client,
    topo: &Topology,
    gate: &Gate,
    layout: &Layout,
    worker: &W,
    task: Task<J>,
) -> Outcome<D> {
    match task {
        Task::List(job) => {
            let server = &layout.volumes[layout.roots[job.root as usize].server];
            let r = fetch(client, topo, gate, server, &job.dir).await;
            Outcome::Listed(job, r)
        }
        Task::Work { shard, job } => Outcome::Worked { shard, done: worker.perform(job).await },
    }
}

#[derive(Default)]
struct Shard {
    /// Listings queued or in flight.
    lists: usize,
    /// Consumer jobs queued or in flight.
    jobs: usize,
    found: Findings,
    /// Entries listed so far below each `xx/yy` folder (by [`subtree`]); REFUSED once over
    /// SUBTREE_MAX.
    subtrees: HashMap<u32, u32>,
    /// Handed to the consumer.
    listed: bool,
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
    std::mem::size_of::<ListJob>() + job.dir.len()
}

/// The walk over every shard: what is queued and found.
pub struct Walk<'a> {
    layout: &'a Layout,
    progress: &'a Progress,
    warnings: &'a Warnings<'a>,
    queues: Vec<VecDeque<ListJob>>,
    shards: Vec<Shard>,
    /// Lowest shard not complete: work is taken from here up, so few shards are open at once.
    low: usize,
    completed: usize,
    /// Bytes of folders learned from listings, queued (QUEUE_MAX bounds it).
    queued: usize,
    /// Whether files that are no key's are kept in [`Findings::junk`] (a verify wants them).
    pub keep_junk: bool,
}

impl<'a> Walk<'a> {
    pub fn new(layout: &'a Layout, progress: &'a Progress, warnings: &'a Warnings<'a>) -> Walk<'a> {
        let mut w = Walk {
            layout,
            progress,
            warnings,
            queues: (0..SHARDS).map(|_| VecDeque::new()).collect(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            low: 0,
            completed: 0,
            queued: 0,
            keep_junk: false,
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
        self.queues[s].push_back(job);
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

    /// Whether `job` is below a subtree that went over SUBTREE_MAX.
    fn refused(&self, job: &ListJob) -> bool {
        job.depth > 0 && self.shards[job.shard as usize].subtrees.get(&subtree(job)) == Some(&REFUSED)
    }

    /// Lists every shard, handing each to `consumer` when listed and having `worker` do the
    /// jobs it asks for, at most `concurrency` listings and jobs in flight.
    pub async fn run<C, W>(
        &mut self,
        client: &crate::volume::Client,
        topo: &Topology,
        gate: &Gate,
        concurrency: usize,
        consumer: &mut C,
        worker: &W,
    ) -> anyhow::Result<()>
    where
        C: Consumer,
        W: Worker<C::Job, C::Done>,
    {
        let mut engine = Engine { walk: self, consumer, jobs: (0..SHARDS).map(|_| VecDeque::new()).collect() };
        // shards with nothing to list (no volume has their folder)
        for s in 0..SHARDS {
            if engine.walk.shards[s].lists == 0 {
                engine.listed(s)?;
            }
        }
        let layout = engine.walk.layout;
        let mut inflight = FuturesUnordered::new();
        loop {
            if engine.consumer.stopped() {
                bail!("stopped");
            }
            while inflight.len() < concurrency {
                let Some(task) = engine.next_task()? else { break };
                inflight.push(perform(client, topo, gate, layout, worker, task));
            }
            let Some(outcome) = inflight.next().await else { break };
            match outcome {
                Outcome::Listed(job, r) => engine.on_listing(topo, job, r)?,
                Outcome::Worked { shard, done } => engine.on_worked(shard as usize, done)?,
            }
        }
        if engine.walk.completed != SHARDS {
            bail!("internal error: {} shards left unfinished", SHARDS - engine.walk.completed);
        }
        Ok(())
    }
}

/// A walk driving one consumer: its queues of jobs beside the walk's listings.
struct Engine<'w, 'a, C: Consumer> {
    walk: &'w mut Walk<'a>,
    consumer: &'w mut C,
    jobs: Vec<VecDeque<C::Job>>,
}

impl<C: Consumer> Engine<'_, '_, C> {
    /// The next task of the lowest shard that has one; folders of a refused subtree are
    /// dropped unlisted.
    fn next_task(&mut self) -> anyhow::Result<Option<Task<C::Job>>> {
        loop {
            let w = &mut *self.walk;
            let Some(s) = (w.low..SHARDS).find(|&s| !w.queues[s].is_empty() || !self.jobs[s].is_empty()) else {
                return Ok(None);
            };
            if let Some(job) = self.jobs[s].pop_front() {
                return Ok(Some(Task::Work { shard: s as u8, job }));
            }
            let Some(job) = w.queues[s].pop_front() else { continue };
            if job.depth > 0 {
                w.queued -= queued_cost(&job);
            }
            if !w.refused(&job) {
                return Ok(Some(Task::List(job)));
            }
            self.unqueued(s)?;
        }
    }

    /// A listing of shard `s` is done with (listed or dropped).
    fn unqueued(&mut self, s: usize) -> anyhow::Result<()> {
        self.walk.shards[s].lists -= 1;
        if self.walk.shards[s].lists == 0 {
            self.listed(s)?;
        }
        Ok(())
    }

    fn on_listing(&mut self, topo: &Topology, job: ListJob, r: Result<Listing, Failure>) -> anyhow::Result<()> {
        let s = job.shard as usize;
        let w = &mut *self.walk;
        let layout = w.layout;
        let server = &layout.volumes[layout.roots[job.root as usize].server];
        match r {
            // its subtree went over SUBTREE_MAX while this listing was in flight
            Ok(_) if w.refused(&job) => {}
            Ok(listing) => match parse_listing(&listing.body) {
                Ok(entries) => w.take_listing(&job, &entries),
                Err(e) => w.refuse(&job, &job.dir, &e.to_string()),
            },
            // a volume that stopped answering would cost its keys: stop rather than go on blind
            Err(f) if f.unreachable && !topo.is_up(server) => {
                bail!("volume {server} stopped answering during the walk ({})", f.why)
            }
            Err(f) if f.refused => w.refuse(&job, &job.dir, &f.why),
            Err(f) => w.progress.error(&format!("{server}{}", job.dir), &f.why),
        }
        self.unqueued(s)
    }

    /// Every listing of shard `s` is in: the consumer gets its findings.
    fn listed(&mut self, s: usize) -> anyhow::Result<()> {
        let found = std::mem::take(&mut self.walk.shards[s].found);
        self.walk.shards[s].listed = true;
        let jobs = self.consumer.listed(s, found)?;
        self.add_jobs(s, jobs)
    }

    fn on_worked(&mut self, s: usize, done: C::Done) -> anyhow::Result<()> {
        self.walk.shards[s].jobs -= 1;
        let more = self.consumer.worked(s, done)?;
        self.add_jobs(s, more)
    }

    fn add_jobs(&mut self, s: usize, jobs: Vec<C::Job>) -> anyhow::Result<()> {
        self.walk.shards[s].jobs += jobs.len();
        self.jobs[s].extend(jobs);
        let sh = &self.walk.shards[s];
        if sh.listed && sh.lists == 0 && sh.jobs == 0 && !sh.complete {
            self.complete(s)?;
        }
        Ok(())
    }

    fn complete(&mut self, s: usize) -> anyhow::Result<()> {
        self.consumer.completed(s)?;
        let w = &mut *self.walk;
        w.shards[s] = Shard { complete: true, listed: true, ..Shard::default() };
        w.completed += 1;
        while w.low < SHARDS && w.shards[w.low].complete {
            w.low += 1;
        }
        w.progress.set_fraction(w.completed as f64 / SHARDS as f64);
        Ok(())
    }
}

impl Walk<'_> {
    /// A listing refused (over a bound, or no listing at all): named, counted, and what it
    /// holds is not seen.
    fn refuse(&mut self, job: &ListJob, folder: &str, why: &str) {
        let server = &self.layout.volumes[self.layout.roots[job.root as usize].server];
        self.progress.note("listings refused", 1);
        self.progress.error(&format!("{server}{folder}"), why);
    }

    fn warn(&self, msg: &str) {
        self.warnings.warn(msg);
    }
}
