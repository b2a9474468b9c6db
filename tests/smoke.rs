//! The harness itself, against nginx alone: `bin/volume` serves a folder the way the master
//! relies on, and `Volume` starts, stops, pauses and cleans up what it started.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn listing(addr: &str, path: &str) -> Vec<(String, String)> {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "autoindex of {path}: {r:?}");
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&r.body).expect("autoindex JSON");
    entries.iter().map(|e| (e["name"].as_str().unwrap().into(), e["type"].as_str().unwrap().into())).collect()
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn volume_serves_webdav_ranges_and_json_autoindex() {
    let v = Volume::new();
    let a = v.addr();

    assert_eq!(request(&a, "PUT", "/ab/cd/x", &[], b"hello world").status, 201);
    assert_eq!(request(&a, "PUT", "/ab/cd/x", &[], b"hello again").status, 204, "overwrite");
    let r = get(&a, "/ab/cd/x");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello again"[..]));
    assert_eq!(std::fs::read(v.dir().join("ab/cd/x")).unwrap(), b"hello again");

    let r = request(&a, "GET", "/ab/cd/x", &[("Range", "bytes=2-4")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"llo"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 2-4/11"));
    let r = request(&a, "HEAD", "/ab/cd/x", &[], b"");
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (200, Some("11"), 0));

    // nginx's own files are hidden from the listing and refused over HTTP
    assert_eq!(listing(&a, "/"), [("ab".to_string(), "directory".to_string())]);
    assert_eq!(listing(&a, "/ab/cd/"), [("x".to_string(), "file".to_string())]);
    assert_eq!(get(&a, "/.nginx/nginx.conf").status, 403);
    assert_eq!(request(&a, "PUT", "/.nginx/nginx.conf", &[], b"x").status, 403);
    assert_eq!(v.files(), ["ab/cd/x"]);

    // base64 names: '+', '=' and '/' (a nested folder) are plain path characters
    assert_eq!(request(&a, "PUT", "/5d/41/a+b/c==", &[], b"b64").status, 201);
    assert_eq!(get(&a, "/5d/41/a+b/c==").body, b"b64");

    let r = request(&a, "PUT", "/chunked", &[("Transfer-Encoding", "chunked")], b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert_eq!(r.status, 201);
    assert_eq!(get(&a, "/chunked").body, b"abcde");

    assert_eq!(request(&a, "DELETE", "/ab/cd/x", &[], b"").status, 204);
    assert_eq!(request(&a, "DELETE", "/ab/cd/x", &[], b"").status, 404);
    assert_eq!(get(&a, "/ab/cd/x").status, 404);
    assert_eq!(v.files(), ["5d/41/a+b/c==", "chunked"]);
}

#[test]
fn volume_moves_a_file_into_place_atomically_and_only_a_file() {
    use std::os::unix::fs::MetadataExt;
    let v = Volume::new();
    let a = v.addr();
    let ino = |rel: &str| std::fs::metadata(v.dir().join(rel)).unwrap().ino();

    // Destination as a path: 204, the missing folders 5d/41 are created
    assert_eq!(request(&a, "PUT", "/_tmp/x/5d/41/aGVsbG8=", &[], b"hello").status, 201);
    let moved = ino("_tmp/x/5d/41/aGVsbG8=");
    let r = request(&a, "MOVE", "/_tmp/x/5d/41/aGVsbG8=", &[("Destination", "/5d/41/aGVsbG8=")], b"");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(get(&a, "/5d/41/aGVsbG8=").body, b"hello");
    assert_eq!(get(&a, "/_tmp/x/5d/41/aGVsbG8=").status, 404);
    assert_eq!(ino("5d/41/aGVsbG8="), moved, "a rename, not a copy");

    // Destination as an absolute URL naming this request's Host: replaces the file by
    // rename(2), so a reader sees the old bytes or the new, never a mix
    assert_eq!(request(&a, "PUT", "/_tmp/y", &[], b"hello again").status, 201);
    let moved = ino("_tmp/y");
    let url = format!("http://{a}/5d/41/aGVsbG8=");
    let r = request(&a, "MOVE", "/_tmp/y", &[("Host", &a), ("Destination", &url)], b"");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(get(&a, "/5d/41/aGVsbG8=").body, b"hello again");
    assert_eq!(ino("5d/41/aGVsbG8="), moved, "overwritten by rename");
    // another host in the URL: 400; no such source: 404
    assert_eq!(request(&a, "PUT", "/_tmp/z", &[], b"z").status, 201);
    let other = "http://elsewhere:1/5d/41/aGVsbG8=";
    assert_eq!(request(&a, "MOVE", "/_tmp/z", &[("Host", &a), ("Destination", other)], b"").status, 400);
    assert_eq!(request(&a, "MOVE", "/_tmp/none", &[("Destination", "/n")], b"").status, 404);

    // Destination is mapped without a location: nothing may land in nginx's dot-folders,
    // whatever the spelling, and folders do not move
    for dest in ["/.nginx/nginx.conf", "/%2enginx/x", "/%2Etmp/x", "/a/./b", "/a/../.nginx/x", "/5d%2F41", "/dir/"] {
        let r = request(&a, "MOVE", "/_tmp/z", &[("Destination", dest)], b"");
        assert_eq!(r.status, 403, "MOVE to {dest}: {r:?}");
    }
    assert_eq!(request(&a, "MOVE", "/5d/", &[("Destination", "/6d/")], b"").status, 403);
    assert_eq!(request(&a, "MOVE", "/.nginx/nginx.conf", &[("Destination", "/conf")], b"").status, 403);
    let mut nginx_files: Vec<String> = std::fs::read_dir(v.dir().join(".nginx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    nginx_files.sort();
    assert_eq!(nginx_files, ["error.log", "nginx.conf", "nginx.pid", "protect.conf"]);
    assert_eq!(get(&a, "/_tmp/z").body, b"z", "a refused MOVE leaves the source");
    assert_eq!(v.files(), ["5d/41/aGVsbG8=", "_tmp/z"]);
}

#[test]
fn volume_keeps_connections_alive_pipelines_and_closes_http10() {
    let v = Volume::new();
    let a = v.addr();
    assert_eq!(request(&a, "PUT", "/k1", &[], b"one").status, 201);
    assert_eq!(request(&a, "PUT", "/k2", &[], b"two").status, 201);

    let mut c = Client::connect(&a);
    for _ in 0..3 {
        assert_eq!(c.request("GET", "/k1", &[], b"").body, b"one");
    }
    let mut pipelined = encode_request("GET", "/k2", &[], b"");
    pipelined.extend(encode_request("GET", "/missing", &[], b""));
    pipelined.extend(encode_request("GET", "/k1", &[], b""));
    c.send(&pipelined);
    let answers: Vec<_> = (0..3).map(|_| c.read_response("GET")).map(|r| (r.status, r.text())).collect();
    assert_eq!(answers[0], (200, "two".to_string()));
    assert_eq!(answers[1].0, 404);
    assert_eq!(answers[2], (200, "one".to_string()));

    let r = raw(&a, b"GET /k1 HTTP/1.0\r\n\r\n", Duration::from_secs(10));
    assert!(r.closed, "HTTP/1.0 must close: {r:?}");
    assert_eq!(r.status(), Some(200));
    assert!(r.text().ends_with("\r\n\r\none"), "{}", r.text());
}

#[test]
fn volume_stop_and_start_keep_port_and_data() {
    let mut v = Volume::new();
    let (a, dir) = (v.addr(), v.dir().to_path_buf());
    assert_eq!(request(&a, "PUT", "/x/y", &[], b"kept").status, 201);
    let pid = v.pid().unwrap();

    v.stop();
    assert!(!process_exists(pid), "nginx master still running");
    assert!(!process_exists(-pid), "an nginx worker outlived its master");
    assert!(std::net::TcpStream::connect(&a).is_err(), "port still open after stop");

    // what an nginx killed mid-body leaves: its body's temp file, never deleted by anyone
    let stale = dir.join(".tmp/body/0000000233");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"half a body").unwrap();
    v.start();
    assert_eq!((v.addr(), v.dir().to_path_buf()), (a.clone(), dir));
    assert_eq!(get(&a, "/x/y").body, b"kept");
    assert!(!stale.exists(), "a dead nginx's body temp file outlived the restart");
    assert_eq!(request(&a, "PUT", "/x/z", &[], b"after").status, 201, "the temp folder is made again");
}

#[test]
fn volume_pause_holds_requests_until_resume() {
    let v = Volume::new();
    let a = v.addr();
    assert_eq!(request(&a, "PUT", "/p", &[], b"paused").status, 201);

    v.pause();
    let mut c = Client::connect(&a); // the kernel still accepts
    c.send(&encode_request("GET", "/p", &[], b""));
    c.stream().set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let err = c.try_read_response("GET").expect_err("a paused volume answered");
    assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock), "{err}");

    v.resume();
    c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
    let r = c.read_response("GET");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"paused"[..]));
}

