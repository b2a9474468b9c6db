//! `mkv rebuild` against real nginx volumes: an index rebuilt from what the volumes hold
//! lists the same keys, unlinked keys and replica sets as the master that wrote them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::{engine::general_purpose::STANDARD, Engine};
use common::*;
use md5::{Digest, Md5};

/// Percent-encodes every byte of a key but unreserved ones and `/`.
fn enc(key: &[u8]) -> String {
    let mut out = String::new();
    for &b in key {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn b64(key: &[u8]) -> String {
    STANDARD.encode(key)
}

/// Keys of every kind a volume stores differently: plain, base64 with `/` (nested folders),
/// non-ASCII. (Keys whose base64 holds `//` are refused by PUT: see the minikeyvalue test.)
fn test_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..30).map(|i| format!("/plain/{i}").into_bytes()).collect();
    let mut i = 0;
    while keys.len() < 50 {
        let k = format!("/q{i}?>").into_bytes();
        if b64(&k).contains('/') {
            keys.push(k);
        }
        i += 1;
    }
    keys.push(b"/??>".to_vec());
    keys.push(b"/a\xff\xe0".to_vec());
    keys.push("/ünï cödé".as_bytes().to_vec());
    for k in &keys {
        // a name ending in '/' cannot be a file: such keys are not stored at all
        assert!(!b64(k).ends_with('/') && !b64(k).contains("//"), "{k:?}");
    }
    keys
}

fn value(key: &[u8]) -> Vec<u8> {
    let mut v = b"value of ".to_vec();
    v.extend_from_slice(key);
    v
}

/// What a master shows of its index: live and unlinked listings, and per live key its
/// `Key-Volumes` and `Content-Md5`.
#[derive(Debug, PartialEq)]
struct Snapshot {
    live: Vec<String>,
    unlinked: Vec<String>,
    records: BTreeMap<String, (String, Option<String>)>,
}

