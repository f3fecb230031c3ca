//! The queue: the [`Mailbox`] handle and the state its clones share
//! (`Inner`): the bounded FIFO, the consumer's flags, the counters
//! ([`MailboxStats`]); making a mailbox, closing it, taking its messages
//! out, and what the last handle's drop does with what is still queued.

use super::delivery::{Consumer, DeadLetter, Dropped, OnCrash};
use super::overflow::Overflow;
use super::send::Waiters;
use super::{bump, MailboxTotals, Tally};
use stakker::{Deferrer, Fwd};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::{Rc, Weak};
use std::task::Waker;

/// Bad input to a mailbox constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxError {
    /// A capacity of 0: such a mailbox could never hold a message.
    ZeroCapacity,
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::ZeroCapacity => f.write_str("mailbox capacity must be at least 1"),
        }
    }
}

impl std::error::Error for MailboxError {}

/// Counters and gauges of a mailbox ([`Mailbox::stats`]).
///
/// At every moment `accepted == handled + dropped_overflow +
/// dropped_crashed + dropped_closed + taken + depth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxStats {
    /// The bound.
    pub capacity: usize,
    /// Messages held now: queued, plus the one in the consumer's hands.
    pub depth: usize,
    /// The largest `depth` seen.
    pub high_water: usize,
    /// Sends that returned `Ok` (including a [`Overflow::DropNewest`]
    /// send whose message was dropped at once).
    pub accepted: u64,
    /// Sends refused with [`SendError::Full`](super::SendError::Full).
    pub rejected_full: u64,
    /// Sends refused with [`SendError::Closed`](super::SendError::Closed).
    pub rejected_closed: u64,
    /// Hand-overs whose handler returned normally.
    pub handled: u64,
    /// Hand-overs whose handler panicked.
    pub crashed: u64,
    /// Messages put back for redelivery after a crash.
    pub redelivered: u64,
    /// Messages dropped by the overflow policy.
    pub dropped_overflow: u64,
    /// Messages dropped after a crash (not, or no longer, redelivered).
    pub dropped_crashed: u64,
    /// Messages dropped by [`Mailbox::close`].
    pub dropped_closed: u64,
    /// Messages taken out unhandled by [`Mailbox::take_queued`] (moved
    /// elsewhere by their owner, e.g. a shrinking task group).
    pub taken: u64,
    /// Dropped messages given to the dead-letter `Fwd` (the others had no
    /// `Fwd` to go to, or no copy under [`OnCrash::discard`]).
    pub dead_lettered: u64,
    /// Senders waiting in [`Mailbox::send`] for a slot.
    pub waiting_senders: usize,
    /// Whether a consumer is attached. It may have died since: the
    /// mailbox notices at the next delivery (nothing is lost); a consumer
    /// that died still in Prep is only replaced by the next `attach`.
    pub attached: bool,
    /// Whether the mailbox is closed.
    pub closed: bool,
}

/// A reliable bounded mailbox. See the [module docs](super).
///
/// A cheap handle (one `Rc`): clones share the queue. `!Send`: it lives on
/// the thread of the `Stakker` its consumer runs on.
pub struct Mailbox<M: 'static> {
    pub(super) inner: Rc<Inner<M>>,
}

static_assertions::assert_not_impl_any!(Mailbox<u64>: Send, Sync);
static_assertions::assert_eq_size!(Mailbox<u64>, usize);

impl<M: 'static> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox {
            inner: self.inner.clone(),
        }
    }
}

impl<M: 'static> fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("capacity", &self.inner.capacity)
            .field("len", &self.len())
            .field("overflow", &self.inner.overflow)
            .field("on_crash", &self.inner.on_crash)
            .field("closed", &self.inner.closed.get())
            .finish()
    }
}

