//! The send that waits for space: [`Mailbox::send`] and its future
//! [`SendFuture`]. Under [`Overflow::Reject`](super::Overflow::Reject)(super::Overflow::Reject) a
//! sender that finds the mailbox full waits in line (`Waiters`); each
//! freed slot is granted to the oldest waiting sender and reserved for it
//! until it pushes (or its future is dropped, and the slot passes on).

use super::bump;
use super::delivery::Dropped;
use super::overflow::{Push, SendError};
use super::queue::{Inner, Mailbox};
use slab::Slab;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Senders waiting for a slot.
#[derive(Default)]
pub(super) struct Waiters {
    pub(super) slots: Slab<WaitSlot>,
    /// Keys of the waiters not yet granted a slot, in arrival order.
    pub(super) order: VecDeque<usize>,
}

pub(super) struct WaitSlot {
    pub(super) waker: Option<Waker>,
    /// A slot is reserved for this sender.
    pub(super) granted: bool,
}

impl<M: 'static> Inner<M> {
    /// Free slots: capacity minus held messages and reserved slots.
    fn free(&self) -> usize {
        let held = self.depth(self.queue.borrow().len()) + self.reserved.get();
        self.capacity.saturating_sub(held)
    }

    /// Grants free slots to waiting senders, oldest first, and wakes them
    /// (outside the borrow).
    #[cold]
    pub(super) fn grant(&self) {
        while self.waiting.get() != 0 && !self.closed.get() && self.free() != 0 {
            let waker = {
                let mut w = self.waiters.borrow_mut();
                let Some(key) = w.order.pop_front() else {
                    break;
                };
                self.waiting.set(w.order.len());
                match w.slots.get_mut(key) {
                    Some(slot) => {
                        slot.granted = true;
                        self.reserved.set(self.reserved.get() + 1);
                        slot.waker.take()
                    }
                    None => None,
                }
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<M: 'static> Mailbox<M> {
    /// Sends, waiting for space: a future that completes when the message
    /// is queued. Under [`Overflow::Reject`](super::Overflow::Reject) a full mailbox makes it wait
    /// (in FIFO order with other waiting senders) until a slot frees; under
    /// `DropOldest`/`DropNewest` it completes at the first poll, like
    /// [`try_send`](Mailbox::try_send). Dropping the future before it
    /// completes sends nothing and leaves nothing behind (a slot granted to
    /// it passes to the next waiting sender).
    ///
    /// Cost: as `try_send` when there is space; a waiting sender takes a
    /// slab entry and a waker clone.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] (with the message) if the mailbox is or gets
    /// closed before the message is queued. Never `Full`.
    pub fn send(&self, msg: M) -> SendFuture<'_, M> {
        SendFuture {
            mailbox: self,
            msg: Some(msg),
            key: None,
        }
    }
}

static_assertions::assert_not_impl_any!(SendFuture<'static, u64>: Send, Sync);

/// The future of [`Mailbox::send`]: completes when the message is queued.
///
/// Dropping it before completion sends nothing and leaves nothing behind.
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, M: 'static> {
    mailbox: &'a Mailbox<M>,
    msg: Option<M>,
    /// The waiter slot, once the sender waits.
    key: Option<usize>,
}

// The message is never pinned (it is moved out by value), so the future
// can move freely whatever `M` is.
impl<M: 'static> Unpin for SendFuture<'_, M> {}

impl<M: 'static> fmt::Debug for SendFuture<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("pending", &self.msg.is_some())
            .field("waiting", &self.key.is_some())
            .finish()
    }
}

impl<M: 'static> SendFuture<'_, M> {
    /// Takes the waiter slot out of the list: whether it had been granted
    /// a slot that is still reserved for it.
    fn leave(&mut self) -> bool {
        let Some(key) = self.key.take() else {
            return false;
        };
        let inner = &self.mailbox.inner;
        let mut w = inner.waiters.borrow_mut();
        let granted = w.slots.try_remove(key).is_some_and(|s| s.granted);
        if inner.closed.get() {
            // `close` cleared the order and the reservations.
            return false;
        }
        if !granted {
            if let Some(pos) = w.order.iter().position(|&k| k == key) {
                w.order.remove(pos);
            }
            inner.waiting.set(w.order.len());
        }
        granted
    }
}

impl<M: 'static> Future for SendFuture<'_, M> {
    type Output = Result<(), SendError<M>>;

    /// # Panics
    ///
    /// If polled again after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(msg) = this.msg.take() else {
            panic!("stakplane: mailbox SendFuture polled after completion");
        };
        let inner = &this.mailbox.inner;
        if let Some(key) = this.key {
            if inner.closed.get() {
                this.leave();
                bump(&inner.rejected_closed);
                return Poll::Ready(Err(SendError::Closed(msg)));
            }
            let granted = {
                let mut w = inner.waiters.borrow_mut();
                match w.slots.get_mut(key) {
                    Some(slot) if slot.granted => true,
                    Some(slot) => {
                        match &mut slot.waker {
                            Some(old) if old.will_wake(cx.waker()) => {}
                            other => *other = Some(cx.waker().clone()),
                        }
                        false
                    }
                    None => true,
                }
            };
            if !granted {
                this.msg = Some(msg);
                return Poll::Pending;
            }
            if this.leave() {
                inner.reserved.set(inner.reserved.get().saturating_sub(1));
            }
        }
        match inner.push(msg) {
            Push::Queued => Poll::Ready(Ok(())),
            Push::Evicted(old) => {
                inner.dead_letter(old, Dropped::Overflow);
                Poll::Ready(Ok(()))
            }
            Push::Closed(msg) => {
                bump(&inner.rejected_closed);
                Poll::Ready(Err(SendError::Closed(msg)))
            }
            Push::Full(msg) => {
                let mut w = inner.waiters.borrow_mut();
                let key = w.slots.insert(WaitSlot {
                    waker: Some(cx.waker().clone()),
                    granted: false,
                });
                w.order.push_back(key);
                inner.waiting.set(w.order.len());
                drop(w);
                this.key = Some(key);
                this.msg = Some(msg);
                Poll::Pending
            }
        }
    }
}

impl<M: 'static> Drop for SendFuture<'_, M> {
    fn drop(&mut self) {
        if self.key.is_some() && self.leave() {
            // The slot reserved for this sender passes on.
            let inner = &self.mailbox.inner;
            inner.reserved.set(inner.reserved.get().saturating_sub(1));
            inner.grant();
        }
    }
}
