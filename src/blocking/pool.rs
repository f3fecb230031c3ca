//! The blocking pool: [`Pool`], [`spawn_blocking`] and its forms, the
//! [`BlockingHandle`] future, and the jobs the pool threads run.

use super::hub::{Hub, Target, To};
use super::{drop_quietly, panic_text, BlockingError, BlockingStats, TrySpawnError};
use crate::rt::Remote;
use stakker::{Core, Ret, Stakker};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// What a finished job posts to the runtime thread.
type Post = Box<dyn FnOnce(&mut Stakker) + Send>;

/// A job on its way to (or on) a pool thread: the user's closure, and
/// the key of its target on the runtime thread. Dropped without running,
/// it tells its target `Shutdown` (rule 164): a job is never lost.
pub(crate) struct Job {
    key: usize,
    remote: Remote,
    work: Option<Box<dyn FnOnce(usize) -> Post + Send>>,
}

impl Job {
    fn new<T, F>(key: usize, remote: Remote, f: F) -> Job
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let work = move |key: usize| -> Post {
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(value) => Box::new(move |s: &mut Stakker| {
                    if let Some(hub) = Hub::of(s) {
                        hub.complete(key, value, true);
                    }
                }),
                Err(payload) => {
                    let msg = panic_text(&*payload);
                    drop_quietly(payload);
                    post_err(key, BlockingError::Panicked(msg))
                }
            }
        };
        Job {
            key,
            remote,
            work: Some(Box::new(work)),
        }
    }

    pub(crate) fn key(&self) -> usize {
        self.key
    }

    /// Runs the job (on a pool thread) and posts its outcome.
    pub(crate) fn run(mut self) {
        if let Some(work) = self.work.take() {
            let post = work(self.key);
            // Refused only once the runtime is gone, with its targets.
            let _ = self.remote.post(post);
        }
    }

    /// Tells the target `e` through the runtime thread, without running.
    pub(crate) fn fail(mut self, e: BlockingError) {
        if let Some(work) = self.work.take() {
            drop_quietly(work);
            let _ = self.remote.post(post_err(self.key, e));
        }
    }

    /// Drops the closure without telling the target (the caller does).
    pub(crate) fn disarm(mut self) {
        if let Some(work) = self.work.take() {
            drop_quietly(work);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            drop_quietly(work);
            let _ = self
                .remote
                .post(post_err(self.key, BlockingError::Shutdown));
        }
    }
}

fn post_err(key: usize, e: BlockingError) -> Post {
    Box::new(move |s: &mut Stakker| {
        if let Some(hub) = Hub::of(s) {
            hub.fail(key, e);
        }
    })
}

