//! Push-style sockets (`stakplane::net::push`): a real runtime on
//! loopback, clients on plain std threads.
//!
//! Every client socket has 10 s read and write timeouts and every wait on
//! a channel is bounded the same way, so a bug fails a test instead of
//! hanging it. Nothing sleeps: the client thread waits for what the
//! server reports through a channel (each server-side event is logged on
//! the runtime thread and copied to the client), then stops the runtime.

use stakplane::net::{
    AcceptEvent, Accepted, ConnConfig, NetError, Op, TcpAcceptor, TcpConn, TcpEvent, UdpConfig,
    UdpEvent, UdpPort,
};
use stakplane::prelude::*;
use stakplane::rt::{Exit, Remote, Runtime, StopKind};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The log id of the listener's own events.
const LISTENER: usize = usize::MAX;
/// The log id of the UDP port's events.
const UDP: usize = usize::MAX - 1;

// ---------------------------------------------------------------------
// What the server saw

/// An error, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq)]
struct ErrInfo {
    closed: bool,
    full: bool,
    op: Option<Op>,
    kind: Option<io::ErrorKind>,
    reset: bool,
}

fn info(e: &NetError) -> ErrInfo {
    ErrInfo {
        closed: matches!(e, NetError::Closed),
        full: matches!(e, NetError::Full { .. }),
        op: match e {
            NetError::Io { op, .. } => Some(*op),
            _ => None,
        },
        kind: e.kind(),
        reset: e.is_reset(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Accepted,
    AcceptError(ErrInfo),
    AcceptClosed,
    Connected,
    Data(Vec<u8>),
    ReadClosed,
    /// A write left bytes buffered with none buffered before: a buffered
    /// episode began, and one `Drained` is owed for it (rule 72).
    Buffered,
    Drained,
    Error(ErrInfo),
    Closed,
    /// A method returned this error.
    Refused(&'static str, ErrInfo),
    /// `write` returned `Full` with this much buffered before and after.
    Full {
        before: usize,
        after: usize,
    },
    /// The filler is done: this many bytes in total.
    Done(u64),
    /// The echo paused reading: its write was refused with `Full`.
    Paused,
    Datagram(SocketAddr, Vec<u8>),
    UdpClosed,
}

type Log = Rc<RefCell<Vec<(usize, Seen)>>>;
type Note = (usize, Seen);

/// Logs on the runtime thread and copies every entry to the client.
#[derive(Clone)]
struct Out {
    log: Log,
    notes: mpsc::Sender<Note>,
}

impl Out {
    fn seen(&self, id: usize, s: Seen) {
        self.log.borrow_mut().push((id, s.clone()));
        let _ = self.notes.send((id, s));
    }

    /// A device's start refused by `what` with `e`: logged under `id`,
    /// and the device fails with `e` (its `init` returns the `None`).
    fn refused<A: 'static>(
        &self,
        cx: &mut Cx<'_, A>,
        id: usize,
        what: &'static str,
        e: NetError,
    ) -> Option<A> {
        self.seen(id, Seen::Refused(what, info(&e)));
        fail!(cx, e);
        None
    }
}

fn of(log: &Log, id: usize) -> Vec<Seen> {
    log.borrow()
        .iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, s)| s.clone())
        .collect()
}

