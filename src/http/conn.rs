//! One client connection: a read buffer that request heads are parsed from, body reading
//! under every framing, and an output buffer that pipelined answers share. Every wait is
//! bounded by a deadline in the thread's [`Watch`](super::Watch), never by a timer of its own.

use std::time::Duration;

use bytes::Bytes;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};

use super::{parse_head, watch::Wait, Chunked, Error, Framing, Head, Watched};
use crate::{config::Limits, pipe::Pipe};

/// Read buffer growth step; also the smallest free space a read is given.
const READ_STEP: usize = 16 << 10;
/// An output buffer that grew past this (a big listing) is not kept for the next request.
const KEEP_OUT: usize = 1 << 20;
/// The first buffer a body is read into. Later ones grow with what the client has sent
/// (up to the caller's piece size), so a client trickling its body holds this much of the
/// master's memory, not a whole piece.
const BODY_FIRST: usize = 64 << 10;
/// Longest a connection closed with a request body still coming is read on ([`Conn::linger`]),
/// and longest it may go without a byte meanwhile (nginx's lingering close: 30 s and 5 s).
const LINGER: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);

pub struct Conn {
    stream: TcpStream,
    watched: Watched,
    rbuf: Vec<u8>,
    rpos: usize,
    /// Bytes after `rpos` already searched for a line end without finding a whole head.
    scanned: usize,
    /// Answers waiting to be written; flushed when no complete request is left to parse.
    pub out: Vec<u8>,
    send_timeout: Duration,
    /// No request head has come yet.
    fresh: bool,
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
    /// When the head ended (the watch's clock, ms), for the minimum rate.
    began: u64,
    /// The client closed the connection (or it broke) before the body's end.
    gone: bool,
    timeout: Duration,
    /// Bytes per second the body must average once `timeout` has passed (0: no minimum).
    min_rate: u64,
}

impl Body {
    pub fn new(head: &Head, limits: &Limits, now: u64) -> Body {
        let remaining = if let Framing::Length(n) = head.framing { n } else { 0 };
        Body {
            framing: head.framing,
            remaining,
            chunked: Chunked::default(),
            received: 0,
            max: limits.max_body,
            expect: head.expect_continue && head.framing != Framing::None,
            began: now,
            gone: false,
            timeout: limits.body_timeout,
            min_rate: limits.body_min_rate,
        }
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

    /// Whether the client went away before the body's end: no one reads the answer (nginx
    /// logs such a request `499`).
    pub fn client_gone(&self) -> bool {
        self.gone
    }

    pub fn is_done(&self) -> bool {
        match self.framing {
            Framing::None => true,
            Framing::Length(_) => self.remaining == 0,
            Framing::Chunked => self.chunked.is_done(),
        }
    }

    /// When the next body bytes must have arrived: within `-body-timeout` of now, and before
    /// the average rate since the head falls under `-body-min-rate` (after a first
    /// `-body-timeout` of grace), so a trickle is cut however regular it is. `pending`: the
    /// bytes read into the piece being filled, not yet in `received` (counted only once a
    /// piece was whole, a steady client above the rate was cut).
    fn deadline(&self, now: u64, pending: usize) -> u64 {
        let per_read = now + self.timeout.as_millis() as u64;
        if self.min_rate == 0 {
            return per_read;
        }
        let got = self.received + pending as u64;
        let by_rate = self.began + self.timeout.as_millis() as u64 + got.saturating_mul(1000) / self.min_rate;
        per_read.min(by_rate)
    }
}

/// Whether `b`, the start of a head not yet whole, can still begin a request line: empty
/// lines (which RFC 9112 lets a server skip), then a method of token characters up to its
/// space. Only what httparse would refuse anyway is refused early.
fn could_start_a_request(b: &[u8]) -> bool {
    let b = &b[b.iter().position(|&c| c != b'\r' && c != b'\n').unwrap_or(b.len())..];
    let method = &b[..b.iter().position(|&c| c == b' ').unwrap_or(b.len())];
    method.iter().all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

impl Conn {
    pub fn new(stream: TcpStream, watched: Watched, limits: &Limits) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            watched,
            rbuf: Vec::with_capacity(READ_STEP),
            rpos: 0,
            scanned: 0,
            out: Vec::with_capacity(4096),
            send_timeout: limits.send_timeout,
            fresh: true,
        }
    }

    /// The thread's clock (ms), for [`Body::new`].
    pub fn now(&self) -> u64 {
        self.watched.now()
    }

    /// Whether the server is stopping: the connection closes after the answer in hand.
    pub fn draining(&self) -> bool {
        self.watched.draining()
    }

