//! The registry's own guarantees (NOTES.md, "Registry"): it never runs
//! user code while borrowed, and it holds nothing for a dead device that no
//! handle names.

mod common;

use common::*;
use stakplane::prelude::*;
use stakplane::{registry_stats, CauseKind, RegistryStats};
use std::fmt;

/// A user error that holds a Line: dropping it touches the registry.
#[derive(Debug)]
struct LineError(#[allow(dead_code)] Line);

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("line error")
    }
}

impl std::error::Error for LineError {}

struct Failer {
    other: Option<Line>,
}

impl Failer {
    fn init(_: CX![], other: Line) -> Option<Self> {
        Some(Failer { other: Some(other) })
    }

    fn fail_with_line(&mut self, cx: CX![]) {
        if let Some(line) = self.other.take() {
            fail!(cx, LineError(line));
        }
    }
}

#[test]
fn user_values_are_dropped_outside_the_registry() {
    let (mut rt, log, a) = rt_with_dev("a");
    let b = dev(&mut rt, "b", &log);
    let b_line = b.line();
    call!([a], stop());
    rt.run();
    // A trap handler refused by a dead device, holding a Line.
    let handler = fwd_to!([b], down() as (Down));
    let holder = b_line.clone();
    let handler = {
        let h = handler.clone();
        Fwd::new(move |d: Down| {
            let _keep = &holder;
            h.fwd(d)
        })
    };
    assert!(a.trap(handler).is_err());
    // A kill reason refused by a dead device, holding a Line.
    assert!(a.kill(LineError(b_line.clone())).is_err());
    // A recorded cause whose user error holds a Line, freed by the last
    // handle's drop.
    let f = device!(rt.s, Failer::init(b_line.clone()));
    let f_line = f.line();
    call!([f], fail_with_line());
    rt.run();
    assert_eq!(f_line.cause().unwrap().to_string(), "failed: line error");
    drop(f);
    drop(f_line);
    assert!(b.is_alive());
}

/// Runs `scenario` many times and checks the registry is back where it
/// started.
fn leaves_nothing(name: &str, mut scenario: impl FnMut(&mut Rt, &Log)) {
    let mut rt = Rt::new();
    let log = new_log();
    rt.run();
    let before = registry_stats();
    for _ in 0..100 {
        scenario(&mut rt, &log);
        rt.run();
    }
    assert_eq!(registry_stats(), before, "{name} leaked");
}

/// A device that owns itself (a self-reference in its own state).
struct Selfish {
    _me: Option<DeviceOwn<Selfish>>,
}

impl Selfish {
    fn init(_: CX![], me: DeviceOwn<Selfish>) -> Option<Self> {
        Some(Selfish { _me: Some(me) })
    }

    fn quit(&mut self, cx: CX![]) {
        stop!(cx);
    }
}

#[test]
fn dead_devices_leave_nothing_behind() {
    leaves_nothing("create and drop", |rt, log| drop(dev(rt, "d", log)));
    leaves_nothing("stop queued before the owner's drop", |rt, log| {
        let d = dev(rt, "d", log);
        call!([d], stop());
        drop(d);
    });
    leaves_nothing("init panics, owner dropped at once", |rt, _| {
        drop(device!(rt.s, Dev::init_panics()));
    });
    leaves_nothing("stop, run, then drop", |rt, log| {
        let d = dev(rt, "d", log);
        call!([d], fail());
        rt.run();
        assert!(d.cause().is_some());
        drop(d);
    });
    leaves_nothing("a device that owns itself", |rt, _| {
        let d = device_new!(rt.s, Selfish);
        call!([d], Selfish::init(d.owned()));
        call!([d], quit());
        drop(d);
    });
    leaves_nothing("a device that owns its only owner", |rt, _| {
        let d = device_new!(rt.s, Selfish);
        let actor = d.actor().clone();
        call!([actor], Selfish::init(d));
        call!([actor], quit());
    });
    leaves_nothing("monitored, linked and trapped devices", |rt, log| {
        let a = trapping_dev(rt, "a", log);
        let b = dev(rt, "b", log);
        let _ = b.monitor(ret_some_to!([a], down() as (Down)));
        let m = a.monitor(ret_nop!()).unwrap();
        a.link(&b, LinkMode::Peer).unwrap();
        call!([b], panic());
        rt.run();
        m.cancel();
    });
}

