//! The channel pipe (`channel`, rules 98–98h of `async-glue/src/channel.rs`):
//! order, the bound, room notices, `send().await`, close, producer death,
//! a dropped receiver, re-entrancy, and a property test of random
//! interleavings against a model.
//!
//! Everything runs on one thread and on virtual time: a test drives the
//! stakker queue with `Rt::run` and never sleeps.
mod common;

use common::{joined, DropToken, Drops, Rt};
use futures::StreamExt;
use proptest::prelude::*;
use stakker::{actor, fwd_to, ret_nop, stop, Fwd, CX};
use stakplane_async::{
    channel, spawn, ActorFail, JoinError, JoinHandle, Receiver, SendError, Sender, TrySendError,
};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// What a pass-the-error receiver yielded, in a form tests can compare.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Item(u32),
    /// `Some(Err(ActorFail::Dropped { cause: None }))`
    Dropped,
    /// `None`
    End,
}

fn ev(x: Option<Result<u32, ActorFail>>) -> Ev {
    match x {
        Some(Ok(v)) => Ev::Item(v),
        Some(Err(ActorFail::Dropped { cause: None })) => Ev::Dropped,
        Some(Err(e)) => panic!("unexpected failure {e:?}"),
        None => Ev::End,
    }
}

fn items(v: impl IntoIterator<Item = u32>) -> Vec<Ev> {
    v.into_iter().map(Ev::Item).collect()
}

fn then(mut v: Vec<Ev>, tail: impl IntoIterator<Item = Ev>) -> Vec<Ev> {
    v.extend(tail);
    v
}

/// The most events [`drain`] reads before it gives up: the tests send a
/// few dozen items at most, so a receiver that never ends (say, repeats
/// its failure) fails the test instead of filling memory.
const DRAIN_MOST: usize = 1_000;

/// Spawns a task that reads `rx` up to and including its `None`, logging
/// every event, then one more poll (which must be `None` again).
fn drain(rt: &mut Rt, mut rx: Receiver<u32>) -> (JoinHandle<()>, Rc<RefCell<Vec<Ev>>>) {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let h = spawn(&mut rt.s, async move {
        for _ in 0..DRAIN_MOST {
            let e = ev(rx.recv().await);
            let end = e == Ev::End;
            l2.borrow_mut().push(e);
            if end {
                assert!(rx.recv().await.is_none(), "None again after the end");
                return;
            }
        }
        panic!("no end after {DRAIN_MOST} events");
    });
    (h, log)
}

/// A channel of `cap` whose receiver a task reads as [`drain`] does: its
/// sender, the task and its log.
fn drained(rt: &mut Rt, cap: usize) -> (Sender<u32>, JoinHandle<()>, Rc<RefCell<Vec<Ev>>>) {
    let (tx, rx) = channel::<u32>(cap);
    let (h, log) = drain(rt, rx);
    (tx, h, log)
}

/// A room notice handler that counts its firings and its drop.
fn counting_fwd(fired: &Rc<Cell<u32>>, drops: &Drops) -> Fwd<()> {
    let fired = fired.clone();
    let token = drops.token();
    Fwd::new(move |()| {
        let _ = &token;
        fired.set(fired.get() + 1);
    })
}

/// Polls a future or stream once with a waker that nobody watches.
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

/// A waker that records that it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    /// Whether woken since the last call (and clears it).
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
    fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn order_every_accepted_item_comes_out_once_in_the_order_accepted() {
    let mut rt = Rt::new();
    let (tx, h, log) = drained(&mut rt, 3);
    let tx2 = tx.clone();
    rt.run();
    // Two producers, both styles: try_send from "actors", send().await
    // from a task that waits for room.
    tx.try_send(0).unwrap();
    tx2.try_send(1).unwrap();
    let tx3 = tx.clone();
    let sender = spawn(&mut rt.s, async move {
        for v in 2..8 {
            tx3.send(v).await.unwrap();
        }
    });
    rt.run();
    tx.try_send(8).unwrap();
    tx2.try_send(9).unwrap();
    tx.close();
    rt.run();
    joined(sender).unwrap();
    assert_eq!(*log.borrow(), then(items(0..10), [Ev::End]));
    joined(h).unwrap();
}

#[test]
fn order_refused_items_come_back_in_the_error() {
    let (tx, rx) = channel::<String>(1);
    tx.try_send("a".into()).unwrap();
    let full = tx.try_send("b".into()).unwrap_err();
    assert!(full.is_full() && !full.is_closed());
    assert_eq!(full.to_string(), "channel full");
    assert_eq!(full.into_inner(), "b");
    drop(rx);
    let closed = tx.try_send("c".into()).unwrap_err();
    assert!(closed.is_closed());
    assert_eq!(closed.to_string(), "channel closed");
    assert_eq!(closed, TrySendError::Closed("c".to_string()));
    let err = match poll_once(&mut tx.send("d".into())) {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected Closed, got {other:?}"),
    };
    assert_eq!(err.to_string(), "channel closed");
    let as_dyn: &dyn std::error::Error = &err;
    assert!(as_dyn.source().is_none());
    assert_eq!(
        TrySendError::from(err),
        TrySendError::Closed("d".to_string())
    );
}

#[test]
fn bound_try_send_on_a_full_channel_gives_the_item_back_and_room_counts_free_slots() {
    let mut rt = Rt::new();
    let (tx, mut rx) = channel::<u32>(3);
    assert_eq!((tx.capacity(), rx.capacity()), (3, 3));
    assert_eq!(tx.room(), 3);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert_eq!(tx.room(), 1);
    tx.try_send(3).unwrap();
    assert_eq!(tx.room(), 0);
    assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
    assert_eq!(rx.len(), 3, "the refused item was not queued");
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(1)));
    assert_eq!(tx.room(), 1);
    tx.try_send(4).unwrap();
    assert_eq!(rx.len(), 3);
    tx.close();
    assert_eq!(tx.room(), 0, "no room once closed");
    let (h, log) = drain(&mut rt, rx);
    rt.run();
    assert_eq!(*log.borrow(), then(items([2, 3, 4]), [Ev::End]));
    joined(h).unwrap();
}

