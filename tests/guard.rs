//! Panic containment: a panic in each kind of callback fails exactly that
//! actor, its watchers are told, and the runtime keeps running (NOTES.md,
//! "Panics").

mod common;

use common::*;
use stakplane::prelude::*;
use std::time::Duration;

fn panicked() -> String {
    format!("panicked: {TEST_PANIC}")
}

/// `cause` is the panic of a `Dev` callback in `place` ("init", "timer", ...).
#[track_caller]
fn assert_panicked_in(cause: Option<Cause>, place: &str) {
    assert_eq!(
        cause.unwrap().to_string(),
        format!("{} in {place}", panicked())
    );
}

/// `by`, a bystander that must never notice a panic except through its
/// links, still takes calls and timers.
fn assert_runtime_still_works(rt: &mut Rt, by: &DeviceOwn<Dev>) {
    let before = by
        .query(&mut rt.s, |d, _| d.calls)
        .expect("bystander ready");
    call!([by], ping());
    rt.run();
    assert_eq!(by.query(&mut rt.s, |d, _| d.calls), Some(before + 1));
    // Timers still fire after a panic.
    after!(Duration::from_secs(1), [by, rt.s], ping());
    rt.advance(Duration::from_secs(1));
    assert_eq!(by.query(&mut rt.s, |d, _| d.calls), Some(before + 2));
}

#[test]
fn panic_in_method_fails_only_that_actor() {
    let (mut rt, log, by) = rt_with_dev("bystander");
    let (watcher, victim) = watched_pair(&mut rt, &log);
    call!([victim], panic());
    call!([victim], ping()); // queued behind the panic: discarded
    rt.run();
    assert_eq!(victim.cause().unwrap().to_string(), panicked());
    assert_eq!(
        entries(&log),
        [format!("watcher: {} {}", victim.id(), panicked())]
    );
    assert!(by.is_alive() && watcher.is_alive());
    assert_runtime_still_works(&mut rt, &by);
}

/// Rule 25 with a payload whose own `Drop` panics: the second panic is
/// contained too, so it does not unwind out of the runtime.
#[test]
fn panic_in_method_fails_only_that_actor_even_when_its_payload_panics_on_drop() {
    let (mut rt, log, by) = rt_with_dev("bystander");
    let (watcher, victim) = watched_pair(&mut rt, &log);
    call!([victim], |_this, _cx| {
        stakplane_testkit::panic_with_a_payload_that_panics_on_drop()
    });
    call!([victim], ping()); // queued behind the panic: discarded
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run())).is_err();
    assert!(!unwound, "the payload's panic unwound out of the runtime");
    let cause = "panicked: (panic payload is not a string)";
    assert_eq!(victim.cause().unwrap().to_string(), cause);
    assert_eq!(entries(&log), [format!("watcher: {} {cause}", victim.id())]);
    assert!(by.is_alive() && watcher.is_alive());
    assert_runtime_still_works(&mut rt, &by);
}

#[test]
fn panic_in_init_fails_the_device() {
    let (mut rt, _log, by) = rt_with_dev("bystander");
    let d = device!(rt.s, Dev::init_panics());
    let line = d.line();
    call!([d], ping()); // held for init, then dropped with the device
    rt.run();
    assert_panicked_in(line.cause(), "init");
    assert!(d.query(&mut rt.s, |d, _| d.calls).is_none());
    assert_runtime_still_works(&mut rt, &by);
}

#[test]
fn panic_in_ret_handler_fails_the_receiving_actor() {
    let (mut rt, _log, [by, asker, replier]) = rt_with_devs(["bystander", "asker", "replier"]);
    let ret = ret_to!([asker], panic_on_reply() as (u32));
    call!([replier], reply(ret));
    rt.run();
    assert_panicked_in(asker.cause(), "ret handler");
    assert!(replier.is_alive(), "the sender of the reply is not blamed");
    assert_runtime_still_works(&mut rt, &by);
}

#[test]
fn panic_in_fwd_handler_fails_the_receiving_actor() {
    let (mut rt, _log, [by, sink]) = rt_with_devs(["bystander", "sink"]);
    let fwd = fwd_to!([sink], panic_on_msg() as (u32));
    fwd.fwd(1);
    fwd.fwd(2); // delivered to a dead actor: discarded
    rt.run();
    assert_panicked_in(sink.cause(), "fwd handler");
    assert_runtime_still_works(&mut rt, &by);
}

