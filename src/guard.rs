//! Panic containment: every piece of user code the stakplane macros
//! schedule runs inside [`std::panic::catch_unwind`]. A panic fails exactly
//! the actor whose code panicked, with [`Cause::Panic`] carrying the panic
//! message; the queue, the timers and every other actor carry on.
//!
//! The functions here are what the macros expand to ([`call!`](crate::call),
//! [`ret_to!`](crate::ret_to), [`fwd_to!`](crate::fwd_to),
//! [`after!`](crate::after), [`device!`](macro@crate::device), ...). They are
//! public so that hand-written code can get the same protection.
//!
//! **The `Drop` of a device's state** is user code too. Stakker runs it
//! as it ends the actor: after a `stop!`, `fail!` or panic in guarded
//! code, and the device layer's end requests (kill, shutdown, cascade). A
//! panic there is contained like any other: the device's death completes
//! with [`Cause::Panic`] carrying that panic's message, which replaces the
//! cause the end would have given (a clean-up that panics is a fault);
//! watchers are told and linked devices cascaded as usual. (A plain
//! stakker actor has no cause to end with: its panic unwinds on.)
//!
//! **Not guarded:** code run through stakker's own macros and methods
//! (`stakker::call!`, `Actor::apply`, a raw `Ret::new` / `Fwd::new`
//! closure, `Core::after` with a raw closure), and the `Drop` of actor
//! state where stakker runs it outside stakplane's code: the end stakker
//! queues itself when an actor's last owner is dropped, and a `Stakker`
//! being dropped. A panic there unwinds out of `Stakker::run` (or the
//! `Stakker`'s drop) as it does in plain stakker.
//!
//! The first end wins: if the code called `stop!`/`fail!` before it
//! panicked, the actor ends with that cause, not with the panic.

use crate::cause::Cause;
use crate::device::{registry, Ending};
use stakker::{Actor, Cx, Deferrer, Fwd, Ret, Stakker};
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Runs `f` on the actor when it is ready (see [`Actor::apply`]), failing
/// the actor with [`Cause::Panic`] if `f` panics.
///
/// Cost: the same as `Actor::apply`; the unwind guard is free unless a
/// panic happens.
#[inline]
pub fn apply<A: 'static>(
    actor: &Actor<A>,
    s: &mut Stakker,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>) + 'static,
) {
    ending(actor, || {
        actor.apply(s, move |this, cx| {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(this, cx))) {
                fail_with_panic(cx, payload);
            }
        })
    });
}

/// Runs a **Prep**-state call (an `init` function) on the actor (see
/// [`Actor::apply_prep`]). A panic fails the actor with [`Cause::Panic`]
/// instead of making it ready.
#[inline]
pub fn apply_prep<A: 'static>(
    actor: &Actor<A>,
    s: &mut Stakker,
    f: impl FnOnce(&mut Cx<'_, A>) -> Option<A> + 'static,
) {
    ending(actor, || {
        actor.apply_prep(s, move |cx| {
            match catch_unwind(AssertUnwindSafe(|| f(cx))) {
                Ok(state) => state,
                Err(payload) => {
                    fail_with_panic(cx, payload);
                    None
                }
            }
        })
    });
}

/// Runs `f`, in which stakker may end `actor` (a `stop!`, `fail!` or
/// panic of the code `f` runs, or an end request): stakker then drops the
/// actor's state, whose `Drop` is user code. If that panics and the actor
/// is a device, its death completes with [`Cause::Panic`] and `None` is
/// returned; any other panic unwinds on.
///
/// Cost: nothing unless a panic happens.
#[inline]
pub(crate) fn ending<A, R>(actor: &Actor<A>, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            ended_in_drop(actor.is_zombie(), registry::ident(actor), payload);
            None
        }
    }
}

/// A panic unwound out of code that may have ended the actor with
/// identity `actor`. A panic that interrupted its termination (only then
/// is it a zombie whose device is still live) completes the death with
/// `Cause::Panic`; any other panic is resumed.
#[cold]
#[inline(never)]
fn ended_in_drop(zombie: bool, actor: usize, payload: Box<dyn Any + Send>) {
    let payload = if zombie {
        match registry::died_in_drop(actor, payload) {
            Ok(()) => return,
            Err(payload) => payload,
        }
    } else {
        payload
    };
    resume_unwind(payload);
}

