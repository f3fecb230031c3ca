//! Blocking work (rules 160–167 in `src/blocking/mod.rs`): the pool's
//! threads, outcomes, saturation and stop; thread services' deaths,
//! supervision, inboxes and replies.
//!
//! Nothing sleeps: jobs and handlers block on gates the test opens, report
//! through channels, and every wait is bounded by `WAIT`, so a bug fails
//! the test instead of hanging it.

mod common;

use common::TEST_PANIC;
use stakplane::blocking::{
    self, BlockingError, BoxError, PoolConfig, Reply, Service, ServiceError, TrySpawnError,
    WhenFull,
};
use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::rt::{Exit, Runtime, Status};
use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
use stakplane::task::{self, SendError, TrySendError};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The bound of every wait: far longer than any step takes.
const WAIT: Duration = Duration::from_secs(10);

/// A gate jobs and handlers block on until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    #[track_caller]
    fn wait(&self) {
        let (m, cv) = &*self.0;
        let (_open, t) = cv
            .wait_timeout_while(m.lock().unwrap(), WAIT, |open| !*open)
            .unwrap();
        assert!(!t.timed_out(), "the gate was never opened");
    }
}

/// Sends its name when dropped (a closure or message dropped unrun).
struct DropSignal(&'static str, mpsc::Sender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

fn runtime(pool: PoolConfig) -> Runtime {
    common::quiet_test_panics();
    Runtime::builder()
        .blocking_pool(pool)
        .build()
        .expect("runtime")
}

type Outcomes<T> = Rc<RefCell<Vec<Option<Result<T, String>>>>>;

/// A raw `Ret` that records every call, `None` included, and checks it
/// runs on the runtime thread.
fn recorder<T: 'static>(log: &Outcomes<T>) -> Ret<Result<T, BlockingError>> {
    let log = log.clone();
    let me = thread::current().id();
    Ret::new(move |r: Option<Result<T, BlockingError>>| {
        assert_eq!(
            thread::current().id(),
            me,
            "delivered on the runtime thread"
        );
        log.borrow_mut()
            .push(r.map(|r| r.map_err(|e| e.to_string())));
    })
}

/// Runs the loop until it finishes, for at most `WAIT`.
#[track_caller]
fn run_until_done(rt: &mut Runtime) -> Exit {
    match rt.run_for(WAIT).unwrap() {
        Status::Finished(exit) => exit,
        Status::Running => panic!("the runtime did not finish within {WAIT:?}"),
    }
}

/// `fut`, failing (instead of hanging) if it is not done within `WAIT`.
async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    task::timeout(WAIT, fut)
        .await
        .expect("not done within WAIT")
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("").to_string()
}

// ---- the pool ----

