//! The checksums a CompleteMultipartUpload asks of the object it assembles, checked as the
//! parts stream by (Complete reads every byte anyway, so this costs a hash, no extra read):
//! each part's `<ChecksumCRC32>` (…) from the XML, and the whole object's
//! `x-amz-checksum-*` header: of all its bytes (`FULL_OBJECT`), or of the parts' checksums
//! (`COMPOSITE`, written `<base64>-<parts>`). S3 refuses a Complete whose checksums do not
//! match; so does mkv, before anything is committed (the upload stays, as after any failed
//! Complete). A Complete that sends none is not checked.

use super::super::checksum::{Algorithm, Digest, Hasher};
use super::super::error::S3Error;
use super::super::request::Headers;

/// What the whole object must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whole {
    /// Of every byte.
    Full(Digest),
    /// Of the parts' binary checksums in order, over this many parts.
    Composite(Digest, usize),
}

pub struct Sums {
    /// Per part, in the order streamed: the checksum the XML gave it.
    listed: Vec<Option<Digest>>,
    whole: Option<Whole>,
    full: Option<Hasher>,
    /// The part being streamed: its index and a hasher per algorithm it needs.
    part: Option<(usize, Vec<Hasher>)>,
    /// The parts' checksums so far, for a composite one.
    composite: Vec<u8>,
}

impl Sums {
    /// `listed` are the chosen parts' XML checksums, in order.
    pub fn new(headers: &Headers, listed: Vec<Option<Digest>>) -> Result<Sums, S3Error> {
        let whole = whole(headers, listed.len())?;
        let full = match whole {
            Some(Whole::Full(d)) => Some(Hasher::new(d.algorithm())),
            _ => None,
        };
        Ok(Sums { listed, whole, full, part: None, composite: Vec::new() })
    }

    /// Part `i` starts.
    pub fn start(&mut self, i: usize) {
        let mut algs: Vec<Algorithm> =
            self.listed.get(i).copied().flatten().map(|d| d.algorithm()).into_iter().collect();
        if let Some(Whole::Composite(d, _)) = self.whole {
            if !algs.contains(&d.algorithm()) {
                algs.push(d.algorithm());
            }
        }
        self.part = Some((i, algs.into_iter().map(Hasher::new).collect()));
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.full {
            h.update(data);
        }
        if let Some((_, hs)) = &mut self.part {
            hs.iter_mut().for_each(|h| h.update(data));
        }
    }

    /// The part started last ended: its listed checksum must match (`InvalidPart`, as when
    /// its ETag does not).
    pub fn end(&mut self) -> Result<(), S3Error> {
        let Some((i, hs)) = self.part.take() else { return Ok(()) };
        let got: Vec<Digest> = hs.into_iter().map(Hasher::finish).collect();
        let find = |alg: Algorithm| got.iter().find(|d| d.algorithm() == alg);
        if let Some(want) = self.listed.get(i).copied().flatten() {
            if find(want.algorithm()) != Some(&want) {
                return Err(S3Error::InvalidPart);
            }
        }
        if let Some(Whole::Composite(d, _)) = self.whole {
            if let Some(g) = find(d.algorithm()) {
                self.composite.extend_from_slice(g.as_bytes());
            }
        }
        Ok(())
    }

    /// Every part streamed: the whole object's checksum must match (`400 BadDigest`).
    pub fn finish(&mut self) -> Result<(), S3Error> {
        let got = match (self.whole, self.full.take()) {
            (Some(Whole::Full(_)), Some(h)) => h.finish(),
            (Some(Whole::Composite(d, _)), _) => {
                let mut h = Hasher::new(d.algorithm());
                h.update(&self.composite);
                h.finish()
            }
            _ => return Ok(()),
        };
        match self.whole {
            Some(Whole::Full(want) | Whole::Composite(want, _)) if want != got => Err(want.algorithm().mismatch()),
            _ => Ok(()),
        }
    }
}

