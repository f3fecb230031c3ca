//! Rule 66 with SIGPIPE not ignored: a write to a reset peer fails with
//! an error and raises no SIGPIPE, whatever the process's disposition
//! (Rust's `main` ignores SIGPIPE, but a program that restores the
//! default, or a library loaded by a C host, is killed by one).
//!
//! Its own test binary: it installs a process-wide SIGPIPE handler
//! (through signal-hook's safe API) that counts instead of killing.

use futures::io::{AsyncReadExt, AsyncWriteExt};
use stakplane::net::TcpStream;
use stakplane::rt::Runtime;
use std::io::{ErrorKind, IoSlice, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Writes with `write` or with `write_vectored` to a peer that reset the
/// connection; the errors, and whether a SIGPIPE was raised.
fn write_to_a_reset_peer(vectored: bool) -> (Vec<ErrorKind>, bool) {
    let raised = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGPIPE, raised.clone())
        .expect("a SIGPIPE handler");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    peer.set_nodelay(true).unwrap();
    let mut rt = Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .unwrap();
    let io = rt.io();
    let errors = rt
        .block_on(async move {
            let mut s = TcpStream::from_std(&io, ours).unwrap();
            s.set_nodelay(true).unwrap();
            // Unread by the peer: its close sends a reset.
            s.write_all(b"unread").await.unwrap();
            peer.write_all(b"!").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            drop(peer);
            let mut errors = Vec::new();
            for _ in 0..2 {
                let res = if vectored {
                    s.write_vectored(&[IoSlice::new(b"a"), IoSlice::new(b"b")])
                        .await
                } else {
                    s.write(b"ab").await
                };
                errors.push(res.expect_err("the peer is gone").kind());
            }
            errors
        })
        .unwrap();
    (errors, raised.load(Ordering::SeqCst))
}

#[test]
fn a_write_to_a_reset_peer_raises_no_sigpipe_vectored_or_not() {
    for vectored in [false, true] {
        let (errors, raised) = write_to_a_reset_peer(vectored);
        assert_eq!(
            errors,
            [ErrorKind::ConnectionReset, ErrorKind::BrokenPipe],
            "vectored: {vectored}"
        );
        assert!(!raised, "vectored: {vectored}: a SIGPIPE was raised");
    }
}