#[test]
fn bound_capacity_zero_counts_as_one() {
    let (tx, mut rx) = channel::<u32>(0);
    assert_eq!((tx.capacity(), tx.room()), (1, 1));
    tx.try_send(7).unwrap();
    assert_eq!(tx.try_send(8), Err(TrySendError::Full(8)));
    assert_eq!(ev(futures::executor::block_on(rx.recv())), Ev::Item(7));
    tx.try_send(8).unwrap();
    assert_eq!(rx.len(), 1);
}

#[test]
fn room_notice_fires_at_once_when_there_is_room_already() {
    let (tx, _rx) = channel::<u32>(2);
    let (fired, drops) = (Rc::new(Cell::new(0)), Drops::new());
    tx.notify_room(counting_fwd(&fired, &drops));
    assert_eq!(fired.get(), 1, "called before notify_room returned");
    assert_eq!(drops.count(), 1, "and not kept");
}

#[test]
fn room_notice_fires_exactly_once_when_a_slot_frees_and_not_before() {
    let (tx, mut rx) = channel::<u32>(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    let (fired, drops) = (Rc::new(Cell::new(0)), Drops::new());
    tx.notify_room(counting_fwd(&fired, &drops));
    assert_eq!(fired.get(), 0, "no room yet");
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(1)));
    assert_eq!(
        (fired.get(), drops.count()),
        (1, 1),
        "fired once, then dropped"
    );
    assert_eq!(tx.room(), 1, "the room the notice announced is there");
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(2)));
    assert!(poll_once(&mut rx.next()).is_pending());
    assert_eq!(fired.get(), 1, "once per request");
}

#[test]
fn room_notice_a_later_request_replaces_the_unfired_one() {
    let (tx, mut rx) = channel::<u32>(1);
    tx.try_send(1).unwrap();
    let (first, second, drops) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)), Drops::new());
    tx.notify_room(counting_fwd(&first, &drops));
    tx.notify_room(counting_fwd(&second, &drops));
    assert_eq!(drops.count(), 1, "the first request is dropped at once");
    assert!(poll_once(&mut rx.next()).is_ready());
    assert_eq!((first.get(), second.get()), (0, 1));
}

#[test]
fn room_notice_is_dropped_unfired_with_its_sender_and_when_the_channel_closes() {
    let (tx, mut rx) = channel::<u32>(1);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    let (fired, drops) = (Rc::new(Cell::new(0)), Drops::new());
    tx2.notify_room(counting_fwd(&fired, &drops));
    drop(tx2);
    assert_eq!(drops.count(), 1, "dropped with its sender");
    tx.notify_room(counting_fwd(&fired, &drops));
    tx.close();
    assert_eq!(drops.count(), 2, "dropped by the close");
    tx.notify_room(counting_fwd(&fired, &drops));
    assert_eq!(
        drops.count(),
        3,
        "a request on a closed channel is dropped at once"
    );
    assert!(poll_once(&mut rx.next()).is_ready());
    assert_eq!(fired.get(), 0, "none ever fires");
}

#[test]
fn room_notice_each_sender_has_its_own_request_and_each_fires_while_there_is_room() {
    let (tx, mut rx) = channel::<u32>(1);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    let (a, b, drops) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)), Drops::new());
    tx.notify_room(counting_fwd(&a, &drops));
    tx2.notify_room(counting_fwd(&b, &drops));
    assert_eq!(
        drops.count(),
        0,
        "different senders do not replace each other"
    );
    assert!(poll_once(&mut rx.next()).is_ready());
    assert_eq!(
        (a.get(), b.get()),
        (1, 1),
        "both told; the first to send wins"
    );
    tx.try_send(2).unwrap();
    assert_eq!(tx2.try_send(3), Err(TrySendError::Full(3)));
}

/// A producer actor that sends `0..end` through `try_send` and
/// `notify_room` alone, counting the notices it gets.
struct Producer {
    next: u32,
    end: u32,
    tx: Sender<u32>,
    notices: Rc<Cell<u32>>,
}

impl Producer {
    fn init(cx: CX![], end: u32, tx: Sender<u32>, notices: Rc<Cell<u32>>) -> Option<Self> {
        let mut this = Producer {
            next: 0,
            end,
            tx,
            notices,
        };
        this.fill(cx);
        Some(this)
    }

    fn room(&mut self, cx: CX![]) {
        self.notices.set(self.notices.get() + 1);
        assert!(self.tx.room() > 0, "a notice means room");
        self.fill(cx);
    }

    fn fill(&mut self, cx: CX![]) {
        while self.next < self.end {
            match self.tx.try_send(self.next) {
                Ok(()) => self.next += 1,
                Err(TrySendError::Full(_)) => {
                    return self.tx.notify_room(fwd_to!([cx], room() as ()));
                }
                Err(TrySendError::Closed(_)) => return stop!(cx),
            }
        }
        self.tx.close();
    }

    /// Dies mid-stream (its state, with the `Sender`, is dropped).
    fn die(&mut self, cx: CX![]) {
        stop!(cx);
    }
}