#[test]
fn blocking_pool_starts_no_thread_before_its_first_job_and_never_more_than_its_size() {
    let mut rt = runtime(PoolConfig::new().threads(2).queue(8));
    let pool = rt.blocking();
    // Work that is not blocking starts nothing.
    task::spawner(rt.core()).spawn_detached(async {
        task::sleep(Duration::from_millis(1)).await;
    });
    let exit = run_until_done(&mut rt);
    assert_eq!(exit, Exit::Done);
    let s = pool.stats();
    assert_eq!((s.pool_threads, s.live_threads), (0, 0), "{s:?}");

    let mut rt = runtime(PoolConfig::new().threads(2).queue(8));
    let pool = rt.blocking();
    assert_eq!(pool.stats().live_threads, 0);
    let gate = Gate::default();
    let (started_tx, started_rx) = mpsc::channel();
    let out = rt.block_on(bounded(async move {
        let handles: Vec<_> = (0..5u32)
            .map(|i| {
                let (gate, started) = (gate.clone(), started_tx.clone());
                pool.spawn(move || {
                    started.send(i).unwrap();
                    gate.wait();
                    (i, thread_name())
                })
            })
            .collect();
        // Two run (the pool's size), three wait for them.
        let mut first = [
            started_rx.recv_timeout(WAIT).unwrap(),
            started_rx.recv_timeout(WAIT).unwrap(),
        ];
        first.sort();
        assert_eq!(first, [0, 1]);
        let s = pool.stats();
        assert_eq!(
            (
                s.pool_threads,
                s.live_threads,
                s.running,
                s.queued,
                s.outstanding
            ),
            (2, 2, 2, 3, 5),
            "{s:?}"
        );
        gate.open();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        assert_eq!(pool.stats().pool_threads, 2, "no third thread");
        out
    }));
    let out = out.unwrap();
    assert_eq!(
        out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    for (_, name) in out {
        assert!(name.starts_with("stakplane-blocking-"), "{name}");
    }
}

#[test]
fn blocking_a_job_outcome_is_delivered_exactly_once_on_the_runtime_thread_and_a_panic_is_panicked()
{
    let mut rt = runtime(PoolConfig::new().threads(1));
    let pool = rt.blocking();
    let log: Outcomes<u32> = Rc::default();
    let names: Outcomes<String> = Rc::default();
    let (ran_tx, ran_rx) = mpsc::channel();
    {
        pool.spawn_ret(|| 7u32, recorder(&log));
        pool.spawn_ret(
            || -> u32 { panic!("{TEST_PANIC} in a job") },
            recorder(&log),
        );
        // Detached: it still runs.
        drop(pool.spawn(move || ran_tx.send(thread_name()).unwrap()));
        // After the panic, the same (only) thread takes the next job.
        let (pool, names) = (pool.clone(), names.clone());
        task::spawner(rt.core()).spawn_detached(async move {
            let r = pool.spawn(thread_name).await;
            names.borrow_mut().push(Some(r.map_err(|e| e.to_string())));
        });
    };
    let exit = run_until_done(&mut rt);
    assert_eq!(exit, Exit::Done);
    assert_eq!(
        *log.borrow(),
        [
            Some(Ok(7)),
            Some(Err(format!("blocking job panicked: {TEST_PANIC} in a job")))
        ]
    );
    assert_eq!(ran_rx.recv_timeout(WAIT).unwrap(), "stakplane-blocking-0");
    assert_eq!(
        *names.borrow(),
        [Some(Ok("stakplane-blocking-0".to_string()))]
    );
    let s = pool.stats();
    assert_eq!(
        (s.pool_threads, s.completed, s.panicked, s.outstanding),
        (1, 3, 1, 0),
        "{s:?}"
    );

    // No runtime: told at once, typed.
    let mut s = Stakker::new(Instant::now());
    assert!(blocking::pool(&mut s).is_none());
    let h = blocking::spawn_blocking(&mut s, || 1u32);
    assert!(matches!(
        stakplane_testkit::ready(h),
        Err(BlockingError::NoRuntime)
    ));
    let bare: Outcomes<u32> = Rc::default();
    blocking::spawn_blocking_ret(&mut s, || 1u32, recorder(&bare));
    assert_eq!(
        *bare.borrow(),
        [Some(Err(BlockingError::NoRuntime.to_string()))]
    );
    assert!(matches!(
        blocking::try_spawn_blocking(&mut s, || 1u32),
        Err(TrySpawnError::NoRuntime(_))
    ));
}

#[test]
fn blocking_a_full_pool_under_refuse_tells_full_at_once_and_try_spawn_gives_the_closure_back() {
    let mut rt = runtime(
        PoolConfig::new()
            .threads(1)
            .queue(1)
            .when_full(WhenFull::Refuse),
    );
    let pool = rt.blocking();
    let gate = Gate::default();
    let log: Outcomes<&'static str> = Rc::default();
    {
        let g = gate.clone();
        pool.spawn_ret(
            move || {
                g.wait();
                "a"
            },
            recorder(&log),
        );
        pool.spawn_ret(|| "b", recorder(&log));
        // Full: one running, one queued.
        pool.spawn_ret(|| "c", recorder(&log));
        assert_eq!(log.borrow().len(), 1, "told before spawn_ret returns");
        let h = pool.spawn(|| "d");
        assert!(h.is_finished());
        assert!(matches!(
            stakplane_testkit::ready(h),
            Err(BlockingError::Full)
        ));
        match pool.try_spawn(|| "e") {
            Err(TrySpawnError::Full(f)) => assert_eq!(f(), "e", "the closure comes back"),
            other => panic!("not refused: {other:?}"),
        }
        gate.open();
    };
    let exit = run_until_done(&mut rt);
    assert_eq!(exit, Exit::Done);
    let full = Some(Err(BlockingError::Full.to_string()));
    assert_eq!(*log.borrow(), [full, Some(Ok("a")), Some(Ok("b"))]);
    let s = pool.stats();
    assert_eq!((s.refused, s.completed, s.outstanding), (2, 2, 0), "{s:?}");
}

#[test]
fn blocking_a_full_pool_under_wait_queues_jobs_in_submission_order_without_blocking_the_loop() {
    // The default policy is Wait. Room: one job running, one queued.
    let mut rt = runtime(PoolConfig::new().threads(1).queue(1));
    let pool = rt.blocking();
    let order = Arc::new(Mutex::new(Vec::new()));
    let job = {
        let order = order.clone();
        move |name: &'static str, gate: Option<Gate>| {
            let order = order.clone();
            move || {
                if let Some(gate) = gate {
                    gate.wait();
                }
                order.lock().unwrap().push(name)
            }
        }
    };
    let (a_gate, b_gate) = (Gate::default(), Gate::default());
    let (b_runs_tx, b_runs_rx) = mpsc::channel();
    let (a_runs_tx, a_runs_rx) = mpsc::channel();
    let out = rt.block_on(bounded(async move {
        let a_job = job("a", Some(a_gate.clone()));
        let a = pool.spawn(move || {
            a_runs_tx.send(()).unwrap();
            a_job()
        });
        let b_job = job("b", Some(b_gate.clone()));
        let b = pool.spawn(move || {
            b_runs_tx.send(()).unwrap();
            b_job()
        });
        let waiting: Vec<_> = ["c", "d"].map(|n| pool.spawn(job(n, None))).into();
        // The loop runs on while they wait: a timer fires.
        task::sleep(Duration::from_millis(1)).await;
        a_runs_rx.recv_timeout(WAIT).expect("a runs");
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued, s.waiting, s.outstanding),
            (1, 1, 2, 4),
            "{s:?}"
        );
        assert!(matches!(pool.try_spawn(|| ()), Err(TrySpawnError::Full(_))));
        // "a" ends and the thread takes "b": room for one job, but the
        // waiting ones (not polled yet: this task holds the loop) are
        // ahead of any newcomer.
        a_gate.open();
        b_runs_rx.recv_timeout(WAIT).expect("b runs");
        assert!(matches!(pool.try_spawn(|| ()), Err(TrySpawnError::Full(_))));
        let e = pool.spawn(job("e", None));
        b_gate.open();
        for h in [a, b].into_iter().chain(waiting).chain([e]) {
            h.await.unwrap();
        }
        pool.stats()
    }));
    let s = out.unwrap();
    assert_eq!(*order.lock().unwrap(), ["a", "b", "c", "d", "e"]);
    assert_eq!((s.completed, s.refused, s.outstanding), (5, 0, 0), "{s:?}");
}

