//! The supervisor's state and its decisions, with no I/O: events in
//! (a child's exit, a restart job, a start's result, a timer, an API
//! request), answers out (what to terminate, what to start, how to end).
//!
//! [`State`] knows the children's ids, restart types and shutdown
//! policies, which incarnation runs, the strategy, the restart window and
//! the work in progress. It starts, kills, arms and traces nothing: the
//! driver ([`super::driver`]) asks it [`next_step`](State::next_step)
//! and carries the step out (a start function run, a kill, a shutdown
//! timer), then reports back ([`place_at`](State::place_at),
//! [`child_down`](State::child_down), ...). What the driver keeps per
//! child and per incarnation (the start function, the Addr slot, the
//! shutdown hook) rides along as the opaque `L` and `X`, so the decisions
//! are unit-tested here with `()` in their place, with no device, no
//! `Stakker` and no clock.

use super::error::{ChildError, SuperviseError};
use super::id::ChildId;
use super::spec::{ChildKind, Intensity, Restart, Shutdown, Strategy};
use super::window::RestartWindow;
use crate::cause::{Cause, DeviceId};
use crate::device::ending::Kept;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a supervisor unwinding a failed
/// [`Supervisor::start`](super::Supervisor::start) waits for a
/// [`Shutdown::Infinity`] child before killing it: nobody holds such a
/// supervisor, so nothing else could end the wait.
pub(super) const UNWIND_LIMIT: Duration = Duration::from_secs(5);

/// A stable key for a child entry (never reused within a supervisor).
pub(super) type Key = u64;

/// How a child is treated: copied from its spec.
#[derive(Clone, Copy, Debug)]
pub(super) struct Policy {
    pub(super) restart: Restart,
    pub(super) shutdown: Shutdown,
    pub(super) kind: ChildKind,
}

/// One child of a supervisor: its policy, the driver's launch data `L`
/// and, while it runs, its incarnation.
pub(super) struct Entry<L, X> {
    pub(super) key: Key,
    pub(super) id: ChildId,
    pub(super) policy: Policy,
    /// What starting it takes (the driver's).
    pub(super) at: L,
    pub(super) run: Option<Running<X>>,
    /// The current restart (or a retry of it) is to start this child.
    pub(super) pending: bool,
    /// Terminated on request (`terminate_child`): not restarted until
    /// `restart_child`.
    pub(super) held: bool,
    /// Its start function is running: it is not started again, restarted
    /// or deleted meanwhile (rule 82a).
    pub(super) starting: bool,
}

/// A live incarnation, with the driver's data `X` about it.
pub(super) struct Running<X> {
    pub(super) dev: DeviceId,
    pub(super) extra: X,
    pub(super) terminating: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Running,
    Stopping,
    Ended,
}

/// The child whose termination the supervisor waits for.
struct Wait {
    key: Key,
    /// The incarnation (device ids are never reused).
    dev: DeviceId,
}

/// The step in progress: terminate these children one at a time (in this
/// order), then do `then`.
struct Active {
    to_terminate: VecDeque<Key>,
    then: Then,
}

enum Then {
    /// Start the pending children among these, in start order.
    Start(Targets),
    /// Nothing (a `terminate_child`).
    Nothing,
    /// End the supervisor with this cause.
    End(Cause),
}

/// Work waiting for the supervisor, handled one at a time in order, as an
/// OTP supervisor handles its messages.
enum Job {
    /// The child exited (or its restart failed) and is to be restarted.
    Restart { key: Key, cause: Cause },
    /// `terminate_child`.
    Terminate(Key),
}

/// The children a restart concerns, in start order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Targets {
    /// one_for_one, simple_one_for_one: no allocation.
    One(Key),
    Many(Vec<Key>),
}

impl Targets {
    pub(super) fn keys(&self) -> &[Key] {
        match self {
            Targets::One(k) => std::slice::from_ref(k),
            Targets::Many(v) => v,
        }
    }
}

