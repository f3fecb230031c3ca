//! Task groups (`stakplane::group`): dispatch, restarts that lose nothing,
//! resizing, stats, escalation. All on stakker's virtual time.

mod common;

use common::Rt;
use stakplane::group::{Dispatch, Group, GroupSpec};
use stakplane::mailbox::{Overflow, SendError};
use stakplane::prelude::*;
use stakplane::supervise::{ChildStatus, Supervisor, SupervisorSpec};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// (worker number, message) in handling order.
type Log = Rc<RefCell<Vec<(u64, u32)>>>;

/// The message a worker panics on.
const CRASH: u32 = 666;

struct Worker {
    number: u64,
    log: Log,
}

impl Worker {
    fn init(_: CX![], number: u64, log: Log) -> Option<Self> {
        Some(Worker { number, log })
    }

    fn handle(&mut self, _: CX![], msg: u32) {
        if msg == CRASH {
            panic!("worker {} crashes", self.number);
        }
        self.log.borrow_mut().push((self.number, msg));
    }
}

fn spec(size: usize, log: &Log) -> GroupSpec<Worker, u32> {
    let log = log.clone();
    GroupSpec::new(
        "workers",
        size,
        move |core, number| Ok(device!(core, Worker::init(number, log.clone()))),
        |this: &mut Worker, cx, msg| this.handle(cx, msg),
    )
}

/// A runtime with the group of `spec` started and its workers ready.
fn started(spec: GroupSpec<Worker, u32>) -> (Rt, Group<Worker, u32>) {
    let mut rt = Rt::new();
    let group = Group::start(&mut rt.s, spec).unwrap();
    rt.run();
    (rt, group)
}

fn handled(log: &Log) -> Vec<u32> {
    let mut v: Vec<u32> = log.borrow().iter().map(|(_, m)| *m).collect();
    v.sort_unstable();
    v
}

#[test]
fn round_robin_gives_each_worker_its_turn() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(3, &log));
    for m in 0..9 {
        group.try_send(m).unwrap();
    }
    rt.run();
    let log = log.borrow();
    for (number, msg) in log.iter() {
        assert_eq!(
            u64::from(*msg) % 3,
            *number,
            "message {msg} went to worker {number}"
        );
    }
    assert_eq!(log.len(), 9);
    let stats = group.stats();
    assert!(stats
        .workers
        .iter()
        .all(|w| w.msgs_in == 3 && w.msgs_out == 3));
    assert_eq!(stats.total.msgs_out, 9);
}

#[test]
fn round_robin_skips_a_full_worker_and_refuses_only_when_all_are_full() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(2, &log).mailbox(1, Overflow::Reject));
    group.try_send(1).unwrap();
    group.try_send(2).unwrap();
    match group.try_send(3) {
        Err(SendError::Full(m)) => assert_eq!(m, 3, "the message comes back"),
        other => panic!("expected Full, got {other:?}"),
    }
    rt.run();
    assert_eq!(handled(&log), [1, 2]);
    group.try_send(3).unwrap();
    rt.run();
    assert_eq!(handled(&log), [1, 2, 3]);
}

/// Each message goes to a worker holding the fewest messages (on a tie,
/// the first such after the last one used): from even loads the depths
/// grow evenly, and from uneven ones the fuller worker gets nothing until
/// the others catch up (round-robin would give it every third message).
#[test]
fn least_loaded_gives_each_message_to_the_emptiest_worker() {
    let log: Log = Rc::default();
    let depths = |g: &Group<Worker, u32>| -> Vec<usize> {
        g.stats().workers.iter().map(|w| w.depth).collect()
    };
    let (mut rt, group) = started(spec(3, &log).dispatch(Dispatch::LeastLoaded));
    // Nothing is handled between sends.
    let even = [
        [1, 0, 0],
        [1, 1, 0],
        [1, 1, 1],
        [2, 1, 1],
        [2, 2, 1],
        [2, 2, 2],
        [3, 2, 2],
    ];
    for (m, want) in (0..).zip(even) {
        group.try_send(m).unwrap();
        assert_eq!(depths(&group), want, "after message {m}");
    }
    rt.run();
    assert_eq!(handled(&log), (0..7).collect::<Vec<_>>());

    // Not started: one worker holds three messages, two new ones none.
    let group = Group::new(spec(1, &log).dispatch(Dispatch::LeastLoaded));
    for m in 10..13 {
        group.try_send(m).unwrap();
    }
    assert_eq!(group.resize(&mut rt.s, 3).unwrap(), []);
    assert_eq!(depths(&group), [3, 0, 0]);
    let uneven = [
        [3, 1, 0],
        [3, 1, 1],
        [3, 2, 1],
        [3, 2, 2],
        [3, 3, 2],
        [3, 3, 3],
        [4, 3, 3],
    ];
    for (m, want) in (20..).zip(uneven) {
        group.try_send(m).unwrap();
        assert_eq!(depths(&group), want, "after message {m}");
    }
}