/// Rule 162: a job that finds the pool full takes its place in line when
/// it is submitted, not when its waiting task is first polled: it counts
/// as waiting at once, and a job submitted after it, once the room freed
/// before that poll, does not overtake it.
#[test]
fn blocking_a_full_pool_under_wait_keeps_a_job_in_line_and_counted_before_its_task_runs() {
    let mut rt = runtime(PoolConfig::new().threads(1).queue(0));
    let pool = rt.blocking();
    let order = Arc::new(Mutex::new(Vec::new()));
    let outcomes: Outcomes<()> = Rc::default();
    let job = |name: &'static str| {
        let order = order.clone();
        move || order.lock().unwrap().push(name)
    };
    let (gate, (runs_tx, runs_rx)) = (Gate::default(), mpsc::channel());
    let (g, x) = (gate.clone(), job("x"));
    pool.spawn_ret(
        move || {
            runs_tx.send(()).unwrap();
            g.wait();
            x()
        },
        recorder(&outcomes),
    );
    runs_rx.recv_timeout(WAIT).expect("x runs");
    // One thread, no queue: "a" waits for room, its task not polled yet.
    pool.spawn_ret(job("a"), recorder(&outcomes));
    let s = pool.stats();
    assert_eq!((s.running, s.waiting, s.outstanding), (1, 1, 2), "{s:?}");
    // "x" ends: its thread frees the room before "a"'s task runs.
    gate.open();
    let deadline = Instant::now() + WAIT;
    while pool.stats().running != 0 {
        assert!(Instant::now() < deadline, "x never finished");
        thread::yield_now();
    }
    pool.spawn_ret(job("b"), recorder(&outcomes)); // after "a"
    assert_eq!(run_until_done(&mut rt), Exit::Done);
    assert_eq!(outcomes.borrow().len(), 3);
    assert_eq!(*order.lock().unwrap(), ["x", "a", "b"]);
}

#[test]
fn blocking_run_is_not_done_while_a_job_outcome_is_to_come() {
    let mut rt = runtime(PoolConfig::new().threads(1));
    let pool = rt.blocking();
    let gate = Gate::default();
    let g = gate.clone();
    // Detached, and nothing else to run: only the job keeps the runtime.
    drop(pool.spawn(move || g.wait()));
    for _ in 0..3 {
        assert_eq!(rt.step(Some(Duration::ZERO)).unwrap(), Status::Running);
    }
    assert_eq!(pool.stats().outstanding, 1);
    gate.open();
    assert_eq!(run_until_done(&mut rt), Exit::Done);
    assert_eq!(pool.stats().completed, 1);
}

