//! `Runtime::block_on` (rules 101, 101a in `src/rt/block_on.rs`) and `run`
//! keeping what `init` returns (rule 61b in `src/rt.rs`).

mod common;

use common::TEST_PANIC;
use stakplane::prelude::*;
use stakplane::rt::{BlockOnError, Exit, Runtime, StopKind};
use stakplane::task::{self, JoinError};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn virtual_rt() -> Runtime {
    common::quiet_test_panics();
    Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .expect("runtime")
}

struct Counter {
    n: u32,
}
impl Counter {
    fn init(_: CX![]) -> Option<Self> {
        Some(Counter { n: 0 })
    }
    fn bump(&mut self, _: CX![], ret: Ret<u32>) {
        self.n += 1;
        ret.ret(self.n);
    }
}

#[test]
fn block_on_returns_the_output_and_then_stops_in_order() {
    let mut rt = virtual_rt();
    let t0 = rt.now();
    // A device that outlives the future: block_on's stop ends it with
    // Shutdown, as `run`'s stop would.
    let counter = device!(rt.core(), Counter::init());
    let line = counter.line();
    let out = rt.block_on(async move {
        task::sleep(Duration::from_secs(60)).await;
        let a = stakplane::ask!([counter], bump()).await.expect("answer");
        let b = stakplane::ask!([counter], bump()).await.expect("answer");
        // The device's owner moves into the task and is kept alive by it.
        std::mem::forget(counter);
        (a, b, task::now())
    });
    let (a, b, at) = out.expect("block_on returns the output");
    assert_eq!((a, b), (1, 2));
    assert_eq!(at - t0, Duration::from_secs(60), "on the runtime's clock");
    assert!(!line.is_alive(), "the stop ended the device");
    assert!(matches!(line.cause(), Some(Cause::Shutdown { by: None })));
    assert!(matches!(
        rt.step(None),
        Err(stakplane::rt::RtError::Finished)
    ));
}

#[test]
fn block_on_a_panicking_future_returns_the_panic_and_never_hangs() {
    let mut rt = virtual_rt();
    let t0 = rt.now();
    // Other work that keeps the loop running: a kept device, for ever,
    // and a timer an hour away. The timer is this test's bound: if the
    // panic did not stop the runtime (a hang on a real clock), the loop
    // would go on to the timer, which stops it, and the checks below
    // fail instead of the test hanging.
    let keep = device!(rt.core(), Counter::init());
    let line = keep.line();
    rt.keep(keep);
    let bound_hit = Rc::new(Cell::new(false));
    let (hit, remote) = (bound_hit.clone(), rt.remote());
    rt.core().after(Duration::from_secs(3600), move |_| {
        hit.set(true);
        let _ = remote.stop();
    });
    let err = rt
        .block_on(async {
            task::sleep(Duration::from_secs(1)).await;
            if true {
                panic!("{TEST_PANIC} in block_on");
            }
            7
        })
        .expect_err("the future panicked");
    match &err {
        BlockOnError::Task(JoinError::Panicked(m)) => {
            assert_eq!(&**m, format!("{TEST_PANIC} in block_on"))
        }
        other => panic!("expected Task(Panicked), got {other:?}"),
    }
    assert!(err.to_string().contains("in block_on"), "{err}");
    assert!(
        !bound_hit.get(),
        "the panic stopped the runtime, not the timer an hour away"
    );
    // The stop came at 1 s; its drain waits out the grace for the timer
    // still set, and ends there, long before the hour.
    assert!(
        rt.now() - t0 < Duration::from_secs(3600),
        "{:?}",
        rt.now() - t0
    );
    assert!(!line.is_alive(), "the runtime stopped in order");
}

#[test]
fn block_on_returns_stopped_when_the_runtime_is_stopped_first() {
    let mut rt = virtual_rt();
    let remote = rt.remote();
    let err = rt
        .block_on(async move {
            task::sleep(Duration::from_secs(1)).await;
            remote.stop().expect("runtime is open");
            // Never reached: the stop drops this task at its next wait.
            task::sleep(Duration::from_secs(3600)).await;
            5
        })
        .expect_err("stopped before the future finished");
    assert!(
        matches!(
            err,
            BlockOnError::Stopped(Exit::Stopped(Some(StopKind::Stopped)))
        ),
        "{err:?}"
    );
}

#[test]
fn block_on_a_finished_runtime_is_refused_typed() {
    let mut rt = virtual_rt();
    assert_eq!(rt.block_on(async { 1 }).expect("first"), 1);
    assert!(matches!(
        rt.block_on(async { 2 }),
        Err(BlockOnError::Runtime(stakplane::rt::RtError::Finished))
    ));
}

#[test]
fn run_keeps_what_init_returns_until_it_returns() {
    let mut rt = virtual_rt();
    let remote = rt.remote();
    let mut line = None;
    let exit = rt
        .run(|rt| {
            let dev = device!(rt.core(), Counter::init());
            line = Some(dev.line());
            // Stop after a minute: until then the returned owner keeps the
            // device (and so the run) alive.
            task::spawner(rt.core()).spawn_detached(async move {
                task::sleep(Duration::from_secs(60)).await;
                remote.stop().expect("open");
            });
            dev
        })
        .expect("run");
    assert_eq!(exit, Exit::Stopped(Some(StopKind::Stopped)));
    let line = line.expect("set by init");
    assert!(
        matches!(line.cause(), Some(Cause::Shutdown { by: None })),
        "alive until the stop shut it down, not dropped when init returned: {:?}",
        line.cause()
    );
}
