//! `Fwd` → `Stream` (bounded, with a refill request) and `Stream` → `Fwd`.
//!
//! A [`fwd_to_stream`] pipe gives the producer (usually an actor) a
//! `Fwd<Option<T>>`: it sends `Some(item)` any number of times, then `None`
//! to end the stream. The consumer (async code) reads a `Stream`.
//!
//! **Flow control.** The queue holds at most `capacity` items. When the
//! consumer takes the last queued item, or finds the queue empty, the
//! stream sends `()` on the `more` `Fwd` (once, until an item arrives): the
//! producer answers with the next batch of at most `capacity` items, or
//! `None`, **sent in one go** from the handler of the request (the
//! consumer cannot run in between, so it sees the whole batch before it
//! can ask again). A producer that already has all its data may also just
//! send it, as long as it never gets more than `capacity` items ahead.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **51. `Fwd` → `Stream`**: items come out in order and `None` ends the
//! stream (later items are discarded); a refill request goes to `more`
//! when the consumer has taken everything queued, and not again while
//! one is outstanding; when every `Fwd` clone is dropped before `None`,
//! the queued items come first, then one `Err(Dropped)` (pass-the-error)
//! or the end of the task (drop-the-task), then the end; more than
//! `capacity` items ahead of the consumer is an overflow: the queued
//! items, then `Err(Overflow { capacity })`, then the end, and the excess
//! is discarded (capacity 0 counts as 1). `stream_to_fwd` forwards each
//! item as `Some` then `None`; aborted, it drops the `Fwd` without `None`.
//! The stream drops a waker it replaces and writes its `Debug` outside
//! its borrow, so a waker's `Drop` or a `Debug` sink that drops the last
//! `Fwd` still has that drop reported.

use crate::exec::{self, JoinHandle};
use crate::fail::{ActorFail, CauseOf};
use crate::pipe::{or_drop_task_item, Waiter};
use futures_core::Stream;
use stakker::{Core, Fwd};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

enum Tail {
    /// More may come.
    Open,
    /// `None` was received: normal end after the queue.
    Ended,
    /// Failed after the queue; the error is reported once, then the end.
    Failed(ActorFail),
    /// The end (or the error) was reported.
    Done,
}

struct Shared<T> {
    queue: VecDeque<T>,
    capacity: usize,
    tail: Tail,
    waiter: Waiter,
    /// The refill request; dropped with the consumer (it usually points
    /// at the producer's actor, whose state holds the producer `Fwd`, so
    /// keeping it would make a cycle).
    more: Option<Fwd<()>>,
    /// A refill request is outstanding (no item since it was sent).
    requested: bool,
}

/// Held by the producer's `Fwd` closure: its drop (every `Fwd` clone gone)
/// without a prior `None` is the failure signal.
struct Producer<T> {
    shared: Rc<RefCell<Shared<T>>>,
}

impl<T> Producer<T> {
    fn push(&self, item: Option<T>) {
        let waiter = {
            let mut sh = self.shared.borrow_mut();
            if !matches!(sh.tail, Tail::Open) {
                // After the end or an overflow: discarded (documented).
                return;
            }
            match item {
                Some(v) if sh.queue.len() < sh.capacity => {
                    sh.queue.push_back(v);
                    sh.requested = false;
                }
                Some(_) => {
                    sh.tail = Tail::Failed(ActorFail::Overflow {
                        capacity: sh.capacity,
                    })
                }
                None => sh.tail = Tail::Ended,
            }
            std::mem::take(&mut sh.waiter)
        };
        waiter.wake();
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        let waiter = {
            // Never borrowed while user code runs (rule 51's wakers are
            // dropped after the borrow); quiet during an unwind.
            let Ok(mut sh) = self.shared.try_borrow_mut() else {
                debug_assert!(
                    std::thread::panicking(),
                    "a Producer dropped inside its stream's borrow"
                );
                return;
            };
            if !matches!(sh.tail, Tail::Open) {
                return;
            }
            sh.tail = Tail::Failed(ActorFail::dropped());
            std::mem::take(&mut sh.waiter)
        };
        waiter.wake();
    }
}

/// What the consumer sees next.
enum Next<T> {
    Item(T),
    Fail(ActorFail),
    End,
    Pending,
}

fn poll_next<T>(shared: &RefCell<Shared<T>>, cx: &Context<'_>) -> Next<T> {
    // The waiter a pending poll replaces is dropped after the borrow.
    let (next, request, replaced) = {
        let mut sh = shared.borrow_mut();
        match sh.queue.pop_front() {
            Some(v) => {
                // Ask for the next batch as soon as the queue runs empty, so
                // the producer refills while this item is handled.
                let req = sh.queue.is_empty() && matches!(sh.tail, Tail::Open) && !sh.requested;
                sh.requested |= req;
                let more = if req { sh.more.clone() } else { None };
                (Next::Item(v), more, Waiter::None)
            }
            None => match std::mem::replace(&mut sh.tail, Tail::Done) {
                Tail::Open => {
                    sh.tail = Tail::Open;
                    let replaced = sh.waiter.register(cx.waker());
                    let req = !sh.requested;
                    sh.requested = true;
                    let more = if req { sh.more.clone() } else { None };
                    (Next::Pending, more, replaced)
                }
                Tail::Ended | Tail::Done => (Next::End, None, Waiter::None),
                Tail::Failed(e) => (Next::Fail(e), None, Waiter::None),
            },
        }
    };
    drop(replaced);
    if let Some(more) = request {
        more.fwd(());
    }
    next
}

/// A `Fwd` → `Stream` pipe, pass-the-error style. Items come out as
/// `Some(Ok(item))`; a failure as one `Some(Err(ActorFail))`; then `None`.
/// Made by [`fwd_to_stream`].
#[must_use = "streams do nothing unless polled"]
pub struct FwdStream<T, C: CauseOf = ()> {
    shared: Rc<RefCell<Shared<T>>>,
    cause: C,
}

