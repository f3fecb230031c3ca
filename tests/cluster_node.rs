//! A node's remote sends, dead letters, bad packets and node-loss notices,
//! on the in-memory network and virtual time (rules 112–114 in
//! `src/cluster/mod.rs`).
#![cfg(feature = "cluster")]

mod common;

use common::cluster::{encoded, recorder, Seen};
use common::{End, Rt};
use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::{
    AskError, DeadLetter, Frame, LookupError, Node, NodeId, Packet, Pid, Ref, RemoteDown,
    SendError, WatchError, HELD_FOR_A_NODE,
};
use stakplane::cluster::{MemNet, Transport};
use stakplane::prelude::*;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, n], 7000))
}

/// Every answer `seen` holds, taken out; each must be an answer (`Some`),
/// not a `Ret` dropped unanswered.
fn answers<T>(seen: &Seen<Option<T>>) -> Vec<T> {
    seen.borrow_mut()
        .drain(..)
        .map(|a| a.expect("answered"))
        .collect()
}

/// A `Dev` named `name` on `rt`, ready.
fn ready_dev(rt: &mut Rt, name: &'static str) -> DeviceOwn<common::Dev> {
    let log = common::new_log();
    let d = common::dev(rt, name, &log);
    rt.run();
    d
}

/// Registers `d` on `node` under `name` with handler `fwd`: its typed
/// address.
fn named<M: serde::Serialize + serde::de::DeserializeOwned + 'static>(
    rt: &mut Rt,
    node: &DeviceOwn<Node>,
    name: &str,
    d: &impl DeviceRef,
    fwd: Fwd<M>,
) -> Ref<M> {
    node.query(&mut rt.s, |n, _| n.register_named(name, d, fwd))
        .expect("alive")
}

fn start(rt: &mut Rt, net: &MemNet, n: u8) -> DeviceOwn<Node> {
    let id = NodeId::new(addr(n), 1);
    let transport: Rc<dyn Transport> = Rc::new(net.clone());
    let node = device!(
        rt.s,
        Node::init(
            id,
            MembershipConfig::lan(3, u64::from(n)),
            transport,
            Fwd::new(|_: MemberEvent| ())
        )
    );
    net.attach(
        id.addr,
        fwd_to!([node], packet() as (stakplane::cluster::Packet)),
    );
    node
}

/// Two joined nodes, `a` and `b`, with a `String` inbox on `b` as device
/// 42; what it received.
fn two_nodes(rt: &mut Rt, net: &MemNet) -> (DeviceOwn<Node>, DeviceOwn<Node>, Seen<String>) {
    let a = start(rt, net, 1);
    let b = start(rt, net, 2);
    rt.run();
    let (inbox, fwd) = recorder::<String>();
    b.query(&mut rt.s, |n, _| n.register(42, fwd))
        .expect("alive");
    let seed = NodeId::new(addr(1), 1);
    call!([b], join(seed));
    rt.advance(Duration::from_secs(5));
    (a, b, inbox)
}

/// A runtime and an in-memory network with the two joined nodes of
/// `two_nodes`.
fn cluster() -> (Rt, MemNet, DeviceOwn<Node>, DeviceOwn<Node>, Seen<String>) {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let (a, b, inbox) = two_nodes(&mut rt, &net);
    (rt, net, a, b, inbox)
}

/// A device on node `b`, registered there (watchable from other nodes).
fn remote_device(
    rt: &mut Rt,
    b: &DeviceOwn<Node>,
    name: &'static str,
) -> (DeviceOwn<common::Dev>, common::Log) {
    let log = common::new_log();
    let d = common::dev(rt, name, &log);
    rt.run();
    b.query(&mut rt.s, |n, _| {
        n.register_device(&d, Fwd::new(|_: String| ()))
    })
    .expect("alive");
    (d, log)
}

/// The causes `downs` heard, as text, in order.
fn causes(downs: &Seen<RemoteDown>) -> Vec<String> {
    downs.borrow().iter().map(|d| d.cause.to_string()).collect()
}

/// `downs` heard exactly one notice, and its cause names `text`.
#[track_caller]
fn heard_once_of(downs: &Seen<RemoteDown>, text: &str) {
    let got = causes(downs);
    assert_eq!(got.len(), 1, "exactly one notice: {got:?}");
    assert!(got[0].contains(text), "the real cause, {text:?}: {got:?}");
}

fn pid(n: u8, device: u64) -> Pid {
    Pid {
        node: NodeId::new(addr(n), 1),
        device,
    }
}

#[test]
fn node_send_to_a_local_and_a_remote_target_gives_the_same_result() {
    let (mut rt, _net, a, b, inbox) = cluster();
    let to = pid(2, 42);
    a.query(&mut rt.s, |n, _| n.send(to, "from a".to_string()))
        .expect("alive")
        .expect("a sends");
    b.query(&mut rt.s, |n, _| n.send(to, "from b".to_string()))
        .expect("alive")
        .expect("b sends");
    rt.run();
    let mut got = inbox.borrow().clone();
    got.sort();
    assert_eq!(got, ["from a", "from b"]);
    // Local: a wrong type is refused at once.
    assert_eq!(
        b.query(&mut rt.s, |n, _| n.send(to, 5u32)).expect("alive"),
        Err(SendError::WrongType)
    );
}

#[test]
fn node_messages_from_one_node_to_one_target_arrive_in_send_order() {
    let (mut rt, _net, a, _b, inbox) = cluster();
    for i in 0..100 {
        a.query(&mut rt.s, |n, _| n.send(pid(2, 42), format!("{i}")))
            .expect("alive")
            .expect("sends");
    }
    rt.run();
    let want: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
    assert_eq!(*inbox.borrow(), want);
}

#[test]
fn node_a_message_to_an_unknown_target_goes_to_the_dead_letters_counted() {
    let (mut rt, _net, a, b, _inbox) = cluster();
    let (dead, fwd) = recorder::<DeadLetter>();
    b.query(&mut rt.s, |n, _| n.set_dead_letters(fwd))
        .expect("alive");
    a.query(&mut rt.s, |n, _| n.send(pid(2, 7), "lost".to_string()))
        .expect("alive")
        .expect("sent: the target node decides");
    rt.run();
    let dead = dead.borrow();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].to, dead[0].reason.clone()),
        (pid(2, 7), SendError::UnknownTarget)
    );
    assert_eq!(
        b.query(&mut rt.s, |n, _| n.stats().dead_letters)
            .expect("alive"),
        1
    );
    // Locally, an unknown target is refused at once.
    assert_eq!(
        b.query(&mut rt.s, |n, _| n.send(pid(2, 8), ()))
            .expect("alive"),
        Err(SendError::UnknownTarget)
    );
}

#[test]
fn node_a_bad_packet_is_dropped_and_counted_and_the_node_goes_on() {
    let (mut rt, net, a, b, inbox) = cluster();
    // Garbage, a truncated frame, an oversized length: each dropped.
    for junk in [
        vec![0xFF; 3],
        vec![0, 0, 0, 9, 1],
        vec![0xFF, 0xFF, 0xFF, 0xFF],
    ] {
        let _ = net.send(addr(1), addr(2), junk, false);
    }
    rt.run();
    assert_eq!(
        b.query(&mut rt.s, |n, _| n.stats().bad_frames)
            .expect("alive"),
        3
    );
    a.query(&mut rt.s, |n, _| n.send(pid(2, 42), "still".to_string()))
        .expect("alive")
        .expect("sends");
    rt.run();
    assert_eq!(*inbox.borrow(), ["still"]);
    assert!(b.is_alive());
}

#[test]
fn node_a_remote_device_death_reaches_its_watcher_with_its_real_cause() {
    for end in End::ALL {
        let mut rt = Rt::new();
        let net = MemNet::new();
        let (a, b, _inbox) = two_nodes(&mut rt, &net);
        let d = ready_dev(&mut rt, "remote");
        let local = d.line();
        b.query(&mut rt.s, |n, _| {
            n.register_device(&d, Fwd::new(|_: String| ()))
        })
        .expect("alive");
        let target = Pid {
            node: NodeId::new(addr(2), 1),
            device: d.id().get(),
        };
        let (downs, fwd) = recorder::<RemoteDown>();
        a.query(&mut rt.s, |n, cx| n.monitor(cx, target, fwd))
            .expect("alive");
        rt.run();
        assert!(
            downs.borrow().is_empty(),
            "{end:?}: nothing before the death"
        );
        let mut keep = Vec::new();
        end.apply(d, &mut keep);
        rt.run();
        let downs = downs.borrow();
        assert_eq!(downs.len(), 1, "{end:?}: exactly one RemoteDown");
        let here = local.cause().expect("dead");
        assert_eq!(downs[0].pid, target);
        assert_eq!(
            downs[0].cause.to_string(),
            here.to_string(),
            "{end:?}: the same text"
        );
        assert_eq!(
            downs[0].cause.is_fault(),
            here.is_fault(),
            "{end:?}: the same kind"
        );
    }
}

