//! Nodes over real loopback TCP, with Noise sessions (rule 118 in
//! `src/cluster/mod.rs`, rule 135 in `src/cluster/tcp/mod.rs`). Real sockets
//! on the runtime's virtual clock: the
//! loop polls the OS without waiting and time jumps when nothing is
//! ready, so membership's seconds pass in microseconds (the transport
//! sets TCP_NODELAY: with Nagle, a frame written right behind the
//! handshake would wait for the peer's delayed ACK, in real time).
#![cfg(feature = "cluster")]

use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::tcp::TcpTransport;
use stakplane::cluster::Transport;
use stakplane::cluster::{
    Identity, Node, NodeBuilder, NodeId, Pid, Pins, Secret, SendError, TrySendError,
};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn start(rt: &mut Runtime, secret: &Secret, seed: u64) -> (DeviceOwn<Node>, TcpTransport, NodeId) {
    let (t, addr) = TcpTransport::bind(
        rt.core(),
        "127.0.0.1:0".parse().expect("addr"),
        secret.clone(),
    )
    .expect("binds");
    let id = NodeId::new(addr, 1);
    let transport: Rc<dyn Transport> = Rc::new(t.clone());
    let node = device!(
        rt.core(),
        Node::init(
            id,
            MembershipConfig::lan(3, seed),
            transport,
            Fwd::new(|_: MemberEvent| ())
        )
    );
    t.start(
        id,
        fwd_to!([node], packet() as (stakplane::cluster::Packet)),
    );
    (node, t, id)
}

/// A runtime on the virtual clock.
fn virtual_rt() -> Runtime {
    Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .expect("runtime")
}

fn members(rt: &mut Runtime, n: &DeviceOwn<Node>) -> BTreeSet<NodeId> {
    n.query(rt.stakker(), |n, _| n.members().clone())
        .expect("alive")
}

#[test]
fn tcp_three_nodes_join_over_noise_sessions_and_a_message_crosses() {
    let mut rt = virtual_rt();
    let secret = Secret::new([7; 32]);
    let (a, ta, ida) = start(&mut rt, &secret, 1);
    let (b, _tb, idb) = start(&mut rt, &secret, 2);
    let (c, _tc, idc) = start(&mut rt, &secret, 3);
    rt.run_for(Duration::from_millis(10)).expect("runs");
    call!([b], join(ida));
    call!([c], join(ida));
    rt.run_for(Duration::from_secs(10)).expect("runs");
    assert_eq!(members(&mut rt, &a), BTreeSet::from([idb, idc]));
    assert_eq!(members(&mut rt, &b), BTreeSet::from([ida, idc]));
    assert_eq!(members(&mut rt, &c), BTreeSet::from([ida, idb]));
    assert!(ta.stats().sessions >= 2);
    // A message from a to an actor registered on c.
    let got: Rc<RefCell<Vec<String>>> = Rc::default();
    let g2 = got.clone();
    c.query(rt.stakker(), |n, _| {
        n.register(5, Fwd::new(move |m: String| g2.borrow_mut().push(m)))
    })
    .expect("alive");
    let to = Pid {
        node: idc,
        device: 5,
    };
    a.query(rt.stakker(), |n, _| n.send(to, "over tcp".to_string()))
        .expect("alive")
        .expect("sends");
    rt.run_for(Duration::from_millis(100)).expect("runs");
    assert_eq!(*got.borrow(), ["over tcp"]);
}

#[test]
fn tcp_a_node_with_a_wrong_secret_never_joins() {
    let mut rt = virtual_rt();
    let (a, ta, ida) = start(&mut rt, &Secret::new([1; 32]), 1);
    let (d, _td, _idd) = start(&mut rt, &Secret::new([2; 32]), 4);
    rt.run_for(Duration::from_millis(10)).expect("runs");
    call!([d], join(ida));
    rt.run_for(Duration::from_secs(10)).expect("runs");
    assert!(members(&mut rt, &a).is_empty(), "a sees nobody");
    assert!(members(&mut rt, &d).is_empty(), "d sees nobody");
    assert!(
        ta.stats().failed >= 1,
        "a refused the session: {:?}",
        ta.stats()
    );
    assert!(a.is_alive() && d.is_alive());
}

