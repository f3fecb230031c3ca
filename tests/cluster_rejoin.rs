//! A node declared down by another that never declared it down: it hears
//! of it, rejoins as a new incarnation, and what it had under its old
//! name ends (rules 114, 117, 119, 122, 127 in `src/cluster/mod.rs`), on the
//! in-memory network and virtual time.
//!
//! The view is asymmetric on purpose: `a` suspects for a few seconds,
//! `b` for an hour. `b` is cut off long enough for `a` to declare it
//! down, not for `b` to declare `a` down; back on the network, `b` is
//! told it is down and rejoins, while `a` stays up in its view (so
//! nothing of `b`'s is ended by a `Down` of `a`: only the rejoin does).
#![cfg(feature = "cluster")]

mod common;

use common::cluster::{addr_in, encoded, join, node_with, recorder, status, Seen};
use common::Rt;
use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::{
    AskError, Frame, LookupError, MemNet, Node, NodeId, Pid, Ref, RemoteActor, RemoteDown,
    RemoteRef, SendError, TrySendError,
};
use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::supervise::{Addr, ChildSpec, Supervisor, SupervisorSpec};
use std::time::Duration;

fn id(n: u8) -> NodeId {
    NodeId::new(addr_in(9, n), 1)
}

/// Two joined nodes, `a` quick to declare a silent node down, `b` slow
/// (an hour), with their membership events.
struct Pair {
    rt: Rt,
    net: MemNet,
    a: DeviceOwn<Node>,
    b: DeviceOwn<Node>,
    a_events: Seen<MemberEvent>,
    b_events: Seen<MemberEvent>,
}

fn pair() -> Pair {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a_events, fa) = recorder();
    let (b_events, fb) = recorder();
    let a = node_with(&mut rt, &net, id(1), MembershipConfig::lan(3, 1), fa);
    let mut patient = MembershipConfig::lan(3, 2);
    patient.foca.suspect_to_down_after = Duration::from_secs(3600);
    let b = node_with(&mut rt, &net, id(2), patient, fb);
    rt.run();
    join(&mut rt, &b, id(1));
    assert_eq!(*a_events.borrow(), [MemberEvent::Up(id(2))]);
    assert_eq!(*b_events.borrow(), [MemberEvent::Up(id(1))]);
    Pair {
        rt,
        net,
        a,
        b,
        a_events,
        b_events,
    }
}

impl Pair {
    /// `b`'s identity now.
    fn b_id(&mut self) -> NodeId {
        self.b.query(&mut self.rt.s, |n, _| n.id()).expect("alive")
    }

    /// `b` is cut off until `a` declares it down (`b` still only
    /// suspects `a`), then comes back: it hears it is down and rejoins.
    /// Returns its new identity.
    fn rejoin(&mut self) -> NodeId {
        self.cut_off();
        self.come_back()
    }

    /// `b` is cut off until `a` declares it down (`b` only suspects `a`).
    fn cut_off(&mut self) {
        let old = self.b_id();
        self.net.cut(old.addr);
        self.rt.advance(Duration::from_secs(20));
        assert!(
            self.a_events.borrow().contains(&MemberEvent::Down(old)),
            "a declared b down: {:?}",
            self.a_events.borrow()
        );
        assert_eq!(
            *self.b_events.borrow(),
            [MemberEvent::Up(id(1))],
            "b still counts a as a member"
        );
    }

    /// `b`, cut off, comes back: it hears it is down and rejoins, while
    /// `a` stays up in its view. Returns its new identity.
    fn come_back(&mut self) -> NodeId {
        let old = self.b_id();
        let b = &self.b;
        self.net.attach(
            old.addr,
            fwd_to!([b], packet() as (stakplane::cluster::Packet)),
        );
        self.rt.advance(Duration::from_secs(10));
        let new = self.b_id();
        assert!(new.incarnation > old.incarnation, "b rejoined: {new:?}");
        assert!(
            self.b_events.borrow().contains(&MemberEvent::Rejoined(new)),
            "{:?}",
            self.b_events.borrow()
        );
        assert!(
            !self.b_events.borrow().contains(&MemberEvent::Down(id(1))),
            "b never declared a down: {:?}",
            self.b_events.borrow()
        );
        assert!(
            self.a_events.borrow().contains(&MemberEvent::Up(new)),
            "{:?}",
            self.a_events.borrow()
        );
        let a_members = self.a.query(&mut self.rt.s, |n, _| n.members().clone());
        let b_members = self.b.query(&mut self.rt.s, |n, _| n.members().clone());
        assert_eq!(
            a_members.expect("alive").into_iter().collect::<Vec<_>>(),
            [new]
        );
        assert_eq!(
            b_members.expect("alive").into_iter().collect::<Vec<_>>(),
            [id(1)]
        );
        new
    }
}

