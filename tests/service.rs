//! `examples/service.rs`: its self-test (chat clients, a leave, a
//! misbehaving client, `GET /stats`) run as a test, plus the pieces that
//! need no sockets: the line framing across every split of a stream, the
//! line bound, and the `/stats` text round trip.
//!
//! The self-test runs the runtime on the test thread and the clients on
//! others; every client read and write times out after 10 s, and the
//! script stops the runtime when it ends (also by a panic), so a bug
//! fails the test instead of hanging it.
#![cfg(feature = "hyper")]

#[path = "../examples/service.rs"]
mod service;

use service::{ClientStats, LineBuf, SessionError, Stats, MAX_LINE};
use stakplane::rt::{Exit, Remote, Runtime, StopKind};
use stakplane::{Cause, DeviceRef};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn selftest_counts() {
    let s = service::selftest().unwrap_or_else(|e| panic!("selftest: {e}"));
    // Three clients, four lines each; each line reaches the two others.
    assert_eq!(s.lines_sent, 12);
    assert_eq!(s.lines_received, 24);
    let st = &s.stats;
    assert_eq!(st.joined, 4, "ann, bob, cy and dee joined");
    assert_eq!(st.left, 2, "cy left, dee was disconnected");
    assert_eq!(st.connected, 2, "ann and bob were still there");
    assert_eq!(st.faults, 1, "dee's over-long line, and nothing else");
    assert_eq!(st.too_slow, 0);
    assert_eq!(st.lines, 12, "dee's line was never a line");
    assert_eq!(st.relayed, 24);
    assert_eq!(st.clients.len(), 2);
    assert!(st.clients.iter().all(|c| c.lines == 4), "{st}");
    assert!(st.clients[0].id < st.clients[1].id, "sorted by id");
    assert_eq!(s.exit, Exit::Stopped(Some(StopKind::Stopped)));
    assert_eq!(s.sockets_left, 0, "the shutdown closed every socket");
}

/// Stops the runtime when the client thread ends, even by a panic.
struct StopOnDrop(Remote);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// The status of `GET path`.
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let mut s = connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{resp:?}"))
}

/// The failure story of the example's docs: a fault of the Hub ends its
/// sessions (their owner is gone: the client reads end-of-stream), fails
/// the chat port through its link (new clients are refused), and makes
/// `/stats` answer 503; the runtime and the HTTP side go on.
#[test]
fn a_hub_fault_ends_the_sessions_and_closes_the_chat_port() {
    let mut rt = Runtime::new().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let svc = service::start(&mut rt, any, any).unwrap();
    let ports = svc.ports;
    let (joined_tx, joined_rx) = mpsc::channel();
    let stop = StopOnDrop(rt.remote());
    let client = thread::spawn(move || {
        let _stop = stop;
        assert_eq!(http_status(ports.http, "/stats"), 200);
        assert_eq!(http_status(ports.http, "/elsewhere"), 404);
        let mut chat = BufReader::new(connect(ports.chat).unwrap());
        let mut welcome = String::new();
        chat.read_line(&mut welcome).unwrap();
        assert!(welcome.starts_with("* welcome"), "{welcome:?}");
        joined_tx.send(()).unwrap();

        // The test thread kills the Hub now.
        let mut rest = String::new();
        chat.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "the session ended with the Hub, saying nothing");
        // The port closed in the same run of the queue, but a connect may
        // still reach the OS backlog first; the close then resets it.
        if let Ok(mut late) = connect(ports.chat) {
            let mut got = Vec::new();
            match late.read_to_end(&mut got) {
                Ok(_) => assert!(got.is_empty(), "no welcome from a dead Hub"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            }
        }
        assert_eq!(http_status(ports.http, "/stats"), 503);
    });
    while joined_rx.try_recv().is_err() && !client.is_finished() {
        rt.step(Some(Duration::from_millis(10))).unwrap();
    }
    svc.hub.kill("killed by the test").unwrap();
    let exit = rt.run(|_| {}).unwrap();
    if let Err(panic) = client.join() {
        std::panic::resume_unwind(panic);
    }
    assert!(matches!(svc.hub.cause(), Some(Cause::Killed(_))));
    assert_eq!(exit, Exit::Stopped(Some(StopKind::Stopped)));
    assert_eq!(rt.sockets(), 0, "the shutdown closed every socket");
}

/// Feeds `pieces` to a fresh `LineBuf`; all lines, then the unterminated
/// rest.
fn frame<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (Vec<String>, Option<String>) {
    let mut buf = LineBuf::default();
    let mut lines = Vec::new();
    for p in pieces {
        lines.extend(buf.push(p).expect("no line is too long"));
    }
    (lines, buf.finish())
}

#[test]
fn framing_does_not_depend_on_how_reads_split_the_stream() {
    // An empty line, `\r\n`, a character cut by some splits (é is two
    // bytes), a byte that is not UTF-8, an unterminated tail.
    let stream: &[u8] = b"hello\r\n\nsecond line\ncaf\xc3\xa9 \xff\ntail";
    let want = (
        vec![
            "hello".to_string(),
            String::new(),
            "second line".to_string(),
            "caf\u{e9} \u{fffd}".to_string(),
        ],
        Some("tail".to_string()),
    );
    assert_eq!(frame([stream]), want, "one read");
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(frame([a, b]), want, "split at {cut}");
    }
    for a in 0..=stream.len() {
        for b in a..=stream.len() {
            let pieces = [&stream[..a], &stream[a..b], &stream[b..]];
            assert_eq!(frame(pieces), want, "split at {a} and {b}");
        }
    }
    assert_eq!(frame(stream.chunks(1)), want, "byte by byte");
}

#[test]
fn a_line_over_the_bound_is_an_error_however_it_arrives() {
    let long = vec![b'x'; MAX_LINE + 1];
    // Without its end, in one read or byte by byte.
    assert!(matches!(
        LineBuf::default().push(&long),
        Err(SessionError::LineTooLong { limit: MAX_LINE })
    ));
    let mut buf = LineBuf::default();
    let first_error = long.iter().position(|b| buf.push(&[*b]).is_err());
    assert_eq!(first_error, Some(MAX_LINE), "fails at the first byte over");
    // Complete, in one read.
    let mut line = long.clone();
    line.push(b'\n');
    assert!(LineBuf::default().push(&line).is_err());
    // Exactly at the bound is fine, and so is its `\r\n`.
    let mut ok = vec![b'y'; MAX_LINE];
    ok.extend_from_slice(b"\r\n");
    let lines = LineBuf::default().push(&ok).expect("at the bound");
    assert_eq!(lines, ["y".repeat(MAX_LINE)]);
}

#[test]
fn stats_text_reads_back() {
    let stats = Stats {
        connected: 2,
        joined: 5,
        left: 3,
        faults: 2,
        too_slow: 1,
        lines: 40,
        relayed: 77,
        clients: vec![
            ClientStats {
                id: 7,
                peer: "127.0.0.1:4000".parse().unwrap(),
                lines: 12,
            },
            ClientStats {
                id: 9,
                peer: "[::1]:4001".parse().unwrap(),
                lines: 0,
            },
        ],
    };
    assert_eq!(Stats::parse(&stats.to_string()), Ok(stats));
    assert!(Stats::parse("joined many\n").is_err());
    assert!(Stats::parse("visitors 3\n").is_err());
}