/// Waits (bounded) for a note that `pred` accepts, among those received
/// so far (`history`) or still to come; returns it.
fn wait_for(
    notes: &mpsc::Receiver<Note>,
    history: &RefCell<Vec<Note>>,
    what: &str,
    pred: impl Fn(&Note) -> bool,
) -> Note {
    if let Some(n) = history.borrow().iter().find(|n| pred(n)) {
        return n.clone();
    }
    loop {
        match notes.recv_timeout(TIMEOUT) {
            Ok(n) => {
                history.borrow_mut().push(n.clone());
                if pred(&n) {
                    return n;
                }
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------
// Server devices

/// What a server connection does.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Echoes; at end-of-stream writes `tail`, then shuts down writing.
    Echo { tail: &'static [u8] },
    /// Writes "hello" at once, then only logs; shuts down writing at
    /// end-of-stream.
    Greet,
    /// At end-of-stream writes 16 KiB chunks until a write fails, going
    /// on after each `Drained`.
    Flood,
    /// Writes a byte pattern until `Full`, then `extra` more bytes as the
    /// buffer drains, then shuts down writing.
    Fill { extra: u64 },
    /// Writes the pattern until a write leaves bytes buffered (before any
    /// `Full`), then shuts down writing.
    Spill,
    /// Stops (dies) at the first data.
    DieOnData,
    /// At end-of-stream: shuts down writing, then writes (refused); after
    /// `Closed`, writes and shuts down again (refused).
    LateWrite,
}

const CHUNK: usize = 16 * 1024;

fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

struct Server {
    conn: TcpConn,
    id: usize,
    mode: Mode,
    out: Out,
    /// Bytes written (Fill, Flood).
    sent: u64,
    /// Fill: stop at this total, once known.
    target: Option<u64>,
    /// Echo: data refused with Full, and data read after it, in order;
    /// written from the next Drained on.
    pending: VecDeque<Vec<u8>>,
    stopped_writing: bool,
}

impl Server {
    fn init(cx: CX![], accepted: Accepted, id: usize, serving: Serving) -> Option<Self> {
        let Serving { mode, config, out } = serving;
        let events = fwd_to!([cx], event() as (TcpEvent));
        let conn = match TcpConn::new(cx, accepted, config, events) {
            Ok(c) => c,
            Err(e) => return out.refused(cx, id, "new", e),
        };
        let mut this = Server {
            conn,
            id,
            mode,
            out,
            sent: 0,
            target: None,
            pending: VecDeque::new(),
            stopped_writing: false,
        };
        match mode {
            Mode::Greet => this.write(b"hello"),
            Mode::Fill { .. } | Mode::Spill => this.fill(),
            _ => {}
        }
        Some(this)
    }

    fn write(&mut self, data: &[u8]) {
        if let Err(e) = self.put(data) {
            self.out.seen(self.id, Seen::Refused("write", info(&e)));
        }
    }

    /// `conn.write`, logging `Buffered` when it begins a buffered episode.
    /// Bytes leave the buffer only through the loop's flushes, so one
    /// buffered before means the episode begun earlier is still open.
    fn put(&mut self, data: &[u8]) -> Result<(), NetError> {
        let before = self.conn.buffered();
        let r = self.conn.write(data);
        if before == 0 && self.conn.buffered() > 0 {
            self.out.seen(self.id, Seen::Buffered);
        }
        r
    }

    fn event(&mut self, cx: CX![], ev: TcpEvent) {
        let id = self.id;
        match ev {
            TcpEvent::Connected => self.out.seen(id, Seen::Connected),
            TcpEvent::Data(d) => {
                self.out.seen(id, Seen::Data(d.clone()));
                match self.mode {
                    Mode::Echo { .. } => self.echo(d),
                    Mode::DieOnData => stop!(cx),
                    _ => {}
                }
            }
            TcpEvent::ReadClosed => {
                self.out.seen(id, Seen::ReadClosed);
                match self.mode {
                    Mode::Echo { tail } => {
                        if !tail.is_empty() {
                            self.write(tail);
                        }
                        self.shutdown();
                    }
                    Mode::Greet => self.shutdown(),
                    Mode::Flood => self.flood(),
                    Mode::LateWrite => {
                        self.shutdown();
                        self.write(b"after shutdown");
                    }
                    _ => {}
                }
            }
            TcpEvent::Drained => {
                self.out.seen(id, Seen::Drained);
                match self.mode {
                    Mode::Echo { .. } => self.echo_pending(),
                    Mode::Flood => self.flood(),
                    Mode::Fill { .. } => self.fill(),
                    _ => {}
                }
            }
            TcpEvent::Error(e) => self.out.seen(id, Seen::Error(info(&e))),
            TcpEvent::Closed => {
                self.out.seen(id, Seen::Closed);
                if let Mode::LateWrite = self.mode {
                    self.write(b"after close");
                    if let Err(e) = self.conn.shutdown_write() {
                        self.out.seen(id, Seen::Refused("shutdown", info(&e)));
                    }
                }
                stop!(cx);
            }
            _ => {}
        }
    }

    fn shutdown(&mut self) {
        if let Err(e) = self.conn.shutdown_write() {
            self.out.seen(self.id, Seen::Refused("shutdown", info(&e)));
        }
    }

    fn echo(&mut self, d: Vec<u8>) {
        if !self.pending.is_empty() {
            // Read before the pause took effect: keep the order.
            self.pending.push_back(d);
            return;
        }
        match self.put(&d) {
            Ok(()) => {}
            Err(NetError::Full { .. }) => {
                // Backpressure: hold the data, stop reading until Drained.
                self.pending.push_back(d);
                self.conn.pause_reading();
                self.out.seen(self.id, Seen::Paused);
            }
            Err(e) => self.out.seen(self.id, Seen::Refused("write", info(&e))),
        }
    }

    fn echo_pending(&mut self) {
        while let Some(d) = self.pending.pop_front() {
            match self.put(&d) {
                Ok(()) => {}
                Err(NetError::Full { .. }) => {
                    self.pending.push_front(d);
                    return; // again at Drained
                }
                Err(e) => {
                    self.pending.push_front(d);
                    self.out.seen(self.id, Seen::Refused("write", info(&e)));
                    return;
                }
            }
        }
        self.conn.resume_reading();
    }

    /// Writes 16 KiB chunks until a write fails.
    fn flood(&mut self) {
        let chunk = vec![7u8; CHUNK];
        loop {
            match self.put(&chunk) {
                Ok(()) => self.sent += CHUNK as u64,
                Err(NetError::Full { .. }) => return, // go on at Drained
                Err(e) => {
                    self.out.seen(self.id, Seen::Refused("write", info(&e)));
                    return;
                }
            }
        }
    }

    /// Writes the pattern until Full; then `extra` more, then shuts down.
    /// Spill: until a write leaves bytes buffered, then shuts down.
    fn fill(&mut self) {
        let (extra, spill) = match self.mode {
            Mode::Fill { extra } => (extra, false),
            Mode::Spill => (0, true),
            _ => return,
        };
        while !self.stopped_writing {
            if let Some(t) = self.target {
                if self.sent >= t {
                    self.stopped_writing = true;
                    self.out.seen(self.id, Seen::Done(self.sent));
                    self.shutdown();
                    return;
                }
            }
            let chunk: Vec<u8> = (0..CHUNK as u64)
                .map(|i| pattern_byte(self.sent + i))
                .collect();
            let before = self.conn.buffered();
            match self.put(&chunk) {
                Ok(()) => {
                    self.sent += CHUNK as u64;
                    if spill && self.conn.buffered() > 0 {
                        self.target = Some(self.sent);
                    }
                }
                Err(NetError::Full { capacity }) => {
                    assert_eq!(capacity, self.conn.write_limit());
                    let after = self.conn.buffered();
                    self.out.seen(self.id, Seen::Full { before, after });
                    if self.target.is_none() {
                        self.target = Some(self.sent + extra);
                    }
                    return;
                }
                Err(e) => {
                    self.out.seen(self.id, Seen::Refused("write", info(&e)));
                    return;
                }
            }
        }
    }
}

/// How the listener's connections are served: each `Server`'s mode and
/// configuration, and where they all log.
#[derive(Clone)]
struct Serving {
    mode: Mode,
    config: ConnConfig,
    out: Out,
}

/// Accepts and starts one `Server` device per connection.
struct Listener {
    _acc: TcpAcceptor,
    serving: Serving,
    conns: Vec<DeviceOwn<Server>>,
}

impl Listener {
    fn init(cx: CX![], listener: TcpListener, serving: Serving) -> Option<Self> {
        let events = fwd_to!([cx], accept() as (AcceptEvent));
        match TcpAcceptor::from_std(cx, listener, events) {
            Ok(acc) => Some(Listener {
                _acc: acc,
                serving,
                conns: Vec::new(),
            }),
            Err(e) => serving.out.refused(cx, LISTENER, "acceptor", e),
        }
    }

    fn accept(&mut self, cx: CX![], ev: AcceptEvent) {
        let out = &self.serving.out;
        match ev {
            AcceptEvent::Accepted(a) => {
                out.seen(LISTENER, Seen::Accepted);
                let id = self.conns.len();
                let dev = device!(cx, Server::init(a, id, self.serving.clone()));
                self.conns.push(dev);
            }
            AcceptEvent::Error(e) => out.seen(LISTENER, Seen::AcceptError(info(&e))),
            AcceptEvent::Closed => out.seen(LISTENER, Seen::AcceptClosed),
            _ => {}
        }
    }
}

/// Echoes every datagram to its sender.
struct UdpEcho {
    port: UdpPort,
    out: Out,
}

impl UdpEcho {
    fn init(cx: CX![], sock: UdpSocket, out: Out) -> Option<Self> {
        let events = fwd_to!([cx], event() as (UdpEvent));
        match UdpPort::from_std(cx, sock, UdpConfig::new(), events) {
            Ok(port) => Some(UdpEcho { port, out }),
            Err(e) => out.refused(cx, UDP, "udp", e),
        }
    }

    fn event(&mut self, _: CX![], ev: UdpEvent) {
        match ev {
            UdpEvent::Datagram { from, data } => {
                self.out.seen(UDP, Seen::Datagram(from, data.clone()));
                if let Err(e) = self.port.send_to(&data, from) {
                    self.out.seen(UDP, Seen::Refused("send_to", info(&e)));
                }
            }
            UdpEvent::Drained => self.out.seen(UDP, Seen::Drained),
            UdpEvent::Error(e) => self.out.seen(UDP, Seen::Error(info(&e))),
            UdpEvent::Closed => self.out.seen(UDP, Seen::UdpClosed),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------
// Harness

/// What the client thread gets.
struct Client {
    addr: SocketAddr,
    udp: SocketAddr,
    notes: mpsc::Receiver<Note>,
    history: RefCell<Vec<Note>>,
    remote: Remote,
}

impl Client {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
        s.set_write_timeout(Some(TIMEOUT)).expect("write timeout");
        s
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Note) -> bool) -> Note {
        wait_for(&self.notes, &self.history, what, pred)
    }

    fn wait_closed(&self, id: usize) {
        self.wait_for(&format!("Closed of connection {id}"), |n| {
            *n == (id, Seen::Closed)
        });
    }
}

/// Runs a listener (every connection in `mode`) and a UDP echo port on a
/// runtime on this thread, and `client` on another thread; the runtime
/// stops when `client` returns (or panics: the panic is re-raised here).
fn serve<T: Send + 'static>(
    mode: Mode,
    config: ConnConfig,
    client: impl FnOnce(&Client) -> T + Send + 'static,
) -> (T, Log, Exit) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let udp_addr = udp.local_addr().expect("udp addr");
    let mut rt = Runtime::new().expect("runtime");
    let (tx, notes) = mpsc::channel();
    let remote = rt.remote();
    let c = Client {
        addr,
        udp: udp_addr,
        notes,
        history: RefCell::new(Vec::new()),
        remote: remote.clone(),
    };
    let client = thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(|| client(&c)));
        let _ = remote.stop();
        r
    });
    let out = Out {
        log: Rc::new(RefCell::new(Vec::new())),
        notes: tx,
    };
    // The devices are held here, not by the runtime: a stop does not ask
    // them to shut down, so the runtime's shutdown closes their sockets.
    let mut devs = None;
    let exit = rt
        .run(|rt| {
            let l = device!(
                rt.core(),
                Listener::init(
                    listener,
                    Serving {
                        mode,
                        config,
                        out: out.clone()
                    }
                )
            );
            let u = device!(rt.core(), UdpEcho::init(udp, out.clone()));
            devs = Some((l, u));
        })
        .expect("run");
    assert_eq!(rt.sockets(), 0, "the shutdown closes every socket");
    drop(devs);
    match client.join().expect("client thread") {
        Ok(t) => (t, out.log, exit),
        Err(panic) => resume_unwind(panic),
    }
}

