//! Task groups (the `stage` model): `N` identical workers under one
//! supervisor, each with its own reliable [`Mailbox`], fed by a dispatch
//! policy, resizable at run time, with stats per worker and in total.
//!
//! ```
//! use stakplane::group::{Dispatch, Group, GroupSpec};
//! use stakplane::prelude::*;
//! use std::time::Instant;
//!
//! struct Adder { sum: u64 }
//! impl Adder {
//!     fn init(_: CX![]) -> Option<Self> { Some(Adder { sum: 0 }) }
//! }
//!
//! let now = Instant::now();
//! let mut s = Stakker::new(now);
//! let spec = GroupSpec::new(
//!     "adders",
//!     3,
//!     |core, _worker| Ok(device!(core, Adder::init())),
//!     |this: &mut Adder, _cx, n: u64| this.sum += n,
//! )
//! .dispatch(Dispatch::RoundRobin);
//! let group = Group::start(&mut s, spec).unwrap();
//! for n in 1..=6 {
//!     group.try_send(n).unwrap();
//! }
//! s.run(now, false);
//! let stats = group.stats();
//! assert_eq!(stats.total.msgs_out, 6);
//! assert!(stats.workers.iter().all(|w| w.msgs_in == 2)); // round-robin
//! ```
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//! Workers are permanent dynamic children of a `simple_one_for_one`
//! [`Supervisor`], restarted after any end within the group's restart
//! intensity, each with a mailbox that outlives its incarnations.
//!
//! **95. Round-robin** ([`Dispatch::RoundRobin`]) gives each message to
//! the next worker in turn, skipping a worker whose mailbox refuses it as
//! full. **Least-loaded** ([`Dispatch::LeastLoaded`]) gives it to the
//! worker holding the fewest messages (the first such after the last one
//! used); if that one refuses it as full (its room promised to waiting
//! sends), to the others in turn, as round-robin. [`Group::try_send`]
//! gives the message back ([`SendError::Full`]) only when every worker
//! refuses it. [`Group::send`] makes the same offers without waiting
//! (a refusal it skips is not counted as one: the send is not refused),
//! and only when every worker refuses waits, in the mailbox of the
//! policy's first choice (round-robin: the worker whose turn it is;
//! least-loaded: the emptiest), in line with that mailbox's other waiting
//! senders (rule 91), not for whichever worker frees a slot first (so a
//! send that found every worker full can wait behind a stalled worker
//! while another frees a slot). With a dropping [`Overflow`] policy the
//! chosen worker's mailbox applies it (to its dead letters, never
//! silently), and `send` never waits.
//!
//! **96. A crashed worker is restarted and its queue survives**: the
//! message in hand follows the mailbox's [`OnCrash`] policy, the rest go
//! to the next incarnation in order; past the group's restart intensity
//! the group's supervisor gives up (a fault its parent sees). Under a
//! parent ([`Group::child_spec`]), a restarted group supervisor starts the
//! same workers on the same mailboxes.
//!
//! **97. Resizing loses nothing**: growing starts workers at once;
//! shrinking retires the newest workers (they get no more messages), moves
//! their queued messages to the remaining ones in order, lets the message
//! in hand finish, terminates them per their shutdown policy, and gives
//! back what no remaining worker has room for (a moved message never
//! evicts another and is never dropped, whatever the overflow policy; one
//! that was a crash redelivery loses that mark and may be handed over once
//! more). A size above [`MAX_WORKERS`] is refused
//! ([`GroupError::TooLarge`]) and capped by [`GroupSpec::new`].
//! [`Group::stats`] count per worker and in total (retired workers
//! included): restarts, messages in (accepted) and out (handled), drops,
//! depth, moved. A worker retired with a message in hand (even from its
//! own handler) stays in the totals, depth included, as that message
//! finishes, and is let go once it holds nothing; so in the totals
//! `msgs_in` always equals `msgs_out + dropped + depth` plus the messages
//! `resize` gave back.
//!
//! The start and handler closures must not hold a `Group` handle of their
//! own group (the group owns them: the pair would never be freed); hand
//! workers what they need instead.

