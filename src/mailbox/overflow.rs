//! What a send does when the mailbox is full: the [`Overflow`] policy,
//! the send that never waits ([`Mailbox::try_send`]), which applies it,
//! and [`SendError`], the refused send that gives the message back.

use super::bump;
use super::delivery::Dropped;
use super::queue::{Inner, Mailbox};
use std::fmt;
use std::rc::Rc;

/// What a send does when the mailbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Refuse the message: [`try_send`](Mailbox::try_send) returns it in
    /// [`SendError::Full`]; [`send`](Mailbox::send) waits for space.
    Reject,
    /// Accept the message and evict the oldest queued one, which goes to
    /// the dead letters ([`Dropped::Overflow`]). If the only message held
    /// is the one in the consumer's hands (capacity 1, a handler sending
    /// to its own mailbox), the incoming message is dropped instead.
    DropOldest,
    /// Drop the incoming message to the dead letters
    /// ([`Dropped::Overflow`]); the send still returns `Ok`, as the
    /// mailbox has taken charge of it.
    DropNewest,
}

/// A send that did not go through; the message comes back.
#[derive(Clone, PartialEq, Eq)]
pub enum SendError<M> {
    /// The mailbox is full and its policy is [`Overflow::Reject`].
    Full(M),
    /// The mailbox is [closed](Mailbox::close).
    Closed(M),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Closed(m) => m,
        }
    }

    /// Whether the mailbox was full.
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }

    /// Whether the mailbox was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }
}

/// Prints the variant only, so that `M` needs no `Debug`.
impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "mailbox full",
            SendError::Closed(_) => "mailbox closed",
        })
    }
}

impl<M> std::error::Error for SendError<M> {}

/// The result of pushing without waiting.
pub(super) enum Push<M> {
    Queued,
    /// Accepted, and this message must go to the dead letters.
    Evicted(M),
    Full(M),
    Closed(M),
}

impl<M: 'static> Inner<M> {
    /// Queues `msg` if a slot is free (not counting slots reserved for
    /// waiting senders); gives it back otherwise. The caller checked that
    /// the mailbox is open.
    #[inline]
    fn try_queue(self: &Rc<Self>, msg: M) -> Result<(), M> {
        let mut q = self.queue.borrow_mut();
        let depth = self.depth(q.len());
        if depth + self.reserved.get() >= self.capacity {
            return Err(msg);
        }
        q.push_back(msg);
        drop(q);
        self.pushed(depth + 1);
        Ok(())
    }

    /// Pushes without waiting, applying the overflow policy.
    #[inline]
    pub(super) fn push(self: &Rc<Self>, msg: M) -> Push<M> {
        if self.closed.get() {
            return Push::Closed(msg);
        }
        let msg = match self.try_queue(msg) {
            Ok(()) => return Push::Queued,
            Err(msg) => msg,
        };
        let mut q = self.queue.borrow_mut();
        let depth = self.depth(q.len());
        match self.overflow {
            Overflow::Reject => Push::Full(msg),
            Overflow::DropNewest => {
                drop(q);
                bump(&self.accepted);
                bump(&self.dropped_overflow);
                Push::Evicted(msg)
            }
            Overflow::DropOldest => match q.pop_front() {
                Some(old) => {
                    self.front_is_retry.set(false);
                    q.push_back(msg);
                    drop(q);
                    bump(&self.dropped_overflow);
                    self.pushed(depth);
                    Push::Evicted(old)
                }
                None => {
                    drop(q);
                    bump(&self.accepted);
                    bump(&self.dropped_overflow);
                    Push::Evicted(msg)
                }
            },
        }
    }
}

impl<M: 'static> Mailbox<M> {
    /// Sends without waiting.
    ///
    /// Cost: a `RefCell` borrow and a `VecDeque` push; if the consumer is
    /// idle, one delivery run queued on the stakker queue.
    ///
    /// # Errors
    ///
    /// - [`SendError::Full`] if the mailbox is full and its policy is
    ///   [`Overflow::Reject`] (slots promised to senders waiting in
    ///   [`send`](Mailbox::send) count as taken);
    /// - [`SendError::Closed`] if the mailbox is closed.
    ///
    /// Either way the message comes back in the error. Under
    /// `DropOldest`/`DropNewest` a full mailbox accepts the send and
    /// dead-letters a message ([`Overflow`]).
    ///
    /// # Panics
    /// Only if the dead-letter `Fwd` (or a waiting sender's waker) it
    /// calls panics; that panic unwinds to the caller.
    #[inline]
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        match self.inner.push(msg) {
            Push::Queued => Ok(()),
            Push::Evicted(old) => {
                self.inner.dead_letter(old, Dropped::Overflow);
                Ok(())
            }
            Push::Full(msg) => {
                bump(&self.inner.rejected_full);
                Err(SendError::Full(msg))
            }
            Push::Closed(msg) => {
                bump(&self.inner.rejected_closed);
                Err(SendError::Closed(msg))
            }
        }
    }

    /// Queues `msg` only if there is room, whatever the overflow policy
    /// (never evicts, never drops); gives it back otherwise. For moving
    /// messages between mailboxes (a task group shrinking): what does not
    /// fit goes back to the owner, not to dead letters.
    pub(crate) fn try_send_if_room(&self, msg: M) -> Result<(), M> {
        if self.inner.closed.get() {
            return Err(msg);
        }
        self.inner.try_queue(msg)
    }
}
