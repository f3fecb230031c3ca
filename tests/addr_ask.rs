//! `ask` through a supervised child's stable `Addr` (rules 99, 99a in
//! `src/supervise/addr.rs`), and `ask!` as the one guarded way to ask.

mod common;

use common::{Rt, TEST_PANIC};
use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::supervise::{Addr, AddrError, AskError, ChildSpec, Supervisor, SupervisorSpec};
use stakplane::task::{self, ActorFail};
use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// A key-value store: `put` answers the previous value; `crash` panics.
/// Each incarnation knows its number (1 for the first start).
struct Store {
    incarnation: u32,
    map: Vec<(u32, u32)>,
}

impl Store {
    fn init(_: CX![], incarnation: u32) -> Option<Self> {
        Some(Store {
            incarnation,
            map: Vec::new(),
        })
    }
    /// Sets `k` to `v`; the previous value.
    fn insert(&mut self, k: u32, v: u32) -> Option<u32> {
        let old = self
            .map
            .iter()
            .position(|e| e.0 == k)
            .map(|i| self.map.remove(i).1);
        self.map.push((k, v));
        old
    }
    fn put(&mut self, _: CX![], k: u32, v: u32, ret: Ret<Option<u32>>) {
        ret.ret(self.insert(k, v));
    }
    /// `put`, answered with the number of the incarnation that took it.
    fn put_by(&mut self, _: CX![], k: u32, v: u32, ret: Ret<(u32, Option<u32>)>) {
        ret.ret((self.incarnation, self.insert(k, v)));
    }
    fn get(&mut self, _: CX![], k: u32, ret: Ret<Option<u32>>) {
        ret.ret(self.map.iter().find(|e| e.0 == k).map(|e| e.1));
    }
    fn crash(&mut self, _: CX![], ret: Ret<u32>) {
        let _keep = ret;
        panic!("{TEST_PANIC} in crash");
    }
    fn ignore(&mut self, _: CX![], ret: Ret<u32>) {
        drop(ret);
    }
}

/// What the store's `Addr` showed as the supervisor started an
/// incarnation (before installing it): calls held, and whether one ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    incarnation: u32,
    held: usize,
    running: bool,
}

type Starts = Rc<RefCell<Vec<Start>>>;

/// The store child, its incarnations numbered from 1, each start recorded
/// in `starts`.
fn counted_spec(starts: &Starts) -> ChildSpec<Store> {
    let addr: Rc<OnceCell<Addr<Store>>> = Rc::default();
    let (a, starts) = (addr.clone(), starts.clone());
    let spec = ChildSpec::worker("store", move |core| {
        let addr = a.get().expect("set below, before the first start");
        let incarnation = starts.borrow().len() as u32 + 1;
        starts.borrow_mut().push(Start {
            incarnation,
            held: addr.held(),
            running: addr.is_running(),
        });
        Ok(device!(core, Store::init(incarnation)).into())
    });
    let _ = addr.set(spec.addr());
    spec
}

fn store_spec() -> ChildSpec<Store> {
    counted_spec(&Starts::default())
}

/// A runtime with a supervisor of one store child, started; the store's
/// `Addr`.
fn store_rt(spec: ChildSpec<Store>) -> (Rt, Supervisor, Addr<Store>) {
    let mut rt = Rt::new();
    let addr = spec.addr();
    let sup =
        Supervisor::start(&mut rt.s, SupervisorSpec::one_for_one().child(spec)).expect("starts");
    rt.run();
    (rt, sup, addr)
}

/// Runs `fut` as a task to its end (with everything else queued) and
/// returns its output.
fn run_task<T: 'static>(rt: &mut Rt, fut: impl Future<Output = T> + 'static) -> T {
    let out = spawn_out(rt, fut);
    rt.run();
    let done = out.borrow_mut().take();
    done.expect("the task finished")
}

type Out<T> = Rc<RefCell<Option<T>>>;

/// Spawns `fut` and keeps its output.
fn spawn_out<T: 'static>(rt: &mut Rt, fut: impl Future<Output = T> + 'static) -> Out<T> {
    let out: Out<T> = Rc::default();
    let o = out.clone();
    task::spawner(&mut rt.s).spawn_detached(async move {
        *o.borrow_mut() = Some(fut.await);
    });
    out
}

