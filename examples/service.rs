//! A network service on one thread: actors own the connections, async
//! code (hyper) runs beside them, and the two meet through messages.
//!
//! It is a small chat server. Each line a client sends on the chat port
//! is relayed to every other client; an HTTP endpoint reports how many
//! clients are connected and how many lines they sent.
//!
//! ```text
//! cargo run --example service                        # chat on 127.0.0.1:7070, HTTP on :8080
//! CHAT_PORT=7000 HTTP_PORT=8000 cargo run --example service
//! cargo run --example service -- --selftest          # free ports, scripted clients, exit 0/1
//! ```
//!
//! Then type into `nc 127.0.0.1 7070` in two terminals, and
//! `curl http://127.0.0.1:8080/stats` (with `--features hyper,serde,metrics`
//! also `/status`, the runtime's status as JSON, and `/metrics`, its
//! figures in Prometheus text). Ctrl-C stops the server in order;
//! a second Ctrl-C exits at once.
//!
//! ## Who owns what
//!
//! ```text
//! Runtime ──keeps──> Hub ──owns──> Session ──owns──> TcpConn     (one per client)
//!    │                ▲
//!    └──keeps──> ChatPort ──owns──> TcpAcceptor
//!                (linked: watches the Hub)
//!
//! task: HTTP accept loop ──> one task per connection (hyper) ──ask!──> Hub
//! ```
//!
//! * The **`Hub`** device is the shared state: the clients connected, the
//!   lines relayed, each client's count. It is the only place that knows
//!   all clients, so relaying is one loop over a map, without locks.
//! * Each connection is a **`Session`** device, and the session owns its
//!   [`TcpConn`]: when the session dies, for whatever reason, the socket
//!   closes (the client reads end-of-stream); when the connection ends,
//!   the session stops. The session turns bytes into lines and forwards
//!   them; it knows nothing of the others.
//! * The Hub creates the sessions and holds their [`DeviceOwn`]s, and it
//!   **monitors** each one: exactly one [`Down`] per session, with the
//!   [`Cause`]. A monitor is one-way, so a session's fault never touches
//!   the Hub (a link would fail the Hub too, unless it trapped).
//! * **`ChatPort`** owns the listening socket and hands each accepted
//!   connection to the Hub. It watches the Hub through a link: if the Hub
//!   faults, the port fails with it (a cascade) and closes, so no client
//!   is accepted into a room that is gone.
//! * The **HTTP side** is async code on the same thread: hyper's HTTP/1
//!   server, in tasks, over [`stakplane::net::TcpStream`], started by
//!   [`stakplane::http::serve`] (a connection limit, a header-read
//!   timeout, failed connections logged through `tracing`). A task holds
//!   only an `Actor<Hub>` (which does not keep the Hub alive) and
//!   [`ask!`](stakplane::ask)s it for the numbers, so the state has one
//!   owner and the tasks never share it.
//!
//! ## When something fails
//!
//! * A **panic** in a session's code fails only that session, with
//!   [`Cause::Panic`]: its socket closes, the Hub gets the `Down`, counts
//!   a fault, tells the others that the client left, and goes on.
//! * A client that sends a line longer than [`MAX_LINE`] is disconnected
//!   the same way, by a failure value ([`SessionError::LineTooLong`]);
//!   the self-test does this on purpose.
//! * A client that **does not read** is disconnected too; see
//!   [`Session::send`] for why.
//! * If the **Hub** faults, the sessions die with it (their last owner is
//!   gone: [`Cause::Dropped`]), the chat port closes by the link, and
//!   `/stats` answers 503 (the `ask!` fails); the process keeps serving
//!   HTTP until it is stopped.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use stakplane::http::{HttpError, ServeConfig};
use stakplane::net::{
    AcceptEvent, Accepted, ConnConfig, NetError, TcpAcceptor, TcpConn, TcpEvent, TcpListener,
};
use stakplane::prelude::*;
use stakplane::rt::{Exit, Remote, Runtime, StopKind};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

/// The longest line a client may send, in bytes. It bounds what a session
/// keeps while waiting for a line's end.
pub const MAX_LINE: usize = 4096;

/// The most bytes a session keeps for a client that reads slowly, beyond
/// what the OS buffers. Chat lines are short: falling this far behind
/// means the client is not reading.
pub const WRITE_LIMIT: usize = 64 * 1024;

/// A message on its way to clients: shared, not copied, by the sessions
/// it is relayed to (they all live on this thread).
type Msg = Rc<[u8]>;

