//! Membership on foca's SWIM, on virtual time, over the in-memory
//! network (rule 111 in `src/cluster/mod.rs`).
#![cfg(feature = "cluster")]

mod common;

use common::Rt;
use stakplane::cluster::membership::{packets_to, MemberEvent, Membership, MembershipConfig};
use stakplane::cluster::{MemNet, NodeId, Transport};
use stakplane::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7000))
}

struct Node {
    id: NodeId,
    m: DeviceOwn<Membership>,
    events: Rc<RefCell<Vec<MemberEvent>>>,
}

fn node(rt: &mut Rt, net: &MemNet, n: u8, incarnation: u64) -> Node {
    let id = NodeId::new(addr(n), incarnation);
    let events: Rc<RefCell<Vec<MemberEvent>>> = Rc::default();
    let e2 = events.clone();
    let fwd = Fwd::new(move |ev| e2.borrow_mut().push(ev));
    let transport: Rc<dyn Transport> = Rc::new(net.clone());
    let cfg = MembershipConfig::lan(3, u64::from(n));
    let m = device!(rt.s, Membership::init(id, cfg, transport, fwd));
    net.attach(id.addr, packets_to(&m));
    Node { id, m, events }
}

fn members(rt: &mut Rt, n: &Node) -> BTreeSet<NodeId> {
    n.m.query(&mut rt.s, |m, _| m.members()).expect("alive")
}

fn three_nodes(rt: &mut Rt, net: &MemNet) -> [Node; 3] {
    let [a, b, c] = [1, 2, 3].map(|n| node(rt, net, n, 1));
    rt.run();
    for joiner in [&b, &c] {
        let seed = a.id;
        call!([joiner.m], announce(seed));
    }
    rt.advance(Duration::from_secs(10));
    [a, b, c]
}

/// Three joined nodes, then node c cut off for a minute (declared down).
fn three_nodes_then_c_cut_off() -> (Rt, MemNet, [Node; 3]) {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let nodes = three_nodes(&mut rt, &net);
    net.cut(nodes[2].id.addr);
    rt.advance(Duration::from_secs(60));
    (rt, net, nodes)
}

#[test]
fn membership_nodes_that_announce_to_a_seed_all_learn_of_each_other() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let nodes = three_nodes(&mut rt, &net);
    for n in &nodes {
        let others: BTreeSet<NodeId> = nodes.iter().map(|o| o.id).filter(|&o| o != n.id).collect();
        assert_eq!(members(&mut rt, n), others, "{} sees the others", n.id);
        let ups: BTreeSet<NodeId> = n
            .events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                MemberEvent::Up(id) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(ups, others, "{} was told each other node is up", n.id);
    }
    let (sent, _) = net.counts();
    assert!(sent > 0);
}

#[test]
fn membership_a_node_that_stops_answering_is_declared_down_by_every_other_node() {
    let (mut rt, _net, [a, b, c]) = three_nodes_then_c_cut_off();
    for n in [&a, &b] {
        assert_eq!(
            members(&mut rt, n),
            BTreeSet::from([if n.id == a.id { b.id } else { a.id }])
        );
        let downs: Vec<_> = n
            .events
            .borrow()
            .iter()
            .filter(|e| matches!(e, MemberEvent::Down(_)))
            .cloned()
            .collect();
        assert_eq!(downs, [MemberEvent::Down(c.id)], "{} saw c down once", n.id);
    }
}

#[test]
fn membership_a_node_back_with_a_higher_incarnation_is_a_new_member_and_the_old_stays_down() {
    let (mut rt, net, [a, b, c]) = three_nodes_then_c_cut_off();
    drop(c);
    // The same address comes back as incarnation 2.
    let c2 = node(&mut rt, &net, 3, 2);
    rt.run();
    call!([c2.m], announce(a.id));
    rt.advance(Duration::from_secs(20));
    let old = NodeId::new(addr(3), 1);
    for n in [&a, &b] {
        let seen = members(&mut rt, n);
        assert!(seen.contains(&c2.id), "{} sees {}: {seen:?}", n.id, c2.id);
        assert!(!seen.contains(&old), "{} does not see {old} again", n.id);
        assert!(n.events.borrow().contains(&MemberEvent::Up(c2.id)));
    }
}

/// Gossip from the peer at `from` whose header names `src` as its source.
fn announce_from(from: SocketAddr, src: NodeId, dst: NodeId) -> stakplane::cluster::Packet {
    let mut data = Vec::new();
    foca::Codec::encode_header(
        &mut foca::PostcardCodec,
        &foca::Header {
            src,
            src_incarnation: 0,
            dst,
            message: foca::Message::<NodeId>::Announce,
        },
        &mut data,
    )
    .expect("encodes");
    stakplane::cluster::Packet::new(from, data)
}

/// Rule 113b for a membership on its own: gossip whose message names
/// another source than the peer it came from is dropped and counted as
/// refused; it makes nobody a member. The same announce from its source
/// is taken.
#[test]
fn membership_gossip_in_another_nodes_name_is_refused() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let a = node(&mut rt, &net, 1, 1);
    // c is on the network, so that its answer to the announce goes.
    let c = node(&mut rt, &net, 3, 1);
    rt.run();
    call!([a.m], packet(announce_from(addr(2), c.id, a.id)));
    rt.advance(Duration::from_secs(1));
    let refused = |rt: &mut Rt| a.m.query(&mut rt.s, |m, _| m.refused()).expect("alive");
    assert_eq!(refused(&mut rt), 1);
    assert!(
        members(&mut rt, &a).is_empty(),
        "{:?}",
        members(&mut rt, &a)
    );
    call!([a.m], packet(announce_from(addr(3), c.id, a.id)));
    rt.advance(Duration::from_secs(1));
    assert_eq!(refused(&mut rt), 1);
    assert_eq!(members(&mut rt, &a), BTreeSet::from([c.id]));
}
