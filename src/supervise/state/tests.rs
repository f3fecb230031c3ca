//! The decisions of [`State`], with no driver: strategies, restart
//! intensity and the shutdown order, step by step.

use super::*;
use std::num::NonZeroU64;

const WORKER: Policy = Policy {
    restart: Restart::Permanent,
    shutdown: Shutdown::BrutalKill,
    kind: ChildKind::Worker,
};

fn dev(n: u64) -> DeviceId {
    DeviceId::from_raw(NonZeroU64::new(n).unwrap())
}

/// A supervisor's state with these children, each placed with device
/// `100 + key`; no driver, no devices.
fn with(strategy: Strategy, policies: &[(&str, Policy)]) -> State<(), ()> {
    let mut st = State::new(dev(1), strategy, Intensity::default());
    for (id, policy) in policies {
        let key = st.add(ChildId::from(*id), *policy, ());
        assert!(st.place(key, dev(100 + key), ()).is_ok());
    }
    st
}

fn workers(strategy: Strategy, ids: &[&str]) -> State<(), ()> {
    let v: Vec<_> = ids.iter().map(|id| (*id, WORKER)).collect();
    with(strategy, &v)
}

fn fault() -> Kept {
    Kept::Cause(Cause::Dropped)
}

/// What a driver does with the steps until the supervisor must wait:
/// the terminations begun and the starts made (each placed at once
/// with the next device number), as a log.
fn drive(st: &mut State<(), ()>, now: Instant, next_dev: &mut u64, log: &mut Vec<String>) {
    loop {
        match st.next_step() {
            Step::Idle => return,
            Step::Terminate(key) => {
                let t = st.begin_terminate(key).unwrap();
                log.push(format!("terminate {}", st.entries[t.idx].id));
            }
            Step::Start(targets) => start(st, targets, next_dev, log),
            Step::End(cause) => {
                st.end();
                log.push(format!("end {cause}"));
                return;
            }
            Step::Restart(key, cause) => {
                let mut cause = Kept::Cause(cause);
                match st.restart_job(key, now, &mut cause) {
                    Plan::Start(targets) => start(st, targets, next_dev, log),
                    Plan::Later => {}
                    Plan::GaveUp(id) => log.push(format!("give up at {id}")),
                }
            }
        }
    }
}

fn start(st: &mut State<(), ()>, targets: Targets, next_dev: &mut u64, log: &mut Vec<String>) {
    for &key in targets.keys() {
        if let Some(idx) = st.to_start(key) {
            log.push(format!("start {}", st.entries[idx].id));
            *next_dev += 1;
            assert!(st.place(key, dev(*next_dev), ()).is_ok());
        }
    }
}

/// The child `id`'s incarnation goes down with a fault; the exit is
/// decided and carried out as the driver does (a restart queued, a child
/// gone for good removed).
fn crash(st: &mut State<(), ()>, id: &str) -> Exit {
    let idx = st.by_id(id).unwrap();
    let down = st.child_down(idx, true);
    if down.exit == Exit::Restart {
        st.queue_restart(st.entries[idx].key, Cause::Dropped);
    }
    if down.remove {
        st.remove_at(idx);
    }
    down.exit
}

/// The child the supervisor waits for goes down.
fn terminated(st: &mut State<(), ()>) {
    let w = st.waiting.as_ref().map(|w| w.dev).unwrap();
    let idx = st.incarnation(w).unwrap();
    let down = st.child_down(idx, true);
    assert_eq!(down.exit, Exit::Terminated);
    if down.remove {
        st.remove_at(idx);
    }
}

fn running(st: &State<(), ()>) -> Vec<String> {
    st.entries
        .iter()
        .filter(|e| e.run.is_some())
        .map(|e| e.id.to_string())
        .collect()
}

#[test]
fn one_for_one_restarts_only_the_exited_child_at_once() {
    let now = Instant::now();
    let mut st = workers(Strategy::OneForOne, &["a", "b", "c"]);
    let mut log = Vec::new();
    let mut next = 200;
    assert_eq!(crash(&mut st, "b"), Exit::Restart);
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(log, ["start b"]);
    assert_eq!(running(&st), ["a", "b", "c"]);
    assert!(st.is_idle());
}

#[test]
fn one_for_all_terminates_the_others_in_reverse_then_starts_all_in_order() {
    let now = Instant::now();
    let mut st = workers(Strategy::OneForAll, &["a", "b", "c", "d"]);
    let mut log = Vec::new();
    let mut next = 200;
    crash(&mut st, "b");
    drive(&mut st, now, &mut next, &mut log);
    // One termination at a time: each waits for its Down.
    assert_eq!(log, ["terminate d"]);
    for _ in 0..2 {
        terminated(&mut st);
        drive(&mut st, now, &mut next, &mut log);
    }
    assert_eq!(log, ["terminate d", "terminate c", "terminate a"]);
    terminated(&mut st);
    log.clear();
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(log, ["start a", "start b", "start c", "start d"]);
}

#[test]
fn rest_for_one_restarts_the_exited_child_and_those_after_it() {
    let now = Instant::now();
    let mut st = workers(Strategy::RestForOne, &["a", "b", "c", "d"]);
    let mut log = Vec::new();
    let mut next = 200;
    crash(&mut st, "b");
    drive(&mut st, now, &mut next, &mut log);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(
        log,
        [
            "terminate d",
            "terminate c",
            "start b",
            "start c",
            "start d"
        ]
    );
    assert_eq!(running(&st), ["a", "b", "c", "d"]);
}

