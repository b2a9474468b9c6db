//! `mkv verify`: the index against what every volume holds, shard by shard through the
//! shared [`walk`](crate::walk), and with `-repair` each thing found wrong put right.
//!
//! The index is read first and sorted by shard ([`records`]); each shard the walk lists is
//! judged against its records ([`judge`]); what looks wrong is read (`-deep`), looked at
//! again and repaired key by key ([`work`]): under the key's lock, through the store
//! (offline, and the master's own scrub) or the master's `REPAIR` (`-online`). A write that
//! lands while a verify runs is never taken for damage: files younger than `-grace` are
//! spared, and a key whose record changed since it was read is left to that write.

mod judge;
mod records;
pub mod scrub;
mod shard;
mod work;

use std::{
    collections::{HashMap, VecDeque},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{
    config::Config,
    index::Index,
    placement::{PARTS_DIR, TMP_DIR},
    progress::Progress,
    record::now_ms,
    s3::multipart::{self, Damage},
    store::{write, Ctx, Shared},
    volume::{self, Client, Topology},
    walk::{
        discover,
        volumes::{fetch, parse_listing, Root},
        Consumer as _, Gate, Layout, Walk, Warnings, Worker as _,
    },
};
use judge::{Kind, Problem, Rules, KINDS};
use records::{part_files_of_master, pending_of_master, shelve_master, Pending, Shelf};
use shard::{Item, Verifier};
pub use work::{encode, Master};
use work::{Backend, Job, Throttle, Work};

/// A batch tool waits longer for a busy volume than the master's `-voltimeout`.
const MIN_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Items of the `_tmp` folders (the walk's shards are 0..SHARDS).
const TMP_ITEMS: usize = usize::MAX;
/// Items of the `_parts` folders.
const PART_ITEMS: usize = usize::MAX - 1;
/// A part upload names its file in the index before writing it, but one that starts after
/// verify read those names writes a file they lack: part files younger than this are
/// spared, however short `-grace` is.
const PART_GRACE: Duration = Duration::from_secs(60 * 60);

pub struct Options {
    pub online: Option<String>,
    /// Read every replica and check its MD5 and size.
    pub deep: bool,
    pub repair: bool,
    /// Files younger than this are spared: a write may be in flight.
    pub grace: Duration,
    /// `-deep` reads at most this many MiB/s (0: no limit).
    pub rate: f64,
    pub concurrency: usize,
}

/// What a run found and did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub keys: u64,
    /// Problems found (and confirmed), per kind (as [`KINDS`]).
    pub found: [u64; 6],
    pub fixed: u64,
    pub spared: u64,
    /// Listings, reads or repairs that failed.
    pub failures: u64,
    pub repair: bool,
}

impl Report {
    pub fn problems(&self) -> u64 {
        self.found.iter().sum()
    }

    /// Nothing wrong, or everything wrong repaired, and nothing failed.
    pub fn ok(&self) -> bool {
        self.failures == 0 && (self.problems() == 0 || (self.repair && self.fixed == self.problems()))
    }

    /// `3 missing, 1 orphans`: the kinds found.
    pub fn kinds(&self) -> String {
        let parts: Vec<String> = KINDS
            .iter()
            .filter(|k| self.found[k.index()] > 0)
            .map(|k| format!("{} {}", self.found[k.index()], k.name()))
            .collect();
        parts.join(", ")
    }

    /// One line saying what the run comes to.
    pub fn verdict(&self) -> String {
        let n = self.problems();
        let failed = if self.failures > 0 { format!(", {} failed", self.failures) } else { String::new() };
        let problems = if n == 1 { "1 problem".to_string() } else { format!("{n} problems") };
        match (n, self.repair) {
            (0, _) => format!("nothing wrong in {} keys{failed}", self.keys),
            (_, false) => format!("{problems} ({}){failed}; mkv verify -repair fixes them", self.kinds()),
            (n, true) if self.fixed == n => format!("{problems} ({}), all repaired{failed}", self.kinds()),
            (n, true) => {
                format!("{problems} ({}), {} repaired, {} not{failed}", self.kinds(), self.fixed, n - self.fixed)
            }
        }
    }
}

/// `mkv verify`: true when nothing is wrong (or all of it was repaired).
pub fn run(cfg: Config, opts: Options) -> anyhow::Result<bool> {
    // io_uring where the kernel has it: the walk is many small requests; hashing (`-deep`,
    // the copies of a repair) on a pool of a thread per core
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(cores)))
        .build()
        .context("cannot start the runtime")?;
    let progress = Progress::new("verify", None);
    let report = match opts.online.clone() {
        Some(url) => rt.block_on(run_online(&cfg, &opts, &url, &progress))?,
        None => {
            let (shared, topo, _prober) = open_offline(cfg, opts.repair)?;
            let r = rt.block_on(run_offline(&shared, &topo, &opts, &progress))?;
            if opts.repair {
                shared.index.flush().context("cannot flush the index")?;
            }
            r
        }
    };
    let summary = progress.end();
    let report = Report { failures: summary.failures, ..report };
    if let Err(e) = summary.result() {
        progress.println(&format!("{e:#}"));
    }
    progress.println(&format!("verify: {}", report.verdict()));
    Ok(report.ok())
}

