//! What the volumes hold, as the walk reads it: which folders hold `xx/yy/` trees, their
//! nginx JSON listings, values (rebuild's `-verify`), and file names turned back into keys.
//!
//! A volume is not trusted: a listing is read and parsed within named bounds (its size, its
//! entries), and the bodies of large listings in memory at once are limited by a [`Gate`].

use std::{borrow::Cow, fmt, time::Duration};

use crate::md5::Md5;
use futures_util::future::join_all;
use serde::Deserialize;

use crate::{
    config::Config,
    placement::{self, MARKER_DIR, PARTS_DIR, TMP_DIR},
    volume::{self, Client, Topology},
};

/// `xx` folders: the shards a rebuild walks one after another.
pub const SHARDS: usize = 256;
/// Most entries one listing may have. md5 spreads keys evenly over the 65,536 `xx/yy`
/// folders, so a folder of a volume holding N keys lists about N / 65,536 (~15 for 1M keys):
/// this fits volumes of 4 billion keys, and a parsed listing stays under 4 MiB.
pub const MAX_ENTRIES: usize = 65_536;
/// Largest listing body read: MAX_ENTRIES entries of 256 bytes (nginx's JSON is ~80 bytes an
/// entry besides its name, and a real key's name is 20-60 bytes, at most 255).
pub const LISTING_MAX: usize = 16 << 20;
/// A listing body grows past this only with a pass from the [`Gate`]: ~2,000 entries, a
/// folder of a volume of 130M keys. Below it, listings in flight hold at most
/// `-concurrency` × this (64 MiB at the default 256).
const SMALL_LISTING: usize = 256 << 10;
/// Listings that may grow past SMALL_LISTING at once: 4 × LISTING_MAX = 64 MiB at most.
/// nginx has stat'ed every entry before it sends the first byte, so waiting here delays
/// only the transfer of the rest, never the volume's own work.
const BIG_LISTINGS: usize = 4;
/// Tries of one listing or read; between them 0.25, 0.5, 1, 2 s pass.
const ATTEMPTS: u32 = 5;
/// Largest piece of a value held while `-verify` hashes it.
const READ_CHUNK: usize = 256 << 10;

/// A folder that holds a `xx/yy/` tree: a volume's root or one of its `svXX` subvolumes.
pub struct Root {
    /// Index into `-volumes`.
    pub server: usize,
    pub sv: Option<u8>,
    /// The replica name records use: `host:port` or `host:port/svXX`.
    pub name: String,
    /// Path of the folder on the server: `` or `/svXX`.
    pub prefix: String,
    /// Which `xx` folders exist, under the tree and under `_unlinked`.
    pub data: Box<[bool; SHARDS]>,
    pub markers: Box<[bool; SHARDS]>,
    /// Whether it has a `_tmp` folder (replacements being written, or left behind).
    pub tmp: bool,
    /// Whether it has a `_parts` folder (S3 multipart parts).
    pub parts: bool,
}

pub struct Layout {
    pub volumes: Vec<String>,
    pub roots: Vec<Root>,
}

/// One entry of nginx's JSON autoindex.
#[derive(Debug, Deserialize)]
pub struct Entry<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub size: u64,
    /// `Wed, 25 Nov 2026 13:11:31 GMT`
    #[serde(default, borrow)]
    pub mtime: Option<Cow<'a, str>>,
}

impl Entry<'_> {
    /// The entry's last-modified time in Unix seconds; 0 when the listing gives none.
    pub fn mtime(&self) -> i64 {
        self.mtime.as_deref().and_then(|m| crate::dates::parse_http_date(m.as_bytes())).unwrap_or(0)
    }
}

/// Why a listing's body is refused.
#[derive(Debug)]
pub enum BadListing {
    TooMany,
    NotJson(serde_json::Error),
}

