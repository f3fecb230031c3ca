//! Pipes between stakker's push style and async code: `Ret` → `Future`
//! (push and pull pipes, pass-the-error and drop-the-task styles), `ask!`
//! against plain stakker actors, `Fwd` → `Stream` (order, refill requests,
//! failure, overflow) and `Stream` → `Fwd`.
//!
//! Everything runs on one thread and on virtual time: a test drives the
//! stakker queue with `Rt::run` and never sleeps.
mod common;

use common::{batched_stream, joined, Drops, Rt};
use futures::{FutureExt, StreamExt};
use stakker::{actor, call, fwd_nop, ret_nop, stop, Fwd, Ret, CX};
use stakplane_async::{
    future_pull, future_pull_or_drop, fwd_to_stream, fwd_to_stream_or_drop, ret_to_future,
    ret_to_future_or_drop, spawn, stream_to_fwd, ActorFail, FwdStream, JoinError, JoinHandle,
};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::task::{Poll, Waker};

// ---------------------------------------------------------------------------
// Helpers

/// What a pass-the-error stream yielded, in a form tests can compare.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Item(u32),
    /// `Some(Err(ActorFail::Dropped { cause: None }))`
    Dropped,
    /// `Some(Err(ActorFail::Overflow { capacity }))`
    Overflow(usize),
    /// `None`
    End,
}

fn ev(x: Option<Result<u32, ActorFail>>) -> Ev {
    match x {
        Some(Ok(v)) => Ev::Item(v),
        Some(Err(ActorFail::Dropped { cause: None })) => Ev::Dropped,
        Some(Err(ActorFail::Overflow { capacity })) => Ev::Overflow(capacity),
        Some(Err(e)) => panic!("unexpected failure {e:?}"),
        None => Ev::End,
    }
}

/// Spawns `fut` as a task that holds a token of `drops` and, once `fut`
/// resolves, sets the flag returned (the code after its `.await` ran)
/// and ends with its value.
fn spawn_watched<T: 'static>(
    rt: &mut Rt,
    drops: &Drops,
    fut: impl Future<Output = T> + 'static,
) -> (JoinHandle<T>, Rc<Cell<bool>>) {
    let tok = drops.token();
    let after_await = Rc::new(Cell::new(false));
    let a2 = after_await.clone();
    let h = spawn(&mut rt.s, async move {
        let _tok = tok;
        let v = fut.await;
        a2.set(true);
        v
    });
    (h, after_await)
}

/// A drop-the-task style task that failed: it ended `Failed` with a
/// drop without cause, its future was dropped once, and the code after
/// the failing `.await` never ran.
#[track_caller]
fn assert_failed_once<T: 'static>(h: JoinHandle<T>, drops: &Drops, after_await: &Cell<bool>) {
    assert!(matches!(joined(h), Err(JoinError::Failed(ref e)) if is_dropped_without_cause(e)));
    assert_eq!(drops.count(), 1);
    assert!(!after_await.get());
}

/// Spawns a task that reads `stream` up to and including its `None`,
/// logging every event.
fn drain(rt: &mut Rt, mut stream: FwdStream<u32>) -> (JoinHandle<()>, Rc<RefCell<Vec<Ev>>>) {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let h = spawn(&mut rt.s, async move {
        loop {
            let e = ev(stream.next().await);
            let end = e == Ev::End;
            l2.borrow_mut().push(e);
            if end {
                break;
            }
        }
    });
    (h, log)
}

fn items(v: impl IntoIterator<Item = u32>) -> Vec<Ev> {
    v.into_iter().map(Ev::Item).collect()
}

