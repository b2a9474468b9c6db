//! Volume health: one small thread per volume asks `HEAD /` every interval.
//! A volume that refuses, resets or stays silent past the timeout is down until it answers.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    sync::Arc,
    time::{Duration, Instant},
};

use super::Volume;

/// Longest a probe waits: a hung volume is marked down within interval + this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Probes `name` once: the address that answered, or why none did.
pub fn probe(name: &str, timeout: Duration) -> Result<SocketAddr, String> {
    let mut addrs: Vec<SocketAddr> = name.to_socket_addrs().map_err(|e| format!("cannot resolve: {e}"))?.collect();
    // nginx listens on IPv4 by default; try those first (localhost resolves to ::1 too)
    addrs.sort_by_key(|a| a.is_ipv6());
    let mut last = "no address".to_string();
    for addr in addrs {
        match ask(addr, name, timeout) {
            Ok(()) => return Ok(addr),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn ask(addr: SocketAddr, name: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    let mut req = format!("HEAD / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n").into_bytes();
    // any answer means up; with the secret the probe is a request the volume accepts
    req.extend_from_slice(super::secret::header());
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 9 {
        match s.read(&mut buf[n..]) {
            Ok(0) => return Err("closed without answering".into()),
            Ok(k) => n += k,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("no answer in time (hung?)".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    if buf.starts_with(b"HTTP/1.") {
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

/// Starts a probe thread per volume: each is asked every `interval`, so a dead or hung
/// volume is marked down within ~1.5 s and up again within ~0.5 s.
pub fn spawn_probes<'a>(vols: impl Iterator<Item = &'a Arc<Volume>>, interval: Duration, timeout: Duration) {
    for v in vols.cloned() {
        let _ = std::thread::Builder::new().name(format!("probe {}", v.name)).spawn(move || loop {
            let began = Instant::now();
            match probe(&v.name, timeout.min(PROBE_TIMEOUT)) {
                Ok(addr) => v.mark_up(addr),
                Err(e) => v.mark_down(&e),
            }
            std::thread::sleep(interval.saturating_sub(began.elapsed()));
        });
    }
}
