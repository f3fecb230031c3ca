//! Timers on stakker's clock: `sleep`, `sleep_until`, `timeout`,
//! `interval`.
//!
//! Everything runs on virtual time (`Rt::advance`), never sleeping. Exact
//! timing assertions use whole seconds: stakker keeps timer expiries in
//! steps of 2^14 ns (about 16 µs), rounded up, so whole seconds are exact
//! while most fractions fire a little late.
mod common;

use common::{joined, Drops, Rt};
use futures::{FutureExt, StreamExt};
use stakplane_async::{
    interval, sleep, sleep_until, spawn, timeout, Elapsed, JoinError, JoinHandle,
};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs the clock to one second before `h` is due (`due` from now) and
/// checks it still waits, then the last second: `h` finishes exactly at
/// its deadline. Returns its output.
#[track_caller]
fn finishes_exactly_after<T: 'static>(rt: &mut Rt, h: JoinHandle<T>, due: Duration) -> T {
    rt.advance(due - secs(1));
    assert!(!h.is_finished(), "not before its deadline");
    rt.advance(secs(1));
    assert!(h.is_finished(), "at its deadline");
    joined(h).unwrap()
}

/// `fut`, counting its polls in `polls`.
fn counted<F: Future + Unpin>(polls: Rc<Cell<u32>>, mut fut: F) -> impl Future<Output = F::Output> {
    poll_fn(move |cx| {
        polls.set(polls.get() + 1);
        fut.poll_unpin(cx)
    })
}

/// The text of a caught panic.
fn panic_text(err: &(dyn Any + Send)) -> String {
    err.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// sleep / sleep_until

#[test]
fn sleeps_complete_in_deadline_order_exactly_at_their_deadlines() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let log: Rc<RefCell<Vec<u64>>> = Rc::default();
    let tasks: Vec<(u64, _)> = [3u64, 1, 2]
        .into_iter()
        .map(|d| {
            let l2 = log.clone();
            let h = spawn(&mut rt.s, async move {
                sleep(secs(d)).await;
                l2.borrow_mut().push(d);
            });
            (d, h)
        })
        .collect();
    rt.run();
    assert_eq!(rt.s.next_expiry(), Some(t0 + secs(1)));
    for t in 1..=3u64 {
        // One millisecond before second `t`, only the earlier sleeps are
        // done; at second `t` exactly, the sleep of `t` seconds is too.
        rt.advance(secs(1) - ms(1));
        for (d, h) in &tasks {
            assert_eq!(h.is_finished(), *d < t, "sleep of {d} s at {t} s - 1 ms");
        }
        rt.advance(ms(1));
        assert_eq!(rt.now, t0 + secs(t));
        for (d, h) in &tasks {
            assert_eq!(h.is_finished(), *d <= t, "sleep of {d} s at {t} s");
        }
        assert_eq!(*log.borrow(), (1..=t).collect::<Vec<_>>());
        let next = (t < 3).then(|| t0 + secs(t + 1));
        assert_eq!(rt.s.next_expiry(), next);
    }
    for (_, h) in tasks {
        joined(h).unwrap();
    }
}

#[test]
fn sleep_of_zero_completes_at_its_first_poll_without_a_timer() {
    let mut rt = Rt::new();
    let polls = Rc::new(Cell::new(0u32));
    let h = spawn(&mut rt.s, counted(polls.clone(), sleep(Duration::ZERO)));
    rt.run();
    assert_eq!(polls.get(), 1);
    assert!(h.is_finished());
    assert_eq!(rt.s.next_expiry(), None, "no timer was armed");
    joined(h).unwrap();
}

#[test]
fn sleep_until_a_past_or_present_instant_completes_at_its_first_poll() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    rt.advance(secs(5));
    let polls = Rc::new(Cell::new(0u32));
    let past = spawn(&mut rt.s, counted(polls.clone(), sleep_until(t0 + secs(1))));
    let now = spawn(&mut rt.s, counted(polls.clone(), sleep_until(rt.now)));
    let before_start = spawn(
        &mut rt.s,
        counted(polls.clone(), sleep_until(t0 - secs(10))),
    );
    rt.run();
    assert_eq!(polls.get(), 3, "one poll each");
    assert_eq!(rt.s.next_expiry(), None);
    joined(past).unwrap();
    joined(now).unwrap();
    joined(before_start).unwrap();
}

