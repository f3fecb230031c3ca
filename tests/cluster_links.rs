//! Remote monitors and links across nodes, on the in-memory network and
//! virtual time: the {Monitor, Notify, Peer} × {stop, error, panic,
//! kill, node loss} × {trap, no trap} matrix with the exact cause each
//! watcher sees, demonitor and unlink, and a supervisor restarting a
//! child whose remote peer was lost (rules 114, 120–122 in
//! `src/cluster/mod.rs`).
#![cfg(feature = "cluster")]

mod common;

use common::cluster::{addr_in, encoded, node_on, recorder, status, Seen};
use common::{End, Rt};
use stakplane::cluster::membership::MemberEvent;
use stakplane::cluster::wire::WireCause;
use stakplane::cluster::{Frame, MemNet, Node, NodeId, Pid, RemoteDown};
use stakplane::prelude::*;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

fn addr(n: u8) -> SocketAddr {
    addr_in(2, n)
}

fn start(rt: &mut Rt, net: &MemNet, n: u8) -> DeviceOwn<Node> {
    node_on(
        rt,
        net,
        NodeId::new(addr(n), 1),
        Fwd::new(|_: MemberEvent| ()),
    )
}

/// Two joined nodes.
struct Pair {
    rt: Rt,
    net: MemNet,
    a: DeviceOwn<Node>,
    b: DeviceOwn<Node>,
}

fn pair() -> Pair {
    let mut rt = Rt::new();
    let net = MemNet::new();
    let a = start(&mut rt, &net, 1);
    let b = start(&mut rt, &net, 2);
    rt.run();
    call!([b], join(NodeId::new(addr(1), 1)));
    rt.advance(Duration::from_secs(5));
    Pair { rt, net, a, b }
}

/// A ready device on `node`, registered there (so other nodes can watch
/// it and link to it); its `Pid`.
fn device_on(p: &mut Pair, on_b: bool, name: &'static str) -> (DeviceOwn<common::Dev>, Pid) {
    let log = common::new_log();
    let d = common::dev(&mut p.rt, name, &log);
    p.rt.run();
    let node = if on_b { &p.b } else { &p.a };
    let me = node
        .query(&mut p.rt.s, |n, _| {
            n.register_device(&d, Fwd::new(|_: String| ()));
            n.id()
        })
        .expect("alive");
    let pid = Pid::new(me, d.id().get());
    (d, pid)
}

/// What one case ends with, as the watcher saw it.
#[derive(Debug, PartialEq, Eq)]
struct Seen1 {
    /// The notices its trap handler got, as (dead pid, cause text).
    trapped: Vec<(Pid, String)>,
    /// The watcher's own cause, if it died.
    died: Option<String>,
}

/// How the watched device ends: one of the device's own ends, or its
/// node lost.
#[derive(Clone, Copy, Debug)]
enum How {
    Own(End),
    NodeLost,
}

impl How {
    const ALL: [How; 5] = [
        How::Own(End::Stop),
        How::Own(End::Error),
        How::Own(End::Panic),
        How::Own(End::Kill),
        How::NodeLost,
    ];

    fn cause_text(self) -> String {
        match self {
            How::Own(end) => end.cause_text(),
            How::NodeLost => Cause::Lost.to_string(),
        }
    }

    fn is_fault(self) -> bool {
        match self {
            How::Own(end) => end.is_fault(),
            How::NodeLost => true,
        }
    }
}

/// `x` on node a links to `y` on node b with `mode`; the watched one
/// (`y` for Monitor and Peer, `x` for Notify) ends `how`; the watcher
/// traps if `trap`. Returns what the watcher saw and the watched pid.
fn case(mode: LinkMode, how: How, trap: bool) -> (Seen1, Pid) {
    let mut p = pair();
    let (x, xp) = device_on(&mut p, false, "x");
    let (y, yp) = device_on(&mut p, true, "y");
    let x_line = x.line();
    let (trapped, fwd) = recorder::<RemoteDown>();
    // The watcher, its node and the watched.
    let watcher_on_b = mode == LinkMode::Notify;
    let (watcher, watched, watched_pid) = if watcher_on_b {
        (y.line(), x, xp)
    } else {
        (x.line(), y, yp)
    };
    if trap {
        let node = if watcher_on_b { &p.b } else { &p.a };
        node.query(&mut p.rt.s, |n, cx| n.trap(cx, &watcher, fwd))
            .expect("alive")
            .expect("the watcher is alive");
    }
    p.a.query(&mut p.rt.s, |n, cx| n.link(cx, &x_line, yp, mode))
        .expect("alive")
        .expect("links");
    p.rt.run();
    assert!(trapped.borrow().is_empty(), "nothing before the end");
    let mut keep = Vec::new();
    match how {
        How::Own(end) => end.apply(watched, &mut keep),
        How::NodeLost => {
            keep.push(watched);
            p.net.cut(watched_pid.node.addr);
            p.rt.advance(Duration::from_secs(60));
        }
    }
    p.rt.run();
    // Later events change nothing: the other node lost after a death.
    if let How::Own(_) = how {
        p.net.cut(watched_pid.node.addr);
        p.rt.advance(Duration::from_secs(60));
    }
    let seen = Seen1 {
        trapped: trapped
            .borrow()
            .iter()
            .map(|d| (d.pid, d.cause.to_string()))
            .collect(),
        died: watcher.cause().map(|c| c.to_string()),
    };
    drop(keep);
    (seen, watched_pid)
}

