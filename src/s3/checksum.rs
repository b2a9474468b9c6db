//! The checksums an S3 upload may carry (`x-amz-checksum-*`, `Content-MD5`), computed as
//! the bytes go by and compared with the value the client sent in a header or a trailer.
//!
//! [`Checksums::from_headers`] reads what the request promises; the body's decoded bytes go
//! through [`Checksums::update`] piece by piece; [`Checksums::finish`] compares, given the
//! trailers of an `aws-chunked` body. A mismatch is `400 BadDigest`: store nothing.

use base64::{engine::general_purpose::STANDARD, Engine};
use sha1::Digest as _;

use super::error::S3Error;
use super::request::Headers;
use crate::md5::Md5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
    Md5,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] =
        [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme, Algorithm::Sha1, Algorithm::Sha256, Algorithm::Md5];

    /// The header (or trailer) that carries it.
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
            Algorithm::Md5 => "content-md5",
        }
    }

    /// The element that carries it in a CompleteMultipartUpload `<Part>` (none for MD5: the
    /// part's ETag is its MD5).
    pub fn xml_name(self) -> Option<&'static str> {
        match self {
            Algorithm::Crc32 => Some("ChecksumCRC32"),
            Algorithm::Crc32c => Some("ChecksumCRC32C"),
            Algorithm::Crc64Nvme => Some("ChecksumCRC64NVME"),
            Algorithm::Sha1 => Some("ChecksumSHA1"),
            Algorithm::Sha256 => Some("ChecksumSHA256"),
            Algorithm::Md5 => None,
        }
    }

    pub fn from_header(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.header().eq_ignore_ascii_case(name))
    }

    /// Digest length in bytes.
    pub fn len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Md5 => 16,
        }
    }

    pub fn mismatch(self) -> S3Error {
        S3Error::BadDigest(match self {
            Algorithm::Crc32 => "The CRC32 you specified did not match the calculated checksum.",
            Algorithm::Crc32c => "The CRC32C you specified did not match the calculated checksum.",
            Algorithm::Crc64Nvme => "The CRC64NVME you specified did not match the calculated checksum.",
            Algorithm::Sha1 => "The SHA1 you specified did not match the calculated checksum.",
            Algorithm::Sha256 => "The SHA256 you specified did not match the calculated checksum.",
            Algorithm::Md5 => "The Content-MD5 you specified did not match what we received.",
        })
    }

    pub fn malformed(self) -> S3Error {
        match self {
            Algorithm::Md5 => S3Error::InvalidDigest,
            _ => S3Error::InvalidRequest(
                "The value of an x-amz-checksum header or trailer is not the base64 of a checksum.",
            ),
        }
    }
}

/// `x-amz-checksum-algorithm` (CreateMultipartUpload) and `x-amz-sdk-checksum-algorithm`
/// (the SDKs' note on a PutObject or UploadPart) name one of S3's checksums or nothing: a
/// name S3 does not know is `400 InvalidRequest`, as S3 answers, not silently no checksum.
/// So is a checksum header mkv does not compute (`x-amz-checksum-sha512`, S3's newer MD5
/// and XXHASH ones): ignored, a wrong value would be stored as a right one.
pub fn check_algorithm_names(headers: &Headers) -> Result<(), S3Error> {
    const KNOWN: [&[u8]; 5] = [b"CRC32", b"CRC32C", b"CRC64NVME", b"SHA1", b"SHA256"];
    /// `x-amz-checksum-*` headers that carry no checksum value.
    const NOT_VALUES: [&str; 3] = ["x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-checksum-mode"];
    const UNSUPPORTED: S3Error = S3Error::InvalidRequest(
        "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
    );
    for name in ["x-amz-checksum-algorithm", "x-amz-sdk-checksum-algorithm"] {
        let Some(v) = headers.get(name).map(<[u8]>::trim_ascii) else { continue };
        if !KNOWN.iter().any(|k| k.eq_ignore_ascii_case(v)) {
            return Err(UNSUPPORTED);
        }
    }
    let checksum_value = |name: &str| {
        name.get(..15).is_some_and(|p| p.eq_ignore_ascii_case("x-amz-checksum-"))
            && !NOT_VALUES.iter().any(|n| n.eq_ignore_ascii_case(name))
    };
    match headers.iter().any(|(name, _)| checksum_value(name) && Algorithm::from_header(name).is_none()) {
        true => Err(UNSUPPORTED),
        false => Ok(()),
    }
}

