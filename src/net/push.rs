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
//! ## Rules for [`TcpConn`] events
//!
//! 1. **`Connected` comes first**, at most once, and only for
//!    [`TcpConn::connect`]; a connect that fails delivers `Error` (with
//!    [`Op::Connect`]) and `Closed` instead.
//! 2. **`Data` arrives in stream order**, never empty, and never after
//!    `ReadClosed`, `Error` or `Closed`.
//! 3. **`ReadClosed` at most once**: the peer sent end-of-stream; writing
//!    still works.
//! 4. **One `Drained` per episode**: after a `write` had to buffer bytes
//!    (or was refused with [`NetError::Full`] while bytes were buffered),
//!    exactly one `Drained` when the buffer is next empty.
//! 5. **Each OS error is reported exactly once**: a method that meets one
//!    returns it; the loop delivers the ones it meets as `Error`. Either
//!    way the connection is closed at once (buffered bytes are discarded)
//!    and `Closed` follows.
//! 6. **`Closed` is the last event, at most once**, and exactly once if
//!    the connection ends while its owner holds the `TcpConn`: after an
//!    error, once both directions are finished (`ReadClosed` delivered
//!    and a [`shutdown_write`](TcpConn::shutdown_write) flushed, after
//!    which the socket is closed), or at the runtime's shutdown.
//!    [`close`](TcpConn::close) and drop deliver nothing: the owner knows.
//!    Events already forwarded before still arrive.
//! 7. **Methods never call the `Fwd` themselves**: what they cause (the
//!    `Closed` after a returned error, the end after `shutdown_write`)
//!    goes through stakker's queue, so an actor is never re-entered.
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
//! the loop poll the OS again. The rest is read on the socket's next
//! readiness event, or when a poll finds nothing else to do (stakker's
//! idle queue), whichever comes first; no event is lost. Reading is
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

use super::{is_exhaustion, Backoff, Dir, Io, IoCell, NetError, Op};
use crate::rt::{IoHandler, Readiness};
use mio::Interest;
use stakker::{Core, Deferrer, FixedTimerKey, Fwd};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::{Rc, Weak};

/// A write buffer that grew past this is freed when it drains.
const KEEP_WBUF: usize = 64 * 1024;
/// Accepts per readiness turn before the loop polls again.
const ACCEPTS_PER_TURN: usize = 64;

// ---------------------------------------------------------------------
// Shared scheduling

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

/// Runs `drive` after the loop has polled the OS: from stakker's idle
/// queue, which the runtime runs when a poll finds nothing to do. Used
/// when a socket still has work after its per-turn share, so the other
/// sockets are served first. At most one such continuation per holder.
fn drive_after_poll<H: Driven>(deferrer: &Deferrer, holder: Weak<H>) {
    let Some(h) = holder.upgrade() else {
        return;
    };
    if h.queued().replace(true) {
        return;
    }
    deferrer.defer(move |s| {
        s.idle(move |_| {
            if let Some(h) = holder.upgrade() {
                h.queued().set(false);
                h.drive();
            }
        });
    });
}

fn weak_of<H>(me: &OnceCell<Weak<H>>) -> Weak<H> {
    me.get().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------
// TCP connections

/// What a [`TcpConn`] tells its owner. See the [module docs](self) for the
/// order and exactly-once rules.
#[derive(Debug)]
#[non_exhaustive]
pub enum TcpEvent {
    /// The connection started by [`TcpConn::connect`] is established.
    Connected,
    /// Bytes read, in stream order (never empty).
    Data(Vec<u8>),
    /// The peer closed its write direction (end-of-stream). Writing still
    /// works; no `Data` follows.
    ReadClosed,
    /// The write buffer is empty again after a write had to buffer (or
    /// was refused with [`NetError::Full`] while bytes were buffered):
    /// write more. Once per such episode.
    Drained,
    /// An OS error the loop met (reset, refused connect, ...). The
    /// connection is closed; `Closed` follows.
    Error(NetError),
    /// The connection is over and its socket closed. The last event.
    Closed,
}

/// The largest read buffer a [`TcpConn`] allocates
/// ([`ConnConfig::read_chunk`]): 16 MiB.
pub const MAX_READ_CHUNK: usize = 16 << 20;

/// Settings of a [`TcpConn`]. `ConnConfig::new()` (= `default()`): a
/// 1 MiB write bound, 16 KiB reads, 64 KiB read per turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnConfig {
    write_limit: usize,
    read_chunk: usize,
    read_per_turn: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig::new()
    }
}

impl ConnConfig {
    /// The defaults.
    pub const fn new() -> ConnConfig {
        ConnConfig {
            write_limit: 1024 * 1024,
            read_chunk: 16 * 1024,
            read_per_turn: 64 * 1024,
        }
    }

    /// The most bytes [`TcpConn::write`] buffers (bytes the OS did not take
    /// at once). A write that would go beyond it returns
    /// [`NetError::Full`] and takes nothing, so a single write larger than
    /// the bound always fails.
    pub const fn write_limit(mut self, bytes: usize) -> ConnConfig {
        self.write_limit = bytes;
        self
    }