#[test]
fn links_remote_link_matrix_gives_each_watcher_the_exact_cause() {
    for mode in [LinkMode::Monitor, LinkMode::Notify, LinkMode::Peer] {
        for how in How::ALL {
            for trap in [false, true] {
                let (seen, dead) = case(mode, how, trap);
                let text = how.cause_text();
                let want = if trap {
                    Seen1 {
                        trapped: vec![(dead, text.clone())],
                        died: None,
                    }
                } else if how.is_fault() {
                    Seen1 {
                        trapped: vec![],
                        died: Some(format!("killed: linked remote device {dead} {text}")),
                    }
                } else {
                    Seen1 {
                        trapped: vec![],
                        died: None,
                    }
                };
                assert_eq!(seen, want, "{mode:?} {how:?} trap={trap}");
            }
        }
    }
}

/// `x` on node a traps; its notices.
fn trapping_x(p: &mut Pair) -> (DeviceOwn<common::Dev>, Seen<RemoteDown>) {
    let (x, _) = device_on(p, false, "x");
    let (trapped, fwd) = recorder::<RemoteDown>();
    p.a.query(&mut p.rt.s, |n, cx| n.trap(cx, &x, fwd))
        .expect("alive")
        .expect("x is alive");
    (x, trapped)
}

#[test]
fn links_are_deduplicated_one_notice_per_pair_and_direction() {
    let mut p = pair();
    let (x, trapped) = trapping_x(&mut p);
    let (y, yp) = device_on(&mut p, true, "y");
    p.a.query(&mut p.rt.s, |n, cx| {
        for mode in [LinkMode::Monitor, LinkMode::Peer, LinkMode::Monitor] {
            n.link(cx, &x, yp, mode).expect("links");
        }
    })
    .expect("alive");
    p.rt.run();
    call!([y], fail());
    p.rt.run();
    assert_eq!(trapped.borrow().len(), 1, "one notice for x watching y");
    assert!(x.is_alive());
}

#[test]
fn links_unlink_and_demonitor_stop_notification() {
    let mut p = pair();
    let (x, trapped) = trapping_x(&mut p);
    let (y, yp) = device_on(&mut p, true, "y");
    let (downs, fwd) = recorder::<RemoteDown>();
    let (kept, fwd_kept) = recorder::<RemoteDown>();
    let watch =
        p.a.query(&mut p.rt.s, |n, cx| {
            n.link(cx, &x, yp, LinkMode::Peer).expect("links");
            n.monitor(cx, yp, fwd_kept);
            n.monitor(cx, yp, fwd)
        })
        .expect("alive");
    p.rt.run();
    p.a.query(&mut p.rt.s, |n, _| {
        n.unlink(&x, yp, LinkMode::Peer);
        assert!(n.demonitor(watch), "cancelled before the death");
    })
    .expect("alive");
    p.rt.run();
    // Nobody on b watches x any more, and b holds no watch for a.
    let held = status_of(&mut p, false).watched_here;
    assert_eq!(held, 1, "b holds only the monitor left");
    call!([y], fail());
    p.rt.run();
    assert!(trapped.borrow().is_empty(), "unlinked: no notice");
    assert!(downs.borrow().is_empty(), "demonitored: no notice");
    assert_eq!(kept.borrow().len(), 1, "the other monitor still hears");
    let again =
        p.a.query(&mut p.rt.s, |n, _| n.demonitor(watch))
            .expect("alive");
    assert!(!again, "a watch that ended cannot be cancelled");
    drop(x);
    // The other half of unlinking a `Peer` link: the remote device no
    // longer watches the local one, so a fault here does not reach it.
    let (u, _) = device_on(&mut p, false, "u");
    let (v, vp) = device_on(&mut p, true, "v");
    p.a.query(&mut p.rt.s, |n, cx| n.link(cx, &u, vp, LinkMode::Peer))
        .expect("alive")
        .expect("links");
    p.rt.run();
    p.a.query(&mut p.rt.s, |n, _| n.unlink(&u, vp, LinkMode::Peer))
        .expect("alive");
    p.rt.run();
    u.kill("a fault after the unlink").expect("alive");
    p.rt.run();
    assert!(v.is_alive(), "unlinked: {:?}", v.line().cause());
}

/// Device x on node a and device y on node b, for rule 121's unlinks.
struct XY {
    p: Pair,
    ids: (NodeId, NodeId),
    x: DeviceOwn<common::Dev>,
    xp: Pid,
    y: DeviceOwn<common::Dev>,
    yp: Pid,
}

impl XY {
    fn new() -> XY {
        let mut p = pair();
        let ids = ids(&mut p);
        let (x, xp) = device_on(&mut p, false, "x");
        let (y, yp) = device_on(&mut p, true, "y");
        XY {
            p,
            ids,
            x,
            xp,
            y,
            yp,
        }
    }

    /// Node b links y so that x watches it (`Notify`), or undoes it.
    fn b_links(&mut self, link: bool) {
        let (y, xp) = (&self.y, self.xp);
        self.p
            .b
            .query(&mut self.p.rt.s, |n, cx| {
                if link {
                    n.link(cx, y, xp, LinkMode::Notify).expect("links");
                } else {
                    n.unlink(y, xp, LinkMode::Notify);
                }
            })
            .expect("alive");
        self.p.rt.run();
    }