fn pattern_msg(t: usize, c: usize, m: usize) -> Vec<u8> {
    let len = 1 + (t * 131 + c * 17 + m * 29) % 1500;
    (0..len)
        .map(|i| ((t + c * 7 + m * 3 + i) % 256) as u8)
        .collect()
}

fn concat_data(seen: &[Seen]) -> Vec<u8> {
    let mut all = Vec::new();
    for s in seen {
        if let Seen::Data(d) = s {
            all.extend_from_slice(d);
        }
    }
    all
}

/// The connection ended with `ReadClosed` then `Closed`, and no error was
/// delivered or returned on the way.
#[track_caller]
fn assert_ends_cleanly(seen: &[Seen]) {
    let n = seen.len();
    assert_eq!(seen[n - 2..], [Seen::ReadClosed, Seen::Closed]);
    assert_eq!(
        count(seen, |s| matches!(s, Seen::Error(_) | Seen::Refused(..))),
        0
    );
}

fn count(seen: &[Seen], pred: impl Fn(&Seen) -> bool) -> usize {
    seen.iter().filter(|s| pred(s)).count()
}

/// The backpressure events of `seen`, one letter each: `B`uffered,
/// `F`ull, `P`aused, `D`rained (the rest, data above all, left out).
fn shape(seen: &[Seen]) -> String {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Buffered => Some('B'),
            Seen::Full { .. } => Some('F'),
            Seen::Paused => Some('P'),
            Seen::Drained => Some('D'),
            _ => None,
        })
        .collect()
}