#[test]
fn node_a_watch_of_an_unregistered_remote_device_answers_at_once() {
    let (mut rt, _net, a, _b, _inbox) = cluster();
    let (downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| n.monitor(cx, pid(2, 4242), fwd))
        .expect("alive");
    rt.run();
    let downs = downs.borrow();
    assert_eq!(downs.len(), 1);
    assert_eq!(
        downs[0].cause.to_string(),
        "failed: no device is registered under that id"
    );
}

#[test]
fn node_a_lost_node_gives_each_watcher_exactly_one_lost_and_its_frames_are_dropped() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let (d, _log) = remote_device(&mut rt, &b, "remote");
    let watched = Pid {
        node: NodeId::new(addr(2), 1),
        device: d.id().get(),
    };
    let (downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| {
        n.monitor(cx, watched, fwd.clone());
        n.monitor(cx, watched, fwd.clone());
    })
    .expect("alive");
    rt.run();
    net.cut(addr(2));
    rt.advance(Duration::from_secs(60));
    // The device dies after its node was lost: no second notice.
    drop(d);
    rt.run();
    let got: Vec<(Pid, String)> = downs
        .borrow()
        .iter()
        .map(|d| (d.pid, d.cause.to_string()))
        .collect();
    let lost = Cause::Lost.to_string();
    assert_eq!(got, [(watched, lost.clone()), (watched, lost.clone())]);
    // A watcher that comes later is told at once; a send is refused.
    a.query(&mut rt.s, |n, cx| {
        n.monitor(cx, watched, fwd.clone());
        assert_eq!(
            n.send(watched, "x".to_string()),
            Err(SendError::NodeDown(watched.node))
        );
    })
    .expect("alive");
    assert_eq!(downs.borrow().len(), 3, "exactly one more, no repeat");
    // A late frame from the lost incarnation is dropped, counted.
    let (own, fwd_a) = recorder::<String>();
    a.query(&mut rt.s, |n, _| n.register(9, fwd_a))
        .expect("alive");
    let bytes = encoded(Frame::Send {
        to: 9,
        from: Some(pid(2, 0)),
        payload: postcard_string("late"),
        dst: pid(1, 0).node,
    });
    call!([a], packet(bytes));
    rt.run();
    assert!(own.borrow().is_empty());
    assert_eq!(
        a.query(&mut rt.s, |n, _| n.stats().from_down_nodes)
            .expect("alive"),
        1
    );
}

#[test]
fn node_a_lost_node_gets_no_more_frames_from_an_unlink_or_a_late_notice() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let (d, _log) = remote_device(&mut rt, &b, "remote");
    let watched = Pid {
        node: NodeId::new(addr(2), 1),
        device: d.id().get(),
    };
    let local = ready_dev(&mut rt, "local");
    a.query(&mut rt.s, |n, cx| {
        n.trap(cx, &local, Fwd::new(|_: RemoteDown| ()))
    })
    .expect("alive")
    .expect("traps");
    a.query(&mut rt.s, |n, cx| {
        n.link(cx, &local, watched, LinkMode::Peer)
    })
    .expect("alive")
    .expect("linked");
    rt.run();
    net.cut(addr(2));
    rt.advance(Duration::from_secs(60));
    // The natural clean-up after a `Lost`: it sends nothing to the node
    // that is gone (over TCP a frame would connect to it again, for ever).
    let (before, after) = a
        .query(&mut rt.s, |n, _| {
            let before = n.stats().frames_out;
            n.unlink(&local, watched, LinkMode::Peer);
            (before, n.stats().frames_out)
        })
        .expect("alive");
    assert_eq!(before, after, "no frame to a node declared down");
}

#[test]
fn node_a_down_notice_and_a_reply_wait_for_room_in_a_full_queue_never_dropped() {
    let (mut rt, net, a, b, _inbox) = cluster();
    doubler(&mut rt, &b);
    let (d, _log) = remote_device(&mut rt, &b, "remote");
    let watched = Pid {
        node: NodeId::new(addr(2), 1),
        device: d.id().get(),
    };
    let (filled, fwd_a) = recorder::<String>();
    a.query(&mut rt.s, |n, _| n.register(9, fwd_a))
        .expect("alive");
    let (downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| n.monitor(cx, watched, fwd))
        .expect("alive");
    rt.run();
    // Node a reads slowly: its queue from b holds one data frame.
    net.hold(addr(1), 1);
    b.query(&mut rt.s, |n, _| n.send(pid(1, 9), "fill".to_string()))
        .expect("alive")
        .expect("room for one");
    let replies: Replies = Rc::default();
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 21u64, reply_into(&replies))
    })
    .expect("alive");
    drop(d);
    rt.run();
    assert!(downs.borrow().is_empty(), "held behind the full queue");
    assert!(replies.borrow().is_empty(), "held behind the full queue");
    net.release(addr(1));
    rt.run();
    assert_eq!(*filled.borrow(), ["fill"]);
    assert_eq!(
        causes(&downs),
        [Cause::Dropped.to_string()],
        "exactly one notice"
    );
    assert_eq!(answers(&replies), [Ok(42)]);
}

/// `n` watch requests from node b to `a`, of a device `a` does not have:
/// each answered at once with a `Down` (data, which waits for room). Their
/// tags are far above any b's own watches take.
fn watches_from_b(rt: &mut Rt, a: &DeviceOwn<Node>, n: u64) {
    for tag in (1 << 40)..(1 << 40) + n {
        call!(
            [a],
            packet(encoded(Frame::Monitor {
                target: 987_654_321,
                tag,
                from: pid(2, 0).node,
                dst: pid(1, 0).node,
            }))
        );
    }
    rt.run();
}

/// Node b (at `addr(2)`), which read nothing, reads again: everything
/// that waited for room to it on `a` goes.
#[track_caller]
fn b_reads_again(rt: &mut Rt, net: &MemNet, a: &DeviceOwn<Node>) {
    net.release(addr(2));
    rt.run();
    assert_eq!(common::cluster::status(rt, a).waiting_sends, 0);
}

/// Rule 115a's bound: a node that reads nothing (its queue takes nothing)
/// but keeps sending requests does not make this node hold an answer for
/// each: past `HELD_FOR_A_NODE` frames waiting for it, its requests are
/// refused and counted, and what waits stays at the bound.
#[test]
fn node_a_node_that_reads_nothing_cannot_make_this_one_hold_an_answer_per_request() {
    let (mut rt, net, a, _b, _inbox) = cluster();
    net.hold(addr(2), 0); // b reads nothing
    let n = 3 * HELD_FOR_A_NODE as u64;
    watches_from_b(&mut rt, &a, n);
    let held = common::cluster::status(&mut rt, &a).waiting_sends;
    assert_eq!(held, HELD_FOR_A_NODE, "at the bound, not one per request");
    let stats = a.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(stats.refused_requests, n - HELD_FOR_A_NODE as u64);
    // Room again: what was held goes, and b's requests are taken again.
    b_reads_again(&mut rt, &net, &a);
}

/// Rule 115a's bound counts answers only: a backlog of this node's own
/// `send_when_room` sends to a slower node does not make that node's
/// watch requests refused; the watch holds, and its death notice arrives.
#[test]
fn node_a_backlog_of_its_own_sends_refuses_no_request_of_the_slower_node() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "on_a");
    a.query(&mut rt.s, |n, _| {
        n.register_device(&d, Fwd::new(|_: String| ()))
    })
    .expect("alive");
    let target = Pid {
        node: NodeId::new(addr(1), 1),
        device: d.id().get(),
    };
    net.hold(addr(2), 0); // b is slow for a moment
    for i in 0..HELD_FOR_A_NODE {
        a.query(&mut rt.s, |n, cx| {
            n.send_when_room(cx, pid(2, 42), format!("bulk {i}"), Ret::new(|_| ()))
        })
        .expect("alive");
    }
    rt.run();
    let (downs, fwd) = recorder::<RemoteDown>();
    b.query(&mut rt.s, |n, cx| n.monitor(cx, target, fwd))
        .expect("alive");
    rt.run();
    let stats = a.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(stats.refused_requests, 0);
    net.release(addr(2));
    rt.run();
    drop(d);
    rt.run();
    assert_eq!(downs.borrow().len(), 1, "the watcher heard of the death");
}

