//! [`HyperIo`]: hyper 1.x I/O over a `futures-io` stream, in safe code.
//!
//! Shared by the hyper examples (`http_hello`, `service`), each of which
//! includes it with `#[path = "common/hyper_io.rs"] mod hyper_io;`. It is
//! not an example by itself: cargo builds `examples/*.rs` and
//! `examples/*/main.rs` only. [`serve_http1`] is the accept loop both
//! serve HTTP/1.1 with.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use stakplane::net::{NetError, TcpListener};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Adapts a `futures-io` stream to hyper's I/O traits.
///
/// Reads copy from the stream's [`AsyncBufRead`](futures_io::AsyncBufRead)
/// buffer into hyper's with `put_slice`: no `unsafe`, one copy (the same
/// as reading into a local buffer first, without zeroing one per read).
/// `poll_shutdown` is `poll_close`, which for a
/// [`stakplane::net::TcpStream`] shuts down the write direction.
pub struct HyperIo<T>(pub T);

impl<T: futures_io::AsyncBufRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let inner = &mut self.get_mut().0;
        let avail = ready!(Pin::new(&mut *inner).poll_fill_buf(cx))?;
        // An empty slice is end-of-stream, which hyper reads as nothing
        // put into `buf`.
        let n = avail.len().min(buf.remaining());
        buf.put_slice(&avail[..n]);
        Pin::new(inner).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: futures_io::AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // `TcpStream` overrides `poll_write_vectored` with `writev`.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
    }
}

/// Accepts on `listener` until it closes (at the runtime's shutdown) and
/// serves each connection with HTTP/1.1 in its own detached task, each
/// request answered by `respond`. Errors are printed, prefixed by `label`.
pub async fn serve_http1<F, Fut>(mut listener: TcpListener, label: &'static str, respond: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let respond = respond.clone();
                // Detached: it ends with the connection (the client closes
                // it, a request is malformed — hyper answers 400 first —
                // or I/O fails), or is dropped at the runtime's shutdown.
                drop(stakplane::task::spawn_local(async move {
                    // Responses are written whole: no Nagle delay.
                    let _ = stream.set_nodelay(true);
                    let served = http1::Builder::new()
                        // Needs a hyper `Timer`, whose sleeps must be
                        // `Send + Sync`; stakplane's are `!Send` (they live
                        // on the actor thread). hyper's default (30 s)
                        // would only log a warning without one: say so.
                        .header_read_timeout(None)
                        .serve_connection(HyperIo(stream), service_fn(respond))
                        .await;
                    if let Err(e) = served {
                        eprintln!("{label}: {peer}: {e}");
                    }
                }));
            }
            Err(NetError::Closed) => return,
            // Out of descriptors and kin: the listener backs off before
            // the next accept, so retrying does not spin.
            Err(e) => eprintln!("{label}: accept: {e}"),
        }
    }
}
