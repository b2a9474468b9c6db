//! Test harness: real nginx volumes (`bin/volume`) and a real `mkv` master, each on a free
//! port with its own temp dir, plus a raw HTTP/1.1 client that shows exactly what came back.
//!
//! Every process a test starts is stopped by PID when its handle drops. Only std is used,
//! and `libc` (already a dependency) for signals.
#![allow(dead_code)]

pub mod layout;

use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a process may take to come up, or a polled condition to become true.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A TCP proxy on `listener` to `upstream`, standing in for a volume that misbehaves: what a
/// client sends goes up in reads of at most `chunk` bytes, each shown first to `hook` (which
/// may sleep: a slow or stalling volume); answers come back as they are. Returns its address.
pub fn proxy(
    listener: TcpListener,
    upstream: String,
    chunk: usize,
    hook: impl Fn(&[u8]) + Send + Sync + 'static,
) -> String {
    cutting_proxy(listener, upstream, chunk, move |b| {
        hook(b);
        true
    })
}

/// [`proxy`] whose `hook` may also cut a connection (both ways, the bytes shown not sent
/// up) by returning false: a volume that dies at that point of a request.
pub fn cutting_proxy(
    listener: TcpListener,
    upstream: String,
    chunk: usize,
    hook: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
) -> String {
    let addr = listener.local_addr().unwrap().to_string();
    let hook = Arc::new(hook);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut down) = conn else { continue };
            let Ok(mut up) = TcpStream::connect(&upstream) else { continue };
            let (mut down2, mut up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            let hook = hook.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; chunk];
                while let Ok(n) = down.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !hook(&buf[..n]) {
                        let _ = down.shutdown(std::net::Shutdown::Both);
                        let _ = up.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Write);
            });
            thread::spawn(move || {
                let _ = io::copy(&mut up2, &mut down2);
                let _ = down2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// A volume behind a [`cutting_proxy`] that, once armed, dies at the first request that
/// begins with `trigger`: that request is cut, and so is every connection that sends
/// anything (its probes too) for `dead`; then it passes everything again.
pub struct DyingProxy {
    pub addr: String,
    armed: Arc<std::sync::atomic::AtomicBool>,
    until: Arc<Mutex<Option<Instant>>>,
}

impl DyingProxy {
    pub fn new(upstream: String, trigger: &'static [u8], dead: Duration) -> DyingProxy {
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let until = Arc::new(Mutex::new(None::<Instant>));
        let (a, u) = (armed.clone(), until.clone());
        let addr = cutting_proxy(TcpListener::bind("127.0.0.1:0").unwrap(), upstream, 64 << 10, move |bytes| {
            let mut until = u.lock().unwrap();
            if bytes.starts_with(trigger) && a.swap(false, Ordering::Relaxed) {
                *until = Some(Instant::now() + dead);
            }
            until.is_none_or(|t| Instant::now() >= t)
        });
        DyingProxy { addr, armed, until }
    }

    pub fn arm(&self) {
        self.armed.store(true, Ordering::Relaxed);
    }

    /// Whether it died and is dead still.
    pub fn dead(&self) -> bool {
        self.until.lock().unwrap().is_some_and(|t| Instant::now() < t)
    }
}

/// Three volumes, the first behind a [`DyingProxy`] that dies for 3 s at `trigger` once
/// armed, and a master on them (`-subvolumes 1`, two threads).
pub fn dying_first_volume(trigger: &'static [u8]) -> (Vec<Volume>, DyingProxy, Master) {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let dying = DyingProxy::new(vols[0].addr(), trigger, Duration::from_secs(3));
    let on = [dying.addr.clone(), vols[1].addr(), vols[2].addr()];
    let master = Master::start_on(&on, &["-threads", "2", "-subvolumes", "1"]);
    (vols, dying, master)
}

/// A listener on a free loopback port whose connections take little before the sender
/// waits, as a slow volume over a real network does: `rcvbuf` bytes of receive buffer and,
/// given `mss`, segments of that size rather than loopback's 64 KiB (the sender's buffer
/// grows with its segments, and would take a whole body of a megabyte at once).
pub fn narrow_listener(rcvbuf: i32, mss: Option<i32>) -> TcpListener {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let opts = [(libc::SOL_SOCKET, libc::SO_RCVBUF, Some(rcvbuf)), (libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss)];
    for (level, opt, v) in opts {
        let Some(v) = v else { continue };
        // SAFETY: setsockopt reads an int from a live local; accepted sockets inherit it
        let r = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                level,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "setsockopt {opt}: {}", io::Error::last_os_error());
    }
    listener
}

/// A port nobody listens on now and that this test process has not handed out before
/// (volumes listen with SO_REUSEPORT, so two of them on one port would both start).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mkv-test-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir` as a relative path, sorted, skipping dot-entries (nginx's own).
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) only sends a signal; a stale pid at worst yields ESRCH.
    unsafe { libc::kill(pid, sig) };
}