/// Rule 115a's bound refuses no credit ask: a node's credited send made
/// during a spell of refusals goes once it reads again (a refused credit
/// ask would leave it waiting: the sender asks once until granted).
#[test]
fn node_a_refusal_spell_never_leaves_a_credited_send_waiting() {
    let (mut rt, net, a, b, _inbox) = cluster();
    net.hold(addr(2), 0); // b reads nothing for a while
    watches_from_b(&mut rt, &a, HELD_FOR_A_NODE as u64);
    let (done, fwd) = recorder::<Result<(), SendError>>();
    let to = pid(1, stakplane::cluster::CREDITED | 42);
    b.query(&mut rt.s, |n, cx| {
        let ret = Ret::new(move |r: Option<Result<(), SendError>>| {
            if let Some(r) = r {
                fwd.fwd(r)
            }
        });
        n.send_when_room(cx, to, "credited".to_string(), ret)
    })
    .expect("alive");
    rt.run();
    net.release(addr(2));
    rt.run();
    for _ in 0..60 {
        rt.advance(Duration::from_secs(1));
    }
    assert_eq!(done.borrow().len(), 1, "the credited send went");
}

/// Rule 115a's credit asks, still answered during a spell: a node that
/// reads nothing and asks over and over makes this one hold one grant
/// per target (the latest: a grant is a limit on the messages sent in
/// all), not one per ask; when room comes, the sender gets it.
#[test]
fn node_credit_asks_of_a_node_that_reads_nothing_hold_one_grant_per_target() {
    let (mut rt, net, a, _b, _inbox) = cluster();
    net.hold(addr(2), 0); // b reads nothing
    net.refuse_control(addr(2), 1000);
    for target in [7, 8] {
        for _ in 0..50 {
            call!(
                [a],
                packet(encoded(Frame::CreditAsk {
                    target,
                    from: pid(2, 0).node,
                    dst: pid(1, 0).node,
                }))
            );
        }
    }
    rt.run();
    assert_eq!(
        common::cluster::status(&mut rt, &a).waiting_sends,
        2,
        "one grant per target"
    );
    b_reads_again(&mut rt, &net, &a);
}

/// Rule 115a: a watch and a link refused during a spell are not lost.
/// When the refusing node has room to the other again, it sends
/// `AskAgain`, and the other asks both again. The link's fault then kills
/// the watching device, and the watch's notice of that death arrives,
/// once.
#[test]
fn node_a_watch_and_a_link_refused_in_a_spell_are_asked_again_when_it_ends() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let (d, _log) = remote_device(&mut rt, &a, "on_a");
    let (bd, _log_b) = remote_device(&mut rt, &b, "on_b");
    let on_a = Pid {
        node: NodeId::new(addr(1), 1),
        device: d.id().get(),
    };
    net.hold(addr(2), 0); // b reads nothing for a while
    watches_from_b(&mut rt, &a, HELD_FOR_A_NODE as u64);
    // b watches d, and links bd so that d watches it: both refused.
    let (downs, fwd) = recorder::<RemoteDown>();
    b.query(&mut rt.s, |n, cx| {
        let _watch = n.monitor(cx, on_a, fwd);
        n.link(cx, &bd, on_a, LinkMode::Notify)
    })
    .expect("alive")
    .expect("linked");
    rt.run();
    let stats = a.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!(stats.refused_requests, 2, "the watch and the link");
    net.release(addr(2));
    rt.run();
    bd.kill("boom").expect("alive");
    rt.run();
    let cause = d.line().cause().expect("killed through the link");
    assert!(cause.to_string().contains("boom"), "{cause}");
    heard_once_of(&downs, "boom");
}

/// Rule 115a's `AskAgain` makes a node hold no copy of its watches per
/// frame: while frames to the asking node wait for room, the watches are
/// asked again once, when those have gone, however many frames came. The
/// first requests are lost here, so only that re-ask puts the watches in
/// place; they hold, and each gets its notice.
#[test]
fn node_a_burst_of_ask_again_frames_while_frames_wait_asks_again_once_when_they_have_gone() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let (d, _log) = remote_device(&mut rt, &b, "on_b");
    let on_b = Pid {
        node: NodeId::new(addr(2), 1),
        device: d.id().get(),
    };
    let (downs, fwd) = recorder::<RemoteDown>();
    net.lose(addr(1), addr(2), 3);
    for _ in 0..3 {
        let _watch = a
            .query(&mut rt.s, |n, cx| n.monitor(cx, on_b, fwd.clone()))
            .expect("alive");
    }
    rt.run();
    assert_eq!(
        status(&mut rt, &b).watched_here,
        0,
        "the requests were lost"
    );
    net.hold(addr(2), 0); // b reads nothing
    a.query(&mut rt.s, |n, cx| {
        n.send_when_room(cx, pid(2, 42), "waits".to_string(), Ret::new(|_| ()))
    })
    .expect("alive");
    for _ in 0..100 {
        let again = Frame::AskAgain {
            from: on_b.node,
            dst: NodeId::new(addr(1), 1),
        };
        call!([a], packet(encoded(again)));
    }
    rt.run();
    assert_eq!(status(&mut rt, &a).waiting_sends, 1, "only the send waits");
    b_reads_again(&mut rt, &net, &a);
    assert_eq!(
        status(&mut rt, &b).watched_here,
        3,
        "asked again, once each"
    );
    d.kill("gone").expect("alive");
    rt.run();
    let got = causes(&downs);
    assert_eq!(got.len(), 3, "one notice per watch: {got:?}");
}

/// Rule 122a: past the bound a node may have here, its new watch ends at
/// once with `WatchError::TooMany`, once, counted; the watches it has
/// hold (asked again after a reconnect, they are not refused), and one
/// freed makes room for a new one.
#[test]
fn node_watches_past_the_bound_for_a_node_are_refused_with_a_typed_cause_and_counted() {
    let (mut rt, net, a, b, _inbox) = cluster();
    a.query(&mut rt.s, |n, _| n.set_watch_limit(2))
        .expect("alive");
    let (d, _log) = remote_device(&mut rt, &a, "on_a");
    let on_a = pid(1, d.id().get());
    let watch = |rt: &mut Rt| {
        let (downs, fwd) = recorder::<RemoteDown>();
        let m = b
            .query(&mut rt.s, |n, cx| n.monitor(cx, on_a, fwd))
            .expect("alive");
        rt.run();
        (downs, m)
    };
    let (first, m1) = watch(&mut rt);
    let (second, _m2) = watch(&mut rt);
    let (refused, _m3) = watch(&mut rt);
    assert!(first.borrow().is_empty() && second.borrow().is_empty());
    {
        let got = refused.borrow();
        assert_eq!(got.len(), 1, "the third ends at once");
        let Cause::Error(e) = &got[0].cause else {
            panic!("a fault: {:?}", got[0].cause)
        };
        assert_eq!(e.downcast_ref::<WatchError>(), Some(&WatchError::TooMany));
    }
    let st = common::cluster::status(&mut rt, &a);
    assert_eq!((st.watched_here, st.stats.refused_watches), (2, 1));
    // The two held are asked again after a reconnect: the same watches.
    net.reconnect(addr(1), addr(2));
    rt.run();
    let st = common::cluster::status(&mut rt, &a);
    assert_eq!((st.watched_here, st.stats.refused_watches), (2, 1));
    // One cancelled: room for a new one.
    b.query(&mut rt.s, |n, _| n.demonitor(m1)).expect("alive");
    rt.run();
    let (fourth, _m4) = watch(&mut rt);
    assert!(fourth.borrow().is_empty(), "admitted");
    assert_eq!(common::cluster::status(&mut rt, &a).watched_here, 2);
    d.kill("end").expect("alive");
    rt.run();
    heard_once_of(&second, "end");
    heard_once_of(&fourth, "end");
    assert_eq!(refused.borrow().len(), 1, "one notice only");
    assert!(first.borrow().is_empty(), "cancelled");
}

/// Rule 122a for links: a link another node asks for past its bound
/// here is refused, counted, and forgotten by that node (not asked again
/// after a reconnect); the device here that would have watched is told,
/// once: its trap handler hears `TooManyLinks`, and one that does not
/// trap dies of it. Neither watches.
#[test]
fn node_a_link_past_the_bound_is_refused_its_watcher_told_once_and_the_linking_node_forgets_it() {
    let (mut rt, net, a, b, _inbox) = cluster();
    a.query(&mut rt.s, |n, _| n.set_watch_limit(0))
        .expect("alive");
    let (trapping, _log) = remote_device(&mut rt, &a, "traps_on_a");
    let (plain, _log_p) = remote_device(&mut rt, &a, "plain_on_a");
    let (bd, _log_b) = remote_device(&mut rt, &b, "on_b");
    let (downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| n.trap(cx, &trapping, fwd))
        .expect("alive")
        .expect("trapping");
    b.query(&mut rt.s, |n, cx| {
        for d in [&trapping, &plain] {
            n.link(cx, &bd, pid(1, d.id().get()), LinkMode::Notify)
                .expect("linked");
        }
    })
    .expect("alive");
    rt.run();
    let refused = |rt: &mut Rt| common::cluster::status(rt, &a).stats.refused_watches;
    assert_eq!(refused(&mut rt), 2);
    heard_once_of(&downs, "as many links");
    match plain.line().cause() {
        Some(Cause::Killed(e)) => {
            assert!(e.to_string().contains("as many links"), "{e}");
        }
        other => panic!("the plain watcher dies of the refusal: {other:?}"),
    }
    net.reconnect(addr(1), addr(2));
    rt.run();
    assert_eq!(refused(&mut rt), 2, "not asked again");
    bd.kill("boom").expect("alive");
    rt.run();
    heard_once_of(&downs, "as many links");
    assert!(trapping.is_alive(), "{:?}", trapping.line().cause());
}