#[test]
fn tcp_nodes_started_with_the_builder_join_through_a_seed_address() {
    let mut rt = virtual_rt();
    let secret = Secret::new([5; 32]);
    let (a, ida) = Node::builder()
        .secret(secret.clone())
        .incarnation(1)
        .start(rt.core())
        .expect("starts");
    let (b, idb) = Node::builder()
        .secret(secret.clone())
        .seeds([ida.addr])
        .start(rt.core())
        .expect("starts");
    assert!(idb.incarnation > 1, "the wall clock's incarnation");
    rt.run_for(Duration::from_secs(10)).expect("runs");
    assert_eq!(members(&mut rt, &a), BTreeSet::from([idb]));
    assert_eq!(members(&mut rt, &b), BTreeSet::from([ida]));
    // No secret, no node.
    assert!(matches!(
        Node::builder().start(rt.core()),
        Err(stakplane::cluster::NodeError::NoSecret)
    ));
}

/// A free loopback port.
fn port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Two free addresses, a key for each, and the pins of both.
struct Keyed {
    at: [SocketAddr; 2],
    keys: [Identity; 2],
    pins: Pins,
}

impl Keyed {
    /// A node with `secret` listening at address `at`, with its key and
    /// the pins (`key` may name another address's key).
    fn node(
        &self,
        secret: &Secret,
        at: SocketAddr,
        key: &Identity,
        seeds: Vec<SocketAddr>,
    ) -> NodeBuilder {
        Node::builder()
            .listen(at)
            .secret(secret.clone())
            .identity(key.clone())
            .pins(self.pins.clone())
            .seeds(seeds)
    }

    fn two() -> Keyed {
        let at = [port(), port()];
        let keys = [(); 2].map(|_| Identity::generate().expect("keys"));
        let pins = at
            .iter()
            .zip(&keys)
            .map(|(a, k)| (*a, k.public_key()))
            .collect();
        Keyed { at, keys, pins }
    }
}

/// Rule 116a through the builder: nodes that pin each other's keys join;
/// a node with the secret whose address nobody pinned never does, with
/// or without a key and pins of its own.
#[test]
fn tcp_nodes_with_pinned_keys_join_and_a_node_with_the_secret_alone_never_does() {
    let mut rt = virtual_rt();
    let secret = Secret::new([6; 32]);
    let keyed = Keyed::two();
    let pinned = |at, key: &Identity, seeds| keyed.node(&secret, at, key, seeds);
    let ([at_a, at_b], [ka, kb], pins) = (keyed.at, &keyed.keys, &keyed.pins);
    let (a, ida) = pinned(at_a, ka, vec![])
        .incarnation(1)
        .start(rt.core())
        .expect("starts");
    let (b, idb) = pinned(at_b, kb, vec![at_a])
        .incarnation(1)
        .start(rt.core())
        .expect("starts");
    // c: the secret alone; d: the secret, the pins and a key of its own.
    // Nobody pinned either's address. (A node that names a pinned address
    // without its key: `cluster_tcp_faults.rs`.)
    let (c, _) = Node::builder()
        .secret(secret.clone())
        .seeds([at_a, at_b])
        .start(rt.core())
        .expect("starts");
    let (d, _) = pinned(
        port(),
        &Identity::generate().expect("keys"),
        vec![at_a, at_b],
    )
    .start(rt.core())
    .expect("starts");
    rt.run_for(Duration::from_secs(10)).expect("runs");
    assert_eq!(members(&mut rt, &a), BTreeSet::from([idb]));
    assert_eq!(members(&mut rt, &b), BTreeSet::from([ida]));
    assert!(members(&mut rt, &c).is_empty(), "c sees nobody");
    assert!(members(&mut rt, &d).is_empty(), "d sees nobody");
    assert!(a.is_alive() && b.is_alive() && c.is_alive() && d.is_alive());
    // A node whose own address is pinned with other keys than its
    // identity's, or that has none, would be refused everywhere: it does
    // not start.
    let at_e = port();
    let mut with_e = pins.clone();
    with_e.insert(at_e, ka.public_key());
    for identity in [Some(kb.clone()), None] {
        let mut builder = Node::builder()
            .listen(at_e)
            .secret(secret.clone())
            .pins(with_e.clone());
        if let Some(k) = identity {
            builder = builder.identity(k);
        }
        let err = builder.start(rt.core()).expect_err("refused");
        assert!(
            matches!(err, stakplane::cluster::NodeError::NotPinned { addr } if addr == at_e),
            "{err:?}"
        );
    }
    let (e, _) = Node::builder()
        .listen(at_e)
        .secret(secret.clone())
        .pins(with_e)
        .identity(ka.clone())
        .start(rt.core())
        .expect("its key is pinned for its address");
    assert!(e.is_alive());
}

