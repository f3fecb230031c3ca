//! Awaiting and aborting one task: [`JoinHandle`] and [`AbortHandle`].
//!
//! The rules:
//!
//! - A handle names its task by [`TaskKey`] (slot and full generation), so
//!   a handle of an ended task never reaches a later task in its slot.
//! - A [`JoinHandle`] resolves once, to the output or a [`JoinError`];
//!   polling it again panics. It is not `Send`.
//! - Dropping a [`JoinHandle`] detaches the task: it keeps running, and
//!   its slot is freed when it ends (at once if it already ended).
//! - Aborting a task that already ended does nothing; aborting one that
//!   is being polled takes effect right after that poll.

use super::error::JoinError;
use super::slots::TaskKey;
use super::Exec;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Awaits a spawned task's output. Returned by [`spawn`](crate::spawn).
///
/// Resolves to `Ok(output)` or a [`JoinError`]. Dropping it detaches the
/// task, which keeps running. Not `Send`.
///
/// # Panics
///
/// Polling it again after it resolved panics (like any `Future`).
#[must_use = "dropping a JoinHandle detaches the task; use `let _ =` if that is meant"]
pub struct JoinHandle<T> {
    pub(super) exec: Rc<Exec>,
    pub(super) task: TaskKey,
    pub(super) done: bool,
    pub(super) _out: PhantomData<fn() -> T>,
}

static_assertions::assert_not_impl_any!(JoinHandle<()>: Send, Sync);

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("slot", &self.task.slot)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// A handle of no task, for a spawn after shutdown.
    pub(super) fn gone(exec: Rc<Exec>) -> Self {
        // A reference that matches no slot: polls yield `RuntimeGone`.
        JoinHandle {
            task: TaskKey::NONE,
            exec,
            done: false,
            _out: PhantomData,
        }
    }

    /// Aborts the task: it is dropped now (or, if it is being polled, right
    /// after that poll) and the handle yields [`JoinError::Aborted`]. No
    /// effect if the task already ended.
    pub fn abort(&self) {
        self.exec.abort(self.task);
    }

    /// Whether the task has ended (completed, panicked, aborted, failed or
    /// dropped with its runtime).
    pub fn is_finished(&self) -> bool {
        self.done || self.exec.is_finished(self.task)
    }

    /// A handle that can abort the task without holding its output.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            exec: self.exec.clone(),
            task: self.task,
        }
    }
}

impl<T: 'static> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "JoinHandle polled after it resolved");
        let r = self.exec.poll_join(self.task, cx);
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if !self.done {
            self.exec.detach(self.task);
        }
    }
}

/// Aborts a task without owning its output; see
/// [`Spawner::spawn_then`](crate::Spawner::spawn_then) and
/// [`JoinHandle::abort_handle`]. Dropping it
/// does nothing.
#[derive(Clone)]
pub struct AbortHandle {
    pub(super) exec: Rc<Exec>,
    pub(super) task: TaskKey,
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("slot", &self.task.slot)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl AbortHandle {
    /// Aborts the task (see [`JoinHandle::abort`]).
    pub fn abort(&self) {
        self.exec.abort(self.task);
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.exec.is_finished(self.task)
    }
}
