//! [`serve`]: hyper's server connections over a stakplane
//! [`TcpListener`], with a connection limit, the header-read and I/O
//! timeouts, contained handler panics, graceful shutdown and
//! rate-limited error logs.
//!
//! Two kinds of task do the work, both on the runtime thread: the accept
//! loop, and one task per connection (hyper's `serve_connection` over a
//! [`HyperIo`]). They share the server's state (an `Rc`): the live
//! connections (each with its task's waker and abort handle), the
//! counters, the phase. [`Server`] is a handle on that state.

use super::watch::{Stall, Tracked, Watch, Watched};
use super::{HttpError, HyperIo, LocalExecutor, Timer};
use crate::net::{NetError, TcpListener, TcpStream};
use crate::rt::StopHold;
use crate::task::{AbortHandle, Spawner, TIMER_HORIZON};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use slab::Slab;
use stakker::Core;
use std::cell::{Cell, RefCell};
use std::error::Error as StdError;
use std::fmt;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The default of [`ServeConfig::max_connections`]: 4,096 live
/// connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The default of [`ServeConfig::header_read_timeout`]: 30 s (hyper's).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`ServeConfig::max_request_head`]: 64 KiB.
pub const DEFAULT_MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The least [`ServeConfig::max_request_head`] takes: 8 KiB (hyper's
/// least read buffer).
pub const MIN_REQUEST_HEAD: usize = 8 * 1024;

/// The default of [`ServeConfig::io_timeout`]: 60 s.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection with no request in flight, on which nothing has
/// been written for that long either, may stay open once a shutdown has
/// begun (less if the grace is shorter): one whose client has sent half a
/// request head, or an HTTP/2 connection still in its handshake (rule
/// 153).
pub const SHUTDOWN_IDLE: Duration = Duration::from_secs(1);

/// The default of [`ServeConfig::grace`]: 5 s (the runtime's shutdown
/// grace).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The default of [`ServeConfig::error_log_interval`]: 1 s.
pub const DEFAULT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Which HTTP version a [`serve`]d connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0), keep-alive and pipelining.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c: no upgrade, no TLS
    /// negotiation), each stream a task through [`LocalExecutor`].
    Http2,
}

/// How [`serve`] serves. Every value is taken as given or capped, never
/// refused (rule 63b): see each setter.
///
/// ```
/// use stakplane::http::{Protocol, ServeConfig};
/// use std::time::Duration;
///
/// let config = ServeConfig::new()
///     .max_connections(10_000)
///     .header_read_timeout(Some(Duration::from_secs(10)))
///     .grace(Duration::from_secs(2))
///     .protocol(Protocol::Http1);
/// assert_eq!(config.get_max_connections(), 10_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    max_connections: usize,
    header_read_timeout: Option<Duration>,
    io_timeout: Option<Duration>,
    max_request_head: usize,
    grace: Duration,
    protocol: Protocol,
    error_log_interval: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig::new()
    }
}

