//! Async-style TCP: [`TcpStream`] (futures-io traits) and [`TcpListener`]
//! (accept future and stream).

use super::{is_exhaustion, Backoff, Dir, Io, IoCell, NetError, Op, Plain};
use futures_core::Stream;
use futures_io::{AsyncBufRead, AsyncRead, AsyncWrite};
use mio::event::Source;
use mio::Interest;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

/// `send` flags that keep a write to a reset peer from raising SIGPIPE
/// (where the OS has the flag; Apple's sockets carry `SO_NOSIGPIPE`
/// instead, and Windows has no SIGPIPE).
const NO_SIGNAL: i32 = no_signal();

const fn no_signal() -> i32 {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly",
        target_os = "illumos",
        target_os = "solaris"
    ))]
    return libc::MSG_NOSIGNAL;
    #[allow(unreachable_code)]
    0
}

/// Size of the buffer behind [`AsyncBufRead`], allocated on first use.
const BUF_SIZE: usize = 8 * 1024;

/// A TCP connection for async code: implements `futures_io`'s
/// [`AsyncRead`], [`AsyncWrite`] and [`AsyncBufRead`].
///
/// Not `Send`: it lives on the runtime thread. Dropping it closes the
/// connection. [`poll_close`](AsyncWrite::poll_close) shuts down the write
/// direction (the peer reads end-of-stream); the socket itself closes on
/// drop or [`close_now`](TcpStream::close_now).
pub struct TcpStream {
    cell: Rc<Plain<mio::net::TcpStream>>,
    /// The [`AsyncBufRead`] buffer: `buf[pos..end]` is unread.
    rbuf: Option<ReadBuf>,
}

struct ReadBuf {
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
}

/// Whether a non-blocking connect has completed: `Ok` once established,
/// `WouldBlock` while in progress, the error if it failed (mio's connect
/// protocol: writable, no pending error, and a peer address).
pub(super) fn connected(s: &mut mio::net::TcpStream) -> io::Result<()> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(io::ErrorKind::WouldBlock.into()),
        Err(e) => Err(e),
    }
}

/// Runs `f` on the socket in `cell`: [`NetError::Closed`] once it is
/// closed, an OS error as [`NetError::Io`] with `op`. Every socket
/// handle's option, address and shutdown methods go through it (the
/// async ones here and in `udp.rs`, the push ones in `push/`).
pub(super) fn on_socket<S: Source + 'static, T>(
    cell: &IoCell<S>,
    op: Op,
    f: impl FnOnce(&S) -> io::Result<T>,
) -> Result<T, NetError> {
    cell.with(f)?.map_err(|e| NetError::io(op, e))
}

/// Formats a socket handle for `Debug`: its type `name`, its address
/// (`None` once closed) under the field name `addr.0`, then `state`.
/// Every socket handle's `Debug` (async and push) is this.
pub(super) fn debug_socket(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    addr: (&str, Result<SocketAddr, NetError>),
    state: &[(&str, &dyn fmt::Debug)],
) -> fmt::Result {
    let mut d = f.debug_struct(name);
    d.field(addr.0, &addr.1.ok());
    for (field, value) in state {
        d.field(field, value);
    }
    d.finish()
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_socket(f, "TcpStream", ("peer", self.peer_addr()), &[])
    }
}

impl TcpStream {
    /// Connects to `addr`; completes when the connection is established.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Connect`] (e.g. connection refused) or
    /// [`Op::Register`].
    pub fn connect(
        io: &Io,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<TcpStream, NetError>> + 'static {
        let reactor = io.reactor.clone();
        async move {
            let sock =
                mio::net::TcpStream::connect(addr).map_err(|e| NetError::io(Op::Connect, e))?;
            let cell = Plain::register(&reactor, sock, Interest::READABLE | Interest::WRITABLE)?;
            // Established when writable with no pending error and a peer
            // address (mio's connect protocol).
            std::future::poll_fn(|cx| cell.0.poll_io(cx, Dir::Write, connected))
                .await
                .map_err(|e| NetError::io(Op::Connect, e))?;
            Ok(TcpStream { cell, rbuf: None })
        }
    }

    /// Registers an established (or connecting) std stream; sets it
    /// non-blocking.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Option`] or [`Op::Register`].
    pub fn from_std(io: &Io, stream: std::net::TcpStream) -> Result<TcpStream, NetError> {
        stream
            .set_nonblocking(true)
            .map_err(|e| NetError::io(Op::Option, e))?;
        TcpStream::from_mio(io, mio::net::TcpStream::from_std(stream))
    }