/// The text of a caught panic.
fn panic_text(err: &(dyn Any + Send)) -> String {
    err.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn is_dropped_without_cause(e: &ActorFail) -> bool {
    matches!(e, ActorFail::Dropped { cause: None })
}

// ---------------------------------------------------------------------------
// Push pipe: ret_to_future / ret_to_future_or_drop

#[test]
fn ret_dropped_unfired_makes_ret_to_future_yield_dropped_without_cause() {
    let mut rt = Rt::new();
    let (fut, ret) = ret_to_future::<u32>();
    let h = spawn(&mut rt.s, fut);
    rt.run();
    assert!(!h.is_finished(), "waits for the Ret");
    drop(ret);
    rt.run();
    let e = joined(h)
        .expect("the task itself completes")
        .expect_err("a dropped Ret is an error");
    assert!(is_dropped_without_cause(&e), "{e:?}");
    assert!(e.cause().is_none());
    assert_eq!(
        e.to_string(),
        "actor dropped the reply without answering",
        "Display of a drop without cause"
    );
}

#[test]
fn ret_dropped_unfired_makes_ret_to_future_or_drop_end_the_task_with_failed_and_drop_it_once() {
    let mut rt = Rt::new();
    let drops = Drops::new();
    let (fut, ret) = ret_to_future_or_drop::<u32>();
    let (h, after_await) = spawn_watched(&mut rt, &drops, fut);
    rt.run();
    assert!(!h.is_finished());
    assert_eq!(drops.count(), 0);
    drop(ret);
    rt.run();
    assert!(h.is_finished());
    assert_eq!(
        drops.count(),
        1,
        "the task future is dropped when it fails, once"
    );
    match joined(h) {
        Err(JoinError::Failed(e)) => assert!(is_dropped_without_cause(&e), "{e:?}"),
        other => panic!("expected JoinError::Failed, got {other:?}"),
    }
    assert!(
        !after_await.get(),
        "code after the failing .await never runs"
    );
    rt.run();
    assert_eq!(drops.count(), 1, "still dropped exactly once");
}

#[test]
fn ret_dropped_before_the_first_poll_fails_an_or_drop_task_at_its_first_poll() {
    let mut rt = Rt::new();
    let drops = Drops::new();
    let (fut, ret) = ret_to_future_or_drop::<u32>();
    drop(ret);
    let (h, after_await) = spawn_watched(&mut rt, &drops, fut);
    rt.run();
    assert_failed_once(h, &drops, &after_await);
}

#[test]
fn ret_fired_resolves_both_push_styles_with_the_value() {
    let mut rt = Rt::new();
    let (fut, ret) = ret_to_future::<u32>();
    let (fut_or_drop, ret_or_drop) = ret_to_future_or_drop::<&'static str>();
    let a = spawn(&mut rt.s, fut);
    let b = spawn(&mut rt.s, fut_or_drop);
    rt.run();
    assert!(!a.is_finished() && !b.is_finished());
    ret.ret(7);
    ret_or_drop.ret("seven");
    rt.run();
    assert_eq!(joined(a).unwrap().unwrap(), 7);
    assert_eq!(joined(b).unwrap(), "seven");
}

#[test]
fn ret_fired_before_the_first_poll_resolves_at_the_first_poll() {
    let mut rt = Rt::new();
    let polls = Rc::new(Cell::new(0u32));
    let (mut fut, ret) = ret_to_future::<u32>();
    ret.ret(11);
    let p2 = polls.clone();
    let a = spawn(
        &mut rt.s,
        poll_fn(move |cx| {
            p2.set(p2.get() + 1);
            fut.poll_unpin(cx)
        }),
    );
    let (fut_or_drop, ret_or_drop) = ret_to_future_or_drop::<u32>();
    ret_or_drop.ret(12);
    let b = spawn(&mut rt.s, fut_or_drop);
    rt.run();
    assert_eq!(polls.get(), 1, "ready at the first poll");
    assert_eq!(joined(a).unwrap().unwrap(), 11);
    assert_eq!(joined(b).unwrap(), 12);
}

// ---------------------------------------------------------------------------
// Pull pipe: future_pull / future_pull_or_drop

#[test]
fn future_pull_sends_nothing_until_first_polled_and_sends_exactly_once() {
    let mut rt = Rt::new();
    let calls = Rc::new(Cell::new(0u32));

    // Never polled: the request closure never runs.
    let c2 = calls.clone();
    let never = future_pull(move |ret: Ret<u32>| {
        c2.set(c2.get() + 1);
        ret.ret(1);
    });
    rt.run();
    drop(never);
    assert_eq!(
        calls.get(),
        0,
        "a pull future dropped unpolled sends nothing"
    );

    // Spawned then aborted before the queue ran: never polled either.
    let c2 = calls.clone();
    let aborted = spawn(
        &mut rt.s,
        future_pull(move |ret: Ret<u32>| {
            c2.set(c2.get() + 1);
            ret.ret(2);
        }),
    );
    aborted.abort();
    rt.run();
    assert_eq!(calls.get(), 0, "spawn itself does not poll");
    assert!(matches!(joined(aborted), Err(JoinError::Aborted)));

    // Polled: the request goes out at the first poll, and only once even
    // though the task is polled again when the reply comes.
    let held: Rc<RefCell<Option<Ret<u32>>>> = Rc::default();
    let h2 = held.clone();
    let c2 = calls.clone();
    let h = spawn(
        &mut rt.s,
        future_pull(move |ret: Ret<u32>| {
            c2.set(c2.get() + 1);
            *h2.borrow_mut() = Some(ret);
        }),
    );
    assert_eq!(calls.get(), 0, "nothing is sent inside spawn");
    rt.run();
    assert_eq!(calls.get(), 1, "sent at the first poll");
    assert!(!h.is_finished());
    let ret = held.borrow_mut().take().expect("the request got a Ret");
    ret.ret(33);
    rt.run();
    assert_eq!(joined(h).unwrap().unwrap(), 33);
    assert_eq!(calls.get(), 1, "sent exactly once");
}

#[test]
fn future_pull_whose_request_drops_the_ret_yields_dropped() {
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, future_pull(|ret: Ret<u32>| drop(ret)));
    rt.run();
    let e = joined(h).unwrap().expect_err("the Ret was dropped");
    assert!(is_dropped_without_cause(&e), "{e:?}");
}

