//! The async-style net layer on loopback: `TcpStream` (futures-io),
//! `TcpListener` (`accept`, `incoming`), `UdpSocket`, and their errors.
//!
//! Each test runs the [`Runtime`] on the test thread and its clients
//! (plain `std::net` sockets) on other threads. Nothing sleeps to
//! synchronise: the sides wait on each other's bytes. Everything is
//! bounded so a bug fails instead of hanging: client reads and writes time
//! out after 10 s; a server task that has not finished after 20 s fails
//! (its [`timeout`](stakplane::task::timeout)); a client that panics stops
//! the runtime. Server tasks report every error and panic, and the test
//! asserts none happened.

use futures::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use stakplane::net::{Io, NetError, Op, TcpListener, TcpStream, UdpSocket};
use stakplane::rt::{Exit, Remote, Runtime};
use stakplane::task::Spawner;
use std::cell::{Cell, RefCell};
use std::error::Error;
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

/// Bound on every blocking client operation.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on every server task.
const TASK_TIMEOUT: Duration = Duration::from_secs(20);

type TaskResult = Result<(), Box<dyn Error>>;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A blocking client connection with the 10 s bounds.
fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Connects, writes each of `pieces` (one write each), shuts down
/// writing, and reads the reply to the end.
fn send_then_half_close(addr: SocketAddr, pieces: &[&str]) -> String {
    let mut s = connect(addr);
    for piece in pieces {
        s.write_all(piece.as_bytes()).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// A failure recorded on the runtime side, checked after `run`.
type Failures = Rc<RefCell<Vec<String>>>;

/// Spawns server tasks that report how they ended.
#[derive(Clone)]
struct Tasks {
    spawner: Spawner,
    failures: Failures,
}

impl Tasks {
    /// Spawns `fut`, bounded by [`TASK_TIMEOUT`]. An `Err`, a panic, the
    /// timeout, or being dropped by the runtime's shutdown is recorded as
    /// a failure.
    fn spawn(&self, name: impl Into<String>, fut: impl Future<Output = TaskResult> + 'static) {
        let name = name.into();
        let failures = self.failures.clone();
        let bounded = stakplane::task::timeout(TASK_TIMEOUT, fut);
        drop(self.spawner.spawn_then(bounded, move |end| {
            let why = match end {
                Ok(Ok(Ok(()))) => return,
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(Err(_)) => format!("not done after {TASK_TIMEOUT:?}"),
                Err(e) => e.to_string(),
            };
            failures.borrow_mut().push(format!("{name}: {why}"));
        }));
    }
}

/// A runtime on the test thread, its server tasks, and a client thread.
struct Harness {
    rt: Runtime,
    tasks: Tasks,
}

impl Harness {
    fn new() -> Harness {
        let mut rt = Runtime::new().unwrap();
        let tasks = Tasks {
            spawner: stakplane::task::spawner(rt.core()),
            failures: Rc::default(),
        };
        Harness { rt, tasks }
    }

    fn io(&self) -> Io {
        self.rt.io()
    }

    fn listen(&self) -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind(&self.io(), loopback()).unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    /// A listener whose first connection a task named `name` accepts
    /// and hands to `serve`; the listener's address.
    fn serve_one<F, Fut>(&self, name: &'static str, serve: F) -> SocketAddr
    where
        F: FnOnce(TcpStream) -> Fut + 'static,
        Fut: Future<Output = TaskResult> + 'static,
    {
        let (mut l, addr) = self.listen();
        self.tasks.spawn(name, async move {
            let (s, _) = l.accept().await?;
            serve(s).await
        });
        addr
    }

    /// Runs the loop while `client` runs on another thread; re-raises the
    /// client's panic, asserts that no server task failed and that every
    /// socket was closed, and returns how `run` ended. A panicking client
    /// stops the runtime; `client` gets the `Remote` for other stops.
    fn run(mut self, client: impl FnOnce(&Remote) + Send + 'static) -> Exit {
        let guard = StopOnPanic(self.rt.remote());
        let th = thread::spawn(move || client(&guard.0));
        let exit = self.rt.run(|_| {}).unwrap();
        if let Err(p) = th.join() {
            std::panic::resume_unwind(p);
        }
        let failures = self.tasks.failures.borrow().clone();
        assert!(failures.is_empty(), "server side failed: {failures:#?}");
        assert_eq!(self.rt.sockets(), 0, "every socket was closed");
        exit
    }

    /// [`run`](Harness::run) for servers that never end by themselves:
    /// the client stops the runtime when it returns.
    fn run_then_stop(self, client: impl FnOnce() + Send + 'static) -> Exit {
        self.run(move |remote| {
            client();
            remote.stop().unwrap();
        })
    }
}

/// Stops the runtime if the client thread panics.
struct StopOnPanic(Remote);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = self.0.stop();
        }
    }
}

