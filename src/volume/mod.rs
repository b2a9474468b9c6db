//! The nginx side: which volume servers exist, whether each is up, and a pooled client.
//! Health is known ahead of time (probes plus errors on real requests), so a GET never waits.

mod client;
mod health;
pub mod secret;
pub mod sign;

use std::{
    collections::HashMap,
    fmt, io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

pub use client::{Client, Download};
pub use health::{probe_all, Prober, HUNG};

/// What went wrong talking to a volume; every variant names the volume.
#[derive(Debug)]
pub enum Error {
    /// Known down (probe or an earlier failure): not even tried.
    Down(String),
    /// Up, but a request that changes files timed out there and may still be carried out:
    /// a write waits for its answer (see [`Late`]). Not even tried.
    Fenced(String),
    Timeout(String),
    /// Took (almost) nothing of a request for a whole timeout (see `client::MIN_PROGRESS`).
    /// Not a sign that the volume is down (a volume whose disk is throttled by writeback
    /// stalls like this while it still answers its probes): the request fails, and the
    /// prober alone decides on down.
    Stalled(String),
    Io(String, io::Error),
    /// The volume answered, but not with success.
    Status(String, u16),
    Protocol(String, &'static str),
    /// A folder stands where a file of a key goes (nginx redirects to it): not mkv's doing,
    /// and not removed for the operator.
    Folder(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Down(v) => write!(f, "volume {v} is down"),
            Error::Fenced(v) => {
                write!(
                    f,
                    "volume {v} takes no write until it answers a request that timed out (it may still carry it out)"
                )
            }
            Error::Timeout(v) => write!(f, "volume {v} did not answer in time"),
            Error::Stalled(v) => write!(f, "volume {v} took (almost) nothing of the request in time (a busy disk?)"),
            Error::Io(v, e) => write!(f, "volume {v}: {e}"),
            Error::Status(v, s) => write!(f, "volume {v} answered {s}"),
            Error::Protocol(v, why) => write!(f, "volume {v}: {why}"),
            Error::Folder(v) => write!(f, "volume {v}: {FOLDER}"),
        }
    }
}

const FOLDER: &str = "a folder stands where a file of this key goes: remove it by hand, then repair";

impl std::error::Error for Error {}

impl Error {
    /// Whether the volume could not be reached (down, silent, or its connection failed), as
    /// against answering with a failure: what waiting for it to come back may cure.
    pub fn unreachable(&self) -> bool {
        matches!(self, Error::Down(_) | Error::Fenced(_) | Error::Timeout(_) | Error::Stalled(_) | Error::Io(..))
    }

    /// What went wrong, without `volume <name>`: for a request to the master (the batch
    /// tools' `-online`), which the same client sends.
    pub fn cause(&self) -> String {
        match self {
            Error::Down(_) => "down".into(),
            Error::Fenced(_) => "takes no write until a late answer comes".into(),
            Error::Timeout(_) => "no answer in time".into(),
            Error::Stalled(_) => "took (almost) nothing of the request in time".into(),
            Error::Io(_, e) => e.to_string(),
            Error::Status(_, s) => format!("answered {s}"),
            Error::Protocol(_, why) => why.to_string(),
            Error::Folder(_) => FOLDER.to_string(),
        }
    }
}

/// Whether a volume coming up is announced on stderr. The master says so; a batch tool
/// probes quietly first (its stderr is its progress), then turns this on.
pub static ANNOUNCE_UP: AtomicBool = AtomicBool::new(true);

/// One volume server and what the probes and requests know of it.
pub struct Volume {
    pub name: String,
    up: AtomicBool,
    /// Resolved by the prober (DNS stays off the runtime threads).
    addr: Mutex<Option<SocketAddr>>,
    /// Requests to it that failed (for `/metrics`).
    pub errors: AtomicU64,
    /// Requests that went out whole but were not answered in time, whose connections are
    /// kept until they are (see [`Late`]).
    late: AtomicUsize,
    /// Answers to requests it gave (an answer's head came): the prober asks whether it grew
    /// while the probes waited.
    answers: AtomicU64,
}

/// A request that changes files that a volume may still carry out: it went out, its answer
/// did not come in time. While one is outstanding the volume takes no write, even when its
/// probes answer: a write sent on another connection meanwhile (recovery putting back an
/// unlink marker that a late DELETE then removes; nginx serves its connections in any
/// order) could be undone by it. Reads go on. Held by the task that waits on the
/// connection for that answer.
pub struct Late(Arc<Volume>);

impl Drop for Late {
    fn drop(&mut self) {
        if self.0.late.fetch_sub(1, Ordering::Relaxed) == 1 && ANNOUNCE_UP.load(Ordering::Relaxed) {
            eprintln!(
                "mkv: volume {} takes writes again (the late answers came, or the wait for them ended)",
                self.0.name
            );
        }
    }
}

impl Volume {
    fn new(name: &str) -> Arc<Volume> {
        Arc::new(Volume {
            name: name.to_string(),
            up: AtomicBool::new(false),
            addr: Mutex::new(None),
            errors: AtomicU64::new(0),
            late: AtomicUsize::new(0),
            answers: AtomicU64::new(0),
        })
    }

    /// Its probes answer.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Up, and no request that changes files and timed out may still be carried out late:
    /// reads go on meanwhile, writes wait (see [`Late`]).
    pub fn takes_writes(&self) -> bool {
        self.is_up() && self.late.load(Ordering::Relaxed) == 0
    }

    /// Counts a request that may still be carried out until the [`Late`] is dropped.
    pub fn late(self: &Arc<Self>) -> Late {
        if self.late.fetch_add(1, Ordering::Relaxed) == 0 && ANNOUNCE_UP.load(Ordering::Relaxed) {
            eprintln!("mkv: volume {} takes no write until it answers a request that timed out", self.name);
        }
        Late(self.clone())
    }

    /// Notes that an answer to a request came from it.
    pub fn answered(&self) {
        self.answers.fetch_add(1, Ordering::Relaxed);
    }

    /// How many answers to requests came from it so far.
    fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    pub fn mark_down(&self, why: &dyn fmt::Display) {
        if self.up.swap(false, Ordering::Relaxed) {
            eprintln!("mkv: volume {} is down: {why}", self.name);
        }
    }

    fn mark_up(&self, addr: SocketAddr) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        if !self.up.swap(true, Ordering::Relaxed) && ANNOUNCE_UP.load(Ordering::Relaxed) {
            eprintln!("mkv: volume {} is up", self.name);
        }
    }

    fn addr(&self) -> Option<SocketAddr> {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the address that stopped answering, so the next probe resolves the name again.
    fn forget_addr(&self) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Where keys go (the volume list placement uses) and every volume known, with its health.
/// Immutable: an online volume change installs a new one that shares the `Volume`s.
#[derive(Clone)]
pub struct Topology {
    pub volumes: Vec<String>,
    pub replicas: usize,
    pub subvolumes: u32,
    pub timeout: Duration,
    known: HashMap<String, Arc<Volume>>,
}

impl Topology {
    /// A topology over `volumes`; volumes of `previous` stay known (records may still name
    /// them) and keep their health.
    pub fn new(
        volumes: &[String],
        replicas: usize,
        subvolumes: u32,
        timeout: Duration,
        previous: Option<&Topology>,
    ) -> Topology {
        let mut known = previous.map(|p| p.known.clone()).unwrap_or_default();
        for v in volumes {
            known.entry(v.clone()).or_insert_with(|| Volume::new(v));
        }
        Topology { volumes: volumes.to_vec(), replicas, subvolumes, timeout, known }
    }

    /// This topology knowing only the volumes placement uses (once no record names the
    /// others).
    pub fn placed_only(&self) -> Topology {
        let known = self.known.iter().filter(|(k, _)| self.volumes.contains(k)).map(|(k, v)| (k.clone(), v.clone()));
        Topology { known: known.collect(), ..self.clone() }
    }

    /// The volume server `server` (`host:port`), if known.
    pub fn volume(&self, server: &str) -> Option<&Arc<Volume>> {
        self.known.get(server)
    }

    /// Whether the server of `replica` (`host:port[/svXX]`) is up. A server never configured
    /// has no probe; it is assumed up and a failure will tell.
    pub fn is_up(&self, replica: &str) -> bool {
        self.volume(crate::placement::server_of(replica)).is_none_or(|v| v.is_up())
    }

    /// Fails, naming the volume, when one of `replicas` is down. A clean-up the server
    /// retries in the background (a failed write's files, stray markers, ended uploads'
    /// parts) waits so for the volume it needs, rather than ask every other one again each
    /// round of an outage: nothing can be ended before it is back.
    pub fn all_up(&self, replicas: &[String]) -> Result<(), Error> {
        match replicas.iter().find(|r| !self.is_up(r)) {
            Some(r) => Err(Error::Down(crate::placement::server_of(r).to_string())),
            None => Ok(()),
        }
    }

    /// The replicas placement wants for `key` now.
    pub fn place(&self, key: &[u8]) -> Vec<String> {
        crate::placement::key_volumes(key, &self.volumes, self.replicas, self.subvolumes)
    }

    /// Every known volume (for probing).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Volume>> {
        self.known.values()
    }
}
