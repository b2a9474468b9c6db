//! `aws-chunked` bodies (S3's own chunk framing inside the HTTP body), decoded
//! incrementally from whatever bytes have arrived, chunk signatures checked as they end.
//!
//! The frames: `<hex size>[;chunk-signature=<64 hex>]\r\n<data>\r\n` per chunk, then the
//! final `0[;chunk-signature=…]\r\n`, then trailing headers (`x-amz-checksum-crc32:…\r\n`,
//! for signed trailers `x-amz-trailer-signature:…\r\n`) and an empty line. Framing is
//! strict: whether chunk lines carry a signature and whether trailers may follow is known
//! from the request head, and anything else is an error, never a guess. Like
//! `http::Chunked`, [`AwsChunked::decode`] returns how much input it consumed; unlike it,
//! it keeps a partial line itself, so it consumes every byte it is given unless `out` is
//! full. Data is handed out before its chunk's signature is checked (chunks can be large):
//! an error at any point means the whole body is bad, and nothing of it may be stored.

use sha2::{Digest, Sha256};

use super::error::S3Error;
use super::sigv4::{hex32, ChunkChain};

/// Longest chunk-size line (size and signature) or trailer line.
pub const MAX_LINE: usize = 4096;
/// Most trailing headers, and most bytes of them all.
pub const MAX_TRAILERS: usize = 16;
pub const MAX_TRAILER_BYTES: usize = 16 << 10;

const BAD_FRAME: S3Error = S3Error::InvalidRequest("malformed aws-chunked body: bad chunk framing");
const BAD_SIZE: S3Error = S3Error::InvalidRequest("malformed aws-chunked body: bad chunk size line");
const LONG_LINE: S3Error = S3Error::InvalidRequest("malformed aws-chunked body: line too long");
const BAD_TRAILER: S3Error = S3Error::MalformedTrailer("The request contained trailing data that was not well-formed.");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data,
    /// The CRLF after a chunk's data; the count is how much of it has arrived.
    DataEnd(u8),
    Trailer,
    Done,
}

#[derive(Debug)]
pub struct AwsChunked {
    state: State,
    /// Chunk lines carry `;chunk-signature=`.
    signed: bool,
    /// Trailing headers may follow the final chunk.
    trailer: bool,
    /// Set when signatures are checked (mkv runs with `-s3-keys`).
    chain: Option<ChunkChain>,
    line: Vec<u8>,
    remaining: u64,
    /// The signature the current chunk claims, and the running hash of its data.
    claimed: [u8; 32],
    hash: Sha256,
    trailers: Vec<(String, String)>,
    /// The trailers as signed: `name:value\n` each.
    canonical: Vec<u8>,
    trailer_signature: Option<[u8; 32]>,
    decoded: u64,
}

impl AwsChunked {
    /// `signed`: chunk lines carry signatures (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD*`);
    /// `trailer`: trailers may follow (`…-TRAILER`, or `x-amz-trailer` was sent);
    /// `chain`: verify the signatures (only meaningful when `signed`).
    pub fn new(signed: bool, trailer: bool, chain: Option<ChunkChain>) -> AwsChunked {
        AwsChunked {
            state: State::Size,
            signed,
            trailer,
            chain: chain.filter(|_| signed),
            line: Vec::new(),
            remaining: 0,
            claimed: [0; 32],
            hash: Sha256::new(),
            trailers: Vec::new(),
            canonical: Vec::new(),
            trailer_signature: None,
            decoded: 0,
        }
    }