/// Echoes through a small buffer until the peer closes its side, then
/// closes ours; returns the bytes echoed.
async fn echo(mut s: TcpStream) -> io::Result<u64> {
    // Smaller than most messages: a message that arrives in one segment
    // takes several reads, with no new readiness event between them.
    let mut buf = [0u8; 1024];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            s.close().await?;
            return Ok(total);
        }
        s.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Accepts forever, one echo task per connection.
fn echo_server(h: &Harness) -> SocketAddr {
    let (mut l, addr) = h.listen();
    let tasks = h.tasks.clone();
    let spawner = tasks.spawner.clone();
    // Unbounded: it ends when the runtime stops (dropped, not failed).
    spawner.spawn_detached(async move {
        loop {
            match l.accept().await {
                Ok((s, peer)) => tasks.spawn(format!("echo {peer}"), async move {
                    echo(s).await?;
                    Ok(())
                }),
                Err(NetError::Closed) => return,
                Err(e) => tasks.failures.borrow_mut().push(format!("accept: {e}")),
            }
        }
    });
    addr
}

/// Ends an echo connection from the client side and waits for the
/// server's end of stream, which its echo task sends as it finishes: the
/// task is done before the client goes on (e.g. to stop the runtime).
fn finish(mut s: std::net::TcpStream) {
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no byte beyond the echoes");
}

/// Message `m` of connection `c`: 3 to 2002 bytes, each byte depending on
/// connection, message and position.
fn message(c: usize, m: usize) -> Vec<u8> {
    let len = 3 + (c * 31 + m * 17) % 2000;
    (0..len).map(|i| (c * 7 + m * 13 + i) as u8).collect()
}

