//! A per-thread HTTP/1.1 client for the volumes: keep-alive pools per volume, requests
//! retried once when a pooled connection turns out stale, and one body streamed to N replicas.

use std::{
    cell::RefCell,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::future::join_all;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};

use super::{Error, Volumes};

/// Idle connections kept per (thread, volume).
const POOL_MAX: usize = 64;
/// A pooled connection idle longer than this is dropped (below nginx's keepalive_timeout).
const IDLE_MAX: Duration = Duration::from_secs(20);
/// Largest response head we read from a volume.
const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// An error page longer than this is not read to reuse its connection.
const MAX_SKIP: u64 = 64 << 10;

pub struct Client {
    vols: Arc<Volumes>,
    idle: RefCell<Vec<Vec<(TcpStream, Instant)>>>,
}

/// A connection taken from the pool (or fresh) for one request.
struct Leased {
    vol: Option<usize>,
    stream: TcpStream,
    reused: bool,
}

/// A PUT in progress to several replicas at once.
pub struct Upload {
    legs: Vec<(String, Leased)>,
    chunked: bool,
}

/// The answer of a volume: status, and whether its connection can carry another request.
struct Answer {
    status: u16,
    keep: bool,
}

impl Client {
    pub fn new(vols: Arc<Volumes>) -> Client {
        let idle = RefCell::new((0..vols.len()).map(|_| Vec::new()).collect());
        Client { vols, idle }
    }

    pub fn volumes(&self) -> &Volumes {
        &self.vols
    }

    fn timeout(&self) -> Duration {
        self.vols.timeout
    }