/// Rule 116a, at run time: a node given pins without a member's key
/// closes its link to it at once; the member, cut off, is declared down
/// there. Pins refusing the node itself change nothing; a transport
/// without per-node keys refuses pins.
#[test]
fn tcp_a_node_given_pins_without_a_members_key_cuts_it_off_and_declares_it_down() {
    let mut rt = virtual_rt();
    let secret = Secret::new([7; 32]);
    let keyed = Keyed::two();
    let ([at_a, at_b], [ka, kb], pins) = (keyed.at, &keyed.keys, &keyed.pins);
    let mut node = |at, key: &Identity, seeds| {
        keyed
            .node(&secret, at, key, seeds)
            .incarnation(1)
            .start(rt.core())
            .expect("starts")
    };
    let (a, _) = node(at_a, ka, vec![]);
    let (b, idb) = node(at_b, kb, vec![at_a]);
    rt.run_for(Duration::from_secs(10)).expect("runs");
    assert_eq!(members(&mut rt, &a), BTreeSet::from([idb]));
    let set = |rt: &mut Runtime, pins: Option<Pins>| {
        a.query(rt.stakker(), move |n, _| n.set_pins(pins))
            .expect("alive")
    };
    let mut only_b = Pins::new();
    only_b.insert(at_a, kb.public_key());
    let err = set(&mut rt, Some(only_b)).expect_err("refuses a itself");
    assert!(
        matches!(err, stakplane::cluster::NodeError::NotPinned { addr } if addr == at_a),
        "{err:?}"
    );
    let mut without_b = pins.clone();
    without_b.remove(&at_b, &kb.public_key());
    assert_eq!(set(&mut rt, Some(without_b.clone())).expect("admits a"), 1);
    let now = a.query(rt.stakker(), |n, _| n.pins()).expect("alive");
    assert_eq!(now, Some(without_b));
    rt.run_for(Duration::from_secs(30)).expect("runs");
    assert!(members(&mut rt, &a).is_empty(), "b declared down at a");
    assert!(members(&mut rt, &b).is_empty(), "a declared down at b");
    // The trait's default: no per-node keys.
    struct NoKeys;
    impl Transport for NoKeys {
        fn send(
            &self,
            _: SocketAddr,
            _: SocketAddr,
            _: Vec<u8>,
            _: bool,
        ) -> Result<(), stakplane::cluster::Full> {
            Ok(())
        }
    }
    assert!(matches!(
        NoKeys.set_pins(None),
        Err(stakplane::cluster::NodeError::NoKeys)
    ));
    assert_eq!(NoKeys.pins(), None);
}

/// What waiting sends were answered.
type Done = Rc<RefCell<Vec<Option<Result<(), SendError>>>>>;

