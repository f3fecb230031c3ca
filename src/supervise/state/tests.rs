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

/// A state with what its driver keeps: the time the steps are taken
/// at, the next device number to place a start with, and the log of the
/// terminations begun and the starts made.
struct Driven {
    st: State<(), ()>,
    now: Instant,
    next_dev: u64,
    log: Vec<String>,
}

impl Driven {
    fn new(st: State<(), ()>) -> Driven {
        Driven {
            st,
            now: Instant::now(),
            next_dev: 200,
            log: Vec::new(),
        }
    }

    /// What a driver does with the steps until the supervisor must wait:
    /// the terminations begun and the starts made (each placed at once
    /// with the next device number), as a log.
    fn drive(&mut self) {
        loop {
            match self.st.next_step() {
                Step::Idle => return,
                Step::Terminate(key) => {
                    let t = self.st.begin_terminate(key).unwrap();
                    self.log
                        .push(format!("terminate {}", self.st.entries[t.idx].id));
                }
                Step::Start(targets) => self.start(targets),
                Step::End(cause) => {
                    self.st.end();
                    self.log.push(format!("end {cause}"));
                    return;
                }
                Step::Restart(key, cause) => {
                    let mut cause = Kept::Cause(cause);
                    match self.st.restart_job(key, self.now, &mut cause) {
                        Plan::Start(targets) => self.start(targets),
                        Plan::Later => {}
                        Plan::GaveUp(id) => self.log.push(format!("give up at {id}")),
                    }
                }
            }
        }
    }

    fn start(&mut self, targets: Targets) {
        for &key in targets.keys() {
            if let Some(idx) = self.st.to_start(key) {
                self.log.push(format!("start {}", self.st.entries[idx].id));
                self.next_dev += 1;
                assert!(self.st.place(key, dev(self.next_dev), ()).is_ok());
            }
        }
    }

