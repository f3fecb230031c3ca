//! A push-style TCP echo server: one `Listener` device owns a
//! [`TcpAcceptor`]; each accepted connection gets its own `Echo` device,
//! which owns its [`TcpConn`] — so a connection closes when its device
//! dies, and a device dies when its connection ends.
//!
//! Each `Echo` writes back what it reads. When a write is refused because
//! the peer reads too slowly ([`NetError::Full`]), it keeps the data,
//! pauses reading (the peer's writes then wait in the OS), and goes on at
//! [`TcpEvent::Drained`]. At the peer's end-of-stream it shuts down its
//! own writing once everything is sent, and the connection ends.
//!
//! ```text
//! cargo run --example tcp_echo                      # serve on 127.0.0.1:7007 until Ctrl-C
//! cargo run --example tcp_echo -- 0.0.0.0:9000      # another address
//! cargo run --example tcp_echo -- --selftest        # serve on a free port, run clients, exit
//! ```
//!
//! The first Ctrl-C (or SIGTERM) shuts the server down in order: the
//! listener device is asked to shut down, which drops its connections.
//! A second one exits at once.

use stakplane::net::{AcceptEvent, Accepted, ConnConfig, NetError, TcpAcceptor, TcpConn, TcpEvent};
use stakplane::prelude::*;
use stakplane::rt::{Remote, Runtime};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// `r`'s value, or `None` with the device failed by `r`'s error: how an
/// `init` that cannot take its socket ends.
fn or_fail<A, T>(cx: &mut Cx<'_, A>, r: Result<T, NetError>) -> Option<T> {
    r.map_err(|e| fail!(cx, e)).ok()
}

/// One connection: echoes, with backpressure.
struct Echo {
    conn: TcpConn,
    peer: SocketAddr,
    /// Data the connection could not take yet, in order.
    pending: VecDeque<Vec<u8>>,
    /// The peer has finished sending: shut down once `pending` is sent.
    finishing: bool,
}

impl Echo {
    fn init(cx: CX![], accepted: Accepted) -> Option<Self> {
        let peer = accepted.peer_addr();
        let events = fwd_to!([cx], event() as (TcpEvent));
        let conn = TcpConn::new(cx, accepted, ConnConfig::new(), events);
        Some(Echo {
            conn: or_fail(cx, conn)?,
            peer,
            pending: VecDeque::new(),
            finishing: false,
        })
    }

    fn event(&mut self, cx: CX![], ev: TcpEvent) {
        match ev {
            TcpEvent::Data(d) => {
                self.pending.push_back(d);
                self.send(cx);
            }
            TcpEvent::Drained => self.send(cx),
            TcpEvent::ReadClosed => {
                self.finishing = true;
                self.send(cx);
            }
            TcpEvent::Error(e) => eprintln!("{}: {e}", self.peer),
            TcpEvent::Closed => stop!(cx),
            _ => {}
        }
    }

    /// Writes what is pending, as far as the write bound allows.
    fn send(&mut self, cx: CX![]) {
        while let Some(d) = self.pending.front() {
            match self.conn.write(d) {
                Ok(()) => {
                    self.pending.pop_front();
                }
                Err(NetError::Full { .. }) => {
                    // The peer reads slowly: stop reading until Drained.
                    self.conn.pause_reading();
                    return;
                }
                Err(e) => {
                    // The connection is closed; `Closed` follows.
                    eprintln!("{}: {e}", self.peer);
                    return;
                }
            }
        }
        self.conn.resume_reading();
        if self.finishing {
            if let Err(e) = self.conn.shutdown_write() {
                eprintln!("{}: {e}", self.peer);
                stop!(cx);
            }
        }
    }
}

/// Accepts, and keeps one `Echo` device per connection until it dies.
struct Listener {
    _acc: TcpAcceptor,
    conns: HashMap<DeviceId, DeviceOwn<Echo>>,
}