/// Rule 72 on one connection's events: each buffered episode (`Buffered`)
/// gets exactly one `Drained`, after it; a `Drained` with no episode to
/// answer fails, as does an episode left unanswered, or a refusal
/// (`Full`, `Paused`) while no episode is open. At most `max_open`
/// episodes may await their notice at once (a server that writes only
/// at `Drained` has one; an echo may write again while a notice is on
/// its way). Returns the number of episodes.
#[track_caller]
fn assert_one_drained_per_episode(seen: &[Seen], max_open: usize) -> usize {
    let shape = shape(seen);
    // The events around the `i`th, for the failure message.
    let near = |i: usize| {
        let from = i.saturating_sub(16);
        format!(
            "{}[{}]{}",
            &shape[from..i],
            &shape[i..=i],
            &shape[i + 1..(i + 17).min(shape.len())]
        )
    };
    let (mut open, mut episodes) = (0usize, 0);
    for (i, c) in shape.chars().enumerate() {
        match c {
            'B' => {
                episodes += 1;
                assert!(
                    open < max_open,
                    "episode {episodes} began while {open} awaited their Drained: {}",
                    near(i)
                );
                open += 1;
            }
            'D' => {
                assert!(
                    open > 0,
                    "a Drained with no buffered episode to answer: {}",
                    near(i)
                );
                open -= 1;
            }
            _ => assert!(open > 0, "refused with nothing buffered: {}", near(i)),
        }
    }
    assert_eq!(open, 0, "episodes left without their Drained: {shape}");
    episodes
}

// ---------------------------------------------------------------------
// Tests

/// 100 concurrent connections (10 threads × 10) × 100 messages, each
/// written in three pieces: every byte comes back, every connection ends
/// with `ReadClosed` then exactly one `Closed` and no error.
#[test]
fn push_echo_100_connections_100_messages() {
    const THREADS: usize = 10;
    const CONNS: usize = 10;
    const MSGS: usize = 100;
    let (sent, log, exit) = serve(Mode::Echo { tail: b"" }, ConnConfig::new(), |c| {
        let addr = c.addr;
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                thread::spawn(move || {
                    let mut conns: Vec<TcpStream> = (0..CONNS)
                        .map(|_| {
                            let s = TcpStream::connect(addr).expect("connect");
                            s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                            s.set_write_timeout(Some(TIMEOUT)).expect("timeout");
                            s.set_nodelay(true).expect("nodelay");
                            s
                        })
                        .collect();
                    let mut total = 0usize;
                    for m in 0..MSGS {
                        for (ci, s) in conns.iter_mut().enumerate() {
                            let msg = pattern_msg(t, ci, m);
                            // Three pieces, each its own segment.
                            let (a, rest) = msg.split_at(msg.len() / 3);
                            let (b, d) = rest.split_at(rest.len() / 2);
                            for piece in [a, b, d] {
                                s.write_all(piece).expect("write");
                                s.flush().expect("flush");
                            }
                        }
                        for (ci, s) in conns.iter_mut().enumerate() {
                            let msg = pattern_msg(t, ci, m);
                            let mut back = vec![0; msg.len()];
                            s.read_exact(&mut back).expect("read echo");
                            assert_eq!(back, msg, "thread {t} conn {ci} message {m}");
                            total += msg.len();
                        }
                    }
                    for s in &mut conns {
                        s.shutdown(Shutdown::Write).expect("half-close");
                        let mut rest = Vec::new();
                        s.read_to_end(&mut rest).expect("read to EOF");
                        assert!(rest.is_empty(), "nothing after the echoes");
                    }
                    total
                })
            })
            .collect();
        let total: usize = workers
            .into_iter()
            .map(|w| w.join().expect("client worker"))
            .sum();
        for id in 0..THREADS * CONNS {
            c.wait_closed(id);
        }
        total
    });
    assert_eq!(exit, Exit::Stopped(Some(StopKind::Stopped)));
    let expected: usize = (0..THREADS)
        .flat_map(|t| (0..CONNS).flat_map(move |c| (0..MSGS).map(move |m| (t, c, m))))
        .map(|(t, c, m)| pattern_msg(t, c, m).len())
        .sum();
    assert_eq!(sent, expected);
    let accepted = count(&of(&log, LISTENER), |s| *s == Seen::Accepted);
    assert_eq!(accepted, THREADS * CONNS);
    let mut echoed = 0;
    for id in 0..THREADS * CONNS {
        let seen = of(&log, id);
        echoed += concat_data(&seen).len();
        assert!(
            seen.iter()
                .all(|s| matches!(s, Seen::Data(d) if !d.is_empty())
                    || *s == Seen::ReadClosed
                    || *s == Seen::Closed),
            "connection {id}: only data, end-of-stream, end: {seen:?}"
        );
        let n = seen.len();
        assert_eq!(
            seen[n - 2..],
            [Seen::ReadClosed, Seen::Closed],
            "connection {id}"
        );
    }
    assert_eq!(echoed, expected);
    // The stop closed the listener, and said so once.
    assert_eq!(count(&of(&log, LISTENER), |s| *s == Seen::AcceptClosed), 1);
}