/// What the driver does next.
pub(super) enum Step {
    /// Nothing now: wait for a Down, a timer or a request.
    Idle,
    /// Terminate this child ([`State::begin_terminate`]).
    Terminate(Key),
    /// Start the pending children among these, in start order.
    Start(Targets),
    /// End the supervisor with this cause.
    End(Cause),
    /// Handle this restart job ([`State::restart_job`]).
    Restart(Key, Cause),
}

/// What a child's exit means ([`State::child_down`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// The child the supervisor was terminating went down.
    Terminated,
    /// The supervisor was already acting on it (shutting down, part of
    /// the restart in progress, terminated on request).
    Ignored,
    /// To be restarted (a job, or at once when [`State::is_idle`]).
    Restart,
    /// Its restart type says no.
    NotRestarted,
}

/// A child's exit, decided: the verdict, the incarnation's record (the
/// driver drops it outside any borrow) and whether the child is gone for
/// good (the driver removes it with [`State::remove_at`] once it has
/// reported the exit).
pub(super) struct Down<X> {
    pub(super) exit: Exit,
    pub(super) dropped: Option<Running<X>>,
    pub(super) remove: bool,
}

/// What a restart job comes to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Start these now.
    Start(Targets),
    /// Nothing to start now: siblings are to be terminated first, or the
    /// job was dropped.
    Later,
    /// One restart too many: the ordered shutdown that ends in
    /// escalation has begun; this child's exit was the last straw.
    GaveUp(ChildId),
}

/// A termination begun ([`State::begin_terminate`]).
pub(super) struct Terminate {
    pub(super) idx: usize,
    pub(super) dev: DeviceId,
    /// The policy to apply (an unwinding supervisor bounds `Infinity`).
    pub(super) policy: Shutdown,
}

/// A supervisor's state: its children and the work in progress.
pub(super) struct State<L, X> {
    /// The supervisor's device.
    pub(super) id: DeviceId,
    pub(super) strategy: Strategy,
    pub(super) intensity: Intensity,
    pub(super) entries: Vec<Entry<L, X>>,
    next_key: Key,
    next_dyn: u64,
    /// When recent restarts happened, oldest first.
    restarts: RestartWindow,
    mode: Mode,
    active: Option<Active>,
    jobs: VecDeque<Job>,
    waiting: Option<Wait>,
    /// Unwinding a failed start: nobody can reach the supervisor.
    unwinding: bool,
    /// Start functions running now: an ordered shutdown requested by one
    /// of them waits for its new incarnation, to shut it down too.
    starting: u32,
    /// Causes of work given up (restart jobs cleared by a shutdown or
    /// the end): they may hold a user's error, whose `Drop` is user
    /// code, so the driver takes them ([`take_trash`](State::take_trash))
    /// and drops them once the state is no longer borrowed.
    trash: Vec<Cause>,
}

impl<L, X> State<L, X> {
    pub(super) fn new(id: DeviceId, strategy: Strategy, intensity: Intensity) -> Self {
        State {
            id,
            strategy,
            intensity,
            entries: Vec::new(),
            next_key: 0,
            next_dyn: 0,
            restarts: RestartWindow::default(),
            mode: Mode::Running,
            active: None,
            jobs: VecDeque::new(),
            waiting: None,
            unwinding: false,
            starting: 0,
            trash: Vec::new(),
        }
    }

