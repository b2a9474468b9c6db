//! The operations on keys that every front end speaks (native API, S3, batch tools): the
//! index, the volumes, per-key locks and the volume list, shared and per thread.
//!
//! Nothing here knows HTTP requests: bytes come in through a [`write::Source`], errors go
//! out as [`Error`], and each front end maps them to its own answers.

mod durable;
mod error;
mod locks;
pub mod read;
pub mod relocate;
pub mod remove;
pub mod repair;
pub mod write;

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub use error::Error;
pub use locks::KeyGuard;

use crate::{
    config::Config,
    index::Index,
    metrics::{self, Registry},
    volume::{self, Prober, Topology},
};

/// How often each volume is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Index setting: the volume list the last rebalance (online or offline) placed keys on.
pub const REBALANCED_TO: &str = "rebalanced-to";
/// Index setting: the replica count it placed them with.
pub const REBALANCED_REPLICAS: &str = "rebalanced-replicas";

/// What every thread shares.
pub struct Shared {
    pub cfg: Config,
    pub index: Arc<Index>,
    /// `-sync`: the fsync thread writes wait for.
    syncer: Option<Arc<durable::Syncer>>,
    pub locks: locks::KeyLocks,
    pub metrics: Registry,
    /// The volume list in force; replaced whole by an online volume change.
    topo: Mutex<Arc<Topology>>,
    /// Bumped after each change, so threads refresh their copy with one relaxed load.
    topo_gen: AtomicU64,
    prober: Option<Prober>,
    /// Client connections open (all threads) and the most allowed.
    pub conns: AtomicUsize,
    /// Admin-port connections open (counted apart, so a full API port still answers there).
    pub admin_conns: AtomicUsize,
    /// Set by SIGTERM/SIGINT: stop accepting, finish what is in flight, exit.
    stop: OnceLock<Instant>,
    pub started: Instant,
    /// The same, in Unix milliseconds (`VOLUMES /` tells it: a batch tool sees a restart).
    pub started_ms: u64,
    /// One line about the last volume change (for the status page).
    pub last_rebalance: Mutex<Option<String>>,
    /// What the last background scrub (`-scrub`) found and did.
    pub scrub: Mutex<Option<crate::admin::ScrubState>>,
    /// Old replicas of keys an online rebalance moved, still to delete.
    pub moves: relocate::Moves,
    /// Keys whose failed PUT could not remove its files, and S3 deletes taken with a volume
    /// out of reach (the placeholder is listed under `?unlinked`): the server deletes their
    /// files once the volumes let it ([`remove::finish`]).
    pub unfinished: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// Live keys whose failed UNLINK may have left a marker it could not delete (at start,
    /// every key the index names so): the server deletes them once the volumes let it
    /// ([`remove::unmark`]), and a DELETE of the key takes them with it.
    pub stray_markers: Mutex<std::collections::HashSet<Vec<u8>>>,
}

