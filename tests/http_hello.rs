//! `examples/http_hello.rs` (hyper 1.x on the stakplane loop, answers from
//! an actor via `ask!`) driven by a hand-written HTTP/1.1 client on
//! another thread. The runtime runs on the test thread; the client stops
//! it with `Remote::stop` when done (also when it panics), and every
//! client read times out after 10 s, so a bug fails instead of hanging.
#![cfg(feature = "hyper")]

mod common;
#[path = "../examples/http_hello.rs"]
mod http_hello;

use stakplane::rt::{Exit, Remote, Runtime};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops the runtime when the client is done, panicking or not.
struct StopOnDrop(Remote);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// Serves on an ephemeral loopback port, runs `client(addr)` on another
/// thread, and returns how `run` ended. The client's panic is re-raised
/// here.
fn with_server(client: impl FnOnce(SocketAddr) + Send + 'static) -> Exit {
    let mut rt = Runtime::new().unwrap();
    let addr = http_hello::serve(&mut rt, "127.0.0.1:0".parse().unwrap()).unwrap();
    let stop = StopOnDrop(rt.remote());
    let th = thread::spawn(move || {
        let _stop = stop;
        client(addr);
    });
    let exit = rt.run(|_| {}).unwrap();
    if let Err(p) = th.join() {
        std::panic::resume_unwind(p);
    }
    assert_eq!(rt.sockets(), 0, "the shutdown closed every socket");
    exit
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    BufReader::new(s)
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        common::header(&self.headers, name)
    }

    /// The request number in the greeter's answer.
    fn count(&self) -> u64 {
        let (_, n) = self
            .body
            .trim_end()
            .rsplit_once('#')
            .unwrap_or_else(|| panic!("no count in {:?}", self.body));
        n.parse().unwrap()
    }
}

/// Reads one response: status line, headers, `Content-Length` body.
fn read_response(conn: &mut BufReader<TcpStream>) -> Response {
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let mut parts = line.trim_end().splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
    let status = parts.next().unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').expect("a header line");
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = common::header(&headers, "content-length")
        .expect("a content-length")
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    conn.read_exact(&mut body).unwrap();
    Response {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn get(conn: &mut BufReader<TcpStream>, path: &str) -> Response {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    read_response(conn)
}

#[test]
fn http_get_is_answered_by_the_actor_via_ask() {
    let exit = with_server(|addr| {
        let mut conn = connect(addr);
        let resp = get(&mut conn, "/world");
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.body,
            "Hello from a stakplane actor! You asked for /world; request #1\n"
        );
        assert_eq!(
            resp.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    });
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
}

#[test]
fn http_keep_alive_serves_many_requests_on_one_connection() {
    let exit = with_server(|addr| {
        let mut conn = connect(addr);
        let mut counts = Vec::new();
        for i in 0..5 {
            let resp = get(&mut conn, &format!("/req/{i}"));
            assert_eq!(resp.status, 200);
            assert!(resp.body.contains(&format!("/req/{i};")), "{resp:?}");
            assert_ne!(resp.header("connection"), Some("close"));
            counts.push(resp.count());
        }
        assert_eq!(counts, [1, 2, 3, 4, 5], "one actor counts every request");
        // Pipelined: two requests in one write, two answers in order.
        conn.get_mut()
            .write_all(b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\nGET /p2 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (a, b) = (read_response(&mut conn), read_response(&mut conn));
        assert!(a.body.contains("/p1;") && b.body.contains("/p2;"));
        assert_eq!((a.count(), b.count()), (6, 7));
    });
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
}

#[test]
fn http_malformed_request_gets_400_and_the_server_keeps_serving() {
    let exit = with_server(|addr| {
        let mut bad = connect(addr);
        bad.get_mut().write_all(b"GARBAGE\r\n\r\n").unwrap();
        let resp = read_response(&mut bad);
        assert_eq!(resp.status, 400);
        // hyper closes the connection after a parse error.
        let mut rest = Vec::new();
        assert_eq!(bad.read_to_end(&mut rest).unwrap(), 0);

        let mut bad_header = connect(addr);
        bad_header
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut bad_header).status, 400);

        // The greeter never saw the bad requests: the next one is #1.
        let mut good = connect(addr);
        let resp = get(&mut good, "/after");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.count(), 1);
    });
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
}

#[test]
fn http_concurrent_connections_share_the_actor() {
    let exit = with_server(|addr| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                thread::spawn(move || {
                    let mut conn = connect(addr);
                    (0..10)
                        .map(|_| {
                            let r = get(&mut conn, "/");
                            assert_eq!(r.status, 200);
                            r.count()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=80).collect::<Vec<_>>(), "each count once");
    });
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
}
