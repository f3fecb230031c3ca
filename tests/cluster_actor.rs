//! Declarative remote actors: served by a node, addressed by a typed
//! `RemoteRef` from any node, on the in-memory network and virtual time
//! (rule 126 in `src/cluster/mod.rs`).
#![cfg(feature = "cluster")]

mod common;

use common::cluster::{addr_in, join, node_on, recorder, Seen};
use common::Rt;
use serde::{Deserialize, Serialize};
use stakplane::cluster::membership::MemberEvent;
use stakplane::cluster::{
    AskError, Frame, LookupError, MemNet, Node, NodeId, Pid, RemoteActor, RemoteRef, SendError,
    TrySendError, CREDITED,
};
use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

fn id(n: u8) -> NodeId {
    NodeId::new(addr_in(4, n), 1)
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Add(u64),
    Crash,
}

/// A counter any node can add to and read; it keeps who sent what.
struct Counter {
    n: u64,
    senders: Seen<Option<Pid>>,
}

impl Counter {
    fn init(_: CX![], senders: Seen<Option<Pid>>) -> Option<Self> {
        Some(Counter { n: 0, senders })
    }
}

impl RemoteActor for Counter {
    type Msg = Op;
    type Ask = ();
    type Reply = u64;

    fn handle(&mut self, _: CX![], op: Op, from: Option<Pid>) {
        self.senders.borrow_mut().push(from);
        match op {
            Op::Add(k) => self.n += k,
            Op::Crash => panic!("counter told to crash"),
        }
    }

    fn ask(&mut self, _: CX![], (): (), _: Option<Pid>, reply: Ret<u64>) {
        reply.ret(self.n);
    }
}

/// An actor that takes messages and answers no request.
struct Mute;
impl Mute {
    fn init(_: CX![]) -> Option<Self> {
        Some(Mute)
    }
}
impl RemoteActor for Mute {
    type Msg = ();
    type Ask = ();
    type Reply = ();
    fn handle(&mut self, _: CX![], (): (), _: Option<Pid>) {}
}

fn quiet() -> Fwd<MemberEvent> {
    Fwd::new(|_| ())
}

fn two(rt: &mut Rt, net: &MemNet) -> (DeviceOwn<Node>, DeviceOwn<Node>) {
    let a = node_on(rt, net, id(1), quiet());
    let b = node_on(rt, net, id(2), quiet());
    rt.run();
    join(rt, &b, id(1));
    (a, b)
}

type Replies = Seen<Option<Result<u64, AskError>>>;

fn read(rt: &mut Rt, node: &DeviceOwn<Node>, to: RemoteRef<Counter>, seen: &Replies) {
    let s = seen.clone();
    node.query(&mut rt.s, |n, cx| {
        n.request(cx, to, (), Ret::new(move |r| s.borrow_mut().push(r)))
    })
    .expect("alive");
    rt.run();
}

/// Asks node 2, from `node`, for its actor named `name` as a `Counter`;
/// the answer comes once the queue runs.
fn lookup_counter(
    rt: &mut Rt,
    node: &DeviceOwn<Node>,
    name: &str,
) -> Seen<Option<Result<RemoteRef<Counter>, LookupError>>> {
    let (found, fwd) = recorder();
    node.query(&mut rt.s, |n, cx| {
        n.lookup_actor::<Counter>(cx, id(2), name, Ret::new(move |r| fwd.fwd(r)))
    })
    .expect("alive");
    found
}

/// A supervised `Counter` child named "counter" (its senders not kept).
fn counter_spec() -> ChildSpec<Counter> {
    let (senders, _) = recorder::<Option<Pid>>();
    ChildSpec::worker("counter", move |core| {
        Ok(device!(core, Counter::init(senders.clone())).into())
    })
}

/// Starts `spec` under a supervisor of `sup`'s policy and serves it on
/// `node` as "counter": the supervisor and the child's remote address.
fn serve_supervised(
    rt: &mut Rt,
    node: &DeviceOwn<Node>,
    spec: ChildSpec<Counter>,
    sup: SupervisorSpec,
) -> (Supervisor, RemoteRef<Counter>) {
    let addr = spec.addr();
    let sup = Supervisor::start(&mut rt.s, sup.child(spec)).expect("starts");
    rt.run();
    let line = sup.line().clone();
    let r = node
        .query(&mut rt.s, |n, cx| n.serve_child(cx, "counter", addr, &line))
        .expect("alive");
    (sup, r)
}

