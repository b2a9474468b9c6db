//! The master: one monoio runtime per core, each accepting on its own SO_REUSEPORT
//! listener and serving its connections start to finish, sharing only the index and health.

mod admin;
mod cache;
mod conn;
mod error;
mod handlers;
mod list;
mod signals;

use std::{
    cell::RefCell,
    net::SocketAddr,
    os::fd::AsRawFd,
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use futures_util::FutureExt as _;
use monoio::{
    blocking::{BlockingTask, ThreadPool},
    net::TcpListener,
    IoUringDriver, LegacyDriver, RuntimeBuilder,
};
use socket2::{Domain, Socket, Type};

pub use crate::http::Reply;
pub use error::ApiError;

use crate::{
    config::Config,
    http::{watch::TICK, Watch},
    index::Index,
    store::{relocate, write, Ctx, Shared},
};

/// How often the index is looked at for replacements left half written (a failed move
/// leaves one at any time, not only a crash): a key being moved is unreadable through S3
/// until it is settled, so one left by a volume that went down is settled this soon after
/// the volume is back. The look is one seek in a family that is almost always empty.
const RECOVER_EVERY: Duration = Duration::from_secs(1);
/// Unlinked records read at once (one RocksDB scan, then the thread serves again) while
/// the master looks for failed PUTs a restart forgot.
const ADOPT_PAGE: usize = 4096;
/// A replacement that cannot be settled yet (or part files not deleted) is reported at most
/// this often.
const RECOVER_WARN_EVERY: Duration = Duration::from_secs(30);
/// How long a stop waits for a scrub in progress to see it and end.
const SCRUB_END: Duration = Duration::from_secs(5);
/// Accept backlog of each listener.
const BACKLOG: i32 = 4096;
/// Open files kept for the volume side, RocksDB and the admin port when `-max-conns` is
/// derived from the open-files limit: client connections can never take these.
const RESERVED_FDS: u64 = 1024;
/// Admin-port connections open at most. They are counted apart from `-max-conns` (and come
/// out of [`RESERVED_FDS`]), so that a full API port still answers `/health` and `/metrics`.
/// (16 were taken by as many idle keep-alive clients, and `/health` went unanswered.)
const ADMIN_MAX_CONNS: usize = 64;
/// How long an admin connection stays open between requests (the API port's is
/// `-idle-timeout`): scrapers and health checks come every few seconds at most, and idle
/// ones must not hold the port's few connections for a minute.
pub const ADMIN_IDLE: Duration = Duration::from_secs(5);

/// One runtime thread's state: the store's per-thread view and the GET answer cache.
pub struct Local {
    pub ctx: Ctx,
    pub cache: RefCell<cache::Cache>,
}

/// Which requests a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Api,
    Admin,
}

impl Port {
    /// This port's count of open connections, and the most it may have.
    fn conns(self, sh: &Shared) -> (&AtomicUsize, usize) {
        match self {
            Port::Api => (&sh.conns, sh.cfg.max_conns),
            Port::Admin => (&sh.admin_conns, ADMIN_MAX_CONNS),
        }
    }
}