/// The answer to a `crash` ask: the reply dropped, with the panic of
/// `Store::crash` as its cause.
fn assert_dropped_by_the_crash(crashed: Result<u32, AskError>) {
    match crashed {
        Err(AskError::Dropped {
            cause: Some(Cause::Panic(m)),
        }) => assert_eq!(&*m, format!("{TEST_PANIC} in crash")),
        other => panic!("expected Dropped with the Panic cause, got {other:?}"),
    }
}

#[test]
fn ask_through_an_addr_is_answered_by_the_live_incarnation() {
    let (mut rt, _sup, store) = store_rt(store_spec());
    let s2 = store.clone();
    let out = run_task(&mut rt, async move {
        let a = stakplane::ask!([s2], put(1, 10)).await?;
        let b = stakplane::ask!([s2], put(1, 11)).await?;
        let c = s2.ask(|this, cx, ret| this.get(cx, 1, ret)).await?;
        Ok::<_, AskError>((a, b, c))
    });
    assert_eq!(out.expect("answered"), (None, Some(10), Some(11)));
}

#[test]
fn ask_through_an_addr_sends_nothing_until_awaited() {
    let (mut rt, _sup, store) = store_rt(store_spec());
    let unpolled = stakplane::ask!([store], put(7, 70));
    rt.run();
    drop(unpolled);
    let s2 = store.clone();
    let out = run_task(&mut rt, async move { stakplane::ask!([s2], get(7)).await });
    assert_eq!(out.expect("answered"), None);
}

#[test]
fn ask_through_an_addr_is_held_across_a_restart_and_answered_by_the_new_incarnation() {
    let starts = Starts::default();
    let (mut rt, _sup, store) = store_rt(counted_spec(&starts).hold(8, Overflow::Reject));
    let first = store.current().expect("running");
    // The crash and the put are queued together: the put is held while
    // no incarnation runs, and the next one answers it.
    let s2 = store.clone();
    let crash = spawn_out(&mut rt, {
        let s = store.clone();
        async move { stakplane::ask!([s], crash()).await }
    });
    let put = spawn_out(&mut rt, async move {
        stakplane::ask!([s2], put_by(3, 30)).await
    });
    rt.run();
    let second = store.current().expect("restarted");
    assert!(
        first.is_zombie() && !second.is_zombie(),
        "a new incarnation"
    );
    // As the supervisor started the second incarnation, none ran and the
    // put was held in the Addr's mailbox.
    let none_running_one_held = Start {
        incarnation: 2,
        held: 1,
        running: false,
    };
    assert_eq!(
        *starts.borrow(),
        [
            Start {
                incarnation: 1,
                held: 0,
                running: false
            },
            none_running_one_held
        ]
    );
    assert_eq!(store.held(), 0, "handed to the new incarnation");
    assert_eq!(
        put.borrow_mut()
            .take()
            .expect("finished")
            .expect("answered"),
        (2, None),
        "answered by the second incarnation, whose store is empty"
    );
    assert_dropped_by_the_crash(crash.borrow_mut().take().expect("finished"));
}

#[test]
fn ask_that_hits_the_crash_gets_the_panic_cause_and_converts_into_actor_fail() {
    let (mut rt, _sup, store) = store_rt(store_spec());
    let out = run_task(&mut rt, async move {
        // `?` turns the AskError into the task's ActorFail.
        let n: u32 = stakplane::ask!([store], crash()).await?;
        Ok::<u32, ActorFail>(n)
    });
    let err = out.expect_err("crashed");
    let cause = err.cause().expect("the cause is kept");
    assert_eq!(
        cause.to_string(),
        format!("panicked: {TEST_PANIC} in crash")
    );
}

#[test]
fn ask_awaited_after_the_restart_still_gets_the_panic_cause() {
    // The reply is awaited only once the supervisor has taken the crashed
    // incarnation out of the slot and started the next one: the cause
    // comes from the last incarnation down, not the live one.
    let (mut rt, _sup, store) = store_rt(store_spec());
    let first = store.current().expect("running");
    let s = store.clone();
    let out = spawn_out(&mut rt, async move {
        let mut reply = std::pin::pin!(stakplane::ask!([s], crash()));
        // Sent at this first poll, then left alone while the task sleeps.
        let sent = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx).is_pending()));
        assert!(sent.await, "no reply before the crash runs");
        task::sleep(Duration::from_secs(1)).await;
        reply.await
    });
    rt.run();
    assert!(first.is_zombie() && store.is_running(), "restarted");
    assert!(out.borrow().is_none(), "not awaited yet");
    rt.advance(Duration::from_secs(1));
    assert_dropped_by_the_crash(out.borrow_mut().take().expect("finished"));
}