#[test]
fn future_pull_or_drop_whose_request_drops_the_ret_ends_the_task_once() {
    let mut rt = Rt::new();
    let drops = Drops::new();
    let calls = Rc::new(Cell::new(0u32));
    let c2 = calls.clone();
    let pull = future_pull_or_drop(move |ret: Ret<u32>| {
        c2.set(c2.get() + 1);
        drop(ret);
    });
    let (h, after_await) = spawn_watched(&mut rt, &drops, pull);
    rt.run();
    assert_eq!(calls.get(), 1);
    assert_failed_once(h, &drops, &after_await);
}

#[test]
fn future_pull_or_drop_resolves_with_the_reply() {
    let mut rt = Rt::new();
    let h = spawn(
        &mut rt.s,
        future_pull_or_drop(|ret: Ret<String>| ret.ret("pong".to_string())),
    );
    rt.run();
    assert_eq!(joined(h).unwrap(), "pong");
}

// ---------------------------------------------------------------------------
// Drop-the-task futures outside a task

#[test]
fn drop_the_task_futures_failing_outside_a_task_panic_pointing_at_pass_the_error() {
    let (fut, ret) = ret_to_future_or_drop::<u32>();
    drop(ret);
    let err = catch_unwind(AssertUnwindSafe(|| fut.now_or_never())).unwrap_err();
    let msg = panic_text(&*err);
    assert!(msg.contains("pass-the-error"), "{msg}");
    assert!(msg.contains("outside a stakplane-async task"), "{msg}");

    let pull = future_pull_or_drop(|ret: Ret<u32>| drop(ret));
    let err = catch_unwind(AssertUnwindSafe(|| pull.now_or_never())).unwrap_err();
    assert!(panic_text(&*err).contains("pass-the-error"));

    let (mut stream, out) = fwd_to_stream_or_drop::<u32>(4, fwd_nop!());
    drop(out);
    let err = catch_unwind(AssertUnwindSafe(|| stream.next().now_or_never())).unwrap_err();
    assert!(panic_text(&*err).contains("pass-the-error"));
}

#[test]
fn pipes_outside_a_task_work_when_they_do_not_fail() {
    // A drop-the-task future that gets its value needs no task.
    let (fut, ret) = ret_to_future_or_drop::<u32>();
    ret.ret(5);
    assert_eq!(fut.now_or_never(), Some(5));
    // The pass-the-error form reports the failure anywhere.
    let (fut, ret) = ret_to_future::<u32>();
    drop(ret);
    match fut.now_or_never() {
        Some(Err(e)) => assert!(is_dropped_without_cause(&e), "{e:?}"),
        other => panic!("expected Some(Err(Dropped)), got {other:?}"),
    }
    let (fut, _ret) = ret_to_future::<u32>();
    assert!(fut.now_or_never().is_none(), "pending while the Ret lives");
}

#[test]
fn drop_the_task_failure_reaches_spawn_then_as_failed() {
    let mut rt = Rt::new();
    let got: Rc<RefCell<Vec<Result<u32, JoinError>>>> = Rc::default();
    let g2 = got.clone();
    let (fut, ret) = ret_to_future_or_drop::<u32>();
    let _abort = stakplane_async::spawner(&mut rt.s).spawn_then(fut, move |r| {
        g2.borrow_mut().push(r);
    });
    rt.run();
    assert!(got.borrow().is_empty());
    drop(ret);
    rt.run();
    let got = got.borrow();
    assert_eq!(got.len(), 1, "`then` is called exactly once");
    assert!(matches!(&got[0], Err(JoinError::Failed(e)) if is_dropped_without_cause(e)));
}

/// Rule 49: a drop-the-task pipe that fails in a poll that then completes
/// the task (a `select` with a ready branch) still ends it `Failed`, for a
/// `JoinHandle` and for `spawn_then`.
#[test]
fn drop_the_task_failure_wins_over_a_completion_in_the_same_poll() {
    async fn select_ready(fut: impl Future<Output = u32>) -> u32 {
        futures::pin_mut!(fut);
        match futures::future::select(fut, std::future::ready(5u32)).await {
            futures::future::Either::Left((v, _)) | futures::future::Either::Right((v, _)) => v,
        }
    }
    let mut rt = Rt::new();
    let (fut, ret) = ret_to_future_or_drop::<u32>();
    drop(ret); // the actor side failed before the task ran
    let h = spawn(&mut rt.s, select_ready(fut));
    let got: Rc<RefCell<Vec<Result<u32, JoinError>>>> = Rc::default();
    let g2 = got.clone();
    let (fut, ret) = ret_to_future_or_drop::<u32>();
    drop(ret);
    let _abort = stakplane_async::spawner(&mut rt.s)
        .spawn_then(select_ready(fut), move |r| g2.borrow_mut().push(r));
    rt.run();
    assert!(matches!(joined(h), Err(JoinError::Failed(e)) if is_dropped_without_cause(&e)));
    let got = got.borrow();
    assert!(matches!(&got[..], [Err(JoinError::Failed(e))] if is_dropped_without_cause(e)));
}