/// Rules 121 and 128 under a link that comes back over and over while
/// the other node reads nothing: the watches asked again and the
/// `Unlink` said again wait for room once, not once per time the link
/// came back; when room comes they go, and the watches still hold.
#[test]
fn node_a_link_back_over_and_over_while_the_node_reads_nothing_holds_one_copy_of_what_is_said_again(
) {
    let (mut rt, net, a, b, _inbox) = cluster();
    let (ad, _log) = remote_device(&mut rt, &a, "on_a");
    let (bw, _log_w) = remote_device(&mut rt, &b, "watcher_on_b");
    let watched: Vec<_> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|name| remote_device(&mut rt, &b, name).0)
        .collect();
    let (downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| {
        n.link(cx, &ad, pid(2, bw.id().get()), LinkMode::Notify)
            .expect("linked");
    })
    .expect("alive");
    rt.run();
    // The `Unlink` is lost in flight (one taken is answered, and not
    // said again).
    net.lose(addr(1), addr(2), 1);
    a.query(&mut rt.s, |n, cx| {
        n.unlink(&ad, pid(2, bw.id().get()), LinkMode::Notify);
        for d in &watched {
            let _ = n.monitor(cx, pid(2, d.id().get()), fwd.clone());
        }
    })
    .expect("alive");
    rt.run();
    // b reads nothing: its queues refuse what a sends it, which waits for
    // room (an `Unlink` said again, first in line).
    net.hold(addr(2), 0);
    net.refuse_control(addr(2), 1000);
    let waiting = |rt: &mut Rt| common::cluster::status(rt, &a).waiting_sends;
    net.reconnect(addr(1), addr(2));
    rt.run();
    let once = waiting(&mut rt);
    assert_eq!(once, watched.len() + 1, "three watches and the Unlink");
    for _ in 0..10 {
        net.reconnect(addr(1), addr(2));
        rt.run();
    }
    assert_eq!(waiting(&mut rt), once, "one copy, not one per time");
    b_reads_again(&mut rt, &net, &a);
    watched[1].kill("w2 ends").expect("alive");
    ad.kill("a fault after the unlink").expect("alive");
    rt.run();
    heard_once_of(&downs, "w2 ends");
    assert!(bw.is_alive(), "unlinked: {:?}", bw.line().cause());
}

/// Rule 121 under rule 115a's concern: the answers to `Unlink`s and
/// `Demonitor`s go only if there is room. A node that reads nothing and
/// sends them over and over makes this one hold none (each is said again
/// until it is answered, so a dropped answer is made again later); the
/// `Unlinked` answers waited for room before, one per `Unlink`, unbounded.
#[test]
fn node_answers_to_unlinks_and_demonitors_never_wait_for_room() {
    let (mut rt, net, a, _b, _inbox) = cluster();
    net.hold(addr(2), 0);
    net.refuse_control(addr(2), 100_000);
    let (me, peer) = (NodeId::new(addr(1), 1), NodeId::new(addr(2), 1));
    for i in 1..=1000u64 {
        call!(
            [a],
            packet(encoded(Frame::Unlink {
                watcher: i,
                target: i,
                from: peer,
                dst: me,
                epoch: i,
                again: false,
            }))
        );
        call!(
            [a],
            packet(encoded(Frame::Demonitor {
                tag: i,
                from: peer,
                dst: me,
            }))
        );
    }
    rt.run();
    let st = common::cluster::status(&mut rt, &a);
    assert_eq!(st.stats.bad_frames, 0, "{:?}", st.stats);
    assert_eq!(
        st.waiting_sends, 0,
        "answers held for a node that reads nothing"
    );
    b_reads_again(&mut rt, &net, &a);
}

/// Rule 122a: a refused watch asked again (after a reconnect) while its
/// refusal still waits for room is refused again, even if room was made
/// meanwhile: admitted, it would be held here for a watcher that forgets
/// it on hearing the refusal, and take that node's room for good.
#[test]
fn node_a_refused_watch_asked_again_while_its_refusal_waits_is_refused_again() {
    let (mut rt, net, a, b, _inbox) = cluster();
    a.query(&mut rt.s, |n, _| n.set_watch_limit(1))
        .expect("alive");
    let devs: Vec<_> = ["d1", "d2", "d3"]
        .into_iter()
        .map(|name| remote_device(&mut rt, &a, name).0)
        .collect();
    let watch = |rt: &mut Rt, dev: &DeviceOwn<common::Dev>| {
        let (downs, fwd) = recorder::<RemoteDown>();
        let m = b
            .query(&mut rt.s, |n, cx| {
                n.monitor(cx, pid(1, dev.id().get()), fwd)
            })
            .expect("alive");
        rt.run();
        (downs, m)
    };
    let (_w1, m1) = watch(&mut rt, &devs[0]);
    net.hold(addr(2), 16); // b is slow: the refusal waits
    let (w2, _m2) = watch(&mut rt, &devs[1]);
    assert!(w2.borrow().is_empty(), "the refusal waits");
    b.query(&mut rt.s, |n, _| n.demonitor(m1)).expect("alive");
    rt.run();
    net.reconnect(addr(1), addr(2));
    rt.run();
    net.release(addr(2));
    rt.run();
    assert_eq!(causes(&w2).len(), 1, "refused once");
    assert_eq!(common::cluster::status(&mut rt, &a).watched_here, 0);
    let (w3, _m3) = watch(&mut rt, &devs[2]);
    assert!(
        w3.borrow().is_empty(),
        "room for a new watch: {:?}",
        causes(&w3)
    );
}

/// Rule 122a counts the links another node made here, not this node's
/// own watches of that node's devices: a node watching devices of
/// another does not make that other's links refused.
#[test]
fn node_the_bound_on_links_counts_the_links_the_other_node_made_only() {
    let (mut rt, _net, a, b, _inbox) = cluster();
    a.query(&mut rt.s, |n, _| n.set_watch_limit(1))
        .expect("alive");
    let (d, _log) = remote_device(&mut rt, &a, "on_a");
    let (bd, _log_b) = remote_device(&mut rt, &b, "on_b");
    let (other, _lo) = remote_device(&mut rt, &b, "other_b");
    let (_downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| {
        n.monitor(cx, pid(2, other.id().get()), fwd)
    })
    .expect("alive");
    rt.run();
    b.query(&mut rt.s, |n, cx| {
        n.link(cx, &bd, pid(1, d.id().get()), LinkMode::Peer)
    })
    .expect("alive")
    .expect("linked");
    rt.run();
    assert_eq!(
        common::cluster::status(&mut rt, &a).stats.refused_watches,
        0
    );
    bd.kill("boom").expect("alive");
    rt.run();
    let cause = d.line().cause().expect("killed through the link");
    assert!(cause.to_string().contains("boom"), "{cause}");
}

#[test]
fn node_a_link_from_a_node_not_yet_known_as_a_member_is_watched_not_refused() {
    let (mut rt, net, _a, b, _inbox) = cluster();
    // Node c exists and links to b's device before b's membership has
    // heard of it (c learnt of b from another node's gossip).
    let c = start(&mut rt, &net, 3);
    rt.run();
    let (d, _log) = remote_device(&mut rt, &b, "watcher");
    let (target, _log_c) = remote_device(&mut rt, &c, "target");
    let c_id = NodeId::new(addr(3), 1);
    let bytes = encoded(Frame::Link {
        watcher: d.id().get(),
        target: target.id().get(),
        from: c_id,
        dst: pid(2, 0).node,
        epoch: 1,
    });
    call!([b], packet(bytes));
    rt.run();
    assert!(
        d.is_alive(),
        "a link is not a fault: {:?}",
        d.line().cause()
    );
    // The watch was sent and holds: the target's fault reaches d.
    target.kill("over").expect("alive");
    rt.run();
    let cause = d.line().cause().expect("killed through the link");
    assert!(cause.to_string().contains("over"), "{cause}");
}

#[test]
fn node_a_watch_request_refused_by_a_full_control_queue_waits_and_holds() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let (d, _log) = remote_device(&mut rt, &b, "remote");
    let watched = Pid {
        node: NodeId::new(addr(2), 1),
        device: d.id().get(),
    };
    // The control queue to b overflows just as a asks for the watch.
    net.refuse_control(addr(2), 1);
    let (downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| n.monitor(cx, watched, fwd))
        .expect("alive");
    rt.run();
    let held = status(&mut rt, &b).watched_here;
    assert_eq!(held, 1, "the request waited for room and arrived");
    d.kill("gone").expect("alive");
    rt.run();
    heard_once_of(&downs, "gone");
}

