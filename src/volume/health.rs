//! Volume health: one prober thread asks every known volume `HEAD /` each interval, all at
//! once on its own small runtime. A volume that refuses, resets or stays silent past the
//! timeout (answering no request meanwhile) is down until it answers; the API threads
//! never wait on a probe.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream as StdStream, ToSocketAddrs},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::future::{join_all, select_ok};
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt},
};

use super::Volume;

/// Why a probe failed when the volume took the connection but did not answer in time: it
/// is there, busy or stopped (a wrong address refuses the connection, or does not resolve).
pub const HUNG: &str = "no answer in time (hung?)";

/// Longest a probe waits: a hung volume is marked down within interval + this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Probes sent at once, each on a connection of its own; the volume is up if any answers.
/// nginx runs several workers, each taking its own share of new connections (`reuseport`),
/// and one can be blocked for seconds (unlinking a multi-GiB file on a busy disk) while the
/// others serve: a single probe landing on it took the volume for down (other clients'
/// writes failed, a big DELETE was answered 504). With one of two workers blocked, all three
/// land on it one round in eight, where one probe did every other round; a hung volume is
/// found down as quickly as before.
const PROBES_AT_ONCE: usize = 3;

/// The request a probe sends, with the volume's secret header when there is one.
fn probe_request(name: &str) -> Vec<u8> {
    let mut req = format!("HEAD / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n").into_bytes();
    // any answer means up; with the secret the probe is a request the volume accepts
    req.extend_from_slice(super::secret::header());
    req.extend_from_slice(b"\r\n");
    req
}

/// The addresses of `name`, IPv4 first (nginx listens on IPv4 by default; localhost
/// resolves to ::1 too).
fn resolve(name: &str) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = name.to_socket_addrs().map_err(|e| format!("cannot resolve: {e}"))?.collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    Ok(addrs)
}

/// Probes `name` once, blocking, with [`PROBES_AT_ONCE`] probes per address as the prober
/// sends them (one landing on a blocked worker made a start-up warn, and a `rebuild` or
/// `verify` refuse, over a volume that served): the address that answered, or why none did.
pub fn probe(name: &str, timeout: Duration) -> Result<SocketAddr, String> {
    let mut last = "no address".to_string();
    for addr in resolve(name)? {
        // threads of their own, left to end by their timeouts once one answered
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..PROBES_AT_ONCE {
            let (tx, name) = (tx.clone(), name.to_string());
            std::thread::spawn(move || {
                let _ = tx.send(ask(addr, &name, timeout));
            });
        }
        drop(tx);
        for answer in rx {
            match answer {
                Ok(()) => return Ok(addr),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

fn ask(addr: SocketAddr, name: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut s = StdStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.write_all(&probe_request(name)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 9 {
        match s.read(&mut buf[n..]) {
            Ok(0) => return Err("closed without answering".into()),
            Ok(k) => n += k,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(HUNG.into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    answer_ok(&buf)
}

fn answer_ok(head: &[u8]) -> Result<(), String> {
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err("not an HTTP server".into())
    }
}

/// Probes volumes once, in parallel: the start-up check. Returns (name, error) of those down.
pub fn probe_all<'a>(vols: impl Iterator<Item = &'a Arc<Volume>>, timeout: Duration) -> Vec<(String, String)> {
    let handles: Vec<_> = vols
        .cloned()
        .map(|v| {
            std::thread::spawn(move || match probe(&v.name, timeout.min(PROBE_TIMEOUT)) {
                Ok(addr) => {
                    v.mark_up(addr);
                    None
                }
                Err(e) => Some((v.name.clone(), e)),
            })
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
}

/// The volumes the prober thread watches; adding one is all a volume change does.
#[derive(Clone)]
pub struct Prober {
    watched: Arc<Mutex<Vec<Arc<Volume>>>>,
}

impl Prober {
    /// Starts the prober thread: every `interval` it probes each volume watched, all at once,
    /// so a dead or hung volume is marked down within ~1.5 s and up again within ~0.5 s.
    pub fn start(interval: Duration, timeout: Duration) -> std::io::Result<Prober> {
        let p = Prober { watched: Arc::default() };
        let watched = p.watched.clone();
        let timeout = timeout.min(PROBE_TIMEOUT);
        std::thread::Builder::new().name("mkv-probe".into()).spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build();
            let Ok(mut rt) = rt else {
                eprintln!("mkv: the volume prober could not start its runtime; volume health is not tracked");
                return;
            };
            rt.block_on(async move {
                loop {
                    let began = Instant::now();
                    let vols = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    join_all(vols.iter().map(|v| probe_one(v, timeout))).await;
                    monoio::time::sleep(interval.saturating_sub(began.elapsed())).await;
                }
            })
        })?;
        Ok(p)
    }

    /// Watches `vols` too (each name once).
    pub fn watch<'a>(&self, vols: impl Iterator<Item = &'a Arc<Volume>>) {
        let mut w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        for v in vols {
            if !w.iter().any(|x| x.name == v.name) {
                w.push(v.clone());
            }
        }
    }

    /// Stops watching the volumes named `names` (they left the cluster).
    pub fn unwatch(&self, names: &[String]) {
        self.watched.lock().unwrap_or_else(|e| e.into_inner()).retain(|v| !names.contains(&v.name));
    }
}

/// One probe on the prober's runtime: the address last seen to answer is tried first, and a
/// name is resolved again only when that fails.
async fn probe_one(v: &Volume, timeout: Duration) {
    let known = v.addr();
    let candidates = match known {
        Some(a) => vec![a],
        None => match resolve(&v.name) {
            Ok(a) => a,
            Err(e) => return v.mark_down(&e),
        },
    };
    let mut last = "no address".to_string();
    let answers = v.answers();
    for addr in candidates {
        // on connections of their own, so that they reach different workers
        let asks = (0..PROBES_AT_ONCE).map(|_| {
            Box::pin(async move {
                match monoio::time::timeout(timeout, ask_async(addr, &v.name)).await {
                    Ok(r) => r,
                    Err(_) => Err(HUNG.to_string()),
                }
            })
        });
        match select_ok(asks).await {
            Ok(_) => return v.mark_up(addr),
            // every probe waited on a busy worker while another answered requests: the
            // volume lives (a hung one answers nothing), as it was
            Err(e) if e == HUNG && v.is_up() && v.answers() != answers => return,
            Err(e) => last = e,
        }
    }
    if known.is_some() {
        v.forget_addr();
    }
    v.mark_down(&last);
}

async fn ask_async(addr: SocketAddr, name: &str) -> Result<(), String> {
    let mut s = monoio::net::TcpStream::connect_addr(addr).await.map_err(|e| e.to_string())?;
    let (r, _) = s.write_all(probe_request(name)).await;
    r.map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(16);
    while head.len() < 9 {
        let len = head.len();
        let (r, b) = s.read(head.slice_mut(len..16)).await;
        head = b.into_inner();
        if r.map_err(|e| e.to_string())? == 0 {
            return Err("closed without answering".into());
        }
    }
    answer_ok(&head)
}
