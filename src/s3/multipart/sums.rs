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

/// What the whole object must have, and how its value may be read: of every byte
/// (`FULL_OBJECT`) or of the parts' checksums (`COMPOSITE`). A value written `<b64>-<N>` is
/// composite; one without says it by `x-amz-checksum-type`, or, with none, may be either:
/// minio-go sends a composite one bare, as S3 accepts when the upload was created so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Whole {
    want: Digest,
    full: bool,
    composite: bool,
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
        let full = whole.filter(|w| w.full).map(|w| Hasher::new(w.want.algorithm()));
        Ok(Sums { listed, whole, full, part: None, composite: Vec::new() })
    }

    /// The algorithm of a composite checksum, when one may be asked.
    fn composite_alg(&self) -> Option<Algorithm> {
        self.whole.filter(|w| w.composite).map(|w| w.want.algorithm())
    }

    /// Part `i` starts.
    pub fn start(&mut self, i: usize) {
        let mut algs: Vec<Algorithm> =
            self.listed.get(i).copied().flatten().map(|d| d.algorithm()).into_iter().collect();
        if let Some(alg) = self.composite_alg() {
            if !algs.contains(&alg) {
                algs.push(alg);
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
        if let Some(g) = self.composite_alg().and_then(find) {
            self.composite.extend_from_slice(g.as_bytes());
        }
        Ok(())
    }

    /// Every part streamed: the whole object's checksum must match (`400 BadDigest`), read
    /// in either form it may be in.
    pub fn finish(&mut self) -> Result<(), S3Error> {
        let Some(w) = self.whole else { return Ok(()) };
        let full = self.full.take().map(Hasher::finish);
        let composite = w.composite.then(|| {
            let mut h = Hasher::new(w.want.algorithm());
            h.update(&self.composite);
            h.finish()
        });
        if full == Some(w.want) || composite == Some(w.want) {
            return Ok(());
        }
        Err(w.want.algorithm().mismatch())
    }
}

/// The whole object's checksum header, if sent: `<base64>` of all the bytes, or
/// `<base64>-<N>` of the parts' checksums, N the number of parts listed (another N is
/// `BadDigest`: it cannot match).
fn whole(headers: &Headers, parts: usize) -> Result<Option<Whole>, S3Error> {
    let kind = headers.get("x-amz-checksum-type").map(|t| t.trim_ascii().to_ascii_uppercase());
    let (full, composite) = match kind.as_deref() {
        Some(b"FULL_OBJECT") => (true, false),
        Some(b"COMPOSITE") => (false, true),
        _ => (true, true),
    };
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
                let want = Digest::from_base64(alg, &value[..dash])?;
                match n {
                    Some(n) if n == parts => Whole { want, full: false, composite: true },
                    Some(_) => return Err(alg.mismatch()),
                    None => return Err(alg.malformed()),
                }
            }
            None => Whole { want: Digest::from_base64(alg, value)?, full, composite },
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
        // bare, as minio-go sends it: either form, unless the type says which
        assert_eq!(run(&[(alg.header(), &whole)], vec![None, None], &[a, b]), Ok(()));
        let typed = |t: &str, v: &str| run(&[(alg.header(), v), ("x-amz-checksum-type", t)], vec![None, None], &[a, b]);
        assert_eq!(typed("COMPOSITE", &whole), Ok(()));
        assert_eq!(typed("FULL_OBJECT", &whole), Err(alg.mismatch()));
        assert_eq!(typed("COMPOSITE", &full), Err(alg.mismatch()));
        assert_eq!(typed("full_object", &full), Ok(()));
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