impl Shared {
    /// The shared state over an open index; probes the volumes once and, for a server,
    /// starts the prober (`probe`: false for the batch tools, which probe on their own).
    pub fn new(cfg: Config, index: Index, probe: bool) -> anyhow::Result<Shared> {
        let topo = Topology::new(&cfg.volumes, cfg.replicas, cfg.subvolumes, cfg.voltimeout, None);
        for (name, why) in volume::probe_all(topo.all(), cfg.voltimeout) {
            eprintln!("mkv: warning: volume {name} is unreachable ({why}); treating it as down until it answers");
        }
        let prober = if probe {
            let p = Prober::start(PROBE_INTERVAL, cfg.voltimeout).context("cannot start the volume prober")?;
            p.watch(topo.all());
            Some(p)
        } else {
            None
        };
        // a server started on another list than the last rebalance's: a rebalance onto a new
        // list is what it is for, and verify names replicas outside its list on its own
        if let Some(v) = index.meta(REBALANCED_TO).ok().flatten().filter(|_| probe) {
            let online = String::from_utf8_lossy(&v);
            if online != cfg.volumes.join(",") {
                eprintln!(
                    "mkv: warning: this index was last rebalanced to -volumes {online}, but -volumes is {}; \
                     using -volumes (keys placed by the other list show Key-Balance: unbalanced)",
                    cfg.volumes.join(",")
                );
            }
        }
        if let Some(v) = index.meta(REBALANCED_REPLICAS).ok().flatten().filter(|_| probe) {
            let then = String::from_utf8_lossy(&v);
            if then != cfg.replicas.to_string() {
                eprintln!(
                    "mkv: warning: this index was last rebalanced to -replicas {then}, but -replicas is {}; \
                     using -replicas (keys placed with the other count show Key-Balance: unbalanced)",
                    cfg.replicas
                );
            }
        }
        // what failed UNLINKs left beside live keys before a restart (the index names them),
        // known before any request: a DELETE of such a key takes the markers with it
        let stray_markers = index.marking_keys().context("cannot read the index")?.into_iter().collect();
        let index = Arc::new(index);
        let syncer = if cfg.sync {
            Some(durable::Syncer::start(index.clone()).context("cannot start the fsync thread")?)
        } else {
            None
        };
        Ok(Shared {
            locks: locks::KeyLocks::new(cfg.threads * 64),
            cfg,
            index,
            syncer,
            metrics: Registry::default(),
            topo: Mutex::new(Arc::new(topo)),
            topo_gen: AtomicU64::new(0),
            prober,
            conns: AtomicUsize::new(0),
            admin_conns: AtomicUsize::new(0),
            stop: OnceLock::new(),
            started: Instant::now(),
            started_ms: crate::record::now_ms(),
            last_rebalance: Mutex::new(None),
            moves: relocate::Moves::default(),
            unfinished: Mutex::default(),
            stray_markers: Mutex::new(stray_markers),
            scrub: Mutex::new(None),
        })
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topo.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Switches placement to `volumes` (online rebalance). Records keep pointing at their
    /// replicas, so GETs go on; new PUTs land on the new list; REBALANCE moves old keys.
    /// Blocks (it probes new volumes once): call it off the runtime threads.
    /// A list naming a new volume that cannot be reached is refused: switched, the master
    /// would place new keys there and fail their PUTs.
    pub fn set_volumes(&self, volumes: &[String], replicas: usize) -> Result<(), Refused> {
        let mut check = self.cfg.clone();
        check.volumes = volumes.to_vec();
        check.replicas = replicas;
        check.validate().map_err(Refused::Invalid)?;
        let mut slot = self.topo.lock().unwrap_or_else(|e| e.into_inner());
        let next = Topology::new(volumes, replicas, self.cfg.subvolumes, self.cfg.voltimeout, Some(&slot));
        let fresh: Vec<_> = next.all().filter(|v| slot.volume(&v.name).is_none()).cloned().collect();
        // health before the switch, so the first PUTs to a new volume do not fail as "down";
        // a new one that cannot be reached at all (a wrong address) is refused. One that took
        // the connection but was slow to answer is there: the prober watches it from now on.
        let unreachable: Vec<String> = volume::probe_all(fresh.iter(), self.cfg.voltimeout)
            .into_iter()
            .filter(|(_, why)| why != volume::HUNG)
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        if !unreachable.is_empty() {
            return Err(Refused::Unreachable(format!(
                "new volume(s) unreachable: {}; nothing switched",
                unreachable.join(", ")
            )));
        }
        if let Some(p) = &self.prober {
            p.watch(fresh.iter());
        }
        let recorded = self.index.set_meta(REBALANCED_TO, volumes.join(",").as_bytes());
        let recorded =
            recorded.and_then(|()| self.index.set_meta(REBALANCED_REPLICAS, replicas.to_string().as_bytes()));
        if let Err(e) = recorded {
            return Err(Refused::Invalid(format!("cannot record the volume list: {e}")));
        }
        if let Err(e) = crate::served::add_volumes(&self.index, volumes) {
            return Err(Refused::Invalid(format!("cannot record the volume list: {e}")));
        }
        *slot = Arc::new(next);
        self.topo_gen.fetch_add(1, Ordering::Release);
        let line = format!("volumes are now {} ({} replicas)", volumes.join(","), replicas);
        eprintln!("mkv: {line}");
        *self.last_rebalance.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
        Ok(())
    }

    /// Forgets the volumes outside `volumes`, the list in force, once a rebalance onto it
    /// ended (what `mkv rebalance -online` says last): no record names them any more, so
    /// they are no longer probed, shown on `/metrics` and the status page, or counted. Refused
    /// while another list is in force (a later change still needs them) or while moved keys'
    /// old replicas wait for deletion. The volumes forgotten.
    pub fn forget_removed(&self, volumes: &[String]) -> Result<Vec<String>, String> {
        let mut slot = self.topo.lock().unwrap_or_else(|e| e.into_inner());
        if slot.volumes != volumes {
            return Err(format!(
                "the volumes in force are {}, not {}: a later volume change still needs the others",
                slot.volumes.join(","),
                volumes.join(",")
            ));
        }
        let pending = self.moves.pending.load(Ordering::Relaxed);
        if pending > 0 {
            return Err(format!("old replicas of {pending} moved key(s) are still to delete"));
        }
        let next = slot.placed_only();
        let gone: Vec<String> = slot.all().filter(|v| next.volume(&v.name).is_none()).map(|v| v.name.clone()).collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        if let Some(p) = &self.prober {
            p.unwatch(&gone);
        }
        *slot = Arc::new(next);
        self.topo_gen.fetch_add(1, Ordering::Release);
        eprintln!("mkv: volumes {} left the list: no longer watched", gone.join(","));
        Ok(gone)
    }

    /// Starts a graceful stop (the first call counts).
    pub fn begin_stop(&self) -> bool {
        self.stop.set(Instant::now()).is_ok()
    }

    pub fn stopping(&self) -> bool {
        self.stop.get().is_some()
    }

    /// Whether a stop has waited its `-drain` for requests in flight.
    pub fn drain_over(&self) -> bool {
        self.stop.get().is_some_and(|t| t.elapsed() >= self.cfg.drain)
    }
}

/// One thread's view: the shared state plus its own volume connection pools.
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub client: volume::Client,
    topo: RefCell<(u64, Rc<Topology>)>,
    pub metrics: Arc<metrics::Block>,
    /// A server's: how long a moved key's old replicas outlive the move ([`Ctx::serving`]);
    /// None (the batch tools, which no client reads through): deleted at once.
    pub move_grace: Option<Duration>,
    pub retiring: relocate::Retiring,
}

