//! [`IoCell`]: a registered socket with its readiness and wakers — the
//! shared state under every net handle.

use super::{NetError, Op};
use crate::rt::{IoHandler, Reactor, Readiness, Registration};
use mio::event::Source;
use mio::Interest;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

/// Which half of the readiness an operation waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// A socket registered with the runtime's poll.
///
/// Readiness is edge-triggered: a flag per direction is set by an event
/// and cleared only when an operation hits `WouldBlock`, so every
/// operation runs until the OS says there is nothing more, and no event is
/// needed to make progress on data that was already there.
///
/// The cell owns the socket: closing it (the handle's `close`, its drop,
/// or the runtime's shutdown) deregisters and drops the socket, and every
/// later operation fails with [`NetError::Closed`].
pub(crate) struct IoCell<S: Source> {
    reactor: Reactor,
    sock: RefCell<Option<(S, Registration)>>,
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// The OS said the read side is closed or failed: a read returns at
    /// once, so a short read must not clear `readable`.
    read_closed: Cell<bool>,
    rwaker: RefCell<Waiters>,
    wwaker: RefCell<Waiters>,
}

impl<S: Source + 'static> IoCell<S> {
    /// Registers `sock` for `interest`, with `handler(cell)` (a weak
    /// pointer to whatever holds the cell) hearing of its readiness.
    pub(crate) fn register<H: IoHandler + 'static>(
        reactor: &Reactor,
        mut sock: S,
        interest: Interest,
        make: impl FnOnce(IoCell<S>) -> H,
        view: impl Fn(&H) -> &IoCell<S>,
    ) -> Result<Rc<H>, NetError> {
        if reactor.is_closed() {
            // The runtime has shut down: the socket is dropped (closed).
            return Err(NetError::Closed);
        }
        let cell = IoCell {
            reactor: reactor.clone(),
            sock: RefCell::new(None),
            readable: Cell::new(true),
            writable: Cell::new(true),
            read_closed: Cell::new(false),
            rwaker: RefCell::new(Waiters::default()),
            wwaker: RefCell::new(Waiters::default()),
        };
        let holder = Rc::new(make(cell));
        let weak: Weak<dyn IoHandler> = Rc::downgrade(&holder) as Weak<dyn IoHandler>;
        let reg = reactor
            .register(&mut sock, interest, weak)
            .map_err(|e| NetError::io(Op::Register, e))?;
        *view(&holder).sock.borrow_mut() = Some((sock, reg));
        Ok(holder)
    }

    /// Records readiness and wakes the tasks waiting on it.
    pub(crate) fn on_ready(&self, r: Readiness) {
        if r.read_closed {
            self.read_closed.set(true);
        }
        if r.readable {
            self.readable.set(true);
            Waiters::wake_all(&self.rwaker);
        }
        if r.writable {
            self.writable.set(true);
            Waiters::wake_all(&self.wwaker);
        }
    }

    /// Deregisters and drops the socket; wakes every waiter (who then
    /// sees [`NetError::Closed`]). A no-op if already closed.
    pub(crate) fn close(&self) -> Result<(), NetError> {
        let taken = self.sock.borrow_mut().take();
        let res = match taken {
            Some((mut sock, reg)) => {
                let res = self.reactor.deregister(&mut sock, reg);
                drop(sock);
                res.map_err(|e| NetError::io(Op::Deregister, e))
            }
            None => Ok(()),
        };
        self.on_ready(Readiness {
            readable: true,
            writable: true,
            read_closed: true,
        });
        res
    }

    /// Like [`close`](IoCell::close) for `Drop` and shutdown: a failed
    /// deregistration is counted and logged.
    pub(crate) fn close_quietly(&self) {
        let taken = self.sock.borrow_mut().take();
        if let Some((mut sock, reg)) = taken {
            self.reactor.deregister_quietly(&mut sock, reg);
        }
        self.on_ready(Readiness {
            readable: true,
            writable: true,
            read_closed: true,
        });
    }

    /// The runtime's reactor the socket is registered with.
    pub(crate) fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sock.borrow().is_none()
    }

    /// Runs `f` on the socket (for calls that never block: addresses,
    /// options, shutdown).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R, NetError> {
        match &*self.sock.borrow() {
            Some((s, _)) => Ok(f(s)),
            None => Err(NetError::Closed),
        }
    }

    /// Is `dir` ready as far as the cell knows?
    pub(crate) fn is_ready(&self, dir: Dir) -> bool {
        match dir {
            Dir::Read => self.readable.get(),
            Dir::Write => self.writable.get(),
        }
    }

    /// Records that `dir` would block: the next event sets it again.
    pub(crate) fn clear(&self, dir: Dir) {
        match dir {
            Dir::Read => self.readable.set(false),
            Dir::Write => self.writable.set(false),
        }
    }

    /// A stream read returned `n` bytes into a buffer of `cap`: if short,
    /// the socket's receive buffer was emptied, so (unless the peer has
    /// closed, which leaves an end-of-stream to read) the readiness is
    /// cleared without the extra `WouldBlock` read. Safe with
    /// edge-triggered polling: data arriving after the read raises a new
    /// edge, reported by the next poll. (tokio does the same.)
    pub(crate) fn short_read(&self, n: usize, cap: usize) {
        if n > 0 && n < cap && !self.read_closed.get() {
            self.readable.set(false);
        }
    }

    /// Tries `f` on the socket while `dir` is ready. `WouldBlock` clears
    /// the readiness and stores `cx`'s waker; `Pending` means an event
    /// will wake the task.
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        mut f: impl FnMut(&mut S) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            if !self.is_ready(dir) {
                self.store_waker(cx, dir);
                // The socket may have closed meanwhile (close sets both
                // readiness flags, so this is only a safety net).
                if self.is_closed() {
                    return Poll::Ready(Err(NetError::Closed.into()));
                }
                return Poll::Pending;
            }
            let res = {
                let mut guard = self.sock.borrow_mut();
                let Some((sock, _)) = guard.as_mut() else {
                    return Poll::Ready(Err(NetError::Closed.into()));
                };
                f(sock)
            };
            match res {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear(dir),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return Poll::Ready(other),
            }
        }
    }

    /// Runs `f` on the socket once, without a task (push style):
    /// `WouldBlock` clears the readiness and comes back as an error.
    pub(crate) fn try_io<R>(
        &self,
        dir: Dir,
        mut f: impl FnMut(&mut S) -> io::Result<R>,
    ) -> Result<io::Result<R>, NetError> {
        let mut guard = self.sock.borrow_mut();
        let Some((sock, _)) = guard.as_mut() else {
            return Err(NetError::Closed);
        };
        loop {
            match f(sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(guard);
                    self.clear(dir);
                    return Ok(Err(e));
                }
                other => return Ok(other),
            }
        }
    }

    fn store_waker(&self, cx: &mut Context<'_>, dir: Dir) {
        let slot = match dir {
            Dir::Read => &self.rwaker,
            Dir::Write => &self.wwaker,
        };
        slot.borrow_mut().add(cx.waker());
    }
}