#[test]
fn node_a_link_from_an_incarnation_never_seen_up_ends_as_lost_when_a_newer_one_comes() {
    let (mut rt, net, _a, b, _inbox) = cluster();
    let (d, _log) = remote_device(&mut rt, &b, "watcher");
    // Incarnation 1 of node 3 links to d, then restarts before b ever
    // hears of it.
    let c1 = NodeId::new(addr(3), 1);
    let bytes = encoded(Frame::Link {
        watcher: d.id().get(),
        target: 5,
        from: c1,
        dst: pid(2, 0).node,
        epoch: 1,
    });
    call!([b], packet(bytes));
    rt.run();
    assert!(d.is_alive(), "watched, not refused");
    let c2 = NodeId::new(addr(3), 2);
    let transport: Rc<dyn Transport> = Rc::new(net.clone());
    let c = device!(
        rt.s,
        Node::init(
            c2,
            MembershipConfig::lan(3, 3),
            transport,
            Fwd::new(|_: MemberEvent| ())
        )
    );
    net.attach(
        c2.addr,
        fwd_to!([c], packet() as (stakplane::cluster::Packet)),
    );
    call!([c], join(NodeId::new(addr(1), 1)));
    rt.advance(Duration::from_secs(10));
    let cause = d.line().cause().expect("the link ended: a fault");
    assert!(
        cause.to_string().contains(&Cause::Lost.to_string()),
        "{cause}"
    );
}

#[test]
fn node_a_control_frame_sent_as_data_is_not_overtaken_by_a_later_one() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let (y, _log) = remote_device(&mut rt, &b, "remote watcher");
    let y_pid = Pid {
        node: NodeId::new(addr(2), 1),
        device: y.id().get(),
    };
    let x = ready_dev(&mut rt, "local");
    // b reads slowly, and its control queue refuses the `Link`: it waits,
    // then goes as data, held with b's data.
    net.hold(addr(2), 10);
    net.refuse_control(addr(2), 1);
    a.query(&mut rt.s, |n, cx| n.link(cx, &x, y_pid, LinkMode::Notify))
        .expect("alive")
        .expect("linked");
    rt.run();
    // The `Unlink` must not overtake it.
    a.query(&mut rt.s, |n, _| n.unlink(&x, y_pid, LinkMode::Notify))
        .expect("alive");
    rt.run();
    net.release(addr(2));
    rt.run();
    x.kill("a fault after the unlink").expect("alive");
    rt.run();
    assert!(y.is_alive(), "unlinked: {:?}", y.line().cause());
}

/// A `String` as postcard encodes it: its length, then its bytes.
fn postcard_string(s: &str) -> Vec<u8> {
    let mut out = vec![u8::try_from(s.len()).expect("short")];
    out.extend_from_slice(s.as_bytes());
    out
}

type Found = Seen<Option<Result<Ref<String>, LookupError>>>;

fn lookup_into(seen: &Found) -> Ret<Result<Ref<String>, LookupError>> {
    let s2 = seen.clone();
    Ret::new(move |r| s2.borrow_mut().push(r))
}

#[test]
fn node_lookup_of_a_name_gives_the_same_typed_address_locally_and_remotely() {
    let (mut rt, _net, a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "named");
    let (got, fwd) = recorder::<String>();
    let registered = named(&mut rt, &b, "store", &d, fwd);
    let found: Found = Rc::default();
    let b_id = NodeId::new(addr(2), 1);
    a.query(&mut rt.s, |n, _| {
        n.lookup(b_id, "store", lookup_into(&found))
    })
    .expect("alive");
    b.query(&mut rt.s, |n, _| {
        n.lookup(b_id, "store", lookup_into(&found))
    })
    .expect("alive");
    rt.run();
    let answers = answers(&found);
    assert_eq!(answers.len(), 2);
    for answer in answers {
        let r = answer.expect("found");
        assert_eq!(r, registered, "the same address from both nodes");
        a.query(&mut rt.s, |n, _| n.send_ref(&r, "via ref".to_string()))
            .expect("alive")
            .expect("sends");
    }
    rt.run();
    assert_eq!(*got.borrow(), ["via ref", "via ref"]);
}

#[test]
fn node_lookup_answers_exactly_once_with_a_typed_refusal() {
    let (mut rt, net, a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "named");
    b.query(&mut rt.s, |n, _| {
        n.register_named("numbers", &d, Fwd::new(|_: u32| ()))
    })
    .expect("alive");
    let found: Found = Rc::default();
    let b_id = NodeId::new(addr(2), 1);
    a.query(&mut rt.s, |n, _| {
        n.lookup(b_id, "nobody", lookup_into(&found));
        n.lookup(b_id, "numbers", lookup_into(&found));
        n.lookup(NodeId::new(addr(9), 1), "x", lookup_into(&found));
    })
    .expect("alive");
    rt.run();
    // A lookup in flight when its node is lost is answered NodeDown.
    net.cut(addr(2));
    a.query(&mut rt.s, |n, _| {
        n.lookup(b_id, "numbers", lookup_into(&found))
    })
    .expect("alive");
    rt.advance(Duration::from_secs(60));
    let answers = answers(&found);
    assert_eq!(
        answers.len(),
        4,
        "each lookup answered exactly once: {answers:?}"
    );
    // The unknown node answers at once, the others when their answer (or
    // their node's loss) arrives.
    assert_eq!(
        answers[0],
        Err(LookupError::NodeDown(NodeId::new(addr(9), 1)))
    );
    assert_eq!(answers[1], Err(LookupError::NotFound));
    assert!(
        matches!(&answers[2], Err(LookupError::WrongType(t)) if t == "u32"),
        "{:?}",
        answers[2]
    );
    assert_eq!(answers[3], Err(LookupError::NodeDown(b_id)));
}

type Replies = Seen<Option<Result<u64, AskError>>>;

fn reply_into(seen: &Replies) -> Ret<Result<u64, AskError>> {
    let s2 = seen.clone();
    Ret::new(move |r| s2.borrow_mut().push(r))
}

/// A doubling server as device 77 of node `n`: it answers `x` with
/// `2 * x`, and drops the reply for 0.
fn doubler(rt: &mut Rt, n: &DeviceOwn<Node>) {
    let serve = Fwd::new(|(x, ret): (u64, Ret<u64>)| {
        if x != 0 {
            ret.ret(2 * x);
        }
    });
    n.query(&mut rt.s, |n, _| n.register_ask(77, serve))
        .expect("alive");
}

#[test]
fn node_ask_of_a_local_and_a_remote_target_gives_the_same_reply() {
    let (mut rt, _net, a, b, _inbox) = cluster();
    doubler(&mut rt, &b);
    let replies: Replies = Rc::default();
    let to = pid(2, 77);
    a.query(&mut rt.s, |n, _| n.ask(to, 21u64, reply_into(&replies)))
        .expect("alive");
    b.query(&mut rt.s, |n, _| n.ask(to, 21u64, reply_into(&replies)))
        .expect("alive");
    rt.run();
    let got = answers(&replies);
    assert_eq!(got, [Ok(42), Ok(42)]);
}

#[test]
fn node_ask_answers_exactly_once_with_a_typed_error() {
    let (mut rt, net, a, b, _inbox) = cluster();
    doubler(&mut rt, &b);
    let replies: Replies = Rc::default();
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 0u64, reply_into(&replies)); // dropped
        n.ask(pid(2, 78), 1u64, reply_into(&replies)); // nobody
    })
    .expect("alive");
    rt.run();
    // In flight when its node is lost.
    net.cut(addr(2));
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 5u64, reply_into(&replies))
    })
    .expect("alive");
    rt.advance(Duration::from_secs(60));
    let got = answers(&replies);
    assert_eq!(
        got,
        [
            Err(AskError::Dropped),
            Err(AskError::NoTarget),
            Err(AskError::NodeDown(NodeId::new(addr(2), 1)))
        ]
    );
}