    /// The size of each read, hence the largest `Data`: between 1 and
    /// [`MAX_READ_CHUNK`] (a value outside is taken as the nearest bound,
    /// so a huge value never aborts the process on the allocation). The
    /// read buffer of this size lives as long as the connection.
    pub const fn read_chunk(mut self, bytes: usize) -> ConnConfig {
        self.read_chunk = if bytes == 0 {
            1
        } else if bytes > MAX_READ_CHUNK {
            MAX_READ_CHUNK
        } else {
            bytes
        };
        self
    }

    /// How many bytes one readiness turn reads before the loop polls the
    /// OS again (at least 1; a turn ends after the read that reaches it).
    pub const fn read_per_turn(mut self, bytes: usize) -> ConnConfig {
        self.read_per_turn = if bytes == 0 { 1 } else { bytes };
        self
    }
}

#[derive(Default)]
struct ConnState {
    /// `connect` started, not yet established.
    connecting: bool,
    /// Bytes waiting: `wbuf[whead..]`.
    wbuf: Vec<u8>,
    whead: usize,
    /// A `Drained` is owed when the buffer is next empty.
    want_drained: bool,
    paused: bool,
    /// End-of-stream read and delivered.
    read_closed: bool,
    /// `shutdown_write` called / done.
    shut_wanted: bool,
    shut_done: bool,
    /// Closed: no event is generated any more.
    done: bool,
}

impl ConnState {
    fn buffered(&self) -> usize {
        self.wbuf.len() - self.whead
    }
}

/// The shared state of a [`TcpConn`]: the reactor's handler.
struct Conn {
    cell: IoCell<mio::net::TcpStream>,
    events: Fwd<TcpEvent>,
    deferrer: Deferrer,
    config: ConnConfig,
    me: OnceCell<Weak<Conn>>,
    queued: Cell<bool>,
    st: RefCell<ConnState>,
    rbuf: RefCell<Vec<u8>>,
}

impl Driven for Conn {
    fn drive(&self) {
        if self.st.borrow().done {
            return;
        }
        if self.st.borrow().connecting && !self.finish_connect() {
            return;
        }
        if self.flush() && self.read() {
            self.finish_if_both_done();
        }
    }

    fn queued(&self) -> &Cell<bool> {
        &self.queued
    }
}

impl IoHandler for Conn {
    fn ready(&self, r: Readiness) {
        self.cell.on_ready(r);
        self.drive();
    }

    fn close(&self) {
        if self.st.borrow().done {
            return;
        }
        self.st.borrow_mut().done = true;
        self.cell.close_quietly();
        self.events.fwd(TcpEvent::Closed);
    }
}