/// A worker of the least-loaded groups below, which stops on [`STOP`].
struct Stopper;

impl Stopper {
    fn init(_: CX![]) -> Option<Self> {
        Some(Stopper)
    }
}

const STOP: u32 = 999;

/// Rule 95's least-loaded case with the emptiest worker full: worker 0
/// holds the fewest messages, yet its room is promised to two waiting
/// `send`s. Once the deliveries ran, before the restarts (worker 0
/// handles 2 messages and stops, worker 1 handles 1 and stops), worker
/// 0 holds 1 message and 2 promised slots (full), worker 1 2 of 3; `at`
/// runs there, on the queue, with the depths then.
fn with_the_emptiest_worker_full<T: 'static>(
    at: impl FnOnce(&Group<Stopper, u32>, Vec<usize>) -> T + 'static,
) -> T {
    use std::future::Future;
    use std::task::{Context, Waker};
    let mut rt = Rt::new();
    let spec = GroupSpec::new(
        "w",
        2,
        |core, _| Ok(device!(core, Stopper::init())),
        |_: &mut Stopper, cx, m: u32| {
            if m == STOP {
                cx.stop();
            }
        },
    )
    .dispatch(Dispatch::LeastLoaded)
    .mailbox(3, Overflow::Reject)
    .intensity(10, Duration::from_secs(5));
    let group = Group::start(&mut rt.s, spec).unwrap();
    rt.run();
    // Worker 0 gets [1, STOP, 3], worker 1 [STOP, 5, 7]: both full.
    for m in [1, STOP, STOP, 5, 3, 7] {
        group.try_send(m).unwrap();
    }
    let mut cx = Context::from_waker(Waker::noop());
    // Two sends wait on worker 0 (the refused try_send moves the cursor
    // back to it in between).
    let mut f1 = std::pin::pin!(group.send(10));
    assert!(f1.as_mut().poll(&mut cx).is_pending());
    assert!(matches!(group.try_send(11), Err(SendError::Full(11))));
    let mut f2 = std::pin::pin!(group.send(12));
    assert!(f2.as_mut().poll(&mut cx).is_pending());
    let out: Rc<RefCell<Option<T>>> = Rc::default();
    {
        let (g, out) = (group.clone(), out.clone());
        rt.s.defer(move |_| {
            let depths = g.stats().workers.iter().map(|w| w.depth).collect();
            *out.borrow_mut() = Some(at(&g, depths));
        });
    }
    rt.run();
    let got = out.borrow_mut().take().unwrap();
    got
}

/// Rule 95: a least-loaded worker may hold the fewest messages and still
/// be full, its room promised to waiting `send`s; `try_send` then offers
/// the message to the others, and refuses only when every worker does.
#[test]
fn least_loaded_offers_a_message_its_emptiest_worker_refuses_to_the_others() {
    let (depths, sent) = with_the_emptiest_worker_full(|g, depths| (depths, g.try_send(13)));
    assert_eq!(depths, [1, 2]);
    assert!(sent.is_ok(), "refused {sent:?} though worker 1 had room");
}

