//! Loopback fixtures of the TCP transport's tests: transports on a
//! virtual-time runtime, raw clients, a count of the warnings logged.
//! Included with `#[path = "common/tcp.rs"] mod tcp;`.
#![allow(dead_code)]

use stakplane::cluster::tcp::{ConnFailure, TcpTransport};
use stakplane::cluster::{
    Credentials, Frame, Full, NodeId, Packet, Secret, Session, Transport, MAX_FRAME,
};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A runtime on the virtual clock: the loop polls the OS without waiting
/// and time jumps when nothing is ready.
pub fn virtual_rt() -> Runtime {
    Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .expect("runtime")
}

/// What a transport delivered, decoded, with the peer it said each came
/// from.
pub type Got = Rc<RefCell<Vec<(SocketAddr, Frame)>>>;
/// What a transport told its `on_error`.
pub type Errors = Rc<RefCell<Vec<ConnFailure>>>;

/// A transport started as a node, with what it delivers and reports.
pub struct Side {
    pub t: TcpTransport,
    pub id: NodeId,
    pub got: Got,
    pub errors: Errors,
}

impl Side {
    /// Sends test frame `n` to `to` as data (`control`: as control).
    pub fn send(&self, to: &Side, n: u32, control: bool) -> Result<(), Full> {
        self.send_to(to.id.addr, n, control)
    }

    /// Sends test frame `n` to the address `to`.
    pub fn send_to(&self, to: SocketAddr, n: u32, control: bool) -> Result<(), Full> {
        self.t.send(self.id.addr, to, frame(n), control)
    }

    /// The numbers of the test frames received, in order.
    pub fn numbers(&self) -> Vec<u32> {
        numbers(&self.got)
    }

    /// The peers the transport said the frames received came from, in
    /// order.
    pub fn senders(&self) -> Vec<SocketAddr> {
        self.got.borrow().iter().map(|(from, _)| *from).collect()
    }

    /// The errors reported so far, as their `Debug`, taken.
    pub fn take_errors(&self) -> Vec<String> {
        self.errors
            .borrow_mut()
            .drain(..)
            .map(|f| format!("{:?}", f.error))
            .collect()
    }
}

/// A transport on a free loopback port (or `addr`), started as node
/// `claim` (by default: incarnation 1 of the address it listens on).
pub fn side_as(
    rt: &mut Runtime,
    secret: &Secret,
    addr: Option<SocketAddr>,
    claim: Option<NodeId>,
) -> Side {
    side_with(rt, Credentials::from(secret), addr, claim)
}

/// [`side_as`] with `credentials` (per-node keys).
pub fn side_with(
    rt: &mut Runtime,
    credentials: Credentials,
    addr: Option<SocketAddr>,
    claim: Option<NodeId>,
) -> Side {
    let at = addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr"));
    let (t, addr) = TcpTransport::bind(rt.core(), at, credentials).expect("binds");
    let id = claim.unwrap_or_else(|| NodeId::new(addr, 1));
    let got: Got = Rc::default();
    let g2 = got.clone();
    t.start(
        id,
        Fwd::new(move |p: Packet| {
            let frame = Frame::decode(&p.data, MAX_FRAME).expect("a whole frame");
            g2.borrow_mut().push((p.from, frame))
        }),
    );
    let errors: Errors = Rc::default();
    let e2 = errors.clone();
    t.on_error(Fwd::new(move |f| e2.borrow_mut().push(f)));
    Side { t, id, got, errors }
}

/// A transport on a free loopback port (or `addr`), node incarnation 1.
pub fn side(rt: &mut Runtime, secret: &Secret, addr: Option<SocketAddr>) -> Side {
    side_as(rt, secret, addr, None)
}

/// Makes `handle` `side`'s link-up handler, run from stakker's queue as
/// a node's `link_up` is (its `fwd_to!` defers the call): after the
/// transport's handler that saw the link come up has returned, never
/// inside it.
pub fn on_link_up_queued(rt: &mut Runtime, side: &Side, handle: impl Fn(SocketAddr) + 'static) {
    let deferrer = rt.core().deferrer();
    let handle = Rc::new(handle);
    side.t.on_link_up(
        side.id.addr,
        Fwd::new(move |addr| {
            let handle = handle.clone();
            deferrer.defer(move |_| handle(addr));
        }),
    );
}

