//! The executor: tasks in a per-runtime slot table, polled from the stakker
//! queue.
//!
//! How it works:
//!
//! - Each `Stakker` gets one executor the first time something spawns on it
//!   (kept in stakker's `anymap`); dropping the `Stakker`, or [`shutdown`],
//!   shuts it down (rule 44).
//! - A task is a boxed future in a slot; its [`Waker`](std::task::Waker)
//!   is the slot's address (see [`crate::waker`]); a poll is one call on
//!   the stakker queue (rules 39, 40). A panicking destructor or foreign
//!   waker is caught like a panic in `poll` (rule 41).
//! - Nothing user-supplied (poll, drop, wake) ever runs while the slot
//!   table is borrowed, so a future may spawn, abort, wake or join any
//!   task, including itself, from inside `poll` or `drop`.
//!
//! The parts: `slots.rs` stores the tasks, `spawn.rs` starts them,
//! `join.rs` awaits or aborts one, `task_set.rs` owns many, `error.rs` says
//! how a task fails; this file runs them.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **39. A task is polled from the stakker queue, never inside `spawn`**; task
//! polls and actor calls share one FIFO.
//!
//! **40. A wake queues at most one poll**: waking an idle task queues one; a
//! wake while it is queued adds nothing; a wake (or several) during its
//! poll queues exactly one more after it.
//!
//! **41. A panic in `poll` ends that task only**, with
//! `JoinError::Panicked(message)` (unless the task was aborted or failed
//! earlier in that poll: that end wins, rules 42 and 49); other tasks and
//! the runtime go on,
//! even if the panic's payload panics again when dropped ([`drop_payload`]).
//! A `spawn_ret` task that fails drops its `Ret` unfired.
//!
//! **42. Abort drops the future exactly once**: at once if the task is
//! waiting, right after the poll if it aborts itself while running (it is
//! never polled again); the handle yields `Aborted`, even if that poll
//! completed or panicked after the abort (the first end wins; the output
//! is dropped); a later reply wakes nobody.
//!
//! **43. A dropped `JoinHandle` detaches**: the task runs to its end and then
//! frees its slot.
//!
//! **44. A runtime dropped (or `shutdown`) with live tasks drops each task
//! exactly once**, including tasks that hold other tasks' handles and
//! tasks whose destructors try to spawn (refused); handles that outlive it
//! yield `RuntimeGone`; a future spawned after `shutdown` is dropped at
//! once.
//!
//! **45. Stale wakes and handles are ignored**: a waker of a finished task
//! never polls the task that reuses its slot, nor does a waker of a
//! dropped runtime poll a task of a later runtime that reuses its runtime
//! index (each index keeps a generation base: a new runtime's slots start
//! past every generation an earlier one issued); a wrapped 24-bit waker
//! generation could at worst cause a spurious wake. An abort handle of a
//! finished task never reaches a later one (handles keep the full 64-bit
//! generation).
//!
//! **46. A wake from another thread is never lost.** With a poll waker
//! (an event loop's, `WakeSignal`, `install_poll_waker`) it polls the
//! task on the runtime thread; without one the wake is queued, the first
//! such wake of that runtime prints one line to stderr naming the fix,
//! and the queued wake is delivered once a path is installed. A wake
//! never panics the waking thread: it may be any thread (a blocking
//! pool's), and the waker may be a stale one of a dropped runtime whose
//! index a new runtime reuses before its path is installed, which must
//! cost nothing (a stale wake is ignored on delivery: its slot's
//! generation does not match, by rule 45's generation base). Writing the
//! one line ignores errors (a closed stderr is no panic).
//!
//! **46a. With feature `futures`, a `Spawner` is a `LocalSpawn` and a
//! `Spawn`** (tasks run on the runtime thread; a shut-down runtime
//! refuses with `SpawnError::shutdown`).
//!
//! **47. A `TaskSet` aborts its tasks when dropped**, so tasks kept in an
//! actor's state end with the actor. Each task runs on the runtime behind
//! the `core` it was spawned with, and is aborted there.

mod error;
mod join;
mod slots;
mod spawn;
mod task_set;

