//! `Ret` → `Future`: the push pipe, the pull pipe and their two failure
//! styles.
//!
//! - **Push pipe** ([`ret_to_future`]): you get a `Ret<T>` and a future; hand
//!   the `Ret` to an actor (in a call, a `Fwd`, a stored callback); the
//!   future resolves when the `Ret` is fired.
//! - **Pull pipe** ([`future_pull`]): you give a closure that sends a
//!   request carrying a `Ret<T>`; it runs at the future's first poll, so
//!   nothing is sent until the future is awaited. [`ask!`](crate::ask) is
//!   a pull pipe around an actor call.
//!
//! Failure styles, when the `Ret` is dropped unfired (the actor failed, or
//! dropped it):
//! - *pass the error*: the future yields `Err(ActorFail::Dropped { cause })`;
//! - *drop the task* (`_or_drop` functions): the future yields `T` and, on
//!   failure, ends the whole task it is awaited in with
//!   [`JoinError::Failed`](crate::JoinError::Failed), at that `.await`. Such
//!   a future must be awaited inside a task of this crate's executor;
//!   elsewhere it panics, since there is no task to drop.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **48. Pass-the-error pipes yield `Err(ActorFail::Dropped)` when the `Ret`
//! is dropped unfired**; a fired `Ret` yields its value, even if fired
//! before the first poll. A waker the future replaces is dropped outside
//! its borrow: one whose `Drop` drops the `Ret` has that drop reported.
//!
//! **49. Drop-the-task pipes end the awaiting task** with
//! `JoinError::Failed(ActorFail)` at that `.await`: code after it never
//! runs, the task's future is dropped exactly once, `spawn_then` sees
//! `Failed`. The failure wins even if the same poll goes on to complete
//! the task (a `select` with a ready branch; its output is dropped) or to
//! panic. Awaited outside a task they panic, naming the pass-the-error
//! form.
//!
//! **50. A pull pipe (and `ask!`) sends nothing until first polled, then
//! exactly once**; an actor that stops before replying, or is already
//! dead, yields `Dropped`.

use crate::exec;
use crate::fail::{ActorFail, CauseOf};
use crate::waker;
use stakker::Ret;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Who to wake when a pipe has something.
#[derive(Default)]
pub(crate) enum Waiter {
    #[default]
    None,
    /// A task of our executor: scheduled directly.
    Task(waker::TaskRef),
    /// Anyone else.
    Other(Waker),
}

impl Waiter {
    /// The waiter of waker `w`.
    pub(crate) fn of(w: &Waker) -> Waiter {
        match waker::task_of(w) {
            Some(t) => Waiter::Task(t),
            None => Waiter::Other(w.clone()),
        }
    }

    /// Records the waker of the current poll; returns the one it replaces,
    /// which the caller drops **after** its borrow ends: an outside
    /// waker's drop may drop a task, and with it a sender or a pipe end of
    /// the cell the caller holds borrowed.
    #[must_use = "drop the replaced waiter after the borrow"]
    pub(crate) fn register(&mut self, w: &Waker) -> Waiter {
        if let (Waiter::Other(old), None) = (&*self, waker::task_of(w)) {
            if old.will_wake(w) {
                return Waiter::None;
            }
        }
        std::mem::replace(self, Waiter::of(w))
    }

    /// Wakes whoever waits (taken out first, so call it outside borrows).
    pub(crate) fn wake(self) {
        match self {
            Waiter::None => {}
            // Straight to the executor, not through a `Waker`.
            Waiter::Task(t) => exec::wake(t),
            Waiter::Other(w) => w.wake(),
        }
    }
}

enum Slot<T> {
    Empty,
    Value(T),
    Dropped,
    Taken,
}

struct Shared<T> {
    slot: Slot<T>,
    waiter: Waiter,
}

/// Creates a `Ret<T>` whose value or drop lands in the returned shared
/// cell and wakes the waiter.
fn pipe<T: 'static>() -> (Rc<RefCell<Shared<T>>>, Ret<T>) {
    let shared = Rc::new(RefCell::new(Shared {
        slot: Slot::Empty,
        waiter: Waiter::None,
    }));
    let s2 = shared.clone();
    let ret = Ret::new(move |v: Option<T>| {
        let waiter = {
            let mut sh = s2.borrow_mut();
            sh.slot = match v {
                Some(v) => Slot::Value(v),
                None => Slot::Dropped,
            };
            std::mem::take(&mut sh.waiter)
        };
        waiter.wake();
    });
    (shared, ret)
}

