//! The reliable bounded mailbox (`stakplane::mailbox`): order, overflow,
//! crashes and restarts, waiting senders, close, stats, and a property
//! test over random sends, crashes (mid-message and between messages) and
//! restarts.

mod common;

use common::{quiet_test_panics, Rt, TEST_PANIC};
use proptest::prelude::*;
use stakplane::mailbox::{
    DeadLetter, Dropped, Mailbox, MailboxError, OnCrash, Overflow, SendError, BATCH,
};
use stakplane::prelude::*;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

// ---------------------------------------------------------------------------
// Fixtures

/// One hand-over as the consumer saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// Incarnation `inc` handled `msg` (the handler returned).
    Got(u32, u32),
    /// Incarnation `inc` panicked while handling `msg`.
    Crashed(u32, u32),
}

type Trace = Rc<RefCell<Vec<Ev>>>;

/// What the next consumers will do, shared across incarnations.
#[derive(Default)]
struct Script {
    /// Panic on the delivery after this many more (0: the next one).
    crash_in: Cell<Option<u32>>,
    /// `stop!` right after handling this many more messages (0: the next).
    stop_in: Cell<Option<u32>>,
}

/// Counts down an armed step: true when it fires (and disarms it).
fn fires(step: &Cell<Option<u32>>) -> bool {
    match step.get() {
        Some(0) => {
            step.set(None);
            true
        }
        Some(n) => {
            step.set(Some(n - 1));
            false
        }
        None => false,
    }
}

/// The consumer: records every hand-over, panics or stops on cue.
struct Worker {
    inc: u32,
    trace: Trace,
    script: Rc<Script>,
    sum: u64,
}

impl Worker {
    fn init(_: CX![], inc: u32, trace: Trace, script: Rc<Script>) -> Option<Self> {
        Some(Worker {
            inc,
            trace,
            script,
            sum: 0,
        })
    }

    fn handle(&mut self, cx: CX![], msg: u32) {
        if fires(&self.script.crash_in) {
            self.trace.borrow_mut().push(Ev::Crashed(self.inc, msg));
            panic!("{TEST_PANIC} while handling {msg}");
        }
        self.trace.borrow_mut().push(Ev::Got(self.inc, msg));
        self.sum += u64::from(msg);
        if fires(&self.script.stop_in) {
            stop!(cx);
        }
    }
}

/// A test bench: a runtime, a trace, a script, the dead letters.
struct Bench {
    rt: Rt,
    trace: Trace,
    script: Rc<Script>,
    dead: Rc<RefCell<Vec<DeadLetter<u32>>>>,
    incarnations: u32,
}

impl Bench {
    fn new(mb: &Mailbox<u32>) -> Self {
        let dead = Rc::new(RefCell::new(Vec::new()));
        let sink = dead.clone();
        mb.dead_letters(Fwd::new(move |dl| sink.borrow_mut().push(dl)));
        Bench {
            rt: Rt::new(),
            trace: Rc::new(RefCell::new(Vec::new())),
            script: Rc::new(Script::default()),
            dead,
            incarnations: 0,
        }
    }

    /// A new incarnation of the consumer, attached to `mb`.
    fn start(&mut self, mb: &Mailbox<u32>) -> DeviceOwn<Worker> {
        self.incarnations += 1;
        let w = device!(
            self.rt.s,
            Worker::init(self.incarnations, self.trace.clone(), self.script.clone())
        );
        mb.attach(&mut self.rt.s, &w, |w: &mut Worker, cx, m| w.handle(cx, m));
        w
    }

    fn run(&mut self) {
        self.rt.run();
    }

    fn trace(&self) -> Vec<Ev> {
        self.trace.borrow().clone()
    }

    fn got(&self) -> Vec<u32> {
        self.trace
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Ev::Got(_, m) => Some(*m),
                Ev::Crashed(..) => None,
            })
            .collect()
    }

    fn dead(&self) -> Vec<(u32, Dropped)> {
        self.dead.borrow().iter().map(|d| (d.msg, d.why)).collect()
    }
}

fn send_all(mb: &Mailbox<u32>, msgs: impl IntoIterator<Item = u32>) {
    for m in msgs {
        mb.try_send(m).expect("room in the mailbox");
    }
}

/// The stats identity every mailbox keeps.
fn assert_accounted(mb: &Mailbox<u32>) {
    let s = mb.stats();
    assert_eq!(
        s.accepted,
        s.handled + s.dropped_overflow + s.dropped_crashed + s.dropped_closed + s.depth as u64,
        "{s:?}"
    );
}