#[test]
fn panic_in_timer_fails_the_actor() {
    let (mut rt, log, [by, d]) = rt_with_devs(["bystander", "d"]);
    after!(Duration::from_secs(5), [d, rt.s], panic_on_timer());
    rt.advance(Duration::from_secs(4));
    assert!(d.is_alive(), "not yet: virtual time is at 4s");
    rt.advance(Duration::from_secs(1));
    assert_panicked_in(d.cause(), "timer");
    let when = rt.now + Duration::from_secs(2);
    let d2 = dev(&mut rt, "d2", &log);
    rt.run();
    at!(when, [d2, rt.s], panic_on_timer());
    rt.advance(Duration::from_secs(2));
    assert!(!d2.is_alive());
    assert_runtime_still_works(&mut rt, &by);
}

#[test]
fn panic_in_trap_handler_fails_the_trapping_actor() {
    let (mut rt, _log, [by, trapper, target]) = rt_with_devs(["bystander", "trapper", "target"]);
    trapper
        .trap(fwd_to!([trapper], panic_on_down() as (Down)))
        .unwrap();
    trapper.link(&target, LinkMode::Monitor).unwrap();
    call!([target], stop());
    rt.run();
    assert_panicked_in(trapper.cause(), "trap");
    assert_runtime_still_works(&mut rt, &by);
}

#[test]
fn runtime_keeps_running_after_panics() {
    // Many panics across many actors in one run; every later run works.
    let (mut rt, log, by) = rt_with_dev("bystander");
    let victims: Vec<_> = (0..50).map(|_| dev(&mut rt, "v", &log)).collect();
    rt.run();
    for v in &victims {
        call!([v], panic());
    }
    rt.run();
    assert!(victims.iter().all(|v| !v.is_alive()));
    for _ in 0..3 {
        assert_runtime_still_works(&mut rt, &by);
    }
}

#[test]
fn first_end_wins() {
    let (mut rt, _log, d) = rt_with_dev("d");
    call!([d], stop_then_panic());
    rt.run();
    assert_eq!(d.cause().unwrap().to_string(), "stopped");
}

#[test]
fn unguarded_stakker_call_is_not_contained() {
    // Documented limit: stakker's own macros are not guarded.
    let (mut rt, _log, d) = rt_with_dev("d");
    rt.run();
    stakker::call!([d], panic());
    let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run()));
    assert!(
        escaped.is_err(),
        "a raw stakker call's panic unwinds out of run"
    );
}

#[test]
fn a_deadline_past_the_timer_horizon_never_fires() {
    // `after!` and `at!` go through the one clamp of the glue: a deadline
    // past the horizon (or past what `Instant` holds) never fires, while
    // one just inside it fires at its time.
    let (mut rt, _log, d) = rt_with_dev("d");
    rt.run();
    let horizon = stakplane::task::horizon(&rt.s);
    after!(Duration::from_secs(1 << 50), [d, rt.s], panic_on_timer());
    after!(Duration::MAX, [d, rt.s], panic_on_timer());
    at!(
        rt.now + Duration::from_secs(1 << 50),
        [d, rt.s],
        panic_on_timer()
    );
    at!(
        horizon + Duration::from_secs(1),
        [d, rt.s],
        panic_on_timer()
    );
    let inside = horizon - rt.now;
    after!(inside, [d, rt.s], ping());
    rt.advance(Duration::from_secs(3600));
    assert!(d.is_alive(), "nothing fired in the first hour");
    assert_eq!(d.query(&mut rt.s, |d, _| d.calls), Some(0));
    rt.advance(inside - Duration::from_secs(3600));
    assert_eq!(d.query(&mut rt.s, |d, _| d.calls), Some(1), "inside: fires");
    rt.advance(Duration::from_secs(1 << 20));
    assert!(d.is_alive(), "past the horizon: never fires");
    assert_eq!(rt.s.next_expiry(), None, "and is gone at the horizon");
}

/// A device whose state's `Drop` panics: user code that runs as the actor
/// ends, whatever ends it.
struct Brittle;

impl Brittle {
    fn init(_: CX![]) -> Option<Self> {
        Some(Brittle)
    }

    fn stop(&mut self, cx: CX![]) {
        stop!(cx);
    }

    fn fail(&mut self, cx: CX![]) {
        fail!(cx, "oops");
    }

    fn panic(&mut self, _: CX![]) {
        panic!("{TEST_PANIC}");
    }
}

