//! `stakplane::http` (feature `hyper`): hyper's HTTP/1.1 and HTTP/2
//! servers and clients through the library's adapters, its timer on
//! virtual time, and `serve`'s header-read timeout, graceful shutdown,
//! connection limit and rate-limited logs (rules 150–155 in
//! `src/http.rs`). Each test is named after the rule it proves.
//!
//! Server and clients run as tasks of one runtime on virtual time, over
//! real loopback sockets: a timeout of 10 s passes as soon as the loop
//! is idle, and every time a test reads is exact. Nothing sleeps.
#![cfg(feature = "hyper")]

use futures::AsyncRead;
use futures_io::AsyncWrite;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use stakplane::http::{
    serve, HyperIo, LocalExecutor, Protocol, ServeConfig, ServeStats, Server, ServerState, Timer,
};
use stakplane::net::{TcpListener, TcpStream};
use stakplane::rt::{Exit, Io, Runtime};
use stakplane::task::{now, sleep, spawn_local, timeout};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------
// The application every test serves

/// `len` bytes of a pattern that shows a byte lost, doubled or moved.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

const BIG: usize = 1 << 20;

/// The test app: `!Send` (it counts requests in an `Rc<Cell>`).
/// `/echo` answers the request body; `/big` 1 MiB of [`pattern`];
/// `/slow/<secs>` waits that long first; anything else `hello <path> #n`.
async fn app(
    count: Rc<Cell<u64>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    count.set(count.get() + 1);
    let n = count.get();
    let path = req.uri().path().to_string();
    let body = if path == "/echo" {
        req.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    } else if path == "/big" {
        Bytes::from(pattern(BIG))
    } else if let Some(secs) = path.strip_prefix("/slow/") {
        sleep(Duration::from_secs(secs.parse().unwrap_or(1))).await;
        Bytes::from(format!("slow {secs} #{n}"))
    } else {
        Bytes::from(format!("hello {path} #{n}"))
    };
    Ok(Response::new(Full::new(body)))
}