/// Waits up to `timeout` for `child` to exit; true if it did.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One `bin/volume` (nginx master and workers, in a process group of their own).
pub struct Volume {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
    /// More environment for bin/volume (`SECRET_FILE`, `SIGN`), kept for restarts.
    env: Vec<(String, String)>,
}

impl Volume {
    pub fn new() -> Volume {
        Volume::with_env(&[])
    }

    /// A volume started with more environment, e.g. `[("SECRET_FILE", path)]`.
    pub fn with_env(env: &[(&str, &str)]) -> Volume {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut last = String::new();
        for _ in 0..5 {
            let mut volume = Volume { port: free_port(), child: None, dir: TempDir::new("vol"), env: env.clone() };
            match volume.spawn() {
                Ok(()) => return volume,
                Err(log) if log.contains("in use") => last = log,
                Err(log) => panic!("bin/volume did not start:\n{log}"),
            }
        }
        panic!("bin/volume found no free port:\n{last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join(".volume.log");
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bin/volume"))
            .arg(self.dir.path())
            .env("PORT", self.port.to_string())
            .env("WORKERS", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0) // so pause() and a last-resort kill reach the workers too
            .spawn()
            .expect("spawn bin/volume");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited with {status}:\n{log}"));
            }
            if answers_http(&self.addr()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(fs::read_to_string(&log_path).unwrap_or_default());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
    /// Data files held, relative to the folder (`5d/41/aGVsbG8=`).
    pub fn files(&self) -> Vec<String> {
        files_under(self.dir())
    }

    /// SIGTERM, then waits until nginx (master and workers) has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            signal(-pid, libc::SIGCONT); // a stopped process would never see the TERM
            signal(pid, libc::SIGTERM);
            if !wait_exit(&mut child, Duration::from_secs(10)) {
                signal(-pid, libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }
    /// Starts again on the same port and folder.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "volume {} is already running", self.addr());
        if let Err(log) = self.spawn() {
            panic!("bin/volume did not restart on {}:\n{log}", self.addr());
        }
    }
    /// Freezes master and workers: connections are accepted by the kernel, never answered.
    pub fn pause(&self) {
        signal(-self.pid().expect("volume not running"), libc::SIGSTOP);
    }
    pub fn resume(&self) {
        signal(-self.pid().expect("volume not running"), libc::SIGCONT);
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answers_http(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 5];
    s.write_all(b"HEAD / HTTP/1.0\r\n\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

/// The `mkv server` binary under test. Its stdout and stderr are drained into `lines()`.
pub struct Master {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    lines: Arc<Mutex<Vec<String>>>,
    db: TempDir,
    /// Soft open-files limit the process starts with (None: inherited).
    nofile: Option<u64>,
}

/// `server -port 0 -db <db> -volumes <a,b,c> <extra...>`
pub fn server_args(db: &Path, volumes: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["server", "-port", "0", "-db"].map(String::from).into();
    args.extend([db.display().to_string(), "-volumes".into(), volumes.join(",")]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

impl Master {
    pub fn start(volumes: &[Volume], extra: &[&str]) -> Master {
        Self::start_on(&volumes.iter().map(Volume::addr).collect::<Vec<_>>(), extra)
    }
    pub fn start_on(volumes: &[String], extra: &[&str]) -> Master {
        let db = TempDir::new("db");
        let args = server_args(db.path(), volumes, extra);
        Self::start_args(db, args)
    }
    /// Any command line (it must make the server print `listening on <addr>`).
    pub fn start_args(db: TempDir, args: Vec<String>) -> Master {
        Self::start_args_nofile(db, args, None)
    }
    /// [`Master::start_args`] with the soft open-files limit set to `soft` (the hard one kept),
    /// as a shell's `ulimit -Sn` would leave it.
    pub fn start_args_nofile(db: TempDir, args: Vec<String>, soft: Option<u64>) -> Master {
        let mut master = Master { child: None, port: 0, args, lines: Arc::default(), db, nofile: soft };
        master.spawn();
        master
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mkv"));
        cmd.args(&self.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(soft) = self.nofile {
            // SAFETY: getrlimit/setrlimit are async-signal-safe and touch only this process.
            unsafe {
                cmd.pre_exec(move || {
                    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    r.rlim_cur = soft.min(r.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn mkv server");
        let first = self.lines.lock().unwrap().len();
        drain(child.stdout.take().unwrap(), self.lines.clone());
        drain(child.stderr.take().unwrap(), self.lines.clone());
        self.child = Some(child); // from here on, Drop kills it even if we panic
        let deadline = Instant::now() + TIMEOUT;
        self.port = loop {
            let port = self.lines.lock().unwrap()[first..].iter().find_map(|l| parse_listening(l));
            if let Some(port) = port {
                break port;
            }
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                thread::sleep(Duration::from_millis(100)); // let the drain threads finish
                panic!("mkv server exited with {status}:\n{}", self.lines().join("\n"));
            }
            let waited = Instant::now() >= deadline;
            assert!(!waited, "mkv server never said `listening on`:\n{}", self.lines().join("\n"));
            thread::sleep(Duration::from_millis(10));
        };
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn db(&self) -> &Path {
        self.db.path()
    }
    /// Everything the server printed so far (across restarts).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    /// The admin listener's address from the `admin on <addr>` line of the latest start,
    /// waiting up to 2 s for it (it follows `listening on` at once); None without one.
    pub fn admin_addr(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let lines = self.lines();
            let latest = lines.iter().rev().take_while(|l| !l.starts_with("--- restart"));
            if let Some(addr) = latest
                .filter_map(|l| l.split_once("admin on "))
                .find_map(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
            {
                return Some(addr);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    /// SIGTERM (a graceful stop), then waits up to `within` for it to exit: its exit status,
    /// or None if it was still running then (it is then killed).
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Some(c) = &self.child {
            signal(c.id() as i32, libc::SIGTERM);
        }
        self.wait_exit(within)
    }
    /// Waits up to `within` for it to exit on its own (a stop the test signalled itself: a
    /// second SIGTERM would make it exit at once, with 1): its exit status, or None if it was
    /// still running then (it is then killed).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if wait_exit(&mut child, within) {
            return child.wait().ok();
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
    /// Kills it if running and starts it again with the same db and arguments (on a new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.lines.lock().unwrap().push("--- restart ---".into());
        self.spawn();
    }
    /// Same db, other volumes and flags.
    pub fn restart_with(&mut self, volumes: &[String], extra: &[&str]) {
        self.args = server_args(self.db.path(), volumes, extra);
        self.restart();
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn drain(pipe: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    });
}

/// `mkv: listening on 127.0.0.1:41234 (...)` → 41234
pub fn parse_listening(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addr = rest.split_whitespace().next()?;
    addr[addr.rfind(':')? + 1..].parse().ok()
}

/// Whether the `mkv` binary under test takes `--<flag>` (a test of a flag added later can
/// then say what an older binary lacks instead of failing on the command line).
pub fn mkv_has_flag(flag: &str) -> bool {
    static HELP: OnceLock<String> = OnceLock::new();
    let help = HELP.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_mkv")).arg("--help").output().expect("run mkv --help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    let needle = format!("--{flag}");
    help.match_indices(&needle).any(|(i, _)| {
        let next = help.as_bytes().get(i + needle.len()).copied().unwrap_or(b' ');
        !(next.is_ascii_alphanumeric() || next == b'-')
    })
}

/// Starts `mkv <args>` with no stdin, stdout dropped and stderr as given (a test that kills
/// it midway, or reads its progress as it comes).
pub fn spawn_mkv(args: &[&str], stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mkv"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn mkv")
}

/// Runs `mkv <args>` to completion (killed after `TIMEOUT`): (exit code, stderr).
pub fn run_mkv(args: &[&str]) -> (Option<i32>, String) {
    let mut child = spawn_mkv(args, Stdio::piped());
    let lines = Arc::default();
    drain(child.stderr.take().unwrap(), Arc::clone(&lines));
    if !wait_exit(&mut child, TIMEOUT) {
        let _ = child.kill();
    }
    let code = child.wait().unwrap().code();
    thread::sleep(Duration::from_millis(50));
    let stderr = lines.lock().unwrap().join("\n");
    (code, stderr)
}

/// `n` volumes and a master over them; the master drops (is killed) first.
pub struct Cluster {
    pub master: Master,
    pub volumes: Vec<Volume>,
}

impl Cluster {
    pub fn new(n: usize, extra: &[&str]) -> Cluster {
        let volumes: Vec<Volume> = (0..n).map(|_| Volume::new()).collect();
        Cluster { master: Master::start(&volumes, extra), volumes }
    }
    pub fn addr(&self) -> String {
        self.master.addr()
    }
}

// ---- HTTP/1.1 client -------------------------------------------------------------------

#[derive(Clone)]
pub struct Response {
    pub status: u16,
    /// names lowercased, in the order received
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The body as text (lossy, cut at 600 bytes), so that a failed assertion reads.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(600)]);
        let more = if self.body.len() > 600 { format!("... ({} bytes)", self.body.len()) } else { String::new() };
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format!("{body}{more}"))
            .finish()
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The bytes of a request; adds `Host` and `Content-Length` unless `headers` frame it.
pub fn encode_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        out += "Host: mkv-test\r\n";
    }
    for (name, value) in headers {
        out += &format!("{name}: {value}\r\n");
    }
    let framed = has("content-length") || has("transfer-encoding");
    if !framed && (!body.is_empty() || method == "PUT" || method == "POST") {
        out += &format!("Content-Length: {}\r\n", body.len());
    }
    out += "\r\n";
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Client::connect(addr).request(method, path, headers, body)
}

pub fn get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// The size the master's record of unlinked `key` names (`?unlinked&records`), if it lists it.
pub fn unlinked_size(addr: &str, key: &str) -> Option<u64> {
    let r = get(addr, "/?unlinked&records");
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    v["keys"].as_array()?.iter().find(|k| k["key"] == key)?["size"].as_u64()
}

/// GETs `path` from the master, which must answer 302, then GETs the `Location`.
pub fn get_follow(addr: &str, path: &str) -> Response {
    let r = get(addr, path);
    assert_eq!(r.status, 302, "GET {path} on the master: {r:?}");
    let location = r.header("location").expect("302 without Location");
    let (host, target) = split_url(location);
    get(host, target)
}

/// `http://host:port/a/b` → (`host:port`, `/a/b`)
pub fn split_url(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    rest.split_at(rest.find('/').unwrap_or(rest.len()))
}

/// A keep-alive connection: requests go out one after the other on the same socket.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { reader: BufReader::new(stream) }
    }
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }
    /// Sends a request and reads its final answer (skipping any `100 Continue`).
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send(&encode_request(method, path, headers, body));
        loop {
            let r = self.read_response(method);
            if r.status >= 200 {
                return r;
            }
        }
    }
    /// The next response on the wire, interim `1xx` included; panics on EOF or timeout.
    pub fn read_response(&mut self, method: &str) -> Response {
        self.try_read_response(method).unwrap_or_else(|e| panic!("reading a response to {method}: {e}"))
    }
    pub fn try_read_response(&mut self, method: &str) -> io::Result<Response> {
        read_response(&mut self.reader, method)
    }
    /// True when the server closes the connection (EOF or reset) within `within`, with no
    /// further bytes sent.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.stream().set_read_timeout(Some(within)).unwrap();
        let mut byte = [0u8; 1];
        let closed = match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("expected the connection to close, got more bytes"),
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        self.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
        closed
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "connection closed"));
    }
    Ok(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string())
}

fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let bad = |what: String| io::Error::new(ErrorKind::InvalidData, what);
    let status_line = read_line(r)?;
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad(format!("bad header {line:?}")))?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = Response { status, headers, body: Vec::new() };
    if method == "HEAD" || status < 200 || status == 204 || status == 304 {
        return Ok(response);
    }
    if response.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !read_line(r)?.is_empty() {} // trailers
                break;
            }
            let start = response.body.len();
            response.body.resize(start + size, 0);
            r.read_exact(&mut response.body[start..])?;
            read_line(r)?;
        }
    } else if let Some(len) = response.header("content-length") {
        let len = len.parse().map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        response.body.resize(len, 0);
        r.read_exact(&mut response.body)?;
    } else {
        r.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

// ---- raw sockets -----------------------------------------------------------------------

/// What came back on a raw socket, and whether the server closed it.
#[derive(Debug)]
pub struct Raw {
    pub bytes: Vec<u8>,
    pub closed: bool,
}

impl Raw {
    /// Status of the first response in `bytes`, if one arrived.
    pub fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(self.bytes.get(..12)?).ok()?;
        text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Connects, sends `bytes` (a write the server refuses midway is not an error), then reads
/// until the server closes or `quiet` passes without a byte.
pub fn raw(addr: &str, bytes: &[u8], quiet: Duration) -> Raw {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = stream.write_all(bytes);
    read_raw(&mut stream, quiet)
}

/// Reads until EOF or reset (`closed`), or until `quiet` passes without a byte.
pub fn read_raw(stream: &mut TcpStream, quiet: Duration) -> Raw {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Raw { bytes: Vec::new(), closed: false };
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                out.closed = true;
                break;
            }
            Ok(n) => out.bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                out.closed = true; // reset
                break;
            }
        }
    }
    out
}