#[test]
fn sleep_counts_from_its_first_poll_not_from_its_creation() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let mut s = sleep(secs(2));
    assert_eq!(s.deadline(), None, "unknown before the first poll");
    assert!(!s.is_elapsed());
    rt.advance(secs(5));
    let h = spawn(&mut rt.s, async move {
        (&mut s).await;
        (s.deadline(), s.is_elapsed())
    });
    assert_eq!(
        finishes_exactly_after(&mut rt, h, secs(2)),
        (Some(t0 + secs(7)), true)
    );
}

#[test]
fn reset_moves_the_deadline_and_deletes_the_old_timer() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let h = spawn(&mut rt.s, async move {
        let mut s = sleep(secs(10));
        // Arm it, then move it earlier.
        let _ = poll_fn(|cx| Poll::Ready(Pin::new(&mut s).poll(cx))).await;
        s.reset(t0 + secs(2));
        assert_eq!(s.deadline(), Some(t0 + secs(2)));
        s.await;
    });
    rt.run();
    assert_eq!(rt.s.next_expiry(), Some(t0 + secs(2)), "only the new timer");
    finishes_exactly_after(&mut rt, h, secs(2));
    assert_eq!(rt.s.next_expiry(), None);
}

#[test]
fn sleep_beyond_stakkers_fixed_timer_range_fires_exactly_at_its_deadline() {
    // stakker holds expiries more than 0x7FFF s ahead as variable timers.
    let mut rt = Rt::new();
    let d = 36_000; // ten hours
    let h = spawn(&mut rt.s, sleep(secs(d)));
    rt.run();
    finishes_exactly_after(&mut rt, h, secs(d));
    assert_eq!(rt.s.next_expiry(), None);
}

// ---------------------------------------------------------------------------
// Dropping an armed sleep

#[test]
fn dropping_an_armed_sleep_deletes_its_stakker_timer() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let long = spawn(&mut rt.s, sleep(secs(3600)));
    let short = spawn(&mut rt.s, sleep(secs(60)));
    rt.run();
    assert_eq!(rt.s.next_expiry(), Some(t0 + secs(60)));
    short.abort();
    rt.run();
    assert_eq!(
        rt.s.next_expiry(),
        Some(t0 + secs(3600)),
        "the aborted sleep's timer is gone, the other stays"
    );
    long.abort();
    rt.run();
    assert_eq!(rt.s.next_expiry(), None);
    assert!(matches!(joined(long), Err(JoinError::Aborted)));
    assert!(matches!(joined(short), Err(JoinError::Aborted)));
}

#[test]
fn shutdown_drops_a_sleeping_task_and_its_stakker_timer() {
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, sleep(secs(3600)));
    rt.run();
    assert!(rt.s.next_expiry().is_some(), "the sleep armed its timer");
    // An explicit shutdown, after which the `Stakker` lives on and runs.
    stakplane_async::shutdown(&mut rt.s);
    rt.run();
    assert!(matches!(joined(h), Err(JoinError::RuntimeGone)));
    assert_eq!(
        rt.s.next_expiry(),
        None,
        "the dropped sleep's stakker timer must be deleted"
    );
}

#[test]
fn dropping_a_sleep_beyond_the_fixed_timer_range_or_of_duration_max_deletes_its_timer() {
    let mut rt = Rt::new();
    let far = spawn(&mut rt.s, sleep(secs(100_000)));
    let forever = spawn(&mut rt.s, sleep(Duration::MAX));
    rt.run();
    assert!(rt.s.next_expiry().is_some());
    rt.advance(secs(60));
    assert!(!far.is_finished() && !forever.is_finished());
    far.abort();
    forever.abort();
    rt.run();
    assert_eq!(rt.s.next_expiry(), None);
}

