//! Nodes over real loopback TCP, with Noise sessions (rule 118 in
//! `src/cluster/mod.rs`). Real sockets on the runtime's virtual clock: the
//! loop polls the OS without waiting and time jumps when nothing is
//! ready, so membership's seconds pass in microseconds (the transport
//! sets TCP_NODELAY: with Nagle, a frame written right behind the
//! handshake would wait for the peer's delayed ACK, in real time).
#![cfg(feature = "cluster")]

use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::tcp::TcpTransport;
use stakplane::cluster::Transport;
use stakplane::cluster::{Node, NodeId, Pid, Secret};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::cell::RefCell;
use std::collections::BTreeSet;
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
    t.start(id, fwd_to!([node], packet() as (Vec<u8>)));
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
