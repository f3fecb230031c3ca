//! The TCP transport under faults, on real loopback sockets and the
//! runtime's virtual clock (rules 130–134 and 136 in
//! `src/cluster/tcp/mod.rs`): simultaneous connects, bad input from raw
//! clients, a peer not there yet or gone, bounded queues, link status.
//! Real sockets are polled in bounded steps; nothing sleeps.
#![cfg(feature = "cluster")]

#[path = "common/tcp.rs"]
mod tcp;

use stakplane::cluster::tcp::{
    ConnError, BACKOFF_MAX, CONTROL_FRAMES, ECHO_INTERVAL, HANDSHAKE_TIMEOUT, PENDING_HANDSHAKES,
    PENDING_HANDSHAKES_PER_SOURCE, QUEUED_BYTES, QUEUED_FRAMES, SILENCE_TIMEOUT,
};
use stakplane::cluster::{
    Credentials, Full, Identity, LinkState, NodeId, Pins, Secret, Session, SessionError, Transport,
    WireError, MAX_FRAME, WIRE_VERSION,
};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::cell::{Cell, RefCell};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;
use tcp::{
    closed_by_server, feed, frame, handshake, on_link_up_queued, raw_client, run_until, side,
    side_as, side_with, sized_frame, virtual_rt, Side, Warnings,
};

/// A loopback port nobody listens on (yet).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Two transports with a link up, `a`'s frame 0 delivered to `b`.
fn pair(rt: &mut Runtime, secret: &Secret) -> (Side, Side) {
    let a = side(rt, secret, None);
    let b = side(rt, secret, None);
    a.send(&b, 0, false).expect("room");
    assert!(
        run_until(rt, Duration::from_secs(1), || b.numbers() == [0]),
        "the pair's link comes up"
    );
    assert_eq!(
        b.senders(),
        [a.id.addr],
        "from the address a authenticated with"
    );
    (a, b)
}

/// `a`'s frame `n` still reaches `b`: the pair's session goes on.
fn still_carries(rt: &mut Runtime, a: &Side, b: &Side, n: u32) {
    a.send(b, n, false).expect("room");
    assert!(
        run_until(rt, Duration::from_secs(1), || b.numbers().last()
            == Some(&n)),
        "the other session goes on: {:?}",
        b.numbers()
    );
}

// Rule 130 ----------------------------------------------------------------

#[test]
fn tcp_simultaneous_connects_converge_on_one_link_and_lose_nothing() {
    let secret = Secret::new([3; 32]);
    for round in 0..8 {
        let mut rt = virtual_rt();
        let a = side(&mut rt, &secret, None);
        let b = side(&mut rt, &secret, None);
        // Both queue a burst in the same turn, so both connect at once,
        // and more frames while the handshakes cross.
        let n = 1500;
        for i in 0..n {
            a.send(&b, i, false).expect("room");
            b.send(&a, i, false).expect("room");
        }
        for step in 0..10 {
            rt.run_for(Duration::from_micros(200)).expect("runs");
            a.send(&b, n + step, false).expect("room");
            b.send(&a, n + step, false).expect("room");
        }
        let want: Vec<u32> = (0..n + 10).collect();
        assert!(
            run_until(&mut rt, Duration::from_secs(2), || {
                a.numbers().len() >= want.len() && b.numbers().len() >= want.len()
            }),
            "round {round}: a got {}, b got {}; {:?} {:?}",
            a.numbers().len(),
            b.numbers().len(),
            a.t.stats(),
            b.t.stats()
        );
        assert_eq!(a.numbers(), want, "round {round}: all, in order");
        assert_eq!(b.numbers(), want, "round {round}: all, in order");
        // One link each, up, to the other...
        for (me, other) in [(&a, &b), (&b, &a)] {
            let links = me.t.links();
            assert_eq!(links.len(), 1, "round {round}: {links:?}");
            assert_eq!(
                (links[0].addr, links[0].state, links[0].node),
                (other.id.addr, LinkState::Up, Some(other.id))
            );
            assert_eq!(
                me.t.stats().sessions,
                1,
                "round {round}: one session came up"
            );
            assert_eq!(me.t.sessions(), [other.id]);
        }
        // ... and the same connection seen from both ends.
        let (a_local, a_remote) = a.t.connection(b.id.addr).expect("a's link");
        let (b_local, b_remote) = b.t.connection(a.id.addr).expect("b's link");
        assert_eq!((a_local, a_remote), (b_remote, b_local), "round {round}");
        assert!(
            a.t.stats().duplicates + b.t.stats().duplicates >= 1,
            "the other link was refused"
        );
    }
}

#[test]
fn tcp_a_newer_incarnation_of_a_peer_replaces_its_old_link() {
    let mut rt = virtual_rt();
    let secret = Secret::new([8; 32]);
    let (a, b1) = pair(&mut rt, &secret);
    // A restarted b: a new incarnation naming b's address, connecting
    // while a still holds the old link.
    let b2 = side_as(
        &mut rt,
        &secret,
        None,
        Some(NodeId::new(b1.id.addr, b1.id.incarnation + 1)),
    );
    b2.send(&a, 7, false).expect("room");
    assert!(run_until(&mut rt, Duration::from_secs(1), || a.numbers() == [7]));
    // a keeps the newer one: what it sends to b's address goes there.
    a.send(&b1, 8, false).expect("room");
    assert!(
        run_until(&mut rt, Duration::from_secs(1), || b2.numbers() == [8]),
        "{:?}",
        a.t.stats()
    );
    assert_eq!(b1.numbers(), [0], "nothing more on the old link");
    assert_eq!(a.t.links()[0].node, Some(b2.id));
    assert_eq!(a.t.stats().duplicates, 1);
}

