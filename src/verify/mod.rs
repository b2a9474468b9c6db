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
mod work;

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{
    config::Config,
    index::{Index, State},
    placement::{server_of, TMP_DIR},
    progress::Progress,
    record::{now_ms, Record},
    store::{write, Ctx, Shared},
    volume::{self, Client, Topology},
    walk::{
        discover,
        volumes::{fetch, parse_listing},
        Consumer, Findings, Gate, Layout, Rep, Walk, Warnings, Worker as _,
    },
};
use judge::{judge, Judged, Kind, Problem, Rules, Seen, KINDS};
use records::{Pending, Shelf};
pub use work::{encode, Master};
use work::{Backend, Done, Fixed, Job, Throttle, Unfixed, Work};

/// A batch tool waits longer for a busy volume than the master's `-voltimeout`.
const MIN_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Things found shown one by one, per kind; the rest are counted.
const EXAMPLES: u32 = 5;
/// Items of the `_tmp` folders (the walk's shards are 0..SHARDS).
const TMP_ITEMS: usize = usize::MAX;

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
        match (n, self.repair) {
            (0, _) => format!("nothing wrong in {} keys{failed}", self.keys),
            (n, false) => format!("{n} problems ({}){failed}; mkv verify -repair fixes them", self.kinds()),
            (n, true) if self.fixed == n => format!("{n} problems ({}), all repaired{failed}", self.kinds()),
            (n, true) => {
                format!("{n} problems ({}), {} repaired, {} not{failed}", self.kinds(), self.fixed, n - self.fixed)
            }
        }
    }
}

