//! A per-thread HTTP/1.1 client for the volumes: keep-alive pools per volume, requests
//! retried once when a pooled connection turns out stale, and one body streamed to N replicas.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    os::fd::{AsRawFd, RawFd},
    pin::pin,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::future::{join_all, select, Either};
use monoio::{
    buf::{IoBuf, IoBufMut},
    io::{AsyncReadRent, AsyncWriteRent},
    net::TcpStream,
};

use super::{Error, Topology, Volume};
use crate::pipe::Pipe;

/// Idle connections kept per (thread, volume).
const POOL_MAX: usize = 64;
/// A pooled connection idle longer than this is dropped (below nginx's keepalive_timeout).
const IDLE_MAX: Duration = Duration::from_secs(20);
/// A connection older than this is closed after its request rather than pooled. Under BBR
/// (Debian's kernels offer it; this machine runs it) a busy connection's bandwidth estimate
/// sinks as it ages, and its sender paces ever slower: measured on loopback, nginx's CPU
/// per 1 MiB GetObject climbed 134 -> 315 us over 25 s on the same connections and the rate
/// fell by a third; made again every 5 s, both held. A connect costs ~50 us.
const MAX_AGE: Duration = Duration::from_secs(5);
/// A pooled connection idle less than this is reused without checking it first (nginx
/// keeps them 300 s, and a stale one costs a retry, not a failure).
const TRUST_IDLE: Duration = Duration::from_secs(1);
/// Largest response head we read from a volume.
const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// Pieces of a streamed PUT queued per replica (shared by the replicas, not copied): with
/// the store's quarter-MiB pieces, a replica may fall 1.5 MiB behind before reading pauses.
const UPLOAD_QUEUE: usize = 6;
/// An error page longer than this is not read to reuse its connection.
const MAX_SKIP: u64 = 64 << 10;

/// One thread's connections to the volumes; every call names the [`Topology`] it works in.
#[derive(Default)]
pub struct Client {
    idle: RefCell<HashMap<String, Vec<Idle>>>,
    /// `SO_RCVBUF` of each new connection (`-volume-rcvbuf`); 0: the kernel's autotuning.
    rcvbuf: usize,
}

/// A pooled connection: since when it is idle, and when it was made.
struct Idle {
    stream: TcpStream,
    since: Instant,
    born: Instant,
}

/// A connection taken from the pool (or fresh) for one request.
struct Leased {
    server: String,
    vol: Option<Arc<Volume>>,
    stream: TcpStream,
    reused: bool,
    /// When the connection was made.
    born: Instant,
}

/// A GET whose body is read piece by piece (a replica being copied, a listing).
pub struct Download {
    leg: Leased,
    pub status: u16,
    /// The body length, when the volume sent one.
    pub length: Option<u64>,
    /// Body bytes still to read from the socket; None: until the volume closes.
    left: Option<u64>,
    buf: Vec<u8>,
    /// Decoder of a chunked body (nginx sends autoindex listings so); `buf` is then raw input.
    chunked: Option<crate::http::Chunked>,
    keep: bool,
    timeout: Duration,
    /// The socket's `SO_RCVLOWAT` as [`Client::read_into`] last set it (1: the kernel's).
    lowat: usize,
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

/// A PUT in progress to several replicas at once.
pub struct Upload {
    legs: Vec<UploadLeg>,
    chunked: bool,
    timeout: Duration,
    /// Bytes queued for every replica so far (framing included).
    queued: u64,
    /// The bytes that make the whole request body: known at the start with a length, and
    /// once the terminator is queued when chunked.
    whole: Option<u64>,
    /// Set when the upload fails: the writers stop after the piece in hand. (A receiving end
    /// kept here to empty the queues would keep a full queue's sender waiting forever.)
    abort: Rc<Cell<bool>>,
}

/// One replica of an [`Upload`]: the queue to its writer task, and that task, which ends
/// with the bytes it wrote.
struct UploadLeg {
    /// The file's path on the volume (for a fence).
    path: String,
    tx: Option<flume::Sender<Bytes>>,
    task: Option<monoio::task::JoinHandle<(Leased, Result<u64, Error>)>>,
}

impl Drop for Upload {
    /// An upload dropped unfinished (its client failed) stops at the piece each writer has
    /// in hand instead of sending what is queued.
    fn drop(&mut self) {
        self.abort.set(true);
    }
}

/// The answer of a volume: status, and whether its connection can carry another request.
struct Answer {
    status: u16,
    keep: bool,
}

impl Client {
    /// A client whose connections each get a receive buffer of `rcvbuf` bytes (0: the
    /// kernel sizes it).
    pub fn new(rcvbuf: usize) -> Client {
        Client { rcvbuf, ..Client::default() }
    }