/// Rule 130, the side that accepted: a second connection from a peer
/// already linked, which loses the choice, is closed at once; frames its
/// peer wrote right behind the last handshake message, in the same read,
/// are dropped with it (a node writes none before this side confirms),
/// and the kept link goes on.
#[test]
fn tcp_frames_behind_the_handshake_of_a_link_closed_as_a_duplicate_are_dropped_with_it() {
    let mut rt = virtual_rt();
    let secret = Secret::new([9; 32]);
    let (a, b) = pair(&mut rt, &secret);
    // Among links of one incarnation both keep the one the lower node
    // opened: a link the higher node opens to the lower loses.
    let (lo, hi) = if a.id < b.id { (&a, &b) } else { (&b, &a) };
    assert_eq!(lo.t.stats().duplicates, 0);
    let session = Session::initiator(hi.id, &secret).expect("noise");
    let (mut client, _) = tcp::handshake_then(&mut rt, lo.id.addr, session, |session| {
        session
            .send(&stakplane::cluster::Frame::Gossip(
                99u32.to_be_bytes().to_vec(),
            ))
            .expect("encrypts");
    });
    rt.run_for(Duration::from_millis(50)).expect("runs");
    assert!(
        closed_by_server(&mut rt, &mut client),
        "the duplicate closed"
    );
    assert_eq!(lo.t.stats().duplicates, 1, "{:?}", lo.t.stats());
    assert_eq!(lo.take_errors(), Vec::<String>::new(), "no bad input");
    still_carries(&mut rt, hi, lo, 5);
    still_carries(&mut rt, lo, hi, 6);
    assert!(!lo.numbers().contains(&99), "dropped: {:?}", lo.numbers());
    let links = lo.t.links();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(
        (links[0].node, links[0].state),
        (Some(hi.id), LinkState::Up)
    );
}

// Rule 131 ----------------------------------------------------------------

/// Runs a bad client against `b` (with a live session from `a`): exactly
/// one connection closed, with an error `want` accepts, counted in
/// `failed`, one warning logged; the client's socket is closed; the
/// session of `a` goes on.
fn bad_input(
    bad: impl FnOnce(&mut Runtime, SocketAddr, &mut Vec<TcpStream>) -> Option<TcpStream>,
    want: impl Fn(&ConnError) -> bool,
) {
    let (warnings, _guard) = Warnings::count();
    let mut rt = virtual_rt();
    let secret = Secret::new([4; 32]);
    let (a, b) = pair(&mut rt, &secret);
    let before = (b.t.stats().failed, warnings.get());
    let mut keep = Vec::new();
    let client = bad(&mut rt, b.id.addr, &mut keep);
    assert!(
        run_until(&mut rt, HANDSHAKE_TIMEOUT, || !b.errors.borrow().is_empty()),
        "the connection is closed with an error"
    );
    rt.run_for(Duration::from_millis(50)).expect("runs");
    {
        let errors = b.errors.borrow();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(want(&errors[0].error), "{:?}", errors[0].error);
        assert!(errors[0].error.is_bad_input());
    }
    assert_eq!(
        (b.t.stats().failed, warnings.get()),
        (before.0 + 1, before.1 + 1),
        "counted and logged once"
    );
    if let Some(mut client) = client {
        assert!(closed_by_server(&mut rt, &mut client), "closed");
    }
    still_carries(&mut rt, &a, &b, 9);
    assert_eq!(b.t.sessions(), [a.id], "only the peer's session");
    assert!(a.errors.borrow().is_empty());
}

#[test]
fn tcp_garbage_from_a_raw_client_closes_that_connection_only() {
    bad_input(
        |rt, to, _| {
            let mut client = raw_client(to);
            feed(rt, &mut client, &[0, 40]);
            feed(rt, &mut client, &[0xA5; 40]);
            Some(client)
        },
        |e| matches!(e, ConnError::Session(SessionError::Noise(_))),
    );
}

/// Rule 131's limit: a client that connects and closes before it sends
/// anything (a health check, a port scan) is no bad input: no warning, not
/// counted in `failed`.
#[test]
fn tcp_a_client_that_closes_before_sending_anything_is_no_bad_input() {
    let (warnings, _guard) = Warnings::count();
    let mut rt = virtual_rt();
    let (a, b) = pair(&mut rt, &Secret::new([4; 32]));
    let before = (b.t.stats().failed, warnings.get());
    drop(raw_client(b.id.addr));
    assert!(run_until(&mut rt, HANDSHAKE_TIMEOUT, || !b
        .errors
        .borrow()
        .is_empty()));
    let errors = b.take_errors();
    assert_eq!(errors, ["Closed"]);
    assert_eq!((b.t.stats().failed, warnings.get()), before);
    still_carries(&mut rt, &a, &b, 9);
}

#[test]
fn tcp_a_client_gone_mid_handshake_is_a_truncated_message() {
    bad_input(
        |rt, to, _| {
            let mut client = raw_client(to);
            // Half of a Noise message, then the client closes its side.
            feed(rt, &mut client, &[0, 48, 1, 2, 3]);
            client.shutdown(Shutdown::Write).expect("shuts down");
            Some(client)
        },
        |e| {
            matches!(
                e,
                ConnError::Session(SessionError::Truncated { pending: 5 })
            )
        },
    );
}

#[test]
fn tcp_an_authenticated_peer_gone_mid_frame_is_a_truncated_frame() {
    bad_input(
        |rt, to, _| {
            let me = NodeId::new("127.0.0.1:9".parse().expect("addr"), 1);
            let session = Session::initiator(me, &Secret::new([4; 32])).expect("noise");
            let (mut client, mut session) = handshake(rt, to, session);
            assert!(session.is_established());
            // A whole Noise message holding 7 bytes of a 100-byte frame.
            session
                .send_encoded(&[0, 0, 0, 100, 1, 2, 3])
                .expect("encrypts");
            feed(rt, &mut client, &session.take_output());
            client.shutdown(Shutdown::Write).expect("shuts down");
            Some(client)
        },
        |e| {
            matches!(
                e,
                ConnError::Session(SessionError::Truncated { pending: 7 })
            )
        },
    );
}

#[test]
fn tcp_a_peer_with_a_wrong_secret_is_refused() {
    // The client finds the mismatch at the second message and gives up,
    // as a node does: the side that accepted is left mid-handshake.
    bad_input(
        |rt, to, _| {
            let me = NodeId::new("127.0.0.1:9".parse().expect("addr"), 1);
            let session = Session::initiator(me, &Secret::new([5; 32])).expect("noise");
            let (client, session) = handshake(rt, to, session);
            assert!(!session.is_established() && session.peer().is_none());
            drop(client);
            None
        },
        |e| matches!(e, ConnError::Session(SessionError::Unfinished)),
    );
}

