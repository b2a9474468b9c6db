//! `mkv rebalance` (offline and online) and `REBALANCE /key`, against real nginx volumes:
//! after each run every key reads back identical from exactly the files placement predicts.

mod common;

use std::{
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use common::layout::*;
use common::*;

const REPLICAS: usize = 3;
const SUBVOLUMES: u32 = 4;

fn value_of(key: &str) -> Vec<u8> {
    format!("{key} holds this; ").repeat(1 + key.len() % 5).into_bytes()
}

fn addrs(vols: &[Volume]) -> Vec<String> {
    vols.iter().map(Volume::addr).collect()
}

fn layout(vols: &[String]) -> Layout {
    Layout { volumes: vols.to_vec(), replicas: REPLICAS, subvolumes: SUBVOLUMES }
}

fn flags() -> Vec<&'static str> {
    vec!["-replicas", "3", "-subvolumes", "4"]
}

/// `mkv rebalance -volumes <vols> <args>`: exit code and stderr.
fn rebalance(vols: &[String], args: &[&str]) -> (Option<i32>, String) {
    let joined = vols.join(",");
    let mut all = vec!["rebalance", "-volumes", &joined];
    all.extend(flags());
    all.extend_from_slice(args);
    run_mkv(&all)
}

/// Every key reads back byte-identical, with the MD5 it was written with, from replicas that
/// are exactly where `vols` places them; unlinked keys stay unlinked; no other file exists.
fn check(master: &Master, all: &[Volume], vols: &[String], live: &[String], unlinked: &[String]) {
    let addr = master.addr();
    let lay = layout(vols);
    for key in live {
        let r = request(&addr, "HEAD", key, &[], b"");
        assert_eq!(r.status, 302, "{key}: {r:?}");
        assert_eq!(r.header("key-volumes"), Some(lay.replicas(key).join(",").as_str()), "{key}");
        assert_eq!(r.header("key-balance"), Some("balanced"), "{key}");
        assert_eq!(r.header("content-md5"), Some(hex(&md5(&value_of(key))).as_str()), "{key}: MD5 kept");
        assert_eq!(get_follow(&addr, key).body, value_of(key), "{key}");
    }
    for key in unlinked {
        assert_eq!(get(&addr, key).status, 404, "{key} must stay unlinked");
    }
    let listed = |which: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&get(&addr, &format!("/?{which}")).body).unwrap();
        v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
    };
    let mut want_live = live.to_vec();
    want_live.sort();
    let mut want_unlinked = unlinked.to_vec();
    want_unlinked.sort();
    assert_eq!(listed("list"), want_live);
    assert_eq!(listed("unlinked"), want_unlinked);
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    let unlinked: Vec<&str> = unlinked.iter().map(String::as_str).collect();
    lay.assert_files(all, &live, &unlinked);
}

/// Writes `n` keys through a master on `vols` and UNLINKs every tenth; returns (live, unlinked).
fn fill(master: &Master, n: usize) -> (Vec<String>, Vec<String>) {
    let addr = master.addr();
    let (mut live, mut unlinked) = (vec![], vec![]);
    for i in 0..n {
        let key = format!("/k/{i}");
        assert_eq!(request(&addr, "PUT", &key, &[], &value_of(&key)).status, 201);
        if i % 10 == 3 {
            assert_eq!(request(&addr, "UNLINK", &key, &[], b"").status, 204);
            unlinked.push(key);
        } else {
            live.push(key);
        }
    }
    (live, unlinked)
}

#[test]
fn five_to_three_to_five_volumes_loses_nothing_and_leaves_no_stray_file() {
    let vols: Vec<Volume> = (0..5).map(|_| Volume::new()).collect();
    let five = addrs(&vols);
    let three = five[..3].to_vec();
    let mut master = Master::start_on(&five, &flags());
    let (live, unlinked) = fill(&master, 80);
    check(&master, &vols, &five, &live, &unlinked);
    let db = master.db().to_str().unwrap().to_string();

    for (to, label) in [(&three, "5 -> 3"), (&five, "3 -> 5")] {
        master.kill9();
        let (code, err) = rebalance(to, &["-db", &db]);
        assert_eq!(code, Some(0), "{label}: {err}");
        assert!(err.contains("moved"), "{label} moved nothing: {err}");
        // a second run finds nothing to do
        let (code, err) = rebalance(to, &["-db", &db]);
        assert_eq!(code, Some(0), "{label} again: {err}");
        assert!(!err.contains("moved"), "{label}: the second run moved keys: {err}");
        assert!(err.contains("80 in place"), "{label}: {err}");
        master.restart_with(to, &flags());
        check(&master, &vols, to, &live, &unlinked);
    }
}

/// A volume that stalls once past -voltimeout while the keys move (seen once in a million
/// keys under load): the keys it held up are tried again after the pass, once the prober
/// finds it up, and the run ends clean. The stalled key failed, and the volume stayed
/// marked down for the rest of the run (no prober ran), failing every key it held.
#[test]
fn a_volume_that_stalls_once_fails_no_key() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let (stalling, armed) = stall_once_proxy(vols[0].addr(), Duration::from_millis(2500));
    let mut four = addrs(&vols);
    four[0] = stalling;
    let mut master = Master::start_on(&four[..3], &flags());
    let (live, _) = fill(&master, 40);
    rebalance_through_a_stall(&mut master, &four, &armed, "no GET went through the stalling volume");
    for key in &live {
        assert_eq!(get_follow(&master.addr(), key).body, value_of(key), "{key}");
    }
}

/// The same for a volume that stops taking a copy's body (its write stalls past
/// -voltimeout, with the send buffer a real network has): that key is tried again too. It
/// failed the run ("failed:", exit 1): only timeouts, resets and down volumes were retried.
/// The values are larger than a send buffer grows (tcp_wmem's 4 MiB): a 1 MiB one could
/// sit whole in it before the stall, once the kernel's metrics for 127.0.0.1 let it grow
/// fast (seen in a whole-suite run with MTU 1500), and its copy then waited the stall out.
#[test]
fn a_volume_that_stalls_once_taking_a_body_fails_no_key() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let armed = Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    // the new volume: its first large PUT (a copy of a big value) held for 2.5 s
    let stalling = proxy(narrow_listener(16 << 10, Some(1400)), vols[3].addr(), 64 << 10, move |sent| {
        let big = sent.windows(24).any(|w| w.eq_ignore_ascii_case(b"Content-Length: 6291456\r"));
        if sent.starts_with(b"PUT ") && big && arm.swap(false, Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(2500));
        }
    });
    let mut four = addrs(&vols);
    four[3] = stalling;
    let mut master = Master::start_on(&four[..3], &flags());
    let addr = master.addr();
    // six big values: each has a replica to move to the new volume with odds 3 in 4
    let big: Vec<(String, Vec<u8>)> = (0..6u32)
        .map(|i| (format!("/big/{i}"), (0..6u32 << 20).map(|j| (j.wrapping_mul(2654435761 + i) >> 24) as u8).collect()))
        .collect();
    for (key, value) in &big {
        assert_eq!(request(&addr, "PUT", key, &[], value).status, 201);
    }
    rebalance_through_a_stall(&mut master, &four, &armed, "no big PUT went to the new volume");
    for (key, value) in &big {
        assert!(get_follow(&master.addr(), key).body == *value, "{key} reads back other bytes");
    }
}