// ---------------------------------------------------------------------------
// ask! against a plain stakker actor

struct Calc {
    held: Option<Ret<u32>>,
    calls: Rc<Cell<u32>>,
}

impl Calc {
    fn init(_: CX![], calls: Rc<Cell<u32>>) -> Option<Self> {
        Some(Calc { held: None, calls })
    }

    fn double(&mut self, _: CX![], x: u32, ret: Ret<u32>) {
        self.calls.set(self.calls.get() + 1);
        ret.ret(2 * x);
    }

    /// Keeps the `Ret` and stops: stakker drops the state, and the `Ret`
    /// with it, unfired.
    fn hold_and_stop(&mut self, cx: CX![], ret: Ret<u32>) {
        self.calls.set(self.calls.get() + 1);
        self.held = Some(ret);
        stop!(cx);
    }

    fn quit(&mut self, cx: CX![]) {
        stop!(cx);
    }
}

#[test]
fn ask_resolves_with_the_actors_reply_and_sends_nothing_until_awaited() {
    let mut rt = Rt::new();
    let calls = Rc::new(Cell::new(0u32));
    let calc = actor!(rt.s, Calc::init(calls.clone()), ret_nop!());
    let unpolled = stakplane_async::ask!([calc], double(1));
    rt.run();
    assert_eq!(calls.get(), 0, "an ask that is not awaited sends nothing");
    drop(unpolled);
    let actor = calc.clone();
    let h = spawn(&mut rt.s, async move {
        let a = stakplane_async::ask!([actor], double(21)).await?;
        let b = stakplane_async::ask!([actor], double(a)).await?;
        Ok::<u32, ActorFail>(b)
    });
    rt.run();
    assert_eq!(joined(h).unwrap().unwrap(), 84);
    assert_eq!(calls.get(), 2);
}

#[test]
fn ask_of_an_actor_that_stops_before_replying_yields_dropped() {
    let mut rt = Rt::new();
    let calls = Rc::new(Cell::new(0u32));
    let calc = actor!(rt.s, Calc::init(calls.clone()), ret_nop!());
    let actor = calc.clone();
    let h = spawn(&mut rt.s, async move {
        stakplane_async::ask!([actor], hold_and_stop()).await
    });
    rt.run();
    assert_eq!(calls.get(), 1, "the method ran, then the actor stopped");
    let e = joined(h).unwrap().expect_err("no reply");
    assert!(is_dropped_without_cause(&e), "{e:?}");
    assert!(calc.is_zombie());
}

#[test]
fn ask_of_an_actor_that_is_already_dead_yields_dropped() {
    let mut rt = Rt::new();
    let calls = Rc::new(Cell::new(0u32));
    let calc = actor!(rt.s, Calc::init(calls.clone()), ret_nop!());
    call!([calc], quit());
    rt.run();
    assert!(calc.is_zombie());
    let actor = calc.clone();
    let h = spawn(&mut rt.s, async move {
        stakplane_async::ask!([actor], double(4)).await
    });
    rt.run();
    let e = joined(h).unwrap().expect_err("a dead actor cannot reply");
    assert!(is_dropped_without_cause(&e), "{e:?}");
    assert_eq!(calls.get(), 0, "the method never ran");
}

// ---------------------------------------------------------------------------
// Fwd → Stream: fwd_to_stream

#[test]
fn fwd_to_stream_yields_items_in_order_then_none_ends_it() {
    let mut rt = Rt::new();
    let (mut stream, out) = fwd_to_stream::<u32>(8, fwd_nop!());
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let h = spawn(&mut rt.s, async move {
        while let Some(x) = stream.next().await {
            l2.borrow_mut().push(ev(Some(x)));
        }
        // Ended stays ended.
        (stream.next().await.is_none(), stream.next().await.is_none())
    });
    rt.run();
    assert!(log.borrow().is_empty());
    for i in [5, 3, 9] {
        out.fwd(Some(i));
    }
    rt.run();
    assert_eq!(*log.borrow(), items([5, 3, 9]));
    assert!(!h.is_finished(), "no None yet");
    out.fwd(Some(1));
    out.fwd(None);
    out.fwd(Some(2)); // after the end: discarded
    rt.run();
    assert_eq!(*log.borrow(), items([5, 3, 9, 1]));
    assert_eq!(joined(h).unwrap(), (true, true));
}