#[test]
fn room_notice_to_an_actor_producer_drives_a_bounded_stream_to_its_end() {
    let mut rt = Rt::new();
    let (tx, mut rx) = channel::<u32>(4);
    let notices = Rc::new(Cell::new(0));
    let _producer = actor!(rt.s, Producer::init(50, tx, notices.clone()), ret_nop!());
    let max_queued = Rc::new(Cell::new(0));
    let m2 = max_queued.clone();
    let h = spawn(&mut rt.s, async move {
        let mut got = Vec::new();
        while let Some(item) = rx.recv().await {
            m2.set(m2.get().max(rx.len() + 1));
            got.push(item.unwrap());
            stakplane_async::sleep(std::time::Duration::from_millis(1)).await;
        }
        got
    });
    rt.advance(std::time::Duration::from_secs(1));
    assert_eq!(joined(h).unwrap(), (0..50).collect::<Vec<_>>());
    assert_eq!(
        max_queued.get(),
        4,
        "the queue filled up to the capacity, no more"
    );
    // 4 sent at init; each notice comes when the consumer took one item
    // off a full queue, and refills that one slot.
    assert_eq!(notices.get(), 46);
}

#[test]
fn send_await_waits_for_room_and_completes_when_a_slot_frees() {
    let mut rt = Rt::new();
    let (tx, mut rx) = channel::<u32>(1);
    let done = Rc::new(Cell::new(0));
    let d2 = done.clone();
    let sender = spawn(&mut rt.s, async move {
        for v in 0..3 {
            tx.send(v).await.unwrap();
            d2.set(v + 1);
        }
    });
    rt.run();
    assert_eq!(done.get(), 1, "the first went in, the second waits");
    assert_eq!(rx.len(), 1);
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(0)));
    assert_eq!(
        rx.len(),
        0,
        "the slot is promised; the item is still in the send"
    );
    rt.run();
    assert_eq!(rx.len(), 1);
    assert_eq!(done.get(), 2);
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(1)));
    rt.run();
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(2)));
    joined(sender).unwrap();
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Dropped));
}

/// A waker that records its wakes, and a context for it.
fn flag() -> (Arc<Flag>, Waker) {
    let f = Arc::new(Flag::default());
    (f.clone(), Waker::from(f))
}

fn poll_with<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

#[test]
fn send_await_waiting_senders_get_freed_slots_in_the_order_they_started_waiting() {
    let (tx, mut rx) = channel::<u32>(1);
    tx.try_send(0).unwrap();
    let (mut a, mut b, mut c) = (tx.send(1), tx.send(2), tx.send(3));
    let ((fa, wa), (fb, wb), (fc, wc)) = (flag(), flag(), flag());
    // They start waiting in the order c, a, b (not the order made).
    assert!(poll_with(&mut c, &wc).is_pending());
    assert!(poll_with(&mut a, &wa).is_pending());
    assert!(poll_with(&mut b, &wb).is_pending());
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(0)));
    assert_eq!((fa.get(), fb.get(), fc.get()), (false, false, true));
    assert!(poll_with(&mut a, &wa).is_pending(), "not a's turn");
    assert_eq!(poll_with(&mut c, &wc), Poll::Ready(Ok(())));
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(3)));
    assert_eq!((fa.take(), fb.get()), (true, false));
    assert_eq!(poll_with(&mut a, &wa), Poll::Ready(Ok(())));
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(1)));
    assert!(fb.get());
    assert_eq!(poll_with(&mut b, &wb), Poll::Ready(Ok(())));
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(2)));
}

#[test]
fn send_await_try_send_and_room_notices_never_take_a_slot_promised_to_a_waiting_send() {
    let (tx, mut rx) = channel::<u32>(1);
    tx.try_send(0).unwrap();
    let (fired, drops) = (Rc::new(Cell::new(0)), Drops::new());
    tx.notify_room(counting_fwd(&fired, &drops));
    let mut waiting = tx.send(1);
    assert!(poll_once(&mut waiting).is_pending());
    assert!(poll_once(&mut rx.next()).is_ready());
    // The freed slot is promised to `waiting`, though it has not run yet.
    assert_eq!(tx.room(), 0);
    assert_eq!(tx.try_send(9), Err(TrySendError::Full(9)));
    assert_eq!(fired.get(), 0, "no notice for a promised slot");
    assert_eq!(poll_once(&mut waiting), Poll::Ready(Ok(())));
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(1)));
    assert_eq!(fired.get(), 1, "the next free slot goes to the notice");
}

#[test]
fn send_await_dropped_before_completion_sent_nothing_and_passes_its_slot_on() {
    let drops = Drops::new();
    let (tx, mut rx) = channel::<(u32, DropToken)>(1);
    tx.try_send((0, drops.token())).unwrap();
    // Dropped while waiting: nothing sent, the item dropped with it.
    let mut gone = tx.send((1, drops.token()));
    assert!(poll_once(&mut gone).is_pending());
    drop(gone);
    assert_eq!(drops.count(), 1);
    // Dropped after a slot was promised to it: the slot passes to the next.
    let mut promised = tx.send((2, drops.token()));
    let mut next = tx.send((3, drops.token()));
    let (fnext, wnext) = flag();
    assert!(poll_once(&mut promised).is_pending());
    assert!(poll_with(&mut next, &wnext).is_pending());
    let (first, _t) = match poll_once(&mut rx.next()) {
        Poll::Ready(Some(Ok(item))) => item,
        _ => panic!("item 0 expected"),
    };
    assert_eq!(first, 0);
    drop(promised);
    assert_eq!(
        drops.count(),
        2,
        "the promised future's item is dropped, never queued"
    );
    assert!(fnext.get(), "the next waiting send is woken with the slot");
    assert!(poll_with(&mut next, &wnext).is_ready());
    let got = match poll_once(&mut rx.next()) {
        Poll::Ready(Some(Ok((v, _t)))) => v,
        _ => panic!("item 3 expected"),
    };
    assert_eq!(got, 3);
    // Dropped with a promised slot and nobody else waiting: the slot is
    // room, and a room request hears of it.
    tx.try_send((4, drops.token())).unwrap();
    let mut last = tx.send((5, drops.token()));
    assert!(poll_once(&mut last).is_pending());
    let (fired, notice_drops) = (Rc::new(Cell::new(0)), Drops::new());
    tx.notify_room(counting_fwd(&fired, &notice_drops));
    assert!(poll_once(&mut rx.next()).is_ready());
    assert_eq!(fired.get(), 0);
    drop(last);
    assert_eq!((fired.get(), tx.room()), (1, 1));
}