#[test]
fn async_echo_100_connections_100_messages() {
    const CONNS: usize = 100;
    const MSGS: usize = 100;
    let h = Harness::new();
    let (mut l, addr) = h.listen();
    let echoed = Rc::new(Cell::new(0u64));
    let tasks = h.tasks.clone();
    let counter = echoed.clone();
    h.tasks.spawn("acceptor", async move {
        for _ in 0..CONNS {
            let (s, peer) = l.accept().await?;
            let counter = counter.clone();
            tasks.spawn(format!("echo {peer}"), async move {
                let n = echo(s).await?;
                counter.set(counter.get() + n);
                Ok(())
            });
        }
        // The listener is dropped here: when the echo tasks end, no work
        // is left and `run` returns `Done`.
        Ok(())
    });
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = sent.clone();
    let exit = h.run(move |_| {
        let clients: Vec<_> = (0..CONNS)
            .map(|c| {
                let total = total.clone();
                thread::spawn(move || {
                    let mut s = connect(addr);
                    for m in 0..MSGS {
                        let msg = message(c, m);
                        let (a, b) = (msg.len() / 3, 2 * msg.len() / 3);
                        let mut back = vec![0; msg.len()];
                        // The first piece's echo comes back before the rest
                        // is sent, so the server gets the message in at
                        // least two reads.
                        s.write_all(&msg[..a]).unwrap();
                        s.read_exact(&mut back[..a]).unwrap();
                        s.write_all(&msg[a..b]).unwrap();
                        s.write_all(&msg[b..]).unwrap();
                        s.read_exact(&mut back[a..]).unwrap();
                        assert!(back == msg, "connection {c}, message {m} differs");
                        total.fetch_add(msg.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    finish(s);
                })
            })
            .collect();
        for c in clients {
            if let Err(p) = c.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    assert_eq!(exit, Exit::Done);
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let expected: u64 = (0..CONNS)
        .flat_map(|c| (0..MSGS).map(move |m| message(c, m).len() as u64))
        .sum();
    assert_eq!(sent, expected);
    assert_eq!(echoed.get(), expected, "the server echoed every byte once");
}

#[test]
fn async_buf_read_lines_split_across_segments_and_buffered_bytes_reach_read() {
    let h = Harness::new();
    let addr = h.serve_one("line reader", |mut s| async move {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = s.read_line(&mut line).await?;
            assert_ne!(n, 0, "EOF before the RAW marker");
            if line == "RAW\n" {
                break;
            }
            lines.push(line);
        }
        assert_eq!(lines, ["first line\n", "second line\n", "third line\n"]);
        // Bytes the line reader buffered past "RAW\n" come first.
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        assert_eq!(raw, b"tail bytes");
        // EOF stays EOF for the line reader too.
        let mut line = String::new();
        assert_eq!(s.read_line(&mut line).await?, 0);
        s.write_all(format!("{} lines\n", lines.len()).as_bytes())
            .await?;
        Ok(())
    });
    let exit = h.run(move |_| {
        let pieces = [
            "first li",
            "ne\nsecond line\nthi",
            "rd line\nRAW\ntail",
            " bytes",
        ];
        assert_eq!(send_then_half_close(addr, &pieces), "3 lines\n");
    });
    assert_eq!(exit, Exit::Done);
}

#[test]
fn incoming_stream_yields_each_connection_and_ends_when_the_listener_closes() {
    let h = Harness::new();
    let (l, addr) = h.listen();
    h.tasks.spawn("incoming", async move {
        let mut incoming = l.incoming();
        for i in 0..3 {
            let mut s = incoming.next().await.expect("a connection")?;
            s.write_all(format!("you are {i}\n").as_bytes()).await?;
        }
        incoming.listener().expect("still open").close()?;
        assert!(incoming.next().await.is_none(), "Closed ends the stream");
        assert!(incoming.listener().is_none());
        assert!(incoming.next().await.is_none(), "and it stays ended");
        Ok(())
    });
    let exit = h.run(move |_| {
        for i in 0..3 {
            let mut got = String::new();
            connect(addr).read_to_string(&mut got).unwrap();
            assert_eq!(got, format!("you are {i}\n"));
        }
    });
    assert_eq!(exit, Exit::Done);
}

#[test]
fn connect_to_a_refused_port_fails_with_net_error_io_op_connect() {
    let h = Harness::new();
    // A port nobody listens on: bind one, then free it.
    let refused = std::net::TcpListener::bind(loopback())
        .unwrap()
        .local_addr()
        .unwrap();
    let io = h.io();
    h.tasks.spawn("connect", async move {
        match TcpStream::connect(&io, refused).await {
            Err(NetError::Io {
                op: Op::Connect,
                error,
            }) => {
                assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
                Ok(())
            }
            other => Err(format!("expected a refused connect, got {other:?}").into()),
        }
    });
    assert_eq!(h.run(|_| {}), Exit::Done);
}

#[test]
fn peer_reset_mid_read_ends_the_read_with_connection_reset_not_a_hang() {
    let h = Harness::new();
    let seen = Rc::new(RefCell::new(None));
    let out = seen.clone();
    let addr = h.serve_one("reader", move |mut s| async move {
        s.write_all(b"unread").await?;
        let mut buf = [0u8; 16];
        // Blocks until the peer resets the connection.
        *out.borrow_mut() = Some(s.read(&mut buf).await.map_err(|e| e.kind()));
        Ok(())
    });
    let exit = h.run(move |_| {
        let s = connect(addr);
        // Wait until our bytes are in the client's receive buffer, unread:
        // closing the socket then sends a reset instead of a FIN.
        let mut buf = [0u8; 6];
        while s.peek(&mut buf).unwrap() < buf.len() {}
        drop(s);
    });
    assert_eq!(exit, Exit::Done);
    let seen = seen.borrow_mut().take().expect("the read ended");
    assert!(
        matches!(seen, Err(ErrorKind::ConnectionReset) | Ok(0)),
        "read after a reset: {seen:?}"
    );
}

#[test]
fn write_to_a_peer_that_closed_fails_with_epipe_or_reset_without_sigpipe() {
    let h = Harness::new();
    let addr = h.serve_one("writer", |mut s| async move {
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).await?, 0, "the peer closed");
        let chunk = vec![7u8; 64 * 1024];
        // The first write may still be accepted (the peer answers it with
        // a reset); a later one fails. A SIGPIPE would kill the test
        // binary instead.
        for _ in 0..1000 {
            if let Err(e) = s.write_all(&chunk).await {
                let kind = e.kind();
                assert!(
                    matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                    "{e}"
                );
                return Ok(());
            }
        }
        Err("1000 writes to a closed peer succeeded".into())
    });
    let exit = h.run(move |_| drop(connect(addr)));
    assert_eq!(exit, Exit::Done);
}

#[test]
fn close_shuts_down_writing_so_the_peer_reads_eof_and_can_still_reply() {
    let h = Harness::new();
    let addr = h.serve_one("half-closer", |mut s| async move {
        s.write_all(b"request").await?;
        // futures-io's poll_close: shutdown(Write), the socket stays open.
        s.close().await?;
        let err = s.write_all(b"more").await.expect_err("written after close");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        assert_eq!(reply, b"reply");
        Ok(())
    });
    let exit = h.run(move |_| {
        let mut s = connect(addr);
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"request");
        s.write_all(b"reply").unwrap();
    });
    assert_eq!(exit, Exit::Done);
}

#[test]
fn peer_half_close_reads_zero_then_writing_still_works() {
    let h = Harness::new();
    let addr = h.serve_one("replier", |mut s| async move {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?;
        assert_eq!(got, b"ping");
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await?, 0, "EOF is reported again");
        s.write_all(b"pong after your EOF").await?;
        Ok(())
    });
    let exit = h.run(move |_| {
        assert_eq!(send_then_half_close(addr, &["ping"]), "pong after your EOF");
    });
    assert_eq!(exit, Exit::Done);
}

