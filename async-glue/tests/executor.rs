//! The executor: spawn, join, wake, abort, panics.
mod common;

use common::{joined, Drops, Rt};
use stakplane_async::{spawn, JoinError, JoinHandle};
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Spawns a task that counts its polls (the count, from 1, is given to
/// `poll`) and answers each as `poll` says: its handle and the count.
fn counted<T: 'static>(
    rt: &mut Rt,
    mut poll: impl FnMut(u32, &mut Context<'_>) -> Poll<T> + 'static,
) -> (JoinHandle<T>, Rc<Cell<u32>>) {
    let polls = Rc::new(Cell::new(0));
    let p2 = polls.clone();
    let h = spawn(
        &mut rt.s,
        poll_fn(move |cx| {
            p2.set(p2.get() + 1);
            poll(p2.get(), cx)
        }),
    );
    (h, polls)
}

#[test]
fn spawned_task_runs_from_the_queue_and_joins() {
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, async { 41 + 1 });
    assert!(!h.is_finished(), "nothing runs inside spawn");
    rt.run();
    assert!(h.is_finished());
    assert_eq!(joined(h).unwrap(), 42);
}

/// The task never finishes and counts its polls, so every poll a wake
/// queues is seen (a task that ends would hide extra polls: they would
/// find it finished and do nothing).
#[test]
fn a_wake_queues_at_most_one_poll() {
    let mut rt = Rt::new();
    let polls = Rc::new(Cell::new(0));
    let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
    // How many times the next poll wakes its own task.
    let self_wakes = Rc::new(Cell::new(0));
    let h = spawn(&mut rt.s, {
        let (polls, waker, self_wakes) = (polls.clone(), waker.clone(), self_wakes.clone());
        poll_fn(move |cx| {
            polls.set(polls.get() + 1);
            *waker.borrow_mut() = Some(cx.waker().clone());
            for i in 0..self_wakes.take() {
                if i % 2 == 0 {
                    cx.waker().wake_by_ref();
                } else {
                    let owned = cx.waker().clone();
                    owned.wake(); // by value, as a stored waker would be
                }
            }
            Poll::<()>::Pending
        })
    });
    let wake = || waker.borrow().as_ref().expect("polled once").wake_by_ref();
    rt.run();
    assert_eq!(polls.get(), 1, "the first poll, from the queue");
    rt.run();
    assert_eq!(polls.get(), 1, "an idle task is not polled");

    wake();
    assert_eq!(polls.get(), 1, "a wake queues the poll, it does not poll");
    rt.run();
    assert_eq!(polls.get(), 2, "waking an idle task queues one poll");

    wake();
    wake();
    wake();
    rt.run();
    assert_eq!(polls.get(), 3, "wakes while it is queued add nothing");

    self_wakes.set(3);
    wake();
    rt.run();
    assert_eq!(
        polls.get(),
        5,
        "three wakes during a poll queue exactly one more poll"
    );
    rt.run();
    assert_eq!(polls.get(), 5, "and nothing after it");
    assert!(!h.is_finished());
}