#[test]
fn blocking_a_stop_tells_every_job_not_run_shutdown_and_waits_for_the_threads_within_the_grace() {
    let mut rt = runtime(PoolConfig::new().threads(1).queue(1));
    let pool = rt.blocking();
    let log: Outcomes<&'static str> = Rc::default();
    let gate = Gate::default();
    let (dropped_tx, dropped_rx) = mpsc::channel();
    // When the stop drops the queued job, "a" is let go: it finishes
    // within the grace and its value is delivered.
    let opener = {
        let gate = gate.clone();
        thread::spawn(move || {
            let dropped = dropped_rx.recv_timeout(WAIT);
            gate.open();
            dropped
        })
    };
    let (running_tx, running_rx) = mpsc::channel();
    let g = gate.clone();
    pool.spawn_ret(
        move || {
            running_tx.send(()).unwrap();
            g.wait();
            "a"
        },
        recorder(&log),
    );
    running_rx.recv_timeout(WAIT).expect("a runs");
    let signal = DropSignal("b", dropped_tx);
    pool.spawn_ret(
        move || {
            drop(signal);
            "b"
        },
        recorder(&log),
    );
    // Waits for room (Wait policy) when the stop comes.
    pool.spawn_ret(|| "c", recorder(&log));
    // A service still running at the stop: shut down, its thread joined
    // too.
    let svc = Service::start(rt.core(), 4, || Ok(handler(0))).unwrap();
    let svc_line = svc.inbox().line();
    rt.stop();
    let exit = run_until_done(&mut rt);
    drop(svc);
    assert_eq!(exit, Exit::Stopped(Some(stakplane::rt::StopKind::Stopped)));
    assert_eq!(opener.join().unwrap(), Ok("b"));
    let shutdown = Some(Err(BlockingError::Shutdown.to_string()));
    let mut got = log.borrow().clone();
    got.sort();
    let mut want = vec![Some(Ok("a")), shutdown.clone(), shutdown];
    want.sort();
    assert_eq!(got, want, "each told exactly once");
    let s = pool.stats();
    assert_eq!(
        (s.live_threads, s.unjoined, s.outstanding),
        (0, 0, 0),
        "{s:?}"
    );
    assert!(
        matches!(svc_line.cause(), Some(Cause::Shutdown { by: None })),
        "{:?}",
        svc_line.cause()
    );
    // After the stop: refused at once.
    let h = pool.spawn(|| 1);
    assert!(matches!(
        stakplane_testkit::ready(h),
        Err(BlockingError::Shutdown)
    ));
    assert!(matches!(
        pool.try_spawn(|| 1),
        Err(TrySpawnError::Shutdown(_))
    ));
}

#[test]
fn blocking_a_job_still_running_past_the_grace_is_left_reported_and_told_shutdown() {
    common::quiet_test_panics();
    let grace = Duration::from_millis(50);
    let mut rt = Runtime::builder()
        .shutdown_grace(grace)
        .blocking_pool(PoolConfig::new().threads(1))
        .build()
        .unwrap();
    let pool = rt.blocking();
    let log: Outcomes<u32> = Rc::default();
    let gate = Gate::default();
    let g = gate.clone();
    let (running_tx, running_rx) = mpsc::channel();
    pool.spawn_ret(
        move || {
            running_tx.send(()).unwrap();
            g.wait();
            1u32
        },
        recorder(&log),
    );
    running_rx.recv_timeout(WAIT).expect("the job runs");
    rt.stop();
    let t0 = Instant::now();
    let exit = run_until_done(&mut rt);
    let took = t0.elapsed();
    assert!(matches!(exit, Exit::Stopped(_)));
    assert!(took >= grace && took < WAIT, "waited {took:?}");
    assert_eq!(
        *log.borrow(),
        [Some(Err(BlockingError::Shutdown.to_string()))]
    );
    let s = pool.stats();
    assert_eq!((s.unjoined, s.outstanding), (1, 0), "{s:?}");
    // Let the thread go: its late outcome finds the runtime gone.
    gate.open();

    // A runtime dropped unfinished does not wait for its threads at all,
    // whatever its grace.
    let rt = Runtime::builder()
        .shutdown_grace(Duration::from_secs(3600))
        .blocking_pool(PoolConfig::new().threads(1))
        .build()
        .unwrap();
    let gate = Gate::default();
    let g = gate.clone();
    let (running_tx, running_rx) = mpsc::channel();
    let h = rt.blocking().spawn(move || {
        running_tx.send(()).unwrap();
        g.wait();
        1u32
    });
    running_rx.recv_timeout(WAIT).expect("the job runs");
    let t0 = Instant::now();
    drop(rt);
    assert!(t0.elapsed() < WAIT);
    assert!(matches!(
        stakplane_testkit::ready(h),
        Err(BlockingError::Shutdown)
    ));
    gate.open();
}