/// `mkv verify`: true when nothing is wrong (or all of it was repaired).
pub fn run(cfg: Config, opts: Options) -> anyhow::Result<bool> {
    // io_uring where the kernel has it: the walk is many small requests
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .context("cannot start the runtime")?;
    let progress = Progress::new("verify", None);
    let report = match opts.online.clone() {
        Some(url) => rt.block_on(run_online(&cfg, &opts, &url, &progress))?,
        None => {
            let (shared, topo, _prober) = open_offline(cfg)?;
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

/// The index (refused while a master holds it) and the volumes, all up.
fn open_offline(cfg: Config) -> anyhow::Result<(Arc<Shared>, Topology, volume::Prober)> {
    let index = Index::open(&cfg.db).map_err(|e| {
        let hint =
            if e.contains("locked") { "; to verify while the master runs use -online http://host:port" } else { "" };
        anyhow::anyhow!("{e}{hint}")
    })?;
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
    let client = Client::new();
    let setup = Setup { cfg: &shared.cfg, opts, client: &client, topo, backend: &backend, progress, stop: &|| false };
    check_all(&setup).await
}

async fn run_online(cfg: &Config, opts: &Options, url: &str, progress: &Progress) -> anyhow::Result<Report> {
    let master = Master::new(url, cfg.admin_token.as_deref())?;
    let client = Client::new();
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
    let setup = Setup { cfg: &wcfg, opts, client: &client, topo: &topo, backend: &backend, progress, stop: &|| false };
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
}

/// One verify over everything: records, the walk, the `_tmp` folders.
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
    let gate = Gate::new();
    let layout = discover(s.client, s.topo, &gate, s.cfg).await?;
    let warnings = Warnings::new(p);
    let work = Work { client: s.client, topo: s.topo, backend: s.backend, throttle: Throttle::new(s.opts.rate) };
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
    };
    let mut walk = Walk::new(&layout, p, &warnings);
    walk.keep_junk = true;
    walk.run(s.client, s.topo, &gate, s.opts.concurrency, &mut v, &work).await?;
    tmp_files(s, &layout, &gate, &mut v, &work, cutoff).await?;
    Ok(v.report)
}

/// Shelves every record through the master's listings (`?list&records`, `?unlinked&records`).
async fn shelve_master(m: &Master, client: &Client, shelf: &mut Shelf) -> anyhow::Result<()> {
    for (list, state) in [("list", State::Live), ("unlinked", State::Unlinked)] {
        let mut start = String::new();
        loop {
            let target = format!("/?{list}&records&encoding=url&limit={}&start={start}", work::PAGE);
            let (status, body) = m.call(client, "GET", &target).await?;
            if status != 200 {
                bail!("listing records failed: the master answered {status}");
            }
            let page: work::Page = serde_json::from_slice(&body).context("bad listing from the master")?;
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
async fn pending_of_master(m: &Master, client: &Client) -> anyhow::Result<Pending> {
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
    let mut start = String::new();
    loop {
        let (status, body) = m.call(client, "GET", &format!("/?pending&encoding=url&start={start}")).await?;
        if status != 200 {
            bail!("listing replacements being written failed: the master answered {status}");
        }
        let page: PendingPage = serde_json::from_slice(&body).context("bad ?pending listing from the master")?;
        for e in page.keys {
            let mut key = Vec::new();
            crate::http::percent_decode(e.key.as_bytes(), &mut key)
                .map_err(|_| anyhow::anyhow!("bad key {}", e.key))?;
            p.ids.insert(e.id);
            p.by_key.insert(key.into_boxed_slice(), e.volumes);
        }
        if page.next.is_empty() {
            break;
        }
        start = page.next;
    }
    Ok(p)
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
    let mut old = Vec::new();
    for r in layout.roots.iter().filter(|r| r.tmp) {
        let server = &layout.volumes[r.server];
        let dir = format!("{}{TMP_DIR}/", r.prefix);
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
            if e.mtime() > cutoff {
                v.report.spared += 1;
                s.progress.note("spared (younger than -grace)", 1);
            } else {
                old.push((r.name.clone(), server.clone(), format!("{dir}{}", e.name), e.name.to_string()));
            }
        }
    }
    if old.is_empty() {
        return Ok(());
    }
    // asked again now: a replacement may have started since the run began
    let pending = match s.backend {
        Backend::Local(ctx) => Pending::of_index(&ctx.shared.index)?,
        Backend::Online(m) => pending_of_master(m, s.client).await?,
    };
    let mut jobs = Vec::new();
    let mut items = Vec::new();
    for (replica, server, path, id) in old {
        if pending.ids.contains(&id) || v.pending.ids.contains(&id) {
            continue;
        }
        let idx = items.len() as u32;
        items.push(Item {
            key: Box::default(),
            seen: None,
            problems: vec![Problem { kind: Kind::Orphan, replica }],
            reads: 0,
            to_read: Vec::new(),
            checked: true,
            junk: Some((server, path)),
        });
        jobs.push(idx as usize);
    }
    v.items.insert(TMP_ITEMS, items);
    let mut queue: std::collections::VecDeque<Job> = jobs.into_iter().filter_map(|i| v.next(TMP_ITEMS, i)).collect();
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < s.opts.concurrency {
            let Some(job) = queue.pop_front() else { break };
            inflight.push(work.perform(job));
        }
        let Some(done) = inflight.next().await else { break };
        queue.extend(v.worked(TMP_ITEMS, done)?);
    }
    v.items.remove(&TMP_ITEMS);
    Ok(())
}

/// Counts one off `n`; false when none was left.
fn take_one(n: &mut usize) -> bool {
    let had = *n > 0;
    *n = n.saturating_sub(1);
    had
}

/// A key (or a file no key owns) found wrong, or to be read, on its way through the jobs.
struct Item {
    key: Box<[u8]>,
    /// The record it was judged against.
    seen: Option<(State, Record)>,
    problems: Vec<Problem>,
    /// `-deep` reads not back yet.
    reads: usize,
    /// `-deep` reads to make.
    to_read: Vec<String>,
    /// Looked at again already.
    checked: bool,
    /// A file no key owns: its server and path.
    junk: Option<(String, String)>,
}

impl Item {
    /// How a line names the problem `p` of this item.
    fn name(&self, p: &Problem) -> String {
        match &self.junk {
            Some((server, path)) => format!("{server}{path}"),
            None => format!("{} on {}", self.key.escape_ascii(), p.replica),
        }
    }
}

/// The consumer of the walk: each shard judged against its records, and the work that
/// follows from it.
struct Verifier<'a> {
    opts: &'a Options,
    shelf: &'a Shelf,
    pending: &'a Pending,
    layout: &'a Layout,
    progress: &'a Progress,
    rules: Rules,
    /// Whether what was found is looked at again before it is reported (the index may
    /// change while the run reads it: online, or in the master's scrub). Repairs look for
    /// themselves, under the key's lock.
    recheck: bool,
    items: HashMap<usize, Vec<Item>>,
    report: Report,
    /// Examples shown so far, per kind.
    shown: [u32; 6],
    stop: &'a dyn Fn() -> bool,
}

impl Consumer for Verifier<'_> {
    type Job = Job;
    type Done = Done;

    fn listed(&mut self, s: usize, found: Findings) -> anyhow::Result<Vec<Job>> {
        let entries = self.shelf.take(s)?;
        let Findings { mut keys, mut markers, junk } = found;
        let mut items = Vec::new();
        let (mut live, mut unlinked) = (0, 0);
        for e in entries {
            if e.state == State::Live {
                live += 1;
            } else {
                unlinked += 1;
            }
            let files = self.files_of(keys.remove(&e.key).map(|f| f.reps), markers.remove(&e.key));
            let pending = self.pending.by_key.get(&e.key).map_or(&[][..], |v| &v[..]);
            let j = judge(Some((e.state, &e.rec)), pending, &files, &|r| self.walked(r), &self.rules);
            self.add(&mut items, e.key, Some((e.state, e.rec)), j);
        }
        self.progress.count("live", live);
        self.progress.count("unlinked", unlinked);
        self.report.keys += live + unlinked;
        // what is left has no record
        let mut rest: Vec<Box<[u8]>> = keys.keys().chain(markers.keys()).cloned().collect();
        rest.sort_unstable();
        rest.dedup();
        for key in rest {
            let files = self.files_of(keys.remove(&key).map(|f| f.reps), markers.remove(&key));
            let pending = self.pending.by_key.get(&key).map_or(&[][..], |v| &v[..]);
            let j = judge(None, pending, &files, &|r| self.walked(r), &self.rules);
            self.add(&mut items, key, None, j);
        }
        for j in junk {
            if j.mtime > self.rules.cutoff {
                self.spared(1);
                continue;
            }
            let root = &self.layout.roots[j.root as usize];
            items.push(Item {
                key: Box::default(),
                seen: None,
                problems: vec![Problem { kind: Kind::Orphan, replica: root.name.clone() }],
                reads: 0,
                to_read: Vec::new(),
                checked: true,
                junk: Some((self.layout.volumes[root.server].clone(), j.path)),
            });
        }
        let mut jobs = Vec::new();
        for (idx, item) in items.iter_mut().enumerate() {
            for replica in std::mem::take(&mut item.to_read) {
                jobs.push(Job::Read { item: idx as u32, key: item.key.clone(), replica });
            }
        }
        let waiting: Vec<usize> = (0..items.len()).filter(|&i| items[i].reads == 0).collect();
        self.items.insert(s, items);
        jobs.extend(waiting.into_iter().filter_map(|i| self.next(s, i)));
        Ok(jobs)
    }

    fn worked(&mut self, s: usize, done: Done) -> anyhow::Result<Vec<Job>> {
        let idx = match &done {
            Done::Read { item, .. }
            | Done::Checked { item, .. }
            | Done::Repaired { item, .. }
            | Done::Deleted { item, .. } => *item as usize,
        };
        let Some(item) = self.items.get_mut(&s).and_then(|items| items.get_mut(idx)) else {
            bail!("internal error: work done for an item never made");
        };
        match done {
            Done::Read { replica, result, .. } => {
                item.reads -= 1;
                match result {
                    Ok((md5, n)) => {
                        let bad =
                            item.seen.as_ref().is_some_and(|(_, r)| n != r.size || r.md5.is_some_and(|m| m != md5));
                        if bad {
                            item.problems.push(Problem { kind: Kind::Corrupt, replica });
                        }
                        self.progress.note("replicas read", 1);
                    }
                    Err(why) => {
                        let name = format!("{} on {replica}", item.key.escape_ascii());
                        self.progress.error(&name, &format!("cannot read it: {why}"));
                    }
                }
                if item.reads > 0 {
                    return Ok(Vec::new());
                }
            }
            Done::Checked { result, .. } => match result {
                Ok(still) => item.problems = still,
                Err(why) => {
                    let name = item.key.escape_ascii().to_string();
                    self.progress.error(&name, &format!("cannot look at it again: {why}"));
                    item.problems.clear();
                }
            },
            Done::Repaired { result, .. } => {
                let problems = std::mem::take(&mut item.problems);
                self.repaired(s, idx, problems, result);
                return Ok(Vec::new());
            }
            Done::Deleted { result, .. } => {
                let problems = std::mem::take(&mut item.problems);
                match result {
                    Ok(true) => self.confirm(s, idx, &problems, true),
                    Ok(false) => {}
                    Err(why) => {
                        self.confirm(s, idx, &problems, false);
                        let name = self.items[&s][idx].name(&problems[0]);
                        self.progress.error(&name, &why);
                    }
                }
                return Ok(Vec::new());
            }
        }
        Ok(self.next(s, idx).into_iter().collect())
    }

    fn completed(&mut self, s: usize) -> anyhow::Result<()> {
        self.items.remove(&s);
        Ok(())
    }

    fn stopped(&self) -> bool {
        (self.stop)()
    }
}