/// A waker that counts its wakes, to poll send futures by hand.
struct CountWaker(AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn count_waker() -> (Arc<CountWaker>, Waker) {
    let c = Arc::new(CountWaker(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

// ---------------------------------------------------------------------------
// Order and overflow

#[test]
fn messages_are_delivered_one_at_a_time_in_send_order() {
    let mb = Mailbox::new(100, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, 0..50);
    let w = b.start(&mb);
    send_all(&mb, 50..100);
    b.run();
    assert_eq!(b.got(), (0..100).collect::<Vec<_>>());
    assert_eq!(w.query(&mut b.rt.s, |w, _| w.sum), Some((0..100).sum()));
    assert!(mb.is_empty());
    assert_accounted(&mb);
}

#[test]
fn reject_returns_the_message_to_the_sender_when_full() {
    let mb = Mailbox::new(2, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, [1, 2]);
    match mb.try_send(3) {
        Err(SendError::Full(m)) => assert_eq!(m, 3),
        other => panic!("expected Full(3), got {other:?}"),
    }
    assert_eq!(mb.len(), 2);
    assert_eq!(mb.stats().rejected_full, 1);
    let _w = b.start(&mb);
    b.run();
    assert_eq!(b.got(), [1, 2]);
    assert!(
        b.dead().is_empty(),
        "a rejected message is not a dead letter"
    );
    assert_accounted(&mb);
}

#[test]
fn drop_oldest_accepts_the_new_message_and_dead_letters_the_oldest_queued() {
    let mb = Mailbox::new(3, Overflow::DropOldest);
    let mut b = Bench::new(&mb);
    send_all(&mb, [1, 2, 3, 4, 5]);
    assert_eq!(mb.len(), 3);
    assert_eq!(b.dead(), [(1, Dropped::Overflow), (2, Dropped::Overflow)]);
    let _w = b.start(&mb);
    b.run();
    assert_eq!(b.got(), [3, 4, 5]);
    let s = mb.stats();
    assert_eq!((s.accepted, s.dropped_overflow, s.dead_lettered), (5, 2, 2));
    assert_accounted(&mb);
}

#[test]
fn drop_newest_accepts_the_send_and_dead_letters_the_incoming_message() {
    let mb = Mailbox::new(3, Overflow::DropNewest);
    let mut b = Bench::new(&mb);
    send_all(&mb, [1, 2, 3, 4, 5]);
    assert_eq!(b.dead(), [(4, Dropped::Overflow), (5, Dropped::Overflow)]);
    let _w = b.start(&mb);
    b.run();
    assert_eq!(b.got(), [1, 2, 3]);
    assert_accounted(&mb);
}

#[test]
fn overflow_drops_without_a_dead_letter_fwd_are_still_counted() {
    let mb: Mailbox<u32> = Mailbox::new(1, Overflow::DropNewest);
    send_all(&mb, [1, 2, 3]);
    let s = mb.stats();
    assert_eq!((s.dropped_overflow, s.dead_lettered), (2, 0));
    assert_accounted(&mb);
}

/// A consumer that acts on its own mailbox from its handler: `m < 100`
/// sends `m + 100` to itself; 900 detaches, 901 closes, 902 sends and
/// reports whether it was accepted.
struct Own {
    mb: Mailbox<u32>,
    got: Vec<u32>,
    sent: Vec<Result<(), SendError<u32>>>,
}

impl Own {
    fn init(_: CX![], mb: Mailbox<u32>) -> Option<Self> {
        Some(Own {
            mb,
            got: Vec::new(),
            sent: Vec::new(),
        })
    }

    fn handle(&mut self, _: CX![], m: u32) {
        self.got.push(m);
        match m {
            900 => self.mb.detach(),
            901 => self.mb.close(),
            902 => {
                let r = self.mb.try_send(903);
                self.sent.push(r);
            }
            m if m < 100 => {
                let r = self.mb.try_send(m + 100);
                self.sent.push(r);
            }
            _ => {}
        }
    }
}

fn own_consumer(rt: &mut Rt, mb: &Mailbox<u32>) -> DeviceOwn<Own> {
    let own = device!(rt.s, Own::init(mb.clone()));
    mb.attach(&mut rt.s, &own, |o: &mut Own, cx, m| o.handle(cx, m));
    own
}

#[test]
fn the_message_in_hand_holds_its_slot_until_it_is_handled() {
    // Capacity 1, the handler sends to its own mailbox: the message it
    // holds still counts. Reject refuses; DropOldest has nothing queued to
    // evict, so it drops the incoming message; DropNewest drops it too.
    for (overflow, refused) in [
        (Overflow::Reject, true),
        (Overflow::DropOldest, false),
        (Overflow::DropNewest, false),
    ] {
        let mut rt = Rt::new();
        let mb = Mailbox::new(1, overflow);
        let dead = Rc::new(RefCell::new(Vec::new()));
        let sink = dead.clone();
        mb.dead_letters(Fwd::new(move |dl: DeadLetter<u32>| {
            sink.borrow_mut().push((dl.msg, dl.why))
        }));
        let own = own_consumer(&mut rt, &mb);
        mb.try_send(902).expect("empty mailbox");
        rt.run();
        let (got, sent) = own
            .query(&mut rt.s, |o, _| (o.got.clone(), o.sent.clone()))
            .expect("alive");
        assert_eq!(got, [902], "{overflow:?}");
        if refused {
            assert_eq!(sent, [Err(SendError::Full(903))]);
            assert!(dead.borrow().is_empty());
        } else {
            assert_eq!(sent, [Ok(())]);
            assert_eq!(*dead.borrow(), [(903, Dropped::Overflow)]);
        }
        assert!(mb.len() <= mb.capacity());
        assert_accounted(&mb);
    }
}

/// Rule 88 in the stats: `high_water` is the largest depth seen, up to the
/// capacity and never above it.
#[test]
fn the_high_water_mark_is_the_largest_depth_seen_and_never_above_the_capacity() {
    let mb = Mailbox::new(4, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, 1..=2);
    assert_eq!(mb.stats().high_water, 2);
    let _w = b.start(&mb);
    b.run();
    assert_eq!(mb.stats().high_water, 2, "a drained mailbox keeps its mark");
    send_all(&mb, 3..=6);
    assert!(mb.try_send(7).is_err());
    let s = mb.stats();
    assert_eq!((s.depth, s.high_water), (4, 4), "{s:?}");
}

#[test]
fn capacity_zero_is_refused_by_try_new_and_raised_to_one_by_new() {
    let r = Mailbox::<u32>::try_new(0, Overflow::Reject, OnCrash::discard());
    assert_eq!(r.err(), Some(MailboxError::ZeroCapacity));
    assert_eq!(
        MailboxError::ZeroCapacity.to_string(),
        "mailbox capacity must be at least 1"
    );
    assert_eq!(Mailbox::<u32>::new(0, Overflow::Reject).capacity(), 1);
    assert_eq!(
        Mailbox::<u32>::redelivering(0, Overflow::Reject).capacity(),
        1
    );
    assert_eq!(
        Mailbox::<u32>::try_new(5, Overflow::Reject, OnCrash::redeliver_once())
            .map(|m| m.capacity()),
        Ok(5)
    );
}

#[test]
fn send_errors_give_the_message_back_and_say_why() {
    let full: SendError<String> = SendError::Full("a".into());
    let closed: SendError<String> = SendError::Closed("b".into());
    assert!(full.is_full() && !full.is_closed());
    assert!(closed.is_closed() && !closed.is_full());
    assert_eq!(full.to_string(), "mailbox full");
    assert_eq!(closed.to_string(), "mailbox closed");
    assert_eq!(format!("{full:?}"), "Full(..)");
    let e: Box<dyn std::error::Error> = Box::new(SendError::Full(NotDebug));
    assert_eq!(e.to_string(), "mailbox full");
    assert_eq!(full.into_inner(), "a");
    assert_eq!(closed.into_inner(), "b");
}

/// A message type without `Debug`: errors still implement `Error`.
struct NotDebug;

// ---------------------------------------------------------------------------
// Consumers: readiness, death, restarts

#[test]
fn a_consumer_still_in_prep_is_waited_for() {
    let mb = Mailbox::new(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    let w = device_new!(b.rt.s, Worker);
    mb.attach(&mut b.rt.s, &w, |w: &mut Worker, cx, m| w.handle(cx, m));
    send_all(&mb, [1, 2, 3]);
    b.run();
    assert!(b.got().is_empty());
    assert_eq!(mb.len(), 3);
    call!([w], Worker::init(1, b.trace.clone(), b.script.clone()));
    b.run();
    assert_eq!(b.got(), [1, 2, 3]);
}

#[test]
fn messages_queued_while_the_consumer_is_dead_go_to_the_next_incarnation() {
    let mb = Mailbox::new(100, Overflow::Reject);
    let mut b = Bench::new(&mb);
    let w1 = b.start(&mb);
    send_all(&mb, 0..5);
    b.run();
    w1.kill("test").expect("alive");
    b.run();
    assert!(!w1.is_alive());
    send_all(&mb, 5..10); // the mailbox notices the death, keeps them
    b.run();
    assert!(!mb.is_attached());
    assert_eq!(mb.len(), 5);
    let _w2 = b.start(&mb);
    send_all(&mb, 10..12);
    b.run();
    let t = b.trace();
    assert_eq!(
        t[..5],
        (0..5).map(|m| Ev::Got(1, m)).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        t[5..],
        (5..12).map(|m| Ev::Got(2, m)).collect::<Vec<_>>()[..]
    );
    assert!(b.dead().is_empty());
    assert_accounted(&mb);
}

#[test]
fn a_kill_queued_before_delivery_loses_nothing() {
    // The kill reaches the consumer between two deliveries (before the
    // first here): the message stays at the front for the next one.
    let mb = Mailbox::new(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, [1, 2]);
    let w1 = b.start(&mb);
    w1.kill("test").expect("alive");
    b.run();
    assert!(b.got().is_empty());
    assert_eq!(mb.len(), 2);
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(b.trace(), [Ev::Got(2, 1), Ev::Got(2, 2)]);
}

#[test]
fn a_consumer_that_stops_itself_keeps_the_rest_for_the_next_incarnation() {
    let mb = Mailbox::new(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    b.script.stop_in.set(Some(1)); // stops after handling its 2nd message
    let w1 = b.start(&mb);
    send_all(&mb, 1..=5);
    b.run();
    assert!(matches!(w1.cause(), Some(Cause::Stopped)));
    assert!(!mb.is_attached());
    assert_eq!(mb.len(), 3);
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(
        b.trace(),
        [
            Ev::Got(1, 1),
            Ev::Got(1, 2),
            Ev::Got(2, 3),
            Ev::Got(2, 4),
            Ev::Got(2, 5)
        ]
    );
}

#[test]
fn attach_replaces_the_previous_consumer() {
    let mb = Mailbox::new(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    let w1 = b.start(&mb);
    send_all(&mb, [1]);
    b.run();
    let _w2 = b.start(&mb);
    send_all(&mb, [2, 3]);
    b.run();
    assert!(w1.is_alive());
    assert_eq!(b.trace(), [Ev::Got(1, 1), Ev::Got(2, 2), Ev::Got(2, 3)]);
}

#[test]
fn detach_keeps_queued_messages_for_the_next_attach() {
    let mb = Mailbox::new(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    let w1 = b.start(&mb);
    mb.detach();
    assert!(!mb.is_attached());
    send_all(&mb, [1, 2]);
    b.run();
    assert!(b.got().is_empty());
    assert!(w1.is_alive());
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(b.trace(), [Ev::Got(2, 1), Ev::Got(2, 2)]);
}

// ---------------------------------------------------------------------------
// Crash mid-message

#[test]
fn crash_mid_message_fails_the_consumer_with_panic_and_keeps_the_queue() {
    let mb = Mailbox::new(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    b.script.crash_in.set(Some(1)); // crash on the 2nd message
    let w1 = b.start(&mb);
    send_all(&mb, 1..=4);
    b.run();
    let cause = w1.cause().expect("dead");
    assert!(matches!(cause, Cause::Panic(_)), "{cause}");
    assert!(cause.to_string().contains(TEST_PANIC));
    assert!(!mb.is_attached());
    assert_eq!(mb.len(), 2);
    // With `new` (discard), the message in hand is gone with the handler:
    // counted, but there is no copy for a dead letter.
    let s = mb.stats();
    assert_eq!((s.crashed, s.dropped_crashed, s.dead_lettered), (1, 1, 0));
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(
        b.trace(),
        [
            Ev::Got(1, 1),
            Ev::Crashed(1, 2),
            Ev::Got(2, 3),
            Ev::Got(2, 4)
        ]
    );
    assert_accounted(&mb);
}

#[test]
fn crash_mid_message_with_the_dead_letter_policy_dead_letters_it_once() {
    let mb = Mailbox::dead_lettering(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    b.script.crash_in.set(Some(1));
    let _w1 = b.start(&mb);
    send_all(&mb, 1..=4);
    b.run();
    assert_eq!(b.dead(), [(2, Dropped::Crashed)]);
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(
        b.trace(),
        [
            Ev::Got(1, 1),
            Ev::Crashed(1, 2),
            Ev::Got(2, 3),
            Ev::Got(2, 4)
        ]
    );
    assert_eq!(b.dead(), [(2, Dropped::Crashed)]);
    let s = mb.stats();
    assert_eq!((s.crashed, s.dropped_crashed, s.redelivered), (1, 1, 0));
    assert_accounted(&mb);
}

#[test]
fn crash_with_redeliver_hands_the_message_to_the_next_incarnation_once_then_dead_letters_it() {
    let mb = Mailbox::redelivering(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    b.script.crash_in.set(Some(1)); // incarnation 1 crashes on 2
    let _w1 = b.start(&mb);
    send_all(&mb, 1..=4);
    b.run();
    assert!(b.dead().is_empty());
    assert_eq!(mb.len(), 3, "2 is back at the front");
    b.script.crash_in.set(Some(0)); // incarnation 2 crashes on 2 again
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(b.dead(), [(2, Dropped::Crashed)]);
    let _w3 = b.start(&mb);
    b.run();
    assert_eq!(
        b.trace(),
        [
            Ev::Got(1, 1),
            Ev::Crashed(1, 2),
            Ev::Crashed(2, 2),
            Ev::Got(3, 3),
            Ev::Got(3, 4)
        ]
    );
    let s = mb.stats();
    assert_eq!(
        (s.crashed, s.redelivered, s.dropped_crashed, s.handled),
        (2, 1, 1, 3)
    );
    assert_accounted(&mb);
}

/// Rule 90's policies as a mailbox reports them: only `redeliver_once`
/// redelivers.
#[test]
fn the_crash_policy_says_whether_it_redelivers_the_message_in_hand() {
    assert!(OnCrash::<u32>::redeliver_once().redelivers());
    assert!(!OnCrash::<u32>::dead_letter().redelivers());
    assert!(!OnCrash::<u32>::discard().redelivers());
    assert!(Mailbox::<u32>::redelivering(1, Overflow::Reject)
        .on_crash()
        .redelivers());
    assert!(!Mailbox::<u32>::dead_lettering(1, Overflow::Reject)
        .on_crash()
        .redelivers());
    assert!(!Mailbox::<u32>::new(1, Overflow::Reject)
        .on_crash()
        .redelivers());
}

/// The module doc's "Panics": a panic of unguarded user code that unwinds
/// out of a delivery run (here a raw monitor `Fwd` run by the consumer's
/// death, right after its handler returned) leaves the mailbox's counters
/// and flags consistent: the message in hand no longer holds a slot and
/// counts as crashed on, the consumer is detached, no run is left marked
/// as scheduled, so that the rest goes to a consumer attached on another
/// runtime (stakker refuses to run again after the panic).
#[test]
fn a_panic_unwinding_out_of_a_delivery_run_leaves_the_mailbox_consistent() {
    let mb = Mailbox::new(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    b.script.stop_in.set(Some(0)); // stops right after its 1st message
    let w1 = b.start(&mb);
    w1.monitor_fwd(Fwd::new(|_: Down| panic!("{TEST_PANIC} in a raw monitor")))
        .expect("alive");
    send_all(&mb, 1..=3);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.run()));
    assert!(
        unwound.is_err(),
        "the raw monitor's panic unwinds out of the run"
    );
    assert!(!mb.is_attached(), "the consumer is detached");
    assert_eq!(mb.len(), 2, "the message in hand no longer holds a slot");
    let s = mb.stats();
    assert_eq!((s.dropped_crashed, s.depth), (1, 2), "{s:?}");
    assert_accounted(&mb);
    b.rt = Rt::new();
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(b.trace(), [Ev::Got(1, 1), Ev::Got(2, 2), Ev::Got(2, 3)]);
    assert_accounted(&mb);
}

#[test]
fn a_redelivered_message_handled_by_the_next_incarnation_is_not_dead_lettered() {
    let mb = Mailbox::redelivering(10, Overflow::Reject);
    let mut b = Bench::new(&mb);
    b.script.crash_in.set(Some(0));
    let _w1 = b.start(&mb);
    send_all(&mb, [7, 8]);
    b.run();
    let _w2 = b.start(&mb);
    b.run();
    assert_eq!(b.trace(), [Ev::Crashed(1, 7), Ev::Got(2, 7), Ev::Got(2, 8)]);
    assert!(b.dead().is_empty());
}

/// A message whose `Clone` panics for one value.
struct Bomb(u32);

impl Clone for Bomb {
    fn clone(&self) -> Self {
        if self.0 == 2 {
            panic!("{TEST_PANIC} in clone");
        }
        Bomb(self.0)
    }
}

struct BombEater {
    got: Rc<RefCell<Vec<u32>>>,
}

impl BombEater {
    fn init(_: CX![], got: Rc<RefCell<Vec<u32>>>) -> Option<Self> {
        Some(BombEater { got })
    }
}

#[test]
fn a_panicking_clone_for_the_crash_copy_counts_as_a_crash_on_that_message() {
    let mut rt = Rt::new();
    let mb = Mailbox::redelivering(10, Overflow::Reject);
    let got = Rc::new(RefCell::new(Vec::new()));
    let attach = |rt: &mut Rt| {
        let e = device!(rt.s, BombEater::init(got.clone()));
        mb.attach(&mut rt.s, &e, |e: &mut BombEater, _, b: Bomb| {
            e.got.borrow_mut().push(b.0)
        });
        e
    };
    for m in 1..=3 {
        assert!(mb.try_send(Bomb(m)).is_ok());
    }
    let e1 = attach(&mut rt);
    rt.run();
    assert!(matches!(e1.cause(), Some(Cause::Panic(_))));
    let s = mb.stats();
    assert_eq!((s.crashed, s.dropped_crashed, s.redelivered), (1, 1, 0));
    let _e2 = attach(&mut rt);
    rt.run();
    assert_eq!(*got.borrow(), [1, 3]);
    let s = mb.stats();
    assert_eq!(
        s.accepted,
        s.handled + s.dropped_overflow + s.dropped_crashed + s.dropped_closed + s.depth as u64
    );
}

/// The supervisor's use: a mailbox of boxed calls (`M` is not `Clone`).
struct Counter {
    n: u32,
}

impl Counter {
    fn init(_: CX![]) -> Option<Self> {
        Some(Counter { n: 0 })
    }
}

type Call = Box<dyn FnOnce(&mut Counter, &mut Cx<'_, Counter>)>;

#[test]
fn a_mailbox_of_boxed_calls_runs_them_on_the_attached_actor_in_order() {
    let mut rt = Rt::new();
    let mb: Mailbox<Call> = Mailbox::new(8, Overflow::Reject);
    let log = Rc::new(RefCell::new(Vec::new()));
    for k in 1..=3 {
        let log = log.clone();
        let call: Call = Box::new(move |c: &mut Counter, _: &mut Cx<'_, Counter>| {
            c.n += k;
            log.borrow_mut().push(c.n);
        });
        assert!(mb.try_send(call).is_ok());
    }
    let c = device!(rt.s, Counter::init());
    mb.attach(&mut rt.s, &c, |this: &mut Counter, cx, call: Call| {
        call(this, cx)
    });
    rt.run();
    assert_eq!(*log.borrow(), [1, 3, 6]);
    assert_eq!(c.query(&mut rt.s, |c, _| c.n), Some(6));
}

// ---------------------------------------------------------------------------
// Waiting senders

#[test]
fn send_await_waits_for_space_and_completes_in_order() {
    let mb = Mailbox::new(2, Overflow::Reject);
    let mut b = Bench::new(&mb);
    let progress = Rc::new(Cell::new(0u32));
    let (mb2, p2) = (mb.clone(), progress.clone());
    let task = stakplane::task::spawn(&mut b.rt.s, async move {
        for m in 0..6 {
            mb2.send(m).await?;
            p2.set(m + 1);
        }
        Ok::<(), SendError<u32>>(())
    });
    b.run();
    assert_eq!(progress.get(), 2, "two queued, the third waits");
    assert_eq!(mb.stats().waiting_senders, 1);
    assert_eq!(mb.stats().rejected_full, 0, "waiting is not rejection");
    let _w = b.start(&mb);
    b.run();
    assert_eq!(progress.get(), 6);
    assert!(task.is_finished());
    assert_eq!(b.got(), (0..6).collect::<Vec<_>>());
    assert_eq!(mb.stats().waiting_senders, 0);
    assert_accounted(&mb);
}

#[test]
fn waiting_senders_get_freed_slots_in_the_order_they_started_waiting() {
    let mb = Mailbox::new(1, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, [0]);
    let mut tasks = Vec::new();
    for m in 1..=4 {
        let mb2 = mb.clone();
        tasks.push(stakplane::task::spawn(&mut b.rt.s, async move {
            mb2.send(m).await
        }));
    }
    b.run();
    assert_eq!(mb.stats().waiting_senders, 4);
    let _w = b.start(&mb);
    b.run();
    assert_eq!(b.got(), [0, 1, 2, 3, 4]);
    assert!(tasks.iter().all(|t| t.is_finished()));
}

/// Rule 91: a waiting sender polled again before its turn (a spurious
/// poll: its task woken for something else) keeps its place in line.
#[test]
fn waiting_senders_keep_their_place_in_line_when_polled_before_their_turn() {
    let mb = Mailbox::new(1, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, [0]);
    let (_, waker) = count_waker();
    let mut f1 = mb.send(1);
    let mut f2 = mb.send(2);
    let mut f3 = mb.send(3);
    for f in [&mut f1, &mut f2, &mut f3] {
        assert!(poll_once(f, &waker).is_pending());
    }
    // 2 is polled again before its turn: it still waits, second in line.
    assert!(poll_once(&mut f2, &waker).is_pending());
    assert_eq!(mb.stats().waiting_senders, 3);
    let _w = b.start(&mb);
    for f in [&mut f1, &mut f2, &mut f3] {
        b.run(); // the message held is handled: its slot goes to the next in line
        assert!(matches!(poll_once(f, &waker), Poll::Ready(Ok(()))));
    }
    b.run();
    assert_eq!(b.got(), [0, 1, 2, 3]);
}

/// Rule 91, with the `Future` contract: a waiting sender is woken through
/// the waker of its latest poll (its task may have moved), never an older
/// one.
#[test]
fn a_waiting_sender_is_woken_through_the_waker_of_its_latest_poll() {
    let mb = Mailbox::new(1, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, [0]);
    let (old_wakes, old) = count_waker();
    let (new_wakes, new) = count_waker();
    let mut fut = mb.send(1);
    assert!(poll_once(&mut fut, &old).is_pending());
    assert!(poll_once(&mut fut, &new).is_pending());
    let _w = b.start(&mb);
    b.run(); // 0 handled: its slot is granted to the waiting sender
    assert_eq!(
        (
            old_wakes.0.load(Ordering::SeqCst),
            new_wakes.0.load(Ordering::SeqCst)
        ),
        (0, 1)
    );
    assert!(matches!(poll_once(&mut fut, &new), Poll::Ready(Ok(()))));
}

#[test]
fn try_send_never_takes_a_slot_promised_to_a_waiting_sender() {
    let mb = Mailbox::new(1, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, [0]);
    let (wakes, waker) = count_waker();
    let mut fut = mb.send(1);
    assert!(poll_once(&mut fut, &waker).is_pending());
    let _w = b.start(&mb);
    b.run(); // 0 handled: its slot is granted to the waiting sender
    assert_eq!(b.got(), [0]);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert!(matches!(mb.try_send(2), Err(SendError::Full(2))));
    assert!(matches!(poll_once(&mut fut, &waker), Poll::Ready(Ok(()))));
    drop(fut);
    b.run();
    assert_eq!(b.got(), [0, 1]);
}

#[test]
fn a_dropped_send_future_leaves_nothing_behind_and_passes_its_slot_on() {
    let mb = Mailbox::new(1, Overflow::Reject);
    let mut b = Bench::new(&mb);
    send_all(&mb, [0]);
    let (w1, waker1) = count_waker();
    let (w2, waker2) = count_waker();
    let mut f1 = mb.send(1);
    let mut f2 = mb.send(2);
    let mut f3 = mb.send(3);
    assert!(poll_once(&mut f1, &waker1).is_pending());
    assert!(poll_once(&mut f2, &waker2).is_pending());
    assert!(poll_once(&mut f3, &waker2).is_pending());
    drop(f3); // never granted: simply leaves the line
    assert_eq!(mb.stats().waiting_senders, 2);
    let _w = b.start(&mb);
    b.run(); // 0 handled: the slot goes to f1
    assert_eq!(w1.0.load(Ordering::SeqCst), 1);
    assert_eq!(w2.0.load(Ordering::SeqCst), 0);
    drop(f1); // granted but dropped: the slot passes to f2
    assert_eq!(w2.0.load(Ordering::SeqCst), 1);
    assert!(matches!(poll_once(&mut f2, &waker2), Poll::Ready(Ok(()))));
    drop(f2);
    b.run();
    assert_eq!(b.got(), [0, 2]);
    let s = mb.stats();
    assert_eq!((s.waiting_senders, s.depth, s.accepted), (0, 0, 2));
    // The slot is really free again.
    assert!(mb.try_send(4).is_ok());
}

#[test]
fn send_await_under_a_drop_policy_never_waits() {
    let mb = Mailbox::new(1, Overflow::DropNewest);
    let b = Bench::new(&mb);
    let (_, waker) = count_waker();
    send_all(&mb, [0]);
    let mut f = mb.send(1);
    assert!(matches!(poll_once(&mut f, &waker), Poll::Ready(Ok(()))));
    assert_eq!(b.dead(), [(1, Dropped::Overflow)]);
}

// ---------------------------------------------------------------------------
// Close

#[test]
fn close_refuses_sends_dead_letters_queued_messages_and_fails_waiting_senders() {
    let mb = Mailbox::new(3, Overflow::Reject);
    let mut b = Bench::new(&mb);
    let w = b.start(&mb);
    b.run();
    mb.detach();
    send_all(&mb, [1, 2, 3]);
    let (wakes, waker) = count_waker();
    let mut f = mb.send(4);
    assert!(poll_once(&mut f, &waker).is_pending());
    mb.close();
    assert!(mb.is_closed());
    assert_eq!(
        b.dead(),
        [
            (1, Dropped::Closed),
            (2, Dropped::Closed),
            (3, Dropped::Closed)
        ]
    );
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    match poll_once(&mut f, &waker) {
        Poll::Ready(Err(SendError::Closed(m))) => assert_eq!(m, 4),
        other => panic!("expected Closed(4), got {other:?}"),
    }
    assert!(matches!(mb.try_send(5), Err(SendError::Closed(5))));
    mb.attach(&mut b.rt.s, &w, |w: &mut Worker, cx, m| w.handle(cx, m));
    assert!(
        !mb.is_attached(),
        "attaching to a closed mailbox does nothing"
    );
    b.run();
    assert!(b.got().is_empty());
    mb.close(); // twice: nothing more
    let s = mb.stats();
    assert_eq!((s.dropped_closed, s.rejected_closed, s.depth), (3, 2, 0));
    assert!(s.closed);
    assert_accounted(&mb);
}

// ---------------------------------------------------------------------------
// Re-entrancy and fairness

#[test]
fn a_handler_may_send_to_its_own_mailbox_detach_it_and_close_it() {
    let mut rt = Rt::new();
    let mb = Mailbox::new(10, Overflow::Reject);
    let own = own_consumer(&mut rt, &mb);
    send_all(&mb, [1, 2, 900, 3]);
    rt.run();
    // 1 and 2 sent 101 and 102 behind 900 and 3; 900 detached.
    assert_eq!(
        own.query(&mut rt.s, |o, _| o.got.clone()),
        Some(vec![1, 2, 900])
    );
    assert_eq!(mb.len(), 3);
    let own2 = own_consumer(&mut rt, &mb);
    mb.try_send(901).expect("room");
    mb.try_send(4).expect("room");
    rt.run();
    assert_eq!(
        own2.query(&mut rt.s, |o, _| o.got.clone()),
        Some(vec![3, 101, 102, 901])
    );
    assert!(mb.is_closed());
    // 4, and 103 (sent by the handler of 3), were queued at the close.
    assert_eq!(mb.stats().dropped_closed, 2);
    assert_accounted(&mb);
}

/// Records how many messages the mailbox had handled when it ran.
struct Probe {
    seen: Vec<u64>,
}

impl Probe {
    fn init(_: CX![]) -> Option<Self> {
        Some(Probe { seen: Vec::new() })
    }

    fn probe(&mut self, _: CX![], mb: Mailbox<u32>) {
        self.seen.push(mb.stats().handled);
    }
}

#[test]
fn delivery_yields_to_the_rest_of_the_queue_after_a_batch() {
    let mb = Mailbox::new(1000, Overflow::Reject);
    let mut b = Bench::new(&mb);
    let _w = b.start(&mb);
    let probe = device!(b.rt.s, Probe::init());
    b.run();
    send_all(&mb, 0..(3 * BATCH as u32));
    call!([probe], probe(mb.clone()));
    b.run();
    assert_eq!(
        probe.query(&mut b.rt.s, |p, _| p.seen.clone()),
        Some(vec![BATCH as u64])
    );
    assert_eq!(b.got().len(), 3 * BATCH);
}

#[test]
fn stats_count_every_message_exactly_once() {
    let mb = Mailbox::dead_lettering(3, Overflow::DropOldest);
    let mut b = Bench::new(&mb);
    send_all(&mb, 1..=5); // 1, 2 evicted
    b.script.crash_in.set(Some(1));
    let _w1 = b.start(&mb);
    b.run(); // 3 handled, 4 crashed
    assert_accounted(&mb);
    let _w2 = b.start(&mb);
    b.run(); // 5 handled
    send_all(&mb, [6]);
    mb.close(); // 6 was not delivered yet
    let s = mb.stats();
    assert_eq!(s.accepted, 6);
    assert_eq!(s.handled, 2);
    assert_eq!(s.crashed, 1);
    assert_eq!(s.dropped_overflow, 2);
    assert_eq!(s.dropped_crashed, 1);
    assert_eq!(s.dropped_closed, 1);
    assert_eq!(s.dead_lettered, 4);
    assert_eq!(s.high_water, 3);
    assert_eq!(s.capacity, 3);
    assert_accounted(&mb);
}

// ---------------------------------------------------------------------------
// The property: random sends, crashes (mid-message and between messages),
// restarts.

#[derive(Clone, Debug)]
enum Op {
    /// try_send this many new messages.
    Send(u8),
    /// Spawn a task that sends this many new messages with `send().await`.
    SendAsync(u8),
    /// Run the stakker queue until idle.
    Run,
    /// The consumer panics on its delivery after this many (mid-message;
    /// possibly mid-batch).
    CrashAfter(u8),
    /// The consumer stops itself after handling this many more.
    StopAfter(u8),
    /// Kill the current consumer (queued: lands between deliveries).
    Kill,
    /// Drop the current consumer and attach a new incarnation.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Send),
        1 => (1u8..4).prop_map(Op::SendAsync),
        3 => Just(Op::Run),
        2 => (0u8..4).prop_map(Op::CrashAfter),
        1 => (0u8..4).prop_map(Op::StopAfter),
        1 => Just(Op::Kill),
        2 => Just(Op::Restart),
    ]
}

fn overflow() -> impl Strategy<Value = Overflow> {
    prop_oneof![
        2 => Just(Overflow::Reject),
        1 => Just(Overflow::DropOldest),
        1 => Just(Overflow::DropNewest),
    ]
}

/// What a scenario left: accepted ids (in acceptance order), the trace,
/// the dead letters.
type Played = (Vec<u32>, Vec<Ev>, Vec<(u32, Dropped)>);

/// Runs a scenario; returns (accepted ids in the order they were
/// accepted, trace, dead letters) after a final drain by a fresh,
/// well-behaved incarnation.
fn play(mb: &Mailbox<u32>, ops: &[Op]) -> Result<Played, TestCaseError> {
    let mut b = Bench::new(mb);
    let mut next = 0u32;
    let mut rejected = 0u64;
    // Shared with the async senders: each records its message as soon as
    // its send completes, in the poll that queued it.
    let accepted = Rc::new(RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut current = Some(b.start(mb));
    for op in ops {
        match op {
            Op::SendAsync(n) => {
                let ids: Vec<u32> = (next..next + u32::from(*n)).collect();
                next += u32::from(*n);
                let (mb2, log) = (mb.clone(), accepted.clone());
                tasks.push(stakplane::task::spawn(&mut b.rt.s, async move {
                    for m in ids {
                        mb2.send(m).await?;
                        log.borrow_mut().push(m);
                    }
                    Ok::<(), SendError<u32>>(())
                }));
            }
            Op::Send(n) => {
                for _ in 0..*n {
                    let m = next;
                    next += 1;
                    match mb.try_send(m) {
                        Ok(()) => accepted.borrow_mut().push(m),
                        Err(SendError::Full(back)) => {
                            prop_assert_eq!(mb.overflow(), Overflow::Reject);
                            prop_assert_eq!(back, m, "the rejected message comes back");
                            rejected += 1;
                        }
                        Err(SendError::Closed(_)) => {
                            prop_assert!(false, "never closed here")
                        }
                    }
                    prop_assert!(mb.len() <= mb.capacity());
                }
            }
            Op::Run => b.run(),
            Op::CrashAfter(k) => b.script.crash_in.set(Some(u32::from(*k))),
            Op::StopAfter(k) => b.script.stop_in.set(Some(u32::from(*k))),
            Op::Kill => {
                if let Some(w) = &current {
                    let _ = w.kill("test");
                }
            }
            Op::Restart => {
                drop(current.take());
                current = Some(b.start(mb));
            }
        }
        let s = mb.stats();
        prop_assert_eq!(
            s.accepted,
            s.handled + s.dropped_overflow + s.dropped_crashed + s.dropped_closed + s.depth as u64
        );
    }
    b.script.crash_in.set(None);
    b.script.stop_in.set(None);
    drop(current);
    let _last = b.start(mb);
    b.run();
    prop_assert!(mb.is_empty(), "the last incarnation drains the queue");
    for t in &tasks {
        prop_assert!(t.is_finished(), "every waiting sender got through");
    }
    let accepted = accepted.borrow().clone();
    let s = mb.stats();
    prop_assert_eq!(s.accepted, accepted.len() as u64);
    prop_assert_eq!(s.rejected_full, rejected);
    prop_assert_eq!(u64::from(next), accepted.len() as u64 + rejected);
    prop_assert_eq!(s.waiting_senders, 0);
    let trace = b.trace();
    let got = trace.iter().filter(|e| matches!(e, Ev::Got(..))).count();
    prop_assert_eq!(s.handled, got as u64);
    prop_assert_eq!(s.crashed, (trace.len() - got) as u64);
    let dead = b.dead();
    prop_assert_eq!(s.dead_lettered, dead.len() as u64);
    Ok((accepted, trace, dead))
}

/// A message's position in the order of acceptance (`usize::MAX` if it
/// was never accepted, which fails the order checks' callers later).
fn ranks(accepted: &[u32]) -> impl Fn(u32) -> usize + '_ {
    move |m| accepted.iter().position(|&a| a == m).unwrap_or(usize::MAX)
}

fn msg_of(e: &Ev) -> u32 {
    match e {
        Ev::Got(_, m) | Ev::Crashed(_, m) => *m,
    }
}

/// Redeliver policy: each accepted message is handed over at least once
/// (unless the overflow policy dropped it) and at most twice, in send
/// order; a second hand-over only follows a crash, right after it; a
/// message crashing twice is dead-lettered once.
fn check_redeliver(cap: usize, overflow: Overflow, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mb = Mailbox::redelivering(cap, overflow);
    let (accepted, trace, dead) = play(&mb, &ops)?;
    let rank = ranks(&accepted);
    for pair in trace.windows(2) {
        let (a, b) = (rank(msg_of(&pair[0])), rank(msg_of(&pair[1])));
        prop_assert!(a <= b, "send order: {:?} accepted {:?}", trace, accepted);
        if a == b {
            prop_assert!(
                matches!(pair[0], Ev::Crashed(..)),
                "redelivery only after a crash"
            );
        }
    }
    for &m in &accepted {
        let hand: Vec<&Ev> = trace.iter().filter(|e| msg_of(e) == m).collect();
        let dl: Vec<Dropped> = dead.iter().filter(|d| d.0 == m).map(|d| d.1).collect();
        let ok = match (hand.as_slice(), dl.as_slice()) {
            ([Ev::Got(..)], []) => true,
            ([Ev::Crashed(..), Ev::Got(..)], []) => true,
            ([Ev::Crashed(..), Ev::Crashed(..)], [Dropped::Crashed]) => true,
            // Dropped by the overflow policy, before any hand-over or
            // while waiting for its redelivery.
            ([], [Dropped::Overflow]) | ([Ev::Crashed(..)], [Dropped::Overflow]) => {
                overflow != Overflow::Reject
            }
            _ => false,
        };
        prop_assert!(
            ok,
            "message {}: hand-overs {:?}, dead letters {:?}",
            m,
            hand,
            dl
        );
    }
    prop_assert!(dead.iter().all(|d| accepted.contains(&d.0)));
    Ok(())
}

/// Dead-letter policy: each accepted message is handled or dead-lettered,
/// exactly once; hand-overs are in send order, never repeated.
fn check_dead_letter(cap: usize, overflow: Overflow, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mb = Mailbox::dead_lettering(cap, overflow);
    let (accepted, trace, dead) = play(&mb, &ops)?;
    let rank = ranks(&accepted);
    for pair in trace.windows(2) {
        let (a, b) = (rank(msg_of(&pair[0])), rank(msg_of(&pair[1])));
        prop_assert!(a < b, "send order: {:?} accepted {:?}", trace, accepted);
    }
    for &m in &accepted {
        let hand: Vec<&Ev> = trace.iter().filter(|e| msg_of(e) == m).collect();
        let dl: Vec<Dropped> = dead.iter().filter(|d| d.0 == m).map(|d| d.1).collect();
        let ok = match (hand.as_slice(), dl.as_slice()) {
            ([Ev::Got(..)], []) => true,
            ([Ev::Crashed(..)], [Dropped::Crashed]) => true,
            ([], [Dropped::Overflow]) => overflow != Overflow::Reject,
            _ => false,
        };
        prop_assert!(
            ok,
            "message {}: hand-overs {:?}, dead letters {:?}",
            m,
            hand,
            dl
        );
    }
    prop_assert!(dead.iter().all(|d| accepted.contains(&d.0)));
    Ok(())
}

proptest! {
    #![proptest_config(stakplane_testkit::cases(2000))]

    #[test]
    fn with_redeliver_every_accepted_message_is_handled_once_or_twice_in_send_order(
        cap in 1usize..6,
        overflow in overflow(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        quiet_test_panics();
        check_redeliver(cap, overflow, ops)?;
    }

    #[test]
    fn with_dead_letter_every_accepted_message_is_handled_or_dead_lettered_exactly_once(
        cap in 1usize..6,
        overflow in overflow(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        quiet_test_panics();
        check_dead_letter(cap, overflow, ops)?;
    }
}

#[test]
fn take_queued_moves_unhandled_messages_out_and_frees_slots() {
    let mb: Mailbox<u32> = Mailbox::new(3, Overflow::Reject);
    for m in 0..3 {
        mb.try_send(m).unwrap();
    }
    assert!(mb.try_send(3).unwrap_err().is_full());
    assert_eq!(mb.take_queued(), [0, 1, 2]);
    assert!(mb.is_empty());
    mb.try_send(3).unwrap();
    let s = mb.stats();
    assert_eq!((s.accepted, s.taken, s.depth), (4, 3, 1));
    assert_eq!(
        s.accepted,
        s.handled
            + s.dropped_overflow
            + s.dropped_crashed
            + s.dropped_closed
            + s.taken
            + s.depth as u64
    );
}

#[test]
fn dropping_the_last_handle_dead_letters_what_is_still_queued() {
    let dead: Rc<RefCell<Vec<(u32, Dropped)>>> = Rc::default();
    let sink = dead.clone();
    let mb: Mailbox<u32> = Mailbox::new(4, Overflow::Reject);
    mb.dead_letters(Fwd::new(move |dl: DeadLetter<u32>| {
        sink.borrow_mut().push((dl.msg, dl.why))
    }));
    send_all(&mb, [1, 2]);
    drop(mb);
    assert_eq!(*dead.borrow(), [(1, Dropped::Closed), (2, Dropped::Closed)]);
}

/// Rule 87 for the thread (`mailbox::totals`, what the runtime's status
/// and metrics report): each drop is counted once whatever its cause
/// (overflow, crash, close, the last handle's drop), and each dead letter
/// once, in a live mailbox and in one already dropped.
#[test]
fn the_thread_totals_count_each_drop_and_dead_letter_once() {
    use stakplane::mailbox::{totals, MailboxTotals};
    let delta = |before: MailboxTotals| {
        let t = totals();
        (
            t.accepted - before.accepted,
            t.handled - before.handled,
            t.dropped - before.dropped,
            t.dead_lettered - before.dead_lettered,
            t.depth() - before.depth(),
        )
    };
    let before = totals();
    let mb = Mailbox::dead_lettering(2, Overflow::DropOldest);
    let mut b = Bench::new(&mb);
    send_all(&mb, 1..=3); // 1 evicted
    b.script.crash_in.set(Some(0));
    let _w1 = b.start(&mb);
    b.run(); // crashed on 2; 3 stays queued
    assert_eq!(
        b.dead(),
        [(1, Dropped::Overflow), (2, Dropped::Crashed)],
        "{:?}",
        mb.stats()
    );
    // accepted, handled, dropped, dead-lettered, depth
    assert_eq!(delta(before), (3, 0, 2, 2, 1));
    drop(mb); // 3 goes to the dead letters
    assert_eq!(delta(before), (3, 0, 3, 3, 0));
    let closed = Mailbox::new(4, Overflow::Reject);
    let sink = b.dead.clone();
    closed.dead_letters(Fwd::new(move |dl| sink.borrow_mut().push(dl)));
    send_all(&closed, [4, 5, 6]);
    closed.close();
    assert_eq!(delta(before), (6, 0, 6, 6, 0));
    drop(closed);
    assert_eq!(delta(before), (6, 0, 6, 6, 0));
    assert_eq!(b.dead.borrow().len(), 6);
}

/// Holds a mailbox in its state, so the mailbox dies with the Stakker.
struct Holder {
    _mb: Mailbox<u32>,
}

impl Holder {
    fn init(_: CX![], mb: Mailbox<u32>) -> Option<Self> {
        Some(Holder { _mb: mb })
    }
}

/// Receives dead letters.
struct Sink {
    got: Rc<RefCell<Vec<u32>>>,
}

impl Sink {
    fn init(_: CX![], got: Rc<RefCell<Vec<u32>>>) -> Option<Self> {
        Some(Sink { got })
    }

    fn dead(&mut self, _: CX![], dl: DeadLetter<u32>) {
        self.got.borrow_mut().push(dl.msg);
    }
}

#[test]
fn a_mailbox_dropped_with_its_holder_dead_letters_to_an_actor_even_as_the_stakker_goes() {
    // The holder dies first: its mailbox's queue reaches the sink actor.
    let got: Rc<RefCell<Vec<u32>>> = Rc::default();
    let mut rt = Rt::new();
    let sink = device!(rt.s, Sink::init(got.clone()));
    let mb: Mailbox<u32> = Mailbox::new(4, Overflow::Reject);
    mb.dead_letters(fwd_to!([sink], dead() as (DeadLetter<u32>)));
    send_all(&mb, [1, 2]);
    let holder = device!(rt.s, Holder::init(mb));
    rt.run();
    drop(holder);
    rt.run();
    assert_eq!(*got.borrow(), [1, 2]);
    // Everything goes down with the Stakker: the dead letters are queued
    // to a dying actor and never run; no panic in the drops.
    let late: Rc<RefCell<Vec<u32>>> = Rc::default();
    let sink2 = device!(rt.s, Sink::init(late.clone()));
    let mb: Mailbox<u32> = Mailbox::new(4, Overflow::Reject);
    mb.dead_letters(fwd_to!([sink2], dead() as (DeadLetter<u32>)));
    send_all(&mb, [3]);
    let _holder = device!(rt.s, Holder::init(mb));
    rt.run();
    drop(rt);
    assert!(late.borrow().is_empty());
}