/// The walk's view of the volumes: probed once (every one must answer: a volume not listed
/// would make all its replicas look missing), then watched.
fn volumes_up(cfg: &Config) -> anyhow::Result<(Topology, volume::Prober)> {
    let topo = Topology::new(&cfg.volumes, cfg.replicas, cfg.subvolumes, cfg.voltimeout.max(MIN_TIMEOUT), None);
    volume::ANNOUNCE_UP.store(false, Ordering::Relaxed);
    let down = volume::probe_all(topo.all(), cfg.voltimeout);
    volume::ANNOUNCE_UP.store(true, Ordering::Relaxed);
    if !down.is_empty() {
        let names: Vec<String> = down.iter().map(|(n, why)| format!("{n} ({why})")).collect();
        bail!("volume {} unreachable: a verify needs every volume", names.join(", "));
    }
    let prober = volume::Prober::start(PROBE_INTERVAL, cfg.voltimeout).context("cannot start the volume prober")?;
    prober.watch(topo.all());
    Ok((topo, prober))
}

/// The index (refused while a master holds it) and the volumes, all up; a `repair` refused
/// on a copy of the index of a master that runs ([`crate::served`]).
fn open_offline(cfg: Config, repair: bool) -> anyhow::Result<(Arc<Shared>, Topology, volume::Prober)> {
    let index = Index::open_existing(&cfg.db).map_err(|e| {
        let hint =
            if e.contains("locked") { "; to verify while the master runs use -online http://host:port" } else { "" };
        anyhow::anyhow!("{e}{hint}")
    })?;
    let harm = "deletes their files as orphans";
    crate::served::check(&index, &cfg.volumes, if repair { "repair" } else { "verify" }, repair.then_some(harm))?;
    let (topo, prober) = volumes_up(&cfg)?;
    // its probe of the volumes would say each is up again
    volume::ANNOUNCE_UP.store(false, Ordering::Relaxed);
    let shared = Shared::new(cfg, index, false);
    volume::ANNOUNCE_UP.store(true, Ordering::Relaxed);
    Ok((Arc::new(shared?), topo, prober))
}

async fn run_offline(
    shared: &Arc<Shared>,
    topo: &Topology,
    opts: &Options,
    progress: &Progress,
) -> anyhow::Result<Report> {
    let ctx = Ctx::new(shared.clone());
    if opts.repair {
        // replacements a crash left half written: settled first, so their files count
        match write::recover(&ctx).await {
            Ok(0) => {}
            Ok(n) => progress.println(&format!("verify: settled {n} replacement(s) a crash left half written")),
            Err(e) => progress.error("replacements left half written", &e.to_string()),
        }
    }
    let backend = Backend::Local(ctx);
    let client = Client::new(shared.cfg.volume_rcvbuf);
    let setup = Setup {
        cfg: &shared.cfg,
        opts,
        client: &client,
        topo,
        backend: &backend,
        progress,
        stop: &|| false,
        quiet: true,
    };
    check_all(&setup).await
}

