//! The index on a disk that fills up (issue 8): the master must stay up, refuse writes with a
//! clear status while the disk is full, keep serving GETs, and take writes again by itself.
//!
//! Each test mounts its own small tmpfs (root only; CI runs as root) and puts the index there.

mod common;

use common::*;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Size of each test's filesystem: a few hundred PUTs fill what the filler leaves.
const FS_SIZE: &str = "4m";
/// Room the filler leaves for the index before the PUTs fill it.
const LEFT: u64 = 64 << 10;
/// How long writes may take to come back once space is freed ("a few seconds", with slack
/// for a loaded CI machine).
const RECOVERY: Duration = Duration::from_secs(15);

/// A tmpfs of [`FS_SIZE`] mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// None (with the reason printed) when this process may not mount.
    fn mount(tag: &str) -> Option<Tmpfs> {
        let dir = TempDir::new(tag);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_SIZE}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({})", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Writes the filler until the filesystem is full, then gives back `leave` bytes.
    fn fill(&self, leave: u64) {
        let mut f = fs::File::create(self.filler()).expect("create filler");
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.path().display()),
            }
        }
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(leave)).expect("shrink filler");
    }

    fn free(&self) {
        fs::remove_file(self.filler()).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // lazy, so that a process a failed test left behind cannot keep it mounted
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// One volume, one replica, two threads: the index is what is under test.
fn master_on(db: &Path, volume: &Volume) -> Master {
    let args = server_args(db, &[volume.addr()], &["-replicas", "1", "-subvolumes", "1", "-threads", "2"]);
    Master::start_args(TempDir::new("unused-db"), args)
}

/// Whether process `pid` is still running (not gone, not a zombie).
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // the state follows the command name in parentheses
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn put(client: &mut Client, key: &str, body: &[u8]) -> Response {
    client.request("PUT", key, &[], body)
}

#[test]
fn full_index_disk_refuses_writes_keeps_gets_and_recovers() {
    let Some(fs) = Tmpfs::mount("idx") else { return };
    let volume = Volume::new();
    let master = master_on(&fs.path().join("db"), &volume);
    let addr = master.addr();
    let pid = master.pid().expect("master runs");
    let log = || master.lines().join("\n");
    let mut c = Client::connect(&addr);
    for i in 0..20 {
        assert_eq!(put(&mut c, &format!("/before/{i}"), b"kept").status, 201, "{}", log());
    }
    assert_eq!(put(&mut c, "/doomed", b"to be deleted").status, 201);

    fs.fill(LEFT);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..100_000 {
        let key = format!("/fill/{i:06}");
        let r = put(&mut c, &key, &[b'x'; 100]);
        match r.status {
            201 => acked.push(key),
            _ => {
                refused = Some(r);
                break;
            }
        }
    }
    let refused = refused.expect("the index never ran out of space");
    eprintln!(
        "{} PUTs acknowledged before the disk was full; then {} {:?}",
        acked.len(),
        refused.status,
        refused.text()
    );
    thread::sleep(Duration::from_millis(300)); // an abort at the first ENOSPC would be done by now
    assert!(running(pid), "the master died at the first ENOSPC:\n{}", log());
    assert_eq!(refused.status, 507, "{refused:?}\n{}", log());

    // from here to the end of the recovery, a reader checks that every GET is answered
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (addr, stop) = (addr.clone(), stop.clone());
        thread::spawn(move || {
            let mut c = Client::connect(&addr);
            let mut wrong = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return (i, wrong);
                }
                let r = c.request("GET", &format!("/before/{}", i % 20), &[], b"");
                if r.status != 302 {
                    wrong.push(r);
                }
                thread::sleep(Duration::from_millis(2));
            }
            unreachable!()
        })
    };

    // while full: writes refused fast and clearly, reads served
    let mut c = Client::connect(&addr);
    for i in 0..5 {
        let t = Instant::now();
        let r = put(&mut c, &format!("/while-full/{i}"), b"nope");
        assert_eq!(r.status, 507, "PUT while full: {r:?}\n{}", log());
        assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{r:?}");
        let reason = r.text();
        assert!(reason.to_lowercase().contains("space") && reason.lines().count() == 1, "reason: {reason:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "a refused PUT took {:?}", t.elapsed());
    }
    assert_eq!(c.request("DELETE", "/doomed", &[], b"").status, 507, "{}", log());
    for key in ["/before/0", "/before/19", acked.first().unwrap(), acked.last().unwrap()] {
        let r = c.request("GET", key, &[], b"");
        assert_eq!(r.status, 302, "GET {key} while full: {r:?}\n{}", log());
    }
    assert_eq!(c.request("GET", "/never-written", &[], b"").status, 404);
    assert!(running(pid), "{}", log());

    // space back: writes resume by themselves, no restart
    fs.free();
    let freed = Instant::now();
    let mut last = None;
    while freed.elapsed() < RECOVERY {
        let r = request(&addr, "PUT", "/after", &[], b"back");
        if r.status == 201 {
            last = None;
            break;
        }
        assert!(matches!(r.status, 503 | 507), "PUT while recovering: {r:?}\n{}", log());
        last = Some(r);
        thread::sleep(Duration::from_millis(100));
    }
    assert!(last.is_none(), "writes did not resume within {RECOVERY:?} of freeing space: {last:?}\n{}", log());
    eprintln!("writes resumed {:?} after the space was freed", freed.elapsed());
    assert_eq!(request(&addr, "DELETE", "/doomed", &[], b"").status, 204, "{}", log());
    assert_eq!(request(&addr, "PUT", "/doomed", &[], b"again").status, 201, "{}", log());
    assert!(running(pid), "{}", log());
    stop.store(true, Ordering::Relaxed);
    let (reads, wrong) = reader.join().expect("reader thread");
    assert!(wrong.is_empty(), "{} of {reads} GETs during the outage were not 302: {:?}", wrong.len(), wrong.first());

    // every 201 is durable: kill -9, start again on the same index, all keys are there
    drop(c);
    drop(master);
    let master = master_on(&fs.path().join("db"), &volume);
    let mut c = Client::connect(&master.addr());
    let before: Vec<String> = (0..20).map(|i| format!("/before/{i}")).collect();
    for key in before.iter().chain(&acked).chain(["/after".to_string(), "/doomed".to_string()].iter()) {
        let r = c.request("GET", key, &[], b"");
        assert_eq!(r.status, 302, "GET {key} after a restart: {r:?}\n{}", master.lines().join("\n"));
    }
    let r = c.request("GET", "/while-full/0", &[], b"");
    assert_eq!(r.status, 404, "a refused PUT is not live: {r:?}");
}

