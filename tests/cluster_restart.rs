//! A node that crashes and is started again at the same address is a new
//! node, a new incarnation — and it comes back at once, before the others
//! have declared its predecessor down. Whatever they still send its
//! predecessor then reaches the new node's address; none of it may act
//! on the new node, whose device ids and tags start afresh and so name
//! other things there (rule 114a in `src/cluster/mod.rs`). On the
//! in-memory network and virtual time.
//!
//! One thread here holds every node, so device ids never repeat across
//! them as they do across restarted processes: the tests name a new
//! device with the old incarnation (an alias) to stand for that reuse.
//! Tags (of asks, watches) do start afresh in each node and collide as
//! they would across processes.
#![cfg(feature = "cluster")]

mod common;

use common::cluster::{addr_in, join, node_on, recorder, Seen};
use common::Rt;
use stakplane::cluster::membership::MemberEvent;
use stakplane::cluster::{AskError, DeadLetter, MemNet, Node, NodeId, Pid, RemoteDown};
use stakplane::prelude::*;
use stakplane::LinkMode;
use std::time::Duration;

fn id(n: u8, incarnation: u64) -> NodeId {
    NodeId::new(addr_in(12, n), incarnation)
}

/// A device that does nothing.
struct Idle;

impl Idle {
    fn init(_: CX![]) -> Option<Self> {
        Some(Idle)
    }
}

/// `a` and `b` (incarnation 1) joined.
struct Two {
    rt: Rt,
    net: MemNet,
    a: DeviceOwn<Node>,
    b: DeviceOwn<Node>,
    a_events: Seen<MemberEvent>,
}

fn two() -> Two {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a_events, fa) = recorder();
    let a = node_on(&mut rt, &net, id(1, 1), fa);
    let b = node_on(&mut rt, &net, id(2, 1), Fwd::new(|_| ()));
    rt.run();
    join(&mut rt, &b, id(1, 1));
    assert_eq!(*a_events.borrow(), [MemberEvent::Up(id(2, 1))]);
    Two {
        rt,
        net,
        a,
        b,
        a_events,
    }
}

impl Two {
    /// `b` crashes (its node and `gone` with it) and starts again at its
    /// address as incarnation 2, at once: `a` still counts incarnation 1
    /// as a member. `self.b` is the new node from then on.
    fn restart_b<T>(&mut self, gone: T) {
        self.net.cut(id(2, 1).addr);
        self.rt.run();
        let old = std::mem::replace(
            &mut self.b,
            node_on(&mut self.rt, &self.net, id(2, 2), Fwd::new(|_| ())),
        );
        drop((old, gone));
        self.rt.run();
        assert_eq!(
            *self.a_events.borrow(),
            [MemberEvent::Up(id(2, 1))],
            "a has not declared b's first incarnation down"
        );
        let a_members = self.a.query(&mut self.rt.s, |n, _| n.members().clone());
        assert!(a_members.expect("alive").contains(&id(2, 1)));
    }

    /// What `a` sends `b` in `sent` is in flight (held in the network)
    /// while `b` restarts and joins again and the new node does `after`;
    /// then it lands.
    fn across_restart(&mut self, sent: impl FnOnce(&mut Two), after: impl FnOnce(&mut Two)) {
        self.net.hold(id(2, 1).addr, 16);
        sent(self);
        self.rt.run();
        self.restart_b(());
        join(&mut self.rt, &self.b, id(1, 1));
        after(self);
        self.rt.run();
        self.net.release(id(2, 1).addr);
        self.rt.run();
    }

    /// `b`'s count of frames for another incarnation.
    fn stale(&mut self) -> u64 {
        self.b
            .query(&mut self.rt.s, |n, _| n.stats().stale_frames)
            .expect("alive")
    }
}

/// Rule 114a: a message `a` sends to its predecessor reaches the new
/// node's address and is dead-lettered there, never handed to a device
/// of the new node that bears the id the predecessor's had.
#[test]
fn restart_a_message_for_the_old_incarnation_is_dead_lettered_not_delivered() {
    let mut t = two();
    t.restart_b(());
    let sink = device!(t.rt.s, Idle::init());
    t.rt.run();
    let (got, fwd) = recorder::<u64>();
    let (dead, dead_fwd) = recorder::<DeadLetter>();
    t.b.query(&mut t.rt.s, |n, _| {
        n.register_device(&sink, fwd);
        n.set_dead_letters(dead_fwd);
    })
    .expect("alive");
    let alias = Pid::new(id(2, 1), sink.id().get());
    let sent = t.a.query(&mut t.rt.s, |n, _| n.send(alias, 7u64));
    assert_eq!(
        sent,
        Some(Ok(())),
        "a still counts b's first incarnation a member"
    );
    t.rt.run();
    assert!(
        got.borrow().is_empty(),
        "delivered to the new node: {:?}",
        got.borrow()
    );
    let dead: Vec<Pid> = dead.borrow().iter().map(|d| d.to).collect();
    assert_eq!(dead, [alias], "dead-lettered where it landed");
    assert_eq!(t.stale(), 1);
    // The new incarnation's own address works, once it is a member.
    join(&mut t.rt, &t.b, id(1, 1));
    let sent = t.a.query(&mut t.rt.s, |n, _| {
        n.send(Pid::new(id(2, 2), sink.id().get()), 8u64)
    });
    assert_eq!(sent, Some(Ok(())));
    t.rt.run();
    assert_eq!(*got.borrow(), [8]);
}

/// What an asker got: `None` if its `Ret` was dropped.
type Answer = Option<Result<u64, String>>;