/// Writes `payload` from a second thread, then half-closes; after
/// `before_reading` returns, reads everything back to end-of-stream.
fn pump(stream: TcpStream, payload: Arc<Vec<u8>>, before_reading: impl FnOnce()) -> Vec<u8> {
    let mut w = stream.try_clone().expect("clone");
    let writer = thread::spawn(move || {
        w.write_all(&payload).expect("write payload");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    before_reading();
    let mut r = stream;
    let mut back = Vec::new();
    r.read_to_end(&mut back).expect("read to EOF");
    writer.join().expect("writer");
    back
}

fn payload(n: usize) -> Arc<Vec<u8>> {
    Arc::new((0..n as u64).map(pattern_byte).collect())
}

/// An echo whose writes are refused with `Full` pauses reading, writes
/// the refused data at `Drained` and resumes: 16 MiB go through a 32 KiB
/// write bound and every byte comes back in order.
#[test]
fn echo_under_backpressure_pauses_on_full_resumes_on_drained_and_loses_nothing() {
    let data = payload(16 * 1024 * 1024);
    let sent = data.clone();
    let config = ConnConfig::new().write_limit(32 * 1024);
    let (back, log, _) = serve(Mode::Echo { tail: b"" }, config, move |c| {
        let s = c.connect();
        // Read nothing until the server has had to pause.
        let back = pump(s, sent, || {
            c.wait_for("Paused", |n| n.1 == Seen::Paused);
        });
        c.wait_closed(0);
        back
    });
    assert!(back == *data, "every byte back, in order");
    let seen = of(&log, 0);
    assert!(count(&seen, |s| *s == Seen::Paused) >= 1);
    let episodes = assert_one_drained_per_episode(&seen, usize::MAX);
    assert!(episodes >= 1, "the reader waited for a pause");
    assert_eq!(concat_data(&seen).len(), data.len());
    assert_ends_cleanly(&seen);
}

/// A connection with more waiting than its per-turn share reads that
/// share, lets the loop poll, and goes on by itself: with 1,000 bytes per
/// turn, 256 KiB sent at once (then nothing more to wake the socket) all
/// come back.
#[test]
fn read_share_per_turn_goes_on_after_the_poll_without_stranding_data() {
    let data = payload(256 * 1024);
    let sent = data.clone();
    let config = ConnConfig::new().read_chunk(1000).read_per_turn(1000);
    let (back, log, _) = serve(Mode::Echo { tail: b"" }, config, move |c| {
        let back = pump(c.connect(), sent, || {});
        c.wait_closed(0);
        back
    });
    assert!(back == *data, "every byte back, in order");
    let seen = of(&log, 0);
    assert!(seen
        .iter()
        .all(|s| !matches!(s, Seen::Data(d) if d.len() > 1000)));
    let n = seen.len();
    assert_eq!(seen[n - 2..], [Seen::ReadClosed, Seen::Closed]);
}

/// A connected loopback pair of std streams, `TCP_NODELAY` on both.
fn nodelay_pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    c.set_nodelay(true).unwrap();
    s.set_nodelay(true).unwrap();
    (c, s)
}

/// One side of a ping-pong inside the runtime: answers each byte with a
/// byte until `left` exchanges are done, then stops the runtime. Every
/// poll of the loop finds one of the two ready.
struct Pong {
    conn: TcpConn,
    left: Rc<std::cell::Cell<u32>>,
}

impl Pong {
    fn init(cx: CX![], s: TcpStream, left: Rc<std::cell::Cell<u32>>, serve: bool) -> Option<Self> {
        let events = fwd_to!([cx], event() as (TcpEvent));
        let conn = TcpConn::from_std(cx, s, ConnConfig::new(), events).unwrap();
        if serve {
            conn.write(b"x").unwrap();
        }
        Some(Pong { conn, left })
    }

    fn event(&mut self, cx: CX![], ev: TcpEvent) {
        if let TcpEvent::Data(_) = ev {
            let n = self.left.get();
            if n == 0 {
                cx.shutdown(stakker::StopCause::Stopped);
                return;
            }
            self.left.set(n - 1);
            self.conn.write(b"x").unwrap();
        }
    }
}

/// Counts the bytes it reads; notes how many ping-pong exchanges were
/// left when it had them all.
struct Sink {
    _conn: TcpConn,
    got: usize,
    want: usize,
    left: Rc<std::cell::Cell<u32>>,
    done_at: Rc<std::cell::Cell<Option<u32>>>,
}

impl Sink {
    fn init(
        cx: CX![],
        s: TcpStream,
        config: ConnConfig,
        want: usize,
        left: Rc<std::cell::Cell<u32>>,
        done_at: Rc<std::cell::Cell<Option<u32>>>,
    ) -> Option<Self> {
        let events = fwd_to!([cx], event() as (TcpEvent));
        let conn = TcpConn::from_std(cx, s, config, events).unwrap();
        Some(Sink {
            _conn: conn,
            got: 0,
            want,
            left,
            done_at,
        })
    }

    fn event(&mut self, _: CX![], ev: TcpEvent) {
        if let TcpEvent::Data(d) = ev {
            self.got += d.len();
            if self.got >= self.want && self.done_at.get().is_none() {
                self.done_at.set(Some(self.left.get()));
            }
        }
    }
}

/// A connection past its per-turn share goes on every turn, even while
/// other sockets keep every poll busy (review finding: its continuation
/// waited on stakker's idle queue, which runs only after a poll that
/// finds nothing, so 3 KiB already there waited through 2,000 exchanges
/// of a ping-pong and were never read).
#[test]
fn read_share_left_over_goes_on_every_turn_while_other_sockets_keep_the_loop_busy() {
    const EXCHANGES: u32 = 2000;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    // 4 KiB already waiting, read 1 KiB per turn.
    let (mut vc, vs) = nodelay_pair(&l);
    vc.write_all(&[7u8; 4096]).unwrap();
    // The busy pair: a byte back and forth inside the runtime.
    let (pc, ps) = nodelay_pair(&l);
    let left = Rc::new(std::cell::Cell::new(EXCHANGES));
    let done_at = Rc::new(std::cell::Cell::new(None));
    let mut rt = Runtime::builder()
        .virtual_time(std::time::Instant::now())
        .build()
        .unwrap();
    let (l2, d2) = (left.clone(), done_at.clone());
    rt.run(move |rt| {
        let cfg = ConnConfig::new().read_chunk(1024).read_per_turn(1024);
        let sink = device!(rt.core(), Sink::init(vs, cfg, 4096, l2.clone(), d2));
        let a = device!(rt.core(), Pong::init(pc, l2.clone(), true));
        let b = device!(rt.core(), Pong::init(ps, l2, false));
        (sink, a, b)
    })
    .unwrap();
    drop(vc);
    // A share a turn: the 3 KiB left over are read within a few turns.
    assert!(
        matches!(done_at.get(), Some(n) if n + 50 > EXCHANGES),
        "starved: all read with {:?} of {EXCHANGES} exchanges left",
        done_at.get()
    );
}

/// A peer that resets while the server reads: `Error` (a reset, on
/// `Read`), then `Closed`, each exactly once, and nothing after.
#[test]
fn peer_reset_mid_read_delivers_one_error_then_one_closed() {
    let ((), log, _) = serve(Mode::Greet, ConnConfig::new(), |c| {
        let mut s = c.connect();
        // Wait until the greeting sits unread in our receive buffer...
        let mut buf = [0u8; 5];
        loop {
            let n = s.peek(&mut buf).expect("peek");
            assert!(n > 0, "the server closed early");
            if n == buf.len() {
                break;
            }
        }
        // ...send something, and close with it unread: the OS resets.
        s.write_all(b"partial message").expect("write");
        drop(s);
        c.wait_closed(0);
    });
    let seen = of(&log, 0);
    let errors: Vec<_> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{seen:?}");
    assert!(errors[0].reset, "{seen:?}");
    assert_eq!(errors[0].op, Some(Op::Read));
    assert_eq!(count(&seen, |s| *s == Seen::Closed), 1);
    assert_eq!(seen.last(), Some(&Seen::Closed));
    assert!(matches!(seen[seen.len() - 2], Seen::Error(_)), "{seen:?}");
    assert!(!seen.contains(&Seen::ReadClosed), "a reset is not an EOF");
    // Whatever data arrived before the reset is a prefix of what was sent.
    assert!(b"partial message".starts_with(&concat_data(&seen)));
}

/// Writing to a peer that closed: the reset comes back as a typed error
/// (returned by `write`, or delivered as `Error` if the loop met it
/// first) exactly once, then one `Closed`; SIGPIPE never kills the
/// process (this test would die with it).
#[test]
fn peer_reset_mid_write_is_one_typed_reset_error_not_sigpipe() {
    let config = ConnConfig::new().write_limit(4 * CHUNK);
    let ((), log, _) = serve(Mode::Flood, config, |c| {
        let s = c.connect();
        c.wait_for("the accept", |n| n.1 == Seen::Accepted);
        // Close without reading: the server floods at our end-of-stream.
        drop(s);
        c.wait_closed(0);
    });
    let seen = of(&log, 0);
    let resets = count(&seen, |s| match s {
        Seen::Error(e) | Seen::Refused("write", e) => e.reset && e.op == Some(Op::Write),
        _ => false,
    });
    assert_eq!(resets, 1, "{seen:?}");
    assert_eq!(
        count(&seen, |s| matches!(s, Seen::Error(_) | Seen::Refused(..))),
        1,
        "one error in all: {seen:?}"
    );
    assert_eq!(count(&seen, |s| *s == Seen::Closed), 1);
    assert_eq!(seen.last(), Some(&Seen::Closed));
}

/// A peer that half-closes: the server reads `ReadClosed`, can still
/// write its reply, and ends with one `Closed` after its own shutdown.
#[test]
fn half_close_delivers_read_closed_and_writing_still_works() {
    let (reply, log, _) = serve(Mode::Echo { tail: b"+bye" }, ConnConfig::new(), |c| {
        let mut s = c.connect();
        s.write_all(b"ping").expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).expect("read to EOF");
        c.wait_closed(0);
        reply
    });
    assert_eq!(reply, b"ping+bye");
    let seen = of(&log, 0);
    assert_eq!(concat_data(&seen), b"ping");
    assert_ends_cleanly(&seen);
}