impl<S: Source> Drop for IoCell<S> {
    fn drop(&mut self) {
        if let Some((mut sock, reg)) = self.sock.get_mut().take() {
            self.reactor.deregister_quietly(&mut sock, reg);
        }
    }
}

/// The plain handler: a cell whose readiness only wakes tasks.
pub(crate) struct Plain<S: Source>(pub(crate) IoCell<S>);

impl<S: Source + 'static> IoHandler for Plain<S> {
    fn ready(&self, r: Readiness) {
        self.0.on_ready(r);
    }

    fn close(&self) {
        self.0.close_quietly();
    }
}

impl<S: Source + 'static> Plain<S> {
    /// Registers `sock` as a plain (async-style) cell.
    pub(crate) fn register(
        reactor: &Reactor,
        sock: S,
        interest: Interest,
    ) -> Result<Rc<Plain<S>>, NetError> {
        IoCell::register(reactor, sock, interest, Plain, |p| &p.0)
    }
}

/// The tasks waiting for one direction of a socket. Usually one (a
/// stream is polled through `&mut`), kept without allocating; the
/// `&self` methods of [`UdpSocket`](crate::net::UdpSocket) and
/// [`TcpListener`](crate::net::TcpListener) may have several, and each is
/// woken (none is replaced by another). Emptied at every readiness.
#[derive(Default)]
pub(crate) struct Waiters {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Waiters {
    fn add(&mut self, waker: &Waker) {
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) => {
                if !self.more.iter().any(|w| w.will_wake(waker)) {
                    self.more.push(waker.clone());
                }
            }
        }
    }

    /// Wakes and forgets every waiter (outside the borrow: a wake may
    /// run code that polls the socket again).
    fn wake_all(cell: &RefCell<Waiters>) {
        let (first, more) = {
            let mut w = cell.borrow_mut();
            let more = if w.more.is_empty() {
                Vec::new()
            } else {
                std::mem::take(&mut w.more)
            };
            (w.first.take(), more)
        };
        if let Some(w) = first {
            w.wake();
        }
        for w in more {
            w.wake();
        }
    }
}