/// A served child that keeps every message it handles, in order.
struct Rec {
    got: Seen<u64>,
}

impl Rec {
    fn init(_: CX![], got: Seen<u64>) -> Option<Self> {
        Some(Rec { got })
    }
}

impl RemoteActor for Rec {
    type Msg = u64;
    type Ask = ();
    type Reply = ();

    fn handle(&mut self, _: CX![], msg: u64, _: Option<Pid>) {
        self.got.borrow_mut().push(msg);
    }
}

/// The mailbox bound of the credited child: a window of 2 per sender.
const BOUND: usize = 4;

/// A `Rec` child served on a node as a credited target (its spec holds
/// calls in a mailbox of [`BOUND`]).
struct Served {
    sup: Supervisor,
    r: RemoteRef<Rec>,
    addr: Addr<Rec>,
    got: Seen<u64>,
}

fn serve_rec(rt: &mut Rt, node: &DeviceOwn<Node>) -> Served {
    let got: Seen<u64> = Seen::default();
    let g = got.clone();
    let spec = ChildSpec::worker("rec", move |core| {
        Ok(device!(core, Rec::init(g.clone())).into())
    })
    .hold(BOUND, Overflow::Reject);
    let addr = spec.addr();
    let sup =
        Supervisor::start(&mut rt.s, SupervisorSpec::one_for_one().child(spec)).expect("starts");
    rt.run();
    let line = sup.line().clone();
    let a2 = addr.clone();
    let r = node
        .query(&mut rt.s, |n, cx| n.serve_child(cx, "rec", a2, &line))
        .expect("alive");
    Served { sup, r, addr, got }
}

/// What each `send_when_room` was told, in the order told.
type Told = Seen<Option<Result<(), SendError>>>;

/// `node` sends `msg` to `to` with `send_when_room`; its answer goes to
/// `told`. The queue runs.
fn send_waiting<M: serde::Serialize + 'static>(
    rt: &mut Rt,
    node: &DeviceOwn<Node>,
    to: Pid,
    msg: M,
    told: &Told,
) {
    let t = told.clone();
    node.query(&mut rt.s, |n, cx| {
        n.send_when_room(cx, to, msg, Ret::new(move |x| t.borrow_mut().push(x)));
    })
    .expect("alive");
    rt.run();
}

/// How many of `n` local sends to credited `to` find room at once (the
/// child takes none meanwhile: they are made in one go).
fn local_room(rt: &mut Rt, node: &DeviceOwn<Node>, to: Pid, n: u64) -> u64 {
    let sent = node
        .query(&mut rt.s, |node, _| {
            (0..n)
                .filter(|k| node.try_send(to, 1000 + k).is_ok())
                .count()
        })
        .expect("alive");
    rt.run();
    sent as u64
}

/// Node `node`'s counters.
fn stats(rt: &mut Rt, node: &DeviceOwn<Node>) -> stakplane::cluster::NodeStats {
    node.query(&mut rt.s, |n, _| n.stats()).expect("alive")
}

/// `b` sends, in its first name, to `a`'s credited child and to a plain
/// inbox on `a` (device 9), while `a` reads slowly (its queue holds two
/// data frames): 1 and 2 go with `b`'s window of credit and fill `a`'s
/// queue, 3 and 4 wait for credit, "p1" and "p2" for room.
fn sends_waiting_in_the_old_name(p: &mut Pair, rec: &Served) -> (Told, Seen<String>) {
    let (plain, fwd) = recorder::<String>();
    p.a.query(&mut p.rt.s, |n, _| n.register(9, fwd))
        .expect("alive");
    p.net.hold(id(1).addr, 2);
    let told = Told::default();
    for k in 1..=4u64 {
        send_waiting(&mut p.rt, &p.b, rec.r.pid(), k, &told);
    }
    assert_eq!(*told.borrow(), [Some(Ok(())), Some(Ok(()))], "1, 2 sent");
    for m in ["p1", "p2"] {
        send_waiting(&mut p.rt, &p.b, Pid::new(id(1), 9), m.to_string(), &told);
    }
    assert_eq!(told.borrow().len(), 2, "the others wait");
    assert_eq!(status(&mut p.rt, &p.b).waiting_sends, 4);
    (told, plain)
}

