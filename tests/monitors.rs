//! Monitors, identity, handles, ordering and requests: the rules of
//! NOTES.md ("Identity", "Monitors", "Order", "Requests").

mod common;

use common::*;
use stakplane::prelude::*;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

/// What a [`recording_ret`] saw: each call of its handler, in order.
type Rec = Rc<RefCell<Vec<Option<String>>>>;

/// A raw Ret that records every call of its handler (Some or None).
fn recording_ret(rec: &Rec) -> Ret<Down> {
    let rec = rec.clone();
    Ret::new(move |d: Option<Down>| {
        rec.borrow_mut()
            .push(d.map(|d| format!("{} {}", d.id, d.cause)))
    })
}

/// A ready `target` monitored through a [`recording_ret`]: the runtime,
/// the target, its record and the monitor.
fn recorded_target() -> (Rt, DeviceOwn<Dev>, Rec, MonitorRef) {
    let (mut rt, _log, target) = rt_with_dev("target");
    rt.run();
    let rec = Rc::new(RefCell::new(Vec::new()));
    let mref = target.monitor(recording_ret(&rec)).unwrap();
    (rt, target, rec, mref)
}

/// One trapping watcher for each of `names`, then a `target`, all ready.
fn watchers_and_target(
    rt: &mut Rt,
    log: &Log,
    names: &[&'static str],
) -> (Vec<DeviceOwn<Dev>>, DeviceOwn<Dev>) {
    let watchers = names.iter().map(|n| trapping_dev(rt, n, log)).collect();
    let target = dev(rt, "target", log);
    rt.run();
    (watchers, target)
}

#[test]
fn monitor_delivers_exactly_one_down() {
    // {Ret, Fwd} x {by device, by Line} x every way to die.
    for end in End::ALL {
        for by_line in [false, true] {
            let (mut rt, log, [watcher, target]) = rt_with_devs(["watcher", "target"]);
            let id = target.id();
            let line = target.line();
            let by_ret = ret_some_to!([watcher], down() as (Down));
            let by_fwd = fwd_to!([watcher], down() as (Down));
            if by_line {
                let _ = line.monitor(by_ret).unwrap();
                let _ = line.monitor_fwd(by_fwd).unwrap();
            } else {
                let _ = target.monitor(by_ret).unwrap();
                let _ = target.monitor_fwd(by_fwd).unwrap();
            }
            let mut keep = Vec::new();
            end.apply(target, &mut keep);
            rt.run();
            // Anything more that happens must not produce another Down.
            drop(keep);
            rt.run();
            let want = format!("watcher: {id} {}", end.cause_text());
            assert_eq!(
                entries(&log),
                [want.clone(), want],
                "{end:?} by_line={by_line}"
            );
        }
    }
}

#[test]
fn monitor_never_propagates() {
    let mut rt = Rt::new();
    let log = new_log();
    let (watcher, target) = watched_pair(&mut rt, &log);
    call!([target], panic());
    rt.run();
    assert!(watcher.is_alive(), "a monitor is one-way and never kills");
    assert_eq!(entries(&log).len(), 1);
}

#[test]
fn cancel_before_death_delivers_nothing() {
    let (mut rt, target, rec, mref) = recorded_target();
    assert_eq!(mref.target(), target.id());
    assert!(mref.cancel(), "cancelled while registered");
    // Stakker's Ret contract: the dropped Ret's handler sees None, once.
    assert_eq!(*rec.borrow(), [None]);
    call!([target], fail());
    rt.run();
    assert_eq!(*rec.borrow(), [None], "no Down after cancel");
}

#[test]
fn cancel_after_death_returns_false_and_down_still_arrives() {
    let (mut rt, log, [watcher, target]) = rt_with_devs(["watcher", "target"]);
    let id = target.id();
    let mref = target
        .monitor(ret_some_to!([watcher], down() as (Down)))
        .unwrap();
    drop(target);
    // The drop is processed by the queue: the device is still alive here.
    rt.s.run(rt.now, false);
    // Now it is dead and the Down has been sent.
    assert!(!mref.cancel(), "too late: the Down was already sent");
    rt.run();
    assert_eq!(
        entries(&log),
        [format!("watcher: {id} dropped (last owner gone)")]
    );
}

#[test]
fn cancel_between_drop_and_queue_run_wins() {
    // Death happens when stakker terminates the actor, not when the last
    // owner is dropped: a cancel in between still cancels.
    let (mut rt, target, rec, mref) = recorded_target();
    drop(target);
    assert!(mref.cancel());
    rt.run();
    assert_eq!(*rec.borrow(), [None]);
}

#[test]
fn monitor_dead_device_delivers_down_at_once_and_returns_device_down() {
    let (mut rt, _log, target) = rt_with_dev("target");
    let line = target.line();
    call!([target], panic());
    rt.run();
    let rec = Rc::new(RefCell::new(Vec::new()));
    match line.monitor(recording_ret(&rec)) {
        Err(LinkError::DeviceDown { id, cause }) => {
            assert_eq!(id, line.id());
            assert_eq!(cause.to_string(), format!("panicked: {TEST_PANIC}"));
        }
        other => panic!("expected DeviceDown, got {other:?}"),
    }
    let want = Some(format!("{} panicked: {TEST_PANIC}", line.id()));
    assert_eq!(
        rec.borrow().as_slice(),
        std::slice::from_ref(&want),
        "delivered at once, never silence"
    );
    // The same through a Fwd, and through the owning handle.
    let rec2 = rec.clone();
    let fwd = Fwd::new(move |d: Down| {
        rec2.borrow_mut()
            .push(Some(format!("{} {}", d.id, d.cause)))
    });
    assert!(target.monitor_fwd(fwd).is_err());
    assert_eq!(*rec.borrow(), [want.clone(), want]);
}

#[test]
fn ids_are_unique_and_never_reused() {
    let mut seen = HashSet::new();
    let mut rt = Rt::new();
    let log = new_log();
    for _ in 0..1000 {
        let d = dev(&mut rt, "d", &log);
        assert!(seen.insert(d.id()), "id {} reused", d.id());
        drop(d);
        rt.run(); // the slot is freed and reused; the id is not
    }
    // A second runtime on the same thread, and another thread.
    let mut rt2 = Rt::new();
    for _ in 0..100 {
        assert!(seen.insert(dev(&mut rt2, "d", &log).id()));
    }
    let other: Vec<u64> = std::thread::spawn(|| {
        let mut rt = Rt::new();
        let log = new_log();
        (0..100)
            .map(|_| dev(&mut rt, "d", &log).id().get())
            .collect()
    })
    .join()
    .unwrap();
    let mine: HashSet<u64> = seen.iter().map(|id| id.get()).collect();
    assert!(other.iter().all(|id| !mine.contains(id)));
    assert!(seen.iter().all(|id| id.get() != 0));
}

#[test]
fn line_compares_and_hashes_by_id() {
    let (mut rt, log, a) = rt_with_dev("a");
    let b = dev(&mut rt, "b", &log);
    let (a1, a2, b1) = (a.line(), a.clone_line(), b.line());
    assert_eq!(a1, a2);
    assert_ne!(a1, b1);
    assert_eq!(a1.cmp(&b1), a.id().cmp(&b.id()));
    let set: HashSet<Line> = [a1.clone(), a2, b1].into_iter().collect();
    assert_eq!(set.len(), 2);
    assert!(set.contains(&a1));
    assert_eq!(format!("{:?}", a1), format!("Line({})", a.id()));
    assert_eq!(a.id().to_string(), format!("#{}", a.id().get()));
}

/// `clone_line` spelled through the trait, to show both ways give equal Lines.
trait CloneLine {
    fn clone_line(&self) -> Line;
}
impl<T: DeviceRef> CloneLine for T {
    fn clone_line(&self) -> Line {
        self.line().clone()
    }
}

#[test]
fn line_never_keeps_device_alive() {
    let (mut rt, _log, d) = rt_with_dev("d");
    let line = d.line();
    let lines: Vec<Line> = (0..10).map(|_| line.clone()).collect();
    rt.run();
    assert!(line.is_alive());
    drop(d);
    rt.run();
    assert!(!line.is_alive(), "Lines alone do not keep a device alive");
    assert!(lines.iter().all(|l| !l.is_alive()));
}

#[test]
fn line_remembers_cause_after_death() {
    let (mut rt, log, d) = rt_with_dev("d");
    let line = d.line();
    assert!(line.cause().is_none(), "alive: no cause");
    call!([d], fail());
    rt.run();
    drop(d);
    rt.run();
    // Even with the owner gone and other devices reusing slots.
    let others: Vec<_> = (0..10).map(|_| dev(&mut rt, "o", &log)).collect();
    rt.run();
    assert_eq!(line.cause().unwrap().to_string(), "failed: oops");
    assert!(others.iter().all(|o| o.is_alive()));
}

#[test]
fn down_is_queued_after_calls_already_queued() {
    let mut rt = Rt::new();
    let log = new_log();
    let (watcher, target) = watched_pair(&mut rt, &log);
    let order = Rc::new(RefCell::new(Vec::new()));
    call!([target], stop());
    // Queued before the target dies:
    let o = order.clone();
    call!([watcher], |this, _cx| {
        o.borrow_mut()
            .push(format!("call, downs={}", this.log.borrow().len()))
    });
    rt.run();
    assert_eq!(*order.borrow(), ["call, downs=0"]);
    assert_eq!(log.borrow().len(), 1);
}

#[test]
fn watchers_are_notified_in_registration_order() {
    let mut rt = Rt::new();
    let log = new_log();
    let names = ["w0", "w1", "w2", "w3", "w4"];
    let (watchers, target) = watchers_and_target(&mut rt, &log, &names);
    for (i, w) in watchers.iter().enumerate() {
        if i % 2 == 0 {
            let _ = target.monitor(ret_some_to!([w], down() as (Down))).unwrap();
        } else {
            w.link(&target, LinkMode::Monitor).unwrap();
        }
    }
    call!([target], stop());
    rt.run();
    let who: Vec<&str> = log.borrow().iter().map(|(w, _)| *w).collect();
    assert_eq!(who, names);
}

/// The first monitor of a device is kept apart from the others (inline,
/// while it is the only watcher); cancelling it, or the ones after it, must
/// not change the order of the rest, and the registry counts it as a watcher.
#[test]
fn watchers_are_notified_in_registration_order_across_cancels() {
    let mut rt = Rt::new();
    let log = new_log();
    let names = ["w0", "w1", "w2", "w3", "w4", "w5"];
    let (w, target) = watchers_and_target(&mut rt, &log, &names);
    let base = stakplane::registry_stats().watchers;
    let mon = |i: usize| {
        target
            .monitor(ret_some_to!([w[i]], down() as (Down)))
            .unwrap()
    };
    // w0 alone (the inline first watcher), then cancelled: w1 takes its
    // place; w2 and w3 queue behind it.
    mon(0).cancel();
    let m1 = mon(1);
    assert_eq!(
        stakplane::registry_stats().watchers,
        base + 1,
        "the first watcher counts"
    );
    let _ = mon(2);
    let m3 = mon(3);
    // The first one cancelled while others wait: the next monitor goes
    // behind them, never in front.
    assert!(m1.cancel());
    let _ = mon(4);
    assert!(m3.cancel());
    w[5].link(&target, LinkMode::Monitor).unwrap();
    assert_eq!(stakplane::registry_stats().watchers, base + 3);
    call!([target], stop());
    rt.run();
    let who: Vec<&str> = log.borrow().iter().map(|(w, _)| *w).collect();
    assert_eq!(who, ["w2", "w4", "w5"]);
    assert_eq!(stakplane::registry_stats().watchers, base);
}

#[test]
fn shutdown_request_names_the_requester() {
    let (mut rt, log, boss) = rt_with_dev("boss");
    let worker = trapping_dev(&mut rt, "worker", &log);
    let watcher = trapping_dev(&mut rt, "watcher", &log);
    rt.run();
    watcher.link(&worker, LinkMode::Monitor).unwrap();
    worker.line().shutdown(Some(boss.id())).unwrap();
    rt.run();
    let cause = worker.cause().unwrap();
    assert!(!cause.is_fault(), "a requested shutdown is a normal stop");
    assert!(matches!(cause, Cause::Shutdown { by: Some(by) } if by == boss.id()));
    assert_eq!(
        entries(&log),
        [format!(
            "watcher: {} shut down at the request of {}",
            worker.id(),
            boss.id()
        )]
    );
}

#[test]
fn kill_and_shutdown_of_dead_device_return_device_down() {
    let (mut rt, _log, d) = rt_with_dev("d");
    call!([d], stop());
    rt.run();
    assert!(matches!(d.kill("late"), Err(LinkError::DeviceDown { .. })));
    assert!(matches!(
        d.shutdown(None),
        Err(LinkError::DeviceDown { .. })
    ));
    assert!(matches!(
        d.trap(fwd_nop!()),
        Err(LinkError::DeviceDown { .. })
    ));
    assert_eq!(d.cause().unwrap().to_string(), "stopped");
}

#[test]
fn death_happens_when_stakker_terminates_the_actor() {
    let (mut rt, _log, d) = rt_with_dev("d");
    let line = d.line();
    rt.run();
    drop(d);
    assert!(line.is_alive(), "dropping the owner only queues the end");
    line.kill("k").unwrap();
    assert!(line.is_alive(), "a kill is queued too");
    rt.run();
    // The drop was queued first, so it is the cause.
    assert_eq!(
        line.cause().unwrap().to_string(),
        "dropped (last owner gone)"
    );
}