use crate::mailbox::{DeadLetter, Mailbox, OnCrash, Overflow, SendError};
use crate::supervise::{
    Child, ChildError, ChildId, ChildKind, ChildSpec, DynamicRef, DynamicSpec, DynamicSupervisor,
    Restart, Shutdown, StartError, Supervisor, SupervisorActor, SupervisorRef,
};
use crate::DeviceOwn;
use stakker::{Core, Cx, Fwd};
use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// How a group chooses the worker for a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dispatch {
    /// Each worker in turn; a worker whose mailbox is full is skipped.
    #[default]
    RoundRobin,
    /// The worker holding the fewest messages (queued plus in hand).
    LeastLoaded,
}

type StartFn<A> = dyn Fn(&mut Core, u64) -> Result<DeviceOwn<A>, Box<dyn Error>>;
type HandlerFn<A, M> = dyn Fn(&mut A, &mut Cx<'_, A>, M);

/// The description of a group: its workers, their mailboxes and the
/// dispatch policy. Built with [`GroupSpec::new`] and the setters.
pub struct GroupSpec<A: 'static, M: 'static> {
    id: ChildId,
    size: usize,
    dispatch: Dispatch,
    capacity: usize,
    overflow: Overflow,
    on_crash: OnCrash<M>,
    intensity: Option<(u32, Duration)>,
    shutdown: Shutdown,
    dead_letters: Option<Fwd<DeadLetter<M>>>,
    start: Rc<StartFn<A>>,
    handler: Rc<HandlerFn<A, M>>,
}

impl<A: 'static, M: 'static> GroupSpec<A, M> {
    /// A group `id` of `size` workers (capped at [`MAX_WORKERS`]).
    /// `start(core, worker)` creates a
    /// worker's device (`worker` numbers the workers from 0, never
    /// reused; a restarted worker keeps its number), and runs again for
    /// every restart; `handler` handles one message on a worker.
    ///
    /// Defaults: [`Dispatch::RoundRobin`]; mailboxes of 1,024 messages
    /// with [`Overflow::Reject`] and [`OnCrash::discard`]; the
    /// supervisor's default restart intensity (1 in 5 s, OTP's); workers
    /// shut down with a 5 s timeout.
    pub fn new(
        id: impl Into<ChildId>,
        size: usize,
        start: impl Fn(&mut Core, u64) -> Result<DeviceOwn<A>, Box<dyn Error>> + 'static,
        handler: impl Fn(&mut A, &mut Cx<'_, A>, M) + 'static,
    ) -> Self {
        GroupSpec {
            id: id.into(),
            size: size.min(MAX_WORKERS),
            dispatch: Dispatch::RoundRobin,
            capacity: 1024,
            overflow: Overflow::Reject,
            on_crash: OnCrash::discard(),
            intensity: None,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            dead_letters: None,
            start: Rc::new(start),
            handler: Rc::new(handler),
        }
    }

    /// Sets the dispatch policy.
    pub fn dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// Sets each worker's mailbox bound and overflow policy. A capacity
    /// of 0 is taken as 1.
    pub fn mailbox(mut self, capacity: usize, overflow: Overflow) -> Self {
        self.capacity = capacity.max(1);
        self.overflow = overflow;
        self
    }

    /// Sets what happens to the message a worker was handling when it
    /// crashed (default [`OnCrash::discard`]).
    pub fn on_crash(mut self, on_crash: OnCrash<M>) -> Self {
        self.on_crash = on_crash;
        self
    }

    /// Sends every worker's dropped messages (overflow, crash) to `fwd`.
    pub fn dead_letters(mut self, fwd: Fwd<DeadLetter<M>>) -> Self {
        self.dead_letters = Some(fwd);
        self
    }

    /// Sets the restart intensity of the group's supervisor: at most
    /// `max_restarts` worker restarts within `period`; one more and the
    /// supervisor gives up (and fails, which its parent sees).
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Some((max_restarts, period));
        self
    }

    /// Sets the workers' shutdown policy (default a 5 s timeout).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }
}

/// Why a group operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupError {
    /// The group's supervisor is not running (never started, given up,
    /// or between two incarnations under a parent).
    NotRunning,
    /// The supervisor refused or failed the change (a worker's start
    /// function failed: [`ChildError::Start`]).
    Supervisor(ChildError),
    /// A size above [`MAX_WORKERS`].
    TooLarge {
        /// The limit.
        max: usize,
    },
}