/// Rules 116 and 131 from the side that connects: a listener without the
/// secret is refused as bad input there too (a typed `Noise` error,
/// counted in `failed`), and what it claimed to be is never taken as the
/// link's node.
#[test]
fn tcp_a_connect_to_a_listener_with_a_wrong_secret_is_refused_as_bad_input() {
    let (warnings, _guard) = Warnings::count();
    let mut rt = virtual_rt();
    let a = side(&mut rt, &Secret::new([1; 32]), None);
    let claimed = NodeId::new("10.9.9.9:9".parse().expect("addr"), 77);
    let to = free_port();
    let d = side_as(&mut rt, &Secret::new([2; 32]), Some(to), Some(claimed));
    a.send_to(to, 1, false).expect("room");
    assert!(run_until(&mut rt, HANDSHAKE_TIMEOUT, || !a
        .errors
        .borrow()
        .is_empty()));
    let node = a.t.links().into_iter().find(|l| l.addr == to);
    assert_eq!(node.and_then(|l| l.node), None, "the claim was not taken");
    let errors = a.take_errors();
    assert!(
        errors.iter().all(|e| e.starts_with("Session(Noise")),
        "{errors:?}"
    );
    assert!(
        a.t.stats().failed >= 1 && warnings.get() >= 1,
        "{:?}",
        a.t.stats()
    );
    assert!(
        d.got.borrow().is_empty(),
        "nothing reached the listener's node"
    );
}

/// Rule 113b on TCP: the node this one connected to must be the node
/// listening at the address dialled. One that authenticates (with the
/// secret) as a node at another address is refused as bad input
/// (`WrongPeer`): it names no link, and nothing is sent to it.
#[test]
fn tcp_a_peer_that_authenticates_as_a_node_at_another_address_is_refused() {
    let (warnings, _guard) = Warnings::count();
    let mut rt = virtual_rt();
    let secret = Secret::new([5; 32]);
    let a = side(&mut rt, &secret, None);
    let claimed = NodeId::new("10.9.9.9:9".parse().expect("addr"), 77);
    let to = free_port();
    let d = side_as(&mut rt, &secret, Some(to), Some(claimed));
    a.send_to(to, 1, false).expect("room");
    assert!(run_until(&mut rt, HANDSHAKE_TIMEOUT, || !a
        .errors
        .borrow()
        .is_empty()));
    let errors = a.take_errors();
    assert!(
        errors.iter().all(|e| e.starts_with("WrongPeer")),
        "{errors:?}"
    );
    let link = a.t.links().into_iter().find(|l| l.addr == to);
    assert_eq!(link.and_then(|l| l.node), None, "the claim was not taken");
    assert!(
        a.t.links().iter().all(|l| l.addr != claimed.addr),
        "no link in the claimed name: {:?}",
        a.t.links()
    );
    assert!(a.t.stats().failed >= 1 && warnings.get() >= 1);
    assert!(d.got.borrow().is_empty(), "nothing sent to it");
}

/// Rule 116a over TCP: a node that pins keys admits the peer that proves
/// the key pinned for its address, and refuses, as bad input, a holder of
/// the secret that names that address with another key, and one at an
/// address with no pin, when they connect to it and when it connects to
/// them; the admitted peer's link is untouched.
#[test]
fn tcp_with_pinned_keys_a_peer_naming_an_address_without_its_key_is_refused() {
    let (warnings, _guard) = Warnings::count();
    let mut rt = virtual_rt();
    let secret = Secret::new([5; 32]);
    let (ka, kb) = (
        Identity::generate().expect("keys"),
        Identity::generate().expect("keys"),
    );
    let (at_a, at_b) = (free_port(), free_port());
    let pins: Pins = [(at_a, ka.public_key()), (at_b, kb.public_key())]
        .into_iter()
        .collect();
    let keyed = |k: &Identity, pins: &Pins| {
        Credentials::new(secret.clone())
            .identity(k.clone())
            .pins(pins.clone())
    };
    let a = side_with(&mut rt, keyed(&ka, &pins), Some(at_a), None);
    let b = side_with(&mut rt, keyed(&kb, &pins), Some(at_b), None);
    a.send(&b, 1, false).expect("room");
    assert!(
        run_until(&mut rt, Duration::from_secs(1), || b.numbers() == [1]),
        "the pinned pair's link comes up"
    );
    let before = (b.t.stats().failed, warnings.get());
    // A holder of the secret, in a's name, with its own key; then one at
    // an address nobody pinned.
    let rogue = Identity::generate().expect("keys");
    let creds = Credentials::new(secret.clone()).identity(rogue);
    let in_a_name = side_with(&mut rt, creds.clone(), None, Some(a.id));
    in_a_name.send_to(at_b, 2, false).expect("room");
    let unpinned = side_with(&mut rt, creds, None, None);
    unpinned.send_to(at_b, 3, false).expect("room");
    assert!(run_until(&mut rt, HANDSHAKE_TIMEOUT, || b
        .errors
        .borrow()
        .len()
        >= 2));
    // (Each rogue connects again after its backoff, and is refused again.)
    let refused = {
        let errors = b.errors.borrow();
        assert!(errors.iter().all(|e| e.error.is_bad_input()), "{errors:?}");
        assert!(
            errors.iter().any(|e| matches!(&e.error,
                ConnError::Session(SessionError::WrongKey { peer }) if *peer == a.id)),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| matches!(&e.error,
                ConnError::Session(SessionError::Unpinned { peer }) if *peer == unpinned.id)),
            "{errors:?}"
        );
        u64::try_from(errors.len()).expect("fits")
    };
    assert_eq!(
        (b.t.stats().failed, warnings.get() as u64),
        (before.0 + refused, before.1 as u64 + refused),
        "each counted and logged once"
    );
    assert_eq!(b.numbers(), [1], "nothing taken from either");
    a.send(&b, 4, false).expect("room");
    assert!(
        run_until(&mut rt, Duration::from_secs(1), || b.numbers() == [1, 4]),
        "a's link goes on"
    );
    assert_eq!(b.senders(), [at_a, at_a]);
    // The side that connects checks too: b dials the address pinned for
    // c, where a holder of the secret listens with another key.
    let at_c = free_port();
    let (kc, rogue) = (
        Identity::generate().expect("keys"),
        Identity::generate().expect("keys"),
    );
    let mut with_c = pins.clone();
    with_c.insert(at_c, kc.public_key());
    let b2 = side_with(&mut rt, keyed(&kb, &with_c), None, None);
    let c = side_with(&mut rt, keyed(&rogue, &with_c), Some(at_c), None);
    b2.send_to(at_c, 5, false).expect("room");
    assert!(run_until(&mut rt, HANDSHAKE_TIMEOUT, || !b2
        .errors
        .borrow()
        .is_empty()));
    let errors = b2.errors.borrow();
    assert!(
        matches!(&errors[0].error,
            ConnError::Session(SessionError::WrongKey { peer }) if *peer == c.id)
            && errors[0].error.is_bad_input(),
        "{errors:?}"
    );
    assert!(c.got.borrow().is_empty(), "b2 sent c nothing");
}

