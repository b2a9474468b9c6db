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

/// Size of each test's filesystem: a few hundred PUTs fill what the filler leaves.
const FS_SIZE: &str = "4m";
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