impl ServeConfig {
    /// The defaults: [`DEFAULT_MAX_CONNECTIONS`],
    /// [`DEFAULT_HEADER_READ_TIMEOUT`], [`DEFAULT_IO_TIMEOUT`],
    /// [`DEFAULT_MAX_REQUEST_HEAD`],
    /// [`DEFAULT_GRACE`], HTTP/1.1,
    /// [`DEFAULT_ERROR_LOG_INTERVAL`].
    pub const fn new() -> ServeConfig {
        ServeConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            io_timeout: Some(DEFAULT_IO_TIMEOUT),
            max_request_head: DEFAULT_MAX_REQUEST_HEAD,
            grace: DEFAULT_GRACE,
            protocol: Protocol::Http1,
            error_log_interval: DEFAULT_ERROR_LOG_INTERVAL,
        }
    }

    /// At most `n` live connections (0 is taken as 1). At the limit the
    /// server stops accepting: new clients wait in the listen backlog
    /// (the OS's) and are accepted as connections close.
    #[must_use]
    pub const fn max_connections(mut self, n: usize) -> ServeConfig {
        self.max_connections = if n == 0 { 1 } else { n };
        self
    }

    /// HTTP/1: a client must send a request's headers within `timeout`
    /// of the server starting to read them — when the connection opens,
    /// and after each response on a kept-alive connection, so it is also
    /// the idle timeout of kept-alive connections — or the connection is
    /// closed, with no response (hyper's `read header from client
    /// timeout`, counted in [`ServeStats::timeouts`]). `None` switches it
    /// off: then a client that sends half a request and waits holds its
    /// connection until it goes or a shutdown's grace ends. Timed on the
    /// runtime's clock; a value past [`TIMER_HORIZON`] is taken as it
    /// (never fires).
    ///
    /// HTTP/2 (rule 156): a client must send its first bytes within
    /// `timeout` of connecting, or the connection is closed (counted in
    /// [`ServeStats::timeouts`]); and a connection with no request in
    /// flight for `timeout` is told to go (`GOAWAY`: hyper closes it once
    /// the rest of its responses are written), as an idle kept-alive
    /// HTTP/1 connection is closed.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> ServeConfig {
        self.header_read_timeout = timeout.map(|t| t.min(TIMER_HORIZON));
        self
    }

    /// A connection that stops making progress for `timeout` is closed,
    /// with no more of its response, counted in [`ServeStats::timeouts`]
    /// (rule 156): the server waits to write and the client reads none
    /// of it (a client that never reads its responses). A handler that
    /// takes its time (a long poll) is not a stall; nor, on HTTP/1, is a
    /// request body that does not come: a handler that reads a body
    /// bounds that itself (e.g. with [`timeout`](crate::task::timeout)).
    /// On HTTP/2 the server
    /// also pings the client every `timeout / 2` and closes the
    /// connection if a ping is not answered within `timeout / 2` (a peer
    /// gone without a word). `None` switches all this off. Timed on the
    /// runtime's clock; a value past [`TIMER_HORIZON`] is taken as it.
    #[must_use]
    pub fn io_timeout(mut self, timeout: Option<Duration>) -> ServeConfig {
        self.io_timeout = timeout.map(|t| t.min(TIMER_HORIZON));
        self
    }

    /// The largest request head taken, in bytes (less than
    /// [`MIN_REQUEST_HEAD`] is taken as it). HTTP/1: a request line and
    /// headers longer than that are answered `431 Request Header Fields
    /// Too Large` and the connection closed (counted in
    /// [`ServeStats::errors`]); it is also the most a connection buffers
    /// while it reads, which bounds a connection's read memory. HTTP/2:
    /// the largest header list a client may send.
    #[must_use]
    pub const fn max_request_head(mut self, bytes: usize) -> ServeConfig {
        self.max_request_head = if bytes < MIN_REQUEST_HEAD {
            MIN_REQUEST_HEAD
        } else {
            bytes
        };
        self
    }

    /// How long a [`Server::shutdown`] waits for in-flight requests
    /// before it drops the connections still open. A value past the
    /// timer horizon waits for them however long they take.
    #[must_use]
    pub const fn grace(mut self, grace: Duration) -> ServeConfig {
        self.grace = grace;
        self
    }

    /// The HTTP version connections speak.
    #[must_use]
    pub const fn protocol(mut self, protocol: Protocol) -> ServeConfig {
        self.protocol = protocol;
        self
    }

    /// At most one log line per `interval` (of the runtime's clock) for
    /// failed connections and accepts; the next line counts the ones
    /// left out meanwhile. Zero logs every one.
    #[must_use]
    pub const fn error_log_interval(mut self, interval: Duration) -> ServeConfig {
        self.error_log_interval = interval;
        self
    }

    /// The connection limit.
    pub const fn get_max_connections(&self) -> usize {
        self.max_connections
    }

    /// The HTTP/1 header-read timeout.
    pub const fn get_header_read_timeout(&self) -> Option<Duration> {
        self.header_read_timeout
    }

    /// The largest request head.
    pub const fn get_max_request_head(&self) -> usize {
        self.max_request_head
    }

    /// The I/O timeout.
    pub const fn get_io_timeout(&self) -> Option<Duration> {
        self.io_timeout
    }

    /// The shutdown grace.
    pub const fn get_grace(&self) -> Duration {
        self.grace
    }

    /// The HTTP version.
    pub const fn get_protocol(&self) -> Protocol {
        self.protocol
    }

    /// The error log interval.
    pub const fn get_error_log_interval(&self) -> Duration {
        self.error_log_interval
    }
}