#[test]
fn untrap_of_a_device_that_never_trapped_makes_no_record() {
    // A live device nobody observes has no record (rule 36's cheap
    // path); `untrap` with no trap to take leaves it so (review finding:
    // it made one).
    let mut rt = Rt::new();
    let log = Log::default();
    let d = dev(&mut rt, "d", &log);
    rt.run();
    let before = registry_stats().records;
    d.untrap();
    assert_eq!(registry_stats().records, before, "untrap made a record");
}

/// The last owner's release of a device not yet dead is deferred to its
/// death; whatever comes between (other owners dropped, the runtime
/// dropped before the death ran), it is applied once: the death is told
/// once and the slot goes.
#[test]
fn an_owners_release_deferred_to_the_death_is_applied_whatever_comes_first() {
    leaves_nothing("several owners dropped before the queue runs", |rt, log| {
        let ds = [dev(rt, "a", log), dev(rt, "b", log), dev(rt, "c", log)];
        drop(ds);
    });
    // One monitor: the short way; two: a record, the general way.
    for (monitors, other_owner_dropped) in [(1, false), (1, true), (2, false), (2, true)] {
        leaves_nothing("a monitored device dropped", |rt, log| {
            let watcher = dev(rt, "w", log);
            let d = dev(rt, "d", log);
            for _ in 0..monitors {
                let _ = d.monitor(ret_some_to!([watcher], down() as (Down)));
            }
            let before = log.borrow().len();
            drop(d);
            if other_owner_dropped {
                drop(dev(rt, "other", log));
            }
            rt.run();
            assert_eq!(
                log.borrow().len(),
                before + monitors,
                "its death is told once to each monitor"
            );
        });
    }
    let stats = registry_stats();
    for other_owner_dropped in [false, true] {
        let mut rt = Rt::new();
        let log = new_log();
        let d = dev(&mut rt, "d", &log);
        rt.run();
        drop(d);
        if other_owner_dropped {
            drop(dev(&mut rt, "other", &log));
        }
        drop(rt);
        assert_eq!(
            registry_stats(),
            stats,
            "its runtime dropped first (other owner dropped: {other_owner_dropped}): left something behind"
        );
    }
}

/// Whichever way the dying device was linked: watching only (`Monitor`:
/// nothing watches it, so its death has nothing to tell and must still
/// take its link off the live device), watched only (`Notify`), or both.
#[test]
fn dead_linked_watchers_leave_no_nodes_on_live_devices() {
    for (mode, told) in [
        (LinkMode::Peer, true),
        (LinkMode::Monitor, false),
        (LinkMode::Notify, true),
    ] {
        let mut rt = Rt::new();
        let log = new_log();
        let sup = trapping_dev(&mut rt, "sup", &log);
        rt.run();
        let before = registry_stats();
        for _ in 0..200 {
            let w = dev(&mut rt, "w", &log);
            w.link(&sup, mode).unwrap();
            call!([w], stop());
            drop(w);
            rt.run();
        }
        assert_eq!(registry_stats(), before, "{mode:?}: left something behind");
        let seen = if told { 200 } else { 0 };
        assert_eq!(
            log.borrow().len(),
            seen,
            "{mode:?}: the supervisor saw every stop it watched"
        );
    }
}

/// One end of a device, queued before its owner drops it.
type End = fn(&DeviceOwn<Dev>);

