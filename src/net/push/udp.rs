//! Push-style UDP: [`UdpPort`] and its [`UdpEvent`]s.

use super::{clamp_size, drive_after_poll, open, Kind, Reads, Socket};
use crate::net::tcp::debug_socket;
use crate::net::{Dir, Io, NetError, Op};
use mio::Interest;
use stakker::{Core, Fwd};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

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
    /// was refused with [`NetError::Full`] while datagrams were queued: a
    /// datagram larger than the queue's whole bound, refused with nothing
    /// queued, gets no `Drained`, as it never will fit).
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
        self.max_datagram = clamp_size(bytes, MAX_DATAGRAM);
        self
    }
}

#[derive(Default)]
struct UdpState {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    queued_bytes: usize,
    want_drained: bool,
}

/// The kind of a UDP port's [`Socket`].
struct Datagrams;

/// The shared state of a [`UdpPort`]: the reactor's handler.
type Udp = Socket<Datagrams>;

impl Kind for Datagrams {
    type Sock = mio::net::UdpSocket;
    type Event = UdpEvent;
    type State = UdpState;
    type Extra = Reads<UdpConfig>;
    const INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);
    const CLOSED: fn() -> UdpEvent = || UdpEvent::Closed;

    fn drive(u: &Udp) {
        if u.done.get() {
            return;
        }
        u.flush();
        u.recv();
    }
}

impl Udp {
    fn flush(&self) {
        while self.cell.is_ready(Dir::Write) {
            let failed = {
                let mut st = self.st.borrow_mut();
                if self.done.get() {
                    return;
                }
                let Some((to, data)) = st.queue.pop_front() else {
                    break;
                };
                match self.cell.try_io(Dir::Write, |s| {
                    crate::net::counted_out(s.send_to(&data, to))
                }) {
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
            st.queue.is_empty() && !self.done.get() && std::mem::take(&mut st.want_drained)
        };
        if drained {
            self.events.fwd(UdpEvent::Drained);
        }
    }

    fn recv(&self) {
        for _ in 0..self.x.config.recv_per_turn {
            if self.done.get() || !self.cell.is_ready(Dir::Read) {
                return;
            }
            let got = {
                let mut rbuf = self.x.buffer(self.x.config.max_datagram);
                match self.cell.try_io(Dir::Read, |s| {
                    crate::net::counted_from(s.recv_from(&mut rbuf[..]))
                }) {
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
            drive_after_poll(self.cell.reactor(), self.weak());
        }
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
        debug_socket(
            f,
            "UdpPort",
            ("local", self.local_addr()),
            &[("queued", &self.queued())],
        )
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
        let (io, sock) = open(core, Op::Bind, || mio::net::UdpSocket::bind(addr))?;
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
        let (io, sock) = open(core, Op::Option, move || {
            sock.set_nonblocking(true)?;
            Ok(mio::net::UdpSocket::from_std(sock))
        })?;
        UdpPort::register(core, &io, sock, config, events)
    }

    fn register(
        core: &mut Core,
        io: &Io,
        sock: mio::net::UdpSocket,
        config: UdpConfig,
        events: Fwd<UdpEvent>,
    ) -> Result<UdpPort, NetError> {
        let x = Reads::new(config);
        let udp = Socket::register(core, io, sock, events, UdpState::default(), x)?;
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
    ///   is taken; [`UdpEvent::Drained`] follows once the queued datagrams
    ///   are sent (none if nothing was queued: the datagram is larger than
    ///   the whole bound, and can only go when the OS takes it at once).
    /// * [`NetError::Closed`] if the port is closed.
    /// * [`NetError::Io`] with [`Op::Write`] if the OS refuses the
    ///   datagram (e.g. too long, no route). The port stays open.
    pub fn send_to(&self, data: &[u8], addr: SocketAddr) -> Result<(), NetError> {
        let u = &*self.udp;
        let mut st = u.st.borrow_mut();
        if u.done.get() {
            return Err(NetError::Closed);
        }
        if st.queue.is_empty() && u.cell.is_ready(Dir::Write) {
            match u.cell.try_io(Dir::Write, |s| {
                crate::net::counted_out(s.send_to(data, addr))
            }) {
                Err(e) => return Err(e),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(Err(e)) => return Err(NetError::io(Op::Write, e)),
            }
        }
        let cfg = &u.x.config;
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
        self.udp.option(|s| s.local_addr())
    }

    /// Closes the socket now, discarding queued datagrams; no event
    /// follows.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`] (the socket is closed
    /// anyway).
    pub fn close(self) -> Result<(), NetError> {
        self.udp.close_now()
    }
}

impl Drop for UdpPort {
    fn drop(&mut self) {
        self.udp.drop_handle();
    }
}