/// What a [`Server`] has done so far ([`Server::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: usize,
    /// The most connections open at once.
    pub peak: usize,
    /// Times the accept loop paused at the connection limit.
    pub limit_pauses: u64,
    /// Connections ended with an error (timeouts included).
    pub errors: u64,
    /// Of those, header-read timeouts and connections closed for making
    /// no progress (rule 156).
    pub timeouts: u64,
    /// Requests whose handler (its future or its response body)
    /// panicked: each got no response (rule 156).
    pub panics: u64,
    /// Requests whose handler returned an error, or whose response body
    /// failed: each got no response, or the rest of it (as a panic's;
    /// rule 156).
    pub handler_errors: u64,
    /// Of [`errors`](ServeStats::errors), connections the client ended
    /// in the middle of a request, or reset (logged at `debug`).
    pub aborted: u64,
    /// Accepts that failed (each logged, rate-limited).
    pub accept_errors: u64,
    /// Connections dropped at the end of a shutdown's grace.
    pub dropped_at_grace: u64,
    /// Log lines left out by the rate limit.
    pub suppressed_logs: u64,
}

/// Where a [`Server`] is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerState {
    /// Accepting and serving.
    Running,
    /// Shutting down: no longer accepting, in-flight requests finishing
    /// until the grace ends.
    Draining,
    /// Not accepting and no connection left (after a shutdown, or after
    /// the listener was closed, e.g. by the runtime's stop).
    Finished,
}

/// A connection's entry: how to tell it to shut down, or end it.
struct Conn {
    waker: Option<Waker>,
    abort: Option<AbortHandle>,
}

