//! [`Executor`]: the actor thread behind the `async_executors` crate's
//! traits (feature `async-executors`), so that libraries written against
//! them (rather than against one runtime) run here unchanged.
//!
//! | trait | what it does here |
//! |---|---|
//! | `LocalSpawnHandle`, `SpawnHandle` | a task on the actor thread ([`task::Spawner`](crate::task::Spawner)); the `JoinHandle` gives its output, and dropping it cancels the task |
//! | `Timer` | a sleep on stakker's clock (virtual time in tests), through a `Send` future as the trait requires |
//! | `YieldNow` | the trait's own: back of the queue once |
//!
//! | `SpawnBlocking` (feature `async-executors-blocking`) | a job on the runtime's [blocking pool](crate::blocking) |
//!
//! `SpawnBlocking` needs its own feature: async_executors 0.7.0 builds
//! its `BlockingHandle` only from tokio's, async-std's or
//! async-global-executor's handles, so this one wraps stakplane's handle
//! as an async-global-executor "task" (a boxed `Send` future), which
//! brings that crate in (default features off; nothing of it runs). The
//! trait has no error path: as with its tokio implementation, a job that
//! panicked, a full pool or a stopped runtime panics the task awaiting
//! the handle; use [`blocking`](crate::blocking) directly for typed
//! errors.
//!
//! ## Rules
//!
//! **46b. A library written against `async_executors` runs on the actor
//! thread**: what it spawns runs there, in spawn order, and its output
//! comes through the handle; a dropped handle cancels its task; a spawn
//! on a shut-down runtime is a `SpawnError`, never a task silently lost;
//! `Timer::sleep` ends when stakker's clock passes the duration, and a
//! sleep dropped before then arms nothing more; `SpawnBlocking` runs the
//! closure on the runtime's blocking pool and gives its value.

use crate::task::{sleep, Spawner};
use async_executors::{JoinHandle, LocalSpawnHandle, SpawnHandle, Timer, YieldNow};
use futures_core::future::BoxFuture;
use futures_task::{FutureObj, LocalFutureObj, SpawnError};
use futures_util::future::{select, Either, FutureExt};
use stakker::Core;
use std::time::Duration;

/// A handle to the actor thread's tasks implementing the
/// `async_executors` traits (see the [module](self) docs). Cheap to
/// clone; not `Send` (it spawns onto this thread).
#[derive(Clone)]
pub struct Executor {
    spawner: Spawner,
    #[cfg(feature = "async-executors-blocking")]
    pool: Option<crate::blocking::Pool>,
}

impl Executor {
    /// The executor of the runtime that owns `core` (a `&mut Stakker`
    /// or `Runtime::core()` works too). Cost: a spawner handle (and the
    /// executor, made on first use). On a runtime that cannot take tasks
    /// any more, spawns are refused with `SpawnError`.
    ///
    /// # Panics
    ///
    /// As [`task::spawner`](crate::task::spawner): if the process already
    /// has 2¹⁶ executors.
    #[track_caller]
    pub fn new(core: &mut Core) -> Executor {
        Executor {
            spawner: crate::task::spawner(core),
            #[cfg(feature = "async-executors-blocking")]
            pool: crate::blocking::pool(core),
        }
    }

    fn spawn_output<Out: 'static>(
        &self,
        future: impl std::future::Future<Output = Out> + 'static,
    ) -> Result<JoinHandle<Out>, SpawnError> {
        let (task, handle) = future.remote_handle();
        if self.spawner.spawn_detached(task) {
            Ok(JoinHandle::remote_handle(handle))
        } else {
            Err(SpawnError::shutdown())
        }
    }
}

impl<Out: 'static> LocalSpawnHandle<Out> for Executor {
    fn spawn_handle_local_obj(
        &self,
        future: LocalFutureObj<'static, Out>,
    ) -> Result<JoinHandle<Out>, SpawnError> {
        self.spawn_output(future)
    }
}

/// A `Send` future, run on the actor thread like any other.
impl<Out: Send + 'static> SpawnHandle<Out> for Executor {
    fn spawn_handle_obj(
        &self,
        future: FutureObj<'static, Out>,
    ) -> Result<JoinHandle<Out>, SpawnError> {
        self.spawn_output(future)
    }
}

/// The sleep is a task on this thread that waits on stakker's clock and
/// then completes a oneshot channel, whose receiving end is the `Send`
/// future the trait asks for. Dropping that future ends the task at
/// once. On a runtime that is shut down the sleep ends at once (nothing
/// would ever poll it there).
impl Timer for Executor {
    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
        let (mut tx, rx) = futures_channel::oneshot::channel::<()>();
        self.spawner.spawn_detached(async move {
            let slept = sleep(dur);
            futures_util::pin_mut!(slept);
            if let Either::Left(_) = select(slept, tx.cancellation()).await {
                let _ = tx.send(());
            }
        });
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl YieldNow for Executor {}

/// A job on the runtime's blocking pool; see the [module](self) docs for
/// what an error does.
#[cfg(feature = "async-executors-blocking")]
impl<R: Send + 'static> async_executors::SpawnBlocking<R> for Executor {
    fn spawn_blocking<F>(&self, f: F) -> async_executors::BlockingHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
    {
        let handle = self.pool.as_ref().map(|pool| pool.spawn(f));
        async_executors::BlockingHandle::async_global(Box::pin(async move {
            match handle {
                Some(h) => match h.await {
                    Ok(out) => out,
                    Err(e) => panic!("stakplane blocking job: {e}"),
                },
                None => panic!("stakplane blocking job: no runtime (a plain Stakker has no pool)"),
            }
        }))
    }

    fn spawn_blocking_dyn(
        &self,
        f: Box<dyn FnOnce() -> R + Send>,
    ) -> async_executors::BlockingHandle<R> {
        self.spawn_blocking(f)
    }
}