/// A device its owner dropped, with no `Line`, no link and at most one
/// monitor, dies by the registry's short path; held by a `Line`, the same
/// device dies by the general one. Both tell the monitor the same cause,
/// count the same death and leave nothing behind, whatever the cause.
#[test]
fn a_death_by_the_short_path_tells_and_counts_as_the_general_one() {
    let ends: [(&str, End, CauseKind); 4] = [
        ("dropped", |_| {}, CauseKind::Dropped),
        ("stopped", |d| call!([d], stop()), CauseKind::Stopped),
        ("failed", |d| call!([d], fail()), CauseKind::Error),
        ("panicked", |d| call!([d], panic()), CauseKind::Panic),
    ];
    for (name, end, kind) in ends {
        let mut seen = Vec::new();
        for held_by_a_line in [false, true] {
            let mut rt = Rt::new();
            let log = new_log();
            let watcher = dev(&mut rt, "w", &log);
            rt.run();
            let (stats, before) = (registry_stats(), stakplane::device_counts());
            let d = dev(&mut rt, "d", &log);
            let _ = d.monitor(ret_some_to!([watcher], down() as (Down)));
            let line = held_by_a_line.then(|| d.line());
            end(&d);
            drop(d);
            rt.run();
            drop(line);
            let after = stakplane::device_counts();
            let died: Vec<u64> = (0..CauseKind::COUNT)
                .map(|k| after.died[k] - before.died[k])
                .collect();
            let mut expected = vec![0; CauseKind::COUNT];
            expected[kind as usize] = 1;
            assert_eq!(died, expected, "{name}: counted as {died:?}");
            assert_eq!(registry_stats(), stats, "{name}: left something behind");
            let told: Vec<(CauseKind, String)> = log
                .borrow()
                .iter()
                .map(|(_, down)| (down.cause.kind(), down.cause.to_string()))
                .collect();
            assert_eq!(told.len(), 1, "{name}: told {told:?}");
            assert_eq!(told[0].0, kind, "{name}: told {told:?}");
            seen.push(told);
        }
        assert_eq!(
            seen[0], seen[1],
            "{name}: the two paths told different causes"
        );
    }
}

/// Reads its own cause while its state is being dropped.
struct Introspect {
    me: Option<DeviceOwn<Introspect>>,
    seen: std::rc::Rc<std::cell::RefCell<Option<Option<String>>>>,
}

impl Introspect {
    fn init(
        _: CX![],
        me: DeviceOwn<Introspect>,
        seen: std::rc::Rc<std::cell::RefCell<Option<Option<String>>>>,
    ) -> Option<Self> {
        Some(Introspect { me: Some(me), seen })
    }

    fn quit(&mut self, cx: CX![]) {
        stop!(cx);
    }
}

impl Drop for Introspect {
    fn drop(&mut self) {
        if let Some(me) = &self.me {
            *self.seen.borrow_mut() = Some(me.cause().map(|c| c.to_string()));
        }
    }
}

#[test]
fn a_device_being_terminated_still_counts_as_alive() {
    let mut rt = Rt::new();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(None));
    let d = device_new!(rt.s, Introspect);
    let line = d.line();
    let actor = d.actor().clone();
    call!([actor], Introspect::init(d, seen.clone()));
    call!([actor], quit());
    rt.run();
    assert_eq!(
        *seen.borrow(),
        Some(None),
        "no cause yet while the state drops"
    );
    assert_eq!(
        line.cause().unwrap().to_string(),
        "stopped",
        "then the real cause"
    );
}

#[test]
fn kill_ends_a_device_still_in_prep() {
    let mut rt = Rt::new();
    let log = new_log();
    let d = device_new!(rt.s, Dev); // no init: stays in Prep
    let line = d.line();
    rt.run();
    assert!(line.is_alive());
    d.kill("stuck in prep").unwrap();
    rt.run();
    assert_eq!(line.cause().unwrap().to_string(), "killed: stuck in prep");
    let d2 = device_new!(rt.s, Dev);
    d2.shutdown(None).unwrap();
    rt.run();
    assert!(matches!(d2.cause(), Some(Cause::Shutdown { by: None })));
    drop(log);
}

/// Rule 32a with two panicking raw watchers, the second one's payload
/// panicking again when dropped: the watchers after them are still told,
/// and the first panic is the one resumed.
#[test]
fn raw_watcher_panic_still_notifies_the_others_when_a_later_payload_panics_on_drop() {
    let (mut rt, _log, target) = rt_with_dev("target");
    rt.run();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen2 = seen.clone();
    let _ = target.monitor(Ret::new(|d: Option<Down>| {
        if d.is_some() {
            panic!("{TEST_PANIC} in a raw watcher");
        }
    }));
    let _ = target.monitor(Ret::new(|d: Option<Down>| {
        if d.is_some() {
            stakplane_testkit::panic_with_a_payload_that_panics_on_drop();
        }
    }));
    let _ = target.monitor(Ret::new(move |d: Option<Down>| {
        seen2.borrow_mut().push(d.is_some())
    }));
    call!([target], stop());
    let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run()));
    let payload = escaped.expect_err("a raw handler is not guarded: it unwinds");
    assert_eq!(
        stakplane_testkit::panic_message(&*payload),
        format!("{TEST_PANIC} in a raw watcher")
    );
    assert_eq!(*seen.borrow(), [true], "the last watcher was told");
}