async fn run_online(cfg: &Config, opts: &Options, url: &str, progress: &Progress) -> anyhow::Result<Report> {
    let master = Master::new(url, cfg.admin_token.as_deref())?;
    let client = Client::new(cfg.volume_rcvbuf);
    let v = master.volumes(&client).await?;
    let mut wcfg = cfg.clone();
    if cfg.volumes.is_empty() {
        wcfg.volumes = v.volumes;
    }
    wcfg.replicas = v.replicas;
    wcfg.subvolumes = v.subvolumes;
    let (topo, _prober) = volumes_up(&wcfg)?;
    progress.println(&format!(
        "verify: master {} ({} volumes: {}){}",
        master.addr,
        wcfg.volumes.len(),
        wcfg.volumes.join(","),
        match (opts.deep, opts.repair) {
            (true, true) => ", reading every replica, repairing",
            (true, false) => ", reading every replica",
            (false, true) => ", repairing",
            (false, false) => "",
        }
    ));
    let backend = Backend::Online(master);
    let setup = Setup {
        cfg: &wcfg,
        opts,
        client: &client,
        topo: &topo,
        backend: &backend,
        progress,
        stop: &|| false,
        quiet: false,
    };
    check_all(&setup).await
}

/// What one run works with.
pub struct Setup<'a> {
    /// The volumes (and subvolumes) to walk.
    pub cfg: &'a Config,
    pub opts: &'a Options,
    /// The volumes' client and health.
    pub client: &'a Client,
    pub topo: &'a Topology,
    pub backend: &'a Backend,
    pub progress: &'a Progress,
    /// Checked between steps: true ends the run early (an error).
    pub stop: &'a dyn Fn() -> bool,
    /// Nothing else writes meanwhile (offline).
    pub quiet: bool,
}

/// One verify over everything: records, the walk, the `_tmp` and `_parts` folders.
pub async fn check_all(s: &Setup<'_>) -> anyhow::Result<Report> {
    let p = s.progress;
    p.count("live", 0);
    p.count("unlinked", 0);
    for k in KINDS {
        if k != Kind::Corrupt || s.opts.deep {
            p.note(k.name(), 0);
        }
    }
    if s.opts.repair {
        p.note("repaired", 0);
        p.note("not repaired", 0);
    }
    let cutoff = (now_ms() / 1000) as i64 - s.opts.grace.as_secs() as i64;
    let mut shelf = Shelf::new()?;
    let pending = match s.backend {
        Backend::Local(ctx) => {
            records::shelve_index(&ctx.shared.index, &mut shelf, s.stop)?;
            Pending::of_index(&ctx.shared.index)?
        }
        Backend::Online(m) => {
            shelve_master(m, s.client, &mut shelf).await?;
            pending_of_master(m, s.client).await?
        }
    };
    if s.opts.repair && shelf.keys == 0 {
        // a wrong -db or master, or an index lost: every file would look like an orphan
        bail!(
            "the index holds no keys: a repair would delete every file on the volumes as an orphan; \
             check -db (or -online), or make the index from the volumes with `mkv rebuild`"
        );
    }
    let gate = Gate::new();
    let layout = discover(s.client, s.topo, &gate, s.cfg).await?;
    let warnings = Warnings::new(p);
    let work = Work {
        client: s.client,
        topo: s.topo,
        backend: s.backend,
        throttle: Throttle::new(s.opts.rate),
        buffers: Default::default(),
        quiet: s.quiet,
        copying: Default::default(),
    };
    let mut v = Verifier {
        opts: s.opts,
        shelf: &shelf,
        pending: &pending,
        layout: &layout,
        progress: p,
        rules: Rules { cutoff, deep: s.opts.deep },
        recheck: matches!(s.backend, Backend::Online(_)) || s.opts.repair,
        items: HashMap::new(),
        report: Report { repair: s.opts.repair, ..Report::default() },
        shown: [0; 6],
        stop: s.stop,
        unwalked: Default::default(),
    };
    let mut walk = Walk::new(&layout, p, &warnings);
    walk.keep_junk = true;
    walk.run(s.client, s.topo, &gate, s.opts.concurrency, &mut v, &work).await?;
    tmp_files(s, &layout, &gate, &mut v, &work, cutoff).await?;
    part_files(s, &layout, &gate, &mut v, &work, cutoff).await?;
    part_replicas(s, &mut v).await?;
    v.unwalked();
    Ok(v.report)
}