/// Queues a guarded call to the actor on its own queue (what a guarded
/// `Ret` or `Fwd` handler does).
#[inline]
pub fn defer_apply<A: 'static>(actor: Actor<A>, f: impl FnOnce(&mut A, &mut Cx<'_, A>) + 'static) {
    let target = actor.clone();
    actor.defer(move |s| apply(&target, s, f));
}

/// Like [`defer_apply`], queuing through `deferrer` (the target's, as the
/// macros pass it) so that `actor` need not be cloned again: the expansion
/// of `call!([actor], method(args))`.
#[inline]
pub fn defer_apply_via<A: 'static>(
    deferrer: &Deferrer,
    actor: Actor<A>,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>) + 'static,
) {
    deferrer.defer(move |s| apply(&actor, s, f));
}

/// Queues a guarded **Prep** call (an init) through `deferrer`: the expansion of
/// `call!([actor], Type::init(args))`.
#[inline]
pub fn defer_apply_prep_via<A: 'static>(
    deferrer: &Deferrer,
    actor: Actor<A>,
    f: impl FnOnce(&mut Cx<'_, A>) -> Option<A> + 'static,
) {
    deferrer.defer(move |s| apply_prep(&actor, s, f));
}

/// A [`Ret`] whose handler runs as a guarded call on `actor`; the handler
/// gets `None` if the `Ret` is dropped unfired. Expansion of
/// `ret_to!([cx], method(args) as (M))`.
#[inline]
pub fn ret_to<A: 'static, M: 'static>(
    actor: Actor<A>,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>, Option<M>) + 'static,
) -> Ret<M> {
    Ret::new(move |msg| defer_apply(actor, move |this, cx| f(this, cx, msg)))
}

/// A [`Ret`] whose handler runs as a guarded call on `actor` only when a
/// value is sent (a dropped `Ret` is ignored). Expansion of
/// `ret_some_to!([cx], method(args) as (M))`.
#[inline]
pub fn ret_some_to<A: 'static, M: 'static>(
    actor: Actor<A>,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>, M) + 'static,
) -> Ret<M> {
    Ret::new(move |msg| {
        if let Some(msg) = msg {
            defer_apply(actor, move |this, cx| f(this, cx, msg));
        }
    })
}

/// A [`Fwd`] whose handler runs as a guarded call on `actor` for every
/// message. The handler (with its captured arguments) is cloned once per
/// message, at the sender. Expansion of `fwd_to!([cx], method(args) as (M))`.
#[inline]
pub fn fwd_to<A: 'static, M: 'static>(
    actor: Actor<A>,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>, M) + Clone + 'static,
) -> Fwd<M> {
    Fwd::new(move |msg| {
        let f = f.clone();
        defer_apply(actor.clone(), move |this, cx| f(this, cx, msg));
    })
}

/// Starts a stakker fixed timer that makes a guarded call on `actor` after
/// `dur`. Expansion of `after!(dur, [cx], method(args))`. Any `dur` is
/// safe: a deadline past the timer horizon never fires
/// ([`stakplane_async::timer_after`]).
#[inline]
pub fn after<A: 'static>(
    core: &mut stakker::Core,
    dur: Duration,
    actor: Actor<A>,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>) + 'static,
) -> stakker::FixedTimerKey {
    stakplane_async::timer_after(core, dur, move |s| apply(&actor, s, f))
}

/// Starts a stakker fixed timer that makes a guarded call on `actor` at
/// `when`. Expansion of `at!(when, [cx], method(args))`. A `when` past the
/// timer horizon never fires ([`stakplane_async::timer_at`]).
#[inline]
pub fn at<A: 'static>(
    core: &mut stakker::Core,
    when: Instant,
    actor: Actor<A>,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>) + 'static,
) -> stakker::FixedTimerKey {
    stakplane_async::timer_at(core, when, move |s| apply(&actor, s, f))
}

#[cold]
#[inline(never)]
pub(crate) fn fail_with_panic<A>(cx: &mut Cx<'_, A>, payload: Box<dyn Any + Send>) {
    cx.fail(Ending(Cause::Panic(panic_message(payload))));
}

/// The message of a panic payload: the `&str` or `String` given to
/// `panic!`, or a placeholder for any other payload type.
pub fn panic_message(payload: Box<dyn Any + Send>) -> Rc<str> {
    crate::task::panic_message(&*payload)
}