#[test]
fn raw_watcher_panic_still_notifies_the_others() {
    let (mut rt, _log, target) = rt_with_dev("target");
    rt.run();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let record = |tag: &'static str| {
        let seen = seen.clone();
        Ret::new(move |d: Option<Down>| seen.borrow_mut().push((tag, d.is_some())))
    };
    let _ = target.monitor(record("before"));
    let _ = target.monitor(Ret::new(|d: Option<Down>| {
        if d.is_some() {
            panic!("{TEST_PANIC} in a raw watcher");
        }
    }));
    let _ = target.monitor(record("after"));
    call!([target], stop());
    let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.run()));
    assert!(escaped.is_err(), "a raw handler is not guarded: it unwinds");
    assert_eq!(*seen.borrow(), [("before", true), ("after", true)]);
    // The dead target stays registered while its owner lives; no watcher is left.
    assert_eq!(
        registry_stats(),
        RegistryStats {
            devices: 1,
            records: 1,
            watchers: 0,
            live: 0,
        }
    );
    drop(target);
    assert_eq!(registry_stats(), RegistryStats::default());
}

/// Rule 33 on the commonest end, a device its only owner dropped: with
/// more watchers than the one inline (a second monitor, or a linked
/// watcher: a record) and no `Line`, every watcher still gets exactly one
/// `Down` and nothing is left behind (the short path of such a death
/// serves only a device without a record).
#[test]
fn a_device_its_owner_dropped_tells_every_watcher_of_its_record_once() {
    for linked in [false, true] {
        let (mut rt, log, watcher, _plain) = rt_with_trapper("w", "plain");
        let before = registry_stats();
        let d = dev(&mut rt, "d", &log);
        rt.run();
        let _ = d.monitor(ret_some_to!([watcher], down() as (Down)));
        if linked {
            watcher.link(&d, LinkMode::Monitor).unwrap();
        } else {
            let _ = d.monitor_fwd(fwd_to!([watcher], down() as (Down)));
        }
        let id = d.id();
        drop(d);
        rt.run();
        assert_eq!(
            entries(&log),
            vec![format!("w: {id} dropped (last owner gone)"); 2],
            "linked: {linked}"
        );
        assert_eq!(registry_stats(), before, "linked: {linked}");
    }
}

/// Rule 33 while a death is told: a raw watcher that drops the last
/// handle naming the dying device (its `Line`) does not cut the telling
/// short: the slot and record stay until every watcher has had its `Down`,
/// then go.
#[test]
fn the_last_handle_dropped_by_a_watcher_mid_death_lets_every_watcher_be_told() {
    let mut rt = Rt::new();
    let base = registry_stats();
    let log = new_log();
    let target = dev(&mut rt, "target", &log);
    rt.run();
    let id = target.id();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let line = std::rc::Rc::new(std::cell::RefCell::new(Some(target.line())));
    let (s, l) = (seen.clone(), line.clone());
    let _ = target.monitor_fwd(Fwd::new(move |_: Down| {
        s.borrow_mut().push("drops the line");
        drop(l.borrow_mut().take());
    }));
    for tag in ["second", "third"] {
        let s = seen.clone();
        let _ = target.monitor(Ret::new(move |d: Option<Down>| {
            s.borrow_mut()
                .push(if d.is_some() { tag } else { "unfired" })
        }));
    }
    drop(target); // the Line is the last handle now
    rt.run();
    assert_eq!(
        *seen.borrow(),
        ["drops the line", "second", "third"],
        "{id}"
    );
    assert!(line.borrow().is_none());
    assert_eq!(registry_stats(), base, "nothing left behind");
}