/// Rule 116a, pins given while the transport runs: a link whose peer
/// proved a key the new pins refuse is closed at once (nothing more is
/// read from it), told and counted as a refused session; the links they
/// admit go on; the refused peer is refused again when it reconnects,
/// and admitted once its key is pinned again. Pins that would refuse the
/// node itself are refused, and change nothing.
#[test]
fn tcp_pins_set_at_run_time_close_the_links_they_refuse_and_keep_the_others() {
    let mut rt = virtual_rt();
    let secret = Secret::new([6; 32]);
    let keys: Vec<Identity> = (0..3)
        .map(|_| Identity::generate().expect("keys"))
        .collect();
    let at: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    let all: Pins = at
        .iter()
        .zip(&keys)
        .map(|(a, k)| (*a, k.public_key()))
        .collect();
    let sides: Vec<Side> = (0..3)
        .map(|i| {
            let creds = Credentials::new(secret.clone())
                .identity(keys[i].clone())
                .pins(all.clone());
            side_with(&mut rt, creds, Some(at[i]), None)
        })
        .collect();
    let (a, b, c) = (&sides[0], &sides[1], &sides[2]);
    b.send(a, 1, false).expect("room");
    c.send(a, 2, false).expect("room");
    assert!(run_until(&mut rt, Duration::from_secs(1), || a
        .numbers()
        .len()
        == 2));
    // Each link up shows the key its peer proved: what to pin for it.
    let proved: Vec<_> = a.t.links().into_iter().map(|l| (l.addr, l.key)).collect();
    let mut want = vec![
        (at[1], Some(keys[1].public_key())),
        (at[2], Some(keys[2].public_key())),
    ];
    want.sort_by_key(|(addr, _)| *addr);
    assert_eq!(proved, want);
    // A key for a's own address that is not a's: refused, nothing changed.
    let mut not_a = all.clone();
    assert!(not_a.remove(&at[0], &keys[0].public_key()));
    assert!(not_a.insert(at[0], keys[1].public_key()));
    assert!(matches!(
        a.t.set_pins(Some(not_a)),
        Err(stakplane::cluster::NodeError::NotPinned { addr }) if addr == at[0]
    ));
    assert_eq!(a.t.links().len(), 2);
    // b's key revoked at a: its link closed at once.
    let before = a.t.stats().failed;
    let mut without_b = all.clone();
    assert!(without_b.remove(&at[1], &keys[1].public_key()));
    assert_eq!(
        a.t.set_pins(Some(without_b.clone()))
            .expect("a admits itself"),
        1
    );
    assert_eq!(a.t.pins(), Some(without_b));
    let up: Vec<_> =
        a.t.links()
            .into_iter()
            .filter(|l| l.state == LinkState::Up)
            .map(|l| l.node)
            .collect();
    assert_eq!(up, [Some(c.id)]);
    rt.run_for(Duration::from_millis(100)).expect("runs");
    let revoked = a.take_errors();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(revoked[0].contains("Unpinned"), "{revoked:?}");
    assert_eq!(a.t.stats().failed, before + 1, "counted as refused");
    // b, told its link closed, connects again: refused at the handshake.
    b.send(a, 3, false).expect("room");
    assert!(run_until(&mut rt, Duration::from_secs(1), || !a
        .errors
        .borrow()
        .is_empty()));
    let again = a.take_errors();
    assert!(again[0].contains("Unpinned"), "{again:?}");
    still_carries(&mut rt, c, a, 4);
    assert!(
        !a.numbers().contains(&3),
        "nothing from b: {:?}",
        a.numbers()
    );
    // Pinned again: b's next attempt is admitted, and what waited arrives.
    assert_eq!(a.t.set_pins(Some(all.clone())).expect("admits"), 0);
    assert!(
        run_until(&mut rt, BACKOFF_MAX * 2, || a.numbers().contains(&3)),
        "{:?}",
        a.numbers()
    );
    // No pins at all: any holder of the secret, the links kept.
    assert_eq!(a.t.set_pins(None).expect("admits"), 0);
    assert_eq!(a.t.pins(), None);
    let stranger = side(&mut rt, &secret, None);
    stranger.send(a, 5, false).expect("room");
    assert!(run_until(&mut rt, Duration::from_secs(1), || a
        .numbers()
        .contains(&5)));
    assert_eq!(a.t.sessions().len(), 3, "b, c and the stranger");
}

/// Rule 116a, pins given during a handshake: the handshake under way is
/// checked by them, not by those it began with.
#[test]
fn tcp_pins_set_during_a_handshake_check_its_peer() {
    use std::io::{Read, Write};
    let mut rt = virtual_rt();
    let secret = Secret::new([7; 32]);
    let (ka, kc) = (
        Identity::generate().expect("keys"),
        Identity::generate().expect("keys"),
    );
    let (at_a, at_c) = (free_port(), free_port());
    let both: Pins = [(at_a, ka.public_key()), (at_c, kc.public_key())]
        .into_iter()
        .collect();
    let creds = Credentials::new(secret.clone())
        .identity(ka)
        .pins(both.clone());
    let a = side_with(&mut rt, creds, Some(at_a), None);
    // c begins: its first message, in clear, names nobody yet.
    let c_creds = Credentials::new(secret).identity(kc.clone());
    let mut session = Session::initiator_with(NodeId::new(at_c, 1), &c_creds).expect("noise");
    let mut client = raw_client(at_a);
    client.set_nonblocking(true).expect("non-blocking");
    client.write_all(&session.take_output()).expect("writes");
    let mut second = Vec::new();
    assert!(run_until(&mut rt, Duration::from_secs(1), || {
        let mut buf = [0; 4096];
        if let Ok(n) = client.read(&mut buf) {
            second.extend_from_slice(&buf[..n]);
        }
        !second.is_empty()
    }));
    // c's key revoked now, before a has heard whom c claims to be.
    let mut without_c = both;
    assert!(without_c.remove(&at_c, &kc.public_key()));
    assert_eq!(a.t.set_pins(Some(without_c)).expect("admits a"), 0);
    session.receive(&second).expect("a's answer");
    assert!(session.is_established(), "c finishes, proving its key");
    session
        .send(&stakplane::cluster::Frame::Gossip(vec![0, 0, 0, 9]))
        .expect("encrypts");
    client.write_all(&session.take_output()).expect("writes");
    assert!(run_until(&mut rt, Duration::from_secs(1), || !a
        .errors
        .borrow()
        .is_empty()));
    let errors = a.take_errors();
    assert!(errors[0].contains("Unpinned"), "{errors:?}");
    assert!(a.got.borrow().is_empty(), "nothing taken from c");
}

