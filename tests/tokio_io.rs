//! `net::TcpStream` under a crate that speaks only `tokio::io`: tokio-util's
//! codec, framing lines both ways over loopback, on stakplane's runtime
//! with no tokio runtime anywhere (feature `tokio-io`; rule 74a in
//! `src/net.rs`).
#![cfg(feature = "tokio-io")]

use futures::{SinkExt, StreamExt};
use stakplane::net::{TcpListener, TcpStream};
use stakplane::rt::Runtime;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::codec::{Framed, LinesCodec};

#[test]
fn tokio_io_a_tokio_util_codec_frames_lines_both_ways_with_no_tokio_runtime() {
    let mut rt = Runtime::builder().build().expect("a runtime");
    let io = rt.io();
    let mut listener =
        TcpListener::bind(&io, SocketAddr::from(([127, 0, 0, 1], 0))).expect("a listener");
    let addr = listener.local_addr().expect("its address");
    let out = rt.block_on(async move {
        let server = async move {
            let (conn, _) = listener.accept().await.expect("accepted");
            let mut lines = Framed::new(conn, LinesCodec::new_with_max_length(64));
            let mut seen = Vec::new();
            while let Some(line) = lines.next().await {
                let line = line.expect("a line within the limit");
                lines.send(line.to_uppercase()).await.expect("sent");
                seen.push(line);
            }
            // End of stream from the client, which still reads.
            lines
                .send("bye")
                .await
                .expect("sent after the client's end");
            seen
        };
        let client = async move {
            let conn = TcpStream::connect(&io, addr).await.expect("connected");
            let mut lines = Framed::new(conn, LinesCodec::new());
            let mut replies = Vec::new();
            for word in ["one", "two", "three"] {
                lines.send(word).await.expect("sent");
                replies.push(lines.next().await.expect("a reply").expect("a line"));
            }
            // tokio's shutdown: the server reads end-of-stream, and can
            // still answer.
            SinkExt::<&str>::close(&mut lines).await.expect("shut down");
            while let Some(line) = lines.next().await {
                replies.push(line.expect("a line"));
            }
            replies
        };
        // Bounded, so that a broken stream fails instead of hanging.
        stakplane::task::timeout(Duration::from_secs(10), async {
            futures::join!(server, client)
        })
        .await
    });
    let (seen, replies) = out.expect("block_on returns").expect("done within 10 s");
    assert_eq!(seen, ["one", "two", "three"]);
    assert_eq!(replies, ["ONE", "TWO", "THREE", "bye"]);
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "no tokio runtime was needed"
    );
}