#[test]
fn node_a_rejoin_refuses_once_each_the_sends_that_waited_for_credit_or_room_in_the_old_name() {
    let mut p = pair();
    let rec = serve_rec(&mut p.rt, &p.a);
    let (told, plain) = sends_waiting_in_the_old_name(&mut p, &rec);
    let old = p.b_id();
    p.rejoin();
    let refused = Some(Err(SendError::Rejoined(old)));
    assert_eq!(
        *told.borrow(),
        [
            Some(Ok(())),
            Some(Ok(())),
            refused.clone(),
            refused.clone(),
            refused.clone(),
            refused
        ],
        "each told once: those waiting refused in the old name"
    );
    assert_eq!(status(&mut p.rt, &p.b).waiting_sends, 0);
    // a reads again: what b sent in its old name is dropped there, and
    // nothing that waited goes after the rejoin.
    p.net.release(id(1).addr);
    p.rt.advance(Duration::from_secs(5));
    assert!(rec.got.borrow().is_empty(), "{:?}", rec.got.borrow());
    assert!(plain.borrow().is_empty(), "{:?}", plain.borrow());
    assert_eq!(told.borrow().len(), 6, "no second answer");
    assert!(stats(&mut p.rt, &p.a).from_down_nodes >= 2);
}

#[test]
fn node_a_rejoined_sender_gets_credit_afresh_and_all_it_sends_arrives_in_order_within_the_bound() {
    let mut p = pair();
    let rec = serve_rec(&mut p.rt, &p.a);
    // b used up its credit and asked for more, in its old name.
    let (_told, _plain) = sends_waiting_in_the_old_name(&mut p, &rec);
    let new = p.rejoin();
    p.net.release(id(1).addr);
    p.rt.run();
    // After the rejoin: a burst, more than the mailbox holds.
    let told = Told::default();
    let t = told.clone();
    let to = rec.r.pid();
    p.b.query(&mut p.rt.s, |n, cx| {
        for k in 100..120u64 {
            let t = t.clone();
            n.send_when_room(cx, to, k, Ret::new(move |x| t.borrow_mut().push(x)));
        }
    })
    .expect("alive");
    p.rt.advance(Duration::from_secs(5));
    assert_eq!(
        *told.borrow(),
        vec![Some(Ok(())); 20],
        "each sent, told once"
    );
    assert_eq!(
        *rec.got.borrow(),
        (100..120).collect::<Vec<u64>>(),
        "all arrived, in order, none sent before the rejoin"
    );
    let mb = rec.addr.stats().expect("a mailbox");
    assert_eq!(mb.rejected_full, 0);
    assert!(mb.high_water <= BOUND, "over the bound: {}", mb.high_water);
    assert_eq!(stats(&mut p.rt, &p.a).credit_violations, 0);
    assert_eq!(status(&mut p.rt, &p.b).waiting_sends, 0, "nothing stuck");
    assert_eq!(status(&mut p.rt, &p.b).me, new);
}

/// Two nodes; `a` sent four to `b`'s credited child (in `b`'s first
/// name), all handled.
fn a_sent_four_to_b() -> (Pair, Served, Told) {
    let mut p = pair();
    let rec = serve_rec(&mut p.rt, &p.b);
    let told = Told::default();
    for k in 1..=4u64 {
        send_waiting(&mut p.rt, &p.a, rec.r.pid(), k, &told);
    }
    assert_eq!(*rec.got.borrow(), [1, 2, 3, 4]);
    (p, rec, told)
}