    /// What work given up left to drop, taken (see `trash`): `None` in
    /// the common case, at the cost of a length check.
    #[inline]
    pub(super) fn take_trash(&mut self) -> Option<Vec<Cause>> {
        if self.trash.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.trash))
        }
    }

    /// Gives up the queued jobs: their causes go to the trash.
    fn clear_jobs(&mut self) {
        for job in self.jobs.drain(..) {
            if let Job::Restart { cause, .. } = job {
                self.trash.push(cause);
            }
        }
    }

    /// Appends a child that is not running yet; returns its key.
    pub(super) fn add(&mut self, id: ChildId, policy: Policy, at: L) -> Key {
        let key = self.next_key;
        self.next_key += 1;
        self.entries.push(Entry {
            key,
            id,
            policy,
            at,
            run: None,
            pending: false,
            held: false,
            starting: false,
        });
        key
    }

    /// The id of the next dynamic child of template `template`.
    pub(super) fn dynamic_id(&mut self, template: &ChildId) -> ChildId {
        self.next_dyn += 1;
        ChildId::from(format!("{}.{}", template, self.next_dyn))
    }

    /// Whether a static child may be added with `id`: the supervisor runs,
    /// is not `simple_one_for_one`, and the id is free.
    pub(super) fn check_new(&self, id: &ChildId) -> Result<(), ChildError> {
        self.check_running()?;
        if self.strategy == Strategy::SimpleOneForOne {
            return Err(ChildError::SimpleOneForOne);
        }
        if let Some(i) = self.by_id(id.as_str()) {
            let id = id.clone();
            return Err(if self.entries[i].run.is_some() {
                ChildError::AlreadyStarted(id)
            } else {
                ChildError::AlreadyPresent(id)
            });
        }
        Ok(())
    }

    /// The index of child `id` if `restart_child`/`delete_child` may act
    /// on it: the supervisor runs and is not `simple_one_for_one`, and the
    /// child exists, is not running and is not being restarted (nor
    /// started: its start function runs).
    pub(super) fn stopped_child(&self, id: &str) -> Result<usize, ChildError> {
        self.check_running()?;
        if self.strategy == Strategy::SimpleOneForOne {
            return Err(ChildError::SimpleOneForOne);
        }
        let Some(i) = self.by_id(id) else {
            return Err(ChildError::NotFound(ChildId::from(id)));
        };
        let e = &self.entries[i];
        if e.run.is_some() {
            return Err(ChildError::Running(e.id.clone()));
        }
        if e.pending || e.starting {
            return Err(ChildError::Restarting(e.id.clone()));
        }
        Ok(i)
    }

    /// A `restart_child` request for child `id` (see
    /// [`stopped_child`](State::stopped_child)): the key of the child to
    /// start, no longer held (a `terminate_child` asked during its start
    /// holds it again).
    pub(super) fn take_for_restart(&mut self, id: &str) -> Result<Key, ChildError> {
        let i = self.stopped_child(id)?;
        let e = &mut self.entries[i];
        e.held = false;
        Ok(e.key)
    }

    #[inline]
    pub(super) fn index(&self, key: Key) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    /// [`index`](State::index), looked up first at `hint` (where the
    /// entry was when the caller last saw it: the children may have
    /// changed since).
    #[inline]
    fn index_near(&self, key: Key, hint: usize) -> Option<usize> {
        match self.entries.get(hint) {
            Some(e) if e.key == key => Some(hint),
            _ => self.index(key),
        }
    }

    pub(super) fn entry(&self, key: Key) -> Option<&Entry<L, X>> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub(super) fn by_id(&self, id: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.id.as_str() == id)
    }

    pub(super) fn is_running(&self, key: Key) -> bool {
        self.entries.iter().any(|e| e.key == key && e.run.is_some())
    }

    /// The entry whose live incarnation `dev` is (none: a stale Down).
    #[inline]
    pub(super) fn incarnation(&self, dev: DeviceId) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.run.as_ref().is_some_and(|r| r.dev == dev))
    }

    /// Removes an entry for good (the driver discards it outside any
    /// borrow).
    pub(super) fn remove(&mut self, key: Key) -> Option<Entry<L, X>> {
        let idx = self.index(key)?;
        Some(self.entries.remove(idx))
    }

    /// A restart of child `key` failed: if it is a dynamic child
    /// terminated on request while the start function ran (rule 82a),
    /// there is nothing to stop and nothing to try again: it is removed
    /// (returned, to be dropped outside the borrow).
    pub(super) fn take_terminated_unstarted(&mut self, key: Key) -> Option<Entry<L, X>> {
        let i = self.index(key)?;
        let e = &self.entries[i];
        let gone = self.strategy == Strategy::SimpleOneForOne && e.held && e.run.is_none();
        gone.then(|| self.entries.remove(i))
    }

    /// Removes entry `idx` for good.
    pub(super) fn remove_at(&mut self, idx: usize) -> Entry<L, X> {
        self.entries.remove(idx)
    }

    pub(super) fn check_running(&self) -> Result<(), ChildError> {
        match self.mode {
            Mode::Running => Ok(()),
            _ => Err(ChildError::ShuttingDown),
        }
    }

    /// No job queued, no step in progress, no termination awaited: a
    /// restart decided now would be the next thing done anyway.
    #[inline]
    pub(super) fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.active.is_none() && self.waiting.is_none()
    }

    /// Nothing for [`next_step`](State::next_step) to do but answer Idle
    /// (a cheap test before it).
    #[inline]
    pub(super) fn has_work(&self) -> bool {
        self.active.is_some() || !self.jobs.is_empty()
    }

    /// The next step, taken out of the work in progress and the jobs.
    pub(super) fn next_step(&mut self) -> Step {
        loop {
            if self.mode == Mode::Ended || self.waiting.is_some() {
                return Step::Idle;
            }
            if let Some(active) = &mut self.active {
                let mut found = None;
                while let Some(key) = active.to_terminate.pop_front() {
                    if self.entries.iter().any(|e| e.key == key && e.run.is_some()) {
                        found = Some(key);
                        break;
                    }
                }
                if let Some(key) = found {
                    return Step::Terminate(key);
                }
                if self.starting > 0 && matches!(active.then, Then::End(_)) {
                    // A start function is running: its incarnation, once
                    // placed, is shut down before the end.
                    return Step::Idle;
                }
                let Some(active) = self.active.take() else {
                    continue;
                };
                match active.then {
                    Then::Start(keys) => return Step::Start(keys),
                    Then::End(cause) => return Step::End(cause),
                    Then::Nothing => continue,
                }
            }
            match self.jobs.pop_front() {
                Some(Job::Restart { key, cause }) => return Step::Restart(key, cause),
                Some(Job::Terminate(key)) => {
                    self.active = Some(Active {
                        to_terminate: VecDeque::from([key]),
                        then: Then::Nothing,
                    });
                }
                None => return Step::Idle,
            }
        }
    }

    /// Starts the ordered shutdown that ends the supervisor with `cause`:
    /// every running child in reverse start order (the one being
    /// terminated now, if any, is waited for first). No effect unless
    /// running.
    pub(super) fn shut_down(&mut self, cause: Cause) {
        self.begin_shutdown(Then::End(cause));
    }

    fn begin_shutdown(&mut self, then: Then) {
        if self.mode != Mode::Running {
            if let Then::End(cause) = then {
                self.trash.push(cause);
            }
            return;
        }
        self.mode = Mode::Stopping;
        self.clear_jobs();
        let waiting = self.waiting.as_ref().map(|w| w.key);
        for e in &mut self.entries {
            e.pending = false;
        }
        let to_terminate = self
            .entries
            .iter()
            .rev()
            .filter(|e| e.run.is_some() && Some(e.key) != waiting)
            .map(|e| e.key)
            .collect();
        self.active = Some(Active { to_terminate, then });
    }

    /// A failed [`Supervisor::start`](super::Supervisor::start): the
    /// children after the failed one never started, and it has no
    /// incarnation; only the started ones remain, to be shut down (the
    /// supervisor now unwinds, with nobody to reach it). Returns the
    /// failed child's id, and the entries removed (for the driver to drop
    /// outside its borrow).
    pub(super) fn start_failed(&mut self) -> (Option<ChildId>, Vec<Entry<L, X>>) {
        let id = self.entries.last().map(|e| e.id.clone());
        let (started, unstarted) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.run.is_some());
        self.entries = started;
        self.unwinding = true;
        (id, unstarted)
    }

    /// A `terminate_child` request for child `id`: held from now on; a
    /// running child's termination is queued, a dynamic one not running
    /// is removed at once (returned), unless its start function runs (the
    /// incarnation it makes is terminated, see [`place_at`](State::place_at),
    /// and the child removed once down).
    pub(super) fn request_terminate(
        &mut self,
        id: &str,
    ) -> Result<Option<Entry<L, X>>, ChildError> {
        self.check_running()?;
        let Some(i) = self.by_id(id) else {
            return Err(ChildError::NotFound(ChildId::from(id)));
        };
        let dynamic = self.strategy == Strategy::SimpleOneForOne;
        let e = &mut self.entries[i];
        e.held = true;
        e.pending = false;
        let key = e.key;
        Ok(if e.run.is_some() {
            self.jobs.push_back(Job::Terminate(key));
            None
        } else if dynamic && !e.starting {
            self.remove(key)
        } else {
            None
        })
    }

    /// Queues the restart of child `key` (an exit decided
    /// [`Exit::Restart`], or a failed restart to try again).
    #[inline]
    pub(super) fn queue_restart(&mut self, key: Key, cause: Cause) {
        self.jobs.push_back(Job::Restart { key, cause });
    }

    /// The live incarnation of entry `idx` went down (`fault`: with a
    /// fault): what it means. The entry no longer runs; it is to be
    /// removed if it is gone for good (temporary, or a dynamic child not
    /// restarted).
    #[inline]
    pub(super) fn child_down(&mut self, idx: usize, fault: bool) -> Down<X> {
        let was_waiting = match (&self.waiting, &self.entries[idx].run) {
            (Some(w), Some(r)) => w.dev == r.dev,
            _ => false,
        };
        // Every child of a simple_one_for_one supervisor is dynamic.
        let dynamic = self.strategy == Strategy::SimpleOneForOne;
        let mode = self.mode;
        let entry = &mut self.entries[idx];
        let dropped = entry.run.take();
        let temporary = entry.policy.restart == Restart::Temporary;
        let remove_after = temporary || (dynamic && entry.held);
        let (exit, remove) = if was_waiting {
            self.waiting = None;
            (Exit::Terminated, remove_after)
        } else if mode != Mode::Running || entry.pending || entry.held {
            (Exit::Ignored, remove_after)
        } else if entry.policy.restart.restarts(fault) {
            (Exit::Restart, false)
        } else {
            (Exit::NotRestarted, temporary || dynamic)
        };
        Down {
            exit,
            dropped,
            remove,
        }
    }

    /// A restart job of child `key` (with its exit's `cause`): counted and
    /// planned if it still applies ([`plan_restart`](State::plan_restart)),
    /// else dropped.
    pub(super) fn restart_job(&mut self, key: Key, now: Instant, cause: &mut Kept) -> Plan {
        if self.mode != Mode::Running {
            return Plan::Later;
        }
        match self.index(key) {
            Some(idx) if self.entries[idx].run.is_none() && !self.entries[idx].held => {
                self.plan_restart(idx, now, cause)
            }
            // Running again (restart_child), terminated on request or
            // deleted since.
            idx => {
                self.drop_restart(idx);
                Plan::Later
            }
        }
    }

    /// A restart job (or retry) of entry `idx` is dropped: the child runs
    /// again, was terminated on request, or was deleted (`None`). The
    /// siblings the strategy would start with it, not running, are left
    /// as ordinary stopped children (OTP leaves them so), not
    /// `Restarting`: `restart_child` / `delete_child` accept them.
    fn drop_restart(&mut self, idx: Option<usize>) {
        let from = match (self.strategy, idx) {
            (Strategy::OneForOne | Strategy::SimpleOneForOne, _) => return,
            (Strategy::RestForOne, Some(i)) => i,
            _ => 0,
        };
        for e in &mut self.entries[from..] {
            if e.run.is_none() {
                e.pending = false;
            }
        }
    }

    /// Counts the restart of entry `idx` (not running, mode Running, not
    /// held) at `now`. Past the intensity, starts the ordered shutdown
    /// that ends in escalation. Otherwise marks the strategy's targets
    /// pending and returns them if they can start at once; if siblings
    /// must be terminated first, plans that.
    #[inline]
    pub(super) fn plan_restart(&mut self, idx: usize, now: Instant, cause: &mut Kept) -> Plan {
        if !self.restarts.add(now, self.intensity) {
            return self.give_up(idx, cause);
        }
        let entry = &mut self.entries[idx];
        entry.pending = true;
        let key = entry.key;
        match self.strategy {
            // Only this child: it starts at once.
            Strategy::OneForOne | Strategy::SimpleOneForOne => Plan::Start(Targets::One(key)),
            Strategy::OneForAll | Strategy::RestForOne => self.plan_many(idx, key),
        }
    }

    /// [`plan_restart`](State::plan_restart) for a strategy that restarts
    /// several children (entry `idx`, child `key`, already pending): the
    /// running ones among them are terminated first.
    #[inline(never)]
    fn plan_many(&mut self, idx: usize, key: Key) -> Plan {
        let from = match self.strategy {
            Strategy::RestForOne => idx,
            _ => 0,
        };
        let keys: Vec<Key> = self.entries[from..].iter().map(|e| e.key).collect();
        let mut to_terminate = VecDeque::new();
        for e in self.entries.iter_mut().rev() {
            if e.key == key || !keys.contains(&e.key) {
                continue;
            }
            let temporary = e.policy.restart == Restart::Temporary;
            if e.run.is_some() {
                // Terminated by the strategy: restarted after, unless
                // temporary (removed when its Down comes) or a
                // `terminate_child` is on its way.
                e.pending = !temporary && !e.held;
                to_terminate.push_back(e.key);
            } else if !temporary {
                // Not running (terminated on request, transient stopped
                // normally, start failed): started too, as OTP starts
                // every child of the set.
                e.pending = true;
                e.held = false;
            }
        }
        let targets = Targets::Many(keys);
        if to_terminate.is_empty() {
            return Plan::Start(targets);
        }
        self.active = Some(Active {
            to_terminate,
            then: Then::Start(targets),
        });
        Plan::Later
    }

    /// One restart more than the intensity allows, for entry `idx`: starts
    /// the ordered shutdown that ends the supervisor with
    /// `SuperviseError::Intensity` (kept out of the restart path's code).
    #[cold]
    #[inline(never)]
    fn give_up(&mut self, idx: usize, cause: &mut Kept) -> Plan {
        let Intensity {
            max_restarts,
            period,
        } = self.intensity;
        let id = self.entries[idx].id.clone();
        let err = SuperviseError::Intensity {
            supervisor: self.id,
            max_restarts,
            period,
            child: id.clone(),
            cause: cause.share(),
        };
        self.begin_shutdown(Then::End(Cause::Error(Rc::new(err))));
        Plan::GaveUp(id)
    }

    /// The index of child `key` if it is to start now, as one of a
    /// restart's targets: the supervisor runs, and the child is pending,
    /// not running, and not being started already.
    pub(super) fn to_start(&self, key: Key) -> Option<usize> {
        if self.mode != Mode::Running {
            return None;
        }
        self.entries
            .iter()
            .position(|e| e.key == key && e.pending && e.run.is_none() && !e.starting)
    }

    /// Begins terminating child `key`: marks it terminating and waits for
    /// its Down. `None` if it does not run.
    pub(super) fn begin_terminate(&mut self, key: Key) -> Option<Terminate> {
        let unwinding = self.unwinding;
        let idx = self.index(key)?;
        let entry = &mut self.entries[idx];
        let policy = match entry.policy.shutdown {
            // Nobody can reach a supervisor unwinding a failed start: its
            // wait is bounded.
            Shutdown::Infinity if unwinding => Shutdown::Timeout(UNWIND_LIMIT),
            policy => policy,
        };
        let run = entry.run.as_mut()?;
        run.terminating = true;
        let dev = run.dev;
        self.waiting = Some(Wait { key, dev });
        Some(Terminate { idx, dev, policy })
    }

    /// The termination just begun has nothing to wait for (the driver
    /// found no incarnation to act on).
    pub(super) fn unwait(&mut self) {
        self.waiting = None;
    }

    /// Whether the supervisor waits for incarnation `dev` of child `key`
    /// to go down.
    pub(super) fn waits_for(&self, key: Key, dev: DeviceId) -> bool {
        self.waiting
            .as_ref()
            .is_some_and(|w| w.key == key && w.dev == dev)
    }

    /// The shutdown timer of the child the supervisor waits for fired:
    /// its index and timeout, if it still runs. (A timer without a
    /// timeout policy is that of an `Infinity` child of a supervisor
    /// unwinding a failed start.)
    pub(super) fn timed_out(&self, key: Key) -> Option<(usize, Duration)> {
        let idx = self.index(key)?;
        let e = &self.entries[idx];
        e.run.as_ref()?;
        let d = match e.policy.shutdown {
            Shutdown::Timeout(d) => d,
            _ => UNWIND_LIMIT,
        };
        Some((idx, d))
    }

    /// The start function of the child at index `i` is about to run
    /// (marked in the borrow that prepared it: it is starting from then
    /// on, whatever user code runs before it).
    #[inline]
    pub(super) fn launching(&mut self, i: usize) {
        self.starting += 1;
        self.entries[i].starting = true;
    }

    /// The start function of child `key` returned (its result is
    /// [`place_at`](State::place_at)d next).
    #[inline]
    pub(super) fn launched(&mut self, key: Key, hint: usize) -> Option<usize> {
        self.starting -= 1;
        let i = self.index_near(key, hint)?;
        self.entries[i].starting = false;
        Some(i)
    }

    /// [`place_at`](State::place_at), the entry looked up by its key.
    #[cfg(test)]
    pub(super) fn place(&mut self, key: Key, dev: DeviceId, extra: X) -> Result<(), X> {
        self.place_at(self.index(key), key, dev, extra)
    }

    /// Records incarnation `dev` that a start function created for child
    /// `key`, at index `at` (`None`: it is gone). While the supervisor
    /// runs, it is the child's incarnation; during its ordered shutdown
    /// (which a start function may have requested) it is placed too and
    /// added to the children to shut down, in its start-order place. A
    /// child gone, or a supervisor that has ended: the incarnation has no
    /// place, and `extra` comes back (the driver kills it).
    #[inline]
    pub(super) fn place_at(
        &mut self,
        at: Option<usize>,
        key: Key,
        dev: DeviceId,
        extra: X,
    ) -> Result<(), X> {
        let mode = self.mode;
        let Some(i) = at else {
            return Err(extra);
        };
        if self.entries[i].run.is_some() || mode == Mode::Ended {
            return Err(extra);
        }
        if mode == Mode::Stopping {
            let Some(active) = self.active.as_mut() else {
                return Err(extra);
            };
            // Reverse start order: before the first one started earlier
            // than this child.
            let entries = &self.entries;
            let at = active
                .to_terminate
                .iter()
                .position(|k| entries.iter().position(|e| e.key == *k) < Some(i))
                .unwrap_or(active.to_terminate.len());
            active.to_terminate.insert(at, key);
        }
        let e = &mut self.entries[i];
        e.pending = false;
        // Still held: `terminate_child` was asked while the start function
        // ran (there was nothing to stop yet). The request stands: the new
        // incarnation is terminated per its policy, and stays down.
        if e.held {
            self.jobs.push_back(Job::Terminate(key));
        }
        e.run = Some(Running {
            dev,
            extra,
            terminating: false,
        });
        Ok(())
    }

    /// The supervisor ends now (its end is queued by the driver): no more
    /// work.
    pub(super) fn end(&mut self) {
        self.mode = Mode::Ended;
        self.clear_jobs();
        if let Some(Active {
            then: Then::End(cause),
            ..
        }) = self.active.take()
        {
            self.trash.push(cause);
        }
    }
}

#[cfg(test)]
mod tests;
