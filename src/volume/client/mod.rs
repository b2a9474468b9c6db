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
    io::{AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent, Canceller},
    net::TcpStream,
};

use super::{Error, Topology, Volume};

mod download;
mod upload;
mod wire;

pub use download::Download;
use wire::*;

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
        if let Some(v) = &vol {
            if !v.is_up() {
                return Err(Error::Down(server.to_string()));
            }
            if writes && !v.takes_writes() {
                return Err(Error::Fenced(server.to_string()));
            }
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
}

/// Reads a volume's answer to a request whose body was sent whole, and skips its body.
async fn read_answer(l: &mut Leased, t: Duration) -> Result<Answer, Error> {
    let (head, buf) = answer_head(l, t, true).await?;
    skip_body(&mut l.stream, &l.server, head, buf, t).await
}

/// Reads the head of the answer on `l` (`patient`: past `t` while its volume is up, see
/// [`read_head`]), and notes that the volume answered, which the prober weighs.
async fn answer_head(l: &mut Leased, t: Duration, patient: bool) -> Result<(Head, Vec<u8>), Error> {
    let vol = l.vol.as_deref();
    let answer = read_head(&mut l.stream, &l.server, t, vol.filter(|_| patient)).await;
    if let (Ok(_), Some(v)) = (&answer, vol) {
        v.answered();
    }
    answer
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

/// Writes a request and reads its answer's head. A write that takes no byte for `t` is
/// [`Error::Stalled`], never [`Error::Timeout`]: a timeout means the whole request went out,
/// which [`fence`] relies on (a DELETE queued behind a body cut short would go out as the
/// rest of that body: a volume stores it as the file's tail when the lengths meet).
async fn send_and_read_head(l: &mut Leased, msg: HeadBody, t: Duration) -> Result<(Head, Vec<u8>), Error> {
    // a body went out: the answer may wait on the volume reading what the sockets buffered;
    // a DELETE's or MOVE's on its disk unlinking a file (a 1 GiB one on ext4: ~0.5 s, more
    // with several at once)
    let slow_on_disk = msg.head.starts_with(b"DELETE ") || msg.head.starts_with(b"MOVE ");
    let patient = !msg.body.is_empty() || slow_on_disk;
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
    answer_head(l, t, patient).await
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

    /// An answer that comes as the wait for it ends is kept, not dropped with the read given
    /// up on: a PUT's answer lost so made its fence wait for it until nginx closed the idle
    /// connection, 5 minutes in which the volume took no write (seen under wrk at 1,000
    /// connections). A busy event loop is what opens the window: here another task holds the
    /// thread from the moment the wait ends, and the answer reaches the socket meanwhile.
    #[test]
    fn an_answer_that_came_as_the_wait_ended_is_kept() {
        use std::io::Write;
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let t = Duration::from_millis(30);
            for _ in 0..5 {
                let mut stream = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
                let (mut peer, _) = l.accept().unwrap();
                let answer = std::thread::spawn(move || {
                    std::thread::sleep(t + Duration::from_millis(15));
                    peer.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").unwrap();
                    peer
                });
                let busy = monoio::spawn(async move {
                    monoio::time::sleep(t).await;
                    std::thread::sleep(Duration::from_millis(60));
                });
                let head = match read_head(&mut stream, "v", t, None).await {
                    Ok((head, _)) => head,
                    // given up before the answer came: it must still be there to read
                    Err(Error::Timeout(_)) => {
                        read_head(&mut stream, "v", Duration::from_secs(2), None)
                            .await
                            .map_err(|e| e.to_string())
                            .expect("the answer that came as the wait ended")
                            .0
                    }
                    Err(e) => panic!("{e}"),
                };
                assert_eq!(head.status, 201);
                busy.await;
                drop(answer.join().unwrap());
            }
        });
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
