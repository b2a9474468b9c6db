//! The master: one monoio runtime per core, each accepting on its own SO_REUSEPORT
//! listener and serving its connections start to finish, sharing only the index and health.

mod cache;
mod conn;
mod error;
mod handlers;
mod locks;

use std::{
    cell::RefCell,
    net::SocketAddr,
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context as _};
use monoio::{
    blocking::{BlockingTask, ThreadPool},
    net::TcpListener,
    IoUringDriver, LegacyDriver, RuntimeBuilder,
};
use socket2::{Domain, Socket, Type};

pub use error::ApiError;

use crate::{
    config::Config,
    index::Index,
    volume::{self, Topology},
};

/// How often each volume is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Index setting: the volume list the last rebalance (online or offline) placed keys on.
pub const REBALANCED_TO: &str = "rebalanced-to";
/// Accept backlog of each listener.
const BACKLOG: i32 = 4096;

/// What every thread shares.
pub struct Shared {
    pub cfg: Config,
    pub index: Index,
    pub locks: locks::KeyLocks,
    /// The volume list in force; replaced whole by an online volume change.
    topo: Mutex<Arc<Topology>>,
    /// Bumped after each change, so threads refresh their copy with one relaxed load.
    topo_gen: AtomicU64,
}

impl Shared {
    /// The shared state over an open index; probes the volumes once and starts their probers.
    pub fn new(cfg: Config, index: Index) -> Shared {
        let topo = Topology::new(&cfg.volumes, cfg.replicas, cfg.subvolumes, cfg.voltimeout, None);
        for (name, why) in volume::probe_all(topo.all(), cfg.voltimeout) {
            eprintln!("mkv: warning: volume {name} is unreachable ({why}); treating it as down until it answers");
        }
        volume::spawn_probes(topo.all(), PROBE_INTERVAL, cfg.voltimeout);
        if let Ok(Some(v)) = index.meta(REBALANCED_TO) {
            let online = String::from_utf8_lossy(&v);
            if online != cfg.volumes.join(",") {
                eprintln!(
                    "mkv: warning: this index was last rebalanced to -volumes {online}, but -volumes is {}; \
                     using -volumes (keys placed by the other list show Key-Balance: unbalanced)",
                    cfg.volumes.join(",")
                );
            }
        }
        Shared {
            locks: locks::KeyLocks::new(cfg.threads * 64),
            cfg,
            index,
            topo: Mutex::new(Arc::new(topo)),
            topo_gen: AtomicU64::new(0),
        }
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topo.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Switches placement to `volumes` (online rebalance). Records keep pointing at their
    /// replicas, so GETs go on; new PUTs land on the new list; REBALANCE moves old keys.
    pub fn set_volumes(&self, volumes: &[String], replicas: usize) -> Result<(), String> {
        let mut check = self.cfg.clone();
        check.volumes = volumes.to_vec();
        check.replicas = replicas;
        check.validate()?;
        let mut slot = self.topo.lock().unwrap_or_else(|e| e.into_inner());
        let next = Topology::new(volumes, replicas, self.cfg.subvolumes, self.cfg.voltimeout, Some(&slot));
        let fresh: Vec<_> = next.all().filter(|v| slot.volume(&v.name).is_none()).cloned().collect();
        volume::probe_all(fresh.iter(), self.cfg.voltimeout);
        volume::spawn_probes(fresh.iter(), PROBE_INTERVAL, self.cfg.voltimeout);
        if let Err(e) = self.index.set_meta(REBALANCED_TO, volumes.join(",").as_bytes()) {
            return Err(format!("cannot record the volume list: {e}"));
        }
        *slot = Arc::new(next);
        self.topo_gen.fetch_add(1, Ordering::Release);
        eprintln!("mkv: volumes are now {} ({} replicas)", volumes.join(","), replicas);
        Ok(())
    }
}

/// One thread's view: the shared state plus its own volume connection pools.
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub client: volume::Client,
    topo: RefCell<(u64, Rc<Topology>)>,
    pub cache: RefCell<cache::Cache>,
}

