//! The TCP transport under faults, on real loopback sockets and the
//! runtime's virtual clock (rules 130–132 in `src/cluster/mod.rs`):
//! simultaneous connects, bad input from a raw client, a peer that is not
//! there yet, backpressure.
#![cfg(feature = "cluster")]

use stakplane::cluster::tcp::{TcpTransport, HANDSHAKE_TIMEOUT, QUEUED_FRAMES};
use stakplane::cluster::{
    Frame, Full, LinkState, NodeId, Secret, Session, Transport, MAX_FRAME, WIRE_VERSION,
};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

fn virtual_rt() -> Runtime {
    Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .expect("runtime")
}

type Got = Rc<RefCell<Vec<Frame>>>;

/// A transport on a free loopback port (or `addr`), started as node
/// incarnation 1; what it delivers, decoded.
fn transport(
    rt: &mut Runtime,
    secret: &Secret,
    addr: Option<SocketAddr>,
) -> (TcpTransport, NodeId, Got) {
    let at = addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr"));
    let (t, addr) = TcpTransport::bind(rt.core(), at, secret.clone()).expect("binds");
    let id = NodeId::new(addr, 1);
    let got: Got = Rc::default();
    let g2 = got.clone();
    t.start(
        id,
        Fwd::new(move |bytes: Vec<u8>| {
            g2.borrow_mut()
                .push(Frame::decode(&bytes, MAX_FRAME).expect("a whole frame"))
        }),
    );
    (t, id, got)
}

fn gossip(n: u8) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Gossip(vec![n])
        .encode_into(&mut out, MAX_FRAME)
        .expect("encodes");
    out
}

fn send(t: &TcpTransport, from: NodeId, to: NodeId, n: u8) -> Result<(), Full> {
    t.send(from.addr, to.addr, gossip(n), false)
}

fn numbers(got: &Got) -> Vec<u8> {
    got.borrow()
        .iter()
        .map(|f| match f {
            Frame::Gossip(v) => v[0],
            other => panic!("not a test frame: {other:?}"),
        })
        .collect()
}

#[test]
fn tcp_simultaneous_connects_converge_on_one_link() {
    let mut rt = virtual_rt();
    let secret = Secret::new([3; 32]);
    let (a, ida, got_a) = transport(&mut rt, &secret, None);
    let (b, idb, got_b) = transport(&mut rt, &secret, None);
    // Both send first, in the same turn: both connect.
    send(&a, ida, idb, 1).expect("room");
    send(&b, idb, ida, 2).expect("room");
    rt.run_for(Duration::from_millis(100)).expect("runs");
    let up = |t: &TcpTransport| -> Vec<(SocketAddr, LinkState)> {
        t.links().iter().map(|l| (l.addr, l.state)).collect()
    };
    assert_eq!(up(&a), [(idb.addr, LinkState::Up)], "one link, up");
    assert_eq!(up(&b), [(ida.addr, LinkState::Up)], "one link, up");
    assert_eq!(
        a.stats().duplicates + b.stats().duplicates,
        2,
        "each dropped one"
    );
    // Frames cross both ways on the link both kept.
    send(&a, ida, idb, 3).expect("room");
    send(&b, idb, ida, 4).expect("room");
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(numbers(&got_b), [1, 3]);
    assert_eq!(numbers(&got_a), [2, 4]);
    assert_eq!(a.sessions(), [idb]);
}

/// Two joined transports; `a`'s frames reach `b`.
fn pair(rt: &mut Runtime) -> (TcpTransport, NodeId, TcpTransport, NodeId, Got) {
    let secret = Secret::new([4; 32]);
    let (a, ida, _) = transport(rt, &secret, None);
    let (b, idb, got_b) = transport(rt, &secret, None);
    send(&a, ida, idb, 0).expect("room");
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(numbers(&got_b), [0]);
    (a, ida, b, idb, got_b)
}

/// A raw client socket, without Nagle's delay (on the virtual clock a
/// write held for the peer's delayed ACK would never go out in time).
fn raw_client(to: SocketAddr) -> TcpStream {
    let client = TcpStream::connect(to).expect("connects");
    client.set_nodelay(true).expect("nodelay");
    client
}

/// Runs `rt` a little while `client` writes, and after.
fn feed(rt: &mut Runtime, client: &mut TcpStream, bytes: &[u8]) {
    client.write_all(bytes).expect("writes");
    rt.run_for(Duration::from_millis(50)).expect("runs");
}

#[test]
fn tcp_garbage_from_a_raw_client_closes_that_connection_only() {
    let mut rt = virtual_rt();
    let (a, ida, b, idb, got_b) = pair(&mut rt);
    let failed = b.stats().failed;
    let mut client = raw_client(idb.addr);
    rt.run_for(Duration::from_millis(10)).expect("runs");
    feed(&mut rt, &mut client, &[0, 40]);
    feed(&mut rt, &mut client, &[0xA5; 40]);
    assert_eq!(b.stats().failed, failed + 1, "refused, counted");
    // The refused connection is closed: the client reads its end.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0; 64];
    assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)), "closed");
    // The other session goes on.
    send(&a, ida, idb, 9).expect("room");
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(numbers(&got_b), [0, 9]);
}