/// The rate limit of one level of the error log.
#[derive(Default)]
struct LogLimit {
    /// A line has been logged.
    logged: bool,
    /// No line before this (`None` after a line: an interval too long
    /// for an `Instant` never ends).
    until: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed since the last line)` if a line may be logged at
    /// `now`; `None` (and one more suppressed) otherwise.
    fn admit(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        if self.logged && self.until.is_none_or(|until| now < until) {
            self.suppressed += 1;
            return None;
        }
        self.logged = true;
        self.until = now.checked_add(interval);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The state the accept loop, the connection tasks and the handles share.
pub(super) struct Shared {
    config: ServeConfig,
    local_addr: SocketAddr,
    spawner: Spawner,
    timer: Timer,
    phase: Cell<ServerState>,
    /// When the shutdown began.
    drain_began: Cell<Option<Instant>>,
    /// The accept loop runs.
    accepting: Cell<bool>,
    /// The accept loop waits at the connection limit.
    paused: Cell<bool>,
    /// The accept loop's waker: woken when there is room again, or on a
    /// shutdown.
    accept_waker: RefCell<Option<Waker>>,
    conns: RefCell<Slab<Conn>>,
    stats: Cell<ServeStats>,
    /// The warnings' limit and the ordinary failures' (`debug`: an idle
    /// kept-alive connection ends with a header-read timeout, a client
    /// may go mid-request).
    log: RefCell<[LogLimit; 2]>,
    grace_task: RefCell<Option<AbortHandle>>,
    /// Holds the runtime's stop until the server has finished (rule 153).
    stop_hold: RefCell<Option<StopHold>>,
    /// The wakers of the pending [`Server::wait`]s, one slot each (a
    /// dropped wait takes its slot out).
    waiters: RefCell<Slab<Waker>>,
}

impl Shared {
    pub(super) fn update(&self, f: impl FnOnce(&mut ServeStats)) {
        let mut st = self.stats.get();
        f(&mut st);
        self.stats.set(st);
    }

    fn wake_accept(&self) {
        let waker = self.accept_waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Finished once nothing accepts and no connection is left.
    fn check_finished(&self) {
        if self.phase.get() == ServerState::Finished
            || self.accepting.get()
            || !self.conns.borrow().is_empty()
        {
            return;
        }
        self.phase.set(ServerState::Finished);
        let hold = self.stop_hold.borrow_mut().take();
        drop(hold);
        let grace = self.grace_task.borrow_mut().take();
        if let Some(g) = grace {
            g.abort();
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    fn shutdown(self: &Rc<Self>) {
        if self.phase.get() != ServerState::Running {
            return;
        }
        self.phase.set(ServerState::Draining);
        self.drain_began.set(Some(super::now()));
        self.wake_accept();
        // Wake each connection: its next poll tells hyper to finish.
        let wakers: Vec<Waker> = self
            .conns
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, c)| c.waker.take())
            .collect();
        for w in wakers {
            w.wake();
        }
        let me = self.clone();
        let grace = self.config.grace;
        match self.spawner.try_spawn(async move {
            crate::task::sleep(grace).await;
            me.end_of_grace();
        }) {
            Ok(handle) => *self.grace_task.borrow_mut() = Some(handle.abort_handle()),
            // No room for the grace's timer: no grace.
            Err(e) => {
                self.log_error("starting the shutdown grace", None, &e);
                self.end_of_grace();
            }
        }
        self.check_finished();
    }

    /// Drops the connections still open.
    fn end_of_grace(&self) {
        let aborts: Vec<AbortHandle> = self
            .conns
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, c)| c.abort.take())
            .collect();
        if !aborts.is_empty() {
            let n = aborts.len();
            self.update(|s| s.dropped_at_grace += n as u64);
            tracing::info!(
                target: "stakplane::http",
                addr = %self.local_addr,
                connections = n,
                "stakplane::http: shutdown grace over; dropping the connections still open"
            );
        }
        // Outside the borrow: each abort drops its task's future, whose
        // guard removes its entry.
        for a in aborts {
            a.abort();
        }
    }

    /// Logs one failure, at most one line per interval and level:
    /// header-read timeouts and clients gone mid-request at `debug`, the
    /// rest at `warn` (rule 155).
    pub(super) fn log_error(
        &self,
        what: &str,
        peer: Option<SocketAddr>,
        error: &(dyn StdError + 'static),
    ) {
        // A silent HTTP/2 client is a header-read timeout too; a client
        // gone mid-request is as ordinary.
        let quiet = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
            || error.downcast_ref::<Stall>() == Some(&Stall::Silent)
            || client_gone(error);
        let now = super::now();
        let admitted =
            self.log.borrow_mut()[usize::from(quiet)].admit(now, self.config.error_log_interval);
        let Some(suppressed) = admitted else {
            self.update(|s| s.suppressed_logs += 1);
            return;
        };
        let (addr, error) = (self.local_addr, Chain(error));
        let peer: &dyn fmt::Display = match &peer {
            Some(p) => p,
            None => &"-",
        };
        if quiet {
            tracing::debug!(target: "stakplane::http", %addr, %peer, %error, suppressed,
                "stakplane::http: {what} failed");
        } else {
            tracing::warn!(target: "stakplane::http", %addr, %peer, %error, suppressed,
                "stakplane::http: {what} failed");
        }
    }
}

/// True if `error` is a client gone in the middle of a request (hyper's
/// incomplete message) or that reset its connection.
fn client_gone(error: &(dyn StdError + 'static)) -> bool {
    if error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_incomplete_message)
    {
        return true;
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        source = e.source();
    }
    false
}

/// An error and its sources, `a: b: c`.
struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A running server: made by [`serve`]. A handle, not the owner:
/// dropping it leaves the server running (it ends with the runtime's
/// stop, which closes its listener and drops its tasks, or after a
/// [`shutdown`](Server::shutdown)). Cheap to clone; not `Send` (keep it
/// on the runtime thread: in an actor, a task, or what
/// [`Runtime::run`](crate::rt::Runtime::run)'s closure returns).
#[derive(Clone)]
pub struct Server {
    shared: Rc<Shared>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.shared.local_addr)
            .field("state", &self.shared.phase.get())
            .field("stats", &self.shared.stats.get())
            .finish()
    }
}

impl Server {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Where it is in its life.
    pub fn state(&self) -> ServerState {
        self.shared.phase.get()
    }

    /// The counters.
    pub fn stats(&self) -> ServeStats {
        self.shared.stats.get()
    }

    /// Starts a graceful shutdown (once; later calls do nothing): the
    /// listener is closed (new clients are refused), idle connections
    /// are closed, each in-flight request is answered (HTTP/1 with
    /// `connection: close`; HTTP/2 sends `GOAWAY` and finishes the open
    /// streams), and the connections still open when the
    /// [grace](ServeConfig::grace) ends are dropped. Await
    /// [`wait`](Server::wait) for the end.
    ///
    /// The runtime's own stop (`Remote::stop`, a signal) does the same,
    /// and waits for the server within its shutdown grace (rule 153). To
    /// shut a server down while the runtime goes on, or to have its final
    /// counters:
    ///
    /// ```no_run
    /// # fn f(rt: &mut stakplane::rt::Runtime, server: stakplane::http::Server) {
    /// let stats = rt.block_on(async move {
    ///     server.shutdown();
    ///     server.wait().await
    /// });
    /// # }
    /// ```
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Completes once the server has [finished](ServerState::Finished),
    /// with its final counters. Any number of waits may be pending; one
    /// dropped before the end leaves nothing behind.
    pub fn wait(&self) -> impl Future<Output = ServeStats> + 'static {
        Wait {
            shared: self.shared.clone(),
            slot: None,
        }
    }
}

