//! What the volumes hold, as rebuild reads it: which folders hold `xx/yy/` trees, their
//! nginx JSON listings, values (for `-verify`), and file names turned back into keys.

use std::{borrow::Cow, time::Duration};

use crate::md5::Md5;
use futures_util::future::join_all;
use serde::Deserialize;

use crate::{
    config::Config,
    placement::{self, MARKER_DIR},
    volume::{self, Client, Topology},
};

/// `xx` folders: the shards a rebuild walks one after another.
pub const SHARDS: usize = 256;
/// Largest directory listing read (nginx's JSON is ~100 bytes a file).
const LISTING_MAX: usize = 512 << 20;
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
}

pub struct Layout {
    pub volumes: Vec<String>,
    pub roots: Vec<Root>,
}

/// One entry of nginx's JSON autoindex.
#[derive(Deserialize)]
pub struct Entry<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub size: u64,
}

pub fn parse_listing(body: &[u8]) -> Result<Vec<Entry<'_>>, serde_json::Error> {
    serde_json::from_slice(body)
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
pub async fn discover(client: &Client, topo: &Topology, cfg: &Config) -> anyhow::Result<Layout> {
    let tops = join_all(cfg.volumes.iter().map(|v| fetch(client, topo, v, "/"))).await;
    let mut roots = Vec::new();
    for (server, (v, top)) in cfg.volumes.iter().zip(tops).enumerate() {
        let body = top.map_err(|f| anyhow::anyhow!("cannot list volume {v}: {}", f.why))?;
        let entries = parse_listing(&body).map_err(|e| anyhow::anyhow!("volume {v}: bad listing of /: {e}"))?;
        let mut flat = false;
        let mut svs = Vec::new();
        for e in entries.iter().filter(|e| e.kind == "directory") {
            if let Some(sv) = parse_sv(&e.name) {
                svs.push(sv);
            } else if parse_xx(&e.name).is_some() || format!("/{}", e.name) == MARKER_DIR {
                flat = true;
            }
        }
        svs.sort_unstable();
        let new_root = |sv: Option<u8>| {
            let prefix = sv.map_or(String::new(), |sv| format!("/sv{sv:02X}"));
            Root {
                server,
                sv,
                name: format!("{v}{prefix}"),
                prefix,
                data: Box::new([false; SHARDS]),
                markers: Box::new([false; SHARDS]),
            }
        };
        if flat {
            roots.push(new_root(None));
        }
        roots.extend(svs.iter().map(|&sv| new_root(Some(sv))));
        let odd = (flat && cfg.subvolumes > 1)
            || (!svs.is_empty() && cfg.subvolumes <= 1)
            || svs.iter().any(|&sv| sv as u32 >= cfg.subvolumes);
        if odd {
            eprintln!(
                "mkv: warning: volume {v} holds {} but -subvolumes is {}: records name the replicas where \
                 they are; `mkv rebalance` moves them to where -subvolumes places them",
                match (flat, svs.len()) {
                    (true, 0) => "keys at its top".to_string(),
                    (true, n) => format!("keys at its top and in {n} subvolume folders"),
                    (false, n) => format!("{n} subvolume folders"),
                },
                cfg.subvolumes
            );
        }
    }
    let found = join_all(roots.iter().map(|r| async {
        let v = &cfg.volumes[r.server];
        let top = fetch(client, topo, v, &format!("{}/", r.prefix)).await;
        let body = top.map_err(|f| anyhow::anyhow!("cannot list {}/: {}", r.name, f.why))?;
        let entries = parse_listing(&body).map_err(|e| anyhow::anyhow!("{}: bad listing: {e}", r.name))?;
        let mut data = [false; SHARDS];
        let mut has_markers = false;
        for e in entries.iter().filter(|e| e.kind == "directory") {
            if let Some(xx) = parse_xx(&e.name) {
                data[xx as usize] = true;
            }
            has_markers |= format!("/{}", e.name) == MARKER_DIR;
        }
        let mut markers = [false; SHARDS];
        if has_markers {
            let body = fetch(client, topo, v, &format!("{}{MARKER_DIR}/", r.prefix))
                .await
                .map_err(|f| anyhow::anyhow!("cannot list {}{MARKER_DIR}/: {}", r.name, f.why))?;
            let entries = parse_listing(&body).map_err(|e| anyhow::anyhow!("{}: bad listing: {e}", r.name))?;
            for e in entries.iter().filter(|e| e.kind == "directory") {
                if let Some(xx) = parse_xx(&e.name) {
                    markers[xx as usize] = true;
                }
            }
        }
        anyhow::Ok((data, markers))
    }))
    .await;
    for (r, f) in roots.iter_mut().zip(found) {
        let (data, markers) = f?;
        *r.data = data;
        *r.markers = markers;
    }
    Ok(Layout { volumes: cfg.volumes.clone(), roots })
}