impl fmt::Display for BadListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadListing::TooMany => write!(f, "more than {MAX_ENTRIES} entries, the most one folder may list"),
            BadListing::NotJson(e) => write!(f, "not a JSON listing ({e})"),
        }
    }
}

/// The entries of a JSON autoindex body; more than MAX_ENTRIES are refused as they are read,
/// before they take memory.
pub fn parse_listing(body: &[u8]) -> Result<Vec<Entry<'_>>, BadListing> {
    use serde::de::DeserializeSeed as _;
    let mut over = false;
    let mut de = serde_json::Deserializer::from_slice(body);
    let entries = Capped { over: &mut over, hint: body.len() / 100 }.deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    entries.map_err(|e| if over { BadListing::TooMany } else { BadListing::NotJson(e) })
}

/// A JSON array of at most MAX_ENTRIES entries; `over` is set when it has more.
struct Capped<'f> {
    over: &'f mut bool,
    /// Entries expected (nginx's are ~100 bytes each), so the Vec grows at most once or twice.
    hint: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Capped<'_> {
    type Value = Vec<Entry<'de>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Capped<'_> {
    type Value = Vec<Entry<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of entries")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.hint.min(MAX_ENTRIES));
        while let Some(e) = seq.next_element()? {
            if out.len() == MAX_ENTRIES {
                *self.over = true;
                return Err(serde::de::Error::custom("too many entries"));
            }
            out.push(e);
        }
        Ok(out)
    }
}

/// Passes for listings that grow past SMALL_LISTING: BIG_LISTINGS tokens in a channel, one
/// taken before such a listing reads on and given back when its body is dropped. Holders
/// wait on nothing but their own volume, so the passes always come back.
pub struct Gate {
    give: flume::Sender<()>,
    take: flume::Receiver<()>,
}

impl Gate {
    pub fn new() -> Gate {
        let (give, take) = flume::bounded(BIG_LISTINGS);
        for _ in 0..BIG_LISTINGS {
            let _ = give.try_send(());
        }
        Gate { give, take }
    }

    async fn pass(&self) -> Pass {
        // the gate holds a sender, so the channel never closes
        let _ = self.take.recv_async().await;
        Pass(self.give.clone())
    }
}

struct Pass(flume::Sender<()>);