    /// Node a links x so that it watches y (`Monitor`), or undoes it.
    fn a_links(&mut self, link: bool) {
        let (x, yp) = (&self.x, self.yp);
        self.p
            .a
            .query(&mut self.p.rt.s, |n, cx| {
                if link {
                    n.link(cx, x, yp, LinkMode::Monitor).expect("links");
                } else {
                    n.unlink(x, yp, LinkMode::Monitor);
                }
            })
            .expect("alive");
        self.p.rt.run();
    }

    /// The next `n` packets from b to a (`from_b`), or from a to b, are
    /// lost.
    fn lose(&self, from_b: bool, n: usize) {
        let (a, b) = (self.ids.0.addr, self.ids.1.addr);
        if from_b {
            self.p.net.lose(b, a, n);
        } else {
            self.p.net.lose(a, b, n);
        }
    }

    fn reconnect(&mut self) {
        self.p.net.reconnect(self.ids.0.addr, self.ids.1.addr);
        self.p.rt.run();
    }

    /// Watches b holds for a.
    fn held_on_b(&mut self) -> usize {
        status_of(&mut self.p, false).watched_here
    }

    /// Another device of node a, known to it (trapping), dies.
    fn another_device_of_a_dies(&mut self) {
        let (z, _) = device_on(&mut self.p, false, "z");
        let (_, fwd) = recorder::<RemoteDown>();
        self.p
            .a
            .query(&mut self.p.rt.s, |n, cx| n.trap(cx, &z, fwd))
            .expect("alive")
            .expect("z is alive");
        z.kill("z ends").expect("alive");
        self.p.rt.run();
    }

    /// y fails with `why`: x's cause after it, `None` while x lives.
    fn y_fails(&mut self, why: &'static str) -> Option<String> {
        self.y.kill(why).expect("alive");
        self.p.rt.run();
        self.x.line().cause().map(|c| c.to_string())
    }

    /// y fails with `why`, and x dies of it through the link that stands.
    #[track_caller]
    fn x_dies_of(&mut self, why: &'static str) {
        let cause = self.y_fails(why);
        assert!(
            cause.as_deref().is_some_and(|c| c.contains(why)),
            "x died of the link: {cause:?}"
        );
    }
}

/// Rule 121 for a link the other node made: a device unlinked on its own
/// side from a `Notify` link of another node stays unlinked when the
/// connection comes back (that node forgets the link, and does not ask
/// for it again).
#[test]
fn links_an_unlink_on_the_watching_side_holds_after_the_link_is_back() {
    let mut t = XY::new();
    t.b_links(true);
    assert_eq!(t.held_on_b(), 1, "x watches y");
    t.a_links(false);
    t.reconnect();
    assert_eq!(t.held_on_b(), 0, "not linked again");
    assert_eq!(t.y_fails("a fault after the unlink"), None, "unlinked");
}

/// Rules 121 and 114: a `Link` from an incarnation declared down, for a
/// link this node undid on the watching side (sent before that node
/// learnt it was down, or again after), is dropped: not told as `Lost`,
/// which would kill the device that unlinked.
#[test]
fn links_an_unlink_on_the_watching_side_holds_against_a_link_from_the_lost_node() {
    let mut t = XY::new();
    t.b_links(true);
    t.a_links(false);
    t.p.net.cut(t.ids.1.addr);
    t.p.rt.advance(Duration::from_secs(60));
    assert!(t.x.is_alive(), "{:?}", t.x.line().cause());
    let link = encoded(Frame::Link {
        watcher: t.xp.device,
        target: t.yp.device,
        from: t.ids.1,
        dst: t.ids.0,
        epoch: 1,
    });
    call!([t.p.a], packet(link));
    t.p.rt.run();
    assert!(t.x.is_alive(), "unlinked: {:?}", t.x.line().cause());
}

/// Rule 121 when the unlink's frame is lost with a broken connection:
/// the other node asks for the link again when the connection comes back,
/// this node refuses it and says again that it unlinked.
#[test]
fn links_an_unlink_on_the_watching_side_holds_when_its_frame_is_lost_in_flight() {
    let mut t = XY::new();
    t.b_links(true);
    assert_eq!(t.held_on_b(), 1, "x watches y");
    t.lose(false, 2); // the Demonitor and the Unwatch
    t.a_links(false);
    t.reconnect();
    assert_eq!(t.y_fails("a fault after the unlink"), None, "unlinked");
}

/// Rule 121: the node that made a `Notify` link undone on the watching
/// side forgets it when told (`Unwatch`): a reconnect after it sends no
/// more packets than one before the link was made (the link is not asked
/// again, and refused again, at every reconnect).
#[test]
fn links_an_unlink_on_the_watching_side_is_forgotten_by_the_linking_node() {
    let mut t = XY::new();
    let sent_by_a_reconnect = |t: &mut XY| {
        let before = t.p.net.counts().0;
        t.reconnect();
        t.p.net.counts().0 - before
    };
    let quiet = sent_by_a_reconnect(&mut t);
    t.b_links(true);
    assert_eq!(t.held_on_b(), 1, "x watches y");
    t.a_links(false);
    assert_eq!(t.held_on_b(), 0, "unlinked");
    assert_eq!(sent_by_a_reconnect(&mut t), quiet, "nothing asked again");
    assert_eq!(t.y_fails("a fault after the unlink"), None, "unlinked");
}