/// Why a listing or read failed; `unreachable` when the volume itself stopped answering.
pub struct Failure {
    pub unreachable: bool,
    pub why: String,
}

fn failure(e: volume::Error) -> Failure {
    let unreachable = matches!(e, volume::Error::Down(_) | volume::Error::Timeout(_) | volume::Error::Io(..));
    Failure { unreachable, why: e.to_string() }
}

/// GETs a listing, retrying what may pass (a busy or restarting volume, a `5xx`).
pub async fn fetch(client: &Client, topo: &Topology, server: &str, path: &str) -> Result<Vec<u8>, Failure> {
    let mut last = Failure { unreachable: false, why: String::new() };
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            monoio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
        }
        match client.get(topo, server, path, LISTING_MAX).await {
            Ok((200, body)) => return Ok(body),
            Ok((s, _)) if s >= 500 => last = Failure { unreachable: false, why: format!("answered {s}") },
            Ok((s, _)) => return Err(Failure { unreachable: false, why: format!("answered {s}") }),
            Err(e) => last = failure(e),
        }
    }
    Err(last)
}

/// Reads a value whole (streamed) from the first replica that answers: its MD5 and length.
pub async fn read_md5(
    client: &Client,
    topo: &Topology,
    targets: &[(String, String)],
) -> Result<([u8; 16], u64), Failure> {
    let mut last = Failure { unreachable: false, why: "no replica".into() };
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            monoio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
        }
        for (server, path) in targets {
            let mut d = match client.download(topo, server, path).await {
                Ok(d) if d.status == 200 => d,
                Ok(d) => {
                    last = Failure { unreachable: false, why: format!("{server} answered {}", d.status) };
                    continue;
                }
                Err(e) => {
                    last = failure(e);
                    continue;
                }
            };
            let mut h = Md5::new();
            let mut n = 0u64;
            let read = loop {
                match client.next_chunk(&mut d, READ_CHUNK).await {
                    Ok(Some(c)) => {
                        h.update(&c);
                        n += c.len() as u64;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match read {
                Ok(()) => {
                    client.finish(d);
                    return Ok((h.finalize(), n));
                }
                Err(e) => last = failure(e),
            }
        }
        if !last.unreachable {
            break;
        }
    }
    Err(last)
}

/// The first two md5 bytes of `key`: its `xx/yy/` folder.
pub fn hash_prefix(key: &[u8]) -> [u8; 2] {
    let d = Md5::digest(key);
    [d[0], d[1]]
}

/// nginx merges runs of `/` in a request path, so a key whose base64 has `//` (or starts
/// with `/`) was stored under a name with fewer slashes. Puts them back where they can go
/// and takes the candidate that decodes to a key hashing to `want`.
pub fn recover_merged(name: &str, want: [u8; 2]) -> Option<Vec<u8>> {
    let short = (4 - name.len() % 4) % 4;
    // where a slash may have been lost: at the start, or beside a slash
    let spots: Vec<usize> = std::iter::once(0).chain(name.match_indices('/').map(|(i, _)| i)).collect();
    let mut budget = 50_000usize;
    for missing in [short, short + 4] {
        if missing == 0 {
            continue;
        }
        let mut pick = vec![0usize; missing];
        loop {
            if budget == 0 {
                return None;
            }
            budget -= 1;
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
                    return Some(k);
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
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(recover_merged(name, want).as_deref(), Some(key), "{name}");
        }
        assert_eq!(recover_merged("aGVsbG8=", hash_prefix(b"hello")), None, "nothing to put back");
        assert_eq!(recover_merged("L/w==", [0, 0]), None, "no candidate hashes there");
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
    }
}