impl Drop for Brittle {
    fn drop(&mut self) {
        panic!("{TEST_PANIC} in drop");
    }
}

/// Every way stakplane code ends an actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BrittleEnd {
    Stop,
    Fail,
    Panic,
    Kill,
    Shutdown,
    Cascade,
    StopHeldUntilInit,
    MailboxHandlerStops,
    /// The last owner dropped: the `Dropped` end.
    OwnerDropped,
}

impl BrittleEnd {
    const ALL: [BrittleEnd; 9] = [
        BrittleEnd::Stop,
        BrittleEnd::Fail,
        BrittleEnd::Panic,
        BrittleEnd::Kill,
        BrittleEnd::Shutdown,
        BrittleEnd::Cascade,
        BrittleEnd::StopHeldUntilInit,
        BrittleEnd::MailboxHandlerStops,
        BrittleEnd::OwnerDropped,
    ];
}

#[test]
fn a_panic_in_drop_of_actor_state_fails_that_actor_and_its_cascades_run() {
    use stakplane::mailbox::{Mailbox, Overflow};
    use BrittleEnd::*;
    let in_drop = format!("{} in drop", panicked());
    for end in BrittleEnd::ALL {
        let (mut rt, log, by) = rt_with_dev("bystander");
        let origin = dev(&mut rt, "origin", &log);
        let b = device_new!(rt.s, Brittle);
        if end == StopHeldUntilInit {
            // Held in Prep, run as `init` makes the device Ready.
            call!([b], stop());
        }
        call!([b], Brittle::init());
        // `after` watches `origin` too, linked after `b`: its cascade is
        // queued behind `b`'s. `behind` watches `b` through a link.
        let after = dev(&mut rt, "after", &log);
        let behind = dev(&mut rt, "behind", &log);
        let watcher = dev(&mut rt, "watcher", &log);
        b.link(&origin, LinkMode::Monitor).unwrap();
        after.link(&origin, LinkMode::Monitor).unwrap();
        behind.link(&b, LinkMode::Monitor).unwrap();
        let _ = b
            .monitor(ret_some_to!([watcher], down() as (Down)))
            .unwrap();
        let line = b.line();
        let mb: Mailbox<u32> = Mailbox::new(4, Overflow::Reject);
        mb.attach(&mut rt.s, b.actor(), |this: &mut Brittle, cx, _: u32| {
            this.stop(cx)
        });
        match end {
            Stop => call!([b], stop()),
            Fail => call!([b], fail()),
            Panic => call!([b], panic()),
            Kill => b.kill("test-kill").unwrap(),
            Shutdown => b.shutdown(None).unwrap(),
            Cascade => call!([origin], fail()),
            StopHeldUntilInit | OwnerDropped => {}
            MailboxHandlerStops => mb.try_send(1).unwrap(),
        }
        let id = b.id();
        let b = (end != OwnerDropped).then_some(b);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run()));
        assert!(ran.is_ok(), "{end:?}: the panic in Drop is contained");
        assert_eq!(
            line.cause().map(|c| c.to_string()),
            Some(in_drop.clone()),
            "{end:?}"
        );
        assert_eq!(
            entries(&log),
            [format!("watcher: {} {in_drop}", id)],
            "{end:?}: b's monitor is told"
        );
        assert!(
            matches!(behind.cause(), Some(Cause::Cascade { from, .. }) if from == id),
            "{end:?}: b's linked watcher is cascaded: {:?}",
            behind.cause()
        );
        if end == Cascade {
            assert!(
                matches!(after.cause(), Some(Cause::Cascade { from, .. }) if from == origin.id()),
                "the cascade queued behind b's runs"
            );
        } else {
            assert!(origin.is_alive() && after.is_alive(), "{end:?}");
        }
        assert_runtime_still_works(&mut rt, &by);
        // The owner's drop later changes nothing.
        drop(b);
        rt.run();
        assert_eq!(line.cause().map(|c| c.to_string()), Some(in_drop.clone()));
        assert_eq!(entries(&log).len(), 1, "{end:?}: exactly one Down");
    }
}

