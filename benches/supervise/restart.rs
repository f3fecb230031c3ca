//! Group `restart_one_for_one`: a supervised child fails, and the next
//! message reaches its replacement; one iteration measures until the
//! replacement has handled it.
//!
//! Per iteration, on every side: send the child a call that fails it
//! (`cx.fail_str`, a fault, no panic hook in the way), run the `Stakker`
//! until idle (the death is noticed and a new child is created), send the
//! next message to "the child" through a stable address, run until idle,
//! and check that the new incarnation counted it.
//!
//! - `stakplane`: `Supervisor` with `one_for_one`, one permanent worker,
//!   intensity 2,000 per second while virtual time moves 1 ms per
//!   iteration (it never escalates: about 1,000 restarts sit in the
//!   window, each counted and expired as usual); the messages go
//!   through the child's `Addr` (default fail mode: a guarded call to the
//!   live incarnation).
//! - `stakplane-hold`: the same with a holding `Addr`
//!   (`ChildSpec::hold(16, Reject)`): the messages go through the child's
//!   reliable mailbox, which hands them to whichever incarnation lives.
//! - `stakker`: a bare parent actor holding the child's `ActorOwn`; the
//!   child's termination `Ret<StopCause>` calls the parent, which creates
//!   a new child and stores its `Actor` in a shared slot (the hand-written
//!   stable address); the messages are plain `call!`s to the actor in the
//!   slot.
//!
//! The `Stakker`, the supervisor or parent, and the stable address are
//! made once per function; every iteration restarts the child once.

use crate::kid::{supervised, Kid, Parent};
use criterion::Criterion;
use stakplane::prelude::*;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub fn restart_one_for_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("restart_one_for_one");
    let now = Instant::now();

    for (name, hold) in [("stakplane", false), ("stakplane-hold", true)] {
        let mut s = Stakker::new(now);
        let seen = Rc::new(Cell::new(0));
        let (sup, addr) = supervised(&mut s, &seen, hold);
        s.run(now, false);
        let mut t = now;
        g.bench_function(name, |b| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                // Virtual time moves on so that old restarts leave the
                // intensity window as they would in a real run.
                t += Duration::from_millis(1);
                let before = seen.get();
                let _ = addr.send(|k, cx| k.fail(cx));
                s.run(t, false);
                let _ = addr.send(move |k, cx| k.tick(cx, n));
                s.run(t, false);
                assert_eq!(seen.get(), before + 1, "the replacement handled it");
            })
        });
        assert!(sup.line().is_alive(), "never escalated");
    }

    {
        let mut s = Stakker::new(now);
        let seen = Rc::new(Cell::new(0));
        let slot: Rc<RefCell<Option<Actor<Kid>>>> = Rc::new(RefCell::new(None));
        let parent = stakker::actor!(s, Parent::init(slot.clone(), seen.clone()), ret_nop!());
        s.run(now, false);
        let mut t = now;
        g.bench_function("stakker", |b| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                t += Duration::from_millis(1);
                let before = seen.get();
                let kid = slot.borrow().clone();
                if let Some(kid) = kid {
                    stakker::call!([kid], fail());
                }
                s.run(t, false);
                let kid = slot.borrow().clone();
                if let Some(kid) = kid {
                    stakker::call!([kid], tick(n));
                }
                s.run(t, false);
                assert_eq!(seen.get(), before + 1, "the replacement handled it");
            })
        });
        drop(parent);
    }
    g.finish();
}