pub fn run(mut cfg: Config) -> anyhow::Result<()> {
    let nofile = raise_nofile();
    if cfg.max_conns == 0 {
        cfg.max_conns = nofile.saturating_sub(RESERVED_FDS.max(nofile / 4)).max(64) as usize;
    }
    // before any thread starts, so every thread inherits the mask and only the signal
    // thread sees SIGTERM/SIGINT
    let signals = signals::block()?;
    let addr = cfg.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], cfg.port)));
    // a busy port is said before the index is opened: a master that cannot start leaves no
    // new empty index behind (which a verify would then take for one with nothing in it)
    check_free(addr)?;
    let admin = admin_listener(&cfg, addr.port())?;
    let index = Index::open_with_cache(&cfg.db, cfg.index_cache_mb).map_err(anyhow::Error::msg)?;
    let listeners = listen(addr, cfg.threads)?;
    let bound = listeners[0].local_addr()?;
    // copies of the index (snapshots) carry it: offline tools given one know it is not the whole truth
    crate::served::record(&index, &crate::served::Master::me(bound, &cfg.volumes)).map_err(anyhow::Error::msg)?;
    // before any request, so that no upload of this run is taken for one a crash cut
    match crate::s3::multipart::adopt_cut_parts(&index) {
        Ok(0) => {}
        Ok(n) => eprintln!("mkv: {n} S3 part upload(s) were cut by the last stop; deleting their files"),
        Err(e) => bail!("cannot read the index's S3 uploads: {e}"),
    }
    let uring = monoio::utils::detect_uring();
    let shared = Arc::new(Shared::new(cfg, index, true)?);
    eprintln!(
        "mkv: listening on {bound} ({} threads, {}, {} volumes, {} replicas, index {})",
        shared.cfg.threads,
        if uring { "io_uring" } else { "epoll" },
        shared.cfg.volumes.len(),
        shared.cfg.replicas,
        shared.cfg.db.display()
    );
    if let Some(a) = &admin {
        eprintln!("mkv: admin on {} (/metrics, /health, status page at /)", a.local_addr()?);
    }
    signals::spawn(signals, shared.clone())?;
    let scrubber = crate::verify::scrub::start(shared.clone())?;
    // CPU-heavy work that would stall a runtime thread (the MD5 of a large body) runs here
    let pool = Pool(threadpool::Builder::new().num_threads(shared.cfg.threads).thread_name("mkv-pool".into()).build());
    let mut admin = admin;
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let shared = shared.clone();
            let pool = pool.clone();
            let admin = if i == 0 { admin.take() } else { None };
            let first = i == 0;
            std::thread::Builder::new()
                .name(format!("mkv-{i}"))
                .spawn(move || run_thread(shared, l, admin, first, uring, pool))
        })
        .collect::<Result<_, _>>()?;
    let mut left = Left::default();
    for t in threads {
        match t.join() {
            Ok(r) => {
                let l = r?;
                left.cut += l.cut;
                left.moves += l.moves;
            }
            Err(_) => bail!("a server thread panicked"),
        }
    }
    // said once for the whole server (each thread drains its own connections and moves)
    if left.cut > 0 {
        // closed with the runtimes: a write cut off leaves no trace (SPEC.md's failed PUT)
        eprintln!("mkv: -drain is over: {} connection(s) still in a request are cut off", left.cut);
    }
    if left.moves > 0 {
        eprintln!(
            "mkv: stopping with the old replicas of {} moved key(s) not deleted (-drain is over): their \
             records still name them; a rerun of the rebalance deletes them",
            left.moves
        );
    }
    if let Some(s) = scrubber {
        s.wait(SCRUB_END);
    }
    // a stop: what the threads acknowledged is in the WAL; flushing it now makes the next
    // start skip the WAL replay
    shared.index.flush().map_err(|e| anyhow::anyhow!("cannot flush the index: {e}"))?;
    eprintln!("mkv: stopped");
    Ok(())
}

/// Raises the soft open-files limit to the hard one (as nginx's `worker_rlimit_nofile`
/// does): at the common soft limit of 1024, a thousand idle clients would leave no
/// descriptor for the volumes. Returns the limit in force.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

/// Whether `addr` can be listened on, by a plain bind (port 0 always can).
fn check_free(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => Some("is another server running there?"),
            std::io::ErrorKind::AddrNotAvailable => Some("no interface of this host has that address"),
            _ => None,
        };
        match why {
            Some(why) => anyhow::anyhow!("cannot listen on {addr}: {e} ({why})"),
            None => anyhow::anyhow!("cannot listen on {addr}: {e}"),
        }
    })
}