    /// Waits for the next request head. `Ok(None)`: the client closed or idled out between
    /// requests, or the server is stopping.
    pub async fn next_head(&mut self, limits: &Limits) -> Result<Option<Head>, Error> {
        // once a head has started, the whole of it must arrive by this time (ms)
        let mut deadline: Option<u64> = None;
        loop {
            let buffered = &self.rbuf[self.rpos..];
            if !buffered.is_empty() {
                // a head dripped in byte by byte is parsed again only when a line ends (or
                // a limit is passed), not once per byte
                let fresh = &buffered[self.scanned.min(buffered.len())..];
                let over = buffered.len() >= limits.max_head
                    || (buffered.len() > limits.max_uri + 32 && !buffered.contains(&b'\n'));
                if over || fresh.contains(&b'\n') {
                    if let Some(h) = parse_head(buffered, limits)? {
                        self.scanned = 0;
                        self.fresh = false;
                        return Ok(Some(h));
                    }
                }
                // bytes no request line starts with (a TLS hello, binary junk): 400 now, not
                // a 408 once -header-timeout has passed waiting for a line that never ends
                if !could_start_a_request(buffered) {
                    return Err(Error::BadRequest("malformed request line"));
                }
                self.scanned = buffered.len();
                deadline.get_or_insert(self.watched.now() + limits.header_timeout.as_millis() as u64);
            } else if self.watched.draining() {
                if !self.fresh {
                    self.flush().await?;
                    return Ok(None);
                }
                // a connection taken during the stop (the admin port stays open through
                // it) gets its one request: waited for as a head, not closed as idle
                deadline.get_or_insert(self.watched.now() + limits.header_timeout.as_millis() as u64);
            }
            // nothing complete left to parse: answers to pipelined requests go out together
            self.flush().await?;
            match deadline {
                Some(at) => self.watched.arm_at(Wait::Head, at),
                None => self.watched.arm(Wait::Idle, limits.idle_timeout),
            }
            let n = self.fill().await;
            match (n, self.watched.fired()) {
                (_, Some(Wait::Idle)) => return Ok(None),
                (_, Some(_)) => return Err(Error::Timeout),
                (Ok(0), None) if deadline.is_none() => return Ok(None),
                (Ok(0), None) => return Err(Error::Closed),
                (Ok(_), None) => {}
                (Err(e), None) => return Err(e),
            }
        }
    }

    /// The bytes of a range of the current head (its target).
    pub fn head_bytes(&self, r: &std::ops::Range<usize>) -> &[u8] {
        &self.rbuf[self.rpos + r.start..self.rpos + r.end]
    }

    /// The current head's bytes (for headers the caller parses itself).
    pub fn head_raw(&self, len: usize) -> &[u8] {
        &self.rbuf[self.rpos..self.rpos + len]
    }

    /// Marks the head as read; what follows in the buffer is its body or the next request.
    pub fn consume(&mut self, n: usize) {
        self.rpos += n;
    }

    /// Reads more bytes into the read buffer; 0 means the peer closed (or a deadline fired:
    /// the caller asks [`Watched::fired`]). The caller arms the deadline.
    async fn fill(&mut self) -> Result<usize, Error> {
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
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.rbuf = slice.into_inner();
        self.watched.disarm();
        res.map_err(Error::Io)
    }

