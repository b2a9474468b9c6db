//! Deadlines of every client connection of one thread, in one table checked by one ticker:
//! a read or a write costs two cell writes instead of a timer, and a stop drains the table.
//!
//! A deadline that passes shuts the socket down under the pending read or write (io_uring
//! and epoll both wake it: a read sees EOF, a write `EPIPE`), and the connection learns
//! why from [`Watched::fired`]. A read timeout shuts down the reading side only, so the
//! connection can still answer `408`; a write timeout shuts both.

use std::{
    cell::{Cell, RefCell},
    os::fd::RawFd,
    rc::Rc,
    time::{Duration, Instant},
};

/// How often deadlines are checked: they fire up to this late (or early, as `now` is only
/// this fresh).
pub const TICK: Duration = Duration::from_millis(100);

/// What a connection is waiting for, which says what a passed deadline means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Between requests, nothing buffered: a timeout (or a drain) closes it quietly.
    Idle,
    /// The rest of a request head: `408`.
    Head,
    /// Request body bytes: `408`.
    Body,
    /// The client to take an answer: the connection is dropped.
    Write,
}

struct Slot {
    fd: RawFd,
    /// Milliseconds on the thread's clock; 0: none.
    deadline: u64,
    wait: Wait,
    fired: Option<Wait>,
    /// May be closed to make room for a new connection on a full port ([`Watch::make_room`]).
    spare: bool,
}

/// One thread's table of connections.
pub struct Watch {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    live: Cell<usize>,
    epoch: Instant,
    /// Milliseconds since `epoch`, refreshed each tick (and at each registration).
    now: Cell<u64>,
    draining: Cell<bool>,
}

/// A connection's place in its thread's [`Watch`]; leaves the table when dropped.
pub struct Watched {
    watch: Rc<Watch>,
    id: usize,
}

impl Watch {
    pub fn new() -> Rc<Watch> {
        Rc::new(Watch {
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            live: Cell::new(0),
            epoch: Instant::now(),
            now: Cell::new(1),
            draining: Cell::new(false),
        })
    }

    fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Enters a connection's socket in the table; a `spare` one may be closed while it
    /// waits for a request, to make room for a new connection ([`Watch::make_room`]).
    pub fn register(self: &Rc<Self>, fd: RawFd, spare: bool) -> Watched {
        self.now.set(self.clock());
        let slot = Slot { fd, deadline: 0, wait: Wait::Idle, fired: None, spare };
        let id = match self.free.borrow_mut().pop() {
            Some(id) => {
                self.slots.borrow_mut()[id] = Some(slot);
                id
            }
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Some(slot));
                slots.len() - 1
            }
        };
        self.live.set(self.live.get() + 1);
        Watched { watch: self.clone(), id }
    }

    /// Connections open on this thread.
    pub fn len(&self) -> usize {
        self.live.get()
    }

    /// Whether the thread is stopping: connections finish the request in hand and close.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Fires every passed deadline. Called every [`TICK`] by the thread's ticker.
    pub fn tick(&self) {
        let now = self.clock();
        self.now.set(now);
        let draining = self.draining.get();
        for slot in self.slots.borrow_mut().iter_mut().flatten() {
            let passed = slot.deadline != 0 && slot.deadline <= now;
            if passed || (draining && slot.wait == Wait::Idle && slot.deadline != 0) {
                slot.deadline = 0;
                slot.fired = Some(slot.wait);
                shutdown(slot.fd, slot.wait);
            }
        }
    }

    /// Closes the spare connection that has waited longest for a request: an idle one, or
    /// else one whose head is still coming; not one whose next bytes are in already (a
    /// request its task has not read yet, or the body of one answered early that it is
    /// reading past). False when there is none. A port whose every connection an idle
    /// client holds stays open to a new one this way (the idle ones only wait for their
    /// timeout otherwise, and a client that reconnects as each closes would hold the port
    /// for good). Both ways shut: it closes at once, owing the client nothing.
    pub fn make_room(&self) -> bool {
        let mut slots = self.slots.borrow_mut();
        let waiting = |wait: Wait| {
            slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                .filter(|(_, s)| s.spare && s.wait == wait && s.deadline != 0 && s.fired.is_none())
                .filter(|(_, s)| !has_bytes(s.fd))
                .min_by_key(|(_, s)| s.deadline)
                .map(|(i, _)| i)
        };
        let Some(i) = waiting(Wait::Idle).or_else(|| waiting(Wait::Head)) else { return false };
        let slot = slots[i].as_mut().expect("a slot just found");
        slot.deadline = 0;
        slot.fired = Some(slot.wait);
        shutdown(slot.fd, Wait::Write);
        true
    }

    /// Stops the thread's connections gracefully: idle ones are closed now, busy ones after
    /// their answer.
    pub fn drain(&self) {
        self.draining.set(true);
        self.tick();
    }
}

