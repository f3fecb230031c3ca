//! The peer of `http_hello` for load comparisons: the same HTTP/1.1 app
//! with hyper 1.x on tokio's current-thread runtime (one thread, a
//! `LocalSet`, hyper-util's `TokioIo`), the counter in a `Cell` where
//! stakplane's is an actor's state. Used by `benches/http/run.sh`; not
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

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("serving on http://{}/", listener.local_addr()?);
    let served = Rc::new(Cell::new(0u64));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req| respond(served.clone(), req));
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

async fn respond(
    served: Rc<Cell<u64>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    served.set(served.get() + 1);
    let text = format!(
        "Hello from a stakplane actor! You asked for {}; request #{}\n",
        req.uri().path(),
        served.get()
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}
