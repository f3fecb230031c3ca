//! [`HyperIo`]: hyper 1.x's I/O traits over any futures-io stream, in
//! safe code.
//!
//! hyper reads into its own buffer through a [`ReadBufCursor`] over
//! uninitialised memory. Writing into it directly needs `unsafe`
//! (`ReadBufCursor::as_mut` and `advance`: hyper 1.x has no safe way to
//! say how many bytes a read put there), and this crate forbids
//! `unsafe`. So a read goes from the stream into a scratch chunk of the
//! thread ([`READ_CHUNK`] bytes, zeroed once when the thread first reads,
//! then reused by every connection of the thread), and from there into
//! hyper's buffer with the safe `put_slice`. Per read that is one copy of
//! the bytes read — no zeroing, no allocation, and no buffer per
//! connection (the `BufReader` / `AsyncBufRead` route keeps 8 KiB per
//! connection, idle ones included).

use futures_io::{AsyncRead, AsyncWrite};
use hyper::rt::{Read, ReadBufCursor, Write};
use std::cell::Cell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most one read asks of the stream: 64 KiB, the size of the
/// thread's scratch chunk (one per thread, not per connection). hyper
/// asks for less at first (its read buffer starts at 8 KiB) and more as
/// reads fill it. Measured on loopback (64 MiB bodies): with 16 KiB a
/// bulk transfer ran about 20 % slower than reading into hyper's buffer
/// in place; with 64 KiB the two are within the noise (the copy costs
/// less than the system calls it saves).
pub const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The scratch chunk reads go through: zeroed once, reused by every
    /// read of the thread. Taken out while a read uses it, so a read
    /// nested in another (a stream that reads through a `HyperIo`) gets
    /// a fresh one instead of a borrow error.
    static SCRATCH: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

fn take_scratch() -> Box<[u8]> {
    SCRATCH
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; READ_CHUNK].into_boxed_slice())
}

fn put_scratch(chunk: Box<[u8]>) {
    // During thread exit the chunk is simply dropped.
    let _ = SCRATCH.try_with(|c| c.set(Some(chunk)));
}

/// Adapts a futures-io stream to hyper's [`Read`] and [`Write`]: wrap a
/// [`net::TcpStream`](crate::net::TcpStream) (or a TLS stream over one,
/// or any [`AsyncRead`] + [`AsyncWrite`]) and hand it to hyper's
/// `serve_connection` or `handshake`.
///
/// Only `AsyncRead` is needed for reading (no `AsyncBufRead`, so no
/// `BufReader` in front of a TLS stream). hyper 1.x has no safe way to
/// read into its buffer in place (its `ReadBufCursor::advance` is
/// `unsafe`, and this crate forbids `unsafe`), so a read goes into a
/// scratch chunk of the thread ([`READ_CHUNK`] bytes, zeroed once per
/// thread, shared by every connection of the thread) and is copied into
/// hyper's buffer with `put_slice`: one copy of the bytes read, no
/// zeroing per read, no buffer per connection.
/// [`poll_shutdown`](Write::poll_shutdown) is the stream's `poll_close`
/// (for a `TcpStream`: the write direction is shut down, the peer reads
/// end-of-stream).
///
/// ```
/// use stakplane::http::HyperIo;
/// # fn f(stream: stakplane::net::TcpStream) {
/// let io = HyperIo::new(stream);
/// // hyper::server::conn::http1::Builder::new().serve_connection(io, service)
/// # let _ = io;
/// # }
/// ```
pub struct HyperIo<T> {
    inner: T,
    vectored: bool,
}

impl<T> fmt::Debug for HyperIo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperIo")
            .field("vectored", &self.vectored)
            .finish_non_exhaustive()
    }
}

impl<T> HyperIo<T> {
    /// Wraps `inner`, telling hyper that it writes vectored (true of
    /// [`net::TcpStream`](crate::net::TcpStream), whose
    /// `poll_write_vectored` is one `writev`). For a stream whose
    /// `poll_write_vectored` writes one buffer at a time (futures-io's
    /// default), say so with [`vectored(false)`](HyperIo::vectored):
    /// hyper then gathers headers and body into one buffer first.
    pub fn new(inner: T) -> Self {
        HyperIo {
            inner,
            vectored: true,
        }
    }

    /// Whether hyper should hand the stream several buffers per write
    /// (see [`new`](HyperIo::new)).
    #[must_use]
    pub fn vectored(mut self, on: bool) -> Self {
        self.vectored = on;
        self
    }

    /// The stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The stream, unwrapped.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(READ_CHUNK);
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut chunk = take_scratch();
        let chunk_len = chunk.len().min(want);
        let polled = Pin::new(&mut self.get_mut().inner).poll_read(cx, &mut chunk[..chunk_len]);
        let out = match polled {
            // `Ok(0)` is end-of-stream: nothing put into `buf` says so.
            Poll::Ready(Ok(n)) => match chunk[..chunk_len].get(..n) {
                Some(read) => {
                    buf.put_slice(read);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Ready(Err(io::Error::other(format!(
                    "the stream reported {n} bytes read into a {chunk_len}-byte buffer"
                )))),
            },
            other => other.map_ok(|_| ()),
        };
        put_scratch(chunk);
        out
    }
}

impl<T: AsyncWrite + Unpin> Write for HyperIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