#[test]
fn addr_error_converts_into_actor_fail_in_a_task() {
    let (mut rt, sup, store) = store_rt(store_spec());
    sup.terminate_child(&mut rt.s, "store").expect("terminates");
    rt.run();
    let out = run_task(&mut rt, async move {
        // `?` turns the refused send's AddrError into the task's ActorFail.
        store.send(|this, cx| this.get(cx, 1, ret_nop!()))?;
        Ok::<(), ActorFail>(())
    });
    let err = out.expect_err("not running");
    let cause = err.cause().expect("the refusal is the cause");
    assert_eq!(cause.to_string(), AddrError::NotRunning.to_string());
}

#[test]
fn ask_held_when_the_child_is_deleted_fails_with_deleted() {
    let (mut rt, sup, store) = store_rt(store_spec().hold(8, Overflow::Reject));
    sup.terminate_child(&mut rt.s, "store").expect("terminates");
    rt.run();
    let s = store.clone();
    let held = spawn_out(&mut rt, async move { stakplane::ask!([s], get(1)).await });
    rt.run();
    assert!(held.borrow().is_none(), "held while no incarnation runs");
    assert_eq!(store.held(), 1);
    sup.delete_child("store").expect("deletes");
    rt.run();
    let out = held.borrow_mut().take().expect("finished");
    assert!(matches!(out, Err(AskError::Deleted)), "{out:?}");
}

#[test]
fn ask_without_hold_while_not_running_fails_with_not_running() {
    let (mut rt, sup, store) = store_rt(store_spec());
    sup.terminate_child(&mut rt.s, "store").expect("terminates");
    rt.run();
    assert!(!store.is_running());
    let out = run_task(
        &mut rt,
        async move { stakplane::ask!([store], get(1)).await },
    );
    assert!(matches!(out, Err(AskError::NotRunning)));
}

#[test]
fn ask_on_a_deleted_child_fails_with_deleted() {
    let (mut rt, sup, store) = store_rt(store_spec());
    sup.terminate_child(&mut rt.s, "store").expect("terminates");
    rt.run();
    sup.delete_child("store").expect("deletes");
    let out = run_task(
        &mut rt,
        async move { stakplane::ask!([store], get(1)).await },
    );
    assert!(matches!(out, Err(AskError::Deleted)), "{out:?}");
}

#[test]
fn ask_on_a_full_held_mailbox_fails_with_full() {
    let (mut rt, sup, store) = store_rt(store_spec().hold(1, Overflow::Reject));
    sup.terminate_child(&mut rt.s, "store").expect("terminates");
    rt.run();
    // Nothing runs: the first call is held, the second finds it full.
    let (a, b) = (store.clone(), store.clone());
    let held = spawn_out(&mut rt, async move { stakplane::ask!([a], get(1)).await });
    let full = spawn_out(&mut rt, async move { stakplane::ask!([b], get(2)).await });
    rt.run();
    assert!(held.borrow().is_none(), "held until an incarnation runs");
    assert!(matches!(
        full.borrow_mut().take().expect("finished"),
        Err(AskError::Full)
    ));
    sup.restart_child(&mut rt.s, "store").expect("restarts");
    rt.run();
    assert_eq!(
        held.borrow_mut()
            .take()
            .expect("answered now")
            .expect("answered"),
        None
    );
}

#[test]
fn ask_answered_by_a_live_incarnation_that_drops_the_reply_has_no_cause() {
    let (mut rt, _sup, store) = store_rt(store_spec());
    let s2 = store.clone();
    let out = run_task(
        &mut rt,
        async move { stakplane::ask!([s2], ignore()).await },
    );
    assert!(matches!(out, Err(AskError::Dropped { cause: None })));
    assert!(store.is_running());
}

#[test]
fn task_ask_is_the_guarded_ask() {
    // `stakplane::task::ask!` is stakplane's guarded macro: a panic in the
    // asked method fails that actor only, and the runtime goes on.
    let mut rt = Rt::new();
    let dev = device!(rt.s, Store::init(1));
    let line = dev.line();
    let out = run_task(&mut rt, async move {
        stakplane::task::ask!([dev], crash()).await
    });
    assert!(!line.is_alive());
    let err = out.expect_err("crashed");
    assert!(err.to_string().contains("in crash"), "{err}");
}

