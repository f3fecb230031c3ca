//! Re-entrance of a supervisor: the user code it runs in the middle of its
//! own work (start functions, shutdown hooks) calling its API again —
//! starting, terminating, restarting children, asking for its shutdown,
//! dropping it. On virtual time; each test is named after the rule it
//! checks (rule 82a of `stakplane::supervise`: the work such a call
//! leaves waits for the step in progress; a child whose start function
//! runs is not started again).

mod common;

use common::{Rt, TEST_PANIC};
use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::supervise::{
    Addr, AddrError, Child, ChildError, ChildSpec, ChildStatus, DynamicRef, DynamicSpec, Shutdown,
    StartError, SuperviseError, Supervisor, SupervisorRef, SupervisorSpec,
};
use std::cell::{Cell, RefCell};
use std::error::Error;
use std::rc::Rc;
use std::time::Duration;

use common::{is_plain_shutdown, new_lines as new_log, take_lines as take, Lines as Log};

/// A worker that logs its end (when its state is dropped) as
/// "stop <name>"; asked to stop, it stops 100 ms later.
struct W {
    name: String,
    log: Log,
}

impl W {
    fn init(_: CX![], name: String, log: Log) -> Option<Self> {
        Some(W { name, log })
    }

    fn crash(&mut self, _: CX![]) {
        panic!("{TEST_PANIC}: crash");
    }

    fn please_stop(&mut self, cx: CX![]) {
        after!(Duration::from_millis(100), [cx], finish());
    }

    fn finish(&mut self, cx: CX![]) {
        stop!(cx);
    }
}

impl Drop for W {
    fn drop(&mut self) {
        self.log.borrow_mut().push(format!("stop {}", self.name));
    }
}

/// What a test's start function or shutdown hook does with the core
/// (called with the start function's call number, from 1; a hook with 0).
type During = Box<dyn Fn(&mut Core, u32) -> Result<(), Box<dyn Error>>>;

/// One child's start function, watched: how many times it ran, how
/// deeply it was ever nested in itself (1: never re-entered), and each
/// incarnation it made.
#[derive(Default)]
struct Probe {
    calls: Cell<u32>,
    depth: Cell<u32>,
    deepest: Cell<u32>,
    lines: RefCell<Vec<Line>>,
}

impl Probe {
    /// The causes of the incarnations that ended, in start order.
    fn ends(&self) -> Vec<String> {
        self.lines
            .borrow()
            .iter()
            .filter_map(|l| l.cause().map(|c| c.to_string()))
            .collect()
    }

    /// Whether an incarnation was killed because its supervisor was gone.
    fn any_killed_as_orphan(&self) -> bool {
        self.lines
            .borrow()
            .iter()
            .any(|l| l.cause().as_ref().is_some_and(is_supervisor_gone))
    }
}

/// A child `name` logging "start <name>" when its start function begins;
/// `during` runs in the start function before the device is made (an
/// error from it is the start's error); with `hook`, the child has a
/// shutdown hook that runs `hook` and then asks the worker to stop
/// (100 ms later), under a 1 s timeout.
fn kid(log: &Log, name: &str, during: During, hook: Option<During>) -> (ChildSpec<W>, Rc<Probe>) {
    let probe = Rc::new(Probe::default());
    let (p, l, n) = (probe.clone(), log.clone(), name.to_string());
    let hook: Option<Rc<During>> = hook.map(Rc::new);
    let has_hook = hook.is_some();
    let spec = ChildSpec::worker(name, move |core| {
        l.borrow_mut().push(format!("start {n}"));
        p.calls.set(p.calls.get() + 1);
        p.depth.set(p.depth.get() + 1);
        p.deepest.set(p.deepest.get().max(p.depth.get()));
        let r = during(core, p.calls.get());
        p.depth.set(p.depth.get() - 1);
        r?;
        let own = device!(core, W::init(n.clone(), l.clone()));
        p.lines.borrow_mut().push(own.line());
        let Some(hook) = hook.clone() else {
            return Ok(own.into());
        };
        let actor = own.actor().clone();
        Ok(Child::new(own).on_shutdown(move |core| {
            hook(core, 0).expect("hook");
            call!([actor], please_stop());
        }))
    });
    let spec = if has_hook {
        spec.shutdown(Shutdown::Timeout(Duration::from_secs(1)))
    } else {
        spec
    };
    (spec, probe)
}

fn nothing() -> During {
    Box::new(|_, _| Ok(()))
}