impl Conn {
    /// Checks whether the connect completed; true once established.
    fn finish_connect(&self) -> bool {
        let res = self.cell.try_io(Dir::Write, |s| {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        });
        match res {
            Err(_) => false,
            Ok(Ok(())) => {
                self.st.borrow_mut().connecting = false;
                self.events.fwd(TcpEvent::Connected);
                !self.st.borrow().done
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => false,
            Ok(Err(e)) => {
                self.fail(NetError::io(Op::Connect, e));
                false
            }
        }
    }

    /// Writes buffered bytes while the socket takes them; then a pending
    /// shutdown and the drain notice. False if the connection ended.
    fn flush(&self) -> bool {
        let mut failed = None;
        {
            let mut st = self.st.borrow_mut();
            if st.connecting {
                return true;
            }
            let st = &mut *st;
            while st.whead < st.wbuf.len() && self.cell.is_ready(Dir::Write) {
                let pending = &st.wbuf[st.whead..];
                match self.cell.try_io(Dir::Write, |s| s.write(pending)) {
                    Err(_) => return false,
                    Ok(Ok(0)) => {
                        failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                        break;
                    }
                    Ok(Ok(n)) => st.whead += n,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if st.whead == st.wbuf.len() && st.whead > 0 {
                st.whead = 0;
                if st.wbuf.capacity() > KEEP_WBUF {
                    st.wbuf = Vec::new();
                } else {
                    st.wbuf.clear();
                }
            }
        }
        if let Some(e) = failed {
            self.fail(NetError::io(Op::Write, e));
            return false;
        }
        let (shut, drained) = {
            let mut st = self.st.borrow_mut();
            let empty = st.buffered() == 0;
            let shut = empty && st.shut_wanted && !st.shut_done;
            let drained = empty && std::mem::take(&mut st.want_drained);
            (shut, drained)
        };
        if shut {
            if let Err(e) = self.shutdown_now() {
                self.fail(e);
                return false;
            }
        }
        if drained {
            self.events.fwd(TcpEvent::Drained);
        }
        !self.st.borrow().done
    }

    /// Reads while the socket has data, up to the per-turn share. False
    /// if the connection ended.
    fn read(&self) -> bool {
        {
            let st = self.st.borrow();
            if st.connecting || st.paused || st.read_closed {
                return true;
            }
        }
        let mut total = 0;
        while self.cell.is_ready(Dir::Read) {
            if total >= self.config.read_per_turn {
                drive_after_poll(&self.deferrer, weak_of(&self.me));
                return true;
            }
            let got = {
                let mut rbuf = self.rbuf.borrow_mut();
                if rbuf.len() != self.config.read_chunk {
                    rbuf.resize(self.config.read_chunk, 0);
                }
                match self.cell.try_io(Dir::Read, |s| s.read(&mut rbuf[..])) {
                    Err(_) => return false,
                    Ok(Ok(n)) => {
                        self.cell.short_read(n, rbuf.len());
                        Ok(rbuf[..n].to_vec())
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Ok(Err(e)) => Err(e),
                }
            };
            match got {
                Ok(data) if data.is_empty() => {
                    self.st.borrow_mut().read_closed = true;
                    self.events.fwd(TcpEvent::ReadClosed);
                    return !self.st.borrow().done;
                }
                Ok(data) => {
                    total += data.len();
                    self.events.fwd(TcpEvent::Data(data));
                }
                Err(e) => {
                    self.fail(NetError::io(Op::Read, e));
                    return false;
                }
            }
            // A synchronous `Fwd` may have paused or closed us.
            let st = self.st.borrow();
            if st.done {
                return false;
            }
            if st.paused {
                return true;
            }
        }
        true
    }

    fn shutdown_now(&self) -> Result<(), NetError> {
        self.cell
            .with(|s| s.shutdown(Shutdown::Write))?
            .map_err(|e| NetError::io(Op::Shutdown, e))?;
        self.st.borrow_mut().shut_done = true;
        Ok(())
    }

    /// Both directions finished: close and say so.
    fn finish_if_both_done(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.done || !st.read_closed || !st.shut_done {
                return;
            }
            st.done = true;
        }
        if let Err(e) = self.cell.close() {
            self.events.fwd(TcpEvent::Error(e));
        }
        self.events.fwd(TcpEvent::Closed);
    }

    /// The loop met `e`: close, deliver it, then `Closed`.
    fn fail(&self, e: NetError) {
        self.st.borrow_mut().done = true;
        self.cell.close_quietly();
        self.events.fwd(TcpEvent::Error(e));
        self.events.fwd(TcpEvent::Closed);
    }

    /// A method met `e` (it returns it): close, and queue `Closed`.
    fn fail_from_call(&self, e: NetError) -> NetError {
        self.st.borrow_mut().done = true;
        self.cell.close_quietly();
        let events = self.events.clone();
        self.deferrer.defer(move |_| events.fwd(TcpEvent::Closed));
        e
    }
}

/// A TCP connection owned by an actor: what happens on it arrives as
/// [`TcpEvent`]s through the `Fwd` given at creation; writes are method
/// calls that never block.
///
/// Not `Send`: it lives on the runtime thread, usually in an actor's
/// state. Dropping it closes the socket (unflushed bytes are discarded),
/// so the connection closes when the owning actor dies. See the
/// [module docs](self) for the event rules.
pub struct TcpConn {
    conn: Rc<Conn>,
}

impl fmt::Debug for TcpConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConn")
            .field("peer", &self.peer_addr().ok())
            .field("buffered", &self.buffered())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl TcpConn {
    /// Takes over a connection accepted by a [`TcpAcceptor`]; events go
    /// to `events`.
    ///
    /// Cost: one allocation and a registration with the poll. Data that
    /// arrived before is delivered at the first readiness event, which
    /// the OS reports at once.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`] if `core` is not driven by a
    /// [`Runtime`](crate::rt::Runtime); [`NetError::Io`] with
    /// [`Op::Register`] (the socket is then closed).
    pub fn new(
        core: &mut Core,
        accepted: Accepted,
        config: ConnConfig,
        events: Fwd<TcpEvent>,
    ) -> Result<TcpConn, NetError> {
        TcpConn::register(core, accepted.sock, false, config, events)
    }

    /// Takes over an established std stream (sets it non-blocking).
    ///
    /// # Errors
    /// As [`new`](TcpConn::new), and [`NetError::Io`] with [`Op::Option`]
    /// if the stream cannot be made non-blocking.
    pub fn from_std(
        core: &mut Core,
        stream: std::net::TcpStream,
        config: ConnConfig,
        events: Fwd<TcpEvent>,
    ) -> Result<TcpConn, NetError> {
        stream
            .set_nonblocking(true)
            .map_err(|e| NetError::io(Op::Option, e))?;
        let sock = mio::net::TcpStream::from_std(stream);
        TcpConn::register(core, sock, false, config, events)
    }

    /// Starts connecting to `addr`. [`TcpEvent::Connected`] follows once
    /// established, or [`TcpEvent::Error`] (with [`Op::Connect`], e.g.
    /// connection refused) and [`TcpEvent::Closed`]. Writes before then
    /// are buffered (within the bound) and sent once connected.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`]; [`NetError::Io`] with [`Op::Connect`] if
    /// the OS refuses at once (e.g. no route), or [`Op::Register`].
    pub fn connect(
        core: &mut Core,
        addr: SocketAddr,
        config: ConnConfig,
        events: Fwd<TcpEvent>,
    ) -> Result<TcpConn, NetError> {
        let io = Io::of(core)?;
        let sock = mio::net::TcpStream::connect(addr).map_err(|e| NetError::io(Op::Connect, e))?;
        TcpConn::register_io(core, &io, sock, true, config, events)
    }

    fn register(
        core: &mut Core,
        sock: mio::net::TcpStream,
        connecting: bool,
        config: ConnConfig,
        events: Fwd<TcpEvent>,
    ) -> Result<TcpConn, NetError> {
        let io = Io::of(core)?;
        TcpConn::register_io(core, &io, sock, connecting, config, events)
    }

    fn register_io(
        core: &mut Core,
        io: &Io,
        sock: mio::net::TcpStream,
        connecting: bool,
        config: ConnConfig,
        events: Fwd<TcpEvent>,
    ) -> Result<TcpConn, NetError> {
        let deferrer = core.deferrer();
        let conn = IoCell::register(
            &io.reactor,
            sock,
            Interest::READABLE | Interest::WRITABLE,
            |cell| Conn {
                cell,
                events,
                deferrer,
                config,
                me: OnceCell::new(),
                queued: Cell::new(false),
                st: RefCell::new(ConnState {
                    connecting,
                    ..ConnState::default()
                }),
                rbuf: RefCell::new(Vec::new()),
            },
            |c| &c.cell,
        )?;
        let _ = conn.me.set(Rc::downgrade(&conn));
        Ok(TcpConn { conn })
    }

    /// Writes `data`: hands the OS what it takes at once (when nothing is
    /// buffered) and buffers the rest, which the loop flushes as the
    /// socket drains; [`TcpEvent::Drained`] follows once the buffer is
    /// empty again.
    ///
    /// Cost: one `write` system call when nothing is buffered (none
    /// otherwise); a copy of what the OS did not take.
    ///
    /// # Errors
    /// * [`NetError::Full`] if the bytes buffered plus `data` would exceed
    ///   [`ConnConfig::write_limit`]: nothing is taken; a `Drained` follows
    ///   when the buffer empties.
    /// * [`NetError::Closed`] if the connection is closed or
    ///   [`shutdown_write`](TcpConn::shutdown_write) was called.
    /// * [`NetError::Io`] with [`Op::Write`] if the OS refuses (e.g. the
    ///   peer reset: [`NetError::is_reset`]; never SIGPIPE). The connection
    ///   is then closed and [`TcpEvent::Closed`] follows.
    pub fn write(&self, data: &[u8]) -> Result<(), NetError> {
        let c = &*self.conn;
        let mut st = c.st.borrow_mut();
        if st.done || st.shut_wanted {
            return Err(NetError::Closed);
        }
        let buffered = st.buffered();
        let limit = c.config.write_limit;
        if data.len() > limit.saturating_sub(buffered) {
            if buffered > 0 {
                st.want_drained = true;
            }
            return Err(NetError::Full { capacity: limit });
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut off = 0;
        if buffered == 0 && !st.connecting {
            while c.cell.is_ready(Dir::Write) {
                let rest = &data[off..];
                let failed = match c.cell.try_io(Dir::Write, |s| s.write(rest)) {
                    Err(e) => return Err(e),
                    Ok(Ok(0)) => io::Error::from(io::ErrorKind::WriteZero),
                    Ok(Ok(n)) => {
                        off += n;
                        if off == data.len() {
                            return Ok(());
                        }
                        continue;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(Err(e)) => e,
                };
                drop(st);
                return Err(c.fail_from_call(NetError::io(Op::Write, failed)));
            }
        }
        if st.whead > 0 && st.whead >= st.wbuf.len() / 2 {
            let head = st.whead;
            st.wbuf.drain(..head);
            st.whead = 0;
        }
        st.wbuf.extend_from_slice(&data[off..]);
        st.want_drained = true;
        Ok(())
    }

    /// Bytes written but not yet taken by the OS.
    pub fn buffered(&self) -> usize {
        self.conn.st.borrow().buffered()
    }

    /// The bound on [`buffered`](TcpConn::buffered) bytes.
    pub fn write_limit(&self) -> usize {
        self.conn.config.write_limit
    }

    /// Stops reading: the OS buffers what arrives, then the peer's writes
    /// wait (read-side backpressure). `Data` already read (at most one
    /// turn's share) still arrives: keep it until
    /// [`resume_reading`](TcpConn::resume_reading). While paused with
    /// nothing buffered, a reset by the peer is noticed at the next write
    /// or when reading resumes. A no-op if paused or closed.
    pub fn pause_reading(&self) {
        self.conn.st.borrow_mut().paused = true;
    }

    /// Reads again after [`pause_reading`](TcpConn::pause_reading). Data
    /// that waited is read from stakker's queue, soon after this call.
    pub fn resume_reading(&self) {
        let wake = {
            let mut st = self.conn.st.borrow_mut();
            let was = std::mem::replace(&mut st.paused, false);
            was && !st.done
        };
        if wake && self.conn.cell.is_ready(Dir::Read) {
            drive_soon(&self.conn.deferrer, Rc::downgrade(&self.conn));
        }
    }

    /// True while reading is paused.
    pub fn is_reading_paused(&self) -> bool {
        self.conn.st.borrow().paused
    }

    /// Closes the write direction once the buffered bytes are written: the
    /// peer then reads end-of-stream. Later writes fail with
    /// [`NetError::Closed`]. Once the peer's end-of-stream has been read
    /// too ([`TcpEvent::ReadClosed`]), the connection closes itself and
    /// [`TcpEvent::Closed`] follows. Calling it again is a no-op.
    ///
    /// # Errors
    /// [`NetError::Closed`] if the connection is closed; [`NetError::Io`]
    /// with [`Op::Shutdown`] if the OS refuses (the connection is then
    /// closed and `Closed` follows).
    pub fn shutdown_write(&self) -> Result<(), NetError> {
        let now = {
            let mut st = self.conn.st.borrow_mut();
            if st.done {
                return Err(NetError::Closed);
            }
            if st.shut_wanted {
                return Ok(());
            }
            st.shut_wanted = true;
            st.buffered() == 0 && !st.connecting
        };
        if now {
            if let Err(e) = self.conn.shutdown_now() {
                return Err(self.conn.fail_from_call(e));
            }
            if self.conn.st.borrow().read_closed {
                drive_soon(&self.conn.deferrer, Rc::downgrade(&self.conn));
            }
        }
        Ok(())
    }

    /// Closes the socket now, discarding unflushed bytes; no event
    /// follows. Dropping the `TcpConn` does the same but can only log a
    /// failed deregistration.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`] (the socket is closed
    /// anyway).
    pub fn close(self) -> Result<(), NetError> {
        self.conn.st.borrow_mut().done = true;
        self.conn.cell.close()
    }

    /// True once the connection is closed (by an error, both directions
    /// finishing, or the runtime's shutdown).
    pub fn is_closed(&self) -> bool {
        self.conn.st.borrow().done || self.conn.cell.is_closed()
    }

    /// The peer's address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]; e.g. not
    /// connected yet).
    pub fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        self.conn
            .cell
            .with(|s| s.peer_addr())?
            .map_err(|e| NetError::io(Op::Option, e))
    }

    /// The local address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.conn
            .cell
            .with(|s| s.local_addr())?
            .map_err(|e| NetError::io(Op::Option, e))
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn set_nodelay(&self, on: bool) -> Result<(), NetError> {
        self.conn
            .cell
            .with(|s| s.set_nodelay(on))?
            .map_err(|e| NetError::io(Op::Option, e))
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        if let Ok(mut st) = self.conn.st.try_borrow_mut() {
            st.done = true;
        }
        self.conn.cell.close_quietly();
    }
}

// ---------------------------------------------------------------------
// Accepting

/// What a [`TcpAcceptor`] tells its owner.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptEvent {
    /// A new connection: turn it into a [`TcpConn`] with
    /// [`TcpConn::new`] (in whichever actor should own it), or drop it to
    /// close it.
    Accepted(Accepted),
    /// Accepting failed. If the process is out of descriptors or buffers
    /// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) or the error is not one
    /// of a single connection, the acceptor stops accepting and retries
    /// after a back-off (10 ms doubling to 1 s, reset by a success);
    /// errors of one aborted connection do not pause it.
    Error(NetError),
    /// The runtime's shutdown closed the acceptor. The last event.
    Closed,
}

/// An accepted connection, not yet registered with the poll: hand it to
/// [`TcpConn::new`]. `Send`, so it may travel to another thread's runtime.
/// Dropping it closes the connection.
#[derive(Debug)]
pub struct Accepted {
    sock: mio::net::TcpStream,
    peer: SocketAddr,
}

impl Accepted {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address (the listener's, or the interface it arrived on
    /// for a wildcard listener).
    ///
    /// # Errors
    /// The OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.sock
            .local_addr()
            .map_err(|e| NetError::io(Op::Option, e))
    }
}

#[derive(Default)]
struct AccState {
    backoff: Backoff,
    /// Backing off: readiness is ignored until the timer fires.
    paused: bool,
    timer: Option<FixedTimerKey>,
    done: bool,
}

struct Acc {
    cell: IoCell<mio::net::TcpListener>,
    events: Fwd<AcceptEvent>,
    deferrer: Deferrer,
    me: OnceCell<Weak<Acc>>,
    queued: Cell<bool>,
    st: RefCell<AccState>,
}

/// Is `e` an error of one connection (accepting again makes progress)?
fn is_per_connection(e: &io::Error) -> bool {
    // EPROTO: a protocol error on the pending connection (Linux, BSDs).
    #[cfg(target_os = "linux")]
    const EPROTO: i32 = 71;
    #[cfg(not(target_os = "linux"))]
    const EPROTO: i32 = 100;
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    ) || e.raw_os_error() == Some(EPROTO)
}

impl Driven for Acc {
    fn drive(&self) {
        for _ in 0..ACCEPTS_PER_TURN {
            {
                let st = self.st.borrow();
                if st.done || st.paused {
                    return;
                }
            }
            match self.cell.try_io(Dir::Read, |l| l.accept()) {
                Err(_) => return,
                Ok(Ok((sock, peer))) => {
                    self.st.borrow_mut().backoff.reset();
                    self.events
                        .fwd(AcceptEvent::Accepted(Accepted { sock, peer }));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Ok(Err(e)) if is_per_connection(&e) && !is_exhaustion(&e) => {
                    self.events
                        .fwd(AcceptEvent::Error(NetError::io(Op::Accept, e)));
                }
                Ok(Err(e)) => {
                    self.back_off(e);
                    return;
                }
            }
        }
        drive_after_poll(&self.deferrer, weak_of(&self.me));
    }

    fn queued(&self) -> &Cell<bool> {
        &self.queued
    }
}

impl Acc {
    fn back_off(&self, e: io::Error) {
        let d = {
            let mut st = self.st.borrow_mut();
            st.paused = true;
            st.backoff.bump()
        };
        tracing::warn!(error = %e, backoff_ms = d.as_millis() as u64,
            "stakplane: accept failed; backing off");
        self.events
            .fwd(AcceptEvent::Error(NetError::io(Op::Accept, e)));
        let me = weak_of(&self.me);
        self.deferrer.defer(move |s| {
            let Some(acc) = me.upgrade() else {
                return;
            };
            if acc.st.borrow().done {
                return;
            }
            let again = me.clone();
            let key = stakplane_async::timer_after(s, d, move |_| {
                if let Some(acc) = again.upgrade() {
                    {
                        let mut st = acc.st.borrow_mut();
                        st.timer = None;
                        st.paused = false;
                    }
                    acc.drive();
                }
            });
            acc.st.borrow_mut().timer = Some(key);
        });
    }

    /// Marks the acceptor done and deletes a pending back-off timer.
    fn finish(&self) {
        let timer = {
            let mut st = self.st.borrow_mut();
            st.done = true;
            st.timer.take()
        };
        if let Some(key) = timer {
            self.deferrer.defer(move |s| {
                s.timer_del(key);
            });
        }
    }
}

impl IoHandler for Acc {
    fn ready(&self, r: Readiness) {
        self.cell.on_ready(r);
        self.drive();
    }

    fn close(&self) {
        if self.st.borrow().done {
            return;
        }
        self.finish();
        self.cell.close_quietly();
        self.events.fwd(AcceptEvent::Closed);
    }
}

/// A TCP listener owned by an actor: each accepted connection arrives as
/// [`AcceptEvent::Accepted`] through the `Fwd` given at creation.
///
/// When the process runs out of descriptors (`EMFILE` and kin) the error
/// is delivered and accepting pauses, retrying after 10 ms, doubling to
/// 1 s (a stakker timer): the loop never spins on a full descriptor
/// table, and established connections keep being served. Pending
/// connections wait in the OS backlog meanwhile.
///
/// Not `Send`. Dropping it closes the listener (pending connections are
/// refused by the OS). Runs until closed: the runtime counts it as work.
pub struct TcpAcceptor {
    acc: Rc<Acc>,
}

impl fmt::Debug for TcpAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpAcceptor")
            .field("local", &self.local_addr().ok())
            .field("backing_off", &self.is_backing_off())
            .finish()
    }
}

impl TcpAcceptor {
    /// Binds to `addr` (port 0 picks a free port; see
    /// [`local_addr`](TcpAcceptor::local_addr)) and starts accepting.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`]; [`NetError::Io`] with [`Op::Bind`] or
    /// [`Op::Register`].
    pub fn bind(
        core: &mut Core,
        addr: SocketAddr,
        events: Fwd<AcceptEvent>,
    ) -> Result<TcpAcceptor, NetError> {
        let io = Io::of(core)?;
        let sock = mio::net::TcpListener::bind(addr).map_err(|e| NetError::io(Op::Bind, e))?;
        TcpAcceptor::register(core, &io, sock, events)
    }