#[test]
fn close_ends_the_stream_after_the_queued_items_with_none() {
    let mut rt = Rt::new();
    let (tx, rx) = channel::<u32>(4);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    tx2.try_send(2).unwrap();
    tx2.close(); // from any sender, for all
    assert!(tx.is_closed() && tx2.is_closed());
    tx.close(); // twice: nothing
    drop(tx);
    drop(tx2); // dropping after the close is no death
    let (h, log) = drain(&mut rt, rx);
    rt.run();
    assert_eq!(*log.borrow(), vec![Ev::Item(1), Ev::Item(2), Ev::End]);
    joined(h).unwrap();
}

#[test]
fn close_refuses_later_sends_and_gives_waiting_sends_their_item_back() {
    let (tx, mut rx) = channel::<u32>(1);
    tx.try_send(1).unwrap();
    let mut waiting = tx.send(2);
    let (woken, w) = flag();
    assert!(poll_with(&mut waiting, &w).is_pending());
    tx.close();
    assert!(woken.get(), "the waiting send is woken by the close");
    assert_eq!(
        poll_with(&mut waiting, &w),
        Poll::Ready(Err(SendError::Closed(2)))
    );
    assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    assert_eq!(
        poll_once(&mut tx.send(4)),
        Poll::Ready(Err(SendError::Closed(4)))
    );
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(1)));
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::End));
}

#[test]
fn producer_death_yields_the_queued_items_then_one_dropped_then_none() {
    let mut rt = Rt::new();
    let (tx, h, log) = drained(&mut rt, 4);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    drop(tx);
    rt.run();
    assert_eq!(
        *log.borrow(),
        items([1]),
        "dropping one sender changes nothing"
    );
    assert!(!h.is_finished());
    tx2.try_send(2).unwrap();
    tx2.try_send(3).unwrap();
    drop(tx2);
    rt.run();
    assert_eq!(
        *log.borrow(),
        vec![Ev::Item(1), Ev::Item(2), Ev::Item(3), Ev::Dropped, Ev::End]
    );
    joined(h).unwrap();
}

#[test]
fn producer_death_of_an_actor_that_stops_mid_stream_reads_as_dropped() {
    let mut rt = Rt::new();
    let (tx, rx) = channel::<u32>(3);
    let producer = actor!(rt.s, Producer::init(100, tx, Rc::default()), ret_nop!());
    rt.run();
    stakker::call!([producer], die());
    let (h, log) = drain(&mut rt, rx);
    rt.run();
    assert_eq!(*log.borrow(), then(items(0..3), [Ev::Dropped, Ev::End]));
    joined(h).unwrap();
}

#[test]
fn producer_death_with_or_drop_ends_the_consuming_task_after_the_queued_items() {
    let mut rt = Rt::new();
    let (tx, rx) = channel::<u32>(4);
    let got = Rc::new(RefCell::new(Vec::new()));
    let g2 = got.clone();
    let h = spawn(&mut rt.s, async move {
        let mut rx = rx.or_drop();
        while let Some(v) = rx.recv().await {
            g2.borrow_mut().push(v);
        }
        unreachable!("the task ends at the failing .await");
    });
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    drop(tx);
    rt.run();
    assert_eq!(*got.borrow(), vec![1, 2]);
    match joined(h) {
        Err(JoinError::Failed(ActorFail::Dropped { cause: None })) => {}
        other => panic!("expected Failed(Dropped), got {other:?}"),
    }
}

#[test]
fn producer_close_with_or_drop_gives_the_items_then_none() {
    let mut rt = Rt::new();
    let (tx, rx) = channel::<u32>(2);
    let h = spawn(
        &mut rt.s,
        async move { rx.or_drop().collect::<Vec<_>>().await },
    );
    tx.try_send(5).unwrap();
    tx.try_send(6).unwrap();
    tx.close();
    rt.run();
    assert_eq!(joined(h).unwrap(), vec![5, 6]);
}

#[test]
fn receiver_dropped_refuses_sends_wakes_waiting_sends_and_drops_notices_and_queued_items() {
    let drops = Drops::new();
    let (tx, rx) = channel::<(u32, DropToken)>(1);
    tx.try_send((1, drops.token())).unwrap();
    let mut waiting = tx.send((2, drops.token()));
    let (woken, w) = flag();
    assert!(poll_with(&mut waiting, &w).is_pending());
    let (fired, notice_drops) = (Rc::new(Cell::new(0)), Drops::new());
    tx.notify_room(counting_fwd(&fired, &notice_drops));
    drop(rx);
    assert_eq!(drops.count(), 1, "the queued item is dropped");
    assert_eq!(notice_drops.count(), 1, "the pending notice is dropped...");
    assert_eq!(fired.get(), 0, "...unfired");
    assert!(woken.get(), "the waiting send is woken");
    match poll_with(&mut waiting, &w) {
        Poll::Ready(Err(SendError::Closed((2, _)))) => {}
        _ => panic!("the waiting send gets its item back in Closed"),
    }
    assert!(tx.is_closed());
    assert_eq!(tx.room(), 0);
    assert!(tx.try_send((3, drops.token())).unwrap_err().is_closed());
    tx.notify_room(counting_fwd(&fired, &notice_drops));
    assert_eq!((fired.get(), notice_drops.count()), (0, 2));
}

/// A queued item whose drop uses the channel it sits in (sends on it and
/// drops a `Sender` of it).
struct SendsOnDrop(Option<Sender<SendsOnDrop>>, Rc<Cell<bool>>);

