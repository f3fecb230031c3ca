//! Spawning tasks: [`Spawner`], and the free functions that find a
//! runtime's executor from its `Core` ([`spawn`], [`spawner`], …) or from
//! the task being polled ([`spawn_local`]).
//!
//! The rules:
//!
//! - A spawned future is first polled from the stakker queue, never inside
//!   the call that spawns it.
//! - A spawn that cannot be done (too many tasks or runtimes, no current
//!   task) panics with `stakplane-async: ` and the [`SpawnError`];
//!   [`try_spawner`], [`Spawner::try_spawn`] and [`try_spawn_local`]
//!   return the error instead.
//! - After the runtime shut down, spawning drops the future at once: the
//!   handle yields [`JoinError::RuntimeGone`], `spawn_detached` returns
//!   `false`, and `spawn_then` calls back with `RuntimeGone` before it
//!   returns.
//! - Cross-thread wakes need a poll waker on the `Stakker`
//!   ([`install_poll_waker`], or [`enable_remote_wakes`] after the event
//!   loop installed one).

use super::error::{JoinError, SpawnError};
use super::join::{AbortHandle, JoinHandle};
use super::slots::{TaskKey, ThenCell};
use super::{current, Exec, ExecEntry};
use stakker::{Core, Stakker};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;

/// A handle that spawns tasks onto one runtime without looking it up each
/// time. Obtained with [`spawner`]; cheap to clone; not `Send` (tasks run
/// on the runtime's thread).
#[derive(Clone)]
pub struct Spawner {
    pub(super) exec: Rc<Exec>,
}

static_assertions::assert_not_impl_any!(Spawner: Send, Sync);

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("runtime", &self.exec.rt)
            .field("live_tasks", &self.exec.live())
            .finish()
    }
}

/// The [`Spawner`] of the runtime behind `core` (creates its executor on
/// first use).
///
/// # Panics
///
/// If the process already has 2¹⁶ executors; see [`try_spawner`].
#[track_caller]
pub fn spawner(core: &mut Core) -> Spawner {
    match try_spawner(core) {
        Ok(s) => s,
        Err(e) => panic!("stakplane-async: {e}"),
    }
}

/// The [`Spawner`] of the runtime behind `core`, or why there is none.
pub fn try_spawner(core: &mut Core) -> Result<Spawner, SpawnError> {
    Exec::of(core).map(|exec| Spawner { exec })
}

impl Spawner {
    /// Spawns `fut` as a task; see [`spawn`].
    ///
    /// # Panics
    ///
    /// If the runtime has 2²⁴ live tasks; see [`Spawner::try_spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        match self.try_spawn(fut) {
            Ok(h) => h,
            Err(e) => panic!("stakplane-async: {e}"),
        }
    }

    /// Spawns `fut` as a task, or says why it cannot (the future is dropped
    /// then). After the runtime shut down, spawning succeeds but the future
    /// is dropped at once and the handle yields [`JoinError::RuntimeGone`].
    #[inline]
    pub fn try_spawn<F>(&self, fut: F) -> Result<JoinHandle<F::Output>, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        if self.exec.is_closed() {
            drop(fut);
            return Ok(JoinHandle::gone(self.exec.clone()));
        }
        match self.exec.spawn_raw(fut, true) {
            Ok(task) => Ok(JoinHandle {
                exec: self.exec.clone(),
                task,
                done: false,
                _out: PhantomData,
            }),
            Err(e) => Err(e),
        }
    }

    /// Spawns `fut` with no handle: it runs to completion (or until the
    /// runtime goes) and its output is dropped. Returns `false` if it could
    /// not be spawned (the future is dropped then).
    pub fn spawn_detached<F>(&self, fut: F) -> bool
    where
        F: Future<Output = ()> + 'static,
    {
        if self.exec.is_closed() {
            return false;
        }
        self.exec.spawn_raw(fut, false).is_ok()
    }

    /// The push form: spawns `fut` and passes its output to `ret`. If the
    /// task panics, is aborted or the runtime goes first, `ret` is dropped
    /// unfired, which its receiver sees as `None` (stakker's failure
    /// signal).
    pub fn spawn_ret<F>(&self, fut: F, ret: stakker::Ret<F::Output>)
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_detached(async move { ret.ret(fut.await) });
    }

    /// Spawns `fut` detached and calls `then` exactly once with how it
    /// ended: `Ok(output)` when it completes (inside its last poll), or the
    /// [`JoinError`] just before the unfinished future is dropped (panic,
    /// abort, drop-the-task failure, runtime shutdown). Returns a handle
    /// that can abort it.
    ///
    /// If the runtime already shut down, the future is dropped and `then`
    /// gets `Err(JoinError::RuntimeGone)` before this returns.
    ///
    /// # Panics
    ///
    /// If the runtime has 2²⁴ live tasks (`then` is not called then).
    #[track_caller]
    pub fn spawn_then<F, C>(&self, fut: F, then: C) -> AbortHandle
    where
        F: Future + 'static,
        C: FnOnce(Result<F::Output, JoinError>) + 'static,
    {
        if self.exec.is_closed() {
            drop(fut);
            then(Err(JoinError::RuntimeGone));
            return AbortHandle {
                exec: self.exec.clone(),
                task: TaskKey::NONE,
            };
        }
        let cell = ThenCell {
            fut,
            then: Some(then),
        };
        match self.exec.spawn_boxed(Box::pin(cell), false) {
            Ok(task) => AbortHandle {
                exec: self.exec.clone(),
                task,
            },
            Err(e) => panic!("stakplane-async: {e}"),
        }
    }

    /// Enables wakes from other threads for this runtime, once the
    /// `Stakker` has a poll waker; see [`enable_remote_wakes`].
    pub fn enable_remote_wakes(&self, core: &mut Core) {
        self.exec.enable_remote(core);
    }

    /// Whether the runtime shut down (spawned futures are dropped at once).
    pub fn is_closed(&self) -> bool {
        self.exec.is_closed()
    }

    /// The number of live tasks (not yet ended, or ended but not joined).
    pub fn live_tasks(&self) -> usize {
        self.exec.live()
    }

    /// The number of tasks spawned on this runtime so far. Cost: O(1).
    pub fn spawned_tasks(&self) -> u64 {
        self.exec.spawned()
    }

    /// The number of task polls on this runtime so far. Cost: O(1).
    pub fn task_polls(&self) -> u64 {
        self.exec.polls()
    }

    /// The number of tasks not yet ended (a task that ended but whose
    /// `JoinHandle` has not collected it is not counted). An event loop
    /// has work while this is non-zero.
    pub fn running_tasks(&self) -> usize {
        self.exec.running()
    }

    /// Aborts a task by reference (used by [`TaskSet`](crate::TaskSet)).
    pub(super) fn abort(&self, t: TaskKey) {
        self.exec.abort(t);
    }
}