/// The `_tmp` folders: replacements being written, or left behind by a crash or a failed
/// repair. A file that no replacement in flight names and older than the grace is an orphan.
async fn tmp_files(
    s: &Setup<'_>,
    layout: &Layout,
    gate: &Gate,
    v: &mut Verifier<'_>,
    work: &Work<'_>,
    cutoff: i64,
) -> anyhow::Result<()> {
    let files = leftovers(s, layout, gate, TMP_DIR, |r| r.tmp, &[(cutoff, SPARED)]).await;
    let old = spare_young(s, v, files);
    if old.is_empty() {
        return Ok(());
    }
    // asked again now: a replacement may have started since the run began
    let pending = match s.backend {
        Backend::Local(ctx) => Pending::of_index(&ctx.shared.index)?,
        Backend::Online(m) => pending_of_master(m, s.client).await?,
    };
    let named = |o: &Leftover| pending.ids.contains(&o.name) || v.pending.ids.contains(&o.name);
    let orphans: Vec<Leftover> = old.into_iter().filter(|o| !named(o)).collect();
    delete_orphans(s, v, work, TMP_ITEMS, orphans).await
}

/// The `_parts` folders: S3 multipart parts. A part file that no part record names (an
/// upload `rebuild` dropped, a delete that failed and was forgotten) and older than the
/// grace, and than [`PART_GRACE`], is an orphan: nothing else would ever delete it.
async fn part_files(
    s: &Setup<'_>,
    layout: &Layout,
    gate: &Gate,
    v: &mut Verifier<'_>,
    work: &Work<'_>,
    cutoff: i64,
) -> anyhow::Result<()> {
    let part_cutoff = (now_ms() / 1000) as i64 - PART_GRACE.as_secs() as i64;
    let cutoffs = [(cutoff, SPARED), (part_cutoff, "part files spared (younger than 1h)")];
    let files = leftovers(s, layout, gate, PARTS_DIR, |r| r.parts, &cutoffs).await;
    if files.is_empty() {
        return Ok(());
    }
    // read after the listing: a part recorded since the run began is named. A named file is
    // neither an orphan nor spared (the files of uploads in progress were all "spared")
    let named = match s.backend {
        Backend::Local(ctx) => multipart::part_files(&ctx.shared.index)?,
        Backend::Online(m) => part_files_of_master(m, s.client).await?,
    };
    let unnamed = files.into_iter().filter(|f| !named.contains(&f.name)).collect();
    let orphans = spare_young(s, v, unnamed);
    delete_orphans(s, v, work, PART_ITEMS, orphans).await
}

/// The replicas of the parts of S3 uploads in progress, as their records name them: there,
/// of the part's size (`-deep`: its MD5) and, with `-repair`, copied again where not, by
/// the store (offline, the scrub) or the master (`-online`). A part's damage leaves its
/// upload a disk from losing it, as a key's does.
async fn part_replicas(s: &Setup<'_>, v: &mut Verifier<'_>) -> anyhow::Result<()> {
    let opts = multipart::CheckOpts { deep: s.opts.deep, repair: s.opts.repair, rate: s.opts.rate };
    let checked = match s.backend {
        Backend::Local(ctx) => {
            multipart::check_parts(ctx, opts).await.context("cannot read the S3 uploads in the index")?
        }
        Backend::Online(m) => m.check_parts(s.client, opts).await?,
    };
    for f in &checked.found {
        let kind = match f.damage {
            Damage::Missing => Kind::Missing,
            Damage::Size => Kind::Size,
            Damage::Corrupt => Kind::Corrupt,
        };
        v.confirm_part(kind, &format!("{} on {}", f.part, f.replica), f.repaired);
    }
    for failed in &checked.failed {
        let (name, why) = failed.split_once(": ").unwrap_or((failed, "failed"));
        s.progress.error(name, why);
    }
    Ok(())
}