#[test]
fn node_an_ask_or_a_lookup_with_no_answer_ends_as_timeout_once_and_a_late_reply_is_dropped() {
    let (mut rt, net, a, b, _inbox) = cluster();
    doubler(&mut rt, &b);
    // A slow server on b: it keeps each reply `Ret`, answering later.
    let held: Seen<Ret<u64>> = Rc::default();
    let h2 = held.clone();
    b.query(&mut rt.s, |n, _| {
        n.register_ask(
            78,
            Fwd::new(move |(_, ret): (u64, Ret<u64>)| h2.borrow_mut().push(ret)),
        )
    })
    .expect("alive");
    a.query(&mut rt.s, |n, _| n.set_ask_timeout(Duration::from_secs(8)))
        .expect("alive");
    let replies: Replies = Rc::default();
    let found: Found = Rc::default();
    // Answered in time: never a second answer.
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 21u64, reply_into(&replies))
    })
    .expect("alive");
    rt.run();
    assert_eq!(answers(&replies), [Ok(42)]);
    // The ask and the lookup are lost in flight (a connection that
    // breaks between two nodes that stay up), and the slow server holds
    // its reply.
    net.lose(addr(1), addr(2), 2);
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 5u64, reply_into(&replies));
        n.lookup(NodeId::new(addr(2), 1), "anything", lookup_into(&found));
        n.ask(pid(2, 78), 1u64, reply_into(&replies));
    })
    .expect("alive");
    rt.advance(Duration::from_millis(7_900));
    assert!(replies.borrow().is_empty(), "not before the timeout");
    assert!(found.borrow().is_empty(), "not before the timeout");
    assert_eq!(held.borrow().len(), 1, "the slow server has the request");
    // At most a quarter of the timeout late: by 10 s.
    rt.advance(Duration::from_millis(2_100));
    assert_eq!(
        answers(&replies),
        [Err(AskError::Timeout), Err(AskError::Timeout)],
        "each ask ended once, within a quarter of the timeout late"
    );
    assert_eq!(
        found.borrow_mut().drain(..).collect::<Vec<_>>(),
        [Some(Err(LookupError::Timeout))]
    );
    // The late reply is dropped and counted; nothing is answered twice.
    let late = held.borrow_mut().pop().expect("held");
    late.ret(2);
    rt.advance(Duration::from_secs(30));
    assert!(replies.borrow().is_empty(), "answered once: {replies:?}");
    let stats = a.query(&mut rt.s, |n, _| n.stats()).expect("alive");
    assert_eq!((stats.timed_out, stats.late_answers), (3, 1));
    let members = a.query(&mut rt.s, |n, _| n.members().len()).expect("alive");
    assert_eq!(members, 1, "b stayed up all along");
}

#[test]
fn node_a_changed_ask_timeout_applies_afresh_to_the_asks_already_waiting() {
    let (mut rt, net, a, b, _inbox) = cluster();
    doubler(&mut rt, &b);
    let replies: Replies = Rc::default();
    // Under the default (30 s) timeout, an ask is lost in flight.
    net.lose(addr(1), addr(2), 1);
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 1u64, reply_into(&replies))
    })
    .expect("alive");
    rt.advance(Duration::from_secs(1));
    // Lowered to 2 s, with another lost ask: both now end between 2 and
    // 2.5 s from the change, neither before.
    net.lose(addr(1), addr(2), 1);
    a.query(&mut rt.s, |n, _| {
        n.set_ask_timeout(Duration::from_secs(2));
        n.ask(pid(2, 77), 2u64, reply_into(&replies));
    })
    .expect("alive");
    rt.advance(Duration::from_millis(1_950));
    assert!(replies.borrow().is_empty(), "not before the new timeout");
    rt.advance(Duration::from_millis(600));
    assert_eq!(
        answers(&replies),
        [Err(AskError::Timeout), Err(AskError::Timeout)]
    );
    // Raised to 20 s: a waiting ask is not ended on the old schedule.
    net.lose(addr(1), addr(2), 1);
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 3u64, reply_into(&replies))
    })
    .expect("alive");
    rt.advance(Duration::from_millis(500));
    a.query(&mut rt.s, |n, _| n.set_ask_timeout(Duration::from_secs(20)))
        .expect("alive");
    rt.advance(Duration::from_millis(19_900));
    assert!(replies.borrow().is_empty(), "not before the new timeout");
    rt.advance(Duration::from_secs(5));
    assert_eq!(answers(&replies), [Err(AskError::Timeout)]);
}

/// The one ask waiting in `replies` ends with `Timeout` no sooner than
/// 8 s from now, and within a quarter more.
fn ends_at_its_8_s_timeout(rt: &mut Rt, replies: &Replies) {
    rt.advance(Duration::from_millis(7_900));
    assert!(
        replies.borrow().is_empty(),
        "ended before its 8 s timeout: {:?}",
        replies.borrow()
    );
    rt.advance(Duration::from_millis(2_100));
    assert_eq!(answers(replies), [Err(AskError::Timeout)]);
}

/// Rule 119a, never early: an ask made, then the timeout set, in one
/// turn (as an actor's `init` might) starts the sweep twice in that turn;
/// one sweep runs per quarter all the same, so the ask ends no sooner
/// than its timeout. Twice more while it waits, too.
#[test]
fn node_an_ask_timeout_set_in_the_turn_of_the_first_ask_never_ends_it_early() {
    let (mut rt, net, a, b, _inbox) = cluster();
    doubler(&mut rt, &b);
    let replies: Replies = Rc::default();
    // The ask is lost in flight (a broken connection, both nodes up).
    net.lose(addr(1), addr(2), 1);
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 1u64, reply_into(&replies));
        n.set_ask_timeout(Duration::from_secs(8));
    })
    .expect("alive");
    ends_at_its_8_s_timeout(&mut rt, &replies);
    // Set twice in one turn while an ask waits: the same.
    net.lose(addr(1), addr(2), 1);
    a.query(&mut rt.s, |n, _| {
        n.ask(pid(2, 77), 2u64, reply_into(&replies))
    })
    .expect("alive");
    rt.run();
    a.query(&mut rt.s, |n, _| {
        n.set_ask_timeout(Duration::from_secs(4));
        n.set_ask_timeout(Duration::from_secs(8));
    })
    .expect("alive");
    ends_at_its_8_s_timeout(&mut rt, &replies);
}

/// Node `n`'s status (asked, then the queue runs).
fn status(rt: &mut Rt, n: &DeviceOwn<Node>) -> stakplane::cluster::NodeStatus {
    let got: Seen<stakplane::cluster::NodeStatus> = Rc::default();
    let g2 = got.clone();
    n.query(&mut rt.s, |n, cx| {
        n.status(cx, Ret::new(move |s| g2.borrow_mut().extend(s)))
    })
    .expect("alive");
    rt.run();
    let s = got.borrow_mut().pop().expect("answered");
    s
}

#[test]
fn node_a_registration_ends_with_its_device_and_later_messages_are_dead_letters() {
    let (mut rt, _net, a, b, _inbox) = cluster();
    let (dead, fwd) = recorder::<DeadLetter>();
    b.query(&mut rt.s, |n, _| n.set_dead_letters(fwd))
        .expect("alive");
    let (got, to_d) = recorder::<String>();
    let d = ready_dev(&mut rt, "short-lived");
    let id = d.id().get();
    let r: Ref<String> = named(&mut rt, &b, "short", &d, to_d);
    // Registered (besides two_nodes' bare inbox 42): reached through its
    // typed address and by its Pid.
    assert_eq!(status(&mut rt, &b).registered, 2);
    b.query(&mut rt.s, |n, _| n.send_ref(&r, "alive".to_string()))
        .expect("alive")
        .expect("registered");
    rt.run();
    assert_eq!(*got.borrow(), ["alive"]);
    drop(d);
    rt.run();
    // The registration ended with the device: its name is gone, a local
    // send is refused, a remote one is a dead letter; nothing reaches the
    // dead device's `Fwd` in silence.
    assert_eq!(status(&mut rt, &b).registered, 1);
    assert_eq!(
        b.query(&mut rt.s, |n, _| n.send_ref(&r, "late".to_string()))
            .expect("alive"),
        Err(SendError::UnknownTarget)
    );
    a.query(&mut rt.s, |n, _| n.send(pid(2, id), "later".to_string()))
        .expect("alive")
        .expect("sent: the target node decides");
    rt.run();
    assert_eq!(*got.borrow(), ["alive"]);
    assert_eq!(
        dead.borrow()
            .iter()
            .map(|d| (d.to, d.reason.clone()))
            .collect::<Vec<_>>(),
        [(pid(2, id), SendError::UnknownTarget)]
    );
    let found: Found = Rc::default();
    a.query(&mut rt.s, |n, _| {
        n.lookup(NodeId::new(addr(2), 1), "short", lookup_into(&found))
    })
    .expect("alive");
    rt.run();
    assert_eq!(answers(&found), [Err(LookupError::NotFound)]);
    // A watch asked after the death still gets the device's own cause
    // (its owner dropped it), not "no device is registered".
    let (downs, fwd) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| n.monitor(cx, pid(2, id), fwd))
        .expect("alive");
    rt.run();
    assert_eq!(downs.borrow().len(), 1);
    assert!(
        !downs.borrow()[0].cause.to_string().contains("registered"),
        "{}",
        downs.borrow()[0].cause
    );
    // A device already dead is not registered at all.
    let gone = ready_dev(&mut rt, "gone");
    call!([gone], stop());
    rt.run();
    assert!(!gone.is_alive());
    b.query(&mut rt.s, |n, _| {
        n.register_device(&gone, Fwd::new(|_: String| ()));
        n.register_named("ghost", &gone, Fwd::new(|_: String| ()))
    })
    .expect("alive");
    assert_eq!(status(&mut rt, &b).registered, 1);
    a.query(&mut rt.s, |n, _| {
        n.lookup(NodeId::new(addr(2), 1), "ghost", lookup_into(&found))
    })
    .expect("alive");
    rt.run();
    assert_eq!(answers(&found), [Err(LookupError::NotFound)]);
    assert_eq!(
        b.query(&mut rt.s, |n, _| n.send(pid(2, gone.id().get()), ()))
            .expect("alive"),
        Err(SendError::UnknownTarget)
    );
}

