//! The async side of devices: the guarded `ask!` and `spawn_device`.
mod common;

use common::{dev, entries, new_log, rt_with_dev, trapping_dev, Dev, Log, Rt, TEST_PANIC};
use futures::FutureExt;
use stakplane::prelude::*;
use stakplane::registry_stats;
use stakplane::task::{fwd_to_stream, FwdStream};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

/// A recorder device's monitor handler target.
fn watch(rt: &mut Rt, who: &'static str, log: &Log, target: &impl DeviceRef) -> DeviceOwn<Dev> {
    let w = dev(rt, who, log);
    target.monitor_fwd(fwd_to!([w], down() as (Down))).unwrap();
    w
}

/// Links the task device `t` to `d` (monitor mode) and has a `w` watch
/// `t`, all ready: the setup of the link tests. Returns the watcher.
fn link_and_watch(
    rt: &mut Rt,
    log: &Log,
    t: &impl DeviceRef,
    d: &impl DeviceRef,
) -> DeviceOwn<Dev> {
    t.link(d, LinkMode::Monitor).unwrap();
    let w = watch(rt, "w", log, t);
    rt.run();
    w
}

#[test]
fn ask_returns_the_actor_reply() {
    let (mut rt, _log, d) = rt_with_dev("d");
    let fut = ask!([d], reply());
    let h = spawn(&mut rt.s, fut);
    rt.run();
    assert_eq!(h.now_or_never().unwrap().unwrap().unwrap(), 42);
}

#[test]
fn actor_panics_mid_ask_yields_actor_fail_with_the_panic_cause() {
    let (mut rt, _log, d) = rt_with_dev("d");
    let h = spawn(&mut rt.s, ask!([d], panic_then_reply()));
    rt.run();
    let err = h.now_or_never().unwrap().unwrap().unwrap_err();
    let cause = err.cause().expect("the device's cause is known");
    assert_eq!(cause.to_string(), format!("panicked: {TEST_PANIC} mid-ask"));
    assert!(err
        .to_string()
        .starts_with("actor failed before replying: panicked"));
    assert!(!d.is_alive(), "the panic failed the actor, not the runtime");
}

#[test]
fn ask_of_a_stopped_device_yields_actor_fail_with_stopped() {
    let (mut rt, _log, d) = rt_with_dev("d");
    call!([d], stop());
    rt.run();
    let h = spawn(&mut rt.s, ask!([d], reply()));
    rt.run();
    let err = h.now_or_never().unwrap().unwrap().unwrap_err();
    assert_eq!(
        err.cause().map(|c| c.to_string()).as_deref(),
        Some("stopped")
    );
}

#[test]
fn ask_of_a_plain_actor_that_drops_the_ret_has_no_cause() {
    let (mut rt, _log, d) = rt_with_dev("d");
    let actor: Actor<Dev> = d.actor().clone();
    let h = spawn(&mut rt.s, ask!([actor], drop_reply()));
    rt.run();
    let err = h.now_or_never().unwrap().unwrap().unwrap_err();
    assert!(err.cause().is_none());
    assert!(d.is_alive());
}

#[derive(Debug)]
struct Bad;
impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bad input")
    }
}
impl std::error::Error for Bad {}

#[test]
fn task_device_ends_give_the_right_causes() {
    let mut rt = Rt::new();
    let log = new_log();
    let ok = spawn_device(&mut rt.s, async { Ok::<(), Bad>(()) });
    let err = spawn_device(&mut rt.s, async { Err::<(), Bad>(Bad) });
    let panics = spawn_device(&mut rt.s, async {
        if true {
            panic!("{TEST_PANIC} in a task device");
        }
        Ok::<(), Bad>(())
    });
    let _w = [
        watch(&mut rt, "ok", &log, &ok),
        watch(&mut rt, "err", &log, &err),
        watch(&mut rt, "panics", &log, &panics),
    ];
    assert!(ok.is_alive() && err.is_alive() && panics.is_alive());
    rt.run();
    assert_eq!(
        entries(&log),
        vec![
            format!("ok: {} stopped", ok.id()),
            format!("err: {} failed: bad input", err.id()),
            format!(
                "panics: {} panicked: {TEST_PANIC} in a task device",
                panics.id()
            ),
        ]
    );
    assert!(ok.is_finished() && !ok.is_alive());
    assert!(!ok.cause().unwrap().is_fault());
    assert!(err.cause().unwrap().is_fault());
}

#[test]
fn task_device_abort_kill_and_shutdown_end_it_with_their_cause() {
    let mut rt = Rt::new();
    let log = new_log();
    let drops = Rc::new(Cell::new(0));
    let make = |rt: &mut Rt| {
        let d2 = drops.clone();
        spawn_device(&mut rt.s, async move {
            struct Count(Rc<Cell<u32>>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.set(self.0.get() + 1);
                }
            }
            let _c = Count(d2);
            std::future::pending::<Result<(), Bad>>().await
        })
    };
    let aborted = make(&mut rt);
    let killed = make(&mut rt);
    let shut = make(&mut rt);
    let _w = [
        watch(&mut rt, "aborted", &log, &aborted),
        watch(&mut rt, "killed", &log, &killed),
        watch(&mut rt, "shut", &log, &shut),
    ];
    rt.run();
    aborted.abort();
    killed.kill(Bad).unwrap();
    shut.shutdown(None).unwrap();
    rt.run();
    assert_eq!(drops.get(), 3, "each future dropped once");
    assert_eq!(
        entries(&log),
        vec![
            format!("aborted: {} killed: task aborted", aborted.id()),
            format!("killed: {} killed: bad input", killed.id()),
            format!("shut: {} shut down on request", shut.id()),
        ]
    );
    assert!(matches!(
        killed.kill(Bad),
        Err(LinkError::DeviceDown { .. })
    ));
}