/// Stops `master`, arms the stalling proxy, rebalances its index onto `four` and starts it
/// there: the stall came (else `unarmed` says why not), the keys it held up were tried
/// again after the pass, and the run ended clean.
fn rebalance_through_a_stall(master: &mut Master, four: &[String], armed: &AtomicBool, unarmed: &str) {
    master.kill9();
    let db = master.db().to_str().unwrap().to_string();
    armed.store(true, Ordering::SeqCst);
    let (code, err) = rebalance(four, &["-db", &db]);
    assert!(!armed.load(Ordering::SeqCst), "{unarmed}: {err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("trying again "), "{err}");
    assert!(!err.contains("failed:"), "{err}");
    master.restart_with(four, &flags());
}

/// A TCP proxy to `upstream` that, once armed, holds the first GET it sees for `hold`
/// before passing it on (and disarms); everything else passes as it comes.
fn stall_once_proxy(upstream: String, hold: Duration) -> (String, Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    let addr = proxy(listener, upstream, 64 << 10, move |sent| {
        if sent.starts_with(b"GET ") && arm.swap(false, Ordering::SeqCst) {
            thread::sleep(hold);
        }
    });
    (addr, armed)
}

#[test]
fn dry_run_moves_nothing() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let mut master = Master::start_on(&four[..3], &flags());
    let (live, unlinked) = fill(&master, 30);
    master.kill9();
    let before: Vec<Vec<String>> = vols.iter().map(Volume::files).collect();
    let db = master.db().to_str().unwrap().to_string();
    let (code, err) = rebalance(&four, &["-db", &db, "-dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("would move /k/"), "{err}");
    assert_eq!(vols.iter().map(Volume::files).collect::<Vec<_>>(), before);
    master.restart_with(&four[..3], &flags());
    check(&master, &vols, &four[..3], &live, &unlinked);
}

#[test]
fn a_rebalance_killed_halfway_completes_on_the_second_run() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let mut master = Master::start_on(&four[..3], &flags());
    let (live, unlinked) = fill(&master, 400);
    master.kill9();
    let db = master.db().to_str().unwrap().to_string();
    let joined = four.join(",");
    let mut args = vec!["rebalance", "-volumes", &joined, "-db", &db, "-concurrency", "1"];
    args.extend(flags());
    let mut child = spawn_mkv(&args, Stdio::null());
    // kill it as soon as the new volume holds a few copies
    wait_until("the first copies on the new volume", TIMEOUT, || vols[3].files().len() >= 10);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "the first run finished before it was killed; the test proves nothing");
    let (code, err) = rebalance(&four, &["-db", &db]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("moved"), "{err}");
    master.restart_with(&four, &flags());
    check(&master, &vols, &four, &live, &unlinked);
}

#[test]
fn rebalance_of_one_key_on_the_running_server() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let master = Master::start_on(&four[..3], &flags());
    let (live, unlinked) = fill(&master, 20);
    let addr = master.addr();
    assert_eq!(request(&addr, "REBALANCE", "/missing", &[], b"").status, 404);
    // in place already: nothing to do, still 204
    assert_eq!(request(&addr, "REBALANCE", &live[0], &[], b"").status, 204);
    let r = request(&addr, "VOLUMES", &format!("/?volumes={}", four.join(",")), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["volumes"], serde_json::json!(four));
    let bad = request(&addr, "VOLUMES", "/?volumes=just-one:1", &[], b"");
    assert_eq!(bad.status, 400, "3 replicas on 1 volume must be refused: {bad:?}");
    for query in [format!("/?volumes={}&replicas=abc", four.join(",")), "/?replicas=abc".into(), "/?replicas=2".into()]
    {
        // a replica count that is no number, or with no list to place on: not ignored
        let bad = request(&addr, "VOLUMES", &query, &[], b"");
        assert_eq!(bad.status, 400, "{query}: {bad:?}");
    }
    for key in live.iter().chain(&unlinked) {
        assert_eq!(request(&addr, "REBALANCE", key, &[], b"").status, 204, "{key}");
    }
    settle(&addr);
    check(&master, &vols, &four, &live, &unlinked);
}

/// `REBALANCE /key` of a key in place whose replica's volume is down answered `204`, though
/// that replica could not be asked (and one missing there was not restored): it is `503`,
/// and `204` once the volume is back and the replica restored.
#[test]
fn rebalance_of_one_key_with_a_replica_volume_down_is_not_in_place() {
    let mut vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let three = addrs(&vols);
    let master = Master::start_on(&three, &flags());
    let addr = master.addr();
    let key = "/down/k";
    assert_eq!(request(&addr, "PUT", key, &[], &value_of(key)).status, 201);
    let i = layout(&three).files(key)[0].0;
    for (_, file) in layout(&three).files(key).into_iter().filter(|(v, _)| *v == i) {
        std::fs::remove_file(vols[i].dir().join(file)).unwrap();
    }
    vols[i].stop();
    wait_until("the volume down", Duration::from_secs(5), || request(&addr, "REBALANCE", key, &[], b"").status == 503);
    vols[i].start();
    wait_until("the volume up", Duration::from_secs(10), || request(&addr, "REBALANCE", key, &[], b"").status == 204);
    check(&master, &vols, &three, &[key.to_string()], &[]);
}