/// A thread-local value whose destructor blocks until `gate` opens (a
/// per-thread connection saying goodbye), for at most `WAIT`: it says
/// when it starts waiting, then whether it timed out.
struct Goodbye {
    gate: Gate,
    started: mpsc::Sender<()>,
    timed_out: mpsc::Sender<bool>,
}

impl Drop for Goodbye {
    fn drop(&mut self) {
        let _ = self.started.send(());
        // Never `Gate::wait`: a panic in a thread-local destructor aborts.
        let (m, cv) = &*self.gate.0;
        let (_open, t) = cv
            .wait_timeout_while(m.lock().unwrap_or_else(|e| e.into_inner()), WAIT, |o| !*o)
            .unwrap_or_else(|e| e.into_inner());
        let _ = self.timed_out.send(t.timed_out());
    }
}

thread_local! {
    static GOODBYE: RefCell<Option<Goodbye>> = const { RefCell::new(None) };
}

/// A service whose `make` leaves a [`Goodbye`] in its thread's
/// thread-local, and which has run by the time this returns. Gives the
/// service, the gate, and the `started` and `timed_out` receivers.
fn service_saying_goodbye(
    rt: &mut Runtime,
) -> (Service<Msg>, Gate, mpsc::Receiver<()>, mpsc::Receiver<bool>) {
    let gate = Gate::default();
    let (started_tx, started_rx) = mpsc::channel();
    let (timed_out_tx, timed_out_rx) = mpsc::channel();
    let (made_tx, made_rx) = mpsc::channel();
    let g = gate.clone();
    let svc = Service::start(rt.core(), 4, move || {
        GOODBYE.with(|c| {
            *c.borrow_mut() = Some(Goodbye {
                gate: g,
                started: started_tx,
                timed_out: timed_out_tx,
            })
        });
        made_tx.send(()).unwrap();
        Ok(handler(0))
    })
    .unwrap();
    made_rx.recv_timeout(WAIT).expect("make ran");
    (svc, gate, started_rx, timed_out_rx)
}

#[test]
fn blocking_a_stop_waits_for_a_threads_work_never_for_its_thread_local_destructors() {
    common::quiet_test_panics();
    let mut rt = Runtime::builder()
        .shutdown_grace(Duration::from_millis(50))
        .build()
        .unwrap();
    let pool = rt.blocking();
    let (svc, gate, _started, timed_out) = service_saying_goodbye(&mut rt);
    rt.stop();
    let exit = run_until_done(&mut rt);
    // The stop returned: only now is the destructor let go. Had the stop
    // joined the thread, the destructor would have timed out first.
    gate.open();
    drop(svc);
    assert!(matches!(exit, Exit::Stopped(_)));
    assert_eq!(
        timed_out.recv_timeout(WAIT * 2),
        Ok(false),
        "the stop waited for the thread-local destructor"
    );
    let s = pool.stats();
    assert_eq!(
        (s.live_threads, s.unjoined),
        (0, 0),
        "the thread's work ended: not counted as left running; {s:?}"
    );
}

#[test]
fn blocking_starting_a_thread_never_waits_for_an_ended_threads_thread_local_destructor() {
    let mut rt = runtime(PoolConfig::new());
    let (first, gate, started, timed_out) = service_saying_goodbye(&mut rt);
    // The first service's work ends; its thread-local destructor blocks.
    first.inbox().close();
    started
        .recv_timeout(WAIT)
        .expect("the destructor runs once the work ended");
    // Starting another thread on the runtime thread meanwhile.
    let second = Service::start(rt.core(), 4, || Ok(handler(2))).unwrap();
    gate.open();
    assert_eq!(
        timed_out.recv_timeout(WAIT * 2),
        Ok(false),
        "starting a thread waited for another's thread-local destructor"
    );
    let inbox = second.inbox().clone();
    let answer = rt.block_on(bounded(async move {
        let _second = second;
        inbox.ask(Msg::Ping).await
    }));
    assert_eq!(answer.unwrap().unwrap(), 2);
    drop(first);
}

// ---- thread services ----

enum Msg {
    Ping(Reply<u32>),
    Hold(Gate, mpsc::Sender<u32>, u32),
    Crash,
    CrashHolding(Reply<u32>),
    Fail,
    Forget(Reply<u32>),
    Signal(#[allow(dead_code)] DropSignal),
}

#[derive(Debug)]
struct Broken;
impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken")
    }
}
impl std::error::Error for Broken {}

/// A handler answering `Ping` with `n`.
fn handler(n: u32) -> impl FnMut(Msg) -> Result<(), BoxError> {
    move |msg| {
        match msg {
            Msg::Ping(r) => {
                let _ = r.send(n);
            }
            Msg::Hold(gate, took, i) => {
                took.send(i).unwrap();
                gate.wait();
            }
            Msg::Crash => panic!("{TEST_PANIC} in a handler"),
            Msg::CrashHolding(_r) => panic!("{TEST_PANIC} holding a reply"),
            Msg::Fail => return Err(Broken.into()),
            Msg::Forget(r) => drop(r),
            Msg::Signal(_) => {}
        }
        Ok(())
    }
}

