//! [`serve_until_signal`]: a server example's plain run, from the shell
//! until Ctrl-C.
//!
//! Shared by `tcp_echo_async` and `http_hello`, each of which includes it
//! with `#[path = "common/until_signal.rs"] mod until_signal;` (not an
//! example by itself: cargo builds `examples/*.rs` and
//! `examples/*/main.rs` only).

use stakplane::rt::Runtime;
use std::error::Error;
use std::net::SocketAddr;

/// Serves with `serve` on 127.0.0.1, port `PORT` from the environment
/// (or `default_port`), on a runtime that handles SIGINT and SIGTERM,
/// until one of them stops it. Prints `name: ` and what `announce` says
/// of the bound address, then how the run ended.
///
/// # Errors
/// A `PORT` that is not a port number, the runtime's or `serve`'s error.
pub fn serve_until_signal<E: Error + 'static>(
    name: &str,
    default_port: u16,
    serve: impl FnOnce(&mut Runtime, SocketAddr) -> Result<SocketAddr, E>,
    announce: impl FnOnce(SocketAddr) -> String,
) -> Result<(), Box<dyn Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => default_port,
    };
    let mut rt = Runtime::builder().handle_signals(true).build()?;
    let addr = serve(&mut rt, SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("{name}: {} (Ctrl-C to stop)", announce(addr));
    let exit = rt.run(|_| {})?;
    println!("{name}: stopped ({exit:?})");
    Ok(())
}
