//! SIGTERM and SIGINT start a graceful stop: one thread waits for them (every other thread
//! has them blocked), so a stop is an ordinary flag the runtimes read, not a signal handler.

use std::sync::Arc;

use anyhow::Context as _;

use super::Shared;

/// The stop signals, blocked in the calling thread (and so in every thread it starts later).
pub struct Blocked(libc::sigset_t);

pub fn block() -> anyhow::Result<Blocked> {
    // SAFETY: sigemptyset/sigaddset fill a set we own; pthread_sigmask changes this thread's
    // mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            anyhow::bail!("cannot block SIGTERM/SIGINT: {}", std::io::Error::from_raw_os_error(rc));
        }
        Ok(Blocked(set))
    }
}

/// Waits for the signals: the first starts the drain, a second stops at once.
pub fn spawn(set: Blocked, shared: Arc<Shared>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("mkv-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait reads the set we own and writes the signal number.
            if unsafe { libc::sigwait(&set.0, &mut sig) } != 0 {
                continue;
            }
            if shared.begin_stop() {
                eprintln!(
                    "mkv: stopping ({}): no new connections, finishing requests in flight (up to {:?})",
                    if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" },
                    shared.cfg.drain
                );
            } else {
                eprintln!("mkv: second stop signal: exiting now");
                let _ = shared.index.sync();
                std::process::exit(1);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