/// A pending [`Server::wait`]: its waker has a slot of its own.
struct Wait {
    shared: Rc<Shared>,
    slot: Option<usize>,
}

impl Future for Wait {
    type Output = ServeStats;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ServeStats> {
        let this = self.get_mut();
        if this.shared.phase.get() == ServerState::Finished {
            return Poll::Ready(this.shared.stats.get());
        }
        let mut waiters = this.shared.waiters.borrow_mut();
        match this.slot.and_then(|k| waiters.get_mut(k)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
            }
            None => this.slot = Some(waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(k) = self.slot {
            let removed = self.shared.waiters.borrow_mut().try_remove(k);
            // Outside the borrow: a waker's drop may run anything.
            drop(removed);
        }
    }
}

/// Serves `service` on every connection `listener` accepts, on the
/// runtime driving `core`, as `config` says. Returns at once; the
/// accept loop and the connections run as tasks.
///
/// Each connection gets a clone of `service` and a [`HyperIo`] over the
/// stream (`TCP_NODELAY` set), hyper's `serve_connection` with the
/// runtime's [`Timer`] (and, for HTTP/2, a [`LocalExecutor`]). Nothing
/// needs to be `Send`: the service may hold actor handles and `ask!`
/// them. Failed connections and accepts are logged through `tracing`
/// (target `stakplane::http`, rate-limited) and counted in
/// [`ServeStats`]. See the [module docs](crate::http) for the rules.
///
/// Not served: HTTP/1 upgrades (`101 Switching Protocols`: WebSocket,
/// h2c) and `CONNECT` tunnels. hyper hands an upgraded connection over
/// only for `Send` I/O, and a runtime's socket is not `Send`: a handler
/// that answers `101` gets its response sent and the connection closed
/// after it (`hyper::upgrade::on` resolves to an error).
///
/// ```no_run
/// use http_body_util::Full;
/// use hyper::body::{Bytes, Incoming};
/// use hyper::{Request, Response};
/// use stakplane::http::{serve, ServeConfig};
/// use stakplane::net::TcpListener;
/// use stakplane::rt::Runtime;
/// use std::convert::Infallible;
///
/// async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
///     Ok(Response::new(Full::new(Bytes::from("hello\n"))))
/// }
///
/// let mut rt = Runtime::builder().handle_signals(true).build()?;
/// let listener = TcpListener::bind(&rt.io(), "127.0.0.1:3000".parse()?)?;
/// let config = ServeConfig::new().max_connections(1000);
/// let server = serve(rt.core(), listener, config, hyper::service::service_fn(hello))?;
/// println!("serving on http://{}/", server.local_addr());
/// rt.run(|_| server)?; // until Ctrl-C
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`HttpError::NoRuntime`] if `core` is not driven by a stakplane
/// [`Runtime`](crate::rt::Runtime); [`HttpError::Net`] if the listener
/// is closed; [`HttpError::Spawn`] if the runtime has no room for a
/// task. Nothing runs then, and the listener is closed.
pub fn serve<S, B>(
    core: &mut Core,
    listener: TcpListener,
    config: ServeConfig,
    service: S,
) -> Result<Server, HttpError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + 'static,
    S::Future: 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let timer = Timer::new(core)?;
    let spawner = crate::task::try_spawner(core).map_err(HttpError::Spawn)?;
    let local_addr = listener.local_addr().map_err(HttpError::Net)?;
    let shared = Rc::new(Shared {
        config,
        local_addr,
        spawner: spawner.clone(),
        timer,
        phase: Cell::new(ServerState::Running),
        drain_began: Cell::new(None),
        accepting: Cell::new(true),
        paused: Cell::new(false),
        accept_waker: RefCell::new(None),
        conns: RefCell::new(Slab::new()),
        stats: Cell::new(ServeStats::default()),
        log: RefCell::new(Default::default()),
        grace_task: RefCell::new(None),
        stop_hold: RefCell::new(None),
        waiters: RefCell::new(Slab::new()),
    });
    // The runtime's stop shuts the server down gracefully, and waits for
    // it within the runtime's shutdown grace.
    let weak = Rc::downgrade(&shared);
    let hold = crate::rt::hold_stop(core, move || {
        if let Some(shared) = weak.upgrade() {
            shared.shutdown();
        }
    });
    *shared.stop_hold.borrow_mut() = hold;
    let handle = spawner
        .try_spawn(accept_loop(shared.clone(), listener, service))
        .map_err(HttpError::Spawn)?;
    drop(handle); // detached: it ends with the listener or a shutdown
    Ok(Server { shared })
}