/// The whole object's checksum header, if sent: `<base64>` of all the bytes, or
/// `<base64>-<N>` of the parts' checksums, N the number of parts listed (another N is
/// `BadDigest`: it cannot match).
fn whole(headers: &Headers, parts: usize) -> Result<Option<Whole>, S3Error> {
    let mut found = None;
    for (name, value) in headers.iter() {
        let Some(alg) = Algorithm::from_header(name).filter(|a| *a != Algorithm::Md5) else { continue };
        if found.is_some() {
            return Err(S3Error::InvalidRequest(
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
            ));
        }
        let value = value.trim_ascii();
        found = Some(match value.iter().rposition(|&b| b == b'-') {
            Some(dash) => {
                let n = std::str::from_utf8(&value[dash + 1..]).ok().and_then(|n| n.parse::<usize>().ok());
                let d = Digest::from_base64(alg, &value[..dash])?;
                match n {
                    Some(n) if n == parts => Whole::Composite(d, n),
                    Some(_) => return Err(alg.mismatch()),
                    None => return Err(alg.malformed()),
                }
            }
            None => Whole::Full(Digest::from_base64(alg, value)?),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(alg: Algorithm, pieces: &[&[u8]]) -> Digest {
        let mut h = Hasher::new(alg);
        pieces.iter().for_each(|p| h.update(p));
        h.finish()
    }

    /// Streams `parts` through a `Sums` made from `headers` and `listed`.
    fn run(headers: &[(&str, &str)], listed: Vec<Option<Digest>>, parts: &[&[u8]]) -> Result<(), S3Error> {
        let h: Vec<httparse::Header> =
            headers.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect();
        let mut s = Sums::new(&Headers(&h), listed)?;
        for (i, p) in parts.iter().enumerate() {
            s.start(i);
            for piece in p.chunks(3) {
                s.update(piece);
            }
            s.end()?;
        }
        s.finish()
    }

    #[test]
    fn full_object_checksums_are_of_every_byte() {
        let (a, b): (&[u8], &[u8]) = (b"first part ", b"second");
        for alg in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme, Algorithm::Sha256] {
            let right = digest(alg, &[a, b]).to_base64();
            assert_eq!(run(&[(alg.header(), &right)], vec![None, None], &[a, b]), Ok(()), "{alg:?}");
            let wrong = digest(alg, &[b, a]).to_base64();
            assert_eq!(run(&[(alg.header(), &wrong)], vec![None, None], &[a, b]), Err(alg.mismatch()), "{alg:?}");
        }
        assert_eq!(run(&[], vec![None, None], &[a, b]), Ok(()));
    }

    #[test]
    fn composite_checksums_are_of_the_parts_checksums() {
        let (a, b): (&[u8], &[u8]) = (b"first part ", b"second");
        let alg = Algorithm::Crc32;
        let (da, db) = (digest(alg, &[a]), digest(alg, &[b]));
        let whole = digest(alg, &[da.as_bytes(), db.as_bytes()]).to_base64();
        let listed = vec![Some(da), Some(db)];
        assert_eq!(run(&[(alg.header(), &format!("{whole}-2"))], listed.clone(), &[a, b]), Ok(()));
        // the parts' checksums need not be listed
        assert_eq!(run(&[(alg.header(), &format!("{whole}-2"))], vec![None, None], &[a, b]), Ok(()));
        assert_eq!(run(&[(alg.header(), &format!("{whole}-3"))], listed.clone(), &[a, b]), Err(alg.mismatch()));
        assert_eq!(run(&[(alg.header(), &format!("{whole}-2"))], listed, &[b, a]), Err(S3Error::InvalidPart));
        let full = digest(alg, &[a, b]).to_base64();
        assert_eq!(run(&[(alg.header(), &format!("{full}-2"))], vec![None, None], &[a, b]), Err(alg.mismatch()));
        assert!(run(&[(alg.header(), "AAAA-2")], vec![None, None], &[a, b]).is_err(), "not a CRC32's base64");
        assert!(run(&[(alg.header(), "AAAAAA==-x")], vec![None, None], &[a, b]).is_err());
    }

    #[test]
    fn a_listed_part_checksum_must_be_its_bytes() {
        let (a, b): (&[u8], &[u8]) = (b"first part ", b"second");
        let alg = Algorithm::Crc32c;
        assert_eq!(run(&[], vec![Some(digest(alg, &[a])), None], &[a, b]), Ok(()));
        assert_eq!(run(&[], vec![None, Some(digest(alg, &[a]))], &[a, b]), Err(S3Error::InvalidPart));
        // another algorithm per part than the whole object's
        let full = digest(Algorithm::Crc32, &[a, b]).to_base64();
        let listed = vec![Some(digest(Algorithm::Sha1, &[a])), Some(digest(alg, &[b]))];
        assert_eq!(run(&[(Algorithm::Crc32.header(), &full)], listed, &[a, b]), Ok(()));
    }
}