impl Verifier<'_> {
    /// Whether the volume of `replica` is one the walk lists.
    fn walked(&self, replica: &str) -> bool {
        self.layout.volumes.iter().any(|v| v == server_of(replica))
    }

    /// What each replica folder holds of a key, by replica name.
    fn files_of(&self, values: Option<Vec<Rep>>, markers: Option<Vec<Rep>>) -> Vec<(String, Seen)> {
        let mut out: Vec<(u16, Seen)> = Vec::new();
        for r in values.unwrap_or_default() {
            out.push((r.root, Seen { value: Some((r.size, r.mtime)), marker: None }));
        }
        for m in markers.unwrap_or_default() {
            match out.iter_mut().find(|(root, _)| *root == m.root) {
                Some((_, s)) => s.marker = Some(m.mtime),
                None => out.push((m.root, Seen { value: None, marker: Some(m.mtime) })),
            }
        }
        out.into_iter().map(|(root, s)| (self.layout.roots[root as usize].name.clone(), s)).collect()
    }

    fn spared(&mut self, n: u64) {
        if n > 0 {
            self.report.spared += n;
            self.progress.note("spared (younger than -grace)", n);
        }
    }

    /// A judged key: an item when there is something wrong, or something to read.
    fn add(&mut self, items: &mut Vec<Item>, key: Box<[u8]>, seen: Option<(State, Record)>, j: Judged) {
        self.spared(j.spared);
        if j.unchecked > 0 {
            self.progress.note("on volumes not walked", j.unchecked);
        }
        if j.problems.is_empty() && j.reads.is_empty() {
            return;
        }
        let reads = j.reads.len();
        items.push(Item { key, seen, problems: j.problems, reads, to_read: j.reads, checked: false, junk: None });
    }

    /// What item `idx` of shard `s` needs next, now that its reads are back: a look again,
    /// a repair, or nothing more (reported).
    fn next(&mut self, s: usize, idx: usize) -> Option<Job> {
        let repair = self.opts.repair;
        let recheck = self.recheck;
        let item = self.items.get_mut(&s)?.get_mut(idx)?;
        if item.problems.is_empty() {
            return None;
        }
        let item_no = idx as u32;
        if let Some((server, path)) = &item.junk {
            if repair {
                return Some(Job::Delete { item: item_no, server: server.clone(), path: path.clone() });
            }
        } else {
            let corrupt = item.problems.iter().any(|p| p.kind == Kind::Corrupt);
            // a repair looks for itself under the key's lock; a read against a record that
            // changed since is no proof, so corrupt replicas are looked at first
            if recheck && !item.checked && (!repair || corrupt) {
                item.checked = true;
                let (key, seen, problems) = (item.key.clone(), item.seen.clone(), item.problems.clone());
                return Some(Job::Check { item: item_no, key, seen, problems });
            }
            if repair {
                let of = |f: fn(Kind) -> bool| -> Vec<String> {
                    let mut v: Vec<String> =
                        item.problems.iter().filter(|p| f(p.kind)).map(|p| p.replica.clone()).collect();
                    v.dedup();
                    v
                };
                let suspects = of(|k| k == Kind::Corrupt);
                let orphans = of(Kind::removes);
                let markers = item.problems.iter().any(|p| p.kind == Kind::Marker);
                return Some(Job::Repair { item: item_no, key: item.key.clone(), suspects, orphans, markers });
            }
        }
        let problems = std::mem::take(&mut item.problems);
        self.confirm(s, idx, &problems, false);
        None
    }

    /// What a repair's answer says of each problem: fixed, gone by itself (the key was
    /// written or deleted meanwhile: not damage), or still there.
    fn repaired(&mut self, s: usize, idx: usize, problems: Vec<Problem>, result: Result<Fixed, Unfixed>) {
        let key = self.items[&s][idx].key.escape_ascii().to_string();
        let f = match result {
            Ok(f) => f,
            Err(Unfixed::Gone) => return,
            Err(Unfixed::NoGoodReplica) => {
                self.confirm(s, idx, &problems, false);
                self.progress.error(&key, "no replica holds its value (size and MD5): left as it is");
                return;
            }
            Err(Unfixed::Failed(why)) => {
                self.confirm(s, idx, &problems, false);
                self.progress.error(&key, &format!("not repaired: {why}"));
                return;
            }
        };
        let (mut markers, mut orphans) = (f.markers, f.orphans);
        let (mut fixed, mut left) = (Vec::new(), Vec::new());
        for p in problems {
            let done = match p.kind {
                k if k.restores() => {
                    if f.skipped.contains(&p.replica) {
                        left.push(p);
                        continue;
                    }
                    f.restored.contains(&p.replica)
                }
                Kind::Marker => take_one(&mut markers),
                _ => take_one(&mut orphans),
            };
            if done {
                fixed.push(p);
            }
        }
        self.confirm(s, idx, &fixed, true);
        if !left.is_empty() {
            self.confirm(s, idx, &left, false);
            let on: Vec<&str> = left.iter().map(|p| p.replica.as_str()).collect();
            self.progress.error(&key, &format!("not repaired on {}: the volume did not answer", on.join(",")));
        }
    }

    /// Problems that are real: counted per kind, the first few of each shown.
    fn confirm(&mut self, s: usize, idx: usize, problems: &[Problem], fixed: bool) {
        for p in problems {
            let k = p.kind.index();
            self.report.found[k] += 1;
            self.progress.note(p.kind.name(), 1);
            if self.opts.repair {
                self.progress.note(if fixed { "repaired" } else { "not repaired" }, 1);
            }
            if fixed {
                self.report.fixed += 1;
            }
            self.shown[k] += 1;
            if self.shown[k] <= EXAMPLES {
                let name = self.items[&s][idx].name(p);
                let done = if fixed { " (repaired)" } else { "" };
                self.progress.println(&format!("{}: {}: {name}{done}", self.progress.label(), p.kind.name()));
            } else if self.shown[k] == EXAMPLES + 1 {
                let more = format!("{}: more {} are only counted", self.progress.label(), p.kind.name());
                self.progress.println(&more);
            }
        }
    }
}