#[test]
fn node_a_rejoined_grantor_grants_afresh_never_past_the_room() {
    let (mut p, rec, told) = a_sent_four_to_b();
    let new = p.rejoin();
    // b's child stops taking messages: only the room granted afresh
    // may fill its mailbox.
    rec.sup
        .terminate_child(&mut p.rt.s, "rec")
        .expect("terminates");
    p.rt.run();
    let to = Pid::new(new, rec.r.pid().device);
    for k in 5..=14u64 {
        send_waiting(&mut p.rt, &p.a, to, k, &told);
    }
    p.rt.advance(Duration::from_secs(5));
    assert!(
        rec.addr.held() <= BOUND,
        "over the bound: {}",
        rec.addr.held()
    );
    assert_eq!(stats(&mut p.rt, &p.b).credit_violations, 0);
    rec.sup.restart_child(&mut p.rt.s, "rec").expect("restarts");
    p.rt.advance(Duration::from_secs(5));
    assert_eq!(
        *told.borrow(),
        vec![Some(Ok(())); 14],
        "each sent, told once"
    );
    assert_eq!(*rec.got.borrow(), (1..=14).collect::<Vec<u64>>());
    let mb = rec.addr.stats().expect("a mailbox");
    assert_eq!(mb.rejected_full, 0);
    assert!(mb.high_water <= BOUND, "over the bound: {}", mb.high_water);
    assert_eq!(stats(&mut p.rt, &p.b).credit_violations, 0);
}

#[test]
fn node_a_grant_for_an_old_incarnation_is_dropped_by_the_new_one() {
    let mut p = pair();
    let rec = serve_rec(&mut p.rt, &p.a);
    // The grant answering b's first ask is held on its way: a's control
    // queue to b refuses it once, so it goes as data, which b reads
    // slowly.
    p.net.hold(id(2).addr, 10);
    p.net.refuse_control(id(2).addr, 1);
    let told = Told::default();
    send_waiting(&mut p.rt, &p.b, rec.r.pid(), 1, &told);
    assert!(told.borrow().is_empty(), "waits for the grant held");
    let old = p.b_id();
    p.rejoin();
    assert_eq!(*told.borrow(), [Some(Err(SendError::Rejoined(old)))]);
    // The grant for b's old name arrives now: b's new incarnation has
    // no credit from it.
    p.net.release(id(2).addr);
    p.rt.run();
    let first =
        p.b.query(&mut p.rt.s, |n, _| n.try_send(rec.r.pid(), 2u64))
            .expect("alive");
    assert!(
        matches!(first, Err(TrySendError::Full(2))),
        "no credit yet: {first:?}"
    );
    p.rt.run();
    for k in 3..=8u64 {
        send_waiting(&mut p.rt, &p.b, rec.r.pid(), k, &told);
    }
    assert_eq!(told.borrow().len(), 7, "each told once");
    assert_eq!(*rec.got.borrow(), [3, 4, 5, 6, 7, 8]);
    assert_eq!(stats(&mut p.rt, &p.a).credit_violations, 0);
}

