//! A waker kept from a dropped runtime, woken once a new runtime took the
//! dropped one's index (rules 45, 46).
//!
//! Alone in its test binary: no other runtime of this process may take
//! the index between the two runtimes of the test.
mod common;

use common::Rt;
use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[test]
fn a_stale_waker_of_a_dropped_runtime_never_polls_the_next_runtimes_task() {
    let stale: Rc<Cell<Option<Waker>>> = Rc::default();
    {
        let mut old = Rt::new();
        let s2 = stale.clone();
        let _h = stakplane_async::spawn(
            &mut old.s,
            poll_fn(move |cx| {
                s2.set(Some(cx.waker().clone()));
                Poll::<()>::Pending
            }),
        );
        old.run();
    }
    let stale = stale.take().expect("the old task was polled");
    // The new runtime takes the index the old one gave back; its first
    // task is in slot 0, as the old one's was.
    let mut rt = Rt::new();
    let polls = Rc::new(Cell::new(0u32));
    let p2 = polls.clone();
    let _h = stakplane_async::spawn(
        &mut rt.s,
        poll_fn(move |_| {
            p2.set(p2.get() + 1);
            Poll::<()>::Pending
        }),
    );
    rt.run();
    assert_eq!(polls.get(), 1);
    stale.wake();
    rt.run();
    assert_eq!(
        polls.get(),
        1,
        "a waker of the dropped runtime must not poll the new runtime's task"
    );
}
