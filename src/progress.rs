//! Progress of a batch command: a bar on a terminal, periodic plain lines otherwise, and a
//! summary at the end that names what failed.

use std::{
    cell::RefCell,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

/// Failed items named in the summary; the rest are counted.
const NAMED_FAILURES: usize = 10;

pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    tty: bool,
    began: Instant,
    state: RefCell<State>,
}

struct State {
    done: u64,
    counts: Vec<(&'static str, u64)>,
    failed: Vec<String>,
    failures: u64,
    last_draw: Instant,
}

impl Progress {
    /// `total`, when known, gives a percentage and an ETA.
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            label,
            total,
            tty: std::io::stderr().is_terminal(),
            began: now,
            state: RefCell::new(State { done: 0, counts: Vec::new(), failed: Vec::new(), failures: 0, last_draw: now }),
        }
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// Counts `n` items under `what` (each also counts as done).
    pub fn count(&self, what: &'static str, n: u64) {
        let mut s = self.state.borrow_mut();
        s.done += n;
        match s.counts.iter_mut().find(|(w, _)| *w == what) {
            Some((_, c)) => *c += n,
            None => s.counts.push((what, n)),
        }
        drop(s);
        self.tick();
    }

    /// Counts under `what` without counting an item as done (e.g. under-replicated).
    pub fn note(&self, what: &'static str, n: u64) {
        let mut s = self.state.borrow_mut();
        match s.counts.iter_mut().find(|(w, _)| *w == what) {
            Some((_, c)) => *c += n,
            None => s.counts.push((what, n)),
        }
    }

    /// One item failed: it is named in the summary (the first few) and makes the exit non-zero.
    pub fn fail(&self, name: &str, why: &str) {
        let mut s = self.state.borrow_mut();
        s.done += 1;
        s.failures += 1;
        if s.failed.len() < NAMED_FAILURES {
            s.failed.push(format!("{name} ({why})"));
        }
        drop(s);
        self.tick();
    }

    /// A line of its own, above the bar.
    pub fn println(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(err, "{line}");
    }

    fn tick(&self) {
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
        let mut s = self.state.borrow_mut();
        if s.last_draw.elapsed() < every {
            return;
        }
        s.last_draw = Instant::now();
        let line = self.line(&s);
        drop(s);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    }

    fn line(&self, s: &State) -> String {
        let secs = self.began.elapsed().as_secs_f64().max(1e-3);
        let rate = s.done as f64 / secs;
        let counts: Vec<String> = s.counts.iter().map(|(w, c)| format!("{c} {w}")).collect();
        let failed = if s.failures > 0 { format!(", {} failed", s.failures) } else { String::new() };
        match self.total {
            Some(t) if t > 0 => {
                let frac = (s.done as f64 / t as f64).min(1.0);
                let width = 24;
                let fill = (frac * width as f64) as usize;
                let eta = if rate > 0.0 { (t.saturating_sub(s.done)) as f64 / rate } else { 0.0 };
                format!(
                    "{} [{}{}] {}/{} ({:.0}%) {:.0}/s ETA {:.0}s: {}{failed}",
                    self.label,
                    "#".repeat(fill),
                    " ".repeat(width - fill),
                    s.done,
                    t,
                    frac * 100.0,
                    rate,
                    eta,
                    counts.join(", ")
                )
            }
            _ => format!("{}: {} keys, {:.0}/s: {}{failed}", self.label, s.done, rate, counts.join(", ")),
        }
    }

    /// Prints the summary; an error (non-zero exit) when anything failed, naming it.
    pub fn finish(&self) -> anyhow::Result<()> {
        let s = self.state.borrow();
        let secs = self.began.elapsed().as_secs_f64();
        let counts: Vec<String> = s.counts.iter().map(|(w, c)| format!("{c} {w}")).collect();
        self.println(&format!(
            "{}: done: {} keys seen{}{}, {} failed, {:.1}s, {:.0} keys/s",
            self.label,
            s.done,
            if counts.is_empty() { "" } else { ", " },
            counts.join(", "),
            s.failures,
            secs,
            s.done as f64 / secs.max(1e-3)
        ));
        if s.failures > 0 {
            let more = s.failures - s.failed.len() as u64;
            anyhow::bail!(
                "{} failed: {}{}",
                s.failures,
                s.failed.join("; "),
                if more > 0 { format!("; and {more} more") } else { String::new() }
            );
        }
        Ok(())
    }
}