#[test]
fn node_a_credit_sync_for_an_old_incarnation_is_dropped_by_the_new_one() {
    let (mut p, rec, told) = a_sent_four_to_b();
    // The link comes up again: a tells b (as data, which b reads
    // slowly) that it sent four; the count waits on its way.
    p.net.hold(id(2).addr, 10);
    p.net.reconnect(id(1).addr, id(2).addr);
    p.rt.run();
    let new = p.rejoin();
    // a sends two to b's new incarnation, granted afresh; they wait
    // behind the count for b's old name.
    for k in 5..=6u64 {
        send_waiting(&mut p.rt, &p.a, Pid::new(new, rec.r.pid().device), k, &told);
    }
    assert_eq!(*told.borrow(), vec![Some(Ok(())); 6]);
    p.net.release(id(2).addr);
    p.rt.run();
    assert_eq!(*rec.got.borrow(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        stats(&mut p.rt, &p.b).credit_violations,
        0,
        "the old count made no room: both came with credit"
    );
}

#[test]
fn node_a_message_from_a_node_declared_down_handled_later_is_not_regranted() {
    let mut p = pair();
    let rec = serve_rec(&mut p.rt, &p.a);
    // a's child is not running: what arrives waits in its mailbox.
    rec.sup
        .terminate_child(&mut p.rt.s, "rec")
        .expect("terminates");
    p.rt.run();
    let told = Told::default();
    for k in 1..=2u64 {
        send_waiting(&mut p.rt, &p.b, rec.r.pid(), k, &told);
    }
    assert_eq!(*told.borrow(), vec![Some(Ok(())); 2]);
    assert_eq!(rec.addr.held(), 2);
    p.rejoin();
    // Handled after a declared b's old incarnation down: its room is
    // free again, and granted to no one.
    rec.sup.restart_child(&mut p.rt.s, "rec").expect("restarts");
    p.rt.run();
    assert_eq!(*rec.got.borrow(), [1, 2]);
    assert_eq!(
        local_room(&mut p.rt, &p.a, rec.r.pid(), 6),
        BOUND as u64,
        "the whole mailbox is free"
    );
}

#[test]
fn node_its_own_messages_handled_after_it_rejoined_are_not_regranted() {
    let mut p = pair();
    let rec = serve_rec(&mut p.rt, &p.b);
    // The same incarnation: local sends handled open no account.
    let here = rec.r.pid();
    assert_eq!(local_room(&mut p.rt, &p.b, here, 6), BOUND as u64);
    assert_eq!(local_room(&mut p.rt, &p.b, here, 6), BOUND as u64);
    // b's child is not running: b's local sends wait in its mailbox,
    // and are handled after b rejoined.
    rec.sup
        .terminate_child(&mut p.rt.s, "rec")
        .expect("terminates");
    p.rt.run();
    assert_eq!(local_room(&mut p.rt, &p.b, here, 2), 2);
    let new = p.rejoin();
    rec.sup.restart_child(&mut p.rt.s, "rec").expect("restarts");
    p.rt.run();
    assert_eq!(rec.got.borrow().len(), 2 * BOUND + 2);
    let here = Pid::new(new, here.device);
    assert_eq!(
        local_room(&mut p.rt, &p.b, here, 6),
        BOUND as u64,
        "the whole mailbox is free"
    );
    assert_eq!(local_room(&mut p.rt, &p.b, here, 6), BOUND as u64);
}

/// A server on `a` (device 77) that keeps each request's `Ret`, to
/// answer later.
fn slow_server(p: &mut Pair) -> Seen<Ret<u64>> {
    let kept: Seen<Ret<u64>> = Seen::default();
    let k = kept.clone();
    let serve = Fwd::new(move |(_, ret): (u64, Ret<u64>)| k.borrow_mut().push(ret));
    p.a.query(&mut p.rt.s, |n, _| n.register_ask(77, serve))
        .expect("alive");
    kept
}

type Replies = Seen<Option<Result<u64, AskError>>>;

/// `b` asks `a`'s device 77; the answer goes to `replies`.
fn ask_a(p: &mut Pair, replies: &Replies) {
    let r = replies.clone();
    p.b.query(&mut p.rt.s, |n, _| {
        n.ask(
            Pid::new(id(1), 77),
            21u64,
            Ret::new(move |x| r.borrow_mut().push(x)),
        )
    })
    .expect("alive");
    p.rt.run();
}

#[test]
fn node_a_reply_to_an_incarnation_declared_down_is_not_sent() {
    let mut p = pair();
    let kept = slow_server(&mut p);
    let replies = Replies::default();
    ask_a(&mut p, &replies);
    assert_eq!(kept.borrow().len(), 1, "the request arrived");
    p.rejoin();
    // a answers after it declared b's old incarnation down: the reply
    // goes through the node, which sends nothing to it (b's new
    // incarnation listens at the same address).
    let before = stats(&mut p.rt, &p.a).frames_out;
    let ret = kept.borrow_mut().pop().expect("kept");
    ret.ret(42);
    p.rt.run();
    assert_eq!(stats(&mut p.rt, &p.a).frames_out, before, "nothing sent");
    assert!(
        !replies.borrow().contains(&Some(Ok(42))),
        "{:?}",
        replies.borrow()
    );
}

#[test]
fn node_an_ask_made_before_a_rejoin_is_answered_once_as_rejoined() {
    let mut p = pair();
    let kept = slow_server(&mut p);
    let replies = Replies::default();
    ask_a(&mut p, &replies);
    let old = p.b_id();
    p.rejoin();
    assert_eq!(
        *replies.borrow(),
        [Some(Err(AskError::Rejoined(old)))],
        "answered at the rejoin: a drops what comes in the old name"
    );
    // However late a answers, b's ask stays answered once.
    if let Some(ret) = kept.borrow_mut().pop() {
        ret.ret(42);
    }
    p.rt.advance(Duration::from_secs(5));
    assert_eq!(replies.borrow().len(), 1);
}

#[test]
fn node_a_lookup_made_before_a_rejoin_is_answered_once_as_rejoined() {
    let mut p = pair();
    let old = p.b_id();
    p.cut_off();
    // b still counts a as a member: its lookup goes, in the old name,
    // and is lost on the way.
    let (found, fwd) = recorder::<Option<Result<Ref<u64>, LookupError>>>();
    p.b.query(&mut p.rt.s, |n, _| {
        n.lookup::<u64>(id(1), "anything", Ret::new(move |x| fwd.fwd(x)))
    })
    .expect("alive");
    p.rt.run();
    assert!(found.borrow().is_empty(), "waits for a's answer");
    p.come_back();
    p.rt.advance(Duration::from_secs(5));
    assert_eq!(*found.borrow(), [Some(Err(LookupError::Rejoined(old)))]);
}

/// A device that does nothing but be linked.
struct Idle;

impl Idle {
    fn init(_: CX![]) -> Option<Self> {
        Some(Idle)
    }
}

/// Linkable devices: on `a`, `w` that traps its remote links (into the
/// record returned) and, if `plain`, `v` that does not; on `b`, `t`. All
/// registered with their nodes.
struct Linkable {
    w: DeviceOwn<Idle>,
    v: Option<DeviceOwn<Idle>>,
    t: DeviceOwn<Idle>,
    trapped: Seen<RemoteDown>,
}

fn linkable(p: &mut Pair, plain: bool) -> Linkable {
    let w = device!(p.rt.s, Idle::init());
    let v = plain.then(|| device!(p.rt.s, Idle::init()));
    let t = device!(p.rt.s, Idle::init());
    p.rt.run();
    let (trapped, trap) = recorder::<RemoteDown>();
    p.a.query(&mut p.rt.s, |n, cx| {
        for d in std::iter::once(&w).chain(&v) {
            n.register_device(d, Fwd::new(|_: u64| ()));
        }
        n.trap(cx, &w, trap)
    })
    .expect("alive")
    .expect("w traps");
    p.b.query(&mut p.rt.s, |n, _| {
        n.register_device(&t, Fwd::new(|_: u64| ()))
    })
    .expect("alive");
    Linkable { w, v, t, trapped }
}

/// Rule 114: `b`, back on the network and not yet told that `a` declared
/// it down, links its device to two of `a`'s in its old name (twice
/// over). `a` drops those frames, but each link ends at once, as a watch
/// of a device of a lost node: the device that traps hears `Lost` once,
/// the one that does not dies of it. (`b` clears its links when it
/// rejoins, as the other side's watchers have heard `Lost`; without this
/// they never would have.)
#[test]
fn node_a_link_asked_in_the_name_of_an_incarnation_declared_down_ends_at_once_as_lost_once() {
    let mut p = pair();
    let Linkable { w, v, t, trapped } = linkable(&mut p, true);
    let v = v.expect("a plain device");
    let (wp, vp) = (Pid::new(id(1), w.id().get()), Pid::new(id(1), v.id().get()));
    p.cut_off();
    let old = p.b_id();
    let b = &p.b;
    p.net.attach(
        old.addr,
        fwd_to!([b], packet() as (stakplane::cluster::Packet)),
    );
    p.b.query(&mut p.rt.s, |n, cx| {
        for _ in 0..2 {
            n.link(cx, &t, wp, LinkMode::Notify).expect("t is alive");
            n.link(cx, &t, vp, LinkMode::Notify).expect("t is alive");
        }
    })
    .expect("alive");
    p.rt.advance(Duration::from_secs(10));
    assert!(p.b_id().incarnation > old.incarnation, "b rejoined");
    let tp = Pid::new(old, t.id().get());
    let got: Vec<(Pid, String)> = trapped
        .borrow()
        .iter()
        .map(|d| (d.pid, d.cause.to_string()))
        .collect();
    assert_eq!(got, [(tp, Cause::Lost.to_string())], "once, as Lost");
    let cause = v.cause().map(|c| c.to_string());
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains(&tp.to_string()) && c.contains(&Cause::Lost.to_string())),
        "v died of the lost link: {cause:?}"
    );
    assert!(t.is_alive(), "b's device lives on");
}