impl Drop for SendsOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let refused = tx.try_send(SendsOnDrop(None, Rc::default()));
            self.1.set(refused.is_err_and(|e| e.is_closed()));
        }
    }
}

#[test]
fn reentrancy_a_room_notice_handler_may_send_ask_again_and_close() {
    let (tx, mut rx) = channel::<u32>(1);
    tx.try_send(0).unwrap();
    // The handlers share one clone (a request belongs to the `Sender`
    // that made it, so each handler must not own its own).
    let inner = Rc::new(tx.clone());
    let next = Rc::new(Cell::new(1));
    let n2 = next.clone();
    let handler = Rc::new(RefCell::new(None::<Box<dyn Fn() -> Fwd<()>>>));
    let h2 = handler.clone();
    *handler.borrow_mut() = Some(Box::new(move || {
        let (inner, n2, h2) = (inner.clone(), n2.clone(), h2.clone());
        Fwd::new(move |()| {
            inner.try_send(n2.get()).unwrap();
            n2.set(n2.get() + 1);
            if n2.get() < 4 {
                let again = (h2.borrow().as_ref().unwrap())();
                inner.notify_room(again);
            } else {
                inner.close();
            }
        })
    }));
    let first = (handler.borrow().as_ref().unwrap())();
    tx.notify_room(first);
    let mut got = Vec::new();
    while let Poll::Ready(Some(x)) = poll_once(&mut rx.next()) {
        got.push(x.unwrap());
    }
    assert_eq!(
        got,
        vec![0, 1, 2, 3],
        "sent from inside the receiver's poll"
    );
    assert_eq!(next.get(), 4);
    assert!(tx.is_closed(), "closed by the handler");
    *handler.borrow_mut() = None;
}

#[test]
fn reentrancy_dropping_items_and_fwds_may_use_the_channel() {
    let (tx, rx) = channel::<SendsOnDrop>(2);
    let saw_closed = Rc::new(Cell::new(false));
    tx.try_send(SendsOnDrop(Some(tx.clone()), saw_closed.clone()))
        .unwrap_or_else(|_| panic!("room"));
    tx.try_send(SendsOnDrop(Some(tx.clone()), Rc::default()))
        .unwrap_or_else(|_| panic!("room"));
    // A replaced room request whose Fwd owns a sender: its drop drops
    // that sender, which updates the channel.
    let owner = tx.clone();
    tx.notify_room(Fwd::new(move |()| {
        let _ = &owner;
    }));
    tx.notify_room(Fwd::new(|()| {}));
    // Dropping the receiver drops the queued items, whose drops send.
    drop(rx);
    assert!(
        saw_closed.get(),
        "the item's drop ran with the channel free"
    );
}

thread_local! {
    /// The sender the re-entering waker sends on, and what its sends gave
    /// (wakers must be `Send`; this one only ever runs on the test's
    /// thread).
    static WAKE_TX: RefCell<Option<Sender<u32>>> = const { RefCell::new(None) };
    static WAKE_SENDS: RefCell<Vec<Result<(), TrySendError<u32>>>> = const { RefCell::new(Vec::new()) };
}

/// A waker that calls `try_send(100 + n)` on `WAKE_TX` when woken the
/// n-th time.
#[derive(Default)]
struct SendsOnWake(std::sync::atomic::AtomicU32);

impl Wake for SendsOnWake {
    fn wake(self: Arc<Self>) {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        let sent = WAKE_TX.with(|tx| tx.borrow().as_ref().map(|tx| tx.try_send(100 + n)));
        WAKE_SENDS.with(|log| log.borrow_mut().extend(sent));
    }
}

#[test]
fn reentrancy_a_woken_waker_may_use_the_channel() {
    let (tx, mut rx) = channel::<u32>(3);
    WAKE_TX.with(|w| *w.borrow_mut() = Some(tx.clone()));
    let waker = Waker::from(Arc::new(SendsOnWake::default()));
    // The receiver waits with that waker; a send wakes it, and the wake
    // sends again.
    assert!(poll_with(&mut rx.next(), &waker).is_pending());
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    // A send waits with that waker; the receiver's poll promises it the
    // freed slot and wakes it, and the wake's own `try_send` finds no
    // room (the slot is promised).
    let mut waiting = tx.send(3);
    assert!(poll_with(&mut waiting, &waker).is_pending());
    assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::Item(1)));
    assert_eq!(poll_with(&mut waiting, &waker), Poll::Ready(Ok(())));
    WAKE_TX.with(|w| *w.borrow_mut() = None);
    let sends = WAKE_SENDS.with(|log| std::mem::take(&mut *log.borrow_mut()));
    assert_eq!(sends, vec![Ok(()), Err(TrySendError::Full(101))]);
    let rest: Vec<u32> = std::iter::from_fn(|| match poll_once(&mut rx.next()) {
        Poll::Ready(Some(Ok(v))) => Some(v),
        _ => None,
    })
    .collect();
    assert_eq!(rest, vec![100, 2, 3]);
}

/// One step of the property test. Indices pick among what exists (taken
/// modulo its count; a step with nothing to pick is skipped).
#[derive(Clone, Debug)]
enum Op {
    /// A test-held sender calls `try_send`.
    TrySend(usize),
    /// A test-held sender asks for a room notice.
    NotifyRoom(usize),
    /// A producer task: a clone of a sender moved into a `send().await`
    /// future, polled once at once.
    Send(usize),
    /// Polls a pending send future again.
    PollSend(usize),
    /// Drops a pending send future (with its sender clone).
    CancelSend(usize),
    /// The consumer polls the receiver once.
    Recv,
    /// Clones a test-held sender.
    Clone(usize),
    /// A producer dies: a test-held sender is dropped unclosed.
    DropSender(usize),
    /// A test-held sender closes the channel.
    Close(usize),
    /// The consumer goes away.
    DropReceiver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<usize>().prop_map(Op::TrySend),
        3 => any::<usize>().prop_map(Op::NotifyRoom),
        3 => any::<usize>().prop_map(Op::Send),
        3 => any::<usize>().prop_map(Op::PollSend),
        1 => any::<usize>().prop_map(Op::CancelSend),
        8 => Just(Op::Recv),
        1 => any::<usize>().prop_map(Op::Clone),
        1 => any::<usize>().prop_map(Op::DropSender),
        1 => any::<usize>().prop_map(Op::Close),
        1 => Just(Op::DropReceiver),
    ]
}

