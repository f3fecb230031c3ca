//! An HTTP/1.1 server with hyper 1.x on the stakplane loop — no tokio.
//!
//! One thread runs everything: the [`Runtime`] polls the sockets,
//! [`stakplane::http::serve`] accepts connections in a task, and each
//! connection is a task in which hyper's `serve_connection` drives a
//! [`stakplane::net::TcpStream`]. The answer to every request comes from
//! an actor: the `Greeter` device counts the requests it has answered,
//! and the service `ask!`s it for each reply.
//!
//! `stakplane::http` gives hyper what it asks of a runtime:
//! [`HyperIo`](stakplane::http::HyperIo) adapts the futures-io stream to
//! hyper's I/O traits (in safe code), [`Timer`](stakplane::http::Timer)
//! puts hyper's timeouts on stakker time (here the header-read timeout:
//! a client that sends half a request and waits is disconnected after
//! 30 s), and `serve` adds a connection limit and rate-limited logs of
//! failed connections (through `tracing`).
//!
//! Everything here is `!Send`, and that is fine: hyper's server asks for
//! `Send` on neither the connection nor the service.
//!
//! ```text
//! cargo run --example http_hello                  # serve on 127.0.0.1:3000 (or PORT) until Ctrl-C
//! cargo run --example http_hello -- --selftest    # serve on a free port, run clients, exit 0/1
//! ```
//!
//! While it serves, `curl http://127.0.0.1:3000/world`. Ctrl-C stops it
//! in order: the greeter is shut down, then the connection tasks are
//! dropped and the sockets closed. The self-test runs scripted HTTP/1.1
//! clients on another thread (GETs, keep-alive and pipelining on one
//! connection, a malformed request that must get 400 while the server
//! keeps serving), then stops the runtime; every client read and write
//! times out after 10 s, so it fails instead of hanging.
//! `tests/http_hello.rs` drives the same server with a hand-written HTTP
//! client.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use stakplane::http::{serve as serve_http, HttpError, ServeConfig};
use stakplane::net::TcpListener;
use stakplane::prelude::*;
use stakplane::rt::{Exit, Remote, Runtime, StopKind};
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

#[path = "common/until_signal.rs"]
mod until_signal;

/// The actor behind the service: it answers each greeting with the number
/// of requests served so far.
pub struct Greeter {
    served: u64,
}

impl Greeter {
    fn init(_: CX![]) -> Option<Self> {
        Some(Greeter { served: 0 })
    }

    /// Greets `path`; replies through `ret`, so async code can `ask!`.
    fn hello(&mut self, _: CX![], path: String, ret: Ret<String>) {
        self.served += 1;
        ret.ret(format!(
            "Hello from a stakplane actor! You asked for {path}; request #{}\n",
            self.served
        ));
    }
}

/// Binds `addr` on `rt`, starts the `Greeter` (kept by the runtime until
/// it stops) and serves HTTP/1.1 on it with hyper. Returns the bound
/// address (port 0 picks a free one). Call it before or inside
/// [`Runtime::run`].
///
/// # Errors
/// The bind or registration error; nothing is started then.
pub fn serve(rt: &mut Runtime, addr: SocketAddr) -> Result<SocketAddr, HttpError> {
    let listener = TcpListener::bind(&rt.io(), addr)?;
    let greeter = device!(rt.core(), Greeter::init());
    let actor = greeter.actor().clone();
    let service = service_fn(move |req| respond(actor.clone(), req));
    let server = serve_http(rt.core(), listener, ServeConfig::new(), service)?;
    rt.keep(greeter);
    Ok(server.local_addr())
}

