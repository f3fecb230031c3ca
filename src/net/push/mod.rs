//! Push-style sockets for actors: [`TcpConn`], [`TcpAcceptor`] and
//! [`UdpPort`].
//!
//! A push socket lives in an actor's state and tells the actor what
//! happens through a `Fwd` given at creation (usually
//! `fwd_to!([cx], on_event() as (TcpEvent))`): data read, end of stream,
//! the write buffer draining, errors, the end. The actor never polls and
//! never waits; it writes with plain method calls, which hand the bytes to
//! the OS at once when it can take them and buffer the rest up to a bound.
//!
//! ```no_run
//! use stakplane::net::{AcceptEvent, ConnConfig, TcpAcceptor, TcpConn, TcpEvent};
//! use stakplane::prelude::*;
//!
//! /// One device per connection: echoes what it reads.
//! struct Echo {
//!     conn: TcpConn,
//! }
//!
//! impl Echo {
//!     fn init(cx: CX![], accepted: stakplane::net::Accepted) -> Option<Self> {
//!         let events = fwd_to!([cx], event() as (TcpEvent));
//!         match TcpConn::new(cx, accepted, ConnConfig::new(), events) {
//!             Ok(conn) => Some(Echo { conn }),
//!             Err(e) => {
//!                 fail!(cx, e);
//!                 None
//!             }
//!         }
//!     }
//!
//!     fn event(&mut self, cx: CX![], ev: TcpEvent) {
//!         match ev {
//!             // A real server pauses reading on `Full` (see the echo example).
//!             TcpEvent::Data(bytes) => drop(self.conn.write(&bytes)),
//!             TcpEvent::ReadClosed => drop(self.conn.shutdown_write()),
//!             TcpEvent::Closed => stop!(cx),
//!             _ => {}
//!         }
//!     }
//! }
//! ```
//!
//! Every constructor takes the `Core` (an actor's `cx`, or
//! [`Runtime::core`](crate::rt::Runtime::core)): a push socket needs the
//! runtime's poll ([`Io::of`]) and stakker's queue, to continue work after
//! the loop has polled the OS and to time the accept back-off.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **71. Push-style events, exactly once** ([`TcpEvent`]):
//! - **`Connected` comes first**, at most once, and only for
//!   [`TcpConn::connect`]; a connect that fails delivers `Error` (with
//!   [`Op::Connect`]) and `Closed` instead.
//! - **`Data` arrives in stream order**, never empty, and never after
//!   `ReadClosed`, `Error` or `Closed`.
//! - **`ReadClosed` at most once**: the peer sent end-of-stream; writing
//!   still works.
//! - **Each OS error is reported exactly once**: a method that meets one
//!   returns it; the loop delivers the ones it meets as `Error`. Either
//!   way the connection is closed at once (buffered bytes are discarded)
//!   and `Closed` follows.
//! - **`Closed` is the last event, at most once**, and exactly once if
//!   the connection ends while its owner holds the `TcpConn`: after an
//!   error, once both directions are finished (`ReadClosed` delivered
//!   and a [`shutdown_write`](TcpConn::shutdown_write) flushed, after
//!   which the socket is closed), or at the runtime's shutdown.
//!   [`close`](TcpConn::close) and drop deliver nothing: the owner knows.
//!   Events already forwarded before still arrive.
//! - **Methods never call the `Fwd` themselves**: what they cause (the
//!   `Closed` after a returned error, the end after `shutdown_write`)
//!   goes through stakker's queue, so an actor is never re-entered.
//!
//! **72. Push writes are bounded, with a drain notice**: a write that
//! would take the buffer past [`ConnConfig::write_limit`] fails with
//! [`NetError::Full`] and takes nothing;
//! after a `write` had to buffer bytes (or was refused with `Full` while
//! bytes were buffered), exactly one `Drained` comes when the buffer is
//! next empty. Nothing is lost under backpressure.
//!
//! **72a. A write larger than the whole bound is `TooLarge`, never
//! `Full`**: no drain can make room for it, so `Full` (which promises a
//! `Drained`) would leave a writer that waits for one stalled for good;
//! [`NetError::TooLarge`] takes nothing and owes no `Drained`, whether or
//! not bytes are buffered.
//!
//! ## What closes when
//!
//! A push socket owns its socket: dropping the handle closes it, so a
//! socket in an actor's state closes when the actor dies (the peer reads
//! end-of-stream). [`close`](TcpConn::close) closes it now and reports a
//! failed deregistration. A connection also closes itself after an OS
//! error and once both directions are finished. The runtime's shutdown
//! closes every push socket still open and delivers its `Closed`
//! ([`AcceptEvent::Closed`], [`UdpEvent::Closed`] likewise). Unflushed
//! bytes are discarded in every case: to end cleanly, call
//! `shutdown_write` and wait for `Closed` or `Drained`.
//!
//! ## Fairness and backpressure
//!
//! Readiness is edge-triggered: each readiness event reads until the OS
//! says `WouldBlock`, but at most [`ConnConfig::read_per_turn`] bytes (or
//! [`UdpConfig::recv_per_turn`] datagrams, or 64 accepts) before letting
//! the loop poll the OS again. The rest is read right after that poll,
//! behind the sockets it finds ready, a share each turn however busy the
//! loop is (a socket past its share never waits for a quiet poll); no
//! event is lost. Reading is
//! paused with [`TcpConn::pause_reading`] (the OS buffers, then the peer
//! waits); writes are bounded by [`ConnConfig::write_limit`], beyond which
//! `write` returns [`NetError::Full`] and takes nothing.
//!
//! ## Costs
//!
//! A connection is one allocation for its shared state plus its buffers:
//! a read buffer of [`ConnConfig::read_chunk`] bytes, allocated at the
//! first read, and a write buffer only while bytes wait (it is freed when
//! it drains, if it grew past 64 KiB). Each `Data` is one `Vec` of exactly
//! the bytes read (a copy out of the read buffer). Forwarding an event
//! costs what the `Fwd` costs (one queued call for `fwd_to!`).
//!
//! ## The code
//!
//! This file holds the skeleton every push socket shares (`Socket`:
//! registration, the `Closed` at the runtime's shutdown, `close`, the
//! drop of the handle, continuations from stakker's queue); `conn.rs`,
//! `acceptor.rs` and `udp.rs` add what each kind does when it is driven.