#[test]
fn idle_connection_that_sends_nothing_does_not_block_serving_others() {
    let h = Harness::new();
    let addr = echo_server(&h);
    let exit = h.run_then_stop(move || {
        // Connected first, accepted first, and silent until the end.
        let mut idle = connect(addr);
        for i in 0..5 {
            let mut s = connect(addr);
            let msg = format!("busy client {i}");
            s.write_all(msg.as_bytes()).unwrap();
            let mut back = vec![0; msg.len()];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, msg.as_bytes());
            finish(s);
        }
        // The idle connection was being served all along.
        idle.write_all(b"late").unwrap();
        let mut back = [0u8; 4];
        idle.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"late");
        finish(idle);
    });
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
}

#[test]
fn runtime_stop_drops_a_task_blocked_in_read_and_the_client_sees_eof() {
    let h = Harness::new();
    let (mut l, addr) = h.listen();
    let dropped = Rc::new(Cell::new(false));
    let finished = Rc::new(Cell::new(false));
    /// Sets its flag when the task's future is dropped.
    struct OnDrop(Rc<Cell<bool>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let (d, f) = (OnDrop(dropped.clone()), finished.clone());
    // Not through `Tasks`: being dropped by the shutdown is the point.
    h.tasks.spawner.spawn_detached(async move {
        let _d = d;
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"ready\n").await.unwrap();
        let mut buf = [0u8; 8];
        let _ = s.read(&mut buf).await;
        f.set(true);
    });
    let exit = h.run(move |remote| {
        let mut s = connect(addr);
        let mut ready = [0u8; 6];
        s.read_exact(&mut ready).unwrap();
        remote.stop().unwrap();
        // The runtime drops the task, which drops (closes) its stream.
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "EOF, no reset");
    });
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
    assert!(dropped.get(), "the blocked task was dropped");
    assert!(!finished.get(), "its read never returned");
}

