//! Serving HTTP with hyper 1.x on the actor thread (feature `hyper`).
//!
//! hyper 1.x brings no runtime: it asks for an I/O type, a timer and
//! (for HTTP/2) an executor, through its `rt` traits. This module gives
//! all three on stakplane, and an accept loop that uses them:
//!
//! | item | what |
//! |---|---|
//! | [`HyperIo`] | hyper's `Read`/`Write` over any futures-io `AsyncRead + AsyncWrite` ([`net::TcpStream`](crate::net::TcpStream), a TLS stream, ...), in safe code, with no buffer per connection |
//! | [`Timer`] | hyper's `Timer` on the runtime's stakker time (so the header-read timeout and HTTP/2 pings work, and run on virtual time in tests); `Send + Sync` without `unsafe` |
//! | [`LocalExecutor`] | hyper's `Executor` that spawns onto the runtime thread (HTTP/2 streams; `!Send` services welcome) |
//! | [`serve`] | the accept loop: a connection limit, the header-read timeout on by default, graceful shutdown with a grace, failed connections through `tracing`, rate-limited ([`ServeConfig`], [`Server`], [`ServeStats`]) |
//!
//! ```no_run
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//! use stakplane::http::{serve, ServeConfig};
//! use stakplane::net::TcpListener;
//! use stakplane::rt::Runtime;
//! use std::convert::Infallible;
//!
//! async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from(format!("hello, {}\n", req.uri().path())))))
//! }
//!
//! let mut rt = Runtime::builder().handle_signals(true).build()?;
//! let listener = TcpListener::bind(&rt.io(), "127.0.0.1:3000".parse()?)?;
//! let server = serve(rt.core(), listener, ServeConfig::new(), hyper::service::service_fn(hello))?;
//! rt.run(|_| server)?; // until Ctrl-C
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To drive hyper yourself (a client, TLS, your own accept loop), hand
//! its builders the three pieces:
//!
//! ```
//! use http_body_util::Empty;
//! use hyper::body::Bytes;
//! use stakplane::http::{HyperIo, LocalExecutor, Timer};
//! use stakplane::net::TcpStream;
//!
//! # async fn client(io: stakplane::rt::Io, exec: LocalExecutor, timer: Timer,
//! #                 addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
//! let stream = TcpStream::connect(&io, addr).await?;
//! let (mut send, conn) = hyper::client::conn::http2::Builder::new(exec)
//!     .timer(timer)
//!     .handshake::<_, Empty<Bytes>>(HyperIo::new(stream))
//!     .await?;
//! stakplane::task::spawn_local(conn); // drives the connection
//! let resp = send.send_request(hyper::Request::new(Empty::new())).await?;
//! # let _ = resp; Ok(()) }
//! ```
//!
//! ## Costs
//!
//! Measured on the 2-core development VM (loopback, release build; the
//! method is in `BENCHMARKS.md`, 2026-12-05):
//!
//! - **Memory**: 10.9 kB per idle kept-alive HTTP/1 connection under
//!   [`serve`] (2,000 of them, each with its header-read timer armed;
//!   10.8 kB with a bare accept loop), against 19.0 kB with the
//!   `BufReader`-style adapter this replaces (its 8 KiB buffer per
//!   connection), and 17.7 kB if hyper's buffer were zeroed per read to
//!   read into it in place (that touches all of hyper's 8 KiB at once).
//!   tokio's figure, same hyper settings (issue 18): 10.9 kB.
//! - **Reads**: one copy (stream → the thread's [`READ_CHUNK`] scratch
//!   chunk → hyper's buffer; hyper 1.x has no safe way to read in place).
//!   Bulk bodies run at the speed of an in-place read (about 800 MiB/s
//!   each way, within the noise), small requests as fast as before
//!   (about 6 µs per request round trip, client and server on one
//!   thread).
//! - **Timer**: a sleep made, polled (armed) and dropped unfired (its
//!   stakker timer deleted) costs about 245 ns, against 170 ns for the
//!   `!Send` [`task::sleep`](crate::task::sleep): the `Send` version's
//!   price (hyper's `Box`, an `Arc`, an uncontended mutex) is about
//!   75 ns per request that arms the header-read timeout.
//! - An HTTP/2 stream is a task (about 70 ns to spawn).