/// The most workers a group may have (a larger size is refused by
/// [`Group::resize`] and capped by [`GroupSpec::new`]).
pub const MAX_WORKERS: usize = 1 << 16;

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::NotRunning => f.write_str("the group's supervisor is not running"),
            GroupError::Supervisor(e) => write!(f, "the group's supervisor: {e}"),
            GroupError::TooLarge { max } => write!(f, "a group has at most {max} workers"),
        }
    }
}

impl Error for GroupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            GroupError::NotRunning | GroupError::TooLarge { .. } => None,
            GroupError::Supervisor(e) => Some(e),
        }
    }
}

/// One worker's numbers ([`Group::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The worker's number (see [`GroupSpec::new`]).
    pub worker: u64,
    /// Its current child id under the group's supervisor, if running.
    pub child: Option<ChildId>,
    /// Incarnations started after the first.
    pub restarts: u64,
    /// Messages its mailbox accepted.
    pub msgs_in: u64,
    /// Messages its handler finished.
    pub msgs_out: u64,
    /// Messages dropped (overflow, crash), each to the dead letters if
    /// set.
    pub dropped: u64,
    /// Messages held now (queued plus in hand).
    pub depth: usize,
}

/// Totals over a group's workers, retired ones included (except `depth`
/// and `size`, which are now).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupTotals {
    /// Workers now.
    pub size: usize,
    /// Worker restarts.
    pub restarts: u64,
    /// Messages accepted.
    pub msgs_in: u64,
    /// Messages handled.
    pub msgs_out: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Messages moved from retired workers to others (counted in both
    /// workers' `msgs_in`, once in `msgs_out`).
    pub moved: u64,
    /// Messages held now (a retired worker's message still in hand
    /// included).
    pub depth: usize,
}

impl GroupTotals {
    /// Adds a worker's counters (not its depth, which is now).
    fn add_counts(&mut self, w: &WorkerStats) {
        self.restarts += w.restarts;
        self.msgs_in += w.msgs_in;
        self.msgs_out += w.msgs_out;
        self.dropped += w.dropped;
    }
}

/// A group's numbers, read at run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// The current workers, oldest first.
    pub workers: Vec<WorkerStats>,
    /// The totals.
    pub total: GroupTotals,
}

/// A worker's lasting part: its mailbox and counters, shared by its
/// incarnations.
struct Worker<M: 'static> {
    number: u64,
    mailbox: Mailbox<M>,
    starts: Cell<u64>,
    /// The dynamic child id of the current supervisor incarnation.
    child: RefCell<Option<ChildId>>,
}

impl<M: 'static> Worker<M> {
    fn stats(&self) -> WorkerStats {
        let m = self.mailbox.stats();
        WorkerStats {
            worker: self.number,
            child: self.child.borrow().clone(),
            restarts: self.starts.get().saturating_sub(1),
            msgs_in: m.accepted,
            msgs_out: m.handled,
            dropped: m.dropped_overflow + m.dropped_crashed + m.dropped_closed,
            depth: m.depth,
        }
    }
}

struct Inner<A: 'static, M: 'static> {
    spec: GroupSpec<A, M>,
    workers: RefCell<Vec<Rc<Worker<M>>>>,
    next_number: Cell<u64>,
    /// Where round-robin (and the least-loaded tie break) starts.
    cursor: Cell<usize>,
    /// The running supervisor incarnation.
    sup: RefCell<Option<DynamicRef<A, Rc<Worker<M>>>>>,
    /// The supervisor's owning handle, for a group started on its own.
    own: RefCell<Option<DynamicSupervisor<A, Rc<Worker<M>>>>>,
    /// Counts of retired workers that hold nothing, kept in the totals
    /// (`msgs_in` with moved messages counted in both mailboxes).
    retired: Cell<GroupTotals>,
    /// Retired workers whose message in hand had not finished when they
    /// were retired: counted live until they hold nothing, then folded
    /// into `retired` (by `Group::settle_retired`, at every `resize` and
    /// `stats`). In practice at most one: the worker whose handler called
    /// `resize` (handlers run one at a time).
    retiring: RefCell<Vec<Rc<Worker<M>>>>,
}