#[test]
fn actor_tell_and_request_give_the_same_result_locally_and_remotely() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (senders, _) = recorder::<Option<Pid>>();
    let counter = device!(rt.s, Counter::init(senders.clone()));
    rt.run();
    let here = b
        .query(&mut rt.s, |n, _| n.serve_named("counter", &counter))
        .expect("alive");
    // a finds it by name, with its type.
    let found = lookup_counter(&mut rt, &a, "counter");
    rt.run();
    let there = found
        .borrow_mut()
        .remove(0)
        .expect("answered")
        .expect("found");
    assert_eq!(there, here);
    // The same calls from both nodes.
    a.query(&mut rt.s, |n, _| n.tell(there, Op::Add(5)))
        .expect("alive")
        .expect("sent");
    rt.run();
    b.query(&mut rt.s, |n, _| n.tell(here, Op::Add(2)))
        .expect("alive")
        .expect("sent");
    let log = common::new_log();
    let me = common::dev(&mut rt, "sender", &log);
    rt.run();
    a.query(&mut rt.s, |n, _| n.send_from(&me, there.pid(), Op::Add(1)))
        .expect("alive")
        .expect("sent");
    rt.run();
    let replies: Replies = Default::default();
    read(&mut rt, &a, there, &replies);
    read(&mut rt, &b, here, &replies);
    assert_eq!(*replies.borrow(), [Some(Ok(8)), Some(Ok(8))]);
    // The same request as a future, from a task.
    let out: Rc<RefCell<Option<u64>>> = Rc::default();
    let (o, node) = (out.clone(), a.clone());
    stakplane::task::spawner(&mut rt.s).spawn_detached(async move {
        let reply = stakplane::ask!([node], request(there, ())).await;
        *o.borrow_mut() = reply.ok().and_then(Result::ok);
    });
    rt.run();
    assert_eq!(*out.borrow(), Some(8), "awaited, the same reply");
    assert_eq!(
        *senders.borrow(),
        [
            Some(Pid::new(id(1), 0)),
            Some(Pid::new(id(2), 0)),
            Some(Pid::new(id(1), me.id().get())),
        ],
        "each handler is told its sender"
    );
}

#[test]
fn actor_lookup_of_another_actor_type_and_an_unanswered_request_are_typed() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let mute = device!(rt.s, Mute::init());
    rt.run();
    let r = b
        .query(&mut rt.s, |n, _| n.serve_named("mute", &mute))
        .expect("alive");
    let found = lookup_counter(&mut rt, &a, "mute");
    let (asked, afwd) = recorder::<Option<Result<(), AskError>>>();
    a.query(&mut rt.s, |n, cx| {
        n.request(cx, r, (), Ret::new(move |x| afwd.fwd(x)))
    })
    .expect("alive");
    rt.run();
    assert!(matches!(
        found.borrow()[0],
        Some(Err(LookupError::WrongType(_)))
    ));
    assert_eq!(*asked.borrow(), [Some(Err(AskError::Dropped))]);
}

#[test]
fn actor_a_served_child_keeps_its_address_across_restarts() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (sup, r) = serve_supervised(
        &mut rt,
        &b,
        counter_spec(),
        SupervisorSpec::one_for_one().intensity(5, Duration::from_secs(60)),
    );
    let tell = |rt: &mut Rt, op: Op| {
        a.query(&mut rt.s, |n, _| n.tell(r, op))
            .expect("alive")
            .expect("sent");
        rt.run();
    };
    tell(&mut rt, Op::Add(3));
    let replies: Replies = Default::default();
    read(&mut rt, &a, r, &replies);
    common::quiet_test_panics();
    tell(&mut rt, Op::Crash);
    // Restarted: the same address reaches the new incarnation.
    tell(&mut rt, Op::Add(4));
    read(&mut rt, &a, r, &replies);
    assert_eq!(*replies.borrow(), [Some(Ok(3)), Some(Ok(4))]);
    // A deleted child: its messages are refused where they land.
    sup.terminate_child(&mut rt.s, "counter")
        .expect("terminates");
    rt.run();
    let local = b
        .query(&mut rt.s, |n, _| n.tell(r, Op::Add(1)))
        .expect("alive");
    assert_eq!(local, Err(SendError::NotRunning));
}