//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **150. hyper runs over any futures-io stream through `HyperIo`**: it
//! needs `AsyncRead + AsyncWrite` only (no `AsyncBufRead`); every byte
//! the stream reads reaches hyper once, in order, through the thread's
//! scratch chunk (no buffer per connection); HTTP/1.1 and HTTP/2 servers
//! and clients run over it on the actor thread, HTTP/2's streams as
//! local tasks ([`LocalExecutor`]), a `!Send` service included.
//!
//! **151. The timer runs on stakker time and is sound**: [`Timer`] and
//! its sleeps are `Send + Sync` by construction (no `unsafe impl`,
//! checked at compile time); a sleep completes at its deadline on the
//! runtime's clock (virtual time in tests), at once if that has passed;
//! `now` is that clock inside a task; a reset moves the deadline; any
//! number of sleeps, armed and dropped in any order, each complete at
//! their own deadline and never before; once every armed sleep has
//! fired or been dropped the runtime holds no timer for them (an idle
//! runtime ends); a sleep polled or dropped on another thread is armed
//! or taken out through the runtime's [`Remote`](crate::rt::Remote).
//!
//! **152. The header-read timeout closes a slow client at its deadline
//! while the others are served**: with [`serve`]'s default (30 s) or
//! any [`ServeConfig::header_read_timeout`], a client that has not sent
//! a request's headers that long after the server began reading them is
//! disconnected at exactly that time of the runtime's clock, without a
//! response, counted in [`ServeStats::timeouts`]; other connections are
//! served meanwhile.
//!
//! **153. A graceful shutdown finishes what is in flight within the
//! grace**: [`Server::shutdown`] closes the listener at once (new
//! clients are refused), closes idle connections at once (one with no
//! request in flight that hyper keeps open, such as a client half-way
//! through a request head or an HTTP/2 connection in its handshake, once
//! nothing has been in flight or written on it for [`SHUTDOWN_IDLE`], or
//! the grace if that is shorter: the end of a response still being
//! written is not cut off; an HTTP/2 connection that has had a request
//! is left to h2, which closes it once its streams are sent), lets each
//! request in flight finish with its response (HTTP/1 with
//! `connection: close`; HTTP/2 sends `GOAWAY`, refuses new streams and
//! finishes the open ones), and drops the connections still open when the
//! [grace](ServeConfig::grace) ends; [`Server::wait`] completes once
//! none is left. The runtime's own stop (`Remote::stop`, a signal, the
//! end of `block_on`) shuts every server of the runtime down this way and
//! waits for them, within the runtime's
//! [shutdown grace](crate::rt::Builder::shutdown_grace), before it drops
//! the tasks: a request in flight at Ctrl-C gets its answer.
//!
//! **154. The connection limit holds**: never more than
//! [`max_connections`](ServeConfig::max_connections) connections are
//! open; at the limit the server stops accepting (new clients wait in
//! the OS's listen backlog, none is refused) and accepts again as soon
//! as one closes.
//!
//! **155. Failures are logged, rate-limited**: each failed connection
//! or accept is counted ([`ServeStats`]) and goes to `tracing` (target
//! `stakplane::http`; `warn`; header-read timeouts, and clients gone
//! mid-request or resetting, `debug`) with the
//! peer and the error's chain, at most one line per
//! [`error_log_interval`](ServeConfig::error_log_interval) of the
//! runtime's clock and level; the next line says how many were left out
//! (`suppressed`).
//!
//! **156. A connection that makes no progress is closed; a handler's
//! panic is contained and counted**: a connection on which the server
//! waits to write and the client reads nothing for the
//! [I/O timeout](ServeConfig::io_timeout) is closed; an HTTP/2 client
//! that sends nothing within the
//! [header-read timeout](ServeConfig::header_read_timeout) of connecting
//! is closed; both count in [`ServeStats::timeouts`] and are logged
//! (rule 155). An HTTP/2 connection with no request in flight for the
//! header-read timeout is told to go (`GOAWAY`; hyper closes it once the
//! rest of its responses are written), as HTTP/1 closes an idle
//! kept-alive connection; on HTTP/2 the server also pings
//! the client (every half I/O timeout) and hyper closes a connection
//! whose ping goes unanswered. A handler that takes its time is never a
//! stall. On HTTP/2, where h2 takes a whole response body at once and
//! sends it as the client's window opens, a connection told to go (idle,
//! or by a shutdown) that still holds responses its client does not read
//! is a stall once none has moved (keep-alive pings aside) for the I/O
//! timeout; a shutdown never closes such a connection before the grace
//! for being quiet. A panic in a handler's future or its response body is caught
//! at that request: it gets no response (HTTP/1: its connection is
//! closed; HTTP/2: its stream is reset, the connection goes on), the
//! panic is counted in [`ServeStats::panics`] and the error
//! ([`HandlerPanic`]) logged; the server and its other connections go on.
//! An error the handler returns, or its response body yields, is
//! answered the same way (the rest of the response is not sent), counted
//! in [`ServeStats::handler_errors`] and logged: on HTTP/2, where hyper
//! only resets the stream, it would otherwise leave no trace.
//! A request head longer than
//! [`max_request_head`](ServeConfig::max_request_head) is answered `431`
//! and its connection closed, so that a connection's read buffer stays
//! within that bound. Not bounded by the server: a request body that
//! never comes while the handler reads it, or its size (bound both in
//! the handler, e.g. with `http_body_util::Limited` and
//! [`timeout`](crate::task::timeout)).