#[test]
fn udp_send_to_and_recv_from_round_trip_keeps_datagram_boundaries() {
    let h = Harness::new();
    let sock = UdpSocket::bind(&h.io(), loopback()).unwrap();
    let addr = sock.local_addr().unwrap();
    h.tasks.spawn("udp reverser", async move {
        let mut buf = [0u8; 256];
        for i in 0..10 {
            let (n, from) = sock.recv_from(&mut buf).await?;
            assert_eq!(n, i, "one datagram per receive, whole");
            let reply: Vec<u8> = buf[..n].iter().rev().copied().collect();
            assert_eq!(sock.send_to(&reply, from).await?, n);
        }
        Ok(())
    });
    let exit = h.run(move |_| {
        let c = std::net::UdpSocket::bind(loopback()).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        // Lengths 0..10, including an empty datagram.
        for i in 0..10 {
            let msg: Vec<u8> = (0..i as u8).collect();
            c.send_to(&msg, addr).unwrap();
            let mut buf = [0u8; 256];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr);
            let want: Vec<u8> = msg.iter().rev().copied().collect();
            assert_eq!(&buf[..n], &want[..]);
        }
    });
    assert_eq!(exit, Exit::Done);
}

#[test]
fn udp_connected_send_and_recv_between_two_async_sockets() {
    let h = Harness::new();
    let io = h.io();
    let a = UdpSocket::bind(&io, loopback()).unwrap();
    let b = UdpSocket::bind(&io, loopback()).unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    h.tasks.spawn("udp pair", async move {
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            assert_eq!(a.send(&[i; 3]).await?, 3);
            assert_eq!(b.recv(&mut buf).await?, 3);
            assert_eq!(&buf[..3], &[i; 3]);
            b.send(&[i + 100]).await?;
            assert_eq!(a.recv(&mut buf).await?, 1);
            assert_eq!(buf[0], i + 100);
        }
        Ok(())
    });
    assert_eq!(h.run(|_| {}), Exit::Done);
}

#[test]
fn net_error_from_io_recovers_closed_after_close() {
    let h = Harness::new();
    let io = h.io();
    let (mut l, addr) = h.listen();
    h.tasks.spawn("closer", async move {
        let (c, a) = futures::join!(TcpStream::connect(&io, addr), l.accept());
        let (mut c, (mut a, _)) = (c?, a?);
        c.close_now()?;
        let mut buf = [0u8; 8];
        let e = c.read(&mut buf).await.expect_err("read after close");
        assert!(
            matches!(NetError::from_io(&e), Some(NetError::Closed)),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::NotConnected);
        let e = c.write_all(b"x").await.expect_err("write after close");
        assert!(matches!(NetError::from_io(&e), Some(NetError::Closed)));
        assert!(matches!(c.peer_addr(), Err(NetError::Closed)));
        c.close_now().expect("closing twice is fine");
        // An OS error is not ours: `from_io` gives `None` for it.
        assert!(NetError::from_io(&io::Error::from(ErrorKind::BrokenPipe)).is_none());
        // The peer sees an orderly end of stream.
        assert_eq!(a.read(&mut buf).await?, 0);

        let u = UdpSocket::bind(&io, loopback())?;
        u.close()?;
        let e = u.send_to(b"x", addr).await.expect_err("send after close");
        assert!(matches!(NetError::from_io(&e), Some(NetError::Closed)));
        Ok(())
    });
    assert_eq!(h.run(|_| {}), Exit::Done);
}

#[test]
fn udp_two_tasks_waiting_on_one_socket_are_both_woken() {
    let h = Harness::new();
    let sock = Rc::new(UdpSocket::bind(&h.io(), loopback()).unwrap());
    let addr = sock.local_addr().unwrap();
    for name in ["first waiter", "second waiter"] {
        let sock = sock.clone();
        h.tasks.spawn(name, async move {
            let mut buf = [0u8; 16];
            let (n, from) = sock.recv_from(&mut buf).await?;
            sock.send_to(&buf[..n], from).await?;
            Ok(())
        });
    }
    drop(sock);
    // Spawned last, so it runs after both waiters are parked in `recv`:
    // only then may the client send.
    let (go, ready) = std::sync::mpsc::channel::<()>();
    h.tasks.spawn("starter", async move {
        go.send(())?;
        Ok(())
    });
    let exit = h.run(move |_| {
        ready.recv_timeout(IO_TIMEOUT).unwrap();
        let c = std::net::UdpSocket::bind(loopback()).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        c.send_to(b"one", addr).unwrap();
        c.send_to(b"two", addr).unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let mut buf = [0u8; 16];
            let (n, _) = c.recv_from(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        got.sort();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    });
    assert_eq!(exit, Exit::Done);
}