#[test]
fn tcp_a_peer_with_another_wire_version_is_refused() {
    bad_input(
        |rt, to, _| {
            let me = NodeId::new("127.0.0.1:9".parse().expect("addr"), 1);
            let session = Session::with_version(me, &Secret::new([4; 32]), true, WIRE_VERSION + 1)
                .expect("noise");
            let (client, _) = handshake(rt, to, session);
            Some(client)
        },
        |e| {
            matches!(e, ConnError::Session(SessionError::Version { got, want })
                if *got == WIRE_VERSION + 1 && *want == WIRE_VERSION)
        },
    );
}

#[test]
fn tcp_an_authenticated_peer_announcing_an_oversized_frame_is_refused() {
    bad_input(
        |rt, to, _| {
            let me = NodeId::new("127.0.0.1:9".parse().expect("addr"), 1);
            let session = Session::initiator(me, &Secret::new([4; 32])).expect("noise");
            let (mut client, mut session) = handshake(rt, to, session);
            assert!(session.is_established(), "the right secret gets a session");
            // A length prefix past the limit, encrypted as the session would.
            let len = u32::try_from(MAX_FRAME + 1).expect("fits").to_be_bytes();
            session.send_encoded(&len).expect("encrypts");
            feed(rt, &mut client, &session.take_output());
            Some(client)
        },
        |e| {
            matches!(
                e,
                ConnError::Session(SessionError::Wire(WireError::TooLarge { .. }))
            )
        },
    );
}

#[test]
fn tcp_a_client_that_never_authenticates_is_closed_after_the_timeout() {
    bad_input(
        |rt, to, _| {
            let client = raw_client(to);
            rt.run_for(HANDSHAKE_TIMEOUT / 2).expect("runs");
            Some(client)
        },
        |e| matches!(e, ConnError::Timeout),
    );
}

#[test]
fn tcp_connections_past_the_pending_handshakes_bound_are_closed_at_once() {
    bad_input(
        |rt, to, silent| {
            // They stay open, saying nothing (their timeout is not reached),
            // from as many addresses as the bound per source asks.
            for i in 0..PENDING_HANDSHAKES {
                let from = u8::try_from(i / PENDING_HANDSHAKES_PER_SOURCE).expect("few sources");
                silent.push(client_from([127, 0, 1, from], to));
                rt.run_for(Duration::from_millis(1)).expect("runs");
            }
            let one_more = client_from([127, 0, 2, 1], to);
            rt.run_for(Duration::from_millis(10)).expect("runs");
            Some(one_more)
        },
        |e| matches!(e, ConnError::TooManyHandshakes),
    );
}

/// A client socket connected to `to` from the loopback address `from`
/// (any of 127.0.0.0/8 is this host on Linux).
fn client_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    sock.bind(&SocketAddr::from((from, 0)).into())
        .expect("binds a loopback address");
    sock.connect(&to.into()).expect("connects");
    sock.into()
}

/// Rule 131: one address that floods the listener with connections that
/// never authenticate holds a bounded share of the handshakes: past it,
/// its connections are closed at once, counted and logged, and a node
/// connecting from another address still gets its session at once (it
/// was refused, for as long as the flood was renewed, with the whole
/// bound held by one address).
#[test]
fn tcp_a_flood_of_silent_connections_from_one_address_leaves_room_for_others() {
    let mut rt = virtual_rt();
    let secret = Secret::new([14; 32]);
    let b = side(&mut rt, &secret, None);
    let mut silent = Vec::new();
    for _ in 0..PENDING_HANDSHAKES {
        silent.push(client_from([127, 0, 0, 2], b.id.addr));
        rt.run_for(Duration::from_millis(1)).expect("runs");
    }
    rt.run_for(Duration::from_millis(10)).expect("runs");
    // A node at another address (its connections come from 127.0.0.1).
    let a = side(&mut rt, &secret, None);
    a.send(&b, 0, false).expect("room");
    assert!(
        run_until(&mut rt, Duration::from_secs(1), || b.numbers() == [0]),
        "the node gets its session while the flood holds: {:?}, {:?}",
        b.t.stats(),
        a.t.stats()
    );
    let errors = b.take_errors();
    let refused = PENDING_HANDSHAKES - PENDING_HANDSHAKES_PER_SOURCE;
    assert_eq!(errors.len(), refused, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.starts_with("TooManyHandshakesFrom")),
        "{errors:?}"
    );
    assert_eq!(b.t.stats().failed, refused as u64);
    drop(silent);
}

// Rule 132 ----------------------------------------------------------------

#[test]
fn tcp_frames_for_a_peer_not_there_yet_wait_and_it_is_retried_with_a_doubling_backoff() {
    let mut rt = virtual_rt();
    let secret = Secret::new([6; 32]);
    let a = side(&mut rt, &secret, None);
    let port = free_port();
    for i in 0..100 {
        a.send_to(port, i, false).expect("room");
    }
    // Refused at 0, retried at 50, 150, 350, 750 ms (then 1550).
    rt.run_for(Duration::from_millis(1000)).expect("runs");
    assert_eq!(a.t.stats().reconnects, 4, "{:?}", a.t.stats());
    // Doubling up to BACKOFF_MAX: 1550, 3150, 6350, then every 5 s.
    rt.run_for(Duration::from_secs(60)).expect("runs");
    let tries = a.t.stats().reconnects;
    assert!((15..=18).contains(&tries), "{tries}");
    assert!(a.t.stats().broken >= tries, "each refusal counted");
    let link = &a.t.links()[0];
    assert_eq!((link.state, link.queued), (LinkState::Connecting, 100));
    // The peer comes up on that port: everything arrives, in order, by
    // the next attempt; the backoff starts again from the minimum.
    let b = side(&mut rt, &secret, Some(port));
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || b.numbers().len() == 100));
    assert_eq!(b.numbers(), (0..100).collect::<Vec<_>>());
    assert!(a.errors.borrow().iter().all(|f| !f.error.is_bad_input()));
    // Up, and an echo answered: the backoff is back at its minimum. Gone
    // once more, the peer is tried again 50 ms after the next refusal,
    // not 5 s.
    rt.run_for(ECHO_INTERVAL * 2).expect("runs");
    assert!(a.t.stats().echoes > 0, "{:?}", a.t.stats());
    drop(b);
    rt.run_for(Duration::from_millis(100)).expect("runs");
    a.send_to(port, 100, false).expect("room");
    let tries = a.t.stats().reconnects;
    rt.run_for(Duration::from_millis(60)).expect("runs");
    assert_eq!(a.t.stats().reconnects, tries + 1);
}