/// Whether bytes wait unread in the socket's receive queue.
fn has_bytes(fd: RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; on a bad fd it fails and writes nothing
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) == 0 && n > 0 }
}

fn shutdown(fd: RawFd, wait: Wait) {
    let how = if wait == Wait::Write { libc::SHUT_RDWR } else { libc::SHUT_RD };
    // SAFETY: the fd belongs to a live connection (its slot leaves the table before the
    // socket closes); shutdown(2) only changes the socket's state.
    unsafe { libc::shutdown(fd, how) };
}

impl Watched {
    fn with<R>(&self, f: impl FnOnce(&mut Slot) -> R) -> R {
        let mut slots = self.watch.slots.borrow_mut();
        // the slot is ours until drop
        f(slots[self.id].as_mut().expect("a watched connection's slot"))
    }

    /// The thread's clock, in milliseconds (as fresh as the last tick).
    pub fn now(&self) -> u64 {
        self.watch.now.get()
    }

    /// Arms a deadline `after` from now for what the connection waits for next.
    pub fn arm(&self, wait: Wait, after: Duration) {
        self.arm_at(wait, self.now().saturating_add(after.as_millis() as u64).max(1));
    }

    /// Arms a deadline at `at` (milliseconds on the thread's clock).
    pub fn arm_at(&self, wait: Wait, at: u64) {
        // a connection that goes idle while the thread drains is closed at the next tick
        self.with(|s| {
            s.wait = wait;
            s.deadline = at.max(1);
        });
    }

    /// The wait is over in time.
    pub fn disarm(&self) {
        self.with(|s| s.deadline = 0);
    }

    /// What the deadline that fired was for, if one did.
    pub fn fired(&self) -> Option<Wait> {
        self.with(|s| s.fired)
    }

    pub fn draining(&self) -> bool {
        self.watch.draining()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.watch.slots.borrow_mut()[self.id] = None;
        self.watch.free.borrow_mut().push(self.id);
        self.watch.live.set(self.watch.live.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_counted() {
        let w = Watch::new();
        let a = w.register(-1, false);
        let b = w.register(-1, false);
        assert_eq!(w.len(), 2);
        drop(a);
        assert_eq!(w.len(), 1);
        let c = w.register(-1, false);
        assert_eq!(c.id, 0, "a freed slot is taken again");
        drop((b, c));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn passed_deadlines_fire_once_with_their_reason() {
        let w = Watch::new();
        let a = w.register(-1, false);
        let b = w.register(-1, false);
        a.arm(Wait::Head, Duration::ZERO);
        b.arm(Wait::Body, Duration::from_secs(60));
        w.tick();
        assert_eq!(a.fired(), Some(Wait::Head));
        assert_eq!(b.fired(), None);
        b.disarm();
        w.tick();
        assert_eq!(b.fired(), None);
        // a drain closes idle connections only
        b.arm(Wait::Idle, Duration::from_secs(60));
        let c = w.register(-1, false);
        c.arm(Wait::Body, Duration::from_secs(60));
        w.drain();
        assert_eq!(b.fired(), Some(Wait::Idle));
        assert_eq!(c.fired(), None);
        assert!(c.draining());
    }

    #[test]
    fn room_is_made_by_the_spare_connection_waiting_longest() {
        let w = Watch::new();
        let api = w.register(-1, false);
        api.arm(Wait::Idle, Duration::from_secs(1));
        let (old, new, busy, head) =
            (w.register(-1, true), w.register(-1, true), w.register(-1, true), w.register(-1, true));
        old.arm(Wait::Idle, Duration::from_secs(5));
        new.arm(Wait::Idle, Duration::from_secs(6));
        busy.arm(Wait::Body, Duration::from_secs(1));
        head.arm(Wait::Head, Duration::from_secs(2));
        assert!(w.make_room());
        assert_eq!((old.fired(), new.fired(), api.fired()), (Some(Wait::Idle), None, None));
        assert!(w.make_room());
        assert_eq!(new.fired(), Some(Wait::Idle));
        assert!(w.make_room());
        assert_eq!(head.fired(), Some(Wait::Head));
        // a connection busy with a request, and the API's, are never closed for room
        assert!(!w.make_room());
        assert_eq!((busy.fired(), api.fired()), (None, None));
        // nor one whose next request is in, unread
        use std::{io::Write, os::fd::AsRawFd};
        let (ours, mut client) = std::os::unix::net::UnixStream::pair().unwrap();
        let sent = w.register(ours.as_raw_fd(), true);
        sent.arm(Wait::Idle, Duration::ZERO);
        client.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        assert!(!w.make_room());
        assert_eq!(sent.fired(), None);
    }
}
