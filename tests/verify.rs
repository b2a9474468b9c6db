//! `mkv verify` (offline and `-online`), `-repair`, the master's `-scrub`, `mkv snapshot`,
//! and what they rest on (spread reads, `REBALANCE` restoring a replica, `-sync`), against
//! real nginx volumes and a real master: damage is made on disk, found with the right
//! counts, repaired, and the volumes then hold exactly the right files with the right bytes.

mod common;

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use common::layout::*;
use common::*;

const REPLICAS: usize = 2;
const SUBVOLUMES: u32 = 2;
const FLAGS: [&str; 4] = ["-replicas", "2", "-subvolumes", "2"];

fn value_of(key: &str) -> Vec<u8> {
    format!("{key} is worth keeping; ").repeat(1 + key.len() % 7).into_bytes()
}

fn addrs(vols: &[Volume]) -> Vec<String> {
    vols.iter().map(Volume::addr).collect()
}

fn layout(vols: &[Volume]) -> Layout {
    Layout { volumes: addrs(vols), replicas: REPLICAS, subvolumes: SUBVOLUMES }
}

/// Three volumes, a master placing 2 replicas in 2 subvolumes, `n` keys `/v/<i>` written and
/// every `unlink_every`-th one UNLINKed. Returns the cluster, live and unlinked keys.
fn filled(n: usize, unlink_every: usize, extra: &[&str]) -> (Cluster, Vec<String>, Vec<String>) {
    let mut flags = FLAGS.to_vec();
    flags.extend_from_slice(extra);
    let c = Cluster::new(3, &flags);
    let (mut live, mut unlinked) = (vec![], vec![]);
    for i in 0..n {
        let key = format!("/v/{i}");
        let r = request(&c.addr(), "PUT", &key, &[], &value_of(&key));
        assert_eq!(r.status, 201, "PUT {key}: {r:?}");
        if unlink_every > 0 && i % unlink_every == unlink_every - 1 {
            assert_eq!(request(&c.addr(), "UNLINK", &key, &[], b"").status, 204);
            unlinked.push(key);
        } else {
            live.push(key);
        }
    }
    (c, live, unlinked)
}

/// `mkv verify <args>` offline over the cluster's index (the master must be stopped).
fn verify_offline(c: &Cluster, args: &[&str]) -> (Option<i32>, String) {
    let (vols, db) = (addrs(&c.volumes).join(","), c.master.db().display().to_string());
    let mut all = vec!["verify", "-volumes", &vols, "-db", &db];
    all.extend(FLAGS);
    all.extend_from_slice(args);
    run_mkv(&all)
}

/// `mkv verify -online http://<master> <args>`.
fn verify_online(c: &Cluster, args: &[&str]) -> (Option<i32>, String) {
    let url = format!("http://{}", c.addr());
    let mut all = vec!["verify", "-online", &url];
    all.extend_from_slice(args);
    run_mkv(&all)
}

/// The summary line (`verify: N keys seen, ...`).
fn summary(stderr: &str) -> &str {
    stderr.lines().find(|l| l.contains("keys seen")).unwrap_or_else(|| panic!("no summary in:\n{stderr}"))
}

/// The count the summary gives `what` (`3 missing` → 3); None when it is not there.
fn count(stderr: &str, what: &str) -> Option<u64> {
    summary(stderr).split(", ").find_map(|part| part.strip_suffix(what)?.trim().parse().ok())
}

/// The file of `key`'s `i`-th replica: (volume index, path under the volume's folder).
fn replica_file(lay: &Layout, key: &str, i: usize) -> (usize, String) {
    lay.files(key)[i].clone()
}

fn path_on(c: &Cluster, vol: usize, rel: &str) -> PathBuf {
    c.volumes[vol].dir().join(rel)
}

/// Writes `bytes` at `rel` on volume `vol` (as a careless operator, or bit rot, would).
fn write_file(c: &Cluster, vol: usize, rel: &str, bytes: &[u8]) {
    let p = path_on(c, vol, rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, bytes).unwrap();
}

/// Flips the first byte of a file: same size, other bytes.
fn flip(path: &Path) {
    flip_at(path, 0)
}

/// Flips byte `at` of a file.
fn flip_at(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0xff;
    fs::write(path, b).unwrap();
}

/// Deletes everything in a volume's folder but nginx's own dot-folders, at once: each entry
/// is renamed away first (writes go on meanwhile and would refill a folder being deleted).
fn wipe(v: &Volume) {
    for (i, e) in fs::read_dir(v.dir()).unwrap().flatten().enumerate() {
        if !e.file_name().to_string_lossy().starts_with('.') {
            let gone = v.dir().join(format!(".wiped-{i}"));
            fs::rename(e.path(), &gone).unwrap();
            if gone.is_dir() {
                fs::remove_dir_all(&gone).unwrap();
            } else {
                fs::remove_file(&gone).unwrap();
            }
        }
    }
}

/// Every replica of every key holds exactly its value, and the volumes hold nothing else.
fn assert_whole(c: &Cluster, live: &[String], unlinked: &[String]) {
    let lay = layout(&c.volumes);
    let l: Vec<&str> = live.iter().map(String::as_str).collect();
    let u: Vec<&str> = unlinked.iter().map(String::as_str).collect();
    lay.assert_files(&c.volumes, &l, &u);
    for key in live.iter().chain(unlinked) {
        for (v, rel) in lay.files(key) {
            assert_eq!(fs::read(path_on(c, v, &rel)).unwrap(), value_of(key), "{key} on volume {v} ({rel})");
        }
    }
}

/// The damage of the first tests, one of each kind, made on the volumes' disks:
/// - `/v/1`: a replica deleted (missing)
/// - `/v/2`: a replica cut short (size mismatch)
/// - `/v/3`: a replica's first byte flipped (corrupt: only `-deep` sees it)
/// - `/v/4`: its value copied to the volume its record does not name (outside record)
/// - `/v/5` (live): an unlink marker beside a replica (marker wrong)
/// - `/v/9` (unlinked): a replica's marker deleted (marker wrong)
/// - `/ghost`: a key's file that no record names (orphan)
/// - a `_tmp` file no write in flight names (orphan)
fn damage(c: &Cluster) {
    let lay = layout(&c.volumes);
    let (v, rel) = replica_file(&lay, "/v/1", 0);
    fs::remove_file(path_on(c, v, &rel)).unwrap();
    let (v, rel) = replica_file(&lay, "/v/2", 1);
    let p = path_on(c, v, &rel);
    fs::write(&p, &fs::read(&p).unwrap()[..5]).unwrap();
    let (v, rel) = replica_file(&lay, "/v/3", 0);
    flip(&path_on(c, v, &rel));
    let holders: Vec<usize> = lay.files("/v/4").iter().map(|(v, _)| *v).collect();
    let other = (0..3).find(|v| !holders.contains(v)).unwrap();
    write_file(c, other, &format!("sv01{}", key_path("/v/4")), &value_of("/v/4"));
    let (v, rel) = replica_file(&lay, "/v/5", 0);
    write_file(c, v, &marker_of(&rel), b"unlinked\n");
    let (v, rel) = replica_file(&lay, "/v/9", 1);
    fs::remove_file(path_on(c, v, &marker_of(&rel))).unwrap();
    write_file(c, 2, &format!("sv00{}", key_path("/ghost")), b"nobody's");
    write_file(c, 1, "sv01/_tmp/19a0b1c2d3e-1f-0", b"left behind by a crash");
    // not mkv's: beside the key folders, not in one (the walk says it ignores it)
    write_file(c, 0, NOT_OURS, b"an operator's note");
}

/// A file in an `xx` folder but in no `yy` one: verify ignores it, `-repair` too.
const NOT_OURS: &str = "sv00/ab/README.txt";