/// A finished checksum.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    alg: Algorithm,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.alg.header(), self.to_base64())
    }
}

impl Digest {
    fn new(alg: Algorithm, value: &[u8]) -> Digest {
        let mut bytes = [0u8; 32];
        bytes[..value.len()].copy_from_slice(value);
        Digest { alg, bytes }
    }

    /// The value of a header or trailer: the base64 of exactly the algorithm's digest length.
    pub fn from_base64(alg: Algorithm, value: &[u8]) -> Result<Digest, S3Error> {
        let raw = STANDARD.decode(value.trim_ascii()).map_err(|_| alg.malformed())?;
        if raw.len() != alg.len() {
            return Err(alg.malformed());
        }
        Ok(Digest::new(alg, &raw))
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.alg.len()]
    }

    /// As S3 writes it in a header: base64 of the big-endian digest.
    pub fn to_base64(self) -> String {
        STANDARD.encode(self.as_bytes())
    }
}

/// The ETag S3 gives an object made by CompleteMultipartUpload: the MD5 of the parts'
/// binary MD5s, in part order, then `-` and the number of parts (unquoted here).
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{}", part_md5s.len())
}

/// One running checksum.
#[derive(Clone)]
pub enum Hasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc64fast_nvme::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Md5(Md5),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            Algorithm::Crc32c => Hasher::Crc32c(0),
            Algorithm::Crc64Nvme => Hasher::Crc64Nvme(crc64fast_nvme::Digest::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Hasher::Crc64Nvme(h) => h.write(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Crc32(h) => Digest::new(Algorithm::Crc32, &h.finalize().to_be_bytes()),
            Hasher::Crc32c(c) => Digest::new(Algorithm::Crc32c, &c.to_be_bytes()),
            Hasher::Crc64Nvme(h) => Digest::new(Algorithm::Crc64Nvme, &h.sum64().to_be_bytes()),
            Hasher::Sha1(h) => Digest::new(Algorithm::Sha1, &h.finalize()),
            Hasher::Sha256(h) => Digest::new(Algorithm::Sha256, &h.finalize()),
            Hasher::Md5(h) => Digest::new(Algorithm::Md5, &h.finalize()),
        }
    }
}

/// The checksums one body must pass, running.
pub struct Checksums {
    /// Running when `Content-MD5` was sent or the caller wants the MD5 (the ETag).
    md5: Option<Md5>,
    content_md5: Option<Digest>,
    /// The one `x-amz-checksum-*`: its value from the header, or `None` when a trailer brings it.
    amz: Option<(Algorithm, Hasher, Option<Digest>)>,
}

/// What [`Checksums::finish`] verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    /// The body's MD5 (when asked for, or checked against `Content-MD5`).
    pub md5: Option<[u8; 16]>,
    /// The `x-amz-checksum-*` that matched, to echo in the answer as S3 does.
    pub checksum: Option<Digest>,
}

impl Checksums {
    /// Reads `Content-MD5`, an `x-amz-checksum-*` header and `x-amz-trailer`. S3 takes one
    /// `x-amz-checksum-*` per request, from a header or announced as a trailer.
    pub fn from_headers(headers: &Headers, want_md5: bool) -> Result<Checksums, S3Error> {
        const ONE: S3Error = S3Error::InvalidRequest(
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        );
        let content_md5 = headers.get("content-md5").map(|v| Digest::from_base64(Algorithm::Md5, v)).transpose()?;
        let mut amz: Option<(Algorithm, Hasher, Option<Digest>)> = None;
        for (name, value) in headers.iter() {
            match Algorithm::from_header(name) {
                Some(Algorithm::Md5) | None => continue,
                Some(alg) if amz.is_none() => {
                    amz = Some((alg, Hasher::new(alg), Some(Digest::from_base64(alg, value)?)))
                }
                Some(_) => return Err(ONE),
            }
        }
        if let Some(trailer) = headers.get("x-amz-trailer") {
            let name = std::str::from_utf8(trailer.trim_ascii()).unwrap_or("");
            match Algorithm::from_header(name) {
                Some(Algorithm::Md5) | None => {
                    return Err(S3Error::InvalidRequest("x-amz-trailer names no x-amz-checksum- trailer"))
                }
                Some(_) if amz.is_some() => return Err(ONE),
                Some(alg) => amz = Some((alg, Hasher::new(alg), None)),
            }
        }
        let md5 = (want_md5 || content_md5.is_some()).then(Md5::new);
        Ok(Checksums { md5, content_md5, amz })
    }