/// What the consumer should see at the end.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Open,
    Closed,
    Dropped,
    Reported,
}

type SendFut = Pin<Box<dyn Future<Output = Result<(), SendError<u32>>>>>;

/// A send future under test, with the value it carries and its waker.
struct PendingSend {
    key: u64,
    value: u32,
    fut: SendFut,
    flag: Arc<Flag>,
    waker: Waker,
}

/// The model of the channel, and the real thing beside it.
struct Case {
    cap: usize,
    // The model.
    queue: VecDeque<u32>,
    accepted: Vec<u32>,
    consumed: Vec<u32>,
    end: End,
    rx_gone: bool,
    /// Live senders: test-held plus one per pending send future.
    live: usize,
    /// Pending send futures by key, in the order they started waiting;
    /// the first `granted` have a slot promised.
    waiting: VecDeque<u64>,
    granted: usize,
    /// Pending room requests in order: (sender key, request id).
    notices: VecDeque<(u64, u64)>,
    /// Requests fired so far, in order, as the model expects them.
    expect_fired: Vec<u64>,
    /// Request `Fwd`s dropped so far (fired, replaced or dropped unfired).
    expect_dropped: usize,
    requests: u64,
    next_value: u32,
    next_key: u64,
    rx_waiting: bool,
    // The real channel.
    senders: Vec<(u64, Sender<u32>)>,
    sends: Vec<PendingSend>,
    rx: Option<Receiver<u32>>,
    rx_flag: Arc<Flag>,
    rx_waker: Waker,
    fired: Rc<RefCell<Vec<u64>>>,
    notice_drops: Drops,
}

impl Case {
    fn new(cap: usize) -> Self {
        let (tx, rx) = channel::<u32>(cap);
        let (rx_flag, rx_waker) = flag();
        Case {
            cap,
            queue: VecDeque::new(),
            accepted: Vec::new(),
            consumed: Vec::new(),
            end: End::Open,
            rx_gone: false,
            live: 1,
            waiting: VecDeque::new(),
            granted: 0,
            notices: VecDeque::new(),
            expect_fired: Vec::new(),
            expect_dropped: 0,
            requests: 0,
            next_value: 0,
            next_key: 1,
            rx_waiting: false,
            senders: vec![(0, tx)],
            sends: Vec::new(),
            rx: Some(rx),
            rx_flag,
            rx_waker,
            fired: Rc::default(),
            notice_drops: Drops::new(),
        }
    }

    fn accepting(&self) -> bool {
        self.end == End::Open && !self.rx_gone
    }

    fn room(&self) -> usize {
        if self.accepting() {
            self.cap - self.queue.len() - self.granted
        } else {
            0
        }
    }

    fn value(&mut self) -> u32 {
        self.next_value += 1;
        self.next_value
    }

    fn accept(&mut self, v: u32) {
        self.queue.push_back(v);
        self.accepted.push(v);
    }

    /// The model of a freed slot: to the first unpromised waiting send,
    /// else every pending request fires (the handlers only record).
    fn slot_freed(&mut self) {
        if !self.accepting() {
            return;
        }
        if self.waiting.len() > self.granted {
            self.granted += 1;
        } else if self.room() > 0 {
            let fired: Vec<u64> = self.notices.drain(..).map(|(_, r)| r).collect();
            self.expect_dropped += fired.len();
            self.expect_fired.extend(fired);
        }
    }

    fn sender_gone(&mut self) {
        self.live -= 1;
        if self.live == 0 && self.end == End::Open {
            self.end = End::Dropped;
        }
    }