/// A running (or placeable) group: the handle through which messages are
/// sent, the group resized and its stats read. Cheap to clone (one
/// `Rc`); `!Send`.
pub struct Group<A: 'static, M: 'static> {
    inner: Rc<Inner<A, M>>,
}

impl<A: 'static, M: 'static> Clone for Group<A, M> {
    fn clone(&self) -> Self {
        Group {
            inner: self.inner.clone(),
        }
    }
}

impl<A: 'static, M: 'static> fmt::Debug for Group<A, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.inner.spec.id)
            .field("size", &self.size())
            .field("running", &self.is_running())
            .finish()
    }
}

impl<A: 'static, M: 'static> Group<A, M> {
    /// A group not started yet: place it in a supervision tree with
    /// [`child_spec`](Group::child_spec), or use [`start`](Group::start).
    /// The workers' mailboxes exist from now on: messages sent before the
    /// start wait for the workers.
    pub fn new(spec: GroupSpec<A, M>) -> Self {
        let inner = Rc::new(Inner {
            workers: RefCell::new(Vec::new()),
            next_number: Cell::new(0),
            cursor: Cell::new(0),
            sup: RefCell::new(None),
            own: RefCell::new(None),
            retired: Cell::new(GroupTotals::default()),
            retiring: RefCell::new(Vec::new()),
            spec,
        });
        let group = Group { inner };
        for _ in 0..group.inner.spec.size {
            group.add_worker();
        }
        group
    }

    /// Starts a group on its own: its supervisor, then its workers in
    /// order. The group owns the supervisor: it runs until
    /// [`shutdown`](Group::shutdown), until it gives up, or until the last
    /// handle is dropped.
    ///
    /// Cost: a supervisor, then per worker its start function, a mailbox
    /// attach and the supervisor's per-child bookkeeping.
    ///
    /// # Errors
    /// [`StartError`] if a worker's start function fails; the workers
    /// started before it are ended with the supervisor.
    pub fn start(core: &mut Core, spec: GroupSpec<A, M>) -> Result<Self, StartError> {
        let group = Group::new(spec);
        let sup = group.start_supervisor(core)?;
        *group.inner.own.borrow_mut() = Some(sup);
        Ok(group)
    }

    /// The group as a child of another supervisor: a supervisor-kind child
    /// whose start function starts the group's supervisor and its current
    /// workers. When the parent restarts it, the workers start again on
    /// the same mailboxes: nothing queued is lost. Restart type and
    /// shutdown can be changed on the returned spec.
    pub fn child_spec(&self) -> ChildSpec<SupervisorActor> {
        let group = self.clone();
        ChildSpec::worker(self.inner.spec.id.clone(), move |core| {
            let sup = group.start_supervisor(core)?;
            Ok(sup.into_child())
        })
        .kind(ChildKind::Supervisor)
        .shutdown(Shutdown::Infinity)
        .restart(Restart::Permanent)
    }

    /// The running supervisor's handle (its runtime API: counts, children),
    /// if it runs.
    pub fn supervisor(&self) -> Option<SupervisorRef> {
        self.running_sup().map(|sup| sup.untyped().clone())
    }

    /// Whether the group's supervisor runs.
    pub fn is_running(&self) -> bool {
        self.running_sup().is_some()
    }

    /// Workers now.
    pub fn size(&self) -> usize {
        self.inner.workers.borrow().len()
    }