/// Ends the accept loop's part when its task ends, however it ends.
struct AcceptGuard(Rc<Shared>);

impl Drop for AcceptGuard {
    fn drop(&mut self) {
        self.0.accepting.set(false);
        self.0.check_finished();
    }
}

async fn accept_loop<S, B>(shared: Rc<Shared>, mut listener: TcpListener, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + 'static,
    S::Future: 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let _guard = AcceptGuard(shared.clone());
    loop {
        let next = poll_fn(|cx| {
            if shared.phase.get() != ServerState::Running {
                return Poll::Ready(None);
            }
            {
                let mut w = shared.accept_waker.borrow_mut();
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            if shared.conns.borrow().len() >= shared.config.max_connections {
                if !shared.paused.replace(true) {
                    shared.update(|s| s.limit_pauses += 1);
                }
                return Poll::Pending;
            }
            shared.paused.set(false);
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match next {
            // Shutting down: the listener is dropped (closed) below.
            None => break,
            Some(Ok((stream, peer))) => start(&shared, stream, peer, service.clone()),
            Some(Err(NetError::Closed)) => break,
            // Out of descriptors and kin: the listener backs off before
            // the next accept, so going on does not spin.
            Some(Err(e)) => {
                shared.update(|s| s.accept_errors += 1);
                shared.log_error("accept", None, &e);
            }
        }
    }
}

/// Spawns the task of a connection just accepted.
fn start<S, B>(shared: &Rc<Shared>, stream: TcpStream, peer: SocketAddr, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>> + 'static,
    S::Future: 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let key = shared.conns.borrow_mut().insert(Conn {
        waker: None,
        abort: None,
    });
    let n = shared.conns.borrow().len();
    shared.update(|s| {
        s.accepted += 1;
        s.active = n;
        s.peak = s.peak.max(n);
    });
    let guard = ConnGuard {
        shared: shared.clone(),
        key,
    };
    // Responses are written whole: no Nagle delay. A failure here only
    // costs latency.
    let _ = stream.set_nodelay(true);
    // One future type per protocol: each task is only as large as its
    // own protocol's connection.
    let spawned = match shared.config.protocol {
        Protocol::Http1 => shared
            .spawner
            .try_spawn(serve_http1(guard, stream, peer, service)),
        Protocol::Http2 => shared
            .spawner
            .try_spawn(serve_http2(guard, stream, peer, service)),
    };
    match spawned {
        Ok(handle) => {
            if let Some(c) = shared.conns.borrow_mut().get_mut(key) {
                c.abort = Some(handle.abort_handle());
            }
        }
        // The future (and its guard, which removes the entry) is dropped.
        Err(e) => {
            shared.update(|s| s.errors += 1);
            shared.log_error("spawning a connection", Some(peer), &e);
        }
    }
}

/// Removes a connection's entry when its task ends, however it ends.
struct ConnGuard {
    shared: Rc<Shared>,
    key: usize,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let s = &self.shared;
        let removed = s.conns.borrow_mut().try_remove(self.key);
        drop(removed);
        let n = s.conns.borrow().len();
        s.update(|st| st.active = n);
        // Room for one more, if the accept loop waits for it.
        if s.paused.get() {
            s.wake_accept();
        }
        s.check_finished();
    }
}

/// Serves HTTP/1.1 on a connection.
async fn serve_http1<S, B>(guard: ConnGuard, stream: TcpStream, peer: SocketAddr, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>> + 'static,
    S::Future: 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let watch = Watch::new(super::now(), &guard.shared, peer);
    let conn = {
        let shared = &guard.shared;
        let mut b = http1::Builder::new();
        b.timer(shared.timer.clone())
            .header_read_timeout(shared.config.header_read_timeout)
            .max_buf_size(shared.config.max_request_head);
        let (io, service) = watched(&watch, stream, service);
        Box::pin(b.serve_connection(io, service))
    };
    let served = drive(&guard, &watch, conn, http1::Connection::graceful_shutdown).await;
    ended(guard, peer, served);
}

/// Serves HTTP/2 on a connection, each stream a task.
async fn serve_http2<S, B>(guard: ConnGuard, stream: TcpStream, peer: SocketAddr, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>> + 'static,
    S::Future: 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let watch = Watch::new(super::now(), &guard.shared, peer);
    let conn = {
        let shared = &guard.shared;
        let mut b = http2::Builder::new(LocalExecutor::from_spawner(shared.spawner.clone()));
        b.timer(shared.timer.clone()).max_header_list_size(
            u32::try_from(shared.config.max_request_head).unwrap_or(u32::MAX),
        );
        if let Some(t) = shared.config.io_timeout {
            // A peer gone without a word answers no ping.
            let half = (t / 2).max(Duration::from_millis(1));
            b.keep_alive_interval(half).keep_alive_timeout(half);
        }
        let (io, service) = watched(&watch, stream, service);
        Box::pin(b.serve_connection(io, service))
    };
    let served = drive(&guard, &watch, conn, http2::Connection::graceful_shutdown).await;
    ended(guard, peer, served);
}

/// The stream and the service of a connection, watched by `watch`.
fn watched<S>(
    watch: &Rc<Watch>,
    stream: TcpStream,
    service: S,
) -> (HyperIo<Watched<TcpStream>>, Tracked<S>) {
    let io = HyperIo::new(Watched {
        inner: stream,
        watch: watch.clone(),
    });
    let service = Tracked {
        inner: service,
        watch: watch.clone(),
    };
    (io, service)
}

/// How a connection's task ended, if not well.
enum Failed {
    /// hyper ended it with this error.
    Hyper(hyper::Error),
    /// It stopped making progress (rule 156).
    Stalled(Stall),
}

/// Counts and logs how a connection ended; its entry goes with `guard`.
fn ended(guard: ConnGuard, peer: SocketAddr, served: Result<(), Failed>) {
    let shared = &guard.shared;
    match served {
        Ok(()) => {}
        Err(Failed::Hyper(e)) => {
            if e.is_timeout() {
                shared.update(|s| s.timeouts += 1);
            }
            if client_gone(&e) {
                shared.update(|s| s.aborted += 1);
            }
            shared.update(|s| s.errors += 1);
            shared.log_error("connection", Some(peer), &e);
        }
        Err(Failed::Stalled(stall)) => {
            shared.update(|s| {
                s.timeouts += 1;
                s.errors += 1;
            });
            shared.log_error("connection", Some(peer), &stall);
        }
    }
}

/// Polls `conn` to its end; once the server drains, tells it to finish
/// (`graceful`) first, and closes it once nothing has been in flight or
/// written for [`SHUTDOWN_IDLE`]. Closes it if it stalls, and tells an
/// idle HTTP/2 connection to go (rule 156). The connection is boxed on
/// its own: a future moved into an `async fn` can take its room twice in
/// the task.
async fn drive<C>(
    guard: &ConnGuard,
    watch: &Rc<Watch>,
    mut conn: Pin<Box<C>>,
    graceful: impl Fn(Pin<&mut C>),
) -> Result<(), Failed>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let shared = &guard.shared;
    let config = shared.config;
    let h2 = config.protocol == Protocol::Http2;
    // When it was told to finish (by the shutdown, or as an idle HTTP/2
    // connection).
    let mut told: Option<Instant> = None;
    let mut timer: Option<(Instant, crate::task::Sleep)> = None;
    poll_fn(|cx: &mut Context<'_>| loop {
        let draining = shared.phase.get() != ServerState::Running;
        if told.is_none() {
            if draining {
                told = Some(super::now());
                graceful(conn.as_mut());
            } else if let Some(c) = shared.conns.borrow_mut().get_mut(guard.key) {
                // The task's waker is the same for each poll: keep it
                // once, for the shutdown to wake.
                if c.waker.is_none() {
                    c.waker = Some(cx.waker().clone());
                }
            }
        }
        watch.polling.set(true);
        let polled = conn.as_mut().poll(cx);
        watch.polling.set(false);
        if let Poll::Ready(r) = polled {
            return Poll::Ready(r.map_err(Failed::Hyper));
        }
        let now = super::now();
        let due = deadlines(
            watch,
            config,
            h2,
            told,
            draining.then_some(shared.drain_began.get()).flatten(),
        );
        match due.iter().flatten().min_by_key(|d| d.at) {
            Some(d) if d.at <= now => match d.what {
                Due::Stalled(stall) => return Poll::Ready(Err(Failed::Stalled(stall))),
                Due::Idle => {
                    told = Some(now);
                    graceful(conn.as_mut());
                    continue;
                }
                Due::Close => return Poll::Ready(Ok(())),
            },
            // A sleep armed for an earlier time is kept: when it fires the
            // deadlines are looked at again.
            Some(d) => {
                if timer.as_ref().is_none_or(|(at, _)| d.at < *at) {
                    timer = Some((d.at, crate::task::sleep_until(d.at)));
                }
            }
            None => timer = None,
        }
        {
            let mut task = watch.task.borrow_mut();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if let Some((_, sleep)) = timer.as_mut() {
            if Pin::new(sleep).poll(cx).is_ready() {
                // Due (or moved later): look again.
                timer = None;
                continue;
            }
        }
        return Poll::Pending;
    })
    .await
}

/// What falls due on a connection.
#[derive(Clone, Copy)]
enum Due {
    /// Close it as stalled.
    Stalled(Stall),
    /// HTTP/2, nothing in flight: tell it to go.
    Idle,
    /// Draining, nothing in flight: close it.
    Close,
}

#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    what: Due,
}