    /// Takes over a bound std listener (sets it non-blocking) and starts
    /// accepting.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`]; [`NetError::Io`] with [`Op::Option`] or
    /// [`Op::Register`].
    pub fn from_std(
        core: &mut Core,
        listener: std::net::TcpListener,
        events: Fwd<AcceptEvent>,
    ) -> Result<TcpAcceptor, NetError> {
        let io = Io::of(core)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| NetError::io(Op::Option, e))?;
        let sock = mio::net::TcpListener::from_std(listener);
        TcpAcceptor::register(core, &io, sock, events)
    }

    fn register(
        core: &mut Core,
        io: &Io,
        sock: mio::net::TcpListener,
        events: Fwd<AcceptEvent>,
    ) -> Result<TcpAcceptor, NetError> {
        let deferrer = core.deferrer();
        let acc = IoCell::register(
            &io.reactor,
            sock,
            Interest::READABLE,
            |cell| Acc {
                cell,
                events,
                deferrer,
                me: OnceCell::new(),
                queued: Cell::new(false),
                st: RefCell::new(AccState::default()),
            },
            |a| &a.cell,
        )?;
        let _ = acc.me.set(Rc::downgrade(&acc));
        Ok(TcpAcceptor { acc })
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.acc
            .cell
            .with(|s| s.local_addr())?
            .map_err(|e| NetError::io(Op::Option, e))
    }