    fn closed_now(&mut self) {
        // Requests are dropped; waiting sends find out when polled.
        self.expect_dropped += self.notices.len();
        self.notices.clear();
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::TrySend(i) if !self.senders.is_empty() => {
                let v = self.value();
                let tx = &self.senders[i % self.senders.len()].1;
                let got = tx.try_send(v);
                let want = if !self.accepting() {
                    Err(TrySendError::Closed(v))
                } else if self.room() == 0 {
                    Err(TrySendError::Full(v))
                } else {
                    Ok(())
                };
                prop_assert_eq!(&got, &want);
                if got.is_ok() {
                    self.accept(v);
                }
            }
            Op::NotifyRoom(i) if !self.senders.is_empty() => {
                let (key, tx) = &self.senders[i % self.senders.len()];
                let key = *key;
                let req = self.requests;
                self.requests += 1;
                let fired = self.fired.clone();
                let token = self.notice_drops.token();
                tx.notify_room(Fwd::new(move |()| {
                    let _ = &token;
                    fired.borrow_mut().push(req);
                }));
                if !self.accepting() {
                    // Dropped unfired.
                    self.expect_dropped += 1;
                } else if self.room() > 0 {
                    self.expect_fired.push(req);
                    self.expect_dropped += 1;
                } else if let Some(slot) = self.notices.iter_mut().find(|(k, _)| *k == key) {
                    // The old one is dropped unfired.
                    slot.1 = req;
                    self.expect_dropped += 1;
                } else {
                    self.notices.push_back((key, req));
                }
            }
            Op::Send(i) if !self.senders.is_empty() => {
                let v = self.value();
                let tx = self.senders[i % self.senders.len()].1.clone();
                self.live += 1;
                let mut fut: SendFut = Box::pin(async move { tx.send(v).await });
                let (flag, waker) = flag();
                let got = poll_with(&mut fut, &waker);
                if !self.accepting() {
                    prop_assert_eq!(got, Poll::Ready(Err(SendError::Closed(v))));
                    self.sender_gone();
                } else if self.room() > 0 {
                    prop_assert_eq!(got, Poll::Ready(Ok(())));
                    self.accept(v);
                    self.sender_gone();
                } else {
                    prop_assert!(got.is_pending());
                    let key = self.next_key;
                    self.next_key += 1;
                    self.waiting.push_back(key);
                    self.sends.push(PendingSend {
                        key,
                        value: v,
                        fut,
                        flag,
                        waker,
                    });
                }
            }
            Op::PollSend(i) if !self.sends.is_empty() => {
                let i = i % self.sends.len();
                let pos = self.waiting.iter().position(|&k| k == self.sends[i].key);
                let pos = pos.ok_or_else(|| TestCaseError::fail("send not in line"))?;
                let promised = pos < self.granted;
                let s = &mut self.sends[i];
                s.flag.take();
                let got = poll_with(&mut s.fut, &s.waker);
                let v = s.value;
                if !self.accepting() || promised {
                    self.sends.remove(i);
                    self.waiting.remove(pos);
                    if promised {
                        self.granted -= 1;
                    }
                    if self.accepting() {
                        prop_assert_eq!(got, Poll::Ready(Ok(())));
                        self.accept(v);
                    } else {
                        prop_assert_eq!(got, Poll::Ready(Err(SendError::Closed(v))));
                    }
                    self.sender_gone();
                } else {
                    prop_assert!(got.is_pending(), "a send with no slot waits");
                }
            }
            Op::CancelSend(i) if !self.sends.is_empty() => {
                let s = self.sends.remove(i % self.sends.len());
                let pos = self.waiting.iter().position(|&k| k == s.key);
                let pos = pos.ok_or_else(|| TestCaseError::fail("send not in line"))?;
                self.waiting.remove(pos);
                drop(s);
                if pos < self.granted {
                    self.granted -= 1;
                    self.slot_freed();
                }
                self.sender_gone();
            }
            Op::Recv if self.rx.is_some() => {
                let rx = self.rx.as_mut().expect("checked");
                self.rx_flag.take();
                let got = poll_with(&mut rx.next(), &self.rx_waker).map(ev);
                self.rx_waiting = false;
                if let Some(v) = self.queue.pop_front() {
                    prop_assert_eq!(got, Poll::Ready(Ev::Item(v)));
                    self.consumed.push(v);
                    self.slot_freed();
                } else {
                    let want = match self.end {
                        End::Open => Poll::Pending,
                        End::Closed | End::Reported => Poll::Ready(Ev::End),
                        End::Dropped => Poll::Ready(Ev::Dropped),
                    };
                    prop_assert_eq!(got, want);
                    if self.end == End::Open {
                        self.rx_waiting = true;
                    } else {
                        self.end = End::Reported;
                    }
                }
            }
            Op::Clone(i) if !self.senders.is_empty() && self.senders.len() < 4 => {
                let tx = self.senders[i % self.senders.len()].1.clone();
                self.senders.push((self.next_key, tx));
                self.next_key += 1;
                self.live += 1;
            }
            Op::DropSender(i) if !self.senders.is_empty() => {
                let (key, tx) = self.senders.remove(i % self.senders.len());
                drop(tx);
                let before = self.notices.len();
                self.notices.retain(|(k, _)| *k != key);
                self.expect_dropped += before - self.notices.len();
                self.sender_gone();
            }
            Op::Close(i) if !self.senders.is_empty() => {
                self.senders[i % self.senders.len()].1.close();
                if self.end == End::Open {
                    self.end = End::Closed;
                    self.closed_now();
                }
            }
            Op::DropReceiver if self.rx.is_some() => {
                self.rx = None;
                self.rx_gone = true;
                self.rx_waiting = false;
                self.queue.clear();
                self.closed_now();
            }
            _ => {}
        }
        self.check()
    }

    /// What must hold after every step.
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(&*self.fired.borrow(), &self.expect_fired, "room notices");
        prop_assert_eq!(
            self.notice_drops.count(),
            self.expect_dropped,
            "room requests dropped: fired, replaced, or unfired by a close or a death"
        );
        // Nothing lost, duplicated or reordered: what came out, then what
        // is queued, is what was accepted.
        let so_far: Vec<u32> = self.consumed.iter().chain(&self.queue).copied().collect();
        if !self.rx_gone {
            prop_assert_eq!(&so_far, &self.accepted);
        }
        prop_assert!(self.queue.len() <= self.cap, "never more than capacity");
        if let Some(rx) = &self.rx {
            prop_assert_eq!(rx.len(), self.queue.len());
        }
        for (_, tx) in &self.senders {
            prop_assert_eq!(tx.room(), self.room());
            prop_assert_eq!(tx.is_closed(), !self.accepting());
        }
        // No request waits while there is room.
        prop_assert!(self.notices.is_empty() || self.room() == 0);
        // Whoever has something coming was woken, and nobody else.
        for s in &self.sends {
            let pos = self.waiting.iter().position(|&k| k == s.key);
            let due = !self.accepting() || pos.is_some_and(|p| p < self.granted);
            prop_assert_eq!(s.flag.get(), due, "send future woken iff it can complete");
        }
        if self.rx_waiting {
            let due = !self.queue.is_empty() || self.end != End::Open;
            prop_assert_eq!(self.rx_flag.get(), due, "receiver woken iff it has news");
        }
        Ok(())
    }

    /// Cancels every pending send, drops every sender, and reads the rest:
    /// the queued items, then exactly one of `None` after a close, or
    /// `Err(Dropped)` then `None`.
    fn finish(mut self) -> Result<(), TestCaseError> {
        while !self.sends.is_empty() {
            self.step(Op::CancelSend(0))?;
        }
        while !self.senders.is_empty() {
            self.step(Op::DropSender(0))?;
        }
        prop_assert_eq!(self.live, 0);
        prop_assert_eq!(
            self.notice_drops.count() as u64,
            self.requests,
            "every room request fired or dropped, none kept"
        );
        let Some(mut rx) = self.rx.take() else {
            return Ok(());
        };
        // At most the queued items, `Err(Dropped)` and `None`: a receiver
        // that never ends (say, repeats the failure) fails here, bounded,
        // instead of growing `rest` for ever.
        let most = self.queue.len() + 2;
        let mut rest = Vec::new();
        loop {
            let e = poll_once(&mut rx.next()).map(ev);
            let Poll::Ready(e) = e else {
                return Err(TestCaseError::fail("pending with every sender gone"));
            };
            let end = e == Ev::End;
            rest.push(e);
            if end {
                break;
            }
            if rest.len() >= most {
                return Err(TestCaseError::fail(format!(
                    "no end after {most} reads with every sender gone: {rest:?}"
                )));
            }
        }
        let mut want: Vec<Ev> = self.queue.iter().copied().map(Ev::Item).collect();
        match self.end {
            End::Closed => want.push(Ev::End),
            End::Dropped => want.extend([Ev::Dropped, Ev::End]),
            End::Reported => want.push(Ev::End),
            End::Open => return Err(TestCaseError::fail("open with every sender gone")),
        }
        prop_assert_eq!(rest, want);
        prop_assert_eq!(poll_once(&mut rx.next()).map(ev), Poll::Ready(Ev::End));
        // The whole run: every accepted item came out once, in order.
        Ok(())
    }
}