#[test]
fn task_panic_is_caught_and_reported() {
    common::quiet_test_panics();
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, async { panic!("test-panic boom in poll") });
    let ok = spawn(&mut rt.s, async { 5 });
    rt.run();
    match joined(h) {
        Err(JoinError::Panicked(m)) => assert_eq!(&*m, "test-panic boom in poll"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(joined(ok).unwrap(), 5);
}

/// Rule 41 with a payload whose own `Drop` panics: the second panic is
/// contained too; the task ends, the others and the runtime go on.
#[test]
fn task_panic_is_caught_and_reported_even_when_its_payload_panics_on_drop() {
    common::quiet_test_panics();
    let mut rt = Rt::new();
    let spawner = stakplane_async::spawner(&mut rt.s);
    let h = spawn(&mut rt.s, async {
        stakplane_testkit::panic_with_a_payload_that_panics_on_drop()
    });
    let ok = spawn(&mut rt.s, async { 5 });
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run())).is_err();
    assert!(!unwound, "the payload's panic unwound out of the runtime");
    assert!(h.is_finished());
    match joined(h) {
        Err(JoinError::Panicked(m)) => assert_eq!(&*m, "(panic payload is not a string)"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(joined(ok).unwrap(), 5);
    assert_eq!(spawner.running_tasks(), 0);
}

#[test]
fn abort_while_awaiting_drops_the_future_once() {
    let mut rt = Rt::new();
    let drops = Drops::new();
    let tok = drops.token();
    let (fut, ret) = stakplane_async::ret_to_future::<u32>();
    let h = spawn(&mut rt.s, async move {
        let _tok = tok;
        fut.await
    });
    rt.run();
    assert!(!h.is_finished());
    h.abort();
    assert_eq!(drops.count(), 1, "abort drops the future at once");
    assert!(h.is_finished());
    ret.ret(1); // the reply arrives after the abort: nobody is polled
    rt.run();
    assert_eq!(drops.count(), 1);
    assert!(matches!(joined(h), Err(JoinError::Aborted)));
}

#[test]
fn abort_from_inside_its_own_poll_ends_after_the_poll() {
    let mut rt = Rt::new();
    let own: Rc<Cell<Option<JoinHandle<u8>>>> = Rc::default();
    let own2 = own.clone();
    let drops = Drops::new();
    let tok = drops.token();
    let (h, polls) = counted(&mut rt, move |_, cx| {
        let _ = &tok;
        if let Some(me) = own2.take() {
            me.abort();
            assert!(!me.is_finished(), "still running until this poll returns");
            drop(me); // detaches: the aborted task then frees its slot
        }
        cx.waker().wake_by_ref(); // a wake during the poll must not re-poll an aborted task
        Poll::<u8>::Pending
    });
    let spy = stakplane_async::spawner(&mut rt.s);
    own.set(Some(h));
    rt.run();
    assert_eq!(
        polls.get(),
        1,
        "aborted after its first poll, never polled again"
    );
    assert_eq!(drops.count(), 1, "the future was dropped once");
    assert_eq!(spy.live_tasks(), 0, "detached and ended: the slot is free");
    assert!(own.take().is_none());
}

/// Rule 42: a task that aborts itself and then completes in the same poll
/// ends `Aborted` (the first end wins), for a `JoinHandle` and for
/// `spawn_then`; its output is dropped.
#[test]
fn abort_from_inside_its_own_poll_wins_over_a_completion_in_that_poll() {
    type Own = Rc<RefCell<Option<stakplane_async::AbortHandle>>>;
    fn abort_own(own: &Own) {
        if let Some(me) = own.borrow_mut().take() {
            me.abort();
        }
    }
    let mut rt = Rt::new();
    let drops = Drops::new();
    let (own, tok): (Own, _) = (Rc::default(), drops.token());
    let own2 = own.clone();
    let h = spawn(&mut rt.s, async move {
        abort_own(&own2);
        tok // the output
    });
    *own.borrow_mut() = Some(h.abort_handle());
    let then: Rc<RefCell<Vec<Result<(), JoinError>>>> = Rc::default();
    let (then2, own_t): (_, Own) = (then.clone(), Rc::default());
    let own_t2 = own_t.clone();
    let t = stakplane_async::spawner(&mut rt.s)
        .spawn_then(async move { abort_own(&own_t2) }, move |r| {
            then2.borrow_mut().push(r)
        });
    *own_t.borrow_mut() = Some(t);
    rt.run();
    assert!(matches!(joined(h), Err(JoinError::Aborted)));
    assert_eq!(drops.count(), 1, "the output was dropped");
    assert!(matches!(&then.borrow()[..], [Err(JoinError::Aborted)]));
}

#[test]
fn dropped_join_handle_detaches_and_the_task_still_runs() {
    let mut rt = Rt::new();
    let ran = Rc::new(Cell::new(false));
    let r2 = ran.clone();
    let drops = Drops::new();
    let tok = drops.token();
    let spawner = stakplane_async::spawner(&mut rt.s);
    drop(spawner.spawn(async move {
        let _tok = tok;
        stakplane_async::sleep(std::time::Duration::from_secs(1)).await;
        r2.set(true);
    }));
    rt.run();
    assert!(!ran.get());
    assert_eq!(spawner.live_tasks(), 1);
    rt.advance(std::time::Duration::from_secs(1));
    assert!(ran.get());
    assert_eq!(drops.count(), 1);
    assert_eq!(
        spawner.live_tasks(),
        0,
        "a detached task frees its slot when it ends"
    );
}

#[test]
fn runtime_dropped_with_live_tasks_drops_each_task_exactly_once() {
    let drops = Drops::new();
    let outside: Rc<Cell<Option<JoinHandle<u32>>>> = Rc::default();
    let mut rets = Vec::new(); // never fired while the runtime lives
    {
        let mut rt = Rt::new();
        let mut handles = Vec::new();
        for i in 0..50u32 {
            let tok = drops.token();
            let (fut, ret) = stakplane_async::ret_to_future::<u32>();
            rets.push(ret);
            handles.push(spawn(&mut rt.s, async move {
                let _tok = tok;
                fut.await.unwrap_or(0) + i
            }));
        }
        // Tasks holding other tasks' handles, and a task that spawns from
        // its destructor (refused: the runtime is going).
        let tok = drops.token();
        let first = handles.remove(0);
        handles.push(spawn(&mut rt.s, async move {
            let _tok = tok;
            first.await.unwrap_or(0)
        }));
        struct SpawnOnDrop;
        impl Drop for SpawnOnDrop {
            fn drop(&mut self) {
                assert!(matches!(
                    stakplane_async::try_spawn_local(async {}),
                    Err(stakplane_async::SpawnError::NoRuntime)
                ));
            }
        }
        let tok = drops.token();
        handles.push(spawn(&mut rt.s, async move {
            let _tok = tok;
            let _s = SpawnOnDrop;
            std::future::pending::<u32>().await
        }));
        rt.run();
        assert_eq!(drops.count(), 0);
        outside.set(handles.pop());
        drop(handles);
        assert_eq!(drops.count(), 0, "detaching does not drop");
    }
    assert_eq!(drops.count(), 52, "every task dropped exactly once");
    drop(rets); // their pipes' futures are gone: nothing to wake
    let h = outside.take().unwrap();
    assert!(h.is_finished());
    assert!(matches!(joined(h), Err(JoinError::RuntimeGone)));
}

#[test]
fn explicit_shutdown_drops_tasks_and_refuses_new_ones() {
    let mut rt = Rt::new();
    let drops = Drops::new();
    let tok = drops.token();
    let h = spawn(&mut rt.s, async move {
        let _tok = tok;
        std::future::pending::<()>().await
    });
    rt.run();
    stakplane_async::shutdown(&mut rt.s);
    assert_eq!(drops.count(), 1);
    assert!(matches!(joined(h), Err(JoinError::RuntimeGone)));
    let tok = drops.token();
    let late = spawn(&mut rt.s, async move {
        let _tok = tok;
    });
    assert_eq!(
        drops.count(),
        2,
        "a future spawned after shutdown is dropped at once"
    );
    assert!(matches!(joined(late), Err(JoinError::RuntimeGone)));
    rt.run();
}

#[test]
fn stale_wakes_after_slot_reuse_are_ignored() {
    let mut rt = Rt::new();
    let old_waker: Rc<Cell<Option<std::task::Waker>>> = Rc::default();
    let w2 = old_waker.clone();
    let h = spawn(
        &mut rt.s,
        poll_fn(move |cx| {
            w2.set(Some(cx.waker().clone()));
            Poll::Ready(())
        }),
    );
    rt.run();
    joined(h).unwrap();
    // The new task takes the freed slot (same index, next generation).
    let (h, polls) = counted(&mut rt, |_, _| Poll::<()>::Pending);
    rt.run();
    assert_eq!(polls.get(), 1);
    let stale = old_waker.take().unwrap();
    stale.wake_by_ref();
    stale.wake();
    rt.run();
    assert_eq!(
        polls.get(),
        1,
        "a stale waker must not poll the slot's new task"
    );
    drop(h);
}

#[test]
fn wake_from_another_thread_without_a_poll_waker_waits_for_the_path_and_never_panics() {
    let mut rt = Rt::new();
    let slot: Rc<Cell<Option<std::task::Waker>>> = Rc::default();
    let s2 = slot.clone();
    let (_h, polls) = counted(&mut rt, move |_, cx| {
        s2.set(Some(cx.waker().clone()));
        Poll::<()>::Pending
    });
    rt.run();
    let w = slot.take().unwrap();
    let w2 = w.clone();
    // The waking thread is not punished for the runtime's set-up (it may
    // be any thread, and the waker a stale one): twice, no panic.
    std::thread::spawn(move || {
        w.wake();
        w2.wake();
    })
    .join()
    .expect("a wake never panics the waking thread");
    rt.run();
    assert_eq!(polls.get(), 1, "no path yet: the wake waits");
    // The wake was queued, not lost: installing a path delivers it, once.
    let sig = stakplane_async::WakeSignal::install(&mut rt.s);
    rt.run();
    assert_eq!(
        polls.get(),
        2,
        "the queued wake is delivered once a path exists"
    );
    drop(sig);
}

#[test]
fn wake_from_another_thread_polls_the_task_again() {
    let mut rt = Rt::new();
    let sig = stakplane_async::WakeSignal::install(&mut rt.s);
    let slot: Rc<Cell<Option<std::task::Waker>>> = Rc::default();
    let s2 = slot.clone();
    let (h, polls) = counted(&mut rt, move |n, cx| {
        if n == 1 {
            s2.set(Some(cx.waker().clone()));
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    });
    rt.run();
    let w = slot.take().unwrap();
    std::thread::spawn(move || w.wake()).join().unwrap();
    // Bounded: the wake was posted before we wait, so this returns at once.
    assert!(sig.wait(&mut rt.s, std::time::Duration::from_secs(10)));
    rt.run();
    assert_eq!(polls.get(), 2);
    joined(h).unwrap();
}

#[test]
fn spawn_ret_fires_the_ret_or_drops_it_on_panic() {
    common::quiet_test_panics();
    let mut rt = Rt::new();
    let got: Rc<Cell<Option<Option<u32>>>> = Rc::default();
    let g2 = got.clone();
    stakplane_async::spawn_ret(
        &mut rt.s,
        async { 9 },
        stakker::Ret::new(move |v| g2.set(Some(v))),
    );
    rt.run();
    assert_eq!(got.take(), Some(Some(9)));
    let g2 = got.clone();
    stakplane_async::spawn_ret(
        &mut rt.s,
        async {
            if true {
                panic!("test-panic in spawn_ret");
            }
            1u32
        },
        stakker::Ret::new(move |v| g2.set(Some(v))),
    );
    rt.run();
    assert_eq!(
        got.take(),
        Some(None),
        "a failed task drops its Ret unfired"
    );
}

#[test]
fn task_set_aborts_its_tasks_when_the_owning_actor_stops() {
    use stakker::{actor, call, ret_nop, stop, CX};
    struct Owner {
        tasks: stakplane_async::TaskSet,
    }
    impl Owner {
        fn init(cx: CX![]) -> Option<Self> {
            let mut tasks = stakplane_async::TaskSet::new();
            for _ in 0..3 {
                drop(tasks.spawn(cx, std::future::pending::<()>()));
            }
            Some(Owner { tasks })
        }
        fn count(&mut self, _: CX![], ret: stakker::Ret<usize>) {
            ret.ret(self.tasks.len());
        }
        fn quit(&mut self, cx: CX![]) {
            stop!(cx);
        }
    }
    let mut rt = Rt::new();
    let owner = actor!(rt.s, Owner::init(), ret_nop!());
    rt.run();
    let n: Rc<Cell<usize>> = Rc::default();
    let n2 = n.clone();
    call!(
        [owner],
        count(stakker::Ret::new(
            move |v: Option<usize>| n2.set(v.unwrap_or(0))
        ))
    );
    rt.run();
    assert_eq!(n.get(), 3);
    let spawner = stakplane_async::spawner(&mut rt.s);
    assert_eq!(spawner.live_tasks(), 3);
    call!([owner], quit());
    rt.run();
    assert_eq!(
        spawner.live_tasks(),
        0,
        "the actor's tasks were aborted with it"
    );
}

/// Rule 47 with two runtimes on one thread: each task runs on the runtime
/// behind the `core` it was spawned with, and the set's drop aborts the
/// tasks on both.
#[test]
fn task_set_aborts_its_tasks_when_dropped_on_every_runtime_it_spawned_on() {
    let mut a = Rt::new();
    let mut b = Rt::new();
    let (sa, sb) = (
        stakplane_async::spawner(&mut a.s),
        stakplane_async::spawner(&mut b.s),
    );
    let mut set = stakplane_async::TaskSet::new();
    let ran: Rc<Cell<u32>> = Rc::default();
    let (r1, r2) = (ran.clone(), ran.clone());
    drop(set.spawn(&mut a.s, async move {
        r1.set(r1.get() + 1);
        std::future::pending::<()>().await
    }));
    drop(set.spawn(&mut b.s, async move {
        r2.set(r2.get() + 10);
        std::future::pending::<()>().await
    }));
    b.run();
    assert_eq!(ran.get(), 10, "the task given b's core ran on b");
    a.run();
    assert_eq!(ran.get(), 11);
    assert_eq!((sa.live_tasks(), sb.live_tasks(), set.len()), (1, 1, 2));
    drop(set);
    assert_eq!((sa.live_tasks(), sb.live_tasks()), (0, 0));
}

#[test]
fn a_stale_abort_handle_never_reaches_the_next_task_in_its_slot() {
    let mut rt = Rt::new();
    let sp = stakplane_async::spawner(&mut rt.s);
    let stale = sp.spawn_then(async {}, |_| {});
    rt.run();
    assert!(stale.is_finished());
    // The next task takes the freed slot.
    let victim = sp.spawn(std::future::pending::<()>());
    rt.run();
    stale.abort();
    assert!(!stale.is_finished() || !victim.is_finished());
    assert!(
        !victim.is_finished(),
        "a stale handle must not abort a later task"
    );
    victim.abort();
    assert!(matches!(joined(victim), Err(JoinError::Aborted)));
}

thread_local! {
    static TLS_RT: std::cell::RefCell<Option<stakker::Stakker>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_runtime_dropped_at_thread_exit_does_not_panic_on_its_own_wakes() {
    // The Stakker lives in a thread-local and is dropped during thread
    // exit, after the executor table; a task waiting on another task's
    // handle is woken from that teardown. That wake must be ignored, not
    // mistaken for a foreign-thread wake (which would panic, and abort the
    // process inside a TLS destructor).
    let result = std::thread::spawn(|| {
        let now = std::time::Instant::now();
        let mut s = stakker::Stakker::new(now);
        let inner = spawn(&mut s, std::future::pending::<u8>());
        drop(spawn(&mut s, async move { inner.await.ok() }));
        s.run(now, false);
        TLS_RT.with(|t| *t.borrow_mut() = Some(s));
        7
    })
    .join();
    assert_eq!(result.ok(), Some(7));
}
