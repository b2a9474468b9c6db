//! A GET whose body is read piece by piece (a value streamed through the master, a
//! listing, a part read for a Complete), or spliced into a pipe.

use super::*;
use crate::pipe::Pipe;

/// A GET whose body is read piece by piece (a replica being copied, a listing).
pub struct Download {
    pub(super) leg: Leased,
    pub status: u16,
    /// The body length, when the volume sent one.
    pub length: Option<u64>,
    /// Body bytes still to read from the socket; None: until the volume closes.
    pub(super) left: Option<u64>,
    pub(super) buf: Vec<u8>,
    /// Decoder of a chunked body (nginx sends autoindex listings so); `buf` is then raw input.
    pub(super) chunked: Option<crate::http::Chunked>,
    pub(super) keep: bool,
    pub(super) timeout: Duration,
    /// The socket's `SO_RCVLOWAT` as [`Client::read_into`] last set it (1: the kernel's).
    pub(super) lowat: usize,
}

impl Download {
    /// Bytes the next read of the body may take, at most `max`: 0 at the end of a body of
    /// known length.
    fn next_len(&self, max: usize) -> usize {
        self.left.map_or(max, |n| n.min(max as u64) as usize)
    }

    /// A read of a long body wakes only once LOWAT bytes are in (or the body's last ones,
    /// or all the read asks for), not for every few KiB the volume's sendfile gets out:
    /// fewer, larger reads here, and fewer, larger window openings for the volume to send into.
    /// `want` is what the read asks ([`Download::next_len`]: never past the body's end).
    fn low_mark(&mut self, want: usize) {
        if self.left.is_some() {
            let lowat = want.clamp(1, LOWAT);
            if lowat != self.lowat && set_rcvlowat(&self.leg.stream, lowat).is_ok() {
                self.lowat = lowat;
            }
        }
    }

    /// Whether the rest of the body can be spliced ([`Client::splice_chunk`]): a body of
    /// known length, not chunked, nothing of it read ahead into the buffer.
    pub fn can_splice(&self) -> bool {
        self.chunked.is_none() && self.buf.is_empty() && self.left.is_some()
    }
}

/// Reads at most `want` (> 0) body bytes of `d` into `buf`'s spare room: the bytes read, 0
/// at the end of a body without a length.
pub(super) async fn read_body(d: &mut Download, buf: &mut Vec<u8>, want: usize) -> Result<usize, Error> {
    let mut v = std::mem::take(buf);
    let len = v.len();
    v.reserve_exact(want);
    let (res, slice) = monoio::time::timeout(d.timeout, d.leg.stream.read(v.slice_mut(len..len + want)))
        .await
        .map_err(|_| Error::Timeout(d.leg.server.clone()))?;
    *buf = slice.into_inner();
    match res.map_err(|e| Error::Io(d.leg.server.clone(), e))? {
        0 if d.left.is_none() => Ok(0),
        0 => Err(Error::Protocol(d.leg.server.clone(), "body shorter than its Content-Length")),
        n => {
            d.left = d.left.map(|l| l.saturating_sub(n as u64));
            Ok(n)
        }
    }
}

/// Bytes a long body's read waits for before it wakes ([`Client::read_into`]).
pub(super) const LOWAT: usize = 128 << 10;

pub(super) fn set_rcvlowat(s: &TcpStream, bytes: usize) -> std::io::Result<()> {
    set_int(s, libc::SO_RCVLOWAT, bytes)
}

impl Client {
    /// Starts a GET whose body the caller reads with [`Client::next_chunk`].
    pub async fn download(&self, topo: &Topology, server: &str, path: &str) -> Result<Download, Error> {
        self.download_with(topo, server, "GET", path, &[]).await
    }

    /// [`Client::download`] with another method (the master's own `VOLUMES`).
    pub async fn download_with(
        &self,
        topo: &Topology,
        server: &str,
        method: &str,
        path: &str,
        extra: &[u8],
    ) -> Result<Download, Error> {
        let msg = head_with(method, server, path, extra, Some(0));
        let (l, head, mut buf) = self.send(topo, server, msg, Bytes::new()).await?;
        buf.drain(..head.head_len);
        let left = head.length.map(|n| n.saturating_sub(buf.len() as u64));
        if let Some(n) = head.length {
            buf.truncate(n.min(buf.len() as u64) as usize);
        }
        let chunked = head.chunked.then(crate::http::Chunked::default);
        let keep = head.keep && (head.length.is_some() || chunked.is_some());
        Ok(Download {
            leg: l,
            status: head.status,
            length: head.length,
            left,
            buf,
            chunked,
            keep,
            timeout: topo.timeout,
            lowat: 1,
        })
    }

