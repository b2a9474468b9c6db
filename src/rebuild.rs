//! The index from what the volumes hold: the [`walk`](crate::walk) over every volume's
//! listings hands each finished `xx` shard here, its keys become records and are written.
//!
//! Memory holds only the few shards in flight, not the whole key space. UNLINK's markers are
//! in the same shard, so unlinked keys come back unlinked. A listing the walk refused (over
//! one of its bounds) makes the run exit non-zero: keys may be missing.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, mpsc},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{
    config::Config,
    index::{Index, State},
    placement,
    progress::Progress,
    record::{self, Record},
    volume::{self, Client, Topology},
    walk::{
        discover,
        volumes::{read_md5s, Failure},
        Consumer, Findings, Gate, Layout, Rep, Walk, Warnings, Worker,
    },
};

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

pub fn run(cfg: Config, opts: Options) -> anyhow::Result<()> {
    let timeout = cfg.voltimeout.max(MIN_TIMEOUT);
    let topo = Topology::new(&cfg.volumes, cfg.replicas, cfg.subvolumes, timeout, None);
    // first, so that a locked index (a master running on it) or one holding keys is the one
    // thing said, before the volumes are asked and warned about
    let index = open_index(&cfg, opts.force)?;
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
    let client = Client::new(cfg.volume_rcvbuf);
    let gate = Gate::new();
    // the folders first (read-only): a volume that cannot be listed leaves the index alone
    let layout = rt.block_on(discover(&client, &topo, &gate, &cfg))?;
    let index = emptied(index, &cfg)?;
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
        if opts.verify { ", reading every replica for its MD5" } else { "" }
    ));

    let (tx, rx) = mpsc::sync_channel::<Batch>(4);
    let walked = std::thread::scope(|s| {
        let writer = std::thread::Builder::new().name("index writer".into()).spawn_scoped(s, || {
            for mut batch in rx {
                // in key order a memtable insert starts where the last one ended
                batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                // each key once, into the empty index emptied() gave
                index.put_many(&batch, true)?;
            }
            Ok::<(), crate::index::Error>(())
        });
        let writer = match writer {
            Ok(w) => w,
            Err(e) => return Err(anyhow::anyhow!("cannot start the index writer: {e}")),
        };
        let warnings = Warnings::new(&progress);
        let mut build = Build {
            cfg: &cfg,
            opts: &opts,
            layout: &layout,
            progress: &progress,
            warnings: &warnings,
            shards: HashMap::new(),
            batch: Vec::with_capacity(BATCH),
            tx: Some(tx),
            scores: Vec::new(),
        };
        let reader = Reader { client: &client, topo: &topo };
        let mut walk = Walk::new(&layout, &progress, &warnings);
        let walked = rt.block_on(walk.run(&client, &topo, &gate, opts.concurrency, &mut build, &reader));
        let walked = walked.and_then(|()| build.flush());
        drop(build); // closes the channel: the writer finishes what it has
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

/// Opens the index at `-db` (locked from here on), refusing one that holds keys unless
/// `force`.
fn open_index(cfg: &Config, force: bool) -> anyhow::Result<Index> {
    let index = Index::open(&cfg.db).map_err(anyhow::Error::msg)?;
    if !index.is_empty() && !force {
        bail!("the index {} already holds keys; rebuild writes a new one (-force replaces it)", cfg.db.display());
    }
    Ok(index)
}

/// The index [`open_index`] gave, emptied (`-force` over one with keys) once the volumes
/// were listed: the result is what the volumes hold, nothing else.
fn emptied(index: Index, cfg: &Config) -> anyhow::Result<Index> {
    if index.is_empty() {
        return Ok(index);
    }
    drop(index);
    eprintln!("mkv: -force: replacing the index {}", cfg.db.display());
    Index::destroy(&cfg.db).map_err(anyhow::Error::msg)?;
    Index::open(&cfg.db).map_err(anyhow::Error::msg)
}

/// Records on their way to the index writer.
type Batch = Vec<(Vec<u8>, State, Record)>;

/// A key with its record, ready to write.
struct Done {
    key: Box<[u8]>,
    state: State,
    rec: Record,
}

/// A shard's keys with their records (with `-verify`, filled in as the reads come back).
struct Built {
    done: Vec<Done>,
}

/// `-verify`: a value to read whole for its MD5: its index in its shard's [`Built`], and
/// where its replicas are.
struct Read {
    idx: u32,
    targets: Vec<(String, String)>,
}

/// The consumer of the walk: each shard's keys made records and sent to the index writer.
struct Build<'a> {
    cfg: &'a Config,
    opts: &'a Options,
    layout: &'a Layout,
    progress: &'a Progress,
    warnings: &'a Warnings<'a>,
    /// Shards listed, not yet written.
    shards: HashMap<usize, Built>,
    batch: Batch,
    tx: Option<mpsc::SyncSender<Batch>>,
    scores: Vec<([u8; 16], usize)>,
}

/// Does `-verify`'s reads.
struct Reader<'a> {
    client: &'a Client,
    topo: &'a Topology,
}

/// What each replica read held: its MD5 and length, or why it could not be read.
type Reads = Vec<Result<([u8; 16], u64), Failure>>;

impl Worker<Read, (u32, Reads)> for Reader<'_> {
    async fn perform(&self, job: Read) -> (u32, Reads) {
        (job.idx, read_md5s(self.client, self.topo, &job.targets).await)
    }
}