    /// Writes the output buffer out, within `-send-timeout`.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.out);
        let (res, mut buf) = self.write(buf).await;
        res?;
        buf.clear();
        if buf.capacity() <= KEEP_OUT {
            self.out = buf;
        }
        Ok(())
    }

    /// Moves what `pipe` holds to the client (the kernel's pages, never this process's
    /// memory); each step that moves bytes within `-send-timeout`, as each write of a copied
    /// body must.
    pub async fn splice_out(&mut self, pipe: &mut Pipe) -> Result<(), Error> {
        loop {
            self.watched.arm(Wait::Write, self.send_timeout);
            let res = pipe.drain_some(&self.stream).await;
            if self.written(res)? == 0 {
                return Ok(());
            }
        }
    }

    /// Writes `data` whole, within `-send-timeout`.
    pub async fn write<B: monoio::buf::IoBuf + 'static>(&mut self, data: B) -> (Result<(), Error>, B) {
        self.watched.arm(Wait::Write, self.send_timeout);
        let (res, data) = self.stream.write_all(data).await;
        (self.written(res).map(drop), data)
    }

    /// Ends a write armed with `-send-timeout`: its result, or `Timeout` if the deadline
    /// passed under it.
    fn written<T>(&mut self, res: std::io::Result<T>) -> Result<T, Error> {
        self.watched.disarm();
        match (res, self.watched.fired()) {
            (_, Some(Wait::Write)) => Err(Error::Timeout),
            (Ok(v), _) => Ok(v),
            (Err(e), _) => Err(Error::Io(e)),
        }
    }

    /// `100 Continue`, for a client that waits for it before sending the body.
    async fn send_continue(&mut self) -> Result<(), Error> {
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.flush().await
    }

    /// Reads into `v` up to its capacity under the body's deadline; false at EOF.
    async fn read_body_into(&mut self, body: &Body, v: &mut Vec<u8>) -> Result<bool, Error> {
        let len = v.len();
        let cap = v.capacity();
        self.watched.arm_at(Wait::Body, body.deadline(self.watched.now(), len));
        let (res, slice) = self.stream.read(std::mem::take(v).slice_mut(len..cap)).await;
        *v = slice.into_inner();
        self.watched.disarm();
        if self.watched.fired().is_some() {
            return Err(Error::Timeout);
        }
        Ok(res.map_err(Error::Io)? > 0)
    }

    /// The next piece of `body`, at most `max` bytes; `None` at its end.
    pub async fn body_chunk(&mut self, body: &mut Body, max: usize) -> Result<Option<Bytes>, Error> {
        let piece = self.body_piece(body, max).await;
        if let Err(Error::Closed | Error::Io(_)) = piece {
            body.gone = true;
        }
        piece
    }

    async fn body_piece(&mut self, body: &mut Body, max: usize) -> Result<Option<Bytes>, Error> {
        if body.expect {
            body.expect = false;
            self.send_continue().await?;
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
                    // read straight into the piece's own buffer, never copied, and filled
                    // (fewer, larger pieces cost fewer writes to replicas); its size follows
                    // what the client has sent so far
                    let size = want.min(BODY_FIRST.max(body.received as usize));
                    let mut v = Vec::with_capacity(size);
                    while v.len() < size {
                        if !self.read_body_into(body, &mut v).await? {
                            return Err(Error::Closed);
                        }
                    }
                    Bytes::from(v)
                }
            }
            Framing::Chunked => {
                let mut out = Vec::with_capacity(max.min(BODY_FIRST));
                loop {
                    let n = body.chunked.decode(&self.rbuf[self.rpos..], &mut out, max)?;
                    self.rpos += n;
                    if body.chunked.is_done() || out.len() >= max || (!out.is_empty() && self.rpos == self.rbuf.len()) {
                        break;
                    }
                    self.watched.arm_at(Wait::Body, body.deadline(self.watched.now(), out.len()));
                    let n = self.fill().await;
                    if self.watched.fired().is_some() {
                        return Err(Error::Timeout);
                    }
                    if n? == 0 {
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
    pub async fn discard(&mut self, body: &mut Body) -> Result<(), Error> {
        while self.body_chunk(body, 64 << 10).await?.is_some() {}
        Ok(())
    }

    /// Drops the rest of a chunked `body` when all of it, up to `max` bytes of data, has
    /// been read in already: true if it ended so. Nothing is waited for (its length is not
    /// known until it ends: a client sending slowly would hold its early answer back).
    pub fn discard_buffered(&mut self, body: &mut Body, max: usize) -> Result<bool, Error> {
        if body.framing != Framing::Chunked {
            return Ok(false);
        }
        let mut out = Vec::new();
        loop {
            let n = body.chunked.decode(&self.rbuf[self.rpos..], &mut out, max + 1)?;
            self.rpos += n;
            if body.chunked.is_done() {
                return Ok(true);
            }
            if n == 0 || out.len() > max {
                return Ok(false);
            }
        }
    }

    /// Before closing a connection whose client may still be sending a body (an early
    /// answer: `403`, `409`, a `5xx`): a close with bytes unread sends a reset, which can
    /// destroy the answer on its way, and a client that writes its whole body before reading
    /// (Python's `http.client`) then sees `Connection reset` instead of the status. So the
    /// sending side is shut (the client reads the answer and its end) and what still comes is
    /// read and dropped, up to [`LINGER`], until [`LINGER_IDLE`] passes without a byte. Not
    /// while the server stops: it closes at once.
    pub async fn linger(&mut self) {
        use std::os::fd::AsRawFd;
        if self.draining() {
            return;
        }
        // SAFETY: shutdown(2) of the socket this connection owns; it stays open until dropped.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_WR) };
        let end = self.now() + LINGER.as_millis() as u64;
        loop {
            let now = self.now();
            if now >= end {
                break;
            }
            // idle as far as the watch goes: a stop closes it at once, like a connection
            // between requests
            self.watched.arm_at(Wait::Idle, (now + LINGER_IDLE.as_millis() as u64).min(end));
            self.rbuf.clear();
            self.rpos = 0;
            match self.fill().await {
                Ok(n) if n > 0 && self.watched.fired().is_none() => {}
                _ => break,
            }
        }
        self.watched.disarm();
    }
}