#[test]
fn task_device_linked_to_a_failing_device_is_aborted_with_a_cascade() {
    let (mut rt, log, d) = rt_with_dev("d");
    let t = spawn_device(&mut rt.s, std::future::pending::<Result<(), Bad>>());
    let _w = link_and_watch(&mut rt, &log, &t, &d);
    call!([d], fail());
    rt.run();
    assert_eq!(
        entries(&log),
        vec![format!(
            "w: {} linked device {} died (failed: oops)",
            t.id(),
            d.id()
        )]
    );
    assert!(t.is_finished());
}

#[test]
fn task_device_that_traps_receives_the_down_and_decides() {
    let (mut rt, log, d) = rt_with_dev("d");
    let got: Rc<RefCell<Option<String>>> = Rc::default();
    let (downs, trap): (FwdStream<Down>, _) = fwd_to_stream(4, fwd_nop!());
    let g2 = got.clone();
    let t = spawn_device(&mut rt.s, async move {
        use futures::StreamExt;
        let mut downs = downs;
        if let Some(Ok(down)) = downs.next().await {
            *g2.borrow_mut() = Some(down.cause.to_string());
        }
        Ok::<(), Bad>(())
    });
    t.trap(fwd_to_some(trap)).unwrap();
    let _w = link_and_watch(&mut rt, &log, &t, &d);
    call!([d], panic());
    rt.run();
    assert_eq!(
        got.borrow().as_deref(),
        Some(format!("panicked: {TEST_PANIC}").as_str())
    );
    assert_eq!(entries(&log), vec![format!("w: {} stopped", t.id())]);
}

/// Adapts a stream pipe's `Fwd<Option<T>>` to a `Fwd<T>`.
fn fwd_to_some<T: 'static>(fwd: Fwd<Option<T>>) -> Fwd<T> {
    Fwd::new(move |v| fwd.fwd(Some(v)))
}

#[test]
fn task_device_failing_a_drop_the_task_pipe_ends_with_the_actor_fail() {
    let mut rt = Rt::new();
    let log = new_log();
    let (fut, ret) = stakplane::task::ret_to_future_or_drop::<u32>();
    let t = spawn_device(&mut rt.s, async move {
        fut.await;
        Ok::<(), Bad>(())
    });
    let _w = watch(&mut rt, "w", &log, &t);
    rt.run();
    drop(ret);
    rt.run();
    assert_eq!(
        entries(&log),
        vec![format!(
            "w: {} failed: actor dropped the reply without answering",
            t.id()
        )]
    );
}

#[test]
fn task_device_dropped_with_its_runtime_drops_watchers_unfired() {
    let before = registry_stats();
    let told = Rc::new(Cell::new(0));
    let unfired = Rc::new(Cell::new(0));
    {
        let mut rt = Rt::new();
        let t = spawn_device(&mut rt.s, std::future::pending::<Result<(), Bad>>());
        let (t2, u2) = (told.clone(), unfired.clone());
        t.monitor(Ret::new(move |d: Option<Down>| match d {
            Some(_) => t2.set(t2.get() + 1),
            None => u2.set(u2.get() + 1),
        }))
        .unwrap();
        rt.run();
        drop(t);
    }
    assert_eq!((told.get(), unfired.get()), (0, 1));
    assert_eq!(registry_stats(), before, "nothing left in the registry");
}

#[test]
fn task_device_handle_dropped_keeps_the_task_running() {
    let mut rt = Rt::new();
    let log = new_log();
    let (fut, ret) = stakplane::task::ret_to_future::<u32>();
    let t = spawn_device(
        &mut rt.s,
        async move { fut.await.map(|_| ()).map_err(|_| Bad) },
    );
    let line = t.line();
    let _w = watch(&mut rt, "w", &log, &t);
    drop(t);
    rt.run();
    assert!(line.is_alive());
    ret.ret(1);
    rt.run();
    assert_eq!(entries(&log), vec![format!("w: {} stopped", line.id())]);
    let _ = trapping_dev;
}

#[test]
fn task_device_with_a_panicking_raw_watcher_still_leaves_the_registry_clean() {
    let before = registry_stats();
    {
        let mut rt = Rt::new();
        let t = spawn_device(&mut rt.s, async { Ok::<(), Bad>(()) });
        t.monitor_fwd(Fwd::new(|_: Down| panic!("{TEST_PANIC} in a raw watcher")))
            .unwrap();
        drop(t);
        rt.run();
    }
    assert_eq!(
        registry_stats(),
        before,
        "the task's reference was released"
    );
}