impl Drop for Pass {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// A listing's body, with the pass it holds if it is a large one.
pub struct Listing {
    pub body: Vec<u8>,
    _pass: Option<Pass>,
}

/// `sv0A` → 10 (two upper-case hex digits, as placement writes them).
fn parse_sv(name: &str) -> Option<u8> {
    let hex = name.strip_prefix("sv")?;
    (hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

/// `5d` → 0x5d (two lower-case hex digits, as key paths have them).
pub fn parse_xx(name: &str) -> Option<u8> {
    (name.len() == 2 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u8::from_str_radix(name, 16).ok())
        .flatten()
}

/// Lists each volume's top, finds its roots (subvolume folders, or the top itself), and
/// which `xx` folders each has. Any failure here is fatal: nothing has been written yet.
pub async fn discover(client: &Client, topo: &Topology, gate: &Gate, cfg: &Config) -> anyhow::Result<Layout> {
    let tops = join_all(cfg.volumes.iter().map(|v| folders(client, topo, gate, v, "/"))).await;
    let mut roots = Vec::new();
    for (server, (v, top)) in cfg.volumes.iter().zip(tops).enumerate() {
        let mut flat = false;
        let mut svs = Vec::new();
        for name in top? {
            if let Some(sv) = parse_sv(&name) {
                svs.push(sv);
            } else if parse_xx(&name).is_some() || is_marker_dir(&name) {
                flat = true;
            }
        }
        svs.sort_unstable();
        svs.dedup();
        let new_root = |sv: Option<u8>| {
            let prefix = sv.map_or(String::new(), |sv| format!("/sv{sv:02X}"));
            Root {
                server,
                sv,
                name: format!("{v}{prefix}"),
                prefix,
                data: Box::new([false; SHARDS]),
                markers: Box::new([false; SHARDS]),
                tmp: false,
                parts: false,
            }
        };
        if flat {
            roots.push(new_root(None));
        }
        roots.extend(svs.iter().map(|&sv| new_root(Some(sv))));
        if let Some(what) = odd_layout(flat, &svs, cfg.subvolumes) {
            eprintln!(
                "mkv: warning: volume {v} holds {what}: records name the replicas where they are; \
                 `mkv rebalance` moves them to where -subvolumes places them"
            );
        }
    }
    let found = join_all(roots.iter().map(|r| async {
        let v = &cfg.volumes[r.server];
        let mut data = [false; SHARDS];
        let mut has_markers = false;
        let (mut tmp, mut parts) = (false, false);
        for name in folders(client, topo, gate, v, &format!("{}/", r.prefix)).await? {
            if let Some(xx) = parse_xx(&name) {
                data[xx as usize] = true;
            }
            has_markers |= is_marker_dir(&name);
            tmp |= TMP_DIR.strip_prefix('/') == Some(&name);
            parts |= PARTS_DIR.strip_prefix('/') == Some(&name);
        }
        let mut markers = [false; SHARDS];
        if has_markers {
            for name in folders(client, topo, gate, v, &format!("{}{MARKER_DIR}/", r.prefix)).await? {
                if let Some(xx) = parse_xx(&name) {
                    markers[xx as usize] = true;
                }
            }
        }
        anyhow::Ok((data, markers, tmp, parts))
    }))
    .await;
    for (r, f) in roots.iter_mut().zip(found) {
        let (data, markers, tmp, parts) = f?;
        *r.data = data;
        *r.markers = markers;
        (r.tmp, r.parts) = (tmp, parts);
    }
    Ok(Layout { volumes: cfg.volumes.clone(), roots })
}

/// What a volume's top holds that `-subvolumes` would not put there, if anything: key
/// folders at the top where keys go in `svXX` folders, or `svXX` folders that -subvolumes
/// does not name. Only the walk tells whether they still hold keys (the folders of deleted
/// keys stay behind, empty), so the warning says what is there, not that it is wrong.
fn odd_layout(flat: bool, svs: &[u8], subvolumes: u32) -> Option<String> {
    let past = svs.iter().filter(|&&sv| sv as u32 >= subvolumes).count();
    if flat && subvolumes > 1 {
        Some(format!("key folders at its top (-subvolumes {subvolumes} places keys in sv folders; these may be empty)"))
    } else if !svs.is_empty() && subvolumes <= 1 {
        Some(format!("{} subvolume folders (-subvolumes 1 places keys at the top)", svs.len()))
    } else if past > 0 {
        Some(format!("{past} subvolume folder(s) past -subvolumes {subvolumes} (sv00 to sv{:02X})", subvolumes - 1))
    } else {
        None
    }
}

/// The folder names in the listing of `path`. Its body, and the gate's pass with it, is let
/// go here: discovery waits for all its listings at once, and bodies kept until then could
/// hold every pass while another listing waits for one.
async fn folders(
    client: &Client,
    topo: &Topology,
    gate: &Gate,
    server: &str,
    path: &str,
) -> anyhow::Result<Vec<String>> {
    let listing = fetch(client, topo, gate, server, path)
        .await
        .map_err(|f| anyhow::anyhow!("cannot list {server}{path}: {}", f.why))?;
    let entries = parse_listing(&listing.body).map_err(|e| anyhow::anyhow!("{server}{path}: bad listing: {e}"))?;
    Ok(entries.iter().filter(|e| e.kind == "directory").map(|e| e.name.to_string()).collect())
}

/// `_unlinked`, the folder of UNLINK's markers, as a listing names it.
fn is_marker_dir(name: &str) -> bool {
    MARKER_DIR.strip_prefix('/') == Some(name)
}

/// Why a listing or read failed: `unreachable` when the volume itself stopped answering,
/// `refused` when it answered what no folder holds (a listing over a bound).
pub struct Failure {
    pub unreachable: bool,
    pub refused: bool,
    pub why: String,
}

impl Failure {
    fn answer(why: String) -> Failure {
        Failure { unreachable: false, refused: false, why }
    }
}

fn failure(e: volume::Error) -> Failure {
    Failure { unreachable: e.unreachable(), refused: false, why: e.to_string() }
}

/// GETs a listing, retrying what may pass (a busy or restarting volume, a `5xx`); one over
/// LISTING_MAX would be as large again, so it is refused at once.
pub async fn fetch(
    client: &Client,
    topo: &Topology,
    gate: &Gate,
    server: &str,
    path: &str,
) -> Result<Listing, Failure> {
    let mut last = Failure::answer(String::new());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            monoio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
        }
        match read_listing(client, topo, gate, server, path).await {
            Ok((200, listing)) => return Ok(listing),
            Ok((s, _)) if s >= 500 => last = Failure::answer(format!("answered {s}")),
            Ok((s, _)) => return Err(Failure::answer(format!("answered {s}"))),
            Err(f) if f.refused => return Err(f),
            Err(f) => last = f,
        }
    }
    Err(last)
}

/// One GET of a listing: its status and body, read up to LISTING_MAX, past SMALL_LISTING
/// only with a pass.
async fn read_listing(
    client: &Client,
    topo: &Topology,
    gate: &Gate,
    server: &str,
    path: &str,
) -> Result<(u16, Listing), Failure> {
    let mut d = client.download(topo, server, path).await.map_err(failure)?;
    let mut body = Vec::new();
    let mut pass = None;
    while let Some(c) = client.next_chunk(&mut d, READ_CHUNK).await.map_err(failure)? {
        let len = body.len() + c.len();
        if len > LISTING_MAX {
            // the connection is dropped with the rest unread
            let why = format!("listing over {} MiB, the most one folder may take", LISTING_MAX >> 20);
            return Err(Failure { unreachable: false, refused: true, why });
        }
        if len > SMALL_LISTING && pass.is_none() {
            pass = Some(gate.pass().await);
        }
        body.extend_from_slice(&c);
    }
    let status = d.status;
    client.finish(d);
    Ok((status, Listing { body, _pass: pass }))
}

/// Reads every replica of a value whole (streamed): each one's MD5 and length, or why it
/// could not be read. A replica that could not be reached is asked again (a busy volume),
/// as listings are. Each is read: the first alone would be taken for the value when it is
/// the one damaged.
pub async fn read_md5s(
    client: &Client,
    topo: &Topology,
    targets: &[(String, String)],
) -> Vec<Result<([u8; 16], u64), Failure>> {
    let mut out = Vec::with_capacity(targets.len());
    for (server, path) in targets {
        let mut r = Err(Failure::answer("no replica".into()));
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                monoio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
            }
            r = read_md5(client, topo, server, path).await;
            if !matches!(&r, Err(f) if f.unreachable) {
                break;
            }
        }
        out.push(r);
    }
    out
}

