//! Nodes on the in-memory network, for the cluster's tests.

use super::Rt;
use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::{Frame, MemNet, Node, NodeId, NodeStatus, Packet, Transport, MAX_FRAME};
use stakplane::prelude::*;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// What a `Fwd` made by [`recorder`] received.
pub type Seen<T> = Rc<RefCell<Vec<T>>>;

/// `frame` as a packet from the network: what a test hands a node's
/// `packet`, as the peer it names as its sender would send it (from
/// `0.0.0.0:0` if it names none).
pub fn encoded(frame: Frame) -> Packet {
    let mut bytes = Vec::new();
    frame.encode_into(&mut bytes, MAX_FRAME).expect("encodes");
    let from = frame
        .sender()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |n| n.addr);
    Packet::new(from, bytes)
}

/// A `Fwd` that keeps what it gets.
pub fn recorder<T: 'static>() -> (Seen<T>, Fwd<T>) {
    let seen: Seen<T> = Rc::default();
    let s2 = seen.clone();
    (seen, Fwd::new(move |v| s2.borrow_mut().push(v)))
}

/// The address of node `n` on subnet `net`.
pub fn addr_in(net: u8, n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, net, n], 7000))
}

/// Node `id` on `net`, its membership events to `events`.
pub fn node_on(rt: &mut Rt, net: &MemNet, id: NodeId, events: Fwd<MemberEvent>) -> DeviceOwn<Node> {
    let seed = u64::from(id.addr.port())
        ^ id.incarnation
        ^ u64::from(id.addr.ip().to_string().len() as u32);
    node_with(rt, net, id, MembershipConfig::lan(3, seed), events)
}

/// Node `id` on `net` with membership settings `config`, its membership
/// events to `events`.
pub fn node_with(
    rt: &mut Rt,
    net: &MemNet,
    id: NodeId,
    config: MembershipConfig,
    events: Fwd<MemberEvent>,
) -> DeviceOwn<Node> {
    let transport: Rc<dyn Transport> = Rc::new(net.clone());
    let node = device!(rt.s, Node::init(id, config, transport, events));
    net.attach(
        id.addr,
        fwd_to!([node], packet() as (stakplane::cluster::Packet)),
    );
    node
}

/// `node` joins through `seed`; virtual time runs until they agree.
pub fn join(rt: &mut Rt, node: &DeviceOwn<Node>, seed: NodeId) {
    call!([node], join(seed));
    rt.advance(Duration::from_secs(5));
}

/// A node's status, answered through the queue.
pub fn status(rt: &mut Rt, node: &DeviceOwn<Node>) -> NodeStatus {
    let got = Rc::new(RefCell::new(None));
    let g2 = got.clone();
    node.query(&mut rt.s, |n, cx| {
        n.status(cx, Ret::new(move |s| *g2.borrow_mut() = s))
    })
    .expect("alive");
    rt.run();
    let s = got.borrow_mut().take().expect("answered");
    s
}