impl Consumer for Build<'_> {
    type Job = Read;
    type Done = (u32, Reads);

    /// Every listing of shard `s` is in: its keys get their records.
    fn listed(&mut self, s: usize, found: Findings) -> anyhow::Result<Vec<Read>> {
        let Findings { keys, markers, .. } = found;
        let mut done = Vec::with_capacity(keys.len());
        let (mut live, mut unlinked, mut under, mut differ) = (0, 0, 0, 0);
        let mut seen_markers = 0;
        for (key, mut f) in keys {
            self.order(&key, &mut f.reps);
            let state = if markers.contains_key(&key) {
                seen_markers += 1;
                unlinked += 1;
                State::Unlinked
            } else {
                live += 1;
                State::Live
            };
            let mut servers: Vec<usize> = f.reps.iter().map(|r| self.layout.roots[r.root as usize].server).collect();
            servers.sort_unstable();
            servers.dedup();
            if servers.len() < self.cfg.replicas {
                under += 1;
            }
            let size = listed_size(&f.reps);
            if f.reps.iter().any(|r| r.size != size) {
                differ += 1;
                let sizes: Vec<String> =
                    f.reps.iter().map(|r| format!("{} {}", self.layout.roots[r.root as usize].name, r.size)).collect();
                self.warnings.warn(&format!(
                    "{} has replicas of different sizes ({}); the record takes {size}, the size most of them have \
                     (of sizes as common, the largest)",
                    String::from_utf8_lossy(&key),
                    sizes.join(", ")
                ));
            }
            let volumes = f.reps.iter().map(|r| self.layout.roots[r.root as usize].name.clone()).collect();
            // the time S3 shows (Last-Modified) and conditional requests compare: the latest
            // replica's, to the second as nginx lists it (a PUT writes them all at once)
            let mtime = f.reps.iter().map(|r| r.mtime.max(0) as u64 * 1000).max().unwrap_or(0);
            done.push(Done { key, state, rec: Record { volumes, size, mtime, ..Record::default() } });
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
        let mut reads = Vec::new();
        if self.opts.verify {
            for (idx, d) in done.iter().enumerate() {
                let path = placement::key_path(&d.key);
                let targets = placement::targets(&d.rec.volumes, &path);
                reads.push(Read { idx: idx as u32, targets });
            }
        }
        self.shards.insert(s, Built { done });
        Ok(reads)
    }

    fn worked(&mut self, s: usize, (idx, reads): Self::Done) -> anyhow::Result<Vec<Read>> {
        let Some(b) = self.shards.get_mut(&s) else { bail!("internal error: a read of shard {s} not listed") };
        let d = &mut b.done[idx as usize];
        let name = String::from_utf8_lossy(&d.key).into_owned();
        let read: Vec<([u8; 16], u64)> = reads.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        if read.is_empty() {
            let why = reads.into_iter().find_map(Result::err).map_or_else(|| "no replica".into(), |f| f.why);
            self.progress.error(&name, &format!("cannot read it for -verify: {why}"));
            return Ok(Vec::new());
        }
        match record::majority(&read) {
            Some(((md5, n), held)) => {
                d.rec.md5 = Some(md5);
                if n != d.rec.size {
                    self.progress.note("size mismatch", 1);
                    let msg = format!("{name}: {n} bytes read, but {} listed; the record takes {n}", d.rec.size);
                    self.warnings.warn(&msg);
                    d.rec.size = n;
                }
                if held < read.len() {
                    self.progress.note("replicas differ", 1);
                    let msg = format!(
                        "{name}: a replica differs from the others; the record takes what {held} of the {} read \
                             hold (`mkv verify -deep -repair` mends the rest)",
                        read.len()
                    );
                    self.warnings.warn(&msg);
                }
            }
            None => {
                // recording one of them would have verify copy it over the others
                self.progress.note("replicas differ", 1);
                let msg = format!(
                    "{name}: its replicas hold different values, none held by most of them; no MD5 recorded \
                         (verify cannot tell which is right: compare them by hand)"
                );
                self.warnings.warn(&msg);
            }
        }
        Ok(Vec::new())
    }

    fn completed(&mut self, s: usize) -> anyhow::Result<()> {
        let done = self.shards.remove(&s).map_or(Vec::new(), |b| b.done);
        for d in done {
            self.batch.push((d.key.into_vec(), d.state, d.rec));
        }
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }
}

impl Build<'_> {
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
    fn order(&mut self, key: &[u8], reps: &mut [Rep]) {
        let vols = &self.layout.volumes;
        placement::scores(key, vols, &mut self.scores);
        let n = vols.len();
        let roots = &self.layout.roots;
        let sub = self.cfg.subvolumes;
        let scores = &self.scores;
        reps.sort_by_key(|r| {
            let root = &roots[r.root as usize];
            let rank = scores.iter().position(|(_, i)| *i == root.server).unwrap_or(n);
            let want = (sub > 1).then(|| placement::subvolume(&scores[rank].0, sub));
            let exact = root.sv.map(u32::from) == want;
            (if exact { rank } else { n + rank }, root.sv)
        });
    }
}

/// The size most replicas listed; of sizes listed as often, the largest (a file cut short
/// is the usual damage). The first replica's was taken: when it was the one cut short,
/// verify then "repaired" the good ones to its length.
fn listed_size(reps: &[Rep]) -> u64 {
    let count = |size: u64| reps.iter().filter(|r| r.size == size).count();
    reps.iter().map(|r| (count(r.size), r.size)).max().map_or(0, |(_, size)| size)
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
