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
    /// The volume servers it serves (`host:port`).
    #[serde(default)]
    pub volumes: Vec<String>,
}

impl Master {
    /// This process, serving `volumes` on `listen`.
    pub fn me(listen: SocketAddr, volumes: &[String]) -> Master {
        let pid = std::process::id();
        let volumes = servers(volumes);
        Master { host: hostname(), pid, started: start_ticks(pid).unwrap_or(0), listen: listen.to_string(), volumes }
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

/// The distinct servers of a volume list (`host:port`, subvolumes aside).
fn servers(volumes: &[String]) -> Vec<String> {
    let mut v: Vec<String> = volumes.iter().map(|v| crate::placement::server_of(v).to_string()).collect();
    v.sort();
    v.dedup();
    v
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

/// The master `index` names, if any (an index no master of this version served has none).
fn recorded(index: &Index) -> Option<Master> {
    serde_json::from_slice(&index.meta(SERVED_BY).ok()??).ok()
}

/// A volume switch (online rebalance): the master serves `volumes` too from now on (the old
/// ones until the moves end), and a copy of its index taken later says so.
pub fn add_volumes(index: &Index, volumes: &[String]) -> Result<(), crate::index::Error> {
    let Some(mut m) = recorded(index) else { return Ok(()) };
    m.volumes.extend(servers(volumes));
    m.volumes = servers(&m.volumes);
    record(index, &m)
}

/// What an offline tool working on `volumes` does when `index` is a copy of one a running
/// master serves on any of them: refuse (`harm`: what it would do to the volumes under that
/// master) or warn and go on. A copy used on other volumes (a clone) is no concern.
pub fn check(index: &Index, volumes: &[String], tool: &str, harm: Option<&str>) -> anyhow::Result<()> {
    let Some(m) = recorded(index) else { return Ok(()) };
    let shared = m.volumes.is_empty() || servers(volumes).iter().any(|s| m.volumes.contains(s));
    if !shared || !m.runs() {
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
        let me = Master::me("0.0.0.0:3000".parse().unwrap(), &["a:1/sv01".into(), "a:1/sv02".into(), "b:2".into()]);
        assert_eq!(me.volumes, ["a:1", "b:2"]);
        assert!(me.started > 0);
        assert_eq!(me.url(), "http://localhost:3000");
        // a tool never takes itself for the master
        assert!(!me.runs());
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let other = Master { pid, started: start_ticks(pid).unwrap(), ..me.clone() };
        assert!(other.runs());
        assert!(!Master { started: other.started + 1, ..other.clone() }.runs());
        assert!(!Master { host: format!("{}-elsewhere", me.host), ..other.clone() }.runs());
        // killed and not reaped yet (a zombie): gone all the same
        child.kill().unwrap();
        let began = std::time::Instant::now();
        while other.runs() && began.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!other.runs());
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "reaped too soon for the test");
        child.wait().unwrap();
    }
}