    async fn next_chunked(&self, d: &mut Download, max: usize) -> Result<Option<Bytes>, Error> {
        let bad = |_| Error::Protocol(d.leg.server.clone(), "bad chunked body");
        let mut out = Vec::new();
        loop {
            let dec = d.chunked.as_mut().expect("chunked download");
            let n = dec.decode(&d.buf, &mut out, max).map_err(bad)?;
            d.buf.drain(..n);
            if dec.is_done() || !out.is_empty() {
                break;
            }
            let buf = std::mem::take(&mut d.buf);
            let (len, cap) = (buf.len(), buf.capacity().max(buf.len() + (16 << 10)));
            let mut buf = buf;
            buf.reserve(cap - len);
            let cap = buf.capacity();
            let (res, slice) = monoio::time::timeout(d.timeout, d.leg.stream.read(buf.slice_mut(len..cap)))
                .await
                .map_err(|_| Error::Timeout(d.leg.server.clone()))?;
            d.buf = slice.into_inner();
            if res.map_err(|e| Error::Io(d.leg.server.clone(), e))? == 0 {
                return Err(Error::Protocol(d.leg.server.clone(), "chunked body cut short"));
            }
        }
        Ok(if out.is_empty() { None } else { Some(Bytes::from(out)) })
    }

    /// The next piece of a download's body (at most `max` bytes); `None` at its end.
    /// A body without a length is read until the volume closes.
    pub async fn next_chunk(&self, d: &mut Download, max: usize) -> Result<Option<Bytes>, Error> {
        if d.chunked.is_some() {
            return self.next_chunked(d, max).await;
        }
        if !d.buf.is_empty() {
            return Ok(Some(Bytes::from(std::mem::take(&mut d.buf))));
        }
        let want = d.next_len(max);
        if want == 0 {
            return Ok(None);
        }
        let mut v = Vec::new();
        Ok((read_body(d, &mut v, want).await? > 0).then(|| Bytes::from(v)))
    }

    /// Appends up to `max` bytes of a download's body to `buf`, read straight into its spare
    /// room (no buffer of its own, as [`Client::next_chunk`] makes); `Ok(0)` at the end.
    pub async fn read_into(&self, d: &mut Download, buf: &mut Vec<u8>, max: usize) -> Result<usize, Error> {
        if d.chunked.is_some() || !d.buf.is_empty() {
            let Some(c) = self.next_chunk(d, max).await? else { return Ok(0) };
            buf.extend_from_slice(&c);
            return Ok(c.len());
        }
        let want = d.next_len(max);
        if want == 0 {
            return Ok(0);
        }
        d.low_mark(want);
        read_body(d, buf, want).await
    }

    /// Moves up to `max` bytes of a download's body from the volume's socket into `pipe`
    /// without copying them through this process (`splice`); `None` at the end. Only where
    /// [`Download::can_splice`] says so.
    pub async fn splice_chunk(&self, d: &mut Download, pipe: &mut Pipe, max: usize) -> Result<Option<usize>, Error> {
        if d.left.is_none() {
            return Err(Error::Protocol(d.leg.server.clone(), "splice of a body of unknown length"));
        }
        let want = d.next_len(max);
        if want == 0 {
            return Ok(None);
        }
        let n = monoio::time::timeout(d.timeout, pipe.fill(&d.leg.stream, want))
            .await
            .map_err(|_| Error::Timeout(d.leg.server.clone()))?
            .map_err(|e| Error::Io(d.leg.server.clone(), e))?;
        if n == 0 {
            return Err(Error::Protocol(d.leg.server.clone(), "body shorter than its Content-Length"));
        }
        d.left = d.left.map(|l| l.saturating_sub(n as u64));
        Ok(Some(n))
    }

    /// Ends a download; its connection goes back to the pool if the body was read whole.
    pub fn finish(&self, d: Download) {
        let whole = match &d.chunked {
            Some(c) => c.is_done(),
            None => d.left == Some(0),
        };
        // a pooled socket must wake for every byte again: a head of 200 bytes never
        // reaches a low mark set for a body
        let reset = d.lowat == 1 || set_rcvlowat(&d.leg.stream, 1).is_ok();
        if d.keep && whole && d.buf.is_empty() && reset {
            self.release(d.leg);
        }
    }

    /// GETs a whole small body (a listing): status and bytes, at most `max` of them.
    pub async fn get(&self, topo: &Topology, server: &str, path: &str, max: usize) -> Result<(u16, Vec<u8>), Error> {
        self.get_with(topo, server, "GET", path, &[], max).await
    }

    /// [`Client::get`] with another method and extra header lines (each ending in CRLF).
    pub async fn get_with(
        &self,
        topo: &Topology,
        server: &str,
        method: &str,
        path: &str,
        extra: &[u8],
        max: usize,
    ) -> Result<(u16, Vec<u8>), Error> {
        let mut d = self.download_with(topo, server, method, path, extra).await?;
        let mut body = Vec::new();
        while let Some(c) = self.next_chunk(&mut d, 256 << 10).await? {
            if body.len() + c.len() > max {
                return Err(Error::Protocol(server.to_string(), "answer too large"));
            }
            body.extend_from_slice(&c);
        }
        let status = d.status;
        self.finish(d);
        Ok((status, body))
    }
}