fn msg(text: String) -> Msg {
    Rc::from(text.into_bytes())
}

// ---------------------------------------------------------------------
// Line framing

/// Cuts a byte stream into lines, whatever the pieces it arrives in: a
/// TCP read may end in the middle of a line or hold several.
///
/// Lines end with `\n` (a `\r` before it is dropped, for `telnet`-style
/// clients); bytes that are not UTF-8 are replaced. At most [`MAX_LINE`]
/// bytes wait for their line's end, plus one read.
#[derive(Debug, Default)]
pub struct LineBuf {
    /// The start of a line whose end has not arrived (no `\n` in it).
    partial: Vec<u8>,
}

impl LineBuf {
    /// Adds `data` and returns the lines it completes, in order.
    ///
    /// # Errors
    /// [`SessionError::LineTooLong`] if a line is longer than
    /// [`MAX_LINE`] (lines completed in the same `data` are dropped too).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<String>, SessionError> {
        // `partial` holds no `\n`: search only the new bytes.
        let mut scan = self.partial.len();
        self.partial.extend_from_slice(data);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(i) = self.partial[scan..].iter().position(|&b| b == b'\n') {
            let end = scan + i;
            lines.push(Self::text(&self.partial[start..end])?);
            start = end + 1;
            scan = start;
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            return Err(SessionError::LineTooLong { limit: MAX_LINE });
        }
        Ok(lines)
    }

    /// At end-of-stream: the last line, if it had no `\n`.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        // `push` kept it within the bound.
        (!rest.is_empty()).then(|| String::from_utf8_lossy(&rest).into_owned())
    }

    fn text(line: &[u8]) -> Result<String, SessionError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            return Err(SessionError::LineTooLong { limit: MAX_LINE });
        }
        Ok(String::from_utf8_lossy(line).into_owned())
    }
}

// ---------------------------------------------------------------------
// One connection

/// Why a session ended with a fault. The Hub reads it back from the
/// [`Down`]'s [`Cause::Error`] (see [`session_error`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The client sent a line longer than `limit` bytes.
    LineTooLong {
        /// [`MAX_LINE`].
        limit: usize,
    },
    /// The client did not read: `limit` bytes were waiting for it.
    TooSlow {
        /// The connection's write bound ([`WRITE_LIMIT`]).
        limit: usize,
    },
    /// The connection failed (other than by a reset, which is a normal
    /// leave).
    Net(NetError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::LineTooLong { limit } => write!(f, "sent a line over {limit} bytes"),
            SessionError::TooSlow { limit } => {
                write!(f, "did not read ({limit} bytes were waiting)")
            }
            SessionError::Net(e) => write!(f, "connection failed: {e}"),
        }
    }
}

impl Error for SessionError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            SessionError::Net(e) => Some(e),
            _ => None,
        }
    }
}

/// The [`SessionError`] a session failed with, if that is how it died.
pub fn session_error(cause: &Cause) -> Option<&SessionError> {
    match cause {
        Cause::Error(e) => e.downcast_ref::<SessionError>(),
        _ => None,
    }
}

/// One client connection. It owns the socket, so the socket lives exactly
/// as long as the session.
pub struct Session {
    conn: TcpConn,
    lines: LineBuf,
    /// Where complete lines go: the Hub's `said`, tagged with this
    /// session's id. The session does not know the Hub's type.
    to_hub: Fwd<String>,
}

impl Session {
    fn init(cx: CX![], accepted: Accepted, to_hub: Fwd<String>) -> Option<Self> {
        let events = fwd_to!([cx], event() as (TcpEvent));
        let config = ConnConfig::new().write_limit(WRITE_LIMIT);
        match TcpConn::new(cx, accepted, config, events) {
            Ok(conn) => Some(Session {
                conn,
                lines: LineBuf::default(),
                to_hub,
            }),
            Err(e) => {
                fail!(cx, SessionError::Net(e));
                None
            }
        }
    }

    /// What the connection tells us (the order rules are in the
    /// `stakplane::net::push` docs).
    fn event(&mut self, cx: CX![], ev: TcpEvent) {
        match ev {
            TcpEvent::Data(bytes) => match self.lines.push(&bytes) {
                Ok(lines) => self.forward(lines),
                Err(e) => fail!(cx, e),
            },
            TcpEvent::ReadClosed => {
                // The client has finished sending (`nc`: Ctrl-D). Its last
                // line may lack a `\n`. Close our side too once what is
                // buffered is sent; `Closed` follows, and we stop then.
                let last = self.lines.finish();
                self.forward(last);
                match self.conn.shutdown_write() {
                    Ok(()) | Err(NetError::Closed) => {}
                    Err(e) => self.net_failed(cx, e),
                }
            }
            // The socket is already closed; the Hub learns why from the
            // cause.
            TcpEvent::Error(e) => self.net_failed(cx, e),
            TcpEvent::Closed => stop!(cx),
            // `Drained`: nothing waits for it (see `send`). `Connected`
            // comes only for `TcpConn::connect`.
            _ => {}
        }
    }

