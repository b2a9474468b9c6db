//! One S3 request body, checked as it streams: `aws-chunked` decoding with its chunk and
//! trailer signatures, the `x-amz-content-sha256` promise, and every checksum sent.
//!
//! ```text
//! let verified = sigv4::authenticate(&req, keys, &mut cache, now)?;
//! let mut body = Payload::new(&headers, verified, true)?;   // true: also compute the MD5 (ETag)
//! for each read of the HTTP body (already de-framed from Content-Length or chunked):
//!     if body.is_chunked() { let used = body.feed(bytes, &mut out, max)?; … send `out` … }
//!     else { body.observe(bytes); … send `bytes` as they are … }
//! let done = body.finish()?;                                 // only now may the value be kept
//! ```
//!
//! Bytes are handed out before they are fully verified (a chunk's signature covers its
//! end, checksums the whole body): an error from [`Payload::feed`] or [`Payload::finish`]
//! means nothing of the body may be stored. After an error from `feed` the body was not
//! read to its end, so the connection cannot carry another request.

use sha2::{Digest as _, Sha256};

use super::checksum::{Checksums, Digest};
use super::chunked::AwsChunked;
use super::error::S3Error;
use super::request::Headers;
use super::sigv4::{ContentSha256, Verified};

pub struct Payload {
    chunked: Option<AwsChunked>,
    /// The body's SHA-256 as promised by `x-amz-content-sha256`, and the running hash.
    sha256: Option<(Sha256, [u8; 32])>,
    sums: Checksums,
    /// `x-amz-decoded-content-length` of an `aws-chunked` body.
    decoded_len: Option<u64>,
    len: u64,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("chunked", &self.chunked.is_some())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A body that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Decoded length: the bytes to store.
    pub len: u64,
    /// The MD5 of the decoded bytes, when asked for or when `Content-MD5` was checked.
    pub md5: Option<[u8; 16]>,
    /// The `x-amz-checksum-*` that matched (header or trailer), to answer with.
    pub checksum: Option<Digest>,
}