/// Polls the shared cell: `Some(Ok(v))`, `Some(Err(()))` if dropped, `None`
/// if still waiting.
fn poll_shared<T>(shared: &RefCell<Shared<T>>, cx: &Context<'_>) -> Option<Result<T, ()>> {
    let mut sh = shared.borrow_mut();
    match std::mem::replace(&mut sh.slot, Slot::Taken) {
        Slot::Value(v) => Some(Ok(v)),
        Slot::Dropped => Some(Err(())),
        Slot::Empty => {
            sh.slot = Slot::Empty;
            let old = sh.waiter.register(cx.waker());
            drop(sh);
            drop(old);
            None
        }
        Slot::Taken => panic!("stakplane-async: pipe future polled after it resolved"),
    }
}

/// Ends the current task (drop-the-task style) and returns `Pending`.
pub(crate) fn drop_task<T>(fail: ActorFail) -> Poll<T> {
    if !exec::fail_current(fail) {
        panic!(
            "stakplane-async: a drop-the-task pipe failed outside a stakplane-async task, \
             so there is no task to drop; use the pass-the-error form \
             (`ret_to_future`, `future_pull`, `fwd_to_stream`) there"
        );
    }
    Poll::Pending
}

/// A pass-the-error poll made drop-the-task: the value, or the task ended.
#[inline]
fn or_drop_task<T>(poll: Poll<Result<T, ActorFail>>) -> Poll<T> {
    match poll {
        Poll::Ready(Ok(v)) => Poll::Ready(v),
        Poll::Ready(Err(fail)) => drop_task(fail),
        Poll::Pending => Poll::Pending,
    }
}

/// A pass-the-error stream's poll made drop-the-task: the item, the end,
/// or the task ended.
#[inline]
pub(crate) fn or_drop_task_item<T>(poll: Poll<Option<Result<T, ActorFail>>>) -> Poll<Option<T>> {
    match poll {
        Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(item)),
        Poll::Ready(Some(Err(fail))) => drop_task(fail),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

/// The future of a push pipe, pass-the-error style: yields `Ok(value)` once
/// the `Ret` fires, `Err(ActorFail)` if it is dropped unfired. Made by
/// [`ret_to_future`].
#[must_use = "futures do nothing unless awaited"]
pub struct RetFuture<T, C: CauseOf = ()> {
    shared: Rc<RefCell<Shared<T>>>,
    cause: C,
}

impl<T, C: CauseOf> fmt::Debug for RetFuture<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetFuture").finish_non_exhaustive()
    }
}

impl<T, C: CauseOf> Unpin for RetFuture<T, C> {}

impl<T, C: CauseOf> Future for RetFuture<T, C> {
    type Output = Result<T, ActorFail>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match poll_shared(&self.shared, cx) {
            Some(Ok(v)) => Poll::Ready(Ok(v)),
            Some(Err(())) => Poll::Ready(Err(ActorFail::Dropped {
                cause: self.cause.cause_of(),
            })),
            None => Poll::Pending,
        }
    }
}

/// The future of a push pipe, drop-the-task style: yields the value once
/// the `Ret` fires; if it is dropped unfired, ends the awaiting task. Made
/// by [`ret_to_future_or_drop`].
#[must_use = "futures do nothing unless awaited"]
pub struct RetFutureOrDrop<T> {
    inner: RetFuture<T>,
}

impl<T> fmt::Debug for RetFutureOrDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetFutureOrDrop").finish_non_exhaustive()
    }
}

impl<T> Unpin for RetFutureOrDrop<T> {}

impl<T> Future for RetFutureOrDrop<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        or_drop_task(Pin::new(&mut self.inner).poll(cx))
    }
}

