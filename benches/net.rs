//! The runtime's sockets and cross-thread posts vs tokio's current-thread
//! runtime, side by side.
//!
//! Run with `cargo bench --bench net` (or `-- tcp_echo_roundtrip` /
//! `-- remote_post` for one group). Each group runs stakplane and tokio
//! in one criterion run, so the ratios can be read straight off one run.
//!
//! Groups:
//!
//! - `tcp_echo_roundtrip`: one 64-byte message there and back over
//!   loopback; reported per round trip. The **client is the same for every
//!   function**: criterion's own thread with a blocking
//!   `std::net::TcpStream` (`TCP_NODELAY` on) writes 64 bytes and reads
//!   exactly 64 bytes back. Only the server differs, each on its own
//!   thread, accepting one connection and echoing whatever it reads
//!   (`TCP_NODELAY` on, a 4 KiB read buffer on every side):
//!   - `stakplane-async`: a [`Runtime`] whose task awaits
//!     [`TcpListener::accept`], then loops on
//!     [`TcpStream::read`](stakplane::net::TcpStream::read) /
//!     [`TcpStream::write_all`](stakplane::net::TcpStream::write_all);
//!   - `stakplane-push`: a [`Runtime`] whose actor device owns a
//!     [`TcpAcceptor`], then the [`TcpConn`] it accepts, and writes each
//!     [`TcpEvent::Data`] back with [`TcpConn::write`] (no task, no
//!     future: readiness is pushed to the actor through its `Fwd`);
//!   - `tokio-current-thread`: a current-thread tokio runtime with I/O
//!     enabled whose spawned task does the same with `tokio::net` and
//!     `AsyncReadExt` / `AsyncWriteExt`.
//!
//!   Every server is one task (or one actor) on a single-threaded loop
//!   over mio's edge-triggered epoll, so the difference is the runtime's
//!   own cost per wake-up: dispatching the event, waking and polling the
//!   task (or queueing the actor call), and the system calls each makes
//!   around the `read` and `write`.
//! - `remote_post`: another thread hands a closure to the runtime's thread,
//!   which runs it; reported per post. The bench thread posts `iters`
//!   closures, each adding one to a shared `AtomicU64`, then spins until
//!   the counter shows all of them ran: the time covers posting, waking the
//!   loop, and running every closure. `stakplane`: [`Remote::post`];
//!   `tokio-current-thread`: `Handle::spawn` of an `async` block (tokio's
//!   way to run code on a runtime from another thread), the runtime driven
//!   by `block_on` of a oneshot receiver. Both runtimes have I/O enabled,
//!   so both sleep in `epoll_wait` and are woken through an `eventfd`.
//!
//! Each server is set up before its function and shut down after it:
//! the echo servers end when the client closes the connection (stakplane's
//! `run` returns [`Exit::Done`]: no work is left), the post targets when
//! told to stop ([`Remote::stop`], or dropping tokio's oneshot sender).
//! Every server thread is joined, and its exit checked, before the next
//! function starts.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use stakplane::net::{
    AcceptEvent, ConnConfig, NetError, TcpAcceptor, TcpConn, TcpEvent, TcpListener,
};
use stakplane::prelude::*;
use stakplane::rt::{Exit, Remote, Runtime};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// The size of one echoed message.
const MSG: usize = 64;
/// Every server's read buffer.
const BUF: usize = 4096;
/// Where every server listens: loopback, a free port.
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(50);
}

/// Runs `body` on a new thread named `name`; the thread sends one value
/// back (an address, a handle) before it starts serving.
fn start<T: Send + 'static>(
    name: &str,
    body: impl FnOnce(mpsc::SyncSender<T>) + Send + 'static,
) -> (T, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::sync_channel(1);
    let thread = thread::Builder::new()
        .name(format!("{name}-server"))
        .spawn(move || body(tx))
        .expect("spawn the server thread");
    match rx.recv() {
        Ok(v) => (v, thread),
        Err(_) => {
            // The thread ended without sending: it panicked; show why.
            let e = thread
                .join()
                .expect_err("a server that sends nothing panicked");
            std::panic::resume_unwind(e)
        }
    }
}

/// Joins a server thread, passing its panic (a failed check) on.
fn join(thread: thread::JoinHandle<()>) {
    if let Err(e) = thread.join() {
        std::panic::resume_unwind(e);
    }
}

// ---------------------------------------------------------------------------
// tcp_echo_roundtrip

/// The client of every echo function: blocking std socket, `TCP_NODELAY`.
struct EchoClient {
    sock: std::net::TcpStream,
    out: [u8; MSG],
    back: [u8; MSG],
}