#[test]
fn a_sleep_dropped_before_its_timer_is_armed_never_arms_one() {
    let mut rt = Rt::new();
    let victim = spawn(&mut rt.s, sleep(secs(60)));
    let abort = victim.abort_handle();
    // Polled right after the victim's first poll, before the deferred call
    // that arms the victim's timer runs.
    let killer = spawn(&mut rt.s, async move { abort.abort() });
    rt.run();
    assert!(matches!(joined(victim), Err(JoinError::Aborted)));
    joined(killer).unwrap();
    assert_eq!(rt.s.next_expiry(), None);
}

// ---------------------------------------------------------------------------
// timeout

#[test]
fn timeout_yields_ok_when_the_inner_future_finishes_first_and_deletes_its_timer() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let h = spawn(
        &mut rt.s,
        timeout(secs(5), async {
            sleep(secs(2)).await;
            "done"
        }),
    );
    rt.run();
    assert_eq!(rt.s.next_expiry(), Some(t0 + secs(2)));
    assert_eq!(finishes_exactly_after(&mut rt, h, secs(2)), Ok("done"));
    assert_eq!(rt.s.next_expiry(), None, "the 5 s timer was deleted");
}

#[test]
fn timeout_of_a_future_ready_at_once_never_arms_a_timer() {
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, timeout(secs(5), std::future::ready(9)));
    rt.run();
    assert_eq!(joined(h).unwrap(), Ok(9));
    assert_eq!(rt.s.next_expiry(), None);
}

#[test]
fn timeout_elapses_exactly_at_the_deadline_and_drops_the_inner_future() {
    let mut rt = Rt::new();
    let drops = Drops::new();
    let tok = drops.token();
    let d2 = drops.clone();
    let h = spawn(&mut rt.s, async move {
        let inner = async move {
            let _tok = tok;
            std::future::pending::<u32>().await
        };
        let r = timeout(secs(3), inner).await;
        (r, d2.count())
    });
    rt.run();
    rt.advance(secs(2));
    assert!(!h.is_finished());
    assert_eq!(drops.count(), 0);
    rt.advance(secs(1) - ms(1));
    assert!(!h.is_finished());
    rt.advance(ms(1));
    let (r, dropped_at_return) = joined(h).unwrap();
    let e: Elapsed = r.expect_err("Elapsed at 3 s");
    assert_eq!(e.to_string(), "deadline elapsed");
    assert_eq!(
        dropped_at_return, 1,
        "the inner future is dropped by the time timeout returns"
    );
    assert_eq!(drops.count(), 1);
}

#[test]
fn timeout_tie_at_the_deadline_goes_to_the_inner_future() {
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, timeout(secs(2), sleep(secs(2))));
    rt.advance(secs(2));
    assert_eq!(joined(h).unwrap(), Ok(()));
}

// ---------------------------------------------------------------------------
// interval

#[test]
fn interval_ticks_at_start_plus_whole_periods() {
    let mut rt = Rt::new();
    rt.advance(secs(5));
    let start = rt.now;
    let log: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let l2 = log.clone();
    let h = spawn(&mut rt.s, async move {
        let mut iv = interval(secs(2));
        for _ in 0..3 {
            let at = iv.tick().await;
            l2.borrow_mut().push(at);
        }
        iv.period()
    });
    rt.run();
    for k in 1..=3u32 {
        rt.advance(secs(1));
        assert_eq!(log.borrow().len() as u32, k - 1, "no tick mid-period");
        rt.advance(secs(1));
        let expect: Vec<Instant> = (1..=k).map(|i| start + secs(2) * i).collect();
        assert_eq!(*log.borrow(), expect);
    }
    assert_eq!(joined(h).unwrap(), secs(2));
}

