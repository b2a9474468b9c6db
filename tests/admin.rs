//! The admin listener (`-admin`): `/metrics` passes `promtool check metrics` and counts
//! exactly what was done, `/health` follows the volumes, where the listener binds by
//! default and when it cannot, and the status page as headless Chromium renders it.
//!
//! promtool and chromium come from Debian (`prometheus`, `chromium`; bin/deps installs
//! them). Without them a test skips that part, except under `CI=true`, where it fails.

mod common;

use common::*;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A program on PATH; None (the caller skips) when it is missing, except under CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        let package = if name == "promtool" { "prometheus" } else { name };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing under CI=true (Debian package {package}; bin/deps installs it)"
        );
        eprintln!("skipping: {name} is missing (apt-get install {package}, or run bin/deps)");
    }
    found
}

/// `-admin 127.0.0.1:0` over `n` volumes: the cluster and the admin address.
fn cluster(n: usize, extra: &[&str]) -> (Cluster, String) {
    let mut args = vec!["-admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let c = Cluster::new(n, &args);
    let admin = c.master.admin_addr().unwrap_or_else(|| panic!("no `admin on` line:\n{}", c.master.lines().join("\n")));
    (c, admin)
}

fn metrics(admin: &str) -> String {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    r.text()
}

/// The value of one series, written exactly as exposed (`name{a="b",c="d"}`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn volume_up(admin: &str, volume: &str) -> Option<f64> {
    value(&metrics(admin), &format!("mkv_volume_up{{volume=\"{volume}\"}}"))
}

