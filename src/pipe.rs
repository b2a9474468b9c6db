//! A pipe for moving a body socket to socket with `splice(2)`, the bytes never copied
//! through this process.
//!
//! Hand-rolled rather than monoio's `splice` ops: io_uring runs every `IORING_OP_SPLICE` on
//! a kernel worker thread (io-wq), a thread hop per call, and monoio's pipe cannot be grown
//! past the default 64 KiB, so a 1 MiB GetObject cost 32 hops. Here the pipe is 1 MiB and
//! each splice is a plain non-blocking system call on the runtime thread; only when a
//! socket has nothing to give (or no room) does it wait, for readiness, through the ring.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use monoio::net::TcpStream;

/// What a pipe is asked to hold (the kernel's default `/proc/sys/fs/pipe-max-size`); a
/// smaller pipe is used when it refuses (down to LEAST).
const WANT: usize = 1 << 20;

pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Bytes the pipe can hold.
    pub cap: usize,
    /// Bytes in it now.
    held: usize,
}

/// Empty pipes kept by each thread for its next splice (their making and closing cost four
/// system calls), at most this many: each counts its full size against the user's pipe
/// pages (`/proc/sys/fs/pipe-user-pages-soft`, 64 such pipes by default) even when empty.
const KEEP: usize = 4;
/// A pipe smaller than this is not worth its system calls (a user past the pipe pages limit
/// gets 8 KiB ones): the body is copied instead.
const LEAST: usize = 64 << 10;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe: one this thread kept, or a new one.
    pub fn take() -> io::Result<Pipe> {
        match SPARE.with(|s| s.borrow_mut().pop()) {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    /// Keeps an empty pipe for [`Pipe::take`]; one still holding bytes (a splice that
    /// failed half way), or smaller than asked, is closed.
    pub fn give(self) {
        if self.held == 0 && self.cap >= WANT {
            SPARE.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < KEEP {
                    s.push(self);
                }
            });
        }
    }

    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array, which we then own
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fds, owned by nothing else
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on our own fd; a refusal (EPERM past the limit) leaves the default
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, WANT as libc::c_int) };
        let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if cap < LEAST as libc::c_int {
            return Err(io::Error::other("pipe too small to splice through"));
        }
        Ok(Pipe { r, w, cap: cap as usize, held: 0 })
    }

    /// Moves at least one and at most `max` bytes (and the pipe's room) from `from` into the
    /// pipe, waiting until `from` has some; `Ok(0)`: `from` is at its end.
    pub async fn fill(&mut self, from: &TcpStream, max: usize) -> io::Result<usize> {
        let want = max.min(self.cap - self.held);
        if want == 0 {
            return Err(io::Error::other("the pipe is full"));
        }
        loop {
            match splice(from.as_raw_fd(), self.w.as_raw_fd(), want) {
                Ok(n) => {
                    self.held += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => from.readable(false).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves at least one of the bytes the pipe holds to `to` (as many as it takes at once),
    /// waiting for room as needed; the bytes still held.
    pub async fn drain_some(&mut self, to: &TcpStream) -> io::Result<usize> {
        if self.held == 0 {
            return Ok(0);
        }
        loop {
            match splice(self.r.as_raw_fd(), to.as_raw_fd(), self.held) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.held -= n;
                    return Ok(self.held);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One splice from `from` to `to`, neither blocking: the sockets the ring works on are
/// blocking (a blocking splice would hold up every connection of this thread), so each is
/// made non-blocking for the call and set back after it. (io_uring on kernels before ~6.5
/// answers a readv/writev on a non-blocking socket with EAGAIN instead of waiting, so a
/// socket must not be left so.)
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let _a = NonBlocking::set(from)?;
    let _b = NonBlocking::set(to)?;
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: both fds are open for the call; null offsets (sockets and pipes have none)
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// An fd made non-blocking until dropped (a pipe's own ends already are: nothing to do).
struct NonBlocking {
    fd: RawFd,
    flags: Option<libc::c_int>,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl reads and sets the flags of an fd the caller holds open
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(NonBlocking { fd, flags: None });
        }
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking { fd, flags: Some(flags) })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if let Some(flags) = self.flags {
            // SAFETY: as in `set`; the fd is still open (the guard lives inside one call)
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};

    /// A body larger than the pipe crosses from one socket to another whole and in order,
    /// and both sockets still work through the ring afterwards.
    #[test]
    fn moves_a_body_larger_than_the_pipe_between_sockets() {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let l1 = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let l2 = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
            let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let sender = {
                let body = body.clone();
                monoio::spawn(async move {
                    let mut s = TcpStream::connect(a1).await.unwrap();
                    let (r, _) = s.write_all(body).await;
                    r.unwrap();
                    s
                })
            };
            let (src, _) = l1.accept().await.unwrap();
            let receiver = monoio::spawn(async move {
                let mut s = TcpStream::connect(a2).await.unwrap();
                let (r, got) = s.read_exact(vec![0u8; 3_000_000]).await;
                r.unwrap();
                (s, got)
            });
            let (dst, _) = l2.accept().await.unwrap();
            let mut p = Pipe::take().unwrap();
            assert!(p.cap >= 64 << 10);
            let cap = p.cap;
            let mut moved = 0;
            while moved < body.len() {
                let n = p.fill(&src, body.len() - moved).await.unwrap();
                assert!(n > 0);
                moved += n;
                while p.drain_some(&dst).await.unwrap() > 0 {}
                assert_eq!(p.held, 0);
            }
            p.give();
            let again = Pipe::take().unwrap();
            assert_eq!((again.cap, again.held), (cap, 0), "the thread's spare pipe comes back");
            let (mut r, got) = receiver.await;
            assert!(got == body, "the bytes arrived changed");
            // the sockets are as the ring left them (blocking), and it still reads and writes them
            for fd in [src.as_raw_fd(), dst.as_raw_fd()] {
                assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK, 0);
            }
            let (mut s, mut src, mut dst) = (sender.await, src, dst);
            say(&mut s, &mut src, b"ping").await;
            say(&mut r, &mut dst, b"pong").await;
        });
    }

    /// `word` written to one end through the ring arrives at the other.
    async fn say(from: &mut TcpStream, to: &mut TcpStream, word: &'static [u8]) {
        let (res, _) = from.write_all(word.to_vec()).await;
        res.unwrap();
        let (res, got) = to.read_exact(vec![0u8; word.len()]).await;
        res.unwrap();
        assert_eq!(got, word);
    }
}