/// Rule 114, the other order: the link is made while both are up, `a`
/// declares `b` down (its device traps `Lost`), and `b`, back and not yet
/// told, asks for the same link again in its old name: nothing more.
#[test]
fn node_a_link_told_lost_is_not_told_again_when_the_lost_incarnation_asks_for_it_again() {
    let mut p = pair();
    let Linkable { w, t, trapped, .. } = linkable(&mut p, false);
    let wp = Pid::new(id(1), w.id().get());
    let link = |p: &mut Pair| {
        p.b.query(&mut p.rt.s, |n, cx| {
            n.link(cx, &t, wp, LinkMode::Notify).expect("t is alive")
        })
        .expect("alive");
    };
    link(&mut p);
    p.rt.run();
    assert!(trapped.borrow().is_empty(), "linked, nothing ended");
    let old = p.b_id();
    p.cut_off();
    let tp = Pid::new(old, t.id().get());
    let lost = [(tp, Cause::Lost.to_string())];
    let got = |trapped: &Seen<RemoteDown>| -> Vec<(Pid, String)> {
        trapped
            .borrow()
            .iter()
            .map(|d| (d.pid, d.cause.to_string()))
            .collect()
    };
    assert_eq!(got(&trapped), lost, "a declared b down: Lost, once");
    let b = &p.b;
    p.net.attach(
        old.addr,
        fwd_to!([b], packet() as (stakplane::cluster::Packet)),
    );
    link(&mut p);
    p.rt.advance(Duration::from_secs(10));
    assert!(p.b_id().incarnation > old.incarnation, "b rejoined");
    assert_eq!(got(&trapped), lost, "not told again");
}