/// One request: ask the greeter, answer 200 with its text, or 503 if it
/// is gone (e.g. the runtime is shutting down).
async fn respond(
    greeter: Actor<Greeter>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let (status, text) = match stakplane::ask!([greeter], hello(path)).await {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
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
// The self-test

/// Client reads and writes give up after this: the self-test never hangs.
#[allow(dead_code)] // the test includes this file as a module
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops the runtime when the client script is done, failing or not.
#[allow(dead_code)] // the test includes this file as a module
struct StopOnDrop(Remote);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// Serves on a free loopback port, runs the client script against it on
/// another thread, stops, and checks how the runtime ended. The runtime
/// runs on the calling thread. Returns what was checked.
///
/// # Errors
/// What went wrong or did not match.
#[allow(dead_code)] // the test includes this file as a module
fn selftest() -> Result<String, String> {
    let mut rt = Runtime::builder()
        .handle_signals(true)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let addr = serve(&mut rt, SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("binding: {e}"))?;
    println!("selftest: serving on http://{addr}/");
    let stop = StopOnDrop(rt.remote());
    let script = thread::spawn(move || {
        let _stop = stop;
        run_clients(addr)
    });
    let exit = rt
        .run(|_| {})
        .map_err(|e| format!("the loop failed: {e}"))?;
    let done = script
        .join()
        .map_err(|_| "the client script panicked".to_string())??;
    if exit != Exit::Stopped(Some(StopKind::Stopped)) {
        return Err(format!("the runtime ended with {exit:?}"));
    }
    if rt.sockets() != 0 {
        return Err(format!("{} sockets left open", rt.sockets()));
    }
    Ok(done)
}

/// The client script. The greeter numbers the requests it answers, so
/// each answer says whether a request reached it once, in order, and
/// whether a malformed one reached it at all.
#[allow(dead_code)] // the test includes this file as a module
fn run_clients(addr: SocketAddr) -> Result<String, String> {
    // Plain GETs, each on a connection of its own.
    for (n, path) in (1..).zip(["/world", "/", "/a/b?c=d"]) {
        let mut c = Conn::open(addr)?;
        let r = c.get(path)?;
        // The greeter sees the path, without the query.
        let plain_path = path.split('?').next().unwrap_or(path);
        r.expect(200, &hello(plain_path, n))?;
        if r.header("content-type") != Some("text/plain; charset=utf-8") {
            return Err(format!(
                "GET {path}: content type {:?}",
                r.header("content-type")
            ));
        }
    }
    // Keep-alive: five requests one after the other on one connection,
    // then two pipelined in one write, answered in order.
    let mut c = Conn::open(addr)?;
    for n in 4..9 {
        let path = format!("/keep/{n}");
        let r = c.get(&path)?;
        r.expect(200, &hello(&path, n))?;
        if r.header("connection") == Some("close") {
            return Err(format!(
                "GET {path}: the server closes a keep-alive connection"
            ));
        }
    }
    c.send(b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\nGET /p2 HTTP/1.1\r\nHost: t\r\n\r\n")?;
    for (path, n) in [("/p1", 9), ("/p2", 10)] {
        let r = c
            .read_response()
            .map_err(|e| format!("pipelined GET {path}: {e}"))?;
        r.expect(200, &hello(path, n))?;
    }
    // A malformed request: 400, and hyper closes that connection.
    let mut bad = Conn::open(addr)?;
    bad.send(b"GARBAGE\r\n\r\n")?;
    let r = bad
        .read_response()
        .map_err(|e| format!("malformed request: {e}"))?;
    if r.status != 400 {
        return Err(format!(
            "a malformed request got {} instead of 400",
            r.status
        ));
    }
    bad.expect_end()
        .map_err(|e| format!("after the 400: {e}"))?;
    // The server keeps serving, on the keep-alive connection and on a new
    // one, and the greeter never saw the bad request.
    c.get("/after")?.expect(200, &hello("/after", 11))?;
    Conn::open(addr)?
        .get("/last")?
        .expect(200, &hello("/last", 12))?;
    Ok(
        "12 requests answered by the greeter in order (3 plain GETs, 5 on one \
        keep-alive connection, 2 pipelined, 2 after the malformed one); the \
        malformed request got 400"
            .to_string(),
    )
}

/// The greeter's answer to request `n`, for `path`.
#[allow(dead_code)] // the test includes this file as a module
fn hello(path: &str, n: u64) -> String {
    format!("Hello from a stakplane actor! You asked for {path}; request #{n}\n")
}

/// An I/O error of the client, saying so when it is the timeout.
#[allow(dead_code)] // the test includes this file as a module
fn err(what: &str, e: std::io::Error) -> String {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    match e.kind() {
        WouldBlock | TimedOut => format!("{what}: nothing within {IO_TIMEOUT:?}"),
        _ => format!("{what}: {e}"),
    }
}

/// A blocking HTTP/1.1 client connection with timeouts.
#[allow(dead_code)] // the test includes this file as a module
struct Conn(BufReader<TcpStream>);

/// A response: its status, headers and body.
#[allow(dead_code)] // the test includes this file as a module
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

#[allow(dead_code)] // the test includes this file as a module
impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn, String> {
        let s = TcpStream::connect(addr).map_err(|e| err("connect", e))?;
        s.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| err("timeout", e))?;
        s.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| err("timeout", e))?;
        Ok(Conn(BufReader::new(s)))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0
            .get_mut()
            .write_all(bytes)
            .map_err(|e| err("write", e))
    }

    fn get(&mut self, path: &str) -> Result<Resp, String> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: selftest\r\n\r\n").as_bytes())?;
        self.read_response().map_err(|e| format!("GET {path}: {e}"))
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.0.read_line(&mut line) {
            Ok(0) => Err("the server closed the connection".to_string()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(err("read", e)),
        }
    }

    /// Reads one response: status line, headers, `Content-Length` body.
    fn read_response(&mut self) -> Result<Resp, String> {
        let status_line = self.line()?;
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: String::new(),
        };
        let len: usize = resp
            .header("content-length")
            .and_then(|n| n.parse().ok())
            .ok_or("no content-length")?;
        let mut body = vec![0; len];
        self.0
            .read_exact(&mut body)
            .map_err(|e| err("read body", e))?;
        resp.body = String::from_utf8(body).map_err(|e| format!("body: {e}"))?;
        Ok(resp)
    }

    /// The server closed the connection: end-of-stream, nothing more.
    fn expect_end(&mut self) -> Result<(), String> {
        let mut rest = Vec::new();
        match self.0.read_to_end(&mut rest) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("{n} unexpected bytes before the end")),
            Err(e) => Err(err("read to the end", e)),
        }
    }
}

#[allow(dead_code)] // the test includes this file as a module
impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Status `status` and body `body`, or what came instead.
    fn expect(&self, status: u16, body: &str) -> Result<(), String> {
        if self.status != status || self.body != body {
            return Err(format!(
                "got {} {:?}, wanted {status} {body:?}",
                self.status, self.body
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------
// main

/// Serves on 127.0.0.1 (port `PORT`, default 3000) until SIGINT or
/// SIGTERM.
#[allow(dead_code)] // the test includes this file as a module
fn serve_forever() -> Result<(), Box<dyn std::error::Error>> {
    until_signal::serve_until_signal("http_hello", 3000, serve, |addr| {
        format!("listening on http://{addr}/")
    })
}

#[allow(dead_code)] // the test includes this file as a module
fn main() {
    if !std::env::args().skip(1).any(|a| a == "--selftest") {
        if let Err(e) = serve_forever() {
            eprintln!("http_hello: {e}");
            std::process::exit(1);
        }
        return;
    }
    match selftest() {
        Ok(done) => println!("selftest: {done}; passed"),
        Err(e) => {
            eprintln!("selftest failed: {e}");
            std::process::exit(1);
        }
    }
}