#[test]
fn volumes_run_side_by_side_and_drop_cleans_up() {
    let (v1, v2) = (Volume::new(), Volume::new());
    assert_ne!(v1.addr(), v2.addr());
    assert_eq!(request(&v1.addr(), "PUT", "/only1", &[], b"1").status, 201);
    assert_eq!(request(&v2.addr(), "PUT", "/only2", &[], b"2").status, 201);
    assert_eq!((v1.files(), v2.files()), (vec!["only1".to_string()], vec!["only2".to_string()]));

    let (pid, dir, addr) = (v1.pid().unwrap(), v1.dir().to_path_buf(), v1.addr());
    v1.pause(); // Drop must cope with a frozen volume too
    drop(v1);
    assert!(!process_exists(pid) && !process_exists(-pid), "nginx left behind");
    assert!(!dir.exists(), "temp dir left behind");
    assert!(std::net::TcpStream::connect(&addr).is_err());
    assert_eq!(get(&v2.addr(), "/only2").body, b"2");
}

#[test]
fn bin_volume_refuses_bad_setups_in_one_line() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bin/volume");
    let dir = TempDir::new("cli");
    let run = |port: Option<String>| {
        let mut cmd = std::process::Command::new(script);
        cmd.arg(dir.path()).env_remove("PORT");
        if let Some(p) = port {
            cmd.env("PORT", p);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).trim_end().to_string())
    };
    let (code, err) = run(None);
    assert_eq!(code, Some(1));
    assert!(!err.contains('\n') && err.contains("PORT is not set"), "{err}");
    let (code, err) = run(Some("http".into()));
    assert_eq!(code, Some(1));
    assert!(!err.contains('\n') && err.contains("PORT must be"), "{err}");

    let busy = Volume::new();
    let port = busy.addr().rsplit(':').next().unwrap().to_string();
    let (code, err) = run(Some(port.clone()));
    assert_eq!(code, Some(1));
    assert_eq!(err, format!("volume: port {port} is already in use"));
}