/// Rule 95: `Group::send` first offers the message as `try_send` does,
/// skipping a full worker, and waits only when every worker refuses it.
/// Worker 0 stays in Prep (its mailbox waits for it) with its one slot
/// taken; it is round-robin's turn, yet the send goes to worker 1 at once,
/// and the refusal it skipped is not counted (the send was not refused).
#[test]
fn group_send_skips_a_full_worker_as_try_send_does() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    struct Stalled {
        number: u64,
        log: Log,
    }
    impl Stalled {
        fn init(_: CX![], number: u64, log: Log) -> Option<Self> {
            if number == 0 {
                return None; // stays in Prep
            }
            Some(Stalled { number, log })
        }
    }
    let mut rt = Rt::new();
    let log: Log = Rc::default();
    let l = log.clone();
    let spec = GroupSpec::new(
        "workers",
        2,
        move |core, number| Ok(device!(core, Stalled::init(number, l.clone()))),
        |this: &mut Stalled, _, msg: u32| this.log.borrow_mut().push((this.number, msg)),
    )
    .mailbox(1, Overflow::Reject)
    .dispatch(Dispatch::RoundRobin);
    let group = Group::start(&mut rt.s, spec).unwrap();
    rt.run();
    group.try_send(1).unwrap(); // worker 0, stalled: now full
    group.try_send(2).unwrap(); // worker 1
    rt.run();
    assert_eq!(*log.borrow(), [(1, 2)]);
    // Worker 0's turn again.
    let rejected = stakplane::mailbox::totals().rejected;
    let mut send = std::pin::pin!(group.send(3));
    let sent = send.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    let depths: Vec<usize> = group.stats().workers.iter().map(|w| w.depth).collect();
    assert!(
        matches!(sent, Poll::Ready(Ok(()))),
        "Group::send waits on the full worker 0 though worker 1 has room \
         (got {sent:?}, depths {depths:?})"
    );
    assert_eq!(depths, [1, 1]);
    assert_eq!(
        stakplane::mailbox::totals().rejected,
        rejected,
        "a refusal skipped is not counted"
    );
    rt.run();
    assert_eq!(*log.borrow(), [(1, 2), (1, 3)], "worker 1 handled it");
}

/// Rule 95, least-loaded: as `try_send`, `Group::send` offers a message
/// its emptiest worker refuses as full (its room promised to waiting
/// sends) to the others instead of waiting on it.
#[test]
fn group_send_offers_a_message_its_emptiest_worker_refuses_to_the_others() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let (before, ready, counted, after) = with_the_emptiest_worker_full(|g, before| {
        let rejected = stakplane::mailbox::totals().rejected;
        let mut send = std::pin::pin!(g.send(13));
        let sent = send.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        let ready = matches!(sent, Poll::Ready(Ok(())));
        let counted = stakplane::mailbox::totals().rejected - rejected;
        let after: Vec<usize> = g.stats().workers.iter().map(|w| w.depth).collect();
        (before, ready, counted, after)
    });
    assert_eq!(before, [1, 2]);
    assert!(
        ready,
        "Group::send waits on the full worker 0 though worker 1 has room"
    );
    assert_eq!(after, [1, 3], "worker 1 took it");
    assert_eq!(counted, 0, "a refusal skipped is not counted");
}

#[test]
fn a_crashed_worker_restarts_and_its_queued_messages_go_to_the_next_incarnation() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(1, &log).intensity(10, Duration::from_secs(5)));
    for m in [1, 2, CRASH, 3, 4] {
        group.try_send(m).unwrap();
    }
    rt.run();
    // The crashing message is dropped (the default policy); the rest are
    // handled in order, 3 and 4 by the second incarnation.
    let got: Vec<u32> = log.borrow().iter().map(|(_, m)| *m).collect();
    assert_eq!(got, [1, 2, 3, 4]);
    let w = &group.stats().workers[0];
    assert_eq!((w.restarts, w.msgs_in, w.msgs_out, w.dropped), (1, 5, 4, 1));
    assert!(group.is_running());
}

#[test]
fn growing_starts_workers_and_shrinking_moves_queued_messages_losing_none() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(2, &log));
    assert!(group.resize(&mut rt.s, 4).unwrap().is_empty());
    rt.run();
    let sup = group.supervisor().unwrap();
    assert_eq!(sup.count_children().unwrap().active, 4);
    // Queue 40 messages over the four workers, then shrink to one before
    // any is handled.
    for m in 0..40 {
        group.try_send(m).unwrap();
    }
    let left = group.resize(&mut rt.s, 1).unwrap();
    assert!(left.is_empty(), "room enough at the remaining worker");
    assert_eq!(group.size(), 1);
    rt.run();
    assert_eq!(
        handled(&log),
        (0..40).collect::<Vec<_>>(),
        "each handled once"
    );
    // The retired workers are gone from the supervisor.
    let running = sup
        .which_children()
        .unwrap()
        .into_iter()
        .filter(|c| matches!(c.status, ChildStatus::Running(_)))
        .count();
    assert_eq!(running, 1);
    let total = group.stats().total;
    assert_eq!((total.size, total.msgs_in, total.msgs_out), (1, 40, 40));
    assert_eq!(total.moved, 30);
}