/// Rule 121: an unlink on the watching side whose frames are lost in
/// flight holds when another device of its node dies before the
/// connection comes back (a death forgets that device's unlinks only).
#[test]
fn links_an_unlink_on_the_watching_side_holds_when_another_device_dies_before_the_link_is_back() {
    let mut t = XY::new();
    t.b_links(true);
    assert_eq!(t.held_on_b(), 1, "x watches y");
    t.lose(false, 2); // the Demonitor and the Unwatch
    t.a_links(false);
    t.another_device_of_a_dies();
    t.reconnect();
    assert_eq!(t.held_on_b(), 0, "not linked again");
    assert_eq!(t.y_fails("a fault after the unlink"), None, "unlinked");
}

/// Rule 121 from the other side: a `Notify` link undone by the node that
/// made it stays undone when its `Unlink` is lost with a broken
/// connection (it is sent again when the connection comes back), and a
/// link made again after it holds.
#[test]
fn links_an_unlink_on_the_notifying_side_holds_when_its_frame_is_lost_in_flight() {
    let mut t = XY::new();
    t.b_links(true);
    t.lose(true, 1); // the Unlink
    t.b_links(false);
    t.reconnect();
    assert_eq!(t.held_on_b(), 0, "x watches y no more");
    // Linked again: the Unlink said again does not undo it.
    t.b_links(true);
    t.reconnect();
    t.x_dies_of("a fault after the new link");
}

/// Rule 121: the watching node answers an `Unlink` (`Frame::Unlinked`),
/// so the node that unlinked forgets it instead of saying every unlink it
/// remembers (up to 4,096) again at each reconnect; one lost in flight is
/// said again, and then answered.
#[test]
fn links_an_unlink_is_answered_and_not_said_again() {
    let mut t = XY::new();
    let unanswered = |t: &mut XY| status_of(&mut t.p, false).cancels_unanswered;
    t.b_links(true);
    t.b_links(false);
    assert_eq!(unanswered(&mut t), 0, "answered");
    t.b_links(true);
    t.lose(true, 1); // the Unlink
    t.b_links(false);
    assert_eq!(unanswered(&mut t), 1, "to say again");
    t.reconnect();
    assert_eq!(unanswered(&mut t), 0, "said again and answered");
    assert_eq!(t.y_fails("a fault after the unlink"), None, "unlinked");
}

/// Rule 121: an `Unlink` lost in flight holds even when its device dies
/// before the link comes back (the death's notice lost too): said again,
/// it undoes the link before the watch asked again can hear of the death.
#[test]
fn links_an_unlink_lost_in_flight_holds_when_its_device_dies_meanwhile() {
    let mut t = XY::new();
    t.b_links(true);
    t.lose(true, 2); // the Unlink, then the Down
    t.b_links(false);
    assert_eq!(t.y_fails("a fault after the unlink"), None, "not yet told");
    t.reconnect();
    assert!(t.x.is_alive(), "unlinked: {:?}", t.x.line().cause());
}

/// Rule 121: an `Unlink` said again goes ahead of a death notice that
/// waits for room to the watcher's node (queued while the link was down).
#[test]
fn links_an_unlink_said_again_goes_ahead_of_a_death_notice_that_waits_for_room() {
    let mut t = XY::new();
    t.b_links(true);
    t.lose(true, 1); // the Unlink
    t.b_links(false);
    t.p.net.hold(t.ids.0.addr, 0); // a takes no data: the Down waits on b
    assert_eq!(t.y_fails("a fault after the unlink"), None, "not yet told");
    t.reconnect();
    t.p.net.release(t.ids.0.addr);
    t.p.rt.run();
    assert!(t.x.is_alive(), "unlinked: {:?}", t.x.line().cause());
}

/// Rule 121: an `Unlink` said again after a reconnect undoes only links
/// its node made; a link the watching node made itself since holds.
#[test]
fn links_an_unlink_said_again_keeps_a_link_the_watching_node_made_itself() {
    let mut t = XY::new();
    t.b_links(true);
    t.b_links(false);
    t.a_links(true);
    t.reconnect();
    t.x_dies_of("a fault after x's own link");
}

/// Rule 121: an `Unlink` lost twice, with two breaks of the connection,
/// still holds: it is said again each time the link comes back.
#[test]
fn links_an_unlink_lost_twice_holds_after_the_third_connection() {
    let mut t = XY::new();
    t.b_links(true);
    t.lose(true, 1); // the Unlink
    t.b_links(false);
    t.lose(true, 1); // the Unlink said again
    t.reconnect();
    t.reconnect();
    assert_eq!(t.y_fails("a fault after the unlink"), None, "unlinked");
}

/// Rule 121: a link the watching node makes itself while an `Unlink` of
/// the other node's link of the same pair is lost in flight holds when
/// that `Unlink` is said again.
#[test]
fn links_a_link_made_while_an_unlink_of_the_pair_is_lost_holds() {
    let mut t = XY::new();
    t.b_links(true);
    t.lose(true, 1); // the Unlink
    t.b_links(false);
    t.a_links(true);
    t.reconnect();
    t.x_dies_of("a fault after x's own link");
}

/// Rule 121 for a link both nodes made (a `Monitor` link here, the same
/// pair's `Notify` link there): unlinked here, it stays unlinked when the
/// other node asks for its link again after a reconnect.
#[test]
fn links_a_link_both_nodes_made_unlinked_on_the_watching_side_holds_after_the_link_is_back() {
    let mut t = XY::new();
    t.a_links(true);
    t.b_links(true);
    t.a_links(false);
    t.reconnect();
    assert_eq!(t.y_fails("a fault after the unlink"), None, "unlinked");
}