/// A `Fwd` → `Stream` pipe, drop-the-task style. Items come out as
/// `Some(item)`, then `None` at the normal end; a failure ends the task
/// that polls the stream. Made by [`fwd_to_stream_or_drop`].
#[must_use = "streams do nothing unless polled"]
pub struct FwdStreamOrDrop<T> {
    inner: FwdStream<T>,
}

impl<T, C: CauseOf> fmt::Debug for FwdStream<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Read first: the formatter writes to the caller's sink (user code).
        let queued = self.shared.borrow().queue.len();
        f.debug_struct("FwdStream")
            .field("queued", &queued)
            .finish()
    }
}

impl<T> fmt::Debug for FwdStreamOrDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queued = self.inner.shared.borrow().queue.len();
        f.debug_struct("FwdStreamOrDrop")
            .field("queued", &queued)
            .finish()
    }
}

/// The consumer is gone: drop the refill request (and what it holds).
fn consumer_gone<T>(shared: &RefCell<Shared<T>>) {
    let more = shared
        .try_borrow_mut()
        .ok()
        .and_then(|mut sh| sh.more.take());
    drop(more);
}

impl<T, C: CauseOf> Drop for FwdStream<T, C> {
    fn drop(&mut self) {
        consumer_gone(&self.shared);
    }
}

impl<T, C: CauseOf> Unpin for FwdStream<T, C> {}
impl<T> Unpin for FwdStreamOrDrop<T> {}

impl<T, C: CauseOf> Stream for FwdStream<T, C> {
    type Item = Result<T, ActorFail>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match poll_next(&self.shared, cx) {
            Next::Item(v) => Poll::Ready(Some(Ok(v))),
            Next::Fail(ActorFail::Dropped { cause: None }) => {
                Poll::Ready(Some(Err(ActorFail::Dropped {
                    cause: self.cause.cause_of(),
                })))
            }
            Next::Fail(e) => Poll::Ready(Some(Err(e))),
            Next::End => Poll::Ready(None),
            Next::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.shared.borrow().queue.len(), None)
    }
}

impl<T> Stream for FwdStreamOrDrop<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        or_drop_task_item(Pin::new(&mut self.inner).poll_next(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

fn pipe<T: 'static>(capacity: usize, more: Fwd<()>) -> (Rc<RefCell<Shared<T>>>, Fwd<Option<T>>) {
    let capacity = capacity.max(1);
    let shared = Rc::new(RefCell::new(Shared {
        queue: VecDeque::with_capacity(capacity.min(1024)),
        capacity,
        tail: Tail::Open,
        waiter: Waiter::None,
        more: Some(more),
        requested: false,
    }));
    let producer = Producer {
        shared: shared.clone(),
    };
    let fwd = Fwd::new(move |item: Option<T>| producer.push(item));
    (shared, fwd)
}

/// A `Fwd` → `Stream` pipe, pass-the-error style. The producer answers
/// each `()` on `more` with at most `capacity` items in one go, and sends
/// `None` at the end; the crate docs state the flow-control, overflow and
/// failure rules. Cost: two allocations (the shared queue and the `Fwd`).
///
/// `capacity` (at least 1) bounds the queue; `more` receives `()` each time
/// the consumer wants a refill (pass `stakker::fwd_nop!()` if the producer
/// pushes without being asked).
pub fn fwd_to_stream<T: 'static>(capacity: usize, more: Fwd<()>) -> (FwdStream<T>, Fwd<Option<T>>) {
    fwd_to_stream_with_cause(capacity, more, ())
}

/// [`fwd_to_stream`] whose `Dropped` failure carries the cause `cause`
/// finds.
pub fn fwd_to_stream_with_cause<T: 'static, C: CauseOf>(
    capacity: usize,
    more: Fwd<()>,
    cause: C,
) -> (FwdStream<T, C>, Fwd<Option<T>>) {
    let (shared, fwd) = pipe(capacity, more);
    (FwdStream { shared, cause }, fwd)
}

/// A `Fwd` → `Stream` pipe, drop-the-task style; see [`fwd_to_stream`].
pub fn fwd_to_stream_or_drop<T: 'static>(
    capacity: usize,
    more: Fwd<()>,
) -> (FwdStreamOrDrop<T>, Fwd<Option<T>>) {
    let (inner, fwd) = fwd_to_stream(capacity, more);
    (FwdStreamOrDrop { inner }, fwd)
}

pin_project_lite::pin_project! {
    /// The task body of [`stream_to_fwd`].
    struct Forward<S, T: 'static> {
        #[pin]
        stream: S,
        fwd: Fwd<Option<T>>,
    }
}

impl<T: 'static, S: Stream<Item = T>> Future for Forward<S, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(v)) => this.fwd.fwd(Some(v)),
                Poll::Ready(None) => {
                    this.fwd.fwd(None);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// `Stream` → `Fwd`: spawns a task on the runtime behind `core` that sends
/// each item of `stream` as `Some(item)` to `fwd`, then `None` at its end.
///
/// If the task is aborted (or the runtime goes) first, `fwd` is dropped
/// without the final `None`, which tells the receiver the stream did not
/// end normally. The task polls the stream until it is pending, so a
/// stream that is always ready should yield now and then.
///
/// # Panics
///
/// As [`spawn`](crate::spawn).
#[track_caller]
pub fn stream_to_fwd<S>(core: &mut Core, stream: S, fwd: Fwd<Option<S::Item>>) -> JoinHandle<()>
where
    S: Stream + 'static,
    S::Item: 'static,
{
    exec::spawn(core, Forward { stream, fwd })
}