    /// The trailer the body must end with, if any.
    pub fn trailer(&self) -> Option<&'static str> {
        match self.amz {
            Some((alg, _, None)) => Some(alg.header()),
            _ => None,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
        if let Some((_, h, _)) = &mut self.amz {
            h.update(data);
        }
    }

    /// Compares every checksum with what the client sent; `trailers` are the body's
    /// trailing headers (lower-case names), empty for a plain body.
    pub fn finish(self, trailers: &[(String, String)]) -> Result<Sums, S3Error> {
        let md5 = self.md5.map(Md5::finalize);
        if let (Some(want), Some(got)) = (self.content_md5, md5) {
            if want.as_bytes() != got {
                return Err(Algorithm::Md5.mismatch());
            }
        }
        let mut sent: Option<Digest> = None;
        for (name, value) in trailers {
            let Some(alg) = Algorithm::from_header(name).filter(|a| *a != Algorithm::Md5) else { continue };
            match self.amz {
                Some((announced, _, None)) if announced == alg && sent.is_none() => {
                    sent = Some(Digest::from_base64(alg, value.as_bytes())?)
                }
                _ => return Err(S3Error::MalformedTrailer("a checksum trailer that x-amz-trailer did not announce")),
            }
        }
        let checksum = match self.amz {
            None => None,
            Some((_, h, expected)) => {
                let want = expected
                    .or(sent)
                    .ok_or(S3Error::MalformedTrailer("the checksum trailer x-amz-trailer announced is missing"))?;
                let got = h.finish();
                if got != want {
                    return Err(want.alg.mismatch());
                }
                Some(got)
            }
        };
        Ok(Sums { md5, checksum })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(alg: Algorithm, pieces: &[&[u8]]) -> Digest {
        let mut h = Hasher::new(alg);
        for p in pieces {
            h.update(p);
        }
        h.finish()
    }

    fn hex(d: &Digest) -> String {
        d.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_values() {
        let check = b"123456789";
        assert_eq!(hex(&digest(Algorithm::Crc32, &[check])), "cbf43926");
        assert_eq!(hex(&digest(Algorithm::Crc32c, &[check])), "e3069283");
        assert_eq!(hex(&digest(Algorithm::Crc64Nvme, &[check])), "ae8b14860a799888");
        assert_eq!(hex(&digest(Algorithm::Sha1, &[b"abc"])), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&digest(Algorithm::Sha256, &[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&digest(Algorithm::Md5, &[b"abc"])), "900150983cd24fb0d6963f7d28e17f72");
        // the empty body, as S3 answers it for an empty object
        assert_eq!(digest(Algorithm::Crc32, &[]).to_base64(), "AAAAAA==");
        assert_eq!(digest(Algorithm::Md5, &[]).to_base64(), "1B2M2Y8AsgTpgAmY7PhCfg==");
        // piece by piece is the same as whole, for every algorithm
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in Algorithm::ALL {
            let whole = digest(alg, &[&data]);
            let pieces: Vec<&[u8]> = data.chunks(37).collect();
            assert_eq!(digest(alg, &pieces), whole, "{alg:?}");
            assert_eq!(Digest::from_base64(alg, whole.to_base64().as_bytes()), Ok(whole));
        }
    }

    #[test]
    fn multipart_etags() {
        let parts = [Md5::digest(&[b'a'; 10]), Md5::digest(b"b")];
        assert_eq!(multipart_etag(&parts), "3192ca8a7eba2efb8c52f8e48729e5f1-2");
    }

    fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        list.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect()
    }

    fn run(headers: &[(&str, &str)], body: &[u8], trailers: &[(&str, &str)]) -> Result<Sums, S3Error> {
        let h = hdrs(headers);
        let mut c = Checksums::from_headers(&Headers(&h), false)?;
        for piece in body.chunks(3) {
            c.update(piece);
        }
        let t: Vec<(String, String)> = trailers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        c.finish(&t)
    }

    #[test]
    fn headers_and_trailers() {
        let body = b"hello world";
        let crc = digest(Algorithm::Crc32, &[body]).to_base64();
        let md5 = digest(Algorithm::Md5, &[body]).to_base64();
        let sums = run(&[("x-amz-checksum-crc32", &crc), ("Content-MD5", &md5)], body, &[]).unwrap();
        assert_eq!(sums.checksum.map(|d| d.to_base64()), Some(crc.clone()));
        assert_eq!(sums.md5, Some(Md5::digest(body)));
        assert_eq!(run(&[("x-amz-checksum-crc32", "AAAAAA==")], body, &[]).unwrap_err().code(), "BadDigest");
        assert_eq!(run(&[("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==")], body, &[]).unwrap_err().code(), "BadDigest");
        assert_eq!(run(&[("Content-MD5", "not base64!")], body, &[]).unwrap_err(), S3Error::InvalidDigest);
        assert_eq!(run(&[("Content-MD5", "AAAA")], body, &[]).unwrap_err(), S3Error::InvalidDigest);
        assert_eq!(run(&[("x-amz-checksum-sha1", "AAAA")], body, &[]).unwrap_err().code(), "InvalidRequest");
        let two = [("x-amz-checksum-crc32", crc.as_str()), ("x-amz-checksum-crc32c", "AAAAAA==")];
        assert_eq!(run(&two, body, &[]).unwrap_err().code(), "InvalidRequest");
        // x-amz-checksum-algorithm and -type name no value: not checksums
        assert!(
            run(&[("x-amz-checksum-algorithm", "CRC32"), ("x-amz-checksum-type", "FULL_OBJECT")], body, &[]).is_ok()
        );
        // a trailer, as boto3 and pyarrow send it
        let nvme = digest(Algorithm::Crc64Nvme, &[body]).to_base64();
        let trailer = [("x-amz-trailer", "x-amz-checksum-crc64nvme")];
        let h = hdrs(&trailer);
        assert_eq!(Checksums::from_headers(&Headers(&h), false).unwrap().trailer(), Some("x-amz-checksum-crc64nvme"));
        let sums = run(&trailer, body, &[("x-amz-checksum-crc64nvme", &nvme)]).unwrap();
        assert_eq!(sums.checksum.map(|d| d.to_base64()), Some(nvme));
        assert_eq!(
            run(&trailer, body, &[("x-amz-checksum-crc64nvme", "AAAAAAAAAAA=")]).unwrap_err().code(),
            "BadDigest"
        );
        assert_eq!(run(&trailer, body, &[]).unwrap_err().code(), "MalformedTrailerError");
        assert_eq!(run(&trailer, body, &[("x-amz-checksum-crc32", &crc)]).unwrap_err().code(), "MalformedTrailerError");
        assert_eq!(run(&[], body, &[("x-amz-checksum-crc32", &crc)]).unwrap_err().code(), "MalformedTrailerError");
        assert_eq!(run(&[("x-amz-trailer", "x-amz-meta-foo")], body, &[]).unwrap_err().code(), "InvalidRequest");
        assert_eq!(
            run(&[("x-amz-trailer", "x-amz-checksum-crc32"), ("x-amz-checksum-crc32", &crc)], body, &[])
                .unwrap_err()
                .code(),
            "InvalidRequest"
        );
        assert_eq!(run(&[], body, &[("x-amz-trailer-signature", "00")]), Ok(Sums { md5: None, checksum: None }));
    }
}