/// A child that does nothing special.
fn plain(log: &Log, name: &str) -> (ChildSpec<W>, Rc<Probe>) {
    kid(log, name, nothing(), None)
}

/// Where a test puts its supervisor's handle once it has one, for the
/// start functions and hooks that call it.
type Me = Rc<RefCell<Option<SupervisorRef>>>;

fn me(m: &Me) -> SupervisorRef {
    m.borrow()
        .clone()
        .expect("the handle is set after the start")
}

fn crash(addr: &Addr<W>) {
    addr.send(|w, cx| w.crash(cx)).expect("child is running");
}

fn status_name(status: &ChildStatus) -> &'static str {
    match status {
        ChildStatus::Running(_) => "Running",
        ChildStatus::Terminating(_) => "Terminating",
        ChildStatus::Restarting => "Restarting",
        ChildStatus::Stopped => "Stopped",
    }
}

/// Child `id`'s status, as `which_children` reports it.
fn status(sup: &SupervisorRef, id: &str) -> &'static str {
    let info = sup.which_children().expect("supervisor up");
    info.iter()
        .find(|c| c.id.as_str() == id)
        .map_or("absent", |c| status_name(&c.status))
}

/// Every child, in start order, as "<id> <status>".
fn ids(sup: &SupervisorRef) -> Vec<String> {
    sup.which_children()
        .expect("supervisor up")
        .iter()
        .map(|c| format!("{} {}", c.id, status_name(&c.status)))
        .collect()
}

fn is_supervisor_gone(cause: &Cause) -> bool {
    matches!(cause, Cause::Killed(e)
        if matches!(e.downcast_ref(), Some(SuperviseError::SupervisorGone(_))))
}

// ---------------------------------------------------------------------
// Start functions

/// A dynamic child's start function starts a sibling through the typed
/// handle, on its first start (`start_child`) and on its restart (the
/// supervisor's own work): each sibling starts at once, once, with its
/// own id, and the shutdown stops them all in reverse start order.
#[test]
fn supervise_a_start_function_that_starts_a_dynamic_child_starts_each_once_at_once() {
    let mut rt = Rt::new();
    let log = new_log();
    let handle: Rc<RefCell<Option<DynamicRef<W, u32>>>> = Rc::default();
    let seen: Rc<RefCell<Vec<u32>>> = Rc::default();
    let (h, l, sn) = (handle.clone(), log.clone(), seen.clone());
    let next = Cell::new(10);
    // A "1" starts a sibling "11", "12", ... every time it starts.
    let template = ChildSpec::worker_with("conn", move |core, n: &u32| {
        sn.borrow_mut().push(*n);
        if *n < 10 {
            next.set(next.get() + 1);
            let r = h.borrow().clone().expect("set");
            let s = r.start_child(core, next.get()).expect("a sibling starts");
            assert!(s.line.is_alive());
        }
        Ok(device!(core, W::init(n.to_string(), l.clone())).into())
    });
    let sup = Supervisor::start_dynamic(
        &mut rt.s,
        DynamicSpec::new(template).intensity(10, Duration::from_secs(1)),
    )
    .unwrap();
    *handle.borrow_mut() = Some(sup.handle());
    let one = sup.start_child(&mut rt.s, 1).unwrap();
    assert_eq!(one.id.as_str(), "conn.1");
    rt.run();
    assert_eq!(*seen.borrow(), [1, 11]);
    assert_eq!(ids(&sup), ["conn.1 Running", "conn.2 Running"]);
    // Its restart (the supervisor's own work) starts one more.
    one.line.kill("test").unwrap();
    rt.run();
    assert_eq!(*seen.borrow(), [1, 11, 1, 12]);
    assert_eq!(
        ids(&sup),
        ["conn.1 Running", "conn.2 Running", "conn.3 Running"]
    );
    assert_eq!(take(&log), ["stop 1"]);
    sup.shutdown(&mut rt.s).unwrap();
    rt.run();
    assert_eq!(take(&log), ["stop 12", "stop 11", "stop 1"]);
    assert!(is_plain_shutdown(sup.line().cause()));
}