/// Two nodes over TCP, joined.
fn joined(rt: &mut Runtime, secret: &Secret) -> [(DeviceOwn<Node>, TcpTransport, NodeId); 2] {
    let a = start(rt, secret, 1);
    let b = start(rt, secret, 2);
    rt.run_for(Duration::from_millis(10)).expect("runs");
    call!([b.0], join(a.2));
    rt.run_for(Duration::from_secs(5)).expect("runs");
    assert_eq!(members(rt, &a.0), BTreeSet::from([b.2]));
    [a, b]
}

#[test]
fn tcp_a_receiver_that_stops_reading_makes_try_send_full_and_nothing_is_lost() {
    let mut rt = virtual_rt();
    let secret = Secret::new([13; 32]);
    let [(a, ta, _), (b, tb, idb)] = joined(&mut rt, &secret);
    let got: Rc<RefCell<Vec<u32>>> = Rc::default();
    let g2 = got.clone();
    b.query(rt.stakker(), |n, _| {
        n.register(
            5,
            Fwd::new(move |(i, _pad): (u32, Vec<u8>)| g2.borrow_mut().push(i)),
        )
    })
    .expect("alive");
    let to = Pid {
        node: idb,
        device: 5,
    };
    // b stops reading: the socket's buffers fill, then a's connection's,
    // then a's queue for b, and try_send gives the message back.
    tb.pause_reading();
    let pad: Vec<u8> = vec![0x5A; 32 << 10];
    let mut sent = 0u32;
    let mut refused = None;
    for _ in 0..4000 {
        let msg = (sent, pad.clone());
        match a
            .query(rt.stakker(), |n, _| n.try_send(to, msg))
            .expect("alive")
        {
            Ok(()) => sent += 1,
            Err(TrySendError::Full((i, _))) => {
                refused = Some(i);
                break;
            }
            Err(e) => panic!("refused: {e:?}"),
        }
        if sent.is_multiple_of(32) {
            // The loop writes what was queued, while the socket takes it.
            rt.run_for(Duration::from_millis(1)).expect("runs");
        }
    }
    assert_eq!(refused, Some(sent), "Full gives the message back");
    assert!(sent > 100, "the buffers took {sent} messages first");
    // Sends that wait for room, in order; none completes while b does
    // not read, and nothing more arrives.
    let done: Done = Rc::default();
    let waiting = 20;
    for i in sent..sent + waiting {
        let d = done.clone();
        let msg = (i, pad.clone());
        a.query(rt.stakker(), |n, cx| {
            n.send_when_room(cx, to, msg, Ret::new(move |r| d.borrow_mut().push(r)))
        })
        .expect("alive");
    }
    let arrived = got.borrow().len();
    rt.run_for(Duration::from_millis(50)).expect("runs");
    assert!(done.borrow().is_empty(), "waiting for room");
    assert_eq!(got.borrow().len(), arrived, "b reads nothing");
    assert!(ta.links()[0].queued > 0, "{:?}", ta.links());
    // b reads again: every message arrives, in order, and each waiting
    // send completes once.
    tb.resume_reading();
    let total = sent + waiting;
    for _ in 0..1000 {
        if got.borrow().len() >= total as usize {
            break;
        }
        rt.run_for(Duration::from_millis(10)).expect("runs");
    }
    assert_eq!(*got.borrow(), (0..total).collect::<Vec<_>>());
    assert_eq!(
        *done.borrow(),
        vec![Some(Ok(())); waiting as usize],
        "each waiting send answered once"
    );
    let stats = ta.stats();
    assert_eq!((stats.failed, stats.broken, stats.oversized), (0, 0, 0));
    assert_eq!(stats.sessions, 1, "the same link all along: {stats:?}");
    let node_stats = b.query(rt.stakker(), |n, _| n.stats()).expect("alive");
    assert_eq!(node_stats.dead_letters, 0);
}