pub use error::{drop_payload, panic_message, JoinError, SpawnError};
pub use join::{AbortHandle, JoinHandle};
pub use spawn::{
    enable_remote_wakes, install_poll_waker, shutdown, spawn, spawn_local, spawn_ret, spawner,
    try_spawn_local, try_spawner, Spawner,
};
pub use task_set::TaskSet;

use crate::fail::ActorFail;
use crate::remote::{self, RemoteWakes};
use crate::waker::{self, TaskRef};
use slots::{After, BoxTask, End, Slots, State, TaskCell, TaskKey, NO_FREE};
use stakker::{Core, Deferrer, Stakker};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// One runtime's executor.
pub(crate) struct Exec {
    rt: u32,
    /// `TaskRef::new(rt, 0, 0)`: the waker words of its tasks, less the
    /// slot and generation.
    rt_ref: TaskRef,
    deferrer: Deferrer,
    slots: RefCell<Slots>,
    /// stakker's `now` at the latest task poll (for timers).
    now: Cell<Instant>,
    closed: Cell<bool>,
    /// The `Stakker` itself is being dropped (set before the shutdown
    /// its drop runs): nothing may be deferred onto its queue any more.
    /// Unlike `closed`, which an explicit [`shutdown`] also sets while the
    /// `Stakker` lives on and runs its queue.
    stakker_gone: Cell<bool>,
    remote: Arc<RemoteWakes>,
    /// Tasks spawned so far.
    spawned: Cell<u64>,
    /// Task polls so far.
    polls: Cell<u64>,
}

thread_local! {
    /// The executors of the runtimes on this thread, by runtime index.
    static EXECS: RefCell<Vec<(u32, Rc<Exec>)>> = const { RefCell::new(Vec::new()) };
    /// The task being polled on this thread: runtime index, slot and
    /// generation, or [`NOT_POLLING`]. Two words, not an `Option` of
    /// three: each poll saves, sets and restores it.
    static CURRENT: Cell<(u32, u32, u64)> = const { Cell::new(NOT_POLLING) };
}

/// [`CURRENT`] when no task is being polled: no runtime has index
/// `u32::MAX` (they are below `MAX_RUNTIMES`).
const NOT_POLLING: (u32, u32, u64) = (u32::MAX, 0, 0);

/// Finds this thread's executor for runtime index `rt`.
fn local_exec(rt: u32) -> Option<Rc<Exec>> {
    EXECS
        .try_with(|list| {
            list.borrow()
                .iter()
                .find(|(i, _)| *i == rt)
                .map(|(_, e)| e.clone())
        })
        .ok()
        .flatten()
}

/// A wake of `task` through its [`Waker`], from any thread.
#[inline]
pub(crate) fn wake(task: TaskRef) {
    // The executor is used in place, in the list's shared borrow: a wake
    // runs no user code (it marks the slot and queues a poll), so nothing
    // can register or drop an executor meanwhile.
    let here = EXECS
        .try_with(|list| {
            let list = list.borrow();
            // Most threads run one runtime: its executor is the first.
            let exec = match list.first() {
                Some((i, exec)) if *i == task.rt() => Some(exec),
                _ => list.iter().find(|(i, _)| *i == task.rt()).map(|(_, e)| e),
            };
            exec.map(|exec| exec.wake(task)).is_some()
        })
        .unwrap_or(false);
    if !here {
        remote_wake(task);
    }
}

/// The cross-thread path of [`wake`], out of line: it keeps the common
/// path (a wake on the runtime's own thread) small.
#[cold]
#[inline(never)]
fn remote_wake(task: TaskRef) {
    remote::wake(task);
}

/// The task being polled on this thread and its executor.
pub(crate) fn current() -> Option<(Rc<Exec>, TaskKey)> {
    let (rt, slot, gen) = CURRENT.try_with(Cell::get).ok()?;
    if rt == NOT_POLLING.0 {
        return None;
    }
    Some((local_exec(rt)?, TaskKey { slot, gen }))
}

/// A task's panic, caught: its message, reported; the payload dropped
/// (contained: it is user data, and its `Drop` may panic too).
#[cold]
#[inline(never)]
fn contained(payload: Box<dyn std::any::Any + Send>) -> Rc<str> {
    let msg = panic_message(&*payload);
    drop_payload(payload);
    crate::quiet::report_contained(format_args!("a task panicked: {msg}"));
    msg
}