/// The restart of a rest_for_one supervisor [a, b, c] is under way (b
/// failed; c is being terminated) when a fails too: a's restart waits
/// behind it. b's start function starts a helper through the API. The
/// restart of b ends first (b and c started); then a's restart stops
/// and starts again everything after a, helper included, a first.
#[test]
fn supervise_a_start_function_that_starts_a_sibling_lets_the_restart_in_progress_end_first() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let (a, pa) = plain(&log, "a");
    let (mb, lb) = (m.clone(), log.clone());
    let (b, pb) = kid(
        &log,
        "b",
        Box::new(move |core, n| {
            if n == 2 {
                me(&mb).start_child(core, plain(&lb, "x").0)?;
            }
            Ok(())
        }),
        None,
    );
    let (c, pc) = kid(&log, "c", nothing(), Some(nothing()));
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::rest_for_one()
            .intensity(10, Duration::from_secs(60))
            .child(a)
            .child(b)
            .child(c),
    )
    .unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    take(&log);
    crash(&b_addr);
    rt.run();
    crash(&a_addr);
    rt.run();
    assert_eq!(status(&sup, "c"), "Terminating");
    rt.advance(Duration::from_millis(500));
    assert_eq!(
        take(&log),
        [
            "stop b", "stop a", "stop c", // c stopped when asked
            // b's restart ends: b (which starts x), then c.
            "start b", "start x", "start c",
            // a's: what follows a, in reverse, then from a on.
            "stop x", "stop c", "stop b", "start a", "start b", "start c", "start x",
        ]
    );
    assert_eq!(
        ids(&sup),
        ["a Running", "b Running", "c Running", "x Running"]
    );
    assert_eq!((pa.calls.get(), pb.calls.get(), pc.calls.get()), (2, 3, 3));
    assert!(!pb.any_killed_as_orphan());
}

/// As above, but b's start function restarts a helper placed before a
/// (so outside a's restart): the restart in progress still ends first,
/// and b's start function is never run again while it runs (the child
/// is not started twice, no incarnation is killed as an orphan).
#[test]
fn supervise_a_start_function_that_restarts_a_sibling_is_never_reentered() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let (x, _) = plain(&log, "x");
    let (a, pa) = plain(&log, "a");
    let mb = m.clone();
    let (b, pb) = kid(
        &log,
        "b",
        Box::new(move |core, n| {
            if n == 2 {
                me(&mb).restart_child(core, "x")?;
            }
            Ok(())
        }),
        None,
    );
    let (c, pc) = kid(&log, "c", nothing(), Some(nothing()));
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::rest_for_one()
            .intensity(10, Duration::from_secs(60))
            .child(x)
            .child(a)
            .child(b)
            .child(c),
    )
    .unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    sup.terminate_child(&mut rt.s, "x").unwrap();
    rt.run();
    take(&log);
    crash(&b_addr);
    rt.run();
    crash(&a_addr);
    rt.run();
    rt.advance(Duration::from_millis(500));
    assert_eq!(pb.deepest.get(), 1, "b's start function re-entered");
    assert_eq!(
        take(&log),
        [
            "stop b", "stop a", "stop c", //
            "start b", "start x", "start c", //
            "stop c", "stop b", "start a", "start b", "start c",
        ]
    );
    assert_eq!(
        ids(&sup),
        ["x Running", "a Running", "b Running", "c Running"]
    );
    assert_eq!((pa.calls.get(), pb.calls.get(), pc.calls.get()), (2, 3, 3));
    assert!(!pb.any_killed_as_orphan(), "b: {:?}", pb.ends());
    assert_eq!(pb.lines.borrow().len(), 3, "each start placed");
}

/// A rest_for_one restart of [a, b, c] (a failed): a's start function
/// asks for the supervisor's shutdown. b and c are not started again;
/// a's new incarnation is shut down; the supervisor ends `Shutdown`.
#[test]
fn supervise_a_start_function_that_asks_for_shutdown_starts_no_later_child_of_its_restart() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let ma = m.clone();
    let (a, pa) = kid(
        &log,
        "a",
        Box::new(move |core, n| {
            if n == 2 {
                me(&ma).shutdown(core).expect("running");
            }
            Ok(())
        }),
        None,
    );
    let (b, pb) = plain(&log, "b");
    let (c, pc) = plain(&log, "c");
    let a_addr = a.addr();
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::rest_for_one()
            .intensity(10, Duration::from_secs(60))
            .child(a)
            .child(b)
            .child(c),
    )
    .unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    take(&log);
    crash(&a_addr);
    rt.run();
    assert_eq!(
        take(&log),
        ["stop a", "stop c", "stop b", "start a", "stop a"]
    );
    assert_eq!((pa.calls.get(), pb.calls.get(), pc.calls.get()), (2, 1, 1));
    assert!(matches!(
        pa.lines.borrow()[1].cause(),
        Some(Cause::Shutdown { by: Some(by) }) if by == sup.line().id()
    ));
    assert!(is_plain_shutdown(sup.line().cause()));
}