/// A push pipe, pass-the-error style: fire the `Ret` to resolve the future.
///
/// The future yields `Ok(v)` when the `Ret` is fired with `v`, or
/// `Err(ActorFail::Dropped { cause: None })` when the `Ret` is dropped
/// unfired. Cost: two allocations (the shared cell and the `Ret`).
///
/// ```
/// # use stakker::Stakker;
/// # use std::time::Instant;
/// let (fut, ret) = stakplane_async::ret_to_future::<u32>();
/// ret.ret(7);
/// # let mut s = Stakker::new(Instant::now());
/// let h = stakplane_async::spawn(&mut s, fut);
/// # s.run(Instant::now(), false);
/// # assert!(h.is_finished());
/// ```
pub fn ret_to_future<T: 'static>() -> (RetFuture<T>, Ret<T>) {
    let (shared, ret) = pipe();
    (RetFuture { shared, cause: () }, ret)
}

/// [`ret_to_future`] whose failure carries the cause `cause` finds (asked
/// when the failure is reported).
pub fn ret_to_future_with_cause<T: 'static, C: CauseOf>(cause: C) -> (RetFuture<T, C>, Ret<T>) {
    let (shared, ret) = pipe();
    (RetFuture { shared, cause }, ret)
}

/// A push pipe, drop-the-task style: the future yields `T`; if the `Ret` is
/// dropped unfired, the task awaiting the future is ended with
/// [`JoinError::Failed`](crate::JoinError::Failed).
pub fn ret_to_future_or_drop<T: 'static>() -> (RetFutureOrDrop<T>, Ret<T>) {
    let (inner, ret) = ret_to_future();
    (RetFutureOrDrop { inner }, ret)
}

/// The future of a pull pipe: sends its request at the first poll, then
/// behaves as a [`RetFuture`]. Made by [`future_pull`] and [`ask!`](crate::ask).
#[must_use = "futures do nothing unless awaited; the request is sent at the first poll"]
pub struct Pull<T, F, C: CauseOf = ()> {
    request: Option<(F, C)>,
    fut: Option<RetFuture<T, C>>,
}

impl<T, F, C: CauseOf> fmt::Debug for Pull<T, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pull")
            .field("sent", &self.request.is_none())
            .finish()
    }
}

impl<T, F, C: CauseOf> Unpin for Pull<T, F, C> {}

impl<T: 'static, F: FnOnce(Ret<T>), C: CauseOf> Future for Pull<T, F, C> {
    type Output = Result<T, ActorFail>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some((request, cause)) = self.request.take() {
            let (fut, ret) = ret_to_future_with_cause(cause);
            self.fut = Some(fut);
            request(ret);
        }
        match &mut self.fut {
            Some(fut) => Pin::new(fut).poll(cx),
            None => unreachable!("pull pipe without a future after its request"),
        }
    }
}

/// A pull pipe, pass-the-error style: `request` runs at the first poll with
/// the `Ret` to reply through (typically it calls an actor); the future then
/// yields `Ok(reply)` or `Err(ActorFail)` if the `Ret` is dropped unfired.
pub fn future_pull<T: 'static, F: FnOnce(Ret<T>)>(request: F) -> Pull<T, F> {
    future_pull_with_cause(request, ())
}

/// [`future_pull`] whose failure carries the cause `cause` finds.
pub fn future_pull_with_cause<T: 'static, F: FnOnce(Ret<T>), C: CauseOf>(
    request: F,
    cause: C,
) -> Pull<T, F, C> {
    Pull {
        request: Some((request, cause)),
        fut: None,
    }
}

/// The future of a pull pipe, drop-the-task style. Made by
/// [`future_pull_or_drop`].
#[must_use = "futures do nothing unless awaited; the request is sent at the first poll"]
pub struct PullOrDrop<T, F> {
    inner: Pull<T, F>,
}

impl<T, F> fmt::Debug for PullOrDrop<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOrDrop")
            .field("sent", &self.inner.request.is_none())
            .finish()
    }
}

impl<T, F> Unpin for PullOrDrop<T, F> {}

impl<T: 'static, F: FnOnce(Ret<T>)> Future for PullOrDrop<T, F> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        or_drop_task(Pin::new(&mut self.inner).poll(cx))
    }
}

/// A pull pipe, drop-the-task style: like [`future_pull`], but the future
/// yields `T` and a dropped `Ret` ends the awaiting task.
pub fn future_pull_or_drop<T: 'static, F: FnOnce(Ret<T>)>(request: F) -> PullOrDrop<T, F> {
    PullOrDrop {
        inner: future_pull(request),
    }
}