#[test]
fn actor_credit_keeps_a_fast_remote_sender_within_a_slow_mailbox() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let spec = counter_spec().hold(4, Overflow::Reject);
    let stats_of = spec.addr();
    let (_sup, r) = serve_supervised(&mut rt, &b, spec, SupervisorSpec::one_for_one());
    assert_ne!(r.pid().device & CREDITED, 0, "the address says: credit");
    // A burst of 100 from a, faster than b's child takes them.
    let (done, done_fwd) = recorder::<Option<Result<(), SendError>>>();
    a.query(&mut rt.s, |n, cx| {
        assert!(
            matches!(n.try_send(r.pid(), Op::Add(1)), Err(TrySendError::Full(_))),
            "no credit yet: the message is given back"
        );
        for _ in 0..100 {
            let d = done_fwd.clone();
            n.send_when_room(cx, r.pid(), Op::Add(1), Ret::new(move |x| d.fwd(x)));
        }
    })
    .expect("alive");
    rt.run();
    let replies: Replies = Default::default();
    read(&mut rt, &a, r, &replies);
    assert_eq!(*replies.borrow(), [Some(Ok(100))], "all arrived");
    assert_eq!(*done.borrow(), vec![Some(Ok(())); 100], "each told once");
    let mb = stats_of.stats().expect("a holding child has a mailbox");
    assert_eq!(mb.rejected_full, 0, "never refused for want of room");
    assert!(
        mb.high_water <= 4,
        "never over its bound: {}",
        mb.high_water
    );
    let b_stats = b.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(b_stats.credit_violations, 0);
}

#[test]
fn actor_a_sender_holding_credit_in_flight_is_not_stuck_when_its_target_goes() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let spec = counter_spec().hold(4, Overflow::Reject);
    let (sup, r) = serve_supervised(&mut rt, &b, spec, SupervisorSpec::one_for_one());
    // b reads slowly: data frames to it are held (credit frames pass).
    net.hold(id(2).addr, 100);
    let (done, done_fwd) = recorder::<Option<Result<(), SendError>>>();
    let send = |rt: &mut Rt, k: u64| {
        let d = done_fwd.clone();
        a.query(&mut rt.s, |n, cx| {
            n.send_when_room(cx, r.pid(), Op::Add(k), Ret::new(move |x| d.fwd(x)));
        })
        .expect("alive");
        rt.run();
    };
    // A window's worth (2 of a mailbox of 4) goes, and stays in flight.
    send(&mut rt, 1);
    send(&mut rt, 1);
    assert_eq!(done.borrow().len(), 2, "sent with their credit");
    // The third waits: a asks again, and b, seeing a's credit in flight,
    // waits for those messages to be handled before it grants more.
    send(&mut rt, 1);
    assert_eq!(done.borrow().len(), 2, "waits for credit");
    // The target goes before anything arrives: its grants go with it, and
    // the waiting send is released (and refused on b), not stuck.
    drop(sup);
    rt.run();
    net.release(id(2).addr);
    rt.run();
    assert_eq!(*done.borrow(), vec![Some(Ok(())); 3], "each told once");
    let b_stats = b.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(b_stats.dead_letters, 3, "all three refused on b, counted");
}

/// A credited child with a window of one (a mailbox of 2) served on b,
/// and a way to send to it from a with `send_when_room`, each answer
/// recorded.
type Told = Seen<Option<Result<(), SendError>>>;

fn window_of_one(rt: &mut Rt, b: &DeviceOwn<Node>) -> (Supervisor, RemoteRef<Counter>, Told) {
    let spec = counter_spec().hold(2, Overflow::Reject);
    let (sup, r) = serve_supervised(rt, b, spec, SupervisorSpec::one_for_one());
    (sup, r, Told::default())
}

fn send_from(rt: &mut Rt, a: &DeviceOwn<Node>, r: RemoteRef<Counter>, done: &Told) {
    let d = done.clone();
    a.query(&mut rt.s, |n, cx| {
        n.send_when_room(
            cx,
            r.pid(),
            Op::Add(1),
            Ret::new(move |x| d.borrow_mut().push(x)),
        );
    })
    .expect("alive");
    rt.run();
}

