//! An HTTP/1.1 server with hyper 1.x on the stakplane loop — no tokio.
//!
//! One thread runs everything: the [`Runtime`] polls the sockets, a task
//! accepts connections, and each connection is a task in which hyper's
//! `serve_connection` drives a [`stakplane::net::TcpStream`]. The answer
//! to every request comes from an actor: the `Greeter` device counts the
//! requests it has answered, and the service `ask!`s it for each reply.
//!
//! hyper 1.x reads and writes through its own `hyper::rt::Read` / `Write`
//! traits; [`hyper_io::HyperIo`] adapts our `futures-io` stream to them, in safe
//! code (bytes are copied out of the stream's read buffer with
//! `ReadBufCursor::put_slice`).
//!
//! Everything here is `!Send`, and that is fine: hyper's HTTP/1 server
//! asks for `Send` on neither the connection nor the service. What it
//! cannot use is our timers: a hyper `Timer` must be `Send + Sync` and so
//! must its sleeps, and stakplane's `sleep` is a `!Send` future on the
//! actor thread. So the header read timeout (which needs a `Timer`) is
//! switched off explicitly.
//!
//! Run it with `cargo run --example http_hello` (port 3000, or `PORT`),
//! then `curl http://127.0.0.1:3000/world`. Ctrl-C stops it in order: the
//! greeter is shut down, then the connection tasks are dropped and the
//! sockets closed. `tests/http_hello.rs` drives the same server with a
//! hand-written HTTP client.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{header, Request, Response, StatusCode};
use stakplane::net::{NetError, TcpListener};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::convert::Infallible;
use std::net::SocketAddr;

// The hyper I/O adapter, shared with `examples/service.rs`.
#[path = "common/hyper_io.rs"]
mod hyper_io;
use hyper_io::serve_http1;

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
/// it stops) and spawns the accept loop. Returns the bound address (port
/// 0 picks a free one). Call it before or inside [`Runtime::run`].
///
/// # Errors
/// The bind or registration error; nothing is started then.
pub fn serve(rt: &mut Runtime, addr: SocketAddr) -> Result<SocketAddr, NetError> {
    let listener = TcpListener::bind(&rt.io(), addr)?;
    let local = listener.local_addr()?;
    let greeter = device!(rt.core(), Greeter::init());
    let actor = greeter.actor().clone();
    rt.keep(greeter);
    let spawner = stakplane::task::spawner(rt.core());
    spawner.spawn_detached(serve_http1(listener, "http_hello", move |req| {
        respond(actor.clone(), req)
    }));
    Ok(local)
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

#[allow(dead_code)] // the test includes this file as a module
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let mut rt = Runtime::builder().handle_signals(true).build()?;
    let addr = serve(&mut rt, SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("http_hello: listening on http://{addr}/ (Ctrl-C to stop)");
    let exit = rt.run(|_| {})?;
    println!("http_hello: stopped ({exit:?})");
    Ok(())
}