    fn forward(&self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            if !line.trim().is_empty() {
                self.to_hub.fwd(line);
            }
        }
    }

    /// Writes a message from the Hub.
    ///
    /// The policy for a client that does not read: **disconnect it**. When
    /// [`WRITE_LIMIT`] bytes wait for it (after the OS buffers are full),
    /// `write` refuses with [`NetError::Full`] and the session fails with
    /// [`SessionError::TooSlow`]. The alternatives are worse for a chat:
    /// slowing the senders down (pausing their reads) would let one idle
    /// client stall the whole room, and skipping messages for that client
    /// would silently show it a conversation with holes. A disconnect is
    /// visible, bounded, and the client can reconnect.
    fn send(&mut self, cx: CX![], m: Msg) {
        match self.conn.write(&m) {
            Ok(()) => {}
            Err(NetError::Full { capacity }) => {
                fail!(cx, SessionError::TooSlow { limit: capacity })
            }
            // We shut our side down after the client's end-of-stream:
            // the client is leaving and reads nothing more.
            Err(NetError::Closed) => {}
            Err(e) => self.net_failed(cx, e),
        }
    }

    /// The connection failed (it is closed already). A client that
    /// vanishes — a killed `nc`, a close with our lines unread — resets
    /// the connection: for a chat that is leaving, a normal stop. Any
    /// other OS error is a fault, with the error as the cause.
    fn net_failed(&mut self, cx: CX![], e: NetError) {
        if e.is_reset() {
            stop!(cx);
        } else {
            fail!(cx, SessionError::Net(e));
        }
    }
}

// ---------------------------------------------------------------------
// The shared state

/// One connected client, as the Hub sees it.
struct Member {
    /// The Hub owns the session: if the Hub dies, so do the sessions.
    dev: DeviceOwn<Session>,
    peer: SocketAddr,
    lines: u64,
}

/// The shared state: who is connected, and what they said.
#[derive(Default)]
pub struct Hub {
    members: BTreeMap<DeviceId, Member>,
    joined: u64,
    left: u64,
    faults: u64,
    too_slow: u64,
    lines: u64,
    relayed: u64,
}

impl Hub {
    fn init(_: CX![]) -> Option<Self> {
        Some(Hub::default())
    }

    /// A new connection: start its session, own it, monitor it.
    fn join(&mut self, cx: CX![], accepted: Accepted) {
        let peer = accepted.peer_addr();
        // `device_new!` and then `init`: the session's lines are tagged
        // with its id, which exists only once the device does.
        let dev = device_new!(cx, Session);
        let id = dev.id();
        call!(
            [dev],
            Session::init(accepted, fwd_to!([cx], said(id) as (String)))
        );
        // Exactly one Down when the session dies, whatever the cause.
        dev.monitor_fwd(fwd_to!([cx], gone() as (Down)))
            .expect("a device just created is alive");

        let others = self.members.len();
        self.broadcast(None, msg(format!("* {id} joined\n")));
        // Queued after the session's init: it is the first thing the
        // client reads.
        let welcome = format!("* welcome, you are {id} ({others} others here)\n");
        call!([dev], send(msg(welcome)));
        self.members.insert(
            id,
            Member {
                dev,
                peer,
                lines: 0,
            },
        );
        self.joined += 1;
        println!("chat: {id} joined from {peer}");
    }

    /// A line from session `from`: count it and relay it to the others.
    fn said(&mut self, _: CX![], from: DeviceId, text: String) {
        // Lines are queued before their session's Down, so the member is
        // here; `let else` only guards the invariant.
        let Some(member) = self.members.get_mut(&from) else {
            return;
        };
        member.lines += 1;
        self.lines += 1;
        self.relayed += self.broadcast(Some(from), msg(format!("{from}: {text}\n")));
    }

