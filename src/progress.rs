//! Progress of a batch command (rebuild, rebalance): a bar redrawn on a terminal, a plain
//! line every few seconds otherwise, and a summary at the end that names what failed.
//!
//! ```text
//! let p = Progress::new("rebalance", Some(n));   // total, when known: percent and ETA
//! p.count("moved", 1);                           // one item done, tallied under "moved"
//! p.note("under-replicated", 1);                 // a tally that is not an item done
//! p.fail("/key", "volume a:1 is down");          // one item done, failed: named at the end
//! p.error("a:1 /sv00/ab/", "timeout");           // a failure that is not an item
//! p.println("would move ...");                   // a line of its own, above the bar
//! p.finish()?;                                   // summary line; Err naming the failures
//! ```
//!
//! Everything goes to stderr, and the bar only when stderr is a terminal. A thread of its
//! own draws, so the bar's rate and ETA move even while the command waits; the counters are
//! behind one uncontended mutex, cheap next to the network work each item costs.

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Failures named in the summary; the rest are counted.
const NAMED_FAILURES: usize = 10;
/// Redraw interval of the bar on a terminal.
const TTY_EVERY: Duration = Duration::from_millis(200);
/// Interval of the plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    shared: Arc<Shared>,
    drawer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    label: &'static str,
    tty: bool,
    /// Nothing drawn and no summary printed (a background run reports on its own).
    quiet: bool,
    began: Instant,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    total: Option<u64>,
    /// Share of the work done, for commands that know it but not the number of items.
    fraction: Option<f64>,
    done: u64,
    counts: Vec<(&'static str, u64)>,
    failures: u64,
    named: Vec<String>,
    /// A bar is on the terminal's last line (to be cleared before other output).
    drawn: bool,
    stopped: bool,
}

/// What a finished command did; [`Progress::finish`] prints it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub label: &'static str,
    pub done: u64,
    pub counts: Vec<(&'static str, u64)>,
    pub failures: u64,
    /// The first few failures, `name (why)`.
    pub named: Vec<String>,
    pub elapsed: Duration,
}