pub(super) struct Inner<M: 'static> {
    pub(super) queue: RefCell<VecDeque<M>>,
    pub(super) capacity: usize,
    pub(super) overflow: Overflow,
    pub(super) on_crash: OnCrash<M>,
    /// The attached consumer; taken out while a delivery run uses it.
    pub(super) consumer: Cell<Option<Box<dyn Consumer<M>>>>,
    /// Set by `attach`: the queue delivery runs go on.
    pub(super) deferrer: RefCell<Option<Deferrer>>,
    /// Bumped by every attach and detach, so a run or a kick can tell
    /// that its consumer is no longer the current one.
    pub(super) gen: Cell<u64>,
    pub(super) attached: Cell<bool>,
    /// A delivery run is queued or running.
    pub(super) scheduled: Cell<bool>,
    /// The consumer is not known to be Ready; a kick will come when it is.
    pub(super) waiting_ready: Cell<bool>,
    /// A message is in the consumer's hands (it still holds its slot).
    pub(super) in_hand: Cell<bool>,
    /// The front message is a redelivery (it crashed a consumer once).
    pub(super) front_is_retry: Cell<bool>,
    pub(super) closed: Cell<bool>,
    pub(super) sink: RefCell<Option<Fwd<DeadLetter<M>>>>,
    pub(super) waiters: RefCell<Waiters>,
    /// Waiters not yet granted a slot (`waiters.order.len()`), readable
    /// without a borrow on the hot path.
    pub(super) waiting: Cell<usize>,
    /// Slots granted to waiting senders that have not pushed yet.
    pub(super) reserved: Cell<usize>,
    pub(super) high_water: Cell<usize>,
    pub(super) accepted: Cell<u64>,
    pub(super) rejected_full: Cell<u64>,
    pub(super) rejected_closed: Cell<u64>,
    pub(super) handled: Cell<u64>,
    pub(super) crashed: Cell<u64>,
    pub(super) redelivered: Cell<u64>,
    pub(super) dropped_overflow: Cell<u64>,
    pub(super) dropped_crashed: Cell<u64>,
    pub(super) dropped_closed: Cell<u64>,
    pub(super) taken: Cell<u64>,
    pub(super) dead_lettered: Cell<u64>,
    /// Its key in the thread's ledger of mailboxes (for the totals).
    ledger: Cell<usize>,
}

impl<M: 'static> Inner<M> {
    fn new(capacity: usize, overflow: Overflow, on_crash: OnCrash<M>) -> Self {
        Inner {
            queue: RefCell::new(VecDeque::new()),
            capacity,
            overflow,
            on_crash,
            consumer: Cell::new(None),
            deferrer: RefCell::new(None),
            gen: Cell::new(0),
            attached: Cell::new(false),
            scheduled: Cell::new(false),
            waiting_ready: Cell::new(false),
            in_hand: Cell::new(false),
            front_is_retry: Cell::new(false),
            closed: Cell::new(false),
            sink: RefCell::new(None),
            waiters: RefCell::new(Waiters::default()),
            waiting: Cell::new(0),
            reserved: Cell::new(0),
            high_water: Cell::new(0),
            accepted: Cell::new(0),
            rejected_full: Cell::new(0),
            rejected_closed: Cell::new(0),
            handled: Cell::new(0),
            crashed: Cell::new(0),
            redelivered: Cell::new(0),
            dropped_overflow: Cell::new(0),
            dropped_crashed: Cell::new(0),
            dropped_closed: Cell::new(0),
            taken: Cell::new(0),
            dead_lettered: Cell::new(0),
            ledger: Cell::new(usize::MAX),
        }
    }

    /// Messages held: queued plus the one in hand.
    #[inline]
    pub(super) fn depth(&self, queued: usize) -> usize {
        queued + usize::from(self.in_hand.get())
    }

    /// Bookkeeping after a message was queued (`depth` counts it); starts
    /// delivery if the consumer is idle.
    #[inline]
    pub(super) fn pushed(self: &Rc<Self>, depth: usize) {
        bump(&self.accepted);
        if depth > self.high_water.get() {
            self.high_water.set(depth);
        }
        if !self.scheduled.get() && self.attached.get() && !self.waiting_ready.get() {
            self.schedule();
        }
    }
}