    /// True while accepting is paused after a resource error.
    pub fn is_backing_off(&self) -> bool {
        self.acc.st.borrow().paused
    }

    /// Closes the listener now; no event follows.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`] (the listener is closed
    /// anyway).
    pub fn close(self) -> Result<(), NetError> {
        self.acc.finish();
        self.acc.cell.close()
    }
}

impl Drop for TcpAcceptor {
    fn drop(&mut self) {
        if !self.acc.st.borrow().done {
            self.acc.finish();
        }
        self.acc.cell.close_quietly();
    }
}

// ---------------------------------------------------------------------
// UDP

/// What a [`UdpPort`] tells its owner.
#[derive(Debug)]
#[non_exhaustive]
pub enum UdpEvent {
    /// A datagram arrived.
    Datagram {
        /// The sender.
        from: SocketAddr,
        /// The payload (cut at [`UdpConfig::max_datagram`]).
        data: Vec<u8>,
    },
    /// The send queue is empty again after a send had to be queued (or
    /// was refused with [`NetError::Full`]).
    Drained,
    /// An OS error the loop met: receiving ([`Op::Read`]; e.g. an ICMP
    /// error on a connected port), or sending a queued datagram
    /// ([`Op::Write`]; that datagram is dropped). The port stays open.
    Error(NetError),
    /// The runtime's shutdown closed the port. The last event.
    Closed,
}