    /// A session died: forget it and tell the others.
    fn gone(&mut self, _: CX![], down: Down) {
        let Some(member) = self.members.remove(&down.id) else {
            return;
        };
        self.left += 1;
        if down.cause.is_fault() {
            self.faults += 1;
        }
        if let Some(SessionError::TooSlow { .. }) = session_error(&down.cause) {
            self.too_slow += 1;
        }
        println!("chat: {} ({}) left: {}", down.id, member.peer, down.cause);
        self.broadcast(None, msg(format!("* {} left: {}\n", down.id, down.cause)));
    }

    /// Sends `m` to every member but `except`; returns how many.
    fn broadcast(&self, except: Option<DeviceId>, m: Msg) -> u64 {
        let mut n = 0;
        for (&id, member) in &self.members {
            if Some(id) != except {
                call!([member.dev], send(m.clone()));
                n += 1;
            }
        }
        n
    }

    /// The runtime's status, for `GET /status` (feature `serde`): taken
    /// from inside the runtime, through any actor's context.
    #[cfg(feature = "serde")]
    fn status(&mut self, cx: CX![], ret: Ret<Option<stakplane::rt::RuntimeStatus>>) {
        ret.ret(stakplane::rt::status(cx));
    }

    /// Exports the runtime's figures to the metrics recorder now, for
    /// `GET /metrics` (feature `metrics`).
    #[cfg(feature = "metrics")]
    fn export_metrics(&mut self, cx: CX![], ret: Ret<()>) {
        stakplane::rt::export_metrics(cx);
        ret.ret(());
    }

    /// The numbers, for `GET /stats` (async code `ask!`s for them).
    fn stats(&mut self, _: CX![], ret: Ret<Stats>) {
        ret.ret(Stats {
            connected: self.members.len(),
            joined: self.joined,
            left: self.left,
            faults: self.faults,
            too_slow: self.too_slow,
            lines: self.lines,
            relayed: self.relayed,
            clients: self
                .members
                .iter()
                .map(|(id, m)| ClientStats {
                    id: id.get(),
                    peer: m.peer,
                    lines: m.lines,
                })
                .collect(),
        });
    }
}

/// The Hub's numbers. `Display` is the `/stats` body (one `name value`
/// per line); [`Stats::parse`] reads it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Clients connected now.
    pub connected: usize,
    /// Clients that ever joined.
    pub joined: u64,
    /// Clients that left, for any reason.
    pub left: u64,
    /// Clients whose session ended with a fault (a panic, an error).
    pub faults: u64,
    /// Of those, clients disconnected because they did not read.
    pub too_slow: u64,
    /// Chat lines received.
    pub lines: u64,
    /// Chat lines handed to other clients' sessions.
    pub relayed: u64,
    /// Each connected client, by id.
    pub clients: Vec<ClientStats>,
}

/// One connected client in [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStats {
    /// Its session's device id.
    pub id: u64,
    /// Its address.
    pub peer: SocketAddr,
    /// The lines it sent.
    pub lines: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "connected {}", self.connected)?;
        writeln!(f, "joined {}", self.joined)?;
        writeln!(f, "left {}", self.left)?;
        writeln!(f, "faults {}", self.faults)?;
        writeln!(f, "too_slow {}", self.too_slow)?;
        writeln!(f, "lines {}", self.lines)?;
        writeln!(f, "relayed {}", self.relayed)?;
        for c in &self.clients {
            writeln!(f, "client #{} {} lines {}", c.id, c.peer, c.lines)?;
        }
        Ok(())
    }
}