fn listing(addr: &str, what: &str) -> Vec<String> {
    // percent-encoded: every key exactly, UTF-8 or not
    let r = get(addr, &format!("/?{what}&limit=0&encoding=url"));
    assert_eq!(r.status, 200, "?{what}: {r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("listing JSON");
    v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
}

fn snapshot(addr: &str, keys: &[Vec<u8>]) -> Snapshot {
    let mut records = BTreeMap::new();
    for k in keys {
        let r = get(addr, &enc(k));
        if r.status == 302 {
            let vols = r.header("key-volumes").expect("Key-Volumes").to_string();
            records.insert(enc(k), (vols, r.header("content-md5").map(String::from)));
        } else {
            assert_eq!(r.status, 404, "GET {}: {r:?}", enc(k));
        }
    }
    Snapshot { live: listing(addr, "list"), unlinked: listing(addr, "unlinked"), records }
}

/// Each live key's record time (milliseconds), from `?list&records`.
fn times(addr: &str) -> BTreeMap<String, u64> {
    let r = get(addr, "/?list&records&limit=0&encoding=url");
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("listing JSON");
    let records = v["records"].as_array().or(v["keys"].as_array()).expect("records");
    records.iter().map(|r| (r["key"].as_str().unwrap().to_string(), r["mtime"].as_u64().unwrap())).collect()
}

fn put(addr: &str, key: &[u8]) {
    let r = request(addr, "PUT", &enc(key), &[], &value(key));
    assert_eq!(r.status, 201, "PUT {}: {r:?}", enc(key));
}

fn rebuild(volumes: &[String], db: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let vols = volumes.join(",");
    let db = db.display().to_string();
    let mut args = vec!["rebuild", "-volumes", &vols, "-db", &db];
    args.extend_from_slice(extra);
    run_mkv(&args)
}

/// The summary line's tallies, e.g. `5 live`.
fn summary(stderr: &str) -> &str {
    stderr.lines().find(|l| l.contains("keys seen")).unwrap_or_else(|| panic!("no summary in:\n{stderr}"))
}

/// Writes keys through a master (some unlinked, some deleted), rebuilds into a fresh index,
/// and compares what a master on the rebuilt index shows with what the original showed.
fn same_as_the_master(subvolumes: &str, verify: bool) {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let flags = ["-replicas", "2", "-subvolumes", subvolumes];
    let mut master = Master::start(&vols, &flags);
    let keys = test_keys();
    for k in &keys {
        put(&master.addr(), k);
    }
    let slashy: Vec<&Vec<u8>> = keys[30..50].iter().collect();
    let unlinked: Vec<&Vec<u8>> = [&keys[1], &keys[7], slashy[0], slashy[3], &keys[keys.len() - 3]].into();
    for k in &unlinked {
        assert_eq!(request(&master.addr(), "UNLINK", &enc(k), &[], b"").status, 204);
    }
    for k in [&keys[2], slashy[1]] {
        assert_eq!(request(&master.addr(), "DELETE", &enc(k), &[], b"").status, 204);
    }
    let before = snapshot(&master.addr(), &keys);
    let times_before = times(&master.addr());
    assert_eq!(before.records.len(), keys.len() - unlinked.len() - 2);
    assert_eq!(before.unlinked.len(), unlinked.len());
    master.kill9();

    let db = TempDir::new("rebuilt");
    let mut extra: Vec<&str> = flags.to_vec();
    if verify {
        extra.push("-verify");
    }
    let (code, stderr) = rebuild(&addrs, db.path(), &extra);
    assert_eq!(code, Some(0), "{stderr}");
    let tallies = format!(
        "{} keys seen, {} live, {} unlinked, 0 under-replicated, 0 strays, 0 failed",
        keys.len() - 2,
        before.records.len(),
        unlinked.len()
    );
    assert!(summary(&stderr).contains(&tallies), "{stderr}");
    // everything flushed into tables: no write-ahead log for the master's first start to replay
    let logs: Vec<(String, u64)> = std::fs::read_dir(db.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    assert!(logs.iter().all(|(_, len)| *len == 0), "rebuild left a log to replay: {logs:?}");

    let path = db.path().to_path_buf();
    let again = Master::start_args(db, server_args(&path, &addrs, &flags));
    let mut after = snapshot(&again.addr(), &keys);
    if !verify {
        // without -verify the rebuilt records have no MD5
        assert!(after.records.values().all(|(_, md5)| md5.is_none()), "{after:?}");
        after.records.values_mut().zip(before.records.values()).for_each(|(a, b)| a.1 = b.1.clone());
    }
    assert_eq!(after, before);
    // each record's time is its files' (nginx lists them to the second)
    let times_after = times(&again.addr());
    assert_eq!(times_after.len(), times_before.len());
    for (key, t) in &times_after {
        let was = times_before[key];
        assert!(*t > 0 && t.abs_diff(was) <= 2000, "{key}: time {t} after the rebuild, {was} before");
    }
    // unlinked keys came back unlinked: a PUT replaces them, a second one finds them live
    put(&again.addr(), unlinked[0]);
    assert_eq!(get_follow(&again.addr(), &enc(unlinked[0])).body, value(unlinked[0]));
}

#[test]
fn rebuild_gives_the_masters_index_without_subvolumes() {
    same_as_the_master("1", false);
}

#[test]
fn rebuild_gives_the_masters_index_with_subvolumes_and_verify() {
    same_as_the_master("4", true);
}

#[test]
fn rebuild_refuses_an_index_with_keys_unless_forced() {
    let vols: Vec<Volume> = (0..2).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let flags = ["-replicas", "2", "-subvolumes", "1"];
    let mut master = Master::start(&vols, &flags);
    for k in ["/a", "/b", "/c"] {
        put(&master.addr(), k.as_bytes());
    }
    let (code, stderr) = rebuild(&addrs, master.db(), &[&flags[..], &["-force"]].concat());
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("locked"), "a running master's index: {stderr}");
    master.kill9();

    let (code, stderr) = rebuild(&addrs, master.db(), &flags);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("already holds keys") && stderr.contains("-force"), "{stderr}");

    // what only the old index knew (a key whose files are gone) does not survive -force
    for v in &vols {
        let path = v.dir().join(&placement_path(b"/b")[1..]);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let (code, stderr) = rebuild(&addrs, master.db(), &[&flags[..], &["-force"]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(summary(&stderr).contains("2 keys seen, 2 live"), "{stderr}");
    master.restart();
    assert_eq!(listing(&master.addr(), "list"), ["/a", "/c"]);

    // a -db where no index can be: the open's own reason, not "no space left" (a
    // filesystem without blocks, such as /proc, reports none free)
    let (code, stderr) = rebuild(&addrs, Path::new("/proc/mkv-index"), &flags);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("no space"), "{stderr}");
}

#[test]
fn rebuild_fails_when_a_volume_is_down() {
    let mut vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let mut master = Master::start(&vols, &[]);
    put(&master.addr(), b"/x");
    master.kill9();
    vols[1].stop();
    let db = TempDir::new("rebuilt");
    let (code, stderr) = rebuild(&addrs, db.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addrs[1]) && stderr.contains("unreachable"), "{stderr}");
    // into an index a master holds: that is what is said, before any volume is asked
    let running = Master::start(&vols[..1], &["-replicas", "1"]);
    let (code, stderr) = rebuild(&addrs, running.db(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("locked"), "{stderr}");
}

/// A DELETE that failed half way (one replica's volume down) leaves its key under
/// `?unlinked` for a retry; the replica left on that volume had no marker, and a rebuild
/// brought the deleted key back live. The volumes that took the delete now keep a marker,
/// and a rebuild restores the key unlinked; the retried DELETE leaves no file at all.
#[test]
fn a_delete_that_failed_half_way_is_rebuilt_unlinked() {
    let mut vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let mut master = Master::start(&vols, &["-replicas", "3", "-subvolumes", "1"]);
    let addr = master.addr();
    put(&addr, b"/del/k");
    vols[2].stop();
    let r = request(&addr, "DELETE", "/del/k", &[], b"");
    assert!(r.status >= 500, "{r:?}");
    assert_eq!(listing(&addr, "unlinked"), ["/del/k"]);
    vols[2].start();
    assert_eq!(vols[2].files().len(), 1, "the replica left where the DELETE could not reach");
    let db = TempDir::new("rebuilt");
    let (code, stderr) = rebuild(&addrs, db.path(), &["-subvolumes", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    // the markers beside a DELETE not finished are no damage
    let (code, err) = run_mkv(&["verify", "-online", &format!("http://{addr}"), "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    let rebuilt = Master::start_args(TempDir::new("unused"), server_args(db.path(), &addrs, &["-subvolumes", "1"]));
    assert_eq!(listing(&rebuilt.addr(), "list"), Vec::<String>::new(), "{stderr}");
    assert_eq!(listing(&rebuilt.addr(), "unlinked"), ["/del/k"]);
    drop(rebuilt);
    wait_until("the DELETE retried", TIMEOUT, || request(&addr, "DELETE", "/del/k", &[], b"").status == 204);
    for v in &vols {
        assert_eq!(v.files(), Vec::<String>::new(), "{}", v.addr());
    }
    master.kill9();
}

/// A PUT over an unlinked key whose old unlink marker could not be deleted on one volume
/// (a volume failing between the moves and the clean-up): it answered `201` and left the
/// marker beside the live value, and a rebuild restored the key unlinked. Now the markers go
/// before the record says live: that PUT fails, the replacement is rolled forward unlinked
/// (as its client was told it failed) with markers beside it, and the next PUT makes it live
/// with none left.
#[test]
fn a_put_over_an_unlinked_key_is_live_only_once_its_markers_are_gone() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let master = Master::start(&vols, &["-replicas", "3", "-subvolumes", "1"]);
    let addr = master.addr();
    assert_eq!(request(&addr, "PUT", "/mark/k", &[], b"old").status, 201);
    assert_eq!(request(&addr, "UNLINK", "/mark/k", &[], b"").status, 204);
    let marker = vols[0].files().into_iter().find(|f| f.starts_with("_unlinked/")).expect("a marker");
    // a folder where the marker was: nginx refuses to DELETE it as a file
    let obstacle = vols[0].dir().join(&marker);
    std::fs::remove_file(&obstacle).unwrap();
    std::fs::create_dir_all(obstacle.join("in-the-way")).unwrap();
    let r = request(&addr, "PUT", "/mark/k", &[], b"the new value");
    assert!(r.status >= 500, "a live value beside a marker: {r:?}");
    assert_eq!(get(&addr, "/mark/k").status, 404);
    std::fs::remove_dir_all(&obstacle).unwrap();
    wait_until("the replacement rolled forward, unlinked", TIMEOUT, || unlinked_size(&addr, "/mark/k") == Some(13));
    for v in &vols {
        assert!(v.files().iter().any(|f| f.starts_with("_unlinked/")), "no marker on {}", v.addr());
    }
    let db = TempDir::new("rebuilt");
    let (code, stderr) = rebuild(&addrs, db.path(), &["-subvolumes", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(summary(&stderr).contains("0 live, 1 unlinked"), "{stderr}");
    wait_until("a PUT over it", TIMEOUT, || request(&addr, "PUT", "/mark/k", &[], b"third").status == 201);
    for v in &vols {
        assert_eq!(v.files().len(), 1, "{}: {:?}", v.addr(), v.files());
    }
    let db = TempDir::new("rebuilt2");
    let (code, stderr) = rebuild(&addrs, db.path(), &["-subvolumes", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(summary(&stderr).contains("1 live, 0 unlinked"), "{stderr}");
}

/// A PUT over an unlinked key that placement now puts elsewhere, while a volume holding
/// only its old replica is down: the first try failed (its old marker could not go), the
/// recovery rolled the value forward onto the new volumes and its record forgot the old
/// one, so a retry (boto3 retries a 503) answered `201` with the old marker left on the
/// volume that was down, and a rebuild restored the live key unlinked. The replacement now
/// stays pending until that marker is gone: writes fail meanwhile, and the one after the
/// volume is back leaves no marker anywhere.
#[test]
fn a_put_over_an_unlinked_key_moved_elsewhere_waits_for_its_old_volume() {
    let mut vols: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let mut master = Master::start_on(&addrs[..2], &["-replicas", "2", "-subvolumes", "1"]);
    // a key the four volumes place away from one of the first two
    let (key, gone) = (0..100)
        .find_map(|i| {
            let key = format!("/moved/{i}");
            let new = placement(key.as_bytes(), &addrs, 2, 1);
            let left = addrs[..2].iter().position(|a| !new.contains(a))?;
            Some((key, left))
        })
        .expect("a key placed elsewhere");
    assert_eq!(request(&master.addr(), "PUT", &key, &[], b"old").status, 201);
    assert_eq!(request(&master.addr(), "UNLINK", &key, &[], b"").status, 204);
    master.restart_with(&addrs, &["-replicas", "2", "-subvolumes", "1"]);
    let addr = master.addr();
    vols[gone].stop();
    wait_until("the volume down", Duration::from_secs(5), || {
        request(&addr, "PUT", &key, &[], b"the new value").status >= 500
    });
    thread::sleep(Duration::from_secs(2));
    let r = request(&addr, "PUT", &key, &[], b"the new value");
    assert!(r.status >= 500, "a retry while the old marker is still there: {r:?}");
    vols[gone].start();
    wait_until("a PUT once the volume is back", TIMEOUT, || {
        request(&addr, "PUT", &key, &[], b"the new value").status == 201
    });
    for v in &vols {
        assert!(!v.files().iter().any(|f| f.starts_with("_unlinked/")), "a marker left on {}", v.addr());
    }
    let db = TempDir::new("rebuilt");
    let (code, stderr) = rebuild(&addrs, db.path(), &["-subvolumes", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(summary(&stderr).contains("1 live, 0 unlinked"), "{stderr}");
}

/// A PUT over an unlinked key whose every volume hangs while it DELETEs the old markers
/// (it answers neither them nor its probes, so it is found down): the DELETEs time out, the
/// PUT fails and recovery rolls the new value forward unlinked, putting the markers back.
/// The volumes carry out the DELETEs late: had recovery put the markers back before those
/// answers came, the late DELETEs would remove them and a rebuild would restore the failed
/// PUT's value live. A volume takes no write until its late answers are in. (A volume that
/// answers its probes meanwhile is slow, not hung, and its DELETEs are waited for.)
#[test]
fn late_marker_deletes_do_not_undo_the_markers_recovery_puts_back() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let direct: Vec<String> = vols.iter().map(Volume::addr).collect();
    let slow_deletes = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proxied: Vec<String> = direct
        .iter()
        .map(|v| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let slow = slow_deletes.clone();
            common::proxy(listener, v.clone(), 64 << 10, move |sent| {
                let hung = sent.starts_with(b"DELETE /_unlinked/") || sent.starts_with(b"HEAD / ");
                if slow.load(std::sync::atomic::Ordering::SeqCst) && hung {
                    thread::sleep(Duration::from_secs(3));
                }
            })
        })
        .collect();
    let master = Master::start_on(&proxied, &["-replicas", "3", "-subvolumes", "1", "-voltimeout", "1s"]);
    let addr = master.addr();
    assert_eq!(request(&addr, "PUT", "/late/k", &[], b"old").status, 201);
    assert_eq!(request(&addr, "PUT", "/late/other", &[], b"read on").status, 201);
    assert_eq!(request(&addr, "UNLINK", "/late/k", &[], b"").status, 204);
    slow_deletes.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = request(&addr, "PUT", "/late/k", &[], b"the new value");
    assert!(r.status >= 500, "the markers could not go in time: {r:?}");
    let r = request(&addr, "PUT", "/late/third", &[], b"v");
    assert!(r.status >= 500, "a write while the DELETEs may still be carried out: {r:?}");
    slow_deletes.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("reads once the volumes answer again", TIMEOUT, || {
        request(&addr, "GET", "/late/other", &[], b"").status == 302
    });
    assert_eq!(get_follow(&addr, "/late/other").body, b"read on");
    wait_until("the replacement rolled forward, unlinked", TIMEOUT, || unlinked_size(&addr, "/late/k") == Some(13));
    // the held DELETEs reached the volumes 3 s after they were sent
    thread::sleep(Duration::from_secs(4));
    for v in &vols {
        assert!(v.files().iter().any(|f| f.starts_with("_unlinked/")), "no marker on {}", v.addr());
    }
    let db = TempDir::new("rebuilt");
    let (code, stderr) = rebuild(&direct, db.path(), &["-subvolumes", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(summary(&stderr).contains("1 live, 1 unlinked"), "{stderr}");
}

/// `/xx/yy/<base64>`, as minikeyvalue lays a key out.
fn placement_path(key: &[u8]) -> String {
    let d = Md5::digest(key);
    format!("/{:02x}/{:02x}/{}", d[0], d[1], b64(key))
}

/// minikeyvalue's placement, written out again so the test does not trust mkv's.
fn placement(key: &[u8], volumes: &[String], replicas: usize, subvolumes: u32) -> Vec<String> {
    let mut scored: Vec<([u8; 16], &String)> = volumes
        .iter()
        .map(|v| {
            let mut h = Md5::new();
            h.update(key);
            h.update(v.as_bytes());
            (h.finalize().into(), v)
        })
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored
        .into_iter()
        .take(replicas)
        .map(|(s, v)| {
            let sv = u32::from_be_bytes([s[12], s[13], s[14], s[15]]) % subvolumes;
            if subvolumes > 1 {
                format!("{v}/sv{sv:02X}")
            } else {
                v.clone()
            }
        })
        .collect()
}

fn write_file(volume: &Volume, replica: &str, path: &str, body: &[u8]) {
    let sub = replica.split_once('/').map_or(String::new(), |(_, sv)| format!("{sv}/"));
    let file = volume.dir().join(format!("{sub}{}", &path[1..]));
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(file, body).unwrap();
}

#[test]
fn rebuild_takes_over_volumes_laid_out_by_minikeyvalue() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let on = |replica: &str| vols.iter().find(|v| replica.starts_with(&v.addr())).unwrap();
    let mut keys: Vec<Vec<u8>> = (0..40).map(|i| format!("/mkv/{i}").into_bytes()).collect();
    keys.push(b"/??>".to_vec());
    // base64 with `//` (and a leading `/` after the hash folders): minikeyvalue stored them
    // where nginx merged the slashes; rebuild puts them back
    keys.push(b"/k\xff\xff\xfex".to_vec());
    keys.push(b"/\xff\xff\xff".to_vec());
    let mut want = BTreeMap::new();
    for k in &keys {
        let replicas = placement(k, &addrs, 2, 3);
        let mut merged = placement_path(k);
        while merged.contains("//") {
            merged = merged.replace("//", "/");
        }
        for r in &replicas {
            write_file(on(r), r, &merged, &value(k));
        }
        want.insert(enc(k), replicas.join(","));
    }
    // one key with a single replica: indexed, and counted under-replicated
    let lone = b"/lone".to_vec();
    let first = placement(&lone, &addrs, 2, 3).remove(0);
    write_file(on(&first), &first, &placement_path(&lone), &value(&lone));
    want.insert(enc(&lone), first);
    // replicas away from placement go after those where it puts them: a third copy beyond
    // -replicas, and a first replica in another subvolume than placement's
    let extra = b"/extra".to_vec();
    let all3 = placement(&extra, &addrs, 3, 3);
    for r in &all3 {
        write_file(on(r), r, &placement_path(&extra), &value(&extra));
    }
    want.insert(enc(&extra), all3.join(","));
    let moved = b"/moved".to_vec();
    let p = placement(&moved, &addrs, 2, 3);
    let (server, sv) = p[0].split_once("/sv").unwrap();
    let elsewhere = format!("{server}/sv{:02X}", (u32::from_str_radix(sv, 16).unwrap() + 1) % 3);
    for r in [&elsewhere, &p[1]] {
        write_file(on(r), r, &placement_path(&moved), &value(&moved));
    }
    want.insert(enc(&moved), format!("{},{elsewhere}", p[1]));
    // strays: a name that is not base64, a key in the wrong folder, a marker without data
    write_file(&vols[0], "x/sv00", "/ab/cd/not*base64", b"?");
    write_file(&vols[0], "x/sv01", &format!("/00/00/{}", b64(b"/misplaced")), b"?");
    write_file(&vols[1], "x/sv02", &format!("/_unlinked{}", placement_path(b"/gone")), b"unlinked\n");

    let db = TempDir::new("rebuilt");
    let flags = ["-replicas", "2", "-subvolumes", "3"];
    let (code, stderr) = rebuild(&addrs, db.path(), &flags);
    assert_eq!(code, Some(0), "{stderr}");
    let n = keys.len() + 3;
    let tallies = format!("{n} keys seen, {n} live, 0 unlinked, 1 under-replicated, 2 strays, 1 markers without data");
    assert!(summary(&stderr).contains(&tallies), "{stderr}");

    let path = db.path().to_path_buf();
    let master = Master::start_args(db, server_args(&path, &addrs, &flags));
    let all: Vec<Vec<u8>> = keys.iter().cloned().chain([lone, extra, moved]).collect();
    let got = snapshot(&master.addr(), &all);
    assert!(got.unlinked.is_empty());
    assert_eq!(got.live.len(), n);
    let volumes: BTreeMap<String, String> = got.records.into_iter().map(|(k, (v, _))| (k, v)).collect();
    assert_eq!(volumes, want);
    let r = get(&master.addr(), &enc(&keys[3]));
    assert_eq!(r.header("key-balance"), Some("balanced"));
    assert_eq!(get_follow(&master.addr(), &enc(b"/??>")).body, value(b"/??>"));
    for k in [&b"/k\xff\xff\xfex"[..], b"/\xff\xff\xff"] {
        assert_eq!(get_follow(&master.addr(), &enc(k)).body, value(k), "{}", enc(k));
    }
}

// ---- a hostile volume ------------------------------------------------------------------

/// What the hostile volume serves at a path.
enum Answer {
    Json(String),
    /// A `200` whose body is not a listing at all.
    Garbage,
    /// A chunked listing that goes on far past any sane size (until the reader hangs up).
    Endless,
    Missing,
}

/// nginx's JSON autoindex of `entries` (name, is a folder), each as many times as given.
fn autoindex(entries: &[(&str, bool, usize)]) -> String {
    let mut out = String::from("[\n");
    for &(name, dir, times) in entries {
        let entry = if dir {
            format!("{{ \"name\":\"{name}\", \"type\":\"directory\", \"mtime\":\"Wed, 02 Dec 2026 01:08:35 GMT\" }},\n")
        } else {
            format!(
                "{{ \"name\":\"{name}\", \"type\":\"file\", \"mtime\":\"Wed, 02 Dec 2026 01:08:35 GMT\", \"size\":1 }},\n"
            )
        };
        out.push_str(&entry.repeat(times));
    }
    if out.ends_with(",\n") {
        out.truncate(out.len() - 2);
    }
    out.push_str("\n]");
    out
}

/// A volume that lies: `/00/00/` and every folder below it list the subfolders `a` and `b`
/// thousands of times each (as a symlink to the parent would, without end), `/00/` lists its
/// `00` thousands of times, `/00/01/` never ends, `/7f/` is an HTML page, `/ff/ff/` lists
/// 100,000 files.
fn hostile(path: &str) -> Answer {
    match path {
        "/" => Answer::Json(autoindex(&[("00", true, 1000), ("7f", true, 1), ("ff", true, 1)])),
        "/00/" => Answer::Json(autoindex(&[("00", true, 3000), ("01", true, 1)])),
        "/00/01/" => Answer::Endless,
        "/7f/" => Answer::Garbage,
        "/ff/" => Answer::Json(autoindex(&[("ff", true, 1)])),
        "/ff/ff/" => Answer::Json(autoindex(&[("eA==", false, 100_000)])),
        p if p.starts_with("/00/00/") => Answer::Json(autoindex(&[("a", true, 3000), ("b", true, 3000)])),
        _ => Answer::Missing,
    }
}

/// A fake volume speaking HTTP/1.1 (keep-alive, `HEAD` for the health probes) that answers
/// GETs from [`hostile`] and counts them by path.
struct HostileVolume {
    addr: String,
    gets: Arc<Mutex<HashMap<String, usize>>>,
}

impl HostileVolume {
    fn start() -> HostileVolume {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap().to_string();
        let gets: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = Arc::clone(&gets);
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counts = Arc::clone(&counts);
                thread::spawn(move || {
                    let _ = serve_hostile(conn, &counts);
                });
            }
        });
        HostileVolume { addr, gets }
    }
}

fn serve_hostile(conn: TcpStream, gets: &Mutex<HashMap<String, usize>>) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let (method, path) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header.trim_end().is_empty() {
                break;
            }
        }
        if method == "HEAD" {
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        *gets.lock().unwrap().entry(path.clone()).or_default() += 1;
        let (status, body) = match hostile(&path) {
            Answer::Json(body) => ("200 OK", body),
            Answer::Garbage => ("200 OK", "<html><body><h1>It works!</h1></body></html>".to_string()),
            Answer::Missing => ("404 Not Found", String::new()),
            Answer::Endless => {
                out.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                )?;
                let entry = "{ \"name\":\"QUFB\", \"type\":\"file\", \"mtime\":\"Wed, 02 Dec 2026 01:08:35 GMT\", \"size\":1 },\n";
                let piece = entry.repeat((64 << 10) / entry.len());
                let chunk = format!("1\r\n[\r\n{:x}\r\n{piece}\r\n", piece.len());
                out.write_all(chunk.as_bytes())?;
                let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                // 4 GiB at most, should the reader never hang up
                for _ in 0..(4u64 << 30) / piece.len() as u64 {
                    out.write_all(chunk.as_bytes())?;
                }
                return Ok(());
            }
        };
        let head =
            format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        out.write_all(head.as_bytes())?;
        out.write_all(body.as_bytes())?;
    }
}

/// Highest resident set size of `pid` so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Peak RSS a rebuild may reach against the hostile volume (a clean one of these few keys
/// stays far below); the rebuild is killed as soon as it goes over.
const RSS_LIMIT: u64 = 200 << 20;
/// Time the rebuild may take; it is killed beyond.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// Runs `mkv <args>` watching its peak RSS: (exit code, stderr, peak RSS, time taken).
/// Panics (after killing it) if it goes over `RSS_LIMIT` or `TIME_LIMIT`.
fn run_watched(args: &[&str]) -> (Option<i32>, String, u64, Duration) {
    let began = Instant::now();
    let mut child = spawn_mkv(args, Stdio::piped());
    let stderr = child.stderr.take().unwrap();
    let lines = thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let mut peak = 0;
    let status = loop {
        if let Some(rss) = peak_rss(child.id()) {
            peak = peak.max(rss);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let over = peak > RSS_LIMIT || began.elapsed() > TIME_LIMIT;
        if over {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = lines.join().unwrap().join("\n");
            panic!(
                "rebuild killed after {:.1} s at a peak RSS of {} MiB (limits: {} MiB, {:?}):\n{stderr}",
                began.elapsed().as_secs_f64(),
                peak >> 20,
                RSS_LIMIT >> 20,
                TIME_LIMIT
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let took = began.elapsed();
    (status.code(), lines.join().unwrap().join("\n"), peak, took)
}

#[test]
fn rebuild_bounds_a_hostile_volume() {
    let vols: Vec<Volume> = (0..2).map(|_| Volume::new()).collect();
    let addrs: Vec<String> = vols.iter().map(Volume::addr).collect();
    let flags = ["-replicas", "2", "-subvolumes", "1"];
    let mut master = Master::start(&vols, &flags);
    let keys = test_keys();
    for k in &keys {
        put(&master.addr(), k);
    }
    let before = listing(&master.addr(), "list");
    assert_eq!(before.len(), keys.len());
    master.kill9();

    let bad = HostileVolume::start();
    let all = [addrs.clone(), vec![bad.addr.clone()]].concat().join(",");
    let db = TempDir::new("rebuilt");
    let db_arg = db.path().display().to_string();
    let args = [&["rebuild", "-volumes", &all, "-db", &db_arg][..], &flags].concat();
    let (code, stderr, peak, took) = run_watched(&args);
    eprintln!(
        "rebuild against the hostile volume: exit {code:?}, {:.1} s, peak RSS {} MiB",
        took.as_secs_f64(),
        peak >> 20
    );

    // keys may have been missed: the run says so, naming each folder it refused
    assert_eq!(code, Some(1), "{stderr}");
    for folder in ["/00/00/", "/00/01/", "/7f/", "/ff/ff/"] {
        let named = format!("{}{folder}", bad.addr);
        assert!(stderr.contains(&named), "{named} not named:\n{stderr}");
    }
    assert!(summary(&stderr).contains(", 4 listings refused"), "{stderr}");
    // each folder listed once however often listings name it (`/` by both steps of discovery)
    let gets = bad.gets.lock().unwrap().clone();
    let again: Vec<_> = gets.iter().filter(|(p, n)| **n > 1 && p.as_str() != "/").collect();
    assert!(again.is_empty(), "listed more than once: {again:?}");
    assert!(gets.len() < 500, "{} folders listed", gets.len());

    // the real volumes' keys are all in the index
    let path = db.path().to_path_buf();
    let rebuilt = Master::start_args(db, server_args(&path, &addrs, &flags));
    assert_eq!(listing(&rebuilt.addr(), "list"), before);
}
