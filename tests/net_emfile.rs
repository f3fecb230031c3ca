//! Accepting while the process is out of file descriptors (`EMFILE`).
//!
//! This is its own test binary because it lowers the whole process's
//! `RLIMIT_NOFILE` soft limit (with the `rlimit` dev-dependency) and fills
//! the descriptor table: any other test running in the same process at
//! that moment would fail to open a socket or file. The two tests here
//! share that limit too, so they take `LIMIT` and run one at a time; the
//! limit and the descriptors are given back by a guard, even if a test
//! fails half way.
//!
//! The scenario, for the push [`TcpAcceptor`] and the async
//! [`TcpListener`] alike: a client `A` is connected and echoing; the
//! descriptor table is filled; client `B1` connects into the freed last
//! slot, so the server's accept fails with `EMFILE`. The server must
//! report the error and back off (10 ms, 20 ms, 40 ms, ... between
//! attempts; the loop does not spin), `A` must keep echoing, and once the
//! descriptors are freed the pending clients (`B1`..`B3`) must be
//! accepted and served. Nothing sleeps: the client thread waits for what
//! the server reports through a channel, with 10 s bounds everywhere.

use stakplane::net::{AcceptEvent, Accepted, ConnConfig, NetError, TcpAcceptor, TcpConn, TcpEvent};
use stakplane::prelude::*;
use stakplane::rt::{Remote, Runtime, RuntimeStats};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
const EMFILE: i32 = 24;
/// Pending clients connected while the table is full.
const PENDING: usize = 3;

/// Serialises the tests of this binary: they share the process's limit.
static LIMIT: Mutex<()> = Mutex::new(());

/// What the server reports to the client thread.
#[derive(Debug)]
enum Note {
    Accepted,
    /// An accept failed at `at` (runtime time for the push acceptor, real
    /// time for the async listener); `emfile` if it was `EMFILE`.
    AcceptError {
        at: Instant,
        emfile: bool,
    },
}

fn is_emfile(e: &NetError) -> bool {
    matches!(e, NetError::Io { error, .. } if error.raw_os_error() == Some(EMFILE))
}

// ---------------------------------------------------------------------
// The descriptor table, filled

/// Fills the descriptor table; gives everything back when dropped.
struct Exhausted {
    soft: u64,
    hard: u64,
    dummies: Vec<File>,
}

impl Exhausted {
    /// Lowers the soft limit to what is open plus a few, then opens
    /// `/dev/null` until `EMFILE`.
    fn new() -> Exhausted {
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        let open = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(64);
        let low = (open + 16).min(soft);
        rlimit::setrlimit(rlimit::Resource::NOFILE, low, hard).expect("setrlimit");
        let mut this = Exhausted {
            soft,
            hard,
            dummies: Vec::new(),
        };
        this.refill();
        assert!(
            !this.dummies.is_empty(),
            "the lowered limit left no room at all"
        );
        this
    }

    /// Opens dummies until the table is full again.
    fn refill(&mut self) {
        loop {
            match File::open("/dev/null") {
                Ok(f) => self.dummies.push(f),
                Err(e) if e.raw_os_error() == Some(EMFILE) => return,
                Err(e) => panic!("opening a dummy: {e}"),
            }
            assert!(self.dummies.len() < 100_000, "the limit did not bite");
        }
    }

    /// Connects a client into a freed slot. If the server's retried
    /// accept took the slot first, frees another one and tries again.
    fn connect(&mut self, addr: SocketAddr) -> TcpStream {
        loop {
            assert!(self.dummies.pop().is_some(), "no dummy left to free");
            match TcpStream::connect(addr) {
                Ok(s) => return timeouts(s),
                Err(e) if e.raw_os_error() == Some(EMFILE) => continue,
                Err(e) => panic!("connect: {e}"),
            }
        }
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        self.dummies.clear();
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, self.soft, self.hard);
    }
}

fn timeouts(s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(TIMEOUT)).expect("write timeout");
    s
}

