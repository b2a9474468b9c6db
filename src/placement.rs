//! Where a key lives: the file path on a volume and the volumes that hold its replicas.
//! Pure functions, byte-compatible with minikeyvalue so volumes can move between the two.

use crate::md5::Md5;
use base64::{engine::general_purpose::STANDARD, Engine};

/// A file name longer than this cannot be created on any common filesystem.
pub const MAX_NAME: usize = 255;

/// Length of the base64 file name of a key of `len` bytes.
pub fn name_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

/// Whether the key's file name fits in one path component.
pub fn key_fits(key: &[u8]) -> bool {
    name_len(key.len()) <= MAX_NAME
}

/// Why the volumes cannot keep the key's file apart from others, if they cannot: a base64
/// name ending in `/` (the last of a multiple of 3 bytes has its low 6 bits set, e.g. `/??`)
/// names a folder, not a file; one starting with `/` or holding `//` (bytes such as
/// `\xff\xff\xff`) lands, once nginx merges the slashes of its path, on the same file as
/// another key's.
pub fn key_unstorable(key: &[u8]) -> Option<&'static str> {
    if key.len().is_multiple_of(3) && key.last().is_some_and(|b| b & 0x3f == 0x3f) {
        return Some("this key's file name would end in '/' (its base64 does): add or drop a byte");
    }
    let name = STANDARD.encode(key);
    if name.starts_with('/') || name.contains("//") {
        return Some("this key's file name would hold '//' (its base64 does), which another key's file shares");
    }
    None
}

/// `/5d/41/aGVsbG8=` for `hello`: two md5 bytes as folders, then the key in base64.
pub fn key_path(key: &[u8]) -> String {
    let mut out = String::with_capacity(8 + name_len(key.len()));
    push_key_path(&mut out, key);
    out
}