/// Rule 114a, the rejoin side: a node that rejoined takes what a peer
/// that has not heard of it yet writes to its old incarnation — the same
/// node, its ids and tags — but for a credit grant, which holds for the
/// incarnation it names only.
#[test]
fn node_a_rejoined_node_takes_frames_for_its_old_incarnation_but_a_credit_grant() {
    let mut p = pair();
    let old = p.b_id();
    let (got, fwd) = recorder::<u64>();
    p.b.query(&mut p.rt.s, |n, _| n.register(9, fwd))
        .expect("alive");
    let new = p.rejoin();
    let send = encoded(Frame::Send {
        to: 9,
        from: Some(Pid::new(id(1), 0)),
        // A `u64` 5, as postcard writes it.
        payload: vec![5],
        dst: old,
    });
    call!([p.b], packet(send));
    p.rt.run();
    assert_eq!(*got.borrow(), [5], "taken in its old name");
    let stale = |p: &mut Pair| {
        p.b.query(&mut p.rt.s, |n, _| n.stats().stale_frames)
            .expect("alive")
    };
    assert_eq!(stale(&mut p), 0);
    let grant = encoded(Frame::Credit {
        target: 9,
        limit: 10,
        dst: old,
        from: id(1),
    });
    call!([p.b], packet(grant));
    p.rt.run();
    assert_eq!(stale(&mut p), 1, "a grant to {old}, not {new}");
}

/// Rule 111 after a long partition: two nodes cut apart for longer than
/// foca's default `remove_down_after` (24 hours) each declare the other
/// down. Healed, neither is told `Up` of an incarnation it declared down
/// (it would count it a member and drop its frames for good); they meet
/// again as newer incarnations.
#[test]
fn node_an_incarnation_declared_down_is_never_told_up_again_after_a_long_partition() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a_events, fa) = recorder();
    let a = node_with(&mut rt, &net, id(1), MembershipConfig::lan(3, 1), fa);
    let b = node_with(
        &mut rt,
        &net,
        id(2),
        MembershipConfig::lan(3, 2),
        Fwd::new(|_| ()),
    );
    rt.run();
    join(&mut rt, &b, id(1));
    net.cut(id(2).addr);
    rt.advance(Duration::from_secs(25 * 3600));
    net.attach(
        id(2).addr,
        fwd_to!([b], packet() as (stakplane::cluster::Packet)),
    );
    rt.advance(Duration::from_secs(60));
    let events = a_events.borrow().clone();
    let down = events
        .iter()
        .position(|e| *e == MemberEvent::Down(id(2)))
        .expect("declared down in the partition");
    assert!(
        !events[down..].contains(&MemberEvent::Up(id(2))),
        "told up again: {events:?}"
    );
    let members = a
        .query(&mut rt.s, |n, _| n.members().clone())
        .expect("alive");
    assert!(!members.contains(&id(2)), "a member again: {members:?}");
    assert!(
        members
            .iter()
            .any(|m| m.addr == id(2).addr && m.incarnation > 1),
        "met again as a newer incarnation: {members:?}, {events:?}"
    );
}