#[test]
fn interval_consumer_that_falls_behind_gets_missed_ticks_at_once_without_drift() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let log: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let l2 = log.clone();
    let h = spawn(&mut rt.s, async move {
        let mut iv = interval(secs(1));
        let at = iv.tick().await;
        l2.borrow_mut().push(at);
        // Busy for three periods: misses the ticks of 2 s and 3 s.
        sleep(secs(3)).await;
        for _ in 0..5 {
            let at = iv.tick().await;
            l2.borrow_mut().push(at);
        }
    });
    let at = |v: &[u64]| v.iter().map(|&s| t0 + secs(s)).collect::<Vec<_>>();
    rt.run();
    rt.advance(secs(1));
    assert_eq!(*log.borrow(), at(&[1]));
    rt.advance(secs(2));
    assert_eq!(*log.borrow(), at(&[1]), "the consumer is busy");
    rt.advance(secs(1));
    assert_eq!(
        *log.borrow(),
        at(&[1, 2, 3, 4]),
        "missed ticks at once, with their scheduled times"
    );
    rt.advance(secs(1) - ms(1));
    assert_eq!(log.borrow().len(), 4);
    rt.advance(ms(1));
    assert_eq!(*log.borrow(), at(&[1, 2, 3, 4, 5]), "no drift");
    rt.advance(secs(1));
    assert_eq!(*log.borrow(), at(&[1, 2, 3, 4, 5, 6]));
    joined(h).unwrap();
}

#[test]
fn interval_with_zero_period_is_taken_as_one_nanosecond_and_does_not_hang() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let iv = interval(Duration::ZERO);
    assert_eq!(iv.period(), Duration::from_nanos(1));
    let h = spawn(&mut rt.s, iv.take(3).collect::<Vec<Instant>>());
    rt.advance(secs(1));
    let ns = Duration::from_nanos;
    assert_eq!(joined(h).unwrap(), vec![t0 + ns(1), t0 + ns(2), t0 + ns(3)]);
}

// ---------------------------------------------------------------------------
// Virtual time

#[test]
fn an_hour_of_one_second_sleeps_passes_instantly_under_advance() {
    let wall = Instant::now();
    let mut rt = Rt::new();
    let t0 = rt.now;
    let count = Rc::new(Cell::new(0u32));
    let c2 = count.clone();
    let h = spawn(&mut rt.s, async move {
        for _ in 0..3600 {
            sleep(secs(1)).await;
            c2.set(c2.get() + 1);
        }
    });
    rt.advance(secs(3599));
    assert_eq!(count.get(), 3599, "no drift over 3599 sleeps");
    assert!(!h.is_finished());
    rt.advance(secs(1));
    assert_eq!(count.get(), 3600);
    assert!(h.is_finished());
    assert_eq!(rt.now, t0 + secs(3600));
    assert_eq!(rt.s.next_expiry(), None);
    joined(h).unwrap();
    assert!(
        wall.elapsed() < secs(30),
        "an hour of virtual time took {:?} of real time",
        wall.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Outside a task

#[test]
fn a_timer_polled_outside_a_task_panics_saying_it_must_be_inside_a_task() {
    let err = catch_unwind(AssertUnwindSafe(|| sleep(secs(1)).now_or_never())).unwrap_err();
    let msg = panic_text(&*err);
    assert!(msg.contains("inside a task"), "{msg}");

    let err = catch_unwind(AssertUnwindSafe(|| {
        sleep_until(Instant::now()).now_or_never()
    }))
    .unwrap_err();
    assert!(panic_text(&*err).contains("inside a task"));

    let err =
        catch_unwind(AssertUnwindSafe(|| interval(secs(1)).next().now_or_never())).unwrap_err();
    assert!(panic_text(&*err).contains("inside a task"));
}

#[test]
fn resetting_a_sleep_from_outside_its_task_wakes_the_task_to_arm_the_new_deadline() {
    let mut rt = Rt::new();
    let shared = Rc::new(RefCell::new(stakplane_async::sleep(Duration::from_secs(
        10,
    ))));
    let s2 = shared.clone();
    let h = stakplane_async::spawn(
        &mut rt.s,
        std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *s2.borrow_mut()).poll(cx)),
    );
    rt.run();
    let at = rt.now + Duration::from_secs(1);
    shared.borrow_mut().reset(at);
    rt.advance(Duration::from_secs(1));
    assert!(
        h.is_finished(),
        "the task re-armed the new, earlier deadline"
    );
}

// ---------------------------------------------------------------------------
// the timer horizon