#[test]
fn tcp_a_client_gone_mid_handshake_leaves_nothing_behind() {
    let mut rt = virtual_rt();
    let (a, ida, b, idb, got_b) = pair(&mut rt);
    let mut client = raw_client(idb.addr);
    rt.run_for(Duration::from_millis(10)).expect("runs");
    // Half of a Noise message, then the client goes.
    feed(&mut rt, &mut client, &[0, 48, 1, 2, 3]);
    drop(client);
    rt.run_for(Duration::from_millis(50)).expect("runs");
    assert_eq!(b.links().len(), 1, "only the peer's link");
    send(&a, ida, idb, 7).expect("room");
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(numbers(&got_b), [0, 7]);
}

/// A raw client that completes the handshake with `session` (the right
/// secret); returns the socket, non-blocking.
fn handshake(rt: &mut Runtime, to: SocketAddr, mut session: Session) -> (TcpStream, Session) {
    let mut client = raw_client(to);
    client.set_nonblocking(true).expect("non-blocking");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !session.is_established() {
        assert!(Instant::now() < deadline, "handshake never finished");
        let out = session.take_output();
        if !out.is_empty() {
            client.write_all(&out).expect("writes");
        }
        rt.run_for(Duration::from_millis(5)).expect("runs");
        let mut buf = [0; 4096];
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if session.receive(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    let out = session.take_output();
    if !out.is_empty() {
        client.write_all(&out).expect("writes");
    }
    (client, session)
}

#[test]
fn tcp_an_authenticated_peer_announcing_an_oversized_frame_is_refused() {
    let mut rt = virtual_rt();
    let (a, ida, b, idb, got_b) = pair(&mut rt);
    let failed = b.stats().failed;
    let me = NodeId::new("127.0.0.1:9".parse().expect("addr"), 1);
    let session = Session::initiator(me, &Secret::new([4; 32])).expect("noise");
    let (mut client, mut session) = handshake(&mut rt, idb.addr, session);
    assert!(session.is_established(), "the right secret gets a session");
    // A length prefix past the limit, encrypted as the session would.
    let len = u32::try_from(MAX_FRAME + 1).expect("fits").to_be_bytes();
    session.send_encoded(&len).expect("encrypts");
    feed(&mut rt, &mut client, &session.take_output());
    assert_eq!(b.stats().failed, failed + 1, "refused, counted");
    send(&a, ida, idb, 5).expect("room");
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(numbers(&got_b), [0, 5], "the other session goes on");
}

#[test]
fn tcp_a_peer_with_another_wire_version_is_refused() {
    let mut rt = virtual_rt();
    let (_a, _ida, b, idb, _got_b) = pair(&mut rt);
    let failed = b.stats().failed;
    let me = NodeId::new("127.0.0.1:9".parse().expect("addr"), 1);
    let session =
        Session::with_version(me, &Secret::new([4; 32]), true, WIRE_VERSION + 1).expect("noise");
    let (_client, _session) = handshake(&mut rt, idb.addr, session);
    rt.run_for(Duration::from_millis(50)).expect("runs");
    assert_eq!(b.stats().failed, failed + 1, "refused after authentication");
    assert_eq!(b.sessions().len(), 1, "only the peer's session");
}

#[test]
fn tcp_frames_for_a_peer_not_there_yet_wait_bounded_and_arrive_in_order() {
    let mut rt = virtual_rt();
    let secret = Secret::new([6; 32]);
    let (a, ida, _) = transport(&mut rt, &secret, None);
    // A free port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let idb = NodeId::new(port, 1);
    let mut sent = 0u32;
    let full = loop {
        match send(&a, ida, idb, (sent % 250) as u8) {
            Ok(()) => sent += 1,
            Err(Full(bytes)) => break bytes,
        }
    };
    assert_eq!(
        sent as usize, QUEUED_FRAMES,
        "bounded, and the refused frame given back"
    );
    assert_eq!(full, gossip((sent % 250) as u8));
    let room = Rc::new(Cell::new(0));
    let r2 = room.clone();
    a.when_room(idb.addr, Box::new(move || r2.set(r2.get() + 1)));
    // Connection attempts fail and back off; nothing is lost meanwhile.
    rt.run_for(Duration::from_secs(1)).expect("runs");
    assert!(a.stats().reconnects >= 2, "{:?}", a.stats());
    assert_eq!(room.get(), 0, "still full");
    assert_eq!(a.links()[0].state, LinkState::Connecting);
    // The peer comes up on that port: everything arrives, in order.
    let (_b, _, got_b) = transport(&mut rt, &secret, Some(port));
    rt.run_for(Duration::from_secs(10)).expect("runs");
    let want: Vec<u8> = (0..sent).map(|i| (i % 250) as u8).collect();
    assert_eq!(numbers(&got_b), want);
    assert_eq!(room.get(), 1, "told once that there is room");
    let link = &a.links()[0];
    assert_eq!((link.state, link.queued), (LinkState::Up, 0));
    assert_eq!(link.frames_out, u64::from(sent));
    assert!(link.rtt.is_some(), "a round trip measured");
}

#[test]
fn tcp_a_client_that_never_authenticates_is_closed_after_the_timeout() {
    let mut rt = virtual_rt();
    let (_a, _ida, b, idb, _got_b) = pair(&mut rt);
    let failed = b.stats().failed;
    let mut client = raw_client(idb.addr);
    rt.run_for(HANDSHAKE_TIMEOUT / 2).expect("runs");
    assert_eq!(b.stats().failed, failed, "still within its time");
    rt.run_for(HANDSHAKE_TIMEOUT).expect("runs");
    assert_eq!(b.stats().failed, failed + 1, "closed, counted");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0; 64];
    assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)), "closed");
    assert_eq!(b.sessions().len(), 1, "the peer's session goes on");
}