/// Whether the task being polled on this thread has been ended during
/// this poll (aborted, or failed by a drop-the-task pipe): its end wins
/// over a completion in the same poll (rules 42, 49).
pub(super) fn current_is_ending() -> bool {
    let Some((exec, t)) = current() else {
        return false;
    };
    let mut slots = exec.slots.borrow_mut();
    matches!(
        slots.get(t).map(|s| &s.state),
        Some(State::Running { end: Some(_), .. })
    )
}

/// Ends the current task with `fail` once its poll returns (the
/// drop-the-task failure style). Returns `false` outside a task.
pub(crate) fn fail_current(fail: ActorFail) -> bool {
    let Some((exec, t)) = current() else {
        return false;
    };
    let mut fail = Some(fail);
    if let Some(State::Running {
        end: end @ None, ..
    }) = exec.slots.borrow_mut().get(t).map(|s| &mut s.state)
    {
        *end = fail
            .take()
            .map(|f| End::Error(Box::new(JoinError::Failed(f))));
    }
    // An end already set wins; the unused failure (it may hold the actor's
    // cause) is dropped here, outside the borrow.
    drop(fail);
    true
}

/// Holds a runtime's executor in stakker's `anymap` and shuts it down when
/// dropped: when the `Stakker` is dropped, the executor drops its tasks.
struct ShutdownOnDrop(Rc<Exec>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.stakker_gone.set(true);
        self.0.shutdown();
    }
}

/// The `anymap` entry (must be `Clone`).
#[derive(Clone)]
struct ExecEntry(Rc<ShutdownOnDrop>);

impl Exec {
    /// The executor of the runtime behind `core`, created on first use.
    pub(crate) fn of(core: &mut Core) -> Result<Rc<Exec>, SpawnError> {
        if let Some(ExecEntry(g)) = core.anymap_try_get::<ExecEntry>() {
            return Ok(g.0.clone());
        }
        let (rt, base, remote) = remote::register().ok_or(SpawnError::TooManyRuntimes)?;
        let exec = Rc::new(Exec {
            rt,
            rt_ref: TaskRef::new(rt, 0, 0),
            deferrer: core.deferrer(),
            slots: RefCell::new(Slots {
                entries: Vec::new(),
                free: NO_FREE,
                live: 0,
                done: 0,
                base,
            }),
            now: Cell::new(core.now()),
            closed: Cell::new(false),
            stakker_gone: Cell::new(false),
            spawned: Cell::new(0),
            polls: Cell::new(0),
            remote,
        });
        EXECS.with(|list| list.borrow_mut().push((rt, exec.clone())));
        core.anymap_set(ExecEntry(Rc::new(ShutdownOnDrop(exec.clone()))));
        Ok(exec)
    }

    pub(crate) fn now(&self) -> Instant {
        self.now.get()
    }

    pub(crate) fn deferrer(&self) -> &Deferrer {
        &self.deferrer
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Whether the `Stakker` is being dropped: its queue runs no more, so
    /// cleanup that would be deferred onto it (a timer's deletion) is
    /// skipped. After an explicit [`shutdown`] the `Stakker` lives on:
    /// closed, but not gone.
    pub(crate) fn is_stakker_gone(&self) -> bool {
        self.stakker_gone.get()
    }

    fn schedule(self: &Rc<Self>, t: TaskKey) {
        if self.closed.get() {
            // Shutting down: a queued poll would hold the executor from
            // the queue the executor holds (a cycle), and poll nothing.
            return;
        }
        let me = self.clone();
        self.deferrer.defer(move |s| me.run(s, t));
    }

    fn wake(self: &Rc<Self>, t: TaskRef) {
        let mut queue = None;
        {
            let mut slots = self.slots.borrow_mut();
            let Some((k, slot)) = slots.by_ref(t) else {
                return;
            };
            match &mut slot.state {
                st @ State::Idle => {
                    *st = State::Scheduled;
                    queue = Some(k);
                }
                State::Running { woken, .. } => *woken = true,
                _ => {}
            }
        }
        if let Some(k) = queue {
            self.schedule(k);
        }
    }

    /// Spawns `fut`; `handle` says whether a [`JoinHandle`] will exist.
    fn spawn_raw<F>(self: &Rc<Self>, fut: F, handle: bool) -> Result<TaskKey, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_boxed(Box::pin(TaskCell::Running { fut }), handle)
    }

