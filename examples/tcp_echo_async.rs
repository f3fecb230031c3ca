//! A TCP echo server in the async style: one task per connection, each
//! reading from a [`stakplane::net::TcpStream`] and writing the bytes
//! back, all on the actor thread.
//!
//! The accept side is the listener's [`incoming`](TcpListener::incoming)
//! stream; an accept error (e.g. out of descriptors) is printed and the
//! listener backs off before the next try, while established connections
//! keep being served.
//!
//! * `cargo run --example tcp_echo_async` serves on 127.0.0.1:7000 (or
//!   `PORT`) until Ctrl-C (SIGINT/SIGTERM: orderly shutdown).
//! * `cargo run --example tcp_echo_async -- --selftest` serves on a free
//!   port, runs a few client threads against it (every byte checked),
//!   stops the runtime from another thread and exits 0 if all went well.

use futures::StreamExt;
use stakplane::net::{NetError, TcpListener, TcpStream};
use stakplane::rt::{Exit, Runtime};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

#[path = "common/until_signal.rs"]
mod until_signal;

/// Binds `addr` on `rt` and spawns the accept loop. Returns the bound
/// address (port 0 picks a free one).
///
/// # Errors
/// The bind or registration error.
pub fn serve(rt: &mut Runtime, addr: SocketAddr) -> Result<SocketAddr, NetError> {
    let listener = TcpListener::bind(&rt.io(), addr)?;
    let local = listener.local_addr()?;
    let spawner = stakplane::task::spawner(rt.core());
    let tasks = spawner.clone();
    spawner.spawn_detached(async move {
        let mut incoming = listener.incoming();
        // Ends when the listener closes (the runtime's shutdown).
        while let Some(conn) = incoming.next().await {
            match conn {
                Ok(stream) => {
                    tasks.spawn_detached(async move {
                        if let Err(e) = echo(stream).await {
                            eprintln!("tcp_echo_async: connection: {e}");
                        }
                    });
                }
                Err(e) => eprintln!("tcp_echo_async: accept: {e}"),
            }
        }
    });
    Ok(local)
}

/// Echoes until the peer closes its side, then closes ours. Returns the
/// number of bytes echoed.
///
/// # Errors
/// The I/O error that ended the connection.
pub async fn echo(mut stream: TcpStream) -> io::Result<u64> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            // The peer is done sending: send our FIN after the last echo.
            futures::AsyncWriteExt::close(&mut stream).await?;
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// One self-test client: `msgs` messages of varied sizes, each written
/// in two pieces and checked byte for byte.
fn client(addr: SocketAddr, id: usize, msgs: usize) -> io::Result<u64> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let mut total = 0;
    for m in 0..msgs {
        let len = 1 + (id * 97 + m * 131) % 6000;
        let msg: Vec<u8> = (0..len).map(|i| (id + m * 7 + i) as u8).collect();
        let (a, b) = msg.split_at(len / 2);
        s.write_all(a)?;
        s.write_all(b)?;
        let mut back = vec![0; len];
        s.read_exact(&mut back)?;
        if back != msg {
            return Err(io::Error::other(format!(
                "client {id}: message {m} differs"
            )));
        }
        total += len as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(io::Error::other(format!("client {id}: extra bytes")));
    }
    Ok(total)
}

fn selftest() -> Result<(), Box<dyn std::error::Error>> {
    const CLIENTS: usize = 8;
    const MSGS: usize = 50;
    let mut rt = Runtime::new()?;
    let addr = serve(&mut rt, SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let remote = rt.remote();
    let driver = thread::spawn(move || {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| thread::spawn(move || client(addr, id, MSGS)))
            .collect();
        let results: Vec<_> = clients
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap_or_else(|_| Err(io::Error::other("panicked")))
            })
            .collect();
        let _ = remote.stop();
        results
    });
    let exit = rt.run(|_| {})?;
    let results = driver.join().map_err(|_| "the client driver panicked")?;
    let mut bytes = 0;
    for r in results {
        bytes += r?;
    }
    if !matches!(exit, Exit::Stopped(_)) {
        return Err(format!("the runtime ended with {exit:?}").into());
    }
    println!("tcp_echo_async: selftest ok: {CLIENTS} clients, {MSGS} messages each, {bytes} bytes echoed");
    Ok(())
}

fn main() -> ExitCode {
    let res = if std::env::args().any(|a| a == "--selftest") {
        selftest()
    } else {
        serve_forever()
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp_echo_async: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves on 127.0.0.1 (port `PORT`, default 7000) until SIGINT or
/// SIGTERM.
fn serve_forever() -> Result<(), Box<dyn std::error::Error>> {
    until_signal::serve_until_signal("tcp_echo_async", 7000, serve, |addr| {
        format!("echoing on {addr}")
    })
}