/// A client that connects and sends nothing does not hold up the others:
/// ten more clients are served meanwhile; the idle one, closed by the
/// test at the end, sees only `ReadClosed` and `Closed`.
#[test]
fn idle_client_does_not_stall_the_others() {
    let ((), log, _) = serve(Mode::Echo { tail: b"" }, ConnConfig::new(), |c| {
        let mut idle = c.connect();
        c.wait_for("the idle accept", |n| n.1 == Seen::Accepted);
        for i in 0..10u8 {
            let mut s = c.connect();
            let msg = [i; 100];
            s.write_all(&msg).expect("write");
            let mut back = [0u8; 100];
            s.read_exact(&mut back).expect("echo");
            assert_eq!(back, msg);
            s.shutdown(Shutdown::Write).expect("half-close");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("EOF");
            c.wait_closed(usize::from(i) + 1);
        }
        idle.shutdown(Shutdown::Write).expect("half-close idle");
        let mut rest = Vec::new();
        idle.read_to_end(&mut rest).expect("EOF");
        assert!(rest.is_empty());
        c.wait_closed(0);
    });
    assert_eq!(of(&log, 0), [Seen::ReadClosed, Seen::Closed]);
    for id in 1..=10 {
        let seen = of(&log, id);
        assert_eq!(concat_data(&seen), [id as u8 - 1; 100]);
        assert_eq!(seen.last(), Some(&Seen::Closed));
    }
}