/// Waits until the master has deleted the old replicas of the keys it moved (it keeps them
/// for -move-grace after each move).
fn settle(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = request(addr, "VOLUMES", "/", &[], b"");
        assert_eq!(r.status, 200, "{r:?}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if v["moves_pending"] == 0 {
            assert_eq!(v["moves_failed"], 0, "{v}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "old replicas still not deleted: {v}");
        thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Four volumes, a master on the first three with `flags`, and `n` keys `<prefix><i>` PUT.
fn three_of_four(flags: &[&str], prefix: &str, n: usize) -> (Vec<Volume>, Vec<String>, Master, Vec<String>) {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let master = Master::start_on(&four[..3], flags);
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for key in &keys {
        assert_eq!(request(&master.addr(), "PUT", key, &[], &value_of(key)).status, 201, "{key}");
    }
    (vols, four, master, keys)
}

/// Switches the master to `vols` with `replicas` (what `rebalance -online` does first).
fn switch(addr: &str, vols: &[String], replicas: usize) {
    let r = request(addr, "VOLUMES", &format!("/?volumes={}&replicas={replicas}", vols.join(",")), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
}

/// `REBALANCE` of each key: `204`.
fn rebalance_each(addr: &str, keys: &[String]) {
    for key in keys {
        assert_eq!(request(addr, "REBALANCE", key, &[], b"").status, 204, "{key}");
    }
}

/// A move copies only from a replica whose bytes are the record's, and a replica that stays
/// but is short is copied again with the new ones. It copied from the first live replica
/// unchecked, then deleted the good old ones: a helper's rebalance from three volumes to
/// four and back left keys whose every replica was damaged, which a repair then took for
/// the value. Here each key's first replica (the one a move read first) is cut short, then
/// the keys move onto a fourth volume, online and offline.
#[test]
fn a_move_copies_from_a_replica_that_verifies_and_mends_a_short_one() {
    let flags = ["-replicas", "2", "-subvolumes", "4", "-move-grace", "0s"];
    let (vols, four, mut master, keys) = three_of_four(&flags, "/short/", 40);
    let lay = |v: &[String]| Layout { volumes: v.to_vec(), replicas: 2, subvolumes: 4 };
    let cut_first = |vols: &[Volume], on: &[String]| {
        for key in &keys {
            let (i, path) = lay(on).files(key)[0].clone();
            let f = std::fs::OpenOptions::new().write(true).open(vols[i].dir().join(&path)).unwrap();
            f.set_len(5).unwrap();
        }
    };
    let all_whole = |vols: &[Volume], on: &[String], addr: &str| {
        for key in &keys {
            for (i, path) in lay(on).files(key) {
                let held = std::fs::read(vols[i].dir().join(&path)).unwrap_or_default();
                assert!(held == value_of(key), "{key} on {}: {} bytes, not its value", on[i], held.len());
            }
            assert_eq!(get_follow(addr, key).body, value_of(key), "{key}");
        }
    };
    cut_first(&vols, &four[..3]);
    let addr = master.addr();
    switch(&addr, &four, 2);
    rebalance_each(&addr, &keys);
    settle(&addr);
    all_whole(&vols, &four, &addr);
    // offline, back onto the three
    cut_first(&vols, &four);
    assert!(master.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let (three, db) = (four[..3].join(","), master.db().to_str().unwrap().to_string());
    let (code, err) = run_mkv(&["rebalance", "-volumes", &three, "-db", &db, "-replicas", "2", "-subvolumes", "4"]);
    assert_eq!(code, Some(0), "{err}");
    master.restart_with(&four[..3], &flags);
    all_whole(&vols, &four[..3], &master.addr());
}

/// Going to fewer replicas deletes a replica without writing one: the ones that stay are
/// read first, and one cut short or damaged at its size is copied again, else the good one
/// deleted beside it would leave a single good copy of two (a helper's same-size damage on
/// every staying replica left keys with none).
#[test]
fn fewer_replicas_mend_a_short_one_that_stays() {
    let flags = ["-replicas", "3", "-subvolumes", "4", "-move-grace", "0s"];
    let (vols, four, master, keys) = three_of_four(&flags, "/fewer/", 30);
    let three = four[..3].to_vec();
    for (n, key) in keys.iter().enumerate() {
        // the second of three stays when two are wanted (placement keeps the first two):
        // cut short, or damaged at its size (only its MD5 tells)
        let (i, path) = Layout { volumes: three.clone(), replicas: 3, subvolumes: 4 }.files(key)[1].clone();
        let file = vols[i].dir().join(&path);
        if n % 2 == 0 {
            std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(3).unwrap();
        } else {
            let mut bytes = std::fs::read(&file).unwrap();
            bytes[0] ^= 0xff;
            std::fs::write(&file, bytes).unwrap();
        }
    }
    let addr = master.addr();
    switch(&addr, &three, 2);
    rebalance_each(&addr, &keys);
    settle(&addr);
    for key in &keys {
        for (i, path) in (Layout { volumes: three.clone(), replicas: 2, subvolumes: 4 }).files(key) {
            let held = std::fs::read(vols[i].dir().join(&path)).unwrap_or_default();
            assert!(held == value_of(key), "{key} on {}: {} bytes, not its value", three[i], held.len());
        }
    }
}

/// A redirect answered just before a key moved names an old replica; a client following it
/// after the move still reads the value (the old replicas outlive the move by -move-grace),
/// and once the grace is over they are gone and the record names only the new ones.
#[test]
fn a_redirect_answered_before_a_move_still_reads_after_it() {
    let flags = ["-replicas", "2", "-subvolumes", "4", "-move-grace", "3s"];
    let (vols, four, master, keys) = three_of_four(&flags, "/moving/", 40);
    let addr = master.addr();
    // every replica's redirect: reads take turns over them
    let mut redirects = Vec::new();
    for key in &keys {
        for _ in 0..2 {
            let r = get(&addr, key);
            assert_eq!(r.status, 302, "{key}: {r:?}");
            redirects.push((key.clone(), r.header("location").unwrap().to_string()));
        }
    }
    switch(&addr, &four, 2);
    let started = std::time::Instant::now();
    rebalance_each(&addr, &keys);
    let lay = Layout { volumes: four.clone(), replicas: 2, subvolumes: SUBVOLUMES };
    let before = Layout { volumes: four[..3].to_vec(), replicas: 2, subvolumes: SUBVOLUMES };
    let moved = keys.iter().filter(|k| lay.replicas(k) != before.replicas(k)).count();
    assert!(moved >= 5, "too few keys moved ({moved}) to tell anything");
    let mut stale = Vec::new();
    for (key, location) in &redirects {
        let (host, target) = split_url(location);
        let r = get(host, target);
        if r.status != 200 || r.body != value_of(key) {
            stale.push(format!("{key} at {location}: {}", r.status));
        }
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "too slow to be inside the grace");
    assert!(stale.is_empty(), "redirects answered before the move failed after it: {stale:?}");
    settle(&addr);
    for key in &keys {
        let r = request(&addr, "HEAD", key, &[], b"");
        assert_eq!(r.header("key-volumes"), Some(lay.replicas(key).join(",").as_str()), "{key}");
        assert_eq!(get_follow(&addr, key).body, value_of(key), "{key}");
    }
    // no file left where placement does not put it
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    lay.assert_files(&vols, &keys, &[]);
}

#[test]
fn online_rebalance_serves_gets_and_puts_throughout() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let master = Master::start_on(&four[..3], &flags());
    let (mut live, unlinked) = fill(&master, 300);
    let addr = master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (addr, stop, failures, served, live) =
                (addr.clone(), stop.clone(), failures.clone(), served.clone(), live.clone());
            thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let key = &live[i % live.len()];
                    // a 302 handed out just before a move must still read: the old replicas
                    // outlive the move by -move-grace
                    let r = get(&addr, key);
                    let ok = r.status == 302 && {
                        let (host, target) = split_url(r.header("location").unwrap());
                        get(host, target).body == value_of(key)
                    };
                    if !ok {
                        failures.lock().unwrap().push(format!("GET {key}: {}", r.status));
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            })
        })
        .collect();
    let writer = {
        let (addr, stop, failures, written) = (addr.clone(), stop.clone(), failures.clone(), written.clone());
        thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("/during/{i}");
                let r = request(&addr, "PUT", &key, &[], &value_of(&key));
                if r.status == 201 {
                    written.lock().unwrap().push(key);
                } else {
                    failures.lock().unwrap().push(format!("PUT {key}: {}", r.status));
                }
            }
        })
    };
    let online = format!("http://{addr}");
    let (code, err) = rebalance(&four, &["-online", &online, "-concurrency", "8"]);
    stop.store(true, Ordering::Relaxed);
    for t in readers {
        t.join().unwrap();
    }
    writer.join().unwrap();
    assert_eq!(code, Some(0), "{err}");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "clients were failed during the online rebalance: {failures:?}");
    assert!(served.load(Ordering::Relaxed) > 50, "the readers barely ran");
    let written = written.lock().unwrap().clone();
    assert!(!written.is_empty(), "no PUT went through during the rebalance");
    live.extend(written);
    check(&master, &vols, &four, &live, &unlinked);
}

/// A key moved from A to B keeps its old replica on A when, before the grace is over, a
/// volume change makes placement want A again (here: a second replica): the deletion of
/// old replicas only takes those placement does not want now.
#[test]
fn an_old_replica_wanted_again_within_the_grace_is_kept() {
    let flags = ["-replicas", "1", "-subvolumes", "1", "-move-grace", "2s"];
    let (vols, four, master, keys) = three_of_four(&flags, "/again/", 60);
    let addr = master.addr();
    let lay = |vols: &[String], replicas| Layout { volumes: vols.to_vec(), replicas, subvolumes: 1 };
    switch(&addr, &four, 1);
    rebalance_each(&addr, &keys);
    // within the grace: two replicas each, so placement wants some old replicas again
    switch(&addr, &four, 2);
    let again: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let (old, new) = (lay(&four[..3], 1).replicas(k), lay(&four, 1).replicas(k));
            old != new && lay(&four, 2).replicas(k) == [new[0].clone(), old[0].clone()]
        })
        .collect();
    assert!(again.len() >= 3, "too few keys whose old replica is wanted again ({})", again.len());
    settle(&addr);
    for key in again {
        let r = request(&addr, "HEAD", key, &[], b"");
        assert_eq!(r.header("key-volumes"), Some(lay(&four, 2).replicas(key).join(",").as_str()), "{key}");
        for (v, rel) in lay(&four, 2).files(key) {
            assert_eq!(std::fs::read(vols[v].dir().join(&rel)).unwrap(), value_of(key), "{key} on {v}");
        }
    }
}