/// Rule 132: a link that comes up and ends before it has carried a
/// round trip (a peer that authenticates and drops at once, a crash
/// loop) does not bring the backoff back to its minimum: that peer is
/// not dialled every 50 ms for good (it was, review finding).
#[test]
fn tcp_a_peer_that_drops_each_link_at_once_is_retried_with_the_backoff_it_had() {
    let mut rt = virtual_rt();
    let secret = Secret::new([12; 32]);
    let a = side(&mut rt, &secret, None);
    let port = free_port();
    a.send_to(port, 0, false).expect("room");
    // Refused again and again: the backoff reaches its bound.
    rt.run_for(Duration::from_secs(30)).expect("runs");
    let b = side(&mut rt, &secret, Some(port));
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || b.numbers().len() == 1));
    // Up, and gone before any echo: no round trip on the link.
    assert_eq!(a.t.stats().echoes, 0, "{:?}", a.t.stats());
    drop(b);
    rt.run_for(Duration::from_millis(100)).expect("runs");
    a.send_to(port, 1, false).expect("room");
    let tries = a.t.stats().reconnects;
    rt.run_for(Duration::from_millis(60)).expect("runs");
    assert_eq!(a.t.stats().reconnects, tries, "not at the minimum");
    rt.run_for(BACKOFF_MAX * 2).expect("runs");
    assert!(a.t.stats().reconnects > tries, "still tried");
}

#[test]
fn tcp_a_peer_that_goes_away_is_unreachable_and_what_waits_arrives_when_it_is_back() {
    let mut rt = virtual_rt();
    let secret = Secret::new([9; 32]);
    let (a, b) = pair(&mut rt, &secret);
    let ups = Rc::new(Cell::new(0));
    let u2 = ups.clone();
    a.t.on_link_up(a.id.addr, Fwd::new(move |_| u2.set(u2.get() + 1)));
    let port = b.id.addr;
    drop(b);
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(a.t.links()[0].state, LinkState::Connecting);
    assert!(a.t.sessions().is_empty());
    for i in 1..=50 {
        a.send_to(port, i, false).expect("room");
    }
    rt.run_for(Duration::from_secs(2)).expect("runs");
    assert!(a.t.stats().reconnects >= 2, "{:?}", a.t.stats());
    assert_eq!(a.t.links()[0].queued, 50, "kept across attempts");
    let b = side(&mut rt, &secret, Some(port));
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || b.numbers().len() == 50));
    assert_eq!(b.numbers(), (1..=50).collect::<Vec<_>>());
    assert_eq!(ups.get(), 1, "the node is told the link is up again");
    assert_eq!(a.t.links()[0].state, LinkState::Up);
}

#[test]
fn tcp_a_peer_declared_down_is_forgotten_and_tried_no_more() {
    let mut rt = virtual_rt();
    let secret = Secret::new([10; 32]);
    let (a, b) = pair(&mut rt, &secret);
    let port = b.id.addr;
    drop(b);
    rt.run_for(Duration::from_millis(100)).expect("runs");
    for i in 1..=50 {
        a.send_to(port, i, false).expect("room");
    }
    rt.run_for(Duration::from_secs(2)).expect("runs");
    assert!(a.t.stats().reconnects >= 2, "{:?}", a.t.stats());
    // Its node declared the peer down: nothing waits, nothing is tried.
    a.t.forget(port);
    let tries = a.t.stats().reconnects;
    rt.run_for(BACKOFF_MAX * 12).expect("runs");
    assert_eq!(a.t.stats().reconnects, tries, "no more attempts");
    assert!(
        a.t.links().iter().all(|l| l.addr != port),
        "no link kept for it: {:?}",
        a.t.links()
    );
    // A new node at that address later: a frame for it starts afresh,
    // and only what was sent after the forget arrives.
    let b = side(&mut rt, &secret, Some(port));
    a.send_to(port, 51, false).expect("room");
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || !b
        .numbers()
        .is_empty()));
    assert_eq!(b.numbers(), [51]);
}

// Rule 133 ----------------------------------------------------------------