#[test]
fn links_a_dead_device_or_a_self_link_is_refused_and_links_nothing() {
    let mut p = pair();
    let (x, xp) = device_on(&mut p, false, "x");
    let (_y, yp) = device_on(&mut p, true, "y");
    let line = x.line();
    let got =
        p.a.query(&mut p.rt.s, |n, cx| n.link(cx, &line, xp, LinkMode::Peer))
            .expect("alive");
    assert!(matches!(got, Err(LinkError::SelfLink(id)) if id == x.id()));
    drop(x);
    p.rt.run();
    let got =
        p.a.query(&mut p.rt.s, |n, cx| n.link(cx, &line, yp, LinkMode::Peer))
            .expect("alive");
    assert!(matches!(got, Err(LinkError::DeviceDown { .. })));
    assert_eq!(status_of(&mut p, true).watches, 0);
}

#[test]
fn links_a_dead_watcher_takes_its_remote_watches_with_it() {
    let mut p = pair();
    let (x, _) = device_on(&mut p, false, "x");
    let (y, yp) = device_on(&mut p, true, "y");
    p.a.query(&mut p.rt.s, |n, cx| n.link(cx, &x, yp, LinkMode::Monitor))
        .expect("alive")
        .expect("links");
    p.rt.run();
    assert_eq!(status_of(&mut p, false).watched_here, 1);
    drop(x);
    p.rt.run();
    assert_eq!(status_of(&mut p, true).watches, 0, "a forgot the link");
    assert_eq!(status_of(&mut p, false).watched_here, 0, "b was told");
    drop(y);
}

/// Rules 121 and 122a: a `Demonitor` lost with a connection that breaks
/// is said again when the connection comes back, so the watched node
/// does not hold the cancelled watch for as long as the device lives,
/// counted toward the watching node's bound there (here the bound is 1:
/// held, it would refuse that node's next watch). The cancelled watch
/// hears nothing, the device's death included.
#[test]
fn links_a_demonitor_lost_in_flight_does_not_hold_a_watch_for_ever() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    let (d, dp) = device_on(&mut p, true, "watched");
    let (_d2, d2p) = device_on(&mut p, true, "watched later");
    p.b.query(&mut p.rt.s, |n, _| n.set_watch_limit(1))
        .expect("alive");
    let (downs, fwd) = recorder::<RemoteDown>();
    let m =
        p.a.query(&mut p.rt.s, |n, cx| n.monitor(cx, dp, fwd))
            .expect("alive");
    p.rt.run();
    assert_eq!(status_of(&mut p, false).watched_here, 1);
    // The Demonitor is lost in flight; the connection comes back.
    p.net.lose(ida.addr, idb.addr, 1);
    let cancelled =
        p.a.query(&mut p.rt.s, |n, _| n.demonitor(m))
            .expect("alive");
    assert!(cancelled, "cancelled before the end");
    p.rt.run();
    assert_eq!(
        status_of(&mut p, true).cancels_unanswered,
        1,
        "to say again"
    );
    p.net.reconnect(ida.addr, idb.addr);
    p.rt.advance(Duration::from_secs(5));
    assert_eq!(status_of(&mut p, true).watches, 0, "a holds no watch");
    assert_eq!(
        status_of(&mut p, true).cancels_unanswered,
        0,
        "said again and answered"
    );
    // a watches another device of b: its one watch there.
    let downs2 = monitor_from_a(&mut p, d2p);
    let refused: Vec<String> = downs2
        .borrow()
        .iter()
        .map(|d| d.cause.to_string())
        .collect();
    assert!(
        refused.is_empty(),
        "a's only watch on b refused: {refused:?}"
    );
    assert_eq!(
        status_of(&mut p, false).watched_here,
        1,
        "b holds only a's live watch"
    );
    // The cancelled watch's device dies: nothing reaches its watcher.
    call!([d], fail());
    p.rt.run();
    p.net.reconnect(ida.addr, idb.addr);
    p.rt.run();
    assert!(downs.borrow().is_empty(), "cancelled: no notice");
}

/// Rule 121: the watched node answers a `Demonitor`, so the watching
/// node forgets it and does not say it again at each reconnect (it said
/// every cancel it remembered, up to 4,096, on every reconnect before);
/// the answer reaches no watcher, and one for a live watch is a bad
/// frame.
#[test]
fn links_a_demonitor_is_answered_and_not_said_again() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    let (_d, dp) = device_on(&mut p, true, "watched");
    let (downs, fwd) = recorder::<RemoteDown>();
    let m =
        p.a.query(&mut p.rt.s, |n, cx| n.monitor(cx, dp, fwd))
            .expect("alive");
    p.rt.run();
    assert!(p
        .a
        .query(&mut p.rt.s, |n, _| n.demonitor(m))
        .expect("alive"));
    p.rt.run();
    assert_eq!(status_of(&mut p, false).watched_here, 0, "b cancelled it");
    assert_eq!(status_of(&mut p, true).cancels_unanswered, 0, "answered");
    // Nothing to say again when the connection comes back.
    p.net.reconnect(ida.addr, idb.addr);
    p.rt.run();
    assert_eq!(status_of(&mut p, true).cancels_unanswered, 0);
    assert!(downs.borrow().is_empty(), "the answer reaches no watcher");
    // A `Down` of cause Cancelled for a live watch: a bad frame, the
    // watch goes on.
    let m2 =
        p.a.query(&mut p.rt.s, |n, cx| {
            let (_, fwd) = recorder::<RemoteDown>();
            n.monitor(cx, dp, fwd)
        })
        .expect("alive");
    p.rt.run();
    let bad = |p: &mut Pair| status_of(p, true).stats.bad_frames;
    let bad_before = bad(&mut p);
    let live_tag = (0..64)
        .find(|&tag| {
            let forged = encoded(Frame::Down {
                tag,
                cause: WireCause::Cancelled,
                from: idb,
                dst: ida,
            });
            call!([p.a], packet(forged));
            p.rt.run();
            bad(&mut p) > bad_before
        })
        .expect("one tag is the live watch's");
    assert_eq!(
        status_of(&mut p, true).watches,
        1,
        "tag {live_tag}: still watched"
    );
    assert!(p
        .a
        .query(&mut p.rt.s, |n, _| n.demonitor(m2))
        .expect("alive"));
}