/// After `shutdown_write` a write returns `Closed`; after the connection
/// ended (`Closed`), writing and shutting down return `Closed` too.
#[test]
fn write_after_shutdown_or_end_returns_closed() {
    let ((), log, _) = serve(Mode::LateWrite, ConnConfig::new(), |c| {
        let mut s = c.connect();
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF");
        assert!(rest.is_empty(), "the write after shutdown sent nothing");
        c.wait_closed(0);
    });
    let seen = of(&log, 0);
    let closed_err = ErrInfo {
        closed: true,
        full: false,
        op: None,
        kind: None,
        reset: false,
    };
    assert_eq!(
        seen,
        [
            Seen::ReadClosed,
            Seen::Refused("write", closed_err.clone()),
            Seen::Closed,
            Seen::Refused("write", closed_err.clone()),
            Seen::Refused("shutdown", closed_err),
        ]
    );
}

/// With a slow reader, `write` returns `Full` once the buffered bytes
/// would pass the bound, taking nothing (the buffered count is the same
/// before and after); exactly one `Drained` follows each buffered
/// episode, when the buffer empties, whether or not a write was refused
/// in it; every byte arrives in order. The reader reads nothing until the
/// server has bytes it could not hand over, so the episodes are known: a
/// server that stops writing at its first buffered write has one without
/// a `Full`, one that stops at its first `Full` has one with it; one that
/// writes 1 MiB more at each `Drained` has as many as the reader's pace
/// makes, each answered by one `Drained` before the next begins.
#[test]
fn write_bound_returns_full_and_drained_follows_with_a_slow_reader() {
    let seen = fill_for_a_slow_reader(Mode::Spill);
    assert_eq!(shape(&seen), "BD", "one episode, no refusal, one notice");

    let seen = fill_for_a_slow_reader(Mode::Fill { extra: 0 });
    assert_eq!(shape(&seen), "BFD", "one episode, one refusal, one notice");

    let seen = fill_for_a_slow_reader(Mode::Fill { extra: 1024 * 1024 });
    let episodes = assert_one_drained_per_episode(&seen, 1);
    assert!(episodes >= 1);
}

/// Serves `mode` (`Fill` or `Spill`) with a 64 KiB write bound to a
/// client that reads nothing until the server's first `Full` (or, for
/// `Spill`, its `Done`), then everything; checks the bytes and each
/// `Full`, and returns what the server saw.
fn fill_for_a_slow_reader(mode: Mode) -> Vec<Seen> {
    let limit = 4 * CHUNK;
    let config = ConnConfig::new().write_limit(limit);
    let ((got, total), log, _) = serve(mode, config, |c| {
        let mut s = c.connect();
        // Read nothing until the server has had to buffer.
        c.wait_for("Full or Done", |n| {
            matches!(n.1, Seen::Full { .. } | Seen::Done(_))
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to EOF");
        let (_, done) = c.wait_for("Done", |n| matches!(n.1, Seen::Done(_)));
        drop(s);
        c.wait_closed(0);
        let Seen::Done(total) = done else {
            unreachable!()
        };
        (got, total)
    });
    assert_eq!(got.len() as u64, total);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern_byte(i as u64)));
    let seen = of(&log, 0);
    for s in &seen {
        if let Seen::Full { before, after } = s {
            assert_eq!(before, after, "Full takes nothing");
            assert!(before + CHUNK > limit && *before <= limit);
        }
    }
    assert_ends_cleanly(&seen);
    seen
}

/// A connection owned by an actor closes when the actor dies: the peer
/// reads end-of-stream, and no event is delivered for it any more.
#[test]
fn socket_owned_by_an_actor_closes_when_the_actor_dies() {
    let ((), log, _) = serve(Mode::DieOnData, ConnConfig::new(), |c| {
        let mut s = c.connect();
        s.write_all(b"die").expect("write");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF, not a timeout");
        assert!(rest.is_empty());
    });
    let seen = of(&log, 0);
    assert_eq!(concat_data(&seen), b"die");
    assert!(seen.iter().all(|s| matches!(s, Seen::Data(_))), "{seen:?}");
}

/// The runtime's shutdown closes every push socket still open (listener,
/// connection, UDP port), each delivering exactly one `Closed`; the peer
/// reads end-of-stream.
#[test]
fn runtime_shutdown_closes_push_sockets_and_delivers_closed() {
    let ((), log, _) = serve(Mode::Echo { tail: b"" }, ConnConfig::new(), |c| {
        let mut s = c.connect();
        s.write_all(b"hi").expect("write");
        let mut back = [0u8; 2];
        s.read_exact(&mut back).expect("echo");
        c.remote.stop().expect("stop");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF at shutdown");
        assert!(rest.is_empty());
    });
    assert_eq!(of(&log, 0), [Seen::Data(b"hi".to_vec()), Seen::Closed]);
    assert_eq!(of(&log, LISTENER), [Seen::Accepted, Seen::AcceptClosed]);
    assert_eq!(of(&log, UDP), [Seen::UdpClosed]);
}

/// UDP push: datagrams of several sizes (empty included) go round trip
/// through an echoing `UdpPort`, each intact, with its sender.
#[test]
fn udp_port_round_trip() {
    let sizes = [0usize, 1, 100, 1400, 9000, 60_000];
    let (client_addr, log, _) = serve(Mode::Echo { tail: b"" }, ConnConfig::new(), move |c| {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut buf = vec![0u8; 65_536];
        for (i, n) in sizes.iter().enumerate() {
            let msg: Vec<u8> = (0..*n).map(|j| (i + j) as u8).collect();
            s.send_to(&msg, c.udp).expect("send");
            let (got, from) = s.recv_from(&mut buf).expect("echo");
            assert_eq!(from, c.udp);
            assert_eq!(&buf[..got], &msg[..], "datagram {i}");
        }
        s.local_addr().expect("addr")
    });
    let seen = of(&log, UDP);
    let expect: Vec<Seen> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| Seen::Datagram(client_addr, (0..*n).map(|j| (i + j) as u8).collect()))
        .chain([Seen::UdpClosed])
        .collect();
    assert_eq!(seen, expect);
}

