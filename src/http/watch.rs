//! What [`serve`](super::serve) watches on each connection (rule 156):
//! whether its socket makes progress, how many requests are in flight,
//! and the handler's panics.
//!
//! - [`Watched`] wraps the connection's stream: it notes whether the
//!   client has sent anything, when a write starts to wait and when
//!   written bytes move again.
//! - [`Tracked`] wraps the service: a request is in flight from the call
//!   until its response body is done (or dropped); a panic in the
//!   handler's future or in its response body becomes a typed error
//!   ([`HandlerPanic`]) that hyper answers by closing the connection
//!   (HTTP/1) or resetting the stream (HTTP/2), and is counted; an
//!   error the handler or its body returns is counted too, and answered
//!   the same way.
//!
//! The connection's task (`drive` in `serve.rs`) reads these and closes a
//! connection that stalls ([`Stall`]).

use super::now;
use super::serve::Shared;
use futures_io::{AsyncRead, AsyncWrite};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response};
use std::cell::{Cell, RefCell};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A boxed error as hyper takes it from a service or a body.
pub(super) type BoxError = Box<dyn StdError + Send + Sync>;

/// The size of an HTTP/2 `PING` frame (a 9-byte header, 8 bytes of
/// data): a write no larger is no response going out.
const PING_FRAME: usize = 17;

/// One connection's progress and load, shared by its stream, its service
/// and its task.
pub(super) struct Watch {
    /// When the connection was accepted.
    pub(super) opened: Instant,
    /// The client has sent something.
    pub(super) heard: Cell<bool>,
    /// Since when a write (or flush) has waited with no byte written
    /// (`None`: not waiting, or bytes went since).
    pub(super) write_waits: Cell<Option<Instant>>,
    /// When bytes were last written.
    pub(super) wrote: Cell<Option<Instant>>,
    /// When a write last moved more than an HTTP/2 `PING` frame: a
    /// response going out, not keep-alive traffic alone.
    pub(super) moved: Cell<Option<Instant>>,
    /// A request was ever made on the connection.
    pub(super) served: Cell<bool>,
    /// Requests whose handler or response body is not done.
    pub(super) in_flight: Cell<usize>,
    /// Since when none has been in flight (`None` while one is).
    pub(super) idle_since: Cell<Option<Instant>>,
    /// The connection task's waker: told when the last request in flight
    /// ends outside the task's own poll (on HTTP/2, in a stream's task).
    pub(super) task: RefCell<Option<Waker>>,
    /// The connection task is polling its connection: a request ending
    /// now needs no wake.
    pub(super) polling: Cell<bool>,
    /// The server (its counters and log) and the client's address, for
    /// a handler's panic.
    server: Weak<Shared>,
    peer: SocketAddr,
}

impl Watch {
    pub(super) fn new(now: Instant, server: &Rc<Shared>, peer: SocketAddr) -> Rc<Watch> {
        Rc::new(Watch {
            opened: now,
            heard: Cell::new(false),
            write_waits: Cell::new(None),
            wrote: Cell::new(None),
            moved: Cell::new(None),
            served: Cell::new(false),
            in_flight: Cell::new(0),
            idle_since: Cell::new(Some(now)),
            task: RefCell::new(None),
            polling: Cell::new(false),
            server: Rc::downgrade(server),
            peer,
        })
    }

    /// A write or a flush waits: the clock starts, once.
    fn waits(&self) {
        if self.write_waits.get().is_none() {
            self.write_waits.set(Some(now()));
        }
    }