/// `bin/volume` serving `dir` on `port`, in a process group of its own (a test kills nginx
/// with its workers by it), its stderr kept for the test to read.
fn bin_volume(dir: &std::path::Path, port: u16) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bin/volume"));
    cmd.arg(dir).env("PORT", port.to_string()).stderr(std::process::Stdio::piped()).process_group(0);
    cmd
}

/// A volume whose nginx was killed with `kill -9` starts again at once: nginx leaves its pid
/// file, and the dead process stays a zombie until its parent reaps it (a harness that has
/// not waited yet, a slow init), which `bin/volume` took for a server still running on the
/// folder ("already runs", exit 1).
#[test]
fn bin_volume_starts_again_after_its_nginx_was_killed_9() {
    let dir = TempDir::new("kill9");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let start = || bin_volume(dir.path(), port).spawn().unwrap();
    let mut first = start();
    wait_until("the volume to listen", TIMEOUT, || std::net::TcpStream::connect(&addr).is_ok());
    let pid = first.id() as i32;
    signal(-pid, libc::SIGKILL);
    let state = || std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    wait_until("nginx to be a zombie", TIMEOUT, || state().contains("State:\tZ"));
    wait_until("the port to close", TIMEOUT, || std::net::TcpStream::connect(&addr).is_err());
    let mut second = start();
    let began = Instant::now();
    let mut up = false;
    while began.elapsed() < TIMEOUT && second.try_wait().unwrap().is_none() {
        if std::net::TcpStream::connect(&addr).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(-(second.id() as i32), libc::SIGKILL);
    let _ = (second.wait(), first.wait());
    let err = if up { String::new() } else { std::io::read_to_string(second.stderr.take().unwrap()).unwrap() };
    assert!(up, "bin/volume did not start again: {err}");
}

/// Building and running mkv needs no systemd: only tests/deploy.rs checks units with
/// `systemd-analyze`. `bin/deps` (which `bin/mkv` and `bin/cluster` run) asked for it on
/// every machine without it, so a user without root could not build ("missing packages;
/// run: sudo apt-get install -y systemd") and root got it installed for nothing. Run here
/// as an unprivileged user (it would install what is missing as root) with a PATH of
/// exactly the tools it checks.
#[test]
fn bin_deps_does_not_ask_for_systemd_outside_the_tests() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bin/deps");
    let tools = TempDir::new("deps-path");
    let path = std::env::var("PATH").unwrap_or_default();
    for tool in ["bash", "env", "dirname", "ls", "clang", "curl", "pkg-config"] {
        let found = path.split(':').map(|d| std::path::Path::new(d).join(tool)).find(|p| p.is_file());
        let Some(found) = found else { panic!("{tool} is not on the PATH") };
        std::os::unix::fs::symlink(found, tools.path().join(tool)).unwrap();
    }
    // rustup's cargo lives in root's home, out of the other user's reach: bin/deps only
    // asks that there is one
    let cargo = tools.path().join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bash = tools.path().join("bash");
    // SAFETY: getuid has no preconditions
    let mut cmd = if unsafe { libc::getuid() } == 0 {
        let mut c = std::process::Command::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bash);
        c
    } else {
        std::process::Command::new(&bash)
    };
    cmd.arg(script).env_clear().env("PATH", tools.path()).env("HOME", tools.path());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bin/deps failed: {err}");
    assert!(!err.contains("systemd"), "{err}");
}

