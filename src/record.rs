//! The index record of one key: where its replicas are, its size, MD5 and time, and what a
//! front end keeps with it (S3 headers); plus the record of a replacement being written.
//! Versioned byte encodings with a CRC, so a damaged value is detected, never misread.

use std::fmt;

/// Version 1: volumes, size, MD5. Version 2 adds the time and front-end metadata.
const V1: u8 = 1;
const V2: u8 = 2;
const HAS_MD5: u8 = 1;
const HAS_META: u8 = 2;
/// Largest front-end metadata a record holds (S3 keeps ≤ 2 KiB of user metadata).
pub const MAX_META: usize = 8 << 10;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    /// Replica volumes in placement order, each `host:port` or `host:port/svXX`.
    pub volumes: Vec<String>,
    pub size: u64,
    pub md5: Option<[u8; 16]>,
    /// When the value was written, in milliseconds since the Unix epoch (0: unknown, as in
    /// records of version 1).
    pub mtime: u64,
    /// What a front end keeps beside the value (S3: content type, user metadata, multipart
    /// ETag), opaque here; at most [`MAX_META`] bytes.
    pub meta: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt(pub &'static str);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt index record: {}", self.0)
    }
}

/// A decoded view borrowing the stored bytes: the GET path reads records without allocating.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub size: u64,
    pub md5: Option<&'a [u8; 16]>,
    pub mtime: u64,
    pub meta: &'a [u8],
    volumes: &'a [u8],
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Record {
    /// A record that names only where a key's files may be, nothing of a value: a PUT's
    /// first step (recorded before its replicas are written), or a DELETE's (recorded before
    /// its files go). Left by one that failed half way, it keeps the key listed under
    /// `?unlinked` for a DELETE to finish; its files may be partly there, none is missing.
    pub fn placeholder(volumes: Vec<String>) -> Record {
        Record { volumes, ..Record::default() }
    }

    /// Whether this is a [`Record::placeholder`] (a value, even an empty S3 one, has a time).
    pub fn is_placeholder(&self) -> bool {
        placeholder_fields(self.size, self.md5.is_some(), self.mtime)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(40 + self.meta.len() + self.volumes.iter().map(|v| v.len() + 1).sum::<usize>());
        out.push(V2);
        let meta = !self.meta.is_empty();
        out.push(if self.md5.is_some() { HAS_MD5 } else { 0 } | if meta { HAS_META } else { 0 });
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        if let Some(m) = &self.md5 {
            out.extend_from_slice(m);
        }
        encode_volumes(&mut out, &self.volumes);
        if meta {
            // callers keep it under MAX_META (a u16 holds it)
            let n = self.meta.len().min(MAX_META);
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.extend_from_slice(&self.meta[..n]);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

fn encode_volumes(out: &mut Vec<u8>, volumes: &[String]) {
    out.push(volumes.len() as u8);
    for v in volumes {
        // volume names are host:port[/svXX]; config validation keeps them under 256 bytes
        out.push(v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
}

/// Checks the CRC and splits it off.
fn checked(bytes: &[u8]) -> Result<&[u8], Corrupt> {
    if bytes.len() < 7 {
        return Err(Corrupt("too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(Corrupt("checksum mismatch"));
    }
    Ok(body)
}

fn take<'a>(rest: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], Corrupt> {
    let (a, b) = rest.split_at_checked(n).ok_or(Corrupt(what))?;
    *rest = b;
    Ok(a)
}

fn take_u64(rest: &mut &[u8], what: &'static str) -> Result<u64, Corrupt> {
    Ok(u64::from_le_bytes(take(rest, 8, what)?.try_into().map_err(|_| Corrupt(what))?))
}

/// A volume list, validated once so iteration can trust it; returns its bytes.
fn take_volumes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], Corrupt> {
    let (&n, vols) = rest.split_first().ok_or(Corrupt("volume count"))?;
    let mut p = vols;
    for _ in 0..n {
        let (&len, r) = p.split_first().ok_or(Corrupt("volume list"))?;
        let (name, r) = r.split_at_checked(len as usize).ok_or(Corrupt("volume list"))?;
        std::str::from_utf8(name).map_err(|_| Corrupt("volume name"))?;
        p = r;
    }
    let used = vols.len() - p.len();
    let list = &vols[..used];
    *rest = p;
    Ok(list)
}

fn volumes_iter(mut p: &[u8]) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        let (&len, r) = p.split_first()?;
        let (name, r) = r.split_at(len as usize);
        p = r;
        // validated when parsed
        std::str::from_utf8(name).ok()
    })
}

/// What marks a [`Record::placeholder`]: no size, no MD5, no time.
fn placeholder_fields(size: u64, has_md5: bool, mtime: u64) -> bool {
    size == 0 && !has_md5 && mtime == 0
}

impl<'a> RecordRef<'a> {
    /// [`Record::is_placeholder`], read from the stored bytes.
    pub fn is_placeholder(&self) -> bool {
        placeholder_fields(self.size, self.md5.is_some(), self.mtime)
    }

    pub fn parse(bytes: &'a [u8]) -> Result<RecordRef<'a>, Corrupt> {
        let body = checked(bytes)?;
        let (version, flags) = (body[0], body[1]);
        let mut rest = &body[2..];
        if version != V1 && version != V2 {
            return Err(Corrupt("unknown version"));
        }
        let size = take_u64(&mut rest, "size")?;
        let mtime = if version == V2 { take_u64(&mut rest, "time")? } else { 0 };
        let md5 = if flags & HAS_MD5 != 0 {
            Some(<&[u8; 16]>::try_from(take(&mut rest, 16, "md5")?).map_err(|_| Corrupt("md5"))?)
        } else {
            None
        };
        let volumes = take_volumes(&mut rest)?;
        let meta = if version == V2 && flags & HAS_META != 0 {
            let n = u16::from_le_bytes(take(&mut rest, 2, "meta")?.try_into().map_err(|_| Corrupt("meta"))?);
            take(&mut rest, n as usize, "meta")?
        } else {
            &[]
        };
        if !rest.is_empty() {
            return Err(Corrupt("trailing bytes"));
        }
        Ok(RecordRef { size, md5, mtime, meta, volumes })
    }

    pub fn volumes(&self) -> impl Iterator<Item = &'a str> + 'a {
        volumes_iter(self.volumes)
    }

    // named after what it makes, like `ToOwned`; the borrowed record is read, not consumed
    #[allow(clippy::wrong_self_convention)]
    pub fn to_owned(&self) -> Record {
        Record {
            volumes: self.volumes().map(str::to_string).collect(),
            size: self.size,
            md5: self.md5.copied(),
            mtime: self.mtime,
            meta: self.meta.to_vec(),
        }
    }
}

/// Where a replacement value of a key stands while it is written (column family `pending`).
/// The value is written to temporary files beside the final paths, so the key's current
/// value (live or unlinked) stays whole until every replica holds the new one; then each
/// temporary file is moved into place. After a crash, a `Writing` entry is rolled back
/// (its temporary files deleted) and a `Moving` one forward (the moves finished).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Name of the temporary files (`/_tmp/<id>` on each replica's volume folder).
    pub id: String,
    pub phase: Phase,
    /// The state the key takes when the replacement commits (live, or unlinked for a native
    /// PUT rolled forward after its client was told it failed).
    pub live: bool,
    /// The new value's record: its replicas are where the temporary files are.
    pub record: Record,
    /// Replicas of the value being replaced that the new one does not overwrite: deleted
    /// once it commits.
    pub old_only: Vec<String>,
    /// Volumes holding UNLINK markers of the value being replaced (deleted at commit).
    pub old_markers: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Temporary files are being written: nothing of the old value is touched yet.
    Writing,
    /// Every temporary file is whole; they are being moved into place.
    Moving,
}

const PENDING_V1: u8 = 1;

impl Pending {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![PENDING_V1, self.phase as u8, self.live as u8];
        out.push(self.id.len() as u8);
        out.extend_from_slice(self.id.as_bytes());
        encode_volumes(&mut out, &self.old_only);
        encode_volumes(&mut out, &self.old_markers);
        out.extend_from_slice(&self.record.encode());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Pending, Corrupt> {
        let body = checked(bytes)?;
        if body[0] != PENDING_V1 {
            return Err(Corrupt("unknown pending version"));
        }
        let phase = match body[1] {
            0 => Phase::Writing,
            1 => Phase::Moving,
            _ => return Err(Corrupt("pending phase")),
        };
        let live = body[2] != 0;
        let mut rest = &body[3..];
        let (&n, r) = rest.split_first().ok_or(Corrupt("pending id"))?;
        rest = r;
        let id = std::str::from_utf8(take(&mut rest, n as usize, "pending id")?).map_err(|_| Corrupt("pending id"))?;
        let old_only = volumes_iter(take_volumes(&mut rest)?).map(str::to_string).collect();
        let old_markers = volumes_iter(take_volumes(&mut rest)?).map(str::to_string).collect();
        let record = RecordRef::parse(rest)?.to_owned();
        Ok(Pending { id: id.to_string(), phase, live, record, old_only, old_markers })
    }
}

/// Of the values replicas were read to hold, the one more than half of them hold, and how
/// many: what is taken for the value when replicas disagree (`rebuild -verify`, a repair of a
/// record that keeps no MD5, `verify -deep` comparing such replicas). None when they split
/// with no majority (or none was read): nothing tells which is right.
pub fn majority<T: PartialEq + Copy>(all: &[T]) -> Option<(T, usize)> {
    let held = |v: &T| all.iter().filter(|w| *w == v).count();
    let (n, v) = all.iter().map(|v| (held(v), *v)).max_by_key(|(n, _)| *n)?;
    (2 * n > all.len()).then_some((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_most_replicas_hold() {
        let (a, b, c) = (([1; 16], 5), ([2; 16], 5), ([3; 16], 4));
        assert_eq!(majority(&[a]), Some((a, 1)));
        assert_eq!(majority(&[b, a, a]), Some((a, 2)));
        assert_eq!(majority(&[a, a]), Some((a, 2)));
        assert_eq!(majority(&[a, b]), None);
        assert_eq!(majority(&[a, b, c]), None);
        assert_eq!(majority::<([u8; 16], u64)>(&[]), None);
    }

    fn decode(bytes: &[u8]) -> Result<Record, Corrupt> {
        RecordRef::parse(bytes).map(|r| r.to_owned())
    }

    #[test]
    fn round_trip() {
        let r = Record {
            volumes: vec!["a:1/sv01".into(), "b:2/sv0A".into()],
            size: 12345,
            md5: Some([7; 16]),
            mtime: 1_700_000_000_123,
            meta: b"content-type: x".to_vec(),
        };
        assert_eq!(decode(&r.encode()).unwrap(), r);
        let r2 = Record { volumes: vec!["x:9".into()], size: 0, ..Record::default() };
        assert_eq!(decode(&r2.encode()).unwrap(), r2);
        let v = r.encode();
        let view = RecordRef::parse(&v).unwrap();
        assert_eq!(view.volumes().collect::<Vec<_>>(), vec!["a:1/sv01", "b:2/sv0A"]);
        assert_eq!(view.meta, b"content-type: x");
    }

    #[test]
    fn version_1_records_stay_readable() {
        // the bytes mkv wrote before records had a time: version 1, MD5 flag, size 5
        let mut v1 = vec![1u8, 1];
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(&[9; 16]);
        v1.extend_from_slice(&[1, 3]);
        v1.extend_from_slice(b"a:1");
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let r = decode(&v1).unwrap();
        assert_eq!(r, Record { volumes: vec!["a:1".into()], size: 5, md5: Some([9; 16]), mtime: 0, meta: vec![] });
    }

    #[test]
    fn damage_is_detected() {
        let r = Record { volumes: vec!["a:1".into()], size: 5, ..Record::default() };
        let mut v = r.encode();
        v[3] ^= 1;
        assert_eq!(decode(&v), Err(Corrupt("checksum mismatch")));
        assert!(decode(&[]).is_err());
        assert!(decode(&v[..v.len() - 1]).is_err());
    }

    #[test]
    fn pending_round_trip() {
        let p = Pending {
            id: "0123abcd".into(),
            phase: Phase::Moving,
            live: true,
            record: Record { volumes: vec!["a:1".into(), "b:2".into()], size: 9, mtime: 5, ..Record::default() },
            old_only: vec!["c:3".into()],
            old_markers: vec!["a:1".into(), "c:3".into()],
        };
        assert_eq!(Pending::decode(&p.encode()).unwrap(), p);
        let mut bad = p.encode();
        bad[4] ^= 0xff;
        assert!(Pending::decode(&bad).is_err());
    }
}
