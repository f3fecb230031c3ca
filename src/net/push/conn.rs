//! Push-style TCP connections: [`TcpConn`] and its [`TcpEvent`]s.

use super::{clamp_size, drive_after_poll, drive_soon, open, Accepted, Kind, Reads, Socket};
use crate::net::tcp::{debug_socket, on_socket};
use crate::net::{Dir, Io, NetError, Op};
use mio::Interest;
use stakker::{Core, Fwd};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

/// A write buffer that grew past this is freed when it drains.
const KEEP_WBUF: usize = 64 * 1024;

/// What a [`TcpConn`] tells its owner. See the [module docs](super) for the
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
    /// [`NetError::Full`] and takes nothing; a single write larger than
    /// the bound can never be taken and fails with [`NetError::TooLarge`]
    /// (with a bound of 0, every non-empty write).
    pub const fn write_limit(mut self, bytes: usize) -> ConnConfig {
        self.write_limit = bytes;
        self
    }

    /// The size of each read, hence the largest `Data`: between 1 and
    /// [`MAX_READ_CHUNK`] (a value outside is taken as the nearest bound,
    /// so a huge value never aborts the process on the allocation). The
    /// read buffer of this size lives as long as the connection.
    pub const fn read_chunk(mut self, bytes: usize) -> ConnConfig {
        self.read_chunk = clamp_size(bytes, MAX_READ_CHUNK);
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
}

impl ConnState {
    fn buffered(&self) -> usize {
        self.wbuf.len() - self.whead
    }
}

/// The kind of a connection's [`Socket`]: what it keeps besides, and how
/// it is driven.
struct Tcp;

/// The shared state of a [`TcpConn`]: the reactor's handler.
type Conn = Socket<Tcp>;

impl Kind for Tcp {
    type Sock = mio::net::TcpStream;
    type Event = TcpEvent;
    type State = ConnState;
    type Extra = Reads<ConnConfig>;
    const INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);
    const CLOSED: fn() -> TcpEvent = || TcpEvent::Closed;

    fn drive(c: &Conn) {
        if c.done.get() {
            return;
        }
        if c.st.borrow().connecting && !c.finish_connect() {
            return;
        }
        if c.flush() && c.read() {
            c.finish_if_both_done();
        }
    }
}

impl Conn {
    /// Checks whether the connect completed; true once established.
    fn finish_connect(&self) -> bool {
        let res = self.cell.try_io(Dir::Write, crate::net::tcp::connected);
        match res {
            Err(_) => false,
            Ok(Ok(())) => {
                self.st.borrow_mut().connecting = false;
                self.events.fwd(TcpEvent::Connected);
                !self.done.get()
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
                match self
                    .cell
                    .try_io(Dir::Write, |s| crate::net::counted_out(s.write(pending)))
                {
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
        !self.done.get()
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
            if total >= self.x.config.read_per_turn {
                drive_after_poll(self.cell.reactor(), self.weak());
                return true;
            }
            let got = {
                let mut rbuf = self.x.buffer(self.x.config.read_chunk);
                match self
                    .cell
                    .try_io(Dir::Read, |s| crate::net::counted_in(s.read(&mut rbuf[..])))
                {
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
                    return !self.done.get();
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
            if self.done.get() {
                return false;
            }
            if self.st.borrow().paused {
                return true;
            }
        }
        true
    }

    fn shutdown_now(&self) -> Result<(), NetError> {
        on_socket(&self.cell, Op::Shutdown, |s| s.shutdown(Shutdown::Write))?;
        self.st.borrow_mut().shut_done = true;
        Ok(())
    }

    /// Both directions finished: close and say so.
    fn finish_if_both_done(&self) {
        {
            let st = self.st.borrow();
            if self.done.get() || !st.read_closed || !st.shut_done {
                return;
            }
            self.done.set(true);
        }
        if let Err(e) = self.cell.close() {
            self.events.fwd(TcpEvent::Error(e));
        }
        self.events.fwd(TcpEvent::Closed);
    }

    /// The loop met `e`: close, deliver it, then `Closed`.
    fn fail(&self, e: NetError) {
        self.done.set(true);
        self.cell.close_quietly();
        self.events.fwd(TcpEvent::Error(e));
        self.events.fwd(TcpEvent::Closed);
    }

    /// A method met `e` (it returns it): close, and queue `Closed`.
    fn fail_from_call(&self, e: NetError) -> NetError {
        self.done.set(true);
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
/// [module docs](super) for the event rules.
pub struct TcpConn {
    conn: Rc<Conn>,
}

impl fmt::Debug for TcpConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_socket(
            f,
            "TcpConn",
            ("peer", self.peer_addr()),
            &[
                ("buffered", &self.buffered()),
                ("closed", &self.is_closed()),
            ],
        )
    }
}

impl TcpConn {
    /// Takes over a connection accepted by a [`TcpAcceptor`](super::TcpAcceptor); events go
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
        let (io, sock) = open(core, Op::Connect, || mio::net::TcpStream::connect(addr))?;
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
        let st = ConnState {
            connecting,
            ..ConnState::default()
        };
        let conn = Socket::register(core, io, sock, events, st, Reads::new(config))?;
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
    /// * [`NetError::TooLarge`] if `data` alone exceeds the bound: nothing
    ///   is taken, and no `Drained` is owed for it (it never fits).
    /// * [`NetError::Closed`] if the connection is closed or
    ///   [`shutdown_write`](TcpConn::shutdown_write) was called.
    /// * [`NetError::Io`] with [`Op::Write`] if the OS refuses (e.g. the
    ///   peer reset: [`NetError::is_reset`]; never SIGPIPE). The connection
    ///   is then closed and [`TcpEvent::Closed`] follows.
    pub fn write(&self, data: &[u8]) -> Result<(), NetError> {
        let c = &*self.conn;
        let mut st = c.st.borrow_mut();
        if c.done.get() || st.shut_wanted {
            return Err(NetError::Closed);
        }
        let buffered = st.buffered();
        let limit = c.x.config.write_limit;
        if data.len() > limit {
            // No drain makes room for it: no `Drained` is owed for it.
            return Err(NetError::TooLarge {
                len: data.len(),
                limit,
            });
        }
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
                let failed = match c
                    .cell
                    .try_io(Dir::Write, |s| crate::net::counted_out(s.write(rest)))
                {
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
        self.conn.x.config.write_limit
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
            was && !self.conn.done.get()
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
            if self.conn.done.get() {
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
        self.conn.close_now()
    }

    /// True once the connection is closed (by an error, both directions
    /// finishing, or the runtime's shutdown).
    pub fn is_closed(&self) -> bool {
        self.conn.done.get() || self.conn.cell.is_closed()
    }

    /// The peer's address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]; e.g. not
    /// connected yet).
    pub fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        self.conn.option(|s| s.peer_addr())
    }

    /// The local address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.conn.option(|s| s.local_addr())
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn set_nodelay(&self, on: bool) -> Result<(), NetError> {
        self.conn.option(|s| s.set_nodelay(on))
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        self.conn.drop_handle();
    }
}