/// `start_child(x)` whose start function asks for the shutdown: x's
/// incarnation is shut down in its place, first (it started last).
#[test]
fn supervise_a_start_function_run_by_start_child_that_asks_for_shutdown_is_shut_down_first() {
    let mut rt = Rt::new();
    let log = new_log();
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one()
            .child(plain(&log, "a").0)
            .child(plain(&log, "b").0),
    )
    .unwrap();
    rt.run();
    take(&log);
    let r = sup.handle();
    let (x, px) = kid(
        &log,
        "x",
        Box::new(move |core, _| {
            r.shutdown(core).expect("running");
            Ok(())
        }),
        None,
    );
    let line = sup.start_child(&mut rt.s, x).expect("x started");
    rt.run();
    assert_eq!(take(&log), ["start x", "stop x", "stop b", "stop a"]);
    assert_eq!(px.calls.get(), 1);
    assert!(matches!(
        line.cause(),
        Some(Cause::Shutdown { by: Some(_) })
    ));
    assert!(is_plain_shutdown(sup.line().cause()));
}

/// restart_child and delete_child on the child whose start function is
/// running (a start through the API) are refused, as for a child being
/// restarted: the start goes on once, and its incarnation stays.
#[test]
fn supervise_a_start_function_that_restarts_or_deletes_its_own_child_is_refused() {
    let mut rt = Rt::new();
    let log = new_log();
    let sup = Supervisor::start(&mut rt.s, SupervisorSpec::one_for_one()).unwrap();
    let answers: Rc<RefCell<Vec<String>>> = Rc::default();
    let (r, an) = (sup.handle(), answers.clone());
    let (x, px) = kid(
        &log,
        "x",
        Box::new(move |core, _| {
            let st = status(&r, "x");
            let restart = r.restart_child(core, "x").map(|_| ());
            let delete = r.delete_child("x");
            an.borrow_mut().push(format!("{st} {restart:?} {delete:?}"));
            Ok(())
        }),
        None,
    );
    let line = sup.start_child(&mut rt.s, x).expect("x started");
    rt.run();
    assert_eq!(
        *answers.borrow(),
        [r#"Restarting Err(Restarting("x")) Err(Restarting("x"))"#]
    );
    assert_eq!((px.calls.get(), px.deepest.get()), (1, 1));
    assert!(line.is_alive());
    assert_eq!(ids(&sup), ["x Running"]);
    assert_eq!(take(&log), ["start x"]);
}

/// A dynamic child whose start function asks for its own termination
/// (rule 82: the incarnation that start makes is stopped): the start
/// succeeds, the new incarnation is shut down per its policy, and the
/// child is removed once down — it is not killed as an orphan.
#[test]
fn supervise_a_dynamic_child_terminated_by_its_own_start_function_is_shut_down_then_removed() {
    let mut rt = Rt::new();
    let log = new_log();
    let handle: Me = Rc::default();
    let (h, l) = (handle.clone(), log.clone());
    let template = ChildSpec::worker_with("conn", move |core, n: &u32| {
        l.borrow_mut().push(format!("start {n}"));
        me(&h).terminate_child(core, &format!("conn.{n}"))?;
        Ok(device!(core, W::init(n.to_string(), l.clone())).into())
    });
    let sup = Supervisor::start_dynamic(&mut rt.s, DynamicSpec::new(template)).unwrap();
    *handle.borrow_mut() = Some(sup.untyped().clone());
    let one = sup.start_child(&mut rt.s, 1).expect("conn.1 starts");
    rt.run();
    assert!(matches!(
        one.line.cause(),
        Some(Cause::Shutdown { by: Some(by) }) if by == sup.line().id()
    ));
    assert_eq!(take(&log), ["start 1", "stop 1"]);
    assert!(ids(&sup).is_empty());
    assert!(sup.line().is_alive());
}

/// A start function (run by `start_child`) that starts a sibling and then
/// fails: the failed child is not kept, the sibling is, started once.
/// The same for a start function that panics.
#[test]
fn supervise_a_start_function_that_starts_a_sibling_then_fails_keeps_only_the_sibling() {
    for panics in [false, true] {
        let mut rt = Rt::new();
        let log = new_log();
        let sup = Supervisor::start(&mut rt.s, SupervisorSpec::one_for_one()).unwrap();
        let r = sup.handle();
        let (y, py) = plain(&log, "y");
        let y = RefCell::new(Some(y));
        let (x, px) = kid(
            &log,
            "x",
            Box::new(move |core, _| {
                let y = y.borrow_mut().take().expect("x starts once");
                r.start_child(core, y).expect("y starts");
                if panics {
                    panic!("{TEST_PANIC}: x");
                }
                Err("x cannot start".into())
            }),
            None,
        );
        let err = sup.start_child(&mut rt.s, x).unwrap_err();
        rt.run();
        match &err {
            ChildError::Start(StartError::Child { id, error }) => {
                assert_eq!(id.as_str(), "x");
                let want = if panics {
                    "test-panic: x"
                } else {
                    "x cannot start"
                };
                assert!(error.to_string().contains(want), "{error}");
            }
            e => panic!("not a start error: {e:?}"),
        }
        assert_eq!(ids(&sup), ["y Running"], "panics {panics}");
        assert_eq!((px.calls.get(), py.calls.get()), (1, 1));
        assert_eq!(take(&log), ["start x", "start y"]);
    }
}

/// A start function whose new device fails at once (killed before the
/// function returns): the child counts as started, and its death is an
/// ordinary exit that restarts it, once.
#[test]
fn supervise_a_child_that_dies_inside_its_start_function_is_an_exit_restarted_once() {
    let mut rt = Rt::new();
    let log = new_log();
    let probe = Rc::new(Probe::default());
    let (p, l) = (probe.clone(), log.clone());
    let spec: ChildSpec<W> = ChildSpec::worker("k", move |core| {
        p.calls.set(p.calls.get() + 1);
        let own = device!(core, W::init("k".into(), l.clone()));
        if p.calls.get() == 2 {
            own.line().kill("dies in its start").unwrap();
        }
        p.lines.borrow_mut().push(own.line());
        Ok(own.into())
    });
    let addr = spec.addr();
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one()
            .intensity(2, Duration::from_secs(60))
            .child(spec),
    )
    .unwrap();
    rt.run();
    crash(&addr);
    rt.run();
    assert_eq!(probe.calls.get(), 3);
    let ends = probe.ends();
    assert_eq!(ends.len(), 2);
    assert!(ends[1].contains("dies in its start"), "{ends:?}");
    assert_eq!(ids(&sup), ["k Running"]);
    assert!(sup.line().is_alive());
}