#[test]
fn refill_request_is_sent_when_the_queue_runs_empty_and_not_again_while_outstanding() {
    let mut rt = Rt::new();
    let requests = Rc::new(Cell::new(0u32));
    let r2 = requests.clone();
    let (mut stream, out) = fwd_to_stream::<u32>(3, Fwd::new(move |()| r2.set(r2.get() + 1)));
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
    let w2 = waker.clone();
    let polls = Rc::new(Cell::new(0u32));
    let p2 = polls.clone();
    // A consumer that can be polled spuriously (by waking its waker).
    let h = spawn(
        &mut rt.s,
        poll_fn(move |cx| {
            p2.set(p2.get() + 1);
            *w2.borrow_mut() = Some(cx.waker().clone());
            loop {
                match stream.poll_next_unpin(cx) {
                    Poll::Ready(x) => {
                        let e = ev(x);
                        let end = e == Ev::End;
                        l2.borrow_mut().push(e);
                        if end {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        }),
    );
    let spurious_wake = || waker.borrow().as_ref().expect("polled").wake_by_ref();

    rt.run();
    assert_eq!(polls.get(), 1);
    assert_eq!(requests.get(), 1, "empty at the first poll: one request");

    spurious_wake();
    rt.run();
    assert_eq!(polls.get(), 2);
    assert_eq!(requests.get(), 1, "outstanding: not asked again");

    out.fwd(Some(1));
    out.fwd(Some(2));
    assert_eq!(requests.get(), 1, "items arriving do not request");
    rt.run();
    assert_eq!(*log.borrow(), items([1, 2]));
    assert_eq!(
        requests.get(),
        2,
        "taking the last queued item asks for the next batch, once"
    );

    spurious_wake();
    rt.run();
    spurious_wake();
    rt.run();
    assert_eq!(polls.get(), 5);
    assert_eq!(requests.get(), 2, "still outstanding: not asked again");

    out.fwd(Some(3));
    out.fwd(None);
    rt.run();
    assert_eq!(
        *log.borrow(),
        vec![Ev::Item(1), Ev::Item(2), Ev::Item(3), Ev::End]
    );
    assert_eq!(requests.get(), 2, "nothing is requested after the end");
    joined(h).unwrap();
}

#[test]
fn refill_requests_come_only_when_the_consumer_has_taken_everything_produced() {
    let mut rt = Rt::new();
    let taken = Rc::new(Cell::new(0u32));
    let (_batcher, mut stream, requests) = batched_stream(&mut rt.s, 4, (10, 4), taken.clone());
    let t2 = taken.clone();
    let h = spawn(&mut rt.s, async move {
        let mut got = Vec::new();
        loop {
            let e = ev(stream.next().await);
            let end = e == Ev::End;
            got.push(e);
            if end {
                return got;
            }
            t2.set(t2.get() + 1);
        }
    });
    rt.run();
    let mut expect = items(0..10);
    expect.push(Ev::End);
    assert_eq!(
        joined(h).unwrap(),
        expect,
        "in order, no overflow, then None"
    );
    // 10 items in batches of 4: asked at 0, 4 and 8 items, each time with
    // the queue empty (produced == taken); never after the end.
    assert_eq!(*requests.borrow(), vec![(0, 0), (4, 4), (8, 8)]);
}

#[test]
fn a_producer_that_refills_synchronously_inside_the_request_is_read_in_order() {
    let mut rt = Rt::new();
    let requests = Rc::new(Cell::new(0u32));
    let r2 = requests.clone();
    // The `more` closure pushes the next batch of 3 from inside the
    // consumer's poll, through the stream's own `Fwd` (kept in `slot`; it
    // is released after `None`, which breaks the reference cycle).
    let slot: Rc<RefCell<Option<Fwd<Option<u32>>>>> = Rc::default();
    let s2 = slot.clone();
    let next = Cell::new(0u32);
    let more = Fwd::new(move |()| {
        r2.set(r2.get() + 1);
        let out = s2.borrow_mut().take().expect("pushed after the end");
        for _ in 0..3 {
            if next.get() == 7 {
                break;
            }
            out.fwd(Some(next.get()));
            next.set(next.get() + 1);
        }
        if next.get() == 7 {
            out.fwd(None);
        } else {
            *s2.borrow_mut() = Some(out);
        }
    });
    let (stream, out) = fwd_to_stream::<u32>(3, more);
    *slot.borrow_mut() = Some(out);
    let (h, log) = drain(&mut rt, stream);
    rt.run();
    let mut expect = items(0..7);
    expect.push(Ev::End);
    assert_eq!(*log.borrow(), expect, "no overflow, no item lost");
    assert_eq!(requests.get(), 3, "asked at 0, 3 and 6 items");
    assert!(slot.borrow().is_none());
    joined(h).unwrap();
}

#[test]
fn every_fwd_clone_dropped_before_none_yields_the_queued_items_then_dropped_then_none() {
    let mut rt = Rt::new();
    let (stream, out) = fwd_to_stream::<u32>(8, fwd_nop!());
    let out2 = out.clone();
    let (h, log) = drain(&mut rt, stream);
    out.fwd(Some(1));
    out.fwd(Some(2));
    drop(out);
    rt.run();
    assert_eq!(*log.borrow(), items([1, 2]), "one clone is still alive");
    assert!(!h.is_finished());
    out2.fwd(Some(3));
    drop(out2);
    rt.run();
    assert_eq!(
        *log.borrow(),
        vec![Ev::Item(1), Ev::Item(2), Ev::Item(3), Ev::Dropped, Ev::End]
    );
    joined(h).unwrap();
}

#[test]
fn fwd_dropped_before_the_consumer_runs_still_delivers_the_queued_items_first() {
    let mut rt = Rt::new();
    let (stream, out) = fwd_to_stream::<u32>(4, fwd_nop!());
    out.fwd(Some(10));
    out.fwd(Some(20));
    drop(out);
    let (h, log) = drain(&mut rt, stream);
    rt.run();
    assert_eq!(
        *log.borrow(),
        vec![Ev::Item(10), Ev::Item(20), Ev::Dropped, Ev::End]
    );
    joined(h).unwrap();
}

#[test]
fn overflow_delivers_the_first_capacity_items_then_overflow_then_none_and_discards_the_rest() {
    let mut rt = Rt::new();
    let requests = Rc::new(Cell::new(0u32));
    let r2 = requests.clone();
    let (stream, out) = fwd_to_stream::<u32>(3, Fwd::new(move |()| r2.set(r2.get() + 1)));
    for i in 0..4 {
        out.fwd(Some(i)); // capacity + 1 items before the consumer runs
    }
    out.fwd(Some(99)); // after the overflow: discarded
    out.fwd(None); // discarded too: the stream already failed
    let (h, log) = drain(&mut rt, stream);
    rt.run();
    assert_eq!(
        *log.borrow(),
        vec![
            Ev::Item(0),
            Ev::Item(1),
            Ev::Item(2),
            Ev::Overflow(3),
            Ev::End
        ]
    );
    assert_eq!(requests.get(), 0, "a failed stream asks for nothing");
    out.fwd(Some(100));
    drop(out);
    rt.run();
    assert_eq!(log.borrow().len(), 5, "nothing after the end");
    joined(h).unwrap();
}

#[test]
fn overflow_error_names_the_capacity() {
    let e = ActorFail::Overflow { capacity: 3 };
    assert_eq!(
        e.to_string(),
        "stream producer overflowed the capacity of 3 items"
    );
    assert!(e.cause().is_none());
}

#[test]
fn capacity_zero_behaves_as_capacity_one() {
    let mut rt = Rt::new();
    // One item fits.
    let (stream, out) = fwd_to_stream::<u32>(0, fwd_nop!());
    out.fwd(Some(1));
    out.fwd(None);
    let (h, log) = drain(&mut rt, stream);
    rt.run();
    assert_eq!(*log.borrow(), vec![Ev::Item(1), Ev::End]);
    joined(h).unwrap();
    // The second one overflows a capacity of 1.
    let (stream, out) = fwd_to_stream::<u32>(0, fwd_nop!());
    out.fwd(Some(1));
    out.fwd(Some(2));
    let (h, log) = drain(&mut rt, stream);
    rt.run();
    assert_eq!(*log.borrow(), vec![Ev::Item(1), Ev::Overflow(1), Ev::End]);
    joined(h).unwrap();
}

// ---------------------------------------------------------------------------
// Fwd → Stream: fwd_to_stream_or_drop

#[test]
fn fwd_to_stream_or_drop_fwd_dropped_before_none_ends_the_task_with_failed() {
    let mut rt = Rt::new();
    let drops = Drops::new();
    let tok = drops.token();
    let after_loop = Rc::new(Cell::new(false));
    let a2 = after_loop.clone();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let (mut stream, out) = fwd_to_stream_or_drop::<u32>(4, fwd_nop!());
    let h = spawn(&mut rt.s, async move {
        let _tok = tok;
        while let Some(x) = stream.next().await {
            l2.borrow_mut().push(x);
        }
        a2.set(true);
    });
    out.fwd(Some(1));
    out.fwd(Some(2));
    rt.run();
    assert_eq!(*log.borrow(), vec![1, 2]);
    assert!(!h.is_finished());
    out.fwd(Some(3));
    drop(out);
    rt.run();
    assert_eq!(*log.borrow(), vec![1, 2, 3], "queued items come first");
    assert!(matches!(joined(h), Err(JoinError::Failed(ref e)) if is_dropped_without_cause(e)));
    assert!(!after_loop.get(), "the loop never saw an end");
    assert_eq!(drops.count(), 1);
}

#[test]
fn fwd_to_stream_or_drop_normal_end_gives_none() {
    let mut rt = Rt::new();
    let (stream, out) = fwd_to_stream_or_drop::<u32>(4, fwd_nop!());
    let h = spawn(&mut rt.s, stream.collect::<Vec<u32>>());
    out.fwd(Some(1));
    out.fwd(Some(2));
    out.fwd(None);
    drop(out); // after None: not a failure
    rt.run();
    assert_eq!(joined(h).unwrap(), vec![1, 2]);
}

#[test]
fn fwd_to_stream_or_drop_overflow_ends_the_task_with_failed_overflow() {
    let mut rt = Rt::new();
    let (stream, out) = fwd_to_stream_or_drop::<u32>(2, fwd_nop!());
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let h = spawn(
        &mut rt.s,
        stream.for_each(move |x| {
            l2.borrow_mut().push(x);
            futures::future::ready(())
        }),
    );
    for i in 0..3 {
        out.fwd(Some(i));
    }
    rt.run();
    assert_eq!(*log.borrow(), vec![0, 1]);
    assert!(matches!(
        joined(h),
        Err(JoinError::Failed(ActorFail::Overflow { capacity: 2 }))
    ));
}

// ---------------------------------------------------------------------------
// Stream → Fwd: stream_to_fwd

#[test]
fn stream_to_fwd_forwards_every_item_as_some_then_none() {
    let mut rt = Rt::new();
    let log: Rc<RefCell<Vec<Option<u32>>>> = Rc::default();
    let l2 = log.clone();
    let h = stream_to_fwd(
        &mut rt.s,
        futures::stream::iter([4u32, 5, 6]),
        Fwd::new(move |m| l2.borrow_mut().push(m)),
    );
    assert!(log.borrow().is_empty(), "nothing runs inside the call");
    rt.run();
    assert_eq!(*log.borrow(), vec![Some(4), Some(5), Some(6), None]);
    joined(h).unwrap();
}

#[test]
fn stream_to_fwd_forwards_items_as_a_pending_stream_yields_them() {
    let mut rt = Rt::new();
    let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
    let log: Rc<RefCell<Vec<Option<u32>>>> = Rc::default();
    let l2 = log.clone();
    let h = stream_to_fwd(&mut rt.s, rx, Fwd::new(move |m| l2.borrow_mut().push(m)));
    rt.run();
    assert!(log.borrow().is_empty());
    tx.unbounded_send(1).unwrap();
    rt.run();
    assert_eq!(*log.borrow(), vec![Some(1)]);
    tx.unbounded_send(2).unwrap();
    drop(tx);
    rt.run();
    assert_eq!(*log.borrow(), vec![Some(1), Some(2), None]);
    joined(h).unwrap();
}

#[test]
fn aborting_stream_to_fwd_drops_the_fwd_without_the_final_none() {
    let mut rt = Rt::new();
    let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
    let drops = Drops::new();
    let tok = drops.token();
    let log: Rc<RefCell<Vec<Option<u32>>>> = Rc::default();
    let l2 = log.clone();
    let fwd = Fwd::new(move |m| {
        let _ = &tok;
        l2.borrow_mut().push(m);
    });
    let h = stream_to_fwd(&mut rt.s, rx, fwd);
    tx.unbounded_send(1).unwrap();
    rt.run();
    assert_eq!(*log.borrow(), vec![Some(1)]);
    assert_eq!(drops.count(), 0);
    h.abort();
    assert_eq!(drops.count(), 1, "the Fwd's closure was dropped");
    assert!(
        tx.unbounded_send(2).is_err(),
        "the stream went with the task"
    );
    rt.run();
    assert_eq!(*log.borrow(), vec![Some(1)], "no final None");
    assert!(matches!(joined(h), Err(JoinError::Aborted)));
}

#[test]
fn stream_to_fwd_into_fwd_to_stream_round_trips_and_an_abort_reads_as_dropped() {
    let mut rt = Rt::new();
    // Normal end: the items, then None.
    let (stream, out) = fwd_to_stream::<u32>(8, fwd_nop!());
    let fwd_task = stream_to_fwd(&mut rt.s, futures::stream::iter(1..=3u32), out);
    let (h, log) = drain(&mut rt, stream);
    rt.run();
    assert_eq!(
        *log.borrow(),
        vec![Ev::Item(1), Ev::Item(2), Ev::Item(3), Ev::End]
    );
    joined(fwd_task).unwrap();
    joined(h).unwrap();

    // Aborted forwarder: the consumer sees its Fwd dropped.
    let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
    let (stream, out) = fwd_to_stream::<u32>(8, fwd_nop!());
    let fwd_task = stream_to_fwd(&mut rt.s, rx, out);
    let (h, log) = drain(&mut rt, stream);
    tx.unbounded_send(7).unwrap();
    rt.run();
    assert_eq!(*log.borrow(), vec![Ev::Item(7)]);
    fwd_task.abort();
    rt.run();
    assert_eq!(*log.borrow(), vec![Ev::Item(7), Ev::Dropped, Ev::End]);
    joined(h).unwrap();
}

// ---------------------------------------------------------------------------
// Rule 51: a `Debug` sink may drop the last `Fwd`

/// A `fmt::Write` sink that drops the producer `Fwd` it owns once it has
/// been written to twice (after the struct's name).
struct DropsFwdOnWrite(Option<Fwd<Option<u32>>>, u32);

impl std::fmt::Write for DropsFwdOnWrite {
    fn write_str(&mut self, _: &str) -> std::fmt::Result {
        self.1 += 1;
        if self.1 == 2 {
            self.0 = None;
        }
        Ok(())
    }
}

#[test]
fn a_debug_sink_that_drops_the_last_fwd_still_has_the_drop_reported() {
    use std::fmt::Write as _;
    let (mut stream, fwd) = fwd_to_stream::<u32>(4, fwd_nop!());
    fwd.fwd(Some(7));
    let mut sink = DropsFwdOnWrite(Some(fwd), 0); // the only Fwd
    write!(sink, "{stream:?}").unwrap();
    assert!(sink.0.is_none(), "the last Fwd was dropped, without None");
    let mut got = Vec::new();
    for _ in 0..3 {
        match stream.next().now_or_never() {
            Some(x) => got.push(ev(x)),
            None => break,
        }
    }
    // Rule 51: the queued items, then one Err(Dropped), then the end.
    assert_eq!(got, vec![Ev::Item(7), Ev::Dropped, Ev::End]);
}

// ---------------------------------------------------------------------------
// Rules 48 and 51: a waker replaced by a later poll is dropped unborrowed

thread_local! {
    /// The `Ret` a [`DropsOnDrop`] waker drops when it is dropped.
    static HELD_RET: RefCell<Option<Ret<u32>>> = const { RefCell::new(None) };
    /// The `Fwd` a [`DropsOnDrop`] waker drops when it is dropped.
    static HELD_FWD: RefCell<Option<Fwd<Option<u32>>>> = const { RefCell::new(None) };
}

/// A waker whose `Drop` drops the `Ret` and the `Fwd` held above (a task
/// dropped with its last waker, which held them). Wakers must be `Send`;
/// this one only ever runs on the test's thread.
struct DropsOnDrop;

impl std::task::Wake for DropsOnDrop {
    fn wake(self: std::sync::Arc<Self>) {}
}

impl Drop for DropsOnDrop {
    fn drop(&mut self) {
        drop(HELD_RET.with(|r| r.borrow_mut().take()));
        drop(HELD_FWD.with(|f| f.borrow_mut().take()));
    }
}

/// Polls `f` once with a [`DropsOnDrop`] waker (the future keeps the only
/// clone), then with a plain one, which replaces it.
fn poll_with_a_dropping_waker_then_another<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    use std::task::Context;
    {
        let w1 = Waker::from(std::sync::Arc::new(DropsOnDrop));
        assert!(f.poll_unpin(&mut Context::from_waker(&w1)).is_pending());
    }
    f.poll_unpin(&mut Context::from_waker(futures::task::noop_waker_ref()))
}

#[test]
fn a_replaced_waker_whose_drop_drops_the_ret_has_the_drop_reported() {
    let (mut fut, ret) = ret_to_future::<u32>();
    HELD_RET.with(|r| *r.borrow_mut() = Some(ret));
    let _ = poll_with_a_dropping_waker_then_another(&mut fut);
    assert!(
        HELD_RET.with(|r| r.borrow().is_none()),
        "the Ret was dropped"
    );
    let got = fut.now_or_never().expect("resolved");
    assert!(matches!(got, Err(ActorFail::Dropped { .. })), "{got:?}");
}

#[test]
fn a_replaced_waker_whose_drop_drops_the_last_fwd_has_the_drop_reported() {
    let (mut stream, fwd) = fwd_to_stream::<u32>(4, fwd_nop!());
    HELD_FWD.with(|f| *f.borrow_mut() = Some(fwd));
    let mut next = stream.next();
    let _ = poll_with_a_dropping_waker_then_another(&mut next);
    drop(next);
    assert!(
        HELD_FWD.with(|f| f.borrow().is_none()),
        "the Fwd was dropped"
    );
    let got: Vec<Ev> = (0..2)
        .map(|_| ev(stream.next().now_or_never().expect("ready")))
        .collect();
    assert_eq!(got, vec![Ev::Dropped, Ev::End]);
}