/// An actor that dials out, writes and shuts down writing before the
/// connection is established, and logs what it sees; it stops the
/// runtime at `Closed`.
struct Dialer {
    _conn: TcpConn,
    log: Rc<RefCell<Vec<Seen>>>,
}

impl Dialer {
    fn init(cx: CX![], addr: SocketAddr, log: Rc<RefCell<Vec<Seen>>>) -> Option<Self> {
        let events = fwd_to!([cx], event() as (TcpEvent));
        let conn = match TcpConn::connect(cx, addr, ConnConfig::new(), events) {
            Ok(c) => c,
            Err(e) => {
                log.borrow_mut().push(Seen::Refused("connect", info(&e)));
                cx.shutdown(StopCause::Stopped);
                return None;
            }
        };
        // Buffered until connected, then sent; then the shutdown.
        if let Err(e) = conn.write(b"hello") {
            log.borrow_mut().push(Seen::Refused("write", info(&e)));
        }
        if let Err(e) = conn.shutdown_write() {
            log.borrow_mut().push(Seen::Refused("shutdown", info(&e)));
        }
        Some(Dialer { _conn: conn, log })
    }

    fn event(&mut self, cx: CX![], ev: TcpEvent) {
        let s = match ev {
            TcpEvent::Connected => Seen::Connected,
            TcpEvent::Data(d) => Seen::Data(d),
            TcpEvent::ReadClosed => Seen::ReadClosed,
            TcpEvent::Drained => Seen::Drained,
            TcpEvent::Error(e) => Seen::Error(info(&e)),
            TcpEvent::Closed => {
                cx.shutdown(StopCause::Stopped);
                Seen::Closed
            }
            _ => return,
        };
        self.log.borrow_mut().push(s);
    }
}

fn dial(addr: SocketAddr) -> Vec<Seen> {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut rt = Runtime::new().expect("runtime");
    let mut dev = None;
    rt.run(|rt| dev = Some(device!(rt.core(), Dialer::init(addr, log.clone()))))
        .expect("run");
    drop(dev);
    let seen = log.borrow().clone();
    seen
}

/// `connect` delivers `Connected` first, sends what was written before,
/// and ends like any connection; a refused connect delivers one `Error`
/// (on `Connect`) then one `Closed`.
#[test]
fn connect_delivers_connected_first_or_one_error_then_closed() {
    // A plain blocking echo peer on its own thread.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to EOF");
        s.write_all(&got).expect("echo");
        got
    });
    let seen = dial(addr);
    assert_eq!(peer.join().expect("peer"), b"hello");
    assert_eq!(seen[0], Seen::Connected);
    assert_eq!(concat_data(&seen), b"hello");
    let n = seen.len();
    assert_eq!(seen[n - 2..], [Seen::ReadClosed, Seen::Closed]);

    // Nobody listens on a port just released.
    let gone = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = gone.local_addr().expect("addr");
    drop(gone);
    let seen = dial(addr);
    assert_eq!(seen.len(), 2, "{seen:?}");
    match &seen[0] {
        Seen::Error(e) => {
            assert_eq!(e.op, Some(Op::Connect));
            assert_eq!(e.kind, Some(io::ErrorKind::ConnectionRefused));
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert_eq!(seen[1], Seen::Closed);
}

/// A write larger than the whole bound can never be taken: it is refused
/// with `TooLarge` (never `Full`, which promises a `Drained` that would
/// never come for it), whether or not bytes are buffered, and takes
/// nothing; the `Drained` owed for bytes already buffered still comes,
/// once (rule 72a).
#[test]
fn a_write_larger_than_the_bound_is_too_large_never_full() {
    let mut rt = Runtime::new().expect("runtime");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let s2 = seen.clone();
    let conn = TcpConn::connect(
        rt.core(),
        listener.local_addr().expect("addr"),
        ConnConfig::new().write_limit(8),
        Fwd::new(move |ev: TcpEvent| s2.borrow_mut().push(format!("{ev:?}"))),
    )
    .expect("connect");
    // Nothing buffered: a 9-byte write can never fit in 8.
    let first = conn.write(&[1; 9]).expect_err("9 bytes past a bound of 8");
    // Bytes buffered (before `Connected` every write is): still too large.
    conn.write(&[2; 4]).expect("4 bytes fit");
    let second = conn.write(&[3; 9]).expect_err("9 bytes past a bound of 8");
    for e in [&first, &second] {
        assert!(
            matches!(e, NetError::TooLarge { len: 9, limit: 8 }),
            "a write that can never fit is TooLarge, not {e:?}"
        );
    }
    assert_eq!(
        io::Error::from(second).kind(),
        io::ErrorKind::InvalidInput,
        "no retry helps: not WouldBlock, not Other"
    );
    assert_eq!(conn.buffered(), 4, "the refused writes took nothing");
    let (mut peer, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut got = [0; 4];
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !seen.borrow().iter().any(|e| e == "Drained") {
        assert!(std::time::Instant::now() < deadline, "no Drained: {seen:?}");
        rt.step(Some(Duration::from_millis(10))).expect("step");
    }
    peer.read_exact(&mut got).expect("the 4 bytes");
    assert_eq!(got, [2; 4]);
    assert_eq!(*seen.borrow(), ["Connected", "Drained"]);
    drop(conn);
    rt.stop();
    rt.run(|_| {}).expect("run");
}
