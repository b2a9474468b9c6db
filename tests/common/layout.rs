//! Where the SPEC says a key lives, computed independently of mkv's own code (md-5 and
//! base64 only), so tests can check the files on each volume.

use base64::Engine;
use md5::{Digest, Md5};

use super::{Cluster, Volume};

pub fn md5(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `hello` → `/5d/41/aGVsbG8=`
pub fn key_path(key: &str) -> String {
    key_path_of(key.as_bytes())
}

/// [`key_path`] of a key that need not be UTF-8.
pub fn key_path_of(key: &[u8]) -> String {
    let h = md5(key);
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!("/{:02x}/{:02x}/{b64}", h[0], h[1])
}

/// The volume list and flags a master was started with, and what they imply for a key.
pub struct Layout {
    pub volumes: Vec<String>,
    pub replicas: usize,
    pub subvolumes: u32,
}

impl Layout {
    pub fn of(c: &Cluster, replicas: usize, subvolumes: u32) -> Layout {
        Layout { volumes: c.volumes.iter().map(Volume::addr).collect(), replicas, subvolumes }
    }

    /// Replica volumes in placement order, `host:port` or `host:port/svXX`.
    pub fn replicas(&self, key: &str) -> Vec<String> {
        self.replicas_of(key.as_bytes())
    }

    /// [`Layout::replicas`] of a key that need not be UTF-8.
    pub fn replicas_of(&self, key: &[u8]) -> Vec<String> {
        let mut scored: Vec<([u8; 16], &String)> =
            self.volumes.iter().map(|v| (md5(&[key, v.as_bytes()].concat()), v)).collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0)); // stable: ties keep the given order
        scored
            .into_iter()
            .take(self.replicas)
            .map(|(score, v)| match self.subvolumes {
                1 => v.clone(),
                n => format!("{v}/sv{:02X}", u32::from_be_bytes(score[12..16].try_into().unwrap()) % n),
            })
            .collect()
    }

    /// (index of the volume, file path under its folder) for every replica of `key`.
    pub fn files(&self, key: &str) -> Vec<(usize, String)> {
        self.files_of(key.as_bytes())
    }

    /// [`Layout::files`] of a key that need not be UTF-8.
    pub fn files_of(&self, key: &[u8]) -> Vec<(usize, String)> {
        self.replicas_of(key)
            .iter()
            .map(|r| {
                let (addr, sv) = r.split_once('/').map_or((r.as_str(), None), |(a, sv)| (a, Some(sv)));
                let i = self.volumes.iter().position(|v| v == addr).unwrap();
                let path = key_path_of(key);
                (i, sv.map_or(path[1..].to_string(), |sv| format!("{sv}{path}")))
            })
            .collect()
    }

    /// Each volume holds exactly the replicas of `keys` the placement gives it, nothing else.
    pub fn assert_on_disk(&self, c: &Cluster, keys: &[&str]) {
        self.assert_files(&c.volumes, keys, &[]);
    }

    /// Each of `volumes` (placement's list must be a subset of them, by address) holds exactly
    /// the replicas of `live` and `unlinked` keys, plus an UNLINK marker beside each replica
    /// of an `unlinked` key, and nothing else.
    pub fn assert_files(&self, volumes: &[Volume], live: &[&str], unlinked: &[&str]) {
        for volume in volumes {
            let i = self.volumes.iter().position(|v| *v == volume.addr());
            let mut expected: Vec<String> = Vec::new();
            for k in live.iter().chain(unlinked) {
                let marker = unlinked.contains(k);
                for (v, p) in self.files(k) {
                    if Some(v) != i {
                        continue;
                    }
                    if marker {
                        expected.push(marker_of(&p));
                    }
                    expected.push(p);
                }
            }
            expected.sort();
            assert_eq!(volume.files(), expected, "files on volume {}", volume.addr());
        }
    }
}

/// `sv01/5d/41/x` → `sv01/_unlinked/5d/41/x`; `5d/41/x` → `_unlinked/5d/41/x`.
pub fn marker_of(file: &str) -> String {
    match file.split_once('/') {
        Some((sv, rest)) if sv.starts_with("sv") => format!("{sv}/_unlinked/{rest}"),
        _ => format!("_unlinked/{file}"),
    }
}
