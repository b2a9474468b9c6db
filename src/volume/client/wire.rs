//! The volume side of HTTP/1.1 on one connection: request heads, a head and its body in
//! one `writev`, response heads read with patience for a busy volume, short bodies
//! skipped, and the socket options and queue depths the timeouts are judged by.

use super::*;

/// Largest response head we read from a volume.
pub(super) const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// An error page longer than this is not read to reuse its connection.
pub(super) const MAX_SKIP: u64 = 64 << 10;

/// The answer of a volume: status, and whether its connection can carry another request.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) keep: bool,
}

/// What a volume must take of a body in each `-voltimeout` not to have stalled. A margin:
/// the kernel of a volume that stopped reading may still take a little now and then (it
/// merges the segments it holds to make room, and acknowledges a few more), which is no
/// progress; and a volume that takes under 64 KiB in a whole -voltimeout is as good as stalled.
pub(super) const MIN_PROGRESS: i32 = 64 << 10;

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
pub(super) async fn taken<F: std::future::Future>(
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
pub(super) fn reset_on_close(fd: RawFd) {
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
pub(super) fn unacked(fd: RawFd) -> Option<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int, for a socket the caller holds open
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (r == 0).then_some(n)
}

/// Sets a socket-level option that takes an int.
pub(super) fn set_int(s: &TcpStream, opt: libc::c_int, value: usize) -> std::io::Result<()> {
    set_opt(s, libc::SOL_SOCKET, opt, value)
}

pub(super) fn set_opt(s: &TcpStream, level: libc::c_int, opt: libc::c_int, value: usize) -> std::io::Result<()> {
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

/// A request head and its body, written with one `writev`: the body is shared by every
/// replica's request (a `Bytes` clone), never copied into each.
pub(super) struct HeadBody {
    pub(super) head: Vec<u8>,
    pub(super) body: Bytes,
    pub(super) iov: Box<[libc::iovec; 2]>,
}

impl HeadBody {
    pub(super) fn new(head: Vec<u8>, body: Bytes) -> HeadBody {
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

/// The `Date` header line of a copy of a value written at `modified_ms` (milliseconds since
/// the Unix epoch; 0, unknown: none): nginx gives the file it writes that time, so a copy
/// (a rebalance's, a repair's) keeps the time a `rebuild` reads back as the value's (S3's
/// `Last-Modified`), not the copy's own.
pub(super) fn dated(modified_ms: u64) -> String {
    match modified_ms {
        0 => String::new(),
        ms => format!("Date: {}\r\n", crate::dates::http_date((ms / 1000) as i64)),
    }
}

pub(super) fn head(method: &str, server: &str, path: &str, len: Option<u64>) -> Vec<u8> {
    head_with(method, server, path, &[], len)
}

/// A request head; `extra` is more header lines, each ending in CRLF.
pub(super) fn head_with(method: &str, server: &str, path: &str, extra: &[u8], len: Option<u64>) -> Vec<u8> {
    let mut h = Vec::with_capacity(96 + path.len() + extra.len());
    for part in [method, " ", path, " HTTP/1.1\r\nHost: ", server, "\r\n"] {
        h.extend_from_slice(part.as_bytes());
    }
    h.extend_from_slice(extra);
    // a protected volume refuses the master's writes (and, with SIGN=1, its reads) without it
    h.extend_from_slice(crate::volume::secret::header());
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
pub(super) fn still_open(s: &TcpStream) -> bool {
    let mut b = 0u8;
    // SAFETY: a valid fd and a 1-byte buffer we own; MSG_PEEK leaves the socket as it was.
    let n = unsafe {
        libc::recv(s.as_raw_fd(), &mut b as *mut u8 as *mut libc::c_void, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// A response head from a volume.
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) keep: bool,
    pub(super) length: Option<u64>,
    pub(super) chunked: bool,
    pub(super) head_len: usize,
}

/// Longest wait for the answer to a request with a body while its volume stays up.
pub(super) const ANSWER_PATIENCE: Duration = Duration::from_secs(60);

/// How often a wait forgiven past `-voltimeout` asks whether the prober found the volume
/// down meanwhile: a hung volume fails the request this soon after it is marked down (it
/// waited a whole `-voltimeout` more, failing a PUT after twice that).
pub(super) const PATIENCE_STEP: Duration = Duration::from_millis(100);

/// Reads one response head; the buffer returned may hold the first body bytes after it.
///
/// `patience`: the volume took a body, whose last bytes may still sit in the two sockets'
/// buffers (several MiB on a fast link), which a volume whose disk writeback throttles it
/// reads slowly; or a DELETE or MOVE, whose unlink of a big file takes as long as its disk
/// wants. Either way the answer can come seconds later while the volume is alive and well.
/// So while no byte of the answer came, the wait goes on past `t` as long as the prober
/// still finds the volume up (a hung one is marked down within about 1.5 s), looked at
/// every [`PATIENCE_STEP`] beside one read left running, up to [`ANSWER_PATIENCE`].
pub(super) async fn read_head(
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
        let canceller = Canceller::new();
        let read = stream.cancelable_read(buf.slice_mut(len..cap), canceller.handle());
        let give_up = async {
            match patient {
                // one read runs on until it ends, or the volume is found down, or patience ends
                Some(v) => {
                    while v.is_up() && began.elapsed() < ANSWER_PATIENCE {
                        monoio::time::sleep(PATIENCE_STEP).await;
                    }
                }
                None => monoio::time::sleep(t).await,
            }
        };
        let (res, slice) = read_or_give_up(read, canceller, give_up).await;
        buf = slice.into_inner();
        let Some(res) = res else {
            if len == 0 && patient.is_none() && patience.is_some_and(|v| v.is_up()) {
                patient = patience;
                continue;
            }
            return Err(Error::Timeout(server.to_string()));
        };
        // bytes came: the rest of the head is due within `t` again
        patient = None;
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

/// Awaits `read` until `give_up` ends, without losing what it read: a read given up on is
/// cancelled and then awaited, so bytes that came as the wait ended are kept (`Some`), and
/// `None` is a read that took nothing. A read future merely dropped drops its bytes with it
/// (the kernel's recv completes, its buffer freed unseen): an answer that came as a
/// `-voltimeout` fired was lost, and a fenced connection then waited for it until nginx closed
/// the idle connection, 5 minutes in which its volume took no write.
pub(super) async fn read_or_give_up<T>(
    read: impl std::future::Future<Output = monoio::BufResult<usize, T>>,
    canceller: Canceller,
    give_up: impl std::future::Future<Output = ()>,
) -> (Option<std::io::Result<usize>>, T) {
    let read = pin!(read);
    let (res, buf) = match select(read, pin!(give_up)).await {
        Either::Left((done, _)) => done,
        Either::Right(((), read)) => {
            let _ = canceller.cancel();
            read.await
        }
    };
    match res {
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => (None, buf),
        res => (Some(res), buf),
    }
}

/// Reads past a short body so the connection can carry the next request.
pub(super) async fn skip_body(
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
