//! What the index keeps of an upload: the upload's and each part's record, their byte
//! encodings, and the keys they live under in the `multipart` family.

use super::*;

/// An upload: the native key it completes into, when it started, what S3 keeps with it.
pub(super) struct Upload {
    pub(super) key: Vec<u8>,
    pub(super) created_ms: u64,
    pub(super) stored: Vec<u8>,
}

impl Upload {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&(self.stored.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.stored);
        out
    }

    pub(super) fn decode(v: &[u8]) -> Option<Upload> {
        let mut r = Cursor(v);
        (r.take(1)? == [1]).then_some(())?;
        let n = r.u16()? as usize;
        let key = r.take(n)?.to_vec();
        let created_ms = r.u64()?;
        let n = r.u16()? as usize;
        let stored = r.take(n)?.to_vec();
        Some(Upload { key, created_ms, stored })
    }
}

/// One part: its bytes, MD5 (its ETag), CRC32, time, and where its file is.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) size: u64,
    pub(super) md5: [u8; 16],
    /// Of the bytes as they came in: Complete checks each replica it reads against it (a
    /// disk's rot must not become the object) for a twentieth of what hashing it again with
    /// MD5 costs. None for a part recorded before it was kept (version 1): checked against
    /// its MD5. (A master older than version 2 reads no part recorded so: no downgrade while
    /// S3 uploads are in progress.)
    pub(super) crc32: Option<u32>,
    pub(super) mtime_ms: u64,
    pub(super) file: String,
    pub(super) replicas: Vec<String>,
}

impl Part {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = vec![if self.crc32.is_some() { 2u8 } else { 1 }];
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.md5);
        out.extend_from_slice(&self.mtime_ms.to_le_bytes());
        out.push(self.file.len() as u8);
        out.extend_from_slice(self.file.as_bytes());
        out.push(self.replicas.len() as u8);
        for r in &self.replicas {
            out.push(r.len() as u8);
            out.extend_from_slice(r.as_bytes());
        }
        if let Some(crc) = self.crc32 {
            out.extend_from_slice(&crc.to_le_bytes());
        }
        out
    }

    pub(super) fn decode(v: &[u8]) -> Option<Part> {
        let mut r = Cursor(v);
        let version = r.take(1)?[0];
        (version == 1 || version == 2).then_some(())?;
        let size = r.u64()?;
        let md5 = r.take(16)?.try_into().ok()?;
        let mtime_ms = r.u64()?;
        let n = r.take(1)?[0] as usize;
        let file = String::from_utf8(r.take(n)?.to_vec()).ok()?;
        let count = r.take(1)?[0] as usize;
        let mut replicas = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.take(1)?[0] as usize;
            replicas.push(String::from_utf8(r.take(n)?.to_vec()).ok()?);
        }
        let crc32 = match version {
            2 => Some(u32::from_le_bytes(r.take(4)?.try_into().ok()?)),
            _ => None,
        };
        Some(Part { size, md5, crc32, mtime_ms, file, replicas })
    }

    pub(super) fn etag(&self) -> String {
        self.md5.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(super) fn path(&self) -> String {
        format!("{PARTS_DIR}/{}", self.file)
    }
}

pub(super) struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

pub(super) fn upload_key(id: &str) -> Vec<u8> {
    format!("u/{id}").into_bytes()
}

pub(super) fn parts_prefix(id: &str) -> Vec<u8> {
    format!("p/{id}/").into_bytes()
}

/// A part of an ended upload whose files could not all be deleted yet ([`sweep`]), by its
/// file name (unique to each upload of a part).
pub(super) fn leftover_key(p: &Part) -> Vec<u8> {
    format!("g/{}", p.file).into_bytes()
}

/// A part whose files are being written, named by no part record yet (`w/<file>`): a crash
/// before the record leaves this note, which the next start hands to [`sweep`]
/// ([`adopt_cut_parts`]); without it the files stayed on the volumes for good.
pub(super) fn writing_key(p: &Part) -> Vec<u8> {
    format!("w/{}", p.file).into_bytes()
}

pub(super) fn part_key(id: &str, n: u32) -> Vec<u8> {
    let mut k = parts_prefix(id);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The lock name of an upload (or of one of its parts): outside the key space, which
/// starts with `/`.
pub(super) fn lock_name(id: &str, part: Option<u32>) -> Vec<u8> {
    match part {
        Some(n) => format!("\0mp/{id}/{n}").into_bytes(),
        None => format!("\0mp/{id}").into_bytes(),
    }
}