/// The largest receive buffer a [`UdpPort`] allocates
/// ([`UdpConfig::max_datagram`]): 65,536 bytes, more than any datagram.
pub const MAX_DATAGRAM: usize = 1 << 16;

/// Settings of a [`UdpPort`]. `UdpConfig::new()` (= `default()`): a send
/// queue of at most 64 datagrams and 256 KiB, 64 datagrams received per
/// turn, 64 KiB receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpConfig {
    queue_datagrams: usize,
    queue_bytes: usize,
    recv_per_turn: usize,
    max_datagram: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig::new()
    }
}

impl UdpConfig {
    /// The defaults.
    pub const fn new() -> UdpConfig {
        UdpConfig {
            queue_datagrams: 64,
            queue_bytes: 256 * 1024,
            recv_per_turn: 64,
            max_datagram: 64 * 1024,
        }
    }

    /// Bounds the send queue (datagrams the OS could not take at once):
    /// at most `datagrams` datagrams and `bytes` payload bytes. Beyond
    /// either, [`UdpPort::send_to`] returns [`NetError::Full`] (whose
    /// `capacity` is the byte bound).
    pub const fn send_queue(mut self, datagrams: usize, bytes: usize) -> UdpConfig {
        self.queue_datagrams = datagrams;
        self.queue_bytes = bytes;
        self
    }