/// Spawns `fut` as a task on the runtime behind `core` and returns its
/// [`JoinHandle`].
///
/// The task is first polled from the stakker queue (not inside this call),
/// then each time its waker is woken. A panic in `poll` ends the task with
/// [`JoinError::Panicked`]; the runtime goes on. Dropping the handle
/// detaches the task.
///
/// Cost: one allocation (the future and its output share it) and one
/// stakker queue call per poll.
///
/// # Panics
///
/// If the runtime has 2²⁴ live tasks or the process 2¹⁶ executors; see
/// [`try_spawner`] and [`Spawner::try_spawn`].
#[track_caller]
pub fn spawn<F>(core: &mut Core, fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawner(core).spawn(fut)
}

/// The push form of [`spawn`]: the output goes to `ret` (dropped unfired
/// if the task fails). See [`Spawner::spawn_ret`].
#[track_caller]
pub fn spawn_ret<F>(core: &mut Core, fut: F, ret: stakker::Ret<F::Output>)
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawner(core).spawn_ret(fut, ret)
}

/// Spawns `fut` beside the task being polled, from async code that has no
/// `Core` at hand.
///
/// # Panics
///
/// Outside a task of this crate's executor; see [`try_spawn_local`].
#[track_caller]
#[inline]
pub fn spawn_local<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match try_spawn_local(fut) {
        Ok(h) => h,
        Err(e) => panic!("stakplane-async: {e}"),
    }
}

/// [`spawn_local`] that returns an error instead of panicking.
#[inline]
pub fn try_spawn_local<F>(fut: F) -> Result<JoinHandle<F::Output>, SpawnError>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match current() {
        Some((exec, _)) => Spawner { exec }.try_spawn(fut),
        None => Err(SpawnError::NoRuntime),
    }
}

/// Enables task wakes from other threads on the runtime behind `core`.
///
/// Call it once after `Stakker::set_poll_waker` (an event loop and
/// [`install_poll_waker`] do). Until then, a task waker woken on another
/// thread queues the wake (delivered once this is called) and the first
/// such wake prints one line on stderr saying to do this (rule 46).
///
/// # Panics
///
/// If the `Stakker` has no poll waker yet (stakker's `Core::waker` rule).
pub fn enable_remote_wakes(core: &mut Core) {
    spawner(core).enable_remote_wakes(core);
}

/// Sets `poll_waker` as the `Stakker`'s poll waker and enables task wakes
/// from other threads. `poll_waker` is called from other threads and must
/// make the thread running the `Stakker` call `Stakker::poll_wake` soon.
///
/// # Panics
///
/// If the `Stakker` already has a poll waker (stakker's rule).
pub fn install_poll_waker(s: &mut Stakker, poll_waker: impl Fn() + Send + Sync + 'static) {
    s.set_poll_waker(poll_waker);
    enable_remote_wakes(s);
}

/// Drops every task of the runtime behind `core` now and refuses new ones
/// (their handles yield [`JoinError::RuntimeGone`]). Each task is dropped
/// exactly once.
///
/// **Call it, then run the `Stakker` once, before dropping the `Stakker`**
/// (an event loop that owns the `Stakker` should). Dropping the `Stakker` also drops the
/// tasks, but only after stakker has cleared its queue: what a task's
/// destructor queues then is never run. In particular an actor owned by a
/// task (its `ActorOwn` or `DeviceOwn` in the future) is then never
/// terminated: its state is not dropped and, for a device, its watchers
/// are never told.
pub fn shutdown(core: &mut Core) {
    if let Some(ExecEntry(g)) = core.anymap_try_get::<ExecEntry>() {
        g.0.shutdown();
    }
}