#[test]
fn a_temporary_sibling_is_terminated_and_removed_not_restarted() {
    let now = Instant::now();
    let temp = Policy {
        restart: Restart::Temporary,
        ..WORKER
    };
    let mut st = with(Strategy::OneForAll, &[("a", WORKER), ("t", temp)]);
    let mut log = Vec::new();
    let mut next = 200;
    crash(&mut st, "a");
    drive(&mut st, now, &mut next, &mut log);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(log, ["terminate t", "start a"]);
    assert_eq!(running(&st), ["a"]);
    assert_eq!(st.entries.len(), 1);
}

#[test]
fn simple_one_for_one_restarts_each_alone_and_removes_what_does_not_restart() {
    let now = Instant::now();
    let transient = Policy {
        restart: Restart::Transient,
        ..WORKER
    };
    let mut st = with(
        Strategy::SimpleOneForOne,
        &[("w.1", transient), ("w.2", transient)],
    );
    let mut log = Vec::new();
    let mut next = 200;
    assert_eq!(crash(&mut st, "w.1"), Exit::Restart);
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(log, ["start w.1"]);
    // A normal stop of a transient dynamic child: removed.
    let idx = st.by_id("w.2").unwrap();
    let down = st.child_down(idx, false);
    assert_eq!(down.exit, Exit::NotRestarted);
    assert!(down.remove);
    st.remove_at(idx);
    assert_eq!(running(&st), ["w.1"]);
    // Static calls are refused.
    assert!(matches!(
        st.stopped_child("w.1"),
        Err(ChildError::SimpleOneForOne)
    ));
    assert!(matches!(
        st.check_new(&ChildId::from("x")),
        Err(ChildError::SimpleOneForOne)
    ));
    assert_eq!(st.dynamic_id(&ChildId::from("w")).as_str(), "w.1");
}

#[test]
fn one_restart_past_the_intensity_shuts_down_in_reverse_and_escalates() {
    let now = Instant::now();
    let mut st = workers(Strategy::OneForOne, &["a", "b", "c"]);
    let mut log = Vec::new();
    let mut next = 200;
    // The default intensity: one restart in 5 s.
    crash(&mut st, "b");
    drive(&mut st, now, &mut next, &mut log);
    crash(&mut st, "b");
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(log, ["start b", "give up at b", "terminate c"]);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(log[3], "terminate a");
    let end = &log[4];
    assert!(end.starts_with("end failed: supervisor #1 reached its restart intensity"));
    assert!(st.check_running().is_err());
    // A restart later than the period would have been allowed.
    let mut st = workers(Strategy::OneForOne, &["a"]);
    let mut kept = fault();
    let idx = st.by_id("a").unwrap();
    st.child_down(idx, true);
    assert!(matches!(
        st.plan_restart(idx, now, &mut kept),
        Plan::Start(_)
    ));
    let key = st.entries[idx].key;
    assert!(st.place(key, dev(300), ()).is_ok());
    st.child_down(idx, true);
    let later = now + Duration::from_secs(6);
    assert!(matches!(
        st.plan_restart(idx, later, &mut kept),
        Plan::Start(_)
    ));
}

#[test]
fn shutdown_terminates_in_reverse_start_order_then_ends() {
    let now = Instant::now();
    let mut st = workers(Strategy::OneForOne, &["a", "b", "c"]);
    let mut log = Vec::new();
    let mut next = 200;
    st.shut_down(Cause::Shutdown { by: None });
    assert!(matches!(st.check_running(), Err(ChildError::ShuttingDown)));
    for _ in 0..3 {
        drive(&mut st, now, &mut next, &mut log);
        terminated(&mut st);
    }
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(
        log,
        [
            "terminate c",
            "terminate b",
            "terminate a",
            "end shut down on request"
        ]
    );
}

#[test]
fn an_incarnation_placed_during_the_shutdown_is_shut_down_in_its_place() {
    let now = Instant::now();
    let mut st = workers(Strategy::OneForOne, &["a", "b", "c"]);
    // b's start function runs (a restart_child), and asks for the
    // shutdown meanwhile.
    let b = st.entries[1].key;
    st.entries[1].run = None;
    st.launching();
    st.shut_down(Cause::Shutdown { by: None });
    let mut log = Vec::new();
    let mut next = 200;
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(log, ["terminate c"]);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    // a is next, but the end waits for the start function.
    assert_eq!(log, ["terminate c", "terminate a"]);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    assert!(st.launched());
    assert!(st.place(b, dev(250), ()).is_ok());
    drive(&mut st, now, &mut next, &mut log);
    terminated(&mut st);
    drive(&mut st, now, &mut next, &mut log);
    assert_eq!(
        log,
        [
            "terminate c",
            "terminate a",
            "terminate b",
            "end shut down on request"
        ]
    );
    // Once ended, an incarnation has no place.
    assert!(st.place(b, dev(251), ()).is_err());
}

#[test]
fn an_unwinding_supervisor_bounds_the_wait_for_an_infinity_child() {
    let infinity = Policy {
        shutdown: Shutdown::Infinity,
        ..WORKER
    };
    let mut st = with(Strategy::OneForOne, &[("a", infinity), ("b", infinity)]);
    let key = st.entries[0].key;
    assert_eq!(
        st.begin_terminate(key).map(|t| t.policy),
        Some(Shutdown::Infinity)
    );
    assert!(st.waits_for(key, dev(100)));
    assert_eq!(st.timed_out(key), Some((0, UNWIND_LIMIT)));
    st.unwait();
    // b failed to start: the started ones remain, bounded.
    st.entries[1].run = None;
    assert_eq!(st.start_failed().unwrap().as_str(), "b");
    assert_eq!(
        st.begin_terminate(key).map(|t| t.policy),
        Some(Shutdown::Timeout(UNWIND_LIMIT))
    );
}