    /// Datagrams received per readiness turn before the loop polls the OS
    /// again (at least 1).
    pub const fn recv_per_turn(mut self, datagrams: usize) -> UdpConfig {
        self.recv_per_turn = if datagrams == 0 { 1 } else { datagrams };
        self
    }

    /// The receive buffer: the rest of a longer datagram is lost, as with
    /// any UDP receive. Between 1 and 65,536, which holds any datagram (a
    /// value outside is taken as the nearest bound).
    pub const fn max_datagram(mut self, bytes: usize) -> UdpConfig {
        self.max_datagram = if bytes == 0 {
            1
        } else if bytes > MAX_DATAGRAM {
            MAX_DATAGRAM
        } else {
            bytes
        };
        self
    }
}

#[derive(Default)]
struct UdpState {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    queued_bytes: usize,
    want_drained: bool,
    done: bool,
}

struct Udp {
    cell: IoCell<mio::net::UdpSocket>,
    events: Fwd<UdpEvent>,
    deferrer: Deferrer,
    config: UdpConfig,
    me: OnceCell<Weak<Udp>>,
    queued: Cell<bool>,
    st: RefCell<UdpState>,
    rbuf: RefCell<Vec<u8>>,
}

impl Driven for Udp {
    fn drive(&self) {
        if self.st.borrow().done {
            return;
        }
        self.flush();
        self.recv();
    }

    fn queued(&self) -> &Cell<bool> {
        &self.queued
    }
}

impl Udp {
    fn flush(&self) {
        while self.cell.is_ready(Dir::Write) {
            let failed = {
                let mut st = self.st.borrow_mut();
                if st.done {
                    return;
                }
                let Some((to, data)) = st.queue.pop_front() else {
                    break;
                };
                match self.cell.try_io(Dir::Write, |s| s.send_to(&data, to)) {
                    Err(_) => return,
                    Ok(Ok(_)) => {
                        st.queued_bytes -= data.len();
                        continue;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        st.queue.push_front((to, data));
                        return;
                    }
                    Ok(Err(e)) => {
                        st.queued_bytes -= data.len();
                        e
                    }
                }
            };
            self.events
                .fwd(UdpEvent::Error(NetError::io(Op::Write, failed)));
        }
        let drained = {
            let mut st = self.st.borrow_mut();
            st.queue.is_empty() && !st.done && std::mem::take(&mut st.want_drained)
        };
        if drained {
            self.events.fwd(UdpEvent::Drained);
        }
    }

    fn recv(&self) {
        for _ in 0..self.config.recv_per_turn {
            if self.st.borrow().done || !self.cell.is_ready(Dir::Read) {
                return;
            }
            let got = {
                let mut rbuf = self.rbuf.borrow_mut();
                if rbuf.len() != self.config.max_datagram {
                    rbuf.resize(self.config.max_datagram, 0);
                }
                match self.cell.try_io(Dir::Read, |s| s.recv_from(&mut rbuf[..])) {
                    Err(_) => return,
                    Ok(Ok((n, from))) => Ok(UdpEvent::Datagram {
                        from,
                        data: rbuf[..n].to_vec(),
                    }),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Ok(Err(e)) => Err(e),
                }
            };
            match got {
                Ok(ev) => self.events.fwd(ev),
                Err(e) => self.events.fwd(UdpEvent::Error(NetError::io(Op::Read, e))),
            }
        }
        if self.cell.is_ready(Dir::Read) {
            drive_after_poll(&self.deferrer, weak_of(&self.me));
        }
    }
}

impl IoHandler for Udp {
    fn ready(&self, r: Readiness) {
        self.cell.on_ready(r);
        self.drive();
    }

    fn close(&self) {
        if self.st.borrow().done {
            return;
        }
        self.st.borrow_mut().done = true;
        self.cell.close_quietly();
        self.events.fwd(UdpEvent::Closed);
    }
}

/// A UDP socket owned by an actor: datagrams arrive as
/// [`UdpEvent::Datagram`] through the `Fwd` given at creation; sends are
/// method calls that never block.
///
/// A send the OS cannot take at once is queued, within the bounds of
/// [`UdpConfig::send_queue`], and sent as the socket drains, in order.
/// Not `Send`; dropping it closes the socket (queued datagrams are
/// discarded).
pub struct UdpPort {
    udp: Rc<Udp>,
}