/// The workers of an nginx whose master alone was killed serve on: a `bin/volume` started
/// again on the folder refuses (the port is taken) before it touches anything, and the
/// bodies those workers are receiving stay.
/// Whether an HTTP server at `addr` answers a request within a second.
fn answers(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 5];
    s.write_all(b"HEAD / HTTP/1.0\r\n\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

#[test]
fn bin_volume_leaves_the_orphaned_workers_of_a_killed_nginx_alone() {
    let dir = TempDir::new("orphans");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut first = bin_volume(dir.path(), port).spawn().unwrap();
    // a worker's answer, not the listening socket alone: nginx's master listens before it
    // starts the workers, and killed then it left none, so the second bin/volume started an
    // nginx in the foreground and the test waited on it for good
    wait_until("a worker to answer", TIMEOUT, || answers(&addr));
    let pid = first.id() as i32;
    signal(pid, libc::SIGKILL);
    let _ = first.wait();
    let receiving = dir.path().join(".tmp/body/0000000001");
    std::fs::write(&receiving, b"half a body").unwrap();
    let mut second = bin_volume(dir.path(), port).spawn().unwrap();
    let done = Instant::now() + TIMEOUT;
    while second.try_wait().unwrap().is_none() && Instant::now() < done {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = second.try_wait().unwrap().is_none();
    if started {
        signal(-(second.id() as i32), libc::SIGKILL);
    }
    let out = second.wait_with_output();
    let up = std::net::TcpStream::connect(&addr).is_ok();
    signal(-pid, libc::SIGKILL);
    assert!(!started, "a second nginx started on the folder");
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(up, "the orphaned workers stopped serving");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(receiving.exists(), "a body the workers were receiving was deleted");
}

#[test]
fn master_banner_is_parsed() {
    assert_eq!(parse_listening("mkv: listening on 127.0.0.1:41234 (2 threads, io_uring)"), Some(41234));
    assert_eq!(parse_listening("mkv: listening on [::]:3000"), Some(3000));
    assert_eq!(parse_listening("mkv: volume 127.0.0.1:1 is down"), None);
}

/// `bin/cluster` (the README's first command) stops cleanly on Ctrl-C. A terminal's SIGINT
/// goes to every process of the foreground group, and the script's trap then sent the
/// master a SIGTERM of its own: a second stop signal, so the master exited at once
/// ("second stop signal: exiting now"), with no drain and its index not flushed.
#[test]
fn bin_cluster_stops_cleanly_on_ctrl_c() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let data = TempDir::new("cluster");
    // the master's port and the three after it, for the volumes
    let port = loop {
        let p = free_port();
        if p < 60000 && (1..=3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bin/cluster"));
    cmd.args(["-admin", ""]).env("MKV_DATA", data.path()).env("PORT", port.to_string()).process_group(0);
    // as from a terminal: a test run started in a non-interactive shell's background (CI)
    // has SIGINT ignored, which bash inherits and then cannot trap
    // SAFETY: async-signal-safe calls only, between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run bin/cluster");
    let group = child.id() as i32;
    let addr = format!("127.0.0.1:{port}");
    let up = || std::net::TcpStream::connect(&addr).is_ok() && get(&addr, "/?list").status == 200;
    wait_until("bin/cluster's master to answer", Duration::from_secs(120), up);
    assert_eq!(request(&addr, "PUT", "/ctrl-c", &[], b"kept").status, 201);
    // what a terminal's Ctrl-C does
    // SAFETY: a signal to the process group this test made
    assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("bin/cluster's output"));
    let began = Instant::now();
    while !waiter.is_finished() && began.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !waiter.is_finished() {
        // the servers run in sessions of their own: found by their data folder
        let dir = data.path().display().to_string();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                // SAFETY: a process of this test's own cluster
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // SAFETY: as above
        unsafe { libc::kill(-group, libc::SIGKILL) };
        panic!("bin/cluster still running 30 s after Ctrl-C");
    }
    let out = waiter.join().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("second stop signal"), "{said}");
    assert!(said.contains("mkv: stopped"), "{said}");
    assert!(!up(), "the master still answers");
}
