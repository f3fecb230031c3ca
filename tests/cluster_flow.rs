//! A node's flow control, leave, status and rejoin, on the in-memory
//! network and virtual time (rules 123–125 in `src/cluster/mod.rs`).
#![cfg(feature = "cluster")]

mod common;

use common::cluster::{addr_in, join, node_on, recorder, status, Seen};
use common::Rt;
use stakplane::cluster::membership::MemberEvent;
use stakplane::cluster::{
    LinkState, MemNet, MemberState, Node, NodeId, Pid, RemoteDown, SendError, TrySendError,
};
use stakplane::prelude::*;
use std::time::Duration;

fn id(n: u8, incarnation: u64) -> NodeId {
    NodeId::new(addr_in(3, n), incarnation)
}

fn quiet() -> Fwd<MemberEvent> {
    Fwd::new(|_| ())
}

/// Nodes a (1) and b (2), joined, with a `String` inbox on b as device
/// 42.
fn joined(rt: &mut Rt, net: &MemNet) -> (DeviceOwn<Node>, DeviceOwn<Node>, Seen<String>) {
    let a = node_on(rt, net, id(1, 1), quiet());
    let (b, inbox) = inbox_node_b(rt, net, 1);
    (a, b, inbox)
}

/// Incarnation `incarnation` of node b (2) on `net`, with a `String`
/// inbox as device 42, joined through a.
fn inbox_node_b(rt: &mut Rt, net: &MemNet, incarnation: u64) -> (DeviceOwn<Node>, Seen<String>) {
    let b = node_on(rt, net, id(2, incarnation), quiet());
    rt.run();
    let (inbox, fwd) = recorder::<String>();
    b.query(&mut rt.s, |n, _| n.register(42, fwd))
        .expect("alive");
    join(rt, &b, id(1, 1));
    (b, inbox)
}

/// Node a (1) on `net`, its membership events kept.
fn watched_a(rt: &mut Rt, net: &MemNet) -> (DeviceOwn<Node>, Seen<MemberEvent>) {
    let (events, ev_fwd) = recorder::<MemberEvent>();
    (node_on(rt, net, id(1, 1), ev_fwd), events)
}

#[test]
fn flow_a_full_queue_gives_the_message_back_and_waiting_sends_keep_their_order() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, _b, inbox) = joined(&mut rt, &net);
    let to = Pid::new(id(2, 1), 42);
    net.hold(id(2, 1).addr, 3);
    let (done, done_fwd) = recorder::<Option<Result<(), SendError>>>();
    a.query(&mut rt.s, |n, cx| {
        for i in 0..3 {
            n.try_send(to, format!("{i}")).expect("room for three");
        }
        match n.try_send(to, "3".to_string()) {
            Err(TrySendError::Full(m)) => assert_eq!(m, "3", "given back"),
            other => panic!("not Full: {other:?}"),
        }
        assert_eq!(n.send(to, "x".to_string()), Err(SendError::Full));
        for i in 3..6 {
            let d = done_fwd.clone();
            n.send_when_room(cx, to, format!("{i}"), Ret::new(move |r| d.fwd(r)));
        }
        // Sends wait in order: a later one does not overtake them.
        assert!(matches!(
            n.try_send(to, "late".to_string()),
            Err(TrySendError::Full(_))
        ));
    })
    .expect("alive");
    rt.run();
    assert!(done.borrow().is_empty(), "still waiting for room");
    assert_eq!(status(&mut rt, &a).waiting_sends, 3);
    net.release(id(2, 1).addr);
    rt.run();
    let want: Vec<String> = (0..6).map(|i| format!("{i}")).collect();
    assert_eq!(*inbox.borrow(), want, "nothing lost, in send order");
    assert_eq!(*done.borrow(), vec![Some(Ok(())); 3], "each told once");
}

#[test]
fn flow_a_send_waiting_for_a_lost_node_is_refused_once() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, _b, inbox) = joined(&mut rt, &net);
    let to = Pid::new(id(2, 1), 42);
    net.hold(id(2, 1).addr, 0);
    let (done, done_fwd) = recorder::<Option<Result<(), SendError>>>();
    a.query(&mut rt.s, |n, cx| {
        n.send_when_room(cx, to, "w".to_string(), Ret::new(move |r| done_fwd.fwd(r)))
    })
    .expect("alive");
    net.cut(id(2, 1).addr);
    rt.advance(Duration::from_secs(60));
    assert_eq!(*done.borrow(), [Some(Err(SendError::NodeDown(id(2, 1))))]);
    assert!(inbox.borrow().is_empty());
}

#[test]
fn flow_a_node_that_leaves_is_down_for_the_others_and_they_for_it() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, events) = watched_a(&mut rt, &net);
    let b = node_on(&mut rt, &net, id(2, 1), quiet());
    rt.run();
    join(&mut rt, &b, id(1, 1));
    let log = common::new_log();
    let x = common::dev(&mut rt, "x", &log);
    let y = common::dev(&mut rt, "y", &log);
    rt.run();
    a.query(&mut rt.s, |n, _| {
        n.register_device(&x, Fwd::new(|_: String| ()))
    })
    .expect("alive");
    b.query(&mut rt.s, |n, _| {
        n.register_device(&y, Fwd::new(|_: String| ()))
    })
    .expect("alive");
    let (a_saw, a_fwd) = recorder::<RemoteDown>();
    let (b_saw, b_fwd) = recorder::<RemoteDown>();
    let yp = Pid::new(id(2, 1), y.id().get());
    let xp = Pid::new(id(1, 1), x.id().get());
    a.query(&mut rt.s, |n, cx| n.monitor(cx, yp, a_fwd))
        .expect("alive");
    b.query(&mut rt.s, |n, cx| n.monitor(cx, xp, b_fwd))
        .expect("alive");
    rt.run();
    call!([b], leave());
    rt.advance(Duration::from_secs(10));
    let lost = Cause::Lost.to_string();
    let texts = |s: &Seen<RemoteDown>| -> Vec<String> {
        s.borrow().iter().map(|d| d.cause.to_string()).collect()
    };
    assert_eq!(
        texts(&a_saw),
        std::slice::from_ref(&lost),
        "a: b's device is lost"
    );
    assert_eq!(texts(&b_saw), [lost], "b: a's device is lost");
    assert!(events.borrow().contains(&MemberEvent::Down(id(2, 1))));
    assert!(a
        .query(&mut rt.s, |n, _| n.members().is_empty())
        .expect("alive"));
    assert!(b
        .query(&mut rt.s, |n, _| n.members().is_empty())
        .expect("alive"));
}