/// Test frame `n`, encoded: a `Gossip` frame carrying `n`.
pub fn frame(n: u32) -> Vec<u8> {
    sized_frame(n, 0)
}

/// Test frame `n` padded with `pad` bytes.
pub fn sized_frame(n: u32, pad: usize) -> Vec<u8> {
    let mut body = n.to_be_bytes().to_vec();
    body.resize(4 + pad, 0xEE);
    let mut out = Vec::new();
    Frame::Gossip(body)
        .encode_into(&mut out, MAX_FRAME)
        .expect("encodes");
    out
}

/// The numbers of the test frames in `got`.
pub fn numbers(got: &Got) -> Vec<u32> {
    got.borrow()
        .iter()
        .map(|(_, f)| match f {
            Frame::Gossip(v) => u32::from_be_bytes(v[..4].try_into().expect("a number")),
            other => panic!("not a test frame: {other:?}"),
        })
        .collect()
}

/// Runs `rt` in 10 ms steps of virtual time until `done`, at most
/// `limit` of virtual time; true if `done`.
pub fn run_until(rt: &mut Runtime, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let mut ran = Duration::ZERO;
    while !done() {
        if ran >= limit {
            return false;
        }
        rt.run_for(Duration::from_millis(10)).expect("runs");
        ran += Duration::from_millis(10);
    }
    true
}

/// A raw client socket, without Nagle's delay (on the virtual clock a
/// write held for the peer's delayed ACK would never go out in time).
pub fn raw_client(to: SocketAddr) -> TcpStream {
    let client = TcpStream::connect(to).expect("connects");
    client.set_nodelay(true).expect("nodelay");
    client
}

/// Writes `bytes` from `client`, then runs `rt` a little.
pub fn feed(rt: &mut Runtime, client: &mut TcpStream, bytes: &[u8]) {
    client.write_all(bytes).expect("writes");
    rt.run_for(Duration::from_millis(50)).expect("runs");
}

/// True once the server closed `client`'s connection (it reads the end,
/// or a reset), within a few seconds of real time.
pub fn closed_by_server(rt: &mut Runtime, client: &mut TcpStream) -> bool {
    client.set_nonblocking(true).expect("non-blocking");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0; 4096];
    while Instant::now() < deadline {
        match client.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                rt.run_for(Duration::from_millis(5)).expect("runs");
            }
            Err(_) => return true,
        }
    }
    false
}

/// A raw client that completes the handshake with `session`, the side
/// that connects; returns the socket (non-blocking) and the session.
pub fn handshake(rt: &mut Runtime, to: SocketAddr, session: Session) -> (TcpStream, Session) {
    handshake_then(rt, to, session, |_| {})
}

/// [`handshake`], with `behind` given the established session before its
/// last handshake message is written: what it queues goes out in the
/// same write, right behind that message.
pub fn handshake_then(
    rt: &mut Runtime,
    to: SocketAddr,
    mut session: Session,
    behind: impl FnOnce(&mut Session),
) -> (TcpStream, Session) {
    let mut client = raw_client(to);
    client.set_nonblocking(true).expect("non-blocking");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !session.is_established() {
        assert!(Instant::now() < deadline, "handshake never finished");
        let out = session.take_output();
        if !out.is_empty() {
            client.write_all(&out).expect("writes");
        }
        rt.run_for(Duration::from_millis(5)).expect("runs");
        let mut buf = [0; 4096];
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if session.receive(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    if session.is_established() {
        behind(&mut session);
    }
    let out = session.take_output();
    if !out.is_empty() {
        client.write_all(&out).expect("writes");
    }
    (client, session)
}

/// Counts the `warn` events of target `stakplane::cluster` logged on
/// this thread while its guard lives.
#[derive(Clone, Default)]
pub struct Warnings(Arc<AtomicUsize>);

impl Warnings {
    /// Starts counting on this thread; counting stops with the guard.
    pub fn count() -> (Warnings, tracing::subscriber::DefaultGuard) {
        let w = Warnings::default();
        let guard = tracing::subscriber::set_default(w.clone());
        (w, guard)
    }

    /// Warnings so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() == tracing::Level::WARN && m.target() == "stakplane::cluster"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        if self.enabled(e.metadata()) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
