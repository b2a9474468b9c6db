//! Volume health: one small thread per volume asks `HEAD /` every interval.
//! A volume that refuses, resets or stays silent past the timeout is down until it answers.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    sync::Arc,
    time::{Duration, Instant},
};

use super::Volumes;

/// Probes `name` once: the address that answered, or why none did.
pub fn probe(name: &str, timeout: Duration) -> Result<SocketAddr, String> {
    let mut addrs: Vec<SocketAddr> = name
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
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
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.write_all(format!("HEAD / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 9 {
        match s.read(&mut buf[n..]) {
            Ok(0) => return Err("closed without answering".into()),
            Ok(k) => n += k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
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

/// Probes every volume once, in parallel: the start-up check. Returns (name, error) of those down.
pub fn probe_all(vols: &Arc<Volumes>) -> Vec<(String, String)> {
    let handles: Vec<_> = (0..vols.len())
        .map(|i| {
            let vols = vols.clone();
            std::thread::spawn(move || {
                let v = vols.get(i);
                let r = probe(&v.name, vols.timeout.min(Duration::from_secs(1)));
                if let Ok(addr) = r {
                    vols.mark_up(i, addr);
                }
                r.err().map(|e| (v.name.clone(), e))
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().ok().flatten())
        .collect()
}

/// Starts the probe threads: each volume is asked every `interval`, with a timeout of at
/// most 1 s, so a dead or hung volume is marked down within ~1.5 s and up again within ~0.5 s.
pub fn spawn_probes(vols: Arc<Volumes>, interval: Duration) {
    for i in 0..vols.len() {
        let vols = vols.clone();
        let _ = std::thread::Builder::new()
            .name(format!("probe-{i}"))
            .spawn(move || loop {
                let began = Instant::now();
                let name = vols.get(i).name.clone();
                match probe(&name, vols.timeout.min(Duration::from_secs(1))) {
                    Ok(addr) => vols.mark_up(i, addr),
                    Err(e) => vols.mark_down(i, &e),
                }
                std::thread::sleep(interval.saturating_sub(began.elapsed()));
            });
    }
}