/// A start function run by the supervisor's own (one_for_all) restart
/// drops the supervisor's last owner, or kills it: the restart carries
/// on (b is started too), then the supervisor ends (`Dropped`, `Killed`)
/// and kills every child, the new incarnations too, with
/// `SupervisorGone`; no timer is left behind.
#[test]
fn supervise_a_start_function_that_drops_or_kills_its_supervisor_ends_it_after_the_step() {
    for kill in [false, true] {
        let mut rt = Rt::new();
        let log = new_log();
        let owner: Rc<RefCell<Option<Supervisor>>> = Rc::default();
        let o = owner.clone();
        let (a, pa) = kid(
            &log,
            "a",
            Box::new(move |_, n| {
                if n == 2 && kill {
                    let sup = o.borrow();
                    sup.as_ref().expect("set").line().kill("killed by a")?;
                } else if n == 2 {
                    drop(o.borrow_mut().take());
                }
                Ok(())
            }),
            None,
        );
        let (b, pb) = plain(&log, "b");
        let a_addr = a.addr();
        let sup = Supervisor::start(
            &mut rt.s,
            SupervisorSpec::one_for_all()
                .intensity(10, Duration::from_secs(60))
                .child(a)
                .child(b),
        )
        .unwrap();
        let line = sup.line().clone();
        *owner.borrow_mut() = Some(sup);
        rt.run();
        take(&log);
        crash(&a_addr);
        rt.run();
        assert_eq!(owner.borrow().is_none(), !kill);
        match line.cause() {
            Some(Cause::Dropped) => assert!(!kill),
            Some(Cause::Killed(e)) => assert!(kill && e.to_string() == "killed by a"),
            c => panic!("kill {kill}: the supervisor ended with {c:?}"),
        }
        assert_eq!(
            take(&log),
            ["stop a", "stop b", "start a", "start b", "stop b", "stop a"]
        );
        assert_eq!((pa.calls.get(), pb.calls.get()), (2, 2));
        for p in [&pa, &pb] {
            let last = p.lines.borrow().last().cloned().unwrap();
            assert!(last.cause().as_ref().is_some_and(is_supervisor_gone));
        }
        assert_eq!(rt.s.next_expiry(), None);
    }
}

// ---------------------------------------------------------------------
// Shutdown hooks