/// Reads one replica whole (streamed): its MD5 and length.
async fn read_md5(client: &Client, topo: &Topology, server: &str, path: &str) -> Result<([u8; 16], u64), Failure> {
    let mut d = match client.download(topo, server, path).await {
        Ok(d) if d.status == 200 => d,
        Ok(d) => return Err(Failure::answer(format!("{server} answered {}", d.status))),
        Err(e) => return Err(failure(e)),
    };
    let mut h = Md5::new();
    let mut n = 0u64;
    while let Some(c) = client.next_chunk(&mut d, READ_CHUNK).await.map_err(failure)? {
        h.update(&c);
        n += c.len() as u64;
    }
    client.finish(d);
    Ok((h.finalize(), n))
}

/// The first two md5 bytes of `key`: its `xx/yy/` folder.
pub fn hash_prefix(key: &[u8]) -> [u8; 2] {
    let d = Md5::digest(key);
    [d[0], d[1]]
}

/// [`recover_merged`] stopped: its budget could not pay for the next candidate.
#[derive(Debug, PartialEq)]
pub struct Spent;

/// nginx merges runs of `/` in a request path, so a key whose base64 has `//` (or starts
/// with `/`) was stored under a name with fewer slashes. Puts them back where they can go
/// and takes the candidate that decodes to a key hashing to `want`.
///
/// Each candidate costs about the name's length in work (build, decode, md5): `budget` is
/// what the caller lets it spend, in bytes of candidates, across the names it asks about,
/// so that a listing of long names full of `/` cannot cost more than reading it did.
pub fn recover_merged(name: &str, want: [u8; 2], budget: &mut usize) -> Result<Option<Vec<u8>>, Spent> {
    let short = (4 - name.len() % 4) % 4;
    // where a slash may have been lost: at the start, or beside a slash
    let spots: Vec<usize> = std::iter::once(0).chain(name.match_indices('/').map(|(i, _)| i)).collect();
    let mut tries = 50_000usize;
    for missing in [short, short + 4] {
        if missing == 0 {
            continue;
        }
        let mut pick = vec![0usize; missing];
        loop {
            let cost = name.len() + missing;
            if tries == 0 {
                return Ok(None);
            }
            if *budget < cost {
                return Err(Spent);
            }
            tries -= 1;
            *budget -= cost;
            let mut cand = String::with_capacity(name.len() + missing);
            let mut at = 0;
            for &p in &pick {
                cand.push_str(&name[at..spots[p]]);
                cand.push('/');
                at = spots[p];
            }
            cand.push_str(&name[at..]);
            if let Ok(k) = placement::decode_name(&cand).ok_or(()) {
                if hash_prefix(&k) == want {
                    return Ok(Some(k));
                }
            }
            // next multiset of spots (non-decreasing picks)
            let Some(i) = (0..missing).rev().find(|&i| pick[i] + 1 < spots.len()) else { break };
            pick[i] += 1;
            for j in i + 1..missing {
                pick[j] = pick[i];
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {

    use super::*;

    /// A volume with sv00…sv09 and the empty top folders a -subvolumes 1 master left read
    /// "key folders at its top and 10 subvolume folders but -subvolumes is 10".
    #[test]
    fn an_odd_layout_names_only_what_is_odd() {
        let ten: Vec<u8> = (0..10).collect();
        let said = odd_layout(true, &ten, 10).unwrap();
        assert!(said.starts_with("key folders at its top") && !said.contains("10 subvolume folders"), "{said}");
        assert_eq!(odd_layout(false, &ten, 10), None);
        assert_eq!(odd_layout(true, &[], 1), None);
        assert!(odd_layout(false, &ten, 1).unwrap().starts_with("10 subvolume folders"));
        assert!(odd_layout(false, &ten, 4).unwrap().starts_with("6 subvolume folder(s) past -subvolumes 4"));
    }

    /// What nginx does to a request path before it becomes a file name.
    fn merge_slashes(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn merged_slashes_are_put_back() {
        for key in [&b"/\xff\xff\xff"[..], b"/k\xff\xff\xfex", b"/\xff\xff\xff\xff\xff\xfe", b"\xfc\x00/x"] {
            let path = placement::key_path(key);
            let stored = merge_slashes(&path);
            let name = stored.splitn(4, '/').nth(3).unwrap();
            assert_ne!(name, &path[7..], "{key:?} should have a merged name");
            let want = hash_prefix(key);
            let mut budget = 1 << 20;
            assert_eq!(recover_merged(name, want, &mut budget), Ok(Some(key.to_vec())), "{name}");
            assert!(budget < 1 << 20);
        }
        let mut budget = 1 << 20;
        assert_eq!(recover_merged("aGVsbG8=", hash_prefix(b"hello"), &mut budget), Ok(None), "nothing to put back");
        assert_eq!(recover_merged("L/w==", [0, 0], &mut budget), Ok(None), "no candidate hashes there");
    }

    #[test]
    fn recovery_stops_when_its_budget_is_spent() {
        // a long name of many slashes has a great many candidates, none of them right
        let name = "a/".repeat(1000) + "a";
        let mut budget = 100 * (name.len() + 7);
        assert_eq!(recover_merged(&name, [0, 0], &mut budget), Err(Spent));
        assert!(budget < name.len() + 7, "{budget} left");
        let key = b"/\xff\xff\xff";
        let stored = merge_slashes(&placement::key_path(key));
        let merged = stored.splitn(4, '/').nth(3).unwrap();
        assert_eq!(recover_merged(merged, hash_prefix(key), &mut 0), Err(Spent), "no budget, no try");
    }

    #[test]
    fn the_gate_lets_so_many_large_listings_through() {
        use futures_util::FutureExt as _;
        let gate = Gate::new();
        let passes: Vec<Pass> = (0..BIG_LISTINGS).map(|_| gate.pass().now_or_never().expect("a pass")).collect();
        assert!(gate.pass().now_or_never().is_none(), "every pass is out");
        drop(passes);
        assert!(gate.pass().now_or_never().is_some(), "passes come back");
    }

    #[test]
    fn listings_are_parsed_within_bounds() {
        let entry = r#"{ "name":"a", "type":"directory", "mtime":"Wed, 25 Nov 2026 13:11:31 GMT" }"#;
        let list = |n: usize| format!("[{}]", vec![entry; n].join(",\n"));
        assert_eq!(parse_listing(list(MAX_ENTRIES).as_bytes()).unwrap().len(), MAX_ENTRIES);
        let over = parse_listing(list(MAX_ENTRIES + 1).as_bytes()).unwrap_err();
        assert!(matches!(over, BadListing::TooMany), "{over}");
        assert_eq!(over.to_string(), "more than 65536 entries, the most one folder may list");
        assert_eq!(parse_listing(b"[]").unwrap().len(), 0);
        for garbage in [&b"<html><body>It works!</body></html>"[..], b"{\"a\":1}", b"[1,2]", b"[] []", b""] {
            let e = parse_listing(garbage).unwrap_err();
            assert!(matches!(e, BadListing::NotJson(_)), "{e}");
            assert!(e.to_string().starts_with("not a JSON listing ("), "{e}");
        }
    }

    #[test]
    fn names_of_folders() {
        assert_eq!(parse_sv("sv0A"), Some(10));
        assert_eq!(parse_sv("sv0a"), None);
        assert_eq!(parse_sv("sv100"), None);
        assert_eq!(parse_xx("5d"), Some(0x5d));
        assert_eq!(parse_xx("5D"), None);
        assert_eq!(parse_xx("_u"), None);
        let body = br#"[
{ "name":"5d", "type":"directory", "mtime":"Wed, 25 Nov 2026 13:11:31 GMT" },
{ "name":"aGVsbG8=", "type":"file", "mtime":"Wed, 25 Nov 2026 13:11:31 GMT", "size":5 }
]"#;
        let e = parse_listing(body).unwrap();
        assert_eq!((&*e[0].name, &*e[0].kind, e[0].size), ("5d", "directory", 0));
        assert_eq!((&*e[1].name, &*e[1].kind, e[1].size), ("aGVsbG8=", "file", 5));
        assert_eq!(e[1].mtime(), 1795612291, "nginx's mtime, in Unix seconds");
        assert_eq!(parse_listing(br#"[{"name":"a","type":"file","size":1}]"#).unwrap()[0].mtime(), 0);
    }
}