#[test]
fn node_a_registration_refuses_at_once_after_its_device_dies_and_is_watched_once() {
    let (mut rt, _net, _a, b, _inbox) = cluster();
    let (got, fwd) = recorder::<u32>();
    let d = ready_dev(&mut rt, "dies");
    let r: Ref<u32> = named(&mut rt, &b, "dies", &d, fwd);
    // The device stops, and in the same run, after its death but before
    // the node hears of it, a send to it: refused, not lost in silence.
    let sent: Seen<Result<(), SendError>> = Rc::default();
    let s2 = sent.clone();
    call!([d], stop());
    call!([b], |this, _| s2.borrow_mut().push(this.send_ref(&r, 7)));
    rt.run();
    assert_eq!(*sent.borrow(), [Err(SendError::UnknownTarget)]);
    assert!(got.borrow().is_empty());
    // A device registered again and again, and unregistered, is watched
    // once per registration at most: no watch is left behind.
    let live = ready_dev(&mut rt, "live");
    let before = stakplane::registry_stats().watchers;
    b.query(&mut rt.s, |n, _| {
        for _ in 0..10 {
            n.register_device(&live, Fwd::new(|_: u32| ()));
            n.register(live.id().get(), Fwd::new(|_: u32| ()));
            n.register_device(&live, Fwd::new(|_: u32| ()));
        }
    })
    .expect("alive");
    assert_eq!(stakplane::registry_stats().watchers, before + 1);
    let gone = b
        .query(&mut rt.s, |n, _| n.unregister(live.id().get()))
        .expect("alive");
    assert!(gone);
    assert_eq!(stakplane::registry_stats().watchers, before);
}

#[test]
fn node_an_address_made_before_a_rejoin_is_not_routed_after_it() {
    // b is declared down by a, comes back and rejoins as a new
    // incarnation: an address made under the old one names a node that
    // is down, through its route as through its `Pid`.
    let (mut rt, net, a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "kept");
    let (got, fwd) = recorder::<u32>();
    let old: Ref<u32> = named(&mut rt, &b, "kept", &d, fwd);
    net.cut(addr(2));
    rt.advance(Duration::from_secs(60));
    net.attach(
        addr(2),
        fwd_to!([b], packet() as (stakplane::cluster::Packet)),
    );
    call!([b], join(NodeId::new(addr(1), 1)));
    rt.advance(Duration::from_secs(60));
    let me = b.query(&mut rt.s, |n, _| n.id()).expect("alive");
    assert!(
        me.incarnation > 1,
        "b rejoined as a new incarnation: {me:?}"
    );
    let by_route = b
        .query(&mut rt.s, |n, _| n.send_ref(&old, 1))
        .expect("alive");
    let by_pid = b
        .query(&mut rt.s, |n, _| n.send_ref(&Ref::new(old.pid()), 2))
        .expect("alive");
    assert_eq!(by_route, by_pid);
    assert_eq!(by_route, Err(SendError::NodeDown(old.pid().node)));
    let _ = a;
    rt.run();
    assert!(got.borrow().is_empty());
}

#[test]
fn node_a_local_watch_made_before_a_rejoin_is_cancelled_whole_after_it() {
    let (mut rt, net, _a, b, _inbox) = cluster();
    let (d, _log) = remote_device(&mut rt, &b, "local to b");
    let b1 = b.query(&mut rt.s, |n, _| n.id()).expect("alive");
    let (downs, fwd) = recorder::<RemoteDown>();
    let watch = b
        .query(&mut rt.s, |n, cx| {
            n.monitor(cx, Pid::new(b1, d.id().get()), fwd)
        })
        .expect("alive");
    rt.run();
    assert_eq!(status(&mut rt, &b).watched_here, 1);
    net.cut(addr(2));
    rt.advance(Duration::from_secs(60));
    net.attach(
        addr(2),
        fwd_to!([b], packet() as (stakplane::cluster::Packet)),
    );
    call!([b], join(NodeId::new(addr(1), 1)));
    rt.advance(Duration::from_secs(60));
    let b2 = b.query(&mut rt.s, |n, _| n.id()).expect("alive");
    assert!(b2.incarnation > b1.incarnation, "rejoined: {b2:?}");
    let cancelled = b
        .query(&mut rt.s, |n, _| n.demonitor(watch))
        .expect("alive");
    assert!(cancelled, "it had not ended");
    assert_eq!(
        status(&mut rt, &b).watched_here,
        0,
        "the watch held for it goes too"
    );
    drop(d);
    rt.run();
    assert!(downs.borrow().is_empty(), "cancelled: no notice");
}

#[test]
fn node_an_address_made_by_one_node_is_never_routed_by_another() {
    // The same device registered on both nodes, in slot 0 of each: an
    // address made by `a` carries `a`'s route, which `b` must not take.
    let (mut rt, _net, a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "on both");
    let (on_a, fwd_a) = recorder::<String>();
    let (on_b, fwd_b) = recorder::<String>();
    a.query(&mut rt.s, |n, _| n.register(42, Fwd::new(|_: String| ())))
        .expect("alive");
    let to_a: Ref<String> = named(&mut rt, &a, "both", &d, fwd_a);
    let to_b: Ref<String> = named(&mut rt, &b, "both", &d, fwd_b);
    b.query(&mut rt.s, |n, _| {
        n.send_ref(&to_a, "from b to a".to_string())?;
        n.send_ref(&to_b, "from b to b".to_string())
    })
    .expect("alive")
    .expect("sent");
    rt.run();
    assert_eq!(*on_a.borrow(), ["from b to a"]);
    assert_eq!(*on_b.borrow(), ["from b to b"]);
}

#[test]
fn node_an_address_follows_its_registration_replaced_and_refuses_it_removed() {
    // An address made by `register_named` holds a shortcut to the
    // registration's handler: a registration replaced under the same
    // device (or removed) must never be reached through it.
    let (mut rt, _net, _a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "replaced");
    let (first, seen1) = recorder::<u32>();
    let (second, fwd2) = recorder::<u32>();
    // What the first handler holds: the addresses made for it, kept
    // after it is replaced, must not keep it.
    let held = Rc::new(());
    let h1 = held.clone();
    let fwd1 = Fwd::new(move |m: u32| {
        let _ = &h1;
        seen1.fwd(m);
    });
    let r: Ref<u32> = named(&mut rt, &b, "replaced", &d, fwd1);
    // The same address found by name on its own node holds the same
    // shortcut, on the same terms.
    let found: Seen<Option<Result<Ref<u32>, LookupError>>> = Rc::default();
    let f2 = found.clone();
    b.query(&mut rt.s, |n, _| {
        let me = n.id();
        n.lookup(me, "replaced", Ret::new(move |r| f2.borrow_mut().push(r)));
    })
    .expect("alive");
    let copy = found
        .borrow_mut()
        .pop()
        .flatten()
        .expect("answered at once")
        .expect("found");
    assert_eq!(copy, r);
    b.query(&mut rt.s, |n, _| {
        n.send_ref(&r, 1)?;
        n.register_device(&d, fwd2);
        n.send_ref(&r, 2)?;
        n.send_ref(&copy, 3)
    })
    .expect("alive")
    .expect("registered");
    rt.run();
    assert_eq!(*first.borrow(), [1], "the replaced handler got no more");
    assert_eq!(*second.borrow(), [2, 3], "the new one got what followed");
    let refused = b
        .query(&mut rt.s, |n, _| {
            assert!(n.unregister(d.id().get()));
            (n.send_ref(&r, 4), n.send_ref(&copy, 5))
        })
        .expect("alive");
    assert_eq!(
        refused,
        (Err(SendError::UnknownTarget), Err(SendError::UnknownTarget))
    );
    rt.run();
    assert_eq!(*first.borrow(), [1]);
    assert_eq!(*second.borrow(), [2, 3]);
    assert!(
        d.is_alive(),
        "the device lives: only its registration ended"
    );
    assert_eq!(
        Rc::strong_count(&held),
        1,
        "the addresses kept after their registration was replaced hold its handler"
    );
    drop((r, copy));
}