#[test]
fn a_deadline_past_the_timer_horizon_never_fires() {
    // stakker's timer time wraps about 2^48 s after its start: without the
    // horizon these fired within the next turn, and an interval whose next
    // tick overflowed `Instant` ticked at once for ever.
    let mut rt = Rt::new();
    rt.advance(secs(1));
    let t0 = rt.now;
    let horizon = stakplane_async::horizon(&rt.s);
    assert_eq!(
        horizon,
        rt.s.start_instant() + stakplane_async::TIMER_HORIZON
    );
    let fired: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    let far = secs(1 << 50);
    let mut handles = Vec::new();
    let mut watch = |name: &'static str, fut: Pin<Box<dyn Future<Output = ()>>>| {
        let f = fired.clone();
        handles.push(spawn(&mut rt.s, async move {
            fut.await;
            f.borrow_mut().push(name);
        }));
    };
    watch("sleep 2^50 s", Box::pin(sleep(far)));
    watch("sleep MAX", Box::pin(sleep(Duration::MAX)));
    watch("sleep_until +2^50 s", Box::pin(sleep_until(t0 + far)));
    watch(
        "timeout MAX",
        Box::pin(async {
            let r = timeout(Duration::MAX, std::future::pending::<()>()).await;
            assert!(r.is_err());
        }),
    );
    watch(
        "interval MAX",
        Box::pin(async {
            interval(Duration::MAX).tick().await;
        }),
    );
    watch(
        "interval 2^50 s",
        Box::pin(async move {
            interval(far).tick().await;
        }),
    );
    let ticks: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let tk = ticks.clone();
    // Its first tick is inside the horizon, the second past it.
    let period = stakplane_async::TIMER_HORIZON / 2;
    let iv = spawn(&mut rt.s, async move {
        let mut iv = interval(period);
        loop {
            let at = iv.tick().await;
            tk.borrow_mut().push(at);
        }
    });
    rt.run();
    rt.advance(secs(3600));
    assert!(fired.borrow().is_empty(), "{:?}", fired.borrow());
    assert!(ticks.borrow().is_empty());
    // Past the horizon: the one tick inside it came, nothing else fired,
    // and no timer is left (the never-firing ones were never set).
    let to = horizon + secs(1) - rt.now;
    rt.advance(to);
    assert!(fired.borrow().is_empty(), "{:?}", fired.borrow());
    assert_eq!(*ticks.borrow(), [t0 + period]);
    assert_eq!(rt.s.next_expiry(), None);
    for h in &handles {
        assert!(!h.is_finished());
    }
    assert!(!iv.is_finished());
}

#[test]
fn timer_at_and_timer_after_arm_any_deadline_and_past_the_horizon_never_fire() {
    let mut rt = Rt::new();
    let horizon = stakplane_async::horizon(&rt.s);
    let log: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    let drops = Drops::new();
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let tok = drops.token();
    stakplane_async::timer_at(&mut rt.s, horizon, move |_| {
        l1.borrow_mut().push("at horizon")
    });
    stakplane_async::timer_at(&mut rt.s, horizon + secs(1), move |_| {
        let _tok = &tok;
        l2.borrow_mut().push("past horizon");
    });
    let k = stakplane_async::timer_after(&mut rt.s, Duration::MAX, move |_| {
        l3.borrow_mut().push("after MAX")
    });
    let tok = drops.token();
    stakplane_async::timer_after(&mut rt.s, Duration::MAX, move |_| drop(tok));
    assert_eq!(
        drops.count(),
        2,
        "never-firing callbacks are dropped unrun at once"
    );
    assert!(
        !rt.s.timer_del(k),
        "the key of a never-firing timer names no timer"
    );
    rt.advance(horizon - rt.now - secs(1));
    assert!(log.borrow().is_empty());
    rt.advance(secs(2));
    assert_eq!(*log.borrow(), ["at horizon"]);
    assert_eq!(rt.s.next_expiry(), None);
}

#[test]
fn try_now_is_the_runtime_time_in_a_task_and_none_outside() {
    assert_eq!(stakplane_async::try_now(), None, "outside a task");
    let mut rt = Rt::new();
    let t0 = rt.now;
    let h = spawn(&mut rt.s, async move {
        let first = stakplane_async::try_now();
        sleep(secs(7)).await;
        (first, stakplane_async::try_now())
    });
    rt.advance(secs(7));
    assert_eq!(joined(h).unwrap(), (Some(t0), Some(t0 + secs(7))));
}
