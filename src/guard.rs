//! Panic containment: every piece of user code the stakplane macros
//! schedule runs inside [`std::panic::catch_unwind`]. A panic fails exactly
//! the actor whose code panicked, with [`Cause::Panic`] carrying the panic
//! message; calls queued to it are dropped; the queue, the timers and
//! every other actor carry on, and later `run()` calls work.
//!
//! The functions here are what the macros expand to ([`call!`](crate::call),
//! [`ret_to!`](crate::ret_to), [`fwd_to!`](crate::fwd_to),
//! [`after!`](crate::after), [`device!`](macro@crate::device), ...). They are
//! public so that hand-written code can get the same protection.
//!
//! A contained panic still goes through Rust's panic hook, so the default
//! hook prints its `thread '…' panicked at …` report (and a backtrace
//! under `RUST_BACKTRACE=1`) although the program goes on: that output is
//! expected. [`quiet_panics`] replaces it with one line naming the device.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **7. The first end wins**: if guarded code calls `stop!`/`fail!` and then
//! panics, the cause is the stop/fail. (A panic in the `Drop` of the
//! actor's state, which runs as the end is carried out, is rule 32b.)
//!
//! **25. A panic in a method fails only that actor**, even one whose
//! payload panics again when dropped (every payload a guard catches is
//! dropped contained, by `task::drop_payload`).
//!
//! **26. A panic in `init` fails the device.**
//!
//! **27. A panic in a `Ret` handler fails the receiving actor** (not the
//! sender).
//!
//! **28. A panic in a `Fwd` handler fails the receiving actor.**
//!
//! **29. A panic in a timer (`after!`, `at!`) fails the actor.**
//!
//! **30. A panic in a trap handler fails the trapping actor.**
//!
//! **31. The runtime keeps running after panics**, timers included.
//!
//! **32. Not guarded**: stakker's own macros and methods, raw `Ret::new` /
//! `Fwd::new` closures, and the `Drop` of actor state where stakker runs
//! it outside stakplane's code: the `Dropped` end of a plain stakker actor
//! (an `ActorOwn` not made through stakplane) whose last owner goes, and
//! a `Stakker` being dropped, which frees the actors nobody else holds
//! (there is no queue left to finish a death on, so Rust leaves only the
//! unwind). A panic there unwinds out of `Stakker::run` (which then
//! refuses to run again) or out of the `Stakker`'s drop, as in plain
//! stakker; a device the `Stakker`'s drop freed is freed unended (rule
//! 34b).
//!
//! **172. With feature `device-spans`, a device's code runs in its
//! span**: every guarded call of a device (its `init`, methods, `Ret`,
//! `Fwd` and timer handlers) runs inside the `tracing` span
//! `device{id=#N}` (target `stakplane::device`, level INFO), so a line
//! its code logs says which device it came from; code outside devices
//! has no such span. Without the feature, or with that target disabled,
//! nothing is added but a callsite check.
//!
//! **32a. A panicking raw watcher still lets the others be notified**: every
//! watcher of the dead device gets its `Down` first, then the first panic
//! resumes (a later one's payload is dropped, contained even if its own
//! `Drop` panics).
//!
//! **32b. A panic in the `Drop` of a device's state ends that device with
//! `Panic`**, whichever end stakplane's code carried out: a `stop!`,
//! `fail!` or panic in guarded code (also a call held until `init`), a
//! kill, shutdown or cascade (also a supervisor's or the runtime's), a
//! mailbox handler that stops its consumer, its last owner dropped (the
//! `Dropped` end, which stakplane queues guarded ahead of stakker's own
//! for a state that has drop glue). The `Drop` is user code: its
//! panic is contained, and the death completes with `Cause::Panic(message
//! of that panic)`, which replaces the cause the end would have given (a
//! clean-up that panics is a fault, as an Erlang process whose `terminate`
//! crashes exits with that crash). The watchers are told, non-trapping
//! linked watchers cascaded, the calls queued behind it (other cascades)
//! run, and later `run()`s work; the device's owner dropped later changes
//! nothing. (A plain stakker actor, not a device, has no cause to end
//! with: the panic unwinds as in rule 32.)

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
    #[cfg(feature = "device-spans")]
    let _span = device_span(actor);
    ending(actor, || {
        actor.apply(s, move |this, cx| {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(this, cx))) {
                fail_with_panic(cx, payload);
            }
        })
    });
}

/// The span of the device `actor` is (feature `device-spans`), entered,
/// if spans of that target are enabled: `device{id=#42}`, so that what
/// its code logs says which device it came from. Cost with the feature:
/// a callsite check, and when enabled a map lookup and the span.
#[cfg(feature = "device-spans")]
#[inline]
fn device_span<A>(actor: &Actor<A>) -> Option<tracing::span::EnteredSpan> {
    if !tracing::enabled!(target: "stakplane::device", tracing::Level::INFO) {
        return None;
    }
    let id = registry::span_id(registry::ident(actor))?;
    Some(tracing::info_span!(target: "stakplane::device", "device", id = %id).entered())
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
    #[cfg(feature = "device-spans")]
    let _span = device_span(actor);
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
        // One clone of the actor per message, for the queued call; the
        // queue is reached through the `Fwd`'s own.
        let target = actor.clone();
        actor.defer(move |s| apply(&target, s, move |this, cx| f(this, cx, msg)));
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
    let msg = panic_message(payload);
    match registry::id_of(registry::ident(cx.access_actor())) {
        Some(id) => crate::task::report_contained(format_args!("device {id} panicked: {msg}")),
        None => crate::task::report_contained(format_args!("an actor panicked: {msg}")),
    }
    cx.fail(Ending(Cause::Panic(msg)));
}

/// Makes contained panics print one line each, naming the device, instead
/// of the default hook's report (rule 100 in the glue's `quiet` module:
/// [`task::quiet_panics`](crate::task::quiet_panics)). Call it once, at
/// the start of `main`; other panics print as before.
pub fn quiet_panics() {
    crate::task::quiet_panics();
}

/// The message of a panic payload: the `&str` or `String` given to
/// `panic!`, or a placeholder for any other payload type.
pub fn panic_message(payload: Box<dyn Any + Send>) -> Rc<str> {
    let msg = crate::task::panic_message(&*payload);
    crate::task::drop_payload(payload);
    msg
}