/// Binds `n` listeners on one address with SO_REUSEPORT, so the kernel spreads connections.
/// Port 0 takes a free port. Because SO_REUSEPORT would let a second server share a port
/// silently, a busy port is detected first with a plain bind.
fn listen(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    check_free(addr)?;
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let l = reuseport_listener(addr).with_context(|| format!("cannot listen on {addr}"))?;
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// The admin listener: `-admin ADDR`, off with `-admin ''`, by default `127.0.0.1:<port+1000>`
/// (`:0` when the API port is chosen by the system). A taken default is a warning; an
/// explicit address that cannot be bound is an error.
fn admin_listener(cfg: &Config, api_port: u16) -> anyhow::Result<Option<std::net::TcpListener>> {
    let (addr, explicit) = match cfg.admin {
        Some(None) => return Ok(None),
        Some(Some(a)) => (a, true),
        None => {
            let port = if api_port == 0 { Some(0) } else { api_port.checked_add(1000) };
            let Some(port) = port else {
                eprintln!("mkv: warning: no default admin port above {api_port}; running without one (see -admin)");
                return Ok(None);
            };
            (SocketAddr::from(([127, 0, 0, 1], port)), false)
        }
    };
    let bound = std::net::TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|_| l));
    match bound {
        Ok(l) => Ok(Some(l)),
        Err(e) if !explicit => {
            eprintln!("mkv: warning: cannot listen on the default admin address {addr} ({e}); running without it");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("cannot listen on -admin {addr}: {e}")),
    }
}

/// What a thread's drain left undone when `-drain` ran out.
#[derive(Default)]
struct Left {
    /// Connections still in a request.
    cut: usize,
    /// Moved keys whose old replicas are not deleted.
    moves: usize,
}