/// Rule 121 for a dead watching device: the `Demonitor` that cancels
/// its link's watch on the other node, lost in flight, is said again when
/// the connection comes back; the watched node holds nothing for it.
#[test]
fn links_a_dead_watchers_demonitor_lost_in_flight_is_said_again() {
    let mut t = XY::new();
    t.a_links(true);
    assert_eq!(t.held_on_b(), 1, "x watches y");
    t.lose(false, 1); // the Demonitor
    t.x.kill("the watcher ends").expect("alive");
    t.p.rt.run();
    assert_eq!(status_of(&mut t.p, true).watches, 0, "a forgot the link");
    t.reconnect();
    assert_eq!(t.held_on_b(), 0, "b was told again");
}

#[test]
fn links_a_link_to_an_unknown_remote_device_ends_at_once_as_a_fault() {
    let mut p = pair();
    let (x, _) = device_on(&mut p, false, "x");
    let b = p.b.query(&mut p.rt.s, |n, _| n.id()).expect("alive");
    p.a.query(&mut p.rt.s, |n, cx| {
        n.link(cx, &x, Pid::new(b, 999_999), LinkMode::Monitor)
    })
    .expect("alive")
    .expect("links");
    p.rt.run();
    let cause = x.line().cause().expect("x died of it");
    assert!(
        cause
            .to_string()
            .contains("no device is registered under that id"),
        "{cause}"
    );
}

/// Node a's status (or, with `on_a` false, node b's).
fn status_of(p: &mut Pair, on_a: bool) -> stakplane::cluster::NodeStatus {
    let node = if on_a { &p.a } else { &p.b };
    status(&mut p.rt, node)
}

/// A child that links itself to a remote device when it starts.
struct Linked;
impl Linked {
    fn init(_: CX![], starts: Rc<std::cell::Cell<u32>>) -> Option<Self> {
        starts.set(starts.get() + 1);
        Some(Linked)
    }
}

#[test]
fn links_a_supervisor_restarts_a_child_whose_remote_peer_was_lost() {
    use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
    let mut p = pair();
    let (_y, yp) = device_on(&mut p, true, "y");
    let starts = Rc::new(std::cell::Cell::new(0));
    let s2 = starts.clone();
    let node = p.a.actor().clone();
    let spec = ChildSpec::worker("linked", move |core| {
        let child = device!(core, Linked::init(s2.clone()));
        let line = child.line();
        call!([node], |n, cx| {
            // Only while b is a member: a link to a lost node's device
            // ends at once (and would fail the child again).
            if n.members().contains(&yp.node) {
                // Alive: the child was just made.
                let _ = n.link(cx, &line, yp, LinkMode::Monitor);
            }
        });
        Ok(child.into())
    });
    let sup = Supervisor::start(
        &mut p.rt.s,
        SupervisorSpec::one_for_one()
            .intensity(5, Duration::from_secs(600))
            .child(spec),
    )
    .expect("starts");
    p.rt.run();
    assert_eq!(starts.get(), 1);
    p.net.cut(addr(2));
    p.rt.advance(Duration::from_secs(60));
    assert_eq!(starts.get(), 2, "restarted once, when b was lost");
    assert_eq!(sup.count_children().expect("running").active, 1);
}

/// Node a's and node b's ids in a `pair`.
fn ids(p: &mut Pair) -> (NodeId, NodeId) {
    let a = p.a.query(&mut p.rt.s, |n, _| n.id()).expect("alive");
    let b = p.b.query(&mut p.rt.s, |n, _| n.id()).expect("alive");
    (a, b)
}

/// Node a monitors `pid` (the queue runs); the Downs it hears.
fn monitor_from_a(p: &mut Pair, pid: Pid) -> Seen<RemoteDown> {
    let (downs, fwd) = recorder::<RemoteDown>();
    p.a.query(&mut p.rt.s, |n, cx| n.monitor(cx, pid, fwd))
        .expect("alive");
    p.rt.run();
    downs
}

/// `downs` heard nothing yet (`why_not_yet`); once the link between a
/// and b (`ids`) comes back twice, it has heard `end`'s cause exactly
/// once.
#[track_caller]
fn heard_once_after_two_reconnects(
    p: &mut Pair,
    (ida, idb): (NodeId, NodeId),
    downs: &Seen<RemoteDown>,
    end: End,
    why_not_yet: &str,
) {
    assert!(downs.borrow().is_empty(), "{why_not_yet}");
    for _ in 0..2 {
        p.net.reconnect(ida.addr, idb.addr);
        p.rt.run();
    }
    let heard: Vec<String> = downs.borrow().iter().map(|d| d.cause.to_string()).collect();
    assert_eq!(heard, [end.cause_text()], "exactly once, the real cause");
}