/// The deadlines of a connection now (rule 156; `told`: when it was
/// told to finish; `drain`: when the server began to drain, if it is
/// draining).
fn deadlines(
    watch: &Watch,
    config: ServeConfig,
    h2: bool,
    told: Option<Instant>,
    drain: Option<Instant>,
) -> [Option<Deadline>; 5] {
    let at = |since: Option<Instant>, after: Option<Duration>, what| {
        Some(Deadline {
            at: since?.checked_add(after?)?,
            what,
        })
    };
    let idle = watch.idle_since.get();
    // Draining, nothing in flight, nothing waiting to be written: closed
    // once nothing has been written for a while either (hyper may still
    // hold the end of a response whose body it has taken).
    // (On HTTP/2 only a connection that never had a request: h2 takes a
    // whole response body at once and sends it as the client's window
    // opens, so one with nothing in flight may still be sending; h2
    // closes it once its streams are done, the grace bounds the rest.)
    let quiet = drain
        .zip(idle)
        .filter(|_| watch.write_waits.get().is_none() && !(h2 && watch.served.get()))
        .map(|(d, i)| d.max(i).max(watch.wrote.get().unwrap_or(d)));
    // HTTP/2, told to go with nothing in flight but still open: h2 holds
    // responses the client does not read (its window closed). A stall
    // once no response has moved (keep-alive pings aside) for the I/O
    // timeout, as an HTTP/1 write that waits.
    let unread = told
        .filter(|_| h2)
        .zip(idle)
        .map(|(t, i)| t.max(i).max(watch.moved.get().unwrap_or(t)));
    [
        at(
            watch.write_waits.get(),
            config.io_timeout,
            Due::Stalled(Stall::Write),
        ),
        at(
            Some(watch.opened).filter(|_| h2 && !watch.heard.get()),
            config.header_read_timeout,
            Due::Stalled(Stall::Silent),
        ),
        at(
            idle.filter(|_| h2 && told.is_none()),
            config.header_read_timeout,
            Due::Idle,
        ),
        at(quiet, Some(SHUTDOWN_IDLE.min(config.grace)), Due::Close),
        at(unread, config.io_timeout, Due::Stalled(Stall::Write)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::Runtime;

    /// Waits dropped before the server ends leave no waker behind; one
    /// still pending completes with the final counters.
    #[test]
    fn dropped_waits_leave_nothing_and_a_pending_one_completes() {
        let mut rt = Runtime::builder()
            .virtual_time(Instant::now())
            .build()
            .expect("runtime");
        let listener =
            TcpListener::bind(&rt.io(), "127.0.0.1:0".parse().expect("addr")).expect("binds");
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        });
        let server = serve(rt.core(), listener, ServeConfig::new(), service).expect("serves");
        let mut cx = Context::from_waker(Waker::noop());
        let mut kept = Box::pin(server.wait());
        assert!(kept.as_mut().poll(&mut cx).is_pending());
        for _ in 0..100 {
            let mut w = Box::pin(server.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert!(
                w.as_mut().poll(&mut cx).is_pending(),
                "polled again: one slot"
            );
        }
        assert_eq!(server.shared.waiters.borrow().len(), 1, "the kept one");
        server.shutdown();
        let stats = rt.block_on(kept).expect("runs");
        assert_eq!(stats.accepted, 0);
        assert!(server.shared.waiters.borrow().is_empty());
    }
}