    /// A connection to `server` for a request; one that `writes` (changes files) also
    /// waits out a request of its own that timed out (see [`super::Late`]).
    async fn lease(&self, topo: &Topology, server: &str, fresh: bool, writes: bool) -> Result<Leased, Error> {
        let vol = topo.volume(server).cloned();
        if vol.as_ref().is_some_and(|v| if writes { !v.takes_writes() } else { !v.is_up() }) {
            return Err(Error::Down(server.to_string()));
        }
        if !fresh {
            loop {
                let popped = self.idle.borrow_mut().get_mut(server).and_then(|p| p.pop());
                match popped {
                    // one that went back to the pool a moment ago is trusted without a peek (a
                    // syscall per request): were it closed after all, the request is retried
                    // once on a fresh connection (see `send`)
                    Some(Idle { stream, since, born })
                        if since.elapsed() < TRUST_IDLE || (since.elapsed() < IDLE_MAX && still_open(&stream)) =>
                    {
                        return Ok(Leased { server: server.to_string(), vol, stream, reused: true, born })
                    }
                    Some(_) => continue,
                    None => break,
                }
            }
        }
        let connect = async {
            match vol.as_ref().and_then(|v| v.addr()) {
                Some(addr) => TcpStream::connect_addr(addr).await,
                // a volume outside the configured lists (an old record): resolve by name
                None => TcpStream::connect(server).await,
            }
            .map_err(|e| Error::Io(server.to_string(), e))
        };
        let stream = match monoio::time::timeout(topo.timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(failed(vol.as_ref(), e)),
            Err(_) => return Err(failed(vol.as_ref(), Error::Timeout(server.to_string()))),
        };
        let _ = stream.set_nodelay(true);
        // A fixed receive buffer, not the kernel's autotuned one: with autotuning the window
        // grows to many MiB, nginx's sendfile runs ahead of what this side takes off (a
        // splice, a hash), and the queued data costs both sides dearly (measured on loopback:
        // nginx's CPU per 1 MiB GetObject 480 -> 200 us, `verify -deep` 1.8x as fast).
        if self.rcvbuf > 0 {
            let _ = set_int(&stream, libc::SO_RCVBUF, self.rcvbuf);
        }
        Ok(Leased { server: server.to_string(), vol, stream, reused: false, born: Instant::now() })
    }

    fn release(&self, l: Leased) {
        let mut idle = self.idle.borrow_mut();
        let pool = idle.entry(l.server).or_default();
        if pool.len() < POOL_MAX && l.born.elapsed() < MAX_AGE {
            pool.push(Idle { stream: l.stream, since: Instant::now(), born: l.born });
        }
    }

    /// Sends a request and reads the answer's head, retrying once on a fresh connection when
    /// a pooled one fails before any answer. The buffer may hold the first body bytes.
    async fn send(
        &self,
        topo: &Topology,
        server: &str,
        head: Vec<u8>,
        body: Bytes,
    ) -> Result<(Leased, Head, Vec<u8>), Error> {
        let reads = head.starts_with(b"GET ") || head.starts_with(b"HEAD ");
        let mut l = self.lease(topo, server, false, !reads).await?;
        let r = match send_and_read_head(&mut l, HeadBody::new(head.clone(), body.clone()), topo.timeout).await {
            Err(Error::Io(..)) if l.reused => {
                l = self.lease(topo, server, true, !reads).await?;
                send_and_read_head(&mut l, HeadBody::new(head, body), topo.timeout).await
            }
            r => r,
        };
        match r {
            Ok((head, buf)) => Ok((l, head, buf)),
            Err(e @ Error::Timeout(_)) if !reads => {
                let e = failed(l.vol.as_ref().filter(|_| !l.reused), e);
                await_late(l);
                Err(e)
            }
            Err(e) => Err(failed(l.vol.as_ref().filter(|_| !l.reused), e)),
        }
    }