#[test]
fn tcp_a_full_data_queue_gives_the_frame_back_and_tells_when_room_once_from_the_queue() {
    let mut rt = virtual_rt();
    let secret = Secret::new([10; 32]);
    let a = side(&mut rt, &secret, None);
    // Bounded in frames: the frame past the bound is given back.
    let port = free_port();
    let mut sent = 0;
    let mut refused = None;
    while sent as usize <= QUEUED_FRAMES {
        match a.send_to(port, sent, false) {
            Ok(()) => sent += 1,
            Err(Full(bytes)) => {
                refused = Some(bytes);
                break;
            }
        }
    }
    assert_eq!(sent as usize, QUEUED_FRAMES);
    assert_eq!(refused, Some(frame(sent)), "given back");
    // Bounded in bytes, for another peer.
    let big = 600 << 10;
    let port2 = free_port();
    let mut fit = 0;
    while fit < 100
        && a.t
            .send(a.id.addr, port2, sized_frame(fit, big), false)
            .is_ok()
    {
        fit += 1;
    }
    assert_eq!(
        fit as usize,
        QUEUED_BYTES / sized_frame(0, big).len(),
        "{fit}"
    );
    // That queue has room for more frames, but not for the one refused:
    // who waits is told only when that one fits.
    let big_told = Rc::new(Cell::new(0));
    let b2 = big_told.clone();
    a.t.when_room(port2, Box::new(move || b2.set(b2.get() + 1)));
    // when_room is never called inside the call, even with room.
    let told = Rc::new(RefCell::new(Vec::new()));
    let t2 = told.clone();
    a.t.when_room(free_port(), Box::new(move || t2.borrow_mut().push("free")));
    for who in ["first", "second"] {
        let t2 = told.clone();
        a.t.when_room(port, Box::new(move || t2.borrow_mut().push(who)));
    }
    assert!(told.borrow().is_empty(), "not called inside when_room");
    rt.run_for(Duration::from_millis(1)).expect("runs");
    assert_eq!(*told.borrow(), ["free"], "from the queue, soon");
    rt.run_for(Duration::from_secs(1)).expect("runs");
    assert_eq!(*told.borrow(), ["free"], "still full");
    assert_eq!(big_told.get(), 0, "the refused frame does not fit yet");
    // The peer comes up: all arrive, and each waiting is told once.
    let b = side(&mut rt, &secret, Some(port));
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || b.numbers().len()
        == QUEUED_FRAMES));
    assert_eq!(b.numbers(), (0..sent).collect::<Vec<_>>());
    rt.run_for(Duration::from_secs(1)).expect("runs");
    assert_eq!(*told.borrow(), ["free", "first", "second"]);
    // A frame no peer would take is dropped and counted, never queued.
    let huge = vec![0; MAX_FRAME + 5];
    assert_eq!(a.t.send(a.id.addr, port, huge, false), Ok(()));
    assert_eq!(a.t.stats().oversized, 1);
    assert_eq!(
        a.t.links().iter().map(|l| l.queued).sum::<usize>(),
        fit as usize
    );
    // The second peer comes up: its waiting one is told once.
    let c = side(&mut rt, &secret, Some(port2));
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || c.numbers().len()
        == fit as usize));
    rt.run_for(Duration::from_secs(1)).expect("runs");
    assert_eq!(big_told.get(), 1);
}

// Rule 134 ----------------------------------------------------------------

#[test]
fn tcp_control_frames_go_ahead_of_data_and_past_their_bound_are_refused_and_counted() {
    let mut rt = virtual_rt();
    let secret = Secret::new([11; 32]);
    let a = side(&mut rt, &secret, None);
    let port = free_port();
    // Data first (numbers from 1_000_000), then control frames, some
    // past the control bound.
    for i in 0..10 {
        a.send_to(port, 1_000_000 + i, false).expect("room");
    }
    let extra = 3;
    for i in 0..CONTROL_FRAMES as u32 {
        a.send_to(port, i, true).expect("room for control");
    }
    for i in 0..extra {
        assert!(
            a.send_to(port, CONTROL_FRAMES as u32 + i, true).is_err(),
            "past its bound a control frame is given back"
        );
    }
    assert_eq!(a.t.stats().dropped, u64::from(extra));
    assert_eq!(a.t.links()[0].queued, 10 + CONTROL_FRAMES);
    // More data still queues: refusing control made no room for it, and
    // data never pushes control out.
    a.send_to(port, 1_000_010, false).expect("room");
    let b = side(&mut rt, &secret, Some(port));
    let total = CONTROL_FRAMES + 11;
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || b.numbers().len() == total));
    let mut want: Vec<u32> = (0..CONTROL_FRAMES as u32).collect();
    want.extend(1_000_000..1_000_011);
    assert_eq!(b.numbers(), want, "control first, each kind in order");
}

#[test]
fn tcp_control_frames_sent_on_link_up_go_ahead_of_the_data_queued_during_the_outage() {
    let mut rt = virtual_rt();
    let secret = Secret::new([13; 32]);
    let (a, b) = pair(&mut rt, &secret);
    // `a`'s node, told the link is up (from the queue, as a node is),
    // says again what the outage may have lost: two control frames (an
    // `Unlink` said again, rule 121).
    let ups = Rc::new(Cell::new(0));
    let (u2, t, me) = (ups.clone(), a.t.clone(), a.id.addr);
    on_link_up_queued(&mut rt, &a, move |addr| {
        u2.set(u2.get() + 1);
        for n in [1_000_000, 1_000_001] {
            t.send(me, addr, frame(n), true).expect("room for control");
        }
    });
    let port = b.id.addr;
    drop(b);
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert!(a.t.sessions().is_empty(), "the link is down");
    // Data queued during the outage (a death notice, say).
    for i in 1..=50 {
        a.send_to(port, i, false).expect("room");
    }
    rt.run_for(Duration::from_millis(200)).expect("runs");
    assert_eq!(a.t.links()[0].queued, 50, "kept across attempts");
    assert_eq!(ups.get(), 0);
    let b = side(&mut rt, &secret, Some(port));
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || b.numbers().len() == 52));
    // Nothing more comes: each frame once.
    rt.run_for(Duration::from_millis(500)).expect("runs");
    let mut want = vec![1_000_000, 1_000_001];
    want.extend(1..=50);
    assert_eq!(
        b.numbers(),
        want,
        "the control frames sent on link up first, then the data in order"
    );
    assert_eq!(ups.get(), 1, "the node is told the link is up, once");
}

// Rule 136 ----------------------------------------------------------------

