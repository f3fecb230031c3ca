//! Sockets on the runtime's poll: TCP and UDP, each in two styles.
//!
//! * **Async style** — [`TcpStream`] implements `futures_io`'s
//!   [`AsyncRead`](futures_io::AsyncRead), [`AsyncWrite`](futures_io::AsyncWrite)
//!   and [`AsyncBufRead`](futures_io::AsyncBufRead); [`TcpListener`]
//!   accepts with [`accept`](TcpListener::accept) or as a
//!   [`Stream`](futures_core::Stream) ([`TcpListener::incoming`]);
//!   [`UdpSocket`] has `send_to`/`recv_from` futures. Use them from tasks
//!   ([`stakplane::task`](crate::task)), and hand them to async crates
//!   (hyper through `stakplane::http`, feature `hyper`; see
//!   `examples/http_hello.rs`).
//! * **Push style** — for actors: [`TcpConn`], [`TcpAcceptor`] and
//!   [`UdpPort`] live in an actor's state; what happens on them (data,
//!   end-of-stream, accepted connections, datagrams, errors, the end)
//!   arrives as a [`TcpEvent`], [`AcceptEvent`] or [`UdpEvent`] through a
//!   `Fwd` given at creation. Writes never block: what the OS does not
//!   take at once is buffered up to a bound ([`ConnConfig`],
//!   [`UdpConfig`]), beyond which they return [`NetError::Full`], and the
//!   actor is told when the buffer drains. The constructors take the
//!   actor's `cx` (a `Core`). The exactly-once and ordering rules of the
//!   events are in the [`push`] module docs.
//!
//! Every async-style handle needs the runtime's [`Io`], from
//! [`Runtime::io`](crate::rt::Runtime::io) or [`Io::of`] on a `Core`
//! (push-style constructors take the `Core` and find it themselves).
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//! Rules 71 and 72, on push-style events and writes, are in [`push`].
//!
//! **64. Edge-triggered readiness is read to the end**: an operation runs
//! until the OS reports `WouldBlock` (or a short stream read, which
//! empties the socket buffer; an end-of-stream or error still pending is
//! read), so bytes already there never wait for an event. A push
//! socket that stops at its per-turn share goes on right after the
//! loop's next poll, behind the sockets that poll finds ready: a share
//! every turn, however busy the loop.
//!
//! **65. Every OS error reaches the caller typed**: `NetError::Io { op, error }`
//! from constructors and push methods/events, the `io::Error` itself from
//! the futures-io traits; the runtime's own conditions are `NetError`
//! variants (`Closed`, `Full`, `TooLarge`, `NoRuntime`), recoverable from an
//! `io::Error` with `NetError::from_io`.
//!
//! **66. A peer's reset or close is an error, never a hang or a SIGPIPE**:
//! a read blocked when the peer resets ends with `ConnectionReset` (or
//! end-of-stream); writing to a closed peer fails with `EPIPE` /
//! `ECONNRESET` and the process lives, vectored writes too, whatever the
//! process's SIGPIPE disposition (writes go out with `MSG_NOSIGNAL`).
//!
//! **67. Half-close works both ways**: after the peer shuts down its write
//! side we read end-of-stream and can still write; after we shut down ours
//! (`poll_close`, `shutdown_write`) the peer reads end-of-stream and can
//! still reply.
//!
//! **68. A silent client costs nothing but its socket**: it never blocks
//! serving others.
//!
//! **69. Accept under descriptor exhaustion backs off**: `EMFILE` (and
//! `ENFILE`, `ENOBUFS`, `ENOMEM`) is reported, and accepting pauses
//! 10 ms, doubling to 1 s, instead of spinning; established connections
//! keep being served, and pending clients are accepted once descriptors
//! are free.
//!
//! **70. A handle owns its socket**: dropping it (so, for a socket in an
//! actor's state, the actor's death) closes the socket; the runtime's
//! stop closes the sockets left open, and later calls fail with
//! `NetError::Closed`, as does creating a socket; a task blocked in
//! `read` at the stop is dropped and the peer sees end-of-stream.
//!
//! **73. UDP keeps datagram boundaries** (push and async): one datagram per
//! receive, empty ones included, with its sender. Several tasks may wait
//! on one async socket at once (its methods take `&self`): readiness
//! wakes every one of them, none replaces another.
//!
//! **74. hyper runs on the actor thread**: HTTP/1.1 with hyper 1.x over
//! `net::TcpStream`, answers from an actor through `ask!`, keep-alive and
//! pipelining on one connection, a malformed request gets 400 and the
//! server keeps serving.
//!
//! **74a. Crates written against `tokio::io` run on `net::TcpStream`**
//! (feature `tokio-io`): it implements tokio's `AsyncRead` and
//! `AsyncWrite` over the same socket and readiness as the `futures-io`
//! traits, with no tokio runtime; `poll_shutdown` shuts down the write
//! direction (the peer reads end-of-stream and can still answer).
//!
//! A failed deregistration is returned by `close` (`close_now` on a
//! [`TcpStream`], so that `futures`' `AsyncWriteExt::close` keeps its
//! method syntax) and, when a handle is
//! dropped, logged as a `tracing` warning and counted in
//! [`RuntimeStats::deregister_errors`](crate::rt::RuntimeStats::deregister_errors).