/// During `terminate_child(c)`, c's shutdown hook terminates a: a's
/// termination waits behind c's (the supervisor waits for c's Down).
#[test]
fn supervise_a_shutdown_hook_that_terminates_a_sibling_queues_it_behind_its_own() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let mc = m.clone();
    let (a, pa) = plain(&log, "a");
    let (b, _) = plain(&log, "b");
    let (c, pc) = kid(
        &log,
        "c",
        nothing(),
        Some(Box::new(move |core, _| {
            me(&mc).terminate_child(core, "a")?;
            Ok(())
        })),
    );
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one().child(a).child(b).child(c),
    )
    .unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    take(&log);
    sup.terminate_child(&mut rt.s, "c").unwrap();
    rt.run();
    assert_eq!(ids(&sup), ["a Running", "b Running", "c Terminating"]);
    rt.advance(Duration::from_millis(500));
    assert_eq!(take(&log), ["stop c", "stop a"]);
    assert_eq!(ids(&sup), ["a Stopped", "b Running", "c Stopped"]);
    assert_eq!((pa.calls.get(), pc.calls.get()), (1, 1));
    assert!(sup.line().is_alive());
}

/// During `terminate_child(a)`, a's shutdown hook starts a new child: it
/// starts at once, once, and runs on.
#[test]
fn supervise_a_shutdown_hook_that_starts_a_child_starts_it_once() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let (ma, la) = (m.clone(), log.clone());
    let started: Rc<RefCell<Vec<Line>>> = Rc::default();
    let st = started.clone();
    let (a, _) = kid(
        &log,
        "a",
        nothing(),
        Some(Box::new(move |core, _| {
            let line = me(&ma).start_child(core, plain(&la, "n").0)?;
            st.borrow_mut().push(line);
            Ok(())
        })),
    );
    let sup = Supervisor::start(&mut rt.s, SupervisorSpec::one_for_one().child(a)).unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    take(&log);
    sup.terminate_child(&mut rt.s, "a").unwrap();
    assert_eq!(started.borrow().len(), 1);
    assert_eq!(ids(&sup), ["a Terminating", "n Running"]);
    rt.advance(Duration::from_millis(500));
    assert_eq!(take(&log), ["start n", "stop a"]);
    assert_eq!(ids(&sup), ["a Stopped", "n Running"]);
    assert!(started.borrow()[0].is_alive());
}

/// During the ordered shutdown, a child's shutdown hook asks for the
/// shutdown again, starts, restarts and terminates children: every call
/// is refused with `ShuttingDown`, and the shutdown completes once, in
/// reverse order.
#[test]
fn supervise_a_shutdown_hook_that_asks_for_shutdown_again_is_refused() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let answers: Rc<RefCell<Vec<String>>> = Rc::default();
    let (mb, lb, an) = (m.clone(), log.clone(), answers.clone());
    let (a, pa) = kid(&log, "a", nothing(), Some(nothing()));
    let (b, pb) = kid(
        &log,
        "b",
        nothing(),
        Some(Box::new(move |core, _| {
            let r = me(&mb);
            an.borrow_mut().push(format!(
                "{:?} {:?} {:?} {:?}",
                r.shutdown(core),
                r.start_child(core, plain(&lb, "n").0).map(|_| ()),
                r.restart_child(core, "a").map(|_| ()),
                r.terminate_child(core, "a"),
            ));
            Ok(())
        })),
    );
    let (c, pc) = kid(&log, "c", nothing(), Some(nothing()));
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one().child(a).child(b).child(c),
    )
    .unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    take(&log);
    sup.shutdown(&mut rt.s).unwrap();
    rt.advance(Duration::from_secs(1));
    assert_eq!(
        *answers.borrow(),
        ["Err(ShuttingDown) Err(ShuttingDown) Err(ShuttingDown) Err(ShuttingDown)"]
    );
    assert_eq!(take(&log), ["stop c", "stop b", "stop a"]);
    assert_eq!((pa.calls.get(), pb.calls.get(), pc.calls.get()), (1, 1, 1));
    assert!(is_plain_shutdown(sup.line().cause()));
}