impl EchoClient {
    fn connect(addr: SocketAddr) -> EchoClient {
        let sock = std::net::TcpStream::connect(addr).expect("connect to the echo server");
        sock.set_nodelay(true).expect("TCP_NODELAY");
        let mut out = [0u8; MSG];
        for (i, b) in out.iter_mut().enumerate() {
            *b = i as u8;
        }
        EchoClient {
            sock,
            out,
            back: [0; MSG],
        }
    }

    /// One message there and back.
    fn roundtrip(&mut self) {
        self.sock.write_all(&self.out).expect("client write");
        self.sock.read_exact(&mut self.back).expect("client read");
        assert_eq!(self.back, self.out, "the echo differs");
    }
}

/// Starts the server `serve` on its own thread, benches the round trip
/// against it as `name`, then closes the connection and joins the server.
fn echo_function(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    serve: fn(mpsc::SyncSender<SocketAddr>),
) {
    let (addr, server) = start(name, serve);
    let mut client = EchoClient::connect(addr);
    g.bench_function(name, |b| b.iter(|| client.roundtrip()));
    // End-of-stream: the server's task (or device) ends, and with it the
    // server.
    drop(client);
    join(server);
}

/// Accepts one connection on `$listener` and echoes it until
/// end-of-stream, with the runtime's own `read` and `write_all`: the same
/// code in the stakplane task and the tokio task, so both servers do the
/// same work.
macro_rules! echo_one {
    ($listener:ident) => {{
        let (mut conn, _) = $listener.accept().await.expect("accept");
        drop($listener);
        conn.set_nodelay(true).expect("TCP_NODELAY");
        let mut buf = vec![0u8; BUF];
        loop {
            let n = conn.read(&mut buf).await.expect("server read");
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).await.expect("server write");
        }
    }};
}

/// stakplane, async style: a task accepts one connection and echoes until
/// end-of-stream; with the task and its sockets gone, `run` returns.
fn serve_stakplane_async(addr_tx: mpsc::SyncSender<SocketAddr>) {
    let mut rt = Runtime::new().expect("stakplane runtime");
    let exit = rt
        .run(|rt| {
            let mut listener = TcpListener::bind(&rt.io(), LOOPBACK).expect("bind");
            let addr = listener.local_addr().expect("local address");
            let echo = async move { echo_one!(listener) };
            // Dropping the handle detaches the task.
            drop(stakplane::task::spawn(rt.core(), echo));
            addr_tx.send(addr).expect("the bench thread waits");
        })
        .expect("stakplane run");
    assert_eq!(exit, Exit::Done);
}

/// tokio, current thread with I/O: a spawned task accepts one connection
/// and echoes until end-of-stream; `block_on` waits for that task.
fn serve_tokio(addr_tx: mpsc::SyncSender<SocketAddr>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio current-thread runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(LOOPBACK))
        .expect("bind");
    addr_tx
        .send(listener.local_addr().expect("local address"))
        .expect("the bench thread waits");
    let echo = rt.spawn(async move { echo_one!(listener) });
    rt.block_on(echo).expect("the echo task ends");
}

/// stakplane, push style: an actor device owns a [`TcpAcceptor`], then
/// the one [`TcpConn`] it accepts, and writes back each
/// [`TcpEvent::Data`] with [`TcpConn::write`]. At end-of-stream it stops;
/// with the device and its sockets gone, `run` returns.
struct PushEcho {
    acceptor: Option<TcpAcceptor>,
    conn: Option<TcpConn>,
    /// The first error met, for the server thread to report.
    failed: Rc<RefCell<Option<NetError>>>,
}

impl PushEcho {
    fn init(
        cx: CX![],
        addr_tx: mpsc::SyncSender<SocketAddr>,
        failed: Rc<RefCell<Option<NetError>>>,
    ) -> Option<Self> {
        let events = fwd_to!([cx], accept() as (AcceptEvent));
        let bound = TcpAcceptor::bind(cx, LOOPBACK, events)
            .and_then(|acc| acc.local_addr().map(|addr| (acc, addr)));
        match bound {
            Ok((acceptor, addr)) => {
                addr_tx.send(addr).expect("the bench thread waits");
                Some(PushEcho {
                    acceptor: Some(acceptor),
                    conn: None,
                    failed,
                })
            }
            Err(e) => {
                // Dropping `addr_tx` unblocks the bench thread, which
                // then joins this server and reports `e`.
                *failed.borrow_mut() = Some(e);
                None
            }
        }
    }

    fn fail(&mut self, cx: CX![], e: NetError) {
        self.failed.borrow_mut().get_or_insert(e);
        stop!(cx);
    }

