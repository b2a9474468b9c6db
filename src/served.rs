//! Which master serves this index? A master writes who it is into the index when it starts;
//! an offline tool reads it back from the `-db` it is given.
//!
//! Why: the offline tools trust their `-db` to be the whole truth about the volumes. Given a
//! copy of a running master's index (a snapshot, a checkpoint copied aside), `verify -repair`
//! takes every file written since the copy for an orphan and deletes it, and `rebalance`
//! moves and deletes replicas the master's records still name. The index's lock catches the
//! master's own folder only; a copy carries the record of the master it was taken from, so
//! while that process still runs on this host, `rebalance` and `verify -repair` refuse, and
//! a plain `verify` says its findings include the master's new writes.
//!
//! Not caught: a copy of an index whose master has since been restarted (a new process), or
//! runs on another host. No file on the volumes says who serves them: walks of the volumes'
//! folders by other tools would take one for a stray.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::index::Index;

/// The index's meta entry naming its master.
const SERVED_BY: &str = "served-by";

/// A master process: enough to tell an operator which one, and this host whether it runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Master {
    pub host: String,
    pub pid: u32,
    /// The process's start (clock ticks since boot, `/proc/PID/stat`): with the pid, this
    /// process and no later one that got its number.
    pub started: u64,
    /// The API address it listens on.
    pub listen: String,
}

impl Master {
    /// This process, serving on `listen`.
    pub fn me(listen: SocketAddr) -> Master {
        let pid = std::process::id();
        Master { host: hostname(), pid, started: start_ticks(pid).unwrap_or(0), listen: listen.to_string() }
    }

    /// Whether it still runs: known on its own host only.
    fn runs(&self) -> bool {
        self.host == hostname() && self.pid != std::process::id() && start_ticks(self.pid) == Some(self.started)
    }

    /// Where to reach its API, as `-online` takes it (a wildcard listener by `localhost`).
    fn url(&self) -> String {
        match self.listen.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_unspecified() => format!("http://localhost:{}", a.port()),
            _ => format!("http://{}", self.listen),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat` (the start), of a process that still runs: a killed one not
/// yet reaped by its parent (a zombie, state `Z`) has none. The fields are counted after the
/// command name, which may hold spaces and parentheses: they begin after the last `)`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The master's start: the index names it (and every snapshot of the index with it).
pub fn record(index: &Index, me: &Master) -> Result<(), crate::index::Error> {
    index.set_meta(SERVED_BY, &serde_json::to_vec(me).unwrap_or_default())
}

/// What an offline tool does when `index` is a copy of one a running master serves: refuse
/// (`harm`: what it would do to the volumes under that master) or warn and go on.
pub fn check(index: &Index, tool: &str, harm: Option<&str>) -> anyhow::Result<()> {
    let Ok(Some(v)) = index.meta(SERVED_BY) else { return Ok(()) };
    let Ok(m) = serde_json::from_slice::<Master>(&v) else { return Ok(()) };
    if !m.runs() {
        return Ok(());
    }
    let what = format!(
        "this index is a copy of the one master pid {} (listening on {}) serves: it lacks what that master \
         wrote since",
        m.pid, m.listen
    );
    match harm {
        Some(harm) => anyhow::bail!(
            "{what}, and an offline {tool} on it {harm}. Stop that master first, or work through it with \
             -online {}",
            m.url()
        ),
        None => {
            eprintln!("mkv: warning: {what}; -online {} sees it all", m.url());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_is_told_from_a_reused_pid() {
        let me = Master::me("0.0.0.0:3000".parse().unwrap());
        assert!(me.started > 0);
        assert_eq!(me.url(), "http://localhost:3000");
        // a tool never takes itself for the master
        assert!(!me.runs());
        let parent = std::os::unix::process::parent_id();
        let other = Master { pid: parent, started: start_ticks(parent).unwrap(), ..me.clone() };
        assert!(other.runs());
        assert!(!Master { started: other.started + 1, ..other.clone() }.runs());
        assert!(!Master { host: format!("{}-elsewhere", me.host), ..other }.runs());
    }
}
