//! What S3 keeps in an object's record beside the index's own fields (size, MD5, time): the
//! headers GET and HEAD answer with, and the ETag of a multipart object. Encoded into
//! `Record::meta`; a record with none (written natively) reads as no headers, MD5 ETag.

use crate::record::Record;

const VERSION: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// A multipart object's ETag (`<md5 of part md5s>-N`, unquoted); None: the MD5's hex.
    pub etag: Option<String>,
    /// Lower-case names, values as sent (see [`super::meta::Metadata`]).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Stored {
    pub fn encode(&self) -> Vec<u8> {
        if self.etag.is_none() && self.headers.is_empty() {
            return Vec::new();
        }
        let mut out = vec![VERSION];
        let etag = self.etag.as_deref().unwrap_or("");
        out.push(etag.len().min(255) as u8);
        out.extend_from_slice(&etag.as_bytes()[..etag.len().min(255)]);
        out.push(self.headers.len().min(255) as u8);
        for (name, value) in self.headers.iter().take(255) {
            // names and values were bounded by Metadata (2 KiB in all)
            out.push(name.len().min(255) as u8);
            out.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
            let n = value.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.extend_from_slice(&value[..n]);
        }
        out
    }

    /// The stored fields; bytes it cannot read give none (the record's CRC already vouched
    /// for them, so that is a newer version's, not damage).
    pub fn decode(meta: &[u8]) -> Stored {
        Self::try_decode(meta).unwrap_or_default()
    }

    fn try_decode(meta: &[u8]) -> Option<Stored> {
        let (&v, mut rest) = meta.split_first()?;
        if v != VERSION {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            let (a, b) = rest.split_at_checked(n)?;
            rest = b;
            Some(a)
        };
        let n = take(1)?[0] as usize;
        let etag = std::str::from_utf8(take(n)?).ok()?;
        let count = take(1)?[0] as usize;
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let n = take(1)?[0] as usize;
            let name = std::str::from_utf8(take(n)?).ok()?.to_string();
            let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            headers.push((name, take(len)?.to_vec()));
        }
        Some(Stored { etag: (!etag.is_empty()).then(|| etag.to_string()), headers })
    }
}

/// An object's ETag, unquoted: the multipart one, else the MD5's hex, else (a native value
/// written with `-md5sum=false`) one made of its time and size, stable while it is unchanged.
pub fn etag(rec: &Record, stored: &Stored) -> String {
    if let Some(e) = &stored.etag {
        return e.clone();
    }
    match &rec.md5 {
        Some(m) => m.iter().map(|b| format!("{b:02x}")).collect(),
        None => format!("{:x}-{:x}", rec.mtime, rec.size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_empty() {
        let s = Stored {
            etag: Some("0123abcd-3".into()),
            headers: vec![("content-type".into(), b"text/plain".to_vec()), ("x-amz-meta-a".into(), b"b".to_vec())],
        };
        assert_eq!(Stored::decode(&s.encode()), s);
        assert!(Stored::default().encode().is_empty());
        assert_eq!(Stored::decode(&[]), Stored::default());
        assert_eq!(Stored::decode(&[9, 9, 9]), Stored::default());
        let rec = Record { md5: Some([0xab; 16]), ..Record::default() };
        assert_eq!(etag(&rec, &Stored::default()), "ab".repeat(16));
        assert_eq!(etag(&rec, &s), "0123abcd-3");
    }
}