#[test]
fn shrinking_gives_back_what_no_remaining_worker_can_take() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(2, &log).mailbox(2, Overflow::Reject));
    for m in 0..4 {
        group.try_send(m).unwrap();
    }
    let mut left = group.resize(&mut rt.s, 1).unwrap();
    left.sort_unstable();
    // Worker 1 held 1 and 3; worker 0 is full: both come back.
    assert_eq!(left, [1, 3]);
    rt.run();
    assert_eq!(handled(&log), [0, 2]);
}

#[test]
fn too_many_worker_crashes_make_the_group_supervisor_give_up() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(2, &log).intensity(1, Duration::from_secs(5)));
    let sup = group.supervisor().unwrap();
    group.try_send(CRASH).unwrap();
    group.try_send(CRASH).unwrap();
    rt.run();
    assert!(!group.is_running(), "two restarts in 5 s: given up");
    assert!(sup.line().cause().is_some_and(|c| c.is_fault()));
}

#[test]
fn a_group_restarted_by_its_parent_keeps_its_queued_messages() {
    let mut rt = Rt::new();
    let log: Log = Rc::default();
    // Any crash makes the group's supervisor give up; its parent restarts
    // it, and the new workers take over the same mailboxes.
    let group = Group::new(spec(1, &log).intensity(0, Duration::from_secs(5)));
    let parent = Supervisor::start(
        &mut rt.s,
        SupervisorSpec::one_for_one()
            .intensity(5, Duration::from_secs(5))
            .child(group.child_spec()),
    )
    .unwrap();
    rt.run();
    let first = group.supervisor().unwrap();
    for m in [1, CRASH, 2, 3] {
        group.try_send(m).unwrap();
    }
    rt.run();
    let second = group.supervisor().unwrap();
    assert_ne!(first.line().id(), second.line().id(), "a new incarnation");
    assert!(first.line().cause().is_some_and(|c| c.is_fault()));
    let got: Vec<u32> = log.borrow().iter().map(|(_, m)| *m).collect();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(parent.count_children().unwrap().active, 1);
    assert_eq!(group.stats().workers[0].restarts, 1);
}

#[test]
fn a_group_shuts_down_in_order_and_keeps_queued_messages() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(2, &log));
    group.shutdown(&mut rt.s).unwrap();
    rt.run();
    assert!(!group.is_running());
    assert!(matches!(
        group.shutdown(&mut rt.s),
        Err(stakplane::group::GroupError::NotRunning)
    ));
    // Still accepted (held for a later start), never lost silently.
    group.try_send(7).unwrap();
    assert_eq!(group.stats().total.depth, 1);
}

#[test]
fn shrinking_under_a_dropping_policy_gives_back_what_does_not_fit() {
    let mut rt = Rt::new();
    let log: Log = Rc::default();
    // Not started: the messages wait in the mailboxes.
    let group = Group::new(spec(2, &log).mailbox(2, Overflow::DropNewest));
    for m in 0..4 {
        group.try_send(m).unwrap();
    }
    let mut left = group.resize(&mut rt.s, 1).unwrap();
    left.sort_unstable();
    assert_eq!(left, [1, 3], "nothing dropped, nothing evicted");
    let total = group.stats().total;
    assert_eq!((total.dropped, total.moved, total.depth), (0, 0, 2));
}