impl Listener {
    fn init(cx: CX![], listener: TcpListener) -> Option<Self> {
        let events = fwd_to!([cx], accept() as (AcceptEvent));
        let acc = TcpAcceptor::from_std(cx, listener, events);
        Some(Listener {
            _acc: or_fail(cx, acc)?,
            conns: HashMap::new(),
        })
    }

    fn accept(&mut self, cx: CX![], ev: AcceptEvent) {
        match ev {
            AcceptEvent::Accepted(a) => {
                let dev = device!(cx, Echo::init(a));
                // Forget the device when it dies.
                let _ = dev.monitor_fwd(fwd_to!([cx], gone() as (Down)));
                self.conns.insert(dev.id(), dev);
            }
            // The acceptor backs off by itself after EMFILE and kin.
            AcceptEvent::Error(e) => eprintln!("accept: {e}"),
            AcceptEvent::Closed => stop!(cx),
            _ => {}
        }
    }

    fn gone(&mut self, _: CX![], down: Down) {
        self.conns.remove(&down.id);
    }
}

/// The self-test's clients: 8 threads, each 50 messages in two pieces,
/// then a half-close and a read to end-of-stream. Returns what failed.
fn selftest(addr: SocketAddr, remote: Remote) -> Result<(), String> {
    let workers: Vec<_> = (0..8u8)
        .map(|t| {
            thread::spawn(move || -> Result<usize, String> {
                let err = |what: &str, e: std::io::Error| format!("client {t}: {what}: {e}");
                let mut s = TcpStream::connect(addr).map_err(|e| err("connect", e))?;
                let timeout = Some(Duration::from_secs(10));
                s.set_read_timeout(timeout).map_err(|e| err("timeout", e))?;
                s.set_write_timeout(timeout)
                    .map_err(|e| err("timeout", e))?;
                s.set_nodelay(true).map_err(|e| err("nodelay", e))?;
                let mut bytes = 0;
                for m in 0..50usize {
                    let msg: Vec<u8> = (0..100 + m * 37).map(|i| (i * 7 + m) as u8).collect();
                    let (a, b) = msg.split_at(msg.len() / 2);
                    s.write_all(a).map_err(|e| err("write", e))?;
                    s.write_all(b).map_err(|e| err("write", e))?;
                    let mut back = vec![0; msg.len()];
                    s.read_exact(&mut back).map_err(|e| err("read", e))?;
                    if back != msg {
                        return Err(format!("client {t}: message {m} came back changed"));
                    }
                    bytes += msg.len();
                }
                s.shutdown(Shutdown::Write)
                    .map_err(|e| err("shutdown", e))?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest)
                    .map_err(|e| err("read to EOF", e))?;
                if !rest.is_empty() {
                    return Err(format!("client {t}: {} unexpected bytes", rest.len()));
                }
                Ok(bytes)
            })
        })
        .collect();
    let mut result = Ok(0);
    for w in workers {
        let r = w
            .join()
            .unwrap_or_else(|_| Err("a client panicked".to_string()));
        result = match (result, r) {
            (Ok(a), Ok(b)) => Ok(a + b),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    let _ = remote.stop();
    let bytes = result?;
    println!("selftest: 8 clients, 400 messages, {bytes} bytes echoed");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let test = args.iter().any(|a| a == "--selftest");
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or(if test {
            "127.0.0.1:0"
        } else {
            "127.0.0.1:7007"
        });

    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("binding {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("echo server on {local}");

    let mut rt = match Runtime::builder().handle_signals(true).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let clients = test.then(|| {
        let remote = rt.remote();
        thread::spawn(move || selftest(local, remote))
    });
    let exit = rt.run(|rt| {
        let dev = device!(rt.core(), Listener::init(listener));
        rt.keep(dev);
    });
    match exit {
        Ok(exit) => println!("stopped: {exit:?}"),
        Err(e) => {
            eprintln!("the loop failed: {e}");
            std::process::exit(1);
        }
    }
    if let Some(clients) = clients {
        match clients.join() {
            Ok(Ok(())) => println!("selftest passed"),
            Ok(Err(e)) => {
                eprintln!("selftest failed: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("selftest panicked");
                std::process::exit(1);
            }
        }
    }
}
