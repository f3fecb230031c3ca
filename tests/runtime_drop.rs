//! What happens when the runtime itself is dropped with live devices
//! (NOTES.md, "Runtime drop").

mod common;

use common::*;
use stakplane::prelude::*;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// Records every call of a `Ret<Down>` handler; `Send` so the record
/// outlives the thread the runtime ran on.
type Rec = Arc<Mutex<Vec<(&'static str, Option<String>)>>>;

fn recording_ret(rec: &Rec, name: &'static str) -> Ret<Down> {
    let rec = rec.clone();
    Ret::new(move |d: Option<Down>| {
        let seen = d.map(|d| d.cause.to_string());
        rec.lock().expect("record lock").push((name, seen));
    })
}

/// A `Ret<Down>` that counts in `unfired` each time it is dropped unfired
/// (its handler called with `None`).
fn counting_unfired(unfired: &Rc<Cell<u32>>) -> Ret<Down> {
    let count = unfired.clone();
    Ret::new(move |d: Option<Down>| {
        if d.is_none() {
            count.set(count.get() + 1);
        }
    })
}

/// A parent that owns a child device, so the child lives inside the
/// runtime's actor tree.
struct Parent {
    _child: DeviceOwn<Dev>,
}

impl Parent {
    fn init(cx: CX![], log: Log, rec: Rec) -> Option<Self> {
        let child = device!(cx, Dev::init("child", log));
        let _ = child.monitor(recording_ret(&rec, "child")).unwrap();
        let _line = child.line(); // installs the controller: the hardest case
        Some(Parent { _child: child })
    }
}

#[test]
fn runtime_dropped_with_live_devices_drops_watchers_unfired() {
    let rec: Rec = Arc::new(Mutex::new(Vec::new()));
    let rec2 = rec.clone();
    std::thread::spawn(move || {
        let rec = rec2;
        let log = new_log();
        let mut rt = Rt::new();
        // Held outside the runtime, outliving it.
        let held = dev(&mut rt, "held", &log);
        let held_line = held.line();
        let _ = held.monitor(recording_ret(&rec, "held")).unwrap();
        // Owned inside the actor tree.
        let parent = device!(rt.s, Parent::init(log.clone(), rec.clone()));
        rt.run();
        let _ = parent.monitor(recording_ret(&rec, "parent")).unwrap();
        // Stopped properly before the drop: a normal Down.
        let done = dev(&mut rt, "done", &log);
        let _ = done.monitor(recording_ret(&rec, "done")).unwrap();
        call!([done], stop());
        rt.run();
        // Work still queued when the runtime goes away.
        call!([held], ping());
        drop(parent);
        drop(rt);
        drop(held);
        // Nothing can run any more: no Down was invented.
        assert!(held_line.is_alive());
        let delivered: Vec<_> = rec.lock().unwrap().iter().map(|r| r.0).collect();
        assert!(!delivered.contains(&"held"));
    })
    .join()
    .expect("no panic while tearing down");

    let mut calls = rec.lock().unwrap().clone();
    calls.sort();
    assert_eq!(
        calls,
        [
            ("child", None),
            ("done", Some("stopped".to_string())),
            ("held", None),
            ("parent", None),
        ],
        "every watcher's Ret handler ran exactly once; None for devices the runtime never ended"
    );
}

#[test]
fn a_dropped_runtime_frees_its_linked_devices() {
    // Two runtimes on one thread: `a` lives in one that is dropped after
    // its owner, `b` (in the other) watches it through a link. The registry
    // must not keep `a`'s actor alive: stakker frees it, its watchers are
    // dropped unfired, and nothing is left behind.
    let base = stakplane::registry_stats();
    let unfired = Rc::new(Cell::new(0));
    let (mut rt_b, log, b) = rt_with_dev("b");
    rt_b.run();
    for _ in 0..3 {
        let mut rt_a = Rt::new();
        let a = dev(&mut rt_a, "a", &log);
        rt_a.run();
        b.link(&a, LinkMode::Monitor).unwrap();
        let _ = a.monitor(counting_unfired(&unfired));
        drop(a);
        drop(rt_a); // the queued Dropped end never runs
    }
    assert_eq!(
        unfired.get(),
        3,
        "each watcher's Ret was dropped unfired, once"
    );
    assert!(b.is_alive(), "no Down was invented for b's link");
    drop(b);
    rt_b.run();
    assert_eq!(stakplane::registry_stats(), base);
}

#[test]
fn nested_deaths_while_watchers_are_told_are_safe() {
    // Dropping the runtime frees `a` unended; dropping its watcher Ret
    // (unfired) frees `c`'s last actor reference, so `c` dies in the middle
    // of `a`'s watcher list, taking its own link node off that list.
    let base = stakplane::registry_stats();
    let log = new_log();
    let mut rt = Rt::new();
    let a = dev(&mut rt, "a", &log);
    let c = dev(&mut rt, "c", &log);
    rt.run();
    let _ = a.monitor(ret_some_to!([c], down() as (Down))).unwrap();
    c.link(&a, LinkMode::Monitor).unwrap();
    let _ = a.monitor(ret_nop!()).unwrap();
    drop(c);
    drop(a);
    drop(rt);
    assert_eq!(stakplane::registry_stats(), base);
}

#[test]
fn a_trapping_device_does_not_keep_itself_alive() {
    // The usual trap handler holds the device's own actor; it lives with
    // the owners, not in the registry, so a dropped runtime frees it.
    let base = stakplane::registry_stats();
    let log = new_log();
    let unfired = Rc::new(Cell::new(0));
    let mut rt = Rt::new();
    let d = trapping_dev(&mut rt, "d", &log);
    rt.run();
    let _ = d.monitor(counting_unfired(&unfired));
    drop(d);
    drop(rt);
    assert_eq!(
        unfired.get(),
        1,
        "the watcher's Ret was dropped unfired, once"
    );
    assert_eq!(stakplane::registry_stats(), base);
}

/// Who heard, and the cause text it heard (`None`: its Ret was dropped
/// unfired).
type Heard = (&'static str, Option<String>);

#[test]
fn a_device_freed_unended_gives_every_watcher_the_same_answer() {
    // `a` is freed with its runtime without ever being ended. Its early
    // watcher's Ret was dropped unfired; whoever watches it later, and
    // whatever a handle asks, gets the same answer: it was never ended, no
    // Down will ever come, and nothing is invented.
    let base = stakplane::registry_stats();
    let log = new_log();
    let heard: Rc<RefCell<Vec<Heard>>> = Rc::default();
    let ret = |name: &'static str| {
        let heard = heard.clone();
        Ret::new(move |d: Option<Down>| {
            heard
                .borrow_mut()
                .push((name, d.map(|d| d.cause.to_string())));
        })
    };
    let mut rt_b = Rt::new();
    let b = dev(&mut rt_b, "b", &log);
    rt_b.run();
    let mut rt = Rt::new();
    let a = dev(&mut rt, "a", &log);
    rt.run();
    let line = a.line();
    let _ = a.monitor(ret("early")).expect("alive");
    drop(a);
    drop(rt); // the queued Dropped end never runs
    assert_eq!(*heard.borrow(), [("early", None)]);

    // A late monitor is accepted and its Ret dropped unfired at once.
    let late = line
        .monitor(ret("late"))
        .expect("a late monitor is accepted");
    assert_eq!(*heard.borrow(), [("early", None), ("late", None)]);
    let fwd_heard = Rc::new(Cell::new(0));
    let count = fwd_heard.clone();
    let late_fwd = line
        .monitor_fwd(Fwd::new(move |_: Down| count.set(count.get() + 1)))
        .expect("a late Fwd monitor is accepted");
    // Nothing is registered, so nothing can be cancelled.
    assert!(!late.cancel());
    assert!(!late_fwd.cancel());
    // Every handle question gets the answer of rule 34: never ended.
    assert!(line.is_alive());
    assert!(line.cause().is_none());
    // Links, requests and traps are accepted and change nothing.
    b.link(&line, LinkMode::Peer).expect("link accepted");
    line.link(&b, LinkMode::Peer).expect("link accepted");
    line.kill("late kill").expect("kill accepted");
    line.shutdown(None).expect("shutdown accepted");
    line.trap(fwd_to!([b], down() as (Down)))
        .expect("trap accepted");
    line.untrap();
    line.unlink(&b, LinkMode::Peer);
    rt_b.run();
    assert!(line.is_alive() && line.cause().is_none());
    assert_eq!(fwd_heard.get(), 0, "no Down invented");
    assert_eq!(heard.borrow().len(), 2, "each Ret dropped exactly once");
    call!([b], fail());
    rt_b.run();
    assert!(entries(&log).is_empty(), "b's end reaches nobody through a");
    assert!(line.is_alive() && line.cause().is_none());
    drop(b);
    drop(line);
    rt_b.run();
    assert_eq!(stakplane::registry_stats(), base);
}

/// Rule 34 in the thread's counts: devices freed unended with their
/// dropped runtime neither live nor died, and still count as created
/// (`device_counts`, the runtime status's `devices_created`).
#[test]
fn devices_freed_unended_with_their_runtime_still_count_as_created() {
    let (counts, stats) = (stakplane::device_counts(), stakplane::registry_stats());
    let (rt, _log, devs) = rt_with_devs(["a", "b"]);
    drop(devs);
    drop(rt); // the queued `Dropped` ends never run
    let after = stakplane::device_counts();
    assert_eq!(after.created - counts.created, 2, "{after:?}");
    assert_eq!(after.died, counts.died, "nothing died");
    assert_eq!(
        stakplane::registry_stats(),
        stats,
        "nothing live, nothing left"
    );
}