/// The `Down` of the service's device, awaited.
fn down_of(dev: &impl DeviceRef) -> task::RetFuture<Down> {
    let (down, ret) = task::ret_to_future::<Down>();
    let _ = dev.monitor(ret);
    down
}

#[test]
fn service_death_is_its_handlers_end_and_a_monitor_sees_the_cause() {
    let mut rt = runtime(PoolConfig::new());
    let pool = rt.blocking();
    let core = rt.core();
    let start = |core: &mut Core, make: Box<dyn FnOnce() -> Result<_, BoxError> + Send>| {
        Service::start(core, 4, make).unwrap()
    };
    let panics = start(core, Box::new(|| Ok(handler(0))));
    let fails = start(core, Box::new(|| Ok(handler(0))));
    let make_fails = start(core, Box::new(|| Err(Broken.into())));
    let make_panics = start(core, Box::new(|| panic!("{TEST_PANIC} in make")));
    let closed = start(core, Box::new(|| Ok(handler(0))));
    let killed = start(core, Box::new(|| Ok(handler(0))));
    let downs: Vec<_> = [&panics, &fails, &make_fails, &make_panics, &closed, &killed]
        .map(|s| down_of(s.device()))
        .into();
    panics.inbox().try_send(Msg::Crash).unwrap();
    fails.inbox().try_send(Msg::Fail).unwrap();
    let (signal_tx, signal_rx) = mpsc::channel();
    closed
        .inbox()
        .try_send(Msg::Signal(DropSignal(
            "handled before the stop",
            signal_tx,
        )))
        .unwrap();
    closed.inbox().close();
    // Killed while its handler holds a message: that one is finished, the
    // queued one is dropped, and the thread ends.
    let gate = Gate::default();
    let (took_tx, took_rx) = mpsc::channel();
    killed
        .inbox()
        .try_send(Msg::Hold(gate.clone(), took_tx, 1))
        .unwrap();
    assert_eq!(took_rx.recv_timeout(WAIT).unwrap(), 1);
    let (queued_tx, queued_rx) = mpsc::channel();
    killed
        .inbox()
        .try_send(Msg::Signal(DropSignal("dropped unhandled", queued_tx)))
        .unwrap();
    killed.device().kill(Broken).unwrap();
    let killed_inbox = killed.inbox().clone();
    let services = (panics, fails, make_fails, make_panics, closed, killed);
    let causes = rt.block_on(bounded(async move {
        let _keep = services;
        let mut causes = Vec::new();
        for d in downs {
            causes.push(d.await.unwrap().cause);
        }
        assert_eq!(queued_rx.recv_timeout(WAIT).unwrap(), "dropped unhandled");
        assert!(matches!(
            killed_inbox.try_send(Msg::Crash),
            Err(TrySendError::Closed(_))
        ));
        gate.open();
        causes
    }));
    let causes = causes.unwrap();
    let err_is_broken =
        |c: &Cause| matches!(c, Cause::Error(e) if e.downcast_ref::<Broken>().is_some());
    assert!(matches!(&causes[0], Cause::Panic(m) if **m == *format!("{TEST_PANIC} in a handler")));
    assert!(err_is_broken(&causes[1]), "{}", causes[1]);
    assert!(err_is_broken(&causes[2]), "{}", causes[2]);
    assert!(matches!(&causes[3], Cause::Panic(m) if **m == *format!("{TEST_PANIC} in make")));
    assert!(matches!(causes[4], Cause::Stopped), "{}", causes[4]);
    assert_eq!(
        signal_rx.recv_timeout(WAIT).unwrap(),
        "handled before the stop"
    );
    assert!(matches!(causes[5], Cause::Killed(_)), "{}", causes[5]);
    // Every thread ended and was joined at the stop.
    let s = pool.stats();
    assert_eq!((s.live_threads, s.unjoined), (0, 0), "{s:?}");
}