/// A state with drop glue that does not panic.
struct Holder(#[allow(dead_code)] String);

impl Holder {
    fn init(_: CX![]) -> Option<Self> {
        Some(Holder("held".to_owned()))
    }
}

#[test]
fn a_panic_in_drop_ends_the_device_only_when_its_last_owner_goes() {
    // Rule 32b's owner-drop case counts owners: a copy made with `owned`
    // and dropped ends nothing, whatever the state.
    let mut rt = Rt::new();
    let a = device!(rt.s, Holder::init());
    rt.run();
    drop(a.owned());
    rt.run();
    assert!(a.is_alive(), "a dropped copy ends nothing: {:?}", a.cause());
    let line = a.line();
    drop(a);
    rt.run();
    assert!(
        matches!(line.cause(), Some(Cause::Dropped)),
        "{:?}",
        line.cause()
    );

    // Two owners of a state whose `Drop` panics: the first dropped ends
    // nothing, the last ends it with the panic, contained.
    let (mut rt, log, _by) = rt_with_dev("bystander");
    let b = device!(rt.s, Brittle::init());
    let watcher = dev(&mut rt, "watcher", &log);
    rt.run();
    let _ = b
        .monitor(ret_some_to!([watcher], down() as (Down)))
        .unwrap();
    let copy = b.owned();
    let line = b.line();
    drop(b);
    rt.run();
    assert!(line.is_alive() && entries(&log).is_empty());
    drop(copy);
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run()));
    assert!(ran.is_ok(), "the panic in Drop is contained");
    let in_drop = format!("{} in drop", panicked());
    assert_eq!(line.cause().map(|c| c.to_string()), Some(in_drop));
    assert_eq!(entries(&log).len(), 1, "exactly one Down");
}

/// A plain device that fails when asked.
struct Failing;

impl Failing {
    fn init(_: CX![]) -> Option<Self> {
        Some(Failing)
    }

    fn fail(&mut self, cx: CX![]) {
        fail!(cx, "oops");
    }
}

#[test]
fn a_last_owner_dropped_by_its_own_trap_handler_still_contains_a_panic_in_drop() {
    // Rule 32b while the registry holds the device's controller: a raw
    // trap handler, called as the drain tells the device of its linked
    // peer's death, drops the device's last owner (review finding: the
    // owner read "not last" off the controller's reference count, queued
    // no guarded end, and the panic in `Drop` unwound out of `run`,
    // leaving the runtime dead and the device freed unended).
    let (mut rt, log, _by) = rt_with_dev("bystander");
    let a = device!(rt.s, Failing::init());
    let b = device!(rt.s, Brittle::init());
    let watcher = dev(&mut rt, "watcher", &log);
    rt.run();
    let line = b.line();
    let _ = b
        .monitor(ret_some_to!([watcher], down() as (Down)))
        .unwrap();
    b.link(&a, LinkMode::Monitor).unwrap();
    let holder = std::rc::Rc::new(std::cell::RefCell::new(Some(b)));
    let h = holder.clone();
    let trap = Fwd::new(move |_: Down| drop(h.borrow_mut().take()));
    holder.borrow().as_ref().unwrap().trap(trap).unwrap();
    call!([a], fail());
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run()));
    assert!(ran.is_ok(), "the panic in Drop is contained");
    let in_drop = format!("{} in drop", panicked());
    assert_eq!(line.cause().map(|c| c.to_string()), Some(in_drop));
    assert_eq!(entries(&log).len(), 1, "exactly one Down");
}

#[test]
fn drop_of_actor_state_run_by_stakker_itself_is_not_contained() {
    // A plain stakker actor (not a device) whose last owner goes: the end
    // stakker queues runs its own code, and the panic unwinds out of
    // `run`. (A device's owner drop is guarded: rule 32b.)
    let mut rt = Rt::new();
    let plain = stakker::actor!(rt.s, Brittle::init(), stakker::ret_nop!());
    rt.run();
    drop(plain);
    let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run()));
    assert!(escaped.is_err(), "the panic unwinds out of run");

    // A `Stakker` dropped with the device: stakker frees the actor (its
    // watchers are dropped unfired, rule 34), then its state, whose panic
    // unwinds out of the drop.
    let mut rt = Rt::new();
    let b = device!(rt.s, Brittle::init());
    rt.run();
    let unfired = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = unfired.clone();
    let _ = b
        .monitor(Ret::new(move |d: Option<Down>| {
            if d.is_none() {
                count.set(count.get() + 1);
            }
        }))
        .unwrap();
    let line = b.line();
    drop(b);
    let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(rt)));
    assert!(
        escaped.is_err(),
        "the panic unwinds out of the Stakker's drop"
    );
    assert_eq!(unfired.get(), 1, "the watcher's Ret was dropped unfired");
    assert!(line.is_alive() && line.cause().is_none(), "rule 34");
}