/// Where a [`BlockingHandle`]'s outcome is put (the runtime thread puts
/// it; any thread may poll the handle).
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    out: Option<Result<T, BlockingError>>,
    waker: Option<Waker>,
    /// The outcome was put (and maybe taken): later ones are ignored.
    set: bool,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot {
            state: Mutex::new(SlotState {
                out: None,
                waker: None,
                set: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts the outcome (the first one only) and wakes the poller.
    pub(crate) fn set(&self, out: Result<T, BlockingError>) {
        let mut st = self.lock();
        if st.set {
            return;
        }
        st.set = true;
        st.out = Some(out);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The outcome of a blocking job, as a future: its value, or a
/// [`BlockingError`]. Made by [`Pool::spawn`] and [`spawn_blocking`].
///
/// `Send` and `Sync` when `T` is `Send`: it can be awaited on any
/// executor (the outcome is put by the runtime thread, which wakes the
/// poller). Dropping it detaches the job, which still runs (rule 161).
///
/// # Panics
///
/// Polling it again after it resolved panics (like any `Future`).
#[must_use = "dropping a BlockingHandle detaches the job; use `let _ =` if that is meant"]
pub struct BlockingHandle<T> {
    slot: Arc<Slot<T>>,
}

impl<T> BlockingHandle<T> {
    fn failed(e: BlockingError) -> Self {
        let slot = Arc::new(Slot::new());
        slot.set(Err(e));
        BlockingHandle { slot }
    }

    /// Whether the outcome is in (the next poll is ready).
    pub fn is_finished(&self) -> bool {
        self.slot.lock().set
    }
}

impl<T> Future for BlockingHandle<T> {
    type Output = Result<T, BlockingError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.slot.lock();
        if let Some(out) = st.out.take() {
            return Poll::Ready(out);
        }
        assert!(!st.set, "BlockingHandle polled after it resolved");
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for BlockingHandle<T> {
    fn drop(&mut self) {
        // Detached: nobody polls it any more, so its outcome wakes nobody
        // (a task's waker kept here would be woken after its task, maybe
        // after its runtime, is gone).
        let waker = self.slot.lock().waker.take();
        drop(waker);
    }
}

impl<T> fmt::Debug for BlockingHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// The blocking pool of a runtime: a cheap handle (an `Rc`), for actors
/// and tasks alike (move a clone into the task). Not `Send`: jobs are
/// submitted on the runtime thread. Made by [`pool`] or
/// `Runtime::blocking()`.
#[derive(Clone)]
pub struct Pool {
    hub: Hub,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The blocking pool of the runtime driving `core`, or `None` if no
/// [`Runtime`](crate::rt::Runtime) drives it. Starts nothing.
pub fn pool(core: &mut Core) -> Option<Pool> {
    Hub::of(core).map(|hub| Pool { hub })
}

impl Pool {
    pub(crate) fn new(hub: Hub) -> Pool {
        Pool { hub }
    }

    fn submit<T, F>(&self, f: F, target: Target<T>)
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.hub.is_closed() {
            target.fail_now(BlockingError::Shutdown);
            return;
        }
        let key = self.hub.insert(target, true);
        let job = Job::new(key, self.hub.remote().clone(), f);
        self.hub.submit(job);
    }

    /// Runs `f` on a pool thread; the handle yields its value, or why
    /// there is none: [`BlockingError::Panicked`] if it panicked,
    /// [`Full`](BlockingError::Full) if the pool was full under
    /// [`WhenFull::Refuse`](super::WhenFull::Refuse),
    /// [`Shutdown`](BlockingError::Shutdown) if the runtime finished
    /// first. Under [`WhenFull::Wait`](super::WhenFull::Wait) a full pool
    /// keeps the job on the runtime thread until there is room (rule 162).
    ///
    /// Cost: the closure boxed, a slot for its target, one `Remote` post
    /// for the outcome; the first jobs start the pool's threads.
    pub fn spawn<T, F>(&self, f: F) -> BlockingHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = Arc::new(Slot::new());
        self.submit(f, Target::new(To::Handle(slot.clone())));
        BlockingHandle { slot }
    }

    /// As [`spawn`](Pool::spawn), the outcome going to `ret` (for
    /// actors: `ret_some_to!([cx], done() as (Result<T, BlockingError>))`).
    /// `ret` gets exactly one value; a refusal reaches it at once, before
    /// this returns.
    pub fn spawn_ret<T, F>(&self, f: F, ret: Ret<Result<T, BlockingError>>)
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.submit(f, Target::new(To::Ret(ret)));
    }

    /// As [`spawn`](Pool::spawn) if the pool takes the job now, whatever
    /// its [`WhenFull`](super::WhenFull) policy; otherwise the closure
    /// comes back ([`TrySpawnError::Full`], or
    /// [`Shutdown`](TrySpawnError::Shutdown) once the runtime finished).
    pub fn try_spawn<T, F>(&self, f: F) -> Result<BlockingHandle<T>, TrySpawnError<F>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.hub.is_closed() {
            return Err(TrySpawnError::Shutdown(f));
        }
        // Only this thread pushes, and pool threads only free room: what
        // is free now is still free at the push.
        if !self.hub.pool().can_push() {
            return Err(TrySpawnError::Full(f));
        }
        Ok(self.spawn(f))
    }

    /// What the pool (and the runtime's services) have done so far.
    pub fn stats(&self) -> BlockingStats {
        self.hub.stats()
    }
}

/// Runs `f` on the blocking pool of the runtime driving `core` (see
/// [`Pool::spawn`]); without a runtime the handle yields
/// [`BlockingError::NoRuntime`].
pub fn spawn_blocking<T, F>(core: &mut Core, f: F) -> BlockingHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match pool(core) {
        Some(pool) => pool.spawn(f),
        None => BlockingHandle::failed(BlockingError::NoRuntime),
    }
}

/// Runs `f` on the blocking pool of the runtime driving `core`, its
/// outcome going to `ret` (see [`Pool::spawn_ret`]); without a runtime
/// `ret` gets [`BlockingError::NoRuntime`] at once.
pub fn spawn_blocking_ret<T, F>(core: &mut Core, f: F, ret: Ret<Result<T, BlockingError>>)
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match pool(core) {
        Some(pool) => pool.spawn_ret(f, ret),
        None => ret.ret(Err(BlockingError::NoRuntime)),
    }
}

/// [`Pool::try_spawn`] on the runtime driving `core`.
///
/// # Errors
/// As [`Pool::try_spawn`], and [`TrySpawnError::NoRuntime`] without a
/// runtime.
pub fn try_spawn_blocking<T, F>(
    core: &mut Core,
    f: F,
) -> Result<BlockingHandle<T>, TrySpawnError<F>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match pool(core) {
        Some(pool) => pool.try_spawn(f),
        None => Err(TrySpawnError::NoRuntime(f)),
    }
}

static_assertions::assert_impl_all!(BlockingHandle<u32>: Send, Sync);
static_assertions::assert_not_impl_any!(Pool: Send, Sync);
