//! `mkv rebuild` against real nginx volumes: an index rebuilt from what the volumes hold
//! lists the same keys, unlinked keys and replica sets as the master that wrote them.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

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

    let path = db.path().to_path_buf();
    let again = Master::start_args(db, server_args(&path, &addrs, &flags));
    let mut after = snapshot(&again.addr(), &keys);
    if !verify {
        // without -verify the rebuilt records have no MD5
        assert!(after.records.values().all(|(_, md5)| md5.is_none()), "{after:?}");
        after.records.values_mut().zip(before.records.values()).for_each(|(a, b)| a.1 = b.1.clone());
    }
    assert_eq!(after, before);
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
    scored.sort_by(|a, b| b.0.cmp(&a.0));
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