#[test]
fn server_on_a_full_disk_exits_with_one_line() {
    let Some(fs) = Tmpfs::mount("start") else { return };
    let volume = Volume::new();
    let db = fs.path().join("db");
    let start = |db: &Path| {
        let args = server_args(db, &[volume.addr()], &["-replicas", "1", "-subvolumes", "1", "-threads", "1"]);
        run_mkv(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // an index that exists, on a disk that filled while the master was down
    let master = master_on(&db, &volume);
    for i in 0..10 {
        assert_eq!(request(&master.addr(), "PUT", &format!("/k{i}"), &[], b"v").status, 201);
    }
    drop(master);
    fs.fill(0);
    for db in [db.clone(), fs.path().join("fresh")] {
        let (code, stderr) = start(&db);
        assert_eq!(code, Some(1), "mkv server on a full disk ({}): exit {code:?}:\n{stderr}", db.display());
        assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
        let want = format!("mkv: cannot open index {}: no space left on device", db.display());
        assert!(stderr.starts_with(&want), "{stderr:?} is not {want:?}");
    }

    // and once there is room again, it starts and serves what it held
    fs.free();
    let master = master_on(&db, &volume);
    for i in 0..10 {
        let r = request(&master.addr(), "GET", &format!("/k{i}"), &[], b"");
        assert_eq!(r.status, 302, "/k{i} after the full start: {r:?}");
    }
}