impl Payload {
    /// Reads the body's framing and promises from the head. `verified` is what
    /// [`super::sigv4::authenticate`] returned; its chunk chain (if any) moves in here.
    pub fn new(headers: &Headers, verified: Verified, want_md5: bool) -> Result<Payload, S3Error> {
        let aws_chunked = headers
            .get_all("content-encoding")
            .any(|v| v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"aws-chunked")));
        let announced_trailer = headers.has("x-amz-trailer");
        let (chunked, sha256) = match verified.content {
            ContentSha256::Streaming { signed, trailer } => {
                (Some(AwsChunked::new(signed, trailer || announced_trailer, verified.chain)), None)
            }
            ContentSha256::Sha256(_) if aws_chunked => {
                return Err(S3Error::InvalidRequest("an aws-chunked body needs x-amz-content-sha256: STREAMING-…"))
            }
            ContentSha256::Sha256(want) => (None, Some((Sha256::new(), want))),
            // anonymous aws-chunked (pyarrow over http): unsigned chunks, trailers if announced
            ContentSha256::Unsigned | ContentSha256::Absent if aws_chunked => {
                (Some(AwsChunked::new(false, announced_trailer, None)), None)
            }
            ContentSha256::Unsigned | ContentSha256::Absent => (None, None),
        };
        let sums = Checksums::from_headers(headers, want_md5)?;
        if sums.trailer().is_some() && chunked.is_none() {
            return Err(S3Error::InvalidRequest("x-amz-trailer needs an aws-chunked body"));
        }
        let decoded_len = match headers.get("x-amz-decoded-content-length") {
            Some(v) if chunked.is_some() => Some(
                std::str::from_utf8(v.trim_ascii())
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or(S3Error::InvalidArgument("x-amz-decoded-content-length is not a number"))?,
            ),
            _ => None,
        };
        Ok(Payload { chunked, sha256, sums, decoded_len, len: 0 })
    }

    /// Whether the body is `aws-chunked` (then [`Payload::feed`] decodes it), or plain
    /// (then the bytes are the value: [`Payload::observe`] them where they are).
    pub fn is_chunked(&self) -> bool {
        self.chunked.is_some()
    }

    /// The decoded length the client announced, when it did (`aws-chunked` only).
    pub fn decoded_len(&self) -> Option<u64> {
        self.decoded_len
    }

    /// Decodes body bytes onto `out` (while `out.len() < max_out`), checking as it goes.
    /// Returns how many input bytes were used: all of them unless `out` filled up.
    /// A plain body is copied; prefer [`Payload::observe`] for it.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, max_out: usize) -> Result<usize, S3Error> {
        let start = out.len();
        let used = match &mut self.chunked {
            Some(d) => d.decode(input, out, max_out)?,
            None => {
                let n = input.len().min(max_out.saturating_sub(start));
                out.extend_from_slice(&input[..n]);
                n
            }
        };
        let (sums, sha256) = (&mut self.sums, &mut self.sha256);
        let decoded = &out[start..];
        sums.update(decoded);
        if let Some((h, _)) = sha256 {
            h.update(decoded);
        }
        self.len += decoded.len() as u64;
        if self.decoded_len.is_some_and(|n| self.len > n) {
            return Err(S3Error::InvalidRequest("the body is longer than x-amz-decoded-content-length"));
        }
        Ok(used)
    }

    /// Checks bytes of a plain body in place (no copy). Not for `aws-chunked` bodies.
    pub fn observe(&mut self, data: &[u8]) -> Result<(), S3Error> {
        if self.chunked.is_some() {
            return Err(S3Error::InternalError("observe() of an aws-chunked body"));
        }
        self.sums.update(data);
        if let Some((h, _)) = &mut self.sha256 {
            h.update(data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// The body has ended (its HTTP framing says so): checks what only the whole body can.
    pub fn finish(self) -> Result<Finished, S3Error> {
        let trailers = match &self.chunked {
            Some(d) if !d.is_done() => return Err(S3Error::IncompleteBody),
            Some(d) => d.trailers(),
            None => &[],
        };
        if self.decoded_len.is_some_and(|n| n != self.len) {
            return Err(S3Error::IncompleteBody);
        }
        if let Some((h, want)) = self.sha256 {
            if h.finalize()[..] != want[..] {
                return Err(S3Error::ContentSha256Mismatch);
            }
        }
        let sums = self.sums.finish(trailers)?;
        Ok(Finished { len: self.len, md5: sums.md5, checksum: sums.checksum })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::md5::Md5;
    use crate::s3::sigv4::{hex, hex32, ChunkChain};

    fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        list.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect()
    }

    fn anonymous(headers: &Headers) -> Verified {
        Verified { access_key: None, content: ContentSha256::from_headers(headers).unwrap(), chain: None }
    }

    /// Runs a body through a Payload in pieces of `step`, as the handlers will.
    fn run(
        headers: &[(&str, &str)],
        body: &[u8],
        step: usize,
        chain: Option<ChunkChain>,
    ) -> Result<(Vec<u8>, Finished), S3Error> {
        let h = hdrs(headers);
        let mut v = anonymous(&Headers(&h));
        v.chain = chain;
        let mut p = Payload::new(&Headers(&h), v, true)?;
        let mut got = Vec::new();
        for piece in body.chunks(step) {
            if p.is_chunked() {
                let mut pos = 0;
                while pos < piece.len() {
                    let mut out = Vec::new();
                    pos += p.feed(&piece[pos..], &mut out, 5)?;
                    got.extend_from_slice(&out);
                }
            } else {
                p.observe(piece)?;
                got.extend_from_slice(piece);
            }
        }
        p.finish().map(|f| (got, f))
    }

    #[test]
    fn plain_bodies() {
        let body = b"Welcome to Amazon S3.";
        let sha = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        let (got, f) =
            run(&[("x-amz-content-sha256", sha), ("x-amz-checksum-crc32", "Ox7nCg==")], body, 4, None).unwrap();
        assert_eq!((got.as_slice(), f.len, f.md5), (&body[..], 21, Some(Md5::digest(body))));
        assert_eq!(f.checksum.map(|d| d.to_base64()).as_deref(), Some("Ox7nCg=="));
        let wrong = sha.replace('4', "5");
        assert_eq!(
            run(&[("x-amz-content-sha256", &wrong)], body, 4, None).unwrap_err(),
            S3Error::ContentSha256Mismatch
        );
        assert_eq!(run(&[("x-amz-checksum-crc32", "AAAAAA==")], body, 4, None).unwrap_err().code(), "BadDigest");
        assert!(run(&[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")], body, 4, None).is_ok());
        assert!(run(&[("x-amz-trailer", "x-amz-checksum-crc32")], body, 4, None).is_err());
        assert!(run(&[("Content-Encoding", "aws-chunked"), ("x-amz-content-sha256", sha)], body, 4, None).is_err());
    }

    /// pyarrow over http: anonymous, no x-amz-content-sha256, a CRC64NVME trailer.
    #[test]
    fn anonymous_aws_chunked_with_trailer() {
        let head = [
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-trailer", "x-amz-checksum-crc64nvme"),
            ("x-amz-decoded-content-length", "11"),
        ];
        let nvme = {
            let mut h = crate::s3::checksum::Hasher::new(crate::s3::checksum::Algorithm::Crc64Nvme);
            h.update(b"hello world");
            h.finish().to_base64()
        };
        let body = format!("5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc64nvme:{nvme}\r\n\r\n");
        for step in [1, 3, body.len()] {
            let (got, f) = run(&head, body.as_bytes(), step, None).unwrap();
            assert_eq!((got.as_slice(), f.len, f.md5), (&b"hello world"[..], 11, Some(Md5::digest(b"hello world"))));
        }
        let bad = body.replace(&nvme, "AAAAAAAAAAA=");
        assert_eq!(run(&head, bad.as_bytes(), 7, None).unwrap_err().code(), "BadDigest");
        let short = body.replace("6\r\n world", "5\r\n worl");
        assert_eq!(run(&head, short.as_bytes(), 7, None).unwrap_err(), S3Error::IncompleteBody);
        let truncated = &body.as_bytes()[..body.len() - 2];
        assert_eq!(run(&head, truncated, 7, None).unwrap_err(), S3Error::IncompleteBody);
        let long = [("Content-Encoding", "aws-chunked"), ("x-amz-decoded-content-length", "4")];
        assert!(matches!(run(&long, b"5\r\nhello\r\n0\r\n\r\n", 100, None), Err(S3Error::InvalidRequest(_))));
    }

    /// boto3/the AWS CLI with keys, over https: signed chunks, a signed CRC32 trailer.
    #[test]
    fn signed_streaming_with_trailer() {
        let seed = [3u8; 32];
        let mut signer = ChunkChain::for_test("secret", "20240101T000000Z", "us-east-1", seed);
        let mut body = Vec::new();
        for data in [&b"hello world"[..], b""] {
            body.extend_from_slice(
                format!("{:x};chunk-signature={}\r\n", data.len(), hex(&signer.sign_chunk(data))).as_bytes(),
            );
            if !data.is_empty() {
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
        }
        let sig = hex(&signer.sign_trailer(b"x-amz-checksum-crc32:DUoRhQ==\n"));
        body.extend_from_slice(
            format!("x-amz-checksum-crc32:DUoRhQ==\r\nx-amz-trailer-signature:{sig}\r\n\r\n").as_bytes(),
        );
        let head = [
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
            ("x-amz-decoded-content-length", "11"),
        ];
        let verifier = || Some(ChunkChain::for_test("secret", "20240101T000000Z", "us-east-1", seed));
        for step in 1..body.len() {
            let (got, f) = run(&head, &body, step, verifier()).unwrap();
            assert_eq!(got, b"hello world", "step {step}");
            assert_eq!(f.checksum.map(|d| d.to_base64()).as_deref(), Some("DUoRhQ=="));
        }
        let wrong_key = Some(ChunkChain::for_test("other", "20240101T000000Z", "us-east-1", seed));
        assert_eq!(run(&head, &body, 64, wrong_key).unwrap_err(), S3Error::SignatureDoesNotMatch);
        assert_eq!(hex32(sig.as_bytes()).map(|s| hex(&s)), Some(sig));
    }
}