#[test]
fn tcp_links_report_state_node_rtt_traffic_and_queue() {
    let mut rt = virtual_rt();
    let secret = Secret::new([12; 32]);
    let a = side(&mut rt, &secret, None);
    // A listener that accepts nothing: connected, never authenticated.
    let mute = TcpListener::bind("127.0.0.1:0").expect("binds");
    let mute_addr = mute.local_addr().expect("addr");
    a.send_to(mute_addr, 1, false).expect("room");
    // A port nobody listens on, and a peer that will come.
    let port = free_port();
    for i in 0..5 {
        a.send_to(port, i, false).expect("room");
    }
    rt.run_for(Duration::from_millis(20)).expect("runs");
    let states: Vec<_> =
        a.t.links()
            .iter()
            .map(|l| (l.addr, l.state, l.node, l.queued))
            .collect();
    let mut want = vec![
        (mute_addr, LinkState::Authenticating, None, 1),
        (port, LinkState::Connecting, None, 5),
    ];
    want.sort_by_key(|w| w.0);
    assert_eq!(states, want);
    let b = side(&mut rt, &secret, Some(port));
    assert!(run_until(&mut rt, BACKOFF_MAX * 2, || b.numbers().len() == 5));
    let link =
        a.t.links()
            .into_iter()
            .find(|l| l.addr == port)
            .expect("link");
    assert_eq!(
        (link.state, link.node, link.queued, link.frames_out),
        (LinkState::Up, Some(b.id), 0, 5)
    );
    assert!(link.bytes_out > 0 && link.rtt.is_some(), "{link:?}");
    let back = &b.t.links()[0];
    assert_eq!(
        (back.addr, back.state, back.node, back.frames_in),
        (a.id.addr, LinkState::Up, Some(a.id), 5)
    );
    assert!(back.bytes_in > 0 && back.rtt.is_some(), "{back:?}");
    // The round trip is measured again, by echoes, on both sides.
    rt.run_for(ECHO_INTERVAL * 3 + Duration::from_millis(100))
        .expect("runs");
    assert!(a.t.stats().echoes >= 2, "{:?}", a.t.stats());
    assert!(b.t.stats().echoes >= 2, "{:?}", b.t.stats());
    // Echoes are not frames: the node sees none.
    assert_eq!(b.numbers().len(), 5);
    assert_eq!(a.numbers().len(), 0);
    drop(mute);
}

/// Rule 132: a retry armed before `forget` does nothing once the peer is
/// forgotten, even after a fresh send made a new record for its address
/// (it used to start a second chain: the peer was tried twice as often,
/// for good).
#[test]
fn tcp_a_retry_armed_before_forget_does_not_double_the_attempts_after_a_fresh_send() {
    let mut rt = virtual_rt();
    let secret = Secret::new([13; 32]);
    let a = side(&mut rt, &secret, None);
    let port = free_port();
    a.send_to(port, 0, false).expect("room");
    // Refused at 0, retried at 50, 150, 350, 750, 1550, 3150 ms; the
    // next retry is armed for 6350 ms.
    rt.run_for(Duration::from_millis(3200)).expect("runs");
    assert_eq!(a.t.stats().reconnects, 6, "{:?}", a.t.stats());
    // The node declares the peer down, then (a new incarnation is
    // announced there, say) sends to that address again.
    a.t.forget(port);
    a.send_to(port, 1, false).expect("room");
    let before = a.t.stats().reconnects;
    // A fresh start: 50, 150, 350, 750, 1550, 3150, 6350, then every
    // 5 s: 16 attempts in 60 s, as for a first send.
    rt.run_for(Duration::from_secs(60)).expect("runs");
    let tries = a.t.stats().reconnects - before;
    assert!((15..=18).contains(&tries), "attempts in 60 s: {tries}");
}

/// Rule 132: a peer forgotten while its link is up keeps that link, and
/// is gone once the link ends: not retried, not listed.
#[test]
fn tcp_a_peer_forgotten_with_its_link_up_is_gone_once_the_link_ends() {
    let mut rt = virtual_rt();
    let secret = Secret::new([14; 32]);
    let (a, b) = pair(&mut rt, &secret);
    let port = b.id.addr;
    a.t.forget(port);
    drop(b);
    rt.run_for(BACKOFF_MAX * 2).expect("runs");
    assert_eq!(a.t.stats().reconnects, 0, "not tried");
    assert!(
        a.t.links().iter().all(|l| l.addr != port),
        "no link kept for it: {:?}",
        a.t.links()
    );
}

// Rule 137 ----------------------------------------------------------------

/// Rule 137: a peer that authenticates and then sends nothing more, its
/// connection left open (a peer gone without a FIN or a reset), is
/// closed as `Silent` once nothing has come from it for the timeout (the
/// link was kept for as long as TCP kept the connection).
#[test]
fn tcp_a_link_that_hears_nothing_from_its_peer_for_the_timeout_is_closed() {
    let mut rt = virtual_rt();
    let secret = Secret::new([14; 32]);
    let b = side(&mut rt, &secret, None);
    let me = NodeId::new("127.0.0.1:9".parse().expect("addr"), 1);
    let session = Session::initiator(me, &secret).expect("noise");
    let (mut client, session) = handshake(&mut rt, b.id.addr, session);
    assert!(session.is_established());
    assert!(run_until(&mut rt, ECHO_INTERVAL, || b
        .t
        .links()
        .iter()
        .any(|l| l.state == LinkState::Up)));
    // Silent, but short of the timeout: kept.
    rt.run_for(SILENCE_TIMEOUT - ECHO_INTERVAL * 2)
        .expect("runs");
    assert!(b.take_errors().is_empty(), "{:?}", b.t.links());
    assert_eq!(b.t.stats().broken, 0);
    rt.run_for(ECHO_INTERVAL * 3).expect("runs");
    assert_eq!(b.take_errors(), ["Silent"], "{:?}", b.t.stats());
    assert_eq!((b.t.stats().broken, b.t.stats().failed), (1, 0));
    assert!(closed_by_server(&mut rt, &mut client));
}

/// Rule 137 with rule 135: a side that stops reading for many times the
/// silence timeout keeps its link, both ways (it tells its peer it is
/// there), and nothing is lost once it reads again.
#[test]
fn tcp_a_side_that_stops_reading_past_the_silence_timeout_keeps_its_link() {
    let mut rt = virtual_rt();
    let secret = Secret::new([15; 32]);
    let (a, b) = pair(&mut rt, &secret);
    still_carries(&mut rt, &a, &b, 1);
    b.t.pause_reading();
    for n in 2..=10 {
        a.send(&b, n, false).expect("room");
    }
    rt.run_for(SILENCE_TIMEOUT * 4).expect("runs");
    assert!(a.take_errors().is_empty(), "{:?}", a.t.stats());
    assert!(b.take_errors().is_empty(), "{:?}", b.t.stats());
    b.t.resume_reading();
    let arrived = run_until(&mut rt, ECHO_INTERVAL, || b.numbers().last() == Some(&10));
    assert!(arrived, "{:?} {:?}", b.numbers(), b.t.links());
    assert_eq!(b.numbers(), (0..=10).collect::<Vec<_>>());
    // Reading again, b counts silence afresh: still up a while later.
    rt.run_for(SILENCE_TIMEOUT * 2).expect("runs");
    assert!(b.take_errors().is_empty(), "{:?}", b.t.stats());
    assert_eq!((a.t.stats().broken, b.t.stats().broken), (0, 0));
}