#[test]
fn node_sends_by_address_and_by_pid_keep_their_order_around_a_replacement() {
    // The shortcut and the table lead to the same handler: sends to one
    // target through both, mixed, arrive in send order, before and after
    // a bare `register` replaces the named registration; a replacement
    // taking another type refuses the old address's type.
    let (mut rt, _net, _a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "mix");
    let (first, fwd1) = recorder::<u32>();
    let (second, fwd2) = recorder::<u32>();
    let r: Ref<u32> = named(&mut rt, &b, "mix", &d, fwd1);
    let p = r.pid();
    let wrong = b
        .query(&mut rt.s, |n, _| {
            n.send_ref(&r, 1)?;
            n.send(p, 2u32)?;
            n.send_ref(&r, 3)?;
            n.register(p.device, fwd2);
            n.send(p, 4u32)?;
            n.send_ref(&r, 5)?;
            n.register_device(&d, Fwd::new(|_: String| ()));
            Ok::<_, SendError>(n.send_ref(&r, 6))
        })
        .expect("alive")
        .expect("sent");
    assert_eq!(wrong, Err(SendError::WrongType));
    rt.run();
    assert_eq!(*first.borrow(), [1, 2, 3]);
    assert_eq!(*second.borrow(), [4, 5]);
}

/// Rule 127: a grant this node never asked for (a `Credit` frame for a
/// target it holds no account with) opens no account: it is dropped and
/// counted, so another node cannot make this one keep, and sync after
/// every reconnect, accounts for targets it never sends to.
#[test]
fn node_a_grant_never_asked_for_opens_no_account() {
    let (mut rt, net, a, _b, _inbox) = cluster();
    for target in 1..=100u64 {
        call!(
            [a],
            packet(encoded(Frame::Credit {
                target: target | stakplane::cluster::CREDITED,
                limit: 10,
                from: pid(2, 0).node,
                dst: pid(1, 0).node,
            }))
        );
    }
    rt.run();
    let status = common::cluster::status(&mut rt, &a);
    assert_eq!(status.credit_accounts, 0, "no account opened");
    assert_eq!(status.stats.unasked_grants, 100);
    // Nothing to sync when the link comes back.
    let sent = status.stats.frames_out;
    net.reconnect(addr(1), addr(2));
    rt.run();
    let after = common::cluster::status(&mut rt, &a).stats.frames_out;
    assert!(
        after - sent < 10,
        "no sync per grant: {} frames",
        after - sent
    );
}

/// `frame`, encoded, as a packet from the peer at `from`, whatever node
/// the frame names as its sender.
fn packet_from(from: SocketAddr, frame: Frame) -> Packet {
    Packet::new(from, encoded(frame).data)
}

/// Rule 113b: a frame speaks only for the peer it came from. A frame
/// that names another node as its sender than the peer the transport
/// says it came from (here: from a, in c's name), or gossip whose
/// message names another source, is dropped and counted; the same frame
/// from the node it names is taken.
#[test]
fn node_a_frame_in_another_nodes_name_is_dropped_and_counted() {
    let (mut rt, _net, _a, b, inbox) = cluster();
    let c = NodeId::new(addr(3), 1);
    let send = Frame::Send {
        to: 42,
        from: Some(Pid::new(c, 7)),
        payload: postcard_string("in c's name"),
        dst: pid(2, 0).node,
    };
    call!([b], packet(packet_from(addr(1), send.clone())));
    rt.run();
    let stats = |rt: &mut Rt| common::cluster::status(rt, &b).stats;
    assert_eq!(stats(&mut rt).forged_frames, 1);
    assert!(
        inbox.borrow().is_empty(),
        "not delivered: {:?}",
        inbox.borrow()
    );
    // Gossip in c's name, from a.
    let mut gossip = Vec::new();
    foca::Codec::encode_header(
        &mut foca::PostcardCodec,
        &foca::Header {
            src: c,
            src_incarnation: 0,
            dst: pid(2, 0).node,
            message: foca::Message::<NodeId>::Announce,
        },
        &mut gossip,
    )
    .expect("encodes");
    call!([b], packet(packet_from(addr(1), Frame::Gossip(gossip))));
    rt.run();
    assert_eq!(stats(&mut rt).forged_frames, 2);
    // From c itself, the same `Send` is taken.
    call!([b], packet(packet_from(addr(3), send)));
    rt.run();
    assert_eq!(stats(&mut rt).forged_frames, 2);
    assert_eq!(*inbox.borrow(), ["in c's name"]);
}

/// A lookup from a of a name registered on b, whose answer is lost in
/// flight: the runtime, the network, a and b, the registered address,
/// and where the lookup's answer goes.
type LostAnswer = (Rt, MemNet, [DeviceOwn<Node>; 2], Ref<String>, Found);

fn lookup_answer_lost() -> LostAnswer {
    let (mut rt, net, a, b, _inbox) = cluster();
    let d = ready_dev(&mut rt, "named");
    let (_got, fwd) = recorder::<String>();
    let registered = named(&mut rt, &b, "store", &d, fwd);
    let found: Found = Rc::default();
    let b_id = NodeId::new(addr(2), 1);
    net.lose(addr(2), addr(1), 1);
    a.query(&mut rt.s, |n, _| {
        n.lookup(b_id, "store", lookup_into(&found))
    })
    .expect("alive");
    rt.run();
    (rt, net, [a, b], registered, found)
}

/// Rule 113b for answers: an answer to a lookup is taken only from the
/// node asked. Another node's `Found` for its tag (a wrong or forged
/// tag) is a late answer; the lookup still ends once, here as
/// `Timeout` (the real answer was lost).
#[test]
fn node_an_answer_from_another_node_than_the_one_asked_is_late() {
    let (mut rt, _net, [a, _b], _registered, found) = lookup_answer_lost();
    let c = NodeId::new(addr(3), 1);
    for tag in 0..200 {
        let found = Frame::Found {
            tag,
            device: Some((5, std::any::type_name::<String>().to_string())),
            from: c,
            dst: pid(1, 0).node,
        };
        call!([a], packet(packet_from(addr(3), found)));
    }
    rt.run();
    assert!(
        found.borrow().is_empty(),
        "not answered by c: {:?}",
        found.borrow()
    );
    assert_eq!(common::cluster::status(&mut rt, &a).stats.late_answers, 200);
    rt.advance(Duration::from_secs(60));
    assert_eq!(answers(&found), [Err(LookupError::Timeout)]);
}

/// Rule 113b with rule 114a: the node asked may answer in the name of a
/// later incarnation of itself (it rejoined, and took the request made
/// to the one it was): that answer is taken, not counted late.
#[test]
fn node_an_answer_from_a_later_incarnation_of_the_node_asked_is_taken() {
    let (mut rt, _net, [a, _b], registered, found) = lookup_answer_lost();
    let answered = |tag| Frame::Found {
        tag,
        device: Some((
            registered.pid().device,
            std::any::type_name::<String>().to_string(),
        )),
        from: NodeId::new(addr(2), 2),
        dst: pid(1, 0).node,
    };
    // The lookup's tag is the only one waiting: the others are late.
    for tag in 0..200 {
        call!([a], packet(packet_from(addr(2), answered(tag))));
    }
    rt.run();
    assert_eq!(answers(&found), [Ok(registered)]);
    assert_eq!(common::cluster::status(&mut rt, &a).stats.late_answers, 199);
}

/// Rule 122a: a device told that a link was refused is not told again
/// when that `Link` is asked again, however many links were refused to
/// the node's other devices meanwhile (each device keeps its own record).
#[test]
fn node_a_refused_link_asked_again_after_many_refused_to_another_device_is_not_told_again() {
    let (mut rt, _net, a, _b, _inbox) = cluster();
    a.query(&mut rt.s, |n, _| n.set_watch_limit(0))
        .expect("alive");
    let (first, _log) = remote_device(&mut rt, &a, "first");
    let (other, _log_o) = remote_device(&mut rt, &a, "other");
    let (first_downs, fwd) = recorder::<RemoteDown>();
    let (other_downs, fwd_o) = recorder::<RemoteDown>();
    a.query(&mut rt.s, |n, cx| {
        n.trap(cx, &first, fwd).expect("trapping");
        n.trap(cx, &other, fwd_o).expect("trapping");
    })
    .expect("alive");
    let link = |watcher: u64, target: u64| {
        packet_from(
            addr(2),
            Frame::Link {
                watcher,
                target,
                from: pid(2, 0).node,
                dst: pid(1, 0).node,
                epoch: 1,
            },
        )
    };
    call!([a], packet(link(first.id().get(), 7)));
    rt.run();
    for target in 1000..5200 {
        call!([a], packet(link(other.id().get(), target)));
    }
    rt.run();
    assert_eq!(other_downs.borrow().len(), 4200);
    call!([a], packet(link(first.id().get(), 7)));
    rt.run();
    assert_eq!(first_downs.borrow().len(), 1, "told once");
}