impl Progress {
    /// Starts reporting. `total` (items), when known, gives a percentage and an ETA.
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let shared = Arc::new(Shared {
            label,
            tty,
            quiet: false,
            began: Instant::now(),
            state: Mutex::new(State { total, ..State::default() }),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let drawer = std::thread::Builder::new().name("progress".into()).spawn(move || s.draw_loop()).ok();
        Progress { shared, drawer: Mutex::new(drawer) }
    }

    /// Counts without drawing anything or printing a summary (the master's scrub, which
    /// logs its own line); lines given to [`Progress::println`] still go out.
    pub fn quiet(label: &'static str) -> Progress {
        let shared = Arc::new(Shared {
            label,
            tty: false,
            quiet: true,
            began: Instant::now(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        Progress { shared, drawer: Mutex::new(None) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// The command's name, as lines start with it.
    pub fn label(&self) -> &'static str {
        self.shared.label
    }

    #[allow(dead_code)] // for commands that learn the total after they start
    pub fn set_total(&self, total: u64) {
        self.state().total = Some(total);
    }

    /// The share of the work done (0..=1), when the number of items is not known ahead.
    pub fn set_fraction(&self, f: f64) {
        self.state().fraction = Some(f.clamp(0.0, 1.0));
    }

    /// `n` items done, tallied under `what`. `n = 0` makes the tally show from the start
    /// (tallies show in the order first seen).
    pub fn count(&self, what: &'static str, n: u64) {
        let mut s = self.state();
        s.done += n;
        s.tally(what, n);
    }

    /// A tally that is not an item done (under-replicated, strays, ...).
    pub fn note(&self, what: &'static str, n: u64) {
        self.state().tally(what, n);
    }

    /// One item done and failed: named in the summary (the first few), exit non-zero.
    pub fn fail(&self, name: &str, why: &str) {
        let mut s = self.state();
        s.done += 1;
        s.failure(name, why);
    }

    /// A failure that is not an item (a listing that could not be read): named, exit non-zero.
    pub fn error(&self, name: &str, why: &str) {
        self.state().failure(name, why);
    }

    /// Prints `line` on a line of its own, above the bar.
    pub fn println(&self, line: &str) {
        let mut s = self.state();
        let mut err = std::io::stderr().lock();
        if s.drawn {
            let _ = write!(err, "\r\x1b[K");
            s.drawn = false;
        }
        let _ = writeln!(err, "{line}");
    }

    /// What was done so far.
    pub fn summary(&self) -> Summary {
        let s = self.state();
        Summary {
            label: self.shared.label,
            done: s.done,
            counts: s.counts.clone(),
            failures: s.failures,
            named: s.named.clone(),
            elapsed: self.shared.began.elapsed(),
        }
    }

    /// Stops the bar and prints the summary line; returns the summary.
    pub fn end(&self) -> Summary {
        self.state().stopped = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.drawer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        let summary = self.summary();
        if !self.shared.quiet {
            self.println(&summary.line());
        }
        summary
    }

    /// [`Progress::end`], then an error (a non-zero exit) when anything failed, naming it.
    pub fn finish(&self) -> anyhow::Result<()> {
        self.end().result()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // an early return (an error) must not leave the bar drawn or the thread running
        let mut s = self.state();
        s.stopped = true;
        if s.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            s.drawn = false;
        }
        drop(s);
        self.shared.wake.notify_all();
    }
}

impl State {
    fn tally(&mut self, what: &'static str, n: u64) {
        match self.counts.iter_mut().find(|(w, _)| *w == what) {
            Some((_, c)) => *c += n,
            None => self.counts.push((what, n)),
        }
    }

    fn failure(&mut self, name: &str, why: &str) {
        self.failures += 1;
        if self.named.len() < NAMED_FAILURES {
            self.named.push(if why.is_empty() { name.to_string() } else { format!("{name} ({why})") });
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn draw_loop(&self) {
        let every = if self.tty { TTY_EVERY } else { PLAIN_EVERY };
        let mut s = self.state();
        loop {
            s = self.wake.wait_timeout(s, every).unwrap_or_else(|e| e.into_inner()).0;
            if s.stopped {
                if s.drawn {
                    let _ = write!(std::io::stderr(), "\r\x1b[K");
                    s.drawn = false;
                }
                return;
            }
            let elapsed = self.began.elapsed();
            let mut err = std::io::stderr().lock();
            if self.tty {
                let mut line = bar_line(self.label, &s, elapsed);
                truncate(&mut line, term_width().saturating_sub(1));
                let _ = write!(err, "\r\x1b[K{line}");
                s.drawn = true;
            } else {
                let _ = writeln!(err, "{}", plain_line(self.label, &s, elapsed));
            }
            let _ = err.flush();
        }
    }
}

impl Summary {
    #[allow(dead_code)] // for callers that act on a tally
    pub fn get(&self, what: &str) -> u64 {
        self.counts.iter().find(|(w, _)| *w == what).map_or(0, |(_, c)| *c)
    }

    /// `rebuild: 1000 keys seen, 990 live, 10 unlinked, 0 failed, 1.2 s, 833 keys/s`
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let mut out = format!("{}: {} keys seen", self.label, self.done);
        for (w, c) in &self.counts {
            out += &format!(", {c} {w}");
        }
        out += &format!(", {} failed, {secs:.1} s, {:.0} keys/s", self.failures, self.done as f64 / secs.max(1e-3));
        out
    }

    /// An error naming the failures, if any: `3 failed: a (why); b (why); c (why)`.
    pub fn result(&self) -> anyhow::Result<()> {
        if self.failures == 0 {
            return Ok(());
        }
        let more = self.failures - self.named.len() as u64;
        let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
        anyhow::bail!("{}: {} failed: {}{tail}", self.label, self.failures, self.named.join("; "))
    }
}

/// `rebuild [#######.............] 35% 350123 keys 51230/s ETA 13s | live 349000, ...`
fn bar_line(label: &str, s: &State, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = s.done as f64 / secs;
    let mut out = String::from(label);
    if let Some(f) = fraction(s) {
        const WIDTH: usize = 20;
        let fill = ((f * WIDTH as f64) as usize).min(WIDTH);
        out += &format!(" [{}{}] {:>3}%", "#".repeat(fill), ".".repeat(WIDTH - fill), percent(f));
    }
    match s.total {
        Some(t) => out += &format!(" {}/{t} keys", s.done),
        None => out += &format!(" {} keys", s.done),
    }
    out += &format!(" {rate:.0}/s");
    if let Some(eta) = eta(s, secs) {
        out += &format!(" ETA {}", duration(eta));
    }
    let tallies = tallies(s);
    if !tallies.is_empty() {
        out += " | ";
        out += &tallies;
    }
    out
}

/// `rebuild: 35%, 350123 keys, 51230 keys/s, ETA 13s, 6.8 s elapsed; live 349000, ...`
fn plain_line(label: &str, s: &State, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut out = format!("{label}:");
    if let Some(f) = fraction(s) {
        out += &format!(" {}%,", percent(f));
    }
    out += &format!(" {} keys, {:.0} keys/s,", s.done, s.done as f64 / secs);
    if let Some(eta) = eta(s, secs) {
        out += &format!(" ETA {},", duration(eta));
    }
    out += &format!(" {} elapsed", duration(secs));
    let tallies = tallies(s);
    if !tallies.is_empty() {
        out += "; ";
        out += &tallies;
    }
    out
}

fn tallies(s: &State) -> String {
    let mut parts: Vec<String> = s.counts.iter().map(|(w, c)| format!("{w} {c}")).collect();
    if s.failures > 0 {
        parts.push(format!("failed {}", s.failures));
    }
    parts.join(", ")
}

fn fraction(s: &State) -> Option<f64> {
    match (s.total, s.fraction) {
        (Some(t), _) if t > 0 => Some((s.done as f64 / t as f64).min(1.0)),
        (_, Some(f)) => Some(f),
        _ => None,
    }
}

/// Whole percent done, rounded down: 99.6% is not 100% while work remains.
fn percent(f: f64) -> u32 {
    (f * 100.0).floor() as u32
}

/// Seconds left at the pace so far.
fn eta(s: &State, secs: f64) -> Option<f64> {
    let f = fraction(s)?;
    (f > 0.0).then(|| secs * (1.0 - f) / f)
}

/// `42s`, `3m05s`, `2h07m`
fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn truncate(line: &mut String, width: usize) {
    if line.chars().count() > width {
        *line = line.chars().take(width).collect();
    }
}

/// Columns of the terminal on stderr; 80 when it cannot be told.
fn term_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize we own; on failure we keep the default.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(80)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_names_failures() {
        let p = Progress::new("test", None);
        p.count("live", 0);
        p.count("live", 3);
        p.count("unlinked", 1);
        p.note("under-replicated", 2);
        p.error("a:1 /ab/", "timeout");
        for i in 0..12 {
            p.fail(&format!("/k{i}"), "down");
        }
        let s = p.end();
        assert_eq!((s.done, s.get("live"), s.get("unlinked"), s.get("under-replicated")), (16, 3, 1, 2));
        assert_eq!(s.failures, 13);
        let line = s.line();
        assert!(line.starts_with("test: 16 keys seen, 3 live, 1 unlinked, 2 under-replicated, 13 failed, "), "{line}");
        let err = s.result().unwrap_err().to_string();
        assert!(err.starts_with("test: 13 failed: a:1 /ab/ (timeout); /k0 (down);"), "{err}");
        assert!(err.ends_with("; and 3 more"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn lines_show_fraction_rate_and_eta() {
        let mut s = State { done: 500, fraction: Some(0.25), ..State::default() };
        s.tally("live", 500);
        let bar = bar_line("rebuild", &s, Duration::from_secs(10));
        assert!(bar.starts_with("rebuild [#####...............]  25% 500 keys 50/s ETA 30s | live 500"), "{bar}");
        s.total = Some(1000);
        let plain = plain_line("rebalance", &s, Duration::from_secs(10));
        assert_eq!(plain, "rebalance: 50%, 500 keys, 50 keys/s, ETA 10s, 10s elapsed; live 500");
        assert_eq!(duration(185.0), "3m05s");
        s.total = None;
        s.fraction = Some(255.0 / 256.0);
        let plain = plain_line("rebuild", &s, Duration::from_secs(10));
        assert!(plain.starts_with("rebuild: 99%, "), "{plain}");
        assert!(bar_line("rebuild", &s, Duration::from_secs(10)).contains("]  99% "));
        s.fraction = Some(1.0);
        assert!(plain_line("rebuild", &s, Duration::from_secs(10)).starts_with("rebuild: 100%, "));
        assert_eq!(duration(7620.0), "2h07m");
    }
}