/// During `terminate_child(b)`, b's shutdown hook asks for the shutdown:
/// the supervisor waits for b, then shuts the others down in reverse
/// order and ends `Shutdown`.
#[test]
fn supervise_a_shutdown_hook_that_asks_for_shutdown_turns_the_termination_into_the_shutdown() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let mb = m.clone();
    let (a, _) = plain(&log, "a");
    let (b, _) = kid(
        &log,
        "b",
        nothing(),
        Some(Box::new(move |core, _| {
            me(&mb).shutdown(core)?;
            Ok(())
        })),
    );
    let (c, _) = plain(&log, "c");
    let sup = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one().child(a).child(b).child(c),
    )
    .unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    take(&log);
    sup.terminate_child(&mut rt.s, "b").unwrap();
    rt.run();
    assert!(take(&log).is_empty(), "b first");
    rt.advance(Duration::from_millis(500));
    assert_eq!(take(&log), ["stop b", "stop c", "stop a"]);
    assert!(is_plain_shutdown(sup.line().cause()));
}

/// During `terminate_child(b)`, b's shutdown hook drops the supervisor's
/// last owner: it ends `Dropped`, kills a and b with `SupervisorGone`,
/// and leaves no shutdown timer behind.
#[test]
fn supervise_a_shutdown_hook_that_drops_its_supervisor_ends_it_with_dropped() {
    let mut rt = Rt::new();
    let log = new_log();
    let owner: Rc<RefCell<Option<Supervisor>>> = Rc::default();
    let o = owner.clone();
    let (a, pa) = plain(&log, "a");
    let (b, pb) = kid(
        &log,
        "b",
        nothing(),
        Some(Box::new(move |_, _| {
            drop(o.borrow_mut().take());
            Ok(())
        })),
    );
    let sup =
        Supervisor::start(&mut rt.s, SupervisorSpec::one_for_one().child(a).child(b)).unwrap();
    let (line, r) = (sup.line().clone(), sup.handle());
    *owner.borrow_mut() = Some(sup);
    rt.run();
    r.terminate_child(&mut rt.s, "b").unwrap();
    rt.run();
    assert!(matches!(line.cause(), Some(Cause::Dropped)));
    // b's own stop timer (100 ms) fires, and is the last.
    rt.advance(Duration::from_millis(500));
    for p in [&pa, &pb] {
        let last = p.lines.borrow().last().cloned().unwrap();
        assert!(last.cause().as_ref().is_some_and(is_supervisor_gone));
    }
    assert_eq!(rt.s.next_expiry(), None, "b's 1 s timer is left");
    assert!(matches!(
        r.which_children(),
        Err(ChildError::SupervisorDown)
    ));
}

/// Rule 82a on the restart path: a dynamic child whose restart's start
/// function asks for its own termination. If the start succeeds, the new
/// incarnation is shut down per its policy and the child removed once
/// down; if it fails (an error or a panic), there is nothing to stop and
/// the child is removed at once, not retried nor kept as a stopped
/// child. Either way the supervisor goes on serving.
#[test]
fn supervise_a_dynamic_child_terminated_by_its_own_restart_is_removed() {
    for ends in ["starts", "fails", "panics"] {
        let mut rt = Rt::new();
        let log = new_log();
        let handle: Me = Rc::default();
        let starts = Rc::new(std::cell::Cell::new(0u32));
        let made: Rc<RefCell<Vec<Line>>> = Rc::default();
        let (h, l, c, m) = (handle.clone(), log.clone(), starts.clone(), made.clone());
        let template = ChildSpec::worker_with("conn", move |core, n: &u32| {
            l.borrow_mut().push(format!("start {n}"));
            c.set(c.get() + 1);
            if *n == 1 && c.get() == 2 {
                me(&h).terminate_child(core, "conn.1")?;
                match ends {
                    "fails" => return Err("the restart fails".into()),
                    "panics" => panic!("{TEST_PANIC}: the restart"),
                    _ => {}
                }
            }
            let own = device!(core, W::init(n.to_string(), l.clone()));
            m.borrow_mut().push(own.line());
            Ok(own.into())
        });
        let sup = Supervisor::start_dynamic(&mut rt.s, DynamicSpec::new(template)).unwrap();
        *handle.borrow_mut() = Some(sup.untyped().clone());
        let one = sup.start_child(&mut rt.s, 1).expect("conn.1 starts");
        rt.run();
        one.line.kill("test").unwrap();
        rt.run();
        assert!(ids(&sup).is_empty(), "{ends}: removed: {:?}", ids(&sup));
        if ends == "starts" {
            // Shut down per its policy, not killed as an orphan.
            let cause = made.borrow()[1].cause();
            assert!(
                matches!(&cause, Some(Cause::Shutdown { by: Some(by) }) if *by == sup.line().id()),
                "{cause:?}"
            );
        }
        assert_eq!(starts.get(), 2, "{ends}: not retried");
        assert!(sup.line().is_alive(), "{ends}");
        let two = sup.start_child(&mut rt.s, 2).expect("conn.2 starts");
        rt.run();
        assert!(two.line.is_alive(), "{ends}: the supervisor goes on");
        assert_eq!(ids(&sup), ["conn.2 Running"], "{ends}");
    }
}

