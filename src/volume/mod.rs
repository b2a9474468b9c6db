//! The nginx side: which volume servers exist, whether each is up, and a pooled client.
//! Health is known ahead of time (probes plus errors on real requests), so a GET never waits.

mod client;
mod health;

use std::{
    collections::HashMap,
    fmt, io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

pub use client::Client;
pub use health::{probe_all, spawn_probes};

/// What went wrong talking to a volume; every variant names the volume.
#[derive(Debug)]
pub enum Error {
    /// Known down (probe or an earlier failure): not even tried.
    Down(String),
    Timeout(String),
    Io(String, io::Error),
    /// The volume answered, but not with success.
    Status(String, u16),
    Protocol(String, &'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Down(v) => write!(f, "volume {v} is down"),
            Error::Timeout(v) => write!(f, "volume {v} did not answer in time"),
            Error::Io(v, e) => write!(f, "volume {v}: {e}"),
            Error::Status(v, s) => write!(f, "volume {v} answered {s}"),
            Error::Protocol(v, why) => write!(f, "volume {v}: {why}"),
        }
    }
}

pub struct Volume {
    pub name: String,
    up: AtomicBool,
    /// Resolved by the prober (DNS stays off the runtime threads).
    addr: Mutex<Option<SocketAddr>>,
}

/// The configured volume servers and their health, shared by every thread.
pub struct Volumes {
    list: Vec<Volume>,
    by_name: HashMap<String, usize>,
    pub timeout: Duration,
}

impl Volumes {
    pub fn new(names: &[String], timeout: Duration) -> Arc<Volumes> {
        let list = names
            .iter()
            .map(|n| Volume {
                name: n.clone(),
                up: AtomicBool::new(false),
                addr: Mutex::new(None),
            })
            .collect();
        let by_name = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Arc::new(Volumes {
            list,
            by_name,
            timeout,
        })
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn get(&self, i: usize) -> &Volume {
        &self.list[i]
    }

    /// The index of a volume server (`host:port`), if configured.
    pub fn index_of(&self, server: &str) -> Option<usize> {
        self.by_name.get(server).copied()
    }

    /// Whether the server of `replica` (`host:port[/svXX]`) is up. A server outside the
    /// configured list has no probe; it is assumed up and a failure will tell.
    pub fn is_up(&self, replica: &str) -> bool {
        match self.index_of(crate::placement::server_of(replica)) {
            Some(i) => self.list[i].up.load(Ordering::Relaxed),
            None => true,
        }
    }

    pub fn mark_down(&self, i: usize, why: &dyn fmt::Display) {
        if self.list[i].up.swap(false, Ordering::Relaxed) {
            eprintln!("mkv: volume {} is down: {why}", self.list[i].name);
        }
    }

    fn mark_up(&self, i: usize, addr: SocketAddr) {
        *self.list[i].addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        if !self.list[i].up.swap(true, Ordering::Relaxed) {
            eprintln!("mkv: volume {} is up", self.list[i].name);
        }
    }

    fn addr(&self, i: usize) -> Option<SocketAddr> {
        *self.list[i].addr.lock().unwrap_or_else(|e| e.into_inner())
    }
}