#[test]
fn service_a_supervisor_restarts_a_failed_service_at_the_same_address() {
    let mut rt = runtime(PoolConfig::new());
    static STARTS: AtomicU32 = AtomicU32::new(0);
    let spec = ChildSpec::worker("svc", |core| {
        let svc = Service::start(core, 4, || {
            let n = STARTS.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(handler(n))
        })?;
        Ok(svc.into())
    })
    .hold(4, Overflow::Reject);
    let addr = spec.addr();
    let sup_spec = SupervisorSpec::one_for_one()
        .intensity(5, Duration::from_secs(60))
        .child(spec);
    let sup = Supervisor::start(rt.core(), sup_spec).unwrap();
    let out = rt.block_on(bounded(async move {
        let first: blocking::Inbox<Msg> = stakplane::ask!([addr], inbox()).await.unwrap();
        assert_eq!(first.ask(Msg::Ping).await.unwrap(), 1);
        let down = down_of(&first.line());
        // An ask in flight when the handler panics: no reply, and the
        // service's cause.
        let lost = first.ask(Msg::CrashHolding).await;
        let down = down.await.unwrap();
        assert!(matches!(&down.cause, Cause::Panic(_)), "{}", down.cause);
        match lost {
            Err(ServiceError::NoReply {
                cause: Some(Cause::Panic(m)),
            }) => assert_eq!(&*m, format!("{TEST_PANIC} holding a reply")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            first.try_send(Msg::Crash),
            Err(TrySendError::Closed(_))
        ));
        // The restarted service: a new device, thread and inbox at the
        // same Addr.
        let second: blocking::Inbox<Msg> = stakplane::ask!([addr], inbox()).await.unwrap();
        assert_ne!(second.id(), first.id());
        assert_eq!(second.ask(Msg::Ping).await.unwrap(), 2);
        // Through the Addr, as an actor would: try_send and send.
        let (signal_tx, signal_rx) = mpsc::channel();
        let sent = stakplane::ask!(
            [addr],
            try_send(Msg::Signal(DropSignal("via try_send", signal_tx)))
        );
        assert!(sent.await.unwrap().is_ok());
        assert_eq!(signal_rx.recv_timeout(WAIT).unwrap(), "via try_send");
        let down2 = down_of(&second.line());
        assert!(stakplane::ask!([addr], send(Msg::Fail))
            .await
            .unwrap()
            .is_ok());
        let down2 = down2.await.unwrap();
        assert!(matches!(&down2.cause, Cause::Error(_)), "{}", down2.cause);
        let third: blocking::Inbox<Msg> = stakplane::ask!([addr], inbox()).await.unwrap();
        assert_eq!(third.ask(Msg::Ping).await.unwrap(), 3);
        third.id()
    }));
    let third = out.unwrap();
    assert_eq!(STARTS.load(Ordering::SeqCst), 3);
    assert_ne!(Some(third), None);
    drop(sup);
    let s = rt.blocking().stats();
    assert_eq!((s.live_threads, s.unjoined), (0, 0), "{s:?}");
}

fn hold(gate: &Gate, took: &mpsc::Sender<u32>, i: u32) -> Msg {
    Msg::Hold(gate.clone(), took.clone(), i)
}

#[test]
fn service_inbox_is_bounded_full_gives_the_message_back_and_sends_wait_in_order() {
    let mut rt = runtime(PoolConfig::new());
    let (dev, inbox) = Service::start(rt.core(), 2, || Ok(handler(0)))
        .unwrap()
        .into_parts();
    let (other_dev, other) = Service::start(rt.core(), 1, || Ok(handler(0)))
        .unwrap()
        .into_parts();
    assert_eq!((inbox.capacity(), other.capacity()), (2, 1));
    let spawner = task::spawner(rt.core());
    let out = rt.block_on(bounded(async move {
        let (gate, (took_tx, took_rx)) = (Gate::default(), mpsc::channel());
        inbox.try_send(hold(&gate, &took_tx, 0)).unwrap();
        assert_eq!(took_rx.recv_timeout(WAIT).unwrap(), 0, "in hand");
        inbox.try_send(hold(&gate, &took_tx, 1)).unwrap();
        inbox.try_send(hold(&gate, &took_tx, 2)).unwrap();
        assert_eq!(inbox.len(), 2);
        match inbox.try_send(hold(&gate, &took_tx, 3)) {
            Err(TrySendError::Full(Msg::Hold(_, _, 3))) => {}
            other => panic!("not refused full: {other:?}"),
        }
        // Two sends wait, in order; a try_send never overtakes them.
        let w4 = spawner.spawn(inbox.send(hold(&gate, &took_tx, 4)));
        let w5 = spawner.spawn(inbox.send(hold(&gate, &took_tx, 5)));
        task::sleep(Duration::from_millis(1)).await;
        assert!(!w4.is_finished() && !w5.is_finished());
        gate.open();
        let seen: Vec<u32> = (0..2)
            .map(|_| took_rx.recv_timeout(WAIT).unwrap())
            .collect();
        assert_eq!(seen, [1, 2]);
        // Room is free now, but the waiting sends come first.
        assert!(matches!(
            inbox.try_send(hold(&gate, &took_tx, 6)),
            Err(TrySendError::Full(_))
        ));
        w4.await.unwrap().unwrap();
        w5.await.unwrap().unwrap();
        let seen: Vec<u32> = (0..2)
            .map(|_| took_rx.recv_timeout(WAIT).unwrap())
            .collect();
        assert_eq!(seen, [4, 5]);
        // Closed: the queued messages are handled, later ones come back,
        // and the device stops normally.
        let down = down_of(&inbox.line());
        inbox.close();
        assert!(matches!(
            inbox.try_send(Msg::Fail),
            Err(TrySendError::Closed(Msg::Fail))
        ));
        let cause = down.await.unwrap().cause;

        // A send waiting when its service ends gets its message back.
        let gate = Gate::default();
        other.try_send(hold(&gate, &took_tx, 10)).unwrap();
        assert_eq!(took_rx.recv_timeout(WAIT).unwrap(), 10);
        other.try_send(hold(&gate, &took_tx, 11)).unwrap();
        let waiting = spawner.spawn(other.send(hold(&gate, &took_tx, 12)));
        task::sleep(Duration::from_millis(1)).await;
        other.line().kill(Broken).unwrap();
        let back = waiting.await.unwrap();
        gate.open();
        (cause, back)
    }));
    let (cause, back) = out.unwrap();
    assert!(matches!(cause, Cause::Stopped), "{cause}");
    assert!(matches!(back, Err(SendError::Closed(Msg::Hold(_, _, 12)))));
    drop((dev, other_dev));
}