/// A reply `Ret` that keeps what it gets in `fwd`.
fn answer(fwd: Fwd<Answer>) -> Ret<Result<u64, AskError>> {
    Ret::new(move |r: Option<Result<u64, AskError>>| {
        fwd.fwd(r.map(|r| r.map_err(|e| e.to_string())))
    })
}

/// Rule 114a: the reply to an ask of the predecessor is on its way
/// (held in the network) when `b` restarts; the new node joins and asks
/// under the same tag before it lands: dropped, the new ask gets its own
/// reply.
#[test]
fn restart_a_late_reply_to_the_old_incarnation_is_not_taken_for_a_new_ask() {
    let mut t = two();
    let (held, hold) = recorder::<(u64, Ret<u64>)>();
    t.a.query(&mut t.rt.s, |n, _| n.register_ask(78, hold))
        .expect("alive");
    let server = Pid::new(id(1, 1), 78);
    let (first, r1) = recorder::<Answer>();
    t.b.query(&mut t.rt.s, |n, _| n.ask(server, 1u64, answer(r1)))
        .expect("alive");
    t.rt.run();
    let (second, r2) = recorder::<Answer>();
    t.across_restart(
        |_| {
            let (x, ret) = held.borrow_mut().remove(0);
            ret.ret(x + 100);
        },
        |t| {
            t.b.query(&mut t.rt.s, |n, _| n.ask(server, 2u64, answer(r2)))
                .expect("alive");
        },
    );
    assert!(
        second.borrow().is_empty(),
        "the predecessor's reply answered the new ask: {:?}",
        second.borrow()
    );
    assert_eq!(t.stale(), 1);
    let (x, ret) = held.borrow_mut().remove(0);
    assert_eq!(x, 2);
    ret.ret(x + 100);
    t.rt.run();
    assert_eq!(*second.borrow(), [Some(Ok(102))]);
    // The first asker's `Ret` went with its node.
    assert_eq!(*first.borrow(), [None]);
}

/// Rule 114a: `a` tells the predecessor that a device it watched died,
/// and the notice is on its way (held in the network) when `b` restarts;
/// the new node joins and watches another device of `a` under the same
/// tag before it lands. It hears nothing until that device dies, then
/// exactly its own end.
#[test]
fn restart_a_death_notice_for_the_old_incarnation_does_not_end_a_new_watch() {
    let mut t = two();
    let x = device!(t.rt.s, Idle::init());
    let y = device!(t.rt.s, Idle::init());
    t.rt.run();
    t.a.query(&mut t.rt.s, |n, _| {
        n.register_device(&x, Fwd::new(|_: u64| ()));
        n.register_device(&y, Fwd::new(|_: u64| ()));
    })
    .expect("alive");
    let (xp, yp) = (
        Pid::new(id(1, 1), x.id().get()),
        Pid::new(id(1, 1), y.id().get()),
    );
    t.b.query(&mut t.rt.s, |n, cx| {
        n.monitor(cx, xp, Fwd::new(|_: RemoteDown| ()));
    })
    .expect("alive");
    t.rt.run();
    let (ends, fwd) = recorder::<RemoteDown>();
    t.across_restart(
        |_| x.kill("x-killed").expect("alive"),
        |t| {
            t.b.query(&mut t.rt.s, |n, cx| {
                n.monitor(cx, yp, fwd);
            })
            .expect("alive");
        },
    );
    assert!(
        ends.borrow().is_empty(),
        "the predecessor's notice ended the new watch: {:?}",
        ends.borrow()
    );
    assert_eq!(t.stale(), 1);
    y.kill("y-killed").expect("alive");
    t.rt.run();
    let got: Vec<(Pid, String)> = ends
        .borrow()
        .iter()
        .map(|d| (d.pid, d.cause.to_string()))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, yp);
    assert!(got[0].1.contains("y-killed"), "{got:?}");
}

/// Rule 114a: `a` links its device with a device of the predecessor
/// whose id a device of the new node bears: the new node's device is not
/// linked, and lives on when `a`'s device fails and when `a` declares
/// the predecessor down.
#[test]
fn restart_a_link_asked_of_the_old_incarnation_links_nothing_on_the_new_one() {
    let mut t = two();
    t.restart_b(());
    let w = device!(t.rt.s, Idle::init());
    let v = device!(t.rt.s, Idle::init());
    t.rt.run();
    t.b.query(&mut t.rt.s, |n, _| {
        n.register_device(&w, Fwd::new(|_: u64| ()))
    })
    .expect("alive");
    let (_, trap) = recorder::<RemoteDown>();
    let alias = Pid::new(id(2, 1), w.id().get());
    t.a.query(&mut t.rt.s, |n, cx| {
        n.register_device(&v, Fwd::new(|_: u64| ()));
        n.trap(cx, &v, trap).expect("v traps");
        n.link(cx, &v, alias, LinkMode::Peer).expect("v is alive");
    })
    .expect("alive");
    t.rt.run();
    // Both halves of the link (its watch, and the link the other side
    // was asked to make) were for the predecessor.
    assert_eq!(t.stale(), 2);
    v.kill("v-killed").expect("alive");
    t.rt.run();
    assert!(
        w.is_alive(),
        "the new node's device was linked: {:?}",
        w.cause()
    );
    assert_eq!(
        t.stale(),
        3,
        "and so was the cancel of v's watch (a Demonitor)"
    );
    t.rt.advance(Duration::from_secs(30));
    assert!(
        t.a_events.borrow().contains(&MemberEvent::Down(id(2, 1))),
        "{:?}",
        t.a_events.borrow()
    );
    assert!(w.is_alive(), "{:?}", w.cause());
}