fn run_thread(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    admin: Option<std::net::TcpListener>,
    first: bool,
    uring: bool,
    pool: Pool,
) -> anyhow::Result<Left> {
    if uring {
        // measured: cooperative task running and a single submitter save ~10-25% per request
        let mut urb = io_uring::IoUring::builder();
        urb.setup_coop_taskrun().setup_single_issuer();
        let rt = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(1024)
            .uring_builder(urb)
            .enable_timer()
            .attach_thread_pool(Box::new(pool.clone()))
            .build();
        match rt {
            Ok(mut rt) => return rt.block_on(serve(shared, listener, admin, first)),
            Err(e) => eprintln!("mkv: io_uring runtime failed ({e}); falling back to epoll"),
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new().enable_timer().attach_thread_pool(Box::new(pool)).build()?;
    rt.block_on(serve(shared, listener, admin, first))
}

/// The threads every runtime hands `spawn_blocking` work to, named so profiles tell them apart.
#[derive(Clone)]
struct Pool(threadpool::ThreadPool);

impl ThreadPool for Pool {
    fn schedule_task(&self, task: BlockingTask) {
        self.0.execute(move || task.run());
    }
}

/// One thread's server; the `first` also settles, in the background, what failed writes
/// and crashes left half done ([`recover`]).
async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    admin: Option<std::net::TcpListener>,
    first: bool,
) -> anyhow::Result<Left> {
    let api = Rc::new(TcpListener::from_std(listener)?);
    let cache = RefCell::new(cache::Cache::new(shared.cfg.cache_keys));
    let local = Rc::new(Local { ctx: Ctx::serving(shared), cache });
    let watch = Watch::new();
    let admin = match admin {
        Some(a) => {
            let a = Rc::new(TcpListener::from_std(a)?);
            monoio::spawn(accept_loop(local.clone(), watch.clone(), a.clone(), Port::Admin));
            Some(a)
        }
        None => None,
    };
    if first {
        // with or without an admin port (it ran only beside one: `-admin ''` left crashes'
        // half-written replacements and ended uploads' part files for good)
        let l = local.clone();
        monoio::spawn(async move { recover(&l.ctx).await });
        // beside recover, not before it: a crash's half-moved replacements are settled at
        // once however many unlinked keys there are to look through
        let l = local.clone();
        monoio::spawn(async move { adopt_forgotten_puts(&l.ctx).await });
    }
    let listeners = Listeners { api: api.clone(), admin };
    monoio::spawn({
        let local = local.clone();
        async move { relocate::retire_loop(&local.ctx).await }
    });
    monoio::spawn(ticker(local.clone(), watch.clone(), listeners.clone()));
    accept_loop(local.clone(), watch.clone(), api, Port::Api).await;
    // the API loop ends on a stop; whatever ended it, this thread's API port takes no one more
    listeners.shut_api();
    // stopping: the connections finish what they are doing, and the old replicas of keys
    // moved a moment ago are deleted, up to -drain; the thread with the admin port keeps it
    // open until every thread's are done, so that /health answers 503 (and /metrics
    // answers) through the whole drain
    let sh = &local.ctx.shared;
    let admin_here = listeners.admin.is_some();
    let busy = || watch.len() > 0 || local.ctx.retiring.left() > 0;
    let others = || sh.conns.load(Ordering::Relaxed) > 0 || sh.moves.pending.load(Ordering::Relaxed) > 0;
    while (busy() || admin_here && others()) && !sh.drain_over() {
        monoio::time::sleep(TICK).await;
    }
    let left = Left { cut: watch.len(), moves: local.ctx.retiring.left() };
    listeners.shut_all();
    Ok(left)
}

/// One thread's listeners, shared by its accept loops and its ticker. They stay open (shut,
/// not closed) until the process exits: a close is queued on the ring and would never be
/// submitted if this thread's runtime ends first (a task still waiting on an accept keeps
/// the ring alive and unflushed), and a closed descriptor's number could be reused by
/// another thread's socket before a later shutdown by number reached it.
///
/// Shutting one stops it taking connections at once: those waiting in the backlog are
/// reset, new ones refused, a pending accept fails (which ends its loop). Repeating it is
/// harmless.
#[derive(Clone)]
struct Listeners {
    api: Rc<TcpListener>,
    admin: Option<Rc<TcpListener>>,
}

impl Listeners {
    /// At a stop: clients go elsewhere, the operator's port stays.
    fn shut_api(&self) {
        shut(self.api.as_raw_fd());
    }

    /// At the end of the drain.
    fn shut_all(&self) {
        self.shut_api();
        if let Some(a) = &self.admin {
            shut(a.as_raw_fd());
        }
    }
}

/// `shutdown(2)` both ways, synchronously: unlike a close on the ring, it takes effect before
/// this call returns.
fn shut(fd: std::os::fd::RawFd) {
    // SAFETY: `fd` is a socket this thread owns and keeps open; shutdown(2) neither frees
    // nor reuses it.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Failed PUTs a restart forgot (a crash or the end of `-drain` cut them): found a page at
/// a time between this thread's requests and handed to the failed-PUT sweep of
/// [`recover`], which ends them.
async fn adopt_forgotten_puts(ctx: &Ctx) {
    let mut after: Option<Vec<u8>> = None;
    while !ctx.shared.stopping() {
        match crate::store::remove::adopt_forgotten(ctx, after.as_deref(), ADOPT_PAGE) {
            Ok(Some(last)) => after = Some(last),
            Ok(None) => return,
            Err(e) => {
                eprintln!("mkv: warning: could not look for failed PUTs a restart forgot ({e})");
                return;
            }
        }
        list::yield_now().await;
    }
}

/// Rolls back or forward the replacements a crash or a failed move left half written (a
/// volume down at the move, a key busy), and deletes part files of ended S3 uploads a
/// volume down kept, for as long as the server runs.
async fn recover(ctx: &Ctx) {
    // a failure that lasts (a volume down) is said at most every RECOVER_WARN_EVERY
    let mut warned: Option<Instant> = None;
    let mut warn = |what: &str, e: &dyn std::fmt::Display| {
        if warned.is_none_or(|t| t.elapsed() >= RECOVER_WARN_EVERY) {
            warned = Some(Instant::now());
            eprintln!("mkv: warning: could not {what} yet ({e}); retrying");
        }
    };
    while !ctx.shared.stopping() {
        // part files of ended S3 uploads that a volume down kept
        match crate::s3::multipart::sweep(ctx).await {
            Ok(0) => {}
            Ok(n) => eprintln!("mkv: deleted the files of {n} part(s) of ended S3 uploads"),
            Err(e) => warn("sweep ended S3 uploads' part files", &e),
        }
        // failed PUTs and DELETEs (S3's, and natives' a restart adopted) whose files a volume down kept
        let (n, e) = crate::store::remove::finish(ctx).await;
        if n > 0 {
            eprintln!("mkv: deleted the files of {n} failed PUT(s) or DELETE(s) that a volume down had kept");
        }
        if let Some(e) = e {
            warn("delete the files of failed PUTs and DELETEs", &e);
        }
        // unlink markers failed UNLINKs left beside live keys
        let (n, e) = crate::store::remove::unmark(ctx).await;
        if n > 0 {
            eprintln!("mkv: deleted the unlink markers {n} failed UNLINK(s) had left beside live keys");
        }
        if let Some(e) = e {
            warn("delete the unlink markers of failed UNLINKs", &e);
        }
        let left = ctx.shared.index.pending_keys(b"", 1).map(|k| !k.is_empty()).unwrap_or(true);
        if left {
            match write::recover(ctx).await {
                Ok(0) => {}
                Ok(n) => eprintln!("mkv: settled {n} replacement(s) a crash or a failed move left half written"),
                Err(e) => warn("settle half-written replacements", &e),
            }
        }
        monoio::time::sleep(RECOVER_EVERY).await;
    }
}

async fn accept_loop(local: Rc<Local>, watch: Rc<Watch>, listener: Rc<TcpListener>, port: Port) {
    let sh = &local.ctx.shared;
    let (open, max) = port.conns(sh);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if sh.stopping() && port == Port::Api {
                    // taken before this thread's ticker shut the port: closed at once, and
                    // the port with it, not left to queued closes (see `Listeners`)
                    shut(stream.as_raw_fd());
                    shut(listener.as_raw_fd());
                    break;
                }
                // over the limit: closed at once, so the descriptors kept for the volumes
                // and the index stay free; the admin port closes its connection idle longest
                // instead (/health must answer whatever its idle clients do), which leaves
                // within a tick, so it is over by the few being closed at most
                if open.fetch_add(1, Ordering::Relaxed) >= max && !(port == Port::Admin && watch.make_room()) {
                    open.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                let (local, watch) = (local.clone(), watch.clone());
                monoio::spawn(async move {
                    let m = &local.ctx.metrics;
                    m.connections.fetch_add(1, Ordering::Relaxed);
                    // a bug met by one connection closes it, not the thread and every other
                    // connection on it (locks and buffers are released as it unwinds)
                    let served = AssertUnwindSafe(conn::serve(&local, &watch, stream, peer, port)).catch_unwind();
                    if served.await.is_err() {
                        eprintln!("mkv: bug: a connection's task panicked (above); it was closed, the rest go on");
                    }
                    m.connections.fetch_sub(1, Ordering::Relaxed);
                    port.conns(&local.ctx.shared).0.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(_) if sh.stopping() => break,
            Err(e) => {
                // out of file descriptors and the like: say so, breathe, keep serving
                eprintln!("mkv: accept: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every [`TICK`]: fires the connections' passed deadlines; on a stop, shuts the API listener
/// (a pending accept fails) and drains the connections.
async fn ticker(local: Rc<Local>, watch: Rc<Watch>, listeners: Listeners) {
    let mut stopping = false;
    loop {
        monoio::time::sleep(TICK).await;
        watch.tick();
        if local.ctx.shared.stopping() && !stopping {
            stopping = true;
            listeners.shut_api();
            watch.drain();
        }
    }
}