    pub(crate) fn from_mio(io: &Io, sock: mio::net::TcpStream) -> Result<TcpStream, NetError> {
        let cell = Plain::register(&io.reactor, sock, Interest::READABLE | Interest::WRITABLE)?;
        Ok(TcpStream { cell, rbuf: None })
    }

    /// The peer's address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        on_socket(&self.cell.0, Op::Option, |s| s.peer_addr())
    }

    /// The local address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        on_socket(&self.cell.0, Op::Option, |s| s.local_addr())
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn set_nodelay(&self, on: bool) -> Result<(), NetError> {
        on_socket(&self.cell.0, Op::Option, |s| s.set_nodelay(on))
    }

    /// Shuts down one or both directions (`Write`: the peer reads
    /// end-of-stream).
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Shutdown`]).
    pub fn shutdown(&self, how: Shutdown) -> Result<(), NetError> {
        on_socket(&self.cell.0, Op::Shutdown, |s| s.shutdown(how))
    }

    /// Closes the socket now, reporting a deregistration failure (which
    /// a drop can only log). Later operations fail with
    /// [`NetError::Closed`].
    ///
    /// Not `futures::AsyncWriteExt::close` (`stream.close().await`),
    /// which flushes and shuts down the write direction only, so the peer
    /// reads end-of-stream and can still reply; this one is named apart
    /// so that both can be called with method syntax.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`].
    pub fn close_now(&self) -> Result<(), NetError> {
        self.cell.0.close()
    }

    /// Reads into `buf`; `Ok(0)` is end-of-stream. The same as
    /// `AsyncReadExt::read`, without the `futures` crate.
    pub fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| Pin::new(&mut *self).poll_read(cx, buf))
    }

    /// Writes all of `buf`.
    pub fn write_all<'a>(
        &'a mut self,
        mut buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + 'a {
        std::future::poll_fn(move |cx| {
            while !buf.is_empty() {
                let n = ready!(Pin::new(&mut *self).poll_write(cx, buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                buf = &buf[n..];
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(rb) = this.rbuf.as_mut().filter(|rb| rb.pos < rb.end) {
            let n = (rb.end - rb.pos).min(buf.len());
            buf[..n].copy_from_slice(&rb.buf[rb.pos..rb.pos + n]);
            rb.pos += n;
            return Poll::Ready(Ok(n));
        }
        let cap = buf.len();
        let res = this
            .cell
            .0
            .poll_io(cx, Dir::Read, |s| super::counted_in(s.read(buf)));
        if let Poll::Ready(Ok(n)) = res {
            this.cell.0.short_read(n, cap);
        }
        res
    }
}

impl AsyncBufRead for TcpStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        let rb = this.rbuf.get_or_insert_with(|| ReadBuf {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
        });
        if rb.pos >= rb.end {
            let n = ready!(this
                .cell
                .0
                .poll_io(cx, Dir::Read, |s| super::counted_in(s.read(&mut rb.buf))))?;
            this.cell.0.short_read(n, rb.buf.len());
            rb.pos = 0;
            rb.end = n;
        }
        Poll::Ready(Ok(&rb.buf[rb.pos..rb.end]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        if let Some(rb) = self.get_mut().rbuf.as_mut() {
            rb.pos = (rb.pos + amt).min(rb.end);
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cell
            .0
            .poll_io(cx, Dir::Write, |s| super::counted_out(s.write(buf)))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // `sendmsg` with `MSG_NOSIGNAL`, never `writev`: a reset peer is
        // an error, not a SIGPIPE (rule 66), whatever the process's
        // SIGPIPE disposition.
        self.cell.0.poll_io(cx, Dir::Write, |s| {
            super::counted_out(
                socket2::SockRef::from(&*s).send_vectored_with_flags(bufs, NO_SIGNAL),
            )
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No buffering above the socket: written means handed to the OS.
        if self.cell.0.is_closed() {
            return Poll::Ready(Err(NetError::Closed.into()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.shutdown(Shutdown::Write) {
            Ok(()) | Err(NetError::Closed) => Poll::Ready(Ok(())),
            Err(NetError::Io { error, .. }) if error.kind() == io::ErrorKind::NotConnected => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

/// tokio's I/O traits (feature `tokio-io`), for crates written against
/// `tokio::io` (tokio-util's codecs, tokio-rustls, ...): the same socket
/// and the same readiness as the `futures-io` traits, with no tokio
/// runtime. A read fills the unfilled part of tokio's `ReadBuf`,
/// zeroing only what was never initialised (once per buffer);
/// `poll_shutdown` is `poll_close`: the write direction shuts down.
#[cfg(feature = "tokio-io")]
impl tokio::io::AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(AsyncRead::poll_read(self, cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tokio-io")]
impl tokio::io::AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write_vectored(self, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(self, cx)
    }
}

/// A TCP listener for async code: [`accept`](TcpListener::accept) one
/// connection at a time, or turn it into a [`Stream`] with
/// [`incoming`](TcpListener::incoming).
///
/// After an accept fails because descriptors or buffers are exhausted
/// (`EMFILE` and kin), the error is returned and the next accept waits
/// first (10 ms, doubling to 1 s): a loop that retries at once does not
/// spin. Poll it inside a stakplane task (the back-off uses the task
/// timers).
pub struct TcpListener {
    cell: Rc<Plain<mio::net::TcpListener>>,
    io: Io,
    backoff: Backoff,
    pause: Option<stakplane_async::Sleep>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_socket(f, "TcpListener", ("local", self.local_addr()), &[])
    }
}

impl TcpListener {
    /// Binds to `addr` (port 0 picks a free port; see
    /// [`local_addr`](TcpListener::local_addr)).
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Bind`] or [`Op::Register`].
    pub fn bind(io: &Io, addr: SocketAddr) -> Result<TcpListener, NetError> {
        let sock = mio::net::TcpListener::bind(addr).map_err(|e| NetError::io(Op::Bind, e))?;
        TcpListener::from_mio(io, sock)
    }

    /// Registers a bound std listener; sets it non-blocking.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Option`] or [`Op::Register`].
    pub fn from_std(io: &Io, l: std::net::TcpListener) -> Result<TcpListener, NetError> {
        l.set_nonblocking(true)
            .map_err(|e| NetError::io(Op::Option, e))?;
        TcpListener::from_mio(io, mio::net::TcpListener::from_std(l))
    }

    fn from_mio(io: &Io, sock: mio::net::TcpListener) -> Result<TcpListener, NetError> {
        let cell = Plain::register(&io.reactor, sock, Interest::READABLE)?;
        Ok(TcpListener {
            cell,
            io: io.clone(),
            backoff: Backoff::default(),
            pause: None,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        on_socket(&self.cell.0, Op::Option, |s| s.local_addr())
    }

    /// Closes the listener now, reporting a deregistration failure.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`].
    pub fn close(&self) -> Result<(), NetError> {
        self.cell.0.close()
    }

    /// Polls for the next connection.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Accept`] (exhaustion errors start the
    /// back-off) or [`Op::Register`]; [`NetError::Closed`].
    pub fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(TcpStream, SocketAddr), NetError>> {
        if let Some(pause) = self.pause.as_mut() {
            ready!(Pin::new(pause).poll(cx));
            self.pause = None;
        }
        match ready!(self.cell.0.poll_io(cx, Dir::Read, |l| l.accept())) {
            Ok((sock, addr)) => {
                self.backoff.reset();
                Poll::Ready(TcpStream::from_mio(&self.io, sock).map(|s| (s, addr)))
            }
            Err(e) => {
                if is_exhaustion(&e) {
                    let d = self.backoff.bump();
                    tracing::warn!(error = %e, backoff_ms = d.as_millis() as u64,
                        "stakplane: accept failed for lack of resources; backing off");
                    self.pause = Some(stakplane_async::sleep(d));
                }
                if self.cell.0.is_closed() {
                    return Poll::Ready(Err(NetError::Closed));
                }
                Poll::Ready(Err(NetError::io(Op::Accept, e)))
            }
        }
    }

    /// Accepts the next connection.
    ///
    /// # Errors
    /// As [`poll_accept`](TcpListener::poll_accept).
    pub fn accept(
        &mut self,
    ) -> impl Future<Output = Result<(TcpStream, SocketAddr), NetError>> + '_ {
        std::future::poll_fn(move |cx| self.poll_accept(cx))
    }

    /// The listener as a [`Stream`] of connections. Errors are items too
    /// (the stream goes on after them), except [`NetError::Closed`],
    /// which ends it.
    pub fn incoming(self) -> Incoming {
        Incoming {
            listener: Some(self),
        }
    }
}

/// The [`Stream`] of [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming {
    listener: Option<TcpListener>,
}

impl Incoming {
    /// The listener, while the stream has not ended.
    pub fn listener(&self) -> Option<&TcpListener> {
        self.listener.as_ref()
    }
}

impl Stream for Incoming {
    type Item = Result<TcpStream, NetError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(l) = this.listener.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(l.poll_accept(cx)) {
            Ok((s, _)) => Poll::Ready(Some(Ok(s))),
            Err(NetError::Closed) => {
                this.listener = None;
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}