// ---- a process seen from /proc ---------------------------------------------------------

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field}"));
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().expect("a number of kB")
}

/// Threads of the process (entries of /proc/<pid>/task).
pub fn proc_threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/<pid>/task").count()
}

/// Open file descriptors of the process (entries of /proc/<pid>/fd).
pub fn proc_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/<pid>/fd").count()
}

/// Established TCP connections the process holds whose local port is `port` (its clients,
/// when `port` is one it listens on): the sockets of /proc/<pid>/fd found in /proc/net/tcp*.
pub fn proc_tcp_conns(pid: u32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(file).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            // state 01: ESTABLISHED
            if local_port == Some(port) && f[3] == "01" {
                inodes.insert(format!("socket:[{}]", f[9]));
            }
        }
    }
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| inodes.contains(l.to_string_lossy().as_ref())))
        .count()
}

/// CPU time the process has used so far, user plus system (all its threads).
pub fn proc_cpu(pid: u32) -> Duration {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // fields after the command name, which is in parentheses and may hold spaces
    let rest = &text[text.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name and state
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The process's open-files limit from /proc/<pid>/limits: (soft, hard).
pub fn proc_nofile(pid: u32) -> (String, String) {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/<pid>/limits");
    let line = text.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let mut v = line["Max open files".len()..].split_whitespace();
    (v.next().unwrap().to_string(), v.next().unwrap().to_string())
}

/// An IPv4 address of this machine that is not loopback, if it has one.
pub fn own_ipv4() -> Option<std::net::Ipv4Addr> {
    let mut found = None;
    // SAFETY: getifaddrs hands back a list we only read and then free.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut at = list;
        while !at.is_null() {
            let a = (*at).ifa_addr;
            if !a.is_null() && (*a).sa_family as i32 == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() && found.is_none() {
                    found = Some(ip);
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}