/// The same removal (a dynamic child terminated by its own restart, which
/// then fails) deletes the child as every other removal does: its `Addr`
/// answers `Deleted`, and, holding, takes no call no incarnation would
/// run (it answered `NotRunning` and held them forever).
#[test]
fn supervise_a_dynamic_child_removed_by_a_failed_restart_has_a_deleted_addr() {
    let mut rt = Rt::new();
    let log = new_log();
    let handle: Me = Rc::default();
    let starts = Rc::new(Cell::new(0u32));
    let (h, l, c) = (handle.clone(), log.clone(), starts.clone());
    let template = ChildSpec::worker_with("conn", move |core, n: &u32| {
        c.set(c.get() + 1);
        if c.get() == 2 {
            me(&h).terminate_child(core, "conn.1")?;
            return Err("the restart fails".into());
        }
        Ok(device!(core, W::init(n.to_string(), l.clone())).into())
    })
    .hold(8, Overflow::Reject);
    let sup = Supervisor::start_dynamic(&mut rt.s, DynamicSpec::new(template)).unwrap();
    *handle.borrow_mut() = Some(sup.untyped().clone());
    let one = sup.start_child(&mut rt.s, 1).expect("conn.1 starts");
    let addr = sup.addr::<W>("conn.1").expect("conn.1 is there");
    rt.run();
    one.line.kill("test").unwrap();
    rt.run();
    assert!(ids(&sup).is_empty(), "removed: {:?}", ids(&sup));
    assert_eq!(starts.get(), 2, "not retried");
    let sent = addr.send(|_, _| {});
    assert!(
        matches!(sent, Err(AddrError::Deleted)),
        "a removed child's Addr answers Deleted; got {sent:?} (held: {})",
        addr.held()
    );
    assert_eq!(addr.held(), 0);
}

/// An error whose `Drop` asks its supervisor which children it has (user
/// code run when the error goes), and records whether it was answered.
#[derive(Debug)]
struct AsksWhenDropped {
    sup: Me,
    answered: Rc<Cell<Option<bool>>>,
}

impl std::fmt::Display for AsksWhenDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an error that asks its supervisor when dropped")
    }
}

impl Error for AsksWhenDropped {}

impl Drop for AsksWhenDropped {
    fn drop(&mut self) {
        if let Some(sup) = self.sup.borrow().as_ref() {
            self.answered.set(Some(sup.which_children().is_ok()));
        }
    }
}

/// The module's discipline, for the work a shutdown gives up: b fails
/// while the supervisor waits for a's termination, so b's restart is
/// queued with b's error; the shutdown that follows gives that restart
/// up, and the error is dropped once the supervisor's state is no longer
/// borrowed: its `Drop` may call the supervisor (dropped inside the
/// borrow, it panicked with a double borrow).
#[test]
fn supervise_a_restart_given_up_by_a_shutdown_drops_its_error_outside_the_state() {
    let mut rt = Rt::new();
    let log = new_log();
    let m: Me = Rc::default();
    let (a, _pa) = kid(&log, "a", nothing(), Some(Box::new(|_, _| Ok(()))));
    let (b, pb) = plain(&log, "b");
    let sup =
        Supervisor::start(&mut rt.s, SupervisorSpec::one_for_one().child(a).child(b)).unwrap();
    *m.borrow_mut() = Some(sup.handle());
    rt.run();
    sup.terminate_child(&mut rt.s, "a").unwrap();
    rt.run();
    assert_eq!(status(&sup.handle(), "a"), "Terminating");
    let answered = Rc::new(Cell::new(None));
    let b_line = pb.lines.borrow_mut().pop().expect("b runs");
    b_line
        .kill(AsksWhenDropped {
            sup: m.clone(),
            answered: answered.clone(),
        })
        .unwrap();
    drop(b_line);
    rt.run();
    // b's restart waits behind a's termination, holding b's error.
    assert_eq!(ids(&sup.handle()), ["a Terminating", "b Stopped"]);
    assert_eq!(answered.get(), None, "the error is held");
    sup.shutdown(&mut rt.s).unwrap();
    assert_eq!(
        answered.get(),
        Some(true),
        "dropped outside the borrow, answered"
    );
    rt.advance(Duration::from_secs(2));
    assert!(is_plain_shutdown(sup.line().cause()));
}