/// `MAX_WORKERS` is the largest size: one more is refused with
/// `TooLarge` and changes nothing, on a group not started (where a size
/// only allocates mailboxes, so the limit itself is tried too) and on a
/// running one (nothing is started); `GroupSpec::new` caps a larger size.
#[test]
fn a_size_beyond_the_limit_is_refused_not_allocated() {
    use stakplane::group::{GroupError, MAX_WORKERS};
    #[track_caller]
    fn too_large<T: std::fmt::Debug>(r: Result<T, GroupError>) {
        match r {
            Err(GroupError::TooLarge { max }) => assert_eq!(max, MAX_WORKERS),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
    let mut rt = Rt::new();
    let log: Log = Rc::default();

    let group = Group::new(spec(1, &log));
    too_large(group.resize(&mut rt.s, MAX_WORKERS + 1));
    assert_eq!(group.size(), 1, "nothing changes");
    let left = group.resize(&mut rt.s, MAX_WORKERS);
    assert_eq!(left.expect("the limit itself is allowed"), []);
    assert_eq!(group.size(), MAX_WORKERS);
    too_large(group.resize(&mut rt.s, MAX_WORKERS + 1));
    assert_eq!(group.size(), MAX_WORKERS);
    drop(group);
    assert_eq!(Group::new(spec(MAX_WORKERS + 1, &log)).size(), MAX_WORKERS);

    let group = Group::start(&mut rt.s, spec(1, &log)).unwrap();
    for size in [MAX_WORKERS + 1, usize::MAX] {
        too_large(group.resize(&mut rt.s, size));
        assert_eq!(group.size(), 1);
    }
    rt.run();
    let counts = group.supervisor().unwrap().count_children().unwrap();
    assert_eq!(counts.active, 1, "no worker was started");
}

/// Rule 97: a worker that retires itself from its own handler finishes the
/// message in hand after `resize` returned; that message still counts in
/// the group's totals (handled, not lost from them), as does the one moved
/// from its queue (in once).
#[test]
fn a_message_in_hand_of_a_retired_worker_counts_in_the_totals() {
    type Slot = Rc<RefCell<Option<Group<Scaler, u32>>>>;
    struct Scaler {
        group: Slot,
        handled: Rc<std::cell::Cell<u64>>,
    }
    impl Scaler {
        fn init(_: CX![], group: Slot, handled: Rc<std::cell::Cell<u64>>) -> Option<Self> {
            Some(Scaler { group, handled })
        }
    }
    /// The message on which a worker shrinks the group to one worker.
    const SHRINK: u32 = 99;
    let mut rt = Rt::new();
    let slot: Slot = Rc::default();
    let handled = Rc::new(std::cell::Cell::new(0u64));
    let (s2, h2) = (slot.clone(), handled.clone());
    let spec = GroupSpec::new(
        "scalers",
        2,
        move |core, _n| {
            let (g, h) = (s2.clone(), h2.clone());
            Ok(device!(core, Scaler::init(g, h)))
        },
        |this: &mut Scaler, cx, msg: u32| {
            if msg == SHRINK {
                // The group handle is the test's (see the module docs'
                // note on cycles): cleared at the end.
                let g = this.group.borrow().clone().unwrap();
                let left = g.resize(cx, 1).unwrap();
                assert!(left.is_empty());
            }
            this.handled.set(this.handled.get() + 1);
        },
    );
    let group = Group::start(&mut rt.s, spec).unwrap();
    *slot.borrow_mut() = Some(group.clone());
    rt.run();
    group.try_send(1).unwrap(); // worker 0
    group.try_send(SHRINK).unwrap(); // worker 1: retires itself
    group.try_send(3).unwrap(); // worker 0
    group.try_send(5).unwrap(); // worker 1: moved to worker 0
    rt.run();
    assert_eq!(handled.get(), 4, "each handled once");
    assert_eq!(group.size(), 1);
    let total = group.stats().total;
    *slot.borrow_mut() = None;
    assert_eq!(
        (total.msgs_in, total.msgs_out, total.dropped, total.depth),
        (4, 4, 0, 0),
        "{total:?}"
    );
    assert_eq!(total.moved, 1);
}

/// Rule 97: the totals add up every worker's restarts and drops, and a
/// retired worker's stay in them.
#[test]
fn group_totals_add_up_every_workers_restarts_and_drops_retired_ones_included() {
    let log: Log = Rc::default();
    let (mut rt, group) = started(spec(2, &log).intensity(10, Duration::from_secs(5)));
    // Round-robin: one crash for each worker (the crashing message is
    // dropped, the worker restarted), then one message each.
    for m in [CRASH, CRASH, 1, 2] {
        group.try_send(m).unwrap();
    }
    rt.run();
    assert_eq!(handled(&log), [1, 2]);
    let total = group.stats().total;
    assert_eq!(
        (total.restarts, total.msgs_in, total.msgs_out, total.dropped),
        (2, 4, 2, 2),
        "{total:?}"
    );
    assert!(group.resize(&mut rt.s, 1).unwrap().is_empty());
    rt.run();
    let total = group.stats().total;
    assert_eq!(
        (total.size, total.restarts, total.msgs_in, total.dropped),
        (1, 2, 4, 2),
        "the retired worker still counts: {total:?}"
    );
}