impl Stats {
    /// Reads the `Display` form back (what an HTTP client gets).
    ///
    /// # Errors
    /// A description of the first line that does not fit.
    pub fn parse(text: &str) -> Result<Stats, String> {
        let mut s = Stats::default();
        for line in text.lines() {
            let bad = || format!("bad stats line {line:?}");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["client", id, peer, "lines", n] => s.clients.push(ClientStats {
                    id: id
                        .strip_prefix('#')
                        .ok_or_else(bad)?
                        .parse()
                        .map_err(|_| bad())?,
                    peer: peer.parse().map_err(|_| bad())?,
                    lines: n.parse().map_err(|_| bad())?,
                }),
                ["connected", n] => s.connected = n.parse().map_err(|_| bad())?,
                [name, n] => {
                    let n = n.parse().map_err(|_| bad())?;
                    match name {
                        "joined" => s.joined = n,
                        "left" => s.left = n,
                        "faults" => s.faults = n,
                        "too_slow" => s.too_slow = n,
                        "lines" => s.lines = n,
                        "relayed" => s.relayed = n,
                        _ => return Err(bad()),
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------
// The chat port

/// Owns the chat port's listening socket; hands each connection to the
/// Hub, which starts its session.
struct ChatPort {
    _acceptor: TcpAcceptor,
    hub: Actor<Hub>,
}

impl ChatPort {
    fn init(_: CX![], acceptor: TcpAcceptor, hub: Actor<Hub>) -> Option<Self> {
        Some(ChatPort {
            _acceptor: acceptor,
            hub,
        })
    }

    fn accept(&mut self, cx: CX![], ev: AcceptEvent) {
        match ev {
            AcceptEvent::Accepted(a) => call!([self.hub], join(a)),
            // Out of descriptors and kin: the acceptor backs off by itself.
            AcceptEvent::Error(e) => eprintln!("chat: accept: {e}"),
            // The runtime's shutdown closed the port.
            AcceptEvent::Closed => stop!(cx),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------
// The HTTP endpoint

/// Binds the HTTP port and starts serving it. Returns the address. The
/// server runs until the runtime stops (which closes its listener and
/// drops its connections).
fn serve_http(
    rt: &mut Runtime,
    addr: SocketAddr,
    hub: Actor<Hub>,
) -> Result<SocketAddr, HttpError> {
    let listener = TcpListener::bind(&rt.io(), addr)?;
    let service = service_fn(move |req| respond(hub.clone(), req));
    let server = stakplane::http::serve(rt.core(), listener, ServeConfig::new(), service)?;
    Ok(server.local_addr())
}

/// The Prometheus recorder, installed once per process (feature
/// `metrics`): the `metrics-exporter-prometheus` recorder without its own
/// HTTP listener; this server renders it at `GET /metrics`.
#[cfg(feature = "metrics")]
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (an embedding program's) wins;
        // /metrics then shows what this one saw: nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `GET /stats`: the Hub's numbers, or 503 if the Hub is gone. With
/// feature `serde`, `GET /status`: the runtime's status as JSON; with
/// feature `metrics`, `GET /metrics`: its figures in Prometheus text.
async fn respond(
    hub: Actor<Hub>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, text) = match (req.method(), req.uri().path()) {
        #[cfg(feature = "serde")]
        (&Method::GET, "/status") => match stakplane::ask!([hub], status()).await {
            Ok(Some(st)) => match serde_json::to_string_pretty(&st) {
                Ok(json) => (StatusCode::OK, json + "\n"),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            },
            Ok(None) => (StatusCode::SERVICE_UNAVAILABLE, "no runtime\n".to_string()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        #[cfg(feature = "metrics")]
        (&Method::GET, "/metrics") => match stakplane::ask!([hub], export_metrics()).await {
            Ok(()) => (StatusCode::OK, prometheus().render()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        (&Method::GET, "/stats") => match stakplane::ask!([hub], stats()).await {
            Ok(stats) => (StatusCode::OK, stats.to_string()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        (_, "/stats") => (StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "try GET /stats\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

// ---------------------------------------------------------------------
// Starting

/// A started service.
#[derive(Debug)]
pub struct Service {
    /// Where it listens.
    pub ports: Ports,
    /// The Hub, to watch it or end it (the runtime owns it).
    pub hub: Line,
}

/// Where the service listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The chat port.
    pub chat: SocketAddr,
    /// The HTTP port.
    pub http: SocketAddr,
}

/// Which port could not be opened.
#[derive(Debug)]
pub enum StartError {
    /// Binding the chat port failed.
    Chat(NetError),
    /// Binding or serving the HTTP port failed.
    Http(HttpError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Chat(e) => write!(f, "chat port: {e}"),
            StartError::Http(e) => write!(f, "HTTP port: {e}"),
        }
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StartError::Chat(e) => Some(e),
            StartError::Http(e) => Some(e),
        }
    }
}

/// Starts the service on `rt`: the Hub, the chat port and the HTTP
/// endpoint (port 0 picks a free port). The runtime keeps the devices
/// until it stops; its shutdown asks them to stop, newest first (the
/// chat port, then the Hub, whose sessions die with it).
///
/// # Errors
/// A port could not be bound; nothing is left running then.
pub fn start(rt: &mut Runtime, chat: SocketAddr, http: SocketAddr) -> Result<Service, StartError> {
    #[cfg(feature = "metrics")]
    let _ = prometheus();
    let hub = device!(rt.core(), Hub::init());
    // The port's acceptor is made before the port's init, so a bind error
    // is returned here instead of failing the device later.
    let port = device_new!(rt.core(), ChatPort);
    let events = fwd_to!([port], accept() as (AcceptEvent));
    let acceptor = TcpAcceptor::bind(rt.core(), chat, events).map_err(StartError::Chat)?;
    let chat = acceptor.local_addr().map_err(StartError::Chat)?;
    let http = serve_http(rt, http, hub.actor().clone()).map_err(StartError::Http)?;
    call!([port], ChatPort::init(acceptor, hub.actor().clone()));
    // The port watches the Hub: a Hub fault fails the port (a cascade).
    port.link(&hub, LinkMode::Monitor)
        .expect("both devices are alive");
    let line = hub.line();
    rt.keep(hub);
    rt.keep(port);
    Ok(Service {
        ports: Ports { chat, http },
        hub: line,
    })
}

// ---------------------------------------------------------------------
// The self-test

/// Lines each well-behaved chat client sends.
const LINES_EACH: usize = 4;
/// Every client read and write gives up after this: a bug fails the
/// self-test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the self-test saw.
#[derive(Debug)]
pub struct Summary {
    /// Chat lines the three chat clients sent.
    pub lines_sent: usize,
    /// Chat lines they received from each other (each line reaches the two
    /// others).
    pub lines_received: usize,
    /// What `GET /stats` answered at the end.
    pub stats: Stats,
    /// How the runtime ended.
    pub exit: Exit,
    /// Sockets still registered after the runtime ended (0: the shutdown
    /// closed them all).
    pub sockets_left: usize,
}

/// Stops the runtime when the client script ends, even by a panic.
struct StopOnDrop(Remote);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// Serves on free loopback ports, runs the client script on another
/// thread against them, stops, and checks everything. The runtime runs on
/// the calling thread.
///
/// # Errors
/// What went wrong or did not match.
pub fn selftest() -> Result<Summary, String> {
    let mut rt = Runtime::builder()
        .handle_signals(true)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let ports = start(&mut rt, any, any).map_err(|e| e.to_string())?.ports;
    println!("selftest: chat on {}, HTTP on {}", ports.chat, ports.http);
    let stop = StopOnDrop(rt.remote());
    let script = thread::spawn(move || {
        let _stop = stop;
        run_clients(ports)
    });
    let exit = rt
        .run(|_| {})
        .map_err(|e| format!("the loop failed: {e}"))?;
    let (lines_sent, lines_received, stats) = script
        .join()
        .map_err(|_| "the client script panicked".to_string())??;
    let summary = Summary {
        lines_sent,
        lines_received,
        stats,
        exit,
        sockets_left: rt.sockets(),
    };
    if summary.lines_received != 2 * summary.lines_sent {
        return Err(format!(
            "{} lines sent, {} received (each should reach two clients)",
            summary.lines_sent, summary.lines_received
        ));
    }
    if summary.exit != Exit::Stopped(Some(StopKind::Stopped)) {
        return Err(format!("the runtime ended with {:?}", summary.exit));
    }
    if summary.sockets_left != 0 {
        return Err(format!("{} sockets left open", summary.sockets_left));
    }
    Ok(summary)
}

/// A chat client: a blocking std socket with timeouts.
struct Client {
    name: &'static str,
    /// Its session's id, from the welcome line.
    id: u64,
    conn: BufReader<std::net::TcpStream>,
}

impl Client {
    /// Connects and reads the welcome line (so the Hub has the client).
    fn join(addr: SocketAddr, name: &'static str) -> Result<Client, String> {
        let err = |what: &str, e: io::Error| format!("{name}: {what}: {e}");
        let s = std::net::TcpStream::connect(addr).map_err(|e| err("connect", e))?;
        s.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| err("timeout", e))?;
        s.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| err("timeout", e))?;
        s.set_nodelay(true).map_err(|e| err("nodelay", e))?;
        let mut c = Client {
            name,
            id: 0,
            conn: BufReader::new(s),
        };
        let welcome = c.read_line()?;
        c.id = welcome
            .strip_prefix("* welcome, you are #")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("{name}: bad welcome {welcome:?}"))?;
        Ok(c)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.conn
            .get_mut()
            .write_all(bytes)
            .map_err(|e| format!("{}: write: {e}", self.name))
    }

    /// The next line, without its `\n`.
    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.conn.read_line(&mut line) {
            Ok(0) => Err(format!("{}: the server closed the connection", self.name)),
            Ok(_) => Ok(line.trim_end_matches('\n').to_string()),
            Err(e) => Err(format!("{}: read: {e}", self.name)),
        }
    }

    /// Reads until `n` chat lines came, skipping the server's `* `
    /// notices (joins, leaves). Returns (sender id, text) pairs.
    fn read_chat(&mut self, n: usize) -> Result<Vec<(u64, String)>, String> {
        let mut got = Vec::new();
        while got.len() < n {
            let line = self.read_line()?;
            if line.starts_with("* ") {
                continue;
            }
            let parsed = line.strip_prefix('#').and_then(|rest| {
                let (id, text) = rest.split_once(": ")?;
                Some((id.parse().ok()?, text.to_string()))
            });
            got.push(parsed.ok_or_else(|| format!("{}: bad line {line:?}", self.name))?);
        }
        Ok(got)
    }

    /// Closes its sending side and reads to end-of-stream: when it
    /// returns, the server has closed the connection.
    fn leave(mut self) -> Result<(), String> {
        let name = self.name;
        self.conn
            .get_ref()
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("{name}: shutdown: {e}"))?;
        let mut rest = Vec::new();
        match self.conn.read_to_end(&mut rest) {
            Ok(_) => Ok(()),
            // The server closed with bytes of ours unread (the over-long
            // line): the OS resets instead of a clean end.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(format!("{name}: read to the end: {e}")),
        }
    }

    fn peer(&self) -> Result<SocketAddr, String> {
        // The client's local address is the server's peer address.
        self.conn
            .get_ref()
            .local_addr()
            .map_err(|e| format!("{}: local_addr: {e}", self.name))
    }
}

/// The text of line `m` of client `name`.
fn line_text(name: &str, m: usize) -> String {
    format!("{name} line {m}")
}

/// Sends this client's lines and checks it gets all the others', each
/// sender's in order. Returns the client (still connected) and how many
/// lines it received.
fn exchange(mut c: Client, others: Vec<(&'static str, u64)>) -> Result<(Client, usize), String> {
    // All lines in one stream (one with `\r\n`), written 7 bytes at a
    // time with Nagle off: lines are cut across writes, and some writes
    // hold the end of one line and the start of the next. The server's
    // framing must not care.
    let mut stream = String::new();
    for m in 0..LINES_EACH {
        let end = if m == 1 { "\r\n" } else { "\n" };
        stream.push_str(&line_text(c.name, m));
        stream.push_str(end);
    }
    for piece in stream.as_bytes().chunks(7) {
        c.write(piece)?;
    }
    let got = c.read_chat(others.len() * LINES_EACH)?;
    for (name, id) in &others {
        let from: Vec<&str> = got
            .iter()
            .filter(|(from, _)| from == id)
            .map(|(_, text)| text.as_str())
            .collect();
        let want: Vec<String> = (0..LINES_EACH).map(|m| line_text(name, m)).collect();
        if from != want {
            return Err(format!(
                "{} got {from:?} from {name} (#{id}), wanted {want:?}",
                c.name
            ));
        }
    }
    Ok((c, got.len()))
}

/// The client script: three clients chat, one leaves, one misbehaves,
/// then `/stats` must show exactly that. Returns (lines sent, lines
/// received, stats).
fn run_clients(ports: Ports) -> Result<(usize, usize, Stats), String> {
    // Join one after the other: once a client has its welcome, the Hub has
    // it, so it gets every line sent after that.
    let names = ["ann", "bob", "cy"];
    let clients = names
        .iter()
        .map(|name| Client::join(ports.chat, name))
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<(&'static str, u64)> = clients.iter().map(|c| (c.name, c.id)).collect();

    // All three talk at once, each on its own thread.
    let talkers: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let others = ids.iter().filter(|(_, id)| *id != c.id).copied().collect();
            thread::spawn(move || exchange(c, others))
        })
        .collect();
    let mut clients = Vec::new();
    let mut received = 0;
    for t in talkers {
        let (c, n) = t
            .join()
            .map_err(|_| "a chat client panicked".to_string())??;
        clients.push(c);
        received += n;
    }

    // cy leaves politely: half-close, then read to the end. The server's
    // session shuts its side at our end-of-stream and stops once the
    // connection is closed; its Down reaches the Hub in the same run of
    // the queue, before the loop polls again, so before the HTTP request
    // below is even read.
    let cy = clients.pop().ok_or("no clients")?;
    cy.leave()?;

    // dee sends a line longer than MAX_LINE: its session fails with
    // `LineTooLong` and the socket closes; the Hub counts a fault. The
    // same ordering argument holds.
    let mut dee = Client::join(ports.chat, "dee")?;
    dee.write(&vec![b'x'; MAX_LINE + 1000])?;
    dee.leave()?;

    let stats = get_stats(ports.http)?;
    // The operator's endpoints, with the features that make them.
    #[cfg(feature = "serde")]
    {
        let status = get(ports.http, "/status")?;
        let json: serde_json::Value =
            serde_json::from_str(&status).map_err(|e| format!("/status: {e}: {status}"))?;
        if json["devices_live"].as_u64().unwrap_or(0) == 0 || json["tasks_live"].is_null() {
            return Err(format!("/status: {status}"));
        }
    }
    #[cfg(feature = "metrics")]
    {
        let metrics = get(ports.http, "/metrics")?;
        if !metrics.contains("stakplane_devices_live")
            || !metrics.contains("stakplane_loop_turn_seconds")
        {
            return Err(format!("/metrics: {metrics}"));
        }
    }
    let n = LINES_EACH as u64;
    let mut expected = Stats {
        connected: 2,
        joined: 4,
        left: 2,
        faults: 1,
        too_slow: 0,
        lines: 3 * n,
        relayed: 3 * n * 2,
        clients: Vec::new(),
    };
    for c in &clients {
        expected.clients.push(ClientStats {
            id: c.id,
            peer: c.peer()?,
            lines: n,
        });
    }
    expected.clients.sort_by_key(|c| c.id);
    if stats != expected {
        return Err(format!(
            "/stats said\n{stats}but the clients expected\n{expected}"
        ));
    }
    // ann and bob leave too; the runtime is stopped when the script
    // returns.
    for c in clients {
        c.leave()?;
    }
    Ok((3 * LINES_EACH, received, stats))
}

/// `GET /stats` with a minimal HTTP/1.1 client; the body, parsed.
fn get_stats(addr: SocketAddr) -> Result<Stats, String> {
    Stats::parse(&get(addr, "/stats")?)
}

/// `GET path` with a minimal HTTP/1.1 client; the body of a 200.
fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let err = |what: &str, e: io::Error| format!("http: {what}: {e}");
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| err("connect", e))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| err("timeout", e))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| err("timeout", e))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| err("write", e))?;
    // `Connection: close`: hyper closes after the response.
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| err("read", e))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("http: no header end in {resp:?}"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!("http: GET {path}: {head:?}"));
    }
    Ok(body.to_string())
}

// ---------------------------------------------------------------------
// main

/// A port from the environment variable `var`, or `default`.
#[allow(dead_code)] // tests/service.rs includes this file as a module
fn port_from_env(var: &str, default: u16) -> Result<u16, String> {
    match std::env::var(var) {
        Ok(p) => p.parse().map_err(|e| format!("{var}={p:?}: {e}")),
        Err(_) => Ok(default),
    }
}

/// Serves on 127.0.0.1 until SIGINT or SIGTERM.
#[allow(dead_code)] // tests/service.rs includes this file as a module
fn serve() -> Result<(), Box<dyn Error>> {
    let chat = port_from_env("CHAT_PORT", 7070)?;
    let http = port_from_env("HTTP_PORT", 8080)?;
    let mut rt = Runtime::builder().handle_signals(true).build()?;
    let ports = start(
        &mut rt,
        SocketAddr::from(([127, 0, 0, 1], chat)),
        SocketAddr::from(([127, 0, 0, 1], http)),
    )?
    .ports;
    println!(
        "service: chat on {}, HTTP on http://{}/stats",
        ports.chat, ports.http
    );
    println!(
        "  chat:  nc {} {}     (in two terminals; type lines)",
        ports.chat.ip(),
        ports.chat.port()
    );
    println!("  stats: curl http://{}/stats", ports.http);
    println!("  Ctrl-C stops the server.");
    let exit = rt.run(|_| {})?;
    println!("service: stopped ({exit:?})");
    Ok(())
}

#[allow(dead_code)] // tests/service.rs includes this file as a module
fn main() {
    if !std::env::args().skip(1).any(|a| a == "--selftest") {
        if let Err(e) = serve() {
            eprintln!("service: {e}");
            std::process::exit(1);
        }
        return;
    }
    match selftest() {
        Ok(s) => {
            println!(
                "selftest: 3 clients sent {} lines and received {} from each other; \
                 a client with an over-long line was disconnected (a fault, contained)",
                s.lines_sent, s.lines_received
            );
            print!("selftest: /stats said\n{}", s.stats);
            println!("selftest: runtime ended with {:?}; passed", s.exit);
        }
        Err(e) => {
            eprintln!("selftest failed: {e}");
            std::process::exit(1);
        }
    }
}