#[test]
fn actor_a_grant_lost_in_flight_is_given_again_when_the_link_comes_back() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (_sup, r, done) = window_of_one(&mut rt, &b);
    // The grant answering a's first ask is lost with a connection.
    net.lose(id(2).addr, id(1).addr, 1);
    send_from(&mut rt, &a, r, &done);
    assert!(done.borrow().is_empty(), "waits for the lost grant");
    net.reconnect(id(1).addr, id(2).addr);
    rt.run();
    assert_eq!(*done.borrow(), [Some(Ok(()))], "granted again, sent");
    let replies: Replies = Default::default();
    read(&mut rt, &a, r, &replies);
    assert_eq!(*replies.borrow(), [Some(Ok(1))]);
}

#[test]
fn actor_credit_of_a_message_lost_in_flight_is_given_back_when_the_link_comes_back() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (_sup, r, done) = window_of_one(&mut rt, &b);
    send_from(&mut rt, &a, r, &done);
    // The second message is lost with a connection: b counts it as held
    // by a until told, and a window of one leaves a nothing to send.
    net.lose(id(1).addr, id(2).addr, 1);
    send_from(&mut rt, &a, r, &done);
    send_from(&mut rt, &a, r, &done);
    assert_eq!(done.borrow().len(), 2, "the third waits for credit");
    net.reconnect(id(1).addr, id(2).addr);
    rt.run();
    assert_eq!(*done.borrow(), vec![Some(Ok(())); 3], "each told once");
    let replies: Replies = Default::default();
    read(&mut rt, &a, r, &replies);
    assert_eq!(*replies.borrow(), [Some(Ok(2))], "the lost one stays lost");
    let b_stats = b.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(b_stats.credit_violations, 0);
}

/// Rule 127: the senders a credited target keeps accounts for are at
/// most one incarnation per address. Asks, syncs and messages in the name
/// of other incarnations at a sender's address (older ones are gone, and
/// only that address's peer can name them) open no account beyond the
/// newest one's; a sync opens none.
#[test]
fn actor_credit_accounts_are_one_per_sender_address_whatever_incarnations_frames_name() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (_a, b) = two(&mut rt, &net);
    let spec = counter_spec().hold(4, Overflow::Reject);
    let (_sup, r) = serve_supervised(&mut rt, &b, spec, SupervisorSpec::one_for_one());
    let target = r.pid().device;
    let accounts = |rt: &mut Rt| common::cluster::status(rt, &b).credit_accounts;
    assert_eq!(accounts(&mut rt), 0);
    for incarnation in 1..=100 {
        let from = NodeId::new(id(1).addr, incarnation);
        for frame in [
            Frame::CreditSync {
                target,
                sent: 0,
                wants: false,
                dst: id(2),
                from,
            },
            Frame::CreditAsk {
                target,
                from,
                dst: id(2),
            },
        ] {
            call!([b], packet(common::cluster::encoded(frame)));
        }
    }
    rt.run();
    assert_eq!(accounts(&mut rt), 1, "the newest incarnation's only");
    // An older incarnation asking now is stale: nothing changes.
    let old = Frame::CreditAsk {
        target,
        from: id(1),
        dst: id(2),
    };
    call!([b], packet(common::cluster::encoded(old)));
    rt.run();
    assert_eq!(accounts(&mut rt), 1);
}

/// Rule 127: an ask for credit in the name of an older incarnation of a
/// sender's address (gone, stale) changes nothing: the newer one keeps
/// its account, and what it sends goes on arriving within its grants.
#[test]
fn actor_credit_asked_in_an_older_incarnations_name_leaves_the_newer_ones_account() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (_sup, r, done) = window_of_one(&mut rt, &b);
    send_from(&mut rt, &a, r, &done);
    assert_eq!(*done.borrow(), [Some(Ok(()))]);
    let stale = Frame::CreditAsk {
        target: r.pid().device,
        from: NodeId::new(id(1).addr, 0),
        dst: id(2),
    };
    call!([b], packet(common::cluster::encoded(stale)));
    rt.run();
    for _ in 0..3 {
        send_from(&mut rt, &a, r, &done);
    }
    assert_eq!(*done.borrow(), vec![Some(Ok(())); 4], "each sent");
    all_arrived_within_credit(&mut rt, (&a, &b), r, 4, 1);
}