/// A client that hangs up half way through its body is counted as nginx counts it, `499`
/// (client closed request), natively and through S3: it was counted `400`, which reads as a
/// malformed request.
#[test]
fn a_client_that_hangs_up_mid_body_is_counted_499() {
    use std::io::Write;
    let (c, admin) = cluster(3, &["-threads", "1"]);
    for (path, extra) in [("/hangup/native", ""), ("/hangup/s3", "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n")] {
        let mut s = std::net::TcpStream::connect(c.addr()).unwrap();
        let head = format!("PUT {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: 3000000\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![b'x'; 1_500_000]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let said =
        |m: &str, st: &str| value(&metrics(&admin), &format!("mkv_requests_total{{method=\"{m}\",status=\"{st}\"}}"));
    wait_until("both hang-ups counted", Duration::from_secs(10), || {
        said("PUT", "499").is_some() && said("S3", "499").is_some()
    });
    assert_eq!((said("PUT", "499"), said("S3", "499")), (Some(1.0), Some(1.0)));
    assert_eq!((said("PUT", "400"), said("S3", "400")), (None, None));
    assert_eq!(get(&c.addr(), "/hangup/native").status, 404, "nothing stored");
}

#[test]
fn metrics_pass_promtool_and_count_exactly_what_was_done() {
    // one thread: one GET cache, so which GETs hit it is known
    let (mut c, admin) = cluster(3, &["-threads", "1"]);
    let api = c.addr();
    let keys: Vec<String> = (0..5).map(|i| format!("/metrics/key{i}")).collect();
    for k in &keys {
        assert_eq!(request(&api, "PUT", k, &[], b"some bytes").status, 201, "PUT {k}");
    }
    assert_eq!(request(&api, "PUT", &keys[0], &[], b"again").status, 403);
    // a PUT whose query says `list` writes its key: a PUT, not a listing
    assert_eq!(request(&api, "PUT", "/metrics/other?list", &[], b"x").status, 201);
    for k in keys.iter().chain(&keys) {
        assert_eq!(get(&api, k).status, 302, "GET {k}");
    }
    assert_eq!(request(&api, "HEAD", &keys[1], &[], b"").status, 302);
    for _ in 0..2 {
        assert_eq!(get(&api, "/metrics/nothing").status, 404);
    }
    assert_eq!(get(&api, "/metrics/?list").status, 200);
    assert_eq!(request(&api, "UNLINK", &keys[4], &[], b"").status, 204);
    assert_eq!(request(&api, "DELETE", &keys[4], &[], b"").status, 204);
    assert_eq!(request(&api, "DELETE", &keys[4], &[], b"").status, 404);
    // earlier scrapes (and a health check) are admin traffic, not GETs
    metrics(&admin);
    assert_eq!(get(&admin, "/health").status, 200);

    let text = metrics(&admin);
    let count = |series: &str| must(&text, series) as u64;
    assert_eq!(count(r#"mkv_requests_total{method="PUT",status="201"}"#), 6);
    assert_eq!(count(r#"mkv_requests_total{method="PUT",status="403"}"#), 1);
    assert_eq!(count(r#"mkv_requests_total{method="GET",status="302"}"#), 10);
    assert_eq!(count(r#"mkv_requests_total{method="GET",status="404"}"#), 2);
    assert_eq!(count(r#"mkv_requests_total{method="HEAD",status="302"}"#), 1);
    assert_eq!(count(r#"mkv_requests_total{method="LIST",status="200"}"#), 1);
    assert_eq!(count(r#"mkv_requests_total{method="UNLINK",status="204"}"#), 1);
    assert_eq!(count(r#"mkv_requests_total{method="DELETE",status="204"}"#), 1);
    assert_eq!(count(r#"mkv_requests_total{method="DELETE",status="404"}"#), 1);
    assert_eq!(count(r#"mkv_requests_total{method="ADMIN",status="200"}"#), 2, "the scrape and the health check");
    assert_eq!(count(r#"mkv_request_duration_seconds_count{method="GET"}"#), 12);
    assert_eq!(count(r#"mkv_request_duration_seconds_bucket{method="GET",le="+Inf"}"#), 12);
    assert_eq!(count(r#"mkv_request_duration_seconds_count{method="PUT"}"#), 7);
    // first GET of each key and of the missing one read the index; the rest, the cache
    assert_eq!(count("mkv_get_cache_misses_total"), 5 + 1);
    assert_eq!(count("mkv_get_cache_hits_total"), 5 + 1 + 1, "second GETs, the HEAD, the second 404");
    for v in &c.volumes {
        assert_eq!(count(&format!("mkv_volume_up{{volume=\"{}\"}}", v.addr())), 1, "{}", v.addr());
    }
    assert_eq!(count("mkv_replicas"), 3);
    assert_eq!(must(&text, r#"mkv_index_keys{state="live"}"#), 5.0);
    assert_eq!(must(&text, r#"mkv_index_keys{state="unlinked"}"#), 0.0);

    if let Some(promtool) = tool("promtool") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool check metrics ({}):\n{said}\n{text}",
            out.status
        );
    }

    let down = c.volumes[1].addr();
    c.volumes[1].stop();
    wait_until("mkv_volume_up 0 for the stopped volume", Duration::from_secs(2), || {
        volume_up(&admin, &down) == Some(0.0)
    });
    assert_eq!(volume_up(&admin, &c.volumes[0].addr()), Some(1.0));
}

/// The key counts are exact through rounds of PUT, UNLINK, DELETE and PUT again of the same
/// keys, and across a restart (RocksDB's estimate, shown before, said 1 for ~200 keys after
/// such rounds).
#[test]
fn key_counts_stay_exact_through_churn_and_a_restart() {
    let (mut c, admin) = cluster(3, &[]);
    let api = c.addr();
    let keys: Vec<String> = (0..60).map(|i| format!("/churn/{i}")).collect();
    for round in 0..4 {
        for k in &keys {
            assert_eq!(request(&api, "PUT", k, &[], b"v").status, 201, "round {round}: PUT {k}");
        }
        for k in keys.iter().step_by(3) {
            assert_eq!(request(&api, "UNLINK", k, &[], b"").status, 204, "UNLINK {k}");
        }
        for k in &keys {
            assert_eq!(request(&api, "DELETE", k, &[], b"").status, 204, "round {round}: DELETE {k}");
        }
    }
    for k in &keys[..45] {
        assert_eq!(request(&api, "PUT", k, &[], b"v").status, 201, "PUT {k}");
    }
    for k in &keys[..10] {
        assert_eq!(request(&api, "UNLINK", k, &[], b"").status, 204, "UNLINK {k}");
    }
    let counts = |admin: &str| {
        let text = metrics(admin);
        (must(&text, r#"mkv_index_keys{state="live"}"#), must(&text, r#"mkv_index_keys{state="unlinked"}"#))
    };
    assert_eq!(counts(&admin), (35.0, 10.0));
    c.master.restart();
    let admin = c.master.admin_addr().expect("the admin port after the restart");
    assert_eq!(counts(&admin), (35.0, 10.0), "after a restart");
}

#[test]
fn health_follows_the_volumes_and_answers_while_the_api_port_is_full() {
    let (mut c, admin) = cluster(3, &["-replicas", "2", "-max-conns", "8"]);
    let health = |admin: &str| {
        let r = get(admin, "/health");
        (r.status, r.text())
    };
    assert_eq!(health(&admin), (200, "ok: 3 of 3 volumes up\n".to_string()));
    assert_eq!(get(&admin, "/nothing").status, 404);
    let r = request(&admin, "PUT", "/health", &[], b"x");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, VOLUMES, REPAIR, SNAPSHOT")), "{r:?}");

    // the API port full: every -max-conns slot held by an idle client; one more is refused
    let held: Vec<Client> = (0..8).map(|_| Client::connect(&c.addr())).collect();
    wait_until("the master to hold them", TIMEOUT, || {
        // the 8, and the scrape's own connection to the admin port
        value(&metrics(&admin), "mkv_open_connections").is_some_and(|n| n >= 9.0)
    });
    let mut refused = Client::connect(&c.addr());
    assert!(refused.closed_within(Duration::from_secs(2)), "a 9th API connection is over -max-conns");
    for _ in 0..20 {
        assert_eq!(health(&admin).0, 200, "the admin port answers while the API port is full");
    }
    drop(held);

    c.volumes[0].stop();
    wait_until("2 of 3 volumes up", Duration::from_secs(3), || health(&admin).1 == "ok: 2 of 3 volumes up\n");
    c.volumes[1].stop();
    wait_until("/health 503 with 1 volume up", Duration::from_secs(3), || health(&admin).0 == 503);
    assert_eq!(health(&admin).1, "1 of 3 volumes up, 2 replicas needed\n");
    c.volumes[1].start();
    wait_until("/health 200 again", Duration::from_secs(3), || health(&admin).0 == 200);
}

/// Idle clients of the admin port (scrapers, a status page left open, or one holding
/// connections on purpose) cannot keep `/health` from a load balancer: 16 of them held every
/// admin connection for the API port's idle minute (reset); then 64 held it for 5 s each,
/// and a client that opened a new connection for each one closed held it for good (a
/// helper's 20 of 20 probes reset). At the cap a new connection closes the one idle longest.
#[test]
fn idle_admin_clients_do_not_keep_health_from_answering() {
    let (_c, admin) = cluster(3, &[]);
    // 32 idle after a request, 32 that never sent one: every admin connection taken
    let mut held: Vec<Client> = (0..32)
        .map(|_| {
            let mut c = Client::connect(&admin);
            assert_eq!(c.request("GET", "/health", &[], b"").status, 200);
            c
        })
        .collect();
    held.extend((0..32).map(|_| Client::connect(&admin)));
    std::thread::sleep(Duration::from_millis(300));
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for round in 0..8 {
        let began = Instant::now();
        assert_eq!(raw(&admin, health, Duration::from_secs(2)).status(), Some(200), "round {round}, port full");
        assert!(began.elapsed() < Duration::from_secs(1), "round {round}: {:?}", began.elapsed());
        // the holder takes the room made at once
        held.push(Client::connect(&admin));
        std::thread::sleep(Duration::from_millis(50));
    }
    // the longest idle made way, not the newest
    assert!(held[0].closed_within(Duration::from_secs(1)), "the longest idle was closed");
    assert!(!held.last_mut().unwrap().closed_within(Duration::from_millis(300)), "the newest was closed");
}

/// A free port `p` whose `p + 1000` is free too.
fn port_with_free_admin() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX - 1000 && TcpListener::bind(("127.0.0.1", p + 1000)).is_ok() {
            return p;
        }
    }
}

#[test]
fn admin_defaults_to_port_plus_1000_on_loopback() {
    let vols = [Volume::new()];
    let p = port_with_free_admin();
    let master = Master::start(&vols, &["-replicas", "1", "-port", &p.to_string()]);
    assert_eq!(master.addr(), format!("127.0.0.1:{p}"));
    let admin = format!("127.0.0.1:{}", p + 1000);
    assert_eq!(master.admin_addr(), Some(admin.clone()));
    assert_eq!(get(&admin, "/health").status, 200);
}

#[test]
fn taken_default_admin_port_is_a_warning() {
    let vols = [Volume::new()];
    let p = port_with_free_admin();
    let _taken = TcpListener::bind(("127.0.0.1", p + 1000)).unwrap();
    let master = Master::start(&vols, &["-replicas", "1", "-port", &p.to_string()]);
    assert_eq!(request(&master.addr(), "PUT", "/k", &[], b"v").status, 201, "the API serves");
    assert_eq!(master.admin_addr(), None);
    let lines = master.lines();
    let warning = lines.iter().find(|l| l.contains("warning") && l.contains(&format!("127.0.0.1:{}", p + 1000)));
    assert!(warning.is_some_and(|l| l.contains("admin")), "no warning about the admin port:\n{}", lines.join("\n"));
}

#[test]
fn taken_explicit_admin_address_is_an_error() {
    let vols = [Volume::new()];
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = TempDir::new("db");
    let args = server_args(db.path(), &[vols[0].addr()], &["-replicas", "1", "-admin", &addr]);
    let (code, stderr) = run_mkv(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
    assert!(stderr.starts_with("mkv: ") && stderr.contains(&addr), "{stderr}");
    assert!(!db.path().join("CURRENT").exists(), "a master that did not start made an index");
}

/// `-listen` on an address no interface has says so (it asked whether another server ran
/// there); one taken asks that.
#[test]
fn a_listen_address_is_refused_with_its_reason() {
    let vols = [Volume::new()];
    let db = TempDir::new("db");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (listen, says) in [
        ("192.0.2.99:3000", "(no interface of this host has that address)"),
        (taken.as_str(), "(is another server running there?)"),
    ] {
        let args = server_args(db.path(), &[vols[0].addr()], &["-replicas", "1", "-admin", "", "-listen", listen]);
        let (code, stderr) = run_mkv(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line:\n{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        // a new empty index left behind: a verify took it for one holding nothing
        assert!(!db.path().join("CURRENT").exists(), "a master that did not start made an index");
    }
}

#[test]
fn empty_admin_address_turns_it_off() {
    let vols = [Volume::new()];
    let p = port_with_free_admin();
    let master = Master::start(&vols, &["-replicas", "1", "-port", &p.to_string(), "-admin", ""]);
    assert_eq!(request(&master.addr(), "PUT", "/k", &[], b"v").status, 201, "the API serves");
    assert_eq!(master.admin_addr(), None);
    assert!(std::net::TcpStream::connect(("127.0.0.1", p + 1000)).is_err(), "nothing on port+1000");
    assert!(!master.lines().iter().any(|l| l.contains("warning")), "{}", master.lines().join("\n"));
}

/// Headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=...`), a fresh
/// profile each time; killed (with its helpers) after 60 s.
fn chromium(bin: &Path, args: &[&str], url: &str) -> Output {
    use std::os::unix::process::CommandExt;
    let profile = TempDir::new("chromium");
    let mut child = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run chromium");
    let pid = child.id() as i32;
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill(2) of the process group we started; at worst ESRCH
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    });
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let stdout = std::io::read_to_string(out).unwrap_or_default();
    let status = child.wait().unwrap();
    let stderr = err.join().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    Output { status, stdout: stdout.into_bytes(), stderr: stderr.into_bytes() }
}

/// The `<tr>...</tr>` of the rendered page that holds `text`.
fn row<'a>(dom: &'a str, text: &str) -> &'a str {
    let at = dom.find(text).unwrap_or_else(|| panic!("no {text} in the page:\n{dom}"));
    let start = dom[..at].rfind("<tr").unwrap_or_else(|| panic!("{text} is not in a table row:\n{dom}"));
    let end = at + dom[at..].find("</tr>").expect("row end");
    &dom[start..end]
}

/// Headless Chromium renders the status page: the volumes and their state, the request
/// table and the key count, and a screenshot. `MKV_STATUS_PNG=path` keeps the screenshot
/// (docs/status-page.png is made so).
#[test]
fn status_page_in_headless_chromium() {
    let Some(chromium_bin) = tool("chromium") else { return };
    let (mut c, admin) = cluster(3, &["-replicas", "2"]);
    let api = c.addr();
    for i in 0..40 {
        let key = format!("/photos/{i:03}.jpg");
        assert_eq!(request(&api, "PUT", &key, &[], &vec![b'x'; 1000 + i * 100]).status, 201);
        for _ in 0..i % 7 {
            assert_eq!(get(&api, &key).status, 302);
        }
    }
    assert_eq!(get(&api, "/photos/missing.jpg").status, 404);
    assert_eq!(request(&api, "DELETE", "/photos/000.jpg", &[], b"").status, 204);
    let url = format!("http://{admin}/");

    let out = chromium(&chromium_bin, &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium --dump-dom ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    for v in &c.volumes {
        assert!(row(&dom, &v.addr()).contains(">up<"), "{} is up:\n{}", v.addr(), row(&dom, &v.addr()));
    }
    for method in ["PUT", "GET"] {
        assert!(row(&dom, &format!(">{method}<")).contains("class=\"n\""), "a {method} row:\n{dom}");
    }
    let live = must(&metrics(&admin), r#"mkv_index_keys{state="live"}"#) as u64;
    assert!(row(&dom, "live keys").contains(&format!(">{live}<")), "{live} live keys:\n{dom}");

    let down = c.volumes[2].addr();
    c.volumes[2].stop();
    wait_until("the volume down", Duration::from_secs(2), || volume_up(&admin, &down) == Some(0.0));
    // writes of keys with a replica there fail now (the page counts them as PUT 5xx)
    for i in 0..10 {
        let status = request(&api, "PUT", &format!("/photos/new/{i}.jpg"), &[], b"jpeg").status;
        assert!(status == 201 || status >= 500, "PUT with a volume down: {status}");
    }
    let dom = String::from_utf8_lossy(&chromium(&chromium_bin, &["--dump-dom"], &url).stdout).into_owned();
    assert!(row(&dom, &down).contains(">down<"), "{down} is down:\n{}", row(&dom, &down));
    assert!(dom.contains("degraded"), "{dom}");
    assert!(row(&dom, &c.volumes[0].addr()).contains(">up<"));

    let dir = TempDir::new("shot");
    let png = dir.path().join("status.png");
    let out = chromium(
        &chromium_bin,
        &[&format!("--screenshot={}", png.display()), "--window-size=1200,900", "--hide-scrollbars"],
        &url,
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!("no screenshot ({e}; chromium {}):\n{}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "a {} byte screenshot is blank", bytes.len());
    if let Some(keep) = std::env::var_os("MKV_STATUS_PNG") {
        std::fs::copy(&png, keep).expect("copy the screenshot to MKV_STATUS_PNG");
    }
}

/// A table file of the index damaged where a read reaches it: RocksDB opens the index (it
/// checks a table's blocks only when read), the reads that reach the damage fail, and
/// `/health`, `mkv_index_ok` and the status page say the index is corrupt (they said all was
/// well, so a load balancer kept sending every read to a master failing them). A table
/// damaged where the open reads it is a one-line "is corrupt" (it said "locked by another
/// process").
#[test]
fn a_corrupt_index_is_said_by_health_metrics_and_the_status_page() {
    let (c, admin) = cluster(3, &[]);
    for i in 0..2000 {
        assert_eq!(request(&c.addr(), "PUT", &format!("/corrupt/{i:05}"), &[], b"v").status, 201);
    }
    let dir = TempDir::new("corrupt");
    let snap = dir.path().join("snap");
    let r = request(&admin, "SNAPSHOT", &format!("/?to={}", snap.display()), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let damaged = TempDir::new("damaged");
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in std::fs::read_dir(&snap).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    };
    // the largest table holds the keys: a few bytes of its first block overwritten
    let largest = |db: &Path| {
        let mut tables: Vec<PathBuf> = std::fs::read_dir(db)
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sst"))
            .collect();
        tables.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
        tables.pop().expect("no table file in the snapshot")
    };
    let overwrite = |file: &Path, at: u64, len: usize| {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&vec![b'X'; len]).unwrap();
    };
    let db = damaged.path().join("db");
    copy(&db);
    overwrite(&largest(&db), 20, 8);
    let vols: Vec<String> = c.volumes.iter().map(Volume::addr).collect();
    let m = Master::start_args(damaged, server_args(&db, &vols, &["-admin", "127.0.0.1:0"]));
    let admin2 = m.admin_addr().unwrap();
    assert_eq!(get(&admin2, "/health").status, 200, "nothing read yet");
    let failed = (0..2000).filter(|i| get(&m.addr(), &format!("/corrupt/{i:05}")).status == 500).count();
    assert!(failed > 0, "no read reached the damage");
    let r = get(&admin2, "/health");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.text().starts_with("the index is corrupt (Corruption: "), "{r:?}");
    assert_eq!(must(&metrics(&admin2), "mkv_index_ok"), 0.0);
    assert!(get(&admin2, "/").text().contains("<b>index failing</b>the index is corrupt"));
    assert_eq!(must(&metrics(&admin), "mkv_index_ok"), 1.0, "the sound master");

    // damage where the open reads it: a one-line error naming it
    let dir2 = TempDir::new("damaged2");
    let db2 = dir2.path().join("db");
    copy(&db2);
    for f in std::fs::read_dir(&db2).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "sst") {
            overwrite(&f, 100, 200);
        }
    }
    let (code, err) =
        run_mkv(&["server", "-port", "0", "-admin", "", "-db", db2.to_str().unwrap(), "-volumes", &vols.join(",")]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("it is corrupt (Corruption: ") && !err.contains("locked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // -db naming a file: said plainly (it printed Rust's `Os { code: 17, kind: AlreadyExists, .. }`)
    let file = dir2.path().join("a-file");
    std::fs::write(&file, b"not an index").unwrap();
    let (code, err) =
        run_mkv(&["server", "-port", "0", "-admin", "", "-db", file.to_str().unwrap(), "-volumes", &vols.join(",")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("it is a file, not a folder") && !err.contains("Os {"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `SNAPSHOT /?to=DIR` wants an absolute DIR: a relative one was taken against the master's
/// working folder, wherever that is (`mkv snapshot` makes its `-to` absolute itself).
#[test]
fn a_snapshot_to_a_relative_folder_is_refused() {
    let (c, admin) = cluster(3, &[]);
    assert_eq!(request(&c.addr(), "PUT", "/snap/k", &[], b"v").status, 201);
    let r = request(&admin, "SNAPSHOT", "/?to=relative-snap", &[], b"");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text().contains("absolute"), "{r:?}");
    assert!(!std::path::Path::new("relative-snap").exists());
    let dir = TempDir::new("snapabs");
    let r = request(&admin, "SNAPSHOT", &format!("/?to={}", dir.path().join("s").display()), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
}

/// A volume up again while a write that timed out there may still be carried out takes no
/// write until its answer comes (see `volume::Late`), and says so: the PUTs it fails meanwhile
/// said "volume … is down" while `/health` said every volume was up, and no metric showed it
/// (a helper's 5 minutes of refused writes read as a mystery). Now the refusal names the
/// wait, `/health` counts such volumes and `mkv_volume_takes_writes` is 0 for them; once the
/// late answers come, writes go on.
#[test]
fn a_volume_awaiting_a_late_answer_says_so() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let armed = Arc::new(AtomicBool::new(false));
    let proxied: Vec<String> = vols
        .iter()
        .map(|v| {
            let armed = armed.clone();
            proxy(TcpListener::bind("127.0.0.1:0").unwrap(), v.addr(), 64 << 10, move |sent| {
                if armed.load(Ordering::SeqCst) {
                    if sent.starts_with(b"PUT /") {
                        // the PUT's answer comes late: after the volume is up again
                        std::thread::sleep(Duration::from_secs(8));
                    } else if sent.starts_with(b"HEAD / ") {
                        // the probes hang meanwhile: the volume is found down, the PUT fails
                        std::thread::sleep(Duration::from_secs(2));
                    }
                }
            })
        })
        .collect();
    let flags = ["-admin", "127.0.0.1:0", "-replicas", "3", "-subvolumes", "1", "-voltimeout", "1s"];
    let master = Master::start_on(&proxied, &flags);
    let (addr, admin) = (master.addr(), master.admin_addr().expect("admin address"));
    assert_eq!(request(&addr, "PUT", "/late/before", &[], b"v").status, 201);
    armed.store(true, Ordering::SeqCst);
    let r = request(&addr, "PUT", "/late/k", &[], b"the value");
    assert!(r.status >= 500, "{r:?}");
    armed.store(false, Ordering::SeqCst);
    let health = || get(&admin, "/health").text();
    wait_until("the volumes up, awaiting the late answers", Duration::from_secs(5), || {
        health().contains("ok: 3 of 3 volumes up; 3 take no write")
    });
    let r = request(&addr, "PUT", "/late/meanwhile", &[], b"v");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.text().contains("takes no write until it answers a request that timed out"), "{r:?}");
    let text = metrics(&admin);
    for p in &proxied {
        assert_eq!(value(&text, &format!("mkv_volume_up{{volume=\"{p}\"}}")), Some(1.0), "{text}");
        assert_eq!(value(&text, &format!("mkv_volume_takes_writes{{volume=\"{p}\"}}")), Some(0.0), "{text}");
    }
    wait_until("writes once the late answers came", TIMEOUT, || {
        request(&addr, "PUT", "/late/after", &[], b"v").status == 201
    });
    assert_eq!(health(), "ok: 3 of 3 volumes up\n");
}
