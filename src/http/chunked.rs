//! Chunked transfer-coding, decoded incrementally from whatever bytes have arrived.
//! Strict framing: CRLF line ends, hex sizes; anything else is a `400`, never a guess.

use super::Error;

/// Longest chunk-size line (size plus extensions) or trailer line we accept.
const MAX_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk (the default request head's limit):
/// without one, a client could send trailer lines for ever (`431`).
const MAX_TRAILER: usize = 64 << 10;

#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    remaining: u64,
    /// Trailer bytes read so far.
    trailer: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Data,
    DataEnd,
    Trailer,
    Done,
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending data to `out` while `out.len() < max_out`.
    /// Returns how many input bytes were consumed; fewer than given means "need more".
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max_out: usize) -> Result<usize, Error> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok(pos),
                State::Size | State::Trailer => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_LINE {
                            return Err(Error::BadRequest("chunk line too long"));
                        }
                        return Ok(pos);
                    };
                    // a long line is refused whether it came in one read or several
                    if nl > MAX_LINE {
                        return Err(Error::BadRequest("chunk line too long"));
                    }
                    if nl == 0 || rest[nl - 1] != b'\r' {
                        return Err(Error::BadRequest("bad chunked framing"));
                    }
                    let line = &rest[..nl - 1];
                    pos += nl + 1;
                    if self.state == State::Trailer {
                        self.trailer += nl + 1;
                        if self.trailer > MAX_TRAILER {
                            return Err(Error::HeadTooLarge);
                        }
                        if line.is_empty() {
                            self.state = State::Done;
                        } else if !line.contains(&b':') {
                            return Err(Error::BadRequest("bad trailer field"));
                        }
                        continue;
                    }
                    let size = line.split(|&b| b == b';').next().unwrap_or(b"");
                    self.remaining = parse_hex(size).ok_or(Error::BadRequest("bad chunk size"))?;
                    self.state = if self.remaining == 0 { State::Trailer } else { State::Data };
                }
                State::Data => {
                    let room = max_out.saturating_sub(out.len());
                    let n = (self.remaining.min(rest.len() as u64) as usize).min(room);
                    if n == 0 {
                        return Ok(pos);
                    }
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataEnd;
                    }
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(Error::BadRequest("bad chunked framing"));
                    }
                    pos += 2;
                    self.state = State::Size;
                }
            }
        }
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| Some(acc * 16 + (c as char).to_digit(16)? as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as the network would.
    fn feed(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut d = Chunked::default();
        let mut out = vec![];
        let mut buf = vec![];
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            let n = d.decode(&buf, &mut out, usize::MAX)?;
            buf.drain(..n);
        }
        Ok((out, d.is_done()))
    }

    #[test]
    fn decodes_in_any_pieces() {
        let msg = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..msg.len() {
            assert_eq!(feed(msg, step).unwrap(), (b"hello world".to_vec(), true), "step {step}");
        }
        assert_eq!(feed(b"5\r\nhel", 100).unwrap(), (b"hel".to_vec(), false));
    }

    /// Trailer lines sent for ever were read for ever (4 GiB in a sweep); each line short.
    #[test]
    fn trailers_are_bounded() {
        let mut msg = b"3\r\nabc\r\n0\r\n".to_vec();
        let line = format!("X: {}\r\n", "y".repeat(1000));
        msg.extend(line.repeat(60).as_bytes());
        msg.extend(b"\r\n");
        assert_eq!(feed(&msg, 4096).unwrap(), (b"abc".to_vec(), true));
        let mut msg = b"3\r\nabc\r\n0\r\n".to_vec();
        msg.extend(line.repeat(70).as_bytes());
        assert!(matches!(feed(&msg, 4096), Err(Error::HeadTooLarge)));
    }

    #[test]
    fn bounded_output() {
        let mut d = Chunked::default();
        let mut out = vec![];
        let n = d.decode(b"a\r\n0123456789\r\n0\r\n\r\n", &mut out, 4).unwrap();
        assert_eq!(out, b"0123");
        assert_eq!(n, 7);
    }

    #[test]
    fn bad_framing() {
        for bad in [&b"zz\r\n"[..], b"5\nhello", b"5\r\nhelloXX", b"-1\r\n", b"\r\n", b"1234567890abcdef0\r\n"] {
            assert!(feed(bad, 100).is_err(), "{bad:?}");
        }
        assert!(feed(&[b'1'; 5000], 100).is_err());
        // a trailer field is a field: name, colon, value
        assert!(feed(b"1\r\nx\r\n0\r\nno-colon-here\r\n\r\n", 100).is_err());
        // the same long line in one piece, ended
        let mut long = b"1;".to_vec();
        long.extend_from_slice(&[b'x'; 5000]);
        long.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert!(feed(&long, long.len()).is_err());
    }
}