    /// Notes how a write came out: waiting starts the clock; bytes moved
    /// stop it.
    fn noted_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.waits(),
            Poll::Ready(Ok(n)) if *n > 0 => {
                let now = now();
                self.write_waits.set(None);
                self.wrote.set(Some(now));
                if *n > PING_FRAME {
                    self.moved.set(Some(now));
                }
            }
            Poll::Ready(_) => {}
        }
    }

    fn begin(&self) {
        self.served.set(true);
        self.in_flight.set(self.in_flight.get() + 1);
        self.idle_since.set(None);
    }

    fn end(&self) {
        let n = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(n);
        if n == 0 {
            self.idle_since.set(Some(now()));
            if !self.polling.get() {
                let waker = self.task.borrow_mut().take();
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }
}

/// The connection's stream, reporting its progress to a [`Watch`].
pub(super) struct Watched<T> {
    pub(super) inner: T,
    pub(super) watch: Rc<Watch>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.watch.heard.set(true);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch.noted_write(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch.noted_write(&polled);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        // A flush done ends a wait, but moves no byte of its own.
        match polled {
            Poll::Pending => this.watch.waits(),
            Poll::Ready(Ok(())) => this.watch.write_waits.set(None),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// A request in flight, from the service's call to the end of its
/// response body.
struct Flight(Rc<Watch>);

impl Flight {
    fn new(watch: &Rc<Watch>) -> Flight {
        watch.begin();
        Flight(watch.clone())
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A handler (its future, or its response body) panicked: the request
/// gets no response (rule 156).
#[derive(Debug)]
pub struct HandlerPanic {
    message: String,
}

impl HandlerPanic {
    /// The panic's message (`(panic payload is not a string)` if it was
    /// no string).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the handler panicked: {}", self.message)
    }
}

impl StdError for HandlerPanic {}

/// Turns a caught panic into the error hyper gets; counts and logs it
/// (rule 155) at once, whatever becomes of the connection, on the
/// connection of `flight` (none: a body polled again after its end).
fn panicked(flight: Option<&Flight>, payload: Box<dyn std::any::Any + Send>) -> BoxError {
    let message = crate::task::panic_message(&*payload).to_string();
    crate::task::drop_payload(payload);
    let error = HandlerPanic { message };
    let watch = flight.map(|f| &*f.0);
    if let Some(server) = watch.and_then(|w| w.server.upgrade()) {
        server.update(|s| s.panics += 1);
        server.log_error("request", watch.map(|w| w.peer), &error);
    }
    Box::new(error)
}

/// Counts and logs (rule 155) a handler's error (its future's or its
/// response body's) on the connection of `flight`, and hands it on to
/// hyper, which answers it as a panic (rule 156).
fn handler_failed(flight: Option<&Flight>, error: BoxError) -> BoxError {
    let watch = flight.map(|f| &*f.0);
    if let Some(server) = watch.and_then(|w| w.server.upgrade()) {
        server.update(|s| s.handler_errors += 1);
        server.log_error("request", watch.map(|w| w.peer), &*error);
    }
    error
}

/// The service of one connection, watched.
pub(super) struct Tracked<S> {
    pub(super) inner: S,
    pub(super) watch: Rc<Watch>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = BoxError;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let flight = Flight::new(&self.watch);
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => TrackedFuture {
                fut: Some(fut),
                flight: Some(flight),
                failed: None,
            },
            Err(payload) => TrackedFuture {
                fut: None,
                failed: Some(panicked(Some(&flight), payload)),
                flight: Some(flight),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A handler's future, its panics caught.
    pub(super) struct TrackedFuture<F> {
        #[pin]
        fut: Option<F>,
        flight: Option<Flight>,
        failed: Option<BoxError>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TrackedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(resp))) => {
                this.fut.set(None);
                let flight = this.flight.take();
                Poll::Ready(Ok(resp.map(|inner| TrackedBody {
                    inner,
                    flight,
                    poisoned: false,
                })))
            }
            Ok(Poll::Ready(Err(e))) => {
                this.fut.set(None);
                Poll::Ready(Err(handler_failed(this.flight.as_ref(), e.into())))
            }
            Err(payload) => {
                this.fut.set(None);
                Poll::Ready(Err(panicked(this.flight.as_ref(), payload)))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body, its panics caught; its request is in flight until
    /// it is done or dropped.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        flight: Option<Flight>,
        // It panicked or failed: never polled again.
        poisoned: bool,
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.poisoned {
            return Poll::Ready(None);
        }
        let inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(Poll::Ready(None)) => {
                // Done: the request is no longer in flight.
                drop(this.flight.take());
                Poll::Ready(None)
            }
            Ok(Poll::Ready(Some(Err(e)))) => {
                // The body failed: the request's stream ends here.
                *this.poisoned = true;
                let flight = this.flight.take();
                Poll::Ready(Some(Err(handler_failed(flight.as_ref(), e.into()))))
            }
            Ok(polled) => polled.map(|f| f.map(|r| r.map_err(Into::into))),
            Err(payload) => {
                *this.poisoned = true;
                // Ends its flight once counted.
                let flight = this.flight.take();
                Poll::Ready(Some(Err(panicked(flight.as_ref(), payload))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.poisoned || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a connection that stopped making progress was closed (rule 156).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stall {
    /// The client read nothing of what the server had to write for the
    /// I/O timeout.
    Write,
    /// HTTP/2: the client sent nothing within the header-read timeout of
    /// connecting.
    Silent,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stall::Write => "the client read nothing of the response within the I/O timeout",
            Stall::Silent => "the client sent nothing within the header-read timeout",
        })
    }
}

impl StdError for Stall {}