    /// One request with a small (or no) body (see [`Client::send`]). Returns the status.
    pub async fn request(
        &self,
        topo: &Topology,
        server: &str,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<u16, Error> {
        self.request_with(topo, server, method, path, &[], body).await
    }

    /// [`Client::request`] with extra header lines (each ending in CRLF).
    pub async fn request_with(
        &self,
        topo: &Topology,
        server: &str,
        method: &str,
        path: &str,
        extra: &[u8],
        body: Bytes,
    ) -> Result<u16, Error> {
        let msg = head_with(method, server, path, extra, Some(body.len() as u64));
        self.exchange(topo, server, msg, body, None).await.map(|(status, _)| status)
    }

    /// A request with no body, and the value of the answer's header `name` if it has one
    /// (the master's `Key-Rebalance`).
    pub async fn request_saying(
        &self,
        topo: &Topology,
        server: &str,
        method: &str,
        path: &str,
        name: &str,
    ) -> Result<(u16, Option<String>), Error> {
        let msg = head_with(method, server, path, &[], Some(0));
        self.exchange(topo, server, msg, Bytes::new(), Some(name)).await
    }

    /// Sends `msg` and `body`, reads past the answer's short body: its status, and the
    /// value of its header `name` when asked for and there.
    async fn exchange(
        &self,
        topo: &Topology,
        server: &str,
        msg: Vec<u8>,
        body: Bytes,
        name: Option<&str>,
    ) -> Result<(u16, Option<String>), Error> {
        let (mut l, head, buf) = self.send(topo, server, msg, body).await?;
        let said = name.and_then(|name| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            resp.parse(&buf[..head.head_len]).ok()?;
            let h = resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))?;
            Some(String::from_utf8_lossy(h.value).into_owned())
        });
        let a = skip_body(&mut l.stream, &l.server, head, buf, topo.timeout).await?;
        if a.keep {
            self.release(l);
        }
        Ok((a.status, said))
    }

    /// HEAD of a file: its size, or None when the volume has no such file (`404`).
    pub async fn stat(&self, topo: &Topology, server: &str, path: &str) -> Result<Option<u64>, Error> {
        let msg = head_with("HEAD", server, path, &[], Some(0));
        let (l, head, buf) = self.send(topo, server, msg, Bytes::new()).await?;
        // an answer to HEAD has no body, whatever its Content-Length says
        if head.keep && buf.len() == head.head_len {
            self.release(l);
        }
        match head.status {
            200 => Ok(Some(head.length.ok_or(Error::Protocol(server.to_string(), "HEAD without a Content-Length"))?)),
            404 => Ok(None),
            // nginx sends a folder's URL without its `/` to the one with it
            301 => Err(Error::Folder(server.to_string())),
            s => Err(Error::Status(server.to_string(), s)),
        }
    }

    /// PUTs `body` (whole, in memory, shared by every request) to every `(server, path)` at
    /// once; all must succeed. A volume that took a PUT whole but did not answer in time gets
    /// a DELETE of the file behind it on the same connection (see [`fence`]), so a late write
    /// cannot leave a file that the caller's clean-up already removed.
    pub async fn put_all(&self, topo: &Topology, targets: &[(String, String)], body: Bytes) -> Result<(), Error> {
        self.put_all_dated(topo, targets, body, 0).await
    }

    /// [`Client::put_all`] of a copy of a value written at `modified_ms` (see [`dated`]).
    pub async fn put_all_dated(
        &self,
        topo: &Topology,
        targets: &[(String, String)],
        body: Bytes,
        modified_ms: u64,
    ) -> Result<(), Error> {
        let date = dated(modified_ms);
        let results =
            join_all(targets.iter().map(|(s, p)| self.put_fenced(topo, s, p, date.as_bytes(), body.clone()))).await;
        first_error(targets, results, &[200, 201, 204])
    }

    /// One PUT of a whole body; on a timeout after the body went out, fenced.
    async fn put_fenced(
        &self,
        topo: &Topology,
        server: &str,
        path: &str,
        extra: &[u8],
        body: Bytes,
    ) -> Result<u16, Error> {
        let mut l = self.lease(topo, server, false, true).await?;
        let msg = HeadBody::new(head_with("PUT", server, path, extra, Some(body.len() as u64)), body.clone());
        let r = match send_and_read_head(&mut l, msg, topo.timeout).await {
            Err(Error::Io(..)) if l.reused => {
                l = self.lease(topo, server, true, true).await?;
                let msg = HeadBody::new(head_with("PUT", server, path, extra, Some(body.len() as u64)), body);
                send_and_read_head(&mut l, msg, topo.timeout).await
            }
            r => r,
        };
        match r {
            Ok((h, buf)) => {
                let a = skip_body(&mut l.stream, &l.server, h, buf, topo.timeout).await?;
                if a.keep {
                    self.release(l);
                }
                Ok(a.status)
            }
            Err(e @ Error::Timeout(_)) => {
                fence(l, path);
                Err(failed(topo.volume(server), e))
            }
            Err(e) => Err(failed(l.vol.as_ref().filter(|_| !l.reused), e)),
        }
    }

    /// DELETEs every `(server, path)` at once; a file already gone counts as deleted.
    pub async fn delete_all(&self, topo: &Topology, targets: &[(String, String)]) -> Result<(), Error> {
        let results = join_all(targets.iter().map(|(s, p)| self.request(topo, s, "DELETE", p, Bytes::new()))).await;
        first_error(targets, results, &[200, 204, 404])
    }

    /// [`Client::delete_all`] of files a failed write may or may not have made: each asked
    /// with `HEAD` first and deleted only if there. nginx logs a DELETE of a missing file as
    /// an error (`lstat() ... failed`), and a client hanging up half way through a body
    /// (which no volume keeps) made one such line per replica. A volume that took a whole
    /// body late is fenced on the PUT's own connection, as for `delete_all`.
    /// Returns how many it found and deleted.
    pub async fn delete_present(&self, topo: &Topology, targets: &[(String, String)]) -> Result<usize, Error> {
        let results = join_all(targets.iter().map(|(s, p)| async move {
            match self.stat(topo, s, p).await? {
                Some(_) => self.request(topo, s, "DELETE", p, Bytes::new()).await,
                None => Ok(404),
            }
        }))
        .await;
        let found = results.iter().filter(|r| matches!(r, Ok(200 | 204))).count();
        first_error(targets, results, &[200, 204, 404]).map(|()| found)
    }

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

    /// Starts a streamed PUT to every target: `len` is the body length, or None for chunked.
    /// Each replica gets its own writer task fed from a short queue, so a replica that is
    /// briefly slower does not hold up the others or the reading of the next piece. A copy
    /// of a value written at `modified_ms` keeps that time (see [`dated`]; 0: a new value).
    pub async fn upload_dated(
        &self,
        topo: &Topology,
        targets: &[(String, String)],
        len: Option<u64>,
        modified_ms: u64,
    ) -> Result<Upload, Error> {
        let date = dated(modified_ms);
        // fresh connections: a body is streamed once and cannot be sent again, so a pooled
        // connection that nginx closed at the same moment would fail the PUT (and wrongly
        // mark a healthy volume down); a connect on a LAN costs little next to a streamed body
        let leases = join_all(targets.iter().map(|(s, _)| self.lease(topo, s, true, true))).await;
        let mut legs = Vec::with_capacity(targets.len());
        for l in leases {
            legs.push(l?);
        }
        let t = topo.timeout;
        let writes = legs.iter_mut().zip(targets).map(|(l, (server, path))| {
            let msg = head_with("PUT", server, path, date.as_bytes(), len);
            async move { write_to(l, msg, t).await }
        });
        let results = join_all(writes).await;
        let mut first = None;
        for (l, r) in legs.iter().zip(results) {
            if let Err(e) = r {
                first.get_or_insert(failed(l.vol.as_ref(), e));
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        let abort = Rc::new(Cell::new(false));
        let legs = legs
            .into_iter()
            .zip(targets)
            .map(|(l, (_, path))| {
                let (tx, rx) = flume::bounded(UPLOAD_QUEUE);
                let task = Some(monoio::spawn(write_leg(l, rx, abort.clone(), t)));
                UploadLeg { path: path.clone(), tx: Some(tx), task }
            })
            .collect();
        Ok(Upload { legs, chunked: len.is_none(), timeout: t, queued: 0, whole: len, abort })
    }

    /// Queues one piece of the body for every replica (the bytes are shared, not copied);
    /// waits only while a replica's queue is full.
    pub async fn upload_chunk(&self, up: &mut Upload, chunk: Bytes) -> Result<(), Error> {
        let data = if up.chunked {
            let mut framed = Vec::with_capacity(chunk.len() + 20);
            framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            Bytes::from(framed)
        } else {
            chunk
        };
        self.queue(up, data).await
    }

    /// Queues bytes, as they are, for every replica's writer.
    async fn queue(&self, up: &mut Upload, data: Bytes) -> Result<(), Error> {
        let n = data.len() as u64;
        for leg in &up.legs {
            let sent = match &leg.tx {
                Some(tx) => tx.send_async(data.clone()).await.is_ok(),
                None => false,
            };
            if !sent {
                // that replica's writer stopped: it failed; stop the others and say why
                let err = self.end_legs(up, true).await.err();
                return Err(err.unwrap_or_else(|| Error::Protocol("volume".into(), "a replica writer stopped early")));
            }
        }
        up.queued += n;
        Ok(())
    }

    /// Ends the body and waits for every replica's answer.
    pub async fn upload_finish(&self, mut up: Upload) -> Result<(), Error> {
        if up.chunked {
            const LAST: &[u8] = b"0\r\n\r\n";
            up.whole = Some(up.queued + LAST.len() as u64);
            self.queue(&mut up, Bytes::from_static(LAST)).await?;
        }
        let legs = self.end_legs(&mut up, false).await?;
        let t = up.timeout;
        let answers = join_all(legs.into_iter().map(|(mut l, path, _)| async move {
            let a = read_answer(&mut l, t).await;
            (l, path, a)
        }))
        .await;
        let mut first: Option<Error> = None;
        for (l, path, a) in answers {
            match a {
                Ok(a) if matches!(a.status, 200 | 201 | 204) => {
                    if a.keep {
                        self.release(l);
                    }
                }
                Ok(a) => {
                    first.get_or_insert(Error::Status(l.server, a.status));
                }
                Err(e) => {
                    let e = failed(l.vol.as_ref(), e);
                    if matches!(e, Error::Timeout(_)) {
                        fence(l, &path);
                    }
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Gives up an upload whose source failed at its end: the writers stop, and replicas that
    /// took the whole body are answered (so a DELETE sent next cannot overtake their PUT).
    pub async fn upload_cancel(&self, mut up: Upload) {
        let (t, whole) = (up.timeout, up.whole);
        if let Ok(legs) = self.end_legs(&mut up, true).await {
            join_all(legs.into_iter().filter(|(_, _, w)| Some(*w) == whole).map(|(mut l, path, _)| async move {
                if let Err(Error::Timeout(_)) = read_answer(&mut l, t).await {
                    fence(l, &path);
                }
            }))
            .await;
        }
    }

    /// Closes every queue (what is queued is dropped if `abort`) and waits for the writers. All wrote
    /// everything: their connections. One failed: its error (its volume marked down if it
    /// was unreachable), once every replica that did get the whole body has answered, so
    /// that a DELETE sent next to clean up cannot overtake that replica's PUT.
    async fn end_legs(&self, up: &mut Upload, abort: bool) -> Result<Vec<(Leased, String, u64)>, Error> {
        if abort {
            up.abort.set(true);
        }
        for leg in &mut up.legs {
            leg.tx = None;
        }
        let mut done = Vec::with_capacity(up.legs.len());
        let mut first = None;
        for leg in &mut up.legs {
            let Some(task) = leg.task.take() else { continue };
            let (l, r) = task.await;
            match r {
                Ok(written) => done.push((l, leg.path.clone(), written)),
                Err(e) => {
                    first.get_or_insert(failed(l.vol.as_ref(), e));
                }
            }
        }
        let Some(err) = first else { return Ok(done) };
        let t = up.timeout;
        let whole = up.whole;
        join_all(done.into_iter().filter(|(_, _, w)| Some(*w) == whole).map(|(mut l, path, _)| async move {
            if let Err(Error::Timeout(_)) = read_answer(&mut l, t).await {
                fence(l, &path);
            }
        }))
        .await;
        Err(err)
    }
}

/// One replica's writer: sends the queued pieces in order until the queue closes, and ends
/// with the bytes it wrote. Dropping the [`Upload`] closes the queues, so an abandoned PUT
/// ends here and its connection, never released to the pool, closes.
async fn write_leg(
    mut l: Leased,
    rx: flume::Receiver<Bytes>,
    abort: Rc<Cell<bool>>,
    t: Duration,
) -> (Leased, Result<u64, Error>) {
    let mut written = 0;
    while let Ok(piece) = rx.recv_async().await {
        if abort.get() {
            break;
        }
        let n = piece.len() as u64;
        if let Err(e) = write_to(&mut l, piece, t).await {
            return (l, Err(e));
        }
        written += n;
    }
    (l, Ok(written))
}

/// Reads a volume's answer to a request whose body was sent whole, and skips its body.
async fn read_answer(l: &mut Leased, t: Duration) -> Result<Answer, Error> {
    let (head, buf) = read_head(&mut l.stream, &l.server, t, l.vol.as_deref()).await?;
    if let Some(v) = &l.vol {
        v.answered();
    }
    skip_body(&mut l.stream, &l.server, head, buf, t).await
}

/// Writes all of `data`, allowing `t` for the volume to take some bytes rather than for the
/// whole: a streamed piece of a MiB that a volume takes slowly (its disk throttled by
/// writeback, 200 ms pauses at a time) is progress, not a hang. A volume that takes nothing
/// for `t` has stalled (see [`taken`]).
async fn write_to<B: IoBuf + 'static>(l: &mut Leased, data: B, t: Duration) -> Result<(), Error> {
    let len = data.bytes_init();
    let (mut buf, mut done) = (data, 0);
    while done < len {
        let fd = l.stream.as_raw_fd();
        let (r, slice) = taken(fd, &l.server, t, true, l.stream.write(buf.slice(done..))).await?;
        buf = slice.into_inner();
        match r.map_err(|e| Error::Io(l.server.clone(), e))? {
            0 => return Err(Error::Io(l.server.clone(), std::io::ErrorKind::WriteZero.into())),
            n => done += n,
        }
    }
    Ok(())
}

/// What a volume must take of a body in each `-voltimeout` not to have stalled. A margin:
/// the kernel of a volume that stopped reading may still take a little now and then (it
/// merges the segments it holds to make room, and acknowledges a few more), which is no
/// progress; and a volume that takes under 64 KiB in a whole -voltimeout is as good as stalled.
const MIN_PROGRESS: i32 = 64 << 10;

/// Awaits a write to a volume: [`Error::Stalled`] once the volume took (almost) nothing for
/// `t` (see [`MIN_PROGRESS`]). The write itself may wait far longer while bytes flow: the
/// kernel wakes a writer whose send buffer is full only once a good share of it is free,
/// which for a volume reading slowly through a buffer grown to megabytes comes seconds
/// apart. What the volume took is what left the send queue (`SIOCOUTQ`, the bytes it has
/// not acknowledged).
///
/// `watch` false (a small request on an idle connection, which the kernel takes at once):
/// no baseline is read, and the first timeout is a stall, sparing the hot path a syscall.
/// On a stall the connection is set to reset when it closes, so that bytes still queued
/// (or a write that completed as the timer fired) do not reach the volume as a whole request.
async fn taken<F: std::future::Future>(
    fd: RawFd,
    server: &str,
    t: Duration,
    watch: bool,
    write: F,
) -> Result<F::Output, Error> {
    let mut write = pin!(write);
    let mut queued = if watch { unacked(fd) } else { None };
    loop {
        if let Ok(done) = monoio::time::timeout(t, write.as_mut()).await {
            return Ok(done);
        }
        match (queued, unacked(fd)) {
            // grown: the write went into the kernel just now, its completion not yet seen
            (Some(before), Some(now)) if now > before => queued = Some(now),
            (Some(before), Some(now)) if before - now >= MIN_PROGRESS.min(before).max(1) => queued = Some(now),
            _ => {
                reset_on_close(fd);
                return Err(Error::Stalled(server.to_string()));
            }
        }
    }
}

/// `SO_LINGER` 0: the close sends a reset and drops what is queued, so the volume aborts
/// the request rather than reading a complete one from a connection given up on.
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads a linger struct from a live local, for a socket held open
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The bytes written to a socket that its peer has not acknowledged yet.
fn unacked(fd: RawFd) -> Option<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int, for a socket the caller holds open
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (r == 0).then_some(n)
}

/// Reads at most `want` (> 0) body bytes of `d` into `buf`'s spare room: the bytes read, 0
/// at the end of a body without a length.
async fn read_body(d: &mut Download, buf: &mut Vec<u8>, want: usize) -> Result<usize, Error> {
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
const LOWAT: usize = 128 << 10;

fn set_rcvlowat(s: &TcpStream, bytes: usize) -> std::io::Result<()> {
    set_int(s, libc::SO_RCVLOWAT, bytes)
}

/// Sets a socket-level option that takes an int.
fn set_int(s: &TcpStream, opt: libc::c_int, value: usize) -> std::io::Result<()> {
    set_opt(s, libc::SOL_SOCKET, opt, value)
}

fn set_opt(s: &TcpStream, level: libc::c_int, opt: libc::c_int, value: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = value.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt reads an int from a live local for an fd the stream holds open
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Notes a failure: a volume that cannot be reached (refused, reset) is down from now on.
/// One that stays silent is left to the prober, whose several connections tell a hung
/// volume from a busy worker: under heavy writes one request waiting past the timeout on a
/// worker blocked by its disk marked the volume down, every write to it failed until the
/// next probe, and the writes already waiting on it gave up too (see `read_head`'s
/// patience) and were fenced, so that it took no write for seconds more.
fn failed(vol: Option<&Arc<Volume>>, e: Error) -> Error {
    if let Some(v) = vol {
        v.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Error::Io(..) = &e {
            v.mark_down(&e);
        }
    }
    e
}

/// How long a fenced connection waits for a hung volume to answer its PUT and the DELETE
/// queued behind it.
const FENCE_WAIT: Duration = Duration::from_secs(600);

/// A PUT whose whole body went out but whose answer did not come in time may still be
/// written when the volume wakes up, after any clean-up DELETE sent on another connection
/// (nginx serves its connections in any order). A DELETE of the same file pipelined on the
/// same connection is served after that PUT, so whatever the volume does late, the file ends
/// deleted. The connection is kept open in the background until both answers came (or
/// [`FENCE_WAIT`]), so nginx does not drop the queued DELETE with a closed connection.
fn fence(mut l: Leased, path: &str) {
    let msg = head("DELETE", &l.server, path, Some(0));
    let late = l.vol.as_ref().map(|v| v.late());
    let until = kept(&l);
    monoio::spawn(async move {
        let _late = late;
        if write_to(&mut l, msg, left(until)).await.is_err() {
            return;
        }
        let _ = read_answers(&mut l, 2, until).await;
    });
}

/// Reads `n` answers pipelined on one connection (a fence's PUT and DELETE), by `until`.
/// They often come in one read, which [`read_answer`] (one answer; the rest of what it read
/// is dropped) would take for one: the second wait then lasted until nginx closed the idle
/// connection, 5 minutes, the volume taking no write meanwhile.
async fn read_answers(l: &mut Leased, mut n: usize, until: Instant) -> Result<(), Error> {
    let bad = || Error::Protocol(l.server.clone(), "malformed response");
    let (mut buf, mut skip, mut to_eof) = (Vec::<u8>::new(), 0usize, false);
    loop {
        // the answers the bytes so far hold, whole
        while !to_eof {
            let k = skip.min(buf.len());
            buf.drain(..k);
            skip -= k;
            if skip > 0 {
                break;
            }
            if n == 0 {
                return Ok(());
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let head = match resp.parse(&buf).map_err(|_| bad())? {
                httparse::Status::Partial if buf.len() > MAX_RESPONSE_HEAD => return Err(bad()),
                httparse::Status::Partial => break,
                httparse::Status::Complete(h) => h,
            };
            let status = resp.code.unwrap_or(0);
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
            buf.drain(..head);
            match (status, length) {
                (100..=199, _) => continue,
                (204 | 304, _) => skip = 0,
                (_, Some(len)) => skip = len,
                // no length (chunked, or to the close): done when the volume closes it
                _ => to_eof = true,
            }
            n -= 1;
        }
        let chunk = Vec::with_capacity(4096);
        let (r, chunk) = monoio::time::timeout(left(until), l.stream.read(chunk))
            .await
            .map_err(|_| Error::Timeout(l.server.clone()))?;
        match r.map_err(|e| Error::Io(l.server.clone(), e))? {
            0 if to_eof => return Ok(()),
            0 => return Err(Error::Io(l.server.clone(), std::io::ErrorKind::UnexpectedEof.into())),
            _ => buf.extend_from_slice(&chunk),
        }
    }
}

/// A connection kept for late answers: until when, and TCP keepalive on it, so that a volume
/// host that crashed (no reset ever comes) ends the wait within about 30 s, not at
/// [`FENCE_WAIT`].
fn kept(l: &Leased) -> Instant {
    let _ = set_int(&l.stream, libc::SO_KEEPALIVE, 1);
    let _ = set_opt(&l.stream, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
    let _ = set_opt(&l.stream, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
    let _ = set_opt(&l.stream, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    Instant::now() + FENCE_WAIT
}

fn left(until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
}

/// A request that changes files (a DELETE, a MOVE, a marker's PUT) whose answer did not
/// come in time may still be carried out, after whatever is sent next on another
/// connection. Its volume takes no write until the answer comes (or [`FENCE_WAIT`], or the
/// connection fails): see [`super::Late`].
fn await_late(mut l: Leased) {
    let Some(late) = l.vol.as_ref().map(|v| v.late()) else { return };
    let until = kept(&l);
    monoio::spawn(async move {
        let _late = late;
        let _ = read_answers(&mut l, 1, until).await;
    });
}

/// A request head and its body, written with one `writev`: the body is shared by every
/// replica's request (a `Bytes` clone), never copied into each.
struct HeadBody {
    head: Vec<u8>,
    body: Bytes,
    iov: Box<[libc::iovec; 2]>,
}

impl HeadBody {
    fn new(head: Vec<u8>, body: Bytes) -> HeadBody {
        let iov = Box::new([
            libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() },
            libc::iovec { iov_base: body.as_ptr() as *mut libc::c_void, iov_len: body.len() },
        ]);
        HeadBody { head, body, iov }
    }
}

// SAFETY: the iovecs point into `head`'s and `body`'s heap buffers, which never move or
// change while this value lives (neither is touched after `new`); the array is boxed, so
// its address is stable too.
unsafe impl monoio::buf::IoVecBuf for HeadBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        if self.body.is_empty() {
            1
        } else {
            2
        }
    }
}

/// Writes a request and reads its answer's head. A write that takes no byte for `t` is
/// [`Error::Stalled`], never [`Error::Timeout`]: a timeout means the whole request went out,
/// which [`fence`] relies on (a DELETE queued behind a body cut short would go out as the
/// rest of that body: a volume stores it as the file's tail when the lengths meet).
async fn send_and_read_head(l: &mut Leased, msg: HeadBody, t: Duration) -> Result<(Head, Vec<u8>), Error> {
    // a body went out: the answer may wait on the volume reading what the sockets buffered;
    // a DELETE's or MOVE's on its disk unlinking a file (a 1 GiB one on ext4: ~0.5 s, more
    // with several at once)
    let slow_on_disk = msg.head.starts_with(b"DELETE ") || msg.head.starts_with(b"MOVE ");
    let patience = if msg.body.is_empty() && !slow_on_disk { None } else { l.vol.clone() };
    let whole = msg.head.len() + msg.body.len();
    // one writev, which takes it all unless the socket's buffer is full
    let fd = l.stream.as_raw_fd();
    let (res, msg) = taken(fd, &l.server, t, whole > MIN_PROGRESS as usize, l.stream.writev(msg)).await?;
    let n = res.map_err(|e| Error::Io(l.server.clone(), e))?;
    if n < whole {
        // the rest as the volume takes it, each wait as long as `t`
        let HeadBody { mut head, body, .. } = msg;
        if n < head.len() {
            write_to(l, head.split_off(n), t).await?;
            write_to(l, body, t).await?;
        } else {
            write_to(l, body.slice(n - head.len()..), t).await?;
        }
    }
    let answer = read_head(&mut l.stream, &l.server, t, patience.as_deref()).await;
    if let (Ok(_), Some(v)) = (&answer, &l.vol) {
        v.answered();
    }
    answer
}

fn first_error(targets: &[(String, String)], results: Vec<Result<u16, Error>>, ok: &[u16]) -> Result<(), Error> {
    for ((server, _), r) in targets.iter().zip(results) {
        match r {
            Ok(s) if ok.contains(&s) => {}
            Ok(s) => return Err(Error::Status(server.clone(), s)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `Date` header line of a copy of a value written at `modified_ms` (milliseconds since
/// the Unix epoch; 0, unknown: none): nginx gives the file it writes that time, so a copy
/// (a rebalance's, a repair's) keeps the time a `rebuild` reads back as the value's (S3's
/// `Last-Modified`), not the copy's own.
fn dated(modified_ms: u64) -> String {
    match modified_ms {
        0 => String::new(),
        ms => format!("Date: {}\r\n", crate::dates::http_date((ms / 1000) as i64)),
    }
}

fn head(method: &str, server: &str, path: &str, len: Option<u64>) -> Vec<u8> {
    head_with(method, server, path, &[], len)
}

/// A request head; `extra` is more header lines, each ending in CRLF.
fn head_with(method: &str, server: &str, path: &str, extra: &[u8], len: Option<u64>) -> Vec<u8> {
    let mut h = Vec::with_capacity(96 + path.len() + extra.len());
    for part in [method, " ", path, " HTTP/1.1\r\nHost: ", server, "\r\n"] {
        h.extend_from_slice(part.as_bytes());
    }
    h.extend_from_slice(extra);
    // a protected volume refuses the master's writes (and, with SIGN=1, its reads) without it
    h.extend_from_slice(super::secret::header());
    match len {
        Some(n) => {
            h.extend_from_slice(b"Content-Length: ");
            h.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            h.extend_from_slice(b"\r\n\r\n");
        }
        None => h.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n"),
    }
    h
}

/// Whether a pooled connection is still usable: no EOF and no stray bytes waiting.
fn still_open(s: &TcpStream) -> bool {
    let mut b = 0u8;
    // SAFETY: a valid fd and a 1-byte buffer we own; MSG_PEEK leaves the socket as it was.
    let n = unsafe {
        libc::recv(s.as_raw_fd(), &mut b as *mut u8 as *mut libc::c_void, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// A response head from a volume.
struct Head {
    status: u16,
    keep: bool,
    length: Option<u64>,
    chunked: bool,
    head_len: usize,
}

/// Longest wait for the answer to a request with a body while its volume stays up.
const ANSWER_PATIENCE: Duration = Duration::from_secs(60);
/// How often a wait forgiven past `-voltimeout` asks whether the prober found the volume
/// down meanwhile: a hung volume fails the request this soon after it is marked down (it
/// waited a whole `-voltimeout` more, failing a PUT after twice that).
const PATIENCE_STEP: Duration = Duration::from_millis(100);

/// Reads one response head; the buffer returned may hold the first body bytes after it.
///
/// `patience`: the volume took a body, whose last bytes may still sit in the two sockets'
/// buffers (several MiB on a fast link), which a volume whose disk writeback throttles it
/// reads slowly; or a DELETE or MOVE, whose unlink of a big file takes as long as its disk
/// wants. Either way the answer can come seconds later while the volume is alive and well.
/// So while no byte of the answer came, the wait goes on past `t` as long as the prober
/// still finds the volume up (a hung one is marked down within about 1.5 s), looked at
/// every [`PATIENCE_STEP`] beside one read left running, up to [`ANSWER_PATIENCE`].
async fn read_head(
    stream: &mut TcpStream,
    server: &str,
    t: Duration,
    patience: Option<&Volume>,
) -> Result<(Head, Vec<u8>), Error> {
    let err_io = |e| Error::Io(server.to_string(), e);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let began = Instant::now();
    // past `t` with no byte while the prober finds the volume up: then the read waits on
    let mut patient: Option<&Volume> = None;
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_RESPONSE_HEAD {
                return Err(Error::Protocol(server.to_string(), "response head too large"));
            }
            buf.reserve(buf.len());
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let read = stream.read(buf.slice_mut(len..cap));
        let got = match patient {
            // not cancelled every step (a cancelled read may drop what it read): the read
            // runs until it ends, or the volume is found down, or patience ends
            Some(v) => {
                let given_up = async {
                    while v.is_up() && began.elapsed() < ANSWER_PATIENCE {
                        monoio::time::sleep(PATIENCE_STEP).await;
                    }
                };
                match select(pin!(read), pin!(given_up)).await {
                    Either::Left((r, _)) => Some(r),
                    Either::Right(_) => None,
                }
            }
            None => monoio::time::timeout(t, read).await.ok(),
        };
        let Some((res, slice)) = got else {
            // the buffer went with the cancelled read: nothing was in it yet
            if len == 0 && patient.is_none() && patience.is_some_and(|v| v.is_up()) {
                buf = Vec::with_capacity(1024);
                patient = patience;
                continue;
            }
            return Err(Error::Timeout(server.to_string()));
        };
        // bytes came: the rest of the head is due within `t` again
        patient = None;
        buf = slice.into_inner();
        if res.map_err(err_io)? == 0 {
            return Err(err_io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(Error::Protocol(server.to_string(), "malformed response")),
            Ok(httparse::Status::Complete(n)) => {
                let keep = resp.version == Some(1);
                let mut length = None;
                let mut chunked = false;
                let mut close = false;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
                    } else if h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        close |= !chunked;
                    }
                }
                let status = resp.code.unwrap_or(0);
                if chunked {
                    length = None;
                } else if matches!(status, 204 | 304) {
                    length = Some(0);
                }
                return Ok((Head { status, keep: keep && !close, length, chunked, head_len: n }, buf));
            }
        }
    }
}

/// Reads past a short body so the connection can carry the next request.
async fn skip_body(
    stream: &mut TcpStream,
    server: &str,
    head: Head,
    mut buf: Vec<u8>,
    t: Duration,
) -> Result<Answer, Error> {
    let mut keep = head.keep;
    match head.length {
        Some(n) if keep && n <= MAX_SKIP => {
            let mut left = n.saturating_sub((buf.len() - head.head_len) as u64);
            while left > 0 {
                buf.clear();
                let (res, b) =
                    monoio::time::timeout(t, stream.read(buf)).await.map_err(|_| Error::Timeout(server.to_string()))?;
                buf = b;
                match res.map_err(|e| Error::Io(server.to_string(), e))? {
                    0 => {
                        keep = false;
                        break;
                    }
                    k => left = left.saturating_sub(k as u64),
                }
            }
        }
        _ => keep = false,
    }
    Ok(Answer { status: head.status, keep })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcvbuf_of(s: &TcpStream) -> usize {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int into a live local for an fd the stream holds open
        let r = unsafe {
            libc::getsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &mut v as *mut _ as *mut _, &mut len)
        };
        assert_eq!(r, 0);
        v as usize
    }

    /// `-volume-rcvbuf` reaches each connection to a volume (the kernel reports twice what
    /// was set, its bookkeeping included); 0 leaves the kernel's own size.
    #[test]
    fn connections_get_the_receive_buffer_asked_for() {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap().to_string();
            // a server no topology names is not taken for down
            let topo = Topology::new(&[], 1, 1, Duration::from_secs(1), None);
            let fixed = Client::new(300 << 10).lease(&topo, &addr, true, false).await.unwrap();
            assert_eq!(rcvbuf_of(&fixed.stream), 600 << 10);
            let kernel = Client::new(0).lease(&topo, &addr, true, false).await.unwrap();
            assert_ne!(rcvbuf_of(&kernel.stream), 600 << 10);
        });
    }
}