/// A stop whose -drain ends before the moves' grace says how many keys still name old
/// replicas (nothing is lost: the records name them, reads skip them, a rerun deletes them).
#[test]
fn a_stop_that_cannot_wait_out_the_grace_says_what_it_left() {
    let flags = ["-replicas", "1", "-subvolumes", "1", "-move-grace", "30s", "-drain", "1s"];
    let (_vols, four, mut master, keys) = three_of_four(&flags, "/left/", 20);
    let addr = master.addr();
    switch(&addr, &four, 1);
    rebalance_each(&addr, &keys);
    let v: serde_json::Value = serde_json::from_slice(&request(&addr, "VOLUMES", "/", &[], b"").body).unwrap();
    let pending = v["moves_pending"].as_u64().unwrap();
    assert!(pending > 0, "{v}");
    let status = master.terminate(std::time::Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let said = master.lines().join("\n");
    // one line for the whole server, not one per thread
    assert_eq!(said.matches("moved key(s) not deleted (-drain is over)").count(), 1, "{said}");
    assert!(said.contains(&format!("the old replicas of {pending} moved key(s) not deleted")), "{said}");
    // the records still name both: every key reads from its new place after a restart
    master.restart_with(&four, &flags[..4]);
    for key in &keys {
        assert_eq!(get_follow(&master.addr(), key).body, value_of(key), "{key}");
    }
}

/// A master stopped right after keys moved still deletes their old replicas (their grace
/// runs inside the drain) and exits 0; restarted, it names only the new replicas.
#[test]
fn a_stop_right_after_moves_deletes_the_old_replicas_first() {
    let flags = ["-replicas", "2", "-subvolumes", "4", "-move-grace", "1s"];
    let (vols, four, mut master, keys) = three_of_four(&flags, "/stopping/", 30);
    let addr = master.addr();
    switch(&addr, &four, 2);
    rebalance_each(&addr, &keys);
    let status = master.terminate(std::time::Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let lay = Layout { volumes: four.clone(), replicas: 2, subvolumes: SUBVOLUMES };
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    lay.assert_files(&vols, &names, &[]);
    master.restart_with(&four, &["-replicas", "2", "-subvolumes", "4"]);
    for key in &keys {
        let r = request(&master.addr(), "HEAD", key, &[], b"");
        assert_eq!(r.header("key-volumes"), Some(lay.replicas(key).join(",").as_str()), "{key}");
    }
}

/// A DELETE that failed half way (a volume down) leaves its key under `?unlinked` naming the
/// volumes its files were on; a rebalance finishes that delete rather than leave the key
/// naming volumes that may leave the list (its files would be strays nothing deletes).
#[test]
fn a_rebalance_finishes_a_delete_that_failed_half_way() {
    let mut vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let mut master = Master::start_on(&four[..3], &flags());
    let (mut live, unlinked) = fill(&master, 10);
    let key = live.remove(0);
    vols[0].stop();
    let r = request(&master.addr(), "DELETE", &key, &[], b"");
    assert!(r.status >= 500, "{r:?}");
    vols[0].start();
    master.kill9();
    let (code, err) = rebalance(&four, &["-db", master.db().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("deleted {key}: a PUT or DELETE of it had failed half way")), "{err}");
    master.restart_with(&four, &flags());
    check(&master, &vols, &four, &live, &unlinked);
}

/// Marks a plain request as S3's (a master without `-s3-keys` takes any signature or none).
const UNSIGNED: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");

/// An S3 multipart upload in progress: its object's path, id, and parts (number, ETag, bytes).
struct Upload {
    path: String,
    id: String,
    parts: Vec<(u32, String, Vec<u8>)>,
}

/// CreateMultipartUpload of `path` (`/bucket/key`): the upload id.
fn start_upload(addr: &str, path: &str) -> String {
    let r = request(addr, "POST", &format!("{path}?uploads"), &[UNSIGNED], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    text.split("<UploadId>").nth(1).and_then(|t| t.split("</UploadId>").next()).unwrap().to_string()
}

/// Rebalances the stopped `master`'s index offline onto `new`, stops the old volumes (the
/// first three of `vols`), restarts the master on `new` and completes `up` there. Returns
/// the rebalance's stderr.
fn rebalance_offline_then_complete(master: &mut Master, vols: &mut [Volume], new: &[String], up: &Upload) -> String {
    let db = master.db().to_str().unwrap().to_string();
    let (code, err) = rebalance(new, &["-db", &db]);
    assert_eq!(code, Some(0), "{err}");
    vols[..3].iter_mut().for_each(Volume::stop);
    master.restart_with(new, &flags());
    assert_completes(&master.addr(), up, vols);
    err
}

/// Six volumes: the three a master starts on, and the three a rebalance moves everything to.
fn old_and_new_volumes() -> (Vec<Volume>, Vec<String>, Vec<String>) {
    let vols: Vec<Volume> = (0..6).map(|_| Volume::new()).collect();
    let all = addrs(&vols);
    let (old, new) = (all[..3].to_vec(), all[3..].to_vec());
    (vols, old, new)
}

/// Starts an upload to `path` (`/bucket/key`) and uploads two parts: 5 MiB (S3's least but
/// for the last) and 1 MiB.
fn upload_in_progress(addr: &str, path: &str) -> Upload {
    let id = start_upload(addr, path);
    let mut parts = Vec::new();
    for (n, len) in [(1u32, 5usize << 20), (2, 1 << 20)] {
        let body: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[2] ^ n as u8).collect();
        let r = request(addr, "PUT", &format!("{path}?partNumber={n}&uploadId={id}"), &[UNSIGNED], &body);
        assert_eq!(r.status, 200, "part {n}: {r:?}");
        parts.push((n, r.header("etag").unwrap().to_string(), body));
    }
    Upload { path: path.to_string(), id, parts }
}

/// Completes `up`: it must succeed, the object read back byte-exact, and no part file stay
/// on `vols`.
fn assert_completes(addr: &str, up: &Upload, vols: &[Volume]) {
    let mut doc = String::from("<CompleteMultipartUpload>");
    for (n, etag, _) in &up.parts {
        doc += &format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>");
    }
    doc += "</CompleteMultipartUpload>";
    let r = request(addr, "POST", &format!("{}?uploadId={}", up.path, up.id), &[UNSIGNED], doc.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("<CompleteMultipartUploadResult"), "{r:?}");
    let whole: Vec<u8> = up.parts.iter().flat_map(|(_, _, b)| b.iter().copied()).collect();
    let got = request(addr, "GET", &up.path, &[UNSIGNED], b"");
    assert_eq!(got.status, 200, "{got:?}");
    assert!(got.body == whole, "the completed object differs from its parts ({} bytes read)", got.body.len());
    for v in vols {
        let parts: Vec<String> = v.files().into_iter().filter(|f| f.contains("_parts/")).collect();
        assert!(parts.is_empty(), "part files left on {}: {parts:?}", v.addr());
    }
}

/// An upload in progress when `mkv rebalance` moves everything onto other volumes completes
/// once the old volumes are stopped: its parts moved with the keys. They stayed behind (the
/// part records naming the old volumes), and Complete failed `503`.
#[test]
fn an_upload_in_progress_completes_after_a_rebalance_onto_other_volumes() {
    let (mut vols, old, new) = old_and_new_volumes();
    let mut master = Master::start_on(&old, &flags());
    let (live, unlinked) = fill(&master, 10);
    let up = upload_in_progress(&master.addr(), "/bucket/big");
    master.kill9();
    let err = rebalance_offline_then_complete(&mut master, &mut vols, &new, &up);
    assert!(err.contains("2 parts moved"), "{err}");
    for v in &vols[..3] {
        assert_eq!(v.files(), Vec::<String>::new(), "files left on the old volume {}", v.addr());
    }
    for key in &live {
        assert_eq!(get_follow(&master.addr(), key).body, value_of(key), "{key}");
    }
    for key in &unlinked {
        assert_eq!(get(&master.addr(), key).status, 404, "{key}");
    }
    // nothing left to move (the upload is complete; a rerun finds every key in place)
    master.kill9();
    let (code, err) = rebalance(&new, &["-db", master.db().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("moved"), "{err}");
}

/// The same through a running master (`rebalance -online`): the master moves the parts.
#[test]
fn an_upload_in_progress_completes_after_an_online_rebalance_onto_other_volumes() {
    let (mut vols, old, new) = old_and_new_volumes();
    let master = Master::start_on(&old, &flags());
    let up = upload_in_progress(&master.addr(), "/bucket/big");
    let (code, err) = rebalance(&new, &["-online", &format!("http://{}", master.addr())]);
    assert_eq!(code, Some(0), "{err}");
    vols[..3].iter_mut().for_each(Volume::stop);
    assert_completes(&master.addr(), &up, &vols);
    assert!(err.contains("2 parts moved"), "{err}");
}

/// A part whose upload began before an online rebalance switched the volumes and ended
/// after the rebalance moved the parts: written to the old placement and recorded after the
/// move, it stayed on the old volumes, and Complete failed once they stopped. It moves as it
/// is recorded.
#[test]
fn a_part_uploaded_during_an_online_rebalance_moves_too() {
    let (mut vols, old, new) = old_and_new_volumes();
    let master = Master::start_on(&old, &flags());
    let addr = master.addr();
    let path = "/bucket/during";
    let id = start_upload(&addr, path);
    let body: Vec<u8> = (0..2u32 << 20).map(|i| i.wrapping_mul(2654435761).to_le_bytes()[2]).collect();
    let mut c = Client::connect(&addr);
    c.send(
        format!(
            "PUT {path}?partNumber=1&uploadId={id} HTTP/1.1\r\nHost: mkv\r\n\
             x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body[..body.len() / 2]);
    // the master is writing the part to the old volumes while the rebalance runs
    thread::sleep(Duration::from_millis(300));
    let (code, err) = rebalance(&new, &["-online", &format!("http://{addr}")]);
    assert_eq!(code, Some(0), "{err}");
    c.send(&body[body.len() / 2..]);
    let r = c.read_response("PUT");
    assert_eq!(r.status, 200, "{r:?}");
    let etag = r.header("etag").unwrap().to_string();
    vols[..3].iter_mut().for_each(Volume::stop);
    let up = Upload { path: path.to_string(), id, parts: vec![(1, etag, body)] };
    assert_completes(&addr, &up, &vols);
}

/// A volume an online rebalance took out of the list is forgotten once the rebalance ends:
/// stopped afterwards, it is neither probed nor shown (`mkv_volume_up` 0 would fire the
/// README's alert; the status page counted it down) until the master restarts.
#[test]
fn a_volume_an_online_rebalance_removed_is_forgotten_when_it_ends() {
    let mut vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let master = Master::start_on(&four[..3], &["-replicas", "2", "-subvolumes", "4", "-admin", "127.0.0.1:0"]);
    let admin = master.admin_addr().expect("an admin listener");
    for i in 0..20 {
        let key = format!("/k/{i}");
        assert_eq!(request(&master.addr(), "PUT", &key, &[], &value_of(&key)).status, 201);
    }
    let (to, online) = (four[1..].join(","), format!("http://{}", master.addr()));
    let (code, err) =
        run_mkv(&["rebalance", "-volumes", &to, "-replicas", "2", "-subvolumes", "4", "-online", &online]);
    assert_eq!(code, Some(0), "{err}");
    vols[0].stop();
    // past the prober's interval and timeout: a watched volume would show down by now
    thread::sleep(Duration::from_millis(2500));
    let text = get(&admin, "/metrics").text();
    assert!(!text.contains(&format!("volume=\"{}\"", four[0])), "the removed volume is still shown:\n{text}");
    for v in &four[1..] {
        assert!(text.contains(&format!("mkv_volume_up{{volume=\"{v}\"}} 1\n")), "{v}:\n{text}");
    }
    let page = get(&admin, "/").text();
    assert!(page.contains("all 3 volumes up"), "{page}");
    assert!(!page.contains(&four[0]), "{page}");
    // only the list in force may be declared settled: another's volumes may still be named
    let r = request(&master.addr(), "VOLUMES", &format!("/?settled={}", four[..3].join(",")), &[], b"");
    assert_eq!(r.status, 409, "{r:?}");
    for i in 0..20 {
        let key = format!("/k/{i}");
        assert_eq!(get_follow(&master.addr(), &key).body, value_of(&key), "{key}");
    }
}

/// Part files an Abort could not delete on a volume down are noted for the master's sweep.
/// When an online rebalance then takes that volume out of the list, the note drops it: the
/// files leave with the volume. The sweep went on trying the removed volume, and deleted
/// them the moment it answered again.
#[test]
fn leftover_part_files_on_a_removed_volume_are_not_retried() {
    let mut vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let four = addrs(&vols);
    let flags = ["-replicas", "3", "-subvolumes", "1"];
    let master = Master::start_on(&four[..3], &flags);
    let addr = master.addr();
    let id = start_upload(&addr, "/bucket/gone");
    let r = request(&addr, "PUT", &format!("/bucket/gone?partNumber=1&uploadId={id}"), &[UNSIGNED], &[7u8; 1000]);
    assert_eq!(r.status, 200, "{r:?}");
    vols[0].stop();
    let r = request(&addr, "DELETE", &format!("/bucket/gone?uploadId={id}"), &[UNSIGNED], b"");
    assert_eq!(r.status, 204, "{r:?}");
    let parts = |v: &Volume| v.files().into_iter().filter(|f| f.contains("_parts/")).count();
    assert_eq!(parts(&vols[0]), 1, "the down volume keeps its part file");
    let (to, online) = (four[1..].join(","), format!("http://{addr}"));
    let (code, err) =
        run_mkv(&["rebalance", "-volumes", &to, "-replicas", "3", "-subvolumes", "1", "-online", &online]);
    assert_eq!(code, Some(0), "{err}");
    vols[0].start();
    // several sweeps (one a second) with the removed volume answering
    thread::sleep(Duration::from_millis(3000));
    assert_eq!(parts(&vols[0]), 1, "the master went on deleting on a volume that left the list");
    let said = master.lines().join("\n");
    assert!(said.contains(&format!("left on {}", four[0])), "{said}");
}

/// A part whose first replica is short (a damaged disk, a file cut by hand) or damaged at
/// its size moves from one whose bytes are the part's: the short file was copied to every
/// new volume, the whole ones then deleted, and the upload could never complete; then the
/// move checked the size only and copied the damaged one, which Complete refused.
#[test]
fn a_part_moves_from_a_replica_that_verifies_not_a_short_or_damaged_one() {
    let (mut vols, old, new) = old_and_new_volumes();
    let mut master = Master::start_on(&old, &flags());
    let up = upload_in_progress(&master.addr(), "/bucket/cut");
    master.kill9();
    let lay = Layout { volumes: old.clone(), replicas: 3, subvolumes: 4 };
    let first = lay.replicas("/bucket/cut")[0].split('/').next().unwrap().to_string();
    let v = &vols[old.iter().position(|o| *o == first).unwrap()];
    let part1 = format!("{}.1.", up.id);
    let file = v.files().into_iter().find(|f| f.contains("_parts/") && f.contains(&part1)).expect("part 1's file");
    let path = v.dir().join(&file);
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let part2 = format!("{}.2.", up.id);
    let file = v.files().into_iter().find(|f| f.contains("_parts/") && f.contains(&part2)).expect("part 2's file");
    let path = v.dir().join(&file);
    let mut flipped = std::fs::read(&path).unwrap();
    flipped[1000] ^= 0xff;
    std::fs::write(&path, &flipped).unwrap();
    rebalance_offline_then_complete(&mut master, &mut vols, &new, &up);
}

/// Going to fewer replicas, a part's replicas that stay are read first: with both damaged at
/// their size, the one good copy that leaves is copied onto them before it goes. They were
/// not looked at, and the upload could never complete (found by a helper).
#[test]
fn fewer_replicas_mend_damaged_parts_that_stay() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let three = addrs(&vols);
    let master = Master::start_on(&three, &flags());
    let addr = master.addr();
    let up = upload_in_progress(&addr, "/bucket/fewer");
    let lay = Layout { volumes: three.clone(), replicas: 3, subvolumes: 4 };
    for (i, _) in &lay.files("/bucket/fewer")[..2] {
        for f in vols[*i].files().into_iter().filter(|f| f.contains("_parts/")) {
            let path = vols[*i].dir().join(f);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[7] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    switch(&addr, &three, 2);
    let r = request(&addr, "VOLUMES", "/?parts", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_completes(&addr, &up, &vols);
}

/// `VOLUMES /?settled=` forgets the volumes outside the list only when no part of an upload
/// in progress is still on them (one recorded after the rebalance moved the parts, whose own
/// move failed): forgotten, they would be stopped, and the part lost with them.
#[test]
fn volumes_holding_a_part_are_not_forgotten() {
    let (vols, old, new) = old_and_new_volumes();
    let master = Master::start_on(&old, &flags());
    let addr = master.addr();
    let up = upload_in_progress(&addr, "/bucket/stays");
    // the list switched, the parts not moved (as if their moves had failed)
    let r = request(&addr, "VOLUMES", &format!("/?volumes={}", new.join(",")), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(&addr, "VOLUMES", &format!("/?settled={}", new.join(",")), &[], b"");
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.text().contains("2 part(s) of S3 uploads in progress"), "{r:?}");
    // the parts move, and then the old volumes may go
    let r = request(&addr, "VOLUMES", "/?parts", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(&addr, "VOLUMES", &format!("/?settled={}", new.join(",")), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_completes(&addr, &up, &vols);
}

/// An online rebalance whose moves meet a volume too busy to answer in time (here: stopped
/// for 1.5 s, past a 1 s `-voltimeout`) asks for those keys again once the pass is done,
/// fewer at once, and ends whole. It reported each as failed and exited 1.
#[test]
fn an_online_rebalance_asks_again_for_keys_that_met_a_busy_volume() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let all = addrs(&vols);
    let (three, four) = (all[..3].to_vec(), all.clone());
    let mut args = flags();
    args.extend(["-voltimeout", "1s"]);
    let master = Master::start_on(&three, &args);
    let (live, unlinked) = fill(&master, 40);
    vols[3].pause();
    let resume = thread::spawn({
        let pid = vols[3].pid();
        move || {
            thread::sleep(Duration::from_millis(1500));
            // Volume::resume, from the pid: the volume stays with the test
            signal(-pid.expect("volume running"), libc::SIGCONT);
        }
    });
    let (code, err) = rebalance(&four, &["-online", &format!("http://{}", master.addr())]);
    resume.join().unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("met a busy volume: asking again"), "no key met the stopped volume: {err}");
    for key in &live {
        assert_eq!(get_follow(&master.addr(), key).body, value_of(key), "{key}");
    }
    for key in &unlinked {
        assert_eq!(get(&master.addr(), key).status, 404, "{key}");
    }
}

/// An online rebalance onto a list naming a volume that does not answer is refused before
/// the master switches, as the offline one is: switched, the master placed new keys on the
/// dead volume and most PUTs failed until the next rebalance.
#[test]
fn an_online_rebalance_onto_an_unreachable_volume_is_refused_before_the_switch() {
    let (_vols, four, master, keys) = three_of_four(&flags(), "/u/", 10);
    let dead = format!("127.0.0.1:{}", free_port());
    let mut to = four[..3].to_vec();
    to.push(dead.clone());
    let (code, err) = rebalance(&to, &["-online", &format!("http://{}", master.addr())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&dead) && err.contains("unreachable") && err.contains("nothing switched"), "{err}");
    let r = request(&master.addr(), "VOLUMES", &format!("/?volumes={}&replicas=3", to.join(",")), &[], b"");
    assert_eq!(r.status, 503, "{r:?}");
    for i in 0..20 {
        let key = format!("/after/{i}");
        assert_eq!(request(&master.addr(), "PUT", &key, &[], b"v").status, 201, "{key}: still on the old list");
    }
    for key in &keys {
        assert_eq!(get_follow(&master.addr(), key).body, value_of(key), "{key}");
    }
}

/// `mkv rebalance -online` without `-replicas` keeps the master's own count: it sent the
/// default (3), so a master of 2 replicas went to 3 and copied every key to a third volume
/// (a rebalance onto the same list "moved" all of them), and a 2-volume master could not be
/// rebalanced at all ("-replicas 3 needs at least 3 volumes").
#[test]
fn an_online_rebalance_without_replicas_keeps_the_masters_count() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let all = addrs(&vols);
    let master = Master::start_on(&all[..3], &["-replicas", "2", "-subvolumes", "1"]);
    let addr = master.addr();
    assert_eq!(request(&addr, "PUT", "/two/k", &[], b"value").status, 201);
    let online = format!("http://{addr}");
    let replicas_now = || {
        let r = request(&addr, "VOLUMES", "/", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["replicas"].as_u64().unwrap()
    };
    for to in [&all[..3], &all[1..3], &all[..]] {
        let (code, err) = run_mkv(&["rebalance", "-volumes", &to.join(","), "-subvolumes", "1", "-online", &online]);
        assert_eq!(code, Some(0), "onto {to:?}: {err}");
        assert_eq!(replicas_now(), 2, "onto {to:?}: {err}");
        let r = request(&addr, "HEAD", "/two/k", &[], b"");
        assert_eq!(r.header("key-volumes").unwrap().split(',').count(), 2, "onto {to:?}: {r:?}");
        assert_eq!(r.header("key-balance"), Some("balanced"), "onto {to:?}: {r:?}");
    }
    // given, it is the new count
    let (code, err) = run_mkv(&["rebalance", "-volumes", &all.join(","), "-replicas", "3", "-online", &online]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(replicas_now(), 3);
}

/// `mkv rebalance -online` pointed at a volume's address (not the master's) says so in one
/// line, as verify and snapshot do: it printed nginx's whole HTML 405 page.
#[test]
fn an_online_rebalance_pointed_at_a_volume_says_so_in_one_line() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let all = addrs(&vols);
    let online = format!("http://{}", all[0]);
    let (code, err) = run_mkv(&["rebalance", "-volumes", &all.join(","), "-online", &online]);
    assert_eq!(code, Some(1), "{err}");
    let err = err.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("405") && err.contains("master's address"), "{err}");
}

/// Pointed at the master's -admin address (which takes VOLUMES too), it is refused before
/// anything switched: the master moved to the new list, then the listing failed ("bad
/// listing from the master: expected value at line 1 column 1").
#[test]
fn an_online_rebalance_pointed_at_the_admin_port_switches_nothing() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let all = addrs(&vols);
    let master = Master::start_on(&all[..3], &["-replicas", "2", "-subvolumes", "1"]);
    let admin = master.admin_addr().expect("an admin address");
    let (code, err) = run_mkv(&["rebalance", "-volumes", &all.join(","), "-online", &format!("http://{admin}")]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("-admin") && err.contains("Nothing switched"), "{err}");
    let r = request(&master.addr(), "VOLUMES", "/", &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["volumes"].as_array().unwrap().len(), 3, "switched: {v}");
}

/// A master restarted with a -volumes or -replicas other than its last rebalance's says so:
/// after `rebalance -online -replicas 2`, a restart with the old command line (3 replicas)
/// started silently, every key then unbalanced and verify content.
#[test]
fn a_restart_with_another_list_or_count_than_the_last_rebalance_warns() {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let all = addrs(&vols);
    let mut master = Master::start_on(&all[..3], &["-replicas", "3", "-subvolumes", "1"]);
    let addr = master.addr();
    assert_eq!(request(&addr, "PUT", "/count/k", &[], b"value").status, 201);
    let online = format!("http://{addr}");
    let (code, err) = run_mkv(&[
        "rebalance",
        "-volumes",
        &all[..3].join(","),
        "-replicas",
        "2",
        "-subvolumes",
        "1",
        "-online",
        &online,
    ]);
    assert_eq!(code, Some(0), "{err}");
    // what the latest start said (restart waits for `listening on`, said after the warnings)
    let warned = |m: &Master, what: &str| {
        let lines = m.lines();
        let latest = lines.iter().rev().take_while(|l| !l.starts_with("--- restart"));
        latest.filter(|l| l.contains("warning")).any(|l| l.contains(what))
    };
    master.restart_with(&all[..3], &["-replicas", "3", "-subvolumes", "1"]);
    assert!(warned(&master, "last rebalanced to -replicas 2"), "{:?}", master.lines());
    assert!(!warned(&master, "last rebalanced to -volumes"), "{:?}", master.lines());
    master.restart_with(&all[..3], &["-replicas", "2", "-subvolumes", "1"]);
    assert!(!warned(&master, "last rebalanced"), "{:?}", master.lines());
    assert_eq!(get_follow(&master.addr(), "/count/k").body, b"value");
}

/// A copy a rebalance makes keeps its value's time (the PUT's `Date`, which nginx gives the
/// file it writes): a `rebuild` reads a record's time (S3's Last-Modified) back from its
/// files, and after a rebalance took the copies' own time, every moved object looked
/// modified then.
#[test]
fn a_rebalances_copies_keep_the_values_time() {
    let (vols, four, master, keys) = three_of_four(&flags(), "/t/", 12);
    let addr = master.addr();
    // the values' time, by the records (milliseconds), before the copies are made
    let r = get(&addr, "/t/?list&records");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let times: std::collections::HashMap<String, u64> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_string(), k["mtime"].as_u64().unwrap() / 1000))
        .collect();
    assert_eq!(times.len(), keys.len(), "{v}");
    thread::sleep(Duration::from_millis(2100));
    let (code, err) = rebalance(&four, &["-online", &format!("http://{addr}")]);
    assert_eq!(code, Some(0), "{err}");
    let copies = vols[3].files();
    assert!(!copies.is_empty(), "nothing moved to the new volume: {err}");
    let lay = Layout { volumes: four.clone(), replicas: 3, subvolumes: 4 };
    let mut checked = 0;
    for key in &keys {
        for (vol, rel) in lay.files(key).into_iter().filter(|(v, _)| *v == 3) {
            let meta = std::fs::metadata(vols[vol].dir().join(&rel)).unwrap();
            let secs = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            assert_eq!(secs, times[key], "{key}: the copy on the new volume took its own time");
            checked += 1;
        }
    }
    assert_eq!(checked, copies.len(), "{copies:?}");
}

/// `rebalance -online` tells moved keys from those already in place, as the offline one
/// does: it counted every key the master answered `204` for as "rebalanced", so a second run
/// over a balanced cluster looked like a second full move. The master says which in a
/// `Key-Rebalance` header.
#[test]
fn an_online_rebalance_counts_what_it_moved_and_what_was_in_place() {
    let (_vols, four, master, keys) = three_of_four(&flags(), "/tally/", 30);
    let online = format!("http://{}", master.addr());
    let tally = |err: &str, what: &str| {
        let line = err.lines().rev().find(|l| l.contains("keys")).unwrap_or_else(|| panic!("no summary: {err}"));
        line.split(", ").find_map(|p| p.strip_suffix(what)?.rsplit(' ').next()?.parse::<usize>().ok()).unwrap_or(0)
    };
    let (code, err) = rebalance(&four, &["-online", &online]);
    assert_eq!(code, Some(0), "{err}");
    let (moved, in_place) = (tally(&err, " moved"), tally(&err, " in place"));
    assert!(moved > 0 && moved + in_place == keys.len(), "{moved} moved, {in_place} in place: {err}");
    let (code, err) = rebalance(&four, &["-online", &online]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!((tally(&err, " moved"), tally(&err, " in place")), (0, keys.len()), "{err}");
    let r = request(&master.addr(), "REBALANCE", &keys[0], &[], b"");
    assert_eq!((r.status, r.header("key-rebalance")), (204, Some("in-place")), "{r:?}");
}

/// A rebalance killed between copying a key onto a new volume and recording it there left a
/// file no record names: a rebalance back to the old volumes never looked at that volume
/// again, and a rebuild counting it brought the key back, deleted or not (a helper's kill -9
/// of an online rebalance). The record names the copies before they are made, so the run
/// back deletes them.
#[test]
fn a_rebalance_killed_mid_copy_leaves_no_file_no_record_names() {
    // the first copy reaches the volume only after the rebalance was killed
    let (vols, three, four, held) = four_holding_one(|sent| sent.starts_with(b"PUT /sv"));
    let fourth = four[3].clone();
    let mut master = Master::start_on(&three, &flags());
    let moving: Vec<String> = (0..20)
        .map(|i| format!("/killed/{i}"))
        .filter(|k| layout(&four).replicas(k).iter().any(|r| r.starts_with(&fourth)))
        .collect();
    assert!(!moving.is_empty());
    for k in &moving {
        assert_eq!(request(&master.addr(), "PUT", k, &[], &value_of(k)).status, 201);
    }
    master.kill9();
    let db = master.db().to_str().unwrap().to_string();
    kill_rebalance_when_held(&four, &db, &["-concurrency", "1"], &held, || {
        vols[3].files().iter().any(|f| f.starts_with("sv"))
    });
    let (code, err) = rebalance(&three, &["-db", &db]);
    assert_eq!(code, Some(0), "{err}");
    let left: Vec<String> = vols[3].files().into_iter().filter(|f| f.starts_with("sv")).collect();
    assert!(left.is_empty(), "files on the dropped volume no record names: {left:?}\n{err}");
    master.restart_with(&three, &flags());
    for k in &moving {
        assert_eq!(get_follow(&master.addr(), k).body, value_of(k), "{k}");
    }
}

/// A rebalance killed between copying an upload's part onto a new volume and recording it
/// there left a part file no record names: a rebalance back never looked at that volume
/// again, and Complete and Abort delete only the files a record names (a key's moves had the
/// same window). The part's record names the copies before they are made.
#[test]
fn a_rebalance_killed_mid_part_copy_leaves_no_part_file_no_record_names() {
    // the first part copy is written beside its place and moved into it: the move reaches
    // the volume only after the rebalance was killed
    let (vols, three, four, held) = four_holding_one(|sent| sent.starts_with(b"MOVE "));
    let fourth = four[3].clone();
    let path = (0..)
        .map(|i| format!("/bucket/moving{i}"))
        .find(|k| layout(&four).replicas(k).iter().any(|r| r.starts_with(&fourth)))
        .unwrap();
    let mut master = Master::start_on(&three, &flags());
    let up = upload_in_progress(&master.addr(), &path);
    master.kill9();
    let db = master.db().to_str().unwrap().to_string();
    let parts_on = |v: &Volume| v.files().into_iter().filter(|f| f.contains("_parts/")).collect::<Vec<_>>();
    kill_rebalance_when_held(&four, &db, &["-concurrency", "1"], &held, || !parts_on(&vols[3]).is_empty());
    let (code, err) = rebalance(&three, &["-db", &db]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(parts_on(&vols[3]), Vec::<String>::new(), "part files no record names\n{err}");
    master.restart_with(&three, &flags());
    assert_completes(&master.addr(), &up, &vols);
}

/// A rebalance killed while a large value's copy was being written to a temporary file on a
/// new volume left that file there for good: the rerun copied the key again under a new
/// temporary name, so the first stayed, and once the volume left the list nothing looked at
/// it again (a helper's kill -9 of online rebalances left 59 MB of them). A copy's temporary
/// name is now the same for the same file, so the rerun's copy replaces it.
#[test]
fn a_rerun_after_a_killed_large_copy_leaves_no_temporary_file() {
    // the first temporary copy reaches the volume only after the rebalance was killed
    let (vols, three, four, held) =
        four_holding_one(|sent| sent.starts_with(b"PUT /") && sent.windows(6).take(64).any(|w| w == b"/_tmp/"));
    let fourth = four[3].clone();
    let key = (0..)
        .map(|i| format!("/large/{i}"))
        .find(|k| layout(&four).replicas(k).iter().any(|r| r.starts_with(&fourth)))
        .unwrap();
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut master = Master::start_on(&three, &flags());
    assert_eq!(request(&master.addr(), "PUT", &key, &[], &big).status, 201);
    master.kill9();
    let db = master.db().to_str().unwrap().to_string();
    let tmp_on = |v: &Volume| v.files().into_iter().filter(|f| f.contains("_tmp/")).collect::<Vec<_>>();
    kill_rebalance_when_held(&four, &db, &[], &held, || !tmp_on(&vols[3]).is_empty());
    let (code, err) = rebalance(&four, &["-db", &db]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(tmp_on(&vols[3]), Vec::<String>::new(), "temporary files left\n{err}");
    master.restart_with(&four, &flags());
    assert!(get_follow(&master.addr(), &key).body == big, "{key} reads back changed");
}

/// Four volumes, the fourth behind a proxy that holds the first request `held_if` picks for
/// 3 s (one a rebalance sends, to land after the rebalance was killed): the volumes, the
/// first three's addresses, all four's, and whether that request came.
fn four_holding_one(held_if: fn(&[u8]) -> bool) -> (Vec<Volume>, Vec<String>, Vec<String>, Arc<AtomicBool>) {
    let vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let held = Arc::new(AtomicBool::new(false));
    let fourth = {
        let held = held.clone();
        proxy(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), vols[3].addr(), 64 << 10, move |sent| {
            if held_if(sent) && !held.swap(true, Ordering::SeqCst) {
                thread::sleep(Duration::from_secs(3));
            }
        })
    };
    let three = addrs(&vols[..3]);
    let mut four = three.clone();
    four.push(fourth);
    (vols, three, four, held)
}

/// `mkv rebalance -volumes <four> -db <db> <extra>`, killed once the request the proxy holds
/// came ([`four_holding_one`]); returns once `landed` says it reached the volume.
fn kill_rebalance_when_held(four: &[String], db: &str, extra: &[&str], held: &AtomicBool, landed: impl Fn() -> bool) {
    let joined = four.join(",");
    let mut all = vec!["rebalance", "-volumes", &joined, "-db", db];
    all.extend(flags());
    all.extend_from_slice(extra);
    let mut run = spawn_mkv(&all, Stdio::null());
    wait_until("a copy to the new volume", TIMEOUT, || held.load(Ordering::SeqCst));
    let _ = run.kill();
    let _ = run.wait();
    wait_until("the held copy written", TIMEOUT, landed);
    thread::sleep(Duration::from_millis(500));
}

/// A move to more replicas (`-replicas` 2 → 3) named the new replica in the record before
/// copying it, and GETs, which take turns over `-replicas` of the named ones, were
/// redirected to it before it was written: 404 on the follow (a helper's readers during an
/// online 2 → 3, 1–3 in every run). Named ahead only where reads do not reach: a record that
/// fills the read rotation already.
#[test]
fn reads_during_a_move_to_more_replicas_go_to_written_ones() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let held = Arc::new(AtomicBool::new(false));
    let third = {
        let held = held.clone();
        proxy(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), vols[2].addr(), 64 << 10, move |sent| {
            if sent.starts_with(b"PUT /sv") && !held.swap(true, Ordering::SeqCst) {
                thread::sleep(Duration::from_secs(3));
            }
        })
    };
    let all = vec![vols[0].addr(), vols[1].addr(), third.clone()];
    let two = Layout { volumes: all.clone(), replicas: 2, subvolumes: SUBVOLUMES };
    let key =
        (0..).map(|i| format!("/grow/{i}")).find(|k| !two.replicas(k).iter().any(|r| r.starts_with(&third))).unwrap();
    let mut master = Master::start_on(&all, &["-replicas", "2", "-subvolumes", "4"]);
    assert_eq!(request(&master.addr(), "PUT", &key, &[], &value_of(&key)).status, 201);
    master.restart_with(&all, &["-replicas", "3", "-subvolumes", "4"]);
    let mover = {
        let (addr, key) = (master.addr(), key.clone());
        thread::spawn(move || request(&addr, "REBALANCE", &key, &[], b""))
    };
    wait_until("the copy to the third volume", TIMEOUT, || held.load(Ordering::SeqCst));
    for _ in 0..6 {
        let r = get_follow(&master.addr(), &key);
        assert_eq!(r.status, 200, "a GET while the third replica is copied went where it is not yet: {r:?}");
    }
    assert_eq!(mover.join().unwrap().status, 204);
    for _ in 0..3 {
        assert_eq!(get_follow(&master.addr(), &key).body, value_of(&key));
    }
}