mod cell;
pub mod push;
mod tcp;
mod udp;

pub(crate) use cell::{Dir, IoCell, Plain};
pub use push::{
    AcceptEvent, Accepted, ConnConfig, TcpAcceptor, TcpConn, TcpEvent, UdpConfig, UdpEvent,
    UdpPort, MAX_DATAGRAM, MAX_READ_CHUNK,
};
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;

pub use crate::rt::Io;
use crate::rt::Reactor;

/// Bytes the sockets of the calling thread (every runtime on it, every
/// kind of socket) have read and written so far: `(in, out)`. For the
/// runtime's status and metrics. Cost: O(1).
pub fn bytes() -> (u64, u64) {
    crate::rt::socket_bytes()
}

/// Counts `n` bytes read and `m` written.
#[inline]
fn count(n: usize, m: usize) {
    crate::rt::count_socket_bytes(n, m);
}

/// A read's result, its bytes counted.
#[inline]
pub(crate) fn counted_in(r: io::Result<usize>) -> io::Result<usize> {
    if let Ok(n) = r {
        count(n, 0);
    }
    r
}

/// A write's result, its bytes counted.
#[inline]
pub(crate) fn counted_out(r: io::Result<usize>) -> io::Result<usize> {
    if let Ok(n) = r {
        count(0, n);
    }
    r
}

/// A datagram received, its bytes counted.
#[inline]
pub(crate) fn counted_from<A>(r: io::Result<(usize, A)>) -> io::Result<(usize, A)> {
    if let Ok((n, _)) = &r {
        count(*n, 0);
    }
    r
}
use stakker::Core;
use std::fmt;
use std::io;
use std::time::Duration;

impl Io {
    /// The `Io` of the [`Runtime`](crate::rt::Runtime) driving `core`.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`] if `core`'s `Stakker` is not driven by a
    /// `Runtime` (a hand-driven `Stakker` has no poll).
    pub fn of(core: &mut Core) -> Result<Io, NetError> {
        core.anymap_try_get::<Reactor>()
            .map(|reactor| Io { reactor })
            .ok_or(NetError::NoRuntime)
    }
}

/// What a socket operation was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Binding a listener or socket.
    Bind,
    /// Connecting.
    Connect,
    /// Accepting a connection.
    Accept,
    /// Reading or receiving.
    Read,
    /// Writing or sending.
    Write,
    /// Shutting down a direction of a connection.
    Shutdown,
    /// Registering with the poll (or changing the registration).
    Register,
    /// Deregistering from the poll.
    Deregister,
    /// Reading or setting a socket option or address.
    Option,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Bind => "bind",
            Op::Connect => "connect",
            Op::Accept => "accept",
            Op::Read => "read",
            Op::Write => "write",
            Op::Shutdown => "shutdown",
            Op::Register => "register",
            Op::Deregister => "deregister",
            Op::Option => "socket option",
        })
    }
}