fn echo_once(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

/// The server's reports, as the client thread has read them.
#[derive(Default)]
struct Tally {
    accepted: usize,
    /// Times of the accept errors, in order.
    errors: Vec<Instant>,
}

impl Tally {
    fn take(&mut self, notes: &mpsc::Receiver<Note>, what: &str) {
        match notes.recv_timeout(TIMEOUT) {
            Ok(Note::Accepted) => self.accepted += 1,
            Ok(Note::AcceptError { at, emfile }) => {
                assert!(emfile, "only EMFILE is expected");
                self.errors.push(at);
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// The client side; returns the accept errors' times, in order.
fn clients(addr: SocketAddr, notes: mpsc::Receiver<Note>, slack: Duration) -> Vec<Instant> {
    let mut t = Tally::default();
    let mut a = timeouts(TcpStream::connect(addr).expect("connect A"));
    echo_once(&mut a, b"before");
    t.take(&notes, "A's accept");
    assert_eq!(t.accepted, 1);

    let mut full = Exhausted::new();
    // B1 takes the only free slot: the server's accept has none.
    let mut pending = vec![full.connect(addr)];
    // Four failed attempts: the first, then after 10, 20 and 40 ms.
    while t.errors.len() < 4 {
        t.take(&notes, "an accept error");
        echo_once(&mut a, b"while out of descriptors");
    }
    assert_eq!(t.accepted, 1, "nothing accepted while the table is full");
    let gaps: Vec<Duration> = t.errors.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, min) in gaps.iter().zip([10, 20, 40]) {
        assert!(
            *gap + slack >= Duration::from_millis(min),
            "backed off {gap:?}, expected at least {min} ms: {gaps:?}"
        );
    }
    // More clients wait in the backlog.
    while pending.len() < PENDING {
        pending.push(full.connect(addr));
    }
    full.refill();
    echo_once(&mut a, b"still out of descriptors");
    drop(full);

    // The next retry (at most 1 s away) accepts everyone waiting.
    for (i, b) in pending.iter_mut().enumerate() {
        echo_once(b, format!("pending client {i}").as_bytes());
    }
    echo_once(&mut a, b"after");
    while t.accepted < 1 + PENDING {
        t.take(&notes, "the pending accepts");
    }
    t.errors
}

/// Runs the runtime (after `setup`) on this thread and the clients on
/// another; checks what the back-off promises.
fn scenario(
    slack: Duration,
    setup: impl FnOnce(&mut Runtime, TcpListener, mpsc::Sender<Note>),
) -> RuntimeStats {
    let _serial = LIMIT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut rt = Runtime::new().expect("runtime");
    let remote: Remote = rt.remote();
    let (tx, notes) = mpsc::channel();
    let client = thread::spawn(move || {
        let r = std::panic::catch_unwind(move || clients(addr, notes, slack));
        let _ = remote.stop();
        r
    });
    rt.run(|rt| setup(rt, listener, tx)).expect("run");
    let errors = match client.join().expect("client thread") {
        Ok(errors) => errors,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    // Never faster than the first back-off step, whatever happened.
    for w in errors.windows(2) {
        assert!(w[1] - w[0] + slack >= Duration::from_millis(10));
    }
    assert!(errors.len() < 20, "{} accept errors", errors.len());
    let stats = rt.stats();
    // A loop that spun through the back-off would turn thousands of times.
    assert!(stats.turns < 200, "{stats:?}");
    stats
}

// ---------------------------------------------------------------------
// Push style

/// `r`'s value, or `None` with the device failed by `r`'s error: how an
/// `init` that cannot take its socket ends.
fn or_fail<A, T>(cx: &mut Cx<'_, A>, r: Result<T, NetError>) -> Option<T> {
    r.map_err(|e| fail!(cx, e)).ok()
}

struct Echo {
    conn: TcpConn,
}

impl Echo {
    fn init(cx: CX![], accepted: Accepted) -> Option<Self> {
        let events = fwd_to!([cx], event() as (TcpEvent));
        let conn = TcpConn::new(cx, accepted, ConnConfig::new(), events);
        Some(Echo {
            conn: or_fail(cx, conn)?,
        })
    }

    fn event(&mut self, cx: CX![], ev: TcpEvent) {
        match ev {
            // Small messages: never near the write bound.
            TcpEvent::Data(d) => drop(self.conn.write(&d)),
            TcpEvent::ReadClosed => drop(self.conn.shutdown_write()),
            TcpEvent::Closed => stop!(cx),
            _ => {}
        }
    }
}

struct Server {
    _acc: TcpAcceptor,
    notes: mpsc::Sender<Note>,
    conns: Vec<DeviceOwn<Echo>>,
}

impl Server {
    fn init(cx: CX![], l: TcpListener, notes: mpsc::Sender<Note>) -> Option<Self> {
        let events = fwd_to!([cx], accept() as (AcceptEvent));
        let acc = TcpAcceptor::from_std(cx, l, events);
        Some(Server {
            _acc: or_fail(cx, acc)?,
            notes,
            conns: Vec::new(),
        })
    }

    fn accept(&mut self, cx: CX![], ev: AcceptEvent) {
        match ev {
            AcceptEvent::Accepted(a) => {
                self.conns.push(device!(cx, Echo::init(a)));
                let _ = self.notes.send(Note::Accepted);
            }
            AcceptEvent::Error(e) => {
                let _ = self.notes.send(Note::AcceptError {
                    at: cx.now(),
                    emfile: is_emfile(&e),
                });
            }
            _ => {}
        }
    }
}

/// The push acceptor, out of descriptors: reports `EMFILE`, backs off
/// 10 ms doubling (runtime time, so exactly), keeps the established
/// connection echoing, and accepts the waiting clients once descriptors
/// are free again.
#[test]
fn push_acceptor_backs_off_on_emfile_and_keeps_serving() {
    let mut server = None;
    scenario(Duration::ZERO, |rt, l, tx| {
        server = Some(device!(rt.core(), Server::init(l, tx)));
    });
    drop(server);
}

// ---------------------------------------------------------------------
// Async style

async fn echo(mut s: stakplane::net::TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}

/// The async listener, out of descriptors: `accept().await` returns the
/// `EMFILE` error, the next accept waits 10 ms doubling first (the times
/// are real time here, read after the task is polled, hence 2 ms of
/// slack), the established connection keeps echoing, and the waiting
/// clients are accepted once descriptors are free again.
#[test]
fn async_listener_backs_off_on_emfile_and_keeps_serving() {
    scenario(Duration::from_millis(2), |rt, l, tx| {
        let io = rt.io();
        let mut listener =
            stakplane::net::TcpListener::from_std(&io, l).expect("register the listener");
        let accept_loop = stakplane::task::spawn(rt.core(), async move {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        // Detached: the task runs on by itself.
                        drop(stakplane::task::spawn_local(echo(s)));
                        let _ = tx.send(Note::Accepted);
                    }
                    Err(e) => {
                        let emfile = is_emfile(&e);
                        let _ = tx.send(Note::AcceptError {
                            at: Instant::now(),
                            emfile,
                        });
                    }
                }
            }
        });
        drop(accept_loop); // detached: it runs until the runtime stops
    });
}