proptest! {
    // 2,048 cases, or PROPTEST_CASES (valgrind.sh runs fewer: under
    // memcheck each case costs ~20x).
    #![proptest_config(stakplane_testkit::cases(2048))]

    #[test]
    fn property_random_interleavings_lose_nothing_keep_order_and_end_exactly_once(
        cap in 1usize..=4,
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let mut case = Case::new(cap);
        for op in ops {
            case.step(op)?;
        }
        case.finish()?;
    }
}

// ---------------------------------------------------------------------------
// Rule 98g: user code the channel runs only while unborrowed

/// A `fmt::Write` sink that, on its first write, drops the sender it owns
/// (say, a one-shot log forwarder that hangs up after one line).
struct DropsSenderOnWrite(Option<Sender<u32>>);

impl std::fmt::Write for DropsSenderOnWrite {
    fn write_str(&mut self, _: &str) -> std::fmt::Result {
        self.0 = None;
        Ok(())
    }
}

#[test]
fn reentrancy_a_debug_sink_may_drop_the_last_other_sender_and_the_death_is_reported() {
    use std::fmt::Write as _;
    let (tx, mut rx) = channel::<u32>(4);
    tx.try_send(7).unwrap();
    let mut sink = DropsSenderOnWrite(Some(tx.clone()));
    // Formatting `tx` writes to the sink, which drops its sender.
    write!(sink, "{tx:?}").unwrap();
    assert!(sink.0.is_none());
    drop(tx); // every Sender is now gone, none closed: rule 98e
    let mut got = Vec::new();
    for _ in 0..3 {
        match poll_once(&mut rx.next()) {
            Poll::Ready(x) => got.push(ev(x)),
            Poll::Pending => break,
        }
    }
    assert_eq!(got, vec![Ev::Item(7), Ev::Dropped, Ev::End]);
}

thread_local! {
    /// The sender a [`DropsSenderOnDrop`] waker drops when it is dropped.
    static DROP_TX: RefCell<Option<Sender<u32>>> = const { RefCell::new(None) };
}

/// A waker whose `Drop` drops the sender kept in `DROP_TX` (wakers must
/// be `Send`; this one only ever runs on the test's thread).
struct DropsSenderOnDrop;

impl Wake for DropsSenderOnDrop {
    fn wake(self: Arc<Self>) {}
}

impl Drop for DropsSenderOnDrop {
    fn drop(&mut self) {
        let tx = DROP_TX.with(|t| t.borrow_mut().take());
        drop(tx);
    }
}

#[test]
fn reentrancy_a_replaced_waker_whose_drop_drops_the_last_sender_has_the_death_reported() {
    let (tx, mut rx) = channel::<u32>(4);
    DROP_TX.with(|t| *t.borrow_mut() = Some(tx));
    // First poll with the dropping waker: the receiver keeps its clone.
    {
        let w1 = Waker::from(Arc::new(DropsSenderOnDrop));
        let mut next = rx.next();
        assert!(Pin::new(&mut next)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
    } // the receiver's clone is now the last one
      // A poll with another waker replaces (drops) it: its Drop drops the
      // last Sender, unclosed.
    let w2 = Waker::from(Arc::new(Flag::default()));
    let mut next = rx.next();
    let _ = Pin::new(&mut next).poll(&mut Context::from_waker(&w2));
    drop(next);
    assert!(
        DROP_TX.with(|t| t.borrow().is_none()),
        "the sender was dropped"
    );
    // Rule 98e: one Err(Dropped), then None.
    assert_eq!(ev(ready_or_panic(rx.next())), Ev::Dropped);
    assert_eq!(ev(ready_or_panic(rx.next())), Ev::End);
}

#[track_caller]
fn ready_or_panic<F: Future + Unpin>(mut f: F) -> F::Output {
    match poll_once(&mut f) {
        Poll::Ready(x) => x,
        Poll::Pending => panic!("pending: the stream never ends"),
    }
}