    async fn lease(&self, server: &str, fresh: bool) -> Result<Leased, Error> {
        let vol = self.vols.index_of(server);
        if let (Some(i), false) = (vol, fresh) {
            loop {
                let popped = self.idle.borrow_mut()[i].pop();
                match popped {
                    Some((s, t)) if t.elapsed() < IDLE_MAX && still_open(&s) => {
                        return Ok(Leased {
                            vol,
                            stream: s,
                            reused: true,
                        })
                    }
                    Some(_) => continue,
                    None => break,
                }
            }
        }
        let connect = async {
            match vol {
                Some(i) => {
                    if !self.vols.is_up(server) {
                        return Err(Error::Down(server.to_string()));
                    }
                    let addr = self
                        .vols
                        .addr(i)
                        .ok_or_else(|| Error::Down(server.to_string()))?;
                    TcpStream::connect_addr(addr)
                        .await
                        .map_err(|e| Error::Io(server.to_string(), e))
                }
                // a volume outside the configured list (an old record): resolve by name
                None => TcpStream::connect(server)
                    .await
                    .map_err(|e| Error::Io(server.to_string(), e)),
            }
        };
        let stream = match monoio::time::timeout(self.timeout(), connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.failed(vol, e)),
            Err(_) => return Err(self.failed(vol, Error::Timeout(server.to_string()))),
        };
        let _ = stream.set_nodelay(true);
        Ok(Leased {
            vol,
            stream,
            reused: false,
        })
    }

    /// Notes a failure: a volume that cannot be reached or stays silent is down from now on.
    fn failed(&self, vol: Option<usize>, e: Error) -> Error {
        if let (Some(i), Error::Timeout(_) | Error::Io(..)) = (vol, &e) {
            self.vols.mark_down(i, &e);
        }
        e
    }

    fn release(&self, l: Leased) {
        if let Some(i) = l.vol {
            let mut idle = self.idle.borrow_mut();
            if idle[i].len() < POOL_MAX {
                idle[i].push((l.stream, Instant::now()));
            }
        }
    }

    /// One request with a small (or no) body; retried once on a fresh connection when a
    /// pooled one fails before any answer. Returns the status.
    pub async fn request(
        &self,
        server: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<u16, Error> {
        let mut msg = head(method, server, path, Some(body.len() as u64));
        msg.extend_from_slice(body);
        let mut l = self.lease(server, false).await?;
        let r = match self.exchange(server, &mut l, msg.clone()).await {
            Err(Error::Io(..)) if l.reused => {
                l = self.lease(server, true).await?;
                self.exchange(server, &mut l, msg).await
            }
            r => r,
        };
        match r {
            Ok(a) => {
                if a.keep {
                    self.release(l);
                }
                Ok(a.status)
            }
            Err(e) => Err(self.failed(l.vol.filter(|_| !l.reused), e)),
        }
    }

    async fn exchange(&self, server: &str, l: &mut Leased, msg: Vec<u8>) -> Result<Answer, Error> {
        let t = self.timeout();
        let (res, _) = monoio::time::timeout(t, l.stream.write_all(msg))
            .await
            .map_err(|_| Error::Timeout(server.to_string()))?;
        res.map_err(|e| Error::Io(server.to_string(), e))?;
        read_answer(&mut l.stream, server, t).await
    }

    /// PUTs `body` (whole, in memory) to every `(server, path)` at once; all must succeed.
    pub async fn put_all(&self, targets: &[(String, String)], body: &[u8]) -> Result<(), Error> {
        let results = join_all(targets.iter().map(|(s, p)| self.request(s, "PUT", p, body))).await;
        first_error(targets, results, &[200, 201, 204])
    }

    /// DELETEs every `(server, path)` at once; a file already gone counts as deleted.
    pub async fn delete_all(&self, targets: &[(String, String)]) -> Result<(), Error> {
        let results = join_all(
            targets
                .iter()
                .map(|(s, p)| self.request(s, "DELETE", p, b"")),
        )
        .await;
        first_error(targets, results, &[200, 204, 404])
    }

    /// Starts a streamed PUT to every target: `len` is the body length, or None for chunked.
    pub async fn upload(
        &self,
        targets: &[(String, String)],
        len: Option<u64>,
    ) -> Result<Upload, Error> {
        let leases = join_all(targets.iter().map(|(s, _)| self.lease(s, false))).await;
        let mut legs = Vec::with_capacity(targets.len());
        for ((server, path), l) in targets.iter().zip(leases) {
            legs.push((server.clone(), l?));
            let _ = path;
        }
        let mut up = Upload {
            legs,
            chunked: len.is_none(),
        };
        let t = self.timeout();
        let writes = up
            .legs
            .iter_mut()
            .zip(targets)
            .map(|((server, l), (_, path))| {
                let msg = head("PUT", server, path, len);
                async move {
                    let (r, _) = monoio::time::timeout(t, l.stream.write_all(msg))
                        .await
                        .map_err(|_| Error::Timeout(server.clone()))?;
                    r.map(drop).map_err(|e| Error::Io(server.clone(), e))
                }
            });
        let results = join_all(writes).await;
        self.leg_errors(&up, results)?;
        Ok(up)
    }

    /// Sends one piece of the body to every replica at once (the bytes are shared, not copied).
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
        self.send_all(up, data).await
    }

    async fn send_all(&self, up: &mut Upload, data: Bytes) -> Result<(), Error> {
        let t = self.timeout();
        let writes = up.legs.iter_mut().map(|(server, l)| {
            let data = data.clone();
            async move {
                let (r, _) = monoio::time::timeout(t, l.stream.write_all(data))
                    .await
                    .map_err(|_| Error::Timeout(server.clone()))?;
                r.map(drop).map_err(|e| Error::Io(server.clone(), e))
            }
        });
        let results = join_all(writes).await;
        self.leg_errors(up, results)
    }

    /// Ends the body and waits for every replica's answer.
    pub async fn upload_finish(&self, mut up: Upload) -> Result<(), Error> {
        if up.chunked {
            self.send_all(&mut up, Bytes::from_static(b"0\r\n\r\n"))
                .await?;
        }
        let t = self.timeout();
        let answers = join_all(
            up.legs
                .iter_mut()
                .map(|(server, l)| async move { read_answer(&mut l.stream, server, t).await }),
        )
        .await;
        let mut first: Option<Error> = None;
        for ((server, l), a) in up.legs.into_iter().zip(answers) {
            match a {
                Ok(a) if matches!(a.status, 200 | 201 | 204) => {
                    if a.keep {
                        self.release(l);
                    }
                }
                Ok(a) => {
                    first.get_or_insert(Error::Status(server, a.status));
                }
                Err(e) => {
                    let e = self.failed(l.vol, e);
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn leg_errors(&self, up: &Upload, results: Vec<Result<(), Error>>) -> Result<(), Error> {
        let mut first = None;
        for ((_, l), r) in up.legs.iter().zip(results) {
            if let Err(e) = r {
                let e = self.failed(l.vol, e);
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn first_error(
    targets: &[(String, String)],
    results: Vec<Result<u16, Error>>,
    ok: &[u16],
) -> Result<(), Error> {
    for ((server, _), r) in targets.iter().zip(results) {
        match r {
            Ok(s) if ok.contains(&s) => {}
            Ok(s) => return Err(Error::Status(server.clone(), s)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn head(method: &str, server: &str, path: &str, len: Option<u64>) -> Vec<u8> {
    let mut h = Vec::with_capacity(96 + path.len());
    for part in [method, " ", path, " HTTP/1.1\r\nHost: ", server, "\r\n"] {
        h.extend_from_slice(part.as_bytes());
    }
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
        libc::recv(
            s.as_raw_fd(),
            &mut b as *mut u8 as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Reads one response head (and a short body, so the connection can be reused).
async fn read_answer(stream: &mut TcpStream, server: &str, t: Duration) -> Result<Answer, Error> {
    let err_io = |e| Error::Io(server.to_string(), e);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_RESPONSE_HEAD {
                return Err(Error::Protocol(
                    server.to_string(),
                    "response head too large",
                ));
            }
            buf.reserve(buf.len());
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = monoio::time::timeout(t, stream.read(buf.slice_mut(len..cap)))
            .await
            .map_err(|_| Error::Timeout(server.to_string()))?;
        buf = slice.into_inner();
        if res.map_err(err_io)? == 0 {
            return Err(err_io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let (status, mut keep, length, head_len) = match resp.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(Error::Protocol(server.to_string(), "malformed response")),
            Ok(httparse::Status::Complete(n)) => {
                let mut keep = resp.version == Some(1);
                let mut length = None;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                    } else if h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                    {
                        keep = false;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        keep = false;
                    }
                }
                (resp.code.unwrap_or(0), keep, length, n)
            }
        };
        let length = if matches!(status, 204 | 304) {
            Some(0)
        } else {
            length
        };
        match length {
            Some(n) if keep && n <= MAX_SKIP => {
                let mut left = n.saturating_sub((buf.len() - head_len) as u64);
                while left > 0 {
                    buf.clear();
                    let (res, b) = monoio::time::timeout(t, stream.read(buf))
                        .await
                        .map_err(|_| Error::Timeout(server.to_string()))?;
                    buf = b;
                    match res.map_err(err_io)? {
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
        return Ok(Answer { status, keep });
    }
}
