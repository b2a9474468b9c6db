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
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a process may take to come up, or a polled condition to become true.
pub const TIMEOUT: Duration = Duration::from_secs(20);

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

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) only sends a signal; a stale pid at worst yields ESRCH.
    unsafe { libc::kill(pid, sig) };
}

/// Waits up to `timeout` for `child` to exit; true if it did.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
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
        let mut master = Master { child: None, port: 0, args, lines: Arc::default(), db };
        master.spawn();
        master
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mkv"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mkv server");
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

/// Runs `mkv <args>` to completion (killed after `TIMEOUT`): (exit code, stderr).
pub fn run_mkv(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mkv"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mkv");
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

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// names lowercased, in the order received
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