    fn spawn_boxed(self: &Rc<Self>, task: BoxTask, handle: bool) -> Result<TaskKey, SpawnError> {
        let r = self.slots.borrow_mut().alloc(task, handle);
        match r {
            Ok(k) => {
                self.spawned.set(self.spawned.get() + 1);
                self.schedule(k);
                Ok(k)
            }
            Err((e, task)) => {
                After {
                    drop_task: Some(task),
                    why: None,
                    wake: None,
                }
                .run();
                Err(e)
            }
        }
    }

    /// Polls task `t` (the call put on the stakker queue by a wake).
    fn run(self: &Rc<Self>, s: &mut Stakker, t: TaskKey) {
        let task = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get(t) else { return };
            if !matches!(slot.state, State::Scheduled) {
                return;
            }
            slot.state.replace_empty(State::Running {
                woken: false,
                end: None,
            });
            slot.task.take()
        };
        let Some(mut task) = task else { return };
        self.polls.set(self.polls.get() + 1);
        self.now.set(s.now());
        // Our waker's drop does nothing: not calling it saves an indirect
        // call a poll.
        let waker = ManuallyDrop::new(waker::waker(self.rt_ref.with_task(t.slot, t.gen as u32)));
        let mut cx = Context::from_waker(&waker);
        let prev = CURRENT.replace((self.rt, t.slot, t.gen));
        let res = catch_unwind(AssertUnwindSafe(|| task.as_mut().poll_task(&mut cx)));
        CURRENT.set(prev);

        // The common case: pending, not ended meanwhile. The state is read
        // in place and overwritten (it holds nothing).
        if let Ok(Poll::Pending) = res {
            let mut slots = self.slots.borrow_mut();
            let slot = slots.polled(t);
            if let State::Running { woken, end: None } = slot.state {
                slot.state
                    .replace_empty(if woken { State::Scheduled } else { State::Idle });
                slot.put_task_back(task);
                if woken {
                    drop(slots);
                    self.schedule(t);
                }
                return;
            }
        }
        // The panic payload is user data: read it and drop it here, not
        // inside the slot table borrow.
        let res = res.map_err(contained);

