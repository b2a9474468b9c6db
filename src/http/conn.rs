//! One client connection: a read buffer that request heads are parsed from, body reading
//! under every framing, and an output buffer that pipelined answers share.

use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};

use super::{parse_head, Chunked, Error, Framing, Head};
use crate::config::Limits;

/// Read buffer growth step; also the smallest free space a read is given.
const READ_STEP: usize = 16 << 10;
/// Answers up to this size are written without a timeout (the kernel buffers them).
const SMALL_WRITE: usize = 16 << 10;
/// An output buffer that grew past this (a big listing) is not kept for the next request.
const KEEP_OUT: usize = 1 << 20;

pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    /// Answers waiting to be written; flushed when no complete request is left to parse.
    pub out: Vec<u8>,
}

/// The state of one request body being read.
#[derive(Debug)]
pub struct Body {
    framing: Framing,
    remaining: u64,
    chunked: Chunked,
    received: u64,
    max: u64,
    /// The client waits for `100 Continue` before sending the body; sent on the first read.
    expect: bool,
}

impl Body {
    pub fn new(framing: Framing, max_body: u64, expect_continue: bool) -> Body {
        let remaining = if let Framing::Length(n) = framing { n } else { 0 };
        let expect = expect_continue && framing != Framing::None;
        Body { framing, remaining, chunked: Chunked::default(), received: 0, max: max_body, expect }
    }

    /// Whether the client still waits for `100 Continue` (so it has sent no body bytes).
    pub fn awaits_continue(&self) -> bool {
        self.expect
    }

    /// Body bytes the framing still announces (0 for chunked, where it is unknown).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Bytes of body data read so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn is_done(&self) -> bool {
        match self.framing {
            Framing::None => true,
            Framing::Length(_) => self.remaining == 0,
            Framing::Chunked => self.chunked.is_done(),
        }
    }
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn { stream, rbuf: Vec::with_capacity(READ_STEP), rpos: 0, out: Vec::with_capacity(4096) }
    }

    /// Waits for the next request head. `Ok(None)`: the client closed or idled out between requests.
    pub async fn next_head(&mut self, limits: &Limits) -> Result<Option<Head>, Error> {
        let mut started: Option<Instant> = None;
        loop {
            if self.rpos < self.rbuf.len() {
                if let Some(h) = parse_head(&self.rbuf[self.rpos..], limits)? {
                    return Ok(Some(h));
                }
                started.get_or_insert_with(Instant::now);
            }
            // nothing complete left to parse: answers to pipelined requests go out together
            self.flush(limits.idle_timeout).await?;
            let wait = match started {
                None => limits.idle_timeout,
                Some(t) => limits.header_timeout.saturating_sub(t.elapsed()),
            };
            match self.fill(wait).await {
                Ok(0) if started.is_none() => return Ok(None),
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(Error::Timeout) if started.is_none() => return Ok(None),
                Err(e) => return Err(e),
            }
            started.get_or_insert_with(Instant::now);
        }
    }

    /// The bytes of a range of the current head (its target).
    pub fn head_bytes(&self, r: &std::ops::Range<usize>) -> &[u8] {
        &self.rbuf[self.rpos + r.start..self.rpos + r.end]
    }

    /// Marks the head as read; what follows in the buffer is its body or the next request.
    pub fn consume(&mut self, n: usize) {
        self.rpos += n;
    }

    /// Reads more bytes into the read buffer; 0 means the peer closed.
    async fn fill(&mut self, wait: Duration) -> Result<usize, Error> {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_STEP / 4 {
            self.rbuf.reserve(READ_STEP);
        }
        let buf = std::mem::take(&mut self.rbuf);
        let (len, cap) = (buf.len(), buf.capacity());
        // on timeout the buffer goes with the cancelled read; the caller closes the connection
        let (res, slice) =
            monoio::time::timeout(wait, self.stream.read(buf.slice_mut(len..cap))).await.map_err(|_| Error::Timeout)?;
        self.rbuf = slice.into_inner();
        res.map_err(Error::Io)
    }

    /// Writes the output buffer out.
    pub async fn flush(&mut self, wait: Duration) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.out);
        // an answer that fits the socket's send buffer is written at once: no timer needed
        let (res, mut buf) = if buf.len() <= SMALL_WRITE {
            self.stream.write_all(buf).await
        } else {
            monoio::time::timeout(wait, self.stream.write_all(buf)).await.map_err(|_| Error::Timeout)?
        };
        res.map_err(Error::Io)?;
        buf.clear();
        if buf.capacity() <= KEEP_OUT {
            self.out = buf;
        }
        Ok(())
    }

    /// `100 Continue`, for a client that waits for it before sending the body.
    async fn send_continue(&mut self, wait: Duration) -> Result<(), Error> {
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.flush(wait).await
    }

    /// The next piece of `body`, at most `max` bytes; `None` at its end.
    pub async fn body_chunk(&mut self, body: &mut Body, max: usize, wait: Duration) -> Result<Option<Bytes>, Error> {
        if body.expect {
            body.expect = false;
            self.send_continue(wait).await?;
        }
        let chunk = match body.framing {
            Framing::None => return Ok(None),
            Framing::Length(_) => {
                if body.remaining == 0 {
                    return Ok(None);
                }
                let want = body.remaining.min(max as u64) as usize;
                let avail = self.rbuf.len() - self.rpos;
                if avail > 0 {
                    let n = avail.min(want);
                    let b = Bytes::copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
                    self.rpos += n;
                    b
                } else {
                    // large bodies are read straight into their own buffer, never copied, and
                    // the buffer is filled: fewer, larger pieces cost fewer writes to replicas
                    let mut v = Vec::with_capacity(want);
                    while v.len() < want {
                        let len = v.len();
                        let (res, slice) = monoio::time::timeout(wait, self.stream.read(v.slice_mut(len..want)))
                            .await
                            .map_err(|_| Error::Timeout)?;
                        v = slice.into_inner();
                        if res.map_err(Error::Io)? == 0 {
                            return Err(Error::Closed);
                        }
                    }
                    Bytes::from(v)
                }
            }
            Framing::Chunked => {
                let mut out = Vec::with_capacity(max.min(64 << 10));
                loop {
                    let n = body.chunked.decode(&self.rbuf[self.rpos..], &mut out, max)?;
                    self.rpos += n;
                    if body.chunked.is_done() || out.len() >= max || (!out.is_empty() && self.rpos == self.rbuf.len()) {
                        break;
                    }
                    if self.fill(wait).await? == 0 {
                        return Err(Error::Closed);
                    }
                }
                if out.is_empty() {
                    return Ok(None);
                }
                Bytes::from(out)
            }
        };
        if let Framing::Length(_) = body.framing {
            body.remaining -= chunk.len() as u64;
        }
        body.received += chunk.len() as u64;
        if body.max > 0 && body.received > body.max {
            return Err(Error::BodyTooLarge);
        }
        Ok(Some(chunk))
    }

    /// Reads and drops the rest of `body` so the connection can carry the next request.
    pub async fn discard(&mut self, body: &mut Body, wait: Duration) -> Result<(), Error> {
        while self.body_chunk(body, 64 << 10, wait).await?.is_some() {}
        Ok(())
    }
}