    /// The child the supervisor waits for goes down, and the driver
    /// carries on.
    fn terminated_then_drive(&mut self) {
        terminated(&mut self.st);
        self.drive();
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
    let mut d = Driven::new(workers(Strategy::OneForOne, &["a", "b", "c"]));
    assert_eq!(crash(&mut d.st, "b"), Exit::Restart);
    d.drive();
    assert_eq!(d.log, ["start b"]);
    assert_eq!(running(&d.st), ["a", "b", "c"]);
    assert!(d.st.is_idle());
}

#[test]
fn one_for_all_terminates_the_others_in_reverse_then_starts_all_in_order() {
    let mut d = Driven::new(workers(Strategy::OneForAll, &["a", "b", "c", "d"]));
    crash(&mut d.st, "b");
    d.drive();
    // One termination at a time: each waits for its Down.
    assert_eq!(d.log, ["terminate d"]);
    for _ in 0..2 {
        d.terminated_then_drive();
    }
    assert_eq!(d.log, ["terminate d", "terminate c", "terminate a"]);
    terminated(&mut d.st);
    d.log.clear();
    d.drive();
    assert_eq!(d.log, ["start a", "start b", "start c", "start d"]);
}

#[test]
fn rest_for_one_restarts_the_exited_child_and_those_after_it() {
    let mut d = Driven::new(workers(Strategy::RestForOne, &["a", "b", "c", "d"]));
    crash(&mut d.st, "b");
    d.drive();
    d.terminated_then_drive();
    d.terminated_then_drive();
    assert_eq!(
        d.log,
        [
            "terminate d",
            "terminate c",
            "start b",
            "start c",
            "start d"
        ]
    );
    assert_eq!(running(&d.st), ["a", "b", "c", "d"]);
}

#[test]
fn a_temporary_sibling_is_terminated_and_removed_not_restarted() {
    let temp = Policy {
        restart: Restart::Temporary,
        ..WORKER
    };
    let mut d = Driven::new(with(Strategy::OneForAll, &[("a", WORKER), ("t", temp)]));
    crash(&mut d.st, "a");
    d.drive();
    d.terminated_then_drive();
    assert_eq!(d.log, ["terminate t", "start a"]);
    assert_eq!(running(&d.st), ["a"]);
    assert_eq!(d.st.entries.len(), 1);
}

#[test]
fn simple_one_for_one_restarts_each_alone_and_removes_what_does_not_restart() {
    let transient = Policy {
        restart: Restart::Transient,
        ..WORKER
    };
    let mut d = Driven::new(with(
        Strategy::SimpleOneForOne,
        &[("w.1", transient), ("w.2", transient)],
    ));
    assert_eq!(crash(&mut d.st, "w.1"), Exit::Restart);
    d.drive();
    assert_eq!(d.log, ["start w.1"]);
    // A normal stop of a transient dynamic child: removed.
    let idx = d.st.by_id("w.2").unwrap();
    let down = d.st.child_down(idx, false);
    assert_eq!(down.exit, Exit::NotRestarted);
    assert!(down.remove);
    d.st.remove_at(idx);
    assert_eq!(running(&d.st), ["w.1"]);
    // Static calls are refused.
    assert!(matches!(
        d.st.stopped_child("w.1"),
        Err(ChildError::SimpleOneForOne)
    ));
    assert!(matches!(
        d.st.check_new(&ChildId::from("x")),
        Err(ChildError::SimpleOneForOne)
    ));
    assert_eq!(d.st.dynamic_id(&ChildId::from("w")).as_str(), "w.1");
}

#[test]
fn one_restart_past_the_intensity_shuts_down_in_reverse_and_escalates() {
    let mut d = Driven::new(workers(Strategy::OneForOne, &["a", "b", "c"]));
    // The default intensity: one restart in 5 s.
    crash(&mut d.st, "b");
    d.drive();
    crash(&mut d.st, "b");
    d.drive();
    assert_eq!(d.log, ["start b", "give up at b", "terminate c"]);
    d.terminated_then_drive();
    d.terminated_then_drive();
    assert_eq!(d.log[3], "terminate a");
    let end = &d.log[4];
    assert!(end.starts_with("end failed: supervisor #1 reached its restart intensity"));
    assert!(d.st.check_running().is_err());
    // A restart later than the period would have been allowed.
    let mut st = workers(Strategy::OneForOne, &["a"]);
    let mut kept = fault();
    let idx = st.by_id("a").unwrap();
    st.child_down(idx, true);
    assert!(matches!(
        st.plan_restart(idx, d.now, &mut kept),
        Plan::Start(_)
    ));
    let key = st.entries[idx].key;
    assert!(st.place(key, dev(300), ()).is_ok());
    st.child_down(idx, true);
    let later = d.now + Duration::from_secs(6);
    assert!(matches!(
        st.plan_restart(idx, later, &mut kept),
        Plan::Start(_)
    ));
}

#[test]
fn shutdown_terminates_in_reverse_start_order_then_ends() {
    let mut d = Driven::new(workers(Strategy::OneForOne, &["a", "b", "c"]));
    d.st.shut_down(Cause::Shutdown { by: None });
    assert!(matches!(
        d.st.check_running(),
        Err(ChildError::ShuttingDown)
    ));
    for _ in 0..3 {
        d.drive();
        terminated(&mut d.st);
    }
    d.drive();
    assert_eq!(
        d.log,
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
    let mut d = Driven::new(workers(Strategy::OneForOne, &["a", "b", "c"]));
    // b's start function runs (a restart_child), and asks for the
    // shutdown meanwhile.
    let b = d.st.entries[1].key;
    d.st.entries[1].run = None;
    d.st.launching(1);
    d.st.shut_down(Cause::Shutdown { by: None });
    d.drive();
    assert_eq!(d.log, ["terminate c"]);
    d.terminated_then_drive();
    // a is next, but the end waits for the start function.
    assert_eq!(d.log, ["terminate c", "terminate a"]);
    d.terminated_then_drive();
    assert_eq!(d.st.mode, Mode::Stopping, "the start function asked for it");
    d.st.launched(b, 1);
    assert!(d.st.place(b, dev(250), ()).is_ok());
    d.drive();
    d.terminated_then_drive();
    assert_eq!(
        d.log,
        [
            "terminate c",
            "terminate a",
            "terminate b",
            "end shut down on request"
        ]
    );
    // Once ended, an incarnation has no place.
    assert!(d.st.place(b, dev(251), ()).is_err());
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
    assert_eq!(st.start_failed().0.unwrap().as_str(), "b");
    assert_eq!(
        st.begin_terminate(key).map(|t| t.policy),
        Some(Shutdown::Timeout(UNWIND_LIMIT))
    );
}