    /// Whether the final chunk and the trailers (with their signature) have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decoded bytes handed out so far.
    #[cfg(test)]
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// The trailing headers (lower-case names, trimmed values), `x-amz-trailer-signature` aside.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// Decodes from `input`, appending data to `out` while `out.len() < max_out`. Returns
    /// how many input bytes were consumed: all of them, unless `out` filled up first.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max_out: usize) -> Result<usize, S3Error> {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match self.state {
                State::Done => {
                    return Err(S3Error::InvalidRequest("malformed aws-chunked body: data after the final chunk"))
                }
                State::Size | State::Trailer => {
                    let (take, complete) = match rest.iter().position(|&b| b == b'\n') {
                        Some(nl) => (nl + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.line.len() + take > MAX_LINE {
                        return Err(LONG_LINE);
                    }
                    self.line.extend_from_slice(&rest[..take]);
                    pos += take;
                    if complete {
                        let mut line = std::mem::take(&mut self.line);
                        if line.len() < 2 || line[line.len() - 2] != b'\r' {
                            return Err(BAD_FRAME);
                        }
                        line.truncate(line.len() - 2);
                        if self.state == State::Size {
                            self.size_line(&line)?;
                        } else {
                            self.trailer_line(&line)?;
                        }
                        line.clear();
                        self.line = line;
                    }
                }
                State::Data => {
                    let room = max_out.saturating_sub(out.len());
                    let n = (self.remaining.min(rest.len() as u64) as usize).min(room);
                    if n == 0 {
                        return Ok(pos);
                    }
                    out.extend_from_slice(&rest[..n]);
                    if self.chain.is_some() {
                        self.hash.update(&rest[..n]);
                    }
                    pos += n;
                    self.decoded += n as u64;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataEnd(0);
                    }
                }
                State::DataEnd(seen) => {
                    if rest[0] != b"\r\n"[seen as usize] {
                        return Err(BAD_FRAME);
                    }
                    pos += 1;
                    if seen == 0 {
                        self.state = State::DataEnd(1);
                    } else {
                        self.chunk_done()?;
                        self.state = State::Size;
                    }
                }
            }
        }
        Ok(pos)
    }

    /// `<hex>` or `<hex>;chunk-signature=<64 hex>`, as the request head said.
    fn size_line(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let (size, ext) = match line.iter().position(|&b| b == b';') {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        match (self.signed, ext) {
            (true, Some(ext)) => {
                let sig = ext.strip_prefix(b"chunk-signature=").ok_or(BAD_SIZE)?;
                self.claimed = hex32(sig).ok_or(BAD_SIZE)?;
            }
            (false, None) => {}
            _ => return Err(BAD_SIZE),
        }
        if size.is_empty() || size.len() > 16 {
            return Err(BAD_SIZE);
        }
        self.remaining =
            size.iter().try_fold(0u64, |acc, &c| Some(acc << 4 | (c as char).to_digit(16)? as u64)).ok_or(BAD_SIZE)?;
        if self.remaining == 0 {
            self.chunk_done()?;
            self.state = State::Trailer;
        } else {
            self.state = State::Data;
        }
        Ok(())
    }

    /// A chunk (its data and CRLF, or the final empty one) has ended: check its signature.
    fn chunk_done(&mut self) -> Result<(), S3Error> {
        if let Some(chain) = &mut self.chain {
            let hash: [u8; 32] = std::mem::take(&mut self.hash).finalize().into();
            chain.verify_chunk(&hash, &self.claimed)?;
        }
        Ok(())
    }

    fn trailer_line(&mut self, line: &[u8]) -> Result<(), S3Error> {
        if line.is_empty() {
            if self.signed && self.trailer {
                let claimed =
                    self.trailer_signature.ok_or(S3Error::MalformedTrailer("x-amz-trailer-signature is missing"))?;
                if let Some(chain) = &mut self.chain {
                    chain.verify_trailer(&self.canonical, &claimed)?;
                }
            }
            self.state = State::Done;
            return Ok(());
        }
        if !self.trailer || self.trailer_signature.is_some() {
            // no trailers announced, or a line after the trailer signature (which comes last)
            return Err(BAD_TRAILER);
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(BAD_TRAILER)?;
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(BAD_TRAILER);
        }
        let value = std::str::from_utf8(value).map_err(|_| BAD_TRAILER)?;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if name == "x-amz-trailer-signature" {
            if !self.signed {
                return Err(BAD_TRAILER);
            }
            self.trailer_signature = Some(hex32(value.as_bytes()).ok_or(BAD_TRAILER)?);
            return Ok(());
        }
        if self.trailers.len() >= MAX_TRAILERS || self.canonical.len() + line.len() > MAX_TRAILER_BYTES {
            return Err(BAD_TRAILER);
        }
        self.canonical.extend_from_slice(format!("{name}:{value}\n").as_bytes());
        self.trailers.push((name, value.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