mod exec;
mod io;
mod serve;
mod timer;
mod watch;

pub use exec::LocalExecutor;
pub use io::{HyperIo, READ_CHUNK};
pub use serve::{
    serve, Protocol, ServeConfig, ServeStats, Server, ServerState, DEFAULT_ERROR_LOG_INTERVAL,
    DEFAULT_GRACE, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IO_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_REQUEST_HEAD, MIN_REQUEST_HEAD, SHUTDOWN_IDLE,
};
pub use timer::Timer;
pub use watch::HandlerPanic;

use crate::net::NetError;
use crate::task::SpawnError;
use std::error::Error;
use std::fmt;
use std::time::Instant;

/// The runtime's clock inside a task (virtual time in tests), the wall
/// clock elsewhere: the one clock of the timer, the server and its log.
fn now() -> Instant {
    crate::task::try_now().unwrap_or_else(Instant::now)
}

/// Why a [`Timer`], a [`LocalExecutor`] or a [`serve`] could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpError {
    /// The `Core` is not driven by a stakplane
    /// [`Runtime`](crate::rt::Runtime) (the timer needs its cross-thread
    /// [`Remote`](crate::rt::Remote), the server its sockets).
    NoRuntime,
    /// The runtime could not take a task (see [`SpawnError`]).
    Spawn(SpawnError),
    /// The listener failed (closed, or its address could not be read).
    Net(NetError),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::NoRuntime => {
                f.write_str("not on a stakplane runtime (a hand-driven Stakker has no Remote)")
            }
            HttpError::Spawn(e) => write!(f, "spawning the server's task: {e}"),
            HttpError::Net(e) => write!(f, "the listener: {e}"),
        }
    }
}

impl Error for HttpError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            HttpError::NoRuntime => None,
            HttpError::Spawn(e) => Some(e),
            HttpError::Net(e) => Some(e),
        }
    }
}

impl From<NetError> for HttpError {
    fn from(e: NetError) -> Self {
        HttpError::Net(e)
    }
}