/// A virtual-time runtime, its start, and a server on a free loopback
/// port with `config`.
fn start(config: ServeConfig) -> (Runtime, Instant, Server) {
    let t0 = Instant::now();
    let mut rt = Runtime::builder().virtual_time(t0).build().unwrap();
    let listener = TcpListener::bind(&rt.io(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let count = Rc::new(Cell::new(0));
    let service = service_fn(move |req| app(count.clone(), req));
    let server = serve(rt.core(), listener, config, service).unwrap();
    (rt, t0, server)
}

/// Virtual time since `t0`, as seen by the task that asks.
fn at(t0: Instant) -> Duration {
    now() - t0
}

// ---------------------------------------------------------------------
// Raw HTTP/1.1 on a stakplane stream, to see exactly what the server
// sends and when it closes

/// A raw client connection.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response as it came on the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Raw {
    async fn connect(io: &Io, addr: SocketAddr) -> io::Result<Raw> {
        let stream = TcpStream::connect(io, addr).await?;
        Ok(Raw {
            stream,
            buf: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        self.response().await.expect("a response")
    }

    /// Reads more; false at end-of-stream (a reset counts as one).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// The next response, or `None` if the server closed first.
    async fn response(&mut self) -> Option<Resp> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "closed mid-response: {:?}", self.buf);
                return None;
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let start = head_end + 4;
        while self.buf.len() < start + len {
            assert!(self.fill().await, "closed mid-body");
        }
        let body = self.buf[start..start + len].to_vec();
        self.buf.drain(..start + len);
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    /// Waits for the server to close; true if nothing else came.
    async fn closed(&mut self) -> bool {
        while self.fill().await {}
        self.buf.is_empty()
    }
}

/// A futures-io stream that is only `AsyncRead + AsyncWrite` (no
/// `AsyncBufRead`, no vectored writes): what `HyperIo` must be content
/// with.
struct OnlyIo(TcpStream);

impl AsyncRead for OnlyIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OnlyIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

// ---------------------------------------------------------------------
// Rule 150: hyper over any futures-io stream, h1 and h2

#[test]
fn h1_server_and_client_through_the_library_adapters() {
    let (mut rt, _t0, server) = start(ServeConfig::new());
    let (io, addr) = (rt.io(), server.local_addr());
    let stats = rt
        .block_on(async move {
            // hyper's own HTTP/1.1 client over a stream with no
            // `AsyncBufRead` and no vectored writes.
            let stream = TcpStream::connect(&io, addr).await.unwrap();
            let only = HyperIo::new(OnlyIo(stream)).vectored(false);
            let (mut send, conn) = hyper::client::conn::http1::handshake(only).await.unwrap();
            let driver = spawn_local(conn);
            // Keep-alive: many requests on one connection, in order.
            for i in 1..=5 {
                let req = Request::get(format!("/n/{i}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, format!("hello /n/{i} #{i}"));
            }
            // Large bodies both ways, over many reads: every byte once,
            // in order.
            let sent = pattern(BIG + 12_345);
            let req = Request::post("/echo")
                .body(Full::new(Bytes::from(sent.clone())))
                .unwrap();
            let (mut send2, conn2) = {
                let stream = TcpStream::connect(&io, addr).await.unwrap();
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(HyperIo::new(stream))
                    .await
                    .unwrap()
            };
            let driver2 = spawn_local(conn2);
            let echoed = send2.send_request(req).await.unwrap();
            let echoed = echoed.into_body().collect().await.unwrap().to_bytes();
            assert!(echoed == sent[..], "the echo differs from what was sent");
            let req = Request::get("/big").body(Empty::<Bytes>::new()).unwrap();
            let big = send.send_request(req).await.unwrap();
            let big = big.into_body().collect().await.unwrap().to_bytes();
            assert!(big == pattern(BIG)[..], "the big body differs");
            drop((send, send2));
            driver.await.unwrap().unwrap();
            driver2.await.unwrap().unwrap();
            server.stats()
        })
        .unwrap();
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.errors, 0, "{stats:?}");
}

#[test]
fn h2_server_and_client_through_the_library_adapters() {
    let (mut rt, t0, server) = start(ServeConfig::new().protocol(Protocol::Http2));
    let (io, addr) = (rt.io(), server.local_addr());
    let exec = LocalExecutor::new(rt.core()).unwrap();
    let timer = Timer::new(rt.core()).unwrap();
    let stats = rt
        .block_on(async move {
            let stream = TcpStream::connect(&io, addr).await.unwrap();
            let (send, conn) = hyper::client::conn::http2::Builder::new(exec)
                .timer(timer)
                .handshake::<_, Full<Bytes>>(HyperIo::new(stream))
                .await
                .unwrap();
            let driver = spawn_local(conn);
            // Ten streams at once on one connection, each a task on the
            // server (through its `LocalExecutor`): the slow ones finish
            // at their own times, the quick ones at once.
            let mut streams = Vec::new();
            for i in 0..10u64 {
                let mut send = send.clone();
                streams.push(spawn_local(async move {
                    let path = if i % 2 == 0 {
                        format!("/slow/{}", i / 2 + 1)
                    } else {
                        format!("/q/{i}")
                    };
                    let req = Request::get(path).body(Full::new(Bytes::new())).unwrap();
                    let resp = send.send_request(req).await.unwrap();
                    assert_eq!(resp.version(), hyper::Version::HTTP_2);
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    (i, String::from_utf8(body.to_vec()).unwrap(), now())
                }));
            }
            let mut answers = Vec::new();
            for s in streams {
                answers.push(s.await.unwrap());
            }
            for (i, body, when) in &answers {
                if i % 2 == 0 {
                    let secs = i / 2 + 1;
                    assert!(body.starts_with(&format!("slow {secs} #")), "{body}");
                    assert_eq!(when.duration_since(t0), Duration::from_secs(secs));
                } else {
                    assert!(body.starts_with(&format!("hello /q/{i} #")), "{body}");
                    assert_eq!(*when, t0, "a quick stream waits for no slow one");
                }
            }
            // Large bodies both ways.
            let sent = pattern(BIG + 777);
            let mut send = send;
            let req = Request::post("/echo")
                .body(Full::new(Bytes::from(sent.clone())))
                .unwrap();
            let echoed = send.send_request(req).await.unwrap();
            let echoed = echoed.into_body().collect().await.unwrap().to_bytes();
            assert!(echoed == sent[..], "the echo differs from what was sent");
            drop(send);
            driver.await.unwrap().unwrap();
            server.stats()
        })
        .unwrap();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.errors, 0, "{stats:?}");
}