/// Node `a` reads the total that credited target `r` on node `b`
/// summed: `total`, every send arrived; `b` counted no violation and
/// holds `accounts` credit accounts.
fn all_arrived_within_credit(
    rt: &mut Rt,
    (a, b): (&DeviceOwn<Node>, &DeviceOwn<Node>),
    r: RemoteRef<Counter>,
    total: u64,
    accounts: usize,
) {
    let replies: Replies = Default::default();
    read(rt, a, r, &replies);
    assert_eq!(*replies.borrow(), [Some(Ok(total))], "all arrived");
    let b_stats = b.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(b_stats.credit_violations, 0);
    assert_eq!(common::cluster::status(rt, b).credit_accounts, accounts);
}

/// Rule 127 with two senders on two nodes: a new sender's account opens
/// beside the other's (whatever their incarnations: only one of the same
/// address is stale): each one's sends all arrive, within the bound.
#[test]
fn actor_credit_accounts_of_two_sending_nodes_stand_side_by_side() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    // A later incarnation than a's at another address, first to send.
    let c = node_on(&mut rt, &net, NodeId::new(id(3).addr, 5), quiet());
    rt.run();
    join(&mut rt, &c, id(1));
    let (_sup, r, done_a) = window_of_one(&mut rt, &b);
    let done_c = Told::default();
    for _ in 0..3 {
        send_from(&mut rt, &c, r, &done_c);
        send_from(&mut rt, &a, r, &done_a);
    }
    assert_eq!(*done_a.borrow(), vec![Some(Ok(())); 3], "a's each sent");
    assert_eq!(*done_c.borrow(), vec![Some(Ok(())); 3], "c's each sent");
    all_arrived_within_credit(&mut rt, (&a, &b), r, 6, 2);
}

/// Rule 127: credit held is spent at once: a plain send to a credited
/// target goes when its sender holds credit for it (only one without
/// credit is given back).
#[test]
fn actor_credit_held_lets_a_plain_send_go_at_once() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (_sup, r, done) = window_of_one(&mut rt, &b);
    send_from(&mut rt, &a, r, &done);
    assert_eq!(*done.borrow(), [Some(Ok(()))]);
    let sent = a
        .query(&mut rt.s, |n, _| n.try_send(r.pid(), Op::Add(1)).is_ok())
        .expect("alive");
    assert!(sent, "credit held: sent at once");
    rt.run();
    let replies: Replies = Default::default();
    read(&mut rt, &a, r, &replies);
    assert_eq!(*replies.borrow(), [Some(Ok(2))], "both arrived");
}

/// Rule 127: a message that comes past its sender's grant (a sender that
/// does not keep to its credit, or frames in its name) is counted as a
/// credit violation, each one.
#[test]
fn actor_credit_a_message_past_its_senders_grant_is_counted_as_a_violation() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (_sup, r, done) = window_of_one(&mut rt, &b);
    send_from(&mut rt, &a, r, &done);
    assert_eq!(*done.borrow(), [Some(Ok(()))]);
    let violations = |rt: &mut Rt| b.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(violations(&mut rt).credit_violations, 0);
    // Sends in a's name, past what b granted it (a window of at most 2).
    let forged = 5;
    for _ in 0..forged {
        let send = Frame::Send {
            to: r.pid().device,
            from: Some(Pid::new(id(1), 7)),
            payload: vec![0, 1], // `Op::Add(1)` in postcard
            dst: id(2),
        };
        call!([b], packet(common::cluster::encoded(send)));
    }
    rt.run();
    let counted = violations(&mut rt).credit_violations;
    assert!(
        (forged - 2..=forged).contains(&counted),
        "each past the grant counted: {counted} of {forged}"
    );
}

/// Rules 127 and 122: a send waiting for credit from a node that is
/// lost is refused, once, with `NodeDown`; its credit account goes too.
#[test]
fn actor_a_send_waiting_for_credit_from_a_lost_node_is_refused_once() {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b) = two(&mut rt, &net);
    let (_sup, r, done) = window_of_one(&mut rt, &b);
    // The grant answering a's ask is lost: the send waits for credit.
    net.lose(id(2).addr, id(1).addr, 1);
    send_from(&mut rt, &a, r, &done);
    assert!(done.borrow().is_empty(), "waits for the lost grant");
    net.cut(id(2).addr);
    rt.advance(Duration::from_secs(60));
    assert_eq!(
        *done.borrow(),
        [Some(Err(SendError::NodeDown(id(2))))],
        "refused once"
    );
    assert_eq!(common::cluster::status(&mut rt, &a).credit_accounts, 0);
}