#[test]
fn links_a_watch_lost_in_flight_is_asked_again_when_the_link_is_back() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    let (y, yp) = device_on(&mut p, true, "y");
    // The watch request is lost with a connection that breaks.
    p.net.lose(ida.addr, idb.addr, 1);
    let downs = monitor_from_a(&mut p, yp);
    call!([y], fail());
    p.rt.run();
    // The link comes back: the watch is asked again, and answered with
    // y's recorded cause.
    heard_once_after_two_reconnects(
        &mut p,
        (ida, idb),
        &downs,
        End::Error,
        "b never heard of the watch",
    );
}

#[test]
fn links_a_down_lost_in_flight_arrives_after_the_link_is_back() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    let (y, yp) = device_on(&mut p, true, "y");
    let downs = monitor_from_a(&mut p, yp);
    // A watch asked again is the same watch.
    p.net.reconnect(ida.addr, idb.addr);
    p.rt.run();
    assert_eq!(status_of(&mut p, false).watched_here, 1, "held once");
    p.net.lose(idb.addr, ida.addr, 1);
    call!([y], panic());
    common::quiet_test_panics();
    p.rt.run();
    heard_once_after_two_reconnects(&mut p, (ida, idb), &downs, End::Panic, "the Down was lost");
}

#[test]
fn links_a_notify_link_lost_in_flight_is_made_again_when_the_link_is_back() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    let (x, _) = device_on(&mut p, false, "x");
    let (y, yp) = device_on(&mut p, true, "y");
    p.net.lose(ida.addr, idb.addr, 1);
    p.a.query(&mut p.rt.s, |n, cx| n.link(cx, &x, yp, LinkMode::Notify))
        .expect("alive")
        .expect("links");
    p.rt.run();
    p.net.reconnect(ida.addr, idb.addr);
    p.rt.run();
    call!([x], fail());
    p.rt.run();
    p.net.reconnect(ida.addr, idb.addr);
    p.rt.run();
    let cause = y.line().cause().map(|c| c.to_string());
    let xp = Pid::new(ida, x.id().get());
    assert_eq!(
        cause,
        Some(format!(
            "killed: linked remote device {xp} {}",
            End::Error.cause_text()
        )),
        "y watched x after all, and died of its fault once"
    );
}

/// Rule 128: a `Notify` link lost in flight is made again when the link
/// is back, even when another device of its node died meanwhile (a death
/// forgets that device's links only).
#[test]
fn links_a_notify_link_lost_in_flight_is_made_again_when_another_device_died_meanwhile() {
    let mut t = XY::new();
    t.lose(false, 1); // the Link
    let (x, yp) = (&t.x, t.yp);
    t.p.a
        .query(&mut t.p.rt.s, |n, cx| n.link(cx, x, yp, LinkMode::Notify))
        .expect("alive")
        .expect("links");
    t.p.rt.run();
    assert_eq!(status_of(&mut t.p, true).watched_here, 0, "lost");
    t.another_device_of_a_dies();
    t.reconnect();
    assert_eq!(status_of(&mut t.p, true).watched_here, 1, "made again");
    t.x.kill("a fault of x").expect("alive");
    t.p.rt.run();
    let cause = t.y.line().cause().map(|c| c.to_string());
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("a fault of x")),
        "y watched x after all: {cause:?}"
    );
}

/// Rule 115: only the node of the watched device ends a watch: a `Down`
/// from another node for the watch's tag is a bad frame, and the watcher
/// hears once, of the device's real cause.
#[test]
fn links_a_remote_death_reaches_its_watcher_once_from_the_node_of_the_device_only() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    // Watched on node a itself: node b does not hold it.
    let (d, dp) = device_on(&mut p, false, "watched");
    let downs = monitor_from_a(&mut p, dp);
    let bad = |p: &mut Pair| status_of(p, true).stats.bad_frames;
    let bad_before = bad(&mut p);
    for tag in 0..64 {
        let forged = encoded(Frame::Down {
            tag,
            cause: WireCause::Error("not b's to say".into()),
            from: idb,
            dst: ida,
        });
        call!([p.a], packet(forged));
        p.rt.run();
    }
    assert_eq!(bad(&mut p), bad_before + 1, "one tag is the live watch's");
    assert!(downs.borrow().is_empty(), "{:?}", downs.borrow());
    call!([d], fail());
    p.rt.run();
    let heard: Vec<String> = downs.borrow().iter().map(|d| d.cause.to_string()).collect();
    assert_eq!(heard, [End::Error.cause_text()], "once, the real cause");
}

/// A third node, 3, joined through `seed` (membership runs 5 s): it and
/// its id.
fn third_node(p: &mut Pair, seed: NodeId) -> (DeviceOwn<Node>, NodeId) {
    let c = start(&mut p.rt, &p.net, 3);
    p.rt.run();
    call!([c], join(seed));
    p.rt.advance(Duration::from_secs(5));
    let idc = c.query(&mut p.rt.s, |n, _| n.id()).expect("alive");
    (c, idc)
}