    /// Sends `msg` to a worker chosen by the dispatch policy (see the
    /// [module docs](self)).
    ///
    /// Cost: one mailbox send; round-robin may try every worker when all
    /// are full, least-loaded scans the workers' depths.
    ///
    /// # Errors
    /// [`SendError::Full`] (the message given back) if no worker takes
    /// it; [`SendError::Closed`] if the group has no worker.
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        self.offer(msg, |mb, m| mb.try_send(m).map_err(SendError::into_inner))
            .map_err(Refused::into_error)
    }

    /// Sends `msg` to a worker chosen by the dispatch policy, as
    /// [`try_send`](Group::try_send) does (skipping a worker that refuses
    /// it as full); only if every worker refuses it, waits for space in the
    /// mailbox of the policy's first choice (for async code on the
    /// runtime's thread). See rule 95 in the [module docs](self).
    ///
    /// Cost: as [`try_send`](Group::try_send) when a worker has room, plus
    /// what [`Mailbox::send`] costs to wait.
    ///
    /// # Errors
    /// [`SendError::Closed`] if the group has no worker or the worker
    /// waited on is retired while the send waits. Never `Full`.
    pub async fn send(&self, msg: M) -> Result<(), SendError<M>> {
        // Under `Reject` a refusal here is not the send's: it waits
        // instead, so it is not counted as one (`rejected_full`), as for
        // `Mailbox::send`. A dropping policy never refuses.
        let reject = self.inner.spec.overflow == Overflow::Reject;
        let offered = self.offer(msg, |mb, m| {
            if reject {
                mb.try_send_if_room(m)
            } else {
                mb.try_send(m).map_err(SendError::into_inner)
            }
        });
        match offered {
            Ok(()) => Ok(()),
            Err(Refused::NoWorker(msg)) => Err(SendError::Closed(msg)),
            Err(Refused::All {
                msg,
                first,
                mailbox,
            }) => {
                // The message will be this worker's: the turn moves on.
                self.inner.cursor.set(first + 1);
                mailbox.send(msg).await
            }
        }
    }

    /// Offers `msg` to the workers by the dispatch policy with `offer`
    /// (which gives it back if refused), never waiting: round-robin each
    /// in turn from the cursor, least-loaded the emptiest first, then the
    /// others in turn. The cursor moves past the worker that takes it
    /// (least-loaded's past its first choice in any case, for the tie
    /// break).
    fn offer(
        &self,
        msg: M,
        offer: impl Fn(&Mailbox<M>, M) -> Result<(), M>,
    ) -> Result<(), Refused<M>> {
        let workers = self.inner.workers.borrow();
        let n = workers.len();
        if n == 0 {
            return Err(Refused::NoWorker(msg));
        }
        let first = match self.inner.spec.dispatch {
            Dispatch::RoundRobin => self.inner.cursor.get() % n,
            Dispatch::LeastLoaded => least_loaded(&workers, self.inner.cursor.get() % n),
        };
        if self.inner.spec.dispatch == Dispatch::LeastLoaded {
            // The tie break starts after the last one chosen.
            self.inner.cursor.set(first + 1);
        }
        self.offer_in_turn(&workers, first, n, msg, offer)
            .map_err(|msg| Refused::All {
                msg,
                first,
                mailbox: workers[first].mailbox.clone(),
            })
    }

    /// Grows or shrinks the group to `size` workers (at most
    /// [`MAX_WORKERS`]; see the
    /// [module docs](self)). Returns the messages of retired workers that
    /// no remaining worker could take (none unless the remaining mailboxes
    /// are full, or `size` is 0), so nothing is lost.
    ///
    /// If the supervisor is not running, the change applies to the next
    /// start.
    ///
    /// Cost: growing starts each new worker (its start function runs
    /// now); shrinking moves each queued message of the retired workers
    /// once.
    ///
    /// # Errors
    /// [`GroupError::Supervisor`] if a new worker fails to start (the
    /// group keeps the workers started so far); [`GroupError::TooLarge`]
    /// above [`MAX_WORKERS`] (nothing changes).
    pub fn resize(&self, core: &mut Core, size: usize) -> Result<Vec<M>, GroupError> {
        if size > MAX_WORKERS {
            return Err(GroupError::TooLarge { max: MAX_WORKERS });
        }
        let sup = self.running_sup();
        while self.size() < size {
            let worker = self.add_worker();
            if let Some(sup) = &sup {
                if let Err(e) = start_worker(sup, core, &worker) {
                    self.inner.workers.borrow_mut().pop();
                    return Err(GroupError::Supervisor(e));
                }
            }
        }
        let mut moved = Vec::new();
        while self.size() > size {
            let Some(worker) = self.inner.workers.borrow_mut().pop() else {
                break;
            };
            moved.extend(worker.mailbox.take_queued());
            worker.mailbox.close();
            let child = worker.child.borrow_mut().take();
            if let (Some(sup), Some(child)) = (&sup, child) {
                // Queued behind the supervisor's work; the child is
                // removed once down. An error means the supervisor is
                // ending, and the worker with it.
                let _ = sup.terminate_child(core, child.as_str());
            }
            // The message in hand, if any, finishes after this (even
            // when this is its own handler): counted once it has.
            self.inner.retiring.borrow_mut().push(worker);
        }
        self.settle_retired();
        let mut left = Vec::new();
        let mut placed = 0;
        for msg in moved {
            match self.place(msg) {
                Ok(()) => placed += 1,
                Err(msg) => left.push(msg),
            }
        }
        let mut t = self.inner.retired.get();
        t.moved += placed;
        self.inner.retired.set(t);
        Ok(left)
    }

    /// Folds the retired workers that hold nothing any more into the
    /// retired totals (their counts are final: their mailboxes are
    /// closed) and lets them go, so that only workers with a message in
    /// hand stay.
    fn settle_retired(&self) {
        let mut t = self.inner.retired.get();
        self.inner.retiring.borrow_mut().retain(|worker| {
            let idle = worker.mailbox.is_empty();
            if idle {
                t.add_counts(&worker.stats());
            }
            !idle
        });
        self.inner.retired.set(t);
    }

    /// Puts a moved message where there is room (round-robin from the
    /// cursor), whatever the overflow policy: a message a retired worker
    /// held is never dropped or allowed to push out another.
    fn place(&self, msg: M) -> Result<(), M> {
        let workers = self.inner.workers.borrow();
        self.round_robin(&workers, msg, |mb, m| mb.try_send_if_room(m))
    }

    /// Offers `msg` to each worker in turn from the cursor with `offer`
    /// (which gives it back if refused); the cursor moves past the worker
    /// that takes it. Gives it back if every worker refuses.
    fn round_robin(
        &self,
        workers: &[Rc<Worker<M>>],
        msg: M,
        offer: impl Fn(&Mailbox<M>, M) -> Result<(), M>,
    ) -> Result<(), M> {
        let start = self.inner.cursor.get();
        self.offer_in_turn(workers, start, workers.len(), msg, offer)
    }

    /// Offers `msg` to `tries` workers in turn from worker `start` (modulo
    /// their number) with `offer`; the cursor moves past the worker that
    /// takes it.
    fn offer_in_turn(
        &self,
        workers: &[Rc<Worker<M>>],
        start: usize,
        tries: usize,
        msg: M,
        offer: impl Fn(&Mailbox<M>, M) -> Result<(), M>,
    ) -> Result<(), M> {
        let n = workers.len();
        let start = start % n.max(1);
        let mut msg = msg;
        for k in 0..tries.min(n) {
            let i = (start + k) % n;
            match offer(&workers[i].mailbox, msg) {
                Ok(()) => {
                    self.inner.cursor.set(i + 1);
                    return Ok(());
                }
                Err(m) => msg = m,
            }
        }
        Err(msg)
    }

    /// The group's numbers now. Cost: one `Vec` of the workers' stats.
    pub fn stats(&self) -> GroupStats {
        let workers: Vec<WorkerStats> = self
            .inner
            .workers
            .borrow()
            .iter()
            .map(|w| w.stats())
            .collect();
        self.settle_retired();
        let mut total = self.inner.retired.get();
        total.size = workers.len();
        total.depth = 0;
        for w in &workers {
            total.add_counts(w);
            total.depth += w.depth;
        }
        // Retired with a message still in hand: it is held now.
        for w in self.inner.retiring.borrow().iter() {
            let w = w.stats();
            total.add_counts(&w);
            total.depth += w.depth;
        }
        // A moved message was accepted by two mailboxes and is handled
        // once: count it in once.
        total.msgs_in = total.msgs_in.saturating_sub(total.moved);
        GroupStats { workers, total }
    }

    /// Shuts the group down: its supervisor terminates the workers in
    /// reverse order, each per its shutdown policy, then ends. Messages
    /// still queued stay in the mailboxes, for a later start (by a parent,
    /// see [`child_spec`](Group::child_spec)).
    ///
    /// # Errors
    /// [`GroupError::NotRunning`] if the supervisor is not running.
    pub fn shutdown(&self, core: &mut Core) -> Result<(), GroupError> {
        let sup = self.running_sup().ok_or(GroupError::NotRunning)?;
        sup.shutdown(core).map_err(GroupError::Supervisor)
    }

    fn running_sup(&self) -> Option<DynamicRef<A, Rc<Worker<M>>>> {
        let sup = self.inner.sup.borrow().clone()?;
        sup.strategy().ok().map(|_| sup)
    }

    fn add_worker(&self) -> Rc<Worker<M>> {
        let spec = &self.inner.spec;
        let mailbox = Mailbox::with_policy(spec.capacity, spec.overflow, spec.on_crash);
        if let Some(fwd) = &spec.dead_letters {
            mailbox.dead_letters(fwd.clone());
        }
        let number = self.inner.next_number.get();
        self.inner.next_number.set(number + 1);
        let worker = Rc::new(Worker {
            number,
            mailbox,
            starts: Cell::new(0),
            child: RefCell::new(None),
        });
        self.inner.workers.borrow_mut().push(worker.clone());
        worker
    }

    /// Starts a supervisor incarnation with every current worker.
    fn start_supervisor(
        &self,
        core: &mut Core,
    ) -> Result<DynamicSupervisor<A, Rc<Worker<M>>>, StartError> {
        let spec = &self.inner.spec;
        let (start, handler) = (spec.start.clone(), spec.handler.clone());
        let template = ChildSpec::worker_with(
            format!("{}-worker", spec.id),
            move |core, worker: &Rc<Worker<M>>| {
                let own = start(core, worker.number)?;
                worker.starts.set(worker.starts.get() + 1);
                let handler = handler.clone();
                worker
                    .mailbox
                    .attach(core, own.actor(), move |a, cx, m| handler(a, cx, m));
                Ok(Child::new(own))
            },
        )
        .restart(Restart::Permanent)
        .shutdown(spec.shutdown);
        let mut sup_spec = DynamicSpec::new(template);
        if let Some((n, period)) = spec.intensity {
            sup_spec = sup_spec.intensity(n, period);
        }
        let sup = Supervisor::start_dynamic(core, sup_spec)?;
        let workers: Vec<Rc<Worker<M>>> = self.inner.workers.borrow().clone();
        for worker in &workers {
            if let Err(e) = start_worker(&sup.handle(), core, worker) {
                return Err(match e {
                    ChildError::Start(e) => e,
                    other => StartError::Child {
                        id: spec.id.clone(),
                        error: Rc::new(GroupError::Supervisor(other)),
                    },
                });
            }
        }
        *self.inner.sup.borrow_mut() = Some(sup.handle());
        Ok(sup)
    }
}

