//! A library written only against the `async_executors` traits, run on
//! the actor thread through `executor::Executor` (feature
//! `async-executors`; rule 46b in `src/executor.rs`), on virtual time.
#![cfg(feature = "async-executors")]

mod common;

use async_executors::{
    LocalSpawnHandle, LocalSpawnHandleExt, SpawnHandleExt, Timer, TimerExt, YieldNow,
};
use common::Rt;
use stakplane::executor::Executor;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// The "library": spawns three jobs and gathers their outputs in order,
/// each job yielding once and sleeping on the executor's timer; then
/// gives up on a job that takes too long.
async fn gather<E>(exec: E, log: Rc<RefCell<Vec<String>>>)
where
    E: LocalSpawnHandle<u32> + Timer + YieldNow + Clone + 'static,
{
    let mut jobs = Vec::new();
    for i in 1..=3u32 {
        let e = exec.clone();
        let job = exec
            .spawn_handle_local(async move {
                e.yield_now().await;
                e.sleep(Duration::from_secs(u64::from(i))).await;
                i * 10
            })
            .expect("spawned");
        jobs.push(job);
    }
    for job in jobs {
        let out = job.await;
        log.borrow_mut().push(format!("job {out}"));
    }
    let slow = exec.sleep(Duration::from_secs(60));
    let timed_out = exec.timeout(Duration::from_secs(5), slow).await.is_err();
    log.borrow_mut().push(format!("timed out: {timed_out}"));
}

#[test]
fn async_executors_a_library_written_against_the_traits_runs_on_the_actor_thread() {
    let mut rt = Rt::new();
    let exec = Executor::new(&mut rt.s);
    let log = Rc::new(RefCell::new(Vec::new()));
    let done = exec
        .spawn_handle_local(gather(exec.clone(), log.clone()))
        .expect("spawned");
    rt.run();
    assert!(log.borrow().is_empty(), "the jobs sleep on stakker's clock");
    rt.advance(Duration::from_secs(2));
    assert_eq!(*log.borrow(), ["job 10", "job 20"], "two seconds in");
    rt.advance(Duration::from_secs(1));
    assert_eq!(*log.borrow(), ["job 10", "job 20", "job 30"]);
    rt.advance(Duration::from_secs(5));
    assert_eq!(
        log.borrow().last().map(String::as_str),
        Some("timed out: true")
    );
    drop(done);
}

#[test]
fn async_executors_a_dropped_handle_cancels_and_a_shut_down_runtime_refuses() {
    let mut rt = Rt::new();
    let exec = Executor::new(&mut rt.s);
    let ran = Rc::new(Cell::new(0));
    let r2 = ran.clone();
    let e2 = exec.clone();
    let job = exec
        .spawn_handle_local(async move {
            e2.sleep(Duration::from_secs(1)).await;
            r2.set(1);
        })
        .expect("spawned");
    rt.run();
    drop(job);
    rt.advance(Duration::from_secs(2));
    assert_eq!(ran.get(), 0, "cancelled with its handle");
    // A Send future through `SpawnHandle`, run here as well.
    let sent = exec.spawn_handle(async { 7u8 }).expect("spawned");
    let got = Rc::new(Cell::new(0));
    let g2 = got.clone();
    let reader = exec
        .spawn_handle_local(async move { g2.set(sent.await) })
        .expect("spawned");
    rt.run();
    drop(reader);
    assert_eq!(got.get(), 7);
    // A sleep dropped early ends its timer task at once.
    let tasks = stakplane::task::spawner(&mut rt.s);
    let before = tasks.live_tasks();
    let nap = exec.sleep(Duration::from_secs(3600));
    rt.run();
    assert_eq!(tasks.live_tasks(), before + 1, "the sleep's timer task");
    drop(nap);
    rt.run();
    assert_eq!(tasks.live_tasks(), before, "gone with the sleep");
    stakplane::task::shutdown(&mut rt.s);
    assert!(
        LocalSpawnHandle::<()>::spawn_handle_local_obj(&exec, Box::new(async {}).into()).is_err(),
        "a shut-down runtime refuses, typed"
    );
}

/// A library that hands blocking work to whatever executor it is given.
#[cfg(feature = "async-executors-blocking")]
async fn checksum<E: async_executors::SpawnBlocking<u64>>(exec: &E, data: Vec<u8>) -> u64 {
    exec.spawn_blocking(move || data.iter().map(|&b| u64::from(b)).sum())
        .await
}

#[cfg(feature = "async-executors-blocking")]
#[test]
fn async_executors_spawn_blocking_runs_on_the_blocking_pool() {
    let mut rt = stakplane::rt::Runtime::new().expect("a runtime");
    let exec = Executor::new(rt.core());
    let out = rt
        .block_on(async move { checksum(&exec, vec![1, 2, 3, 250]).await })
        .expect("block_on");
    assert_eq!(out, 256);
    assert_eq!(rt.blocking().stats().completed, 1, "one job, on the pool");
}