/// Finds, counts and repairs each kind of damage; a second run finds nothing.
fn each_kind_found_and_repaired(online: bool) {
    let (mut c, live, unlinked) = filled(20, 10, &[]);
    assert_eq!(unlinked, ["/v/9", "/v/19"]);
    let run = |c: &Cluster, args: &[&str]| if online { verify_online(c, args) } else { verify_offline(c, args) };
    if !online {
        c.master.kill9();
    }
    let (code, err) = run(&c, &[]);
    assert_eq!(code, Some(0), "a whole cluster: {err}");
    assert!(err.contains("verify: nothing wrong in 20 keys"), "{err}");
    assert!(summary(&err).contains("20 keys seen, 18 live, 2 unlinked"), "{err}");

    damage(&c);
    // the files are new: the default grace (1h) spares those no record names
    let (code, err) = run(&c, &[]);
    assert_eq!(code, Some(1), "{err}");
    let want = [("missing", 1), ("size mismatch", 1), ("outside record", 0), ("markers wrong", 1), ("orphans", 0)];
    for (what, n) in want {
        assert_eq!(count(&err, what), Some(n), "{what}: {err}");
    }
    assert_eq!(count(&err, "spared (younger than -grace or written during the run)"), Some(4), "{err}");

    let (code, err) = run(&c, &["-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    let want = [("missing", 1), ("size mismatch", 1), ("outside record", 1), ("markers wrong", 2), ("orphans", 2)];
    for (what, n) in want {
        assert_eq!(count(&err, what), Some(n), "{what}: {err}");
    }
    assert_eq!(count(&err, "corrupt"), None, "corruption needs -deep: {err}");
    assert!(err.contains("missing: /v/1 on "), "the first examples are named: {err}");
    assert!(err.contains("7 problems (") && err.contains("mkv verify -repair fixes them"), "{err}");

    let (code, err) = run(&c, &["-grace", "0s", "-deep"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(count(&err, "corrupt"), Some(1), "{err}");
    assert!(err.contains("corrupt: /v/3 on "), "{err}");
    assert_eq!(count(&err, "replicas read"), Some(38), "40 replicas, one missing, one short: {err}");

    let (code, err) = run(&c, &["-grace", "0s", "-deep", "-repair"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "repaired"), Some(8), "{err}");
    assert!(err.contains("8 problems (") && err.contains("all repaired"), "{err}");

    let (code, err) = run(&c, &["-grace", "0s", "-deep"]);
    assert_eq!(code, Some(0), "a second run finds nothing: {err}");
    assert_eq!(fs::read(path_on(&c, 0, NOT_OURS)).unwrap(), b"an operator's note", "{err}");
    fs::remove_file(path_on(&c, 0, NOT_OURS)).unwrap();
    assert_whole(&c, &live, &unlinked);
    if !online {
        c.master.restart();
    }
    for key in &live {
        assert_eq!(get_follow(&c.addr(), key).body, value_of(key), "{key}");
    }
    for key in &unlinked {
        assert_eq!(get(&c.addr(), key).status, 404, "{key} stays unlinked");
    }
}

#[test]
fn offline_verify_finds_counts_and_repairs_each_kind_of_damage() {
    each_kind_found_and_repaired(false);
}

#[test]
fn online_verify_finds_counts_and_repairs_each_kind_of_damage() {
    each_kind_found_and_repaired(true);
}

#[test]
fn a_wiped_volume_is_found_and_restored_offline() {
    let (mut c, live, unlinked) = filled(60, 7, &[]);
    c.master.kill9();
    let lay = layout(&c.volumes);
    let on_wiped = live.iter().chain(&unlinked).filter(|k| lay.files(k).iter().any(|(v, _)| *v == 1)).count();
    assert!(on_wiped > 20, "{on_wiped}");
    wipe(&c.volumes[1]);
    let (code, err) = verify_offline(&c, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(count(&err, "missing"), Some(on_wiped as u64), "{err}");
    let (code, err) = verify_offline(&c, &["-repair"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "repaired"), Some(on_wiped as u64), "{err}");
    let (code, err) = verify_offline(&c, &["-deep", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    assert_whole(&c, &live, &unlinked);
}

/// Values of several MiB: read and hashed in pieces, copied again in pieces (the hashing of a
/// copy runs on a thread pool, offline too).
#[test]
fn large_values_are_checked_and_repaired_offline() {
    large_values(&[]);
}

/// The same where `-deep` hashes each replica on the pool, as on a CPU without AVX-512.
#[test]
fn large_values_are_checked_without_the_md5_lanes() {
    large_values(&[("MKV_MD5_LANES", "off")]);
}

/// `mkv <args>` with more environment: (exit code, stderr).
fn run_mkv_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mkv"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run mkv");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn large_values(env: &[(&str, &str)]) {
    let c = Cluster::new(3, &FLAGS);
    let big = |i: u8| (0..3_500_000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i).collect::<Vec<u8>>();
    for i in 0..3u8 {
        assert_eq!(request(&c.addr(), "PUT", &format!("/big/{i}"), &[], &big(i)).status, 201);
    }
    let mut c = c;
    c.master.kill9();
    let lay = layout(&c.volumes);
    let (v, rel) = replica_file(&lay, "/big/0", 0);
    fs::remove_file(path_on(&c, v, &rel)).unwrap();
    let (v, rel) = replica_file(&lay, "/big/1", 1);
    let p = path_on(&c, v, &rel);
    let mut b = fs::read(&p).unwrap();
    b[2_000_000] ^= 1; // one bit, in the second MiB
    fs::write(&p, b).unwrap();
    let (vols, db) = (addrs(&c.volumes).join(","), c.master.db().display().to_string());
    let mut args = vec!["verify", "-volumes", &vols, "-db", &db, "-deep", "-repair"];
    args.extend(FLAGS);
    let (code, err) = run_mkv_env(&args, env);
    assert_eq!(code, Some(0), "{err}");
    let counts = (count(&err, "missing"), count(&err, "corrupt"), count(&err, "repaired"));
    assert_eq!(counts, (Some(1), Some(1), Some(2)), "{err}");
    for i in 0..3u8 {
        for (v, rel) in lay.files(&format!("/big/{i}")) {
            assert!(fs::read(path_on(&c, v, &rel)).unwrap() == big(i), "/big/{i} on volume {v}");
        }
    }
    // an offline rebalance that finds a key in place restores its missing replica too
    let (v, rel) = replica_file(&lay, "/big/2", 1);
    fs::remove_file(path_on(&c, v, &rel)).unwrap();
    let mut args = vec!["rebalance", "-volumes", &vols, "-db", &db];
    args.extend(FLAGS);
    let (code, err) = run_mkv(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("restored /big/2 on"), "{err}");
    assert!(fs::read(path_on(&c, v, &rel)).unwrap() == big(2));
}

/// A repair's copy keeps the value's time, as a rebalance's does: it took the time of the
/// repair, so a `rebuild` afterwards gave the key (S3's Last-Modified) that time instead.
/// Small values (one PUT) and large ones (streamed to a temporary file, then moved) alike,
/// by `verify -repair` and by a rebalance that finds a replica missing.
#[test]
fn a_repairs_copies_keep_the_values_time() {
    let c = Cluster::new(3, &FLAGS);
    let big: Vec<u8> = (0..3_500_000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert_eq!(request(&c.addr(), "PUT", "/t/small", &[], b"small value").status, 201);
    assert_eq!(request(&c.addr(), "PUT", "/t/big", &[], &big).status, 201);
    assert_eq!(request(&c.addr(), "PUT", "/t/moved", &[], b"rebalanced").status, 201);
    std::thread::sleep(Duration::from_millis(2500));
    let mut c = c;
    c.master.kill9();
    let lay = layout(&c.volumes);
    let mtime = |v: usize, rel: &str| fs::metadata(path_on(&c, v, rel)).unwrap().modified().unwrap();
    let lose = |key: &'static str| {
        let (kept_v, kept) = replica_file(&lay, key, 0);
        let (v, rel) = replica_file(&lay, key, 1);
        fs::remove_file(path_on(&c, v, &rel)).unwrap();
        (key, v, rel, mtime(kept_v, &kept))
    };
    let mut lost = vec![lose("/t/small"), lose("/t/big")];
    let (code, err) = verify_offline(&c, &["-repair"]);
    assert_eq!(code, Some(0), "{err}");
    lost.push(lose("/t/moved"));
    let (vols, db) = (addrs(&c.volumes).join(","), c.master.db().display().to_string());
    let mut args = vec!["rebalance", "-volumes", &vols, "-db", &db];
    args.extend(FLAGS);
    let (code, err) = run_mkv(&args);
    assert_eq!(code, Some(0), "{err}");
    for (key, v, rel, was) in lost {
        let now = mtime(v, &rel);
        let apart = now.duration_since(was).unwrap_or_else(|e| e.duration());
        assert!(apart < Duration::from_millis(1000), "{key}: the copy's time is {apart:?} from the value's");
    }
}

#[test]
fn repair_never_deletes_the_last_good_copy() {
    let (c, live, unlinked) = filled(6, 0, &[]);
    let lay = layout(&c.volumes);
    // every replica of /v/2 rotten, each its own way: nothing to copy from (rot alike on
    // every replica would read as the record being stale, see the test after the next)
    for (i, (v, rel)) in lay.files("/v/2").into_iter().enumerate() {
        flip_at(&path_on(&c, v, &rel), i);
    }
    let rotten: Vec<Vec<u8>> =
        lay.files("/v/2").iter().map(|(v, rel)| fs::read(path_on(&c, *v, rel)).unwrap()).collect();
    let (code, err) = verify_online(&c, &["-deep", "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(count(&err, "corrupt"), Some(2), "{err}");
    assert_eq!(count(&err, "not repaired"), Some(2), "{err}");
    assert!(err.contains("/v/2 (no replica holds its value (size and MD5): left as it is)"), "named: {err}");
    // left exactly as it was, and still listed and redirected to
    let now: Vec<Vec<u8>> = lay.files("/v/2").iter().map(|(v, rel)| fs::read(path_on(&c, *v, rel)).unwrap()).collect();
    assert_eq!(now, rotten);
    assert_eq!(get(&c.addr(), "/v/2").status, 302);
    let others: Vec<String> = live.iter().filter(|k| *k != "/v/2").cloned().collect();
    for key in &others {
        assert_eq!(get_follow(&c.addr(), key).body, value_of(key));
    }
    assert!(unlinked.is_empty());
    // and again: the same, nothing else touched
    let (code, err) = verify_online(&c, &["-deep", "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(count(&err, "corrupt"), Some(2), "{err}");
}

/// Every replica of a key moved by hand into the other subvolume folder of its volume (a
/// disk put back in the wrong slot): the only copies left are outside the record. A repair
/// restores the record's replicas from them and only then deletes them; copies that do not
/// verify are left where they are, like the key.
fn copies_outside_the_record(online: bool) {
    let (mut c, live, unlinked) = filled(6, 0, &[]);
    let lay = layout(&c.volumes);
    let elsewhere = |rel: &str| format!("{}{}", if rel.starts_with("sv00") { "sv01" } else { "sv00" }, &rel[4..]);
    let moved = |key: &str| -> Vec<PathBuf> {
        lay.files(key)
            .iter()
            .map(|(v, rel)| {
                let to = path_on(&c, *v, &elsewhere(rel));
                fs::create_dir_all(to.parent().unwrap()).unwrap();
                fs::rename(path_on(&c, *v, rel), &to).unwrap();
                to
            })
            .collect()
    };
    let good = moved("/v/2");
    let rotten = moved("/v/4");
    rotten.iter().for_each(|p| flip(p));
    let rotten_bytes: Vec<Vec<u8>> = rotten.iter().map(|p| fs::read(p).unwrap()).collect();
    if !online {
        c.master.kill9();
    }
    let run = |c: &Cluster, args: &[&str]| if online { verify_online(c, args) } else { verify_offline(c, args) };
    let (code, err) = run(&c, &["-deep", "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(1), "/v/4 has no copy that verifies: {err}");
    assert!(err.contains("/v/4 (no replica holds its value (size and MD5): left as it is)"), "named: {err}");
    assert!(good.iter().all(|p| !p.exists()), "the strays of /v/2 are deleted once its replicas are back");
    let now: Vec<Vec<u8>> = rotten.iter().map(|p| fs::read(p).unwrap_or_default()).collect();
    assert_eq!(now, rotten_bytes, "the strays of /v/4, its only copies, are left as they are");
    for (v, rel) in lay.files("/v/2") {
        assert_eq!(fs::read(path_on(&c, v, &rel)).unwrap(), value_of("/v/2"), "/v/2 restored on volume {v}");
    }
    // once /v/4's strays are gone by hand, everything else is whole
    rotten.iter().for_each(|p| fs::remove_file(p).unwrap());
    let others: Vec<String> = live.iter().filter(|k| *k != "/v/4").cloned().collect();
    let lay_others: Vec<&str> = others.iter().map(String::as_str).collect();
    lay.assert_files(&c.volumes, &lay_others, &[]);
    assert!(unlinked.is_empty());
    if !online {
        c.master.restart();
    }
    assert_eq!(get_follow(&c.addr(), "/v/2").body, value_of("/v/2"));
}

#[test]
fn copies_outside_the_record_restore_it_online_and_are_never_deleted_first() {
    copies_outside_the_record(true);
}

#[test]
fn copies_outside_the_record_restore_it_offline_and_are_never_deleted_first() {
    copies_outside_the_record(false);
}

/// A writer of `keys` that PUTs, UNLINKs, PUTs again and DELETEs them in turn, retrying
/// `409` (a repair holds the key), and remembers what was acknowledged last for each.
/// Each failed write: when it was sent, and what it got.
type Failures = Vec<(Instant, String)>;

struct Writer {
    stop: Arc<AtomicBool>,
    failed: Arc<Mutex<Failures>>,
    /// key → Some(value) when the last acknowledged write was a PUT, None after a DELETE.
    acked: Arc<Mutex<HashMap<String, Option<Vec<u8>>>>>,
    writes: Arc<AtomicUsize>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(addr: String, keys: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let writes = Arc::new(AtomicUsize::new(0));
        let (s, f, a, w) = (stop.clone(), failed.clone(), acked.clone(), writes.clone());
        let handle = thread::spawn(move || {
            let mut round = 0usize;
            while !s.load(Ordering::Relaxed) {
                round += 1;
                for key in &keys {
                    let value = format!("{key} round {round}; ").repeat(1 + round % 4).into_bytes();
                    let step = (round + key.len()) % 4;
                    let (method, body, want) = match step {
                        0 | 2 => ("PUT", value.clone(), 201),
                        1 => ("UNLINK", vec![], 204),
                        _ => ("DELETE", vec![], 204),
                    };
                    let (mut tries, began) = (0, Instant::now());
                    let r = loop {
                        let r = request(&addr, method, key, &[], &body);
                        if r.status != 409 || tries == 200 {
                            break r;
                        }
                        tries += 1;
                        thread::sleep(Duration::from_millis(5));
                    };
                    let ok = r.status == want
                        || (method == "PUT" && r.status == 403)
                        || (method != "PUT" && r.status == 404);
                    if !ok {
                        f.lock().unwrap().push((began, format!("{method} {key}: {} {}", r.status, r.text())));
                        continue;
                    }
                    w.fetch_add(1, Ordering::Relaxed);
                    let mut acked = a.lock().unwrap();
                    match (method, r.status) {
                        ("PUT", 201) => {
                            acked.insert(key.clone(), Some(value));
                        }
                        ("DELETE", 204) => {
                            acked.insert(key.clone(), None);
                        }
                        ("UNLINK", 204) => {
                            acked.insert(key.clone(), None);
                        }
                        _ => {}
                    }
                }
            }
        });
        Writer { stop, failed, acked, writes, handle: Some(handle) }
    }

    fn finish(mut self) -> (Failures, HashMap<String, Option<Vec<u8>>>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        let failed = self.failed.lock().unwrap().clone();
        let acked = self.acked.lock().unwrap().clone();
        (failed, acked, self.writes.load(Ordering::Relaxed))
    }
}

#[test]
fn online_repair_under_writes_of_the_same_keys_loses_nothing() {
    let (c, live, _) = filled(40, 0, &[]);
    let lay = layout(&c.volumes);
    // damage on keys the writer rewrites, and on keys it leaves alone
    for key in ["/v/3", "/v/4", "/v/5", "/v/30", "/v/31"] {
        let (v, rel) = replica_file(&lay, key, 0);
        fs::remove_file(path_on(&c, v, &rel)).unwrap();
    }
    let busy: Vec<String> = (0..12).map(|i| format!("/v/{i}")).collect();
    let writer = Writer::start(c.addr(), busy.clone());
    for _ in 0..4 {
        let (code, err) = verify_online(&c, &["-repair", "-grace", "0s", "-concurrency", "8"]);
        assert!(code == Some(0) || code == Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (failed, acked, writes) = writer.finish();
    let failed: Vec<&String> = failed.iter().map(|(_, what)| what).collect();
    assert!(failed.is_empty(), "writes that failed: {failed:?}");
    assert!(writes > 20, "the writer wrote {writes} times");
    // every acknowledged PUT reads back, every DELETE or UNLINK is gone
    for (key, value) in &acked {
        match value {
            Some(v) => assert_eq!(&get_follow(&c.addr(), key).body, v, "{key}: an acknowledged PUT"),
            None => assert_eq!(get(&c.addr(), key).status, 404, "{key}"),
        }
    }
    // keys the writer never touched came through whole
    for key in live.iter().filter(|k| !busy.contains(k)) {
        assert_eq!(get_follow(&c.addr(), key).body, value_of(key), "{key}");
    }
    let (code, err) = verify_online(&c, &["-repair", "-grace", "0s", "-deep"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = verify_online(&c, &["-grace", "0s", "-deep"]);
    assert_eq!(code, Some(0), "quiet now, nothing is wrong: {err}");
}

#[test]
fn a_killed_repair_completes_when_run_again() {
    let (mut c, live, unlinked) = filled(300, 11, &[]);
    c.master.kill9();
    wipe(&c.volumes[0]);
    let (vols, db) = (addrs(&c.volumes).join(","), c.master.db().display().to_string());
    let mut args = vec!["verify", "-volumes", &vols, "-db", &db, "-repair", "-concurrency", "2"];
    args.extend(FLAGS);
    let mut child = spawn_mkv(&args, Stdio::null());
    // kill -9 once some replicas are back, well before all of them are
    let began = Instant::now();
    wait_until("the repair to start restoring", TIMEOUT, || c.volumes[0].files().len() >= 10);
    child.kill().unwrap();
    let _ = child.wait();
    let restored = c.volumes[0].files().len();
    eprintln!("killed after {:?} with {restored} files restored", began.elapsed());
    let (code, err) = verify_offline(&c, &["-repair", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = verify_offline(&c, &["-deep", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    assert_whole(&c, &live, &unlinked);
}

#[test]
fn a_wiped_volume_comes_back_under_reads_and_writes() {
    let (c, live, _) = filled(80, 0, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // a reader: the master always answers (a 302); following it may land on the wiped
    // volume before the repair reaches the key (nginx's 404), which is counted
    let reader = {
        let (addr, keys, stop) = (c.addr(), live.clone(), stop.clone());
        thread::spawn(move || {
            let (mut reads, mut bad, mut misses) = (0, vec![], 0);
            while !stop.load(Ordering::Relaxed) {
                for key in &keys {
                    let r = get(&addr, key);
                    if r.status != 302 {
                        bad.push(format!("GET {key}: {}", r.status));
                        continue;
                    }
                    let (host, target) = split_url(r.header("location").unwrap());
                    let body = get(host, target);
                    match body.status {
                        200 if body.body == value_of(key) => {}
                        404 => misses += 1,
                        s => bad.push(format!("GET {key} from {host}: {s}")),
                    }
                    reads += 1;
                }
            }
            (reads, bad, misses)
        })
    };
    let fresh: Vec<String> = (0..30).map(|i| format!("/w/{i}")).collect();
    let writer = Writer::start(c.addr(), fresh.clone());
    thread::sleep(Duration::from_millis(300));
    wipe(&c.volumes[2]);
    let wiped = Instant::now();
    let (code, err) = verify_online(&c, &["-repair", "-concurrency", "16"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(count(&err, "missing").unwrap() > 20, "{err}");
    stop.store(true, Ordering::Relaxed);
    let (reads, bad, misses) = reader.join().unwrap();
    let (failed, acked, writes) = writer.finish();
    eprintln!("{reads} reads ({misses} landed on the wiped volume before its repair), {writes} writes");
    assert!(bad.is_empty(), "{bad:?}");
    // a write sent while the volume's folders were being removed under nginx may fail there
    // (a 500: a folder of the path it made vanished), as on a disk pulled mid-write; none
    // sent once the volume was empty may
    let (during, after): (Vec<_>, Vec<_>) = failed.iter().partition(|(began, _)| *began < wiped);
    assert!(during.iter().all(|(_, what)| what.contains(" 502 volume ")), "{during:?}");
    assert!(after.is_empty(), "zero failed writes once the volume was wiped: {after:?}");
    // every key again has all its replicas, with the right bytes
    let lay = layout(&c.volumes);
    for key in &live {
        for (v, rel) in lay.files(key) {
            assert_eq!(fs::read(path_on(&c, v, &rel)).unwrap(), value_of(key), "{key} on volume {v}");
        }
    }
    for (key, value) in &acked {
        match value {
            Some(v) => assert_eq!(&get_follow(&c.addr(), key).body, v, "{key}"),
            None => assert_eq!(get(&c.addr(), key).status, 404, "{key}"),
        }
    }
    let (code, err) = verify_online(&c, &["-deep", "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = verify_online(&c, &["-deep", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn snapshot_then_restore_serves_every_key_it_held() {
    let (mut c, live, unlinked) = filled(30, 6, &[]);
    let snaps = TempDir::new("snap");
    // folders on the way made as needed (`-to /var/backups/mkv/index-DATE` failed on a
    // machine without /var/backups/mkv: "No such file or directory")
    let to = snaps.path().join("backups/mkv/one");
    let url = format!("http://{}", c.addr());
    let (code, err) = run_mkv(&["snapshot", "-online", &url, "-to", to.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("taken in {}", to.display())) && err.contains("to restore it"), "{err}");
    let (code, err) = run_mkv(&["snapshot", "-online", &url, "-to", to.to_str().unwrap()]);
    assert_eq!(code, Some(1), "a snapshot goes into a new folder: {err}");
    assert!(err.contains("exists already"), "{err}");
    let inside = c.master.db().join("snap");
    let (code, err) = run_mkv(&["snapshot", "-online", &url, "-to", inside.to_str().unwrap()]);
    assert_eq!(code, Some(1), "a snapshot inside the index's folder: {err}");
    assert!(err.contains("inside the index's own folder"), "{err}");
    assert!(!inside.exists());
    let (code, err) = run_mkv(&["snapshot", "-online", &url, "-to", inside.join("deeper").to_str().unwrap()]);
    assert_eq!(code, Some(1), "a snapshot inside the index's folder: {err}");
    assert!(err.contains("inside the index's own folder") && !inside.exists(), "{err}");
    // written after the snapshot: not in it
    assert_eq!(request(&c.addr(), "PUT", "/after", &[], b"later").status, 201);
    c.master.kill9();

    let db = snaps.path().join("backups/mkv/one");
    let restored = Master::start_args(TempDir::new("unused"), server_args(&db, &addrs(&c.volumes), &FLAGS));
    let addr = restored.addr();
    for key in &live {
        assert_eq!(get_follow(&addr, key).body, value_of(key), "{key}");
    }
    for key in &unlinked {
        assert_eq!(get(&addr, key).status, 404, "{key}");
    }
    assert_eq!(get(&addr, "/after").status, 404);
    // reconciled with the volumes: /after's files are orphans of the restored index
    let url = format!("http://{addr}");
    let (code, err) = run_mkv(&["verify", "-online", &url, "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "orphans"), Some(2), "{err}");
    let (code, err) = run_mkv(&["verify", "-online", &url, "-deep", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    assert_whole(&c, &live, &unlinked);
    // pointed at the admin port by mistake: said so, not "expected value at line 1 column 1"
    let admin = format!("http://{}", restored.admin_addr().expect("an admin port"));
    let (code, err) = run_mkv(&["verify", "-online", &admin]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("API address (not its -admin one)"), "{err}");
}

/// An offline repair or rebalance given a copy of the index (a snapshot) while its master
/// runs: the repair took every file written since the copy for an orphan and deleted it (an
/// outside sweep lost 334 live files so; the index's lock guards the master's own `-db`
/// only). The copy names the master it came from: both now refuse while that process runs,
/// and a plain verify says its findings include the master's new writes.
#[test]
fn offline_tools_refuse_a_copy_of_a_running_masters_index() {
    let (mut c, live, unlinked) = filled(20, 4, &[]);
    let snaps = TempDir::new("snap");
    let copy = snaps.path().join("copy").display().to_string();
    let url = format!("http://{}", c.addr());
    let (code, err) = run_mkv(&["snapshot", "-online", &url, "-to", &copy]);
    assert_eq!(code, Some(0), "{err}");
    // written after the copy: orphans in its eyes
    let later: Vec<String> = (0..5).map(|i| format!("/later/{i}")).collect();
    for key in &later {
        assert_eq!(request(&c.addr(), "PUT", key, &[], &value_of(key)).status, 201);
    }
    let vols = addrs(&c.volumes).join(",");
    let on_copy = |cmd: &str, args: &[&str]| {
        let mut all = vec![cmd, "-volumes", &vols, "-db", &copy];
        all.extend(FLAGS);
        all.extend_from_slice(args);
        run_mkv(&all)
    };
    let port = c.addr().rsplit(':').next().unwrap().to_string();
    let copied = "this index is a copy of the one master pid";
    let (code, err) = on_copy("verify", &["-repair", "-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(copied) && err.contains(&format!("-online http://localhost:{port}")), "{err}");
    let (code, err) = on_copy("rebalance", &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(copied), "{err}");
    for key in later.iter().chain(&live) {
        assert_eq!(get_follow(&c.addr(), key).body, value_of(key), "{key}");
    }
    // changing nothing: warned, and it finds the later keys' files, as a copy would
    let (code, err) = on_copy("verify", &["-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("warning: {copied}")), "{err}");
    assert_eq!(count(&err, "orphans"), Some(2 * later.len() as u64), "{err}");
    let (code, err) = on_copy("rebalance", &["-dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    // the copy given other volumes (a clone): not that master's business
    let others: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let other_vols = addrs(&others).join(",");
    let mut args = vec!["verify", "-volumes", &other_vols, "-db", &copy];
    args.extend(FLAGS);
    let (_, err) = run_mkv(&args);
    assert!(!err.contains(copied), "{err}");

    // the master gone (killed: not reaped yet is gone too), its own index is whole truth again
    c.master.kill9();
    let (code, err) = verify_offline(&c, &["-repair", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains(copied), "{err}");
    let (_, err) = on_copy("verify", &["-grace", "0s"]);
    assert!(!err.contains(copied), "{err}");
    let kept: Vec<String> = live.iter().chain(&later).cloned().collect();
    assert_whole(&c, &kept, &unlinked);
}

/// A proxy to `upstream` that counts the PUTs in flight through it (from a request's head to
/// its answer's) and keeps the most seen at once.
fn counting_proxy(upstream: String) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let most2 = most.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut down) = conn else { continue };
            let Ok(mut up) = std::net::TcpStream::connect(&upstream) else { continue };
            let (mut down2, mut up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            let putting = Arc::new(AtomicBool::new(false));
            let (now2, most, putting2) = (now.clone(), most.clone(), putting.clone());
            thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; 256 << 10];
                while let Ok(n) = down.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if buf.starts_with(b"PUT ") && !putting.swap(true, Ordering::SeqCst) {
                        let at_once = now2.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(at_once, Ordering::SeqCst);
                    }
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Write);
            });
            let now = now.clone();
            thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = up2.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if buf.starts_with(b"HTTP/") && putting2.swap(false, Ordering::SeqCst) {
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                    if down2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                if putting2.swap(false, Ordering::SeqCst) {
                    now.fetch_sub(1, Ordering::SeqCst);
                }
                let _ = down2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, most2)
}

/// A wiped volume's repair: every large value at once (up to `-concurrency`, 256) stalled
/// the volume's disk past `-voltimeout`, and the copies failed `504` while the master took
/// the volume for down. Repairs now copy at most 256 MiB at once.
#[test]
fn a_wiped_volumes_repair_copies_a_bounded_number_of_bytes_at_once() {
    let (a, b) = (Volume::new(), Volume::new());
    let (counted, most) = counting_proxy(b.addr());
    let master = Master::start_on(&[a.addr(), counted], &["-replicas", "2", "-subvolumes", "1"]);
    let value = |i: usize| format!("{i:08}").repeat(3 << 20).into_bytes();
    let keys: Vec<String> = (0..16).map(|i| format!("/big/{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(request(&master.addr(), "PUT", key, &[], &value(i)).status, 201, "{key}");
    }
    for entry in fs::read_dir(b.dir()).unwrap().flatten() {
        if !entry.file_name().to_string_lossy().starts_with('.') {
            fs::remove_dir_all(entry.path()).unwrap();
        }
    }
    most.store(0, Ordering::SeqCst);
    let url = format!("http://{}", master.addr());
    let (code, err) = run_mkv(&["verify", "-online", &url, "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    // 24 MiB values: 10 fit in 256 MiB
    let at_once = most.load(Ordering::SeqCst);
    assert!((1..=10).contains(&at_once), "{at_once} copies at once");
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(get_follow(&master.addr(), key).body.len(), value(i).len(), "{key}");
    }
    assert_eq!(files_under(b.dir()).len(), keys.len());
}

/// An index snapshot restored after keys were written again: its records name the old
/// values, the volumes hold the new ones on every replica. Such a key answered S3 reads
/// `500` and verify could not repair it ("no replica holds its value"); the repair now makes
/// the record name what every replica holds, and the key reads whole again.
#[test]
fn a_restored_snapshots_stale_records_take_the_value_every_replica_holds() {
    let (mut c, live, _) = filled(4, 0, &[]);
    let other = |key: &str| format!("{key} written again after the snapshot").into_bytes();
    let same_size = |key: &str| value_of(key).iter().map(|b| b ^ 0x20).collect::<Vec<u8>>();
    let put = |key: &str, v: &[u8]| {
        assert_eq!(request(&c.addr(), "DELETE", key, &[], b"").status, 204, "DELETE {key}");
        assert_eq!(request(&c.addr(), "PUT", key, &[], v).status, 201, "PUT {key}");
    };
    assert_eq!(request(&c.addr(), "PUT", "/bkt/obj", &[], b"the old object").status, 201);
    let snaps = TempDir::new("snap");
    let to = snaps.path().join("one");
    let (code, err) = run_mkv(&["snapshot", "-online", &format!("http://{}", c.addr()), "-to", to.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    // written again since: another size, the same size (only a -deep read tells), an S3 object
    put(&live[0], &other(&live[0]));
    put(&live[1], &same_size(&live[1]));
    put("/bkt/obj", b"the new object, longer");
    c.master.kill9();

    let restored = Master::start_args(TempDir::new("unused"), server_args(&to, &addrs(&c.volumes), &FLAGS));
    let addr = restored.addr();
    let s3_get = |key: &str| request(&addr, "GET", key, &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")], b"");
    assert_eq!(s3_get("/bkt/obj").status, 500, "the stale record, before the repair");
    let url = format!("http://{addr}");
    let (code, err) = run_mkv(&["verify", "-online", &url, "-deep", "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "size mismatch"), Some(4), "{err}");
    assert_eq!(count(&err, "corrupt"), Some(2), "{err}");
    assert_eq!(err.matches("the record now names it").count(), 3, "{err}");
    // every replica serves the value the volumes held, natively and through S3
    assert_eq!(get_follow(&addr, &live[0]).body, other(&live[0]));
    assert_eq!(get_follow(&addr, &live[1]).body, same_size(&live[1]));
    for key in &live[2..] {
        assert_eq!(get_follow(&addr, key).body, value_of(key), "{key} was not written again");
    }
    let r = s3_get("/bkt/obj");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"the new object, longer"[..]));
    let md5 = format!("\"{:x}\"", <md5::Md5 as md5::Digest>::digest(b"the new object, longer"));
    assert_eq!(r.header("etag"), Some(md5.as_str()), "the ETag is the bytes' MD5");
    let (code, err) = run_mkv(&["verify", "-online", &url, "-deep", "-grace", "0s"]);
    assert_eq!(code, Some(0), "nothing left: {err}");
}

#[test]
fn reads_spread_over_every_live_replica() {
    let c = Cluster::new(3, &["-replicas", "3", "-subvolumes", "1"]);
    assert_eq!(request(&c.addr(), "PUT", "/hot", &[], b"popular").status, 201);
    let mut hosts = HashSet::new();
    for _ in 0..30 {
        let r = get(&c.addr(), "/hot");
        assert_eq!(r.status, 302);
        let (host, target) = split_url(r.header("location").unwrap());
        assert_eq!(get(host, target).body, b"popular");
        hosts.insert(host.to_string());
    }
    let all: HashSet<String> = addrs(&c.volumes).into_iter().collect();
    assert_eq!(hosts, all, "every replica served some of the reads");
}

#[test]
fn rebalance_of_a_key_restores_its_missing_replica() {
    let (c, _, _) = filled(5, 0, &[]);
    let lay = layout(&c.volumes);
    let (v, rel) = replica_file(&lay, "/v/3", 1);
    fs::remove_file(path_on(&c, v, &rel)).unwrap();
    assert_eq!(request(&c.addr(), "REBALANCE", "/v/3", &[], b"").status, 204);
    assert_eq!(fs::read(path_on(&c, v, &rel)).unwrap(), value_of("/v/3"), "restored");
}

#[test]
fn sync_writes_work() {
    let c = Cluster::new(3, &["-replicas", "2", "-sync"]);
    let addr = c.addr();
    for i in 0..20 {
        assert_eq!(request(&addr, "PUT", &format!("/s/{i}"), &[], b"synced").status, 201);
    }
    assert_eq!(get_follow(&addr, "/s/7").body, b"synced");
    assert_eq!(request(&addr, "UNLINK", "/s/7", &[], b"").status, 204);
    assert_eq!(request(&addr, "DELETE", "/s/7", &[], b"").status, 204);
    assert_eq!(request(&addr, "DELETE", "/s/8", &[], b"").status, 204);
    assert_eq!(get(&addr, "/s/7").status, 404);
    assert_eq!(get(&addr, "/s/9").status, 302);
}

#[test]
fn offline_verify_refuses_a_running_masters_index() {
    let (c, _, _) = filled(2, 0, &[]);
    let (code, err) = verify_offline(&c, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("locked") && err.contains("-online http://"), "{err}");
}

/// A `-db` that holds no index (a typo) is refused, not made; an index with no keys at all
/// (a wrong one, or a master just started on the wrong folder) refuses `-repair`, offline
/// and online: every file on the volumes would look like an orphan. Nothing is deleted.
#[test]
fn a_repair_over_no_index_or_an_empty_one_is_refused() {
    let (mut c, live, unlinked) = filled(4, 0, &[]);
    c.master.kill9();
    let vols = addrs(&c.volumes).join(",");
    let typo = c.master.db().with_extension("typo");
    let db = typo.display().to_string();
    let mut args = vec!["verify", "-volumes", &vols, "-db", &db, "-repair", "-grace", "0s"];
    args.extend(FLAGS);
    let (code, err) = run_mkv(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no index at"), "{err}");
    assert!(!typo.exists(), "no index made at a -db that held none");
    let (code, err) = run_mkv(&["rebalance", "-volumes", &vols, "-db", &db]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no index at"), "{err}");
    assert_whole(&c, &live, &unlinked);

    // a master on an empty index, over the same volumes, scrubbing every second
    let flags = [&FLAGS[..], &["-scrub", "1s", "-grace", "0s"]].concat();
    let empty = Master::start_on(&addrs(&c.volumes), &flags);
    let url = format!("http://{}", empty.addr());
    let (code, err) = run_mkv(&["verify", "-online", &url, "-repair", "-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the index holds no keys"), "{err}");
    wait_until("a scrub to run", Duration::from_secs(10), || {
        empty.lines().iter().any(|l| l.contains("scrub: skipped: the index holds no keys"))
    });
    drop(empty);
    assert_whole(&c, &live, &unlinked);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["verify", "-volumes", "a:1"][..],
        &["verify", "-online", "http://a:1", "-rate", "-3"],
        &["verify", "-online", "http://a:1", "-db", "/tmp/x"],
        &["verify", "-online", "http://a:1", "-grace", "soon"],
        &["snapshot", "-online", "http://a:1"],
        &["snapshot", "-to", "/tmp/x"],
        &["verify", "-online", "notaurl"],
        &["verify", "-online", "ftp://a:1"],
        &["rebalance", "-online", "garbage", "-volumes", "a:1"],
        &["rebalance", "-online", "http://a:1", "-volumes", "a:1", "-dry-run"],
        // -db meant for an offline run would be ignored while the running master is switched
        &["rebalance", "-online", "http://a:1", "-volumes", "a:1", "-db", "/tmp/x"],
        &["rebuild", "-volumes", "a:1", "-db", "/tmp/x", "-online", "http://a:1"],
    ] {
        let (code, err) = run_mkv(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // no command: said so (it printed only the one-line description)
    for args in [&[][..], &["-v"]] {
        let (code, err) = run_mkv(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("a command is needed: server, rebuild"), "{args:?}: {err}");
    }
    // a negative value is named as a bad value, not taken for a flag
    for (args, says) in [
        (&["verify", "-online", "http://a:1", "-rate", "-1"][..], "-rate must be a number of MiB/s"),
        (&["verify", "-online", "http://a:1", "-grace", "-1s"], "invalid duration '-1s'"),
        // a flag of another command was ignored: `-repair -dry-run` repaired
        (&["verify", "-volumes", "a:1", "-db", "/tmp/x", "-repair", "-dry-run"], "-dry-run is for rebalance only"),
        (&["verify", "-online", "http://a:1", "-dry-run"], "-dry-run is for rebalance only"),
        (&["rebuild", "-volumes", "a:1", "-db", "/tmp/x", "-deep"], "-deep is for verify only"),
        (&["rebuild", "-volumes", "a:1", "-db", "/tmp/x", "-repair"], "-repair is for verify only"),
        (&["server", "-volumes", "a:1", "-db", "/tmp/x", "-dry-run"], "-dry-run is for rebalance only"),
        (&["server", "-volumes", "a:1", "-db", "/tmp/x", "-to", "/tmp/y"], "-to is for snapshot only"),
        (&["snapshot", "-online", "http://a:1", "-to", "/tmp/y", "-deep"], "-deep is for verify only"),
        (&["rebalance", "-volumes", "a:1", "-db", "/tmp/x", "-grace", "5m"], "-grace is for server and verify only"),
        (&["rebalance", "-volumes", "a:1", "-db", "/tmp/x", "-scrub", "1h"], "-scrub is for server only"),
        (&["verify", "-volumes", "a:1", "-db", "/tmp/x", "-verify"], "-verify is for rebuild only"),
    ] {
        let (code, err) = run_mkv(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says) && !err.contains("unexpected argument"), "{args:?}: {err}");
    }
    // an unreachable master is a master, not a volume
    let (code, err) = run_mkv(&["verify", "-online", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot reach the master at 127.0.0.1:1") && !err.contains("volume"), "{err}");
}

/// `127.0.0.1:NNNN` from the master's `admin on ...` line.
fn admin_addr(m: &Master) -> String {
    let lines = m.lines();
    let line = lines.iter().find(|l| l.contains("admin on ")).expect("an admin line");
    let rest = &line[line.find("admin on ").unwrap() + 9..];
    rest.split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_scrub_finds_and_repairs_in_the_background() {
    let (c, live, unlinked) = filled(12, 6, &["-scrub", "1s", "-grace", "0s"]);
    let lay = layout(&c.volumes);
    let (v, rel) = replica_file(&lay, "/v/1", 0);
    fs::remove_file(path_on(&c, v, &rel)).unwrap();
    let (v, rel) = replica_file(&lay, "/v/2", 1);
    flip(&path_on(&c, v, &rel));
    let admin = admin_addr(&c.master);
    let started = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    // scrubs run every second: one of them finds each, and repairs it
    wait_until("the scrub to repair both", Duration::from_secs(30), || {
        lay.files("/v/1").iter().chain(&lay.files("/v/2")).all(|(v, rel)| {
            fs::read(path_on(&c, *v, rel)).ok().as_deref()
                == Some(&value_of(if rel.contains(&key_path("/v/1")[1..]) { "/v/1" } else { "/v/2" })[..])
        })
    });
    // each named in the log as it is repaired, and the run's line after
    let logged = |c: &Cluster, start: &str| {
        c.master
            .lines()
            .iter()
            .any(|l| l.starts_with(start) && (l.ends_with("(repaired)") || l.contains("all repaired")))
    };
    wait_until("the scrub's lines", Duration::from_secs(10), || {
        logged(&c, "mkv: scrub: missing: /v/1 on ")
            && logged(&c, "mkv: scrub: corrupt: /v/2 on ")
            && logged(&c, "mkv: scrub: ")
            && c.master
                .lines()
                .iter()
                .any(|l| l.starts_with("mkv: scrub: ") && (l.contains("problems (") || l.contains("1 problem (")))
    });
    // the next runs find nothing: their figures in /metrics, their line on the status page
    wait_until("a clean scrub", Duration::from_secs(30), || {
        get(&admin, "/").text().contains("scrub: nothing wrong in 12 keys")
    });
    let metrics = get(&admin, "/metrics").text();
    for kind in ["missing", "size mismatch", "corrupt", "outside record", "markers wrong", "orphans"] {
        assert!(metrics.contains(&format!("mkv_scrub_problems{{kind=\"{kind}\"}} 0\n")), "{kind}: {metrics}");
    }
    assert!(metrics.contains("mkv_scrub_failures 0\n") && metrics.contains("mkv_scrub_keys 12\n"), "{metrics}");
    let runs: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("mkv_scrub_runs_total ")).and_then(|v| v.parse().ok()).unwrap();
    assert!(runs >= 2, "{metrics}");
    let ts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mkv_scrub_last_run_timestamp_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(ts >= started, "{ts} {started}");
    assert_whole(&c, &live, &unlinked);
}

#[test]
fn replicas_on_volumes_left_out_of_the_list_are_not_vouched_for() {
    let (mut c, _, _) = filled(10, 0, &[]);
    c.master.kill9();
    let lay = layout(&c.volumes);
    let on_third = (0..10).filter(|i| lay.files(&format!("/v/{i}")).iter().any(|(v, _)| *v == 2)).count();
    let (two, db) = (addrs(&c.volumes)[..2].join(","), c.master.db().display().to_string());
    let mut args = vec!["verify", "-volumes", &two, "-db", &db];
    args.extend(FLAGS);
    let (code, err) = run_mkv(&args);
    assert_eq!(code, Some(1), "{err}");
    let third = c.volumes[2].addr();
    assert!(err.contains(&format!("{on_third} replicas on {third} (not checked")), "{err}");
}

/// An offline repair that does not walk a volume (left out of -volumes) does not vouch for
/// the replicas its records name there, so it keeps the key's copies outside the record: with
/// that volume's disk dead, they would be the last ones.
#[test]
fn strays_stay_while_a_replica_of_the_record_is_not_looked_at() {
    let c = Cluster::new(3, &["-replicas", "1", "-subvolumes", "1"]);
    let key = "/only";
    assert_eq!(request(&c.addr(), "PUT", key, &[], &value_of(key)).status, 201);
    let lay = Layout { volumes: addrs(&c.volumes), replicas: 1, subvolumes: 1 };
    let (x, rel) = lay.files(key)[0].clone();
    let other = (0..3).find(|v| *v != x).unwrap();
    write_file(&c, other, &rel, &value_of(key));
    let mut c = c;
    c.master.kill9();
    let walked: Vec<String> = (0..3).filter(|v| *v != x).map(|v| c.volumes[v].addr()).collect();
    let (vols, db) = (walked.join(","), c.master.db().display().to_string());
    let (code, err) = run_mkv(&[
        "verify",
        "-volumes",
        &vols,
        "-db",
        &db,
        "-replicas",
        "1",
        "-subvolumes",
        "1",
        "-repair",
        "-grace",
        "0s",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(fs::read(path_on(&c, other, &rel)).ok(), Some(value_of(key)), "the stray is kept: {err}");
}

/// A verify killed before it could remove its working folder (records by shard, ~100 bytes a
/// key in the temp folder) does not leave it for good: the next verify removes the folders of
/// verifies that are gone (their lock file free; without one, their pid free) and leaves a
/// running one's alone.
#[test]
fn a_killed_verifys_working_folder_is_removed_by_the_next() {
    use std::os::fd::AsRawFd;
    let (mut c, _live, _unlinked) = filled(20, 0, &[]);
    c.master.kill9();
    let tmp = PathBuf::from(format!("{}.tmp", c.master.db().display()));
    // a process that has ended: its pid is free (and not taken again this soon)
    let mut gone = Command::new("true").spawn().expect("run true");
    let dead = gone.id();
    gone.wait().unwrap();
    let me = std::process::id();
    let stale = tmp.join(format!("mkv-verify-{dead}-0"));
    let stale_locked = tmp.join(format!("mkv-verify-{dead}-1"));
    let held = tmp.join(format!("mkv-verify-{dead}-2"));
    let running = tmp.join(format!("mkv-verify-{me}-3"));
    let other = tmp.join(format!("mkv-verify-{dead}-notours"));
    for d in [&stale, &stale_locked, &held, &running, &other] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("00"), b"records").unwrap();
    }
    fs::write(stale_locked.join("lock"), b"").unwrap();
    // a live verify in another pid namespace: its pid means nothing here, its lock is held
    let lock = fs::File::create(held.join("lock")).unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (vols, db) = (addrs(&c.volumes).join(","), c.master.db().display().to_string());
    let mut args = vec!["verify", "-volumes", &vols, "-db", &db];
    args.extend(FLAGS);
    let (code, err) = run_mkv_env(&args, &[("TMPDIR", tmp.to_str().unwrap())]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!stale.exists(), "the dead verify's folder is still there");
    assert!(!stale_locked.exists(), "the dead verify's folder with a free lock is still there");
    assert!(held.exists(), "a folder whose lock is held was removed");
    assert!(running.exists(), "a live process's folder was removed");
    assert!(other.exists(), "a folder not named as a verify's own was removed");
    // and the verify's own is gone with it
    let mut left: Vec<_> = fs::read_dir(&tmp).unwrap().flatten().map(|e| e.path()).collect();
    left.sort();
    let mut want = vec![held.clone(), running.clone(), other.clone()];
    want.sort();
    assert_eq!(left, want);
    drop(lock);
    let _ = fs::remove_dir_all(&tmp);
}

/// A DELETE that a volume down failed half way (the replica on the volume up deleted) leaves
/// the key under `?unlinked` for a retry, as SPEC.md says; verify counts nothing of it
/// wrong and repair never copies its deleted replica back (it did: "missing", then restored,
/// so a scrub brought deleted bytes back after every short outage). The DELETE again ends it.
#[test]
fn a_half_done_delete_is_not_damage_and_repair_does_not_bring_it_back() {
    let (mut c, live, _) = filled(4, 0, &[]);
    let key = &live[0];
    let lay = layout(&c.volumes);
    let (down, _) = replica_file(&lay, key, 1);
    let (kept, kept_path) = replica_file(&lay, key, 0);
    c.volumes[down].stop();
    let r = request(&c.addr(), "DELETE", key, &[], b"");
    assert!(r.status >= 500, "{r:?}");
    assert!(!path_on(&c, kept, &kept_path).exists(), "the replica on the volume up is deleted");
    assert!(get(&c.addr(), "/v/?unlinked").text().contains(key.as_str()), "listed for a retry");
    c.volumes[down].start();
    thread::sleep(Duration::from_millis(2500)); // the master finds it up
    let (code, err) = verify_online(&c, &["-grace", "0s", "-repair"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "missing"), Some(0), "{err}");
    assert!(!path_on(&c, kept, &kept_path).exists(), "repair brought a deleted replica back");
    assert_eq!(request(&c.addr(), "DELETE", key, &[], b"").status, 204);
    assert!(lay.files(key).iter().all(|(v, p)| !path_on(&c, *v, p).exists()), "files of the key left");
    assert_eq!(get(&c.addr(), "/v/?unlinked").text(), r#"{"next":"","keys":[]}"#);
}

/// A folder where a replica's file goes (an operator's `mkdir`, a restore gone wrong): the
/// replica is missing, online and offline; repair says why it cannot put it back, and does
/// once the folder is gone. (The folder was skipped as a stray and verify said "nothing
/// wrong"; repair said "the volume did not answer".)
#[test]
fn a_folder_where_a_replica_goes_is_a_missing_replica() {
    let (c, live, _) = filled(3, 0, &[]);
    let key = &live[0];
    let (v, rel) = replica_file(&layout(&c.volumes), key, 0);
    let file = path_on(&c, v, &rel);
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    fs::write(file.join("x"), b"x").unwrap();
    let (code, err) = verify_online(&c, &["-grace", "0s"]);
    assert_eq!((code, count(&err, "missing")), (Some(1), Some(1)), "{err}");
    let (code, err) = verify_online(&c, &["-grace", "0s", "-repair"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a folder stands where a file of this key goes"), "{err}");
    assert!(file.join("x").exists(), "the operator's folder is left as it is");
    fs::remove_dir_all(&file).unwrap();
    let (code, err) = verify_online(&c, &["-grace", "0s", "-repair"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read(&file).unwrap(), value_of(key));
}

// ---- S3 part files ---------------------------------------------------------------------

const UNSIGNED: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
/// Part files younger than this are spared whatever `-grace` says (a part's file is written
/// before its record); the test's files are made older.
const HOURS_OLD: Duration = Duration::from_secs(2 * 3600);

/// An S3 upload into `key` with one part: (upload id, the Complete's document).
fn upload_one_part(addr: &str, key: &str, data: &[u8]) -> (String, String) {
    let r = request(addr, "POST", &format!("{key}?uploads"), &[UNSIGNED], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    let id = text.split("<UploadId>").nth(1).and_then(|t| t.split("</UploadId>").next()).unwrap().to_string();
    let r = request(addr, "PUT", &format!("{key}?partNumber=1&uploadId={id}"), &[UNSIGNED], data);
    assert_eq!(r.status, 200, "{r:?}");
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        r.header("etag").unwrap()
    );
    (id, doc)
}

/// Files under a `_parts/` folder on any volume: (volume index, path).
fn part_files(c: &Cluster) -> Vec<(usize, String)> {
    let mut all = Vec::new();
    for (i, v) in c.volumes.iter().enumerate() {
        all.extend(v.files().into_iter().filter(|f| f.contains("_parts/")).map(|f| (i, f)));
    }
    all
}

/// Makes a file look `age` old (its mtime, which nginx's listing gives).
fn age(c: &Cluster, vol: usize, rel: &str, age: Duration) {
    let f = fs::File::options().write(true).open(path_on(c, vol, rel)).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

/// Part files an upload in progress holds (two hours old: an upload left open), and two
/// that no part record names (an upload `rebuild` dropped, a delete that failed and was
/// forgotten), as old. Returns the upload's id, its Complete's document and the orphans.
fn parts_with_orphans(c: &Cluster) -> (String, String, Vec<(usize, String)>) {
    let (id, doc) = upload_one_part(&c.addr(), "/parts/open", &value_of("/parts/open"));
    let held = part_files(c);
    assert_eq!(held.len(), REPLICAS, "{held:?}");
    let orphans = vec![
        (0, "sv00/_parts/0123456789abcdef0123456789abcdef-7.1.19a0b1c2d3e-1f-0".to_string()),
        (2, "sv01/_parts/fedcba9876543210fedcba9876543210-9.3.19a0b1c2d3e-1f-1".to_string()),
    ];
    for (v, rel) in &orphans {
        write_file(c, *v, rel, b"a part of no upload");
    }
    for (v, rel) in held.iter().chain(&orphans) {
        age(c, *v, rel, HOURS_OLD);
    }
    (id, doc, orphans)
}

/// Part files that no part record names stayed on the volumes for good: verify never looked
/// under `_parts/`. It reports them as orphans and `-repair` deletes them; the parts of an
/// upload in progress, as old, stay, and the upload completes.
fn part_files_no_upload_names_found_and_deleted(online: bool) {
    let (mut c, live, _) = filled(6, 0, &[]);
    let (id, doc, orphans) = parts_with_orphans(&c);
    let held: Vec<(usize, String)> = part_files(&c).into_iter().filter(|f| !orphans.contains(f)).collect();
    let run = |c: &Cluster, args: &[&str]| if online { verify_online(c, args) } else { verify_offline(c, args) };
    if !online {
        c.master.kill9();
    }
    let (code, err) = run(&c, &["-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(count(&err, "orphans"), Some(2), "{err}");
    assert!(err.contains(&orphans[0].1[4..]), "the orphan is named: {err}");
    let (code, err) = run(&c, &["-grace", "0s", "-repair"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "repaired"), Some(2), "{err}");
    assert_eq!(part_files(&c), held, "the orphans gone, the open upload's part kept");
    let (code, err) = run(&c, &["-grace", "0s"]);
    assert_eq!(code, Some(0), "a second run finds nothing: {err}");
    if !online {
        c.master.restart();
    }
    let r = request(&c.addr(), "POST", &format!("/parts/open?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
    assert!(r.text().contains("<CompleteMultipartUploadResult"), "{r:?}");
    assert_eq!(get_follow(&c.addr(), "/parts/open").body, value_of("/parts/open"));
    assert_eq!(part_files(&c), Vec::new());
    for key in &live {
        assert_eq!(get_follow(&c.addr(), key).body, value_of(key), "{key}");
    }
}

#[test]
fn offline_verify_finds_and_deletes_part_files_no_upload_names() {
    part_files_no_upload_names_found_and_deleted(false);
}

#[test]
fn online_verify_finds_and_deletes_part_files_no_upload_names() {
    part_files_no_upload_names_found_and_deleted(true);
}

/// The replicas of an upload's parts are checked as a key's are: a part file gone, cut
/// short, or (`-deep`) of other bytes is found and `-repair` copies it again from a replica
/// that verifies. verify looked at part files only for orphans: an upload left with one
/// good copy of a part was "nothing wrong", one disk from losing it.
fn damaged_part_replicas_found_and_repaired(online: bool) {
    let (mut c, live, _) = filled(6, 0, &[]);
    // a part larger than a small copy (it goes through a temporary file), and two small
    let parts: Vec<(String, Vec<u8>)> = [("/parts/gone", 200 << 10), ("/parts/short", 3000), ("/parts/rot", 3000)]
        .iter()
        .map(|(k, n)| (k.to_string(), value_of(k).into_iter().cycle().take(*n).collect()))
        .collect();
    let mut uploads = Vec::new();
    for (key, data) in &parts {
        let before = part_files(&c);
        let (id, doc) = upload_one_part(&c.addr(), key, data);
        let files: Vec<(usize, String)> = part_files(&c).into_iter().filter(|f| !before.contains(f)).collect();
        assert_eq!(files.len(), REPLICAS, "{files:?}");
        uploads.push((id, doc, files));
    }
    let all = part_files(&c);
    let (gone, short, rot) = (&uploads[0].2[0], &uploads[1].2[1], &uploads[2].2[0]);
    fs::remove_file(path_on(&c, gone.0, &gone.1)).unwrap();
    fs::write(path_on(&c, short.0, &short.1), &parts[1].1[..100]).unwrap();
    flip_at(&path_on(&c, rot.0, &rot.1), 1000);
    let run = |c: &Cluster, args: &[&str]| if online { verify_online(c, args) } else { verify_offline(c, args) };
    if !online {
        c.master.kill9();
    }
    let (code, err) = run(&c, &["-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!((count(&err, "missing"), count(&err, "size mismatch")), (Some(1), Some(1)), "{err}");
    assert!(err.contains(&format!("S3 upload {} part 1 on ", uploads[0].0)), "the part is named: {err}");
    let (code, err) = run(&c, &["-grace", "0s", "-deep"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(count(&err, "corrupt"), Some(1), "{err}");
    let (code, err) = run(&c, &["-grace", "0s", "-deep", "-repair"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "repaired"), Some(3), "{err}");
    let (code, err) = run(&c, &["-grace", "0s", "-deep"]);
    assert_eq!(code, Some(0), "a second run finds nothing: {err}");
    assert_eq!(part_files(&c), all, "every replica back where it was, nothing more");
    for ((_, data), (_, _, files)) in parts.iter().zip(&uploads) {
        for (v, rel) in files {
            assert!(fs::read(path_on(&c, *v, rel)).unwrap() == *data, "{rel} on volume {v} holds other bytes");
        }
    }
    if !online {
        c.master.restart();
    }
    for ((key, data), (id, doc, _)) in parts.iter().zip(&uploads) {
        let r = request(&c.addr(), "POST", &format!("{key}?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
        assert!(r.text().contains("<CompleteMultipartUploadResult"), "{r:?}");
        assert!(get_follow(&c.addr(), key).body == *data, "{key}");
    }
    assert_eq!(part_files(&c), Vec::new());
    for key in &live {
        assert_eq!(get_follow(&c.addr(), key).body, value_of(key), "{key}");
    }
}

#[test]
fn offline_verify_finds_and_repairs_damaged_part_replicas() {
    damaged_part_replicas_found_and_repaired(false);
}

#[test]
fn online_verify_finds_and_repairs_damaged_part_replicas() {
    damaged_part_replicas_found_and_repaired(true);
}

/// A part no replica of which holds its bytes is counted as damage, not repaired, and left
/// as it is (it was only "failed", the summary saying "nothing wrong"); a part replica on a
/// volume that is down is not vouched for: the master's `REPAIR /?parts` says so (verify
/// said "nothing wrong" when a volume went down while it checked the parts).
#[test]
fn a_part_with_no_good_replica_is_damage_and_one_on_a_down_volume_is_not_vouched_for() {
    let (mut c, _, _) = filled(3, 0, &[]);
    let data: Vec<u8> = value_of("/parts/lost").into_iter().cycle().take(3000).collect();
    let (id, _) = upload_one_part(&c.addr(), "/parts/lost", &data);
    let files = part_files(&c);
    assert_eq!(files.len(), REPLICAS, "{files:?}");
    for (v, rel) in &files {
        flip_at(&path_on(&c, *v, rel), 10);
    }
    let (code, err) = verify_online(&c, &["-grace", "0s", "-deep", "-repair"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(count(&err, "corrupt"), Some(2), "{err}");
    assert!(err.contains("2 problems (2 corrupt), 0 repaired, 2 not"), "{err}");
    assert!(err.contains(&format!("S3 upload {id} part 1")) && err.contains("left as it is"), "{err}");
    for (v, rel) in &files {
        assert_ne!(fs::read(path_on(&c, *v, rel)).unwrap(), data, "a corrupt copy stays as it was, not spread");
    }
    c.volumes[files[0].0].stop();
    let down = c.volumes[files[0].0].addr();
    wait_until("the master to find the volume down", Duration::from_secs(10), || {
        c.master.lines().iter().any(|l| l.contains(&down) && l.contains("is down"))
    });
    let admin = admin_addr(&c.master);
    let r = request(&admin, "REPAIR", "/?parts&check=1", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let failed: Vec<&str> = v["failed"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(failed.iter().any(|f| f.contains("not checked: its volume is down")), "{v}");
}

/// A deep check of the parts keeps to `rate` inside a part too: the wait was paid between
/// parts only, so one big part (a 5 GiB one, three replicas) was read at disk speed.
#[test]
fn a_deep_check_of_parts_keeps_to_the_rate_inside_a_part() {
    let (c, _, _) = filled(1, 0, &[]);
    let data: Vec<u8> = (0..6u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    upload_one_part(&c.addr(), "/parts/paced", &data);
    let admin = admin_addr(&c.master);
    // a switch is 1 or 0: `check=no` was taken for on (a typo could turn a check into a repair)
    for (query, what) in [("check=no", "check must be 1 or 0"), ("deep=2", "deep must be 1 or 0")] {
        let r = request(&admin, "REPAIR", &format!("/?parts&{query}"), &[], b"");
        assert_eq!((r.status, r.text().contains(what)), (400, true), "{query}: {r:?}");
    }
    let began = Instant::now();
    // 2 replicas of 6 MiB at 4 MiB/s: 3 s
    let r = request(&admin, "REPAIR", "/?parts&deep=1&check=1&rate=4", &[], b"");
    let took = began.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("\"found\":[]"), "{r:?}");
    assert!(took >= Duration::from_millis(2500), "12 MiB read in {took:?} at 4 MiB/s");
}

/// The scrub does the same in the background, beside an upload in progress.
#[test]
fn the_scrub_deletes_part_files_no_upload_names() {
    let (c, _, _) = filled(6, 0, &["-scrub", "1s", "-grace", "0s"]);
    let (id, doc, orphans) = parts_with_orphans(&c);
    let held: Vec<(usize, String)> = part_files(&c).into_iter().filter(|f| !orphans.contains(f)).collect();
    wait_until("the scrub to delete the orphan part files", Duration::from_secs(30), || part_files(&c) == held);
    assert!(c.master.lines().iter().any(|l| l.starts_with("mkv: scrub: ") && l.contains("_parts/")), "logged");
    let r = request(&c.addr(), "POST", &format!("/parts/open?uploadId={id}"), &[UNSIGNED], doc.as_bytes());
    assert!(r.text().contains("<CompleteMultipartUploadResult"), "{r:?}");
    assert_eq!(part_files(&c), Vec::new());
}

/// A file in a folder inside a key folder is no key's: verify takes it for an orphan and
/// says only that (it said "ignoring" it first, and counted it as a stray too), and a
/// rebuild, which ignores it, names it by its own path (it named the folder twice:
/// `…/notes/notes/todo`).
#[test]
fn a_file_in_a_folder_inside_a_key_folder_is_an_orphan_named_by_its_own_path() {
    let (mut c, _, _) = filled(1, 0, &[]);
    let (v, rel) = replica_file(&layout(&c.volumes), "/v/0", 0);
    let folder = rel.rsplit_once('/').unwrap().0;
    let junk = format!("{folder}/notes/todo");
    write_file(&c, v, &junk, b"an operator's note");
    let (code, err) = verify_online(&c, &["-grace", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    let named = format!("{}/{junk}", addrs(&c.volumes)[v]);
    assert!(err.contains(&format!("orphans: {named}")), "{named}:\n{err}");
    assert_eq!(count(&err, "orphans"), Some(1), "{err}");
    assert!(!err.contains("ignoring"), "{err}");
    assert_eq!(count(&err, "strays"), None, "{err}");
    c.master.kill9();
    let dir = TempDir::new("rebuilt");
    let db = dir.path().join("db");
    let mut args = vec!["rebuild", "-volumes"];
    let vols = addrs(&c.volumes).join(",");
    let db_arg = db.display().to_string();
    args.extend([vols.as_str(), "-db", &db_arg]);
    args.extend(FLAGS);
    let (code, err) = run_mkv(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("ignoring {named}: ")), "{named}:\n{err}");
}

/// A part file no record names yet may be an UploadPart's in flight (written before its
/// record), so verify spares it for an hour whatever `-grace` says; the summary says so
/// instead of calling it younger than a `-grace` of 0s. The files of a part its record
/// names are not counted: they were (three "spared" for one part of an upload in progress).
#[test]
fn a_young_part_file_is_spared_for_an_hour_and_the_summary_says_why() {
    let (c, _, _) = filled(1, 0, &[]);
    write_file(&c, 0, "sv00/_parts/0123456789abcdef0123456789abcdef-7.1.19a0b1c2d3e-1f-0", b"in flight?");
    let unsigned = [("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    let r = request(&c.addr(), "POST", "/b/k?uploads", &unsigned, b"");
    let id = r.text().split("<UploadId>").nth(1).and_then(|t| t.split("</UploadId>").next()).unwrap().to_string();
    let r = request(&c.addr(), "PUT", &format!("/b/k?partNumber=1&uploadId={id}"), &unsigned, b"a part");
    assert_eq!(r.status, 200, "{r:?}");
    let (code, err) = verify_online(&c, &["-grace", "0s"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&err, "part files spared (younger than 1h)"), Some(1), "{err}");
    assert_eq!(count(&err, "spared (younger than -grace or written during the run)"), None, "{err}");
}

/// A cluster of `n` volumes (`flags` give `replicas` and `subvolumes`) holding `keys`, each
/// `value(key)`, its master stopped for damage to be made on disk; and where replica `i`
/// (in placement order) of a key is.
fn stopped_with(
    n: usize,
    flags: &[&str],
    replicas: usize,
    subvolumes: u32,
    keys: &[&str],
    value: impl Fn(&str) -> Vec<u8>,
) -> (Cluster, impl Fn(&str, usize) -> PathBuf) {
    let mut c = Cluster::new(n, flags);
    for key in keys {
        assert_eq!(request(&c.addr(), "PUT", key, &[], &value(key)).status, 201);
    }
    c.master.kill9();
    let lay = Layout { volumes: addrs(&c.volumes), replicas, subvolumes };
    let dirs: Vec<PathBuf> = c.volumes.iter().map(|v| v.dir().to_path_buf()).collect();
    let file = move |key: &str, i: usize| {
        let (v, rel) = replica_file(&lay, key, i);
        dirs[v].join(rel)
    };
    (c, file)
}

/// A rebuild over replicas that disagree takes what most of them hold, never the first one
/// read: `-verify` took the MD5 of the first replica in placement order, and the size of the
/// first was taken with or without it, so a flipped byte or a cut-short file there became
/// the record, and `verify -deep -repair` then copied it over the good replicas (a helper's
/// key lost its value on all three volumes). Replicas split with no majority are recorded
/// without an MD5, named in a warning, and none of them is overwritten.
fn a_rebuild_takes_what_most_replicas_hold(verify: bool) {
    let flags = ["-replicas", "3", "-subvolumes", "2"];
    let good = |key: &str| format!("{key}: the value all replicas held; ").repeat(100).into_bytes();
    let keys = ["/maj/rot", "/maj/short", "/maj/split"];
    let (mut c, file) = stopped_with(3, &flags, 3, 2, &keys, good);
    flip_at(&file("/maj/rot", 0), 100);
    let short = file("/maj/short", 0);
    fs::write(&short, &good("/maj/short")[..1000]).unwrap();
    flip_at(&file("/maj/split", 0), 10);
    flip_at(&file("/maj/split", 1), 20);

    let (vols, db) = (addrs(&c.volumes).join(","), c.master.db().display().to_string());
    let mut args = vec!["rebuild", "-volumes", &vols, "-db", &db, "-force"];
    args.extend(flags);
    if verify {
        args.push("-verify");
    }
    let (code, stderr) = run_mkv(&args);
    assert!(matches!(code, Some(0 | 1)), "{stderr}");
    if verify {
        assert!(stderr.contains("/maj/split") && stderr.contains("no MD5"), "{stderr}");
    }
    c.master.restart();
    for key in ["/maj/rot", "/maj/short"] {
        let r = request(&c.addr(), "HEAD", key, &[], b"");
        assert_eq!(r.status, 302, "{key}: {r:?}");
        if verify {
            assert_eq!(r.header("content-md5"), Some(hex(&md5(&good(key))).as_str()), "{key}: {r:?}");
        }
    }
    let (code, stderr) = verify_online(&c, &["-deep", "-repair", "-grace", "0s"]);
    assert!(matches!(code, Some(0 | 1)), "{stderr}");
    for key in ["/maj/rot", "/maj/short"] {
        for i in 0..3 {
            // without an MD5 a flipped byte is found by the other replicas' bytes
            assert!(fs::read(file(key, i)).unwrap() == good(key), "{key} replica {i} after repair:\n{stderr}");
        }
    }
    // split three ways: the one good replica is still there, the others as they were
    assert!(fs::read(file("/maj/split", 2)).unwrap() == good("/maj/split"), "{stderr}");
    for i in 0..2 {
        assert_eq!(fs::read(file("/maj/split", i)).unwrap().len(), good("/maj/split").len(), "{stderr}");
    }
}

#[test]
fn a_rebuild_with_verify_takes_the_md5_most_replicas_hold() {
    a_rebuild_takes_what_most_replicas_hold(true);
}

#[test]
fn a_rebuild_takes_the_size_most_replicas_hold() {
    a_rebuild_takes_what_most_replicas_hold(false);
}

/// A repair of a key whose record keeps no MD5 (rebuilt without `-verify`) copies the value
/// most of its replicas hold: the first replica of the right size was taken as the source,
/// so a cut-short replica was restored from one with a flipped byte, making the damage the
/// majority, which a later `rebuild -verify` then recorded (found by a helper; a rebalance
/// moved keys so, down to no good copy). Split with no majority, nothing is copied. A deep
/// verify finds a replica whose bytes differ from what most hold, as an MD5 would have.
#[test]
fn a_repair_without_an_md5_copies_what_most_replicas_hold() {
    let flags = ["-replicas", "4", "-subvolumes", "1"];
    let good = |key: &str| format!("{key}: the value; ").repeat(300).into_bytes();
    let keys = ["/nomd5/most", "/nomd5/split", "/nomd5/flip"];
    let (mut c, file) = stopped_with(4, &flags, 4, 1, &keys, good);
    for key in ["/nomd5/most", "/nomd5/split"] {
        fs::write(file(key, 0), &good(key)[..1000]).unwrap();
        flip_at(&file(key, 1), 50);
    }
    flip_at(&file("/nomd5/split", 2), 60);
    flip_at(&file("/nomd5/flip", 2), 70);
    let (vols, db) = (addrs(&c.volumes).join(","), c.master.db().display().to_string());
    let mut args = vec!["rebuild", "-volumes", &vols, "-db", &db, "-force"];
    args.extend(flags);
    let (code, stderr) = run_mkv(&args);
    assert!(matches!(code, Some(0 | 1)), "{stderr}");
    c.master.restart();
    let (_, stderr) = verify_online(&c, &["-deep", "-repair", "-grace", "0s"]);
    for i in 0..4 {
        assert!(fs::read(file("/nomd5/most", i)).unwrap() == good("/nomd5/most"), "replica {i}:\n{stderr}");
    }
    for i in 0..4 {
        assert!(fs::read(file("/nomd5/flip", i)).unwrap() == good("/nomd5/flip"), "flip replica {i}:\n{stderr}");
    }
    assert!(stderr.contains("/nomd5/flip on ") && stderr.contains("corrupt"), "{stderr}");
    let split = "/nomd5/split";
    assert!(stderr.contains("/nomd5/split") && stderr.contains("none held by most"), "{stderr}");
    assert!(fs::read(file(split, 3)).unwrap() == good(split), "{stderr}");
    assert_eq!(
        fs::read(file(split, 0)).unwrap().len(),
        1000,
        "copied from a replica no majority vouched for:\n{stderr}"
    );
}

/// A key deleted between the listing and `-deep`'s read of a replica: the read's `404` was
/// reported as a failure ("cannot read it: volume … answered 404") and the run exited 1 on a
/// healthy store taking writes (a helper's nightly `-deep` under churn: 7 runs in 8; the scrub
/// counted the same in `mkv_scrub_failures`). A replica found gone is a missing replica,
/// looked at again against the master like any other problem: the key's delete explains it.
#[test]
fn a_key_deleted_while_deep_reads_it_is_no_failure() {
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let master_at = Arc::new(Mutex::new(String::new()));
    let fired = Arc::new(AtomicBool::new(false));
    let key = "/churn/1";
    let third = {
        let (master_at, fired) = (master_at.clone(), fired.clone());
        proxy(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), vols[2].addr(), 64 << 10, move |sent| {
            // -deep's read of the replica (a listing asks for a folder, ending in '/')
            let line = sent.split(|&b| b == b'\r').next().unwrap_or_default();
            let read = line.starts_with(b"GET /") && !line.ends_with(b"/ HTTP/1.1");
            if read && !fired.swap(true, Ordering::SeqCst) {
                let at = master_at.lock().unwrap().clone();
                assert_eq!(request(&at, "DELETE", key, &[], b"").status, 204);
            }
        })
    };
    let all = vec![vols[0].addr(), vols[1].addr(), third];
    let master = Master::start_on(&all, &["-replicas", "3", "-subvolumes", "1"]);
    *master_at.lock().unwrap() = master.addr();
    assert_eq!(request(&master.addr(), "PUT", key, &[], b"soon gone").status, 201);
    let url = format!("http://{}", master.addr());
    let (code, err) = run_mkv(&["verify", "-online", &url, "-deep", "-grace", "0s"]);
    assert!(fired.load(Ordering::SeqCst), "the replica was never read: {err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(summary(&err).contains(" 0 failed") && err.contains("nothing wrong in 1 keys"), "{err}");
}
