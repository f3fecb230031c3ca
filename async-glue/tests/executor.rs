//! The executor: spawn, join, wake, abort, panics.
mod common;

use common::{joined, Rt};
use stakplane_async::{spawn, JoinError};
use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

#[test]
fn spawned_task_runs_from_the_queue_and_joins() {
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, async { 41 + 1 });
    assert!(!h.is_finished(), "nothing runs inside spawn");
    rt.run();
    assert!(h.is_finished());
    assert_eq!(joined(h).unwrap(), 42);
}

#[test]
fn a_task_woken_by_its_waker_is_polled_again() {
    let mut rt = Rt::new();
    let polls = Rc::new(Cell::new(0));
    let p2 = polls.clone();
    let h = spawn(
        &mut rt.s,
        poll_fn(move |cx| {
            p2.set(p2.get() + 1);
            if p2.get() < 3 {
                cx.waker().wake_by_ref();
                cx.waker().clone().wake(); // second wake while running: one re-poll
                Poll::Pending
            } else {
                Poll::Ready(p2.get())
            }
        }),
    );
    rt.run();
    assert_eq!(polls.get(), 3);
    assert_eq!(joined(h).unwrap(), 3);
}

#[test]
fn task_panic_is_caught_and_reported() {
    let mut rt = Rt::new();
    let h = spawn(&mut rt.s, async { panic!("boom in poll") });
    let ok = spawn(&mut rt.s, async { 5 });
    rt.run();
    match joined(h) {
        Err(JoinError::Panicked(m)) => assert_eq!(&*m, "boom in poll"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(joined(ok).unwrap(), 5);
}