#[test]
fn flow_status_reports_each_member_with_its_state_and_each_link() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, _b, _inbox) = joined(&mut rt, &net);
    let st = status(&mut rt, &a);
    assert_eq!(st.me, id(1, 1));
    let members: Vec<(NodeId, MemberState)> = st.members.iter().map(|m| (m.id, m.state)).collect();
    assert_eq!(members, [(id(2, 1), MemberState::Up)]);
    let links: Vec<(std::net::SocketAddr, LinkState)> =
        st.links.iter().map(|l| (l.addr, l.state)).collect();
    assert_eq!(links, [(id(2, 1).addr, LinkState::Up)]);
    // Cut off, b is suspected first, then declared down.
    net.cut(id(2, 1).addr);
    let mut states = Vec::new();
    for _ in 0..600 {
        rt.advance(Duration::from_millis(100));
        let s = status(&mut rt, &a);
        if let Some(m) = s.members.first() {
            if states.last() != Some(&m.state) {
                states.push(m.state);
            }
        }
    }
    assert_eq!(
        states,
        [MemberState::Up, MemberState::Suspect, MemberState::Down]
    );
}

#[test]
fn flow_a_restarted_node_is_a_new_member_and_old_pids_stay_dead() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b1, _inbox) = joined(&mut rt, &net);
    let old = Pid::new(id(2, 1), 42);
    net.cut(id(2, 1).addr);
    rt.advance(Duration::from_secs(60));
    drop(b1);
    // The same address, a higher incarnation.
    let (_b2, inbox2) = inbox_node_b(&mut rt, &net, 2);
    let members = a
        .query(&mut rt.s, |n, _| n.members().clone())
        .expect("alive");
    assert_eq!(members.into_iter().collect::<Vec<_>>(), [id(2, 2)]);
    let (saw, saw_fwd) = recorder::<RemoteDown>();
    let (to_old, to_new) = a
        .query(&mut rt.s, |n, cx| {
            let to_old = n.send(old, "to the old".to_string());
            n.monitor(cx, old, saw_fwd);
            (
                to_old,
                n.send(Pid::new(id(2, 2), 42), "to the new".to_string()),
            )
        })
        .expect("alive");
    assert_eq!(to_old, Err(SendError::NodeDown(id(2, 1))));
    assert_eq!(to_new, Ok(()), "the new incarnation is a member");
    rt.run();
    assert_eq!(saw.borrow().len(), 1);
    assert!(matches!(saw.borrow()[0].cause, Cause::Lost));
    assert_eq!(*inbox2.borrow(), ["to the new"]);
}

#[test]
fn flow_a_supervised_node_restarts_as_a_new_incarnation_and_rejoins() {
    use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
    use std::cell::Cell;
    use std::rc::Rc;
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, events) = watched_a(&mut rt, &net);
    rt.run();
    // Node b is a supervised child: each start is the next incarnation,
    // and joins through a.
    let incarnation = Rc::new(Cell::new(0));
    let (inc, net2) = (incarnation.clone(), net.clone());
    let spec = ChildSpec::worker("node-b", move |core| {
        inc.set(inc.get() + 1);
        let me = id(2, inc.get());
        let transport: Rc<dyn stakplane::cluster::Transport> = Rc::new(net2.clone());
        let node = device!(
            core,
            Node::init(
                me,
                stakplane::cluster::membership::MembershipConfig::lan(3, inc.get()),
                transport,
                Fwd::new(|_| ())
            )
        );
        net2.attach(
            me.addr,
            fwd_to!([node], packet() as (stakplane::cluster::Packet)),
        );
        call!([node], join(id(1, 1)));
        Ok(node.into())
    });
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one()
            .intensity(3, Duration::from_secs(600))
            .child(spec),
    )
    .expect("starts");
    rt.advance(Duration::from_secs(5));
    let members = |rt: &mut Rt| {
        a.query(&mut rt.s, |n, _| n.members().clone())
            .expect("alive")
    };
    assert_eq!(members(&mut rt).into_iter().collect::<Vec<_>>(), [id(2, 1)]);
    // The node device is killed: its supervisor starts incarnation 2.
    let b = sup
        .which_children()
        .expect("running")
        .into_iter()
        .find_map(|c| match c.status {
            stakplane::supervise::ChildStatus::Running(line) => Some(line),
            _ => None,
        })
        .expect("node b runs");
    b.kill("test-kill").expect("alive");
    rt.advance(Duration::from_secs(60));
    assert_eq!(incarnation.get(), 2);
    assert_eq!(members(&mut rt).into_iter().collect::<Vec<_>>(), [id(2, 2)]);
    let seen = events.borrow();
    assert!(seen.contains(&MemberEvent::Up(id(2, 1))));
    assert!(seen.contains(&MemberEvent::Down(id(2, 1))));
    assert!(seen.contains(&MemberEvent::Up(id(2, 2))));
}