impl fmt::Debug for UdpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpPort")
            .field("local", &self.local_addr().ok())
            .field("queued", &self.queued())
            .finish()
    }
}

impl UdpPort {
    /// Binds to `addr` (port 0 picks a free port) and starts receiving.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`]; [`NetError::Io`] with [`Op::Bind`] or
    /// [`Op::Register`].
    pub fn bind(
        core: &mut Core,
        addr: SocketAddr,
        config: UdpConfig,
        events: Fwd<UdpEvent>,
    ) -> Result<UdpPort, NetError> {
        let io = Io::of(core)?;
        let sock = mio::net::UdpSocket::bind(addr).map_err(|e| NetError::io(Op::Bind, e))?;
        UdpPort::register(core, &io, sock, config, events)
    }

    /// Takes over a bound std socket (sets it non-blocking).
    ///
    /// # Errors
    /// [`NetError::NoRuntime`]; [`NetError::Io`] with [`Op::Option`] or
    /// [`Op::Register`].
    pub fn from_std(
        core: &mut Core,
        sock: std::net::UdpSocket,
        config: UdpConfig,
        events: Fwd<UdpEvent>,
    ) -> Result<UdpPort, NetError> {
        let io = Io::of(core)?;
        sock.set_nonblocking(true)
            .map_err(|e| NetError::io(Op::Option, e))?;
        let sock = mio::net::UdpSocket::from_std(sock);
        UdpPort::register(core, &io, sock, config, events)
    }

    fn register(
        core: &mut Core,
        io: &Io,
        sock: mio::net::UdpSocket,
        config: UdpConfig,
        events: Fwd<UdpEvent>,
    ) -> Result<UdpPort, NetError> {
        let deferrer = core.deferrer();
        let udp = IoCell::register(
            &io.reactor,
            sock,
            Interest::READABLE | Interest::WRITABLE,
            |cell| Udp {
                cell,
                events,
                deferrer,
                config,
                me: OnceCell::new(),
                queued: Cell::new(false),
                st: RefCell::new(UdpState::default()),
                rbuf: RefCell::new(Vec::new()),
            },
            |u| &u.cell,
        )?;
        let _ = udp.me.set(Rc::downgrade(&udp));
        Ok(UdpPort { udp })
    }

    /// Sends `data` to `addr` as one datagram: at once if the OS takes it
    /// and nothing is queued, else queued and sent in order as the socket
    /// drains ([`UdpEvent::Drained`] follows once the queue is empty).
    ///
    /// Cost: one `sendto` system call when nothing is queued; a copy of
    /// `data` when queued.
    ///
    /// # Errors
    /// * [`NetError::Full`] if queueing would exceed
    ///   [`UdpConfig::send_queue`] (`capacity` is the byte bound): nothing
    ///   is taken.
    /// * [`NetError::Closed`] if the port is closed.
    /// * [`NetError::Io`] with [`Op::Write`] if the OS refuses the
    ///   datagram (e.g. too long, no route). The port stays open.
    pub fn send_to(&self, data: &[u8], addr: SocketAddr) -> Result<(), NetError> {
        let u = &*self.udp;
        let mut st = u.st.borrow_mut();
        if st.done {
            return Err(NetError::Closed);
        }
        if st.queue.is_empty() && u.cell.is_ready(Dir::Write) {
            match u.cell.try_io(Dir::Write, |s| s.send_to(data, addr)) {
                Err(e) => return Err(e),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(Err(e)) => return Err(NetError::io(Op::Write, e)),
            }
        }
        let cfg = &u.config;
        if st.queue.len() >= cfg.queue_datagrams
            || data.len() > cfg.queue_bytes.saturating_sub(st.queued_bytes)
        {
            if !st.queue.is_empty() {
                st.want_drained = true;
            }
            return Err(NetError::Full {
                capacity: cfg.queue_bytes,
            });
        }
        st.queue.push_back((addr, data.to_vec()));
        st.queued_bytes += data.len();
        st.want_drained = true;
        Ok(())
    }

    /// Datagrams queued, not yet taken by the OS.
    pub fn queued(&self) -> usize {
        self.udp.st.borrow().queue.len()
    }

    /// Payload bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.udp.st.borrow().queued_bytes
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.udp
            .cell
            .with(|s| s.local_addr())?
            .map_err(|e| NetError::io(Op::Option, e))
    }

    /// Closes the socket now, discarding queued datagrams; no event
    /// follows.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`] (the socket is closed
    /// anyway).
    pub fn close(self) -> Result<(), NetError> {
        self.udp.st.borrow_mut().done = true;
        self.udp.cell.close()
    }
}

impl Drop for UdpPort {
    fn drop(&mut self) {
        if let Ok(mut st) = self.udp.st.try_borrow_mut() {
            st.done = true;
        }
        self.udp.cell.close_quietly();
    }
}

static_assertions::assert_not_impl_any!(TcpConn: Send, Sync);
static_assertions::assert_not_impl_any!(TcpAcceptor: Send, Sync);
static_assertions::assert_not_impl_any!(UdpPort: Send, Sync);
static_assertions::assert_impl_all!(Accepted: Send);
static_assertions::assert_impl_all!(TcpEvent: Send);