/// Rules 122a and 114: a `Link` refused for rule 122a's bound whose
/// refusal is lost in flight, said again by its incarnation after this
/// node declared it down, is dropped as refused: not taken and told
/// `Lost`, which would tell the device that would have watched a second
/// time (it heard of the refusal), and kill one that does not trap.
#[test]
fn node_a_refused_link_said_again_by_a_lost_incarnation_is_not_told_again() {
    let mut p = pair();
    p.a.query(&mut p.rt.s, |n, _| n.set_watch_limit(0))
        .expect("alive");
    let log = common::new_log();
    let d = common::dev(&mut p.rt, "on_a", &log);
    let bd = common::dev(&mut p.rt, "on_b", &log);
    p.rt.run();
    let (trapped, trap) = recorder::<RemoteDown>();
    p.a.query(&mut p.rt.s, |n, cx| n.trap(cx, &d, trap))
        .expect("alive")
        .expect("trapping");
    // a's refusal (its Unwatch) is lost in flight.
    p.net.lose(id(1).addr, id(2).addr, 1);
    let on_a = Pid::new(id(1), d.id().get());
    p.b.query(&mut p.rt.s, |n, cx| n.link(cx, &bd, on_a, LinkMode::Notify))
        .expect("alive")
        .expect("linked");
    p.rt.run();
    assert_eq!(stats(&mut p.rt, &p.a).refused_watches, 1);
    let heard = |t: &Seen<RemoteDown>| -> Vec<String> {
        t.borrow().iter().map(|d| d.cause.to_string()).collect()
    };
    let refusal = heard(&trapped);
    assert_eq!(refusal.len(), 1, "told of the refusal: {refusal:?}");
    p.cut_off();
    // b is back and, before it hears it is down, says its Link again.
    let b = &p.b;
    p.net.attach(
        id(2).addr,
        fwd_to!([b], packet() as (stakplane::cluster::Packet)),
    );
    p.net.reconnect(id(1).addr, id(2).addr);
    p.rt.run();
    assert_eq!(heard(&trapped), refusal, "never linked, told once");
    assert!(d.is_alive(), "{:?}", d.line().cause());
}

/// Rule 121 across a rejoin: a link `a` made by which a device of `b`
/// watches one of `a`'s, asked again by `b` in its new name when it
/// rejoined (it no longer knows who made the link), is undone by `a`'s
/// unlink: the device of `b` hears nothing of the end that follows.
#[test]
fn node_an_unlink_undoes_a_link_the_other_node_made_before_this_one_rejoined() {
    let mut p = pair();
    let x = device!(p.rt.s, Idle::init());
    let t = device!(p.rt.s, Idle::init());
    p.rt.run();
    let (trapped, trap) = recorder::<RemoteDown>();
    p.a.query(&mut p.rt.s, |n, _| {
        n.register_device(&x, Fwd::new(|_: u64| ()))
    })
    .expect("alive");
    p.b.query(&mut p.rt.s, |n, cx| {
        n.register_device(&t, Fwd::new(|_: u64| ()));
        n.trap(cx, &t, trap)
    })
    .expect("alive")
    .expect("t traps");
    let old = p.b_id();
    let (xl, tp) = (x.line(), Pid::new(old, t.id().get()));
    p.a.query(&mut p.rt.s, |n, cx| n.link(cx, &xl, tp, LinkMode::Notify))
        .expect("alive")
        .expect("links");
    p.rt.run();
    let new = p.rejoin();
    p.rt.run();
    assert_eq!(
        status(&mut p.rt, &p.a).watched_here,
        1,
        "t watches x still, asked again in b's new name"
    );
    let tp = Pid::new(new, t.id().get());
    p.a.query(&mut p.rt.s, |n, _| n.unlink(&xl, tp, LinkMode::Notify))
        .expect("alive");
    p.rt.run();
    assert_eq!(status(&mut p.rt, &p.a).watched_here, 0, "unlinked");
    x.kill("a fault after the unlink").expect("alive");
    p.rt.run();
    assert!(
        trapped.borrow().is_empty(),
        "unlinked: {:?}",
        trapped.borrow()
    );
}