/// Rule 99b: however the supervisor ends for good (ordered shutdown,
/// dropped, killed, a failed `Supervisor::start`), its holding child's
/// `Addr` is deleted: an ask held for it is refused with `Deleted`
/// instead of waiting forever, and a later send fails with `Deleted`.
#[test]
fn ask_held_for_a_child_of_an_ended_supervisor_fails_with_deleted() {
    for how in ["shutdown", "dropped", "killed", "start_failed"] {
        let mut rt = Rt::new();
        let spec = store_spec().hold(8, Overflow::Reject);
        let store = spec.addr();
        let top = SupervisorSpec::one_for_one().child(spec);
        let mut sup = if how == "start_failed" {
            let bad = ChildSpec::<Store>::worker("bad", |_| Err("no".into()));
            let failed = Supervisor::start(&mut rt.s, top.child(bad));
            assert!(failed.is_err(), "{how}");
            None
        } else {
            Some(Supervisor::start(&mut rt.s, top).expect("starts"))
        };
        rt.run();
        let line = sup.as_ref().map(|s| s.line().clone());
        // Otherwise the handle is kept: only the supervisor ends.
        match how {
            "shutdown" => sup.as_ref().unwrap().shutdown(&mut rt.s).unwrap(),
            "dropped" => drop(sup.take()),
            "killed" => sup.as_ref().unwrap().line().kill("test").unwrap(),
            _ => {}
        }
        rt.advance(Duration::from_secs(10));
        assert!(line.is_none_or(|l| !l.is_alive()), "{how}: ended");
        assert!(!store.is_running(), "{how}");
        let s = store.clone();
        let out = spawn_out(&mut rt, async move { stakplane::ask!([s], get(1)).await });
        rt.advance(Duration::from_secs(3600));
        let got = out.borrow_mut().take();
        assert!(
            matches!(got, Some(Err(AskError::Deleted))),
            "{how}: {got:?} (held: {})",
            store.held()
        );
        assert!(
            matches!(store.send(|_, _| {}), Err(AddrError::Deleted)),
            "{how}"
        );
        assert_eq!(store.held(), 0, "{how}");
    }
}

/// Rule 99b, with the ask already held when the supervisor gives up (its
/// restart intensity reached): it is refused with `Deleted` as the
/// supervisor ends, not left waiting.
#[test]
fn ask_held_when_the_supervisor_gives_up_fails_with_deleted() {
    let mut rt = Rt::new();
    let spec = store_spec().hold(8, Overflow::Reject);
    let store = spec.addr();
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one()
            .intensity(0, Duration::from_secs(5))
            .child(spec),
    )
    .expect("starts");
    rt.run();
    let (a, b) = (store.clone(), store.clone());
    let crashed = spawn_out(&mut rt, async move { stakplane::ask!([a], crash()).await });
    let waiting = spawn_out(&mut rt, async move { stakplane::ask!([b], get(1)).await });
    rt.run();
    rt.advance(Duration::from_secs(3600));
    assert!(!sup.line().is_alive(), "gave up");
    assert_dropped_by_the_crash(crashed.borrow_mut().take().expect("finished"));
    let got = waiting.borrow_mut().take();
    assert!(
        matches!(got, Some(Err(AskError::Deleted))),
        "{got:?} (held: {})",
        store.held()
    );
}

/// Rule 99a: two asks held in order, `crash` (taken by incarnation 1,
/// which panics) and `ignore` (taken by incarnation 2, which drops the
/// reply and lives on): the second is told no cause, not incarnation 1's
/// panic.
#[test]
fn ask_dropped_by_a_live_later_incarnation_has_no_cause() {
    let (mut rt, _sup, store) = store_rt(store_spec().hold(8, Overflow::Reject));
    let first = store.current().expect("running");
    let (a, b) = (store.clone(), store.clone());
    let crashed = spawn_out(&mut rt, async move { stakplane::ask!([a], crash()).await });
    let ignored = spawn_out(&mut rt, async move { stakplane::ask!([b], ignore()).await });
    rt.run();
    let second = store.current().expect("restarted");
    assert!(first.is_zombie() && !second.is_zombie());
    assert_dropped_by_the_crash(crashed.borrow_mut().take().expect("finished"));
    let got = ignored.borrow_mut().take().expect("finished");
    assert!(
        matches!(got, Err(AskError::Dropped { cause: None })),
        "incarnation 2 took the call and lives on: {got:?}"
    );
}