        let after = {
            let mut slots = self.slots.borrow_mut();
            let slot = slots.polled(t);
            if let (Ok(Poll::Ready(())), false, State::Running { end: None, .. }) =
                (&res, slot.handle, &slot.state)
            {
                // The common end: completed with no handle to report to.
                // Free the slot; drop the box (the output) after the borrow.
                let mut after = slots.free(t.slot);
                after.drop_task = Some(task);
                drop(slots);
                after.run();
                return;
            }
            slot.put_task_back(task);
            // Otherwise the task ends here.
            let State::Running { end, .. } = std::mem::replace(&mut slot.state, State::Scheduled)
            else {
                unreachable!("a polled task's slot changed state")
            };
            // An end set during the poll (an abort, a failed pipe) came
            // first: it wins over the poll's own outcome (rules 42, 49).
            let end = match (res, end) {
                (_, Some(end)) => end,
                (Ok(Poll::Ready(())), None) => End::Finished,
                (Err(msg), None) => End::Error(Box::new(JoinError::Panicked(msg))),
                (Ok(Poll::Pending), None) => {
                    unreachable!("a pending task that did not end went back above")
                }
            };
            slots.end(t.slot, end)
        };
        after.run();
    }

    /// Aborts task `t` (no-op if it already ended).
    pub(crate) fn abort(&self, t: TaskKey) {
        self.end_task(t, End::Aborted);
    }

    /// Ends task `t` with `end` unless it already ended: at once if it is
    /// waiting, right after its poll if it is being polled.
    fn end_task(&self, t: TaskKey, end: End) {
        let after = {
            let mut slots = self.slots.borrow_mut();
            match slots.get(t).map(|s| &mut s.state) {
                Some(State::Idle | State::Scheduled) => slots.end(t.slot, end),
                Some(State::Running { end: e, .. }) => {
                    e.get_or_insert(end);
                    After::default()
                }
                _ => After::default(),
            }
        };
        after.run();
    }

    fn is_finished(&self, t: TaskKey) -> bool {
        let mut slots = self.slots.borrow_mut();
        !matches!(
            slots.get(t).map(|s| &s.state),
            Some(State::Idle | State::Scheduled | State::Running { .. })
        )
    }

    /// The [`JoinHandle`] of `t` is dropped.
    fn detach(&self, t: TaskKey) {
        let (after, joiner) = {
            let mut slots = self.slots.borrow_mut();
            match slots.get(t) {
                Some(slot) => {
                    slot.handle = false;
                    let joiner = slot.joiner.take();
                    if matches!(slot.state, State::Done(_)) {
                        (slots.free(t.slot), joiner)
                    } else {
                        (After::default(), joiner)
                    }
                }
                None => (After::default(), None),
            }
        };
        // The joiner may be a foreign waker: dropped outside the borrow,
        // and not woken (nobody awaits a dropped handle).
        drop(joiner);
        after.run();
    }

    /// Polls the end of `t` for its [`JoinHandle`].
    #[inline]
    fn poll_join<T: 'static>(
        &self,
        t: TaskKey,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, JoinError>> {
        let (end, mut after) = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get(t) else {
                return Poll::Ready(Err(JoinError::RuntimeGone));
            };
            if !matches!(slot.state, State::Done(_)) {
                let same = matches!(&slot.joiner, Some(w) if w.will_wake(cx.waker()));
                if same {
                    return Poll::Pending;
                }
                drop(slots);
                // Clone (user code for a foreign waker) and drop the old
                // one outside the borrow.
                let w = cx.waker().clone();
                let old = self
                    .slots
                    .borrow_mut()
                    .get(t)
                    .and_then(|slot| slot.joiner.replace(w));
                drop(old);
                return Poll::Pending;
            }
            let State::Done(end) = std::mem::replace(&mut slot.state, State::Idle) else {
                unreachable!()
            };
            slots.done -= 1;
            (end, slots.free(t.slot))
        };
        let out = match end {
            End::Finished => {
                let mut out: Option<T> = None;
                if let Some(task) = after.drop_task.as_mut() {
                    task.as_mut().take_output(&mut out);
                }
                out.ok_or(JoinError::RuntimeGone)
            }
            End::Aborted => Err(JoinError::Aborted),
            End::RuntimeGone => Err(JoinError::RuntimeGone),
            End::Error(e) => Err(*e),
        };
        after.wake = None;
        after.run();
        Poll::Ready(out)
    }

    /// Drops every task and refuses new ones. Idempotent.
    pub(crate) fn shutdown(self: &Rc<Self>) {
        if self.closed.replace(true) {
            return;
        }
        self.remote.close();
        // One task at a time, outside the borrow: a task's destructor may
        // abort, join or spawn (refused now) other tasks.
        let mut index = 0;
        loop {
            let t = {
                let slots = self.slots.borrow();
                let Some(slot) = slots.entries.get(index) else {
                    break;
                };
                TaskKey {
                    slot: index as u32,
                    gen: slot.gen,
                }
            };
            self.end_task(t, End::RuntimeGone);
            index += 1;
        }
        let _ = EXECS.try_with(|list| list.borrow_mut().retain(|(i, _)| *i != self.rt));
        // No slot is made once closed: every generation this runtime
        // issued is below `next_base`, and the index's next runtime starts
        // there (rules 45, 46).
        let next_base = self.slots.borrow().next_base();
        remote::unregister(self.rt, next_base);
    }

    /// Installs stakker's inter-thread waker for this executor.
    fn enable_remote(self: &Rc<Self>, core: &mut Core) {
        if self.remote.is_enabled() {
            return;
        }
        let weak = Rc::downgrade(self);
        let w = core.waker(move |_, deleted| {
            if let (false, Some(exec)) = (deleted, weak.upgrade()) {
                for t in exec.remote.drain() {
                    exec.wake(t);
                }
            }
        });
        for t in self.remote.enable(w) {
            self.wake(t);
        }
    }

    fn live(&self) -> usize {
        self.slots.borrow().live
    }

    fn spawned(&self) -> u64 {
        self.spawned.get()
    }

    fn polls(&self) -> u64 {
        self.polls.get()
    }

    fn running(&self) -> usize {
        let slots = self.slots.borrow();
        slots.live - slots.done
    }
}