impl Ctx {
    pub fn new(shared: Arc<Shared>) -> Ctx {
        let topo = RefCell::new((shared.topo_gen.load(Ordering::Acquire), Rc::new((*shared.topology()).clone())));
        let cache = RefCell::new(cache::Cache::new(shared.cfg.cache_keys));
        Ctx { shared, client: volume::Client::new(), topo, cache }
    }

    /// This thread's copy of the topology, refreshed when it changed.
    pub fn topo(&self) -> Rc<Topology> {
        self.topo_gen().1
    }

    /// [`Ctx::topo`] with its generation (bumped by each volume change).
    pub fn topo_gen(&self) -> (u64, Rc<Topology>) {
        let gen = self.shared.topo_gen.load(Ordering::Acquire);
        let mut cached = self.topo.borrow_mut();
        if cached.0 != gen {
            *cached = (gen, Rc::new((*self.shared.topology()).clone()));
        }
        (cached.0, cached.1.clone())
    }
}

pub fn run(cfg: Config) -> anyhow::Result<()> {
    let index = Index::open(&cfg.db).map_err(anyhow::Error::msg)?;
    let listeners = listen(cfg.port, cfg.threads)?;
    let port = listeners[0].local_addr()?.port();
    let uring = monoio::utils::detect_uring();
    let shared = Arc::new(Shared::new(cfg, index));
    eprintln!(
        "mkv: listening on 0.0.0.0:{port} ({} threads, {}, {} volumes, {} replicas, index {})",
        shared.cfg.threads,
        if uring { "io_uring" } else { "epoll" },
        shared.cfg.volumes.len(),
        shared.cfg.replicas,
        shared.cfg.db.display()
    );
    // CPU-heavy work that would stall a runtime thread (the MD5 of a large body) runs here
    let pool = Pool(threadpool::Builder::new().num_threads(shared.cfg.threads).thread_name("mkv-pool".into()).build());
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let shared = shared.clone();
            let pool = pool.clone();
            std::thread::Builder::new().name(format!("mkv-{i}")).spawn(move || run_thread(shared, l, uring, pool))
        })
        .collect::<Result<_, _>>()?;
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => bail!("a server thread panicked"),
        }
    }
    Ok(())
}

/// Binds `n` listeners on one port with SO_REUSEPORT, so the kernel spreads connections.
/// Port 0 takes a free port. Because SO_REUSEPORT would let a second server share a port
/// silently, a busy port is detected first with a plain bind.
fn listen(port: u16, n: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    if port != 0 {
        std::net::TcpListener::bind(("0.0.0.0", port))
            .with_context(|| format!("cannot listen on port {port} (is another server running there?)"))?;
    }
    let mut out = Vec::with_capacity(n);
    let mut port = port;
    for _ in 0..n {
        let l = reuseport_listener(port).with_context(|| format!("cannot listen on port {port}"))?;
        port = l.local_addr()?.port();
        out.push(l);
    }
    Ok(out)
}

fn reuseport_listener(port: u16) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

fn run_thread(shared: Arc<Shared>, listener: std::net::TcpListener, uring: bool, pool: Pool) -> anyhow::Result<()> {
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
            Ok(mut rt) => return rt.block_on(serve(shared, listener)),
            Err(e) => eprintln!("mkv: io_uring runtime failed ({e}); falling back to epoll"),
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new().enable_timer().attach_thread_pool(Box::new(pool)).build()?;
    rt.block_on(serve(shared, listener))
}

/// The threads every runtime hands `spawn_blocking` work to, named so profiles tell them apart.
#[derive(Clone)]
struct Pool(threadpool::ThreadPool);

impl ThreadPool for Pool {
    fn schedule_task(&self, task: BlockingTask) {
        self.0.execute(move || task.run());
    }
}

async fn serve(shared: Arc<Shared>, listener: std::net::TcpListener) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let ctx = Rc::new(Ctx::new(shared));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                monoio::spawn(async move { conn::serve(&ctx, stream).await });
            }
            Err(e) => {
                // out of file descriptors and the like: say so, breathe, keep serving
                eprintln!("mkv: accept: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