fn start_worker<A: 'static, M: 'static>(
    sup: &DynamicRef<A, Rc<Worker<M>>>,
    core: &mut Core,
    worker: &Rc<Worker<M>>,
) -> Result<(), ChildError> {
    let started = sup.start_child(core, worker.clone())?;
    *worker.child.borrow_mut() = Some(started.id);
    Ok(())
}

/// The worker holding the fewest messages, the first such from `start`.
fn least_loaded<M: 'static>(workers: &[Rc<Worker<M>>], start: usize) -> usize {
    let n = workers.len();
    let mut best = start % n;
    let mut best_len = workers[best].mailbox.len();
    for k in 1..n {
        if best_len == 0 {
            break;
        }
        let i = (start + k) % n;
        let len = workers[i].mailbox.len();
        if len < best_len {
            best = i;
            best_len = len;
        }
    }
    best
}

/// Why `Group::offer` gave a message back.
enum Refused<M: 'static> {
    /// The group has no worker.
    NoWorker(M),
    /// Every worker refused it; `first` (an index in the list) was the
    /// policy's first choice, `mailbox` that worker's mailbox.
    All {
        msg: M,
        first: usize,
        mailbox: Mailbox<M>,
    },
}

impl<M: 'static> Refused<M> {
    /// As `try_send` reports it.
    fn into_error(self) -> SendError<M> {
        match self {
            Refused::NoWorker(msg) => SendError::Closed(msg),
            Refused::All { msg, .. } => SendError::Full(msg),
        }
    }
}

static_assertions::assert_not_impl_any!(Group<(), u32>: Send, Sync);