mod acceptor;
mod conn;
mod udp;

pub use acceptor::{AcceptEvent, Accepted, TcpAcceptor};
pub use conn::{ConnConfig, TcpConn, TcpEvent, MAX_READ_CHUNK};
pub use udp::{UdpConfig, UdpEvent, UdpPort, MAX_DATAGRAM};

use super::tcp::on_socket;
use super::{Io, IoCell, NetError, Op};
use crate::rt::{IoHandler, Reactor, Readiness};
use mio::event::Source;
use mio::Interest;
use stakker::{Core, Deferrer, Fwd};
use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::io;
use std::rc::{Rc, Weak};

/// A holder that can continue its work later from stakker's queue.
trait Driven: 'static {
    /// Does whatever is ready: flush, read, accept, finish.
    fn drive(&self);
    /// Set while a continuation is queued (so at most one is).
    fn queued(&self) -> &Cell<bool>;
}

/// Runs `drive` from the main queue: soon, after what is queued already.
fn drive_soon<H: Driven>(deferrer: &Deferrer, holder: Weak<H>) {
    deferrer.defer(move |_| {
        if let Some(h) = holder.upgrade() {
            h.drive();
        }
    });
}

/// Runs `drive` after the loop's next poll, behind the sockets that poll
/// finds ready ([`Reactor::after_poll`]): used when a socket still has
/// work after its per-turn share, so the other sockets are served first,
/// and it goes on every turn however busy the loop. At most one such
/// continuation per holder.
fn drive_after_poll<H: Driven>(reactor: &Reactor, holder: Weak<H>) {
    let Some(h) = holder.upgrade() else {
        return;
    };
    if h.queued().replace(true) {
        return;
    }
    reactor.after_poll(Box::new(move || {
        if let Some(h) = holder.upgrade() {
            h.queued().set(false);
            h.drive();
        }
    }));
}

fn weak_of<H>(me: &OnceCell<Weak<H>>) -> Weak<H> {
    me.get().cloned().unwrap_or_default()
}

/// The runtime's poll, then a socket made by `open`, whose OS error
/// becomes [`NetError::Io`] with `op`: no socket is made without a
/// runtime. The `bind`, `connect` and `from_std` of the push sockets.
fn open<S>(
    core: &mut Core,
    op: Op,
    open: impl FnOnce() -> io::Result<S>,
) -> Result<(Io, S), NetError> {
    let io = Io::of(core)?;
    let sock = open().map_err(|e| NetError::io(op, e))?;
    Ok((io, sock))
}

/// `n` within `1..=max`: a configured size outside is taken as the
/// nearest bound (so a huge value never aborts on the allocation).
const fn clamp_size(n: usize, max: usize) -> usize {
    if n == 0 {
        1
    } else if n > max {
        max
    } else {
        n
    }
}

