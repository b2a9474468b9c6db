//! The index record of one key: where its replicas are, its size and MD5.
//! A versioned byte encoding with a CRC, so a damaged value is detected, never misread.

use std::fmt;

const VERSION: u8 = 1;
const HAS_MD5: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    /// Replica volumes in placement order, each `host:port` or `host:port/svXX`.
    pub volumes: Vec<String>,
    pub size: u64,
    pub md5: Option<[u8; 16]>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt(&'static str);

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
    volumes: &'a [u8],
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.volumes.iter().map(|v| v.len() + 1).sum::<usize>());
        out.push(VERSION);
        out.push(if self.md5.is_some() { HAS_MD5 } else { 0 });
        out.extend_from_slice(&self.size.to_le_bytes());
        if let Some(m) = &self.md5 {
            out.extend_from_slice(m);
        }
        out.push(self.volumes.len() as u8);
        for v in &self.volumes {
            // volume names are host:port[/svXX]; config validation keeps them under 256 bytes
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

impl<'a> RecordRef<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<RecordRef<'a>, Corrupt> {
        if bytes.len() < 15 {
            return Err(Corrupt("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(Corrupt("checksum mismatch"));
        }
        if body[0] != VERSION {
            return Err(Corrupt("unknown version"));
        }
        let flags = body[1];
        let size = u64::from_le_bytes(body[2..10].try_into().map_err(|_| Corrupt("size"))?);
        let mut rest = &body[10..];
        let md5 = if flags & HAS_MD5 != 0 {
            let (m, r) = rest.split_at_checked(16).ok_or(Corrupt("md5"))?;
            rest = r;
            Some(<&[u8; 16]>::try_from(m).map_err(|_| Corrupt("md5"))?)
        } else {
            None
        };
        let (&n, vols) = rest.split_first().ok_or(Corrupt("volume count"))?;
        // validate the list once so iteration can trust it
        let mut p = vols;
        for _ in 0..n {
            let (&len, r) = p.split_first().ok_or(Corrupt("volume list"))?;
            let (name, r) = r.split_at_checked(len as usize).ok_or(Corrupt("volume list"))?;
            std::str::from_utf8(name).map_err(|_| Corrupt("volume name"))?;
            p = r;
        }
        if !p.is_empty() {
            return Err(Corrupt("trailing bytes"));
        }
        Ok(RecordRef { size, md5, volumes: vols })
    }

    pub fn volumes(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut p = self.volumes;
        std::iter::from_fn(move || {
            let (&len, r) = p.split_first()?;
            let (name, r) = r.split_at(len as usize);
            p = r;
            // validated in parse
            std::str::from_utf8(name).ok()
        })
    }

    pub fn to_owned(&self) -> Record {
        Record { volumes: self.volumes().map(str::to_string).collect(), size: self.size, md5: self.md5.copied() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Record, Corrupt> {
        RecordRef::parse(bytes).map(|r| r.to_owned())
    }

    #[test]
    fn round_trip() {
        let r = Record { volumes: vec!["a:1/sv01".into(), "b:2/sv0A".into()], size: 12345, md5: Some([7; 16]) };
        assert_eq!(decode(&r.encode()).unwrap(), r);
        let r2 = Record { volumes: vec!["x:9".into()], size: 0, md5: None };
        assert_eq!(decode(&r2.encode()).unwrap(), r2);
        let v = r.encode();
        let view = RecordRef::parse(&v).unwrap();
        assert_eq!(view.volumes().collect::<Vec<_>>(), vec!["a:1/sv01", "b:2/sv0A"]);
    }

    #[test]
    fn damage_is_detected() {
        let r = Record { volumes: vec!["a:1".into()], size: 5, md5: None };
        let mut v = r.encode();
        v[3] ^= 1;
        assert_eq!(decode(&v), Err(Corrupt("checksum mismatch")));
        assert!(decode(&[]).is_err());
        assert!(decode(&v[..v.len() - 1]).is_err());
    }
}