#[test]
fn service_a_reply_crosses_back_exactly_once_and_a_dropped_one_drops_its_ret() {
    let mut rt = runtime(PoolConfig::new());
    let calls: Rc<RefCell<Vec<Option<u32>>>> = Rc::default();
    let me = thread::current().id();
    let ret = |calls: &Rc<RefCell<Vec<Option<u32>>>>| {
        let calls = calls.clone();
        Ret::new(move |v: Option<u32>| {
            assert_eq!(thread::current().id(), me);
            calls.borrow_mut().push(v);
        })
    };
    let sent = Reply::new(rt.core(), ret(&calls));
    let dropped = Reply::new(rt.core(), ret(&calls));
    thread::spawn(move || {
        sent.send(5).unwrap();
        drop(dropped);
    })
    .join()
    .unwrap();
    assert!(calls.borrow().is_empty(), "delivered on the runtime thread");
    // A service keeps the runtime running.
    let svc = Service::start(rt.core(), 1, || Ok(handler(0))).unwrap();
    let inbox = svc.inbox().clone();
    // Both posts are in: one turn delivers them, each once.
    assert_eq!(rt.step(Some(Duration::ZERO)).unwrap(), Status::Running);
    assert_eq!(*calls.borrow(), [Some(5), None]);
    // A reply the handler forgets, the service alive: no cause.
    let forgotten = rt.block_on(bounded(async move {
        let _svc = svc;
        inbox.ask(Msg::Forget).await
    }));
    assert!(matches!(
        forgotten.unwrap(),
        Err(ServiceError::NoReply { cause: None })
    ));
    assert_eq!(*calls.borrow(), [Some(5), None]);
    // The runtime finished: nothing crosses any more.
    let late = Reply::new(rt.core(), ret(&calls));
    assert_eq!(late.send(7), Err(7));
    assert_eq!(*calls.borrow(), [Some(5), None, None]);
    let mut s = Stakker::new(Instant::now());
    assert!(Reply::try_new(&mut s, ret(&calls)).is_err());
}

#[test]
fn service_a_reply_dropped_by_make_is_told_when_make_returns_not_at_the_first_message() {
    let mut rt = runtime(PoolConfig::new());
    let got: Rc<RefCell<Vec<Option<u32>>>> = Rc::default();
    let g = got.clone();
    let reply = Reply::new(
        rt.core(),
        Ret::new(move |v: Option<u32>| g.borrow_mut().push(v)),
    );
    let svc = Service::start(rt.core(), 4, move || {
        drop(reply);
        Ok(handler(0))
    })
    .unwrap();
    // The service idles (it keeps the runtime running): the drop is told
    // all the same. Bounded: without it, this fails after `WAIT`.
    let deadline = Instant::now() + WAIT;
    while got.borrow().is_empty() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        assert_eq!(rt.step(Some(deadline - now)).unwrap(), Status::Running);
    }
    assert_eq!(
        *got.borrow(),
        [None],
        "the Reply dropped by make was not told while the service idled"
    );
    // A message handled later tells it no second time.
    let inbox = svc.inbox().clone();
    let answer = rt.block_on(bounded(async move {
        let _svc = svc;
        inbox.ask(Msg::Ping).await
    }));
    assert_eq!(answer.unwrap().unwrap(), 0);
    assert_eq!(*got.borrow(), [None], "told exactly once");
}
