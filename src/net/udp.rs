//! Async-style UDP: [`UdpSocket`].

use super::tcp::{debug_socket, on_socket};
use super::{Dir, Io, NetError, Op, Plain};
use mio::Interest;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};

/// A UDP socket for async code. Not `Send`; dropping it closes it.
///
/// Sends never buffer in the runtime: a datagram is handed to the OS or
/// the future waits until the OS can take it.
pub struct UdpSocket {
    cell: Rc<Plain<mio::net::UdpSocket>>,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_socket(f, "UdpSocket", ("local", self.local_addr()), &[])
    }
}

impl UdpSocket {
    /// Binds to `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Bind`] or [`Op::Register`].
    pub fn bind(io: &Io, addr: SocketAddr) -> Result<UdpSocket, NetError> {
        let sock = mio::net::UdpSocket::bind(addr).map_err(|e| NetError::io(Op::Bind, e))?;
        let cell = Plain::register(&io.reactor, sock, Interest::READABLE | Interest::WRITABLE)?;
        Ok(UdpSocket { cell })
    }

    /// Registers a bound std socket; sets it non-blocking.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Option`] or [`Op::Register`].
    pub fn from_std(io: &Io, sock: std::net::UdpSocket) -> Result<UdpSocket, NetError> {
        sock.set_nonblocking(true)
            .map_err(|e| NetError::io(Op::Option, e))?;
        let sock = mio::net::UdpSocket::from_std(sock);
        let cell = Plain::register(&io.reactor, sock, Interest::READABLE | Interest::WRITABLE)?;
        Ok(UdpSocket { cell })
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        on_socket(&self.cell.0, Op::Option, |s| s.local_addr())
    }

    /// Sets the default peer for [`send`](UdpSocket::send) and filters
    /// [`recv`](UdpSocket::recv) to it.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Connect`]).
    pub fn connect(&self, addr: SocketAddr) -> Result<(), NetError> {
        on_socket(&self.cell.0, Op::Connect, |s| s.connect(addr))
    }

    /// Closes the socket now, reporting a deregistration failure.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`].
    pub fn close(&self) -> Result<(), NetError> {
        self.cell.0.close()
    }

    /// Polls to send `buf` to `addr`.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        addr: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.cell
            .0
            .poll_io(cx, Dir::Write, |s| super::counted_out(s.send_to(buf, addr)))
    }

    /// Polls to receive a datagram into `buf` (the rest of a datagram
    /// longer than `buf` is lost, as with any UDP receive).
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.cell
            .0
            .poll_io(cx, Dir::Read, |s| super::counted_from(s.recv_from(buf)))
    }

    /// Sends `buf` to `addr` as one datagram.
    pub fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| self.poll_send_to(cx, buf, addr))
    }

    /// Receives one datagram and its sender.
    pub fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + 'a {
        std::future::poll_fn(move |cx| self.poll_recv_from(cx, buf))
    }

    /// Sends `buf` to the connected peer.
    pub fn send<'a>(&'a self, buf: &'a [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| {
            self.cell
                .0
                .poll_io(cx, Dir::Write, |s| super::counted_out(s.send(buf)))
        })
    }

    /// Receives one datagram from the connected peer.
    pub fn recv<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| {
            self.cell
                .0
                .poll_io(cx, Dir::Read, |s| super::counted_in(s.recv(buf)))
        })
    }
}