impl<M: 'static> Mailbox<M> {
    pub(super) fn build(capacity: usize, overflow: Overflow, on_crash: OnCrash<M>) -> Self {
        let inner = Rc::new(Inner::new(capacity, overflow, on_crash));
        let weak: Weak<dyn Tally> = Rc::downgrade(&inner) as Weak<Inner<M>>;
        inner.ledger.set(super::enter(weak));
        Mailbox { inner }
    }

    /// A mailbox holding at most `capacity` messages, with the given
    /// overflow policy and crash policy [`OnCrash::discard`] (the message
    /// in hand at a crash is lost with the handler; `M` need not be
    /// `Clone`). A `capacity` of 0 is taken as 1 (see [`try_new`]).
    ///
    /// Cost: one `Rc` allocation; the queue grows on demand.
    ///
    /// [`try_new`]: Mailbox::try_new
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        Self::build(capacity.max(1), overflow, OnCrash::discard())
    }

    /// Like [`new`](Mailbox::new) with an explicit crash policy.
    /// A `capacity` of 0 is taken as 1.
    pub fn with_policy(capacity: usize, overflow: Overflow, on_crash: OnCrash<M>) -> Self {
        Self::build(capacity.max(1), overflow, on_crash)
    }

    /// Like [`with_policy`](Mailbox::with_policy), refusing a capacity of
    /// 0 instead of raising it to 1.
    ///
    /// # Errors
    ///
    /// [`MailboxError::ZeroCapacity`] if `capacity` is 0.
    pub fn try_new(
        capacity: usize,
        overflow: Overflow,
        on_crash: OnCrash<M>,
    ) -> Result<Self, MailboxError> {
        if capacity == 0 {
            return Err(MailboxError::ZeroCapacity);
        }
        Ok(Self::build(capacity, overflow, on_crash))
    }

    /// A mailbox whose crash policy is [`OnCrash::redeliver_once`]: the
    /// message in hand at a crash is put back at the front and handed to
    /// the next incarnation; a second crash on it dead-letters it
    /// ([`Dropped::Crashed`]). So every accepted message is handed over at
    /// least once (unless dropped by overflow or close) and at most twice.
    /// A `capacity` of 0 is taken as 1.
    ///
    /// Cost: one `M::clone` per delivered message (the copy kept in case of
    /// a crash).
    pub fn redelivering(capacity: usize, overflow: Overflow) -> Self
    where
        M: Clone,
    {
        Self::build(capacity.max(1), overflow, OnCrash::redeliver_once())
    }

    /// A mailbox whose crash policy is [`OnCrash::dead_letter`]: a copy of
    /// the message in hand at a crash goes to the dead letters
    /// ([`Dropped::Crashed`]), so each accepted message is either handled
    /// or dead-lettered, exactly once. A `capacity` of 0 is taken as 1.
    ///
    /// Cost: one `M::clone` per delivered message.
    pub fn dead_lettering(capacity: usize, overflow: Overflow) -> Self
    where
        M: Clone,
    {
        Self::build(capacity.max(1), overflow, OnCrash::dead_letter())
    }

    /// Closes the mailbox: later sends fail with [`SendError::Closed`](super::SendError::Closed),
    /// waiting senders get `Closed` back, the consumer is detached, and the
    /// queued messages go to the dead letters ([`Dropped::Closed`]), in
    /// order. A message in the consumer's hands (a handler closing its own
    /// mailbox) finishes normally; if it crashes it is not redelivered.
    /// Closing twice does nothing.
    ///
    /// Cost: one dead-letter call per queued message and one wake per
    /// waiting sender.
    ///
    /// # Panics
    /// Only if the dead-letter `Fwd` (or a waiting sender's waker) it
    /// calls panics; that panic unwinds to the caller.
    pub fn close(&self) {
        let inner = &self.inner;
        if inner.closed.replace(true) {
            return;
        }
        let drained = std::mem::take(&mut *inner.queue.borrow_mut());
        inner.front_is_retry.set(false);
        inner
            .dropped_closed
            .set(inner.dropped_closed.get() + drained.len() as u64);
        if inner.attached.get() {
            inner.unattach();
        }
        let consumer = inner.consumer.take();
        let wakers: Vec<Waker> = {
            let mut w = inner.waiters.borrow_mut();
            w.order.clear();
            inner.waiting.set(0);
            inner.reserved.set(0);
            w.slots
                .iter_mut()
                .filter_map(|(_, s)| s.waker.take())
                .collect()
        };
        drop(consumer);
        for waker in wakers {
            waker.wake();
        }
        for msg in drained {
            inner.dead_letter(msg, Dropped::Closed);
        }
    }

    /// Takes the queued messages out, oldest first, unhandled (not the
    /// one in the consumer's hands, which finishes normally): for an owner
    /// that moves them elsewhere, such as a task group retiring a worker.
    /// They count as `taken` in the stats, and the freed slots go to
    /// waiting senders.
    ///
    /// Cost: one `Vec` of the queued messages.
    ///
    /// # Panics
    /// Only if a waiting sender's waker it wakes panics; that panic unwinds to the caller.
    pub fn take_queued(&self) -> Vec<M> {
        let inner = &self.inner;
        let taken: Vec<M> = std::mem::take(&mut *inner.queue.borrow_mut()).into();
        inner.front_is_retry.set(false);
        inner.taken.set(inner.taken.get() + taken.len() as u64);
        inner.grant();
        taken
    }

    /// Whether the mailbox is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Whether a consumer is attached (it may have died since the last
    /// delivery; the mailbox notices at the next one).
    pub fn is_attached(&self) -> bool {
        self.inner.attached.get()
    }

    /// Messages held: queued, plus the one in the consumer's hands.
    /// Never more than [`capacity`](Mailbox::capacity).
    pub fn len(&self) -> usize {
        self.inner.depth(self.inner.queue.borrow().len())
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on held messages.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The overflow policy.
    pub fn overflow(&self) -> Overflow {
        self.inner.overflow
    }

    /// The crash policy.
    pub fn on_crash(&self) -> OnCrash<M> {
        self.inner.on_crash
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MailboxStats {
        let i = &*self.inner;
        MailboxStats {
            capacity: i.capacity,
            depth: self.len(),
            high_water: i.high_water.get(),
            accepted: i.accepted.get(),
            rejected_full: i.rejected_full.get(),
            rejected_closed: i.rejected_closed.get(),
            handled: i.handled.get(),
            crashed: i.crashed.get(),
            redelivered: i.redelivered.get(),
            dropped_overflow: i.dropped_overflow.get(),
            dropped_crashed: i.dropped_crashed.get(),
            dropped_closed: i.dropped_closed.get(),
            taken: i.taken.get(),
            dead_lettered: i.dead_lettered.get(),
            waiting_senders: i.waiting.get(),
            attached: i.attached.get(),
            closed: i.closed.get(),
        }
    }
}

impl<M: 'static> Tally for Inner<M> {
    fn tally(&self) -> MailboxTotals {
        MailboxTotals {
            accepted: self.accepted.get(),
            handled: self.handled.get(),
            dropped: self.dropped_overflow.get()
                + self.dropped_crashed.get()
                + self.dropped_closed.get(),
            taken: self.taken.get(),
            rejected: self.rejected_full.get() + self.rejected_closed.get(),
            dead_lettered: self.dead_lettered.get(),
        }
    }
}

impl<M: 'static> Drop for Inner<M> {
    /// The last handle is gone with messages still queued: they go to the
    /// dead letters (`Dropped::Closed`) like a `close`, never silently.
    /// Either way they count as dropped in the thread's totals.
    fn drop(&mut self) {
        let left = std::mem::take(self.queue.get_mut());
        let sink = if self.closed.get() || left.is_empty() {
            None
        } else {
            self.sink.get_mut().take()
        };
        let n = left.len() as u64;
        let mut last = self.tally();
        last.dropped += n;
        if sink.is_some() {
            last.dead_lettered += n;
        }
        super::retire(self.ledger.get(), last);
        let Some(sink) = sink else {
            return;
        };
        for msg in left {
            sink.fwd(DeadLetter {
                msg,
                why: Dropped::Closed,
            });
        }
    }
}