/// What a reading kind (a connection, a UDP port) keeps besides its
/// state: its configuration and its read buffer.
struct Reads<C> {
    config: C,
    /// Allocated at the first read.
    rbuf: RefCell<Vec<u8>>,
}

impl<C> Reads<C> {
    fn new(config: C) -> Reads<C> {
        Reads {
            config,
            rbuf: RefCell::new(Vec::new()),
        }
    }

    /// The read buffer, `size` bytes long (allocated at the first read).
    #[inline]
    fn buffer(&self, size: usize) -> RefMut<'_, Vec<u8>> {
        let mut rbuf = self.rbuf.borrow_mut();
        if rbuf.len() != size {
            rbuf.resize(size, 0);
        }
        rbuf
    }
}

/// What a kind of push socket adds to the shared [`Socket`] skeleton.
trait Kind: Sized + 'static {
    /// The mio socket.
    type Sock: Source + 'static;
    /// What its owner is told.
    type Event: 'static;
    /// Its mutable state.
    type State;
    /// What it keeps besides (configuration, buffers).
    type Extra: 'static;
    /// The readiness it is registered for.
    const INTEREST: Interest;
    /// The last event, when the runtime's shutdown closes the socket.
    const CLOSED: fn() -> Self::Event;
    /// Does whatever is ready (flush, read, accept, finish).
    fn drive(s: &Socket<Self>);
    /// Marks the socket done and lets go of what the kind holds besides
    /// (the acceptor's back-off timer).
    fn finish(s: &Socket<Self>) {
        s.done.set(true);
    }
}

/// The shared state of a push socket: the reactor's handler for it, and
/// what its handle (`TcpConn`, `TcpAcceptor`, `UdpPort`) owns.
struct Socket<K: Kind> {
    cell: IoCell<K::Sock>,
    events: Fwd<K::Event>,
    deferrer: Deferrer,
    me: OnceCell<Weak<Socket<K>>>,
    /// A continuation waits for the next poll (at most one does).
    queued: Cell<bool>,
    /// Closed: no event is generated any more.
    done: Cell<bool>,
    st: RefCell<K::State>,
    x: K::Extra,
}

impl<K: Kind> Socket<K> {
    /// Registers `sock` with the runtime's poll, for events to `events`.
    fn register(
        core: &mut Core,
        io: &Io,
        sock: K::Sock,
        events: Fwd<K::Event>,
        st: K::State,
        x: K::Extra,
    ) -> Result<Rc<Socket<K>>, NetError> {
        let deferrer = core.deferrer();
        let s = IoCell::register(
            &io.reactor,
            sock,
            K::INTEREST,
            |cell| Socket {
                cell,
                events,
                deferrer,
                me: OnceCell::new(),
                queued: Cell::new(false),
                done: Cell::new(false),
                st: RefCell::new(st),
                x,
            },
            |s| &s.cell,
        )?;
        let _ = s.me.set(Rc::downgrade(&s));
        Ok(s)
    }

    /// A weak handle to itself, for continuations.
    fn weak(&self) -> Weak<Socket<K>> {
        weak_of(&self.me)
    }

    /// The handle's `close`: closes now, reports a failed deregistration,
    /// delivers nothing.
    fn close_now(&self) -> Result<(), NetError> {
        K::finish(self);
        self.cell.close()
    }

    /// The handle's drop: closes quietly, delivers nothing.
    fn drop_handle(&self) {
        if !self.done.get() {
            K::finish(self);
        }
        self.cell.close_quietly();
    }

    /// A socket option or address, read from the socket.
    fn option<T>(&self, f: impl FnOnce(&K::Sock) -> io::Result<T>) -> Result<T, NetError> {
        on_socket(&self.cell, Op::Option, f)
    }
}

impl<K: Kind> Driven for Socket<K> {
    fn drive(&self) {
        K::drive(self);
    }

    fn queued(&self) -> &Cell<bool> {
        &self.queued
    }
}

impl<K: Kind> IoHandler for Socket<K> {
    fn ready(&self, r: Readiness) {
        self.cell.on_ready(r);
        self.drive();
    }

    fn close(&self) {
        if self.done.get() {
            return;
        }
        K::finish(self);
        self.cell.close_quietly();
        self.events.fwd((K::CLOSED)());
    }
}

static_assertions::assert_not_impl_any!(TcpConn: Send, Sync);
static_assertions::assert_not_impl_any!(TcpAcceptor: Send, Sync);
static_assertions::assert_not_impl_any!(UdpPort: Send, Sync);
static_assertions::assert_impl_all!(Accepted: Send);
static_assertions::assert_impl_all!(TcpEvent: Send);