    fn accept(&mut self, cx: CX![], ev: AcceptEvent) {
        match ev {
            AcceptEvent::Accepted(accepted) => {
                // One connection: stop listening.
                self.acceptor = None;
                let events = fwd_to!([cx], event() as (TcpEvent));
                let config = ConnConfig::new().read_chunk(BUF);
                let conn = TcpConn::new(cx, accepted, config, events)
                    .and_then(|conn| conn.set_nodelay(true).map(|()| conn));
                match conn {
                    Ok(conn) => self.conn = Some(conn),
                    Err(e) => self.fail(cx, e),
                }
            }
            AcceptEvent::Error(e) => self.fail(cx, e),
            _ => {}
        }
    }

    fn event(&mut self, cx: CX![], ev: TcpEvent) {
        match ev {
            TcpEvent::Data(bytes) => {
                let Some(conn) = &self.conn else { return };
                if let Err(e) = conn.write(&bytes) {
                    self.fail(cx, e);
                }
            }
            // The client closed: done (dropping the conn closes it).
            TcpEvent::ReadClosed | TcpEvent::Closed => stop!(cx),
            TcpEvent::Error(e) => self.fail(cx, e),
            _ => {}
        }
    }
}

fn serve_stakplane_push(addr_tx: mpsc::SyncSender<SocketAddr>) {
    let failed = Rc::new(RefCell::new(None));
    let mut rt = Runtime::new().expect("stakplane runtime");
    let exit = rt
        .run(|rt| {
            let echo = device!(rt.core(), PushEcho::init(addr_tx, failed.clone()));
            rt.keep(echo);
        })
        .expect("stakplane run");
    if let Some(e) = failed.take() {
        panic!("push echo server: {e}");
    }
    assert_eq!(exit, Exit::Done);
}

fn tcp_echo_roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp_echo_roundtrip");
    configure(&mut g);
    echo_function(&mut g, "stakplane-async", serve_stakplane_async);
    echo_function(&mut g, "stakplane-push", serve_stakplane_push);
    echo_function(&mut g, "tokio-current-thread", serve_tokio);
    g.finish();
}

// ---------------------------------------------------------------------------
// remote_post

/// Spins until `counter` reaches `target`, yielding now and then so a
/// runtime thread sharing the core still gets to run.
fn wait_for(counter: &AtomicU64, target: u64) {
    let mut spins = 0u32;
    while counter.load(Ordering::Acquire) < target {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Times `iters` posts by `post` (each of which must add one to
/// `counter` on the runtime thread) until the last has run.
fn time_posts(
    iters: u64,
    counter: &Arc<AtomicU64>,
    mut post: impl FnMut(Arc<AtomicU64>),
) -> Duration {
    // Every earlier post has run: the counter is at rest.
    let target = counter.load(Ordering::Acquire) + iters;
    let t0 = Instant::now();
    for _ in 0..iters {
        post(counter.clone());
    }
    wait_for(counter, target);
    t0.elapsed()
}

/// A device that does nothing: kept by the runtime so `run` waits for
/// posts until it is stopped.
struct Idle;
impl Idle {
    fn init(_: CX![]) -> Option<Self> {
        Some(Idle)
    }
}

fn remote_post(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_post");
    configure(&mut g);
    let counter = Arc::new(AtomicU64::new(0));

    let (remote, server) = start("stakplane", |tx: mpsc::SyncSender<Remote>| {
        let mut rt = Runtime::new().expect("stakplane runtime");
        let exit = rt
            .run(|rt| {
                let idle = device!(rt.core(), Idle::init());
                rt.keep(idle);
                tx.send(rt.remote()).expect("the bench thread waits");
            })
            .expect("stakplane run");
        assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
    });
    g.bench_function("stakplane", |b| {
        b.iter_custom(|iters| {
            time_posts(iters, &counter, |n| {
                remote
                    .post(move |_s| {
                        n.fetch_add(1, Ordering::Relaxed);
                    })
                    .expect("the runtime accepts posts");
            })
        })
    });
    remote.stop().expect("the runtime is still running");
    join(server);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle, server) = start(
        "tokio-current-thread",
        move |tx: mpsc::SyncSender<tokio::runtime::Handle>| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("tokio current-thread runtime");
            tx.send(rt.handle().clone())
                .expect("the bench thread waits");
            // Runs the spawned tasks until the sender is dropped.
            let stopped = rt.block_on(stop_rx);
            assert!(stopped.is_err(), "stopped by dropping the sender");
        },
    );
    g.bench_function("tokio-current-thread", |b| {
        b.iter_custom(|iters| {
            time_posts(iters, &counter, |n| {
                // Dropping the JoinHandle detaches the task.
                drop(handle.spawn(async move {
                    n.fetch_add(1, Ordering::Relaxed);
                }));
            })
        })
    });
    drop(stop_tx);
    join(server);

    g.finish();
}

criterion_group!(benches, tcp_echo_roundtrip, remote_post);
criterion_main!(benches);