/// A failed socket operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// The `Core` is not driven by a [`Runtime`](crate::rt::Runtime).
    NoRuntime,
    /// The socket was closed (by `close`, or by the runtime's shutdown).
    Closed,
    /// The write buffer is full (push style): `capacity` bytes are
    /// waiting; wait for the drain notice.
    Full {
        /// The buffer's bound, in bytes.
        capacity: usize,
    },
    /// A push-style write larger than the whole write bound
    /// ([`ConnConfig::write_limit`]): it can never be taken, so no drain
    /// notice comes for it. Split it, or raise the bound.
    TooLarge {
        /// The bytes the write offered.
        len: usize,
        /// The buffer's bound, in bytes.
        limit: usize,
    },
    /// The OS refused `op`.
    Io {
        /// What was being done.
        op: Op,
        /// The OS error (its `kind()` and `raw_os_error()` tell which).
        error: io::Error,
    },
}

impl NetError {
    pub(crate) fn io(op: Op, error: io::Error) -> NetError {
        NetError::Io { op, error }
    }

    /// The `NetError` inside an `io::Error` returned by a `futures_io`
    /// method, if the runtime put one there (e.g. [`NetError::Closed`]).
    pub fn from_io(e: &io::Error) -> Option<&NetError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<NetError>())
    }

    /// The OS error kind, if this is an OS error.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            NetError::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }

    /// True for the errors of a connection the peer reset or closed under
    /// a write (`ECONNRESET`, `EPIPE`, `ECONNABORTED`).
    pub fn is_reset(&self) -> bool {
        matches!(
            self.kind(),
            Some(
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            )
        )
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoRuntime => f.write_str("no stakplane runtime drives this Stakker"),
            NetError::Closed => f.write_str("the socket is closed"),
            NetError::Full { capacity } => {
                write!(f, "the write buffer is full ({capacity} bytes)")
            }
            NetError::TooLarge { len, limit } => {
                write!(
                    f,
                    "a write of {len} bytes exceeds the write bound ({limit} bytes)"
                )
            }
            NetError::Io { op, error } => write!(f, "{op} failed: {error}"),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<NetError> for io::Error {
    /// OS errors come back unwrapped; the runtime's own errors are
    /// wrapped with a fitting kind (`Closed`: `NotConnected`; `Full` and
    /// `NoRuntime`: `Other`; `TooLarge`: `InvalidInput`). `Full` is not
    /// `WouldBlock`: that kind means "retry when ready" to async I/O
    /// code, which would then wait for a wake that never comes.
    fn from(e: NetError) -> io::Error {
        let kind = match &e {
            NetError::Io { .. } => {
                let NetError::Io { error, .. } = e else {
                    unreachable!()
                };
                return error;
            }
            NetError::Closed => io::ErrorKind::NotConnected,
            NetError::Full { .. } | NetError::NoRuntime => io::ErrorKind::Other,
            NetError::TooLarge { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Is `e` the OS saying the process (or system) is out of descriptors or
/// buffers? Then accepting again at once would spin: back off.
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    // EMFILE and ENFILE, ENOMEM, ENOBUFS: their numbers on Linux and the
    // BSDs / macOS (std has no ErrorKind for them).
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOMEM: i32 = 12;
    #[cfg(target_os = "linux")]
    const ENOBUFS: i32 = 105;
    #[cfg(not(target_os = "linux"))]
    const ENOBUFS: i32 = 55;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOMEM | ENOBUFS))
        || e.kind() == io::ErrorKind::OutOfMemory
}

/// The accept back-off after descriptor exhaustion: 10 ms, doubling, at
/// most 1 s; back to the start after a successful accept.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    pub(crate) const FIRST: Duration = Duration::from_millis(10);
    pub(crate) const MAX: Duration = Duration::from_secs(1);

    /// The delay to wait now, and the next one doubled.
    pub(crate) fn bump(&mut self) -> Duration {
        let d = self.next.unwrap_or(Backoff::FIRST);
        self.next = Some((d * 2).min(Backoff::MAX));
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = None;
    }
}