/// Appends [`key_path`] to `out` (the GET path reuses one buffer).
pub fn push_key_path(out: &mut String, key: &[u8]) {
    let d = Md5::digest(key);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in &d[..2] {
        out.push('/');
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out.push('/');
    STANDARD.encode_string(key, out);
}

/// The inverse of the file name part of [`key_path`].
pub fn decode_name(name: &str) -> Option<Vec<u8>> {
    STANDARD.decode(name).ok()
}

/// md5(key ‖ volume) of every volume with its index, best first: sorted descending, stable
/// in the given order. `out` is a buffer the caller keeps (the GET path reuses one).
pub fn scores<S: AsRef<str>>(key: &[u8], volumes: &[S], out: &mut Vec<([u8; 16], usize)>) {
    out.clear();
    for (i, v) in volumes.iter().enumerate() {
        let mut h = Md5::new();
        h.update(key);
        h.update(v.as_ref().as_bytes());
        out.push((h.finalize(), i));
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
}

/// The subvolume of a replica whose volume scored `score`: its last four bytes, big-endian,
/// modulo the count.
pub fn subvolume(score: &[u8; 16], subvolumes: u32) -> u32 {
    u32::from_be_bytes([score[12], score[13], score[14], score[15]]) % subvolumes
}

/// The volumes (with `/svXX` when `subvolumes > 1`) that hold `key`, best first.
/// Each volume scores md5(key ‖ volume); see [`scores`].
pub fn key_volumes<S: AsRef<str>>(key: &[u8], volumes: &[S], replicas: usize, subvolumes: u32) -> Vec<String> {
    let mut scored = Vec::with_capacity(volumes.len());
    scores(key, volumes, &mut scored);
    scored
        .into_iter()
        .take(replicas)
        .map(|(score, i)| {
            let v = volumes[i].as_ref();
            if subvolumes <= 1 {
                v.to_string()
            } else {
                format!("{v}/sv{:02X}", subvolume(&score, subvolumes))
            }
        })
        .collect()
}

/// Folder, beside the `/xx/yy/` tree, where UNLINK leaves a marker per replica (minikeyvalue's
/// tools only look at two-hex-digit folders, so they ignore it).
pub const MARKER_DIR: &str = "/_unlinked";
/// What a marker holds (its presence is what counts).
pub const MARKER_BODY: &[u8] = b"unlinked\n";

/// Folder, beside the `/xx/yy/` tree, where a replacement value is written before it is
/// moved into place (`/_tmp/<id>`; outside the tree, so rebuild and minikeyvalue ignore it).
pub const TMP_DIR: &str = "/_tmp";

/// Folder, beside the `/xx/yy/` tree, where S3 multipart parts are kept until Complete or
/// Abort (`/_parts/<upload>.<part>.<id>`; no listing shows them, rebuild ignores them).
pub const PARTS_DIR: &str = "/_parts";

/// The order in which a read tries a record's `n` replicas: from `turn` (modulo) around the
/// first `spread` (`-replicas`: a record listing more is a key being moved, whose last ones
/// are about to be deleted, see `store::relocate`), then the rest. Callers rotate `turn`,
/// so the reads of a hot key divide among its replicas.
pub fn read_order(n: usize, spread: usize, turn: usize) -> impl Iterator<Item = usize> {
    let spread = spread.max(1).min(n);
    (0..spread).map(move |i| (turn + i) % spread).chain(spread..n)
}

/// The `(server, path)` to request for file `path` (a key path) of `replica` (`host:port[/svXX]`).
pub fn replica_target(replica: &str, path: &str) -> (String, String) {
    let server = server_of(replica);
    (server.to_string(), format!("{}{path}", &replica[server.len()..]))
}

/// `(server, path)` of every replica in `volumes`, for the file at `path`.
pub fn targets<S: AsRef<str>>(volumes: &[S], path: &str) -> Vec<(String, String)> {
    volumes.iter().map(|v| replica_target(v.as_ref(), path)).collect()
}

/// Whether `stored` (a record's replica list) is exactly where placement puts `key` now.
/// Allocation-free but for `scores`, a buffer the caller keeps: the GET path calls this.
pub fn is_balanced<'a, S: AsRef<str>>(
    key: &[u8],
    mut stored: impl Iterator<Item = &'a str>,
    volumes: &[S],
    replicas: usize,
    subvolumes: u32,
    scores: &mut Vec<([u8; 16], usize)>,
) -> bool {
    self::scores(key, volumes, scores);
    for (score, i) in scores.iter().take(replicas) {
        let Some(s) = stored.next() else { return false };
        let name = volumes[*i].as_ref();
        let Some(rest) = s.strip_prefix(name) else {
            return false;
        };
        let ok = if subvolumes <= 1 {
            rest.is_empty()
        } else {
            let sv = subvolume(score, subvolumes);
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            let want = [b'/', b's', b'v', HEX[(sv >> 4) as usize], HEX[(sv & 15) as usize]];
            rest.as_bytes() == want
        };
        if !ok {
            return false;
        }
    }
    stored.next().is_none()
}

/// The volume server (`host:port`) of a replica (`host:port/svXX`).
pub fn server_of(replica: &str) -> &str {
    replica.split('/').next().unwrap_or(replica)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_minikeyvalue() {
        assert_eq!(key_path(b"hello"), "/5d/41/aGVsbG8=");
        assert_eq!(key_path(b"helloworld"), "/fc/5e/aGVsbG93b3JsZA==");
        assert_eq!(decode_name("aGVsbG93b3JsZA==").unwrap(), b"helloworld");
    }

    #[test]
    fn volumes_match_minikeyvalue() {
        let vols = ["larry", "moe", "curly"];
        for (key, want) in [("hello", "larry"), ("helloworld", "curly"), ("world", "moe"), ("blah", "curly")] {
            let got = key_volumes(key.as_bytes(), &vols, 1, 3);
            assert_eq!(got.len(), 1);
            assert_eq!(server_of(&got[0]), want, "key {key}");
            assert!(got[0].starts_with(&format!("{want}/sv0")), "{got:?}");
        }
    }

    #[test]
    fn replicas_are_distinct_and_stable() {
        let vols = ["a:1", "b:2", "c:3", "d:4"];
        let all = key_volumes(b"k", &vols, 4, 1);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert_eq!(key_volumes(b"k", &vols, 2, 1), all[..2].to_vec());
        // removing a volume the key does not use leaves its placement alone
        let unused = all[3].clone();
        let rest: Vec<&str> = vols.iter().copied().filter(|v| *v != unused).collect();
        assert_eq!(key_volumes(b"k", &rest, 3, 1), all[..3].to_vec());
    }

    #[test]
    fn balance_matches_placement() {
        let vols = ["a:1", "b:2", "c:3", "d:4"];
        let mut scores = vec![];
        for sv in [1, 10] {
            let want = key_volumes(b"/k", &vols, 3, sv);
            assert!(is_balanced(b"/k", want.iter().map(|s| s.as_str()), &vols, 3, sv, &mut scores));
            let mut swapped = want.clone();
            swapped.swap(0, 1);
            assert!(!is_balanced(b"/k", swapped.iter().map(|s| s.as_str()), &vols, 3, sv, &mut scores));
            assert!(!is_balanced(b"/k", want[..2].iter().map(|s| s.as_str()), &vols, 3, sv, &mut scores));
        }
        assert_eq!(replica_target("h:1/sv0A", "/ab/cd/x"), ("h:1".to_string(), "/sv0A/ab/cd/x".to_string()));
        assert_eq!(replica_target("h:1", "/ab/cd/x"), ("h:1".to_string(), "/ab/cd/x".to_string()));
    }

    #[test]
    fn names_ending_in_a_slash_are_not_storable() {
        assert!(key_path(b"/??").ends_with('/'));
        assert!(key_unstorable(b"/??").is_some());
        for key in [&b"/a"[..], b"/ab", b"/abc", b"/?", b"/???"] {
            assert_eq!(key_unstorable(key).is_none(), !key_path(key).ends_with('/'), "{key:?}");
        }
    }

    #[test]
    fn names_with_merged_slashes_are_not_storable() {
        // "////" and a leading "/" in the base64 name
        for key in [&b"/\xff\xff\xff"[..], b"\xfc\x00/x", b"/k\xff\xff\xfex"] {
            let name = STANDARD.encode(key);
            assert!(name.starts_with('/') || name.contains("//"), "{name}");
            assert!(key_unstorable(key).is_some(), "{key:?}");
        }
        // one slash inside a name is fine: a nested folder
        let one = b"/a\xff\xe0";
        assert!(STANDARD.encode(one).contains('/') && !STANDARD.encode(one).contains("//"));
        assert!(key_unstorable(one).is_none());
    }

    #[test]
    fn name_length_limit() {
        assert_eq!(name_len(5), 8);
        assert!(key_fits(&[b'x'; 189]));
        assert!(!key_fits(&[b'x'; 190]));
        assert_eq!(key_path(&[b'x'; 189]).rsplit('/').next().unwrap().len(), 252);
    }
}