/// A file in a `_tmp` or `_parts` folder.
struct Leftover {
    /// The replica name of its root (`host:port/svXX`).
    replica: String,
    server: String,
    path: String,
    name: String,
    /// The name of the first cutoff it is younger than, if any.
    young: Option<&'static str>,
}

/// What the summary calls a file younger than `-grace`.
pub(crate) const SPARED: &str = "spared (younger than -grace or written during the run)";

/// The files of folder `dir` in each root that `has` it, each with the first cutoff (Unix
/// seconds) of `cutoffs` it is younger than.
async fn leftovers(
    s: &Setup<'_>,
    layout: &Layout,
    gate: &Gate,
    dir: &str,
    has: fn(&Root) -> bool,
    cutoffs: &[(i64, &'static str)],
) -> Vec<Leftover> {
    let mut found = Vec::new();
    for r in layout.roots.iter().filter(|r| has(r)) {
        let server = &layout.volumes[r.server];
        let dir = format!("{}{dir}/", r.prefix);
        let listing = match fetch(s.client, s.topo, gate, server, &dir).await {
            Ok(l) => l,
            Err(f) => {
                s.progress.error(&format!("{server}{dir}"), &f.why);
                continue;
            }
        };
        let entries = match parse_listing(&listing.body) {
            Ok(e) => e,
            Err(e) => {
                s.progress.error(&format!("{server}{dir}"), &e.to_string());
                continue;
            }
        };
        for e in entries.iter().filter(|e| e.kind == "file") {
            let young = cutoffs.iter().find(|(cutoff, _)| e.mtime() > *cutoff).map(|(_, why)| *why);
            let (path, name) = (format!("{dir}{}", e.name), e.name.to_string());
            found.push(Leftover { replica: r.name.clone(), server: server.clone(), path, name, young });
        }
    }
    found
}

/// Counts the young ones of `files` as spared, under their cutoff's name; the others are
/// the ones older than the grace.
fn spare_young(s: &Setup<'_>, v: &mut Verifier<'_>, files: Vec<Leftover>) -> Vec<Leftover> {
    let (young, old): (Vec<Leftover>, Vec<Leftover>) = files.into_iter().partition(|f| f.young.is_some());
    for why in young.iter().filter_map(|f| f.young) {
        v.report.spared += 1;
        s.progress.note(why, 1);
    }
    old
}

/// Reports `orphans` (as items of `slot`) and, with `-repair`, deletes them.
async fn delete_orphans(
    s: &Setup<'_>,
    v: &mut Verifier<'_>,
    work: &Work<'_>,
    slot: usize,
    orphans: Vec<Leftover>,
) -> anyhow::Result<()> {
    let items: Vec<Item> = orphans
        .into_iter()
        .map(|o| Item {
            key: Box::default(),
            seen: None,
            problems: vec![Problem { kind: Kind::Orphan, replica: o.replica }],
            reads: 0,
            to_read: Vec::new(),
            checked: true,
            junk: Some((o.server, o.path)),
            held: Vec::new(),
        })
        .collect();
    let n = items.len();
    v.items.insert(slot, items);
    let mut queue: VecDeque<Job> = (0..n).filter_map(|i| v.next(slot, i)).collect();
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < s.opts.concurrency {
            let Some(job) = queue.pop_front() else { break };
            inflight.push(work.perform(job));
        }
        let Some(done) = inflight.next().await else { break };
        queue.extend(v.worked(slot, done)?);
    }
    v.items.remove(&slot);
    Ok(())
}
