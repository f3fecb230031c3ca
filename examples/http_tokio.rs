//! The peer of `http_hello` for load comparisons: the same HTTP/1.1 app
//! with hyper 1.x on tokio's current-thread runtime (one thread, a
//! `LocalSet`, hyper-util's `TokioIo`), the counter in a task that answers
//! over channels as stakplane's actor does (or, with `HELLO_APP=cell`, in a
//! `Cell`). Used by `benches/http/run.sh`; not
//! part of stakplane.
//!
//! ```text
//! PORT=3001 cargo run --release --example http_tokio
//! ```

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(SocketAddr::from(([127, 0, 0, 1], port))))
}

/// How the app keeps its count: `actor` (the default) is the same app as
/// stakplane's `http_hello`, a task that owns the count and answers each
/// request over a channel (tokio's actor idiom: an `mpsc` in, a
/// `oneshot` back); `cell` bumps a `Cell` in the handler, less work than
/// either app does (`HELLO_APP=cell`).
#[derive(Clone)]
enum Greeter {
    Actor(mpsc::Sender<(String, oneshot::Sender<String>)>),
    Cell(Rc<Cell<u64>>),
}

impl Greeter {
    fn start() -> Greeter {
        if std::env::var("HELLO_APP").as_deref() == Ok("cell") {
            return Greeter::Cell(Rc::new(Cell::new(0)));
        }
        let (tx, mut rx) = mpsc::channel::<(String, oneshot::Sender<String>)>(1024);
        tokio::task::spawn_local(async move {
            let mut served = 0u64;
            while let Some((path, reply)) = rx.recv().await {
                served += 1;
                let _ = reply.send(greeting(&path, served));
            }
        });
        Greeter::Actor(tx)
    }

    async fn hello(&self, path: &str) -> Option<String> {
        match self {
            Greeter::Cell(served) => {
                served.set(served.get() + 1);
                Some(greeting(path, served.get()))
            }
            Greeter::Actor(tx) => {
                let (reply, answer) = oneshot::channel();
                tx.send((path.to_owned(), reply)).await.ok()?;
                answer.await.ok()
            }
        }
    }
}

fn greeting(path: &str, n: u64) -> String {
    format!("Hello from a stakplane actor! You asked for {path}; request #{n}\n")
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("serving on http://{}/", listener.local_addr()?);
    let greeter = Greeter::start();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let greeter = greeter.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req| respond(greeter.clone(), req));
            // The same settings as stakplane's `ServeConfig` default: a
            // header-read timeout of 30 s.
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

/// One request: ask the greeter, answer 200 with its text, or 503 if it
/// is gone, as `http_hello` does.
async fn respond(
    greeter: Greeter,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, text) = match greeter.hello(req.uri().path()).await {
        Some(text) => (StatusCode::OK, text),
        None => (StatusCode::SERVICE_UNAVAILABLE, "gone\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}