/// Rules 121 and 128 with a third node: what a node says again to one
/// node when the connection comes back (a lost `Link`, `Unlink` or
/// `Demonitor`) outlives the loss of another node meanwhile.
#[test]
fn links_what_is_said_again_to_a_node_outlives_the_loss_of_another_node() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    let (c, idc) = third_node(&mut p, ida);
    let on_c = |p: &mut Pair, name: &'static str| {
        let log = common::new_log();
        let d = common::dev(&mut p.rt, name, &log);
        p.rt.run();
        c.query(&mut p.rt.s, |n, _| {
            n.register_device(&d, Fwd::new(|_: String| ()))
        })
        .expect("alive");
        let pid = Pid::new(idc, d.id().get());
        (d, pid)
    };
    let (_d, dp) = on_c(&mut p, "watched");
    let (_y1, y1p) = on_c(&mut p, "y1");
    let (_y2, y2p) = on_c(&mut p, "y2");
    let (x1, _) = device_on(&mut p, false, "x1");
    let (x2, _) = device_on(&mut p, false, "x2");
    let (downs, fwd) = recorder::<RemoteDown>();
    let m =
        p.a.query(&mut p.rt.s, |n, cx| {
            n.link(cx, &x1, y1p, LinkMode::Notify).expect("links");
            n.monitor(cx, dp, fwd)
        })
        .expect("alive");
    p.rt.run();
    assert_eq!(status(&mut p.rt, &c).watched_here, 1, "c holds a's watch");
    // The Demonitor, the Unlink and the Link are lost in flight.
    p.net.lose(ida.addr, idc.addr, 3);
    p.a.query(&mut p.rt.s, |n, cx| {
        assert!(n.demonitor(m));
        n.unlink(&x1, y1p, LinkMode::Notify);
        n.link(cx, &x2, y2p, LinkMode::Notify).expect("links");
    })
    .expect("alive");
    p.rt.run();
    // Node b is lost meanwhile.
    p.net.cut(idb.addr);
    p.rt.advance(Duration::from_secs(60));
    let b_state = status_of(&mut p, true)
        .members
        .iter()
        .find(|m| m.id == idb)
        .map(|m| m.state);
    assert_eq!(
        b_state,
        Some(stakplane::cluster::MemberState::Down),
        "a declared b down"
    );
    p.net.reconnect(ida.addr, idc.addr);
    p.rt.run();
    assert_eq!(
        status(&mut p.rt, &c).watched_here,
        0,
        "Demonitor said again"
    );
    assert_eq!(status_of(&mut p, true).cancels_unanswered, 0, "answered");
    assert_eq!(
        status_of(&mut p, true).watched_here,
        1,
        "Unlink said again, Link asked again: y2 watches x2, y1 not x1"
    );
    assert!(downs.borrow().is_empty());
}

/// Rule 122a: the watches a lost node held here are cancelled when it is
/// declared down: they count toward the bound of its address no more
/// (`NodeStatus::watched_here` counts them), the watched device's death
/// included.
#[test]
fn links_the_watches_a_lost_node_held_here_go_with_it_and_free_its_bound() {
    let mut p = pair();
    let (_ida, idb) = ids(&mut p);
    let (d, dp) = device_on(&mut p, false, "watched");
    p.a.query(&mut p.rt.s, |n, _| n.set_watch_limit(1))
        .expect("alive");
    let (_downs, fwd) = recorder::<RemoteDown>();
    p.b.query(&mut p.rt.s, |n, cx| n.monitor(cx, dp, fwd))
        .expect("alive");
    p.rt.run();
    assert_eq!(status_of(&mut p, true).watched_here, 1, "a holds b's watch");
    p.net.cut(idb.addr);
    p.rt.advance(Duration::from_secs(60));
    assert_eq!(status_of(&mut p, true).watched_here, 0, "gone with b");
    drop(d);
    p.rt.run();
    assert_eq!(status_of(&mut p, true).watched_here, 0);
}

/// Rule 122a with a third node: a refused watch asked again while its
/// refusal waits for room is refused again, even when another node was
/// lost meanwhile (its loss forgets its own refusals only).
#[test]
fn links_a_refused_watch_asked_again_is_refused_again_after_another_node_was_lost() {
    let mut p = pair();
    let (ida, idb) = ids(&mut p);
    let (c, idc) = third_node(&mut p, ida);
    p.a.query(&mut p.rt.s, |n, _| n.set_watch_limit(1))
        .expect("alive");
    let (_d1, d1p) = device_on(&mut p, false, "d1");
    let (_d2, d2p) = device_on(&mut p, false, "d2");
    let watch_from_c = |p: &mut Pair, pid: Pid| {
        let (downs, fwd) = recorder::<RemoteDown>();
        let m = c
            .query(&mut p.rt.s, |n, cx| n.monitor(cx, pid, fwd))
            .expect("alive");
        p.rt.run();
        (downs, m)
    };
    let (_w1, m1) = watch_from_c(&mut p, d1p);
    p.net.hold(idc.addr, 16); // c is slow: the refusal waits
    let (w2, _m2) = watch_from_c(&mut p, d2p);
    assert!(w2.borrow().is_empty(), "the refusal waits");
    c.query(&mut p.rt.s, |n, _| n.demonitor(m1)).expect("alive");
    p.rt.run();
    // Node b is lost meanwhile.
    p.net.cut(idb.addr);
    p.rt.advance(Duration::from_secs(60));
    p.net.reconnect(ida.addr, idc.addr);
    p.rt.run();
    p.net.release(idc.addr);
    p.rt.run();
    let heard: Vec<String> = w2.borrow().iter().map(|d| d.cause.to_string()).collect();
    assert_eq!(heard.len(), 1, "refused once: {heard:?}");
    assert_eq!(
        status_of(&mut p, true).watched_here,
        0,
        "a holds no watch for c"
    );
}