impl Ctx {
    pub fn new(shared: Arc<Shared>) -> Ctx {
        let topo = RefCell::new((shared.topo_gen.load(Ordering::Acquire), Rc::new((*shared.topology()).clone())));
        let metrics = shared.metrics.block();
        let client = volume::Client::new(shared.cfg.volume_rcvbuf);
        Ctx { shared, client, topo, metrics, move_grace: None, retiring: Default::default() }
    }

    /// A server thread's: clients may hold redirects to a moved key's old replicas, so they
    /// are deleted after `-move-grace` (by [`relocate::retire_loop`], which the thread runs).
    pub fn serving(shared: Arc<Shared>) -> Ctx {
        let grace = shared.cfg.move_grace;
        Ctx { move_grace: Some(grace), ..Ctx::new(shared) }
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

    /// With `-sync`, waits until the index writes made so far are on disk (shared fsyncs);
    /// without, they are in the OS's hands already, which survives `kill -9`.
    pub async fn durable(&self) -> Result<(), Error> {
        match &self.shared.syncer {
            Some(s) => s.wait().await,
            None => Ok(()),
        }
    }

    /// Claims `key` for a write, or [`Error::InFlight`] when another write holds it.
    pub fn claim(&self, key: &[u8]) -> Result<KeyGuard<'_>, Error> {
        self.shared.locks.try_lock(key).ok_or(Error::InFlight)
    }

    /// [`Ctx::claim`], waiting up to `wait` for the holder to let go (looked at every 20 ms),
    /// then [`Error::InFlight`].
    pub async fn claim_within(&self, key: &[u8], wait: std::time::Duration) -> Result<KeyGuard<'_>, Error> {
        let began = std::time::Instant::now();
        loop {
            match self.claim(key) {
                Err(Error::InFlight) if began.elapsed() < wait => {
                    monoio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                r => return r,
            }
        }
    }
}

/// Why a volume list was not switched to (VOLUMES).
#[derive(Debug)]
pub enum Refused {
    /// The list does not validate, or could not be recorded.
    Invalid(String),
    /// A volume of it does not answer.
    Unreachable(String),
}
