//! `-scrub DUR`: the master verifies itself in the background — every replica read at
//! `-rate`, each problem repaired through the store under the key's lock — on a thread and
//! runtime of its own, never on the API's. Each run's result is logged, and the last one is
//! on the status page and in `/metrics`. A master that stops ends the run in progress.

use std::{
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{check_all, Backend, Options, Setup, KINDS};
use crate::{
    admin::ScrubState,
    progress::Progress,
    record::now_ms,
    store::{Ctx, Shared},
};

/// Listings, reads and repairs in flight at once: a background run stays light.
const CONCURRENCY: usize = 8;
/// How often a wait between runs looks whether the master stops.
const TICK: Duration = Duration::from_millis(100);

/// The scrub thread; [`Scrubber::wait`] lets it end.
pub struct Scrubber {
    ended: mpsc::Receiver<()>,
}

impl Scrubber {
    /// Waits up to `at_most` for the thread to see the stop and end (a run in progress ends
    /// at its next step; what it was copying is left as a `_tmp` file the next one removes).
    pub fn wait(&self, at_most: Duration) {
        let _ = self.ended.recv_timeout(at_most);
    }
}

/// Starts the scrub thread when `-scrub` is set.
pub fn start(shared: Arc<Shared>) -> anyhow::Result<Option<Scrubber>> {
    let Some(sc) = shared.cfg.scrub.clone() else { return Ok(None) };
    let rate = if sc.rate > 0.0 { format!("at {} MiB/s at most", sc.rate) } else { "with no limit".into() };
    eprintln!(
        "mkv: scrub every {} (replicas read {rate}, files younger than {} spared)",
        format_duration(sc.every),
        format_duration(sc.grace),
    );
    let (tx, ended) = mpsc::channel();
    std::thread::Builder::new()
        .name("mkv-scrub".into())
        .spawn(move || {
            // its own pool for hashing (the copies of a repair hash what they send), one thread:
            // a background run stays light
            let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(1)))
                .build();
            match rt {
                Ok(mut rt) => rt.block_on(schedule(shared, sc)),
                Err(e) => eprintln!("mkv: scrub: cannot start its runtime ({e}); no scrubs"),
            }
            let _ = tx.send(());
        })
        .context("cannot start the scrub thread")?;
    Ok(Some(Scrubber { ended }))
}

/// `1h`, `90s`, `1m30s`, `500ms`, as the flags take them.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Runs a scrub every `sc.every` (from the end of one to the start of the next) until the
/// master stops.
async fn schedule(shared: Arc<Shared>, sc: crate::config::Scrub) {
    let backend = Backend::Local(Ctx::new(shared.clone()));
    let opts =
        Options { online: None, deep: true, repair: true, grace: sc.grace, rate: sc.rate, concurrency: CONCURRENCY };
    let mut runs = 0;
    loop {
        let until = Instant::now() + sc.every;
        while Instant::now() < until {
            if shared.stopping() {
                return;
            }
            monoio::time::sleep(TICK).await;
        }
        let state = once(&shared, &backend, &opts).await;
        runs += 1;
        if shared.stopping() {
            return;
        }
        eprintln!("mkv: {}", state.line);
        *shared.scrub.lock().unwrap_or_else(|e| e.into_inner()) = Some(ScrubState { runs, ..state });
    }
}

/// One scrub over everything.
async fn once(shared: &Shared, backend: &Backend, opts: &Options) -> ScrubState {
    let Backend::Local(ctx) = backend else { unreachable!("the scrub works on its own index") };
    if ctx.shared.index.is_empty() {
        // a new master, or one started on the wrong -db: a repair would take every file on
        // the volumes for an orphan (check_all refuses it); nothing to check either
        return ScrubState {
            runs: 0,
            finished: now_ms() / 1000,
            secs: 0.0,
            keys: 0,
            found: KINDS.iter().map(|k| (k.name(), 0)).collect(),
            repaired: 0,
            failures: 0,
            line: "scrub: skipped: the index holds no keys (files on the volumes are left alone)".into(),
        };
    }
    let topo = ctx.topo();
    // the volume list in force (an online rebalance may have changed it)
    let mut cfg = shared.cfg.clone();
    cfg.volumes = topo.volumes.clone();
    let progress = Progress::quiet("mkv: scrub");
    let stop = || shared.stopping();
    let setup = Setup {
        cfg: &cfg,
        opts,
        client: &ctx.client,
        topo: &topo,
        backend,
        progress: &progress,
        stop: &stop,
        quiet: false,
    };
    let result = check_all(&setup).await;
    let summary = progress.end();
    let finished = now_ms() / 1000;
    let secs = summary.elapsed.as_secs_f64();
    match result {
        Ok(report) => {
            let report = super::Report { failures: summary.failures, ..report };
            let mut line = format!("scrub: {} ({:.1} s)", report.verdict(), secs);
            if let Err(e) = summary.result() {
                line += &format!("; {e:#}");
            }
            ScrubState {
                runs: 0,
                finished,
                secs,
                keys: report.keys,
                found: KINDS.iter().map(|k| (k.name(), report.found[k.index()])).collect(),
                repaired: report.fixed,
                failures: report.failures,
                line,
            }
        }
        Err(e) => ScrubState {
            runs: 0,
            finished,
            secs,
            keys: 0,
            found: KINDS.iter().map(|k| (k.name(), 0)).collect(),
            repaired: 0,
            failures: 1,
            line: format!("scrub failed after {secs:.1} s: {e:#}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_flags() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(7322)), "2h2m2s");
    }
}
